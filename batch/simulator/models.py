"""The models the simulator serves: `GET /v1/models/{modelId}` and what each generate body
must satisfy.

Three editing models with different input names and kinds:
- `model_flux-kontext-editing`: `referenceImages` (a list of 1-4), the table of API-NOTES
  (its bodies are checked by `validation.validate_inputs`, as before).
- `model_qwen-image-edit`: a single `image` (a `file`), `cfgScale` required when
  `negativePrompt` is given (`ifDefined`).
- `model_seedream-multi-edit`: `sourceImages` (a `file_array` of 1-3), `styleStrength`
  required when `style` is watercolor or sketch (`conditional`), a `string_array`.

Other models' bodies are checked against the declared inputs here, independently of the
product's checks (the simulator shares no code with the client): unknown keys, types,
ranges, allowed values, lengths, item counts, every `required` rule, and file inputs must
name existing assets. Each problem is `(field, message)`, answered as a 400 naming them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from .config import MODEL_ID

QWEN = "model_qwen-image-edit"
SEEDREAM = "model_seedream-multi-edit"
Problem = tuple[str, str]

_ASPECT_RATIOS = ["auto", "1:1", "16:9", "9:16", "4:3", "3:4", "3:2", "2:3", "21:9", "9:21"]

INPUTS: dict[str, list[dict[str, Any]]] = {
    MODEL_ID: [
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
            "allowedValues": _ASPECT_RATIOS,
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
    QWEN: [
        {"name": "image", "type": "file", "kind": "image", "required": {"always": True}},
        {"name": "prompt", "type": "string", "maxLength": 2_000, "required": {"always": True}},
        {"name": "negativePrompt", "type": "string", "maxLength": 2_000},
        {
            "name": "cfgScale",
            "type": "number",
            "min": 1,
            "max": 20,
            "default": 4,
            "required": {"ifDefined": {"negativePrompt": "a negative prompt needs a CFG scale"}},
        },
        {"name": "strength", "type": "number", "min": 0.0, "max": 1.0, "default": 0.8},
        {"name": "numOutputs", "type": "number", "min": 1, "max": 2, "step": 1, "default": 1},
        {"name": "seed", "type": "number", "min": 0, "max": 2_147_483_647, "step": 1},
    ],
    SEEDREAM: [
        {
            "name": "sourceImages",
            "type": "file_array",
            "kind": "image",
            "min": 1,
            "max": 3,
            "required": {"always": True},
        },
        {"name": "prompt", "type": "string", "maxLength": 4_000, "required": {"always": True}},
        {
            "name": "style",
            "type": "string",
            "allowedValues": ["none", "watercolor", "sketch"],
            "default": "none",
        },
        {
            "name": "styleStrength",
            "type": "number",
            "min": 0.0,
            "max": 1.0,
            "required": {
                "conditional": {"values": {"style": ["watercolor", "sketch"]}, "operator": "or"}
            },
        },
        {"name": "enhancePrompt", "type": "boolean", "default": False},
        {"name": "tags", "type": "string_array", "maxLength": 5},
        {"name": "seed", "type": "number", "min": 0, "max": 2_147_483_647, "step": 1},
    ],
}
UI_CONFIG: dict[str, dict[str, Any]] = {
    MODEL_ID: {
        "lorasComponent": {"label": "LoRA", "modelInput": "loras", "scaleInput": "lorasScale"}
    }
}
NAMES = {
    MODEL_ID: "Flux Kontext Editing",
    QWEN: "Qwen Image Edit",
    SEEDREAM: "Seedream Multi Edit",
}
# Compute units per output, relative to the configured cost_per_output.
COST_FACTOR = {MODEL_ID: 1.0, QWEN: 0.6, SEEDREAM: 1.6}


def model_json(model_id: str, created: str) -> dict[str, Any]:
    """The `model` object of GET /v1/models/{modelId}, as `ModelRetrieveResponse` reads it."""
    shape: dict[str, Any] = {
        "id": model_id,
        "name": NAMES[model_id],
        "type": "custom",
        "capabilities": ["img2img"],
        "collectionIds": [],
        "createdAt": created,
        "updatedAt": created,
        "custom": True,
        "exampleAssetIds": [],
        "privacy": "public",
        "source": "scenario",
        "status": "trained",
        "tags": ["editing"],
        "trainingImagesNumber": 0,
        "inputs": INPUTS[model_id],
    }
    if model_id in UI_CONFIG:
        shape["uiConfig"] = UI_CONFIG[model_id]
    return shape


def file_ids(model_id: str, body: Mapping[str, Any]) -> list[str]:
    """The asset ids a valid body's file inputs name, in declared order."""
    found: list[str] = []
    for spec in INPUTS[model_id]:
        value = body.get(spec["name"])
        if spec["type"] == "file" and isinstance(value, str):
            found.append(value)
        elif spec["type"] == "file_array" and isinstance(value, list):
            found.extend(v for v in value if isinstance(v, str))
    return found


def validate_declared(
    model_id: str, body: Any, asset_exists: Callable[[str], bool]
) -> tuple[dict[str, Any], list[Problem]]:
    """(the body with declared defaults filled in, problems); no problems = valid."""
    if not isinstance(body, dict):
        return {}, [("body", "must be a JSON object")]
    inputs = {spec["name"]: spec for spec in INPUTS[model_id]}
    problems = [(key, "is not an input of this model") for key in sorted(set(body) - set(inputs))]
    filled = {name: spec["default"] for name, spec in inputs.items() if "default" in spec}
    filled.update({k: v for k, v in body.items() if k in inputs})
    for name, spec in inputs.items():
        if name in body:
            problems.extend(_value_problems(name, spec, body[name], asset_exists))
        else:
            reason = _required_because(spec.get("required") or {}, body, filled)
            if reason is not None:
                problems.append((name, f"is required{reason}"))
    return filled, problems


def _required_because(rule: Mapping[str, Any], body: Mapping[str, Any], filled: Any) -> str | None:
    if rule.get("always"):
        return ""
    for other in rule.get("ifDefined") or {}:
        if other in body:
            return f" when {other} is given"
    for other in rule.get("ifNotDefined") or {}:
        if other not in body:
            return f" when {other} is not given"
    conditional = rule.get("conditional")
    if conditional:
        hits = [filled.get(k) in v for k, v in conditional["values"].items()]
        if all(hits) if conditional.get("operator") == "and" else any(hits):
            return " for these values of " + ", ".join(conditional["values"])
    return None


def _number(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and not (isinstance(value, float) and not math.isfinite(value))
    )


def _value_problems(
    name: str, spec: Mapping[str, Any], value: Any, asset_exists: Callable[[str], bool]
) -> list[Problem]:
    kind = spec["type"]
    low, high = spec.get("min"), spec.get("max")
    if kind == "boolean":
        return [] if isinstance(value, bool) else [(name, "must be a boolean")]
    if kind == "number":
        whole = spec.get("step") == 1
        if not _number(value) or (whole and not isinstance(value, int)):
            return [(name, "must be " + ("an integer" if whole else "a number"))]
        if (low is not None and value < low) or (high is not None and value > high):
            return [(name, f"must be between {low} and {high}, got {value!r}")]
        allowed = spec.get("allowedValues")
        return [(name, f"must be one of {allowed}")] if allowed and value not in allowed else []
    if kind in ("string", "model"):
        if not isinstance(value, str):
            return [(name, "must be a string")]
        allowed = spec.get("allowedValues")
        if allowed and value not in allowed:
            return [(name, f"must be one of {', '.join(allowed)}, got {value!r}")]
        if len(value) > spec.get("maxLength", math.inf) or len(value) < spec.get("minLength", 0):
            return [(name, "has a length out of range")]
        return []
    if kind == "file":
        if not isinstance(value, str) or not asset_exists(value):
            return [(name, f"asset {value!r} does not exist")]
        return []
    if not isinstance(value, list):
        return [(name, "must be an array")]
    if kind in ("string_array", "model_array"):
        low, high = spec.get("minLength", low), spec.get("maxLength", high)
    if (low is not None and len(value) < low) or (high is not None and len(value) > high):
        return [(name, f"must hold {low or 0}-{high} items, got {len(value)}")]
    problems: list[Problem] = []
    for index, entry in enumerate(value):
        where = f"{name}[{index}]"
        if kind == "file_array" and (not isinstance(entry, str) or not asset_exists(entry)):
            problems.append((where, f"asset {entry!r} does not exist"))
        elif kind == "number_array" and not _number(entry):
            problems.append((where, "must be a number"))
        elif kind in ("string_array", "model_array") and not isinstance(entry, str):
            problems.append((where, "must be a string"))
    return problems
