"""Trained models travel with the run, not with the host's file system (ADR 82).

* A decision log keeps the trained models the machines' estimators started from (its
  header's ``run.models``, not the path of ``maintenance.models``), so ``replay --check`` of
  a run made with a model file rebuilds the same estimators and finds no divergence — also
  after the model file is gone.
* An agent rebuilt after a crash under ``autocell run`` starts from the trained model, as a
  host's does under ``up``.
* A model file whose figures an estimator would divide by, overflow on or turn into NaN is
  refused when the cell file loads, and so is ``--maintenance-model``, with the reason.
* A model written before ``maintenance fit`` fitted the wear process (``wear: null``) takes
  the cell file's process rather than the estimator's uncalibrated Weibull fallback.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from agents.maintenance.rul import Channel, GammaWear, HealthModel, prior_model
from ops.config import ConfigError, load_cell
from ops.maintenance import attach_to_run, cell_models
from security.errors import ConfigurationError
from sim_bridge.virtual import VirtualCell

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "cell_configs" / "demo_cell_maintenance.yaml"


def _worn(model: HealthModel, offset: float = 0.8) -> HealthModel:
    """``model`` whose sensor levels of a new machine read ``offset`` wear lower: a new
    machine's readings look worn to it (a model the cell file cannot give)."""
    return replace(model, wear=None, meta={"source": "test"}, channels={
        k: Channel(c.idle - offset * c.per_wear, c.busy - offset * c.per_wear, c.per_wear,
                   c.noise) for k, c in model.channels.items()})


def _cell(tmp_path: Path, models: Any, estimator: str = "threshold") -> Path:
    """The negotiating maintenance demo in ``tmp_path`` naming ``models/trained.json``,
    written with ``models`` (a dict as JSON)."""
    data = yaml.safe_load(DEMO.read_text())
    data["maintenance"].update(negotiate=True, models="models/trained.json",
                               estimator=estimator)
    path = tmp_path / "cell.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    (tmp_path / "models").mkdir(exist_ok=True)
    (tmp_path / "models" / "trained.json").write_text(json.dumps(models))
    return path


def _trained_mill1() -> dict[str, Any]:
    cfg = load_cell(DEMO)
    return {"machines": {"mill1": _worn(prior_model(cfg.machine("mill1").degradation))
                         .to_json()}}


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ops.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})


def test_replay_check_of_a_run_with_a_model_file_finds_no_divergence(tmp_path: Path) -> None:
    cell = _cell(tmp_path, _trained_mill1())
    run = _cli("run", str(cell), "--until", "1500", "--decision-log", "d.jsonl", cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    header = json.loads((tmp_path / "d.jsonl").read_text().splitlines()[0])
    models = header["run"]["models"]
    assert HealthModel.from_json(models["mill1"]) == cell_models(load_cell(cell))["mill1"]
    assert "models" not in header["run"]["cell"]["maintenance"]   # the host's path: not kept
    (tmp_path / "models" / "trained.json").unlink()         # the replay needs only the log
    check = _cli("replay", "d.jsonl", "--check", cwd=tmp_path)
    assert check.returncode == 0, check.stdout[-2000:] + check.stderr[-2000:]
    assert "replay OK" in check.stdout
    # the models decided: mill1's estimator read the new machine as worn and planned early
    assert '"maint_needed"' in (tmp_path / "d.jsonl").read_text()


def test_a_log_without_models_has_no_models_key(tmp_path: Path) -> None:
    run = _cli("run", str(ROOT / "cell_configs" / "demo_cell.yaml"), "--until", "60",
               "--decision-log", "d.jsonl", cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    header = json.loads((tmp_path / "d.jsonl").read_text().splitlines()[0])
    assert "models" not in header["run"]


def test_an_agent_rebuilt_after_a_crash_starts_from_the_trained_model(tmp_path: Path) -> None:
    cfg = load_cell(_cell(tmp_path, _trained_mill1()))
    cell = VirtualCell(cfg, seed=1)
    attach_to_run(cell, "negotiated", None)
    trained = cell_models(cfg)["mill1"]
    rebuilt: Any = cell._rebuild("mill1")
    assert rebuilt is not cell.runner.agents["mill1"]
    assert rebuilt.maint.estimator.model == trained


# -- bad figures in a model file ----------------------------------------------------------------

def _with(change: dict[str, Any], wear: dict[str, Any] | None = None) -> dict[str, Any]:
    cfg = load_cell(DEMO)
    m = prior_model(cfg.machine("mill1").degradation).to_json()
    m.update(change)
    if wear is not None:
        m["wear"] = {**m["wear"], **wear}
    return {"machines": {"mill1": m}}


@pytest.mark.parametrize(("change", "wear", "says"), [
    ({}, {"rate": 0.0}, "rate > 0"),
    ({}, {"beta": 0.0}, "beta > 0"),
    ({}, {"rate": -1e-5}, "rate > 0"),
    ({}, {"idle_wear": 1.5}, "idle_wear <= 1"),
    ({}, {"rate": float("nan")}, "finite numbers"),
    ({}, {"beta": "fast"}, "finite numbers"),
    ({"weibull_shape": 0.01, "wear": None}, None, "too small"),
    ({"weibull_shape": -2.0}, None, "positive and finite"),
    ({"channels": {"vibration_mm_s": {"idle": 1.0, "busy": 2.0, "per_wear": 3.0,
                                      "noise": -0.1}}}, None, "noise must be >= 0"),
    ({"channels": {"vibration_mm_s": {"idle": float("inf"), "busy": 2.0, "per_wear": 3.0,
                                      "noise": 0.1}}}, None, "finite numbers"),
])
def test_a_model_file_an_estimator_cannot_use_is_refused_when_the_cell_loads(
        tmp_path: Path, change: dict[str, Any], wear: dict[str, Any] | None,
        says: str) -> None:
    cell = _cell(tmp_path, _with(change, wear))
    with pytest.raises(ConfigError) as err:
        load_cell(cell)
    assert "machines.mill1" in str(err.value) and says in str(err.value), str(err.value)


def test_a_bad_maintenance_model_option_is_refused_with_the_reason(tmp_path: Path) -> None:
    cfg = load_cell(DEMO)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(_with({}, {"rate": 0.0})))
    with pytest.raises(ConfigurationError, match=r"--maintenance-model .*rate > 0"):
        attach_to_run(VirtualCell(cfg, seed=1), "run_to_failure", str(bad))
    with pytest.raises(ConfigurationError, match="relative to the working directory"):
        attach_to_run(VirtualCell(cfg, seed=1), "run_to_failure", str(tmp_path / "none.json"))


# -- a model without a wear process ----------------------------------------------------------

def test_a_trained_model_without_wear_takes_the_cell_files_process(tmp_path: Path) -> None:
    cfg = load_cell(_cell(tmp_path, _trained_mill1(), estimator="wear"))
    got = cell_models(cfg)["mill1"]
    assert got.wear == GammaWear.of(cfg.machine("mill1").degradation)
    assert got.channels == _worn(prior_model(cfg.machine("mill1").degradation)).channels
    # a model with its own process keeps it
    own = GammaWear(rate=2e-5, beta=0.2, threshold_sd=0.05, idle_wear=0.1)
    data = _trained_mill1()
    data["machines"]["mill1"]["wear"] = own.__dict__
    cfg = load_cell(_cell(tmp_path, data, estimator="wear"))
    assert cell_models(cfg)["mill1"].wear == own
    # and the negotiating agents' wear estimators run on it
    cell = VirtualCell(cfg, seed=1)
    attach_to_run(cell, "negotiated", None)
    est: Any = cell.runner.agents["mill1"].maint.estimator
    assert est.process == own
