"""`model:` and `models:` of a manifest level, and the parameter levels of an item.

`models:` is a list of model ids, or a mapping of model id to parameters for that model
only (null for none); it runs every item of its level with each model, and the item ids
get `--<model without model_>` appended. A job's own `model:`/`models:` replaces the top
level's; `model` and `models` together at one level are an error.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from batch.manifest.params import Loc, Source
from batch.manifest.schema import EXPECTED, MODEL_ID_PATTERN
from batch.models.inputs import show

MODEL_SEPARATOR: Final = "--"  # item id = base id + "--" + model tag, for `models:` lists
MODEL_ID: Final = re.compile(MODEL_ID_PATTERN)


@dataclass(frozen=True, slots=True)
class ModelUse:
    """A model an entry runs on; `tagged` (from a `models:` list) suffixes the item ids."""

    model: str
    tagged: bool


class ModelUses:
    """Reads the models of each level, remembering where each model is named."""

    def __init__(self, report: Callable[[Loc, str], None]) -> None:
        self._report = report
        self.named: dict[str, list[Loc]] = {}  # model id -> where it is named

    def parse(
        self, prefix: Loc, model: str | None, models: Any, *, shared: bool = False
    ) -> tuple[list[ModelUse] | None, dict[str, Source]]:
        """The models of a level (None: inherited) and its per-model parameters."""
        if models is None:
            if model is None:
                return None, {}
            self.named.setdefault(model, []).append((*prefix, "model"))
            return [ModelUse(model, False)], {}
        where: Loc = (*prefix, "models")
        if model is not None:
            self._report(where, "give either 'model' or 'models', not both")
            return [], {}
        per: dict[str, Source] = {}
        if isinstance(models, list):
            names: list[Any] = models
            locs: list[Loc] = [(*where, k) for k in range(len(models))]
        elif isinstance(models, dict):
            names, locs = list(models), [(*where, name) for name in models]
            for name, params in models.items():
                if isinstance(params, dict):
                    per[name] = Source((*where, name), params, shared=shared)
                elif params is not None:
                    self._report((*where, name), "must be a mapping of this model's parameters")
                    return [], {}
        else:
            self._report(
                where,
                "must be a list of model ids, or a mapping of model id to its parameters, "
                f"got {show(models)}",
            )
            return [], {}
        if not names:
            self._report(where, "must name at least one model, got none")
            return [], {}
        ok = True
        for name, loc in zip(names, locs, strict=True):
            if not isinstance(name, str) or not MODEL_ID.fullmatch(name):
                self._report(loc, f"must be {EXPECTED['model']}, got {show(name)}")
                ok = False
            elif names.count(name) > 1:
                self._report(loc, f"names model {name!r} twice")
                ok = False
            else:
                self.named.setdefault(name, []).append(loc)
        return ([ModelUse(name, True) for name in names] if ok else []), per


@dataclass(frozen=True, slots=True)
class Levels:
    """The parameter levels of a job: which apply to an item, in order (later wins)."""

    defaults: Source | None
    top: Mapping[str, Source]  # the top level's `models: {m: {...}}`
    job: Mapping[str, Source]  # the job's `models: {m: {...}}`

    def sources(self, model: str, own: Source, entry: list[Source]) -> list[Source]:
        found = [own, *entry] if self.defaults is None else [self.defaults, own, *entry]
        top, job = self.top.get(model), self.job.get(model)
        if top is not None:
            found.insert(0 if self.defaults is None else 1, top)
        if job is not None:
            found.append(job)
        return found

    def shared(self, own: Source, entry: list[Source]) -> list[Source]:
        """The levels every model of the job shares (what names an item across models)."""
        return [s for s in (self.defaults, own, *entry) if s is not None]


def _tag(model: str) -> str:
    """A model id as an item id suffix: `model_qwen-edit` -> `qwen-edit`."""
    return model.removeprefix("model_") or model


def model_tag(model: str) -> str:
    """A model id as an item id suffix: `model_qwen-edit` -> `qwen-edit`."""
    return model.removeprefix("model_") or model
