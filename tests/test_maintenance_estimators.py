"""Estimators on known degradation paths, the Weibull fit, training from event logs and CSV,
and the estimator registry (agents/maintenance/)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers.machine_logs import machine_log
from pytest import approx

from agents.cell.maintenance import Degradation
from agents.maintenance.estimators import (
    Estimator,
    ThresholdEstimator,
    WeibullEstimator,
    estimator,
)
from agents.maintenance.rul import Channel, HealthModel, NormalRul, WeibullRul
from agents.maintenance.training import fit_events, weibull_mle
from ops.cli import main
from security.errors import ConfigurationError

VIB = Channel(idle=0.3, busy=2.0, per_wear=4.0, noise=0.4)
MODEL = HealthModel(channels={"vibration_mm_s": VIB}, weibull_shape=3.0, weibull_scale_s=10_000.0)


# --------------------------------------------------------------------------- the Weibull fit


def test_the_weibull_fit_recovers_known_parameters_under_censoring() -> None:
    rng = np.random.default_rng(5)
    life = 1000.0 * rng.weibull(2.5, 3000)
    stop = rng.uniform(0, 2500.0, 3000)                 # planned replacements censor lives
    ages, failed = np.minimum(life, stop), life <= stop
    shape, scale = weibull_mle(ages, failed)
    assert shape == approx(2.5, rel=0.06) and scale == approx(1000.0, rel=0.04)


def test_the_weibull_fit_agrees_with_lifelines() -> None:
    import lifelines  # a test dependency (pyproject.toml): the reference fit
    rng = np.random.default_rng(6)
    life = 500.0 * rng.weibull(1.7, 400)
    stop = rng.uniform(0, 900.0, 400)
    ages, failed = np.minimum(life, stop), life <= stop
    wf = lifelines.WeibullFitter().fit(ages, failed)
    shape, scale = weibull_mle(ages, failed)
    assert shape == approx(wf.rho_, rel=1e-3) and scale == approx(wf.lambda_, rel=1e-3)


def test_a_fit_without_failures_says_what_is_missing() -> None:
    with pytest.raises(ConfigurationError, match="no failure"):
        weibull_mle([100.0, 200.0], [False, False])


# --------------------------------------------------------------------------- estimators


def _linear_path(est: Estimator, until_wear: float, seed: int = 0) -> list[tuple[float, float]]:
    """Feed a known path: wear = age / 10000 (failure at 10000 s), busy, noisy readings."""
    rng = np.random.default_rng(seed)
    seen = []
    for age in np.arange(0.0, until_wear * 10_000.0, 60.0):
        wear = age / 10_000.0
        value = VIB.busy + VIB.per_wear * wear + VIB.noise * rng.standard_normal()
        est.observe(float(age), {"vibration_mm_s": float(value)}, busy=True, age_s=float(age))
        seen.append((wear, est.health()))
    return seen


def test_the_threshold_estimator_follows_a_known_path() -> None:
    est = ThresholdEstimator(MODEL, smoothing=0.1, alarm_wear=0.7)
    seen = _linear_path(est, 0.5)
    assert est.health() == approx(0.5, abs=0.08)
    assert not est.alarm()
    rul = est.rul()
    assert isinstance(rul, NormalRul)
    assert rul.median_s == approx(5000.0, rel=0.2)       # half the life is left
    assert rul.p_fail_before(1000.0) < 0.05 < 0.95 < rul.p_fail_before(9000.0)
    assert all(h2 <= h1 + 0.2 for (_, h1), (_, h2) in zip(seen, seen[1:], strict=False))


def test_the_threshold_estimator_alarms_past_its_level_and_renews() -> None:
    est = ThresholdEstimator(MODEL, smoothing=0.1, alarm_wear=0.7)
    _linear_path(est, 0.8, seed=1)
    assert est.alarm() and est.health() < 0.35
    est.renew(1.0)
    assert est.health() == 1.0 and not est.alarm()


def test_the_threshold_estimator_reads_idle_and_busy_levels_apart() -> None:
    est = ThresholdEstimator(MODEL, smoothing=1.0)
    est.observe(0.0, {"vibration_mm_s": VIB.idle + 2.0}, busy=False, age_s=0.0)
    idle = est.health()
    est.observe(1.0, {"vibration_mm_s": VIB.busy + 2.0}, busy=True, age_s=1.0)
    assert idle == approx(0.5) and est.health() == approx(0.5)


def test_the_weibull_estimator_conditions_on_the_age_survived() -> None:
    est = WeibullEstimator(MODEL)
    est.observe(0.0, {}, busy=True, age_s=8000.0)
    rul = est.rul()
    assert isinstance(rul, WeibullRul)
    k, lam, a = 3.0, 10_000.0, 8000.0
    expected = 1 - math.exp((a / lam) ** k - ((a + 2000) / lam) ** k)
    assert rul.p_fail_before(2000.0) == approx(expected)
    assert rul.p_fail_before(rul.quantile(0.1)) == approx(0.1)
    assert est.health() == approx(math.exp(-(0.8 ** 3)))
    young = WeibullEstimator(MODEL)
    assert young.rul().p_fail_before(2000.0) < rul.p_fail_before(2000.0)   # ageing


class Constant(Estimator):
    name = "constant"

    def __init__(self, model: HealthModel, /, *, level: float = 0.5) -> None:
        super().__init__(model)
        self.level = level

    def health(self) -> float:
        return self.level

    def rul(self) -> NormalRul:
        return NormalRul(1000.0, 10.0)


def test_estimators_are_plug_ins_named_like_strategies() -> None:
    assert isinstance(estimator("threshold", MODEL), ThresholdEstimator)
    est = estimator({"name": "threshold", "params": {"smoothing": 0.3}}, MODEL)
    assert isinstance(est, ThresholdEstimator) and est.smoothing == 0.3
    assert isinstance(estimator("weibull", MODEL), WeibullEstimator)
    own = estimator({"name": f"{__name__}:Constant", "params": {"level": 0.25}}, MODEL)
    assert own.health() == 0.25
    with pytest.raises(ConfigurationError, match="unknown estimator"):
        estimator("crystal_ball", MODEL)
    with pytest.raises(ConfigurationError, match="smoothing"):
        estimator({"name": "threshold", "params": {"smoothing": 3}}, MODEL)
    with pytest.raises(ConfigurationError):
        estimator({"name": "weibull", "params": {"x": 1}}, MODEL)


# --------------------------------------------------------------------------- training


def _busy_log(seed: int, until_s: float) -> list[dict[str, Any]]:
    """A machine kept busy with 100-s operations until ``until_s``: its event log."""
    return machine_log(seed, until_s, Degradation(mttf_s=6000.0, reading_interval_s=60.0,
                                                  maintenance_s=100.0, repair_s=600.0))


def test_a_model_fitted_from_event_logs_recovers_the_simulated_machine() -> None:
    log = _busy_log(seed=3, until_s=400_000.0)
    model = fit_events(log)["m"]
    assert model.failures > 30
    mean_life = model.weibull_scale_s * math.gamma(1 + 1 / model.weibull_shape)
    assert mean_life == approx(6000.0, rel=0.15)          # busy all the time: age = exposure
    vib = model.channels["vibration_mm_s"]
    assert vib.per_wear == approx(4.0, rel=0.25) and vib.busy == approx(2.0, abs=0.5)
    assert 0.4 * 0.8 < vib.noise < 0.4 * 3      # the sensor noise plus the path around its mean


def test_maintenance_fit_reads_jsonl_and_csv(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    log = _busy_log(seed=4, until_s=150_000.0)
    jsonl = tmp_path / "run.jsonl"
    jsonl.write_text("".join(json.dumps(e) + "\n" for e in log), encoding="utf-8")
    fields = sorted({k for e in log for k in e})
    csv_path = tmp_path / "historian.csv"
    with csv_path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(log)
    out_j, out_c = tmp_path / "j.json", tmp_path / "c.json"
    assert main(["maintenance", "fit", str(jsonl), "--out", str(out_j)]) == 0
    assert main(["maintenance", "fit", str(csv_path), "--out", str(out_c),
                 "--machine", "m"]) == 0
    assert "Weibull shape" in capsys.readouterr().out
    j = json.loads(out_j.read_text())["machines"]["m"]
    c = json.loads(out_c.read_text())["machines"]["m"]
    assert j["weibull_shape"] == approx(c["weibull_shape"], rel=1e-6)
    from ops.maintenance import load_models
    assert load_models(out_j)["m"].channels["vibration_mm_s"].per_wear > 0
    assert main(["maintenance", "fit", str(jsonl), "--out", str(out_j),
                 "--machine", "nope"]) == 2
