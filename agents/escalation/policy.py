"""The escalation policy as the agents see it: plain frozen values, built from the cell config.

The config model (``escalation:`` in a cell file, :mod:`agents.cell.model`)
is validated there; agents get this sans-io copy so they depend on no
pydantic model.  ``None`` for a rule means it is switched off.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .lifecycle import Deadlines

if TYPE_CHECKING:
    from agents.cell.model import CellConfig


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
    deadlines: Deadlines = field(default_factory=Deadlines)
    flood_count: int = 10
    flood_window_s: float = 600.0
    console: str = "console"


OFF = EscalationPolicy()
"""Every rule off: agents handle everything alone (the behaviour before escalations)."""


def policy_of(cfg: CellConfig) -> EscalationPolicy:
    e = cfg.escalation

    def rule(r: object, threshold_s: float = 0.0, count: int = 0) -> Rule | None:
        return Rule(r.priority, threshold_s, count) if r.enabled else None  # type: ignore[attr-defined]

    return EscalationPolicy(
        no_capable_resource=rule(e.no_capable_resource, e.no_capable_resource.max_wait_s),
        late_reroute=rule(e.late_reroute, e.late_reroute.late_by_s),
        repeat_faults=(Rule(e.repeat_faults.priority, e.repeat_faults.window_s,
                            e.repeat_faults.count, e.repeat_faults.beyond_mtbf)
                       if e.repeat_faults.enabled else None),
        restart_intensity=rule(e.restart_intensity),
        quality_reject=rule(e.quality_reject, 0.0, e.quality_reject.count),
        reject_burst=rule(e.reject_burst, e.reject_burst.window_s, e.reject_burst.count),
        deadlines=Deadlines(e.response_deadline_s, e.reescalate_every_s, e.final_deadline_s,
                            e.max_shelve_s),
        flood_count=e.flood.count, flood_window_s=e.flood.window_s)
