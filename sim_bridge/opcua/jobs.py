"""The ``machinery-jobs`` profile: OPC 40001-3 Machinery Job Management, as a client.

Theory of operation
-------------------
A machine that implements OPC 40001-3 lists its jobs as ISA-95 job orders
(OPC 10031-4).  The gateway runs one job order per operation:

* **Start.** ``StoreAndStart`` on the machine's ``JobOrderControl`` with a
  job order whose ``JobOrderID`` is ``"<task>@<award epoch>"``
  (:func:`job_id`) and whose parameters carry ``duration_s``, ``order``,
  ``capability`` and ``quantity``.  The id makes the machine itself the last
  fence: it refuses an id it has run before, so a repeated command after a
  reconnect or a restart of the gateway starts nothing twice.
* **End.** The gateway subscribes to ``JobOrderList``; a job whose state
  becomes ``Ended`` is finished: its response
  (``RequestJobResponseByJobOrderID`` on ``JobOrderResults``) gives the
  quality (the parameter named ``quality_parameter``), and the job is cleared
  (``Clear``) so the list stays short.  ``Aborted`` ends it without a result.
* **Up and down.** OPC 40001-1 ``MachineryItemState``: ``OutOfService`` is down,
  anything else (``NotExecuting``, ``Executing``, ``NotAvailable`` while
  starting up) is up.

Nodes are found by browse names in the standard namespaces (resolved by URI
on each connection), below the machine object found by its browse name in
the Machinery ``Machines`` folder.  A missing node is a
:class:`MissingNode` naming the path, which ``autocell equipment check``
reports line by line.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from asyncua import Client, Node, ua

from . import batch

__all__ = ["JOB_STATES", "MachineNodes", "MissingNode", "Namespaces", "job_id", "machines",
           "parse_job_list", "resolve"]

NS_MACHINERY = "http://opcfoundation.org/UA/Machinery/"
NS_ISA95 = "http://opcfoundation.org/UA/ISA95-JOBCONTROL_V2/"
NS_JOBS = "http://opcfoundation.org/UA/Machinery/Jobs/"
NS_DI = "http://opcfoundation.org/UA/DI/"
MACHINES_FOLDER = 1001            # i=1001 in the Machinery namespace: Objects/Machines

#: ISA95JobOrderStateMachineType state numbers (OPC 10031-4).
JOB_STATES: dict[int, str] = {1: "NotAllowedToStart", 2: "AllowedToStart", 3: "Running",
                              4: "Interrupted", 5: "Ended", 6: "Aborted"}
RUNNING, ENDED, ABORTED = 3, 5, 6
#: ISA-95 method ReturnStatus values (0 is success).
RETURN_STATUS: dict[int, str] = {0: "ok", 1: "unknown job order id", 2: "invalid job order state",
                                 3: "unable to accept job order", 4: "invalid request"}
DOWN_STATES: frozenset[str] = frozenset({"OutOfService"})


#: A node a profile subscribes to, and what its data changes mean (``both``: either).
Watch = tuple[Node, Literal["jobs", "state", "both"]]


class MissingNode(LookupError):
    """A node the profile needs is not in the server's address space."""

    def __init__(self, machine: str, path: str) -> None:
        self.machine = machine
        self.path = path
        super().__init__(f"{machine}: no node {path}")


def job_id(task: str, epoch: int) -> str:
    """The JobOrderID of a task's run under an award epoch."""
    return f"{task}@{epoch}"


@dataclass(frozen=True)
class Namespaces:
    machinery: int
    isa95: int
    jobs: int
    di: int | None

    @classmethod
    async def of(cls, client: Client) -> Namespaces:
        return cls.of_table(await client.get_namespace_array())

    @classmethod
    def of_table(cls, table: list[str]) -> Namespaces:
        """The indexes in a server's namespace array (read once per session)."""
        missing = [uri for uri in (NS_MACHINERY, NS_ISA95, NS_JOBS) if uri not in table]
        if missing:
            raise MissingNode("server", f"namespace {', '.join(missing)} (the server does not "
                                        "implement Machinery Job Management)")
        return cls(table.index(NS_MACHINERY), table.index(NS_ISA95), table.index(NS_JOBS),
                   table.index(NS_DI) if NS_DI in table else None)


@dataclass(frozen=True)
class MachineNodes:
    """The nodes of one machine the profile reads, calls and subscribes to."""

    name: str
    machine: Node
    control: Node
    results: Node
    job_list: Node
    item_state: Node | None
    readings: Mapping[str, Node]
    methods: Mapping[str, ua.NodeId]     # StoreAndStart, Abort, Clear, RequestJobResponse...


async def machines(client: Client, ns: Namespaces) -> list[tuple[str, Node]]:
    """``(browse name, node)`` of every machine in the ``Machines`` folder."""
    folder = client.get_node(ua.NodeId(ua.Int32(MACHINES_FOLDER), ua.Int16(ns.machinery)))
    out = []
    for child in await folder.get_children(refs=ua.ObjectIds.HierarchicalReferences,
                                           nodeclassmask=ua.NodeClass.Object):
        out.append(((await child.read_browse_name()).Name, child))
    return sorted(out, key=lambda pair: pair[0])


#: The ``Machines`` folder of each session, browsed once by the first machine resolved.
_found: weakref.WeakKeyDictionary[Client, dict[str, Node]] = weakref.WeakKeyDictionary()


async def _child(node: Node, machine: str, path: list[str]) -> Node:
    try:
        return await node.get_child(path)
    except ua.UaStatusCodeError:
        raise MissingNode(machine, "/".join(p.split(":", 1)[1] for p in path)) from None


async def _relative(node: Node, machine: str, path: str, own: list[int]) -> Node:
    """A readings path like ``Monitoring/SpindleLoad``: each name tried in the namespaces
    that the machine's own nodes use (an OPC UA browse name is qualified)."""
    current = node
    for part in path.split("/"):
        for idx in own:
            try:
                current = await current.get_child(f"{idx}:{part}")
                break
            except ua.UaStatusCodeError:
                continue
        else:
            raise MissingNode(machine, path)
    return current


async def resolve(client: Client, ns: Namespaces, name: str,
                  readings: Mapping[str, str]) -> MachineNodes:
    """The nodes of machine ``name``; :class:`MissingNode` for the first one missing."""
    found = _found.get(client)
    if found is None:          # once per session, not once per machine (50 × 50 reads)
        found = _found[client] = dict(await machines(client, ns))
    machine = found.get(name)
    if machine is None:
        raise MissingNode(name, f"Machines/{name} (the server has: "
                                f"{', '.join(found) or 'no machines'})")
    m, j, i = ns.machinery, ns.jobs, ns.isa95
    blocks = [f"{m}:MachineryBuildingBlocks"]
    jm = await _child(machine, name, [*blocks, f"{j}:JobManagement"])
    control = await _child(jm, name, [f"{j}:JobOrderControl"])
    results = await _child(jm, name, [f"{j}:JobOrderResults"])
    job_list = await _child(control, name, [f"{i}:JobOrderList"])
    # resolved once per session: a call by node id saves the server a browse-path lookup
    methods = {m: (await _child(control, name, [f"{i}:{m}"])).nodeid
               for m in ("StoreAndStart", "Abort", "Clear")}
    methods["RequestJobResponseByJobOrderID"] = (await _child(
        results, name, [f"{i}:RequestJobResponseByJobOrderID"])).nodeid
    try:
        item_state: Node | None = await machine.get_child(
            [*blocks, f"{m}:MachineryItemState", "0:CurrentState"])
    except ua.UaStatusCodeError:
        item_state = None
    own = sorted({machine.nodeid.NamespaceIndex, m})
    nodes = {k: await _relative(machine, name, path, own) for k, path in readings.items()}
    return MachineNodes(name, machine, control, results, job_list, item_state, nodes, methods)


def job_order(task_job_id: str, args: Mapping[str, Any], types: Mapping[str, Any]) -> Any:
    """An ``ISA95JobOrderDataType`` for one operation, built from ``types``: the classes
    asyncua generated from *this* server's type definitions (a class generated for
    another server may carry other type ids, which this one cannot decode)."""
    order_t = types["ISA95JobOrderDataType"]
    param_t = types["ISA95ParameterDataType"]
    params = [param_t(ID="duration_s", Value=ua.Variant(float(args.get("duration_s", 0.0)),
                                                         ua.VariantType.Double))]
    for key in ("order", "capability"):
        if key in args:
            params.append(param_t(ID=key, Value=ua.Variant(str(args[key]),
                                                           ua.VariantType.String)))
    if "quantity" in args:
        params.append(param_t(ID="quantity", Value=ua.Variant(int(args["quantity"]),
                                                              ua.VariantType.Int32)))
    return order_t(JobOrderID=task_job_id, JobOrderParameters=params)


def _comment() -> ua.Variant:
    return ua.Variant([], ua.VariantType.LocalizedText, is_array=True)


#: The standard NodeIds (ISA-95 job control namespace) of the structures the gateway builds.
DATA_TYPES: dict[str, int] = {"ISA95JobOrderDataType": 3008, "ISA95ParameterDataType": 3003}


def types_of(ns: Namespaces) -> dict[str, Any]:
    """This server's structures as Python classes, looked up by *this server's* data type
    NodeIds once its definitions are loaded (``client.load_data_type_definitions()``):
    asyncua keeps one class per name in ``ua`` but one per NodeId in its lookup, and two
    servers may number the ISA-95 namespace differently."""
    types: dict[str, Any] = {}
    for name, number in DATA_TYPES.items():
        try:
            types[name] = ua.get_type(ua.NodeId(ua.Int32(number), ua.Int16(ns.isa95)))
        except (KeyError, ua.UaError):
            raise MissingNode("server", f"data type {name}") from None
    return types


async def store_and_start(ns: Namespaces, nodes: MachineNodes, jid: str,
                          args: Mapping[str, Any], types: Mapping[str, Any]) -> int:
    """Call ``StoreAndStart``; the ISA-95 ReturnStatus (0 = started)."""
    status = await batch.call(nodes.control, nodes.methods["StoreAndStart"],
                              ua.Variant(job_order(jid, args, types)), _comment())
    return int(status or 0)


async def abort(ns: Namespaces, nodes: MachineNodes, jid: str) -> int:
    status = await batch.call(nodes.control, nodes.methods["Abort"], ua.Variant(jid), _comment())
    return int(status or 0)


async def clear(ns: Namespaces, nodes: MachineNodes, jid: str) -> int:
    status = await batch.call(nodes.control, nodes.methods["Clear"], ua.Variant(jid), _comment())
    return int(status or 0)


def _state_number(states: Any) -> int:
    if not states:
        return 0
    first = states[0]
    number = int(getattr(first, "StateNumber", 0) or 0)
    if number:
        return number
    text = getattr(getattr(first, "StateText", None), "Text", "") or ""
    return {v: k for k, v in JOB_STATES.items()}.get(text, 0)


def parse_job_list(value: Any) -> dict[str, int]:
    """``JobOrderList`` -> job id -> state number."""
    out: dict[str, int] = {}
    for entry in value or []:
        order = getattr(entry, "JobOrder", None)
        jid = getattr(order, "JobOrderID", None)
        if isinstance(jid, str):
            out[jid] = _state_number(getattr(entry, "State", None))
    return out


async def jobs(nodes: MachineNodes) -> dict[str, int]:
    return parse_job_list(await nodes.job_list.read_value())


async def quality(ns: Namespaces, nodes: MachineNodes, jid: str, parameter: str,
                  ok_values: list[str]) -> str:
    """``ok`` or ``scrap`` from the job's response; ``ok`` when the machine reports none."""
    out = await batch.call(nodes.results, nodes.methods["RequestJobResponseByJobOrderID"],
                           ua.Variant(jid))
    response = out[0] if isinstance(out, list) else out
    for param in getattr(response, "JobResponseData", None) or []:
        if getattr(param, "ID", None) == parameter:
            value = getattr(param, "Value", None)
            value = getattr(value, "Value", value)
            return "ok" if str(value) in ok_values else "scrap"
    return "ok"


async def job_state(ns: Namespaces, nodes: MachineNodes, jid: str) -> int | None:
    """The state of job ``jid`` from its response (``RequestJobResponseByJobOrderID``), or
    None when the machine does not know the id.  Unlike ``JobOrderList`` this answers for
    a job that ended and was cleared too: the one way to tell a job the machine ran from
    one it never had, once it is no longer listed."""
    out = await batch.call(nodes.results, nodes.methods["RequestJobResponseByJobOrderID"],
                           ua.Variant(jid))
    response, status = (out[0], out[1]) if isinstance(out, list) and len(out) > 1 else (out, 0)
    if int(status or 0) != 0 or response is None:
        return None
    return _state_number(getattr(response, "JobState", None)) or None


async def is_down(nodes: MachineNodes) -> bool:
    if nodes.item_state is None:
        return False
    value = await nodes.item_state.read_value()
    return str(getattr(value, "Text", value)) in DOWN_STATES
