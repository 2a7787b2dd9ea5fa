"""End-to-end runs against the in-process simulator."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from batch.ledger.journal import LedgerWriter, load_state
from batch.run import pipeline
from batch.run.poller import Finished, Poller
from batch.simulator import Simulator
from tests.conftest import SimulatorFactory, over_http_and_https
from tests.pipeline_helpers import (
    FAST_POLL,
    assert_outputs_intact,
    jobs_created_per_prompt,
    ledger_lines,
    run,
    write_images,
    write_manifest,
)


@over_http_and_https
async def test_two_hundred_items_land_once_each(
    simulator_factory: SimulatorFactory, tmp_path: Path
) -> None:
    """200 items with mixed numOutputs: every output on disk and intact, one job per item
    (over https too, through a private CA)."""
    sim = await simulator_factory(job_latency_s=0.1)
    images = write_images(tmp_path / "images", 20)
    jobs = [
        {
            "id": f"item-{n:03d}",
            "prompt": f"edit number {n}",
            "referenceImages": [str(images[n % 20].relative_to(tmp_path))],
            "numOutputs": 1 + n % 3,
        }
        for n in range(200)
    ]
    manifest = write_manifest(tmp_path, jobs)
    out = tmp_path / "out"

    summary = await run(sim, manifest, out, concurrency=32)

    assert (summary.succeeded, summary.failed, summary.unfinished) == (200, 0, 0)
    assert summary.exit_code == 0
    per_prompt = jobs_created_per_prompt(sim)
    assert len(per_prompt) == 200 and set(per_prompt.values()) == {1}
    assert assert_outputs_intact(out) == sum(1 + n % 3 for n in range(200))
    uploads = [r for r in sim.request_log if r.method == "POST" and r.path == "/v1/assets"]
    assert len(uploads) == 20, "each distinct reference image is uploaded once"
    assert (out / "item-000_0.png").exists()


def _one_image_each(folder: Path, count: int) -> Path:
    """A manifest of `count` prompts, each with its own reference image."""
    images = write_images(folder / "images", count)
    jobs = [
        {"prompt": f"p{n}", "referenceImages": [str(images[n].relative_to(folder))]}
        for n in range(count)
    ]
    return write_manifest(folder, jobs)


async def test_rerun_of_finished_directory_spends_nothing(
    simulator: Simulator, tmp_path: Path
) -> None:
    """A second run over a finished output directory sends no upload and no generate call."""
    manifest = _one_image_each(tmp_path, 3)
    out = tmp_path / "out"
    first = await run(simulator, manifest, out)
    assert first.succeeded == 3
    before = len(simulator.request_log)

    second = await run(simulator, manifest, out)

    assert (second.succeeded, second.skipped, second.submitted) == (3, 3, 0)
    assert len(simulator.request_log) == before
    assert second.exit_code == 0


async def test_a_slot_does_not_wait_for_the_ledgers_gathering(
    simulator: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ledger holds most records a moment so that others share their write, but not
    `submitting`, which the slot waits for: each generate call goes out as soon as its
    record is durable, not a gathering window later."""

    class Gathering(LedgerWriter):
        def __init__(self, directory: Path) -> None:
            super().__init__(directory, gather_s=1.0)
            self.submitting: list[float] = []  # when each `submitting` was handed over

        def append_soon(
            self, record: Mapping[str, Any], *, urgent: bool = False
        ) -> asyncio.Future[None]:
            if record.get("state") == "submitting":
                self.submitting.append(time.monotonic())
            return super().append_soon(record, urgent=urgent)

    writers: list[Gathering] = []

    def gathering(directory: Path) -> Gathering:
        writers.append(Gathering(directory))
        return writers[-1]

    monkeypatch.setattr(pipeline, "LedgerWriter", gathering)
    summary = await run(simulator, _one_image_each(tmp_path, 3), tmp_path / "out", concurrency=1)
    assert summary.succeeded == 3
    generates = [r.time for r in simulator.request_log if r.is_generate]
    handed = writers[0].submitting
    assert len(generates) == len(handed) == 3
    assert all(0 <= sent - at < 0.5 for at, sent in zip(handed, generates, strict=True)), (
        handed,
        generates,
    )


async def test_failed_job_is_retried_then_recorded_with_reason(
    simulator_factory: SimulatorFactory, tmp_path: Path
) -> None:
    """A job that always fails is tried 1 + job_retries times; the ledger keeps error and hint."""
    sim = await simulator_factory(job_failure_rate=1.0)
    images = write_images(tmp_path / "images", 1)
    manifest = write_manifest(
        tmp_path, [{"id": "doomed", "prompt": "x", "referenceImages": ["images/img0000.png"]}]
    )
    del images
    out = tmp_path / "out"

    summary = await run(sim, manifest, out, job_retries=2)

    assert summary.failed == 1 and summary.exit_code == 1
    assert jobs_created_per_prompt(sim)["x"] == 3
    record = load_state(out).items["doomed"]
    assert record.state == "failed" and record.error and record.hint
    assert record.attempts == 3


async def test_parallel_ceiling_lowers_concurrency(
    simulator_factory: SimulatorFactory, tmp_path: Path
) -> None:
    """With an account ceiling of 3 and concurrency 12, all items finish and none is lost."""
    sim = await simulator_factory(parallel_jobs_limit=3, job_latency_s=0.1)
    write_images(tmp_path / "images", 1)
    jobs = [{"prompt": f"p{n}", "referenceImages": ["images/img0000.png"]} for n in range(15)]
    manifest = write_manifest(tmp_path, jobs)

    summary = await run(sim, manifest, tmp_path / "out", concurrency=12)

    assert summary.succeeded == 15
    assert set(jobs_created_per_prompt(sim).values()) == {1}
    refused = [r for r in sim.generate_calls() if r.status == 429]
    # After the first refusals the cap drops to 3: refusals stay a small share.
    assert len(refused) <= 12, len(refused)


async def test_large_reference_takes_the_multipart_upload(
    simulator: Simulator, tmp_path: Path
) -> None:
    """A reference over the inline limit goes through /uploads (parts PUT to the CDN), once."""
    from tests.conftest import make_png

    (tmp_path / "big.png").write_bytes(make_png(400, 300, noisy=True))
    assert (tmp_path / "big.png").stat().st_size > 100_000
    jobs = [{"prompt": f"big {n}", "referenceImages": ["big.png"]} for n in range(3)]
    summary = await run(simulator, write_manifest(tmp_path, jobs), tmp_path / "out")

    assert summary.succeeded == 3
    inline = [r for r in simulator.request_log if r.method == "POST" and r.path == "/v1/assets"]
    created = [r for r in simulator.request_log if r.method == "POST" and r.path == "/v1/uploads"]
    parts = [r for r in simulator.request_log if r.origin == "cdn" and r.method == "PUT"]
    assert (len(inline), len(created)) == (0, 1) and parts
    assert all(r.authorization is None for r in parts)


async def test_small_references_are_read_on_the_loop_big_ones_in_a_thread(
    simulator: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reference up to INLINE_READ_BYTES is read on the loop's thread (no thread trip);
    a bigger one in a worker thread; both upload once with their content's hash."""
    import threading

    from batch.run import references
    from tests.conftest import make_png

    (tmp_path / "small.png").write_bytes(make_png(16, 16))
    (tmp_path / "big.png").write_bytes(make_png(400, 300, noisy=True))
    assert (tmp_path / "small.png").stat().st_size <= references.INLINE_READ_BYTES
    assert (tmp_path / "big.png").stat().st_size > references.INLINE_READ_BYTES
    read_on: dict[str, bool] = {}
    real = references.read_reference

    def watched(path: str, stamp: references.FileStamp | None) -> tuple[bytes, str]:
        read_on[Path(path).name] = threading.current_thread() is threading.main_thread()
        return real(path, stamp)

    monkeypatch.setattr(references, "read_reference", watched)
    jobs = [{"prompt": name, "referenceImages": [name]} for name in ("small.png", "big.png")]
    summary = await run(simulator, write_manifest(tmp_path, jobs), tmp_path / "out")

    assert summary.succeeded == 2
    assert read_on == {"small.png": True, "big.png": False}
    keys = sorted(key.split(":")[0] for key in load_state(tmp_path / "out").assets)
    assert keys == ["file", "file", "sha256", "sha256"]  # each file's quick key and hash


async def test_project_id_goes_on_every_api_call(simulator: Simulator, tmp_path: Path) -> None:
    """A manifest projectId is sent as the projectId query parameter of every API call."""
    write_images(tmp_path / "images", 1)
    manifest = write_manifest(
        tmp_path,
        [{"prompt": "scoped", "referenceImages": ["images/img0000.png"]}],
        projectId="proj_test",
    )
    from batch.manifest.load import load_manifest
    from batch.run.pipeline import RunOptions, run_manifest
    from tests.pipeline_helpers import settings_for

    loaded = load_manifest(manifest)
    summary = await run_manifest(
        loaded,
        settings_for(simulator, project_id=loaded.project_id),
        RunOptions(out_dir=tmp_path / "out", poll=FAST_POLL),
    )
    assert summary.succeeded == 1
    api_calls = [r for r in simulator.request_log if r.origin == "api"]
    assert api_calls and all(r.query.get("projectId") == "proj_test" for r in api_calls)


async def test_many_items_keep_task_count_bounded(
    simulator_factory: SimulatorFactory, tmp_path: Path
) -> None:
    """With 300 items at concurrency 5, the tasks alive stay within the pipeline's bounds
    (items in a job slot, and items past their job: waiting for a URL lookup or downloading;
    prefetches for the items next in line), far from one per item."""
    import asyncio

    sim = await simulator_factory(job_latency_s=0.02)
    write_images(tmp_path / "images", 1)
    jobs = [{"prompt": f"n{n}", "referenceImages": ["images/img0000.png"]} for n in range(300)]
    manifest = write_manifest(tmp_path, jobs)
    peak = {"item": 0, "refs": 0, "all": 0}

    async def watch() -> None:
        while True:
            tasks = asyncio.all_tasks()
            for kind in ("item", "refs"):
                alive = sum(1 for t in tasks if t.get_name().startswith(kind + ":"))
                peak[kind] = max(peak[kind], alive)
            peak["all"] = max(peak["all"], len(tasks))
            await asyncio.sleep(0.005)

    watcher = asyncio.ensure_future(watch())
    try:
        summary = await run(sim, manifest, tmp_path / "out", concurrency=5, download_parallel=4)
    finally:
        watcher.cancel()
    assert summary.succeeded == 300
    # 5 items in slots, at most (url_wait_fraction + 1) * 5 + 4 past their job.
    items = 5 + math.ceil((FAST_POLL.url_wait_fraction + 1) * 5) + 4
    # Prefetches waiting for the next 5 + 1 items to start, and at most 5 uploading. A
    # prefetch whose item started first ends there: the item uploads for itself.
    prefetches = (5 + 1) + 5
    assert peak["item"] <= items, peak
    assert peak["refs"] <= prefetches, peak
    # Besides: the poller's, the test's own and the servers' handler tasks.
    assert peak["all"] < items + prefetches + 20, peak


@pytest.fixture
def sentinel_gc() -> Iterator[tuple[int, int, int]]:
    """Odd GC thresholds a run must hand back as it found them; the real ones after."""
    saved = gc.get_threshold()
    gc.set_threshold(123, 11, 12)
    try:
        yield (123, 11, 12)
    finally:
        gc.set_threshold(*saved)
        gc.unfreeze()


async def test_run_freezes_its_loaded_state_for_the_gc_and_restores_it(
    simulator: Simulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    sentinel_gc: tuple[int, int, int],
) -> None:
    """While jobs run, what was loaded sits outside the cyclic GC's scans and young
    collections are rarer; afterwards the process's GC is as it was, also when two runs
    overlap in one process, and a heap frozen by the host program stays frozen."""
    seen: list[tuple[tuple[int, ...], int]] = []
    execute = pipeline.Run.execute

    async def observed(self: pipeline.Run) -> pipeline.RunSummary:
        seen.append((gc.get_threshold(), gc.get_freeze_count()))
        summary = await execute(self)
        seen.append((gc.get_threshold(), gc.get_freeze_count()))
        return summary

    monkeypatch.setattr(pipeline.Run, "execute", observed)
    raised = (pipeline.YOUNG_GC_THRESHOLD, *sentinel_gc[1:])

    summary = await run(simulator, _one_image_each(tmp_path / "a", 2), tmp_path / "a" / "out")
    assert summary.succeeded == 2
    assert [threshold for threshold, _ in seen] == [raised, raised] and seen[0][1] > 1000
    assert gc.get_threshold() == sentinel_gc and gc.get_freeze_count() == 0

    # Two runs at once, the shorter one ending first: the longer keeps the raised
    # thresholds, and only the last to end restores them.
    seen.clear()
    short = _one_image_each(tmp_path / "b", 1)
    long = _one_image_each(tmp_path / "c", 6)
    results = await asyncio.gather(
        run(simulator, short, tmp_path / "b" / "out"),
        run(simulator, long, tmp_path / "c" / "out", concurrency=1),
    )
    assert [r.succeeded for r in results] == [1, 6]
    assert len(seen) == 4 and all(threshold == raised for threshold, _ in seen), seen
    assert gc.get_threshold() == sentinel_gc and gc.get_freeze_count() == 0

    # A heap its host program froze: left frozen.
    gc.freeze()
    summary = await run(simulator, _one_image_each(tmp_path / "d", 1), tmp_path / "d" / "out")
    assert summary.succeeded == 1
    assert gc.get_threshold() == sentinel_gc and gc.get_freeze_count() > 1000


class _WatchedAges:
    """The age each job was watched with (`Poller.wait_for`'s age_s), by job id."""

    def __init__(self) -> None:
        self.ages: dict[str, float] = {}
        self.enough = asyncio.Event()
        self.wanted = 0

    async def until(self, count: int) -> None:
        self.wanted = count
        if len(self.ages) < count:
            async with asyncio.timeout(10):
                await self.enough.wait()


@pytest.fixture
def watched(monkeypatch: pytest.MonkeyPatch) -> _WatchedAges:
    record = _WatchedAges()
    wait_for = Poller.wait_for

    async def observed(self: Poller, job_id: str, since: str, *, age_s: float = 0.0) -> Finished:
        record.ages[job_id] = age_s
        if record.wanted and len(record.ages) >= record.wanted:
            record.enough.set()
        return await wait_for(self, job_id, since, age_s=age_s)

    monkeypatch.setattr(Poller, "wait_for", observed)
    return record


async def test_resumed_jobs_are_watched_from_when_they_were_sent(
    simulator_factory: SimulatorFactory, tmp_path: Path, watched: _WatchedAges
) -> None:
    """A run stopped while its jobs ran: the next run watches them as jobs that have been
    running since they were sent (so they are due sooner), new jobs as just sent."""
    sim = await simulator_factory(job_latency_s=2.0)
    manifest = _one_image_each(tmp_path, 3)
    out = tmp_path / "out"
    ages = watched.ages
    before_gc = gc.get_threshold()
    first = asyncio.create_task(run(sim, manifest, out, concurrency=2))
    await watched.until(2)
    first.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await first
    assert gc.get_threshold() == before_gc and gc.get_freeze_count() == 0  # also when cut short
    assert ages and all(age == 0 for age in ages.values()), ages
    ages.clear()
    await asyncio.sleep(0.5)

    summary = await run(sim, manifest, out, concurrency=2)
    assert summary.succeeded == 3
    resumed = [age for age in ages.values() if age > 0]
    assert len(ages) == 3 and len(resumed) == 2, ages
    assert all(0.5 <= age < 10 for age in resumed), ages


async def test_a_job_found_after_a_lost_answer_is_watched_from_its_call(
    simulator_factory: SimulatorFactory, tmp_path: Path, watched: _WatchedAges
) -> None:
    """A generate answer lost after the job was made: the job found by reconciliation is
    watched as running since the call went out; the others as just sent."""
    sim = await simulator_factory(job_latency_s=0.3, drop_after_submit_rate=0.5, seed=3)
    summary = await run(sim, _one_image_each(tmp_path, 8), tmp_path / "out")
    assert summary.succeeded == 8
    dropped = {r.job_id for r in sim.generate_calls() if r.status is None and r.job_id}
    assert dropped and set(watched.ages) >= dropped
    assert all(watched.ages[job_id] > 0 for job_id in dropped), watched.ages
    assert all(age == 0 for job_id, age in watched.ages.items() if job_id not in dropped)


async def test_prefetches_keep_out_of_the_waves_way(
    simulator_factory: SimulatorFactory, tmp_path: Path
) -> None:
    """References are uploaded ahead of their slot, but not beside the first wave's submits
    (they would compete for both ends' CPU), nor in the burst of a wave that freed the
    slots: once a job duration is known, a prefetch waits a share of one first (0.3 x
    ~0.5 s here). Every reference is still uploaded once, ahead of its item."""
    sim = await simulator_factory(seed=5, job_latency_s=0.5, job_latency_jitter=0.0)
    manifest = _one_image_each(tmp_path, 12)

    summary = await run(sim, manifest, tmp_path / "out", concurrency=4)

    assert summary.succeeded == 12
    records = sim.request_log
    uploads = sorted(r.time for r in records if r.method == "POST" and r.path == "/v1/assets")
    submits = sorted(r.time for r in records if r.path.startswith("/v1/generate/"))
    assert len(uploads) == 12 and len(submits) == 12
    # The first four uploads are the first wave's own; the next five are prefetched once
    # its submits are answered, and land before a slot frees.
    assert max(uploads[:4]) < min(submits), (uploads, submits)
    assert min(uploads[4:9]) > max(submits[:4]), (uploads, submits)
    assert max(uploads[4:9]) < submits[4], (uploads, submits)
    first_end = submits[0] + 0.5  # the first wave's jobs end; their slots pass on
    # Items 0-8 are prefetched at the start (no duration known yet), 9-11 once the first
    # wave hands its slots on: not at once, but after the wait.
    later = [t - first_end for t in uploads if t > first_end]
    assert len(later) == 3, later
    assert min(later) >= 0.1, later
    # ... and still ahead of their items, which start when the second wave ends.
    assert max(uploads) < submits[8], (uploads, submits)


async def test_each_item_is_planned_on_disk_before_it_is_submitted(
    simulator: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Planned records are written in batches while the first items already run, yet
    every item's `planned` line precedes its `submitting` line, and every item has one."""
    monkeypatch.setattr(pipeline, "PLANNED_BATCH", 3)
    write_planned = pipeline.Run._write_planned

    def slow_disk(run: pipeline.Run, items: list[Any]) -> list[dict[str, Any]]:
        time.sleep(0.3)  # in the writing thread: a disk slower than the API
        return write_planned(run, items)

    monkeypatch.setattr(pipeline.Run, "_write_planned", slow_disk)
    manifest = _one_image_each(tmp_path, 11)
    out = tmp_path / "out"

    summary = await run(simulator, manifest, out, concurrency=4)

    assert summary.succeeded == 11
    first: dict[str, str] = {}
    for record in ledger_lines(out):
        if record.get("type") == "item":
            first.setdefault(record["id"], record["state"])
    assert len(first) == 11 and set(first.values()) == {"planned"}
