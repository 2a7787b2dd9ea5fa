"""YAML manifest -> validated, frozen `Manifest` of `Item`s; every problem located.

Every problem found is collected, then raised together as one `ManifestError`; each names
the file, the line, the place (a job also by its id) and what was expected, e.g.
`example.yaml:14 jobs[3] (cat-watercolor).guidanceScale: must be 1.0-10.0, got 12`.

Models
------
Each item runs on one model (``model:``, top level or per job; default
``model_flux-kontext-editing``), or on each of ``models:`` (`batch.manifest.models`). Its
parameters are any inputs that model declares, checked against the declaration
(`batch.manifest.params`, `batch.models.inputs`); where declarations come from is the
caller's `ModelSource` (`batch.models.catalog.ModelCatalog`: shipped, cached, fetched).

Bulk jobs
---------
A job with ``images`` expands to one item per image; a job with ``prompts`` expands to one
item per prompt; with both, to a prompt x image matrix. All other keys of the job
(``seed``, ``quality``, ``referenceImages``...) apply to every item it expands to.

.. code-block:: yaml

    jobs:
      # One prompt over every image a glob matches (relative to the manifest; ** recurses).
      - id: products
        prompt: Put the product on a white marble table
        images: "photos/*.jpg"          # or images: {glob: "photos/**/*.jpg"}

      # Every image file (png, jpg, jpeg, webp, gif, bmp, tif, tiff) directly in a folder.
      - id: portraits
        prompt: Make it a pencil sketch
        images: {folder: portraits}     # or images: portraits   (a string naming a folder)

      # A prompt x image matrix: 2 prompts x N images = 2N items.
      - id: styles
        images: "photos/*.jpg"
        referenceImages: [style/palette.png]   # extra references follow the bulk image
        prompts:
          - {id: wc, prompt: Turn it into a watercolor}
          - {id: ink, prompt: Turn it into an ink drawing, seed: 7}   # per-prompt params

Each matched image becomes the item's first reference image (the model's first file
input: kontext's ``referenceImages``); ``referenceImages`` given in the job follow it (at
most 4 in all). Matches are sorted by path, and a glob or folder
that matches nothing is an error.

Item ids: ``<job id>-<image stem>`` (``products-cat``) for ``images``,
``<job id>-<prompt id>-<image stem>`` (``styles-wc-cat``) for a matrix, ``<job id>-<prompt
id>`` for ``prompts`` alone. Prompt ids default to ``p1``, ``p2``, ... Stems are reduced to
``[A-Za-z0-9._-]``; where two stems collide the file suffix is kept (``cat.png``,
``cat.jpg``), and where that still collides a short hash of the path is appended.
A bulk job without an ``id`` gets derived ids like a plain job without one:
``<stem>-<8 hex of the item's fingerprint>`` (``cat-3f9a1c2b``), stable across runs and
machines, suffixed ``-2``, ``-3`` only when two items are identical. Ids you name
(directly, or through a job id) must be unique, also ignoring case.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import gc
import glob as globlib
import hashlib
import json
import os
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, Protocol
from urllib.parse import urlsplit

from pydantic import ValidationError

from batch.errors import ManifestError, Problem
from batch.manifest.bulk import BulkError, find_images, image_keys, sanitize
from batch.manifest.files import FileChecker
from batch.manifest.models import (
    MODEL_ID,
    MODEL_SEPARATOR,
    Levels,
    ModelUse,
    ModelUses,
    model_tag,
)
from batch.manifest.params import ParamsChecker, Resolved, Source
from batch.manifest.schema import (
    EXPECTED,
    EXPECTED_ENTRY,
    ID_PATTERN,
    KEYS,
    Job,
    ManifestModel,
    PromptEntry,
    manifest_json_schema,
)
from batch.manifest.table import JobOrigins, Kind, KindOf, expand_tables, kind_of_input
from batch.manifest.yaml_lines import LineMap, YamlError, load_yaml
from batch.models.inputs import BUILTIN, KONTEXT, ModelInput, ModelSpec, show

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = [
    "DEFAULT_MODEL",
    "Item",
    "Manifest",
    "ModelSource",
    "Reference",
    "load_manifest",
    "manifest_json_schema",
]

DEFAULT_MODEL = KONTEXT
MAX_MANIFEST_BYTES = 20 * 2**20
MAX_ITEMS = 200_000
MAX_PROBLEMS_SHOWN = 200
MAX_URL_CHARS = 2048
ASSET_ID = re.compile(r"asset_[A-Za-z0-9]+")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_ID = re.compile(ID_PATTERN)
_JOB_KEYS = tuple(KEYS["jobs"])
_PROMPT_KEYS = tuple(KEYS["prompts"])
# The file layout of the shipped model: fingerprints of such items keep their old shape.
_KONTEXT_FILES = ("referenceImages",)

_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
# What `_CANONICAL.encode` runs, made once instead of per call (a third of its time per
# item). No cycle check: YAML data holds none (an alias inside its own anchor is refused).
_make_encoder: Any = getattr(json.encoder, "c_make_encoder", None)
_encode_chunks = (
    None
    if _make_encoder is None
    else _make_encoder(
        None, _CANONICAL.default, json.encoder.encode_basestring, None, ":", ",", True, False, True
    )
)


def _canonical(value: Any) -> str:
    """`_CANONICAL.encode(value)`, faster."""
    if _encode_chunks is None:
        return _CANONICAL.encode(value)
    return "".join(_encode_chunks(value, 0))


Loc = tuple[str | int, ...]
_NO_PARAMS: Mapping[str, Any] = MappingProxyType({})  # shared by every item without params
_Entry = tuple[str, int, PromptEntry]  # (prompt id, index in prompts, the entry)
# An entry's references (without a bulk image) and their split: (input, count, is a list).
_Files = tuple[tuple["Reference", ...], tuple[tuple[str, int, bool], ...]]


@dataclass(frozen=True, slots=True)
class Reference:
    """One reference image: an absolute path ("file"), an asset id, or an https URL."""

    kind: Literal["file", "asset", "url"]
    value: str


@dataclass(frozen=True, slots=True)
class Item:
    """One generate call: its id is safe as a file name stem; params use the API's names.

    `references` are the images of every file input, in the model's declared order;
    `file_inputs` says how they split: (input name, how many, whether it takes a list)."""

    id: str
    prompt: str
    references: tuple[Reference, ...]
    params: Mapping[str, Any] = field(hash=False)  # read-only; defaults merged
    fingerprint: str
    model: str = DEFAULT_MODEL
    base_id: str = ""  # the id without any per-model suffix; "" -> the id
    file_inputs: tuple[tuple[str, int, bool], ...] = ()  # () -> all in referenceImages

    def __post_init__(self) -> None:
        if not self.base_id:
            object.__setattr__(self, "base_id", self.id)

    @property
    def num_outputs(self) -> int:
        return int(self.params.get("numOutputs", 1))

    def generate_body(self, reference_asset_ids: Sequence[str]) -> dict[str, Any]:
        """The JSON body of POST /generate/custom/{model} once references are uploaded:
        only inputs the model declares."""
        body: dict[str, Any] = {}
        if not self.file_inputs:
            body["referenceImages"] = list(reference_asset_ids)
        start = 0
        for name, count, is_list in self.file_inputs:
            ids = list(reference_asset_ids[start : start + count])
            body[name] = ids if is_list else ids[0]
            start += count
        if self.prompt:
            body["prompt"] = self.prompt
        for key, value in self.params.items():
            body[key] = list(value) if isinstance(value, tuple) else value
        return body


@dataclass(frozen=True, slots=True)
class Manifest:
    """A validated manifest: top-level settings and its items, in manifest order."""

    path: Path
    model: str  # the top level's model (the first of `models:`), default kontext
    project_id: str | None
    output: Path | None
    concurrency: int | None
    max_cost: float | None
    job_timeout_s: float | None
    items: tuple[Item, ...]
    models: tuple[str, ...] = ()  # every model an item runs on, in first-use order


class ModelSource(Protocol):
    """Where model declarations come from (`batch.models.catalog.ModelCatalog`)."""

    def resolve(
        self, model_ids: Iterable[str], project_id: str | None = None
    ) -> Mapping[str, ModelSpec | str]: ...


class _Shipped:
    """Only the models that ship with the tool, and the cache (no network)."""

    def resolve(
        self, model_ids: Iterable[str], project_id: str | None = None
    ) -> Mapping[str, ModelSpec | str]:
        ids = list(model_ids)
        if all(model_id in BUILTIN for model_id in ids):
            return {model_id: BUILTIN[model_id] for model_id in ids}
        from batch.models.catalog import ModelCatalog  # the cache reader: only when needed

        return ModelCatalog().resolve(ids)


def load_manifest(
    path: Path, *, check_files: bool = True, models: ModelSource | None = None
) -> Manifest:
    """Load and validate a manifest; raise ManifestError with every problem found.

    With check_files=False no reference file is opened (globs are still expanded, as the
    item ids depend on them). `models` gives the declared inputs of the models the manifest
    names (default: the shipped ones and the user cache, no network).
    """
    path = Path(path)
    text = _read(path)
    with _gc_paused():
        return _Builder(path, check_files, models or _Shipped()).build(text)


@contextmanager
def _gc_paused() -> Iterator[None]:
    # Building ~1M small containers triggers many full collections that find nothing
    # (the graph is acyclic); pausing the collector halves the time of a big manifest.
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _fail(path: Path, message: str, line: int | None = None) -> ManifestError:
    return ManifestError([Problem(str(path), line, "", message)])


def _read(path: Path) -> str:
    try:
        st = path.stat()
        if not path.is_file():
            raise _fail(path, "not a regular file")
        if st.st_size > MAX_MANIFEST_BYTES:
            raise _fail(path, f"must be at most {_mb(MAX_MANIFEST_BYTES)}, got {_mb(st.st_size)}")
        with path.open("rb") as f:
            # Chunked, so a small file never costs a buffer of the full limit.
            chunks: list[bytes] = []
            size = 0
            while size <= MAX_MANIFEST_BYTES and (chunk := f.read(2**20)):
                chunks.append(chunk)
                size += len(chunk)
            raw = b"".join(chunks)
    except FileNotFoundError:
        raise _fail(path, "file not found") from None
    except OSError as exc:
        raise _fail(path, f"cannot read: {exc.strerror or exc}") from None
    if len(raw) > MAX_MANIFEST_BYTES:
        raise _fail(path, f"must be at most {_mb(MAX_MANIFEST_BYTES)}, got more")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise _fail(path, f"must be UTF-8 text, got byte 0x{raw[exc.start]:02x}", line) from None


def _mb(size: int) -> str:
    return f"{size / 2**20:.0f} MB" if size >= 2**20 else f"{size} bytes"


def _where(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


_show = show  # a value as the user wrote it, short


@dataclass(slots=True)
class _Draft:
    """An item before its id is final."""

    id: str | None  # named id without the model suffix, or None when derived
    stem: str  # for derived ids
    prompt: str
    references: tuple[Reference, ...]
    params: dict[str, Any]
    loc: Loc
    model: str
    suffix: str  # "" or "--<model tag>"
    file_inputs: tuple[tuple[str, int, bool], ...]
    shared_fp: str = ""  # derived ids of `models:` items: the same on every model
    fingerprint: str = ""


class _Builder:
    def __init__(self, path: Path, check_files: bool, source: ModelSource) -> None:
        self.path = path
        self.shown = str(path)
        self.base = os.path.dirname(os.path.abspath(path))
        self.files = FileChecker() if check_files else None
        self.source = _Remembered(source)  # tables ask before the jobs are validated
        self.problems: list[Problem] = []
        self.lines = LineMap(None)
        self.model = DEFAULT_MODEL
        self.specs: dict[str, ModelSpec] = {}
        self.uses = ModelUses(self.problem)
        self._used: dict[str, None] = {}  # models of the items, in order
        self._refs: dict[str, Reference | str] = {}  # raw string -> Reference or problem
        self._reported: set[tuple[Loc, str]] = set()
        self._relpaths: dict[str, str] = {}
        self._sizes: dict[str, int] = {}
        self._splits: dict[tuple[tuple[str, int, bool], ...], bool] = {}
        self._layouts: dict[
            tuple[tuple[str, int, bool], ...], tuple[tuple[str, int, bool], ...]
        ] = {}
        self.checker = ParamsChecker(self.problem, self._file_problem)
        self.drafts: list[_Draft] = []
        self.too_many = False
        self.origins: JobOrigins | None = None  # set when tables moved the jobs

    # -- problems ---------------------------------------------------------------------------
    def problem(self, loc: Loc, message: str, line: int | None = None) -> None:
        if self.origins is not None:  # a job from a table row, or one whose index moved
            spot = self.origins.spot(loc)
            if spot is not None:
                self._add_once(Problem(spot.file, spot.line, spot.where, message))
                return
            loc = self.origins.original(loc)
        if (loc, message) in self._reported:
            return
        self._reported.add((loc, message))
        self.problems.append(
            Problem(
                self.shown,
                line if line is not None else self.lines.line_of(loc),
                self._label(loc),
                message,
            )
        )

    def _label(self, loc: Loc) -> str:
        """`jobs[3] (cat-watercolor).guidanceScale`: a job is also named by its id."""
        if len(loc) < 2 or loc[0] != "jobs" or not isinstance(loc[1], int) or loc[2:] == ("id",):
            return _where(loc)
        tree = self.lines.tree()
        jobs = tree.get("jobs") if isinstance(tree, dict) else None
        raw = jobs[loc[1]] if isinstance(jobs, list) and 0 <= loc[1] < len(jobs) else None
        job_id = raw.get("id") if isinstance(raw, dict) else None
        if not isinstance(job_id, str) or not _ID.fullmatch(job_id):
            return _where(loc)
        rest = _where(loc[2:])
        head = f"jobs[{loc[1]}] ({job_id})"
        return head + ("" if not rest or rest.startswith("[") else ".") + rest

    def _add_once(self, problem: Problem) -> None:
        key = (problem.file, problem.line or 0, problem.where)
        if (key, problem.message) not in self._reported:
            self._reported.add((key, problem.message))
            self.problems.append(problem)

    def _place(self, loc: Loc) -> str:
        """Where a job is written, for messages that point at a second place."""
        spot = self.origins.spot(loc[:2]) if self.origins is not None else None
        if spot is not None:
            return f"{spot.file}:{spot.line}"
        if self.origins is not None:
            loc = self.origins.original(loc)
        return f"line {self.lines.line_of(loc)}"

    def _raise_if_problems(self) -> None:
        if not self.problems:
            return
        problems = sorted(
            self.problems,
            key=lambda p: (p.file != self.shown, p.file, p.line is None, p.line or 0),
        )
        if len(problems) > MAX_PROBLEMS_SHOWN:
            rest = len(problems) - MAX_PROBLEMS_SHOWN
            problems = problems[:MAX_PROBLEMS_SHOWN]
            problems.append(Problem(self.shown, None, "", f"... and {rest:,} more problems"))
        raise ManifestError(problems)

    # -- top level --------------------------------------------------------------------------
    def build(self, text: str) -> Manifest:
        try:
            data, self.lines, soft = load_yaml(text)
        except YamlError as exc:
            raise _fail(self.path, exc.message, exc.line) from None
        for warning in soft:
            self.problems.append(Problem(self.shown, warning.line, "", warning.message))
        if data is None:
            raise _fail(self.path, "the manifest is empty; expected a mapping with a 'jobs' list")
        if not isinstance(data, dict):
            raise _fail(self.path, f"must be a mapping with a 'jobs' list, got {_show(data)}", 1)
        # The expanded raw jobs are dropped once validated (a 100,000-row table's worth).
        top, jobs, defaults_ok = self._validate(self._expand_tables(data))
        if top is None:
            self._raise_if_problems()
            raise _fail(self.path, "invalid manifest")  # unreachable: problems were reported
        output: Path | None = None
        if top.output is not None:
            if "\x00" in top.output:
                self.problem(("output",), "must not contain NUL bytes")
            else:
                output = Path(os.path.normpath(os.path.join(self.base, top.output)))
        top_uses, top_params = self.uses.parse((), top.model, top.models, shared=True)
        if top_uses is None:
            top_uses = [ModelUse(DEFAULT_MODEL, False)]
        if top_uses:
            self.model = top_uses[0].model
        # Only jobs that name their own models get their own levels (most name none).
        own_models: dict[int, tuple[list[ModelUse], dict[str, Source]]] = {}
        for index, job in jobs:
            if job.model is not None or job.models is not None:
                uses, job_params = self.uses.parse(("jobs", index), job.model, job.models)
                own_models[index] = (top_uses if uses is None else uses, job_params)
        if not self.uses.named:
            self.uses.named[self.model] = [("model",)]
        self._resolve_models(top.projectId)
        defaults = None
        if top.defaults:
            defaults = Source(("defaults",), top.defaults.model_extra or {}, shared=True)
        inherited: tuple[list[ModelUse], dict[str, Source]] = (top_uses, {})
        jobs.reverse()  # each job goes once its items are drafted
        while jobs and not self.too_many:
            index, job = jobs.pop()
            uses, job_params = own_models.get(index, inherited)
            self._expand(index, job, uses, Levels(defaults, top_params, job_params), defaults_ok)
        items = self._finish()
        self._raise_if_problems()
        return Manifest(
            path=Path(os.path.abspath(self.path)),
            model=self.model,
            project_id=top.projectId,
            output=output,
            concurrency=top.concurrency,
            max_cost=top.maxCost,
            job_timeout_s=top.jobTimeout,
            items=items,
            models=tuple(self._used) or (self.model,),
        )

    def _resolve_models(self, project_id: str | None) -> None:
        """Every model's declared inputs (shipped, cached or fetched: one source call)."""
        found = self.source.resolve(list(self.uses.named), project_id)
        for model_id, locs in self.uses.named.items():
            spec = found.get(model_id)
            if isinstance(spec, ModelSpec):
                self.specs[model_id] = spec
                continue
            for loc in locs:
                self.problem(loc, spec or f"unknown model {model_id!r}")

    def _expand_tables(self, data: dict[str, Any]) -> dict[str, Any]:
        """Each `table:` job becomes one job per row (batch.manifest.table)."""
        jobs = data.get("jobs")
        if not isinstance(jobs, list):
            return data
        expansion = expand_tables(
            jobs,
            self.base,
            os.path.dirname(self.shown),
            lambda entry: self._table_kinds(data, entry),
            lambda raw: not (ASSET_ID.fullmatch(raw) or _SCHEME.match(raw)),
            max_rows=MAX_ITEMS,
        )
        if expansion is None:
            return data
        for loc, message in expansion.at_entries:  # indices as written: before origins
            self.problem(loc, message)
        for problem in expansion.in_tables:
            self._add_once(problem)
        if not expansion.jobs:
            self._raise_if_problems()
        self.origins = expansion.origins
        return {**data, "jobs": expansion.jobs}

    def _table_kinds(self, data: dict[str, Any], entry: dict[str, Any]) -> KindOf:
        """How a table's text cells are read: as the declared type of the input of that
        name, in the models of the entry (else of the manifest); other columns stay text."""
        names = _model_names(entry) or _model_names(data) or [DEFAULT_MODEL]
        project = data.get("projectId")
        found = self.source.resolve(names, project if isinstance(project, str) else None)
        kinds: dict[str, Kind] = {}
        for name in names:
            spec = found.get(name)
            if isinstance(spec, ModelSpec):  # an unknown model is reported where it is named
                for declared in spec.inputs:
                    kind = kind_of_input(declared.type, integer=declared.is_integer)
                    if kind is not None:
                        kinds.setdefault(declared.name, kind)
        return kinds.get

    def _validate(
        self, data: dict[str, Any]
    ) -> tuple[ManifestModel | None, list[tuple[int, Job | _PlainJob]], bool]:
        """Validate with pydantic; on errors, report them and keep whatever parts are valid.

        Jobs of the common shape (no `images:` mapping, no `prompts:`) are checked without a
        pydantic instance each (100,000 of those took ~65 MB): see `_plain_jobs`."""
        plain = self._plain_jobs(data)
        if plain is not None:
            return plain
        try:
            model = ManifestModel.model_validate(data)
            return model, list(enumerate(model.jobs)), True
        except ValidationError as exc:
            errors = exc.errors(include_url=False)
        self._report(errors)
        bad_top = {e["loc"][0] for e in errors if e["loc"] and e["loc"][0] != "jobs"}
        bad_jobs = {e["loc"][1] for e in errors if len(e["loc"]) > 1 and e["loc"][0] == "jobs"}
        clean = {k: v for k, v in data.items() if k in KEYS[""] and k not in bad_top}
        clean["jobs"] = [{}]
        try:
            top: ManifestModel | None = ManifestModel.model_validate(clean)
        except ValidationError:
            top = None
        jobs: list[tuple[int, Job | _PlainJob]] = []
        raw_jobs = data.get("jobs")
        if isinstance(raw_jobs, list):
            for index, raw in enumerate(raw_jobs):
                if index not in bad_jobs:
                    with contextlib.suppress(ValidationError):  # reported above
                        jobs.append((index, Job.model_validate(raw)))
        return top, jobs, "defaults" not in bad_top

    def _plain_jobs(
        self, data: dict[str, Any]
    ) -> tuple[ManifestModel, list[tuple[int, Job | _PlainJob]], bool] | None:
        """The top level checked by pydantic with one empty job in place of the list, and
        each job by the same rules as `Job` where its shape is plain (else by `Job`
        itself). None when anything fails: the full validation then reports it exactly as
        always. The raw jobs are released as they are read (`consume`)."""
        raw_jobs = data.get("jobs")
        if not isinstance(raw_jobs, list) or not raw_jobs:
            return None
        validated: dict[int, Job] = {}
        for index, raw in enumerate(raw_jobs):
            if not _is_plain(raw):
                try:
                    validated[index] = Job.model_validate(raw)
                except ValidationError:
                    return None
        try:
            top = ManifestModel.model_validate({**data, "jobs": [{}]})
        except ValidationError:
            return None
        # Lines are found by parsing the text again: the raw jobs are not needed after this.
        consume = self.lines.detached()
        jobs: list[tuple[int, Job | _PlainJob]] = []
        for index, raw in enumerate(raw_jobs):
            job = validated.get(index)
            jobs.append((index, _plain_job(raw) if job is None else job))
            if consume:
                raw_jobs[index] = None
        return top, jobs, True

    def _report(self, errors: Sequence[Any]) -> None:
        for error in errors:
            loc: list[str | int] = []
            kind, given = error["type"], error.get("input")
            skip = False
            for i, part in enumerate(error["loc"]):
                if i > 0 and error["loc"][i - 1] == "images" and isinstance(part, str):
                    # `images: str | ImagesSpec` reports each union branch under a tag; keep
                    # the branch that matches the shape the user wrote, without the tag.
                    is_spec = part == "ImagesSpec"
                    skip = kind == "model_type" if is_spec else isinstance(given, dict)
                    continue
                loc.append(part)
            if skip:
                continue
            self.problem(
                tuple(loc[:-1]) if kind == "missing" else tuple(loc),
                _message(kind, tuple(loc), given),
            )

    # -- jobs -------------------------------------------------------------------------------
    def _expand(
        self,
        index: int,
        job: Job | _PlainJob,
        uses: list[ModelUse],
        levels: Levels,
        defaults_ok: bool,
    ) -> None:
        loc: Loc = ("jobs", index)
        if job.id in (".", ".."):
            self.problem((*loc, "id"), f"must not be '.' or '..', got {job.id!r}")
            return
        if not uses:
            return  # its models are wrong: reported
        images: list[tuple[str, str] | None] = [None]
        if job.images is not None:
            found = self._images(loc, job)
            if found is None:
                return
            images = list(found)
        prompts: list[_Entry | None] = [None]
        if job.prompts is not None:
            prompts = [(p.id or f"p{n + 1}", n, p) for n, p in enumerate(job.prompts)]
            self._unique_prompt_ids(loc, prompts)
        if len(self.drafts) + len(images) * len(prompts) * len(uses) > MAX_ITEMS:
            self.problem(("jobs",), f"must expand to at most {MAX_ITEMS:,} items, got more")
            self.too_many = True
            return
        own = Source(loc, job.model_extra or {}, _JOB_KEYS)
        tagged = any(use.tagged for use in uses)
        bulk = job.images is not None
        for entry in prompts:
            ploc, entry_sources = loc, []
            if entry is not None:
                ploc = (*loc, "prompts", entry[1])
                params = {"prompt": entry[2].prompt, **(entry[2].model_extra or {})}
                entry_sources = [Source(ploc, params, _PROMPT_KEYS)]
            shared = ""
            if tagged and job.id is None:
                shared = _canonical([s.params for s in levels.shared(own, entry_sources)])
            drafted: list[tuple[ModelUse, Resolved, _Files]] = []
            for use in uses:
                spec = self.specs.get(use.model)
                if spec is None:
                    continue  # unknown model: reported where it is named
                sources = levels.sources(use.model, own, entry_sources)
                resolved = self.checker.resolve(spec, sources, loc, ploc, bulk, defaults_ok)
                files = None
                if resolved is not None:
                    files = self._files(loc, spec, resolved, [i for i in images if i is not None])
                if resolved is not None and files is not None:
                    drafted.append((use, resolved, files))
            for image in images:  # an input's models side by side
                for use, resolved, files in drafted:
                    self._draft(loc, job, entry, image, resolved, files, use, shared)

    def _images(self, loc: Loc, job: Job | _PlainJob) -> list[tuple[str, str]] | None:
        spec = job.images
        glob_pattern: str | None
        folder: str | None
        if isinstance(spec, str):
            is_folder = not globlib.has_magic(spec) and os.path.isdir(os.path.join(self.base, spec))
            glob_pattern, folder = (None, spec) if is_folder else (spec, None)
        else:
            assert spec is not None
            glob_pattern, folder = spec.glob, spec.folder
            if (glob_pattern is None) == (folder is None):
                self.problem((*loc, "images"), "must have exactly one of 'glob' or 'folder'")
                return None
        for text in (glob_pattern, folder):
            if text is not None and "\x00" in text:
                self.problem((*loc, "images"), "must not contain NUL bytes")
                return None
        try:
            paths = find_images(
                self.base,
                glob_pattern=glob_pattern,
                folder=folder,
                limit=MAX_ITEMS - len(self.drafts),
            )
        except (BulkError, OSError) as exc:
            self.problem((*loc, "images"), str(exc))
            return None
        if self.files is not None:
            for path in paths:
                trouble = self.files.problem(path)
                if trouble is not None:
                    self.problem((*loc, "images"), trouble)
        return list(zip(paths, image_keys(paths, self.base), strict=True))

    def _unique_prompt_ids(self, loc: Loc, prompts: list[_Entry | None]) -> None:
        seen: dict[str, int] = {}
        for n, entry in enumerate(prompts):
            assert entry is not None
            key = entry[0].lower()
            if key in seen:
                self.problem(
                    (*loc, "prompts", n, "id"),
                    f"must be unique in this job, got {entry[0]!r} twice",
                )
            seen[key] = n

    def _reference(self, raw: str) -> Reference | str:
        cached = self._refs.get(raw)
        if cached is None:
            cached = self._refs[raw] = self._classify(raw)
        return cached

    def _file_problem(self, raw: str) -> str | None:
        found = self._reference(raw)
        return found if isinstance(found, str) else None

    def _classify(self, raw: str) -> Reference | str:
        if "\x00" in raw:
            return "must not contain NUL bytes"
        if ASSET_ID.fullmatch(raw):
            return Reference("asset", raw)
        scheme = _SCHEME.match(raw)
        if scheme:
            name = scheme.group(1).lower()
            if name == "http":
                return f"must be an https:// URL (plain http is refused), got {_show(raw)}"
            if name != "https":
                return f"must be a local path, an asset id or an https:// URL, got a {name}: URL"
            parts = urlsplit(raw)
            if (
                not parts.hostname
                or len(raw) > MAX_URL_CHARS
                or any(c.isspace() for c in raw)
                or parts.username is not None
            ):
                return f"must be a well-formed https URL without credentials, got {_show(raw)}"
            return Reference("url", raw)
        path = os.path.normpath(os.path.join(self.base, raw))
        if self.files is not None:
            trouble = self.files.problem(path)
            if trouble is not None:
                if raw.startswith("asset_"):
                    trouble += " (an asset id is asset_ followed by letters and digits)"
                return trouble
        return Reference("file", path)

    def _draft(
        self,
        loc: Loc,
        job: Job | _PlainJob,
        entry: _Entry | None,
        image: tuple[str, str] | None,
        resolved: Resolved,
        template: _Files,
        use: ModelUse,
        shared: str,
    ) -> None:
        given, file_inputs = template
        references = given if image is None else (Reference("file", image[0]), *given)
        parts: list[str] = []
        if entry is not None:
            parts.append(entry[0])
        if image is not None:
            parts.append(image[1])
        if job.id is not None:
            named: str | None = "-".join([job.id, *parts])
            stem = ""
        else:
            named = None
            stem = "-".join(parts) if image is not None else "-".join([*parts, _stem(references)])
        draft = _Draft(
            named,
            stem,
            resolved.prompt,
            references,
            resolved.params,
            loc,
            use.model,
            MODEL_SEPARATOR + model_tag(use.model) if use.tagged else "",
            file_inputs,
        )
        draft.fingerprint = self._fingerprint(draft)
        if shared and use.tagged:
            image_key = self._relpath(image[0]) if image is not None else None
            text = _canonical([shared, image_key, stem])
            draft.shared_fp = hashlib.sha256(text.encode()).hexdigest()
        self._used.setdefault(use.model)
        self.drafts.append(draft)

    def _fits(self, declared: ModelInput, path: str | None) -> bool:
        """Whether a local file is within the input's declared `maxSize` (None: not local)."""
        if declared.max_size is None or path is None or self.files is None:
            return True
        size = self._sizes.get(path)
        if size is None:
            try:
                size = self._sizes[path] = os.stat(path).st_size
            except OSError:
                return True  # reported by the file checks
        return size <= declared.max_size

    def _size_problem(self, declared: ModelInput, ref: Reference) -> str:
        size = self._sizes.get(ref.value, 0)
        return f"takes files of at most {declared.max_size:,.0f} bytes, got {size:,}: {ref.value}"

    def _files(
        self,
        loc: Loc,
        spec: ModelSpec,
        resolved: Resolved,
        images: list[tuple[str, str]],
    ) -> _Files | None:
        """The references an entry gives and how they split over the model's file inputs;
        with bulk `images`, one more image goes first, into the image input (its first file
        input). Local files are held to the inputs' declared `maxSize`."""
        bulk = bool(images)
        layout: list[tuple[str, int, bool]] = []
        references: list[Reference] = []
        for declared in spec.file_inputs:
            raws = resolved.files.get(declared.name, ())
            count = len(raws) + (1 if bulk and declared is spec.image_input else 0)
            if not count:
                continue
            high = declared.items_range()[1]
            if bulk and declared.type == "file_array" and high is not None and count > high:
                self.problem(
                    (*loc, declared.name),
                    f"must be at most {high} images including the bulk image, got {count}",
                )
                return None
            layout.append((declared.name, count, declared.type == "file_array"))
            for raw in raws:
                ref = self._reference(raw)
                if isinstance(ref, Reference):  # always: the checks passed
                    references.append(ref)
                    if not self._fits(declared, ref.value if ref.kind == "file" else None):
                        self.problem((*loc, declared.name), self._size_problem(declared, ref))
                        return None
        image = spec.image_input
        if bulk and image is not None and image.max_size is not None:
            for path, _ in images:
                if not self._fits(image, path):
                    self.problem(
                        (*loc, "images"), self._size_problem(image, Reference("file", path))
                    )
                    return None
        key = tuple(layout)
        return tuple(references), self._layouts.setdefault(key, key)

    def _fingerprint(self, draft: _Draft) -> str:
        flat = [
            [r.kind, self._relpath(r.value) if r.kind == "file" else r.value]
            for r in draft.references
        ]
        refs: list[list[str]] | dict[str, list[list[str]]] = flat
        split = self._splits.get(draft.file_inputs)
        if split is None:
            names = tuple(name for name, _, _ in draft.file_inputs)
            split = self._splits[draft.file_inputs] = names not in ((), _KONTEXT_FILES)
        if split:
            # Other file inputs than referenceImages: the images of each input, by name (the
            # order the model declares its inputs in is not part of the inputs). Items of the
            # shipped model keep the fingerprint they always had.
            by_input: dict[str, list[list[str]]] = {}
            start = 0
            for name, count, _ in draft.file_inputs:
                by_input[name] = flat[start : start + count]
                start += count
            refs = by_input
        canonical = {
            "model": draft.model,
            "prompt": draft.prompt,
            "references": refs,
            "params": draft.params,
        }
        text = _canonical(canonical)
        return hashlib.sha256(text.encode()).hexdigest()

    def _relpath(self, path: str) -> str:
        rel = self._relpaths.get(path)
        if rel is None:
            try:
                rel = os.path.relpath(path, self.base).replace(os.sep, "/")
            except ValueError:  # another drive on Windows
                rel = path
            self._relpaths[path] = rel
        return rel

    # -- ids --------------------------------------------------------------------------------
    def _finish(self) -> tuple[Item, ...]:
        taken: dict[str, tuple[str, Loc]] = {}
        for draft in self.drafts:
            if draft.id is None:
                continue
            full = draft.id + draft.suffix
            if len(full) > 128:
                self.problem(
                    (*draft.loc, "id"),
                    f"would give item id {_show(full)}, longer than 128 characters; "
                    "use a shorter id",
                )
                continue
            key = full.lower()
            if key in taken:
                other, other_loc = taken[key]
                place = self._place(other_loc)
                if other == full:
                    message = f"duplicate id {full!r} (also on {place})"
                else:
                    message = (
                        f"id {full!r} differs only in case from {other!r} on {place}; "
                        "they collide on case-insensitive file systems"
                    )
                self.problem(draft.loc, message)
            else:
                taken[key] = (full, draft.loc)
        items: list[Item] = []
        drafts, self.drafts = self.drafts, []
        drafts.reverse()  # each draft goes as its item is made: not both lists at their peak
        while drafts:
            draft = drafts.pop()
            if draft.id is None:
                limit = 110 - len(draft.suffix)
                base = f"{draft.stem[:limit].rstrip('._-') or 'item'}-"
                base += (draft.shared_fp or draft.fingerprint)[:8]
                candidate, n = base, 1
                while (candidate + draft.suffix).lower() in taken:
                    n += 1
                    candidate = f"{base}-{n}"
                taken[(candidate + draft.suffix).lower()] = (candidate, draft.loc)
                draft.id = candidate
            full = draft.id + draft.suffix if draft.suffix else draft.id
            items.append(
                Item(
                    full,
                    draft.prompt,
                    draft.references,
                    MappingProxyType(draft.params) if draft.params else _NO_PARAMS,
                    draft.fingerprint,
                    draft.model,
                    draft.id,
                    draft.file_inputs,
                )
            )
        return tuple(items)


def _model_names(level: Mapping[str, Any]) -> list[str]:
    """The well-formed model ids a raw manifest level names (`model:` or `models:`)."""
    models = level.get("models")
    names = list(models) if isinstance(models, list | dict) else [level.get("model")]
    return [n for n in names if isinstance(n, str) and MODEL_ID.fullmatch(n)]


class _Remembered:
    """A model source asked once per model: tables need the declarations of their models
    before the jobs are validated, and the builder asks for every model after."""

    def __init__(self, source: ModelSource) -> None:
        self.source = source
        self.found: dict[str, ModelSpec | str] = {}

    def resolve(
        self, model_ids: Iterable[str], project_id: str | None = None
    ) -> Mapping[str, ModelSpec | str]:
        ids = list(model_ids)
        missing = [model_id for model_id in ids if model_id not in self.found]
        if missing:
            self.found.update(self.source.resolve(missing, project_id))
        return {model_id: self.found[model_id] for model_id in ids if model_id in self.found}


@dataclass(frozen=True, slots=True)
class _PlainJob:
    """A job `_plain_job` found valid: what `_expand` reads of a `Job`, without pydantic."""

    id: str | None
    images: str | None
    model: str | None
    models: Any
    model_extra: dict[str, Any]
    prompts: None = None


_JOB_FIELDS = frozenset(Job.model_fields)
_PLAIN_FIELDS = frozenset({"id", "images", "model", "models"})


def _is_plain(raw: Any) -> bool:
    """Whether `Job.model_validate(raw)` would accept `raw` with every field a plain value
    (`id`, `model`, a string `images`, any `models`, any parameter). False for any other
    shape and for any value `Job` would refuse: `Job` then decides, and reports."""
    if type(raw) is not dict:
        return False
    if not _PLAIN_FIELDS.issuperset(_JOB_FIELDS.intersection(raw)):
        return False
    job_id = raw.get("id")
    if job_id is not None and not (type(job_id) is str and _ID.fullmatch(job_id)):
        return False
    model = raw.get("model")
    if model is not None and not (type(model) is str and MODEL_ID.fullmatch(model)):
        return False
    images = raw.get("images")
    return images is None or (type(images) is str and 1 <= len(images) <= 4096)


def _plain_job(raw: dict[str, Any]) -> _PlainJob:
    """A job `_is_plain` accepted, read as `Job` reads it (other keys: `model_extra`)."""
    extra = {key: value for key, value in raw.items() if key not in _JOB_FIELDS}
    get = raw.get
    return _PlainJob(get("id"), get("images"), get("model"), get("models"), extra)


def _stem(references: Sequence[Reference]) -> str:
    if not references:
        return "item"
    ref = references[0]
    if ref.kind == "file":
        return sanitize(os.path.splitext(os.path.basename(ref.value))[0])
    if ref.kind == "asset":
        return sanitize(ref.value)
    parts = urlsplit(ref.value)
    name = parts.path.rstrip("/").rsplit("/", 1)[-1]
    return sanitize(os.path.splitext(name)[0] or parts.hostname or "url")


def _message(kind: str, loc: Loc, given: Any) -> str:
    if kind == "missing":
        return f"missing required key {loc[-1]!r}"
    if kind == "extra_forbidden":
        key = str(loc[-1])
        parent = next((p for p in reversed(loc[:-1]) if isinstance(p, str)), "")
        valid = KEYS.get(parent, KEYS[""]) if loc[:-1] else KEYS[""]
        close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
        close = close or [v for v in valid if v.lower() == key.lower()]
        hint = f"did you mean {close[0]!r}?" if close else "expected one of: " + ", ".join(valid)
        return f"unknown key {key!r}; {hint}"
    field_name = next((p for p in reversed(loc) if isinstance(p, str)), "")
    if loc and isinstance(loc[-1], int):
        expected = EXPECTED_ENTRY.get(field_name) or EXPECTED.get(field_name)
    else:
        expected = EXPECTED.get(field_name)
    if kind == "string_too_long" and isinstance(given, str):
        got = f"{len(given):,} characters"
    elif kind == "string_too_short" and given == "":
        got = "an empty string"
    else:
        got = _show(given)
    if field_name == "id" and isinstance(given, str) and kind == "string_pattern_mismatch":
        return f"must be {expected}, got {got}" + (
            " (not a path)" if "/" in given or "\\" in given else ""
        )
    if isinstance(given, int) and not isinstance(given, bool) and field_name in ("id", "prompt"):
        got += " (quote it to make it a string)"
    return f"must be {expected or 'valid'}, got {got}"


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m batch.manifest.load --schema [FILE]` prints or writes the JSON Schema."""
    parser = argparse.ArgumentParser(prog="python -m batch.manifest.load")
    parser.add_argument("--schema", metavar="FILE", nargs="?", const="-", required=True)
    args = parser.parse_args(argv)
    text = json.dumps(manifest_json_schema(), indent=2, ensure_ascii=False) + "\n"
    if args.schema == "-":
        sys.stdout.write(text)
    else:
        Path(args.schema).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
