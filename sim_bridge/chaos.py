"""Chaos: a random fault scenario per seed, drawn from every kind of fault.

``autocell chaos CELL --seed N`` plays :func:`random_scenario` (cell, N) in
virtual time and checks the invariants; the chaos tests run it for many
seeds, and a failing seed is replayed with exactly that command.  The
scenario is an ordinary :class:`~agents.cell.faults.FaultScenario`, so
``--write FILE`` saves it for ``autocell run --faults`` or ``autocell up``.

The draws stay inside what the cell must survive without a human: every
breakdown is repaired, crashed agents come back, partitions heal, network
loss stays a few per cent and clock skew stays inside the receivers'
window (skew beyond it is a security event, tested on its own).
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

from agents.cell.faults import FaultScenario

if TYPE_CHECKING:
    from agents.cell.model import CellConfig


def random_scenario(cfg: CellConfig, seed: int) -> FaultScenario:
    rng = random.Random(f"chaos/{seed}")
    horizon_s = max((o.due_at for o in cfg.orders), default=600.0)
    resources = [m.id for m in cfg.machines] + [r.id for r in cfg.robots]
    agents = cfg.agent_ids()

    def when() -> float:
        return round(rng.uniform(0.0, 0.8 * horizon_s), 3)

    data: dict[str, Any] = {
        "name": f"chaos-{seed}",
        "description": f"random faults drawn from seed {seed}",
        "mtbf_breakdowns": rng.random() < 0.5,
        "breakdowns": [{"resource": rng.choice(resources), "at_s": when(),
                        "repair_s": round(rng.uniform(20.0, 600.0), 3)}
                       for _ in range(rng.randint(0, 3))],
        "crashes": [{"agent": rng.choice(agents), "at_s": when(),
                     "down_s": round(rng.uniform(0.1, 30.0), 3)}
                    for _ in range(rng.randint(0, 3))],
        "network": {"loss": round(rng.uniform(0.0, 0.05), 4),
                    "duplication": round(rng.uniform(0.0, 0.05), 4),
                    "reorder": round(rng.uniform(0.0, 0.05), 4),
                    "delay_s": round(rng.uniform(0.0, 0.01), 5),
                    "jitter_s": round(rng.uniform(0.0, 0.01), 5)},
        "partitions": [{"agents": rng.sample(agents, rng.randint(1, max(1, len(agents) // 4))),
                        "at_s": when(), "duration_s": round(rng.uniform(5.0, 90.0), 3)}
                       for _ in range(rng.randint(0, 2))],
        "clock_skew": [{"agent": rng.choice(agents), "offset_s": round(rng.uniform(-20, 20), 3),
                        "at_s": when()} for _ in range(rng.randint(0, 1))],
        "hosts": [],
    }
    if cfg.hosts and rng.random() < 0.5:
        data["hosts"].append({"host": rng.choice(cfg.hosts).name,
                              "action": rng.choice(["kill", "pause"]), "at_s": when(),
                              "duration_s": round(rng.uniform(0.5, 60.0), 3)})
    return FaultScenario.model_validate(data)


def replay_command(cell_path: str, seed: int, orders: int | None) -> str:
    extra = f" --orders {orders}" if orders is not None else ""
    return f"autocell chaos {cell_path} --seed {seed}{extra}"
