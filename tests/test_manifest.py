"""Manifest loading: values, defaults, ids, and every located validation error."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from pydantic import ValidationError

from batch.errors import ManifestError, Problem
from batch.manifest.load import DEFAULT_MODEL, Reference, load_manifest, manifest_json_schema
from tests.conftest import make_png


def write(tmp: Path, body: str, name: str = "m.yaml") -> Path:
    path = tmp / name
    path.write_text(textwrap.dedent(body).lstrip("\n"), encoding="utf-8")
    return path


@pytest.fixture
def images(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("cat", "dog", "bird"):
        Image.new("RGB", (32, 24), "red").save(folder / f"{name}.png")
    return folder


def problems(path: Path, **kw: bool) -> list[Problem]:
    with pytest.raises(ManifestError) as info:
        load_manifest(path, **kw)
    return info.value.problems


def only(path: Path) -> Problem:
    found = problems(path)
    assert len(found) == 1, found
    return found[0]


def test_minimal_manifest_loads_with_defaults(tmp_path: Path, images: Path) -> None:
    """A job with only prompt and a file reference gets the default model and no extra params."""
    m = load_manifest(
        write(tmp_path, "jobs:\n  - {prompt: hi, referenceImages: [images/cat.png]}\n")
    )
    assert m.model == DEFAULT_MODEL and m.project_id is None and m.output is None
    assert m.concurrency is None and m.max_cost is None and m.job_timeout_s is None
    (item,) = m.items
    assert item.references == (Reference("file", str(images / "cat.png")),)
    assert dict(item.params) == {} and item.num_outputs == 1
    assert m.path == tmp_path / "m.yaml"


def test_top_level_fields_and_overrides(tmp_path: Path, images: Path) -> None:
    """Top-level settings are read, defaults merge into jobs, and job values win."""
    path = write(
        tmp_path,
        """
        version: 1
        model: model_flux-kontext-editing
        projectId: proj_abc
        output: out/example
        concurrency: 8
        maxCost: 12.5
        jobTimeout: 600
        defaults: {aspectRatio: auto, quality: high, guidanceScale: 3.5, numOutputs: 2}
        jobs:
          - id: cat-watercolor
            prompt: Turn the cat into a watercolor painting
            referenceImages: [images/cat.png, asset_abc123, "https://cdn.example.com/x.png"]
            seed: 42
            quality: low
            loras: [model_a]
            lorasScale: [0.5]
        """,
    )
    m = load_manifest(path)
    assert (m.model, m.project_id, m.concurrency, m.max_cost, m.job_timeout_s) == (
        "model_flux-kontext-editing",
        "proj_abc",
        8,
        12.5,
        600.0,
    )
    assert m.output == tmp_path / "out" / "example"
    item = m.items[0]
    assert item.id == "cat-watercolor" and item.num_outputs == 2
    assert [r.kind for r in item.references] == ["file", "asset", "url"]
    assert dict(item.params) == {
        "aspectRatio": "auto",
        "quality": "low",
        "guidanceScale": 3.5,
        "numOutputs": 2,
        "seed": 42,
        "loras": ("model_a",),
        "lorasScale": (0.5,),
    }
    body = item.generate_body(["asset_1", "asset_2", "asset_3"])
    assert body["referenceImages"] == ["asset_1", "asset_2", "asset_3"]
    assert body["prompt"] == item.prompt and body["loras"] == ["model_a"] and body["seed"] == 42
    json.dumps(body)
    with pytest.raises(TypeError):
        item.params["seed"] = 1  # type: ignore[index]


def test_prompt_may_come_from_defaults(tmp_path: Path, images: Path) -> None:
    """A prompt in defaults serves every job that gives none."""
    path = write(tmp_path, "defaults: {prompt: P}\njobs:\n  - referenceImages: [images/cat.png]\n")
    assert load_manifest(path).items[0].prompt == "P"


def test_derived_ids_are_readable_stable_and_location_independent(
    tmp_path: Path, images: Path
) -> None:
    """Ids derived when absent are stem-hash, identical across loads and after moving the folder."""
    body = "jobs:\n" + "".join(
        f"  - {{prompt: {p}, referenceImages: [images/cat.png]}}\n" for p in "ab"
    )
    first = load_manifest(write(tmp_path, body))
    ids = [i.id for i in first.items]
    assert all(i.startswith("cat-") and len(i) == 12 for i in ids) and len(set(ids)) == 2
    assert [i.id for i in load_manifest(tmp_path / "m.yaml").items] == ids
    moved = tmp_path / "elsewhere"
    (tmp_path / "images").rename(tmp_path / "images_tmp")
    moved.mkdir()
    (tmp_path / "images_tmp").rename(moved / "images")
    again = load_manifest(write(moved, body))
    assert [i.id for i in again.items] == ids
    assert [i.fingerprint for i in again.items] == [i.fingerprint for i in first.items]


def test_identical_jobs_get_deterministic_suffixes(tmp_path: Path, images: Path) -> None:
    """Two identical jobs without ids get `-2` on the second, not an error."""
    body = "jobs:\n" + "  - {prompt: a, referenceImages: [asset_x1]}\n" * 2
    ids = [i.id for i in load_manifest(write(tmp_path, body)).items]
    assert ids[1] == ids[0] + "-2" and ids[0].startswith("asset_x1-")


def test_fingerprint_changes_with_inputs(tmp_path: Path, images: Path) -> None:
    """The fingerprint covers prompt, references and params, and is a sha256 hex."""
    path = write(
        tmp_path,
        """
        jobs:
          - {id: a, prompt: p, referenceImages: [images/cat.png]}
          - {id: b, prompt: p, referenceImages: [images/cat.png], seed: 1}
          - {id: c, prompt: q, referenceImages: [images/cat.png]}
          - {id: d, prompt: p, referenceImages: [images/dog.png]}
          - {id: e, prompt: p, referenceImages: [images/cat.png]}
        """,
    )
    fps = [i.fingerprint for i in load_manifest(path).items]
    assert len(set(fps[:4])) == 4 and fps[0] == fps[4] and len(fps[0]) == 64


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("guidanceScale: 12", ("jobs[0] (j).guidanceScale", "must be 1.0-10.0, got 12")),
        ("guidanceScale: '3'", ("jobs[0] (j).guidanceScale", "must be 1.0-10.0, got '3'")),
        ("numOutputs: 5", ("jobs[0] (j).numOutputs", "must be an integer 1-4, got 5")),
        ("numOutputs: 1.5", ("jobs[0] (j).numOutputs", "must be an integer 1-4, got 1.5")),
        ("seed: true", ("jobs[0] (j).seed", "must be an integer 0-4294967295, got true")),
        ("seed: -1", ("jobs[0] (j).seed", "must be an integer 0-4294967295, got -1")),
        ("seed: 4294967296", ("jobs[0] (j).seed", "got 4294967296")),
        ("aspectRatio: 5:4", ("jobs[0] (j).aspectRatio", "must be one of auto, 1:1")),
        (
            "quality: ultra",
            ("jobs[0] (j).quality", "must be one of high, medium, low, got 'ultra'"),
        ),
        ("loras: [1]", ("jobs[0] (j).loras[0]", "must be a non-empty string, got 1")),
        ("lorasScale: [x]", ("jobs[0] (j).lorasScale[0]", "must be a number, got 'x'")),
        ("promt: typo", ("jobs[0] (j).promt", "unknown key 'promt'; did you mean 'prompt'?")),
        ("guidancescale: 3", ("jobs[0] (j).guidancescale", "did you mean 'guidanceScale'?")),
        ("id: ../x", ("jobs[0].id", "got '../x' (not a path)")),
        ("id: /abs", ("jobs[0].id", "got '/abs' (not a path)")),
        ("id: 'a\\0b'", ("jobs[0].id", "must be 1-128 letters")),
        ("id: " + "x" * 129, ("jobs[0].id", "must be 1-128 letters")),
        ("id: ..", ("jobs[0].id", "must not be '.' or '..', got '..'")),
        ("id: 12", ("jobs[0].id", "got 12 (quote it to make it a string)")),
        ("referenceImages: []", ("jobs[0] (j).referenceImages", "must be a list of 1-4 images")),
        (
            "referenceImages: [a, b, c, d, e]",
            ("jobs[0] (j).referenceImages", "got a list of 5 entries"),
        ),
        (
            "referenceImages: [http://x.com/a.png]",
            ("jobs[0] (j).referenceImages[0]", "plain http is refused"),
        ),
        (
            "referenceImages: ['ftp://x.com/a.png']",
            ("jobs[0] (j).referenceImages[0]", "got a ftp: URL"),
        ),
        (
            "referenceImages: ['https://u:p@x.com/a']",
            ("jobs[0] (j).referenceImages[0]", "without credentials"),
        ),
        (
            "referenceImages: [images/none.png]",
            ("jobs[0] (j).referenceImages[0]", "file not found"),
        ),
        ("referenceImages: [images]", ("jobs[0] (j).referenceImages[0]", "not a regular file")),
        (
            "referenceImages: [notes.txt]",
            ("jobs[0] (j).referenceImages[0]", "not a readable image"),
        ),
        ("prompt: ''", ("jobs[0] (j).prompt", "got an empty string")),
        (
            "prompt: " + "x" * 10_001,
            ("jobs[0] (j).prompt", "at most 10,000 characters, got 10,001 characters"),
        ),
        (
            "loras: [a, b]\n    lorasScale: [1]",
            ("jobs[0] (j).lorasScale", "one number per LoRA (2), got 1"),
        ),
    ],
)
def test_job_field_errors_are_located(
    tmp_path: Path, images: Path, line: str, expected: tuple[str, str]
) -> None:
    """Each invalid job field yields one problem naming file, line, field and the value got."""
    (tmp_path / "notes.txt").write_text("not an image")
    base = {"prompt": "prompt: hi", "referenceImages": "referenceImages: [images/cat.png]"}
    for key in list(base):
        if line.startswith(key):
            del base[key]
    body = "jobs:\n  - id: j\n" if not line.startswith("id:") else "jobs:\n  - " + line + "\n"
    body += "".join(f"    {v}\n" for v in base.values())
    if not line.startswith("id:"):
        body += f"    {line}\n"
    path = write(tmp_path, body)
    found = only(path)
    where, message = expected
    assert found.file == str(path)
    assert found.where == where and message in found.message, found
    text_lines = path.read_text().splitlines()
    key = where.split(".")[-1].split("[")[0]
    assert found.line is not None and key in text_lines[found.line - 1]


def test_example_message_format(tmp_path: Path, images: Path) -> None:
    """A problem prints exactly as `file:line jobs[3] (id).field: message`."""
    jobs = "".join(
        f"  - {{id: j{i}, prompt: p, referenceImages: [images/cat.png]}}\n" for i in range(3)
    )
    path = write(
        tmp_path,
        "jobs:\n"
        + jobs
        + "  - id: j3\n    prompt: p\n    referenceImages: [images/cat.png]\n"
        + "    guidanceScale: 12\n",
    )
    assert str(only(path)) == f"{path}:8 jobs[3] (j3).guidanceScale: must be 1.0-10.0, got 12"


@pytest.mark.parametrize(
    ("top", "where", "message", "line"),
    [
        ("version: 2", "version", "must be 1, got 2", 1),
        ("concurrency: 0", "concurrency", "must be an integer 1-1024, got 0", 1),
        ("concurrency: 2000", "concurrency", "got 2000", 1),
        ("maxCost: 0", "maxCost", "must be a number > 0 (compute units), got 0", 1),
        ("maxCost: .nan", "maxCost", "got nan", 1),
        ("jobTimeout: -1", "jobTimeout", "must be a number of seconds > 0", 1),
        ("model: 'a/b'", "model", "must be a model id", 1),
        ("projectId: ''", "projectId", "must be a project id", 1),
        ("defaults: {quality: best}", "defaults.quality", "got 'best'", 1),
        ("defaults: {prompts: x}", "defaults.prompts", "unknown key 'prompts'", 1),
        ("jbos: []", "jbos", "unknown key 'jbos'; did you mean 'jobs'?", 1),
        ('output: "a\\0b"', "output", "must not contain NUL bytes", 1),
    ],
)
def test_top_level_errors_are_located(
    tmp_path: Path, images: Path, top: str, where: str, message: str, line: int
) -> None:
    """Each invalid top-level field yields a located problem."""
    path = write(tmp_path, top + "\njobs:\n  - {prompt: hi, referenceImages: [images/cat.png]}\n")
    found = only(path)
    assert (found.where, found.line) == (where, line) and message in found.message, found


@pytest.mark.parametrize(
    ("text", "message", "line"),
    [
        ("", "the manifest is empty", None),
        ("# only a comment\n", "the manifest is empty", None),
        ("- a\n- b\n", "must be a mapping with a 'jobs' list, got a list of 2 entries", 1),
        ("just text\n", "must be a mapping with a 'jobs' list, got 'just text'", 1),
        ("model: m\n", "missing required key 'jobs'", 1),
        ("jobs: []\n", "must be a non-empty list of jobs, got an empty list", 1),
        ("jobs: [1]\n", "must be a mapping (one job), got 1", 1),
        ("jobs:\n  - prompt: [1\n", "invalid YAML", 3),
        ("a: 1\n---\nb: 2\n", "a single YAML document", 2),
        ("jobs:\n  - !!python/object:os.system {}\n", "is not supported", 2),
        ("jobs: !!binary aGk=\n", "is not supported", 1),
        ("a: *nope\n", "has no anchor", 1),
        ("? [1, 2]\n: x\n", "mapping keys must be strings", 1),
        ("jobs:\n  - prompt: x\n    prompt: y\n", "duplicate key 'prompt' (first on line 2)", 3),
    ],
)
def test_document_level_errors(tmp_path: Path, text: str, message: str, line: int | None) -> None:
    """Broken documents give a located ManifestError, never a traceback."""
    found = problems(write(tmp_path, text))
    assert any(message in p.message and p.line == line for p in found), found


def test_missing_prompt_and_references(tmp_path: Path) -> None:
    """A job without prompt (here or in defaults) or without references is an error at the job."""
    path = write(tmp_path, "jobs:\n  - seed: 1\n    referenceImages: [asset_a]\n  - prompt: x\n")
    found = problems(path)
    assert [(p.where, p.line) for p in found] == [("jobs[0]", 2), ("jobs[1]", 4)]
    assert "missing required key 'prompt'" in found[0].message
    assert "needs referenceImages" in found[1].message


def test_all_problems_collected_in_line_order(tmp_path: Path, images: Path) -> None:
    """Several errors across jobs are reported together, sorted by line."""
    path = write(
        tmp_path,
        """
        concurrency: 0
        jobs:
          - {id: a, prompt: p, referenceImages: [images/cat.png], seed: -1}
          - {id: b, prompt: p, referenceImages: [images/missing.png]}
          - {id: c, promt: p, referenceImages: [images/cat.png]}
        """,
    )
    found = problems(path)
    assert [(p.line, p.where) for p in found] == [
        (1, "concurrency"),
        (3, "jobs[0] (a).seed"),
        (4, "jobs[1] (b).referenceImages[0]"),
        (5, "jobs[2] (c).promt"),
    ]


def test_duplicate_and_case_insensitive_ids(tmp_path: Path, images: Path) -> None:
    """Equal ids, and ids equal ignoring case, are errors naming the other line."""
    ref = "referenceImages: [images/cat.png]"
    path = write(
        tmp_path,
        f"jobs:\n  - {{id: x, prompt: p, {ref}}}\n  - {{id: x, prompt: q, {ref}}}\n"
        f"  - {{id: Cat, prompt: p, {ref}}}\n  - {{id: cat, prompt: q, {ref}}}\n",
    )
    found = problems(path)
    assert [(p.line, p.where) for p in found] == [(3, "jobs[1] (x)"), (5, "jobs[3] (cat)")]
    assert "duplicate id 'x' (also on line 2)" in found[0].message
    assert "differs only in case from 'Cat' on line 4" in found[1].message


def test_references_checked_once_per_path(
    tmp_path: Path, images: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file used by many jobs is opened once; a missing default reference is reported once."""
    import batch.manifest.files as files

    opened: list[str] = []
    real_open = files.Image.open

    def spy(path: str) -> Image.Image:
        opened.append(path)
        return real_open(path)

    monkeypatch.setattr(files.Image, "open", spy)
    body = "jobs:\n" + "".join(
        f"  - {{prompt: p{i}, referenceImages: [images/cat.png]}}\n" for i in range(50)
    )
    assert len(load_manifest(write(tmp_path, body)).items) == 50
    assert opened == [str(images / "cat.png")]
    body = "defaults: {referenceImages: [images/gone.png]}\njobs:\n" + "  - {prompt: p}\n" * 5
    found = problems(write(tmp_path, body))
    assert [(p.where, p.line) for p in found] == [("defaults.referenceImages[0]", 1)]


def test_check_files_false_skips_disk(tmp_path: Path) -> None:
    """check_files=False accepts references that do not exist (used by `status`)."""
    m = load_manifest(
        write(tmp_path, "jobs:\n  - {prompt: p, referenceImages: [gone.png]}\n"), check_files=False
    )
    assert m.items[0].references[0] == Reference("file", str(tmp_path / "gone.png"))


def test_image_limits(tmp_path: Path) -> None:
    """Reference images over the pixel limit, or not images at all, are refused from the header."""
    from batch.manifest.files import FileChecker

    big = tmp_path / "big.png"
    Image.new("L", (8000, 7000)).save(big)  # 56 MP, compresses to a few kB
    assert "must be at most 50,000,000 pixels, got 8000x7000" in (
        FileChecker().problem(str(big)) or ""
    )
    small = tmp_path / "s.png"
    Image.new("L", (10, 10)).save(small)
    assert FileChecker(max_bytes=10).problem(str(small)) is not None
    assert FileChecker().problem(str(small)) is None


def test_schema_file_matches_models() -> None:
    """configs/manifest.schema.json is exactly what the validator's models generate."""
    committed = Path(__file__).resolve().parents[1] / "configs" / "manifest.schema.json"
    assert json.loads(committed.read_text(encoding="utf-8")) == manifest_json_schema()


def test_schema_agrees_with_validator(tmp_path: Path, images: Path) -> None:
    """The schema lists exactly the keys the validator accepts at each level, with its ranges."""
    schema = manifest_json_schema()
    assert schema["additionalProperties"] is False and "jobs" in schema["required"]
    job = schema["$defs"]["Job"]["properties"]
    assert {"prompt", "referenceImages", "images", "prompts", "id", "guidanceScale"} <= set(job)
    guidance = job["guidanceScale"]["anyOf"][0]
    assert (guidance["minimum"], guidance["maximum"]) == (1.0, 10.0)
    for key in job:
        assert "unknown key" not in str(_try(tmp_path, key))


def _try(tmp_path: Path, key: str) -> list[Problem]:
    path = write(tmp_path, f"jobs:\n  - {{prompt: p, referenceImages: [asset_a], {key}: null}}\n")
    try:
        load_manifest(path)
    except ManifestError as exc:
        return exc.problems
    return []


# Ids and fingerprints of this manifest as computed by main at da83f39, before `models:`
# existed: a ledger written then must resume without paying again.
PINNED_MANIFEST = """\
model: model_flux-kontext-editing
defaults:
  quality: high
  guidanceScale: 3.5
jobs:
  - id: cat-watercolor
    prompt: Turn the cat into a watercolor painting
    referenceImages: [images/cat.png, asset_abc123]
    seed: 42
    guidanceScale: 4
    loras: [model_lora1]
    lorasScale: [1]
  - prompt: Make it night
    referenceImages: [https://example.com/pics/dog.png]
    numOutputs: 2
    aspectRatio: "16:9"
  - id: bulk
    prompt: Pencil sketch
    images: images
  - images: "images/*.png"
    referenceImages: [style.png]
    prompts:
      - {id: wc, prompt: Watercolor}
      - {prompt: Ink drawing, seed: 7}
"""
PINNED = [
    ("cat-watercolor", "0283308e0fdb71deb98b348001ae6727cc12afa35ec2b5a667d026fb5dd204da"),
    ("dog-7b96e223", "7b96e2230487eed95a30dd7c0995e2a36bf3c1415cf083917d6b45313471806f"),
    ("bulk-cat", "ba13040571746b4427f172e1b087f89040c6eb76154d88980f68b3af17d676b6"),
    ("bulk-dog", "d4a7cf61fef45e3a1fb0d5bb152db97ca43d7be752763454078a0ee621d49294"),
    ("wc-cat-6abad835", "6abad835692f730faab73c82b24b5bf123a68e6e0f222bdf6c7a8f4ade2fb333"),
    ("wc-dog-7b88d1c2", "7b88d1c237db6983695ecbf5e6b257919e72abc26960761a2b7201599a1e9ce7"),
    ("p2-cat-1bfbb42b", "1bfbb42b28c49bbe183a182310b52984a9ebbb4707ea75d17e070c194506d475"),
    ("p2-dog-d8cfb870", "d8cfb87002cf3033c99e402e9d2b19519a1707be95da515918e4885a1739ad85"),
]


def test_ids_and_fingerprints_are_those_of_earlier_versions(tmp_path: Path) -> None:
    """A kontext manifest keeps the ids, fingerprints and bodies it had before `models:`."""
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "cat.png").write_bytes(make_png(32, 24, color=(10, 20, 30)))
    (tmp_path / "images" / "dog.png").write_bytes(make_png(32, 24, color=(40, 50, 60)))
    (tmp_path / "style.png").write_bytes(make_png(16, 16, color=(1, 2, 3)))
    (tmp_path / "manifest.yaml").write_text(PINNED_MANIFEST)
    items = load_manifest(tmp_path / "manifest.yaml").items
    assert [(item.id, item.fingerprint) for item in items] == PINNED
    assert all(item.base_id == item.id and item.model == DEFAULT_MODEL for item in items)
    assert items[0].generate_body(["asset_1", "asset_abc123"]) == {
        "referenceImages": ["asset_1", "asset_abc123"],
        "prompt": "Turn the cat into a watercolor painting",
        "quality": "high",
        "guidanceScale": 4.0,
        "seed": 42,
        "loras": ["model_lora1"],
        "lorasScale": [1.0],
    }


_PLAIN_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.floats(allow_nan=False),
    st.text(alphabet="ab._-/ \n*", max_size=6),
    st.just("x" * 129),
    st.lists(st.text(alphabet="ab", max_size=2), max_size=2),
    st.dictionaries(st.sampled_from(["glob", "folder", "x"]), st.text(max_size=2), max_size=2),
)
_JOB_KEYS = st.sampled_from(
    ["id", "model", "models", "images", "prompts", "prompt", "seed", "referenceImages", "x"]
)


@settings(max_examples=300, deadline=None)
@given(raw=st.one_of(st.dictionaries(_JOB_KEYS, _PLAIN_VALUES, max_size=5), _PLAIN_VALUES))
def test_jobs_checked_without_pydantic_read_as_pydantic_reads_them(raw: Any) -> None:
    """A job taken by the fast check is one `Job` accepts, read field for field the same;
    any job `Job` refuses is left to `Job` (which reports it)."""
    from batch.manifest.load import _is_plain, _plain_job
    from batch.manifest.schema import Job

    try:
        job = Job.model_validate(raw)
    except ValidationError:
        assert not _is_plain(raw)
        return
    if _is_plain(raw):
        plain = _plain_job(raw)
        assert (plain.id, plain.images, plain.model, plain.models, plain.prompts) == (
            job.id,
            job.images,
            job.model,
            job.models,
            job.prompts,
        )
        assert list(plain.model_extra.items()) == list((job.model_extra or {}).items())


def test_plain_jobs_give_the_items_pydantic_jobs_give(
    tmp_path: Path, images: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Items are the same whether the jobs were checked by the fast path or by `Job`."""
    path = write(
        tmp_path,
        """
        defaults: {seed: 7}
        jobs:
          - {id: a, prompt: one, referenceImages: [images/cat.png], guidanceScale: 4}
          - {prompt: two, referenceImages: [images/dog.png], seed: null}
          - {id: c, images: "images/*.png", prompt: three, model: model_flux-kontext-editing}
          - id: d
            images: {folder: images}
            prompts: [{id: w, prompt: four}, {prompt: five, seed: 3}]
        """,
    )
    fast = load_manifest(path)
    monkeypatch.setattr("batch.manifest.load._is_plain", lambda raw: False)
    slow = load_manifest(path)
    assert fast == slow
    assert [dict(i.params) for i in fast.items] == [dict(i.params) for i in slow.items]
    assert len(fast.items) == 2 + 3 + 6


def test_a_problem_in_a_late_job_names_it_once_the_raw_jobs_are_released(tmp_path: Path) -> None:
    """Jobs are released as they are read; a problem found afterwards still names its job
    by id, with its line."""
    (tmp_path / "cat.png").write_bytes(make_png(8, 8))
    body = "jobs:\n" + "".join(
        f"  - id: j{n}\n    prompt: p\n    referenceImages: [cat.png]\n" for n in range(3)
    )
    path = write(tmp_path, body + "  - id: late\n    prompt: p\n    referenceImages: [no.png]\n")
    found = only(path)
    assert (found.line, found.where) == (13, "jobs[3] (late).referenceImages[0]")


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(value=st.one_of(st.lists(_JSON), st.dictionaries(st.text(), _JSON)))
def test_fingerprint_text_is_what_the_json_encoder_writes(value: Any) -> None:
    """The encoder made once writes exactly what `JSONEncoder.encode` writes (fingerprints
    of every earlier version stay)."""
    from batch.manifest.load import _CANONICAL, _canonical

    assert _canonical(value) == _CANONICAL.encode(value)
