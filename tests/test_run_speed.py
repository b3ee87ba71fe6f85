"""``autocell run --speed K``: a virtual-time run paced to the wall clock.

Pacing only waits between events, so the event log is byte for byte the
unpaced one as long as nobody acts; a decision queued in the store by
another connection (the web console, the CLI twin) is picked up while the
run is paced and the order acts on it.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from agents.escalation.store import EscalationStore
from ops.cli import main
from ops.config import load_cell_or_instance
from ops.config.fault_files import load_faults
from ops.console.store_backend import StoreBackend
from sim_bridge.virtual import VirtualCell

ROOT = Path(__file__).resolve().parents[1]
CELL = ROOT / "cell_configs/demo_cell.yaml"
OUTAGE = ROOT / "cell_configs/faults/long_outage.yaml"


def _cell(db: Path | None = None) -> VirtualCell:
    cfg = load_cell_or_instance(CELL)
    return VirtualCell(cfg, faults=load_faults(OUTAGE, cfg),
                       escalations_db=str(db) if db else ":memory:")


def test_pacing_leaves_the_event_log_unchanged(tmp_path):
    fast = _cell()
    fast.run(until=2000)
    paced = _cell(tmp_path / "esc.db")
    paced.run(until=2000, speed=4000.0)
    assert paced.events == fast.events
    assert paced.event_log_sha256() == fast.event_log_sha256()
    assert paced.wall_s >= 2000 / 4000.0 * 0.98            # it was paced
    assert any('"ev":"escalation_resolved"' in e and '"(safe default)"' in e
               for e in paced.events)                     # nobody decided: the safe default
    # the run published its clock for the console (the cell time of its last look)
    assert 1500 < EscalationStore(tmp_path / "esc.db").cell_now() <= 2000


def test_run_cli_speed_same_sha(tmp_path, capsys):
    reports = []
    for extra in ([], ["--speed", "20000"]):
        out = tmp_path / f"r{len(reports)}.json"
        assert main(["run", str(CELL), "--until", "1000", "--quiet", "--report", str(out),
                     *extra]) == 0
        reports.append(json.loads(out.read_text()))
    assert reports[0]["event_log_sha256"] == reports[1]["event_log_sha256"]


@pytest.mark.parametrize("speed", ["0", "-3", "nan"])
def test_speed_must_be_positive(capsys, speed):
    assert main(["run", str(CELL), "--quiet", "--speed", speed]) == 2
    err = capsys.readouterr().err
    assert "--speed" in err and "positive" in err and "Traceback" not in err


def test_a_decision_from_another_connection_is_acted_on_while_paced(tmp_path):
    db = tmp_path / "esc.db"
    cell = _cell(db)
    runner = threading.Thread(target=cell.run, kwargs={"until": 2000, "speed": 400.0})
    runner.start()
    try:
        console = StoreBackend(db)        # what the web console uses, own connection
        deadline = time.monotonic() + 60
        while not any(e["id"] == "o-011/e1" for e in console.list()):
            assert time.monotonic() < deadline and runner.is_alive(), "no escalation"
            time.sleep(0.02)
        console.decide("o-011/e1", "ann", "wait_for_repair", "fitter on site")
    finally:
        runner.join(120)
    assert not runner.is_alive()
    resolved = [json.loads(e) for e in cell.events if '"ev":"escalation_resolved"' in e]
    first = next(r for r in resolved if r["escalation"] == "o-011/e1")
    assert (first["outcome"], first["user"], first["decision"]) == (
        "decision", "ann", "wait_for_repair")
    applied = [json.loads(e) for e in cell.events if '"ev":"decision_applied"' in e]
    assert any(a["escalation"] == "o-011/e1" and a.get("user") == "ann" for a in applied), applied
    store = EscalationStore(db)
    assert store.pending_decisions() == [] and store.verify().ok
    assert [a.actor for a in store.audit() if a.action == "decide"] == ["ann"]
