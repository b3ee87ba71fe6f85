"""The order agent: the contract net's initiator and the material flow of one order.

See the package docstring (:mod:`agents.order`) for the theory of operation.
This module holds the agent's inputs, its negotiations — each a
:class:`~agents.order.negotiation.Negotiation`, the only writer of its
state — and the material flow of its lots; exception handling (escalations,
decisions, cancelling) is :class:`~agents.order.exceptions.OrderExceptions`.
"""

from __future__ import annotations

from agents.base import Agent, Timing
from agents.escalation.policy import OFF, EscalationPolicy
from agents.escalation.raiser import EscalationRaiser
from agents.negotiation.contract_net import IGNORED
from agents.negotiation.strategies import OrderStrategy
from agents.order.exceptions import OrderExceptions
from agents.order.lots import Lot, SplitPlan
from agents.order.negotiation import Negotiation
from agents.protocol.actions import Action, CancelTimer, Log, Send, SetTimer
from agents.protocol.messages import (
    Award,
    CallForProposals,
    Cancel,
    Confirmation,
    Decision,
    Done,
    ExploreQuote,
    ExploreResult,
    Failure,
    Heartbeat,
    Message,
    Proposal,
    Ready,
    Refusal,
    Rejection,
)
from agents.rehearsal import OrderRehearsal, Plan


class OrderAgent(OrderExceptions, Agent):
    """One production order: negotiates its operations and moves, follows its parts."""

    role = "order"

    def __init__(self, agent_id: str, *, timing: Timing, strategy: OrderStrategy,
                 routing: list[tuple[str, str]], quantity: int, release_at: float, due_at: float,
                 priority: int, capable: dict[str, list[str]], robots: list[str],
                 machine_location: dict[str, str], input_location: str, output_location: str,
                 min_processing_s: dict[str, float], machines: list[str] | None = None,
                 peers: list[str] | None = None, escalation: EscalationPolicy = OFF,
                 **kw: object) -> None:
        super().__init__(agent_id, timing=timing, **kw)  # type: ignore[arg-type]
        self.strategy = strategy
        self.policy = escalation
        # open escalations, (cause, task) each, re-sent every retry_s until decided
        self.raiser: EscalationRaiser[tuple[str, str]] = EscalationRaiser(
            agent_id, escalation.console, timing.retry_s, "escalation:{}")
        self.cancelled_by = ""
        self.quantity = quantity
        self.release_at = release_at
        self.due_at = due_at
        self.priority = priority
        self.robots = sorted(robots)
        self.machine_location = machine_location
        self.output_location = output_location
        self.released = False
        self.completed_at: float | None = None
        self.unit_work_s = [min_processing_s.get(cap, 0.0) for _, cap in routing]
        self.lots: dict[str, Lot] = {"": Lot(
            "", agent_id, quantity,
            [Negotiation(f"{agent_id}/{k}", "operation", k, cap, op, sorted(capable.get(cap, [])))
             for k, (op, cap) in enumerate(routing)],
            [u * quantity for u in self.unit_work_s], input_location)}
        self.split_offers: dict[str, SplitPlan] = {}        # escalation id -> offered split
        self.ignored = 0
        self.rehearsal: OrderRehearsal | None = None
        self.plan: Plan | None = None
        self.plan_origin_at = 0.0
        if timing.rehearsal_passes > 0 and machines and peers:
            self.rehearsal = OrderRehearsal(
                agent_id, alternatives=[n.recipients for n in self.ops],
                capabilities=[n.capability for n in self.ops], quantity=quantity,
                work_s=self.work_s, machines=machines, peers=peers,
                passes=timing.rehearsal_passes, rng=self.rng,
                budget_share=timing.rehearsal_budget_share)

    # -- the first lot (the whole order until a split), as before lots ---------------------
    @property
    def ops(self) -> list[Negotiation]:
        return self.lots[""].ops

    @property
    def work_s(self) -> list[float]:
        return self.lots[""].work_s

    @property
    def location(self) -> str:
        return self.lots[""].location

    @property
    def parts_busy(self) -> bool:
        return self.lots[""].parts_busy

    @property
    def next_exec(self) -> int:
        return self.lots[""].next_exec

    @property
    def move(self) -> Negotiation | None:
        return self.lots[""].move

    @property
    def moves(self) -> int:
        return self.lots[""].moves

    def _lot(self, neg: Negotiation) -> Lot:
        return self.lots[neg.lot]

    # -- inputs -----------------------------------------------------------------------------
    def on_start(self, now: float) -> list[Action]:
        out: list[Action] = [SetTimer("release", max(now, self.release_at))]
        if self.rehearsal is not None:
            self.rehearsal.first_ready_at = max(0.0, self.release_at - now)
            out += self.rehearsal.start(now)
            out += self._rehearsal_watch(now)
        return out

    # -- rehearsal (agents/rehearsal.py) ------------------------------------------------------
    def _rehearsing(self) -> bool:
        return self.rehearsal is not None and not self.rehearsal.finished

    def _rehearsal_watch(self, now: float) -> list[Action]:
        return [SetTimer("rehearsal", now + self.timing.rehearsal_pass_timeout_s)]

    def _on_rehearsal(self, sender: str, body: ExploreQuote | ExploreResult,
                      now: float) -> list[Action]:
        assert self.rehearsal is not None
        before = self.rehearsal.now_pass
        out = self.rehearsal.on_message(sender, body, now)
        if self.rehearsal.finished:
            return out + [CancelTimer("rehearsal")] + self._end_rehearsal(now)
        if self.rehearsal.now_pass is not before:
            out += self._rehearsal_watch(now)
        return out

    def _end_rehearsal(self, now: float) -> list[Action]:
        """Negotiate for real: every operation at once, at its planned machine and time."""
        assert self.rehearsal is not None
        self.plan = self.rehearsal.best
        # a time every order agrees on (the latest pass end reported), so the
        # planned slots of different orders line up exactly at the machines; it
        # leaves room for the award round, so no planned slot is already in the past.
        # Not ``now``: orders hear the last result at different times, and slots shifted
        # by one message latency would overlap at the machines and be pushed back.
        agreed = max(self.rehearsal.ended_at, self.rehearsal.started_at)
        self.plan_origin_at = max(agreed, now - self.timing.reply_deadline_s) \
            + 2 * self.timing.reply_deadline_s
        return self._advance(now)

    def on_timer(self, key: str, now: float) -> list[Action]:
        if self.cancelled_by:
            return []
        if key.startswith("escalation:"):
            return self.raiser.resend(key.partition(":")[2], now)
        if key == "release":
            self.released = True
            return [Log("order_released", {"order": self.id})] + self._advance(now)
        if key == "rehearsal":
            if not self._rehearsing():
                return []
            assert self.rehearsal is not None
            return self.rehearsal.stop("timeout") + self._end_rehearsal(now)
        kind, _, task = key.partition(":")
        neg = self._find(task)
        if neg is None:
            return []
        if kind == "deadline":
            return self._deadline(neg, now)
        if kind == "lease":
            return self._lease_expired(neg, now)
        if kind == "retry" and neg.state == "waiting":
            return self._call(neg, now)
        return []

    def on_message(self, msg: Message, now: float) -> list[Action]:
        body = msg.body
        if isinstance(body, Decision):
            return self._on_decision(body, now)
        if self.cancelled_by:
            return self._after_cancel(msg)
        if isinstance(body, Heartbeat):
            return self._on_heartbeat(msg.sender, body, now)
        if isinstance(body, (ExploreQuote, ExploreResult)):
            if not self._rehearsing():
                self.ignored += 1
                return []
            return self._on_rehearsal(msg.sender, body, now)
        neg = self._find(getattr(body, "task", ""))
        if neg is None or neg.state == "idle":   # unknown, or a bid for a call not yet made
            self.ignored += 1
            return []
        current = (msg.sender == neg.winner and getattr(body, "award_epoch", None) == neg.epoch
                   and neg.state in ("awarded", "leased"))
        if isinstance(body, Done) and not current and neg.state != "done" \
                and (msg.sender, body.award_epoch) in neg.past_awards:
            # A finished task reported late (its inform_done was lost and the lease
            # expired): the work is done; take it, whatever round we are in now.
            return self._late_done(neg, body, now)
        if isinstance(body, (Proposal, Refusal)):
            event = "propose" if isinstance(body, Proposal) else "refuse"
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

    # -- negotiation ----------------------------------------------------------------------------
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
        if planned:
            assert self.plan is not None
            recipients = [self.plan.machine[neg.op_index]]
            earliest = max(now, self.plan_origin_at + self.plan.start[neg.op_index])
        reply_by = now + self.timing.reply_deadline_s
        work = sum(lot.work_s[neg.op_index:]) if neg.kind == "operation" else 0.0
        cfp = CallForProposals(
            task=neg.task, order=self.id, kind=neg.kind, capability=neg.capability, op=neg.op,
            quantity=lot.quantity, earliest_start_at=earliest, due_at=self.due_at,
            reply_by_at=reply_by, origin=neg.origin, destination=neg.destination,
            attempt=neg.attempt, priority=self.priority, work_remaining_s=work)
        neg.cfp = cfp
        conv = self._conv(neg)
        out: list[Action] = [Send(r, cfp, conv) for r in recipients]
        out.append(SetTimer(f"deadline:{neg.task}", reply_by))
        return out

    def _deadline(self, neg: Negotiation, now: float) -> list[Action]:
        if neg.state != "calling":
            return []
        assert neg.cfp is not None
        conv = self._conv(neg)
        if neg.cfp.quantity != self._lot(neg).quantity:
            # called for the whole lot before a split: the bids are for the wrong quantity
            neg.fire("deadline_none")
            return [*[Send(s, Rejection(neg.task), conv) for s, _ in neg.proposals],
                    *self._call(neg, now)]
        choice = self.strategy.choose(neg.cfp, neg.proposals)
        if choice is None:
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
        winner, proposal = choice
        trouble = neg.trouble
        if trouble.wait_option is not None and trouble.wait_option[1] < proposal.finish_at:
            machine, finish_at = trouble.wait_option
            trouble.wait_option = None
            neg.fire("deadline_none")
            repair_at = finish_at - neg.duration_s
            return [SetTimer(f"retry:{neg.task}", repair_at),
                    Send(winner, Rejection(neg.task), conv),
                    *[Send(s, Rejection(neg.task), conv) for s, _ in neg.proposals if s != winner],
                    Log("wait_for_repair", {"order": self.id, "task": neg.task,
                                            "machine": machine, "until": repair_at,
                                            "best_alternative_finish_at": proposal.finish_at})]
        trouble.wait_option = None
        late = self._check_late(neg, winner, proposal, now)
        if late:
            return late
        out = self._back_to_normal(neg, "a resource bid again")
        neg.fire("deadline_award")
        neg.epoch += 1
        neg.winner = winner
        neg.past_awards.add((winner, neg.epoch))
        neg.promised_finish_at = proposal.finish_at
        neg.duration_s = proposal.finish_at - proposal.start_at
        out.append(Send(winner, Award(neg.task, neg.epoch, self.timing.lease_s,
                                      proposal.start_at), conv))
        out += [Send(s, Rejection(neg.task), conv) for s, _ in neg.proposals if s != winner]
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

    # -- the material flow ------------------------------------------------------------------------
    def _advance(self, now: float) -> list[Action]:
        if (not self.released or self.completed_at is not None or self._rehearsing()
                or self.cancelled_by):
            return []
        out: list[Action] = []
        if self.plan is not None:
            # a rehearsed plan: every operation is negotiated now, at its planned slot
            for neg in self.ops:
                if neg.state == "idle":
                    out += self._call(neg, now)
        for lot in self.lots.values():
            if lot.done_at is None:
                out += self._advance_lot(lot, now)
        if all(lot.done_at is not None for lot in self.lots.values()):
            self.completed_at = now
            split = {"lots": {lot.prefix: lot.quantity for lot in self.lots.values()}} \
                if len(self.lots) > 1 else {}
            out.append(Log("order_completed", {
                "order": self.id, "due_at": self.due_at, "release_at": self.release_at,
                "tardiness_s": max(0.0, now - self.due_at), **split}))
        return out

    def _advance_lot(self, lot: Lot, now: float) -> list[Action]:
        out: list[Action] = []
        # call the next operation when its predecessor is done — or, planning
        # ahead up to ``plan_ahead_ops`` operations, once the predecessor is leased
        for k, neg in enumerate(lot.ops):
            if neg.state == "idle":
                prev = lot.ops[k - 1].state if k else "done"
                ahead = k - lot.next_exec <= self.timing.plan_ahead_ops
                if prev == "done" or (ahead and prev == "leased"):
                    out += self._call(neg, now)
                break
        if lot.parts_busy or lot.move is not None:
            return out
        if lot.next_exec == len(lot.ops):
            if self.robots and lot.location != self.output_location:
                return out + self._start_move(lot, self.output_location, len(lot.ops), now)
            lot.done_at = now
            return out
        neg = lot.ops[lot.next_exec]
        if neg.state != "leased" or neg.readied_epoch == neg.epoch:
            return out
        dest = self.machine_location.get(neg.winner, lot.location)
        if dest != lot.location:
            if self.robots:
                return out + self._start_move(lot, dest, neg.op_index, now)
            lot.location = dest              # no robots: transfers are instantaneous
        neg.readied_epoch = neg.epoch
        lot.parts_busy = True
        return out + [Send(neg.winner, Ready(neg.task, neg.epoch), self._conv(neg))]

    def _start_move(self, lot: Lot, dest: str, k: int, now: float) -> list[Action]:
        lot.moves += 1
        move = Negotiation(f"{lot.prefix}/{k}/m{lot.moves}", "transport", k, "transport",
                           "move", self.robots, origin=lot.location, destination=dest,
                           lot=lot.name)
        lot.move = move
        lot.parts_busy = True    # committed to the move until the robot delivers
        return self._call(move, now)

    def _lease_until(self, now: float) -> float:
        return now + self.timing.lease_window_s

    def _find(self, task: str) -> Negotiation | None:
        prefix, _, rest = task.rpartition("/")
        for lot in self.lots.values():
            if lot.move is not None and lot.move.task == task:
                return lot.move
            if prefix == lot.prefix and rest.isdigit() and int(rest) < len(lot.ops):
                return lot.ops[int(rest)]
        return None
