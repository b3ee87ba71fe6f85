"""The run report: figures and invariants from one virtual-time run."""

from __future__ import annotations

import statistics
from typing import Any

from .invariants import check_all, parse
from .virtual import VirtualCell


def build_report(cell: VirtualCell) -> dict[str, Any]:
    evs = parse(cell.events)
    cfg = cell.cfg
    orders = {o.id: o for o in cfg.orders}
    completed = {e["order"]: e for e in evs if e["ev"] == "order_completed"}
    flagged = {e["order"] for e in evs if e["ev"] == "non_routine"} - set(completed)
    makespan = max((e["t"] for e in completed.values()), default=0.0)
    flows = [e["t"] - orders[o].release_at for o, e in completed.items()]
    tardiness = sum(e["tardiness_s"] for e in completed.values())
    in_progress = [o for o in orders if o not in completed and o not in flagged]
    lost = [] if cell.ended_by == "until" else in_progress
    busy = {m_id: st.busy_s for m_id, st in cell.plant.machines.items()}
    violations = check_all(cell.events, list(orders), cell.ended_by,
                           cell.stats.verified, cell.stats.messages_delivered)
    sim_s = cell.env.now
    return {
        "cell": cfg.cell,
        "seed": cell.seed,
        "ended_by": cell.ended_by,
        "orders_total": len(orders),
        "orders_completed": len(completed),
        "orders_lost": len(lost),
        "orders_escalated": len(flagged),
        "orders_in_progress": len(in_progress) if cell.ended_by == "until" else 0,
        "makespan": round(makespan, 6),
        "mean_flow_time": round(statistics.fmean(flows), 6) if flows else 0.0,
        "tardiness_total": round(tardiness, 6),
        "tardy_orders": sum(1 for e in completed.values() if e["tardiness_s"] > 0),
        "operations": sum(1 for e in evs if e["ev"] == "op_done" and e["quality"] == "ok"),
        "scrapped": sum(1 for e in evs if e["ev"] == "op_done" and e["quality"] != "ok"),
        "faults": sum(1 for e in evs if e["ev"] == "fault"),
        "messages_sent": cell.stats.messages_sent,
        "messages_rejected": sum(cell.stats.rejected.values()),
        "messages_rejected_by_reason": dict(sorted(cell.stats.rejected.items())),
        "messages_lost_by_network": cell.stats.messages_lost,
        "messages_by_type": dict(sorted(cell.stats.sent_by_type.items())),
        "reroutes": sum(1 for e in evs if e["ev"] == "reroute"),
        "lease_expiries": sum(1 for e in evs if e["ev"] == "lease_expired"),
        "utilisation": {m: round(b / makespan, 6) if makespan else 0.0
                        for m, b in sorted(busy.items())},
        "invariants": {name: not v for name, v in violations.items()},
        "invariant_violations": {name: v[:20] for name, v in violations.items() if v},
        "event_log_sha256": cell.event_log_sha256(),
        "events": len(cell.events),
        "sim_time_s": round(sim_s, 6),
        "wall_s": round(cell.wall_s, 3),
        "sim_speedup": round(sim_s / cell.wall_s, 1) if cell.wall_s > 0 else None,
    }
