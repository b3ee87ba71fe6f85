"""``autocell bench energy [--json]``: energy cost, peak and schedule, blind vs aware agents.

Instances
---------
The energy demo cell (``cell_configs/demo_cell_energy.yaml``, as shipped), and
Brandimarte mk01–mk10 (``DIR/bks.csv``, as ``autocell bench fjsp`` loads them)
extended with energy by :func:`energy_extension`, a seeded rule — no
hand-tuned numbers:

* one time unit of the instance is ``UNIT_S`` = 300 s (five minutes), so a run
  spans several tariff periods; every timing of the negotiation is scaled with
  it, so the agents negotiate exactly as in ``bench fjsp``, only slower;
* per machine, from ``random.Random(f"autocell-energy/{instance}/{seed}")``, in
  machine order: idle U(0.5, 2.0) kW; busy = idle + U(3, 10) kW; standby =
  idle · U(0.10, 0.30); waking from standby takes U(30, 120) s and draws
  U(1, 2) times idle power meanwhile (all rounded to 0.01);
* a three-period weekday/weekend time-of-use tariff in the style utilities
  publish: off-peak 22:00–07:00 at 0.10, shoulder 07:00–17:00 and 21:00–22:00
  at 0.20, peak 17:00–21:00 at 0.35 per kWh; the run starts Monday 14:00;
* a peak cap of Σ idle + max(largest operation above idle, 0.6 · Σ (busy − idle)).

Methods
-------
``energy_blind`` (the default strategies, the cap only reported),
``energy_aware`` (:class:`agents.energy.strategies.EnergyAwareResource` and
:class:`~agents.energy.strategies.EnergyCost`, the cap only reported; on the
rehearsed mk instances the orders' rehearsal weighs each slot's energy cost
at the same ``s_per_money``, agents/energy/rehearsal.py),
``energy_aware_capped`` (the same under power leases), and ``rule``: the best of
SPT/MWKR/FIFO by makespan (sim_bridge/baselines.py), with every machine in
standby through each idle gap at least its break-even long (knowing the whole
schedule, which no agent does); not defined for the demo cell (robots).

Diagnosis
---------
Per instance, ``diagnosis`` says how much room for saving the instance leaves
(:func:`diagnose`): ``prices_in_run`` — the tariff's prices over the blind
run's horizon [0, makespan] and the share of the horizon at each (one price:
only *which* machine runs an operation can change its cost, not *when*); and
``machine_choice_bound_pct`` — the busy energy above idle if every operation
ran on its least-energy machine, against every operation on its fastest
machine (ties: less energy), ignoring the schedule; ``machine_choice_vs_blind_pct``
— the same least-energy assignment against the processing energy above idle
the blind run actually drew (its machines, from the plant's log): the
most any choice of machines can save of *that* energy, whatever it does to the
makespan (the first figure compares with the fastest machines, which the blind
agents do not always get); and ``shift_bound_pct`` — a loose bound on what a
schedule within +5 % of the blind makespan could save *on the blind run's
machines*: every machine at standby power all the time except its blind run's
working time (busy and setup), and that work moved to the cheapest stretches
of [0, 1.05 · makespan] (no precedence, no capacity between machines, no idle,
robots free).  It keeps the blind machine choice, so it bounds shifting work
in time, not choosing cheaper machines: an aware run that changes machines
can beat it (mk03 does).  Since the seventh round (ADR 80) the diagnosis also says
how much moving work *later*, into a cheaper period, could save on the aware run's own
schedule (``peak_work_share``, ``later_shift_bound_pct``, ``price_first_falls_s``:
ops/bench/energy_shift.py); since the eighth round (ADR 83) ``right_shift_pct``, the
priced right-justifying pass (agents/energy/right_shift.py) applied offline to that
schedule: its cost change by the pass's model, as a share of the run's cost.

Figures: ``energy_cost`` and ``kwh`` as the run report meters them,
``peak_kw`` the highest 15-minute mean, ``cap_violations`` the 15-minute
windows over the cap (as a utility bills), ``makespan`` and ``tardiness``
(seconds).  ``mean`` averages over instances (``cap_violations``: the
total; ``rule``: over the instances it runs on).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
from pathlib import Path
from typing import Any, Callable

from agents.cell.energy import PowerDraw
from agents.cell.specs import EnergySpec, PowerModel
from agents.cell.tariff import standby_break_even_s
from ops.config import cell_from_dict
from security.errors import ConfigurationError
from sim_bridge.baselines import simulate_rule
from sim_bridge.energy import EnergyMeter
from sim_bridge.instances import instance_path, instance_to_cell_dict, load_bks, load_instance

from .energy_shift import Slot, later_shift, op_slots

__all__ = ["METHODS", "UNIT_S", "add_parsers", "diagnose", "energy_extension", "run"]

UNIT_S = 300.0
METHODS = ("energy_blind", "energy_aware", "energy_aware_capped", "rule")
FIGURES = ("energy_cost", "kwh", "peak_kw", "makespan", "tardiness", "cap_violations")
AWARE = {"resource_strategy": "agents.energy.strategies:EnergyAwareResource",
         "order_strategy": "agents.energy.strategies:EnergyCost"}
RULES = ("SPT", "MWKR", "FIFO")
TARIFF = {"currency": "EUR", "periods": [
    {"days": "mon-sun", "from": "22:00", "to": "07:00", "price": 0.10},
    {"days": "mon-sun", "from": "07:00", "to": "17:00", "price": 0.20},
    {"days": "mon-sun", "from": "17:00", "to": "21:00", "price": 0.35},
    {"days": "mon-sun", "from": "21:00", "to": "22:00", "price": 0.20}]}
ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "cell_configs" / "demo_cell_energy.yaml"
#: Brandimarte mk01–mk10 as shipped (cell_configs/benchmarks/fjsp/README.md: source, checks)
BENCHMARKS = ROOT / "cell_configs" / "benchmarks" / "fjsp"


def _r(x: float) -> float:
    return round(x, 2)


def energy_extension(cell: dict[str, Any], instance: str, seed: int = 0) -> dict[str, Any]:
    """``cell`` (from :func:`instance_to_cell_dict`) scaled to ``UNIT_S`` and given power,
    a tariff and a cap by the documented seeded rule (module docstring)."""
    rng = random.Random(f"autocell-energy/{instance}/{seed}")
    machines = []
    for m in cell["machines"]:
        idle = _r(rng.uniform(0.5, 2.0))
        busy = _r(idle + rng.uniform(3.0, 10.0))
        standby = _r(idle * rng.uniform(0.10, 0.30))
        wake_s = _r(rng.uniform(30.0, 120.0))
        wake_kwh = round(idle * rng.uniform(1.0, 2.0) * wake_s / 3600.0, 4)
        machines.append({**m, "capabilities": {c: t * UNIT_S for c, t in m["capabilities"].items()},
                         "power_kw": {"idle": idle, "busy": busy, "standby": standby,
                                      "wake": {"standby": {"time_s": wake_s,
                                                           "energy_kwh": wake_kwh}}}})
    idle_sum = sum(m["power_kw"]["idle"] for m in machines)
    above = [m["power_kw"]["busy"] - m["power_kw"]["idle"] for m in machines]
    wake_above = [m["power_kw"]["wake"]["standby"]["energy_kwh"] * 3600.0
                  / m["power_kw"]["wake"]["standby"]["time_s"] - m["power_kw"]["idle"]
                  for m in machines]
    cap = idle_sum + max(max(above + wake_above), 0.6 * sum(above))
    n = cell["negotiation"]
    negotiation = {**n, "reply_deadline_s": n["reply_deadline_s"] * UNIT_S,
                   "heartbeat_interval_s": n["heartbeat_interval_s"] * UNIT_S,
                   "lease_s": n["lease_s"] * UNIT_S,
                   "rehearsal_pass_timeout_s": n["rehearsal_pass_timeout_s"] * UNIT_S}
    return {**cell, "machines": machines,
            "orders": [{**o, "due_at": o["due_at"] * UNIT_S} for o in cell["orders"]],
            "negotiation": negotiation,
            "sim": {**cell["sim"], "network": {"latency_s": 0.0001 * UNIT_S},
                    "sensor_interval_s": 3600.0},
            "energy": {"tariff": TARIFF, "clock_at_start": "mon 14:00",
                       "peak_cap_kw": round(cap, 2) + 0.01}}


def _with_leases(cfg: Any, on: bool) -> Any:
    return cfg.model_copy(update={"energy": cfg.energy.model_copy(update={"cap_leases": on})})


def run_agents(cfg: Any, method: str) -> dict[str, Any]:
    """One agents method on a cell config: the figures and the run's invariants."""
    from sim_bridge.invariants import parse
    from sim_bridge.report import build_report, production_figures
    from sim_bridge.virtual import VirtualCell

    from .energy_standby import clairvoyant_standby_kwh, never_asleep

    aware = method != "energy_blind"
    cell = VirtualCell(_with_leases(cfg, method == "energy_aware_capped"),
                       resource_strategy=AWARE["resource_strategy"] if aware else None,
                       order_strategy=AWARE["order_strategy"] if aware else None)
    cell.run()
    r = build_report(cell)
    e = r["energy"]
    slots = op_slots(cell.cfg, cell.events)
    busy_above_idle = _busy_above_idle_kwh(cell, slots)
    # standby on this run's own schedule (ops/bench/energy_standby.py)
    awake = never_asleep(parse(cell.events))
    out_of_work = e["by_state_kwh"]["idle"] + e["by_state_kwh"]["standby"] + e["by_state_kwh"]["wake"]
    if_awake = production_figures(awake, cell.cfg, cell.env.now)["energy"]["by_state_kwh"]["idle"]
    clairvoyant = clairvoyant_standby_kwh(awake, {m.id: m.power_kw for m in cell.cfg.machines},
                                          cell.env.now)
    return {"energy_cost": e["cost"], "kwh": e["kwh"], "peak_kw": e["peak_kw"],
            "makespan": r["makespan"], "tardiness": r["tardiness_total"],
            "cap_violations": e["cap_violations"],
            "idle_kwh": e["by_state_kwh"]["idle"],
            "asleep_kwh": e["by_state_kwh"]["standby"] + e["by_state_kwh"]["wake"],
            "standby_saved_kwh": round(if_awake - out_of_work, 4),
            "standby_clairvoyant_kwh": round(clairvoyant, 4),
            "by_machine_state_kwh": e["by_machine_state_kwh"],
            "busy_above_idle_kwh": busy_above_idle, "slots": slots,
            "orders_completed": r["orders_completed"], "orders_total": r["orders_total"],
            "invariants_hold": all(r["invariants"].values())}


def _busy_above_idle_kwh(cell: Any, slots: list[Slot]) -> float:
    """The energy the run's operations drew above idle while processing (at the capability's
    busy power; setups left out, as in the least-energy assignment it is compared with),
    from the plant's log: which machine ran what, and how long."""
    draw = {m.id: m.power_kw for m in cell.cfg.machines}
    kwh = 0.0
    for s in slots:
        d: PowerDraw = draw[s.machine]
        run_s = max(0.0, s.finish - s.start - s.setup_s)
        kwh += max(0.0, d.busy_by_capability.get(s.capability, d.busy) - d.idle) * run_s / 3600.0
    return round(kwh, 4)


def run_rule(inst: Any, cfg: Any) -> dict[str, Any]:
    """The best dispatch rule by makespan, standby through every gap past the break-even."""
    best = None
    for rule in RULES:
        ops = simulate_rule(inst, rule)
        ms = max((o.end for o in ops), default=0.0)
        if best is None or ms < best[1]:
            best = (rule, ms, ops)
    assert best is not None
    rule, ms_units, ops = best
    end_s = ms_units * UNIT_S
    machines = {f"m{k}": m for k, m in enumerate(cfg.machines)}
    meter = EnergyMeter({mid: PowerModel.from_draw(m.power_kw) for mid, m in machines.items()},
                        EnergySpec.from_settings(cfg.energy))
    by_machine: dict[str, list[tuple[float, float]]] = {mid: [] for mid in machines}
    for o in ops:
        by_machine[f"m{o.machine}"].append((o.start * UNIT_S, o.end * UNIT_S))
    events: list[tuple[float, int, str, str]] = []      # (t, order, machine, what)
    for mid, spans in by_machine.items():
        d: PowerDraw = machines[mid].power_kw
        be = standby_break_even_s(d.idle, d.standby_kw, d.wake.standby.time_s,
                                  d.wake.standby.energy_kwh)
        free_at = 0.0
        for a, b in sorted(spans) + [(end_s, end_s)]:
            if be is not None and a - free_at >= be and a > free_at:
                events.append((free_at, 1, mid, "standby"))
                events.append((a - d.wake.standby.time_s, 2, mid, "wake"))
                events.append((a, 3, mid, "idle"))
            if b > a:
                events.append((a, 4, mid, "start"))
                events.append((b, 0, mid, "end"))
            free_at = max(free_at, b)
    for t, _, mid, what in sorted(events):
        if what == "start":
            meter.op_start(mid, t, 0.0, None)
        elif what == "end":
            meter.op_end(mid, t)
        elif what == "wake":
            meter.power_state(mid, t, "wake", "standby")
        else:
            meter.power_state(mid, t, what)
    snap = meter.snapshot(end_s)
    due = {j: o.due_at for j, o in enumerate(cfg.orders)}
    job_end: dict[int, float] = {}
    for o in ops:
        job_end[o.job] = max(job_end.get(o.job, 0.0), o.end * UNIT_S)
    peak = snap["peak"]
    ms = snap["machines"].values()
    return {"energy_cost": sum(m["cost"] for m in ms), "kwh": sum(m["kwh"] for m in ms),
            "peak_kw": peak["peak_kw"], "makespan": end_s,
            "tardiness": sum(max(0.0, t - due[j]) for j, t in job_end.items()),
            "cap_violations": peak["cap_violations"], "best_rule": rule,
            "idle_kwh": sum(m["by_state_kwh"]["idle"] for m in ms),
            "asleep_kwh": sum(m["by_state_kwh"]["standby"] + m["by_state_kwh"]["wake"]
                              for m in ms)}


def _shift_bound_pct(cfg: Any, tou: Any, blind: dict[str, Any]) -> float:
    horizon = 1.05 * float(blind["makespan"])
    cheapest = sorted((band.price, a, b) for a, b, band in tou.segments(0.0, horizon))
    cost = 0.0
    for m in cfg.machines:
        pm = PowerModel.from_draw(m.power_kw)
        by = blind["by_machine_state_kwh"].get(m.id, {})
        # the lowest busy power: the longest working time, so the bound stays loose
        kw = {"busy": min([pm.busy_kw, *pm.busy_by_capability.values()]),
              "setup": pm.kw("setup")}
        work = {st: by.get(st, 0.0) / kw[st] * 3600.0 for st in kw
                if by.get(st, 0.0) > 0 and kw[st] > 0}
        cost += tou.cost(pm.kw("standby"), 0.0, horizon)
        for st, left in work.items():
            extra = kw[st] - pm.kw("standby")
            for _, a, b in cheapest:
                if left <= 0:
                    break
                take = min(left, b - a)
                cost += tou.cost(extra, a, a + take)
                left -= take
    return round(100.0 * (cost - blind["energy_cost"]) / blind["energy_cost"], 1) \
        if blind["energy_cost"] else 0.0


def diagnose(cfg: Any, blind: dict[str, Any], aware: dict[str, Any] | None = None
             ) -> dict[str, Any]:
    """How much an instance lets energy-aware agents save (module docstring, "Diagnosis"):
    ``blind`` and ``aware`` are the energy-blind and -aware runs' figures
    (:func:`run_agents`); the time-shift figures on the aware run need ``aware``."""
    from agents.cell.tariff import TimeOfUse

    tou = TimeOfUse.from_settings(cfg.energy)
    horizon_s = float(blind["makespan"])
    shares: dict[float, float] = {}
    for a, b, band in tou.segments(0.0, horizon_s):
        shares[band.price] = shares.get(band.price, 0.0) + (b - a)
    prices = {f"{p:g}": round(s / horizon_s, 3) for p, s in sorted(shares.items())} \
        if horizon_s > 0 else {}
    routing = {p.id: [step.capability for step in p.routing] for p in cfg.products}
    fastest = least = 0.0
    for o in cfg.orders:
        for cap in routing[o.product]:
            alts = []
            for m in cfg.machines:
                if cap in m.capabilities:
                    d: PowerDraw = m.power_kw
                    t = m.capabilities[cap] * o.quantity
                    alts.append((t, max(0.0, d.busy_by_capability.get(cap, d.busy) - d.idle)
                                 * t / 3600.0))
            if alts:
                fastest += min(alts)[1]
                least += min(e for _, e in alts)
    bound = round(100.0 * (least - fastest) / fastest, 1) if fastest else 0.0
    ran = float(blind.get("busy_above_idle_kwh", 0.0))
    vs_blind = round(100.0 * (least - ran) / ran, 1) if ran else 0.0
    return {"prices_in_run": prices, "machine_choice_bound_pct": bound,
            "machine_choice_vs_blind_pct": vs_blind,
            "shift_bound_pct": _shift_bound_pct(cfg, tou, blind),
            **({} if aware is None else later_shift(
                tou, {m.id: m.power_kw for m in cfg.machines}, aware["slots"],
                1.05 * horizon_s, float(aware["energy_cost"]))),
            **({} if aware is None else {"right_shift_pct": _right_shift_pct(cfg, tou, aware)})}


def _right_shift_pct(cfg: Any, tou: Any, aware: dict[str, Any]) -> float:
    """The priced right-justifying pass (agents/energy/right_shift.py) applied to the aware
    run's own schedule, offline: its cost change by the pass's model, as a share of the
    run's cost (negative: a saving).  What the pass would buy if the execution followed
    it; the pass is not in the agents yet (ADR 83)."""
    from agents.energy.aware import MachineEnergy
    from agents.energy.right_shift import PlannedSlot, plan_cost, right_shift

    machines = {m.id: MachineEnergy(tou, m.power_kw) for m in cfg.machines}
    plan = []
    for s in aware["slots"]:
        order, _, k = s.task.rpartition("/")
        plan.append(PlannedSlot(order, int(k), s.machine, s.capability, s.start, s.setup_s,
                                s.finish))
    horizon = (0.0, float(aware["makespan"]))
    shifted = right_shift(plan, machines, {o.id: float(o.due_at) for o in cfg.orders}, horizon)
    saved = plan_cost(shifted, machines, horizon) - plan_cost(plan, machines, horizon)
    cost = float(aware["energy_cost"])
    return round(100.0 * saved / cost, 1) + 0.0 if cost else 0.0


def _entry(name: str, results: dict[str, dict[str, Any] | None]) -> dict[str, Any]:
    entry: dict[str, Any] = {"instance": name, **results}
    blind, aware = results["energy_blind"], results["energy_aware"]
    assert blind is not None and aware is not None
    entry["cost_change_pct"] = round(100.0 * (aware["energy_cost"] - blind["energy_cost"])
                                     / blind["energy_cost"], 2) if blind["energy_cost"] else 0.0
    entry["makespan_change_pct"] = round(100.0 * (aware["makespan"] - blind["makespan"])
                                         / blind["makespan"], 2) if blind["makespan"] else 0.0
    waste = blind["idle_kwh"]
    saved = waste - aware["idle_kwh"] - aware["asleep_kwh"]
    entry["idle_waste_saved_share"] = round(saved / waste, 3) if waste else 0.0
    # what standby itself saved in the aware run, against the blind idle energy and against
    # the most it could have saved on the same schedule (ops/bench/energy_standby.py)
    entry["standby_saved_share"] = round(aware["standby_saved_kwh"] / waste, 3) if waste else 0.0
    best = aware["standby_clairvoyant_kwh"]
    entry["standby_vs_clairvoyant"] = round(aware["standby_saved_kwh"] / best, 3) if best else 0.0
    return entry


def run(directory: Path, *, instances: list[str] | None = None, seed: int = 0,
        on_instance: Callable[[str, str, dict[str, Any] | None], None] | None = None
        ) -> dict[str, Any]:
    """Every method on the demo cell and mk01–mk10 (or the ``instances`` named)."""
    from ops.config.loader import load_cell

    names = ["demo"]
    bks = directory / "bks.csv"
    rows = [r for r in load_bks(bks) if r.instance.startswith("mk")] if bks.exists() else []
    names += [r.instance for r in rows]
    if instances:
        unknown = sorted(set(instances) - set(names))
        if unknown:
            raise ConfigurationError(f"unknown instance(s) {', '.join(unknown)}; known: "
                                     f"{', '.join(names)}")
        names = [n for n in names if n in instances]
    out = []
    for name in names:
        results: dict[str, dict[str, Any] | None] = {}
        if name == "demo":
            cfg, inst = load_cell(DEMO), None
        else:
            row = next(r for r in rows if r.instance == name)
            inst = load_instance(instance_path(row, directory))
            cfg = cell_from_dict(energy_extension(instance_to_cell_dict(inst), name, seed),
                                 source=f"{name}+energy")
        for method in METHODS:
            if method == "rule":
                results[method] = run_rule(inst, cfg) if inst is not None else None
            else:
                results[method] = run_agents(cfg, method)
            if on_instance is not None:
                on_instance(name, method, results[method])
        out.append(_entry(name, results))
        blind = results["energy_blind"]
        aware = results["energy_aware"]
        assert blind is not None and aware is not None
        out[-1]["diagnosis"] = diagnose(cfg, blind, aware)
        for r in results.values():
            if r is not None:
                r.pop("by_machine_state_kwh", None)
                r.pop("busy_above_idle_kwh", None)
                r.pop("slots", None)
    return {"instances": out, "mean": means(out)}


def means(entries: list[dict[str, Any]]) -> dict[str, dict[str, float] | None]:
    """Each method's figures over the instances it ran on (``cap_violations`` a total);
    None for a method no instance ran (the rule on the demo cell alone)."""
    mean: dict[str, dict[str, float] | None] = {}
    for method in METHODS:
        rs = [e[method] for e in entries if e[method] is not None]
        mean[method] = {f: (sum(r[f] for r in rs) if f == "cap_violations"
                            else round(statistics.fmean(r[f] for r in rs), 4))
                        for f in FIGURES} if rs else None
    return mean


# --------------------------------------------------------------------------- the Pareto plot


def pareto(rows: list[dict[str, str]], x: str = "makespan", y: str = "energy.cost"
           ) -> tuple[dict[str, tuple[float, float]], list[str]]:
    """Each strategy's mean (x, y) over its completed runs of an experiment's runs.csv, and
    the strategies on the Pareto front of those means (no other strategy is at most as
    high on both and lower on one), by rising x."""
    points: dict[str, list[tuple[float, float]]] = {}
    for r in rows:
        if r.get("status", "ok") == "ok" and r.get(x) and r.get(y):
            points.setdefault(r["strategy"], []).append((float(r[x]), float(r[y])))
    means = {s: (statistics.fmean(p[0] for p in ps), statistics.fmean(p[1] for p in ps))
             for s, ps in points.items()}
    front = [s for s, (a, b) in means.items()
             if not any(c <= a and d <= b and (c, d) != (a, b) for c, d in means.values())]
    return means, sorted(front, key=lambda s: means[s])


def cmd_bench_energy_pareto(args: argparse.Namespace) -> int:
    """Energy cost against makespan of an energy-weight sweep: every run, the means, the front."""
    import csv

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(args.dir)
    with open(out / "runs.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    means, front = pareto(rows)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for k, s in enumerate(dict.fromkeys(r["strategy"] for r in rows if r["strategy"] in means)):
        runs = [r for r in rows if r["strategy"] == s and r.get("status", "ok") == "ok"]
        label = s.split("{")[0]
        ax.scatter([float(r["makespan"]) for r in runs], [float(r["energy.cost"]) for r in runs],
                   s=14, alpha=0.35, color=f"C{k}")
        ax.scatter(*means[s], s=60, marker="D", color=f"C{k}", edgecolor="black", label=label)
    ax.plot([means[s][0] for s in front], [means[s][1] for s in front], "k--", lw=1,
            label="Pareto front of the means")
    ax.set_xlabel("makespan (s)")
    ax.set_ylabel("energy cost (currency of the tariff)")
    ax.set_title("energy cost vs makespan per strategy (dots: seeds, diamonds: means)")
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    (out / "plots").mkdir(exist_ok=True)
    for ext in ("png", "svg"):
        fig.savefig(out / "plots" / f"pareto_cost_makespan.{ext}", dpi=150, bbox_inches="tight")
    plt.close(fig)
    print("front: " + ", ".join(f"{s} ({means[s][0]:.0f} s, {means[s][1]:.3f})" for s in front))
    print(f"wrote {out / 'plots' / 'pareto_cost_makespan.png'} and .svg")
    return 0


# --------------------------------------------------------------------------- the command


def cmd_bench_energy(args: argparse.Namespace) -> int:
    names = [n.strip() for n in args.instances.split(",")] if args.instances else None

    def progress(name: str, method: str, r: dict[str, Any] | None) -> None:
        text = ("n/a" if r is None else
                f"cost {r['energy_cost']:.2f} kWh {r['kwh']:.1f} peak {r['peak_kw']:.1f} "
                f"makespan {r['makespan']:.0f} s cap violations {r['cap_violations']}")
        print(f"  {name} {method}: {text}", file=sys.stderr, flush=True)

    result = run(Path(args.dir), instances=names, seed=args.seed, on_instance=progress)
    if args.json:
        print(json.dumps(result))
        return 0
    from rich.console import Console
    from rich.table import Table

    t = Table(title="autocell bench energy — per method: energy cost (makespan s), kWh, "
                    "peak kW (15-min mean), tardiness s")
    t.add_column("instance")
    for m in METHODS:
        t.add_column(m, justify="right")
    t.add_column("Δcost aware", justify="right")
    t.add_column("Δmakespan", justify="right")
    t.add_column("idle waste saved", justify="right")
    t.add_column("standby saved / of best", justify="right")
    for e in result["instances"]:
        t.add_row(e["instance"], *(figures_cell(e[m]) for m in METHODS),
                  f"{e['cost_change_pct']:+.1f}%", f"{e['makespan_change_pct']:+.1f}%",
                  f"{100 * e['idle_waste_saved_share']:.0f}%",
                  f"{100 * e['standby_saved_share']:.0f}% / "
                  f"{100 * e['standby_vs_clairvoyant']:.0f}%")
    mean = result["mean"]
    t.add_row("mean", *(figures_cell(mean[m]) for m in METHODS), "", "", "", "")
    Console().print(t)
    print("cap violations (15-min windows): " + ", ".join(
        f"{m} {'–' if mean[m] is None else mean[m]['cap_violations']}"
        for m in METHODS))
    return 0


def figures_cell(r: dict[str, Any] | None) -> str:
    """One method's figures in the human table: cost (makespan), kWh, peak kW, tardiness."""
    if r is None:
        return "–"
    return (f"{r['energy_cost']:.2f} ({r['makespan']:.0f})\n{r['kwh']:.1f} kWh\n"
            f"{r['peak_kw']:.1f} kW\ntardy {r['tardiness']:.0f}")


def add_parsers(bsub: Any) -> None:
    """``bench energy`` under ``autocell bench``."""
    sp = bsub.add_parser("energy", help="energy cost, peak and schedule: energy-blind vs "
                                        "energy-aware agents (with and without the cap) vs a rule")
    sp.add_argument("dir", nargs="?", default=str(BENCHMARKS),
                    help="directory holding bks.csv and mk01-mk10 (default: the repository's "
                         "cell_configs/benchmarks/fjsp, Brandimarte mk01-mk10)")
    sp.add_argument("--instances", default="",
                    help="comma-separated instances to run, e.g. demo,mk01 (default: all)")
    sp.add_argument("--seed", type=int, default=0, help="seed of the energy extension")
    sp.add_argument("--json", action="store_true", help="print one JSON object")
    sp.set_defaults(func=cmd_bench_energy)
    pp = bsub.add_parser("energy-pareto", help="energy cost vs makespan of an energy-weight "
                                               "sweep (autocell experiment's output directory)")
    pp.add_argument("dir", help="the sweep's output directory (holding runs.csv)")
    pp.set_defaults(func=cmd_bench_energy_pareto)
