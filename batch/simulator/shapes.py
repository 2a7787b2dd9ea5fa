"""JSON shapes of assets, jobs and uploads, as the official client's models expect them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from .lifecycle import JobState
from .state import AUTHOR_ID, Asset, Job, Upload

# Formatted dates by timestamp: a job's few instants are formatted on every read of it.
_ISO: dict[float, str] = {}
_ISO_MAX = 1 << 18  # about 50k jobs' dates; past it the cache starts over


def iso(t: float) -> str:
    """Epoch seconds -> `2023-02-03T11:19:41.579Z` (milliseconds, Z)."""
    text = _ISO.get(t)
    if text is None:
        dt = datetime.fromtimestamp(t, UTC)
        text = dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"
        if len(_ISO) >= _ISO_MAX:
            _ISO.clear()
        _ISO[t] = text
    return text


def asset_json(asset: Asset, url: str) -> dict[str, Any]:
    output = asset.output
    metadata: dict[str, Any] = {"kind": "image", "type": "uploaded", "name": asset.name}
    if output is not None:
        metadata = {
            "kind": "image",
            "type": "image-prompt-editing",
            "name": asset.name,
            "parentJobId": asset.job_id,
            "prompt": output.prompt,
            "seed": str(output.seed),
            "aspectRatio": output.aspect_ratio,
            "outputIndex": output.index,
            "width": asset.width,
            "height": asset.height,
        }
    shape: dict[str, Any] = {
        "id": asset.id,
        "authorId": AUTHOR_ID,
        "ownerId": asset.owner_id,
        "collectionIds": [],
        "createdAt": iso(asset.created),
        "updatedAt": iso(asset.created),
        "editCapabilities": ["PROMPT_EDITING", "UPSCALE", "REMOVE_BACKGROUND"],
        "kind": "image",
        "metadata": metadata,
        "mimeType": asset.mime_type,
        "privacy": "private",
        "properties": {"size": asset.size, "width": asset.width, "height": asset.height},
        "source": "uploaded" if output is None else "image-prompt-editing",
        "status": "success",
        "tags": [],
        "url": url,
    }
    if output is not None:
        shape["outputIndex"] = output.index
    return shape


def job_json(job: Job, state: JobState) -> dict[str, Any]:
    metadata: dict[str, Any] = {"input": job.input}
    if state.status == "success":
        metadata["assetIds"] = list(job.output_ids)
    elif state.status == "failure":
        metadata["error"] = "The model failed to generate an image (simulated GPU error)."
        metadata["hint"] = (
            "This is usually transient: submit the same inputs again. "
            "Compute units of a failed job are refunded."
        )
    elif state.status == "canceled":
        metadata["error"] = "Job canceled by the user."
    return {
        "jobId": job.id,
        "jobType": "custom",
        "status": state.status,
        "progress": state.progress,
        "statusHistory": [{"status": s, "date": iso(t)} for s, t in state.history],
        "createdAt": iso(job.created),
        "updatedAt": iso(state.updated),
        "authorId": AUTHOR_ID,
        "ownerId": job.owner_id,
        "metadata": metadata,
        "billing": {"cuCost": job.cost, "cuDiscount": 0},
    }


def upload_json(upload: Upload, parts: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    shape: dict[str, Any] = {
        "id": upload.id,
        "authorId": AUTHOR_ID,
        "ownerId": upload.owner_id,
        "createdAt": iso(upload.created),
        "updatedAt": iso(upload.updated),
        "fileName": upload.file_name,
        "originalFileName": upload.file_name,
        "contentType": upload.content_type,
        "fileSize": upload.file_size,
        "partsCount": upload.parts_count,
        "kind": "image",
        "source": "multipart",
        "status": upload.status,
    }
    if parts is not None:
        shape["parts"] = parts
    if upload.entity_id is not None:
        shape["entityId"] = upload.entity_id
    if upload.error_message is not None:
        shape["errorMessage"] = upload.error_message
    return shape
