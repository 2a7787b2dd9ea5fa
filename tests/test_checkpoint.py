"""Checkpoints: a snapshot kept close behind a growing ledger, written by a child process."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from batch.ledger import journal as ledger_module
from batch.ledger.checkpoint import Checkpointer
from batch.ledger.journal import (
    LEDGER_NAME,
    SNAPSHOT_NAME,
    LedgerWriter,
    load_state,
    write_snapshot,
)
from tests.test_ledger import _reference_replay, count_decoded_lines


def _item_records(count: int) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    for index in range(count):
        item = {"type": "item", "id": f"item-{index:04d}", "fp": f"fp{index}"}
        records.append({**item, "state": "planned", "prompt": "make it blue " * 4})
        records.append({**item, "state": "submitting", "submittedAt": "t"})
        records.append({**item, "state": "submitted", "jobId": f"job_{index}", "cost": 5})
        if index % 7 == 0:
            records.append({**item, "state": "failed", "error": "nope"})
    return records


def _header(directory: Path) -> dict[str, Any]:
    first = (directory / SNAPSHOT_NAME).read_bytes().split(b"\n", 1)[0]
    header: dict[str, Any] = json.loads(first)
    return header


def test_a_killed_run_leaves_a_checkpoint_close_behind_its_ledger(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Appends past the mark start a checkpoint; a load after a kill (no close) uses it and
    replays only the lines after it, to the same state as a full replay."""
    every = 4096
    writer = LedgerWriter(tmp_path, checkpoint_every=every)
    writer.open()
    records = _item_records(300)
    for start in range(0, len(records), 25):
        writer.append_many(records[start : start + 25])
        assert writer.wait_for_checkpoint(60)  # one at a time; wait so each mark starts one
    writer.append_many(_item_records(1))  # below the mark: left for the replay
    data = (tmp_path / LEDGER_NAME).read_bytes()
    covered = _header(tmp_path)["ledgerSize"]
    assert data[covered - 1 : covered] == b"\n"
    assert len(data) - covered < 2 * every  # at most the mark plus one batch behind

    decoded = count_decoded_lines(monkeypatch)
    state = load_state(tmp_path)  # as the next run would, with no close having happened
    assert repr(state) == repr(_reference_replay(data))
    assert 3 <= len(decoded) < len(records) / 4
    writer.close()


def test_a_checkpoint_covers_only_complete_lines_and_counts_no_torn_one(tmp_path: Path) -> None:
    """A checkpoint reads while the writer appends: a last line still being written is left
    for later, not counted as torn."""
    lines = [json.dumps(r).encode() + b"\n" for r in _item_records(20)]
    head = b"".join(lines[:-1])
    (tmp_path / LEDGER_NAME).write_bytes(head + lines[-1][:10])
    write_snapshot(tmp_path, live=True)
    assert _header(tmp_path)["ledgerSize"] == len(head)
    data = head + lines[-1]
    (tmp_path / LEDGER_NAME).write_bytes(data)
    state = load_state(tmp_path)
    assert state.torn_lines == 0
    assert repr(state) == repr(_reference_replay(data))


def test_a_checkpoint_child_writes_the_snapshot(tmp_path: Path) -> None:
    """The real child process (`python -m batch.ledger.checkpoint`), run as the writer runs it."""
    data = b"".join(json.dumps(r).encode() + b"\n" for r in _item_records(30))
    (tmp_path / LEDGER_NAME).write_bytes(data)
    checkpointer = Checkpointer(tmp_path, every_bytes=1)
    checkpointer.wrote(1)
    assert checkpointer.wait(60)
    assert _header(tmp_path)["ledgerSize"] == len(data)
    checkpointer.close()


def test_close_stops_a_checkpoint_under_way(tmp_path: Path) -> None:
    """Closing the writer does not wait out a slow checkpoint: it stops it."""
    checkpointer = Checkpointer(tmp_path, every_bytes=10)
    checkpointer.command = lambda: [sys.executable, "-c", "import time; time.sleep(120)"]  # type: ignore[method-assign]
    checkpointer.wrote(10)
    assert not checkpointer.wait(0.5)  # running
    started = time.monotonic()
    checkpointer.close()
    assert time.monotonic() - started < 60  # a hang guard, not a speed target
    checkpointer.wrote(100)  # after close nothing starts
    assert checkpointer.wait(0.1)


def test_the_checkpoint_child_gets_no_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("SCENARIO_SDK_API_SECRET", "s3cret")
    probe = "import os, sys; sys.exit(3 if 's3cret' in repr(dict(os.environ)) else 4)"
    checkpointer = Checkpointer(tmp_path, every_bytes=1)
    checkpointer.command = lambda: [sys.executable, "-c", probe]  # type: ignore[method-assign]
    with caplog.at_level(logging.DEBUG, logger="batch.ledger.checkpoint"):
        checkpointer.wrote(1)
        assert checkpointer.wait(60)
    assert "exited 4" in caplog.text
    checkpointer.close()


def test_open_removes_the_temp_file_of_a_killed_checkpoint(tmp_path: Path) -> None:
    stale = tmp_path / f".{SNAPSHOT_NAME}.tmp-0123456789ab"
    stale.write_bytes(b"half a snapshot")
    writer = LedgerWriter(tmp_path)
    writer.open()
    assert not stale.exists()
    writer.close()


def test_close_kills_a_checkpoint_that_ignores_sigterm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("batch.ledger.checkpoint.STOP_GRACE_S", 0.5)
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)"
    checkpointer = Checkpointer(tmp_path, every_bytes=1)
    checkpointer.command = lambda: [sys.executable, "-c", stubborn]  # type: ignore[method-assign]
    checkpointer.wrote(1)
    assert not checkpointer.wait(1.0)  # running, and has had time to ignore SIGTERM
    started = time.monotonic()
    checkpointer.close()
    assert time.monotonic() - started < 60  # a hang guard, not a speed target


def test_a_checkpoint_outliving_its_run_never_joins_a_torn_tail_to_new_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkpoint child whose run was killed mid-append reads the torn tail; a new run
    then cuts it and appends. The checkpoint covers only what was complete when it
    looked, so the next load still sees every record."""
    lines = [json.dumps(r).encode() + b"\n" for r in _item_records(40)]
    complete = b"".join(lines)
    torn = complete + b'{"type": "item", "id": "torn"'
    (tmp_path / LEDGER_NAME).write_bytes(torn)
    monkeypatch.setattr(ledger_module, "_READ_CHUNK", 256)
    real_pread = os.pread
    restarted = []

    def pread(fd: int, size: int, offset: int) -> bytes:
        if not restarted and offset >= len(torn):
            # The checkpoint has read the torn tail; now the new run starts.
            restarted.append(True)
            writer = LedgerWriter(tmp_path)
            writer.open()  # cuts the torn tail
            writer.append_many([*_item_records(3)[:2], {"type": "item", "id": "new", "fp": "x"}])
            writer.close()
            (tmp_path / SNAPSHOT_NAME).unlink()  # leave the checkpoint's snapshot as the one
        return real_pread(fd, size, offset)

    monkeypatch.setattr(ledger_module.os, "pread", pread)
    write_snapshot(tmp_path, live=True)
    monkeypatch.setattr(ledger_module.os, "pread", real_pread)
    assert restarted
    data = (tmp_path / LEDGER_NAME).read_bytes()
    assert repr(load_state(tmp_path)) == repr(_reference_replay(data))


def test_a_stopped_checkpoint_child_leaves_no_temp_file(tmp_path: Path) -> None:
    """SIGTERM reaching the real child while it writes the snapshot: it exits 143 and
    its temp file is gone (the rename never happened)."""
    data = b"".join(json.dumps(r).encode() + b"\n" for r in _item_records(10))
    (tmp_path / LEDGER_NAME).write_bytes(data)
    # The rename is where SIGTERM lands: the temp file exists and is complete by then.
    script = (
        "import os, signal, sys, time\n"
        "import batch.durable, batch.ledger.checkpoint\n"
        "def replace(*_):\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    time.sleep(30)\n"
        "batch.durable.os = type('os', (), {**vars(os), 'replace': staticmethod(replace)})\n"
        "sys.exit(batch.ledger.checkpoint.main(sys.argv[1:]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, timeout=60
    )
    assert done.returncode == 143, done.stderr.decode()
    assert sorted(p.name for p in tmp_path.iterdir()) == [LEDGER_NAME]


def test_closing_the_writer_during_a_slow_checkpoint_writes_every_record(tmp_path: Path) -> None:
    writer = LedgerWriter(tmp_path, checkpoint_every=1)
    slow = [sys.executable, "-c", "import time; time.sleep(120)"]
    writer._checkpointer.command = lambda: slow  # type: ignore[method-assign]
    writer.open()
    writer.append_many(_item_records(2))  # starts the slow checkpoint
    assert not writer.wait_for_checkpoint(0.5)
    child = writer._checkpointer._child
    assert child is not None
    writer.close()
    assert child.poll() is not None  # stopped, not left behind
    lines = (tmp_path / LEDGER_NAME).read_bytes().splitlines()
    assert len(lines) == len(_item_records(2))
    assert (tmp_path / SNAPSHOT_NAME).exists()  # the writer's own closing snapshot
