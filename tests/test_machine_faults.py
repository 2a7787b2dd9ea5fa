"""Real faults of the machine against the real CLI (issue 18): a small tmpfs that fills,
one mounted read-only, an output directory deleted mid-run, a low file limit.

Mounting needs root (CI here runs as root); those tests skip elsewhere, with the reason.
Each fault run ends with one line on stderr and no traceback; the rerun of the same
command completes with exactly one job per item and every file as the ledger says.
"""

from __future__ import annotations

import asyncio
import os
import re
import resource
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from batch.simulator import Simulator
from tests.conftest import SimulatorFactory, make_png
from tests.pipeline_helpers import assert_outputs_intact, jobs_created_per_prompt, write_manifest
from tests.test_crash_safety import _start_cli

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("mount") is None,
    reason="mounting a tmpfs needs root and mount(8)",
)


def _manifest(tmp_path: Path, count: int) -> Path:
    """Items whose outputs are ~150 KB each (noisy references: they do not compress)."""
    images = tmp_path / "images"
    images.mkdir()
    for n in range(4):
        (images / f"img{n}.png").write_bytes(
            make_png(320, 240, color=(n * 60, 40, 200), noisy=True)
        )
    jobs = [
        {
            "id": f"item-{n:02d}",
            "prompt": f"machine {n}",
            "referenceImages": [f"images/img{n % 4}.png"],
        }
        for n in range(count)
    ]
    return write_manifest(tmp_path, jobs)


async def _cli(
    sim: Simulator, *args: str, limits: tuple[int, int] | None = None
) -> tuple[int, str]:
    """Run `scenario-batch run ...` in a child process; its exit code and stderr."""

    def preexec() -> None:
        if limits is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, limits)

    process = await _start_cli(sim, *args, preexec_fn=preexec)
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode is not None
    return process.returncode, stderr.decode()


def _one_line(stderr: str) -> str:
    """The fault's one line: beside the run's own log lines (progress, the free-space
    warning), nothing else on stderr: no traceback, no echo of the fault per item."""
    assert "Traceback" not in stderr and "Errno" not in stderr, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.strip()]
    said = [line for line in lines if not _LOG_LINE.match(line)]
    assert len(said) == 1, stderr[-3000:]
    assert said[0].startswith("scenario-batch: stopped: "), said[0]
    return said[0]


_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (INFO|WARNING) ")


def _assert_done_once(sim: Simulator, out: Path, count: int) -> None:
    per_prompt = jobs_created_per_prompt(sim)
    assert len(per_prompt) == count and set(per_prompt.values()) == {1}, per_prompt
    assert assert_outputs_intact(out) == count


def _mount(target: Path, *options: str) -> None:
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", ",".join(options), "tmpfs", str(target)], check=True
    )


def _remount(target: Path, *options: str) -> None:
    subprocess.run(["mount", "-o", ",".join(("remount", *options)), str(target)], check=True)


@pytest.fixture
def mount_point(tmp_path: Path) -> Iterator[Path]:
    target = tmp_path / "out"
    target.mkdir()
    yield target
    subprocess.run(["umount", "-l", str(target)], check=False)


@needs_root
async def test_a_disk_that_fills_mid_run_stops_then_resumes(
    simulator_factory: SimulatorFactory, tmp_path: Path, mount_point: Path
) -> None:
    """A 1 MB tmpfs fills: exit 1, one line; grown, the same command finishes, no job twice."""
    sim = await simulator_factory(job_latency_s=0.1, output_max_px=256)
    # Enough jobs that the disk fills while some are still to send (outputs are fetched
    # a wave of jobs after they finish).
    manifest = _manifest(tmp_path, 40)
    _mount(mount_point, "size=1m")
    code, stderr = await _cli(sim, str(manifest), "--out", str(mount_point), "--concurrency", "4")
    assert code == 1, stderr[-3000:]
    line = _one_line(stderr)
    assert "No space left on device" in line and str(mount_point) in line
    generated = len(jobs_created_per_prompt(sim))
    assert 0 < generated < 40  # it stopped submitting

    _remount(mount_point, "size=64m")
    code, stderr = await _cli(sim, str(manifest), "--out", str(mount_point), "--concurrency", "4")
    assert code == 0, stderr[-3000:]
    _assert_done_once(sim, mount_point, 40)


@needs_root
async def test_a_read_only_output_directory_is_refused_before_spending(
    simulator_factory: SimulatorFactory, tmp_path: Path, mount_point: Path
) -> None:
    """A read-only mount: exit 2 and one line before any call; read-write, the run completes."""
    sim = await simulator_factory(job_latency_s=0.05)
    manifest = _manifest(tmp_path, 4)
    _mount(mount_point, "size=8m", "ro")
    code, stderr = await _cli(sim, str(manifest), "--out", str(mount_point))
    assert code == 2, stderr[-3000:]
    assert "Read-only file system" in _one_line(stderr)
    assert not [r for r in sim.request_log if r.origin == "api"]

    _remount(mount_point, "rw")
    code, stderr = await _cli(sim, str(manifest), "--out", str(mount_point))
    assert code == 0, stderr[-3000:]
    _assert_done_once(sim, mount_point, 4)


async def test_an_output_directory_deleted_mid_run_is_not_paid_for_twice(
    simulator_factory: SimulatorFactory, tmp_path: Path
) -> None:
    """Deleted under the run: exit 1, one line; the rerun adopts the jobs already bought."""
    sim = await simulator_factory(job_latency_s=1.0)
    manifest = _manifest(tmp_path, 24)
    out = tmp_path / "out"
    process = await _start_cli(sim, str(manifest), "--out", str(out), "--concurrency", "6")
    for _ in range(400):  # until some jobs ran and some are running
        await asyncio.sleep(0.05)
        if len(sim.jobs) >= 9:
            break
    for _ in range(100):  # the run writes meanwhile: a file may go (or come) mid-removal
        shutil.rmtree(out, ignore_errors=True)
        if not out.exists():
            break
    assert not out.exists()
    _, raw = await asyncio.wait_for(process.communicate(), timeout=60)
    stderr = raw.decode()
    assert process.returncode == 1, stderr[-3000:]
    assert "No such file or directory" in _one_line(stderr)
    bought = len(sim.jobs)

    code, stderr = await _cli(sim, str(manifest), "--out", str(out))
    assert code == 0, stderr[-3000:]
    assert f"adopted {bought} job(s)" in stderr
    _assert_done_once(sim, out, 24)


async def test_a_file_limit_too_low_for_the_concurrency_is_refused_naming_one_that_fits(
    simulator_factory: SimulatorFactory, tmp_path: Path
) -> None:
    """ulimit -n 48 with --concurrency 40: exit 2 before spending, naming a concurrency
    that fits; with that concurrency, under the same limit, every output is kept."""
    sim = await simulator_factory(job_latency_s=0.05)
    manifest = _manifest(tmp_path, 40)
    out = tmp_path / "out"
    code, stderr = await _cli(
        sim, str(manifest), "--out", str(out), "--concurrency", "40", limits=(48, 48)
    )
    assert code == 2, stderr[-3000:]
    match = re.search(r"--concurrency (\d+)", _one_line(stderr).split("Fix:")[1])
    assert match, stderr
    assert not [r for r in sim.request_log if r.is_generate]

    fits = match.group(1)
    code, stderr = await _cli(
        sim, str(manifest), "--out", str(out), "--concurrency", fits, limits=(48, 48)
    )
    assert code == 0, stderr[-3000:]
    _assert_done_once(sim, out, 40)


async def test_a_low_soft_file_limit_is_raised_to_the_hard_one(
    simulator_factory: SimulatorFactory, tmp_path: Path
) -> None:
    """Soft limit 64, hard 20,000, --concurrency 48: the run raises its limit and keeps all."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < 4096:
        pytest.skip(f"the hard open-file limit here is {hard}")
    sim = await simulator_factory(job_latency_s=0.05)
    manifest = _manifest(tmp_path, 80)
    out = tmp_path / "out"
    code, stderr = await _cli(
        sim, str(manifest), "--out", str(out), "--concurrency", "48", limits=(64, 4096)
    )
    assert code == 0, stderr[-3000:]
    _assert_done_once(sim, out, 80)


async def test_a_limit_short_of_full_speed_lowers_connections_and_downloads(
    simulator_factory: SimulatorFactory, tmp_path: Path
) -> None:
    """A limit that fits the jobs but not every connection: lowered, said, all kept."""
    sim = await simulator_factory(job_latency_s=0.05)
    manifest = _manifest(tmp_path, 40)
    out = tmp_path / "out"
    code, stderr = await _cli(
        sim, str(manifest), "--out", str(out), "--concurrency", "40", limits=(128, 128)
    )
    assert code == 0, stderr[-3000:]
    assert "the open-file limit is 128" in stderr
    _assert_done_once(sim, out, 40)
