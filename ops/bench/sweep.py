"""``autocell bench sweep``: the speed-up of 2 workers over 1 on the same sweep.

One lean local Ray with 2 CPUs runs the same points twice: once with at most
one task in flight, once with two.  Before the clock runs, both workers run
one point each, so Ray's start-up and each worker's imports are paid up
front (and printed apart): the ratio is the sweep's parallelism, which is
what a researcher with a long sweep gets.  Each point is a full demo-cell run
(about a second of work), so Ray's per-task overhead of milliseconds is
small against it.  The two passes must give the same hashes, run for run.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

from ops.experiment.runner import run_points
from ops.experiment.sweep import RunPoint, expand, load_sweep
from ops.lean_ray import ray_session

DEMO = Path(__file__).resolve().parents[2] / "cell_configs" / "demo_cell.yaml"
TARGET_SPEEDUP = 2 * 0.85   # 1.7 on 2 cores


def bench_points(runs: int, cell: Path = DEMO) -> list[RunPoint]:
    """``runs`` seeds of the cell, default strategies, no faults."""
    with tempfile.TemporaryDirectory(prefix="autocell-bench-") as tmp:
        path = Path(tmp) / "bench.yaml"
        path.write_text(f"name: bench-sweep\ncells: [{cell.resolve()}]\n"
                        f"seeds: [{', '.join(str(s) for s in range(1, runs + 1))}]\n")
        return expand(load_sweep(path))


def run(runs: int = 12, cell: Path = DEMO) -> dict[str, Any]:
    points = bench_points(runs, cell)
    hashes: dict[int, dict[str, str]] = {}
    walls: dict[int, float] = {}
    failed = 0
    with ray_session(None, 2) as info:
        warm = run_points(points[:2], 2, lambda row: None)
        failed += warm["failed"]
        for workers in (1, 2):
            rows: dict[str, str] = {}

            def record(row: dict[str, Any], rows: dict[str, str] = rows) -> None:
                rows[row["run_id"]] = row.get("event_log_sha256", "")
            t0 = time.perf_counter()
            outcome = run_points(points, workers, record)
            walls[workers] = time.perf_counter() - t0
            failed += outcome["failed"]
            hashes[workers] = rows
    speedup = walls[1] / walls[2] if walls[2] > 0 else 0.0
    return {
        "cell": str(cell.name), "runs": len(points), "ray": info.get("mode"),
        "ray_start_s": info.get("start_s"), "warm_up_s": warm["wall_s"],
        "wall_1_worker_s": round(walls[1], 3), "wall_2_workers_s": round(walls[2], 3),
        "per_run_1_worker_s": round(walls[1] / len(points), 3),
        "speedup": round(speedup, 3), "target_speedup": TARGET_SPEEDUP,
        "target_met": speedup >= TARGET_SPEEDUP, "failed_runs": failed,
        "hashes_equal": hashes[1] == hashes[2],
        "cpu_count": os.cpu_count(), "load_average_1min": round(os.getloadavg()[0], 2),
    }
