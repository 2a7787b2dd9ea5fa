"""Model input declarations: parsing the API's shape, and each rule a value must pass."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from batch.models.inputs import (
    BUILTIN,
    KONTEXT,
    KONTEXT_DECLARATION,
    ModelSpecError,
    check_value,
    missing_required,
    pair_problems,
    parse_model,
)
from batch.simulator import models as simulated


def spec_of(*inputs: dict[str, Any], ui: dict[str, Any] | None = None) -> Any:
    raw: dict[str, Any] = {"id": "model_t", "inputs": list(inputs)}
    if ui:
        raw["uiConfig"] = ui
    return parse_model({"model": raw}, "model_t")


def test_shipped_kontext_table_is_the_simulators() -> None:
    """The shipped kontext inputs are exactly those the simulator declares (two copies)."""
    assert KONTEXT_DECLARATION["inputs"] == simulated.INPUTS[KONTEXT]
    assert KONTEXT_DECLARATION["uiConfig"] == simulated.UI_CONFIG[KONTEXT]
    kontext = BUILTIN[KONTEXT]
    assert kontext.image_input is not None and kontext.image_input.name == "referenceImages"
    assert [i.name for i in kontext.inputs if i.required.always] == ["referenceImages", "prompt"]
    assert kontext.pairs == (("loras", "lorasScale", "LoRA"),)


@pytest.mark.parametrize(
    "raw",
    [
        [],
        {"model": {"inputs": {"a": 1}}},
        {"model": {"inputs": [{"type": "number"}]}},
        {"model": {"inputs": [{"name": "x", "type": "matrix"}]}},
    ],
)
def test_malformed_declarations_are_refused(raw: Any) -> None:
    """A declaration we cannot read is a ModelSpecError, never a crash later."""
    with pytest.raises(ModelSpecError):
        parse_model(raw, "model_t")


@pytest.mark.parametrize(
    ("declared", "value", "message"),
    [
        ({"type": "number", "min": 1.0, "max": 10.0}, 12, "must be 1.0-10.0, got 12"),
        ({"type": "number", "min": 1, "max": 4, "step": 1}, 1.5, "must be an integer 1-4"),
        ({"type": "number", "min": 0, "max": 10, "step": 2}, 3, "must be an integer 0-10"),
        ({"type": "number"}, True, "must be a number, got true"),
        ({"type": "number", "allowedValues": [1, 2]}, 3, "must be one of 1, 2, got 3"),
        ({"type": "string", "allowedValues": ["a", "b"]}, "c", "must be one of a, b, got 'c'"),
        ({"type": "string", "maxLength": 3}, "abcd", "a string of <= 3 characters, got 4"),
        ({"type": "string", "minLength": 1, "maxLength": 9}, "", "got an empty string"),
        ({"type": "boolean"}, "yes", "must be true or false"),
        ({"type": "file"}, ["a"], "must be one image"),
        ({"type": "file_array", "max": 2}, ["a", "b", "c"], "a list of <= 2 images"),
        ({"type": "string_array", "maxLength": 1}, ["a", "b"], "a list of <= 1 strings"),
        ({"type": "model_array"}, "model_a", "must be a list of model ids"),
        ({"type": "inputs_array", "min": 1}, [], "a list of >= 1 mappings"),
        ({"type": "model", "maxLength": 5}, "model_abc", "got 9 characters"),
    ],
)
def test_each_rule_has_a_message(declared: dict[str, Any], value: Any, message: str) -> None:
    """Every kind of limit yields `must be <expected>, got <value>` at the value itself."""
    spec = spec_of({"name": "x", **declared})
    findings = check_value(spec.by_name["x"], value)
    assert len(findings) == 1 and findings[0][0] == () and message in findings[0][1], findings


def test_array_entries_are_located() -> None:
    """A bad entry of a list is reported at its index, every bad entry at once."""
    spec = spec_of(
        {"name": "s", "type": "number_array"},
        {"name": "t", "type": "string_array", "allowedValues": ["a", "b"]},
    )
    assert check_value(spec.by_name["s"], [1, "x", 2.5, None]) == [
        ((1,), "must be a number, got 'x'"),
        ((3,), "must be a number, got null"),
    ]
    assert check_value(spec.by_name["t"], ["a", "z"]) == [((1,), "must be one of a, b, got 'z'")]


@given(
    low=st.integers(-1000, 1000),
    span=st.integers(0, 1000),
    value=st.one_of(st.integers(-3000, 3000), st.floats(-3000, 3000)),
    integer=st.booleans(),
)
def test_number_ranges(low: int, span: int, value: float, integer: bool) -> None:
    """A number passes exactly when it lies in [min, max] (and is an int where step is 1)."""
    declared: dict[str, Any] = {"name": "n", "type": "number", "min": low, "max": low + span}
    if integer:
        declared["step"] = 1
    ok = low <= value <= low + span and (not integer or isinstance(value, int))
    assert (check_value(spec_of(declared).by_name["n"], value) == []) == ok


@given(
    size=st.integers(0, 12),
    low=st.none() | st.integers(0, 5),
    high=st.none() | st.integers(5, 10),
    kind=st.sampled_from(["file_array", "number_array", "string_array", "model_array"]),
)
def test_array_sizes(size: int, low: int | None, high: int | None, kind: str) -> None:
    """Item counts are bounded by min/max (minLength/maxLength for string and model arrays)."""
    bounds = (
        ("minLength", "maxLength") if kind in ("string_array", "model_array") else ("min", "max")
    )
    declared: dict[str, Any] = {"name": "a", "type": kind}
    for key, bound in zip(bounds, (low, high), strict=True):
        if bound is not None:
            declared[key] = bound
    value: list[Any] = [1.5] * size if kind == "number_array" else ["x"] * size
    ok = (low is None or size >= low) and (high is None or size <= high)
    assert (check_value(spec_of(declared).by_name["a"], value) == []) == ok


def test_required_rules() -> None:
    """always, ifDefined, ifNotDefined and conditional (or / and, defaults counted)."""
    spec = spec_of(
        {"name": "a", "type": "string", "required": {"always": True}},
        {"name": "b", "type": "string", "required": {"ifDefined": {"c": "b goes with c"}}},
        {"name": "c", "type": "string"},
        {"name": "d", "type": "string", "required": {"ifNotDefined": {"e": ""}}},
        {"name": "e", "type": "string"},
        {"name": "mode", "type": "string", "default": "x"},
        {"name": "f", "type": "number", "required": {"conditional": {"values": {"mode": ["x"]}}}},
        {
            "name": "g",
            "type": "number",
            "required": {
                "conditional": {"values": {"mode": ["y"], "c": ["on"]}, "operator": "and"}
            },
        },
    )
    missing = {i.name: why for i, why in missing_required(spec, {"c": "on"})}
    assert missing == {
        "a": "",
        "b": "required when 'c' is given (b goes with c)",
        "d": "required when 'e' is not given",
        "f": "required when mode is 'x'",
    }
    missing = {
        i.name for i, _ in missing_required(spec, {"a": "", "e": "", "mode": "y", "c": "on"})
    }
    assert missing == {"b", "g"}


def test_pairs_from_the_loras_component() -> None:
    """A scales input must have one entry per entry of the models input it is paired with."""
    kontext = BUILTIN[KONTEXT]
    assert pair_problems(kontext, {"loras": ["a", "b"], "lorasScale": [1.0]}) == [
        ("lorasScale", "must have one number per LoRA (2), got 1")
    ]
    assert pair_problems(kontext, {"loras": ["a"], "lorasScale": [1.0]}) == []
