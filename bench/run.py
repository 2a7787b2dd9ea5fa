"""`python -m bench.run [--quick] [--only sim,profiles,scale,...] [--json PATH]`

Runs the configurations against the simulator in its own process, prints the tables and
the targets as markdown (paste into bench/RESULTS.md), and optionally writes raw figures.
By default: the simulator alone in each profile, the profiles' matrix (bench/profiles.py),
`steady` (issue 8's workload at C = 16, 64 and 256, pipeline only, for its target of
< 10 % added latency at <= 2.5 requests per job: nothing else ran jobs that end together)
and the scale checks. `c16,c64,c256,inflight` are issue 8's full loopback runs (jobs
within +-5 % of their mean, N = 2,000, with the SDK pattern), kept to check that nothing
they reached gets worse.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import fsprobe, profiles, report_page, scale, simalone
from bench.measure import STEPS, Config, Outcome, fmt, pause, run_config, sim_knobs

SECTIONS = ("sim", "profiles", "steady", "c16", "c64", "c256", "scale", "inflight", "report")
DEFAULT_SECTIONS = ("sim", "profiles", "steady", "scale", "report")
STEADY = "steady-"  # the names of the `steady` section's configurations


@dataclass(frozen=True, slots=True)
class Plan:
    jobs: int
    latency_s: float
    concurrencies: tuple[int, ...]
    manifest: tuple[int, int]  # images x prompts
    ledger_items: int
    inflight: Config
    sim_jobs: int
    sdk_jobs_c16: int  # the SDK pattern at C=16 on fewer jobs: on 2,000 it alone takes 6 min
    matrix: profiles.MatrixPlan
    report_items: int  # report.html of a finished run this big, opened in Chromium
    # (C, N) of the `steady` section: issue 8's workload, fewer jobs (N = 2,000 at C=16
    # alone takes 4 min; at N = 320 the first wave and the poller's learning requests add
    # ~0.06 requests per job).
    steady: tuple[tuple[int, int], ...]


FULL = Plan(
    2000,
    2.0,
    (16, 64, 256),
    (1000, 100),
    100_000,
    Config("inflight", 3000, 5.0, 1000),
    2000,
    1000,
    profiles.FULL_MATRIX,
    100_000,
    ((16, 320), (64, 512), (256, 1536)),
)
QUICK = Plan(
    200,
    1.0,
    (16, 64, 256),
    (100, 100),
    10_000,
    Config("inflight", 600, 2.0, 200),
    500,
    200,
    profiles.QUICK_MATRIX,
    10_000,
    ((16, 96), (64, 192)),
)


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    passed: bool
    detail: str


def outcome_row(o: Outcome) -> str:
    added_s, added_frac = o.added_latency()
    c = o.client
    return (
        f"| {o.config.name} | {c.kind} | {fmt(c.wall_s, 1)} | {fmt(o.config.ideal_s, 1)} "
        f"| {fmt(o.wall_ratio, 3)} | {fmt(o.requests_per_job)} | {fmt(o.per_job('upload'))} "
        f"| {fmt(o.per_job('submit'))} | {fmt(o.per_job('poll'))} | {fmt(o.per_job('urls'))} "
        f"| {fmt(o.cpu_ms_per_job)} ({fmt(1000 * c.sys_s / o.config.jobs)}) "
        f"| {fmt(c.peak_rss_mb, 0)} | {fmt(1000 * added_s, 0)} "
        f"({fmt(100 * added_frac, 1)}%) | {fmt(o.sim_busy)} | {fmt(c.report_s, 1)} | {o.status} |"
    )


OUTCOME_HEADER = (
    "| config | client | wall s | ideal s | wall/ideal | API req/job | uploads/job "
    "| submits/job | polls/job | URL lookups/job | client CPU ms/job (of which system) "
    "| peak RSS MB | added latency ms (% of job) | sim CPU busy | report.html s | status |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def compare_row(ours: Outcome, sdk: Outcome) -> str:
    # wall/ideal and CPU per job, so that a run on fewer jobs compares fairly
    return (
        f"| {ours.config.name} | {fmt(sdk.wall_ratio / ours.wall_ratio)}x "
        f"| {fmt(sdk.requests_per_job / ours.requests_per_job)}x "
        f"| {fmt(sdk.cpu_ms_per_job / max(ours.cpu_ms_per_job, 1e-9))}x |"
    )


def _floor_client(outcomes: dict[tuple[str, str], Outcome]) -> Outcome | None:
    """The floor client's run at C=256 (no ledger, fsync, checks or retries), if it ran."""
    floor = outcomes.get(("c256", "floor"))
    return floor if floor is not None and floor.ok else None


def targets(
    outcomes: dict[tuple[str, str], Outcome],
    timed: dict[str, scale.Timed],
    page: report_page.PageTiming | None = None,
) -> list[Target]:
    found: list[Target] = []
    if page is not None and page.skipped is None:
        slowest = max(report_page.VIEWS, key=page.open_s)
        found.append(
            Target(
                f"report.html of {page.items:,} items opens in < 2 s in Chromium",
                page.open_s(slowest) < 2 and page.ready(slowest) < 2000,
                f"slowest view ({slowest}): {page.open_s(slowest):.2f} s of Chromium wall beyond "
                f"an empty page, ready in the page at {page.ready(slowest):.0f} ms",
            )
        )
    top = outcomes.get(("c256", "pipeline"))
    floor = _floor_client(outcomes)
    if top is not None:
        floors = [
            f"with no time lost at all: {top.wall_floor_ratio:.3f}",
            "also no faster than the simulator takes the first wave: "
            f"{top.wall_startup_floor_ratio:.3f}",
        ]
        if floor is not None:
            floors.append(f"the floor client: {floor.wall_ratio:.3f}")
        found.append(
            Target(
                "wall within 5% of N·L/C at C=256",
                top.ok and top.wall_ratio <= 1.05,
                f"ratio {top.wall_ratio:.3f} ({'; '.join(floors)})",
            )
        )
    for (name, kind), o in sorted(outcomes.items()):
        if kind != "pipeline" or name == "inflight":
            continue
        _, frac = o.added_latency()
        found.append(
            Target(
                f"{name}: <= 2.5 API requests/job with < 10% added latency",
                o.ok and o.requests_per_job <= 2.5 and frac < 0.10,
                f"{o.requests_per_job:.2f} req/job, +{100 * frac:.1f}%",
            )
        )
        if name.startswith(STEADY):
            continue  # on fewer jobs than issue 8's runs: its other targets read those
        cpu = f"{o.cpu_ms_per_job:.2f} ms"
        if floor is not None and name == "c256":
            cpu += f" (the floor client, with no safety at all: {floor.cpu_ms_per_job:.2f} ms)"
        found.append(Target(f"{name}: < 2 ms client CPU per job", o.cpu_ms_per_job < 2.0, cpu))
        sdk = outcomes.get((name, "sdk"))
        if sdk is not None:
            ahead = o.wall_ratio < sdk.wall_ratio and o.requests_per_job < sdk.requests_per_job
            found.append(
                Target(
                    f"{name}: ahead of the SDK pattern (wall and requests)",
                    o.ok and ahead,
                    f"wall/ideal {o.wall_ratio:.2f} vs {sdk.wall_ratio:.2f}, "
                    f"req/job {o.requests_per_job:.2f} vs {sdk.requests_per_job:.2f}",
                )
            )
    if "validate" in timed:
        t = timed["validate"]
        found.append(
            Target(f"validate {t.count:,} items in < 5 s", t.seconds < 5, f"{t.seconds:.2f} s")
        )
        found.append(
            Target(
                f"peak RSS < 300 MB for {t.count:,} items",
                t.peak_rss_mb < 300,
                f"{t.peak_rss_mb:.0f} MB (interpreter and imports: {t.base_rss_mb:.0f} MB)",
            )
        )
    if "table" in timed:
        t = timed["table"]
        found.append(
            Target(
                f"validate a {t.count:,}-row table in < 3 s",
                t.seconds < 3,
                f"{t.seconds:.2f} s ({t.cpu_s:.2f} s of CPU)",
            )
        )
    if "scripted" in timed:
        t = timed["scripted"]
        found.append(
            Target(
                f"validate {t.count:,} scripted jobs in < 3 s at < 200 MB (whole process)",
                t.seconds < 3 and t.peak_rss_mb < 200,
                f"{t.seconds:.2f} s ({t.cpu_s:.2f} s of CPU), {t.peak_rss_mb:.0f} MB",
            )
        )
    if "first_submit" in timed:
        t = timed["first_submit"]
        found.append(
            Target(
                f"run on {t.count:,} scripted jobs: first submit within 5 s of starting",
                t.seconds < 5,
                f"{t.seconds:.2f} s",
            )
        )
    for key, how in (
        ("ledger", "full replay, no snapshot"),
        ("ledger_snapshot", "as a finished run leaves it"),
        ("ledger_killed", "as a run killed mid-way leaves it"),
    ):
        if key in timed:
            t = timed[key]
            found.append(
                Target(
                    f"load a {t.count:,}-item ledger in < 2 s ({how})",
                    t.seconds < 2,
                    f"{t.seconds:.2f} s",
                )
            )
    return found


def _simulator_alone(plan: Plan) -> dict[str, Any]:
    """The simulator alone in each profile: what it serves, and the CPU share the busiest
    run of the matrix (C=256) would cost it, so that it is never the bottleneck."""
    raw: dict[str, Any] = {}
    need = max(plan.matrix.concurrencies) / plan.matrix.latency_s  # jobs per second
    for profile in profiles.PROFILES:
        knobs = {**profile.knobs(), **profiles.SPREADS["uniform50"]}
        capacity = simalone.measure(
            n=plan.sim_jobs, latency_s=plan.matrix.latency_s, knobs=knobs, tls=profile.tls
        )
        raw[profile.name] = asdict(capacity)
        print(f"## The simulator alone, {profile.name} (bare aiohttp client, 256 connections)\n")
        print(capacity.table())
        print(
            f"\nJobs per second it carries (upload + submit + download + share of list and "
            f"get-bulk): {capacity.jobs_per_s:,.0f}; its CPU per job {capacity.cpu_ms_per_job:.2f}"
            f" ms, so C={max(plan.matrix.concurrencies)} at L={plan.matrix.latency_s} s "
            f"({need:.0f} jobs/s) costs it {capacity.cpu_ms_per_job * need / 1000:.2f} of a "
            f"core.\n",
            flush=True,
        )
        pause()
    return raw


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small N: a check, not a measure")
    parser.add_argument(
        "--only",
        help=f"comma-separated subset of {','.join(SECTIONS)} "
        f"(default: {','.join(DEFAULT_SECTIONS)})",
    )
    parser.add_argument(
        "--configs",
        help="profiles: run only the configurations whose name holds one of these "
        "comma-separated parts (e.g. internet-lognormal0.6-c64)",
    )
    parser.add_argument(
        "--clients",
        default="pipeline,sdk,floor",
        help="pipeline,sdk,floor (default: all three; the floor client runs at C=256 only, "
        "where it is the yardstick of the wall and CPU targets)",
    )
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    parser.add_argument(
        "--workdir", type=Path, help="where runs write their files (default: the temp dir)"
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="leave the runs' files (deleting thousands of files can slow file creation for "
        "minutes after on some file systems: use it for runs back to back)",
    )
    args = parser.parse_args(argv)
    if args.workdir is not None:
        # Made at once: a missing one used to fail after the simulator-alone section's minutes.
        args.workdir.mkdir(parents=True, exist_ok=True)
    plan = QUICK if args.quick else FULL
    only = set(args.only.split(",")) if args.only else set(DEFAULT_SECTIONS)
    unknown = only - set(SECTIONS)
    if unknown:
        parser.error(f"--only: unknown {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    clients = args.clients.split(",")
    started = time.perf_counter()
    print(
        f"# scenario-batch benchmark ({'quick' if args.quick else 'full'}), "
        f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}\n",
        flush=True,
    )
    raw: dict[str, Any] = {}

    if "sim" in only:
        raw["sim"] = _simulator_alone(plan)

    outcomes: dict[tuple[str, str], Outcome] = {}
    configs = [Config(f"c{c}", plan.jobs, plan.latency_s, c) for c in plan.concurrencies]
    configs = [c for c in configs if c.name in only]
    if "steady" in only:
        configs += [Config(f"{STEADY}c{c}", n, plan.latency_s, c) for c, n in plan.steady]
    if "inflight" in only:
        configs.append(plan.inflight)
    with (
        contextlib.nullcontext(tempfile.mkdtemp(prefix="bench-", dir=args.workdir))
        if args.keep
        else tempfile.TemporaryDirectory(prefix="bench-", dir=args.workdir)
    ) as tmp:
        create_us = [fsprobe.file_create_cpu_us(Path(tmp))]
        print(
            f"Creating a small file in {tmp}: {create_us[0]:.0f} us of CPU (bench/fsprobe.py)\n",
            flush=True,
        )
        for config in configs:
            pipeline_only = config.name == "inflight" or config.name.startswith(STEADY)
            kinds = ["pipeline"] if pipeline_only else clients
            if config.name != "c256":
                kinds = [kind for kind in kinds if kind != "floor"]
            for kind in kinds:
                if kind == "sdk" and config.concurrency == 16:
                    config = Config(config.name, plan.sdk_jobs_c16, config.latency_s, 16)
                outcome = run_config(config, kind, Path(tmp))
                outcomes[(config.name, kind)] = outcome
                if (config.name, kind) == ("c256", "pipeline"):
                    pause()
                    outcome.first_wave = simalone.first_wave(config.concurrency, sim_knobs(config))
                print(f"<!-- {config.name} {kind}: {outcome.client.wall_s:.1f} s -->", flush=True)
                pause()
        if outcomes:
            create_us.append(fsprobe.file_create_cpu_us(Path(tmp)))
            print(
                f"\n## Runs (N = {plan.jobs} jobs, L = {plan.latency_s} s mean, jitter ±5%; "
                f"steady: N = {', '.join(f'{n} at C={c}' for c, n in plan.steady)}; "
                f"inflight: N={plan.inflight.jobs}, L={plan.inflight.latency_s} s, "
                f"C={plan.inflight.concurrency})\n"
            )
            print(OUTCOME_HEADER)
            for outcome in outcomes.values():
                print(outcome_row(outcome))
            staged = [(o, o.stage_means_ms()) for o in outcomes.values()]
            staged = [(o, means) for o, means in staged if means]
            if staged:
                print(
                    "\nAdded latency by stage (pipeline, mean ms after the job's end):\n"
                    "\n| config | -> seen final | -> URLs | -> a download slot "
                    "| -> file settled | -> `succeeded` recorded |\n|---|---|---|---|---|---|"
                )
                for o, means in staged:
                    cells = " | ".join(fmt(means.get(k, math.nan), 0) for k in STEPS)
                    print(f"| {o.config.name} | {cells} |")
            durable_us = fsprobe.durable_output_cpu_us(Path(tmp))
            raw["durable_output_cpu_us"] = durable_us
            print(
                "\nCreating a small file (each job creates one): "
                f"{create_us[0]:.0f} us of CPU before the runs, {create_us[1]:.0f} us after. "
                f"Making one output durable (temp file, fsync, rename, a directory fsync "
                f"per 32), in a plain loop: {durable_us:.0f} us."
            )
            for o in outcomes.values():
                if o.first_wave:
                    own = o.own_first_wave()
                    print(
                        f"\nThe first wave at C={o.config.concurrency} (ms from the start to "
                        "the creation of the first C jobs, mean / last): this run "
                        f"{1000 * statistics.fmean(own):.0f} / {1000 * own[-1]:.0f}; a bare "
                        "client sending only uploads and submits, at best "
                        f"{1000 * statistics.fmean(o.first_wave):.0f} / "
                        f"{1000 * o.first_wave[-1]:.0f}."
                    )
            pairs = [
                (o, outcomes[(n, "sdk")])
                for (n, k), o in outcomes.items()
                if k == "pipeline" and (n, "sdk") in outcomes
            ]
            if pairs:
                print("\n| config | SDK wall / ours | SDK requests / ours | SDK CPU / ours |")
                print("|---|---|---|---|")
                for ours, sdk in pairs:
                    print(compare_row(ours, sdk))
        matrix: dict[tuple[str, str], Outcome] = {}
        if "profiles" in only:
            minutes = profiles.design_minutes(plan.matrix, clients)
            print(
                f"## Profiles ({plan.matrix.describe()}; designed to take {minutes:.0f} min)\n",
                flush=True,
            )
            parts = set(args.configs.split(",")) if args.configs else None
            matrix = profiles.run_matrix(plan.matrix, clients, Path(tmp), parts)
            print("\n" + profiles.table(matrix) + "\n", flush=True)
        timed: dict[str, scale.Timed] = {}
        if "scale" in only:
            images, prompts = plan.manifest
            timed["validate"] = scale.manifest_validate(Path(tmp) / "m", images, prompts)
            timed["table"] = scale.table_validate(Path(tmp) / "t", images, plan.ledger_items)
            timed["scripted"] = scale.scripted_validate(Path(tmp) / "j", plan.ledger_items, 100)
            timed["first_submit"] = scale.first_submit(Path(tmp) / "f", plan.ledger_items, 100)
            timed["ledger"] = scale.ledger_load(Path(tmp) / "l", plan.ledger_items)
            timed["ledger_snapshot"] = scale.ledger_load(
                Path(tmp) / "s", plan.ledger_items, snapshot=True
            )
            timed["ledger_killed"] = scale.ledger_load(
                Path(tmp) / "k", plan.ledger_items, killed=True
            )
            print("\n## Scale\n\n| what | count | seconds | peak RSS MB | RSS before MB |")
            print("|---|---|---|---|---|")
            labels = {
                "ledger": "ledger load (full replay)",
                "ledger_snapshot": "ledger load (snapshot)",
            }
            for key, t in timed.items():
                cpu = f" ({t.cpu_s:.2f} CPU)" if t.cpu_s else ""
                print(
                    f"| {labels.get(key, t.what)} | {t.count:,} | {t.seconds:.2f}{cpu} "
                    f"| {t.peak_rss_mb:.0f} | {t.base_rss_mb:.0f} |"
                )
        page: report_page.PageTiming | None = None
        if "report" in only:
            page = report_page.measure(Path(tmp) / "report", plan.report_items)
            raw["report"] = asdict(page)
            print(f"\n## report.html\n\n{report_page.table(page)}", flush=True)
    found = targets(outcomes, timed, page)
    found += [Target(*t) for t in profiles.targets(matrix)]
    if found:
        print("\n## Targets\n\n| target | result | figure |\n|---|---|---|")
        for target in found:
            verdict = "pass" if target.passed else "MISS"
            print(f"| {target.name} | {verdict} | {target.detail} |")
    if ("c16", "sdk") in outcomes:
        print(f"\nSDK at C=16 ran {plan.sdk_jobs_c16} jobs (wall compared as wall/ideal).")
    print(f"\nBenchmark time: {time.perf_counter() - started:.0f} s")
    if args.json:
        raw["outcomes"] = {
            f"{n}/{k}": {
                **asdict(o.client),
                "done": len(o.client.done),
                "sim_requests": o.sim.requests,
                "sim_cpu_s": o.sim_cpu_s,
            }
            for (n, k), o in {**outcomes, **matrix}.items()
        }
        raw["scale"] = {k: asdict(v) for k, v in timed.items()}
        raw["file_create_cpu_us"] = create_us
        args.json.write_text(json.dumps(raw, indent=2))
    failed_runs = [o for o in [*outcomes.values(), *matrix.values()] if not o.ok]
    return 1 if failed_runs else 0


if __name__ == "__main__":
    sys.exit(main())
