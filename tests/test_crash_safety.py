"""Crash safety of the real CLI: kill -9 at random instants, SIGTERM, dropped submits."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from batch.ledger.journal import load_state
from batch.simulator import Simulator
from tests.conftest import (
    TEST_API_KEY,
    TEST_API_SECRET,
    SimulatorFactory,
    over_http_and_https,
)
from tests.pipeline_helpers import (
    assert_outputs_intact,
    jobs_created_per_prompt,
    numbered_manifest,
    run,
    write_images,
    write_manifest,
)
from tests.tls_helpers import shared_ca_file

REPO = Path(__file__).resolve().parents[1]


def _env(sim: Simulator) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        SCENARIO_BASE_URL=sim.base_url,
        SCENARIO_SDK_API_KEY=TEST_API_KEY,
        SCENARIO_SDK_API_SECRET=TEST_API_SECRET,
        PYTHONPATH=str(REPO),
    )
    env.pop("SCENARIO_PROJECT_ID", None)
    if sim.tls is not None:
        env["SSL_CERT_FILE"] = str(shared_ca_file())
    return env


async def _start_cli(sim: Simulator, *args: str, **options: Any) -> asyncio.subprocess.Process:
    """`scenario-batch run ARGS` in a child process (`options`: of create_subprocess_exec)."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "batch",
        "run",
        *args,
        env=_env(sim),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        **options,
    )


def _crash_manifest(tmp_path: Path, count: int, concurrency: int = 6) -> Path:
    return numbered_manifest(tmp_path, count, "crash edit", concurrency=concurrency)


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_kill_minus_nine_at_random_instants_never_pays_twice(
    simulator_factory: SimulatorFactory, tmp_path: Path
) -> None:
    """SIGKILL at 20+ seeded instants, then resume until done: one job per item, files intact."""
    sim = await simulator_factory(job_latency_s=0.5, job_latency_jitter=0.5)
    manifest = _crash_manifest(tmp_path, 60, concurrency=4)
    out = tmp_path / "out"
    schedule = random.Random(20261125)
    kills = 0
    for _ in range(60):
        process = await _start_cli(sim, str(manifest), "--out", str(out), "--job-timeout", "60")
        if kills < 22:
            delay = schedule.uniform(0.4, 1.6)
            try:
                await asyncio.wait_for(process.wait(), timeout=delay)
            except TimeoutError:
                process.kill()
                await process.wait()
                kills += 1
                continue
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=120)
        if process.returncode == 0:
            break
        assert process.returncode == 1 or process.returncode < 0, stderr.decode()[-2000:]
    assert kills >= 20
    final = await _start_cli(sim, str(manifest), "--out", str(out))
    _, stderr = await asyncio.wait_for(final.communicate(), timeout=120)
    assert final.returncode == 0, stderr.decode()[-2000:]

    per_prompt = jobs_created_per_prompt(sim)
    assert len(per_prompt) == 60
    assert set(per_prompt.values()) == {1}, {k: v for k, v in per_prompt.items() if v != 1}
    state = load_state(out)
    assert all(record.state == "succeeded" for record in state.items.values())
    assert assert_outputs_intact(out) == sum(1 + n % 2 for n in range(60))


@over_http_and_https
async def test_sigterm_exits_130_and_rerun_completes(
    simulator_factory: SimulatorFactory, tmp_path: Path
) -> None:
    """SIGTERM mid-run: exit 130, no partial files; the rerun finishes with no duplicate job
    (over https too: the CLI trusts the CA given in SSL_CERT_FILE)."""
    sim = await simulator_factory(job_latency_s=1.0)
    manifest = _crash_manifest(tmp_path, 12)
    out = tmp_path / "out"
    process = await _start_cli(sim, str(manifest), "--out", str(out))
    for _ in range(200):  # wait until some jobs are in flight
        await asyncio.sleep(0.05)
        if len(sim.jobs) >= 3:
            break
    process.send_signal(signal.SIGTERM)
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 130, stderr.decode()[-2000:]
    assert b"resume" in stderr
    assert not list(out.glob(".partial-*"))
    in_flight = [r for r in load_state(out).items.values() if r.state == "submitted"]
    assert in_flight, "jobs in flight at the signal are recorded with their job ids"
    assert all(r.job_id for r in in_flight)

    rerun = await _start_cli(sim, str(manifest), "--out", str(out))
    _, stderr = await asyncio.wait_for(rerun.communicate(), timeout=60)
    assert rerun.returncode == 0, stderr.decode()[-2000:]
    assert set(jobs_created_per_prompt(sim).values()) == {1}
    assert_outputs_intact(out)


async def test_dropped_submit_answers_create_no_duplicates(
    simulator_factory: SimulatorFactory, tmp_path: Path
) -> None:
    """With 10% of generate answers dropped after the job is created, no item gets two jobs."""
    sim = await simulator_factory(job_latency_s=0.1, drop_after_submit_rate=0.1, seed=3)
    write_images(tmp_path / "images", 4)
    jobs = [
        {"prompt": f"drop {n}", "referenceImages": [f"images/img{n % 4:04d}.png"]}
        for n in range(80)
    ]
    manifest = write_manifest(tmp_path, jobs)
    out = tmp_path / "out"

    summary = await run(sim, manifest, out, concurrency=16)

    dropped = [r for r in sim.generate_calls() if r.status is None and r.job_id]
    assert dropped, "the knob dropped some answers"
    assert summary.succeeded == 80
    assert set(jobs_created_per_prompt(sim).values()) == {1}
    reconciled = [
        line for line in (out / "ledger.jsonl").read_text().splitlines() if '"reconciled"' in line
    ]
    assert len(reconciled) == len(dropped)
    assert_outputs_intact(out)


async def _until_jobs(sim: Simulator, count: int) -> None:
    for _ in range(400):
        await asyncio.sleep(0.05)
        if len(sim.jobs) >= count:
            return
    raise AssertionError("jobs never started")


async def test_cancel_on_interrupt_cancels_in_flight_jobs(
    simulator_factory: SimulatorFactory, tmp_path: Path
) -> None:
    """--cancel-on-interrupt: Ctrl-C cancels running jobs on the API; a rerun finishes all."""
    sim = await simulator_factory(job_latency_s=5.0)
    manifest = _crash_manifest(tmp_path, 4, concurrency=4)
    out = tmp_path / "out"
    process = await _start_cli(sim, str(manifest), "--out", str(out), "--cancel-on-interrupt")
    await _until_jobs(sim, 4)
    await asyncio.sleep(0.3)  # let the submits' answers arrive and be recorded
    process.send_signal(signal.SIGINT)
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 130, stderr.decode()[-2000:]
    cancels = [r for r in sim.request_log if r.path.endswith("/action") and r.status == 200]
    assert len(cancels) == 4
    assert {sim.job_state(job_id).status for job_id in sim.jobs} == {"canceled"}
    assert {r.state for r in load_state(out).items.values()} == {"planned"}


async def test_second_interrupt_exits_at_once_without_corruption(
    simulator_factory: SimulatorFactory, tmp_path: Path
) -> None:
    """Two Ctrl-C in a row: exit 130 at once; the ledger still loads and a rerun completes."""
    sim = await simulator_factory(job_latency_s=0.8)
    manifest = _crash_manifest(tmp_path, 8, concurrency=4)
    out = tmp_path / "out"
    process = await _start_cli(sim, str(manifest), "--out", str(out))
    await _until_jobs(sim, 2)
    process.send_signal(signal.SIGINT)
    process.send_signal(signal.SIGINT)
    await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 130
    load_state(out)  # readable
    rerun = await _start_cli(sim, str(manifest), "--out", str(out))
    _, stderr = await asyncio.wait_for(rerun.communicate(), timeout=60)
    assert rerun.returncode == 0, stderr.decode()[-2000:]
    assert set(jobs_created_per_prompt(sim).values()) == {1}
    assert_outputs_intact(out)


async def test_every_file_a_success_names_was_synced_before_the_success(
    simulator_factory: SimulatorFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Power loss, not kill -9: a `succeeded` line on disk must find its files' names on
    disk too. Downloads do not sync the directory after each rename; the ledger does,
    before it writes the records naming them. Checked by listing the directory at every
    directory fsync, with the ledger's size then."""
    import batch.ledger.journal
    import batch.run.outputs

    sim = await simulator_factory(job_latency_s=0.05, job_latency_jitter=0.5, seed=7)
    manifest = _crash_manifest(tmp_path, 40, concurrency=8)
    out = tmp_path / "out"
    real_fsync = batch.ledger.journal.fsync_directory
    syncs: list[tuple[frozenset[str], int]] = []  # (names listed, ledger size) at each

    def observed_fsync(directory: Path) -> None:
        ledger = directory / "ledger.jsonl"
        size = ledger.stat().st_size if ledger.exists() else 0
        syncs.append((frozenset(os.listdir(directory)), size))
        real_fsync(directory)

    def no_per_download_sync(directory: Path) -> None:
        raise AssertionError("a download synced the directory itself")

    monkeypatch.setattr(batch.ledger.journal, "fsync_directory", observed_fsync)
    monkeypatch.setattr(batch.run.outputs, "fsync_directory", no_per_download_sync)
    summary = await run(sim, manifest, out, concurrency=8)
    assert summary.succeeded == 40

    offset, checked = 0, 0
    for line in (out / "ledger.jsonl").read_bytes().splitlines(keepends=True):
        record = json.loads(line)
        for file in record.get("files", []):
            assert any(file["path"] in names and size <= offset for names, size in syncs), (
                f"{file['path']} was not synced before the line naming it"
            )
            checked += 1
        offset += len(line)
    assert checked == sum(1 + n % 2 for n in range(40))
    assert len(syncs) < checked  # shared: one sync covers the files of many records
