"""Input validation for `model_flux-kontext-editing`, collecting every problem.

Where the model reference is silent the choice is the strict one (see README):
no unknown keys, integers must be JSON integers, references must be existing
asset ids of this team (not URLs or data URLs).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

ASPECT_RATIOS = ("auto", "1:1", "16:9", "9:16", "4:3", "3:4", "3:2", "2:3", "21:9", "9:21")
QUALITIES = ("high", "medium", "low")
DEFAULTS: dict[str, Any] = {
    "numOutputs": 1,
    "aspectRatio": "auto",
    "quality": "high",
    "guidanceScale": 3.5,
}
KNOWN_KEYS = frozenset(
    {
        "referenceImages",
        "prompt",
        "numOutputs",
        "aspectRatio",
        "quality",
        "guidanceScale",
        "seed",
        "loras",
        "lorasScale",
    }
)
MAX_PROMPT_CHARS = 10_000
MAX_SEED = 2**32 - 1
LORA_SCALE_RANGE = (0.0, 2.0)

Problem = tuple[str, str]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def validate_inputs(
    body: Any, asset_exists: Callable[[str], bool], max_references: int
) -> tuple[dict[str, Any], list[Problem]]:
    """(params with defaults filled in, problems as (field, message)); no problems = valid."""
    if not isinstance(body, dict):
        return {}, [("body", "must be a JSON object")]
    problems: list[Problem] = []
    for key in sorted(set(body) - KNOWN_KEYS):
        problems.append((key, "is not an input of this model"))
    params = {**DEFAULTS, **{k: v for k, v in body.items() if k in KNOWN_KEYS}}

    refs = params.get("referenceImages")
    if refs is None:
        problems.append(("referenceImages", "is required"))
    elif not isinstance(refs, list) or not 1 <= len(refs) <= max_references:
        problems.append(
            ("referenceImages", f"must be a list of 1-{max_references} asset ids, got {refs!r}")
        )
    else:
        for i, ref in enumerate(refs):
            if not isinstance(ref, str) or not asset_exists(ref):
                problems.append((f"referenceImages[{i}]", f"asset {ref!r} does not exist"))

    prompt = params.get("prompt")
    if prompt is None:
        problems.append(("prompt", "is required"))
    elif not isinstance(prompt, str) or not prompt.strip() or len(prompt) > MAX_PROMPT_CHARS:
        problems.append(("prompt", f"must be a non-empty string of at most {MAX_PROMPT_CHARS}"))

    n = params["numOutputs"]
    if not _is_int(n) or not 1 <= n <= 4:
        problems.append(("numOutputs", f"must be an integer 1-4, got {n!r}"))
    if params["aspectRatio"] not in ASPECT_RATIOS:
        problems.append(("aspectRatio", f"must be one of {', '.join(ASPECT_RATIOS)}"))
    if params["quality"] not in QUALITIES:
        problems.append(("quality", f"must be one of {', '.join(QUALITIES)}"))
    g = params["guidanceScale"]
    if not _is_number(g) or not 1.0 <= g <= 10.0:
        problems.append(("guidanceScale", f"must be a number 1.0-10.0, got {g!r}"))
    if "seed" in params:
        seed = params["seed"]
        if not _is_int(seed) or not 0 <= seed <= MAX_SEED:
            problems.append(("seed", f"must be an integer 0-{MAX_SEED}, got {seed!r}"))
    problems.extend(_lora_problems(params))
    return params, problems


def _lora_problems(params: dict[str, Any]) -> list[Problem]:
    problems: list[Problem] = []
    loras = params.get("loras")
    scales = params.get("lorasScale")
    if loras is not None and (
        not isinstance(loras, list) or not all(isinstance(x, str) and x for x in loras)
    ):
        problems.append(("loras", "must be a list of model ids"))
    if scales is not None:
        low, high = LORA_SCALE_RANGE
        if not isinstance(scales, list) or not all(
            _is_number(s) and low <= s <= high for s in scales
        ):
            problems.append(("lorasScale", f"must be a list of numbers {low}-{high}"))
        elif not isinstance(loras, list) or len(loras) != len(scales):
            problems.append(("lorasScale", "must have one scale per entry of loras"))
    return problems


def describe(problems: list[Problem]) -> str:
    """One line naming every field: `prompt: is required; numOutputs: ...`."""
    return "; ".join(f"{name}: {message}" for name, message in problems)
