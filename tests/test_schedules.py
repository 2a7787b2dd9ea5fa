"""The schedule recipes in configs/schedules: well-formed, and their commands really run."""

from __future__ import annotations

import asyncio
import configparser
import shlex
from pathlib import Path

import pytest
import yaml

from batch.cli.main import build_parser, main
from batch.ledger.journal import load_state
from batch.simulator import Simulator
from tests.pipeline_helpers import write_images, write_manifest

LIMITS = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)]  # minute hour day month weekday
RECIPES = Path(__file__).resolve().parents[1] / "configs" / "schedules"


def _cron_commands() -> list[list[str]]:
    commands = []
    for line in (RECIPES / "crontab.example").read_text().splitlines():
        if not line.strip() or line.startswith("#") or "=" in line.split()[0]:
            continue
        fields = line.split(None, 5)
        assert len(fields) == 6, f"five time fields and a command: {line}"
        for field, (low, high) in zip(fields[:5], LIMITS, strict=True):
            assert field == "*" or low <= int(field) <= high, line
        commands.append(_scenario_args(fields[5]))
    return commands


def _scenario_args(shell: str) -> list[str]:
    """The arguments given to scenario-batch in a shell command line."""
    words = shlex.split(shell.replace("&&", " && ").replace(">>", " >> ").replace("||", " || "))
    start = next(i for i, w in enumerate(words) if w.endswith("scenario-batch")) + 1
    stops = [i for i, w in enumerate(words) if w in {"&&", ">>", "||", "2>&1"} and i > start]
    return words[start : min(stops, default=len(words))]


def _systemd_args() -> list[str]:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read(RECIPES / "scenario-batch.service")
    assert unit["Service"]["Type"] == "oneshot"
    timer = configparser.ConfigParser(strict=False, interpolation=None)
    timer.read(RECIPES / "scenario-batch.timer")
    assert timer["Timer"]["OnCalendar"] and timer["Install"]["WantedBy"] == "timers.target"
    return _scenario_args(unit["Service"]["ExecStart"])


def _kubernetes_args(name: str, index: int = 0) -> list[str]:
    document = yaml.safe_load((RECIPES / name).read_text())
    spec = document["spec"]
    pod = (spec["jobTemplate"]["spec"] if document["kind"] == "CronJob" else spec)["template"]
    container = pod["spec"]["containers"][0]
    assert pod["spec"]["restartPolicy"] == "Never"
    return [arg.replace("$(JOB_COMPLETION_INDEX)", str(index)) for arg in container["args"]]


def test_every_recipe_command_parses() -> None:
    """Each recipe's scenario-batch arguments are accepted by the real argument parser."""
    commands = [
        *_cron_commands(),
        _systemd_args(),
        _kubernetes_args("kubernetes-cronjob.yaml"),
        _kubernetes_args("kubernetes-indexed-job.yaml", 3),
    ]
    assert len(commands) >= 4
    for args in commands:
        parsed = build_parser().parse_args(args)
        assert parsed.command == "run"
        assert "{date}" in str(parsed.out) or parsed.shard


def test_kubernetes_recipes_fail_fast_on_exit_1_and_2() -> None:
    """Both Kubernetes recipes fail the job on exit 1/2 and retry other pod failures."""
    for name in ("kubernetes-cronjob.yaml", "kubernetes-indexed-job.yaml"):
        document = yaml.safe_load((RECIPES / name).read_text())
        text = yaml.safe_dump(document)
        assert "podFailurePolicy" in text and "values:\n" in text
    cron = yaml.safe_load((RECIPES / "kubernetes-cronjob.yaml").read_text())
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    indexed = yaml.safe_load((RECIPES / "kubernetes-indexed-job.yaml").read_text())
    assert indexed["spec"]["completionMode"] == "Indexed"


@pytest.mark.parametrize("source", ["cron", "systemd"])
async def test_recipe_command_runs_and_dates_its_directory(
    scenario_env: Simulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    source: str,
) -> None:
    """The exact arguments of the cron and systemd recipes run a nightly manifest to exit 0."""
    write_images(tmp_path / "images", 2)
    write_manifest(
        tmp_path,
        [{"prompt": f"nightly {n}", "referenceImages": [f"images/img{n:04d}.png"]} for n in (0, 1)],
    ).rename(tmp_path / "nightly.yaml")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SCENARIO_BATCH_DATE", "2026-11-25")
    args = _cron_commands()[0] if source == "cron" else _systemd_args()

    assert await asyncio.to_thread(main, args) == 0

    state = load_state(tmp_path / "out" / "2026-11-25")
    assert [r.state for r in state.items.values()] == ["succeeded", "succeeded"]


def test_timer_calendar_is_valid_for_systemd() -> None:
    """systemd itself accepts the timer's OnCalendar expression (where systemd-analyze exists)."""
    import shutil
    import subprocess

    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed")
    timer = configparser.ConfigParser(strict=False, interpolation=None)
    timer.read(RECIPES / "scenario-batch.timer")
    result = subprocess.run(
        [tool, "calendar", timer["Timer"]["OnCalendar"]],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Next elapse" in result.stdout
