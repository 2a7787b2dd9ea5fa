"""The simulator's memory: assets, uploads and jobs, with ids and indexes.

Nothing here knows HTTP; handlers in `api.py` and `cdn.py` call these methods.
"""

from __future__ import annotations

import bisect
import hashlib
import heapq
import random
import string
from dataclasses import dataclass, field
from typing import Any

from .faults import JobPlan
from .images import OutputSpec, Renderer, inspect_image, png_size
from .lifecycle import JobState, end_time, last_transition, state_at, status_at

_ALPHABET = string.ascii_letters + string.digits
TEAM_ID = "team_simulator"
AUTHOR_ID = "sim0000000000000000000000000000a"


@dataclass(slots=True)
class Asset:
    """An image the team owns: uploaded (bytes kept) or a job output (drawn on demand)."""

    id: str
    name: str
    owner_id: str
    created: float
    mime_type: str
    width: int
    height: int
    data: bytes | None = None
    output: OutputSpec | None = None
    job_id: str | None = None
    size: int = 0


@dataclass(slots=True)
class Upload:
    """A multipart upload: parts arrive on the CDN origin, then `complete` imports them."""

    id: str
    owner_id: str
    created: float
    updated: float
    file_name: str
    content_type: str
    file_size: int
    parts_count: int
    parts: dict[int, bytes] = field(default_factory=dict)
    status: str = "pending"
    completed_at: float | None = None
    entity_id: str | None = None
    error_message: str | None = None


@dataclass(slots=True)
class Job:
    """A custom-model job; its status is derived from `plan` and the clock."""

    id: str
    seq: int
    model_id: str
    owner_id: str
    created: float
    plan: JobPlan
    input: dict[str, Any]
    output_ids: tuple[str, ...]
    cost: float
    canceled_at: float | None = None
    last: float = 0.0  # when the last status is reached if never canceled (see Store.cancel)

    def state(self, now: float) -> JobState:
        return state_at(self.created, self.plan, now, self.canceled_at)

    def status(self, now: float) -> tuple[str, float]:
        """`(state.status, state.updated)` without building the state: for hot paths."""
        return status_at(self.created, self.plan, now, self.canceled_at)


class Store:
    """All entities, keyed by id; jobs also in creation order for listing."""

    def __init__(self, seed: int, renderer: Renderer) -> None:
        self._ids = random.Random(f"{seed}:ids")
        self._dry_ids = random.Random(f"{seed}:dry-run-ids")
        self._renderer = renderer
        self.assets: dict[str, Asset] = {}
        self.uploads: dict[str, Upload] = {}
        self.jobs: dict[str, Job] = {}
        self.job_order: list[Job] = []  # creation order == seq order
        self._created_times: list[float] = []
        # Running max of `Job.last` in creation order (non-decreasing, so bisectable): every
        # job before the first entry above t has had no status change after t...
        self._last_max: list[float] = []
        # ...except jobs canceled after their own `last` (a stalled job): kept here by seq.
        self.late_cancels: dict[int, Job] = {}
        self._unfinished: set[str] = set()
        self._ends: list[tuple[float, int, str]] = []

    def new_id(self, prefix: str, length: int = 22) -> str:
        return prefix + "".join(self._ids.choices(_ALPHABET, k=length))

    def new_dry_run_id(self) -> str:
        """A job id for a dry-run answer, from its own stream so real ids do not shift."""
        return "job_" + "".join(self._dry_ids.choices(_ALPHABET, k=25))

    # assets
    def add_image(self, name: str, owner_id: str, data: bytes, now: float) -> Asset:
        """Store an uploaded image; ValueError if the bytes are not an image."""
        info = inspect_image(data)
        asset = Asset(
            id=self.new_id("asset_"),
            name=name,
            owner_id=owner_id,
            created=now,
            mime_type=info.mime_type,
            width=info.width,
            height=info.height,
            data=data,
            size=len(data),
        )
        self.assets[asset.id] = asset
        return asset

    def visible_asset(self, asset_id: str, now: float) -> Asset | None:
        """The asset, unless it is the output of a job that has not succeeded (yet)."""
        asset = self.assets.get(asset_id)
        if asset is None or asset.job_id is None:
            return asset
        job = self.jobs[asset.job_id]
        return asset if job.status(now)[0] == "success" else None

    def asset_bytes(self, asset: Asset) -> bytes:
        """The file's bytes; outputs are drawn (and cached) on first use."""
        if asset.data is not None:
            return asset.data
        assert asset.output is not None
        # The reference may itself be an output (edits can be chained).
        reference = self.asset_bytes(self.assets[asset.output.reference_id])
        png = self._renderer.render(asset.output, reference)
        if not asset.size:
            asset.size = len(png)
            asset.width, asset.height = png_size(png)
        return png

    # uploads
    def add_upload(
        self,
        owner_id: str,
        file_name: str,
        content_type: str,
        file_size: int,
        parts: int,
        now: float,
    ) -> Upload:
        upload = Upload(
            id=self.new_id("upload_"),
            owner_id=owner_id,
            created=now,
            updated=now,
            file_name=file_name,
            content_type=content_type,
            file_size=file_size,
            parts_count=parts,
        )
        self.uploads[upload.id] = upload
        return upload

    def settle_upload(self, upload: Upload, now: float, processing_s: float) -> None:
        """Import a completed upload once its processing time has passed (idempotent)."""
        if upload.status != "validating" or upload.completed_at is None:
            return
        if now < upload.completed_at + processing_s:
            return
        data = b"".join(upload.parts[n] for n in sorted(upload.parts))
        missing = [n for n in range(1, upload.parts_count + 1) if n not in upload.parts]
        upload.updated = upload.completed_at + processing_s
        if missing:
            upload.status, upload.error_message = "failed", f"parts never uploaded: {missing}"
        elif len(data) != upload.file_size:
            upload.status = "failed"
            upload.error_message = (
                f"received {len(data)} bytes but fileSize declared {upload.file_size}"
            )
        else:
            try:
                asset = self.add_image(upload.file_name, upload.owner_id, data, upload.updated)
            except ValueError as exc:
                upload.status, upload.error_message = "failed", f"not an image: {exc}"
            else:
                upload.status, upload.entity_id = "imported", asset.id
        upload.parts.clear()

    # jobs
    def add_job(
        self,
        model_id: str,
        owner_id: str,
        body: dict[str, Any],
        params: dict[str, Any],
        plan: JobPlan,
        cost: float,
        now: float,
    ) -> Job:
        job_id = self.new_id("job_", 25)
        created = max(now, self._created_times[-1]) if self._created_times else now
        outputs: list[str] = []
        seed = params.get("seed")
        if not isinstance(seed, int):
            seed = int.from_bytes(hashlib.sha256(job_id.encode()).digest()[:4], "big")
        for index in range(params["numOutputs"]):
            spec = OutputSpec(
                reference_id=params["referenceImages"][0],
                prompt=params["prompt"],
                seed=seed,
                index=index,
                aspect_ratio=params["aspectRatio"],
            )
            asset = Asset(
                id=self.new_id("asset_"),
                name=f"{job_id}-{index}.png",
                owner_id=owner_id,
                created=created + plan.duration_s,
                mime_type="image/png",
                width=0,
                height=0,
                output=spec,
                job_id=job_id,
            )
            self.assets[asset.id] = asset
            outputs.append(asset.id)
        job = Job(
            id=job_id,
            seq=len(self.job_order),
            model_id=model_id,
            owner_id=owner_id,
            created=created,
            plan=plan,
            input=body,
            output_ids=tuple(outputs),
            cost=cost,
            last=last_transition(created, plan),
        )
        self.jobs[job.id] = job
        self.job_order.append(job)
        self._created_times.append(created)
        self._last_max.append(max(job.last, self._last_max[-1]) if self._last_max else job.last)
        self._unfinished.add(job.id)
        heapq.heappush(self._ends, (end_time(created, plan), job.seq, job.id))
        return job

    def cancel(self, job: Job, now: float) -> None:
        job.canceled_at = now
        self._unfinished.discard(job.id)
        if now > job.last:
            self.late_cancels[job.seq] = job

    def first_updated_after(self, t: float) -> int:
        """Index in `job_order` before which no job had a status change after `t`, apart
        from `late_cancels`: their `canceled` status may be later than the bound says."""
        return bisect.bisect_right(self._last_max, t)

    def unfinished_count(self, now: float) -> int:
        """Jobs not yet success/failure/canceled: amortised O(1) via a heap of end times."""
        while self._ends and self._ends[0][0] <= now:
            _, _, job_id = heapq.heappop(self._ends)
            self._unfinished.discard(job_id)
        return len(self._unfinished)

    def first_created_after(self, t: float) -> int:
        """Index in `job_order` of the first job created strictly after `t`."""
        return bisect.bisect_right(self._created_times, t)
