"""Helpers shared by the report tests: ledgers and manifests on disk, the page's JSON."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from batch.ledger.journal import LedgerWriter
from batch.manifest.load import DEFAULT_MODEL, Item, Manifest, Reference
from tests.conftest import make_png

SCRIPT_PROMPT = "<script>document.body.dataset.pwned='1'</script>"
SCRIPT_ERROR = '<img src=x onerror="document.body.dataset.pwned=2"> & "quotes"'
OUTPUT_COLOR = (30, 160, 220)
MODELS = ("model_kontext-a", "model_edit-b")


def write_ledger(out_dir: Path, records: list[dict[str, Any]]) -> None:
    writer = LedgerWriter(out_dir)
    writer.open()
    for record in records:
        writer.append_now(record)
    writer.close()


def item_records(item_id: str, state: str, **fields: Any) -> list[dict[str, Any]]:
    """The records a run writes for one item, ending in `state` with `fields`."""
    fp = f"fp-{item_id}"
    records: list[dict[str, Any]] = [
        {"type": "item", "id": item_id, "fp": fp, "state": "planned", "prompt": f"edit {item_id}"},
        {"type": "item", "id": item_id, "fp": fp, "state": "submitting", "references": ["asset_r"]},
    ]
    if state != "submitting":
        records.append(
            {
                "type": "item",
                "id": item_id,
                "fp": fp,
                "state": "submitted",
                "jobId": f"job_{item_id}",
            }
        )
    if state not in ("submitting", "submitted"):
        records.append({"type": "item", "id": item_id, "fp": fp, "state": state, **fields})
    return records


def succeeded(
    out_dir: Path, item_id: str, outputs: int = 2, color: tuple[int, int, int] = OUTPUT_COLOR
) -> list[dict[str, Any]]:
    files = []
    for index in range(outputs):
        name = f"{item_id}_{index}.png"
        (out_dir / name).write_bytes(make_png(320, 240, color))
        files.append({"path": name, "sha256": "00", "size": 1, "assetId": f"asset_{index}"})
    return item_records(item_id, "succeeded", files=files, cost=4)


def manifest_of(tmp_path: Path, items: list[Item]) -> Manifest:
    return Manifest(
        path=tmp_path / "batch.yaml",
        model=DEFAULT_MODEL,
        project_id=None,
        output=None,
        concurrency=None,
        max_cost=None,
        job_timeout_s=None,
        items=tuple(items),
    )


def item(
    item_id: str, prompt: str, *refs: Reference, model: str = DEFAULT_MODEL, base: str = ""
) -> Item:
    return Item(
        id=item_id,
        prompt=prompt,
        references=refs,
        params={},
        fingerprint=f"fp-{item_id}",
        model=model,
        base_id=base,
    )


def page_data(page: str) -> dict[str, Any]:
    """The items JSON a report page carries."""
    found = re.search(
        r'<script type="application/json" id="report-data">(.*?)</script>', page, re.S
    )
    assert found is not None, "no data in the page"
    data: dict[str, Any] = json.loads(found.group(1))
    return data


def items_by_id(page: str) -> dict[str, dict[str, Any]]:
    """Each item of the page's JSON as a dict with its tables resolved."""
    data = page_data(page)
    names = ("id", "base", "model", "state", "prompt", "refs", "outs", "cost", "duration")
    names += ("attempts", "job", "error", "hint", "flag")
    found = {}
    for row in data["items"]:
        entry = dict(zip(names, row, strict=True))
        entry["base"] = entry["base"] or entry["id"]
        entry["model"] = data["models"][entry["model"]]
        entry["state"] = data["states"][entry["state"]]
        entry["prompt"] = data["prompts"][entry["prompt"]] if entry["prompt"] >= 0 else None
        entry["refs"] = [data["refs"][index] for index in entry["refs"]]
        found[entry["id"]] = entry
    return found


def three_states_dir(tmp_path: Path) -> tuple[Path, Manifest]:
    """An output dir with 3 succeeded, 2 failed, 1 submitted item and a matching manifest."""
    out_dir = tmp_path / "out"
    refs_dir = tmp_path / "refs"
    out_dir.mkdir()
    refs_dir.mkdir()
    cat = refs_dir / "cat.png"
    cat.write_bytes(make_png(400, 300, (200, 40, 40)))
    records: list[dict[str, Any]] = [{"type": "run", "event": "start"}]
    for name in ("a", "b", "c"):
        records += succeeded(out_dir, name)
    records += item_records("bad", "failed", error=SCRIPT_ERROR, hint="lower guidanceScale")
    records += item_records("evil", "failed", prompt=SCRIPT_PROMPT, error="content policy")
    records += item_records("busy", "submitted")
    write_ledger(out_dir, records)
    file_ref = Reference("file", str(cat))
    items = [
        item("a", "Turn the cat into a watercolor", file_ref),
        item("b", "Pencil sketch", file_ref, Reference("asset", "asset_abc")),
        item("c", "Night scene", Reference("url", "https://example.com/dog.png")),
        item("bad", "Too much guidance", file_ref),
        item("evil", SCRIPT_PROMPT, file_ref),
        item("busy", "Still running", file_ref),
    ]
    return out_dir, manifest_of(tmp_path, items)


def two_models_dir(tmp_path: Path) -> tuple[Path, Manifest]:
    """Three source images run on two models (one failed on model b), plus one not started."""
    out_dir, refs_dir = tmp_path / "out", tmp_path / "refs"
    out_dir.mkdir()
    refs_dir.mkdir()
    colors = {"cat": (200, 40, 40), "dog": (40, 200, 40), "owl": (40, 40, 200)}
    items: list[Item] = []
    records: list[dict[str, Any]] = [{"type": "run", "event": "start"}]
    tints = ((250, 200, 0), (120, 0, 160))  # each model's outputs have their own colour
    for base, color in colors.items():
        source = refs_dir / f"{base}.png"
        source.write_bytes(make_png(300, 300, color))
        for model, suffix, tint in zip(MODELS, ("a", "b"), tints, strict=True):
            item_id = f"{base}-{suffix}"
            items.append(
                item(item_id, f"{base} as a painting", Reference("file", str(source)),
                     model=model, base=base)
            )  # fmt: skip
            if base == "dog" and suffix == "b":
                records += item_records(item_id, "failed", error="content policy: </script>",
                                        hint="try another prompt")  # fmt: skip
            elif base != "owl":
                records += succeeded(out_dir, item_id, outputs=1, color=tint)
    write_ledger(out_dir, records)
    return out_dir, manifest_of(tmp_path, items)
