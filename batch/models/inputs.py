"""A model's inputs as the API declares them (`GET /v1/models/{modelId}` -> `model.inputs[]`),
and the checks a generate parameter must pass against them.

Shapes follow scenario-sdk's `ModelRetrieveResponse` (`ModelInput`, `ModelInputRequired`):
`min`/`max` bound numbers, and for arrays (`file_array`, `number_array`, `inputs_array`)
the number of items; `minLength`/`maxLength` bound strings and model ids in characters,
and for `string_array`/`model_array` the number of items. No input is required unless a
`required` rule says so; a `conditional` rule without an operator reads as `or` (the
stricter reading: any one condition makes the input required). `maxSize` (bytes) bounds
a file input's files (checked by the manifest on local files). A model's
`uiConfig.lorasComponent` pairs a `model_array` with a `number_array` of equal length.

Checks are pure and cheap: each message is `must be <expected>, got <value>` located by a
path relative to the parameter (`()` the value itself, `(2,)` its third entry).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

INPUT_TYPES: Final = frozenset(
    {
        "boolean",
        "file",
        "file_array",
        "inputs_array",
        "model",
        "model_array",
        "number",
        "number_array",
        "string",
        "string_array",
    }
)
FILE_TYPES: Final = frozenset({"file", "file_array"})
# Types whose minLength/maxLength count items, and those whose min/max do.
_LENGTH_COUNTS_ITEMS: Final = frozenset({"string_array", "model_array"})
_MINMAX_COUNTS_ITEMS: Final = frozenset({"file_array", "number_array", "inputs_array"})

Where = tuple[int, ...]  # inside a value: () itself, (k,) its entry k
Finding = tuple[Where, str]


class ModelSpecError(ValueError):
    """A model declaration we cannot use (malformed JSON from the API or the cache)."""


@dataclass(frozen=True, slots=True)
class Required:
    """When an input is required (`ModelInputRequired`)."""

    always: bool = False
    if_defined: Mapping[str, str] = field(default_factory=dict)
    if_not_defined: Mapping[str, str] = field(default_factory=dict)
    conditional: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    operator: str = "or"


@dataclass(frozen=True, slots=True)
class ModelInput:
    """One declared input (`ModelInput`): the key in the generate body and its limits."""

    name: str
    type: str
    allowed: tuple[Any, ...] | None = None
    min: float | None = None
    max: float | None = None
    min_length: float | None = None
    max_length: float | None = None
    step: float | None = None
    default: Any = None
    required: Required = field(default_factory=Required)
    kind: str | None = None
    max_size: float | None = None  # bytes, for file inputs
    # Derived once (checks run per job of a 100,000-job manifest).
    is_file: bool = field(init=False, compare=False)
    is_integer: bool = field(init=False, compare=False)  # a number stepped by whole numbers
    # True for most valid values, at a fraction of `check_value`'s cost; False: ask it.
    quick_ok: Callable[[Any], bool] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "is_file", self.type in FILE_TYPES)
        whole = (
            self.type == "number"
            and self.step is not None
            and float(self.step).is_integer()
            and (self.min is None or float(self.min).is_integer())
        )
        object.__setattr__(self, "is_integer", whole)
        object.__setattr__(self, "quick_ok", _quick_check(self))

    def items_range(self) -> tuple[float | None, float | None]:
        """The bounds on the number of items of an array input."""
        if self.type in _LENGTH_COUNTS_ITEMS:
            return _first(self.min_length, self.min), _first(self.max_length, self.max)
        return _first(self.min, self.min_length), _first(self.max, self.max_length)


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """Every input of one model, in declared order."""

    model_id: str
    inputs: tuple[ModelInput, ...]
    pairs: tuple[tuple[str, str, str], ...] = ()  # (models input, scales input, label)
    by_name: Mapping[str, ModelInput] = field(init=False, compare=False)
    file_inputs: tuple[ModelInput, ...] = field(init=False, compare=False)
    # The input bulk forms (`images:`) feed: the first file or file_array input.
    image_input: ModelInput | None = field(init=False, compare=False)
    has_conditions: bool = field(init=False, compare=False)  # any `conditional` rule

    def __post_init__(self) -> None:
        files = tuple(i for i in self.inputs if i.is_file)
        object.__setattr__(self, "by_name", {i.name: i for i in self.inputs})
        object.__setattr__(self, "file_inputs", files)
        object.__setattr__(self, "image_input", files[0] if files else None)
        object.__setattr__(self, "has_conditions", any(i.required.conditional for i in self.inputs))


def parse_model(raw: Any, model_id: str) -> ModelSpec:
    """A `ModelSpec` from a `GET /models/{id}` answer (`{"model": {...}}`) or its `model`."""
    model = raw.get("model", raw) if isinstance(raw, Mapping) else None
    if not isinstance(model, Mapping):
        raise ModelSpecError(f"model {model_id}: the answer holds no model")
    inputs = model.get("inputs") or []
    if not isinstance(inputs, list):
        raise ModelSpecError(f"model {model_id}: inputs must be a list")
    parsed = tuple(_parse_input(model_id, entry) for entry in inputs)
    pairs: list[tuple[str, str, str]] = []
    ui = model.get("uiConfig")
    loras = ui.get("lorasComponent") if isinstance(ui, Mapping) else None
    if isinstance(loras, Mapping):
        names, scales = loras.get("modelInput"), loras.get("scaleInput")
        if isinstance(names, str) and isinstance(scales, str):
            pairs.append((names, scales, str(loras.get("label") or names)))
    return ModelSpec(model_id, parsed, tuple(pairs))


def _parse_input(model_id: str, raw: Any) -> ModelInput:
    if not isinstance(raw, Mapping) or not isinstance(raw.get("name"), str):
        raise ModelSpecError(f"model {model_id}: an input without a name: {raw!r}")
    name, kind = raw["name"], raw.get("type")
    if kind not in INPUT_TYPES:
        raise ModelSpecError(f"model {model_id}: input {name} has unknown type {kind!r}")
    allowed = raw.get("allowedValues")
    return ModelInput(
        name=name,
        type=kind,
        allowed=tuple(allowed) if isinstance(allowed, list) and allowed else None,
        min=_number(raw.get("min")),
        max=_number(raw.get("max")),
        min_length=_number(raw.get("minLength")),
        max_length=_number(raw.get("maxLength")),
        step=_number(raw.get("step")),
        default=raw.get("default"),
        required=_parse_required(raw.get("required")),
        kind=raw.get("kind") if isinstance(raw.get("kind"), str) else None,
        max_size=_number(raw.get("maxSize")),
    )


def _parse_required(raw: Any) -> Required:
    if not isinstance(raw, Mapping):
        return Required()
    conditional: dict[str, tuple[Any, ...]] = {}
    operator = "or"
    rule = raw.get("conditional")
    if isinstance(rule, Mapping):
        values = rule.get("values")
        if isinstance(values, Mapping):
            for key, wanted in values.items():
                conditional[str(key)] = tuple(wanted) if isinstance(wanted, list) else (wanted,)
        operator = "and" if rule.get("operator") == "and" else "or"
    return Required(
        always=raw.get("always") is True,
        if_defined=_messages(raw.get("ifDefined")),
        if_not_defined=_messages(raw.get("ifNotDefined")),
        conditional=conditional,
        operator=operator,
    )


def _messages(raw: Any) -> dict[str, str]:
    if not isinstance(raw, Mapping):
        return {}
    return {str(k): v if isinstance(v, str) else "" for k, v in raw.items()}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value


def _first(a: float | None, b: float | None) -> float | None:
    return a if a is not None else b


# -- checks -----------------------------------------------------------------------------


def show(value: Any) -> str:
    """A value as the user wrote it, short."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        if value == "":
            return "an empty string"
        return repr(value) if len(value) <= 60 else repr(value[:57] + "...")
    if isinstance(value, list | tuple):
        return f"a list of {len(value)} entries" if value else "an empty list"
    if isinstance(value, dict):
        return "a mapping"
    return str(value)


def _num(value: float) -> str:
    return str(value)  # as declared: 1.0-10.0 for a float range, 1-4 for an integer one


def _range(low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        return f"{_num(low)}-{_num(high)}"
    if low is not None:
        return f">= {_num(low)}"
    return f"<= {_num(high)}" if high is not None else ""


def _count(low: float | None, high: float | None, what: str) -> str:
    span = _range(low, high)
    return f"a list of {span} {what}" if span else f"a list of {what}"


def expected(spec: ModelInput) -> str:
    """What a value of this input must be, for `must be <expected>, got ...`."""
    kind = spec.type
    if spec.allowed is not None and kind in ("string", "number"):
        return "one of " + ", ".join(str(v) for v in spec.allowed)
    if kind == "boolean":
        return "true or false"
    if kind == "number":
        span = _range(spec.min, spec.max)
        if spec.is_integer:
            return f"an integer {span}" if span else "an integer"
        return span or "a number"
    if kind in ("string", "model"):
        what = "a model id (a string)" if kind == "model" else "a string"
        low, high = spec.min_length, spec.max_length
        if low == 1 and high is not None:
            return f"a non-empty string of at most {int(high):,} characters"
        if low is not None or high is not None:
            return f"{what} of {_range(low, high)} characters"
        return what
    if kind == "file":
        return "one image (a local path, an asset id or an https URL)"
    low, high = spec.items_range()
    if kind == "file_array":
        return _count(low, high, "images (local paths, asset ids or https URLs)")
    what = {
        "number_array": "numbers",
        "string_array": "strings",
        "model_array": "model ids (strings)",
        "inputs_array": "mappings",
    }[kind]
    return _count(low, high, what)


def expected_entry(spec: ModelInput) -> str:
    """What each entry of an array input must be."""
    return {
        "file_array": "a string (local path, asset id or https URL)",
        "number_array": "a number",
        "string_array": "a string",
        "model_array": "a non-empty string",
        "inputs_array": "a mapping",
    }.get(spec.type, "valid")


def _is_number(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and (isinstance(value, int) or math.isfinite(value))
    )


def check_value(spec: ModelInput, value: Any) -> list[Finding]:
    """Every problem of one parameter value (never None: null means "not given")."""
    kind = spec.type
    if kind == "boolean":
        return [] if isinstance(value, bool) else _bad(spec, value)
    if kind == "number":
        return [] if _number_ok(spec, value) else _bad(spec, value)
    if kind in ("string", "model", "file"):
        if not isinstance(value, str) or (kind == "file" and not value):
            return _bad(spec, value)
        if kind == "file":
            return []
        if spec.allowed is not None and value not in spec.allowed:
            return _bad(spec, value)
        low, high = spec.min_length, spec.max_length
        if (low is not None and len(value) < low) or (high is not None and len(value) > high):
            got = show(value) if value == "" else f"{len(value):,} characters"
            return [((), f"must be {expected(spec)}, got {got}")]
        return []
    if not isinstance(value, list | tuple):
        return _bad(spec, value)
    low, high = spec.items_range()
    if (low is not None and len(value) < low) or (high is not None and len(value) > high):
        return _bad(spec, value)
    problems: list[Finding] = []
    for index, entry in enumerate(value):
        if not _entry_ok(spec, entry):
            problems.append(((index,), f"must be {expected_entry(spec)}, got {show(entry)}"))
        elif kind == "string_array" and spec.allowed is not None and entry not in spec.allowed:
            allowed = ", ".join(str(v) for v in spec.allowed)
            problems.append(((index,), f"must be one of {allowed}, got {show(entry)}"))
    return problems


def _quick_check(spec: ModelInput) -> Callable[[Any], bool]:
    """A check compiled for the common valid cases of one input; anything it does not
    accept goes through `check_value`, which has the final word and the message."""
    low = -math.inf if spec.min is None else spec.min
    high = math.inf if spec.max is None else spec.max
    if spec.allowed is not None or spec.step not in (None, 1):
        return _never
    if spec.type == "number" and spec.is_integer:
        return lambda v: type(v) is int and low <= v <= high
    if spec.type == "number":
        return lambda v: (type(v) is float or type(v) is int) and low <= v <= high
    if spec.type == "string":
        shortest = 0 if spec.min_length is None else spec.min_length
        longest = math.inf if spec.max_length is None else spec.max_length
        return lambda v: type(v) is str and shortest <= len(v) <= longest
    if spec.type == "file_array":
        fewest, most = spec.items_range()
        lo, hi = fewest or 0, math.inf if most is None else most
        return lambda v: (
            type(v) is list and lo <= len(v) <= hi and all(type(e) is str and e for e in v)
        )
    if spec.type == "file":
        return lambda v: type(v) is str and v != ""
    return _never


def _never(value: Any) -> bool:
    return False


def _bad(spec: ModelInput, value: Any) -> list[Finding]:
    return [((), f"must be {expected(spec)}, got {show(value)}")]


def _number_ok(spec: ModelInput, value: Any) -> bool:
    if not _is_number(value):
        return False
    if spec.allowed is not None:
        return bool(value in spec.allowed)
    if spec.is_integer and not isinstance(value, int):
        return False
    if (spec.min is not None and value < spec.min) or (spec.max is not None and value > spec.max):
        return False
    if spec.is_integer and spec.step is not None and spec.step > 1:
        return bool((value - (spec.min or 0)) % spec.step == 0)
    return True


def _entry_ok(spec: ModelInput, entry: Any) -> bool:
    kind = spec.type
    if kind == "number_array":
        return _is_number(entry)
    if kind == "inputs_array":
        return isinstance(entry, Mapping)
    if kind == "model_array" or kind == "file_array":
        return isinstance(entry, str) and entry != ""
    return isinstance(entry, str)


def missing_required(spec: ModelSpec, given: Mapping[str, Any]) -> list[tuple[ModelInput, str]]:
    """The required inputs `given` lacks, each with why it is required (`""`: always).

    `given` maps every parameter an item sends (file inputs included) to its value; a
    condition on another input reads that input's declared default when it is not given."""
    missing: list[tuple[ModelInput, str]] = []
    for entry in spec.inputs:
        if entry.name in given:
            continue
        rule = entry.required
        if rule.always:
            missing.append((entry, ""))
            continue
        why = next(
            (
                f"required when '{other}' is given" + (f" ({note})" if note else "")
                for other, note in rule.if_defined.items()
                if other in given
            ),
            None,
        ) or next(
            (
                f"required when '{other}' is not given" + (f" ({note})" if note else "")
                for other, note in rule.if_not_defined.items()
                if other not in given
            ),
            None,
        )
        if why is None and rule.conditional:
            why = _condition(spec, rule, given)
        if why is not None:
            missing.append((entry, why))
    return missing


def _condition(spec: ModelSpec, rule: Required, given: Mapping[str, Any]) -> str | None:
    met: list[str] = []
    for other, wanted in rule.conditional.items():
        declared = spec.by_name.get(other)
        value = given.get(other, declared.default if declared is not None else None)
        if value in wanted:
            met.append(f"{other} is {show(value)}")
        elif rule.operator == "and":
            return None
    if not met:
        return None
    return "required when " + " and ".join(met)


def pair_problems(spec: ModelSpec, given: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(input name, message) where a scales input does not match its models input."""
    problems: list[tuple[str, str]] = []
    for names, scales, label in spec.pairs:
        values = given.get(scales)
        if values is None:
            continue
        count = len(given.get(names) or ())
        if isinstance(values, Sequence) and len(values) != count:
            problems.append(
                (scales, f"must have one number per {label} ({count}), got {len(values)}")
            )
    return problems


# -- the model that ships with the tool -------------------------------------------------

KONTEXT: Final = "model_flux-kontext-editing"

# The inputs of model_flux-kontext-editing (API-NOTES), in the API's own shape.
KONTEXT_DECLARATION: Final[dict[str, Any]] = {
    "id": KONTEXT,
    "name": "Flux Kontext Editing",
    "inputs": [
        {
            "name": "referenceImages",
            "type": "file_array",
            "kind": "image",
            "min": 1,
            "max": 4,
            "required": {"always": True},
        },
        {
            "name": "prompt",
            "type": "string",
            "minLength": 1,
            "maxLength": 10_000,
            "required": {"always": True},
        },
        {"name": "numOutputs", "type": "number", "min": 1, "max": 4, "step": 1, "default": 1},
        {
            "name": "aspectRatio",
            "type": "string",
            "allowedValues": [
                *("auto", "1:1", "16:9", "9:16", "4:3"),
                *("3:4", "3:2", "2:3", "21:9", "9:21"),
            ],
            "default": "auto",
        },
        {
            "name": "quality",
            "type": "string",
            "allowedValues": ["high", "medium", "low"],
            "default": "high",
        },
        {"name": "guidanceScale", "type": "number", "min": 1.0, "max": 10.0, "default": 3.5},
        {"name": "seed", "type": "number", "min": 0, "max": 4_294_967_295, "step": 1},
        {"name": "loras", "type": "model_array"},
        {"name": "lorasScale", "type": "number_array"},
    ],
    "uiConfig": {
        "lorasComponent": {"label": "LoRA", "modelInput": "loras", "scaleInput": "lorasScale"}
    },
}
BUILTIN: Final[Mapping[str, ModelSpec]] = {KONTEXT: parse_model(KONTEXT_DECLARATION, KONTEXT)}
