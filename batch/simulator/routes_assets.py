"""Assets and multipart uploads: POST /assets, GET /assets/{id}, get-bulk, /uploads."""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .responses import BODY, error, json_response
from .shapes import asset_json, iso, upload_json
from .state import TEAM_ID

if TYPE_CHECKING:
    from .simulator import Simulator

MAX_BULK = 200
MAX_PARTS = 10_000


def owner_of(request: web.Request) -> str:
    """The optional projectId query parameter, else the team."""
    return request.query.get("projectId") or TEAM_ID


def _decode_image_field(value: str) -> bytes:
    """Raw base64 or a `data:image/...;base64,` URL -> bytes; ValueError otherwise."""
    payload = value
    if value.startswith("data:"):
        header, sep, payload = value.partition(",")
        if not sep or not header.endswith(";base64"):
            raise ValueError("a data URL must be base64-encoded (data:image/png;base64,...)")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"not valid base64 ({exc})") from exc


class AssetRoutes:
    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    def _asset_payload(self, asset_id: str) -> dict[str, Any] | None:
        store = self.sim.store
        asset = store.visible_asset(asset_id, self.sim.clock())
        if asset is None:
            return None
        store.asset_bytes(asset)  # outputs are drawn on first use; sets size/width/height
        return asset_json(asset, self.sim.asset_url(asset))

    async def upload(self, request: web.Request) -> web.Response:
        body = request[BODY]
        if not isinstance(body, dict):
            return error(400, "Body must be a JSON object {image, name}")
        name, image = body.get("name"), body.get("image")
        if not isinstance(name, str) or not name:
            return error(400, "name: is required (the original file name)")
        if not isinstance(image, str) or not image:
            return error(400, "image: is required (base64 or data URL; canvas is not simulated)")
        try:
            data = _decode_image_field(image)
        except ValueError as exc:
            return error(400, f"image: {exc}")
        limit = self.sim.config.inline_upload_limit_bytes
        if len(data) > limit:
            return error(
                413,
                f"image: {len(data)} bytes is above the {limit}-byte limit for inline upload; "
                "use the multipart upload (POST /v1/uploads) for large files",
                details={"size": len(data), "limit": limit},
            )
        try:
            asset = self.sim.store.add_image(name, owner_of(request), data, self.sim.clock())
        except ValueError as exc:
            return error(400, f"image: {exc}")
        return json_response({"asset": asset_json(asset, self.sim.asset_url(asset))})

    async def retrieve(self, request: web.Request) -> web.Response:
        asset_id = request.match_info["assetId"]
        payload = self._asset_payload(asset_id)
        if payload is None:
            return error(404, f"Asset {asset_id} not found")
        return json_response({"asset": payload})

    async def get_bulk(self, request: web.Request) -> web.Response:
        body = request[BODY]
        ids = body.get("assetIds") if isinstance(body, dict) else None
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            return error(400, "assetIds: must be a list of asset ids")
        if len(ids) > MAX_BULK:
            return error(400, f"assetIds: at most {MAX_BULK} ids per call, got {len(ids)}")
        # Unknown ids are left out silently: the caller must notice what is missing.
        found = [p for p in (self._asset_payload(i) for i in dict.fromkeys(ids)) if p is not None]
        return json_response({"assets": found})

    async def create_upload(self, request: web.Request) -> web.Response:
        body = request[BODY]
        if not isinstance(body, dict):
            return error(400, "Body must be a JSON object")
        problems = []
        file_name, content_type = body.get("fileName"), body.get("contentType")
        size, parts, kind = body.get("fileSize"), body.get("parts"), body.get("kind")
        if "url" in body:
            problems.append("url: imports from a URL are not simulated; use multipart")
        if not isinstance(file_name, str) or not file_name:
            problems.append("fileName: is required")
        if not isinstance(content_type, str) or not content_type.startswith("image/"):
            problems.append("contentType: must be an image MIME type such as image/png")
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            problems.append(f"fileSize: must be a positive integer, got {size!r}")
        if not isinstance(parts, int) or isinstance(parts, bool) or not 1 <= parts <= MAX_PARTS:
            problems.append(f"parts: must be an integer 1-{MAX_PARTS}, got {parts!r}")
        if kind != "image":
            problems.append(f"kind: must be 'image', got {kind!r}")
        if problems:
            return error(400, "; ".join(problems))
        assert isinstance(file_name, str) and isinstance(content_type, str)
        assert isinstance(size, int) and isinstance(parts, int)
        now = self.sim.clock()
        upload = self.sim.store.add_upload(
            owner_of(request), file_name, content_type, size, parts, now
        )
        expires = now + self.sim.config.url_lifetime_s
        part_urls = [
            {
                "number": n,
                "url": self.sim.signer.url(
                    self.sim.cdn_url, f"/uploads/{upload.id}/parts/{n}", expires
                ),
                "expires": iso(expires),
            }
            for n in range(1, parts + 1)
        ]
        return json_response({"upload": upload_json(upload, part_urls)})

    async def retrieve_upload(self, request: web.Request) -> web.Response:
        upload_id = request.match_info["uploadId"]
        upload = self.sim.store.uploads.get(upload_id)
        if upload is None:
            return error(404, f"Upload {upload_id} not found")
        self.sim.store.settle_upload(upload, self.sim.clock(), self.sim.config.upload_processing_s)
        return json_response({"upload": upload_json(upload)})

    async def upload_action(self, request: web.Request) -> web.Response:
        upload_id = request.match_info["uploadId"]
        upload = self.sim.store.uploads.get(upload_id)
        if upload is None:
            return error(404, f"Upload {upload_id} not found")
        body = request[BODY]
        action = body.get("action") if isinstance(body, dict) else None
        if action != "complete":
            return error(400, f"action: must be 'complete', got {action!r}")
        if upload.status != "pending":
            return error(400, f"Upload {upload_id} is {upload.status}, not pending")
        now = self.sim.clock()
        upload.status, upload.completed_at, upload.updated = "validating", now, now
        return json_response({"upload": upload_json(upload)})
