"""Which KPI names a sweep may ask for: the numeric keys of the run report of its cells.

A misspelt KPI (``energy_per_unit``) used to pass ``--dry-run`` and give an
empty column after hours of runs.  The report's keys depend on the cell —
``utilisation.<machine>``, ``kpis.machines.<id>.*``, an ``energy`` block only
when the cell prices energy — so they are read from the report of a run of
each base cell that stops at t = 0 (milliseconds: nothing has happened yet),
flattened as the rows are (:func:`ops.experiment.results.flatten_report`).
Maps that fill as a run goes (``messages_by_type``, ``escalations_by_cause``)
are accepted with any key below them.  A name known in no base cell is an
error with "did you mean".
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

from agents.cell.model import CellConfig

__all__ = ["known_kpis", "kpi_problem"]

#: Report maps whose keys only appear as a run goes on, but are numeric when they do.
_OPEN_MAPS = ("messages_by_type", "messages_rejected_by_reason", "escalations_by_cause",
              "escalations_by_outcome")


def known_kpis(cfg: CellConfig) -> set[str]:
    """The flattened numeric report keys of ``cfg`` (empty if the zero-length run fails)."""
    from ops.experiment.results import flatten_report
    from ops.run import load_keys
    from sim_bridge.report import build_report
    from sim_bridge.virtual import VirtualCell

    try:
        keys, base_at = load_keys(cfg)
        cell = VirtualCell(cfg, seed=0, keys=keys, clock_base_at=base_at)
        cell.run(until=0.0)
        report: dict[str, Any] = build_report(cell)
    except Exception:   # noqa: BLE001 - the runs report it, with the run's own error
        return set()
    return set(flatten_report(report)) | set(_unset(report))


def _unset(report: dict[str, Any], prefix: str = "") -> list[str]:
    """Keys whose value is None at t = 0 (a per-unit figure before the first unit)."""
    out: list[str] = []
    for key, value in report.items():
        if value is None:
            out.append(f"{prefix}{key}")
        elif isinstance(value, dict):
            out.extend(_unset(value, f"{prefix}{key}."))
    return out


def kpi_problem(kpi: str, known: Iterable[str]) -> str | None:
    """Why ``kpi`` names no report value of any base cell, or None when it does."""
    from security.untrusted import shown as echoed

    names = sorted(set(known))
    if not names or kpi in names or kpi.startswith(tuple(f"{m}." for m in _OPEN_MAPS)):
        return None
    top = sorted({n.split(".", 1)[0] for n in names})
    # compared with dots as underscores, so 'energy_per_unit' finds 'energy.kwh_per_unit'
    flat = {n.replace(".", "_"): n for n in names}
    close = difflib.get_close_matches(kpi.replace(".", "_"), list(flat), n=1, cutoff=0.6)
    hint = f" (did you mean {echoed(flat[close[0]])}?)" if close else ""
    return (f"no KPI {echoed(kpi)} in the run report of the base cells"
            f"{hint}; report keys (nested ones dotted, e.g. "
            f"'utilisation.<machine>'): {', '.join(top)}")
