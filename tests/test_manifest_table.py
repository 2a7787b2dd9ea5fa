"""Tables as a bulk form: CSV, TSV and JSONL rows become items exactly as YAML jobs would,
and every bad row is reported at once as `edits.csv:17 column guidanceScale: ...`."""

from __future__ import annotations

import asyncio
import csv
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batch.cli.main import main
from batch.errors import ManifestError
from batch.manifest.load import Item, load_manifest
from batch.models.catalog import ModelCatalog, api_fetcher
from batch.simulator import Simulator
from batch.simulator.models import QWEN, SEEDREAM
from tests.pipeline_helpers import settings_for, write_images

COLUMNS = ["id", "prompt", "referenceImages", "guidanceScale", "seed", "loras", "lorasScale"]


def _manifest(folder: Path, jobs: list[dict[str, Any]], **top: Any) -> Path:
    path = folder / "manifest.yaml"
    path.write_text(yaml.safe_dump({**top, "jobs": jobs}, sort_keys=False))
    return path


def _write_csv(path: Path, rows: list[dict[str, Any]], delimiter: str = ",") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter=delimiter)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_cell(row.get(column)) for column in columns])
    return path


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return "|".join(str(v) for v in value)
    return str(value)


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def _problems(manifest: Path) -> list[str]:
    with pytest.raises(ManifestError) as caught:
        load_manifest(manifest)
    return [str(p) for p in caught.value.problems]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A manifest folder with `data/img/img0000.png` and `img0001.png` beside a table."""
    write_images(tmp_path / "data" / "img", 2)
    return tmp_path


def test_csv_rows_become_items_with_typed_values_and_entry_keys(project: Path) -> None:
    """Cells take their parameter's type, paths are the table's, the entry's keys apply."""
    _write_csv(
        project / "data" / "edits.csv",
        [
            {"id": "a", "prompt": "Watercolor, soft", "referenceImages": "img/img0000.png",
             "guidanceScale": "3.5", "seed": "42"},
            {"id": "b", "prompt": "Ink", "referenceImages": ["img/img0001.png", "img/img0000.png"],
             "guidanceScale": "", "seed": "7"},
        ],
    )  # fmt: skip
    manifest = _manifest(
        project,
        [{"table": "data/edits.csv", "id": "set1", "guidanceScale": 2.0, "quality": "low"}],
        defaults={"numOutputs": 2},
    )
    a, b = load_manifest(manifest).items

    assert (a.id, a.prompt) == ("set1-a", "Watercolor, soft")
    assert dict(a.params) == {"numOutputs": 2, "guidanceScale": 3.5, "seed": 42, "quality": "low"}
    assert dict(b.params)["guidanceScale"] == 2.0  # an empty cell: the entry's value
    images = project / "data" / "img"
    assert [r.value for r in b.references] == [
        str(images / "img0001.png"),
        str(images / "img0000.png"),
    ]


def test_a_row_without_id_gets_a_derived_id_that_survives_reordering(project: Path) -> None:
    """Ids derive from the row's inputs, not its position: inserting a row renames nothing."""
    rows = [{"prompt": f"p{n}", "referenceImages": "img/img0000.png"} for n in range(3)]
    manifest = _manifest(project, [{"table": "data/t.csv"}])
    _write_csv(project / "data" / "t.csv", rows)
    before = {i.prompt: i.id for i in load_manifest(manifest).items}
    _write_csv(
        project / "data" / "t.csv",
        [{"prompt": "new", "referenceImages": "img/img0001.png"}, *rows[::-1]],
    )
    after = {i.prompt: i.id for i in load_manifest(manifest).items}
    assert {k: after[k] for k in before} == before


def _rows(count: int) -> st.SearchStrategy[list[dict[str, Any]]]:
    text = st.text(
        st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="|")
        | st.sampled_from(",\"\n'\t"),
        min_size=1,
        max_size=30,
    ).filter(lambda s: s.strip() == s and s.strip())
    row = st.fixed_dictionaries(
        {
            "prompt": text,
            "referenceImages": st.sampled_from(
                [["img/img0000.png"], ["img/img0001.png", "img/img0000.png"]]
            ),
        },
        optional={
            "guidanceScale": st.floats(1.0, 10.0).map(lambda f: round(f, 3)),
            "seed": st.integers(0, 2**32 - 1),
            "loras": st.just(["lora_a", "lora_b"]),
        },
    )
    return st.lists(row, min_size=1, max_size=count)


def _shape(items: tuple[Item, ...]) -> list[tuple[Any, ...]]:
    return [(i.prompt, i.references, dict(i.params), i.fingerprint) for i in items]


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows=_rows(6))
def test_csv_tsv_and_jsonl_rows_are_the_items_the_same_yaml_jobs_make(
    project: Path, rows: list[dict[str, Any]]
) -> None:
    """Any rows, written as CSV, TSV, JSONL or YAML jobs, make the same items."""
    for row in rows:
        if "loras" in row:
            row["lorasScale"] = [0.5, 1.0]
    as_yaml = [
        {**row, "referenceImages": [f"data/{p}" for p in row["referenceImages"]]} for row in rows
    ]
    expected = _shape(load_manifest(_manifest(project, as_yaml)).items)
    forms = {
        "t.csv": lambda p: _write_csv(p, rows),
        "t.tsv": lambda p: _write_csv(p, rows, "\t"),
        "t.jsonl": lambda p: _write_jsonl(p, rows),
    }
    for name, write in forms.items():
        write(project / "data" / name)
        items = load_manifest(_manifest(project, [{"table": f"data/{name}"}])).items
        assert _shape(items) == expected, name


def test_every_bad_row_is_reported_at_once_with_file_line_and_column(project: Path) -> None:
    """Bad cells in several rows: one report naming each row's line and column."""
    (project / "data" / "edits.csv").write_text(
        "id,prompt,referenceImages,guidanceScale,seed,guidanceScal\n"
        "ok,fine,img/img0000.png,3,1,\n"
        "big,too much,img/img0000.png,12,x,\n"
        'nl,"two\nlines",img/missing.png,,,\n'
        "typo,p,img/img0000.png,,,4\n"
        "ok,again,img/img0000.png,,,\n"
        ",,img/img0000.png,,,\n"
    )
    problems = _problems(_manifest(project, [{"table": "data/edits.csv"}]))
    text = "\n".join(problems)
    table = str(project / "data" / "edits.csv")
    assert f"{table}:3 column guidanceScale: must be 1.0-10.0, got 12" in text
    assert f"{table}:3 column seed: must be an integer, got 'x'" in text
    assert f"{table}:4 column referenceImages: file not found: " in text
    assert (
        f"{table}:6 column guidanceScal: unknown key 'guidanceScal'; did you mean 'guidanceScale'?"
        in text
    )
    assert f"{table}:7: duplicate id 'ok' (also on {table}:2)" in text
    assert f"{table}:8: missing required key 'prompt'" in text
    assert len(problems) == 6


def test_a_key_of_the_entry_is_reported_once_where_the_manifest_says_it(project: Path) -> None:
    """A bad value the entry gives every row is one problem at the manifest's line."""
    _write_csv(
        project / "t.csv",
        [{"prompt": f"p{n}", "referenceImages": "data/img/img0000.png"} for n in range(50)],
    )
    manifest = _manifest(
        project,
        [
            {"id": "x", "prompt": "p", "referenceImages": ["data/img/img0000.png"]},
            {"table": "t.csv", "seed": -1},
        ],
    )
    line = manifest.read_text().splitlines().index("  seed: -1") + 1
    expected = f"{manifest}:{line} jobs[1].seed: must be an integer 0-4294967295, got -1"
    assert _problems(manifest) == [expected]


@pytest.mark.parametrize(
    ("name", "content", "where", "message"),
    [
        ("t.csv", "id,prompt,id\n", "t.csv:1 column id", "appears twice in the header"),
        ("t.csv", "prompt,,seed\nx,,1\n", "t.csv:1", "column 2 has no name in the header"),
        ("t.csv", "prompt\na,b\n", "t.csv:2", "has 2 cells, the header names 1 columns"),
        ("t.csv", "prompt\n", "jobs[0].table", "t.csv: has no rows"),
        ("t.csv", "", "jobs[0].table", "t.csv: has no header row"),
        ("t.csv", b"prompt\n\xff\n", "t.csv:2", "must be UTF-8 text, got byte 0xff"),
        ("t.jsonl", '{"prompt": "a"}\n\n[1]\n', "t.jsonl:3", "must be a JSON object"),
        ("t.jsonl", '{"prompt": \n', "t.jsonl:1", "is not valid JSON"),
        ("t.xlsx", "x", "jobs[0].table", "t.xlsx: must be a .csv, .tsv, .tab, .jsonl, .ndjson"),
        ("missing.csv", None, "jobs[0].table", "missing.csv: file not found"),
    ],
)
def test_what_cannot_be_read_as_a_table_is_named(
    tmp_path: Path, name: str, content: str | bytes | None, where: str, message: str
) -> None:
    """Header, cell count, encoding, JSON and file problems each get a located message."""
    if content is not None:
        data = content if isinstance(content, bytes) else content.encode()
        (tmp_path / name).write_bytes(data)
    problems = _problems(_manifest(tmp_path, [{"table": name}]))
    assert any(where in p and message in p for p in problems), problems


async def test_validate_and_run_refuse_a_bad_table_with_exit_2_and_spend_nothing(
    scenario_env: Simulator, project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`validate` and `run` print the table's problems, exit 2, and call no API."""
    (project / "data" / "t.csv").write_text("prompt,referenceImages,seed\nok,img/img0000.png,-3\n")
    manifest = _manifest(project, [{"table": "data/t.csv"}], output="out")
    assert await asyncio.to_thread(main, ["validate", str(manifest)]) == 2
    assert "t.csv:2 column seed: must be an integer 0-4294967295, got -3" in capsys.readouterr().err
    assert await asyncio.to_thread(main, ["run", str(manifest), "-q"]) == 2
    assert scenario_env.request_log == []


async def test_cells_take_the_types_any_model_declares_its_inputs_with(
    scenario_env: Simulator, tmp_path: Path
) -> None:
    """Another model's inputs (file, file_array, boolean, string_array, number) read from
    text as declared; its declaration is fetched once for the table and the jobs alike."""
    write_images(tmp_path / "data" / "img", 2)
    _write_csv(
        tmp_path / "data" / "s.csv",
        [
            {"id": "a", "prompt": "p", "sourceImages": ["img/img0000.png", "img/img0001.png"],
             "enhancePrompt": "yes", "tags": ["x", "y"], "seed": "7"},
            {"id": "b", "prompt": "q", "sourceImages": "img/img0001.png", "enhancePrompt": "maybe"},
        ],
    )  # fmt: skip
    _write_csv(
        tmp_path / "data" / "q.csv",
        [{"prompt": "r", "image": "img/img0000.png", "strength": "0.5"}],
    )
    manifest = _manifest(
        tmp_path,
        [{"table": "data/s.csv", "model": SEEDREAM}, {"table": "data/q.csv", "model": QWEN}],
    )
    models = ModelCatalog(
        cache_dir=tmp_path / "cache",
        base_url=scenario_env.base_url,
        fetch=api_fetcher(settings_for(scenario_env)),
    )
    with pytest.raises(ManifestError) as caught:
        await asyncio.to_thread(load_manifest, manifest, models=models)
    assert [str(p) for p in caught.value.problems] == [
        f"{tmp_path / 'data' / 's.csv'}:3 column enhancePrompt: must be true or false, got 'maybe'"
    ]
    gets = [r.path for r in scenario_env.request_log if r.path.startswith("/v1/models/")]
    assert sorted(gets) == sorted(f"/v1/models/{m}" for m in (SEEDREAM, QWEN))

    (tmp_path / "data" / "s.csv").write_text(
        (tmp_path / "data" / "s.csv").read_text().replace("maybe", "false")
    )
    a, b, r = (await asyncio.to_thread(load_manifest, manifest, models=models)).items
    images = tmp_path / "data" / "img"
    assert [x.value for x in a.references] == [
        str(images / "img0000.png"),
        str(images / "img0001.png"),
    ]
    given = dict(a.params)
    assert (given["enhancePrompt"], given["tags"], given["seed"]) == (True, ("x", "y"), 7)
    assert dict(b.params)["enhancePrompt"] is False
    assert (r.model, [x.value for x in r.references], dict(r.params)["strength"]) == (
        QWEN,
        [str(images / "img0000.png")],
        0.5,
    )
