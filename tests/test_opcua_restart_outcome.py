"""A job whose end the gateway missed, on a machine that no longer knows it (ADR 72).

The link is down when the job ends (here: its notifications never reach the gateway), and
the server is killed (-9) and restarted before the gateway reconnects.  The restarted
server lists no such job and has no response for it.  Before ADR 72 the gateway handed it
back as refused ("not running after restart") and the order called again: the work was
done twice, silently.  Now the gateway says the outcome is unknown (``outcome_unknown``),
which the machine agent holds and escalates (tests/test_resource_outcome_unknown.py).
When the machine still has the job's response (it was only cleared at the machine), the
response says how it ended and the end is reported once.  Judged by the server's job log.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from helpers.waiting import until
from test_equipment_outcome_unknown import machine, sent
from test_opcua_backend import STACKS, Proxy, Rig, executions, free_port, running, server

from agents.protocol.messages import Done, Escalate, Failure
from sim_bridge.opcua.pki import OpcUaPki

pytestmark = [pytest.mark.opcua, pytest.mark.slow, pytest.mark.timeout(400)]


def deafen(rig: Rig) -> list[Any]:
    """The gateway hears no job notification and never reconciles: a job's end reaches it
    only through a reconnect, as if the link had been down when the job ended."""
    dropped: list[Any] = []

    async def deaf(_m: Any, _node: Any, value: Any) -> None:
        dropped.append(value)

    rig.backend.on_jobs = deaf                       # type: ignore[method-assign]
    rig.backend.reconcile = lambda _link: None       # type: ignore[method-assign]
    return dropped


@pytest.mark.parametrize("stack", STACKS)
def test_a_job_ended_unseen_on_a_machine_restarted_since_is_an_unknown_outcome_not_a_redo(
        tmp_path: Path, stack: str) -> None:
    pki = OpcUaPki(tmp_path / "keys" / "opcua")
    emu, endpoint = server(tmp_path, stack, ["m01"], pki, port=free_port())
    jid = "o1/0@1"
    try:
        async def scenario() -> None:
            async with running(Rig(endpoint, pki, ["m01"], grace_s=600.0)) as rig:
                deafen(rig)
                rig.start("m01", "o1/0", epoch=1, duration_s=5.0)     # 0.1 s wall
                await until("the job's start", lambda: rig.recorded("op_start"))
                await until("the job's end at the machine", lambda: executions(emu) == {jid: 1})
                emu.kill()                                # kill -9 after the job's end ...
                await until("the lost link", lambda: rig.recorded("opcua_link_lost"))
                emu.start()                               # ... restarted on its job log
                emu.wait_ready()
                refused = await until("the outcome", lambda: rig.seen("command_refused", "o1/0")
                                      or rig.seen("operation_done", "o1/0"))
                assert [e.event for e in refused] == ["command_refused"]
                assert refused[0].data["outcome_unknown"] is True, refused[0].data
                assert jid in refused[0].data["why"]
                assert [r["job"] for r in rig.recorded("opcua_outcome_unknown")] == [jid]
                assert not rig.recorded("opcua_found_by_response")
                assert "o1/0" not in rig.gateway.fence.running    # the gateway holds nothing
                assert not rig.seen("fault")                      # within grace: no fault
                assert rig.backend.query_state("m01")
                # what the gateway said, as the machine agent running the task takes it:
                # held and escalated, not handed back for the order to do it again
                agent = machine()
                out = agent.on_plant_event(refused[0], 50.0)
                assert not sent(out, Failure) and not sent(out, Done)
                assert [s.body.cause for s in sent(out, Escalate)] == ["job_outcome_unknown"]

        asyncio.run(scenario())
    finally:
        emu.stop()
    assert executions(emu, "started") == {jid: 1}
    assert executions(emu) == {jid: 1}


@pytest.mark.parametrize("stack", STACKS)
def test_a_job_ended_unseen_and_cleared_at_the_machine_is_reported_done_from_its_response(
        tmp_path: Path, stack: str) -> None:
    pki = OpcUaPki(tmp_path / "keys" / "opcua")
    emu, endpoint = server(tmp_path, stack, ["m01"], pki)
    port = int(endpoint.rsplit(":", 1)[1])
    jid = "o1/0@1"
    try:
        async def scenario() -> None:
            async with Proxy(port) as proxy:
                rig = Rig(f"opc.tcp://127.0.0.1:{proxy.port}", pki, ["m01"], grace_s=600.0)
                async with running(rig):
                    deafen(rig)
                    m = rig.backend.machines["m01"]
                    rig.start("m01", "o1/0", epoch=1, duration_s=5.0)
                    await until("the job's start", lambda: rig.recorded("op_start"))
                    await until("the job's end", lambda: executions(emu) == {jid: 1})
                    assert await m.profile.clear(jid) == 0          # an operator cleared it
                    proxy.drop()
                    done = await until("the outcome", lambda: rig.seen("operation_done", "o1/0")
                                       or rig.seen("command_refused", "o1/0"))
                    assert [(e.event, e.data) for e in done] == [
                        ("operation_done", {"quality": "ok"})]
                    found = rig.recorded("opcua_found_by_response")
                    assert [(r["job"], r["state"]) for r in found] == [(jid, "Ended")]
                    assert not rig.recorded("opcua_outcome_unknown")

        asyncio.run(scenario())
    finally:
        emu.stop()
    assert executions(emu, "started") == {jid: 1}
    assert executions(emu) == {jid: 1}
