"""What a person sees: a tqdm bar on a terminal, plain progress lines elsewhere."""

from __future__ import annotations

import asyncio
import fcntl
import os
import struct
import sys
import termios
from pathlib import Path

from batch.run.progress import LineProgress
from tests.conftest import SimulatorFactory
from tests.test_crash_safety import _crash_manifest, _env


async def test_terminal_shows_a_progress_bar(
    simulator_factory: SimulatorFactory, tmp_path: Path
) -> None:
    """With stderr on a terminal, the run draws a tqdm bar with done, failed and in-flight."""
    sim = await simulator_factory(job_latency_s=0.2)
    manifest = _crash_manifest(tmp_path, 6)
    controller, terminal = os.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "batch",
            "run",
            str(manifest),
            "--out",
            str(tmp_path / "out"),
            env=_env(sim),
            stdout=asyncio.subprocess.PIPE,
            stderr=terminal,
        )
        os.close(terminal)
        reading = asyncio.create_task(asyncio.to_thread(_read_all, controller))
        stdout, _ = await asyncio.wait_for(process.communicate(), timeout=60)
        screen = await asyncio.wait_for(reading, timeout=10)
    finally:
        os.close(controller)
    assert process.returncode == 0
    text = screen.decode(errors="replace")
    assert "6/6" in text and "in_flight=" in text and "failed=0" in text
    assert b"6/6 succeeded" in stdout


def _read_all(fd: int) -> bytes:
    """Read a pty until its other side is closed (EIO on Linux)."""
    data = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            return data
        if not chunk:
            return data
        data += chunk


def test_plain_lines_report_progress_and_eta(caplog: object) -> None:
    """Without a terminal, a plain line with counts and an ETA is logged now and then."""
    import logging

    progress = LineProgress(every_s=0.0)
    with _capture(logging.getLogger("batch.run.progress")) as lines:
        progress.start(total=4, done=1)
        progress.item_finished(ok=True)
        progress.item_finished(ok=False)
    assert lines[0] == "starting: 4 items, 1 already done"
    assert lines[-1].startswith("progress: 3/4 done, 1 failed, 0 in flight, eta ")


class _capture:
    def __init__(self, logger: object) -> None:
        import logging

        assert isinstance(logger, logging.Logger)
        self.logger = logger
        self.lines: list[str] = []

    def __enter__(self) -> list[str]:
        import logging

        lines = self.lines

        class Collect(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                lines.append(record.getMessage())

        self.handler = Collect()
        self.logger.addHandler(self.handler)
        self.level = self.logger.level
        self.logger.setLevel(logging.INFO)
        return self.lines

    def __exit__(self, *exc: object) -> None:
        self.logger.removeHandler(self.handler)
        self.logger.setLevel(self.level)
