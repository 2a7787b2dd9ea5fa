"""The poll budget: what polling spends (job-list pages, direct GETs, URL lookups), held to
a stated number of requests per job by construction, whatever the API answers.

Tokens come from two sources. Every job the poller watches brings `per_job`, vesting as
the job runs (linearly over its expected duration; the rest at once when it is seen final
or given up). And while jobs are in flight (or outputs wait for their URL lookup),
`per_wave` tokens flow per expected job duration, whatever the number of jobs: a run with
few jobs in flight can still look a few times per job; once nothing is left to send,
`per_wave_draining` (the last jobs' sightings and URLs are then the run's own wait). At
concurrency C that is per_wave / C per job, E being the mean duration (the defaults:
0.17 + 4.8/16 = 0.47 requests per job at C=16, 0.245 at C=64, 0.19 at C=256). The expected
duration counts as at least `min_duration_s` here, so no answer of the API can make that
flow faster than per_wave / min_duration_s.

A request is made only with a whole token in hand; tokens beyond one wave's worth are
forfeited, so a quiet spell does not buy a burst later. Three allowances keep the poller
alive when tokens are short: the first `learning` requests made before any job of the run
has been seen final (the run's pace is not known yet), one request whenever none has
been made for `floor_s` (the liveness floor), and `closing` requests for the run's last
URL lookups (nothing left to send, no job in flight: the run waits for nothing else). So,
for any sequence of answers:

    requests <= per_job * jobs watched + per_wave * busy time / max(min_duration_s, E)
                + (per_wave_draining - per_wave) * busy time draining / max(min_duration_s, E)
                + learning + closing + floor requests,   floor requests <= 1 + wall / floor_s

(E: the expected duration, from the durations the API reported; `BudgetStats` keeps each
term as it goes.)
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass

_EPSILON = 1e-9  # tokens: a sum of float shares may fall short of a whole by a rounding
_MIN_WAIT_S = 1e-3  # a wait for tokens is never shorter (no wake-ups for a rounding's worth)


@dataclass(slots=True)
class BudgetStats:
    granted: float = 0.0  # every token granted: the jobs' shares and the wave flow
    paid: int = 0  # requests paid with tokens
    learning: int = 0  # free requests while no job had been seen final
    closing: int = 0  # free requests for the run's last URL lookups
    floor: int = 0  # free requests of the liveness floor


class PollBudget:
    def __init__(
        self,
        *,
        per_job: float,
        per_wave: float,
        per_wave_draining: float,
        learning: int,
        closing: int,
        floor_s: float,
        min_duration_s: float,
        clock: Callable[[], float],
    ) -> None:
        self._per_job = per_job
        self._per_wave = per_wave
        self._per_wave_draining = per_wave_draining
        self._draining = False  # nothing is left to send: the last jobs set the wall
        self._learning_left = learning
        self._closing_left = closing
        self._floor_s = floor_s
        self._min_duration_s = min_duration_s
        self._clock = clock
        self._watched: set[str] = set()  # every job watched and not ended
        # The jobs whose share still vests, kept so that `tokens` costs the same whatever the
        # number in flight (it runs before every request; a pass over 256 jobs was 3 % of a
        # run's CPU): their starts' sum (from `_origin`, which keeps the floats small), and a
        # heap from which the oldest move to `_banked` once fully vested (a share banked stays
        # banked should the expected duration grow: never more than one share a job). Ended
        # jobs leave the heap lazily (their entry no longer matches `_vesting`).
        self._origin = clock()
        self._vesting: dict[str, float] = {}
        self._vesting_starts = 0.0
        self._vesting_heap: list[tuple[float, str]] = []
        self._banked = 0.0  # tokens vested for good (jobs ended, the wave flow), less spent
        self._most_in_flight = 0
        self._flowed_at: float | None = None  # the wave flow is counted up to here
        self._last_request: float | None = None
        # How long a job is expected to run; None until one of the run was seen final
        # (shares then vest over `floor_s`).
        self.expected_s: float | None = None
        self._holding_outputs = False  # outputs wait for a URL lookup (the flow goes on)
        self.stats = BudgetStats()

    @property
    def most_in_flight(self) -> int:
        """The most jobs watched at once so far this run."""
        return self._most_in_flight

    @property
    def per_job_now(self) -> float:
        """What one more finished job brings at this run's concurrency, both sources."""
        return self._per_job + self._per_wave / max(1, self._most_in_flight)

    def watch(self, job_id: str, started: float) -> None:
        """A job the poller now waits for brings its share."""
        if job_id in self._watched:
            return
        self._flow()  # the flow so far, at the rate before this job
        self._watched.add(job_id)
        self._vesting[job_id] = started
        self._vesting_starts += started - self._origin
        heapq.heappush(self._vesting_heap, (started, job_id))
        self._most_in_flight = max(self._most_in_flight, len(self._watched))
        self.stats.granted += self._per_job

    def holding_outputs(self, holding: bool) -> None:
        """Whether outputs wait for their URL lookup: the wave flow goes on meanwhile."""
        self._flow()
        self._holding_outputs = holding

    def draining(self) -> None:
        """Nothing is left to send: from now on the wave flow is `per_wave_draining` (the
        wait to see the last jobs, and to fetch their URLs, is the run's own wait)."""
        self._flow()
        self._draining = True

    def ended(self, job_id: str) -> None:
        """The job was seen final (or given up): the rest of its share vests now."""
        self._flow()
        if job_id not in self._watched:
            return
        self._watched.discard(job_id)
        started = self._vesting.pop(job_id, None)
        if started is not None:  # else its whole share was banked as it vested
            self._vesting_starts -= started - self._origin
            self._banked += self._per_job

    def tokens(self) -> float:
        """Vested and unspent, at most one wave's worth (the rest is forfeited)."""
        self._flow()
        now = self._clock()
        vest_s = self._vest_s()
        self._bank_vested(now, vest_s)
        # Each share still vesting has vested (now - started) / vest_s of itself.
        ages = len(self._vesting) * (now - self._origin) - self._vesting_starts
        vesting = self._per_job * max(0.0, ages) / vest_s
        cap = self._cap()
        if self._banked + vesting > cap:
            self._banked = cap - vesting
        return self._banked + vesting

    def rich(self) -> bool:
        """Whether at least half the cap is in hand, and a wave's flow beyond one more
        request: requests are not spending what flows in (a run sleeping between waves
        of jobs that end together), so one more now leaves plenty for later ones."""
        return self.tokens() >= max(0.5 * self._cap(), self._per_wave + 1.0)

    def _cap(self) -> float:
        return self._per_job * max(1, self._most_in_flight) + self._per_wave + 1.0

    def can_pay(self) -> bool:
        return self.tokens() >= 1.0 - _EPSILON

    def pay(self, *, first_of_tick: bool = False, rich: float = 1.0, closing: bool = False) -> bool:
        """Pay for one request if tokens allow (at least `rich` of them in hand); else,
        for a tick's first request, from the learning allowance or the liveness floor, and
        for one of the run's last URL lookups (`closing`), from the closing allowance.
        False: the request is not to be made."""
        now = self._clock()
        if self.tokens() >= rich - _EPSILON:
            self._banked -= 1.0
            self.stats.paid += 1
        elif closing and self._closing_left > 0:
            self._closing_left -= 1
            self.stats.closing += 1
        elif first_of_tick and self._learning():
            self._learning_left -= 1
            self.stats.learning += 1
        elif first_of_tick and self.floor_open(now):
            self.stats.floor += 1
        else:
            return False
        self._last_request = now
        return True

    def floor_open(self, now: float) -> bool:
        return self._last_request is None or now - self._last_request >= self._floor_s

    def affordable_in(self, need: float = 1.0) -> float:
        """Seconds until a tick's first request can be paid with `need` tokens in hand
        (0: now); an estimate from the current rates, never later than the liveness
        floor."""
        tokens = self.tokens()
        now = self._clock()
        if tokens >= need - _EPSILON or self._learning() or self.floor_open(now):
            return 0.0
        assert self._last_request is not None  # else the floor is open
        floor = max(_MIN_WAIT_S, self._last_request + self._floor_s - now)
        vest_s = self._vest_s()
        self._bank_vested(now, vest_s)
        rate = self._per_job * len(self._vesting) / vest_s + self._flow_rate()
        if rate <= 0.0:
            return floor
        return min(floor, max(_MIN_WAIT_S, (need - tokens) / rate))

    def _bank_vested(self, now: float, vest_s: float) -> None:
        """Bank the shares that have fully vested by `now`."""
        heap = self._vesting_heap
        while heap and heap[0][0] <= now - vest_s:
            started, job_id = heapq.heappop(heap)
            if self._vesting.get(job_id) == started:
                del self._vesting[job_id]
                self._vesting_starts -= started - self._origin
                self._banked += self._per_job

    def _flow(self) -> None:
        """Bank the wave flow since it was last counted."""
        now = self._clock()
        if self._flowed_at is not None and now > self._flowed_at:
            granted = (now - self._flowed_at) * self._flow_rate()
            self._banked += granted
            self.stats.granted += granted
        self._flowed_at = now

    def _flow_rate(self) -> float:
        if self.expected_s is None or not (self._watched or self._holding_outputs):
            return 0.0
        per_wave = self._per_wave_draining if self._draining else self._per_wave
        return per_wave / max(self._min_duration_s, self.expected_s)

    def _learning(self) -> bool:
        return self.expected_s is None and self._learning_left > 0

    def _vest_s(self) -> float:
        return max(1e-3, self.expected_s or self._floor_s)
