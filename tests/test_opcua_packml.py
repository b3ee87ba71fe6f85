"""The ``packml`` profile: PackML units (OPC 30050) driven through their state machines.

The units are the emulators' ``--packml`` units on both stacks, node-opcua and asyncua's
server (tests/opcua/CONTRACT.md, "PackML units": a ``PackMLBaseObjectType`` instance from
the PackML nodeset of node-opcua-nodesets), reached over loopback with Basic256Sha256/SignAndEncrypt by the
gateway with the ``opcua`` backend, as in tests/test_opcua_backend.py.  An *operator* is a
second client calling the unit's own methods (an HMI).  What a unit ran is read from the
server's own job log.  Waits are on events; the bounds are only hang guards.  A missing
emulator in CI is a failure, not a skip.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from helpers.waiting import until
from test_opcua_backend import STACKS, Rig, executions, free_port, running, server

from agents.cell.equipment import OpcUaEquipment
from sim_bridge.opcua.legacy import find_node
from sim_bridge.opcua.packml import NS_PACKML
from sim_bridge.opcua.pki import OpcUaPki
from sim_bridge.opcua.session import SessionParams, open_session

pytestmark = [pytest.mark.opcua, pytest.mark.slow, pytest.mark.timeout(600)]


def packml(endpoint: str, pki: OpcUaPki, unit: str = "P1", **kw: Any) -> Rig:
    """A gateway driving the emulator's PackML unit ``unit``."""
    return Rig(endpoint, pki, [unit], profile="packml", readings={}, **kw)


def packml_server(tmp_path: Path, pki: OpcUaPki, stack: str, ids: str = "P1",
                  **kw: Any) -> Any:
    return server(tmp_path, stack, [], pki, extra=["--packml", ids], **kw)


async def operator(endpoint: str, pki: OpcUaPki, unit: str, method: str,
                   job: str | None = None) -> None:
    """An operator at the unit's HMI calls ``method`` (``BaseStateMachine/Abort``, ...);
    ``job`` makes it a Start with that job id."""
    client = await open_session(SessionParams(endpoint, OpcUaEquipment(endpoint=endpoint), pki,
                                              None))
    try:
        await client.load_data_type_definitions()
        table = await client.get_namespace_array()
        obj, _ = await find_node(client, table, client.nodes.objects,
                                 f"{unit}/{method.rsplit('/', 1)[0]}", unit, "object")
        node, _ = await find_node(client, table, obj, method.rsplit("/", 1)[1], unit, method)
        args = []
        if job is not None:
            from asyncua import ua
            d = ua.get_type(ua.NodeId(ua.Int32(16), ua.Int16(table.index(NS_PACKML))))
            args = [ua.Variant([d(ID=1, Name=job, Value=0.0), d(ID=2, Name="duration_s",
                                                               Value=1000.0)],
                               ua.VariantType.ExtensionObject, is_array=True)]
        await obj.call_method(node.nodeid, *args)
    finally:
        await client.disconnect()


def states(rig: Rig, unit: str = "P1") -> tuple[str, str, str]:
    s = rig.backend.machines[unit].profile.state  # type: ignore[attr-defined]
    return s["base"], s["machine"], s["execute"]


@pytest.mark.parametrize("stack", STACKS)
def test_a_packml_job_runs_once_the_unit_is_reset_and_refuses_its_id_again(
        tmp_path: Path, stack: str) -> None:
    pki = OpcUaPki(tmp_path / "keys" / "opcua")
    emu, endpoint = packml_server(tmp_path, pki, stack)
    try:
        async def scenario() -> None:
            async with running(packml(endpoint, pki)) as rig:
                rig.start("P1", "o1/0", epoch=1, duration_s=5.0)
                done = await until("operation_done", lambda: rig.seen("operation_done", "o1/0"))
                assert done[0].data == {"quality": "ok"}
                assert rig.recorded("op_start")[0]["job"] == "o1/0@1"
                await until("the gateway's Reset", lambda: states(rig)[2] == "Idle")
                # the unit itself refuses a job id it ran (a gateway whose fence was lost)
                rig.backend.start_operation("P1", "o1/0", {"award_epoch": 1, "duration_s": 1})
                again = await until("the unit's own refusal", lambda: rig.seen(
                    "command_refused", "o1/0", lambda e: "equipment refused" in e.data["why"]))
                assert "BadInvalidArgument" in again[0].data["why"]
                rig.start("P1", "o2/0", epoch=1, duration_s=1.0)
                await until("the next job", lambda: rig.seen("operation_done", "o2/0"))
                assert not rig.seen("fault")

        asyncio.run(scenario())
    finally:
        emu.stop()
    assert executions(emu, "started") == {"o1/0@1": 1, "o2/0@1": 1}
    assert executions(emu) == {"o1/0@1": 1, "o2/0@1": 1}
    assert executions(emu, "refused") == {"o1/0@1": 1}


@pytest.mark.parametrize("stack", STACKS)
def test_back_to_back_jobs_on_one_unit_each_start_in_idle_none_refused(
        tmp_path: Path, stack: str) -> None:
    """Zero-length jobs, each started the moment the one before is reported done (as the
    agents and ``bench plant --profile packml`` do).  The unit passes Complete, Resetting,
    Idle, Starting, Completing, Complete within a publishing interval, so the notifications
    lag and arrive item by item: the next job's id beside the job before's ``Complete`` is
    not its end (it once was, the unit was left Complete and refused every next Start until
    the gateway escalated), and a Start waits for the unit's Idle, read afresh."""
    pki = OpcUaPki(tmp_path / "keys" / "opcua")
    emu, endpoint = packml_server(tmp_path, pki, stack)
    rounds = 40
    try:
        async def scenario() -> None:
            async with running(packml(endpoint, pki)) as rig:
                for r in range(rounds):
                    task = f"o{r}/0"
                    rig.start("P1", task, epoch=1, duration_s=0.0)
                    await until(f"the end of {task}", lambda t=task: rig.seen(  # type: ignore[misc]
                        "operation_done", t) or rig.seen("command_refused", t), poll_s=0.001)
                    assert not rig.seen("command_refused"), rig.recorded("opcua_refused")
                await until("the last Reset", lambda: states(rig)[2] == "Idle")
                assert not rig.seen("fault")

        asyncio.run(scenario())
    finally:
        emu.stop()
    every = {f"o{r}/0@1": 1 for r in range(rounds)}
    assert executions(emu, "started") == every
    assert executions(emu) == every               # each ended, none refused nor aborted
    assert executions(emu, "refused") == {}


@pytest.mark.parametrize("stack", STACKS)
def test_an_abort_stops_the_job_and_the_gateway_brings_the_unit_back_to_idle(
        tmp_path: Path, stack: str) -> None:
    pki = OpcUaPki(tmp_path / "keys" / "opcua")
    emu, endpoint = packml_server(tmp_path, pki, stack)
    try:
        async def scenario() -> None:
            async with running(packml(endpoint, pki)) as rig:
                rig.start("P1", "o1/0", duration_s=10_000.0)
                await until("the job's start", lambda: rig.recorded("op_start"))
                rig.backend.abort_operation("P1", "o1/0")
                aborted = await until("op_abort", lambda: rig.recorded("op_abort"))
                assert aborted[0]["why"] == "aborted"
                await until("Clear and Reset", lambda: states(rig) == ("Cleared", "Running",
                                                                      "Idle"))
                rig.start("P1", "o2/0", duration_s=1.0)
                await until("the next job", lambda: rig.seen("operation_done", "o2/0"))
                assert not rig.seen("fault") and not rig.seen("repaired")

        asyncio.run(scenario())
    finally:
        emu.stop()
    assert executions(emu, "aborted") == {"o1/0@1": 1}
    assert executions(emu) == {"o2/0@1": 1}


@pytest.mark.parametrize("stack", STACKS)
def test_an_abort_at_the_machine_is_a_fault_until_the_operator_clears_and_resets(
        tmp_path: Path, stack: str) -> None:
    pki = OpcUaPki(tmp_path / "keys" / "opcua")
    emu, endpoint = packml_server(tmp_path, pki, stack)
    try:
        async def scenario() -> None:
            async with running(packml(endpoint, pki)) as rig:
                rig.start("P1", "o1/0", duration_s=10_000.0)
                await until("the job's start", lambda: rig.recorded("op_start"))
                await operator(endpoint, pki, "P1", "BaseStateMachine/Abort")
                fault = await until("the fault", lambda: rig.seen("fault"))
                assert fault[0].data["reason"].startswith("PackML Abort")
                assert "o1/0" not in rig.gateway.fence.running    # handed back
                assert not rig.backend.query_state("P1")
                await until("Aborted", lambda: states(rig)[0] == "Aborted")
                assert not rig.seen("repaired")   # the gateway never clears a stop it did not ask
                await operator(endpoint, pki, "P1", "BaseStateMachine/Clear")
                await until("Stopped", lambda: states(rig)[1] == "Stopped")
                await operator(endpoint, pki, "P1", "BaseStateMachine/MachineState/Reset")
                await until("repaired", lambda: rig.seen("repaired"))
                await until("Idle", lambda: states(rig) == ("Cleared", "Running", "Idle"))
                assert len(rig.seen("fault")) == 1 and len(rig.seen("repaired")) == 1
                rig.start("P1", "o1/0", epoch=2, duration_s=1.0)
                await until("the task again", lambda: rig.seen("operation_done", "o1/0"))

        asyncio.run(scenario())
    finally:
        emu.stop()
    assert executions(emu, "started") == {"o1/0@1": 1, "o1/0@2": 1}
    assert executions(emu) == {"o1/0@2": 1}


@pytest.mark.parametrize("stack", STACKS)
def test_a_start_in_the_wrong_state_is_refused_by_the_unit(tmp_path: Path, stack: str) -> None:
    pki = OpcUaPki(tmp_path / "keys" / "opcua")
    emu, endpoint = packml_server(tmp_path, pki, stack)
    try:
        async def scenario() -> None:
            async with running(packml(endpoint, pki)) as rig:
                # an operator started a job of their own from the HMI: the unit is Execute
                await operator(endpoint, pki, "P1", "BaseStateMachine/MachineState/"
                               "ExecuteState/Start", job="hmi-1")
                await until("Execute", lambda: states(rig)[2] == "Execute")
                assert rig.backend.query_state("P1")         # up, but not Idle
                rig.start("P1", "o1/0", duration_s=1.0)
                refused = await until("the refusal", lambda: rig.seen("command_refused", "o1/0"))
                assert "BadInvalidState" in refused[0].data["why"]
                assert rig.recorded("opcua_refused")[0]["job"] == "o1/0@1"

        asyncio.run(scenario())
    finally:
        emu.stop()
    assert executions(emu, "started") == {"hmi-1": 1}
    assert executions(emu, "refused") == {"o1/0@1": 1}


@pytest.mark.parametrize("stack", STACKS)
def test_kill_9_mid_job_faults_reroutes_and_the_unit_runs_nothing_twice(
        tmp_path: Path, stack: str) -> None:
    pki = OpcUaPki(tmp_path / "keys" / "opcua")
    port = free_port()
    emu, endpoint = packml_server(tmp_path, pki, stack, speed=1.0, port=port)
    try:
        async def scenario() -> None:
            async with running(packml(endpoint, pki, grace_s=0.5)) as rig:
                rig.start("P1", "o1/0", duration_s=1000.0)
                await until("the job's start", lambda: rig.recorded("op_start"))
                emu.kill()
                fault = await until("the fault", lambda: rig.seen("fault"))
                assert fault[0].data["reason"].startswith("link lost")
                assert "o1/0" not in rig.gateway.fence.running
                emu.start()
                emu.wait_ready()
                await until("repaired", lambda: rig.seen("repaired"))
                # the restarted unit refuses the old job id; the new award runs once
                rig.backend.start_operation("P1", "o1/0", {"award_epoch": 1, "duration_s": 0})
                await until("the unit's refusal", lambda: rig.seen(
                    "command_refused", "o1/0", lambda e: "equipment refused" in e.data["why"]))
                rig.start("P1", "o1/0", epoch=2, duration_s=0.0)
                await until("operation_done", lambda: rig.seen("operation_done", "o1/0"))

        asyncio.run(scenario())
    finally:
        emu.stop()
    assert executions(emu, "started") == {"o1/0@1": 1, "o1/0@2": 1}
    assert executions(emu) == {"o1/0@2": 1}
