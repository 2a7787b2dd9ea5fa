"""report.html: counts, escaping, thumbnails kept inside the output dir, and a real browser."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from batch import report
from batch.ledger import LEDGER_NAME, LedgerWriter
from batch.manifest import Item, Manifest, Reference
from batch.report import write_report
from tests.conftest import make_png

SCRIPT_PROMPT = "<script>document.body.dataset.pwned='1'</script>"
SCRIPT_ERROR = '<img src=x onerror="document.body.dataset.pwned=2"> & "quotes"'
OUTPUT_COLOR = (30, 160, 220)


def _write_ledger(out_dir: Path, records: list[dict[str, Any]]) -> None:
    writer = LedgerWriter(out_dir)
    writer.open()
    for record in records:
        writer.append_now(record)
    writer.close()


def _item_records(item_id: str, state: str, **fields: Any) -> list[dict[str, Any]]:
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


def _succeeded(out_dir: Path, item_id: str, outputs: int = 2) -> list[dict[str, Any]]:
    files = []
    for index in range(outputs):
        name = f"{item_id}_{index}.png"
        (out_dir / name).write_bytes(make_png(320, 240, OUTPUT_COLOR))
        files.append({"path": name, "sha256": "00", "size": 1, "assetId": f"asset_{index}"})
    return _item_records(item_id, "succeeded", files=files, cost=4)


def _manifest(tmp_path: Path, items: list[Item]) -> Manifest:
    return Manifest(
        path=tmp_path / "batch.yaml",
        model="model_flux-kontext-editing",
        project_id=None,
        output=None,
        concurrency=None,
        max_cost=None,
        job_timeout_s=None,
        items=tuple(items),
    )


def _item(item_id: str, prompt: str, *refs: Reference) -> Item:
    return Item(id=item_id, prompt=prompt, references=refs, params={}, fingerprint=f"fp-{item_id}")


@pytest.fixture
def run_dir(tmp_path: Path) -> tuple[Path, Manifest]:
    """An output dir with 3 succeeded, 2 failed, 1 submitted item and a matching manifest."""
    out_dir = tmp_path / "out"
    refs_dir = tmp_path / "refs"
    out_dir.mkdir()
    refs_dir.mkdir()
    cat = refs_dir / "cat.png"
    cat.write_bytes(make_png(400, 300, (200, 40, 40)))
    records: list[dict[str, Any]] = [{"type": "run", "event": "start"}]
    for name in ("a", "b", "c"):
        records += _succeeded(out_dir, name)
    records += _item_records("bad", "failed", error=SCRIPT_ERROR, hint="lower guidanceScale")
    records += _item_records("evil", "failed", prompt=SCRIPT_PROMPT, error="content policy")
    records += _item_records("busy", "submitted")
    _write_ledger(out_dir, records)
    file_ref = Reference("file", str(cat))
    items = [
        _item("a", "Turn the cat into a watercolor", file_ref),
        _item("b", "Pencil sketch", file_ref, Reference("asset", "asset_abc")),
        _item("c", "Night scene", Reference("url", "https://example.com/dog.png")),
        _item("bad", "Too much guidance", file_ref),
        _item("evil", SCRIPT_PROMPT, file_ref),
        _item("busy", "Still running", file_ref),
    ]
    return out_dir, _manifest(tmp_path, items)


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
    assert page.count('<article class="card"') == 6
    for group in ("all", "succeeded", "failed", "other"):
        assert f'data-filter="{group}"' in page


def test_strings_from_manifest_ledger_and_api_are_escaped(run_dir: tuple[Path, Manifest]) -> None:
    """A `<script>` prompt and an HTML-laden error show as text; the only script is ours."""
    out_dir, manifest = run_dir
    for given in (manifest, None):
        page = write_report(out_dir, given).read_text()
        assert page.count("<script>") == 1
        assert "&lt;script&gt;document.body.dataset.pwned=&#x27;1&#x27;&lt;/script&gt;" in page
        assert "&lt;img src=x onerror=&quot;document.body.dataset.pwned=2&quot;&gt;" in page
        assert "&amp; &quot;quotes&quot;" in page
        assert "<img src=x" not in page


def test_hostile_ids_and_file_names_from_the_ledger_are_escaped(tmp_path: Path) -> None:
    """Ids and output paths that only the ledger holds are escaped, and `..` paths not linked."""
    records = _item_records(
        'x"><b>id', "succeeded", files=[{"path": "../../etc/passwd", "sha256": "0", "size": 1}]
    )
    _write_ledger(tmp_path, records)
    page = write_report(tmp_path).read_text()
    assert 'data-id="x&quot;&gt;&lt;b&gt;id"' in page and "<b>id" not in page
    assert 'href="../../etc/passwd"' not in page
    assert "outside the output directory: ../../etc/passwd" in page


def test_failed_item_shows_error_and_hint(run_dir: tuple[Path, Manifest]) -> None:
    """A failed card carries its state, error, hint, attempts and job id."""
    out_dir, manifest = run_dir
    page = write_report(out_dir, manifest).read_text()
    card = re.search(r'<article[^>]*data-id="bad">.*?</article>', page, re.S)
    assert card is not None
    text = card.group(0)
    assert 'data-group="failed"' in text
    assert '<p class="hint">hint: lower guidanceScale</p>' in text
    assert '<p class="error">&lt;img src=x' in text
    assert "<dt>attempts</dt><dd>1</dd>" in text and "<dt>job</dt><dd>job_bad</dd>" in text


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
        assert f'src="thumbs/{thumb.name}" loading="lazy"' in page
    assert 'href="a_0.png"' in page
    assert "https://example.com/dog.png" in page and 'src="https://' not in page
    assert "asset: asset_abc" in page
    assert "data:image" not in page and "base64" not in page


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


def test_planted_symlinks_are_not_followed(tmp_path: Path) -> None:
    """A symlinked thumbs/ or report.html in the output dir never leads a write outside it."""
    out_dir, outside = tmp_path / "out", tmp_path / "outside"
    out_dir.mkdir()
    outside.mkdir()
    (outside / "victim.html").write_text("keep")
    _write_ledger(out_dir, _succeeded(out_dir, "a"))
    (out_dir / "thumbs").symlink_to(outside, target_is_directory=True)
    (out_dir / "report.html").symlink_to(outside / "victim.html")
    path = write_report(out_dir)
    assert not path.is_symlink() and "<article" in path.read_text()
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
    with pytest.raises(OSError, match="disk full"):
        write_report(out_dir, manifest)
    assert not [p for p in out_dir.rglob("*") if ".tmp-" in p.name]
    assert (out_dir / "report.html").read_text() == old


def test_without_manifest_references_are_ledger_text(run_dir: tuple[Path, Manifest]) -> None:
    """manifest=None: every ledger item is shown, references as the ledger's asset ids."""
    out_dir, _ = run_dir
    page = write_report(out_dir).read_text()
    assert page.count('<article class="card"') == 6
    assert '<div class="ref-text">asset_r</div>' in page
    assert "not in manifest" not in page


def test_ledger_items_missing_from_the_manifest_are_marked(
    run_dir: tuple[Path, Manifest], tmp_path: Path
) -> None:
    """Ledger items the manifest dropped show as "not in manifest"; new ones as "not started"."""
    out_dir, manifest = run_dir
    smaller = _manifest(tmp_path, [*manifest.items[:2], _item("new", "Fresh item")])
    page = write_report(out_dir, smaller).read_text()
    assert page.count('<article class="card"') == 7
    assert page.count("not in manifest</span>") == 4
    assert '<article class="card" data-group="other" data-state="not started"' in page


def test_changed_inputs_and_broken_images_are_shown(
    run_dir: tuple[Path, Manifest], tmp_path: Path
) -> None:
    """An item edited since its run is marked; an undecodable output only loses its thumbnail."""
    out_dir, _ = run_dir
    (out_dir / "a_1.png").write_bytes(b"not an image")
    edited = Item(id="a", prompt="New prompt", references=(), params={}, fingerprint="fp-new")
    page = write_report(out_dir, _manifest(tmp_path, [edited])).read_text()
    assert "inputs changed since" in page and "New prompt" in page
    assert '<a href="a_1.png" title="a_1.png"><div class="missing">a_1.png</div></a>' in page
    assert len(list((out_dir / "thumbs").iterdir())) == 5


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
    assert page.count('<article class="card"') == 20_000
    assert 'data-succeeded="18000" data-failed="2000"' in page
    assert elapsed < 5, f"took {elapsed:.1f} s"


# -- a real browser ----------------------------------------------------------------------

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="session")
def chromium() -> Path:
    """Debian's chromium, installed with apt-get when missing and we are root."""
    if CHROMIUM.exists():
        return CHROMIUM
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip("needs /usr/bin/chromium: run as root on Debian, or `apt-get install chromium`")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (
        ["apt-get", "update"],
        ["apt-get", "install", "-y", "-o", "DPkg::Lock::Timeout=120", "chromium"],
    ):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            pytest.fail(f"{' '.join(command)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    assert CHROMIUM.exists(), "apt-get installed chromium but /usr/bin/chromium is missing"
    return CHROMIUM


@pytest.fixture
def browse(chromium: Path, tmp_path: Path) -> Iterator[Any]:
    """`browse(url, *flags)` -> stdout of a headless chromium run with a throwaway profile."""

    def run(url: str, *flags: str) -> str:
        profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
        command = [
            str(chromium), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", f"--user-data-dir={profile}", "--window-size=1280,900",
            *flags, url,
        ]  # fmt: skip
        env = {**os.environ, "HOME": str(tmp_path)}
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    yield run


def _cards(dom: str) -> list[tuple[str, bool]]:
    """(data-group, hidden) of every card in a dumped DOM."""
    tags = re.finditer(r'<article class="card" data-group="(\w+)"[^>]*>', dom)
    return [(tag.group(1), " hidden" in tag.group(0)) for tag in tags]


@pytest.mark.timeout(600)  # the first use may apt-get install chromium
def test_report_in_a_headless_browser(run_dir: tuple[Path, Manifest], browse: Any) -> None:
    """Chromium loads the page from disk, shows the counts, filters by #failed, and screenshots."""
    out_dir, manifest = run_dir
    url = write_report(out_dir, manifest).as_uri()

    dom = browse(url, "--dump-dom")
    assert 'data-succeeded="3"' in dom and 'data-filter="all"' in dom
    assert "succeeded: <b>3</b>" in dom and "failed: <b>2</b>" in dom
    assert _cards(dom) == [("succeeded", False)] * 3 + [("failed", False)] * 2 + [("other", False)]
    assert 'aria-pressed="true"' in dom  # the script ran and marked the active filter
    assert "pwned" in dom and "data-pwned" not in dom  # escaped script text never ran

    dom = browse(url + "#failed", "--dump-dom")
    assert 'data-filter="failed"' in dom
    assert _cards(dom) == [("succeeded", True)] * 3 + [("failed", False)] * 2 + [("other", True)]

    shot = out_dir.parent / "shot.png"
    browse(url, f"--screenshot={shot}", "--hide-scrollbars")
    with Image.open(shot) as image:
        assert image.size == (1280, 900)
        colors = image.convert("RGB").getcolors(1 << 24) or []
    assert len(colors) > 50  # text, badges and thumbnails: not a blank page
    near = sum(
        count
        for count, color in colors
        if sum(abs(c - o) for c, o in zip(color, OUTPUT_COLOR, strict=True)) < 40
    )
    assert near > 2000, "the output thumbnails did not render"
