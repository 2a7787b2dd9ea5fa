"""A lost ledger need not mean paying twice: adopt the account's jobs of this manifest.

A run that starts in an output directory whose ledger knows no item (a first run, or a
ledger lost with its directory: a cleanup job, a pod rescheduled onto an empty volume)
first reads the account's job list for the adoption window (default 24 h, `--adopt-window`)
and looks there for jobs whose `metadata.input` is what one of its items would send: the
same prompt and parameters, and the same reference images byte for byte. Asset ids differ
between uploads, so references are compared by content: a local file by its sha256, a
job's reference asset by the sha256 of its bytes (downloaded once per asset, and only for
jobs whose prompt and parameters already match). Such a job was bought for this item by
an earlier run: it is adopted instead of bought again (written to the ledger as the item's
job, watched if it still runs, downloaded once it succeeded). Failed and canceled jobs are
left alone; items with a reference given as a URL are never adopted.

Adoption is never silent: the run names what it adopted, and `--fresh` turns it off for a
user who wants new outputs of the same inputs (without a seed they differ). Matching is the
reconciler's (batch.run.reconcile): the oldest job first, each job for one item at most.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import aiohttp

from batch.api.client import JobView, ScenarioClient
from batch.api.urls import RedirectRefused, get_following_redirects
from batch.errors import ApiError, ChangedReferenceError
from batch.ledger.journal import LedgerState, LedgerWriter
from batch.local_faults import socket_fault
from batch.manifest.load import Item
from batch.run.poller import format_time
from batch.run.reconcile import canonical, restrict
from batch.run.references import FileStamp, read_reference

log = logging.getLogger(__name__)

DEFAULT_WINDOW_S: Final = 24 * 3600.0
NOT_ADOPTED: Final = frozenset({"failure", "canceled", "cancelled", "timeout"})
MAX_ASSET_BYTES: Final = 64 * 1024 * 1024
PARALLEL_FETCHES: Final = 8


@dataclass(frozen=True, slots=True)
class Adoption:
    item: Item
    job: JobView
    references: list[str]  # the job's reference asset ids, as it was sent


async def find_adoptable(
    client: ScenarioClient,
    session: aiohttp.ClientSession,
    items: Sequence[Item],
    *,
    window_s: float,
    stamps: Mapping[str, FileStamp | None],
) -> list[Adoption]:
    """The jobs of the last `window_s` seconds that an item of `items` would have bought."""
    eligible = [item for item in items if all(r.kind != "url" for r in item.references)]
    if not eligible:
        return []
    since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=window_s)
    by_prompt: dict[str, list[JobView]] = {}
    async for page in client.list_job_pages(created_after=format_time(since)):
        for raw in page:
            job = JobView.parse(raw)
            if job.input and job.status not in NOT_ADOPTED:
                by_prompt.setdefault(_prompt(job.input), []).append(job)
    if not by_prompt:
        return []
    # Only once there are jobs to match (~20 us an item: a fresh 100,000-item run would
    # wait 2 s for its first submit): the items whose jobs can be told apart.
    eligible = _unambiguous(eligible)
    for jobs in by_prompt.values():
        jobs.sort(key=lambda job: job.created_at)  # oldest first: the first send wins
    matcher = _Matcher(client, session, stamps)
    adopted: list[Adoption] = []
    taken: set[str] = set()
    for item in eligible:
        shape = _Shape.of(item)
        candidates = [
            job
            for job in by_prompt.get(item.prompt or "", ())
            if job.job_id not in taken and shape.same_parameters(job.input)
        ]
        if not candidates:
            continue
        wanted = await matcher.item_identity(item)
        if wanted is None:
            continue
        for job in candidates:
            references = shape.references_of(job.input)
            if await matcher.identity(references, item) == wanted:
                taken.add(job.job_id)
                adopted.append(Adoption(item, job, references))
                break
    return adopted


def _prompt(body: Mapping[str, Any]) -> str:
    prompt = body.get("prompt")
    return prompt if isinstance(prompt, str) else ""


def _unambiguous(items: list[Item]) -> list[Item]:
    """A job does not say which model ran it: items of different models with the same
    inputs (a model comparison) cannot tell their jobs apart, so none of them is adopted."""
    keys = [_inputs_key(item) for item in items]
    models: dict[str, set[str]] = {}
    for item, key in zip(items, keys, strict=True):
        models.setdefault(key, set()).add(item.model)
    kept = [item for item, key in zip(items, keys, strict=True) if len(models[key]) == 1]
    if len(kept) < len(items):
        log.info(
            "%d item(s) share their inputs with another model's: not adopted",
            len(items) - len(kept),
        )
    return kept


def _inputs_key(item: Item) -> str:
    return canonical({"refs": [r.value for r in item.references], "body": _Shape.of(item).params})


@dataclass(frozen=True, slots=True)
class _Shape:
    """An item's body split in two: its parameters, and where each of its references sits
    (input name -> the reference's index, or indexes for a list input)."""

    params: dict[str, Any]
    files: dict[str, int | list[int]]

    @classmethod
    def of(cls, item: Item) -> _Shape:
        marks = {f"\x00ref{n}": n for n in range(len(item.references))}
        body = item.generate_body(list(marks))
        files: dict[str, int | list[int]] = {}
        for key, value in list(body.items()):
            if isinstance(value, str) and value in marks:
                files[key] = marks[value]
            elif isinstance(value, list) and value and all(v in marks for v in value):
                files[key] = [marks[v] for v in value]
            else:
                continue
            del body[key]
        return cls(body, files)

    def same_parameters(self, received: Mapping[str, Any]) -> bool:
        """Everything but the references, as the reconciler compares bodies; and each file
        input of the same shape."""
        for key, where in self.files.items():
            value = received.get(key)
            if isinstance(where, int) != isinstance(value, str):
                return False
            if isinstance(where, list) and (
                not isinstance(value, list) or len(value) != len(where)
            ):
                return False
        return canonical(restrict(received, self.params)) == canonical(self.params)

    def references_of(self, received: Mapping[str, Any]) -> list[str]:
        """The job's reference asset ids in the item's reference order."""
        count = sum(1 if isinstance(w, int) else len(w) for w in self.files.values())
        ordered = [""] * count
        for key, where in self.files.items():
            value = received[key]
            if isinstance(where, int):
                ordered[where] = str(value)
            else:
                for index, asset_id in zip(where, value, strict=True):
                    ordered[index] = str(asset_id)
        return ordered


def announce(adopted: Sequence[Adoption], window_s: float) -> None:
    """Say what was adopted: a user who wanted fresh outputs learns it at once."""
    if not adopted:
        return
    names = ", ".join(f"{a.item.id} ({a.job.job_id})" for a in adopted[:10])
    more = f" and {len(adopted) - 10} more" if len(adopted) > 10 else ""
    log.warning(
        "adopted %d job(s) created in the last %s by an earlier run of these items (this "
        "directory has no ledger of them): %s%s. They are collected, not bought again; "
        "to buy fresh outputs instead, run into a new directory with --fresh",
        len(adopted),
        _hours(window_s),
        names,
        more,
    )


def adoption_records(adoption: Adoption) -> list[dict[str, Any]]:
    """The ledger records that make `adoption.job` the item's job, as a submit would."""
    item, job = adoption.item, adoption.job
    base = {"type": "item", "id": item.id, "fp": item.fingerprint}
    submitting = {
        **base,
        "state": "submitting",
        "prompt": item.prompt,
        "submittedAt": job.created_at,
        "references": adoption.references,
    }
    submitted = {**base, "state": "submitted", "jobId": job.job_id, "adopted": True}
    if job.cost is not None:
        submitted["cost"] = job.cost
    return [submitting, submitted]


class _Matcher:
    """References by content: each local file and each job asset is hashed once."""

    def __init__(
        self,
        client: ScenarioClient,
        session: aiohttp.ClientSession,
        stamps: Mapping[str, FileStamp | None],
    ) -> None:
        self._client = client
        self._session = session
        self._stamps = stamps
        self._files: dict[str, str | None] = {}
        self._assets: dict[str, str | None] = {}
        self._fetching = asyncio.Semaphore(PARALLEL_FETCHES)

    async def item_identity(self, item: Item) -> list[str] | None:
        identity = []
        for reference in item.references:
            if reference.kind == "asset":
                identity.append(f"asset:{reference.value}")
                continue
            path = reference.value
            if path not in self._files:
                try:
                    read = await asyncio.to_thread(read_reference, path, self._stamps.get(path))
                    self._files[path] = read[1]
                except ChangedReferenceError:
                    self._files[path] = None  # the item fails on its own, later
            known = self._files[path]
            if known is None:
                return None
            identity.append(f"sha256:{known}")
        return identity

    async def identity(self, asset_ids: list[str], item: Item) -> list[str | None]:
        """A job's references by content (an asset the item names itself: by id)."""
        ours = {r.value for r in item.references if r.kind == "asset"}
        missing = [a for a in asset_ids if a not in ours and a not in self._assets]
        if missing:
            await self._hash_assets(missing)
        return [f"asset:{a}" if a in ours else _tagged(self._assets.get(a)) for a in asset_ids]

    async def _hash_assets(self, asset_ids: list[str]) -> None:
        try:
            urls = await self._client.asset_urls(asset_ids)
        except ApiError as exc:
            log.warning(
                "cannot look up reference assets to check jobs for adoption (%s): "
                "items they belong to may be bought again",
                exc,
            )
            urls = {}
        async with asyncio.TaskGroup() as group:
            for asset_id in asset_ids:
                self._assets[asset_id] = None
                url = urls.get(asset_id)
                if url:
                    group.create_task(self._hash_asset(asset_id, url))

    async def _hash_asset(self, asset_id: str, url: str) -> None:
        digest = hashlib.sha256()
        size = 0
        async with self._fetching:
            try:
                async with get_following_redirects(self._session, url) as response:
                    if response.status != 200:
                        return
                    async for chunk in response.content.iter_chunked(256 * 1024):
                        size += len(chunk)
                        if size > MAX_ASSET_BYTES:
                            return
                        digest.update(chunk)
            except (aiohttp.ClientError, TimeoutError, RedirectRefused) as exc:
                fault = socket_fault(exc, "the CDN")
                if fault is not None:
                    raise fault from exc
                log.warning(
                    "cannot fetch reference asset %s to check a job for adoption (%s): "
                    "an item it belongs to may be bought again",
                    asset_id,
                    exc,
                )
                return
        self._assets[asset_id] = digest.hexdigest()


def _tagged(digest: str | None) -> str | None:
    return None if digest is None else f"sha256:{digest}"


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:g} h" if seconds >= 3600 else f"{seconds / 60:g} min"


async def adopt_lost_jobs(
    client: ScenarioClient,
    session: aiohttp.ClientSession,
    items: Sequence[Item],
    state: LedgerState,
    writer: LedgerWriter,
    window_s: float,
    stamps: Mapping[str, FileStamp | None],
) -> int:
    """For a ledger that knows no item: adopt what `find_adoptable` finds, write it to the
    ledger (as if submitted, with `adopted: true`), say so; the number adopted."""
    adopted = await find_adoptable(client, session, items, window_s=window_s, stamps=stamps)
    if not adopted:
        return 0
    records = [record for adoption in adopted for record in adoption_records(adoption)]
    await asyncio.to_thread(writer.append_many, records)
    for record in records:
        state.apply(record)
    announce(adopted, window_s)
    return len(adopted)
