"""Work handed back for a maintenance window, and quotes that skip it (virtual time).

The real order, machine and crew agents run on the fake link (tests/helpers/
fake_link.py), the clock in the test's hands.  m1's estimator says its part is
nearly worn, so it asks the crew for a window while it runs o1; the crew is
slow to hear it, so the request is still in flight while o2 is booked on m1
right after o1 — into the slot the request named.  When the crew's offer
comes, the window is booked and o2's committed (not yet running) operation
runs into it: m1 hands it back (``failure`` with the window as reason,
``handed_back``) and o2 re-negotiates.  With a second machine it goes there;
alone, m1 quotes it after the window.  A new call for proposals is quoted
around the booked window too (agents/machine.py ``earliest_gap``).
"""

from __future__ import annotations


from helpers.fake_link import FakeLink

from agents.base import Timing
from agents.machine import MachineAgent
from agents.maintenance.crew import TechnicianCrewAgent
from agents.maintenance.rul import prior_model
from agents.maintenance.window import MaintenanceWindow, WindowPlan
from agents.negotiation.strategies import DefaultResource, EarliestFinish
from agents.order import OrderAgent
from agents.protocol.messages import CallForProposals, Failure, MaintRequest
from ops.bench.maintenance import demo_cell
from tests.helpers.worn import Worn as _Worn

TIMING = Timing()
JOB_S = 240.0                   # the maintenance job
OP_S = 40.0                     # one operation on m1: 10 units x 4 s


def _m1() -> MachineAgent:
    d = demo_cell().machines[0].degradation
    assert d is not None
    window = MaintenanceWindow("m1", WindowPlan("crew", JOB_S, "b", retry_s=5.0, grace_s=30.0),
                               _Worn(prior_model(d)))
    return MachineAgent("m1", timing=TIMING, strategy=DefaultResource(), location="bench",
                        capabilities={"sawing": 4.0}, maintenance=window)


def _order(oid: str, release_at: float, machines: list[MachineAgent]) -> OrderAgent:
    return OrderAgent(
        oid, timing=TIMING, strategy=EarliestFinish(), routing=[("cut", "sawing")],
        quantity=10, release_at=release_at, due_at=2000.0, priority=1,
        capable={"sawing": [m.id for m in machines]}, robots=[],
        machine_location={m.id: m.location for m in machines},
        input_location="bench", output_location="bench",
        min_processing_s={"sawing": min(m.capabilities["sawing"] for m in machines)})


def _run_holding(link: FakeLink, until: float, held: str) -> None:
    """``link.run(until)``, but every message to ``held`` stays in flight (a slow link)."""
    while True:
        waiting = [i for i, sent in enumerate(link.in_flight) if sent.msg.to != held]
        if waiting:
            link.deliver(waiting[0])
            continue
        nxt = link.next_due_at()
        if nxt is None or nxt > until:
            link.now = max(link.now, until)
            return
        link.fire_next()


def _booked_over_o2(second_machine: bool) -> tuple[FakeLink, MachineAgent]:
    """The scene of the module docstring, up to the window's booking (t = 2.5)."""
    m1 = _m1()
    machines = [m1]
    if second_machine:     # slower: o1 and o2 both go to m1 first (earliest finish)
        machines.append(MachineAgent("m2", timing=TIMING, strategy=DefaultResource(),
                                     location="bench", capabilities={"sawing": 15.0}))
    crew = TechnicianCrewAgent("crew", timing=TIMING, technicians=1, grace_s=10.0)
    o1, o2 = _order("o1", 1.0, machines), _order("o2", 2.0, machines)
    link = FakeLink([o1, o2, *machines, crew],
                    logged_events={"handed_back", "maint_window", "reroute"}).start()
    link.run(1.5)                                       # o1 runs on m1 until 41.2
    link.plant_event("m1", "reading", data={"vibration_mm_s": 5.0})
    (asked,) = link.sent_of("maint_request")
    assert isinstance(asked.msg.body, MaintRequest)
    assert asked.msg.body.earliest_at == 41.2 + 5.0     # after o1, with the margin
    _run_holding(link, 2.5, "crew")                     # o2 booked on m1 right after o1
    assert [s.msg.to for s in link.sent_of("accept", sender="o2")] == ["m1"]
    assert m1.tasks["o2/0"].state == "committed" and m1.tasks["o2/0"].start_at == 41.2
    link.run(2.5)                                       # the request reaches the crew now
    assert m1.maint is not None and m1.maint.phase == "booked"
    assert m1.maint.start_at == 46.2 and m1.maint.end_at == 46.2 + JOB_S
    return link, m1


def _handed_back(link: FakeLink) -> Failure:
    (back,) = link.sent_of("failure", sender="m1")
    assert back.msg.to == "o2" and isinstance(back.msg.body, Failure)
    ((_, log),) = link.log_events("handed_back")
    assert log.fields == {"agent": "m1", "task": "o2/0", "order": "o2",
                          "why": "maintenance window"}
    return back.msg.body


def test_committed_work_in_a_booked_window_goes_back_and_elsewhere() -> None:
    link, m1 = _booked_over_o2(second_machine=True)
    failure = _handed_back(link)
    assert (failure.task, failure.award_epoch, failure.reason) == ("o2/0", 1,
                                                                   "m1 maintenance window")
    assert "o2/0" not in m1.tasks and "o1/0" in m1.tasks      # the running one stays
    link.run(10.0)
    accepts = [(s.msg.to, s.msg.body.award_epoch) for s in link.sent_of("accept", sender="o2")]
    assert accepts == [("m1", 1), ("m2", 2)]                  # re-awarded elsewhere
    m1_quote = [s.msg.body for s in link.sent_of("propose", sender="m1")
                if s.msg.body.task == "o2/0"][-1]
    assert m1_quote.start_at >= m1.maint.end_at               # m1 could only after it


def test_alone_the_machine_takes_the_work_back_after_the_window() -> None:
    link, m1 = _booked_over_o2(second_machine=False)
    _handed_back(link)
    link.run(10.0)
    accepts = [(s.msg.to, s.msg.body.award_epoch) for s in link.sent_of("accept", sender="o2")]
    assert accepts == [("m1", 1), ("m1", 2)]
    assert m1.maint is not None
    again = m1.tasks["o2/0"]
    assert again.state == "committed" and again.award_epoch == 2
    assert again.start_at == m1.maint.end_at                  # right after the window


def test_a_quote_for_new_work_skips_the_booked_window() -> None:
    link, m1 = _booked_over_o2(second_machine=False)
    assert m1.maint is not None
    w_start, w_end = m1.maint.start_at, m1.maint.end_at
    # o2 is handed back; a new order asks from now: before the window only o1's tail and
    # 5 s are free, too little for 40 s, so the quote starts at the window's end
    cfp = CallForProposals("o3/0", "o3", "operation", "sawing", "cut", 10,
                           earliest_start_at=7.0, due_at=2000.0, reply_by_at=7.2)
    slot = m1.quote(cfp, 7.0)
    assert slot.start_at == w_end and not m1.maint.blocks(slot.start_at, OP_S)
    assert m1.maint.blocks(41.2, OP_S)                        # where it would have gone
    short = CallForProposals("o4/0", "o4", "operation", "sawing", "cut", 1,
                             earliest_start_at=7.0, due_at=2000.0, reply_by_at=7.2)
    fits = m1.quote(short, 7.0)                               # 4 s fits before the window
    assert fits.start_at == 41.2 and fits.finish_at <= w_start
