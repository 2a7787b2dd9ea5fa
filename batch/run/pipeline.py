"""The run, top-down: plan -> upload -> submit -> poll -> download, with a ledger entry at
every step so that a rerun of the same command resumes exactly where this one stopped.

Ownership: `run_manifest` opens one TaskGroup that owns the poller and every item task.
An item's slot is acquired before its task is spawned, so at most `concurrency` items are
alive at once, however long the manifest. Cancellation (Ctrl-C, SIGTERM) propagates
through the group; every ledger record handed over is still written.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import functools
import gc
import hashlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from batch.api.client import JobView, ScenarioClient, api_session
from batch.api.settings import ApiSettings
from batch.errors import (
    AmbiguousSubmitError,
    ApiError,
    BatchError,
    ChangedReferenceError,
    DownloadError,
    LedgerError,
    LocalFaultError,
    OutageError,
    ParallelJobsLimitError,
    PermanentApiError,
    TransientApiError,
    UsageError,
)
from batch.ledger.journal import (
    DirectoryLock,
    ItemRecord,
    LedgerState,
    LedgerWriter,
    load_state,
    utc_now,
)
from batch.local_faults import file_fault, stray_fault
from batch.manifest.load import Item, Manifest
from batch.report.metadata import METADATA_NAME, write_metadata
from batch.report.page import REPORT_NAME, write_report
from batch.run.adoption import DEFAULT_WINDOW_S, adopt_lost_jobs
from batch.run.estimate import CostBook, Estimate, estimate_items
from batch.run.outputs import fetch_output, remove_stale_temps
from batch.run.poller import Finished, Poller, PollPolicy, parse_time
from batch.run.preflight import (
    TYPICAL_OUTPUT_BYTES,
    check_output_dir,
    fit_file_limit,
    warn_if_short_of_space,
)
from batch.run.progress import Progress, SilentProgress
from batch.run.reconcile import Reconciler
from batch.run.references import FileStamp, References, stamp_files
from batch.run.sample import sample_items
from batch.run.slots import Slots

log = logging.getLogger(__name__)

DEFAULT_CONCURRENCY = 8
DEFAULT_JOB_TIMEOUT_S = 30 * 60.0
URL_WAIT_S = 120.0
PLANNED_BATCH = 5_000
YOUNG_GC_THRESHOLD = 10_000  # allocations between young collections (default 700)
PREFETCH_DELAY_SHARE = 0.3  # of a typical job: a prefetch waits this long before uploading
PREFETCH_DELAY_MAX_S = 5.0


@dataclass(frozen=True, slots=True)
class RunOptions:
    out_dir: Path
    concurrency: int = DEFAULT_CONCURRENCY
    job_retries: int = 1  # resubmissions of a job that ended in failure (each try costs)
    job_timeout_s: float = DEFAULT_JOB_TIMEOUT_S
    retry_failed: bool = False
    cancel_on_interrupt: bool = False
    max_cost: float | None = None
    poll: PollPolicy = field(default_factory=PollPolicy)
    download_attempts: int = 6
    download_parallel: int = 64
    shard: tuple[int, int] | None = None  # (index, count): run only this slice of the items
    sample: int | None = None  # run only the items of this many inputs (batch.run.sample)
    connections: int | None = None  # None: max(32, 2 * concurrency), fitted to the file limit
    # A run without a ledger adopts matching jobs this recent (batch.run.adoption); None: never.
    adopt_window_s: float | None = DEFAULT_WINDOW_S


@dataclass(slots=True)
class RunSummary:
    total: int = 0
    succeeded: int = 0
    failed: int = 0
    unfinished: int = 0
    skipped: int = 0  # already succeeded before this run
    submitted: int = 0  # generate calls sent by this run
    spent: float = 0.0  # compute units, whole ledger
    failures: list[tuple[str, str, str | None]] = field(default_factory=list)
    stopped: str | None = None  # why the run stopped early, if it did
    removed: list[str] = field(default_factory=list)  # ledger items no longer in the manifest
    requests: int = 0
    elapsed_s: float = 0.0

    @property
    def exit_code(self) -> int:
        if self.failed or self.unfinished or self.stopped:
            return 1
        return 0


class _BudgetReached(Exception):
    """Submitting this item would pass --max-cost."""


class _TryAgain(Exception):
    """The generate call surely created no job: it may be sent again."""


class Run:
    """One run of a manifest into one output directory."""

    def __init__(
        self,
        manifest: Manifest,
        client: ScenarioClient,
        session: aiohttp.ClientSession,
        options: RunOptions,
        state: LedgerState,
        writer: LedgerWriter,
        progress: Progress,
        stamps: Mapping[str, FileStamp | None] | None = None,
        adopt: Callable[[], Awaitable[int]] | None = None,
    ) -> None:
        self.manifest = manifest
        self._adopt_lost = adopt  # the adoption of lost jobs this run does first (execute)
        self.client = client
        self.session = session
        self.options = options
        self.state = state
        self.writer = writer
        self.progress = progress
        self.poller = Poller(client, options.poll)
        self.slots = Slots(options.concurrency)
        self.references = References(client, session, state.assets, writer.append, stamps=stamps)
        self.sent = 0  # generate calls this run sent (or may have): 0 means nothing spent
        self.reconciler = Reconciler(client, self._is_claimed)
        self.downloads = asyncio.Semaphore(options.download_parallel)
        # Each download makes its file durable in a thread of its own: in the default
        # executor (6 threads on 2 cores) a wave's settles queued behind each other's fsyncs.
        self.settlers = ThreadPoolExecutor(options.download_parallel, thread_name_prefix="settle")
        self._submitted_writes: dict[str, asyncio.Future[None]] = {}  # item id -> durable
        # A job slot covers the job only (bench/RESULTS.md): references are uploaded ahead
        # of it, and the slot is handed back once the job is final, before the download.
        # Items past their job: the completions of `url_wait_fraction` typical jobs (each
        # about `concurrency`) wait for their URL lookup, `download_parallel` download. The
        # bound is backpressure for a CDN that stalls (no more jobs than outputs can land),
        # never the pace: at `concurrency` alone it held slots back while a wave's outputs
        # waited for their lookup.
        waiting = math.ceil((options.poll.url_wait_fraction + 1.0) * options.concurrency)
        self._finishing = asyncio.Semaphore(waiting + options.download_parallel)
        self._slot_returned: set[str] = set()
        self._prefetching = asyncio.Semaphore(max(1, min(options.concurrency, 64)))
        # Until the first wave's submits are answered (or its items ended), prefetches for
        # the items after it wait: see `_prefetch`.
        self._first_wave = 0  # its submits (known once the run is planned)
        self._first_wave_settled: set[str] = set()  # items answered (or ended) so far
        self._first_wave_out = asyncio.Event()
        self._prefetches: set[asyncio.Task[None]] = set()
        # Prefetches not yet uploading, by item id: one whose item takes its slot first is
        # cancelled there, so live prefetches stay within a slot count ahead of the items.
        self._prefetches_waiting: dict[str, asyncio.Task[None]] = {}
        self.summary = RunSummary()
        self._claimed = _claimed_job_ids(state)
        self._spent = state.total_spent()
        self._reserved = 0.0  # priced but not yet confirmed by a submit answer
        self._budget = manifest.max_cost if options.max_cost is None else options.max_cost
        self.costs = CostBook(client, self.references)
        self._stop_submitting: str | None = None
        self.waiting: dict[str, Item] = {}  # job id -> its item, while the job runs
        self._active = 0  # item tasks alive
        self._idle = asyncio.Event()  # set while no item task is alive
        self._idle.set()

    # -- top level --------------------------------------------------------------------

    async def execute(self) -> RunSummary:
        started = time.monotonic()
        in_scope = _in_scope(self.manifest, self.options)
        items = _sampled(in_scope, self.options.sample)
        self.summary.total = len(items)
        # A sample leaves the rest of the manifest for later: only what left it is "removed".
        self.summary.removed = sorted(set(self.state.items) - {i.id for i in in_scope})
        try:
            async with asyncio.TaskGroup() as group:
                if self._adopt_lost is not None:
                    await self._adopt_while_uploading(group, items)
                todo = list(self._plan(items))
                self._expect_first_wave(todo)
                planned = _PlannedRecords([item for item, record in todo if record is None])
                await self._record_missing_inputs(items)
                self.progress.start(total=len(items), done=self.summary.skipped)
                group.create_task(self._record_planned(planned), name="planned")
                poll_task = group.create_task(self.poller.run(), name="poller")
                await self._start_items(group, todo, planned)
                self.poller.draining()
                await self._idle.wait()
                for prefetch in self._prefetches:  # every item is done: none is needed
                    prefetch.cancel()
                self.poller.stop()
                await poll_task
        except BaseExceptionGroup as group:
            raise _decisive(group) from None
        finally:
            self.summary.spent = self._spent
            self.summary.requests = self.client.requests_sent
            self.summary.elapsed_s = time.monotonic() - started
            self.progress.close()
            # A settle already in a thread finishes (its file lands whole, or its temp file
            # is removed) before the run returns.
            await asyncio.to_thread(self.settlers.shutdown)
        self.summary.stopped = self.summary.stopped or self._stop_submitting
        return self.summary

    async def _adopt_while_uploading(self, group: asyncio.TaskGroup, items: list[Item]) -> None:
        """Adopt lost jobs (batch.run.adoption) before anything is planned or bought. It
        reads the account's job list for its window, a round trip per page; the first
        wave's references upload meanwhile (an upload spends nothing, and one for an item
        that turns out adopted is merely unused), so the first submits follow adoption at
        once instead of a round trip or more later."""
        assert self._adopt_lost is not None
        for item in items[: self.slots.limit]:
            self._upload_in(group, self._upload_ahead(item), item)
        await self._adopt_lost()
        # Adopted jobs are the items' own now: never another item's to claim, and paid.
        self._claimed = _claimed_job_ids(self.state)
        self._spent = self.state.total_spent()

    def _expect_first_wave(self, todo: list[tuple[Item, ItemRecord | None]]) -> None:
        to_submit = sum(1 for _, record in todo if _needs_submit(record))
        self._first_wave = min(self.slots.limit, to_submit)
        if self._first_wave == 0:
            self._first_wave_out.set()

    def _first_wave_settle(self, item: Item) -> None:
        """The item's submit was answered, or the item ended: one more of the first wave
        out of the way (until the whole wave is)."""
        if self._first_wave_out.is_set():
            return
        self._first_wave_settled.add(item.id)
        if len(self._first_wave_settled) >= self._first_wave:
            self._first_wave_out.set()
            self._first_wave_settled.clear()

    def _upload_in(
        self, group: asyncio.TaskGroup, upload: Coroutine[Any, Any, None], item: Item
    ) -> asyncio.Task[None]:
        """An upload ahead of its item, in `group`: cancelled once every item is done."""
        task = group.create_task(upload, name=f"refs:{item.id}")
        self._prefetches.add(task)
        task.add_done_callback(self._prefetches.discard)
        return task

    def _cancel_prefetch(self, item: Item) -> None:
        """The item's prefetch, if it is still waiting to upload, is not needed."""
        waiting = self._prefetches_waiting.pop(item.id, None)
        if waiting is not None:
            waiting.cancel()

    async def _upload_ahead(self, item: Item) -> None:
        """Errors are left for the item's own task, which asks again and handles them."""
        with contextlib.suppress(Exception):
            await self.references.asset_ids(item)

    def _plan(self, items: list[Item]) -> Iterator[tuple[Item, ItemRecord | None]]:
        """Skip what is done; everything else goes in manifest order."""
        for item in items:
            record = self.state.items.get(item.id)
            if record is not None and record.fp != item.fingerprint:
                record = None  # the inputs changed: a new item under the same id
            if record is not None and record.state == "succeeded":
                self.summary.skipped += 1
                self.summary.succeeded += 1
                continue
            if record is not None and record.state == "failed" and not self.options.retry_failed:
                self._count_failure(item.id, record.error or "failed", record.hint)
                continue
            yield item, record

    async def _start_items(
        self,
        group: asyncio.TaskGroup,
        todo: list[tuple[Item, ItemRecord | None]],
        planned: _PlannedRecords,
    ) -> None:
        ahead = 0  # todo[:ahead] have had their references prefetched
        new = 0  # items of todo[:index] without a record: todo's order is `planned`'s
        for index, (item, record) in enumerate(todo):
            resumable = record is not None and record.state in ("submitted", "submitting")
            if record is None:
                new += 1
            if self._stop_submitting and not resumable:
                self.summary.unfinished += 1
                self._cancel_prefetch(item)
                continue
            if record is None:
                await planned.durable(new)  # no work for an item before its `planned`
            while ahead < min(len(todo), index + self.slots.limit + 1):
                nxt, nxt_record = todo[ahead]
                if _needs_submit(nxt_record):
                    task = self._upload_in(group, self._prefetch(nxt), nxt)
                    self._prefetches_waiting[nxt.id] = task
                ahead += 1
            await self.slots.acquire()  # before the task exists: bounded live tasks
            self._cancel_prefetch(item)  # the item uploads for itself now
            self._active += 1
            self._idle.clear()
            group.create_task(self._item_task(item, record), name=f"item:{item.id}")

    async def _item_task(self, item: Item, record: ItemRecord | None) -> None:
        try:
            await self._process(item, record)
        except DownloadError as exc:
            # The job succeeded and was paid for: never fail the item (a --retry-failed
            # would pay again). It stays `submitted`; a rerun downloads it again.
            log.warning("%s: outputs not downloaded this run: %s", item.id, exc)
            self.summary.unfinished += 1
            self.progress.item_finished(ok=False)
        except (PermanentApiError, ChangedReferenceError) as exc:
            await self._fail(item, str(exc), exc.hint)
        except _BudgetReached:
            self.summary.unfinished += 1
        except UsageError:
            raise  # credentials or network set-up: ends the whole run, nothing more is spent
        except (TransientApiError, LedgerError) as exc:
            # Resumable: the ledger says where this item is; a rerun picks it up.
            if isinstance(exc, OutageError):
                self._stop_submitting = str(exc)
            log.warning("%s: gave up for this run: %s", item.id, exc)
            self.summary.unfinished += 1
            self.progress.item_finished(ok=False)
        finally:
            self._first_wave_settle(item)
            written = self._submitted_writes.pop(item.id, None)
            if written is not None:  # the item ended first: the writer still writes it
                written.add_done_callback(_ignore_outcome)
            if item.id in self._slot_returned:
                self._slot_returned.discard(item.id)
                self._finishing.release()
            else:
                await self.slots.release()
            self._active -= 1
            self.progress.in_flight(self.poller.in_flight())
            if self._active == 0:
                self._idle.set()

    # -- one item ---------------------------------------------------------------------

    async def _process(self, item: Item, record: ItemRecord | None) -> None:
        if record is None:  # written as `planned` at the start of the run
            record = self.state.items.get(item.id) or ItemRecord(item.id, item.fingerprint)
        attempts = record.attempts
        if record.state == "failed":
            attempts = 0  # --retry-failed: a fresh allowance of tries
        job_id: str | None = record.job_id if record.state == "submitted" else None
        since = record.submitted_at or utc_now()
        # A job sent a while ago (by an earlier run, or found after its answer was lost)
        # has been running since: the poller counts it due sooner than one sent now
        # (local clock on both ends: no skew with the API's).
        sent_at = record.submitted_at if record.state in ("submitted", "submitting") else None
        if record.state == "submitting":
            job_id, since = await self._resume_submitting(item, record)
        while True:
            if job_id is None:
                job_id, since, sent_at = await self._submit(item)
                attempts += 1
            age_s = (
                (dt.datetime.now(dt.UTC) - parse_time(sent_at)).total_seconds() if sent_at else 0.0
            )
            final = await self._wait_for_job(item, job_id, since, age_s)
            written = self._submitted_writes.pop(item.id, None)
            if written is not None:
                await written  # long done by now; raises if the write failed
            job = final.job
            if job.status == "success":
                await self._return_slot(item)
                await self._download(item, job, await _urls_of(final))
                return
            reason = job.error or f"job ended with status {job.status}"
            if attempts > self.options.job_retries:
                await self._fail(item, reason, job.hint, job_id=job_id)
                return
            log.info("%s: job %s ended %s (%s); trying again", item.id, job_id, job.status, reason)
            await self._record(item, state="planned", error=reason, hint=job.hint)
            job_id = None

    async def _prefetch(self, item: Item) -> None:
        """Upload an upcoming item's references while the slots are busy with jobs.
        Errors are left for the item's own task, which asks again and handles them.

        A prefetch starts when an item takes a slot, that is in the burst of a wave of
        finished jobs handing their slots on; the item it uploads for needs it about one
        job later. So it first waits a share of a typical job, and the wave's downloads
        and submits have the event loop to themselves (C=256: added latency and wall
        both fell, bench/RESULTS.md round 6). Should its item start sooner, the item
        uploads itself and this finds the upload done."""
        typical = self.poller.typical_s
        if typical:
            await asyncio.sleep(min(PREFETCH_DELAY_SHARE * typical, PREFETCH_DELAY_MAX_S))
        else:
            # Before any job ended, the first wave's submits go first: a prefetch's TLS
            # handshake and upload would hold up theirs at both ends (over https at C=64,
            # the first wave's jobs were created 64 ms later on average), and its item
            # needs it only once a first job ends.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(PREFETCH_DELAY_MAX_S):
                    await self._first_wave_out.wait()
        async with self._prefetching:
            self._prefetches_waiting.pop(item.id, None)  # uploading: its item shares it
            await self._upload_ahead(item)

    async def _return_slot(self, item: Item) -> None:
        """The job is done: its slot may start another job while this item downloads."""
        await self._finishing.acquire()  # backpressure: see `_finishing`
        self._slot_returned.add(item.id)
        await self.slots.release()

    async def _resume_submitting(self, item: Item, record: ItemRecord) -> tuple[str | None, str]:
        """A previous run died between writing `submitting` and learning the job id."""
        # The body as it was sent: the asset ids recorded with `submitting`, if any.
        references = record.references or await self.references.asset_ids(item)
        body = item.generate_body(references)
        sent_at = record.submitted_at or utc_now()
        job = await self.reconciler.find(body, sent_at)
        if job is None:
            log.info("%s: no job from the interrupted submit; submitting now", item.id)
            return None, sent_at
        await self._adopt(item, job)
        return job.job_id, job.created_at

    async def _submit(self, item: Item) -> tuple[str, str, str | None]:
        """Send one generate call and tie its job to the item, never paying twice. Returns
        the job id, its creation time and, for a job found by reconciliation after an
        answer was lost, when the call went out (it may have run for a while since)."""
        references = await self.references.asset_ids(item)
        body = item.generate_body(references)
        while True:
            price = await self._reserve_budget(item)
            try:
                return await self._submit_once(item, body, references)
            except _TryAgain:
                continue
            finally:
                self._reserved -= price

    async def _submit_once(
        self, item: Item, body: dict[str, Any], references: list[str]
    ) -> tuple[str, str, str | None]:
        """One generate call. Raises _TryAgain when it surely created nothing."""
        sent_at = utc_now()
        # Urgent: the slot waits for it (the generate call goes out once it is durable).
        await self._record(
            item, urgent=True, state="submitting", submittedAt=sent_at, references=references
        )
        self.sent += 1
        try:
            try:
                submitted = await self.client.generate(item.model, body)
            finally:
                self._first_wave_settle(item)
        except ParallelJobsLimitError as exc:
            await self._record(item, state="planned", notCreated=True)
            self._on_ceiling(exc)
            await self.slots.wait_for_turn(max_wait_s=5.0)
            raise _TryAgain from exc
        except AmbiguousSubmitError as exc:
            log.info("%s: %s; looking for the job before sending again", item.id, exc)
            job = await self.reconciler.find(body, sent_at)
            if job is not None:
                await self._adopt(item, job)
                return job.job_id, job.created_at, sent_at
            await self._record(item, state="planned", notCreated=True)
            raise _TryAgain from exc
        except ApiError:
            # A definite refusal: no job exists; the caller decides what comes next.
            await self._record(item, state="planned", notCreated=True)
            raise
        self.summary.submitted += 1
        job = submitted.job
        self._claimed.add(job.job_id)
        self._spent += submitted.cost or 0.0
        # Not awaited here: the job runs meanwhile, and `submitting` (durable before the
        # call) already lets a resume find the job should this record be lost to a kill.
        # `_process` waits for it once the job is final.
        self._submitted_writes[item.id] = self._record_soon(
            item,
            state="submitted",
            jobId=job.job_id,
            cost=submitted.cost,
            createdAt=job.created_at,
        )
        self.progress.in_flight(self.poller.in_flight() + 1)
        return job.job_id, job.created_at, None

    async def _adopt(self, item: Item, job: JobView) -> None:
        """Tie a job found by reconciliation to its item; it was paid for when created."""
        self._claimed.add(job.job_id)
        self._spent += job.cost or 0.0
        await self._record(
            item, state="submitted", jobId=job.job_id, reconciled=True, cost=job.cost
        )

    async def _wait_for_job(
        self, item: Item, job_id: str, since: str, age_s: float = 0.0
    ) -> Finished:
        self.waiting[job_id] = item  # left in place on cancellation, for --cancel-on-interrupt
        try:
            async with asyncio.timeout(self._job_timeout()):
                result = await self.poller.wait_for(job_id, since, age_s=age_s)
        except TimeoutError:
            self.waiting.pop(job_id, None)
            self.poller.forget(job_id)
            log.warning("%s: job %s did not finish in time; canceling it", item.id, job_id)
            with contextlib.suppress(ApiError):
                await self.client.cancel_job(job_id)
            timed_out = JobView(
                job_id, "timeout", 0.0, since, utc_now(), error="timeout", hint=None
            )
            no_urls: asyncio.Future[dict[str, str]] = asyncio.get_running_loop().create_future()
            no_urls.set_result({})
            return Finished(timed_out, no_urls)
        self.waiting.pop(job_id, None)
        return result

    def _job_timeout(self) -> float:
        return self.manifest.job_timeout_s or self.options.job_timeout_s

    async def _download(self, item: Item, job: JobView, urls: Mapping[str, str]) -> None:
        files = []
        for index, asset_id in enumerate(job.asset_ids):
            stem = self._file_stem(item, index)

            async def refresh(asset_id: str = asset_id) -> str:
                return await self.client.asset_url(asset_id)

            url = urls.get(asset_id) or await refresh()
            async with self.downloads:
                fetched = await fetch_output(
                    self.session,
                    url,
                    self.options.out_dir,
                    stem,
                    refresh_url=refresh,
                    attempts=self.options.download_attempts,
                    # The ledger syncs the directory before it writes the record
                    # naming these files: one fsync for many downloads.
                    sync_directory=False,
                    settle_in=self.settlers,
                )
            files.append(
                {
                    "path": fetched.path.name,
                    "sha256": fetched.sha256,
                    "size": fetched.size,
                    "assetId": asset_id,
                }
            )
        await self._record(
            item,
            state="succeeded",
            jobId=job.job_id,
            assetIds=list(job.asset_ids),
            files=files,
            cuCost=job.cost,
        )
        self.summary.succeeded += 1
        self.progress.item_finished(ok=True)
        log.debug(
            "%s: succeeded, %d file(s)",
            item.id,
            len(files),
            extra={
                "event": {
                    "event": "item_succeeded",
                    "item": item.id,
                    "jobId": job.job_id,
                    "files": [f["path"] for f in files],
                    "cost": job.cost,
                }
            },
        )

    def _file_stem(self, item: Item, index: int) -> str:
        """`<id>_<n>`; if older inputs of this id already own that name, keep their file."""
        stem = f"{item.id}_{index}"
        for older in self.state.superseded.get(item.id, []):
            if any(Path(f.path).stem == stem for f in older.files):
                return f"{item.id}_{item.fingerprint[:8]}_{index}"
        return stem

    async def _fail(
        self, item: Item, error: str, hint: str | None, *, job_id: str | None = None
    ) -> None:
        await self._record(item, state="failed", error=error, hint=hint, jobId=job_id)
        self._count_failure(item.id, error, hint)
        log.warning(
            "%s: failed: %s%s",
            item.id,
            error,
            f" (hint: {hint})" if hint else "",
            extra={
                "event": {
                    "event": "item_failed",
                    "item": item.id,
                    "jobId": job_id,
                    "error": error,
                    "hint": hint,
                }
            },
        )
        self.progress.item_finished(ok=False)

    def _count_failure(self, item_id: str, error: str, hint: str | None) -> None:
        self.summary.failed += 1
        self.summary.failures.append((item_id, error, hint))

    # -- money and ceilings -----------------------------------------------------------

    def _on_ceiling(self, exc: ParallelJobsLimitError) -> None:
        if exc.limit is not None and exc.limit < self.slots.limit:
            log.warning(
                "the account runs at most %d jobs at once; lowering concurrency from %d",
                exc.limit,
                self.slots.limit,
            )
            self.slots.shrink_to(exc.limit)

    async def _reserve_budget(self, item: Item) -> float:
        """Price the next job (API dry run, once per parameter set) and hold that much of
        the budget, so that concurrent submits cannot pass it together."""
        if self._budget is None:
            return 0.0
        if self._stop_submitting:
            raise _BudgetReached
        price = await self.costs.price(item)
        if self._spent + self._reserved + price > self._budget:
            self._stop_submitting = (
                f"budget reached: {self._spent:g} of {self._budget:g} compute units spent, "
                f"the next job ({price:g}) would pass it"
            )
            raise _BudgetReached
        self._reserved += price
        return price

    # -- ledger -----------------------------------------------------------------------

    async def _record_planned(self, planned: _PlannedRecords) -> None:
        """Every new item is written `planned`, in manifest order, in large batches (one
        write and one fsync each) while the first items already run: `status` sees the
        whole run within its first seconds, and an item starts only once its own record
        is durable (`_PlannedRecords.durable`), so every record it writes later follows it.
        A 100,000-item run used to spend 1.4 s here before its first submit."""
        items = planned.items
        for start in range(0, len(items), PLANNED_BATCH):
            batch = items[start : start + PLANNED_BATCH]
            records = await asyncio.to_thread(self._write_planned, batch)
            for record in records:
                self.state.apply(record)
            planned.wrote(len(batch))

    def _write_planned(self, items: list[Item]) -> list[dict[str, Any]]:
        """Made and written off the event loop: the items already started keep running."""
        records = [
            {
                "type": "item",
                "id": item.id,
                "fp": item.fingerprint,
                "state": "planned",
                "prompt": item.prompt,
                "model": item.model,
                "inputs": item_inputs(item),
            }
            for item in items
        ]
        self.writer.append_many(records)
        return records

    async def _record_missing_inputs(self, items: list[Item]) -> None:
        """Items of a ledger written before `planned` carried the inputs get them now, in a
        record without a state (it changes nothing else): `export` needs them."""
        missing = []
        for item in items:
            record = self.state.items.get(item.id)
            if record is not None and record.fp == item.fingerprint and record.params is None:
                missing.append(item)
        for start in range(0, len(missing), PLANNED_BATCH):
            records = [
                {
                    "type": "item",
                    "id": item.id,
                    "fp": item.fingerprint,
                    "model": item.model,
                    "inputs": item_inputs(item),
                }
                for item in missing[start : start + PLANNED_BATCH]
            ]
            await self._append_batch(records)

    async def _append_batch(self, records: list[dict[str, Any]]) -> None:
        await asyncio.to_thread(self.writer.append_many, records)
        for record in records:
            self.state.apply(record)

    async def _record(self, item: Item, *, urgent: bool = False, **fields: Any) -> None:
        await self._record_soon(item, urgent=urgent, **fields)

    def _record_soon(
        self, item: Item, *, urgent: bool = False, **fields: Any
    ) -> asyncio.Future[None]:
        """Queue a record for the item; the future says when it is durable (see
        `LedgerWriter.append_soon`)."""
        record = {"type": "item", "id": item.id, "fp": item.fingerprint, **fields}
        record = {k: v for k, v in record.items() if v is not None}
        durable = self.writer.append_soon(record, urgent=urgent)
        self.state.apply(record)
        return durable

    def _is_claimed(self, job_id: str) -> bool:
        return job_id in self._claimed


class _PlannedRecords:
    """The new items of a run, whose `planned` records are written in order while the
    run starts; `durable(n)` returns once the first n are on disk (and in the state)."""

    def __init__(self, items: list[Item]) -> None:
        self.items = items
        self._written = 0
        self._progress = asyncio.Event()

    def wrote(self, count: int) -> None:
        self._written += count
        self._progress.set()
        self._progress = asyncio.Event()

    async def durable(self, count: int) -> None:
        # No timeout of its own: the writing task ends (or fails, which cancels the run's
        # task group, this wait included) after at most one fsync per batch.
        while self._written < count:
            await self._progress.wait()


async def _urls_of(final: Finished) -> dict[str, str]:
    """The poller's batch of fresh URLs; if it is slow to come, downloads ask for their own."""
    try:
        async with asyncio.timeout(URL_WAIT_S):
            return await asyncio.shield(final.urls)
    except TimeoutError:
        return {}


def _ignore_outcome(future: asyncio.Future[None]) -> None:
    """Mark a future's error as seen (it was reported elsewhere or no longer matters)."""
    if not future.cancelled():
        future.exception()


def _decisive(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one error of a failed task group that decides how the run ends."""
    leaves: list[BaseException] = []

    def flatten(error: BaseException) -> None:
        if isinstance(error, BaseExceptionGroup):
            for inner in error.exceptions:
                flatten(inner)
        else:
            leaves.append(error)

    flatten(group)
    if not any(isinstance(leaf, KeyboardInterrupt) for leaf in leaves):
        fault = stray_fault(group)  # the machine failed: that, not its echoes, ends the run
        if fault is not None:
            return fault
    for kind in (KeyboardInterrupt, UsageError, LedgerError, BatchError):
        for leaf in leaves:
            if isinstance(leaf, kind):
                return leaf
    return leaves[0] if len(leaves) == 1 else group


def item_inputs(item: Item) -> dict[str, Any]:
    """What the ledger keeps of an item's inputs besides its prompt and model (`planned`)."""
    return {
        "params": dict(item.params),
        "sources": [reference.value for reference in item.references],
    }


def _every_record(state: LedgerState) -> Iterator[ItemRecord]:
    yield from state.items.values()
    for older in state.superseded.values():
        yield from older


def _needs_submit(record: ItemRecord | None) -> bool:
    """Whether an item to run has no job yet (a resumed one has, or may have)."""
    return record is None or record.state in ("planned", "failed")


def _claimed_job_ids(state: LedgerState) -> set[str]:
    """Every job the ledger gives to an item (the reconciler never hands them out)."""
    return {job_id for record in _every_record(state) for job_id in record.job_ids}


def _in_scope(manifest: Manifest, options: RunOptions) -> list[Item]:
    """The manifest's items this run may touch (its shard), before any sample."""
    return [item for item in manifest.items if _in_shard(item.id, options.shard)]


def _sampled(items: list[Item], sample: int | None) -> list[Item]:
    return items if sample is None else sample_items(items, sample)


def _in_shard(item_id: str, shard: tuple[int, int] | None) -> bool:
    if shard is None:
        return True
    index, count = shard
    return int(hashlib.sha256(item_id.encode()).hexdigest()[:8], 16) % count == index


async def run_manifest(
    manifest: Manifest,
    settings: ApiSettings,
    options: RunOptions,
    *,
    progress: Progress | None = None,
) -> RunSummary:
    """Run (or resume) a manifest into `options.out_dir`.

    A fault of the machine (batch.local_faults) raises LocalFaultError, with
    `before_spending` set when this run sent no generate call."""
    out_dir = options.out_dir
    check_output_dir(out_dir)
    fitted = fit_file_limit(
        options.concurrency, connection_limit(options), options.download_parallel
    )
    options = dataclasses.replace(
        options, connections=fitted.connections, download_parallel=fitted.downloads
    )
    lock = DirectoryLock(out_dir)
    run: Run | None = None
    try:
        lock.acquire()
        remove_stale_temps(out_dir)
        state = load_state(out_dir)
        items = _sampled(_in_scope(manifest, options), options.sample)
        stamps = stamp_files(items)  # a reference is uploaded only as it is now
        warn_if_short_of_space(out_dir, *_outputs_to_come(items, state))
        writer = LedgerWriter(out_dir)
        writer.open()
        error: BaseException | None = None
        try:
            writer.append_now(
                {
                    "type": "run",
                    "event": "start",
                    "manifest": str(manifest.path),
                    "items": len(manifest.items),
                }
            )
            with _long_lived_heap():
                async with _session(settings, options) as session:
                    client = ScenarioClient(session, settings)
                    adopt = None
                    if options.adopt_window_s and not (state.items or state.superseded):
                        adopt = functools.partial(
                            adopt_lost_jobs,
                            client,
                            session,
                            items,
                            state,
                            writer,
                            options.adopt_window_s,
                            stamps,
                        )
                    run = Run(
                        manifest,
                        client,
                        session,
                        options,
                        state,
                        writer,
                        progress or SilentProgress(),
                        stamps,
                        adopt,
                    )
                    try:
                        summary = await run.execute()
                    except BaseException:
                        if options.cancel_on_interrupt:
                            await _cancel_in_flight(run)
                        raise
            writer.append_now(
                {
                    "type": "run",
                    "event": "end",
                    "succeeded": summary.succeeded,
                    "failed": summary.failed,
                    "unfinished": summary.unfinished,
                }
            )
            return summary
        except BaseException as exc:
            error = exc
            raise
        finally:
            _finish(writer, out_dir, manifest, error)
    except OSError as exc:  # file work not wrapped where it happened: still the machine's
        raise file_fault(exc, "cannot use the output directory", out_dir) from exc
    except LocalFaultError as fault:
        fault.before_spending = fault.before_spending or run is None or run.sent == 0
        raise
    finally:
        lock.release()


def _finish(
    writer: LedgerWriter, out_dir: Path, manifest: Manifest, error: BaseException | None
) -> None:
    """Close the ledger and write its views (report, metadata). After a machine fault
    neither may hide it: a second fault of the same disk is not reported, and no view is
    attempted."""
    try:
        writer.close()
    except LocalFaultError:
        if error is None:
            raise
    if error is None:
        _write_views(out_dir, manifest)
    elif stray_fault(error) is None:
        with contextlib.suppress(LocalFaultError):
            _write_views(out_dir, manifest)


def _outputs_to_come(items: list[Item], state: LedgerState) -> tuple[int, int]:
    """How many outputs are still to download, and the typical size of one so far."""
    to_come = 0
    sizes: list[int] = []
    for item in items:
        record = state.items.get(item.id)
        if record is not None and record.state == "succeeded" and record.fp == item.fingerprint:
            sizes.extend(f.size for f in record.files[:4])
        else:
            to_come += item.num_outputs
    typical = sum(sizes) // len(sizes) if sizes else TYPICAL_OUTPUT_BYTES
    return to_come, typical


def connection_limit(options: RunOptions) -> int:
    """Connections open at once (API, CDN, reference hosts together)."""
    return options.connections or max(32, options.concurrency * 2)


class _LongLivedHeap:
    """While runs go on, what was alive when the first began (mostly the manifest and the
    ledger state, which live as long as the run) is frozen out of the cyclic GC's scans,
    and young collections are rarer: every response makes thousands of short-lived
    objects. Collections took ~10% of a C=256 run's CPU; with this, ~1%.

    Callers may run several manifests in one process, even at once: the first run to
    start sets this up and the last to end restores the thresholds it found, and unfreezes
    only what it froze (a heap its host program had frozen is left as it was)."""

    def __init__(self) -> None:
        self._runs = 0
        self._thresholds = gc.get_threshold()
        self._froze = False

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        if self._runs == 0:
            self._thresholds = gc.get_threshold()
            self._froze = gc.get_freeze_count() == 0
            if self._froze:
                gc.freeze()
            gc.set_threshold(YOUNG_GC_THRESHOLD, *self._thresholds[1:])
        self._runs += 1
        try:
            yield
        finally:
            self._runs -= 1
            if self._runs == 0:
                gc.set_threshold(*self._thresholds)
                if self._froze:
                    gc.unfreeze()


_long_lived_heap = _LongLivedHeap()


def _write_views(out_dir: Path, manifest: Manifest) -> None:
    """report.html and metadata.jsonl are views of the ledger: failing to write them never
    fails the run (the next run writes them again), unless the machine failed them (a full
    disk...): that stops the run like any machine fault (batch.local_faults)."""
    try:
        state = load_state(out_dir)
    except LocalFaultError:
        raise
    except Exception as exc:
        log.warning("could not read the ledger for report.html and %s: %s", METADATA_NAME, exc)
        return
    _write_view(METADATA_NAME, out_dir, lambda: write_metadata(out_dir, state))
    _write_view(REPORT_NAME, out_dir, lambda: write_report(out_dir, manifest, state=state))


def _write_view(name: str, out_dir: Path, write: Callable[[], object]) -> None:
    try:
        write()
    except LocalFaultError:
        raise
    except OSError as exc:
        raise file_fault(exc, f"cannot write {name} in", out_dir) from exc
    except Exception as exc:
        log.warning("could not write %s: %s", name, exc)


async def estimate_run(manifest: Manifest, settings: ApiSettings, options: RunOptions) -> Estimate:
    """`run --dry-run`: price what a run would still submit, spending nothing and writing
    nothing. Items the output directory's ledger already has as succeeded are left out."""
    state = load_state(options.out_dir) if options.out_dir.exists() else LedgerState()
    todo = [
        item
        for item in _sampled(_in_scope(manifest, options), options.sample)
        if not (
            (record := state.items.get(item.id)) is not None
            and record.fp == item.fingerprint
            and record.state == "succeeded"
        )
    ]
    async with _session(settings, options) as session:
        client = ScenarioClient(session, settings)
        references = References(client, session, state.assets, _discard)
        return await estimate_items(CostBook(client, references), todo)


async def _discard(_: Mapping[str, Any]) -> None:
    """A dry run records nothing."""


async def _cancel_in_flight(run: Run) -> None:
    """--cancel-on-interrupt: stop paying for jobs nobody will wait for. Each canceled job's
    item goes back to `planned`, so the next run submits it afresh."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(15):
            for job_id, item in list(run.waiting.items()):
                await run.client.cancel_job(job_id)
                await run._record(item, state="planned", error="canceled on interrupt")
                log.info("%s: canceled job %s", item.id, job_id)


@contextlib.asynccontextmanager
async def _session(settings: ApiSettings, options: RunOptions) -> Any:
    async with api_session(settings, connections=connection_limit(options)) as session:
        yield session
