"""``autocell up`` with machines on OPC UA servers not written here (issue 14, end to end).

The demo cell, all 24 orders, at 50× real time, with its machines on machine
emulators (one server process per machine, tests/opcua/CONTRACT.md) over
Basic256Sha256/SignAndEncrypt: every order completes and every invariant
holds (the supervisor checks them on the gateway's event log), and each
server's **own job log** shows no operation executed twice.  Once with all
five machines on node-opcua, once with two on asyncua's server and three
simulated (hardware in the loop), once with two as PackML units (profile
``packml``) on node-opcua and three simulated, and once with ``up --ray`` (the
gateway a Ray actor) and two machines on node-opcua.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers.waiting import CELL_RUN_BOUND_S, PROCESS_BOUND_S, wait_until
from test_opcua_backend import STACKS, executions, free_port

from ops.bench.healing import loopback_cell
from ops.bench.plant import Emulator
from sim_bridge.opcua.pki import OpcUaPki

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "cell_configs" / "demo_cell.yaml"
SPEED = 50.0

pytestmark = [pytest.mark.opcua, pytest.mark.slow]
STACK = {p.id: p for p in STACKS}


def plant_events(state: Path) -> list[dict[str, Any]]:
    path = state / "events-sim.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def _run(tmp_path: Path, stack: str, on_opcua: list[str],
         during: Callable[[Path, dict[str, Emulator]], None] | None = None,
         profile: str = "machinery-jobs", up_args: tuple[str, ...] = ()) -> dict[str, Any]:
    cell = loopback_cell(DEMO, tmp_path)
    data = yaml.safe_load(cell.read_text())
    state = tmp_path / "state"
    pki = OpcUaPki(state / "keys" / "opcua")          # where `up` keeps the gateway's keys
    pki.ensure_own()
    servers: dict[str, Emulator] = {}
    try:
        for m in data["machines"]:
            if m["id"] not in on_opcua:
                continue
            unit = profile == "packml"
            emu = Emulator(tmp_path / f"server-{m['id']}", [] if unit else [m["id"]],
                           trust_client=pki.cert_path, speed=SPEED, stack=stack,
                           port=free_port(), extra=["--packml", m["id"]] if unit else None)
            servers[m["id"]] = emu
        for machine, emu in servers.items():
            endpoint = emu.wait_ready()
            pki.trust(emu.server_cert)
            entry = next(m for m in data["machines"] if m["id"] == machine)
            entry["backend"] = "opcua"
            entry["opcua"] = {"endpoint": endpoint, "grace_s": 2.0,
                              "readings": {"spindle_load": "Monitoring/SpindleLoad"}}
            if profile == "packml":
                entry["opcua"].update(profile="packml",
                                      readings={"temperature": "Monitoring/Temperature"})
        cell.write_text(yaml.safe_dump(data, sort_keys=False))
        proc = subprocess.Popen(
            [sys.executable, "-m", "ops.cli", "up", str(cell), "--speed", f"{SPEED:g}",
             "--state-dir", str(state), "--timeout", f"{CELL_RUN_BOUND_S:g}", "--quiet", *up_args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        try:
            if during is not None:
                during(state, servers)
            _out, err = proc.communicate(timeout=PROCESS_BOUND_S)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    finally:
        for emu in servers.values():
            emu.stop()
    assert proc.returncode == 0, err[-3000:]
    r = json.loads((state / "report.json").read_text())
    assert r["orders_completed"] == r["orders_total"] == 24 and r["orders_lost"] == 0, r
    assert all(r["invariants"].values()), r["invariant_violations"]
    events = [json.loads(line) for line in (state / "events-sim.jsonl").read_text().splitlines()]
    links = {e["endpoint"] for e in events if e["ev"] == "opcua_link_up"}
    assert len(links) == len(on_opcua)
    # what the servers themselves ran: every job ended at most once, and every operation of
    # an OPC UA machine that the gateway reports done was run there
    ended: dict[str, int] = {}
    for machine, emu in servers.items():
        for job, n in executions(emu).items():
            ended[job.rsplit("@", 1)[0]] = ended.get(job.rsplit("@", 1)[0], 0) + n
    assert ended and max(ended.values()) == 1, ended
    done_there = {e["task"] for e in events if e["ev"] == "op_done" and e["machine"] in servers}
    assert done_there == set(ended), (done_there ^ set(ended))
    return {"report": r, "events": events, "servers": servers}


@pytest.mark.parametrize("stack", [STACK["node"]])
def test_up_runs_the_demo_cell_with_all_five_machines_on_node_opcua(tmp_path: Path,
                                                                     stack: str) -> None:
    _run(tmp_path, stack, ["mill1", "mill2", "lathe1", "drill1", "station1"])


@pytest.mark.parametrize("stack", [STACK["asyncua"]])
def test_up_runs_the_demo_cell_with_two_machines_on_asyncua_and_three_simulated(
        tmp_path: Path, stack: str) -> None:
    _run(tmp_path, stack, ["mill1", "lathe1"])


@pytest.mark.parametrize("stack", [STACK["node"]])
def test_up_runs_the_demo_cell_with_two_packml_units_and_three_simulated(
        tmp_path: Path, stack: str) -> None:
    out = _run(tmp_path, stack, ["mill1", "lathe1"], profile="packml")
    assert not [e for e in out["events"] if e["ev"] in ("fault", "opcua_refused")
                and e["machine"] in ("mill1", "lathe1")], "no unit went down or refused"


@pytest.mark.parametrize("stack", [STACK["node"]])
def test_up_ray_runs_the_demo_cell_with_two_machines_on_node_opcua(
        tmp_path: Path, stack: str) -> None:
    """``up --ray``: the plant gateway is a Ray actor, and it drives the OPC UA machines."""
    out = _run(tmp_path, stack, ["mill1", "lathe1"], up_args=("--ray",))
    assert out["report"]["deployment"] == "ray"
    assert {e["machine"] for e in out["events"] if e["ev"] == "op_done"} >= {"mill1", "lathe1"}


@pytest.mark.parametrize("stack", [STACK["node"]])
def test_kill_9_of_a_machine_server_mid_job_reroutes_and_runs_nothing_twice(
        tmp_path: Path, stack: str) -> None:
    def kill_mill1_mid_job(state: Path, servers: dict[str, Emulator]) -> None:
        wait_until("a job on mill1", lambda: [e for e in plant_events(state)
                                              if e["ev"] == "op_start" and e["machine"] == "mill1"])
        servers["mill1"].kill()
        wait_until("mill1's fault", lambda: [e for e in plant_events(state) if e["ev"] == "fault"
                                             and e["machine"] == "mill1"])
        servers["mill1"].start()
        servers["mill1"].wait_ready()
        wait_until("mill1 back", lambda: [e for e in plant_events(state)
                                          if e["ev"] == "repaired" and e["machine"] == "mill1"])

    out = _run(tmp_path, stack, ["mill1", "lathe1"], kill_mill1_mid_job)
    events = out["events"]
    fault = next(e for e in events if e["ev"] == "fault" and e["machine"] == "mill1")
    assert fault["reason"].startswith("link lost")
    handed_back = [e for e in events if e["ev"] == "op_abort" and e["machine"] == "mill1"]
    assert handed_back and handed_back[0]["why"].startswith("link lost")
    # the task cut off by the kill was done again somewhere, exactly once
    task = handed_back[0]["task"]
    assert [e["machine"] for e in events if e["ev"] == "op_done" and e["task"] == task
            and e["quality"] == "ok"] != []
