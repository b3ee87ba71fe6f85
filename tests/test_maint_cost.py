"""The cost rule a machine agent decides its maintenance window by (ADR 75).

``agents/maintenance/costs.py``: the job costs from the cell file's rates, the
optimal age-replacement cost rate ``g*``, and the marginal rule "maintain once one
more step's failure risk times ``Cf − Cp`` reaches ``g*`` times the step".  The
rule is checked against the renewal-reward formula it comes from, on Weibull
lives whose hazard is known in closed form, and in the machine's window planner.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from agents.maintenance.costs import (
    CostRule,
    age_replacement_optimum,
    age_replacement_rate,
    job_costs,
)
from agents.maintenance.estimators import Estimator
from agents.maintenance.rul import HealthModel, NormalRul, Rul, WeibullRul, prior_model
from agents.maintenance.window import MaintenanceWindow, WindowPlan, windows_of
from agents.protocol.messages import MaintRequest
from ops.bench.maintenance import demo_cell, negotiating
from tests.helpers.actions import logs as _logs
from tests.helpers.actions import sends as _sends

MODEL = HealthModel(channels={}, weibull_shape=3.0, weibull_scale_s=1000.0)


def _rate(model: HealthModel, cp: float, cf: float, t: float, n: int = 20000) -> float:
    """The long-run cost rate of replacing at age ``t``, by the midpoint rule."""
    k, lam = model.weibull_shape, model.weibull_scale_s
    dt = t / n
    integral = sum(math.exp(-(((i + 0.5) * dt) / lam) ** k) for i in range(n)) * dt
    r = math.exp(-((t / lam) ** k))
    return (cp * r + cf * (1 - r)) / integral


def test_the_optimal_rate_is_the_renewal_reward_rate_at_the_optimum_and_the_least() -> None:
    cp, cf = 100.0, 1000.0
    t_star = age_replacement_optimum(MODEL, cp, cf)
    g = age_replacement_rate(MODEL, cp, cf)
    assert g == pytest.approx(_rate(MODEL, cp, cf, t_star), rel=2e-3)
    for t in (0.5 * t_star, 0.8 * t_star, 1.25 * t_star, 2.0 * t_star):
        assert _rate(MODEL, cp, cf, t) > g
    mean = MODEL.weibull_scale_s * math.gamma(1 + 1 / MODEL.weibull_shape)
    assert g < cf / mean                                 # cheaper than running to failure


def test_the_rule_maintains_where_the_hazard_reaches_the_cost_threshold() -> None:
    cp, cf = 100.0, 1000.0
    rule = CostRule.of(MODEL, cp, cf)
    k, lam = MODEL.weibull_shape, MODEL.weibull_scale_s
    # a Weibull's hazard k/lam (t/lam)^(k-1) reaches g*/(Cf-Cp) at this age
    age = lam * (rule.rate / (cf - cp) * lam / k) ** (1 / (k - 1))
    step = 1.0
    assert not rule.due(WeibullRul(k, lam, age * 0.9), 0.0, step)
    assert rule.due(WeibullRul(k, lam, age * 1.1), 0.0, step)
    # a lead moves the decision earlier by about the lead
    assert rule.due(WeibullRul(k, lam, age * 0.9), age * 0.2, step)


def test_a_planned_job_as_dear_as_a_failure_or_no_wear_out_never_maintains() -> None:
    late = WeibullRul(3.0, 1000.0, 5000.0)               # certain to fail within the step
    assert not CostRule.of(MODEL, 500.0, 500.0).due(late, 0.0, 10.0)
    flat = HealthModel(channels={}, weibull_shape=1.0, weibull_scale_s=1000.0)
    assert not CostRule.of(flat, 100.0, 1000.0).due(WeibullRul(1.0, 1000.0, 5000.0), 0.0, 10.0)
    assert math.isinf(age_replacement_rate(flat, 100.0, 1000.0))


def test_the_step_risk_is_conditional_on_surviving_the_lead() -> None:
    rule = CostRule(100.0, 1000.0, 0.1)
    rul = NormalRul(100.0, 10.0)
    p0, p1 = rul.p_fail_before(100.0), rul.p_fail_before(110.0)
    assert rule.step_risk(rul, 100.0, 10.0) == pytest.approx((p1 - p0) / (1 - p0))
    assert rule.step_risk(NormalRul(0.0, 1e-9), 5.0, 1.0) == 1.0   # failed before the lead


class _Left(Estimator):
    """A machine with a fixed remaining life (operating seconds)."""

    name = "left"
    left_s = 1000.0

    def observe(self, at: float, values: Any, *, busy: bool, age_s: float) -> None:
        self.age_s = age_s

    def health(self) -> float:
        return 0.5

    def rul(self) -> Rul:
        return NormalRul(self.left_s, 0.1 * self.left_s)


def test_the_machine_asks_for_its_window_only_once_the_cost_rule_says_so() -> None:
    d = demo_cell().machines[0].degradation
    assert d is not None
    rule = CostRule(295.0, 420.0, 0.27)                  # the demo's mill1, about
    plan = WindowPlan("crew", 240.0, "b", slot_s=300.0, cost=rule, reading_s=30.0)
    est = _Left(prior_model(d))
    w = MaintenanceWindow("mill1", plan, est)
    assert w.on_reading({}, False, 10.0) == []           # a long life left: go on
    est.left_s = 160.0                                   # at load 0.5: 150 s lead, 15 s step
    out = w.on_reading({}, False, 20.0)
    (req,) = _sends(out)
    assert isinstance(req, MaintRequest) and w.phase == "asking"
    assert _logs(out, "maint_needed")[0]["latest_start_at"] == pytest.approx(320.0)
    assert req.latest_start_at == pytest.approx(20.0 + plan.slot_s)


def test_the_cell_file_gives_each_machine_its_rule_from_the_plants_rates() -> None:
    cfg = negotiating(demo_cell())
    s = cfg.maintenance
    assert s is not None and s.decide == "cost"
    for m in cfg.machines:
        if m.degradation is None:
            continue
        w = windows_of(cfg, 5.0)[m.id]
        cp, cf = job_costs(m.degradation, s.costs, s.part(m.degradation.part).cost)
        assert w.plan.cost is not None
        assert (w.plan.cost.planned, w.plan.cost.corrective) == (cp, cf)
        assert w.plan.cost.rate == age_replacement_rate(prior_model(m.degradation), cp, cf)
        assert w.plan.reading_s == m.degradation.reading_interval_s
    risk = cfg.model_copy(update={"maintenance": s.model_copy(update={"decide": "risk"})})
    assert all(w.plan.cost is None for w in windows_of(risk, 5.0).values())
