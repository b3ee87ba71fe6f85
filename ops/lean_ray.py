"""A lean Ray, started once by whoever needs it: sweeps, ``up --ray``, the test session.

A local Ray started here is lean:

* ``include_dashboard=False``, ``log_to_driver=False``, no logging set-up;
* worker prestart off (``RAY_enable_worker_prestart=0`` and the same in
  ``_system_config``), metrics collection off, ``RAY_USAGE_STATS_ENABLED=0``;
* a small object store (the cell's processes and the sweep's rows are small dicts);
* token authentication with a random token held in the environment
  (``RAY_AUTH_TOKEN``) — Ray would otherwise write ``~/.ray/auth_token`` —
  and a private temporary directory for Ray's session files (sockets, logs),
  removed after ``ray.shutdown()``.

With an address it joins an existing cluster (its own auth, its own files)
after checking that something listens there (Ray itself retries for
minutes).  A process that already called ``ray.init`` (the test session) is
used as it is and left running.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator
from typing import Any

from security.errors import ConfigurationError

__all__ = ["LEAN_ENV", "LEAN_OBJECT_STORE_BYTES", "ray_session"]

LEAN_OBJECT_STORE_BYTES = 128 * 1024 * 1024   # small dicts only; Ray's default is 30 % of RAM

#: Environment for a lean local Ray (set for the driver; Ray's processes inherit it).
LEAN_ENV: dict[str, str] = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_enable_worker_prestart": "0",
    "RAY_prestart_worker_first_driver": "0",
    "RAY_enable_metrics_collection": "0",
    "RAY_DEDUP_LOGS": "0",
}



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
                         object_store_memory=LEAN_OBJECT_STORE_BYTES,
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


