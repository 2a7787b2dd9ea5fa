"""The manifest's shape as pydantic models: the validator's boundary and the JSON Schema's source.

Models forbid unknown keys and are strict (no "1" -> 1, no true -> 1). Field names are the
API's own parameter names. Cross-field rules (prompt present after defaults, loras and
lorasScale of equal length, reference kinds, ids unique) live in `batch.manifest`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_PROMPT_CHARS = 10_000
MAX_REFERENCES = 4
ID_PATTERN = r"^[A-Za-z0-9._-]{1,128}$"
ASPECT_RATIOS = ("auto", "1:1", "16:9", "9:16", "4:3", "3:4", "3:2", "2:3", "21:9", "9:21")
QUALITIES = ("high", "medium", "low")

_CONFIG = ConfigDict(
    extra="forbid", strict=True, allow_inf_nan=False, protected_namespaces=(), frozen=True
)

Prompt = Annotated[str, Field(min_length=1, max_length=MAX_PROMPT_CHARS)]
Id = Annotated[str, Field(pattern=ID_PATTERN)]
PathStr = Annotated[str, Field(min_length=1, max_length=4096)]


class Params(BaseModel):
    """Generate parameters (API names). Every field may come from `defaults` or the job."""

    model_config = _CONFIG

    prompt: Prompt | None = Field(None, description="What to do to the reference image(s).")
    referenceImages: (
        Annotated[list[PathStr], Field(min_length=1, max_length=MAX_REFERENCES)] | None
    ) = Field(
        None,
        description="1-4 images: a path relative to the manifest, an asset id "
        "(asset_...), or an https:// URL.",
    )
    numOutputs: Annotated[int, Field(ge=1, le=4)] | None = Field(
        None, description="Images to generate per job (1-4)."
    )
    aspectRatio: Literal[ASPECT_RATIOS] | None = None  # type: ignore[valid-type]
    quality: Literal[QUALITIES] | None = None  # type: ignore[valid-type]
    guidanceScale: Annotated[float, Field(ge=1.0, le=10.0)] | None = None
    seed: Annotated[int, Field(ge=0, le=2**32 - 1)] | None = None
    loras: list[Annotated[str, Field(min_length=1, max_length=256)]] | None = Field(
        None, description="LoRA model ids."
    )
    lorasScale: list[float] | None = Field(None, description="One scale per LoRA.")


class PromptEntry(Params):
    """One prompt of a prompt x image matrix; its own parameters override the job's."""

    id: Id | None = Field(None, description="Used in item ids; defaults to p1, p2, ...")
    prompt: Prompt = Field(description="What to do to the image.")


class ImagesSpec(BaseModel):
    """Where a bulk job finds its images: exactly one of glob or folder."""

    model_config = _CONFIG

    glob: PathStr | None = Field(None, description="Glob relative to the manifest (** recurses).")
    folder: PathStr | None = Field(None, description="Every image file directly in this folder.")


class Job(Params):
    """One job, or a bulk job when `images` or `prompts` is given."""

    id: Id | None = Field(None, description="Unique item id; derived when absent.")
    images: PathStr | ImagesSpec | None = Field(
        None,
        description="Bulk: a glob or folder of images, one item per image "
        "(the image becomes the first reference).",
    )
    prompts: Annotated[list[PromptEntry], Field(min_length=1)] | None = Field(
        None, description="Bulk: a prompt x image matrix; one item per prompt and image."
    )


class ManifestModel(BaseModel):
    """A scenario-batch manifest, version 1."""

    model_config = ConfigDict(**_CONFIG, title="scenario-batch manifest")

    version: Literal[1] | None = None
    model: Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,200}$")] | None = Field(
        None, description="Model id; default model_flux-kontext-editing."
    )
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


# What each field must be, for messages like "must be 1.0-10.0, got 12".
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
    "prompt": f"a non-empty string of at most {MAX_PROMPT_CHARS:,} characters",
    "referenceImages": "a list of 1-4 images (local paths, asset ids or https URLs)",
    "numOutputs": "an integer 1-4",
    "aspectRatio": "one of " + ", ".join(ASPECT_RATIOS),
    "quality": "one of " + ", ".join(QUALITIES),
    "guidanceScale": "1.0-10.0",
    "seed": f"an integer 0-{2**32 - 1}",
    "loras": "a list of LoRA model ids (strings)",
    "lorasScale": "a list of numbers, one per LoRA",
    "id": "1-128 letters, digits, '.', '_' or '-'",
    "images": "a glob or folder (a string), or a mapping with 'glob' or 'folder'",
    "prompts": "a non-empty list of {id, prompt} mappings",
    "glob": "a glob pattern (a string)",
    "folder": "a folder path (a string)",
}
# What each entry of a list field must be.
EXPECTED_ENTRY: dict[str, str] = {
    "jobs": "a mapping (one job)",
    "prompts": "a mapping with a prompt",
    "referenceImages": "a string (local path, asset id or https URL)",
    "loras": "a non-empty string",
    "lorasScale": "a number",
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
    """JSON Schema of the manifest, from the models the validator uses."""
    schema = ManifestModel.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema
