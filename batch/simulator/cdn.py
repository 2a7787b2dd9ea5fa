"""The CDN origin: signed, expiring URLs; no credentials needed (but noted if sent).

GET /assets/{assetId}?expires=..&sig=..   the file (truncate_rate: a full
    Content-Length, part of the body, then the connection closes; corrupt_rate: the
    full length of bytes that are not an image)
PUT /uploads/{uploadId}/parts/{n}?expires=..&sig=..   one part of a multipart upload
Unknown asset -> 404; bad signature or expired -> 403. Errors are JSON.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from aiohttp import web

from .api import Handler
from .latency import round_trip
from .responses import Dropped, drop, error, make_record
from .signing import Verdict

if TYPE_CHECKING:
    from .simulator import Simulator

MAX_PART = 256 * 1024 * 1024


def build_cdn_app(sim: Simulator) -> web.Application:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        status: int | None
        try:
            response = await handler(request)
            status = response.status
        except Dropped:
            response, status = drop(request), None
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            response = error(exc.status, exc.reason)
            status = response.status
        if sim.logs_request(request.method, request.path):
            sim.record(make_record(request, "cdn", status))
        return response

    def check(request: web.Request) -> web.Response | None:
        verdict = sim.signer.verify(
            request.path, request.query.get("expires"), request.query.get("sig"), sim.clock()
        )
        if verdict is Verdict.EXPIRED:
            return error(403, "Request has expired: ask the API for a fresh URL")
        if verdict is Verdict.BAD:
            return error(403, "Signature does not match")
        return None

    async def get_asset(request: web.Request) -> web.StreamResponse:
        asset_id = request.match_info["assetId"]
        asset = sim.store.visible_asset(asset_id, sim.clock())
        if asset is None:
            return error(404, f"No such object: {asset_id}")
        refused = check(request)
        if refused is not None:
            return refused
        data = sim.store.asset_bytes(asset)
        if request.method == "HEAD":
            return web.Response(body=data, content_type=asset.mime_type)
        truncate, corrupt = sim.faults.truncate(), sim.faults.corrupt()  # both draw, always
        if corrupt and not truncate:
            return web.Response(body=not_an_image(len(data)), content_type=asset.mime_type)
        if not truncate:
            return web.Response(body=data, content_type=asset.mime_type)
        response = web.StreamResponse(headers={"Content-Type": asset.mime_type})
        response.content_length = len(data)
        await response.prepare(request)
        await response.write(data[: len(data) // 2])
        raise Dropped

    async def put_part(request: web.Request) -> web.Response:
        upload = sim.store.uploads.get(request.match_info["uploadId"])
        if upload is None:
            return error(404, "No such upload")
        refused = check(request)
        if refused is not None:
            return refused
        number = int(request.match_info["number"])
        if not 1 <= number <= upload.parts_count:
            return error(400, f"part {number}: this upload has {upload.parts_count} parts")
        if upload.status != "pending":
            return error(409, f"upload is {upload.status}: parts can no longer change")
        data = await request.read()
        upload.parts[number] = data
        return web.Response(headers={"ETag": f'"{hashlib.md5(data).hexdigest()}"'})

    app = web.Application(
        middlewares=[*round_trip(sim.config.cdn_rtt_s), middleware], client_max_size=MAX_PART
    )
    app.router.add_get("/assets/{assetId}", get_asset)
    app.router.add_put("/uploads/{uploadId}/parts/{number:\\d+}", put_part)
    return app


def not_an_image(size: int) -> bytes:
    """`size` bytes of an HTML error page: what a misbehaving edge serves with a 200."""
    page = b"<html><body><h1>502 Bad Gateway</h1></body></html>\n"
    return (page * (size // len(page) + 1))[:size]
