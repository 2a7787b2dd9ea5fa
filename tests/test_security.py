"""Hostile input and credential safety (issue 7): one test per promise, each a property.

Credentials reach the API origin only; they are written nowhere; every file stays inside
the output directory; oversized or hostile inputs are refused with a clear error.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import io
import json
import logging
import os
import re
import sys
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from batch.api.client import ScenarioClient
from batch.api.settings import ApiSettings
from batch.errors import (
    BatchError,
    CredentialsError,
    LedgerError,
    ManifestError,
    PermanentApiError,
    UsageError,
)
from batch.ledger.journal import LEDGER_NAME, LOCK_NAME, LedgerWriter
from batch.logs import configure_logging
from batch.manifest.load import Manifest, Reference, load_manifest
from batch.manifest.schema import ID_PATTERN
from batch.run.pipeline import RunOptions, run_manifest
from batch.run.references import References
from batch.simulator import Simulator
from tests.conftest import SimulatorFactory, make_png
from tests.pipeline_helpers import FAST_POLL, FAST_RETRY, settings_for, write_manifest

REPO = Path(__file__).resolve().parents[1]
SENTINEL_KEY = "SENTINELKEY123"
SENTINEL_SECRET = "SENTINELSECRET456"
SENTINEL_TOKEN = base64.b64encode(f"{SENTINEL_KEY}:{SENTINEL_SECRET}".encode()).decode()
SENTINELS = (SENTINEL_KEY, SENTINEL_SECRET, SENTINEL_TOKEN)
HOSTILE = ('<script>alert("x")</script>', "\"'><img src=x onerror=alert(1)>", "</textarea>&amp;")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# -- small servers of our own, on loopback --------------------------------------------------


@dataclasses.dataclass
class Seen:
    """What one test server saw: every request's path and headers."""

    requests: list[tuple[str, dict[str, str]]] = dataclasses.field(default_factory=list)

    @property
    def authorizations(self) -> list[str]:
        return [h["Authorization"] for _, h in self.requests if "Authorization" in h]


@contextlib.asynccontextmanager
async def serving(routes: dict[str, Handler]) -> AsyncIterator[tuple[TestServer, Seen]]:
    """A tiny aiohttp server on 127.0.0.1 that records every request it gets."""
    seen = Seen()

    @web.middleware
    async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
        seen.requests.append((request.path, dict(request.headers)))
        return await handler(request)

    app = web.Application(middlewares=[record])
    for path, handler in routes.items():
        app.router.add_route("*", path, handler)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield server, seen
    finally:
        await server.close()


def png_response(data: bytes) -> Handler:
    async def handler(_: web.Request) -> web.StreamResponse:
        return web.Response(body=data, content_type="image/png")

    return handler


def redirect_to(url: str, status: int = 302) -> Handler:
    async def handler(_: web.Request) -> web.StreamResponse:
        return web.Response(status=status, headers={"Location": url})

    return handler


async def _no_record(_: Any) -> None:
    return None


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """`cli.main` configures the `batch` logger; put it back for the tests that follow."""
    ours, root = logging.getLogger("batch"), logging.getLogger()
    saved = (ours.handlers[:], ours.level, ours.propagate, root.level)
    yield
    ours.handlers[:], ours.level, ours.propagate = saved[0], saved[1], saved[2]
    root.setLevel(saved[3])


def manifest_with_urls(tmp_path: Path, urls: list[str]) -> Manifest:
    """A manifest whose items take the given URLs as references.

    The manifest refuses anything but https URLs (rightly); our test servers speak plain
    http on loopback, so the items are loaded with asset ids and their references swapped.
    """
    jobs = [
        {"id": f"url-{n}", "prompt": f"edit {n}", "referenceImages": ["asset_placeholder"]}
        for n in range(len(urls))
    ]
    manifest = load_manifest(write_manifest(tmp_path, jobs))
    items = tuple(
        dataclasses.replace(item, references=(Reference("url", url),))
        for item, url in zip(manifest.items, urls, strict=True)
    )
    return dataclasses.replace(manifest, items=items)


# -- 1. credentials go to the API origin only -------------------------------------------


async def test_credentials_go_only_to_the_api_origin(simulator: Simulator, tmp_path: Path) -> None:
    """Every API call carries the credentials; CDN, part uploads and reference hosts get none."""
    big = make_png(256, 256, noisy=True)  # over the inline limit: a presigned part upload
    async with (
        serving({"/real.png": png_response(big)}) as (origin_b, seen_b),
        serving({"/ref.png": redirect_to(str(origin_b.make_url("/real.png")))}) as (
            origin_a,
            seen_a,
        ),
    ):
        manifest = manifest_with_urls(tmp_path, [str(origin_a.make_url("/ref.png"))])
        summary = await run_manifest(
            manifest,
            settings_for(simulator),
            RunOptions(out_dir=tmp_path / "out", poll=FAST_POLL),
        )
    assert summary.succeeded == 1, summary
    expected = settings_for(simulator).authorization()
    api = [r for r in simulator.request_log if r.origin == "api"]
    cdn = [r for r in simulator.request_log if r.origin == "cdn"]
    assert api and all(r.authorization == expected for r in api)
    assert cdn and all(r.authorization is None for r in cdn)
    assert any(r.method == "PUT" for r in cdn), "the big reference should go up in parts"
    assert len(seen_a.requests) == 1 and len(seen_b.requests) == 1
    assert seen_a.authorizations == [] and seen_b.authorizations == []


async def test_api_redirect_to_another_origin_is_not_followed(tmp_path: Path) -> None:
    """An API answering 301/302/307/308 to another origin is refused; that origin sees nothing."""

    async def jobs(_: web.Request) -> web.StreamResponse:
        return web.json_response({"job": {"jobId": "job_x", "status": "success"}})

    async with serving({"/v1/jobs/{job_id}": jobs}) as (elsewhere, seen):
        for status in (301, 302, 307, 308):
            target = str(elsewhere.make_url("/v1/jobs/job_x"))
            async with serving({"/v1/jobs/{job_id}": redirect_to(target, status)}) as (api, _):
                api_settings = ApiSettings(
                    base_url=str(api.make_url("/v1")),
                    api_key=SENTINEL_KEY,
                    api_secret=SENTINEL_SECRET,
                    retry=FAST_RETRY,
                )
                async with aiohttp.ClientSession() as session:
                    client = ScenarioClient(session, api_settings)
                    with pytest.raises(PermanentApiError, match="not forwarded on redirects"):
                        await client.get_job("job_x")
    assert seen.requests == []


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://api.cloud.scenario.com/v1", True),
        ("http://127.0.0.1:8750/v1", True),
        ("http://127.9.9.9/v1", True),
        ("http://localhost:8750/v1", True),
        ("http://[::1]:8750/v1", True),
        ("http://api.cloud.scenario.com/v1", False),
        ("http://10.0.0.5/v1", False),
        ("http://localhost.evil.example/v1", False),
        ("http://127.0.0.1.nip.io/v1", False),
        ("ftp://127.0.0.1/v1", False),
        (f"https://{SENTINEL_KEY}:{SENTINEL_SECRET}@api.cloud.scenario.com/v1", False),
        ("http://[::1/v1", False),
    ],
)
def test_plain_http_refused_except_to_loopback(
    url: str,
    allowed: bool,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    restore_logging: None,
) -> None:
    """Credentials go over https, or http to loopback only; the CLI refuses the rest with exit 2."""
    if allowed:
        ApiSettings(base_url=url, api_key="k" * 8, api_secret="s" * 8)
        return
    with pytest.raises(UsageError) as info:
        ApiSettings(base_url=url, api_key="k" * 8, api_secret="s" * 8)
    assert not any(s in str(info.value) for s in SENTINELS)

    from batch.cli.main import main

    manifest = write_manifest(tmp_path, [{"prompt": "p", "referenceImages": ["asset_x"]}])
    monkeypatch.setenv("SCENARIO_BASE_URL", url)
    monkeypatch.setenv("SCENARIO_SDK_API_KEY", SENTINEL_KEY)
    monkeypatch.setenv("SCENARIO_SDK_API_SECRET", SENTINEL_SECRET)
    assert main(["run", str(manifest), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "SCENARIO_BASE_URL" in err and not any(s in err for s in SENTINELS)
    assert not (tmp_path / "out" / LEDGER_NAME).exists()


# -- 2. credentials are written nowhere --------------------------------------------------


def _cli_env(sim: Simulator) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCENARIO_")}
    env.update(
        SCENARIO_BASE_URL=sim.base_url,
        SCENARIO_SDK_API_KEY=SENTINEL_KEY,
        SCENARIO_SDK_API_SECRET=SENTINEL_SECRET,
        PYTHONPATH=str(REPO),
    )
    return env


async def _cli(sim: Simulator, *args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "batch",
        *args,
        env=_cli_env(sim),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode() + err.decode()


def _leaks(data: bytes) -> list[str]:
    return [s for s in SENTINELS if s.encode() in data]


def _image(n: int) -> str:
    return f"images/img{n:04d}.png"


def _leaks_in_files(root: Path) -> dict[str, list[str]]:
    """Every file under `root` except the input images, and the credentials it holds."""
    files = [p for p in root.rglob("*") if p.is_file() and "images" not in p.parts]
    assert len(files) > 5, files
    return {str(p): _leaks(p.read_bytes()) for p in files if _leaks(p.read_bytes())}


async def test_credentials_are_written_nowhere(
    simulator_factory: SimulatorFactory, tmp_path: Path
) -> None:
    """A faulty run, its resume (-vv json logs), a 401 run and status: no credential anywhere."""
    from tests.pipeline_helpers import write_images

    write_images(tmp_path / "images", 3)
    jobs = [
        {
            "id": f"item-{n}",
            "prompt": f"edit {n}",
            "referenceImages": [f"images/img{n % 3:04d}.png"],
        }
        for n in range(6)
    ]
    manifest = str(write_manifest(tmp_path, jobs))
    faulty = await simulator_factory(
        api_key=SENTINEL_KEY,
        api_secret=SENTINEL_SECRET,
        seed=7,
        job_failure_rate=0.5,
        http500_rate=0.1,
        retry_after_s=0.01,
    )
    refusing = await simulator_factory(api_key="someone-else", api_secret="another-secret")
    out, refused_out = tmp_path / "out", tmp_path / "refused"
    streams: list[str] = []
    code, text = await _cli(faulty, "run", manifest, "--out", str(out), "-v", "--job-retries", "0")
    streams.append(text)
    assert code == 1, text  # some jobs failed for good
    code, text = await _cli(
        faulty, "run", manifest, "--out", str(out), "--retry-failed", "-vv", "--log-format", "json"
    )
    streams.append(text)
    code, text = await _cli(refusing, "run", manifest, "--out", str(refused_out), "-vv")
    streams.append(text)
    assert code == 2 and "HTTP 401" in text, text
    code, text = await _cli(refusing, "status", str(out), str(refused_out))
    streams.append(text)

    assert any(r.authorization == f"Basic {SENTINEL_TOKEN}" for r in faulty.request_log)
    assert (out / "report.html").exists() and (out / LEDGER_NAME).exists()
    assert _leaks_in_files(tmp_path) == {}
    for text in streams:
        assert _leaks(text.encode()) == [], text

    # Exception messages and tracebacks of the errors the client raises.
    settings_ = ApiSettings(refusing.base_url, SENTINEL_KEY, SENTINEL_SECRET, retry=FAST_RETRY)
    assert _leaks(repr(settings_).encode()) == []
    async with aiohttp.ClientSession() as session:
        with pytest.raises(CredentialsError) as info:
            await ScenarioClient(session, settings_).get_job("job_x")
    rendered = "".join(traceback.format_exception(info.value))
    assert _leaks(rendered.encode()) == []


@pytest.mark.parametrize("json_format", [False, True])
def test_log_lines_redact_credentials_everywhere(
    json_format: bool,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    restore_logging: None,
) -> None:
    """A credential in a message, its arguments, a traceback or a JSON event is redacted."""
    monkeypatch.setenv("SCENARIO_SDK_API_KEY", SENTINEL_KEY)
    monkeypatch.setenv("SCENARIO_SDK_API_SECRET", SENTINEL_SECRET)
    configure_logging(verbose=2, json_format=json_format)
    log = logging.getLogger("batch.test_security")
    log.debug("key %s secret %s", SENTINEL_KEY, SENTINEL_SECRET)
    log.info("header Authorization: Basic %s", SENTINEL_TOKEN, extra={"event": {"t": SENTINEL_KEY}})
    try:
        raise BatchError(f"boom with {SENTINEL_SECRET} and {SENTINEL_TOKEN}")
    except BatchError:
        log.exception("failed")
    err = capfd.readouterr().err
    assert err.count("[redacted]") >= (6 if json_format else 5), err
    assert _leaks(err.encode()) == [], err
    if json_format:
        assert all(json.loads(line) for line in err.splitlines() if line.startswith("{"))


# -- 3. every file stays inside the output directory -------------------------------------


def test_bulk_ids_from_hostile_file_names_are_safe_stems(tmp_path: Path) -> None:
    """Ids derived from hostile file names are safe stems, unique even ignoring case."""
    folder = tmp_path / "pics"
    folder.mkdir()
    names = ["..png", "...png", "-rf.png", "a b;rm.png", "Ünï©ødé.png", "x" * 200 + ".png"]
    names += ["Cat.png", "cat.png", "CAT.PNG", "$(id).png", "\\..\\x.png", "%2e%2e.png"]
    for name in names:
        Image.new("RGB", (4, 4)).save(folder / name, format="PNG")
    manifest_path = write_manifest(tmp_path, [{"id": "b", "prompt": "p", "images": "pics"}])
    ids = [item.id for item in load_manifest(manifest_path).items]
    assert len(ids) == len([n for n in names if not n.startswith(".")])  # hidden: skipped
    assert all(re.fullmatch(ID_PATTERN, i) and i not in (".", "..") for i in ids), ids
    assert len({i.casefold() for i in ids}) == len(ids), ids


async def test_planted_symlinks_are_never_followed(simulator: Simulator, tmp_path: Path) -> None:
    """Links planted at outputs, report, thumbs, ledger or lock never touch what they point at."""
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "thumbs").mkdir(parents=True)
    victims = {name: elsewhere / name for name in ("victim.png", "report.html", "ledger", "lock")}
    for victim in victims.values():
        victim.write_bytes(b"precious")
    from tests.pipeline_helpers import write_images

    write_images(tmp_path / "images", 1)
    job = {"id": "item", "prompt": "p", "referenceImages": ["images/img0000.png"]}
    manifest = load_manifest(write_manifest(tmp_path, [job]))

    def options(out: Path) -> RunOptions:
        return RunOptions(out_dir=out, poll=FAST_POLL)

    # Outputs, report and thumbnails: the run succeeds and replaces or skips the links.
    out = tmp_path / "out"
    out.mkdir()
    for extension in ("png", "jpg", "webp"):
        (out / f"item_0.{extension}").symlink_to(victims["victim.png"])
    (out / "report.html").symlink_to(victims["report.html"])
    (out / "thumbs").symlink_to(elsewhere / "thumbs", target_is_directory=True)
    summary = await run_manifest(manifest, settings_for(simulator), options(out))
    assert summary.succeeded == 1
    assert not (out / "item_0.png").is_symlink() and (out / "item_0.png").stat().st_size > 8
    assert not (out / "report.html").is_symlink()
    assert list((elsewhere / "thumbs").iterdir()) == []

    # Ledger and lock: refused with a clear error before anything is spent.
    generates = sum(r.is_generate for r in simulator.request_log)
    for name, target in (
        (LEDGER_NAME, victims["ledger"]),
        (LOCK_NAME, victims["lock"]),
        (LEDGER_NAME, elsewhere / "dangling"),
    ):
        planted = tmp_path / f"out-{name}-{target.name}"
        planted.mkdir()
        (planted / name).symlink_to(target)
        with pytest.raises(LedgerError, match="symbolic link"):
            await run_manifest(manifest, settings_for(simulator), options(planted))
    with pytest.raises(LedgerError, match="symbolic link"):
        LedgerWriter(tmp_path / f"out-{LEDGER_NAME}-ledger").open()
    assert sum(r.is_generate for r in simulator.request_log) == generates
    assert all(v.read_bytes() == b"precious" for v in victims.values())
    assert not (elsewhere / "dangling").exists()


# -- 4 and 5. input limits; reference images fetched from URLs ------------------------------


def _bomb_png() -> bytes:
    out = io.BytesIO()
    Image.new("L", (8000, 7000)).save(out, format="PNG")  # 56 MP in a few kB
    return out.getvalue()


ENDLESS_SENT: list[int] = [0]  # bytes the endless handler managed to write


async def _endless(request: web.Request) -> web.StreamResponse:
    """An image/png body with no Content-Length that never ends (for as long as it is read)."""
    response = web.StreamResponse(headers={"Content-Type": "image/png"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    ENDLESS_SENT[0] = 0
    with contextlib.suppress(ConnectionError):
        while ENDLESS_SENT[0] < 1024 * 2**20:
            await response.write(b"\x89PNG" + b"\0" * (64 * 1024 - 4))
            ENDLESS_SENT[0] += 64 * 1024
    return response


async def _declared_huge(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "image/png"})
    response.content_length = 10 * 2**30
    await response.prepare(request)
    return response


async def _html(_: web.Request) -> web.StreamResponse:
    return web.Response(text="<html>login</html>", content_type="text/html")


async def _text_as_png(_: web.Request) -> web.StreamResponse:
    return web.Response(body=b"not an image at all", content_type="image/png")


async def _not_found(_: web.Request) -> web.StreamResponse:
    return web.Response(status=404)


async def _loop(request: web.Request) -> web.StreamResponse:
    return web.Response(status=302, headers={"Location": str(request.url)})


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/endless", "exceeds 262144 bytes"),
        ("/huge", "is 10737418240 bytes, over the limit"),
        ("/html", "not an image (Content-Type 'text/html')"),
        ("/fake", "not a readable image"),
        ("/bomb", "must be at most 50,000,000 pixels, got 8000x7000"),
        ("/loop", "more than 3 redirects"),
        ("/to-file", "refused a redirect from http to file"),
        ("/missing", "answered HTTP 404"),
    ],
)
async def test_reference_urls_are_fetched_defensively(path: str, message: str) -> None:
    """Size (streamed or declared), type, pixels and redirects are checked; no credentials go."""
    routes: dict[str, Handler] = {
        "/endless": _endless,
        "/huge": _declared_huge,
        "/html": _html,
        "/fake": _text_as_png,
        "/bomb": png_response(_bomb_png()),
        "/loop": _loop,
        "/to-file": redirect_to("file:///etc/passwd"),
        "/missing": _not_found,
    }
    async with serving(routes) as (server, seen), aiohttp.ClientSession() as session:
        api = ApiSettings("http://127.0.0.1:9/v1", SENTINEL_KEY, SENTINEL_SECRET)
        references = References(
            ScenarioClient(session, api), session, {}, _no_record, max_bytes=256 * 1024
        )
        reference = Reference("url", str(server.make_url(path)))
        with pytest.raises(PermanentApiError) as info:
            await asyncio.wait_for(references.asset_id(reference), timeout=10)
        await asyncio.sleep(0)  # let the endless handler see the closed connection
    assert message in str(info.value), info.value
    assert seen.authorizations == []
    assert len(seen.requests) == (4 if path == "/loop" else 1)
    assert references.uploads == 0
    if path == "/endless":
        assert ENDLESS_SENT[0] < 64 * 2**20  # cut off: nowhere near the 1 GB on offer


# -- 6. the report escapes what came from a manifest or the API ---------------------------


async def test_report_escapes_manifest_and_api_strings(
    simulator_factory: SimulatorFactory, tmp_path: Path
) -> None:
    """Hostile prompts, API errors, hints, job and asset ids and file names show as text."""
    from batch.report.page import write_report

    sim = await simulator_factory(job_failure_rate=1.0)
    from tests.pipeline_helpers import write_images

    write_images(tmp_path / "images", 1)
    jobs = [
        {"id": f"h{n}", "prompt": text, "referenceImages": ["images/img0000.png"]}
        for n, text in enumerate(HOSTILE)
    ]
    manifest = load_manifest(write_manifest(tmp_path, jobs))
    out = tmp_path / "out"
    summary = await run_manifest(manifest, settings_for(sim), RunOptions(out, poll=FAST_POLL))
    assert summary.failed == len(HOSTILE)
    writer = LedgerWriter(out)
    writer.open()
    for n, text in enumerate(HOSTILE):  # what a hostile API could put in the ledger
        writer.append_now(
            {
                "type": "item",
                "id": f"h{n}",
                "fp": manifest.items[n].fingerprint,
                "state": "failed",
                "jobId": text,
                "assetIds": [text],
                "error": text,
                "hint": text,
                "files": [{"path": text, "sha256": text, "size": 1, "assetId": text}],
            }
        )
    writer.close()
    page = write_report(out, manifest, title=HOSTILE[0]).read_text()
    for text in HOSTILE:
        assert text not in page, text
    assert page.count("&lt;script&gt;alert(") >= 2
    assert "<script>alert" not in page and "onerror=alert(1)>" not in page


# -- 7. fuzzing the loader with YAML's own features ---------------------------------------

YAML_TOKENS = st.sampled_from(
    [
        "jobs:",
        "defaults:",
        "prompt:",
        "referenceImages:",
        "images:",
        "id:",
        "seed:",
        "- ",
        "  ",
        "\n",
        "&a ",
        "*a",
        "&b ",
        "*b",
        "<<: *a",
        "!!str ",
        "!!int ",
        "!!binary ",
        "!!python/object/apply:os.system ['true']",
        "!custom ",
        "---\n",
        "...\n",
        "%YAML 1.1\n",
        "%TAG ! tag:x,2000:\n",
        "? ",
        ": ",
        "|\n",
        ">-\n",
        "[",
        "]",
        "{",
        "}",
        ",",
        "'",
        '"',
        "#",
        "asset_a",
        "../x",
        "https://x.y/z.png",
        "1e400",
        "0x1F",
        ".nan",
        "~",
        "\t",
        "\0",
        "\ufeff",
    ]
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(YAML_TOKENS, max_size=40).map("".join))
def test_fuzz_yaml_features_only_raise_manifest_error(tmp_path: Path, text: str) -> None:
    """Anchors, aliases, merge keys, tags, directives and documents: ManifestError or a manifest."""
    path = tmp_path / "fuzz.yaml"
    path.write_text(text, encoding="utf-8")
    with contextlib.suppress(ManifestError):
        load_manifest(path, check_files=False)


async def test_server_echoing_credentials_does_not_get_them_recorded(tmp_path: Path) -> None:
    """An API error message that echoes the credentials is scrubbed before anyone sees it."""
    from aiohttp import web

    from batch.api.client import ScenarioClient
    from batch.api.settings import ApiSettings
    from batch.errors import PermanentApiError

    async def echo(request: web.Request) -> web.Response:
        return web.json_response(
            {"message": f"bad header {request.headers.get('Authorization')} for {SENTINEL_KEY}"},
            status=400,
        )

    app = web.Application()
    app.router.add_get("/v1/jobs/{job}", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    settings = ApiSettings(
        base_url=f"http://127.0.0.1:{port}/v1", api_key=SENTINEL_KEY, api_secret=SENTINEL_SECRET
    )
    try:
        async with aiohttp.ClientSession() as session:
            client = ScenarioClient(session, settings)
            with pytest.raises(PermanentApiError) as caught:
                await client.get_job("job_x")
    finally:
        await runner.cleanup()
    text = str(caught.value)
    assert "[redacted]" in text
    assert all(secret not in text for secret in settings.secrets())
