"""Two-party harness: one order agent against one or two machine agents (and a robot).

The agents are the real sans-io objects; :class:`helpers.fake_link.FakeLink`
is the driver: it routes ``Send`` actions as typed ``Message`` objects with
zero latency, fires ``SetTimer`` by a manual clock and answers
``Command(start_operation)`` with ``operation_done`` after ``duration_s``.
Each scenario is a row — cell, script (what happens to the plant or the
wire at which time), expected message sequence — and ends, SimPy style, in
``assert link.log == [...]``.

Times used below (defaults of :class:`agents.base.Timing`): reply deadline
0.2 s, lease 30 s, heartbeat every 5 s, retry 5 s; orders are released at
t = 1 s, so the first call goes out at 1.0 and is decided at 1.2.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from helpers.fake_link import FakeLink

from agents.base import Timing
from agents.machine import MachineAgent
from agents.negotiation.strategies import DefaultResource, EarliestFinish
from agents.order import OrderAgent
from agents.protocol.messages import Cancel, Message, Ready
from agents.robot import RobotAgent

TIMING = Timing()
RELEASE_AT = 1.0


def machine(mid: str, s_per_unit: float, location: str = "bench") -> MachineAgent:
    return MachineAgent(mid, timing=TIMING, strategy=DefaultResource(), location=location,
                        capabilities={"sawing": s_per_unit})


def robot(rid: str, locations: tuple[str, ...], travel_s: float = 3.0,
          home: str = "store") -> RobotAgent:
    table = {(a, b): travel_s for a in locations for b in locations if a != b}
    return RobotAgent(rid, timing=TIMING, strategy=DefaultResource(), location=home,
                      travel_s=table)


def order(machines: list[MachineAgent], *, quantity: int = 1, robots: tuple[str, ...] = (),
          input_location: str = "bench", output_location: str = "bench",
          oid: str = "o1") -> OrderAgent:
    return OrderAgent(
        oid, timing=TIMING, strategy=EarliestFinish(), routing=[("cut", "sawing")],
        quantity=quantity, release_at=RELEASE_AT, due_at=500.0, priority=1,
        capable={"sawing": [m.id for m in machines]}, robots=list(robots),
        machine_location={m.id: m.location for m in machines},
        input_location=input_location, output_location=output_location,
        min_processing_s={"sawing": min(m.capabilities["sawing"] for m in machines)})


Script = list[tuple[float, Callable[[FakeLink], object]]]


def fault(m: str) -> Callable[[FakeLink], object]:
    return lambda link: link.plant_event(m, "fault", data={"reason": "breakdown"})


def repaired(m: str) -> Callable[[FakeLink], object]:
    return lambda link: link.plant_event(m, "repaired")


def play(link: FakeLink, script: Script, until: float) -> FakeLink:
    for at, action in script:
        link.run(at)
        action(link)
    link.run(until)
    return link


@dataclass
class Scenario:
    name: str
    machines: list[tuple[str, float]]        # (id, seconds per unit)
    expected: list[str]
    script: Script = field(default_factory=list)
    quantity: int = 1
    until: float = 200.0
    scrap_runs: int = 0                      # the first N operations come out as scrap
    accepts: list[tuple[str, int]] = field(default_factory=list)   # (to, award_epoch)
    commands: list[tuple[str, str]] = field(default_factory=list)  # (command, resource)
    completed: bool = True


NEGOTIATE_M1_OVER_M2 = ["o1>m1 cfp", "o1>m2 cfp", "m1>o1 propose", "m2>o1 propose",
                        "o1>m1 accept", "o1>m2 reject", "m1>o1 confirm", "o1>m1 ready"]

SCENARIOS = [
    Scenario(
        "happy path", [("m1", 4.0)],
        ["o1>m1 cfp", "m1>o1 propose", "o1>m1 accept", "m1>o1 confirm", "o1>m1 ready",
         "m1>o1 inform_done", "order_completed"],
        accepts=[("m1", 1)], commands=[("start_operation", "m1")]),
    Scenario(
        "machine down refuses; the order waits, calls again, and gets it after the repair",
        [("m1", 4.0)],
        ["o1>m1 cfp", "m1>o1 refuse", "no_proposals", "non_routine",          # 1.0 .. 1.2
         "o1>m1 cfp", "m1>o1 refuse", "no_proposals",                          # 6.2 .. 6.4
         "o1>m1 cfp", "m1>o1 propose", "o1>m1 accept", "m1>o1 confirm",        # 11.4 (up at 8)
         "o1>m1 ready", "m1>o1 inform_done", "order_completed"],
        script=[(0.0, fault("m1")), (8.0, repaired("m1"))],
        accepts=[("m1", 1)], commands=[("start_operation", "m1")]),
    Scenario(
        "a silent machine: no proposals, non-routine once, a new call every retry_s",
        [("m1", 4.0)],
        ["o1>m1 cfp (lost)", "no_proposals", "non_routine",
         "o1>m1 cfp (lost)", "no_proposals", "o1>m1 cfp (lost)", "no_proposals",
         "o1>m1 cfp (lost)", "no_proposals"],
        script=[(0.0, lambda link: link.silence("m1"))], until=20.0, completed=False),
    Scenario(
        "one of two machines silent: the other wins at the deadline",
        [("m1", 4.0), ("m2", 6.0)],
        ["o1>m1 cfp (lost)", "o1>m2 cfp", "m2>o1 propose", "o1>m2 accept", "m2>o1 confirm",
         "o1>m2 ready", "m2>o1 inform_done", "order_completed"],
        script=[(0.0, lambda link: link.silence("m1"))],
        accepts=[("m2", 1)], commands=[("start_operation", "m2")]),
    Scenario(
        "winner crashes: heartbeats stop, the lease expires, cancel + a new call, epoch 2",
        [("m1", 4.0), ("m2", 6.0)],
        NEGOTIATE_M1_OVER_M2 + [
            "o1>m1 cancel (lost)", "lease_expired",                            # 1.2 + 30 s
            "o1>m1 cfp (lost)", "o1>m2 cfp", "m2>o1 propose", "o1>m2 accept", "m2>o1 confirm",
            "o1>m2 ready", "m2>o1 inform_done", "order_completed"],
        script=[(2.0, lambda link: link.crash("m1"))], quantity=10,
        accepts=[("m1", 1), ("m2", 2)],
        commands=[("start_operation", "m1"), ("start_operation", "m2")]),
    Scenario(
        "stale winner: partitioned m1 reports inform_done for epoch 1 after the re-award",
        [("m1", 4.0), ("m2", 6.0)],
        NEGOTIATE_M1_OVER_M2 + [
            "o1>m1 cancel (lost)", "lease_expired",
            "o1>m1 cfp (lost)", "o1>m2 cfp", "m2>o1 propose", "o1>m2 accept", "m2>o1 confirm",
            "o1>m2 ready",
            # t = 41.2: m1 did the work under epoch 1 (its cancel was lost). The work is
            # done, so the order takes the late report and withdraws m2's award, which
            # aborts m2's run instead of finishing the operation a second time.
            "m1>o1 inform_done", "o1>m2 cancel", "order_completed"],
        script=[(2.0, lambda link: link.silence("m1")), (35.0, lambda link: link.heal("m1"))],
        quantity=10, accepts=[("m1", 1), ("m2", 2)],
        commands=[("start_operation", "m1"), ("start_operation", "m2"),
                  ("abort_operation", "m2")]),
    Scenario(
        "fault while running: failure, re-route to the second machine",
        [("m1", 4.0), ("m2", 6.0)],
        NEGOTIATE_M1_OVER_M2 + [
            "m1>o1 failure", "reroute", "o1>m1 cfp", "o1>m2 cfp", "m1>o1 refuse",
            "m2>o1 propose", "o1>m2 accept", "m2>o1 confirm", "o1>m2 ready",
            "m2>o1 inform_done", "order_completed"],
        script=[(3.0, fault("m1"))], quantity=2,
        accepts=[("m1", 1), ("m2", 2)],
        commands=[("start_operation", "m1"), ("abort_operation", "m1"),
                  ("start_operation", "m2")]),
    Scenario(
        "scrap result: the operation is called again and awarded with a new epoch",
        [("m1", 4.0)],
        ["o1>m1 cfp", "m1>o1 propose", "o1>m1 accept", "m1>o1 confirm", "o1>m1 ready",
         "m1>o1 inform_done", "scrap",
         "o1>m1 cfp", "m1>o1 propose", "o1>m1 accept", "m1>o1 confirm", "o1>m1 ready",
         "m1>o1 inform_done", "order_completed"],
        scrap_runs=1, accepts=[("m1", 1), ("m1", 2)],
        commands=[("start_operation", "m1"), ("start_operation", "m1")]),
]


def scenario(name_start: str) -> Scenario:
    sc, = [s for s in SCENARIOS if s.name.startswith(name_start)]
    return sc


def run_scenario(sc: Scenario) -> tuple[FakeLink, OrderAgent]:
    machines = [machine(mid, s) for mid, s in sc.machines]
    o1 = order(machines, quantity=sc.quantity)
    runs: list[str] = []

    def quality(resource: str, task: str) -> str:
        runs.append(task)
        return "scrap" if len(runs) <= sc.scrap_runs else "ok"

    link = FakeLink([o1, *machines], quality=quality).start()
    return play(link, sc.script, sc.until), o1


@pytest.mark.parametrize("sc", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_scenario(sc: Scenario) -> None:
    link, o1 = run_scenario(sc)
    assert [(s.msg.to, s.msg.body.award_epoch) for s in link.sent_of("accept")] == sc.accepts
    assert [(c.command, c.resource) for _, c in link.commands] == sc.commands
    assert (o1.completed_at is not None) == sc.completed
    assert link.log == sc.expected


# -- details the sequences alone do not show --------------------------------------------------

def test_happy_path_timing_and_payloads() -> None:
    link, o1 = run_scenario(scenario("happy path"))
    cfp, = link.sent_of("cfp")
    assert cfp.at == RELEASE_AT
    assert cfp.msg.body.reply_by_at == pytest.approx(RELEASE_AT + TIMING.reply_deadline_s)
    accept, = link.sent_of("accept")
    assert accept.at == pytest.approx(cfp.msg.body.reply_by_at)   # at the deadline, not before
    assert accept.cause == ("timer", "deadline:o1/0")
    assert accept.msg.body.lease_s == TIMING.lease_s
    (t_start, start), = link.commands
    assert start.args["duration_s"] == 4.0 and start.task == "o1/0"
    done, = link.sent_of("inform_done")
    assert done.at == pytest.approx(t_start + 4.0)
    assert done.msg.body.award_epoch == 1 and done.msg.body.quality == "ok"
    assert o1.completed_at == pytest.approx(t_start + 4.0)


def test_silent_machine_retries_every_retry_s() -> None:
    link, o1 = run_scenario(scenario("a silent machine"))
    calls = [s.at for s in link.sent_of("cfp")]
    step = TIMING.reply_deadline_s + TIMING.retry_s
    assert calls == pytest.approx([RELEASE_AT + k * step for k in range(4)])
    assert [s.msg.body.attempt for s in link.sent_of("cfp")] == [0, 1, 2, 3]
    assert o1.ops[0].state == "waiting"
    assert link.timer_at("o1", "retry:o1/0") == pytest.approx(calls[-1] + step)


def test_refusal_says_why() -> None:
    link, _ = run_scenario(scenario("machine down"))
    assert [s.msg.body.reason for s in link.sent_of("refuse")] == ["down", "down"]


def test_lease_expires_after_missed_heartbeats_and_recall_has_a_higher_epoch() -> None:
    link, o1 = run_scenario(scenario("winner crashes"))
    (t_exp, _), = link.log_events("lease_expired")
    first_accept = link.sent_of("accept")[0]
    window = TIMING.missed_heartbeats * TIMING.heartbeat_interval_s
    assert window < TIMING.lease_window_s <= window + 0.05 * TIMING.heartbeat_interval_s < TIMING.lease_s
    assert t_exp == pytest.approx(first_accept.at + TIMING.lease_window_s)
    cancel, = link.sent_of("cancel")
    assert cancel.msg.body.award_epoch == 1 and cancel.msg.body.reason == "lease expired"
    assert [s.msg.body.attempt for s in link.sent_of("cfp", to="m2")] == [0, 1]
    assert o1.ops[0].epoch == 2 and o1.ops[0].winner == "m2"


def test_heartbeats_renew_the_lease_while_the_winner_lives() -> None:
    """A 60 s operation outlives the 30 s lease: heartbeats keep it, nothing expires."""
    m1 = machine("m1", 6.0)
    o1 = order([m1], quantity=10)
    link = FakeLink([o1, m1], log_heartbeats=True).start()
    link.run(200.0)
    assert link.log_events("lease_expired") == []
    beats = [s.at for s in link.sent_of("heartbeat", sender="m1")]
    assert len(beats) >= 60 // TIMING.heartbeat_interval_s - 1
    assert all(b - a == pytest.approx(TIMING.heartbeat_interval_s)
               for a, b in zip(beats, beats[1:]))
    assert o1.completed_at == pytest.approx(1.2 + 60.0)


def test_late_inform_done_from_a_past_winner_completes_and_withdraws_the_new_award() -> None:
    link, o1 = run_scenario(scenario("stale winner"))
    late = [s for s in link.sent_of("inform_done", sender="m1")]
    assert len(late) == 1 and late[0].fate == "delivered" and late[0].msg.body.award_epoch == 1
    cancel, = link.sent_of("cancel", sender="o1", to="m2")
    assert cancel.msg.body.award_epoch == 2
    (t_done, _), = link.log_events("order_completed")
    assert t_done == late[0].delivered_at
    assert not link.sent_of("inform_done", sender="m2")   # m2's run was aborted, not finished


def test_stale_epoch_messages_to_the_machine_are_fenced() -> None:
    """A ``ready`` or ``cancel`` carrying an old award epoch never touches the current lease."""
    sc = scenario("scrap result")                                # scrap, then o1/0 is re-awarded as epoch 2
    machines = [machine(mid, s) for mid, s in sc.machines]
    o1 = order(machines)
    results = iter(["scrap", "ok"])
    link = FakeLink([o1, *machines], quality=lambda r, t: next(results)).start()
    link.run_until(lambda: len(link.sent_of("confirm")) == 2, limit_at=sc.until)
    m1 = machines[0]
    assert (m1.tasks["o1/0"].state, m1.tasks["o1/0"].award_epoch) == ("committed", 2)
    for body in (Cancel("o1/0", 1, "old"), Ready("o1/0", 1)):
        stale = Message("o1", "m1", "o1/0#0", b"s" * 16, 1, 999, link.now, body)
        acts = m1.on_message(stale, link.now)
        assert [type(a).__name__ for a in acts] == ["Log"] and acts[0].event == "stale_epoch"
        assert (m1.tasks["o1/0"].state, m1.running) == ("committed", None)
    link.run(sc.until)
    assert o1.completed_at is not None and link.log == sc.expected


def test_move_with_a_robot() -> None:
    """Parts at the store, the machine in its bay, output at shipping: two moves around one op."""
    locations = ("store", "bay", "ship")
    m1 = machine("m1", 4.0, location="bay")
    r1 = robot("r1", locations)
    o1 = order([m1], robots=("r1",), input_location="store", output_location="ship")
    link = FakeLink([o1, m1, r1]).start()
    link.run(200.0)
    assert link.log == [
        "o1>m1 cfp", "m1>o1 propose", "o1>m1 accept", "m1>o1 confirm",
        "o1>r1 cfp", "r1>o1 propose", "o1>r1 accept", "r1>o1 confirm",     # move store -> bay
        "r1>o1 inform_done",
        "o1>m1 ready", "m1>o1 inform_done",
        "o1>r1 cfp", "r1>o1 propose", "o1>r1 accept", "r1>o1 confirm",     # move bay -> ship
        "r1>o1 inform_done", "order_completed"]
    moves = [(c.args["origin"], c.args["destination"]) for _, c in link.commands
             if c.command == "move"]
    assert moves == [("store", "bay"), ("bay", "ship")]
    (t_op, _), = [(t, c) for t, c in link.commands if c.command == "start_operation"]
    t_arrived = link.sent_of("inform_done", sender="r1")[0].at
    assert t_op >= t_arrived                          # ready only once the parts are there
    assert o1.location == "ship" and r1.location == "ship"


# -- a single lost message must not stall an order for good (docs/architecture.md, Invariants) ----
#
# The network of a real cell loses messages (and the virtual-time driver's
# network model can): each of these losses is survivable by the protocol's own
# means (lease, heartbeats, idempotency key), so the order must still complete,
# and the operation must run once.

def lose_first(msg_type: str) -> Callable[[Message], bool]:
    done: list[bool] = []

    def lose(msg: Message) -> bool:
        if msg.type == msg_type and not done:
            done.append(True)
            return True
        return False

    return lose


@pytest.mark.parametrize("lost", ["cfp", "propose", "accept", "confirm", "ready", "inform_done"])
def test_one_lost_message_does_not_stall_the_order(lost: str) -> None:
    m1 = machine("m1", 4.0)
    o1 = order([m1])
    link = FakeLink([o1, m1], lose=lose_first(lost)).start()
    link.run(300.0)
    direction = "m1>o1" if lost in ("propose", "confirm", "inform_done") else "o1>m1"
    assert f"{direction} {lost} (lost)" in link.log
    assert o1.completed_at is not None, (
        f"order stalled after a lost {lost!r}: order state {o1.ops[0].state!r}, machine task "
        f"{ {k: v.state for k, v in m1.tasks.items()} }; log {link.log}")


def test_lost_inform_done_does_not_run_the_operation_twice() -> None:
    """The idempotency key must stop a second execution of a task that already finished."""
    m1 = machine("m1", 4.0)
    o1 = order([m1])
    link = FakeLink([o1, m1], lose=lose_first("inform_done")).start()
    link.run(300.0)
    starts = [c.task for _, c in link.commands if c.command == "start_operation"]
    assert starts == ["o1/0"], f"task executed {len(starts)} times: {link.log}"


def test_a_lost_ready_for_one_order_does_not_block_the_machine_for_others() -> None:
    """o1's parts never get announced; o2's are there — the idle machine should still run o2."""
    m1 = machine("m1", 4.0)
    o1, o2 = order([m1], oid="o1"), order([m1], oid="o2")
    lost_ready = lambda msg: msg.type == "ready" and msg.to == "m1" and msg.body.task == "o1/0"
    link = FakeLink([o1, o2, m1], lose=lost_ready).start()
    link.run(300.0)
    assert "o1>m1 ready (lost)" in link.log and "o2>m1 ready" in link.log
    assert o2.completed_at is not None, (
        "m1 idles with o2's parts ready: tasks "
        f"{ {k: (v.state, v.ready) for k, v in m1.tasks.items()} }")


def test_a_late_reject_from_an_old_round_is_ignored_by_the_new_winner() -> None:
    """Round 0: m1 wins, m2's ``reject`` is delayed.  m1 faults; round 1: m2 wins (epoch 2).

    Then round 0's ``reject`` reaches m2.  A late message from a finished round
    must be ignored (counted), not raise :class:`IllegalTransition` out of the agent.
    """
    m1, m2 = machine("m1", 4.0), machine("m2", 6.0)
    o1 = order([m1, m2])
    link = FakeLink([o1, m1, m2]).start()
    link.run_until(lambda: bool(link.sent_of("reject")), limit_at=5.0)
    late = link.in_flight.pop(next(i for i, s in enumerate(link.in_flight)
                                   if s.msg.type == "reject"))
    link.run_until(lambda: bool(link.sent_of("ready")), limit_at=5.0)
    link.plant_event("m1", "fault", data={"reason": "breakdown"})
    link.run_until(lambda: "o1/0" in m2.tasks and m2.tasks["o1/0"].state == "running",
                   limit_at=10.0)
    assert (m2.tasks["o1/0"].state, m2.tasks["o1/0"].award_epoch) == ("running", 2)
    link.in_flight.append(late)
    link.deliver(len(link.in_flight) - 1)           # raises IllegalTransition today
    assert (m2.tasks["o1/0"].state, m2.tasks["o1/0"].award_epoch) == ("running", 2)
    link.run(100.0)
    assert o1.completed_at is not None
