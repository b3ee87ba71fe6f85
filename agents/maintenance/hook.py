"""Where a machine agent meets its maintenance window: the calls agents/machine.py makes.

Kept here so the machine agent holds only one-line hooks.  The window itself is
:class:`agents.maintenance.window.MaintenanceWindow`; these functions add what
needs the machine's queue: the first gap for the job, the committed work handed
back when it overlaps a booked window (its orders re-negotiate around it), and
the gate that starts nothing which would run into the window.
"""

from __future__ import annotations

import math
from typing import Protocol

from agents.base import PlantEventIn
from agents.escalation.policy import OFF, EscalationPolicy
from agents.escalation.raiser import EscalationRaiser
from agents.protocol.actions import Action, Log, Send, SetTimer
from agents.protocol.messages import (
    Decision,
    Failure,
    MaintOffer,
    MaintStart,
    Message,
    PartReserved,
    PartUnavailable,
)
from agents.resource import ResourceAgent, Task

from .cases import escalate
from .slots import queue_of
from .window import MaintenanceWindow


class MachineAgent(Protocol):
    """What the hooks use of :class:`agents.machine.MachineAgent` (named here, not
    imported: the machine imports this module)."""

    id: str
    up: bool
    running: str | None
    busy_until_at: float
    tasks: dict[str, Task]
    maint: MaintenanceWindow | None
    policy: EscalationPolicy
    raiser: EscalationRaiser[None]

    @property
    def open_escalation(self) -> str: ...

    def earliest_gap(self, earliest_at: float, duration_s: float, now: float) -> float: ...

__all__ = ["bind", "gate", "on_message", "on_plant_event", "on_timer"]


def bind(agent: MachineAgent) -> None:
    """Let the window ask the machine's queue for its first gap (the queue's own tasks
    only: the window being replaced is no obstacle)."""
    w = agent.maint
    if w is None:
        return
    assert isinstance(agent, ResourceAgent)
    w.first_gap = lambda now: _gap(agent, w, now)
    w.queue = lambda now: queue_of(agent, w.plan.retry_s, now)    # its booked tasks


def _gap(agent: ResourceAgent, w: MaintenanceWindow, now: float) -> float:
    """The first gap for the job; never right at the end of the running operation: the
    plant starts an operation when the command reaches it, so it ends a transport's delay
    after the machine's own reckoning (under `autocell up`, by tenths of a second) — a
    window from that instant would cut into it.  ``retry_s`` is the margin (the cost rule,
    ADR 75, asks from now, so its window often follows the running operation)."""
    gap = ResourceAgent.earliest_gap(agent, now, w.plan.duration_s, now)
    if agent.running is not None and gap <= agent.busy_until_at + 1e-9:
        # the margin may push the job into the next booked task: the first gap after it
        return ResourceAgent.earliest_gap(agent, agent.busy_until_at + w.plan.retry_s,
                                          w.plan.duration_s, now)
    return gap


def on_message(agent: MachineAgent, msg: Message, now: float) -> list[Action] | None:
    """The crew's messages; None for any other message."""
    w = agent.maint
    if w is None:
        return None
    if isinstance(msg.body, Decision) and w.escalation == msg.body.escalation:
        assert isinstance(agent, ResourceAgent)
        out = ResourceAgent.on_message(agent, msg, now)      # decision_applied, closed
        if not out:                                          # a repeat: decided already
            return out
        return out + w.on_decision(msg.body.option, now) + _hand_back_overlapping(agent, now)
    if isinstance(msg.body, Decision) and w.miss and w.miss == msg.body.escalation:
        assert isinstance(agent, ResourceAgent)
        out = ResourceAgent.on_message(agent, msg, now)      # decision_applied, closed
        return out + w.on_miss_decision(msg.body.option, now) if out else out
    if isinstance(msg.body, (PartReserved, PartUnavailable)):       # the stores' answer
        out = w.on_part(msg, now)
        if w.part_late and not w.escalation:
            out += _escalate(agent, w, "maintenance_no_part", now, {
                "job": w.job, "part": w.plan.part, "serial": w.part_serial,
                "latest_start_at": round(w.latest_start_at, 6),
                "eta_at": round(w.part_ready_at, 6), "detected_at": now})
        return out
    if not isinstance(msg.body, (MaintOffer, MaintStart)):
        return None
    busy_until = agent.busy_until_at if agent.running is not None else 0.0
    booked, out = w.on_message(msg, now, busy_until)
    if booked:
        out += _hand_back_overlapping(agent, now)
        if w.late and not w.part_late:              # (a late part is escalated as such)
            out += _escalate_no_window(agent, w, now)
    return out


def _escalate_no_window(agent: MachineAgent, w: MaintenanceWindow, now: float) -> list[Action]:
    """No technician before the latest safe start: ask a supervisor."""
    return _escalate(agent, w, "maintenance_no_window", now, {
        "job": w.job, "latest_start_at": round(w.latest_start_at, 6),
        "window_start_at": round(w.start_at, 6), "technician": w.technician,
        "detected_at": now})


def _escalate(agent: MachineAgent, w: MaintenanceWindow, cause: str, now: float,
              context: dict[str, object]) -> list[Action]:
    """Ask a supervisor about the job (the one raiser, so it reaches the console), unless
    nobody listens or a case of ours is open already."""
    if agent.policy == OFF or agent.open_escalation or w.escalation:
        return []                   # nobody listens, a case is open, or raised for this job
    esc = agent.raiser.next_id()
    w.escalation = esc
    body = escalate(esc, cause, agent.id, now + agent.policy.deadlines.final_s, context)
    return agent.raiser.raise_(body, None, now) + [
        Log("escalate", {"agent": agent.id, "escalation": esc, "cause": cause,
                         "resource": agent.id})]


def _escalate_miss(agent: MachineAgent, w: MaintenanceWindow, reason: str,
                   now: float) -> list[Action]:
    """The machine failed well before its estimator's ``miss_quantile``: ask a supervisor
    whether to trust it (ADR 64), through the one raiser, unless a case is open."""
    out: list[Action] = [Log("prediction_miss", {
        "agent": agent.id, "machine": agent.id, "reason": reason,
        "fail_by": round(w.fail_by_at, 6), "early_by_s": round(w.fail_by_at - now, 6),
        "quantile": w.plan.miss_quantile})]
    if agent.policy == OFF or agent.open_escalation or w.escalation or w.miss:
        return out
    esc = agent.raiser.next_id()
    w.miss = esc
    body = escalate(esc, "maintenance_prediction_miss", agent.id,
                    now + agent.policy.deadlines.final_s,
                    {"reason": reason, "fail_by": round(w.fail_by_at, 6),
                     "quantile": w.plan.miss_quantile, "detected_at": now})
    return out + agent.raiser.raise_(body, None, now) + [
        Log("escalate", {"agent": agent.id, "escalation": esc,
                         "cause": "maintenance_prediction_miss", "resource": agent.id})]


def on_timer(agent: MachineAgent, key: str, now: float) -> list[Action] | None:
    if agent.maint is None or not key.startswith("maint_"):
        return None
    return agent.maint.on_timer(key, now)


def on_plant_event(agent: MachineAgent, ev: PlantEventIn,
                   now: float) -> tuple[bool, list[Action]]:
    """(handled — the resource's own handling is not wanted —, actions).  Readings and the
    plant's refusal of the job are the window's alone; faults and repairs are seen by the
    window first, then handled by the resource as ever."""
    w = agent.maint
    if w is None:
        return False, []
    data = ev.data or {}
    if ev.event == "reading":
        return True, w.on_reading(data, agent.running is not None, now)
    if ev.event == "command_refused" and w.job and ev.task == w.job:
        return True, w.on_refused(ev.task, str(data.get("why", "")), now)
    if ev.event == "fault" and agent.up:
        reason = str(data.get("reason", "breakdown"))
        # a wear failure, or one a fault scenario injects into a machine whose estimator
        # gave a (finite) prediction, before the miss quantile: the prediction was wrong
        miss = w.plan.repair_s > 0 and w.missed(now) and (
            reason == "wear" or (reason == "injected" and math.isfinite(w.fail_by_at)))
        out = _escalate_miss(agent, w, reason, now) if miss else []
        return False, out + w.on_fault(reason, now)
    if ev.event == "repaired" and not agent.up:
        esc = w.escalation
        out = w.on_repaired(now)
        if esc and esc in agent.raiser.open and not w.escalation:    # the job is done
            out += agent.raiser.clear(esc, "maintenance done")
        return False, out
    return False, []


def gate(agent: MachineAgent, task: Task, duration_s: float, now: float) -> list[Action] | None:
    """None: ``task`` may start now.  Otherwise wait for the window's end."""
    w = agent.maint
    if w is None or not w.blocks(now, duration_s):
        return None
    return [SetTimer("start_check", w.end_at + 1e-6)]


def _hand_back_overlapping(agent: MachineAgent, now: float) -> list[Action]:
    """Committed (not running) work that runs into the window goes back to its orders."""
    w = agent.maint
    assert w is not None
    out: list[Action] = []
    for tid, t in sorted(agent.tasks.items()):
        if t.state != "committed" or not w.blocks(t.start_at, t.finish_at - t.start_at):
            continue
        t.fire("fault")
        del agent.tasks[tid]
        out.append(Send(t.order, Failure(tid, t.award_epoch,
                                         f"{agent.id} maintenance window"), t.conv))
        out.append(Log("handed_back", {"agent": agent.id, "task": tid, "order": t.order,
                                       "why": "maintenance window"}))
    return out
