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
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric

__all__ = ["families"]


def families(controller: Any, now: float) -> Iterator[Metric]:
    """The health row of the dashboard (ops/grafana/autocell.json) for one controller
    (``None``: the families without a sample, like the energy gauges of a cell without an
    energy section)."""
    health = GaugeMetricFamily("autocell_machine_health_index",
                               "Per machine: the estimator's health index, 1 = as new, "
                               "0 = at its failure level", labels=["machine"])
    rul = GaugeMetricFamily("autocell_machine_remaining_life_seconds",
                            "Per machine: median remaining operating seconds (full load) "
                            "before failure, from the estimator", labels=["machine"])
    window = GaugeMetricFamily("autocell_machine_maintenance_latest_start_seconds",
                               "Per machine: cell time by which its planned maintenance "
                               "window must start (absent: none planned)", labels=["machine"])
    planned = GaugeMetricFamily("autocell_maintenance_windows_planned",
                                "Maintenance windows planned and not yet done")
    stock = GaugeMetricFamily("autocell_part_stock", "Spare parts on the shelf",
                              labels=["part"])
    on_order = GaugeMetricFamily("autocell_part_on_order",
                                 "Spare parts ordered from the supplier, not yet delivered",
                                 labels=["part"])
    escalations = GaugeMetricFamily("autocell_maintenance_escalations",
                                    "Maintenance escalations raised so far, by cause",
                                    labels=["cause"])
    if controller is None:          # no degradation or no policy: every series absent
        yield from (health, rul, window, planned, stock, on_order, escalations)
        return
    n_planned = 0
    ws = controller.workshop
    agents = ws.windows() if getattr(ws, "windows", None) is not None else None
    for mid in sorted(controller.machines):
        pm = controller.machines[mid]
        if agents is not None:                      # negotiated: the machine agent's own
            w = agents.get(mid)
            est, due = (w.estimator, w.latest_start_at if w.phase != "watch"
                        and w.kind == "planned" else None) if w is not None else (None, None)
        else:
            est, due = pm.est, pm.due_at
        if est is not None:
            health.add_metric([mid], float(est.health()))
            median = est.rul().quantile(0.5)
            if math.isfinite(median):
                rul.add_metric([mid], float(median))
        if due is not None and math.isfinite(due):
            n_planned += 1
            window.add_metric([mid], float(due))
    planned.add_metric([], float(n_planned))
    books = ws.books() if getattr(ws, "books", None) is not None else None
    if books is not None:                   # negotiated: the stores agent's books
        for part in sorted(set(ws.settings.parts) | set(books.bins)):
            b = books.bins.get(part)        # a part nobody has asked for: as configured
            level = b.on_shelf(now) if b is not None else ws.settings.part(part).stock
            stock.add_metric([part], float(level))
            on_order.add_metric([part], float(len(b.arrives_at) - level if b else 0))
    else:
        _shelves(ws, stock, on_order)
    by_cause: dict[str, int] = {}
    for e in controller.escalations:
        by_cause[e["cause"]] = by_cause.get(e["cause"], 0) + 1
    for cause in sorted(by_cause):
        escalations.add_metric([cause], float(by_cause[cause]))
    yield from (health, rul, window, planned, stock, on_order, escalations)


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
