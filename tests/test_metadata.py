"""metadata.jsonl: the output directory loads with the real `datasets` library, exactly the
outputs, with consistent column types, whatever else lies in the directory."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batch.ledger.journal import LedgerWriter, load_state
from batch.report.metadata import METADATA_NAME, is_split_named, metadata_rows, write_metadata
from batch.simulator import Simulator
from tests.conftest import SimulatorFactory, make_png
from tests.datasets_helpers import load
from tests.pipeline_helpers import run, write_images, write_manifest

COLUMNS = [
    "image",
    "id",
    "prompt",
    "model",
    "seed",
    "parameters",
    "sources",
    "job_id",
    "asset_id",
    "sha256",
]


def _metadata(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / METADATA_NAME).read_text().splitlines()]


async def test_a_run_loads_as_an_imagefolder_of_exactly_its_outputs(
    simulator: Simulator, tmp_path: Path
) -> None:
    """After a run, load_dataset("imagefolder") yields one row per output, nothing else."""
    cat, dog = write_images(tmp_path / "refs", 2)
    manifest = write_manifest(
        tmp_path,
        [
            {"id": "cat", "prompt": "Watercolor", "referenceImages": [str(cat)], "seed": 7},
            {"id": "dog", "prompt": "Ink", "referenceImages": [str(dog)], "numOutputs": 2},
        ],
    )
    out = tmp_path / "out"
    summary = await run(simulator, manifest, out)
    assert summary.exit_code == 0
    assert list((out / "thumbs").glob("*.jpg")), "the report made thumbnails"
    (out / "notes.png").write_bytes(make_png())  # a stray image is no output either

    train = load("imagefolder", tmp_path / "hf", data_dir=str(out))["train"]

    assert train.column_names == COLUMNS
    rows = sorted(train, key=lambda r: (r["id"], r["sha256"]))
    assert [r["id"] for r in rows] == ["cat", "dog", "dog"]
    state = load_state(out)
    for row in rows:
        record = state.items[row["id"]]
        assert row["sha256"] in {f.sha256 for f in record.files}
        assert row["job_id"] == record.job_id
        assert row["model"] == "model_flux-kontext-editing"
        assert min(row["image"].size) > 0
    assert rows[0]["seed"] == 7 and rows[1]["seed"] is None
    assert rows[0]["sources"] == [str(cat)]
    assert json.loads(rows[1]["parameters"])["numOutputs"] == 2
    assert rows[0]["prompt"] == "Watercolor"


async def test_a_run_stopped_early_describes_what_is_on_disk(
    simulator: Simulator, tmp_path: Path
) -> None:
    """A run stopped by its budget still rewrites metadata.jsonl: its outputs, no others."""
    images = write_images(tmp_path / "refs", 4)
    jobs = [
        {"id": f"i{n}", "prompt": "p", "referenceImages": [str(p)]} for n, p in enumerate(images)
    ]
    out = tmp_path / "out"
    summary = await run(simulator, write_manifest(tmp_path, jobs), out, max_cost=10)
    assert summary.succeeded == 2 and summary.exit_code == 1

    lines = _metadata(out)
    assert len(lines) == 2
    assert all((out / line["file_name"]).is_file() for line in lines)
    assert len(load("imagefolder", tmp_path / "hf", data_dir=str(out))["train"]) == 2


async def test_an_interrupted_run_leaves_metadata_of_what_it_finished(
    simulator_factory: SimulatorFactory, tmp_path: Path
) -> None:
    """A run cancelled mid-way (Ctrl-C) still writes metadata.jsonl for its outputs."""
    sim = await simulator_factory(job_latency_s=0.3, job_latency_jitter=0.0)
    images = write_images(tmp_path / "refs", 6)
    jobs = [
        {"id": f"i{n}", "prompt": "p", "referenceImages": [str(p)]} for n, p in enumerate(images)
    ]
    out = tmp_path / "out"
    task = asyncio.create_task(run(sim, write_manifest(tmp_path, jobs), out, concurrency=1))
    for _ in range(1500):  # up to 30 s: the ledger is watched as `status` would
        if any(line["state"] == "succeeded" for line in _item_lines(out)):
            break
        await asyncio.sleep(0.02)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task

    done = [line for line in _item_lines(out) if line["state"] == "succeeded"]
    assert 1 <= len(done) < 6
    assert sorted(line["id"] for line in _metadata(out)) == sorted(line["id"] for line in done)


def _item_lines(out: Path) -> list[dict[str, Any]]:
    ledger = out / "ledger.jsonl"
    if not ledger.exists():
        return []
    lines = [json.loads(x) for x in ledger.read_text().splitlines() if x.endswith("}")]
    return [line for line in lines if line.get("type") == "item" and "state" in line]


async def test_outputs_of_older_inputs_stay_rows_with_their_own_inputs(
    simulator: Simulator, tmp_path: Path
) -> None:
    """Changing an item's prompt keeps its old output on disk, and in the metadata as such."""
    (image,) = write_images(tmp_path / "refs", 1)
    out = tmp_path / "out"
    for prompt in ("first", "second"):
        job = {"id": "cat", "prompt": prompt, "referenceImages": [str(image)]}
        await run(simulator, write_manifest(tmp_path, [job]), out)

    lines = _metadata(out)
    assert [(line["id"], line["prompt"]) for line in lines] == [("cat", "second"), ("cat", "first")]
    assert len({line["file_name"] for line in lines}) == 2


def _write_ledger(out: Path, records: list[dict[str, Any]]) -> None:
    writer = LedgerWriter(out)
    writer.open()
    writer.append_many(records)
    writer.close()


def _succeeded(item_id: str, name: str, data: bytes, **inputs: Any) -> list[dict[str, Any]]:
    base = {"type": "item", "id": item_id, "fp": f"fp-{item_id}"}
    file = {"path": name, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    planned: dict[str, Any] = {**base, "state": "planned", "prompt": inputs.pop("prompt", "p")}
    if "model" in inputs:
        planned["model"] = inputs.pop("model")
    if inputs:
        planned["inputs"] = inputs
    return [
        planned,
        {
            **base,
            "state": "succeeded",
            "jobId": f"job_{item_id}",
            "files": [{**file, "assetId": "a"}],
        },
    ]


def test_names_outside_the_directory_links_and_missing_files_are_left_out(tmp_path: Path) -> None:
    """Only plain files inside the directory become rows: no link, no `..`, no missing file."""
    out = tmp_path / "out"
    out.mkdir()
    data = make_png()
    (out / "ok_0.png").write_bytes(data)
    (tmp_path / "secret.png").write_bytes(data)
    os.symlink(tmp_path / "secret.png", out / "link_0.png")
    records = [
        *_succeeded("ok", "ok_0.png", data),
        *_succeeded("link", "link_0.png", data),
        *_succeeded("up", "../secret.png", data),
        *_succeeded("abs", str(tmp_path / "secret.png"), data),
        *_succeeded("gone", "gone_0.png", data),
    ]
    _write_ledger(out, records)

    assert [row["id"] for row in metadata_rows(load_state(out), out)] == ["ok"]


def test_old_ledgers_without_inputs_give_null_columns_that_still_load(tmp_path: Path) -> None:
    """A ledger from before inputs were recorded: model, seed and parameters are null."""
    out = tmp_path / "out"
    out.mkdir()
    data = make_png()
    (out / "old_0.png").write_bytes(data)
    (out / "new_0.png").write_bytes(data)
    records = _succeeded("old", "old_0.png", data) + _succeeded(
        "new", "new_0.png", data, model="m", params={"seed": 3, "loras": ["x"]}, sources=["/a.png"]
    )
    _write_ledger(out, records)
    write_metadata(out)

    rows = load("imagefolder", tmp_path / "hf", data_dir=str(out))["train"].to_list()
    assert [(r["id"], r["model"], r["seed"], r["sources"]) for r in rows] == [
        ("old", None, None, []),
        ("new", "m", 3, ["/a.png"]),
    ]


@pytest.mark.slow
def test_a_column_first_set_past_the_loaders_first_chunk_still_loads(tmp_path: Path) -> None:
    """11 MB of lines without a seed, then one with: the loader types the column anyway."""
    out = tmp_path / "out"
    out.mkdir()
    data = make_png(4, 4)
    records: list[dict[str, Any]] = []
    count = 11_000
    for n in range(count):
        name = f"i{n}_0.png"
        (out / name).write_bytes(data)
        params: dict[str, Any] = {"seed": n} if n == count - 1 else {}
        sources = ["/ref.png"] if n == count - 1 else []
        records += _succeeded(
            f"i{n}", name, data, prompt="x" * 1000, model="m", params=params, sources=sources
        )
    _write_ledger(out, records)
    write_metadata(out)
    assert (out / METADATA_NAME).stat().st_size > 10 << 20

    train = load("imagefolder", tmp_path / "hf", data_dir=str(out))["train"]
    assert len(train) == count
    assert train[0]["seed"] == count - 1 and train[0]["sources"] == ["/ref.png"]
    assert train[1]["seed"] is None and train[1]["sources"] == []


@pytest.mark.parametrize(
    ("name", "split"),
    [
        ("test-cat_0.png", True),
        ("shoe-val_1.png", True),
        ("a.train.b_0.png", True),
        ("evaluation_0.png", True),
        ("interval_0.png", False),
        ("latest_0.png", False),
        ("cat_0.png", False),
        ("devon_0.png", False),
    ],
)
def test_split_words_in_file_names_are_recognised(name: str, split: bool) -> None:
    """The names the library's split inference would take are the ones we warn about."""
    assert is_split_named(name) is split


def test_a_split_word_in_an_id_is_warned_about_and_the_given_call_loads_all(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With an id like `test-dog`, the warning's data_files call loads every output."""
    monkeypatch.setattr(logging.getLogger("batch"), "propagate", True)  # the CLI turns it off
    out = tmp_path / "out"
    out.mkdir()
    data = make_png()
    records = []
    for item_id in ("cat", "test-dog"):
        (out / f"{item_id}_0.png").write_bytes(data)
        records += _succeeded(item_id, f"{item_id}_0.png", data, model="m")
    _write_ledger(out, records)
    with caplog.at_level(logging.WARNING):
        written = write_metadata(out)
    assert written.split_named == ("test-dog_0.png",)
    assert 'data_files="metadata.jsonl"' in caplog.text.replace("'", '"')

    plain = load("imagefolder", tmp_path / "hf1", data_dir=str(out))
    assert list(plain) == ["test"]  # what the warning is about: the library splits by name
    whole = load("imagefolder", tmp_path / "hf2", data_dir=str(out), data_files=METADATA_NAME)
    assert sorted(whole["train"]["id"]) == ["cat", "test-dog"]


_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
_rows = st.lists(
    st.fixed_dictionaries(
        {
            "prompt": st.none() | st.text(max_size=20),
            "model": st.none() | st.sampled_from(["m1", "m2"]),
            "params": st.none()
            | st.fixed_dictionaries(
                {}, optional={"seed": st.integers(0, 2**64), "other": _json_values}
            ),
            "sources": st.none() | st.lists(st.text(min_size=1, max_size=10), max_size=3),
        }
    ),
    min_size=1,
    max_size=6,
)


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows=_rows)
def test_any_mix_of_null_and_set_columns_loads_with_the_values_written(
    tmp_path_factory: pytest.TempPathFactory, rows: list[dict[str, Any]]
) -> None:
    """Whatever inputs the ledger holds (nulls, lists, odd text, huge seeds), the file loads
    and each row carries the values of its record."""
    out = tmp_path_factory.mktemp("out")
    data = make_png(4, 4)
    records: list[dict[str, Any]] = []
    for n, row in enumerate(rows):
        (out / f"i{n}_0.png").write_bytes(data)
        inputs = {k: row[k] for k in ("model", "params", "sources") if row[k] is not None}
        records += _succeeded(f"i{n}", f"i{n}_0.png", data, prompt=row["prompt"], **inputs)
    _write_ledger(out, records)
    write_metadata(out)

    train = load("imagefolder", tmp_path_factory.mktemp("hf"), data_dir=str(out))["train"]
    loaded = sorted(train, key=lambda r: int(r["id"][1:]))
    assert len(loaded) == len(rows)
    for row, got in zip(rows, loaded, strict=True):
        seed = (row["params"] or {}).get("seed")
        assert got["seed"] == (seed if seed is not None and seed < 2**63 else None)
        assert (got["model"], got["prompt"]) == (row["model"], row["prompt"])
        assert got["sources"] == (row["sources"] or [])
        if row["params"] is None:
            assert got["parameters"] is None
        else:
            assert json.loads(got["parameters"]).keys() == row["params"].keys()
