"""The energy manager agent: grants power leases so the cell stays under its peak cap.

The decisions are the lease table's (:mod:`agents.energy.budget`); this agent
only turns messages into table calls and table results into messages, and keeps
one timer, ``expiry``, at the earliest lease expiry so a lease nobody releases
(a crashed machine, a lost release) is reclaimed on time.  It logs
``power_granted``, ``power_released`` and ``power_reclaimed``, which only a cell
with a cap writes, so energy-blind event logs are unchanged.
"""

from __future__ import annotations

from typing import Any

from agents.base import Agent, Timing
from agents.protocol.actions import Action, Log, Send, SetTimer
from agents.protocol.messages import Message, PowerGrant, PowerRelease, PowerRequest

from .budget import Lease, PowerBudget, lease_key

__all__ = ["ENERGY_MANAGER_ID", "EnergyManagerAgent"]

#: The manager's agent id (and the certificate role ``energy``).
ENERGY_MANAGER_ID = "energy"


class EnergyManagerAgent(Agent):
    """Shares ``budget_kw`` (the cap minus the machines' idle power) as leases."""

    role = "energy"

    def __init__(self, agent_id: str, *, timing: Timing, budget_kw: float,
                 cap_kw: float, **kw: Any) -> None:
        super().__init__(agent_id, timing=timing, **kw)
        self.cap_kw = cap_kw
        self.budget = PowerBudget(budget_kw)
        self.convs: dict[str, str] = {}          # lease key -> conversation of the request
        self._expiry_at: float | None = None     # when the armed ``expiry`` timer fires
        self.ignored = 0

    def on_message(self, msg: Message, now: float) -> list[Action]:
        body = msg.body
        if isinstance(body, PowerRequest):
            key = lease_key(body.task, body.award_epoch, body.attempt)
            fresh = key not in self.budget.leases
            lease = self.budget.request(msg.sender, body.task, body.award_epoch, body.kw,
                                        body.hold_s, now, body.attempt)
            self.convs.setdefault(key, msg.conv)
            if lease is None:
                return []
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
            return out + self._granted(granted, now)
        self.ignored += 1
        return []

    def on_timer(self, key: str, now: float) -> list[Action]:
        if key != "expiry":
            return []
        self._expiry_at = None
        gone, granted = self.budget.expire(now)
        out: list[Action] = []
        for lease in gone:
            self.convs.pop(lease.key, None)
            out.append(Log("power_reclaimed", {"agent": self.id, "machine": lease.holder,
                                               "task": lease.task, "kw": lease.kw}))
        return out + self._granted(granted, now)

    def _granted(self, leases: list[Lease], now: float, log: bool = True) -> list[Action]:
        out: list[Action] = []
        for lease in leases:
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
