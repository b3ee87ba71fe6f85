"""The spare-parts stores agent and the machine's part reservation (negotiated maintenance).

The stores are pure underneath (agents/maintenance/stores.py): a Hypothesis stream
of reservations, consumptions, releases and expiries never holds one unit for two
jobs nor a consumed unit again.  The agent answers a repeated request with the
same unit, orders from the supplier when stock falls to the reorder point, and a
reservation ends by itself.  A machine holds its part before it asks the crew,
plans its window from the part's ETA, escalates a part that comes too late to the
console and acts on the decision (expedite).  Whole demo cells run in virtual time
with ``maintenance.negotiate``: an empty shelf, a crashed stores agent, and every
run invariant kept (``no_part_used_twice`` read from the stores' own lines too).
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.base import Timing
from agents.cell.maintenance import PartStock
from agents.maintenance.stores import Stores, StoresAgent
from agents.protocol.actions import Action, SetTimer
from agents.protocol.messages import (
    MaintOffer,
    MaintRequest,
    Message,
    PartConsumed,
    PartExpedite,
    PartRelease,
    PartReserve,
    PartReserved,
    PartUnavailable,
)
from ops.bench.maintenance import demo_cell, negotiating, with_orders
from ops.maintenance import models_from_cell
from sim_bridge.maintenance import invariants
from sim_bridge.maintenance.policies import attach
from tests.helpers.actions import logs as _logs
from tests.helpers.actions import message
from tests.helpers.actions import sends as _sends
from tests.helpers.worn import Worn as _Worn


def _msg(sender: str, body: Any, to: str = "stores") -> Message:
    return message(sender, to, body)


RULE = PartStock(stock=2, reorder_point=0, order_qty=2, lead_time_s=1000.0, cost=100.0,
                 expedite_lead_s=100.0, expedite_cost=50.0)


def _stores(rule: PartStock = RULE) -> StoresAgent:
    return StoresAgent("stores", timing=Timing(), rule=lambda _part: rule)


# --------------------------------------------------------------------------- the books


_ops = st.lists(st.tuples(
    st.sampled_from(["reserve", "reserve", "consume", "release", "advance"]),
    st.integers(0, 3),                          # machine
    st.floats(0.0, 500.0, allow_nan=False),     # need (from now) or time step
), max_size=60)


@given(_ops, st.integers(0, 3), st.integers(0, 2))
@settings(max_examples=300, deadline=None)
def test_a_unit_is_never_held_twice_nor_after_it_was_consumed(ops: list, stock: int,
                                                              reorder: int) -> None:
    s = Stores(lambda _p: PartStock(stock=stock, reorder_point=reorder, order_qty=1,
                                    lead_time_s=300.0))
    now, jobs, consumed = 0.0, 0, set()
    for op, m, x in ops:
        mine = [r for r in s.reservations.values() if r.machine == f"m{m}"]
        if op == "reserve":
            jobs += 1
            r, new, _, moved = s.reserve(f"m{m}", PartReserve(f"m{m}/j{jobs}", "p",
                                                              now + x, 60.0), now)
            if moved is not None:               # a need due now took a later need's unit
                assert x <= 1e-9 and moved.serial not in consumed
                assert moved.expires_at >= max(moved.need_by_at, s.ready_at(moved)) + 60.0 - 1e-9
            assert new and r.serial not in consumed
            assert r.expires_at >= max(now + x, s.ready_at(r)) + 60.0 - 1e-9
        elif op == "consume" and mine:
            r = mine[0]
            assert s.consume(r.machine, r.job, r.serial) is not None
            assert s.consume(r.machine, r.job, r.serial) is None     # a repeat: nothing
            consumed.add(r.serial)
        elif op == "release" and mine:
            s.drop(mine[0].key)
        else:
            now += x
            assert all(r.expires_at <= now for r in s.expire(now))
        b = s.bin("p")
        holders = [r.serial for r in s.reservations.values()]
        assert len(holders) == len(set(holders)) == len(b.held)
        assert not consumed & set(b.arrives_at) and not consumed & set(b.held)


# --------------------------------------------------------------------------- the agent


def test_a_reservation_is_held_answered_again_and_consumed_once() -> None:
    st_ = _stores()
    out = st_.on_message(_msg("mill1", PartReserve("mill1/m1", "b", 500.0, 60.0)), 10.0)
    (ans,) = _sends(out)
    assert ans == PartReserved("mill1/m1", "b", "b#s1", 0.0, 560.0)
    assert SetTimer("expiry", 560.0) in out and len(_logs(out, "part_held")) == 1
    # a repeat: the same unit, the hold extended to the later need, no second unit
    again = st_.on_message(_msg("mill1", PartReserve("mill1/m1", "b", 700.0, 60.0)), 11.0)
    assert _sends(again) == [PartReserved("mill1/m1", "b", "b#s1", 0.0, 760.0)]
    assert not _logs(again, "part_held")
    # the second unit goes to another machine; the free stock is at the reorder point
    out = st_.on_message(_msg("mill2", PartReserve("mill2/m1", "b", 500.0, 60.0)), 12.0)
    assert _sends(out)[0].serial == "b#s2"
    (placed,) = _logs(out, "part_order_placed")
    assert placed["qty"] == 2 and placed["due_at"] == 1012.0
    # only the holder consumes; a repeat changes nothing
    assert st_.on_message(_msg("mill2", PartConsumed("mill1/m1", "b#s1")), 13.0) == []
    done = st_.on_message(_msg("mill1", PartConsumed("mill1/m1", "b#s1")), 13.0)
    assert _logs(done, "part_consumed")[0]["serial"] == "b#s1"
    assert st_.on_message(_msg("mill1", PartConsumed("mill1/m1", "b#s1")), 14.0) == []
    assert st_.on_message(_msg("mill1", PartRelease("mill1/m1")), 14.0) == []
    assert "b#s1" not in st_.stores.bin("b").arrives_at and st_.ignored == 3


def test_a_stock_out_orders_from_the_supplier_and_answers_with_the_eta() -> None:
    st_ = _stores(RULE.model_copy(update={"stock": 0}))
    out = st_.on_message(_msg("mill1", PartReserve("mill1/m1", "b", 500.0, 60.0)), 10.0)
    (ans,) = _sends(out)
    assert ans == PartUnavailable("mill1/m1", "b", "b#s1", 1010.0, 1070.0)
    assert _logs(out, "part_stock_out") and SetTimer("deliver:b/o1", 1010.0) in out
    # a need after the delivery: reserved, against the order's second unit
    out = st_.on_message(_msg("lathe1", PartReserve("lathe1/m1", "b", 1500.0, 60.0)), 20.0)
    assert _sends(out) == [PartReserved("lathe1/m1", "b", "b#s2", 1010.0, 1560.0)]
    delivered = st_.on_timer("deliver:b/o1", 1010.0)
    assert _logs(delivered, "part_delivered")[0]["on_shelf"] == 2


def test_expedite_brings_the_delivery_forward_at_a_cost() -> None:
    st_ = _stores(RULE.model_copy(update={"stock": 0}))
    st_.on_message(_msg("mill1", PartReserve("mill1/m1", "b", 500.0, 60.0)), 10.0)
    out = st_.on_message(_msg("mill1", PartExpedite("mill1/m1")), 200.0)
    (exp,) = _logs(out, "part_expedited")
    assert (exp["due_at"], exp["cost"]) == (300.0, 50.0)
    assert SetTimer("deliver:b/o1", 300.0) in out
    assert _sends(out) == [PartReserved("mill1/m1", "b", "b#s1", 300.0, 1070.0)]
    # a repeat costs nothing more; the old delivery time finds nothing to deliver
    assert not _logs(st_.on_message(_msg("mill1", PartExpedite("mill1/m1")), 201.0),
                     "part_expedited")
    assert _logs(st_.on_timer("deliver:b/o1", 300.0), "part_delivered")
    assert st_.on_timer("deliver:b/o1", 1010.0) == []


def test_a_reservation_nobody_uses_expires_and_the_unit_is_free_again() -> None:
    st_ = _stores()
    st_.on_message(_msg("mill1", PartReserve("mill1/m1", "b", 100.0, 60.0)), 0.0)
    gone = st_.on_timer("expiry", 160.0)
    assert _logs(gone, "part_reservation_expired")[0]["serial"] == "b#s1"
    assert st_.stores.reservations == {}
    out = st_.on_message(_msg("mill2", PartReserve("mill2/m1", "b", 300.0, 60.0)), 170.0)
    assert _sends(out)[0].serial == "b#s1"                # back on the free stock


def _waiting_repairs(st_: StoresAgent) -> None:
    """Stock 1: mill2's window holds the shelf unit past its need (not bumpable), then
    mill1 and lathe1 fail and wait for units on order."""
    st_.on_message(_msg("mill2", PartReserve("mill2/m1", "b", 100.0, 60.0)), 10.0)
    for at, m in ((150.0, "mill1"), (160.0, "lathe1")):
        out = st_.on_message(_msg(m, PartReserve(f"{m}/r1", "b", at, 600.0)), at)
        assert isinstance(_sends(out)[0], PartUnavailable)          # on order


def test_a_unit_released_on_the_shelf_goes_to_the_earliest_waiting_repair() -> None:
    st_ = _stores(RULE.model_copy(update={"stock": 1, "order_qty": 1}))
    _waiting_repairs(st_)
    b = st_.stores.bin("b")
    was = st_.stores.reservations["mill1|mill1/r1"].serial
    out = st_.on_message(_msg("mill2", PartRelease("mill2/m1")), 200.0)
    # the freed unit goes to mill1 (failed first), ready now; lathe1 keeps waiting
    assert _sends(out) == [PartReserved("mill1/r1", "b", "b#s1", 0.0, 800.0)]
    (moved,) = _logs(out, "part_reassigned")
    assert (moved["machine"], moved["serial"], moved["was"]) == ("mill1", "b#s1", was)
    assert st_.stores.reservations["lathe1|lathe1/r1"].serial not in ("b#s1", was)
    # one set of books: each unit held once, the unit on order back on the free stock
    assert sorted(b.held) == sorted(r.serial for r in st_.stores.reservations.values())
    assert was in b.free() and len(b.held) == 2
    done = st_.on_message(_msg("mill1", PartConsumed("mill1/r1", "b#s1")), 900.0)
    assert _logs(done, "part_consumed")[0]["serial"] == "b#s1"


def test_a_unit_freed_by_an_expiry_goes_to_a_waiting_repair() -> None:
    st_ = _stores(RULE.model_copy(update={"stock": 1, "order_qty": 1}))
    _waiting_repairs(st_)
    out = st_.on_timer("expiry", 160.0)                 # mill2's hold ends at 100 + 60
    assert _logs(out, "part_reservation_expired")[0]["machine"] == "mill2"
    assert _sends(out) == [PartReserved("mill1/r1", "b", "b#s1", 0.0, 760.0)]


def test_a_planned_need_still_ahead_does_not_take_a_freed_unit() -> None:
    st_ = _stores(RULE.model_copy(update={"stock": 1, "order_qty": 1}))
    st_.on_message(_msg("mill2", PartReserve("mill2/m1", "b", 100.0, 60.0)), 10.0)
    st_.on_message(_msg("mill1", PartReserve("mill1/m1", "b", 900.0, 60.0)), 20.0)
    out = st_.on_message(_msg("mill2", PartRelease("mill2/m1")), 50.0)
    assert _sends(out) == [] and not _logs(out, "part_reassigned")


# --------------------------------------------------------------------------- the machine


def _mill() -> Any:
    from agents.base import PlantEventIn
    from agents.cell.build import build_agents, policy_of

    cfg = negotiating(demo_cell())
    mill = build_agents(cfg, 1, escalation=policy_of(cfg))["mill1"]
    mill.maint.estimator = _Worn(mill.maint.estimator.model)    # type: ignore[attr-defined]
    out = mill.on_plant_event(PlantEventIn("reading", "mill1", "", {"vibration_mm_s": 5.0}),
                              10.0)
    return mill, out


def test_the_machine_holds_its_part_before_it_asks_for_a_window_from_the_eta() -> None:
    mill, out = _mill()
    w = mill.maint
    (hold,) = _sends(out)                                 # the stores first, not the crew
    assert isinstance(hold, PartReserve) and hold.need_by_at == pytest.approx(w.latest_start_at)
    assert _sends(mill.on_timer("maint_retry", 15.0)) == [hold]      # resent until answered
    ready = w.latest_start_at - 50.0                      # due from the supplier, in time
    out = mill.on_message(_msg("stores", PartReserved(hold.job, hold.part, "spindle_bearing#s3",
                                                      ready, ready + 900.0), to="mill1"), 16.0)
    (req,) = _sends(out)
    assert isinstance(req, MaintRequest) and req.earliest_at >= ready
    assert _logs(out, "maint_part")[0]["late"] is False
    # a repeated answer changes nothing; an answer for another job is given back
    assert mill.on_message(_msg("stores", PartReserved(hold.job, hold.part,
                                                       "spindle_bearing#s3", ready,
                                                       ready + 900.0), to="mill1"), 17.0) == []
    assert _sends(mill.on_message(_msg("stores", PartReserved("mill1/m0", hold.part, "x#s1",
                                                              0.0, 1.0), to="mill1"), 17.0)) \
        == [PartRelease("mill1/m0")]
    # the window's start names the unit to the plant
    mill.on_message(_msg("crew", MaintOffer(req.job, "tech1", req.earliest_at,
                                            req.earliest_at + 400.0), to="mill1"), 18.0)
    from agents.protocol.messages import MaintStart
    out = mill.on_message(_msg("crew", MaintStart(req.job, "tech1"), to="mill1"),
                          req.earliest_at)
    cmd = next(a for a in out if getattr(a, "command", "") == "set_state")
    assert cmd.args["part_serial"] == "spindle_bearing#s3"


def test_no_part_in_time_reaches_the_console_and_the_expedite_is_acted_on() -> None:
    from agents.protocol.messages import Decision, Escalate

    mill, out = _mill()
    w = mill.maint
    (hold,) = _sends(out)
    eta = w.latest_start_at + 1000.0
    out = mill.on_message(_msg("stores", PartUnavailable(hold.job, hold.part, "spindle_bearing#s5",
                                                         eta, eta + 900.0), to="mill1"), 11.0)
    (esc,) = [b for b in _sends(out) if isinstance(b, Escalate)]
    assert esc.cause == "maintenance_no_part" and esc.safe_default == "expedite_part"
    assert {o["id"] for o in esc.options} == {"run_to_failure", "stop_now", "expedite_part"}
    assert esc.context["eta_at"] == pytest.approx(eta)
    (req,) = [b for b in _sends(out) if isinstance(b, MaintRequest)]
    assert req.earliest_at >= eta                          # the window from the ETA on
    # the crew's window after the latest safe start is the part's doing: no second case
    out = mill.on_message(_msg("crew", MaintOffer(req.job, "tech1", eta, eta + 400.0),
                               to="mill1"), 12.0)
    assert not [b for b in _sends(out) if isinstance(b, Escalate)]
    out = mill.on_message(_msg("console", Decision(esc.escalation, "expedite_part", "ana"),
                               to="mill1"), 13.0)
    assert PartExpedite(hold.job) in _sends(out)
    # the stores bring it forward: the late window is given back and asked for anew
    soon = w.latest_start_at - 100.0
    out = mill.on_message(_msg("stores", PartReserved(hold.job, hold.part, "spindle_bearing#s5",
                                                      soon, eta + 900.0), to="mill1"), 14.0)
    sent = _sends(out)
    assert any(getattr(b, "outcome", "") == "declined" for b in sent)
    (again,) = [b for b in sent if isinstance(b, MaintRequest)]
    assert again.attempt == 1 and soon <= again.earliest_at <= w.latest_start_at


def test_a_cancelled_window_gives_its_part_back() -> None:
    mill, out = _mill()
    (hold,) = _sends(out)
    mill.on_message(_msg("stores", PartReserved(hold.job, hold.part, "spindle_bearing#s1", 0.0,
                                                2000.0), to="mill1"), 11.0)
    from agents.base import PlantEventIn
    out = mill.on_plant_event(PlantEventIn("fault", "mill1", "", {"reason": "breakdown"}), 12.0)
    assert PartRelease(hold.job) in _sends(out)


# --------------------------------------------------------------------------- whole cells


def _run(hours: float = 1.0, seed: int = 1, faults: Any = None, part: dict | None = None,
         **maintenance: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from sim_bridge.report import build_report
    from sim_bridge.virtual import VirtualCell

    cfg = negotiating(with_orders(demo_cell(), seed, hours))
    assert cfg.maintenance is not None
    if part:
        parts = {n: p.model_copy(update=part) for n, p in cfg.maintenance.parts.items()}
        maintenance["parts"] = parts
    if maintenance:
        cfg = cfg.model_copy(update={"maintenance": cfg.maintenance.model_copy(
            update=maintenance)})
    cell = VirtualCell(cfg, seed=seed, faults=faults)
    attach(cell, "negotiated", models_from_cell(cfg))
    cell.run(until=hours * 3600.0)
    return [json.loads(line) for line in cell.events], build_report(cell)


def _ok(rep: dict[str, Any]) -> None:
    assert all(rep["invariants"].values()), rep["invariant_violations"]
    assert "no_part_used_twice" in rep["invariants"]


def test_the_part_is_held_fitted_and_consumed_once() -> None:
    evs, rep = _run()
    _ok(rep)
    held = {e["job"]: e["serial"] for e in evs if e["ev"] == "part_held"}
    fitted = [e for e in evs if e["ev"] == "maintenance_start" and e["kind"] == "planned"]
    consumed = {e["job"]: e["serial"] for e in evs if e["ev"] == "part_consumed"}
    assert fitted and consumed
    assert {e["part_serial"] for e in fitted} <= set(held.values())
    assert all(held[j] == s for j, s in consumed.items())
    assert not [e for e in evs if e["ev"] == "stock_out"]   # the simulator's shelf unasked


def test_an_empty_shelf_orders_and_the_window_waits_for_the_delivery() -> None:
    evs, rep = _run(hours=1.5, part={"stock": 0, "lead_time_s": 900.0})
    _ok(rep)
    outs = [e for e in evs if e["ev"] == "part_stock_out"]
    assert outs and [e for e in evs if e["ev"] == "part_order_placed"]
    ready = {e["job"]: e["ready_at"] for e in evs if e["ev"] == "maint_part"}
    windows = [e for e in evs if e["ev"] == "maint_window" and e["job"] in ready]
    assert windows and all(w["start_at"] >= ready[w["job"]] - 1e-6 for w in windows)
    first = outs[0]
    assert ready[first["job"]] == pytest.approx(first["t"] + 900.0, abs=0.01)


def test_a_part_too_late_is_escalated_and_the_safe_default_expedites_it() -> None:
    evs, rep = _run(hours=1.5, part={"stock": 0, "lead_time_s": 3600.0,
                                     "expedite_lead_s": 300.0})
    _ok(rep)
    raised = [e for e in evs if e["ev"] == "escalation_raised"
              and e["cause"] == "maintenance_no_part"]
    assert raised
    applied = [e for e in evs if e["ev"] == "maint_decision"
               and e["agent"] == raised[0]["resource"]]
    assert applied and applied[0]["option"] == "expedite_part"   # unanswered: the default
    expedited = [e for e in evs if e["ev"] == "part_expedited"]
    assert expedited and expedited[0]["t"] == pytest.approx(applied[0]["t"], abs=0.1)
    assert expedited[0]["due_at"] == pytest.approx(expedited[0]["t"] + 300.0, abs=0.01)


def test_a_crashed_stores_agent_comes_back_and_its_reservations_expire() -> None:
    from agents.cell.faults import FaultScenario

    evs, _ = _run()
    held = next(e for e in evs if e["ev"] == "part_held")
    crash_at = held["t"] + 1.0                          # held, not yet fitted
    faults = FaultScenario(name="stores-crash", mtbf_breakdowns=False,
                           crashes=[{"agent": "stores", "at_s": crash_at, "down_s": 1800.0}])
    evs, rep = _run(hours=1.5, faults=faults)
    _ok(rep)
    # the window went ahead with the unit held; its part_consumed was lost with the stores,
    # so the reservation ended by itself once the stores were back from their journal
    fitted = [e for e in evs if e["ev"] == "maintenance_start"
              and e["part_serial"] == held["serial"]]
    assert len(fitted) == 1
    expired = [e for e in evs if e["ev"] == "part_reservation_expired"
               and e["job"] == held["job"]]
    assert expired and expired[0]["t"] >= crash_at + 1800.0
    serials = [e["part_serial"] for e in evs if e["ev"] == "maintenance_start"]
    assert len(serials) == len(set(serials))            # the plant never fits one twice


def test_the_invariant_reads_the_stores_lines() -> None:
    def log(t: float, ev: str, **f: Any) -> dict[str, Any]:
        return {"t": t, "ev": ev, **f}
    evs = [log(1.0, "part_held", serial="b#s1", job="m1/m1"),
           log(2.0, "part_consumed", serial="b#s1", job="m1/m1"),
           log(3.0, "part_held", serial="b#s1", job="m2/m1")]
    assert len(invariants.parts_used_once(evs)) == 1
    assert invariants.parts_used_once(evs[:2]) == []


def test_lost_duplicated_and_reordered_messages_never_use_a_unit_twice() -> None:
    from agents.cell.faults import FaultScenario

    faults = FaultScenario(name="lossy", mtbf_breakdowns=False,
                           network={"loss": 0.1, "duplication": 0.3, "reorder": 0.2})
    evs, rep = _run(hours=1.5, faults=faults)
    _ok(rep)
    held = [e for e in evs if e["ev"] == "part_held"]
    assert len({(e["machine"], e["job"]) for e in held}) == len(held)   # one unit per job
    serials = [e["part_serial"] for e in evs if e["ev"] == "maintenance_start"]
    assert serials and len(serials) == len(set(serials))


def test_the_part_gauges_read_the_stores_agents_books() -> None:
    from sim_bridge.maintenance.metrics import families
    from sim_bridge.virtual import VirtualCell

    cfg = negotiating(with_orders(demo_cell(), 1, 1.0))
    cell = VirtualCell(cfg, seed=1)
    ctl = attach(cell, "negotiated", models_from_cell(cfg))
    cell.run(until=3600.0)
    gauges = {(f.name, s.labels.get("part")): s.value for f in families(ctl, cell.env.now)
              for s in f.samples}
    books = cell.runner.agents["stores"].stores                  # type: ignore[attr-defined]
    b = books.bins["spindle_bearing"]
    assert b.consumed                                             # a window fitted one
    assert gauges[("autocell_part_stock", "spindle_bearing")] == b.on_shelf(cell.env.now)
    assert gauges[("autocell_part_on_order", "spindle_bearing")] == \
        len(b.arrives_at) - b.on_shelf(cell.env.now)
    assert ("autocell_part_stock", "chuck_bearing") in gauges


def test_the_health_gauges_read_the_machine_agents_estimators_and_windows() -> None:
    from sim_bridge.maintenance.metrics import families
    from sim_bridge.virtual import VirtualCell

    cfg = negotiating(with_orders(demo_cell(), 1, 1.0), "threshold")
    cell = VirtualCell(cfg, seed=1)
    ctl = attach(cell, "negotiated", models_from_cell(cfg))
    cell.run(until=1230.0)          # seed 1: mill1 has asked for its window at 1 200 s
    got = {f.name: {tuple(s.labels.values()): s.value for s in f.samples}
           for f in families(ctl, cell.env.now)}
    agents = {m: cell.runner.agents[m].maint  # type: ignore[attr-defined]
              for m in ("mill1", "mill2", "lathe1")}
    planning = {(m,): w.latest_start_at for m, w in agents.items() if w.phase != "watch"}
    assert planning                 # a window asked for or booked, not yet done
    # the simulator's controller has no estimator under this policy: the agents' are shown
    assert all(pm.est is None for pm in ctl.machines.values())
    assert got["autocell_machine_health_index"] == {
        (m,): w.estimator.health() for m, w in agents.items()}
    assert got["autocell_machine_remaining_life_seconds"] == {
        (m,): q for m, w in agents.items() if math.isfinite(q := w.estimator.rul().quantile(0.5))}
    assert got["autocell_machine_maintenance_latest_start_seconds"] == planning
    assert got["autocell_maintenance_windows_planned"][()] == len(planning)


def test_a_unit_the_plant_fitted_before_is_reported_gone_and_another_held() -> None:
    from agents.protocol.messages import MaintStart

    mill, out = _mill()
    w = mill.maint
    (hold,) = _sends(out)
    (req,) = _sends(mill.on_message(_msg("stores", PartReserved(
        hold.job, hold.part, "spindle_bearing#s1", 0.0, 5000.0), to="mill1"), 11.0))
    mill.on_message(_msg("crew", MaintOffer(req.job, "tech1", req.earliest_at,
                                            req.earliest_at + 400.0), to="mill1"), 12.0)
    mill.on_message(_msg("crew", MaintStart(req.job, "tech1"), to="mill1"), req.earliest_at)
    out = w.on_refused(req.job, "part spindle_bearing#s1 used already", req.earliest_at)
    sent = _sends(out)
    assert sent[0] == PartConsumed(req.job, "spindle_bearing#s1")   # the books were wrong
    assert any(isinstance(b, PartReserve) for b in sent)          # hold another unit
    assert not any(isinstance(b, MaintRequest) for b in sent) and w.part_state == "reserving"


# --------------------------------------------------------------------------- a repair's part
# (ADR 71: a corrective repair holds its unit from the stores too; the plant's own shelf is
# not used under the negotiated policy)


def _failed_mill(at: float = 1000.0) -> tuple[Any, list[Any]]:
    """The machine of :func:`_mill` failing from wear after its fail-by (no prediction
    miss): its window given back, a repair asked of the stores and the crew at once."""
    from agents.base import PlantEventIn

    mill, _ = _mill()
    out = mill.on_plant_event(PlantEventIn("fault", "mill1", "", {"reason": "wear"}), at)
    return mill, _sends(out)


def test_a_repair_asks_the_stores_and_the_crew_at_once_names_the_unit_and_consumes_it() -> None:
    from agents.base import PlantEventIn
    from agents.protocol.messages import MaintRepair, MaintStart

    mill, sent = _failed_mill()
    assert PartRelease("mill1/m1") in sent                      # the window's unit given back
    (hold,) = [b for b in sent if isinstance(b, PartReserve)]
    (ask,) = [b for b in sent if isinstance(b, MaintRepair)]    # not after the stores' answer
    assert hold.job == ask.job == "mill1/r1" and hold.need_by_at == 1000.0
    # the technician overtakes the stores' answer: the start waits for the unit
    mill.on_message(_msg("crew", MaintOffer(ask.job, "tech1", 1000.5, 4000.0), to="mill1"),
                    1000.5)
    assert mill.on_message(_msg("crew", MaintStart(ask.job, "tech1"), to="mill1"), 1000.5) == []
    out = mill.on_message(_msg("stores", PartReserved(ask.job, hold.part, "spindle_bearing#s2",
                                                      0.0, 5000.0), to="mill1"), 1000.6)
    cmd = next(a for a in out if getattr(a, "command", "") == "set_state")
    assert cmd.args["state"] == "repair" and cmd.args["part_serial"] == "spindle_bearing#s2"
    out = mill.on_plant_event(PlantEventIn("repaired", "mill1", "", {"kind": "corrective"}),
                              1600.0)
    assert _sends(out).count(PartConsumed(ask.job, "spindle_bearing#s2")) == 1


def test_a_repairs_stock_out_holds_the_crew_until_the_eta_and_is_escalated() -> None:
    from agents.protocol.messages import Decision, Escalate, MaintRepair

    mill, sent = _failed_mill()
    w = mill.maint
    (ask,) = [b for b in sent if isinstance(b, MaintRepair)]
    eta = 1000.0 + 1800.0                                       # on order: the lead time
    out = mill.on_message(_msg("stores", PartUnavailable(ask.job, ask.part, "spindle_bearing#s5",
                                                         eta, eta + 3000.0), to="mill1"), 1000.2)
    (esc,) = [b for b in _sends(out) if isinstance(b, Escalate)]    # past a mean repair
    assert esc.cause == "maintenance_no_part" and esc.context["eta_at"] == pytest.approx(eta)
    assert SetTimer("maint_retry", eta) in out                  # the crew when the unit comes
    notice = next(a for a in out if getattr(a, "command", "") == "set_state")
    assert notice.args["technician"] == "" and notice.args["eta_at"] == eta   # awaited
    # the crew's offer made before the answer is given back: no technician waits idle
    out = mill.on_message(_msg("crew", MaintOffer(ask.job, "tech1", 1000.5, 4000.0),
                               to="mill1"), 1000.5)
    assert _declined(out)
    assert _sends(mill.on_timer("maint_retry", 1010.0)) == []    # nothing asked before the ETA
    # the safe default expedites the unit; its new ETA moves the crew's request forward
    out = mill.on_message(_msg("console", Decision(esc.escalation, "expedite_part", "ana"),
                               to="mill1"), 1600.0)
    assert PartExpedite(ask.job) in _sends(out)
    out = mill.on_message(_msg("stores", PartUnavailable(ask.job, ask.part, "spindle_bearing#s5",
                                                         2200.0, 5000.0), to="mill1"), 1600.1)
    assert SetTimer("maint_retry", 2200.0) in out
    (again,) = [b for b in _sends(mill.on_timer("maint_retry", 2200.0))
                if isinstance(b, MaintRepair)]
    assert again.attempt == 1 and w.part_serial == "spindle_bearing#s5"


def test_a_repair_waiting_for_a_unit_on_order_asks_the_crew_when_one_is_freed() -> None:
    from agents.protocol.messages import MaintRepair

    mill, sent = _failed_mill()
    (ask,) = [b for b in sent if isinstance(b, MaintRepair)]
    mill.on_message(_msg("stores", PartUnavailable(ask.job, ask.part, "spindle_bearing#s5",
                                                   2800.0, 5800.0), to="mill1"), 1000.2)
    # another machine's unit is released: the stores give it to this repair, ready now
    out = mill.on_message(_msg("stores", PartReserved(ask.job, ask.part, "spindle_bearing#s1",
                                                      0.0, 2000.0), to="mill1"), 1200.0)
    assert [b for b in _sends(out) if isinstance(b, MaintRepair)]    # at once, not at 2800
    assert mill.maint.part_serial == "spindle_bearing#s1" and not mill.maint._part_awaited(1200.0)


def _declined(out: list[Action]) -> bool:
    from agents.protocol.messages import MaintDone
    return any(isinstance(b, MaintDone) and b.outcome == "declined" for b in _sends(out))


def _repair(evs: list[dict[str, Any]], job: str = "mill1/r1") -> dict[str, Any]:
    machine, k = job.split("/r")
    (start,) = [e for e in evs if e["ev"] == "maintenance_start" and e["kind"] == "corrective"
                and e["machine"] == machine][int(k) - 1:int(k)]
    return start


def test_a_repair_takes_one_unit_from_the_stores_and_the_shelf_is_not_used() -> None:
    # mill1 fails from wear at ~4 786 s (seed 1) under the risk rule (ADR 75)
    evs, rep = _run(hours=1.6, decide="risk")
    _ok(rep)
    start = _repair(evs)
    held = [e for e in evs if e["ev"] == "part_held" and e["job"] == "mill1/r1"]
    consumed = [e for e in evs if e["ev"] == "part_consumed"
                and e["serial"] == start["part_serial"]]
    assert [e["serial"] for e in held] == [start["part_serial"]] and len(consumed) == 1
    assert consumed[0]["job"] == "mill1/r1" and consumed[0]["t"] > start["t"]
    assert not [e for e in evs if e["ev"] in ("stock_out", "part_ordered", "repair_unbooked")]


# one spindle bearing on the shelf, one ordered at a time: mill1's repair takes the unit of
# the window its failure cancelled; mill2's window runs late for its part, mill2 fails, and
# its repair finds the shelf empty (seed 1, 2 h)
STOCK_OUT = {"stock": 1, "reorder_point": 0, "order_qty": 1, "lead_time_s": 1800.0}


def _stocked_out(evs: list[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    """The first repair that found no unit on the shelf, and its unit."""
    job = next(e["job"] for e in evs if e["ev"] == "part_stock_out" and "/r" in e["job"])
    (held,) = [e for e in evs if e["ev"] == "part_held" and e["job"] == job]
    return job, held


def test_a_stock_out_during_a_repair_orders_and_the_repair_waits_for_the_eta() -> None:
    evs, rep = _run(hours=2.0, part=STOCK_OUT, decide="risk")
    _ok(rep)
    first = [e for e in evs if e["ev"] == "part_held" and e["job"] == "mill1/r1"]
    assert first and first[0]["ready_at"] <= first[0]["t"]     # its own window's unit
    job, held = _stocked_out(evs)
    (out,) = [e for e in evs if e["ev"] == "part_stock_out" and e["job"] == job]
    start = _repair(evs, job)
    due = {e["due_at"] for e in evs if e["ev"] == "part_order_placed" and e["t"] <= out["t"]}
    assert held["ready_at"] in due and held["ready_at"] > out["t"] + 60.0      # on order
    assert start["t"] >= held["ready_at"] and start["part_serial"] == held["serial"]
    # the plant kept the repair waiting for the agents (not fitted outside the books)
    assert [e["eta_at"] for e in evs if e["ev"] == "repair_awaits_part"] == [held["ready_at"]]
    assert not [e for e in evs if e["ev"] == "repair_unbooked"]


@pytest.mark.parametrize("when", ["awaiting the part", "at the repair"])
def test_a_crash_of_the_stores_during_a_repair_loses_nothing(when: str) -> None:
    from agents.cell.faults import FaultScenario

    evs, _ = _run(hours=2.0, part=STOCK_OUT, decide="risk")
    job, held = _stocked_out(evs)
    crash_at = held["t"] + 30.0 if when == "awaiting the part" else _repair(evs, job)["t"] + 60.0
    faults = FaultScenario(name="stores-crash", mtbf_breakdowns=False,
                           crashes=[{"agent": "stores", "at_s": crash_at, "down_s": 900.0}])
    evs, rep = _run(hours=2.0, part=STOCK_OUT, faults=faults, decide="risk")
    _ok(rep)
    start = _repair(evs, job)                   # the unit held before the crash, fitted once
    assert start["part_serial"] == held["serial"] and start["t"] >= held["ready_at"]
    done = [e for e in evs if e["ev"] == "maintenance_done" and e["kind"] == "corrective"
            and e["machine"] == start["machine"]]
    assert len(done) == 1
    serials = [e["part_serial"] for e in evs if e["ev"] == "maintenance_start"]
    assert len(serials) == len(set(serials))    # the plant never fits one twice
    consumed = [e for e in evs if e["ev"] == "part_consumed" and e["serial"] == held["serial"]]
    assert len(consumed) <= 1                   # lost with the stores at most, never twice


def test_a_repair_goes_ahead_of_another_machines_planned_reservation() -> None:
    stores = _stores(PartStock(stock=1, reorder_point=0, order_qty=1, lead_time_s=1000.0))
    out = stores.on_message(_msg("mill2", PartReserve("mill2/m1", "b", 900.0, 300.0)), 10.0)
    assert _sends(out)[0].serial == "b#s1"          # on the shelf; b#s2 ordered (due 1010)
    out = stores.on_message(_msg("mill1", PartReserve("mill1/r1", "b", 20.0, 3000.0)), 20.0)
    sent = {b.job: b for b in _sends(out)}
    assert isinstance(sent["mill1/r1"], PartReserved) and sent["mill1/r1"].serial == "b#s1"
    moved = sent["mill2/m1"]                                   # told of its new unit
    assert isinstance(moved, PartUnavailable) and moved.serial == "b#s2"
    assert moved.eta_at == 1010.0 and _logs(out, "part_bumped")[0]["for"] == "mill1|mill1/r1"
    # its own window's unit goes to the failed machine's repair, not another's
    out = stores.on_message(_msg("mill2", PartReserve("mill2/r1", "b", 30.0, 3000.0)), 30.0)
    assert [b.serial for b in _sends(out)] == ["b#s2"] and not _logs(out, "part_bumped")


def test_a_window_begun_keeps_its_unit_when_the_stores_move_it() -> None:
    from agents.protocol.messages import MaintStart

    mill, out = _mill()
    w = mill.maint
    (hold,) = _sends(out)
    (req,) = _sends(mill.on_message(_msg("stores", PartReserved(
        hold.job, hold.part, "spindle_bearing#s1", 0.0, 5000.0), to="mill1"), 11.0))
    mill.on_message(_msg("crew", MaintOffer(req.job, "tech1", req.earliest_at,
                                            req.earliest_at + 400.0), to="mill1"), 12.0)
    mill.on_message(_msg("crew", MaintStart(req.job, "tech1"), to="mill1"), req.earliest_at)
    assert mill.on_message(_msg("stores", PartUnavailable(
        hold.job, hold.part, "spindle_bearing#s4", 9000.0, 9900.0), to="mill1"),
        req.earliest_at + 1.0) == []
    assert w.part_serial == "spindle_bearing#s1"              # fitted: reported as such


def test_expedite_after_a_prediction_miss_hurries_the_repairs_unit_on_order() -> None:
    mill, sent = _failed_mill()
    (hold,) = [b for b in sent if isinstance(b, PartReserve)]
    mill.on_message(_msg("stores", PartUnavailable(hold.job, hold.part, "spindle_bearing#s5",
                                                   2800.0, 6000.0), to="mill1"), 1000.2)
    out = mill.maint.on_miss_decision("expedite_part", 1100.0)
    assert _sends(out) == [PartExpedite(hold.job)]
