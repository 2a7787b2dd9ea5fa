"""One configuration: N jobs of latency L at concurrency C, through both clients."""

from __future__ import annotations

import heapq
import math
import statistics
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.clients import ClientResult, run_client
from bench.simproc import SimProcess, SimStats
from bench.stages import STAGES
from bench.workload import write_bulk_manifest

# The steps of a pipeline job's added latency: the hooked stages, then its `succeeded` record.
STEPS = (*STAGES, "recorded")
JITTER = 0.05  # low jitter: wall time close to N x L / C is then reachable


@dataclass(frozen=True, slots=True)
class Config:
    name: str
    jobs: int
    latency_s: float
    concurrency: int
    # Simulator knobs over the defaults of `sim_knobs` (a profile's network and job times).
    knobs: tuple[tuple[str, Any], ...] = ()
    tls: bool = False  # the simulator serves https with a throwaway CA the clients trust

    @property
    def api_rtt_s(self) -> float:
        return float(dict(self.knobs).get("api_rtt_s", 0.0))

    @property
    def ideal_s(self) -> float:
        """Little's law: N jobs of mean latency L, C at a time."""
        return self.jobs * self.latency_s / self.concurrency


def list_schedule_s(durations: Iterable[float], slot_starts: Sequence[float]) -> float:
    """When the last of `durations` ends if each starts, in the order given, the instant
    one of the slots frees; slot k is first free at `slot_starts[k]`."""
    slots = list(slot_starts)
    heapq.heapify(slots)
    for duration in durations:
        heapq.heappush(slots, heapq.heappop(slots) + duration)
    return max(slots, default=0.0)


def fmt(value: float, digits: int = 2) -> str:
    """A figure for a Markdown table ("n/a" when it could not be measured)."""
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}"


def lossless_floor_s(durations: Iterable[float], concurrency: int, rtt_s: float = 0.0) -> float:
    """The wall of a client that loses nothing but the network: the jobs, in the order
    sent, on `concurrency` slots, each job holding its slot for its duration plus one API
    round trip (its submit reaches the API half a trip after the slot frees; the answer
    showing it done arrives half a trip after it ends)."""
    return list_schedule_s((d + rtt_s for d in durations), [0.0] * concurrency)


def sim_knobs(config: Config) -> dict[str, Any]:
    base = {"job_latency_s": config.latency_s, "job_latency_jitter": JITTER, "seed": 1}
    return {**base, **dict(config.knobs)}


@dataclass(slots=True)
class Outcome:
    """One client's figures on one configuration."""

    config: Config
    client: ClientResult
    sim: SimStats
    sim_cpu_s: float
    # Seconds from a bare client's start to each of its first C jobs' creation, when it
    # sends their uploads and submits as fast as the simulator takes them (measured apart,
    # see `bench.simalone.first_wave`); empty when not measured.
    first_wave: list[float] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.client.error is None and self.client.succeeded == self.config.jobs

    @property
    def status(self) -> str:
        """ "ok", or how many jobs succeeded and why the client stopped."""
        c = self.client
        return "ok" if self.ok else f"FAILED {c.succeeded}/{self.config.jobs} {c.error or ''}"

    @property
    def wall_ratio(self) -> float:
        return self.client.wall_s / self.config.ideal_s

    @property
    def wall_floor_ratio(self) -> float:
        """The wall/ideal of a client that loses no time at all: the jobs' own durations (in
        the order they were sent), each started the instant a slot frees. With durations
        that vary, the last slots to finish set the wall, so this is above 1.0."""
        return self._list_scheduled_ratio([0.0] * self._slots)

    @property
    def wall_startup_floor_ratio(self) -> float:
        """As `wall_floor_ratio`, but each slot is first free when the simulator could have
        created its first job (`first_wave`): no client is faster than the simulator takes
        the first wave's uploads and submits. NaN when that was not measured."""
        if len(self.first_wave) < self._slots:
            return float("nan")
        return self._list_scheduled_ratio(sorted(self.first_wave)[: self._slots])

    @property
    def _slots(self) -> int:
        return min(self.config.concurrency, len(self.sim.jobs))

    def _list_scheduled_ratio(self, slot_starts: list[float]) -> float:
        durations = (duration for _, duration in sorted(self.sim.jobs.values()))
        return list_schedule_s(durations, slot_starts) / self.config.ideal_s

    @property
    def lossless_floor_s(self) -> float:
        """`lossless_floor_s` of this run's own jobs (in creation order) and round trip."""
        durations = [duration for _, duration in sorted(self.sim.jobs.values())]
        return lossless_floor_s(durations, self._slots, self.config.api_rtt_s)

    @property
    def wall_lossless_ratio(self) -> float:
        """Wall over the lossless floor (1.0: nothing lost but the network)."""
        floor = self.lossless_floor_s
        return self.client.wall_s / floor if floor > 0 else float("nan")

    def own_first_wave(self) -> list[float]:
        """Seconds from this client's start to each of its first C jobs' creation."""
        created = sorted(c for c, _ in self.sim.jobs.values())[: self.config.concurrency]
        return [c - self.client.started_at for c in created]

    def per_job(self, *kinds: str) -> float:
        return self.sim.count(*kinds) / self.config.jobs

    @property
    def requests_per_job(self) -> float:
        return self.sim.api_requests / self.config.jobs

    @property
    def cpu_ms_per_job(self) -> float:
        return 1000 * self.client.cpu_s / self.config.jobs

    @property
    def loop_cpu_ms_per_job(self) -> float:
        """Of cpu_ms_per_job, the event loop's thread (the rest: the client's other threads)."""
        return 1000 * self.client.loop_cpu_s / self.config.jobs

    @property
    def sim_busy(self) -> float:
        """The simulator's CPU seconds per wall second (1.0: one core saturated)."""
        return self.sim_cpu_s / self.client.wall_s

    def added_latency(self) -> tuple[float, float]:
        """Mean (seconds, fraction of the job's own duration) from the job's end in the
        simulator to its file on disk."""
        added, fractions = [], []
        for job_id, done in self.client.done.items():
            created, duration = self.sim.jobs[job_id]
            extra = done - (created + duration)
            added.append(extra)
            fractions.append(extra / duration)
        if not added:
            return float("nan"), float("nan")
        return statistics.fmean(added), statistics.fmean(fractions)

    def stage_means_ms(self) -> dict[str, float]:
        """Mean ms spent in each stage after a job's end (the pipeline only): to its
        sighting, to its URLs, to a download slot, to its file settled, to `succeeded`."""
        steps: dict[str, list[float]] = {name: [] for name in STEPS}
        for job_id, times in self.client.stages.items():
            done = self.client.done.get(job_id)
            if done is None or job_id not in self.sim.jobs:
                continue
            created, duration = self.sim.jobs[job_id]
            previous = created + duration
            for name, at in zip(STEPS, (*times, done), strict=True):
                steps[name].append(at - previous)
                previous = at
        return {k: 1000 * statistics.fmean(v) for k, v in steps.items() if v}


def run_config(config: Config, kind: str, workdir: Path) -> Outcome:
    """Run one client against a fresh simulator process on a fresh workload, in a new
    directory under `workdir`. Its files stay until the caller removes `workdir`: removing
    them here would make the next run's file creation dearer (bench/fsprobe.py)."""
    root = Path(tempfile.mkdtemp(prefix=f"bench-{config.name}-{kind}-", dir=workdir))
    manifest = write_bulk_manifest(root, config.jobs)
    with SimProcess(tls=config.tls, **sim_knobs(config)) as sim:
        cpu0 = sim.stats().cpu_s
        result = run_client(
            kind, sim.base_url, manifest, root / "out", config.concurrency, sim.ca_pem
        )
        stats = sim.stats()
    return Outcome(config, result, stats, stats.cpu_s - cpu0)


def pause() -> None:
    """Let the previous processes' sockets and pages settle between runs."""
    time.sleep(0.5)
