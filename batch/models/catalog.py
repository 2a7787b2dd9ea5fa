"""Where a model's declared inputs come from: shipped, cached on this machine, or fetched.

- `model_flux-kontext-editing` ships with the tool (`batch.models.inputs.KONTEXT_DECLARATION`,
  the table of API-NOTES), so validating a kontext manifest needs no network at all.
- Any other model is fetched once with `GET /v1/models/{modelId}` (free; the usual
  credentials and `SCENARIO_BASE_URL`) and cached in the user cache directory
  (`$XDG_CACHE_HOME/scenario-batch/models/`, else `~/.cache/scenario-batch/models/`),
  one JSON file per model and API root. A cached declaration older than a day is fetched
  again; if that fails, the stale one is used with a warning.
- `--refresh-models` fetches every model a manifest names again, kontext included (a
  fresh kontext declaration from the API, once cached, is then preferred to the shipped
  one for a day).

An unknown model (HTTP 404) and a model that cannot be fetched are problems of the
manifest, located where the model is named; nothing but these GETs is ever sent.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Final

from batch.api.settings import DEFAULT_BASE_URL, ApiSettings
from batch.durable import write_atomically
from batch.errors import BatchError, PermanentApiError
from batch.models.inputs import BUILTIN, KONTEXT, ModelSpec, ModelSpecError, parse_model

log = logging.getLogger(__name__)

MAX_AGE_S: Final = 86_400.0
CACHE_VERSION: Final = 1
__all__ = ["KONTEXT", "ModelCatalog", "api_fetcher", "default_cache_dir"]

# (model ids, the manifest's projectId) -> each id's `model` object, None for a 404.
Fetcher = Callable[[list[str], str | None], dict[str, dict[str, Any] | None]]


def default_cache_dir(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    root = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "scenario-batch"


class ModelCatalog:
    """Model id -> `ModelSpec`, or a problem (a string) saying why there is none."""

    def __init__(
        self,
        *,
        cache_dir: Path | None = None,
        base_url: str | None = None,
        fetch: Fetcher | None = None,
        refresh: bool = False,
        max_age_s: float = MAX_AGE_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._dir = (cache_dir or default_cache_dir()) / "models"
        self._base_url = (
            base_url or os.environ.get("SCENARIO_BASE_URL") or DEFAULT_BASE_URL
        ).rstrip("/")
        self._fetch = fetch
        self._refresh = refresh
        self._max_age_s = max_age_s
        self._clock = clock
        self.fetched: list[str] = []  # model ids fetched from the API (for tests and logs)

    def resolve(
        self, model_ids: Iterable[str], project_id: str | None = None
    ) -> dict[str, ModelSpec | str]:
        """Every model's spec (or problem); fetches, in one go, what is neither shipped nor
        freshly cached (as `project_id`, for a project's private models)."""
        found: dict[str, ModelSpec | str] = {}
        stale: dict[str, ModelSpec] = {}
        wanted: list[str] = []
        for model_id in dict.fromkeys(model_ids):
            cached, fresh = self._cached(model_id)
            if cached is not None and fresh and not self._refresh:
                found[model_id] = cached
            elif model_id in BUILTIN and not self._refresh:
                found[model_id] = BUILTIN[model_id]
            else:
                if cached is not None:
                    stale[model_id] = cached
                wanted.append(model_id)
        if not wanted:
            return found
        if self._fetch is None:
            for model_id in wanted:
                found[model_id] = (
                    stale.get(model_id)
                    or BUILTIN.get(model_id)
                    or (
                        f"the inputs of model {model_id!r} are not cached on this machine: set "
                        "SCENARIO_SDK_API_KEY and SCENARIO_SDK_API_SECRET so that they can be "
                        "fetched once (a free GET /v1/models/{modelId})"
                    )
                )
            return found
        try:
            answers = self._fetch(wanted, project_id)
        except (BatchError, OSError) as exc:
            answers = {}
            failure = str(exc)
        else:
            failure = "the API did not answer"
        for model_id in wanted:
            raw = answers.get(model_id, ...)
            if raw is None:
                found[model_id] = f"unknown model {model_id!r} (the API answered 404)"
                continue
            if raw is ...:
                fallback = stale.get(model_id) or BUILTIN.get(model_id)
                if fallback is not None:
                    log.warning("using the last known inputs of %s: %s", model_id, failure)
                    found[model_id] = fallback
                else:
                    found[model_id] = f"cannot fetch the inputs of model {model_id!r}: {failure}"
                continue
            try:
                found[model_id] = parse_model(raw, model_id)
            except ModelSpecError as exc:
                found[model_id] = f"cannot use the inputs the API declares: {exc}"
                continue
            self.fetched.append(model_id)
            self._store(model_id, raw)
        return found

    # -- the cache --------------------------------------------------------------------

    def _path(self, model_id: str) -> Path:
        safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in model_id)[:100]
        origin = hashlib.sha256(self._base_url.encode()).hexdigest()[:10]
        return self._dir / f"{safe}-{origin}.json"

    def _cached(self, model_id: str) -> tuple[ModelSpec | None, bool]:
        """(the cached spec or None, whether it is fresh)."""
        try:
            entry = json.loads(self._path(model_id).read_text(encoding="utf-8"))
            if entry.get("version") != CACHE_VERSION or entry.get("modelId") != model_id:
                return None, False
            spec = parse_model(entry["model"], model_id)
            age = self._clock() - float(entry["fetchedAt"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None, False  # absent or unreadable: fetched again
        return spec, 0 <= age < self._max_age_s

    def _store(self, model_id: str, raw: Mapping[str, Any]) -> None:
        entry = {
            "version": CACHE_VERSION,
            "modelId": model_id,
            "baseUrl": self._base_url,
            "fetchedAt": self._clock(),
            "model": {"id": model_id, "inputs": raw.get("inputs") or [], "uiConfig": _ui(raw)},
        }
        try:
            self._dir.mkdir(parents=True, exist_ok=True)
            write_atomically(self._path(model_id), json.dumps(entry, indent=1).encode())
        except OSError as exc:  # a cache: the run goes on without it
            log.warning("could not cache the inputs of %s in %s: %s", model_id, self._dir, exc)


def _ui(raw: Mapping[str, Any]) -> dict[str, Any]:
    ui = raw.get("uiConfig")
    loras = ui.get("lorasComponent") if isinstance(ui, Mapping) else None
    return {"lorasComponent": loras} if isinstance(loras, Mapping) else {}


def api_fetcher(settings: ApiSettings) -> Fetcher:
    """Fetch declarations with the run's credentials, from synchronous code (a fresh event
    loop, in a thread of its own when the caller's thread already runs one)."""

    def fetch(model_ids: list[str], project_id: str | None) -> dict[str, dict[str, Any] | None]:
        as_project = dataclasses.replace(settings, project_id=project_id or settings.project_id)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(fetch_declarations(as_project, model_ids))
        result: list[dict[str, dict[str, Any] | None]] = []
        error: list[BaseException] = []

        def in_thread() -> None:
            try:
                result.append(asyncio.run(fetch_declarations(as_project, model_ids)))
            except BaseException as exc:  # handed to the caller below
                error.append(exc)

        thread = threading.Thread(target=in_thread, name="fetch-models")
        thread.start()
        thread.join()
        if error:
            raise error[0]
        return result[0]

    return fetch


async def fetch_declarations(
    settings: ApiSettings, model_ids: list[str]
) -> dict[str, dict[str, Any] | None]:
    """`GET /models/{id}` for each model; None for a 404."""
    # Here, not at the top: a `validate` served from the cache never loads aiohttp.
    from batch.api.client import ScenarioClient, api_session

    answers: dict[str, dict[str, Any] | None] = {}
    async with api_session(settings) as session:
        client = ScenarioClient(session, settings)
        for model_id in model_ids:
            try:
                answers[model_id] = await client.model(model_id)
            except PermanentApiError as exc:
                if exc.status != 404:
                    raise
                answers[model_id] = None
    return answers
