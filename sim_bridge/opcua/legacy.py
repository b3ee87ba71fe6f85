"""The ``nodes`` profile: a legacy machine driven through an explicit mapping of its nodes.

Theory of operation
-------------------
Many machines on a plant floor speak OPC UA without any companion
specification: a PLC exposes a start method (or a trigger bit), a counter of
finished parts, a fault bit and an alarm text.  The cell file maps those
nodes (``opcua.nodes``, :class:`~agents.cell.equipment.OpcUaNodes`); this
profile gives them the meaning the backend needs (:mod:`.profiles`).

* **Nodes** are browse paths below the machine object (each name matched in
  the object's own namespace first, then in any other), or NodeIds whose
  namespace is named by URI (``nsu=URI;s=...``), resolved on every session,
  since a restarted server may renumber its namespaces.  A missing node, or
  a method mapped to a variable, is a :class:`~.jobs.MissingNode` naming the
  field, which ``autocell equipment check`` prints.
* **Start.** The done counter is read (the job's *baseline*), then either the
  ``start`` method is called with (JobId, DurationS) — Int32 status, 0 =
  started — or ``job_id`` is written and ``trigger`` set true.
* **End.** A legacy machine knows no job ids: the profile remembers the id it
  started and its baseline.  A counter above the baseline means the job
  ended; the ``quality`` variable, read then, says ok or scrap.  A counter
  *below* it means the machine lost its counter (a reset): the job is
  unknown to it.
* **Reconnect.** The counter is read again: an increment while the link was
  down means the job ended then.  With ``busy`` mapped, a job neither
  counted nor running is unknown to the machine (it restarted); without
  ``busy`` it stays running until the counter moves.
* **No duplicate fence in the machine.** Such a machine starts whatever it is
  told, so ``refuses_duplicates`` is false: a start whose answer was lost is
  never resent (the job is handed back), and the gateway's journalled fence
  is the only guard against running an operation twice.
* **Down.** ``fault`` true is down, ``alarm_text`` (as last published) the reason.
* **Abort** calls the ``abort`` method; without one the job is handed back and
  the machine finishes it unreported (its end is recorded as a late end).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from asyncua import Client, Node, ua

from agents.cell.equipment import OpcUaEquipment, OpcUaNodes

from .jobs import ABORTED, ENDED, RUNNING, MissingNode, Watch

__all__ = ["NodesProfile", "find_node"]

METHODS = ("start", "abort")


async def find_node(client: Client, namespaces: list[str], base: Node, ref: str,
                    machine: str, what: str) -> tuple[Node, ua.NodeClass]:
    """The node ``ref`` names (a NodeId by namespace URI, or a browse path below ``base``)
    and its node class; :class:`MissingNode` naming ``what`` otherwise."""
    if ref.startswith("nsu="):
        uri, ident = ref[4:].split(";", 1)
        if uri not in namespaces:
            raise MissingNode(machine, f"{ref} ({what}: the server has no namespace {uri})")
        idx = ua.Int16(namespaces.index(uri))
        nodeid = (ua.NodeId(ua.Int32(int(ident[2:])), idx) if ident.startswith("i=")
                  else ua.NodeId(ua.String(ident[2:]), idx))
        node = client.get_node(nodeid)
        try:
            return node, await node.read_node_class()
        except ua.UaStatusCodeError:
            raise MissingNode(machine, f"{ref} ({what})") from None
    current, cls = base, ua.NodeClass.Object
    own = base.nodeid.NamespaceIndex
    for part in ref.split("/"):
        found = [d for d in await current.get_children_descriptions()
                 if d.BrowseName.Name == part]
        if not found:
            raise MissingNode(machine, f"{ref} ({what})")
        found.sort(key=lambda d: d.BrowseName.NamespaceIndex != own)
        current, cls = client.get_node(found[0].NodeId), found[0].NodeClass
    return current, cls


class NodesProfile:
    """One legacy machine (see the module doc)."""

    refuses_duplicates = False
    answers_by_id = False
    reconcilable = False          # a counter read moves the picture a job's end is judged by

    def __init__(self, name: str, settings: OpcUaEquipment) -> None:
        assert settings.nodes is not None, "the cell file's validation requires `nodes`"
        self.name = name
        self.settings = settings
        self.mapping: OpcUaNodes = settings.nodes
        self.can_abort = self.mapping.abort is not None
        self.nodes: dict[str, Node] = {}
        self.parents: dict[str, Node] = {}          # the object each method is called on
        self._readings: dict[str, Node] = {}
        self.runs: dict[str, int] = {}              # job id -> the done counter at its start
        self.aborted: set[str] = set()
        self.ended: set[str] = set()                # counted before a later job started
        self.adopting: str | None = None
        self.counter: int | None = None
        self.fault = False
        self.alarm = ""

    @property
    def readings(self) -> Mapping[str, Node]:
        return self._readings

    # -- nodes ----------------------------------------------------------------------------------
    async def resolve(self, client: Client, namespaces: list[str]) -> list[Watch]:
        machine, _cls = await find_node(client, namespaces, client.nodes.objects, self.name,
                                        self.name, "the machine object")
        nodes: dict[str, Node] = {}
        for field, ref in self.mapping.mapped().items():
            node, cls = await find_node(client, namespaces, machine, ref, self.name,
                                        f"nodes.{field}")
            wanted = ua.NodeClass.Method if field in METHODS else ua.NodeClass.Variable
            if cls != wanted:
                raise MissingNode(self.name, f"{ref} (nodes.{field} must be a {wanted.name}, "
                                             f"this is a {cls.name})")
            nodes[field] = node
            if field in METHODS:
                parent = await node.get_parent()
                if parent is None:
                    raise MissingNode(self.name, f"{ref} (nodes.{field}: a method without "
                                                 "an object to call it on)")
                self.parents[field] = parent
        readings = {}
        for name, ref in self.settings.readings.items():
            readings[name] = (await find_node(client, namespaces, machine, ref, self.name,
                                              f"readings.{name}"))[0]
        self.nodes, self._readings = nodes, readings
        watch: list[Watch] = [(nodes["done_counter"], "jobs")]
        watch += [(nodes[f], "state") for f in ("alarm_text", "fault") if f in nodes]
        return watch

    async def _read_counter(self) -> int:
        self.counter = int(await self.nodes["done_counter"].read_value())
        return self.counter

    # -- jobs -----------------------------------------------------------------------------------
    async def start(self, jid: str, args: Mapping[str, Any]) -> str | None:
        baseline = await self._read_counter()
        if "start" in self.nodes:
            status = await self.parents["start"].call_method(
                self.nodes["start"].nodeid, ua.Variant(jid, ua.VariantType.String),
                ua.Variant(float(args.get("duration_s", 0.0)), ua.VariantType.Double))
            status = int(status[0] if isinstance(status, list) else status or 0)
            if status != 0:
                return f"start status {status}"
        else:
            await self.nodes["job_id"].write_value(ua.Variant(jid, ua.VariantType.String))
            await self.nodes["trigger"].write_value(ua.Variant(True, ua.VariantType.Boolean))
        # the machine took a new job, so it was idle: an earlier job the counter has not
        # counted by now never will be (stopped by a fault, lost in a restart); one it
        # has counted ended
        for old, base in list(self.runs.items()):
            if baseline > base:
                self.ended.add(old)
            else:
                del self.runs[old]
        self.runs[jid] = baseline
        return None

    async def abort(self, jid: str) -> dict[str, int] | None:
        if "abort" not in self.nodes:
            return None
        await self.parents["abort"].call_method(self.nodes["abort"].nodeid)
        self.aborted.add(jid)
        await self._read_counter()      # a job that ended just before the abort ended
        return self._states()

    async def clear(self, jid: str) -> int:
        self.runs.pop(jid, None)
        self.aborted.discard(jid)
        self.ended.discard(jid)
        return 0

    async def quality(self, jid: str, ok_values: list[str]) -> str:
        node = self.nodes.get("quality")
        if node is None:
            return "ok"
        return "ok" if str(await node.read_value()) in ok_values else "scrap"

    def _states(self, idle: bool = False) -> dict[str, int]:
        out: dict[str, int] = {}
        for jid, baseline in self.runs.items():
            if jid in self.ended or (self.counter is not None and self.counter > baseline):
                out[jid] = ENDED
            elif jid in self.aborted:
                out[jid] = ABORTED
            elif self.counter is not None and self.counter < baseline:
                continue                # the machine lost its counter: the job is unknown
            elif not idle:
                out[jid] = RUNNING
        return out

    async def read_states(self) -> dict[str, int]:
        counter = await self._read_counter()
        busy = None
        if "busy" in self.nodes:
            busy = bool(await self.nodes["busy"].read_value())
        if self.adopting is not None:
            if busy and self.adopting not in self.runs:
                self.runs[self.adopting] = counter
            self.adopting = None
        return self._states(idle=busy is False)

    def job_states(self, node: ua.NodeId, value: Any) -> dict[str, int]:
        try:
            self.counter = int(value)
        except (TypeError, ValueError):
            pass
        return self._states()

    def adopt(self, jid: str) -> None:
        self.adopting = jid

    async def job_state(self, jid: str) -> int | None:
        return None               # no job is asked for by its id (answers_by_id is false)

    # -- down and up ----------------------------------------------------------------------------
    def on_state(self, node: ua.NodeId, value: Any) -> None:
        if "fault" in self.nodes and node == self.nodes["fault"].nodeid:
            self.fault = bool(value)
        elif "alarm_text" in self.nodes and node == self.nodes["alarm_text"].nodeid:
            self.alarm = str(getattr(value, "Text", value) or "")

    def down_reason(self) -> str | None:
        if not self.fault:
            return None
        return self.alarm or "fault bit set (no alarm text)"
