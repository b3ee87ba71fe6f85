"""The console agent on the real bus (issue 5 under ``autocell up``).

* in one process, on real ZeroMQ sockets with real keys: an order identity
  sends a signed ``escalate`` to :class:`ConsoleService`, which stores it;
  a person decides through the CLI twin (its own connection to the SQLite
  file); the decision arrives at the order signed by ``console``, naming
  the user.  A restarted service (same store) answers the order's re-sent
  ``escalate`` with that decision, and re-arms open escalations.  The
  supervisor's :class:`SupervisorLink` raises ``restart_intensity`` and
  hears the decision.
* real processes (slow): ``autocell up`` of a small cell whose lathe breaks
  for longer than the policy's ``max_wait_s``: the escalation reaches the
  store, the console child is killed with SIGKILL and restarted, a decision
  through the CLI twin goes to the order, the order completes, and the
  audit log names the user; a host killed three times with
  ``--max-restarts 2`` raises ``restart_intensity``, and a person's
  ``restart`` brings it back and the run completes.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from helpers.escalation_cells import cli, events, faults, records, small_cell
from helpers.console_users import act_as
from helpers.waiting import CELL_RUN_BOUND_S, PROCESS_BOUND_S, until, wait_until

from agents.escalation.console import CONSOLE_ID
from agents.escalation.intensity import SUPERVISOR_ID, restart_intensity_escalation
from agents.escalation.policy import OFF, Rule
from agents.escalation.store import EscalationStore
from agents.protocol.messages import Decision, Escalate, Message
from agents.runtime.console_service import (
    ConsoleService,
    SupervisorLink,
    console_policy,
)
from agents.runtime.host import CellClock, signed_bus
from ops.cli import main
from ops.config import load_cell
from ops.supervisor import ensure_keys

ROOT = Path(__file__).resolve().parents[1]






# -- in one process --------------------------------------------------------------------------

def escalation(n: int = 1) -> Escalate:
    return Escalate(escalation=f"o-005/e{n}", priority=1, cause="no_capable_resource",
                    consequence="order o-005 cannot continue", order="o-005", resource="lathe1",
                    options=[{"id": "wait_for_repair", "label": "Wait", "effect": "keep calling"},
                             {"id": "cancel", "label": "Cancel", "effect": "not made"}],
                    safe_default="wait_for_repair")


def test_console_service_on_zeromq_stores_decides_and_survives_a_restart(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    act_as(monkeypatch, tmp_path, "alice")      # the CLI twin acts for a console user
    cell = small_cell(tmp_path)
    cfg = load_cell(cell)
    state = tmp_path / "state"
    state.mkdir()
    keys = ensure_keys(cfg, state)
    assert console_policy(cfg, keys) is not OFF
    db = state / "escalations.db"
    clock = CellClock(time.time(), 1.0)
    got: list[Message] = []

    async def scenario() -> None:
        order_ep = next(h.endpoint for h in cfg.hosts if h.name == "orders")
        order = signed_bus(cfg, keys_dir=keys, state_dir=state, name="orders", bind=order_ep,
                           identities=["o-005"], epoch=1, clock=clock)
        order.set_route(CONSOLE_ID, cfg.escalation.console_endpoint)
        await order.start(got.append)

        service = ConsoleService(cfg, keys_dir=keys, state_dir=state, clock=clock, db_path=db,
                                 look_every_s=0.05)
        task = asyncio.create_task(service.run())
        reader = EscalationStore(db)
        order.send("o-005", CONSOLE_ID, escalation(1), "o-005/e1")
        order.send("o-005", CONSOLE_ID, escalation(2), "o-005/e2")
        await until("the escalations in the store",
                     lambda: reader.has("o-005/e1") and reader.has("o-005/e2"))
        assert reader.get("o-005/e1").raised_by == "o-005"
        assert reader.get("o-005/e1").state == "unacknowledged"

        # the CLI twin, in this process but on its own connection to the file
        assert main(["escalations", "decide", "o-005/e1", "--option", "wait_for_repair",
                     "--reason", "fitter on site", "--user", "alice", "--db", str(db)]) == 0
        first = await until("the decision", lambda: [m for m in got
                                                     if isinstance(m.body, Decision)])
        assert first[0].sender == CONSOLE_ID and first[0].to == "o-005"
        assert first[0].body == Decision("o-005/e1", "wait_for_repair", "alice",
                                         "fitter on site")
        service._stop.set()
        await task
        assert not reader.pending_decisions()

        # restarted on the same store: the re-sent escalate is answered with the decision
        # taken, and the open one has its timer again
        again = ConsoleService(cfg, keys_dir=keys, state_dir=state, clock=clock, db_path=db,
                               look_every_s=0.05)
        assert again.boot == 2
        task = asyncio.create_task(again.run())
        await until("the restarted console", lambda: again.runner.timers)
        assert {key for _, key in again.runner.timers} == {"esc:o-005/e2"}
        # a restarted receiver refuses only what it accepted before (docs/PROTOCOL.md §10.2,
        # F = 1): the order's first re-send gets through (issue 18)
        order.send("o-005", CONSOLE_ID, escalation(1), "o-005/e1")
        await until("the repeated decision",
                     lambda: len([m for m in got if isinstance(m.body, Decision)]) == 2)
        assert dict(again.bus.stats.rejected) == {}
        again._stop.set()
        await task
        await order.close()
        audit = reader.audit()
        assert [(e.actor, e.action) for e in audit] == [
            ("agent:o-005", "raise"), ("agent:o-005", "raise"), ("alice", "decide")]
        assert reader.verify().ok
        reader.close()

    asyncio.run(scenario())
    assert [m.body.escalation for m in got if isinstance(m.body, Decision)] == ["o-005/e1"] * 2


def test_supervisor_link_raises_restart_intensity_and_hears_the_decision(
        tmp_path: Path) -> None:
    cell = small_cell(tmp_path)
    cfg = load_cell(cell)
    state = tmp_path / "state"
    state.mkdir()
    keys = ensure_keys(cfg, state)
    db = state / "escalations.db"
    clock = CellClock(time.time(), 1.0)
    link = SupervisorLink(cfg, keys_dir=keys, state_dir=state, clock=clock)
    endpoint = link.start()
    body = restart_intensity_escalation(Rule(1), process="machines", number=1, deaths=3,
                                        window_s=60.0, max_restarts=2, returncode=-9,
                                        agents=["lathe1", "mill1"], log_path="machines.log")

    async def scenario() -> None:
        service = ConsoleService(cfg, keys_dir=keys, state_dir=state, clock=clock, db_path=db,
                                 routes={SUPERVISOR_ID: endpoint}, look_every_s=0.05)
        task = asyncio.create_task(service.run())
        await until("the console service up (its status file)",
                    lambda: (state / "status-console.json").exists())
        link.send(CONSOLE_ID, body, body.escalation)
        reader = EscalationStore(db)
        await until("the escalation", lambda: reader.has("supervisor/e1"))
        rec = reader.get("supervisor/e1")
        assert (rec.cause, rec.resource, rec.raised_by, rec.safe_default) == (
            "restart_intensity", "machines", SUPERVISOR_ID, "stop_cell")
        assert [o.id for o in rec.options] == ["stop_cell", "restart"]
        reader.decide("supervisor/e1", "bob", "restart", "cable fixed")
        reader.close()
        await until("the decision at the supervisor", lambda: not link.decisions.empty())
        service._stop.set()
        await task

    try:
        asyncio.run(scenario())
    finally:
        link.close()
    assert link.decisions.get_nowait().body == Decision("supervisor/e1", "restart", "bob",
                                                   "cable fixed")


def test_without_a_console_certificate_hosts_run_with_escalation_off(tmp_path: Path) -> None:
    cfg = load_cell(small_cell(tmp_path))
    state = tmp_path / "state"
    state.mkdir()
    keys = ensure_keys(cfg, state)
    (keys / "agents" / f"{CONSOLE_ID}.cert").unlink()
    assert console_policy(cfg, keys) is OFF


def test_console_agent_refuses_a_bad_route_with_exit_2(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    cell = small_cell(tmp_path)
    code = main(["console-agent", str(cell), "--state-dir", str(tmp_path / "s"),
                 "--route", "supervisor"])
    assert code == 2
    assert "expected AGENT=ENDPOINT" in capsys.readouterr().err


# -- real processes ----------------------------------------------------------------------------



def up(cell: Path, state: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "ops.cli", "up", str(cell), "--speed", "50", "--state-dir",
         str(state), "--timeout", f"{CELL_RUN_BOUND_S:g}", *extra],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def while_running(proc: subprocess.Popen[str], db: Path, esc: str) -> Any:
    """A check for :func:`wait_until`: ``esc``'s record, or a failure at once (with what
    the store holds and the cell said) if the cell ends without raising it."""
    def check() -> Any:
        rec = records(db).get(esc)
        if rec is None and proc.poll() is not None:
            _, err = proc.communicate()
            raise AssertionError(f"the cell ended (exit {proc.returncode}) without {esc}; "
                                 f"the store holds {sorted(records(db))}; {err[-3000:]}")
        return rec
    return check


def finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=PROCESS_BOUND_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    return proc.returncode, out, err








@pytest.mark.slow
def test_up_escalates_to_the_console_agent_and_a_cli_decision_reaches_the_order(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    act_as(monkeypatch, tmp_path, "alice")
    cell = small_cell(tmp_path)
    f = faults(tmp_path, breakdowns=[{"resource": "lathe1", "at_s": 150, "repair_s": 900}])
    state = tmp_path / "state"
    db = state / "escalations.db"
    proc = up(cell, state, "--faults", str(f))
    try:
        rec = wait_until("o-005's escalation in the console agent's store",
                         while_running(proc, db, "o-005/e1"))
        assert rec.cause == "no_capable_resource" and rec.state == "unacknowledged"
        # kill -9 the console agent: the supervisor restarts it on the same store
        pid = json.loads((state / "status-console.json").read_text())["pid"]
        os.kill(pid, signal.SIGKILL)
        wait_until("the console agent back", lambda: json.loads(
            (state / "status-console.json").read_text()).get("pid") not in (None, pid))
        res = cli("escalations", "decide", "o-005/e1", "--option", "wait_for_repair",
                  "--reason", "fitter on site", "--user", "alice", "--db", str(db))
        assert res.returncode == 0, res.stderr
    finally:
        code, out, err = finish(proc)
    assert code == 0, err[-3000:]
    assert f"escalations: {db}" in out
    report = json.loads((state / "report.json").read_text())
    assert report["orders_completed"] == report["orders_total"] == 2
    assert all(report["invariants"].values())
    assert report["escalations_by_cause"].get("no_capable_resource", 0) >= 1
    assert report["audit_intact"] is True
    died = [e for e in report["supervisor_events"] if e["ev"] == "process_died"]
    assert [e["process"] for e in died] == ["console"]
    # the order acted on the signed decision, which names the user
    applied = [e for e in events(state, "orders") if e["ev"] == "decision_applied"]
    assert [(e["escalation"], e["option"], e["user"]) for e in applied] == [
        ("o-005/e1", "wait_for_repair", "alice")]
    assert [e["boot"] for e in events(state, "console") if e["ev"] == "console_start"] == [1, 2]
    store = EscalationStore(db)
    try:
        decided = [e for e in store.audit() if e.action == "decide"]
        assert [(e.actor, e.escalation, e.details["option"]) for e in decided] == [
            ("alice", "o-005/e1", "wait_for_repair")]
        assert store.get("o-005/e1").decided_by == "alice"
        assert not store.pending_decisions()
    finally:
        store.close()
    res = cli("audit", "verify", "--db", str(db))
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.slow
def test_restart_intensity_is_escalated_and_a_restart_decision_resumes_the_cell(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    act_as(monkeypatch, tmp_path, "bob")
    cell = small_cell(tmp_path)
    f = faults(tmp_path, hosts=[{"host": "machines", "action": "kill", "at_s": t}
                                for t in (150, 200, 250)])
    state = tmp_path / "state"
    db = state / "escalations.db"
    proc = up(cell, state, "--faults", str(f), "--max-restarts", "2", "--restart-window", "60")
    try:
        rec = wait_until("the restart_intensity escalation",
                         while_running(proc, db, "supervisor/e1"))
        assert rec.cause == "restart_intensity" and rec.resource == "machines"
        assert rec.raised_by == SUPERVISOR_ID and rec.safe_default == "stop_cell"
        assert rec.context["deaths"] == 3
        res = cli("escalations", "decide", "supervisor/e1", "--option", "restart",
                  "--user", "bob", "--db", str(db))
        assert res.returncode == 0, res.stderr
    finally:
        code, _, err = finish(proc)
    assert code == 0, err[-3000:]
    assert "restart intensity exceeded" in err
    report = json.loads((state / "report.json").read_text())
    assert report["orders_completed"] == report["orders_total"]
    assert all(report["invariants"].values())
    evs = report["supervisor_events"]
    assert [e["ev"] for e in evs if e["ev"] in ("restart_intensity_escalated", "decision",
                                                "gave_up")] == [
        "restart_intensity_escalated", "decision"]
    decision = next(e for e in evs if e["ev"] == "decision")
    assert (decision["option"], decision["user"], decision["process"]) == (
        "restart", "bob", "machines")
    # Three deaths, three respawns: two at once, the third on bob's decision.  The
    # supervisor counts a respawn as a restart only once the new process's status file
    # shows its pid; the kills are 1 s of wall time apart (50 cell seconds at 50x), so on
    # a loaded machine a respawned host can be killed again before it reports, and that
    # respawn goes uncounted (ops/up.py Supervisor._check_children).  What does not
    # depend on the machine's speed: every death was a machines death, the respawn after
    # the decision came up, and no more restarts than respawns, no fewer than
    # "restarted" events.
    died = [e["process"] for e in evs if e["ev"] == "process_died"]
    assert died == ["machines"] * 3
    kinds = [e["ev"] for e in evs]
    restarted = [i for i, ev in enumerate(kinds) if ev == "restarted"]
    assert restarted and restarted[-1] > kinds.index("decision")
    assert len(restarted) <= report["restarts"] <= 3
    assert records(db)["supervisor/e1"].decided_by == "bob"


def test_up_sets_an_earlier_store_aside_and_the_web_console_follows(tmp_path: Path) -> None:
    from ops.console.store_backend import StoreBackend
    from ops.supervisor import set_aside

    db = tmp_path / "escalations.db"
    old = EscalationStore(db)
    old.put(restart_record(), actor="agent:supervisor", action="raise", now=1.0)
    old.close()
    backend = StoreBackend(db)
    assert [r["id"] for r in backend.list()] == ["supervisor/e1"]
    moved = set_aside(db)
    assert moved is not None and moved.exists() and not db.exists()
    assert [r.id for r in EscalationStore(moved).list()] == ["supervisor/e1"]
    assert backend.list() == []                       # the new run has not written yet
    EscalationStore(db).close()
    assert backend.list() == []                       # a fresh, empty store: followed
    assert set_aside(tmp_path / "none.db") is None


def restart_record() -> Any:
    from agents.escalation import lifecycle as lc

    body = restart_intensity_escalation(Rule(1), process="machines", number=1, deaths=3,
                                        window_s=60.0, max_restarts=2, returncode=-9,
                                        agents=[], log_path="machines.log")
    return lc.new_record(id=body.escalation, priority=1, cause=body.cause,
                         consequence=body.consequence, raised_by=SUPERVISOR_ID, now=1.0,
                         options=[lc.Option(o["id"], o["label"], o["effect"])
                                  for o in body.options],
                         safe_default=body.safe_default, deadlines=lc.Deadlines(),
                         resource=body.resource, context=body.context)


@pytest.mark.parametrize("on", [True, False])
def test_up_starts_a_console_child_only_when_the_policy_is_on(tmp_path: Path, on: bool) -> None:
    from ops.supervisor import Supervisor

    off: dict[str, Any] = {r: False for r in ("no_capable_resource", "late_reroute",
                                              "restart_intensity", "quality_reject")}
    # (`false` alone is not accepted for the count rules: they need count and window_s)
    off.update({r: {"enabled": False, "count": 1, "window_s": 1}
                for r in ("repeat_faults", "reject_burst")})
    cell = small_cell(tmp_path, **({} if on else off))
    cfg = load_cell(cell)
    state = tmp_path / "state"
    state.mkdir()
    keys = ensure_keys(cfg, state)
    sup = Supervisor(cfg, str(cell), state_dir=state, speed=50.0, faults_path=None,
                     faults=None, max_restarts=2, restart_window_s=60.0, until_s=None,
                     timeout_s=None, keys_dir=keys, escalations_db=tmp_path / "e.db",
                     log=lambda *_: None)
    if on:
        argv = sup.children["console"].argv
        assert argv[3] == "console-agent" and argv[argv.index("--db") + 1] == str(
            tmp_path / "e.db")
        assert sup.escalations_db == tmp_path / "e.db"
    else:
        assert "console" not in sup.children and sup.escalations_db is None
        assert sup.report().get("escalations_raised") is None
