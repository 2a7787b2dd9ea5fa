"""run --sample N: a stable sample of inputs, contained in larger ones, resumable, reused later."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from batch.cli.main import main
from batch.ledger.journal import load_state
from batch.manifest.load import Item, load_manifest
from batch.run.sample import sample_items
from batch.simulator import Simulator
from tests.pipeline_helpers import (
    assert_outputs_intact,
    jobs_created_per_prompt,
    run,
    write_images,
    write_manifest,
)
from tests.report_helpers import items_by_id

MODELS = ("model_a", "model_b", "model_c")


def _items(bases: list[str], models: int = 1) -> list[Item]:
    """One item per base id and model, ids suffixed per model when there are several."""
    return [
        Item(
            id=base if models == 1 else f"{base}-m{m}",
            prompt=f"prompt {base}",
            references=(),
            params={},
            fingerprint=f"fp-{base}-{m}",
            model=MODELS[m],
            base_id=base,
        )
        for base in bases
        for m in range(models)
    ]


_ids = st.lists(st.from_regex(r"[A-Za-z0-9._-]{1,20}", fullmatch=True), unique=True, max_size=60)


@given(_ids, st.integers(1, 70), st.integers(1, 70), st.integers(1, 3))
def test_a_larger_sample_contains_a_smaller_one(
    bases: list[str], small: int, large: int, models: int
) -> None:
    """For any ids and N <= M, sample(N) is inside sample(M), and N counts inputs."""
    small, large = min(small, large), max(small, large)
    items = _items(bases, models)
    few, more = sample_items(items, small), sample_items(items, large)
    assert {i.id for i in few} <= {i.id for i in more}
    assert len({i.base_id for i in few}) == min(small, len(bases))
    assert len(few) == models * min(small, len(bases))


@given(_ids, st.integers(1, 70), st.randoms(use_true_random=False))
def test_the_sample_does_not_depend_on_manifest_order(
    bases: list[str], size: int, shuffler: random.Random
) -> None:
    """The same inputs in another order give the same sample, kept in the given order."""
    items = _items(bases, 2)
    shuffled = list(items)
    shuffler.shuffle(shuffled)
    picked = sample_items(shuffled, size)
    assert {i.id for i in picked} == {i.id for i in sample_items(items, size)}
    assert picked == [i for i in shuffled if i in picked]


def test_every_model_of_a_sampled_input_comes_along() -> None:
    """With a models matrix, a sampled input brings its item for each model, never a part."""
    items = _items([f"photo-{n}" for n in range(50)], models=3)
    picked = sample_items(items, 7)
    per_base: dict[str, set[str]] = {}
    for item in picked:
        per_base.setdefault(item.base_id, set()).add(item.model)
    assert len(per_base) == 7 and all(models == set(MODELS) for models in per_base.values())


def test_the_sample_is_pinned_across_processes_and_versions() -> None:
    """Pinned figures: the rank is sha256 of the base id, not Python's per-process str hash."""
    items = _items([f"item-{n}" for n in range(100)])
    assert [i.id for i in sample_items(items, 3)] == ["item-59", "item-73", "item-94"]


def _manifest(folder: Path, count: int) -> Path:
    """`count` items over 4 reference images, output into folder/out."""
    images = write_images(folder / "images", 4)
    jobs = [
        {
            "id": f"item-{n}",
            "prompt": f"sample {n}",
            "referenceImages": [str(images[n % 4].relative_to(folder))],
        }
        for n in range(count)
    ]
    return write_manifest(folder, jobs, output="out")


async def test_a_sample_then_the_full_run_pays_for_each_item_once(
    simulator: Simulator, tmp_path: Path
) -> None:
    """--sample 3 runs the predicted 3 items; a rerun spends nothing; the full run only the rest."""
    manifest = _manifest(tmp_path, 10)
    out = tmp_path / "out"
    predicted = {i.id for i in sample_items(load_manifest(manifest).items, 3)}

    first = await run(simulator, manifest, out, sample=3)
    assert (first.total, first.succeeded, first.submitted, first.removed) == (3, 3, 3, [])
    assert set(load_state(out).items) == predicted

    again = await run(simulator, manifest, out, sample=3)
    assert (again.succeeded, again.skipped, again.submitted) == (3, 3, 0)

    full = await run(simulator, manifest, out)
    assert (full.total, full.succeeded, full.skipped, full.submitted) == (10, 10, 3, 7)
    per_prompt = jobs_created_per_prompt(simulator)
    assert len(per_prompt) == 10 and set(per_prompt.values()) == {1}
    assert assert_outputs_intact(out) == 10


async def test_a_stopped_sample_resumes_with_the_sample_only(
    simulator: Simulator, tmp_path: Path
) -> None:
    """A sample run stopped by its budget resumes the same sample: its rest, nothing else."""
    manifest = _manifest(tmp_path, 12)
    out = tmp_path / "out"
    predicted = {i.id for i in sample_items(load_manifest(manifest).items, 4)}

    stopped = await run(simulator, manifest, out, sample=4, max_cost=6, concurrency=1)
    assert stopped.exit_code == 1 and stopped.succeeded == 1

    resumed = await run(simulator, manifest, out, sample=4)
    assert (resumed.succeeded, resumed.skipped, resumed.submitted) == (4, 1, 3)
    assert set(load_state(out).items) == predicted
    assert set(jobs_created_per_prompt(simulator).values()) == {1}


async def test_dry_run_prices_only_the_sample(
    scenario_env: Simulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--dry-run --sample 2 over 9 items prices 2 items, submits nothing, writes no ledger."""
    manifest = _manifest(tmp_path, 9)
    code = await asyncio.to_thread(main, ["run", str(manifest), "--dry-run", "--sample", "2"])
    assert code == 0
    out = capsys.readouterr().out
    assert "2 item(s) of a sample of 2 input(s)" in out and "10 compute units" in out
    assert not scenario_env.jobs
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value", ["0", "-3", "many"])
def test_a_sample_must_be_a_positive_count(
    value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--sample 0, a negative or a non-number is a usage error (exit 2) before anything runs."""
    with pytest.raises(SystemExit) as exit_info:
        main(["run", str(tmp_path / "m.yaml"), "--sample", value])
    assert exit_info.value.code == 2
    assert "--sample" in capsys.readouterr().err


async def test_a_two_model_sample_then_the_whole_matrix(
    scenario_env: Simulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`models: [a, b]` with --sample 2: 2 inputs x 2 models priced and run, compared side by
    side in the report; the full run then pays only for the other inputs."""
    write_images(tmp_path / "images", 6)
    kontext, qwen = "model_flux-kontext-editing", "model_qwen-image-edit"
    manifest = write_manifest(
        tmp_path,
        [{"id": "snow", "prompt": "Make it snow", "images": "images"}],
        models=[kontext, qwen],
        output="out",
    )
    cli = ["run", str(manifest), "-q"]
    assert await asyncio.to_thread(main, [*cli, "--sample", "2", "--dry-run"]) == 0
    dry = capsys.readouterr().out
    assert f"{kontext}: 2 item(s), 10 CU" in dry and f"{qwen}: 2 item(s), 6 CU" in dry
    assert not scenario_env.jobs

    assert await asyncio.to_thread(main, [*cli, "--sample", "2"]) == 0
    state = load_state(tmp_path / "out")
    bases = {item_id.split("--")[0] for item_id in state.items}
    assert len(state.items) == 4 and len(bases) == 2
    assert {(i.split("--")[0], r.model) for i, r in state.items.items()} == {
        (base, model) for base in bases for model in (kontext, qwen)
    }
    page = items_by_id((tmp_path / "out" / "report.html").read_text())
    ran = [entry for entry in page.values() if entry["state"] != "not started"]
    assert [entry["base"] for entry in list(page.values())[:4]] == [e["base"] for e in ran]
    assert {entry["base"] for entry in ran} == bases and len(page) == 12

    assert await asyncio.to_thread(main, cli) == 0
    created = [r.path for r in scenario_env.generate_calls() if r.status == 200]
    assert sorted(created) == sorted(
        [f"/v1/generate/custom/{kontext}"] * 6 + [f"/v1/generate/custom/{qwen}"] * 6
    )
    assert assert_outputs_intact(tmp_path / "out") == 12
