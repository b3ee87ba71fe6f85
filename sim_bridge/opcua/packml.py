"""The ``packml`` profile: a PackML unit (OPC 30050) driven through its state machines.

Theory of operation
-------------------
A PackML unit (``PackMLBaseObjectType``) has three nested state machines:
``BaseStateMachine`` (Aborting, Aborted, Cleared), inside Cleared the
``MachineState`` (Clearing, Stopped, Stopping, Running), inside Running the
``ExecuteState`` (Resetting, Idle, Starting, Execute, Completing, Complete,
Holding, Held, Unholding, Suspending, Suspended, Unsuspending).  One PackML
cycle is one operation:

* **Start.** In ``Idle`` the gateway calls ``ExecuteState/Start`` with a
  ``PackMLDescriptorDataType[]``: the descriptor ``packml.job_parameter``
  (default ID 1) carries the job id ``<task>@<award epoch>`` in its ``Name``,
  ``packml.duration_parameter`` (ID 2) the duration in its ``Value``.  The
  unit keeps them in ``Status/Parameter`` while the job is its own, and
  refuses (a Bad status) a Start in any other state than Idle and a Start
  whose job id it has run: the machine is the last fence
  (``refuses_duplicates``).  So a Start first brings the unit to Idle, read
  afresh (the state machine is the truth, the notifications lag): it waits
  for an acting state (Resetting, Starting, Completing) to end and Resets a
  ``Complete`` left over; any other state is not the gateway's to change and
  the unit refuses the Start.
* **End.** ``Complete`` (with the job's id in ``Status/Parameter``), or
  ``Admin/ProdProcessedCount`` (the sum of its ``AccCount``) above the value
  read before the start, ends the job: ``operation_done``, scrap when
  ``Admin/ProdDefectiveCount`` moved too.  Only a ``Complete`` notified
  after the Start *and* after a notified state other than Complete counts:
  back-to-back jobs pass Complete, Resetting, Idle, Starting within one
  publishing interval, the news arrives item by item (the job before's end
  may be seen on the counter before its ``Complete`` arrives), and the next
  job's id may arrive beside the job before's ``Complete``.  A Complete
  collapsed into Complete in one interval is still seen on the counter.  The gateway then calls
  ``ExecuteState/Reset`` (Complete → Resetting → Idle), ready for the next.
  The counters are what a reconnect reads: a job that completed while the
  link was down — and was perhaps reset since by an operator — is still
  reported done (the ``query_state`` semantics).
* **Abort** (asked by the agents, or an orphan still running) calls
  ``BaseStateMachine/Abort``; once ``Aborted`` the job ends aborted and the
  gateway *recovers* the unit it stopped itself: ``Clear`` (→ Clearing →
  Stopped), then ``MachineState/Reset`` (→ Resetting → Idle).  While it
  does, the unit is not down.
* **Down.** ``Aborting``/``Aborted`` the gateway did not ask for (an
  emergency stop), ``Stopping``/``Stopped``/``Clearing``, and
  ``Holding``/``Held``/``Unholding`` (the unit holds on an internal fault)
  are down: ``fault`` with the state as reason, the job handed back (an
  orphan, aborted when the unit is back if it still runs).  Such a stop is
  the operator's to clear: the gateway never clears an abort it did not
  command.  Back in a producing state (``Idle`` after the operator's Clear
  and Reset, ``Execute`` after Unhold) is ``repaired``.  ``Suspended`` is
  not down: PackML suspends a unit starved or blocked from outside, and it
  resumes by itself.

Every state machine's ``CurrentState``, ``Status/Parameter`` and the two
counters are subscribed as ``both``: a change may end a job and may take
the unit down.  The profile's picture of the unit follows those
notifications *in the server's order*, which lags behind the unit: a value
read afresh (waiting for an acting state to end, the counters before a
start) is compared, never put into that picture, which would otherwise mix
two moments of the unit (a stale ``Complete`` beside the next job's id is a
false end).  A recovery ends when the notifications, not a read, show
``Idle``, so late news of the unit's own ``Stopped`` is not a fault.  Nodes are found by browse name in the PackML namespace
(resolved by URI), below the unit's object, a browse path below
``Objects`` as in :mod:`.legacy`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

from asyncua import Client, Node, ua

from agents.cell.equipment import OpcUaEquipment, OpcUaPackML

from .jobs import ABORTED, ENDED, RUNNING, MissingNode, Watch
from .legacy import find_node

__all__ = ["NS_PACKML", "PackMLProfile", "down_reason", "is_packml_type"]

NS_PACKML = "http://opcfoundation.org/UA/PackML/"
DESCRIPTOR_TYPE = 16          # PackMLDescriptorDataType, i=16 in the PackML namespace
BASE_OBJECT_TYPE = 6          # PackMLBaseObjectType
#: ExecuteState states in which the unit works on the job it was started with.
ACTIVE = frozenset({"Starting", "Execute", "Completing", "Holding", "Held", "Unholding",
                    "Suspending", "Suspended", "Unsuspending"})
STOPPED = frozenset({"Stopping", "Stopped", "Clearing"})
ABORTING = frozenset({"Aborting", "Aborted"})
HELD = frozenset({"Holding", "Held", "Unholding"})
#: ExecuteState states that end by themselves soon (a Start waits for them to pass).
TRANSIENT = frozenset({"Resetting", "Starting", "Completing"})
SETTLE_S = 10.0               # how long a recovery waits for each acting state to finish
POLL_S = 0.02


def is_packml_type(type_id: ua.NodeId, namespaces: list[str]) -> bool:
    """Whether ``type_id`` is ``PackMLBaseObjectType`` (for ``equipment browse``)."""
    return (NS_PACKML in namespaces and type_id.NamespaceIndex == namespaces.index(NS_PACKML)
            and type_id.Identifier == BASE_OBJECT_TYPE)


def down_reason(base: str, machine: str, execute: str) -> str | None:
    """Why a unit in these states cannot take a job, or None (see the module doc)."""
    if base in ABORTING:
        return f"PackML {base}"
    if machine in STOPPED:
        return f"PackML {machine}"
    if execute in HELD:
        return f"PackML {execute}"
    return None


def _text(value: Any) -> str:
    return str(getattr(value, "Text", value) or "")


def _count(value: Any) -> int:
    """The sum of ``AccCount`` of a ``PackMLCountDataType[]``."""
    return sum(int(getattr(c, "AccCount", 0) or 0) for c in (value or []))


class PackMLProfile:
    """One PackML unit (see the module doc)."""

    refuses_duplicates = True
    can_abort = True
    answers_by_id = False
    reconcilable = False          # its picture follows notifications in server order (ADR 52)

    def __init__(self, name: str, settings: OpcUaEquipment) -> None:
        self.name = name
        self.settings = settings
        self.params: OpcUaPackML = settings.packml_settings
        self.nodes: dict[str, Node] = {}
        self.parents: dict[str, Node] = {}
        self._readings: dict[str, Node] = {}
        self.descriptor: Any = None
        self.state = {"base": "", "machine": "", "execute": ""}
        self.loaded: str | None = None              # the job id in Status/Parameter
        self.processed: int | None = None
        self.defective: int | None = None
        self.runs: dict[str, tuple[int, int]] = {}  # job id -> both counters at its start
        self.ended: set[str] = set()
        self.aborted: set[str] = set()              # aborts the gateway asked for
        self.recovering = False
        self.abort_seen = False                     # ... and the notifications showed it
        self.adopting: str | None = None
        # since the last Start: the execute state notified other than Complete (the unit
        # left the job before's Complete), then Complete (this job's)
        self.left_complete = False
        self.complete_news = False

    @property
    def readings(self) -> Mapping[str, Node]:
        return self._readings

    # -- nodes ----------------------------------------------------------------------------------
    async def resolve(self, client: Client, namespaces: list[str]) -> list[Watch]:
        if NS_PACKML not in namespaces:
            raise MissingNode(self.name, f"namespace {NS_PACKML} (the server does not "
                                         "implement PackML, OPC 30050)")
        p = namespaces.index(NS_PACKML)
        unit, _cls = await find_node(client, namespaces, client.nodes.objects, self.name,
                                     self.name, "the PackML unit")

        async def child(path: list[str]) -> Node:
            try:
                return await unit.get_child([f"{p}:{x}" if x != "CurrentState" else
                                             "0:CurrentState" for x in path])
            except ua.UaStatusCodeError:
                raise MissingNode(self.name, "/".join(path)) from None

        base = ["BaseStateMachine"]
        machine = [*base, "MachineState"]
        execute = [*machine, "ExecuteState"]
        paths = {"base": [*base, "CurrentState"], "machine": [*machine, "CurrentState"],
                 "execute": [*execute, "CurrentState"], "parameter": ["Status", "Parameter"],
                 "processed": ["Admin", "ProdProcessedCount"],
                 "start": [*execute, "Start"], "reset_complete": [*execute, "Reset"],
                 "abort": [*base, "Abort"], "clear": [*base, "Clear"],
                 "reset_stopped": [*machine, "Reset"]}
        nodes = {k: await child(v) for k, v in paths.items()}
        try:
            nodes["defective"] = await unit.get_child([f"{p}:Admin", f"{p}:ProdDefectiveCount"])
        except ua.UaStatusCodeError:
            pass                                  # optional: every part is good
        self.parents = {"start": await child(execute), "reset_complete": await child(execute),
                        "abort": await child(base), "clear": await child(base),
                        "reset_stopped": await child(machine)}
        try:
            self.descriptor = ua.get_type(ua.NodeId(ua.Int32(DESCRIPTOR_TYPE), ua.Int16(p)))
        except (KeyError, ua.UaError):
            raise MissingNode(self.name, "data type PackMLDescriptorDataType") from None
        readings = {}
        for name, ref in self.settings.readings.items():
            readings[name] = (await find_node(client, namespaces, unit, ref, self.name,
                                              f"readings.{name}"))[0]
        self.nodes, self._readings = nodes, readings
        watched = ("base", "machine", "execute", "parameter", "processed", "defective")
        return [(nodes[k], "both") for k in watched if k in nodes]

    def _update(self, node: ua.NodeId, value: Any) -> None:
        for key, n in self.nodes.items():
            if n.nodeid == node:
                self._set(key, value)
                return

    def _set(self, key: str, value: Any) -> None:
        if key in self.state:
            before, self.state[key] = self.state[key], _text(value)
            # an inner machine's change may be notified after its outer one's: entering a
            # superstate enters the inner machine's first state (Cleared from Aborted goes
            # through Clearing, Running from Stopped through Resetting), so a stale inner
            # state never makes the unit look up for a moment
            if key == "base" and before in ABORTING and self.state[key] == "Cleared" \
                    and self.state["machine"] == "Running":
                self.state["machine"] = "Clearing"
            elif key == "machine" and before in STOPPED and self.state[key] == "Running" \
                    and self.state["execute"] not in ("Resetting", "Idle"):
                self.state["execute"] = "Resetting"
            if key == "execute" and self.state[key] != "Complete":
                self.left_complete = True
            elif key == "execute" and self.left_complete:
                self.complete_news = True
            if key == "base" and self.state[key] in ABORTING and self.recovering:
                self.abort_seen = True
            if key == "execute" and self.state[key] == "Idle" != before and self.abort_seen:
                self.recovering = self.abort_seen = False   # recovered, as notified
        elif key == "parameter":
            self.loaded = next((str(d.Name) for d in (value or [])
                                if getattr(d, "ID", None) == self.params.job_parameter), None)
        elif key == "processed":
            self.processed = _count(value)
        elif key == "defective":
            self.defective = _count(value)

    async def _read_all(self) -> None:
        for key in ("base", "machine", "execute", "parameter", "processed", "defective"):
            if key in self.nodes:
                self._set(key, await self.nodes[key].read_value())
        # read afresh, under the machine's lock (no Start in flight): a Complete beside the
        # job id read after it is that job's end
        self.complete_news = self.state["execute"] == "Complete"

    async def _call(self, method: str, *args: ua.Variant) -> None:
        await self.parents[method].call_method(self.nodes[method].nodeid, *args)

    async def _now(self, key: str) -> str:
        """State machine ``key``'s state read afresh, *not* put in the cache: the cache
        follows the notifications, in the server's order, and a fresh value applied between
        two of them would mix two moments of the unit."""
        return _text(await self.nodes[key].read_value())

    async def _await(self, key: str, wanted: str) -> bool:
        """Wait until state machine ``key`` is in ``wanted`` (the unit's acting states end
        by themselves); False after :data:`SETTLE_S`."""
        deadline = time.monotonic() + SETTLE_S
        while time.monotonic() < deadline:
            if await self._now(key) == wanted:
                return True
            await asyncio.sleep(POLL_S)
        return False

    # -- jobs -----------------------------------------------------------------------------------
    def _parameters(self, jid: str, args: Mapping[str, Any]) -> ua.Variant:
        d = self.descriptor
        out = [d(ID=self.params.job_parameter, Name=jid, Value=0.0)]
        if self.params.duration_parameter is not None:
            out.append(d(ID=self.params.duration_parameter, Name="duration_s",
                         Value=float(args.get("duration_s", 0.0))))
        return ua.Variant(out, ua.VariantType.ExtensionObject, is_array=True)

    async def _ready(self) -> None:
        """Bring the unit to Idle before a Start, read afresh (the state machine is the
        truth, not the notifications, which lag): an acting state ends by itself, a
        ``Complete`` left over is reset (the job before has ended: the gateway starts only
        on a free machine, and the retentive counter still tells an orphan's end).  Any
        other state is not the gateway's to change: the Start is refused and handed back."""
        deadline = time.monotonic() + SETTLE_S
        while time.monotonic() < deadline:
            execute = await self._now("execute")
            if execute == "Complete":
                if await self._now("base") != "Cleared" or await self._now("machine") != "Running":
                    return
                try:
                    await self._call("reset_complete")
                except ua.UaStatusCodeError:
                    pass                  # moved on meanwhile: read it again
            elif execute not in TRANSIENT:
                return
            await asyncio.sleep(POLL_S)

    async def start(self, jid: str, args: Mapping[str, Any]) -> str | None:
        await self._ready()
        baseline = (_count(await self.nodes["processed"].read_value()),
                    _count(await self.nodes["defective"].read_value())
                    if "defective" in self.nodes else 0)
        # a Complete notified before this Start, or after it but before the unit is seen
        # leaving Complete, is the job before's (its end may have been seen first on the
        # counter), however late the news of this job's id arrives beside it
        self.left_complete = self.complete_news = False
        await self._call("start", self._parameters(jid, args))    # a Bad status raises
        # the unit took a new job, so it was idle: an earlier job the counter has counted
        # ended, one it has not never will
        for old, (processed, _defective) in list(self.runs.items()):
            if baseline[0] > processed:
                self.ended.add(old)
            else:
                del self.runs[old]
        self.runs[jid] = baseline
        return None

    async def abort(self, jid: str) -> dict[str, int] | None:
        self.aborted.add(jid)
        self.recovering = True
        try:
            await self._call("abort")
        except BaseException:
            self.recovering = self.abort_seen = False
            raise
        return None                   # the unit publishes Aborting, then Aborted

    async def clear(self, jid: str) -> int:
        """After an end: Reset a Complete unit; Clear and Reset one the gateway aborted."""
        asked = jid in self.aborted
        self.runs.pop(jid, None)
        self.aborted.discard(jid)
        self.ended.discard(jid)
        if asked:
            idle = False
            try:
                if await self._now("base") in ABORTING and await self._await("base", "Aborted"):
                    await self._call("clear")
                    if await self._await("machine", "Stopped"):
                        await self._call("reset_stopped")
                        idle = await self._await("execute", "Idle")
            finally:
                # back in Idle: not down until the notifications say Idle too (_set); else
                # down for the operator at once
                if not idle:
                    self.recovering = self.abort_seen = False
        # the job ended (the backend clears only ended jobs): a unit still Complete waits for
        # the Reset that makes it Idle again (read afresh: a notification may lag behind)
        if await self._now("execute") == "Complete" and await self._now("base") == "Cleared":
            await self._call("reset_complete")
            await self._await("execute", "Idle")      # the next start finds it Idle
        return 0

    async def quality(self, jid: str, ok_values: list[str]) -> str:
        run = self.runs.get(jid)
        if run is None or "defective" not in self.nodes:
            return "ok"
        self._set("defective", await self.nodes["defective"].read_value())
        return "scrap" if (self.defective or 0) > run[1] else "ok"

    def _counted(self, jid: str) -> bool:
        run = self.runs.get(jid)
        return run is not None and self.processed is not None and self.processed > run[0]

    def _states(self) -> dict[str, int]:
        out: dict[str, int] = {}
        s = self.state
        for jid in self.runs:
            if jid in self.ended or self._counted(jid):
                out[jid] = ENDED
            elif self.loaded != jid:
                continue                  # the unit no longer knows it (a restart)
            elif s["execute"] == "Complete" and s["machine"] == "Running" and self.complete_news:
                out[jid] = ENDED
            elif s["base"] in ABORTING or s["machine"] in STOPPED:
                out[jid] = ABORTED
            elif s["execute"] in ACTIVE:
                out[jid] = RUNNING
            elif jid in self.aborted:
                out[jid] = ABORTED        # aborted, cleared and reset before we looked
        return out

    async def read_states(self) -> dict[str, int]:
        await self._read_all()
        if self.adopting is not None:
            jid, self.adopting = self.adopting, None
            if jid == self.loaded and jid not in self.runs:
                done = self.state["execute"] == "Complete"
                self.runs[jid] = ((self.processed or 0) - done, self.defective or 0)
        return self._states()

    def job_states(self, node: ua.NodeId, value: Any) -> dict[str, int]:
        # every node is watched as `both`: on_state applied this value already, in the
        # order of the notifications; applying it again now, after later ones, would not
        return self._states()

    def adopt(self, jid: str) -> None:
        self.adopting = jid

    async def job_state(self, jid: str) -> int | None:
        return None               # no job is asked for by its id (answers_by_id is false)

    # -- down and up ----------------------------------------------------------------------------
    def on_state(self, node: ua.NodeId, value: Any) -> None:
        self._update(node, value)

    def down_reason(self) -> str | None:
        if self.recovering:
            return None               # the gateway's own abort, until the unit is Idle again
        s = self.state
        return down_reason(s["base"], s["machine"], s["execute"])
