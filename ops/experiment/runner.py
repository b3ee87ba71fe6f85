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

import contextlib
import logging
import os
import secrets
import shutil
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ops.experiment.sweep import RunPoint
from security.errors import ConfigurationError

__all__ = ["LEAN_ENV", "SweepOutcome", "execute_point", "ray_session", "run_points"]

#: Environment for a lean local Ray (set for the driver; Ray's processes inherit it).
LEAN_ENV: dict[str, str] = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_enable_worker_prestart": "0",
    "RAY_prestart_worker_first_driver": "0",
    "RAY_enable_metrics_collection": "0",
    "RAY_DEDUP_LOGS": "0",
}


def execute_point(point: RunPoint) -> dict[str, Any]:
    """Run one point in virtual time; the row (labels, status, error, KPIs, hash).

    Runs inside a Ray worker, but is a plain function: ``autocell run``'s
    path (cell from data, fault scenario checked against it, keys, run,
    report), so a sweep row and the same ``autocell run`` agree byte for byte.
    """
    row: dict[str, Any] = point.labels()
    t0 = time.perf_counter()
    try:
        from ops.config import cell_from_dict
        from ops.config.faults import FaultScenario, check_against_cell
        from ops.experiment.results import flatten_report
        from ops.run import load_keys
        from sim_bridge.report import build_report
        from sim_bridge.virtual import VirtualCell

        cfg = cell_from_dict(point.cell_data, source=f"point {point.run_id}",
                             base_dir=point.base_dir)
        faults = None
        if point.fault_data is not None:
            faults = FaultScenario.model_validate(point.fault_data)
            problems = check_against_cell(point.fault_data, cfg)
            if problems:
                raise ConfigurationError("; ".join(m for _, m in problems))
        keys, base_at = load_keys(cfg)
        cell = VirtualCell(cfg, seed=point.seed, keys=keys, clock_base_at=base_at, faults=faults)
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


def _error_text(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    where = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    at = f" (at {Path(where[0].filename).name}:{where[0].lineno})" if where else ""
    return f"{type(exc).__name__}: {text}"[:2000] + at


@contextlib.contextmanager
def ray_session(address: str | None, workers: int) -> Iterator[dict[str, Any]]:
    """Ray for the sweep: reuse an initialised one, join ``address``, or start a lean local one.

    Yields what was done: ``{"mode": "reused" | "joined" | "local", "start_s": ...,
    "cpus": ...}``.
    """
    import ray

    info: dict[str, Any] = {}
    if address is not None and address != "local":
        _check_reachable(address)
    if ray.is_initialized():
        info.update(mode="reused", start_s=0.0, cpus=int(ray.cluster_resources().get("CPU", 1)))
        yield info
        return
    t0 = time.perf_counter()
    saved = {k: os.environ.get(k) for k in (*LEAN_ENV, "RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
    temp_dir: str | None = None
    try:
        os.environ.update({k: v for k, v in LEAN_ENV.items()})
        if address is not None and address != "local":
            try:
                ray.init(address=address, log_to_driver=False, configure_logging=False)
            except Exception as exc:  # noqa: BLE001
                raise ConfigurationError(
                    f"cannot join the Ray cluster at {address!r}: {' '.join(str(exc).split())}; "
                    "start one with `ray start --head` or drop --address for a local Ray"
                ) from None
            info["mode"] = "joined"
        else:
            # Ray turns token auth on for a new local cluster and, finding no token,
            # writes one to ~/.ray/auth_token; a token in the environment is found first.
            os.environ.pop("RAY_AUTH_MODE", None)
            os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
            # Ray's Unix sockets live below this directory, and a socket path has at
            # most 107 bytes: a long $TMPDIR falls back to /tmp.
            base = tempfile.gettempdir()
            temp_dir = tempfile.mkdtemp(prefix="autocell-ray-",
                                        dir=base if len(base) <= 40 else "/tmp")
            # Ray warns on stderr that it enabled token auth, which is what we asked for.
            logging.getLogger("ray._private.authentication").setLevel(logging.ERROR)
            try:
                ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False,
                         configure_logging=False, _temp_dir=temp_dir,
                         _system_config={"enable_worker_prestart": False,
                                         "prestart_worker_first_driver": False,
                                         "enable_metrics_collection": False})
            except Exception as exc:  # noqa: BLE001
                raise ConfigurationError(
                    f"cannot start a local Ray: {' '.join(str(exc).split())[:500]}") from None
            info["mode"] = "local"
        info["start_s"] = round(time.perf_counter() - t0, 3)
        info["cpus"] = int(ray.cluster_resources().get("CPU", workers))
        yield info
    finally:
        if ray.is_initialized():
            ray.shutdown()
        if temp_dir is not None:
            shutil.rmtree(temp_dir, ignore_errors=True)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _check_reachable(address: str) -> None:
    """Fail fast on ``HOST:PORT`` with nothing listening (Ray itself retries for minutes)."""
    import socket

    host, sep, port = address.rpartition(":")
    if address == "auto" or not sep or not port.isdigit():
        if address != "auto" and not address.startswith("ray://"):
            raise ConfigurationError(f"--address {address!r}: use auto or HOST:PORT, "
                                     "e.g. 10.0.0.5:6379")
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5.0).close()
    except OSError as exc:
        raise ConfigurationError(
            f"cannot reach a Ray cluster at {address}: {exc.strerror or exc}; start it with "
            "`ray start --head` there, or drop --address for a local Ray") from None


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
