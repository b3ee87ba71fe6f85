"""The order agent's exception handling: escalations, decisions, cancelling the order.

Theory of operation
-------------------
Routine trouble — a failure, a scrapped part, nobody bidding — is handled
in the contract net: the operation is called again (agents/order/agent.py).
Three cases are non-routine under the cell's escalation policy
(docs/escalation.md) and go to a supervisor instead, while the task waits in
a safe state with no lease:

* **no capable resource** — every capable machine is down (or silent) and the
  expected wait exceeds ``max_wait_s``; options: wait for repair, split the
  order, cancel;
* **late re-route** — after a failure the best alternative makes the order
  late by more than ``late_by_s``; options: re-route, wait for repair, split,
  cancel;
* **quality reject** — the same operation failed its quality check ``count``
  times; options: redo, cancel.

Each is raised through an :class:`~agents.escalation.raiser.EscalationRaiser`
(re-sent every ``retry_s`` until decided, timer ``escalation:ID``).  A
decision resumes the task (or splits the lot, or cancels the whole order); a
no-resource case that clears by itself (a machine bids again) returns to
normal.  What each task remembers for this is its :class:`Trouble` record.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agents.escalation.policy import EscalationPolicy, Rule
from agents.escalation.raiser import EscalationRaiser
from agents.order.lots import (
    Lot,
    SplitPlan,
    split_now_and_after_repair,
    split_off,
    split_when_back,
    splittable,
)
from agents.order.negotiation import Negotiation
from agents.protocol.actions import Action, CancelTimer, Log, Send, SetTimer
from agents.protocol.messages import (
    Cancel,
    Decision,
    Escalate,
    Heartbeat,
    Message,
    Proposal,
    Rejection,
)

if TYPE_CHECKING:
    from agents.base import Timing


class OrderExceptions:
    """The exception-handling half of :class:`agents.order.OrderAgent` (a mixin: it works on
    the agent's lots and calls its contract net)."""

    if TYPE_CHECKING:
        id: str
        timing: Timing
        policy: EscalationPolicy
        raiser: EscalationRaiser[tuple[str, str]]
        split_offers: dict[str, SplitPlan]
        lots: dict[str, Lot]
        unit_work_s: list[float]
        due_at: float
        cancelled_by: str
        ignored: int

        def _call(self, neg: Negotiation, now: float) -> list[Action]: ...
        def _conv(self, neg: Negotiation) -> str: ...
        def _find(self, task: str) -> Negotiation | None: ...

    # -- open escalations, as the drivers read them ----------------------------------------
    @property
    def escalations(self) -> dict[str, tuple[str, str]]:
        """Open escalations: id -> (cause, task)."""
        return {esc: raised.about for esc, raised in self.raiser.open.items()}

    @property
    def escalated(self) -> int:
        return self.raiser.raised

    # -- detection ---------------------------------------------------------------------------
    def _check_no_resource(self, neg: Negotiation, now: float) -> list[Action]:
        """No proposal: escalate when every capable resource is down (or silent) and the
        expected wait — already waited plus the earliest repair estimate — exceeds the
        policy's ``max_wait_s`` (or, with no estimate, the wait so far does)."""
        rule, trouble = self.policy.no_capable_resource, neg.trouble
        if rule is None or neg.kind != "operation" or trouble.escalation \
                or now < trouble.wait_accepted_until:
            return []
        if any(reason != "down" for _, reason, _ in neg.refusals):
            trouble.blocked_since = None     # someone live declined: routine, call again
            return []
        if trouble.blocked_since is None:
            trouble.blocked_since = now - self.timing.reply_deadline_s   # when we called
        waited = now - trouble.blocked_since
        known = [r for _, _, r in neg.refusals if r > 0]
        eta = min(known) if known else None
        expected = waited + (max(0.0, eta - now) if eta is not None else 0.0)
        if expected <= rule.threshold_s:
            return []
        down = sorted({s for s, _, _ in neg.refusals})
        back = (f"the first of {', '.join(down)} is expected back at {eta:.0f} s "
                f"(in {eta - now:.0f} s)" if eta is not None and eta > now
                else "no repair estimate")
        resource = neg.recipients[0] if len(neg.recipients) == 1 else neg.capability
        options = [("wait_for_repair", "Wait for repair", f"keep calling; {back}")]
        split = split_when_back(self.lots, neg, self.unit_work_s, now)
        if split is not None:
            options.append(split.option(self.due_at))
        options.append(("cancel", "Cancel the order", f"order {self.id} is not made"))
        return self._escalate(
            neg, "no_capable_resource", rule, now, resource=resource,
            consequence=f"order {self.id} cannot continue: no live machine can do {neg.op} "
                        f"({neg.capability}); due at {self.due_at:.0f} s",
            options=options, safe_default="wait_for_repair", split=split,
            context={"capability": neg.capability, "capable": list(neg.recipients),
                     "down": down, "repair_at": eta or 0.0, "waited_s": round(waited, 6)})

    def _check_late(self, neg: Negotiation, winner: str, proposal: Proposal,
                    now: float) -> list[Action]:
        """After a failure, a re-route that makes the order late by more than ``late_by_s``
        is not taken alone: every proposal is rejected and a supervisor asked."""
        rule, trouble = self.policy.late_reroute, neg.trouble
        if (rule is None or neg.kind != "operation" or not trouble.failed_on or trouble.late_ok
                or trouble.escalation or winner == trouble.failed_on):   # back where it was
            return []
        lot = self.lots[neg.lot]
        finish_at = proposal.finish_at + sum(lot.work_s[neg.op_index + 1:])
        late_by = finish_at - self.due_at
        if late_by <= rule.threshold_s:
            return []
        neg.fire("deadline_none")
        conv = self._conv(neg)
        out: list[Action] = [Send(s, Rejection(neg.task), conv) for s, _ in neg.proposals]
        options = [("reroute", f"Re-route to {winner}",
                    f"order finishes about {finish_at:.0f} s, {late_by:.0f} s late")]
        if trouble.failed_repair_at > now:
            wait_finish = trouble.failed_repair_at + neg.duration_s + sum(
                lot.work_s[neg.op_index + 1:])
            options.append(("wait_for_repair", f"Wait for {trouble.failed_on}",
                            (f"back at {trouble.failed_repair_at:.0f} s; order finishes about "
                            f"{wait_finish:.0f} s, {wait_finish - self.due_at:.0f} s late")))
        split = split_now_and_after_repair(self.lots, neg, self.unit_work_s, winner, proposal,
                                           finish_at, now)
        if split is not None:
            options.append(split.option(self.due_at))
        options.append(("cancel", "Cancel the order", f"order {self.id} is not made"))
        return out + self._escalate(
            neg, "late_reroute", rule, now, resource=trouble.failed_on,
            consequence=f"re-routing {neg.op} of order {self.id} after {trouble.failed_on} "
                        f"failed makes it {late_by:.0f} s late (due {self.due_at:.0f} s)",
            options=options, safe_default="reroute", split=split,
            context={"best": winner, "finish_at": round(finish_at, 6),
                     "late_by_s": round(late_by, 6), "repair_at": trouble.failed_repair_at})

    def _check_scrap(self, neg: Negotiation, now: float) -> list[Action]:
        """A scrapped part: escalate once the operation failed ``count`` quality checks."""
        rule = self.policy.quality_reject
        if rule is None or neg.trouble.scrapped < max(1, rule.count):
            return []
        return self._escalate(
            neg, "quality_reject", rule, now, resource=neg.winner,
            consequence=f"{neg.op} of order {self.id} failed its quality check "
                        f"{neg.trouble.scrapped} times, last on {neg.winner}; the order waits",
            options=[("retry", f"Redo {neg.op}", ("call for proposals again; the order "
                      "continues")),
                     ("cancel", "Cancel the order", f"order {self.id} is not made")],
            safe_default="retry",
            context={"machine": neg.winner, "failures": neg.trouble.scrapped})

    # -- raising and clearing -------------------------------------------------------------------
    def _escalate(self, neg: Negotiation, cause: str, rule: Rule, now: float, *,
                  resource: str, consequence: str, options: list[tuple[str, str, str]],
                  safe_default: str, context: dict, split: SplitPlan | None = None
                  ) -> list[Action]:
        """Raise an escalation about ``neg``; the task waits in a safe state (no lease)."""
        esc_id = self.raiser.next_id()
        neg.trouble.escalation = esc_id
        if split is not None:
            self.split_offers[esc_id] = split
            context = {**context, "split": split.to_context(self.due_at)}
        body = Escalate(
            escalation=esc_id, priority=rule.priority, cause=cause, consequence=consequence,
            order=self.id, resource=resource,
            options=[{"id": i, "label": label, "effect": effect} for i, label, effect in options],
            safe_default=safe_default,
            context={"task": neg.task, "op": neg.op, "due_at": self.due_at, "detected_at": now,
                     "attempt": neg.attempt, **context})
        return self.raiser.raise_(body, (cause, neg.task), now) + [
            Log("escalate", {"order": self.id, "escalation": esc_id, "cause": cause,
                             "task": neg.task, "resource": resource})]

    def _back_to_normal(self, neg: Negotiation, reason: str) -> list[Action]:
        """A no-resource escalation whose condition cleared by itself (a machine is back)."""
        neg.trouble.blocked_since = None
        esc = neg.trouble.escalation
        if not esc or self.escalations.get(esc, ("", ""))[0] != "no_capable_resource":
            return []
        neg.trouble.escalation = ""
        self.split_offers.pop(esc, None)
        return self.raiser.clear(esc, reason) + [
            Log("escalation_cleared", {"order": self.id, "escalation": esc})]

    # -- decisions --------------------------------------------------------------------------------
    def _on_decision(self, body: Decision, now: float) -> list[Action]:
        raised, out = self.raiser.decided(body.escalation)
        if raised is None:               # unknown, already decided, or cleared meanwhile
            self.ignored += 1
            return []
        cause, task = raised.about
        neg = self._find(task)
        split = self.split_offers.pop(body.escalation, None)
        out.append(Log("decision_applied", {
            "order": self.id, "escalation": body.escalation, "option": body.option,
            "user": body.user}))
        if neg is not None and neg.trouble.escalation == body.escalation:
            neg.trouble.escalation = ""
        if body.option == "cancel":
            return out + self._cancel(body)
        if neg is None or self.cancelled_by:
            return out
        if body.option == "split":
            if split is not None and splittable(self.lots, neg):
                return out + self._split(neg, cause, split, body, now)
            # offered, but no longer possible (or never offered): the other choice stands
            out.append(Log("split_refused", {"order": self.id, "escalation": body.escalation,
                                             "task": neg.task}))
        trouble = neg.trouble
        if cause == "no_capable_resource":
            # keep waiting: ask again only if the repair is max_wait_s overdue
            known = [r for _, _, r in neg.refusals if r > 0]
            trouble.wait_accepted_until = max([now, *known]) + self._max_wait_s()
            trouble.late_ok = True           # the lateness of waiting is accepted with it
            return out
        if cause == "late_reroute":
            trouble.late_ok = True
            if body.option == "wait_for_repair" and trouble.failed_repair_at > now:
                return out + [SetTimer(f"retry:{neg.task}", trouble.failed_repair_at)]
        if neg.state == "waiting":       # reroute, retry, or a wait whose repair is past
            return out + self._call(neg, now)
        return out

    def _max_wait_s(self) -> float:
        rule = self.policy.no_capable_resource
        return rule.threshold_s if rule is not None else 0.0

    def _split(self, neg: Negotiation, cause: str, plan: SplitPlan, body: Decision,
               now: float) -> list[Action]:
        """Apply a split: the order's lot keeps ``plan.first`` units and its task ids and goes
        on at once (calls now, or keeps calling until a machine is back); a new lot ``b``
        with ``plan.second`` units calls for the same operation when the second branch's
        resource is expected back.  Both then go through the rest of the routing alone; the
        order completes when both are at the output."""
        main, k = self.lots[neg.lot], neg.op_index
        b = split_off(main, neg, plan, self.id, self.unit_work_s)
        self.lots["b"] = b
        first_b = b.ops[k]
        for n in (neg, first_b):
            n.trouble.late_ok = True     # the lateness predicted is accepted with the split
            if cause == "no_capable_resource":
                n.trouble.wait_accepted_until = plan.second_start_at + self._max_wait_s()
        out: list[Action] = [
            Log("lot_split", {"order": self.id, "escalation": body.escalation,
                              "user": body.user, "task": neg.task, "op_index": k,
                              "lots": {main.prefix: main.quantity, b.prefix: b.quantity},
                              "predicted_finish_at": round(plan.finish_at, 6)}),
            SetTimer(f"retry:{first_b.task}", max(now, plan.second_start_at))]
        if cause != "no_capable_resource" and neg.state == "waiting":
            out += self._call(neg, now)  # the first branch goes ahead now
        return out

    # -- cancelling the order ---------------------------------------------------------------------
    def _cancel(self, body: Decision) -> list[Action]:
        """A supervisor cancelled the order: withdraw every award, clear other escalations."""
        self.cancelled_by = body.user
        out: list[Action] = []
        for neg in [n for lot in self.lots.values()
                    for n in [*lot.ops, *([lot.move] if lot.move is not None else [])]]:
            out += [CancelTimer(f"deadline:{neg.task}"), CancelTimer(f"retry:{neg.task}"),
                    CancelTimer(f"lease:{neg.task}")]
            if neg.state in ("awarded", "leased") and neg.winner:
                out.append(Send(neg.winner, Cancel(neg.task, neg.epoch, "order cancelled"),
                                self._conv(neg)))
        out += self.raiser.withdraw_all("order cancelled")
        self.split_offers.clear()
        return out + [Log("order_cancelled", {"order": self.id, "escalation": body.escalation,
                                              "user": body.user, "reason": body.reason})]

    def _after_cancel(self, msg: Message) -> list[Action]:
        """A cancelled order withdraws any lease a resource still reports."""
        if not isinstance(msg.body, Heartbeat):
            self.ignored += 1
            return []
        out: list[Action] = []
        for entry in msg.body.leases:
            if isinstance(entry, list) and len(entry) in (2, 3):
                neg = self._find(str(entry[0]))
                if neg is not None and neg.state != "done" and isinstance(entry[1], int):
                    out.append(Send(msg.sender, Cancel(neg.task, entry[1], "order cancelled"),
                                    self._conv(neg)))
        return out
