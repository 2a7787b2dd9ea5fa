"""A job's status at any instant, computed from its plan and the clock.

No task runs per job: every read derives status, progress and history from the
creation time, the sampled duration and the outcome, so 100,000 jobs cost only
their records. A job of duration D is `queued` at 0, `warming-up` at 0.1 D,
`in-progress` at 0.2 D (progress rising 0 -> 1 until 0.9 D), `finalizing` at
0.9 D and `success` at D. A failing job turns `failure` at 0.9 D instead of
finalizing. A stalled job stays `in-progress` with progress stuck at 0.5.
A cancel freezes the job at the cancel instant and appends `canceled`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .faults import JobPlan

FINISHED = frozenset({"success", "failure", "canceled"})
_PHASES = (("queued", 0.0), ("warming-up", 0.1), ("in-progress", 0.2), ("finalizing", 0.9))
_RUN_START, _RUN_END = 0.2, 0.9
STALL_PROGRESS = 0.5


@dataclass(frozen=True, slots=True)
class JobState:
    """A job as seen at one instant."""

    status: str
    progress: float
    history: tuple[tuple[str, float], ...]

    @property
    def updated(self) -> float:
        """When the last status was reached."""
        return self.history[-1][1]

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


def end_time(created: float, plan: JobPlan) -> float:
    """When the job finishes on its own (infinity for a stalled job)."""
    return math.inf if plan.stalls else created + plan.duration_s


def _progress(created: float, plan: JobPlan, at: float) -> float:
    d = plan.duration_s
    if d <= 0:
        return 1.0
    start, stop = created + _RUN_START * d, created + _RUN_END * d
    if at <= start:
        return 0.0
    # A duration below the clock's resolution can make stop == start: the run is over.
    value = min(1.0, (at - start) / (stop - start)) if stop > start else 1.0
    return min(value, STALL_PROGRESS) if plan.stalls else value


def state_at(created: float, plan: JobPlan, now: float, canceled_at: float | None) -> JobState:
    """The job's status, progress and status history at `now`."""
    at = now if canceled_at is None else min(now, canceled_at)
    d = plan.duration_s
    history: list[tuple[str, float]] = []
    for status, frac in _PHASES:
        t = created + frac * d
        if t > at or (status == "finalizing" and (plan.fails or plan.stalls)):
            break
        history.append((status, t))
    end = created + d
    if not plan.stalls and end <= at:
        history.append(("failure" if plan.fails else "success", end))
    if canceled_at is not None and canceled_at <= now and history[-1][0] not in FINISHED:
        history.append(("canceled", canceled_at))
    status = history[-1][0]
    progress = 1.0 if status == "success" else _progress(created, plan, at)
    return JobState(status=status, progress=round(progress, 4), history=tuple(history))


def last_transition(created: float, plan: JobPlan) -> float:
    """When the job reaches its last status if nobody cancels it (its final `updated`)."""
    d = plan.duration_s
    if not plan.stalls:
        return created + d
    last = created
    for status, frac in _PHASES:
        if status == "finalizing":
            break
        last = created + frac * d
    return last


def status_at(
    created: float, plan: JobPlan, now: float, canceled_at: float | None
) -> tuple[str, float]:
    """`(status, updated)` of `state_at(...)`, the same floats, without building the history."""
    at = now if canceled_at is None else min(now, canceled_at)
    d = plan.duration_s
    end = created + d
    if not plan.stalls and end <= at:
        return ("failure" if plan.fails else "success"), end
    if canceled_at is not None and canceled_at <= now and created <= canceled_at:
        return "canceled", canceled_at
    reached: tuple[str, float] | None = None
    for status, frac in _PHASES:
        t = created + frac * d
        if t > at or (status == "finalizing" and (plan.fails or plan.stalls)):
            break
        reached = (status, t)
    if reached is None:  # before its creation: let state_at answer (or fail) as it does
        state = state_at(created, plan, now, canceled_at)
        return state.status, state.updated
    return reached
