"""The run report: figures and invariants from one virtual-time run."""

from __future__ import annotations

import statistics
from typing import Any

from agents.cell.specs import KpiSpec
from agents.escalation.policy import OFF

from .invariants import check_all, open_escalations, parse
from .kpis import compute as compute_kpis
from .maintenance.escalations import figures as maintenance_escalations
from .virtual import VirtualCell


def p95(xs: list[float]) -> float:
    """The 95th percentile (nearest rank); 0 for no data."""
    if not xs:
        return 0.0
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(0.95 * (len(xs) - 1)))]


def healing_figures(evs: list[dict[str, Any]]) -> dict[str, Any]:
    """The report's healing figures: see :func:`healing_samples`."""
    detect_s, recover_s, counts = healing_samples(evs)
    return {
        "faults_total": counts["faults_total"],
        "faults_detected": len(detect_s),
        "detection_latency": {"max": round(max(detect_s, default=0.0), 6),
                              "p95": round(p95(detect_s), 6)},
        "recovery_latency": {"max": round(max(recover_s, default=0.0), 6),
                             "p95": round(p95(recover_s), 6)},
        "deliberate_waits": counts["deliberate_waits"],
        "waits_no_alternative": counts["waits_no_alternative"],
    }


def healing_samples(evs: list[dict[str, Any]]
                    ) -> tuple[list[float], list[float], dict[str, int]]:
    """Detection and recovery latencies, from the event log alone.

    A *fault* is a breakdown reported by the plant (``fault``; a planned
    maintenance stop, logged as a ``fault`` with reason ``maintenance``, is not
    one: its work was handed back on purpose, docs/maintenance.md) or an
    injected crash, host kill or pause, or partition (``fault_injected``).  The work it
    hits is every task awarded to an affected resource and not yet ended.  The
    fault is *detected* when an order first re-negotiates one of those tasks:
    a ``reroute`` (hand-back) or a ``lease_expired`` (missed heartbeats).
    Faults that hit no work are detected by nobody and counted apart.
    *Recovery* runs from each detection to the next award of the same task;
    deliberate waits (``wait_for_repair``, waiting for a stale winner to
    report) and waits with no live alternative (``no_proposals``) are counted
    apart, not as recovery.
    """
    held: dict[str, str] = {}                  # task -> winner, while awarded
    hits: list[tuple[float, set[str]]] = []    # (fault time, tasks hit)
    detections: list[tuple[float, str]] = []   # (t, task)
    waits: set[tuple[float, str]] = set()
    for e in evs:
        ev = e["ev"]
        if ev == "award":
            held[e["task"]] = e["winner"]
        elif ev in ("finished", "late_done"):
            held.pop(e["task"], None)
        elif ev in ("reroute", "lease_expired"):
            held.pop(e["task"], None)
            detections.append((e["t"], e["task"]))
        elif ev in ("wait_for_repair", "wait_for_stale_winner"):
            waits.add((e["t"], e["task"]))
        if (ev == "fault" and ("machine" in e or "robot" in e)
                and e.get("reason") != "maintenance") or (
                ev == "fault_injected" and e["kind"] != "breakdown"):
            agents = {e.get("machine") or e.get("robot")} if ev == "fault" else set(e["agents"])
            hits.append((e["t"], {t for t, w in held.items() if w in agents}))
    detect_s = []
    for t0, tasks in hits:
        first = next((t for t, task in detections if t >= t0 and task in tasks), None)
        if first is not None:
            detect_s.append(first - t0)
    awards: dict[str, list[float]] = {}
    empty: dict[str, list[float]] = {}
    for e in evs:
        if e["ev"] == "award":
            awards.setdefault(e["task"], []).append(e["t"])
        elif e["ev"] == "no_proposals":
            empty.setdefault(e["task"], []).append(e["t"])
    recover_s = []
    waited = no_alternative = 0
    for t, task in detections:
        nxt = next((ta for ta in awards.get(task, []) if ta >= t), None)
        if any(tw >= t and (nxt is None or tw <= nxt) and tk == task for tw, tk in waits):
            waited += 1                 # the order chose to wait (repair, stale winner)
            continue
        if nxt is None:
            continue
        if any(t <= tn <= nxt for tn in empty.get(task, [])):
            no_alternative += 1         # nobody could take it: the order waited safely
            continue
        recover_s.append(nxt - t)
    return detect_s, recover_s, {"faults_total": len(hits), "deliberate_waits": waited,
                                 "waits_no_alternative": no_alternative}


def power_wait_figures(evs: list[dict[str, Any]], end_at: float) -> dict[str, Any]:
    """Deliberate waits for power budget under a peak cap (docs/energy.md, "The peak cap").

    A machine that asks the energy manager for a lease logs ``power_wait`` (agent,
    task); its wait ends when the manager grants that task's lease to it
    (``power_granted``), when the task leaves it (``handed_back``, ``reroute``,
    ``lease_expired``), when the machine breaks down (``fault``), or at the end of the
    run.  A repeated ``power_wait`` for a wait still open (a new attempt after a release
    or expiry) is the same wait.  ``power_waits``: how many waits; ``power_wait_s``: their
    total seconds — waits, not faults: they are in no fault or recovery figure."""
    open_: dict[tuple[str, str], float] = {}       # (machine, task) -> waiting since
    count, total = 0, 0.0

    def close(key: tuple[str, str], t: float) -> None:
        nonlocal total
        total += t - open_.pop(key)

    for e in evs:
        ev = e["ev"]
        if ev == "power_wait":
            key = (str(e["agent"]), str(e["task"]))
            if key not in open_:
                open_[key] = e["t"]
                count += 1
        elif ev == "power_granted":
            key = (str(e["machine"]), str(e["task"]))
            if key in open_:
                close(key, e["t"])
        elif ev in ("handed_back", "reroute", "lease_expired"):
            for key in [k for k in open_ if k[1] == e.get("task")]:
                close(key, e["t"])
        elif ev == "fault" and "machine" in e:
            for key in [k for k in open_ if k[0] == e["machine"]]:
                close(key, e["t"])
    for key in list(open_):
        close(key, end_at)
    return {"power_waits": count, "power_wait_s": round(total, 6)}


def escalation_figures(evs: list[dict[str, Any]], faults_total: int, scrapped: int,
                       window_s: float = 600.0) -> dict[str, Any]:
    """The report's escalation figures (docs/escalation.md, "Figures").

    ``auto_handled_ratio`` = 1 - human cases / disruptions, where a disruption is a fault
    (plant or injected), a scrapped operation or a burst of rejected messages, and a human
    case is an escalation that opened a new group (related ones — same cause, same
    resource — count once).  ``max_escalations_per_10min`` counts such grouped escalations
    in any 10-minute window.  ``escalation_latency`` runs from the agent raising the case
    (when it detected it) to the console recording it.  ``orders_split``: orders a person
    split into two lots (once in ``orders_completed``; each lot's operations count in
    ``operations``).
    """
    raised = [e for e in evs if e["ev"] == "escalation_raised"]
    detected = {e["escalation"]: e["t"] for e in evs if e["ev"] == "escalate"}
    resolved = {e["escalation"]: e for e in evs if e["ev"] == "escalation_resolved"}
    leaders = [e["t"] for e in raised if not e.get("grouped")]
    per_window = max((sum(1 for u in leaders if t <= u < t + window_s) for t in leaders),
                     default=0)
    bursts = sum(1 for e in raised if e["cause"] == "reject_burst")
    disruptions = faults_total + scrapped + bursts
    humans = min(len(leaders), disruptions) if disruptions else len(leaders)
    latency = [e["t"] - detected[e["escalation"]] for e in raised if e["escalation"] in detected]
    states: dict[str, int] = {}
    for e in raised:
        r = resolved.get(e["escalation"])
        key = r["outcome"] if r is not None else "open"
        states[key] = states.get(key, 0) + 1
    return {
        "escalations_raised": len(raised),
        "escalations_by_cause": dict(sorted(
            {c: sum(1 for e in raised if e["cause"] == c) for c in {e["cause"] for e in raised}}
            .items())),
        "escalations_by_outcome": dict(sorted(states.items())),
        "escalation_groups": len(leaders),
        "auto_handled_ratio": round(1.0 - humans / disruptions, 6) if disruptions else 1.0,
        "max_escalations_per_10min": per_window,
        "escalation_latency": {"max": round(max(latency, default=0.0), 6)},
        "escalation_flood": any(e.get("flood") for e in raised),
        "orders_cancelled": len({e["order"] for e in evs if e["ev"] == "order_cancelled"}),
        "orders_split": sum(1 for e in evs if e["ev"] == "lot_split"),
    }


def energy_figures(kpis: dict[str, Any], currency: str) -> dict[str, Any]:
    """The report's energy summary (a cell with an ``energy:`` section): the cell's figures
    from the KPIs, per machine and state in ``kpis.machines`` (docs/kpis.md, "Energy")."""
    c = kpis["cell"]
    return {"kwh": c["energy_kwh"], "kwh_per_unit": c["energy_per_unit_kwh"],
            "cost": c["energy_cost"], "cost_per_unit": c["energy_cost_per_unit"],
            "currency": currency, "co2_kg": c["co2_kg"], "peak_kw": c["peak_kw"],
            "peak_at": c["peak_at"], "peak_window_s": c["peak_window_s"],
            "peak_cap_kw": c["peak_cap_kw"], "cap_violations": c["cap_violations"],
            "by_state_kwh": c["energy_by_state_kwh"],
            "by_machine_state_kwh": {m: row["energy_by_state_kwh"]
                                     for m, row in kpis["machines"].items()}}


def production_figures(evs: list[dict[str, Any]], cfg: Any, end_at: float) -> dict[str, Any]:
    """The production KPIs of a run from its event log alone — makespan, flow time,
    tardiness, the plant KPIs (OEE, MTBF, energy …, docs/kpis.md) and the energy summary —
    so ``autocell run`` (one log) and ``autocell up`` (the processes' logs merged) report
    the same figures computed the same way.  ``evs`` in time order; ``end_at`` closes the
    KPI window."""
    orders = {o.id: o for o in cfg.orders}
    completed = {e["order"]: e for e in evs if e["ev"] == "order_completed"}
    makespan = max((e["t"] for e in completed.values()), default=0.0)
    flows = [e["t"] - orders[o].release_at for o, e in completed.items() if o in orders]
    kpis = compute_kpis(evs, KpiSpec.from_config(cfg), end_at=end_at)
    return {
        "makespan": round(makespan, 6),
        "mean_flow_time": round(statistics.fmean(flows), 6) if flows else 0.0,
        "tardiness_total": round(sum(e.get("tardiness_s", 0.0) for e in completed.values()), 6),
        "tardy_orders": sum(1 for e in completed.values() if e.get("tardiness_s", 0.0) > 0),
        "kpis": kpis,
        **({"energy": energy_figures(kpis, cfg.energy.tariff.currency)}
           if cfg.energy is not None else {}),
    }


def build_report(cell: VirtualCell) -> dict[str, Any]:
    evs = parse(cell.events)
    cfg = cell.cfg
    orders = {o.id: o for o in cfg.orders}
    completed = {e["order"]: e for e in evs if e["ev"] == "order_completed"}
    cancelled = {e["order"] for e in evs if e["ev"] == "order_cancelled"}
    # An order waiting on a person is escalated, never lost: flagged non-routine, or with an
    # escalation still open at the end (the same test as the orders_accounted_for invariant).
    # A cancelled order was escalated once but is settled: it is counted as cancelled only.
    flagged = ({e["order"] for e in evs if e["ev"] == "non_routine"}
               | (set(open_escalations(evs).values()) & set(orders))) - set(completed) - cancelled
    sim_s = cell.env.now
    stops = [e for e in evs if e["ev"] == "fault" and ("machine" in e or "robot" in e)]
    production = production_figures(evs, cfg, sim_s)
    makespan = production["makespan"]
    in_progress = [o for o in orders
                   if o not in completed and o not in flagged and o not in cancelled]
    lost = [] if cell.ended_by == "until" else in_progress
    busy = {m_id: st.busy_s for m_id, st in cell.plant.machines.items()}
    spec = KpiSpec.from_config(cfg)
    capped = spec.energy is not None and spec.energy.peak_cap_kw is not None
    violations = check_all(cell.events, list(orders), cell.ended_by,
                           cell.stats.verified, cell.stats.messages_delivered,
                           cap=spec if capped else None, escalating=cell.policy != OFF)
    return {
        "cell": cfg.cell,
        "seed": cell.seed,
        "ended_by": cell.ended_by,
        "orders_total": len(orders),
        "orders_completed": len(completed),
        "orders_lost": len(lost),
        "orders_escalated": len(flagged),
        "orders_in_progress": len(in_progress) if cell.ended_by == "until" else 0,
        "makespan": makespan,
        "mean_flow_time": production["mean_flow_time"],
        "tardiness_total": production["tardiness_total"],
        "tardy_orders": production["tardy_orders"],
        "operations": sum(1 for e in evs if e["ev"] == "op_done" and e["quality"] == "ok"),
        "scrapped": sum(1 for e in evs if e["ev"] == "op_done" and e["quality"] != "ok"),
        # a planned maintenance stop is recorded as a fault with reason "maintenance"
        # (sim_bridge/degradation.py); it is no failure (issue 16)
        "faults": sum(1 for e in stops if e.get("reason") != "maintenance"),
        "planned_maintenances": sum(1 for e in stops if e.get("reason") == "maintenance"),
        "messages_sent": cell.stats.messages_sent,
        "messages_rejected": sum(cell.stats.rejected.values()),
        "messages_rejected_by_reason": dict(sorted(cell.stats.rejected.items())),
        "messages_lost_by_network": cell.stats.messages_lost,
        "messages_by_type": dict(sorted(cell.stats.sent_by_type.items())),
        "reroutes": sum(1 for e in evs if e["ev"] == "reroute"),
        "lease_expiries": sum(1 for e in evs if e["ev"] == "lease_expired"),
        "restarts": sum(1 for e in evs if e["ev"] == "agent_restart"),
        **(healing := healing_figures(evs)),
        **power_wait_figures(evs, sim_s),
        **escalation_figures(
            evs, healing["faults_total"],
            sum(1 for e in evs if e["ev"] == "op_done" and e["quality"] != "ok"),
            cell.cfg.escalation.flood.window_s),
        **maintenance_escalations(evs),     # only with a maintenance policy attached
        "utilisation": {m: round(b / makespan, 6) if makespan else 0.0
                        for m, b in sorted(busy.items())},
        "kpis": production["kpis"],
        **({"energy": production["energy"]} if "energy" in production else {}),
        "invariants": {name: not v for name, v in violations.items()},
        "invariant_violations": {name: v[:20] for name, v in violations.items() if v},
        "event_log_sha256": cell.event_log_sha256(),
        "events": len(cell.events),
        "sim_time_s": round(sim_s, 6),
        "wall_s": round(cell.wall_s, 3),
        "sim_speedup": round(sim_s / cell.wall_s, 1) if cell.wall_s > 0 else None,
    }
