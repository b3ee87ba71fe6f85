"""The escalation raiser: raise, re-send until decided, accept a decision, clear — as data."""

from __future__ import annotations

from agents.escalation.raiser import EscalationRaiser, Raised
from agents.protocol.actions import CancelTimer, Send, SetTimer
from agents.protocol.messages import Escalate, EscalationUpdate


def body(esc: str) -> Escalate:
    return Escalate(escalation=esc, priority=2, cause="repeat_faults", consequence="x")


def raiser(key: str = "escalation:{}") -> EscalationRaiser[str]:
    return EscalationRaiser("m1", "console", 30.0, key)


def test_ids_count_from_one_per_owner() -> None:
    r = raiser()
    assert [r.next_id(), r.next_id()] == ["m1/e1", "m1/e2"]
    assert r.raised == 2 and r.open == {}


def test_raise_sends_to_the_console_and_arms_the_resend_timer() -> None:
    r = raiser()
    esc = r.next_id()
    assert r.raise_(body(esc), "about", 10.0) == [
        Send("console", body(esc), esc), SetTimer("escalation:m1/e1", 40.0)]
    assert r.open == {esc: Raised(body(esc), "about")}


def test_resend_repeats_until_decided_then_stops() -> None:
    r = raiser()
    esc = r.next_id()
    r.raise_(body(esc), "about", 0.0)
    assert r.resend(esc, 30.0) == [Send("console", body(esc), esc),
                                   SetTimer("escalation:m1/e1", 60.0)]
    raised, out = r.decided(esc)
    assert raised == Raised(body(esc), "about") and out == [CancelTimer("escalation:m1/e1")]
    assert r.resend(esc, 60.0) == []


def test_a_decision_for_an_unknown_or_decided_escalation_is_none() -> None:
    r = raiser()
    assert r.decided("m1/e9") == (None, [])
    esc = r.next_id()
    r.raise_(body(esc), "about", 0.0)
    r.decided(esc)
    assert r.decided(esc) == (None, [])


def test_clear_returns_to_normal_once() -> None:
    r = raiser()
    esc = r.next_id()
    r.raise_(body(esc), "about", 0.0)
    assert r.clear(esc, "a resource bid again") == [
        CancelTimer("escalation:m1/e1"),
        Send("console", EscalationUpdate(esc, "return_to_normal", "a resource bid again"), esc)]
    assert r.clear(esc, "again") == [] and r.decided(esc) == (None, [])


def test_withdraw_all_in_id_order_leaves_the_timers() -> None:
    r = raiser()
    for _ in range(2):
        esc = r.next_id()
        r.raise_(body(esc), esc, 0.0)
    assert r.withdraw_all("order cancelled") == [
        Send("console", EscalationUpdate(e, "return_to_normal", "order cancelled"), e)
        for e in ("m1/e1", "m1/e2")]
    assert r.open == {}


def test_a_fixed_timer_key_for_an_owner_with_one_escalation_at_a_time() -> None:
    r = raiser("escalation")
    esc = r.next_id()
    assert r.raise_(body(esc), "x", 5.0)[1] == SetTimer("escalation", 35.0)


def test_the_raiser_is_plain_data() -> None:
    a, b = raiser(), raiser()
    for r in (a, b):
        r.raise_(body(r.next_id()), "about", 0.0)
    assert a == b


def test_resend_all_under_one_timer_in_the_order_raised() -> None:
    r = raiser("bursts")
    assert r.resend_all(0.0) == []
    for esc in ("h/b/9", "h/b/10"):
        r.raise_(body(esc), None, 0.0)
    assert r.resend_all(2.0) == [Send("console", body("h/b/9"), "h/b/9"),
                                 Send("console", body("h/b/10"), "h/b/10"),
                                 SetTimer("bursts", 32.0)]


def test_on_timer_answers_only_its_own_resend_timers_and_decision_in_only_the_console() -> None:
    from agents.protocol.messages import Decision, Escalate, Message

    r: EscalationRaiser[None] = EscalationRaiser("host-a", "console", resend_s=5.0)
    body = Escalate(escalation="host-a/e1", priority=1, cause="reject_burst", consequence="x",
                    resource="a", options=[{"id": "continue"}], safe_default="continue",
                    context={})
    r.raise_(body, None, 0.0)
    assert [type(a).__name__ for a in r.on_timer("escalation:host-a/e1", 5.0)] == [
        "Send", "SetTimer"]
    assert r.on_timer("heartbeat", 5.0) == [] and r.on_timer("escalation:other", 5.0) == []
    decision = Decision("host-a/e1", "continue", "alice")
    assert r.decision_in(Message("console", "host-a", "", b"\0" * 16, 1, 1, 0.0,
                                 decision)) == decision
    assert r.decision_in(Message("mallory", "host-a", "", b"\0" * 16, 1, 1, 0.0,
                                 decision)) is None
