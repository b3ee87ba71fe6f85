"""A start reported refused while its first send may still run (ADR 72).

ISA-95's ReturnStatus 3 means both "a duplicate" and "busy".  A start unanswered in time is
sent again with the same JobOrderID (ADR 70); when the machine is busy with another job, the
re-send is refused as busy, and the job list and the job's response show no trace of the
first send — it is still queued in the server.  The task is then reported refused and the
order calls again elsewhere.  Should the first send come out of the queue once the machine
is free, it runs the same operation a second time.  The gateway keeps such a JobOrderID
watched and aborts it when it shows up.  The queue is modelled on the client, as in
tests/test_opcua_resend.py; the server's own job log is the judge.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from helpers.waiting import until
from test_opcua_backend import STACKS, Rig, executions, running, server

from sim_bridge.opcua.pki import OpcUaPki

pytestmark = [pytest.mark.opcua, pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.mark.parametrize("stack", STACKS)
def test_a_start_refused_as_busy_whose_first_send_runs_later_is_aborted_not_run_twice(
        tmp_path: Path, stack: str) -> None:
    pki = OpcUaPki(tmp_path / "keys" / "opcua")
    # speed 1: the late job would run 20 s, so its abort comes long before its end
    emu, endpoint = server(tmp_path, stack, ["m01"], pki, speed=1.0)
    jid = "o1/0@1"
    try:
        async def scenario() -> None:
            async with running(Rig(endpoint, pki, ["m01"])) as rig:
                m = rig.backend.machines["m01"]
                real_start = m.profile.start
                # the machine is busy with a job of its own (started at the machine)
                assert await real_start("local@1", {"duration_s": 1000.0}) is None
                release = asyncio.Event()
                queued: list[asyncio.Task[str | None]] = []

                async def start(j: str, args: Any) -> str | None:
                    if not queued:                  # the first send: stuck in the server
                        async def later() -> str | None:
                            await release.wait()
                            return await real_start(j, args)
                        queued.append(asyncio.ensure_future(later()))
                        raise TimeoutError
                    return await real_start(j, args)   # the re-send overtakes it

                m.profile.start = start              # type: ignore[method-assign]
                rig.start("m01", "o1/0", epoch=1, duration_s=20.0)
                refused = await until("the refusal", lambda: rig.seen("command_refused", "o1/0"))
                assert "ReturnStatus 3" in refused[0].data["why"]
                assert [r["job"] for r in rig.recorded("opcua_refused_in_doubt")] == [jid]
                # the machine's own job ends; then the first send comes out of the queue
                await m.profile.abort("local@1")
                await until("the machine free", lambda: executions(emu, "aborted"))
                release.set()
                assert await queued[0] is None          # the machine ran it after all ...
                await until("its abort", lambda: executions(emu, "aborted").get(jid))
                aborts = rig.recorded("opcua_orphan_abort")
                assert [(r["job"], r["why"]) for r in aborts] == [(jid, "refused in doubt")]
                await until("its end recorded", lambda: rig.recorded("opcua_late_end"))
                assert not rig.seen("operation_done")
                assert not rig.recorded("opcua_refused_ran")
                assert not m.doubtful                   # settled: no longer watched

        asyncio.run(scenario())
    finally:
        emu.stop()
    assert executions(emu, "started") == {"local@1": 1, jid: 1}
    assert executions(emu, "refused") == {jid: 1}               # the re-send, as busy
    assert executions(emu, "aborted") == {"local@1": 1, jid: 1}  # ... and stopped at once
    assert executions(emu) == {}                                  # nothing ran to its end
