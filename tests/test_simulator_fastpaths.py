"""The simulator's shortcuts answer exactly what the straightforward computation would.

`status_at` against `state_at`, the pruned GET /jobs listing against an O(n) listing
that computes every job's full state, the cached ISO dates, and the hand-written PNGs.
"""

from __future__ import annotations

import base64
import io
import json
from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import MultiDict, MultiDictProxy
from PIL import Image

from batch.simulator import MODEL_ID
from batch.simulator.faults import JobPlan
from batch.simulator.images import OutputSpec, Renderer, encode_png, png_size
from batch.simulator.lifecycle import last_transition, state_at, status_at
from batch.simulator.listing import list_jobs
from batch.simulator.shapes import iso
from batch.simulator.state import TEAM_ID, Job, Store

plans = st.builds(
    JobPlan,
    duration_s=st.floats(0.0, 10.0) | st.sampled_from([0.0, 1.0, 2.0]),
    fails=st.booleans(),
    stalls=st.booleans(),
).map(lambda p: JobPlan(p.duration_s, p.fails and not p.stalls, p.stalls))
offsets = st.floats(0.0, 15.0) | st.sampled_from([0.0, 0.1, 0.2, 0.9, 1.0, 2.0])


@given(created=st.floats(0.0, 1e9), plan=plans, dt=offsets, cancel=st.none() | offsets)
def test_status_at_is_state_at(
    created: float, plan: JobPlan, dt: float, cancel: float | None
) -> None:
    """Same status, same `updated` float, and `updated` never past the last transition
    (unless a cancel came later, the case the listing tracks as a late cancel)."""
    now = created + dt
    canceled_at = None if cancel is None else created + cancel
    state = state_at(created, plan, now, canceled_at)
    assert status_at(created, plan, now, canceled_at) == (state.status, state.updated)
    if canceled_at is None or canceled_at <= last_transition(created, plan):
        assert state.updated <= last_transition(created, plan)


def _reference(
    store: Store, query: dict[str, str], owner: str, now: float, take: int
) -> tuple[list[tuple[str, Any]], str | None]:
    """The filtered listing as it was: every job's full state, sorted, then the page."""
    token = query.get("paginationToken")
    cursor = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))) if token else {}
    status = query.get("status")
    after = query.get("updatedAfter")
    updated_after = None if after is None else datetime.fromisoformat(after).timestamp()
    rows = []
    for job in store.job_order:
        if job.owner_id != owner:
            continue
        state = job.state(now)
        if status is not None and state.status != status:
            continue
        if updated_after is not None and state.updated <= updated_after:
            continue
        rows.append((job, state))
    rows.sort(key=lambda r: (r[1].updated, r[0].seq), reverse=True)
    if "u" in cursor:
        bound = (float(cursor["u"]), int(cursor["s"]))
        rows = [r for r in rows if (r[1].updated, r[0].seq) < bound]
    page = [(job.id, state) for job, state in rows[:take]]
    if len(rows) <= take:
        return page, None
    if page:
        last = rows[take - 1]
        nxt = {"u": last[1].updated, "s": last[0].seq}
    else:
        nxt = {k: cursor[k] for k in ("u", "s") if k in cursor} or {"u": 1e300, "s": 0}
    raw = json.dumps({**nxt, "n": int(cursor.get("n", 0)) + 1}, separators=(",", ":"))
    return page, base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


job_specs = st.lists(
    st.tuples(
        st.floats(0.0, 3.0),  # gap since the previous creation
        plans,
        st.none() | st.floats(0.0, 12.0),  # cancel this long after creation
        st.sampled_from([TEAM_ID, "proj_a"]),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(
    specs=job_specs,
    now_after=st.floats(0.0, 20.0),
    status=st.none() | st.sampled_from(["in-progress", "success", "failure", "canceled"]),
    after=st.none() | st.floats(-2.0, 40.0),
    size=st.integers(1, 7),
    shorts=st.lists(st.none() | st.integers(0, 6), max_size=12),
)
def test_fast_listing_matches_full_state_listing(
    specs: list[tuple[float, JobPlan, float | None, str]],
    now_after: float,
    status: str | None,
    after: float | None,
    size: int,
    shorts: list[int | None],
) -> None:
    """Every page (jobs, their states, the token) of a filtered listing, followed to the end
    with short pages mixed in, equals what computing every job's state gives."""
    store = Store(0, Renderer())
    t = 1_700_000_000.0
    jobs: list[tuple[Job, float | None]] = []
    for gap, plan, cancel, owner in specs:
        t += gap
        params = {"prompt": "p", "referenceImages": ["r"], "numOutputs": 1, "aspectRatio": "auto"}
        job = store.add_job(MODEL_ID, owner, {}, params, plan, 5.0, t)
        jobs.append((job, None if cancel is None else t + cancel))
    now = t + now_after
    for job, cancel_at in sorted(jobs, key=lambda j: j[1] or 0.0):
        if cancel_at is not None and cancel_at <= now:  # cancels arrive in time order
            store.cancel(job, cancel_at)
    query: dict[str, str] = {"type": "custom", "pageSize": str(size)}
    if status is not None:
        query["status"] = status
    if after is not None:
        stamp = datetime.fromtimestamp(1_700_000_000.0 + after, UTC)
        query["updatedAfter"] = stamp.isoformat()
    for owner in (TEAM_ID, "proj_a"):
        token: str | None = None
        for call in range(60):
            q = dict(query, paginationToken=token) if token else dict(query)
            short = shorts[call] if call < len(shorts) else None
            take = size if short is None else min(short, size - 1)
            want = _reference(store, q, owner, now, take)
            page, token = list_jobs(
                store, MultiDictProxy(MultiDict(q)), owner, now, lambda _, n=take: n
            )
            assert ([(j.id, s) for j, s in page], token) == want
            if token is None:
                break
        else:
            raise AssertionError("pagination did not end")


@given(st.floats(-1e10, 1e10) | st.floats(1.6e9, 1.8e9))
def test_iso_cache_gives_the_formatted_date(t: float) -> None:
    dt = datetime.fromtimestamp(t, UTC)
    expected = dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"
    assert iso(t) == expected and iso(t) == expected


def test_hand_written_png_decodes_to_the_same_pixels() -> None:
    for size in [(1, 1), (16, 16), (256, 144), (7, 300)]:
        img = Image.effect_noise(size, 40).convert("RGB")
        png = encode_png(img)
        with Image.open(io.BytesIO(png)) as back:
            back.verify()
        with Image.open(io.BytesIO(png)) as back:
            assert back.format == "PNG" and back.mode == "RGB" and back.size == size
            assert back.tobytes() == img.tobytes()
        assert png_size(png) == size


def test_output_cache_is_bounded_by_bytes() -> None:
    """Finished PNGs are kept up to the byte budget, least recently used out first."""
    src = io.BytesIO()
    Image.effect_noise((64, 64), 60).convert("RGB").save(src, format="PNG")
    renderer = Renderer(cache_bytes=40_000)
    first = renderer.render(OutputSpec("r", "p", 1, 0, "auto"), src.getvalue())
    for i in range(1, 40):
        renderer.render(OutputSpec("r", "p", 1, i, "auto"), src.getvalue())
    held = renderer._outputs  # the cache itself is what is checked
    assert 1 < len(held) < 40 and sum(map(len, held.values())) <= 40_000
    assert OutputSpec("r", "p", 1, 0, "auto") not in held
    assert renderer.render(OutputSpec("r", "p", 1, 0, "auto"), src.getvalue()) == first
