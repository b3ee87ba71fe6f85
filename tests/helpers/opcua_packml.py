"""PackML units (OPC 30050) on asyncua's server: the asyncua emulator's ``--packml`` units.

The second stack's twin of ``tests/opcua/packml_unit.mjs``; both follow
``tests/opcua/CONTRACT.md``, "PackML units", so that autocell's ``packml`` profile is tested
against two OPC UA stacks not written here.

Theory of operation
-------------------
* One ``PackMLBaseObjectType`` instance per ``--packml`` id, ``Objects/EMU:P``, from the
  PackML nodeset shipped by node-opcua-nodesets.  asyncua's ``instantiate`` creates the
  members an instance declaration declares, not the optional members of the declaration's
  own type (FreeOpcUa/opcua-asyncio#653, as for the Machinery Jobs machines in
  :mod:`tests.helpers.opcua_machine`), so the members the profile uses are copied from the
  state machine, status and admin types by :func:`~tests.helpers.opcua_machine.add_members`:
  BaseStateMachine/Abort and Clear, MachineState/Stop and Reset, ExecuteState/Start, Reset,
  Hold and Unhold, Status/Parameter, Admin/ProdProcessedCount and ProdDefectiveCount.
* The rules are :class:`UnitRules`, no OPC UA: the three state machines' states held in
  Python and changed synchronously, as the node-opcua unit's ``setState`` does, so a command
  always sees the state every earlier command left.  Each change is *published* (the
  ``CurrentState`` and its ``Id`` written) by one writer task per unit, in the order the
  changes were made: a subscribed client sees every state, in order, never a later one
  before an earlier one.
* It powers up reset: Cleared / Running / Idle.  ``Start`` in Idle: descriptor ID 1's Name
  is the job id, ID 2's Value the duration (cell seconds); Starting, Execute for
  duration / speed wall seconds, Completing, then the processed counter moves and the unit
  is Complete (logged "ended").  Every acting state lasts :data:`ACT_S` (20 ms wall).  A
  Start in another state fails with BadInvalidState, one whose job id was ever started
  (this life or the job log) or that has none with BadInvalidArgument, one on a
  ``--refuse-start`` unit with BadUserAccessDenied; each is logged "refused".
* ExecuteState/Reset: Complete -> Resetting -> Idle.  Abort: -> Aborting -> Aborted (a
  running job logged "aborted", why "Abort").  Clear: Aborted -> Clearing -> Stopped
  (MachineState set before BaseStateMachine).  MachineState/Stop: -> Stopping -> Stopped
  (why "Stop").  MachineState/Reset: Stopped -> Resetting -> Idle.  Hold: Execute ->
  Holding -> Held, the job's clock paused; Unhold: -> Unholding -> Execute.  Another
  command in the wrong state fails with BadInvalidState.
* The processed counter is retentive: a restarted unit starts at the number of "ended"
  lines for it in the job log.  A killed unit loses its running job and its
  Status/Parameter.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from asyncua import Node, Server, ua

from tests.helpers.opcua_jobs import JobLog
from tests.helpers.opcua_machine import DEGREE_CELSIUS, add_members

PACKML_URI = "http://opcfoundation.org/UA/PackML/"
NODESET_FILE = "Opc.Ua.PackML.NodeSet2.xml"
BASE_OBJECT_TYPE = 6                 # PackMLBaseObjectType
ACT_S = 0.020                        # every acting state lasts 20 ms wall (CONTRACT.md)
JOB_PARAMETER = 1
DURATION_PARAMETER = 2
ACTIVE = frozenset({"Starting", "Execute", "Completing", "Holding", "Held", "Unholding"})

Later = Callable[[float, Callable[[], None]], asyncio.TimerHandle]


class Refused(Exception):
    """A command the unit refuses, with the status its method answers."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


@dataclass
class _Job:
    job_id: str
    remaining_s: float
    since: float | None = None
    timer: asyncio.TimerHandle | None = None


@dataclass
class UnitRules:
    """One unit's three state machines and its job, without OPC UA (see the module doc).

    ``publish(which, state)`` is told every change in order; ``counted(n)`` every new value
    of the processed counter; ``loaded(params)`` the Start's parameters."""

    unit: str
    log: JobLog
    seen: set[str]                   # job ids ever started, shared by the server's units
    speed: float
    refuse_start: bool
    processed: int
    later: Later
    publish: Callable[[str, str], None]
    counted: Callable[[int], None]
    loaded: Callable[[list[Any]], None]
    state: dict[str, str] = field(default_factory=lambda: {
        "base": "Cleared", "machine": "Running", "execute": "Idle"})
    job: _Job | None = None
    timer: asyncio.TimerHandle | None = None

    def set(self, which: str, name: str) -> None:
        self.state[which] = name
        self.publish(which, name)

    def expect(self, which: str, wanted: str) -> None:
        if self.state[which] != wanted or (which != "base" and self.state["base"] != "Cleared"):
            raise Refused(ua.StatusCodes.BadInvalidState)

    def act(self, which: str, acting: str, then: str,
            after: Callable[[], None] | None = None) -> None:
        """An acting state, then ``then`` after :data:`ACT_S`."""
        self.set(which, acting)
        if self.timer is not None:
            self.timer.cancel()

        def done() -> None:
            self.timer = None
            self.set(which, then)
            if after is not None:
                after()
        self.timer = self.later(ACT_S, done)

    # -- the commands ----------------------------------------------------------------------
    def start(self, params: list[Any]) -> None:
        def find(i: int) -> Any:
            return next((d for d in params if d is not None and getattr(d, "ID", None) == i),
                        None)
        job = find(JOB_PARAMETER)
        job_id = str(getattr(job, "Name", "") or "")
        duration = find(DURATION_PARAMETER)
        duration_s = float(getattr(duration, "Value", 0.0) or 0.0)

        def refuse(why: str, status: int) -> Refused:
            self.log.write(self.unit, job_id, "refused", why=why)
            return Refused(status)
        if self.refuse_start:
            raise refuse("refuse-start", ua.StatusCodes.BadUserAccessDenied)
        where = "/".join(self.state[k] for k in ("base", "machine", "execute"))
        if where != "Cleared/Running/Idle":
            raise refuse(f"state {where}", ua.StatusCodes.BadInvalidState)
        if not job_id:
            raise refuse("no job id (descriptor 1)", ua.StatusCodes.BadInvalidArgument)
        if job_id in self.seen:
            raise refuse("duplicate job id", ua.StatusCodes.BadInvalidArgument)
        self.seen.add(job_id)
        self.log.write(self.unit, job_id, "started")
        self.loaded(params)
        self.job = _Job(job_id, max(0.0, duration_s) / self.speed)
        self.act("execute", "Starting", "Execute", self._run)

    def _run(self) -> None:
        job = self.job
        if job is None:
            return
        job.since = time.monotonic()

        def time_up() -> None:
            job.timer = None
            self.act("execute", "Completing", "Complete", lambda: self._complete(job))
        job.timer = self.later(job.remaining_s, time_up)

    def _complete(self, job: _Job) -> None:
        self.processed += 1
        self.log.write(self.unit, job.job_id, "ended")
        self.job = None
        self.counted(self.processed)

    def reset_complete(self) -> None:
        self.expect("execute", "Complete")
        self.act("execute", "Resetting", "Idle")

    def hold(self) -> None:
        self.expect("execute", "Execute")
        job = self.job
        if job is not None and job.timer is not None and job.since is not None:
            job.timer.cancel()
            job.timer = None
            job.remaining_s = max(0.0, job.remaining_s - (time.monotonic() - job.since))
        self.act("execute", "Holding", "Held")

    def unhold(self) -> None:
        self.expect("execute", "Held")
        self.act("execute", "Unholding", "Execute", self._run)

    def _drop(self, why: str) -> None:
        """The running job, if any, stops for good."""
        if self.job is None:
            return
        if self.job.timer is not None:
            self.job.timer.cancel()
        if self.state["execute"] in ACTIVE:
            self.log.write(self.unit, self.job.job_id, "aborted", why=why)
        self.job = None

    def abort(self) -> None:
        if self.state["base"] in ("Aborting", "Aborted"):
            raise Refused(ua.StatusCodes.BadInvalidState)
        self._drop("Abort")
        self.act("base", "Aborting", "Aborted")

    def clear(self) -> None:
        self.expect("base", "Aborted")
        # the inner machine first: a client never sees Cleared over a stale Running
        self.act("machine", "Clearing", "Stopped")
        self.set("base", "Cleared")

    def stop(self) -> None:
        self.expect("machine", "Running")
        self._drop("Stop")
        self.act("machine", "Stopping", "Stopped")

    def reset_stopped(self) -> None:
        self.expect("machine", "Stopped")
        self.set("machine", "Running")
        self.act("execute", "Resetting", "Idle")

    def shutdown(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if self.job is not None and self.job.timer is not None:
            self.job.timer.cancel()


async def _state_ids(type_node: Node) -> dict[str, ua.NodeId]:
    """The state objects of a state machine type, by name (for ``CurrentState/Id``)."""
    return {d.BrowseName.Name: d.NodeId for d in await type_node.get_children_descriptions()
            if d.NodeClass == ua.NodeClass.Object}


async def _members(node: Node, names: list[str]) -> dict[str, Node]:
    """Copy ``names`` from the node's type, or the nearest supertype declaring them."""
    type_node = Node(node.session, await node.read_type_definition())
    out: dict[str, Node] = {}
    while names:
        declared = {d.BrowseName.Name for d in await type_node.get_children_descriptions()}
        here = [n for n in names if n in declared]
        if here:
            out.update(await add_members(node, type_node, here))
        names = [n for n in names if n not in here]
        if names:
            parent = await type_node.read_super_type()
            if parent is None:
                raise RuntimeError(f"{node.nodeid}'s type declares no {names}")
            type_node = parent
    return out


class PackMLUnit:
    """One PackML unit in asyncua's address space (see the module doc)."""

    def __init__(self, server: Server, emu: int, unit_id: str, log: JobLog, seen: set[str], *,
                 speed: float, refuse_start: bool, processed: int, seed: int) -> None:
        self.server, self.emu, self.id = server, emu, unit_id
        loop = asyncio.get_running_loop()
        self.rules = UnitRules(unit_id, log, seen, speed, refuse_start, processed,
                               later=loop.call_later, publish=self._queue_state,
                               counted=self._queue_count, loaded=self._queue_parameter)
        self._writes: asyncio.Queue[Callable[[], Awaitable[None]]] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self._rng = random.Random(f"{seed}:{unit_id}")
        self._temperature = 20.0 + self._rng.random() * 10.0
        self._current: dict[str, Node] = {}
        self._ids: dict[str, dict[str, ua.NodeId]] = {}

    def _nid(self, path: str) -> ua.NodeId:
        return ua.NodeId(f"{self.id}{path}", self.emu)

    async def build(self, p: int) -> None:
        objects = self.server.nodes.objects
        unit = await objects.add_object(self._nid(""), ua.QualifiedName(self.id, self.emu),
                                        objecttype=ua.NodeId(BASE_OBJECT_TYPE, p))
        base = await unit.get_child(f"{p}:BaseStateMachine")
        machine = await base.get_child(f"{p}:MachineState")
        execute = await machine.get_child(f"{p}:ExecuteState")
        methods = {"base": await _members(base, ["Abort", "Clear"]),
                   "machine": await _members(machine, ["Stop", "Reset"]),
                   "execute": await _members(execute, ["Start", "Reset", "Hold", "Unhold"])}
        status = await _members(await unit.get_child(f"{p}:Status"), ["Parameter"])
        admin = await _members(await unit.get_child(f"{p}:Admin"),
                               ["ProdProcessedCount", "ProdDefectiveCount"])
        self._parameter = status["Parameter"]
        self._processed, self._defective = admin["ProdProcessedCount"], admin["ProdDefectiveCount"]
        self._count_type = ua.get_type(await self._processed.read_data_type())
        for which, node in (("base", base), ("machine", machine), ("execute", execute)):
            self._current[which] = await node.get_child("0:CurrentState")
            self._ids[which] = await _state_ids(Node(node.session,
                                                     await node.read_type_definition()))
        rules = self.rules
        bind = self._bind
        bind(methods["execute"]["Start"], lambda args: rules.start(list(args[0].Value or [])))
        bind(methods["execute"]["Reset"], lambda _a: rules.reset_complete())
        bind(methods["execute"]["Hold"], lambda _a: rules.hold())
        bind(methods["execute"]["Unhold"], lambda _a: rules.unhold())
        bind(methods["base"]["Abort"], lambda _a: rules.abort())
        bind(methods["base"]["Clear"], lambda _a: rules.clear())
        bind(methods["machine"]["Stop"], lambda _a: rules.stop())
        bind(methods["machine"]["Reset"], lambda _a: rules.reset_stopped())
        monitoring = await unit.add_folder(self._nid(".Monitoring"),
                                           ua.QualifiedName("Monitoring", self.emu))
        self._temperature_node = await monitoring.add_variable(
            self._nid(".Monitoring.Temperature"), ua.QualifiedName("Temperature", self.emu),
            ua.Variant(self._temperature, ua.VariantType.Double))
        await self._temperature_node.add_property(
            self._nid(".Monitoring.Temperature.EngineeringUnits"),
            ua.QualifiedName("EngineeringUnits", 0), DEGREE_CELSIUS)
        # the power-up state, published before the server listens
        for which in ("base", "machine", "execute"):
            await self._write_state(which, rules.state[which])
        await self._write_count(rules.processed)
        await self._parameter.write_value(ua.Variant([], ua.VariantType.ExtensionObject,
                                                     is_array=True))
        self._writer = asyncio.ensure_future(self._write_in_order())

    def _bind(self, method: Node, command: Callable[[list[ua.Variant]], None]) -> None:
        async def call(_parent: ua.NodeId, *args: ua.Variant) -> Any:
            try:
                command(list(args))
            except Refused as refused:
                return ua.StatusCode(refused.status)
            await self._writes.join()   # answered once the change is in the address space
            return []
        self.server.link_method(method, call)

    # -- publishing, in the order of the changes --------------------------------------------
    def _queue_state(self, which: str, name: str) -> None:
        self._writes.put_nowait(lambda: self._write_state(which, name))

    def _queue_count(self, n: int) -> None:
        self._writes.put_nowait(lambda: self._write_count(n))

    def _queue_parameter(self, params: list[Any]) -> None:
        self._writes.put_nowait(lambda: self._parameter.write_value(ua.Variant(
            params, ua.VariantType.ExtensionObject, is_array=True)))

    def _counts(self, n: int) -> tuple[ua.Variant, ua.Variant]:
        def count(k: int) -> ua.Variant:
            return ua.Variant([self._count_type(ID=1, Name="parts", Count=k, AccCount=k)],
                              ua.VariantType.ExtensionObject, is_array=True)
        return count(n), count(0)

    async def _write_state(self, which: str, name: str) -> None:
        node = self._current[which]
        await node.write_value(ua.Variant(ua.LocalizedText(name), ua.VariantType.LocalizedText))
        state_id = self._ids[which].get(name)
        if state_id is not None:
            await (await node.get_child("0:Id")).write_value(
                ua.Variant(state_id, ua.VariantType.NodeId))

    async def _write_count(self, n: int) -> None:
        processed, defective = self._counts(n)
        await self._processed.write_value(processed)
        await self._defective.write_value(defective)

    async def _write_in_order(self) -> None:
        while True:
            write = await self._writes.get()
            try:
                await write()
            finally:
                self._writes.task_done()

    async def step_readings(self) -> None:
        self._temperature = min(80.0, max(20.0, self._temperature + self._rng.gauss(0, 0.5)))
        await self._temperature_node.write_value(self._temperature, ua.VariantType.Double)

    def stop(self) -> None:
        self.rules.shutdown()
        if self._writer is not None:
            self._writer.cancel()


async def build_units(server: Server, emu: int, ids: list[str], log: JobLog, seen: set[str],
                      ended: dict[str, int], *, speed: float, refuse_start: set[str],
                      seed: int) -> list[PackMLUnit]:
    """``Objects/EMU:P`` with one :class:`PackMLUnit` per id (the PackML nodeset imported)."""
    if not ids:
        return []
    p = await server.get_namespace_index(PACKML_URI)
    units = []
    for unit_id in ids:
        unit = PackMLUnit(server, emu, unit_id, log, seen, speed=speed,
                          refuse_start=unit_id in refuse_start,
                          processed=ended.get(unit_id, 0), seed=seed)
        await unit.build(p)
        units.append(unit)
    return units
