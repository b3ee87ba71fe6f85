"""The energy manager agent: grants power leases so the cell stays under its peak cap.

The decisions are the lease table's (:mod:`agents.energy.budget`); this agent
only turns messages into table calls and table results into messages, and keeps
one timer, ``expiry``, at the earliest lease expiry so a lease nobody releases
(a crashed machine, a lost release) is reclaimed on time.  It logs
``power_granted``, ``power_released`` and ``power_reclaimed``, which only a cell
with a cap writes, so energy-blind event logs are unchanged.

With ``cap_escalation`` (the cell's ``cap_lateness_escalate_s`` and a console),
it also asks a supervisor when the cap would make an order late
(:mod:`agents.energy.cap_escalation`) and applies the decision: a raise of the
cap for a while (``cap_raised`` … ``cap_restored``, timer ``cap_raise_end``),
the order's requests first, or nothing.  Built with ``plant`` (a driver whose plant keeps
its own event log: ``autocell up``), it also tells the plant each raise and its end
(``cap_in_force``), so the plant's log — and the headroom gauge fed from it — carries
the cap in force (ADR 91).
"""

from __future__ import annotations

from typing import Any

from agents.base import Agent, Timing
from agents.escalation.raiser import EscalationRaiser
from agents.protocol.actions import Action, Log, Send, SetTimer
from agents.protocol.messages import CapInForce, Message, PowerGrant, PowerRelease, PowerRequest

from .budget import EPS_KW, Lease, PowerBudget, lease_key, order_of
from .cap_escalation import CapEscalationPolicy, CapWatch

__all__ = ["ENERGY_MANAGER_ID", "EnergyManagerAgent"]

#: The manager's agent id (and the certificate role ``energy``).
ENERGY_MANAGER_ID = "energy"


class EnergyManagerAgent(Agent):
    """Shares ``budget_kw`` (the cap minus the machines' idle power) as leases."""

    role = "energy"

    def __init__(self, agent_id: str, *, timing: Timing, budget_kw: float,
                 cap_kw: float, cap_escalation: CapEscalationPolicy | None = None,
                 due_at: dict[str, float] | None = None,
                 remaining_s: dict[str, list[float]] | None = None, plant: str = "",
                 **kw: Any) -> None:
        super().__init__(agent_id, timing=timing, **kw)
        self.cap_kw = cap_kw
        self.plant = plant                       # the plant told of raises ("": nobody)
        self.budget = PowerBudget(budget_kw)
        self.convs: dict[str, str] = {}          # lease key -> conversation of the request
        self._expiry_at: float | None = None     # when the armed ``expiry`` timer fires
        self.ignored = 0
        # the cap escalation (None: never asks); escalations are about orders
        self.watch = (None if cap_escalation is None
                      else CapWatch(cap_escalation, dict(due_at or {}),
                                    remaining_s=dict(remaining_s or {})))
        self.raiser: EscalationRaiser[str] = EscalationRaiser(
            agent_id, cap_escalation.console if cap_escalation else "console", timing.retry_s,
            "cap_escalation:{}")
        self.raise_until: float | None = None    # an approved raise lasts until then
        self.restoring = False                   # the raise is over, leases above it still run

    def on_message(self, msg: Message, now: float) -> list[Action]:
        body = msg.body
        if isinstance(body, PowerRequest):
            key = lease_key(body.task, body.award_epoch, body.attempt)
            fresh = key not in self.budget.leases
            lease = self.budget.request(msg.sender, body.task, body.award_epoch, body.kw,
                                        body.hold_s, now, body.attempt)
            self.convs.setdefault(key, msg.conv)
            if lease is None:
                return self._check_late(msg, body, key, now)
            if lease.holder != msg.sender:      # another machine's task id: not its lease
                self.ignored += 1
                return []
            return self._granted([lease], now, log=fresh)
        if isinstance(body, PowerRelease):
            key = lease_key(body.task, body.award_epoch, body.attempt)
            lease = self.budget.leases.get(key)
            if lease is not None and lease.holder != msg.sender:
                self.ignored += 1
                return []
            granted = self.budget.release(body.task, body.award_epoch, now, body.attempt)
            self.convs.pop(key, None)
            out: list[Action] = []
            if lease is not None:
                out.append(Log("power_released", {"agent": self.id, "machine": lease.holder,
                                                  "task": lease.task, "kw": lease.kw}))
            return out + self._granted(granted, now) + self._maybe_restored()
        decision = self.raiser.decision_in(msg)
        if decision is not None:
            return self._on_decision(decision.escalation, decision.option, decision.user, now)
        self.ignored += 1
        return []

    def on_timer(self, key: str, now: float) -> list[Action]:
        if key == "cap_raise_end":
            return self._raise_over(now)
        if key != "expiry":
            return self.raiser.on_timer(key, now)
        self._expiry_at = None
        gone, granted = self.budget.expire(now)
        out: list[Action] = []
        for lease in gone:
            self.convs.pop(lease.key, None)
            out.append(Log("power_reclaimed", {"agent": self.id, "machine": lease.holder,
                                               "task": lease.task, "kw": lease.kw}))
        return out + self._granted(granted, now) + self._maybe_restored()

    # -- the cap escalation ----------------------------------------------------------------
    def _check_late(self, msg: Message, body: PowerRequest, key: str,
                    now: float) -> list[Action]:
        """A request the cap holds back: escalate if it makes its order too late."""
        if self.watch is None or key not in self.budget.waiting:
            return []
        order = order_of(body.task)
        late = self.watch.check(order, msg.sender, max(0.0, body.kw), body.hold_s,
                                self.budget, now, body.task, key)
        if late is None:
            return []
        esc = self.raiser.next_id()
        esc_body = self.watch.escalation(esc, order, body.task, max(0.0, body.kw), *late,
                                         self.budget, self.cap_kw, now)
        return self.raiser.raise_(esc_body, order, now) + [
            Log("escalate", {"agent": self.id, "escalation": esc, "cause": esc_body.cause,
                             "order": order, "task": body.task,
                             "late_by_s": round(late[1], 6)})]

    def _on_decision(self, escalation: str, option: str, user: str,
                     now: float) -> list[Action]:
        raised, out = self.raiser.decided(escalation)
        if raised is None:                       # unknown, decided or cleared already
            self.ignored += 1
            return []
        order = raised.about
        out.append(Log("decision_applied", {"agent": self.id, "escalation": escalation,
                                            "option": option, "user": user}))
        if option == "raise_cap":
            assert self.watch is not None            # only a watching manager raises
            need = sum(w.kw for w in self.budget.waiting.values() if order_of(w.task) == order)
            extra = (self.budget.budget_kw - self.budget.base_kw
                     + max(0.0, need - self.budget.headroom_kw))
            until = max(self.raise_until or now, now + self.watch.policy.raise_s)
            self.raise_until, self.restoring = until, False
            granted = self.budget.raise_by(extra, now, order)
            out.append(Log("cap_raised", {"agent": self.id, "escalation": escalation,
                                          "order": order, "user": user,
                                          "extra_kw": round(extra, 9),
                                          "cap_kw": round(self.cap_kw + extra, 9),
                                          "until": until}))
            out += self._tell_plant(CapInForce(round(self.cap_kw + extra, 9), True, until,
                                               escalation))
            out.append(SetTimer("cap_raise_end", until))
            return out + self._granted(granted, now)
        if option == "move_other_work":
            return out + self._granted(self.budget.put_first(order, now), now)
        return out                               # let_late: the cap holds, the order is late

    def _raise_over(self, now: float) -> list[Action]:
        if self.raise_until is None or now < self.raise_until:
            return []
        self.raise_until = None
        self.budget.restore()
        self.restoring = True
        return self._maybe_restored()

    def _maybe_restored(self) -> list[Action]:
        """Once the raise is over and the leases in use fit under the cap, the cap is back."""
        if not self.restoring or self.budget.in_use_kw > self.budget.base_kw + EPS_KW:
            return []
        self.restoring = False
        return [Log("cap_restored", {"agent": self.id, "cap_kw": self.cap_kw}),
                *self._tell_plant(CapInForce(self.cap_kw, False))]

    def _tell_plant(self, body: CapInForce) -> list[Action]:
        """The cap in force, to a plant that keeps its own log (none in virtual time, where
        the plant's log is the cell's, which has our ``cap_raised`` line already)."""
        return [Send(self.plant, body)] if self.plant else []

    def _granted(self, leases: list[Lease], now: float, log: bool = True) -> list[Action]:
        out: list[Action] = []
        for lease in leases:
            if self.raiser.open:                 # granted before anyone decided
                out += self._cleared(order_of(lease.task))
            if log:
                out.append(Log("power_granted", {
                    "agent": self.id, "machine": lease.holder, "task": lease.task,
                    "kw": lease.kw, "expires_at": lease.expires_at,
                    "in_use_kw": round(self.budget.in_use_kw, 9)}))
            out.append(Send(lease.holder, PowerGrant(lease.task, lease.epoch, lease.kw,
                                                     lease.expires_at, lease.attempt),
                            self.convs.get(lease.key, "")))
        nxt = self.budget.next_expiry_at()
        if nxt is not None and (self._expiry_at is None or nxt < self._expiry_at):
            self._expiry_at = nxt
            out.append(SetTimer("expiry", nxt))
        return out

    def _cleared(self, order: str) -> list[Action]:
        out: list[Action] = []
        for esc in [e for e, r in self.raiser.open.items() if r.about == order]:
            out += self.raiser.clear(esc, "power granted under the cap")
        return out
