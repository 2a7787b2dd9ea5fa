"""The YAML loader: lines found lazily are the lines an eager parse keeps."""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from batch.manifest import yaml_lines
from batch.manifest.yaml_lines import load_yaml

_keys = st.text(alphabet="abcdefgh", min_size=1, max_size=4)
_scalars = st.one_of(st.integers(0, 10**6), st.text("xyz !:#", max_size=6), st.booleans())
_data = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_keys, inner, max_size=4),
    max_leaves=30,
)


def _paths(node: Any, prefix: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*prefix, index))
    return found


@settings(max_examples=150, deadline=None)
@given(data=st.dictionaries(_keys, _data, min_size=1, max_size=5), flow=st.booleans())
def test_lazy_lines_match_an_eager_parse(data: dict[str, Any], flow: bool) -> None:
    """Every path's line from the lazy map equals the line a parse keeping lines gives."""
    text = yaml.safe_dump(data, default_flow_style=flow, sort_keys=False)
    root, lines, soft = load_yaml(text)
    assert soft == []
    assert root == data
    eager_root, eager, _ = yaml_lines._load(text, yaml_lines.YamlLimits(), track=True)
    assert eager_root == data
    for path in _paths(data):
        assert lines.line_of(path) == eager.line_of(path), path


def test_lines_are_parsed_only_when_asked() -> None:
    """A load that reports nothing builds no line table; the first line_of builds it."""
    text = "jobs:\n  - id: a\n    prompt: x\n  - id: b\n    prompt: y\n"
    root, lines, _ = load_yaml(text)
    assert root["jobs"][1]["id"] == "b"
    assert lines._lines == {}
    assert lines.line_of(("jobs", 1, "prompt")) == 5
    assert lines._lines


def test_duplicate_key_falls_back_to_lines() -> None:
    """A duplicate key is still reported with both its lines."""
    _, _, soft = load_yaml("a: 1\nb: 2\na: 3\n")
    assert [(p.line, p.message) for p in soft] == [(3, "duplicate key 'a' (first on line 1)")]


def test_merged_keys_keep_their_lines() -> None:
    """Keys merged with << report the line where the anchored mapping gave them."""
    text = "base: &b\n  seed: 1\n  quality: high\njob:\n  <<: *b\n  prompt: p\n"
    root, lines, _ = load_yaml(text)
    assert root["job"] == {"seed": 1, "quality": "high", "prompt": "p"}
    assert lines.line_of(("job", "seed")) == 2
    assert lines.line_of(("job", "prompt")) == 6
