"""Running a sweep: one Ray task per point, rows journalled as they finish.

Ray is started lean when the sweep starts it (no ``--address`` and no Ray
already initialised in the process):

* ``include_dashboard=False``, ``log_to_driver=False``, no logging set-up;
* worker prestart off (``RAY_enable_worker_prestart=0`` and the same in
  ``_system_config``), metrics collection off, ``RAY_USAGE_STATS_ENABLED=0``;
* ``num_cpus=workers``, every task asks for ``num_cpus=1``;
* token authentication with a random token held in the environment
  (``RAY_AUTH_TOKEN``) — Ray would otherwise write ``~/.ray/auth_token`` —
  and a private temporary directory for Ray's session files (sockets, logs),
  removed after ``ray.shutdown()``.

With ``--address`` the sweep joins an existing cluster (its own auth, its
own files) and keeps at most ``--workers`` tasks in flight.  A process that
already called ``ray.init`` (the test session) is used as it is and left
running.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ops.experiment.sweep import RunPoint
from ops.lean_ray import LEAN_ENV, ray_session
from security.errors import ConfigurationError

__all__ = ["LEAN_ENV", "SweepOutcome", "execute_point", "ray_session", "run_points"]

def execute_point(point: RunPoint) -> dict[str, Any]:
    """Run one point in virtual time; the row (labels, status, error, KPIs, hash).

    Runs inside a Ray worker, but is a plain function: ``autocell run``'s
    path (cell from data, fault scenario checked against it, keys, run,
    report), so a sweep row and the same ``autocell run`` agree byte for byte.
    """
    row: dict[str, Any] = point.labels()
    t0 = time.perf_counter()
    try:
        from agents.cell.faults import FaultScenario
        from ops.config import cell_from_dict
        from ops.config.fault_files import check_against_cell
        from ops.experiment.results import flatten_report
        from ops.maintenance import attach_for_run
        from ops.run import load_keys
        from sim_bridge.report import build_report
        from sim_bridge.virtual import VirtualCell

        cfg = cell_from_dict(point.cell_data, source=f"point {point.run_id}",
                             base_dir=point.base_dir)
        _same_code(point)
        faults = None
        if point.fault_data is not None:
            faults = FaultScenario.model_validate(point.fault_data)
            problems = check_against_cell(point.fault_data, cfg)
            if problems:
                raise ConfigurationError("; ".join(m for _, m in problems))
        keys, base_at = load_keys(cfg)
        cell = VirtualCell(cfg, seed=point.seed, keys=keys, clock_base_at=base_at, faults=faults)
        attach_for_run(cell, None)      # a negotiating cell's maintenance, as `autocell run`
        cell.run(until=point.until_s)
        report = build_report(cell)
        row.update(status="ok", error="", event_log_sha256=report["event_log_sha256"],
                   ended_by=report["ended_by"],
                   invariants_hold=all(report["invariants"].values()))
        row.update({k: v for k, v in flatten_report(report).items() if k not in row})
    except Exception as exc:   # noqa: BLE001 - a failed point is a row, not the end
        row.update(status="failed", error=_error_text(exc), event_log_sha256="")
    row["wall_s"] = round(time.perf_counter() - t0, 3)
    return row


def _same_code(point: RunPoint) -> None:
    """Refuse to run a point whose strategies differ here from where its id was made.

    The id holds the driver's strategy fingerprints; a Ray node with another
    version of a plug-in installed would record its results under that id."""
    from ops.experiment.provenance import side_choice, strategy_fingerprint

    for side, expected in point.fingerprints.items():
        here = strategy_fingerprint(side_choice(point.cell_data, side), side)
        if here != expected:
            differs = ", ".join(f"{k} {expected.get(k)!r} there, {here.get(k)!r} here"
                                for k in here if here.get(k) != expected.get(k))
            raise ConfigurationError(
                f"the {side} strategy on this worker is not the one the sweep was expanded "
                f"with ({differs}); install the same version on every node")


def _error_text(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    where = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    at = f" (at {Path(where[0].filename).name}:{where[0].lineno})" if where else ""
    return f"{type(exc).__name__}: {text}"[:2000] + at


class SweepOutcome(dict[str, Any]):
    """``{"ran": n, "failed": n, "skipped": n, "wall_s": s}`` — a dict, for JSON output."""


_remote_cache: dict[str, Any] = {}


def _remote() -> Any:
    import ray

    if "fn" not in _remote_cache:
        _remote_cache["fn"] = ray.remote(num_cpus=1, max_retries=0)(execute_point)
    return _remote_cache["fn"]


def run_points(points: list[RunPoint], workers: int,
               on_row: Callable[[dict[str, Any]], None]) -> SweepOutcome:
    """Run ``points`` on the current Ray, at most ``workers`` in flight; ``on_row`` per result.

    A task that dies without returning (a worker killed, out of memory) is
    turned into a failed row here, so the sweep still goes on.
    """
    import ray

    fn = _remote()
    queue = list(points)
    in_flight: dict[Any, RunPoint] = {}
    ran = failed = 0
    t0 = time.perf_counter()
    while queue or in_flight:
        while queue and len(in_flight) < workers:
            point = queue.pop(0)
            in_flight[fn.remote(point)] = point
        done, _ = ray.wait(list(in_flight), num_returns=1)
        for ref in done:
            point = in_flight.pop(ref)
            try:
                row = ray.get(ref)
            except Exception as exc:  # noqa: BLE001
                row = {**point.labels(), "status": "failed", "error": _error_text(exc),
                       "event_log_sha256": ""}
            ran += 1
            failed += row.get("status") != "ok"
            on_row(row)
    return SweepOutcome(ran=ran, failed=failed, wall_s=round(time.perf_counter() - t0, 3))
