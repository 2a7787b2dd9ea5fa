"""report.html: a self-contained page of a run, written from the ledger (no network).

It must stay usable at 100,000 items, so the page does not hold a card per item: the
items travel as compact JSON inside the page (strings of the same prompt, model, state or
reference image are stored once), and a script shows one page of them at a time, with a
search over ids and prompts, filters by state and by model, and a comparison view (one
row per input, one column per model: the same inputs' outputs side by side). The URL's
fragment holds the view (`report.html#view=compare&state=failed&q=cat&page=2`), so a link
opens it; a bare `#failed` still works.

Per item: reference thumbnails, prompt, output thumbnails (each linking to the full
file), state, model, cost, duration, attempts, job id, and for failures the error and
hint. The header counts items per state and totals the cost.

Escaping: the header is HTML-escaped here; in the JSON every `<`, `>` and `&` is written
as a `\\u` escape, so no string in it can close its <script> element; the script builds
the page with DOM calls and text nodes only (never HTML from data), and the page's CSP
lets only that one script run. Nothing is written outside the output directory (see
batch.report.thumbnails).
"""

from __future__ import annotations

import datetime as dt
import html
import json
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, NamedTuple
from urllib.parse import quote

import orjson

from batch.durable import write_atomically
from batch.ledger.journal import ItemRecord, LedgerState, gc_paused, load_state
from batch.report import template
from batch.report.thumbnails import (
    DEFAULT_BUDGET_S,
    OutputPaths,
    Source,
    Thumbnails,
    reference_source,
)

if TYPE_CHECKING:
    from batch.manifest.load import Item, Manifest

REPORT_NAME: Final = "report.html"
NOT_STARTED: Final = "not started"  # in the manifest, not yet in the ledger
PAGE_SIZE: Final = 50  # items per page (compare view: inputs per page)
_URL_SAFE: Final = re.compile(r"[A-Za-z0-9._/-]*")  # what quote() leaves as it is
_STATE_ORDER: Final = ("succeeded", "failed", "submitted", "submitting", "planned", NOT_STARTED)

# What the page shows where an image has no thumbnail (see the script's `image`).
_ORIGINAL: Final = 1  # no thumbnail yet: the original file, scaled by the browser
_NO_IMAGE: Final = 0  # missing or undecodable: its name in a grey box
_OUTSIDE: Final = -1  # an output path outside the output directory: text, no link


def write_report(
    out_dir: Path,
    manifest: Manifest | None = None,
    *,
    title: str | None = None,
    thumbnail_budget_s: float = DEFAULT_BUDGET_S,
    state: LedgerState | None = None,
) -> Path:
    """Write `out_dir/report.html` from the ledger (`state`: already loaded) and the
    manifest, if given; return its path.

    Blocking file work (thumbnails on first use): call it via `asyncio.to_thread` from a loop.
    """
    if state is None:
        state = load_state(out_dir)
    outputs = OutputPaths(out_dir)
    thumbs = Thumbnails(out_dir)
    with gc_paused():  # hundreds of thousands of young objects, no cycles
        rows = _rows(state, manifest)
        thumbs.make(_sources(rows, outputs), thumbnail_budget_s)
        default_model = manifest.model if manifest is not None else ""
        data = _PageData(thumbs, outputs, default_model).build(rows)
    if title is None:
        title = f"scenario-batch: {manifest.path.name if manifest else out_dir.name}"
    page = b"".join(
        [
            template.head(_esc(title)).encode(),
            _header(rows, state, title).encode("utf-8", "replace"),  # lone surrogates
            template.DATA_OPEN.encode(),
            _json(data),
            template.tail().encode(),
        ]
    )
    target = out_dir / REPORT_NAME
    write_atomically(target, page, fsync=True)
    return target


# -- what to show ---------------------------------------------------------------------


class _Row(NamedTuple):  # a NamedTuple: 100,000 of them are made in a blink
    id: str
    record: ItemRecord | None  # None: in the manifest, never run
    item: Item | None  # None: no manifest given, or the ledger's item is not in it
    orphan: bool  # a manifest was given and this ledger item is not in it

    @property
    def state(self) -> str:
        return self.record.state if self.record is not None else NOT_STARTED


def _rows(state: LedgerState, manifest: Manifest | None) -> list[_Row]:
    """What ran first (manifest order, then ledger items the manifest does not name), then
    what has not started: after `run --sample`, the sample is the report's first page."""
    if manifest is None:
        return [_Row(r.id, r, None, False) for r in state.items.values()]
    ran: list[_Row] = []
    waiting: list[_Row] = []
    for item in manifest.items:
        record = state.items.get(item.id)
        (ran if record is not None else waiting).append(_Row(item.id, record, item, False))
    named = {i.id for i in manifest.items}
    ran.extend(_Row(r.id, r, None, True) for r in state.items.values() if r.id not in named)
    return ran + waiting


def _group(state: str) -> str:
    if state == NOT_STARTED:
        return "not-started"
    return state if state in ("succeeded", "failed") else "other"


def _sources(rows: Iterable[_Row], outputs: OutputPaths) -> Iterator[Source]:
    """Every image of the page, in page order (thumbnails of the first pages come first)."""
    seen: set[str] = set()
    references: dict[str, Source] = {}  # many items share a reference: one abspath each
    for row in rows:
        found: list[Source] = []
        if row.item is not None:
            for ref in row.item.references:
                if ref.kind == "file":
                    if ref.value not in references:
                        references[ref.value] = reference_source(ref.value)
                    found.append(references[ref.value])
        if row.record is not None:
            found.extend(s for f in row.record.files if (s := outputs.source(f.path)) is not None)
        for source in found:
            if source.key not in seen:
                seen.add(source.key)
                yield source


class _PageData:
    """The page's JSON: tables of distinct strings, and one short array per item.

    Item: [id, base id (0: same as id), model #, state #, prompt # (-1: none), [reference #],
    [[output name, thumbnail, href if not the name]], cost, duration, attempts, job id,
    error, hint, flag (0, 1: not in manifest, 2: inputs changed since)]. A thumbnail is its
    name in thumbs/, or _ORIGINAL, _NO_IMAGE or _OUTSIDE. Reference: [is text (0/1), label,
    title, thumbnail, href]."""

    def __init__(self, thumbs: Thumbnails, outputs: OutputPaths, default_model: str) -> None:
        self.thumbs = thumbs
        self.outputs = outputs
        self.default_model = default_model
        self.models: dict[str, int] = {}
        self.states: dict[str, int] = {}
        self.prompts: dict[str, int] = {}
        self.refs: dict[tuple[Any, ...], int] = {}
        self._reference_index: dict[tuple[str, str], int] = {}  # (kind, value) -> refs index

    def build(self, rows: list[_Row]) -> dict[str, Any]:
        items = [self._item(row) for row in rows]
        states = list(self.states)
        return {
            "version": 1,
            "pageSize": PAGE_SIZE,
            "models": list(self.models),
            "states": states,
            "groups": [_group(s) for s in states],
            "prompts": list(self.prompts),
            "refs": list(self.refs),
            "items": items,
        }

    @staticmethod
    def _index(table: dict[Any, int], value: Any) -> int:
        index = table.get(value)
        if index is None:
            index = table[value] = len(table)
        return index

    def _item(self, row: _Row) -> list[Any]:
        record, item = row.record, row.item
        # Old ledgers and rows without a manifest item: the ledger's model, else the manifest's.
        model = item.model if item is not None else (record.model if record else None)
        base = item.base_id if item is not None else row.id
        prompt = item.prompt if item is not None else (record.prompt if record else None)
        flag = 1 if row.orphan else 0
        if item is not None and record is not None and record.fp != item.fingerprint:
            flag = 2  # the ledger's record is of older inputs; the next run redoes the item
        entry: list[Any] = [
            row.id,
            0 if base == row.id else base,
            self._index(self.models, model or self.default_model),
            self._index(self.states, row.state),
            -1 if not prompt else self._index(self.prompts, prompt),
            self._references(row),
            self._outputs(record),
        ]
        if record is None:
            return [*entry, None, None, 0, None, None, None, flag]
        cost = record.spent or record.cost
        duration = _duration(record.first_ts, record.last_ts) if record.first_ts else None
        return [
            *entry,
            cost or None,
            duration,
            record.attempts,
            record.job_id,
            record.error,
            record.hint,
            flag,
        ]

    def _references(self, row: _Row) -> list[int]:
        if row.item is None:
            # No manifest to tell what they were: the ledger's record of them, as text.
            refs = row.record.references if row.record is not None else []
            return [self._index(self.refs, (1, ref, ref, _NO_IMAGE, None)) for ref in refs]
        found: list[int] = []
        for ref in row.item.references:
            index = self._reference_index.get((ref.kind, ref.value))
            if index is None:
                index = self._index(self.refs, self._reference(ref.kind, ref.value))
                self._reference_index[ref.kind, ref.value] = index
            found.append(index)
        return found

    def _reference(self, kind: str, value: str) -> tuple[Any, ...]:
        if kind != "file":  # asset ids and URLs: text only, the page never loads them
            return (1, f"{kind}: {value}", value, _NO_IMAGE, None)
        source = reference_source(value)
        thumb = self._thumbnail(source.key)
        return (0, os.path.basename(value), value, thumb, Path(source.path).as_uri())

    def _outputs(self, record: ItemRecord | None) -> list[list[Any]]:
        if record is None:
            return []
        found: list[list[Any]] = []
        for file in record.files:
            source = self.outputs.source(file.path)
            if source is None:
                found.append([file.path, _OUTSIDE])
                continue
            href = file.path if _URL_SAFE.fullmatch(file.path) else quote(file.path)
            thumb = self._thumbnail(source.key)
            found.append([file.path, thumb] if href == file.path else [file.path, thumb, href])
        return found

    def _thumbnail(self, key: str) -> str | int:
        name = self.thumbs.ready.get(key)
        if name is not None:
            return name
        usable = key in self.thumbs.usable and key not in self.thumbs.failed
        return _ORIGINAL if usable else _NO_IMAGE


def _json(data: dict[str, Any]) -> bytes:
    """JSON that is safe as the text of a <script> element: nothing in it can close it."""
    try:
        raw = orjson.dumps(data)
    except TypeError:  # a lone surrogate (from a ledger line): json escapes it as \\udxxx
        raw = json.dumps(data, separators=(",", ":")).encode()
    # As Django's json_script does: no <, > or & of the data is left for an HTML parser.
    return raw.replace(b"<", b"\\u003c").replace(b">", b"\\u003e").replace(b"&", b"\\u0026")


# -- the header -----------------------------------------------------------------------


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _header(rows: list[_Row], state: LedgerState, title: str) -> str:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.state] = counts.get(row.state, 0) + 1
    names = [n for n in _STATE_ORDER if n in counts] + sorted(set(counts) - set(_STATE_ORDER))
    groups = dict.fromkeys(template.GROUPS, 0)
    for name, count in counts.items():
        groups[_group(name)] += count
    total_cost = state.total_spent()
    parts = [
        f'<body data-total="{len(rows)}" data-succeeded="{groups["succeeded"]}" '
        f'data-failed="{groups["failed"]}" data-other="{groups["other"]}" '
        f'data-not-started="{groups["not-started"]}" data-filter="all">\n',
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
    parts.append(template.controls(len(rows), groups))
    parts.append("</header>\n")
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
