"""``autocell up`` with the AGVs as VDA 5050 vehicles not written here (issue 15, end to end).

The demo cell, all 24 orders, at 50× real time: both AGVs are vda-5050-lib
virtual vehicles (time lapse 50, tests/vda5050/CONTRACT.md) on a private
Mosquitto with a password, the machines simulated.  Every order completes
and every invariant holds on the gateway's event log; each vehicle's moves
are orders it accepted.  Then the same with a vehicle killed mid-move: the
broker's last will takes it down, the transport goes to the other AGV, the
vehicle is restarted and comes back, and no part is moved twice.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers.vda5050_peers import PASSWORD, USERNAME, Broker, Vehicles, missing_peers
from helpers.waiting import CELL_RUN_BOUND_S, PROCESS_BOUND_S, wait_until
from test_opcua_backend import free_port

from ops.bench.healing import loopback_cell
from ops.bench.plant import Emulator
from sim_bridge.opcua.pki import OpcUaPki

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "cell_configs" / "demo_cell.yaml"
SPEED = 50.0

pytestmark = [pytest.mark.vda5050, pytest.mark.slow,
              pytest.mark.skipif(bool(missing_peers()) and not os.environ.get("CI"),
                                 reason="mosquitto or the virtual vehicles are not installed: "
                                        "run `bash tests/setup.sh`")]


def plant_events(state: Path) -> list[dict[str, Any]]:
    path = state / "events-sim.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def _run(tmp_path: Path, during: Callable[[Path, dict[str, Vehicles]], None] | None = None,
         on_opcua: tuple[str, ...] = ()) -> dict[str, Any]:
    cell = loopback_cell(DEMO, tmp_path)
    data = yaml.safe_load(cell.read_text())
    state = tmp_path / "state"
    keys = state / "keys"
    keys.mkdir(parents=True)
    secrets = keys / "opcua-secrets.yaml"          # the equipment secrets file, 0600
    secrets.write_text(yaml.safe_dump({"broker": {"username": USERNAME, "password": PASSWORD}}))
    secrets.chmod(0o600)
    broker = Broker(tmp_path / "broker").start()
    places = {loc["id"]: loc for loc in data["layout"]["locations"]}
    fleet: dict[str, Vehicles] = {}     # one process per vehicle: one can die alone
    servers: list[Emulator] = []
    try:
        if on_opcua:                    # machines on node-opcua servers (issue 14) as well
            pki = OpcUaPki(keys / "opcua")
            pki.ensure_own()
            for m in data["machines"]:
                if m["id"] in on_opcua:
                    emu = Emulator(tmp_path / f"server-{m['id']}", [m["id"]],
                                   trust_client=pki.cert_path, speed=SPEED, stack="node",
                                   port=free_port())
                    servers.append(emu)
                    m["backend"] = "opcua"
                    m["opcua"] = {"endpoint": emu.wait_ready(), "grace_s": 2.0}
                    pki.trust(emu.server_cert)
        for r in data["robots"]:
            home = places[r["home"]]
            fleet[r["id"]] = Vehicles(
                tmp_path / "vehicles", broker.url, [r["id"]], map_id="cell", speed=SPEED,
                name=r["id"], extra=[f"--start={r['id']}={home['x']},{home['y']},0,{home['id']}",
                                     "--vehicle-speed", "10"]).start()
        for r in data["robots"]:
            r["backend"] = "vda5050"
            r["vda5050"] = {"broker": broker.url, "insecure": True, "user": "broker",
                            "grace_s": 1.0}
        cell.write_text(yaml.safe_dump(data, sort_keys=False))
        proc = subprocess.Popen(
            [sys.executable, "-m", "ops.cli", "up", str(cell), "--speed", f"{SPEED:g}",
             "--state-dir", str(state), "--timeout", f"{CELL_RUN_BOUND_S:g}", "--quiet"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        try:
            if during is not None:
                during(state, fleet)
            _out, err = proc.communicate(timeout=PROCESS_BOUND_S)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    finally:
        for vehicle in fleet.values():
            vehicle.stop()
        for emu in servers:
            emu.stop()
        broker.stop()
    assert proc.returncode == 0, err[-3000:]
    r = json.loads((state / "report.json").read_text())
    assert r["orders_completed"] == r["orders_total"] == 24 and r["orders_lost"] == 0, r
    assert all(r["invariants"].values()), r["invariant_violations"]
    events = plant_events(state)
    accepted = {e["order"] for e in events if e["ev"] == "vda_order_accepted"}
    started = [e for e in events if e["ev"] == "move_start"]
    arrived = [e for e in events if e["ev"] == "arrived"]
    assert started and {e["order"] for e in started} >= accepted
    # each transport task arrived once (a move handed back is done again, once)
    tasks = [e["task"] for e in arrived]
    assert len(tasks) == len(set(tasks)), sorted(t for t in tasks if tasks.count(t) > 1)
    return {"report": r, "events": events}


def test_up_runs_the_demo_cell_with_both_agvs_as_vda5050_vehicles(tmp_path: Path) -> None:
    out = _run(tmp_path)
    robots = {e["robot"] for e in out["events"] if e["ev"] == "arrived"}
    assert robots == {"agv1", "agv2"}


def test_up_runs_the_demo_cell_with_agvs_on_vda5050_and_machines_on_opc_ua(
        tmp_path: Path) -> None:
    out = _run(tmp_path, on_opcua=("mill1", "mill2", "lathe1", "drill1", "station1"))
    assert {e["machine"] for e in out["events"] if e["ev"] == "op_done"} == {
        "mill1", "mill2", "lathe1", "drill1", "station1"}
    assert {e["robot"] for e in out["events"] if e["ev"] == "arrived"} == {"agv1", "agv2"}
    assert len({e["endpoint"] for e in out["events"] if e["ev"] == "opcua_link_up"}) == 5


def test_a_vehicle_killed_mid_move_is_replaced_by_the_other_and_comes_back(
        tmp_path: Path) -> None:
    def kill_agv1_mid_move(state: Path, fleet: dict[str, Vehicles]) -> None:
        wait_until("agv1 under way", lambda: [e for e in plant_events(state)
                                              if e["ev"] == "vda_order_accepted"
                                              and e.get("robot") == "agv1"])
        fleet["agv1"].kill()                  # the broker sends agv1's last will
        wait_until("agv1's fault", lambda: [e for e in plant_events(state)
                                            if e["ev"] == "fault" and e.get("robot") == "agv1"])
        fleet["agv1"].start()
        wait_until("agv1 back", lambda: [e for e in plant_events(state)
                                         if e["ev"] == "repaired" and e.get("robot") == "agv1"])

    out = _run(tmp_path, kill_agv1_mid_move)
    events = out["events"]
    fault = next(e for e in events if e["ev"] == "fault" and e.get("robot") == "agv1")
    assert "CONNECTIONBROKEN" in fault["reason"]
    handed = [e for e in events if e["ev"] == "move_abort" and e["robot"] == "agv1"]
    assert handed, "the move cut off by the kill was handed back"
    task = handed[0]["task"]
    assert [e for e in events if e["ev"] == "arrived" and e["task"] == task]
    assert not [e for e in events if e["ev"] == "fault" and e.get("robot") == "agv2"]
