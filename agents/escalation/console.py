"""The console agent: the escalation store's keeper on the bus (role ``console``, id ``console``).

Theory of operation
-------------------
Agents that meet a non-routine case send a signed ``escalate`` here; the
console agent turns it into a :class:`~agents.escalation.lifecycle.Record`
(grouped with related open ones, flood flag updated), stores it with an
audit entry, and arms one timer per open escalation for its next life-cycle
deadline (re-escalation, auto-unshelve, final deadline).  An
``escalation_update`` (``return_to_normal``) from the raiser clears the
condition.  People act through :meth:`acknowledge`, :meth:`shelve` and
:meth:`decide` (the web console, or the CLI twin writing the same store,
whose queued decisions the agent picks up on its ``poll`` timer).  A
decision — a person's, or the safe default at the final deadline — goes to
the raiser as a signed ``decision`` naming the user.

Sans-io like every agent: it never reads a clock; the store is injected (an
in-memory SQLite database in virtual time, a file under the state dir in a
deployed cell).  In virtual time nobody decides, so the deadlines expire
and the safe defaults apply, deterministically.
"""

from __future__ import annotations

from typing import Any

from agents.base import Agent, Timing
from agents.protocol.actions import Action, CancelTimer, Log, Send, SetTimer
from agents.protocol.messages import Decision, Escalate, EscalationUpdate, Message

from . import lifecycle as lc
from .lifecycle import Deadlines, FloodWindow, Option, Record
from .store import EscalationStore

CONSOLE_ID = "console"


class ConsoleAgent(Agent):
    role = "console"

    def __init__(self, agent_id: str = CONSOLE_ID, *, timing: Timing, store: EscalationStore,
                 flood_count: int = 10, flood_window_s: float = 600.0, poll_s: float = 0.0,
                 **kw: Any) -> None:
        super().__init__(agent_id, timing=timing, **kw)
        self.store = store
        self.deadlines: Deadlines = store.deadlines
        self.flood = FloodWindow(flood_count, flood_window_s)
        self.poll_s = poll_s
        self.ignored = 0

    # -- inputs -----------------------------------------------------------------------------------
    def on_start(self, now: float) -> list[Action]:
        out: list[Action] = [SetTimer("poll", now + self.poll_s)] if self.poll_s > 0 else []
        for rec in self.store.list(open_only=True):       # back from a restart: re-arm
            out += self._arm(rec)
        return out

    def on_recover(self, now: float) -> list[Action]:
        return self.on_start(now)

    def on_message(self, msg: Message, now: float) -> list[Action]:
        body = msg.body
        if isinstance(body, Escalate):
            return self._on_escalate(msg.sender, body, now)
        if isinstance(body, EscalationUpdate):
            return self._on_update(msg.sender, body, now)
        self.ignored += 1
        return []

    def on_timer(self, key: str, now: float) -> list[Action]:
        if key == "poll":
            return self._poll(now) + [SetTimer("poll", now + self.poll_s)]
        kind, _, esc_id = key.partition(":")
        if kind != "esc" or not self.store.has(esc_id):
            return []
        rec, event = lc.on_timer(self.store.get(esc_id), now, self.deadlines)
        if event is None:
            return self._arm(rec)
        self.store.put(rec, actor=self.id, action=event, now=now,
                       details={"priority": rec.priority, "state": rec.state,
                                **({"safe_default": rec.decision}
                                   if rec.outcome == "safe_default" else {})})
        out: list[Action] = [Log(f"escalation_{event}", {
            "escalation": rec.id, "priority": rec.priority, "state": rec.state})]
        if event == "final_deadline" and rec.outcome == "safe_default":
            out += self._tell(rec.raised_by, Decision(rec.id, rec.decision, rec.decided_by,
                                                      rec.decision_reason))
            out.append(self._resolved_log(rec))
        return out + self._arm(rec)

    # -- what agents send ---------------------------------------------------------------------------
    def _on_escalate(self, sender: str, body: Escalate, now: float) -> list[Action]:
        if self.store.has(body.escalation):
            # sent again: the raiser has not seen a decision — repeat the one taken, if any
            rec = self.store.get(body.escalation)
            if rec.open or not rec.decision or rec.raised_by != sender:
                self.ignored += 1
                return []
            return self._tell(sender, Decision(rec.id, rec.decision, rec.decided_by,
                                               rec.decision_reason))
        options = [Option(str(o.get("id", "")), str(o.get("label", "")), str(o.get("effect", "")))
                   for o in body.options if isinstance(o, dict)]
        try:
            rec = lc.new_record(
                id=body.escalation, priority=body.priority, cause=body.cause,
                consequence=body.consequence, raised_by=sender, now=now, options=options,
                safe_default=body.safe_default, deadlines=self.deadlines, order=body.order,
                resource=body.resource, context=dict(body.context), deadline_at=body.deadline_at)
        except lc.EscalationError as exc:
            self.ignored += 1
            return [Log("escalation_refused", {"escalation": body.escalation, "sender": sender,
                                               "why": str(exc)})]
        grouped = bool(self.store.groups().get(rec.group))
        flooded = self.flood.arrive(now)
        if flooded != self.store.flood():
            self.store.set_flood(flooded)
        self.store.put(rec, actor=f"agent:{sender}", action="raise", now=now,
                       details={"cause": rec.cause, "priority": rec.priority,
                                "order": rec.order, "resource": rec.resource,
                                "safe_default": rec.safe_default, "grouped": grouped})
        return [Log("escalation_raised", {"escalation": rec.id, "cause": rec.cause,
                                          "priority": rec.priority, "order": rec.order,
                                          "resource": rec.resource, "group": rec.group,
                                          "grouped": grouped, "flood": flooded})] + self._arm(rec)

    def _on_update(self, sender: str, body: EscalationUpdate, now: float) -> list[Action]:
        if body.event != "return_to_normal" or not self.store.has(body.escalation):
            self.ignored += 1
            return []
        rec = self.store.get(body.escalation)
        if rec.raised_by != sender or (rec.state, "return_to_normal") not in lc.TRANSITIONS:
            self.ignored += 1
            return []
        rec = lc.return_to_normal(rec, now)
        self.store.put(rec, actor=f"agent:{sender}", action="return_to_normal", now=now,
                       details={"reason": body.reason, "state": rec.state})
        out: list[Action] = [Log("escalation_return_to_normal", {
            "escalation": rec.id, "state": rec.state})]
        if not rec.open:
            out.append(self._resolved_log(rec))
        return out + self._arm(rec)

    # -- what people do ---------------------------------------------------------------------------
    def acknowledge(self, esc_id: str, user: str, now: float) -> list[Action]:
        rec = self.store.acknowledge(esc_id, user, now)
        out: list[Action] = [Log("escalation_acknowledged", {"escalation": esc_id, "user": user})]
        if not rec.open:
            out.append(self._resolved_log(rec))
        return out + self._arm(rec)

    def shelve(self, esc_id: str, user: str, reason: str, duration_s: float,
               now: float) -> list[Action]:
        rec = self.store.shelve(esc_id, user, reason, duration_s, now)
        return [Log("escalation_shelved", {"escalation": esc_id, "user": user,
                                           "until": rec.shelved_until_at})] + self._arm(rec)

    def decide(self, esc_id: str, user: str, option: str, reason: str,
               now: float) -> list[Action]:
        self.store.decide(esc_id, user, option, reason, now)
        return self._poll(now)

    def _poll(self, now: float) -> list[Action]:
        """Send the decisions people queued (here or through the CLI twin); re-arm timers of
        records they changed."""
        self.store.set_cell_now(now)
        out: list[Action] = []
        for seq, esc_id, to, option, user, reason in self.store.pending_decisions():
            self.store.mark_sent(seq)
            out += self._tell(to, Decision(esc_id, option, user, reason))
            rec = self.store.get(esc_id)
            out.append(self._resolved_log(rec))
            out += self._arm(rec)
        if self.poll_s > 0:
            for rec in self.store.list(open_only=True):
                out += self._arm(rec)
        return out

    def sync(self, now: float) -> list[Action]:
        """People changed the store from another process (the web console, the CLI twin):
        send the decisions they queued and re-arm the timer of every open escalation
        (an acknowledged or shelved one may now fall due at another time).  The driver of a
        paced run calls this only when the store changed, so a run nobody touches keeps its
        event log."""
        out = self._poll(now)
        if self.poll_s <= 0:          # _poll re-arms them all itself when polling
            for rec in self.store.list(open_only=True):
                out += self._arm(rec)
        return out

    def raise_local(self, raised_by: str, body: Escalate, now: float) -> list[Action]:
        """An escalation from the driver itself (``host:NAME``: a supervisor that gave up
        restarting, a burst of rejected messages), not from an agent on the bus."""
        return self._on_escalate(raised_by, body, now)

    # -- helpers ------------------------------------------------------------------------------------
    @staticmethod
    def _tell(to: str, decision: Decision) -> list[Action]:
        """A decision goes back to the raiser; a driver-raised case (``host:``) has no agent
        to act on it: the record and the audit entry are the outcome."""
        return [] if to.startswith("host:") else [Send(to, decision, decision.escalation)]

    def _arm(self, rec: Record) -> list[Action]:
        at = lc.next_due_at(rec)
        key = f"esc:{rec.id}"
        return [CancelTimer(key)] if at is None else [SetTimer(key, at)]

    @staticmethod
    def _resolved_log(rec: Record) -> Log:
        return Log("escalation_resolved", {"escalation": rec.id, "order": rec.order,
                                           "cause": rec.cause, "outcome": rec.outcome,
                                           "decision": rec.decision, "user": rec.decided_by})
