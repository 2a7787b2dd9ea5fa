"""`scenario-batch status DIR...`: what the ledgers say, without touching the network."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

from batch.errors import UsageError
from batch.ledger.journal import LEDGER_NAME, LedgerState, load_state

ORDER = ("succeeded", "failed", "submitted", "submitting", "planned")


def render_status(directories: Sequence[Path]) -> str:
    states = []
    for directory in directories:
        if not (directory / LEDGER_NAME).exists():
            raise UsageError(f"{directory}: no {LEDGER_NAME} here; is this an output directory?")
        states.append(load_state(directory))
    lines = []
    counts: dict[str, int] = {}
    spent = 0.0
    failures: list[tuple[str, str, str | None]] = []
    first: str | None = None
    last: str | None = None
    for state in states:
        for name, count in state.counts().items():
            counts[name] = counts.get(name, 0) + count
        spent += state.total_spent()
        failures.extend(
            (r.id, r.error or "failed", r.hint) for r in state.items.values() if r.state == "failed"
        )
        first = min(filter(None, [first, state.first_ts]), default=None)
        last = max(filter(None, [last, state.last_ts]), default=None)
    total = sum(counts.values())
    where = ", ".join(str(d) for d in directories)
    lines.append(f"{where}: {total} items")
    for name in ORDER + tuple(sorted(set(counts) - set(ORDER))):
        if counts.get(name):
            lines.append(f"  {name:<11} {counts[name]}")
    lines.append(f"  cost        {spent:g} compute units")
    if first and last:
        lines.append(f"  time        {first} .. {last} ({_duration(first, last)})")
    lines.extend(_per_model(states))
    torn = sum(s.torn_lines for s in states)
    if torn:
        lines.append(f"  note        {torn} unreadable ledger line(s) ignored (a run was killed)")
    if failures:
        lines.append("failures:")
        for item_id, error, hint in sorted(failures):
            lines.append(f"  {item_id}: {error}" + (f" (hint: {hint})" if hint else ""))
    return "\n".join(lines)


def _per_model(states: Sequence[LedgerState]) -> list[str]:
    """With several models (`models:`), a line per model: its items by state and its cost.
    Items of ledgers older than `models:` record no model and are left out."""
    counts: dict[str, dict[str, int]] = {}
    spent: dict[str, float] = {}
    for state in states:
        for record in state.items.values():
            if record.model is not None:
                per = counts.setdefault(record.model, {})
                per[record.state] = per.get(record.state, 0) + 1
                spent[record.model] = spent.get(record.model, 0.0) + record.spent
    if len(counts) < 2:
        return []
    lines = ["per model:"]
    for model, per in sorted(counts.items()):
        shown = ", ".join(f"{per[name]} {name}" for name in ORDER if per.get(name))
        lines.append(f"  {model}: {shown}; {spent[model]:g} compute units")
    return lines


def _duration(first: str, last: str) -> str:
    try:
        start = dt.datetime.fromisoformat(first.replace("Z", "+00:00"))
        end = dt.datetime.fromisoformat(last.replace("Z", "+00:00"))
    except ValueError:
        return "unknown"
    seconds = int((end - start).total_seconds())
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m{seconds % 60:02d}s"


__all__ = ["render_status"]
