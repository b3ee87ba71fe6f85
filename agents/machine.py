"""The machine agent: bids for operations it is capable of, runs them in the plant."""

from __future__ import annotations

from typing import Any

from agents.base import Timing
from agents.energy.client import PowerClient, PowerNeeds
from agents.negotiation.strategies import ResourceStrategy, Slot
from agents.protocol.actions import Action, Command
from agents.protocol.messages import (
    Baton,
    CallForProposals,
    Explore,
    ExploreReady,
    Intention,
    Message,
    PowerGrant,
)
from agents.rehearsal import MachineRehearsal

from .base import PlantEventIn
from .resource import ResourceAgent, Task


class MachineAgent(ResourceAgent):
    """One machine: capabilities with per-unit processing times, setups, power draw."""

    role = "machine"
    kind = "operation"

    def __init__(self, agent_id: str, *, timing: Timing, strategy: ResourceStrategy,
                 location: str, capabilities: dict[str, float], setup_s: float = 0.0,
                 power_idle_kw: float = 0.0, power_busy_kw: float = 0.0,
                 orders: list[str] | None = None, power_manager: str = "",
                 power_needs: PowerNeeds | None = None, **kw: Any) -> None:
        super().__init__(agent_id, timing=timing, strategy=strategy, location=location, **kw)
        self.capabilities = dict(capabilities)
        self.setup_s = setup_s
        self.power_busy_kw = power_busy_kw
        self.power_idle_kw = power_idle_kw
        self.last_capability = ""
        # rehearsal plans conservatively: a setup before every operation
        self.rehearsal = MachineRehearsal(
            agent_id, orders=list(orders or []),
            duration_s=dict(self.capabilities), setup_s=setup_s,
        ) if timing.rehearsal_passes > 0 and orders else None
        self.planned_order = self.rehearsal is not None
        # a cell with a peak cap: operations start only under a power lease
        self.power = (PowerClient(agent_id, power_manager, power_needs, timing.retry_s)
                      if power_manager and power_needs is not None else None)

    def on_message(self, msg: Message, now: float) -> list[Action]:
        if isinstance(msg.body, (Explore, ExploreReady, Intention, Baton)):
            if self.rehearsal is None:
                self.ignored += 1
                return []
            return self.rehearsal.on_message(msg.sender, msg.body, msg.conv)
        if isinstance(msg.body, PowerGrant):
            if self.power is None or msg.sender != self.power.manager:
                self.ignored += 1
                return []
            out = self._try_start(now) if self.power.on_grant(msg.body, now) else []
            return out + self._reconcile_power()
        return self._reconcile_power(super().on_message(msg, now))

    def on_timer(self, key: str, now: float) -> list[Action]:
        if key == "power_retry" and self.power is not None:
            return self.power.on_retry(now)
        return self._reconcile_power(super().on_timer(key, now))

    def power_gate(self, task_id: str, task: Task, now: float) -> list[Action] | None:
        if self.power is None:
            return None
        cap = task.cfp.capability
        setup = self.setup_s if cap != self.last_capability else 0.0
        duration = setup + self.capabilities[cap] * task.cfp.quantity
        return self.power.gate(task_id, task.award_epoch, cap, duration, now)

    def _power_wanted(self) -> list[tuple[str, int]]:
        """The leases still of use: the running task's and those of ready committed tasks."""
        return [(tid, t.award_epoch) for tid, t in self.tasks.items()
                if t.state == "running" or (t.state == "committed" and t.ready)]

    def _reconcile_power(self, out: list[Action] | None = None) -> list[Action]:
        """``out`` plus the release of every lease no task needs any more."""
        out = list(out or [])
        if self.power is not None:
            out += self.power.reconcile(self._power_wanted())
        return out

    def can_do(self, cfp: CallForProposals) -> bool:
        return cfp.kind == "operation" and cfp.capability in self.capabilities

    def _capability_before(self, start_at: float, now: float) -> str:
        prev = self.last_capability
        for s, _, tid in self.busy_intervals(now):
            if s >= start_at:
                break
            prev = self.tasks[tid].cfp.capability
        return prev

    def quote(self, cfp: CallForProposals, now: float) -> Slot:
        processing = self.capabilities[cfp.capability] * cfp.quantity
        # Try with setup; if the slot found follows the same capability, drop the setup.
        start = self.earliest_gap(cfp.earliest_start_at, processing + self.setup_s, now)
        setup = self.setup_s if self._capability_before(start, now) != cfp.capability else 0.0
        if setup == 0.0 and self.setup_s > 0.0:
            start = self.earliest_gap(cfp.earliest_start_at, processing, now)
            if self._capability_before(start, now) != cfp.capability:
                setup = self.setup_s
                start = self.earliest_gap(cfp.earliest_start_at, processing + setup, now)
        finish = start + setup + processing
        energy = self.power_busy_kw * (setup + processing) / 3600.0
        return Slot(start, finish, max(0.0, start - max(now, cfp.earliest_start_at)), setup,
                    processing, 0.0, energy)

    def start_command(self, task_id: str, task: Task, now: float) -> Command:
        cap = task.cfp.capability
        setup = self.setup_s if cap != self.last_capability else 0.0
        processing = self.capabilities[cap] * task.cfp.quantity
        return Command("start_operation", self.id, task_id, {
            "capability": cap, "quantity": task.cfp.quantity, "order": task.order,
            "award_epoch": task.award_epoch, "setup_s": setup, "processing_s": processing,
            "duration_s": setup + processing})

    def on_finished(self, task: Task, now: float) -> None:
        self.last_capability = task.cfp.capability

    def on_plant_event(self, ev: PlantEventIn, now: float) -> list[Action]:
        if ev.event == "operation_done":
            quality = str((ev.data or {}).get("quality", "ok"))
            return self._reconcile_power(self.finish(ev.task, now, quality, self.location))
        return self._reconcile_power(super().on_plant_event(ev, now))
