"""The poller's own logic: direct fallback for jobs the list never mentions, success-only
reads with periodic sweeps."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import aiohttp

from batch.api import JobView, ScenarioClient
from batch.poller import Poller, PollPolicy
from batch.simulator import MODEL_ID
from tests.conftest import SimulatorFactory
from tests.pipeline_helpers import settings_for


class _SilentList:
    """A client whose job list never mentions the job (a lost update), while a direct
    GET knows it finished."""

    def __init__(self) -> None:
        self.gets = 0
        self.lists = 0

    async def list_job_pages(self, **_: Any) -> AsyncIterator[list[dict[str, Any]]]:
        self.lists += 1
        yield []  # one empty page

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


async def test_ticks_ask_for_successes_and_sweeps_catch_failures(
    simulator_factory: SimulatorFactory, png_bytes: Callable[..., bytes]
) -> None:
    """Against the simulator: most list reads ask only for jobs that succeeded, periodic
    sweeps (every status) report the failed ones, and every job is reported final once
    with its real status."""
    sim = await simulator_factory(seed=11, job_latency_s=0.3, job_failure_rate=0.4)
    policy = PollPolicy(min_interval_s=0.05, initial_interval_s=0.05, sweep_every_s=0.5)
    async with aiohttp.ClientSession() as session:
        client = ScenarioClient(session, settings_for(sim))
        asset = await client.upload_image(png_bytes(16, 16), "ref.png", "image/png")
        poller = Poller(client, policy)
        async with asyncio.TaskGroup() as group:
            running = group.create_task(poller.run())
            submitted = [
                await client.generate(MODEL_ID, {"prompt": f"p{n}", "referenceImages": [asset]})
                for n in range(16)
            ]
            waits = [
                group.create_task(poller.wait_for(s.job.job_id, s.job.created_at))
                for s in submitted
            ]
            async with asyncio.timeout(20):
                finished = [await w for w in waits]
            poller.stop()
            await running

    statuses = Counter(f.job.status for f in finished)
    assert statuses["failure"] >= 2 and statuses["success"] >= 2, statuses
    for final in finished:
        assert final.job.status == sim.job_state(final.job.job_id).status
        urls = await final.urls
        assert set(urls) == set(final.job.asset_ids)
    lists = [r for r in sim.records("api", "/v1/jobs") if r.path == "/v1/jobs"]
    assert all(r.query.get("type") == "custom" for r in lists)
    success_only = [r for r in lists if r.query.get("status") == "success"]
    sweeps = [r for r in lists if "status" not in r.query]
    assert len(success_only) + len(sweeps) == len(lists)
    assert sweeps and len(success_only) > 2 * len(sweeps), (len(success_only), len(sweeps))
