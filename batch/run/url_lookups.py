"""Fresh output URLs for finished jobs, from get-bulk calls shared by several ticks.

Downloads are off the job slots' critical path (a slot is handed back once its job is
seen final), so a lookup need not go with every tick: it waits until it fills a
get-bulk, until no job is left in flight, until its oldest output has waited
`wait_fraction` of a typical job (less once nothing is left to send: the last outputs'
downloads are then the run's own wait), or until the poller expects no company for it
soon (`release`: jobs that ended together, and the next are far off). The run's first
lookup goes at once: its downloads prove the way to disk (a full disk, a CDN the network
refuses) before another wave of jobs is bought. The poller pays for each lookup before
`send`; it also sends one while its budget is rich.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable

from batch.api.client import BULK_LIMIT, JobView, ScenarioClient
from batch.errors import ApiError

log = logging.getLogger(__name__)

_Waiting = tuple[JobView, asyncio.Future[dict[str, str]]]


class UrlLookups:
    def __init__(
        self,
        client: ScenarioClient,
        *,
        wait_fraction: float,
        max_wait_s: float,
        clock: Callable[[], float],
    ) -> None:
        self._client = client
        self._wait_fraction = wait_fraction
        self._max_wait_s = max_wait_s
        self._clock = clock
        self._waiting: deque[_Waiting] = deque()
        self._outputs = 0
        self._since = 0.0  # when the oldest waiting output began to wait
        self._sent = False  # a lookup was sent (the first goes at once)
        self._released = False  # the outputs waiting go with the next lookup
        self._fetches: set[asyncio.Task[None]] = set()

    def draining(self, wait_fraction: float) -> None:
        """Nothing is left to send: outputs wait at most `wait_fraction` of a job."""
        self._wait_fraction = min(self._wait_fraction, wait_fraction)

    def release(self) -> None:
        """No more outputs are expected to join those waiting soon: they go with the next
        lookups (until none is left waiting)."""
        if self._waiting:
            self._released = True

    def __bool__(self) -> bool:
        return bool(self._waiting)

    def add(self, job: JobView) -> asyncio.Future[dict[str, str]]:
        """The future of the URLs of a finished job's outputs (empty when it has none)."""
        urls: asyncio.Future[dict[str, str]] = asyncio.get_running_loop().create_future()
        if job.status != "success" or not job.asset_ids:
            urls.set_result({})
            return urls
        if not self._waiting:
            self._since = self._clock()
        self._waiting.append((job, urls))
        self._outputs += len(job.asset_ids)
        return urls

    def due_at(self, typical_s: float | None) -> float:
        """When the oldest waiting output has waited long enough (at once for the run's
        first lookup and for released outputs)."""
        if not self._sent or self._released:
            return self._since
        wait = min(self._max_wait_s, self._wait_fraction * (typical_s or 0.0))
        return self._since + wait

    def due(self, now: float, typical_s: float | None, *, jobs_in_flight: bool) -> bool:
        """Whether a lookup should go now, tokens to spare aside (the poller's call)."""
        if not self._waiting:
            return False
        return self._outputs >= BULK_LIMIT or not jobs_in_flight or now >= self.due_at(typical_s)

    def send(self, group: asyncio.TaskGroup) -> int:
        """One get-bulk for the outputs waiting longest, in a task of `group`; the requests
        it makes (one, unless a single job has more than BULK_LIMIT outputs, which no model
        allows)."""
        batch: list[_Waiting] = []
        outputs = 0
        while self._waiting:
            job, _ = self._waiting[0]
            if batch and outputs + len(job.asset_ids) > BULK_LIMIT:
                break
            batch.append(self._waiting.popleft())
            outputs += len(job.asset_ids)
        self._outputs -= outputs
        self._since = self._clock()
        self._sent = True
        self._released = self._released and bool(self._waiting)
        fetch = group.create_task(self._fetch(batch), name="poller:urls")
        self._fetches.add(fetch)
        fetch.add_done_callback(self._fetches.discard)
        return -(-outputs // BULK_LIMIT)

    def cancel_in_flight(self) -> None:
        """The poller stops: lookups still in flight are cancelled (their outputs get no
        URLs, see `_fetch`)."""
        for fetch in self._fetches:
            fetch.cancel()

    def abandon(self) -> None:
        """The poller stops: the outputs still waiting get no URLs (their downloads ask
        for their own)."""
        for _, urls in self._waiting:
            if not urls.done():
                urls.set_result({})
        self._waiting.clear()
        self._outputs = 0
        self._released = False

    async def _fetch(self, batch: list[_Waiting]) -> None:
        """On failure the downloads ask for their own URLs (GET /assets/{id}), so an error
        here costs no result."""
        found: dict[str, str] = {}
        wanted = [asset for job, _ in batch for asset in job.asset_ids]
        try:
            found = await self._client.asset_urls(wanted)
        except ApiError as exc:
            log.warning("could not fetch output URLs: %s", exc)
        finally:
            for job, urls in batch:
                if not urls.done():
                    urls.set_result({a: found[a] for a in job.asset_ids if a in found})
