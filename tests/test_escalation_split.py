""""Split the order": offered with its prediction, decided by a person, both lots complete.

Whole-cell runs in virtual time (``VirtualCell``), like tests/test_escalation_cell.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from agents.escalation.lifecycle import UnknownOption
from agents.escalation.store import EscalationStore
from agents.order import plan_split
from agents.protocol.messages import Decision, Message
from ops.config import load_cell
from ops.config.fault_files import load_faults
from sim_bridge.invariants import orders_accounted, routing_order
from sim_bridge.report import build_report
from sim_bridge.virtual import VirtualCell

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "cell_configs" / "demo_cell.yaml"

# fast mills 30 s/unit, slow 120 s/unit; prep and finish on deb1 at 10 s/unit. fast breaks
# at 100 s in the middle of `cut` (op 1) and is back at 400 s; the order is due at 350 s.
LATE_CELL = """\
cell: split-late
layout:
  locations:
    - {{id: bay, x: 0.0, y: 0.0}}
machines:
  - {{id: fast, location: bay, capabilities: {{milling: 30.0}}}}
  - {{id: slow, location: bay, capabilities: {{milling: 120.0}}}}
  - {{id: deb1, location: bay, capabilities: {{deburr: 10.0}}}}
products:
  - id: part
    routing:
      - {{op: prep, capability: deburr}}
      - {{op: cut, capability: milling}}
      - {{op: finish, capability: deburr}}
orders:
  - {{id: o-1, product: part, quantity: {quantity}, release_at: 0, due_at: {due_at}}}
escalation:
  late_reroute: {{late_by_s: 60}}
"""
FAST_BREAKS = """\
name: fast_breaks
mtbf_breakdowns: false
breakdowns:
  - {{resource: fast, at_s: {at_s}, repair_s: {repair_s}}}
"""
# both mills down from 900 s: mill1 back at 2400 s, mill2 at 2460 s
MILLS_DOWN = """\
name: mills_down
mtbf_breakdowns: false
breakdowns:
  - {resource: mill1, at_s: 900, repair_s: 1500}
  - {resource: mill2, at_s: 900, repair_s: 1560}
"""


def events(cell: VirtualCell, name: str) -> list[dict]:
    return [e for e in map(json.loads, cell.events) if e["ev"] == name]


def late_cell(tmp_path: Path, *, quantity: int = 4, due_at: float = 350.0, at_s: float = 100.0,
              repair_s: float = 300.0, **kw: object) -> VirtualCell:
    cell_file = tmp_path / "cell.yaml"
    cell_file.write_text(LATE_CELL.format(quantity=quantity, due_at=due_at))
    faults = tmp_path / "faults.yaml"
    faults.write_text(FAST_BREAKS.format(at_s=at_s, repair_s=repair_s))
    cfg = load_cell(cell_file)
    return VirtualCell(cfg, seed=1, faults=load_faults(faults, cfg), **kw)  # type: ignore[arg-type]


def mills_cell(tmp_path: Path, **kw: object) -> VirtualCell:
    faults = tmp_path / "mills_down.yaml"
    faults.write_text(MILLS_DOWN)
    cfg = load_cell(DEMO)
    return VirtualCell(cfg, seed=1, faults=load_faults(faults, cfg), **kw)  # type: ignore[arg-type]


def finish(cell: VirtualCell) -> dict:
    cell.env.run(until=cell._all_done)
    cell.ended_by = "completed"
    return build_report(cell)


def option_ids(cell: VirtualCell, esc_id: str) -> list[str]:
    return [o.id for o in cell.console.store.get(esc_id).options]  # type: ignore[union-attr]


# -- the prediction ---------------------------------------------------------------------------

def test_the_split_prediction_balances_the_two_branches() -> None:
    # 4 units; now on a slow machine (60 s/unit from t=100), or on the fast one (30 s/unit)
    # once repaired at 400; 10 s/unit of work after this operation
    plan = plan_split(1, 4, 10.0, first="slow", first_start_at=100.0, first_unit_s=60.0,
                      second="fast", second_start_at=400.0, second_unit_s=30.0,
                      unsplit_finish_at=560.0)
    assert plan is not None
    # n = 1: max(100 + 70, 400 + 3 * 40) = 520;  n = 2: max(240, 480) = 480;
    # n = 3: max(310, 440) = 440;  n = 4 is not a split
    assert (plan.first, plan.second) == (3, 1)
    assert (plan.first_finish_at, plan.second_finish_at, plan.finish_at) == (310.0, 440.0, 440.0)
    ctx = plan.to_context(due_at=350.0)
    assert ctx["late_by_s"] == 90.0 and ctx["saves_s"] == 120.0
    assert [(b["units"], b["resource"], b["finish_at"]) for b in ctx["branches"]] == [
        (3, "slow", 310.0), (1, "fast", 440.0)]
    # ties go to fewer units on the first branch
    even = plan_split(0, 2, 0.0, first="a", first_start_at=0.0, first_unit_s=10.0,
                      second="b", second_start_at=0.0, second_unit_s=10.0,
                      unsplit_finish_at=20.0)
    assert even is not None and (even.first, even.second, even.finish_at) == (1, 1, 10.0)


def test_no_split_without_a_gain_or_of_a_single_unit() -> None:
    kw: dict[str, Any] = {"first": "slow", "first_start_at": 100.0, "first_unit_s": 60.0,
                          "second": "fast", "second_start_at": 400.0, "second_unit_s": 30.0}
    assert plan_split(1, 1, 10.0, unsplit_finish_at=10_000.0, **kw) is None   # one unit
    # waiting for the fast machine with all 4 finishes at 560; a split at 440 at best
    assert plan_split(1, 4, 10.0, unsplit_finish_at=440.0, **kw) is None
    assert plan_split(1, 4, 10.0, unsplit_finish_at=441.0, **kw) is not None


# -- late re-route: some units now on the slow machine, the rest after the repair --------------

def test_a_supervisor_splits_a_late_reroute(tmp_path: Path) -> None:
    cell = late_cell(tmp_path, escalations_db=str(tmp_path / "esc.db"))
    cell.run(until=110.0)
    [raised] = events(cell, "escalation_raised")
    assert (raised["escalation"], raised["cause"]) == ("o-1/e1", "late_reroute")
    rec = cell.console.store.get("o-1/e1")  # type: ignore[union-attr]
    assert [o.id for o in rec.options] == ["reroute", "wait_for_repair", "split", "cancel"]
    split = rec.option("split")
    assert split is not None and split.label == "Split the order: 2 + 2 units"
    pred = rec.context["split"]
    assert pred["op_index"] == 1
    # prep 0.05..40.05 s; fast failed at 100; slow bid 120 s/unit from ~100 s
    [slow, fast] = pred["branches"]
    assert (slow["units"], slow["resource"], fast["units"], fast["resource"]) == (
        2, "slow", 2, "fast")
    assert fast["start_at"] == 400.0 and fast["finish_at"] == pytest.approx(400 + 2 * 30 + 2 * 10)
    assert slow["finish_at"] == pytest.approx(slow["start_at"] + 2 * 120 + 2 * 10)
    assert pred["finish_at"] == max(slow["finish_at"], fast["finish_at"])
    assert pred["late_by_s"] == pytest.approx(pred["finish_at"] - 350.0)
    assert f"order finishes about {pred['finish_at']:.0f} s" in split.effect
    assert pred["saves_s"] > 0                         # better than re-route or wait

    cell.acknowledge("o-1/e1", "carol")
    cell.decide("o-1/e1", "carol", "split", "half now, half on the fast mill")
    report = finish(cell)

    [lot_split] = events(cell, "lot_split")
    assert lot_split["lots"] == {"o-1": 2, "o-1/b": 2} and lot_split["user"] == "carol"
    ok = {e["task"]: e for e in events(cell, "op_done") if e["quality"] == "ok"}
    assert set(ok) == {"o-1/0", "o-1/1", "o-1/2", "o-1/b/1", "o-1/b/2"}
    assert ok["o-1/1"]["machine"] == "slow" and ok["o-1/b/1"]["machine"] == "fast"
    starts = {e["task"]: e for e in events(cell, "op_start")}
    assert starts["o-1/1"]["t"] < 400.0 <= starts["o-1/b/1"]["t"]   # lot b waited for fast
    # the machines were told each lot's quantity: 2 units each
    durations = {e["task"]: e["duration_s"] for e in events(cell, "started")}
    assert durations["o-1/1"] == 240.0 and durations["o-1/b/1"] == 60.0
    [done] = events(cell, "order_completed")
    assert done["t"] >= max(e["t"] for e in ok.values())          # when both lots are done
    assert done["t"] == pytest.approx(pred["finish_at"], abs=2.0)  # as predicted
    assert done["lots"] == {"o-1": 2, "o-1/b": 2}
    assert report["orders_completed"] == 1 and report["orders_split"] == 1
    assert report["operations"] == 5
    # each lot's operations count its own units in the KPIs (4 prepared, 2 + 2 cut, finished)
    units = {m: row["units_produced"] for m, row in report["kpis"]["machines"].items()}
    assert units == {"fast": 2, "slow": 2, "deb1": 8}
    assert report["kpis"]["cell"]["units_finished"] == 4
    assert report["tardiness_total"] == pytest.approx(done["t"] - 350.0, abs=1e-6)
    assert all(report["invariants"].values()), report["invariant_violations"]
    applied = [(e["option"], e["user"]) for e in events(cell, "decision_applied")]
    assert applied == [("split", "carol")]
    store = EscalationStore(tmp_path / "esc.db")            # a fresh connection: on disk
    audit = [(a.actor, a.action, a.details.get("option")) for a in store.audit()
             if a.escalation == "o-1/e1"]
    assert ("carol", "decide", "split") in audit
    assert store.get("o-1/e1").decided_by == "carol" and store.verify().ok


def test_split_is_not_offered_for_a_single_unit(tmp_path: Path) -> None:
    # one unit: prep 10 s, cut 30 s on fast (10..40) breaks at 20, back at 320; slow takes
    # 120 s: 150 against due 60
    cell = late_cell(tmp_path, quantity=1, due_at=60.0, at_s=20.0)
    cell.run(until=30.0)
    [raised] = events(cell, "escalation_raised")
    assert raised["cause"] == "late_reroute"
    assert option_ids(cell, raised["escalation"]) == ["reroute", "wait_for_repair", "cancel"]
    with pytest.raises(UnknownOption):                  # the console refuses to send it
        cell.decide(raised["escalation"], "carol", "split", "")
    # a split decision reaching the order anyway is refused there too: the order is not
    # split and goes on as for the other choice of the cause (re-route)
    order = cell.agents["o-1"]
    cell.runner.execute(order.id, order.on_message(
        Message("console", "o-1", raised["escalation"], b"x" * 16, 0, 0, cell.env.now,
                Decision(raised["escalation"], "split", "carol")), cell.env.now), cell.env.now)
    report = finish(cell)
    assert not events(cell, "lot_split") and events(cell, "split_refused")
    assert report["orders_completed"] == 1 and report["orders_split"] == 0
    assert all(report["invariants"].values()), report["invariant_violations"]


# -- every capable machine down: some units on the first one back, the rest on the second ----

def test_a_supervisor_splits_an_order_no_machine_can_do(tmp_path: Path) -> None:
    cell = mills_cell(tmp_path)
    cell.run(until=950.0)
    # o-012 (5 housings) was released at 900, when both mills broke
    assert option_ids(cell, "o-012/e1") == ["wait_for_repair", "split", "cancel"]
    pred = cell.console.store.get("o-012/e1").context["split"]  # type: ignore[union-attr]
    assert [(b["units"], b["resource"], b["start_at"]) for b in pred["branches"]] == [
        (3, "mill1", 2400.0), (2, "mill2", 2460.0)]
    cell.decide("o-012/e1", "dave", "split", "both mills are back within a minute")
    report = finish(cell)
    [lot_split] = events(cell, "lot_split")
    assert lot_split["lots"] == {"o-012": 3, "o-012/b": 2} and lot_split["op_index"] == 0
    ok = {e["task"] for e in events(cell, "op_done") if e["quality"] == "ok"
          and e["task"].startswith("o-012/")}
    assert {f"o-012/{k}" for k in range(4)} | {f"o-012/b/{k}" for k in range(4)} == ok
    starts = {e["task"]: e["t"] for e in events(cell, "op_start")}
    assert starts["o-012/b/0"] >= 2460.0               # lot b waited for the second mill
    [done] = [e for e in events(cell, "order_completed") if e["order"] == "o-012"]
    assert done["lots"] == {"o-012": 3, "o-012/b": 2}
    assert report["orders_completed"] == 24 and report["orders_split"] == 1
    assert all(report["invariants"].values()), report["invariant_violations"]


def test_offering_a_split_that_nobody_takes_changes_nothing(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    """The split option is only data in the escalation: a run where nobody chooses it keeps
    the event log of a run that never offers it."""
    offered = mills_cell(tmp_path)
    offered.run()
    assert "split" in option_ids(offered, "o-012/e1")
    monkeypatch.setattr("agents.order.exceptions.split_when_back", lambda *_: None)
    plain = mills_cell(tmp_path)
    plain.run()
    assert "split" not in option_ids(plain, "o-012/e1")
    assert offered.event_log_sha256() == plain.event_log_sha256()
    assert not events(offered, "lot_split")


# -- the invariants know lots -----------------------------------------------------------------

def test_routing_order_of_a_split_lot_follows_the_orders_earlier_operations() -> None:
    split = {"ev": "lot_split", "order": "o", "op_index": 1, "lots": {"o": 2, "o/b": 2},
             "t": 5.0}

    def op(ev: str, task: str, t: float) -> dict:
        return {"ev": ev, "task": task, "t": t, "quality": "ok", "machine": "m"}

    evs = [op("op_start", "o/0", 0.0), op("op_done", "o/0", 4.0), split,
           op("op_start", "o/b/1", 6.0), op("op_done", "o/b/1", 7.0),
           op("op_start", "o/b/2", 8.0)]
    assert routing_order(evs) == []
    early = [op("op_start", "o/0", 0.0), split, op("op_start", "o/b/1", 2.0),
             op("op_done", "o/0", 4.0)]
    assert routing_order(early) == ["t=2.0: o/b/1 started before o/0 finished"]
    skipped = [op("op_done", "o/0", 4.0), split, op("op_start", "o/b/2", 6.0)]
    assert routing_order(skipped) == ["t=6.0: o/b/2 started before o/b/1 finished"]


def test_a_split_order_is_complete_only_with_both_lots() -> None:
    split = {"ev": "lot_split", "order": "o", "op_index": 1, "lots": {"o": 2, "o/b": 2},
             "t": 5.0}
    done = [{"ev": "op_done", "task": t, "quality": "ok", "t": 9.0}
            for t in ("o/0", "o/1", "o/2", "o/b/1")]
    completed = {"ev": "order_completed", "order": "o", "t": 10.0}
    assert orders_accounted([split, *done, completed], ["o"], "completed") == [
        "order o completed, but its lot o/b never did operations [2]"]
    full = [*done, {"ev": "op_done", "task": "o/b/2", "quality": "ok", "t": 9.5}]
    assert orders_accounted([split, *full, completed], ["o"], "completed") == []


# -- the web console shows the option like any other, and a decision there splits -------------

def test_the_console_offers_split_and_a_supervisor_decides_it_there(tmp_path: Path) -> None:
    from ops.console.app import ConsoleSettings, create_app
    from ops.console.store_backend import StoreBackend
    from ops.console.users import UserStore

    db = tmp_path / "esc.db"
    cell = late_cell(tmp_path, escalations_db=str(db))
    cell.run(until=110.0)
    users = UserStore(tmp_path / "users.db")
    users.add("erin", "supervisor", "erin-password-1")
    client = TestClient(create_app(StoreBackend(db), users, ConsoleSettings(cell="split-late")),
                        follow_redirects=False)

    def csrf(path: str) -> str:
        r = client.get(path)
        assert r.status_code == 200, (path, r.status_code)
        return re.search(r'name="csrf" value="([^"]+)"', r.text).group(1)  # type: ignore[union-attr]

    r = client.post("/login", data={"username": "erin", "password": "erin-password-1",
                                    "csrf": csrf("/login"), "next": "/"})
    assert r.status_code == 303
    page = client.get("/escalations/o-1/e1").text
    assert "Split the order: 2 + 2 units" in page and "2 units on slow from" in page
    token = csrf("/escalations/o-1/e1")
    r = client.post("/escalations/o-1/e1/decide",
                    data={"csrf": token, "option": "split", "reason": "half now"})
    assert r.status_code in (200, 303), r.text
    # the run picks up the decision the console queued (as a paced run does every 0.2 s)
    cell.runner.execute("console", cell.console.sync(cell.env.now), cell.env.now)  # type: ignore[union-attr]
    report = finish(cell)
    [lot_split] = events(cell, "lot_split")
    assert lot_split["user"] == "erin"
    assert report["orders_completed"] == 1 and report["orders_split"] == 1
    assert all(report["invariants"].values()), report["invariant_violations"]
