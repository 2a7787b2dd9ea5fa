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

A record that names output files (`files`) is written only after the output directory
is fsynced: the files were renamed into place before the record was handed over, so
whenever the record is on disk, so are their names. Downloads leave that sync to the
ledger: one directory fsync per ledger write that holds such records, instead of one
per wave of renames (bench/RESULTS.md, round 7). A crash before it leaves the item short
of `succeeded`, and a rerun downloads it again.

Loading 100,000 items fast: `ledger.snapshot.json` holds the replayed state of the ledger's
first bytes; a load starts from it and replays only later lines. The writer leaves one when
it closes, and has one written every 16 MiB of appends meanwhile (`batch.ledger.checkpoint`), so a
run killed mid-way resumes fast too. It is a cache, checked against the ledger and ignored at
the least doubt (see `_Snapshot`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import datetime as dt
import errno
import fcntl
import functools
import gc
import hashlib
import json
import os
import stat
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import orjson

from batch.durable import fsync_directory, write_atomically
from batch.errors import LedgerError, LocalFaultError, LockedError, UnusableOutputError
from batch.ledger.checkpoint import CHECKPOINT_BYTES, Checkpointer
from batch.local_faults import file_fault

LEDGER_NAME: Final = "ledger.jsonl"
LOCK_NAME: Final = ".lock"
# How long a record waits for others to share its write (see LedgerWriter): well under a
# fsync's own time on a busy disk, and under 1 % of the shortest jobs (~1 s).
GATHER_S: Final = 0.005

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
    model: str | None = None  # from `planned`; None in ledgers older than `models:`
    # The inputs as the manifest gave them (`inputs` of a `planned` record): what a dataset
    # made of the outputs needs. None/empty in ledgers written before they were recorded.
    params: dict[str, Any] | None = None  # every generate input but prompt and references
    sources: list[str] = field(default_factory=list)  # file paths, asset ids, URLs

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
        get = record.get  # the replay's hot path: each field is looked up once
        ts = get("ts")
        if not isinstance(ts, str):
            ts_str = None
        else:
            ts_str = ts
            if not self.first_ts:
                self.first_ts = ts
            self.last_ts = ts
        kind = get("type")
        if kind == "item":
            item_id, fp = get("id"), get("fp")
            if isinstance(item_id, str) and isinstance(fp, str):
                current = self.items.get(item_id)
                if current is None or current.fp != fp:
                    current = self._replace(current, item_id, fp)
                _fold(current, record, ts, ts_str)
        elif kind == "asset":
            key, asset_id = get("key"), get("assetId")
            if isinstance(key, str) and isinstance(asset_id, str):
                self.assets[key] = asset_id
        elif kind == "run" and get("event") == "start":
            self.runs += 1

    def _replace(self, current: ItemRecord | None, item_id: str, fp: str) -> ItemRecord:
        """New inputs for an item (or its first record): the old inputs move aside."""
        if current is not None:
            self.superseded.setdefault(item_id, []).append(current)
        current = self._revive(item_id, fp)
        self.items[item_id] = current
        return current

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


def _fold(item: ItemRecord, record: Mapping[str, Any], ts: Any, ts_str: str | None) -> None:
    """Fold one item record into its item (`ts` is the record's own; `ts_str` the same if it
    is a string, else None).

    Fields are tested in a fixed order, so that later ones override earlier ones (a
    `submitting` clears `error`, which the same record may then set)."""
    state = record.get("state")
    if ts_str is not None and state is not None:  # a record without a state only annotates
        if not item.first_ts:
            item.first_ts = ts_str
        item.last_ts = ts_str
    if isinstance(state, str):
        item.state = state
        if state == "submitting":
            item.attempts += 1
            item.job_id = None
            item.submitted_at = record.get("submittedAt") or ts
            item.error = item.hint = None
        elif state == "submitted":
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
    cost = record.get("cost")
    if cost is not None:
        item.cost = float(cost)
        item.spent += float(cost)
    if "error" in record:
        item.error = record["error"]
    if "hint" in record:
        item.hint = record["hint"]
    if "prompt" in record:
        item.prompt = record["prompt"]
    if "references" in record:
        item.references = list(record["references"])
    model = record.get("model")
    if isinstance(model, str):
        item.model = model
    inputs = record.get("inputs")
    if isinstance(inputs, dict):
        _fold_inputs(item, inputs)


def _fold_inputs(item: ItemRecord, inputs: Mapping[str, Any]) -> None:
    params, sources = inputs.get("params"), inputs.get("sources")
    item.params = params if isinstance(params, dict) else None
    item.sources = [s for s in sources if isinstance(s, str)] if isinstance(sources, list) else []


_READ_CHUNK: Final = 1 << 20  # 1 MiB: whole lines are split out of each block at once


def _loads(raw: bytes) -> Any:
    """One JSON line (without its newline) -> its value; ValueError if it does not parse.

    orjson is about 4x faster than json here. What it refuses but json accepts (NaN,
    Infinity, a byte-order mark, lone surrogate escapes, 1e400) goes to json, so every line
    an older reader could read still loads the same. One known difference: orjson reads an
    integer beyond 64 bits as a float; only `planned` inputs (a model's unbounded number
    input) can hold one, and they only feed metadata.jsonl and export."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw + b"\n")


def _decode(raw: bytes) -> dict[str, Any] | None:
    """One ledger line -> its record, or None if it is not a JSON object."""
    try:
        record = _loads(raw)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def _lines(fd: int, start: int, limit: int | None = None) -> Iterator[bytes | None]:
    """Yield the complete lines of an open file from byte `start` on (to byte `limit` if
    given; newlines stripped), then None if it ends without a newline: a torn last line,
    never parsed."""
    offset, tail = start, b""
    while block := os.pread(
        fd, _READ_CHUNK if limit is None else min(_READ_CHUNK, limit - offset), offset
    ):
        offset += len(block)
        lines = (tail + block).split(b"\n") if tail else block.split(b"\n")
        tail = lines.pop()  # the start of a line the next block completes, or b""
        yield from lines
    if tail:
        yield None


def iter_records(path: Path) -> Iterator[dict[str, Any] | None]:
    """Yield each complete record of a ledger file; None for a line that does not parse,
    and a last None for a torn last line (the writer died mid-append).

    The file is opened without following a symlink (see `open_in_out_dir`)."""
    fd = open_in_out_dir(path, os.O_RDONLY)
    try:
        for raw in _lines(fd, 0):
            yield None if raw is None else _decode(raw)
    finally:
        os.close(fd)


def load_state(directory: Path) -> LedgerState:
    """Replay the ledger of an output directory (an empty state if there is none). No lock.

    A snapshot that matches the ledger stands in for the lines it covers (see `_Snapshot`)."""
    return _replay(directory)[0]


def _replay(
    directory: Path, *, tail_hash: bool = False, live: bool = False
) -> tuple[LedgerState, int, str]:
    """The state, the size of the ledger's complete lines (what a snapshot may cover) and,
    if asked, the hash of their end ("" otherwise). `live`: a writer may be appending, so
    an unfinished last line is one being written, not a torn one."""
    path = directory / LEDGER_NAME
    if not os.path.lexists(path):
        return LedgerState(), 0, ""
    try:
        with gc_paused():
            return _replay_open(path, directory, tail_hash, live)
    except OSError as exc:  # EIO, EMFILE...: the machine's (batch.local_faults)
        raise file_fault(exc, "cannot read the ledger", path) from exc


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """A replay allocates a few objects per record and frees none until the end: the cyclic
    GC would rescan the growing state over and over (about half the load time). Nothing
    here makes cycles, so it is paused meanwhile (and so by the views written from it)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _replay_open(
    path: Path, directory: Path, tail_hash: bool, live: bool
) -> tuple[LedgerState, int, str]:
    """The snapshot if it matches, then every complete line after it."""
    fd = open_in_out_dir(path, os.O_RDONLY)
    try:
        state, end = _Snapshot.load(directory, fd)
        # Live, only the bytes there now: complete lines never change, but a torn tail is
        # cut and written over when a writer opens (a checkpoint child may outlive its run),
        # and a fragment read before that must not be joined to what comes after.
        limit = max(end, os.fstat(fd).st_size) if live else None
        apply = state.apply
        for raw in _lines(fd, end, limit):
            if raw is None:  # a torn last line: not covered, the writer cuts it
                state.torn_lines += not live
                break
            end += len(raw) + 1
            record = _decode(raw)
            if record is None:
                state.torn_lines += 1
            else:
                apply(record)
        return state, end, _tail_sha256(fd, end) if tail_hash else ""
    finally:
        os.close(fd)


def _tail_sha256(fd: int, end: int) -> str:
    """The sha256 of the last 64 KiB before byte `end` (all of them if fewer)."""
    start = max(0, end - _TAIL_CHECK)
    data = os.pread(fd, end - start, start)
    if len(data) != end - start:
        raise ValueError("ledger shorter than the snapshot")
    return hashlib.sha256(data).hexdigest()


def write_snapshot(directory: Path, *, live: bool = False) -> None:
    """Bring `ledger.snapshot.json` up to the ledger's complete lines (`live`: while a
    writer may still be appending, as a checkpoint does)."""
    _Snapshot.write(directory, live=live)


SNAPSHOT_NAME: Final = "ledger.snapshot.json"
_SNAPSHOT_VERSION: Final = 2  # 2: items carry their inputs
_TAIL_CHECK: Final = 1 << 16


class _Snapshot:
    """`ledger.snapshot.json`: the replayed state of the ledger's first `ledgerSize` bytes,
    written whenever the writer closes, so that a load replays only the lines after them.

    A cache, never the truth. It stands in for the ledger only if the ledger still has that
    many bytes, the last 64 KiB of them hash as they did, and the snapshot's own body hashes
    as its header says; anything else (missing, unreadable, another version, a ledger cut or
    rewritten) means a full replay. The ledger stays the only record: older versions ignore
    this file, and appends they make are replayed on top of it.

    JSON Lines: a header (what it covers, and the hash of the rest), a summary (counts,
    assets, runs), then one row per item and one per superseded item, in the state's own
    order (dict order is part of the state: reports list items in it).
    """

    @staticmethod
    def load(directory: Path, ledger_fd: int) -> tuple[LedgerState, int]:
        """The state the snapshot holds and the ledger offset it covers; (empty, 0) if it
        cannot be used."""
        try:
            return _Snapshot._read(directory / SNAPSHOT_NAME, ledger_fd)
        except Exception:  # any defect at all: the full replay is always right
            return LedgerState(), 0

    @staticmethod
    def _read(path: Path, ledger_fd: int) -> tuple[LedgerState, int]:
        if not os.path.lexists(path):
            return LedgerState(), 0
        fd = open_in_out_dir(path, os.O_RDONLY)  # refuses a planted link or FIFO
        try:
            lines = _lines(fd, 0)
            header = _loads(next(lines) or b"")
            size = header["ledgerSize"]
            if (
                header["version"] != _SNAPSHOT_VERSION
                or type(size) is not int
                or size <= 0
                or _tail_sha256(ledger_fd, size) != header["tailSha256"]
                or os.pread(ledger_fd, 1, size - 1) != b"\n"
            ):
                return LedgerState(), 0
            body = hashlib.sha256()
            summary = _loads(_hashed(body, next(lines)))
            state = LedgerState(
                assets=summary["assets"],
                runs=summary["runs"],
                first_ts=summary["firstTs"],
                last_ts=summary["lastTs"],
                torn_lines=summary["tornLines"],
            )
            records = (_to_record(_loads(_hashed(body, raw))) for raw in lines)
            items = state.items
            for _ in range(summary["items"]):
                record = next(records)
                items[record.id] = record
            for item_id, count in summary["superseded"]:
                state.superseded[item_id] = [next(records) for _ in range(count)]
            if next(lines, None) is not None or body.hexdigest() != header["bodySha256"]:
                return LedgerState(), 0
            return state, size
        finally:
            os.close(fd)

    @staticmethod
    def write(directory: Path, *, live: bool = False) -> None:
        """Replay the ledger (from the last snapshot on) and write a snapshot of it."""
        state, size, tail = _replay(directory, tail_hash=True, live=live)
        if size == 0:
            return
        with gc_paused():
            data = _Snapshot._encode(state, size, tail)
        write_atomically(directory / SNAPSHOT_NAME, data)

    @staticmethod
    def _encode(state: LedgerState, size: int, tail: str) -> bytes:
        encode = json.JSONEncoder(separators=(",", ":")).encode  # NaN kept, ASCII escapes
        summary = {
            "items": len(state.items),
            "superseded": [[key, len(older)] for key, older in state.superseded.items()],
            "assets": state.assets,
            "runs": state.runs,
            "firstTs": state.first_ts,
            "lastTs": state.last_ts,
            "tornLines": state.torn_lines,
        }
        rows = [encode(summary)]
        rows.extend(encode(_to_row(record)) for record in state.items.values())
        for older in state.superseded.values():
            rows.extend(encode(_to_row(record)) for record in older)
        body = ("\n".join(rows) + "\n").encode()
        header = {
            "version": _SNAPSHOT_VERSION,
            "ledgerSize": size,
            "tailSha256": tail,
            "bodySha256": hashlib.sha256(body).hexdigest(),
        }
        return encode(header).encode() + b"\n" + body


def _hashed(hasher: Any, raw: bytes | None) -> bytes:
    """`raw` (a line), added to `hasher` with its newline; a torn line is a defect."""
    if raw is None:
        raise ValueError("torn snapshot line")
    hasher.update(raw)
    hasher.update(b"\n")
    return raw


def _to_row(r: ItemRecord) -> list[Any]:
    """An item as a snapshot row: its fields in declaration order (`_to_record` relies on it)."""
    files = [[f.path, f.sha256, f.size, f.asset_id] for f in r.files]
    return [
        *(r.id, r.fp, r.state, r.attempts, r.job_id, r.submitted_at, r.job_ids, r.asset_ids),
        *(files, r.cost, r.spent, r.error, r.hint, r.prompt, r.references, r.first_ts, r.last_ts),
        *(r.model, r.params, r.sources),
    ]


def _to_record(row: list[Any]) -> ItemRecord:
    row[_FILES_AT] = [OutputFile(*f) for f in row[_FILES_AT]]
    return ItemRecord(*row)


_FILES_AT: Final = [f.name for f in dataclasses.fields(ItemRecord)].index("files")


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
    A write that could start at once waits `gather_s` first, so that records arriving
    apart (jobs that end one by one) share it too: each write costs about 0.3 ms of CPU
    across the two threads, and at C=256 with job times +-50 % a job's records went out
    in 0.8 writes, 0.5 with 5 ms of gathering (bench/RESULTS.md, round 16). An urgent
    record (one a slot waits for) is not held: it goes at once with those gathered.
    Writes run one at a time, in order, on the writer's own thread; the next batch starts
    from the previous one's completion, so appenders only wait for their own record (no
    lock to queue on). A write finishes even if its awaiter is cancelled, and `close`
    waits for it and writes whatever is still queued, so a record that was handed over
    is never lost to a Ctrl-C.
    """

    def __init__(
        self,
        directory: Path,
        checkpoint_every: int = CHECKPOINT_BYTES,
        gather_s: float = GATHER_S,
    ) -> None:
        self.path = directory / LEDGER_NAME
        self._fd: int | None = None
        self._pending: list[_Pending] = []
        self._writing: concurrent.futures.Future[None] | None = None
        self._gather_s = gather_s
        self._gathering: asyncio.TimerHandle | None = None
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="ledger")
        self._file_lock = threading.Lock()
        self._checkpointer = Checkpointer(directory, checkpoint_every)
        self.fault: LocalFaultError | None = None  # once set, every append fails with it

    def open(self) -> None:
        self._fd = open_in_out_dir(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND)
        try:
            _cut_torn_tail(self._fd)
            fsync_directory(self.path.parent)
        except OSError as exc:
            raise file_fault(exc, "cannot open the ledger", self.path) from exc
        # A checkpoint killed with its run leaves its temp file (this run holds the lock).
        for stale in self.path.parent.glob(f".{SNAPSHOT_NAME}.tmp-*"):
            with contextlib.suppress(OSError):
                stale.unlink()

    def close(self) -> None:
        """Finish the write under way, write whatever is still queued, then close."""
        if self._fd is None:
            return
        self._checkpointer.stop_starting()  # the snapshot written below supersedes them
        self._stop_gathering()  # what it gathered is written below
        batch, self._pending = self._pending, []
        if self._writing is not None:
            # Its own completion callback reports any error to its appenders.
            concurrent.futures.wait([self._writing])
        try:
            if batch and self.fault is None:
                self._write(*_lines_of(batch))
        finally:
            _settle(batch, self.fault)
            self._checkpointer.close()  # records first: a slow checkpoint must not delay them
            self._thread.shutdown(wait=True)
            os.close(self._fd)
            self._fd = None
        if self.fault is None:
            # The snapshot is a cache: failing to write it never fails a close (loads replay).
            with contextlib.suppress(Exception):
                _Snapshot.write(self.path.parent)

    def wait_for_checkpoint(self, timeout: float) -> bool:
        """Wait for a checkpoint under way (see `batch.ledger.checkpoint`); False on timeout."""
        return self._checkpointer.wait(timeout)

    def append_now(self, record: Mapping[str, Any]) -> None:
        """Write one record synchronously (start-up, shutdown, tests)."""
        self._write([_encode(record)], _names_files(record))

    def append_many(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Write many records with one write and one fsync (blocking: call from a thread)."""
        records = list(records)
        self._write([_encode(r) for r in records], any(_names_files(r) for r in records))

    async def append(self, record: Mapping[str, Any]) -> None:
        """Append one record; returns when it is durable."""
        await self.append_soon(record)

    def append_soon(
        self, record: Mapping[str, Any], *, urgent: bool = False
    ) -> asyncio.Future[None]:
        """Queue one record (written in order with all others); the future completes when
        it is durable, or carries the write's error. Await it before anything that needs
        the record on disk. An urgent record (one a slot waits for) does not wait to be
        gathered with others: it goes at once, with those already gathered."""
        loop = asyncio.get_running_loop()
        durable: asyncio.Future[None] = loop.create_future()
        self._pending.append(_Pending(_encode(record), durable, _names_files(record)))
        if self._writing is None:
            if urgent or self._gather_s <= 0:
                self._stop_gathering()
                self._write_pending(loop)
            elif self._gathering is None:
                self._gathering = loop.call_later(self._gather_s, self._gathered, loop)
        return durable

    def _gathered(self, loop: asyncio.AbstractEventLoop) -> None:
        self._gathering = None
        if self._writing is None and self._pending:
            self._write_pending(loop)

    def _stop_gathering(self) -> None:
        if self._gathering is not None:
            self._gathering.cancel()
            self._gathering = None

    def _write_pending(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._fd is None or self.fault is not None:
            _settle(self._pending, self.fault or LedgerError(f"ledger {self.path} is not open"))
            self._pending = []
            return
        batch, self._pending = self._pending, []
        self._writing = self._thread.submit(self._write, *_lines_of(batch))
        written = asyncio.wrap_future(self._writing, loop=loop)
        written.add_done_callback(functools.partial(self._written, batch, loop))

    def _written(
        self,
        batch: list[_Pending],
        loop: asyncio.AbstractEventLoop,
        written: asyncio.Future[None],
    ) -> None:
        self._writing = None
        _settle_from(batch, written)
        if self._pending and self._fd is not None:
            self._write_pending(loop)

    def _write(self, lines: list[bytes], names_files: bool = False) -> None:
        data = b"".join(lines)
        with self._file_lock:
            if self.fault is not None:
                raise self.fault
            if self._fd is None:
                raise LedgerError(f"ledger {self.path} is not open")
            start: int | None = None
            try:
                if names_files:  # before the line can reach the disk (see the docstring)
                    fsync_directory(self.path.parent)
                start = os.lseek(self._fd, 0, os.SEEK_END)
                written = 0
                while written < len(data):
                    written += os.write(self._fd, data[written:])
                os.fsync(self._fd)
                if os.fstat(self._fd).st_nlink == 0:  # unlinked: its directory was deleted
                    raise FileNotFoundError(errno.ENOENT, "deleted under the run")
            except OSError as exc:
                # A machine fault (batch.local_faults): what this write left (half a line,
                # lines whose fsync failed) is cut off, so the file stays a prefix of what
                # the run did, and the writer takes nothing more: the run stops.
                if start is not None:
                    with contextlib.suppress(OSError):
                        os.ftruncate(self._fd, start)
                self.fault = file_fault(exc, "cannot write the ledger", self.path)
                raise self.fault from exc
            self._checkpointer.wrote(len(data))


@dataclass(frozen=True, slots=True)
class _Pending:
    line: bytes
    durable: asyncio.Future[None]
    names_files: bool  # the output directory is fsynced before this line is written


def _lines_of(batch: list[_Pending]) -> tuple[list[bytes], bool]:
    """A batch's lines, and whether any of them names output files."""
    return [p.line for p in batch], any(p.names_files for p in batch)


def _names_files(record: Mapping[str, Any]) -> bool:
    return bool(record.get("files"))


def _settle(batch: list[_Pending], error: BaseException | None) -> None:
    for pending in batch:
        future = pending.durable
        if future.done():
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)
            future.exception()  # reported by the run itself: no "never retrieved" noise


def _settle_from(batch: list[_Pending], written: asyncio.Future[None]) -> None:
    if written.cancelled():
        _settle(batch, LedgerError("ledger write was cancelled"))
    else:
        _settle(batch, written.exception())


def _encode(record: Mapping[str, Any]) -> bytes:
    # orjson writes what json.dumps(separators=(",", ":"), ensure_ascii=False) would, about
    # 15x faster: this runs for every record of every item.
    stamped = {"ts": utc_now(), **record}
    try:
        return orjson.dumps(stamped, option=orjson.OPT_APPEND_NEWLINE)
    except TypeError as exc:  # orjson.JSONEncodeError: not JSON-serializable
        try:
            # What orjson refuses but JSON holds (an integer past 64 bits, which a model's
            # unbounded number input accepts and `planned` records): json writes it, and
            # replay reads it back with json when orjson refuses the line.
            text = json.dumps(stamped, separators=(",", ":"), ensure_ascii=False) + "\n"
            return text.encode()
        except (TypeError, ValueError):
            raise LedgerError(f"cannot encode ledger record {record!r}: {exc}") from exc


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
