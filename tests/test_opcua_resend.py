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
from typing import Any

import pytest
from helpers.waiting import until
from test_opcua_backend import STACKS, Rig, executions, running, server

from agents.base import PlantEventIn
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


# -- ADR 70: the rest of the 50-machine burst's duplicate refusals -----------------------------

def outcome(rig: Rig) -> list[PlantEventIn]:
    """The job's end or its refusal, whichever comes: a refusal fails at once, not after
    the hang guard."""
    return rig.seen("operation_done", "o1/0") or rig.seen("command_refused", "o1/0")


@pytest.mark.parametrize("stack", STACKS)
def test_a_start_commanded_as_the_link_comes_up_is_sent_once(tmp_path: Path, stack: str) -> None:
    """The burst's cause: a start commanded once the new session is up but before the
    reconnect's settle reached its machine was sent by that settle *and* by its own task
    (waiting for the machine's lock); the machine refused the second as a duplicate of the
    job it was running, and the job was reported refused."""
    pki = OpcUaPki(tmp_path / "keys" / "opcua")
    emu, endpoint = server(tmp_path, stack, ["m01"], pki)
    try:
        async def scenario() -> None:
            async with running(Rig(endpoint, pki, ["m01"])) as rig:
                m = rig.backend.machines["m01"]
                rig.start("m01", "o1/0", epoch=1)     # its task waits for the machine's lock
                await rig.backend.link_up(m.link)     # ... which the reconnect's settle takes
                await until("its outcome", lambda: outcome(rig))
                done = rig.seen("operation_done", "o1/0")
                assert [e.data for e in done] == [{"quality": "ok"}], rig.seen("command_refused")
                await until("the backend idle", lambda: not rig.backend._tasks)
                assert not rig.seen("command_refused") and not rig.recorded("opcua_refused")

        asyncio.run(scenario())
    finally:
        emu.stop()
    assert executions(emu, "started") == {"o1/0@1": 1}
    assert executions(emu, "refused") == {}


@pytest.mark.parametrize("stack", STACKS)
def test_a_start_unanswered_in_time_is_settled_by_the_same_id_not_by_a_read(
        tmp_path: Path, stack: str) -> None:
    """A StoreAndStart unanswered within the timeout may still be queued in the server, and
    a Read sent after it may be answered first (node-opcua does so under load): the job
    list then does not show a job that is about to run, and the start was reported refused
    ("no answer to the start") though the job ran.  The same JobOrderID sent again settles
    it: a Call does not overtake the queued one, so the machine refuses the re-send as a
    duplicate and the job is followed to its end.  The queue is modelled on the client."""
    pki = OpcUaPki(tmp_path / "keys" / "opcua")
    emu, endpoint = server(tmp_path, stack, ["m01"], pki)
    try:
        async def scenario() -> None:
            async with running(Rig(endpoint, pki, ["m01"])) as rig:
                m = rig.backend.machines["m01"]
                real_start, real_read = m.profile.start, m.profile.read_states
                queued: list[asyncio.Task[str | None]] = []
                release = asyncio.Event()

                async def flush() -> None:           # the server works through its queue
                    release.set()
                    if queued:
                        await queued[0]

                async def start(jid: str, args: Any) -> str | None:
                    if not queued:                    # the first send: answered too late
                        async def later() -> str | None:
                            await release.wait()
                            return await real_start(jid, args)
                        queued.append(asyncio.ensure_future(later()))
                        raise TimeoutError
                    await flush()                     # a Call waits behind the queued one
                    return await real_start(jid, args)

                async def read_states() -> dict[str, int]:
                    states = await real_read()        # a Read overtakes the queued Call
                    await flush()
                    return states

                m.profile.start = start              # type: ignore[method-assign]
                m.profile.read_states = read_states  # type: ignore[method-assign]
                rig.start("m01", "o1/0", epoch=1)
                await until("its outcome", lambda: outcome(rig))
                done = rig.seen("operation_done", "o1/0")
                assert [e.data for e in done] == [{"quality": "ok"}], rig.seen("command_refused")
                assert [r["job"] for r in rig.recorded("opcua_resend_found_started")] == ["o1/0@1"]
                assert not rig.seen("command_refused") and not rig.recorded("opcua_refused")

        asyncio.run(scenario())
    finally:
        emu.stop()
    assert executions(emu, "started") == {"o1/0@1": 1}
    assert executions(emu, "refused") == {"o1/0@1": 1}          # the re-send, by the machine


@pytest.mark.parametrize("stack", STACKS)
def test_a_resent_start_of_a_job_ended_and_cleared_is_reported_done_from_its_response(
        tmp_path: Path, stack: str) -> None:
    """A start whose answer was lost with the session, and whose job ran, ended and left the
    job list (cleared at the machine) before the reconnect: the re-send is refused as a
    duplicate and the job list no longer holds it.  The job's response
    (RequestJobResponseByJobOrderID) says it ended: its end is reported, once, with its
    quality — not a refusal that would make the order do the work again elsewhere."""
    pki = OpcUaPki(tmp_path / "keys" / "opcua")
    emu, endpoint = server(tmp_path, stack, ["m01"], pki)
    try:
        async def scenario() -> None:
            async with running(Rig(endpoint, pki, ["m01"])) as rig:
                m = rig.backend.machines["m01"]
                jid = "o1/0@1"
                async with m.lock:            # its notifications wait, as if lost with the session
                    rig.start("m01", "o1/0", epoch=1)
                    assert await m.profile.start(jid, m.job_args) is None   # it runs...
                    m.sent = jid                                             # ...unanswered
                    await until("the job's end", lambda: executions(emu) == {jid: 1})
                    await m.profile.clear(jid)                     # cleared at the machine
                    states = await m.profile.read_states()
                    assert jid not in states
                    await rig.backend._settle(m, states, reconnect=True)    # the reconnect
                await until("its outcome", lambda: outcome(rig))
                done = rig.seen("operation_done", "o1/0")
                assert [e.data for e in done] == [{"quality": "ok"}], rig.seen("command_refused")
                found = rig.recorded("opcua_resend_found_started")
                assert [(r["job"], r["state"]) for r in found] == [(jid, "Ended")]
                await until("the backend idle", lambda: not rig.backend._tasks)
                assert len(rig.seen("operation_done")) == 1
                assert not rig.seen("command_refused") and not rig.recorded("opcua_refused")

        asyncio.run(scenario())
    finally:
        emu.stop()
    assert executions(emu, "started") == {"o1/0@1": 1}
    assert executions(emu, "refused") == {"o1/0@1": 1}
