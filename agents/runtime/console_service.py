"""The console agent on the real bus, and the process supervisor's voice on it.

Theory of operation
-------------------
Under ``autocell up`` the console agent is a process of its own
(``autocell console-agent``, supervised like the simulator and the hosts).
:class:`ConsoleService` is its thin driver: the sans-io
:class:`~agents.escalation.console.ConsoleAgent` and its SQLite
:class:`~agents.escalation.store.EscalationStore` on the signed ZeroMQ bus,
with identity ``console`` (role ``console``), bound to the cell's
``escalation.console_endpoint``.  The agent runs on the
:class:`~agents.runtime.runner.Runner` like a host's agents do; the service
is its driver (send → the bus, wake-at → ``loop.call_later`` on the cell
clock, record → ``events-console.jsonl``; the console commands no plant)
and, like a host, keeps a decision log of its agent's inputs and answers,
``decisions-console-BOOT.jsonl`` (docs/flight-recorder.md), and, every
``look_every_s`` of wall time, writes the cell time to the store (the clock
of the CLI twin and the web console; with the wall time and speed, the
heartbeat by which the web console knows the cell is alive) and, when someone else changed the
store (a decision queued in the outbox, an acknowledgement, a shelve),
has the agent :meth:`~agents.escalation.console.ConsoleAgent.sync`: queued
decisions go out as signed ``decision`` messages naming the user, timers
are re-armed.

**The store is the journal.**  A restarted console agent opens the same
file, re-arms a timer per open escalation (``on_start``), sends what is
still in the outbox, and answers an ``escalate`` that a raiser re-sends
with the decision already taken.  Nothing else needs to survive.

:class:`SupervisorLink` gives ``autocell up``'s supervisor an identity on
the bus (``supervisor``, role ``host``): a bus on an asyncio loop in a
daemon thread, so the supervisor's synchronous poll loop can raise a
``restart_intensity`` escalation (:func:`restart_intensity_escalation`),
re-send it until it is answered, and read the decision.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import queue
import signal
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agents.cell.build import policy_of, timing_of
from agents.escalation.console import CONSOLE_ID, ConsoleAgent
from agents.escalation.intensity import SUPERVISOR_ID
from agents.escalation.policy import OFF, EscalationPolicy, policy_on
from agents.escalation.store import EscalationStore
from agents.protocol.actions import Action, Command
from agents.protocol.messages import Body, Decision, Message
from agents.runtime.flight_log import console_decision_log
from agents.runtime.journal import SqliteJournal
from agents.runtime.runner import Runner
from security.keystore import KeyDir

if TYPE_CHECKING:
    from agents.cell.model import CellConfig
    from agents.runtime.bus import Bus
    from agents.runtime.host import CellClock

log = logging.getLogger("autocell.console")


def console_policy(cfg: CellConfig, keys_dir: Path) -> EscalationPolicy:
    """The policy a deployed cell's agents escalate by: the cell's, if some rule is on and
    the keys directory holds a ``console`` certificate to sign decisions with; else
    :data:`~agents.escalation.policy.OFF` (agents handle everything alone, as before)."""
    policy = policy_of(cfg)
    if not policy_on(policy) or not KeyDir(keys_dir).cert_path(CONSOLE_ID).exists():
        return OFF
    return policy


class ConsoleService:
    """The console agent and its store on the signed ZeroMQ bus."""

    def __init__(self, cfg: CellConfig, *, keys_dir: Path, state_dir: Path, clock: CellClock,
                 db_path: Path, routes: dict[str, str] | None = None,
                 look_every_s: float = 0.2) -> None:
        from agents.runtime.host import paced, signed_bus

        self.cfg = cfg
        self.name = CONSOLE_ID         # its files: events-console.jsonl, decisions-console-*
        self.clock = clock
        self.state_dir = state_dir
        self.look_every_s = look_every_s
        self.policy = policy_of(cfg)
        # in wall time every audit entry carries its wall-clock time (docs/console.md)
        self.store = EscalationStore(db_path, self.policy.deadlines, wall_clock=clock.wall)
        self.agent = ConsoleAgent(CONSOLE_ID, timing=timing_of(cfg), store=self.store,
                                  flood_count=self.policy.flood_count,
                                  flood_window_s=self.policy.flood_window_s)
        boots = SqliteJournal(state_dir / "journal-console.sqlite")
        self.boot = boots.next_boot("host/console")
        boots.close()
        self.bus: Bus = signed_bus(cfg, keys_dir=keys_dir, state_dir=state_dir, name="console",
                                   bind=cfg.escalation.console_endpoint,
                                   identities=[CONSOLE_ID], epoch=self.boot, clock=clock)
        for agent, endpoint in (routes or {}).items():
            self.bus.set_route(agent, endpoint)
        self.events = (state_dir / "events-console.jsonl").open("a", buffering=1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = asyncio.Event()
        self._head = ""
        self.runner = Runner({CONSOLE_ID: self.agent}, _ServiceLink(self),
                             on_agent_error=self._agent_failed)
        # the flight recorder: escalations and decisions, one log per process boot
        self.decisions = console_decision_log(self, KeyDir(keys_dir), paced(cfg, clock.speed))
        self.observer: Any = None      # unused; the web console serves escalation metrics

    # -- what the runner's actions become ---------------------------------------------------
    def _agent_failed(self, _agent: str, exc: Exception) -> None:
        """A bug must not take the console down: the store keeps the state."""
        log.error("console agent failed on input", exc_info=exc)

    def _settled(self) -> None:
        """After the agent acted: its own writes to the store are no news."""
        self._head = self.store.audit_head()

    def _execute(self, actions: list[Action]) -> None:
        self.runner.execute(CONSOLE_ID, actions, self.clock.now())
        self._settled()

    def record(self, event: str, **fields: Any) -> None:
        line = {"t": round(self.clock.now(), 6), "ev": event, "host": "console", **fields}
        self.events.write(json.dumps(line, sort_keys=True, separators=(",", ":")) + "\n")

    def _on_message(self, msg: Message) -> None:
        if msg.to == CONSOLE_ID and not self._stop.is_set():
            self.runner.deliver(msg, self.clock.now())
            self._settled()

    def look(self) -> None:
        """Publish the cell time; if another process wrote the store, sync the agent."""
        now = self.clock.now()
        # the heartbeat: the web console tells a live cell from a lost one by it
        self.store.heartbeat(now, self.clock.wall(), self.clock.speed, self.look_every_s)
        if self.store.audit_head() != self._head or self.store.pending_decisions():
            try:
                actions = self.agent.sync(now)
            except Exception:
                log.exception("console agent failed to sync with its store")
                return
            self._execute(actions)

    # -- running ----------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        records = self.store.list()
        return {"host": "console", "pid": os.getpid(), "boot": self.boot,
                "cell_now": round(self.clock.now(), 3), "wall": self.clock.wall(),
                "store": self.store.path, "escalations": len(records),
                "open": sum(1 for r in records if r.open),
                "sent": sum(self.bus.stats.sent.values()),
                "received": sum(self.bus.stats.received.values()),
                "rejected": dict(self.bus.stats.rejected)}

    async def run(self) -> None:
        from agents.runtime.host import status_interval_s, write_json_atomic

        self._loop = asyncio.get_running_loop()
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._loop.add_signal_handler(sig, self._stop.set)
        await self.bus.start(self._on_message)
        self.record("console_start", boot=self.boot, store=self.store.path,
                    open=len(self.store.list(open_only=True)))
        self.runner.start(CONSOLE_ID, self.clock.now())   # re-arms every open escalation
        self._settled()
        status_path = self.state_dir / "status-console.json"
        status_every_s = status_interval_s(self.cfg, self.clock.speed)
        next_status = 0.0
        while not self._stop.is_set():
            self.look()
            wall = self.clock.wall()
            if wall >= next_status:
                write_json_atomic(status_path, self.status())
                self.decisions.seal()      # on disk and signed, at most one interval behind
                next_status = wall + status_every_s
            try:
                await asyncio.wait_for(self._stop.wait(), timeout=self.look_every_s)
            except TimeoutError:
                pass
        self.record("console_stop")
        self.decisions.close()
        self.decisions.sink.close()
        self.store.stopped(self.clock.wall())   # the console shows the run has ended
        write_json_atomic(status_path, {**self.status(), "stopped": True})
        await self.bus.close()
        self.store.close()
        self.events.close()


class _ServiceLink:
    """The console service's services to the runner (agents/runtime/runner.py)."""

    def __init__(self, service: ConsoleService) -> None:
        self.service = service

    def send(self, sender: str, tos: Sequence[str], body: Body, conv: str,
             delays_s: Sequence[float]) -> None:
        bus = self.service.bus
        if len(tos) == 1:
            bus.send(sender, tos[0], body, conv)
        else:
            bus.send_many(sender, tos, body, conv)

    def wake_at(self, at: float, token: int) -> None:
        service = self.service
        assert service._loop is not None

        def wake() -> None:
            if not service._stop.is_set():
                service.runner.fire(token, service.clock.now())
                service._settled()
        service._loop.call_later(service.clock.delay_s(at), wake)

    def command(self, sender: str, cmd: Command) -> None:
        raise AssertionError(f"the console agent commands no plant (got {cmd.command!r})")

    def record(self, event: str, fields: dict[str, Any]) -> None:
        self.service.record(event, **fields)


# -- the supervisor on the bus ------------------------------------------------------------------

class SupervisorLink:
    """``autocell up``'s supervisor on the bus: raise escalations, hear decisions.

    The supervisor is a synchronous poll loop; the bus lives on an asyncio loop in a
    daemon thread.  :meth:`send` is thread-safe; verified ``decision`` messages land in
    :attr:`decisions`."""

    def __init__(self, cfg: CellConfig, *, keys_dir: Path, state_dir: Path, clock: CellClock,
                 bind: str = "tcp://127.0.0.1:*") -> None:
        self.decisions: queue.Queue[Message] = queue.Queue()   # verified, from the console
        self._make_bus = lambda: self._bus(cfg, keys_dir, state_dir, clock, bind)
        self.bus: Bus | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="autocell-supervisor-bus")
        self.endpoint = ""

    @staticmethod
    def _bus(cfg: CellConfig, keys_dir: Path, state_dir: Path, clock: CellClock,
             bind: str) -> Bus:
        from agents.runtime.host import signed_bus

        # one supervisor per run, and the replay stores of a run start empty: the wall
        # second it starts is a fresh epoch
        bus = signed_bus(cfg, keys_dir=keys_dir, state_dir=state_dir, name=SUPERVISOR_ID,
                         bind=bind, identities=[SUPERVISOR_ID], epoch=int(clock.wall()),
                         clock=clock)
        bus.set_route(CONSOLE_ID, cfg.escalation.console_endpoint)
        return bus

    async def _start(self) -> str:
        # built on the loop's thread: its replay store (SQLite) is used there only
        self.bus = self._make_bus()
        return await self.bus.start(self._on_message)

    def start(self, timeout_s: float = 10.0) -> str:
        self._thread.start()
        self.endpoint = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(
            timeout_s)
        return self.endpoint

    def _on_message(self, msg: Message) -> None:
        if isinstance(msg.body, Decision) and msg.sender == CONSOLE_ID:
            self.decisions.put(msg)

    def send(self, to: str, body: Body, conv: str = "") -> None:
        assert self.bus is not None, "start() first"
        self._loop.call_soon_threadsafe(self.bus.send, SUPERVISOR_ID, to, body, conv)

    def close(self, timeout_s: float = 5.0) -> None:
        if not self._thread.is_alive():
            return
        try:
            if self.bus is not None:
                asyncio.run_coroutine_threadsafe(self.bus.close(), self._loop).result(timeout_s)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout_s)
