"""The ledger: durable appends, torn lines, replay, and the directory lock."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batch.errors import LockedError
from batch.ledger import LEDGER_NAME, DirectoryLock, LedgerWriter, load_state


def _records() -> list[dict[str, Any]]:
    return [
        {"type": "run", "event": "start"},
        {"type": "asset", "key": "sha256:aa", "assetId": "asset_1"},
        {"type": "item", "id": "a", "fp": "f1", "state": "planned", "prompt": "p"},
        {"type": "item", "id": "a", "fp": "f1", "state": "submitting", "submittedAt": "t"},
        {"type": "item", "id": "a", "fp": "f1", "state": "submitted", "jobId": "job_1", "cost": 5},
        {"type": "item", "id": "b", "fp": "f2", "state": "planned"},
        {
            "type": "item",
            "id": "a",
            "fp": "f1",
            "state": "succeeded",
            "files": [{"path": "a_0.png", "sha256": "00", "size": 3, "assetId": "asset_9"}],
        },
        {"type": "item", "id": "b", "fp": "f2", "state": "submitting"},
        {"type": "item", "id": "b", "fp": "f2", "state": "planned", "notCreated": True},
        {"type": "item", "id": "b", "fp": "f2", "state": "failed", "error": "bad", "hint": "h"},
    ]


def _write(directory: Path, records: list[dict[str, Any]]) -> bytes:
    writer = LedgerWriter(directory)
    writer.open()
    for record in records:
        writer.append_now(record)
    writer.close()
    return (directory / LEDGER_NAME).read_bytes()


def test_replay_folds_records_into_item_state(tmp_path: Path) -> None:
    """Replaying a ledger yields each item's latest state, job id, files, attempts and cost."""
    _write(tmp_path, _records())
    state = load_state(tmp_path)
    a, b = state.items["a"], state.items["b"]
    assert (a.state, a.job_id, a.attempts, a.spent) == ("succeeded", "job_1", 1, 5.0)
    assert a.files[0].path == "a_0.png"
    assert (b.state, b.attempts, b.error, b.hint) == ("failed", 0, "bad", "h")
    assert state.assets == {"sha256:aa": "asset_1"}
    assert state.total_spent() == 5.0


def test_torn_last_line_is_ignored_and_cut_before_appending(tmp_path: Path) -> None:
    """A half-written last line (kill -9 mid-append) is skipped on load and cut on reopen."""
    data = _write(tmp_path, _records()[:4])
    (tmp_path / LEDGER_NAME).write_bytes(data + b'{"type": "item", "id": "a", "fp"')
    state = load_state(tmp_path)
    assert state.items["a"].state == "submitting" and state.torn_lines == 1

    writer = LedgerWriter(tmp_path)
    writer.open()
    writer.append_now({"type": "item", "id": "a", "fp": "f1", "state": "submitted", "jobId": "j"})
    writer.close()
    lines = (tmp_path / LEDGER_NAME).read_text().splitlines()
    assert all(json.loads(line) for line in lines)
    assert load_state(tmp_path).items["a"].job_id == "j"


@settings(max_examples=60, deadline=None)
@given(cut=st.integers(min_value=0, max_value=10_000))
def test_any_prefix_loads_to_a_consistent_state(tmp_path_factory: Any, cut: int) -> None:
    """Any byte prefix of a ledger loads without error into a state the full file extends."""
    directory = tmp_path_factory.mktemp("ledger")
    data = _write(directory, _records())
    prefix = data[: cut % (len(data) + 1)]
    (directory / LEDGER_NAME).write_bytes(prefix)
    state = load_state(directory)
    complete_lines = prefix.count(b"\n")
    order = ["planned", "submitting", "submitted", "succeeded", "failed"]
    for item_id, record in state.items.items():
        assert record.state in order, item_id
        assert record.attempts >= 0
    # Exactly the complete lines were applied: replaying them alone gives the same state.
    (directory / LEDGER_NAME).write_bytes(b"\n".join(data.split(b"\n")[:complete_lines]) + b"\n")
    again = load_state(directory)
    assert {k: v.state for k, v in again.items.items()} == {
        k: v.state for k, v in state.items.items()
    }


async def test_concurrent_appends_are_all_durable_and_whole(tmp_path: Path) -> None:
    """Many concurrent appends (group commit) each land as one whole line."""
    writer = LedgerWriter(tmp_path)
    writer.open()
    await asyncio.gather(
        *(
            writer.append({"type": "item", "id": f"i{n}", "fp": "f", "state": "planned"})
            for n in range(300)
        )
    )
    writer.close()
    state = load_state(tmp_path)
    assert len(state.items) == 300 and state.torn_lines == 0


def _hold_lock(directory: str, ready: Any, release: Any) -> None:
    lock = DirectoryLock(Path(directory))
    lock.acquire()
    ready.set()
    release.wait(10)


def test_second_run_on_same_directory_is_refused(tmp_path: Path) -> None:
    """While one process holds the directory, another is refused at once, naming the pid."""
    context = multiprocessing.get_context("spawn")
    ready, release = context.Event(), context.Event()
    holder = context.Process(target=_hold_lock, args=(str(tmp_path), ready, release))
    holder.start()
    try:
        assert ready.wait(20)
        with pytest.raises(LockedError, match=str(holder.pid)):
            DirectoryLock(tmp_path).acquire()
    finally:
        release.set()
        holder.join(10)


def test_lock_of_a_killed_process_is_not_stuck(tmp_path: Path) -> None:
    """A lock held by a process that was killed is free again at once."""
    context = multiprocessing.get_context("spawn")
    ready, release = context.Event(), context.Event()
    holder = context.Process(target=_hold_lock, args=(str(tmp_path), ready, release))
    holder.start()
    assert ready.wait(20)
    holder.kill()
    holder.join(10)
    lock = DirectoryLock(tmp_path)
    lock.acquire()
    lock.release()
