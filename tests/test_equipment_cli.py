"""``autocell equipment trust | browse | check`` against OPC UA servers not written here.

The commissioning commands run as an engineer runs them (a subprocess of the
installed CLI) against the node-opcua and the asyncua machine emulators:
trusting a server prints its thumbprint and files its certificate; browsing
lists the machines with their profile and a cell-file snippet; checking a
cell prints one line per machine and exits 1 on any problem.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers.waiting import PROCESS_BOUND_S
from test_opcua_backend import STACKS, server

from sim_bridge.opcua.pki import OpcUaPki, thumbprint

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "cell_configs" / "demo_cell.yaml"

pytestmark = [pytest.mark.opcua, pytest.mark.slow]


def autocell(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ops.cli", *args], capture_output=True,
                          text=True, timeout=PROCESS_BOUND_S, cwd=ROOT, stdin=subprocess.DEVNULL)


def cell_with(tmp_path: Path, machines: dict[str, dict[str, object]]) -> Path:
    data = yaml.safe_load(DEMO.read_text())
    for m in data["machines"]:
        if m["id"] in machines:
            m["backend"] = "opcua"
            m["opcua"] = machines[m["id"]]
    path = tmp_path / "cell.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.mark.parametrize("stack", STACKS)
def test_trust_browse_and_check_commission_a_server(tmp_path: Path, stack: str) -> None:
    keys = tmp_path / "keys"
    pki = OpcUaPki(keys / "opcua")
    emu, endpoint = server(tmp_path, stack, ["mill1", "lathe1"], pki, trust=False)
    try:
        # not trusted yet: browse refuses, and says how to trust
        res = autocell("equipment", "browse", endpoint, "--keys-dir", str(keys))
        assert res.returncode == 2 and "is not trusted" in res.stderr, res.stderr
        assert "autocell equipment trust" in res.stderr
        # trust without --yes and without a terminal: shown, not filed
        res = autocell("equipment", "trust", endpoint, "--keys-dir", str(keys))
        assert res.returncode == 1 and thumbprint(emu.server_cert) in res.stdout
        assert not pki.trusted()
        res = autocell("equipment", "trust", endpoint, "--keys-dir", str(keys), "--yes")
        assert res.returncode == 0, res.stderr
        assert thumbprint(emu.server_cert) in pki.trusted()

        res = autocell("equipment", "browse", endpoint, "--keys-dir", str(keys), "--json")
        assert res.returncode == 0, res.stderr
        found = {m["machine"]: m for m in json.loads(res.stdout)}
        assert set(found) == {"mill1", "lathe1"}
        assert found["mill1"]["profiles"] == ["machinery-jobs"]
        assert found["mill1"]["readings"]["spindle_load"] == "Monitoring/SpindleLoad"
        res = autocell("equipment", "browse", endpoint, "--keys-dir", str(keys))
        snippet = yaml.safe_load(res.stdout.split("cell-file snippet", 1)[1].split("\n", 1)[1])
        assert {m["id"] for m in snippet["machines"]} == {"mill1", "lathe1"}
        assert all(m["opcua"]["endpoint"] == endpoint for m in snippet["machines"])

        good = {"endpoint": endpoint, "readings": {"temperature": "Monitoring/Temperature"}}
        cell = cell_with(tmp_path, {"mill1": good, "lathe1": {"endpoint": endpoint}})
        res = autocell("equipment", "check", str(cell), "--keys-dir", str(keys))
        assert res.returncode == 0, res.stdout + res.stderr
        lines = res.stdout.splitlines()
        assert len(lines) == 2 and all(line.endswith("ok") for line in lines), lines
        assert all("Basic256Sha256/SignAndEncrypt" in line for line in lines)

        bad = {"endpoint": endpoint, "readings": {"torque": "Monitoring/Torque"}}
        cell = cell_with(tmp_path, {"mill1": bad, "lathe1": {"endpoint": endpoint,
                                                             "machine": "lathe9"}})
        res = autocell("equipment", "check", str(cell), "--keys-dir", str(keys), "--json")
        assert res.returncode == 1
        verdicts = {c["machine"]: c for c in json.loads(res.stdout)}
        assert "Monitoring/Torque" in verdicts["mill1"]["problems"][0]
        assert "Machines/lathe9" in verdicts["lathe1"]["problems"][0]
    finally:
        emu.stop()


def test_check_reports_an_unreachable_server_and_a_missing_user(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    cell = cell_with(tmp_path, {"mill1": {"endpoint": "opc.tcp://127.0.0.1:1"},
                                "lathe1": {"endpoint": "opc.tcp://127.0.0.1:1", "user": "nobody"}})
    secrets = keys / "opcua-secrets.yaml"
    secrets.parent.mkdir(parents=True)
    secrets.write_text("someone: {username: a, password: b}\n")
    secrets.chmod(0o644)
    res = autocell("equipment", "check", str(cell), "--keys-dir", str(keys))
    assert res.returncode == 2 and "chmod 600" in res.stderr, res.stderr
    secrets.chmod(0o600)
    res = autocell("equipment", "check", str(cell), "--keys-dir", str(keys))
    assert res.returncode == 1, res.stdout + res.stderr
    by_machine = {line.split()[0]: line for line in res.stdout.splitlines()}
    assert "unreachable" in by_machine["mill1"]
    assert "'nobody' is not in the secrets file" in by_machine["lathe1"]


def _browse_snippet(endpoint: str, keys: Path) -> tuple[dict[str, dict[str, object]], list[dict]]:
    res = autocell("equipment", "browse", endpoint, "--keys-dir", str(keys), "--json")
    assert res.returncode == 0, res.stderr
    found = {m["machine"]: m for m in json.loads(res.stdout)}
    res = autocell("equipment", "browse", endpoint, "--keys-dir", str(keys))
    assert res.returncode == 0, res.stderr
    snippet = yaml.safe_load(res.stdout.split("cell-file snippet", 1)[1].split("\n", 1)[1])
    return found, snippet["machines"]


@pytest.mark.parametrize("stack", STACKS)
def test_browse_recognises_packml_units_and_check_passes_their_snippet(
        tmp_path: Path, stack: str) -> None:
    keys = tmp_path / "keys"
    pki = OpcUaPki(keys / "opcua")
    emu, endpoint = server(tmp_path, stack, ["mill1"], pki, extra=["--packml", "P1,P2"])
    try:
        found, snippet = _browse_snippet(endpoint, keys)
        assert set(found) == {"mill1", "P1", "P2"}
        assert found["P1"]["profiles"] == ["packml"]
        assert found["P1"]["type"] == "PackMLBaseObjectType"
        assert found["P1"]["readings"] == {"temperature": "Monitoring/Temperature"}
        assert found["mill1"]["profiles"] == ["machinery-jobs"]
        units = {m["id"]: m["opcua"] for m in snippet if m["id"] in ("P1", "P2")}
        assert units["P1"]["profile"] == "packml" and "machine" not in units["P1"]
        # the cell's own ids: `machine:` names the unit on the server
        cell = cell_with(tmp_path, {"mill1": {**units["P1"], "machine": "P1"},
                                    "lathe1": {**units["P2"], "machine": "P9"}})
        res = autocell("equipment", "check", str(cell), "--keys-dir", str(keys), "--json")
        assert res.returncode == 1
        verdicts = {c["machine"]: c for c in json.loads(res.stdout)}
        assert verdicts["mill1"]["ok"], verdicts["mill1"]
        assert "P9" in verdicts["lathe1"]["problems"][0]
    finally:
        emu.stop()


@pytest.mark.parametrize("stack", [p for p in STACKS if p.id == "asyncua"])
def test_browse_suggests_a_nodes_mapping_for_a_machine_without_a_companion_spec(
        tmp_path: Path, stack: str) -> None:
    keys = tmp_path / "keys"
    pki = OpcUaPki(keys / "opcua")
    emu, endpoint = server(tmp_path, stack, [], pki, extra=["--legacy", "L1"])
    try:
        found, snippet = _browse_snippet(endpoint, keys)
        assert set(found) == {"L1"} and found["L1"]["profiles"] == ["nodes"]
        assert found["L1"]["path"] == "Legacy/L1"
        assert found["L1"]["nodes"] == {
            "start": "Start", "abort": "Abort", "done_counter": "DoneCount", "busy": "Busy",
            "fault": "Fault", "alarm_text": "AlarmText", "quality": "Quality"}
        (entry,) = snippet
        assert entry["opcua"]["profile"] == "nodes" and entry["opcua"]["machine"] == "Legacy/L1"
        cell = cell_with(tmp_path, {"mill1": entry["opcua"]})
        res = autocell("equipment", "check", str(cell), "--keys-dir", str(keys))
        assert res.returncode == 0 and res.stdout.rstrip().endswith("ok"), res.stdout + res.stderr
    finally:
        emu.stop()
