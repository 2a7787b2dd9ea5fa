"""Checkpoints: keep `ledger.snapshot.json` close behind a ledger that is still growing.

The writer leaves a snapshot when it closes, but a run killed before its first clean stop
(the 3 a.m. crash) would leave only the ledger, and a resume would replay all of it: about
2.5 s for 100,000 items. So every `CHECKPOINT_BYTES` of appends the writer has a snapshot
written meanwhile. The replay and encoding are seconds of pure Python at that size, so
they run in a child process (`python -m batch.ledger.checkpoint DIR`): in a thread they would hold
the GIL and stall the event loop the jobs are waiting on.

The child reads only complete lines and writes the snapshot by temp file and rename, and
a load checks any snapshot against the ledger, so a checkpoint racing appends, killed, or
outrun by another is harmless: the worst case is an older snapshot, i.e. a longer replay.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Final

log = logging.getLogger(__name__)

# 16 MiB of ledger is about 15,000 items: a killed run's resume replays at most that much
# after its last checkpoint (~0.4 s here), while a 100,000-item run pays ~7 checkpoints.
CHECKPOINT_BYTES: Final = 16 << 20
CHECKPOINT_TIMEOUT_S: Final = 600.0
STOP_GRACE_S: Final = 10.0  # after SIGTERM, before SIGKILL
_PACKAGE_ROOT: Final = str(Path(__file__).resolve().parent.parent)


class Checkpointer:
    """Starts a checkpoint child each time `every_bytes` more have been appended, one at
    a time, from its own thread (the ledger's writer thread never waits for it)."""

    def __init__(self, directory: Path, every_bytes: int = CHECKPOINT_BYTES) -> None:
        self.directory = directory
        self.every_bytes = every_bytes
        self._since = 0
        self._lock = threading.Lock()
        self._closed = False
        self._child: subprocess.Popen[bytes] | None = None
        self._running: concurrent.futures.Future[None] | None = None
        self._thread = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="ledger-checkpoint"
        )

    def wrote(self, size: int) -> None:
        """`size` more bytes are in the ledger (called by the writer, in order)."""
        with self._lock:
            self._since += size
            if self._closed or self._since < self.every_bytes:
                return
            if self._running is not None and not self._running.done():
                return  # the next write past the mark starts the next one
            self._since = 0
            self._running = self._thread.submit(self._checkpoint)

    def wait(self, timeout: float) -> bool:
        """Wait for the checkpoint under way, if any; True if none is left running."""
        running = self._running
        if running is None:
            return True
        try:
            running.result(timeout)
        except concurrent.futures.TimeoutError:
            return False
        except Exception:  # _checkpoint logs its own failures; a cache, never an error
            pass
        return True

    def stop_starting(self) -> None:
        """No more checkpoints from now on (the writer is closing)."""
        with self._lock:
            self._closed = True

    def close(self) -> None:
        """Stop a checkpoint under way (it removes its temp file) and wait for it: the
        writer's own closing snapshot supersedes it."""
        with self._lock:
            self._closed = True
            child = self._child
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)
            if not self.wait(STOP_GRACE_S) and child.poll() is None:
                child.kill()  # stuck (a hung filesystem?): the next open removes its temp
        self._thread.shutdown(wait=True)

    def command(self) -> list[str]:
        # -P: `python -m` would otherwise look in the current directory first, where a
        # folder named `batch` would stand in for this package.
        return [sys.executable, "-P", "-m", "batch.ledger.checkpoint", str(self.directory)]

    def _checkpoint(self) -> None:
        # The child needs no credentials: none are passed on.
        env = {k: v for k, v in os.environ.items() if not k.startswith("SCENARIO_")}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [_PACKAGE_ROOT, env.get("PYTHONPATH")]))
        command = self.command()
        with self._lock:
            if self._closed:
                return
            try:
                self._child = subprocess.Popen(
                    command,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                )
            except OSError as exc:  # out of processes or file descriptors: try next time
                log.debug("ledger checkpoint not started: %s", exc)
                return
        try:
            _, stderr = self._child.communicate(timeout=CHECKPOINT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self._child.kill()
            _, stderr = self._child.communicate()
        code = self._child.returncode
        if code != 0 and not self._closed:
            last = stderr.decode(errors="replace").strip().splitlines()[-1:]
            log.debug("ledger checkpoint exited %s: %s", code, "".join(last))


def _stop(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through the temp file's cleanup


def main(argv: list[str]) -> int:
    # Set explicitly: a run started with SIGTERM ignored (nohup, some schedulers) would
    # otherwise pass that on, and `close` could not stop a checkpoint.
    signal.signal(signal.SIGTERM, _stop)
    os.nice(10)  # the run's own work comes first on a busy machine
    from batch.ledger.journal import write_snapshot

    write_snapshot(Path(argv[0]), live=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
