"""The client alone against a scripted server: the status -> exception map, which calls are
retried, how long it waits (Retry-After, retry-after-ms), and the adaptive throttle."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from batch.api.client import ScenarioClient
from batch.api.settings import ApiSettings, RetryPolicy
from batch.api.throttle import Throttle
from batch.api.urls import redirect_target
from batch.errors import (
    AmbiguousSubmitError,
    CredentialsError,
    DownloadError,
    ParallelJobsLimitError,
    PermanentApiError,
)
from batch.run.outputs import fetch_output
from tests.conftest import make_png

RETRY = RetryPolicy(attempts=5, initial_wait_s=0.01, max_wait_s=0.5, total_s=10)
Answer = tuple[int, dict[str, object], dict[str, str]]  # status, JSON body, headers


@dataclass
class Script:
    """Answers in order (the last one repeats); the arrival time of every request."""

    answers: list[Answer]
    arrivals: list[float] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.arrivals.append(time.monotonic())
        status, body, headers = self.answers[min(len(self.arrivals), len(self.answers)) - 1]
        return web.json_response(body, status=status, headers=headers)


@pytest.fixture
async def scripted() -> AsyncIterator[Callable[[list[Answer]], ScenarioClient]]:
    """`scripted(answers)` -> a client whose every call the script answers."""
    script = Script([])
    app = web.Application()
    app.router.add_route("*", "/v1/{tail:.*}", script.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    settings = ApiSettings(f"http://127.0.0.1:{port}/v1", "k", "s", retry=RETRY)
    async with aiohttp.ClientSession() as session:

        def make(answers: list[Answer]) -> ScenarioClient:
            script.answers = answers
            client = ScenarioClient(session, settings)
            client.script = script  # type: ignore[attr-defined]
            return client

        yield make
    await runner.cleanup()


def arrivals(client: ScenarioClient) -> list[float]:
    return list(client.script.arrivals)  # type: ignore[attr-defined]


OK: Answer = (200, {"job": {"jobId": "job_1", "status": "success"}}, {})


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504, 520])
async def test_transient_statuses_are_retried(
    scripted: Callable[[list[Answer]], ScenarioClient], status: int
) -> None:
    """408, 409, 429 and every 5xx on a read are retried until it succeeds."""
    client = scripted([(status, {"message": "busy"}, {}), (status, {}, {}), OK])
    job = await client.get_job("job_1")
    assert job.status == "success" and len(arrivals(client)) == 3


@pytest.mark.parametrize("status", [400, 403, 404, 422])
async def test_permanent_statuses_fail_at_once_with_the_message(
    scripted: Callable[[list[Answer]], ScenarioClient], status: int
) -> None:
    """400, 403, 404, 422: one call, a PermanentApiError carrying the API's message and hint."""
    client = scripted([(status, {"message": "referenceImages: no such asset", "hint": "h"}, {})])
    with pytest.raises(PermanentApiError) as caught:
        await client.generate("model_x", {"prompt": "p"})
    assert f"HTTP {status}" in str(caught.value) and "referenceImages" in str(caught.value)
    assert caught.value.hint == "h" and len(arrivals(client)) == 1


async def test_401_is_a_credentials_error_and_not_retried(
    scripted: Callable[[list[Answer]], ScenarioClient],
) -> None:
    """401 raises CredentialsError naming the variables to check; no second call."""
    client = scripted([(401, {"message": "Unauthorized"}, {})])
    with pytest.raises(CredentialsError, match="SCENARIO_SDK_API_KEY"):
        await client.get_job("job_1")
    assert len(arrivals(client)) == 1


async def test_generate_is_never_resent_after_a_5xx(
    scripted: Callable[[list[Answer]], ScenarioClient],
) -> None:
    """A 5xx from generate may hide a created job: reported as ambiguous, not re-sent."""
    client = scripted([(502, {"message": "bad gateway"}, {}), OK])
    with pytest.raises(AmbiguousSubmitError):
        await client.generate("model_x", {"prompt": "p"})
    assert len(arrivals(client)) == 1


async def test_generate_retries_a_rate_limit_but_not_the_jobs_ceiling(
    scripted: Callable[[list[Answer]], ScenarioClient],
) -> None:
    """A rate-limit 429 on generate created nothing: retried. The parallel-jobs 429 is not."""
    client = scripted([(429, {"message": "slow down"}, {"retry-after-ms": "10"}), OK])
    assert (await client.generate("model_x", {"prompt": "p"})).job.job_id == "job_1"
    assert len(arrivals(client)) == 2
    ceiling = {"actionName": "parallel-custom-jobs", "actionLimit": 3}
    client = scripted([(429, {"message": "too many jobs", "details": ceiling}, {})])
    with pytest.raises(ParallelJobsLimitError) as caught:
        await client.generate("model_x", {"prompt": "p"})
    assert caught.value.limit == 3


@pytest.mark.parametrize(
    ("headers", "at_least", "at_most"),
    [
        ({"Retry-After": "0.3"}, 0.3, 0.45),
        ({"retry-after-ms": "250", "Retry-After": "5"}, 0.25, 0.4),  # the finer one wins
        ({"Retry-After": "100"}, 0.5, 0.65),  # capped by RetryPolicy.max_wait_s
    ],
)
async def test_retry_after_is_honoured_and_capped(
    scripted: Callable[[list[Answer]], ScenarioClient],
    headers: dict[str, str],
    at_least: float,
    at_most: float,
) -> None:
    """The wait before a retry follows Retry-After / retry-after-ms, capped by max_wait_s."""
    client = scripted([(429, {"message": "later"}, headers), OK])
    await client.get_job("job_1")
    first, second = arrivals(client)
    assert at_least <= second - first <= at_most + 0.1


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _second(throttle: Throttle, clock: FakeClock, sent: int, refused: int) -> None:
    """One second of answers, evenly spread, `refused` of them 429."""
    every = sent // refused if refused else sent + 1
    for n in range(1, sent + 1):
        clock.now += 1.0 / sent
        if n % every == 0:
            throttle.on_rate_limited()
        else:
            throttle.on_success()


def test_throttle_ignores_scattered_429s() -> None:
    """A 5% sprinkle of 429s (a busy backend) leaves the rate unlimited."""
    clock = FakeClock()
    throttle = Throttle(clock=clock)
    for _ in range(20):
        _second(throttle, clock, sent=40, refused=2)
    assert throttle.rate is None and throttle.rate_limited == 40


def test_throttle_settles_below_the_accepted_rate() -> None:
    """Half the calls refused: the rate drops to 90% of what the server accepted, once a
    second at most, and creeps back up by about one request per second per second."""
    clock = FakeClock()
    throttle = Throttle(clock=clock)
    _second(throttle, clock, sent=40, refused=20)
    assert throttle.cuts == 1 and throttle.rate is not None
    assert 15 <= throttle.rate <= 20  # 90% of about 20 accepted
    cut = throttle.rate
    _second(throttle, clock, sent=18, refused=0)
    assert cut + 0.5 < throttle.rate < cut + 1.5


async def test_presigned_urls_are_requested_exactly_as_given(tmp_path: Path) -> None:
    """Part-upload and output URLs carry signatures: they go out byte for byte, so `%2F`,
    `%7E` and `%2B` are not rewritten to `/`, `~` or `+` on the way, also when a redirect
    leads there. A URL that is not encoded yet (a space) is still quoted."""
    signature = "X-Sig=a%2Fb%7Ec%2Bd%3D&Expires=1"
    raw_paths: list[str] = []
    png = make_png(300, 300, noisy=True)  # over the inline limit: goes up in parts

    async def api(request: web.Request) -> web.Response:
        tail = request.match_info["tail"]
        if request.method == "POST" and tail == "uploads":
            part = str(request.url.with_path("/part").with_query(None)) + "?" + signature
            return web.json_response(
                {"upload": {"id": "up_1", "parts": [{"number": 1, "url": part}]}}
            )
        if tail == "uploads/up_1":
            return web.json_response({"upload": {"status": "imported", "entityId": "asset_1"}})
        return web.json_response({})

    async def signed(request: web.Request) -> web.Response:
        raw_paths.append(request.raw_path)
        await request.read()
        return web.Response(body=png, content_type="image/png")

    async def moved(request: web.Request) -> web.Response:
        raw_paths.append(request.raw_path)
        return web.Response(status=302, headers={"Location": "/out.png?" + signature})

    app = web.Application()
    app.router.add_route("*", "/v1/{tail:.*}", api)
    app.router.add_route("*", "/part", signed)
    app.router.add_route("*", "/out.png", signed)
    app.router.add_route("*", "/moved", moved)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        settings = ApiSettings(str(server.make_url("/v1")), "k", "s", retry=RETRY)
        async with aiohttp.ClientSession() as session:
            client = ScenarioClient(session, settings)
            assert await client.upload_image(png, "ref.png", "image/png") == "asset_1"
            fetched = []
            for stem, path, query in (
                ("out", "/out.png", signature),
                ("via", "/moved", signature),
                ("space", "/out.png", "a b"),
            ):
                url = f"{server.make_url(path)}?{query}"
                fetched.append(
                    await fetch_output(session, url, tmp_path, stem, refresh_url=_no_refresh)
                )
    finally:
        await server.close()
    assert raw_paths == [
        "/part?" + signature,
        "/out.png?" + signature,
        "/moved?" + signature,
        "/out.png?" + signature,
        "/out.png?a+b",  # quoted by yarl, as before
    ]
    assert all(f.path.read_bytes() == png for f in fetched)


@pytest.mark.parametrize(
    ("current", "location", "expected"),
    [
        ("https://cdn.example/a/x.png?s=1", "/b/y.png?s=%2F", "https://cdn.example/b/y.png?s=%2F"),
        ("https://cdn.example/a/x.png", "https://other.example/z", "https://other.example/z"),
        ("http://cdn.example/a/x.png", "y.png", "http://cdn.example/a/y.png"),
        (
            "https://cdn.example/a/x.png",
            "http://cdn.example/a/x.png",
            "refused a redirect from https to http",
        ),
        (
            "https://cdn.example/a/x.png",
            "file:///etc/passwd",
            "refused a redirect from https to file",
        ),
        ("https://cdn.example/a/x.png", None, "a redirect without a Location"),
    ],
)
def test_redirect_hops(current: str, location: str | None, expected: str) -> None:
    """The next hop of a redirect, resolved before anything is sent to it: never off
    http(s), never from https down to plain http."""
    if expected.startswith("http"):
        assert redirect_target(current, location) == expected
    else:
        with pytest.raises(ValueError, match=expected):
            redirect_target(current, location)


async def _no_refresh() -> str:
    raise AssertionError("the URL was good")


async def test_a_stalled_download_times_out_with_the_sessions_timeouts(tmp_path: Path) -> None:
    """A CDN that accepts the request and never answers: the download gives up within the
    session's read timeout per attempt (aiohttp would read an explicit None as no
    timeout at all, and wait forever)."""

    async def stall(_: web.Request) -> web.Response:
        await asyncio.sleep(60)
        return web.Response(status=204)

    app = web.Application()
    app.router.add_route("GET", "/out.png", stall)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        timeout = aiohttp.ClientTimeout(total=None, connect=1.0, sock_read=0.2)
        async with aiohttp.ClientSession(timeout=timeout) as session, asyncio.timeout(10):
            with pytest.raises(DownloadError, match="after 2 attempts"):
                await fetch_output(
                    session,
                    str(server.make_url("/out.png")),
                    tmp_path,
                    "stalled",
                    refresh_url=_no_refresh,
                    attempts=2,
                    base_wait_s=0.01,
                )
    finally:
        await server.close()
