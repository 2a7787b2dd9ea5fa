"""report.html at scale: how long writing it takes, how big it is, and how fast it opens
in headless Chromium, for a finished two-model run of N items (100,000 in `make bench`).

The run is made on disk without the API: a ledger of N items (N/2 source images x 2
models; 90% succeeded with one output, 5% failed with an error and a hint, 5% not
started), output files and thumbnails hard-linked to one small image each (a page shows
at most one page of them, so their content does not matter to the timing), and a manifest
built in memory. The first report of a real run also makes a thumbnail per image; that
cost (about 1 ms per 256 px PNG, 14 ms per 1024 px one, bounded by the report's time
budget) is not part of this figure.

Opening is timed twice: inside the page (`data-ready-ms`: from the start of navigation
to the first page of items in the DOM, the HTML and its JSON parsed) and as Chromium's
whole wall time less that of an empty page (process start-up, load, render, dump).
"""

from __future__ import annotations

import json
import os
import re
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from batch.ledger.journal import LEDGER_NAME
from batch.manifest.load import Item, Manifest, Reference
from batch.report.page import write_report
from batch.report.thumbnails import THUMBS_DIR, Thumbnails
from bench.browser import find_chromium, run_chromium
from bench.workload import tiny_png

MODELS = ("model_flux-kontext-editing", "model_other-editing")
LINKS_PER_FILE = 50_000
SOURCES = 100  # distinct source image files (a page shows at most 50 of them)
VIEWS = {"items": "", "compare": "#view=compare", "search": "#view=items&q=cat+123"}


@dataclass(slots=True)
class PageTiming:
    items: int
    write_s: float = 0.0
    page_mb: float = 0.0
    ready_ms: dict[str, list[float]] = field(default_factory=dict)  # view -> in-page figures
    wall_s: dict[str, list[float]] = field(default_factory=dict)  # view -> Chromium wall
    blank_s: list[float] = field(default_factory=list)
    skipped: str | None = None  # why nothing was opened

    def ready(self, view: str) -> float:
        return statistics.median(self.ready_ms[view]) if self.ready_ms.get(view) else float("nan")

    def open_s(self, view: str) -> float:
        """Chromium's median wall time less an empty page's."""
        if not self.wall_s.get(view) or not self.blank_s:
            return float("nan")
        return statistics.median(self.wall_s[view]) - statistics.median(self.blank_s)


def make_run(root: Path, items: int) -> tuple[Path, Manifest]:
    """An output directory of a finished two-model run, and its manifest."""
    out, refs = root / "out", root / "refs"
    (out / THUMBS_DIR).mkdir(parents=True)
    refs.mkdir()
    sources = []
    for n in range(SOURCES):
        path = refs / f"photo-{n:03d}.png"
        path.write_bytes(tiny_png(n, 64))
        sources.append(path)
    # A file system allows so many links to one file (ext4: 65,000): a copy per 50,000.
    copies = range(items // LINKS_PER_FILE + 1)
    outputs = [out / f".output-{n}.png" for n in copies]
    thumbs = [out / f".thumb-{n}.jpg" for n in copies]
    for output, thumb in zip(outputs, thumbs, strict=True):
        output.write_bytes(tiny_png(1, 256))
        thumb.write_bytes(tiny_png(2, 160))  # the page only needs a file by that name
    lines, manifest_items = [], []
    for n in range(items):
        base, model = f"photo-{n // 2:06d}", n % 2
        item_id = f"{base}-m{model}"
        prompt = f"Turn the {('cat', 'dog', 'owl')[n % 3]} {n // 2} into a watercolor painting"
        fp = f"fp{n}"
        ref = Reference("file", str(sources[n // 2 % SOURCES]))
        manifest_items.append(
            Item(item_id, prompt, (ref,), {}, fp, model=MODELS[model], base_id=base)
        )
        if n % 20 == 19:
            continue  # not started
        planned = {"ts": "2026-01-01T00:00:00.000Z", "type": "item", "id": item_id, "fp": fp,
                   "state": "planned", "prompt": prompt, "model": MODELS[model]}  # fmt: skip
        lines.append(planned)
        done: dict[str, object] = {"ts": "2026-01-01T00:01:30.000Z", "type": "item", "id": item_id,
                                   "fp": fp, "jobId": f"job_{n:032d}", "cost": 5}  # fmt: skip
        if n % 20 == 18:
            done |= {"state": "failed", "error": "content policy", "hint": "rephrase the prompt"}
        else:
            name = f"{item_id}_0.png"
            os.link(outputs[n // LINKS_PER_FILE], out / name)
            thumb_name = Thumbnails.relative(Thumbnails.name(f"out:{name}"))
            os.link(thumbs[n // LINKS_PER_FILE], out / thumb_name)
            done |= {"state": "succeeded", "files": [{"path": name, "sha256": "0", "size": 1}]}
        lines.append(done)
    for source in sources:
        os.link(thumbs[-1], out / Thumbnails.relative(Thumbnails.name(f"ref:{source}")))
    (out / LEDGER_NAME).write_text("".join(json.dumps(line) + "\n" for line in lines))
    manifest = Manifest(root / "big.yaml", MODELS[0], None, None, None, None, None,
                        tuple(manifest_items))  # fmt: skip
    return out, manifest


def measure(root: Path, items: int, repeats: int = 3) -> PageTiming:
    """Write the report of an N-item run and open it `repeats` times per view."""
    timing = PageTiming(items)
    out, manifest = make_run(root, items)
    started = time.perf_counter()
    page = write_report(out, manifest)
    timing.write_s = time.perf_counter() - started
    timing.page_mb = page.stat().st_size / 1e6
    chromium = find_chromium()
    if chromium is None:
        timing.skipped = "no Chromium here (`apt-get install chromium` on Debian)"
        return timing
    blank = root / "blank.html"
    blank.write_text("<!doctype html><title>blank</title><p>blank")
    for attempt in range(repeats):
        profile = root / f"profile-{attempt}"
        timing.blank_s.append(_wall(chromium, blank.as_uri(), profile)[0])
        for view, fragment in VIEWS.items():
            wall, dom = _wall(chromium, page.as_uri() + fragment, profile)
            found = re.search(r'data-ready-ms="(\d+)"', dom)
            if found is None:
                raise RuntimeError(f"the report did not finish rendering ({view}): {dom[:300]}")
            timing.ready_ms.setdefault(view, []).append(float(found.group(1)))
            timing.wall_s.setdefault(view, []).append(wall)
    return timing


def _wall(chromium: Path, url: str, profile: Path) -> tuple[float, str]:
    started = time.perf_counter()
    done = run_chromium(chromium, url, profile, "--dump-dom", timeout_s=120)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"chromium failed on {url}: {done.stderr[-2000:]}")
    return wall, done.stdout


def table(timing: PageTiming) -> str:
    rows = [
        f"report.html of {timing.items:,} items (2 models): written in {timing.write_s:.2f} s "
        f"(thumbnails already current), {timing.page_mb:.1f} MB.\n",
    ]
    if timing.skipped:
        rows.append(f"Not opened: {timing.skipped}.")
        return "\n".join(rows)
    rows.append(
        "| view | ready in the page, ms (median; runs) | Chromium wall less an empty page, s |"
    )
    rows.append("|---|---|---|")
    for view in VIEWS:
        runs = ", ".join(f"{ms:.0f}" for ms in timing.ready_ms[view])
        rows.append(f"| {view} | {timing.ready(view):.0f} ({runs}) | {timing.open_s(view):.2f} |")
    rows.append(f"\nAn empty page: {statistics.median(timing.blank_s):.2f} s of Chromium wall.")
    return "\n".join(rows)
