"""``autocell up CELL --ray``: the plant gateway, every host and the console agent as Ray actors,
restarted on failure.

Theory of operation
-------------------
Each process of the cell — ``sim``, one per host and, when the cell's
escalation policy is on (:func:`~agents.runtime.console_service.console_policy`),
``console`` — becomes one Ray actor (:class:`CellProcess`) that runs the very
code of ``autocell plant`` / ``autocell host`` / ``autocell console-agent``
(:class:`~sim_bridge.remote.PlantServer`, the plant gateway, :class:`~agents.runtime.host.Host`
with the policy, :class:`~agents.runtime.console_service.ConsoleService` with its
SQLite store) on its own asyncio loop, in a thread of the actor's worker
process.  Ray replaces :class:`ops.supervisor.Supervisor`'s
``fork``/``exec``/restart with actor restarts:

* actors are created with ``max_restarts`` (``--max-restarts``) and
  ``max_task_retries=-1``: when an actor's process dies, Ray starts a new
  one and runs the constructor again with the same arguments;
* the constructor finds the cell's start time in ``ray-start.json`` in the
  state directory (written once, when every actor first came up) and starts
  the host at once; the host resumes from its journal exactly as a
  restarted ``autocell host`` process does, so a restart loses nothing;
* each actor has a long-running ``wait`` call in flight; Ray re-submits it
  to the restarted actor, and it fails only when the actor is gone for good
  (restarts exhausted).  Then, as ``up`` does when the restart intensity is
  exceeded, the driver raises a ``restart_intensity`` escalation through its
  :class:`~agents.runtime.console_service.SupervisorLink` (started before the
  actors, so the console actor gets the route back) and keeps the rest
  running: ``restart`` creates a new actor (a fresh ``max_restarts``),
  ``stop_cell`` gives up (exit 3).  Without a console, or when the console
  actor is the one gone, it gives up at once.  Ray's budget is per actor
  lifetime: ``--restart-window`` does not apply (ADR 33).
* a process that refuses to start — bad input or a damaged journal, what
  ``autocell host`` exits 2 for — would fail the same way after every
  restart: its actor ends without dying, ``wait`` returns the message, and
  the driver stops the run with it and exit 2, as ``up`` does (ADR 42).

Completion, liveness, faults and the report are :class:`ops.supervisor.Supervisor`'s:
the status files each host rewrites in the state directory.  A restart is
seen as a new ``pid`` in a host's status file; its time is measured from
the kill (for kills the supervisor makes) or else from the old process's
last heartbeat.  Host kills of a fault scenario become
``ray.kill(actor, no_restart=False)``; pauses (``SIGSTOP``) are refused.

Local Ray is started lean (:mod:`ops.lean_ray`, shared with sweeps): no dashboard (Ray keeps a minimal head process
without its web UI), usage stats off, worker prestart off, a 128 MB object
store, logs not copied to the driver, and token authentication with a token
made for this run and handed to the workers in the environment — no
``~/.ray/auth_token`` file is written.  With ``--address`` the supervisor
joins an existing cluster as it is configured.

Multi-node: the actors read and write the state directory (keys, journals,
status files, event logs) by path, so every node that may run an actor
needs it at the same path on shared storage — or pin the actors to the
driver's node (``--ray-local-node``).  Every node needs autocell installed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from ops.lean_ray import ray_session
from ops.supervisor import (
    EXIT_USAGE,
    Child,
    Supervisor,
    announce_store,
    ensure_keys,
    finish_up,
    stoppable,
    start_up,
)
from security.errors import ConfigurationError
from security.untrusted import safe_lines

log = logging.getLogger("autocell.ray")

START_FILE = "ray-start.json"


# -- starting Ray ---------------------------------------------------------------------------

# -- the actor --------------------------------------------------------------------------------

class CellProcess:
    """One process of a cell (``sim``, a host or ``console``) inside a Ray actor."""

    def __init__(self, kind: str, cell_path: str, name: str, state_dir: str, speed: float,
                 faults_path: str | None, db_path: str | None = None,
                 routes: dict[str, str] | None = None) -> None:
        self.kind, self.cell_path, self.name = kind, cell_path, name
        self.state_dir = Path(state_dir)
        self.speed = speed
        self.faults_path = faults_path
        self.db_path = db_path            # kind "console": the escalation store
        self.routes = dict(routes or {})  # kind "console": e.g. the supervisor's endpoint
        self.runner: Any = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.ended = threading.Event()
        self.error: str | None = None
        self.refused = False              # bad input: exit 2 for `autocell host`
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        # imported now, not after the cell clock has started
        import agents.runtime.console_service
        import agents.runtime.host  # noqa: F401
        import ops.config  # noqa: F401
        import sim_bridge.remote  # noqa: F401

        start = self.state_dir / START_FILE
        if start.exists():        # a restart: the cell is running, join it at once
            self.begin(float(json.loads(start.read_text())["start_at"]))

    def pid(self) -> int:
        return os.getpid()

    def begin(self, start_at: float) -> int:
        """Start the host (idempotent); its pid."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._main, args=(start_at,),
                                                name=f"autocell-{self.name}", daemon=True)
                self._thread.start()
        return os.getpid()

    def _main(self, start_at: float) -> None:
        from ops.config import ConfigError

        try:
            asyncio.run(_serve(self, start_at))
        except (ConfigurationError, ConfigError) as exc:
            # what `autocell host` exits 2 for (bad input, a damaged journal): a restart
            # would fail the same way, so the process ends and `wait` says why
            log.error("cell process %s cannot start: %s", self.name, exc)
            self.error = safe_lines(str(exc))
            self.refused = True
            self.ended.set()
            return
        except BaseException as exc:   # a host that cannot run: let Ray restart the process
            log.exception("cell process %s failed", self.name)
            self.error = repr(exc)
            self.ended.set()
            os._exit(1)
        self.ended.set()

    def wait(self) -> dict[str, Any]:
        """Block until the host has stopped (Ray re-submits this to a restarted actor)."""
        self.ended.wait()
        return {"name": self.name, "pid": os.getpid(), "error": self.error,
                "refused": self.refused}

    def stop(self, timeout_s: float = 10.0) -> bool:
        """Stop the host as SIGTERM stops ``autocell host``: final status, journal closed."""
        loop, runner = self.loop, self.runner
        if loop is not None and runner is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(runner._stop.set)
            except RuntimeError:   # the loop closed in between
                pass
        return self.ended.wait(timeout_s) if self._thread is not None else True


async def _serve(proc: CellProcess, start_at: float) -> None:
    """Build and run the host, plant or console agent of ``proc`` on this thread's loop.

    A module function, not a method: a Ray actor class with any ``async def``
    method becomes an async actor, whose blocking ``wait`` would stall the rest."""
    from agents.runtime.console_service import ConsoleService, console_policy
    from agents.runtime.host import CellClock, Host
    from ops.config import load_cell
    from ops.config.fault_files import load_faults
    from sim_bridge.remote import PlantServer

    cfg = load_cell(proc.cell_path)
    faults = load_faults(proc.faults_path, cfg) if proc.faults_path else None
    keys = ensure_keys(cfg, proc.state_dir)
    clock = CellClock(start_at, proc.speed)
    if proc.kind == "console":   # `autocell console-agent`: the store is its journal
        assert proc.db_path is not None
        proc.runner = ConsoleService(cfg, keys_dir=keys, state_dir=proc.state_dir, clock=clock,
                                     db_path=Path(proc.db_path), routes=proc.routes)
    elif proc.kind == "host":   # the policy and the console route exactly as under `up`
        from ops.maintenance import cell_models   # read from the cell file, as the rest is
        proc.runner = Host(cfg, proc.name, keys_dir=keys, state_dir=proc.state_dir, clock=clock,
                           faults=faults, escalation=console_policy(cfg, keys),
                           models=cell_models(cfg))
    else:
        proc.runner = PlantServer(cfg, keys_dir=keys, state_dir=proc.state_dir, clock=clock,
                                  faults=faults)
        from sim_bridge.maintenance.gateway import attach_to_gateway
        attach_to_gateway(proc.runner)     # as under `up` (ops/up.py)
    proc.loop = asyncio.get_running_loop()
    await proc.runner.run()


# -- the supervisor -------------------------------------------------------------------------------

class RaySupervisor(Supervisor):
    """:class:`ops.supervisor.Supervisor` with Ray actors instead of child processes."""

    def __init__(self, cfg: Any, cell_path: str, *, state_dir: Path, max_restarts: int,
                 local_node: bool = False, **kw: Any) -> None:
        super().__init__(cfg, cell_path, state_dir=state_dir.resolve(),
                         max_restarts=max_restarts, **kw)
        if self.faults is not None and any(h.action == "pause" for h in self.faults.hosts):
            raise ConfigurationError("host pauses (SIGSTOP) are not supported with --ray; "
                                     "use host kills, or run `autocell up` without --ray")
        self.cell_path = str(Path(cell_path).resolve())
        self.faults_path = kw.get("faults_path")
        if self.faults_path:
            self.faults_path = str(Path(self.faults_path).resolve())
        if self.escalations_db is not None:
            self.escalations_db = Path(self.escalations_db).resolve()
        self.local_node = local_node
        self.actors: dict[str, Any] = {}
        self.waits: dict[Any, str] = {}
        self.pids: dict[str, int] = {}
        self.last_wall: dict[str, float] = {}
        self.killed_at: dict[str, float] = {}
        self.created_at: dict[str, float] = {}   # wall time each current actor was created
        self.gone: set[str] = set()              # actors that exhausted their restarts
        self.generation: dict[str, int] = {}     # actors created per process (for the name)
        self._link_tried = False

    def _start_link(self) -> None:
        """Once, before the actors: the console actor is created with the route back."""
        if not self._link_tried:
            self._link_tried = True
            super()._start_link()

    def _create(self, child: Child) -> Any:
        import ray

        from agents.escalation.intensity import SUPERVISOR_ID

        gen = self.generation[child.name] = self.generation.get(child.name, 0) + 1
        opts: dict[str, Any] = {"max_restarts": self.max_restarts, "max_task_retries": -1,
                                "num_cpus": 0, "max_concurrency": 4,
                                "name": f"autocell-{self.cfg.cell}-{child.name}-{os.getpid()}"
                                        + (f"-{gen}" if gen > 1 else "")}
        if self.local_node:
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            opts["scheduling_strategy"] = NodeAffinitySchedulingStrategy(
                ray.get_runtime_context().get_node_id(), soft=False)
        kind = child.name if child.name in ("sim", "console") else "host"
        db = str(self.escalations_db) if kind == "console" and self.escalations_db else None
        routes = ({SUPERVISOR_ID: self.link.endpoint}
                  if kind == "console" and self.link is not None else {})
        self.created_at[child.name] = time.time()
        actor_cls = ray.remote(CellProcess)
        return actor_cls.options(**opts).remote(
            kind, self.cell_path, child.name, str(self.state_dir), self.speed,
            self.faults_path, db, routes)

    def launch(self, ready_timeout_s: float = 120.0) -> None:
        """Create every actor, wait until all are alive, then start the cell clock."""
        import ray

        (self.state_dir / START_FILE).unlink(missing_ok=True)
        if "console" in self.children:
            self._start_link()
        for name, child in self.children.items():
            self.actors[name] = self._create(child)
        pids = ray.get([a.pid.remote() for a in self.actors.values()], timeout=ready_timeout_s)
        self.start_at = time.time() + 1.0
        tmp = self.state_dir / (START_FILE + ".tmp")
        tmp.write_text(json.dumps({"start_at": self.start_at, "speed": self.speed}))
        os.replace(tmp, self.state_dir / START_FILE)
        ray.get([a.begin.remote(self.start_at) for a in self.actors.values()],
                timeout=ready_timeout_s)
        self.pids = dict(zip(self.actors, pids))
        self.waits = {a.wait.remote(): name for name, a in self.actors.items()}

    def spawn(self, child: Child) -> None:
        """The actors were created by :meth:`launch`; after a ``restart`` decision about an
        actor that exhausted its restarts, a new actor (a fresh ``max_restarts``)."""
        if child.name not in self.gone:
            return
        self.gone.discard(child.name)
        child.died_at = None          # the base class's mark of a dead child process
        self.killed_at[child.name] = time.time()   # restart time counted from the decision
        actor = self.actors[child.name] = self._create(child)
        self.waits[actor.wait.remote()] = child.name
        self.note("actor_created", process=child.name, generation=self.generation[child.name])

    def _respawn(self, child: Child, now: float) -> None:
        """After a ``restart`` decision: a new actor; it counts as a restart when its
        process reports in with a new pid, like Ray's own restarts."""
        self.spawn(child)

    def run(self) -> int:
        self.launch()
        return super().run()

    def _check_children(self) -> bool:
        """Note restarts (a new pid in a status file); True when an actor is gone for good
        and nobody can be asked (see :meth:`_escalate_gone`)."""
        import ray

        now = time.time()
        for name in self.children:
            st = self.status(name)
            if not st or name in self.gone:
                continue
            pid = int(st.get("pid", 0))
            old = self.pids.get(name)
            if old is not None and pid != old:
                since = self.killed_at.pop(name, None) or self.last_wall.get(name, now)
                self.children[name].restarts.append(now - since)
                self.children[name].respawns += 1      # Ray restarted it: seen by its new pid
                self.note("restarted", process=name, pid=pid, restart_s=round(now - since, 3))
            self.pids[name] = pid
            if not st.get("stopped"):
                self.last_wall[name] = float(st.get("wall", now))
        done, _ = ray.wait(list(self.waits), num_returns=len(self.waits), timeout=0)
        for ref in done:
            name = self.waits.pop(ref)
            try:
                ended = ray.get(ref)
            except ray.exceptions.RayActorError as exc:
                self.gone.add(name)
                self.killed_at.pop(name, None)
                self.note("actor_gone", process=name, error=type(exc).__name__)
                if self._escalate_gone(name):
                    continue
                self.note("gave_up", reason=f"actor {name} is gone: {type(exc).__name__}")
                self.log(f"autocell up --ray: the actor of {name} died more than "
                         f"{self.max_restarts} times; giving up. Ray's logs: "
                         "/tmp/ray/session_latest/logs")
                return True
            if ended.get("refused"):      # as `up` does for a child that exits 2
                self.refused = str(ended.get("error") or "bad input")
                self.note("process_refused", process=name, returncode=EXIT_USAGE,
                          error=self.refused)
                self.log(f"autocell up --ray: {name} cannot start: {self.refused} (restarting "
                         "it would not help; Ray's logs: /tmp/ray/session_latest/logs)")
                return True
            self.note("process_ended", process=name)
        return False

    def _escalate_gone(self, name: str) -> bool:
        """Ray's restart intensity: ``name``'s actor exhausted its ``max_restarts``.  Raise
        ``restart_intensity`` (as ``up``'s supervisor does) and keep the rest running;
        False if nobody can be asked (no console, no supervisor identity, or the console
        actor itself is what is gone)."""
        from agents.escalation.intensity import restart_intensity_escalation

        rule = self.policy.restart_intensity
        if (self.link is None or rule is None or name == "console"
                or "console" not in self.children or "console" in self.gone):
            return False
        child = self.children[name]
        self.escalated += 1
        agents = sorted(a for a in self.cfg.agent_ids() if self.cfg.host_of(a) == name)
        lived_s = round(time.time() - self.created_at.get(name, self.start_at), 1)
        body = restart_intensity_escalation(
            rule, process=name, number=self.escalated, deaths=self.max_restarts + 1,
            window_s=lived_s, max_restarts=self.max_restarts, returncode=None,
            agents=agents, log_path="Ray's worker logs (/tmp/ray/session_latest/logs)")
        child.held = True
        self._raise_restart_intensity(
            name, body, self.max_restarts + 1,
            f"autocell up --ray: restart intensity exceeded: the actor of {name} died "
            f"{self.max_restarts + 1} times (max_restarts {self.max_restarts})")
        return True

    def _play_faults(self) -> None:
        import ray

        now = self.cell_now()
        while self.pending_faults and self.pending_faults[0][0] <= now:
            _, _, h = self.pending_faults[0]
            if h.host in self.killed_at:
                return   # killed and not yet back: play it on the restarted actor
            self.pending_faults.pop(0)
            actor = self.actors.get(h.host)
            if actor is None:
                continue
            if h.host in self.gone:
                self.note("fault_skipped", kind="host_kill", host=h.host, reason="actor gone")
                continue
            self.note("fault_injected", kind="host_kill", host=h.host, pid=self.pids.get(h.host))
            self.killed_at[h.host] = time.time()
            ray.kill(actor, no_restart=False)

    def kill(self, name: str) -> None:
        """Kill one actor's process the way a crash would (Ray restarts it)."""
        import ray

        self.killed_at[name] = time.time()
        self.note("actor_killed", process=name, pid=self.pids.get(name))
        ray.kill(self.actors[name], no_restart=False)

    def stop(self) -> None:
        import ray

        live = {n: a for n, a in self.actors.items() if n not in self.gone}
        refs = [a.stop.remote() for a in live.values()]
        try:
            ray.get(refs, timeout=15.0)
        except (ray.exceptions.RayError, TimeoutError) as exc:
            self.note("stop_incomplete", error=type(exc).__name__)
        if self.waits:   # let the finished `wait` calls come back before the actors go
            ray.wait(list(self.waits), num_returns=len(self.waits), timeout=5.0)
        for a in self.actors.values():
            ray.kill(a, no_restart=True)
        self.note("stopped")


def execute_up_ray(args: Any) -> int:
    """``autocell up CELL --ray``: the same start and finish as ``autocell up``
    (:func:`~ops.supervisor.start_up`, :func:`~ops.supervisor.finish_up`)."""
    start = start_up(args)
    if isinstance(start, int):
        return start
    with stoppable():
        code, report = run_up_ray(args, start.cfg, start.faults, start.state_dir, start.log)
        return finish_up(start.state_dir, code, report)


def run_up_ray(args: Any, cfg: Any, faults: Any, state_dir: Path,
               log: Any) -> tuple[int, dict[str, Any]]:
    """The cell as Ray actors under a :class:`RaySupervisor`: the exit code and the report."""
    if faults is not None and any(h.action == "pause" for h in faults.hosts):
        raise ConfigurationError("host pauses (SIGSTOP) are not supported with --ray; "
                                 "use host kills, or run `autocell up` without --ray")
    keys = ensure_keys(cfg, state_dir)
    db = Path(getattr(args, "escalations_db", None) or state_dir / "escalations.db")
    if not db.parent.is_dir():   # the console actor would die on it max_restarts times
        raise ConfigurationError(f"--escalations-db {db}: no directory {db.parent}")
    with ray_session(args.address, os.cpu_count() or 2):
        sup = RaySupervisor(cfg, args.cell, state_dir=state_dir, speed=args.speed,
                            faults_path=args.faults, faults=faults,
                            max_restarts=args.max_restarts,
                            restart_window_s=args.restart_window, until_s=args.until,
                            timeout_s=args.timeout, local_node=args.ray_local_node, log=log,
                            keys_dir=keys, escalations_db=db)
        announce_store(sup.escalations_db, args.cell)
        code = sup.run()
        report = sup.report()
        report["deployment"] = "ray"
        return code, report
