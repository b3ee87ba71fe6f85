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
    assert not [a for a in out if isinstance(a, Command) and a.name == "abort_operation"]
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
