"""The ``wear`` estimator on known degradation paths: calibrated, and sharper than ``threshold``.

The paths are the simulator's own (sim_bridge/degradation.py ``WearProcess``, seeded
streams): each life is read every 30 s of clock time on a machine that alternates
busy and idle, readings as the simulator makes them (level + per_wear x wear +
noise), and at a seeded instant of the life the estimator is asked for quantiles of
the remaining operating seconds; the life's true remaining operating seconds come
from its hidden failure exposure.  Over many lives a calibrated estimator has the
failure before its q-quantile in a fraction q of them.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest

from agents.cell.maintenance import Degradation
from agents.maintenance.estimators import (
    Estimator,
    ThresholdEstimator,
    WearEstimator,
    estimator,
)
from agents.maintenance.rul import GammaRul, HealthModel, Rul, prior_model
from sim_bridge.degradation import WearProcess, stream

SPEC = Degradation(mttf_s=1500, wear_cv=0.3, threshold_cv=0.1, idle_wear=0.1,
                   reading_interval_s=30, maintenance_s=240, repair_s=900)
STEP_S = 30.0
BUSY_S, IDLE_S = 120.0, 60.0            # a 2/3 load, in blocks of four and two readings


def _life(wp: WearProcess, est: Estimator, rng: np.random.Generator,
          ask: Callable[[Estimator], bool]) -> tuple[Rul, float] | None:
    """Feed ``est`` one life, reading by reading, until ``ask(est)`` — a stopping time
    decided from the readings alone, never from the hidden failure — and return its
    remaining-life distribution then with the true remaining operating seconds (at the
    same load); None when the life failed before."""
    fail_e = wp.failure_exposure()
    clock = exposure = busy_s = 0.0
    while True:
        busy = (clock % (BUSY_S + IDLE_S)) < BUSY_S
        de = STEP_S if busy else SPEC.idle_wear * STEP_S
        if exposure + de >= fail_e:
            return None
        clock += STEP_S
        exposure += de
        busy_s += STEP_S if busy else 0.0
        w = wp.wear_at(exposure)
        values = {name: (ch.busy if busy else ch.idle) + ch.per_wear * w
                  + ch.noise * float(rng.standard_normal())
                  for name, ch in (("vibration_mm_s", SPEC.vibration_mm_s),
                                   ("temperature_c", SPEC.temperature_c))}
        est.observe(clock, values, busy=busy, age_s=busy_s)
        if ask(est):
            load = BUSY_S / (BUSY_S + IDLE_S)
            per_busy = (load + SPEC.idle_wear * (1 - load)) / load   # exposure per busy s
            return est.rul(), (fail_e - exposure) / per_busy


#: when to ask, from the readings alone: at an operating age drawn per life (mid-life),
#: or once the estimator's own health is below a level drawn per life (end of life)
WHEN: dict[str, Callable[[np.random.Generator], Callable[[Estimator], bool]]] = {
    "mid-life": lambda g: (lambda e, a=float(g.uniform(200, 700)): e.age_s >= a),
    "end-of-life": lambda g: (lambda e, h=float(g.uniform(0.1, 0.3)): e.health() <= h),
}


def _sample(make: type[Estimator], lives: int, seed: int, when: str,
            judge: type[Estimator] = WearEstimator) -> list[tuple[Rul, float]]:
    """``lives`` lives, each asked when ``judge`` (fed the same readings) says so."""
    wp = WearProcess(SPEC, wear=stream(seed, "m", "wear"), threshold=stream(seed, "m", "threshold"))
    rng, draw = stream(seed, "m", "sensors"), stream(seed, "m", "when")
    out = []
    for _ in range(lives):
        est, ref, ask = make(prior_model(SPEC)), judge(prior_model(SPEC)), WHEN[when](draw)

        class Both(Estimator):       # feeds the judged one too; asks the judge
            def observe(self, at, values, *, busy, age_s):  # type: ignore[no-untyped-def]
                est.observe(at, values, busy=busy, age_s=age_s)
                ref.observe(at, values, busy=busy, age_s=age_s)
                self.age_s = age_s

            def health(self) -> float:
                return ref.health()

            def rul(self) -> Rul:
                return est.rul()
        got = _life(wp, Both(prior_model(SPEC)), rng, ask)
        if got is not None:
            out.append(got)
        wp.new_life()
    return out


@pytest.mark.parametrize("when", sorted(WHEN))
def test_the_wear_estimator_is_calibrated_on_the_simulators_paths(when: str) -> None:
    sample = _sample(WearEstimator, 400, 7, when)
    assert len(sample) > 300
    for q in (0.05, 0.2, 0.5, 0.8):
        below = sum(left < rul.quantile(q) for rul, left in sample) / len(sample)
        assert abs(below - q) <= 0.05, (q, below)


def test_the_threshold_estimator_is_not_calibrated_where_the_wear_estimator_is() -> None:
    """The yardstick, asked at the same instants: its 5 % quantile is far off."""
    sample = _sample(ThresholdEstimator, 400, 7, "end-of-life")
    below = sum(left < rul.quantile(0.05) for rul, left in sample) / len(sample)
    assert abs(below - 0.05) > 0.1, below


def _quantile_score(sample: list[tuple[Rul, float]]) -> float:
    """Mean pinball loss over the quantiles 5 %..95 %: a proper score, lower is sharper
    *and* calibrated (a narrow distribution in the wrong place scores badly)."""
    qs = np.linspace(0.05, 0.95, 19)
    return float(np.mean([max(q * (left - rul.quantile(q)), (q - 1) * (left - rul.quantile(q)))
                          for rul, left in sample for q in qs]))


def test_the_wear_estimator_is_sharper_than_threshold_near_end_of_life() -> None:
    wear = _quantile_score(_sample(WearEstimator, 150, 11, "end-of-life"))
    threshold = _quantile_score(_sample(ThresholdEstimator, 150, 11, "end-of-life"))
    assert wear < 0.85 * threshold, (wear, threshold)


def test_its_quantile_and_probability_agree_and_are_deterministic() -> None:
    a, b = _sample(WearEstimator, 3, 5, "mid-life"), _sample(WearEstimator, 3, 5, "mid-life")
    assert a
    for (ra, _), (rb, _) in zip(a, b, strict=True):
        assert isinstance(ra, GammaRul)
        for q in (0.01, 0.3, 0.9):
            t = ra.quantile(q)
            assert ra.p_fail_before(t) == pytest.approx(q, abs=1e-4)
            assert t == rb.quantile(q)
        assert ra.p_fail_before(0.0) == 0.0 and ra.p_fail_before(math.inf) == 1.0


def test_it_starts_new_renews_and_is_a_registered_plug_in() -> None:
    est = estimator({"name": "wear", "params": {"points": 16}}, prior_model(SPEC))
    assert isinstance(est, WearEstimator) and est.health() == 1.0
    assert isinstance(est, WearEstimator)
    est.load = 1.0                     # at full load a new part lives about the mttf
    assert est.rul().median_s == pytest.approx(SPEC.mttf_s, rel=0.05)
    est.load = 0.5
    new_median = est.rul().median_s
    assert _life(WearProcess(SPEC, wear=stream(1, "m", "wear"),
                             threshold=stream(1, "m", "threshold")),
                 est, stream(1, "m", "sensors"), lambda e: e.health() < 0.4) is not None
    assert est.health() < 0.5 and est.rul().median_s < 0.5 * new_median
    est.renew(1.0)
    est.load = 0.5                     # (the learned load outlives the part)
    assert est.health() == 1.0 and est.rul().median_s == pytest.approx(new_median)


def test_a_fitted_model_without_the_process_takes_it_from_its_weibull() -> None:
    m = prior_model(SPEC)
    fitted = HealthModel(channels=m.channels, weibull_shape=m.weibull_shape,
                         weibull_scale_s=m.weibull_scale_s)
    est = WearEstimator(fitted)
    assert est.process.rate == pytest.approx(1.0 / SPEC.mttf_s, rel=1e-6)
    assert est.process.idle_wear == 0.0
    # the life it implies has about the Weibull's mean at full load
    est.load = 1.0
    assert est.rul().median_s == pytest.approx(SPEC.mttf_s, rel=0.15)


def test_a_wear_estimate_past_the_threshold_still_gives_a_short_finite_life() -> None:
    """Far in the truncated normal's tail (the filter says the wear is well past its mean
    threshold but the machine is up) the gaps stay finite and the quantiles small."""
    est = WearEstimator(prior_model(SPEC))
    medians = []
    for mean in (1.0, 1.5, 3.0, 10.0):
        est.mean, est.var = mean, 1e-4
        rul = est.rul()
        assert 0.0 < rul.quantile(0.05) < rul.median_s < math.inf
        medians.append(rul.median_s)
    assert medians == sorted(medians, reverse=True) and medians[-1] < 60.0


@pytest.mark.parametrize("value", [1e20, 1e300])
def test_an_outlying_reading_leaves_the_remaining_life_in_order(value: float) -> None:
    """Far past its threshold the filtered wear counts as overdue (OVERDUE_SD): the quantiles
    stay in order and finite (before: 7.9 s at 30 %, 4.7e6 s at 50 % after a reading of
    1e20; a ValueError on every later reading after 1e300)."""
    model = prior_model(SPEC)
    est = WearEstimator(model)
    est.observe(0.0, {k: c.idle for k, c in model.channels.items()}, busy=False, age_s=600.0)
    est.observe(STEP_S, {"vibration_mm_s": value}, busy=False, age_s=600.0)
    qs = [est.rul().quantile(q) for q in (0.05, 0.3, 0.5, 0.8, 0.95)]
    assert all(math.isfinite(q) and q > 0 for q in qs) and qs == sorted(qs)
    assert qs[2] < SPEC.mttf_s / 10 and est.health() == 0.0    # overdue, not new
    est.observe(2 * STEP_S, {k: c.idle for k, c in model.channels.items()}, busy=False,
                age_s=600.0)
    assert math.isfinite(est.rul().quantile(0.5))


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_a_reading_that_is_not_a_number_reads_nothing(value: float) -> None:
    model = prior_model(SPEC)
    plain, fed = WearEstimator(model), WearEstimator(model)
    idle = {k: c.idle for k, c in model.channels.items()}
    for est in (plain, fed):
        est.observe(0.0, idle, busy=False, age_s=600.0)
    plain.observe(STEP_S, {}, busy=False, age_s=600.0)
    fed.observe(STEP_S, {"vibration_mm_s": value}, busy=False, age_s=600.0)
    assert (fed.mean, fed.var) == (plain.mean, plain.var)
    assert math.isfinite(fed.rul().quantile(0.5))
