"""Tables as a bulk form: a job entry `table: edits.csv` (or .tsv, .jsonl) is one job per row.

.. code-block:: yaml

    jobs:
      - table: edits.csv        # relative to the manifest; CSV or TSV with a header row
        id: batch1              # optional: a prefix for the rows' ids (batch1-<id>)
        quality: high           # every other key applies to every row; a row's own value wins

Columns are the item's `id` (optional) and any input of the entry's model. In CSV and TSV
every cell is text, read as the type the model declares for that input (`kind_of_input`:
numbers, `true`/`false`, a list cell of `|`-separated values), and an empty cell is no
value (the entry's or the default applies). In JSONL each line is a JSON object whose
values already have their types. File paths in a row are relative to the table.

This module only turns a table into raw job mappings, each with the line of its row, and
reports what it cannot read as `edits.csv:17 column seed: ...`; the manifest validates
those jobs like any other, and `JobOrigins` maps its findings back to the row and column.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import orjson

from batch.errors import Problem

# How a column's text is read: the parameter's type as the table form sees it.
Kind = Literal["string", "integer", "number", "boolean", "strings", "numbers", "file", "files"]
KindOf = Callable[[str], Kind | None]  # column -> kind; None: not an input (kept as text)
KindsFor = Callable[[dict[str, Any]], KindOf]  # a table's entry -> how its cells are read
IsLocalPath = Callable[[str], bool]  # a file value that is a local path (not an id or URL)

TABLE_KEY: Final = "table"
LIST_SEPARATOR: Final = "|"
MAX_TABLE_BYTES: Final = 256 * 2**20
_DIALECTS: Final = {".csv": ",", ".tsv": "\t", ".tab": "\t"}
_JSONL: Final = frozenset({".jsonl", ".ndjson"})
SUFFIXES: Final = (*_DIALECTS, *sorted(_JSONL))
_INTEGER: Final = re.compile(r"[+-]?[0-9]+")
_TRUE: Final = frozenset({"true", "yes", "1"})
_FALSE: Final = frozenset({"false", "no", "0"})


@dataclass(frozen=True, slots=True)
class Row:
    line: int  # where the row starts in its file (1-based)
    values: dict[str, Any]  # column -> value; empty cells left out


@dataclass(slots=True)
class Table:
    """The readable rows of one table file, and what is wrong with the others."""

    shown: str  # the file as messages name it
    rows: list[Row] = field(default_factory=list)
    problems: list[tuple[int | None, str, str]] = field(default_factory=list)  # line, where, msg

    def problem(self, line: int | None, where: str, message: str) -> None:
        self.problems.append((line, where, message))


def read_table(
    path: str, shown: str, kind_of: KindOf, is_local: IsLocalPath, *, max_rows: int
) -> Table:
    """Read `path` (absolute) into rows; every problem of the file is kept, none raised.
    More than `max_rows` rows is a problem, found before the rest is read."""
    table = Table(shown)
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in _DIALECTS and suffix not in _JSONL:
        table.problem(None, "", f"must be a {', '.join(SUFFIXES)} file, got {suffix or 'none'}")
        return table
    text = _read_text(path, table)
    if text is None:
        return table
    folder = os.path.dirname(path)
    jsonl = suffix in _JSONL
    # A CSV cell that is empty gives no value; in JSONL "" is a value like any other.
    reader = _Cells(kind_of, is_local, folder, table, skip_empty=not jsonl)
    lines = _jsonl_rows(text, table) if jsonl else _csv_rows(text, suffix, table)
    rows = table.rows
    for line, raw in lines:
        if len(rows) >= max_rows:
            table.problem(line, "", f"the manifest may expand to at most {max_rows:,} items")
            break
        rows.append(Row(line, reader.row(line, raw)))
    if not table.rows and not table.problems:
        table.problem(None, "", "has no rows")
    return table


def _read_text(path: str, table: Table) -> str | None:
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_TABLE_BYTES + 1)
    except FileNotFoundError:
        table.problem(None, "", "file not found")
        return None
    except OSError as exc:
        table.problem(None, "", f"cannot read: {exc.strerror or exc}")
        return None
    if len(raw) > MAX_TABLE_BYTES:
        table.problem(None, "", f"must be at most {MAX_TABLE_BYTES // 2**20} MB")
        return None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        table.problem(line, "", f"must be UTF-8 text, got byte 0x{raw[exc.start]:02x}")
        return None


def _csv_rows(
    text: str, suffix: str, table: Table
) -> Iterator[tuple[int, Iterable[tuple[str, Any]]]]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_DIALECTS[suffix], strict=True)
    try:
        header = next(reader, None)
        if header is None:
            table.problem(None, "", "has no header row (the column names)")
            return
        columns = [name.strip() for name in header]
        if not _header_ok(columns, table):
            return
        start = reader.line_num + 1
        for cells in reader:
            line, start = start, reader.line_num + 1
            if not cells or cells == [""]:
                continue  # a blank line
            if len(cells) > len(columns):
                table.problem(
                    line, "", f"has {len(cells)} cells, the header names {len(columns)} columns"
                )
                continue
            yield line, zip(columns, cells, strict=False)
    except csv.Error as exc:
        table.problem(reader.line_num, "", f"is not valid {suffix[1:].upper()}: {exc}")


def _header_ok(columns: list[str], table: Table) -> bool:
    ok = True
    seen: set[str] = set()
    for number, name in enumerate(columns, 1):
        if not name:
            table.problem(1, "", f"column {number} has no name in the header")
            ok = False
        elif name in seen:
            table.problem(1, f"column {name}", "appears twice in the header")
            ok = False
        seen.add(name)
    return ok


def _jsonl_rows(text: str, table: Table) -> Iterator[tuple[int, Iterable[tuple[str, Any]]]]:
    for line, raw in enumerate(text.split("\n"), 1):
        if not raw.strip():
            continue
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            table.problem(line, "", f"is not valid JSON: {exc.args[0] if exc.args else exc}")
            continue
        if not isinstance(value, dict):
            table.problem(line, "", f"must be a JSON object (one row), got {type(value).__name__}")
            continue
        yield line, value.items()


class _Cells:
    """A row's raw values -> typed job values; file paths made absolute from the table.

    Each column's converter is chosen once, and each distinct path resolved once: a
    100,000-row table over 1,000 images is 1,000 path joins, not 100,000."""

    def __init__(
        self,
        kind_of: KindOf,
        is_local: IsLocalPath,
        folder: str,
        table: Table,
        *,
        skip_empty: bool,
    ) -> None:
        self.skip_empty = skip_empty
        self.kind_of = kind_of
        self.is_local = is_local
        self.folder = folder
        self.table = table
        self._converters: dict[str, Callable[[Any], Any]] = {}
        self._resolved: dict[str, str] = {}

    def row(self, line: int, raw: Iterable[tuple[str, Any]]) -> dict[str, Any]:
        """The row's values; a cell that cannot be read is reported and left out, so that
        the manifest's checks still report the row's other problems."""
        values: dict[str, Any] = {}
        converters = self._converters
        skip_empty = self.skip_empty
        for column, value in raw:
            if skip_empty and (not value or value.isspace()):
                continue
            convert = converters.get(column) or self._converter(column)
            if convert is _same:  # text as it is: most columns of most tables
                values[column] = value
                continue
            try:
                values[column] = convert(value)
            except ValueError as exc:
                self.table.problem(line, f"column {column}", str(exc))
        return values

    def _converter(self, column: str) -> Callable[[Any], Any]:
        kind = self.kind_of(column)
        convert: Callable[[Any], Any]
        if kind in ("file", "files"):
            cells: dict[str, Any] = {}  # a cell's text -> its paths, resolved once

            def convert(value: Any) -> Any:
                if not isinstance(value, str):  # JSONL: a path or a list as written
                    return self._paths(value)
                paths = cells.get(value)
                if paths is None:
                    paths = cells[value] = self._paths(_from_text(kind, value))
                return list(paths) if isinstance(paths, list) else paths

        elif kind is None or kind == "string":
            convert = _same
        else:

            def convert(value: Any) -> Any:
                return _from_text(kind, value) if isinstance(value, str) else value

        self._converters[column] = convert
        return convert

    def _paths(self, value: Any) -> Any:
        if isinstance(value, str):
            return self._path(value)
        if isinstance(value, list):
            return [self._path(v) if isinstance(v, str) else v for v in value]
        return value  # the manifest's check says what it should be

    def _path(self, text: str) -> str:
        resolved = self._resolved.get(text)
        if resolved is None:
            if not text or "\x00" in text or not self.is_local(text):
                resolved = text
            else:
                resolved = os.path.normpath(os.path.join(self.folder, text))
            self._resolved[text] = resolved
        return resolved


def _same(value: Any) -> Any:
    return value


def _from_text(kind: Kind | None, text: str) -> Any:
    """A cell's text as the column's type; ValueError says what was expected."""
    if kind in ("strings", "numbers", "files"):
        parts = [part.strip() for part in text.split(LIST_SEPARATOR)]
        parts = [part for part in parts if part]
        if kind == "numbers":
            return [_number(part) for part in parts]
        return parts
    stripped = text.strip()
    if kind == "file":
        return stripped
    if kind == "integer":
        if not _INTEGER.fullmatch(stripped):
            raise ValueError(f"must be an integer, got {text!r}")
        return int(stripped)
    if kind == "number":
        return _number(stripped)
    if kind == "boolean":
        lowered = stripped.lower()
        if lowered in _TRUE or lowered in _FALSE:
            return lowered in _TRUE
        raise ValueError(f"must be true or false, got {text!r}")
    return text


# A declared input's type (batch.models.inputs) -> how a text cell of it is read.
_KIND_OF_TYPE: Final[dict[str, Kind]] = {
    "string": "string",
    "model": "string",
    "boolean": "boolean",
    "file": "file",
    "file_array": "files",
    "string_array": "strings",
    "model_array": "strings",
    "number_array": "numbers",
}


def kind_of_input(input_type: str, *, integer: bool) -> Kind | None:
    """How a cell of an input of this declared type is read; None: as text (a type with
    no text form, such as `inputs_array`: give it in a JSONL table)."""
    if input_type == "number":
        return "integer" if integer else "number"
    return _KIND_OF_TYPE.get(input_type)


def _number(text: str) -> int | float:
    if _INTEGER.fullmatch(text):
        return int(text)
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"must be a number, got {text!r}") from None


# -- where a validated job came from -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TableSpot:
    """A place in a table: `edits.csv:17 column guidanceScale`."""

    file: str
    line: int | None
    where: str


class JobOrigins:
    """Maps the jobs list after tables are expanded back to where each job was written:
    a row of a table (its line and the columns it filled), or an entry of the manifest
    (whose index moved)."""

    def __init__(self) -> None:
        self._origin: list[tuple[int, str | None, int, frozenset[str]]] = []
        self._columns: dict[tuple[str, ...], frozenset[str]] = {}  # rows share their sets

    def add(self, entry: int, table: Table | None = None, row: Row | None = None) -> None:
        if table is None or row is None:
            self._origin.append((entry, None, 0, frozenset()))
            return
        names = tuple(row.values)
        columns = self._columns.get(names)
        if columns is None:
            columns = self._columns[names] = frozenset(names)
        self._origin.append((entry, table.shown, row.line, columns))

    def original(self, loc: tuple[str | int, ...]) -> tuple[str | int, ...]:
        """`loc` with its job index replaced by the manifest entry's own."""
        index = _job_index(loc)
        if index is None or index >= len(self._origin):
            return loc
        return (loc[0], self._origin[index][0], *loc[2:])

    def spot(self, loc: tuple[str | int, ...]) -> TableSpot | None:
        """The table cell a problem at `loc` is about, or None when it is about the
        manifest (a key of the table's entry applies to every row: it is reported once,
        where it is written)."""
        index = _job_index(loc)
        if index is None or index >= len(self._origin):
            return None
        _, file, line, columns = self._origin[index]
        if file is None:
            return None
        if len(loc) == 2:
            return TableSpot(file, line, "")
        column = loc[2]
        if column in columns:
            return TableSpot(file, line, f"column {column}")
        return None


def _job_index(loc: tuple[str | int, ...]) -> int | None:
    if len(loc) >= 2 and loc[0] == "jobs" and isinstance(loc[1], int):
        return loc[1]
    return None


@dataclass(slots=True)
class Expansion:
    """The jobs list with every table entry replaced by its rows, and what went wrong."""

    jobs: list[Any] = field(default_factory=list)
    origins: JobOrigins = field(default_factory=lambda: JobOrigins())
    in_tables: list[Problem] = field(default_factory=list)  # located in a table file
    at_entries: list[tuple[tuple[str | int, ...], str]] = field(default_factory=list)  # manifest


def expand_tables(
    jobs: list[Any],
    base: str,
    shown_base: str,
    kinds_for: KindsFor,
    is_local: IsLocalPath,
    *,
    max_rows: int,
) -> Expansion | None:
    """Replace each `table:` entry of `jobs` by one job per row (the entry's other keys,
    then the row's values; the entry's `id` prefixes the row's). None: no table at all."""
    if not any(isinstance(job, dict) and TABLE_KEY in job for job in jobs):
        return None
    out = Expansion()
    for index, job in enumerate(jobs):
        if not (isinstance(job, dict) and TABLE_KEY in job):
            out.jobs.append(job)
            out.origins.add(index)
            continue
        where = ("jobs", index, TABLE_KEY)
        name = job[TABLE_KEY]
        if not isinstance(name, str) or not name.strip() or "\x00" in name:
            out.at_entries.append((where, f"must be a path to a {', '.join(SUFFIXES)} file"))
            continue
        table = read_table(
            os.path.join(base, name),
            os.path.join(shown_base, name),
            kinds_for(job),
            is_local,
            max_rows=max(0, max_rows - len(out.jobs)),
        )
        for line, spot, message in table.problems:
            if line is None:  # about the whole file: said where the manifest names it
                out.at_entries.append((where, f"{table.shown}: {message}"))
            else:
                out.in_tables.append(Problem(table.shown, line, spot, message))
        shared = {k: v for k, v in job.items() if k not in (TABLE_KEY, "id")}
        prefix = job.get("id")
        for row in table.rows:
            expanded = {**shared, **row.values} if shared else row.values
            if isinstance(prefix, str) and isinstance(expanded.get("id"), str):
                expanded["id"] = f"{prefix}-{expanded['id']}"
            out.origins.add(index, table, row)
            out.jobs.append(expanded)
        table.rows.clear()  # the jobs hold the values now; origins hold the lines
    return out
