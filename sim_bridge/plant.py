"""The embedded plant: a discrete-event simulation of the cell on SimPy.

:class:`EmbeddedBackend` is the ``embedded`` backend of the plant interface
(sim_bridge/plant_api.py): it runs operations and moves for as long as they
take, breaks machines down and repairs them, draws scrap and sensor noise, and
reports through the :class:`~sim_bridge.plant_api.PlantEvents` it is given.  It
knows nothing of agents or messages, and nothing of the fence: the gateway in
front of it (sim_bridge/gateway.py) refuses what must not start (ADR 13) and
answers ``query_state``.

:class:`EmbeddedPlant` is that gateway with one embedded backend for every
resource and the fence in memory — the plant of the virtual-time driver and of
the dispatch-rule baselines: commands in through :meth:`EmbeddedPlant.command`,
events out through ``emit``.  ``autocell plant`` builds the same two pieces with
the fence journalled (sim_bridge/remote.py).

Randomness (breakdowns, repairs, scrap, sensor noise) comes from one
seeded :class:`random.Random` per concern, derived from the run seed, so
adding a sensor does not shift the breakdown times.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import simpy

from agents.cell.specs import MachineSpec, PlantRoutes

from .degradation import DegradingMachine, attach
from .fence import Fence
from .gateway import Emit, PlantGateway, PlantStats, Record
from .plant_api import PlantEvents

__all__ = ["EmbeddedBackend", "EmbeddedPlant", "PlantStats"]


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
    power: str = "idle"         # idle, standby, off, wake (sim_bridge/energy.py)
    awake_at: float = 0.0       # while waking: when the machine is idle again
    wakes: int = 0              # bumped on every power change, so a stale wake-up is ignored
    woken_from: str = ""        # while waking: the state it sleeps in (standby, off)
    slept: str = ""             # while down: the state it slept in at the fault, back on repair
    op_at: float | None = None  # when the running operation started (wear: degradation.py)


@dataclass
class _RobotState:
    id: str
    up: bool = True
    task: str = ""
    proc: Any = None
    down_since: float = 0.0
    faults: int = 0


class EmbeddedBackend:
    """SimPy model of machines and robots: the ``embedded`` backend (sim_bridge/plant_api.py).

    It runs what the gateway lets through and reports through ``events``; the
    fence's memory is not here but in front of it (sim_bridge/fence.py)."""

    def __init__(self, env: simpy.Environment, machines: list[MachineSpec], robots: list[str], *,
                 seed: int, events: PlantEvents, record: Record,
                 sensor_interval_s: float = 60.0, breakdowns: bool = True,
                 routes: PlantRoutes | None = None) -> None:
        self.env = env
        self.routes = routes
        self.events = events
        self.record = record
        self.machines = {m.id: _MachineState(m) for m in machines}
        self.robots = {r: _RobotState(r) for r in robots}
        self.resources = frozenset(self.machines) | frozenset(self.robots)
        self._rng_fail = random.Random(f"{seed}/breakdowns")
        self._rng_quality = random.Random(f"{seed}/quality")
        self._rng_sensor = random.Random(f"{seed}/sensors")
        self.sensor_interval_s = sensor_interval_s
        for m in self.machines.values():
            if breakdowns and m.spec.mtbf_s and m.spec.mttr_s:
                env.process(self._breakdowns(m))
            if sensor_interval_s > 0 and m.spec.degradation is None:
                env.process(self._sensor(m))
        # machines with a degradation block wear, fail and report their own readings
        self.degrading: dict[str, DegradingMachine] = attach(self, seed)
        self.maintenance: Any = None    # a maintenance policy's controller, once attached
        self.recorded: Any = None       # a recorded run's verdicts, drives (ops/recorded_plant.py)

    # -- commands (the fence has passed them) -------------------------------------------------
    def running(self) -> dict[str, str]:
        units: list[_MachineState | _RobotState] = [*self.machines.values(), *self.robots.values()]
        return {(u.spec.id if isinstance(u, _MachineState) else u.id): u.task
                for u in units if u.task}

    def query_state(self, resource: str) -> bool:
        unit = self.machines.get(resource) or self.robots[resource]
        return unit.up

    def start_operation(self, resource: str, task: str, args: Mapping[str, Any]) -> bool:
        m = self.machines[resource]
        if not m.up:
            return False
        if m.power != "idle":
            return self._start_asleep(m, task, args)
        m.task = task
        self.record("op_start", machine=m.spec.id, task=task, order=args.get("order", ""),
                    epoch=args.get("award_epoch", 0), setup_s=args.get("setup_s", 0.0))
        m.proc = self.env.process(self._operate(m, task, args))
        return True

    def _operate(self, m: _MachineState, task: str, args: Mapping[str, Any]):  # noqa: ANN202
        duration = float(args.get("duration_s", 0.0))
        started = m.op_at = self.env.now
        try:
            yield self.env.timeout(duration)
        except simpy.Interrupt as why:
            m.busy_s += self.env.now - started
            m.op_at = None
            self.record("op_abort", machine=m.spec.id, task=task, why=str(why.cause))
            m.task, m.proc = "", None
            self.events.stopped(m.spec.id, task, str(why.cause))
            return
        m.busy_s += duration
        m.op_at = None
        scrap = self._rng_quality.random() < m.spec.scrap_rate
        quality = "scrap" if scrap else "ok"
        if self.recorded is not None:
            quality = self.recorded.quality(m.spec.id, task, quality)
        self.record("op_done", machine=m.spec.id, task=task, order=args.get("order", ""),
                    quality=quality)
        m.task, m.proc = "", None
        self.events.operation_done(m.spec.id, task, quality)

    def _start_asleep(self, m: _MachineState, task: str, args: Mapping[str, Any]) -> bool:
        """An operation for a machine in standby or off: it wakes first, and the operation
        starts (and is logged) when it is awake — late by the wake-up, which an
        energy-aware agent plans for by waking it in time."""
        delay_s = self._wake(m)
        m.task = task

        def late_start():  # noqa: ANN202 - SimPy process
            try:
                yield self.env.timeout(delay_s)
            except simpy.Interrupt as why:
                self.record("op_abort", machine=m.spec.id, task=task, why=str(why.cause))
                m.task, m.proc = "", None
                self.events.stopped(m.spec.id, task, str(why.cause))
                return
            self.record("op_start", machine=m.spec.id, task=task, order=args.get("order", ""),
                        epoch=args.get("award_epoch", 0), setup_s=args.get("setup_s", 0.0))
            m.proc = self.env.process(self._operate(m, task, args))

        m.proc = self.env.process(late_start())
        return True

    # -- power states (energy: the energy-aware machine agents, docs/energy.md) -----------
    def set_power(self, resource: str, state: str) -> bool:
        """Put an up, idle machine in ``standby`` or ``off`` (a machine in standby too in
        ``off``), or wake it (``idle``).

        Logged as ``power_state`` events, which only this hook (and the repair of a machine
        that broke down asleep, :meth:`_go_up`) writes, so a run that never calls it keeps
        its event log.  Waking takes the machine's wake-up time from the state it sleeps in
        (``wake`` state, then ``idle``).  A machine that breaks down asleep or waking is
        down at idle power and comes back from the repair in the state it slept in: its
        wake-up is still to pay, when it is next woken (ADR 89).  Returns False when the
        machine cannot: it is down, working, or already in that state."""
        m = self.machines[resource]
        if state not in ("standby", "off", "idle"):
            raise ValueError(f"unknown power state {state!r}: use standby, off or idle")
        if not m.up or m.task or m.power == state:
            return False
        if state == "idle":
            if m.power == "wake":
                return False
            self._wake(m)
            return True
        if m.power != "idle" and (m.power, state) != ("standby", "off"):
            return False            # standby is entered from idle, off from idle or standby
        m.power = state
        m.wakes += 1
        self.record("power_state", machine=m.spec.id, state=state)
        return True

    def _wake(self, m: _MachineState) -> float:
        """Start waking ``m`` (if not already); the seconds until it is idle."""
        if m.power == "wake":
            return max(0.0, m.awake_at - self.env.now)
        asleep = m.power
        power = m.spec.power
        wake_s = power.wake_s.get(asleep, 0.0) if power is not None else 0.0
        m.power, m.awake_at, m.woken_from = "wake", self.env.now + wake_s, asleep
        m.wakes += 1
        token = m.wakes
        self.record("power_state", machine=m.spec.id, state="wake", **{"from": asleep})

        def awake(_: Any) -> None:
            if m.wakes == token and m.power == "wake":
                m.power = "idle"
                self.record("power_state", machine=m.spec.id, state="idle")
        if wake_s > 0:
            self.env.timeout(wake_s).callbacks.append(awake)
        else:
            awake(None)
        return wake_s

    def abort_operation(self, resource: str, task: str) -> None:
        unit: _MachineState | _RobotState | None = (self.machines.get(resource)
                                                   or self.robots.get(resource))
        if unit is not None and unit.proc is not None and unit.task == task:
            unit.proc.interrupt("aborted")

    def move(self, resource: str, task: str, args: Mapping[str, Any]) -> bool:
        r = self.robots[resource]
        if not r.up:
            return False
        r.task = task
        origin, dest = str(args.get("origin", "")), str(args.get("destination", ""))
        if self.routes is None:
            # No route graph: the move takes what the robot agent computed.
            duration_s = float(args.get("duration_s", 0.0))
            self.record("move_start", robot=resource, task=task, origin=origin, destination=dest)
        else:
            # A route graph: the robot drives it, and the log says where and how long.
            drive = self.routes.drive(resource, str(args.get("from", origin)), origin, dest)
            duration_s = drive.duration_s
            self.record("move_start", robot=resource, task=task, origin=origin, destination=dest,
                        route=drive.node_ids, length_m=round(drive.length_m, 6),
                        drive_s=round(duration_s, 6))
        if self.recorded is not None:
            duration_s = self.recorded.drive_s(resource, task, str(args.get("from", origin)),
                                               duration_s)
        r.proc = self.env.process(self._drive(r, task, dest, duration_s))
        return True

    def _drive(self, r: _RobotState, task: str, dest: str, duration_s: float):  # noqa: ANN202
        try:
            yield self.env.timeout(duration_s)
        except simpy.Interrupt as why:
            self.record("move_abort", robot=r.id, task=task, why=str(why.cause))
            r.task, r.proc = "", None
            self.events.stopped(r.id, task, str(why.cause))
            return
        r.task, r.proc = "", None
        self.record("arrived", robot=r.id, task=task, at=dest)
        self.events.arrived(r.id, task, dest)

    def set_state(self, resource: str, state: str) -> None:
        m = self.machines[resource]
        if state == "down" and m.up:
            self._go_down(m, "set_state")
        elif state == "up" and not m.up:
            self._go_up(m)

    # -- failures and sensors ------------------------------------------------------------------
    def _go_down(self, m: _MachineState, reason: str, repair_eta_s: float | None = None) -> None:
        m.up = False
        if m.power != "idle":
            # asleep or waking: the repair hands it back in the state it slept in, so its
            # wake-up is still to pay (ADR 89); meanwhile it is down, at idle power
            m.slept = m.woken_from if m.power == "wake" else m.power
            m.power = "idle"
            m.wakes += 1
        m.faults += 1
        m.down_since = self.env.now
        if m.proc is not None:
            m.proc.interrupt("fault")
        self.record("fault", machine=m.spec.id, reason=reason)
        # The repair estimate a maintenance system would give: the injected repair
        # time, else the machine's MTTR; the real draw stays hidden from the agents.
        eta = repair_eta_s if repair_eta_s is not None else m.spec.mttr_s
        self.events.fault(m.spec.id, reason, eta)

    def _go_up(self, m: _MachineState) -> None:
        m.up = True
        m.down_s += self.env.now - m.down_since
        self.record("repaired", machine=m.spec.id)
        if m.slept:
            m.power, m.slept = m.slept, ""
            m.wakes += 1
            self.record("power_state", machine=m.spec.id, state=m.power)
        self.events.repaired(m.spec.id)

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
        self.events.fault(r.id, "injected", repair_after_s)
        if repair_after_s is not None:
            def repair(_: Any) -> None:
                r.up = True
                self.record("repaired", robot=r.id)
                self.events.repaired(r.id)
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
            self.events.reading(m.spec.id, {"temperature_c": temp, "vibration_mm_s": vib})


class EmbeddedPlant(PlantGateway):
    """The gateway with one :class:`EmbeddedBackend` for every resource, fence in memory
    unless one is given: the plant of the virtual-time driver."""

    def __init__(self, env: simpy.Environment, machines: list[MachineSpec], robots: list[str], *,
                 seed: int, emit: Emit, record: Record, sensor_interval_s: float = 60.0,
                 breakdowns: bool = True, fence: Fence | None = None,
                 routes: PlantRoutes | None = None) -> None:
        super().__init__(machines, robots, emit=emit, record=record, fence=fence)
        self.env = env
        self.backend = EmbeddedBackend(env, machines, robots, seed=seed, events=self,
                                       record=record, sensor_interval_s=sensor_interval_s,
                                       breakdowns=breakdowns, routes=routes)
        self.attach(self.backend)
        self.open()

    @property
    def machines(self) -> dict[str, _MachineState]:
        return self.backend.machines

    @property
    def robots(self) -> dict[str, _RobotState]:
        return self.backend.robots

    @property
    def completed_ok(self) -> dict[str, str]:
        """Task -> location of its parts, for every task that ended ok (the fence's)."""
        return self.fence.completed

    @property
    def started_epoch(self) -> dict[str, int]:
        return self.fence.started_epoch
