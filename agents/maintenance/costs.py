"""What a maintenance job costs, and when maintaining now pays (ADR 75).

The cell file's ``maintenance.costs`` are the plant's rates; a planned job and a
corrective repair cost their downtime and their technician by the hour and one
part (:func:`job_costs`).  From the two and a machine's Weibull life follows the
age-replacement optimum — the operating age ``T*`` minimising the long-run cost
rate ``g(T) = (Cp R(T) + Cf F(T)) / ∫₀ᵀ R`` (:func:`age_replacement_optimum`): the
preventive baseline replaces at ``T*``.

A machine that watches its own health can do better than a fixed age: it
maintains when going on one more reading is expected to cost more than it earns
(:class:`CostRule`).  Going on for ``Δ`` operating seconds risks turning the
planned job into a failure with the conditional probability ``p`` of failing in
that step, an extra ``Cf − Cp``; it earns ``Δ`` of use that would otherwise cost
``g* Δ`` (the optimal age-replacement cost rate, the best a policy without the
readings achieves).  So: maintain once ``p (Cf − Cp) ≥ g* Δ`` — the marginal
cost rule of condition-based maintenance (the hazard-threshold policy of
proportional-hazards CBM, with the hazard read from the estimator's remaining-
life distribution).  Nothing here is a tunable knob: the rates are the plant's,
the life is the machine's own model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .rul import HealthModel, Rul

if TYPE_CHECKING:
    from agents.cell.maintenance import Degradation, MaintenanceCosts

__all__ = ["CostRule", "age_replacement_optimum", "age_replacement_rate", "job_costs"]


def job_costs(spec: Degradation, costs: MaintenanceCosts, part_cost: float) -> tuple[float, float]:
    """(planned, corrective) cost of one job: downtime and technician by the hour, the part."""
    per_s = (costs.downtime_per_h + costs.technician_per_h) / 3600.0
    return spec.maintenance_s * per_s + part_cost, spec.repair_s * per_s + part_cost


def _rates(model: HealthModel, planned: float,
           corrective: float) -> tuple[np.ndarray, np.ndarray] | None:
    k, lam = model.weibull_shape, model.weibull_scale_s
    if k <= 1.0 or planned >= corrective:
        return None
    t = np.linspace(lam / 2000.0, 3.0 * lam, 6000)
    r = np.exp(-((t / lam) ** k))
    integral = np.concatenate([[0.0], np.cumsum((r[1:] + r[:-1]) / 2 * np.diff(t))]) + t[0]
    return t, (planned * r + corrective * (1 - r)) / integral


def age_replacement_optimum(model: HealthModel, planned: float, corrective: float) -> float:
    """The operating age minimising the long-run cost rate; ``inf`` when replacing early
    never pays (Weibull shape <= 1: no wear-out, or a planned job as dear as a failure)."""
    got = _rates(model, planned, corrective)
    if got is None:
        return math.inf
    t, rate = got
    return float(t[int(np.argmin(rate))])


def age_replacement_rate(model: HealthModel, planned: float, corrective: float) -> float:
    """The optimal long-run cost rate ``g*`` (per operating second) of age replacement;
    ``inf`` when planned replacement never pays (then no cost rule maintains early)."""
    got = _rates(model, planned, corrective)
    return math.inf if got is None else float(np.min(got[1]))


@dataclass(frozen=True)
class CostRule:
    """Maintain once the next step's expected failure cost exceeds what the step earns."""

    planned: float          # Cp: a planned job's downtime, technician and part
    corrective: float       # Cf: a corrective repair's
    rate: float             # g*: the optimal age-replacement cost rate, per operating second

    @classmethod
    def of(cls, model: HealthModel, planned: float, corrective: float) -> CostRule:
        return cls(planned, corrective, age_replacement_rate(model, planned, corrective))

    def step_risk(self, rul: Rul, lead_s: float, step_s: float) -> float:
        """The probability of failing in ``(lead, lead + step]`` operating seconds, given
        the machine is still up at ``lead`` (a window asked for now starts about then)."""
        p0 = rul.p_fail_before(lead_s)
        if p0 >= 1.0 - 1e-12:
            return 1.0
        return max(0.0, rul.p_fail_before(lead_s + step_s) - p0) / (1.0 - p0)

    def due(self, rul: Rul, lead_s: float, step_s: float) -> bool:
        """Whether asking for the window now pays: waiting ``step_s`` more operating
        seconds would risk more than it earns."""
        if not math.isfinite(self.rate) or step_s <= 0:
            return False
        return self.step_risk(rul, lead_s, step_s) * (self.corrective - self.planned) \
            >= self.rate * step_s
