"""`autocell up` under pacing (issue 18): no spurious escalations with every machine up.

* the reply deadline has a wall-clock floor (``agents.runtime.host.paced``);
* a restarted receiver accepts a peer's next message (the replay guard no longer refuses
  ``stored hw + 1``), so recovery costs no negotiation round;
* ``up`` starts the cell clock once every child is ready (a barrier, not a guess);
* end to end (slow): ``up`` at ``--speed 10`` with nothing down logs no ``no_proposals``,
  no ``non_routine`` and raises no escalation.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from agents.protocol.messages import Heartbeat
from agents.runtime.host import REPLY_FLOOR_WALL_S, paced
from ops.bench.healing import loopback_cell
from ops.config import load_cell
from security.errors import Replayed
from security.replay import ReplayGuard
from security.replay_store import SqliteReplayStore

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "cell_configs" / "demo_cell.yaml"
T0 = 1_700_000_000.0


def test_the_reply_deadline_has_a_wall_clock_floor() -> None:
    cfg = load_cell(DEMO)
    assert cfg.negotiation.reply_deadline_s == pytest.approx(0.2)
    fast = paced(cfg, 10.0)
    assert fast.negotiation.reply_deadline_s == pytest.approx(REPLY_FLOOR_WALL_S * 10.0)
    assert fast.negotiation.reply_deadline_s / 10.0 >= REPLY_FLOOR_WALL_S   # wall seconds
    assert paced(cfg, 1.0) is cfg and paced(cfg, 0.5) is cfg     # as written, unpaced
    assert fast.source == cfg.source and fast.orders == cfg.orders


def test_a_restarted_receiver_accepts_a_peers_next_message(cell: Any, tmp_path: Path) -> None:
    path = tmp_path / "replay.sqlite"
    sealer = cell.sealer("m1", epoch=1)                   
    first = cell.opener(ReplayGuard(SqliteReplayStore(path), skew_s=60.0,
                                    flush_every=1, now=T0))
    sent = [sealer.seal("o1", Heartbeat(), T0 + i) for i in range(1, 6)]
    for i, frames in enumerate(sent, 1):
        assert first.open(frames, T0 + i).seq == i
    # kill -9: no flush; a new incarnation on the same file, within the skew window
    again = cell.opener(ReplayGuard(SqliteReplayStore(path), skew_s=60.0,
                                    flush_every=1, now=T0 + 10))
    for frames in sent:                                      # what it accepted: refused
        with pytest.raises(Replayed):
            again.open(frames, T0 + 11)
    nxt = sealer.seal("o1", Heartbeat(), T0 + 11)            # the peer's next: accepted
    assert again.open(nxt, T0 + 11).seq == 6
    with pytest.raises(Replayed):
        again.open(nxt, T0 + 12)


def test_up_passes_a_start_file_and_cleans_it(tmp_path: Path) -> None:
    from ops.supervisor import START_FILE, Supervisor, prepare_state_dir

    cfg = load_cell(DEMO)
    sup = Supervisor(cfg, str(DEMO), state_dir=tmp_path, speed=10.0, faults_path=None,
                     faults=None, max_restarts=3, restart_window_s=60.0, until_s=None,
                     timeout_s=None, log=lambda *_: None)
    for child in sup.children.values():
        argv = child.argv
        assert argv[argv.index("--start-at-file") + 1] == str(tmp_path / START_FILE)
        assert "--start-at" not in argv
    (tmp_path / START_FILE).write_text("{}")
    (tmp_path / "ready-sim").touch()
    prepare_state_dir(tmp_path)
    assert not (tmp_path / START_FILE).exists() and not (tmp_path / "ready-sim").exists()


def test_a_process_says_ready_and_waits_for_the_start_file(tmp_path: Path) -> None:
    import threading

    from ops.up import await_start

    start, ready = tmp_path / "start.json", tmp_path / "ready-h1"
    got: list[float] = []
    t = threading.Thread(target=lambda: got.append(await_start(start, ready)))
    t.start()
    while not ready.exists():       # the child says it is ready, then waits
        t.join(0.01)
    assert not got
    start.write_text(json.dumps({"start_at": 123.5, "speed": 10.0}))
    t.join(10)
    assert got == [123.5]
    ready.unlink()
    assert await_start(start, ready) == 123.5 and not ready.exists()   # a restart joins


@pytest.mark.slow
def test_up_at_speed_10_with_nothing_down_raises_no_escalation(tmp_path: Path) -> None:
    from ops.cli import main

    data = yaml.safe_load(DEMO.read_text())
    data["orders"] = [o for o in data["orders"] if o["id"] in ("o-001", "o-002")]
    for m in data["machines"]:
        m["scrap_rate"] = 0.0
        m.pop("mtbf_s", None)
        m.pop("mttr_s", None)
    src = tmp_path / "src.yaml"
    src.write_text(yaml.safe_dump(data, sort_keys=False))
    cell = loopback_cell(src, tmp_path)
    state = tmp_path / "state"
    code = main(["up", str(cell), "--speed", "10", "--state-dir", str(state), "--quiet",
                 "--timeout", "300"])
    assert code == 0
    report = json.loads((state / "report.json").read_text())
    assert report["orders_completed"] == report["orders_total"] == 2
    assert report["escalations_raised"] == 0 and report["orders_escalated"] == 0
    # the KPIs `run` reports, from the processes' event logs (tests/test_up_report.py)
    assert report["makespan"] > 0 and report["kpis"]["cell"]["orders_completed"] == 2
    assert 0 < report["kpis"]["cell"]["oee"] <= 1 and report["tardiness_total"] >= 0
    spurious = [e for f in sorted(state.glob("events-*.jsonl"))
                for e in map(json.loads, f.read_text().splitlines())
                if e["ev"] in ("no_proposals", "non_routine", "escalate")]
    assert spurious == []
