"""Fault-scenario files: loaded with YAML line numbers and checked against the cell.

The scenario models themselves are :mod:`agents.cell.faults`; what needs the
YAML file or the whole cell — every problem as ``FILE:LINE: path: message``,
every agent, resource and host named must exist in the cell — is here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agents.cell.faults import FaultScenario
from agents.cell.model import CellConfig
from security.untrusted import shown, shown_list

__all__ = ["check_against_cell", "load_faults"]


def check_against_cell(data: Any, cfg: CellConfig) -> list[tuple[tuple[Any, ...], str]]:
    """Problems of a scenario's raw data against the cell: unknown agents, resources, hosts."""
    if not isinstance(data, dict):
        return []
    agents = set(cfg.agent_ids())
    resources = {m.id for m in cfg.machines} | {r.id for r in cfg.robots}
    hosts = {h.name for h in cfg.hosts}
    out: list[tuple[tuple[Any, ...], str]] = []

    def items(key: str) -> list[tuple[int, dict[str, Any]]]:
        value = data.get(key)
        return [(i, v) for i, v in enumerate(value) if isinstance(v, dict)] \
            if isinstance(value, list) else []

    def unknown(kind: str, value: Any, known: set[str]) -> str:
        return f"unknown {kind} {shown(value)} in cell {shown(cfg.cell)}" + (
            f"; known: {shown_list(sorted(known), limit=8)}" if known
            else f"; the cell has no {kind}s")

    for i, b in items("breakdowns"):
        if isinstance(b.get("resource"), str) and b["resource"] not in resources:
            out.append((("breakdowns", i, "resource"), unknown("resource", b["resource"],
                                                               resources)))
    for key in ("crashes", "clock_skew"):
        for i, c in items(key):
            if isinstance(c.get("agent"), str) and c["agent"] not in agents:
                out.append(((key, i, "agent"), unknown("agent", c["agent"], agents)))
    for i, h in items("hosts"):
        if isinstance(h.get("host"), str) and h["host"] not in hosts:
            out.append((("hosts", i, "host"), unknown("host", h["host"], hosts)))
    for i, p in items("partitions"):
        names = p.get("agents")
        if isinstance(names, list):
            # Only the strings: a nested list or map is the model's type error (with its
            # line), and is unhashable besides.
            named = [a for a in names if isinstance(a, str)]
            for j, a in enumerate(names):
                if isinstance(a, str) and a not in agents:
                    out.append((("partitions", i, "agents", j), unknown("agent", a, agents)))
            if named and set(named) >= agents:
                out.append((("partitions", i, "agents"),
                            "a partition must leave some agents on the other side"))
    return out


def load_faults(path: str | Path, cfg: CellConfig) -> FaultScenario:
    """Load and validate a fault scenario for ``cfg``; raise ConfigError listing every issue."""
    from ops.config.loader import load_model

    scenario = load_model(path, FaultScenario, cross_check=lambda data: check_against_cell(data,
                                                                                            cfg))
    scenario._source = str(path)
    return scenario
