"""The machine agent and a job whose outcome the plant no longer knows (ADR 72).

The gateway reports ``command_refused`` with ``outcome_unknown`` when a machine restarted
since a job ran and no longer knows how it ended (tests/test_opcua_restart_outcome.py
shows when).  Handing it back would have the work done again, perhaps twice; the agent
instead holds the task, keeps its lease and the machine for it, and asks a person:
``done`` reports it done, ``redo`` hands it back; ``redo`` is the safe default.
"""

from __future__ import annotations

import pytest

from agents.base import PlantEventIn, Timing
from agents.escalation.lifecycle import SAFE_DEFAULT_USER
from agents.escalation.policy import EscalationPolicy, Rule
from agents.machine import MachineAgent
from agents.negotiation.strategies import DefaultResource
from agents.protocol.actions import Action, Command, Log, Send
from agents.protocol.messages import (CallForProposals, Decision, Done, Escalate, Failure,
                                      Message)
from agents.resource import Task

POLICY = EscalationPolicy(equipment_refuses=Rule(priority=2))
UNKNOWN = PlantEventIn("command_refused", "m1", "o1/0",
                       {"why": "the machine no longer knows job o1/0@3", "elsewhere": False,
                        "outcome_unknown": True})


def machine(policy: EscalationPolicy = POLICY) -> MachineAgent:
    m = MachineAgent("m1", timing=Timing(), strategy=DefaultResource(), location="bay",
                     capabilities={"milling": 1.0}, escalation=policy)
    cfp = CallForProposals(task="o1/0", order="o1", kind="operation", capability="milling",
                           op="mill", quantity=1, earliest_start_at=0.0, due_at=100.0,
                           reply_by_at=1.0)
    task = Task(cfp, "o1", "conv-o1", award_epoch=3, started_at=5.0)
    for event in ("propose", "accept", "start"):
        assert task.fire(event)           # type: ignore[arg-type]
    m.tasks["o1/0"], m.running = task, "o1/0"
    return m


def sent(out: list[Action], kind: type) -> list[Send]:
    return [a for a in out if isinstance(a, Send) and isinstance(a.body, kind)]


def decide(m: MachineAgent, escalation: str, option: str, user: str = "ann") -> list[Action]:
    body = Decision(escalation=escalation, option=option, user=user)
    return m.on_message(Message("console", "m1", escalation, b"x", 1, 1, 0.0, body), 60.0)


def raised(m: MachineAgent) -> Escalate:
    out = m.on_plant_event(UNKNOWN, 50.0)
    assert not sent(out, Failure) and not sent(out, Done)    # not handed back, not done
    esc = [a.body for a in out if isinstance(a, Send) and isinstance(a.body, Escalate)]
    assert len(esc) == 1
    return esc[0]


def test_an_unknown_outcome_holds_the_task_and_asks_a_person() -> None:
    m = machine()
    esc = raised(m)
    assert (esc.cause, esc.resource, esc.order, esc.safe_default) == (
        "job_outcome_unknown", "m1", "o1", "redo")
    assert [o["id"] for o in esc.options] == ["done", "redo"]
    assert esc.context["task"] == "o1/0"
    assert m.running == "o1/0" and m.tasks["o1/0"].state == "running"   # held: lease kept
    # a fault meanwhile hands the other work back, never the held task
    out = m.on_plant_event(PlantEventIn("fault", "m1", "", {"reason": "link lost"}), 55.0)
    assert not sent(out, Failure)
    assert not [a for a in out if isinstance(a, Command) and a.command == "abort_operation"]
    assert "o1/0" in m.tasks


def test_decided_done_reports_it_done_once() -> None:
    m = machine()
    esc = raised(m)
    out = decide(m, esc.escalation, "done")
    done = sent(out, Done)
    assert [(s.to, s.body.task, s.body.award_epoch, s.body.quality, s.body.location)
            for s in done] == [("o1", "o1/0", 3, "ok", "bay")]
    assert not sent(out, Failure) and m.running is None and "o1/0" not in m.tasks
    assert decide(m, esc.escalation, "done") == []           # decided once


@pytest.mark.parametrize("user", ["ann", SAFE_DEFAULT_USER])
def test_decided_redo_hands_it_back(user: str) -> None:
    m = machine()
    esc = raised(m)
    out = decide(m, esc.escalation, "redo", user)
    assert [(s.to, s.body.task) for s in sent(out, Failure)] == [("o1", "o1/0")]
    assert not sent(out, Done) and m.running is None and "o1/0" not in m.tasks
    assert any(isinstance(a, Log) and a.event == "decision_applied" for a in out)


def test_without_a_console_it_is_handed_back_and_logged() -> None:
    from agents.escalation.policy import OFF

    m = machine(OFF)
    out = m.on_plant_event(UNKNOWN, 50.0)
    assert [(s.to, s.body.task) for s in sent(out, Failure)] == [("o1", "o1/0")]
    logs = [a for a in out if isinstance(a, Log) and a.event == "outcome_unknown"]
    assert logs and logs[0].fields["then"] == "redo (no console)"


# -- the held task and the rest of the agent's life (review of ADR 72) ----------------------
from agents.protocol.actions import CancelTimer, SetTimer  # noqa: E402
from agents.protocol.messages import Cancel, EscalationUpdate  # noqa: E402
from agents.escalation.policy import Rule as _Rule  # noqa: E402


def _updates(out: list[Action]) -> list[tuple[str, str]]:
    return [(s.body.escalation, s.body.event) for s in sent(out, EscalationUpdate)]


def test_a_recovered_agent_does_not_ask_the_plant_about_a_held_task() -> None:
    """After a host restart the agent asks the plant how its running task ended; for a
    held task the plant stopped following it and would answer "not running", handing the
    task back while the person is still asked."""
    m = machine()
    raised(m)
    out = m.on_recover(70.0)
    asks = [a for a in out if isinstance(a, Command) and a.command == "query_state"]
    assert len(asks) == 1 and asks[0].task == ""


def test_a_held_task_that_leaves_otherwise_withdraws_its_question() -> None:
    """Cancelled by its order, its escalation returns to normal, and a later answer acts
    on nothing; a fault afterwards leaves no released task running on the machine."""
    m = machine()
    esc = raised(m)
    body = Cancel(task="o1/0", award_epoch=3, reason="order cancelled")
    out = m.on_message(Message("o1", "m1", "conv-o1", b"x", 1, 2, 0.0, body), 58.0)
    assert _updates(out) == [(esc.escalation, "return_to_normal")]
    assert m.unknown == {} and not m.raiser.open
    m.on_plant_event(PlantEventIn("fault", "m1", "", {"reason": "link lost"}), 59.0)
    assert m.running is None and "o1/0" not in m.tasks
    assert decide(m, esc.escalation, "done") == []                # nothing to decide


def test_the_end_reported_after_all_settles_the_question() -> None:
    m = machine()
    esc = raised(m)
    out = m.on_plant_event(PlantEventIn("operation_done", "m1", "o1/0", {"quality": "ok"}),
                           58.0)
    assert [s.body.task for s in sent(out, Done)] == ["o1/0"]
    assert _updates(out) == [(esc.escalation, "return_to_normal")] and m.unknown == {}


def test_deciding_one_escalation_keeps_re_sending_the_other() -> None:
    """The resource re-sends its open escalations on one timer; deciding the first must not
    stop the second's re-sending (its first send may have been lost)."""
    policy = EscalationPolicy(equipment_refuses=_Rule(priority=2),
                              repeat_faults=_Rule(priority=2, threshold_s=600.0, count=1))
    m = machine(policy)
    m.tasks.clear()
    m.running = None
    first = [a.body for a in m.on_plant_event(PlantEventIn("fault", "m1", "", {}), 10.0)
             if isinstance(a, Send) and isinstance(a.body, Escalate)]
    assert [e.cause for e in first] == ["repeat_faults"]
    m.on_plant_event(PlantEventIn("repaired", "m1", "", {}), 20.0)
    fresh = machine(policy)                        # a running task to hold on the same agent
    m.tasks["o1/0"], m.running = fresh.tasks["o1/0"], "o1/0"
    second = raised(m)
    out = decide(m, first[0].escalation, "keep_in_service")
    assert not [a for a in out if isinstance(a, CancelTimer)]
    assert [a.key for a in out if isinstance(a, SetTimer)] == ["escalation"]
    assert list(m.raiser.open) == [second.escalation]
    resent = m.on_timer("escalation", 90.0)
    assert [s.body.escalation for s in sent(resent, Escalate)] == [second.escalation]


class _Tracker:
    """Stands in for the machine's maintenance window: what it is told of working time."""

    job = None

    def __init__(self) -> None:
        self.calls: list[tuple[float, bool]] = []

    def blocks(self, start: float, duration_s: float) -> bool:
        return False

    def track(self, now: float, working: bool) -> None:
        self.calls.append((now, working))


def test_time_held_is_not_counted_as_work_by_the_wear_tracker() -> None:
    """Waiting for a person is not operating time: the estimator's age would grow by the
    whole wait and the cost rule would ask for maintenance early (ADR 75)."""
    m = machine()
    tracker = _Tracker()
    m.maint = tracker            # type: ignore[assignment]
    m._after([], 40.0)
    raised(m)
    m._after([], 60.0)
    assert tracker.calls[0] == (40.0, True) and tracker.calls[-1] == (60.0, False)
    assert all(not working for _, working in tracker.calls[1:])
