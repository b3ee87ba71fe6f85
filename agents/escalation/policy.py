"""The escalation policy as the agents see it: plain frozen values, built from the cell config.

The config model (``escalation:`` in a cell file, :mod:`agents.cell.model`)
is validated there and translated by :func:`agents.cell.build.policy_of`;
agents get this sans-io copy so they depend on no pydantic model.  ``None``
for a rule means it is switched off.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .lifecycle import Deadlines


@dataclass(frozen=True, slots=True)
class Rule:
    priority: int
    threshold_s: float = 0.0      # max_wait_s, late_by_s or window_s, by rule
    count: int = 0
    beyond_mtbf: bool = False     # repeat_faults: add the faults the MTBF predicts in the window


@dataclass(frozen=True, slots=True)
class EscalationPolicy:
    no_capable_resource: Rule | None = None
    late_reroute: Rule | None = None
    repeat_faults: Rule | None = None
    restart_intensity: Rule | None = None
    quality_reject: Rule | None = None
    reject_burst: Rule | None = None
    equipment_refuses: Rule | None = None
    deadlines: Deadlines = field(default_factory=Deadlines)
    flood_count: int = 10
    flood_window_s: float = 600.0
    console: str = "console"


OFF = EscalationPolicy()
"""Every rule off: agents handle everything alone (the behaviour before escalations)."""


#: The rules whose being on makes a deployed cell run a console agent.
RULES = ("no_capable_resource", "late_reroute", "repeat_faults", "restart_intensity",
         "quality_reject", "reject_burst")


def policy_on(policy: EscalationPolicy) -> bool:
    """True if any rule of the policy escalates."""
    return any(getattr(policy, r) is not None for r in RULES)
