"""Outage detection: when every call fails for a while, pause and probe instead of burning
every item's retries (and marking thousands of items failed).

After `trip_after` transient failures in a row with no success between them, the API is
considered down: calls wait while one prober tries a cheap request with backoff. The
first success lets everyone go on. If the API stays down for `grace_s`, every waiting call
raises `OutageError`, the run stops with exit 1, and the ledger makes it resumable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable

from batch.errors import ApiError, OutageError

log = logging.getLogger(__name__)


class Health:
    def __init__(
        self,
        *,
        trip_after: int = 20,
        grace_s: float = 600.0,
        max_probe_wait_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.trip_after = trip_after
        self.grace_s = grace_s
        self.max_probe_wait_s = max_probe_wait_s
        self._clock = clock
        self._failures = 0
        self._down_since: float | None = None
        self._up = asyncio.Event()
        self._up.set()
        self._prober: asyncio.Lock = asyncio.Lock()
        self.outages = 0

    @property
    def is_down(self) -> bool:
        return self._down_since is not None

    def succeeded(self) -> None:
        self._failures = 0
        if self._down_since is not None:
            log.warning("the API answers again after %.0fs", self._clock() - self._down_since)
            self._down_since = None
            self._up.set()

    def failed(self) -> None:
        self._failures += 1
        if self._failures >= self.trip_after and self._down_since is None:
            self.outages += 1
            self._down_since = self._clock()
            self._up.clear()
            log.warning(
                "the API failed %d calls in a row; pausing and probing (giving up after %.0fs)",
                self._failures,
                self.grace_s,
            )

    async def ready(self, probe: Callable[[], Awaitable[object]]) -> None:
        """Return when calls may go out; probe while the API is down."""
        while self._down_since is not None:
            if self._clock() - self._down_since > self.grace_s:
                raise OutageError(
                    f"the API has failed every call for {self.grace_s:.0f}s; stopping. "
                    "Run the same command again to resume."
                )
            if self._prober.locked():
                with contextlib.suppress(TimeoutError):  # asyncio.timeout: see Poller.run
                    async with asyncio.timeout(self.max_probe_wait_s):
                        await self._up.wait()
                continue
            async with self._prober:
                await self._probe_until_up(probe)

    async def _probe_until_up(self, probe: Callable[[], Awaitable[object]]) -> None:
        wait = 0.5
        while self._down_since is not None:
            left = self.grace_s - (self._clock() - self._down_since)
            if left <= 0:
                return
            await asyncio.sleep(min(left, random.uniform(wait / 2, wait)))
            try:
                await probe()
            except OutageError:
                raise
            except ApiError as exc:
                log.info("API still down: %s", exc)
                wait = min(self.max_probe_wait_s, wait * 2)
                continue
            self.succeeded()
