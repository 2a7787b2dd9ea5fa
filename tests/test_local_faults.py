"""Faults of the machine, injected (issue 18): every write path fails in turn with ENOSPC,
EIO and EROFS. The run stops with one LocalFaultError, leaves no half-written file and a
ledger without a torn line, and the same run afterwards completes with one job per item.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
from pathlib import Path

import pytest

from batch.cli.main import main
from batch.errors import LocalFaultError
from batch.ledger.journal import load_state
from batch.run.preflight import warn_if_short_of_space
from batch.simulator import Simulator
from tests.conftest import SimulatorFactory
from tests.fs_shim import FaultyDisk
from tests.pipeline_helpers import (
    assert_outputs_intact,
    jobs_created_per_prompt,
    numbered_manifest,
    run,
)

ITEMS = 10

# (name, operation, path pattern under tmp_path, matching calls that still succeed)
SITES = [
    ("ledger-append", "write", r"^out/ledger\.jsonl$", 8),
    ("ledger-fsync", "fsync", r"^out/ledger\.jsonl$", 8),
    ("output-temp-file", "open", r"^out/\.partial-", 2),
    ("output-write", "write", r"^out/\.partial-", 2),
    ("output-fsync", "fsync", r"^out/\.partial-", 2),
    ("output-rename", "replace", r"^out/\.partial-", 2),
    ("directory-fsync", "fsync", r"^out$", 2),
    ("thumbnail", "open", r"^out/thumbs/", 1),
    ("report", "open", r"^out/\.report\.html\.tmp-", 0),
    ("metadata", "open", r"^out/\.metadata\.jsonl\.tmp-", 0),
    ("reference-read", "read", r"^images/", 2),
]
CODES = [errno.ENOSPC, errno.EIO, errno.EROFS]


def _manifest(tmp_path: Path, count: int = ITEMS, **top: object) -> Path:
    return numbered_manifest(tmp_path, count, "local fault", **top)


def _outputs(count: int = ITEMS) -> int:
    return sum(1 + n % 2 for n in range(count))


def assert_nothing_half_written(out: Path) -> None:
    """No temp file of any kind survives, and every ledger line parses."""
    leftovers = [p.name for p in out.rglob(".*") if p.name != ".lock"]
    assert not leftovers, leftovers
    assert load_state(out).torn_lines == 0


@pytest.mark.parametrize("code", CODES, ids=[errno.errorcode[c] for c in CODES])
@pytest.mark.parametrize("site", SITES, ids=[s[0] for s in SITES])
async def test_a_fault_on_each_write_path_stops_the_run_and_the_rerun_completes(
    simulator_factory: SimulatorFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    site: tuple[str, str, str, int],
    code: int,
) -> None:
    """A fault at one place stops the run cleanly; the rerun buys nothing twice, files intact."""
    sim = await simulator_factory()
    manifest = _manifest(tmp_path)
    out = tmp_path / "out"
    disk = FaultyDisk(monkeypatch, tmp_path)
    _, op, pattern, after = site
    disk.arm(op, pattern, code, after=after)
    with pytest.raises(LocalFaultError) as caught:
        await run(sim, manifest, out, concurrency=3)
    assert disk.failed >= 1
    message = str(caught.value)
    assert os.strerror(code) in message and "run the same command again" in message
    sent = any(r.is_generate for r in sim.request_log)
    assert caught.value.before_spending is not sent  # exit 2 only when nothing was spent
    assert_nothing_half_written(out)
    assert_outputs_intact(out)

    disk.disarm()
    summary = await run(sim, manifest, out, concurrency=3)
    assert summary.exit_code == 0, summary.failures
    per_prompt = jobs_created_per_prompt(sim)
    assert len(per_prompt) == ITEMS and set(per_prompt.values()) == {1}, per_prompt
    assert assert_outputs_intact(out) == _outputs()
    assert (out / "report.html").is_file() and (out / "metadata.jsonl").is_file()


async def test_a_half_written_ledger_append_is_cut_off(
    simulator_factory: SimulatorFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A short write then ENOSPC mid-append: the torn half-line is removed at once, so the
    ledger stays whole lines (a later append would otherwise be glued to the fragment)."""
    sim = await simulator_factory()
    manifest = _manifest(tmp_path)
    out = tmp_path / "out"
    disk = FaultyDisk(monkeypatch, tmp_path)
    disk.arm("write", r"^out/ledger\.jsonl$", errno.ENOSPC, after=8, short=True)
    with pytest.raises(LocalFaultError):
        await run(sim, manifest, out, concurrency=3)
    assert disk.failed == 2  # the short write, then the failure
    assert (out / "ledger.jsonl").read_bytes().endswith(b"\n")
    assert load_state(out).torn_lines == 0
    disk.disarm()
    assert (await run(sim, manifest, out, concurrency=3)).exit_code == 0
    assert set(jobs_created_per_prompt(sim).values()) == {1}
    assert assert_outputs_intact(out) == _outputs()


async def test_a_fault_stops_submitting_at_once(
    simulator_factory: SimulatorFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once the disk is full, not one more generate call goes out."""
    sim = await simulator_factory(job_latency_s=0.3)
    manifest = _manifest(tmp_path, 40)
    out = tmp_path / "out"
    disk = FaultyDisk(monkeypatch, tmp_path)
    disk.arm("open", r"^out/\.partial-", errno.ENOSPC, after=0)
    with pytest.raises(LocalFaultError):
        await run(sim, manifest, out, concurrency=4)
    generates = [r for r in sim.request_log if r.is_generate]
    # The first download fails once the first job ends: by then at most the first wave
    # (and the submits already on their way) was sent.
    assert len(generates) <= 8, len(generates)
    state = load_state(out)
    assert sum(r.state in ("submitted", "submitting") for r in state.items.values()) >= 1


async def _run_cli(*args: str) -> int:
    """The CLI runs its own event loop: give it a thread while the simulator serves here."""
    return await asyncio.to_thread(main, list(args))


async def test_cli_says_one_line_and_exits_1(
    scenario_env: Simulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A disk that fills mid-run: exit 1, one line naming the path and the fix, no traceback."""
    manifest = _manifest(tmp_path, output="out")
    disk = FaultyDisk(monkeypatch, tmp_path)
    disk.arm("write", r"^out/\.partial-", errno.ENOSPC, after=3)
    assert await _run_cli("run", str(manifest), "-q") == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("scenario-batch: stopped: cannot write an output into ")
    assert str(tmp_path / "out") in lines[0] and "No space left on device" in lines[0]
    assert "Traceback" not in err

    disk.disarm()
    assert await _run_cli("run", str(manifest), "-q") == 0
    assert set(jobs_created_per_prompt(scenario_env).values()) == {1}


async def test_cli_exits_2_when_the_fault_comes_before_anything_is_spent(
    scenario_env: Simulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The ledger cannot take the run's first records: exit 2, no generate call was sent."""
    manifest = _manifest(tmp_path, output="out")
    disk = FaultyDisk(monkeypatch, tmp_path)
    disk.arm("write", r"^out/ledger\.jsonl$", errno.EIO, after=1)
    assert await _run_cli("run", str(manifest), "-q") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Input/output error" in err and "ledger.jsonl" in err
    assert not [r for r in scenario_env.request_log if r.is_generate]


async def test_too_many_open_files_on_a_connection_is_a_machine_fault(
    simulator_factory: SimulatorFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EMFILE opening a CDN socket stops the run (no download retried to exhaustion)."""
    sim = await simulator_factory()
    manifest = _manifest(tmp_path)
    out = tmp_path / "out"
    cdn_port = int(sim.cdn_url.rsplit(":", 1)[1])
    loop = asyncio.get_running_loop()
    real_connect = loop.sock_connect

    async def sock_connect(sock: object, address: object) -> None:
        if isinstance(address, tuple) and address[1] == cdn_port:
            raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))
        await real_connect(sock, address)  # type: ignore[arg-type]

    monkeypatch.setattr(loop, "sock_connect", sock_connect)
    with pytest.raises(LocalFaultError, match="Too many open files"):
        await run(sim, manifest, out, concurrency=3)
    monkeypatch.undo()
    summary = await run(sim, manifest, out, concurrency=3)
    assert summary.exit_code == 0
    assert set(jobs_created_per_prompt(sim).values()) == {1}
    assert assert_outputs_intact(out) == _outputs()


def test_short_free_space_is_warned_before_the_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Outputs that cannot fit in the free space are announced with the sizes involved."""
    with caplog.at_level(logging.WARNING):
        warn_if_short_of_space(tmp_path, 1000, 1 << 40)  # a thousand 1 TiB outputs
    assert "free" in caplog.text and "1000 output(s)" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        warn_if_short_of_space(tmp_path, 1, 1)
    assert caplog.text == ""
