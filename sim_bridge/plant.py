"""The embedded plant: a discrete-event simulation of the cell on SimPy.

It implements the plant interface (docs/architecture.md) — commands
``start_operation``, ``abort_operation``, ``move``, ``set_state``; events
``operation_done``, ``fault``, ``repaired``, ``arrived``, ``reading``,
``quality_result`` — and knows nothing of agents or messages: commands come
in through :meth:`EmbeddedPlant.command`, events go out through ``emit``.

Randomness (breakdowns, repairs, scrap, sensor noise) comes from one
seeded :class:`random.Random` per concern, derived from the run seed, so
adding a sensor does not shift the breakdown times.

The plant is also the last line of defence for "nothing twice" (docs/architecture.md, Invariants):
it refuses to start an operation task that it has already completed
successfully, a task that is in progress on another machine (the parts are
there), a start carrying an award epoch older than one already started for
that task (a stale winner, fenced), and a second operation on a busy
machine.  Each refusal is recorded and reported as ``command_refused``.

``query_state`` lets an agent that restarted from its journal catch up:
the plant re-sends the end of the queried task (``operation_done`` or
``arrived``) if it ended while the agent was away, ``command_refused`` if
it is no longer running (aborted), and then ``state`` (up or down).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Callable

import simpy

from agents.base import PlantEventIn
from agents.cell.specs import MachineSpec
from agents.protocol.actions import Command

Emit = Callable[[PlantEventIn], None]
Record = Callable[..., None]


@dataclass
class _MachineState:
    spec: MachineSpec
    up: bool = True
    task: str = ""
    proc: Any = None
    busy_s: float = 0.0
    down_s: float = 0.0
    down_since: float = 0.0
    faults: int = 0


@dataclass
class _RobotState:
    id: str
    up: bool = True
    task: str = ""
    proc: Any = None
    down_since: float = 0.0
    faults: int = 0
    arrived: dict[str, str] = field(default_factory=dict)   # task -> destination


@dataclass
class PlantStats:
    refused: list[dict[str, Any]] = field(default_factory=list)


class EmbeddedPlant:
    """SimPy model of machines and robots, driven by agent commands."""

    def __init__(self, env: simpy.Environment, machines: list[MachineSpec], robots: list[str], *,
                 seed: int, emit: Emit, record: Record, sensor_interval_s: float = 60.0,
                 breakdowns: bool = True) -> None:
        self.env = env
        self.emit = emit
        self.record = record
        self.machines = {m.id: _MachineState(m) for m in machines}
        self.robots = {r: _RobotState(r) for r in robots}
        self.completed_ok: dict[str, str] = {}     # task -> location of its parts
        self.in_progress: dict[str, str] = {}      # task -> machine running it
        self.started_epoch: dict[str, int] = {}    # task -> highest award epoch started
        self.last_quality: dict[str, str] = {}     # task -> quality of its last run
        self.stats = PlantStats()
        self._rng_fail = random.Random(f"{seed}/breakdowns")
        self._rng_quality = random.Random(f"{seed}/quality")
        self._rng_sensor = random.Random(f"{seed}/sensors")
        self.sensor_interval_s = sensor_interval_s
        for m in self.machines.values():
            if breakdowns and m.spec.mtbf_s and m.spec.mttr_s:
                env.process(self._breakdowns(m))
            if sensor_interval_s > 0:
                env.process(self._sensor(m))

    # -- commands ---------------------------------------------------------------------------
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
        """``elsewhere``: the task is done or running on another resource (a stale winner);
        ``done_at``: it is done, and its parts are at this location."""
        entry = {"command": cmd.command, "resource": cmd.resource, "task": cmd.task, "why": why}
        self.stats.refused.append(entry)
        self.record("plant_refused", **entry)
        if cmd.command in ("start_operation", "move") and why not in ("machine down",
                                                                       "robot down"):
            data: dict[str, Any] = {"why": why, "elsewhere": elsewhere}
            if done_at is not None:
                data["done_at"] = done_at
            self.emit(PlantEventIn("command_refused", cmd.resource, cmd.task, data))

    def _start(self, cmd: Command) -> None:
        m = self.machines.get(cmd.resource)
        if m is None:
            return self._refuse(cmd, "unknown machine")
        if cmd.task in self.completed_ok:
            return self._refuse(cmd, "task already completed (idempotency key)", True,
                                self.completed_ok[cmd.task])
        elsewhere = self.in_progress.get(cmd.task)
        if elsewhere is not None:
            return self._refuse(cmd, f"task in progress on {elsewhere}", True)
        epoch = int(cmd.args.get("award_epoch", 0))
        if epoch < self.started_epoch.get(cmd.task, 0):
            return self._refuse(cmd, f"stale award epoch {epoch} (epoch "
                                     f"{self.started_epoch[cmd.task]} already started)", True)
        if m.task:
            return self._refuse(cmd, f"machine busy with {m.task}")
        if not m.up:
            self._refuse(cmd, "machine down")
            self.emit(PlantEventIn("fault", m.spec.id, cmd.task, {"reason": "down at start"}))
            return None
        m.task = cmd.task
        self.in_progress[cmd.task] = m.spec.id
        self.started_epoch[cmd.task] = epoch
        self.record("op_start", machine=m.spec.id, task=cmd.task, order=cmd.args.get("order", ""),
                    epoch=cmd.args.get("award_epoch", 0), setup_s=cmd.args.get("setup_s", 0.0))
        m.proc = self.env.process(self._operate(m, cmd))
        return None

    def _operate(self, m: _MachineState, cmd: Command):  # noqa: ANN202 - SimPy process
        duration = float(cmd.args.get("duration_s", 0.0))
        started = self.env.now
        try:
            yield self.env.timeout(duration)
        except simpy.Interrupt as why:
            m.busy_s += self.env.now - started
            self.record("op_abort", machine=m.spec.id, task=cmd.task, why=str(why.cause))
            m.task, m.proc = "", None
            self.in_progress.pop(cmd.task, None)
            return
        m.busy_s += duration
        scrap = self._rng_quality.random() < m.spec.scrap_rate
        quality = "scrap" if scrap else "ok"
        if not scrap:
            self.completed_ok[cmd.task] = m.spec.location
        self.record("op_done", machine=m.spec.id, task=cmd.task, order=cmd.args.get("order", ""),
                    quality=quality)
        m.task, m.proc = "", None
        self.in_progress.pop(cmd.task, None)
        self.last_quality[cmd.task] = quality
        self.emit(PlantEventIn("quality_result", m.spec.id, cmd.task, {"quality": quality}))
        self.emit(PlantEventIn("operation_done", m.spec.id, cmd.task, {"quality": quality}))

    def _abort(self, cmd: Command) -> None:
        unit: _MachineState | _RobotState | None = (self.machines.get(cmd.resource)
                                                   or self.robots.get(cmd.resource))
        if unit is not None and unit.proc is not None and unit.task == cmd.task:
            unit.proc.interrupt("aborted")

    def _move(self, cmd: Command) -> None:
        r = self.robots.get(cmd.resource)
        if r is None:
            return self._refuse(cmd, "unknown robot")
        done = next((rs.arrived[cmd.task] for rs in self.robots.values()
                     if cmd.task in rs.arrived), None)
        if done is not None:
            return self._refuse(cmd, "move already done (idempotency key)", True, done)
        moving = next((rs.id for rs in self.robots.values() if rs.task == cmd.task), None)
        if moving is not None and moving != r.id:
            return self._refuse(cmd, f"move in progress on {moving}", True)
        if r.task:
            return self._refuse(cmd, f"robot busy with {r.task}")
        if not r.up:
            self._refuse(cmd, "robot down")
            self.emit(PlantEventIn("fault", r.id, cmd.task, {"reason": "down at start"}))
            return None
        r.task = cmd.task
        self.record("move_start", robot=cmd.resource, task=cmd.task,
                    origin=cmd.args.get("origin", ""), destination=cmd.args.get("destination", ""))
        r.proc = self.env.process(self._drive(r, cmd))
        return None

    def _drive(self, r: _RobotState, cmd: Command):  # noqa: ANN202
        dest = str(cmd.args.get("destination", ""))
        try:
            yield self.env.timeout(float(cmd.args.get("duration_s", 0.0)))
        except simpy.Interrupt as why:
            self.record("move_abort", robot=r.id, task=cmd.task, why=str(why.cause))
            r.task, r.proc = "", None
            return
        r.task, r.proc = "", None
        r.arrived[cmd.task] = dest
        self.record("arrived", robot=r.id, task=cmd.task, at=dest)
        self.emit(PlantEventIn("arrived", r.id, cmd.task, {"at": dest}))

    def _query_state(self, cmd: Command) -> None:
        """Re-send what an agent that was away must know: down, or its task's end."""
        m = self.machines.get(cmd.resource)
        if m is not None:
            if cmd.task and cmd.task in self.last_quality and cmd.task not in self.in_progress:
                q = self.last_quality[cmd.task]
                self.emit(PlantEventIn("operation_done", m.spec.id, cmd.task, {"quality": q}))
            elif cmd.task and cmd.task not in self.in_progress:
                # never ran to the end (aborted by a fault while the agent was away)
                self.emit(PlantEventIn("command_refused", m.spec.id, cmd.task,
                                       {"why": "not running after restart"}))
            self.emit(PlantEventIn("state", m.spec.id, "", {"up": m.up, "reason": "down"}))
            return
        r = self.robots.get(cmd.resource)
        if r is not None:
            if cmd.task in r.arrived:
                self.emit(PlantEventIn("arrived", r.id, cmd.task, {"at": r.arrived[cmd.task]}))
            elif cmd.task and r.task != cmd.task:
                self.emit(PlantEventIn("command_refused", r.id, cmd.task,
                                       {"why": "not running after restart"}))
            self.emit(PlantEventIn("state", r.id, "", {"up": r.up, "reason": "down"}))

    def _set_state(self, cmd: Command) -> None:
        m = self.machines.get(cmd.resource)
        if m is None:
            return self._refuse(cmd, "unknown machine")
        if cmd.args.get("state") == "down" and m.up:
            self._go_down(m, "set_state")
        elif cmd.args.get("state") == "up" and not m.up:
            self._go_up(m)
        return None

    # -- failures and sensors ------------------------------------------------------------------
    def _go_down(self, m: _MachineState, reason: str, repair_eta_s: float | None = None) -> None:
        m.up = False
        m.faults += 1
        m.down_since = self.env.now
        if m.proc is not None:
            m.proc.interrupt("fault")
        self.record("fault", machine=m.spec.id, reason=reason)
        # The repair estimate a maintenance system would give: the injected repair
        # time, else the machine's MTTR; the real draw stays hidden from the agents.
        eta = repair_eta_s if repair_eta_s is not None else m.spec.mttr_s
        data: dict[str, Any] = {"reason": reason}
        if eta is not None:
            data["repair_eta_s"] = eta
        self.emit(PlantEventIn("fault", m.spec.id, "", data))

    def _go_up(self, m: _MachineState) -> None:
        m.up = True
        m.down_s += self.env.now - m.down_since
        self.record("repaired", machine=m.spec.id)
        self.emit(PlantEventIn("repaired", m.spec.id))

    def fail(self, resource: str, repair_after_s: float | None) -> None:
        """Inject a breakdown now (fault scenarios); repaired after ``repair_after_s``."""
        r = self.robots.get(resource)
        if r is not None:
            return self._fail_robot(r, repair_after_s)
        m = self.machines[resource]
        if not m.up:
            return None
        self._go_down(m, "injected", repair_after_s)
        if repair_after_s is not None:
            def repair(_: Any) -> None:
                if not m.up:
                    self._go_up(m)
            self.env.timeout(repair_after_s).callbacks.append(repair)
        return None

    def _fail_robot(self, r: _RobotState, repair_after_s: float | None) -> None:
        if not r.up:
            return
        r.up = False
        r.faults += 1
        r.down_since = self.env.now
        if r.proc is not None:
            r.proc.interrupt("fault")
        self.record("fault", robot=r.id, reason="injected")
        data: dict[str, Any] = {"reason": "injected"}
        if repair_after_s is not None:
            data["repair_eta_s"] = repair_after_s
        self.emit(PlantEventIn("fault", r.id, "", data))
        if repair_after_s is not None:
            def repair(_: Any) -> None:
                r.up = True
                self.record("repaired", robot=r.id)
                self.emit(PlantEventIn("repaired", r.id))
            self.env.timeout(repair_after_s).callbacks.append(repair)

    def _breakdowns(self, m: _MachineState):  # noqa: ANN202 - SimPy process
        assert m.spec.mtbf_s and m.spec.mttr_s
        while True:
            yield self.env.timeout(self._rng_fail.expovariate(1.0 / m.spec.mtbf_s))
            if not m.up:
                continue
            self._go_down(m, "breakdown")
            yield self.env.timeout(self._rng_fail.expovariate(1.0 / m.spec.mttr_s))
            if not m.up:
                self._go_up(m)

    def _sensor(self, m: _MachineState):  # noqa: ANN202 - SimPy process
        while True:
            yield self.env.timeout(self.sensor_interval_s)
            base = 55.0 if m.task else 30.0
            temp = round(base + self._rng_sensor.gauss(0.0, 1.5), 2)
            vib = round((2.0 if m.task else 0.3) + abs(self._rng_sensor.gauss(0.0, 0.2)), 3)
            self.emit(PlantEventIn("reading", m.spec.id, "", {"temperature_c": temp,
                                                               "vibration_mm_s": vib}))
