"""From the cell file to the power budget: what each machine leases, what the cell shares.

One place for the arithmetic the manager, the machines and the cap invariant
(sim_bridge/invariants.py) must agree on: a machine always counts at its idle
power, and an operation needs, above that, the most the machine draws during
it — setup, busy for the capability, or waking up from standby or off (the
plant wakes a sleeping machine before it starts).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from agents.cell.energy import PowerDraw
from agents.escalation.policy import OFF, EscalationPolicy

from .cap_escalation import CapEscalationPolicy
from .client import PowerNeeds

if TYPE_CHECKING:
    from agents.cell.model import CellConfig

__all__ = ["budget_kw", "cap_enforced", "cap_escalation_of", "cap_problem", "needs_of",
           "remaining_work_s", "wake_kw"]

HOUR_S = 3600.0


def wake_kw(draw: PowerDraw) -> float:
    """The highest power drawn while waking (wake-up energy spread over its time)."""
    return max([w.energy_kwh * HOUR_S / w.time_s
                for w in (draw.wake.standby, draw.wake.off) if w.time_s > 0], default=0.0)


def needs_of(draw: PowerDraw, capabilities: Iterable[str], grace_s: float) -> PowerNeeds:
    """kW above idle per capability a machine leases for one operation."""
    base = max(draw.setup_kw, wake_kw(draw))
    per = {cap: max(base, draw.busy_by_capability.get(cap, draw.busy)) - draw.idle
           for cap in capabilities}
    return PowerNeeds({c: max(0.0, kw) for c, kw in per.items()},
                      max(0.0, max(base, draw.busy) - draw.idle),
                      max(draw.wake.standby.time_s, draw.wake.off.time_s), grace_s)


def cap_enforced(cfg: CellConfig) -> bool:
    e = cfg.energy
    return e is not None and e.peak_cap_kw is not None and e.cap_leases


def cap_escalation_of(cfg: CellConfig, escalation: EscalationPolicy, grace_s: float = 0.0
                      ) -> CapEscalationPolicy | None:
    """The cap escalation, or None: off unless the cap is enforced, the cell sets
    ``cap_lateness_escalate_s`` and the run has a console to escalate to (a policy other
    than :data:`agents.escalation.policy.OFF`, which drivers without a console pass)."""
    e = cfg.energy
    if (not cap_enforced(cfg) or e is None or e.cap_lateness_escalate_s is None
            or escalation is OFF):
        return None
    slack = {m.id: needs_of(m.power_kw, m.capabilities, grace_s).wake_s + grace_s
             for m in cfg.machines}         # a lease's hold beyond its operation
    return CapEscalationPolicy(e.cap_lateness_escalate_s, e.cap_escalate_priority,
                               e.cap_raise_s, escalation.console, slack)


def remaining_work_s(cfg: CellConfig) -> dict[str, list[float]]:
    """Order -> for each operation K of its route, the work after K: each later operation
    at its fastest capable machine, times the quantity (what the cap escalation adds to
    a held-back operation's end to predict the order's completion)."""
    fastest = {cap: min(m.capabilities[cap] for m in cfg.machines if cap in m.capabilities)
               for m in cfg.machines for cap in m.capabilities}
    out: dict[str, list[float]] = {}
    for o in cfg.orders:
        work = [fastest.get(step.capability, 0.0) * o.quantity
                for step in cfg.product(o.product).routing]
        out[o.id] = [sum(work[k + 1:]) for k in range(len(work))]
    return out


def budget_kw(cfg: CellConfig) -> float:
    """The cap minus what every machine draws idle: the power shared as leases."""
    assert cfg.energy is not None and cfg.energy.peak_cap_kw is not None
    return cfg.energy.peak_cap_kw - sum(m.power_kw.idle for m in cfg.machines)


def cap_problem(cfg: CellConfig) -> str | None:
    """Why the cap cannot be kept (no lease could ever start some operation), or None."""
    if not cap_enforced(cfg):
        return None
    assert cfg.energy is not None
    budget = budget_kw(cfg)
    idle = cfg.energy.peak_cap_kw - budget  # type: ignore[operator]
    worst: Mapping[str, float] = {
        m.id: max(needs_of(m.power_kw, m.capabilities, 0.0).above_idle_kw.values(), default=0.0)
        for m in cfg.machines}
    mid, kw = max(worst.items(), key=lambda kv: kv[1])
    if kw <= budget + 1e-9:
        return None
    return (f"energy.peak_cap_kw {cfg.energy.peak_cap_kw:g} kW cannot be kept: the machines "
            f"draw {idle:g} kW idle and {mid} needs {kw:g} kW more to run; raise the cap to at "
            f"least {idle + kw:g} kW, or set energy.cap_leases: false to only report it")
