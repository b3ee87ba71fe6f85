"""The ``opcua`` plant backend against OPC UA servers not written here (issue 14).

Each test runs the gateway (:class:`~sim_bridge.gateway.PlantGateway` with
:class:`~sim_bridge.opcua.backend.OpcUaBackend`) in this process against a
machine emulator on a real OPC UA stack — node-opcua and asyncua's server,
both implementing tests/opcua/CONTRACT.md — over loopback with
Basic256Sha256/SignAndEncrypt.  What the machine did is read from **the
server's own job log**, never from the gateway's records.  Waits are on
events (the gateway's emitted events, the server's ready file); the bounds
are only hang guards.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from helpers.waiting import EVENT_BOUND_S, until

from agents.base import PlantEventIn
from agents.cell.equipment import OpcUaEquipment
from agents.cell.specs import MachineSpec
from agents.protocol.actions import Command
from ops.bench.plant import EMULATOR, ROOT, Emulator
from sim_bridge.gateway import PlantGateway
from sim_bridge.opcua.backend import OpcUaBackend, OpcUaMachine
from sim_bridge.opcua.pki import Credentials, OpcUaPki

NODESETS = ROOT / "tests" / "opcua" / "node_modules" / "node-opcua-nodesets" / "nodesets"


def _available(stack: str) -> bool:
    if stack == "node":
        return (EMULATOR.parent / "node_modules" / "node-opcua").is_dir()
    return NODESETS.is_dir()


def _stack(stack: str) -> Any:
    marks = []
    if not _available(stack) and not os.environ.get("CI"):
        marks.append(pytest.mark.skip(reason=f"the {stack} OPC UA emulator is not installed: "
                                             "run `bash tests/setup.sh`"))
    return pytest.param(stack, marks=marks, id=stack)


STACKS = [_stack("node"), _stack("asyncua")]
# each test waits on several events in a row, each with the EVENT_BOUND_S hang guard: the
# test's own bound is above their sum's useful part, so a hang fails naming what was awaited
# (NeverHappened), not as a bare pytest-timeout
pytestmark = [pytest.mark.opcua, pytest.mark.slow, pytest.mark.timeout(600)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Rig:
    """A gateway with the opcua backend, the events it emitted and the records it wrote."""

    def __init__(self, endpoint: str, pki: OpcUaPki, machines: list[str], *,
                 grace_s: float = 30.0, user: str | None = None,
                 secrets: dict[str, Credentials] | None = None,
                 refusals_to_escalate: int = 3, **opcua: Any) -> None:
        self.events: list[PlantEventIn] = []
        self.records: list[dict[str, Any]] = []
        settings = OpcUaEquipment(**{"endpoint": endpoint, "grace_s": grace_s, "user": user,
                                     "refusals_to_escalate": refusals_to_escalate,
                                     "readings": {"spindle_load": "Monitoring/SpindleLoad"},
                                     **opcua})
        self.gateway = PlantGateway([MachineSpec(m, location="bay") for m in machines], [],
                                    emit=self.events.append,
                                    record=lambda ev, **f: self.records.append({"ev": ev, **f}))
        self.backend = OpcUaBackend([OpcUaMachine(m, settings) for m in machines],
                                    events=self.gateway, record=self.gateway.record, pki=pki,
                                    secrets=secrets or {})
        self.gateway.attach(self.backend)

    def start(self, machine: str, task: str, epoch: int = 1, duration_s: float = 0.0) -> None:
        self.gateway.command(Command("start_operation", machine, task,
                                     {"duration_s": duration_s, "award_epoch": epoch,
                                      "order": "o1", "capability": "milling"}))

    def seen(self, event: str, task: str | None = None,
             where: Callable[[PlantEventIn], bool] = lambda _e: True) -> list[PlantEventIn]:
        return [e for e in self.events if e.event == event
                and (task is None or e.task == task) and where(e)]

    def recorded(self, ev: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r["ev"] == ev]


@contextlib.asynccontextmanager
async def running(rig: Rig, *, connected: bool = True) -> AsyncIterator[Rig]:
    await rig.backend.start(first_connect_s=EVENT_BOUND_S)
    try:
        if connected:
            await until("the gateway's session", lambda: all(
                rig.backend.query_state(m) for m in rig.backend.resources))
        yield rig
    finally:
        await rig.backend.close()


def server(tmp_path: Path, stack: str, machines: list[str], pki: OpcUaPki, *,
           trust: bool = True, speed: float = 50.0, port: int = 0,
           extra: list[str] | None = None) -> tuple[Emulator, str]:
    pki.ensure_own()
    emu = Emulator(tmp_path / f"server-{stack}", machines, trust_client=pki.cert_path,
                   speed=speed, stack=stack, port=port, extra=extra)
    try:
        endpoint = emu.wait_ready()
    except BaseException:
        emu.stop()
        raise
    if trust:
        pki.trust(emu.server_cert)
    return emu, endpoint


def executions(emu: Emulator, event: str = "ended") -> dict[str, int]:
    """JobOrderID -> how often the server's own log says it reached ``event``."""
    out: dict[str, int] = {}
    for line in emu.jobs():
        if line.get("event") == event:
            out[line["job"]] = out.get(line["job"], 0) + 1
    return out


@pytest.mark.parametrize("stack", STACKS)
def test_a_job_runs_once_reports_its_quality_and_the_machine_refuses_its_id_again(
        tmp_path: Path, stack: str) -> None:
    pki = OpcUaPki(tmp_path / "keys" / "opcua")
    emu, endpoint = server(tmp_path, stack, ["m01"], pki)
    try:
        async def scenario() -> None:
            async with running(Rig(endpoint, pki, ["m01"])) as rig:
                rig.start("m01", "o1/0", epoch=1, duration_s=5.0)
                done = await until("operation_done", lambda: rig.seen("operation_done", "o1/0"))
                assert done[0].data == {"quality": "ok"}
                assert [e.event for e in rig.events if e.task == "o1/0"] == [
                    "quality_result", "operation_done"]
                # the fence refuses a completed task before the machine is asked ...
                rig.start("m01", "o1/0", epoch=2)
                refused = await until("the fence's refusal",
                                      lambda: rig.seen("command_refused", "o1/0"))
                assert refused[0].data["done_at"] == "bay"
                # ... and the machine itself refuses a JobOrderID it ran (a gateway whose
                # fence was lost): the backend is asked directly, past the fence
                rig.backend.start_operation("m01", "o1/0", {"award_epoch": 1, "duration_s": 1})
                again = await until("the machine's own refusal", lambda: rig.seen(
                    "command_refused", "o1/0", lambda e: "equipment refused" in e.data["why"]))
                assert "ReturnStatus 3" in again[0].data["why"]
                assert rig.backend.query_state("m01")
                assert rig.recorded("op_start")[0]["job"] == "o1/0@1"
                # the configured variable is subscribed and reported as readings
                reading = await until("a reading", lambda: rig.seen("reading"))
                assert set(reading[0].data) == {"spindle_load"}
                assert 0.0 <= reading[0].data["spindle_load"] <= 100.0

        asyncio.run(scenario())
    finally:
        emu.stop()
    assert executions(emu, "started") == {"o1/0@1": 1}
    assert executions(emu) == {"o1/0@1": 1}


@pytest.mark.parametrize("stack", STACKS)
def test_a_job_end_whose_notification_is_lost_is_still_reported_once(
        tmp_path: Path, stack: str) -> None:
    """The subscriptions are the fast path, not the only one: with every job-list
    notification dropped on the gateway's side, a running job's state is read afresh after
    it has been silent for RECONCILE_S, and its end is reported once, recorded as missed."""
    pki = OpcUaPki(tmp_path / "keys" / "opcua")
    emu, endpoint = server(tmp_path, stack, ["m01"], pki)
    try:
        async def scenario() -> None:
            async with running(Rig(endpoint, pki, ["m01"])) as rig:
                dropped: list[Any] = []

                async def deaf(_m: Any, node: Any, value: Any) -> None:
                    dropped.append(value)

                rig.backend.on_jobs = deaf  # type: ignore[method-assign]
                rig.start("m01", "o1/0", epoch=1, duration_s=5.0)
                await until("operation_done", lambda: rig.seen("operation_done", "o1/0"))
                assert dropped, "the server did notify; the gateway was deaf to it"
                missed = rig.recorded("opcua_missed_end")
                assert [(r["task"], r["state"]) for r in missed] == [("o1/0", "Ended")]
                # the next job runs as usual
                rig.start("m01", "o2/0", epoch=1, duration_s=5.0)
                await until("the second operation_done",
                            lambda: rig.seen("operation_done", "o2/0"))
                assert [e.task for e in rig.seen("operation_done")] == ["o1/0", "o2/0"]

        asyncio.run(scenario())
    finally:
        emu.stop()
    assert executions(emu) == {"o1/0@1": 1, "o2/0@1": 1}


@pytest.mark.parametrize("stack", STACKS)
def test_an_untrusted_server_is_refused_with_how_to_trust_it(tmp_path: Path,
                                                             stack: str) -> None:
    pki = OpcUaPki(tmp_path / "keys" / "opcua")
    emu, endpoint = server(tmp_path, stack, ["m01"], pki, trust=False)
    try:
        async def scenario() -> None:
            async with running(Rig(endpoint, pki, ["m01"]), connected=False) as rig:
                errors = await until("the link error", lambda: rig.recorded("opcua_link_error"))
                message = errors[0]["error"]
                assert "is not trusted" in message and "autocell equipment trust" in message
                assert not rig.backend.query_state("m01")
                rig.start("m01", "o1/0")
                assert rig.seen("fault", "o1/0")[0].data == {"reason": "down at start"}

        asyncio.run(scenario())
    finally:
        emu.stop()
    assert list((pki.root / "rejected").glob("*.der")), "the refused certificate is kept"
    assert executions(emu, "started") == {}


@pytest.mark.parametrize("stack", STACKS)
def test_wrong_credentials_give_a_clear_error_and_right_ones_log_in(tmp_path: Path,
                                                                    stack: str) -> None:
    pki = OpcUaPki(tmp_path / "keys" / "opcua")
    users = tmp_path / "users.json"
    users.write_text(json.dumps({"gateway": "s3cret"}))
    emu, endpoint = server(tmp_path, stack, ["m01"], pki, extra=["--users", str(users)])
    try:
        async def scenario() -> None:
            wrong = {"line": Credentials("gateway", "guess")}
            async with running(Rig(endpoint, pki, ["m01"], user="line", secrets=wrong),
                               connected=False) as rig:
                errors = await until("the link error", lambda: rig.recorded("opcua_link_error"))
                assert "session refused: Bad" in errors[0]["error"], errors
                assert not rig.backend.query_state("m01")
            right = {"line": Credentials("gateway", "s3cret")}
            async with running(Rig(endpoint, pki, ["m01"], user="line", secrets=right)) as rig:
                rig.start("m01", "o1/0")
                await until("operation_done", lambda: rig.seen("operation_done", "o1/0"))

        asyncio.run(scenario())
    finally:
        emu.stop()


@pytest.mark.parametrize("stack", STACKS)
def test_a_server_that_keeps_refusing_starts_is_escalated_and_held_down(tmp_path: Path,
                                                                        stack: str) -> None:
    pki = OpcUaPki(tmp_path / "keys" / "opcua")
    emu, endpoint = server(tmp_path, stack, ["m01", "m02"], pki,
                           extra=["--refuse-start", "m01"])
    try:
        async def scenario() -> None:
            async with running(Rig(endpoint, pki, ["m01", "m02"])) as rig:
                for k in range(3):
                    rig.start("m01", f"t{k}")
                    refused = await until(f"refusal {k}", lambda k=k: rig.seen(
                        "command_refused", f"t{k}"))
                    assert "BadUserAccessDenied" in refused[0].data["why"]
                    assert refused[0].data.get("escalate", False) is (k == 2)
                fault = await until("the hold", lambda: rig.seen("fault", ""))
                assert "equipment refuses starts" in fault[0].data["reason"]
                assert not rig.backend.query_state("m01") and rig.backend.query_state("m02")
                rig.start("m02", "u0")       # the other machine on the same server still runs
                await until("m02's job", lambda: rig.seen("operation_done", "u0"))
                rig.gateway.command(Command("set_state", "m01", "", {"state": "up"}))
                assert rig.seen("repaired") and rig.backend.query_state("m01")

        asyncio.run(scenario())
    finally:
        emu.stop()
    assert executions(emu, "started") == {"u0@1": 1}


@pytest.mark.parametrize("stack", STACKS)
def test_kill_9_mid_job_faults_after_grace_reroutes_and_runs_nothing_twice(
        tmp_path: Path, stack: str) -> None:
    pki = OpcUaPki(tmp_path / "keys" / "opcua")
    port = free_port()
    # speed 1: the job would take 1000 s; it is killed long before it could end
    emu, endpoint = server(tmp_path, stack, ["m01"], pki, speed=1.0, port=port)
    try:
        async def scenario() -> None:
            async with running(Rig(endpoint, pki, ["m01"], grace_s=0.5)) as rig:
                rig.start("m01", "o1/0", duration_s=1000.0)
                await until("the job's start", lambda: rig.recorded("op_start"))
                emu.kill()
                fault = await until("the fault", lambda: rig.seen("fault"))
                assert fault[0].data["reason"].startswith("link lost")
                assert not rig.backend.query_state("m01")
                assert "o1/0" not in rig.gateway.fence.running   # handed back: re-routable
                emu.start()
                emu.wait_ready()
                await until("repaired", lambda: rig.seen("repaired"))
                # the task comes back under a new award; the machine runs it once
                rig.start("m01", "o1/0", epoch=2, duration_s=0.0)
                await until("operation_done", lambda: rig.seen("operation_done", "o1/0"))

        asyncio.run(scenario())
    finally:
        emu.stop()
    assert executions(emu, "started") == {"o1/0@1": 1, "o1/0@2": 1}
    assert executions(emu) == {"o1/0@2": 1}


class Proxy:
    """A TCP relay between the gateway and a server whose connections a test can drop."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> Proxy:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.drop()
        assert self.server is not None
        self.server.close()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.writers += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def drop(self) -> None:
        """Every relayed connection reset, as a pulled cable or a switch reboot does."""
        for w in self.writers:
            with contextlib.suppress(Exception):
                w.transport.abort()
        self.writers = []


@pytest.mark.parametrize("stack", STACKS)
def test_a_dropped_connection_within_grace_loses_nothing_and_reports_the_end_once(
        tmp_path: Path, stack: str) -> None:
    pki = OpcUaPki(tmp_path / "keys" / "opcua")
    emu, endpoint = server(tmp_path, stack, ["m01"], pki, speed=1.0)
    port = int(endpoint.rsplit(":", 1)[1])
    try:
        async def scenario() -> None:
            async with Proxy(port) as proxy:
                rig = Rig(f"opc.tcp://127.0.0.1:{proxy.port}", pki, ["m01"], grace_s=600.0)
                async with running(rig):
                    rig.start("m01", "o1/0", duration_s=3.0)
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
    assert executions(emu) == {"o1/0@1": 1}


@pytest.mark.parametrize("stack", STACKS)
def test_bench_plant_prints_its_figures_as_one_json_object(stack: str) -> None:
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-m", "ops.cli", "bench", "plant", "--backend",
                          "opcua", "--machines", "2", "--rounds", "3", "--stack", stack,
                          "--json"], capture_output=True, text=True, timeout=EVENT_BOUND_S,
                         cwd=ROOT)
    assert res.returncode == 0, res.stderr[-2000:]
    r = json.loads(res.stdout)
    assert r["backend"] == "opcua" and r["machines"] == 2 and r["jobs"] == 6
    assert 0 < r["p50_ms"] <= r["p99_ms"] and r["events_per_s"] > 0
