"""A lost ledger need not mean paying twice (issue 18), and a reference that changes under
the run is never uploaded: adoption of the account's jobs, and reference stamps."""

from __future__ import annotations

import asyncio
import base64
import logging
import shutil
from pathlib import Path

import pytest

from batch.cli.main import main
from batch.ledger.journal import load_state
from batch.simulator import Simulator
from batch.simulator.models import SEEDREAM
from tests.conftest import SimulatorFactory, make_png
from tests.pipeline_helpers import (
    assert_outputs_intact,
    jobs_created_per_prompt,
    run,
    write_images,
    write_manifest,
)

ITEMS = 8


def _manifest(tmp_path: Path, prompts: dict[int, str] | None = None, **top: object) -> Path:
    if not (tmp_path / "images").exists():
        write_images(tmp_path / "images", ITEMS)
    jobs = [
        {
            "id": f"item-{n}",
            "prompt": (prompts or {}).get(n, f"adopt {n}"),
            "referenceImages": [f"images/img{n:04d}.png"],
        }
        for n in range(ITEMS)
    ]
    return write_manifest(tmp_path, jobs, **top)


async def test_a_lost_ledger_adopts_the_jobs_already_bought(
    simulator_factory: SimulatorFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The output directory is deleted after a run: the rerun buys nothing and says so."""
    sim = await simulator_factory()
    manifest = _manifest(tmp_path)
    out = tmp_path / "out"
    await run(sim, manifest, out)
    shutil.rmtree(out)
    with caplog.at_level(logging.WARNING):
        summary = await run(sim, manifest, out)
    assert summary.exit_code == 0 and summary.submitted == 0
    assert set(jobs_created_per_prompt(sim).values()) == {1}
    assert f"adopted {ITEMS} job(s)" in caplog.text and "--fresh" in caplog.text
    assert assert_outputs_intact(out) == ITEMS
    assert all(record.job_ids for record in load_state(out).items.values())


async def test_fresh_buys_new_outputs(simulator_factory: SimulatorFactory, tmp_path: Path) -> None:
    """With adoption off (--fresh), the same inputs are bought again, on purpose."""
    sim = await simulator_factory()
    manifest = _manifest(tmp_path)
    await run(sim, manifest, tmp_path / "a")
    summary = await run(sim, manifest, tmp_path / "b", adopt_window_s=None)
    assert summary.submitted == ITEMS
    assert set(jobs_created_per_prompt(sim).values()) == {2}


async def test_only_jobs_with_the_same_inputs_are_adopted(
    simulator_factory: SimulatorFactory, tmp_path: Path
) -> None:
    """A new prompt, or a reference file with other bytes under the same name, is bought."""
    sim = await simulator_factory()
    await run(sim, _manifest(tmp_path), tmp_path / "first")
    (tmp_path / "images" / "img0003.png").write_bytes(make_png(40, 30, color=(1, 2, 3)))
    manifest = _manifest(tmp_path, prompts={5: "a new prompt"})
    summary = await run(sim, manifest, tmp_path / "second")
    assert summary.exit_code == 0 and summary.submitted == 2
    per_prompt = jobs_created_per_prompt(sim)
    assert per_prompt["adopt 3"] == 2 and per_prompt["a new prompt"] == 1
    assert sum(per_prompt.values()) == ITEMS + 2


async def test_jobs_older_than_the_window_are_not_adopted(
    simulator_factory: SimulatorFactory, tmp_path: Path
) -> None:
    """Only jobs created within the adoption window count."""
    sim = await simulator_factory()
    manifest = _manifest(tmp_path)
    await run(sim, manifest, tmp_path / "a")
    await asyncio.sleep(1.2)
    summary = await run(sim, manifest, tmp_path / "b", adopt_window_s=1.0)
    assert summary.submitted == ITEMS


async def test_a_reference_changed_or_removed_mid_run_fails_its_item_and_is_not_uploaded(
    simulator_factory: SimulatorFactory, tmp_path: Path
) -> None:
    """Bytes other than those validated never go up: the item fails with the reason."""
    sim = await simulator_factory(job_latency_s=0.3)
    manifest = _manifest(tmp_path)
    out = tmp_path / "out"
    running = asyncio.create_task(run(sim, manifest, out, concurrency=2))
    for _ in range(200):
        await asyncio.sleep(0.02)
        if any(r.is_generate for r in sim.request_log):
            break
    replaced = make_png(50, 50, color=(9, 9, 9))
    (tmp_path / "images" / "img0007.png").write_bytes(replaced)
    (tmp_path / "images" / "img0006.png").unlink()
    summary = await running
    failures = {item: error for item, error, _ in summary.failures}
    assert set(failures) == {"item-6", "item-7"}, failures
    assert "was removed after the manifest was validated" in failures["item-6"]
    assert "changed after the manifest was validated" in failures["item-7"]
    assert summary.succeeded == ITEMS - 2
    uploaded = [
        r.body.get("image", "")
        for r in sim.request_log
        if r.origin == "api" and r.path == "/v1/assets" and isinstance(r.body, dict)
    ]
    assert uploaded and not any(base64.b64encode(replaced).decode() in u for u in uploaded)
    record = load_state(out).items["item-7"]
    assert record.state == "failed" and record.hint and "--retry-failed" in record.hint


async def test_a_model_with_several_file_inputs_is_adopted_by_content(
    scenario_env: Simulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """seedream's list input of two files: the lost ledger's jobs are found and adopted."""
    write_images(tmp_path / "images", 3)
    manifest = write_manifest(
        tmp_path,
        [
            {"id": f"s{n}", "prompt": f"seed {n}", "sourceImages": [f"images/img000{n}.png",
                                                                    "images/img0002.png"]}
            for n in range(2)
        ],
        model=SEEDREAM,
        output="out",
    )  # fmt: skip
    assert await asyncio.to_thread(main, ["run", str(manifest), "-q"]) == 0
    shutil.rmtree(tmp_path / "out")
    assert await asyncio.to_thread(main, ["run", str(manifest)]) == 0
    assert "adopted 2 job(s)" in capsys.readouterr().err
    assert set(jobs_created_per_prompt(scenario_env).values()) == {1}
    assert assert_outputs_intact(tmp_path / "out") == 2


async def test_an_account_without_recent_jobs_costs_no_per_item_matching(
    simulator_factory: SimulatorFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first run on an account with no recent job skips the per-item work of adoption
    (2 s before the first submit of a 100,000-item run): one job-list read, then the run."""

    def no_matching(items: object) -> object:
        raise AssertionError("per-item matching with no job to match")

    monkeypatch.setattr("batch.run.adoption._unambiguous", no_matching)
    sim = await simulator_factory()
    summary = await run(sim, _manifest(tmp_path), tmp_path / "out")
    assert summary.exit_code == 0 and summary.submitted == ITEMS


async def test_the_first_uploads_go_while_adoption_reads_the_job_list(
    simulator_factory: SimulatorFactory, tmp_path: Path
) -> None:
    """A fresh directory: adoption reads the account's job list first (a round trip), and
    the first wave's references upload meanwhile; no generate call goes before adoption's
    answer (nothing is bought before the account's jobs are known)."""
    rtt = 0.4
    sim = await simulator_factory(api_rtt_s=rtt)
    summary = await run(sim, _manifest(tmp_path), tmp_path / "out", concurrency=ITEMS)
    assert summary.succeeded == ITEMS
    api = sim.records(origin="api")  # each taking effect half a round trip after it was sent
    adoption = min(r.time for r in api if r.method == "GET" and r.path == "/v1/jobs")
    uploads = [r.time for r in api if r.method == "POST" and r.path == "/v1/assets"]
    generates = [r.time for r in api if r.is_generate]
    assert min(uploads) < adoption + rtt / 2  # sent before adoption's answer came back
    assert min(generates) >= adoption + rtt * 0.9  # sent after it
