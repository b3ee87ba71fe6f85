"""Loading cell files: YAML in, a validated :class:`CellConfig` or every problem out.

Theory of operation
-------------------
An automation engineer fixes a cell file in an editor, so each problem is
reported as ``FILE:LINE: path.to.field: message`` and *all* problems are
reported at once, not one per run.  Loading has four steps:

1. **Parse.** The file is read only if it is a regular file of at most
   :data:`MAX_FILE_BYTES` (a FIFO or ``/dev/zero`` would never end), then
   composed into a node tree (SafeLoader, so no arbitrary objects) no deeper
   than :data:`MAX_DEPTH`, measured with its aliases expanded (at most
   :data:`MAX_NODES` values, so a "billion laughs" bomb is refused, not
   expanded), and constructed into plain data.  Every failure of this step
   is one issue, never a traceback (docs/running.md, "Limits of input files").  While the tree is at
   hand we record the line of every mapping key and list item under its path
   (``("machines", 2, "capabilities", "milling") -> 17``) and note duplicate
   keys, which YAML itself silently resolves to the last one.
2. **Validate fields.** Pydantic checks types, ranges and unknown keys.  Each
   error's ``loc`` is matched against the data to drop pydantic's internal
   steps (union members, ``[key]``) and then looked up in the line map,
   falling back to the nearest parent that has a line (a missing key is
   reported on the line of the mapping that lacks it).
3. **Cross-check.** References between sections — locations, products,
   capabilities, agent ids, hosts, the keys directory — and the strategies
   with their parameters are checked on the *raw data*, not on the model,
   so they are found even when some field elsewhere failed step 2.  These
   checks are defensive: anything of the wrong shape is skipped because
   step 2 already reported it.
4. **Report.** Issues are sorted by line and raised together in a
   :class:`ConfigError`; or the model is returned, remembering its source
   so relative paths (``security.keys_dir``) resolve against the file.

Dicts built by programs (benchmark instances, experiment sweeps) enter at
step 2 through :func:`cell_from_dict`; their issues carry no line.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from agents.cell.limits import MAX_SECONDS
from agents.cell.model import PATTERN_HELP, STRATEGY_PATTERN, CellConfig, NegotiationSettings
from agents.cell.routes import Edge, Node, RouteGraph
from ops.config import hints
from ops.words import counted
from security.untrusted import (
    UnreadableFile,
    escape_controls,
    read_regular_file,
    shown_list,
)
from security.untrusted import (
    shown as echoed,
)

__all__ = [
    "CELL_SUFFIXES",
    "INSTANCE_SUFFIXES",
    "ConfigError",
    "ConfigIssue",
    "cell_from_dict",
    "format_path",
    "load_cell",
    "load_cell_or_instance",
    "load_model",
    "load_yaml",
    "validate_command",
]

CELL_SUFFIXES: tuple[str, ...] = (".yaml", ".yml")
INSTANCE_SUFFIXES: tuple[str, ...] = (".fjs", ".jsp")

MAX_FILE_BYTES = 2 * 1024 * 1024
"""Largest YAML file read (cell, fault scenario, sweep); refused before parsing."""
MAX_DEPTH = 64
"""Deepest nesting of mappings and lists in a YAML file, aliases expanded."""
MAX_NODES = 200_000
"""Most values (scalars, mappings, lists) in a YAML file once its aliases are expanded."""

Loc = tuple[Any, ...]
"""A path into the data: mapping keys and list indices, like pydantic's ``loc``."""

_LineMap = dict[Loc, int]
_Problems = list[tuple[Loc, str]]
_Where = Callable[[Loc], str]


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a cell config, pointing at the file, line and field."""

    file: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        # One line, whatever the input held: ids are quoted and cut where they are
        # echoed (security.untrusted.shown); this escapes anything left over.
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        text = f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"
        return escape_controls(text)


class ConfigError(Exception):
    """A cell config cannot be used; ``issues`` lists every problem found."""

    def __init__(self, issues: Sequence[ConfigIssue]) -> None:
        self.issues: list[ConfigIssue] = list(issues)
        super().__init__("\n".join(str(issue) for issue in self.issues))


# --------------------------------------------------------------------------- public API


def load_cell(path: str | Path) -> CellConfig:
    """Load and fully validate a cell YAML file; raise :class:`ConfigError` listing every issue."""
    shown = str(path)
    file_path = Path(path)
    text = _read_text(file_path, shown)
    data, lines, issues = _parse_yaml(text, shown)
    return _build(data, source=shown, lines=lines, base_dir=file_path.parent, issues=issues)


def load_cell_or_instance(path: str | Path) -> CellConfig:
    """Load a cell YAML file, or turn a benchmark instance (``.fjs``/``.jsp``) into a cell."""
    shown = str(path)
    file_path = Path(path)
    suffix = file_path.suffix.lower()
    if suffix in CELL_SUFFIXES or file_path.is_dir():
        return load_cell(path)  # a directory gets the directory message, not a suffix one
    if suffix not in INSTANCE_SUFFIXES:
        supported = ", ".join(CELL_SUFFIXES + INSTANCE_SUFFIXES)
        raise _single(
            shown,
            f"unsupported file type {file_path.suffix or '(no extension)'!r}; supported: "
            f"{supported} (a cell YAML file or a job-shop benchmark instance)",
        )
    _read_text(file_path, shown)  # same messages as YAML files for missing paths/directories
    try:
        from sim_bridge.instances import instance_to_cell_dict, load_instance
    except ImportError as exc:
        raise _single(shown, f"cannot read benchmark instances: {exc}") from exc
    try:
        data = instance_to_cell_dict(load_instance(file_path))
    except ValueError as exc:  # InstanceError is a ValueError whose text starts "FILE:LINE: "
        raise ConfigError([_issue_from_text(shown, str(exc))]) from exc
    return cell_from_dict(data, source=shown, base_dir=file_path.parent)


M = typing.TypeVar("M", bound=BaseModel)


def load_model(path: str | Path, model: type[M],
               cross_check: Callable[[Any], _Problems] | None = None) -> M:
    """Load any YAML file described by ``model`` (fault scenarios, sweeps) the way cells load:
    every problem as ``FILE:LINE: path: message``, all at once."""
    shown = str(path)
    text = _read_text(Path(path), shown)
    data, lines, issues = _parse_yaml(text, shown)
    if not isinstance(data, dict):
        got = "an empty document" if data is None else f"a {type(data).__name__}"
        raise ConfigError([*issues, ConfigIssue(shown, 1, "", f"the top level must be a "
                                                               f"mapping, got {got}")])
    result: M | None = None
    try:
        result = model.model_validate(data)
    except ValidationError as exc:
        for loc, message in _field_problems(exc, data, model):
            issues.append(ConfigIssue(shown, _line_of(loc, lines), format_path(loc), message))
    for loc, message in _booleans_as_numbers(result, data):
        issues.append(ConfigIssue(shown, _line_of(loc, lines), format_path(loc), message))
    for loc, message in (cross_check(data) if cross_check is not None else []):
        issues.append(ConfigIssue(shown, _line_of(loc, lines), format_path(loc), message))
    if issues or result is None:
        raise ConfigError(_in_order(issues))
    return result


DUPLICATE_KEY = "duplicate key (first at line"


def _in_order(issues: list[ConfigIssue]) -> list[ConfigIssue]:
    """Each issue once, by line — a duplicate key first: YAML dropped the first of the
    two, and what is missing because of it (an unknown machine, a capability no machine
    offers) follows from it, so the cause must not hide among its consequences."""
    unique = list(dict.fromkeys(issues))
    unique.sort(key=lambda i: (not i.message.startswith(DUPLICATE_KEY), i.line or 0))
    return unique


def load_yaml(path: str | Path) -> Any:
    """The plain data of any YAML file, read and parsed with step 1's limits;
    :class:`ConfigError` if it cannot be read or parsed."""
    shown = str(path)
    data, _, _ = _parse_yaml(_read_text(Path(path), shown), shown)
    return data


def cell_from_dict(
    data: Mapping[str, Any], source: str = "<dict>", *, base_dir: str | Path | None = None
) -> CellConfig:
    """Validate a cell given as plain data, with the same cross-checks as :func:`load_cell`.

    ``base_dir`` anchors relative paths (``security.keys_dir``); default: the
    current directory.
    """
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    plain = dict(data) if isinstance(data, Mapping) else data
    return _build(plain, source=source, lines={}, base_dir=base, issues=[])


def validate_command(path: str | Path) -> tuple[int, str]:
    """``autocell validate PATH``: exit code 0 and a summary, or 2 and one issue per line."""
    try:
        config = load_cell_or_instance(path)
    except ConfigError as exc:
        return 2, "\n".join(str(issue) for issue in exc.issues)
    counts = ", ".join(
        counted(len(items), noun)
        for items, noun in (
            (config.machines, "machine"),
            (config.robots, "robot"),
            (config.products, "product"),
            (config.orders, "order"),
        )
    )
    warnings = [f"{path}: warning: {m.id}: `opcua.insecure: true` — the link to "
                f"{m.opcua.endpoint} is neither signed nor encrypted; use it on a test bench only"
                for m in config.machines if m.opcua is not None and m.opcua.insecure]
    return 0, "\n".join([*warnings, f"{path}: OK — cell {config.cell!r}: {counts}"])


def format_path(loc: Loc) -> str:
    """``("machines", 2, "capabilities", "milling")`` -> ``machines[2].capabilities.milling``."""
    out = ""
    for part in loc:
        if isinstance(part, int) and not isinstance(part, bool):
            out += f"[{part}]"
        elif isinstance(part, str) and re.fullmatch(r"[A-Za-z0-9_-]{1,60}", part):
            out += f".{part}" if out else part
        else:
            out += f"[{echoed(str(part))}]"
    return out


# --------------------------------------------------------------------------- steps 1 and 4


def _read_text(path: Path, shown: str) -> str:
    if path.is_dir():
        found = sorted(p.name for p in path.iterdir() if p.suffix.lower() in CELL_SUFFIXES)
        hint = f" (it contains: {', '.join(escape_controls(n) for n in found[:12])})" \
            if found else ""
        raise _single(shown, f"is a directory, not a cell file; pass a .yaml file{hint}")
    try:
        raw = read_regular_file(path, limit=MAX_FILE_BYTES, what="file")
    except UnreadableFile as exc:
        raise _single(shown, exc.problem) from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _single(shown, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses nesting deeper than :data:`MAX_DEPTH` while composing.

    PyYAML's composer recurses once per level, so 100 000 ``[`` would end in
    ``RecursionError``; counting levels here stops it at the first level too many,
    with the line of that level.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise yaml.composer.ComposerError(
                    None, None, f"nested deeper than {MAX_DEPTH} levels (the limit for "
                                "configuration files)", mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _check_expansion(root: yaml.Node) -> None:
    """Refuse a node tree that aliases make too big, too deep or endless.

    Aliases let a 1.5 KB file name a billion nodes ("billion laughs"); everything
    after composing — the line index, construction, pydantic — walks the tree as
    expanded, so it is measured here first, in time linear in the *distinct*
    nodes (post-order, memoised, no recursion).
    """
    done: dict[int, tuple[int, int]] = {}  # id -> (expanded nodes, expanded depth)
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            kids = _children(node)
            size = 1 + sum(done[id(k)][0] for k in kids)
            depth = 1 + max((done[id(k)][1] for k in kids), default=0)
            on_path.discard(key)
            done[key] = (size, depth)
            if size > MAX_NODES:
                raise _ExpansionError(node, f"the document has more than {MAX_NODES:,} values "
                                            "once its aliases are expanded (the limit for "
                                            "configuration files)")
            if depth > MAX_DEPTH:
                raise _ExpansionError(node, f"the document is nested deeper than {MAX_DEPTH} "
                                            "levels once its aliases are expanded")
            continue
        if key in done:
            continue
        if key in on_path:
            raise _ExpansionError(node, "a recursive alias (an anchor used inside itself)")
        on_path.add(key)
        stack.append((node, True))
        stack.extend((k, False) for k in _children(node) if id(k) not in done)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


class _ExpansionError(yaml.MarkedYAMLError):
    """A document refused after composing, at the line of the node that broke the limit."""

    def __init__(self, node: yaml.Node, problem: str) -> None:
        super().__init__(None, None, problem, node.start_mark)


def _parse_yaml(text: str, shown: str) -> tuple[Any, _LineMap, list[ConfigIssue]]:
    loader: _BoundedLoader | None = None
    try:
        loader = _BoundedLoader(text)  # the reader checks the characters here: inside the try
        node = loader.get_single_node()
        lines: _LineMap = {(): 1}
        issues: list[ConfigIssue] = []
        if node is None:
            return None, lines, issues
        _check_expansion(node)
        # Index before constructing: construction flattens `<<` merge keys into
        # the node tree, which would make every overridden merged key look duplicated.
        _index(loader, node, (), lines, issues, shown, set())
        return loader.construct_document(node), lines, issues
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        what = exc.problem or exc.context or "syntax error"
        if exc.context and exc.problem and exc.context_mark is not None:
            what += f" ({exc.context} that starts at line {exc.context_mark.line + 1})"
        if "'\\t'" in what:
            what += "; YAML indents with spaces, never tabs"
        raise ConfigError([ConfigIssue(shown, line, "", f"invalid YAML: {what}")]) from None
    except yaml.reader.ReaderError as exc:  # a control character; it carries a position only
        line = text.count("\n", 0, exc.position) + 1
        raise ConfigError([ConfigIssue(
            shown, line, "", f"invalid YAML: control character {exc.character:#04x} at "
                             f"character {exc.position}; YAML text may not hold control "
                             "characters other than tab and newline")]) from None
    except yaml.YAMLError as exc:
        raise _single(shown, f"invalid YAML: {exc}") from None
    except (ValueError, OverflowError) as exc:  # a scalar Python refuses: 2020-13-45, 5000 digits
        raise _single(shown, f"invalid YAML: a value cannot be read: {exc}") from None
    except RecursionError:  # a safety net: MAX_DEPTH should stop it first
        raise _single(shown, "invalid YAML: nested too deeply") from None
    finally:
        if loader is not None:
            loader.dispose()


_MERGE_TAG = "tag:yaml.org,2002:merge"


def _index(
    loader: yaml.SafeLoader,
    node: yaml.Node,
    loc: Loc,
    lines: _LineMap,
    issues: list[ConfigIssue],
    shown: str,
    active: set[int],
) -> None:
    """Record the line of every key and item below ``node``; flag duplicate keys."""
    if id(node) in active:  # a recursive alias; the data has no finite path there
        return
    active.add(id(node))
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE_TAG:
                continue
            key = loader.construct_object(key_node)
            line = key_node.start_mark.line + 1
            if key in seen:
                issues.append(
                    ConfigIssue(
                        shown,
                        line,
                        format_path(loc + (key,)),
                        f"{DUPLICATE_KEY} {seen[key]}); YAML keeps only the last "
                        "one, so remove or rename one of them",
                    )
                )
            seen[key] = line
            lines[loc + (key,)] = line
            _index(loader, value_node, loc + (key,), lines, issues, shown, active)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[loc + (index,)] = item.start_mark.line + 1
            _index(loader, item, loc + (index,), lines, issues, shown, active)
    active.discard(id(node))


def _build(
    data: Any, *, source: str, lines: _LineMap, base_dir: Path, issues: list[ConfigIssue]
) -> CellConfig:
    def line_of(loc: Loc) -> int | None:
        return _line_of(loc, lines)

    if not isinstance(data, dict):
        got = "an empty document" if data is None else f"a {type(data).__name__}"
        raise ConfigError(
            [
                *issues,
                ConfigIssue(
                    source,
                    line_of(()),
                    "",
                    f"the top level must be a mapping starting with `cell: <id>`, got {got}",
                ),
            ]
        )

    config: CellConfig | None = None
    refused: _Problems = []
    try:
        config = CellConfig.model_validate(data)
    except ValidationError as exc:
        refused = _field_problems(exc, data)
    booleans = (_booleans_as_numbers(config, data) if config is not None
                else _booleans_by_type(CellConfig, data))   # every problem in one go
    flagged = {loc for loc, _ in booleans}      # `false` for a number: said once, as that
    for loc, message in [*((lc, m) for lc, m in refused if lc not in flagged), *booleans]:
        issues.append(ConfigIssue(source, line_of(loc), format_path(loc), message))

    def where(loc: Loc) -> str:
        line = line_of(loc)
        return format_path(loc) + (f" (line {line})" if line is not None and lines else "")

    for loc, message in _cross_check(data, base_dir, where, config):
        issues.append(ConfigIssue(source, line_of(loc), format_path(loc), message))

    if issues or config is None:
        raise ConfigError(_in_order(issues))
    config._source = source
    config._base_dir = base_dir
    return config


def _booleans_as_numbers(value: Any, raw: Any, loc: Loc = ()) -> _Problems:
    """Every ``true``/``false`` the models took for a number (pydantic reads ``quantity: true``
    as 1): walks the validated model beside the file's data, so it knows each field's type."""
    if isinstance(raw, bool):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return [(loc, f"expected a number, got {str(raw).lower()}")]
        return []
    out: _Problems = []
    if isinstance(value, BaseModel) and isinstance(raw, dict):
        for name, field in type(value).model_fields.items():
            key = field.alias or name
            if key in raw:
                out += _booleans_as_numbers(getattr(value, name), raw[key], (*loc, key))
    elif isinstance(value, (list, tuple)) and isinstance(raw, list):
        for i, (item, raw_item) in enumerate(zip(value, raw, strict=False)):
            out += _booleans_as_numbers(item, raw_item, (*loc, i))
    elif isinstance(value, dict) and isinstance(raw, dict):
        for key, raw_item in raw.items():
            if key in value:
                out += _booleans_as_numbers(value[key], raw_item, (*loc, key))
    return out


def _booleans_by_type(tp: Any, raw: Any, loc: Loc = ()) -> _Problems:
    """:func:`_booleans_as_numbers` for a file the models refused for another reason: the
    same ``true``/``false`` written for a number, found from the fields' declared types,
    so that it is listed with the other problems rather than after they are fixed."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _booleans_by_type(typing.get_args(tp)[0], raw, loc)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(tp) if a is not type(None)]
        if isinstance(raw, bool):
            numeric = any(_strip(a) in (int, float) for a in members)
            return ([(loc, f"expected a number, got {str(raw).lower()}")]
                    if numeric and not any(_strip(a) is bool for a in members) else [])
        out: _Problems = []
        for a in members:
            out = _booleans_by_type(a, raw, loc)
            if out:
                break
        return out
    if isinstance(raw, bool):
        return ([(loc, f"expected a number, got {str(raw).lower()}")]
                if tp in (int, float) else [])
    if isinstance(tp, type) and issubclass(tp, BaseModel) and isinstance(raw, dict):
        found: _Problems = []
        for name, field in tp.model_fields.items():
            key = field.alias or name
            if key in raw:
                found += _booleans_by_type(field.annotation, raw[key], (*loc, key))
        return found
    args = typing.get_args(tp)
    if origin in (list, tuple) and isinstance(raw, list) and args:
        return [p for i, item in enumerate(raw)
                for p in _booleans_by_type(args[0], item, (*loc, i))]
    if origin is dict and isinstance(raw, dict) and len(args) == 2:
        return [p for key, item in raw.items()
                for p in _booleans_by_type(args[1], item, (*loc, key))]
    return []


def _strip(tp: Any) -> Any:
    """``Annotated[X, ...]`` -> ``X``."""
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _line_of(loc: Loc, lines: _LineMap) -> int | None:
    for end in range(len(loc), -1, -1):
        line = lines.get(loc[:end])
        if line is not None:
            return line
    return None


def _single(source: str, message: str) -> ConfigError:
    return ConfigError([ConfigIssue(source, None, "", message)])


def _issue_from_text(source: str, text: str) -> ConfigIssue:
    match = re.match(r"^(?P<file>.*?):(?P<line>\d+): (?P<message>.*)$", text, re.DOTALL)
    if match is None:
        return ConfigIssue(source, None, "", text)
    line = int(match["line"]) or None
    return ConfigIssue(match["file"], line, "", match["message"])


# --------------------------------------------------------------------------- step 2


def _field_problems(exc: ValidationError, data: dict[str, Any],
                    root: type[BaseModel] = CellConfig) -> _Problems:
    problems: _Problems = []
    for error in exc.errors(include_url=False):
        loc = _data_loc(error["loc"], data)
        problems.append((loc, _describe(error, loc, root)))
    return problems


def _data_loc(error_loc: Loc, data: Any) -> Loc:
    """Map pydantic's ``loc`` onto a path that exists in the data (plus a missing last key)."""
    out: list[Any] = []
    current = data
    for position, part in enumerate(error_loc):
        if isinstance(current, dict) and part in current:
            out.append(part)
            current = current[part]
        elif (
            isinstance(current, list)
            and isinstance(part, int)
            and not isinstance(part, bool)
            and 0 <= part < len(current)
        ):
            out.append(part)
            current = current[part]
        elif isinstance(current, dict) and position == len(error_loc) - 1 and part != "[key]":
            out.append(part)  # a missing key: reported on its parent's line
        # anything else is a pydantic-internal step: a union member or "[key]"
    return tuple(out)


def _colon_hint(value: Any) -> str:
    """A dotted path written with a dot before the class: ``mylab.strategies.Mine``."""
    if isinstance(value, str) and "." in value and ":" not in value:
        module, _, cls = value.rpartition(".")
        if module and cls:
            return f" (did you mean {echoed(module + ':' + cls)}? the class comes after a colon)"
    return ""


def _describe(error: Mapping[str, Any], loc: Loc, root: type[BaseModel] = CellConfig) -> str:
    kind = error["type"]
    message = str(error["msg"])
    if kind == "missing":
        return "required key is missing"
    if kind == "extra_forbidden":
        key = str(loc[-1]) if loc else "?"
        allowed = _allowed_keys(loc[:-1], root)
        meant = hints.key_suggestion(key, allowed)
        hint = f" (did you mean {echoed(meant)}?)" if meant else ""
        return f"unknown key {echoed(key)}{hint}; allowed keys: {', '.join(allowed)}"
    value = error.get("input")
    if loc and isinstance(loc[-1], str):
        better = hints.rewrite(kind, value, loc[-1], _field_at(loc, root), message)
        if better is not None:
            return better
    if kind == "string_pattern_mismatch":
        pattern = str(error.get("ctx", {}).get("pattern", ""))
        help_text = PATTERN_HELP.get(pattern, f"it must match {pattern}")
        hint = _colon_hint(value) if pattern == STRATEGY_PATTERN else ""
        return f"{echoed(value)} is not allowed here: {help_text}{hint}"
    message = message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if kind != "value_error" and not isinstance(value, (dict, list)):
        message += f" (got {echoed(value)})"
    return message


def _annotation_at(loc: Loc, root: type[BaseModel] = CellConfig) -> Any:
    """The annotation (model, list, mapping …) found by walking ``loc`` down the ``root``
    model's tree; None where the path leaves the models."""
    annotation: Any = root
    for part in loc:
        annotation = _model_member(_unwrap(annotation))
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            field = annotation.model_fields.get(part) if isinstance(part, str) else None
            if field is None:
                return None
            annotation = field.annotation
        elif typing.get_origin(annotation) is list and isinstance(part, int):
            annotation = typing.get_args(annotation)[0]
        elif typing.get_origin(annotation) is dict:
            annotation = typing.get_args(annotation)[1]
        else:
            return None
    return _model_member(_unwrap(annotation))


def _allowed_keys(loc: Loc, root: type[BaseModel] = CellConfig) -> list[str]:
    """Field names of the model found at ``loc`` in the ``root`` model's tree, if any."""
    model = _annotation_at(loc, root)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return [field.alias or name for name, field in model.model_fields.items()]
    return []


def _field_at(loc: Loc, root: type[BaseModel] = CellConfig) -> FieldInfo | None:
    """The model field ``loc`` ends at (``machines[0].power_kw`` -> Machine.power_kw)."""
    if not loc or not isinstance(loc[-1], str):
        return None
    model = _annotation_at(loc[:-1], root)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return next((f for name, f in model.model_fields.items()
                     if (f.alias or name) == loc[-1]), None)
    return None


def _model_member(annotation: Any) -> Any:
    """The one model of a union like ``name | {name, params}`` (a key inside a mapping
    can only belong to it); any other annotation unchanged."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        models = [a for a in map(_unwrap, typing.get_args(annotation))
                  if isinstance(a, type) and issubclass(a, BaseModel)]
        if len(models) == 1:
            return models[0]
    return annotation


def _unwrap(annotation: Any) -> Any:
    """Strip ``Annotated[...]`` and ``X | None`` down to the core type."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            members = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation


def _did_you_mean(value: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(value, known, n=1, cutoff=0.6)
    return f" (did you mean {echoed(close[0])}?)" if close else ""


# --------------------------------------------------------------------------- step 3


def _cross_check(data: dict[str, Any], base_dir: Path | None, where: _Where,
                 config: CellConfig | None = None) -> _Problems:
    """Every problem that needs more than one section of the cell to see."""
    problems: _Problems = []
    locations = _check_layout(data, problems, where)
    _check_unique(data, ("machines", "robots", "orders"), "agent", problems, where)
    _check_unique(data, ("products",), "product", problems, where)
    _check_resources(data, locations, problems)
    _check_transport(data, locations, problems)
    _check_route_graph(data, locations, problems, where)
    _check_work(data, problems, where)
    _check_hosts(data, problems, where, config)
    _check_plant_identity(data, problems, where)
    _check_metrics_ports(data, problems, where)
    _check_negotiation(data, problems)
    _check_energy(data, problems)
    _check_strategies(data, problems)
    if base_dir is not None:
        _check_security(data, base_dir, problems)
        _check_maintenance_models(data, base_dir, problems)
    return problems


def _entries(data: Any, *keys: str) -> list[tuple[int, dict[str, Any]]]:
    """``(index, item)`` for the mapping items of the list at ``data[keys...]``."""
    current = data
    for key in keys:
        current = current.get(key) if isinstance(current, dict) else None
    if not isinstance(current, list):
        return []
    return [(i, item) for i, item in enumerate(current) if isinstance(item, dict)]


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            return float(value)
    except (ValueError, OverflowError):  # 10**400: the model's range check says so
        return None
    return None


def _unknown(
    kind: str, value: str, known: Sequence[str], fix: str, lead: str = "unknown",
    taken: Sequence[str] = ()
) -> str:
    """``taken``: known names the value cannot have meant (already listed beside it)."""
    known = list(dict.fromkeys(known))
    meant = _did_you_mean(value, [k for k in known if k not in taken])
    return f"{lead} {kind} {echoed(value)}{meant}; {fix} (known: {shown_list(known)})"


def _check_layout(data: dict[str, Any], problems: _Problems, where: _Where) -> list[str]:
    """Location ids must be unique; input and output must name one. Returns the ids."""
    ids: list[str] = []
    first: dict[str, Loc] = {}
    for i, location in _entries(data, "layout", "locations"):
        location_id = _text(location.get("id"))
        if location_id is None:
            continue
        loc = ("layout", "locations", i, "id")
        if location_id in first:
            problems.append(
                (loc, f"duplicate location id {location_id!r}, already used by "
                      f"{where(first[location_id])}; rename one of them")
            )
            continue
        first[location_id] = loc
        ids.append(location_id)
    layout = data.get("layout")
    if isinstance(layout, dict):
        for key in ("input", "output"):
            value = _text(layout.get(key))
            if value is not None and ids and value not in ids:
                fix = "use one of the layout's location ids"
                problems.append((("layout", key), _unknown("location", value, ids, fix)))
    return ids


def _check_unique(
    data: dict[str, Any], sections: Sequence[str], kind: str, problems: _Problems, where: _Where
) -> None:
    """Ids must be unique across ``sections`` (machines, robots and orders share agent ids)."""
    first: dict[str, Loc] = {}
    scope = ", ".join(sections[:-1]) + " and " + sections[-1] if len(sections) > 1 else sections[0]
    for section in sections:
        for i, item in _entries(data, section):
            item_id = _text(item.get("id"))
            if item_id is None:
                continue
            loc = (section, i, "id")
            if item_id in first:
                why = f" ({scope} share one namespace of agent ids)" if len(sections) > 1 else ""
                problems.append(
                    (loc, f"duplicate {kind} id {item_id!r}, already used by "
                          f"{where(first[item_id])}{why}; rename one of them")
                )
            else:
                first[item_id] = loc


def _check_resources(data: dict[str, Any], locations: list[str], problems: _Problems) -> None:
    """Machines and robots must stand at known locations; failures need repairs."""
    fix = "add it to layout.locations or use a known location"
    for i, machine in _entries(data, "machines"):
        location = _text(machine.get("location"))
        if location is not None and locations and location not in locations:
            problems.append(
                (("machines", i, "location"), _unknown("location", location, locations, fix))
            )
        if machine.get("mtbf_s") is not None and machine.get("mttr_s") is None:
            problems.append(
                (("machines", i, "mtbf_s"),
                 "mtbf_s is set but mttr_s is missing; add mttr_s (mean time to repair, "
                 "seconds) or set mtbf_s: null for a machine that never breaks")
            )
    for i, robot in _entries(data, "robots"):
        home = _text(robot.get("home"))
        if home is not None and locations and home not in locations:
            problems.append((("robots", i, "home"), _unknown("location", home, locations, fix)))
        table = robot.get("transport_s")
        if not isinstance(table, dict) or not locations:
            continue
        for origin, row in table.items():
            loc = ("robots", i, "transport_s", origin)
            if isinstance(origin, str) and origin not in locations:
                problems.append((loc, _unknown("location", origin, locations, fix)))
            for target in row if isinstance(row, dict) else ():
                if isinstance(target, str) and target not in locations:
                    problems.append((loc + (target,), _unknown("location", target, locations, fix)))


def _check_transport(data: dict[str, Any], locations: list[str], problems: _Problems) -> None:
    """Parts that must move between locations need a robot to carry them, unless the cell says
    transport is instantaneous: without either, a run would teleport every part and report an
    optimistic makespan (issue 18)."""
    layout = data.get("layout")
    if not isinstance(layout, dict) or not locations:
        return
    robots = data.get("robots")
    if (isinstance(robots, list) and robots) or layout.get("transport") == "instantaneous":
        return
    used = {loc for _, m in _entries(data, "machines")
            if (loc := _text(m.get("location"))) in locations}
    entry = _text(layout.get("input"))
    entry = entry if entry in locations else locations[0]       # the documented defaults
    exit_ = _text(layout.get("output"))
    used |= {entry, exit_ if exit_ in locations else entry}
    if len(used) > 1:
        problems.append((("layout",),
                         f"parts move between {len(used)} locations ({shown_list(sorted(used))}) "
                         "but the cell has no robots to carry them; add `robots:`, or put "
                         "`transport: instantaneous` under `layout:` if moves take no time in "
                         "this model"))


def _check_route_graph(
    data: dict[str, Any], locations: list[str], problems: _Problems, where: _Where
) -> None:
    """The layout's route graph: unique node ids, edges between known nodes with a length,
    and every location reachable from the input and back (so from every other location)."""
    layout = data.get("layout")
    graph = layout.get("graph") if isinstance(layout, dict) else None
    edges_given = graph.get("edges") if isinstance(graph, dict) else None
    if not isinstance(edges_given, list) or not edges_given or not locations:
        return   # no edges (or not a list of them) is the model's to report
    nodes = _graph_nodes(data, problems, where)
    edges = _graph_edges(data, nodes, problems)
    if edges is None:
        return   # reachability over a broken edge list would only repeat its problems
    routes = RouteGraph(nodes, tuple(edges))
    on_edge = {e.start for e in edges} | {e.end for e in edges}
    fix = "add an edge to layout.graph.edges that joins it to the others"
    for i, robot in _entries(data, "robots"):
        home = _text(robot.get("home"))
        if home in locations and home not in on_edge:
            problems.append((("robots", i, "home"),
                             f"home {echoed(home)} is on no edge of the route graph, so the "
                             f"robot cannot leave it; {fix}"))
    start = _text(layout.get("input")) if isinstance(layout, dict) else None
    start = start if start in locations else locations[0]
    ahead, back = routes.reachable_from(start), routes.reaching(start)
    for i, location in _entries(data, "layout", "locations"):
        loc_id = _text(location.get("id"))
        if loc_id not in locations or (loc_id in ahead and loc_id in back):
            continue
        if loc_id not in on_edge:
            why, hint = "is on no edge of the route graph", ""
        else:
            hint = " (or make a one-way edge bidirectional)"
            why = (f"cannot be reached from {echoed(start)} on the route graph"
                   if loc_id not in ahead else
                   f"has no route back to {echoed(start)} on the route graph")
        problems.append((("layout", "locations", i, "id"),
                         f"location {echoed(loc_id)} {why}; robots must reach every location "
                         f"and return; {fix}{hint}"))


def _graph_nodes(data: dict[str, Any], problems: _Problems, where: _Where) -> dict[str, Node]:
    """Every node of the route graph by id: the locations, then the waypoints of graph.nodes."""
    nodes: dict[str, Node] = {}
    first: dict[str, Loc] = {}
    places: list[tuple[Loc, dict[str, Any]]] = [
        (("layout", "locations", i), p) for i, p in _entries(data, "layout", "locations")]
    places += [(("layout", "graph", "nodes", i), p)
               for i, p in _entries(data, "layout", "graph", "nodes")]
    for loc, place in places:
        node_id, x, y = _text(place.get("id")), _number(place.get("x")), _number(place.get("y"))
        if node_id is None:
            continue
        if node_id in first:
            if loc[1] == "graph":   # duplicate locations are _check_layout's to report
                problems.append((loc + ("id",),
                                 f"duplicate node id {node_id!r}, already used by "
                                 f"{where(first[node_id])} (every location is a node of the "
                                 "route graph); rename one of them"))
            continue
        first[node_id] = loc + ("id",)
        nodes[node_id] = Node(node_id, x if x is not None else math.nan,
                              y if y is not None else math.nan)
    return nodes


def _graph_edges(data: dict[str, Any], nodes: dict[str, Node],
                 problems: _Problems) -> list[Edge] | None:
    """The directed edges of graph.edges; None when any of them is unusable."""
    edges: list[Edge] = []
    broken = False
    fix = "use a location id or an id from layout.graph.nodes"
    for i, edge in _entries(data, "layout", "graph", "edges"):
        loc = ("layout", "graph", "edges", i)
        ends = [_text(edge.get("from")), _text(edge.get("to"))]
        for key, node_id in zip(("from", "to"), ends, strict=True):
            if node_id is not None and node_id not in nodes:
                problems.append((loc + (key,), _unknown("node", node_id, list(nodes), fix)))
        start, end = ends
        if start not in nodes or end not in nodes:
            broken = True
            continue
        assert start is not None and end is not None
        if start == end:
            problems.append((loc + ("to",), f"the edge leads from {echoed(start)} back to "
                             "itself; join two different nodes"))
            broken = True
            continue
        length_m = _number(edge.get("length_m"))
        if edge.get("length_m") is None:
            a, b = nodes[start], nodes[end]
            length_m = math.hypot(b.x - a.x, b.y - a.y)
            if length_m == 0:
                problems.append((loc, f"{echoed(start)} and {echoed(end)} stand at the same "
                                 "point, so the edge has no length; give length_m (> 0)"))
        if length_m is None or not length_m > 0:
            broken = True   # a given length <= 0 is reported by the model's check
            continue
        edges.append(Edge(start, end, length_m))
        if edge.get("bidirectional", True) is not False:
            edges.append(Edge(end, start, length_m))
    return None if broken else edges


def _check_work(data: dict[str, Any], problems: _Problems, where: _Where) -> None:
    """Routings need a capable machine; orders need a product and a due date after release."""
    # a list of names is reported on the machine (capability -> seconds per unit); its names
    # still count as offered, so the routing is not blamed for the same mistake
    offered = sorted({str(c) for _, m in _entries(data, "machines")
                      for c in _capability_names(m.get("capabilities"))})
    machines_ok = bool(_entries(data, "machines"))
    products: list[str] = []
    for i, product in _entries(data, "products"):
        product_id = _text(product.get("id"))
        if product_id is not None:
            products.append(product_id)
        ops: dict[str, Loc] = {}
        for j, step in _entries(product, "routing"):
            loc = ("products", i, "routing", j)
            capability = _text(step.get("capability"))
            if capability is not None and machines_ok and capability not in offered:
                fix = "add it to a machine's capabilities or fix the routing"
                caps = next((_capability_names(m.get("capabilities"))
                             for _, m in _entries(data, "machines")
                             if _text(m.get("id")) == capability), None)
                if caps is not None:        # a machine's id where its capability goes
                    fix = (f"{echoed(capability)} is a machine: a routing names the capability "
                           f"a machine offers ({shown_list([str(c) for c in caps])}), and "
                           "the machines that offer it bid for the step")
                problems.append(
                    (loc + ("capability",),
                     _unknown("capability", capability, offered, fix, lead="no machine offers"))
                )
            op = _text(step.get("op"))
            if op is not None and op in ops:
                problems.append(
                    (loc + ("op",),
                     f"operation {op!r} appears twice in this routing (first at "
                     f"{where(ops[op])}); operation names must be unique per product")
                )
            elif op is not None:
                ops[op] = loc + ("op",)
    fastest: dict[str, float] = {}
    for _, machine in _entries(data, "machines"):
        caps = machine.get("capabilities")
        for cap, seconds in (caps.items() if isinstance(caps, dict) else ()):
            t = _number(seconds)
            if t is not None and t > 0:
                fastest[str(cap)] = min(t, fastest.get(str(cap), t))
    routings = {str(p.get("id")): [fastest.get(str(step.get("capability")), 0.0)
                                   for _, step in _entries(p, "routing")]
                for _, p in _entries(data, "products")}
    for i, order in _entries(data, "orders"):
        quantity = _number(order.get("quantity", 1))
        work = (quantity or 0.0) * sum(routings.get(str(order.get("product")), []))
        if work > MAX_SECONDS:
            problems.append(
                (("orders", i, "quantity"),
                 f"the order's work (quantity × the fastest time of each operation) is "
                 f"{work:.3g} s, beyond the limit of {MAX_SECONDS:g} s of cell time; "
                 "split it into smaller orders"))
        wanted = _text(order.get("product"))
        if wanted is not None and wanted not in products:
            fix = "add the product to `products` or fix the order"
            problems.append((("orders", i, "product"), _unknown("product", wanted, products, fix)))
        release_at = _number(order.get("release_at", 0))
        due_at = _number(order.get("due_at"))
        if release_at is not None and due_at is not None and due_at <= release_at:
            problems.append(
                (("orders", i, "due_at"),
                 f"due_at ({due_at:g} s) is not after release_at ({release_at:g} s); "
                 "an order must be due after it is released")
            )


def _capability_names(caps: Any) -> list[Any]:
    """The names a machine's ``capabilities`` give, in any of the shapes people write."""
    if isinstance(caps, str):
        return [caps]
    return list(caps) if isinstance(caps, (dict, list)) else []


def _check_hosts(data: dict[str, Any], problems: _Problems, where: _Where,
                 config: CellConfig | None = None) -> None:
    """Hosts list known agents, each agent on one host; names and endpoints are unique.

    A known agent is any the cell's build makes (``agents.cell.build.roles_of``): its
    machines, robots and orders, and the service agents the cell turns on — the energy
    manager of a capped cell, the technician crew of a negotiating one, whatever else is
    added there — so a new agent can be placed without touching this check.  Without a
    valid model (other problems in the file) the machine, robot and order ids and every
    service agent's id are taken as known, so the id is reported only if no cell could
    build it."""
    agents = [
        item_id
        for section in ("machines", "robots", "orders")
        for _, item in _entries(data, section)
        if (item_id := _text(item.get("id"))) is not None
    ]
    if config is not None:
        from agents.cell.build import roles_of
        roles = roles_of(config)        # the service agents first: the list is cut short
        agents = sorted(roles, key=lambda a: roles[a] in ("machine", "robot", "order"))
    else:
        agents = [*_service_agents(), *agents]
    placed: dict[str, Loc] = {}
    names: dict[str, Loc] = {}
    endpoints: dict[str, Loc] = {}
    defaults: dict[Loc, str] = {}
    for loc, endpoint, given in _process_endpoints(data, config):  # the simulator, the console
        key = _bind_key(endpoint)
        if not given:
            defaults[loc] = f"{'.'.join(map(str, loc))} (its default)"
        if key in endpoints:
            problems.append((loc, f"endpoint {endpoint!r} is already bound by "
                                  f"{defaults.get(endpoints[key]) or where(endpoints[key])}; "
                                  "each process needs its own"))
        else:
            endpoints[key] = loc
    for i, host in _entries(data, "hosts"):
        for key, seen in (("name", names), ("endpoint", endpoints)):
            value = _text(host.get(key))
            if value is None:
                continue
            value = _bind_key(value) if key == "endpoint" else value
            if value in seen:
                problems.append(
                    (("hosts", i, key), f"duplicate host {key} {_text(host.get(key))!r}, "
                                        "already used by "
                                        f"{defaults.get(seen[value]) or where(seen[value])}; "
                                        f"each {'host' if key == 'name' else 'process'} "
                                        "needs its own")
                )
            else:
                seen[value] = ("hosts", i, key)
        listed = host.get("agents")
        for j, agent in enumerate(listed if isinstance(listed, list) else []):
            if not isinstance(agent, str):
                continue
            loc = ("hosts", i, "agents", j)
            if agent not in agents:
                fix = ("list the agents the cell builds (machine, robot and order ids, "
                       "and the service agents it turns on)")
                beside = [a for a in listed or [] if isinstance(a, str)]
                problems.append((loc, _unknown("agent", agent, agents, fix, taken=beside)
                                 + _service_hint(agent)))
            elif agent in placed:
                problems.append(
                    (loc, f"agent {agent!r} is already placed by {where(placed[agent])}; "
                          "an agent runs on exactly one host")
                )
            else:
                placed[agent] = loc


def _process_endpoints(data: dict[str, Any],
                       config: CellConfig | None) -> list[tuple[Loc, str, bool]]:
    """The endpoints `autocell up` binds besides the hosts': the simulator's and the console
    agent's, as written (True) or, with a valid model, their defaults (False)."""
    out: list[tuple[Loc, str, bool]] = []
    if not data.get("hosts"):           # no `up`: nothing binds these
        return out
    sections = [("sim", "endpoint")]
    if config is None or _escalates(config):      # the console agent runs only then
        sections.append(("escalation", "console_endpoint"))
    for section, key in sections:
        given = data.get(section)
        value = _text(given.get(key)) if isinstance(given, dict) else None
        if value is not None:
            out.append(((section, key), value, True))
        elif config is not None:
            out.append(((section, key), getattr(getattr(config, section), key), False))
    return sorted(out, key=lambda e: e[2])        # a clash is told where it was written


def _escalates(config: CellConfig) -> bool:
    """Whether some escalation rule is on: `up` starts a console agent only then."""
    from agents.cell.build import policy_of
    from agents.escalation.policy import policy_on

    return policy_on(policy_of(config))


def _bind_key(endpoint: str) -> str:
    """Endpoints that bind the same socket compare equal: ``tcp://127.0.0.1:5601``,
    ``tcp://localhost:5601``, ``tcp://*:5601`` and ``tcp://0.0.0.0:5601`` on one PC."""
    scheme, sep, rest = endpoint.partition("://")
    host, colon, port = rest.rpartition(":")
    if scheme == "tcp" and sep and colon and host in ("127.0.0.1", "localhost", "*",
                                                       "0.0.0.0"):
        return f"tcp://*:{port}"
    return endpoint


def _service_agents() -> dict[str, str]:
    """The cell's optional service agents: id -> when the build makes one (keep in step
    with ``agents.cell.build.roles_of``)."""
    from agents.energy.manager import ENERGY_MANAGER_ID
    from agents.maintenance.crew import CREW_ID
    from agents.maintenance.stores import STORES_ID
    return {ENERGY_MANAGER_ID: "when the cell enforces a power cap (energy.peak_cap_kw "
                               "with cap_leases)",
            CREW_ID: "when maintenance.negotiate is true",
            STORES_ID: "when maintenance.negotiate is true"}


def _service_hint(agent: str) -> str:
    """Why a service agent named in ``hosts[].agents`` is not built by this cell."""
    when = _service_agents().get(agent)
    return f"; {agent!r} runs only {when}" if when else ""


def _check_plant_identity(data: dict[str, Any], problems: _Problems, where: _Where) -> None:
    """The plant's identity (``sim.identity``) is no other party's id on the bus."""
    from agents.escalation.console import CONSOLE_ID
    from agents.escalation.intensity import SUPERVISOR_ID

    sim = data["sim"] if isinstance(data.get("sim"), dict) else {}
    identity = _text(sim.get("identity"))
    if identity is None:
        return
    taken: dict[str, str] = {CONSOLE_ID: "the console agent", SUPERVISOR_ID: "the supervisor"}
    for section in ("machines", "robots", "orders"):
        for i, item in _entries(data, section):
            item_id = _text(item.get("id"))
            if item_id is not None:
                taken.setdefault(item_id, where((section, i, "id")))
    for i, host in _entries(data, "hosts"):
        name = _text(host.get("name"))
        if name is not None:
            taken.setdefault(f"host-{name}", f"host {name!r} ({where(('hosts', i, 'name'))})")
    if identity in taken:
        problems.append((("sim", "identity"),
                         f"plant identity {identity!r} is already used by {taken[identity]}; "
                         "give the plant an id of its own (default 'sim')"))


def _check_metrics_ports(data: dict[str, Any], problems: _Problems, where: _Where) -> None:
    """Metrics ports are unique and collide with no tcp endpoint of the cell."""
    endpoint_ports: dict[int, Loc] = {}
    sim = data["sim"] if isinstance(data.get("sim"), dict) else {}
    places: list[tuple[Loc, Any]] = [(("sim", "endpoint"), sim.get("endpoint"))]
    places += [(("hosts", i, "endpoint"), h.get("endpoint")) for i, h in _entries(data, "hosts")]
    for loc, endpoint in places:
        text = _text(endpoint)
        tail = text.rpartition(":")[2] if text and text.startswith("tcp://") else ""
        if tail.isdigit():
            endpoint_ports.setdefault(int(tail), loc)
    seen: dict[int, Loc] = {}
    ports: list[tuple[Loc, Any]] = [(("sim", "metrics_port"), sim.get("metrics_port"))]
    ports += [(("hosts", i, "metrics_port"), h.get("metrics_port"))
              for i, h in _entries(data, "hosts")]
    for loc, port in ports:
        if not isinstance(port, int) or isinstance(port, bool):
            continue
        if port in seen:
            problems.append((loc, (f"metrics port {port} is already used by "
                                   f"{where(seen[port])}; give every process its own")))
        elif port in endpoint_ports:
            problems.append((loc, (f"metrics port {port} is the ZeroMQ port of "
                                   f"{where(endpoint_ports[port])}; pick another")))
        else:
            seen[port] = loc


def _check_negotiation(data: dict[str, Any], problems: _Problems) -> None:
    """A lease must outlive a heartbeat interval, or no heartbeat could ever renew it."""
    negotiation = data.get("negotiation", {})
    if not isinstance(negotiation, dict):
        return
    fields = NegotiationSettings.model_fields
    lease_s = _number(negotiation.get("lease_s", fields["lease_s"].default))
    beat_default = fields["heartbeat_interval_s"].default
    beat_s = _number(negotiation.get("heartbeat_interval_s", beat_default))
    if lease_s is not None and beat_s is not None and 0 < lease_s <= beat_s:
        loc = ("negotiation", "lease_s" if "lease_s" in negotiation else "heartbeat_interval_s")
        problems.append(
            (loc, f"lease_s ({lease_s:g} s) must be longer than heartbeat_interval_s "
                  f"({beat_s:g} s), or leases expire before a heartbeat can renew them")
        )


def _check_energy(data: dict[str, Any], problems: _Problems) -> None:
    """The tariff covers the week exactly once (agents/cell/energy.py says why), and a
    machine's power per capability names capabilities the machine has."""
    from agents.cell.energy import Tariff, tariff_problems

    energy = data.get("energy")
    tariff = energy.get("tariff") if isinstance(energy, dict) else None
    try:
        model = Tariff.model_validate(tariff) if isinstance(tariff, dict) else None
    except ValidationError:
        model = None            # reported field by field already
    if model is not None:
        for index, message in tariff_problems(model):
            loc: Loc = ("energy", "tariff", "periods") + (() if index is None else (index,))
            problems.append((loc, message))
    for i, machine in _entries(data, "machines"):
        power, caps = machine.get("power_kw"), machine.get("capabilities")
        by_cap = power.get("busy_by_capability") if isinstance(power, dict) else None
        if isinstance(by_cap, dict) and isinstance(caps, dict):
            for cap in by_cap:
                if cap not in caps:
                    problems.append((("machines", i, "power_kw", "busy_by_capability", cap),
                                     f"machine has no capability {cap!r}; it has "
                                     f"{', '.join(map(str, caps)) or 'none'}"))


def _check_strategies(data: dict[str, Any], problems: _Problems) -> None:
    """Each named strategy loads, and its ``params`` fit its constructor's signature.

    Checked here, not at the first run, so that ``autocell validate`` catches a
    misspelt parameter with its line; the strategy is even constructed once, so
    a constructor's own checks count too.
    """
    from agents.negotiation.strategies import strategy_problems

    negotiation = data.get("negotiation")
    strategy = negotiation.get("strategy") if isinstance(negotiation, dict) else None
    if not isinstance(strategy, dict):
        return
    for side in ("order", "resource"):
        if side in strategy:
            given = strategy[side]
            name = given.get("name") if isinstance(given, dict) else given
            if isinstance(name, str) and not re.fullmatch(STRATEGY_PATTERN, name):
                continue                # the schema's message says it, with the fix
            for loc, message in strategy_problems(given, side):
                problems.append((("negotiation", "strategy", side, *loc), message))


def _check_maintenance_models(data: dict[str, Any], base_dir: Path, problems: _Problems) -> None:
    """A model file the cell names (``maintenance.models``) exists, is one, and names only
    wearing machines of the cell: a host of ``autocell up`` must not be the first to find
    out (docs/maintenance.md, "Operations")."""
    maintenance = data.get("maintenance")
    models = maintenance.get("models") if isinstance(maintenance, dict) else None
    if not isinstance(models, (str, os.PathLike)):
        return
    from ops.maintenance import model_file_problems

    machines = [item["id"] for _, item in _entries(data, "machines")
                if isinstance(item.get("id"), str)]
    wearing = [item["id"] for _, item in _entries(data, "machines")
               if isinstance(item.get("id"), str) and item.get("degradation") is not None]
    path = (base_dir / Path(models).expanduser()).resolve()
    for message in model_file_problems(path, wearing, machines, named=str(models)):
        problems.append((("maintenance", "models"), message))


def _check_security(data: dict[str, Any], base_dir: Path, problems: _Problems) -> None:
    """A configured keys directory must exist: a typo must not silently mean 'fresh keys'."""
    security = data.get("security")
    keys_dir = security.get("keys_dir") if isinstance(security, dict) else None
    if not isinstance(keys_dir, (str, os.PathLike)):
        return
    resolved = (base_dir / Path(keys_dir).expanduser()).resolve()
    loc = ("security", "keys_dir")
    if not resolved.exists():
        problems.append(
            (loc, f"keys directory {str(resolved)!r} does not exist; create it (e.g. with "
                  "`autocell keys init`) or fix the path, which is relative to the config file")
        )
    elif not resolved.is_dir():
        problems.append((loc, f"{str(resolved)!r} is not a directory; keys_dir names a directory"))
