"""YAML manifest -> validated, frozen `Manifest` of `Item`s; every problem located.

Every problem found is collected, then raised together as one `ManifestError`; each names
the file, the line, the place and what was expected, e.g.
`example.yaml:14 jobs[3].guidanceScale: must be 1.0-10.0, got 12`.

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

Each matched image becomes the item's first reference image; ``referenceImages`` given in
the job follow it (at most 4 in all). Matches are sorted by path, and a glob or folder
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
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import ValidationError

from batch.errors import ManifestError, Problem
from batch.manifest_bulk import BulkError, find_images, image_keys, sanitize
from batch.manifest_files import FileChecker
from batch.manifest_schema import (
    EXPECTED,
    EXPECTED_ENTRY,
    KEYS,
    MAX_REFERENCES,
    Job,
    ManifestModel,
    Params,
    PromptEntry,
    manifest_json_schema,
)
from batch.yaml_lines import LineMap, YamlError, load_yaml

__all__ = [
    "DEFAULT_MODEL",
    "Item",
    "Manifest",
    "Reference",
    "load_manifest",
    "manifest_json_schema",
]

DEFAULT_MODEL = "model_flux-kontext-editing"
MAX_MANIFEST_BYTES = 20 * 2**20
MAX_ITEMS = 200_000
MAX_PROBLEMS_SHOWN = 200
MAX_URL_CHARS = 2048
ASSET_ID = re.compile(r"asset_[A-Za-z0-9]+")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_PARAM_KEYS = tuple(Params.model_fields)

_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)

Loc = tuple[str | int, ...]
_Entry = tuple[str, int, PromptEntry]  # (prompt id, index in prompts, the entry)


@dataclass(frozen=True, slots=True)
class Reference:
    """One reference image: an absolute path ("file"), an asset id, or an https URL."""

    kind: Literal["file", "asset", "url"]
    value: str


@dataclass(frozen=True, slots=True)
class Item:
    """One generate call: its id is safe as a file name stem; params use the API's names."""

    id: str
    prompt: str
    references: tuple[Reference, ...]
    params: Mapping[str, Any] = field(hash=False)  # read-only; defaults merged
    fingerprint: str

    @property
    def num_outputs(self) -> int:
        return int(self.params.get("numOutputs", 1))

    def generate_body(self, reference_asset_ids: Sequence[str]) -> dict[str, Any]:
        """The JSON body of POST /generate/custom/{model} once references are uploaded."""
        body: dict[str, Any] = {"referenceImages": list(reference_asset_ids), "prompt": self.prompt}
        for key, value in self.params.items():
            body[key] = list(value) if isinstance(value, tuple) else value
        return body


@dataclass(frozen=True, slots=True)
class Manifest:
    """A validated manifest: top-level settings and its items, in manifest order."""

    path: Path
    model: str
    project_id: str | None
    output: Path | None
    concurrency: int | None
    max_cost: float | None
    job_timeout_s: float | None
    items: tuple[Item, ...]


def load_manifest(path: Path, *, check_files: bool = True) -> Manifest:
    """Load and validate a manifest; raise ManifestError with every problem found.

    With check_files=False no reference file is opened (globs are still expanded, as the
    item ids depend on them).
    """
    path = Path(path)
    text = _read(path)
    with _gc_paused():
        return _Builder(path, check_files).build(text)


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


def _show(value: Any) -> str:
    """A value as the user wrote it, short."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value) if len(value) <= 60 else repr(value[:57] + "...")
    if isinstance(value, list):
        return f"a list of {len(value)} entries" if value else "an empty list"
    if isinstance(value, dict):
        return "a mapping"
    return str(value)


@dataclass(slots=True)
class _Draft:
    """An item before its id is final."""

    id: str | None  # named id, or None when derived
    stem: str  # for derived ids
    prompt: str
    references: tuple[Reference, ...]
    params: dict[str, Any]
    loc: Loc
    fingerprint: str = ""


class _Builder:
    def __init__(self, path: Path, check_files: bool) -> None:
        self.path = path
        self.shown = str(path)
        self.base = os.path.dirname(os.path.abspath(path))
        self.files = FileChecker() if check_files else None
        self.problems: list[Problem] = []
        self.lines = LineMap(None)
        self.model = DEFAULT_MODEL
        self._refs: dict[str, Reference | str] = {}  # raw string -> Reference or problem
        self._reported: set[tuple[Loc, str]] = set()
        self._relpaths: dict[str, str] = {}
        self.drafts: list[_Draft] = []
        self.too_many = False

    # -- problems ---------------------------------------------------------------------------
    def problem(self, loc: Loc, message: str, line: int | None = None) -> None:
        if (loc, message) in self._reported:
            return
        self._reported.add((loc, message))
        self.problems.append(
            Problem(
                self.shown,
                line if line is not None else self.lines.line_of(loc),
                _where(loc),
                message,
            )
        )

    def _raise_if_problems(self) -> None:
        if not self.problems:
            return
        problems = sorted(self.problems, key=lambda p: (p.line is None, p.line or 0))
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
        top, jobs, defaults_ok = self._validate(data)
        if top is None:
            self._raise_if_problems()
            raise _fail(self.path, "invalid manifest")  # unreachable: problems were reported
        self.model = top.model or DEFAULT_MODEL
        output: Path | None = None
        if top.output is not None:
            if "\x00" in top.output:
                self.problem(("output",), "must not contain NUL bytes")
            else:
                output = Path(os.path.normpath(os.path.join(self.base, top.output)))
        defaults = top.defaults.model_dump(exclude_none=True) if top.defaults else {}
        for index, job in jobs:
            if self.too_many:
                break
            self._expand(index, job, defaults, defaults_ok)
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
        )

    def _validate(
        self, data: dict[str, Any]
    ) -> tuple[ManifestModel | None, list[tuple[int, Job]], bool]:
        """Validate with pydantic; on errors, report them and keep whatever parts are valid."""
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
        jobs: list[tuple[int, Job]] = []
        raw_jobs = data.get("jobs")
        if isinstance(raw_jobs, list):
            for index, raw in enumerate(raw_jobs):
                if index not in bad_jobs:
                    with contextlib.suppress(ValidationError):  # reported above
                        jobs.append((index, Job.model_validate(raw)))
        return top, jobs, "defaults" not in bad_top

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
    def _expand(self, index: int, job: Job, defaults: dict[str, Any], defaults_ok: bool) -> None:
        loc: Loc = ("jobs", index)
        own = job.model_dump(exclude_none=True, include=set(_PARAM_KEYS))
        params = {**defaults, **own}
        if job.id in (".", ".."):
            self.problem((*loc, "id"), f"must not be '.' or '..', got {job.id!r}")
            return
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
        if len(self.drafts) + len(images) * len(prompts) > MAX_ITEMS:
            self.problem(("jobs",), f"must expand to at most {MAX_ITEMS:,} items, got more")
            self.too_many = True
            return
        for entry in prompts:
            merged, ploc = params, loc
            if entry is not None:
                ploc = (*loc, "prompts", entry[1])
                merged = {**params, **entry[2].model_dump(exclude_none=True, exclude={"id"})}
            refs = self._references(merged.get("referenceImages"), index, job, entry)
            if refs is None:
                continue
            if not self._check_params(loc, ploc, merged, defaults_ok):
                continue
            for image in images:
                self._draft(loc, job, entry, image, merged, refs)

    def _images(self, loc: Loc, job: Job) -> list[tuple[str, str]] | None:
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

    def _references(
        self,
        raws: list[str] | None,
        index: int,
        job: Job,
        entry: _Entry | None,
    ) -> tuple[Reference, ...] | None:
        """Classify the merged referenceImages, reporting each problem at the level that set it."""
        if not raws:
            return ()
        origin = self._origin_of_refs(index, job, entry)
        refs: list[Reference] = []
        ok = True
        for k, raw in enumerate(raws):
            ref = self._reference(raw)
            if isinstance(ref, str):
                self.problem((*origin, "referenceImages", k), ref)
                ok = False
            else:
                refs.append(ref)
        return tuple(refs) if ok else None

    def _origin_of_refs(self, index: int, job: Job, entry: _Entry | None) -> Loc:
        if entry is not None and entry[2].referenceImages is not None:
            return ("jobs", index, "prompts", entry[1])
        if job.referenceImages is not None:
            return ("jobs", index)
        return ("defaults",)

    def _reference(self, raw: str) -> Reference | str:
        cached = self._refs.get(raw)
        if cached is None:
            cached = self._refs[raw] = self._classify(raw)
        return cached

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

    def _check_params(self, loc: Loc, ploc: Loc, merged: dict[str, Any], defaults_ok: bool) -> bool:
        ok = True
        if "prompt" not in merged and defaults_ok:
            self.problem(ploc, "missing required key 'prompt' (in the job or in defaults)")
            ok = False
        loras, scales = merged.get("loras"), merged.get("lorasScale")
        if scales is not None and len(scales) != len(loras or []):
            self.problem(
                (*ploc, "lorasScale") if "lorasScale" in self._get(ploc) else (*loc, "lorasScale"),
                f"must have one number per LoRA ({len(loras or [])}), got {len(scales)}",
            )
            ok = False
        return ok and "prompt" in merged

    def _get(self, loc: Loc) -> Any:
        node = self.lines.root
        try:
            for part in loc:
                node = node[part]
        except (KeyError, IndexError, TypeError):
            return {}
        return node if isinstance(node, dict) else {}

    def _draft(
        self,
        loc: Loc,
        job: Job,
        entry: _Entry | None,
        image: tuple[str, str] | None,
        merged: dict[str, Any],
        refs: tuple[Reference, ...],
    ) -> None:
        references = refs if image is None else (Reference("file", image[0]), *refs)
        if not references:
            where = loc if job.images is None else (*loc, "images")
            self.problem(where, "needs referenceImages (1-4 images to edit), got none")
            return
        if len(references) > MAX_REFERENCES:
            self.problem(
                (*loc, "referenceImages"),
                f"must be at most {MAX_REFERENCES} images including the bulk image, "
                f"got {len(references)}",
            )
            return
        prompt: str = merged["prompt"]
        params = {
            k: (tuple(v) if isinstance(v, list) else v)
            for k, v in merged.items()
            if k not in ("prompt", "referenceImages")
        }
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
            stem = (
                "-".join(parts) if image is not None else "-".join([*parts, _stem(references[0])])
            )
        draft = _Draft(named, stem, prompt, references, params, loc)
        draft.fingerprint = self._fingerprint(draft)
        self.drafts.append(draft)

    def _fingerprint(self, draft: _Draft) -> str:
        refs = [
            [r.kind, self._relpath(r.value) if r.kind == "file" else r.value]
            for r in draft.references
        ]
        canonical = {
            "model": self.model,
            "prompt": draft.prompt,
            "references": refs,
            "params": draft.params,
        }
        text = _CANONICAL.encode(canonical)
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
            if len(draft.id) > 128:
                self.problem(
                    (*draft.loc, "id"),
                    f"would give item id {_show(draft.id)}, longer than 128 characters; "
                    "use a shorter id",
                )
                continue
            key = draft.id.lower()
            if key in taken:
                other, other_loc = taken[key]
                line = self.lines.line_of(other_loc)
                if other == draft.id:
                    message = f"duplicate id {draft.id!r} (also on line {line})"
                else:
                    message = (
                        f"id {draft.id!r} differs only in case from {other!r} on line {line}; "
                        "they collide on case-insensitive file systems"
                    )
                self.problem(draft.loc, message)
            else:
                taken[key] = (draft.id, draft.loc)
        items: list[Item] = []
        for draft in self.drafts:
            if draft.id is None:
                base = f"{draft.stem[:110].rstrip('._-') or 'item'}-{draft.fingerprint[:8]}"
                candidate, n = base, 1
                while candidate.lower() in taken:
                    n += 1
                    candidate = f"{base}-{n}"
                taken[candidate.lower()] = (candidate, draft.loc)
                draft.id = candidate
            items.append(
                Item(
                    draft.id,
                    draft.prompt,
                    draft.references,
                    MappingProxyType(draft.params),
                    draft.fingerprint,
                )
            )
        return tuple(items)


def _stem(ref: Reference) -> str:
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
    """`python -m batch.manifest --schema [FILE]` prints or writes the JSON Schema."""
    parser = argparse.ArgumentParser(prog="python -m batch.manifest")
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
