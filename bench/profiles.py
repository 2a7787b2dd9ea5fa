"""Where the API really lives (issue 17): the benchmark's profiles and its matrix.

- `loopback`: plain http on this machine, no round trip.
- `internet`: https with a private CA (the clients trust it as SSL_CERT_FILE would make
  them), the API 120 ms away, the CDN 80 ms.

Both: 20 % of job-list pages cut short (even empty, still carrying a next token), and each
runs with job times uniform +-50 % and lognormal sigma 0.6, at C = 16, 64 and 256. A
configuration is `rounds` rounds of C jobs of mean L (N = rounds x C; a low C runs more
rounds), so the whole matrix fits a known time (`design_minutes`).

The yardstick is the **lossless floor** (`bench.measure.lossless_floor_s`): the run's own
job durations, in the order sent, list-scheduled on C slots, each job paying one API
round trip.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.measure import Config, Outcome, fmt, pause, run_config


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    tls: bool
    api_rtt_s: float
    cdn_rtt_s: float
    short_page_rate: float = 0.2

    def knobs(self) -> dict[str, Any]:
        return {
            "api_rtt_s": self.api_rtt_s,
            "cdn_rtt_s": self.cdn_rtt_s,
            "list_short_page_rate": self.short_page_rate,
        }


PROFILES = (
    Profile("loopback", tls=False, api_rtt_s=0.0, cdn_rtt_s=0.0),
    Profile("internet", tls=True, api_rtt_s=0.12, cdn_rtt_s=0.08),
)
SPREADS: dict[str, dict[str, Any]] = {
    "uniform50": {"job_latency_distribution": "uniform", "job_latency_jitter": 0.5},
    "lognormal0.6": {"job_latency_distribution": "lognormal", "job_latency_sigma": 0.6},
}


@dataclass(frozen=True, slots=True)
class MatrixPlan:
    rounds: int  # N = rounds x C, unless `rounds_at` gives C its own
    latency_s: float  # L, the mean job time
    concurrencies: tuple[int, ...]
    # (C, rounds): a run's fixed costs (its first wave's uploads and handshakes, its last
    # job's sighting, the poller's learning and draining requests) are the same whatever
    # N, so a low C runs more rounds for them to weigh about alike.
    rounds_at: tuple[tuple[int, int], ...] = ()

    def rounds_for(self, concurrency: int) -> int:
        return dict(self.rounds_at).get(concurrency, self.rounds)

    def describe(self) -> str:
        jobs = ", ".join(f"{self.rounds_for(c) * c:,} at C={c}" for c in self.concurrencies)
        return f"N = {jobs}; L = {self.latency_s} s mean"


# 2 profiles x 2 spreads x 3 C x (pipeline, SDK) + the floor client at C=256: 28 runs of
# 16-32 s (more with the lognormal tail) plus set-up: about 14 minutes (design_minutes),
# so `make bench` with the simulator alone, the steady runs (80 s) and the scale and
# report checks stays under 20 (17.5 min at a7e6fa0, before the steady runs). N is
# 256, 640 and 2,048 jobs: a bulk run's steady state, not mostly its first and last wave
# (at N = 5 x C, the first version, fixed costs took up to 0.3 requests per job at C=16).
FULL_MATRIX = MatrixPlan(
    rounds=8, latency_s=2.0, concurrencies=(16, 64, 256), rounds_at=((16, 16), (64, 10))
)
QUICK_MATRIX = MatrixPlan(rounds=3, latency_s=1.0, concurrencies=(64,))  # a check: 8 runs
# Per run, beyond its jobs: processes, the workload's images and the simulator's start.
SETUP_S = 2.0
# A run's wall beyond rounds x L, in L (measured): the spread's last jobs set it.
TAIL_L = {"uniform50": 0.5, "lognormal0.6": 3.5}


def configs(plan: MatrixPlan, profiles: tuple[Profile, ...] = PROFILES) -> list[Config]:
    """Every configuration of the matrix, named `profile-spread-cC`."""
    found = []
    for profile in profiles:
        for spread, knobs in SPREADS.items():
            for concurrency in plan.concurrencies:
                found.append(
                    Config(
                        f"{profile.name}-{spread}-c{concurrency}",
                        plan.rounds_for(concurrency) * concurrency,
                        plan.latency_s,
                        concurrency,
                        knobs=tuple({**profile.knobs(), **knobs}.items()),
                        tls=profile.tls,
                    )
                )
    return found


def design_minutes(plan: MatrixPlan, clients: list[str]) -> float:
    """What the matrix should take: each run about (rounds + its spread's tail) x L, plus
    its set-up; the floor client runs at C=256 only."""
    seconds = sum(
        (plan.rounds_for(config.concurrency) + TAIL_L[config.name.split("-")[1]]) * plan.latency_s
        + SETUP_S
        for config in configs(plan)
        for kind in clients
        if kind != "floor" or config.concurrency == 256
    )
    return seconds / 60


def run_matrix(
    plan: MatrixPlan, clients: list[str], workdir: Path, only: set[str] | None = None
) -> dict[tuple[str, str], Outcome]:
    """Run every configuration (whose name contains one of `only`, if given) with each
    client (the floor client at C=256 only, where it is the CPU yardstick)."""
    outcomes: dict[tuple[str, str], Outcome] = {}
    for config in configs(plan):
        if only and not any(part in config.name for part in only):
            continue
        for kind in clients:
            if kind == "floor" and config.concurrency != 256:
                continue
            outcome = run_config(config, kind, workdir)
            outcomes[(config.name, kind)] = outcome
            print(
                f"<!-- {config.name} {kind}: {outcome.client.wall_s:.1f} s, "
                f"floor {outcome.lossless_floor_s:.1f} s -->",
                flush=True,
            )
            pause()
    return outcomes


HEADER = (
    "| config | client | N | wall s | lossless floor s | wall/floor | API req/job "
    "| uploads | submits | polls | URL lookups | added latency ms (% of job) "
    "| client CPU ms/job (event loop's thread) | peak RSS MB | sim CPU busy | status |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def row(o: Outcome) -> str:
    added_s, added_frac = o.added_latency()
    c = o.client
    return (
        f"| {o.config.name} | {c.kind} | {o.config.jobs} | {fmt(c.wall_s, 1)} "
        f"| {fmt(o.lossless_floor_s, 1)} | {fmt(o.wall_lossless_ratio, 3)} "
        f"| {fmt(o.requests_per_job)} | {fmt(o.per_job('upload'))} "
        f"| {fmt(o.per_job('submit'))} | {fmt(o.per_job('poll'))} "
        f"| {fmt(o.per_job('urls'))} | {fmt(1000 * added_s, 0)} ({fmt(100 * added_frac, 1)}%) "
        f"| {fmt(o.cpu_ms_per_job)} ({fmt(o.loop_cpu_ms_per_job)}) | {fmt(c.peak_rss_mb, 0)} "
        f"| {fmt(o.sim_busy)} | {o.status} |"
    )


def table(outcomes: dict[tuple[str, str], Outcome]) -> str:
    """The matrix as Markdown: one row per run, then the SDK pattern against ours."""
    lines = [HEADER, *(row(o) for o in outcomes.values())]
    pairs = [
        (o, outcomes[(name, "sdk")])
        for (name, kind), o in outcomes.items()
        if kind == "pipeline" and (name, "sdk") in outcomes
    ]
    if pairs:
        lines += [
            "",
            "| config | wall/floor ours | wall/floor SDK | req/job ours | req/job SDK "
            "| CPU ms/job ours | CPU ms/job SDK |",
            "|---|---|---|---|---|---|---|",
        ]
        for ours, sdk in pairs:
            lines.append(
                f"| {ours.config.name} | {fmt(ours.wall_lossless_ratio, 3)} "
                f"| {fmt(sdk.wall_lossless_ratio, 3)} | {fmt(ours.requests_per_job)} "
                f"| {fmt(sdk.requests_per_job)} | {fmt(ours.cpu_ms_per_job)} "
                f"| {fmt(sdk.cpu_ms_per_job)} |"
            )
    return "\n".join(lines)


def limits(concurrency: int) -> tuple[float, float]:
    """Issue 17's default-settings targets: (wall / lossless floor, API requests per job)."""
    return (1.10, 2.6) if concurrency <= 16 else (1.06, 2.3)


# Issue 17: the pipeline's client CPU per job against the floor client's, same configuration.
CPU_RATIO_LIMIT = 1.5


def targets(outcomes: dict[tuple[str, str], Outcome]) -> list[tuple[str, bool, str]]:
    """(target, passed, figure) for every pipeline run of the matrix."""
    found = []
    for (name, kind), o in outcomes.items():
        if kind != "pipeline":
            continue
        wall_limit, requests_limit = limits(o.config.concurrency)
        found.append(
            (
                f"{name}: wall <= {wall_limit}x the lossless floor, "
                f"<= {requests_limit} API requests/job",
                o.ok
                and o.wall_lossless_ratio <= wall_limit
                and o.requests_per_job <= requests_limit,
                f"{o.wall_lossless_ratio:.3f}x, {o.requests_per_job:.2f} req/job",
            )
        )
        sdk = outcomes.get((name, "sdk"))
        if sdk is not None:
            found.append(
                (
                    f"{name}: ahead of the SDK pattern (wall and requests)",
                    o.ok
                    and o.wall_lossless_ratio < sdk.wall_lossless_ratio
                    and o.requests_per_job < sdk.requests_per_job,
                    f"wall/floor {o.wall_lossless_ratio:.3f} vs {sdk.wall_lossless_ratio:.3f}, "
                    f"req/job {o.requests_per_job:.2f} vs {sdk.requests_per_job:.2f}",
                )
            )
        floor = outcomes.get((name, "floor"))
        if floor is not None and floor.ok:
            ratio = o.cpu_ms_per_job / max(floor.cpu_ms_per_job, 1e-9)
            found.append(
                (
                    f"{name}: client CPU per job <= {CPU_RATIO_LIMIT}x the floor client's",
                    o.ok and ratio <= CPU_RATIO_LIMIT,
                    f"{o.cpu_ms_per_job:.2f} vs {floor.cpu_ms_per_job:.2f} ms ({ratio:.2f}x); "
                    f"event loop's thread {o.loop_cpu_ms_per_job:.2f} vs "
                    f"{floor.loop_cpu_ms_per_job:.2f}, other threads "
                    f"{max(0.0, o.cpu_ms_per_job - o.loop_cpu_ms_per_job):.2f} vs "
                    f"{max(0.0, floor.cpu_ms_per_job - floor.loop_cpu_ms_per_job):.2f}",
                )
            )
    return found
