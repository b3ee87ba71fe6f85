"""The maintenance escalations of issue 16: causes, options and safe defaults, as data.

One table for both raisers: the simulator's policies record them as
``maintenance_escalation`` events (sim_bridge/maintenance/escalations.py), and a
machine agent under negotiated maintenance sends them to the console through its
escalation raiser (agents/maintenance/hook.py), so they reach a supervisor.
"""

from __future__ import annotations

from typing import Any

from agents.protocol.messages import Escalate

__all__ = ["CASES", "OPTIONS", "escalate"]

OPTIONS = ("run_to_failure", "stop_now", "expedite_part")

# cause -> (priority, safe default, consequence, effect of each option)
CASES: dict[str, tuple[int, str, str, dict[str, str]]] = {
    "maintenance_no_window": (
        2, "stop_now",
        "the machine runs past its latest safe start: failure risk above the policy's",
        {"run_to_failure": "keep producing; planned maintenance when a technician frees, "
                           "a corrective repair if it fails first",
         "stop_now": "stop the machine now and hold it for the first free technician",
         "expedite_part": "no effect: a technician is missing, not the part"}),
    "maintenance_no_part": (
        2, "expedite_part",
        "no spare part before the latest safe start: the window cannot be kept",
        {"run_to_failure": "keep producing until the ordered part arrives, or it fails",
         "stop_now": "stop the machine now and wait for the ordered part",
         "expedite_part": "pay for the supplier's fastest delivery of one part"}),
    "maintenance_prediction_miss": (
        2, "stop_now",
        "the machine failed well before its predicted window: its estimator is not "
        "to be trusted until it is re-trained",
        {"run_to_failure": "keep planning on the estimator as before (the miss was chance)",
         "stop_now": "hold the machine after its repair until a person has inspected it",
         "expedite_part": "expedite a spare part so the repair does not wait on stock"}),
}



def escalate(escalation_id: str, cause: str, machine: str, deadline_at: float,
             context: dict[str, Any]) -> Escalate:
    """The ``escalate`` body of one case (docs/maintenance.md, "Escalations")."""
    priority, default, consequence, effects = CASES[cause]
    return Escalate(
        escalation=escalation_id, priority=priority, cause=cause,
        consequence=f"{machine}: {consequence}", resource=machine,
        options=[{"id": o, "label": o.replace("_", " ").capitalize(), "effect": effects[o]}
                 for o in OPTIONS],
        safe_default=default, deadline_at=deadline_at, context=context)
