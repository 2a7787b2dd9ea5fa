"""The command line: exit codes, validate, status, dry runs, budgets, shards, logs, init."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from batch.cli.main import main
from batch.ledger.journal import load_state
from batch.simulator import Simulator
from tests.conftest import SimulatorFactory
from tests.pipeline_helpers import (
    assert_outputs_intact,
    jobs_created_per_prompt,
    write_images,
    write_manifest,
)


def _cli(*args: str) -> int:
    return main(list(args))


async def _run_cli(*args: str) -> int:
    """The CLI runs its own event loop: give it a thread while the simulator serves here."""
    return await asyncio.to_thread(_cli, *args)


def _jobs(count: int, **extra: object) -> list[dict[str, object]]:
    return [
        {"id": f"item-{n}", "prompt": f"cli {n}", "referenceImages": [f"images/img{n % 2:04d}.png"]}
        | extra
        for n in range(count)
    ]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    write_images(tmp_path / "images", 2)
    return tmp_path


async def test_run_then_status(
    scenario_env: Simulator, project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`run` exits 0 with a one-line summary; `status` reports counts and cost offline."""
    manifest = write_manifest(project, _jobs(4), output="out")
    assert await _run_cli("run", str(manifest), "-q") == 0
    out = capsys.readouterr().out
    assert "4/4 succeeded" in out and "CU spent" in out
    assert (project / "out" / "report.html").exists()
    requests = len(scenario_env.request_log)

    assert _cli("status", str(project / "out")) == 0
    status = capsys.readouterr().out
    assert "succeeded   4" in status and "20 compute units" in status
    assert len(scenario_env.request_log) == requests


@pytest.mark.parametrize(
    ("job", "expected"),
    [
        ({"prompt": "x", "referenceImages": ["images/missing.png"]}, "jobs[0].referenceImages"),
        ({"promt": "x", "referenceImages": ["images/img0000.png"]}, "promt"),
        (
            {"prompt": "x", "referenceImages": ["images/img0000.png"], "guidanceScale": 12},
            "jobs[0].guidanceScale",
        ),
    ],
)
async def test_bad_manifest_exits_2_and_sends_nothing(
    scenario_env: Simulator,
    project: Path,
    capsys: pytest.CaptureFixture[str],
    job: dict[str, object],
    expected: str,
) -> None:
    """A bad manifest: exit 2, the message names file, line and field, no request is sent."""
    manifest = write_manifest(project, [job], output="out")
    assert await _run_cli("run", str(manifest)) == 2
    error = capsys.readouterr().err
    assert "manifest.yaml:" in error and expected in error
    assert scenario_env.request_log == []
    assert _cli("validate", str(manifest)) == 2


async def test_missing_credentials_exit_2(
    scenario_env: Simulator,
    project: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Without credentials the run refuses before any request, with exit 2."""
    monkeypatch.delenv("SCENARIO_SDK_API_SECRET")
    manifest = write_manifest(project, _jobs(1), output="out")
    assert await _run_cli("run", str(manifest)) == 2
    assert "SCENARIO_SDK_API_SECRET" in capsys.readouterr().err
    assert scenario_env.request_log == []


async def test_dry_run_prices_without_submitting(
    scenario_env: Simulator, project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--dry-run prints the total cost, creates no job and writes no ledger."""
    jobs = [
        *_jobs(6),
        {
            "id": "double",
            "prompt": "two",
            "referenceImages": ["images/img0000.png"],
            "numOutputs": 2,
        },
    ]
    manifest = write_manifest(project, jobs, output="out")
    assert await _run_cli("run", str(manifest), "--dry-run") == 0
    out = capsys.readouterr().out
    assert "7 item(s)" in out and "40 compute units" in out
    assert not scenario_env.jobs
    estimates = [r for r in scenario_env.generate_calls() if r.query.get("dryRun") == "true"]
    assert len(estimates) == 2, "one estimate per distinct parameter set"
    assert not (project / "out" / "ledger.jsonl").exists()


async def test_max_cost_stops_before_the_budget_is_passed(
    scenario_env: Simulator, project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--max-cost 12 at 5 CU a job submits two jobs, then stops with exit 1 and the reason."""
    manifest = write_manifest(project, _jobs(6), output="out", concurrency=4)
    assert await _run_cli("run", str(manifest), "--max-cost", "12") == 1
    out = capsys.readouterr().out
    assert "budget reached" in out
    assert scenario_env.spent_cu() <= 12
    assert len(scenario_env.jobs) == 2
    assert load_state(project / "out").total_spent() == 10


async def test_shards_split_the_items_and_status_merges_them(
    scenario_env: Simulator, project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--shard 0/2 and 1/2 run disjoint slices that together cover the manifest."""
    manifest = write_manifest(project, _jobs(10))
    for index in range(2):
        code = await _run_cli(
            "run", str(manifest), "--shard", f"{index}/2", "--out", str(project / f"s{index}"), "-q"
        )
        assert code == 0
    ids = [set(load_state(project / f"s{i}").items) for i in range(2)]
    assert ids[0] and ids[1] and not ids[0] & ids[1]
    assert ids[0] | ids[1] == {f"item-{n}" for n in range(10)}
    capsys.readouterr()
    assert _cli("status", str(project / "s0"), str(project / "s1")) == 0
    assert "10 items" in capsys.readouterr().out


async def test_json_logs_are_one_object_per_line(
    scenario_env: Simulator, project: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """--log-format json: every stderr line is a JSON object with ts, level and message."""
    manifest = write_manifest(project, _jobs(3), output="out")
    assert await _run_cli("run", str(manifest), "--log-format", "json", "-v") == 0
    lines = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    assert lines
    events = [json.loads(line) for line in lines]
    assert all({"ts", "level", "message"} <= set(event) for event in events)
    assert any(event.get("event") == "item_succeeded" for event in events)


async def test_dated_output_directory(
    scenario_env: Simulator, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`{date}` in the output directory becomes the run's date."""
    monkeypatch.setenv("SCENARIO_BATCH_DATE", "2026-11-25")
    manifest = write_manifest(project, _jobs(1), output="nightly/{date}")
    assert await _run_cli("run", str(manifest), "-q") == 0
    assert (project / "nightly" / "2026-11-25" / "ledger.jsonl").exists()


def test_init_writes_a_valid_manifest(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`init FOLDER --prompt` writes a manifest with one job per image that validates."""
    assert _cli("init", str(project / "images"), "--prompt", "Make it blue") == 0
    written = project / "images" / "scenario-batch.yaml"
    assert _cli("validate", str(written)) == 0
    assert "2 items" in capsys.readouterr().out
    assert _cli("init", str(project / "images"), "--prompt", "again") == 2  # no silent overwrite


def test_validate_loads_no_http_client_or_run_machinery(project: Path) -> None:
    """`validate` (the command scripts call most, whole process timed in the benchmark)
    imports only what checking a manifest needs: no aiohttp, no pipeline, no image
    export, no progress bar."""
    manifest = write_manifest(project, _jobs(3))
    script = (
        "import sys\n"
        "from batch.cli.main import main\n"
        f"code = main(['validate', {str(manifest)!r}])\n"
        "heavy = ('aiohttp', 'batch.run.pipeline', 'batch.report.export', 'batch.run.progress')\n"
        "print(code, sorted(m for m in heavy if m in sys.modules))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCENARIO_")}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "0 []", done.stdout


async def test_edited_item_is_new_and_old_output_is_kept(
    scenario_env: Simulator, project: Path
) -> None:
    """Changing an item's prompt submits it anew; the old output stays, the ledger tells which."""
    jobs = _jobs(2)
    manifest = write_manifest(project, jobs, output="out")
    assert await _run_cli("run", str(manifest), "-q") == 0
    jobs[0]["prompt"] = "a different edit"
    write_manifest(project, jobs, output="out")

    assert await _run_cli("run", str(manifest), "-q") == 0

    out = project / "out"
    state = load_state(out)
    new, old = state.items["item-0"], state.superseded["item-0"][0]
    assert old.files[0].path == "item-0_0.png" and (out / "item-0_0.png").exists()
    assert new.files[0].path != old.files[0].path and (out / new.files[0].path).exists()
    assert jobs_created_per_prompt(scenario_env) == {"cli 0": 1, "cli 1": 1, "a different edit": 1}
    assert_outputs_intact(out)


async def test_retry_failed_resubmits_only_failed_items(
    simulator_factory: SimulatorFactory,
    project: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Failed items stay failed on a rerun; --retry-failed resubmits exactly those."""
    sim = await simulator_factory(job_failure_rate=0.5, seed=11)
    monkeypatch.setenv("SCENARIO_BASE_URL", sim.base_url)
    monkeypatch.setenv("SCENARIO_SDK_API_KEY", "k")
    monkeypatch.setenv("SCENARIO_SDK_API_SECRET", "s")
    manifest = write_manifest(project, _jobs(12), output="out")
    assert await _run_cli("run", str(manifest), "--job-retries", "0", "-q") == 1
    failed = {r.id for r in load_state(project / "out").items.values() if r.state == "failed"}
    assert failed
    jobs_before = len(sim.jobs)

    assert await _run_cli("run", str(manifest), "--job-retries", "0", "-q") == 1
    assert len(sim.jobs) == jobs_before

    await _run_cli("run", str(manifest), "--job-retries", "0", "--retry-failed", "-q")
    assert len(sim.jobs) == jobs_before + len(failed)


async def test_removed_items_are_reported_not_deleted(
    scenario_env: Simulator, project: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """An item dropped from the manifest is named in a warning; its files stay on disk."""
    jobs = _jobs(3)
    manifest = write_manifest(project, jobs, output="out")
    assert await _run_cli("run", str(manifest)) == 0
    write_manifest(project, jobs[:2], output="out")
    capfd.readouterr()

    assert await _run_cli("run", str(manifest)) == 0

    assert "no longer in the manifest" in capfd.readouterr().err
    assert (project / "out" / "item-2_0.png").exists()


async def test_unusable_output_directory_exits_2_before_spending(
    scenario_env: Simulator, project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A ledger planted as a symlink, or an --out that is a file: exit 2, nothing sent."""
    manifest = write_manifest(project, _jobs(1), output="out")
    (project / "out").mkdir()
    (project / "out" / "ledger.jsonl").symlink_to(project / "elsewhere.jsonl")
    assert await _run_cli("run", str(manifest)) == 2
    assert "symbolic link" in capsys.readouterr().err
    (project / "a-file").write_text("x")
    assert await _run_cli("run", str(manifest), "--out", str(project / "a-file")) == 2
    assert not (project / "elsewhere.jsonl").exists()
    assert scenario_env.request_log == []


def test_dated_directory_resumes_last_nights_unfinished_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run killed after midnight resumes yesterday's directory instead of starting over."""
    import datetime as dt

    from batch.cli.main import expand_date
    from batch.ledger.journal import LedgerWriter

    monkeypatch.delenv("SCENARIO_BATCH_DATE", raising=False)
    pattern = tmp_path / "nightly" / "{date}"
    today = dt.date(2026, 11, 26)
    yesterday = tmp_path / "nightly" / "2026-11-25"
    assert expand_date(pattern, today) == tmp_path / "nightly" / "2026-11-26"

    yesterday.mkdir(parents=True)
    writer = LedgerWriter(yesterday)
    writer.open()
    writer.append_now({"type": "item", "id": "a", "fp": "f", "state": "submitted", "jobId": "j"})
    writer.close()
    assert expand_date(pattern, today) == yesterday

    writer.open()
    writer.append_now({"type": "item", "id": "a", "fp": "f", "state": "succeeded", "files": []})
    writer.close()
    assert expand_date(pattern, today) == tmp_path / "nightly" / "2026-11-26"
    monkeypatch.setenv("SCENARIO_BATCH_DATE", "2026-01-01")
    assert expand_date(pattern, today) == tmp_path / "nightly" / "2026-01-01"


async def test_poll_budget_option_reaches_the_poller(
    scenario_env: Simulator,
    project: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`--poll-budget B` sets the run's budget per job; a value that is not positive is exit 2
    before any request."""
    from batch.run import pipeline

    manifest = write_manifest(project, _jobs(2), output="out")
    with pytest.raises(SystemExit) as refused:  # argparse's own exit for a bad option
        _cli("run", str(manifest), "--poll-budget", "0")
    assert refused.value.code == 2
    assert "--poll-budget" in capsys.readouterr().err
    assert scenario_env.request_log == []

    budgets: list[float] = []
    real_run = pipeline.run_manifest

    def spy(*args: Any, **kwargs: Any) -> Any:
        budgets.append(args[2].poll.budget_per_job)
        return real_run(*args, **kwargs)

    monkeypatch.setattr(pipeline, "run_manifest", spy)  # the CLI imports it as it runs
    assert await _run_cli("run", str(manifest), "-q", "--poll-budget", "0.7") == 0
    assert budgets == [0.7]
