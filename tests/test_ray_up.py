"""``autocell up CELL --ray``: the cell's simulator and hosts as Ray actors.

On the session's local Ray (the ``ray_local`` fixture), the demo cell's
first orders at 50× real time on free loopback ports: a clean run
completes; a run whose host actor is killed by the supervisor
(``ray.kill(actor, no_restart=False)``, from a fault scenario) completes;
and so does one whose host actor process is killed from outside
(``kill -9`` of the pid in its status file).  Each restarted host resumes
from its journal (boot 2, agents rebuilt), and the invariants hold on the
simulator's event log.  A clean run leaves one decision log per process that
runs agents (each host and the console agent), each named in report.json,
verified against its certificate and replayed with ``--check``.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import yaml
from helpers.waiting import CELL_RUN_BOUND_S, EVENT_BOUND_S, wait_until

from ops.bench.healing import loopback_cell
from ops.cli import main

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "cell_configs" / "demo_cell.yaml"
SESSION_START = time.time()

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def up_ray(cell: Path, state: Path, *extra: str) -> int:
    return main(["up", str(cell), "--ray", "--speed", "50", "--state-dir", str(state),
                 "--timeout", f"{CELL_RUN_BOUND_S:g}", "--quiet", *extra])


def report(state: Path) -> dict:
    return json.loads((state / "report.json").read_text())


def events(state: Path, name: str) -> list[dict]:
    return [json.loads(line) for line in (state / f"events-{name}.jsonl").read_text().splitlines()]


def assert_all_done_once(r: dict) -> None:
    assert r["orders_completed"] == r["orders_total"] and r["orders_lost"] == 0, r
    assert all(r["invariants"].values()), r["invariant_violations"]
    assert r["deployment"] == "ray"


def test_up_ray_brings_a_small_cell_to_completion(ray_local, tmp_path: Path) -> None:
    cell = loopback_cell(DEMO, tmp_path, 4)
    state = tmp_path / "state"
    assert up_ray(cell, state) == 0
    r = report(state)
    assert_all_done_once(r)
    assert r["operations"] > 0 and r["restarts"] == 0
    # every process ran inside a Ray worker, once, and stopped cleanly
    for name in ("sim", "orders", "machines", "logistics"):
        st = json.loads((state / f"status-{name}.json").read_text())
        assert st.get("stopped") is True and st["pid"] != os.getpid()
    assert [e["boot"] for e in events(state, "orders") if e["ev"] == "host_start"] == [1]
    # the lean local Ray left no token file behind
    token = Path.home() / ".ray" / "auth_token"
    assert not token.exists() or token.stat().st_mtime < SESSION_START


def test_up_ray_writes_one_decision_log_per_process_and_each_replays(
        ray_local, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every process that runs agents — each host and the console agent — keeps its own
    log in the state directory; report.json names each, sealed by that process's
    certificate key, and each replays with ``--check`` (the hosts' agents re-run)."""
    from ops.config import load_cell
    from ops.replay import replay_check

    cell = loopback_cell(DEMO, tmp_path, 4)
    state = tmp_path / "state"
    assert up_ray(cell, state) == 0
    r = report(state)
    assert_all_done_once(r)
    logs = r["decision_logs"]
    expected = {h.name for h in load_cell(cell).hosts} | {"console"}
    assert sorted(d["host"] for d in logs) == sorted(expected), logs
    assert all(d["ok"] and d["boot"] == 1 and d["file"] == f"decisions-{d['host']}-1.jsonl"
               for d in logs), logs
    replayed = 0
    for d in logs:
        log = state / d["file"]
        assert main(["audit", "verify", str(log), "--certs", str(state / "keys")]) == 0, log
        rep = replay_check(log)
        assert rep.ok, (log, rep.divergence)
        replayed += rep.entries
    capsys.readouterr()
    assert replayed > 0


def test_up_ray_completes_after_ray_kill_of_a_host_actor(ray_local, tmp_path: Path) -> None:
    cell = loopback_cell(DEMO, tmp_path, 4)
    faults = tmp_path / "kill.yaml"
    faults.write_text(yaml.safe_dump({"name": "kill", "mtbf_breakdowns": False, "hosts": [
        {"host": "machines", "action": "kill", "at_s": 250}]}))
    state = tmp_path / "state"
    assert up_ray(cell, state, "--faults", str(faults)) == 0
    r = report(state)
    assert_all_done_once(r)
    evs = [e["ev"] for e in r["supervisor_events"]]
    assert "fault_injected" in evs and r["restarts"] == 1
    assert [e["boot"] for e in events(state, "machines") if e["ev"] == "host_start"] == [1, 2]
    rebuilt = [e for e in events(state, "machines") if e["ev"] == "agent_restart"]
    assert len(rebuilt) == 5 and all(e["inputs"] > 0 for e in rebuilt)


def test_up_ray_completes_after_kill_9_of_a_host_actor_process(ray_local,
                                                               tmp_path: Path) -> None:
    cell = loopback_cell(DEMO, tmp_path, 4)
    state = tmp_path / "state"
    killed: list[int] = []
    failed: list[BaseException] = []

    def orders_at_200() -> dict:
        try:
            st = json.loads((state / "status-orders.json").read_text())
        except (OSError, ValueError):
            return {}
        return st if st.get("cell_now", 0) >= 200 or st.get("stopped") else {}

    def killer() -> None:   # kill -9 the orders host's worker process at cell time ≥ 200 s
        try:
            st = wait_until("the orders host at cell time 200 s", orders_at_200)
        except BaseException as exc:  # noqa: BLE001 (reported by the test after the run)
            failed.append(exc)
            return
        if not st.get("stopped"):
            os.kill(int(st["pid"]), signal.SIGKILL)
            killed.append(int(st["pid"]))

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    assert up_ray(cell, state) == 0
    t.join(timeout=EVENT_BOUND_S)   # a hang guard: the killer ends once the cell stops
    assert not failed, failed
    assert len(killed) == 1
    r = report(state)
    assert_all_done_once(r)
    restarted = [e for e in r["supervisor_events"] if e["ev"] == "restarted"]
    assert [e["process"] for e in restarted] == ["orders"]
    assert restarted[0]["pid"] != killed[0]
    assert [e["boot"] for e in events(state, "orders") if e["ev"] == "host_start"] == [1, 2]


def test_address_without_ray_is_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cell = loopback_cell(DEMO, tmp_path, 2)
    assert main(["up", str(cell), "--address", "auto", "--state-dir", str(tmp_path / "s")]) == 2
    assert "--address" in capsys.readouterr().err


def test_pauses_are_refused_with_ray(ray_local, tmp_path: Path,
                                     capsys: pytest.CaptureFixture) -> None:
    cell = loopback_cell(DEMO, tmp_path, 2)
    faults = tmp_path / "pause.yaml"
    faults.write_text(yaml.safe_dump({"name": "p", "mtbf_breakdowns": False, "hosts": [
        {"host": "machines", "action": "pause", "at_s": 10, "duration_s": 5}]}))
    assert up_ray(cell, tmp_path / "s", "--faults", str(faults)) == 2
    assert "pause" in capsys.readouterr().err


def test_unreachable_or_malformed_address_is_bad_input(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    from ops.bench.healing import free_ports

    cell = loopback_cell(DEMO, tmp_path, 2)
    [port] = free_ports(1)
    for address, said in ((f"127.0.0.1:{port}", "cannot reach a Ray cluster"),
                          ("nonsense", "use auto or HOST:PORT")):
        code = main(["up", str(cell), "--ray", "--address", address, "--state-dir",
                     str(tmp_path / "s")])
        assert code == 2
        assert said in capsys.readouterr().err
