"""``autocell bench sim``: simulated seconds per wall second, signing on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ops.config import load_cell_or_instance
from sim_bridge.virtual import VirtualCell

DEMO = Path(__file__).resolve().parents[2] / "cell_configs" / "demo_cell.yaml"


def run(cell_path: Path = DEMO, seeds: int = 3) -> dict[str, Any]:
    cfg = load_cell_or_instance(cell_path)
    runs = []
    for seed in range(1, seeds + 1):
        cell = VirtualCell(cfg, seed=seed)
        cell.run()
        runs.append({"seed": seed, "sim_s": cell.env.now, "wall_s": cell.wall_s,
                     "messages": cell.stats.messages_sent, "verified": cell.stats.verified})
    sim = sum(r["sim_s"] for r in runs)
    wall = sum(r["wall_s"] for r in runs)
    msgs = sum(r["messages"] for r in runs)
    return {"cell": cfg.cell, "runs": len(runs), "sim_s": round(sim, 1), "wall_s": round(wall, 3),
            "sim_speedup": round(sim / wall, 1), "messages": msgs,
            "signed_msgs_per_wall_s": round(msgs / wall, 1), "signing": True}
