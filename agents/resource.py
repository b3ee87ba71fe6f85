"""What machine and robot agents share: the participant side of the contract net.

Theory of operation
-------------------
Calls for proposals are collected for a short **bidding round** (a quarter
of the reply deadline) and answered together, ranked by the resource
strategy (default: most work remaining first), so the order that needs the
machine most gets the earliest slot.  Each proposal **holds** its slot in
the resource's timeline until ``hold_until_at``; overlapping calls see
each other's holds and never get the same slot.

An award (``accept``) turns the hold into a **commitment**, confirmed with
``confirm``; while it holds commitments the resource sends each order a
``heartbeat`` listing its leases every ``heartbeat_interval_s``.  Work
starts when the order says the parts are there (``ready``) and the
resource is idle and up; it runs in planned order, but a ready task may
jump ahead if it finishes before the planned start of every earlier one.

A ``fault`` hands every task back (``failure``) and stops bidding until
``repaired``.  Messages carrying an old award epoch are ignored, which
fences stale winners.  Subclasses supply :meth:`can_do`,
:meth:`quote` (the earliest feasible slot) and :meth:`start_command`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from agents.base import Agent, PlantEventIn, Timing
from agents.escalation.policy import OFF, EscalationPolicy
from agents.escalation.raiser import EscalationRaiser
from agents.negotiation.contract_net import (
    IGNORED,
    Ignored,
    ParticipantEvent,
    ParticipantState,
    step,
)
from agents.negotiation.strategies import (ResourceStrategy, Slot, dispatch_next, price_of,
                                           rank_calls)
from agents.protocol.actions import Action, CancelTimer, Command, Log, Send, SetTimer
from agents.protocol.messages import (
    Award,
    CallForProposals,
    Cancel,
    Confirmation,
    Decision,
    Done,
    Escalate,
    Failure,
    Heartbeat,
    Message,
    Proposal,
    Ready,
    Refusal,
    Rejection,
)


@dataclass(slots=True)
class Task:
    """The resource's view of one task it bid for.

    Its ``state`` is read-only: it changes only through :meth:`fire`, which looks the
    event up in :data:`agents.negotiation.contract_net.PARTICIPANT` (an illegal one
    raises :class:`~agents.negotiation.contract_net.IllegalTransition`)."""

    cfp: CallForProposals
    order: str
    conv: str
    start_at: float = 0.0
    finish_at: float = 0.0
    hold_until_at: float = 0.0
    award_epoch: int = -1
    ready: bool = False
    started_at: float = 0.0
    info: dict = field(default_factory=dict)
    _state: ParticipantState = field(default="new", init=False, repr=False)

    @property
    def state(self) -> ParticipantState:
        return self._state

    def fire(self, event: ParticipantEvent) -> bool:
        """Take ``event`` through the table; False when the table ignores it here."""
        nxt: ParticipantState | Ignored = step(  # type: ignore[assignment]
            "participant", self._state, event, self.cfp.task)
        if nxt == IGNORED:
            return False
        self._state = nxt
        return True


class ResourceAgent(Agent):
    """Participant side of the contract net for one machine or robot."""

    kind = "operation"
    ready_on_award = False     # robots: the parts wait at the origin once a move is awarded
    #: run committed tasks strictly in planned order (no jumping ahead): set for a rehearsed
    #: plan, whose sequence is only guaranteed if kept — a task started early elsewhere
    #: moves every later one left, so a planned start is no safe gap to jump into
    planned_order = False

    def __init__(self, agent_id: str, *, timing: Timing, strategy: ResourceStrategy,
                 location: str, escalation: EscalationPolicy = OFF, mtbf_s: float | None = None,
                 **kw: object) -> None:
        super().__init__(agent_id, timing=timing, **kw)  # type: ignore[arg-type]
        self.policy = escalation
        self.mtbf_s = mtbf_s                    # as specified; the repeat-faults allowance
        self.fault_times: list[float] = []      # recent faults, for the repeat-faults rule
        # at most one open escalation (repeat faults), re-sent on the "escalation" timer
        self.raiser: EscalationRaiser[None] = EscalationRaiser(
            agent_id, escalation.console, timing.retry_s, "escalation")
        self.out_of_service_by = ""             # a supervisor took us out of service
        self.strategy = strategy
        self.location = location
        self.up = True
        self.repair_at = 0.0      # while down: when the plant expects us back (0 = unknown)
        self.tasks: dict[str, Task] = {}
        self.running: str | None = None
        self.busy_until_at = 0.0
        self._round: list[tuple[Message, CallForProposals]] = []
        self.completed: dict[str, Done] = {}   # task -> our report, re-sent if it was lost
        self.unknown: dict[str, str] = {}      # escalation -> task whose outcome is unknown
        self._hb_armed = False
        self.ignored = 0

    @property
    def open_escalation(self) -> str:
        """The open escalation's id, "" when none is open."""
        return next(iter(self.raiser.open), "")

    @property
    def escalated(self) -> int:
        return self.raiser.raised

    # -- subclass hooks ------------------------------------------------------------------
    def can_do(self, cfp: CallForProposals) -> bool:
        raise NotImplementedError

    def quote(self, cfp: CallForProposals, now: float) -> Slot:
        raise NotImplementedError

    def start_command(self, task_id: str, task: Task, now: float) -> Command:
        raise NotImplementedError

    def on_finished(self, task: Task, now: float) -> None:
        """Update resource state (location, last capability) when a task ends."""

    def hold_until(self, task_id: str, task: Task) -> float:
        """When a committed ``task`` may start at the earliest (0: as soon as it is ready):
        a machine holds a task it won on a later, cheaper slot until the awarded start."""
        return 0.0

    def on_committed(self, task_id: str, task: Task, now: float) -> list[Action]:
        """``task`` was just awarded to us (committed, not started): a machine re-times its
        plan here (ADR 97)."""
        return []

    def power_gate(self, task_id: str, task: Task, now: float) -> list[Action] | None:
        """None: ``task`` may start now.  Otherwise the actions of waiting for a power lease
        (a machine in a cell with a peak cap, agents/energy/client.py)."""
        return None

    # -- timeline --------------------------------------------------------------------------
    def busy_intervals(self, now: float) -> list[tuple[float, float, str]]:
        """Held, committed and running tasks as (start, end, task), sorted."""
        out = []
        for tid, t in self.tasks.items():
            if t.state in ("committed", "running") or (t.state == "held" and t.hold_until_at >= now):
                end = t.finish_at
                if t.state == "running":
                    end = max(end, now)
                out.append((t.start_at, end, tid))
        out.sort()
        return out

    def earliest_gap(self, earliest_at: float, duration_s: float, now: float) -> float:
        """Earliest start ≥ ``earliest_at`` where ``duration_s`` fits between busy intervals."""
        start = max(earliest_at, now, self.busy_until_at if self.running else now)
        for s, e, _ in self.busy_intervals(now):
            if start + duration_s <= s + 1e-9:
                break
            start = max(start, e)
        return start

    # -- inputs -------------------------------------------------------------------------------
    def on_message(self, msg: Message, now: float) -> list[Action]:
        body = msg.body
        if isinstance(body, Decision):
            return self._on_decision(body, now)
        if isinstance(body, CallForProposals):
            return self._on_cfp(msg, body, now)
        task_id: str = getattr(body, "task", "")
        task = self.tasks.get(task_id)
        if task is None:
            if isinstance(body, Award):   # award for a task we never bid on
                return [Send(msg.sender, Confirmation(body.task, body.award_epoch, False,
                                                      "unknown task"), msg.conv)]
            self.ignored += 1
            return []
        if isinstance(body, Award):
            return self._on_award(msg, body, task, now)
        epoch = getattr(body, "award_epoch", None)
        if epoch is not None and epoch != task.award_epoch:
            self.ignored += 1             # a stale epoch: fenced
            return [Log("stale_epoch", {"agent": self.id, "task": task_id, "type": msg.type})]
        if isinstance(body, Rejection):
            return self._transition(task, "reject", body.task, now)
        if isinstance(body, Ready):
            if not self._fire(task, "ready"):
                return []
            task.ready = True
            return self._try_start(now)
        if isinstance(body, Cancel):
            return self._on_cancel(body.task, task, body.reason, now)
        self.ignored += 1
        return []

    def _on_cfp(self, msg: Message, cfp: CallForProposals, now: float) -> list[Action]:
        done = self.completed.get(cfp.task)
        if done is not None:   # we finished it; our report must have been lost
            return [Send(msg.sender, done, msg.conv)]
        if not self.up or not self.can_do(cfp):
            if not self.up:
                return [Send(msg.sender, Refusal(cfp.task, "down", self.repair_at), msg.conv)]
            return [Send(msg.sender, Refusal(cfp.task, "incapable"), msg.conv)]
        out: list[Action] = []
        if not self._round:
            out.append(SetTimer("round", now + self.timing.reply_deadline_s / 4))
        self._round.append((msg, cfp))
        return out

    def _bid_round(self, now: float) -> list[Action]:
        calls, self._round = self._round, []
        rank_calls(self.strategy, calls)
        out: list[Action] = []
        for msg, cfp in calls:
            old = self.tasks.get(cfp.task)
            if old is not None and old.state in ("held", "committed", "running"):
                if old.state == "running":
                    out.append(Send(msg.sender, Refusal(cfp.task, "running here"), msg.conv))
                    continue
                # a new round of the same task replaces our hold — or our commitment:
                # the order called again, so it withdrew that award (its cancel was lost)
                if old.state == "committed":
                    out.append(Log("stale_commitment_dropped", {
                        "agent": self.id, "task": cfp.task, "epoch": old.award_epoch}))
                del self.tasks[cfp.task]
            if not self.up or now > cfp.reply_by_at:
                out.append(Send(msg.sender, Refusal(cfp.task, "down", self.repair_at)
                                if not self.up else Refusal(cfp.task, "late"), msg.conv))
                continue
            slot = self.quote(cfp, now)
            cost = price_of(self.strategy, cfp, slot)
            if cost is None:
                out.append(Send(msg.sender, Refusal(cfp.task, "strategy declined"), msg.conv))
                continue
            hold = cfp.reply_by_at + self.timing.reply_deadline_s
            task = Task(cfp, msg.sender, msg.conv, start_at=slot.start_at,
                        finish_at=slot.finish_at, hold_until_at=hold,
                        info={"setup_s": slot.setup_s, "processing_s": slot.processing_s})
            task.fire("propose")
            self.tasks[cfp.task] = task
            out.append(Send(msg.sender, Proposal(cfp.task, self.kind, slot.start_at, slot.finish_at,
                                                 hold, cost), msg.conv))
            out.append(SetTimer(f"hold:{cfp.task}", hold))
        return out

    def _on_award(self, msg: Message, award: Award, task: Task, now: float) -> list[Action]:
        if award.award_epoch <= task.award_epoch:
            self.ignored += 1
            return []
        if not self.up or task.state not in ("held", "released"):
            reason = "down" if not self.up else f"task is {task.state}"
            return [Send(msg.sender, Confirmation(award.task, award.award_epoch, False, reason),
                         msg.conv)]
        if task.state == "released":       # hold lapsed: take it only if the slot is still free
            dur = task.finish_at - task.start_at
            start = self.earliest_gap(task.cfp.earliest_start_at, dur, now)
            task.start_at, task.finish_at = start, start + dur
        task.fire("accept")
        task.award_epoch = award.award_epoch
        out: list[Action] = [CancelTimer(f"hold:{award.task}"),
                             Send(msg.sender, Confirmation(award.task, award.award_epoch), msg.conv),
                             Log("awarded", {"agent": self.id, "task": award.task,
                                             "epoch": award.award_epoch, "start_at": task.start_at,
                                             "finish_at": task.finish_at})]
        if not self._hb_armed:
            self._hb_armed = True
            out.append(SetTimer("heartbeat", now + self.timing.heartbeat_interval_s))
        out.extend(self.on_committed(award.task, task, now))
        if self.ready_on_award:
            task.ready = True
            out.extend(self._try_start(now))
        return out

    def _on_cancel(self, task_id: str, task: Task, reason: str, now: float) -> list[Action]:
        was_running = task.state == "running"
        if not self._fire(task, "cancel"):
            return []
        out: list[Action] = [Log("cancelled", {"agent": self.id, "task": task_id, "reason": reason}),
                             *self._settled(task_id, f"cancelled: {reason}", now)]
        if was_running:
            self.running = None
            out.append(Command("abort_operation", self.id, task_id))
        return out + self._try_start(now)

    def on_timer(self, key: str, now: float) -> list[Action]:
        if key == "round":
            return self._bid_round(now)
        if key == "heartbeat":
            return self._heartbeat(now)
        if key == "start_check":
            return self._try_start(now)
        if key == "escalation":          # until decided: send it again
            return self.raiser.resend_all(now)
        if key.startswith("hold:"):
            task = self.tasks.get(key[5:])
            if task is not None and task.state == "held":
                self._fire(task, "hold_lapsed")
            return []
        return []

    def _heartbeat(self, now: float) -> list[Action]:
        per_order: dict[str, list[list[object]]] = {}
        convs: dict[str, str] = {}
        for tid, t in sorted(self.tasks.items()):
            if t.state in ("committed", "running"):
                per_order.setdefault(t.order, []).append([tid, t.award_epoch, t.ready])
                convs[t.order] = t.conv
        if not per_order:
            self._hb_armed = False
            return []
        state = "down" if not self.up else ("busy" if self.running else "up")
        out: list[Action] = [Send(o, Heartbeat(state, leases), convs[o])
                             for o, leases in per_order.items()]
        out.append(SetTimer("heartbeat", now + self.timing.heartbeat_interval_s))
        return out

    # -- execution ----------------------------------------------------------------------------
    def _try_start(self, now: float) -> list[Action]:
        if not self.up or self.running is not None:
            return []
        pending = sorted((t.start_at, tid) for tid, t in self.tasks.items() if t.state == "committed")
        # a task held until its awarded start (a machine's later, cheaper slot) is not yet
        # in the queue; look again when its hold ends
        held = [self.hold_until(tid, self.tasks[tid]) for _, tid in pending]
        hold_ends = min((h for h in held if h > now), default=None)
        if self.planned_order:
            # a held task keeps its place in the plan: the tasks after it wait for it
            cut = next((k for k, h in enumerate(held) if h > now), len(held))
            pending = pending[:cut]
        else:
            pending = [p for p, h in zip(pending, held, strict=True) if h <= now]
        if not pending:
            return [] if hold_ends is None else [SetTimer("start_check", hold_ends)]
        # a strategy's dispatch rule over the booked queue, if it has one (None: planned order)
        choice = None if self.planned_order else dispatch_next(self.strategy, self.tasks,
                                                               pending, now)
        first_start = pending[0][0]
        for planned, tid in pending if choice is None else ():
            t = self.tasks[tid]
            if not t.ready:
                continue
            dur = t.finish_at - t.start_at
            if tid == pending[0][1] or (not self.planned_order
                                        and now + dur <= first_start + 1e-9):
                choice = tid
                break
            if planned == first_start or now > first_start + self.timing.heartbeat_interval_s:
                # same planned start, or the plan is stale (the earliest task's
                # parts are late): don't idle the machine waiting for them
                choice = tid
                break
        if choice is None:
            if any(self.tasks[tid].ready for _, tid in pending):
                # a ready task waits for an earlier planned one: look again once the
                # plan counts as stale, so a lost ``ready`` can't idle the machine
                stale_at = first_start + self.timing.heartbeat_interval_s + 1e-6
                return [SetTimer("start_check", stale_at if hold_ends is None
                                 else min(stale_at, hold_ends))]
            return [] if hold_ends is None else [SetTimer("start_check", hold_ends)]
        task = self.tasks[choice]
        waiting = self.power_gate(choice, task, now)
        if waiting is not None:          # a deliberate wait for power (agents/energy/)
            return waiting
        self._fire(task, "start")
        task.started_at = now
        self.running = choice
        cmd = self.start_command(choice, task, now)
        dur = float(cmd.args.get("duration_s", task.finish_at - task.start_at))
        self.busy_until_at = now + dur
        shift = now - task.start_at
        task.start_at, task.finish_at = now, now + dur
        return [cmd, Log("started", {"agent": self.id, "task": choice, "order": task.order,
                                     "epoch": task.award_epoch, "duration_s": dur,
                                     "late_by_s": shift})]

    def finish(self, task_id: str, now: float, quality: str, location: str) -> list[Action]:
        task = self.tasks.get(task_id)
        if task is None or task.state != "running":
            self.ignored += 1
            return []
        settled = self._settled(task_id, "the machine reported its end", now)
        self._fire(task, "finish")
        self.running = None
        self.on_finished(task, now)
        report = Done(task_id, task.award_epoch, task.started_at, now, quality, location)
        if quality == "ok":
            self.completed[task_id] = report
        out: list[Action] = [
            Send(task.order, report, task.conv),
            Log("finished", {"agent": self.id, "task": task_id, "order": task.order,
                             "epoch": task.award_epoch, "started_at": task.started_at,
                             "quality": quality})]
        del self.tasks[task_id]
        return settled + out + self._try_start(now)

    def on_recover(self, now: float) -> list[Action]:
        """Back from a crash: ask the plant whether we are up and how the running task ended."""
        # a task held for a person (its outcome unknown, ADR 72) is not asked about: the
        # plant stopped following it, and its answer ("not running") would hand it back
        # while the person is still asked
        asked = "" if self.running in self._held() else self.running or ""
        return [Log("recovered", {"agent": self.id, "running": self.running or "",
                                  "tasks": len(self.tasks)}),
                Command("query_state", self.id, asked)]

    def on_plant_event(self, ev: PlantEventIn, now: float) -> list[Action]:
        if ev.event == "state":          # the answer to query_state
            up = bool((ev.data or {}).get("up", True))
            if up == self.up:
                return []
            ev = PlantEventIn("repaired" if up else "fault", ev.resource, "", ev.data)
        if ev.event == "command_refused":
            data = ev.data or {}
            done_at = data.get("done_at")
            if isinstance(done_at, str):
                return self._done_elsewhere(ev.task, done_at, now)
            if data.get("outcome_unknown") is True:
                return self._outcome_unknown(ev.task, str(data.get("why", "")), now)
            out = self._refused(ev.task, str(data.get("why", "")), bool(data.get("elsewhere")),
                                now)
            if data.get("escalate") is True:
                out += self._equipment_refuses(str(data.get("why", "")), now)
            return out
        if ev.event == "fault":
            if not self.up:
                return []
            data = ev.data or {}
            eta = data.get("repair_eta_s")
            return self._fault(now, str(data.get("reason", "breakdown")),
                               now + float(eta) if isinstance(eta, (int, float)) else 0.0)
        if ev.event == "repaired":
            if self.up or self.out_of_service_by:
                return []
            self.up = True
            return [Log("repaired", {"agent": self.id})] + self._try_start(now)
        return []

    def _fault(self, now: float, reason: str, repair_at: float = 0.0,
               counts: bool = True) -> list[Action]:
        """Stop bidding and hand every task back to its order (with the repair estimate)."""
        self.up = False
        self.repair_at = repair_at
        out: list[Action] = [Log("fault", {"agent": self.id, "reason": reason,
                                           "running": self.running or ""})]
        held = self._held()
        if self.running is not None and self.running not in held:
            out.append(Command("abort_operation", self.id, self.running))
        self.running = None
        for tid, t in sorted(self.tasks.items()):
            if tid in held:
                continue
            live = t.state in ("committed", "running")
            t.fire("fault")              # a hold is dropped too; a released task stays so
            if live:
                out.append(Send(t.order, Failure(tid, t.award_epoch, f"{self.id} {reason}",
                                                 repair_at=repair_at), t.conv))
                out.append(Log("handed_back", {"agent": self.id, "task": tid, "order": t.order}))
        # a task whose outcome a person is asked for stays held (ADR 72)
        self.tasks = {t: task for t, task in self.tasks.items() if t in held}
        self.running = next(iter(sorted(self.tasks)), None)
        return out + (self._check_repeat_faults(now) if counts else [])

    # -- escalation: the same resource faults repeatedly ------------------------------------
    def repeat_fault_threshold(self) -> int:
        """Faults within the window that make it non-routine: the rule's count, plus (with
        ``beyond_mtbf``) the faults our specified MTBF predicts in the window, rounded."""
        rule = self.policy.repeat_faults
        assert rule is not None
        allowance = 0
        if rule.beyond_mtbf and self.mtbf_s:
            allowance = math.floor(rule.threshold_s / self.mtbf_s + 0.5)
        return rule.count + allowance

    def _check_repeat_faults(self, now: float) -> list[Action]:
        rule = self.policy.repeat_faults
        if rule is None:
            return []
        self.fault_times = [t for t in self.fault_times if t > now - rule.threshold_s] + [now]
        if len(self.fault_times) < self.repeat_fault_threshold() or self.open_escalation:
            return []
        esc = self.raiser.next_id()
        n = len(self.fault_times)
        back = f" (expected at {self.repair_at:.0f} s)" if self.repair_at > now else ""
        body = Escalate(
            escalation=esc, priority=rule.priority, cause="repeat_faults",
            consequence=f"{self.id} faulted {n} times within {rule.threshold_s:.0f} s; "
                        "its work keeps being re-routed",
            resource=self.id,
            options=[{"id": "keep_in_service", "label": "Keep in service",
                      "effect": f"{self.id} bids again once repaired{back}"},
                     {"id": "take_out_of_service", "label": "Take out of service",
                      "effect": f"{self.id} stays down; its work goes to other resources "
                                "or waits"}],
            safe_default="keep_in_service",
            context={"faults": n, "window_s": rule.threshold_s, "detected_at": now,
                     "threshold": self.repeat_fault_threshold(), "mtbf_s": self.mtbf_s,
                     "fault_times": list(self.fault_times), "repair_at": self.repair_at})
        return self.raiser.raise_(body, None, now) + [
            Log("escalate", {"agent": self.id, "escalation": esc, "cause": "repeat_faults",
                             "resource": self.id})]

    def _equipment_refuses(self, why: str, now: float) -> list[Action]:
        """Real equipment keeps refusing our starts (the gateway counted them and holds the
        machine down): a supervisor must look at the machine (its mode, its user rights)."""
        rule = self.policy.equipment_refuses
        if rule is None or self.open_escalation:
            return []
        esc = self.raiser.next_id()
        body = Escalate(
            escalation=esc, priority=rule.priority, cause="equipment_refuses",
            consequence=f"{self.id} refuses every start ({why}); the gateway holds it down "
                        "and its work goes to other resources",
            resource=self.id,
            options=[{"id": "keep_in_service", "label": "Keep in service",
                      "effect": f"{self.id} bids again once the machine accepts starts "
                                "(after `set_state up` or a new session)"},
                     {"id": "take_out_of_service", "label": "Take out of service",
                      "effect": f"{self.id} stays down; its work goes to other resources "
                                "or waits"}],
            safe_default="keep_in_service",
            context={"why": why, "detected_at": now})
        return self.raiser.raise_(body, None, now) + [
            Log("escalate", {"agent": self.id, "escalation": esc, "cause": "equipment_refuses",
                             "resource": self.id})]

    def _outcome_unknown(self, task_id: str, why: str, now: float) -> list[Action]:
        """The plant lost track of a running task: the machine (restarted) no longer
        knows whether it ran to its end.  Handed back, the order would have the work done
        again — twice if it was done; counted done, a part could move on without it.  The
        task stays ours, held (its lease renewed, the machine kept for it), and a person
        decides: ``done`` (the part was checked) or ``redo``; the safe default, when nobody
        answers, is ``redo``, decided and audited, never silent (ADR 72).  Without the
        ``equipment_refuses`` rule (no console, or the rule off) it is handed back at once,
        logged as such."""
        task = self.tasks.get(task_id)
        if task is None or task.state != "running":
            self.ignored += 1
            return []
        rule = self.policy.equipment_refuses
        if rule is None:
            return [Log("outcome_unknown", {"agent": self.id, "task": task_id, "why": why,
                                            "then": "redo (no console)"}),
                    *self._refused(task_id, f"outcome unknown: {why}", False, now)]
        esc = self.raiser.next_id()
        self.unknown[esc] = task_id
        body = Escalate(
            escalation=esc, priority=rule.priority, cause="job_outcome_unknown",
            consequence=f"{self.id} no longer knows whether {task_id} of {task.order} ran to "
                        f"its end ({why}); the task waits for you",
            resource=self.id, order=task.order,
            options=[{"id": "done", "label": "It was done",
                      "effect": f"{task_id} counts as done on {self.id} (the part was "
                                "checked); its order moves on"},
                     {"id": "redo", "label": "Do it again",
                      "effect": f"{task_id} is handed back; its order has it done again, "
                                "here or elsewhere"}],
            safe_default="redo",
            context={"why": why, "task": task_id, "detected_at": now})
        return self.raiser.raise_(body, None, now) + [
            Log("escalate", {"agent": self.id, "escalation": esc, "cause": "job_outcome_unknown",
                             "resource": self.id, "task": task_id})]

    def _held(self) -> set[str]:
        """Tasks held for a person's decision (outcome unknown) and still running here."""
        return {tid for tid in self.unknown.values()
                if (t := self.tasks.get(tid)) is not None and t.state == "running"}

    def _settled(self, task_id: str, why: str, now: float) -> list[Action]:
        """A held task left by another way (its end reported after all, a refusal, a
        cancel): its question is withdrawn, so a late answer acts on nothing (ADR 72)."""
        esc = next((e for e, t in self.unknown.items() if t == task_id), None)
        if esc is None:
            return []
        del self.unknown[esc]
        return self._rearm(self.raiser.clear(esc, why), now)

    def _rearm(self, out: list[Action], now: float) -> list[Action]:
        """The re-send timer is one for all open escalations: closing one cancels it, so
        it is armed again while another is still open."""
        if not self.raiser.open:
            return out
        kept: list[Action] = [a for a in out if not isinstance(a, CancelTimer)]
        return kept + [SetTimer(self.raiser.timer(""), now + self.raiser.resend_s)]

    def _on_decision(self, body: Decision, now: float) -> list[Action]:
        raised, out = self.raiser.decided(body.escalation)
        if raised is None:               # none open, or another one (already decided)
            self.ignored += 1
            return []
        out = self._rearm(out, now)
        task_id = self.unknown.pop(body.escalation, None)
        if task_id is not None:
            out.append(Log("decision_applied", {"agent": self.id, "escalation": body.escalation,
                                                "option": body.option, "user": body.user,
                                                "task": task_id}))
            if body.option == "done":
                return out + self.finish(task_id, now, "ok", self.location)
            return out + self._refused(task_id, "outcome unknown: done again", False, now)
        self.fault_times = []
        out.append(Log("decision_applied", {"agent": self.id, "escalation": body.escalation,
                                            "option": body.option, "user": body.user}))
        if body.option == "take_out_of_service":
            self.out_of_service_by = body.user
            if self.up:
                out += self._fault(now, "taken out of service", counts=False)
            self.repair_at = 0.0
        return out

    def _done_elsewhere(self, task_id: str, location: str, now: float) -> list[Action]:
        """The plant says the task is already done (by a stale winner whose report was
        lost or withheld): report it done under our award, so the order moves on."""
        task = self.tasks.get(task_id)
        if task is None or task.state != "running":
            return []
        settled = self._settled(task_id, f"done at {location}", now)
        self._fire(task, "finish")
        self.running = None
        del self.tasks[task_id]
        report = Done(task_id, task.award_epoch, task.started_at, now, "ok", location)
        return settled + [Send(task.order, report, task.conv),
                Log("done_elsewhere", {"agent": self.id, "task": task_id, "order": task.order,
                                       "epoch": task.award_epoch}), *self._try_start(now)]

    def _refused(self, task_id: str, why: str, elsewhere: bool, now: float) -> list[Action]:
        """The plant would not run the task: hand it back so the order decides.

        When the task is done or running elsewhere, a stale winner holds it: the
        order should wait for its report rather than call again at once."""
        task = self.tasks.get(task_id)
        if task is None or task.state != "running":
            return []
        settled = self._settled(task_id, f"handed back: {why}", now)
        self.running = None
        self._fire(task, "fault")
        del self.tasks[task_id]
        retry_at = now + self.timing.lease_window_s if elsewhere else 0.0
        return settled + [Send(task.order, Failure(task_id, task.award_epoch, f"plant refused: {why}",
                                         retry_at=retry_at), task.conv),
                Log("plant_refused_task", {"agent": self.id, "task": task_id, "why": why}),
                *self._try_start(now)]

    # -- helpers ------------------------------------------------------------------------------
    def _fire(self, task: Task, event: ParticipantEvent) -> bool:
        """Take ``event`` through the table; count it when the table ignores it here."""
        if task.fire(event):
            return True
        self.ignored += 1
        return False

    def _transition(self, task: Task, event: ParticipantEvent, task_id: str,
                    now: float) -> list[Action]:
        if self._fire(task, event) and task.state == "released":
            del self.tasks[task_id]
            return [CancelTimer(f"hold:{task_id}")]
        return []
