"""The Simulator: state, faults and the request log behind the two aiohttp apps."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Hashable, Mapping
from typing import Any

from aiohttp import web

from . import log as request_log
from .api import build_api_app
from .cdn import build_cdn_app
from .config import SimulatorConfig
from .faults import Faults, TokenBucket
from .images import Renderer
from .lifecycle import JobState
from .log import RequestRecord
from .signing import Signer
from .state import Asset, Job, Store
from .tls import TlsIdentity


class Simulator:
    """All in memory: the Scenario API's assets, uploads and jobs, plus a request log.

    `clock` gives wall time in epoch seconds (job lifecycles, dates, URL expiry);
    the log uses `time.monotonic`. Build the apps with `api_app()`/`cdn_app()`,
    or use `running_simulator`, which also sets `base_url` and `cdn_url`.
    """

    def __init__(
        self, config: SimulatorConfig | None = None, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.config = config if config is not None else SimulatorConfig()
        self.clock = clock
        self.faults = Faults(self.config)
        self.signer = Signer()
        self.store = Store(self.config.seed, Renderer(max_px=self.config.output_max_px))
        self.request_log: list[RequestRecord] = []
        self.base_url = ""
        self.cdn_url = ""
        self.tls: TlsIdentity | None = None  # set when served over https
        rps = self.config.rate_limit_rps
        self.first_request_at: float | None = None  # monotonic; outage windows count from it
        self.bucket: TokenBucket | None = None
        if rps is not None:
            burst = self.config.rate_limit_burst or max(1.0, rps)
            self.bucket = TokenBucket(rps, burst, time.monotonic())

    def api_app(self) -> web.Application:
        """The API origin: every route under /v1, Basic auth, fault knobs."""
        return build_api_app(self)

    def cdn_app(self) -> web.Application:
        """The CDN origin: signed GETs of asset files and PUTs of upload parts, no auth."""
        return build_cdn_app(self)

    # read access for tests
    @property
    def jobs(self) -> Mapping[str, Job]:
        """Every job created, by id (dry runs create none)."""
        return self.store.jobs

    @property
    def assets(self) -> Mapping[str, Asset]:
        """Every asset, outputs of unfinished jobs included."""
        return self.store.assets

    def job_state(self, job_id: str) -> JobState:
        """A job's status, progress and history now."""
        return self.store.jobs[job_id].state(self.clock())

    def generate_calls(self) -> list[RequestRecord]:
        """Records of POST /v1/generate/custom/... (dry runs and refused calls included)."""
        return request_log.generate_calls(self.request_log)

    def submissions_by(
        self, key: Callable[[dict[str, Any]], Hashable] = request_log.prompt_and_references
    ) -> Counter[Hashable]:
        """Jobs created per key of the generate body (default: prompt + referenceImages)."""
        return request_log.submissions_by(self.request_log, key)

    def records(self, origin: str | None = None, path_prefix: str = "") -> list[RequestRecord]:
        """Log records filtered by origin ("api"/"cdn") and path prefix."""
        return [
            r
            for r in self.request_log
            if (origin is None or r.origin == origin) and r.path.startswith(path_prefix)
        ]

    def spent_cu(self) -> float:
        """Compute units kept by the service: jobs that did not fail or get canceled."""
        now = self.clock()
        return sum(
            j.cost
            for j in self.store.job_order
            if j.state(now).status not in {"failure", "canceled"}
        )

    def asset_url(self, asset: Asset) -> str:
        """A fresh signed CDN URL for the asset's file."""
        expires = self.clock() + self.config.url_lifetime_s
        return self.signer.url(self.cdn_url, f"/assets/{asset.id}", expires)

    def in_outage(self, now: float) -> bool:
        """Whether `now` (monotonic) falls in an outage window; the first call starts the clock."""
        if self.first_request_at is None:
            self.first_request_at = now
        elapsed = now - self.first_request_at
        return any(start <= elapsed < end for start, end in self.config.outage_windows)

    def logs_request(self, method: str, path: str) -> bool:
        """Whether a request to `path` goes in the log (skip building records that would not)."""
        return self.config.record_requests or (
            method == "POST" and path.startswith(request_log.GENERATE_PREFIX)
        )

    def record(self, record: RequestRecord) -> None:
        if self.config.record_requests or record.is_generate:
            self.request_log.append(record)
