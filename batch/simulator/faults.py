"""Seeded fault draws and the rate limiter.

Each knob owns its own `random.Random(f"{seed}:{knob}")` stream and draws exactly
once per event it applies to (every API request for the transport faults, every
created job for the job faults), whether or not another fault already fired.
So a seed and a request sequence give one fault pattern, and enabling a knob
never shifts the pattern of another.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from .config import SimulatorConfig


def stream(seed: int, name: str) -> random.Random:
    """A random stream of its own for one knob."""
    return random.Random(f"{seed}:{name}")


@dataclass(frozen=True, slots=True)
class RequestFaults:
    """What the transport-level knobs decided for one API request."""

    reset: bool
    http429: bool
    http500: bool


@dataclass(frozen=True, slots=True)
class JobPlan:
    """What the job knobs decided for one created job."""

    duration_s: float
    fails: bool
    stalls: bool


class Faults:
    """Draws faults for requests and jobs from per-knob seeded streams."""

    def __init__(self, config: SimulatorConfig) -> None:
        self._config = config
        seed = config.seed
        self._reset = stream(seed, "reset_rate")
        self._http429 = stream(seed, "http429_rate")
        self._http500 = stream(seed, "http500_rate")
        self._drop = stream(seed, "drop_after_submit_rate")
        self._truncate = stream(seed, "truncate_rate")
        self._latency = stream(seed, "job_latency")
        self._failure = stream(seed, "job_failure_rate")
        self._stall = stream(seed, "stall_rate")
        self._short_page = stream(seed, "list_short_page_rate")
        self._corrupt = stream(seed, "corrupt_rate")

    def for_request(self) -> RequestFaults:
        """One draw from each transport stream (all of them, every API request)."""
        c = self._config
        return RequestFaults(
            reset=self._reset.random() < c.reset_rate,
            http429=self._http429.random() < c.http429_rate,
            http500=self._http500.random() < c.http500_rate,
        )

    def drop_after_submit(self) -> bool:
        """Drawn once per generate call that created a job."""
        return self._drop.random() < self._config.drop_after_submit_rate

    def truncate(self) -> bool:
        """Drawn once per CDN download that would succeed."""
        return self._truncate.random() < self._config.truncate_rate

    def corrupt(self) -> bool:
        """Drawn once per CDN GET that would succeed (after `truncate`)."""
        return self._corrupt.random() < self._config.corrupt_rate

    def for_job(self) -> JobPlan:
        """Duration drawn from the configured distribution; failure and stall drawn
        independently."""
        c = self._config
        duration = self._duration()
        fails = self._failure.random() < c.job_failure_rate
        stalls = self._stall.random() < c.stall_rate
        return JobPlan(duration_s=duration, fails=fails and not stalls, stalls=stalls)

    def _duration(self) -> float:
        """Uniform: mean x (1 +- jitter). Lognormal: exp(N(mu, sigma)) with mu chosen so
        that the mean stays job_latency_s (a long tail of slow jobs, as queues make)."""
        c = self._config
        if c.job_latency_distribution == "lognormal":
            if c.job_latency_s <= 0:
                return 0.0
            mu = math.log(c.job_latency_s) - c.job_latency_sigma**2 / 2
            return self._latency.lognormvariate(mu, c.job_latency_sigma)
        spread = c.job_latency_jitter * (2.0 * self._latency.random() - 1.0)
        return max(0.0, c.job_latency_s * (1.0 + spread))

    def short_page(self, page_size: int) -> int | None:
        """With list_short_page_rate, a page length below page_size (maybe 0); else None."""
        draw = self._short_page.random()
        size = self._short_page.randrange(page_size)
        return size if draw < self._config.list_short_page_rate else None


class TokenBucket:
    """Requests per second with a burst; `take` answers the wait when empty."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self._rate = rate
        self._burst = burst
        self._tokens = burst
        self._last = now

    def take(self, now: float) -> float:
        """Take one token: 0.0 if granted, else seconds until one is available."""
        self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self._rate
