"""The ``vda5050`` plant backend against vehicles and a broker not written here (issue 15).

The gateway (:class:`~sim_bridge.gateway.PlantGateway` with
:class:`~sim_bridge.vda5050.backend.Vda5050Backend`) runs in this process as
master control; the vehicles are vda-5050-lib's virtual AGVs
(``tests/vda5050/vehicles.mjs``, tests/vda5050/CONTRACT.md) on a private
Mosquitto.  Waits are on events (what the gateway emitted); bounds are hang
guards only.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from helpers.vda5050_peers import PASSWORD, USERNAME, Broker, Vehicles, missing_peers
from helpers.waiting import EVENT_BOUND_S, until

from agents.base import PlantEventIn
from agents.cell.equipment import Vda5050Vehicle
from agents.cell.routes import Edge, Node, Route
from agents.protocol.actions import Command
from sim_bridge.gateway import PlantGateway
from sim_bridge.opcua.pki import Credentials
from sim_bridge.vda5050.backend import Vda5050Backend, VehicleSpec

pytestmark = [pytest.mark.vda5050, pytest.mark.slow,
              pytest.mark.skipif(bool(missing_peers()) and not os.environ.get("CI"),
                                 reason="mosquitto or the virtual vehicles are not installed: "
                                        "run `bash tests/setup.sh`")]

#: A line of four stations, 10 m apart, on map "hall".
PLACES = {"A": (0.0, 0.0), "B": (10.0, 0.0), "C": (20.0, 0.0), "D": (30.0, 0.0)}
MAP = "hall"


def straight(a: str, b: str) -> Route:
    na, nb = (Node(p, *PLACES[p], None, MAP) for p in (a, b))
    if a == b:
        return Route((na,), ())
    return Route((na, nb), (Edge(a, b, math.dist(PLACES[a], PLACES[b])),))


class Rig:
    """A gateway driving VDA 5050 vehicles; the events it emitted and the records it wrote."""

    def __init__(self, broker_url: str, serials: list[str], *, grace_s: float = 30.0,
                 ca: Path | None = None, password: str = PASSWORD) -> None:
        self.events: list[PlantEventIn] = []
        self.records: list[dict[str, Any]] = []
        settings = Vda5050Vehicle(broker=broker_url, insecure=broker_url.startswith("mqtt://"),
                                  user="broker", grace_s=grace_s, map=MAP,
                                  ca=str(ca) if ca else None)
        self.gateway = PlantGateway([], serials, emit=self.events.append,
                                    record=lambda ev, **f: self.records.append({"ev": ev, **f}))
        self.backend = Vda5050Backend(
            [VehicleSpec(s, settings, 2.0) for s in serials], events=self.gateway,
            record=self.gateway.record, locations=PLACES, route=straight, default_map=MAP,
            secrets={"broker": Credentials(USERNAME, password)}, base_dir=Path("/"))
        self.gateway.attach(self.backend)

    def move(self, robot: str, task: str, origin: str, destination: str, epoch: int = 1,
             start: str = "A") -> None:
        self.gateway.command(Command("move", robot, task, {
            "from": start, "origin": origin, "destination": destination, "award_epoch": epoch,
            "order": "o1"}))

    def seen(self, event: str, task: str | None = None,
             where: Callable[[PlantEventIn], bool] = lambda _e: True) -> list[PlantEventIn]:
        return [e for e in self.events if e.event == event
                and (task is None or e.task == task) and where(e)]

    def recorded(self, ev: str, **match: Any) -> list[dict[str, Any]]:
        return [r for r in self.records if r["ev"] == ev
                and all(r.get(k) == v for k, v in match.items())]


@contextlib.asynccontextmanager
async def running(rig: Rig, *, usable: bool = True) -> AsyncIterator[Rig]:
    await rig.backend.start(first_connect_s=EVENT_BOUND_S if usable else 3.0)
    try:
        if usable:
            await until("every vehicle usable", lambda: all(
                rig.backend.query_state(r) for r in rig.backend.resources))
        yield rig
    finally:
        await rig.backend.close()


def vehicles(tmp_path: Path, broker: Broker, serials: list[str], *, speed: float = 10.0,
             extra: list[str] | None = None, url: str | None = None,
             ca: Path | None = None, map_id: str = MAP) -> Vehicles:
    starts = [f"--start={s}=0,0,0,A" for s in serials]
    return Vehicles(tmp_path / "vehicles", url or broker.url, serials, map_id=map_id,
                    speed=speed, ca=ca, extra=[*starts, "--vehicle-speed", "10",
                                               *(extra or [])]).start()


@pytest.fixture
def broker(tmp_path: Path) -> Any:
    b = Broker(tmp_path / "broker").start()
    yield b
    b.stop()


def test_a_move_is_one_order_that_arrives_with_readings(tmp_path: Path, broker: Broker) -> None:
    fleet = vehicles(tmp_path, broker, ["agv1"])
    try:
        async def scenario() -> None:
            async with running(Rig(broker.url, ["agv1"])) as rig:
                rig.move("agv1", "o1/0", "B", "C")
                arrived = await until("arrived", lambda: rig.seen("arrived", "o1/0"))
                assert arrived[0].data == {"at": "C"}
                assert rig.recorded("vda_order_accepted", task="o1/0", order="o1/0@1")
                reading = await until("a reading", lambda: rig.seen("reading"))
                assert {"x", "y", "theta", "battery_pct"} <= set(reading[-1].data)
                # the next move starts where the vehicle stands: C
                rig.move("agv1", "o2/0", "D", "A", start="A")
                await until("the second arrival", lambda: rig.seen("arrived", "o2/0"))
                assert not rig.seen("command_refused") and not rig.seen("fault")
                assert rig.backend.vehicles["agv1"].invalid == {}

        asyncio.run(scenario())
    finally:
        fleet.stop()


def test_an_abort_cancels_the_order_and_the_next_starts_between_nodes(
        tmp_path: Path, broker: Broker) -> None:
    fleet = vehicles(tmp_path, broker, ["agv1"], speed=1.0)
    try:
        async def scenario() -> None:
            async with running(Rig(broker.url, ["agv1"])) as rig:
                # empty to D first (30 m at 2 m/s: 15 s), where the part waits
                rig.move("agv1", "o1/0", "D", "C")
                await until("accepted", lambda: rig.recorded("vda_order_accepted"))
                await until("driving", lambda: (p := rig.backend.vehicles["agv1"].position)
                            is not None and 0.5 < p[0] < 25)
                rig.gateway.command(Command("abort_operation", "agv1", "o1/0"))
                assert "o1/0" not in rig.gateway.fence.running
                assert rig.recorded("move_abort", task="o1/0", why="aborted")
                # re-awarded: the order starts where the vehicle stopped, between nodes
                rig.move("agv1", "o1/0", "D", "C", epoch=2)
                await until("arrived", lambda: rig.seen("arrived", "o1/0"))
                order = rig.recorded("move_start", task="o1/0")[-1]
                assert order["order"] == "o1/0@2"
                assert not rig.seen("command_refused"), rig.seen("command_refused")

        asyncio.run(scenario())
    finally:
        fleet.stop()


def test_a_killed_vehicle_goes_down_after_grace_and_comes_back(tmp_path: Path,
                                                               broker: Broker) -> None:
    fleet = vehicles(tmp_path, broker, ["agv1"], speed=1.0)
    try:
        async def scenario() -> None:
            async with running(Rig(broker.url, ["agv1"], grace_s=0.5)) as rig:
                rig.move("agv1", "o1/0", "A", "D")
                await until("accepted", lambda: rig.recorded("vda_order_accepted"))
                fleet.kill()                      # the broker publishes the last will
                fault = await until("the fault", lambda: rig.seen("fault"))
                assert "CONNECTIONBROKEN" in fault[0].data["reason"]
                assert rig.recorded("move_abort", task="o1/0")
                assert "o1/0" not in rig.gateway.fence.running   # re-negotiable
                fleet.start()
                await until("repaired", lambda: rig.seen("repaired"))
                rig.move("agv1", "o1/0", "A", "B", epoch=2)
                await until("arrived", lambda: rig.seen("arrived", "o1/0"))
                assert [e.data["at"] for e in rig.seen("arrived")] == ["B"]

        asyncio.run(scenario())
    finally:
        fleet.stop()


def test_a_fatal_error_is_a_fault_until_cleared(tmp_path: Path, broker: Broker) -> None:
    fleet = vehicles(tmp_path, broker, ["agv1"], extra=["--fatal-after-orders", "1"])
    try:
        async def scenario() -> None:
            async with running(Rig(broker.url, ["agv1"])) as rig:
                rig.move("agv1", "o1/0", "B", "C")
                fault = await until("the fault", lambda: rig.seen("fault"))
                assert fault[0].data["reason"].startswith("FATAL vehicleFault")
                assert not rig.backend.query_state("agv1")
                assert rig.recorded("move_abort", task="o1/0")
                fleet.signal(signal.SIGUSR1)      # the vehicle's error is cleared
                await until("repaired", lambda: rig.seen("repaired"))
                rig.move("agv1", "o1/0", "B", "C", epoch=2)
                await until("arrived", lambda: rig.seen("arrived", "o1/0"))

        asyncio.run(scenario())
    finally:
        fleet.stop()


def test_invalid_messages_are_dropped_counted_and_recorded_once(tmp_path: Path,
                                                                broker: Broker) -> None:
    fleet = vehicles(tmp_path, broker, ["agv1", "agv2"], extra=["--invalid-state=agv2"])
    try:
        async def scenario() -> None:
            async with running(Rig(broker.url, ["agv1", "agv2"]), usable=False) as rig:
                await until("agv1 usable", lambda: rig.backend.query_state("agv1"))
                await until("two invalid states", lambda: rig.backend.vehicles[
                    "agv2"].invalid["state"] >= 2)
                assert not rig.backend.query_state("agv2")      # never a valid state
                assert len(rig.recorded("vda_invalid", robot="agv2", topic="state")) == 1
                assert rig.backend.vehicles["agv1"].invalid == {}

        asyncio.run(scenario())
    finally:
        fleet.stop()


def test_a_vehicle_on_another_map_is_held_down(tmp_path: Path, broker: Broker) -> None:
    fleet = vehicles(tmp_path, broker, ["agv1"], map_id="warehouse")
    try:
        async def scenario() -> None:
            async with running(Rig(broker.url, ["agv1"]), usable=False) as rig:
                fault = await until("the fault", lambda: rig.seen("fault"))
                assert "'warehouse'" in fault[0].data["reason"]
                assert not rig.backend.query_state("agv1")
                rig.move("agv1", "o1/0", "B", "C")
                assert rig.seen("fault", "o1/0")[0].data == {"reason": "down at start"}

        asyncio.run(scenario())
    finally:
        fleet.stop()


def test_a_broker_restart_within_grace_loses_nothing(tmp_path: Path, broker: Broker) -> None:
    fleet = vehicles(tmp_path, broker, ["agv1"], speed=1.0)
    try:
        async def scenario() -> None:
            async with running(Rig(broker.url, ["agv1"], grace_s=600.0)) as rig:
                rig.move("agv1", "o1/0", "B", "C")
                await until("accepted", lambda: rig.recorded("vda_order_accepted"))
                broker.restart()
                await until("a second broker connection", lambda: rig.recorded(
                    "vda_broker_up", connection=2))
                await until("arrived", lambda: rig.seen("arrived", "o1/0"))
                assert not rig.seen("fault") and len(rig.seen("arrived")) == 1

        asyncio.run(scenario())
    finally:
        fleet.stop()


def test_tls_with_credentials_and_a_wrong_password(tmp_path: Path) -> None:
    broker = Broker(tmp_path / "broker", tls=True).start()
    assert broker.pki is not None
    fleet = vehicles(tmp_path, broker, ["agv1"], url=broker.tls_url, ca=broker.pki.ca_file)
    try:
        async def scenario() -> None:
            ca = broker.pki.ca_file if broker.pki else None
            async with running(Rig(broker.tls_url, ["agv1"], ca=ca, password="guess"),
                               usable=False) as rig:
                errors = await until("the broker's refusal",
                                     lambda: rig.recorded("vda_broker_error"))
                assert "authori" in errors[0]["error"].lower(), errors
            async with running(Rig(broker.tls_url, ["agv1"], ca=ca)) as rig:
                rig.move("agv1", "o1/0", "B", "C")
                await until("arrived", lambda: rig.seen("arrived", "o1/0"))

        asyncio.run(scenario())
    finally:
        fleet.stop()
        broker.stop()


def test_bench_plant_vda5050_prints_its_figures_as_one_json_object() -> None:
    import json
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-m", "ops.cli", "bench", "plant", "--backend",
                          "vda5050", "--robots", "2", "--rounds", "2", "--json"],
                         capture_output=True, text=True, timeout=EVENT_BOUND_S,
                         cwd=Path(__file__).resolve().parents[1])
    assert res.returncode == 0, res.stderr[-2000:]
    r = json.loads(res.stdout)
    assert r["backend"] == "vda5050" and r["robots"] == 2 and r["moves"] == 4
    assert 0 < r["p50_ms"] <= r["p99_ms"] and r["messages_per_s"] > 0
    assert r["arrive_p50_ms"] <= r["arrive_p99_ms"]


def test_equipment_check_reports_each_vehicle(tmp_path: Path, broker: Broker) -> None:
    import subprocess
    import sys

    import yaml

    root = Path(__file__).resolve().parents[1]
    fleet = vehicles(tmp_path, broker, ["agv1"])
    lost = Vehicles(tmp_path / "lost", broker.url, ["agv2"], map_id="warehouse", name="agv2",
                    extra=["--start=agv2=0,0,0"]).start()
    keys = tmp_path / "keys"
    keys.mkdir()
    secrets = keys / "opcua-secrets.yaml"
    secrets.write_text(yaml.safe_dump({"broker": {"username": USERNAME, "password": PASSWORD}}))
    secrets.chmod(0o600)
    data = yaml.safe_load((root / "cell_configs" / "demo_cell.yaml").read_text())
    data["layout"]["map"] = MAP
    for r in data["robots"]:
        r["backend"] = "vda5050"
        r["vda5050"] = {"broker": broker.url, "insecure": True, "user": "broker"}
    cell = tmp_path / "cell.yaml"
    cell.write_text(yaml.safe_dump(data, sort_keys=False))
    try:
        res = subprocess.run([sys.executable, "-m", "ops.cli", "equipment", "check", str(cell),
                              "--keys-dir", str(keys)], capture_output=True, text=True,
                             timeout=EVENT_BOUND_S, cwd=root)
    finally:
        fleet.stop()
        lost.stop()
    assert res.returncode == 1, res.stdout + res.stderr
    lines = {line.split()[0]: line for line in res.stdout.splitlines()}
    assert lines["agv1"].endswith("ok"), lines
    assert "on map 'warehouse', the cell's is 'hall'" in lines["agv2"], lines
