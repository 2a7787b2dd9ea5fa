"""The two clients under test, each run in its own process for clean CPU and RSS figures.

- `pipeline`: scenario-batch's own `run_manifest` with default settings.
- `sdk`: what a user would otherwise write with the official scenario-sdk: an
  asyncio.Semaphore(C) and, per job, upload, run_model, retrieve the job every second
  until it is final, retrieve each output asset, download the file.
- `floor`: the least any aiohttp client can do for the same result, as a yardstick for
  the other two: per job one upload, one submit, one download written straight to its
  file from the event loop; one poller lists successes every 50 ms and fetches their
  URLs in bulk. No ledger, no fsync, no retries, no checks: not safe, only cheap.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime as dt
import multiprocessing
import os
import resource
import ssl
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import stages

API_KEY = "bench-key"
API_SECRET = "bench-secret"


@dataclass(slots=True)
class ClientResult:
    kind: str
    jobs: int = 0
    succeeded: int = 0
    wall_s: float = 0.0
    started_at: float = 0.0  # epoch at the start of wall_s
    cpu_s: float = 0.0  # user + system of the client process during the run
    sys_s: float = 0.0  # of which system (kernel) time
    # Of cpu_s, the event loop's own thread; the rest is the client's other threads (the
    # pipeline's ledger writer and settle threads: fsyncs, renames, image checks).
    loop_cpu_s: float = 0.0
    load_s: float = 0.0  # manifest load (not in wall_s or cpu_s)
    report_s: float = 0.0  # report.html written at the end of a run (not in wall_s or cpu_s)
    report_cpu_s: float = 0.0
    report_sys_s: float = 0.0
    report_loop_cpu_s: float = 0.0  # of report_cpu_s, on the loop's thread (the views run there)
    peak_rss_mb: float = 0.0
    requests: int = 0  # API requests as the client counted them
    done: dict[str, float] = field(default_factory=dict)  # job id -> epoch the file was on disk
    # job id -> epochs of bench.stages.STAGES (the pipeline only)
    stages: dict[str, list[float]] = field(default_factory=dict)
    error: str | None = None


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _sys() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_stime


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


def _trusting(ca_pem: str | None) -> ssl.SSLContext | None:
    """A client TLS context trusting the simulator's throwaway CA (None over http)."""
    return ssl.create_default_context(cadata=ca_pem) if ca_pem else None


async def run_pipeline(
    base_url: str, manifest_path: Path, out: Path, concurrency: int, ca_pem: str | None = None
) -> ClientResult:
    import batch.run.pipeline
    from batch.api.network import NetworkSettings
    from batch.api.settings import ApiSettings
    from batch.ledger.journal import load_state
    from batch.manifest.load import load_manifest
    from batch.run.pipeline import RunOptions, run_manifest

    result = ClientResult("pipeline")
    # The views (report.html, metadata.jsonl) are written after the last job: timed on
    # their own, not as part of the run. The hook must exist: when it was renamed, the
    # views' CPU silently joined the run's (~0.8 ms per job at C=256, round 9).
    write_views = batch.run.pipeline._write_views

    def timed_views(*args: Any) -> None:
        cpu, system, wall, thread = _cpu(), _sys(), time.perf_counter(), time.thread_time()
        write_views(*args)
        result.report_s += time.perf_counter() - wall
        result.report_cpu_s += _cpu() - cpu
        result.report_sys_s += _sys() - system
        result.report_loop_cpu_s += time.thread_time() - thread

    setattr(batch.run.pipeline, "_write_views", timed_views)  # noqa: B010 (a private hook)
    marks: dict[str, dict[str, Any]] = {}
    stages.install(marks)
    started = time.perf_counter()
    manifest = load_manifest(manifest_path)
    result.load_s = time.perf_counter() - started
    result.jobs = len(manifest.items)
    settings = ApiSettings(
        base_url=base_url,
        api_key=API_KEY,
        api_secret=API_SECRET,
        network=NetworkSettings(ca_data=ca_pem),
    )
    cpu0, sys0, wall0, loop0 = _cpu(), _sys(), time.perf_counter(), time.thread_time()
    result.started_at = time.time()
    options = RunOptions(out_dir=out, concurrency=concurrency)
    if os.environ.get("BENCH_POLL_BUDGET"):  # the curve of wall against the poll budget
        budget = float(os.environ["BENCH_POLL_BUDGET"])
        options = dataclasses.replace(
            options, poll=dataclasses.replace(options.poll, budget_per_job=budget)
        )
    summary = await run_manifest(manifest, settings, options)
    result.wall_s = time.perf_counter() - wall0 - result.report_s
    result.cpu_s = _cpu() - cpu0 - result.report_cpu_s
    result.sys_s = _sys() - sys0 - result.report_sys_s
    result.loop_cpu_s = time.thread_time() - loop0 - result.report_loop_cpu_s
    result.requests = summary.requests
    result.succeeded = summary.succeeded
    for record in load_state(out).items.values():
        if record.state == "succeeded" and record.job_id and record.last_ts:
            result.done[record.job_id] = _epoch(record.last_ts)
    result.stages = stages.by_job(marks)
    return result


async def run_sdk(
    base_url: str, manifest_path: Path, out: Path, concurrency: int, ca_pem: str | None = None
) -> ClientResult:
    import httpx
    from scenario_sdk import AsyncScenario

    from batch.manifest.load import load_manifest

    result = ClientResult("sdk")
    manifest = load_manifest(manifest_path)  # only to send the very same bodies
    result.jobs = len(manifest.items)
    await asyncio.to_thread(out.mkdir, parents=True, exist_ok=True)
    cpu0, sys0, wall0, loop0 = _cpu(), _sys(), time.perf_counter(), time.thread_time()
    result.started_at = time.time()
    counted = 0

    async def count(request: httpx.Request) -> None:
        nonlocal counted
        counted += 1

    hooks: Any = {"request": [count]}
    verify: ssl.SSLContext | bool = _trusting(ca_pem) or True
    api_http = httpx.AsyncClient(event_hooks=hooks, verify=verify)
    async with (
        AsyncScenario(
            base_url=base_url, api_key=API_KEY, api_secret=API_SECRET, http_client=api_http
        ) as client,
        httpx.AsyncClient(verify=verify) as cdn,
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
    result.sys_s = _sys() - sys0
    result.loop_cpu_s = time.thread_time() - loop0
    result.requests = counted
    return result


async def run_floor(
    base_url: str, manifest_path: Path, out: Path, concurrency: int, ca_pem: str | None = None
) -> ClientResult:
    import aiohttp
    import orjson

    from batch.api.client import BULK_LIMIT
    from batch.manifest.load import load_manifest
    from batch.run.poller import format_time, parse_time

    result = ClientResult("floor")
    manifest = load_manifest(manifest_path)  # only to send the very same bodies
    result.jobs = len(manifest.items)
    out.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 (before the clock starts)
    cpu0, sys0, wall0, loop0 = _cpu(), _sys(), time.perf_counter(), time.thread_time()
    result.started_at = time.time()
    waiting: dict[str, asyncio.Future[list[str]]] = {}  # job id -> its output URLs
    counted = 0
    auth = aiohttp.BasicAuth(API_KEY, API_SECRET)
    connector = aiohttp.TCPConnector(limit=concurrency + 16, ssl=_trusting(ca_pem) or True)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=60)
    ) as http:

        async def call(method: str, path: str, **kwargs: Any) -> Any:
            nonlocal counted
            counted += 1
            async with http.request(method, base_url + path, auth=auth, **kwargs) as response:
                response.raise_for_status()
                return orjson.loads(await response.read())

        async def poll() -> None:
            newest = ""  # API dates share one fixed-width format: text order is time order
            while True:
                await asyncio.sleep(0.05)
                params = {"status": "success", "type": "custom", "pageSize": "100"}
                if newest:  # a little look-back: jobs of the same millisecond
                    since = parse_time(newest) - dt.timedelta(seconds=0.1)
                    params["updatedAfter"] = format_time(since)
                found: dict[str, list[str]] = {}
                token = None
                while True:
                    query = dict(params, paginationToken=token) if token else params
                    page = await call("GET", "/jobs", params=query)
                    for raw in page.get("jobs") or []:
                        newest = max(newest, raw["updatedAt"])
                        if raw["jobId"] in waiting and raw["jobId"] not in found:
                            found[raw["jobId"]] = raw["metadata"]["assetIds"]
                    token = page.get("nextPaginationToken")
                    if not token:
                        break
                if not found:
                    continue
                asset_ids = [a for assets in found.values() for a in assets]
                urls: dict[str, str] = {}
                for start in range(0, len(asset_ids), BULK_LIMIT):
                    body = {"assetIds": asset_ids[start : start + BULK_LIMIT]}
                    answer = await call("POST", "/assets/get-bulk", json=body)
                    urls.update({a["id"]: a["url"] for a in answer["assets"]})
                for job_id, assets in found.items():
                    waiting.pop(job_id).set_result([urls[a] for a in assets])

        limit = asyncio.Semaphore(concurrency)

        async def one(item: Any) -> None:
            async with limit:
                path = Path(item.references[0].value)
                # Blocking file work in the loop on purpose: no thread trip (small files).
                image = base64.b64encode(path.read_bytes()).decode()  # noqa: ASYNC240
                body = {"image": f"data:image/png;base64,{image}", "name": path.name}
                asset = (await call("POST", "/assets", json=body))["asset"]["id"]
                answer = await call(
                    "POST", f"/generate/custom/{manifest.model}", json=item.generate_body([asset])
                )
                job_id = answer["job"]["jobId"]
                urls = waiting[job_id] = asyncio.get_running_loop().create_future()
                async with asyncio.timeout(120):
                    await urls
                for index, url in enumerate(urls.result()):
                    async with http.get(url) as response:
                        data = await response.read()
                    (out / f"{item.id}_{index}.png").write_bytes(data)
                result.succeeded += 1
                result.done[job_id] = time.time()

        async with asyncio.TaskGroup() as group:
            poller = group.create_task(poll())
            async with asyncio.TaskGroup() as items:
                for item in manifest.items:
                    items.create_task(one(item))
            poller.cancel()
    result.wall_s = time.perf_counter() - wall0
    result.cpu_s = _cpu() - cpu0
    result.sys_s = _sys() - sys0
    result.loop_cpu_s = time.thread_time() - loop0
    result.requests = counted
    return result


RUNNERS = {"pipeline": run_pipeline, "sdk": run_sdk, "floor": run_floor}


def _child(kind: str, args: tuple[Any, ...], conn: Any) -> None:
    import logging
    import warnings

    warnings.simplefilter("ignore")
    logging.basicConfig(level=logging.WARNING)
    runner = RUNNERS[kind]
    try:
        result = asyncio.run(runner(*args))
    except BaseException as exc:  # the parent reports it; the child must not hang
        result = ClientResult(kind, error=f"{type(exc).__name__}: {exc}")
    result.peak_rss_mb = peak_rss_mb()
    conn.send(asdict(result))


def run_client(
    kind: str,
    base_url: str,
    manifest_path: Path,
    out: Path,
    concurrency: int,
    ca_pem: str | None = None,
) -> ClientResult:
    """Run one client to completion in a fresh process; its figures come back by pipe."""
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(
        target=_child, args=(kind, (base_url, manifest_path, out, concurrency, ca_pem), child)
    )
    process.start()
    raw = parent.recv()
    process.join()
    return ClientResult(**raw)
