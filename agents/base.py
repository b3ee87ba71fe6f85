"""The sans-io agent: inputs in, actions out (docs/architecture.md, The runner and its drivers).

An agent never reads a clock, sleeps, touches a socket or draws from a
global RNG: ``now`` comes with every input, randomness from ``self.rng``
(seeded by the driver), and everything it wants done is returned as
:mod:`agents.protocol.actions`.  The same object runs under the
virtual-time driver and the ZeroMQ host.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from agents.protocol.actions import Action
from agents.protocol.messages import Message


@dataclass(frozen=True, slots=True)
class PlantEventIn:
    """A plant event as an agent sees it."""

    event: str          # operation_done | fault | repaired | arrived | reading | quality_result
    resource: str
    task: str = ""
    data: dict | None = None


@dataclass(frozen=True, slots=True)
class Timing:
    """Negotiation timing from the cell config, in seconds."""

    reply_deadline_s: float = 0.2
    lease_s: float = 30.0
    heartbeat_interval_s: float = 5.0
    missed_heartbeats: int = 3
    retry_s: float = 5.0
    plan_ahead_ops: int = 0
    rehearsal_passes: int = 0
    rehearsal_pass_timeout_s: float = 1.0
    rehearsal_budget_share: float = 0.01
    interrupted_operation: str = "restart_elsewhere"   # or "wait_for_repair"

    @property
    def lease_window_s(self) -> float:
        """How long a lease lives without renewal: ``lease_s``, or less — a winner counts as
        gone after ``missed_heartbeats`` silent heartbeat intervals (plus a small tolerance
        for delivery delay)."""
        tolerance_s = min(self.reply_deadline_s, 0.05 * self.heartbeat_interval_s)
        return min(self.lease_s, self.missed_heartbeats * self.heartbeat_interval_s + tolerance_s)


class Agent:
    """Base class: override the ``on_*`` inputs you need."""

    role = "agent"

    def __init__(self, agent_id: str, *, timing: Timing, rng: random.Random | None = None) -> None:
        self.id = agent_id
        self.timing = timing
        self.rng = rng or random.Random(0)

    def on_start(self, now: float) -> list[Action]:
        return []

    def on_message(self, msg: Message, now: float) -> list[Action]:
        return []

    def on_timer(self, key: str, now: float) -> list[Action]:
        return []

    def on_plant_event(self, ev: PlantEventIn, now: float) -> list[Action]:
        return []

    def on_recover(self, now: float) -> list[Action]:
        """Called once after the driver rebuilt this agent from its journal.

        Inputs may have been missed while the agent was away; this is where it
        asks for them (resources query the plant).  Timers were re-armed.
        """
        return []
