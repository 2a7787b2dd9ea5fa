"""Each fault knob: it happens at about the configured rate, as the client would see it,
and the pattern is the same for the same seed and request sequence."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from batch.simulator import MODEL_ID, Simulator, SimulatorConfig
from batch.simulator.faults import Faults

SimulatorFactory = Callable[..., Awaitable[Simulator]]
AUTH = {"Authorization": "Basic " + base64.b64encode(b"test-key:test-secret").decode()}
Status = int | str  # an HTTP status, or "dropped" / "truncated"


def session() -> aiohttp.ClientSession:
    """A fresh connection per request: no keep-alive reuse, so no silent client retries."""
    return aiohttp.ClientSession(headers=AUTH, connector=aiohttp.TCPConnector(force_close=True))


async def call(
    http: aiohttp.ClientSession, method: str, url: str, body: Any = None
) -> tuple[Status, Any]:
    try:
        async with http.request(method, url, json=body) as resp:
            data = await resp.read()
            return resp.status, (data, resp.headers)
    except aiohttp.ClientPayloadError:
        return "truncated", None
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
        return "dropped", None


async def get_pattern(sim: Simulator, n: int) -> list[Status]:
    """Send n GETs; the pattern is what the server did (aiohttp may re-send a reset GET)."""
    async with session() as http:
        for _ in range(n):
            await call(http, "GET", f"{sim.base_url}/jobs/job_x")
    return [r.status if r.status is not None else "dropped" for r in sim.request_log]


async def reference(sim: Simulator, png: bytes) -> str:
    async with session() as http:
        status, (data, _) = await call(
            http,
            "POST",
            f"{sim.base_url}/assets",
            {"image": base64.b64encode(png).decode(), "name": "r.png"},
        )
    assert status == 200
    return str(json.loads(data)["asset"]["id"])


def fraction(pattern: list[Status], value: Status) -> float:
    return sum(1 for s in pattern if s == value) / len(pattern)


def test_fault_streams_rate_and_independence() -> None:
    """Over 10,000 draws each knob fires at its rate; turning another knob on shifts nothing."""
    alone = Faults(SimulatorConfig(seed=3, http500_rate=0.2))
    mixed = Faults(SimulatorConfig(seed=3, http500_rate=0.2, reset_rate=0.5, http429_rate=0.3))
    a = [alone.for_request() for _ in range(10_000)]
    b = [mixed.for_request() for _ in range(10_000)]
    assert [x.http500 for x in a] == [x.http500 for x in b]
    assert abs(sum(x.http500 for x in a) / 1e4 - 0.2) < 0.02
    assert abs(sum(x.reset for x in b) / 1e4 - 0.5) < 0.02
    assert abs(sum(x.http429 for x in b) / 1e4 - 0.3) < 0.02
    assert not any(x.reset or x.http429 for x in a)


def test_job_latency_distribution() -> None:
    """Durations are uniform in mean*(1±jitter): right mean, bounded, seeded."""
    config = SimulatorConfig(seed=1, job_latency_s=2.0, job_latency_jitter=0.25)
    faults = Faults(config)
    durations = [faults.for_job().duration_s for _ in range(5000)]
    assert min(durations) >= 1.5 and max(durations) <= 2.5
    assert abs(sum(durations) / len(durations) - 2.0) < 0.03
    assert Faults(config).for_job().duration_s == durations[0]  # same seed, same draws


@pytest.mark.parametrize(
    ("knob", "rate", "expected"),
    [("http500_rate", 0.25, 500), ("http429_rate", 0.25, 429), ("reset_rate", 0.25, "dropped")],
)
async def test_request_fault_knob(
    simulator_factory: SimulatorFactory, knob: str, rate: float, expected: Status
) -> None:
    """The knob hits about `rate` of 200 API calls; same seed same pattern, other seed differs."""
    one = await get_pattern(await simulator_factory(seed=11, **{knob: rate}), 200)
    two = await get_pattern(await simulator_factory(seed=11, **{knob: rate}), 200)
    other = await get_pattern(await simulator_factory(seed=12, **{knob: rate}), 200)
    assert one == two and one != other
    assert 0.15 < fraction(one, expected) < 0.35
    assert set(one) == {404, expected}


async def test_429_carries_retry_after(simulator_factory: SimulatorFactory) -> None:
    """http429 answers JSON with Retry-After (seconds) and retry-after-ms from retry_after_s."""
    sim = await simulator_factory(http429_rate=1.0, retry_after_s=0.25)
    async with session() as http:
        status, (data, headers) = await call(http, "GET", f"{sim.base_url}/jobs/job_x")
    assert status == 429 and b"message" in data
    assert headers["Retry-After"] == "0.25" and headers["retry-after-ms"] == "250"


async def test_reset_is_logged_without_status(simulator_factory: SimulatorFactory) -> None:
    """A reset call gets no answer at all, is logged with status None and reaches no handler."""
    sim = await simulator_factory(reset_rate=1.0)
    async with session() as http:
        url = f"{sim.base_url}/jobs/job_x/action"
        seen = [(await call(http, "POST", url, {"action": "cancel"}))[0] for _ in range(3)]
    assert seen == ["dropped"] * 3
    assert [r.status for r in sim.request_log] == [None] * 3
    assert all(r.body == {"action": "cancel"} for r in sim.request_log)


async def test_rate_limit(simulator_factory: SimulatorFactory) -> None:
    """Past rate_limit_rps (bucket of one second) calls answer 429 with Retry-After; it refills."""
    sim = await simulator_factory(rate_limit_rps=20.0)
    async with session() as http:
        statuses = [
            s
            for s, _ in await asyncio.gather(
                *(call(http, "GET", f"{sim.base_url}/jobs/job_x") for _ in range(60))
            )
        ]
        assert 20 <= statuses.count(404) <= 26 and statuses.count(429) >= 34
        limited = next(r for r in sim.request_log if r.status == 429)
        assert limited.path == "/v1/jobs/job_x"
        await asyncio.sleep(0.3)
        status, (_, _headers) = await call(http, "GET", f"{sim.base_url}/jobs/job_x")
        assert status == 404
        statuses = [(await call(http, "GET", f"{sim.base_url}/jobs/job_x")) for _ in range(10)]
    refused = [h for s, (_, h) in statuses if s == 429]
    assert refused and float(refused[0]["Retry-After"]) > 0


async def test_drop_after_submit(
    simulator_factory: SimulatorFactory, png_bytes: Callable[..., bytes]
) -> None:
    """Dropped generate calls still create their job; the log names it; counts add up."""
    sim = await simulator_factory(drop_after_submit_rate=0.4, seed=5)
    ref = await reference(sim, png_bytes())
    async with session() as http:
        outcomes = [
            (
                await call(
                    http,
                    "POST",
                    f"{sim.base_url}/generate/custom/{MODEL_ID}",
                    {"prompt": f"p{i}", "referenceImages": [ref]},
                )
            )[0]
            for i in range(60)
        ]
    assert len(sim.jobs) == 60
    dropped = [r for r in sim.generate_calls() if r.status is None]
    assert len(dropped) == outcomes.count("dropped") and 0.25 < len(dropped) / 60 < 0.55
    assert all(r.job_id in sim.jobs for r in dropped)
    assert set(sim.submissions_by().values()) == {1}


async def test_truncated_downloads(
    simulator_factory: SimulatorFactory, png_bytes: Callable[..., bytes]
) -> None:
    """truncate_rate: full Content-Length, half the body, closed; seeded like the rest."""
    patterns = []
    for _ in range(2):
        sim = await simulator_factory(truncate_rate=0.3, seed=9)
        ref = await reference(sim, png_bytes())
        async with session() as http:
            _status, (data, _) = await call(http, "GET", f"{sim.base_url}/assets/{ref}")
            url = json.loads(data)["asset"]["url"]
            patterns.append([(await call(http, "GET", url))[0] for _ in range(100)])
        assert [r.status for r in sim.records(origin="cdn")].count(None) == patterns[-1].count(
            "truncated"
        )
    assert patterns[0] == patterns[1]
    assert set(patterns[0]) == {200, "truncated"} and 0.2 < fraction(patterns[0], "truncated") < 0.4


async def test_stalled_job(
    simulator_factory: SimulatorFactory, png_bytes: Callable[..., bytes]
) -> None:
    """A stalled job stays in-progress (progress stuck) long past its latency, until canceled."""
    sim = await simulator_factory(stall_rate=1.0, job_latency_s=0.05)
    ref = await reference(sim, png_bytes())
    async with session() as http:
        status, (_data, _) = await call(
            http,
            "POST",
            f"{sim.base_url}/generate/custom/{MODEL_ID}",
            {"prompt": "p", "referenceImages": [ref]},
        )
        assert status == 200
        job_id = next(iter(sim.jobs))
        await asyncio.sleep(0.3)
        state = sim.job_state(job_id)
        assert state.status == "in-progress" and state.progress == 0.5
        status, _ = await call(
            http, "POST", f"{sim.base_url}/jobs/{job_id}/action", {"action": "cancel"}
        )
        assert status == 200 and sim.job_state(job_id).status == "canceled"


async def test_job_failure_rate(
    simulator_factory: SimulatorFactory, png_bytes: Callable[..., bytes]
) -> None:
    """About job_failure_rate of jobs fail, the same ones for the same seed."""
    outcomes = []
    for _ in range(2):
        sim = await simulator_factory(job_failure_rate=0.3, job_latency_s=0.01, seed=4)
        ref = await reference(sim, png_bytes())
        async with session() as http:
            for i in range(80):
                await call(
                    http,
                    "POST",
                    f"{sim.base_url}/generate/custom/{MODEL_ID}",
                    {"prompt": f"p{i}", "referenceImages": [ref]},
                )
        await asyncio.sleep(0.05)
        outcomes.append([sim.job_state(j).status for j in sim.jobs])
    assert outcomes[0] == outcomes[1]
    assert set(outcomes[0]) == {"success", "failure"}
    assert 0.18 < outcomes[0].count("failure") / 80 < 0.42


async def test_expired_and_forged_urls(
    simulator_factory: SimulatorFactory, png_bytes: Callable[..., bytes]
) -> None:
    """CDN: expired URL 403, tampered signature 403, unknown asset 404, fresh URL 200."""
    sim = await simulator_factory(url_lifetime_s=0.2)
    ref = await reference(sim, png_bytes())
    async with session() as http:
        _, (data, _) = await call(http, "GET", f"{sim.base_url}/assets/{ref}")
        url = json.loads(data)["asset"]["url"]
        assert (await call(http, "GET", url))[0] == 200
        assert (await call(http, "GET", url[:-4] + "0000"))[0] == 403
        assert (await call(http, "GET", url.replace(ref, "asset_unknown")))[0] == 404
        await asyncio.sleep(0.25)
        status, (body, _) = await call(http, "GET", url)
        assert status == 403 and b"expired" in body
        _, (data, _) = await call(http, "GET", f"{sim.base_url}/assets/{ref}")
        assert (await call(http, "GET", json.loads(data)["asset"]["url"]))[0] == 200
    assert all(r.auth_sent for r in sim.records(origin="cdn"))  # this session sends auth: noted


async def test_short_pages(
    simulator_factory: SimulatorFactory, png_bytes: Callable[..., bytes]
) -> None:
    """Short (even empty) pages still carry a token; following tokens lists each job once."""
    sim = await simulator_factory(list_short_page_rate=0.5, job_latency_s=60.0)
    ref = await reference(sim, png_bytes())
    async with session() as http:
        for i in range(30):
            await call(
                http,
                "POST",
                f"{sim.base_url}/generate/custom/{MODEL_ID}",
                {"prompt": f"p{i}", "referenceImages": [ref]},
            )
        seen: list[str] = []
        sizes: list[int] = []
        token: str | None = None
        for _ in range(200):
            query = "?pageSize=5" + (f"&paginationToken={token}" if token else "")
            _status, (data, _) = await call(http, "GET", f"{sim.base_url}/jobs{query}")
            page = json.loads(data)
            seen += [j["jobId"] for j in page["jobs"]]
            sizes.append(len(page["jobs"]))
            token = page.get("nextPaginationToken")
            if token is None:
                break
    assert token is None
    assert seen == list(reversed(list(sim.jobs)))
    assert any(s < 5 for s in sizes[:-1]) and 0 in sizes


async def test_outage_window(simulator_factory: SimulatorFactory) -> None:
    """outage_windows: 503 to every API call inside the window (counted from the first call)."""
    sim = await simulator_factory(outage_windows=((0.1, 0.4),))
    async with session() as http:
        before = (await call(http, "GET", f"{sim.base_url}/jobs/job_x"))[0]
        await asyncio.sleep(0.15)
        during = [(await call(http, "GET", f"{sim.base_url}/jobs"))[0] for _ in range(3)]
        await asyncio.sleep(0.35)
        after = (await call(http, "GET", f"{sim.base_url}/jobs/job_x"))[0]
    assert (before, during, after) == (404, [503] * 3, 404)
    assert [r.status for r in sim.request_log] == [404, 503, 503, 503, 404]


async def test_forbidden_model(
    simulator_factory: SimulatorFactory, png_bytes: Callable[..., bytes]
) -> None:
    """forbidden_models: generate answers 403 naming the model and plan; no job is created."""
    sim = await simulator_factory(forbidden_models=(MODEL_ID,))
    ref = await reference(sim, png_bytes())
    async with session() as http:
        status, (data, _) = await call(
            http,
            "POST",
            f"{sim.base_url}/generate/custom/{MODEL_ID}",
            {"prompt": "p", "referenceImages": [ref]},
        )
    assert status == 403 and MODEL_ID in json.loads(data)["message"]
    assert "plan" in json.loads(data)["message"] and not sim.jobs


async def test_corrupt_downloads(
    simulator_factory: SimulatorFactory, png_bytes: Callable[..., bytes]
) -> None:
    """corrupt_rate: 200 with the full length of non-image bytes; seeded; truncation unshifted."""
    sim = await simulator_factory(corrupt_rate=0.3, seed=9)
    ref = await reference(sim, png_bytes())
    bodies: list[bytes] = []
    async with session() as http:
        _status, (data, _) = await call(http, "GET", f"{sim.base_url}/assets/{ref}")
        url = json.loads(data)["asset"]["url"]
        for _ in range(100):
            status, (body, headers) = await call(http, "GET", url)
            assert status == 200 and int(headers["Content-Length"]) == len(body)
            bodies.append(body)
    corrupt = [b for b in bodies if not b.startswith(b"\x89PNG")]
    assert 0.2 < len(corrupt) / 100 < 0.4 and all(b.startswith(b"<html>") for b in corrupt)
    assert len({b for b in bodies if b.startswith(b"\x89PNG")}) == 1
    assert len({len(b) for b in bodies}) == 1
