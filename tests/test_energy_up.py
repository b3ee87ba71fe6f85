"""The energy manager under ``autocell up``: real processes, ZeroMQ, the peak cap kept.

The energy demo cell (cell_configs/demo_cell_energy.yaml, its cap as shipped) cut
to its first orders, on free loopback ports, paced at ``--speed 10``: the orders
host also runs the energy manager, the machines ask it for power leases over
the network.  The test waits for the cell to end (``up`` returns), never for a
fixed time, and then checks the processes' event logs: every order done, every
operation started under a lease, and ``peak_cap_never_exceeded`` — the same check
``autocell run`` makes (sim_bridge/invariants.py) — on the plant's log.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from agents.cell.specs import KpiSpec
from helpers.waiting import CELL_RUN_BOUND_S
from ops.bench.healing import loopback_cell
from ops.config import load_cell
from sim_bridge.invariants import cap_never_exceeded

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "cell_configs" / "demo_cell_energy.yaml"
ORDERS = 4


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_the_energy_manager_keeps_the_cap_under_up(tmp_path: Path) -> None:
    from ops.cli import main

    data = yaml.safe_load(DEMO.read_text())
    data["orders"] = data["orders"][:ORDERS]
    for m in data["machines"]:             # no breakdowns or scrap: the cap is the subject
        m["scrap_rate"] = 0.0
        m.pop("mtbf_s", None)
        m.pop("mttr_s", None)
    src = tmp_path / "src.yaml"
    src.write_text(yaml.safe_dump(data, sort_keys=False))
    cell = loopback_cell(src, tmp_path)
    cfg = load_cell(cell)
    assert cfg.energy is not None and cfg.energy.peak_cap_kw is not None and len(cfg.hosts) > 1
    state = tmp_path / "state"
    code = main(["up", str(cell), "--speed", "10", "--state-dir", str(state), "--quiet",
                 "--timeout", str(int(CELL_RUN_BOUND_S))])
    report = json.loads((state / "report.json").read_text())
    assert code == 0, report
    assert report["orders_completed"] == report["orders_total"] == ORDERS
    assert all(report["invariants"].values()), report["invariant_violations"]

    logs = {p.name: [json.loads(x) for x in p.read_text().splitlines() if x.strip()]
            for p in sorted(state.glob("events-*.jsonl"))}
    events = [e for evs in logs.values() for e in evs]
    starts = [e for e in logs["events-sim.jsonl"] if e["ev"] == "op_start"]
    granted = [e for e in events if e["ev"] == "power_granted"]
    assert starts and len({e["task"] for e in granted}) >= len({e["task"] for e in starts})
    assert any(e["ev"] == "power_released" for e in events)
    # the cap at every instant, as `autocell run` checks it (raises logged by the manager)
    raises = [e for e in events if e["ev"] in ("cap_raised", "cap_restored")]
    sim = sorted(logs["events-sim.jsonl"] + raises, key=lambda e: e["t"])
    assert cap_never_exceeded(sim, KpiSpec.from_config(cfg)) == []
