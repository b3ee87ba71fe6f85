"""Escalation under ``autocell up CELL --ray``: the console agent as a Ray actor.

On the session's local Ray (the ``ray_local`` fixture), a small cell at 50×
real time on free loopback ports, with real keys, real ZeroMQ sockets and a
real SQLite store:

* the lathe breaks for longer than the policy's ``max_wait_s``: the order's
  escalation reaches the console actor's store (``--escalations-db``); the
  console actor's process is killed with SIGKILL and Ray restarts it on the
  same store; a decision through the CLI twin (another process, the same
  file) reaches the order, which completes, and the audit log names the user;
* a host actor killed once more than ``--max-restarts`` allows is gone for
  Ray: the driver raises ``restart_intensity`` to the console actor, a
  person's ``restart`` creates a new actor and the run completes; a
  ``stop_cell`` decision ends the run with exit 3.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers.escalation_cells import cli, events, faults, records, small_cell
from helpers.console_users import act_as
from helpers.waiting import CELL_RUN_BOUND_S, EVENT_BOUND_S, wait_until

from agents.escalation.intensity import SUPERVISOR_ID
from agents.escalation.store import EscalationStore
from ops.cli import main

ROOT = Path(__file__).resolve().parents[1]

# a cell run and, in a thread, a person waiting on several events in a row, each under the
# shared hang guard (tests/helpers/waiting.py)
pytestmark = [pytest.mark.timeout(600)]






def up_ray(cell: Path, state: Path, *extra: str) -> int:
    return main(["up", str(cell), "--ray", "--speed", "50", "--state-dir", str(state),
                 "--timeout", f"{CELL_RUN_BOUND_S:g}", "--quiet", *extra])




def status(state: Path, name: str) -> dict[str, Any]:
    try:
        return json.loads((state / f"status-{name}.json").read_text())
    except (OSError, ValueError):
        return {}






class Person(threading.Thread):
    """The supervisor's side of the run, in a thread while ``up --ray`` runs in the test's
    process: each step waits for its condition; what happened lands in ``seen``."""

    def __init__(self, steps: Any) -> None:
        super().__init__(daemon=True)
        self.steps = steps
        self.seen: dict[str, Any] = {}
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.steps(self.seen)
        except BaseException as exc:  # noqa: BLE001 (reported by the test after the run)
            self.error = exc


@pytest.mark.slow
def test_up_ray_escalates_to_the_console_actor_and_a_cli_decision_reaches_the_order(
        ray_local, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    act_as(monkeypatch, tmp_path, "alice")      # the CLI twin acts for a console user
    cell = small_cell(tmp_path)
    f = faults(tmp_path, breakdowns=[{"resource": "lathe1", "at_s": 150, "repair_s": 900}])
    state = tmp_path / "state"
    db = tmp_path / "store" / "esc.db"          # --escalations-db, outside the state dir
    db.parent.mkdir()

    def steps(seen: dict[str, Any]) -> None:
        rec = wait_until("o-005's escalation in the console actor's store",
                         lambda: records(db).get("o-005/e1"))
        seen["raised"] = (rec.cause, rec.state)
        # kill -9 the console actor's worker process: Ray restarts it on the same store
        pid = wait_until("the console's status", lambda: status(state, "console").get("pid"))
        os.kill(pid, signal.SIGKILL)
        seen["killed"] = pid
        wait_until("the console actor back",
                   lambda: status(state, "console").get("pid") not in (None, pid))
        res = cli("escalations", "decide", "o-005/e1", "--option", "wait_for_repair",
                  "--reason", "fitter on site", "--user", "alice", "--db", str(db))
        seen["decide"] = (res.returncode, res.stderr)

    person = Person(steps)
    person.start()
    code = up_ray(cell, state, "--faults", str(f), "--escalations-db", str(db))
    person.join(timeout=EVENT_BOUND_S)   # a hang guard: its steps end before the run does
    assert not person.is_alive(), "the person's steps did not finish"
    assert person.error is None, person.error
    assert code == 0
    assert person.seen["raised"] == ("no_capable_resource", "unacknowledged")
    assert person.seen["decide"] == (0, "")
    assert f"escalations: {db}" in capsys.readouterr().out

    report = json.loads((state / "report.json").read_text())
    assert report["deployment"] == "ray"
    assert report["orders_completed"] == report["orders_total"] == 2
    assert report["orders_cancelled"] == 0 and report["orders_lost"] == 0
    assert all(report["invariants"].values()), report["invariant_violations"]
    assert report["escalations_db"] == str(db)
    assert report["escalations_by_cause"].get("no_capable_resource", 0) >= 1
    assert report["escalations_raised"] == sum(report["escalations_by_cause"].values())
    assert report["escalations_by_outcome"].get("decision") == 1
    assert report["audit_intact"] is True
    # Ray restarted the console actor (a new pid), nothing else
    restarted = [e for e in report["supervisor_events"] if e["ev"] == "restarted"]
    assert [e["process"] for e in restarted] == ["console"]
    assert restarted[0]["pid"] != person.seen["killed"]
    assert [e["boot"] for e in events(state, "console") if e["ev"] == "console_start"] == [1, 2]
    # the order acted on the signed decision, which names the user
    applied = [e for e in events(state, "orders") if e["ev"] == "decision_applied"]
    assert [(e["escalation"], e["option"], e["user"]) for e in applied] == [
        ("o-005/e1", "wait_for_repair", "alice")]
    store = EscalationStore(db)
    try:
        decided = [e for e in store.audit() if e.action == "decide"]
        assert [(e.actor, e.escalation, e.details["option"]) for e in decided] == [
            ("alice", "o-005/e1", "wait_for_repair")]
        assert not store.pending_decisions()
    finally:
        store.close()
    res = cli("audit", "verify", "--db", str(db))
    assert res.returncode == 0, res.stdout + res.stderr


def restart_intensity_run(tmp_path: Path, option: str) -> tuple[int, dict[str, Any], Person]:
    """``machines`` killed three times with ``--max-restarts 2``; ``bob`` decides
    ``option`` on the ``restart_intensity`` escalation through the CLI twin."""
    cell = small_cell(tmp_path)
    f = faults(tmp_path, hosts=[{"host": "machines", "action": "kill", "at_s": t}
                                for t in (100, 220, 340)])
    state = tmp_path / "state"
    db = state / "escalations.db"

    def steps(seen: dict[str, Any]) -> None:
        rec = wait_until("the restart_intensity escalation",
                         lambda: records(db).get(f"{SUPERVISOR_ID}/e1"))
        seen["record"] = rec
        res = cli("escalations", "decide", f"{SUPERVISOR_ID}/e1", "--option", option,
                  "--reason", "cable fixed", "--user", "bob", "--db", str(db))
        seen["decide"] = (res.returncode, res.stderr)

    person = Person(steps)
    person.start()
    code = up_ray(cell, state, "--faults", str(f), "--max-restarts", "2")
    person.join(timeout=EVENT_BOUND_S)   # a hang guard: its steps end before the run does
    assert not person.is_alive(), "the person's steps did not finish"
    assert person.error is None, person.error
    assert person.seen["decide"] == (0, "")
    rec = person.seen["record"]
    assert (rec.cause, rec.resource, rec.raised_by, rec.safe_default) == (
        "restart_intensity", "machines", SUPERVISOR_ID, "stop_cell")
    assert rec.context["deaths"] == 3 and rec.context["max_restarts"] == 2
    assert [o.id for o in rec.options] == ["stop_cell", "restart"]
    report = json.loads((state / "report.json").read_text())
    assert report["deployment"] == "ray"
    assert records(db)[f"{SUPERVISOR_ID}/e1"].decided_by == "bob"
    assert report["escalations_by_cause"].get("restart_intensity") == 1
    assert report["audit_intact"] is True
    return code, report, person


@pytest.mark.slow
def test_up_ray_escalates_an_actor_out_of_restarts_and_restart_brings_a_new_one(
        ray_local, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    act_as(monkeypatch, tmp_path, "bob")
    code, report, _ = restart_intensity_run(tmp_path, "restart")
    assert code == 0
    assert report["orders_completed"] == report["orders_total"] == 2
    assert all(report["invariants"].values()), report["invariant_violations"]
    evs = report["supervisor_events"]
    assert [e["ev"] for e in evs if e["ev"] in ("actor_gone", "restart_intensity_escalated",
                                                "decision", "actor_created", "gave_up")] == [
        "actor_gone", "restart_intensity_escalated", "decision", "actor_created"]
    decision = next(e for e in evs if e["ev"] == "decision")
    assert (decision["option"], decision["user"], decision["process"]) == (
        "restart", "bob", "machines")
    # two restarts by Ray, the third process is the new actor's
    assert [e["process"] for e in evs if e["ev"] == "restarted"] == ["machines"] * 3
    assert report["restarts"] == 3
    boots = [e["boot"] for e in events(tmp_path / "state", "machines")
             if e["ev"] == "host_start"]
    assert boots == [1, 2, 3, 4]


@pytest.mark.slow
def test_up_ray_stop_cell_decision_ends_the_run_with_exit_3(
        ray_local, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    act_as(monkeypatch, tmp_path, "bob")
    code, report, _ = restart_intensity_run(tmp_path, "stop_cell")
    assert code == 3
    gave_up = [e for e in report["supervisor_events"] if e["ev"] == "gave_up"]
    assert len(gave_up) == 1 and "bob" in gave_up[0]["reason"]


@pytest.mark.parametrize("on", [True, False])
def test_up_ray_has_a_console_actor_only_when_the_policy_is_on(tmp_path: Path,
                                                                 on: bool) -> None:
    from ops.config import load_cell
    from ops.ray_up import RaySupervisor
    from ops.supervisor import ensure_keys

    cell = small_cell(tmp_path)
    if not on:
        data = yaml.safe_load(cell.read_text())
        data["escalation"].update(
            {r: False for r in ("no_capable_resource", "late_reroute", "restart_intensity",
                                "quality_reject")},
            **{r: {"enabled": False, "count": 1, "window_s": 1}
               for r in ("repeat_faults", "reject_burst")})
        cell.write_text(yaml.safe_dump(data, sort_keys=False))
    cfg = load_cell(cell)
    state = tmp_path / "state"
    state.mkdir()
    keys = ensure_keys(cfg, state)
    sup = RaySupervisor(cfg, str(cell), state_dir=state, speed=50.0, faults_path=None,
                        faults=None, max_restarts=2, restart_window_s=60.0, until_s=None,
                        timeout_s=None, keys_dir=keys, escalations_db=Path("e.db"),
                        log=lambda *_: None)
    if on:
        assert "console" in sup.children
        assert sup.escalations_db == Path("e.db").resolve()
    else:
        assert "console" not in sup.children and sup.escalations_db is None
        assert sup.report().get("escalations_raised") is None
    # without a link to the console (not started here) an actor out of restarts cannot be
    # escalated: the supervisor gives up, as before
    assert sup._escalate_gone("machines") is False
    assert sup._escalate_gone("console") is False
    assert sup.escalated == 0


def test_an_escalations_db_in_a_missing_directory_is_bad_input(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Checked when the flags are parsed, before Ray starts: exit 2, nothing created."""
    cell = small_cell(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        up_ray(cell, tmp_path / "state", "--escalations-db", str(tmp_path / "no" / "e.db"))
    assert exit_.value.code == 2
    assert "does not exist; create it first" in capsys.readouterr().err
    assert not (tmp_path / "no").exists()
