"""The poller's own logic: direct fallback for jobs the list never mentions, success-only
reads with periodic sweeps."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import math
import random
import statistics
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batch.api.client import JobView, ScenarioClient
from batch.errors import CredentialsError
from batch.run.poller import Finished, Poller, PollPolicy, format_time
from batch.run.url_lookups import UrlLookups
from batch.simulator import MODEL_ID, Simulator
from tests.conftest import SimulatorFactory
from tests.pipeline_helpers import settings_for


class _SilentList:
    """A client whose job list never mentions the job (a lost update), while a direct
    GET knows it finished."""

    def __init__(self) -> None:
        self.gets = 0
        self.lists = 0

    async def list_job_page(self, **_: Any) -> tuple[list[dict[str, Any]], str | None]:
        self.lists += 1
        return [], None  # one empty page

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


async def _poll_until_final(
    client: Any, policy: PollPolicy, job_ids: Sequence[str], since: str
) -> list[Finished]:
    """Run a poller over a fake client until every job is final (5 s at most)."""
    poller = Poller(client, policy)
    async with asyncio.TaskGroup() as group:
        running = group.create_task(poller.run())
        waits = [group.create_task(poller.wait_for(job_id, since)) for job_id in job_ids]
        async with asyncio.timeout(5):
            finished = [await w for w in waits]
            for final in finished:  # as the pipeline does, before it stops the poller
                await final.urls
        poller.stop()
        await running
    return finished


async def test_job_missing_from_the_list_is_asked_about_directly() -> None:
    """A job the list never shows is fetched directly once the patience runs out (the
    budget spent on reads that show nothing, by the liveness floor)."""
    client = _SilentList()
    policy = PollPolicy(
        min_interval_s=0.01,
        max_interval_s=0.1,
        initial_interval_s=0.01,
        direct_below=1,
        stale_after_ticks=3,
        stale_after_min_s=0.05,
    )
    job_ids = [f"job_{n}" for n in range(3)]
    finished = await _poll_until_final(client, policy, job_ids, "2026-11-25T00:00:00.000Z")
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
                # As the pipeline does: the poller runs until every output has its URLs.
                urls = [await f.urls for f in finished]
            poller.stop()
            await running

    statuses = Counter(f.job.status for f in finished)
    assert statuses["failure"] >= 2 and statuses["success"] >= 2, statuses
    for final, found in zip(finished, urls, strict=True):
        assert final.job.status == sim.job_state(final.job.job_id).status
        assert set(found) == set(final.job.asset_ids)
    lists = [r for r in sim.records("api", "/v1/jobs") if r.path == "/v1/jobs"]
    assert all(r.query.get("type") == "custom" for r in lists)
    success_only = [r for r in lists if r.query.get("status") == "success"]
    sweeps = [r for r in lists if "status" not in r.query]
    assert len(success_only) + len(sweeps) == len(lists)
    assert sweeps and len(success_only) > 2 * len(sweeps), (len(success_only), len(sweeps))


async def _list_reads_for_a_group(
    sim: Simulator, png_bytes: Callable[..., bytes], policy: PollPolicy, size: int = 10
) -> tuple[int, list[str]]:
    """Run a first group of `size` jobs to its end (the poller learns their durations), then
    a second group sent together; the list reads the second group cost, and its statuses."""
    async with aiohttp.ClientSession() as session:
        client = ScenarioClient(session, settings_for(sim))
        asset = await client.upload_image(png_bytes(16, 16), "ref.png", "image/png")
        poller = Poller(client, policy)

        async def group_of_jobs(tag: str) -> list[str]:
            submitted = await asyncio.gather(
                *(
                    client.generate(MODEL_ID, {"prompt": f"{tag}{n}", "referenceImages": [asset]})
                    for n in range(size)
                )
            )
            async with asyncio.timeout(20):
                finished = await asyncio.gather(
                    *(poller.wait_for(s.job.job_id, s.job.created_at) for s in submitted)
                )
            return [f.job.status for f in finished]

        def list_reads() -> int:
            return sum(1 for r in sim.records("api", "/v1/jobs") if r.path == "/v1/jobs")

        async with asyncio.TaskGroup() as group:
            running = group.create_task(poller.run())
            await group_of_jobs("first")
            before = list_reads()
            statuses = await group_of_jobs("second")
            reads = list_reads() - before
            poller.stop()
            await running
    return reads, statuses


@pytest.mark.parametrize("size", [10, 150])
async def test_jobs_with_steady_durations_are_seen_together(
    simulator_factory: SimulatorFactory, png_bytes: Callable[..., bytes], size: int
) -> None:
    """Durations steady: once the poller knows them, it sleeps until the group is due and
    a few reads see it all, where a tick every twentieth of a duration would read about
    twenty times. Few jobs finishing per second (10) or hundreds (150): a busy run skips the
    ticks that could find nothing as well. (A budget that does not bind: the pace alone.)"""
    quick = PollPolicy(initial_interval_s=0.05, budget_per_job=10.0)
    cadence_only = PollPolicy(
        initial_interval_s=0.05, due_min_samples=1_000_000, budget_per_job=10.0
    )
    counts: dict[str, int] = {}
    for name, policy in (("due", quick), ("cadence", cadence_only)):
        sim = await simulator_factory(seed=5, job_latency_s=0.5, job_latency_jitter=0.05)
        reads, statuses = await _list_reads_for_a_group(sim, png_bytes, policy, size)
        assert statuses == ["success"] * size
        counts[name] = reads
    # 150 jobs are two pages a read.
    assert counts["due"] <= 6 and counts["cadence"] >= 3 * counts["due"], counts


def _knowing(
    durations: list[tuple[float, float]], now: list[float], policy: PollPolicy | None = None
) -> Poller:
    """A poller on a fake clock (`now[0]`) that has seen jobs end: (our sighting, the
    API's duration) for each."""
    poller = Poller(_SilentList(), policy or PollPolicy(), clock=lambda: now[0])  # type: ignore[arg-type]
    for seconds, api_seconds in durations:
        poller._learn(seconds, api_seconds)
    poller._update_due_after()
    return poller


async def test_a_tick_waits_for_due_jobs_but_not_past_the_early_finishers() -> None:
    """Steady durations: the next tick comes when the group is all but surely done (the
    97th percentile). Durations that vary widely: an interval after the 5th percentile,
    so early finishers wait no longer than the cadence would make them. Busy runs too:
    no tick before anything can have finished, however fast jobs finish."""
    now = [1000.0]
    for spread, expected in ((0.02, "due"), (0.5, "early")):
        durations = [2.0 * (1 - spread + 2 * spread * n / 99) for n in range(100)]
        poller = _knowing([(d, d) for d in durations], now)
        waiting = asyncio.ensure_future(poller.wait_for("job_1", "2026-11-25T00:00:00.000Z"))
        await asyncio.sleep(0)
        interval = poller.interval
        due = durations[97] if expected == "due" else durations[5] + interval
        assert poller._wait_s() == pytest.approx(due), (spread, interval)
        assert poller._wait_s() > interval  # no tick before anything can have finished
        # Hundreds of jobs finishing per second: a short cadence, and still no tick
        # before the first job is due (at most an interval after the 5th percentile).
        poller._rate = 500.0
        busy = poller.interval
        assert busy < interval
        assert poller._wait_s() == pytest.approx(min(durations[97], durations[5] + busy))
        now[0] += poller._wait_s()
        assert poller._wait_s() == pytest.approx(busy)  # due now: the cadence
        now[0] = 1000.0
        waiting.cancel()


async def test_a_wave_wider_than_the_duration_window_is_learned_whole() -> None:
    """A first wave of 300 jobs ends in order of duration (1 s to 3 s): the durations that
    say when the next wave is due are the whole wave's, not its slowest 100 (whose 5th
    percentile, 2.2 s, kept ticks away while the next wave's short jobs ended)."""
    now = [1000.0]
    poller = Poller(_SilentList(), PollPolicy(), clock=lambda: now[0])  # type: ignore[arg-type]
    waits = [
        asyncio.ensure_future(poller.wait_for(f"job_{n}", "2026-11-25T00:00:00.000Z"))
        for n in range(300)
    ]
    await asyncio.sleep(0)
    for n in range(300):  # as they end: the shortest first
        duration = 1.0 + 2.0 * n / 299
        poller._learn(duration, duration)
    poller._update_due_after()
    assert poller._due_after is not None
    early, due = poller._due_after
    assert early == pytest.approx(1.1, abs=0.02)
    assert due == pytest.approx(2.94, abs=0.02)
    for waiting in waits:
        waiting.cancel()


class _FarList:
    """A job list 50 ms away that never shows the job finished."""

    def __init__(self) -> None:
        self.reads: list[float] = []
        self.third_read = asyncio.Event()

    async def list_job_page(self, **_: Any) -> tuple[list[dict[str, Any]], str | None]:
        self.reads.append(time.monotonic())
        if len(self.reads) == 3:
            self.third_read.set()
        await asyncio.sleep(0.05)
        return [], None

    async def asset_urls(self, asset_ids: Sequence[str]) -> dict[str, str]:
        return {}


async def test_the_second_tick_follows_the_jobs_age_not_the_initial_interval() -> None:
    """Before any job ended, the first tick comes after `initial_interval_s`, the next
    ones after a tenth of the oldest job's age: also when the first tick is still waiting
    for its answer as the next one is planned (a far API)."""
    client = _FarList()
    policy = PollPolicy(initial_interval_s=0.3, min_interval_s=0.01, direct_below=1)
    poller = Poller(client, policy)  # type: ignore[arg-type]
    async with asyncio.TaskGroup() as group:
        running = group.create_task(poller.run())
        waiting = group.create_task(poller.wait_for("job_0", "2026-11-25T00:00:00.000Z"))
        async with asyncio.timeout(5):
            await client.third_read.wait()
        gaps = [b - a for a, b in zip(client.reads, client.reads[1:], strict=False)]
        # A tenth of the oldest job's age (0.3 s, then a little more): ~0.03-0.04 s.
        assert max(gaps) < 0.15, gaps
        waiting.cancel()
        poller.stop()
        await running


async def test_due_times_follow_the_oldest_job_and_the_api_clock() -> None:
    """The first job due sets the wait, by the API's durations (not our sightings, which
    include the wait for a tick); a job just overdue brings back the cadence; a wait is
    never longer than `max_interval_s`."""
    now = [1000.0]
    # Seen 2.6 s after the watch began; ran 2.0 s by the API.
    poller = _knowing([(2.6, 2.0)] * 20, now)
    interval = poller.interval
    waits = []
    # An older job, one sent just after it (gathered with it), and one a second later.
    for job_id, started in (("older", 1000.0), ("companion", 1000.01), ("newer", 1001.0)):
        now[0] = started
        waits.append(asyncio.ensure_future(poller.wait_for(job_id, "2026-11-25T00:00:00.000Z")))
        await asyncio.sleep(0)
    now[0] = 1000.5
    assert poller._wait_s() == pytest.approx(1.51)  # the older two are due at 1002.01
    now[0] = 1002.01
    assert poller._wait_s() == pytest.approx(interval)  # due now: the cadence floor
    now[0] = 1003.5  # the older is 1.5 s overdue: the cadence (a tenth of 1.5 s is less)
    assert poller._wait_s() == pytest.approx(interval)
    for waiting in waits:
        waiting.cancel()

    slow = _knowing([(600.0, 600.0)] * 20, now)  # ten-minute jobs
    waiting = asyncio.ensure_future(slow.wait_for("long", "2026-11-25T00:00:00.000Z"))
    await asyncio.sleep(0)
    assert slow._wait_s() == pytest.approx(PollPolicy().max_interval_s)
    waiting.cancel()


async def test_a_stalled_job_is_looked_at_less_often_and_does_not_set_the_pace() -> None:
    """A job long past its due time (stalled upstream) is looked at after a tenth of how
    long it has been overdue, not at the cadence; the other jobs' due times still space
    the ticks. A job only just overdue keeps the cadence (the tail of a run)."""
    now = [1000.0]
    poller = _knowing([(2.0, 2.0)] * 20, now)
    interval = poller.interval
    _, due = poller._due_after or (0.0, 0.0)
    stalled = asyncio.ensure_future(poller.wait_for("stalled", "2026-11-25T00:00:00.000Z"))
    await asyncio.sleep(0)
    now[0] = 1000.0 + due + 60.0  # overdue by a minute: looked at every 6 s
    assert poller._wait_s() == pytest.approx(6.0)
    fresh = asyncio.ensure_future(poller.wait_for("fresh", "2026-11-25T00:00:00.000Z"))
    await asyncio.sleep(0)
    sent = now[0]
    now[0] += 0.5  # the fresh job is due 1.5 s from now: the next tick then, not sooner
    assert poller._wait_s() == pytest.approx(sent + due - now[0])
    assert poller._wait_s() > interval
    now[0] = sent + due + 0.1  # both overdue, the fresh one only just: the cadence
    assert poller._wait_s() == pytest.approx(interval)
    fresh.cancel()
    await asyncio.sleep(0)
    poller._watches.pop("fresh", None)
    now[0] = 1000.0 + due + 500.0  # never longer than max_interval_s
    assert poller._wait_s() == pytest.approx(PollPolicy().max_interval_s)
    stalled.cancel()


async def test_a_slower_pace_does_not_make_every_job_stale_at_once() -> None:
    """Patience with jobs the list does not mention is counted in seconds: after many
    quick ticks, the drain's slower pace does not turn every job in flight into a direct
    GET (which once starved the list reads for a minute), and once jobs are stale, only
    a few are asked about each tick, the list still read."""
    now = [1000.0]
    client = _SilentList()
    policy = PollPolicy(budget_per_job=10.0, learning_requests=1000)
    poller = Poller(client, policy, clock=lambda: now[0])  # type: ignore[arg-type]
    waits = [
        asyncio.ensure_future(poller.wait_for(f"job_{n}", "2026-11-25T00:00:00.000Z"))
        for n in range(40)
    ]
    await asyncio.sleep(0)
    for _ in range(150):  # 7.5 s of ticks every 50 ms
        now[0] += 0.05
        await poller._poll_once()
    poller.draining()
    now[0] += 1.0
    await poller._poll_once()
    assert client.gets == 0 and client.lists == 151
    now[0] += policy.stale_after_min_s  # now past the patience: a few GETs, and the list
    await poller._poll_once()
    assert client.gets == policy.stale_per_tick and client.lists == 152
    for waiting in waits:
        waiting.cancel()


async def test_a_tick_waits_for_a_group_it_would_see_in_parts() -> None:
    """A group sent apart from the oldest, but so soon after it that its early finishers
    would be seen by the oldest group's tick, is waited for too (seen in parts, a group
    stays split: each part's successors go out apart); a group sent later is not. A
    steady stream of starts is not merged on and on: only the jobs sent together."""
    now = [1000.0]
    steady = [2.0 * (0.95 + 0.1 * n / 99) for n in range(100)]  # 1.90-2.10 s
    policy = PollPolicy(fraction_of_job=0.1)  # a cadence of 0.2 s: wider than the spread
    poller = _knowing([(d, d) for d in steady], now, policy)
    early, due = poller._due_after or (0.0, 0.0)
    interval = poller.interval
    due_after = min(due, early + interval)
    gather = policy.gather_fraction * interval
    assert gather < 0.13 < due_after - early < interval

    async def send(job_id: str, at: float) -> asyncio.Future[Finished]:
        now[0] = at
        waiting = asyncio.ensure_future(poller.wait_for(job_id, "2026-11-25T00:00:00.000Z"))
        await asyncio.sleep(0)
        return waiting

    waits = [await send(f"a{n}", 1000.0 + 0.01 * n) for n in range(3)]  # sent together
    waits += [await send(f"b{n}", 1000.15 + 0.01 * n) for n in range(2)]  # 0.13 s later
    waits.append(await send("c", 1000.6))  # well apart: a group of its own
    now[0] = 1000.7
    assert poller._wait_s() == pytest.approx(1000.16 + due_after - now[0])
    for waiting in waits:
        waiting.cancel()
    poller._watches.clear()

    waits = [await send(f"s{n}", 2000.0 + 0.01 * n) for n in range(100)]  # one every 10 ms
    now[0] = 2001.0
    last = max(2000.0 + 0.01 * n for n in range(100) if 0.01 * n <= gather + 1e-9)
    assert poller._wait_s() == pytest.approx(last + due_after - now[0])
    for waiting in waits:
        waiting.cancel()


class _LaggingList:
    """A job list where job B's success (stamped before A's) becomes visible only after
    A's has been read: the case a success-only read's short look-back misses."""

    def __init__(self) -> None:
        self.reads: list[tuple[str | None, str | None]] = []  # (status, updatedAfter)
        self.gets = 0
        self.b_found_by: tuple[str | None, str | None] | None = None

    def _jobs(self) -> list[dict[str, Any]]:
        jobs = []
        if self.reads:  # A is listed from the first read on
            jobs.append(self._job("job_a", "2026-11-25T00:00:10.000Z"))
        if len(self.reads) >= 3:  # B shows up late, dated 50 ms before A
            jobs.append(self._job("job_b", "2026-11-25T00:00:09.950Z"))
        return jobs

    @staticmethod
    def _job(job_id: str, updated: str) -> dict[str, Any]:
        return {
            "jobId": job_id,
            "status": "success",
            "createdAt": "2026-11-25T00:00:05.000Z",
            "updatedAt": updated,
            "metadata": {"assetIds": [f"asset_{job_id}"]},
        }

    async def list_job_page(
        self, *, updated_after: str | None = None, status: str | None = None, **_: Any
    ) -> tuple[list[dict[str, Any]], str | None]:
        self.reads.append((status, updated_after))
        page = [
            job
            for job in self._jobs()
            if (updated_after is None or job["updatedAt"] > updated_after)
            and (status is None or job["status"] == status)
        ]
        if self.b_found_by is None and any(job["jobId"] == "job_b" for job in page):
            self.b_found_by = (status, updated_after)
        return sorted(page, key=lambda job: job["updatedAt"], reverse=True), None

    async def get_job(self, job_id: str) -> JobView:
        self.gets += 1
        raise AssertionError("the list must find both jobs")

    async def asset_urls(self, asset_ids: Sequence[str]) -> dict[str, str]:
        return {a: f"https://cdn.example/{a}" for a in asset_ids}


async def test_a_success_listed_late_is_caught_by_the_next_sweep() -> None:
    """Success-only reads look back only `success_settle_s` past the newest update they
    saw, so a success the list shows late (dated before it) is not theirs to find: the
    next sweep, which reads from the previous sweep's newest update less `settle_s`,
    finds it."""
    assert PollPolicy().success_settle_s < PollPolicy().settle_s  # the shipped defaults
    client = _LaggingList()
    policy = PollPolicy(
        min_interval_s=0.01,
        initial_interval_s=0.01,
        budget_per_job=50.0,  # ticks at the cadence: success-only reads between sweeps
        direct_below=0,
        stale_after_min_s=60.0,
        success_settle_s=0.01,
        settle_s=0.5,
        sweep_every_s=0.1,
    )
    since = "2026-11-25T00:00:05.000Z"
    finished = await _poll_until_final(client, policy, ["job_a", "job_b"], since)
    assert [f.job.status for f in finished] == ["success", "success"]
    assert client.gets == 0
    # Once A was seen, success-only reads asked only for updates after 09.990 (B's
    # 09.950 is older): B was found by a sweep, which asked from further back.
    success_after = [after for status, after in client.reads[1:] if status == "success"]
    assert success_after and all(
        a is not None and a > "2026-11-25T00:00:09.95" for a in success_after
    )
    assert client.b_found_by is not None and client.b_found_by[0] is None


async def test_a_job_sent_earlier_is_due_sooner() -> None:
    """A job resumed from the ledger (or adopted after an interrupted submit) has run since
    it was sent: its due time counts from then, not from when this run began watching."""
    now = [1000.0]
    poller = _knowing([(2.0, 2.0)] * 20, now)
    since = "2026-11-25T00:00:00.000Z"
    resumed = asyncio.ensure_future(poller.wait_for("resumed", since, age_s=1.5))
    await asyncio.sleep(0)
    assert poller._wait_s() == pytest.approx(0.5)  # due 2.0 s after it was sent
    resumed.cancel()
    poller.forget("resumed")
    fresh = asyncio.ensure_future(poller.wait_for("fresh", since))
    await asyncio.sleep(0)
    assert poller._wait_s() == pytest.approx(2.0)
    fresh.cancel()


class _SlowUrls:
    """A client whose job list shows the jobs in `done` as succeeded, and whose URL
    lookups hang until `release` is set."""

    def __init__(self) -> None:
        self.done: set[str] = set()
        self.release = asyncio.Event()
        self.second_lookup = asyncio.Event()
        self.lookups = 0

    async def list_job_page(self, **_: Any) -> tuple[list[dict[str, Any]], str | None]:
        return [
            {
                "jobId": job_id,
                "status": "success",
                "createdAt": "2026-11-25T00:00:00.000Z",
                "updatedAt": "2026-11-25T00:00:01.000Z",
                "metadata": {"assetIds": [f"asset_of_{job_id}"]},
            }
            for job_id in sorted(self.done)
        ], None

    async def get_job(self, job_id: str) -> JobView:
        raise AssertionError("the list shows every job: no direct GET expected")

    async def asset_urls(self, asset_ids: Sequence[str]) -> dict[str, str]:
        self.lookups += 1
        if self.lookups == 2:
            self.second_lookup.set()
        await self.release.wait()
        return {a: f"https://cdn.example/{a}" for a in asset_ids}


async def test_a_slow_url_lookup_does_not_hold_up_the_next_tick() -> None:
    """URL lookups run beside the ticks: while one hangs, the next job to finish is still
    reported at the poller's cadence, and both get their URLs once lookups answer."""
    client = _SlowUrls()
    policy = PollPolicy(
        min_interval_s=0.01,
        initial_interval_s=0.01,
        direct_below=1,
        budget_per_job=10.0,
        url_wait_fraction=0.0,  # each output's lookup goes as soon as it is seen
    )
    poller = Poller(client, policy)  # type: ignore[arg-type]
    since = "2026-11-25T00:00:00.000Z"
    async with asyncio.TaskGroup() as group:
        running = group.create_task(poller.run())
        first = group.create_task(poller.wait_for("job_0", since))
        second = group.create_task(poller.wait_for("job_1", since))
        client.done.add("job_0")
        async with asyncio.timeout(2):
            first_final = await first
        client.done.add("job_1")
        async with asyncio.timeout(2):
            second_final = await second  # found while job_0's lookup still hangs
        async with asyncio.timeout(2):
            await client.second_lookup.wait()  # its own lookup goes too, beside the first
        assert not first_final.urls.done() and client.lookups == 2
        # Each tick's lookup is counted with that tick (its cost sets the pace), not when
        # it answers.
        assert poller.stats.url_requests == 2
        client.release.set()
        async with asyncio.timeout(2):
            assert await first_final.urls == {
                "asset_of_job_0": "https://cdn.example/asset_of_job_0"
            }
            assert await second_final.urls == {
                "asset_of_job_1": "https://cdn.example/asset_of_job_1"
            }
        poller.stop()
        await running


def _succeeded(n: int, outputs: int = 1) -> JobView:
    """Job `n`, succeeded with `outputs` outputs (as a URL lookup sees it)."""
    stamp = "2026-11-25T00:00:00.000Z"
    assets = tuple(f"asset_{n}_{k}" for k in range(outputs))
    return JobView(f"job_{n}", "success", 1.0, stamp, stamp, assets)


async def test_the_first_url_lookup_goes_at_once_and_later_ones_gather_a_wave() -> None:
    """The run's first outputs are looked up as soon as they are seen (their downloads prove
    the way to disk before another wave is bought); later ones wait up to `wait_fraction`
    of a typical job, so one get-bulk serves the outputs of several ticks."""
    now = [100.0]
    client = _SlowUrls()
    lookups = UrlLookups(
        client,  # type: ignore[arg-type]
        wait_fraction=1.0,
        max_wait_s=10.0,
        clock=lambda: now[0],
    )

    lookups.add(_succeeded(0))
    assert lookups.due(now[0], 2.0, jobs_in_flight=True)
    async with asyncio.TaskGroup() as group:
        assert lookups.send(group) == 1
        now[0] += 0.5
        lookups.add(_succeeded(1))
        assert not lookups.due(now[0], 2.0, jobs_in_flight=True)
        assert lookups.due_at(2.0) == pytest.approx(102.5)
        now[0] += 2.0
        assert lookups.due(now[0], 2.0, jobs_in_flight=True)
        client.release.set()  # the first lookup's answer
    assert client.lookups == 1


async def test_released_outputs_go_with_the_next_lookups_until_none_is_left() -> None:
    """`release` (nothing would join the waiting outputs soon) makes a lookup due at once,
    and the next ones too while released outputs remain (more than a get-bulk holds);
    outputs that come after them wait for company again."""
    now = [100.0]
    client = _SlowUrls()
    client.release.set()
    lookups = UrlLookups(
        client,  # type: ignore[arg-type]
        wait_fraction=2.0,
        max_wait_s=10.0,
        clock=lambda: now[0],
    )

    async with asyncio.TaskGroup() as group:
        lookups.add(_succeeded(0))
        lookups.send(group)  # the run's first goes at once
        lookups.add(_succeeded(1, 90))
        lookups.add(_succeeded(2, 90))
        assert not lookups.due(now[0], 1.0, jobs_in_flight=True)
        lookups.release()
        assert lookups.due(now[0], 1.0, jobs_in_flight=True)
        lookups.add(_succeeded(3, 90))  # 270 outputs: more than one get-bulk holds (200)
        assert lookups.due_at(1.0) <= now[0]
        assert lookups.send(group) == 1  # jobs 1 and 2 (180 outputs)
        assert lookups.due(now[0], 1.0, jobs_in_flight=True)  # job 3 is still released
        lookups.send(group)
        lookups.add(_succeeded(4))
        assert not lookups.due(now[0], 1.0, jobs_in_flight=True)
        assert lookups.due_at(1.0) == pytest.approx(now[0] + 2.0)
    assert client.lookups == 3


class _HangingList:
    """A job list whose reads never answer (a call retrying through a long outage)."""

    def __init__(self) -> None:
        self.reading = asyncio.Event()

    async def list_job_page(self, **_: Any) -> tuple[list[dict[str, Any]], str | None]:
        self.reading.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_stop_cancels_the_reads_in_flight() -> None:
    """Once stopped, the poller returns at once: nobody waits for a read any more, and one
    retrying through an outage could otherwise hold the run's end for its whole budget."""
    client = _HangingList()
    poller = Poller(client, PollPolicy(initial_interval_s=0.01, direct_below=1))  # type: ignore[arg-type]
    async with asyncio.TaskGroup() as group:
        running = group.create_task(poller.run())
        waiting = group.create_task(poller.wait_for("job_0", "2026-11-25T00:00:00.000Z"))
        async with asyncio.timeout(5):
            await client.reading.wait()
        waiting.cancel()
        poller.stop()
        async with asyncio.timeout(1):
            await running


class _Refused:
    """A client whose credentials were revoked mid-run: every list read answers 401."""

    async def list_job_page(self, **_: Any) -> tuple[list[dict[str, Any]], str | None]:
        raise CredentialsError("HTTP 401: check SCENARIO_SDK_API_KEY")


async def test_a_401_while_polling_ends_the_run_with_that_error() -> None:
    """The poller raises the CredentialsError itself (not wrapped in a group by the task
    group its URL lookups run in), and every waiter gets it too."""
    poller = Poller(_Refused(), PollPolicy(initial_interval_s=0.01, direct_below=1))  # type: ignore[arg-type]
    waiter = asyncio.ensure_future(poller.wait_for("job_0", "2026-11-25T00:00:00.000Z"))
    async with asyncio.timeout(5):
        with pytest.raises(CredentialsError, match="401"):
            await poller.run()
        with pytest.raises(CredentialsError):
            await waiter


class _Jobs:
    """A client 50 ms away for every request: jobs in `done` are succeeded (the list shows
    them, a GET says so), the others running; each request's start is kept."""

    def __init__(self) -> None:
        self.done: set[str] = set()
        self.gets: list[tuple[float, str]] = []
        self.lists: list[float] = []
        self.lookups: list[float] = []

    def _row(self, job_id: str) -> dict[str, Any]:
        finished = job_id in self.done
        return {
            "jobId": job_id,
            "status": "success" if finished else "in-progress",
            "createdAt": "2026-11-25T00:00:00.000Z",
            "updatedAt": "2026-11-25T00:00:01.000Z",
            "metadata": {"assetIds": [f"asset_of_{job_id}"] if finished else []},
        }

    async def list_job_page(self, **_: Any) -> tuple[list[dict[str, Any]], str | None]:
        self.lists.append(time.monotonic())
        await asyncio.sleep(0.05)
        return [self._row(job_id) for job_id in sorted(self.done)], None

    async def get_job(self, job_id: str) -> JobView:
        self.gets.append((time.monotonic(), job_id))
        await asyncio.sleep(0.05)
        return JobView.parse(self._row(job_id))

    async def asset_urls(self, asset_ids: Sequence[str]) -> dict[str, str]:
        self.lookups.append(time.monotonic())
        await asyncio.sleep(0.05)
        return {a: f"https://cdn.example/{a}" for a in asset_ids}


_SINCE = "2026-11-25T00:00:00.000Z"


async def test_a_ticks_direct_questions_go_together() -> None:
    """With two jobs left, a tick asks about both at once: against a far API, one after
    the other would see the second a round trip later."""
    client = _Jobs()
    client.done.update({"job_0", "job_1"})
    # Tokens for both questions by the first tick (shares vest over max_interval_s).
    policy = PollPolicy(initial_interval_s=0.05, max_interval_s=1.0, budget_per_job=100.0)
    finished = await _poll_until_final(client, policy, ["job_0", "job_1"], _SINCE)
    assert {f.job.status for f in finished} == {"success"}
    first_two = [t for t, _ in client.gets[:2]]
    assert {job_id for _, job_id in client.gets[:2]} == {"job_0", "job_1"}
    assert max(first_two) - min(first_two) < 0.02, client.gets
    assert not client.lists


async def test_two_jobs_left_and_tokens_for_one_question_read_the_list() -> None:
    """When tokens pay for one request only, a tick with two jobs left reads the list
    (which shows both) instead of asking about the oldest alone."""
    client = _Jobs()
    client.done.update({"job_0", "job_1"})
    # No tokens at all: the tick's first request is the liveness floor's.
    policy = PollPolicy(
        initial_interval_s=0.01,
        max_interval_s=0.3,  # the floor pays the URL lookup too
        budget_per_job=0.0,
        budget_per_wave=0.0,
        learning_requests=0,
    )
    finished = await _poll_until_final(client, policy, ["job_0", "job_1"], _SINCE)
    assert {f.job.status for f in finished} == {"success"}
    assert len(client.lists) == 1 and not client.gets, (client.lists, client.gets)


async def test_the_runs_last_lookup_never_waits_for_tokens() -> None:
    """Once nothing is left to send and the last job is seen, its outputs' URL lookup
    goes at once (the closing allowance), though the budget has no token left and the
    liveness floor is 10 s away: the run waits for that lookup alone."""
    client = _Jobs()
    policy = PollPolicy(
        initial_interval_s=0.01, budget_per_job=0.0, budget_per_wave=0.0, learning_requests=1
    )
    poller = Poller(client, policy)  # type: ignore[arg-type]
    poller.draining()
    client.done.add("job_0")
    async with asyncio.TaskGroup() as group:
        running = group.create_task(poller.run())
        async with asyncio.timeout(2):
            final = await poller.wait_for("job_0", _SINCE)
            assert await final.urls == {"asset_of_job_0": "https://cdn.example/asset_of_job_0"}
        poller.stop()
        await running
    assert poller.budget.learning == 1 and poller.budget.closing == 1, poller.budget


async def test_with_one_job_left_the_drain_looks_more_often() -> None:
    """Once nothing is left to send, the drain's pace (a tenth of a job here) quickens to a
    quarter of it with one job left: its sighting is the run's own wait."""
    client = _Jobs()
    policy = PollPolicy(initial_interval_s=0.01, min_interval_s=0.005, budget_per_job=100.0)
    poller = Poller(client, policy)  # type: ignore[arg-type]
    async with asyncio.TaskGroup() as group:
        running = group.create_task(poller.run())
        started = time.monotonic()
        jobs = [group.create_task(poller.wait_for(f"job_{n}", _SINCE)) for n in range(4)]
        await asyncio.sleep(0.8)
        poller.draining()
        client.done.update({"job_0", "job_1", "job_2"})  # a job takes ~0.8 s
        async with asyncio.timeout(2):
            for job in jobs[:3]:
                await (await job).urls
        typical = poller.typical_s
        assert typical is not None and typical >= 0.8
        asked = len(client.gets)
        await asyncio.sleep(1.0)
        later = client.gets[asked:]
        gaps = [b - a for (a, _), (b, _) in itertools.pairwise(later)]
        # A tenth of ~0.8 s is 0.08 s (and a hundredth of the run is less): with one left,
        # a quarter of that, ~0.02 s.
        assert gaps and statistics.median(gaps) < 0.04, (gaps, typical, time.monotonic() - started)
        client.done.add("job_3")
        async with asyncio.timeout(2):
            await (await jobs[3]).urls
        poller.stop()
        await running


class _VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock jumps to the next timer whenever nothing is ready: a
    run of many seconds takes milliseconds, the same way every time (no real I/O here)."""

    def __init__(self) -> None:
        super().__init__()
        self._virtual_now = 0.0
        selector = self._selector  # type: ignore[attr-defined]
        real_select = selector.select

        def select(timeout: float | None = None) -> Any:
            if timeout is None:
                raise RuntimeError("nothing scheduled: every task waits forever")
            self._virtual_now += max(0.0, timeout)
            return real_select(0)

        selector.select = select

    def time(self) -> float:
        return self._virtual_now


_EPOCH = dt.datetime(2026, 11, 25, tzinfo=dt.UTC)


def _iso(seconds: float) -> str:
    return format_time(_EPOCH + dt.timedelta(seconds=seconds))


@dataclass
class _FakeJob:
    created: float
    ends: float
    status: str  # its final status
    listed: bool  # False: the list never shows it (a lost update); a GET does


class _AdversarialApi:
    """An in-memory job list that cuts pages short or empty (a next token still given),
    hides some jobs, and counts every request; times from the (virtual) loop clock."""

    def __init__(self, seed: int, short_rate: float) -> None:
        self._random = random.Random(seed)
        self._short_rate = short_rate
        self.jobs: dict[str, _FakeJob] = {}
        self.requests = 0

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _raw(self, job_id: str) -> dict[str, Any]:
        job = self.jobs[job_id]
        final = self._now() >= job.ends
        return {
            "jobId": job_id,
            "status": job.status if final else "in-progress",
            "createdAt": _iso(job.created),
            "updatedAt": _iso(job.ends if final else job.created),
            "metadata": {"assetIds": [f"asset_{job_id}"] if job.status == "success" else []},
        }

    async def list_job_page(
        self,
        *,
        updated_after: str | None = None,
        status: str | None = None,
        page_size: int = 100,
        token: str | None = None,
        **_: Any,
    ) -> tuple[list[dict[str, Any]], str | None]:
        self.requests += 1
        rows = [self._raw(job_id) for job_id, job in self.jobs.items() if job.listed]
        rows = [
            raw
            for raw in rows
            if (updated_after is None or raw["updatedAt"] > updated_after)
            and (status is None or raw["status"] == status)
        ]
        rows.sort(key=lambda raw: (raw["updatedAt"], raw["jobId"]), reverse=True)
        start = int(token or 0)
        size = page_size
        if self._random.random() < self._short_rate:
            size = self._random.randrange(page_size)  # short, or empty
        following = str(start + size) if start + size < len(rows) else None
        return rows[start : start + size], following

    async def get_job(self, job_id: str) -> JobView:
        self.requests += 1
        return JobView.parse(self._raw(job_id))

    async def asset_urls(self, asset_ids: Sequence[str]) -> dict[str, str]:
        self.requests += 1
        return {a: f"https://cdn.example/{a}" for a in asset_ids}


_BUDGET_POLICY = PollPolicy(
    budget_per_job=0.2,
    budget_per_wave=2.0,
    budget_per_wave_draining=4.0,
    budget_min_duration_s=1.0,
    learning_requests=5,
    max_interval_s=5.0,
    stale_after_min_s=5.0,
)


async def _run_slots(
    api: _AdversarialApi,
    plan: list[tuple[float, str, bool]],
    slots: int,
    policy: PollPolicy = _BUDGET_POLICY,
    urls_at: dict[str, float] | None = None,
) -> tuple[Poller, list[Finished], float, float]:
    """Jobs of `plan` (duration, final status, listed) through `slots` at a time, each sent
    as a slot frees, as the pipeline does; the poller, what it reported, the wall time and
    the time from the last job sent (the drain) to the end. `urls_at`: when each job's
    output URLs came."""
    loop = asyncio.get_running_loop()
    poller = Poller(api, policy, clock=loop.time)  # type: ignore[arg-type]
    queue = deque(enumerate(plan))
    finished: list[Finished] = []
    drain_started: list[float] = []
    started = loop.time()

    async def slot() -> None:
        while queue:
            n, (duration, status, listed) = queue.popleft()
            if not queue:
                poller.draining()  # nothing is left to send, as the pipeline says
                drain_started.append(loop.time())
            job_id = f"job_{n:03d}"
            now = loop.time()
            api.jobs[job_id] = _FakeJob(now, now + duration, status, listed)
            final = await poller.wait_for(job_id, _iso(now))
            finished.append(final)
            if urls_at is not None:
                final.urls.add_done_callback(lambda _, j=job_id: urls_at.update({j: loop.time()}))

    async with asyncio.TaskGroup() as group:
        running = group.create_task(poller.run())
        async with asyncio.timeout(3600):
            async with asyncio.TaskGroup() as senders:
                for _ in range(slots):
                    senders.create_task(slot())
            for final in finished:
                await final.urls
        ended = loop.time()
        poller.stop()
        await running
    return poller, finished, ended - started, ended - drain_started[0]


_durations = st.one_of(
    st.floats(0.5, 3.0),  # uniform, wide
    st.floats(-1.0, 1.0).map(lambda z: 2.0 * math.exp(0.6 * z)),  # lognormal-like
    st.sampled_from([1.0, 1.0, 1.0, 30.0]),  # bursts of equal jobs, and stalls
)


@settings(max_examples=60, deadline=None)
@given(
    plan=st.lists(
        st.tuples(
            _durations,
            st.sampled_from(["success", "success", "success", "failure"]),
            st.sampled_from([True, True, True, True, False]),
        ),
        min_size=1,
        max_size=80,
    ),
    slots=st.integers(1, 24),
    short_rate=st.sampled_from([0.0, 0.2, 0.6, 1.0]),
    seed=st.integers(0, 1000),
)
def test_the_poll_budget_holds_whatever_the_api_answers(
    plan: list[tuple[float, str, bool]], slots: int, short_rate: float, seed: int
) -> None:
    """Against lists with short and empty pages that carry next tokens, jobs it never
    shows, bursts, stalls and wide spreads: every job is reported with its final status,
    and polling's requests stay within the stated budget: per_job x jobs + per_wave per
    min_duration_s of wall time (per_wave_draining from the last job sent) + the learning
    and closing requests + one per max_interval_s."""
    api = _AdversarialApi(seed, short_rate)
    loop = _VirtualTimeLoop()
    try:
        poller, finished, wall, drain = loop.run_until_complete(_run_slots(api, plan, slots))
    finally:
        loop.close()
    assert sorted(f.job.job_id for f in finished) == sorted(api.jobs)
    assert all(f.job.status == api.jobs[f.job.job_id].status for f in finished)
    spent = poller.budget
    policy = _BUDGET_POLICY
    # Every request was paid for, and never with more tokens than were granted.
    assert api.requests == spent.paid + spent.learning + spent.closing + spent.floor
    assert spent.paid <= spent.granted + 1e-9
    stated = (
        policy.budget_per_job * len(plan)
        + policy.budget_per_wave * wall / policy.budget_min_duration_s
        + (policy.budget_per_wave_draining - policy.budget_per_wave)
        * drain
        / policy.budget_min_duration_s
        + policy.learning_requests
        + policy.closing_requests
        + 1
        + wall / policy.max_interval_s
    )
    assert api.requests <= stated, (api.requests, stated, spent)


def _run_virtually(plan: list[tuple[float, str, bool]], slots: int) -> tuple[Poller, list[float]]:
    """`plan` through `slots` in virtual time, with the default policy and a list that
    shows every job: the poller, and how long after its end each job's output URLs came."""
    api = _AdversarialApi(seed=1, short_rate=0.0)
    urls_at: dict[str, float] = {}
    loop = _VirtualTimeLoop()
    try:
        poller, finished, _, _ = loop.run_until_complete(
            _run_slots(api, plan, slots, PollPolicy(), urls_at)
        )
    finally:
        loop.close()
    assert len(finished) == len(plan) == len(urls_at)
    return poller, [urls_at[j] - job.ends for j, job in api.jobs.items()]


@pytest.mark.parametrize("slots", [16, 64])
def test_jobs_that_end_together_get_their_urls_soon(slots: int) -> None:
    """Jobs of steady durations end in groups, quiet spells between (issue 8's workload):
    a group's outputs are looked up once it is seen (nothing would join them for a while),
    or at once while the budget is rich, not two jobs later (that was +43 % to +128 % of
    a job on issue 8's benchmark, against its < 10 % target)."""
    plan = [(2.0 * (1 + 0.05 * math.sin(n)), "success", True) for n in range(10 * slots)]
    _, waits = _run_virtually(plan, slots)
    assert statistics.fmean(waits) < 0.2, statistics.fmean(waits)  # a tenth of a job


@pytest.mark.parametrize("slots", [8, 16, 64])
def test_jobs_of_steady_durations_sent_apart_come_together_again(slots: int) -> None:
    """Slots whose first jobs end one by one across a whole job's time (their successors
    then go out apart), then jobs of steady durations (+-5 %): the ticks the budget pays
    for are aimed at when groups are due, not spent as tokens come in (which sees a job or
    two each time, keeps the groups apart, and leaves no token to look up their URLs: on
    issue 8's benchmark at C=16 the outputs then waited 1.4 s of a 2 s job for their URLs)."""
    rng = random.Random(8)
    apart = [(2.0 * (n + 1) / slots, "success", True) for n in range(slots)]
    steady = [(2.0 * rng.uniform(0.95, 1.05), "success", True) for _ in range(40 * slots)]
    poller, waits = _run_virtually(apart + steady, slots)
    later = waits[len(waits) // 2 :]
    # An eighth of a job (seeds 1 to 8 at C=16: 0.10 to 0.19 s; before, 0.6 to 2.4 s at
    # C = 8, 16, 32 and 64: the groups never met again).
    assert statistics.fmean(later) < 0.25, (statistics.fmean(later), poller.stats)


def test_jobs_that_end_apart_share_their_url_lookups() -> None:
    """Durations spread widely (1 to 3 s): jobs end one by one, and outputs wait for
    company, so a lookup serves several ticks' jobs (the budget goes to the ticks)."""
    rng = random.Random(4)
    plan = [(rng.uniform(1.0, 3.0), "success", True) for _ in range(320)]
    poller, _ = _run_virtually(plan, 16)
    assert poller.stats.url_requests < 0.25 * poller.stats.ticks, poller.stats


@pytest.mark.parametrize(
    "times",
    [
        {"job_latency_jitter": 0.5},
        {"job_latency_distribution": "lognormal", "job_latency_sigma": 0.6, "api_rtt_s": 0.02},
    ],
    ids=["uniform50", "lognormal0.6-rtt"],
)
async def test_the_poll_budget_holds_against_the_simulator(
    simulator_factory: SimulatorFactory, png_bytes: Callable[..., bytes], times: dict[str, Any]
) -> None:
    """The simulator with job times +-50% (or lognormal, with a round trip), half its list
    pages cut short (next token still given) and a fifth of jobs failing: 8 slots run 48
    jobs, each reported with its real status and its outputs' URLs, and the simulator's own
    log of polling requests (list pages, job GETs, get-bulk) stays within the budget the
    poller states."""
    sim = await simulator_factory(
        seed=3, job_latency_s=0.4, list_short_page_rate=0.5, job_failure_rate=0.2, **times
    )
    policy = PollPolicy(
        budget_per_job=0.5,
        budget_per_wave=2.0,
        budget_per_wave_draining=4.0,
        budget_min_duration_s=0.5,
        sweep_every_s=0.5,
    )
    jobs, slots = 48, 8
    async with aiohttp.ClientSession() as session:
        client = ScenarioClient(session, settings_for(sim))
        asset = await client.upload_image(png_bytes(16, 16), "ref.png", "image/png")
        poller = Poller(client, policy)
        queue = deque(range(jobs))
        finished: list[Finished] = []

        async def slot() -> None:
            while queue:
                n = queue.popleft()
                if not queue:
                    poller.draining()
                body = {"prompt": f"p{n}", "referenceImages": [asset]}
                job = (await client.generate(MODEL_ID, body)).job
                finished.append(await poller.wait_for(job.job_id, job.created_at))

        loop = asyncio.get_running_loop()
        started = loop.time()
        async with asyncio.TaskGroup() as group:
            running = group.create_task(poller.run())
            async with asyncio.timeout(30), asyncio.TaskGroup() as senders:
                for _ in range(slots):
                    senders.create_task(slot())
            urls = [await f.urls for f in finished]
            wall = loop.time() - started
            poller.stop()
            await running

    assert len(finished) == jobs
    for final, found in zip(finished, urls, strict=True):
        assert final.job.status == sim.job_state(final.job.job_id).status
        assert set(found) == set(final.job.asset_ids)
    polling = [
        r
        for r in sim.records("api")
        if r.path.startswith("/v1/jobs") or r.path == "/v1/assets/get-bulk"
    ]
    spent = poller.budget
    assert len(polling) == spent.paid + spent.learning + spent.closing + spent.floor
    stated = (
        policy.budget_per_job * jobs
        + policy.budget_per_wave_draining * wall / policy.budget_min_duration_s
        + policy.learning_requests
        + policy.closing_requests
        + 1
        + wall / policy.max_interval_s
    )
    assert len(polling) <= stated, (len(polling), stated, spent)
