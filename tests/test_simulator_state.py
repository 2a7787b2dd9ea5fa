"""The simulator's insides: lifecycle arithmetic, output images, config checks, and scale."""

from __future__ import annotations

import asyncio
import base64
import io
import time
from collections.abc import Awaitable, Callable

import aiohttp
import pytest
from multidict import MultiDict, MultiDictProxy
from PIL import Image

from batch.simulator import MODEL_ID, Simulator, SimulatorConfig, serve
from batch.simulator.faults import JobPlan
from batch.simulator.images import OutputSpec, Renderer
from batch.simulator.lifecycle import state_at
from batch.simulator.listing import list_jobs
from batch.simulator.state import TEAM_ID, Store

SimulatorFactory = Callable[..., Awaitable[Simulator]]


def test_lifecycle_walks_every_status() -> None:
    """A 10 s job: queued, warming-up, in-progress with rising progress, finalizing, success."""
    plan = JobPlan(duration_s=10.0, fails=False, stalls=False)
    seen = [(s.status, s.progress) for s in (state_at(0.0, plan, t, None) for t in range(12))]
    assert [s for s, _ in seen] == ["queued"] + ["warming-up"] + ["in-progress"] * 7 + [
        "finalizing"
    ] + ["success"] * 2
    progress = [p for _, p in seen]
    assert progress == sorted(progress) and progress[0] == 0.0 and progress[-1] == 1.0
    done = state_at(0.0, plan, 20.0, None)
    assert [h[1] for h in done.history] == [0.0, 1.0, 2.0, 9.0, 10.0] and done.updated == 10.0


def test_lifecycle_failure_stall_cancel() -> None:
    """Failure skips finalizing; a stall never ends; a cancel freezes the job at its instant."""
    fail = state_at(0.0, JobPlan(10.0, fails=True, stalls=False), 11.0, None)
    assert [h[0] for h in fail.history] == ["queued", "warming-up", "in-progress", "failure"]
    stall = state_at(0.0, JobPlan(10.0, fails=False, stalls=True), 1e6, None)
    assert stall.status == "in-progress" and stall.progress == 0.5
    cancel = state_at(0.0, JobPlan(10.0, fails=False, stalls=False), 50.0, 5.0)
    assert cancel.status == "canceled" and cancel.history[-1] == ("canceled", 5.0)
    assert 0 < cancel.progress < 1


def test_outputs_are_deterministic_and_derived() -> None:
    """Same inputs, same PNG; prompt, index and aspect ratio each change it; size is bounded."""
    src = io.BytesIO()
    Image.new("RGB", (800, 600), (10, 120, 200)).save(src, format="PNG")
    ref = src.getvalue()
    spec = OutputSpec("asset_a", "make it red", seed=1, index=0, aspect_ratio="16:9")
    a, b = Renderer().render(spec, ref), Renderer().render(spec, ref)
    assert a == b
    variants = {
        Renderer().render(OutputSpec("asset_a", p, 1, i, r), ref)
        for p, i, r in [("make it red", 1, "16:9"), ("make it gold", 0, "16:9"), ("x", 0, "auto")]
    }
    assert a not in variants and len(variants) == 3
    with Image.open(io.BytesIO(a)) as img:
        assert img.size == (256, 144)


def test_renderer_is_cheap() -> None:
    """150 distinct outputs (one second of a fast batch) draw in well under a second."""
    src = io.BytesIO()
    Image.new("RGB", (2048, 2048), (90, 90, 90)).save(src, format="PNG")
    renderer = Renderer()
    start = time.perf_counter()
    for i in range(150):
        renderer.render(OutputSpec("asset_a", f"prompt {i}", i, 0, "auto"), src.getvalue())
    assert time.perf_counter() - start < 1.0


def test_config_refuses_nonsense() -> None:
    """Rates outside 0-1, half credentials or a zero limit fail loudly, naming the field."""
    with pytest.raises(ValueError, match="http500_rate"):
        SimulatorConfig(http500_rate=1.5)
    with pytest.raises(ValueError, match="api_key and api_secret"):
        SimulatorConfig(api_key="k")
    with pytest.raises(ValueError, match="parallel_jobs_limit"):
        SimulatorConfig(parallel_jobs_limit=0)


def test_twenty_thousand_jobs_stay_cheap() -> None:
    """20k jobs: creating, counting unfinished and listing a page all stay fast (O(page))."""
    store = Store(0, Renderer())
    src = io.BytesIO()
    Image.new("RGB", (8, 8)).save(src, format="PNG")
    ref = store.add_image("r.png", TEAM_ID, src.getvalue(), 0.0)
    params = {"prompt": "p", "referenceImages": [ref.id], "numOutputs": 1, "aspectRatio": "auto"}
    plan = JobPlan(duration_s=2.0, fails=False, stalls=False)
    start = time.perf_counter()
    for i in range(20_000):
        store.add_job(MODEL_ID, TEAM_ID, {"prompt": "p"}, params, plan, 5.0, 1000.0 + i * 0.01)
    assert time.perf_counter() - start < 3.0
    assert store.unfinished_count(1100.0) == 20_000 - 9_801
    query = MultiDictProxy(MultiDict({"pageSize": "100"}))
    start = time.perf_counter()
    for _ in range(100):
        page, token = list_jobs(store, query, TEAM_ID, 1300.0, lambda _: None)
    assert time.perf_counter() - start < 0.5
    assert len(page) == 100 and token and page[0][0].seq == 19_999


async def test_serves_hundreds_of_requests_per_second(
    simulator: Simulator, png_bytes: Callable[..., bytes]
) -> None:
    """500 generate calls then 500 polls, 32 at a time, each batch in about a second or less."""
    auth = {"Authorization": "Basic " + base64.b64encode(b"k:s").decode()}
    async with aiohttp.ClientSession(headers=auth) as http:
        image = base64.b64encode(png_bytes()).decode()
        async with http.post(
            f"{simulator.base_url}/assets", json={"image": image, "name": "r"}
        ) as r:
            ref = (await r.json())["asset"]["id"]
        gate = asyncio.Semaphore(32)

        async def one(method: str, url: str, body: object = None) -> int:
            async with gate, http.request(method, url, json=body) as resp:
                await resp.read()
                return resp.status

        start = time.perf_counter()
        url = f"{simulator.base_url}/generate/custom/{MODEL_ID}"
        statuses = await asyncio.gather(
            *(one("POST", url, {"prompt": f"p{i}", "referenceImages": [ref]}) for i in range(500))
        )
        submit_s = time.perf_counter() - start
        start = time.perf_counter()
        polls = await asyncio.gather(
            *(one("GET", f"{simulator.base_url}/jobs/{j}") for j in simulator.jobs)
        )
        poll_s = time.perf_counter() - start
    assert set(statuses) == {200} and set(polls) == {200}
    assert submit_s < 1.5 and poll_s < 1.5, (submit_s, poll_s)


async def test_serve_prints_both_urls(capsys: pytest.CaptureFixture[str]) -> None:
    """serve() starts both origins, prints one line with their URLs, and stops when cancelled."""
    task = asyncio.create_task(serve(SimulatorConfig(), port=0, cdn_port=0))
    for _ in range(100):
        await asyncio.sleep(0.01)
        if "CDN" in capsys.readouterr().out:
            break
    else:
        pytest.fail("serve() printed nothing")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_quiet_log_keeps_generate_calls(
    simulator_factory: SimulatorFactory, png_bytes: Callable[..., bytes]
) -> None:
    """record_requests=False logs only generate calls, so submission counts still work."""
    sim = await simulator_factory(record_requests=False)
    auth = {"Authorization": "Basic " + base64.b64encode(b"k:s").decode()}
    async with aiohttp.ClientSession(headers=auth) as http:
        image = base64.b64encode(png_bytes()).decode()
        async with http.post(f"{sim.base_url}/assets", json={"image": image, "name": "r"}) as r:
            ref = (await r.json())["asset"]["id"]
        body = {"prompt": "p", "referenceImages": [ref]}
        async with http.post(f"{sim.base_url}/generate/custom/{MODEL_ID}", json=body) as r:
            job = (await r.json())["job"]
        await asyncio.sleep(0.1)
        async with http.get(f"{sim.base_url}/jobs/{job['jobId']}") as r:
            out = (await r.json())["job"]["metadata"]["assetIds"][0]
        chained = {"prompt": "again", "referenceImages": [out]}
        async with http.post(f"{sim.base_url}/generate/custom/{MODEL_ID}", json=chained) as r:
            assert r.status == 200
    assert len(sim.request_log) == 2 and sim.submissions_by()[("p", (ref,))] == 1
    await asyncio.sleep(0.1)
    second = list(sim.jobs.values())[1]
    assert sim.store.asset_bytes(sim.assets[second.output_ids[0]]).startswith(b"\x89PNG")
