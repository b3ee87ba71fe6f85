"""A start re-sent on reconnect that the machine refuses because the first one ran (ADR 62).

On reconnect the backend sends an unconfirmed start again, with the same JobOrderID, when the
job list read afresh does not show it: the machine refuses a duplicate, so nothing runs twice.
Under load the first StoreAndStart can reach the server *after* that read (a lost session's
requests still queued in the server); the re-send is then refused as a duplicate of a job
that did run.  That refusal must confirm the job, not refuse it: its end is followed and
reported.  The race is set up directly — the start's answer taken as lost, the settle of a
reconnect given an empty job list — against a real server, whose job log is the judge."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from helpers.waiting import until
from test_opcua_backend import STACKS, Rig, executions, running, server

from sim_bridge.opcua.pki import OpcUaPki

pytestmark = [pytest.mark.opcua, pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.mark.parametrize("stack", STACKS)
def test_a_resent_start_refused_as_already_run_is_followed_to_its_end_not_refused(
        tmp_path: Path, stack: str) -> None:
    pki = OpcUaPki(tmp_path / "keys" / "opcua")
    emu, endpoint = server(tmp_path, stack, ["m01"], pki)
    try:
        async def scenario() -> None:
            async with running(Rig(endpoint, pki, ["m01"])) as rig:
                rig.start("m01", "o1/0", epoch=1, duration_s=100.0)     # 2 s wall at speed 50
                await until("the start", lambda: rig.recorded("op_start"))
                m = rig.backend.machines["m01"]
                m.confirmed = False         # its answer lost with the session, as it were
                async with m.lock:          # a reconnect whose job list did not show it yet
                    await rig.backend._settle(m, {}, reconnect=True)
                found = rig.recorded("opcua_resend_found_started")
                assert [(r["job"], r["state"]) for r in found] == [("o1/0@1", "Running")]
                done = await until("operation_done", lambda: rig.seen("operation_done", "o1/0"))
                assert done[0].data == {"quality": "ok"}
                assert not rig.seen("command_refused") and not rig.recorded("opcua_refused")

        asyncio.run(scenario())
    finally:
        emu.stop()
    assert executions(emu, "started") == {"o1/0@1": 1}
    assert executions(emu, "refused") == {"o1/0@1": 1}          # the re-send, by the machine
    assert executions(emu) == {"o1/0@1": 1}
