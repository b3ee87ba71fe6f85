"""The ``nodes`` profile: legacy machines driven through an explicit mapping of their nodes.

The machines are the asyncua emulator's ``--legacy`` machines (tests/opcua/CONTRACT.md,
"Legacy machines": a Start method, a done counter, busy and fault bits, an alarm text, a
quality string), reached over loopback with Basic256Sha256/SignAndEncrypt by the gateway
with the ``opcua`` backend, as in tests/test_opcua_backend.py.  What a machine ran is read
from the server's own job log.  A test-only ``SetFault`` method raises and clears the fault
bit (and, on the job-order machines, MachineryItemState ``OutOfService``).  Waits are on
events; the bounds are only hang guards.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest
from helpers.waiting import until
from test_equipment_cli import autocell, cell_with
from test_opcua_backend import NODESETS, Proxy, Rig, executions, free_port, running, server

from agents.cell.equipment import OpcUaEquipment
from agents.protocol.actions import Command
from sim_bridge.opcua.legacy import find_node
from sim_bridge.opcua.pki import OpcUaPki
from sim_bridge.opcua.session import SessionParams, open_session

pytestmark = [pytest.mark.opcua, pytest.mark.slow,
              pytest.mark.skipif(not NODESETS.is_dir() and not os.environ.get("CI"),
                                 reason="the asyncua emulator's nodesets "
                                 "are not installed: run `bash tests/setup.sh`")]

MAPPING = {"start": "Start", "done_counter": "DoneCount", "busy": "Busy", "fault": "Fault",
           "alarm_text": "AlarmText", "quality": "Quality", "abort": "Abort"}


def legacy(endpoint: str, pki: OpcUaPki, machine: str = "L1", **kw: Any) -> Rig:
    """A gateway driving the emulator's legacy machine ``machine`` with the full mapping."""
    return Rig(endpoint, pki, [machine], profile="nodes", machine=f"Legacy/{machine}",
               nodes=kw.pop("nodes", MAPPING), readings={}, **kw)


def legacy_server(tmp_path: Path, pki: OpcUaPki, *, ids: str = "L1", machines: list[str] | None
                  = None, extra: list[str] | None = None, **kw: Any) -> Any:
    return server(tmp_path, "asyncua", machines or [], pki,
                  extra=["--legacy", ids, *(extra or [])], **kw)


async def set_fault(endpoint: str, pki: OpcUaPki, path: str, fault: bool, text: str) -> None:
    """Call the emulator's test-only ``SetFault`` on the object at ``path`` below Objects."""
    client = await open_session(SessionParams(endpoint, OpcUaEquipment(endpoint=endpoint), pki,
                                              None))
    try:
        table = await client.get_namespace_array()
        obj, _ = await find_node(client, table, client.nodes.objects, path, path, "object")
        method, _ = await find_node(client, table, obj, "SetFault", path, "SetFault")
        await obj.call_method(method.nodeid, fault, text)
    finally:
        await client.disconnect()


def test_a_legacy_job_runs_once_and_reports_done_with_its_quality(tmp_path: Path) -> None:
    pki = OpcUaPki(tmp_path / "keys" / "opcua")
    emu, endpoint = legacy_server(tmp_path, pki)
    try:
        async def scenario() -> None:
            async with running(legacy(endpoint, pki)) as rig:
                rig.start("L1", "o1/0", epoch=1, duration_s=5.0)
                done = await until("operation_done", lambda: rig.seen("operation_done", "o1/0"))
                assert done[0].data == {"quality": "ok"}
                assert [e.event for e in rig.events if e.task == "o1/0"] == [
                    "quality_result", "operation_done"]
                assert rig.recorded("op_start")[0]["job"] == "o1/0@1"
                # the gateway's fence refuses the completed task: the only guard there is
                rig.start("L1", "o1/0", epoch=2)
                refused = await until("the fence's refusal",
                                      lambda: rig.seen("command_refused", "o1/0"))
                assert refused[0].data["done_at"] == "bay"
                # the next job on the same machine: the counter's new baseline
                rig.start("L1", "o2/0", epoch=1, duration_s=5.0)
                await until("the second job", lambda: rig.seen("operation_done", "o2/0"))
                assert len(rig.seen("operation_done")) == 2

        asyncio.run(scenario())
    finally:
        emu.stop()
    assert executions(emu, "started") == {"o1/0@1": 1, "o2/0@1": 1}
    assert executions(emu) == {"o1/0@1": 1, "o2/0@1": 1}


def test_a_refused_start_is_a_typed_refusal(tmp_path: Path) -> None:
    pki = OpcUaPki(tmp_path / "keys" / "opcua")
    emu, endpoint = legacy_server(tmp_path, pki, extra=["--refuse-start", "L1"])
    try:
        async def scenario() -> None:
            async with running(legacy(endpoint, pki)) as rig:
                rig.start("L1", "t0")
                refused = await until("the refusal", lambda: rig.seen("command_refused", "t0"))
                assert "equipment refused the start: start status 3" in refused[0].data["why"]
                assert rig.recorded("opcua_refused")[0]["job"] == "t0@1"
                assert "t0" not in rig.gateway.fence.running
                assert rig.backend.query_state("L1")

        asyncio.run(scenario())
    finally:
        emu.stop()
    assert executions(emu, "started") == {}
    assert executions(emu, "refused") == {"t0@1": 1}


def test_the_fault_bit_is_a_fault_with_the_alarm_text_and_clearing_it_repairs(
        tmp_path: Path) -> None:
    pki = OpcUaPki(tmp_path / "keys" / "opcua")
    emu, endpoint = legacy_server(tmp_path, pki, speed=1.0)
    try:
        async def scenario() -> None:
            async with running(legacy(endpoint, pki)) as rig:
                rig.start("L1", "o1/0", duration_s=1000.0)
                await until("the job's start", lambda: rig.recorded("op_start"))
                await set_fault(endpoint, pki, "Legacy/L1", True, "spindle overheat")
                fault = await until("the fault", lambda: rig.seen("fault"))
                assert fault[0].data == {"reason": "spindle overheat"}
                stopped = await until("the job handed back", lambda: rig.recorded("op_abort"))
                assert stopped[0]["why"] == "spindle overheat"
                assert "o1/0" not in rig.gateway.fence.running
                assert not rig.backend.query_state("L1")
                await set_fault(endpoint, pki, "Legacy/L1", False, "")
                await until("repaired", lambda: rig.seen("repaired"))
                rig.start("L1", "o1/0", epoch=2, duration_s=0.0)
                await until("operation_done", lambda: rig.seen("operation_done", "o1/0"))
                assert not rig.recorded("opcua_late_end")

        asyncio.run(scenario())
    finally:
        emu.stop()
    assert executions(emu, "started") == {"o1/0@1": 1, "o1/0@2": 1}
    assert executions(emu, "aborted") == {"o1/0@1": 1}
    assert executions(emu) == {"o1/0@2": 1}


def test_an_abort_stops_the_legacy_job(tmp_path: Path) -> None:
    pki = OpcUaPki(tmp_path / "keys" / "opcua")
    emu, endpoint = legacy_server(tmp_path, pki, speed=1.0)
    try:
        async def scenario() -> None:
            async with running(legacy(endpoint, pki)) as rig:
                rig.start("L1", "o1/0", duration_s=1000.0)
                await until("the job's start", lambda: rig.recorded("op_start"))
                rig.gateway.command(Command("abort_operation", "L1", "o1/0", {}))
                aborted = await until("op_abort", lambda: rig.recorded("op_abort"))
                assert aborted[0]["why"] == "aborted"
                assert not rig.seen("command_refused")

        asyncio.run(scenario())
    finally:
        emu.stop()
    assert executions(emu, "aborted") == {"o1/0@1": 1}


def test_out_of_service_on_a_job_order_machine_faults_and_comes_back(tmp_path: Path) -> None:
    pki = OpcUaPki(tmp_path / "keys" / "opcua")
    emu, endpoint = server(tmp_path, "asyncua", ["m01"], pki, speed=1.0)
    try:
        async def scenario() -> None:
            async with running(Rig(endpoint, pki, ["m01"])) as rig:
                rig.start("m01", "o1/0", duration_s=1000.0)
                await until("the job's start", lambda: rig.recorded("op_start"))
                await set_fault(endpoint, pki, "Machines/m01", True, "door open")
                fault = await until("the fault", lambda: rig.seen("fault"))
                assert fault[0].data == {"reason": "machine state OutOfService"}
                assert "o1/0" not in rig.gateway.fence.running
                await set_fault(endpoint, pki, "Machines/m01", False, "")
                await until("repaired", lambda: rig.seen("repaired"))
                # the job the machine kept running is an orphan: aborted, never reported
                await until("the orphan's end", lambda: rig.recorded("opcua_late_end"))
                assert not rig.seen("operation_done")

        asyncio.run(scenario())
    finally:
        emu.stop()
    assert executions(emu, "aborted") == {"o1/0@1": 1}
    assert executions(emu) == {}


def test_kill_9_mid_legacy_job_faults_after_grace_and_runs_nothing_twice(
        tmp_path: Path) -> None:
    pki = OpcUaPki(tmp_path / "keys" / "opcua")
    emu, endpoint = legacy_server(tmp_path, pki, speed=1.0, port=free_port())
    try:
        async def scenario() -> None:
            async with running(legacy(endpoint, pki, grace_s=0.5)) as rig:
                rig.start("L1", "o1/0", duration_s=1000.0)
                await until("the job's start", lambda: rig.recorded("op_start"))
                emu.kill()
                fault = await until("the fault", lambda: rig.seen("fault"))
                assert fault[0].data["reason"].startswith("link lost")
                assert "o1/0" not in rig.gateway.fence.running
                emu.start()
                emu.wait_ready()
                await until("repaired", lambda: rig.seen("repaired"))
                rig.start("L1", "o1/0", epoch=2, duration_s=0.0)
                await until("operation_done", lambda: rig.seen("operation_done", "o1/0"))
                assert len(rig.seen("operation_done")) == 1

        asyncio.run(scenario())
    finally:
        emu.stop()
    assert executions(emu, "started") == {"o1/0@1": 1, "o1/0@2": 1}
    assert executions(emu) == {"o1/0@2": 1}


def test_a_legacy_job_that_ends_while_the_link_is_down_is_reported_once(
        tmp_path: Path) -> None:
    pki = OpcUaPki(tmp_path / "keys" / "opcua")
    emu, endpoint = legacy_server(tmp_path, pki, speed=1.0)
    port = int(endpoint.rsplit(":", 1)[1])
    try:
        async def scenario() -> None:
            async with Proxy(port) as proxy:
                rig = legacy(f"opc.tcp://127.0.0.1:{proxy.port}", pki, grace_s=600.0)
                async with running(rig):
                    rig.start("L1", "o1/0", duration_s=2.0)
                    await until("the job's start", lambda: rig.recorded("op_start"))
                    proxy.drop()
                    await until("the lost link", lambda: rig.recorded("opcua_link_lost"))
                    await until("a new session", lambda: [r for r in rig.recorded(
                        "opcua_link_up") if r["session"] == 2])
                    await until("operation_done", lambda: rig.seen("operation_done", "o1/0"))
                    assert not rig.seen("fault") and not rig.seen("command_refused")
                    assert len(rig.seen("operation_done", "o1/0")) == 1

        asyncio.run(scenario())
    finally:
        emu.stop()
    assert executions(emu, "started") == {"o1/0@1": 1}


def test_equipment_check_on_legacy_machines_names_a_missing_node(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    pki = OpcUaPki(keys / "opcua")
    emu, endpoint = legacy_server(tmp_path, pki, ids="L1,L2")
    try:
        good = {"endpoint": endpoint, "profile": "nodes", "machine": "Legacy/L1",
                "nodes": MAPPING}
        bad = {"endpoint": endpoint, "profile": "nodes", "machine": "Legacy/L2",
               "nodes": {**MAPPING, "fault": "FaultBit"}}
        cell = cell_with(tmp_path, {"mill1": good, "lathe1": bad})
        res = autocell("equipment", "check", str(cell), "--keys-dir", str(keys), "--json")
        assert res.returncode == 1, res.stdout + res.stderr
        verdicts = {c["machine"]: c for c in json.loads(res.stdout)}
        assert verdicts["mill1"]["ok"], verdicts
        assert verdicts["lathe1"]["problems"] == [
            "Legacy/L2: no node FaultBit (nodes.fault)"], verdicts
        # a method mapped to a variable is named too
        wrong = {**good, "nodes": {**MAPPING, "abort": "Busy"}}
        cell = cell_with(tmp_path, {"mill1": wrong})
        res = autocell("equipment", "check", str(cell), "--keys-dir", str(keys))
        assert res.returncode == 1
        assert "nodes.abort must be a Method" in res.stdout, res.stdout
    finally:
        emu.stop()


def test_a_trigger_bit_and_a_job_id_variable_start_a_legacy_job_once(tmp_path: Path) -> None:
    pki = OpcUaPki(tmp_path / "keys" / "opcua")
    emu, endpoint = legacy_server(tmp_path, pki)
    nodes = {"trigger": "Cmd/StartTrigger", "job_id": "Cmd/JobId", "done_counter": "DoneCount",
             "busy": "Busy", "quality": "Quality"}
    try:
        async def scenario() -> None:
            async with running(legacy(endpoint, pki, nodes=nodes)) as rig:
                rig.start("L1", "o1/0", epoch=1, duration_s=5.0)
                done = await until("operation_done", lambda: rig.seen("operation_done", "o1/0"))
                assert done[0].data == {"quality": "ok"}
                assert rig.recorded("op_start")[0]["job"] == "o1/0@1"
                profile = rig.backend.machines["L1"].profile
                nodes_of = profile.nodes  # type: ignore[attr-defined]
                assert await nodes_of["trigger"].read_value() is False   # the machine reset it
                assert await nodes_of["job_id"].read_value() == "o1/0@1"
                rig.start("L1", "o2/0", epoch=1)
                await until("the next job", lambda: rig.seen("operation_done", "o2/0"))

        asyncio.run(scenario())
    finally:
        emu.stop()
    assert executions(emu, "started") == {"o1/0@1": 1, "o2/0@1": 1}
    assert executions(emu) == {"o1/0@1": 1, "o2/0@1": 1}
