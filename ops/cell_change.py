"""A changed cell for ``autocell replay LOG --what-if``: a cell file, or ``--set`` overrides.

Theory of operation
-------------------
"Would a second lathe have saved these orders?" is the recorded run again
with one thing changed in its cell.  The log's header holds the cell as data
(the dump of its model), so a change is an edit of that data, validated as a
cell file is (:func:`ops.config.cell_from_dict`: every problem at once), then
compared with the recorded cell entry by entry (:class:`CellDiff`).  The
comparison decides what of the recorded plant still holds
(:meth:`ops.recorded_plant.RecordedPlant.without`): a resource or order the
change left alone keeps its recorded durations, quality verdicts and
faults; a new one, or one whose times the change touched, takes its
durations from the changed cell.

Two forms, one result (:func:`cell_change`):

``--what-if cell:PATH``
    a whole cell file (``autocell validate`` messages, ``FILE:LINE``), e.g.
    the recorded cell copied and edited;
``--set PATH=VALUE`` (repeatable, applied in order, on top of ``cell:PATH``
if both are given)
    ``PATH`` is dotted keys into the cell as its file spells it; a list of
    things with ids (machines, robots, orders, products, layout.locations;
    hosts by name) is indexed by id, other lists by position:
    ``machines.lathe1.setup_s``, ``orders.o-011.due_at``,
    ``machines.lathe1.capabilities.turning``, ``products.shaft.routing.0.capability``.
    ``VALUE`` is a YAML value (``120``, ``null``, ``{idle: 1, busy: 5}``), or
    ``copy:ID`` for a new entry copied from entry ``ID`` of the same list
    (``machines.lathe2=copy:lathe1``), or ``remove`` (an entry, or a key back
    to its default).

A wrong path is named with the option it came from and the nearest known
name ("did you mean"); a value the cell does not accept is named with its
path by id, as ``autocell validate`` names it.

Some keys a what-if never reads: ``sim.seed`` (the run's own seed, from the
log's header, plays) and the plant process's bus settings of ``up``
(``sim.identity``, ``sim.endpoint``, ``sim.metrics_port``).  ``--set`` on
one of them is refused, saying why, rather than reported as "changed sim"
with every KPI the same; a cell file's are listed as not used
(:data:`UNUSED_SIM_KEYS`).
"""

from __future__ import annotations

import copy
import difflib
import json
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from security.errors import ConfigurationError

CELL_PREFIX = "cell:"
COPY_PREFIX = "copy:"
REMOVE = "remove"

ENTRY_LISTS = {("machines",): "machine", ("robots",): "robot", ("orders",): "order",
               ("products",): "product", ("layout", "locations"): "location",
               ("hosts",): "host"}
"""Lists whose entries a path names by id (hosts by name), and what one entry is called."""

MACHINE_TIME_KEYS = ("capabilities", "setup_s", "degradation")
"""A machine whose entry changed in one of these runs for the times its new entry says."""

ORDER_TIME_KEYS = ("product", "quantity")
"""An order whose entry changed in one of these has other operations than recorded."""

UNUSED_SIM_KEYS = {
    "seed": "a what-if runs on the run's own seed (the log header's) and, on the recorded "
            "plant, the recorded durations and faults",
    "identity": "it names the plant process of `autocell up` on the bus; a what-if runs its "
                "plant in virtual time, in one process",
    "endpoint": "it is where the plant process of `autocell up` listens; a what-if runs its "
                "plant in virtual time, in one process",
    "metrics_port": "it is the plant process's /metrics port under `autocell up`; a what-if "
                    "runs its plant in virtual time, in one process",
}
"""``sim`` keys a what-if never reads, and why: ``--set`` on one is refused (it would say
"changed sim" and change nothing), and a cell file's are left out of the comparison.
``sim.network`` and ``sim.sensor_interval_s`` do count: the virtual network and the sensor
readings the maintenance agents get are run again."""


def _did_you_mean(value: str, known: list[str]) -> str:
    close = difflib.get_close_matches(value, known, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _known(names: list[str]) -> str:
    shown = ", ".join(names[:12]) + (", …" if len(names) > 12 else "")
    return f"; known: {shown}" if names else ""


def _id_key(items: list[Any]) -> str | None:
    if items and all(isinstance(x, dict) and "id" in x for x in items):
        return "id"
    if items and all(isinstance(x, dict) and "name" in x for x in items):
        return "name"
    return None


# -- --set PATH=VALUE -------------------------------------------------------------------------

@dataclass(frozen=True)
class Override:
    """One ``--set PATH=VALUE``: the option as given, its path and its value text."""

    text: str
    path: tuple[str, ...]
    value: str

    @classmethod
    def parse(cls, text: str) -> Override:
        path, eq, value = text.partition("=")
        if not eq or not path.strip():
            raise ConfigurationError(
                f"--set {text}: expected PATH=VALUE, e.g. machines.lathe2=copy:lathe1 or "
                "orders.o-011.due_at=3600")
        parts = tuple(path.strip().split("."))
        if any(not p for p in parts):
            raise ConfigurationError(f"--set {text}: empty key in {path.strip()!r} "
                                     "(keys are separated by single dots)")
        return cls(text, parts, value.strip())

    def fail(self, message: str) -> ConfigurationError:
        return ConfigurationError(f"--set {self.text}: {message}")

    def parsed_value(self) -> Any:
        try:
            return yaml.safe_load(self.value) if self.value else None
        except yaml.YAMLError as exc:
            raise self.fail(f"the value is not YAML ({str(exc).splitlines()[0]}); quote "
                            "strings with ':' in them") from None

    def apply(self, data: dict[str, Any]) -> None:
        """Edit ``data`` (the cell as plain data) in place."""
        node: Any = data
        where: tuple[str, ...] = ()
        rest = list(self.path)
        while rest:
            if isinstance(node, list):
                node, where, rest = self._in_list(node, where, rest, data)
                if node is None:
                    return
                continue
            if not isinstance(node, dict):
                raise self.fail(f"{'.'.join(where)} is a value ({node!r}), it has no "
                                f"key {rest[0]!r}")
            key = rest.pop(0)
            if not rest:
                self._set_key(node, where, key, data)
                return
            if key not in node:     # an optional block the recorded cell left out (a
                node[key] = {}      # misspelt one: the cell's validation names it)
            node, where = node[key], (*where, key)

    def _in_list(self, items: list[Any], where: tuple[str, ...], rest: list[str],
                 root: dict[str, Any]) -> tuple[Any, tuple[str, ...], list[str]]:
        what = ENTRY_LISTS.get(where, "entry")
        key = ("name" if where == ("hosts",) else "id") if where in ENTRY_LISTS \
            else _id_key(items)     # an empty list of machines is still one of ids
        if key is None:             # a list without ids: by position
            head = rest.pop(0)
            if not head.isdigit() or int(head) >= len(items):
                raise self.fail(f"{'.'.join(where)} is a list of {len(items)}; index it "
                                f"0–{len(items) - 1}, not {head!r}")
            if not rest:
                if self.value == REMOVE:
                    del items[int(head)]
                else:
                    items[int(head)] = self.parsed_value()
                return None, where, rest
            return items[int(head)], (*where, head), rest
        ids = [str(x[key]) for x in items]
        for n in range(len(rest), 0, -1):   # ids may hold dots: the longest known one
            name = ".".join(rest[:n])
            if name in ids:
                i = ids.index(name)
                if n == len(rest):
                    self._set_entry(items, i, where, key, what)
                    return None, where, []
                return items[i], (*where, name), rest[n:]
        name = ".".join(rest)
        if self.value.startswith((COPY_PREFIX, "{")):
            self._add_entry(items, name, where, key, what, ids)
            return None, where, []
        first = rest[0]
        for path, other in ENTRY_LISTS.items():     # the right id in the wrong list
            if path != where and first in _entries(root, path):
                raise self.fail(f"{first!r} is a {other}, not a {what} (did you mean "
                                f"{'.'.join((*path, *rest))}={self.value}?)")
        raise self.fail(f"no {what} {first!r} in {'.'.join(where)}{_did_you_mean(first, ids)}"
                        f"{_known(ids)} (a new one: {'.'.join(where)}.{first}=copy:ID)")

    def _set_entry(self, items: list[Any], i: int, where: tuple[str, ...], key: str,
                   what: str) -> None:
        if self.value == REMOVE:
            del items[i]
            return
        if self.value.startswith(COPY_PREFIX):
            raise self.fail(f"{what} {items[i][key]!r} exists already; copy: makes a new "
                            f"one ({'.'.join(where)}.NEW_ID=copy:{items[i][key]})")
        value = self.parsed_value()
        if not isinstance(value, dict):
            raise self.fail(f"a whole {what} is a mapping ({{key: value, …}}), copy:ID or "
                            "remove; to change one field, name it: "
                            f"{'.'.join(where)}.{items[i][key]}.FIELD=VALUE")
        items[i] = {**value, key: items[i][key]}

    def _add_entry(self, items: list[Any], name: str, where: tuple[str, ...], key: str,
                   what: str, ids: list[str]) -> None:
        if self.value.startswith(COPY_PREFIX):
            source = self.value[len(COPY_PREFIX):].strip()
            if source not in ids:
                raise self.fail(f"no {what} {source!r} to copy in {'.'.join(where)}"
                                f"{_did_you_mean(source, ids)}{_known(ids)}")
            entry = copy.deepcopy(items[ids.index(source)])
        else:
            entry = self.parsed_value()
            if not isinstance(entry, dict):
                raise self.fail(f"a new {what} is a mapping or copy:ID")
        entry[key] = name
        items.append(entry)

    def _set_key(self, node: dict[str, Any], where: tuple[str, ...], key: str,
                 root: dict[str, Any]) -> None:
        if self.value.startswith(COPY_PREFIX):
            raise self.fail(f"copy: copies a whole entry (machines.NEW_ID=copy:ID), not "
                            f"the key {key!r}")
        if self.value == REMOVE:
            if key not in node:
                raise self.fail(f"no key {key!r} to remove at {'.'.join(where) or 'the top'}"
                                f"{_did_you_mean(key, sorted(node))}")
            del node[key]
            return
        if where[:1] == ("machines",) and where[2:] == ("capabilities",) and key not in node:
            used = _routing_capabilities(root)
            if key not in used:
                raise self.fail(f"no product's routing uses capability {key!r}"
                                f"{_did_you_mean(key, used)}{_known(used)}")
        node[key] = self.parsed_value()


def _routing_capabilities(data: dict[str, Any]) -> list[str]:
    return sorted({str(step.get("capability")) for p in data.get("products", []) or []
                   for step in p.get("routing", []) or [] if isinstance(step, dict)})


def refuse_unused(base: dict[str, Any], overrides: list[Override]) -> None:
    """Refuse an override that changes a ``sim`` key a what-if never reads
    (:data:`UNUSED_SIM_KEYS`): it would be reported as a change and change nothing.  The
    same value as the cell's, or another ``sim`` key, passes."""
    for o in overrides:
        if o.path[0] != "sim":
            continue
        before = base.get("sim") or {}
        after = apply_overrides(base, [o]).get("sim") or {}
        for key, why in UNUSED_SIM_KEYS.items():
            if before.get(key) != after.get(key):
                raise o.fail(f"sim.{key} changes nothing in a what-if: {why}")


def apply_overrides(data: dict[str, Any], overrides: list[Override]) -> dict[str, Any]:
    """A copy of the cell ``data`` with ``overrides`` applied in order; an entry removed is
    also taken off the hosts' agent lists."""
    out = copy.deepcopy(data)
    for o in overrides:
        o.apply(out)
    agents = {str(x.get("id")) for s in ("machines", "robots", "orders")
              for x in out.get(s, []) or [] if isinstance(x, dict)}
    for host in out.get("hosts", []) or []:
        if isinstance(host, dict) and isinstance(host.get("agents"), list):
            host["agents"] = [a for a in host["agents"] if a in agents]
    return out


# -- what changed -----------------------------------------------------------------------------

def _leaf_changes(path: str, old: Any, new: Any, limit: int = 6) -> list[str]:
    """``changed PATH: OLD -> NEW`` for each value that differs below ``path`` (a section
    such as ``negotiation``), at most ``limit`` of them; a key only one side has is shown
    as ``(unset)`` there."""
    out: list[str] = []

    def walk(p: str, a: Any, b: Any) -> None:
        if len(out) > limit:
            return
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b), key=str):
                walk(f"{p}.{k}", a.get(k, _UNSET), b.get(k, _UNSET))
        elif a != b:
            out.append(f"changed {p}: {_shown(a)} -> {_shown(b)}")

    walk(path, old if old is not None else {}, new if new is not None else {})
    return out[:limit] + (["…"] if len(out) > limit else [])


_UNSET = object()


def _shown(value: Any) -> str:
    if value is _UNSET:
        return "(unset)"
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass
class CellDiff:
    """The changed cell against the recorded one: entries added, removed, changed (with the
    keys that changed), and the other sections that differ."""

    added: dict[str, list[str]] = field(default_factory=dict)
    removed: dict[str, list[str]] = field(default_factory=dict)
    changed: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    sections: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)     # sim keys that differ, not read
    before: dict[str, Any] = field(default_factory=dict, repr=False)
    after: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, before: dict[str, Any], after: dict[str, Any]) -> CellDiff:
        d = cls(before=before, after=after)
        for path, what in ENTRY_LISTS.items():
            old, new = _entries(before, path), _entries(after, path)
            name = ".".join(path)
            if added := [i for i in new if i not in old]:
                d.added[name] = added
            if removed := [i for i in old if i not in new]:
                d.removed[name] = removed
            changed = {i: sorted(k for k in set(old[i]) | set(new[i])
                                 if old[i].get(k) != new[i].get(k))
                       for i in new if i in old and old[i] != new[i]}
            if changed:
                d.changed[name] = changed
        skip = {"cell", "description", "source", "layout", *(p[0] for p in ENTRY_LISTS)}
        d.sections = sorted(k for k in set(before) | set(after)
                            if k not in skip and before.get(k) != after.get(k))
        sim_b, sim_a = before.get("sim") or {}, after.get("sim") or {}
        d.unused = [f"sim.{k}" for k in UNUSED_SIM_KEYS if sim_b.get(k) != sim_a.get(k)]
        if "sim" in d.sections and _used_sim(sim_b) == _used_sim(sim_a):
            d.sections.remove("sim")
        layout_b = {k: v for k, v in (before.get("layout") or {}).items() if k != "locations"}
        layout_a = {k: v for k, v in (after.get("layout") or {}).items() if k != "locations"}
        if layout_b != layout_a:
            d.sections.append("layout")
        return d

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed or self.sections)

    def lines(self) -> list[str]:
        out = [f"added {k}: {', '.join(v)}" for k, v in self.added.items()]
        out += [f"removed {k}: {', '.join(v)}" for k, v in self.removed.items()]
        out += [f"changed {k}.{i}: {', '.join(keys)}" for k, c in self.changed.items()
                for i, keys in c.items()]
        for s in self.sections:
            out += _leaf_changes(s, self.before.get(s), self.after.get(s)) or [f"changed {s}"]
        out = out or ["no change"]
        if self.unused:
            out.append(f"not used by a what-if: {', '.join(self.unused)} (the run's seed "
                       "and plant are replayed)")
        return out

    def to_json(self) -> dict[str, Any]:
        return {"added": self.added, "removed": self.removed, "changed": self.changed,
                "sections": self.sections, "unused": self.unused}


def _used_sim(sim: dict[str, Any]) -> dict[str, Any]:
    """The ``sim`` block without the keys a what-if never reads (:data:`UNUSED_SIM_KEYS`)."""
    return {k: v for k, v in sim.items() if k not in UNUSED_SIM_KEYS}


def _entries(data: dict[str, Any], path: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    node: Any = data
    for p in path:
        node = node.get(p) if isinstance(node, dict) else None
    key = _id_key(node) if isinstance(node, list) else None
    return {str(x[key]): x for x in node} if key else {}


# -- the change ---------------------------------------------------------------------------------

@dataclass
class CellChange:
    """The cell a what-if runs (``cfg``), how it came about (``label``) and what differs
    from the recorded one (``diff``)."""

    cfg: Any                    # agents.cell.model.CellConfig
    label: str
    diff: CellDiff

    def fresh(self) -> tuple[set[str], set[str], set[str]]:
        """What the recorded plant no longer tells: resources whose durations come from
        the changed cell, orders whose operations do, and machines whose quality is
        drawn again (their scrap rate changed) — see the module docstring."""
        d = self.diff
        resources = {*d.added.get("machines", []), *d.added.get("robots", []),
                     *d.removed.get("machines", []), *d.removed.get("robots", [])}
        resources |= {m for m, keys in d.changed.get("machines", {}).items()
                      if set(keys) & set(MACHINE_TIME_KEYS)}
        robots_changed = set(d.changed.get("robots", {}))
        if robots_changed or d.added.get("layout.locations") or d.changed.get(
                "layout.locations") or "layout" in d.sections:
            resources |= robots_changed | {r.id for r in self.cfg.robots}
        products = set(d.changed.get("products", {}))
        orders = {o for o, keys in d.changed.get("orders", {}).items()
                  if set(keys) & set(ORDER_TIME_KEYS)}
        orders |= {o.id for o in self.cfg.orders if o.product in products}
        orders |= set(d.added.get("orders", []))
        quality = {m for m, keys in d.changed.get("machines", {}).items() if "scrap_rate" in keys}
        return resources, orders, quality


def header_cell_data(cfg: Any) -> dict[str, Any]:
    """A cell model as a log's header holds it (agents/runtime/recorder.py, describe_run)."""
    data: dict[str, Any] = cfg.model_dump(mode="json", exclude_none=True)
    data.pop("security", None)
    return data


def cell_change(recorded: dict[str, Any], *, cell_path: str | None = None,
                sets: list[str] | None = None, source: str = "<log>") -> CellChange:
    """The changed cell: ``cell_path`` (a cell file) or the recorded cell, with ``sets``
    (``PATH=VALUE`` texts) applied; :class:`ConfigurationError` naming the first wrong
    override, or every problem of the changed cell."""
    from ops.config import ConfigError, cell_from_dict, load_cell

    overrides = [Override.parse(s) for s in sets or []]
    if cell_path is not None:
        try:
            base = header_cell_data(load_cell(cell_path))
        except ConfigError as exc:
            raise ConfigurationError(str(exc)) from None
    else:
        base = recorded
    data = apply_overrides(base, overrides)
    refuse_unused(base, overrides)
    shown = " ".join([*([f"cell:{cell_path}"] if cell_path else []),
                      *(f"--set {o.text}" for o in overrides)])
    try:
        cfg = cell_from_dict(data, source=f"--what-if {shown}" if cell_path else shown)
    except ConfigError as exc:
        raise ConfigurationError("\n".join(_by_id(str(i), data) for i in exc.issues)) from None
    return CellChange(cfg, shown, CellDiff.of(recorded, header_cell_data(cfg)))


def with_sets(cfg: Any, sets: list[str]) -> Any:
    """The cell model ``cfg`` with ``sets`` (``PATH=VALUE`` texts, as ``--set`` takes them)
    applied and validated — for commands that run a cell of their own with a change (``bench
    maintenance --set``); :class:`ConfigurationError` as :func:`cell_change` raises it."""
    from ops.config import ConfigError, cell_from_dict

    if not sets:
        return cfg
    overrides = [Override.parse(s) for s in sets]
    data = apply_overrides(header_cell_data(cfg), overrides)
    shown = " ".join(f"--set {o.text}" for o in overrides)
    try:
        return cell_from_dict(data, source=f"{cfg.source} {shown}")
    except ConfigError as exc:
        raise ConfigurationError("\n".join(_by_id(str(i), data) for i in exc.issues)) from None


def _by_id(text: str, data: dict[str, Any]) -> str:
    """``machines[5].setup_s`` -> ``machines.lathe2.setup_s``: the path as --set spells it."""
    def name(m: re.Match[str]) -> str:
        section, i = m.group(1), int(m.group(2))
        items = _entries(data, tuple(section.split(".")))
        ids = list(items)
        return f"{section}.{ids[i]}" if i < len(ids) else m.group(0)
    return re.sub(r"\b(machines|robots|orders|products|layout\.locations|hosts)\[(\d+)\]",
                  name, text)
