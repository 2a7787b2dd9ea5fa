"""Any Scenario model: declarations fetched once and cached, manifests checked against them,
`models:` matrices, and runs of models other than kontext against the simulator."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from batch.cli.main import main
from batch.errors import ManifestError
from batch.ledger.journal import load_state
from batch.manifest.load import Manifest, load_manifest
from batch.models.catalog import ModelCatalog, api_fetcher
from batch.models.inputs import parse_model
from batch.simulator import Simulator
from batch.simulator.models import INPUTS, QWEN, SEEDREAM, model_json, validate_declared
from tests.pipeline_helpers import (
    api_records,
    assert_outputs_intact,
    ledger_lines,
    settings_for,
    write_images,
)

KONTEXT = "model_flux-kontext-editing"
EXAMPLE = Path(__file__).resolve().parents[1] / "configs" / "compare-models.yaml"


def write(folder: Path, manifest: dict[str, Any]) -> Path:
    path = folder / "m.yaml"
    path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    return path


def catalog(sim: Simulator, cache: Path, **options: Any) -> ModelCatalog:
    return ModelCatalog(
        cache_dir=cache, base_url=sim.base_url, fetch=api_fetcher(settings_for(sim)), **options
    )


async def load(path: Path, models: ModelCatalog | None = None) -> Manifest:
    """load_manifest in a thread: a fetch runs its own loop while the simulator serves here."""
    return await asyncio.to_thread(load_manifest, path, models=models)


def model_gets(sim: Simulator) -> list[str]:
    return [r.path for r in api_records(sim) if r.path.startswith("/v1/models/")]


def posts(sim: Simulator) -> list[str]:
    return [r.path for r in api_records(sim) if r.method == "POST"]


@pytest.fixture
def images(tmp_path: Path) -> Path:
    write_images(tmp_path / "images", 3)
    return tmp_path / "images"


async def test_declarations_are_fetched_once_then_cached(
    simulator: Simulator, tmp_path: Path, images: Path
) -> None:
    """Another model's inputs cost one GET; later loads (offline too) read the cache."""
    path = write(
        tmp_path,
        {"model": QWEN, "jobs": [{"prompt": "p", "image": "images/img0000.png", "strength": 0.5}]},
    )
    first = catalog(simulator, tmp_path / "cache")
    manifest = await load(path, first)
    assert first.fetched == [QWEN] and model_gets(simulator) == [f"/v1/models/{QWEN}"]
    assert manifest.items[0].model == QWEN and manifest.models == (QWEN,)
    again = catalog(simulator, tmp_path / "cache")
    await load(path, again)
    offline = ModelCatalog(cache_dir=tmp_path / "cache", base_url=simulator.base_url)
    await load(path, offline)
    assert again.fetched == [] and len(model_gets(simulator)) == 1


async def test_cache_is_refreshed_after_a_day_and_on_demand(
    simulator: Simulator, tmp_path: Path, images: Path
) -> None:
    """A cached declaration older than a day, or --refresh-models, is fetched again."""
    path = write(tmp_path, {"model": QWEN, "jobs": [{"prompt": "p", "image": "asset_a"}]})
    await load(path, catalog(simulator, tmp_path / "c"))
    later = catalog(simulator, tmp_path / "c", clock=lambda: time.time() + 86_401)
    await load(path, later)
    refreshed = catalog(simulator, tmp_path / "c", refresh=True)
    await load(path, refreshed)
    assert later.fetched == [QWEN] and refreshed.fetched == [QWEN]
    kontext = catalog(simulator, tmp_path / "c", refresh=True)
    await asyncio.to_thread(kontext.resolve, [KONTEXT])  # the shipped model too, on demand
    assert kontext.fetched == [KONTEXT] and len(model_gets(simulator)) == 4


async def test_stale_cache_serves_when_the_api_cannot_be_reached(
    simulator: Simulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A day-old declaration is used, with a warning, when fetching it again fails."""
    path = write(tmp_path, {"model": QWEN, "jobs": [{"prompt": "p", "image": "asset_a"}]})
    await load(path, catalog(simulator, tmp_path / "c"))

    def unreachable(ids: list[str], project: str | None) -> dict[str, Any]:
        raise OSError("connection refused")

    stale = ModelCatalog(
        cache_dir=tmp_path / "c",
        base_url=simulator.base_url,
        fetch=unreachable,
        clock=lambda: time.time() + 90_000,
    )
    assert (await load(path, stale)).items[0].model == QWEN
    assert "using the last known inputs" in caplog.text


def test_kontext_manifest_validates_with_no_network(
    tmp_path: Path,
    images: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`validate` of a kontext manifest opens no socket, credentials set or not."""
    path = write(
        tmp_path,
        {
            "models": [KONTEXT],
            "jobs": [{"prompt": "p", "referenceImages": ["images/img0000.png"], "seed": 3}],
        },
    )
    monkeypatch.setenv("SCENARIO_BASE_URL", "https://api.example.invalid/v1")
    monkeypatch.setenv("SCENARIO_SDK_API_KEY", "k")
    monkeypatch.setenv("SCENARIO_SDK_API_SECRET", "s")

    def no_network(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("validate opened a connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    assert main(["validate", str(path)]) == 0
    assert "ok, 1 items" in capsys.readouterr().out


async def test_cached_model_validates_offline_from_the_cli(
    simulator: Simulator,
    tmp_path: Path,
    images: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Once fetched, a model's manifest validates without credentials; uncached, it says why."""
    path = write(tmp_path, {"model": SEEDREAM, "jobs": [{"prompt": "p", "images": "images"}]})
    monkeypatch.setenv("SCENARIO_BASE_URL", simulator.base_url)
    monkeypatch.delenv("SCENARIO_SDK_API_KEY", raising=False)
    monkeypatch.delenv("SCENARIO_SDK_API_SECRET", raising=False)
    assert await asyncio.to_thread(main, ["validate", str(path)]) == 2
    assert f"{path}:1 model: the inputs of model '{SEEDREAM}' are not cached" in (
        capsys.readouterr().err
    )
    monkeypatch.setenv("SCENARIO_SDK_API_KEY", "k")
    monkeypatch.setenv("SCENARIO_SDK_API_SECRET", "s")
    assert await asyncio.to_thread(main, ["validate", str(path)]) == 0
    monkeypatch.delenv("SCENARIO_SDK_API_KEY")
    before = len(api_records(simulator))
    assert await asyncio.to_thread(main, ["validate", str(path)]) == 0
    assert "ok, 3 items" in capsys.readouterr().out and len(api_records(simulator)) == before


async def test_unknown_model_is_exit_2_naming_it(
    scenario_env: Simulator, tmp_path: Path, images: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A model the API does not know (404) is named with file:line, item and field."""
    path = write(
        tmp_path,
        {
            "output": "out",
            "jobs": [
                {"id": "ok", "prompt": "p", "referenceImages": ["asset_a"]},
                {"id": "cat", "model": "model_nope", "prompt": "p", "image": "asset_a"},
            ],
        },
    )
    assert await asyncio.to_thread(main, ["run", str(path)]) == 2
    error = capsys.readouterr().err
    assert (
        f"{path}:8 jobs[1] (cat).model: unknown model 'model_nope' (the API answered 404)" in error
    )
    assert posts(scenario_env) == [] and model_gets(scenario_env) == ["/v1/models/model_nope"]


_Q = (QWEN, {"image": "images/img0000.png"})
_S = (SEEDREAM, {"sourceImages": ["images/img0000.png"]})
BAD_PARAMETERS = [
    (_Q, "{promt: x}", "jobs[0] (j).promt", "unknown key 'promt'; did you mean 'prompt'?"),
    (_Q, "{strength: 2}", "jobs[0] (j).strength", "must be 0.0-1.0, got 2"),
    (_Q, "{strength: 'high'}", "jobs[0] (j).strength", "must be 0.0-1.0, got 'high'"),
    (_Q, "{numOutputs: 3}", "jobs[0] (j).numOutputs", "must be an integer 1-2, got 3"),
    (_Q, "{seed: 1.5}", "jobs[0] (j).seed", "must be an integer 0-2147483647, got 1.5"),
    (_Q, "{prompt: 'xxx'}", None, None),  # valid: a control
    (_Q, "{negativePrompt: blurry}", "jobs[0] (j)", "missing key 'cfgScale', required when"),
    (_Q, "{prompt: null}", "jobs[0] (j)", "missing required key 'prompt'"),
    (_Q, "{image: [asset_a]}", "jobs[0] (j).image", "must be one image"),
    (_Q, "{image: 'http://x.com/a.png'}", "jobs[0] (j).image", "plain http is refused"),
    (_Q, "{image: null}", "jobs[0] (j)", "needs image (an image to edit), got none"),
    (_S, "{style: oil}", "jobs[0] (j).style", "must be one of none, watercolor, sketch"),
    (_S, "{style: sketch}", "jobs[0] (j)", "missing key 'styleStrength', required when style"),
    (_S, "{prompt: " + "x" * 4001 + "}", "jobs[0] (j).prompt", "got 4,001 characters"),
    (_S, "{sourceImages: [a, b, c, d]}", "jobs[0] (j).sourceImages", "a list of 1-3 images"),
    (_S, "{tags: [a, b, c, d, e, f]}", "jobs[0] (j).tags", "a list of <= 5 strings"),
    (_S, "{tags: [a, 7]}", "jobs[0] (j).tags[1]", "must be a string, got 7"),
    (_S, "{enhancePrompt: 1}", "jobs[0] (j).enhancePrompt", "must be true or false, got 1"),
]


@pytest.mark.parametrize(("model", "override", "where", "message"), BAD_PARAMETERS)
async def test_bad_parameters_are_exit_2_and_nothing_spent(
    scenario_env: Simulator,
    tmp_path: Path,
    images: Path,
    capsys: pytest.CaptureFixture[str],
    model: tuple[str, dict[str, Any]],
    override: str,
    where: str | None,
    message: str | None,
) -> None:
    """Each rule of a declared input is checked before anything is sent: exit 2, no POST."""
    model_id, image = model
    job = {"id": "j", "prompt": "p", **image, **yaml.safe_load(override)}
    path = write(tmp_path, {"model": model_id, "output": "out", "jobs": [job]})
    code = await asyncio.to_thread(main, ["run", str(path), "-q"])
    error = capsys.readouterr().err
    if where is None:
        assert code == 0 and len(scenario_env.jobs) == 1
        return
    assert code == 2 and f" {where}: " in error and message in error, error
    assert posts(scenario_env) == [] and not scenario_env.jobs


async def test_every_problem_at_once_for_a_multi_image_model(
    simulator: Simulator, tmp_path: Path, images: Path
) -> None:
    """seedream: list size, string_array, conditional required and typos, all reported."""
    path = write(
        tmp_path,
        {
            "model": SEEDREAM,
            "defaults": {"style": "watercolor"},
            "jobs": [
                {"id": "a", "prompt": "p", "sourceImages": ["asset_a"] * 4},
                {"id": "b", "prompt": "p", "sourceImages": ["asset_a"], "tags": ["x"] * 6},
                {"id": "c", "prompt": "p", "sourceImages": ["asset_a"]},
                {"id": "d", "prompt": "p", "sourceImages": ["asset_a"], "stile": "sketch"},
                {"id": "e", "prompt": "p", "sourceImages": ["asset_a"], "enhancePrompt": "yes"},
                {"id": "f", "prompt": "p", "images": "images", "styleStrength": 0.5},
            ],
        },
    )
    with pytest.raises(ManifestError) as info:
        await load(path, catalog(simulator, tmp_path / "c"))
    found = [(p.where, p.message) for p in info.value.problems]
    assert found == [
        (
            "jobs[0] (a).sourceImages",
            "must be a list of 1-3 images (local paths, asset ids or https "
            "URLs), got a list of 4 entries",
        ),
        ("jobs[1] (b).tags", "must be a list of <= 5 strings, got a list of 6 entries"),
        ("jobs[2] (c)", "missing key 'styleStrength', required when style is 'watercolor'"),
        ("jobs[3] (d).stile", "unknown key 'stile'; did you mean 'style'?"),
        ("jobs[4] (e).enhancePrompt", "must be true or false, got 'yes'"),
    ]


async def test_bulk_images_feed_each_models_image_input(
    simulator: Simulator, tmp_path: Path, images: Path
) -> None:
    """`images:` feeds a single `file` input or is prepended to a `file_array`; limits hold."""
    path = write(
        tmp_path,
        {
            "jobs": [
                {"id": "q", "model": QWEN, "prompt": "p", "images": "images"},
                {
                    "id": "s",
                    "model": SEEDREAM,
                    "prompt": "p",
                    "images": "images",
                    "style": "none",
                },
            ]
        },
    )
    manifest = await load(path, catalog(simulator, tmp_path / "c"))
    qwen, seedream = manifest.items[0], manifest.items[3]
    assert qwen.generate_body(["asset_1"]) == {"image": "asset_1", "prompt": "p"}
    assert seedream.generate_body(["asset_1"]) == {
        "sourceImages": ["asset_1"],
        "prompt": "p",
        "style": "none",
    }
    clash = write(
        tmp_path, {"model": QWEN, "jobs": [{"prompt": "p", "images": "images", "image": "asset_a"}]}
    )
    with pytest.raises(ManifestError, match="images: feeds image, which takes one image"):
        await load(clash, catalog(simulator, tmp_path / "c"))


async def test_models_matrix_ids_and_per_model_parameters(
    simulator: Simulator, tmp_path: Path, images: Path
) -> None:
    """`models:` runs each item on each model: ids `<base>--<model>`, stable and distinct,
    base_id shared; per-model parameters apply to their model only."""
    manifest_data: dict[str, Any] = {
        "models": {KONTEXT: {"guidanceScale": 5}, QWEN: {"strength": 0.4}},
        "defaults": {"seed": 7},
        "jobs": [
            {"id": "cat", "prompt": "Make it blue", "images": "images"},
            {"prompt": "Make it red", "images": "images/img0000.png"},
            {"id": "solo", "model": QWEN, "prompt": "x", "image": "asset_a"},
        ],
    }
    path = write(tmp_path, manifest_data)
    manifest = await load(path, catalog(simulator, tmp_path / "c"))
    ids = [item.id for item in manifest.items]
    assert ids[:6] == [
        f"cat-img000{n}--{tag}"
        for n in range(3)
        for tag in ("flux-kontext-editing", "qwen-image-edit")
    ]
    derived = manifest.items[6:8]
    assert derived[0].base_id == derived[1].base_id and derived[0].id != derived[1].id
    assert [i.id.removeprefix(i.base_id) for i in derived] == [
        "--flux-kontext-editing",
        "--qwen-image-edit",
    ]
    assert manifest.items[-1].id == "solo" and manifest.items[-1].base_id == "solo"
    kontext, qwen = manifest.items[0], manifest.items[1]
    assert (kontext.model, kontext.base_id, dict(kontext.params)) == (
        KONTEXT,
        "cat-img0000",
        {"seed": 7, "guidanceScale": 5.0},
    )
    assert (qwen.model, dict(qwen.params)) == (QWEN, {"seed": 7, "strength": 0.4})
    assert len({i.id.lower() for i in manifest.items}) == len(manifest.items)
    assert all(len(i.id) <= 128 for i in manifest.items)
    assert manifest.models == (KONTEXT, QWEN)
    again = await load(path, catalog(simulator, tmp_path / "c"))
    assert [(i.id, i.fingerprint) for i in again.items] == [
        (i.id, i.fingerprint) for i in manifest.items
    ]
    narrowed = write(tmp_path, {**manifest_data, "models": {QWEN: {"strength": 0.4}}})
    kept = await load(narrowed, catalog(simulator, tmp_path / "c"))
    assert [(i.id, i.fingerprint) for i in kept.items[:3]] == [
        (i.id, i.fingerprint) for i in manifest.items[1:6:2]
    ]


async def test_shared_parameter_unknown_to_one_model_is_located(
    simulator: Simulator, tmp_path: Path
) -> None:
    """A default one model of the matrix lacks is an error at the default, naming the model."""
    path = write(
        tmp_path,
        {
            "models": [KONTEXT, QWEN],
            "defaults": {"quality": "high"},
            "jobs": [{"id": "a", "prompt": "p", "images": "images"}],
        },
    )
    write_images(tmp_path / "images", 1)
    with pytest.raises(ManifestError) as info:
        await load(path, catalog(simulator, tmp_path / "c"))
    (problem,) = info.value.problems
    assert problem.where == "defaults.quality" and f"not an input of {QWEN}" in problem.message


async def test_a_non_kontext_model_runs_end_to_end(
    scenario_env: Simulator, tmp_path: Path, images: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """seedream: local files under its own input name, uploaded once by content; bodies hold
    only declared keys; outputs land; the ledger's planned records name the model."""
    (tmp_path / "copy.png").write_bytes((images / "img0000.png").read_bytes())
    path = write(
        tmp_path,
        {
            "model": SEEDREAM,
            "output": "out",
            "jobs": [
                {"id": "a", "prompt": "p1", "sourceImages": ["images/img0000.png", "copy.png"]},
                {"id": "b", "prompt": "p2", "sourceImages": ["images/img0001.png"], "tags": ["t"]},
            ],
        },
    )
    assert await asyncio.to_thread(main, ["run", str(path), "-q"]) == 0
    bodies = [r.body for r in scenario_env.generate_calls() if r.status == 200]
    declared = {spec["name"] for spec in INPUTS[SEEDREAM]}
    assert len(bodies) == 2 and all(isinstance(b, dict) and set(b) <= declared for b in bodies)
    first = next(b for b in bodies if isinstance(b, dict) and b["prompt"] == "p1")
    assert len(first["sourceImages"]) == 2
    assert first["sourceImages"][0] == first["sourceImages"][1]
    uploads = [r for r in api_records(scenario_env) if r.path == "/v1/assets"]
    assert len(uploads) == 2  # three paths, two distinct contents
    out = tmp_path / "out"
    assert assert_outputs_intact(out) == 2
    planned = [r for r in ledger_lines(out) if r.get("state") == "planned"]
    assert {r["model"] for r in planned} == {SEEDREAM}


async def test_two_model_matrix_runs_and_resumes(
    scenario_env: Simulator, tmp_path: Path, images: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A two-model matrix makes one job per item and model, prices per model in a dry run,
    a rerun pays for nothing, and status sums each model."""
    path = write(
        tmp_path,
        {
            "models": [KONTEXT, QWEN],
            "output": "out",
            "jobs": [{"id": "edit", "prompt": "Make it snow", "images": "images"}],
        },
    )
    assert await asyncio.to_thread(main, ["run", str(path), "--dry-run"]) == 0
    dry = capsys.readouterr().out
    assert f"{KONTEXT}: 3 item(s), 15 CU" in dry and f"{QWEN}: 3 item(s), 9 CU" in dry
    assert await asyncio.to_thread(main, ["run", str(path), "-q"]) == 0
    created = [r.path for r in scenario_env.generate_calls() if r.status == 200]
    assert sorted(created) == sorted(
        [f"/v1/generate/custom/{KONTEXT}"] * 3 + [f"/v1/generate/custom/{QWEN}"] * 3
    )
    state = load_state(tmp_path / "out")
    assert {r.model for r in state.items.values()} == {KONTEXT, QWEN}
    assert assert_outputs_intact(tmp_path / "out") == 6
    assert await asyncio.to_thread(main, ["run", str(path), "-q"]) == 0
    assert len([r for r in scenario_env.generate_calls() if r.status == 200]) == 6
    assert "6/6 succeeded" in capsys.readouterr().out
    assert main(["status", str(tmp_path / "out")]) == 0
    status = capsys.readouterr().out
    assert f"{KONTEXT}: 3 succeeded; 15 compute units" in status
    assert f"{QWEN}: 3 succeeded; 9 compute units" in status


def test_old_ledger_without_model_loads(tmp_path: Path) -> None:
    """A ledger written before `models:` existed loads; its items have no model recorded."""
    lines = [
        {"ts": "2026-01-01T00:00:00Z", "type": "item", "id": "a", "fp": "f", "state": "planned"},
        {"ts": "2026-01-01T00:00:01Z", "type": "item", "id": "a", "fp": "f", "state": "failed"},
    ]
    (tmp_path / "ledger.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    record = load_state(tmp_path).items["a"]
    assert (record.state, record.model) == ("failed", None)


class _SimulatorDeclarations:
    """The simulator's declarations, read as the API would serve them (no network)."""

    def resolve(self, model_ids: Any, project_id: str | None = None) -> dict[str, Any]:
        return {
            m: parse_model({"model": model_json(m, "2025-01-01T00:00:00Z")}, m) for m in model_ids
        }


_VALUES = st.one_of(
    st.none(),
    st.none(),
    st.sampled_from([0.5, 1, 2, 4, 0.0, 1.0, "none", ["a"]]),
    st.booleans(),
    st.integers(-5, 30),
    st.floats(-2, 25, allow_nan=False),
    st.sampled_from(["", "blurry", "x" * 2_001, "watercolor", "sketch", "none"]),
    st.lists(st.sampled_from(["a", "b", 1]), max_size=6),
)
_QWEN_KEYS = ["negativePrompt", "cfgScale", "strength", "numOutputs", "seed"]
_SEEDREAM_KEYS = ["style", "styleStrength", "enhancePrompt", "tags", "seed"]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    model=st.sampled_from([QWEN, SEEDREAM]),
    values=st.lists(_VALUES, min_size=5, max_size=5),
)
def test_manifest_accepts_exactly_what_the_api_accepts(
    tmp_path: Path, model: str, values: list[Any]
) -> None:
    """For random parameter values, validation passes exactly when the simulator (checking
    the same declaration its own way) would accept the generate body."""
    keys = _QWEN_KEYS if model == QWEN else _SEEDREAM_KEYS
    image = {"image": "asset_a"} if model == QWEN else {"sourceImages": ["asset_a"]}
    job = {"prompt": "p", **image, **dict(zip(keys, values, strict=True))}
    path = write(tmp_path, {"model": model, "jobs": [job]})
    try:
        item = load_manifest(path, models=_SimulatorDeclarations()).items[0]
    except ManifestError:
        accepted = False
    else:
        accepted = True
        body = item.generate_body(["asset_a"])
        assert set(body) <= {spec["name"] for spec in INPUTS[model]}
    sent = {k: v for k, v in job.items() if v is not None}
    _, problems = validate_declared(model, sent, lambda asset_id: True)
    assert accepted == (not problems), problems
    event("accepted" if accepted else "refused")


async def test_the_shipped_comparison_example_validates(
    simulator: Simulator, tmp_path: Path
) -> None:
    """configs/compare-models.yaml is valid against the simulator's models: 3 images x 2."""
    manifest = await load(EXAMPLE, catalog(simulator, tmp_path / "c"))
    assert len(manifest.items) == 6 and manifest.models == (KONTEXT, QWEN)
    assert manifest.items[1].id == "snow-apple--qwen-image-edit"


class _Declared:
    """A model declared inline (no network), as the API would declare it."""

    def __init__(self, model_id: str, inputs: list[dict[str, Any]]) -> None:
        self.spec = parse_model({"model": {"id": model_id, "inputs": inputs}}, model_id)

    def resolve(self, model_ids: Any, project_id: str | None = None) -> dict[str, Any]:
        return {m: self.spec if m == self.spec.model_id else f"unknown {m}" for m in model_ids}


def test_an_input_named_like_a_manifest_key_goes_in_a_per_model_mapping(tmp_path: Path) -> None:
    """A model whose image input is called `images` takes it from `models: {m: {images: ...}}`;
    in the job, `images:` stays the bulk form and feeds that same input."""
    source = _Declared(
        "model_x",
        [
            {"name": "images", "type": "file_array", "max": 2, "required": {"always": True}},
            {"name": "prompt", "type": "string"},
        ],
    )
    write_images(tmp_path / "pics", 2)
    path = write(
        tmp_path,
        {
            "models": {"model_x": {"images": ["asset_a"]}},
            "jobs": [{"id": "j", "prompt": "p"}, {"id": "b", "prompt": "p", "images": "pics"}],
        },
    )
    items = load_manifest(path, models=source).items
    assert items[0].generate_body(["asset_a"]) == {"images": ["asset_a"], "prompt": "p"}
    assert [i.id for i in items] == ["j--x", "b-img0000--x", "b-img0001--x"]
    assert items[1].generate_body(["asset_1", "asset_a"]) == {
        "images": ["asset_1", "asset_a"],
        "prompt": "p",
    }


def test_local_files_are_held_to_the_declared_max_size(tmp_path: Path) -> None:
    """A local file over a file input's `maxSize` is refused before any upload, given
    directly or through `images:`."""
    source = _Declared(
        "model_small",
        [{"name": "image", "type": "file", "maxSize": 100, "required": {"always": True}}],
    )
    pictures = write_images(tmp_path / "pics", 1, size=(64, 64))
    assert pictures[0].stat().st_size > 100
    for job in ({"image": "pics/img0000.png"}, {"images": "pics"}):
        path = write(tmp_path, {"model": "model_small", "jobs": [{"id": "j", **job}]})
        with pytest.raises(ManifestError, match="takes files of at most 100 bytes"):
            load_manifest(path, models=source)
    path = write(tmp_path, {"model": "model_small", "jobs": [{"id": "j", "image": "asset_a"}]})
    assert load_manifest(path, models=source).items[0].references[0].kind == "asset"


def test_fingerprint_survives_a_reordered_declaration(tmp_path: Path) -> None:
    """Which image goes to which input is part of an item's inputs; the order the model
    declares its inputs in is not (a resume after such a change pays nothing again)."""
    image = {"name": "image", "type": "file", "required": {"always": True}}
    mask = {"name": "mask", "type": "file"}
    prompt = {"name": "prompt", "type": "string"}
    job = {"id": "j", "prompt": "p", "image": "asset_a", "mask": "asset_b"}
    path = write(tmp_path, {"model": "model_m", "jobs": [job]})
    first = load_manifest(path, models=_Declared("model_m", [image, mask, prompt])).items[0]
    second = load_manifest(path, models=_Declared("model_m", [prompt, mask, image])).items[0]
    assert first.fingerprint == second.fingerprint
    assert first.generate_body(["asset_a", "asset_b"]) == second.generate_body(
        ["asset_b", "asset_a"]
    )
    swapped = write(
        tmp_path, {"model": "model_m", "jobs": [{**job, "mask": "asset_a", "image": "asset_b"}]}
    )
    third = load_manifest(swapped, models=_Declared("model_m", [image, mask, prompt])).items[0]
    assert third.fingerprint != first.fingerprint
