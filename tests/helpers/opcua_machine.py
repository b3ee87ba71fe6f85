"""One emulated machine in the asyncua server's address space, built from the standard types.

``tests/helpers/opcua_server.py`` imports the Machinery, ISA-95 job control and Machinery Jobs
nodesets; this module puts one machine under ``Machinery:Machines`` as the contract
(``tests/opcua/CONTRACT.md``) lays it out, binds the Machinery Jobs methods to the job book of
``tests/helpers/opcua_jobs.py``, and keeps the OPC UA variables (JobOrderList,
JobOrderResponseList, MachineryItemState) in step with it.  The readings walk here too.

Why some nodes are completed by hand: asyncua's ``instantiate`` creates the children an
instance declaration *declares*, not the children of that declaration's own type
definition (FreeOpcUa/opcua-asyncio#653, closed as wontfix: spec compliant, since members
of a nested type are only required when redeclared).  JobManagementType's ``JobOrderControl``
is declared with a few variables only, so StoreAndStart, Abort and Clear (Optional members of
ISA95JobOrderReceiverObjectType) and JobOrderResponseList (of
ISA95JobResponseProviderObjectType) are copied from those types by :func:`add_members`.
Likewise the identification properties come from DI/Machinery *interfaces*, which asyncua's
``instantiate`` does not follow, so they are added as plain DI properties.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from asyncua import Node, Server, ua
from asyncua.common.copy_node_util import copy_node
from asyncua.common.instantiate_util import instantiate

from tests.helpers.opcua_jobs import (
    FINAL_STATES, OK, STATE_NUMBERS, UNKNOWN_JOB_ORDER_ID, Job, MachineJobs, duration_of)

MACHINERY_URI = "http://opcfoundation.org/UA/Machinery/"
ISA95_URI = "http://opcfoundation.org/UA/ISA95-JOBCONTROL_V2/"
JOBS_URI = "http://opcfoundation.org/UA/Machinery/Jobs/"
DI_URI = "http://opcfoundation.org/UA/DI/"
EMU_URI = "urn:autocell:emulator"

# NodeIds inside their own namespaces (from the nodeset files).
MACHINES_FOLDER = 1001                 # Machinery: Machines
MACHINE_IDENTIFICATION_TYPE = 1012     # Machinery: MachineIdentificationType
ITEM_STATE_TYPE = 1002                 # Machinery: MachineryItemState_StateMachineType
OPERATION_MODE_TYPE = 1008             # Machinery: MachineryOperationModeStateMachineType
JOB_MANAGEMENT_TYPE = 1003             # Machinery Jobs: JobManagementType
JOB_ORDER_RECEIVER_TYPE = 1002         # ISA95: ISA95JobOrderReceiverObjectType
JOB_RESPONSE_PROVIDER_TYPE = 1003      # ISA95: ISA95JobResponseProviderObjectType

READING_PERIOD_S = 0.5


def _unece(code: str, symbol: str, description: str) -> Any:
    """EUInformation of a UNECE unit code (OPC 10000-8 5.6.3: the code's ASCII, packed)."""
    return ua.EUInformation(NamespaceUri="http://www.opcfoundation.org/UA/units/un/cefact",
                            UnitId=int.from_bytes(code.encode("ascii"), "big"),
                            DisplayName=ua.LocalizedText(symbol),
                            Description=ua.LocalizedText(description))


PERCENT = _unece("P1", "%", "percent")
DEGREE_CELSIUS = _unece("CEL", "°C", "degree Celsius")


@dataclass(frozen=True)
class Namespaces:
    """Namespace indexes of this server, each resolved from its URI."""

    di: int
    machinery: int
    isa95: int
    jobs: int
    emu: int

    @classmethod
    async def of(cls, server: Server) -> Namespaces:
        index = server.get_namespace_index
        return cls(await index(DI_URI), await index(MACHINERY_URI), await index(ISA95_URI),
                   await index(JOBS_URI), await index(EMU_URI))


def _now() -> datetime:
    return datetime.now(timezone.utc)


async def _child(node: Node, ns: int, name: str) -> Node:
    return await node.get_child(ua.QualifiedName(name, ns))


async def add_members(instance: Node, type_node: Node, names: list[str]) -> dict[str, Node]:
    """Copy the members ``names`` of ``type_node`` onto ``instance`` (see the module doc).

    Each copy gets a string NodeId under the instance's, in the instance's namespace, and
    so do its own children (a method's InputArguments and OutputArguments).
    """
    added: dict[str, Node] = {}
    base = instance.nodeid
    for desc in await type_node.get_children_descriptions():
        name = desc.BrowseName.Name
        if name not in names:
            continue
        nodeid = ua.NodeId(f"{base.Identifier}.{name}", base.NamespaceIndex)
        declaration = Node(instance.session, desc.NodeId)
        (copy, *_) = await copy_node(instance, declaration, nodeid=nodeid, recursive=False)
        for sub in await declaration.get_children():
            sub_name = (await sub.read_browse_name()).Name
            sub_id = ua.NodeId(f"{nodeid.Identifier}.{sub_name}", base.NamespaceIndex)
            await copy_node(copy, sub, nodeid=sub_id, recursive=False)
        added[name] = copy
    missing = set(names) - set(added)
    if missing:
        raise RuntimeError(f"{type_node.nodeid} has no member(s) {sorted(missing)}")
    return added


async def _set_property(node: Node, name: ua.QualifiedName, value: Any,
                        nodeid: ua.NodeId) -> None:
    """Write the property ``name`` of ``node``, adding it when its type did not."""
    try:
        await (await node.get_child(name)).write_value(value)
    except ua.UaStatusCodeError:
        await node.add_property(nodeid, name, value)


async def _as_add_in(parent: Node, child: Node, was: int) -> None:
    """Make ``child`` an add-in of ``parent`` (HasAddIn, as Machinery has its
    Identification and building blocks) instead of the ``was`` reference ``instantiate``
    chose (Organizes under a folder, HasComponent elsewhere)."""
    await parent.delete_reference(child, was, forward=True, bidirectional=True)
    await parent.add_reference(child, ua.ObjectIds.HasAddIn, forward=True, bidirectional=True)


class EmulatedMachine:
    """A machine's nodes, its job book and its readings."""

    def __init__(self, server: Server, ns: Namespaces, machine_id: str, jobs: MachineJobs,
                 *, speed: float, refuse_start: bool, seed: int) -> None:
        self.server, self.ns, self.machine_id, self.jobs = server, ns, machine_id, jobs
        self.speed, self.refuse_start = speed, refuse_start
        self._rng = random.Random(f"{seed}:{machine_id}")
        self._spindle_load, self._temperature = 30.0, 35.0
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._item_state: str | None = None
        self._faulted = False
        self._background: set[asyncio.Task[None]] = set()

    def _id(self, path: str) -> ua.NodeId:
        return ua.NodeId(f"{self.machine_id}{path}", self.ns.emu)

    async def build(self, machines: Node) -> None:
        ns, server = self.ns, self.server
        machine = (await instantiate(machines, server.get_node(ua.ObjectIds.BaseObjectType),
                                     nodeid=self._id(""),
                                     bname=ua.QualifiedName(self.machine_id, ns.emu),
                                     dname=ua.LocalizedText(self.machine_id)))[0]
        self.node = machine

        ident = (await instantiate(
            machine, server.get_node(ua.NodeId(MACHINE_IDENTIFICATION_TYPE, ns.machinery)),
            nodeid=self._id(".Identification"),
            bname=ua.QualifiedName("Identification", ns.machinery),
            instantiate_optional=False))[0]
        await _as_add_in(machine, ident, was=ua.ObjectIds.HasComponent)
        for name, value in (("Manufacturer", ua.LocalizedText("autocell emulator")),
                            ("SerialNumber", self.machine_id),
                            ("ProductInstanceUri", f"urn:autocell:emulator:{self.machine_id}")):
            await _set_property(ident, ua.QualifiedName(name, ns.di), value,
                                self._id(f".Identification.{name}"))

        blocks = await machine.add_folder(self._id(".MachineryBuildingBlocks"),
                                          ua.QualifiedName("MachineryBuildingBlocks",
                                                           ns.machinery))
        item_state = await self._add_in(blocks, ns.machinery, ITEM_STATE_TYPE,
                                        "MachineryItemState")
        operation_mode = await self._add_in(blocks, ns.machinery, OPERATION_MODE_TYPE,
                                            "MachineryOperationMode")
        self._item_state_node = await item_state.get_child("0:CurrentState")
        self._item_states = await _state_ids(server, ns.machinery, ITEM_STATE_TYPE)
        await self._set_item_state("NotExecuting")
        mode_states = await _state_ids(server, ns.machinery, OPERATION_MODE_TYPE)
        mode = await operation_mode.get_child("0:CurrentState")
        await mode.write_value(ua.LocalizedText("Processing"))
        if "Processing" in mode_states:
            await (await mode.get_child("0:Id")).write_value(mode_states["Processing"])

        management = await self._add_in(blocks, ns.jobs, JOB_MANAGEMENT_TYPE, "JobManagement")
        control = await _child(management, ns.jobs, "JobOrderControl")
        results = await _child(management, ns.jobs, "JobOrderResults")
        methods = await add_members(
            control, server.get_node(ua.NodeId(JOB_ORDER_RECEIVER_TYPE, ns.isa95)),
            ["StoreAndStart", "Abort", "Clear"])
        extra = await add_members(
            results, server.get_node(ua.NodeId(JOB_RESPONSE_PROVIDER_TYPE, ns.isa95)),
            ["JobOrderResponseList"])
        server.link_method(methods["StoreAndStart"], self._store_and_start)
        server.link_method(methods["Abort"], self._abort)
        server.link_method(methods["Clear"], self._clear)
        server.link_method(await _child(results, ns.isa95, "RequestJobResponseByJobOrderID"),
                           self._request_job_response)
        server.link_method(await _child(results, ns.isa95, "RequestJobResponseByJobOrderState"),
                           self._request_job_responses_by_state)
        self._job_order_list = await _child(control, ns.isa95, "JobOrderList")
        self._response_list = extra["JobOrderResponseList"]
        await self._publish()

        # test only (tests/opcua/CONTRACT.md): raise or clear a fault, MachineryItemState
        # OutOfService while it lasts
        await machine.add_method(
            self._id(".SetFault"), ua.QualifiedName("SetFault", ns.emu), self._set_fault,
            [ua.Argument(Name="Fault", DataType=ua.NodeId(ua.ObjectIds.Boolean), ValueRank=-1),
             ua.Argument(Name="AlarmText", DataType=ua.NodeId(ua.ObjectIds.String),
                         ValueRank=-1)], [])

        monitoring = await machine.add_folder(self._id(".Monitoring"),
                                              ua.QualifiedName("Monitoring", ns.emu))
        self._spindle = await self._reading(monitoring, "SpindleLoad", self._spindle_load,
                                            PERCENT, 0.0, 100.0)
        self._temperature_node = await self._reading(monitoring, "Temperature",
                                                     self._temperature, DEGREE_CELSIUS,
                                                     20.0, 80.0)

    async def _reading(self, folder: Node, name: str, value: float, unit: Any, low: float,
                       high: float) -> Node:
        """A Double AnalogItem with its EURange and EngineeringUnits (as the node-opcua
        emulator has them)."""
        nodeid = self._id(f".Monitoring.{name}")
        node = (await instantiate(folder, self.server.get_node(ua.ObjectIds.AnalogItemType),
                                  nodeid=nodeid, bname=ua.QualifiedName(name, self.ns.emu),
                                  instantiate_optional=False))[0]
        await node.write_attribute(ua.AttributeIds.DataType, ua.DataValue(
            ua.Variant(ua.NodeId(ua.ObjectIds.Double), ua.VariantType.NodeId)))
        await node.write_value(value, ua.VariantType.Double)
        await _set_property(node, ua.QualifiedName("EURange", 0), ua.Range(low, high),
                            ua.NodeId(f"{nodeid.Identifier}.EURange", nodeid.NamespaceIndex))
        await _set_property(node, ua.QualifiedName("EngineeringUnits", 0), unit,
                            ua.NodeId(f"{nodeid.Identifier}.EngineeringUnits",
                                      nodeid.NamespaceIndex))
        return node

    async def _add_in(self, blocks: Node, ns: int, type_id: int, name: str) -> Node:
        node = (await instantiate(blocks, self.server.get_node(ua.NodeId(type_id, ns)),
                                  nodeid=self._id(f".MachineryBuildingBlocks.{name}"),
                                  bname=ua.QualifiedName(name, ns),
                                  instantiate_optional=False))[0]
        await _as_add_in(blocks, node, was=ua.ObjectIds.Organizes)
        return node

    # -- the Machinery Jobs methods -------------------------------------------------------

    async def _store_and_start(self, _parent: ua.NodeId, job_order: ua.Variant,
                               *_comment: ua.Variant) -> Any:
        order = job_order.Value
        job_id = str(getattr(order, "JobOrderID", "") or "")
        if self.refuse_start:
            self.jobs.log.write(self.machine_id, job_id, "refused", why="--refuse-start")
            return ua.StatusCode(ua.StatusCodes.BadUserAccessDenied)
        duration_s = duration_of(getattr(order, "JobOrderParameters", None))
        status = self.jobs.store_and_start(job_id, order, duration_s, _now())
        if status == OK:
            assert duration_s is not None
            loop = asyncio.get_running_loop()
            self._timers[job_id] = loop.call_later(duration_s / self.speed, self._time_up, job_id)
            await self._publish()
        return [ua.Variant(status, ua.VariantType.UInt64)]

    def _time_up(self, job_id: str) -> None:
        self._timers.pop(job_id, None)
        if self.jobs.end(job_id, _now()):
            task = asyncio.ensure_future(self._publish())
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _abort(self, _parent: ua.NodeId, job_id: ua.Variant, *_comment: ua.Variant) -> Any:
        status = self.jobs.abort(str(job_id.Value), _now())
        if status == OK:
            timer = self._timers.pop(str(job_id.Value), None)
            if timer is not None:
                timer.cancel()
            await self._publish()
        return [ua.Variant(status, ua.VariantType.UInt64)]

    async def _clear(self, _parent: ua.NodeId, job_id: ua.Variant, *_comment: ua.Variant) -> Any:
        status = self.jobs.clear(str(job_id.Value))
        if status == OK:
            await self._publish()
        return [ua.Variant(status, ua.VariantType.UInt64)]

    async def _request_job_response(self, _parent: ua.NodeId, job_id: ua.Variant) -> Any:
        job = self.jobs.jobs.get(str(job_id.Value))
        if job is None:
            response = ua.ISA95JobResponseDataType(JobOrderID=str(job_id.Value))
            status = UNKNOWN_JOB_ORDER_ID
        else:
            response, status = _response(job), OK
        return [ua.Variant(response, ua.VariantType.ExtensionObject),
                ua.Variant(status, ua.VariantType.UInt64)]

    async def _request_job_responses_by_state(self, _parent: ua.NodeId,
                                              states: ua.Variant) -> Any:
        """The responses of every job in one of the given states (matched by StateText)."""
        wanted = {str(state.StateText.Text) for state in states.Value or []}
        responses = [_response(job) for job in self.jobs.jobs.values() if job.state in wanted]
        return [ua.Variant(responses, ua.VariantType.ExtensionObject),
                ua.Variant(OK, ua.VariantType.UInt64)]

    # -- keeping the variables in step ------------------------------------------------------

    async def _publish(self) -> None:
        """Write JobOrderList, JobOrderResponseList and the item state from the job book."""
        listed = [ua.ISA95JobOrderAndStateDataType(JobOrder=job.order, State=[_state(job.state)])
                  for job in self.jobs.listed()]
        await self._job_order_list.write_value(ua.Variant(listed, ua.VariantType.ExtensionObject))
        responses = [_response(job) for job in self.jobs.finished()]
        await self._response_list.write_value(
            ua.Variant(responses, ua.VariantType.ExtensionObject))
        await self._set_item_state("OutOfService" if self._faulted
                                   else "Executing" if self.jobs.running else "NotExecuting")

    async def _set_fault(self, _parent: ua.NodeId, fault: ua.Variant,
                         _text: ua.Variant) -> list[ua.Variant]:
        """A fault makes the machine OutOfService (its job keeps its state: the gateway
        aborts it when the machine is back)."""
        self._faulted = bool(fault.Value)
        await self._publish()
        return []

    async def _set_item_state(self, name: str) -> None:
        if name == self._item_state:
            return
        self._item_state = name
        await self._item_state_node.write_value(ua.LocalizedText(name))
        if name in self._item_states:
            await (await self._item_state_node.get_child("0:Id")).write_value(
                self._item_states[name])

    async def step_readings(self) -> None:
        """One step of the seeded random walks (every :data:`READING_PERIOD_S` wall)."""
        self._spindle_load = min(100.0, max(0.0, self._spindle_load + self._rng.gauss(0, 3)))
        self._temperature = min(80.0, max(20.0, self._temperature + self._rng.gauss(0, 0.5)))
        await self._spindle.write_value(self._spindle_load, ua.VariantType.Double)
        await self._temperature_node.write_value(self._temperature, ua.VariantType.Double)

    def stop(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()


def _state(name: str) -> Any:
    return ua.ISA95StateDataType(BrowsePath=ua.RelativePath(), StateText=ua.LocalizedText(name),
                                 StateNumber=ua.UInt32(STATE_NUMBERS[name]))


def _response(job: Job) -> Any:
    """The ISA95JobResponseDataType of a job; Quality only once it is final."""
    data = ([ua.ISA95ParameterDataType(ID="Quality", Value=ua.Variant("ok", ua.VariantType.String))]
            if job.state in FINAL_STATES else None)
    return ua.ISA95JobResponseDataType(
        JobResponseID=f"{job.job_id}/response", JobOrderID=job.job_id,
        StartTime=job.started_at, EndTime=job.ended_at, JobState=[_state(job.state)],
        JobResponseData=data)


async def _state_ids(server: Server, ns: int, type_id: int) -> dict[str, ua.NodeId]:
    """The state objects (NotExecuting, Executing, ...) of a state machine type, by name."""
    states: dict[str, ua.NodeId] = {}
    for desc in await server.get_node(ua.NodeId(type_id, ns)).get_children_descriptions():
        if desc.NodeClass == ua.NodeClass.Object:
            states[desc.BrowseName.Name] = desc.NodeId
    return states
