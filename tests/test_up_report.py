"""`autocell up`'s report.json carries the KPIs `autocell run` reports (issue 18), computed
from the processes' event logs: here a virtual run's log is split the way `up` writes it (the
plant's events, each host's order events) and both reports must agree."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ops.config import load_cell
from ops.supervisor import Supervisor
from sim_bridge.report import build_report
from sim_bridge.virtual import VirtualCell

ROOT = Path(__file__).resolve().parents[1]
CELLS = [ROOT / "cell_configs" / "demo_cell.yaml", ROOT / "cell_configs" / "demo_cell_energy.yaml"]
ORDER_EVENTS = ("order_completed", "order_cancelled", "lot_split", "order_released", "award")


def split_like_up(cell: VirtualCell, state: Path) -> None:
    """The plant's events to events-sim.jsonl, the order agents' to their host's file."""
    files: dict[str, list[str]] = {}
    for line in cell.events:
        e = json.loads(line)
        host = (cell.cfg.host_of(e["order"]) if e["ev"] in ORDER_EVENTS and "order" in e
                else "sim") or "sim"
        files.setdefault(host, []).append(line)
    for name, lines in files.items():
        (state / f"events-{name}.jsonl").write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("path", CELLS, ids=lambda p: p.name)
def test_up_reports_the_kpis_run_reports(tmp_path: Path, path: Path) -> None:
    cfg = load_cell(path)
    cell = VirtualCell(cfg, seed=1)
    cell.run()
    ran = build_report(cell)
    split_like_up(cell, tmp_path)
    sup = Supervisor(cfg, str(path), state_dir=tmp_path, speed=10.0, faults_path=None,
                     faults=None, max_restarts=3, restart_window_s=60.0, until_s=None,
                     timeout_s=None, log=lambda *_: None)
    up = sup.production(sup.event_log("sim"), all_done=True)
    for key in ("makespan", "mean_flow_time", "tardiness_total", "tardy_orders", "kpis"):
        assert up[key] == ran[key], key
    assert up["kpis"]["cell"]["oee"] is not None and up["kpis"]["cell"]["energy_kwh"] > 0
    if cfg.energy is not None:
        assert up["energy"] == ran["energy"]
    assert set(up["utilisation"]) == set(ran["utilisation"])
    for m, u in up["utilisation"].items():
        assert u == pytest.approx(ran["utilisation"][m], abs=1e-3)


def test_final_metrics_are_written_for_a_last_scrape(tmp_path: Path) -> None:
    from ops.metrics import ProcessMetrics
    from ops.up import final_metrics

    metrics = ProcessMetrics(lambda: 0.0)
    metrics.reroutes.inc(3)
    path = tmp_path / "metrics-h1.prom"
    final_metrics(metrics, path, linger_s=0.0)
    assert "autocell_reroutes_total 3.0" in path.read_text()
