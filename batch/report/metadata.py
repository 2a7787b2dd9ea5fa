"""`metadata.jsonl`: the output directory as a Hugging Face ImageFolder dataset.

One line per output file on disk, written from the ledger alone (so it also describes the
outputs of older inputs and of items no longer in the manifest), rewritten as a whole by
temp file and rename at the end of every run, interrupted or not.

What `datasets.load_dataset("imagefolder", data_dir=DIR)` does with a directory (checked
against the library; tests load it for real):
- With a metadata file present, rows come from its lines only: thumbnails in `thumbs/`,
  the report and the ledger never become rows. Hidden files (our temp names) are never read.
- It reads the file in 10 MB chunks, and the first chunk fixes each column's type: a column
  that is null (or an empty list) all through the first chunk and set later fails the load.
  So every line has the same keys with one type each, and when a column's first value comes
  late, that one line is moved to the top (`_typed_first`).
- It splits a directory by file names that hold a split word (`test-cat_0.png`,
  `shoe-val_1.png`): those files would become a `test` or `validation` split without
  metadata. Item ids name the files, so we cannot avoid it; we detect it and say to pass
  `data_files="metadata.jsonl"`, which always reads the metadata as one split.
"""

from __future__ import annotations

import json
import logging
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson

from batch.durable import write_atomically
from batch.ledger.journal import ItemRecord, LedgerState, OutputFile, gc_paused, load_state

log = logging.getLogger(__name__)

METADATA_NAME: Final = "metadata.jsonl"
# The library's split words and separators (datasets.data_files: SPLIT_KEYWORDS,
# NON_WORDS_CHARS): a file name starting with one, or holding one between separators.
_SPLIT_WORD: Final = re.compile(
    r"(?:^|[-._ 0-9])(?:train|training|validation|valid|dev|val|test|testing|eval|evaluation)"
    r"[-._ 0-9]"
)
# Columns that may be null (or an empty list) on some lines.
_NULLABLE: Final = ("prompt", "model", "seed", "parameters", "sources", "job_id", "asset_id")
# Well inside the library's first 10 MB chunk: a column whose first value comes before this
# offset is typed by it; a later one has its line moved to the top.
_TYPED_WITHIN: Final = 1 << 20
_INT64: Final = range(-(2**63), 2**63)


@dataclass(frozen=True, slots=True)
class Metadata:
    path: Path
    rows: int
    split_named: tuple[str, ...]  # output file names the library would take for a split


def write_metadata(out_dir: Path, state: LedgerState | None = None) -> Metadata:
    """Write `out_dir/metadata.jsonl` for the outputs on disk; warn if the plain
    `load_dataset("imagefolder", data_dir=...)` call would split them by name."""
    if state is None:
        state = load_state(out_dir)
    with gc_paused():  # 100,000 rows of small dicts, no cycles
        rows = list(metadata_rows(state, out_dir))
        lines = _typed_first([encode_line(row) for row in rows], rows)
    target = out_dir / METADATA_NAME
    write_atomically(target, b"".join(lines))
    split_named = tuple(str(row["file_name"]) for row in rows if is_split_named(row["file_name"]))
    if split_named:
        shown = ", ".join(split_named[:3]) + (", ..." if len(split_named) > 3 else "")
        log.warning(
            "%d output file name(s) hold a split word (%s): load this directory with "
            'datasets.load_dataset("imagefolder", data_dir=%r, data_files=%r), '
            "or the datasets library splits those files off without their metadata",
            len(split_named),
            shown,
            str(out_dir),
            METADATA_NAME,
        )
    return Metadata(target, len(rows), split_named)


def is_split_named(file_name: str) -> bool:
    """Would the datasets library's split inference pick this file for a split of its own?"""
    return _SPLIT_WORD.search(os.path.basename(file_name)) is not None


def metadata_rows(state: LedgerState, out_dir: Path) -> Iterator[dict[str, Any]]:
    """One row per output on disk (see `outputs_on_disk`)."""
    for record, output, name in outputs_on_disk(state, out_dir):
        yield _row(record, output, name)


def outputs_on_disk(
    state: LedgerState, out_dir: Path
) -> Iterator[tuple[ItemRecord, OutputFile, str]]:
    """Each output file the ledger names that is a plain file inside `out_dir`, with its
    record and its normalised relative name: current items first (ledger order), then
    outputs of older inputs."""
    seen: set[str] = set()
    top = _plain_files(out_dir)  # one directory scan instead of a stat per output
    for record in _records(state):
        for output in record.files:
            name = _inside(output.path)
            if name is None or name in seen:
                continue
            if not (name in top if "/" not in name else _is_plain_file(out_dir / name)):
                continue
            seen.add(name)
            yield record, output, name


def _plain_files(directory: Path) -> set[str]:
    """Names of the regular files directly in `directory` (a symlink is not one)."""
    try:
        with os.scandir(directory) as entries:
            return {entry.name for entry in entries if entry.is_file(follow_symlinks=False)}
    except OSError:
        return set()


def _records(state: LedgerState) -> Iterator[ItemRecord]:
    yield from state.items.values()
    for older in state.superseded.values():
        yield from older


def _row(record: ItemRecord, output: OutputFile, name: str) -> dict[str, Any]:
    params = record.params
    seed = params.get("seed") if params is not None else None
    return {
        "file_name": name,
        "id": record.id,
        "prompt": _text(record.prompt),
        "model": _text(record.model),
        "seed": seed if type(seed) is int and seed in _INT64 else None,
        # Other inputs differ per model and in type: one JSON text keeps the column's type.
        "parameters": _json_text(params) if params is not None else None,
        "sources": record.sources,
        "job_id": _text(record.job_id),
        "asset_id": _text(output.asset_id) or None,
        "sha256": str(output.sha256),
    }


def _inside(path: str) -> str | None:
    """The path, normalised, if it names something inside the directory (the loader
    refuses absolute and `..` names, and so would a reader of this file)."""
    if not isinstance(path, str) or not path or "://" in path:
        return None
    normal = os.path.normpath(path)
    if os.path.isabs(normal) or normal == os.pardir or normal.startswith(os.pardir + os.sep):
        return None
    return normal.replace(os.sep, "/")


def _is_plain_file(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)  # a planted symlink is not an output
    except OSError:
        return False


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _json_text(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def encode_line(row: dict[str, Any]) -> bytes:
    """One JSON line, UTF-8."""
    try:
        return orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE)
    except TypeError:  # a lone surrogate from an odd ledger: keep the line, replace the char
        text = json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n"
        return text.encode("utf-8", "replace")


def _typed_first(lines: list[bytes], rows: list[dict[str, Any]]) -> list[bytes]:
    """Move to the top each line that gives a column its first value past `_TYPED_WITHIN`
    bytes, so that the loader's first chunk sees every column's type."""
    late: set[int] = set()
    for column in _NULLABLE:
        offset = 0
        for index, row in enumerate(rows):
            if row[column] is not None and row[column] != []:
                if offset > _TYPED_WITHIN:
                    late.add(index)
                break
            offset += len(lines[index])
    if not late:
        return lines
    first = sorted(late)
    return [lines[i] for i in first] + [line for i, line in enumerate(lines) if i not in late]
