"""Sweep files: base cells × parameter grid × strategies × fault scenarios × seeds.

Theory of operation
-------------------
A sweep file (``cell_configs/experiments/*.yaml``) names everything a
researcher wants to cross.  Loading it does all the checking a run would
otherwise discover hours later, and reports every problem at once as
``FILE:LINE: path: message`` (the cell loader's format, through
:func:`ops.config.loader.load_model`):

* each base cell loads (its own problems are reported with its own lines);
* each grid path names a field of the cell model — ``negotiation.lease_s``,
  ``machines[mill1].mttr_s`` (a list item by id) or ``orders[0].due_at`` (by
  index) — and exists in every base cell, or is a derived key of
  :data:`DERIVED` (``due_date_factor``: every order's allowance scaled);
* each grid value, applied *alone* to each base cell, gives a valid cell;
* each strategy loads (built-in name, entry point or ``pkg.mod:Class``) and
  its ``params`` fit its constructor; labels are unique;
* each fault scenario loads and names only agents of every base cell.

Combinations are not checked up front (the product can be large): a point
whose overrides clash — a lease shorter than the heartbeat it was combined
with — fails when it runs, and is recorded as a failed row.

:func:`expand` turns a sweep into :class:`RunPoint` values in a fixed order.
A point carries the overridden cell as plain data, so it can travel to a Ray
worker and be written out as a cell file that ``autocell run`` reproduces
byte for byte; its ``run_id`` hashes everything that decides the run (the
cell's content after overrides, fault scenario content, seed, and the source
and package version of both strategies, :mod:`.provenance`), so an edited
base cell or plug-in gives new ids and ``--resume`` reruns exactly what changed.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, Field, PrivateAttr

from agents.cell.model import CellConfig, Name, Seconds, StrategyChoice, _Model
from ops.config.loader import (
    ConfigError,
    ConfigIssue,
    _did_you_mean,
    _unwrap,
    cell_from_dict,
    format_path,
    load_cell_or_instance,
    load_model,
    load_yaml,
)
from security.untrusted import shown as echoed
from security.untrusted import shown_list

__all__ = ["DEFAULT_KPIS", "DERIVED", "PathError", "RunPoint", "StrategySpec", "Sweep", "apply_override",
           "expand", "load_sweep", "parse_path", "run_count", "strategy_label"]

#: Runs a sweep may expand to unless its file raises ``max_runs``: a grid of millions of
#: runs is refused before it is built (``--dry-run`` included), with its count.
DEFAULT_MAX_RUNS = 10_000

#: KPIs summarised and plotted when a sweep names none (all numeric report keys land in rows).
DEFAULT_KPIS: tuple[str, ...] = ("makespan", "mean_flow_time", "tardiness_total", "tardy_orders",
                                 "orders_completed", "reroutes", "messages_sent")


class StrategySpec(_Model):
    """One strategy pair under a label; omitted sides keep the base cell's choice.

    Each side is a name or ``{name: ..., params: {...}}``, as in a cell file.
    The label (:attr:`label`) is ``name`` — or, without one, the strategy
    names joined by ``+`` — followed by the parameters of the entry, if any:
    ``slack_bidding{priority_weight_s=600}``.  So two entries that differ
    only in parameters get different labels, rows and run ids.
    """

    name: Name | None = Field(
        default=None,
        description="Label in tables and plot legends, e.g. `default`; parameters are appended "
                    "(`slack{work_weight=2}`). Default: the strategy names.")
    order: StrategyChoice | None = Field(
        default=None, description="Order strategy: built-in, entry point or `pkg.mod:Class`, "
                                  "or `{name: ..., params: {...}}`.")
    resource: StrategyChoice | None = Field(
        default=None, description="Resource strategy: built-in, entry point or `pkg.mod:Class`, "
                                  "or `{name: ..., params: {...}}`.")

    @property
    def label(self) -> str:
        return strategy_label(self.name, self.order, self.resource)

    def side(self, side: str) -> Any:
        """The ``order`` or ``resource`` choice as plain cell data (None: keep the cell's)."""
        chosen = getattr(self, side)
        return chosen.model_dump(exclude_unset=True) if isinstance(chosen, BaseModel) else chosen


def strategy_label(name: Any, order: Any, resource: Any) -> str:
    """The row label of a sweep's strategy entry (raw data or models alike), see StrategySpec."""
    sides: dict[str, tuple[str, dict[str, Any]]] = {}
    for side, chosen in (("order", order), ("resource", resource)):
        if isinstance(chosen, BaseModel):
            chosen = chosen.model_dump()
        if isinstance(chosen, str):
            sides[side] = (chosen, {})
        elif isinstance(chosen, dict):
            params = chosen.get("params")
            sides[side] = (str(chosen.get("name")), params if isinstance(params, dict) else {})
    base = name if isinstance(name, str) else "+".join(n for n, _ in sides.values()) or "cell"
    tuned = {side: params for side, (_, params) in sides.items() if params}
    if len(tuned) == 1:
        items = [(str(k), v) for k, v in next(iter(tuned.values())).items()]
    else:
        items = [(f"{side}.{k}", v) for side, params in tuned.items() for k, v in params.items()]
    if not items:
        return base
    shown = ",".join(f"{k}={v if isinstance(v, str) else json.dumps(v, sort_keys=True)}"
                     for k, v in sorted(items))
    return f"{base}{{{shown}}}"


Seed = Annotated[int, Field(ge=0)]


def _no_faults() -> list[str | None]:
    """One point without faults (a lambda returning ``[None]`` would type as ``list[None]``)."""
    return [None]


class Sweep(_Model):
    """An experiment: what to cross, and what to measure."""

    name: Name = Field(description="Sweep name; results go to `experiments/<name>/` by default.")
    description: str = Field(default="", description="Free text for people.")
    cells: list[str] = Field(min_length=1, description="Base cell files, relative to this file.")
    grid: dict[str, list[Any]] = Field(
        default_factory=dict,
        description="Config path -> values, e.g. `negotiation.reply_deadline_s: [0.1, 0.2]`, "
                    "`machines[mill1].mttr_s: [300, 600]`.")
    strategies: list[StrategySpec] = Field(
        default_factory=list, description="Strategy pairs to compare; empty: the cells' own.")
    baseline: str | None = Field(
        default=None,
        description="Strategy label the others are compared with, seed by seed (paired.csv); "
                    "default: the first entry of `strategies` when there are two or more.")
    faults: list[str | None] = Field(
        default_factory=_no_faults,
        description="Fault scenario files relative to this file; `null` = no faults.")
    seeds: list[Seed] = Field(
        default_factory=lambda: [0], min_length=1, description="Run seeds.")
    repetitions: int = Field(
        default=1, ge=1, description="Runs per seed; repetition r > 0 derives its own seed.")
    until_s: Seconds | None = Field(
        default=None, description="Stop every run at this simulated time (like `--until`).")
    kpis: list[str] = Field(
        default_factory=lambda: list(DEFAULT_KPIS),
        description="Report keys (dotted for nested ones) to summarise and plot.")
    max_runs: int = Field(
        default=DEFAULT_MAX_RUNS, ge=1,
        description="The most runs the sweep may expand to; a larger product is refused "
                    "when the file loads (raise this to run it on purpose).")

    _source: str = PrivateAttr(default="<dict>")
    _base_dir: Path = PrivateAttr(default_factory=Path)
    _cells: dict[str, tuple[CellConfig, dict[str, Any]]] = PrivateAttr(default_factory=dict)
    _faults: dict[str, dict[str, Any]] = PrivateAttr(default_factory=dict)

    @property
    def source(self) -> str:
        return self._source

    @property
    def baseline_label(self) -> str | None:
        """The strategy the summary pairs the others with (None: fewer than two)."""
        if len(self.strategies) < 2:
            return None
        return self.baseline or self.strategies[0].label


# --------------------------------------------------------------------------- override paths

_SEGMENT = re.compile(r"(?P<field>[A-Za-z_][A-Za-z0-9_]*)|\[(?P<key>[^\]]+)\]|\.")


class PathError(ValueError):
    """A grid path that names nothing in the cell model."""


def parse_path(path: str) -> list[str | int]:
    """``machines[mill1].mttr_s`` -> ``["machines", "mill1", "mttr_s"]`` (indices as ints)."""
    parts: list[str | int] = []
    pos, expect_field = 0, True
    while pos < len(path):
        m = _SEGMENT.match(path, pos)
        if m is None or m.end() == pos:
            raise PathError(f"cannot read {path!r} at {path[pos:]!r}; write a dotted path like "
                            "'negotiation.lease_s' or 'machines[mill1].mttr_s'")
        if m["field"] is not None:
            if not expect_field:
                raise PathError(f"missing '.' before {m['field']!r} in {path!r}")
            parts.append(m["field"])
            expect_field = False
        elif m["key"] is not None:
            key = m["key"].strip("'\"")
            parts.append(int(key) if key.lstrip("-").isdigit() else key)
            expect_field = False
        else:
            if expect_field:
                raise PathError(f"empty segment in {path!r}")
            expect_field = True
        pos = m.end()
    if not parts or expect_field:
        raise PathError(f"{path!r} is not a complete path; it must end with a field name")
    return parts


def _resolve(data: dict[str, Any], path: str) -> tuple[Any, str | int]:
    """Walk ``path`` through the cell model and the data; the container and the last key."""
    parts = parse_path(path)
    annotation: Any = CellConfig
    node: Any = data
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        annotation = _unwrap(annotation)
        origin = typing.get_origin(annotation)
        shown = _shown(parts[:i]) or "the cell"
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            fields = annotation.model_fields
            if not isinstance(part, str) or part not in fields:
                raise PathError(f"{shown} has no field {part!r}"
                                f"{_did_you_mean(str(part), [*fields, *(DERIVED if i == 0 else ())])}; "
                                f"fields: {', '.join(fields)}")
            annotation = fields[part].annotation
            if last:
                return node, part
            if node.get(part) is None:
                node[part] = {} if _is_model(annotation) or _is_dict(annotation) else []
            node = node[part]
        elif origin is list:
            item = typing.get_args(annotation)[0]
            index = _select(node, part, shown)
            annotation = item
            if last:
                return node, index
            node = node[index]
        elif origin is dict:
            annotation = typing.get_args(annotation)[1]
            key = str(part)
            if last:
                return node, key
            node = node.setdefault(key, {})
        elif typing.get_origin(annotation) in (typing.Union, types.UnionType):
            # a strategy (name or {name, params}): entries of `strategies` override a whole
            # side, so a grid value inside one would be lost; they take the params instead
            raise PathError(f"{shown} is a strategy; sweep its parameters with one `strategies` "
                            "entry per value, e.g. {resource: {name: slack_bidding, params: "
                            "{work_weight: 2}}}")
        else:
            raise PathError(f"{shown} is a plain value; it has no {part!r} inside")
    raise PathError(f"{path!r} is not a complete path")  # pragma: no cover - parse_path forbids


def _select(items: list[Any], part: str | int, shown: str) -> int:
    if isinstance(part, int):
        if not 0 <= part < len(items):
            raise PathError(f"{shown} has {len(items)} item(s); index {part} is out of range")
        return part
    for index, item in enumerate(items):
        if isinstance(item, dict) and part in (item.get("id"), item.get("name")):
            return index
    known = [str(i.get("id", i.get("name"))) for i in items if isinstance(i, dict)]
    raise PathError(f"{shown} has no item with id {echoed(part)} (known: {shown_list(known)})")


def _is_model(annotation: Any) -> bool:
    a = _unwrap(annotation)
    return isinstance(a, type) and issubclass(a, BaseModel)


def _is_dict(annotation: Any) -> bool:
    return typing.get_origin(_unwrap(annotation)) is dict


def _shown(parts: list[str | int]) -> str:
    return format_path(tuple(parts))


def scale_due_dates(data: dict[str, Any], factor: Any) -> None:
    """``due_date_factor``: each order's allowance (due_at − release_at) times ``factor``.

    Below 1 the due dates tighten, above 1 they loosen; 1 leaves the cell as it
    is.  The point's cell file carries the scaled due dates, so ``autocell run``
    reproduces it without knowing the factor.
    """
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not factor > 0:
        raise PathError(f"due_date_factor must be a number > 0 (got {echoed(factor)}); "
                        "1 keeps the cell's due dates, 0.5 halves each order's allowance")
    for order in data.get("orders") or []:
        if isinstance(order, dict) and isinstance(order.get("due_at"), (int, float)):
            release = float(order.get("release_at") or 0.0)
            order["due_at"] = round(release + factor * (float(order["due_at"]) - release), 6)


#: Grid keys that are not a field of the cell but transform it (applied after the fields).
DERIVED: dict[str, Any] = {"due_date_factor": scale_due_dates}


def apply_override(data: dict[str, Any], path: str, value: Any) -> None:
    """Set ``path`` to ``value`` in raw cell data (in place); :class:`PathError` if it is no field.

    A :data:`DERIVED` key (``due_date_factor``) transforms the data instead."""
    if path in DERIVED:
        DERIVED[path](data, value)
        return
    container, key = _resolve(data, path)
    container[key] = copy.deepcopy(value)


# --------------------------------------------------------------------------- points


@dataclass(frozen=True)
class RunPoint:
    """One run of a sweep: everything a worker needs, as plain data."""

    run_id: str
    cell: str                       # base cell id
    params: dict[str, Any]          # grid path -> value
    strategy: str                   # strategy label ("cell" = the cell's own)
    scenario: str                   # fault scenario name or "none"
    seed: int                       # the run seed, as `autocell run --seed`
    repetition: int
    cell_data: dict[str, Any] = field(repr=False)
    base_dir: str = "."
    fault_data: dict[str, Any] | None = field(default=None, repr=False)
    fault_file: str | None = None
    until_s: float | None = None
    code: str = ""                  # hash of both strategies' fingerprints (in the run id)
    fingerprints: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def labels(self) -> dict[str, Any]:
        """The row's identifying columns."""
        return {"run_id": self.run_id, "cell": self.cell, "strategy": self.strategy,
                "scenario": self.scenario, "seed": self.seed, "repetition": self.repetition,
                "code": self.code, **self.params}

    def identity(self) -> str:
        """What the point is, regardless of what it ran with: a recorded row of the same
        identity and another run id is stale (changed code or inputs)."""
        return json.dumps([self.cell, self.strategy, self.scenario, self.seed, self.repetition,
                           self.params], sort_keys=True, default=str)


def derived_seed(seed: int, repetition: int) -> int:
    """Repetition 0 runs the seed itself; later ones a seed derived from (seed, repetition)."""
    if repetition == 0:
        return seed
    digest = hashlib.sha256(f"autocell/repetition/{seed}/{repetition}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def run_count(data: Any) -> int:
    """How many runs a sweep file's data expands to, counted without building one:
    cells × grid values per path × strategies × fault scenarios × seeds × repetitions.
    Parts of the wrong type count as one (the model reports them)."""
    def size(key: str, default: int) -> int:
        value = data.get(key) if isinstance(data, dict) else None
        return len(value) if isinstance(value, list) and value else default
    grid = data.get("grid") if isinstance(data, dict) else None
    n = size("cells", 1) * size("strategies", 1) * size("faults", 1) * size("seeds", 1)
    for values in (grid.values() if isinstance(grid, dict) else ()):
        n *= len(values) if isinstance(values, list) and values else 1
    reps = data.get("repetitions") if isinstance(data, dict) else None
    if isinstance(reps, int) and not isinstance(reps, bool) and reps > 1:
        n *= reps
    return n


def _fingerprints(cell_data: dict[str, Any],
                  cache: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Both sides' strategy fingerprints (:mod:`.provenance`), computed once per choice."""
    from ops.experiment.provenance import side_choice, strategy_fingerprint

    out = {}
    for side in ("order", "resource"):
        choice = side_choice(cell_data, side)
        key = json.dumps([side, choice], sort_keys=True, default=str)
        if key not in cache:
            cache[key] = strategy_fingerprint(choice, side)
        out[side] = cache[key]
    return out


def _json_keys(value: Any) -> Any:
    """Map keys as JSON writes them (YAML's ``off:`` is the key False), so that sorting
    them works: ``{False: 1, "idle": 2}`` hashes as ``{"false": 1, "idle": 2}``."""
    if isinstance(value, dict):
        return {json.dumps(k) if not isinstance(k, str) else k: _json_keys(v)
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_keys(v) for v in value]
    return value


def expand(sweep: Sweep) -> list[RunPoint]:
    """Every point of the sweep, in a fixed order: cells, grid, strategies, faults, seeds, reps.

    The run id hashes the point's data *and* its strategies' code (source hash
    and package version, :mod:`.provenance`), so an edited plug-in gives new ids.
    """
    from ops.experiment.provenance import code_hash

    strategies = sweep.strategies or [StrategySpec(name="cell")]
    paths = list(sweep.grid)
    out: list[RunPoint] = []
    cache: dict[str, dict[str, Any]] = {}
    for cell_path in sweep.cells:
        cfg, raw = sweep._cells[cell_path]
        raw = copy.deepcopy(raw)
        keys_dir = cfg.keys_dir_path()
        if keys_dir is not None:   # the point's cell file may be written anywhere
            raw["security"]["keys_dir"] = str(keys_dir)
        models = cfg.maintenance_models_path()
        models_sha = None
        if models is not None:     # so may the model file: by path, and its contents decide
            raw["maintenance"]["models"] = str(models)                       # the runs
            models_sha = hashlib.sha256(models.read_bytes()).hexdigest()
        for values in itertools.product(*(sweep.grid[p] for p in paths)):
            params = dict(zip(paths, values))
            data = copy.deepcopy(raw)
            for p, v in sorted(params.items(), key=lambda pv: pv[0] in DERIVED):
                apply_override(data, p, v)
            for spec in strategies:
                cell_data = copy.deepcopy(data)
                label = spec.label
                for side in ("order", "resource"):
                    chosen = spec.side(side)
                    if chosen is not None:
                        apply_override(cell_data, f"negotiation.strategy.{side}", chosen)
                fingerprints = _fingerprints(cell_data, cache)
                code = code_hash(fingerprints)
                for fault_file in sweep.faults:
                    fault = sweep._faults.get(fault_file) if fault_file else None
                    for seed in sweep.seeds:
                        for rep in range(sweep.repetitions):
                            run_seed = derived_seed(seed, rep)
                            key = {"cell": cell_data, "faults": fault, "seed": run_seed,
                                   "until_s": sweep.until_s, "params": params,
                                   "strategy": label, "repetition": rep, "code": code}
                            if models_sha is not None:
                                key["models_sha256"] = models_sha
                            run_id = hashlib.sha256(json.dumps(_json_keys(key), sort_keys=True,
                                                               default=str)
                                                    .encode()).hexdigest()[:12]
                            out.append(RunPoint(
                                run_id=run_id, cell=cfg.cell, params=params,
                                strategy=label,
                                scenario=str(fault["name"]) if fault else "none",
                                seed=run_seed, repetition=rep, cell_data=cell_data,
                                base_dir=str(Path(cfg._base_dir or ".").resolve()),
                                fault_data=fault, until_s=sweep.until_s,
                                code=code, fingerprints=fingerprints,
                                fault_file=str((sweep._base_dir / fault_file).resolve())
                                if fault_file else None))
    return out


# --------------------------------------------------------------------------- loading

_Problems = list[tuple[tuple[Any, ...], str]]


def _raw_cell(path: Path) -> dict[str, Any]:
    if path.suffix.lower() in (".yaml", ".yml"):
        data = load_yaml(path)  # the cell loader's limits, not a bare safe_load
        return data if isinstance(data, dict) else {}
    from sim_bridge.instances import instance_to_cell_dict, load_instance
    return instance_to_cell_dict(load_instance(path))


def _check(data: Any, base_dir: Path, nested: list[ConfigIssue],
           cells: dict[str, tuple[CellConfig, dict[str, Any]]],
           faults: dict[str, dict[str, Any]]) -> _Problems:
    """Everything beyond field types: files, paths, values, strategies, scenarios."""
    problems: _Problems = []
    if not isinstance(data, dict):
        return problems
    limit = data.get("max_runs", DEFAULT_MAX_RUNS)
    runs = run_count(data)
    if isinstance(limit, int) and not isinstance(limit, bool) and runs > limit:
        # Refused before a value is checked or a run built: checking each of a million grid
        # values would itself take hours.
        return [(("max_runs",) if "max_runs" in data else (), (
            f"the sweep expands to {runs:,} runs (cells × grid × strategies × faults × seeds "
            f"× repetitions), more than max_runs = {limit:,}; shrink the grid or raise "
            "max_runs in the file"))]
    ids: dict[str, int] = {}
    for i, cell_path in enumerate(_items(data, "cells")):
        if not isinstance(cell_path, str):
            continue
        path = base_dir / cell_path
        try:
            cfg = load_cell_or_instance(path)
        except ConfigError as exc:
            nested.extend(exc.issues)
            problems.append((("cells", i), f"cell {echoed(cell_path)} does not load (see above)"))
            continue
        if cfg.cell in ids:
            problems.append((("cells", i), (f"cell id {cfg.cell!r} is already used by "
                                           f"cells[{ids[cfg.cell]}]; rows are labelled by cell "
                                           "id, so give each base cell its own")))
            continue
        ids[cfg.cell] = i
        cells[cell_path] = (cfg, _raw_cell(path))
    grid = data.get("grid")
    if isinstance(grid, dict):
        for path, values in grid.items():
            problems.extend(_check_grid_path(str(path), values, cells))
    problems.extend(_check_kpis(data, cells))
    problems.extend(_check_strategies(data.get("strategies")))
    problems.extend(_check_baseline(data))
    for i, fault_file in enumerate(_items(data, "faults")):
        if not isinstance(fault_file, str):
            continue
        from ops.config.fault_files import load_faults
        for cfg, _raw in cells.values():
            try:
                scenario = load_faults(base_dir / fault_file, cfg)
            except ConfigError as exc:
                nested.extend(exc.issues)
                problems.append((("faults", i), (f"fault scenario {echoed(fault_file)} does not "
                                                f"load for cell {cfg.cell!r} (see above)")))
                break
            faults[fault_file] = scenario.model_dump(mode="json")
    return problems


def _items(data: dict[str, Any], key: str) -> list[Any]:
    """The list at ``data[key]``; anything else is the model's type error, so nothing here."""
    value = data.get(key)
    return value if isinstance(value, list) else []


def _check_grid_path(path: str, values: Any,
                     cells: dict[str, tuple[CellConfig, dict[str, Any]]]) -> _Problems:
    loc: tuple[Any, ...] = ("grid", path)
    try:
        parse_path(path)
    except PathError as exc:
        return [(loc, str(exc))]
    problems: _Problems = []
    for cfg, raw in cells.values():
        try:
            if path not in DERIVED:
                _resolve(copy.deepcopy(raw), path)
        except PathError as exc:
            problems.append((loc, f"in cell {cfg.cell!r}: {exc}"))
            continue
        for j, value in enumerate(values if isinstance(values, list) else []):
            data = copy.deepcopy(raw)
            try:
                apply_override(data, path, value)
            except PathError as exc:
                problems.append((loc + (j,), str(exc)))
                continue
            try:
                cell_from_dict(data, source=cfg.source, base_dir=cfg._base_dir)
            except ConfigError as exc:
                first = exc.issues[0]
                where = f"{first.path}: " if first.path else ""
                more = f" (and {len(exc.issues) - 1} more)" if len(exc.issues) > 1 else ""
                problems.append((loc + (j,), (f"value {echoed(value)} makes cell {cfg.cell!r} "
                                             f"invalid: {where}{first.message}{more}")))
    return problems


def _check_strategies(specs: Any) -> _Problems:
    from agents.negotiation.strategies import strategy_problems

    problems: _Problems = []
    labels: dict[str, int] = {}
    for i, spec in enumerate(specs if isinstance(specs, list) else []):
        if not isinstance(spec, dict):
            continue
        name = spec.get("name")
        label = strategy_label(name, spec.get("order"), spec.get("resource"))
        if label in labels:
            loc = ("strategies", i, "name") if isinstance(name, str) else ("strategies", i)
            what = "name" if label == name else "label"
            problems.append((loc, (f"strategy {what} {label!r} is already used by "
                                   f"strategies[{labels[label]}]; labels must be unique")))
        labels[label] = i
        for side in ("order", "resource"):
            if spec.get(side) is not None:
                for loc, message in strategy_problems(spec[side], side):
                    problems.append((("strategies", i, side, *loc), message))
    return problems


def _check_kpis(data: dict[str, Any],
                cells: dict[str, tuple[CellConfig, dict[str, Any]]]) -> _Problems:
    from ops.experiment.kpi_names import known_kpis, kpi_problem

    kpis = [(i, k) for i, k in enumerate(_items(data, "kpis")) if isinstance(k, str)]
    if not kpis or not cells:
        return []
    known: set[str] = set()
    for cfg, _raw in cells.values():
        known |= known_kpis(cfg)
    return [(("kpis", i), message) for i, kpi in kpis
            if (message := kpi_problem(kpi, known)) is not None]


def _check_baseline(data: dict[str, Any]) -> _Problems:
    baseline = data.get("baseline")
    if not isinstance(baseline, str):
        return []
    specs = [s for s in _items(data, "strategies") if isinstance(s, dict)]
    labels = [strategy_label(s.get("name"), s.get("order"), s.get("resource")) for s in specs]
    if len(labels) < 2:
        return [(("baseline",), "a baseline needs at least two `strategies` entries to compare")]
    if baseline not in labels:
        return [(("baseline",), (f"no strategy labelled {echoed(baseline)}"
                                 f"{_did_you_mean(baseline, labels)}; labels: "
                                 f"{shown_list(labels)}"))]
    return []


def load_sweep(path: str | Path) -> Sweep:
    """Load and fully check a sweep file; :class:`ConfigError` lists every problem at once."""
    base_dir = Path(path).parent
    nested: list[ConfigIssue] = []
    cells: dict[str, tuple[CellConfig, dict[str, Any]]] = {}
    faults: dict[str, dict[str, Any]] = {}
    try:
        sweep = load_model(path, Sweep,
                           cross_check=lambda data: _check(data, base_dir, nested, cells, faults))
    except ConfigError as exc:
        raise ConfigError([*nested, *exc.issues]) from None
    if nested:
        raise ConfigError(nested)
    sweep._source = str(path)
    sweep._base_dir = base_dir
    sweep._cells = cells
    sweep._faults = faults
    return sweep


def point_cell_yaml(point: RunPoint) -> str:
    """The overridden cell as a cell file that ``autocell run`` reproduces the point from."""
    head = (f"# autocell experiment point {point.run_id}: cell {point.cell}, strategy "
            f"{point.strategy}, faults {point.scenario}, params {json.dumps(point.params)}\n")
    return head + yaml.safe_dump(point.cell_data, sort_keys=False)
