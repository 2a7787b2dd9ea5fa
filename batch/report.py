"""report.html: a self-contained gallery of a run, written from the ledger (no network).

Per item: reference thumbnails, prompt, output thumbnails side by side (each linking to
the full file), state, cost, duration, attempts, job id, and for failures the error and
hint. A header counts items per state and totals the cost; buttons filter by state.

Why thumbnails on disk: a run of thousands of items must open quickly, so the page never
inlines or loads full images; it points at small JPEGs in `thumbs/` (lazy-loaded), made
once and remade only when their source is newer. Every string from the manifest, the
ledger or the API is HTML-escaped, and nothing is written outside the output directory:
the report and each thumbnail go to a temporary name first and are renamed into place
(a rename replaces a planted symlink instead of following it).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import html
import io
import logging
import os
import stat
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final
from urllib.parse import quote

from PIL import Image

from batch import report_template as template
from batch.durable import write_atomically
from batch.ledger import ItemRecord, LedgerState, load_state

if TYPE_CHECKING:
    from batch.manifest import Item, Manifest

log = logging.getLogger(__name__)

REPORT_NAME: Final = "report.html"
THUMBS_DIR: Final = "thumbs"
THUMB_PX: Final = 160
NOT_STARTED: Final = "not started"  # in the manifest, not yet in the ledger
_WORKERS: Final = min(8, os.cpu_count() or 1)


def write_report(
    out_dir: Path, manifest: Manifest | None = None, *, title: str | None = None
) -> Path:
    """Write `out_dir/report.html` from the ledger (and the manifest, if given); return its path.

    Blocking file work (thumbnails on first use): call it via `asyncio.to_thread` from a loop.
    """
    state = load_state(out_dir)
    rows = _rows(state, manifest)
    outputs = _OutputPaths(out_dir)
    thumbs = _Thumbnails(out_dir)
    thumbs.make(_sources(rows, outputs))
    if title is None:
        title = f"scenario-batch: {manifest.path.name if manifest else out_dir.name}"
    page = "".join(_page(rows, state, thumbs, title, outputs))
    target = out_dir / REPORT_NAME
    write_atomically(target, page.encode("utf-8", "replace"), fsync=True)  # lone surrogates
    return target


# -- what to show ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Row:
    id: str
    record: ItemRecord | None  # None: in the manifest, never run
    item: Item | None  # None: no manifest given, or the ledger's item is not in it
    orphan: bool  # a manifest was given and this ledger item is not in it


def _rows(state: LedgerState, manifest: Manifest | None) -> list[_Row]:
    """Manifest order first, then ledger items the manifest does not name (ledger order)."""
    if manifest is None:
        return [_Row(r.id, r, None, False) for r in state.items.values()]
    rows = [_Row(i.id, state.items.get(i.id), i, False) for i in manifest.items]
    named = {i.id for i in manifest.items}
    rows.extend(_Row(r.id, r, None, True) for r in state.items.values() if r.id not in named)
    return rows


def _group(state: str) -> str:
    return state if state in ("succeeded", "failed") else "other"


# -- thumbnails -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Source:
    key: str  # what the thumbnail's name is hashed from
    path: str
    follow: bool  # follow a symlink: yes for the user's references, never inside out_dir


class _OutputPaths:
    """Output files named inside the output directory, judged by name once per path."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = str(out_dir)
        self._known: dict[str, _Source | None] = {}

    def source(self, relative: str) -> _Source | None:
        if relative not in self._known:
            normal = os.path.normpath(relative)
            inside = not (
                os.path.isabs(normal)
                or normal == os.pardir
                or normal.startswith(os.pardir + os.sep)
            )
            path = os.path.join(self.out_dir, normal)
            self._known[relative] = _Source("out:" + normal, path, False) if inside else None
        return self._known[relative]


def _reference_source(value: str) -> _Source:
    path = os.path.abspath(value)
    return _Source("ref:" + path, path, True)


def _sources(rows: Iterable[_Row], outputs: _OutputPaths) -> dict[str, _Source]:
    found: dict[str, _Source] = {}
    for row in rows:
        if row.record is not None:
            for file in row.record.files:
                source = outputs.source(file.path)
                if source is not None:
                    found.setdefault(source.key, source)
        if row.item is not None:
            for ref in row.item.references:
                if ref.kind == "file":
                    source = _reference_source(ref.value)
                    found.setdefault(source.key, source)
    return found


class _Thumbnails:
    """Small JPEGs in `out_dir/thumbs/`, named by a hash of their source's key."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = str(out_dir)
        self.directory = out_dir / THUMBS_DIR
        self.ready: dict[str, str] = {}  # source key -> its current thumbnail, relative

    @staticmethod
    def relative(key: str) -> str:
        name = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:32]
        return f"{THUMBS_DIR}/{name}.jpg"

    def make(self, sources: dict[str, _Source]) -> None:
        """Make the missing or stale thumbnails (in threads: Pillow decodes without the GIL)."""
        if not sources or not self._prepare_directory():
            return
        stale: list[tuple[str, _Source, str]] = []
        for key, source in sources.items():
            relative = self.relative(key)
            target = os.path.join(self.out_dir, relative)
            fresh = _is_fresh(source, target)
            if fresh:
                self.ready[key] = relative
            elif fresh is not None:
                stale.append((key, source, target))
        if not stale:
            return
        with ThreadPoolExecutor(_WORKERS, thread_name_prefix="thumbs") as pool:
            made = pool.map(lambda job: _make_thumbnail(job[1].path, job[2]), stale)
            for (key, _, _), ok in zip(stale, made, strict=True):
                if ok:
                    self.ready[key] = self.relative(key)

    def _prepare_directory(self) -> bool:
        if self.directory.is_symlink() or (self.directory.exists() and not self.directory.is_dir()):
            log.warning("%s is not a plain directory; the report has no thumbnails", self.directory)
            return False
        self.directory.mkdir(exist_ok=True)
        return True


def _is_fresh(source: _Source, target: str) -> bool | None:
    """True: the thumbnail is current; False: make it; None: the source is unusable."""
    try:
        info = os.stat(source.path) if source.follow else os.lstat(source.path)
    except OSError:
        return None
    if not stat.S_ISREG(info.st_mode):  # a symlink planted among the outputs is not followed
        return None
    try:
        thumb = os.lstat(target)
    except OSError:
        return False
    return stat.S_ISREG(thumb.st_mode) and thumb.st_mtime_ns >= info.st_mtime_ns


def _make_thumbnail(source: str, target: str) -> bool:
    try:
        data = _thumbnail_jpeg(source)
    except Exception as exc:  # an undecodable image must only cost its own thumbnail
        log.debug("no thumbnail for %s: %s", source, exc)
        return False
    write_atomically(Path(target), data, fsync=False)
    return True


def _thumbnail_jpeg(path: str) -> bytes:
    with Image.open(path) as opened:
        opened.draft("RGB", (THUMB_PX, THUMB_PX))  # JPEG: decode at a reduced scale
        opened.thumbnail((THUMB_PX, THUMB_PX))
        image: Image.Image = opened
        if image.mode in ("RGBA", "LA", "P", "PA"):
            rgba = image.convert("RGBA")  # transparency: flatten onto white
            image = Image.new("RGB", rgba.size, (255, 255, 255))
            image.paste(rgba, mask=rgba.getchannel("A"))
        elif image.mode != "RGB":
            image = image.convert("RGB")
        out = io.BytesIO()
        image.save(out, format="JPEG", quality=80)
    return out.getvalue()


# -- the page ---------------------------------------------------------------------------


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _page(
    rows: list[_Row], state: LedgerState, thumbs: _Thumbnails, title: str, outputs: _OutputPaths
) -> Iterable[str]:
    counts: dict[str, int] = {}
    for row in rows:
        name = row.record.state if row.record is not None else NOT_STARTED
        counts[name] = counts.get(name, 0) + 1
    yield template.head(_esc(title))
    yield from _header(rows, counts, state, title)
    yield "<main>\n"
    for row in rows:
        yield _card(row, thumbs, outputs)
    if not rows:
        yield '<p class="empty">No items in this ledger yet.</p>\n'
    yield "</main>\n"
    yield template.tail()


def _header(rows: list[_Row], counts: dict[str, int], state: LedgerState, title: str) -> list[str]:
    order = ["succeeded", "failed", "submitted", "submitting", "planned", NOT_STARTED]
    names = [n for n in order if n in counts] + sorted(set(counts) - set(order))
    groups = {g: 0 for g in template.GROUPS}
    for name, count in counts.items():
        groups[_group(name)] += count
    total_cost = state.total_spent()
    parts = [
        f'<body data-total="{len(rows)}" data-succeeded="{groups["succeeded"]}" '
        f'data-failed="{groups["failed"]}" data-other="{groups["other"]}" data-filter="all">\n',
        f'<header class="top">\n<h1>{_esc(title)}</h1>\n<p class="meta">',
        f"{len(rows)} items · {total_cost:g} compute units · {state.runs} run(s)",
    ]
    if state.first_ts and state.last_ts:
        parts.append(
            f" · {_esc(state.first_ts)} .. {_esc(state.last_ts)} "
            f"({_duration(state.first_ts, state.last_ts)})"
        )
    if state.torn_lines:
        parts.append(f" · {state.torn_lines} unreadable ledger line(s) ignored")
    parts.append('</p>\n<ul class="counts">')
    for name in names:
        parts.append(
            f'<li data-state="{_esc(name)}" data-count="{counts[name]}">'
            f"{_esc(name)}: <b>{counts[name]}</b></li>"
        )
    parts.append(f'<li data-cost="{total_cost:g}">cost: <b>{total_cost:g}</b> CU</li></ul>\n')
    parts.append('<nav class="filters">')
    parts.append(f'<button type=button data-filter="all">all ({len(rows)})</button>')
    for group in template.GROUPS:
        parts.append(
            f'<button type=button data-filter="{group}">{group} ({groups[group]})</button>'
        )
    parts.append("</nav>\n</header>\n")
    return parts


def _card(row: _Row, thumbs: _Thumbnails, outputs: _OutputPaths) -> str:
    record = row.record
    state = record.state if record is not None else NOT_STARTED
    badges = f'<span class="badge {_group(state)}">{_esc(state)}</span>'
    if row.orphan:
        badges += '<span class="badge orphan">not in manifest</span>'
    elif row.item is not None and record is not None and record.fp != row.item.fingerprint:
        # The ledger's record is of older inputs; the next run redoes the item.
        badges += '<span class="badge orphan">inputs changed since</span>'
    prompt = row.item.prompt if row.item is not None else (record.prompt if record else None)
    info = [
        f'<div class="info"><h2>{_esc(row.id)}{badges}</h2>',
        f'<p class="prompt">{_esc(prompt)}</p>' if prompt else "",
        "<dl>",
    ]
    if record is not None:
        cost = record.spent or record.cost
        duration = _duration(record.first_ts, record.last_ts) if record.first_ts else None
        info.append(f"<dt>cost</dt><dd>{f'{cost:g} CU' if cost else '—'}</dd>")
        info.append(f"<dt>duration</dt><dd>{duration or '—'}</dd>")
        info.append(f"<dt>attempts</dt><dd>{record.attempts}</dd>")
        info.append(f"<dt>job</dt><dd>{_esc(record.job_id) if record.job_id else '—'}</dd>")
    info.append("</dl>")
    if record is not None and record.error:
        info.append(f'<p class="error">{_esc(record.error)}</p>')
    if record is not None and record.hint:
        info.append(f'<p class="hint">hint: {_esc(record.hint)}</p>')
    info.append("</div>")
    return (
        f'<article class="card" data-group="{_group(state)}" data-state="{_esc(state)}" '
        f'data-id="{_esc(row.id)}">'
        f'<div class="refs">{_references(row, thumbs)}</div>'
        + "".join(info)
        + f'<div class="outs">{_outputs(record, thumbs, outputs)}</div></article>\n'
    )


def _references(row: _Row, thumbs: _Thumbnails) -> str:
    parts: list[str] = []
    if row.item is None:
        # No manifest to tell what they were: show the ledger's record of them as text.
        refs = row.record.references if row.record is not None else []
        return "".join(f'<div class="ref-text">{_esc(r)}</div>' for r in refs)
    for ref in row.item.references:
        if ref.kind != "file":  # asset ids and URLs: text only, the page never loads them
            parts.append(f'<div class="ref-text">{_esc(ref.kind)}: {_esc(ref.value)}</div>')
            continue
        source = _reference_source(ref.value)
        name = os.path.basename(ref.value)
        thumb = thumbs.ready.get(source.key)
        if thumb is not None:
            parts.append(
                f'<a href="{_esc(Path(source.path).as_uri())}" title="{_esc(ref.value)}">'
                f'<img src="{_esc(thumb)}" loading="lazy" '
                f'alt="{_esc(name)}"></a>'
            )
        else:
            parts.append(f'<div class="missing" title="{_esc(ref.value)}">{_esc(name)}</div>')
    return "".join(parts)


def _outputs(record: ItemRecord | None, thumbs: _Thumbnails, outputs: _OutputPaths) -> str:
    if record is None:
        return ""
    parts: list[str] = []
    for file in record.files:
        source = outputs.source(file.path)
        name = _esc(file.path)
        if source is None:
            parts.append(f'<div class="missing">outside the output directory: {name}</div>')
            continue
        thumb = thumbs.ready.get(source.key)
        image = (
            f'<img src="{_esc(thumb)}" loading="lazy" alt="{name}">'
            if thumb is not None
            else f'<div class="missing">{name}</div>'
        )
        href = _esc(quote(file.path))
        parts.append(
            f'<figure><a href="{href}" title="{name}">{image}</a>'
            f"<figcaption>{name}</figcaption></figure>"
        )
    return "".join(parts)


def _duration(first: str | None, last: str | None) -> str | None:
    if not first or not last:
        return None
    try:
        seconds = (
            dt.datetime.fromisoformat(last) - dt.datetime.fromisoformat(first)
        ).total_seconds()
    except (ValueError, TypeError):
        return None
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


# -- files ------------------------------------------------------------------------------
