"""The contract net: its two transition tables, and a stateful property test of the protocol.

Part 1 is table-driven: every legal ``(state, event)`` pair of each role
gives the state listed here (written out independently of the module, so a
changed table is a deliberate act), and every other pair of the role's
states × events raises :class:`IllegalTransition` naming event, role, state.

Part 2 is a Hypothesis ``RuleBasedStateMachine``: one order agent with a
two-operation routing negotiates with 2–4 machine agents through
:class:`helpers.fake_link.FakeLink`.  Hypothesis is the network and the
clock: it runs stretches of time in which one message type may be lost
and one held back to arrive late (out of order, after the next stretch),
picks single messages to deliver, drop or delay in any order, moves the
clock without delivering anything (timers and plant completions fire),
cuts machines off the network or lets them rejoin, and breaks and repairs
them — the current winner of an operation included.  After every step it checks:

* never two awards: one ``accept`` recipient per (task, award epoch), and
  at most one live winner per task (a machine holding the task committed or
  running at the order's current epoch, and only the order's winner);
* awards only at the reply deadline: every ``accept`` is produced by the
  order's ``deadline:TASK`` timer, no earlier than that round's
  ``reply_by_at``, and goes to a machine whose proposal *for that round*
  arrived by ``reply_by_at``;
* a silent bidder never stalls a negotiation: when the deadline timer fires
  the order either awards to one of the bidders or is ``waiting`` with a
  retry timer at ``now + retry_s``, and that retry calls again; and the
  order always holds the timer that moves each negotiation on;
* award epochs strictly increase per task.
"""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

import pytest
from helpers.fake_link import FakeLink, Sent, Step
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from agents.base import Timing
from agents.machine import MachineAgent
from agents.negotiation import contract_net
from agents.negotiation.contract_net import IGNORED, IllegalTransition, step
from agents.negotiation.strategies import DefaultResource, EarliestFinish
from agents.order import Negotiation, OrderAgent
from agents.protocol.actions import Send, SetTimer
from agents.protocol.messages import CallForProposals
from agents.resource import Task
from security.errors import ProtocolBug

# -- part 1: the tables ----------------------------------------------------------------------

INITIATOR_EXPECTED: dict[tuple[str, str], str] = {
    # the life of a task
    ("idle", "call"): "calling",
    ("calling", "propose"): "calling",
    ("calling", "refuse"): "calling",
    ("calling", "deadline_award"): "awarded",
    ("calling", "deadline_none"): "waiting",
    ("waiting", "call"): "calling",
    ("awarded", "confirm"): "leased",
    ("awarded", "decline"): "waiting",
    ("awarded", "lease_expired"): "waiting",
    ("awarded", "failure"): "waiting",
    ("awarded", "cancel"): "waiting",
    ("awarded", "done"): "done",
    ("awarded", "renew"): "awarded",
    ("leased", "renew"): "leased",
    ("leased", "lease_expired"): "waiting",
    ("leased", "failure"): "waiting",
    ("leased", "cancel"): "waiting",
    ("leased", "done"): "done",
    # done, but the part failed its quality check: called again
    ("awarded", "scrap"): "waiting", ("leased", "scrap"): "waiting",
    # a done report from a past award: back on the route to done from any live round
    ("calling", "late_report"): "leased", ("awarded", "late_report"): "leased",
    ("leased", "late_report"): "leased", ("waiting", "late_report"): "leased",
    # a split-off lot's operations: those passed are done, the next waits for its retry
    ("idle", "passed"): "done", ("idle", "split"): "waiting",
    # late, duplicated or reordered peer messages: counted, never acted on
    ("calling", "confirm"): IGNORED, ("calling", "renew"): IGNORED,
    ("calling", "done"): IGNORED, ("calling", "failure"): IGNORED,
    ("awarded", "propose"): IGNORED, ("awarded", "refuse"): IGNORED,
    ("leased", "propose"): IGNORED, ("leased", "refuse"): IGNORED,
    ("leased", "confirm"): IGNORED,
    ("waiting", "propose"): IGNORED, ("waiting", "refuse"): IGNORED,
    ("waiting", "confirm"): IGNORED, ("waiting", "renew"): IGNORED,
    ("waiting", "done"): IGNORED, ("waiting", "failure"): IGNORED,
    ("done", "propose"): IGNORED, ("done", "refuse"): IGNORED, ("done", "confirm"): IGNORED,
    ("done", "renew"): IGNORED, ("done", "done"): IGNORED, ("done", "failure"): IGNORED,
}

PARTICIPANT_EXPECTED: dict[tuple[str, str], str] = {
    ("new", "propose"): "held",
    ("held", "accept"): "committed",
    ("held", "reject"): "released",
    ("held", "hold_lapsed"): "released",
    ("held", "cancel"): "released",
    ("released", "accept"): "committed",
    ("committed", "ready"): "committed",
    ("committed", "start"): "running",
    ("committed", "cancel"): "released",
    ("committed", "fault"): "released",
    ("running", "finish"): "done",
    ("running", "cancel"): "released",
    ("running", "fault"): "released",
    ("held", "fault"): "released", ("released", "fault"): IGNORED,
    # duplicates and late messages
    ("committed", "accept"): IGNORED,
    ("committed", "reject"): IGNORED, ("running", "reject"): IGNORED,
    ("held", "ready"): IGNORED, ("running", "ready"): IGNORED,
    ("released", "ready"): IGNORED, ("done", "ready"): IGNORED,
    ("released", "cancel"): IGNORED, ("released", "reject"): IGNORED,
    ("released", "hold_lapsed"): IGNORED,
    ("done", "cancel"): IGNORED, ("done", "reject"): IGNORED, ("done", "accept"): IGNORED,
}

EXPECTED = {"initiator": INITIATOR_EXPECTED, "participant": PARTICIPANT_EXPECTED}
LEGAL = [(role, s, e, nxt) for role, table in EXPECTED.items() for (s, e), nxt in table.items()]


def universe(role: str) -> tuple[list[str], list[str]]:
    table = EXPECTED[role]
    states = sorted({s for s, _ in table} | {n for n in table.values() if n != IGNORED})
    events = sorted({e for _, e in table})
    return states, events


ILLEGAL = [(role, s, e) for role in EXPECTED for s, e in itertools.product(*universe(role))
           if (s, e) not in EXPECTED[role]]


@pytest.mark.parametrize(("role", "state", "event", "expected"), LEGAL,
                         ids=[f"{r}:{s}+{e}" for r, s, e, _ in LEGAL])
def test_legal_pair_gives_listed_state(role: str, state: str, event: str, expected: str) -> None:
    assert step(role, state, event) == expected
    assert step(role, state, event, task="o1/0") == expected


@pytest.mark.parametrize(("role", "state", "event"), ILLEGAL,
                         ids=[f"{r}:{s}+{e}" for r, s, e in ILLEGAL])
def test_illegal_pair_raises_naming_event_role_state(role: str, state: str, event: str) -> None:
    with pytest.raises(IllegalTransition) as info:
        step(role, state, event, task="o7/2")
    err = info.value
    text = str(err)
    assert f"'{event}'" in text and role in text and f"'{state}'" in text and "'o7/2'" in text
    assert (err.event, err.role, err.state, err.task) == (event, role, state, "o7/2")
    assert isinstance(err, ProtocolBug)


@pytest.mark.parametrize("role", sorted(EXPECTED))
def test_module_tables_are_exactly_the_listed_ones(role: str) -> None:
    assert contract_net.TABLES[role] == EXPECTED[role]


def test_there_are_illegal_pairs_for_both_roles() -> None:
    # guards the parametrisation above against an empty universe
    assert {r for r, _, _ in ILLEGAL} == {"initiator", "participant"}
    assert len(ILLEGAL) > 40


def test_terminal_states_leave_only_by_ignoring() -> None:
    for role, terminal in (("initiator", "done"), ("participant", "done")):
        for (s, _e), nxt in EXPECTED[role].items():
            if s == terminal:
                assert nxt == IGNORED


def test_message_without_task_omits_it() -> None:
    with pytest.raises(IllegalTransition) as info:
        step("initiator", "idle", "done")
    assert "for task" not in str(info.value)
    assert str(info.value) == "illegal transition: event 'done' for role initiator in state 'idle'"


def test_a_negotiation_is_the_only_writer_of_its_state() -> None:
    neg = Negotiation("o1/0", "operation", 0, "mill", "mill", ["m1"])
    with pytest.raises(AttributeError):
        neg.state = "done"  # type: ignore[misc]
    assert neg.fire("call") and neg.state == "calling"
    assert neg.next_on("done") == IGNORED and neg.state == "calling"
    assert not neg.fire("done") and neg.state == "calling"
    with pytest.raises(IllegalTransition) as info:
        neg.fire("split")
    assert (info.value.event, info.value.role, info.value.state, info.value.task) == (
        "split", "initiator", "calling", "o1/0")


def test_a_resource_task_is_the_only_writer_of_its_state() -> None:
    cfp = CallForProposals(task="o1/0", order="o1", kind="operation", capability="mill",
                           op="mill", quantity=1, earliest_start_at=0.0, due_at=9.0,
                           reply_by_at=1.0)
    task = Task(cfp, "o1", "o1/0#0")
    with pytest.raises(AttributeError):
        task.state = "held"  # type: ignore[misc]
    assert task.fire("propose") and task.state == "held"
    assert task.fire("fault") and task.state == "released"
    assert not task.fire("fault") and task.state == "released"
    with pytest.raises(IllegalTransition) as info:
        task.fire("start")
    assert (info.value.event, info.value.role, info.value.state) == (
        "start", "participant", "released")


def test_no_agent_module_assigns_a_state_but_its_record() -> None:
    """``.state =`` / ``._state =`` appear only in the two records that own them."""
    root = Path(contract_net.__file__).parents[1]
    writers = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            targets = node.targets if isinstance(node, ast.Assign) else (
                [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else [])
            for t in targets:
                if isinstance(t, ast.Attribute) and t.attr in ("state", "_state") \
                        and not (isinstance(t.value, ast.Name) and t.value.id == "self"):
                    writers.append(f"{path.relative_to(root)}:{node.lineno}")
    assert writers == []


def imports_the_table_step(tree: ast.Module) -> bool:
    return any(isinstance(node, ast.ImportFrom) and node.module == contract_net.__name__
               and any(alias.name == "step" for alias in node.names) for node in tree.body)


def test_only_the_two_records_call_the_table() -> None:
    root = Path(contract_net.__file__).parents[1]
    trees = {str(path.relative_to(root)): ast.parse(path.read_text())
             for path in root.rglob("*.py")}
    callers = sorted(name for name, tree in trees.items() if imports_the_table_step(tree)
                     and any(isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                             and node.func.id == "step" for node in ast.walk(tree)))
    assert callers == ["order/negotiation.py", "resource.py"]


# -- part 2: the protocol under an adversarial network -------------------------------------------

TIMING = Timing()
ROUTING = [("cut", "sawing"), ("drill", "drilling")]
MESSAGE_TYPES = ["cfp", "propose", "refuse", "accept", "reject", "confirm", "ready",
                 "inform_done", "failure", "cancel", "heartbeat"]


class ContractNetMachine(RuleBasedStateMachine):
    """One order, 2-4 machines, and Hypothesis as the network and the clock."""

    def __init__(self) -> None:
        super().__init__()
        self.link: FakeLink
        self.order: OrderAgent
        self.machines: list[MachineAgent] = []
        self.late: list[Sent] = []

    @initialize(n=st.integers(2, 4),
                speeds=st.lists(st.sampled_from([1.0, 2.0, 3.0, 5.0, 8.0]), min_size=8,
                                max_size=8),
                quantity=st.integers(1, 4))
    def setup(self, n: int, speeds: list[float], quantity: int) -> None:
        self.machines = [
            MachineAgent(f"m{i + 1}", timing=TIMING, strategy=DefaultResource(),
                         location="bench",
                         capabilities={"sawing": speeds[2 * i], "drilling": speeds[2 * i + 1]})
            for i in range(n)]
        ids = [m.id for m in self.machines]
        self.order = OrderAgent(
            "o1", timing=TIMING, strategy=EarliestFinish(), routing=ROUTING, quantity=quantity,
            release_at=0.0, due_at=1000.0, priority=1,
            capable={"sawing": ids, "drilling": ids}, robots=[],
            machine_location={m: "bench" for m in ids}, input_location="bench",
            output_location="bench", min_processing_s={"sawing": 1.0, "drilling": 1.0})
        self.link = FakeLink([self.order, *self.machines])
        self.link.observers.append(self.check_step)
        self.link.start()
        self.link.advance(0.0)          # the release timer: first call for o1/0

    # -- rules: the network, the clock, the plant ----------------------------------------------
    @rule(span_s=st.sampled_from([0.01, 0.05, 0.1, 0.3, 1.0, 5.0, 31.0]),
          slow=st.sampled_from([None] * 4 + MESSAGE_TYPES),
          lost=st.sampled_from([None] * 12 + MESSAGE_TYPES))
    def network_runs(self, span_s: float, slow: str | None, lost: str | None) -> None:
        """``span_s`` of zero-latency FIFO delivery with timers in order — on a hostile wire.

        In this stretch every message of type ``lost`` is dropped, and every one of
        type ``slow`` is held back: it arrives at the end of the *next* stretch, after
        whatever that stretch carried (out of order, possibly across a re-call).
        """
        late, self.late = self.late, []
        until = self.link.now + span_s
        self.stretch(until, slow, lost)
        self.link.now = max(self.link.now, until)
        for sent in late:
            self.link.in_flight.insert(0, sent)
            self.link.deliver(0)
        self.stretch(until, slow, lost)
        self.link.now = max(self.link.now, until)

    def stretch(self, until: float, slow: str | None, lost: str | None) -> None:
        link = self.link
        for _ in range(100_000):
            if link.in_flight:
                kind = link.in_flight[0].msg.type
                if kind == lost:
                    link.drop(0)
                elif kind == slow:
                    self.late.append(link.in_flight.pop(0))
                else:
                    link.deliver(0)
                continue
            nxt = link.next_due_at()
            if nxt is None or nxt > until:
                return
            link.fire_next()
        raise AssertionError("no quiescence")

    @precondition(lambda self: self.link.in_flight)
    @rule(i=st.integers(0, 63), fate=st.sampled_from(["deliver", "drop", "late"]))
    def one_message(self, i: int, fate: str) -> None:
        """Any message in flight (so any order): delivered now, dropped, or held back."""
        i %= len(self.link.in_flight)
        if fate == "deliver":
            self.link.deliver(i)
        elif fate == "drop":
            self.link.drop(i)
        else:
            self.late.append(self.link.in_flight.pop(i))

    @rule(advance_s=st.sampled_from([0.0, 0.01, 0.05, 0.1, 0.2, 1.0, 5.0, 12.0, 31.0]))
    def fire_due_timers(self, advance_s: float) -> None:
        """Time passes with nothing delivered: every due timer and plant completion fires."""
        self.link.advance(advance_s)

    @rule(m=st.integers(0, 3), event=st.sampled_from(["fault", "repaired"]))
    def plant(self, m: int, event: str) -> None:
        machine = self.machines[m % len(self.machines)]
        if machine.up == (event == "fault"):
            self.link.plant_event(machine.id, event, data={"reason": "breakdown"})

    @rule(k=st.integers(0, len(ROUTING) - 1))
    def winner_faults(self, k: int) -> None:
        """The machine the order last awarded operation k to breaks down."""
        winner = self.order.ops[k].winner
        machine = next((m for m in self.machines if m.id == winner and m.up), None)
        if machine is not None:
            self.link.plant_event(machine.id, "fault", data={"reason": "breakdown"})

    @rule(m=st.integers(0, 3), silent=st.booleans())
    def machine_silent(self, m: int, silent: bool) -> None:
        """A machine is cut off the network (or rejoins it); it keeps running."""
        mid = self.machines[m % len(self.machines)].id
        (self.link.silence if silent else self.link.heal)(mid)

    # -- checks on each step of the order, right after its actions were carried out -------------
    def check_step(self, entry: Step) -> None:
        if entry.agent != "o1":
            return
        accepts = [a for a in entry.actions if isinstance(a, Send) and a.body.TYPE == "accept"]
        kind, key = entry.cause
        if accepts:
            assert kind == "timer" and key.startswith("deadline:"), (
                f"accept sent outside the deadline timer: cause {entry.cause}")
        if kind == "timer" and key.startswith("deadline:"):
            task = key.partition(":")[2]
            self.check_deadline(entry, task, accepts)
        if kind == "timer" and key.startswith("retry:"):
            task = key.partition(":")[2]
            neg = self.order._find(task)
            assert neg is not None
            calls = [a for a in entry.actions if isinstance(a, Send) and a.body.TYPE == "cfp"]
            assert neg.state != "waiting", f"retry of {task} fired and the order still waits"
            if calls:
                assert sorted(c.to for c in calls) == sorted(neg.recipients), (
                    f"retry of {task} did not call every capable machine again")

    def check_deadline(self, entry: Step, task: str, accepts: list[Send]) -> None:
        cfps = [s for s in self.link.sent if s.msg.type == "cfp" and s.msg.body.task == task
                and s.msg.sender == "o1" and s.at <= entry.at]
        if not cfps:
            return
        last_call = cfps[-1].msg
        reply_by = last_call.body.reply_by_at
        conv = last_call.conv
        on_time = {s.msg.sender for s in self.link.sent
                   if s.msg.type == "propose" and s.msg.conv == conv and s.msg.to == "o1"
                   and s.fate == "delivered" and s.delivered_at is not None
                   and s.delivered_at <= reply_by}
        neg = self.order._find(task)
        assert neg is not None
        if accepts:
            assert entry.at >= reply_by - 1e-9, f"award for {task} at {entry.at} < {reply_by}"
            assert len(accepts) == 1, f"{len(accepts)} accepts for {task} in one decision"
            award = accepts[0]
            assert award.conv == conv
            assert award.to in on_time, (
                f"{task} awarded to {award.to}, whose proposal did not arrive by {reply_by}")
        elif any(isinstance(a, Send) for a in entry.actions):
            raise AssertionError(f"deadline of {task} sent messages but no accept: {entry.actions}")
        else:
            # no award: either the round was already over, or the order waits and will retry
            if on_time and neg.state == "waiting":
                raise AssertionError(f"{task}: bidders {sorted(on_time)} answered, no award")
            if neg.state == "waiting":
                retries = [a for a in entry.actions if isinstance(a, SetTimer)
                           and a.key == f"retry:{task}"]
                assert retries and retries[0].at == pytest.approx(entry.at + TIMING.retry_s)

    # -- invariants -------------------------------------------------------------------------------
    def accepts(self) -> list[Sent]:
        return [s for s in self.link.sent if s.msg.type == "accept"]

    @invariant()
    def never_two_awards(self) -> None:
        if not self.machines:
            return
        by_epoch: dict[tuple[str, int], set[str]] = {}
        for s in self.accepts():
            by_epoch.setdefault((s.msg.body.task, s.msg.body.award_epoch), set()).add(s.msg.to)
        for (task, epoch), winners in by_epoch.items():
            assert len(winners) == 1, f"{task} epoch {epoch} awarded to {sorted(winners)}"

    @invariant()
    def at_most_one_live_winner(self) -> None:
        if not self.machines:
            return
        for neg in self.order.ops:
            live = [m.id for m in self.machines
                    if (t := m.tasks.get(neg.task)) is not None
                    and t.state in ("committed", "running") and t.award_epoch == neg.epoch]
            assert len(live) <= 1, f"{neg.task}: live winners {live}"
            if live and neg.state in ("awarded", "leased"):
                assert live == [neg.winner], f"{neg.task}: {live} hold it, order says {neg.winner}"
            for m in self.machines:
                t = m.tasks.get(neg.task)
                assert t is None or t.award_epoch <= neg.epoch, (
                    f"{m.id} holds {neg.task} at epoch {t.award_epoch} > order's {neg.epoch}")

    @invariant()
    def award_epochs_strictly_increase(self) -> None:
        per_task: dict[str, list[int]] = {}
        for s in self.accepts():
            per_task.setdefault(s.msg.body.task, []).append(s.msg.body.award_epoch)
        for task, epochs in per_task.items():
            assert all(a < b for a, b in zip(epochs, epochs[1:])), f"{task}: epochs {epochs}"

    @invariant()
    def every_negotiation_has_a_timer_that_moves_it_on(self) -> None:
        if not self.machines:
            return
        for neg in [*self.order.ops, *([self.order.move] if self.order.move else [])]:
            want = {"calling": "deadline", "waiting": "retry", "awarded": "lease",
                    "leased": "lease"}.get(neg.state)
            if want is None:
                continue
            at = self.link.timer_at("o1", f"{want}:{neg.task}")
            assert at is not None, f"{neg.task} is {neg.state} with no {want} timer"
            if want == "deadline":
                assert neg.cfp is not None and at == neg.cfp.reply_by_at


ContractNetMachine.TestCase.settings = settings(
    max_examples=400, stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
TestContractNet = ContractNetMachine.TestCase


def test_replay_late_reject_after_reaward() -> None:
    """The shrunk counterexample the state machine found, replayed deterministically.

    m1 wins o1/0 and m2's ``reject`` is slow; m1 breaks down, the order calls
    again and awards m2 (epoch 2); then the old ``reject`` arrives.  It is a
    late message like any other and must be ignored (the participant table
    lists (committed|running, reject) as ignored).
    """
    state = ContractNetMachine()
    state.setup(n=2, speeds=[1.0] * 8, quantity=1)
    state.network_runs(span_s=0.3, slow="reject", lost=None)
    state.winner_faults(k=0)
    # m1's failure, the new call, m2's bid and award (epoch 2); then, last, the old reject
    state.network_runs(span_s=0.3, slow=None, lost=None)
    assert [(s.msg.to, s.msg.body.award_epoch) for s in state.accepts()] == [("m1", 1), ("m2", 2)]
    late_reject, = [s for s in state.link.sent_of("reject") if s.msg.to == "m2"]
    assert late_reject.fate == "delivered" and late_reject.delivered_at == pytest.approx(0.6)
    for check in (state.never_two_awards, state.at_most_one_live_winner,
                  state.award_epochs_strictly_increase,
                  state.every_negotiation_has_a_timer_that_moves_it_on):
        check()
    m2 = state.machines[1]
    assert m2.tasks["o1/0"].award_epoch == 2 and m2.tasks["o1/0"].state in ("committed", "running")


@pytest.mark.parametrize("body_type", ["propose", "refuse"])
def test_order_drops_a_bid_for_an_operation_it_has_not_called(body_type: str) -> None:
    """A misbehaving (but authenticated) machine bids for o1/1 before it was called.

    docs/architecture.md, Style 6: a misbehaving peer's message is dropped and counted, never
    crashes the agent.
    """
    from agents.protocol.messages import Message, Proposal, Refusal

    state = ContractNetMachine()
    state.setup(n=2, speeds=[1.0] * 8, quantity=1)
    order = state.order
    assert order.ops[1].state == "idle"
    body = (Proposal("o1/1", "operation", 0.0, 1.0, 1.0, {}) if body_type == "propose"
            else Refusal("o1/1", "busy"))
    msg = Message("m1", "o1", "o1/1#0", b"b" * 16, 1, 99, 0.0, body)
    before = order.ignored
    assert order.on_message(msg, 0.0) == []
    assert order.ignored == before + 1
    assert order.ops[1].state == "idle"
