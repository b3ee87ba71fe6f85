"""``autocell maintenance fit`` learns the wear process (agents/maintenance/training.py
``fit_wear``): known parameters recovered from a seeded simulator run, the model file's
``wear`` block, old files, logs one after another, and too little data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from helpers.machine_logs import machine_log
from pytest import approx

from agents.cell.maintenance import Degradation
from agents.maintenance.estimators import WearEstimator
from agents.maintenance.rul import GammaWear, HealthModel
from agents.maintenance.training import (
    MIN_WEAR_READINGS,
    WearFitError,
    fit_events,
    fit_wear,
    lives_of,
)
from ops.cli import main
from ops.maintenance import load_models

SPEC = Degradation(mttf_s=3000.0, wear_cv=0.3, threshold_cv=0.1, idle_wear=0.25,
                   reading_interval_s=60.0, maintenance_s=100.0, repair_s=600.0)


def _log(seed: int, until_s: float, spec: Degradation = SPEC) -> list[dict[str, Any]]:
    """A machine working in blocks of three 100-s operations, each followed by 0, 300,
    600 or 900 s idle in turn (so busy and idle time vary apart, and the idle wear
    is told from the busy), until ``until_s``, run to failure: its event log."""
    return machine_log(seed, until_s, spec,
                       lambda k: 300.0 * (k // 3 % 4) if k % 3 == 0 else None)


def test_the_fit_recovers_the_simulated_wear_process() -> None:
    """The truth (GammaWear.of: the simulator's own parametrisation) within the stated
    tolerances: rate 12 %, gamma scale 25 %, idle wear 0.1, threshold spread 0.05,
    channel noise 10 %, rise per wear 12 % (about 65 lives, 6 000 readings; seeds 11, 21,
    31, 41 gave rate 0.91-1.07 x, scale 0.88-1.06 x, idle wear 0.18-0.28)."""
    model = fit_events(_log(seed=11, until_s=360_000.0))["m"]
    truth = GammaWear.of(SPEC)
    assert model.failures > 40 and model.wear is not None
    assert model.wear.rate == approx(truth.rate, rel=0.12)
    assert model.wear.beta == approx(truth.beta, rel=0.25)
    assert model.wear.idle_wear == approx(SPEC.idle_wear, abs=0.1)
    assert model.wear.threshold_sd == approx(SPEC.threshold_cv, abs=0.05)
    vib, temp = model.channels["vibration_mm_s"], model.channels["temperature_c"]
    assert vib.noise == approx(SPEC.vibration_mm_s.noise, rel=0.10)
    assert temp.noise == approx(SPEC.temperature_c.noise, rel=0.10)
    assert vib.per_wear == approx(SPEC.vibration_mm_s.per_wear, rel=0.12)
    assert temp.per_wear == approx(SPEC.temperature_c.per_wear, rel=0.12)


def test_the_model_file_carries_the_wear_block_and_old_files_still_load(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "run.jsonl"
    log.write_text("".join(json.dumps(e) + "\n" for e in _log(seed=12, until_s=120_000.0)),
                   encoding="utf-8")
    out = tmp_path / "model.json"
    assert main(["maintenance", "fit", str(log), "--out", str(out)]) == 0
    assert "wear process" in capsys.readouterr().out
    data = json.loads(out.read_text(encoding="utf-8"))
    block = data["machines"]["m"]["wear"]
    assert set(block) == {"rate", "beta", "threshold_sd", "idle_wear"}   # GammaWear's fields
    model = load_models(out)["m"]
    assert model == HealthModel.from_json(json.loads(json.dumps(model.to_json())))
    assert WearEstimator(model).process == model.wear                  # not the Weibull's

    old = json.loads(out.read_text(encoding="utf-8"))    # as the fit wrote them before
    old["machines"]["m"]["wear"] = None
    del old["machines"]["m"]["meta"]
    (tmp_path / "old.json").write_text(json.dumps(old), encoding="utf-8")
    legacy = load_models(tmp_path / "old.json")["m"]
    assert legacy.wear is None and legacy.channels == model.channels
    fallback = WearEstimator(legacy).process
    assert fallback.idle_wear == 0.0 and fallback.rate == approx(
        1.0 / (legacy.weibull_scale_s * 0.9), rel=0.2)    # the Weibull life's process


def test_logs_one_after_another_are_separate_lives() -> None:
    """Where the clock goes back a new log begins: a part running at the end of one log
    is censored there, not continued into the next (ages would go negative)."""
    a, b = _log(seed=13, until_s=30_000.0), _log(seed=14, until_s=30_000.0)
    both = lives_of(a + b)["m"]
    each = lives_of(a)["m"] + lives_of(b)["m"]
    assert [(lf.age_s, lf.failed) for lf in both] == [(lf.age_s, lf.failed) for lf in each]
    assert all(lf.age_s > 0 for lf in both)
    assert not both[0].fresh and not both[len(lives_of(a)["m"])].fresh   # each log's first


def test_a_partial_maintenance_starts_a_stretch_of_unknown_wear() -> None:
    ev = [{"t": 0.0, "ev": "op_start", "machine": "m"},
          {"t": 50.0, "ev": "reading", "machine": "m", "vibration_mm_s": 2.1},
          {"t": 100.0, "ev": "op_done", "machine": "m"},
          {"t": 100.0, "ev": "fault", "machine": "m", "reason": "maintenance"},
          {"t": 160.0, "ev": "maintenance_done", "machine": "m", "kind": "planned", "life": 1},
          {"t": 160.0, "ev": "repaired", "machine": "m"},
          {"t": 200.0, "ev": "reading", "machine": "m", "vibration_mm_s": 0.4},
          {"t": 260.0, "ev": "reading", "machine": "m", "vibration_mm_s": 0.5}]
    (life,) = lives_of(ev)["m"]
    # (operating age, idle powered seconds: the 60 s of maintenance are down, not idle)
    assert life.exposure == [(50.0, 0.0, 0), (100.0, 40.0, 1), (100.0, 100.0, 1)]


def test_too_little_data_keeps_the_weibull_fallback_and_says_why() -> None:
    log = _log(seed=15, until_s=30_000.0)
    model = fit_events(log)["m"]
    lives = lives_of(log)["m"]
    with pytest.raises(WearFitError, match=r"and 1 failure\(s\) in the logs"):
        fit_wear([lf for lf in lives if lf.failed][:1], model.channels)
    with pytest.raises(WearFitError, match=f"at least {MIN_WEAR_READINGS} readings"):
        fit_wear([lf for lf in lives if not lf.failed], model.channels)
    second = [e["t"] for e in log if e["ev"] == "fault" and e.get("reason") == "wear"][1]
    one_failure = [e for e in log if e["t"] < second]     # the log ends before the second
    fitted = fit_events(one_failure)["m"]
    assert fitted.failures == 1 and fitted.wear is None
    assert fitted.meta["wear"].startswith("not fitted:")


def test_a_machine_that_never_failed_is_skipped_not_fatal(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Without ``--machine`` a machine that cannot be fitted (no failure in the logs) is
    named and left out; the others are fitted.  Exit 2 only when none could be."""
    failing = _log(seed=13, until_s=30_000.0)
    assert any(e["ev"] == "fault" for e in failing)
    healthy = [{**e, "machine": "n"} for e in _log(seed=14, until_s=2_000.0)
               if e.get("machine") == "m"]
    assert healthy and not any(e["ev"] == "fault" for e in healthy)
    both, alone = tmp_path / "both.jsonl", tmp_path / "n.jsonl"
    both.write_text("".join(json.dumps(e) + "\n" for e in failing + healthy), encoding="utf-8")
    alone.write_text("".join(json.dumps(e) + "\n" for e in healthy), encoding="utf-8")
    out = tmp_path / "model.json"
    assert main(["maintenance", "fit", str(both), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "skipped n: no failure among the lives" in err
    data = json.loads(out.read_text(encoding="utf-8"))
    assert set(data["machines"]) == {"m"}
    assert set(data["meta"]["skipped"]) == {"n"}
    assert "no failure" in data["meta"]["skipped"]["n"]
    assert set(load_models(out)) == {"m"}
    # nothing to fit: exit 2, no file; a machine named explicitly must be fitted
    none = tmp_path / "none.json"
    assert main(["maintenance", "fit", str(alone), "--out", str(none)]) == 2
    assert "no machine could be fitted" in capsys.readouterr().err and not none.exists()
    assert main(["maintenance", "fit", str(both), "--out", str(none), "--machine", "n"]) == 2
    assert main(["maintenance", "fit", str(both), "--out", str(none), "--machine", "m"]) == 0
    assert "meta" not in json.loads(none.read_text(encoding="utf-8"))
