"""Request pacing: an optional hard cap (--max-rps) and an adaptive rate that backs off on 429.

The adaptive part is AIMD on the request rate, as in TCP. Additive increase: each answer
adds 1/rate (about one request per second, per second). Multiplicative decrease: when
429s are more than `tolerance` of the last second's answers, the rate drops to `backoff`
times the rate the server accepted in that second, at most once a second (one burst of
429s counts once). A scattering of 429s under the tolerance (a busy backend refusing now
and then) is left to the per-call retries: halving on each would starve the run. Until
the first cut there is no adaptive limit at all.

The cap is a leaky bucket (aiolimiter) one request deep: requests leave at most every
1/max_rps seconds, so no one-second window ever holds more than max_rps + 1 of them.
"""

from __future__ import annotations

import asyncio
import collections
import math
import time
from collections.abc import Callable

from aiolimiter import AsyncLimiter


class Throttle:
    def __init__(
        self,
        max_rps: float | None = None,
        *,
        min_rps: float = 0.5,
        tolerance: float = 0.1,
        backoff: float = 0.9,
        window_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_rps is not None and max_rps <= 0:
            raise ValueError(f"max_rps must be more than 0, got {max_rps}")
        # One token deep, refilled every 1/max_rps s: no burst can pass the cap.
        self._cap = AsyncLimiter(1, 1.0 / max_rps) if max_rps else None
        self._min_rps = min_rps
        self._tolerance = tolerance
        self._backoff = backoff
        self._window_s = window_s
        self._clock = clock
        self.rate: float | None = None  # adaptive requests per second; None: not limited
        self._next_slot = 0.0
        self._last_cut = -math.inf
        self._answers: collections.deque[tuple[float, bool]] = collections.deque()
        self.rate_limited = 0  # 429s seen (parallel-jobs ceilings excluded)
        self.cuts = 0

    async def acquire(self) -> None:
        """Wait for this request's turn: the adaptive pace first, the hard cap last."""
        if self.rate is not None:
            now = self._clock()
            start = max(now, self._next_slot)
            self._next_slot = start + 1.0 / self.rate
            if start > now:
                await asyncio.sleep(start - now)
        if self._cap is not None:
            await self._cap.acquire()

    def on_success(self) -> None:
        """The server answered (anything but a rate-limit 429)."""
        self._answered(limited=False)
        if self.rate is not None:
            self.rate += 1.0 / self.rate

    def on_rate_limited(self) -> None:
        """The server answered 429 because of the request rate."""
        self.rate_limited += 1
        now = self._answered(limited=True)
        if now - self._last_cut < self._window_s:
            return
        # Judge on at least half a window of answers: a burst answered at once (the start
        # of a run) says little about a rate. A run's first second is not a full window.
        span = now - self._answers[0][0]
        if span < self._window_s / 2:
            return
        limited = sum(1 for _, refused in self._answers if refused)
        if limited < 2 or limited / len(self._answers) <= self._tolerance:
            return
        accepted = (len(self._answers) - limited) / span
        current = self.rate if self.rate is not None else math.inf
        self.rate = max(self._min_rps, min(current, self._backoff * accepted))
        self._last_cut = now
        self.cuts += 1

    def _answered(self, *, limited: bool) -> float:
        now = self._clock()
        self._answers.append((now, limited))
        horizon = now - self._window_s
        while self._answers and self._answers[0][0] < horizon:
            self._answers.popleft()
        return now
