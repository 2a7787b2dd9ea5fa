"""The real path: https with a private CA, through a real forward proxy (proxy.py).

The proxy is the maintained `proxy.py` package run as its own process; its access log
says which tunnels it opened (`CONNECT host:port`), so the tests see where traffic went.
"""

from __future__ import annotations

import asyncio
import base64
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import yarl

from batch.api.network import NetworkSettings
from batch.cli import main as cli
from batch.errors import DownloadError, UsageError
from batch.run.outputs import fetch_output
from batch.simulator import Simulator, make_identity, running_simulator
from batch.simulator.models import SEEDREAM
from tests.conftest import FAST, TEST_API_KEY, TEST_API_SECRET, SimulatorFactory
from tests.pipeline_helpers import assert_outputs_intact, write_images, write_manifest
from tests.tls_helpers import shared_ca_file, shared_tls_identity


@dataclass
class ForwardProxy:
    url: str
    log: Path

    def tunnels(self) -> list[str]:
        """`host:port` of every CONNECT the proxy served (its access log)."""
        text = self.log.read_text() if self.log.exists() else ""
        return [
            line.split(" - CONNECT ")[1].split(" ")[0]
            for line in text.splitlines()
            if " - CONNECT " in line
        ]


def _start_proxy(folder: Path, *extra: str) -> Iterator[ForwardProxy]:
    folder.mkdir(parents=True, exist_ok=True)
    port_file, log = folder / "port", folder / "access.log"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "proxy",
            "--hostname",
            "127.0.0.1",
            "--port",
            "0",
            "--port-file",
            str(port_file),
            "--num-workers",
            "1",
            "--num-acceptors",
            "1",
            "--log-level",
            "INFO",
            "--log-file",
            str(log),
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("proxy.py did not start")
            time.sleep(0.05)
        yield ForwardProxy(f"http://127.0.0.1:{port_file.read_text().strip()}", log)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def forward_proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ForwardProxy]:
    """proxy.py on a free loopback port, open to all."""
    yield from _start_proxy(tmp_path_factory.mktemp("proxy"))


@pytest.fixture(scope="module")
def guarded_proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ForwardProxy]:
    """proxy.py that asks for Basic credentials proxy-user:proxy-pass (407 without them)."""
    yield from _start_proxy(
        tmp_path_factory.mktemp("guarded"), "--basic-auth", "proxy-user:proxy-pass"
    )


def _env(monkeypatch: pytest.MonkeyPatch, sim: Simulator, **extra: str) -> None:
    monkeypatch.setenv("SCENARIO_BASE_URL", sim.base_url)
    monkeypatch.setenv("SCENARIO_SDK_API_KEY", TEST_API_KEY)
    monkeypatch.setenv("SCENARIO_SDK_API_SECRET", TEST_API_SECRET)
    monkeypatch.delenv("SCENARIO_PROJECT_ID", raising=False)
    monkeypatch.setenv("SSL_CERT_FILE", str(shared_ca_file()))
    for name, value in extra.items():
        monkeypatch.setenv(name, value)


def _manifest(folder: Path, count: int = 6) -> Path:
    write_images(folder / "images", 3)
    jobs = [
        {"prompt": f"net {n}", "referenceImages": [f"images/img{n % 3:04d}.png"]}
        for n in range(count)
    ]
    return write_manifest(folder, jobs)


async def _cli_run(manifest: Path, out: Path) -> int:
    return await asyncio.to_thread(cli.main, ["run", str(manifest), "--out", str(out), "-q"])


def _hostport(url: str) -> str:
    parsed = yarl.URL(url)
    return f"{parsed.host}:{parsed.port}"


async def _tunnels_seen(proxy: ForwardProxy, wanted: set[str]) -> list[str]:
    """The proxy logs a tunnel when it closes: wait a little for the lines to land."""
    for _ in range(100):
        if wanted <= set(proxy.tunnels()):
            break
        await asyncio.sleep(0.05)
    return proxy.tunnels()


# -- settings from the environment ----------------------------------------------------


def test_proxies_are_read_as_the_official_sdk_reads_them() -> None:
    """Lower-case names win, ALL_PROXY fills in, a bare host:port means http://, and
    credentials in the URL become proxy credentials that no message shows."""
    network = NetworkSettings.from_env(
        {
            "HTTPS_PROXY": "http://upper:3128",
            "https_proxy": "http://alice:s%40cret@lower:3128",
            "ALL_PROXY": "fallback:8080",
            "NO_PROXY": " .corp.example, 10.0.0.0/8 ,localhost",
        }
    )
    https = network.proxies["https"]
    assert str(https.url) == "http://lower:3128" and https.source == "https_proxy"
    assert https.authorization == "Basic " + base64.b64encode(b"alice:s@cret").decode()
    assert "s@cret" not in str(https) and "s%40cret" not in repr(network)
    assert str(network.proxies["http"].url) == "http://fallback:8080"
    assert network.no_proxy == (".corp.example", "10.0.0.0/8", "localhost")


@pytest.mark.parametrize(
    ("host", "bypassed"),
    [
        ("api.corp.example", True),
        ("corp.example", True),
        ("notcorp.example", False),
        ("10.1.2.3", True),
        ("11.1.2.3", False),
        ("localhost", True),
        ("api.cloud.scenario.com", False),
    ],
)
def test_no_proxy_names_hosts_domains_and_networks(host: str, bypassed: bool) -> None:
    """NO_PROXY covers a host, any host in a domain (with or without the dot), an IP network."""
    network = NetworkSettings.from_env(
        {"HTTPS_PROXY": "http://p:1", "NO_PROXY": ".corp.example,10.0.0.0/8,localhost"}
    )
    assert network.bypasses(host) is bypassed
    assert (network.proxy_for(yarl.URL(f"https://{host}/v1")) is None) is bypassed


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"SSL_CERT_FILE": "/nonexistent/ca.pem"}, "SSL_CERT_FILE=/nonexistent/ca.pem"),
        ({"HTTPS_PROXY": "https://proxy:3128"}, "HTTPS_PROXY=https://proxy:3128"),
        ({"HTTPS_PROXY": "socks5://u:secret@proxy:1080"}, "HTTPS_PROXY=socks5://proxy:1080"),
    ],
)
def test_unusable_network_settings_are_a_usage_error(env: dict[str, str], named: str) -> None:
    """A CA file that cannot be read, or a proxy we cannot speak to: exit 2 naming the
    variable (and never echoing a password)."""
    with pytest.raises(UsageError) as caught:
        NetworkSettings.from_env(env)
    assert named in str(caught.value) and "secret" not in str(caught.value)


# -- https, certificates --------------------------------------------------------------


https_only = pytest.mark.parametrize("transport", ["https"], indirect=True)


@https_only
async def test_https_run_trusts_the_ca_in_ssl_cert_file(
    simulator_factory: SimulatorFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over https with a private CA in SSL_CERT_FILE (API and CDN): every item lands."""
    sim = await simulator_factory()
    _env(monkeypatch, sim)
    out = tmp_path / "out"
    assert await _cli_run(_manifest(tmp_path, 12), out) == 0
    assert sim.base_url.startswith("https://") and sim.cdn_url.startswith("https://")
    assert assert_outputs_intact(out) == 12
    assert len(sim.records(origin="cdn")) == 12


@pytest.mark.parametrize("wrong", ["unknown CA", "wrong host"])
async def test_a_certificate_that_fails_verification_stops_at_once_with_exit_2(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    wrong: str,
) -> None:
    """A certificate from a CA the client does not trust, or for another host: exit 2 within
    seconds, one line naming the host and SSL_CERT_FILE, and no request reaches the API
    (nothing spent), instead of probing an "outage" for 10 minutes."""
    if wrong == "unknown CA":
        identity, trusted = shared_tls_identity(), make_identity()
    else:
        identity = make_identity(("api.elsewhere.test",))
        trusted = identity
    ca = tmp_path / "ca.pem"
    ca.write_bytes(trusted.ca_pem)
    async with running_simulator(FAST, tls=identity) as sim:
        _env(monkeypatch, sim, SSL_CERT_FILE=str(ca))
        started = time.monotonic()
        code = await _cli_run(_manifest(tmp_path), tmp_path / "out")
        elapsed = time.monotonic() - started
    err = capsys.readouterr().err
    assert code == 2, err
    assert elapsed < 20
    lines = [line for line in err.splitlines() if line.startswith("scenario-batch:")]
    assert len(lines) == 1
    assert _hostport(sim.base_url) in lines[0] and "SSL_CERT_FILE" in lines[0]
    assert not sim.request_log and not sim.jobs


# -- through a forward proxy -----------------------------------------------------------


@https_only
async def test_https_proxy_carries_api_and_cdn_traffic(
    simulator_factory: SimulatorFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    forward_proxy: ForwardProxy,
) -> None:
    """HTTPS_PROXY: the proxy opens the tunnels to the API and the CDN (a locked-down network
    allows nothing else); tunnels are reused (each carries several requests); the API's
    credentials never reach the CDN."""
    sim = await simulator_factory()
    _env(monkeypatch, sim, HTTPS_PROXY=forward_proxy.url)
    out = tmp_path / "out"
    before = len(forward_proxy.tunnels())
    assert await _cli_run(_manifest(tmp_path, 30), out) == 0
    assert assert_outputs_intact(out) == 30
    api, cdn = _hostport(sim.base_url), _hostport(sim.cdn_url)
    tunnels = (await _tunnels_seen(forward_proxy, {api, cdn}))[before:]
    assert api in tunnels and cdn in tunnels
    assert set(tunnels) == {api, cdn}
    # Connections are reused: the API's many calls ride a few tunnels; downloads come in
    # bursts (a get-bulk's worth at once), so the CDN's tunnels follow the bursts' size.
    api_requests = len(sim.records(origin="api"))
    assert tunnels.count(api) < api_requests / 3, (tunnels.count(api), api_requests)
    assert len(tunnels) < len(sim.request_log) / 2, (len(tunnels), len(sim.request_log))
    assert not [r for r in sim.records(origin="cdn") if r.auth_sent]


@https_only
async def test_no_proxy_goes_around_the_proxy(
    simulator_factory: SimulatorFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    forward_proxy: ForwardProxy,
) -> None:
    """NO_PROXY naming the API's host: the run succeeds and the proxy opens no tunnel."""
    sim = await simulator_factory()
    _env(monkeypatch, sim, HTTPS_PROXY=forward_proxy.url, NO_PROXY="localhost,127.0.0.0/8")
    before = len(forward_proxy.tunnels())
    assert await _cli_run(_manifest(tmp_path), tmp_path / "out") == 0
    await asyncio.sleep(0.3)
    assert forward_proxy.tunnels()[before:] == []


@https_only
async def test_a_proxy_that_wants_credentials_gets_only_those_of_its_url(
    simulator_factory: SimulatorFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    guarded_proxy: ForwardProxy,
) -> None:
    """A proxy answering 407: exit 2 at once saying how to give proxy credentials (the API
    key is never offered to it), nothing spent; with user:password in the URL, the run works."""
    sim = await simulator_factory()
    _env(monkeypatch, sim, HTTPS_PROXY=guarded_proxy.url)
    assert await _cli_run(_manifest(tmp_path), tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "407" in err and "http://user:password@host:port" in err
    assert not sim.request_log

    with_credentials = guarded_proxy.url.replace("http://", "http://proxy-user:proxy-pass@")
    monkeypatch.setenv("HTTPS_PROXY", with_credentials)
    assert await _cli_run(_manifest(tmp_path), tmp_path / "out") == 0
    assert "proxy-pass" not in capsys.readouterr().err
    assert len(sim.jobs) == 6


@https_only
async def test_an_unreachable_proxy_stops_at_once_with_exit_2(
    simulator_factory: SimulatorFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    unused_tcp_port: int,
) -> None:
    """HTTPS_PROXY naming a port where nothing listens: exit 2 naming the proxy and the
    variable, nothing reaches the API."""
    sim = await simulator_factory()
    _env(monkeypatch, sim, HTTPS_PROXY=f"http://127.0.0.1:{unused_tcp_port}")
    assert await _cli_run(_manifest(tmp_path), tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert f"127.0.0.1:{unused_tcp_port}" in err and "HTTPS_PROXY" in err
    assert not sim.request_log


async def test_http_proxy_carries_plain_http(
    simulator_factory: SimulatorFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    forward_proxy: ForwardProxy,
) -> None:
    """HTTP_PROXY (the simulator over plain http): API and CDN calls go through the proxy.

    proxy.py logs one line per connection, naming its first request only (a kept-alive
    connection's later requests are not logged), so the check is by origin, not by call."""
    sim = await simulator_factory()
    _env(monkeypatch, sim, HTTP_PROXY=forward_proxy.url)
    assert await _cli_run(_manifest(tmp_path), tmp_path / "out") == 0
    wanted = {f" {_hostport(sim.base_url)}/v1/", f" {_hostport(sim.cdn_url)}/"}

    def seen() -> set[str]:
        return {origin for origin in wanted for line in _log_lines(forward_proxy) if origin in line}

    for _ in range(100):
        if seen() == wanted:
            break
        await asyncio.sleep(0.05)
    assert seen() == wanted


def _log_lines(proxy: ForwardProxy) -> list[str]:
    return proxy.log.read_text().splitlines() if proxy.log.exists() else []


@https_only
async def test_a_cdn_certificate_that_fails_verification_is_not_retried(
    simulator_factory: SimulatorFactory, tmp_path: Path, png_bytes: Callable[..., bytes]
) -> None:
    """A CDN certificate from an unknown CA: the download fails at once (no retries, no fresh
    URL) with a DownloadError naming the host and SSL_CERT_FILE; no file is left behind."""
    sim = await simulator_factory()
    refreshed = 0

    async def refresh() -> str:
        nonlocal refreshed
        refreshed += 1
        return url

    async with aiohttp.ClientSession() as http:  # the system's CAs only
        async with http.post(
            f"{sim.base_url}/assets",
            json={"image": base64.b64encode(png_bytes()).decode(), "name": "a.png"},
            headers={"Authorization": "Basic " + base64.b64encode(b"k:s").decode()},
            ssl=shared_tls_identity().client_context(),
        ) as response:
            url = (await response.json())["asset"]["url"]
        with pytest.raises(DownloadError) as caught:
            await fetch_output(http, url, tmp_path, "out", refresh_url=refresh, base_wait_s=0)
    assert "SSL_CERT_FILE" in str(caught.value) and _hostport(sim.cdn_url) in str(caught.value)
    assert refreshed == 0 and not await asyncio.to_thread(lambda: list(tmp_path.iterdir()))
    assert not sim.records(origin="cdn")


@https_only
@pytest.mark.parametrize("user_info", ["", "proxy-user:proxy-pass@"])
async def test_the_proxy_sees_only_its_own_credentials(
    simulator_factory: SimulatorFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    user_info: str,
) -> None:
    """What reaches a proxy when a tunnel opens: no credentials at all, or exactly those of
    its URL; never the API key or secret (a listener records each CONNECT's head, then
    refuses it)."""
    heads: list[bytes] = []

    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    listener = await asyncio.start_server(refuse, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    sim = await simulator_factory()
    _env(monkeypatch, sim, HTTPS_PROXY=f"http://{user_info}127.0.0.1:{port}")
    async with listener:
        assert await _cli_run(_manifest(tmp_path), tmp_path / "out") == 2
    assert heads and all(head.startswith(b"CONNECT 127.0.0.1:") for head in heads)
    for head in heads:
        text = head.decode().lower()
        assert TEST_API_KEY.lower() not in text and TEST_API_SECRET.lower() not in text
        api_token = base64.b64encode(f"{TEST_API_KEY}:{TEST_API_SECRET}".encode()).decode()
        assert api_token.lower() not in text and "\r\nauthorization:" not in text
        expected = base64.b64encode(b"proxy-user:proxy-pass").decode().lower()
        assert ("proxy-authorization: basic " + expected in text) is bool(user_info)
        assert ("proxy-authorization" in text) is bool(user_info)
    assert not sim.request_log


@https_only
async def test_a_model_look_up_takes_the_same_way_out(
    simulator_factory: SimulatorFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    forward_proxy: ForwardProxy,
) -> None:
    """`validate` of another model's manifest fetches its inputs through HTTPS_PROXY,
    trusting SSL_CERT_FILE; with a CA it does not trust, exit 2 naming the host."""
    sim = await simulator_factory()
    write_images(tmp_path / "images", 2)
    path = write_manifest(tmp_path, [{"prompt": "p", "images": "images"}], model=SEEDREAM)
    _env(monkeypatch, sim, HTTPS_PROXY=forward_proxy.url, SSL_CERT_FILE=str(tmp_path / "x.pem"))
    (tmp_path / "x.pem").write_bytes(make_identity().ca_pem)
    assert await asyncio.to_thread(cli.main, ["validate", str(path)]) == 2
    assert _hostport(sim.base_url) in capsys.readouterr().err and not sim.request_log

    monkeypatch.setenv("SSL_CERT_FILE", str(shared_ca_file()))
    assert await asyncio.to_thread(cli.main, ["validate", str(path)]) == 0
    assert [r.path for r in sim.request_log] == [f"/v1/models/{SEEDREAM}"]
    assert _hostport(sim.base_url) in await _tunnels_seen(forward_proxy, {_hostport(sim.base_url)})
