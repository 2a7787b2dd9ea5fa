"""The manifest's shape as pydantic models: the validator's boundary and the JSON Schema's source.

Models forbid unknown keys and are strict (no "1" -> 1, no true -> 1). Generate
parameters are any model's inputs, so `Params` lets any key through; `batch.manifest.load` checks
them against the model's declared inputs (`batch.models.inputs`), with the other cross-field
rules (required inputs, reference kinds, unique ids). The JSON Schema lists the inputs of
`model_flux-kontext-editing` for editor completion and allows any other key.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from batch.models.inputs import BUILTIN, KONTEXT, ModelInput, expected

ID_PATTERN = r"^[A-Za-z0-9._-]{1,128}$"
MODEL_ID_PATTERN = r"^[A-Za-z0-9._-]{1,200}$"

_CONFIG = ConfigDict(
    extra="forbid", strict=True, allow_inf_nan=False, protected_namespaces=(), frozen=True
)

Id = Annotated[str, Field(pattern=ID_PATTERN)]
PathStr = Annotated[str, Field(min_length=1, max_length=4096)]


_PARAMS_CONFIG = ConfigDict(
    extra="allow", strict=True, allow_inf_nan=False, protected_namespaces=(), frozen=True
)
ModelId = Annotated[str, Field(pattern=MODEL_ID_PATTERN)]


class Params(BaseModel):
    """Generate parameters: any input the model declares, under the API's own name.

    Their values are checked against the model's declared inputs (`batch.models.inputs`),
    not here; a `null` value means "not given"."""

    model_config = _PARAMS_CONFIG


class PromptEntry(Params):
    """One prompt of a prompt x image matrix; its own parameters override the job's."""

    id: Id | None = Field(None, description="Used in item ids; defaults to p1, p2, ...")
    prompt: Any = Field(description="What to do to the image.")


class ImagesSpec(BaseModel):
    """Where a bulk job finds its images: exactly one of glob or folder."""

    model_config = _CONFIG

    glob: PathStr | None = Field(None, description="Glob relative to the manifest (** recurses).")
    folder: PathStr | None = Field(None, description="Every image file directly in this folder.")


MODELS_DESCRIPTION = (
    "Run every item with each model: a list of model ids, or a mapping of model id to "
    "parameters for that model only (null for none). Item ids get '--<model>' appended."
)


class Job(Params):
    """One job, or a bulk job when `images` or `prompts` is given."""

    id: Id | None = Field(None, description="Unique item id; derived when absent.")
    images: PathStr | ImagesSpec | None = Field(
        None,
        description="Bulk: a glob or folder of images, one item per image "
        "(the image goes to the model's first file input).",
    )
    prompts: Annotated[list[PromptEntry], Field(min_length=1)] | None = Field(
        None, description="Bulk: a prompt x image matrix; one item per prompt and image."
    )
    model: ModelId | None = Field(None, description="This job's model (overrides the top level).")
    models: Any = Field(None, description=MODELS_DESCRIPTION)
    # Read before validation (batch.manifest.table): declared for the schema and suggestions.
    table: PathStr | None = Field(
        None,
        description="Bulk: a .csv, .tsv or .jsonl file (relative to the manifest), one item "
        "per row; the other keys apply to every row, `id` prefixes the rows' ids.",
    )


class ManifestModel(BaseModel):
    """A scenario-batch manifest, version 1."""

    model_config = ConfigDict(**_CONFIG, title="scenario-batch manifest")

    version: Literal[1] | None = None
    model: ModelId | None = Field(None, description="Model id; default model_flux-kontext-editing.")
    models: Any = Field(None, description=MODELS_DESCRIPTION)
    projectId: Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,200}$")] | None = None
    output: PathStr | None = Field(None, description="Output directory, relative to this file.")
    concurrency: Annotated[int, Field(ge=1, le=1024)] | None = None
    maxCost: Annotated[float, Field(gt=0)] | None = Field(
        None, description="Stop submitting before this many compute units are spent."
    )
    jobTimeout: Annotated[float, Field(gt=0, le=7 * 86400)] | None = Field(
        None, description="Seconds a job may run before it is failed."
    )
    defaults: Params | None = None
    jobs: Annotated[list[Job], Field(min_length=1)]


# What each structural field must be, for messages like "must be an integer 1-1024, got 0".
EXPECTED: dict[str, str] = {
    "version": "1",
    "model": "a model id (letters, digits, '.', '_', '-')",
    "projectId": "a project id (letters, digits, '.', '_', '-')",
    "output": "a directory path (a string)",
    "concurrency": "an integer 1-1024",
    "maxCost": "a number > 0 (compute units)",
    "jobTimeout": "a number of seconds > 0 (at most 604800)",
    "defaults": "a mapping of generate parameters",
    "jobs": "a non-empty list of jobs",
    "id": "1-128 letters, digits, '.', '_' or '-'",
    "images": "a glob or folder (a string), or a mapping with 'glob' or 'folder'",
    "prompts": "a non-empty list of {id, prompt} mappings",
    "glob": "a glob pattern (a string)",
    "folder": "a folder path (a string)",
    "table": "a path to a .csv, .tsv or .jsonl file",
}
# What each entry of a list field must be.
EXPECTED_ENTRY: dict[str, str] = {
    "jobs": "a mapping (one job)",
    "prompts": "a mapping with a prompt",
}
# Keys valid at each level, for "did you mean" suggestions.
KEYS: dict[str, list[str]] = {
    "": list(ManifestModel.model_fields),
    "defaults": list(Params.model_fields),
    "jobs": list(Job.model_fields),
    "prompts": list(PromptEntry.model_fields),
    "images": list(ImagesSpec.model_fields),
}


def manifest_json_schema() -> dict[str, Any]:
    """JSON Schema of the manifest, from the models the validator uses; generate
    parameters are described by the shipped model's inputs (any other key is allowed)."""
    schema = ManifestModel.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    models_schema = {
        "description": MODELS_DESCRIPTION,
        "anyOf": [
            {"type": "array", "items": {"type": "string", "pattern": MODEL_ID_PATTERN}},
            {
                "type": "object",
                "additionalProperties": {"anyOf": [{"type": "object"}, {"type": "null"}]},
            },
        ],
    }
    schema["properties"]["models"] = models_schema
    inputs = {i.name: _input_schema(i) for i in BUILTIN[KONTEXT].inputs}
    for name in ("Params", "Job", "PromptEntry"):
        definition = schema["$defs"][name]
        if name == "Job":
            definition["properties"]["models"] = models_schema
        own = definition.get("properties", {})
        definition["properties"] = {**inputs, **own}
        definition["additionalProperties"] = True
    return schema


def _input_schema(spec: ModelInput) -> dict[str, Any]:
    """One declared input as JSON Schema (the shipped model's, for editor completion)."""
    described: dict[str, Any] = {"description": f"{KONTEXT}: {expected(spec)}."}
    low, high = spec.items_range()
    if spec.type == "number":
        described["type"] = "integer" if spec.is_integer else "number"
        bounds = {"minimum": spec.min, "maximum": spec.max}
        described.update({k: v for k, v in bounds.items() if v is not None})
    elif spec.type in ("string", "model", "file"):
        described["type"] = "string"
        if spec.allowed is not None:
            described["enum"] = list(spec.allowed)
        if spec.min_length is not None:
            described["minLength"] = int(spec.min_length)
        if spec.max_length is not None:
            described["maxLength"] = int(spec.max_length)
    elif spec.type == "boolean":
        described["type"] = "boolean"
    else:
        item = {"number_array": {"type": "number"}, "inputs_array": {"type": "object"}}
        described["type"] = "array"
        described["items"] = item.get(spec.type, {"type": "string"})
        if low is not None:
            described["minItems"] = int(low)
        if high is not None:
            described["maxItems"] = int(high)
    return {"anyOf": [described, {"type": "null"}]}
