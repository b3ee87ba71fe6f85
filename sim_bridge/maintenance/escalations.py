"""The maintenance escalations of issue 16, as far as the simulator's policy can raise them.

Three cases are not routine (docs/maintenance.md, "Escalations"):

``maintenance_no_window``        the planned window did not start by its latest safe
                                 start because no technician was free;
``maintenance_no_part``          no spare part on the shelf, and none due from the
                                 supplier, before the latest safe start;
``maintenance_prediction_miss``  the machine failed before even the ``miss_quantile``
                                 (5 %) of the remaining life its estimator gave at the
                                 last reading: the prediction was badly wrong.

Each carries the same three options — run to failure, stop now, expedite the part —
with the effect each would have in that case, and a safe default (stop now; expedite
the part when the part is what is missing).

Why events and not the escalation raiser: the policy runs inside the simulator
(sim_bridge/maintenance/policies.py), not in an agent, so it has no signed
sender and no timers of its own through which
:class:`agents.escalation.raiser.EscalationRaiser` could re-send an ``escalate``
to the console.  It records a ``maintenance_escalation`` event instead, shaped
like the :class:`agents.protocol.messages.Escalate` body (cause, priority,
options, safe default, deadline), and the run report counts them
(:func:`figures`).  They are deliberately *not* ``escalation_raised`` events:
that event is the console's record, and a case nobody can decide must not look
like one waiting on a supervisor.  Under negotiated maintenance the machine agent
raises them itself, through its raiser, from the same table
(agents/maintenance/cases.py).
"""

from __future__ import annotations

from typing import Any

from agents.maintenance.cases import CASES, OPTIONS

__all__ = ["CASES", "OPTIONS", "escalation", "figures"]


def escalation(escalation_id: str, cause: str, machine: str, now: float, deadline_s: float,
               context: dict[str, Any]) -> dict[str, Any]:
    """The fields of one ``maintenance_escalation`` event."""
    priority, default, consequence, effects = CASES[cause]
    return {"escalation": escalation_id, "cause": cause, "priority": priority,
            "resource": machine, "consequence": consequence,
            "options": [{"id": o, "label": o.replace("_", " "), "effect": effects[o]}
                        for o in OPTIONS],
            "safe_default": default, "deadline_at": round(now + deadline_s, 6),
            "context": context}


def figures(evs: list[dict[str, Any]]) -> dict[str, Any]:
    """The report's maintenance-escalation figures; empty for a log without any (so a cell
    without a maintenance policy reports what it reported before)."""
    raised = [e for e in evs if e["ev"] == "maintenance_escalation"]
    misses = sum(1 for e in evs if e["ev"] == "prediction_miss")
    if not raised and not misses:
        return {}
    by_cause: dict[str, int] = {}
    for e in raised:
        by_cause[e["cause"]] = by_cause.get(e["cause"], 0) + 1
    return {"maintenance_escalations": len(raised),
            "maintenance_escalations_by_cause": dict(sorted(by_cause.items())),
            "prediction_misses": misses}
