"""The order agent as the contract net's initiator: call, collect, award, watch the lease.

Theory of operation
-------------------
Each task is a :class:`~agents.order.negotiation.Negotiation`, whose state moves only
through the initiator table.  :meth:`_call` sends the call for proposals and sets the
reply deadline; bids collect until :meth:`_deadline`, which awards the strategy's
choice under a new **award epoch** (or waits, or asks a supervisor: see
agents/order/exceptions.py).  Only the current winner under the current epoch is
heard (:meth:`_on_reply`); heartbeats renew its lease, and a lease that lapses is
cancelled and the task called again.  A ``done`` moves the lot on
(agents/order/agent.py); a ``failure`` or a scrapped part calls the operation again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agents.negotiation.contract_net import IGNORED, InitiatorEvent
from agents.negotiation.strategies import choose_of
from agents.order.lots import Lot
from agents.order.negotiation import Negotiation
from agents.protocol.actions import Action, CancelTimer, Log, Send, SetTimer
from agents.protocol.messages import (
    Award,
    CallForProposals,
    Cancel,
    Confirmation,
    Done,
    Failure,
    Heartbeat,
    Message,
    Proposal,
    Ready,
    Refusal,
    Rejection,
)

if TYPE_CHECKING:
    from agents.base import Timing
    from agents.escalation.policy import EscalationPolicy
    from agents.negotiation.strategies import OrderStrategy
    from agents.rehearsal import Plan


class OrderInitiator:
    """The contract-net half of :class:`agents.order.OrderAgent` (a mixin over its lots)."""

    if TYPE_CHECKING:
        id: str
        timing: Timing
        strategy: OrderStrategy
        policy: EscalationPolicy
        release_at: float
        due_at: float
        priority: int
        plan: Plan | None
        plan_origin_at: float
        plan_float: bool
        machine_location: dict[str, str]
        lots: dict[str, Lot]
        ignored: int

        def _advance(self, now: float) -> list[Action]: ...
        def _find(self, task: str) -> Negotiation | None: ...
        def _check_late(self, neg: Negotiation, winner: str, proposal: Proposal,
                        now: float) -> list[Action]: ...
        def _check_no_resource(self, neg: Negotiation, now: float) -> list[Action]: ...
        def _check_scrap(self, neg: Negotiation, now: float) -> list[Action]: ...
        def _back_to_normal(self, neg: Negotiation, reason: str) -> list[Action]: ...

    def _lot(self, neg: Negotiation) -> Lot:
        return self.lots[neg.lot]

    # -- replies --------------------------------------------------------------------------------
    def _on_reply(self, msg: Message, neg: Negotiation, now: float) -> list[Action]:
        """A participant's message about ``neg`` (a task already called)."""
        body = msg.body
        current = (msg.sender == neg.winner and getattr(body, "award_epoch", None) == neg.epoch
                   and neg.state in ("awarded", "leased"))
        if isinstance(body, Done) and not current and neg.state != "done" \
                and (msg.sender, body.award_epoch) in neg.past_awards:
            # A finished task reported late (its inform_done was lost and the lease
            # expired): the work is done; take it, whatever round we are in now.
            return self._late_done(neg, body, now)
        if isinstance(body, (Proposal, Refusal)):
            return self._on_bid(msg, neg, body, now)
        if getattr(body, "award_epoch", None) != neg.epoch or msg.sender != neg.winner:
            self.ignored += 1                # a stale winner or an old epoch: fenced
            return []
        if isinstance(body, Confirmation):
            return self._confirmed(neg, body, now)
        if isinstance(body, Done):
            return self._done(neg, body, now)
        if isinstance(body, Failure):
            return self._failed(neg, body, now)
        self.ignored += 1
        return []

    def _on_bid(self, msg: Message, neg: Negotiation, body: Proposal | Refusal,
                now: float) -> list[Action]:
        event: InitiatorEvent = "propose" if isinstance(body, Proposal) else "refuse"
        if not neg.fire(event) or msg.conv != self._conv(neg):
            self.ignored += 1            # late (after the deadline) or an old round
            return []
        if isinstance(body, Proposal) and body.kind == neg.kind:
            neg.proposals.append((msg.sender, body))
            if neg.planned:   # the plan's one machine answered: nobody else to wait for
                return [CancelTimer(f"deadline:{neg.task}")] + self._deadline(neg, now)
        elif isinstance(body, Refusal):
            neg.refusals.append((msg.sender, body.reason, body.repair_at))
        return []   # the award waits for the deadline, whoever answered

    def _on_heartbeat(self, sender: str, body: Heartbeat, now: float) -> list[Action]:
        """Renew leases; a heartbeat listing the lease also stands for a lost ``confirm``,
        and a lease whose parts were readied gets ``ready`` again (it may have been lost)."""
        out: list[Action] = []
        for entry in body.leases:
            if not (isinstance(entry, list) and len(entry) in (2, 3)):
                continue
            neg = self._find(str(entry[0]))
            if neg is None:
                continue
            if (neg.winner != sender or neg.epoch != entry[1]
                    or neg.state not in ("awarded", "leased")):
                if ((sender, entry[1]) in neg.past_awards and neg.state != "done"
                        and len(entry) == 3 and entry[2] is False):
                    # a stale winner still holds a lease we withdrew (our cancel was
                    # lost while it was away) and has not started it: withdraw it again.
                    # One already running is left to finish: its late report counts.
                    out.append(Send(sender, Cancel(neg.task, int(entry[1]), "stale lease"),
                                    self._conv(neg)))
                continue
            out.append(SetTimer(f"lease:{neg.task}", self._lease_until(now)))
            if neg.state == "awarded":
                neg.fire("confirm")
                out += self._advance(now)
            elif (neg.readied_epoch == neg.epoch and neg.kind == "operation"
                  and len(entry) == 3 and entry[2] is False):
                out.append(Send(sender, Ready(neg.task, neg.epoch), self._conv(neg)))
        return out

    def _late_done(self, neg: Negotiation, body: Done, now: float) -> list[Action]:
        out: list[Action] = [CancelTimer(f"deadline:{neg.task}"), CancelTimer(f"retry:{neg.task}"),
                             CancelTimer(f"lease:{neg.task}")]
        if neg.winner and neg.state in ("awarded", "leased"):
            out.append(Send(neg.winner, Cancel(neg.task, neg.epoch, "already done"),
                            self._conv(neg)))
        out.append(Log("late_done", {"order": self.id, "task": neg.task,
                                     "epoch": body.award_epoch}))
        neg.fire("late_report")   # the table's route to done; epochs never go backwards
        return out + self._done(neg, body, now)

    # -- calls and awards ---------------------------------------------------------------------
    def weighed(self, task: str) -> tuple[CallForProposals, list[tuple[str, Proposal]]] | None:
        """The last call for ``task`` and the proposals held for it — at an award, what the
        strategy weighed (the flight recorder's *why* of the award reads it here, so the
        recorder keeps no proposals of its own: docs/decisions.md, ADR 95).  None when the
        task was never called."""
        neg = self._find(task)
        if neg is None or neg.cfp is None:
            return None
        return neg.cfp, neg.proposals

    def _conv(self, neg: Negotiation) -> str:
        return f"{neg.task}#{neg.attempt}"

    def _call(self, neg: Negotiation, now: float) -> list[Action]:
        neg.fire("call")
        neg.attempt += 1
        neg.proposals = []
        neg.refusals = []
        neg.winner = ""
        lot = self._lot(neg)
        earliest = max(now, self.release_at)
        if neg.kind == "operation" and neg.op_index > 0:
            prev = lot.ops[neg.op_index - 1]
            if prev.state != "done":
                earliest = max(earliest, prev.promised_finish_at)
        recipients = neg.recipients
        planned = (self.plan is not None and neg.kind == "operation" and neg.attempt == 0
                   and not neg.lot and neg.op_index < len(self.plan.machine))
        neg.planned = planned
        latest = 0.0
        if planned:
            assert self.plan is not None
            recipients = [self.plan.machine[neg.op_index]]
            earliest = max(now, self.plan_origin_at + self.plan.start[neg.op_index])
            latest = self._latest_finish(self.plan, neg.op_index)
        reply_by = now + self.timing.reply_deadline_s
        work = sum(lot.work_s[neg.op_index:]) if neg.kind == "operation" else 0.0
        cfp = CallForProposals(
            task=neg.task, order=self.id, kind=neg.kind, capability=neg.capability, op=neg.op,
            quantity=lot.quantity, earliest_start_at=earliest, due_at=self.due_at,
            reply_by_at=reply_by, origin=neg.origin, destination=neg.destination,
            attempt=neg.attempt, priority=self.priority, work_remaining_s=work,
            latest_finish_at=latest)
        neg.cfp = cfp
        conv = self._conv(neg)
        out: list[Action] = [Send(r, cfp, conv) for r in recipients]
        out.append(SetTimer(f"deadline:{neg.task}", reply_by))
        return out

    def _latest_finish(self, plan: Plan, k: int) -> float:
        """The latest planned operation ``k`` may finish and keep the plan (ADR 97), for an
        energy-aware order's call (``plan_float``; 0 otherwise: no bound): its next
        operation's planned start; the last one, the plan's end — or the order's due date
        if that is sooner and the plan meets it (a plan late already is not made later).
        Not with robots: the rehearsal leaves transport out, so a part's move would eat
        into the next operation's start."""
        if not self.plan_float:
            return 0.0
        origin = self.plan_origin_at
        if k + 1 < len(plan.start):
            return origin + plan.start[k + 1]
        finish, end = origin + plan.finish[k], origin + plan.makespan
        if finish > self.due_at:
            return finish
        return min(end, self.due_at)

    def _deadline(self, neg: Negotiation, now: float) -> list[Action]:
        """The reply deadline: award the strategy's choice — unless there is none, waiting
        for a repair beats it, or it needs a supervisor (a late re-route)."""
        if neg.state != "calling":
            return []
        assert neg.cfp is not None
        if neg.cfp.quantity != self._lot(neg).quantity:
            # called for the whole lot before a split: the bids are for the wrong quantity
            neg.fire("deadline_none")
            return [*self._reject_all(neg), *self._call(neg, now)]
        choice = choose_of(self.strategy, neg.cfp, neg.proposals)
        if choice is None:
            return self._no_proposals(neg, now)
        winner, proposal = choice
        trouble = neg.trouble
        if trouble.wait_option is not None and trouble.wait_option[1] < proposal.finish_at:
            return self._wait_for_repair(neg, winner, proposal)
        trouble.wait_option = None
        late = self._check_late(neg, winner, proposal, now)
        if late:
            return late
        return self._award(neg, winner, proposal, now)

    def _reject_all(self, neg: Negotiation, but: str = "") -> list[Action]:
        conv = self._conv(neg)
        return [Send(s, Rejection(neg.task), conv) for s, _ in neg.proposals if s != but]

    def _no_proposals(self, neg: Negotiation, now: float) -> list[Action]:
        """Nobody bid: call again after ``retry_s``; flag it once, maybe escalate."""
        neg.fire("deadline_none")
        out: list[Action] = [SetTimer(f"retry:{neg.task}", now + self.timing.retry_s),
                             Log("no_proposals", {"order": self.id, "task": neg.task,
                                                  "attempt": neg.attempt})]
        if not neg.trouble.flagged and neg.kind == "operation":
            neg.trouble.flagged = True
            out.append(Log("non_routine", {"order": self.id, "task": neg.task,
                                           "cause": "no_capable_resource",
                                           "capability": neg.capability}))
        return out + self._check_no_resource(neg, now)

    def _wait_for_repair(self, neg: Negotiation, winner: str,
                         proposal: Proposal) -> list[Action]:
        """An interrupted operation finishes sooner where it was, once repaired: reject
        every bid and call again at the repair."""
        assert neg.trouble.wait_option is not None
        machine, finish_at = neg.trouble.wait_option
        neg.trouble.wait_option = None
        neg.fire("deadline_none")
        repair_at = finish_at - neg.duration_s
        return [SetTimer(f"retry:{neg.task}", repair_at),
                Send(winner, Rejection(neg.task), self._conv(neg)),
                *self._reject_all(neg, but=winner),
                Log("wait_for_repair", {"order": self.id, "task": neg.task,
                                        "machine": machine, "until": repair_at,
                                        "best_alternative_finish_at": proposal.finish_at})]

    def _award(self, neg: Negotiation, winner: str, proposal: Proposal,
               now: float) -> list[Action]:
        """Award ``winner`` under a new epoch, reject the others, watch the lease."""
        out = self._back_to_normal(neg, "a resource bid again")
        neg.fire("deadline_award")
        neg.epoch += 1
        neg.winner = winner
        neg.past_awards.add((winner, neg.epoch))
        neg.promised_finish_at = proposal.finish_at
        neg.duration_s = proposal.finish_at - proposal.start_at
        out.append(Send(winner, Award(neg.task, neg.epoch, self.timing.lease_s,
                                      proposal.start_at), self._conv(neg)))
        out += self._reject_all(neg, but=winner)
        out.append(SetTimer(f"lease:{neg.task}", self._lease_until(now)))
        out.append(Log("award", {"order": self.id, "task": neg.task, "winner": winner,
                                 "epoch": neg.epoch, "bids": len(neg.proposals),
                                 "finish_at": proposal.finish_at}))
        return out

    def _confirmed(self, neg: Negotiation, body: Confirmation, now: float) -> list[Action]:
        if not body.ok:
            if not neg.fire("decline"):
                return []
            return [CancelTimer(f"lease:{neg.task}")] + self._call(neg, now)
        if not neg.fire("confirm"):
            return []
        return self._advance(now)

    def _lease_expired(self, neg: Negotiation, now: float) -> list[Action]:
        if neg.state not in ("awarded", "leased"):
            return []
        neg.fire("lease_expired")
        out: list[Action] = [Send(neg.winner, Cancel(neg.task, neg.epoch, "lease expired"),
                                  self._conv(neg)),
                             Log("lease_expired", {"order": self.id, "task": neg.task,
                                                   "winner": neg.winner, "epoch": neg.epoch})]
        if neg.readied_epoch == neg.epoch:
            self._lot(neg).parts_busy = False   # whatever happened there, the parts are free
        return out + self._call(neg, now)

    def _failed(self, neg: Negotiation, body: Failure, now: float) -> list[Action]:
        if not neg.fire("failure"):
            return []
        if neg.readied_epoch == neg.epoch:
            lot = self._lot(neg)
            lot.parts_busy = False
            if neg.kind == "operation":
                lot.location = self.machine_location.get(neg.winner, lot.location)
        trouble = neg.trouble
        trouble.failed_on, trouble.failed_repair_at, trouble.late_ok = \
            neg.winner, body.repair_at, False
        out: list[Action] = [CancelTimer(f"lease:{neg.task}"),
                             Log("reroute", {"order": self.id, "task": neg.task,
                                             "from": neg.winner, "reason": body.reason})]
        if body.retry_at > now:
            # the plant says a stale winner holds the task: give it time to report
            return out + [SetTimer(f"retry:{neg.task}", body.retry_at),
                          Log("wait_for_stale_winner", {"order": self.id, "task": neg.task,
                                                        "until": body.retry_at})]
        trouble.wait_option = None
        if (self.timing.interrupted_operation == "wait_for_repair" and body.repair_at > now
                and neg.kind == "operation" and neg.readied_epoch == neg.epoch):
            # an interrupted operation: waiting for the repair and redoing it there
            # competes with the alternatives' proposals at the deadline
            trouble.wait_option = (neg.winner, body.repair_at + neg.duration_s)
        return out + self._call(neg, now)

    def _done(self, neg: Negotiation, body: Done, now: float) -> list[Action]:
        if neg.next_on("done") == IGNORED:
            return []
        out: list[Action] = [CancelTimer(f"lease:{neg.task}")]
        lot = self._lot(neg)
        lot.parts_busy = False
        if body.location:
            lot.location = body.location
        if neg.kind == "transport":
            neg.fire("done")
            lot.move = None
            return out + self._advance(now)
        if body.quality != "ok":
            neg.fire("scrap")
            out.append(Log("scrap", {"order": self.id, "task": neg.task, "machine": neg.winner}))
            neg.trouble.scrapped += 1
            return out + (self._check_scrap(neg, now) or self._call(neg, now))
        neg.fire("done")
        lot.next_exec = neg.op_index + 1
        return out + self._advance(now)

    def _lease_until(self, now: float) -> float:
        return now + self.timing.lease_window_s
