"""``autocell bench maintenance``: the maintenance policies on the same seeds, side by side.

For each cell (the demo cell with wearing machines, and a generated cell of 20
machines: four copies of the demo's five) and each seed, one order stream is
drawn (from the seed alone, so every policy gets the same orders), the machines'
lives are the same under every policy (common random numbers,
sim_bridge/degradation.py), and each policy runs the cell in virtual time for the
same horizon.  The estimators' models are first trained, with ``autocell
maintenance fit``'s code, on run-to-failure runs of *other* seeds, as a plant
would train on its history.

Figures per policy: means with 95 % confidence intervals (Student t over the
seeds); for ``predictive`` and ``predictive_central``, paired differences against
each baseline (and ``predictive`` against ``predictive_central``), seed by seed,
with their own intervals.  A figure is printed, never asserted.

The bench's policy names are the issue's, an interface read from outside
(:data:`BENCH_POLICIES` maps them to the simulator's, sim_bridge/maintenance/
policies.py): ``predictive`` is the product's predictive maintenance, the agents'
policy (the simulator's ``negotiated``): the same cell with ``maintenance.negotiate``
on, so each wearing machine's agent plans its window from its estimator and leases
it from the crew agent (agents/maintenance/); the simulator only does the work.
``predictive_central`` is the simulator's own predictive policy (its
``predictive``), which plans the windows centrally without negotiation.  A seed-log
line says which names it holds (``"keys": 2``); lines without it, from before the
rename, hold the simulator's names and are read as such.
"""

from __future__ import annotations

import json
import math
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agents.cell.model import CellConfig
from agents.cell.maintenance import MaintenanceSettings
from agents.maintenance.rul import HealthModel
from agents.maintenance.training import fit_events
from security.errors import ConfigurationError
from sim_bridge.maintenance.policies import attach

__all__ = ["BENCH_POLICIES", "METRICS", "add_bench_parser", "demo_cell", "from_seed_log",
           "large_cell", "negotiating", "run", "run_once", "with_orders"]

DEMO = Path(__file__).resolve().parents[2] / "cell_configs" / "demo_cell_maintenance.yaml"
METRICS = ("unplanned_failures", "planned_maintenances", "oee", "throughput", "tardiness",
           "downtime_planned", "downtime_unplanned", "technician_utilisation", "stock_outs",
           "total_cost", "escalations", "prediction_misses",
           # what total_cost is made of (ADR 75)
           "cost_downtime", "cost_technicians", "cost_parts", "cost_tardiness",
           "cost_expedite")
UNITS = {"throughput": "good units per hour", "tardiness": "order-hours late",
         "downtime_planned": "machine-hours", "downtime_unplanned": "machine-hours",
         "technician_utilisation": "fraction of crew time on jobs",
         "total_cost": "downtime + technicians + parts + tardiness penalty (+ expedite "
                       "surcharges), cell currency",
         "escalations": "maintenance escalations raised (docs/maintenance.md)",
         "prediction_misses": "failures before the 5 % quantile of the predicted life",
         "cost_downtime": "machine downtime, planned and unplanned, at downtime_per_h",
         "cost_technicians": "technician hours on jobs at technician_per_h",
         "cost_parts": "parts fitted at their cost", "cost_tardiness": "order-hours late at "
         "tardiness_per_h", "cost_expedite": "the stores' expedite surcharges"}
BASELINES = ("run_to_failure", "preventive", "condition_based")
#: the bench's policy names (the issue's JSON keys) -> the simulator's (POLICIES)
BENCH_POLICIES = {"run_to_failure": "run_to_failure", "preventive": "preventive",
                  "condition_based": "condition_based", "predictive": "negotiated",
                  "predictive_central": "predictive"}
#: the paired differences: the agents' policy against every other, the central one
#: against the baselines
PAIRED = (*[("predictive", b) for b in (*BASELINES, "predictive_central")],
          *[("predictive_central", b) for b in BASELINES])
#: a seed-log line's ``keys``: 2 = :data:`BENCH_POLICIES`' names; lines without it hold
#: the simulator's names, renamed when read
SEED_LOG_KEYS = 2
_SIMULATOR_NAMES = {sim: bench for bench, sim in BENCH_POLICIES.items()}


def demo_cell() -> CellConfig:
    from ops.config import load_cell
    return load_cell(DEMO)


def large_cell(copies: int = 4) -> CellConfig:
    """``copies`` x the demo's machines (ids ``mill1-2``...) and robots; twice the crew and
    ``copies`` x the stock, reorder point and order quantity of every part."""
    from ops.config import cell_from_dict
    d = demo_cell().model_dump(mode="json", exclude_none=True)
    d["cell"] = "generated-maintenance-20"
    d["machines"] = [{**m, "id": f"{m['id']}-{k}"} for k in range(1, copies + 1)
                     for m in d["machines"]]
    d["robots"] = [{**r, "id": f"{r['id']}-{k}"} for k in range(1, copies + 1)
                   for r in d["robots"]]
    d["hosts"] = []
    d["sim"].pop("metrics_port", None)
    maint = d.get("maintenance") or {}
    parts = {name: {**p, **{k: p[k] * copies for k in ("stock", "reorder_point", "order_qty")}}
             for name, p in (maint.get("parts") or {}).items()}
    d["maintenance"] = {**maint, "technicians": 2 * max(1, maint.get("technicians", 1)),
                        "parts": parts}
    return cell_from_dict(d)


def with_orders(cfg: CellConfig, seed: int, hours: float, load: float = 1.0) -> CellConfig:
    """``cfg`` with an order stream over ``hours`` drawn from ``seed`` alone: products in
    turn, 1-4 units, releases about every ``60 / (machines / 5) / load`` seconds, due
    after three times the work plus half an hour."""
    from ops.config import cell_from_dict
    rng = random.Random(f"{seed}/maintenance-bench-orders")
    d = cfg.model_dump(mode="json", exclude_none=True)
    gap_s = 150.0 / (len(cfg.machines) / 5.0) / load
    orders, t, k = [], 0.0, 0
    products = [p.id for p in cfg.products]
    while t < hours * 3600.0:
        k += 1
        qty = rng.randint(1, 4)
        orders.append({"id": f"o-{k:04d}", "product": rng.choice(products), "quantity": qty,
                       "release_at": round(t, 3), "due_at": round(t + 1800.0 + 300.0 * qty, 3),
                       "priority": 1})
        t += rng.expovariate(1.0 / (gap_s * qty / 2.5))
    d["orders"] = orders
    return cell_from_dict(d)


def negotiating(cfg: CellConfig, estimator: str | None = None) -> CellConfig:
    """``cfg`` with ``maintenance.negotiate`` on: a crew agent, windows leased by machines
    (with ``estimator`` instead of the cell's, when given)."""
    settings = cfg.maintenance or MaintenanceSettings()
    update: dict[str, Any] = {"negotiate": True}
    if estimator:
        update["estimator"] = estimator
    return cfg.model_copy(update={"maintenance": settings.model_copy(update=update)})


def _downtime(evs: list[dict[str, Any]], end_at: float) -> tuple[float, float]:
    since: dict[str, tuple[float, bool]] = {}
    planned = unplanned = 0.0
    for e in evs:
        m = e.get("machine")
        if not m:
            continue
        if e["ev"] == "fault" and m not in since:
            since[m] = (e["t"], e.get("reason") == "maintenance")
        elif e["ev"] == "repaired" and m in since:
            t0, is_planned = since.pop(m)
            if is_planned:
                planned += e["t"] - t0
            else:
                unplanned += e["t"] - t0
    for t0, is_planned in since.values():
        if is_planned:
            planned += end_at - t0
        else:
            unplanned += end_at - t0
    return planned, unplanned


def run_once(cfg: CellConfig, seed: int, policy: str, models: dict[str, HealthModel],
             until_s: float, estimator: str | None = None
             ) -> tuple[dict[str, float], dict[str, Any]]:
    """One run: the figures, and the run report (invariants included); ``estimator``: the
    negotiating machines' (default: the cell's ``maintenance.estimator``)."""
    from sim_bridge.report import build_report
    from sim_bridge.virtual import VirtualCell

    if policy == "negotiated":
        cfg = negotiating(cfg, estimator)
    cell = VirtualCell(cfg, seed=seed)
    ctl = attach(cell, policy, models)
    cell.run(until=until_s)
    rep = build_report(cell)
    evs = [json.loads(line) for line in cell.events]
    settings = cfg.maintenance or MaintenanceSettings()
    costs = settings.costs
    planned_s, unplanned_s = _downtime(evs, cell.env.now)
    done = {e["order"]: e["t"] for e in evs if e["ev"] == "order_completed"}
    tardy_s = sum(max(0.0, done.get(o.id, cell.env.now) - o.due_at) for o in cfg.orders
                  if o.release_at < cell.env.now)
    ws = ctl.workshop.stats
    kc = rep["kpis"]["cell"]
    parts = {"cost_downtime": (planned_s + unplanned_s) / 3600.0 * costs.downtime_per_h,
             "cost_technicians": float(ws.technician_cost), "cost_parts": float(ws.parts_cost),
             "cost_tardiness": tardy_s / 3600.0 * costs.tardiness_per_h,
             "cost_expedite": sum(float(e.get("cost", 0.0)) for e in evs
                                  if e["ev"] == "part_expedited")}
    figures = {
        "unplanned_failures": float(sum(e["ev"] == "fault" and e.get("reason") in
                                        ("wear", "breakdown") and "machine" in e for e in evs)),
        "planned_maintenances": float(sum(e["ev"] == "maintenance_done" and
                                          e.get("kind") == "planned" for e in evs)),
        "oee": float(kc.get("oee") or 0.0),
        "throughput": float(kc.get("throughput_units_per_h") or 0.0),
        "tardiness": tardy_s / 3600.0,
        "downtime_planned": planned_s / 3600.0,
        "downtime_unplanned": unplanned_s / 3600.0,
        "technician_utilisation": ws.technician_busy_s / (settings.technicians * cell.env.now),
        # negotiated: the stores agent's (a unit reserved that is not on the shelf)
        "stock_outs": float(ws.stock_outs + sum(e["ev"] == "part_stock_out" for e in evs)),
        "total_cost": sum(parts.values()),
        # the simulator's policies record them; the agents raise them to the console
        "escalations": float(len(ctl.escalations) + sum(
            e["ev"] == "escalation_raised" and str(e.get("cause", "")).startswith(
                "maintenance_") for e in evs)),
        "prediction_misses": float(sum(e["ev"] == "prediction_miss" for e in evs)),
        **parts,
    }
    return figures, rep


def train(cfg: CellConfig, seeds: list[int], hours: float) -> dict[str, HealthModel]:
    """Models fitted on run-to-failure runs of ``seeds`` (not the evaluation seeds)."""
    from sim_bridge.virtual import VirtualCell

    events: list[dict[str, Any]] = []
    for s in seeds:
        cell = VirtualCell(with_orders(cfg, s, hours), seed=s)
        attach(cell, "run_to_failure", {})
        cell.run(until=hours * 3600.0)
        events += [json.loads(line) for line in cell.events]
    models: dict[str, HealthModel] = {}
    for m in cfg.machines:
        if m.degradation is None:
            continue
        try:
            models.update(fit_events(events, [m.id]))
        except ConfigurationError as exc:   # no failure seen: the policies run it to failure
            print(f"{cfg.cell}: no model for {m.id}: {exc}", file=sys.stderr)
    return models


def _eta(name: str, done: int, total: int, elapsed_s: float) -> str:
    """A progress line with the time so far and, at the mean pace, the time left (a
    20-seed run on the 20-machine cell takes the better part of an hour)."""
    left_s = elapsed_s / done * (total - done)
    return (f"{name}: seed {done}/{total} done, {elapsed_s / 60:.1f} min so far, "
            f"~{left_s / 60:.1f} min left")


def _t95(n: int) -> float:
    """Student t's two-sided 95 % multiplier for ``n`` samples (nan below 2)."""
    from scipy.stats import t as student_t

    if n < 2:
        return math.nan
    return float(student_t.ppf(0.975, n - 1))


def _summary(xs: list[float]) -> dict[str, Any]:
    n = len(xs)
    mean = statistics.fmean(xs)
    half = _t95(n) * statistics.stdev(xs) / math.sqrt(n) if n > 1 else math.nan
    return {"mean": round(mean, 6), "ci95": [round(mean - half, 6), round(mean + half, 6)]
            if not math.isnan(half) else None}


def run(seeds: int = 20, *, hours: float = 4.0, cells: tuple[str, ...] = ("demo", "large"),
        train_seeds: int = 3, progress: Callable[[str], None] | None = None,
        seed_log: Path | None = None, estimator: str | None = None,
        sets: list[str] | None = None) -> dict[str, Any]:
    """Every policy on every seed of each cell.  ``seed_log``: each seed's figures, a JSON
    line per seed and cell as it ends, so a run stopped early still has what it measured
    (:func:`from_seed_log` summarises such a file).  ``sets``: ``PATH=VALUE`` changes to
    both cells, as ``replay --what-if --set`` takes them (ops/cell_change.py) — e.g.
    ``maintenance.risk=0.1`` for the negotiating machines' risk, or a cost rate; checked
    before anything runs."""
    from ops.cell_change import with_sets

    say = progress or (lambda s: print(s, file=sys.stderr, flush=True))
    out: dict[str, Any] = {"cells": {}, "seeds": seeds, "hours": hours, "units": UNITS}
    if estimator:
        out["estimator"] = estimator
    if sets:
        out["sets"] = list(sets)
    bases = {name: with_sets(demo_cell() if name == "demo" else large_cell(), sets or [])
             for name in cells}
    for name in cells:
        base = bases[name]
        say(f"{name}: training on {train_seeds} run-to-failure seeds")
        models = train(base, [100_000 + k for k in range(train_seeds)], max(hours, 4.0))
        per: dict[str, dict[str, list[float]]] = {p: {m: [] for m in METRICS}
                                                   for p in BENCH_POLICIES}
        violations: list[str] = []
        began = time.monotonic()
        for s in range(1, seeds + 1):
            cfg = with_orders(base, s, hours)
            line: dict[str, Any] = {"cell": base.cell, "machines": len(base.machines),
                                    "seed": s, "hours": hours, "policies": {},
                                    "keys": SEED_LOG_KEYS,
                                    "estimator": estimator or "", "sets": list(sets or []),
                                    "violations": []}
            for label, policy in BENCH_POLICIES.items():
                figures, rep = run_once(cfg, s, policy, models, hours * 3600.0, estimator)
                for m in METRICS:
                    per[label][m].append(figures[m])
                line["policies"][label] = figures
                line["violations"] += [f"{label}/seed {s}: {k}"
                                       for k, v in rep["invariants"].items() if not v]
            violations += line["violations"]
            if seed_log is not None:
                with seed_log.open("a", encoding="utf-8") as f:
                    f.write(json.dumps(line, sort_keys=True) + "\n")
            say(_eta(name, s, seeds, time.monotonic() - began))
        out["cells"][base.cell] = _cell_summary(len(base.machines), per, violations)
    return out


def _cell_summary(machines: int, per: dict[str, dict[str, list[float]]],
                  violations: list[str]) -> dict[str, Any]:
    paired = {f"{a}-{b}": {m: _summary([p - q for p, q in zip(per[a][m], per[b][m],
                                                                strict=True)])
                              for m in METRICS}
              for a, b in PAIRED}
    return {"machines": machines,
            "policies": {p: {m: _summary(v) for m, v in d.items()} for p, d in per.items()},
            "paired": paired, "invariant_violations": violations}


def from_seed_log(path: Path) -> dict[str, Any]:
    """The summary :func:`run` prints, from the seeds a ``--seed-log`` file holds (a run
    stopped early: its seeds so far).  A line without ``keys`` (before the bench took the
    issue's names) holds the simulator's policy names: its ``negotiated`` is read as
    ``predictive``, its ``predictive`` as ``predictive_central``."""
    cells: dict[str, dict[str, Any]] = {}
    hours = 0.0
    for raw in path.read_text(encoding="utf-8").splitlines():
        if not raw.strip():
            continue
        line = json.loads(raw)
        hours = line["hours"]
        c = cells.setdefault(line["cell"], {"machines": line["machines"], "seeds": [],
                                            "violations": [],
                                            "per": {p: {m: [] for m in METRICS}
                                                    for p in BENCH_POLICIES}})
        c["seeds"].append(line["seed"])
        c["violations"] += line["violations"]
        policies = _bench_names(line)
        for p in BENCH_POLICIES:
            for m in METRICS:
                c["per"][p][m].append(policies[p].get(m, math.nan))  # older logs
    n = min((len(c["seeds"]) for c in cells.values()), default=0)
    return {"cells": {name: {**_cell_summary(c["machines"], c["per"], c["violations"]),
                             "seeds": len(c["seeds"])}
                      for name, c in cells.items()},
            "seeds": n, "hours": hours, "units": UNITS}


def _bench_names(line: dict[str, Any]) -> dict[str, dict[str, float]]:
    """A seed-log line's figures per policy under the bench's names."""
    keys = line.get("keys", 1)
    if keys == SEED_LOG_KEYS:
        return dict(line["policies"])
    if keys == 1:
        return {_SIMULATOR_NAMES[p]: f for p, f in line["policies"].items()}
    raise ConfigurationError(f"a seed-log line with keys {keys!r}: this autocell reads "
                             f"1 (no keys) and {SEED_LOG_KEYS}")


def _table(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    for cell, data in result["cells"].items():
        t = Table(title=escape(f"autocell bench maintenance — {cell} ({data['machines']} "
                               f"machines, {result['seeds']} seeds x {result['hours']:g} h; "
                               f"mean [ci95])"))
        t.add_column("metric")
        for p in data["policies"]:
            t.add_column(p, justify="right")
        for p in data["paired"]:
            t.add_column(p, justify="right")

        def cell_text(s: dict[str, Any]) -> str:
            ci = s["ci95"]
            return f"{s['mean']:.3g}" + (f" [{ci[0]:.3g}, {ci[1]:.3g}]" if ci else "")
        for m in METRICS:
            t.add_row(m, *[cell_text(d[m]) for d in data["policies"].values()],
                      *[cell_text(d[m]) for d in data["paired"].values()])
        console.print(t)
        if data["invariant_violations"]:
            console.print(f"invariant violations: {data['invariant_violations']}")


def cmd_bench_maintenance(args: Any) -> int:
    cells = tuple(args.cell) if args.cell else ("demo", "large")
    if args.from_seed_log:
        result = from_seed_log(Path(args.from_seed_log))
    else:
        result = run(args.seeds, hours=args.hours, cells=cells, train_seeds=args.train_seeds,
                     seed_log=Path(args.seed_log) if args.seed_log else None,
                     estimator=args.estimator, sets=args.set)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _table(result)
    return 0


def add_bench_parser(bsub: Any) -> None:
    """``bench maintenance`` (called by :mod:`ops.cli`)."""
    sp = bsub.add_parser("maintenance", help="maintenance policies on the same seeds: failures, "
                                             "OEE, downtime, cost (demo and 20-machine cells)")
    sp.add_argument("--seeds", type=int, default=20, help="seeds per cell (default 20)")
    sp.add_argument("--hours", type=float, default=4.0,
                    help="simulated hours per run (default 4)")
    sp.add_argument("--train-seeds", type=int, default=3,
                    help="run-to-failure runs the models are trained on (default 3)")
    sp.add_argument("--cell", action="append", choices=["demo", "large"],
                    help="only this cell (repeatable; default both)")
    sp.add_argument("--estimator", metavar="NAME",
                    help="the negotiating machines' estimator instead of the cell's "
                         "maintenance.estimator (e.g. threshold, wear)")
    sp.add_argument("--set", action="append", metavar="PATH=VALUE", default=[],
                    help="change both cells before the runs, as `replay --what-if --set` "
                         "does (repeatable), e.g. maintenance.risk=0.1, "
                         "maintenance.decide=risk, maintenance.costs.downtime_per_h=2000")
    sp.add_argument("--json", action="store_true", help="print one JSON object")
    sp.add_argument("--seed-log", metavar="FILE",
                    help="append each seed's figures to FILE (JSON lines) as it ends, so a "
                         "long run stopped early keeps what it measured")
    sp.add_argument("--from-seed-log", metavar="FILE",
                    help="print the summary of the seeds in FILE (a --seed-log) instead of "
                         "running")
    sp.set_defaults(func=cmd_bench_maintenance)
