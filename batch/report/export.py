"""`scenario-batch export OUT --pairs DEST`: the edit pairs of a directory as a dataset.

DEST is a Hugging Face ImageFolder that `datasets.load_dataset(DEST)` reads: one row per
output with a `source` image (the item's first reference), an `edited` image (the output),
the `instruction` (the prompt), the item `id` and the `model`. `metadata.jsonl` declares
the two image columns by its `source_file_name` and `edited_file_name` keys.

Offline, from the ledger and the files: the ledger's `planned` records hold each item's
prompt, model and references. An output is exported only when both images are verified:
the output against the sha256 the ledger recorded, the source against the sha256 of the
image that was uploaded for the job, when the ledger knows it (a reference edited since
would make a false pair). Outputs that cannot be paired are listed, not guessed at.

Self-contained: images are copied into DEST under names made of their sha256 (identical
sources are stored once, and no item id can put a split word such as `test` in a file
name, which the library would take for a split). Nothing in DEST points outside it.
DEST is built as a hidden sibling and renamed into place at the end: an export that dies
leaves no half dataset under DEST's name.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import io
import os
import secrets
import shutil
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from PIL import Image

from batch.durable import fsync_directory
from batch.errors import ExportError, UsageError
from batch.ledger.journal import LEDGER_NAME, ItemRecord, LedgerState, OutputFile, load_state
from batch.report.metadata import METADATA_NAME, encode_line, outputs_on_disk

SOURCE_DIR: Final = "source"
EDITED_DIR: Final = "edited"
_IMAGE_SUFFIXES: Final = frozenset(
    {".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
)
_STAGING: Final = ".partial-"  # DEST is built as `.<name>.partial-<random>` beside it


@dataclass(slots=True)
class PairsExport:
    """What an export wrote, and what it could not."""

    dest: Path
    pairs: int = 0
    not_succeeded: Counter[str] = field(default_factory=Counter)  # ledger state -> items
    skipped: list[str] = field(default_factory=list)  # "<output>: <why>", one per output

    @property
    def complete(self) -> bool:
        return not self.not_succeeded and not self.skipped


def export_pairs(out_dir: Path, dest: Path) -> PairsExport:
    """Write the pairs of `out_dir` as a dataset at `dest` (absent or an empty directory).

    Raises UsageError when the arguments are wrong (nothing written), ExportError when a
    file cannot be written."""
    _check_places(out_dir, dest)
    state = load_state(out_dir)
    result = PairsExport(dest)
    for record in state.items.values():
        if record.state != "succeeded":
            result.not_succeeded[record.state] += 1
    staging = dest.parent / f".{dest.name}{_STAGING}{secrets.token_hex(4)}"
    try:
        _remove_stale_staging(dest)
        staging.mkdir(parents=True)
        rows = list(_write_pairs(state, out_dir, staging, result))
        if rows:
            (staging / METADATA_NAME).write_bytes(b"".join(map(encode_line, rows)))
            os.sync()  # one flush for every copied file (an fsync each costs minutes at 100k)
            os.replace(staging, dest)  # an empty DEST directory is replaced, a full one refused
            fsync_directory(dest.parent)
    except OSError as exc:
        raise ExportError(f"cannot write the export at {dest}: {exc.strerror or exc}") from exc
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(staging)
    result.pairs = len(rows)
    return result


def _check_places(out_dir: Path, dest: Path) -> None:
    if not (out_dir / LEDGER_NAME).is_file():
        raise UsageError(f"{out_dir}: no {LEDGER_NAME} here: not an output directory of a run")
    out_real, dest_real = out_dir.resolve(), dest.resolve()
    if dest_real == out_real or out_real in dest_real.parents:
        raise UsageError(
            f"--pairs {dest}: inside the output directory {out_dir}; "
            "the export is a dataset of its own: choose a directory outside it"
        )
    if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
        raise UsageError(f"--pairs {dest}: exists and is not a directory")
    if dest.is_dir() and any(dest.iterdir()):
        raise UsageError(f"--pairs {dest}: not empty; choose a new directory or empty it")


def _remove_stale_staging(dest: Path) -> None:
    """A killed export's hidden build directory is never a result."""
    if dest.parent.is_dir():
        for leftover in dest.parent.glob(f".{glob.escape(dest.name)}{_STAGING}*"):
            with contextlib.suppress(OSError):
                shutil.rmtree(leftover)


def _write_pairs(
    state: LedgerState, out_dir: Path, staging: Path, result: PairsExport
) -> Iterator[dict[str, Any]]:
    uploaded = _uploaded_sha256(state)
    written: set[str] = set()
    (staging / SOURCE_DIR).mkdir()
    (staging / EDITED_DIR).mkdir()
    for record, output, name in outputs_on_disk(state, out_dir):
        try:
            source = _source_of(record, uploaded)
            edited = _read_output(out_dir / name, output)
        except _Unpaired as why:
            result.skipped.append(f"{name}: {why}")
            continue
        source_name = _store(staging, SOURCE_DIR, source, written)
        edited_name = _store(staging, EDITED_DIR, edited, written)
        yield {
            "source_file_name": source_name,
            "edited_file_name": edited_name,
            "instruction": record.prompt,
            "id": record.id,
            "model": record.model if isinstance(record.model, str) else None,
        }


class _Unpaired(Exception):
    """Why an output cannot be exported as a pair."""


@dataclass(frozen=True, slots=True)
class _Image:
    data: bytes
    sha256: str
    suffix: str


def _source_of(record: ItemRecord, uploaded: dict[str, str]) -> _Image:
    if not isinstance(record.prompt, str):
        raise _Unpaired("no prompt in the ledger")
    if not record.sources:
        raise _Unpaired(
            "the ledger does not name its reference images (written by an older version): "
            "run its manifest once more to record them (nothing is submitted again)"
        )
    first = record.sources[0]
    if not os.path.isabs(first):
        raise _Unpaired(f"its first reference {first} is not a local file (export is offline)")
    try:
        with open(first, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise _Unpaired(f"its first reference {first} cannot be read: {exc.strerror}") from exc
    digest = hashlib.sha256(data).hexdigest()
    sent = uploaded.get(record.references[0]) if record.references else None
    if sent is not None and sent != digest:
        raise _Unpaired(f"its first reference {first} has changed since the job was sent")
    return _Image(data, digest, _suffix(first, data))


def _read_output(path: Path, output: OutputFile) -> _Image:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise _Unpaired(f"cannot be read: {exc.strerror}") from exc
    digest = hashlib.sha256(data).hexdigest()
    if digest != output.sha256:
        raise _Unpaired("its bytes differ from the sha256 the ledger recorded")
    return _Image(data, digest, _suffix(path.name, data))


def _uploaded_sha256(state: LedgerState) -> dict[str, str]:
    """Asset id -> sha256 of the bytes uploaded for it (the ledger's content-keyed assets)."""
    return {
        asset_id: key.removeprefix("sha256:")
        for key, asset_id in state.assets.items()
        if key.startswith("sha256:")
    }


def _suffix(name: str, data: bytes) -> str:
    """The file's own image suffix, else one named after the format its bytes are in."""
    suffix = os.path.splitext(name)[1].lower()
    if suffix in _IMAGE_SUFFIXES:
        return suffix
    try:
        with Image.open(io.BytesIO(data)) as image:
            kind = (image.format or "").lower()
    except Exception:  # the loader will say what is wrong with it; keep the pair
        kind = ""
    return f".{kind}" if f".{kind}" in _IMAGE_SUFFIXES else ".img"


def _store(staging: Path, folder: str, image: _Image, written: set[str]) -> str:
    """Write an image once under a name made of its hash; return its name inside DEST."""
    name = f"{folder}/{image.sha256}{image.suffix}"
    if name not in written:
        (staging / name).write_bytes(image.data)
        written.add(name)
    return name
