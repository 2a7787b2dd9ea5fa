"""A bad night (issue 5): every fault knob of the simulator against the whole pipeline.

Faults are seeded simulator knobs; assertions are properties of the outcome (final
states, intact files, submits per item, the request log), never exact timings.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

import batch.run.outputs
import batch.run.pipeline
from batch.api.settings import ApiSettings, RetryPolicy
from batch.cli import main as cli
from batch.ledger.journal import load_state
from batch.models.catalog import ModelCatalog
from batch.models.inputs import KONTEXT_DECLARATION
from batch.run.outputs import Fetched
from batch.simulator import MODEL_ID
from tests.conftest import TEST_API_KEY, TEST_API_SECRET, SimulatorFactory, over_http_and_https
from tests.pipeline_helpers import (
    FAST_RETRY,
    api_records,
    assert_outputs_intact,
    jobs_created_per_prompt,
    ledger_lines,
    max_in_window,
    numbered_manifest,
    run,
    write_images,
    write_manifest,
)

# Patient enough that a call never runs out of tries under 20% faults, still fast.
NIGHT_RETRY = RetryPolicy(attempts=14, initial_wait_s=0.01, max_wait_s=0.2, total_s=60)


def _manifest(tmp_path: Path, count: int, *, images: int = 8, **top: Any) -> Path:
    return numbered_manifest(tmp_path, count, "night edit", images=images, **top)


def _final_states(out: Path) -> Counter[str]:
    return Counter(record.state for record in load_state(out).items.values())


@over_http_and_https
async def test_bad_night(simulator_factory: SimulatorFactory, tmp_path: Path) -> None:
    """150 items under every fault at once: all final, files intact, <= 1 + retries submits,
    stalls canceled and recorded as "timeout", no credentials at the CDN (over https too:
    resets and truncated bodies inside TLS)."""
    sim = await simulator_factory(
        seed=7,
        job_latency_s=0.2,
        http500_rate=0.10,
        http429_rate=0.05,
        retry_after_s=0.05,
        reset_rate=0.03,
        job_failure_rate=0.05,
        truncate_rate=0.05,
        stall_rate=0.02,
        url_lifetime_s=0.1,  # shorter than a job: slow downloads need a fresh URL
    )
    manifest = _manifest(tmp_path, 150)
    out = tmp_path / "out"

    summary = await run(
        sim,
        manifest,
        out,
        concurrency=24,
        job_retries=1,
        job_timeout_s=2.0,
        download_attempts=8,
        settings={"retry": NIGHT_RETRY},
    )

    assert summary.unfinished == 0 and summary.succeeded + summary.failed == 150
    states = _final_states(out)
    assert set(states) <= {"succeeded", "failed"} and sum(states.values()) == 150
    for record in load_state(out).items.values():
        if record.state == "failed":
            assert record.error, f"{record.id} failed without a reason"
            # Job failures and timeouts only: no download, retry or transport error survives.
            assert record.error == "timeout" or "simulated GPU error" in record.error
    assert assert_outputs_intact(out) > 0
    assert max(jobs_created_per_prompt(sim).values()) <= 2
    assert not [r for r in sim.records(origin="cdn") if r.auth_sent]
    stalled = [job for job in sim.jobs.values() if job.plan.stalls]
    assert stalled, "seed 7 stalls some jobs"
    cancels = {
        r.path.split("/")[3]
        for r in sim.records("api", "/v1/jobs/")
        if r.method == "POST" and r.path.endswith("/action") and r.status == 200
    }
    timeouts = {line["id"] for line in ledger_lines(out) if line.get("error") == "timeout"}
    for job in stalled:
        assert sim.job_state(job.id).status == "canceled"
        assert job.id in cancels, f"stalled job {job.id} was never canceled"
        item_id = "item-{:03d}".format(int(str(job.input["prompt"]).split()[-1]))
        assert item_id in timeouts, f"{item_id}: no 'timeout' record for its stalled job"


def _share_429(records: list[Any]) -> float:
    return sum(1 for r in records if r.status == 429) / max(1, len(records))


async def test_rate_limit_converges(simulator_factory: SimulatorFactory, tmp_path: Path) -> None:
    """Under a server limit far below what concurrency 32 asks for, the 429 share falls after
    the first seconds and every item still finishes."""
    sim = await simulator_factory(seed=3, job_latency_s=0.1, rate_limit_rps=10.0)
    manifest = _manifest(tmp_path, 40, images=4)
    out = tmp_path / "out"

    summary = await run(sim, manifest, out, concurrency=32, settings={"retry": NIGHT_RETRY})

    assert (summary.succeeded, summary.failed, summary.unfinished) == (40, 0, 0)
    records = api_records(sim)
    start, end = records[0].time, records[-1].time
    early = [r for r in records if r.time < start + 2.0]
    late = [r for r in records if r.time >= (start + end) / 2]
    assert _share_429(early) > 0.15, "the start should overrun the limit"
    assert _share_429(late) < _share_429(early) / 3


@pytest.mark.parametrize(
    ("case", "status", "names"),
    [
        ("unknown asset", 400, "referenceImages"),
        ("forbidden model", 403, "plan"),
        ("unknown model", 404, "model_missing"),
    ],
)
async def test_permanent_errors_fail_the_item_at_once(
    simulator_factory: SimulatorFactory, tmp_path: Path, case: str, status: int, names: str
) -> None:
    """400/403/404 from generate fail the item at once, with the API's message, untried again."""
    sim = await simulator_factory(forbidden_models=(MODEL_ID,) if case == "forbidden model" else ())
    write_images(tmp_path / "images", 1)
    reference = "asset_doesnotexist" if case == "unknown asset" else "images/img0000.png"
    jobs = [{"id": f"p{n}", "prompt": f"p{n}", "referenceImages": [reference]} for n in range(3)]
    top = {"model": "model_missing"} if case == "unknown model" else {}
    if case == "unknown model":  # its declaration was cached, the model withdrawn since
        declared = {**KONTEXT_DECLARATION, "id": "model_missing"}
        ModelCatalog(fetch=lambda ids, project: dict.fromkeys(ids, declared)).resolve(top.values())
    manifest = write_manifest(tmp_path, jobs, **top)
    out = tmp_path / "out"

    summary = await run(sim, manifest, out, job_retries=3)

    assert (summary.succeeded, summary.failed, summary.unfinished) == (0, 3, 0)
    for record in load_state(out).items.values():
        assert record.state == "failed" and record.error
        assert f"HTTP {status}" in record.error and names in record.error
    assert [r.status for r in sim.generate_calls()] == [status] * 3  # one call each, no retry
    assert not sim.jobs


async def test_refused_credentials_stop_the_run_with_exit_2(
    simulator_factory: SimulatorFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """401 (wrong key): the CLI stops at once with exit 2 and a message about the credentials;
    no generate call is sent."""
    sim = await simulator_factory(api_key="right-key", api_secret="right-secret")
    monkeypatch.setenv("SCENARIO_BASE_URL", sim.base_url)
    monkeypatch.setenv("SCENARIO_SDK_API_KEY", TEST_API_KEY)
    monkeypatch.setenv("SCENARIO_SDK_API_SECRET", TEST_API_SECRET)
    monkeypatch.delenv("SCENARIO_PROJECT_ID", raising=False)
    manifest = _manifest(tmp_path, 20, images=4)

    code = await asyncio.to_thread(cli.main, ["run", str(manifest), "--out", str(tmp_path / "o")])

    assert code == 2
    assert "SCENARIO_SDK_API_KEY" in capsys.readouterr().err
    assert not sim.generate_calls() and not sim.jobs
    calls = api_records(sim)
    assert calls and {r.status for r in calls} == {401}
    # Adoption's job-list read and the first wave's uploads go together (a fresh directory),
    # so each may be refused once; nothing is retried.
    assert len(calls) <= 1 + 4, "adoption's read and one call per reference image at most"


async def test_short_outage_pauses_and_completes(
    simulator_factory: SimulatorFactory, tmp_path: Path
) -> None:
    """A 1.5 s outage mid-run: the run pauses and probes, then completes; no item fails, no
    item is submitted twice, and the dead API is not hammered."""
    sim = await simulator_factory(seed=2, job_latency_s=0.2, outage_windows=((0.5, 2.0),))
    manifest = _manifest(tmp_path, 40, images=4)
    out = tmp_path / "out"

    summary = await run(
        sim,
        manifest,
        out,
        concurrency=8,
        settings={"outage_trip_after": 3, "outage_grace_s": 30.0},
    )

    assert (summary.succeeded, summary.failed, summary.unfinished) == (40, 0, 0)
    assert set(jobs_created_per_prompt(sim).values()) == {1}
    refused = [r for r in api_records(sim) if r.status == 503]
    assert refused, "the outage fell inside the run"
    assert len(refused) < 30, f"{len(refused)} calls into a dead API: it should pause and probe"
    assert assert_outputs_intact(out) == sum(1 + n % 2 for n in range(40))


async def test_long_outage_stops_with_exit_1_and_resumes(
    simulator_factory: SimulatorFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An outage past the grace period stops the CLI with exit 1 and a clear message; the
    same command run after the outage completes every item, none submitted twice."""
    sim = await simulator_factory(seed=2, job_latency_s=1.0, outage_windows=((0.4, 3.0),))
    monkeypatch.setenv("SCENARIO_BASE_URL", sim.base_url)
    monkeypatch.setenv("SCENARIO_SDK_API_KEY", TEST_API_KEY)
    monkeypatch.setenv("SCENARIO_SDK_API_SECRET", TEST_API_SECRET)
    monkeypatch.delenv("SCENARIO_PROJECT_ID", raising=False)
    from_env = ApiSettings.from_env

    def impatient(env: Any, *, project_id: str | None = None) -> ApiSettings:
        settings = from_env(env, project_id=project_id)
        return dataclasses.replace(
            settings, retry=FAST_RETRY, outage_trip_after=3, outage_grace_s=0.8
        )

    monkeypatch.setattr(ApiSettings, "from_env", staticmethod(impatient))
    manifest = _manifest(tmp_path, 30, images=4, concurrency=6)
    out = tmp_path / "out"
    argv = ["run", str(manifest), "--out", str(out)]

    started = time.monotonic()
    first = await asyncio.to_thread(cli.main, argv)

    assert first == 1
    assert time.monotonic() - started < 10, "stops soon after the grace period, no hang"
    printed = capsys.readouterr().out
    assert "stopped early: the API has failed every call" in printed
    assert "again to resume" in printed
    assert _final_states(out)["failed"] == 0, "an outage fails no item"
    assert sim.first_request_at is not None
    await asyncio.sleep(max(0.0, sim.first_request_at + 3.0 - time.monotonic()))
    second = await asyncio.to_thread(cli.main, argv)

    assert second == 0
    assert _final_states(out) == Counter({"succeeded": 30})
    assert set(jobs_created_per_prompt(sim).values()) == {1}
    assert_outputs_intact(out)


@pytest.mark.parametrize(
    "spool_bytes", [batch.run.outputs.SPOOL_BYTES, 64], ids=["held", "spilled"]
)
async def test_bad_downloads_are_retried_and_only_verified_files_land(
    simulator_factory: SimulatorFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    spool_bytes: int,
) -> None:
    """Truncated bodies and non-image bytes are retried; every file on disk is byte for byte
    the simulator's output and decodes as an image; no temp file remains. Both when bodies
    are held in memory until settled and when they spill to the temp file as they come."""
    monkeypatch.setattr(batch.run.outputs, "SPOOL_BYTES", spool_bytes)
    sim = await simulator_factory(seed=5, truncate_rate=0.15, corrupt_rate=0.15)
    manifest = _manifest(tmp_path, 30, images=3)
    out = tmp_path / "out"

    summary = await run(sim, manifest, out, concurrency=8, download_attempts=10)

    assert (summary.succeeded, summary.failed, summary.unfinished) == (30, 0, 0)
    assert assert_outputs_intact(out) == sum(1 + n % 2 for n in range(30))
    for record in load_state(out).items.values():
        for output in record.files:
            data = (out / output.path).read_bytes()
            assert data == sim.store.asset_bytes(sim.assets[output.asset_id])
            with Image.open(io.BytesIO(data)) as image:
                image.verify()
    downloads = [r for r in sim.records("cdn", "/assets/") if r.method == "GET"]
    truncated = sum(1 for r in downloads if r.status is None)
    answered = Counter(r.path for r in downloads if r.status == 200)
    corrupt = sum(count - 1 for count in answered.values())  # a 200 retried was not an image
    assert truncated >= 2 and corrupt >= 2, (truncated, corrupt)
    assert not list(out.glob(".partial-*"))
    assert sorted(p.name for p in out.iterdir() if p.suffix == ".png") == sorted(
        output.path for record in load_state(out).items.values() for output in record.files
    )


@pytest.mark.parametrize("job_retries", [0, 2])
async def test_failed_jobs_keep_error_and_hint_and_resubmit_at_most_job_retries(
    simulator_factory: SimulatorFactory, tmp_path: Path, job_retries: int
) -> None:
    """Jobs ending `failure`: the ledger keeps metadata.error and hint; an item gets at most
    1 + job_retries jobs, and fails only after that many failures."""
    sim = await simulator_factory(seed=4, job_failure_rate=0.4)
    manifest = _manifest(tmp_path, 30, images=2)
    out = tmp_path / "out"

    summary = await run(sim, manifest, out, concurrency=10, job_retries=job_retries)

    assert summary.unfinished == 0 and summary.failed > 0
    jobs_by_item: dict[str, list[str]] = {}
    for job in sim.jobs.values():
        item_id = "item-{:03d}".format(int(str(job.input["prompt"]).split()[-1]))
        jobs_by_item.setdefault(item_id, []).append(sim.job_state(job.id).status)
    lines = ledger_lines(out)
    for record in load_state(out).items.values():
        statuses = jobs_by_item[record.id]
        assert len(statuses) <= 1 + job_retries
        assert statuses[:-1] == ["failure"] * (len(statuses) - 1)
        if record.state == "failed":
            assert statuses == ["failure"] * (1 + job_retries)
            assert record.error and "simulated GPU error" in record.error
            assert record.hint
        else:
            assert statuses[-1] == "success"
        remembered = [x for x in lines if x.get("id") == record.id and x.get("error")]
        assert len(remembered) >= statuses.count("failure")
        assert all(x.get("hint") for x in remembered)


async def test_max_rps_caps_the_request_rate(
    simulator_factory: SimulatorFactory, tmp_path: Path
) -> None:
    """With --max-rps R, no one-second window of the API log holds more than R + 2 calls."""
    rps = 15.0
    sim = await simulator_factory(seed=1, job_latency_s=0.1)
    manifest = _manifest(tmp_path, 30, images=3)

    summary = await run(sim, manifest, tmp_path / "out", concurrency=16, settings={"max_rps": rps})

    assert summary.succeeded == 30
    busiest = max_in_window([r.time for r in api_records(sim)])
    assert busiest <= rps + 2, busiest
    assert busiest >= rps - 3, "the cap, not the workload, set the pace"


async def test_expired_urls_are_refreshed(
    simulator_factory: SimulatorFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Download URLs that expire while an item waits to download are refreshed through the API
    and the download succeeds; the CDN never sees credentials."""
    sim = await simulator_factory(seed=6, job_latency_s=0.1, url_lifetime_s=0.3)
    real_fetch = batch.run.pipeline.fetch_output

    async def slow_fetch(*args: Any, **kwargs: Any) -> Fetched:
        await asyncio.sleep(0.4)  # a long download queue: every URL from the poller lapses
        return await real_fetch(*args, **kwargs)

    monkeypatch.setattr(batch.run.pipeline, "fetch_output", slow_fetch)
    manifest = _manifest(tmp_path, 6, images=2)
    out = tmp_path / "out"

    summary = await run(sim, manifest, out, concurrency=6)

    assert summary.succeeded == 6
    outputs = sum(1 + n % 2 for n in range(6))
    assert assert_outputs_intact(out) == outputs
    downloads = [r for r in sim.records("cdn", "/assets/") if r.method == "GET"]
    assert sum(1 for r in downloads if r.status == 403) >= outputs
    assert sum(1 for r in downloads if r.status == 200) == outputs
    refreshes = [r for r in sim.records("api", "/v1/assets/") if r.method == "GET"]
    assert len(refreshes) >= outputs
    assert not any(r.auth_sent for r in sim.records(origin="cdn"))
