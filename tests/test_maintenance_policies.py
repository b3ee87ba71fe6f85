"""Maintenance policies, crew and stores in the simulator (sim_bridge/maintenance/), end to end
on one seed of the demo cell, and the maintenance run invariants."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest

from agents.maintenance.rul import Channel, HealthModel
from ops.bench.maintenance import demo_cell, run_once, with_orders
from sim_bridge.maintenance import invariants
from sim_bridge.maintenance.policies import POLICIES, age_replacement_optimum, attach


def _rate(k: float, lam: float, cp: float, cf: float, t_end: float) -> float:
    t = np.linspace(0.0, t_end, 20_001)
    r = np.exp(-((t / lam) ** k))
    area = float(((r[1:] + r[:-1]) / 2 * np.diff(t)).sum())
    return float((cp * r[-1] + cf * (1 - r[-1])) / area)


def test_the_age_replacement_optimum_minimises_the_cost_rate() -> None:
    model = HealthModel(channels={}, weibull_shape=2.5, weibull_scale_s=1000.0)
    t_star = age_replacement_optimum(model, 1.0, 10.0)
    assert 200.0 < t_star < 1000.0
    best = _rate(2.5, 1000.0, 1.0, 10.0, t_star)
    assert best <= _rate(2.5, 1000.0, 1.0, 10.0, 0.8 * t_star)
    assert best <= _rate(2.5, 1000.0, 1.0, 10.0, 1.25 * t_star)
    assert math.isinf(age_replacement_optimum(
        HealthModel(channels={}, weibull_shape=0.9, weibull_scale_s=1000.0), 1.0, 10.0))


def _models() -> dict[str, HealthModel]:
    """Models as training would find them, from the demo cell's own settings."""
    out = {}
    for m in demo_cell().machines:
        d = m.degradation
        if d is None:
            continue
        out[m.id] = HealthModel(
            channels={"vibration_mm_s": Channel(d.vibration_mm_s.idle, d.vibration_mm_s.busy,
                                                d.vibration_mm_s.per_wear, d.vibration_mm_s.noise),
                      "temperature_c": Channel(d.temperature_c.idle, d.temperature_c.busy,
                                               d.temperature_c.per_wear, d.temperature_c.noise)},
            weibull_shape=4.0, weibull_scale_s=1.1 * d.mttf_s)
    return out


@pytest.fixture(scope="module")
def runs() -> dict[str, tuple[dict[str, float], dict[str, Any]]]:
    cfg = with_orders(demo_cell(), 1, 1.5)
    return {p: run_once(cfg, 1, p, _models(), 1.5 * 3600.0) for p in POLICIES}


def test_every_policy_keeps_the_run_invariants(runs: dict[str, Any]) -> None:
    for policy, (_, rep) in runs.items():
        assert all(rep["invariants"].values()), (policy, rep["invariant_violations"])
        assert "no_part_used_twice" in rep["invariants"]


def test_the_policies_do_what_they_say(runs: dict[str, Any]) -> None:
    fig = {p: f for p, (f, _) in runs.items()}
    assert fig["run_to_failure"]["planned_maintenances"] == 0
    assert fig["run_to_failure"]["unplanned_failures"] > 0
    for p in ("condition_based", "predictive"):
        assert fig[p]["planned_maintenances"] > 0
        assert fig[p]["unplanned_failures"] < fig["run_to_failure"]["unplanned_failures"]
    for f in fig.values():
        assert f["total_cost"] > 0 and 0 <= f["technician_utilisation"] <= 1


def _windows(policy: str) -> tuple[list[tuple[str, float, float]], dict[str, Any]]:
    """(machine, start, latest safe start) of each planned job begun in a 1.5 h run of
    ``policy`` on seed 1, and the run report."""
    from ops.bench.maintenance import negotiating
    from sim_bridge.report import build_report
    from sim_bridge.virtual import VirtualCell

    cfg = with_orders(demo_cell(), 1, 1.5)
    cell = VirtualCell(negotiating(cfg) if policy == "negotiated" else cfg, seed=1)
    attach(cell, policy, _models())
    cell.run(until=1.5 * 3600.0)
    latest: dict[str, float] = {}
    out = []
    for e in (json.loads(line) for line in cell.events):
        if e["ev"] == "maintenance_planned":                    # the simulator's plan
            latest[e["machine"]] = e["latest_start_at"]
        elif e["ev"] == "maint_window":                         # the agent's lease
            assert e["start_at"] <= e["latest_start_at"] and not e["late"], e
            latest[e["agent"]] = e["latest_start_at"]
        elif e["ev"] == "maintenance_start" and e["kind"] == "planned":
            out.append((e["machine"], e["t"], latest.pop(e["machine"])))
    return out, build_report(cell)


@pytest.mark.parametrize("policy", ["predictive", "negotiated"])
def test_the_predictive_window_starts_before_its_latest_safe_start(policy: str) -> None:
    """Both predictive policies (the simulator's central one and the agents' leased
    windows) begin each planned job no later than the latest safe start they planned
    it for — on this seed with a free crew, so no escalation is needed."""
    windows, rep = _windows(policy)
    assert len(windows) >= 2, windows
    for machine, start, latest in windows:
        assert start <= latest + 1e-6, (machine, start, latest)
    assert all(rep["invariants"].values()), rep["invariant_violations"]
    if policy == "negotiated":
        assert rep["invariants"]["window_before_latest_safe_start_or_escalated"]


def _log(*events: tuple[float, str, dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"t": t, "ev": ev, **f} for t, ev, f in events]


def test_the_invariants_catch_what_they_guard() -> None:
    evs = _log(
        (0.0, "maintenance_start", {"machine": "m1", "technician": "tech1", "part_serial": "p#1"}),
        (1.0, "fault", {"machine": "m1", "reason": "maintenance"}),
        (2.0, "op_start", {"machine": "m1", "task": "o/0"}),
        (3.0, "maintenance_start", {"machine": "m2", "technician": "tech1", "part_serial": "p#2"}),
        (4.0, "repaired", {"machine": "m1"}),
        (4.0, "maintenance_done", {"machine": "m1", "technician": "tech1", "part_serial": "p#1"}),
        (5.0, "maintenance_done", {"machine": "m2", "technician": "tech1", "part_serial": "p#1"}))
    found = invariants.check(evs)
    assert len(found["no_operation_inside_maintenance_window"]) == 1
    assert len(found["technician_capacity_respected"]) == 1
    assert len(found["no_part_used_twice"]) == 1
    assert invariants.check(_log((0.0, "op_start", {"machine": "m", "task": "t"}))) == {}
    assert json.dumps(found)      # plain data for the run report


def test_a_late_leased_window_must_have_been_escalated() -> None:
    late = (10.0, "maint_window", {"agent": "m1", "job": "m1/m1", "technician": "tech1",
                                   "start_at": 500.0, "end_at": 800.0,
                                   "latest_start_at": 400.0, "late": True})
    job = [(0.0, "maintenance_start", {"machine": "m1", "technician": "tech1",
                                       "part_serial": "p#1", "kind": "planned"}),
           (1.0, "maint_needed", {"agent": "m1", "job": "m1/m1", "latest_start_at": 400.0})]

    def found(*more: tuple[float, str, dict[str, Any]]) -> list[str]:
        return invariants.check(_log(*job, *more))["window_before_latest_safe_start_or_escalated"]

    (v,) = found(late)                                          # nobody asked: caught
    assert "m1 booked m1/m1 from t=500.0, past its latest safe start t=400.0" in v
    asked = (10.0, "escalate", {"agent": "m1", "escalation": "m1/e1",
                                "cause": "maintenance_no_window", "resource": "m1"})
    assert found(late, asked) == []                             # raised with the booking
    no_part = (5.0, "escalate", {"agent": "m1", "escalation": "m1/e1",
                                 "cause": "maintenance_no_part", "resource": "m1"})
    assert found(no_part, late) == []                           # raised for the job before
    other = (0.5, "escalate", {"agent": "m1", "escalation": "m1/e0",
                               "cause": "repeat_faults", "resource": "m1"})
    assert found(other, late) == []                             # a case still open
    decided = (2.0, "decision_applied", {"agent": "m1", "escalation": "m1/e0"})
    assert len(found(other, decided, late)) == 1                # closed before: caught
    elsewhere = (10.0, "escalate", {"agent": "m2", "escalation": "m2/e1",
                                    "cause": "maintenance_no_window", "resource": "m2"})
    assert len(found(late, elsewhere)) == 1                     # another machine's case
    on_time = (10.0, "maint_window", {**late[2], "start_at": 300.0, "late": False})
    assert found(on_time) == []
    # a run nobody escalates in (no console) is not asked to
    assert "window_before_latest_safe_start_or_escalated" not in invariants.check(
        _log(*job, late), escalating=False)


def test_the_kpis_split_planned_and_unplanned_downtime() -> None:
    from sim_bridge.kpis import KpiSpec, compute

    spec = KpiSpec.from_config(demo_cell())
    evs = _log((100.0, "fault", {"machine": "mill1", "reason": "maintenance"}),
               (200.0, "repaired", {"machine": "mill1"}),
               (200.0, "maintenance_done", {"machine": "mill1", "kind": "planned"}),
               (300.0, "fault", {"machine": "mill1", "reason": "wear"}),
               (600.0, "repaired", {"machine": "mill1"}))
    row = compute(evs, spec, end_at=1000.0)["machines"]["mill1"]
    assert row["down_planned_s"] == 100.0 and row["down_unplanned_s"] == 300.0
    assert row["faults"] == 1 and row["planned_maintenances"] == 1
    assert row["mtbf_s"] == 600.0 and row["mttr_s"] == 300.0
    plain = compute(evs[3:], spec, end_at=1000.0)["machines"]["mill1"]
    assert "down_planned_s" not in plain            # no maintenance: the old keys only


def test_the_report_counts_planned_stops_apart_from_faults(runs: dict[str, Any]) -> None:
    """A planned stop is a ``fault`` event with reason ``maintenance``; the report's
    ``faults`` counts failures only, as the KPIs and the bench do."""
    import io

    from rich.console import Console

    from ops.run import print_summary

    for policy, (fig, rep) in runs.items():
        cell = rep["kpis"]["cell"]
        assert rep["faults"] == cell["faults"] == fig["unplanned_failures"], policy
        assert rep["planned_maintenances"] == cell.get("planned_maintenances", 0), policy
    _, rep = runs["predictive"]
    assert rep["planned_maintenances"] > 0
    out = io.StringIO()
    print_summary(rep, Console(file=out, width=250))
    rows = {line.split("│")[1].strip(): line.split("│")[2].strip()
            for line in out.getvalue().splitlines() if line.count("│") >= 3}
    assert rows["planned maintenance stops"] == str(rep["planned_maintenances"])
    assert rows["faults / re-routes / lease expiries"].startswith(f"{rep['faults']} /")


def test_the_kpi_table_shows_planned_and_unplanned_downtime_when_there_is_maintenance() -> None:
    import io

    from rich.console import Console

    from ops.run import kpi_table
    from sim_bridge.kpis import KpiSpec, compute

    spec = KpiSpec.from_config(demo_cell())
    evs = _log((100.0, "fault", {"machine": "mill1", "reason": "maintenance"}),
               (220.0, "repaired", {"machine": "mill1"}),
               (220.0, "maintenance_done", {"machine": "mill1", "kind": "planned"}),
               (300.0, "fault", {"machine": "mill1", "reason": "wear"}),
               (600.0, "repaired", {"machine": "mill1"}))

    def table(events: list[dict[str, Any]]) -> dict[str, str]:
        out = io.StringIO()
        Console(file=out, width=250).print(kpi_table(compute(events, spec, end_at=1000.0)))
        lines = [" ".join(line.split()) for line in out.getvalue().splitlines()]
        return {"header": next(x for x in lines if x.startswith("OEE")),
                "mill1": next(x for x in lines if x.startswith("mill1"))}

    split = table(evs)
    assert "MTBF MTTR down plan down unpl unit/h" in split["header"]
    # MTBF (unplanned failures only) 9.7 min, MTTR 5 min, planned 2 min, unplanned 5 min
    assert "9.7 min 5.0 min 2.0 min 5.0 min 0.0" in split["mill1"]
    plain = table(evs[3:])                  # a failure, no maintenance: no split
    assert "MTBF MTTR unit/h" in plain["header"] and "plan" not in plain["header"]


@pytest.mark.slow
def test_the_bench_prints_the_json_of_the_issue() -> None:
    from ops.bench.maintenance import METRICS, run

    notes: list[str] = []
    out = run(2, hours=0.5, cells=("demo",), train_seeds=1, progress=notes.append)
    assert out["seeds"] == 2 and notes
    assert notes[-1].startswith("demo: seed 2/2 done")     # the cell's name, not a policy's
    cell = out["cells"]["demo-cell-maintenance"]
    # the issue's keys; its "predictive" is the agents' (negotiated) policy
    baselines = ("run_to_failure", "preventive", "condition_based")
    assert set(cell["policies"]) == {*baselines, "predictive", "predictive_central"}
    for figures in cell["policies"].values():
        assert set(figures) == set(METRICS)
        assert {"mean", "ci95"} <= set(figures["unplanned_failures"])
    assert set(cell["paired"]) == ({f"predictive-{b}" for b in (*baselines,
                                                                "predictive_central")}
                                   | {f"predictive_central-{b}" for b in baselines})
    assert cell["invariant_violations"] == []
    assert "negotiated" not in json.dumps(out)
