"""A legacy machine in the asyncua emulator: no companion specification, just a PLC's nodes.

What autocell's ``nodes`` profile (``sim_bridge/opcua/legacy.py``) drives: a start method,
a done counter, a busy bit, a fault bit and an alarm text, the way a PLC programmer lays
them out (tests/opcua/CONTRACT.md, "Legacy machines")::

    Objects/EMU:Legacy/EMU:<id>
        EMU:Start(JobId: String, DurationS: Double) -> Status: Int32
        EMU:Abort()
        EMU:DoneCount  UInt32     +1 when a job ends (retentive: rebuilt from the job log)
        EMU:Busy       Boolean    true while a job runs
        EMU:Fault      Boolean    true = down
        EMU:AlarmText  String     why (written before Fault rises)
        EMU:Quality    String     "ok", written before DoneCount moves
        EMU:SetFault(Fault: Boolean, AlarmText: String)    test only: raise or clear the fault
        EMU:Cmd/EMU:JobId        String   written before the trigger (writable)
        EMU:Cmd/EMU:DurationS    Double   cell seconds of a triggered job, default 1 (writable)
        EMU:Cmd/EMU:StartTrigger Boolean  set true by a client: the machine starts a job with
                                          JobId and DurationS as Start would, then resets it

Such a machine knows no job ids: it starts whatever it is told while it is idle and up, so
it does **not** refuse a duplicate (the gateway's fence must).  Start answers 0 (started),
1 (busy), 2 (faulted) or 3 (refused, ``--refuse-start``).  A fault stops the running job
(logged ``aborted``, why ``fault``) and the counter does not move.  A start by the trigger
bit has no answer: a refused one is only logged ``refused``.  The job log has the same
lines as the job-order machines, with the job id the gateway passed.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from asyncua import Node, Server, ua

from tests.helpers.opcua_jobs import JobLog

STARTED, BUSY, FAULTED, REFUSED = 0, 1, 2, 3


def ended_counts(path: Path | None) -> dict[str, int]:
    """Machine -> jobs it ended in an earlier life (its retentive DoneCount)."""
    out: dict[str, int] = {}
    if path is None or not path.exists():
        return out
    for raw in path.read_text(encoding="utf-8").splitlines():
        try:
            line = json.loads(raw)
        except json.JSONDecodeError:
            continue
        if isinstance(line, dict) and line.get("event") == "ended":
            out[str(line.get("machine"))] = out.get(str(line.get("machine")), 0) + 1
    return out


def _arg(name: str, type_id: int) -> ua.Argument:
    return ua.Argument(Name=name, DataType=ua.NodeId(type_id), ValueRank=-1,
                       Description=ua.LocalizedText(name))


class LegacyMachine:
    """One legacy machine's nodes and its one job at a time."""

    def __init__(self, server: Server, emu: int, machine_id: str, log: JobLog, *,
                 speed: float, refuse_start: bool, done: int) -> None:
        self.server, self.emu, self.machine_id, self.log = server, emu, machine_id, log
        self.speed, self.refuse_start, self.done = speed, refuse_start, done
        self.job: str | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.fault = False
        self._background: set[asyncio.Task[None]] = set()

    def _id(self, name: str) -> ua.NodeId:
        return ua.NodeId(f"Legacy.{self.machine_id}{name}", self.emu)

    def _q(self, name: str) -> ua.QualifiedName:
        return ua.QualifiedName(name, self.emu)

    async def build(self, folder: Node) -> None:
        obj = await folder.add_object(self._id(""), self._q(self.machine_id))
        self.count = await obj.add_variable(self._id(".DoneCount"), self._q("DoneCount"),
                                            ua.Variant(self.done, ua.VariantType.UInt32))
        self.busy = await obj.add_variable(self._id(".Busy"), self._q("Busy"),
                                           ua.Variant(False, ua.VariantType.Boolean))
        self.fault_node = await obj.add_variable(self._id(".Fault"), self._q("Fault"),
                                                 ua.Variant(False, ua.VariantType.Boolean))
        self.alarm = await obj.add_variable(self._id(".AlarmText"), self._q("AlarmText"),
                                            ua.Variant("", ua.VariantType.String))
        self.quality = await obj.add_variable(self._id(".Quality"), self._q("Quality"),
                                              ua.Variant("", ua.VariantType.String))
        await obj.add_method(self._id(".Start"), self._q("Start"), self._start,
                             [_arg("JobId", ua.ObjectIds.String),
                              _arg("DurationS", ua.ObjectIds.Double)],
                             [_arg("Status", ua.ObjectIds.Int32)])
        await obj.add_method(self._id(".Abort"), self._q("Abort"), self._abort, [], [])
        await obj.add_method(self._id(".SetFault"), self._q("SetFault"), self._set_fault,
                             [_arg("Fault", ua.ObjectIds.Boolean),
                              _arg("AlarmText", ua.ObjectIds.String)], [])
        cmd = await obj.add_folder(self._id(".Cmd"), self._q("Cmd"))
        self.job_id = await cmd.add_variable(self._id(".Cmd.JobId"), self._q("JobId"),
                                             ua.Variant("", ua.VariantType.String))
        self.duration = await cmd.add_variable(self._id(".Cmd.DurationS"), self._q("DurationS"),
                                               ua.Variant(1.0, ua.VariantType.Double))
        self.trigger = await cmd.add_variable(self._id(".Cmd.StartTrigger"),
                                              self._q("StartTrigger"),
                                              ua.Variant(False, ua.VariantType.Boolean))
        for node in (self.job_id, self.duration, self.trigger):
            await node.set_writable()
        sub = await self.server.create_subscription(10, self)
        await sub.subscribe_data_change(self.trigger)

    def datachange_notification(self, _node: Node, val: object, _data: object) -> None:
        """The trigger bit changed (asyncua's server-side subscription)."""
        if val is True:
            task = asyncio.ensure_future(self._triggered())
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _triggered(self) -> None:
        jid = str(await self.job_id.read_value())
        duration = float(await self.duration.read_value())
        await self.trigger.write_value(ua.Variant(False, ua.VariantType.Boolean))
        await self._start(ua.NodeId(), ua.Variant(jid), ua.Variant(duration))

    async def _start(self, _parent: ua.NodeId, job_id: ua.Variant,
                     duration_s: ua.Variant) -> list[ua.Variant]:
        jid, duration = str(job_id.Value), float(duration_s.Value)
        status, why = STARTED, ""
        if self.refuse_start:
            status, why = REFUSED, "--refuse-start"
        elif self.fault:
            status, why = FAULTED, "faulted"
        elif self.job is not None:
            status, why = BUSY, f"busy with {self.job}"
        if status != STARTED:
            self.log.write(self.machine_id, jid, "refused", why=why)
            return [ua.Variant(status, ua.VariantType.Int32)]
        self.job = jid
        self.log.write(self.machine_id, jid, "started")
        await self.busy.write_value(ua.Variant(True, ua.VariantType.Boolean))
        self.timer = asyncio.get_running_loop().call_later(max(0.0, duration) / self.speed,
                                                           self._time_up, jid)
        return [ua.Variant(STARTED, ua.VariantType.Int32)]

    def _time_up(self, jid: str) -> None:
        task = asyncio.ensure_future(self._end(jid))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _end(self, jid: str) -> None:
        if self.job != jid:
            return
        self.job, self.timer = None, None
        self.log.write(self.machine_id, jid, "ended")
        await self.quality.write_value(ua.Variant("ok", ua.VariantType.String))
        self.done += 1
        await self.count.write_value(ua.Variant(self.done, ua.VariantType.UInt32))
        await self.busy.write_value(ua.Variant(False, ua.VariantType.Boolean))

    async def _stop(self, why: str) -> None:
        if self.job is None:
            return
        if self.timer is not None:
            self.timer.cancel()
        self.log.write(self.machine_id, self.job, "aborted", why=why)
        self.job, self.timer = None, None
        await self.busy.write_value(ua.Variant(False, ua.VariantType.Boolean))

    async def _abort(self, _parent: ua.NodeId) -> list[ua.Variant]:
        await self._stop("Abort")
        return []

    async def _set_fault(self, _parent: ua.NodeId, fault: ua.Variant,
                         text: ua.Variant) -> list[ua.Variant]:
        self.fault = bool(fault.Value)
        await self.alarm.write_value(ua.Variant(str(text.Value or "") if self.fault else "",
                                                ua.VariantType.String))
        if self.fault:
            await self._stop("fault")
        await self.fault_node.write_value(ua.Variant(self.fault, ua.VariantType.Boolean))
        return []

    def stop(self) -> None:
        if self.timer is not None:
            self.timer.cancel()


async def build_legacy(server: Server, emu: int, ids: list[str], log: JobLog,
                       job_log: Path | None, *, speed: float,
                       refuse_start: set[str]) -> list[LegacyMachine]:
    """``Objects/EMU:Legacy`` with one :class:`LegacyMachine` per id."""
    if not ids:
        return []
    folder = await server.nodes.objects.add_folder(ua.NodeId("Legacy", emu),
                                                   ua.QualifiedName("Legacy", emu))
    done = ended_counts(job_log)
    machines = []
    for machine_id in ids:
        machine = LegacyMachine(server, emu, machine_id, log, speed=speed,
                                refuse_start=machine_id in refuse_start,
                                done=done.get(machine_id, 0))
        await machine.build(folder)
        machines.append(machine)
    return machines
