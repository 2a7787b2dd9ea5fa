"""Hostile manifests: bombs, limits, fuzzing, and the cost of big manifests."""

from __future__ import annotations

import contextlib
import time
import tracemalloc
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import batch.manifest.load as manifest
from batch.errors import ManifestError
from batch.manifest.load import load_manifest


def refused(path: Path) -> str:
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    return str(info.value)


def test_billion_laughs_refused_fast_and_small(tmp_path: Path) -> None:
    """Nested aliases (10^9 nodes expanded) are refused in milliseconds, with little memory."""
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 10)]
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\njobs: *a9\n")
    tracemalloc.start()
    started = time.perf_counter()
    message = refused(path)
    elapsed = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert "alias bomb" in message and elapsed < 0.5 and peak < 2_000_000


@pytest.mark.parametrize("opener", ["[", "{a: ", "- "])
def test_deep_nesting_refused(tmp_path: Path, opener: str) -> None:
    """Very deep nesting (flow or block) is refused quickly, never a RecursionError."""
    depth = 100_000 if opener != "- " else 2_000
    if opener == "- ":
        text = "".join(" " * (2 * i) + "-\n" for i in range(depth))
    else:
        text = opener * depth
    path = tmp_path / "deep.yaml"
    path.write_text(text)
    started = time.perf_counter()
    message = refused(path)
    assert time.perf_counter() - started < 2 and ("nesting" in message or "invalid YAML" in message)


def test_moderate_nesting_over_our_limit(tmp_path: Path) -> None:
    """Nesting past 32 levels, which libyaml allows, is refused by our own limit with its line."""
    path = tmp_path / "m.yaml"
    path.write_text("jobs:\n  - prompt: " + "[" * 40 + "]" * 40 + "\n")
    assert ":2: nesting deeper than 32 levels" in refused(path)


def test_recursive_alias_refused(tmp_path: Path) -> None:
    """An anchor that contains its own alias is an error, not an infinite structure."""
    path = tmp_path / "m.yaml"
    path.write_text("jobs: &a [*a]\n")
    assert "refers to itself" in refused(path)


def test_manifest_size_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A manifest over the size limit is refused before it is parsed."""
    monkeypatch.setattr(manifest, "MAX_MANIFEST_BYTES", 1000)
    path = tmp_path / "m.yaml"
    path.write_text("# " + "x" * 2000 + "\njobs: []\n")
    assert "must be at most 1000 bytes, got 2012 bytes" in refused(path)


def test_item_count_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Expanding past the item limit is one clear error."""
    monkeypatch.setattr(manifest, "MAX_ITEMS", 5)
    path = tmp_path / "m.yaml"
    path.write_text("jobs:\n" + "  - {prompt: p, referenceImages: [asset_a]}\n" * 6)
    assert "jobs: must expand to at most 5 items" in refused(path)


def test_unreadable_inputs(tmp_path: Path) -> None:
    """Missing file, a directory, non-UTF-8 bytes and NUL bytes are located ManifestErrors."""
    assert "file not found" in refused(tmp_path / "nope.yaml")
    assert "not a regular file" in refused(tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"jobs:\n  - prompt: \xff\n")
    assert f"{bad}:2: must be UTF-8 text, got byte 0xff" in refused(bad)
    bad.write_bytes(b"jobs:\n  - prompt: a\x00b\n")
    assert f"{bad}:2: invalid YAML" in refused(bad)


def test_problem_list_is_capped(tmp_path: Path) -> None:
    """Thousands of broken jobs give a bounded message with a count of the rest."""
    path = tmp_path / "m.yaml"
    path.write_text("jobs:\n" + "  - {prompt: p, referenceImages: [asset_a], seed: -1}\n" * 1000)
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    assert (
        len(info.value.problems) == 201 and "800 more problems" in info.value.problems[-1].message
    )


def _check(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    with contextlib.suppress(ManifestError):
        load_manifest(path, check_files=False)


FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@FUZZ
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=300))
def test_fuzz_arbitrary_text(tmp_path: Path, text: str) -> None:
    """Arbitrary text never raises anything but ManifestError."""
    _check(tmp_path / "fuzz.yaml", text)


KEYS = st.sampled_from(
    [
        "jobs",
        "defaults",
        "prompt",
        "referenceImages",
        "seed",
        "id",
        "images",
        "prompts",
        "glob",
        "numOutputs",
        "guidanceScale",
        "loras",
        "lorasScale",
        "output",
        "model",
        "x",
    ]
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(["asset_a", "https://x.y/z.png", "http://x", "../x", "*.png", "."])
)
DATA = st.recursive(
    SCALARS,
    lambda kids: st.lists(kids, max_size=5) | st.dictionaries(KEYS, kids, max_size=6),
    max_leaves=40,
)


@FUZZ
@given(st.dictionaries(KEYS, DATA, max_size=6))
def test_fuzz_nested_data(tmp_path: Path, data: dict[str, object]) -> None:
    """Arbitrary nested data dumped to YAML never raises anything but ManifestError."""
    _check(tmp_path / "fuzz.yaml", yaml.safe_dump(data, allow_unicode=True))


def test_big_manifest_over_shared_images_is_fast(tmp_path: Path) -> None:
    """100,000 items over 1,000 images validate well under 5 s: one header read per image."""
    folder = tmp_path / "img"
    folder.mkdir()
    for i in range(1000):
        Image.new("RGB", (4, 4)).save(folder / f"i{i:04}.png")
    path = tmp_path / "m.yaml"
    prompts = "".join(f"      - {{id: s{p}, prompt: style {p}}}\n" for p in range(100))
    path.write_text(f"jobs:\n  - id: big\n    images: img\n    prompts:\n{prompts}")
    started = time.perf_counter()
    items = load_manifest(path).items
    elapsed = time.perf_counter() - started
    assert len(items) == 100_000 and len({i.id for i in items}) == 100_000
    assert elapsed < 5, elapsed
