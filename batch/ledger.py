"""The ledger: an append-only JSON Lines journal of every state change, in the output directory.

Why JSON Lines and append-only: a run can be killed at any instant (kill -9 included).
Each record is one line, written and fsynced before the action it announces goes on, so
the file on disk is always a prefix of what the run did. Replay reads whole lines and
ignores a torn last line; the writer cuts that torn tail off before appending again.

Records (every one has `ts`, an ISO-8601 UTC time, and `type`):
- `{"type": "run", "event": "start"|"end", ...}`: bookkeeping, never needed for resume.
- `{"type": "asset", "key": ..., "assetId": ..., "source": ...}`: a reference uploaded once.
- `{"type": "item", "id": ..., "fp": ..., "state": ..., ...}`: an item's state change; fields
  accumulate across records of the same (id, fp) so each record carries only what is new.

States of an item, in order: planned -> submitting -> submitted -> succeeded | failed.
`submitting` is written *before* the generate call is sent: on resume an item whose last
state is `submitting` may or may not have a job, and must be reconciled, never resubmitted
blindly.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import errno
import fcntl
import functools
import json
import os
import stat
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from batch.durable import fsync_directory
from batch.errors import LedgerError, LockedError, UnusableOutputError

LEDGER_NAME: Final = "ledger.jsonl"
LOCK_NAME: Final = ".lock"

State = Literal["planned", "submitting", "submitted", "succeeded", "failed"]
FINAL_STATES: Final[frozenset[str]] = frozenset({"succeeded", "failed"})


def utc_now() -> str:
    """An ISO-8601 UTC timestamp with milliseconds, like the API's own."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class OutputFile:
    path: str  # relative to the output directory
    sha256: str
    size: int
    asset_id: str


@dataclass(slots=True)
class ItemRecord:
    """What the ledger knows of one item's current inputs (one id + fingerprint)."""

    id: str
    fp: str
    state: str = "planned"
    attempts: int = 0  # generate calls sent (or possibly sent) for these inputs
    job_id: str | None = None
    submitted_at: str | None = None  # local clock when the last generate call went out
    job_ids: list[str] = field(default_factory=list)  # every job ever tied to these inputs
    asset_ids: list[str] = field(default_factory=list)
    files: list[OutputFile] = field(default_factory=list)
    cost: float | None = None  # compute units the API reported for the successful job
    spent: float = 0.0  # compute units across every job of these inputs
    error: str | None = None
    hint: str | None = None
    prompt: str | None = None
    references: list[str] = field(default_factory=list)
    first_ts: str | None = None
    last_ts: str | None = None

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_STATES


@dataclass(slots=True)
class LedgerState:
    """Everything the ledger says, replayed. Keyed by item id; older inputs kept aside."""

    items: dict[str, ItemRecord] = field(default_factory=dict)
    superseded: dict[str, list[ItemRecord]] = field(default_factory=dict)
    assets: dict[str, str] = field(default_factory=dict)  # reference key -> asset id
    runs: int = 0
    first_ts: str | None = None
    last_ts: str | None = None
    torn_lines: int = 0

    def apply(self, record: Mapping[str, Any]) -> None:
        """Fold one record into the state. Unknown record types are ignored (newer writers)."""
        ts = record.get("ts")
        if isinstance(ts, str):
            self.first_ts = self.first_ts or ts
            self.last_ts = ts
        kind = record.get("type")
        if kind == "item":
            self._apply_item(record)
        elif kind == "asset":
            key, asset_id = record.get("key"), record.get("assetId")
            if isinstance(key, str) and isinstance(asset_id, str):
                self.assets[key] = asset_id
        elif kind == "run" and record.get("event") == "start":
            self.runs += 1

    def _apply_item(self, record: Mapping[str, Any]) -> None:
        item_id, fp = record.get("id"), record.get("fp")
        if not isinstance(item_id, str) or not isinstance(fp, str):
            return
        current = self.items.get(item_id)
        if current is None or current.fp != fp:
            if current is not None:
                self.superseded.setdefault(item_id, []).append(current)
            current = self._revive(item_id, fp)
            self.items[item_id] = current
        _fold(current, record)

    def _revive(self, item_id: str, fp: str) -> ItemRecord:
        """Inputs that come back after an edit pick up where their own history left off."""
        older = self.superseded.get(item_id, [])
        for index, record in enumerate(older):
            if record.fp == fp:
                del older[index]
                return record
        return ItemRecord(id=item_id, fp=fp)

    def counts(self) -> dict[str, int]:
        result: dict[str, int] = {}
        for record in self.items.values():
            result[record.state] = result.get(record.state, 0) + 1
        return result

    def total_spent(self) -> float:
        every = list(self.items.values())
        for older in self.superseded.values():
            every.extend(older)
        return sum(r.spent for r in every)


def _fold(item: ItemRecord, record: Mapping[str, Any]) -> None:
    ts = record.get("ts")
    if isinstance(ts, str):
        item.first_ts = item.first_ts or ts
        item.last_ts = ts
    state = record.get("state")
    if isinstance(state, str):
        item.state = state
    if state == "submitting":
        item.attempts += 1
        item.job_id = None
        item.submitted_at = record.get("submittedAt") or ts
        item.error = item.hint = None
    if state == "submitted":
        item.error = item.hint = None
    if record.get("notCreated"):
        # The generate call was refused outright: that `submitting` cost nothing.
        item.attempts = max(0, item.attempts - 1)
    job_id = record.get("jobId")
    if isinstance(job_id, str):
        item.job_id = job_id
        if job_id not in item.job_ids:
            item.job_ids.append(job_id)
    if "assetIds" in record:
        item.asset_ids = list(record["assetIds"])
    if "files" in record:
        item.files = [
            OutputFile(f["path"], f["sha256"], int(f["size"]), f.get("assetId", ""))
            for f in record["files"]
        ]
    if "cost" in record and record["cost"] is not None:
        item.cost = float(record["cost"])
        item.spent += float(record["cost"])
    for name in ("error", "hint", "prompt"):
        if name in record:
            setattr(item, name, record[name])
    if "references" in record:
        item.references = list(record["references"])


def iter_records(path: Path) -> Iterator[dict[str, Any] | None]:
    """Yield each complete record of a ledger file; None for a line that does not parse.

    The file is opened without following a symlink (see `open_in_out_dir`)."""
    fd = open_in_out_dir(path, os.O_RDONLY)
    with os.fdopen(fd, "rb") as handle:
        for raw in handle:
            if not raw.endswith(b"\n"):
                yield None  # a torn last line: the writer died mid-append
                return
            try:
                record = json.loads(raw)
            except ValueError:
                yield None
                continue
            yield record if isinstance(record, dict) else None


def load_state(directory: Path) -> LedgerState:
    """Replay the ledger of an output directory (an empty state if there is none). No lock."""
    state = LedgerState()
    path = directory / LEDGER_NAME
    if not os.path.lexists(path):
        return state
    try:
        for record in iter_records(path):
            if record is None:
                state.torn_lines += 1
            else:
                state.apply(record)
    except OSError as exc:
        raise LedgerError(f"cannot read ledger {path}: {exc.strerror or exc}") from exc
    return state


def open_in_out_dir(path: Path, flags: int, mode: int = 0o644) -> int:
    """Open a bookkeeping file of the output directory, never through a symlink.

    A link planted at `ledger.jsonl` or `.lock` could make a run write, truncate or lock a
    file outside the output directory; O_NOFOLLOW refuses it, and anything but a regular
    file (a FIFO would block a read forever, O_NONBLOCK avoids that) is refused as well.
    """
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP or os.path.islink(path):
            raise UnusableOutputError(
                f"{path} is a symbolic link; scenario-batch never follows links in its output "
                "directory: remove it, or use another --out directory"
            ) from None
        raise UnusableOutputError(f"cannot open {path}: {exc.strerror or exc}") from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UnusableOutputError(
            f"{path} is not a regular file: remove it, or use another --out directory"
        )
    os.set_blocking(fd, True)
    return fd


class DirectoryLock:
    """An exclusive lock on an output directory. The kernel drops it when the process dies,
    so a killed run never leaves it stuck."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = open_in_out_dir(self.path, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise LockedError(
                f"{self.path.parent} is in use by another scenario-batch run (pid {holder}); "
                "wait for it to finish or use another --out directory"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


class LedgerWriter:
    """The one writer of a ledger file. `append` returns once the record is on disk.

    Appends that arrive while a write is under way are written and fsynced together
    (group commit): durability per record without one fsync per record on a busy run.
    The write runs in a worker thread and finishes even if its awaiter is cancelled, so
    a record that was handed over is never lost to a Ctrl-C.
    """

    def __init__(self, directory: Path) -> None:
        self.path = directory / LEDGER_NAME
        self._fd: int | None = None
        self._pending: list[tuple[bytes, asyncio.Future[None]]] = []
        self._turn = asyncio.Lock()  # one batch in flight at a time keeps records in order
        self._file_lock = threading.Lock()

    def open(self) -> None:
        self._fd = open_in_out_dir(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND)
        try:
            _cut_torn_tail(self._fd)
        except OSError as exc:
            raise LedgerError(f"cannot open ledger {self.path}: {exc.strerror or exc}") from exc
        fsync_directory(self.path.parent)

    def close(self) -> None:
        """Write whatever is still queued, then close."""
        if self._fd is None:
            return
        batch, self._pending = self._pending, []
        if batch:
            self._write([line for line, _ in batch])
            _settle(batch, None)
        os.close(self._fd)
        self._fd = None

    def append_now(self, record: Mapping[str, Any]) -> None:
        """Write one record synchronously (start-up, shutdown, tests)."""
        self._write([_encode(record)])

    async def append(self, record: Mapping[str, Any]) -> None:
        """Append one record; returns when it is durable."""
        loop = asyncio.get_running_loop()
        mine: asyncio.Future[None] = loop.create_future()
        self._pending.append((_encode(record), mine))
        async with self._turn:
            if not mine.done() and self._pending:
                batch, self._pending = self._pending, []
                written = loop.run_in_executor(None, self._write, [line for line, _ in batch])
                written.add_done_callback(functools.partial(_settle_from, batch))
                await asyncio.shield(written)
        await mine

    def _write(self, lines: list[bytes]) -> None:
        data = b"".join(lines)
        with self._file_lock:
            if self._fd is None:
                raise LedgerError(f"ledger {self.path} is not open")
            try:
                written = 0
                while written < len(data):
                    written += os.write(self._fd, data[written:])
                os.fsync(self._fd)
            except OSError as exc:
                raise LedgerError(
                    f"cannot write ledger {self.path}: {exc.strerror or exc}"
                ) from exc


def _settle(batch: list[tuple[bytes, asyncio.Future[None]]], error: BaseException | None) -> None:
    for _, future in batch:
        if future.done():
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)


def _settle_from(
    batch: list[tuple[bytes, asyncio.Future[None]]], written: asyncio.Future[None]
) -> None:
    if written.cancelled():
        _settle(batch, LedgerError("ledger write was cancelled"))
    else:
        _settle(batch, written.exception())


def _encode(record: Mapping[str, Any]) -> bytes:
    stamped = {"ts": utc_now(), **record}
    return json.dumps(stamped, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def _cut_torn_tail(fd: int) -> None:
    """Drop a partial last line left by a writer that died mid-append (through the fd: the
    path is never reopened, so nothing swapped in under the name since is touched)."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return
    # Scan backwards for the last newline; ledgers are line-sized, so this is short.
    position = size
    chunk = 4096
    while position > 0:
        start = max(0, position - chunk)
        block = os.pread(fd, position - start, start)
        index = block.rfind(b"\n")
        if index >= 0:
            os.ftruncate(fd, start + index + 1)
            return
        position = start
    os.ftruncate(fd, 0)
