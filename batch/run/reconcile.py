"""Finding the job of a generate call whose answer was lost.

Never resubmit blindly: list the jobs created since the call went out and match their
`metadata.input` against the body we sent. Lookups that arrive together share one walk
of the job list. A job already tied to another item in the ledger is never matched twice.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from batch.api.client import JobView, ScenarioClient
from batch.run.poller import format_time, parse_time

# Our clock and the API's may disagree; look this far further back than the call itself.
CLOCK_SKEW_S = 120.0


@dataclass(slots=True)
class _Lookup:
    body: Mapping[str, Any]
    since: dt.datetime
    future: asyncio.Future[JobView | None]


class Reconciler:
    def __init__(self, client: ScenarioClient, claimed: Callable[[str], bool]) -> None:
        self._client = client
        self._claimed = claimed  # is this job id already tied to an item?
        self._pending: list[_Lookup] = []
        self._turn = asyncio.Lock()
        self.walks = 0

    async def find(self, body: Mapping[str, Any], sent_at: str) -> JobView | None:
        lookup = _Lookup(body, parse_time(sent_at), asyncio.get_running_loop().create_future())
        self._pending.append(lookup)
        async with self._turn:
            if not lookup.future.done():
                batch, self._pending = self._pending, []
                try:
                    await self._walk(batch)
                except BaseException as exc:
                    for other in batch:
                        if not other.future.done():
                            other.future.set_exception(exc)
                    raise
        return await lookup.future

    async def _walk(self, batch: list[_Lookup]) -> None:
        self.walks += 1
        oldest = min(lookup.since for lookup in batch) - dt.timedelta(seconds=CLOCK_SKEW_S)
        wanted = {id(lookup): canonical(lookup.body) for lookup in batch}
        candidates: list[JobView] = []
        async for page in self._client.list_job_pages(created_after=format_time(oldest)):
            for raw in page:
                job = JobView.parse(raw)
                if job.input and not self._claimed(job.job_id):
                    candidates.append(job)
        candidates.sort(key=lambda job: job.created_at)  # oldest first: the first send wins
        taken: set[str] = set()
        for lookup in batch:
            match = None
            limit = lookup.since - dt.timedelta(seconds=CLOCK_SKEW_S)
            for job in candidates:
                if job.job_id in taken or parse_time(job.created_at) < limit:
                    continue
                if canonical(restrict(job.input, lookup.body)) == wanted[id(lookup)]:
                    match = job
                    break
            if match is not None:
                taken.add(match.job_id)
            lookup.future.set_result(match)


def restrict(received: Mapping[str, Any], sent: Mapping[str, Any]) -> dict[str, Any]:
    """The API may echo extra defaults; compare only what we sent, and require all of it."""
    return {key: received.get(key) for key in sent}


def canonical(body: Mapping[str, Any]) -> str:
    return json.dumps(body, sort_keys=True, separators=(",", ":"))
