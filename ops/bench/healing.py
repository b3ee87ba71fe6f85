"""``autocell bench healing``: how fast the cell notices faults and routes around them.

Two parts, both measured in the same run:

* **virtual time** — the shipped fault scenarios (``cell_configs/faults``)
  on the demo cell, over several seeds.  From each run's event log
  (:func:`sim_bridge.report.healing_figures`): detection latency (fault →
  first re-negotiation of work it hit), in seconds and in heartbeat
  intervals; recovery latency (detection → the task's next award), in
  seconds and in reply deadlines.  Targets: detection within 3 heartbeats;
  a re-route within one reply deadline.
* **real processes** — ``autocell up`` on the demo cell's first orders on
  free loopback ports, with ``kill -9`` of a host at several times; the
  supervisor measures each restart from the death it sees to the new
  process's first status file.  Target: restart p95 ≤ 2 s.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

import yaml

from agents.cell.build import timing_of
from ops.config import load_cell
from ops.config.fault_files import load_faults
from sim_bridge.invariants import parse
from sim_bridge.report import build_report, healing_samples, p95
from sim_bridge.virtual import VirtualCell

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "cell_configs" / "demo_cell.yaml"
FAULTS = ROOT / "cell_configs" / "faults"


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def loopback_cell(source: Path, out_dir: Path, orders: int | None = None) -> Path:
    """A copy of a cell with its first ``orders`` orders on free loopback ports."""
    data = yaml.safe_load(source.read_text())
    if orders is not None:
        data["orders"] = data["orders"][:orders]
    ports = free_ports(len(data["hosts"]) + 2)
    for h, port in zip(data["hosts"], ports):
        h["endpoint"] = f"tcp://127.0.0.1:{port}"
        h.pop("metrics_port", None)   # fixed ports would collide between parallel runs
    data.get("sim", {}).pop("metrics_port", None)
    data.setdefault("sim", {})["endpoint"] = f"tcp://127.0.0.1:{ports[-2]}"
    data.setdefault("escalation", {})["console_endpoint"] = f"tcp://127.0.0.1:{ports[-1]}"
    path = out_dir / "cell.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def virtual_part(seeds: int, progress: Callable[[str], None]) -> dict[str, Any]:
    cfg = load_cell(DEMO)
    timing = timing_of(cfg)
    detect: list[float] = []
    recover: list[float] = []
    rows = []
    for path in sorted(FAULTS.glob("*.yaml")):
        scenario = load_faults(path, cfg)
        for seed in range(1, seeds + 1):
            cell = VirtualCell(cfg, seed=seed, faults=scenario)
            cell.run()
            r = build_report(cell)
            rows.append({"scenario": scenario.name, "seed": seed,
                         "orders_lost": r["orders_lost"], "faults": r["faults_total"],
                         "detected": r["faults_detected"], "reroutes": r["reroutes"],
                         "lease_expiries": r["lease_expiries"], "restarts": r["restarts"],
                         "invariants_hold": all(r["invariants"].values())})
            d, rec, _ = healing_samples(parse(cell.events))
            detect += d
            recover += rec
        progress(f"{scenario.name}: {seeds} seeds")
    hb, deadline = timing.heartbeat_interval_s, timing.reply_deadline_s
    return {
        "runs": rows,
        "detections": len(detect), "recoveries": len(recover),
        "detection_latency_s": {"max": round(max(detect, default=0.0), 4),
                                "p95": round(p95(detect), 4)},
        "detection_latency_heartbeats": {"max": round(max(detect, default=0.0) / hb, 3),
                                         "p95": round(p95(detect) / hb, 3)},
        "detection_bound_s": round(timing.lease_window_s, 4),
        "recovery_latency_s": {"max": round(max(recover, default=0.0), 4),
                               "p95": round(p95(recover), 4)},
        "recovery_latency_reply_deadlines": {
            "max": round(max(recover, default=0.0) / deadline, 3),
            "p95": round(p95(recover) / deadline, 3)},
        "heartbeat_interval_s": hb, "reply_deadline_s": deadline,
    }


def process_part(kills: int, speed: float, progress: Callable[[str], None]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="autocell-healing-") as tmp:
        out = Path(tmp)
        cell = loopback_cell(DEMO, out, orders=8)
        hosts = [h["name"] for h in yaml.safe_load(cell.read_text())["hosts"]]
        faults = out / "kills.yaml"
        faults.write_text(yaml.safe_dump({
            "name": "kills", "mtbf_breakdowns": False,
            "hosts": [{"host": hosts[k % len(hosts)], "action": "kill", "at_s": 120.0 + 90.0 * k}
                      for k in range(kills)]}))
        state = out / "state"
        res = subprocess.run(
            [sys.executable, "-m", "ops.cli", "up", str(cell), "--speed", repr(speed),
             "--faults", str(faults), "--state-dir", str(state), "--timeout", "300",
             "--max-restarts", str(kills + 1), "--quiet"],
            capture_output=True, text=True, cwd=ROOT, timeout=400)
        report = json.loads((state / "report.json").read_text())
        restarts = [e["restart_s"] for e in report["supervisor_events"]
                    if e["ev"] == "restarted"]
        progress(f"processes: {len(restarts)} restarts")
        return {"returncode": res.returncode, "speed": speed, "kills": kills,
                "restarts": len(restarts),
                "restart_s": {"max": round(max(restarts, default=0.0), 3),
                              "p95": round(p95(restarts), 3)},
                "orders_completed": report["orders_completed"],
                "orders_total": report["orders_total"], "orders_lost": report["orders_lost"],
                "invariants_hold": all(report["invariants"].values())}


def run(seeds: int = 3, kills: int = 6, speed: float = 50.0, processes: bool = True,
        progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    out: dict[str, Any] = {"virtual": virtual_part(seeds, progress)}
    if processes:
        out["processes"] = process_part(kills, speed, progress)
    v = out["virtual"]
    out["targets"] = {
        "detection_within_3_heartbeats_plus_tolerance": v["detection_latency_s"]["max"]
        <= v["detection_bound_s"] + 1e-6,
        "reroute_within_one_reply_deadline": v["recovery_latency_reply_deadlines"]["max"]
        <= 1.0 + 1e-6,
    }
    if processes:
        out["targets"]["restart_p95_within_2_s"] = out["processes"]["restart_s"]["p95"] <= 2.0
    return out
