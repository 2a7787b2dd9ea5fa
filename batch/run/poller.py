"""One poller for every job in flight.

Polling is not retrying: this is its own loop with its own pace. Each tick asks the job
list for every custom job that succeeded since the last tick (newest first), so one
request reports on many jobs; every two jobs' durations (at least every couple of
seconds) a sweep asks for every job updated, whatever its status, which catches failures
and cancellations. With only a few jobs in flight (and tokens to ask about each), or for
a job the list has not mentioned for a while, it asks about that job directly, beside the
tick's list read (one round trip for all, not one each). Fresh output URLs come from
get-bulk calls shared by the jobs that finished. Ticks are tasks: against a far API the
next may start while earlier ones still wait for their answers.

Every request is paid from the poll budget (batch/run/poll_budget.py), a stated number of
requests per job that no answer of the API can break; the pace below is what the poller
wants, and it waits for tokens when the budget is short. It spends them where they cut
the most latency: a tick's first page always; a page beyond it when the first was full
(more of the same follows), but after a page the API cut short (a next token on a short
or empty page) only with tokens to spare, else the rest waits for the next tick's read
from the same cursor; a URL lookup when it fills a get-bulk, when no job is left in
flight, when jobs end in groups and none in flight is due for a while (nothing would
join its outputs soon), while the budget is rich (half its cap in hand, and a wave's
flow beyond the lookup), or once its oldest output has waited two typical jobs
(downloads are off the job slots' critical path; a quarter of one once nothing is left
to send; the run's first at once), and a tick keeps one token back while outputs wait,
so lookups are never starved.

The pace adapts to how long jobs take: at most every twentieth of the typical job
duration, and as often as the budget pays for (a tick's requests shared by the jobs
finished meanwhile), down to `min_interval_s`: a busy run loses less time per job at the
same cost per job. Before any job has finished, after a first tick at
`initial_interval_s`, a tenth of the oldest job's age stands in for it (a job that has
run for a seconds takes at least a seconds). Once nothing is left to send (the pipeline
says so), only the last job's wait is the run's: a steady tenth of a job (or a
hundredth of the run so far, if longer), quicker once fewer than four jobs are left (the
next to end may be the last), paid by the budget's larger flow while draining; the run's
last URL lookups never wait for tokens (a closing allowance).

Ticks that could find nothing are skipped. From the durations the API reports for recent
jobs (at least twice as many as are in flight: a wave ends in order of duration) the
poller knows when a job is *due*: started + the 97th percentile, or one interval
after the 5th percentile if that is sooner (when durations vary widely, waiting for the
97th would keep early finishers waiting). While no job in flight is due it sleeps until
the first one is, then keeps the cadence. When few jobs finish per second, jobs sent
together are then seen together by one tick, and their successors go out together again:
a tick serves a whole group instead of one or two jobs, for a similar wait (on average
about half the spread of durations). On a busy run, where jobs finish in waves, the
ticks between waves are saved, and each wave is met by ticks at a pace its own finish
rate sets: at C=256 the mean wait to be seen fell from 78-103 to 57-60 ms, and the
added latency by half (bench/RESULTS.md, round 7).

When jobs take much the same time but their groups have drifted apart (more groups than
the budget pays ticks for), the ticks go at the budget's pace and a tick waits for the
groups that pace spans, so they are seen, and go on, together again: left as they were,
ticks went whenever a token came in, each saw a job or two, and the groups stayed apart.

A job past its 97th percentile is an outlier (stalled, or queued upstream): it is looked
at again after a tenth of how long it has been overdue (at least the cadence, at most
`max_interval_s`), and the other jobs' due times go on spacing the ticks meanwhile (with
3% of jobs stalling until a 15 s timeout, a C=16 run read the list 189 times, not 350).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from batch.api.client import JobView, ScenarioClient
from batch.errors import ApiError, CredentialsError, OutageError
from batch.run.poll_budget import BudgetStats, PollBudget
from batch.run.url_lookups import UrlLookups

log = logging.getLogger(__name__)

_ISO_MS_LEN = len("2026-01-01T00:00:00.000Z")


@dataclass(frozen=True, slots=True)
class PollPolicy:
    min_interval_s: float = 0.05
    max_interval_s: float = 10.0
    initial_interval_s: float = 1.0
    fraction_of_job: float = 0.05  # poll every twentieth of a typical job's duration
    fraction_of_job_draining: float = 0.1  # ... and once nothing is left to send,
    fraction_of_run_draining: float = 0.01  # or a hundredth of the run so far, if longer
    drain_few: int = 4  # ... that pace times k / drain_few once k < drain_few jobs are left
    # Before any job ended, every tenth of the oldest job's age; a job past its due time,
    # every tenth of how long it is overdue.
    fraction_of_age: float = 0.1
    direct_below: int = 3  # with fewer jobs than this in flight, ask about each directly
    max_ticks_in_flight: int = 3  # a tick may start while earlier ones await their answers
    stale_after_ticks: int = 8  # a job the list has not shown for this many ticks: ask directly
    stale_after_min_s: float = 10.0  # ... and for at least this long
    stale_per_tick: int = 2  # direct questions about such jobs, at most, each tick
    overlap_s: float = 2.0  # a job sent earlier: read from this much before (clock skew)
    settle_s: float = 0.5  # later sweeps: this much before the newest update the API showed
    # Success-only reads look back less: each re-read job is bytes to fetch and parse. A
    # success the list shows later than this is found by the next sweep (which reads from
    # the previous sweep's newest update less settle_s, every max(sweep_every_s, interval)),
    # or failing that by a direct GET once the job has gone unseen too long.
    success_settle_s: float = 0.1
    sweep_every_s: float = 2.0  # ticks between sweeps ask only for jobs that succeeded
    sweep_fraction_of_job: float = 2.0  # ... and at least two typical jobs apart
    # The poll budget (batch/run/poll_budget.py): polling requests each job brings, plus
    # `budget_per_wave` per expected job duration while jobs are in flight (that
    # duration counted as at least `budget_min_duration_s`), and the free requests before
    # the run's pace is known. The liveness floor is one request per `max_interval_s`.
    budget_per_job: float = 0.17
    # 4.8, not 5: a C=16 run with lognormal job times (its drain long, and each run's
    # closing lookups on top) read 2.60 requests per job, its target's edge.
    budget_per_wave: float = 4.8
    # Once nothing is left to send (10, not 12, since the drain looks more often with few
    # jobs left: a C=64 run's requests per job stay where they were).
    budget_per_wave_draining: float = 10.0
    budget_min_duration_s: float = 0.2
    learning_requests: int = 20
    # Free requests for the run's last URL lookups (nothing left to send, no job in
    # flight): the run then waits for them alone, never for tokens.
    closing_requests: int = 2
    # An output waits up to this share of a typical job for its URL lookup (or until a
    # get-bulk is full), so one get-bulk serves two waves of jobs: downloads are off the
    # slots' critical path, and the budget goes to ticks (at C=16 that cut detection by a
    # sixth for the same requests). Once nothing is left to send, the last outputs'
    # downloads are the run's own wait: they wait less.
    url_wait_fraction: float = 2.0
    url_wait_fraction_draining: float = 0.25
    # ... but only while others may join them soon: when jobs end in groups (durations
    # within this share of a typical job) and none in flight is due within as long (a
    # group ended, the next is far off), they go at once. Waiting two jobs for nothing
    # put issue 8's added latency (jobs within +-5 %) at +43 % (C=256) to +128 % (C=16),
    # against its < 10 % target.
    url_quiet_fraction: float = 0.25
    page_size: int = 100
    # Recent durations (API clock) that say when a job is due: this many, or twice the jobs
    # in flight if more. A wave's jobs end in order of their durations, so a window smaller
    # than a wave would hold only its slowest (at C=256 after the first wave, the 5 %
    # quantile read 2.2 s of jobs taking 1-3 s, and the next wave's first 1.5 s went unread).
    due_samples: int = 100
    due_min_samples: int = 8  # fewer known durations: no due times, only the cadence
    due_quantile: float = 0.97  # a job is due when this share of recent jobs had finished
    early_quantile: float = 0.05  # ... or an interval after this share had, if sooner
    gather_fraction: float = 0.25  # jobs sent this share of an interval apart: one group
    group_span: float = 1.0  # the groups a tick waits for span at most this many intervals


@dataclass(frozen=True, slots=True)
class Finished:
    """A job that reached a final status, and its outputs' fresh URLs (which follow)."""

    job: JobView
    urls: asyncio.Future[dict[str, str]]


@dataclass(slots=True)
class _Watch:
    job_id: str
    since: dt.datetime
    started: float
    future: asyncio.Future[Finished]
    last_seen_tick: int = 0
    last_seen_at: float = 0.0


@dataclass(slots=True)
class PollStats:
    ticks: int = 0
    list_requests: int = 0
    direct_requests: int = 0
    url_requests: int = 0
    finished: int = 0
    durations: list[float] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return self.list_requests + self.direct_requests + self.url_requests


class Poller:
    def __init__(
        self,
        client: ScenarioClient,
        policy: PollPolicy | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._policy = policy or PollPolicy()
        self._clock = clock
        self._watches: dict[str, _Watch] = {}
        self._cursor: dt.datetime | None = None  # of the success-only reads
        self._sweep_cursor: dt.datetime | None = None  # of the sweeps (every status)
        self._last_sweep: float | None = None
        self._changed = asyncio.Event()
        self._stopped = False
        self._draining = False  # nothing is left to send (the pipeline says)
        self._typical_s: float | None = None
        self._durations: deque[float] = deque(maxlen=self._policy.due_samples)
        self._due_after: tuple[float, float] | None = None  # (early, due) quantiles of durations
        self._expected_s: float | None = None  # their mean, the slowest beyond `due` left out
        self._began = clock()  # the run's start, near enough: the drain's pace scales with it
        self._ticks_running = 0
        self._ticks_started = 0  # (stats.ticks counts them once they run)
        self._tick_tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()  # a tick ended, or the poller is to stop
        # Jobs finished per second: the average of per-tick rates (it reads low when ticks
        # are uneven; the cadence was tuned with it).
        self._rate: float = 0.0
        self._tick_requests: float = 1.0  # requests per tick (slow-moving average)
        self._last_tick: float | None = None
        self._budget = PollBudget(
            per_job=self._policy.budget_per_job,
            per_wave=self._policy.budget_per_wave,
            per_wave_draining=self._policy.budget_per_wave_draining,
            learning=self._policy.learning_requests,
            closing=self._policy.closing_requests,
            floor_s=self._policy.max_interval_s,
            min_duration_s=self._policy.budget_min_duration_s,
            clock=clock,
        )
        self._next_tick_at: float | None = None
        self._requests_at_tick = 0  # the request count when the last tick ended
        self._urls = UrlLookups(
            client,
            wait_fraction=self._policy.url_wait_fraction,
            max_wait_s=self._policy.max_interval_s,
            clock=clock,
        )
        self.stats = PollStats()
        self.error: BaseException | None = None

    async def wait_for(self, job_id: str, since: str, *, age_s: float = 0.0) -> Finished:
        """Wait until the job is final; returns it with fresh URLs of its outputs.
        `age_s`: how long ago the job was sent, when that was not just now (a job resumed
        from the ledger, or adopted after an interrupted submit): its due time is then
        that much sooner."""
        existing = self._watches.get(job_id)
        if existing is None:
            future: asyncio.Future[Finished] = asyncio.get_running_loop().create_future()
            started = self._clock() - max(0.0, age_s)
            existing = _Watch(job_id, parse_time(since), started, future)
            existing.last_seen_tick = self.stats.ticks
            existing.last_seen_at = self._clock()
            self._watches[job_id] = existing
            self._budget.watch(job_id, started)
            # A job just created (its creation time is the API's own) is read from a
            # moment before it: the reads' own settle margins; one sent earlier (its time
            # may be our clock, or a lost answer's) from overlap_s before. Every watch may
            # pull the cursors back, so a margin wider than needed would re-read (fetch and
            # parse) a wave of jobs on every read: at C=256, ~55 rows a read at 0.5 s.
            fresh = age_s <= 0
            policy = self._policy
            cursor = existing.since - dt.timedelta(
                seconds=policy.success_settle_s if fresh else policy.overlap_s
            )
            if self._cursor is None or cursor < self._cursor:
                self._cursor = cursor
            cursor = existing.since - dt.timedelta(
                seconds=policy.settle_s if fresh else policy.overlap_s
            )
            if self._sweep_cursor is None or cursor < self._sweep_cursor:
                self._sweep_cursor = cursor
            self._changed.set()
        try:
            return await asyncio.shield(existing.future)
        finally:
            if existing.future.done() or existing.future.cancelled():
                self._watches.pop(job_id, None)

    def forget(self, job_id: str) -> None:
        """Stop watching a job (its waiter gave up, e.g. on a timeout)."""
        watch = self._watches.pop(job_id, None)
        self._budget.ended(job_id)
        if watch is not None and not watch.future.done():
            watch.future.cancel()

    @property
    def typical_s(self) -> float | None:
        """How long this run's jobs take, from watch to sighting (None until one ended)."""
        return self._typical_s

    @property
    def budget(self) -> BudgetStats:
        """What the poll budget granted, and how its requests were paid."""
        return self._budget.stats

    def in_flight(self) -> int:
        """How many jobs are being watched."""
        return len(self._watches)

    def draining(self) -> None:
        """Nothing is left to send: the jobs in flight (and retries of them) are the last,
        and the wait to see them and fetch their outputs is the run's own wait."""
        self._draining = True
        self._budget.draining()
        self._urls.draining(self._policy.url_wait_fraction_draining)

    def stop(self) -> None:
        self._stopped = True
        self._changed.set()
        self._wake.set()

    @property
    def interval(self) -> float:
        policy = self._policy
        if self._typical_s is None:
            # Nothing finished yet: the first tick comes after `initial_interval_s`; from then
            # on a tenth of the oldest job's age (it takes at least as long as it has run).
            if self._ticks_started == 0:
                return policy.initial_interval_s
            oldest = min((w.started for w in self._watches.values()), default=self._clock())
            wanted = (self._clock() - oldest) * policy.fraction_of_age
            return min(policy.initial_interval_s, max(policy.min_interval_s, wanted))
        if self._draining:
            # The last jobs: only the very last one's wait is the run's, and nothing says
            # which it is; a steady pace the drain's wave flow pays for, to the end. That
            # wait counts against the whole run, so a long run's drain looks less often (a
            # long tail of slow jobs would otherwise cost as many reads as the run's waves).
            wanted = max(
                self._typical_s * policy.fraction_of_job_draining,
                (self._clock() - self._began) * policy.fraction_of_run_draining,
            )
            # With few jobs left the next to end may well be the last, whose sighting is
            # the run's own wait: look more often (as tokens allow).
            left = len(self._watches)
            if left < policy.drain_few:
                wanted *= max(1, left) / policy.drain_few
        else:
            wanted = self._typical_s * policy.fraction_of_job
            pace = self._budget_pace()
            if pace is not None:
                # Faster ticks than the budget pays for would wait for tokens (the budget
                # holds either way). With steady durations and tokens short, that pace is
                # the plan: a tick would go whenever a token came in, see a job or two,
                # and keep the groups apart (see `_wait_s`).
                short = self._steady() and self._budget.tokens() < 2 * self._tick_needs()
                wanted = pace if short else min(wanted, pace)
        return min(policy.max_interval_s, max(policy.min_interval_s, wanted))

    async def run(self) -> None:
        """Poll until stopped. A 401 ends the run (raised as it is); other API errors are
        retried next tick."""
        try:
            # Ticks and URL lookups are tasks of their own: a read waiting on a far API
            # (or a sweep of several pages) does not hold up the next one.
            async with asyncio.TaskGroup() as requests:
                await self._poll_until_stopped(requests)
        except BaseExceptionGroup as group:
            # A lookup logs its errors (the downloads then ask for their own URLs), and a
            # tick logs all but a 401, so what ends the group is that: raised as it is.
            refused = _refusal(group)
            if refused is not None:
                raise refused from None  # several ticks may have met the same 401
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise
        finally:
            self._urls.abandon()

    async def _poll_until_stopped(self, requests: asyncio.TaskGroup) -> None:
        while not self._stopped:
            if not self._watches and not self._urls:
                self._next_tick_at = None
                self._changed.clear()
                # asyncio.timeout, not wait_for: on 3.11 wait_for loses a cancellation
                # that lands as the event is set, and the poller would idle on forever.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await self._changed.wait()
                continue
            now = self._clock()
            closing = self._draining and not self._watches  # the run's last lookups
            if self._lookup_due(now) and self._budget.pay(first_of_tick=True, closing=closing):
                self._send_lookup(requests)
                continue
            if self._watches and self._next_tick_at is None:
                self._next_tick_at = now + self._wait_s()
            wake = min(
                math.inf if self._next_tick_at is None else self._next_tick_at,
                self._urls.due_at(self._typical_s) if self._urls else math.inf,
            )
            # Nothing is done before the budget can pay for it.
            wake = max(wake, now + self._budget.affordable_in(self._tick_needs()))
            if wake > now:
                await self._sleep(wake - now)
                continue
            if self._next_tick_at is None or now < self._next_tick_at:
                continue  # a lookup was due: the loop sends it
            if self._ticks_running >= self._policy.max_ticks_in_flight:
                await self._sleep(self._policy.max_interval_s)
                continue
            # The cadence counts from a tick's start: the next one may go while this one
            # still waits for its answer (a far API), up to max_ticks_in_flight at once.
            self._next_tick_at = None
            self._ticks_running += 1
            self._ticks_started += 1
            tick = requests.create_task(self._tick_task(now), name="poller:tick")
            self._tick_tasks.add(tick)
            tick.add_done_callback(self._tick_tasks.discard)
        # Stopped: nobody waits for a read or a lookup any more, and one may be retrying
        # through an outage for a long while (reads and lookups spend nothing).
        for tick in self._tick_tasks:
            tick.cancel()
        self._urls.cancel_in_flight()

    async def _tick_task(self, started: float) -> None:
        try:
            await self._tick()
            if not self._draining:
                self._check_quiet_spell()
            elif self._next_tick_at is not None:
                # The next tick was planned as this one began; what it saw may have left
                # few jobs, and a faster pace (see `interval`) counts from this one's start.
                soonest = max(self._clock(), started + self._wait_s())
                self._next_tick_at = min(self._next_tick_at, soonest)
        except CredentialsError as exc:
            self._fail_all(exc)
            raise
        except OutageError as exc:
            # The API stayed down past the grace period: every waiter stops (resumable).
            self._fail_all(exc)
        except ApiError as exc:
            log.warning("polling failed this tick, will try again: %s", exc)
        finally:
            self._ticks_running -= 1
            self._wake.set()

    def _wait_s(self) -> float:
        """Until the next tick: the cadence, or longer while no job in flight is due."""
        interval = self.interval
        cadence = interval  # from the last tick's start (ticks do not wait for each other)
        if self._due_after is None:
            return cadence
        early, due = self._due_after
        due_after = min(due, early + interval)
        now = self._clock()
        # A job past its due time (the 97th percentile) is an outlier: stalled, or queued
        # upstream. It is looked at again after a tenth of how long it has been overdue (at
        # least the cadence), and the others' due times keep spacing the ticks meanwhile.
        on_time = []
        overdue_s = math.inf
        for watch in self._watches.values():
            late_by = now - (watch.started + due)
            if late_by > 0:
                overdue_s = min(overdue_s, late_by)
            else:
                on_time.append(watch.started)
        wait = max(cadence, self._policy.fraction_of_age * overdue_s)
        if on_time:
            spread, reach = due_after - early, self._policy.group_span * interval
            pace = self._budget_pace() if self._merging_groups() else None
            if pace is not None:
                # Steady durations, groups drifted apart (each wants ticks of its own, more
                # than the budget pays for): groups as far apart as the budget's pace join
                # the oldest, one tick sees them, and their successors go out together.
                # Left apart, issue 8's C=16 run drifted to +73 % added latency, its
                # outputs waiting 1.4 s of a 2 s job for a lookup (bench/RESULTS.md).
                spread, reach = max(spread, pace), max(reach, pace)
            last = self._oldest_group_end(on_time, spread, interval, reach)
            wait = min(wait, max(cadence, last + due_after - now))
        return min(self._policy.max_interval_s, wait)

    def _merging_groups(self) -> bool:
        """Whether groups of jobs apart are worth bringing together: durations steady, the
        budget not rich, and jobs still to send (in the drain, finished jobs have no
        successors to send together; a later sighting would only be later). Not rich is a
        wider test than the interval's (tokens short): merging only once tokens ran short
        came too late to bring groups together (bench/RESULTS.md, round 15)."""
        return not self._draining and self._steady() and not self._budget.rich()

    def _budget_pace(self) -> float | None:
        """Seconds between ticks that the budget pays for: a tick's requests, shared by the
        jobs finished meanwhile (None until a rate is known)."""
        if self._rate <= 0:
            return None
        return self._tick_requests / (self._budget.per_job_now * self._rate)

    def _oldest_group_end(
        self, starts: list[float], spread: float, interval: float, reach: float
    ) -> float:
        """When the last job of the oldest group was sent: the next tick waits for it.

        Jobs sent just after the first (one tick's successors go out over a few tens of
        ms) are one group. A group sent apart from it, but within `spread` (how much sooner
        than its due time a job may finish), joins it: else the tick would see that group's
        early finishers and not the rest, and a group seen in parts stays split (each
        part's successors go out apart, and each part costs a tick and a URL lookup of its
        own). A steady stream of starts (no gap wider than `gather`) is not merged on: its
        group ends `gather` after its first. No group reaches further than `reach`.
        """
        policy = self._policy
        gather = policy.gather_fraction * interval
        first = min(starts)
        limit = first + reach
        # Only the starts a group could reach are sorted (this runs before every tick).
        near = sorted(t for t in starts if t <= limit + gather)
        group_start = last = first
        for started in near[1:]:
            if started <= group_start + gather:
                last = started  # the same group
            elif gather < started - last <= spread and started <= limit:
                group_start = last = started  # a group close enough to be seen in parts
            else:
                break
        return last

    async def _sleep(self, seconds: float) -> None:
        if self._stopped:
            return
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            # Wake early only to stop, or when a tick ends (what it saw may make a lookup
            # due at once, or free a tick's turn); new jobs wait for the next tick like
            # everyone else.
            async with asyncio.timeout(seconds):
                await self._wake.wait()

    async def _tick(self) -> None:
        before = self._requests_at_tick
        finished_before = self.stats.finished
        try:
            await self._poll_once()
        finally:
            now = self._clock()
            # Requests since the last tick, URL lookups sent meanwhile included.
            self._requests_at_tick = self.stats.requests
            self._tick_requests = 0.8 * self._tick_requests + 0.2 * (self.stats.requests - before)
            if self._last_tick is not None and now > self._last_tick:
                finished, seconds = self.stats.finished - finished_before, now - self._last_tick
                self._rate = 0.8 * self._rate + 0.2 * finished / seconds
            self._last_tick = now

    async def _poll_once(self) -> None:
        self.stats.ticks += 1
        tick = self.stats.ticks
        budget = self._budget
        direct: list[str] = []  # jobs asked about one by one this tick
        sweep: bool | None = None  # None: no list read this tick
        if self._ask_each():
            oldest_first = sorted(self._watches.values(), key=lambda w: w.started)
            for watch in oldest_first:
                if not budget.pay(first_of_tick=not direct, rich=self._tick_needs()):
                    break
                direct.append(watch.job_id)
        else:
            now = self._clock()
            patience_s = self._stale_after_s()
            stale = sorted(
                (
                    w
                    for w in self._watches.values()
                    if tick - w.last_seen_tick >= self._policy.stale_after_ticks
                    and now - w.last_seen_at >= patience_s
                ),
                key=lambda w: w.last_seen_at,
            )
            # Jobs the list has left unmentioned this long are asked about too, a few a
            # tick: a list that never shows a job then cannot hold it (or the budget)
            # forever, and a crowd of them cannot starve the list read either.
            for watch in stale[: self._policy.stale_per_tick]:
                if not budget.pay(first_of_tick=not direct, rich=self._tick_needs()):
                    break
                watch.last_seen_tick, watch.last_seen_at = tick, now  # not asked twice
                direct.append(watch.job_id)
            if budget.pay(first_of_tick=not direct, rich=self._tick_needs()):
                sweep = self._sweep_due()
                if sweep:
                    self._last_sweep = self._clock()
        seen = await self._ask(direct, sweep)
        now = self._clock()
        for job_id in seen:
            mentioned = self._watches.get(job_id)
            if mentioned is not None:
                mentioned.last_seen_tick, mentioned.last_seen_at = tick, now
        self._finish([job for job in seen.values() if job.is_final and job.job_id in self._watches])

    def _finish(self, finished: list[JobView]) -> None:
        """Waiters learn of the end at once (their job slot can start the next job); the
        fresh URLs follow from a get-bulk call shared with other ticks' finished jobs."""
        for job in finished:
            watch = self._watches.pop(job.job_id)
            self._budget.ended(job.job_id)
            self.stats.finished += 1
            self._learn(self._clock() - watch.started, _api_duration(job))
            urls = self._urls.add(job)
            if not watch.future.done():
                watch.future.set_result(Finished(job, urls))
        self._budget.holding_outputs(bool(self._urls))
        if finished:
            self._update_due_after()
            # By the API's clock where known: our sightings include the wait for a tick,
            # which a tight budget lengthens (and a longer expected duration would then
            # slow the budget's flow in turn).
            self._budget.expected_s = self._expected_s or self._typical_s

    def _ask_each(self) -> bool:
        """With few jobs in flight, a tick asks about each directly (any status, no
        cursor), if tokens allow a question for every one: else one list read covers
        them all (asking only the oldest of two left the other unseen a tick longer)."""
        watching = len(self._watches)
        if watching >= self._policy.direct_below:
            return False
        return watching == 1 or self._budget.tokens() >= watching - 1 + self._tick_needs()

    async def _ask(self, direct: list[str], sweep: bool | None) -> dict[str, JobView]:
        """A tick's requests, sent together: against a far API one after another would
        take a round trip each (the last job's sighting among them). What a job's own GET
        says wins over the list's row. The first error is raised as it is."""
        seen: dict[str, JobView] = {}
        if not direct:  # most ticks: one read (or none paid for), no task
            if sweep is not None:
                await self._read_list(seen, sweep=sweep)
            return seen
        answers: dict[str, JobView] = {}

        async def get(job_id: str) -> None:
            answers[job_id] = await self._get(job_id)

        try:
            async with asyncio.TaskGroup() as group:
                for job_id in direct:
                    group.create_task(get(job_id), name="poller:get")
                if sweep is not None:
                    group.create_task(self._read_list(seen, sweep=sweep), name="poller:list")
        except BaseExceptionGroup as errors:
            raise (_refusal(errors) or errors.exceptions[0]) from None
        seen.update(answers)
        return seen

    async def _get(self, job_id: str) -> JobView:
        self.stats.direct_requests += 1
        return await self._client.get_job(job_id)

    def _check_quiet_spell(self) -> None:
        """After a tick: if jobs end in groups (durations `_steady`) and what it saw leaves
        no job in flight due within `url_quiet_fraction` of a typical job (a group ended,
        the next is far off), the tick planned at the cadence as it began would find
        nothing (it moves to when jobs are due), and the outputs waiting for a lookup would
        wait for no company (they go now). Durations spread wider: jobs end one by one, and
        outputs wait for company."""
        if self._typical_s is None or not self._steady():
            return
        quiet_s = self._policy.url_quiet_fraction * self._typical_s
        wait = self._wait_s()
        if wait < quiet_s:
            return
        if self._next_tick_at is not None:
            self._next_tick_at = max(self._next_tick_at, self._clock() + wait)
        self._urls.release()

    def _steady(self) -> bool:
        """Whether jobs take much the same time (their durations within
        `url_quiet_fraction` of a typical job of each other): they then end in groups."""
        if self._typical_s is None or self._due_after is None:
            return False
        early, due = self._due_after
        return due - early <= self._policy.url_quiet_fraction * self._typical_s

    def _tick_needs(self) -> float:
        """Tokens in hand for a tick's request: one more while outputs wait for a lookup,
        or once nothing is left to send (any tick may then see the last job, whose lookup
        ends the run), so that lookups are never starved by ticks."""
        return 2.0 if self._urls or self._draining else 1.0

    def _lookup_due(self, now: float) -> bool:
        """A lookup goes when due (see batch/run/url_lookups.py), or at once while the
        budget is rich (see `PollBudget.rich`: ticks are not spending what flows in, as
        between groups of jobs that end together), not merely because a token is to
        spare: sent early it would cut no job slot's wait, only the budget left for
        ticks (jobs that end one by one wait for company, see `url_wait_fraction`)."""
        if not self._urls:
            return False
        if self._budget.rich():
            return True
        return self._urls.due(now, self._typical_s, jobs_in_flight=bool(self._watches))

    def _send_lookup(self, lookups: asyncio.TaskGroup) -> None:
        self.stats.url_requests += self._urls.send(lookups)
        self._budget.holding_outputs(bool(self._urls))

    def _sweep_due(self) -> bool:
        """Most ticks ask only for jobs that succeeded: on a busy run that is a third of
        the jobs that changed, so a third of the pages. Every `sweep_every_s` or typical
        job, whichever is longer (and on every tick when ticks are that far apart), one
        read asks for every status, which catches failed and canceled jobs and shows which
        running jobs are still moving. A sweep reads every job that changed since the
        last: on a busy run, several pages, and the fewer sweeps per job the fewer."""
        if self._last_sweep is None:
            return True
        policy = self._policy
        every = max(policy.sweep_every_s, policy.sweep_fraction_of_job * (self._typical_s or 0.0))
        return self._clock() - self._last_sweep >= max(every, self.interval)

    async def _read_list(self, seen: dict[str, JobView], *, sweep: bool) -> None:
        newest: dt.datetime | None = None
        newest_text = ""  # API dates share one fixed-width UTC format: text order is time order
        cursor = self._cursor
        if sweep and self._sweep_cursor is not None:
            # A sweep reads from the older of the two cursors, so it also covers everything
            # a success-only read would have seen.
            cursor = self._sweep_cursor if cursor is None else min(cursor, self._sweep_cursor)
        watches = self._watches
        token: str | None = None
        while True:
            page, token = await self._client.list_job_page(
                updated_after=format_time(cursor) if cursor else None,
                job_type="custom",
                status=None if sweep else "success",
                page_size=self._policy.page_size,
                token=token,
            )
            self.stats.list_requests += 1
            for raw in page:
                text = raw.get("updatedAt")
                if not isinstance(text, str):
                    continue
                if len(text) == _ISO_MS_LEN and text.endswith("Z"):
                    newest_text = max(newest_text, text)
                else:
                    updated = parse_time(text)
                    newest = updated if newest is None or updated > newest else newest
                job_id = raw.get("jobId")
                # Only jobs of this run are parsed; newest first: the first sighting is the
                # latest.
                if job_id in watches and job_id not in seen:
                    seen[job_id] = JobView.parse(raw)
            if token is None:
                break
            # A full page: more of the same follows, worth a token. A short page with a
            # token (the API cut it short): the rest waits for the next tick's read, from
            # the same cursor, unless tokens are to spare.
            if not self._budget.pay(rich=1.0 if len(page) >= self._policy.page_size else 2.0):
                return  # cursors stay: the pages not read are newer than them
        if newest_text:
            parsed = parse_time(newest_text)
            newest = parsed if newest is None or parsed > newest else newest
        if newest is not None:
            success_from = newest - dt.timedelta(seconds=self._policy.success_settle_s)
            if self._cursor is None or success_from > self._cursor:
                self._cursor = success_from
            sweep_from = newest - dt.timedelta(seconds=self._policy.settle_s)
            if sweep and (self._sweep_cursor is None or sweep_from > self._sweep_cursor):
                self._sweep_cursor = sweep_from

    def _stale_after_s(self) -> float:
        """A job the list has not mentioned for this long (and for `stale_after_ticks`
        ticks) is asked about directly. Jobs may rightly go unmentioned for most of their
        run (no status change), so the patience covers twice a typical job's duration,
        and never less than `stale_after_min_s`. In seconds, not ticks: the pace changes
        (the drain's is slower), and a count of ticks would make every job stale at once."""
        return max(2 * (self._typical_s or 0.0), self._policy.stale_after_min_s)

    def _learn(self, seconds: float, api_seconds: float | None) -> None:
        """`seconds`: from our watch to our sighting; `api_seconds`: the job's own run, by
        the API's clock. Due times use the latter: ours include the wait for a tick, which
        would push every due time later, and every wait longer, run after run."""
        if api_seconds is not None:
            window = max(self._policy.due_samples, 2 * self._budget.most_in_flight)
            if self._durations.maxlen is None or self._durations.maxlen < window:
                self._durations = deque(self._durations, maxlen=window)
            self._durations.append(api_seconds)
        self.stats.durations.append(seconds)
        # A slow-moving average: one odd job does not swing the pace.
        self._typical_s = (
            seconds if self._typical_s is None else 0.8 * self._typical_s + 0.2 * seconds
        )

    def _update_due_after(self) -> None:
        policy = self._policy
        if len(self._durations) < policy.due_min_samples:
            return
        ordered = sorted(self._durations)
        last = len(ordered) - 1
        early = ordered[min(last, int(len(ordered) * policy.early_quantile))]
        due = ordered[min(last, int(len(ordered) * policy.due_quantile))]
        self._due_after = (early, due)
        # The expected duration is the mean (C jobs in flight finish C per mean duration, so
        # the budget's wave flow costs per_wave / C per job whatever the spread); a job past
        # the due quantile is an outlier (stalled, queued upstream) and would skew it.
        kept = ordered[: min(len(ordered), int(len(ordered) * policy.due_quantile) + 1)]
        self._expected_s = sum(kept) / len(kept)

    def _fail_all(self, error: BaseException) -> None:
        self.error = error
        for watch in self._watches.values():
            self._budget.ended(watch.job_id)
            if not watch.future.done():
                watch.future.set_exception(error)
        self._watches.clear()


def _refusal(errors: BaseExceptionGroup[BaseException]) -> CredentialsError | None:
    """The first 401 among a group's errors: it ends the run, whatever else failed."""
    return next((e for e in errors.exceptions if isinstance(e, CredentialsError)), None)


def _api_duration(job: JobView) -> float | None:
    """How long the job ran by the API's own clock (creation to its final update)."""
    try:
        created = dt.datetime.fromisoformat(job.created_at.replace("Z", "+00:00"))
        updated = dt.datetime.fromisoformat(job.updated_at.replace("Z", "+00:00"))
        seconds = (updated - created).total_seconds()
    except (ValueError, TypeError):  # a missing date, or one naive and one aware
        return None
    return seconds if seconds >= 0 else None


def parse_time(value: str) -> dt.datetime:
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return dt.datetime.now(dt.UTC)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def format_time(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
