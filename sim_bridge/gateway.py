"""The plant gateway: commands routed by resource to backends, the fence in front.

Theory of operation
-------------------
Agents command resources; backends (:class:`~sim_bridge.plant_api.Plant`)
drive them.  :class:`PlantGateway` stands between, and knows no clock,
socket or simulator (it runs inside the virtual-time driver as
:class:`~sim_bridge.plant.EmbeddedPlant` and inside ``autocell plant`` as
:class:`~sim_bridge.remote.PlantServer`'s router):

* **Commands in** (:meth:`PlantGateway.command`): the resource's kind is
  checked (``start_operation`` and ``set_state`` are for machines, ``move``
  for robots), then the :class:`~sim_bridge.fence.Fence` decides every start
  and move, then the backend of the resource is called.  A start the backend
  cannot make because the resource is down is answered here, the same for
  every backend (``fault`` "down at start", docs/PROTOCOL.md §13.5 rule 6).
  ``query_state`` is answered from the fence's memory, and the backend says
  only whether the resource is up.
* **Events out**: the gateway *is* the :class:`~sim_bridge.plant_api.PlantEvents`
  its backends report to.  It tells the fence first (an operation ended, a
  move arrived, a run stopped) and then emits the wire events of §13.4, in
  the order of §13.4 — so an agent that reacts at once (the virtual-time
  driver calls it back synchronously) already finds the fence up to date.

Refusals are recorded (``plant_refused``) and kept in ``stats.refused``;
a refused start or move is answered with ``command_refused`` unless the
resource is down.  The decisions, their order and the records are those of
the embedded plant before the gateway existed, so event logs of virtual-time
runs are unchanged byte for byte (tests/test_golden_hashes.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from agents.base import PlantEventIn
from agents.cell.specs import MachineSpec
from agents.protocol.actions import Command
from security.errors import ConfigurationError

from .fence import Fence
from .plant_api import Plant

__all__ = ["PlantGateway", "PlantStats"]

Emit = Callable[[PlantEventIn], None]
Record = Callable[..., None]


@dataclass
class PlantStats:
    refused: list[dict[str, Any]] = field(default_factory=list)


class Injectable(Protocol):
    """A backend that can be made to break down (the simulator: fault scenarios)."""

    def fail(self, resource: str, repair_after_s: float | None) -> None: ...


class PlantGateway:
    """Routes commands to the backend of each resource, with the fence in front of all."""

    def __init__(self, machines: Iterable[MachineSpec], robots: Iterable[str], *, emit: Emit,
                 record: Record, fence: Fence | None = None) -> None:
        self.emit = emit
        self.record = record
        self.fence = fence if fence is not None else Fence()
        self.locations: dict[str, str] = {m.id: m.location for m in machines}
        self.robot_ids: frozenset[str] = frozenset(robots)
        self.backends: dict[str, Plant] = {}
        self.stats = PlantStats()

    def attach(self, backend: Plant) -> None:
        """Route the backend's resources to it (each resource has exactly one backend)."""
        for r in sorted(backend.resources):
            if r in self.backends:
                raise ValueError(f"resource {r!r} has two backends")
            self.backends[r] = backend

    def open(self) -> list[tuple[str, str]]:
        """Once every backend is attached: the fence forgets the runs no backend reports
        (a restarted plant process); the ``(resource, task)`` pairs forgotten, recorded."""
        running: dict[str, str] = {}
        for backend in {id(b): b for b in self.backends.values()}.values():
            running.update(backend.running())
        gone = self.fence.reconcile(running)
        for resource, task in gone:
            self.record("plant_forgot", resource=resource, task=task,
                        why="not running after a restart of the plant")
        return gone

    def machine_state(self, machine: str) -> str:
        """``down``, ``busy`` or ``up`` (idle): the metrics' machine state."""
        if not self.backends[machine].query_state(machine):
            return "down"
        return "busy" if machine in self.fence.busy else "up"

    def fail(self, resource: str, repair_after_s: float | None) -> None:
        """Inject a breakdown now (fault scenarios): only a simulating backend can."""
        fail = getattr(self.backends[resource], "fail", None)
        if fail is None:
            raise ConfigurationError(f"{resource}: its backend cannot simulate a breakdown; "
                                     "inject faults only into embedded resources")
        fail(resource, repair_after_s)

    # -- commands -------------------------------------------------------------------------------
    def command(self, cmd: Command) -> None:
        handler = {"start_operation": self._start, "abort_operation": self._abort,
                   "move": self._move, "set_state": self._set_state,
                   "query_state": self._query_state}.get(cmd.command)
        if handler is None:
            self._refuse(cmd, "unknown command")
            return
        handler(cmd)

    def _refuse(self, cmd: Command, why: str, elsewhere: bool = False,
                done_at: str | None = None) -> None:
        entry = {"command": cmd.command, "resource": cmd.resource, "task": cmd.task, "why": why}
        self.stats.refused.append(entry)
        self.record("plant_refused", **entry)
        if cmd.command in ("start_operation", "move") and why not in ("machine down",
                                                                       "robot down"):
            self.command_refused(cmd.resource, cmd.task, why, elsewhere=elsewhere,
                                 done_at=done_at)

    def _start(self, cmd: Command) -> None:
        if cmd.resource not in self.locations:
            return self._refuse(cmd, "unknown machine")
        try:
            epoch = int(cmd.args.get("award_epoch", 0))
        except (TypeError, ValueError):
            return self._refuse(cmd, "award_epoch is not an integer")
        refusal = self.fence.check_start(cmd.resource, cmd.task, epoch)
        if refusal is not None:
            return self._refuse(cmd, refusal.why, refusal.elsewhere, refusal.done_at)
        if self.backends[cmd.resource].start_operation(cmd.resource, cmd.task, cmd.args):
            self.fence.started(cmd.resource, cmd.task, epoch)
            return None
        self._refuse(cmd, "machine down")
        self.emit(PlantEventIn("fault", cmd.resource, cmd.task, {"reason": "down at start"}))
        return None

    def _move(self, cmd: Command) -> None:
        if cmd.resource not in self.robot_ids:
            return self._refuse(cmd, "unknown robot")
        refusal = self.fence.check_move(cmd.resource, cmd.task)
        if refusal is not None:
            return self._refuse(cmd, refusal.why, refusal.elsewhere, refusal.done_at)
        if self.backends[cmd.resource].move(cmd.resource, cmd.task, cmd.args):
            self.fence.started(cmd.resource, cmd.task)
            return None
        self._refuse(cmd, "robot down")
        self.emit(PlantEventIn("fault", cmd.resource, cmd.task, {"reason": "down at start"}))
        return None

    def _abort(self, cmd: Command) -> None:
        backend = self.backends.get(cmd.resource)
        if backend is not None:
            backend.abort_operation(cmd.resource, cmd.task)

    def _set_state(self, cmd: Command) -> None:
        if cmd.resource not in self.locations:
            return self._refuse(cmd, "unknown machine")
        state = cmd.args.get("state")
        if state in ("up", "down"):
            self.backends[cmd.resource].set_state(cmd.resource, str(state))
        elif state in ("standby", "off", "idle"):     # power states (docs/energy.md)
            set_power = getattr(self.backends[cmd.resource], "set_power", None)
            if set_power is not None:
                set_power(cmd.resource, str(state))
        return None

    def _query_state(self, cmd: Command) -> None:
        """What an agent that was away must know (§13.3): its task's end, then up or down."""
        r, task, fence = cmd.resource, cmd.task, self.fence
        if r in self.locations:
            if task and task in fence.quality and task not in fence.running:
                self.emit(PlantEventIn("operation_done", r, task,
                                       {"quality": fence.quality[task]}))
            elif task and task not in fence.running:
                self.emit(PlantEventIn("command_refused", r, task,
                                       {"why": "not running after restart"}))
        elif r in self.robot_ids:
            delivered = fence.delivered.get(task)
            if delivered is not None and delivered[0] == r:
                self.emit(PlantEventIn("arrived", r, task, {"at": delivered[1]}))
            elif task and fence.busy.get(r) != task:
                self.emit(PlantEventIn("command_refused", r, task,
                                       {"why": "not running after restart"}))
        else:
            return
        up = self.backends[r].query_state(r)
        self.emit(PlantEventIn("state", r, "", {"up": up, "reason": "down"}))

    # -- events (sim_bridge.plant_api.PlantEvents) ----------------------------------------------
    def operation_done(self, resource: str, task: str, quality: str) -> None:
        self.fence.ended(resource, task, quality, self.locations[resource])
        self.emit(PlantEventIn("quality_result", resource, task, {"quality": quality}))
        self.emit(PlantEventIn("operation_done", resource, task, {"quality": quality}))

    def quality_result(self, resource: str, task: str, quality: str) -> None:
        self.emit(PlantEventIn("quality_result", resource, task, {"quality": quality}))

    def arrived(self, resource: str, task: str, at: str) -> None:
        self.fence.arrived(resource, task, at)
        self.emit(PlantEventIn("arrived", resource, task, {"at": at}))

    def stopped(self, resource: str, task: str, why: str) -> None:
        self.fence.stopped(resource, task)

    def fault(self, resource: str, reason: str, repair_eta_s: float | None = None) -> None:
        data: dict[str, Any] = {"reason": reason}
        if repair_eta_s is not None:
            data["repair_eta_s"] = repair_eta_s
        self.emit(PlantEventIn("fault", resource, "", data))

    def repaired(self, resource: str) -> None:
        self.emit(PlantEventIn("repaired", resource))

    def reading(self, resource: str, values: Mapping[str, float]) -> None:
        self.emit(PlantEventIn("reading", resource, "", dict(values)))

    def command_refused(self, resource: str, task: str, why: str, *, elsewhere: bool = False,
                        done_at: str | None = None, escalate: bool = False,
                        outcome_unknown: bool = False) -> None:
        data: dict[str, Any] = {"why": why, "elsewhere": elsewhere}
        if done_at is not None:
            data["done_at"] = done_at
        if escalate:
            data["escalate"] = True
        if outcome_unknown:
            data["outcome_unknown"] = True
        self.emit(PlantEventIn("command_refused", resource, task, data))
