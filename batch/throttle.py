"""Request pacing: an optional hard cap (--max-rps) and an adaptive rate that backs off on 429.

The adaptive part is AIMD, as in TCP: each 429 halves the rate (at most once per second, so
one burst of 429s counts once), each success adds back a little (about one request per
second, per second). Until the first 429 there is no adaptive limit at all.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable

from aiolimiter import AsyncLimiter


class Throttle:
    def __init__(
        self,
        max_rps: float | None = None,
        *,
        min_rps: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._cap = AsyncLimiter(max_rps, 1) if max_rps else None
        self._min_rps = min_rps
        self._clock = clock
        self.rate: float | None = None  # adaptive requests per second; None: not limited
        self._next_slot = 0.0
        self._last_cut = -1e9
        self._recent: collections.deque[float] = collections.deque()
        self.rate_limited = 0

    async def acquire(self) -> None:
        if self._cap is not None:
            await self._cap.acquire()
        now = self._clock()
        self._recent.append(now)
        while self._recent and self._recent[0] < now - 1.0:
            self._recent.popleft()
        if self.rate is None:
            return
        start = max(now, self._next_slot)
        self._next_slot = start + 1.0 / self.rate
        if start > now:
            await asyncio.sleep(start - now)

    def on_rate_limited(self) -> None:
        self.rate_limited += 1
        now = self._clock()
        if now - self._last_cut < 1.0:
            return
        self._last_cut = now
        observed = float(max(len(self._recent), 1))
        current = self.rate if self.rate is not None else observed
        self.rate = max(self._min_rps, min(current, observed) / 2)

    def on_success(self) -> None:
        if self.rate is not None:
            self.rate += 1.0 / self.rate
