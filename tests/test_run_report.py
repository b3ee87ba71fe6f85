"""The run report and KPI table as an automation engineer reads them (issue 18): a cancelled
order is counted as cancelled, not as escalated."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from ops.config import load_cell
from ops.config.fault_files import load_faults
from ops.run import print_summary
from sim_bridge.report import build_report
from sim_bridge.virtual import VirtualCell

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "cell_configs" / "demo_cell.yaml"
OUTAGE = ROOT / "cell_configs" / "faults" / "long_outage.yaml"


def test_a_cancelled_order_is_cancelled_not_escalated() -> None:
    cfg = load_cell(DEMO)
    cell = VirtualCell(cfg, seed=1, faults=load_faults(OUTAGE, cfg))
    cell.run(until=950.0)
    cell.decide("o-011/e1", "alice", "cancel", "no lathe today")
    cell.env.run(until=cell._all_done)
    cell.ended_by = "completed"
    report = build_report(cell)
    assert report["orders_cancelled"] == 1
    assert report["orders_escalated"] == 0
    assert report["kpis"]["cell"]["orders_cancelled"] == 1
    assert report["orders_completed"] + report["orders_cancelled"] == report["orders_total"]
    out = io.StringIO()
    print_summary(report, Console(file=out, width=200))
    rows = {line.split("│")[1].strip(): line.split("│")[2].strip()
            for line in out.getvalue().splitlines() if line.count("│") >= 3}
    assert rows["orders cancelled (by a supervisor)"] == "1"
    assert rows["orders escalated (non-routine)"] == "0"
    assert "1 order(s) cancelled" in " ".join(out.getvalue().split())


def test_a_planned_maintenance_stop_is_not_a_fault_for_healing() -> None:
    """A window's stop is logged as a ``fault`` with reason ``maintenance``: the work it
    handed back was moved on purpose, so it is no fault to detect or recover from."""
    from sim_bridge.report import healing_samples

    def log(reason: str) -> list[dict[str, object]]:
        return [{"ev": "award", "t": 0.0, "task": "o1/0", "winner": "m1"},
                {"ev": "fault", "t": 10.0, "machine": "m1", "reason": reason},
                {"ev": "reroute", "t": 10.5, "task": "o1/0"},
                {"ev": "award", "t": 11.0, "task": "o1/0", "winner": "m2"}]
    detect, recover, counts = healing_samples(log("wear"))
    assert counts["faults_total"] == 1 and detect == [0.5] and recover == [0.5]
    detect, _, counts = healing_samples(log("maintenance"))
    assert counts["faults_total"] == 0 and detect == []
