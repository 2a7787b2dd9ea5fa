"""report.html in headless Chromium: the views, filters, search and pages a person would use.

The page's state comes from the URL fragment (`#view=compare&state=failed&q=dog&page=2`),
so each check loads one URL and reads the DOM the script built (`--dump-dom`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from statistics import median

import pytest
from PIL import Image

from batch.ledger.journal import LEDGER_NAME
from batch.report.page import write_report
from bench.browser import WINDOW, find_chromium, run_chromium
from tests.report_helpers import MODELS, OUTPUT_COLOR, three_states_dir, two_models_dir

Browse = Callable[..., str]


@pytest.fixture(scope="session")
def chromium() -> Path:
    """Debian's chromium; installed with apt-get when missing and we are root, else skipped."""
    found = find_chromium()
    if found is not None:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip("no Chromium: `apt-get install chromium` (Debian) to run the browser tests")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (
        ["apt-get", "update"],
        ["apt-get", "install", "-y", "-o", "DPkg::Lock::Timeout=120", "chromium"],
    ):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            pytest.skip(f"no Chromium, and `{' '.join(command)}` failed: {done.stderr[-500:]}")
    found = find_chromium()
    assert found is not None, "apt-get installed chromium but it is not on PATH"
    return found


@pytest.fixture
def browse(chromium: Path, tmp_path: Path) -> Browse:
    """`browse(url, *flags)` -> stdout of a headless chromium run with a throwaway profile."""

    def run(url: str, *flags: str) -> str:
        profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
        done = run_chromium(chromium, url, profile, *flags)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    return run


def _body(dom: str) -> dict[str, str]:
    """The data-* attributes the script leaves on <body>."""
    tag = re.search(r"<body([^>]*)>", dom)
    assert tag is not None
    return dict(re.findall(r'data-([\w-]+)="([^"]*)"', tag.group(1)))


def _cards(dom: str) -> list[tuple[str, str]]:
    """(data-id, data-group) of every item card shown."""
    return [
        (found.group(2), found.group(1))
        for found in re.finditer(
            r'<article class="card" data-group="([\w-]+)"[^>]*data-id="([^"]*)"', dom
        )
    ]


def _near(image: Image.Image, color: tuple[int, int, int], within: int = 40) -> list[int]:
    """The x of every other pixel (in steps of 2) within `within` of `color`."""
    rgb = image.convert("RGB")
    width, height = rgb.size
    pixels = rgb.load()
    assert pixels is not None
    return [
        x
        for y in range(0, height, 2)
        for x in range(0, width, 2)
        if sum(abs(c - o) for c, o in zip(pixels[x, y], color, strict=True)) < within  # type: ignore[arg-type]
    ]


@pytest.mark.timeout(600)  # the first use may apt-get install chromium
def test_items_view_filters_by_state_and_escapes(tmp_path: Path, browse: Browse) -> None:
    """Every item shows; #failed shows the failures with error and hint; no data ran as script."""
    out_dir, manifest = three_states_dir(tmp_path)
    url = write_report(out_dir, manifest).as_uri()

    dom = browse(url, "--dump-dom")
    assert _body(dom)["view"] == "items" and _body(dom)["matching"] == "6"
    assert [group for _, group in _cards(dom)] == ["succeeded"] * 3 + ["failed"] * 2 + ["other"]
    assert "succeeded: <b>3</b>" in dom and 'aria-pressed="true" data-filter="all"' not in dom
    assert "pwned" in dom and "data-pwned" not in dom  # the prompt's <script> is text
    assert "&lt;script&gt;document.body.dataset.pwned='1'&lt;/script&gt;" in dom

    dom = browse(url + "#failed", "--dump-dom")
    assert _body(dom)["filter"] == "failed"
    assert _cards(dom) == [("bad", "failed"), ("evil", "failed")]
    assert '<p class="error">&lt;img src=x onerror=' in dom
    assert '<p class="hint">hint: lower guidanceScale</p>' in dom

    shot = tmp_path / "items.png"
    browse(url, f"--screenshot={shot}")
    with Image.open(shot) as image:
        assert image.size == WINDOW
        assert len(_near(image, OUTPUT_COLOR)) > 500, "the output thumbnails did not render"


def test_compare_view_puts_each_models_outputs_side_by_side(tmp_path: Path, browse: Browse) -> None:
    """Two models: one row per source image, a column per model, the failure with its reason."""
    out_dir, manifest = two_models_dir(tmp_path)
    url = write_report(out_dir, manifest).as_uri()

    dom = browse(url, "--dump-dom")
    assert _body(dom)["view"] == "compare"  # the default with more than one model
    assert re.findall(r'<article class="cmp-row" data-base="(\w+)"', dom) == ["cat", "dog", "owl"]
    heads = re.search(r'<div class="cmp-row cmp-head">(.*?)</div></div>', dom)
    assert heads is not None and all(model in heads.group(1) for model in MODELS)
    cells = re.findall(r'<div class="cell" data-group="([\w-]+)" data-id="([\w-]+)"', dom)
    assert cells == [
        ("succeeded", "cat-a"), ("succeeded", "cat-b"), ("succeeded", "dog-a"),
        ("failed", "dog-b"), ("not-started", "owl-a"), ("not-started", "owl-b"),
    ]  # fmt: skip
    assert "content policy: &lt;/script&gt;" in dom and "hint: try another prompt" in dom

    shot = tmp_path / "compare.png"
    browse(url, f"--screenshot={shot}")
    with Image.open(shot) as image:
        # Striped test images, JPEG thumbnails: the colours spread, hence the wide margin.
        first, second = _near(image, (250, 200, 0), 100), _near(image, (120, 0, 160), 100)
    assert len(first) > 500 and len(second) > 500, "a model's outputs did not render"
    assert median(first) + 300 < median(second), "model a's column is not left of model b's"


def test_search_model_filter_and_pages(tmp_path: Path, browse: Browse) -> None:
    """Search by id or prompt, filter by model, in either view; 120 items make 3 pages."""
    out_dir, manifest = two_models_dir(tmp_path)
    url = write_report(out_dir, manifest).as_uri()
    dom = browse(url + "#view=items&model=model_edit-b&q=DOG", "--dump-dom")
    assert _cards(dom) == [("dog-b", "failed")]
    dom = browse(url + "#q=painting&state=failed", "--dump-dom")
    assert re.findall(r'<article class="cmp-row" data-base="(\w+)"', dom) == ["dog"]

    many = tmp_path / "many"
    many.mkdir()
    lines = [
        {"type": "item", "id": f"item-{n:03d}", "fp": "f", "state": "planned", "prompt": f"tea {n}"}
        for n in range(120)
    ]
    (many / LEDGER_NAME).write_text("".join(json.dumps(line) + "\n" for line in lines))
    url = write_report(many).as_uri()
    dom = browse(url + "#page=3", "--dump-dom")
    assert [card for card, _ in _cards(dom)] == [f"item-{n:03d}" for n in range(100, 120)]
    assert "page 3 of 3 · items 101–120 of 120" in dom
    dom = browse(url + "#q=tea+11", "--dump-dom")  # a prompt's words, as typed
    assert [card for card, _ in _cards(dom)] == ["item-011"] + [
        f"item-{n}" for n in range(110, 120)
    ]
