"""The API origin: /v1 routes behind one middleware for auth, faults and the log.

Per request, in order: every transport knob draws once (so streams stay aligned),
then: inside an outage window -> 503 for everything; reset -> connection closed, no
answer; missing/wrong Basic auth -> 401; rate limit exhausted -> 429; http429 -> 429;
http500 -> 500; else the handler.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web

from .latency import round_trip
from .responses import (
    BODY,
    JOB_ID,
    Dropped,
    basic_auth_ok,
    drop,
    error,
    json_body,
    log_body,
    make_record,
    retry_headers,
)
from .routes_assets import AssetRoutes
from .routes_jobs import JobRoutes

if TYPE_CHECKING:
    from .simulator import Simulator

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MAX_BODY = 256 * 1024 * 1024  # our own 413 decides inline limits, not aiohttp's default 1 MB


def build_api_app(sim: Simulator) -> web.Application:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        body = await json_body(request)
        request[BODY] = body
        faults = sim.faults.for_request()
        status: int | None
        response: web.StreamResponse
        try:
            if sim.in_outage(time.monotonic()):
                response = error(503, "Service unavailable: the API is down, try again later")
            else:
                if faults.reset:
                    raise Dropped
                response = await _guarded(sim, request, handler, faults.http429, faults.http500)
            status = response.status
        except Dropped:
            response, status = drop(request), None
        if sim.logs_request(request.method, request.path):
            sim.record(make_record(request, "api", status, log_body(body), request.get(JOB_ID)))
        return response

    app = web.Application(
        middlewares=[*round_trip(sim.config.api_rtt_s), middleware], client_max_size=MAX_BODY
    )
    assets = AssetRoutes(sim)
    jobs = JobRoutes(sim)
    app.router.add_post("/v1/assets", assets.upload)
    app.router.add_post("/v1/assets/get-bulk", assets.get_bulk)
    app.router.add_get("/v1/assets/{assetId}", assets.retrieve)
    app.router.add_post("/v1/uploads", assets.create_upload)
    app.router.add_get("/v1/uploads/{uploadId}", assets.retrieve_upload)
    app.router.add_post("/v1/uploads/{uploadId}/action", assets.upload_action)
    app.router.add_post("/v1/generate/custom/{modelId}", jobs.generate)
    app.router.add_get("/v1/models/{modelId}", jobs.model)
    app.router.add_get("/v1/jobs", jobs.list)
    app.router.add_get("/v1/jobs/{jobId}", jobs.retrieve)
    app.router.add_post("/v1/jobs/{jobId}/action", jobs.action)
    return app


async def _guarded(
    sim: Simulator, request: web.Request, handler: Handler, http429: bool, http500: bool
) -> web.StreamResponse:
    config = sim.config
    if not basic_auth_ok(request.headers.get("Authorization"), config.api_key, config.api_secret):
        return error(
            401,
            "Unauthorized: send HTTP Basic credentials (API key and secret)",
            headers={"WWW-Authenticate": 'Basic realm="Scenario API"'},
        )
    if sim.bucket is not None:
        wait = sim.bucket.take(time.monotonic())
        if wait > 0:
            return error(
                429,
                f"Too many requests: at most {config.rate_limit_rps:g} requests per second",
                headers=retry_headers(max(wait, 0.001)),
            )
    if http429:
        return error(
            429, "Too many requests, retry later", headers=retry_headers(config.retry_after_s)
        )
    if http500:
        return error(500, "Internal server error")
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error(exc.status, exc.reason)
