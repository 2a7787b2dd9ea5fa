"""report.html: counts, the page's JSON, escaping, thumbnails kept inside the output dir."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from batch.errors import LocalFaultError
from batch.ledger.journal import LEDGER_NAME
from batch.manifest.load import Item, Manifest
from batch.report import page as report
from batch.report.page import write_report
from tests.report_helpers import (
    SCRIPT_PROMPT,
    item,
    item_records,
    items_by_id,
    manifest_of,
    page_data,
    succeeded,
    three_states_dir,
    two_models_dir,
    write_ledger,
)


@pytest.fixture
def run_dir(tmp_path: Path) -> tuple[Path, Manifest]:
    """3 succeeded, 2 failed, 1 submitted item and a matching manifest."""
    return three_states_dir(tmp_path)


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_header_counts_states_and_total_cost(run_dir: tuple[Path, Manifest]) -> None:
    """The header counts items per state and per filter group, and totals the compute units."""
    out_dir, manifest = run_dir
    page = write_report(out_dir, manifest).read_text()
    assert 'data-total="6" data-succeeded="3" data-failed="2" data-other="1"' in page
    assert '<li data-state="succeeded" data-count="3">' in page
    assert '<li data-state="failed" data-count="2">' in page
    assert '<li data-state="submitted" data-count="1">' in page
    assert 'data-cost="12"' in page
    assert len(page_data(page)["items"]) == 6
    for group in ("all", "succeeded", "failed", "other"):
        assert f'data-filter="{group}"' in page


def test_strings_from_manifest_ledger_and_api_are_escaped(run_dir: tuple[Path, Manifest]) -> None:
    """A `<script>` prompt and an HTML-laden error stay data: no `<` of theirs is in the page."""
    out_dir, manifest = run_dir
    for source in (manifest, None):
        page = write_report(out_dir, source).read_text()
        assert page.count("<script") == 2 and page.count("</script>") == 2  # data + ours
        assert "document.body.dataset.pwned" in page and "<img src=x" not in page
        assert "\\u003cscript\\u003edocument.body.dataset.pwned='1'\\u003c/script\\u003e" in page
        found = items_by_id(page)
        assert found["evil"]["prompt"] == SCRIPT_PROMPT
        assert found["bad"]["error"].startswith("<img src=x onerror=")


def test_title_and_hostile_ids_are_escaped(tmp_path: Path) -> None:
    """The title is HTML-escaped; ids and `..` output paths only the ledger holds stay data."""
    records = item_records(
        'x"><b>id</script>',
        "succeeded",
        files=[{"path": "../../etc/passwd", "sha256": "0", "size": 1}],
    )
    write_ledger(tmp_path, records)
    page = write_report(tmp_path, title="<i>run</i>").read_text()
    assert "<title>&lt;i&gt;run&lt;/i&gt;</title>" in page and "<b>id" not in page
    assert page.count("</script>") == 2
    entry = items_by_id(page)['x"><b>id</script>']
    assert entry["outs"] == [["../../etc/passwd", -1]]  # shown as text, never linked


def test_failed_item_carries_error_hint_attempts_and_job(run_dir: tuple[Path, Manifest]) -> None:
    """A failed item carries its state, error, hint, attempts and job id."""
    out_dir, manifest = run_dir
    entry = items_by_id(write_report(out_dir, manifest).read_text())["bad"]
    assert (entry["state"], entry["hint"], entry["attempts"], entry["job"]) == (
        "failed",
        "lower guidanceScale",
        1,
        "job_bad",
    )
    assert entry["error"].startswith("<img src=x")


def test_thumbnails_are_small_and_inside_the_output_directory(
    run_dir: tuple[Path, Manifest],
) -> None:
    """Outputs and local references get ≤160 px JPEGs under thumbs/; nothing else is written."""
    out_dir, manifest = run_dir
    root = out_dir.parent
    before = _tree(root)
    page = write_report(out_dir, manifest).read_text()
    created = _tree(root) - before
    assert created and all(path.startswith("out/") for path in created)
    thumbs = sorted((out_dir / "thumbs").iterdir())
    assert len(thumbs) == 7  # 6 outputs + 1 distinct reference file
    for thumb in thumbs:
        with Image.open(thumb) as image:
            assert image.format == "JPEG" and max(image.size) <= 160
    named = {f"{name}.jpg" for name in _thumbnail_names(page)}
    assert named == {thumb.name for thumb in thumbs}
    found = items_by_id(page)
    assert found["a"]["outs"][0][0] == "a_0.png"
    assert [ref[1] for ref in found["b"]["refs"]] == ["cat.png", "asset: asset_abc"]
    (url,) = found["c"]["refs"]  # text only: the page never loads a URL
    assert url[:2] == [1, "url: https://example.com/dog.png"] and url[3:] == [0, None]
    assert "data:image" not in page and "base64" not in page


def _thumbnail_names(page: str) -> set[str]:
    data = page_data(page)
    names = {ref[3] for ref in data["refs"] if isinstance(ref[3], str)}
    names |= {out[1] for row in data["items"] for out in row[6] if isinstance(out[1], str)}
    return names


def test_thumbnails_are_remade_only_when_the_source_is_newer(
    run_dir: tuple[Path, Manifest],
) -> None:
    """A second report reuses current thumbnails and remakes one whose source changed."""
    out_dir, manifest = run_dir
    write_report(out_dir, manifest)
    thumbs = {p.name: p.stat().st_mtime_ns for p in (out_dir / "thumbs").iterdir()}
    later = time.time() + 5
    os.utime(out_dir / "a_0.png", (later, later))
    write_report(out_dir, manifest)
    again = {p.name: p.stat().st_mtime_ns for p in (out_dir / "thumbs").iterdir()}
    changed = {name for name in thumbs if again[name] != thumbs[name]}
    assert len(changed) == 1 and set(again) == set(thumbs)


def test_past_its_time_budget_the_page_shows_original_files(
    run_dir: tuple[Path, Manifest],
) -> None:
    """With no time for thumbnails the page points at the originals; the next report makes them."""
    out_dir, manifest = run_dir
    page = write_report(out_dir, manifest, thumbnail_budget_s=0).read_text()
    assert not list((out_dir / "thumbs").iterdir())
    found = items_by_id(page)
    assert found["a"]["outs"] == [["a_0.png", 1], ["a_1.png", 1]]  # 1: the original file
    assert found["a"]["refs"][0][3] == 1 and found["a"]["refs"][0][4].startswith("file:///")
    page = write_report(out_dir, manifest).read_text()
    assert len(_thumbnail_names(page)) == 7 == len(list((out_dir / "thumbs").iterdir()))


def test_planted_symlinks_are_not_followed(tmp_path: Path) -> None:
    """A symlinked thumbs/ or report.html in the output dir never leads a write outside it."""
    out_dir, outside = tmp_path / "out", tmp_path / "outside"
    out_dir.mkdir()
    outside.mkdir()
    (outside / "victim.html").write_text("keep")
    write_ledger(out_dir, succeeded(out_dir, "a"))
    (out_dir / "thumbs").symlink_to(outside, target_is_directory=True)
    (out_dir / "report.html").symlink_to(outside / "victim.html")
    path = write_report(out_dir)
    assert not path.is_symlink() and len(page_data(path.read_text())["items"]) == 1
    assert (outside / "victim.html").read_text() == "keep"
    assert sorted(p.name for p in outside.iterdir()) == ["victim.html"]


def test_no_temporary_file_remains(run_dir: tuple[Path, Manifest], monkeypatch: Any) -> None:
    """The report replaces report.html whole; a failed rename leaves no temp file behind."""
    out_dir, manifest = run_dir
    write_report(out_dir, manifest)
    write_report(out_dir, manifest)
    assert not [p for p in out_dir.rglob("*") if ".tmp-" in p.name]

    def refuse(src: Any, dst: Any) -> None:
        raise OSError("disk full")

    old = (out_dir / "report.html").read_text()
    monkeypatch.setattr(report.os, "replace", refuse)
    with pytest.raises(LocalFaultError, match=r"report\.html"):  # a machine fault (issue 18)
        write_report(out_dir, manifest)
    assert not [p for p in out_dir.rglob("*") if ".tmp-" in p.name]
    assert (out_dir / "report.html").read_text() == old


def test_without_manifest_references_are_ledger_text(run_dir: tuple[Path, Manifest]) -> None:
    """manifest=None: every ledger item is shown, references as the ledger's asset ids."""
    out_dir, _ = run_dir
    found = items_by_id(write_report(out_dir).read_text())
    assert len(found) == 6
    assert found["a"]["refs"] == [[1, "asset_r", "asset_r", 0, None]]
    assert {entry["flag"] for entry in found.values()} == {0}


def test_what_ran_comes_first_and_what_left_the_manifest_is_marked(
    run_dir: tuple[Path, Manifest], tmp_path: Path
) -> None:
    """Items that ran come first; dropped ones are "not in manifest"; new ones "not started"."""
    out_dir, manifest = run_dir
    smaller = manifest_of(tmp_path, [item("new", "Fresh item"), *manifest.items[:2]])
    page = write_report(out_dir, smaller).read_text()
    found = items_by_id(page)
    assert list(found) == ["a", "b", "c", "bad", "evil", "busy", "new"]
    assert [found[i]["flag"] for i in ("c", "bad", "evil", "busy")] == [1, 1, 1, 1]
    assert found["new"]["state"] == "not started" and found["new"]["flag"] == 0
    assert 'data-not-started="1"' in page and 'data-filter="not-started"' in page


def test_changed_inputs_and_broken_images_are_shown(
    run_dir: tuple[Path, Manifest], tmp_path: Path
) -> None:
    """An item edited since its run is marked; an undecodable output only loses its thumbnail."""
    out_dir, _ = run_dir
    (out_dir / "a_1.png").write_bytes(b"not an image")
    edited = Item(id="a", prompt="New prompt", references=(), params={}, fingerprint="fp-new")
    page = write_report(out_dir, manifest_of(tmp_path, [edited])).read_text()
    entry = items_by_id(page)["a"]
    assert entry["flag"] == 2 and entry["prompt"] == "New prompt"
    assert entry["outs"][1] == ["a_1.png", 0]  # 0: its name in a box, no image
    assert len(list((out_dir / "thumbs").iterdir())) == 5


def test_models_and_inputs_are_in_the_data(tmp_path: Path) -> None:
    """Each item names its model and its input (base id); strings repeat once in the tables."""
    out_dir, manifest = two_models_dir(tmp_path)
    page = write_report(out_dir, manifest).read_text()
    data = page_data(page)
    assert data["models"] == ["model_kontext-a", "model_edit-b"]
    assert len(data["prompts"]) == 3 and len(data["refs"]) == 3
    found = items_by_id(page)
    assert (found["dog-b"]["base"], found["dog-b"]["model"]) == ("dog", "model_edit-b")
    assert found["dog-b"]["error"] == "content policy: </script>"
    assert [found[i]["state"] for i in ("owl-a", "owl-b")] == ["not started"] * 2


def test_twenty_thousand_items_render_in_seconds(tmp_path: Path) -> None:
    """A 20,000-item ledger (40,000 output files named) renders in a few seconds."""
    lines = []
    for n in range(20_000):
        item_id, fp = f"item-{n:05d}", f"fp{n}"
        lines.append({"ts": "2025-01-01T00:00:00.000Z", "type": "item", "id": item_id, "fp": fp,
                      "state": "planned", "prompt": f"prompt <{n}>"})  # fmt: skip
        files = [{"path": f"{item_id}_{i}.png", "sha256": "0", "size": 1} for i in range(2)]
        lines.append({"ts": "2025-01-01T00:01:30.000Z", "type": "item", "id": item_id, "fp": fp,
                      "state": "succeeded" if n % 10 else "failed", "jobId": f"job_{n}",
                      "files": files, "cost": 2, "error": None if n % 10 else "boom"})  # fmt: skip
    # Written directly (the documented line format): 40,000 fsyncs would dwarf the test.
    (tmp_path / LEDGER_NAME).write_text("".join(json.dumps(r) + "\n" for r in lines))
    started = time.perf_counter()
    page = write_report(tmp_path).read_text()
    elapsed = time.perf_counter() - started
    assert len(page_data(page)["items"]) == 20_000
    assert 'data-succeeded="18000" data-failed="2000"' in page
    assert elapsed < 5, f"took {elapsed:.1f} s"


def test_without_manifest_models_come_from_the_ledger(tmp_path: Path) -> None:
    """Ledger-only: each item's model is its `planned` record's; an old ledger's is unknown."""
    records = item_records("old", "submitted")
    records[0] = {**records[0], "id": "new", "fp": "fp-new", "model": "model_qwen-image-edit"}
    write_ledger(tmp_path, records)
    page = write_report(tmp_path).read_text()
    found = items_by_id(page)
    assert (found["new"]["model"], found["old"]["model"]) == ("model_qwen-image-edit", "")


@given(st.lists(st.text(), max_size=5))
def test_page_json_never_holds_markup_and_reads_back(texts: list[str]) -> None:
    """Any strings (lone surrogates too): no <, > or & byte in the page's JSON, same values back."""
    raw = report._json({"items": texts})
    assert not {ord("<"), ord(">"), ord("&")} & set(raw)
    raw.decode("utf-8")  # valid UTF-8 whatever the input
    back = json.loads(raw)["items"]
    assert back == texts
