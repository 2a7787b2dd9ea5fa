"""`scenario-batch simulate --port P` serves an API the official SDK uses without errors."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import socket
import sys
from pathlib import Path

import pytest
from scenario_sdk import AsyncScenario

from tests.conftest import make_png

REPO = Path(__file__).resolve().parents[1]


def _free_port_pair() -> int:
    for _ in range(50):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
        with socket.socket() as second:
            try:
                second.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise AssertionError("no two free adjacent ports")


async def test_simulate_command_serves_the_official_sdk() -> None:
    """The CLI's simulator: upload, generate, poll to success and download through the SDK."""
    port = _free_port_pair()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "batch",
        "simulate",
        "--port",
        str(port),
        "--latency",
        "0.2",
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        banner = await asyncio.wait_for(process.stdout.readline(), timeout=30)
        assert f"127.0.0.1:{port}" in banner.decode()
        async with AsyncScenario(
            base_url=f"http://127.0.0.1:{port}/v1",
            api_key="k",
            api_secret="s",
            max_retries=0,
            _strict_response_validation=True,
        ) as sdk:
            image = base64.b64encode(make_png()).decode()
            asset = (await sdk.assets.upload(name="ref.png", image=image)).asset
            started = await sdk.generate.run_model(
                "model_flux-kontext-editing",
                body={"referenceImages": [asset.id], "prompt": "make it blue"},
            )
            job = started.job
            for _ in range(100):
                job = (await sdk.jobs.retrieve(job.job_id)).job
                if job.status == "success":
                    break
                await asyncio.sleep(0.1)
            assert job.status == "success" and job.metadata.asset_ids
            output = (await sdk.assets.retrieve(job.metadata.asset_ids[0])).asset
            assert output.url and f":{port + 1}/" in output.url
    finally:
        process.send_signal(signal.SIGINT)
        await asyncio.wait_for(process.wait(), timeout=15)
    assert process.returncode == 0


async def test_simulate_tls_serves_the_official_sdk_trusting_its_ca(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`simulate --tls --ca-file F --api-rtt 0.05 --distribution lognormal`: https API and CDN
    that the official SDK (httpx, reading SSL_CERT_FILE) verifies and uses."""
    port = _free_port_pair()
    ca_file = tmp_path / "ca.pem"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "batch",
        "simulate",
        "--port",
        str(port),
        "--latency",
        "0.2",
        "--tls",
        "--ca-file",
        str(ca_file),
        "--api-rtt",
        "0.05",
        "--cdn-rtt",
        "0.05",
        "--distribution",
        "lognormal",
        "--sigma",
        "0.6",
        "--short-page-rate",
        "0.2",
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        ca_line = (await asyncio.wait_for(process.stdout.readline(), timeout=30)).decode()
        banner = (await asyncio.wait_for(process.stdout.readline(), timeout=30)).decode()
        assert f"SSL_CERT_FILE={ca_file}" in ca_line and ca_file.exists()
        assert f"https://127.0.0.1:{port}/v1" in banner
        monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
        async with AsyncScenario(
            base_url=f"https://127.0.0.1:{port}/v1",
            api_key="k",
            api_secret="s",
            max_retries=0,
            _strict_response_validation=True,
        ) as sdk:
            image = base64.b64encode(make_png()).decode()
            asset = (await sdk.assets.upload(name="ref.png", image=image)).asset
            assert asset.url and asset.url.startswith(f"https://127.0.0.1:{port + 1}/")
            listed = await sdk.jobs.list()
            assert listed.jobs == []
    finally:
        process.send_signal(signal.SIGINT)
        await asyncio.wait_for(process.wait(), timeout=15)
    assert process.returncode == 0


def test_simulate_refuses_bad_knobs_with_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    """A negative round trip: exit 2 and a message naming the knob, no traceback."""
    from batch.cli import main as cli

    assert cli.main(["simulate", "--api-rtt", "-1"]) == 2
    assert "api_rtt_s" in capsys.readouterr().err
