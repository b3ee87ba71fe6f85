"""The plant gateway (sim_bridge/gateway.py): commands routed by resource to backends, the
fence in front of every one, events back out; the gateway process (``autocell plant``, alias
``autocell sim``) with the fence journalled; the cell file's ``backend`` and
``sim.identity``.

The backends here are fakes that record what reaches them, so a test sees exactly what the
fence let through; tests/test_journal.py covers the embedded backend behind the same gateway.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from agents.base import PlantEventIn
from agents.cell.specs import MachineSpec
from agents.protocol.actions import Command
from agents.protocol.messages import Message, PlantCommand, PlantEvent
from sim_bridge.fence import Fence
from sim_bridge.fence_store import SqliteFenceStore
from sim_bridge.gateway import PlantGateway
from sim_bridge.plant_api import Plant

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "cell_configs" / "demo_cell.yaml"


class FakeBackend:
    """A backend that runs nothing: it logs the calls that reach it."""

    def __init__(self, resources: set[str], *, down: set[str] | None = None,
                 running: dict[str, str] | None = None) -> None:
        self.resources = frozenset(resources)
        self.down = set(down or ())
        self.calls: list[tuple[str, str, str]] = []
        self._running = dict(running or {})

    def start_operation(self, resource: str, task: str, args: Mapping[str, Any]) -> bool:
        self.calls.append(("start_operation", resource, task))
        return resource not in self.down

    def abort_operation(self, resource: str, task: str) -> None:
        self.calls.append(("abort_operation", resource, task))

    def move(self, resource: str, task: str, args: Mapping[str, Any]) -> bool:
        self.calls.append(("move", resource, task))
        return resource not in self.down

    def set_state(self, resource: str, state: str) -> None:
        self.calls.append(("set_state", resource, state))

    def query_state(self, resource: str) -> bool:
        return resource not in self.down

    def running(self) -> dict[str, str]:
        return dict(self._running)


def _plant(backend: Plant) -> Plant:
    return backend          # mypy: a FakeBackend is a Plant


class Rig:
    """A gateway over two fake backends: m1 and r1 on ``a``, m2 on ``b``."""

    def __init__(self, fence: Fence | None = None, **kw: Any) -> None:
        self.emitted: list[PlantEventIn] = []
        self.log: list[tuple[str, dict[str, Any]]] = []
        self.a = FakeBackend({"m1", "r1"}, **kw)
        self.b = FakeBackend({"m2"})
        self.gw = PlantGateway([MachineSpec("m1", location="bay1"),
                                MachineSpec("m2", location="bay2")], ["r1"],
                               emit=self.emitted.append,
                               record=lambda ev, **f: self.log.append((ev, f)), fence=fence)
        self.gw.attach(_plant(self.a))
        self.gw.attach(_plant(self.b))
        self.gw.open()

    def cmd(self, command: str, resource: str, task: str = "", **args: Any) -> None:
        self.gw.command(Command(command, resource, task, args))


def test_commands_are_routed_to_the_backend_of_their_resource() -> None:
    rig = Rig()
    rig.cmd("start_operation", "m1", "o/0", award_epoch=1)
    rig.cmd("start_operation", "m2", "p/0", award_epoch=1)
    rig.cmd("move", "r1", "o/0/m1")
    rig.cmd("abort_operation", "m2", "p/0")
    rig.cmd("set_state", "m2", state="down")
    assert rig.a.calls == [("start_operation", "m1", "o/0"), ("move", "r1", "o/0/m1")]
    assert rig.b.calls == [("start_operation", "m2", "p/0"), ("abort_operation", "m2", "p/0"),
                           ("set_state", "m2", "down")]
    assert rig.emitted == [] and rig.gw.fence.running == {"o/0": "m1", "p/0": "m2",
                                                          "o/0/m1": "r1"}


def test_a_resource_cannot_have_two_backends() -> None:
    rig = Rig()
    with pytest.raises(ValueError, match="two backends"):
        rig.gw.attach(_plant(FakeBackend({"m2"})))


def test_the_fence_stands_in_front_of_every_backend() -> None:
    rig = Rig()
    rig.cmd("start_operation", "m1", "o/0", award_epoch=1)
    rig.cmd("start_operation", "m2", "o/0", award_epoch=2)      # running on m1's backend
    assert rig.b.calls == []                                     # never reached m2's backend
    assert rig.emitted == [PlantEventIn("command_refused", "m2", "o/0",
                                        {"why": "task in progress on m1", "elsewhere": True})]
    rig.gw.operation_done("m1", "o/0", "ok")                     # reported by backend a
    rig.cmd("start_operation", "m2", "o/0", award_epoch=2)
    assert rig.b.calls == []
    assert rig.emitted[1:] == [
        PlantEventIn("quality_result", "m1", "o/0", {"quality": "ok"}),
        PlantEventIn("operation_done", "m1", "o/0", {"quality": "ok"}),
        PlantEventIn("command_refused", "m2", "o/0",
                     {"why": "task already completed (idempotency key)", "elsewhere": True,
                      "done_at": "bay1"})]
    assert [f["why"] for ev, f in rig.log if ev == "plant_refused"] == [
        "task in progress on m1", "task already completed (idempotency key)"]


def test_wrong_kinds_and_unknown_commands_are_refused_before_any_backend() -> None:
    rig = Rig()
    rig.cmd("start_operation", "r1", "o/0")      # a robot is not a machine
    rig.cmd("move", "m1", "o/0/m1")              # nor a machine a robot
    rig.cmd("set_state", "r1", state="down")
    rig.cmd("calibrate", "m1")
    assert rig.a.calls == [] and rig.b.calls == []
    assert [f["why"] for _, f in rig.log] == ["unknown machine", "unknown robot",
                                              "unknown machine", "unknown command"]
    assert [e.event for e in rig.emitted] == ["command_refused", "command_refused"]
    assert len(rig.gw.stats.refused) == 4


def test_a_start_on_a_down_resource_is_answered_with_a_fault() -> None:
    rig = Rig(down={"m1", "r1"})
    rig.cmd("start_operation", "m1", "o/0", award_epoch=4)
    rig.cmd("move", "r1", "o/0/m1")
    assert rig.emitted == [PlantEventIn("fault", "m1", "o/0", {"reason": "down at start"}),
                           PlantEventIn("fault", "r1", "o/0/m1", {"reason": "down at start"})]
    assert [f["why"] for _, f in rig.log] == ["machine down", "robot down"]
    assert rig.gw.fence.running == {} and rig.gw.fence.started_epoch == {}


def test_events_from_a_backend_keep_the_fence_and_go_out() -> None:
    rig = Rig()
    rig.cmd("start_operation", "m1", "a/0", award_epoch=1)
    rig.gw.fault("m1", "breakdown", 60.0)
    rig.gw.stopped("m1", "a/0", "fault")        # the interrupted run: not on the wire
    rig.gw.repaired("m1")
    rig.gw.reading("m1", {"temperature_c": 30.0})
    rig.cmd("move", "r1", "o/0/m1")
    rig.gw.arrived("r1", "o/0/m1", "bay2")
    assert rig.emitted == [
        PlantEventIn("fault", "m1", "", {"reason": "breakdown", "repair_eta_s": 60.0}),
        PlantEventIn("repaired", "m1"),
        PlantEventIn("reading", "m1", "", {"temperature_c": 30.0}),
        PlantEventIn("arrived", "r1", "o/0/m1", {"at": "bay2"})]
    assert rig.gw.fence.running == {} and rig.gw.fence.delivered == {"o/0/m1": ("r1", "bay2")}
    rig.cmd("start_operation", "m1", "a/0", award_epoch=1)      # may run again
    assert rig.a.calls[-1] == ("start_operation", "m1", "a/0")


def test_query_state_is_answered_from_the_fence_and_the_backend() -> None:
    rig = Rig()
    rig.b.down.add("m2")
    rig.cmd("start_operation", "m1", "a/0", award_epoch=1)
    rig.gw.operation_done("m1", "a/0", "scrap")
    del rig.emitted[:]
    rig.cmd("query_state", "m2", "a/0")           # the last result, on any machine
    rig.cmd("query_state", "m1", "never/0")
    rig.cmd("query_state", "r1", "")
    rig.cmd("query_state", "nobody", "x")         # not a resource: no answer
    assert rig.emitted == [
        PlantEventIn("operation_done", "m2", "a/0", {"quality": "scrap"}),
        PlantEventIn("state", "m2", "", {"up": False, "reason": "down"}),
        PlantEventIn("command_refused", "m1", "never/0", {"why": "not running after restart"}),
        PlantEventIn("state", "m1", "", {"up": True, "reason": "down"}),
        PlantEventIn("state", "r1", "", {"up": True, "reason": "down"})]


def test_a_restarted_gateway_refuses_a_task_completed_before_the_restart(tmp_path: Path) -> None:
    path = tmp_path / "sim.sqlite"
    first = Rig(Fence(SqliteFenceStore(path)))
    first.cmd("start_operation", "m1", "done/0", award_epoch=1)
    first.gw.operation_done("m1", "done/0", "ok")
    first.cmd("start_operation", "m2", "cut/0", award_epoch=1)    # the restart cuts it off
    again = Rig(Fence(SqliteFenceStore(path)))                    # b runs nothing now
    assert again.log == [("plant_forgot", {"resource": "m2", "task": "cut/0",
                                           "why": "not running after a restart of the plant"})]
    again.cmd("start_operation", "m2", "done/0", award_epoch=2)
    again.cmd("start_operation", "m1", "cut/0", award_epoch=1)
    assert again.b.calls == [] and again.a.calls == [("start_operation", "m1", "cut/0")]
    assert again.emitted[0].data == {"why": "task already completed (idempotency key)",
                                     "elsewhere": True, "done_at": "bay1"}


# -- the gateway process ------------------------------------------------------------------

def _server(cell: Path, state: Path) -> Any:
    from agents.runtime.host import CellClock
    from ops.config import load_cell
    from ops.supervisor import ensure_keys
    from sim_bridge.remote import PlantServer

    cfg = load_cell(cell)
    state.mkdir(exist_ok=True)
    keys = ensure_keys(cfg, state)
    return PlantServer(cfg, keys_dir=keys, state_dir=state, clock=CellClock(time.time(), 1.0))


def _start(server: Any, machine: str, task: str, epoch: int) -> None:
    server._on_message(Message(machine, server.identity, "", bytes(16), 1, 1, time.time(),
                               PlantCommand("start_operation", machine, task,
                                            {"award_epoch": epoch, "duration_s": 0.0})))


def test_the_gateway_process_journals_its_fence(tmp_path: Path) -> None:
    """``autocell plant`` killed and started again on its state directory: a task completed
    by the first process is refused by the second (PROTOCOL.md §13.5, "across restarts")."""
    state = tmp_path / "state"
    first = _server(DEMO, state)
    _start(first, "mill1", "o-001/0", 1)
    first.env.run(until=first.env.now + 1.0)
    assert first.plant.fence.completed == {"o-001/0": "mill_bay"}
    first.events.close()            # no orderly stop: the fence is already on disk
    second = _server(DEMO, state)
    sent: list[PlantEventIn] = []
    second.plant.emit = sent.append
    _start(second, "mill2", "o-001/0", 2)
    assert sent == [PlantEventIn("command_refused", "mill2", "o-001/0", {
        "why": "task already completed (idempotency key)", "elsewhere": True,
        "done_at": "mill_bay"})]
    assert second.boot == first.boot + 1
    second.events.close()


def test_the_plant_identity_comes_from_the_cell_file(tmp_path: Path) -> None:
    from agents.runtime.host import routes_of
    from ops.config import load_cell
    from security.keystore import KeyDir

    data = yaml.safe_load(DEMO.read_text())
    data["sim"]["identity"] = "plant"
    cell = tmp_path / "cell.yaml"
    cell.write_text(yaml.safe_dump(data, sort_keys=False))
    server = _server(cell, tmp_path / "state")
    try:
        assert server.identity == "plant" and list(server.bus._sealers) == ["plant"]
        routes = routes_of(load_cell(cell))
        assert routes["plant"] == server.cfg.sim.endpoint and "sim" not in routes
        assert KeyDir(tmp_path / "state" / "keys").cert_path("plant").exists()
        assert server.status()["identity"] == "plant"
    finally:
        server.events.close()
    assert load_cell(DEMO).sim.identity == "sim"           # the default: nothing changes


def test_a_host_takes_plant_events_only_from_the_configured_identity(tmp_path: Path) -> None:
    from agents.runtime.host import CellClock, Host
    from ops.config import load_cell
    from ops.supervisor import ensure_keys
    from security.errors import Forbidden

    data = yaml.safe_load(DEMO.read_text())
    data["sim"]["identity"] = "plant"
    cell = tmp_path / "cell.yaml"
    cell.write_text(yaml.safe_dump(data, sort_keys=False))
    cfg = load_cell(cell)
    state = tmp_path / "state"
    state.mkdir()
    host = Host(cfg, "machines", keys_dir=ensure_keys(cfg, state), state_dir=state,
                clock=CellClock(time.time(), 1.0))

    def event_from(sender: str) -> Message:
        return Message(sender, "mill1", "", bytes(16), 1, 1, time.time(),
                       PlantEvent("repaired", "mill1", "", 0.0, {}))

    try:
        assert host._admit(event_from("plant")) is None
        refused = host._admit(event_from("sim"))
        assert isinstance(refused, Forbidden) and "'plant'" in str(refused)
    finally:
        host.journal.close()
        host.events.close()


# -- the cell file and the command line ----------------------------------------------------

def test_an_unknown_backend_is_a_file_line_error_naming_the_known_ones(tmp_path: Path) -> None:
    from ops.config.loader import validate_command

    text = DEMO.read_text().replace("  - id: agv2\n", "  - id: agv2\n    backend: modbus\n", 1)
    cell = tmp_path / "cell.yaml"
    cell.write_text(text)
    line = text.splitlines().index("    backend: modbus") + 1
    code, out = validate_command(cell)
    assert code == 2
    assert out == (f"{cell}:{line}: robots[1].backend: unknown plant backend 'modbus': use "
                   "'embedded' (the simulator), 'opcua' (machines) or 'vda5050' (robots)")
    cell.write_text(text.replace("backend: modbus", "backend: embedded"))
    assert validate_command(cell)[0] == 0


def test_opcua_drives_machines_and_needs_its_block(tmp_path: Path) -> None:
    from ops.config.loader import validate_command

    cell = tmp_path / "cell.yaml"
    robot = DEMO.read_text().replace("  - id: agv2\n", "  - id: agv2\n    backend: opcua\n", 1)
    cell.write_text(robot)
    code, out = validate_command(cell)
    assert code == 2 and "robots[1]: backend 'opcua' drives machines" in out, out
    machine = DEMO.read_text().replace("  - id: mill1 ", "  - id: mill1\n    backend: vda5050\n   ",
                                       1)
    cell.write_text(machine)
    code, out = validate_command(cell)
    assert code == 2 and "machines[0]: backend 'vda5050' drives robots" in out, out
    for broker, extra, why in (
            ("mqtt://127.0.0.1:1883", "", "needs `insecure: true`"),
            ("mqtt://10.0.0.5:1883", "\n      insecure: true", "loopback only"),
            ("mqtts://broker:8883", "\n      insecure: true", "is for a plain `mqtt://`")):
        vehicle = DEMO.read_text().replace(
            "  - id: agv2\n", f"  - id: agv2\n    backend: vda5050\n    vda5050:\n"
            f"      broker: {broker}{extra}\n", 1)
        cell.write_text(vehicle)
        code, out = validate_command(cell)
        assert code == 2 and why in out, out
    cell.write_text(vehicle.replace("\n      insecure: true", ""))
    assert validate_command(cell)[0] == 0
    bare = DEMO.read_text().replace("  - id: mill1 ", "  - id: mill1\n    backend: opcua\n   ", 1)
    cell.write_text(bare)
    code, out = validate_command(cell)
    assert code == 2 and "machines[0]: backend 'opcua' needs an `opcua:` block" in out, out
    full = DEMO.read_text().replace(
        "  - id: mill1 ", "  - id: mill1\n    backend: opcua\n    opcua:\n"
        "      endpoint: opc.tcp://127.0.0.1:4840\n      profile: euromap77\n   ", 1)
    cell.write_text(full)
    code, out = validate_command(cell)
    assert code == 2 and "unknown OPC UA profile 'euromap77'" in out, out
    cell.write_text(full.replace("profile: euromap77", "profile: packml"))
    assert validate_command(cell)[0] == 0


def test_the_plant_identity_must_be_its_own(tmp_path: Path) -> None:
    from ops.config.loader import validate_command

    data = yaml.safe_load(DEMO.read_text())
    data["sim"]["identity"] = "mill2"
    cell = tmp_path / "cell.yaml"
    cell.write_text(yaml.safe_dump(data, sort_keys=False))
    code, out = validate_command(cell)
    assert code == 2 and "sim.identity: plant identity 'mill2' is already used by " \
                         "machines[1].id" in out


def test_autocell_sim_is_an_alias_of_autocell_plant(tmp_path: Path) -> None:
    from ops.cli import build_parser, cmd_plant
    from ops.config import load_cell
    from ops.supervisor import Supervisor

    parser = build_parser()
    argv = [str(DEMO), "--speed", "20", "--start-at", "5", "--metrics-port", "9999"]
    plant, sim = parser.parse_args(["plant", *argv]), parser.parse_args(["sim", *argv])
    assert plant.func is cmd_plant and sim.func is cmd_plant
    assert {k: v for k, v in vars(plant).items() if k != "command"} == \
        {k: v for k, v in vars(sim).items() if k != "command"}
    sup = Supervisor(load_cell(DEMO), str(DEMO), state_dir=tmp_path, speed=20.0,
                     faults_path=None, faults=None, max_restarts=1, restart_window_s=10.0,
                     until_s=None, timeout_s=None)
    argv_sim = sup.children["sim"].argv          # the child keeps its name: status-sim.json
    assert argv_sim[argv_sim.index("ops.cli") + 1] == "plant"


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_hosts_and_a_gateway_under_another_identity_complete_orders(tmp_path: Path) -> None:
    """The demo cell's first orders on real Host objects and the gateway over tcp loopback,
    the plant named ``plant`` in the cell file: commands reach it, its events are admitted,
    the orders complete, nothing is rejected."""
    import asyncio

    from agents.runtime.host import CellClock, Host
    from ops.bench.healing import loopback_cell
    from ops.config import load_cell
    from ops.supervisor import ensure_keys
    from sim_bridge.remote import PlantServer

    data = yaml.safe_load(DEMO.read_text())
    data["sim"]["identity"] = "plant"
    named = tmp_path / "named.yaml"
    named.write_text(yaml.safe_dump(data, sort_keys=False))
    cfg = load_cell(loopback_cell(named, tmp_path, orders=2))
    state = tmp_path / "state"
    state.mkdir()
    keys = ensure_keys(cfg, state)
    clock = CellClock(time.time(), 50.0)
    hosts = {h.name: Host(cfg, h.name, keys_dir=keys, state_dir=state, clock=clock)
             for h in cfg.hosts}
    plant = PlantServer(cfg, keys_dir=keys, state_dir=state, clock=clock)

    def done() -> bool:
        orders = hosts["orders"].status()
        return len(orders["completed"]) == orders["orders"]

    async def scenario() -> None:
        tasks = [asyncio.create_task(r.run()) for r in (plant, *hosts.values())]
        deadline = time.monotonic() + 90
        while not done() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        for r in (*hosts.values(), plant):
            r._stop.set()
        await asyncio.gather(*tasks)

    asyncio.run(scenario())
    assert done(), hosts["orders"].status()
    assert plant.bus.stats.received["plant_command"] > 0
    assert sum(h.bus.stats.received["plant_event"] for h in hosts.values()) > 0
    assert not plant.bus.stats.rejected and all(not h.bus.stats.rejected for h in hosts.values())
