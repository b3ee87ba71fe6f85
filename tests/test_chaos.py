"""Chaos: seeded whole-cell runs in virtual time with random faults of every kind.

At least 200 seeds run in CI (``AUTOCELL_CHAOS_SEEDS=N`` for more).  Each
seed draws breakdowns, agent crashes, a host kill or pause, message loss,
duplication, delay and reordering, partitions and clock skew
(:func:`sim_bridge.chaos.random_scenario`); every invariant (docs/architecture.md)
must hold and every order must complete.  A failure names the seed and the
exact command that replays it.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest

from ops.config import load_cell
from ops.run import chaos_failures, chaos_one, trimmed
from sim_bridge.chaos import random_scenario, replay_command

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "cell_configs" / "demo_cell.yaml"
ORDERS = 8                      # the first 8 orders of the demo cell: ~0.2 s a seed
SEEDS = int(os.environ.get("AUTOCELL_CHAOS_SEEDS", "200"))
CFG = trimmed(load_cell(DEMO), ORDERS)


@pytest.mark.parametrize("seed", range(SEEDS))
def test_chaos_seed(seed: int) -> None:
    report, _ = chaos_one(CFG, seed)
    problems = chaos_failures(report)
    assert not problems, (f"chaos seed {seed} failed: {problems}\n  replay: "
                          f"{replay_command('cell_configs/demo_cell.yaml', seed, ORDERS)}")
    assert report["orders_lost"] == 0


def test_the_seeds_cover_every_fault_kind() -> None:
    """The draw is not degenerate: across the first 200 seeds every kind shows up often."""
    kinds: Counter[str] = Counter()
    for seed in range(200):
        s = random_scenario(CFG, seed)
        kinds["breakdown"] += bool(s.breakdowns)
        kinds["crash"] += bool(s.crashes)
        kinds["host_kill"] += any(h.action == "kill" for h in s.hosts)
        kinds["host_pause"] += any(h.action == "pause" for h in s.hosts)
        kinds["partition"] += bool(s.partitions)
        kinds["clock_skew"] += bool(s.clock_skew)
        kinds["loss"] += s.network.loss > 0
        kinds["duplication"] += s.network.duplication > 0
        kinds["reorder"] += s.network.reorder > 0
    assert all(kinds[k] >= 30 for k in ("breakdown", "crash", "host_kill", "host_pause",
                                        "partition", "clock_skew", "loss", "duplication",
                                        "reorder")), kinds


def test_a_chaos_run_is_reproducible_byte_for_byte() -> None:
    a, _ = chaos_one(CFG, 7)
    b, _ = chaos_one(CFG, 7)
    assert a["event_log_sha256"] == b["event_log_sha256"]
    assert a["restarts"] == b["restarts"]


def test_the_replay_command_replays_the_seed(tmp_path: Path) -> None:
    """The printed command exists and reproduces the same run (same report)."""
    from ops.cli import main

    cmd = replay_command(str(DEMO), 3, ORDERS)
    argv = cmd.split()[1:] + ["--quiet", "--report", str(tmp_path / "r.json"),
                              "--write", str(tmp_path / "s.yaml")]
    assert main(argv) == 0
    import json
    report = json.loads((tmp_path / "r.json").read_text())
    direct, scenario = chaos_one(CFG, 3)
    assert report["event_log_sha256"] == direct["event_log_sha256"]
    # the written scenario is an ordinary fault file: it validates against the cell
    from ops.config.fault_files import load_faults
    assert load_faults(tmp_path / "s.yaml", CFG).model_dump() == scenario.model_dump()
