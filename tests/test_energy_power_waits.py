"""Power waits are deliberate waits, counted (sim_bridge/report.py ``power_wait_figures``).

By hand on a log: a wait runs from ``power_wait`` to the grant, the task leaving the
machine, its fault, or the end of the run; a repeated ask is the same wait.  In a capped
cell (the energy demo, no breakdowns) the machines wait for budget, the report counts it,
and no task is re-negotiated (``reroute``, ``lease_expired``) because of it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ops.config.loader import load_cell
from sim_bridge.invariants import parse
from sim_bridge.report import build_report, power_wait_figures
from sim_bridge.virtual import VirtualCell

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "cell_configs" / "demo_cell_energy.yaml"


def _wait(t: float, machine: str, task: str) -> dict[str, Any]:
    return {"t": t, "ev": "power_wait", "agent": machine, "task": task, "kw": 1.0}


def test_a_wait_ends_at_the_grant_the_hand_back_the_fault_or_the_end() -> None:
    evs = [
        _wait(10.0, "m1", "a/0"),
        _wait(12.0, "m1", "a/0"),                                   # asked again: same wait
        {"t": 15.0, "ev": "power_granted", "machine": "m1", "task": "a/0"},
        _wait(20.0, "m2", "b/0"),
        {"t": 26.0, "ev": "handed_back", "agent": "m2", "task": "b/0"},
        _wait(30.0, "m3", "c/0"),
        {"t": 37.0, "ev": "fault", "machine": "m3", "reason": "breakdown"},
        _wait(40.0, "m1", "d/0"),                                   # open until the end
        {"t": 45.0, "ev": "power_granted", "machine": "m2", "task": "d/0"},   # not m1's
    ]
    assert power_wait_figures(evs, end_at=50.0) == {"power_waits": 4,
                                                    "power_wait_s": 5.0 + 6.0 + 7.0 + 10.0}
    assert power_wait_figures([], end_at=50.0) == {"power_waits": 0, "power_wait_s": 0.0}


def test_a_capped_run_waits_for_power_and_reroutes_nothing_for_it() -> None:
    cell = VirtualCell(load_cell(DEMO), seed=1, breakdowns=False)
    cell.run()
    r = build_report(cell)
    evs = parse(cell.events)
    assert r["orders_completed"] == r["orders_total"]
    assert all(r["invariants"].values()), r["invariant_violations"]
    # machines did wait for budget, for a while (the demo's cap binds)
    assert r["power_waits"] == len({(e["agent"], e["task"]) for e in evs
                                    if e["ev"] == "power_wait"}) > 0
    assert r["power_wait_s"] > 60.0
    # ... and no task was handed back or re-negotiated: a wait is not a fault
    assert r["reroutes"] == r["lease_expiries"] == 0
    assert r["faults_total"] == 0 and r["deliberate_waits"] == 0
    assert not [e for e in evs if e["ev"] in ("reroute", "lease_expired", "handed_back")]


def test_an_uncapped_run_has_no_power_waits() -> None:
    cfg = load_cell(DEMO)
    assert cfg.energy is not None
    cfg = cfg.model_copy(update={"energy": cfg.energy.model_copy(update={"cap_leases": False})})
    cell = VirtualCell(cfg, seed=1, breakdowns=False)
    cell.run()
    r = build_report(cell)
    assert r["power_waits"] == 0 and r["power_wait_s"] == pytest.approx(0.0)
