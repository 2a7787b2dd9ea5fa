"""Safe YAML -> plain Python data, with the line of every key and list entry, and bomb limits.

We build Python values straight from the parser's event stream (libyaml's C parser when
available) instead of `yaml.safe_load`, for three reasons:

* Line numbers: every mapping key and sequence entry keeps its line, so a problem found
  much later (by pydantic, or a missing file) can still say `example.yaml:14`.
* Bombs: an alias never copies anything; it adds the anchored subtree's node count to a
  running total, so a "billion laughs" document is refused after a few hundred events
  and a few kilobytes, long before anything expands. Nesting depth is bounded too.
* Only plain data: str, int, float, bool, None, lists and string-keyed mappings. Explicit
  tags other than the core scalar ones (`!!binary`, `!!python/...`, `!custom`) are refused.
  Plain scalars that YAML 1.1 would read as timestamps stay strings (`id: 2024-05-01`).

Merge keys (`<<: *defaults`) work as in PyYAML. Duplicate keys are reported, not silently
overwritten.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml
from yaml import events

# The C parser is ~10x faster; the pure-Python one is the fallback on exotic builds.
_Loader: type[yaml.SafeLoader] | type[yaml.CSafeLoader] = getattr(
    yaml, "CSafeLoader", yaml.SafeLoader
)
_RESOLVERS = yaml.SafeLoader.yaml_implicit_resolvers
_WILDCARD: list[Any] = _RESOLVERS.get(None, [])
_T = "tag:yaml.org,2002:"
_STR, _INT, _FLOAT, _BOOL, _NULL = (_T + n for n in ("str", "int", "float", "bool", "null"))
_MERGE, _TIMESTAMP = _T + "merge", _T + "timestamp"
_SEQ, _MAP = _T + "seq", _T + "map"
_CONSTRUCT = yaml.constructor.SafeConstructor()
_SCALAR_TAGS = {
    _INT: _CONSTRUCT.construct_yaml_int,
    _FLOAT: _CONSTRUCT.construct_yaml_float,
    _BOOL: _CONSTRUCT.construct_yaml_bool,
    _NULL: _CONSTRUCT.construct_yaml_null,
}


class _Merge:
    """Marker for a `<<` key while its mapping is being built."""


_MERGE_KEY = _Merge()


class YamlError(Exception):
    """The text is not YAML we accept. `line` is 1-based, or None when unknown."""

    def __init__(self, message: str, line: int | None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


@dataclass(frozen=True, slots=True)
class YamlLimits:
    """Bounds that keep hostile YAML cheap to refuse."""

    max_depth: int = 32  # a manifest needs about 6 levels
    max_nodes: int = 4_000_000  # after alias expansion; 200,000 jobs x ~15 nodes fits


class LineMap:
    """Lines of the keys and entries of every container built from one document.

    The lines are found only when first asked for (a manifest asks only to report a
    problem): `load_yaml` builds the data without them, which saves a third of its time
    and most of the memory it takes beyond the data itself on a 100,000-job manifest. The
    first `line_of` parses the text again, keeping every line, and walks that copy.
    """

    def __init__(
        self, root: Any, text: str | None = None, limits: YamlLimits | None = None
    ) -> None:
        self.root = root  # the data; keeps every container alive, so the ids below stay valid
        self._text = text  # parsed again for the lines on the first `line_of`
        self._limits = limits or YamlLimits()
        self._tracked: Any = root  # the tree whose containers `_lines` describes
        self._lines: dict[int, tuple[int, dict[str, int] | list[int]]] = {}

    def _add(self, container: Any, line: int, lines: dict[str, int] | list[int]) -> None:
        self._lines[id(container)] = (line, lines)

    def _ensure_lines(self) -> None:
        if self._text is None:
            return
        text, self._text = self._text, None
        tracked, lines, _ = _load(text, self._limits, track=True)
        self._tracked, self._lines = tracked, lines._lines

    def detached(self) -> bool:
        """Whether lines are looked up in a tree of their own (parsed again from the text),
        so the caller may release parts of `root` once it has read them."""
        return self._text is not None or self._tracked is not self.root

    def tree(self) -> Any:
        """The data as parsed, whole, whatever the caller released of `root`."""
        self._ensure_lines()
        return self._tracked

    def line_of(self, path: tuple[str | int, ...]) -> int | None:
        """The line of `path` (keys and indexes from the root), or of its nearest ancestor."""
        self._ensure_lines()
        node = self._tracked
        root_entry = self._lines.get(id(node))
        line = root_entry[0] if root_entry is not None else None
        for part in path:
            entry = self._lines.get(id(node))
            if entry is None:
                break
            lines = entry[1]
            if isinstance(node, dict) and isinstance(lines, dict) and part in node:
                line = lines.get(part, line) if isinstance(part, str) else line
            elif isinstance(node, list) and isinstance(lines, list) and isinstance(part, int):
                if not 0 <= part < len(node):
                    break
                line = lines[part]
            else:
                break
            node = node[part]
        return line


class _Frame:
    """A mapping or sequence being built."""

    __slots__ = ("anchor", "key", "key_line", "line", "lines", "merges", "start", "value")

    def __init__(self, value: Any, line: int, anchor: str | None, start: int, track: bool) -> None:
        self.value = value
        self.line = line
        self.anchor = anchor
        self.start = start  # node count when this container began
        self.lines: Any = ({} if isinstance(value, dict) else []) if track else None
        self.key: Any = None
        self.key_line = 0
        self.merges: list[Any] = []


def _scalar(ev: events.ScalarEvent) -> Any:
    value: str = ev.value
    tag = ev.tag
    if tag is None or tag == "!":
        if not ev.implicit[0]:
            return value  # quoted: always a string
        for rtag, regexp in _RESOLVERS.get(value[:1], []) + _WILDCARD:
            if regexp.match(value):
                tag = rtag
                break
        else:
            return value
        if tag == _TIMESTAMP:
            return value
        if tag == _MERGE:
            return _MERGE_KEY
    if tag == _STR:
        return value
    construct = _SCALAR_TAGS.get(tag)
    if construct is None:
        raise YamlError(f"the YAML tag {tag} is not supported in a manifest", _line(ev))
    try:
        return construct(yaml.ScalarNode(tag, value))
    # PyYAML's constructors trip on odd values (`!!int` with no value: IndexError;
    # `!!bool maybe`: KeyError); every one of those is a bad value, not a crash.
    except (ValueError, IndexError, KeyError, ArithmeticError, yaml.YAMLError) as exc:
        raise YamlError(f"{value!r} is not a valid {tag.rsplit(':', 1)[-1]}", _line(ev)) from exc


def _line(ev: Any) -> int:
    return int(ev.start_mark.line) + 1


def _merge_into(frame: _Frame, lmap: LineMap) -> dict[str, Any]:
    """Apply `<<` merges: explicit keys win, then earlier merged mappings over later ones."""
    merged: dict[str, Any] = {}
    lines: dict[str, int] = {}
    for source in reversed(frame.merges):
        merged.update(source)
        entry = lmap._lines.get(id(source))
        if entry is not None and isinstance(entry[1], dict):
            lines.update(entry[1])
    merged.update(frame.value)
    if frame.lines is not None:
        lines.update(frame.lines)
        frame.lines = lines
    return merged


def load_yaml(text: str, limits: YamlLimits = YamlLimits()) -> tuple[Any, LineMap, list[YamlError]]:
    """Parse one YAML document. Returns (data, lines, soft problems such as duplicate keys).

    Raises YamlError for anything that stops parsing: syntax, bombs, unsupported tags.
    """
    try:
        try:
            root = _load(text, limits, track=False)[0]
        except _DuplicateKey:
            # Rare: the parse that keeps lines reports each duplicate with both its lines.
            return _load(text, limits, track=True)
        return root, LineMap(root, text, limits), []
    except YamlError:
        raise
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        message = " ".join(str(p) for p in (exc.context, exc.problem) if p)
        raise YamlError(f"invalid YAML: {message}", line) from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1 if isinstance(exc.position, int) else None
        raise YamlError(f"invalid YAML: {exc.reason} ({exc.character!r})", line) from None
    except yaml.YAMLError as exc:
        raise YamlError(f"invalid YAML: {exc}", None) from None
    except RecursionError:  # only the pure-Python parser recurses; libyaml caps depth itself
        raise YamlError("invalid YAML: nesting too deep", None) from None


class _DuplicateKey(Exception):
    """A parse without lines met a duplicate key: the one with lines reports it."""


def _load(text: str, limits: YamlLimits, *, track: bool) -> tuple[Any, LineMap, list[YamlError]]:
    loader = _Loader(text)
    soft: list[YamlError] = []
    stack: list[_Frame] = []
    anchors: dict[str, tuple[Any, int]] = {}  # anchor -> (value, expanded node count)
    open_anchors: set[str] = set()
    keys: dict[str, str] = {}
    lmap = LineMap(None)
    root: Any = None
    documents = 0
    nodes = 0
    max_depth, max_nodes = limits.max_depth, limits.max_nodes
    get_event = loader.get_event
    ScalarEvent, AliasEvent = events.ScalarEvent, events.AliasEvent
    MappingStart, SequenceStart = events.MappingStartEvent, events.SequenceStartEvent
    MappingEnd, SequenceEnd = events.MappingEndEvent, events.SequenceEndEvent
    table = lmap._lines
    resolvable = _RESOLVERS.keys() | ({""} if _WILDCARD else set())
    try:
        while True:
            ev: Any = get_event()
            kind = type(ev)
            if kind is ScalarEvent:
                nodes += 1
                value = ev.value
                # Fast path: most scalars are plain words or quoted text and stay strings.
                if ev.tag is not None or (ev.implicit[0] and value[:1] in resolvable):
                    # Plain decimal ints (seeds) skip the resolver; "0..." may be octal in 1.1.
                    if ev.tag is None and value.isdigit() and value[0] != "0" and value.isascii():
                        value = int(value)
                    else:
                        value = _scalar(ev)
                if ev.anchor is not None:
                    anchors[ev.anchor] = (value, 1)
                vline = -1  # computed only when needed, from ev
            elif kind is MappingStart or kind is SequenceStart:
                nodes += 1
                line = ev.start_mark.line + 1
                if len(stack) >= max_depth:
                    raise YamlError(f"nesting deeper than {max_depth} levels", line)
                if ev.tag not in (None, "!", _SEQ, _MAP):
                    raise YamlError(f"the YAML tag {ev.tag} is not supported in a manifest", line)
                if ev.anchor is not None:
                    open_anchors.add(ev.anchor)
                value = {} if kind is MappingStart else []
                stack.append(_Frame(value, line, ev.anchor, nodes, track))
                continue
            elif kind is MappingEnd or kind is SequenceEnd:
                frame = stack.pop()
                value = frame.value
                vline = frame.line
                if frame.merges:
                    value = frame.value = _merge_into(frame, lmap)
                if track:
                    table[id(value)] = (vline, frame.lines)
                if frame.anchor is not None:
                    open_anchors.discard(frame.anchor)
                    anchors[frame.anchor] = (value, nodes - frame.start + 1)
            elif kind is AliasEvent:
                if ev.anchor in open_anchors:
                    raise YamlError(f"alias *{ev.anchor} refers to itself", _line(ev))
                if ev.anchor not in anchors:
                    raise YamlError(f"alias *{ev.anchor} has no anchor &{ev.anchor}", _line(ev))
                value, size = anchors[ev.anchor]
                nodes += size
                vline = -1
                if nodes > max_nodes:
                    raise YamlError(
                        f"more than {max_nodes:,} YAML nodes once aliases are expanded "
                        "(alias bomb?)",
                        _line(ev),
                    )
            elif kind is events.DocumentStartEvent:
                documents += 1
                if documents > 1:
                    raise YamlError("a manifest is a single YAML document", _line(ev))
                continue
            elif kind is events.StreamEndEvent:
                break
            else:
                continue
            if not stack:
                root = value
                continue
            top = stack[-1]
            container = top.value
            if type(container) is list:
                container.append(value)
                if track:
                    top.lines.append(vline if vline > 0 else ev.start_mark.line + 1)
            elif top.key is None:
                top.key_line = vline if vline > 0 else ev.start_mark.line + 1
                if type(value) is str:
                    # One string per distinct key: 100,000 jobs share three or four keys.
                    top.key = keys.setdefault(value, value)
                elif value is _MERGE_KEY:
                    top.key = _MERGE_KEY
                else:
                    shown = repr(value)
                    if isinstance(value, dict | list):
                        shown = "a mapping" if isinstance(value, dict) else "a list"
                    raise YamlError(f"mapping keys must be strings, got {shown}", top.key_line)
            else:
                key = top.key
                top.key = None
                if key is _MERGE_KEY:
                    sources = value if isinstance(value, list) else [value]
                    if not all(isinstance(s, dict) for s in sources):
                        raise YamlError(
                            "a << merge needs a mapping or a list of mappings", top.key_line
                        )
                    top.merges.extend(sources)
                    continue
                if key in container:
                    if not track:
                        raise _DuplicateKey
                    first = top.lines[key]
                    soft.append(
                        YamlError(f"duplicate key {key!r} (first on line {first})", top.key_line)
                    )
                elif track:
                    top.lines[key] = top.key_line
                container[key] = value
        # Only the node count of the whole document matters for memory; checking it once per
        # alias (above) and once here keeps the hot loop short.
        if nodes > max_nodes:
            raise YamlError(f"more than {max_nodes:,} YAML nodes", None)
    finally:
        loader.dispose()
    lmap.root = lmap._tracked = root
    return root, lmap, soft
