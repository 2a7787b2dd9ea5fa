"""`export OUT --pairs DEST`: a self-contained dataset of (source, edited, instruction) that
the real `datasets` library loads, written offline from the ledger and verified files."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from batch.cli.main import main
from batch.ledger.journal import LEDGER_NAME, SNAPSHOT_NAME, load_state
from batch.simulator import Simulator
from tests.datasets_helpers import load
from tests.pipeline_helpers import ledger_lines, run, write_images, write_manifest


def _export(out: Path, dest: Path) -> int:
    return main(["export", str(out), "--pairs", str(dest), "-q"])


def _pixels(data: bytes) -> bytes:
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB").tobytes()


def _as_bytes(image: Any) -> bytes:
    return image.convert("RGB").tobytes()  # type: ignore[no-any-return]


@pytest.fixture
async def finished(simulator: Simulator, tmp_path: Path) -> tuple[Path, Path, list[Path]]:
    """A finished run: 3 items (two share a reference; one has 2 outputs) and its manifest."""
    refs = write_images(tmp_path / "refs", 2)
    jobs = [
        {"id": "cat", "prompt": "Watercolor", "referenceImages": [str(refs[0])]},
        {"id": "cat-ink", "prompt": "Ink", "referenceImages": [str(refs[0]), str(refs[1])]},
        {"id": "test-dog", "prompt": "Night", "referenceImages": [str(refs[1])], "numOutputs": 2},
    ]
    manifest = write_manifest(tmp_path, jobs)
    out = tmp_path / "out"
    assert (await run(simulator, manifest, out)).exit_code == 0
    return out, manifest, refs


async def test_pairs_load_with_both_images_and_survive_a_move(
    finished: tuple[Path, Path, list[Path]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """load_dataset(DEST) gives a row per output with the right images, even once moved."""
    out, _, refs = finished
    dest = tmp_path / "pairs"
    assert _export(out, dest) == 0
    assert "4 pair(s) exported" in capsys.readouterr().out

    ref_pixels = [_pixels(p.read_bytes()) for p in refs]
    moved = tmp_path / "elsewhere" / "edit-pairs"
    shutil.copytree(dest, moved)
    shutil.rmtree(dest)
    shutil.rmtree(out)
    shutil.rmtree(refs[0].parent)
    assert not [p for p in moved.rglob("*") if p.is_symlink()]

    train = load(moved, tmp_path / "hf")["train"]
    assert train.column_names == ["source", "edited", "instruction", "id", "model"]
    assert {type(train.features[c]).__name__ for c in ("source", "edited")} == {"Image"}
    rows = sorted(train, key=lambda r: (r["id"], _as_bytes(r["edited"])))
    assert [(r["id"], r["instruction"]) for r in rows] == [
        ("cat", "Watercolor"),
        ("cat-ink", "Ink"),
        ("test-dog", "Night"),
        ("test-dog", "Night"),
    ]
    assert {r["model"] for r in rows} == {"model_flux-kontext-editing"}
    # The first reference is the source (cat-ink's second one is not).
    sources = [_as_bytes(r["source"]) for r in rows]
    assert sources == [ref_pixels[0], ref_pixels[0], ref_pixels[1], ref_pixels[1]]
    assert len({_as_bytes(r["edited"]) for r in rows}) == 4


async def test_sources_and_outputs_are_the_exact_files(
    finished: tuple[Path, Path, list[Path]], tmp_path: Path
) -> None:
    """Each row's source is the item's first reference, its edited image the output file."""
    out, _, refs = finished
    dest = tmp_path / "pairs"
    assert _export(out, dest) == 0
    state = load_state(out)
    lines = [json.loads(x) for x in (dest / "metadata.jsonl").read_text().splitlines()]
    first_ref = {"cat": refs[0], "cat-ink": refs[0], "test-dog": refs[1]}
    for line in lines:
        assert (dest / line["source_file_name"]).read_bytes() == first_ref[line["id"]].read_bytes()
        edited = (dest / line["edited_file_name"]).read_bytes()
        assert hashlib.sha256(edited).hexdigest() in {
            f.sha256 for f in state.items[line["id"]].files
        }
        assert (
            not Path(line["source_file_name"]).is_absolute()
            and ".." not in line["source_file_name"]
        )
    assert len(list((dest / "source").iterdir())) == 2  # a shared reference is stored once


async def test_where_the_export_may_not_go_is_refused_with_exit_2(
    finished: tuple[Path, Path, list[Path]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """DEST in OUT, OUT itself, a non-empty DEST, or an OUT without ledger: exit 2, no write."""
    out, _, _ = finished
    before = sorted(p.name for p in out.iterdir())
    assert _export(out, out / "pairs") == 2
    assert "inside the output directory" in capsys.readouterr().err
    assert _export(out, out) == 2
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    assert _export(out, full) == 2
    assert "not empty" in capsys.readouterr().err
    assert _export(tmp_path / "refs", tmp_path / "pairs") == 2
    assert "no ledger.jsonl" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == before
    assert [p.name for p in full.iterdir()] == ["keep.txt"]
    assert not (tmp_path / "pairs").exists()


async def test_an_unfinished_directory_exports_what_succeeded_and_says_so(
    simulator: Simulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run stopped by its budget: its successes are exported, the rest named, exit 1."""
    images = write_images(tmp_path / "refs", 4)
    jobs = [
        {"id": f"i{n}", "prompt": "p", "referenceImages": [str(p)]} for n, p in enumerate(images)
    ]
    out = tmp_path / "out"
    await run(simulator, write_manifest(tmp_path, jobs), out, max_cost=10)
    dest = tmp_path / "pairs"

    assert _export(out, dest) == 1
    said = capsys.readouterr().out
    assert "2 pair(s) exported" in said and "unfinished (2 planned)" in said
    assert len(load(dest, tmp_path / "hf")["train"]) == 2


async def test_a_reference_edited_or_gone_since_the_run_is_left_out(
    finished: tuple[Path, Path, list[Path]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A source whose bytes are not what was uploaded, or that is gone, makes no false pair."""
    out, _, refs = finished
    refs[1].write_bytes(refs[0].read_bytes())  # test-dog's source now shows another image
    assert main(["export", str(out), "--pairs", str(tmp_path / "pairs")]) == 1
    assert capsys.readouterr().err.count("has changed since the job was sent") == 2
    ids = [json.loads(x)["id"] for x in (tmp_path / "pairs/metadata.jsonl").read_text().split()]
    assert sorted(ids) == ["cat", "cat-ink"]

    refs[0].unlink()
    assert main(["export", str(out), "--pairs", str(tmp_path / "pairs2")]) == 1
    assert capsys.readouterr().err.count("cannot be read") == 2


async def test_an_older_ledger_is_completed_by_a_rerun_that_submits_nothing(
    simulator: Simulator,
    finished: tuple[Path, Path, list[Path]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Without recorded inputs export says how to get them; a rerun records them, free."""
    out, manifest, _ = finished
    old = [
        {k: v for k, v in line.items() if k not in ("inputs", "model")}
        for line in ledger_lines(out)
    ]
    (out / LEDGER_NAME).write_text("".join(json.dumps(line) + "\n" for line in old))
    (out / SNAPSHOT_NAME).unlink()
    times = {r.id: (r.first_ts, r.last_ts) for r in load_state(out).items.values()}

    assert main(["export", str(out), "--pairs", str(tmp_path / "pairs")]) == 1
    assert "run its manifest once more" in capsys.readouterr().err
    assert not (tmp_path / "pairs").exists()

    generates = sum(r.is_generate for r in simulator.request_log)
    assert (await run(simulator, manifest, out)).exit_code == 0
    assert sum(r.is_generate for r in simulator.request_log) == generates
    state = load_state(out)
    assert {r.id: (r.first_ts, r.last_ts) for r in state.items.values()} == times
    assert _export(out, tmp_path / "pairs") == 0


def test_a_first_reference_that_is_no_local_file_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An item sent with an asset id as its first reference: offline, it cannot be paired."""
    out = tmp_path / "out"
    out.mkdir()
    data = b"\x89PNG not really"
    (out / "a_0.png").write_bytes(data)
    base = {"type": "item", "id": "a", "fp": "f"}
    lines = [
        {
            **base,
            "state": "planned",
            "prompt": "p",
            "model": "m",
            "inputs": {"sources": ["asset_x"]},
        },
        {
            **base,
            "state": "succeeded",
            "files": [{"path": "a_0.png", "sha256": hashlib.sha256(data).hexdigest(), "size": 4}],
        },
    ]
    (out / LEDGER_NAME).write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert main(["export", str(out), "--pairs", str(tmp_path / "pairs")]) == 1
    assert "asset_x is not a local file" in capsys.readouterr().err


async def test_a_write_failure_is_one_line_and_leaves_no_partial_dataset(
    finished: tuple[Path, Path, list[Path]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """DEST under a file: one line, exit 1; a killed export's leftovers are cleared next time."""
    out, _, _ = finished
    (tmp_path / "file").write_text("x")
    assert _export(out, tmp_path / "file" / "pairs") == 1
    assert capsys.readouterr().err.startswith("scenario-batch: cannot write the export at")

    leftover = tmp_path / ".pairs.partial-dead"
    (leftover / "source").mkdir(parents=True)
    assert _export(out, tmp_path / "pairs") == 0
    assert not leftover.exists()
    assert [name for name in os.listdir(tmp_path) if name.startswith(".pairs")] == []
