"""The ISA-18.2 life cycle: the transition table, timers, illegal transitions, floods."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from agents.escalation import lifecycle as lc
from agents.escalation.lifecycle import (
    SAFE_DEFAULT_USER,
    Deadlines,
    IllegalAlarmTransition,
    Option,
    ShelveRefused,
    UnknownOption,
)

D = Deadlines(response_s=60.0, reescalate_every_s=30.0, final_s=300.0, max_shelve_s=100.0)
OPTIONS = [Option("wait_for_repair", "Wait for repair", "lathe1 back at 1200 s"),
           Option("cancel", "Cancel the order", "o-1 is not made")]


def fresh(now: float = 0.0, priority: int = 3) -> lc.Record:
    return lc.new_record(id="e-1", priority=priority, cause="no_capable_resource",
                         consequence="o-1 waits", raised_by="o-1", now=now, options=OPTIONS,
                         safe_default="wait_for_repair", deadlines=D, order="o-1",
                         resource="lathe1")


# (state, event) -> next state, for every legal pair: the table is the specification
TABLE = [
    ("unacknowledged", "acknowledge", "acknowledged"),
    ("unacknowledged", "return_to_normal", "rtn_unacknowledged"),
    ("unacknowledged", "shelve", "shelved"),
    ("unacknowledged", "re_escalate", "unacknowledged"),
    ("unacknowledged", "decide", "resolved"),
    ("unacknowledged", "final_deadline", "resolved"),
    ("acknowledged", "return_to_normal", "resolved"),
    ("acknowledged", "shelve", "shelved"),
    ("acknowledged", "decide", "resolved"),
    ("acknowledged", "final_deadline", "resolved"),
    ("rtn_unacknowledged", "acknowledge", "resolved"),
    ("rtn_unacknowledged", "final_deadline", "resolved"),
    ("shelved", "unshelve", "unacknowledged"),
    ("shelved", "return_to_normal", "resolved"),
    ("shelved", "decide", "resolved"),
    ("shelved", "final_deadline", "resolved"),
]
EVENTS = sorted({e for _, e, _ in TABLE})


@pytest.mark.parametrize(("state", "event", "nxt"), TABLE)
def test_legal_transitions(state: str, event: str, nxt: str) -> None:
    assert lc.step(state, event) == nxt


ILLEGAL = [(s, e) for s in lc.STATES for e in EVENTS if (s, e) not in lc.TRANSITIONS]


@pytest.mark.parametrize(("state", "event"), ILLEGAL)
def test_illegal_transitions_name_event_and_state(state: str, event: str) -> None:
    with pytest.raises(IllegalAlarmTransition) as info:
        lc.step(state, event, "e-9")
    assert (info.value.event, info.value.state) == (event, state)
    assert f"{event!r}" in str(info.value) and f"{state!r}" in str(info.value)
    assert "e-9" in str(info.value)


def test_the_table_covers_every_open_state_and_resolved_is_final() -> None:
    assert len(ILLEGAL) + len(TABLE) == len(lc.STATES) * len(EVENTS)
    assert not [k for k in lc.TRANSITIONS if k[0] == "resolved"]
    for s in lc.OPEN_STATES:
        assert lc.TRANSITIONS[(s, "final_deadline")] == "resolved"


def test_acknowledge_then_decide() -> None:
    r = lc.acknowledge(fresh(), "alice", 10.0)
    assert (r.state, r.acknowledged_by) == ("acknowledged", "alice")
    r = lc.decide(r, "bob", "cancel", "customer withdrew", 20.0)
    assert (r.state, r.outcome, r.decision, r.decided_by, r.decision_reason, r.resolved_at) == (
        "resolved", "decision", "cancel", "bob", "customer withdrew", 20.0)
    assert r.acknowledged_by == "alice"
    with pytest.raises(IllegalAlarmTransition):
        lc.acknowledge(r, "alice", 21.0)


def test_decide_rejects_an_unknown_option() -> None:
    with pytest.raises(UnknownOption, match="no option 'split'.*wait_for_repair, cancel"):
        lc.decide(fresh(), "bob", "split", "", 1.0)


def test_return_to_normal_while_unacknowledged_waits_for_an_acknowledgement() -> None:
    r = lc.return_to_normal(fresh(), 5.0)
    assert r.state == "rtn_unacknowledged" and r.open
    r = lc.acknowledge(r, "alice", 8.0)
    assert (r.state, r.outcome, r.resolved_at) == ("resolved", "return_to_normal", 8.0)


def test_return_to_normal_after_acknowledgement_resolves() -> None:
    r = lc.return_to_normal(lc.acknowledge(fresh(), "alice", 1.0), 5.0)
    assert (r.state, r.outcome) == ("resolved", "return_to_normal")


def test_re_escalation_raises_priority_on_each_missed_deadline() -> None:
    r = fresh(priority=3)
    assert lc.next_due_at(r) == 60.0
    assert lc.due(r, 59.9) is None
    r, ev = lc.on_timer(r, 60.0, D)
    assert ev == "re_escalate" and (r.priority, r.escalations) == (2, 1)
    assert lc.next_due_at(r) == 90.0
    r, _ = lc.on_timer(r, 90.0, D)
    r, _ = lc.on_timer(r, 120.0, D)
    assert (r.priority, r.escalations, r.initial_priority) == (1, 3, 3)   # never above 1
    r = lc.acknowledge(r, "alice", 125.0)
    assert lc.next_due_at(r) == 300.0          # acknowledged: only the final deadline is left


def test_final_deadline_applies_and_records_the_safe_default() -> None:
    r = lc.acknowledge(fresh(), "alice", 1.0)
    r, ev = lc.on_timer(r, 300.0, D)
    assert ev == "final_deadline"
    assert (r.state, r.outcome, r.decision, r.decided_by) == (
        "resolved", "safe_default", "wait_for_repair", SAFE_DEFAULT_USER)
    assert lc.next_due_at(r) is None and lc.due(r, 1e9) is None


def test_final_deadline_after_return_to_normal_applies_nothing() -> None:
    r, _ = lc.on_timer(lc.return_to_normal(fresh(), 1.0), 300.0, D)
    assert (r.state, r.outcome, r.decision) == ("resolved", "return_to_normal", "")


def test_shelve_needs_a_reason_and_a_bounded_time() -> None:
    with pytest.raises(ShelveRefused, match="needs a reason"):
        lc.shelve(fresh(), "alice", "  ", 50.0, 1.0, D)
    with pytest.raises(ShelveRefused, match="at most max_shelve_s"):
        lc.shelve(fresh(), "alice", "maintenance", 101.0, 1.0, D)
    with pytest.raises(ShelveRefused):
        lc.shelve(fresh(), "alice", "maintenance", 0.0, 1.0, D)


def test_shelved_escalation_unshelves_itself_and_is_announced_again() -> None:
    r = lc.shelve(lc.acknowledge(fresh(), "alice", 1.0), "alice", "fitter on the way", 50.0,
                  10.0, D)
    assert (r.state, r.shelved_until_at, r.shelve_reason) == ("shelved", 60.0, "fitter on the way")
    assert lc.next_due_at(r) == 60.0 and lc.due(r, 59.0) is None   # no re-escalation while shelved
    r, ev = lc.on_timer(r, 60.0, D)
    assert ev == "unshelve"
    assert (r.state, r.acknowledged_by, r.response_deadline_at) == ("unacknowledged", "", 120.0)


def test_raiser_deadline_brings_the_final_deadline_forward_only() -> None:
    early = lc.new_record(id="e", priority=1, cause="c", consequence="q", raised_by="o", now=0.0,
                          options=OPTIONS, safe_default="cancel", deadlines=D, deadline_at=40.0)
    assert (early.final_deadline_at, early.response_deadline_at) == (40.0, 40.0)
    late = lc.new_record(id="e", priority=1, cause="c", consequence="q", raised_by="o", now=0.0,
                         options=OPTIONS, safe_default="cancel", deadlines=D, deadline_at=900.0)
    assert late.final_deadline_at == 300.0


def test_safe_default_must_be_an_option() -> None:
    with pytest.raises(lc.EscalationError, match="safe default 'retry'"):
        lc.new_record(id="e", priority=1, cause="c", consequence="q", raised_by="o", now=0.0,
                      options=OPTIONS, safe_default="retry", deadlines=D)


def test_related_escalations_share_a_group() -> None:
    assert fresh().group == "no_capable_resource/lathe1"
    assert lc.group_key("reject_burst", "") == "reject_burst"


def test_flood_is_more_than_count_within_the_window() -> None:
    f = lc.FloodWindow(count=10, window_s=600.0)
    assert not any(f.arrive(float(t)) for t in range(10))
    assert f.arrive(30.0)                       # the 11th within 10 minutes
    assert not f.flooded(605.0)                 # the first ones slid out


def test_record_round_trips_through_json() -> None:
    r = lc.shelve(fresh(), "alice", "why", 10.0, 1.0, D)
    assert lc.Record.from_json(r.to_json()) == r


class LifeCycle(RuleBasedStateMachine):
    """Any sequence of people's actions and clock ticks keeps the record consistent."""

    def __init__(self) -> None:
        super().__init__()
        self.rec = fresh(priority=4)
        self.now = 0.0
        self.decided = False

    @rule(dt=st.floats(0.0, 200.0))
    def tick(self, dt: float) -> None:
        self.now += dt
        while (ev := lc.due(self.rec, self.now)) is not None:
            before = self.rec
            self.rec, got = lc.on_timer(self.rec, self.now, D)
            assert got == ev and self.rec != before

    @rule(event=st.sampled_from(["acknowledge", "return_to_normal", "shelve", "decide"]))
    def person_or_agent(self, event: str) -> None:
        legal = (self.rec.state, event) in lc.TRANSITIONS
        try:
            if event == "acknowledge":
                self.rec = lc.acknowledge(self.rec, "alice", self.now)
            elif event == "return_to_normal":
                self.rec = lc.return_to_normal(self.rec, self.now)
            elif event == "shelve":
                self.rec = lc.shelve(self.rec, "alice", "r", 50.0, self.now, D)
            else:
                self.rec = lc.decide(self.rec, "bob", "cancel", "", self.now)
                self.decided = True
        except IllegalAlarmTransition:
            assert not legal
        else:
            assert legal

    @precondition(lambda self: self.rec.open)
    @invariant()
    def open_records_have_a_timer_no_later_than_the_final_deadline(self) -> None:
        at = lc.next_due_at(self.rec)
        assert at is not None and at <= self.rec.final_deadline_at

    @invariant()
    def never_past_the_final_deadline_while_open(self) -> None:
        if self.rec.open:
            assert lc.due(self.rec, self.now) is None
            assert self.now < self.rec.final_deadline_at

    @invariant()
    def resolved_records_say_how(self) -> None:
        if not self.rec.open:
            assert self.rec.outcome in ("decision", "safe_default", "return_to_normal")
            if self.rec.outcome == "safe_default":
                assert self.rec.decision == "wait_for_repair"
        assert 1 <= self.rec.priority <= self.rec.initial_priority


TestLifeCycle = LifeCycle.TestCase
TestLifeCycle.settings = settings(max_examples=150, stateful_step_count=25, deadline=None)
