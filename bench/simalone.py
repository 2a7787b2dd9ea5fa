"""The simulator alone: how many requests of each kind it serves per second on this machine,
with a bare aiohttp client (no product code), so a run's pace can be checked against it."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from bench.clients import API_KEY, API_SECRET
from bench.simproc import SimProcess
from bench.workload import PROMPT, tiny_png

MODEL = "model_flux-kontext-editing"


@dataclass(slots=True)
class SimCapacity:
    rates: dict[str, float]  # requests per second, by kind
    jobs_per_s: float  # upload + submit + download + 1/50 list page + 1/100 get-bulk per job
    cpu_s: float  # simulator CPU during the measurement
    wall_s: float
    cpu_ms: dict[str, float] = field(default_factory=dict)  # simulator CPU per request, by kind
    cpu_ms_per_job: float = 0.0  # the same mix as jobs_per_s, in simulator CPU

    def table(self) -> str:
        """A Markdown table: requests per second and simulator CPU per request, by kind."""
        lines = ["| request | per second | sim CPU ms each |", "|---|---|---|"]
        for kind, rate in self.rates.items():
            lines.append(f"| {kind} | {rate:,.0f} | {self.cpu_ms.get(kind, 0.0):.3f} |")
        return "\n".join(lines)


Post = Callable[[str, Any], Awaitable[Any]]


@contextlib.asynccontextmanager
async def _bare_client(
    base: str, concurrency: int, ca_pem: str | None = None
) -> AsyncIterator[tuple[aiohttp.ClientSession, Post]]:
    """An aiohttp session with the bench's credentials, and a JSON POST to the API
    (over https, trusting the simulator's CA `ca_pem`)."""
    auth = aiohttp.BasicAuth(API_KEY, API_SECRET)
    context = ssl.create_default_context(cadata=ca_pem) if ca_pem else True
    connector = aiohttp.TCPConnector(limit=concurrency, ssl=context)
    async with aiohttp.ClientSession(auth=auth, connector=connector) as http:

        async def post(path: str, body: Any) -> Any:
            async with http.post(base + path, json=body) as response:
                response.raise_for_status()
                return await response.json()

        yield http, post


def _data_url(index: int) -> str:
    return "data:image/png;base64," + base64.b64encode(tiny_png(index)).decode()


async def _blast(
    count: int, concurrency: int, call: Callable[[int], Awaitable[Any]]
) -> tuple[float, list[Any]]:
    limit = asyncio.Semaphore(concurrency)
    results: list[Any] = [None] * count

    async def one(index: int) -> None:
        async with limit:
            results[index] = await call(index)

    started = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for index in range(count):
            group.create_task(one(index))
    return count / (time.perf_counter() - started), results


async def _measure(
    base: str,
    n: int,
    concurrency: int,
    latency_s: float,
    cpu: Callable[[], float],
    ca_pem: str | None = None,
) -> tuple[dict[str, float], dict[str, float]]:
    """Rates by kind, and the simulator's CPU milliseconds per request by kind."""
    cpu_ms: dict[str, float] = {}
    mark = cpu()

    def charge(kind: str, count: int) -> None:
        nonlocal mark
        now = cpu()
        cpu_ms[kind] = 1000 * (now - mark) / max(1, count)
        mark = now

    async with _bare_client(base, concurrency, ca_pem) as (http, post):

        async def upload(i: int) -> str:
            body = {"image": _data_url(i), "name": f"{i}.png"}
            return str((await post("/assets", body))["asset"]["id"])

        rates: dict[str, float] = {}
        rates["upload"], assets = await _blast(n, concurrency, upload)
        charge("upload", n)

        async def submit(i: int) -> str:
            body = {"prompt": PROMPT, "referenceImages": [assets[i]]}
            return str((await post(f"/generate/custom/{MODEL}", body))["job"]["jobId"])

        rates["submit"], jobs = await _blast(n, concurrency, submit)
        charge("submit", n)
        await asyncio.sleep(latency_s * 1.3)
        mark = cpu()

        async def page(i: int) -> int:
            query = {"type": "custom", "pageSize": "100"}
            async with http.get(base + "/jobs", params=query) as response:
                response.raise_for_status()
                return len((await response.json())["jobs"])

        rates["list page"], _ = await _blast(max(10, n // 50), 8, page)
        charge("list page", max(10, n // 50))

        async def get_job(i: int) -> list[str]:
            async with http.get(f"{base}/jobs/{jobs[i]}") as response:
                response.raise_for_status()
                return list((await response.json())["job"]["metadata"].get("assetIds", []))

        rates["get job"], outputs = await _blast(n, concurrency, get_job)
        charge("get job", n)
        asset_ids = [a for ids in outputs for a in ids]
        chunks = [asset_ids[i : i + 100] for i in range(0, len(asset_ids), 100)]

        async def bulk(i: int) -> list[str]:
            body = await post("/assets/get-bulk", {"assetIds": chunks[i]})
            return [str(a["url"]) for a in body["assets"]]

        rates["get-bulk(100)"], found = await _blast(len(chunks), 8, bulk)
        charge("get-bulk(100)", len(chunks))
        urls = [u for chunk in found for u in chunk]

        async def download(i: int) -> int:
            async with http.get(urls[i]) as response:
                response.raise_for_status()
                return len(await response.read())

        rates["cdn download"], _ = await _blast(len(urls), concurrency, download)
        charge("cdn download", len(urls))
    return rates, cpu_ms


def measure(
    n: int = 2000,
    concurrency: int = 256,
    latency_s: float = 1.0,
    *,
    knobs: dict[str, Any] | None = None,
    tls: bool = False,
) -> SimCapacity:
    """Rates and simulator CPU by kind of request; `knobs` and `tls` as in a profile (with
    a round trip, the rates at a given concurrency are bounded by it: the simulator's CPU
    per job is then the figure that says whether it could be the bottleneck)."""
    settings = {**(knobs or {}), "job_latency_s": latency_s, "record_requests": False}
    with SimProcess(tls=tls, **settings) as sim:
        cpu0 = sim.stats().cpu_s
        started = time.perf_counter()
        rates, cpu_ms = asyncio.run(
            _measure(sim.base_url, n, concurrency, latency_s, lambda: sim.stats().cpu_s, sim.ca_pem)
        )
        wall = time.perf_counter() - started
        cpu = sim.stats().cpu_s - cpu0

    share = {"upload": 1, "submit": 1, "cdn download": 1, "list page": 50, "get-bulk(100)": 100}
    jobs_per_s = 1 / sum(1 / (rates[kind] * jobs) for kind, jobs in share.items())
    cpu_ms_per_job = sum(cpu_ms[kind] / jobs for kind, jobs in share.items())
    return SimCapacity(rates, jobs_per_s, cpu, wall, cpu_ms, cpu_ms_per_job)


async def _first_wave_once(base: str, concurrency: int, window: int, offset: int) -> float:
    """Send `concurrency` jobs (an upload, then a submit, each), `window` at a time; the
    wall clock (the simulator's clock for a job's creation) at the start."""
    async with _bare_client(base, concurrency) as (_, post):
        images = [_data_url(offset + i) for i in range(concurrency)]

        limit = asyncio.Semaphore(window)

        async def job(i: int) -> None:
            async with limit:
                asset = await post("/assets", {"image": images[i], "name": f"{offset + i}.png"})
                body = {"prompt": PROMPT, "referenceImages": [asset["asset"]["id"]]}
                await post(f"/generate/custom/{MODEL}", body)

        started = time.time()
        async with asyncio.TaskGroup() as group:
            for i in range(concurrency):
                group.create_task(job(i))
    return started


FIRST_WAVE_WINDOWS = (4, 16, 32)  # jobs a bare client keeps in progress at once


def first_wave(concurrency: int, knobs: dict[str, Any], attempts: int = 2) -> list[float]:
    """Seconds from the start to each of the first `concurrency` jobs' creation in the
    simulator, for a bare aiohttp client (no product code) sending each job's upload then
    its submit: the earliest a client could fill the slots. The best (by the mean) over
    a few windows of jobs in progress and `attempts` each, every try on a fresh
    simulator process with the run's knobs."""
    best: list[float] = []
    for window in sorted({min(w, concurrency) for w in FIRST_WAVE_WINDOWS}):
        for attempt in range(attempts):
            with SimProcess(**knobs) as sim:
                started = asyncio.run(
                    _first_wave_once(sim.base_url, concurrency, window, attempt * concurrency)
                )
                created = sorted(c for c, _ in sim.stats().jobs.values())
            offsets = [c - started for c in created]
            if not best or sum(offsets) < sum(best):
                best = offsets
    return best
