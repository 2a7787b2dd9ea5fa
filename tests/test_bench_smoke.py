"""The benchmark machinery on a handful of jobs, so that `bench/` does not rot (no targets)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from bench.clients import ClientResult
from bench.fsprobe import durable_output_cpu_us, file_create_cpu_us
from bench.measure import Config, Outcome, run_config
from bench.scale import ledger_load, manifest_validate
from bench.simalone import first_wave
from bench.simproc import SimStats

pytestmark = [pytest.mark.timeout(60), pytest.mark.filterwarnings("ignore::DeprecationWarning")]


@pytest.mark.parametrize("kind", ["pipeline", "sdk", "floor"])
def test_bench_runs_every_client(kind: str, tmp_path: Path) -> None:
    """Each client finishes every job against the simulator process; figures are filled in."""
    outcome = run_config(Config("smoke", 4, 0.2, 4), kind, tmp_path)
    assert outcome.ok, outcome.client.error
    assert outcome.sim.count("upload") == 4 and outcome.sim.count("submit") == 4
    assert len(outcome.client.done) == 4 and outcome.client.cpu_s > 0
    assert 0 <= outcome.client.sys_s <= outcome.client.cpu_s
    outputs = sorted(p.name for p in tmp_path.glob("bench-smoke-*/out/*.png"))
    assert len(outputs) == 4, outputs
    added_s, _ = outcome.added_latency()
    assert added_s >= 0
    stages = outcome.stage_means_ms()
    if kind == "pipeline":  # where its added latency goes, stage by stage
        assert list(stages) == ["seen", "urls", "download", "settled", "recorded"], stages
        assert stages["seen"] > 0 and stages["settled"] > 0, stages
    else:
        assert stages == {}


def test_wall_floor_is_list_scheduling_of_the_jobs_own_durations() -> None:
    """The floor a lossless client reaches: equal jobs filling every slot make 1.0; one
    job more than the slots needs a second round; a long job sent last sets the wall."""

    def floor(durations: list[float], concurrency: int) -> float:
        jobs = {f"job_{n}": (float(n), d) for n, d in enumerate(durations)}
        mean = sum(durations) / len(durations)
        config = Config("floor", len(durations), mean, concurrency)
        return Outcome(config, ClientResult("pipeline"), SimStats(jobs=jobs), 0.0).wall_floor_ratio

    assert floor([2.0] * 8, 4) == pytest.approx(1.0)
    assert floor([2.0] * 5, 4) == pytest.approx(4 / 2.5)  # 4 s against 5 x 2 / 4
    # Slots free at 1, 1, 2: the last job (3 s) starts at 1 and ends at 4.
    assert floor([1.0, 1.0, 2.0, 3.0], 3) == pytest.approx(4 / (7 / 3))


def test_startup_floor_starts_each_slot_when_the_simulator_created_its_first_job() -> None:
    """With the first wave's creation times, a slot starts late by its own offset: two
    slots first free at 0.5 and 1.0 s carry 2 s jobs to 4.5 and 5.0 s."""
    jobs = {f"job_{n}": (float(n), 2.0) for n in range(4)}
    config = Config("floor", 4, 2.0, 2)
    outcome = Outcome(config, ClientResult("pipeline"), SimStats(jobs=jobs), 0.0)
    assert math.isnan(outcome.wall_startup_floor_ratio)  # not measured
    outcome.first_wave = [1.0, 0.5]
    assert outcome.wall_startup_floor_ratio == pytest.approx(5.0 / 4.0)
    assert outcome.wall_floor_ratio == pytest.approx(1.0)


def test_first_wave_is_measured_on_the_simulator() -> None:
    """A bare client's first wave: one creation per slot, in order, after its start."""
    offsets = first_wave(3, {"job_latency_s": 0.2}, attempts=1)
    assert len(offsets) == 3 and offsets == sorted(offsets)
    assert 0 < offsets[0] < 5


def test_file_create_probe(tmp_path: Path) -> None:
    """The probe creates its files (and leaves them: deleting would tax later creations)."""
    cost = file_create_cpu_us(tmp_path, files=20)
    assert cost >= 0
    (probe,) = tmp_path.glob("fsprobe-*")
    assert len(list(probe.iterdir())) == 20


def test_bench_scale_figures(tmp_path: Path) -> None:
    """The scale helpers validate a bulk manifest and replay a synthetic ledger in a child."""
    assert manifest_validate(tmp_path / "m", 5, 2).count == 10
    assert ledger_load(tmp_path / "l", 20).count == 20
    killed = ledger_load(tmp_path / "k", 20, killed=True)
    assert killed.count == 20
    assert "killed run" in killed.what


def test_durable_output_probe(tmp_path: Path) -> None:
    """Every probe file lands under its final name; no temp file is left."""
    cost = durable_output_cpu_us(tmp_path, files=10, per_directory_sync=4)
    assert cost > 0
    (probe,) = tmp_path.glob("fsprobe-durable-*")
    assert sorted(p.name for p in probe.iterdir()) == [f"f{i:04d}.png" for i in range(10)]
