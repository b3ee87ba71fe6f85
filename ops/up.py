"""``autocell up``: the plant gateway and every host as OS processes, supervised.

How the supervisor starts, restarts, watches and stops them is
:mod:`ops.supervisor` (its theory of operation is there), shared with
``autocell up --ray`` (:mod:`ops.ray_up`); the command line picks one of the
two by ``--ray``, and neither imports the other.  This module also runs one
process of a cell: ``autocell host``, ``autocell plant`` (alias ``autocell
sim``) and ``autocell console-agent`` — what the supervisor starts.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from ops.paths import make_state_dir
from ops.supervisor import (
    Supervisor,
    announce_store,
    ensure_keys,
    finish_up,
    start_up,
    stoppable,
)
from security.errors import ConfigurationError


def execute_up(args: Any) -> int:
    """``autocell up`` on OS processes (``--ray`` is :func:`ops.ray_up.execute_up_ray`)."""
    start = start_up(args)
    if isinstance(start, int):
        return start
    sup = Supervisor(start.cfg, args.cell, state_dir=start.state_dir, speed=args.speed,
                     faults_path=args.faults, faults=start.faults,
                     max_restarts=args.max_restarts,
                     restart_window_s=args.restart_window, until_s=args.until,
                     timeout_s=args.timeout, log_level=getattr(args, "log_level", "info"),
                     log=start.log, keys_dir=start.keys, escalations_db=start.escalations_db)
    announce_store(sup.escalations_db, args.cell)
    with stoppable():
        code = sup.run()
        return finish_up(start.state_dir, code, sup.report())


def check_up_policy(args: Any) -> None:
    """``autocell up --maintenance-policy``: only ``negotiated``, on a cell that negotiates.
    The simulator's own policies decide inside the simulator; under ``up`` the agents on the
    hosts would not know of that decider, so they are refused, not run as something else
    (ADR 65, ADR 77)."""
    policy = getattr(args, "maintenance_policy", None)
    if policy is None:
        return
    if policy != "negotiated":
        raise ConfigurationError(
            f"--maintenance-policy {policy}: the simulator's own policies run under "
            f"`autocell run CELL --maintenance-policy {policy}` only; under `autocell up` the "
            "machine agents decide: set `maintenance: {negotiate: true}` in the cell file "
            "(docs/maintenance.md, \"Operations\")")
    from ops.config import ConfigError, load_cell
    from sim_bridge.maintenance.gateway import negotiates

    try:
        cfg = load_cell(args.cell)
    except ConfigError:
        return                          # `up` itself prints the cell's problems
    if not negotiates(cfg):
        raise ConfigurationError(
            "--maintenance-policy negotiated: the cell file must say `maintenance: "
            "{negotiate: true}` and have a machine with a degradation block; the agents it "
            "builds are the ones that plan (docs/maintenance.md)")


def run_process(args: Any, kind: str) -> int:
    """``autocell host`` / ``autocell plant`` (``sim``) / ``autocell console-agent``: one
    process of a cell (``kind`` ``plant`` and ``sim`` are the same)."""
    import asyncio

    from agents.runtime.console_service import console_policy
    from agents.runtime.host import SIM_ID, CellClock, Host
    from ops.config import ConfigError, load_cell
    from ops.config.fault_files import load_faults
    from sim_bridge.remote import PlantServer

    try:
        cfg = load_cell(args.cell)
        faults = load_faults(args.faults, cfg) if args.faults else None
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    state_dir = Path(args.state_dir or Path(".autocell") / cfg.cell)
    make_state_dir(state_dir)
    keys = ensure_keys(cfg, state_dir)
    start_at = args.start_at
    if getattr(args, "start_at_file", None):
        name = args.name if kind == "host" else "console" if kind == "console-agent" else SIM_ID
        start_at = await_start(Path(args.start_at_file), state_dir / f"ready-{name}")
    clock = CellClock(start_at if start_at is not None else time.time(), args.speed)
    if kind == "console-agent":
        return run_console_agent(args, cfg, keys, state_dir, clock)
    if kind == "host":
        if args.name not in {h.name for h in cfg.hosts}:
            raise ConfigurationError(f"{args.cell}: no host named {args.name!r}; hosts: "
                                     + ", ".join(h.name for h in cfg.hosts))
        from ops.maintenance import cell_models
        runner: Any = Host(cfg, args.name, keys_dir=keys, state_dir=state_dir, clock=clock,
                           faults=faults, escalation=console_policy(cfg, keys),
                           models=cell_models(cfg))
    else:
        runner = PlantServer(cfg, keys_dir=keys, state_dir=state_dir, clock=clock,
                             faults=faults)
        from sim_bridge.maintenance.gateway import attach_to_gateway
        attach_to_gateway(runner)     # the agents lease windows: the plant does the jobs
    from ops.logs import EventLog, Fanout, setup_logging

    setup_logging(getattr(args, "log_level", "info"), process=getattr(args, "name", SIM_ID))
    if kind == "host":
        endpoint = next(h.endpoint for h in cfg.hosts if h.name == args.name)
        port = next(h.metrics_port for h in cfg.hosts if h.name == args.name)
    else:
        endpoint, port = cfg.sim.endpoint, cfg.sim.metrics_port
    if getattr(args, "metrics_port", None) is not None:
        port = args.metrics_port
    metrics = None
    if port is not None:
        metrics = start_metrics(runner, cfg, kind, port, metrics_addr_of(endpoint))
    runner.observer = Fanout(metrics, EventLog())
    asyncio.run(runner.run())
    if metrics is not None:
        name = args.name if kind == "host" else SIM_ID
        final_metrics(metrics, state_dir / f"metrics-{name}.prom")
    return 0


#: Wall seconds a stopping process keeps ``/metrics`` up for a last scrape (less than the
#: supervisor's 5 s between SIGTERM and SIGKILL).
FINAL_SCRAPE_S = 3.0


def final_metrics(metrics: Any, path: Path, linger_s: float = FINAL_SCRAPE_S) -> None:
    """A stopped process's last values: written to ``path`` in the Prometheus text format
    (a node_exporter textfile collector, or ``report.json``'s ``final_metrics``, picks them
    up after the process is gone), and still served for ``linger_s`` so the next scrape
    sees them too."""
    import os

    from prometheus_client import generate_latest

    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(generate_latest(metrics.registry))
    os.replace(tmp, path)
    time.sleep(linger_s)     # the HTTP server is a daemon thread: it goes with the process


def await_start(start_file: Path, ready: Path) -> float:
    """Say this process is ready (``ready``), then wait for ``up`` to write the cell's start
    time into ``start_file`` (ops/supervisor.py, ``_start_clock``); a restarted process
    finds it there and joins the running cell at once."""
    import json

    if not start_file.exists():
        ready.touch()
    while True:     # the supervisor writes it once all are ready; a file seen half written
        try:        # (it exists before its text is in) is read again
            return float(json.loads(start_file.read_text())["start_at"])
        except (OSError, ValueError, KeyError):
            time.sleep(0.01)


def run_console_agent(args: Any, cfg: Any, keys: Path, state_dir: Path, clock: Any) -> int:
    """``autocell console-agent``: the console agent and its store on the bus."""
    import asyncio

    from agents.escalation.console import CONSOLE_ID
    from agents.runtime.console_service import ConsoleService
    from ops.logs import setup_logging
    from security.keystore import KeyDir

    if not KeyDir(keys).cert_path(CONSOLE_ID).exists():
        raise ConfigurationError(f"{keys}: no certificate for {CONSOLE_ID!r}; issue one with "
                                 f"`autocell keys issue {CONSOLE_ID} --role console --dir {keys}`")
    routes: dict[str, str] = {}
    for spec in args.route or []:
        agent, sep, endpoint = spec.partition("=")
        if not sep or not agent or not endpoint.startswith(("tcp://", "ipc://", "inproc://")):
            raise ConfigurationError(f"--route {spec!r}: expected AGENT=ENDPOINT, e.g. "
                                     "supervisor=tcp://127.0.0.1:5610")
        routes[agent] = endpoint
    setup_logging(getattr(args, "log_level", "info"), process="console")
    db = Path(args.db) if args.db else state_dir / "escalations.db"
    service = ConsoleService(cfg, keys_dir=keys, state_dir=state_dir, clock=clock, db_path=db,
                             routes=routes)
    asyncio.run(service.run())
    return 0


def metrics_addr_of(endpoint: str) -> str:
    from ops.metrics import metrics_addr

    return metrics_addr(endpoint)


def start_metrics(runner: Any, cfg: Any, kind: str, port: int, addr: str) -> Any:
    """Switch on the process's metrics (ops/metrics.py) and serve them; a port that cannot
    be bound is logged and the process runs on without metrics (the cell's work first)."""
    import logging

    from agents.cell.specs import KpiSpec
    from ops.metrics import ProcessMetrics

    metrics = ProcessMetrics(time.time)
    metrics.add_bus(lambda: runner.bus.stats)
    if kind == "host":
        metrics.add_agents(lambda: runner.agents)
        if cfg.maintenance is not None and cfg.maintenance.negotiate:
            # the machine agents' health, windows and the stores' books live here (ADR 77)
            metrics.add_maintenance_agents(lambda: runner.agents, cfg.maintenance,
                                           runner.clock.now)
    else:
        metrics.add_plant(runner.plant, KpiSpec.from_config(cfg), lambda: runner.env.now,
                          agents_elsewhere=True)
    try:
        metrics.serve(port, addr)
    except ConfigurationError as exc:
        logging.getLogger("autocell.metrics").error(str(exc), extra={"ctx": {"port": port}})
        return None
    logging.getLogger("autocell.metrics").info(
        "serving metrics", extra={"ctx": {"addr": addr, "port": port}})
    return metrics
