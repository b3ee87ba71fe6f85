"""Prometheus gauges of a maintenance policy, computed from its state at scrape time.

Like the energy gauges (ops/metrics.py), nothing is counted as it happens: a
scrape reads the controller (sim_bridge/maintenance/policies.py) — each
machine's estimator, its planned window, the stores' shelves (under the
negotiated policy, the machine agents' own estimators and windows,
agents/maintenance/window.py, and the stores agent's books,
agents/maintenance/stores.py; ADR 75) —
so a gauge can never drift from the state it reports.  A machine without an estimator (the
run-to-failure and preventive policies, or no trained model) has no health and
no remaining-life sample: an absent series, never a made-up 1.0.

Remaining life is in *operating* seconds at full load, as the estimators give it
(agents/maintenance/rul.py); the latest safe start of a planned window is in
cell time, as the policy planned it.

Under ``autocell up`` the agents live in the hosts' processes, not beside the
simulator: each host exports the same families for the agents it runs
(:func:`agent_families`: its machine agents' estimators and windows, the stores
agent's books where it runs), read at scrape time from the very objects, and the
plant gateway leaves those series to them (``agents_elsewhere``) and keeps what
is its own — the simulator's escalations.  One series per machine and per part
in the cell, whichever process has it; ``sum()`` over processes gives the cell's
planned windows.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric

__all__ = ["agent_families", "families"]


def _empty() -> tuple[GaugeMetricFamily, ...]:
    """The seven families, without samples: health, remaining life, latest start, windows
    planned, parts on the shelf, parts on order, escalations by cause."""
    return (
        GaugeMetricFamily("autocell_machine_health_index",
                          "Per machine: the estimator's health index, 1 = as new, "
                          "0 = at its failure level", labels=["machine"]),
        GaugeMetricFamily("autocell_machine_remaining_life_seconds",
                          "Per machine: median remaining operating seconds (full load) "
                          "before failure, from the estimator", labels=["machine"]),
        GaugeMetricFamily("autocell_machine_maintenance_latest_start_seconds",
                          "Per machine: cell time by which its planned maintenance "
                          "window must start (absent: none planned)", labels=["machine"]),
        GaugeMetricFamily("autocell_maintenance_windows_planned",
                          "Maintenance windows planned and not yet done"),
        GaugeMetricFamily("autocell_part_stock", "Spare parts on the shelf", labels=["part"]),
        GaugeMetricFamily("autocell_part_on_order",
                          "Spare parts ordered from the supplier, not yet delivered",
                          labels=["part"]),
        GaugeMetricFamily("autocell_maintenance_escalations",
                          "Maintenance escalations raised so far, by cause", labels=["cause"]))


def _machine(mid: str, est: Any, due: float | None, fams: tuple[GaugeMetricFamily, ...]) -> int:
    """One machine's health, remaining life and latest safe start; 1 if a window is
    planned."""
    health, rul, window = fams[:3]
    if est is not None:
        health.add_metric([mid], float(est.health()))
        median = est.rul().quantile(0.5)
        if math.isfinite(median):
            rul.add_metric([mid], float(median))
    if due is not None and math.isfinite(due):
        window.add_metric([mid], float(due))
        return 1
    return 0


def _agent_window(w: Any) -> tuple[Any, float | None]:
    """A machine agent's window planner (agents/maintenance/window.py): its estimator, and
    the latest safe start of a planned window it has asked for or booked, not done."""
    if w is None:
        return None, None
    return w.estimator, (w.latest_start_at if w.phase != "watch" and w.kind == "planned"
                         else None)


def _books(books: Any, settings: Any, now: float, fams: tuple[GaugeMetricFamily, ...]) -> None:
    """The stores agent's books (agents/maintenance/stores.py); a part nobody has asked for
    yet is as configured."""
    stock, on_order = fams[4:6]
    for part in sorted(set(settings.parts) | set(books.bins)):
        b = books.bins.get(part)
        level = b.on_shelf(now) if b is not None else settings.part(part).stock
        stock.add_metric([part], float(level))
        on_order.add_metric([part], float(len(b.arrives_at) - level if b else 0))


def families(controller: Any, now: float, *, agents_elsewhere: bool = False
             ) -> Iterator[Metric]:
    """The health row of the dashboard (ops/grafana/autocell.json) for one controller
    (``None``: the families without a sample, like the energy gauges of a cell without an
    energy section).  ``agents_elsewhere``: the negotiated policy on the gateway of
    ``autocell up``, whose machine and stores agents run on the hosts, which export their
    series (:func:`agent_families`): only the escalations are the simulator's here."""
    fams = _empty()
    if controller is None:          # no degradation or no policy: every series absent
        yield from fams
        return
    if not agents_elsewhere:
        n_planned = 0
        ws = controller.workshop
        agents = ws.windows() if getattr(ws, "windows", None) is not None else None
        for mid in sorted(controller.machines):
            pm = controller.machines[mid]
            if agents is not None:                      # negotiated: the machine agent's own
                est, due = _agent_window(agents.get(mid))
            else:
                est, due = pm.est, pm.due_at
            n_planned += _machine(mid, est, due, fams)
        fams[3].add_metric([], float(n_planned))
        books = ws.books() if getattr(ws, "books", None) is not None else None
        if books is not None:                   # negotiated: the stores agent's books
            _books(books, ws.settings, now, fams)
        elif agents is None:                    # the simulator's own shelves (a stores
            _shelves(ws, fams[4], fams[5])      # agent down this instant: absent)
    by_cause: dict[str, int] = {}
    for e in controller.escalations:
        by_cause[e["cause"]] = by_cause.get(e["cause"], 0) + 1
    for cause in sorted(by_cause):
        fams[6].add_metric([cause], float(by_cause[cause]))
    yield from fams


def agent_families(agents: Mapping[str, Any], settings: Any, now: float) -> Iterator[Metric]:
    """The health row for the agents of one host of ``autocell up``: each machine agent
    with a window planner (its estimator, its window), the windows they planned, and the
    stores agent's books if it runs here (``settings``: the cell's ``maintenance:``).  The
    escalations go to the console as messages, so that family has no sample here."""
    from agents.maintenance.stores import STORES_ID

    fams = _empty()
    agents = dict(agents)                   # a copy: the event loop may rebuild one now
    n_planned = 0
    for mid in sorted(agents):
        w = getattr(agents[mid], "maint", None)
        if w is not None:
            n_planned += _machine(mid, *_agent_window(w), fams)
    fams[3].add_metric([], float(n_planned))
    books = getattr(agents.get(STORES_ID), "stores", None)
    if books is not None and settings is not None:
        _books(books, settings, now, fams)
    yield from fams


def _shelves(ws: Any, stock: GaugeMetricFamily, on_order: GaugeMetricFamily) -> None:
    """The simulator's own shelves (every policy but negotiated with a stores agent)."""
    for part in sorted(set(ws.settings.parts) | set(ws.shelves)):
        shelf = ws.shelves.get(part)        # a shelf is made at first use; never here (a
        if shelf is None:                   # scrape must not touch the SimPy queue)
            stock.add_metric([part], float(ws.settings.part(part).stock))
            on_order.add_metric([part], 0.0)
        else:
            stock.add_metric([part], float(shelf.level))
            on_order.add_metric([part], float(shelf.on_order))
