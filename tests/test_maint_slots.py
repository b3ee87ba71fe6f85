"""The maintenance window's slot: the start that costs production least (ADR 87,
agents/maintenance/slots.py).  By hand, in virtual time: a start that would push an order
past due is avoided when another before the latest safe start avoids it, even at more work
handed back; with none, the least damaging is taken; ties go to the latest start; with one
candidate the rule before (the first gap) holds.  Then a machine agent with a crew and a
queue of two orders: the window lands where no order ends late (before: the tight order was
handed back and its best slot here finished past due).
"""

from __future__ import annotations

from typing import Any

import pytest

from agents.base import PlantEventIn, Timing
from agents.machine import MachineAgent
from agents.maintenance.crew import TechnicianCrewAgent
from agents.maintenance.rul import prior_model
from agents.maintenance.slots import Booked, Queue, choose, queue_of, score
from agents.maintenance.window import MaintenanceWindow, WindowPlan
from agents.negotiation.strategies import DefaultResource
from agents.protocol.messages import CallForProposals, Failure, MaintOffer, MaintRequest
from agents.resource import Task
from ops.bench.maintenance import demo_cell
from tests.helpers.actions import logs, message, sends
from tests.helpers.worn import Worn

D = 200.0          # the job's length
LATEST = 300.0     # the latest safe start


def _q(*booked: Booked, running_until_at: float = float("-inf"), margin_s: float = 0.0
       ) -> Queue:
    return Queue(tuple(booked), running_until_at, margin_s)


# ------------------------------------------------------------------------------ the rule


def test_a_start_that_pushes_an_order_past_due_is_avoided_when_another_avoids_it() -> None:
    # tight [100, 120) due 210; long [250, 600) due late.  The first gap (600) is past the
    # latest safe start, so the rule before asked from 0: the tight task handed back comes
    # again at best at [200, 220), past its due date.  From 120 (just after it) the window
    # hands back 350 s of the long task instead — more work, but nobody late.
    q = _q(Booked("t/0", "t", 100.0, 120.0, due_at=210.0),
           Booked("l/0", "l", 250.0, 600.0, due_at=5000.0))
    before = score(0.0, D, q)
    assert before.late_orders == ("t",) and before.pushed == ("t/0",) and before.pushed_s == 20
    slot = choose(0.0, 0.0, LATEST, D, q)
    assert slot.start_at == 120.0 and slot.late_orders == () and slot.pushed == ("l/0",)
    assert slot.pushed_s == pytest.approx(350.0)
    # the order's processing still to come counts: 10 s more after the long task's new
    # end (320 + 350 = 670) makes the long order late too — then the least work: from 0
    q2 = _q(q.booked[0], Booked("l/0", "l", 250.0, 600.0, due_at=675.0, after_s=10.0))
    assert choose(0.0, 0.0, LATEST, D, q2).start_at == 0.0


def test_with_no_start_that_avoids_lateness_the_least_damaging_is_taken() -> None:
    # every start makes one order late; from 0 it hands back the least work (150 s)
    q = _q(Booked("a/0", "a", 0.0, 100.0, due_at=650.0),
           Booked("b/0", "b", 100.0, 150.0, due_at=1000.0),
           Booked("c/0", "c", 290.0, 600.0, due_at=650.0))
    scores = {t: score(t, D, q) for t in (0.0, 100.0, 150.0)}
    assert [len(s.late_orders) for s in scores.values()] == [1, 1, 1]
    assert [s.pushed_s for s in scores.values()] == [150.0, 360.0, 310.0]
    assert choose(0.0, 0.0, LATEST, D, q) == scores[0.0]
    # fewer orders late beats less work: b due at 240 comes back at [200, 250) from 0
    q3 = _q(q.booked[0], Booked("b/0", "b", 100.0, 150.0, due_at=240.0), q.booked[2])
    assert score(0.0, D, q3).late_orders == ("a", "b")
    slot = choose(0.0, 0.0, LATEST, D, q3)
    assert (slot.start_at, slot.late_orders, slot.pushed_s) == (150.0, ("c",), 310.0)


def test_ties_go_to_the_latest_start() -> None:
    # two gaps the job fits: from 50 (the first, the rule before) and from 200; both push
    # nothing, and the later throws less life away
    q = _q(Booked("a/0", "a", 0.0, 50.0), Booked("b/0", "b", 160.0, 200.0),
           Booked("c/0", "c", 310.0, 400.0))
    assert score(50.0, 100.0, q).pushed == () and score(200.0, 100.0, q).pushed == ()
    assert choose(50.0, 0.0, LATEST, 100.0, q).start_at == 200.0
    # equal work pushed, nobody late: the later start again
    q2 = _q(Booked("a/0", "a", 0.0, 100.0), Booked("b/0", "b", 100.0, 200.0),
            Booked("c/0", "c", 200.0, 300.0), Booked("d/0", "d", 300.0, 400.0))
    assert choose(0.0, 0.0, LATEST, 100.0, q2).start_at == 300.0
    # the first gap just after a task is not moved by the margin to a "later" tie
    q3 = _q(Booked("a/0", "a", 0.0, 50.0), Booked("b/0", "b", 400.0, 500.0), margin_s=5.0)
    assert choose(50.0, 0.0, LATEST, 100.0, q3).start_at == 50.0


def test_with_one_candidate_the_first_gap_holds() -> None:
    assert choose(40.0, 10.0, LATEST, D, Queue()).start_at == 40.0
    # a task ending past the latest safe start is no candidate
    q = _q(Booked("a/0", "a", 0.0, 400.0, due_at=410.0))
    assert choose(10.0, 10.0, LATEST, D, q).start_at == 10.0


def test_no_start_cuts_into_the_running_operation_when_another_exists() -> None:
    # running until 95: a start at 60 would be declined by the machine itself
    q = _q(Booked("a/0", "a", 60.0, 110.0), Booked("b/0", "b", 110.0, 600.0),
           running_until_at=95.0)
    slot = choose(60.0, 60.0, LATEST, D, q)
    assert slot.start_at == 110.0 and not slot.cuts_running
    assert score(60.0, D, q).cuts_running          # less work, but it cuts in
    # the running operation's end (and margin) is a candidate of its own: with the next
    # task ending past the latest safe start, it is the only start that does not cut in
    q2 = _q(Booked("a/0", "a", 100.0, 400.0), running_until_at=95.0, margin_s=5.0)
    assert choose(60.0, 60.0, LATEST, D, q2).start_at == 100.0
    # nothing but cutting in: the rule before, unchanged
    assert choose(60.0, 60.0, LATEST, D, _q(running_until_at=345.0)).start_at == 60.0
    # an operation that overran its reckoned end: a start after that end does not cut in
    # (the machine accepts it, hook.py), so the first gap stays the choice
    assert not choose(50.0, 50.0, LATEST, D, _q(running_until_at=49.0)).cuts_running
    assert choose(50.0, 50.0, LATEST, D, _q(running_until_at=49.0)).start_at == 50.0


# ------------------------------------------------------------------------------ the window


class _Worn(Worn):
    """150 operating seconds left, exactly: at the starting load of 0.5 the latest safe
    start is 300 s ahead."""

    LEFT_S, SD_S = 150.0, 0.0


def _window() -> MaintenanceWindow:
    d = demo_cell().machines[0].degradation
    assert d is not None
    plan = WindowPlan("crew", D, "b", retry_s=5.0, grace_s=30.0, lookahead_s=900.0)
    return MaintenanceWindow("m1", plan, _Worn(prior_model(d)))


def test_the_window_asks_from_the_start_chosen_and_says_why() -> None:
    w = _window()
    w.first_gap = lambda now: 600.0          # busy past the latest safe start
    w.queue = lambda now: _q(Booked("t/0", "t", 100.0, 120.0, due_at=210.0),
                             Booked("l/0", "l", 250.0, 600.0, due_at=5000.0))
    out = w.on_reading({}, False, 0.0)
    (req,) = sends(out)
    assert isinstance(req, MaintRequest) and req.earliest_at == 120.0
    assert req.latest_start_at == pytest.approx(LATEST)
    (why,) = logs(out, "maint_slot")
    assert (why["first_gap_at"], why["pushed"], why["late_orders"]) == (0.0, ["l/0"], [])
    # without a queue (the default), the rule before: from 0, and nothing logged
    old = _window()
    old.first_gap = lambda now: 600.0
    out = old.on_reading({}, False, 0.0)
    assert sends(out)[0].earliest_at == 0.0 and not logs(out, "maint_slot")


# ------------------------------------------------------------------------------ a hand-made cell


def _cfp(task: str, due_at: float, work_s: float, quantity: int = 1) -> CallForProposals:
    return CallForProposals(task=task, order=task.split("/")[0], kind="operation",
                            capability="mill", op="mill", quantity=quantity,
                            earliest_start_at=0.0,
                            due_at=due_at, reply_by_at=1.0, work_remaining_s=work_s)


def _machine() -> MachineAgent:
    m = MachineAgent("m1", timing=Timing(), strategy=DefaultResource(), location="x",
                     capabilities={"mill": 20.0}, maintenance=_window())
    for task, start, finish, due in (("t/0", 100.0, 120.0, 210.0),
                                     ("l/0", 250.0, 600.0, 5000.0)):
        t = Task(_cfp(task, due, finish - start), task.split("/")[0], "c1", start_at=start,
                 finish_at=finish, hold_until_at=1.0, award_epoch=1,
                 info={"setup_s": 0.0, "processing_s": finish - start})
        assert t.fire("propose") and t.fire("accept")
        m.tasks[task] = t
    return m


def _negotiate(m: MachineAgent) -> tuple[MaintRequest, list[Any]]:
    """The machine reads its wear at 0, the crew (one technician) offers the window asked
    for, the machine books it: (the request, what the machine sent when it booked)."""
    crew = TechnicianCrewAgent("crew", timing=Timing(), technicians=1, grace_s=30.0)
    (req,) = sends(m.on_plant_event(PlantEventIn("reading", "m1", data={}), 0.0))
    (offer,) = [b for b in sends(crew.on_message(message("m1", "crew", req), 0.0))
                if isinstance(b, MaintOffer)]
    assert offer.start_at == req.earliest_at
    return req, sends(m.on_message(message("crew", "m1", offer), 0.0))


def test_a_hand_made_cell_keeps_the_tight_order_on_time() -> None:
    m = _machine()
    assert queue_of(m, 5.0, 0.0) == _q(Booked("l/0", "l", 250.0, 600.0, 5000.0, 0.0),
                                       Booked("t/0", "t", 100.0, 120.0, 210.0, 0.0),
                                       margin_s=5.0)
    req, back = _negotiate(m)
    assert req.earliest_at == 125.0           # just after the tight task, with the margin
    # the long order's task goes back to re-negotiate; the tight one keeps its slot
    assert [b.task for b in back if isinstance(b, Failure)] == ["l/0"]
    assert m.tasks["t/0"].state == "committed" and m.tasks["t/0"].finish_at <= 210.0
    # the long order's best slot here now is after the window, well before its due date
    assert m.quote(_cfp("l/0", 5000.0, 340.0, quantity=17), 0.0).finish_at == \
        pytest.approx(325.0 + 340.0)


def test_the_rule_before_handed_the_tight_order_back_past_its_due_date() -> None:
    m = _machine()
    assert m.maint is not None
    m.maint.queue = lambda now: Queue()        # the first gap only, as before ADR 87
    req, back = _negotiate(m)
    assert req.earliest_at == 0.0
    assert [b.task for b in back if isinstance(b, Failure)] == ["t/0"]
    # the tight order calls again: the best this machine can offer ends past its due date
    assert m.quote(_cfp("t/0", 210.0, 20.0), 0.0).finish_at == pytest.approx(220.0)
