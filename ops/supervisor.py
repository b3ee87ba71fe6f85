"""The supervisor of ``autocell up``: state directory, keys, child processes, escalations.

Theory of operation
-------------------
``up`` prepares a state directory (keys made on first use unless the cell
names its own ``security.keys_dir``; journals, replay stores, event logs
and status files of the previous run removed), picks one ``start_at`` a
moment ahead, and starts the plant gateway (``autocell plant``, the child
named ``sim``) and one ``autocell host`` per host with the same ``start_at``
and ``--speed``, so all clocks agree.

The supervisor then polls, every 50 ms:

* **deaths** — a child that exits while the cell runs is restarted at
  once with the same arguments (its host resumes from the journal).  At
  most ``--max-restarts`` restarts within ``--restart-window`` seconds: one
  more and the supervisor gives up loudly, stops everything and exits 3.
  The restart time is measured from the death to the new process's first
  status file;
* **faults** — the scenario's host kills (``SIGKILL``) and pauses
  (``SIGSTOP`` … ``SIGCONT``), at their cell times;
* **liveness** — each process rewrites its status file every heartbeat; a
  host silent for ``missed_heartbeats`` intervals is reported down once
  (a paused or hung host), and up again when it speaks;
* **completion** — when every order is complete (the union of the hosts'
  status files), or at ``--until``/``--timeout``, it stops the children
  (``SIGTERM``, then ``SIGKILL`` after 5 s), checks the invariants
  (docs/architecture.md, Invariants) on the simulator's event log and
  writes ``report.json``.

**Escalations** — when the cell's escalation policy is on (some rule
enabled, and a ``console`` certificate in the keys directory), ``up`` also
starts ``autocell console-agent`` as a supervised child: the console agent
and its SQLite store (``--escalations-db``, default
``STATE_DIR/escalations.db``; a store left by an earlier run is moved aside
first) on the bus at ``escalation.console_endpoint``, and every host builds
its agents with the policy.  The supervisor itself is on the bus as
``supervisor`` (role ``host``): when a child exceeds the restart intensity
it stops restarting that child only, raises a ``restart_intensity``
escalation and waits for the decision (``restart``: once more with a fresh
budget; ``stop_cell``, the safe default: give up as before), while the rest
of the cell keeps running.  Without a console it gives up at once.

Ctrl-C stops everything the same way.  Children die with the supervisor
even if it is killed (``PR_SET_PDEATHSIG``), so no orphans are left.

Both ways of running a cell build on this module: :mod:`ops.up` (OS
processes) and :mod:`ops.ray_up` (Ray actors, whose ``RaySupervisor``
replaces only how children are started and restarted).  Neither imports the
other; the command line picks one by ``--ray``.  :func:`start_up` and
:func:`finish_up` are the steps before and after the run that both share.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agents.base import Timing
from agents.escalation.console import CONSOLE_ID
from agents.escalation.intensity import SUPERVISOR_ID, RestartBudget, SupervisorVoice
from agents.protocol.actions import Command
from agents.protocol.messages import Body
from agents.runtime.runner import Runner
from ops.paths import make_state_dir
from ops.words import counted
from security.errors import ConfigurationError
from security.untrusted import safe_lines

EXIT_GAVE_UP = 3
#: A child's exit code for bad input (a damaged journal, a bad flag): restarting cannot help.
EXIT_USAGE = 2
RESEND_S = 2.0        # wall seconds between re-sends of an unanswered escalation
STATE_FILES = ("journal-*.sqlite*", "replay-*.sqlite*", "sim.sqlite*", "events-*.jsonl",
               "status-*.json", "report.json*", "decisions-*.jsonl", "ready-*", "start.json*",
               "metrics-*.prom")
#: Where ``up`` writes the cell's start time once every child is ready (``--start-at-file``).
START_FILE = "start.json"
#: Wall seconds between the last child being ready and cell time 0: the children connect.
START_MARGIN_S = 0.5
#: Wall seconds ``up`` waits for its children to be ready before it starts the clock anyway.
READY_TIMEOUT_S = 120.0


def _load_libc() -> Any:
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        return None


_LIBC = _load_libc()   # loaded in the parent: the child (forked while the supervisor's bus
                       # thread runs) only makes one system call before exec


def _die_with_parent() -> None:   # runs in the child between fork and exec
    if _LIBC is not None:
        _LIBC.prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG


def ensure_keys(cfg: Any, state_dir: Path) -> Path:
    """The cell's keys directory, or one made under the state directory on first use."""
    from agents.cell.build import roles_of
    from agents.escalation.console import CONSOLE_ID
    from agents.escalation.intensity import SUPERVISOR_ID
    from agents.runtime.host import HOST_ROLE, host_identity
    from security.certs import AGENT_ID_RE
    from security.keystore import KeyDir

    roles = {**roles_of(cfg), cfg.sim.identity: "sim"}     # the plant: role sim
    # optional in a keys directory of the cell's own: without them escalation is off (and
    # each host without its `host-NAME` certificate escalates no reject burst)
    extra = {CONSOLE_ID: "console", SUPERVISOR_ID: HOST_ROLE}
    for h in cfg.hosts:
        ident = host_identity(h.name)
        if ident not in roles and AGENT_ID_RE.match(ident) and len(ident.encode()) <= 64:
            extra[ident] = HOST_ROLE
    given = cfg.keys_dir_path()
    if given is not None:
        kd = KeyDir(Path(given))
        missing = [a for a in roles if not kd.cert_path(a).exists()]
        if missing:
            raise ConfigurationError(
                f"{given}: no certificate for {', '.join(missing[:5])}; issue with "
                f"`autocell keys issue {missing[0]} --role {roles[missing[0]]} --dir {given}`")
        return Path(given)
    keys = state_dir / "keys"
    kd = KeyDir(keys)
    now = time.time()
    if not kd.has_authority():
        kd.init(now)
    for agent, role in {**roles, **extra}.items():
        if not kd.cert_path(agent).exists():
            kd.issue(agent, role, now)
    return keys


def announce_store(db: Path | None, cell: str) -> None:
    """Move an earlier run's escalation store aside and say where this run's is."""
    if db is None:
        return
    moved = set_aside(db)
    print(f"escalations: {db}" + (f" (the previous run's store moved to {moved})" if moved else "")
          + f"; watch them with `autocell console {cell} --db {db}`", flush=True)


@dataclass
class Child:
    name: str
    argv: list[str]
    proc: subprocess.Popen[bytes] | None = None
    died_at: float | None = None
    paused: bool = False
    down_reported: bool = False
    held: bool = False                 # restart intensity exceeded: awaiting a decision
    respawns: int = 0                  # started again after a death
    restarts: list[float] = field(default_factory=list)   # restart latencies, seconds
    log_from: int = 0                  # where this incarnation's lines start in NAME.log


class Supervisor:
    def __init__(self, cfg: Any, cell_path: str, *, state_dir: Path, speed: float,
                 faults_path: str | None, faults: Any, max_restarts: int,
                 restart_window_s: float, until_s: float | None, timeout_s: float | None,
                 log: Any = print, log_level: str = "info", keys_dir: Path | None = None,
                 escalations_db: Path | None = None) -> None:
        from agents.escalation.policy import OFF
        from agents.runtime.console_service import console_policy

        self.cfg = cfg
        self.state_dir = state_dir
        #: Why a child refused to start (exit 2), if one did: ``up`` stops and says so.
        self.refused: str | None = None
        self.speed = speed
        self.faults = faults
        self.max_restarts = max_restarts
        self.restart_window_s = restart_window_s
        self.until_s = until_s
        self.timeout_s = timeout_s
        self.log = log
        self.start_at = time.time() + 1.5
        self.budget = RestartBudget(max_restarts, restart_window_s)
        self.events: list[dict[str, Any]] = []
        # OS children wait for the start file: cell time 0 comes once all are up, not at a
        # guess of how long Python takes to start (6 s on a loaded machine: orders called
        # machines that were not listening yet and logged no_proposals)
        self.barrier = type(self).spawn is Supervisor.spawn
        clock_arg = (["--start-at-file", str(state_dir / START_FILE)] if self.barrier
                     else ["--start-at", repr(self.start_at)])
        common = [cell_path, "--state-dir", str(state_dir), "--speed", repr(speed),
                  *clock_arg, "--log-level", log_level]
        if faults_path:
            common += ["--faults", faults_path]
        exe = [sys.executable, "-m", "ops.cli"]
        # the plant gateway; the child (and its status and event files) keeps the name sim
        self.children = {"sim": Child("sim", exe + ["plant", *common])}
        for h in cfg.hosts:
            self.children[h.name] = Child(h.name, exe + ["host", *common, "--name", h.name])
        self.keys_dir = keys_dir
        self.policy = console_policy(cfg, keys_dir) if keys_dir is not None else OFF
        self.escalations_db: Path | None = None      # only with a console agent
        if self.policy is not OFF:
            db = escalations_db or state_dir / "escalations.db"
            self.escalations_db = db
            self.children["console"] = Child(
                "console", exe + ["console-agent", *common, "--db", str(db)])
        self.link: Any = None              # SupervisorLink, once started
        self.escalated = 0
        # the supervisor's voice on the bus (restart_intensity through the raiser), on a
        # runner whose clock is the wall clock: re-sent every RESEND_S until decided
        self.voice = SupervisorVoice(SUPERVISOR_ID, console=CONSOLE_ID, resend_s=RESEND_S,
                                     timing=Timing())
        self._wakes: list[tuple[float, int]] = []
        self.voice_runner = Runner({SUPERVISOR_ID: self.voice}, _VoiceLink(self))
        self.pending_faults = sorted(
            [(h.at_s, "start", h) for h in (faults.hosts if faults else [])]
            + [(h.at_s + h.duration_s, "end", h) for h in (faults.hosts if faults else [])
               if h.action == "pause"], key=lambda x: x[0])

    def cell_now(self) -> float:
        return (time.time() - self.start_at) * self.speed

    def note(self, event: str, **fields: Any) -> None:
        # before start_at the cell clock has not started: such notes are at cell time 0 (a
        # negative time read as "started 14 s before the start"); `started` says how long
        # until the clock runs
        entry = {"t": round(max(0.0, self.cell_now()), 3), "wall": round(time.time(), 3),
                 "ev": event, **fields}
        self.events.append(entry)
        self.log(f"[{entry['t']:>9.1f}] {event} " + " ".join(f"{k}={v}" for k, v in
                                                              fields.items()))

    def spawn(self, child: Child) -> None:
        out = (self.state_dir / f"{child.name}.log").open("ab")
        child.log_from = out.tell()
        child.proc = subprocess.Popen(child.argv, stdout=out, stderr=subprocess.STDOUT,
                                      preexec_fn=_die_with_parent)  # noqa: PLW1509 (libc preloaded)
        out.close()

    def status(self, name: str) -> dict[str, Any] | None:
        try:
            return json.loads((self.state_dir / f"status-{name}.json").read_text())
        except (OSError, ValueError):
            return None

    def completed_orders(self, key: str = "completed") -> set[str]:
        done: set[str] = set()
        for h in self.cfg.hosts:
            st = self.status(h.name)
            if st:
                done.update(st.get(key, []))
        return done

    # -- the loop ---------------------------------------------------------------------------
    def _start_link(self) -> None:
        """The supervisor's identity on the bus, for restart-intensity escalations."""
        from agents.escalation.intensity import SUPERVISOR_ID
        from agents.runtime.console_service import SupervisorLink
        from agents.runtime.host import CellClock
        from security.keystore import KeyDir

        if (self.policy.restart_intensity is None or self.keys_dir is None
                or not KeyDir(self.keys_dir).cert_path(SUPERVISOR_ID).exists()):
            return
        link = SupervisorLink(self.cfg, keys_dir=self.keys_dir, state_dir=self.state_dir,
                              clock=CellClock(self.start_at, self.speed))
        try:
            endpoint = link.start()
        except (OSError, ConfigurationError, TimeoutError) as exc:   # help, not a must
            self.log(f"autocell up: the supervisor cannot join the bus ({exc}); restart "
                     "intensity will stop the cell without escalating")
            link.close()
            return
        self.link = link
        self.children["console"].argv += ["--route", f"{SUPERVISOR_ID}={endpoint}"]

    def run(self) -> int:
        total = len(self.cfg.orders)
        code = 0
        t0 = time.time()
        last_progress = -1
        try:
            if "console" in self.children:
                self._start_link()
                self.log(f"autocell up: escalations go to the console agent; store "
                         f"{self.escalations_db}")
            for child in self.children.values():
                self.spawn(child)
            if self.barrier and not self._start_clock():
                return EXIT_USAGE if self.refused is not None else EXIT_GAVE_UP
            self.note("started", processes=len(self.children), speed=self.speed,
                      clock_starts_in_s=round(max(0.0, self.start_at - time.time()), 2))
            while True:
                time.sleep(0.05)
                if self._check_children() or self._decisions():
                    code = EXIT_USAGE if self.refused is not None else EXIT_GAVE_UP
                    break
                self._play_faults()
                self._liveness()
                completed = self.completed_orders()
                done = len(completed)
                if done != last_progress:
                    self.note("progress", completed=f"{done}/{total}")
                    last_progress = done
                if done == total:
                    self.note("all_orders_completed")
                    break
                cancelled = self.completed_orders("cancelled") - completed
                if cancelled and done + len(cancelled) == total:
                    self.note("all_orders_accounted_for", cancelled=len(cancelled))
                    break
                if self.until_s is not None and self.cell_now() >= self.until_s:
                    self.note("until_reached")
                    break
                if self.timeout_s is not None and time.time() - t0 > self.timeout_s:
                    self.note("timeout", wall_s=round(time.time() - t0, 1))
                    code = 1
                    break
        except KeyboardInterrupt as exc:
            hold_signals()        # a 2nd Ctrl-C or a SIGTERM while stopping: still a report
            if isinstance(exc, Terminated):
                self.note("terminated")
                code = EXIT_TERMINATED
            else:
                self.note("interrupted")
                code = 130
        finally:
            hold_signals()        # however it ended: the stop and the report come whole
            self.stop()
            if self.link is not None:
                self.link.close()
        return code

    def _start_clock(self) -> bool:
        """Wait until every child is ready (``ready-NAME``: imported, configured, about to
        bind), then write the start time ``START_MARGIN_S`` ahead; False if a child refused
        to start or kept dying meanwhile.  After ``READY_TIMEOUT_S`` the clock starts anyway
        (a child that is that slow joins late, as a restarted one does)."""
        from agents.runtime.host import write_json_atomic

        deadline = time.time() + READY_TIMEOUT_S
        waiting = set(self.children)
        while waiting and time.time() < deadline:
            if self._check_children():
                return False
            waiting = {n for n in waiting if not (self.state_dir / f"ready-{n}").exists()}
            if waiting:
                time.sleep(0.02)
        if waiting:
            self.log(f"autocell up: {', '.join(sorted(waiting))} not ready after "
                     f"{READY_TIMEOUT_S:g} s; starting the cell clock anyway")
        self.start_at = time.time() + START_MARGIN_S
        write_json_atomic(self.state_dir / START_FILE,
                          {"start_at": self.start_at, "speed": self.speed})
        return True

    def _check_children(self) -> bool:
        """Restart dead children; True when the restart intensity is exceeded."""
        now = time.time()
        for child in self.children.values():
            assert child.proc is not None
            if child.held:
                continue
            rc = child.proc.poll()
            if child.died_at is not None and rc is None:   # restarted: up once it reports
                st = self.status(child.name)
                if st and st.get("pid") == child.proc.pid:
                    child.restarts.append(now - child.died_at)
                    self.note("restarted", process=child.name,
                              restart_s=round(now - child.died_at, 3))
                    child.died_at = None
                continue
            if rc is None:
                continue
            if rc == EXIT_USAGE:   # bad input, a damaged journal: the same again on restart
                log_path = self.state_dir / f"{child.name}.log"
                self.refused = last_error(log_path, since=child.log_from)
                self.note("process_refused", process=child.name, returncode=rc,
                          error=self.refused)
                self.log(f"autocell up: {child.name} cannot start: {self.refused} (restarting "
                         f"it would not help; its log: {log_path})")
                return True
            exceeded = self.budget.death(now)
            if rc > 0:      # it exited by itself: what it said last (a kill says nothing)
                self.note("process_died", process=child.name, returncode=rc,
                          error=safe_lines(last_error(self.state_dir / f"{child.name}.log",
                                                      "no error line", child.log_from), 300))
            else:
                self.note("process_died", process=child.name, returncode=rc)
            if exceeded:
                if self._escalate(child, rc):
                    continue
                self.note("gave_up", reason=f"{self.budget.count} deaths within "
                                            f"{self.restart_window_s:g} s (max "
                                            f"{self.max_restarts})")
                self.log(f"autocell up: restart intensity exceeded: {self.budget.count} "
                         f"process deaths within {self.restart_window_s:g} s; giving up. See "
                         f"{self.state_dir}/*.log")
                return True
            self._respawn(child, now)
        return False

    def _respawn(self, child: Child, now: float) -> None:
        """Start a dead child again: a restart, whether or not it lives to report."""
        child.died_at = now
        child.paused = False
        child.respawns += 1
        self.spawn(child)

    # -- restart intensity -> escalation --------------------------------------------------------
    def _escalate(self, child: Child, rc: int | None) -> bool:
        """Hold ``child`` down and raise ``restart_intensity``; False if nobody can be asked
        (no console, no supervisor identity, or the console itself is what keeps dying)."""
        from agents.escalation.intensity import restart_intensity_escalation

        rule = self.policy.restart_intensity
        console = self.children.get("console")
        if (self.link is None or rule is None or child.name == "console" or console is None
                or console.held):
            return False
        self.escalated += 1
        agents = sorted(a for a in self.cfg.agent_ids() if self.cfg.host_of(a) == child.name)
        body = restart_intensity_escalation(
            rule, process=child.name, number=self.escalated, deaths=self.budget.count,
            window_s=self.restart_window_s, max_restarts=self.max_restarts, returncode=rc,
            agents=agents, log_path=str(self.state_dir / f"{child.name}.log"))
        child.held = True
        child.died_at = None
        self._raise_restart_intensity(
            child.name, body, self.budget.count,
            f"autocell up: restart intensity exceeded: {self.budget.count} process deaths "
            f"within {self.restart_window_s:g} s")
        return True

    def _raise_restart_intensity(self, name: str, body: Any, deaths: int, why: str) -> None:
        """Send ``body`` (a held process's ``restart_intensity``) to the console through the
        raiser (re-sent until decided); say so."""
        assert self.link is not None
        now = time.time()
        self.voice_runner.execute(SUPERVISOR_ID, self.voice.escalate(name, body, now), now)
        self.note("restart_intensity_escalated", process=name, escalation=body.escalation,
                  deaths=deaths)
        self.log(f"{why}; {name} stays down; escalated as {body.escalation} (decide: "
                 f"`autocell escalations decide {body.escalation} --option restart|stop_cell "
                 f"--db {self.escalations_db}`)")

    def _decisions(self) -> bool:
        """Act on decisions about our escalations (True: stop the cell); the voice re-sends
        the open ones every RESEND_S until the console answers (it may be restarting)."""
        if self.link is None:
            return False
        import queue

        now = time.time()
        while True:
            try:
                msg = self.link.decisions.get_nowait()
            except queue.Empty:
                break
            self.voice_runner.deliver(msg, now)
        due = sorted(w for w in self._wakes if w[0] <= now)
        for wake in due:
            self._wakes.remove(wake)
            self.voice_runner.fire(wake[1], now)
        decided, self.voice.decided = self.voice.decided, []
        for process, d in decided:
            child = self.children[process]
            self.note("decision", escalation=d.escalation, option=d.option, user=d.user,
                      process=child.name)
            if d.option == "restart":
                self.budget.renew()
                child.held = False
                self._respawn(child, time.time())
                continue
            self.note("gave_up", reason=f"restart intensity of {child.name}: {d.option} "
                                        f"decided by {d.user}")
            self.log(f"autocell up: restart intensity exceeded: {child.name}; {d.user} "
                     f"decided {d.option}; giving up. See {self.state_dir}/*.log")
            return True
        return False

    def _play_faults(self) -> None:
        now = self.cell_now()
        while self.pending_faults and self.pending_faults[0][0] <= now:
            _, phase, h = self.pending_faults[0]
            child = self.children.get(h.host)
            if child is not None and child.proc is not None and child.proc.poll() is not None:
                return   # dead and not yet restarted (a loaded machine): play it on the new process
            self.pending_faults.pop(0)
            if child is None or child.proc is None:
                continue
            if h.action == "kill":
                self.note("fault_injected", kind="host_kill", host=h.host, pid=child.proc.pid)
                try:
                    os.kill(child.proc.pid, signal.SIGKILL)
                except ProcessLookupError:   # died (and was reaped) since the poll above
                    pass
            elif phase == "start":
                self.note("fault_injected", kind="host_pause", host=h.host, pid=child.proc.pid)
                os.kill(child.proc.pid, signal.SIGSTOP)
                child.paused = True
            elif child.paused:
                os.kill(child.proc.pid, signal.SIGCONT)
                child.paused = False
                self.note("host_resumed", host=h.host)

    def _liveness(self) -> None:
        from agents.runtime.host import status_interval_s

        silent_s = (self.cfg.negotiation.missed_heartbeats * status_interval_s(self.cfg, self.speed)
                    + 0.1)
        for child in self.children.values():
            st = self.status(child.name)
            if st is None or child.died_at is not None or child.held:
                continue
            quiet = time.time() - float(st.get("wall", 0.0))
            if quiet > silent_s and not child.down_reported:
                child.down_reported = True
                self.note("host_down", process=child.name, silent_s=round(quiet, 2))
            elif quiet <= silent_s and child.down_reported:
                child.down_reported = False
                self.note("host_up", process=child.name)

    def stop(self) -> None:
        procs = [c.proc for c in self.children.values() if c.proc is not None]
        for c in self.children.values():
            if c.proc is not None and c.proc.poll() is None:
                if c.paused:
                    os.kill(c.proc.pid, signal.SIGCONT)
                c.proc.terminate()
        deadline = time.time() + 5.0
        for p in procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.note("stopped")

    # -- the report ---------------------------------------------------------------------------
    def report(self) -> dict[str, Any]:
        from sim_bridge.invariants import (
            no_operation_twice,
            one_operation_per_machine,
            routing_order,
        )
        from ops.replay import decision_logs
        from sim_bridge.report import p95

        sim_events = self.event_log("sim")
        done = self.completed_orders()
        cancelled = self.completed_orders("cancelled") - done
        restarts = sorted(x for c in self.children.values() for x in c.restarts)
        respawns = sum(c.respawns for c in self.children.values())

        violations = {"no_operation_executed_twice": no_operation_twice(sim_events),
                      "no_machine_runs_two_operations": one_operation_per_machine(sim_events),
                      "routing_order_respected": routing_order(sim_events)}
        escalations = self.escalation_figures()
        # An order waiting on an open escalation is escalated, never lost (issue 20, class 9).
        waiting = set(escalations.pop("open_orders", ())) & {o.id for o in self.cfg.orders}
        waiting -= done | cancelled
        return {
            "cell": self.cfg.cell, "speed": self.speed,
            "orders_total": len(self.cfg.orders), "orders_completed": len(done),
            "orders_lost": len(self.cfg.orders) - len(done) - len(cancelled) - len(waiting),
            "orders_escalated": len(waiting),
            "orders_cancelled": len(cancelled),
            "operations": sum(1 for e in sim_events if e["ev"] == "op_done"
                              and e["quality"] == "ok"),
            "restarts": respawns,
            "restart_s": {"max": round(max(restarts, default=0.0), 3),
                          "p95": round(p95(restarts), 3)},
            "hosts_down_reported": sum(1 for e in self.events if e["ev"] == "host_down"),
            "invariants": {k: not v for k, v in violations.items()},
            "invariant_violations": {k: v[:20] for k, v in violations.items() if v},
            "cell_time_s": round(self.cell_now(), 3),
            **self.production(sim_events, all_done=len(done) == len(self.cfg.orders)),
            # each process's last metrics, written as it stopped (ops/up.py, final_metrics)
            "final_metrics": {p.name[len("metrics-"):-len(".prom")]: str(p)
                              for p in sorted(self.state_dir.glob("metrics-*.prom"))},
            "supervisor_events": self.events,
            "decision_logs": decision_logs(self.state_dir),    # docs/flight-recorder.md
            **escalations,
        }

    def event_log(self, name: str) -> list[dict[str, Any]]:
        """The events a process wrote to ``events-NAME.jsonl`` (none without the file; a
        line cut short by a kill is skipped)."""
        path = self.state_dir / f"events-{name}.jsonl"
        out: list[dict[str, Any]] = []
        if path.exists():
            for line in path.read_text().splitlines():
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue
        return out

    def production(self, sim_events: list[dict[str, Any]], *, all_done: bool
                   ) -> dict[str, Any]:
        """The production KPIs ``autocell run`` reports (makespan, tardiness, OEE, energy …;
        sim_bridge.report.production_figures), from the plant's and the hosts' event logs
        merged in cell-time order.  The KPI window ends at the last completion when every
        order completed (as in ``run``), else at the last plant event."""
        from sim_bridge.report import production_figures

        evs = list(sim_events)
        for h in self.cfg.hosts:       # the order agents' completions and lot splits
            evs += [e for e in self.event_log(h.name)
                    if e.get("ev") in ("order_completed", "order_cancelled", "lot_split")]
        evs.sort(key=lambda e: float(e.get("t", 0.0)))
        completions = [float(e["t"]) for e in evs if e["ev"] == "order_completed"]
        end_at = (max(completions) if all_done and completions
                  else max((float(e.get("t", 0.0)) for e in evs), default=0.0))
        figures = production_figures(evs, self.cfg, end_at)
        k = figures["kpis"]["machines"]
        makespan = figures["makespan"]
        figures["utilisation"] = {
            m: round((row["processing_s"] + row["setup_s"]) / makespan, 6) if makespan else 0.0
            for m, row in k.items()}
        return figures

    def escalation_figures(self) -> dict[str, Any]:
        """What the console agent's store holds at the end (empty without a console)."""
        if self.escalations_db is None or not Path(self.escalations_db).exists():
            return {}
        from collections import Counter

        from agents.escalation.store import EscalationStore

        store = EscalationStore(self.escalations_db)
        try:
            records = store.list()
            return {"escalations_db": str(self.escalations_db),
                    "escalations_raised": len(records),
                    "escalations_by_cause": dict(Counter(r.cause for r in records)),
                    "escalations_by_outcome": dict(Counter(r.outcome or "open"
                                                           for r in records)),
                    "audit_intact": store.verify().ok,
                    "open_orders": sorted({r.order for r in records
                                           if not r.outcome and r.order})}
        finally:
            store.close()


def last_error(log_path: Path, missing: str = "exit code 2 (bad input)",
               since: int = 0) -> str:
    """The error a child printed last (``autocell: error: ...``, else its last line: a
    traceback's exception) from the end of its log, after offset ``since`` (where the
    process that died began writing); ``missing`` when it printed none."""
    try:
        with log_path.open("rb") as f:
            f.seek(max(since, f.seek(0, os.SEEK_END) - 8192))
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return f"{missing}; no log"
    errors = [ln for ln in lines if ln.startswith("autocell: error: ")]
    last = errors[-1][len("autocell: error: "):] if errors else next(
        (ln for ln in reversed(lines) if ln.strip()), missing)
    return last[:1000]


def prepare_state_dir(state_dir: Path) -> None:
    make_state_dir(state_dir)
    for pattern in STATE_FILES:
        for p in state_dir.glob(pattern):
            try:
                p.unlink()
            except OSError as exc:   # a directory where a journal goes, a read-only file
                raise ConfigurationError(
                    f"{p}: cannot clear the last run's state ({exc.strerror or exc}); move it "
                    "out of the state directory") from None


def set_aside(db: Path) -> Path | None:
    """Move a store left by an earlier run out of the way (its ids, ``AGENT/eN``, would
    collide with this run's); its audit log is kept.  Returns where it went."""
    if not db.exists():
        return None
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    target = db.with_name(f"{db.name}.{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = db.with_name(f"{db.name}.{stamp}-{n}")
    for suffix in ("", "-wal", "-shm"):
        part = Path(f"{db}{suffix}")
        if part.exists():
            os.replace(part, Path(f"{target}{suffix}"))
    return target


@dataclass(frozen=True)
class UpStart:
    """What ``autocell up`` (with or without ``--ray``) runs from, once its input is checked."""

    cfg: Any
    faults: Any
    state_dir: Path
    keys: Path
    escalations_db: Path
    log: Callable[[str], None]


class Terminated(KeyboardInterrupt):
    """``autocell up`` got SIGTERM (systemd, ``timeout``, ``kill``): it stops as on Ctrl-C —
    children stopped, logs sealed, ``report.json`` written — and exits 143."""


#: ``up``'s exit code on SIGTERM (128 + the signal's number, as a shell reports it).
EXIT_TERMINATED = 128 + signal.SIGTERM

_stoppable = False      # inside stoppable(): hold_signals() may change the handlers


def hold_signals() -> None:
    """Ignore SIGINT and SIGTERM from here on, until :func:`stoppable` ends: the stop, the
    report and the summary are bounded (5 s for the children), and a second Ctrl-C must not
    lose them.  Outside :func:`stoppable` (a caller of :meth:`Supervisor.run` in a process
    of its own making) it changes nothing."""
    if _stoppable:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


@contextmanager
def stoppable() -> Iterator[None]:
    """Around a supervised run and its report: SIGTERM raises :class:`Terminated` in the
    main thread, as SIGINT raises KeyboardInterrupt; both handlers are restored after."""
    global _stoppable

    def term(signum: int, frame: Any) -> None:
        raise Terminated()

    saved = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, term)
    _stoppable = True
    try:
        yield
    finally:
        _stoppable = False
        signal.signal(signal.SIGINT, saved[0])
        signal.signal(signal.SIGTERM, saved[1])


def start_up(args: Any) -> UpStart | int:
    """Load and check the cell and its fault scenario, prepare the state directory and the
    keys; exit code 2 for bad input (the issues printed on stderr)."""
    from ops.config import ConfigError, load_cell
    from ops.config.fault_files import load_faults

    try:
        cfg = load_cell(args.cell)
        faults = load_faults(args.faults, cfg) if args.faults else None
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    if not cfg.hosts:
        raise ConfigurationError(f"{args.cell}: the cell has no `hosts` section; `autocell up` "
                                 "needs one (see cell_configs/demo_cell.yaml)")
    if not args.speed > 0:                       # also NaN (a caller without the parser)
        raise ConfigurationError("--speed must be positive")
    if getattr(args, "until", None) is not None and args.until <= 0:
        raise ConfigurationError("--until must be a positive number of cell seconds")
    use_ray = getattr(args, "ray", False)
    if getattr(args, "address", None) and not use_ray:
        raise ConfigurationError("--address joins a Ray cluster: it needs --ray")
    state_dir = Path(args.state_dir or Path(".autocell") / cfg.cell)
    prepare_state_dir(state_dir)
    keys = ensure_keys(cfg, state_dir)
    db = Path(getattr(args, "escalations_db", None) or state_dir / "escalations.db")
    log = ((lambda *_: None) if args.quiet else
           (lambda s: print(s, file=sys.stderr, flush=True)))
    return UpStart(cfg, faults, state_dir, keys, db, log)


def finish_up(state_dir: Path, code: int, report: dict[str, Any]) -> int:
    """Write ``report.json``, print the one-line summary; the exit code (1 if an invariant
    failed in a run that otherwise ended well)."""
    tmp = state_dir / "report.json.tmp"          # whole, or not at all
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(tmp, state_dir / "report.json")
    ok = all(report["invariants"].values())
    oee = report.get("kpis", {}).get("cell", {}).get("oee")
    print(f"cell {report['cell']}: {report['orders_completed']}/{report['orders_total']} orders "
          f"completed, {report['operations']} operations"
          + (f", makespan {report['makespan']:.1f} s, OEE {oee:.0%}" if oee is not None else "")
          + f", {counted(report['restarts'], 'restart')} "
          f"(restart p95 {report['restart_s']['p95']} s), invariants "
          f"{'hold' if ok else 'VIOLATED'}; report: {state_dir / 'report.json'}")
    if code == 0 and not ok:
        return 1
    return code


class _VoiceLink:
    """The supervisor's voice's driver (agents/runtime/runner.py): the bus through the
    supervisor link, wake-ups checked by the poll loop on the wall clock."""

    def __init__(self, sup: Supervisor) -> None:
        self.sup = sup

    def send(self, sender: str, tos: Sequence[str], body: Body, conv: str,
             delays_s: Sequence[float]) -> None:
        for to in tos:
            self.sup.link.send(to, body, conv)

    def wake_at(self, at: float, token: int) -> None:
        self.sup._wakes.append((at, token))

    def command(self, sender: str, cmd: Command) -> None:
        raise AssertionError(f"the supervisor commands no plant (got {cmd.command!r})")

    def record(self, event: str, fields: dict[str, Any]) -> None:
        self.sup.note(event, **fields)
