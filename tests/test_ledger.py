"""The ledger: durable appends, torn lines, replay, and the directory lock."""

from __future__ import annotations

import asyncio
import io
import json
import multiprocessing
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batch.errors import LockedError
from batch.ledger import journal as ledger_module
from batch.ledger.journal import (
    LEDGER_NAME,
    SNAPSHOT_NAME,
    DirectoryLock,
    ItemRecord,
    LedgerState,
    LedgerWriter,
    OutputFile,
    load_state,
)


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


def _reference_replay(data: bytes) -> LedgerState:
    """The replay as first written: json per line, every field probed in turn (the oracle)."""
    state = LedgerState()
    for raw in io.BytesIO(data):  # lines as a binary file yields them: split at b"\n" only
        if not raw.endswith(b"\n"):
            state.torn_lines += 1
            break
        try:
            record = json.loads(raw)
        except ValueError:
            record = None
        if not isinstance(record, dict):
            state.torn_lines += 1
            continue
        ts = record.get("ts")
        if isinstance(ts, str):
            state.first_ts = state.first_ts or ts
            state.last_ts = ts
        kind = record.get("type")
        if kind == "asset":
            key, asset_id = record.get("key"), record.get("assetId")
            if isinstance(key, str) and isinstance(asset_id, str):
                state.assets[key] = asset_id
        elif kind == "run" and record.get("event") == "start":
            state.runs += 1
        elif kind == "item":
            item_id, fp = record.get("id"), record.get("fp")
            if not isinstance(item_id, str) or not isinstance(fp, str):
                continue
            current = state.items.get(item_id)
            if current is None or current.fp != fp:
                if current is not None:
                    state.superseded.setdefault(item_id, []).append(current)
                older = state.superseded.get(item_id, [])
                match = [i for i, r in enumerate(older) if r.fp == fp]
                current = older.pop(match[0]) if match else ItemRecord(id=item_id, fp=fp)
                state.items[item_id] = current
            _reference_fold(current, record, ts)
    return state


def _reference_fold(item: ItemRecord, record: dict[str, Any], ts: Any) -> None:
    state = record.get("state")
    if isinstance(ts, str) and state is not None:
        item.first_ts = item.first_ts or ts
        item.last_ts = ts
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
    if isinstance(record.get("model"), str):
        item.model = record["model"]
    inputs = record.get("inputs")
    if isinstance(inputs, dict):
        params, sources = inputs.get("params"), inputs.get("sources")
        item.params = params if isinstance(params, dict) else None
        item.sources = (
            [s for s in sources if isinstance(s, str)] if isinstance(sources, list) else []
        )


# Odd values on purpose: non-string ts and states, NaN and huge exponents (json accepts what
# orjson refuses), lone surrogates, empty strings, integers at the 64-bit edge.
_texts = st.sampled_from(["", "a", "b", "t1", "t2", "é", "\ud800", "2026-01-01T00:00:00Z"])
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    _texts,
)
_files = st.lists(
    st.fixed_dictionaries(
        {"path": _texts, "sha256": _texts, "size": st.integers(0, 2**40)},
        optional={"assetId": _texts},
    ),
    max_size=2,
)
_item = st.fixed_dictionaries(
    {
        "type": st.just("item"),
        "id": st.sampled_from(["a", "b", "c"]),
        "fp": st.sampled_from(["f1", "f2"]),
    },
    optional={
        "ts": st.one_of(_texts, _scalars),
        "state": st.one_of(
            st.sampled_from(["planned", "submitting", "submitted", "succeeded", "failed"]),
            _scalars,
        ),
        "submittedAt": _scalars,
        "model": st.one_of(st.sampled_from(["model_a", "model_b"]), _scalars),
        "notCreated": _scalars,
        "jobId": st.one_of(st.sampled_from(["j1", "j2", "j3"]), _scalars),
        "assetIds": st.lists(_texts, max_size=2),
        "files": _files,
        "cost": st.one_of(st.none(), st.integers(-10, 10), st.floats(allow_nan=True)),
        "error": _scalars,
        "hint": _scalars,
        "prompt": _scalars,
        "references": st.lists(_scalars, max_size=2),
        "inputs": st.one_of(
            _scalars,
            st.fixed_dictionaries(
                {},
                optional={
                    "params": st.one_of(_scalars, st.dictionaries(_texts, _scalars, max_size=2)),
                    "sources": st.one_of(_scalars, st.lists(_scalars, max_size=2)),
                },
            ),
        ),
    },
)
_other = st.one_of(
    st.fixed_dictionaries(
        {"type": st.just("asset")}, optional={"key": _scalars, "assetId": _scalars, "ts": _texts}
    ),
    st.fixed_dictionaries({"type": st.just("run"), "event": st.sampled_from(["start", "end"])}),
    st.fixed_dictionaries({"type": _scalars, "ts": _scalars}),
)
_garbage = st.sampled_from([b"", b"[1, 2]", b"{not json", b"\xff\xfe", b"\xef\xbb\xbf{}", b"  "])


def _line(record_and_ascii: tuple[dict[str, Any], bool]) -> bytes:
    # json.dumps as the writer does it: NaN and Infinity come out as bare words; with
    # ensure_ascii a lone surrogate is an escape json reads and orjson refuses.
    record, ascii_only = record_and_ascii
    return json.dumps(record, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


@settings(max_examples=300, deadline=None)
@given(
    lines=st.lists(
        st.one_of(st.tuples(st.one_of(_item, _other), st.booleans()).map(_line), _garbage),
        max_size=40,
    ),
    torn=st.binary(max_size=12),
)
def test_fast_replay_equals_a_plain_replay(
    tmp_path_factory: Any, lines: list[bytes], torn: bytes
) -> None:
    """On random ledgers (odd values, bad lines, a torn tail), load_state equals a plain replay."""
    directory = tmp_path_factory.mktemp("ledger")
    data = b"".join(line + b"\n" for line in lines) + torn.replace(b"\n", b"")
    (directory / LEDGER_NAME).write_bytes(data)
    fast, plain = load_state(directory), _reference_replay(data)
    # repr, not ==: NaN != NaN, and repr also tells 1 from 1.0 and True from 1.
    assert repr(fast) == repr(plain)


def test_replay_reads_large_ledgers_across_read_blocks(tmp_path: Path) -> None:
    """Lines that straddle the 1 MiB read blocks load exactly as a plain replay does."""
    records = [
        {"type": "item", "id": f"i{n}", "fp": "f", "state": "planned", "prompt": "x" * (n % 997)}
        for n in range(20_000)
    ]
    data = b"".join(json.dumps(r).encode() + b"\n" for r in records) + b'{"type": "it'
    (tmp_path / LEDGER_NAME).write_bytes(data)
    assert len(data) > 4 * (1 << 20)
    assert repr(load_state(tmp_path)) == repr(_reference_replay(data))


def _close_writer(directory: Path) -> None:
    """Open and close a writer: what the end of a run does (it writes the snapshot)."""
    writer = LedgerWriter(directory)
    writer.open()
    writer.close()


@settings(max_examples=150, deadline=None)
@given(
    lines=st.lists(
        st.one_of(st.tuples(st.one_of(_item, _other), st.booleans()).map(_line), _garbage),
        min_size=1,
        max_size=30,
    ),
    split=st.integers(min_value=0),
    torn=st.binary(max_size=12),
)
def test_snapshot_plus_later_lines_equals_a_plain_replay(
    tmp_path_factory: Any, lines: list[bytes], split: int, torn: bytes
) -> None:
    """A snapshot of the first lines, then more lines and a torn tail: a plain replay's state."""
    directory = tmp_path_factory.mktemp("ledger")
    cut = split % (len(lines) + 1)
    head = b"".join(line + b"\n" for line in lines[:cut])
    (directory / LEDGER_NAME).write_bytes(head)
    _close_writer(directory)
    assert (directory / SNAPSHOT_NAME).exists() == bool(head)
    data = head + b"".join(line + b"\n" for line in lines[cut:]) + torn.replace(b"\n", b"")
    (directory / LEDGER_NAME).write_bytes(data)
    assert repr(load_state(directory)) == repr(_reference_replay(data))


def _two_runs(directory: Path) -> bytes:
    records = _records()
    _write(directory, records[:6])  # the close writes a snapshot of these
    return _write(directory, records[6:])


def count_decoded_lines(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """From now on, every ledger line a load decodes is appended to the returned list."""
    decoded: list[bytes] = []
    real = ledger_module._decode

    def counting(raw: bytes) -> dict[str, Any] | None:
        decoded.append(raw)
        return real(raw)

    monkeypatch.setattr(ledger_module, "_decode", counting)
    return decoded


def test_snapshot_is_used_for_the_lines_it_covers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a snapshot, only the lines written after it are decoded, and the state is exact."""
    data = _two_runs(tmp_path)
    (tmp_path / LEDGER_NAME).write_bytes(data + b'{"type": "item", "id": "b", "fp": "f2", "st')
    decoded = count_decoded_lines(monkeypatch)
    # The second close snapshotted all ten lines: nothing left to decode but the torn tail
    # (which is never decoded).
    state = load_state(tmp_path)
    assert decoded == []
    assert repr(state) == repr(_reference_replay(data + b"{"))
    assert state.torn_lines == 1


def test_snapshot_keeps_superseded_inputs_in_order(tmp_path: Path) -> None:
    """Edited and restored inputs, their order and odd values (NaN) survive snapshots."""

    def item(item_id: str, fp: str, **more: Any) -> dict[str, Any]:
        return {"type": "item", "id": item_id, "fp": fp, "state": "planned", **more}

    _write(tmp_path, [item("a", "f1", cost=1.5), item("a", "f2"), item("a", "f1")])
    _write(tmp_path, [item("b", "f1"), item("b", "f2", error=float("nan"))])
    data = _write(tmp_path, [item("a", "f2", cost=2), item("b", "f1")])
    state = load_state(tmp_path)
    assert list(state.superseded) == ["a", "b"]
    assert repr(state) == repr(_reference_replay(data))


def _snapshot_defects() -> dict[str, Any]:
    def rewrite(transform: Any) -> Any:
        def apply(directory: Path) -> None:
            path = directory / SNAPSHOT_NAME
            path.write_bytes(transform(path.read_bytes()))

        return apply

    def header_field(name: str, value: Any) -> Any:
        def transform(data: bytes) -> bytes:
            head, _, body = data.partition(b"\n")
            header = json.loads(head)
            header[name] = value
            return json.dumps(header).encode() + b"\n" + body

        return rewrite(transform)

    def symlink(directory: Path) -> None:
        target = directory.parent / f"{directory.name}-elsewhere.json"
        (directory / SNAPSHOT_NAME).rename(target)
        (directory / SNAPSHOT_NAME).symlink_to(target)

    def replace_with_directory(directory: Path) -> None:
        (directory / SNAPSHOT_NAME).unlink()
        (directory / SNAPSHOT_NAME).mkdir()

    return {
        "missing": lambda directory: (directory / SNAPSHOT_NAME).unlink(),
        "empty": rewrite(lambda data: b""),
        "garbage": rewrite(lambda data: b"\x00not json\n" + data),
        "truncated": rewrite(lambda data: data[: len(data) * 2 // 3]),
        "extra row": rewrite(lambda data: data + data.splitlines(keepends=True)[-1]),
        "body edited": rewrite(lambda data: data.replace(b'"succeeded"', b'"failed"   ')),
        "other version": header_field("version", 99),
        "covers more than the ledger": header_field("ledgerSize", 10**9),
        "covers a mid-line offset": header_field("ledgerSize", 7),
        "symlink": symlink,
        "a directory": replace_with_directory,
    }


@pytest.mark.parametrize("defect", sorted(_snapshot_defects()))
def test_a_defective_snapshot_means_a_full_replay(tmp_path: Path, defect: str) -> None:
    """Missing, unreadable or inconsistent snapshots are ignored: the full replay is exact."""
    data = _two_runs(tmp_path)
    (tmp_path / LEDGER_NAME).write_bytes(data + b"{")
    _snapshot_defects()[defect](tmp_path)
    assert repr(load_state(tmp_path)) == repr(_reference_replay(data + b"{"))


def test_a_snapshot_of_another_ledger_is_ignored(tmp_path: Path) -> None:
    """A ledger cut shorter, or rewritten to the same size, is replayed in full."""
    data = _two_runs(tmp_path)
    shorter = b"".join(data.splitlines(keepends=True)[:4])
    (tmp_path / LEDGER_NAME).write_bytes(shorter)
    assert repr(load_state(tmp_path)) == repr(_reference_replay(shorter))

    (tmp_path / "again").mkdir()
    _two_runs(tmp_path / "again")
    rewritten = data.replace(b'"prompt":"p"', b'"prompt":"q"')
    assert len(rewritten) == len(data) and rewritten != data
    (tmp_path / "again" / LEDGER_NAME).write_bytes(rewritten)
    state = load_state(tmp_path / "again")
    assert state.items["a"].prompt == "q"
    assert repr(state) == repr(_reference_replay(rewritten))


def test_a_snapshot_that_cannot_be_written_never_fails_the_close(tmp_path: Path) -> None:
    """A directory in the snapshot's place: the writer still closes, the ledger still loads."""
    (tmp_path / SNAPSHOT_NAME).mkdir()
    data = _write(tmp_path, _records())
    assert (tmp_path / SNAPSHOT_NAME).is_dir()
    assert repr(load_state(tmp_path)) == repr(_reference_replay(data))


def test_older_readers_and_writers_still_work_with_a_snapshot(tmp_path: Path) -> None:
    """The ledger stays complete JSON Lines; appends made without a snapshot update are read."""
    data = _two_runs(tmp_path)
    assert [json.loads(line) for line in data.splitlines()]  # what an older reader does
    extra = b'{"type":"item","id":"c","fp":"f3","state":"planned"}\n'
    (tmp_path / LEDGER_NAME).write_bytes(data + extra)  # an older writer: no snapshot update
    state = load_state(tmp_path)
    assert "c" in state.items
    assert repr(state) == repr(_reference_replay(data + extra))


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


def _count_writes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The ledger's writes from now on, each as its number of lines."""
    writes: list[int] = []
    write = LedgerWriter._write

    def counted(self: LedgerWriter, lines: list[bytes], names_files: bool = False) -> None:
        writes.append(len(lines))
        write(self, lines, names_files)

    monkeypatch.setattr(LedgerWriter, "_write", counted)
    return writes


async def test_records_handed_over_apart_share_one_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Records that arrive a little apart (jobs ending one by one) wait for each other
    and go to disk in one write and one fsync; a record arriving alone waits no longer
    than the gathering window, and one arriving after the window gets a write of its own."""
    writes = _count_writes(monkeypatch)
    writer = LedgerWriter(tmp_path, gather_s=0.05)
    writer.open()
    record = {"type": "item", "fp": "f", "state": "planned"}
    started = time.monotonic()
    durable = [writer.append_soon({**record, "id": "a"})]
    for n in range(3):
        await asyncio.sleep(0.005)  # well inside the window, but apart
        durable.append(writer.append_soon({**record, "id": f"b{n}"}))
    async with asyncio.timeout(5):
        await asyncio.gather(*durable)
    assert writes == [4]
    assert 0.05 <= time.monotonic() - started < 2.0
    await asyncio.sleep(0.06)
    async with asyncio.timeout(5):
        await writer.append({**record, "id": "c"})
    assert writes == [4, 1]
    writer.close()
    assert set(load_state(tmp_path).items) == {"a", "b0", "b1", "b2", "c"}


async def test_an_urgent_record_goes_at_once_with_those_gathered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A record a slot waits for (`submitting`) does not wait out the window: it is written
    at once, together with the records already gathering."""
    writes = _count_writes(monkeypatch)
    writer = LedgerWriter(tmp_path, gather_s=30.0)
    writer.open()
    record = {"type": "item", "fp": "f", "state": "planned"}
    gathering = writer.append_soon({**record, "id": "a"})
    async with asyncio.timeout(5):
        await writer.append_soon({**record, "id": "b", "state": "submitting"}, urgent=True)
        await gathering
    assert writes == [2]
    writer.close()


async def test_records_gathering_at_close_are_written(tmp_path: Path) -> None:
    """A close while records wait for their write writes them (and their awaiters learn it)."""
    writer = LedgerWriter(tmp_path, gather_s=30.0)
    writer.open()
    durable = writer.append_soon({"type": "item", "id": "a", "fp": "f", "state": "planned"})
    writer.close()
    async with asyncio.timeout(5):
        await durable
    assert set(load_state(tmp_path).items) == {"a"}


async def test_a_record_naming_files_is_written_only_after_the_directory_is_synced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Downloads leave the fsync of their renames to the ledger: a record with `files` goes
    to disk only after the output directory has been synced, by every way of appending;
    records without files cost no directory fsync."""
    handed: list[str] = []  # item ids, in the order they were handed to the writer
    syncs: list[tuple[int, int]] = []  # (records handed over, ledger size) at each fsync

    def fsync_directory(directory: Path) -> None:
        assert directory == tmp_path
        syncs.append((len(handed), (tmp_path / LEDGER_NAME).stat().st_size))

    monkeypatch.setattr(ledger_module, "fsync_directory", fsync_directory)
    writer = LedgerWriter(tmp_path)
    writer.open()
    syncs.clear()  # opening syncs the ledger's own creation

    def item(n: int, files: bool) -> dict[str, Any]:
        handed.append(f"i{n}")
        record: dict[str, Any] = {"type": "item", "id": f"i{n}", "fp": "f", "state": "planned"}
        if files:
            record["files"] = [{"path": f"i{n}_0.png", "sha256": "00", "size": 1}]
        return record

    writer.append_now(item(0, files=False))
    writer.append_many([item(1, files=False), item(2, files=False)])
    await asyncio.gather(*(writer.append_soon(item(n, files=False)) for n in range(3, 40)))
    assert syncs == []
    writer.append_now(item(40, files=True))
    writer.append_many([item(41, files=False), item(42, files=True)])
    await asyncio.gather(*(writer.append_soon(item(n, files=n % 7 == 0)) for n in range(43, 200)))
    writer.close()

    data = (tmp_path / LEDGER_NAME).read_bytes()
    offset, starts = 0, {}
    for line in data.splitlines(keepends=True):
        starts[json.loads(line)["id"]] = offset
        offset += len(line)
    with_files = [40, 42, *range(49, 200, 7)]
    for n in with_files:
        # A sync after the record was handed over, and before its line was written.
        assert any(
            count > handed.index(f"i{n}") and size <= starts[f"i{n}"] for count, size in syncs
        ), n
    # Group commit holds for the sync too: at most one per ledger write.
    assert 3 <= len(syncs) <= len(with_files)


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


def test_an_integer_past_64_bits_is_written_and_read_back(tmp_path: Path) -> None:
    """orjson refuses it; the writer falls back to json, and replay reads the line (as the
    number it is, if not to the last digit: orjson reads such an integer as a float)."""
    writer = LedgerWriter(tmp_path)
    writer.open()
    big = {
        "type": "item",
        "id": "a",
        "fp": "f",
        "state": "planned",
        "inputs": {"params": {"n": 2**70}},
    }
    writer.append_now(big)
    writer.close()
    params = load_state(tmp_path).items["a"].params
    assert params is not None and params["n"] == pytest.approx(2**70)
