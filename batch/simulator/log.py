"""The request log: one frozen record per request either origin saw."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

GENERATE_PREFIX = "/v1/generate/custom/"


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request as the simulator saw it.

    `status` is None when the connection was reset or dropped instead of answered;
    `job_id` is the job a generate call created, set even when the answer was dropped.
    `body` is the parsed JSON body of JSON POSTs (an inline upload's `image` is
    replaced by a short placeholder to keep the log small), else None.
    """

    time: float
    origin: Literal["api", "cdn"]
    method: str
    path: str
    query: dict[str, str]
    status: int | None
    auth_sent: bool
    authorization: str | None
    body: Any
    job_id: str | None

    @property
    def is_generate(self) -> bool:
        """A POST /v1/generate/custom/{modelId} call."""
        return self.method == "POST" and self.path.startswith(GENERATE_PREFIX)

    @property
    def created_job(self) -> bool:
        """This request created a job (whether or not its answer reached the client)."""
        return self.job_id is not None


def generate_calls(log: Iterable[RequestRecord]) -> list[RequestRecord]:
    """The generate calls in the log, dry runs and refused calls included."""
    return [r for r in log if r.is_generate]


def submissions_by(
    log: Iterable[RequestRecord], key: Callable[[dict[str, Any]], Hashable]
) -> Counter[Hashable]:
    """How many jobs were created per key of the generate body."""
    counts: Counter[Hashable] = Counter()
    for record in log:
        if record.is_generate and record.job_id is not None and isinstance(record.body, dict):
            counts[key(record.body)] += 1
    return counts


def prompt_and_references(body: dict[str, Any]) -> Hashable:
    """The usual item key: the prompt and the reference asset ids."""
    refs = body.get("referenceImages")
    return (body.get("prompt"), tuple(refs) if isinstance(refs, list) else refs)
