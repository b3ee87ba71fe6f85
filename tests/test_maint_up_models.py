"""Trained models and the machine agents' health gauges under ``autocell up`` (ADR 77).

The fast tests check ``maintenance.models`` in the cell file — resolved against the cell
file, refused up front with the reason (missing, not JSON, not a model file, a machine the
cell does not have, with a "did you mean", a machine that does not wear) — and that a
host starts its machine agents' estimators from the file, a rebuilt agent's too, and
exports their health from the very estimators.

The slow one runs the negotiating maintenance demo under ``autocell up`` (real processes,
ZeroMQ, ``--speed 50``) with a model file whose mill1 reads every sensor level as
worn — a model the cell file's figures cannot give — and scrapes the machines host's real
``/metrics``: mill1's health is the trained model's, mill2 (not in the file) the cell
file's, and the plant's endpoint leaves those series to the host.  It waits on what it
scrapes, never for a fixed time.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers.waiting import CELL_RUN_BOUND_S, PROCESS_BOUND_S, NotYet, wait_until
from prometheus_client.parser import text_string_to_metric_families

from agents.maintenance.rul import Channel, HealthModel, prior_model
from ops.bench.healing import free_ports, loopback_cell
from ops.config import ConfigError, load_cell
from ops.maintenance import cell_models

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "cell_configs" / "demo_cell_maintenance.yaml"
#: How far the trained model moves mill1's sensor levels of a new machine, in wear: every
#: reading then suggests at least this much wear more than the cell file's figures do.
OFFSET_WEAR = 0.8


def _worn(model: HealthModel, offset: float = OFFSET_WEAR) -> HealthModel:
    """``model`` with each channel's new-machine levels lowered by ``offset`` wear."""
    return replace(model, channels={
        k: Channel(c.idle - offset * c.per_wear, c.busy - offset * c.per_wear, c.per_wear,
                   c.noise) for k, c in model.channels.items()},
        meta={"source": "test: levels lowered"})


def _cell(tmp_path: Path, models: Any, *, negotiate: bool = True,
          models_key: str = "models/trained.json") -> Path:
    """The maintenance demo in ``tmp_path/cell.yaml`` naming ``models_key``, written with
    ``models`` (a dict as JSON, a str as is, None: no file)."""
    data = yaml.safe_load(DEMO.read_text())
    data["maintenance"]["negotiate"] = negotiate
    # the threshold estimator reads the trained channels at the first reading; the wear
    # estimator (the default, ADR 76) trusts a machine of operating age 0 to be new
    data["maintenance"]["estimator"] = "threshold"
    data["maintenance"]["models"] = models_key
    path = tmp_path / "cell.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    if models is not None:
        file = tmp_path / models_key
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(models if isinstance(models, str) else json.dumps(models))
    return path


def _trained_mill1() -> dict[str, Any]:
    cfg = load_cell(DEMO)
    return {"machines": {"mill1": _worn(prior_model(cfg.machine("mill1").degradation))
                         .to_json()}}


# -- the cell file names the model file -----------------------------------------------------

def test_the_model_file_is_read_relative_to_the_cell_file(tmp_path: Path, monkeypatch:
                                                          pytest.MonkeyPatch) -> None:
    path = _cell(tmp_path, _trained_mill1())
    monkeypatch.chdir(ROOT)             # not the cell file's directory
    cfg = load_cell(path)
    assert cfg.maintenance_models_path() == (tmp_path / "models" / "trained.json").resolve()
    models = cell_models(cfg)
    assert set(models) == {"mill1"}
    assert models["mill1"].meta == {"source": "test: levels lowered"}
    assert models["mill1"] != prior_model(cfg.machine("mill1").degradation)


def test_a_cell_without_the_key_has_no_trained_models() -> None:
    assert cell_models(load_cell(DEMO)) == {}


@pytest.mark.parametrize(("content", "expected"), [
    (None, "does not exist; write it with `autocell maintenance fit LOGS... --out "
           "models/trained.json`"),
    ('{"machines": {', "trained.json:1: not JSON"),
    ('{"mill1": {}}', 'not a model file: expected {"machines": {ID: model, ...}}'),
    ('{"machines": {"mill1": {"channels": {}}}}', "machines.mill1: not a health model "
                                                  "(KeyError: 'weibull_shape')"),
    ('{"machines": {"mill1": {"channels": {}, "weibull_shape": 0, "weibull_scale_s": 1}}}',
     "machines.mill1: the Weibull shape and scale must be positive"),
])
def test_a_bad_model_file_is_refused_when_the_cell_loads(tmp_path: Path, content: str | None,
                                                         expected: str) -> None:
    path = _cell(tmp_path, content)
    with pytest.raises(ConfigError) as err:
        load_cell(path)
    text = str(err.value)
    line = next(i for i, x in enumerate(path.read_text().splitlines(), 1) if "models:" in x)
    assert f"{path}:{line}: maintenance.models:" in text
    assert expected in text


def test_a_machine_the_cell_does_not_have_is_named_with_a_guess(tmp_path: Path) -> None:
    models = _trained_mill1()
    models["machines"]["mil1"] = models["machines"].pop("mill1")
    with pytest.raises(ConfigError) as err:
        load_cell(_cell(tmp_path, models))
    text = str(err.value)
    assert "machine 'mil1' is not a machine of the cell (did you mean 'mill1'?)" in text
    assert "wearing machines: mill1, mill2, lathe1" in text


def test_a_machine_that_does_not_wear_is_refused(tmp_path: Path) -> None:
    cfg = load_cell(DEMO)
    still = next(m.id for m in cfg.machines if m.degradation is None)
    models = _trained_mill1()
    models["machines"][still] = models["machines"]["mill1"]
    with pytest.raises(ConfigError) as err:
        load_cell(_cell(tmp_path, models))
    assert f"machine {still!r} has no degradation block" in str(err.value)


def test_autocell_up_refuses_a_bad_model_file_before_starting_anything(tmp_path: Path) -> None:
    cell = _cell(tmp_path, None)
    state = tmp_path / "state"
    done = subprocess.run(
        [sys.executable, "-m", "ops.cli", "up", str(cell), "--state-dir", str(state),
         "--quiet"], cwd=ROOT, capture_output=True, text=True, timeout=PROCESS_BOUND_S)
    assert done.returncode == 2, done.stderr
    assert "maintenance.models: model file" in done.stderr and "does not exist" in done.stderr
    assert not list(state.glob("events-*.jsonl"))          # no process was started


def test_autocell_run_starts_the_agents_from_the_cells_model_file_too(tmp_path: Path) -> None:
    from ops.maintenance import attach_to_run
    from sim_bridge.virtual import VirtualCell

    cfg = load_cell(_cell(tmp_path, _trained_mill1()))
    cell = VirtualCell(cfg, seed=1)
    attach_to_run(cell, "negotiated", None)         # what `autocell run` does for this cell
    agents: Any = cell.runner.agents
    assert agents["mill1"].maint.estimator.model == cell_models(cfg)["mill1"]
    assert agents["mill2"].maint.estimator.model == prior_model(
        cfg.machine("mill2").degradation)


# -- a host starts its estimators from the file and exports their health ---------------------

def _host(tmp_path: Path) -> Any:
    from agents.runtime.host import CellClock, Host
    from ops.supervisor import ensure_keys

    cfg = load_cell(_cell(tmp_path, _trained_mill1()))
    keys = ensure_keys(cfg, tmp_path)
    host = Host(cfg, "machines", keys_dir=keys, state_dir=tmp_path, clock=CellClock(0.0, 1.0),
                record_decisions=False, models=cell_models(cfg))
    return cfg, host


def test_a_host_starts_its_machine_agents_estimators_from_the_trained_models(
        tmp_path: Path) -> None:
    cfg, host = _host(tmp_path)
    try:
        trained = cell_models(cfg)["mill1"]
        assert host.agents["mill1"].maint.estimator.model == trained
        assert host.agents["mill2"].maint.estimator.model == prior_model(
            cfg.machine("mill2").degradation)
        rebuilt = host.runner.rebuild("mill1")      # a crashed agent is rebuilt the same way
        assert rebuilt is not host.agents["mill1"] and rebuilt.maint.estimator.model == trained
    finally:
        host.journal.close()


def test_a_hosts_health_gauges_read_its_agents_estimators(tmp_path: Path) -> None:
    from sim_bridge.maintenance.metrics import agent_families

    cfg, host = _host(tmp_path)
    try:
        windows = {m: host.agents[m].maint for m in ("mill1", "mill2", "lathe1")}
        for m, w in windows.items():            # a new machine, idle, by the cell file
            new = {k: c.idle for k, c in prior_model(cfg.machine(m).degradation)
                   .channels.items()}
            w.estimator.observe(30.0, new, busy=False, age_s=0.0)
        got = {f.name: {tuple(s.labels.values()): s.value for s in f.samples}
               for f in agent_families(host.agents, cfg.maintenance, 30.0)}
        health = got["autocell_machine_health_index"]
        assert health == {(m,): w.estimator.health() for m, w in windows.items()}
        # the same reading: new by the cell file's figures, worn by the trained model's
        assert health[("mill1",)] <= 1.0 - OFFSET_WEAR + 1e-9 < 0.99 <= health[("mill2",)]
        assert set(got["autocell_machine_remaining_life_seconds"]) == set(health)
        assert got["autocell_maintenance_windows_planned"] == {(): 0.0}
        assert got["autocell_part_stock"] == {}        # the stores agent runs on another host
    finally:
        host.journal.close()


def test_the_plants_gauges_leave_the_agents_series_to_the_hosts() -> None:
    from types import SimpleNamespace

    from sim_bridge.maintenance.metrics import families

    ctl = SimpleNamespace(machines={"mill1": None}, workshop=None,
                          escalations=[{"cause": "maintenance_no_part"}])
    got = {f.name: [s.value for s in f.samples]
           for f in families(ctl, 0.0, agents_elsewhere=True)}
    assert got.pop("autocell_maintenance_escalations") == [1.0]
    assert got == {name: [] for name in got} and len(got) == 6


# -- real processes --------------------------------------------------------------------------

def _scrape(port: int) -> dict[str, dict[tuple[str, ...], float]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    return {f.name: {tuple(s.labels.values()): s.value for s in f.samples}
            for f in text_string_to_metric_families(text)}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_under_up_the_trained_model_reaches_the_host_and_its_gauges(tmp_path: Path) -> None:
    src = _cell(tmp_path, _trained_mill1())
    cell = loopback_cell(src, tmp_path)         # same directory: the relative path holds
    data = yaml.safe_load(cell.read_text())
    host_port, sim_port = free_ports(2)
    next(h for h in data["hosts"] if h["name"] == "machines")["metrics_port"] = host_port
    data["sim"]["metrics_port"] = sim_port
    cell.write_text(yaml.safe_dump(data, sort_keys=False))
    assert set(cell_models(load_cell(cell))) == {"mill1"}
    state = tmp_path / "state"
    proc = subprocess.Popen(
        [sys.executable, "-m", "ops.cli", "up", str(cell), "--speed", "50", "--state-dir",
         str(state), "--quiet", "--timeout", f"{CELL_RUN_BOUND_S:g}"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def read_by_both() -> Any:
        """The host's gauges once mill1 and mill2 both have a reading behind their health."""
        if proc.poll() is not None:
            raise AssertionError(f"the cell ended (exit {proc.returncode}): "
                                 f"{proc.communicate()[1][-3000:]}")
        try:
            got = _scrape(host_port)
        except OSError as exc:                  # not serving yet
            return NotYet(str(exc))
        health = got.get("autocell_machine_health_index", {})
        seen = {m: health.get((m,)) for m in ("mill1", "mill2")}
        return got if all(v is not None and v < 1.0 for v in seen.values()) else NotYet(seen)

    try:
        got = wait_until("readings behind mill1's and mill2's health on the host", read_by_both)
        plant = _scrape(sim_port)
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=PROCESS_BOUND_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    health = got["autocell_machine_health_index"]
    # mill1's estimator is the trained model's: a new machine's readings look worn to it;
    # mill2's is the cell file's, to which the same early readings look new
    assert health[("mill1",)] < 0.5 < health[("mill2",)], health
    assert {("mill1",), ("mill2",), ("lathe1",)} <= set(
        got["autocell_machine_remaining_life_seconds"])
    assert ("autocell_maintenance_windows_planned" in got)
    # the plant exports the plant's figures and leaves the agents' series to the hosts
    assert plant["autocell_machine_state"]
    assert not plant.get("autocell_machine_health_index")
    # the last values stay on disk after the host stopped (ops/up.py final_metrics)
    final = (state / "metrics-machines.prom").read_text()
    assert 'autocell_machine_health_index{machine="mill1"}' in final


# -- the simulator's own policies under `up` ---------------------------------------------------

@pytest.mark.parametrize("policy", ["run_to_failure", "preventive", "condition_based",
                                    "predictive"])
def test_up_refuses_the_simulators_own_policies(policy: str) -> None:
    from types import SimpleNamespace

    from ops.up import check_up_policy
    from security.errors import ConfigurationError

    with pytest.raises(ConfigurationError) as err:
        check_up_policy(SimpleNamespace(maintenance_policy=policy, cell=str(DEMO)))
    assert f"`autocell run CELL --maintenance-policy {policy}` only" in str(err.value)


def test_up_takes_negotiated_only_from_a_cell_that_negotiates(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from ops.up import check_up_policy
    from security.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="must say `maintenance: {negotiate: true}`"):
        check_up_policy(SimpleNamespace(maintenance_policy="negotiated", cell=str(DEMO)))
    cell = _cell(tmp_path, _trained_mill1())
    check_up_policy(SimpleNamespace(maintenance_policy="negotiated", cell=str(cell)))
    check_up_policy(SimpleNamespace(maintenance_policy=None, cell=str(DEMO)))


def test_autocell_up_with_a_simulator_policy_exits_2_before_preparing_anything(
        tmp_path: Path) -> None:
    state = tmp_path / "state"
    done = subprocess.run(
        [sys.executable, "-m", "ops.cli", "up", str(DEMO), "--maintenance-policy", "predictive",
         "--state-dir", str(state), "--quiet"],
        cwd=ROOT, capture_output=True, text=True, timeout=PROCESS_BOUND_S)
    assert done.returncode == 2, done.stderr
    assert "the simulator's own policies run under `autocell run" in done.stderr
    assert not state.exists()
