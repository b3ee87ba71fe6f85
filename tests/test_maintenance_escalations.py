"""Maintenance escalations and the health gauges (sim_bridge/maintenance/escalations.py,
sim_bridge/maintenance/metrics.py): the mis-predicting fault scenario shipped in
cell_configs/faults/, the three escalation cases, and what /metrics reads."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from ops.bench.maintenance import demo_cell, with_orders
from ops.config.fault_files import load_faults
from sim_bridge.maintenance.escalations import CASES, OPTIONS
from sim_bridge.maintenance.metrics import families
from sim_bridge.maintenance.policies import attach
from sim_bridge.report import build_report
from sim_bridge.virtual import VirtualCell
from test_maintenance_policies import _models

SCENARIO = Path(__file__).resolve().parents[1] / "cell_configs" / "faults" / \
    "mispredicted_failure.yaml"


def _run(policy: str = "predictive", faults: bool = True, hours: float = 1.0,
         **params: Any) -> tuple[VirtualCell, Any, list[dict[str, Any]]]:
    cfg = with_orders(demo_cell(), 1, hours)
    cell = VirtualCell(cfg, seed=1, faults=load_faults(SCENARIO, cfg) if faults else None)
    ctl = attach(cell, policy, _models(), **params)
    cell.run(until=hours * 3600.0)
    return cell, ctl, [json.loads(line) for line in cell.events]


@pytest.fixture(scope="module")
def mispredicted() -> tuple[VirtualCell, Any, list[dict[str, Any]]]:
    return _run()


def test_the_mispredicting_scenario_records_the_bad_prediction(mispredicted: Any) -> None:
    cell, _ctl, evs = mispredicted
    miss = [e for e in evs if e["ev"] == "prediction_miss" and e["machine"] == "mill1"]
    assert miss and miss[0]["t"] == 600.0 and miss[0]["reason"] == "injected"
    assert miss[0]["early_by_s"] > 0 and miss[0]["t"] < miss[0]["fail_by"]
    esc = [e for e in evs if e["ev"] == "maintenance_escalation"
           and e["cause"] == "maintenance_prediction_miss" and e["resource"] == "mill1"]
    assert len(esc) == 1 and esc[0]["t"] == 600.0
    rep = build_report(cell)
    assert rep["prediction_misses"] >= 1
    assert rep["maintenance_escalations_by_cause"]["maintenance_prediction_miss"] >= 1
    assert all(rep["invariants"].values()), rep["invariant_violations"]


def test_the_mispredicting_scenario_escalates_under_the_agents_policy_too() -> None:
    """Negotiated: mill1's agent sees the injected seizure come before the 5 % quantile of
    the life its estimator predicted, logs the miss and raises the case to the console,
    which decides the safe default when nobody answers."""
    from ops.bench.maintenance import negotiating
    from ops.maintenance import models_from_cell

    cfg = negotiating(with_orders(demo_cell(), 1, 1.0))
    cell = VirtualCell(cfg, seed=1, faults=load_faults(SCENARIO, cfg))
    attach(cell, "negotiated", models_from_cell(cfg))      # what `autocell run` does
    cell.run(until=3600.0)
    evs = [json.loads(line) for line in cell.events]
    (miss,) = [e for e in evs if e["ev"] == "prediction_miss"]
    assert (miss["agent"], miss["reason"], miss["t"]) == ("mill1", "injected", 600.0)
    assert miss["early_by_s"] > 0 and math.isfinite(miss["fail_by"])
    (raised,) = [e for e in evs if e["ev"] == "escalation_raised"]
    assert (raised["cause"], raised["resource"]) == ("maintenance_prediction_miss", "mill1")
    (decided,) = [e for e in evs if e["ev"] == "maint_decision"]
    assert (decided["agent"], decided["option"]) == ("mill1", "stop_now")
    rep = build_report(cell)
    assert rep["prediction_misses"] == 1
    assert rep["escalations_by_cause"] == {"maintenance_prediction_miss": 1}
    assert all(rep["invariants"].values()), rep["invariant_violations"]


def test_an_injected_failure_before_any_prediction_is_no_miss() -> None:
    """Without a finite prediction there is nothing to miss: the same seizure at once, before
    mill1's first reading, is a breakdown like any other."""
    from agents.cell.faults import FaultScenario
    from ops.bench.maintenance import negotiating
    from ops.maintenance import models_from_cell

    cfg = negotiating(with_orders(demo_cell(), 1, 0.5))
    early = FaultScenario(name="early", breakdowns=[{"resource": "mill1", "at_s": 0.0,
                                                     "repair_s": 900.0}])
    cell = VirtualCell(cfg, seed=1, faults=early)
    attach(cell, "negotiated", models_from_cell(cfg))
    cell.run(until=1800.0)
    evs = [json.loads(line) for line in cell.events]
    assert [e for e in evs if e["ev"] == "fault" and e.get("machine") == "mill1"][0][
        "reason"] == "injected"
    assert not [e for e in evs if e["ev"] in ("prediction_miss", "escalation_raised")]


def test_every_escalation_carries_the_options_and_a_safe_default(mispredicted: Any) -> None:
    _cell, ctl, evs = mispredicted
    raised = [e for e in evs if e["ev"] == "maintenance_escalation"]
    assert raised and len(raised) == len(ctl.escalations)
    for e in raised:
        assert [o["id"] for o in e["options"]] == list(OPTIONS)
        assert e["safe_default"] in OPTIONS and e["safe_default"] == CASES[e["cause"]][1]
        assert e["deadline_at"] == pytest.approx(e["t"] + 600.0)
        assert not any(x["ev"] == "escalation_raised" for x in evs)   # not the console's


def test_a_run_without_faults_or_estimator_raises_no_miss() -> None:
    _cell, ctl, evs = _run("preventive", faults=False)
    assert not ctl.escalations
    assert not any(e["ev"] in ("prediction_miss", "maintenance_escalation") for e in evs)


def test_no_part_before_the_latest_safe_start_is_escalated() -> None:
    cfg = with_orders(demo_cell(), 1, 1.0)
    d = cfg.model_dump(mode="json", exclude_none=True)
    for p in d["maintenance"]["parts"].values():
        p.update(stock=0, reorder_point=0, order_qty=1)      # an empty shelf, never reordered
    from ops.config import cell_from_dict
    cell = VirtualCell(cell_from_dict(d), seed=1)
    ctl = attach(cell, "predictive", _models())
    cell.run(until=3600.0)
    causes = {e["cause"] for e in ctl.escalations}
    assert "maintenance_no_part" in causes
    e = next(e for e in ctl.escalations if e["cause"] == "maintenance_no_part")
    assert e["safe_default"] == "expedite_part" and e["context"]["delivery_at"] is None


def test_no_technician_before_the_latest_safe_start_is_escalated() -> None:
    cfg = with_orders(demo_cell(), 1, 1.5)
    d = cfg.model_dump(mode="json", exclude_none=True)
    d["maintenance"]["technicians"] = 1
    from ops.config import cell_from_dict
    cell = VirtualCell(cell_from_dict(d), seed=1)
    ctl = attach(cell, "predictive", _models(), slot_s=0.0)
    ws = ctl.workshop
    ws.crew.items.clear()                   # the only technician is away all shift
    cell.run(until=1.5 * 3600.0)
    no_window = [e for e in ctl.escalations if e["cause"] == "maintenance_no_window"]
    assert no_window and no_window[0]["safe_default"] == "stop_now"
    assert no_window[0]["context"]["technicians_free"] == 0
    assert no_window[0]["deadline_at"] - 600.0 > no_window[0]["context"]["latest_start_at"]


def test_the_health_gauges_read_the_policy_at_scrape_time(mispredicted: Any) -> None:
    cell, ctl, _evs = mispredicted
    got = {f.name: {tuple(s.labels.values()): s.value for s in f.samples}
           for f in families(ctl, cell.env.now)}
    assert set(got["autocell_machine_health_index"]) == {("mill1",), ("mill2",), ("lathe1",)}
    assert all(0.0 <= v <= 1.0 for v in got["autocell_machine_health_index"].values())
    assert all(v >= 0 and math.isfinite(v)
               for v in got["autocell_machine_remaining_life_seconds"].values())
    assert set(got["autocell_part_stock"]) == {("spindle_bearing",), ("chuck_bearing",)}
    assert got["autocell_maintenance_windows_planned"][()] == sum(
        pm.due_at is not None for pm in ctl.machines.values())
    assert got["autocell_maintenance_escalations"][("maintenance_prediction_miss",)] >= 1


def test_a_cell_without_a_maintenance_policy_exports_no_health_gauges() -> None:
    from ops.metrics import maintenance_families
    fams = list(maintenance_families(None, 0.0))
    assert fams and all(not f.samples for f in fams)


def test_autocell_run_plays_the_scenario_under_a_maintenance_policy(tmp_path: Path) -> None:
    from ops.cli import main
    cell = str(Path(__file__).resolve().parents[1] / "cell_configs" /
               "demo_cell_maintenance.yaml")
    out = tmp_path / "r.json"
    assert main(["run", cell, "--faults", str(SCENARIO), "--maintenance-policy", "predictive",
                 "--quiet", "--report", str(out)]) == 0
    rep = json.loads(out.read_text())
    assert rep["prediction_misses"] >= 1 and all(rep["invariants"].values())
    plain = tmp_path / "p.json"
    assert main(["run", cell, "--faults", str(SCENARIO), "--quiet", "--report", str(plain)]) == 0
    assert "prediction_misses" not in json.loads(plain.read_text())   # no policy: as before


def test_the_prior_models_from_the_cell_file_have_the_configured_mean_life() -> None:
    from ops.maintenance import models_from_cell
    cfg = demo_cell()
    models = models_from_cell(cfg)
    for m in cfg.machines:
        if m.degradation is None:
            assert m.id not in models
            continue
        k, lam = models[m.id].weibull_shape, models[m.id].weibull_scale_s
        assert lam * math.gamma(1 + 1 / k) == pytest.approx(m.degradation.mttf_s)


def test_the_run_registry_exports_the_health_row_of_a_maintained_cell() -> None:
    from ops.run import virtual_metrics
    cfg = with_orders(demo_cell(), 1, 0.5)
    cell = VirtualCell(cfg, seed=1)
    metrics = virtual_metrics(cell)
    attach(cell, "predictive", _models())
    cell.run(until=900.0)
    got = {f.name: f.samples for f in metrics.registry.collect()}
    assert {s.labels["machine"] for s in got["autocell_machine_health_index"]} == {
        "mill1", "mill2", "lathe1"}
    assert {s.labels["part"] for s in got["autocell_part_stock"]} == {
        "spindle_bearing", "chuck_bearing"}
