"""The order agent: the contract net's initiator and the material flow of one order.

See the package docstring (:mod:`agents.order`) for the theory of operation.
This module holds the agent's inputs, the rehearsal glue and the material
flow of its lots.  The contract net itself — each task a
:class:`~agents.order.negotiation.Negotiation`, the only writer of its
state — is :class:`~agents.order.initiator.OrderInitiator`; exception
handling (escalations, decisions, cancelling) is
:class:`~agents.order.exceptions.OrderExceptions`.
"""

from __future__ import annotations

from agents.base import Agent, Timing
from agents.energy.rehearsal import PlanPricing
from agents.escalation.policy import OFF, EscalationPolicy
from agents.escalation.raiser import EscalationRaiser
from agents.negotiation.strategies import OrderStrategy
from agents.order.exceptions import OrderExceptions
from agents.order.initiator import OrderInitiator
from agents.order.lots import Lot, SplitPlan
from agents.order.negotiation import Negotiation
from agents.protocol.actions import Action, CancelTimer, Log, Send, SetTimer
from agents.protocol.messages import (
    Decision,
    ExploreQuote,
    ExploreResult,
    Heartbeat,
    Message,
    Ready,
)
from agents.rehearsal import OrderRehearsal, Plan


class OrderAgent(OrderInitiator, OrderExceptions, Agent):
    """One production order: negotiates its operations and moves, follows its parts."""

    role = "order"

    def __init__(self, agent_id: str, *, timing: Timing, strategy: OrderStrategy,
                 routing: list[tuple[str, str]], quantity: int, release_at: float, due_at: float,
                 priority: int, capable: dict[str, list[str]], robots: list[str],
                 machine_location: dict[str, str], input_location: str, output_location: str,
                 min_processing_s: dict[str, float], machines: list[str] | None = None,
                 peers: list[str] | None = None, escalation: EscalationPolicy = OFF,
                 pricing: PlanPricing | None = None, **kw: object) -> None:
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
        # planned calls carry the latest finish that keeps the plan (ADR 97)
        self.plan_float = pricing is not None and not robots
        if timing.rehearsal_passes > 0 and machines and peers:
            self.rehearsal = OrderRehearsal(
                agent_id, alternatives=[n.recipients for n in self.ops],
                capabilities=[n.capability for n in self.ops], quantity=quantity,
                work_s=self.work_s, machines=machines, peers=peers,
                passes=timing.rehearsal_passes, rng=self.rng,
                budget_share=timing.rehearsal_budget_share, pricing=pricing)

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
        # energy-aware orders leave the machines time to wake up from standby first (the
        # same lead for every order: agents/energy/rehearsal.py ``PlanPricing.wake_lead_s``)
        pricing = self.rehearsal.pricing
        self.plan_origin_at = max(agreed, now - self.timing.reply_deadline_s) \
            + 2 * self.timing.reply_deadline_s
        if pricing is not None:
            self.plan_origin_at += pricing.wake_lead_s(self.plan_origin_at)
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
        return self._on_reply(msg, neg, now)

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

    def _find(self, task: str) -> Negotiation | None:
        prefix, _, rest = task.rpartition("/")
        for lot in self.lots.values():
            if lot.move is not None and lot.move.task == task:
                return lot.move
            if prefix == lot.prefix and rest.isdigit() and int(rest) < len(lot.ops):
                return lot.ops[int(rest)]
        return None
