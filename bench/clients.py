"""The two clients under test, each run in its own process for clean CPU and RSS figures.

- `pipeline`: scenario-batch's own `run_manifest` with default settings.
- `sdk`: what a user would otherwise write with the official scenario-sdk: an
  asyncio.Semaphore(C) and, per job, upload, run_model, retrieve the job every second
  until it is final, retrieve each output asset, download the file.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import multiprocessing
import os
import resource
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

API_KEY = "bench-key"
API_SECRET = "bench-secret"


@dataclass(slots=True)
class ClientResult:
    kind: str
    jobs: int = 0
    succeeded: int = 0
    wall_s: float = 0.0
    cpu_s: float = 0.0  # user + system of the client process during the run
    load_s: float = 0.0  # manifest load (not in wall_s or cpu_s)
    report_s: float = 0.0  # report.html written at the end of a run (not in wall_s or cpu_s)
    report_cpu_s: float = 0.0
    peak_rss_mb: float = 0.0
    requests: int = 0  # API requests as the client counted them
    done: dict[str, float] = field(default_factory=dict)  # job id -> epoch the file was on disk
    error: str | None = None


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mb() -> float:
    """This process's peak RSS. VmHWM, not ru_maxrss: a spawned child's ru_maxrss also
    counts the parent's pages from before the exec."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _epoch(iso: str) -> float:
    return dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


async def run_pipeline(
    base_url: str, manifest_path: Path, out: Path, concurrency: int
) -> ClientResult:
    import batch.pipeline
    from batch.ledger import load_state
    from batch.manifest import load_manifest
    from batch.pipeline import RunOptions, run_manifest
    from batch.settings import ApiSettings

    result = ClientResult("pipeline")
    # The report is written after the last job: timed on its own, not as part of the run.
    write_report = getattr(batch.pipeline, "_write_report", None)
    if write_report is not None:

        def timed_report(*args: Any) -> None:
            cpu, wall = _cpu(), time.perf_counter()
            write_report(*args)
            result.report_s += time.perf_counter() - wall
            result.report_cpu_s += _cpu() - cpu

        setattr(batch.pipeline, "_write_report", timed_report)  # noqa: B010 (a private hook)
    started = time.perf_counter()
    manifest = load_manifest(manifest_path)
    result.load_s = time.perf_counter() - started
    result.jobs = len(manifest.items)
    settings = ApiSettings(base_url=base_url, api_key=API_KEY, api_secret=API_SECRET)
    cpu0, wall0 = _cpu(), time.perf_counter()
    summary = await run_manifest(
        manifest, settings, RunOptions(out_dir=out, concurrency=concurrency)
    )
    result.wall_s = time.perf_counter() - wall0 - result.report_s
    result.cpu_s = _cpu() - cpu0 - result.report_cpu_s
    result.requests = summary.requests
    result.succeeded = summary.succeeded
    for record in load_state(out).items.values():
        if record.state == "succeeded" and record.job_id and record.last_ts:
            result.done[record.job_id] = _epoch(record.last_ts)
    return result


async def run_sdk(base_url: str, manifest_path: Path, out: Path, concurrency: int) -> ClientResult:
    import httpx
    from scenario_sdk import AsyncScenario

    from batch.manifest import load_manifest

    result = ClientResult("sdk")
    manifest = load_manifest(manifest_path)  # only to send the very same bodies
    result.jobs = len(manifest.items)
    await asyncio.to_thread(out.mkdir, parents=True, exist_ok=True)
    cpu0, wall0 = _cpu(), time.perf_counter()
    counted = 0

    async def count(request: httpx.Request) -> None:
        nonlocal counted
        counted += 1

    hooks: Any = {"request": [count]}
    api_http = httpx.AsyncClient(event_hooks=hooks)
    async with (
        AsyncScenario(
            base_url=base_url, api_key=API_KEY, api_secret=API_SECRET, http_client=api_http
        ) as client,
        httpx.AsyncClient() as cdn,
    ):
        limit = asyncio.Semaphore(concurrency)

        async def one(item: Any) -> None:
            async with limit:
                path = item.references[0].value
                data = await asyncio.to_thread(Path(path).read_bytes)
                image = base64.b64encode(data).decode()
                uploaded = await client.assets.upload(name=os.path.basename(path), image=image)
                body = item.generate_body([uploaded.asset.id])
                submitted = await client.generate.run_model(manifest.model, body=body)
                job: Any = submitted.job
                while job.status not in ("success", "failure", "canceled"):
                    await asyncio.sleep(1.0)
                    job = (await client.jobs.retrieve(job.job_id)).job
                for index, asset_id in enumerate(job.metadata.asset_ids or []):
                    asset = (await client.assets.retrieve(asset_id)).asset
                    response = await cdn.get(asset.url)
                    response.raise_for_status()
                    target = out / f"{item.id}_{index}.png"
                    await asyncio.to_thread(target.write_bytes, response.content)
                if job.status == "success":
                    result.succeeded += 1
                    result.done[job.job_id] = time.time()

        async with asyncio.TaskGroup() as group:
            for item in manifest.items:
                group.create_task(one(item))
    result.wall_s = time.perf_counter() - wall0
    result.cpu_s = _cpu() - cpu0
    result.requests = counted
    return result


def _child(kind: str, args: tuple[Any, ...], conn: Any) -> None:
    import logging
    import warnings

    warnings.simplefilter("ignore")
    logging.basicConfig(level=logging.WARNING)
    runner = run_pipeline if kind == "pipeline" else run_sdk
    try:
        result = asyncio.run(runner(*args))
    except BaseException as exc:  # the parent reports it; the child must not hang
        result = ClientResult(kind, error=f"{type(exc).__name__}: {exc}")
    result.peak_rss_mb = peak_rss_mb()
    conn.send(asdict(result))


def run_client(
    kind: str, base_url: str, manifest_path: Path, out: Path, concurrency: int
) -> ClientResult:
    """Run one client to completion in a fresh process; its figures come back by pipe."""
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(
        target=_child, args=(kind, (base_url, manifest_path, out, concurrency), child)
    )
    process.start()
    raw = parent.recv()
    process.join()
    return ClientResult(**raw)
