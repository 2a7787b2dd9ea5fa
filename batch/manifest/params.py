"""An item's generate parameters, merged from every level of the manifest and checked
against its model's declared inputs, each problem located where the value was written.

Levels, later ones winning: `defaults`, the top level's `models: {m: {...}}`, the job, the
prompt entry, the job's `models: {m: {...}}`. Each level's mapping is checked once per
model (a 100,000-item bulk job checks its keys once, not per item); required inputs are
checked per set of keys given.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from batch.models.inputs import (
    KONTEXT,
    ModelInput,
    ModelSpec,
    check_value,
    missing_required,
    pair_problems,
)

Loc = tuple[str | int, ...]
Report = Callable[[Loc, str], None]


@dataclass(slots=True)  # not frozen: one per job of a 100,000-job manifest, made cheaply
class Source:
    """One level's parameters: where they are written, and which keys that level also takes
    (for "did you mean" among them)."""

    loc: Loc
    params: Mapping[str, Any]
    structural: tuple[str, ...] = ()
    shared: bool = False  # used by many items (defaults, top-level models): checked once


@dataclass(slots=True)
class Resolved:
    """The merged, checked parameters of one (job, prompt entry, model)."""

    prompt: str
    params: dict[str, Any]  # every non-file input but the prompt; lists as tuples
    files: dict[str, list[str]]  # file inputs given (raw strings), by input name


class ParamsChecker:
    """Checks parameters against model specs, remembering what it has checked."""

    def __init__(self, report: Report, classify: Callable[[str], str | None]) -> None:
        self._report = report
        self._classify = classify  # a file input's value -> its problem, or None
        self._checked: dict[tuple[str, int], bool] = {}
        self._alive: list[Mapping[str, Any]] = []  # keeps the ids in `_checked` unique
        self._required: dict[tuple[str, frozenset[str]], list[tuple[ModelInput, str]]] = {}

    def resolve(
        self,
        spec: ModelSpec,
        sources: Sequence[Source],
        job_loc: Loc,
        entry_loc: Loc,
        bulk: bool,
        check_required: bool = True,
    ) -> Resolved | None:
        """The merged parameters, or None when a problem was reported."""
        ok = True
        merged: dict[str, Any] = {}
        for source in sources:
            if source.shared:
                ok = self._check_shared(spec, source) and ok
            else:
                ok = self._check_params(spec, source) and ok
            values = source.params
            if None in values.values():  # null: not given, the level below still applies
                merged.update((k, v) for k, v in values.items() if v is not None)
            else:
                merged.update(values)
        image = spec.image_input
        if bulk:
            if image is None:
                self._report(
                    (*job_loc, "images"),
                    f"{spec.model_id} takes no image input: images: has nothing to feed",
                )
                return None
            if image.type == "file" and image.name in merged:
                self._report(
                    (*_origin(sources, image.name), image.name),
                    f"must not be given here: images: feeds {image.name}, which takes one image",
                )
                ok = False
        if check_required and ok:  # a misspelt key would also read as a missing one
            ok = self._check_required(spec, merged, job_loc, entry_loc, bulk) and ok
        paired = ok and any(merged.get(scales) is not None for _, scales, _ in spec.pairs)
        for name, message in pair_problems(spec, merged) if paired else ():
            self._report((*_origin(sources, name), name), message)
            ok = False
        if not ok:
            return None
        files: dict[str, list[str]] = {}
        params: dict[str, Any] = {}
        prompt = ""
        floats = spec.model_id == KONTEXT
        for key, value in merged.items():
            declared = spec.by_name[key]
            if declared.is_file:
                files[key] = list(value) if isinstance(value, list | tuple) else [value]
            elif key == "prompt" and isinstance(value, str):
                prompt = value
            else:
                if floats and declared.type in _FLOAT_TYPES:
                    value = _as_floats(declared, value)
                params[key] = tuple(value) if isinstance(value, list) else value
        return Resolved(prompt, params, files)

    def _check_shared(self, spec: ModelSpec, source: Source) -> bool:
        key = (spec.model_id, id(source.params))
        known = self._checked.get(key)
        if known is None:
            self._alive.append(source.params)
            known = self._checked[key] = self._check_params(spec, source)
        return known

    def _check_params(self, spec: ModelSpec, source: Source) -> bool:
        ok = True
        for key, value in source.params.items():
            if value is None:
                continue  # null: not given
            declared = spec.by_name.get(key)
            if declared is None:
                self._report((*source.loc, key), unknown_key(key, spec, source.structural))
                ok = False
                continue
            if declared.quick_ok(value):
                if declared.is_file:
                    ok = self._check_files(declared, source.loc, value) and ok
                continue
            findings = check_value(declared, value)
            for where, message in findings:
                self._report((*source.loc, key, *where), message)
            if findings:
                ok = False
            elif declared.is_file:
                ok = self._check_files(declared, source.loc, value) and ok
        return ok

    def _check_files(self, declared: ModelInput, loc: Loc, value: Any) -> bool:
        classify = self._classify
        if declared.type == "file":
            trouble = classify(value)
            if trouble is not None:
                self._report((*loc, declared.name), trouble)
            return trouble is None
        ok = True
        for index, raw in enumerate(value):
            trouble = classify(raw)
            if trouble is not None:
                self._report((*loc, declared.name, index), trouble)
                ok = False
        return ok

    def _check_required(
        self, spec: ModelSpec, merged: dict[str, Any], job_loc: Loc, entry_loc: Loc, bulk: bool
    ) -> bool:
        given: dict[str, Any] = merged
        image = spec.image_input
        if bulk and image is not None and image.name not in merged:
            given = {**merged, image.name: ["<bulk image>"]}
        if spec.has_conditions:
            missing = missing_required(spec, given)
        else:
            cache_key = (spec.model_id, frozenset(given))
            cached = self._required.get(cache_key)
            if cached is None:
                cached = self._required[cache_key] = missing_required(spec, given)
            missing = cached
        for declared, why in missing:
            if declared.is_file and not why:
                self._report(job_loc, f"needs {declared.name} ({_to_edit(declared)}), got none")
            elif not why:
                self._report(
                    entry_loc,
                    f"missing required key {declared.name!r} (in the job or in defaults)",
                )
            else:
                self._report(entry_loc, f"missing key {declared.name!r}, {why}")
        return not missing


_FLOAT_TYPES = frozenset({"number", "number_array"})


def _origin(sources: Sequence[Source], key: str) -> Loc:
    """Where `key` was last set (its value wins)."""
    for source in reversed(sources):
        if source.params.get(key) is not None:
            return source.loc
    return ()


def _as_floats(declared: ModelInput, value: Any) -> Any:
    """The shipped model's non-integer numbers as floats (`guidanceScale: 4` -> 4.0), as
    they always were: fingerprints, and bodies matched against the jobs of interrupted
    submits, stay exactly what earlier versions made."""
    if declared.type == "number" and not declared.is_integer and isinstance(value, int):
        return float(value)
    if declared.type == "number_array" and isinstance(value, list):
        return [float(v) if isinstance(v, int) else v for v in value]
    return value


def _to_edit(declared: ModelInput) -> str:
    if declared.type == "file":
        return "an image to edit"
    low, high = declared.items_range()
    if low is not None and high is not None:
        return f"{low}-{high} images to edit"
    return "images to edit"


def unknown_key(key: str, spec: ModelSpec, structural: Sequence[str]) -> str:
    """`unknown key 'promt'; did you mean 'prompt'?`, among the model's inputs and the
    level's own keys."""
    names = [*structural, *spec.by_name]
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
    close = close or [n for n in names if n.lower() == key.lower()]
    if close:
        return f"unknown key {key!r}; did you mean {close[0]!r}?"
    if not spec.by_name:
        return f"unknown key {key!r}: {spec.model_id} declares no inputs (not a custom model?)"
    return f"unknown key {key!r}: not an input of {spec.model_id} (its inputs: " + (
        ", ".join(spec.by_name) + ")"
    )
