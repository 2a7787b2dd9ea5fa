"""The poller's own logic: direct fallback for jobs the list never mentions, cadence."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

from batch.api import JobView
from batch.poller import Poller, PollPolicy


class _SilentList:
    """A client whose job list never mentions the job (a lost update), while a direct
    GET knows it finished."""

    def __init__(self) -> None:
        self.gets = 0
        self.lists = 0

    async def list_jobs(self, **_: Any) -> AsyncIterator[JobView]:
        self.lists += 1
        return
        yield  # an async generator that yields nothing

    async def get_job(self, job_id: str) -> JobView:
        self.gets += 1
        return JobView(
            job_id,
            "success",
            1.0,
            "2026-11-25T00:00:00.000Z",
            "2026-11-25T00:00:01.000Z",
            asset_ids=("asset_1",),
        )

    async def asset_urls(self, asset_ids: Sequence[str]) -> dict[str, str]:
        return {a: f"https://cdn.example/{a}" for a in asset_ids}


async def test_job_missing_from_the_list_is_asked_about_directly() -> None:
    """A job the list never shows is fetched directly once the patience runs out."""
    client = _SilentList()
    policy = PollPolicy(
        min_interval_s=0.01,
        initial_interval_s=0.01,
        direct_below=1,
        stale_after_ticks=3,
        stale_after_min_s=0.05,
    )
    poller = Poller(client, policy)  # type: ignore[arg-type]
    async with asyncio.TaskGroup() as group:
        running = group.create_task(poller.run())
        waits = [
            group.create_task(poller.wait_for(f"job_{n}", "2026-11-25T00:00:00.000Z"))
            for n in range(3)
        ]
        async with asyncio.timeout(5):
            finished = [await w for w in waits]
        poller.stop()
        await running
    assert [f.job.status for f in finished] == ["success"] * 3
    assert await finished[0].urls == {"asset_1": "https://cdn.example/asset_1"}
    assert client.lists >= 3 and client.gets == 3
