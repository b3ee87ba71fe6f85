"""The robot agent: bids for moves between locations and carries them out."""

from __future__ import annotations

from typing import Any

from agents.base import Timing
from agents.negotiation.strategies import ResourceStrategy, Slot
from agents.protocol.actions import Action, Command
from agents.protocol.messages import CallForProposals

from .base import PlantEventIn
from .resource import ResourceAgent, Task


class RobotAgent(ResourceAgent):
    """One transport robot (AGV): a travel-time table and a handling time per move."""

    role = "robot"
    kind = "transport"
    ready_on_award = True

    def __init__(self, agent_id: str, *, timing: Timing, strategy: ResourceStrategy,
                 location: str, travel_s: dict[tuple[str, str], float], load_s: float = 0.0,
                 **kw: Any) -> None:
        super().__init__(agent_id, timing=timing, strategy=strategy, location=location, **kw)
        self.travel_s = travel_s
        self.load_s = load_s

    def travel(self, a: str, b: str) -> float:
        return 0.0 if a == b else self.travel_s[(a, b)]

    def can_do(self, cfp: CallForProposals) -> bool:
        return (cfp.kind == "transport" and (cfp.origin, cfp.destination) in self.travel_s
                or (cfp.kind == "transport" and cfp.origin == cfp.destination))

    def _position_at(self, start_at: float, now: float) -> str:
        """Where the robot will be at ``start_at`` given its committed moves."""
        pos = self.location
        for s, _, tid in self.busy_intervals(now):
            if s >= start_at:
                break
            pos = self.tasks[tid].cfp.destination
        return pos

    def quote(self, cfp: CallForProposals, now: float) -> Slot:
        carry = self.travel(cfp.origin, cfp.destination) + self.load_s
        # Plan with the empty trip from wherever the robot will be.
        start = self.earliest_gap(cfp.earliest_start_at, carry, now)
        empty = self.travel(self._position_at(start, now), cfp.origin)
        start = self.earliest_gap(cfp.earliest_start_at, carry + empty, now)
        empty = self.travel(self._position_at(start, now), cfp.origin)
        finish = start + empty + carry
        return Slot(start, finish, max(0.0, start - max(now, cfp.earliest_start_at)), 0.0, 0.0,
                    empty + carry, 0.0)

    def start_command(self, task_id: str, task: Task, now: float) -> Command:
        empty = self.travel(self.location, task.cfp.origin)
        carry = self.travel(task.cfp.origin, task.cfp.destination)
        return Command("move", self.id, task_id, {
            "from": self.location, "origin": task.cfp.origin,
            "destination": task.cfp.destination, "order": task.order,
            "award_epoch": task.award_epoch,
            "duration_s": empty + carry + self.load_s})

    def on_finished(self, task: Task, now: float) -> None:
        self.location = task.cfp.destination

    def on_plant_event(self, ev: PlantEventIn, now: float) -> list[Action]:
        if ev.event == "arrived":
            task = self.tasks.get(ev.task)
            dest = task.cfp.destination if task else self.location
            return self.finish(ev.task, now, "ok", dest)
        return super().on_plant_event(ev, now)
