"""GET /v1/jobs: filters, newest-first order, opaque tokens and short pages.

Without status/type filters jobs come newest first by creation (an O(page) walk
back from the cursor); with them, newest first by `updatedAt`. That needs the
current status of every job that can match: with `updatedAfter`, only the jobs
whose last transition is later (found by bisection, so a poller's query costs
about the jobs of its time window); without it, every job older than the cursor
(a cheap `(status, updated)` per job, full state only for the page). Tokens are
base64 JSON, but clients must treat them as opaque.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

from multidict import MultiMapping

from .lifecycle import JobState
from .state import Job, Store

STATUSES = (
    "pending",
    "queued",
    "warming-up",
    "in-progress",
    "finalizing",
    "success",
    "failure",
    "canceled",
)
_FILTERS = ("status", "type", "types", "workflowId")


class ListError(ValueError):
    """A bad query: the message names the parameter."""


def _token(payload: dict[str, Any]) -> str:
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _untoken(token: str) -> dict[str, Any]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        value = json.loads(raw)
    except (binascii.Error, ValueError) as exc:
        raise ListError("paginationToken: not a token this API issued") from exc
    if not isinstance(value, dict):
        raise ListError("paginationToken: not a token this API issued")
    return value


def _date(query: MultiMapping[str], name: str) -> float | None:
    value = query.get(name)
    if value is None:
        return None
    try:
        dt = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ListError(f"{name}: must be an ISO 8601 date, got {value!r}") from exc
    if dt.tzinfo is None:
        raise ListError(f"{name}: must carry a time zone (e.g. Z), got {value!r}")
    return dt.timestamp()


def _page_size(query: MultiMapping[str]) -> int:
    raw = query.get("pageSize", "50")
    if not raw.isdigit() or not 1 <= int(raw) <= 100:
        raise ListError(f"pageSize: must be an integer 1-100, got {raw!r}")
    return int(raw)


def _types(query: MultiMapping[str]) -> set[str] | None:
    values = query.getall("types", [])
    if values:
        return {t for v in values for t in v.split(",") if t}
    single = query.get("type")
    return {single} if single is not None else None


def list_jobs(
    store: Store,
    query: MultiMapping[str],
    owner_id: str,
    now: float,
    short_page: Callable[[int], int | None],
) -> tuple[list[tuple[Job, JobState]], str | None]:
    """One page of the owner's jobs and the next token (None on the last page)."""
    filtered = any(name in query for name in _FILTERS)
    created_after = _date(query, "createdAfter")
    updated_after = _date(query, "updatedAfter")
    if created_after is not None and filtered:
        raise ListError(
            "createdAfter: not allowed with status, type, types or workflowId "
            "(they sort by update date): use updatedAfter"
        )
    if updated_after is not None and not filtered:
        raise ListError(
            "updatedAfter: only allowed with status, type, types or workflowId: use createdAfter"
        )
    status = query.get("status")
    if status is not None and status not in STATUSES:
        raise ListError(f"status: must be one of {', '.join(STATUSES)}, got {status!r}")
    size = _page_size(query)
    token = query.get("paginationToken")
    cursor = _untoken(token) if token else {}
    want = short_page(size)
    take = size if want is None else want

    if not filtered:
        hi = int(cursor.get("before", len(store.job_order)))
        lo = store.first_created_after(created_after) if created_after is not None else 0
        picked: list[tuple[Job, JobState]] = []
        more = False
        for i in range(min(hi, len(store.job_order)) - 1, lo - 1, -1):
            job = store.job_order[i]
            if job.owner_id != owner_id:
                continue
            if len(picked) >= take:
                more = True
                break
            picked.append((job, job.state(now)))
        if not more:
            return picked, None
        before = picked[-1][0].seq if picked else hi
        return picked, _token({"before": before, "n": int(cursor.get("n", 0)) + 1})

    types = _types(query)
    bound = (float(cursor["u"]), int(cursor["s"])) if "u" in cursor else None
    rows: list[tuple[float, int, Job]] = []
    if "workflowId" not in query and (types is None or "custom" in types):
        for job in _candidates(store, updated_after, bound):
            if job.owner_id != owner_id:
                continue
            if job.canceled_at is None and job.last <= now and not job.plan.stalls:
                # Finished on its own: what `job.status(now)` answers, without the call.
                current, updated = ("failure" if job.plan.fails else "success"), job.last
            else:
                current, updated = job.status(now)
            if status is not None and current != status:
                continue
            if updated_after is not None and updated <= updated_after:
                continue
            if bound is not None and not (updated, job.seq) < bound:
                continue
            rows.append((updated, job.seq, job))
    # Newest update first; (updated, seq) is unique, so jobs themselves are never compared.
    # Rows come nearly in order (creation order), where a sort beats heapq.nlargest.
    rows.sort(reverse=True)
    top = rows[: take + 1]
    page = [(job, job.state(now)) for _, _, job in top[:take]]
    if len(rows) <= take:
        return page, None
    if page:
        last = top[take - 1]
        nxt: dict[str, Any] = {"u": last[0], "s": last[1]}
    else:
        nxt = {k: cursor[k] for k in ("u", "s") if k in cursor} or {"u": 1e300, "s": 0}
    return page, _token({**nxt, "n": int(cursor.get("n", 0)) + 1})


def _candidates(
    store: Store, updated_after: float | None, bound: tuple[float, int] | None
) -> list[Job]:
    """Every job that may have `updated > updated_after` and `(updated, seq) < bound`, and
    few others, without computing any state. A job's `updated` lies between its creation
    and its last transition (`Job.last`, or a late cancel), so in creation order the jobs
    before `first_updated_after` and those created after the bound's time cannot match."""
    order = store.job_order
    start = 0 if updated_after is None else store.first_updated_after(updated_after)
    stop = len(order) if bound is None else store.first_created_after(bound[0])
    late = [job for seq, job in store.late_cancels.items() if seq < start]
    return late + order[start:stop]
