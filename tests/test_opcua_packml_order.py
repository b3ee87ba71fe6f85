"""The ``packml`` profile's picture of a unit, fed notifications in a lagging order.

No server: the unit is a few fake nodes that answer reads and method calls, so the order
of the notifications is the test's to choose.  The order is the one the node-opcua
emulator produced under ``bench plant --profile packml`` (tests/test_opcua_packml.py runs
the real thing): a zero-length job passes Complete, Resetting, Idle, Starting, Completing
and Complete within one publishing interval, the news arrives item by item, and the next
job's id in ``Status/Parameter`` may arrive beside the job before's ``Complete``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from asyncua import ua

from agents.cell.equipment import OpcUaEquipment
from sim_bridge.opcua.jobs import ENDED
from sim_bridge.opcua.packml import PackMLProfile


class Unit:
    """The unit's truth: what a read answers, and the methods that move it."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {"base": "Cleared", "machine": "Running",
                                       "execute": "Complete", "processed": 1,
                                       "parameter": "o0@1"}
        self.calls: list[str] = []


class Node:
    def __init__(self, unit: Unit, key: str) -> None:
        self.unit, self.key, self.nodeid = unit, key, ua.NodeId(key, 1)

    async def read_value(self) -> Any:
        v = self.unit.values[self.key]
        if self.key == "processed":
            return [type("C", (), {"AccCount": v})()]
        return ua.LocalizedText(v) if isinstance(v, str) else v

    async def call_method(self, method: ua.NodeId, *args: Any) -> None:
        name = str(method.Identifier)
        self.unit.calls.append(name)
        if name == "reset_complete":
            if self.unit.values["execute"] != "Complete":
                raise ua.UaStatusCodeError(ua.StatusCodes.BadInvalidState)
            self.unit.values["execute"] = "Idle"       # Resetting is over by the next read
        elif name == "start":
            if self.unit.values["execute"] != "Idle":
                raise ua.UaStatusCodeError(ua.StatusCodes.BadInvalidState)
            self.unit.values["execute"] = "Starting"


def profile(unit: Unit) -> PackMLProfile:
    p = PackMLProfile("P1", OpcUaEquipment(endpoint="opc.tcp://x:4840", profile="packml"))
    keys = ("base", "machine", "execute", "parameter", "processed", "start", "reset_complete")
    p.nodes = {k: Node(unit, k) for k in keys}           # type: ignore[misc]
    p.parents = {k: p.nodes[k] for k in ("start", "reset_complete")}
    p.descriptor = lambda **kw: type("D", (), kw)()
    return p


def descriptor(jid: str) -> list[Any]:
    return [type("D", (), {"ID": 1, "Name": jid})()]


def test_the_next_jobs_id_beside_the_job_befores_complete_is_not_its_end() -> None:
    unit = Unit()
    p = profile(unit)
    p._set("base", "Cleared")
    p._set("machine", "Running")
    p._set("execute", "Complete")            # the job before's end, as notified
    p._set("parameter", descriptor("o0@1"))
    p._set("processed", [type("C", (), {"AccCount": 1})()])
    unit.values["execute"] = "Idle"          # the gateway's Reset went through
    asyncio.run(p.start("o1@1", {"duration_s": 0.0}))
    assert unit.calls == ["start"]
    # the new job's id arrives before the execute state's news: Complete is stale
    p._set("parameter", descriptor("o1@1"))
    assert p._states() == {}
    # the job before's Complete notified after the Start (its end seen first on the
    # counter) is not this job's end either
    p._set("execute", "Complete")
    assert p._states() == {}
    p._set("execute", "Starting")
    p._set("execute", "Complete")
    assert p._states() == {"o1@1": ENDED}


def test_a_start_resets_a_unit_left_complete_and_waits_for_idle() -> None:
    unit = Unit()                            # Complete: its Reset was missed
    p = profile(unit)
    asyncio.run(p.start("o1@1", {"duration_s": 0.0}))
    assert unit.calls == ["reset_complete", "start"]
