"""Maintenance under ``autocell up``: where the crew runs, and the negotiated policy on real
processes (docs/maintenance.md, "Operations").

The first tests are fast: ``hosts[].agents`` accepts every agent the cell's build makes —
the technician crew of a negotiating cell, the energy manager of a capped one — and names
the known ids, with the line, for one it does not make.

The slow one runs the maintenance demo with ``negotiate: true`` under ``autocell up``
(real processes, ZeroMQ, ``--speed 50``), the crew alone on a host of its own, and kills
that host with SIGKILL while a machine is in a maintenance job: the supervisor restarts
it from its journal; every order is done, the job is done once, no part is used twice, no
technician is on two jobs, no operation started in a leased window.  It waits on events
in the processes' logs, never for a fixed time.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers.waiting import CELL_RUN_BOUND_S, PROCESS_BOUND_S, wait_until

from agents.runtime.host import routes_of
from ops.bench.healing import loopback_cell
from ops.config import ConfigError, load_cell
from security.errors import ConfigurationError
from sim_bridge.maintenance.invariants import check as maintenance_invariants

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "cell_configs" / "demo_cell_maintenance.yaml"


def _negotiating(tmp_path: Path, *, negotiate: bool = True, extra: list[str] | None = None,
                 name: str = "cell.yaml") -> Path:
    """The maintenance demo with a fourth host, ``crew-host``, listing ``crew`` (and
    ``extra``)."""
    data = yaml.safe_load(DEMO.read_text())
    data["maintenance"]["negotiate"] = negotiate
    data["hosts"].append({"name": "crew-host", "endpoint": "tcp://127.0.0.1:5604",
                          "agents": ["crew", *(extra or [])]})
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_hosts_agents_places_the_crew(tmp_path: Path) -> None:
    cfg = load_cell(_negotiating(tmp_path))
    assert cfg.host_of("crew") == "crew-host"
    assert routes_of(cfg)["crew"] == "tcp://127.0.0.1:5604"
    assert cfg.host_of("mill1") == "machines"


def test_hosts_agents_places_the_stores_agent_beside_the_crew(tmp_path: Path) -> None:
    cfg = load_cell(_negotiating(tmp_path, extra=["stores"]))
    assert cfg.host_of("stores") == cfg.host_of("crew") == "crew-host"


def test_hosts_agents_places_the_energy_manager(tmp_path: Path) -> None:
    data = yaml.safe_load((ROOT / "cell_configs" / "demo_cell_energy.yaml").read_text())
    data["hosts"][-1].setdefault("agents", []).append("energy")
    path = tmp_path / "energy.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    cfg = load_cell(path)
    assert cfg.host_of("energy") == data["hosts"][-1]["name"]
    assert routes_of(cfg)["energy"] == data["hosts"][-1]["endpoint"]


def test_an_agent_the_cell_does_not_build_is_named_with_its_line(tmp_path: Path) -> None:
    path = _negotiating(tmp_path, extra=["ghost"])
    with pytest.raises(ConfigError) as err:
        load_cell(path)
    text = str(err.value)
    line = next(i for i, x in enumerate(path.read_text().splitlines(), 1) if "ghost" in x)
    assert f"{path}:{line}: hosts[3].agents[1]: unknown agent 'ghost'" in text
    assert "unknown agent 'ghost'" in text and "(known: crew, stores, mill1" in text


def test_the_crew_of_a_cell_that_does_not_negotiate_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_cell(_negotiating(tmp_path, negotiate=False))
    text = str(err.value)
    assert "unknown agent 'crew'" in text and "maintenance.negotiate is true" in text


# -- real processes ----------------------------------------------------------------------------

def _logs(state: Path) -> dict[str, list[dict[str, Any]]]:
    out = {}
    for p in sorted(state.glob("events-*.jsonl")):
        lines = p.read_text().splitlines()
        if lines and not lines[-1].endswith("}"):
            lines = lines[:-1]                    # a line being written: next time
        out[p.stem.removeprefix("events-")] = [json.loads(x) for x in lines if x.strip()]
    return out


def _running_job(proc: subprocess.Popen[str], state: Path) -> Any:
    """A check: the job a machine has begun and not finished, or a failure at once if the
    cell ended without one."""
    def check() -> Any:
        evs = [e for es in _logs(state).values() for e in es]
        done = {e["job"] for e in evs if e["ev"] == "maint_job_done"}
        begun = [e["job"] for e in evs if e["ev"] == "maint_begin" and e["job"] not in done]
        if not begun and proc.poll() is not None:
            _, err = proc.communicate()
            raise AssertionError(f"the cell ended (exit {proc.returncode}) before a "
                                 f"maintenance job; {err[-3000:]}")
        return begun[0] if begun else None
    return check


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_negotiated_maintenance_under_up_survives_a_kill_9_of_the_technicians(
        tmp_path: Path) -> None:
    src = _negotiating(tmp_path, name="src.yaml")
    data = yaml.safe_load(src.read_text())
    data["hosts"][-1]["name"] = "technicians"
    src.write_text(yaml.safe_dump(data, sort_keys=False))
    cell = loopback_cell(src, tmp_path)
    assert load_cell(cell).host_of("crew") == "technicians"
    state = tmp_path / "state"
    proc = subprocess.Popen(
        [sys.executable, "-m", "ops.cli", "up", str(cell), "--speed", "50", "--state-dir",
         str(state), "--quiet", "--timeout", f"{CELL_RUN_BOUND_S:g}"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        job = wait_until("a machine in a maintenance job", _running_job(proc, state))
        status = state / "status-technicians.json"
        pid = json.loads(status.read_text())["pid"]
        os.kill(pid, signal.SIGKILL)
        wait_until("the technicians' host back", lambda: json.loads(
            status.read_text()).get("pid") not in (None, pid))
        out, err = proc.communicate(timeout=PROCESS_BOUND_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    report = json.loads((state / "report.json").read_text())
    assert proc.returncode == 0, err[-3000:]
    assert report["orders_completed"] == report["orders_total"] == 24
    assert all(report["invariants"].values()), report["invariant_violations"]
    died = [e["process"] for e in report["supervisor_events"] if e["ev"] == "process_died"]
    assert died == ["technicians"]
    logs = _logs(state)
    evs = sorted((e for es in logs.values() for e in es), key=lambda e: e["t"])
    # the plant did the agents' jobs: no part twice, no technician on two jobs, no
    # operation started in a leased window (sim_bridge/maintenance/invariants.py)
    assert maintenance_invariants(evs) == {k: [] for k in maintenance_invariants(evs)}
    # nothing lost, nothing done twice: the job running at the kill ended once, and every
    # job that ended, ended once
    done = [e["job"] for e in evs if e["ev"] == "maint_job_done"]
    assert job in done and len(done) == len(set(done))
    sent = [e["job"] for e in logs["technicians"] if e["ev"] == "maint_technician_sent"]
    assert len(sent) == len(set(sent)), sent
    started = [e for e in logs["sim"] if e["ev"] == "maintenance_start" and
               e.get("kind") == "planned"]
    assert len(started) >= len(done)
    assert {e["boot"] for e in logs["technicians"] if e["ev"] == "host_start"} == {1, 2}


# -- the bench's seed log (ops/bench/maintenance.py) -------------------------------------------

def test_a_bench_stopped_early_is_summarised_from_its_seed_log(tmp_path: Path) -> None:
    from ops.bench.maintenance import BENCH_POLICIES, METRICS, from_seed_log

    log = tmp_path / "seeds.jsonl"
    lines = [{"cell": "c", "machines": 5, "seed": s, "hours": 2.0, "violations": [], "keys": 2,
              "policies": {p: {m: float(s + k) for m in METRICS}
                           for k, p in enumerate(BENCH_POLICIES)}} for s in (1, 2, 3)]
    log.write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = from_seed_log(log)
    cell = out["cells"]["c"]
    assert out["seeds"] == cell["seeds"] == 3
    names = list(BENCH_POLICIES)
    assert cell["policies"]["run_to_failure"]["oee"]["mean"] == 2.0
    assert cell["paired"]["predictive-predictive_central"]["total_cost"]["mean"] == (
        names.index("predictive") - names.index("predictive_central"))
    assert set(cell["policies"]) == set(names)


def test_an_old_seed_log_is_read_with_its_old_names(tmp_path: Path) -> None:
    """Before the bench took the issue's names (no ``keys``), its lines held the
    simulator's: ``negotiated`` (the agents', now ``predictive``) and ``predictive``
    (the central one, now ``predictive_central``)."""
    from ops.bench.maintenance import METRICS, from_seed_log
    from sim_bridge.maintenance.policies import POLICIES

    old = {"run_to_failure": 1.0, "preventive": 2.0, "condition_based": 3.0,
           "predictive": 40.0, "negotiated": 50.0}
    assert set(old) == set(POLICIES)
    log = tmp_path / "old.jsonl"
    log.write_text("".join(json.dumps({"cell": "c", "machines": 5, "seed": s, "hours": 2.0,
                                       "violations": [],
                                       "policies": {p: {m: v + s for m in METRICS}
                                                    for p, v in old.items()}}) + "\n"
                           for s in (1, 2)))
    cell = from_seed_log(log)["cells"]["c"]
    assert cell["policies"]["predictive"]["total_cost"]["mean"] == 51.5
    assert cell["policies"]["predictive_central"]["total_cost"]["mean"] == 41.5
    assert cell["paired"]["predictive-predictive_central"]["oee"]["mean"] == 10.0
    assert cell["paired"]["predictive_central-run_to_failure"]["oee"]["mean"] == 39.0
    assert "negotiated" not in json.dumps(cell)
    bad = tmp_path / "future.jsonl"
    bad.write_text(json.dumps({"cell": "c", "machines": 5, "seed": 1, "hours": 2.0,
                               "violations": [], "keys": 3, "policies": {}}) + "\n")
    with pytest.raises(ConfigurationError, match="keys 3"):
        from_seed_log(bad)


def test_the_bench_intervals_use_the_exact_student_t(tmp_path: Path) -> None:
    """95 % intervals with Student t's quantile for n - 1 degrees of freedom (scipy), not a
    rounded table: 20 seeds take t(0.975, 19) = 2.093, where the table's row for 15
    degrees of freedom gave 2.131 (about 2 % wider)."""
    import math
    import statistics

    from ops.bench.maintenance import METRICS, from_seed_log

    xs = [float(k * k % 7) for k in range(20)]
    lines = [{"cell": "c", "machines": 5, "seed": s, "hours": 1.0, "violations": [],
              "keys": 2, "policies": {p: {m: xs[s] for m in METRICS}
                                      for p in ("run_to_failure", "preventive",
                                                "condition_based", "predictive",
                                                "predictive_central")}}
             for s in range(20)]
    log = tmp_path / "seeds.jsonl"
    log.write_text("".join(json.dumps(x) + "\n" for x in lines))
    got = from_seed_log(log)["cells"]["c"]["policies"]["predictive"]["oee"]
    half = (got["ci95"][1] - got["ci95"][0]) / 2
    se = statistics.stdev(xs) / math.sqrt(20)
    assert half == pytest.approx(2.093024 * se, abs=2e-6)
    assert half < 2.131 * se * 0.985
