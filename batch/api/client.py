"""The Scenario API over one aiohttp session: typed answers, one status -> exception map.

Credentials are attached here and only here, and only to requests for the API origin;
redirects are never followed with them. Idempotent calls are retried on transient
errors with capped full-jitter backoff (honouring Retry-After). A generate call is
never retried once it may have reached the server: its outcome is reported as
`AmbiguousSubmitError` and the pipeline looks for the job before sending it again.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar
from urllib.parse import quote

import aiohttp
import orjson
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
)

from batch.api.health import Health
from batch.api.network import setup_failure
from batch.api.settings import ApiSettings, RetryPolicy
from batch.api.throttle import Throttle
from batch.api.urls import signed_url
from batch.errors import (
    AmbiguousSubmitError,
    ApiError,
    BatchError,
    CredentialsError,
    NetworkSetupError,
    OutageError,
    ParallelJobsLimitError,
    PermanentApiError,
    RateLimitedError,
    TransientApiError,
)
from batch.local_faults import socket_fault

log = logging.getLogger(__name__)

T = TypeVar("T")

FINAL_STATUSES: Final = frozenset({"success", "failure", "canceled"})
BULK_LIMIT: Final = 200  # POST /assets/get-bulk takes at most 200 ids
INLINE_UPLOAD_LIMIT: Final = 100_000  # agent notes: inline base64 is for small files only
PART_SIZE: Final = 8 * 1024 * 1024
# Any 5xx is transient. On generate it may hide a created job (a gateway gave up after
# the backend accepted the call): the outcome is unknown, so it is ambiguous, not retried.
TRANSIENT_STATUSES: Final = frozenset({408, 409, 425, 429})


@dataclass(frozen=True, slots=True)
class JobView:
    """The parts of a job the pipeline uses."""

    job_id: str
    status: str
    progress: float
    created_at: str
    updated_at: str
    asset_ids: tuple[str, ...] = ()
    error: str | None = None
    hint: str | None = None
    cost: float | None = None
    input: Mapping[str, Any] = field(default_factory=dict)

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> JobView:
        metadata = raw.get("metadata") or {}
        billing = raw.get("billing") or {}
        cost = billing.get("cuCost")
        return cls(
            job_id=str(raw["jobId"]),
            status=str(raw.get("status", "")),
            progress=float(raw.get("progress") or 0.0),
            created_at=str(raw.get("createdAt", "")),
            updated_at=str(raw.get("updatedAt", "")),
            asset_ids=tuple(str(a) for a in metadata.get("assetIds") or ()),
            error=metadata.get("error"),
            hint=metadata.get("hint"),
            cost=float(cost) if isinstance(cost, int | float) else None,
            input=metadata.get("input") or {},
        )


@dataclass(frozen=True, slots=True)
class Submitted:
    job: JobView
    cost: float | None


def api_session(settings: ApiSettings, *, connections: int = 100) -> aiohttp.ClientSession:
    """The one session a run (or a model look-up) talks through: the settings' timeouts,
    trusted CAs and proxies (`batch.api.network`), no connection limit per host."""
    network = settings.network
    connector = aiohttp.TCPConnector(limit=connections, limit_per_host=0, ssl=network.ssl_context())
    timeout = aiohttp.ClientTimeout(
        total=None, connect=settings.connect_timeout_s, sock_read=settings.read_timeout_s
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        raise_for_status=False,
        middlewares=network.middlewares(),
    )


class ScenarioClient:
    """One client per run, over the run's one `aiohttp.ClientSession`."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        settings: ApiSettings,
        *,
        throttle: Throttle | None = None,
    ) -> None:
        self._session = session
        self._settings = settings
        self._root = settings.base_url.rstrip("/")
        self._auth = settings.authorization()
        self._throttle = throttle or Throttle(max_rps=settings.max_rps)
        self.health = Health(trip_after=settings.outage_trip_after, grace_s=settings.outage_grace_s)
        self.requests_sent = 0
        self.answered = False  # whether the API ever answered (a setup failure after is not)

    # -- assets -----------------------------------------------------------------------

    async def upload_image(self, data: bytes, name: str, content_type: str) -> str:
        """Upload reference bytes; small files inline, large ones through /uploads."""
        if len(data) <= INLINE_UPLOAD_LIMIT:
            encoded = base64.b64encode(data).decode()
            body = await self._retrying(
                "POST",
                "/assets",
                json={"image": f"data:{content_type};base64,{encoded}", "name": name},
            )
            return str(body["asset"]["id"])
        return await self._multipart_upload(data, name, content_type)

    async def _multipart_upload(self, data: bytes, name: str, content_type: str) -> str:
        parts = max(1, -(-len(data) // PART_SIZE))
        created = await self._retrying(
            "POST",
            "/uploads",
            json={
                "fileName": name,
                "contentType": content_type,
                "fileSize": len(data),
                "kind": "image",
                "parts": parts,
            },
        )
        upload = created["upload"]
        for part in sorted(upload.get("parts") or [], key=lambda p: p["number"]):
            start = (int(part["number"]) - 1) * PART_SIZE
            await self._put_part(str(part["url"]), data[start : start + PART_SIZE])
        upload_id = str(upload["id"])
        await self._retrying("POST", f"/uploads/{upload_id}/action", json={"action": "complete"})
        wait = 0.05
        for _ in range(200):
            current = (await self._retrying("GET", f"/uploads/{upload_id}"))["upload"]
            status = current.get("status")
            if status in ("imported", "complete") and current.get("entityId"):
                return str(current["entityId"])
            if status == "failed":
                raise PermanentApiError(
                    f"upload of {name} failed: {current.get('errorMessage') or 'no reason given'}"
                )
            await asyncio.sleep(wait)
            wait = min(wait * 1.5, 2.0)
        raise TransientApiError(f"upload of {name} was not imported in time")

    async def _put_part(self, url: str, chunk: bytes) -> None:
        """Presigned part URLs carry their own authority: no credentials go with them."""

        async def put() -> None:
            try:
                async with self._session.put(
                    signed_url(url), data=chunk, allow_redirects=False
                ) as response:
                    if response.status >= 400:
                        _raise_for(response.status, await _json_or_text(response), response)
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise TransientApiError(f"part upload failed: {_describe(exc)}") from exc

        await self._retry(put)

    async def asset_url(self, asset_id: str) -> str:
        body = await self._retrying("GET", f"/assets/{asset_id}")
        return str(body["asset"]["url"])

    async def asset_urls(self, asset_ids: Sequence[str]) -> dict[str, str]:
        """Fresh signed URLs for many assets, 200 per request."""
        urls: dict[str, str] = {}
        for start in range(0, len(asset_ids), BULK_LIMIT):
            chunk = list(asset_ids[start : start + BULK_LIMIT])
            body = await self._retrying("POST", "/assets/get-bulk", json={"assetIds": chunk})
            for asset in body.get("assets") or []:
                if asset.get("url"):
                    urls[str(asset["id"])] = str(asset["url"])
        return urls

    # -- models -----------------------------------------------------------------------

    async def model(self, model_id: str) -> dict[str, Any]:
        """A model's declaration (`GET /models/{id}`, free); 404 for an unknown model."""
        body = await self._retrying("GET", f"/models/{quote(model_id, safe='')}")
        model = body.get("model") if isinstance(body, dict) else None
        if not isinstance(model, dict):
            raise PermanentApiError(f"GET /models/{model_id} answered without a model")
        return model

    # -- generate and jobs ------------------------------------------------------------

    async def generate(self, model: str, body: Mapping[str, Any]) -> Submitted:
        """Submit one billable job. Retried only while the call surely did not arrive."""

        async def send() -> Submitted:
            _, answer = await self._send(
                "POST", f"/generate/custom/{model}", json=dict(body), billable=True
            )
            return Submitted(JobView.parse(answer["job"]), _float(answer.get("creativeUnitsCost")))

        return await self._retry(send)

    async def estimate(self, model: str, body: Mapping[str, Any]) -> float:
        """The compute units a generate call would cost (`?dryRun=true`); creates nothing."""
        answer = await self._retrying(
            "POST", f"/generate/custom/{model}", json=dict(body), params={"dryRun": "true"}
        )
        return _float(answer.get("creativeUnitsCost")) or 0.0

    async def get_job(self, job_id: str) -> JobView:
        return JobView.parse((await self._retrying("GET", f"/jobs/{job_id}"))["job"])

    async def cancel_job(self, job_id: str) -> None:
        await self._retrying("POST", f"/jobs/{job_id}/action", json={"action": "cancel"})

    async def list_job_pages(
        self,
        *,
        created_after: str | None = None,
        updated_after: str | None = None,
        job_type: str | None = None,
        status: str | None = None,
        page_size: int = 100,
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Every job matching, newest first, following tokens past short and empty pages:
        one raw page per request (callers parse only the jobs they care about)."""
        token: str | None = None
        while True:
            jobs, token = await self.list_job_page(
                created_after=created_after,
                updated_after=updated_after,
                job_type=job_type,
                status=status,
                page_size=page_size,
                token=token,
            )
            yield jobs
            if not token:
                return

    async def list_job_page(
        self,
        *,
        created_after: str | None = None,
        updated_after: str | None = None,
        job_type: str | None = None,
        status: str | None = None,
        page_size: int = 100,
        token: str | None = None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of the job list (raw jobs, newest first) and the token of the next,
        if any: for callers that decide page by page whether the next is worth a request."""
        params: dict[str, str] = {"pageSize": str(page_size)}
        if created_after:
            params["createdAfter"] = created_after
        if updated_after:
            params["updatedAfter"] = updated_after
        if job_type:
            params["type"] = job_type
        if status:
            params["status"] = status
        if token:
            params["paginationToken"] = token
        body = await self._retrying("GET", "/jobs", params=params)
        jobs = body.get("jobs")
        page = [raw for raw in jobs if isinstance(raw, dict)] if isinstance(jobs, list) else []
        following = body.get("nextPaginationToken")
        return page, str(following) if following else None

    # -- plumbing ---------------------------------------------------------------------

    async def _retrying(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
    ) -> Any:
        async def once() -> Any:
            return (await self._send(method, path, json=json, params=params))[1]

        return await self._retry(once)

    async def _retry(self, call: Callable[[], Awaitable[T]]) -> T:
        # Most calls succeed at once: only a failed first try pays for a retry loop.
        try:
            return await call()
        except TransientApiError as error:
            if not _is_retryable(error) or self._settings.retry.attempts < 2:
                raise
            first_wait = _RetryAfterOrFullJitter(self._settings.retry).wait_for(error, 1)
            log.debug("retrying after %s (attempt 1, wait %.2fs)", error, first_wait)
        await asyncio.sleep(first_wait)
        policy = self._settings.retry
        retrying = AsyncRetrying(
            retry=retry_if_exception(_is_retryable),
            wait=_RetryAfterOrFullJitter(policy, attempts_before=1),
            stop=stop_after_attempt(policy.attempts - 1) | stop_after_delay(policy.total_s),
            before_sleep=_log_retry,
            reraise=True,
        )
        return await retrying(call)

    async def _send(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        billable: bool = False,
        probing: bool = False,
    ) -> tuple[int, Any]:
        if not probing:
            await self.health.ready(self._probe)
        try:
            answer = await self._send_once(
                method, path, json=json, params=params, billable=billable
            )
        except (CredentialsError, PermanentApiError, RateLimitedError) as exc:
            self.health.succeeded()  # the API is up: it answered, if only to refuse
            self._scrub(exc)
            raise
        except TransientApiError as exc:
            self.health.failed()
            self._scrub(exc)
            raise
        self.health.succeeded()
        return answer

    def _scrub(self, error: BatchError) -> None:
        """Error text comes from the server and ends up in the ledger and logs: a server
        that echoed our credentials back must not get them written anywhere."""
        text = str(error)
        for secret in self._settings.secrets():
            if len(secret) >= 4:  # shorter ones (test values) would shred any message
                text = text.replace(secret, "[redacted]")
        if text != str(error):
            error.args = (text,)

    async def _probe(self) -> None:
        await self._send("GET", "/jobs", params={"pageSize": "1"}, probing=True)

    async def _send_once(
        self,
        method: str,
        path: str,
        *,
        json: Any,
        params: Mapping[str, str] | None,
        billable: bool,
    ) -> tuple[int, Any]:
        query = dict(params or {})
        if self._settings.project_id:
            query["projectId"] = self._settings.project_id
        headers = {"Authorization": self._auth, "Accept": "application/json"}
        data = None
        if json is not None:
            # orjson: a tenth of the stdlib encoder's cost on every upload and submit.
            data = orjson.dumps(json)
            headers["Content-Type"] = "application/json"
        await self._throttle.acquire()
        self.requests_sent += 1
        try:
            async with self._session.request(
                method,
                self._root + path,
                data=data,
                params=query or None,
                headers=headers,
                allow_redirects=False,
            ) as response:
                body = await _json_or_text(response)
                status = response.status
                self.answered = True
                # The parallel-jobs ceiling is about jobs, not the request rate: not a cut.
                if status == 429 and not _is_jobs_ceiling(body):
                    self._throttle.on_rate_limited()
                else:
                    self._throttle.on_success()
                if status < 300:
                    return status, body
                if billable and status >= 500:
                    raise AmbiguousSubmitError(
                        f"generate answered HTTP {status}; the job may exist", status=status
                    )
                _raise_for(status, body, response)
        except ApiError:
            raise
        except (aiohttp.ClientError, TimeoutError) as exc:
            # Too few file descriptors is this machine's fault: no retry clears it (for a
            # generate call, only while the connection never opened: nothing was sent).
            fault = socket_fault(exc, "the API")
            if fault is not None and (
                not billable or isinstance(exc, aiohttp.ClientConnectorError)
            ):
                raise fault from exc
            raise self._lost(exc, method, path, billable=billable) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _lost(
        self, exc: aiohttp.ClientError | TimeoutError, method: str, path: str, *, billable: bool
    ) -> BatchError:
        """The error a call that got no answer raises."""
        if isinstance(exc, aiohttp.ClientError):
            # A certificate or proxy failure: nothing reached the server. Before the API
            # ever answered, it is the configuration (exit 2, nothing spent), not an outage.
            problem = setup_failure(exc, self._root, self._settings.network)
            if problem is not None:
                return TransientApiError(problem) if self.answered else NetworkSetupError(problem)
            if isinstance(exc, aiohttp.ClientConnectorError):
                # The connection never opened: nothing reached the server, a retry is safe.
                return TransientApiError(f"cannot reach the API: {_describe(exc)}")
        if billable:
            return AmbiguousSubmitError(
                f"generate call lost after sending ({_describe(exc)}); the job may exist"
            )
        return TransientApiError(f"API call {method} {path} failed: {_describe(exc)}")


class _RetryAfterOrFullJitter:
    """Full-jitter exponential backoff; a server's Retry-After (capped) wins when given."""

    def __init__(self, policy: RetryPolicy, *, attempts_before: int = 0) -> None:
        self._policy = policy
        self._attempts_before = attempts_before  # tries made before tenacity took over

    def __call__(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        return self.wait_for(error, state.attempt_number + self._attempts_before)

    def wait_for(self, error: BaseException | None, attempt: int) -> float:
        ceiling = min(self._policy.max_wait_s, self._policy.initial_wait_s * 2 ** (attempt - 1))
        jitter = random.uniform(0, ceiling)
        if isinstance(error, TransientApiError) and error.retry_after is not None:
            return min(self._policy.max_wait_s, error.retry_after) + jitter * 0.1
        return jitter


def _is_retryable(error: BaseException) -> bool:
    # Ambiguous submits and the parallel-jobs ceiling are not for a timer to clear.
    return isinstance(error, TransientApiError) and not isinstance(
        error, AmbiguousSubmitError | ParallelJobsLimitError | OutageError
    )


def _log_retry(state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome else None
    wait = state.next_action.sleep if state.next_action else 0.0
    log.debug("retrying after %s (attempt %d, wait %.2fs)", error, state.attempt_number, wait)


def _raise_for(status: int, body: Any, response: aiohttp.ClientResponse) -> None:
    """The one place an HTTP error status becomes an exception."""
    message = _message(body) or response.reason or "no message"
    text = f"HTTP {status}: {message}"
    hint = body.get("hint") if isinstance(body, dict) else None
    if status == 401:
        raise CredentialsError(
            "the Scenario API refused the credentials (HTTP 401): check "
            "SCENARIO_SDK_API_KEY and SCENARIO_SDK_API_SECRET"
        )
    if status == 429:
        if _is_jobs_ceiling(body):
            limit = body["details"].get("actionLimit")
            raise ParallelJobsLimitError(text, limit=int(limit) if isinstance(limit, int) else None)
        raise RateLimitedError(text, status=429, retry_after=_retry_after(response))
    if status in TRANSIENT_STATUSES or status >= 500:
        raise TransientApiError(text, status=status, hint=hint, retry_after=_retry_after(response))
    if 300 <= status < 400:
        raise PermanentApiError(
            f"HTTP {status}: the API redirected to {response.headers.get('Location')!r}; "
            "credentials are not forwarded on redirects",
            status=status,
        )
    raise PermanentApiError(text, status=status, hint=hint)


def _is_jobs_ceiling(body: Any) -> bool:
    details = body.get("details") if isinstance(body, dict) else None
    return isinstance(details, dict) and details.get("actionName") == "parallel-custom-jobs"


def _retry_after(response: aiohttp.ClientResponse) -> float | None:
    milliseconds = response.headers.get("retry-after-ms")
    seconds = response.headers.get("Retry-After")
    try:
        if milliseconds is not None:
            return max(0.0, float(milliseconds) / 1000)
        if seconds is not None:
            return max(0.0, float(seconds))
    except ValueError:
        return None  # an HTTP date: rare from this API; fall back to our own backoff
    return None


async def _json_or_text(response: aiohttp.ClientResponse) -> Any:
    raw = await response.read()
    if not raw:
        return {}
    try:
        return orjson.loads(raw)  # job-list pages are the bulk of what a run decodes
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(raw)  # what orjson refuses but json accepts (NaN, a BOM)
    except ValueError:
        return raw[:500].decode(errors="replace")


def _message(body: Any) -> str | None:
    if isinstance(body, dict):
        for key in ("message", "error", "reason"):
            if isinstance(body.get(key), str):
                return str(body[key])
        return None
    return str(body)[:300] if body else None


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
