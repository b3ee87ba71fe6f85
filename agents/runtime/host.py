"""The ZeroMQ host: the agents of one host on one asyncio loop, in scaled real time.

Theory of operation
-------------------
A host is the unit of deployment and restart (DESIGN §3).  It runs the
agents the cell config assigns to it — the very objects the virtual-time
driver runs — and carries out their actions:

* ``Send`` → :class:`~agents.runtime.bus.Bus` (sealed with the agent's key,
  routed to the addressee's host endpoint, or to the simulator);
* ``SetTimer``/``CancelTimer`` → ``loop.call_later`` on the cell clock;
* ``Command`` → a signed ``plant_command`` to the plant process (the
  remote plant protocol, docs/PROTOCOL.md); ``plant_event`` messages from
  it come back as plant inputs;
* ``Log`` → one JSON line in ``events-HOST.jsonl``.

**Cell time** is ``(wall - start_at) × speed``; every process of a cell is
given the same ``start_at`` and ``speed``, so their clocks agree.
Envelopes are stamped with wall time (certificates and the replay window
are wall-clock).

**Journal**: every input is written ahead to ``journal-HOST.sqlite``.  A
host started on an existing journal rebuilds each agent from it
(:func:`agents.runtime.journal.replay`), re-arms its timers and gives it
``on_recover``; the host's boot counter is the envelope epoch, so the
restarted host's messages are not mistaken for replays.

**Faults** (``--faults``): agent crashes of this host's agents, message
loss/duplication/delay, partitions and clock skew are played here, on the
send path, with a seeded RNG; host kills and pauses are the supervisor's.

A status file (``status-HOST.json``, rewritten each heartbeat) tells the
supervisor the host is alive and which orders are complete.

**Reject bursts** (docs/escalation.md): the host itself is on the bus as
``host-NAME`` (role ``host``) when its keys directory holds that
certificate and the cell escalates.  Every rejected envelope goes to a
:class:`~agents.escalation.burst.BurstDetector` (the bus's reject
listener); when a burst starts the host sends a signed ``escalate`` from
``host-NAME`` to the console, re-sends it every ``burst_resend_s`` wall
seconds until a ``decision`` for it arrives, and logs both in its events.
``replayed`` refusals in the first ``skew_s`` after the host started are
the expected cost of its own restart (docs/PROTOCOL.md §10.2) and do not
count.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agents.base import Agent, PlantEventIn
from agents.escalation.burst import BurstDetector, reject_burst_escalation
from agents.escalation.policy import OFF, EscalationPolicy
from agents.cell.build import build_agents
from agents.order import OrderAgent
from agents.protocol.actions import Action, CancelTimer, Command, Log, Send, SetTimer
from agents.protocol.messages import (
    Decision,
    Escalate,
    Message,
    PlantCommand,
    PlantEvent,
)
from agents.runtime.bus import Bus
from agents.runtime.journal import (
    Inbound,
    Input,
    PlantIn,
    SqliteJournal,
    Start,
    Timer,
    feed,
    replay,
)
from agents.runtime.observe import Observer
from agents.runtime.transport import ZmqTransport
from security.certs import AGENT_ID_RE
from agents.protocol.envelope import Opener
from security.errors import ConfigurationError, Rejected
from security.keystore import KeyDir
from security.replay import ReplayGuard
from security.replay_store import SqliteReplayStore

if TYPE_CHECKING:
    from agents.cell.faults import FaultScenario
    from agents.cell.model import CellConfig

log = logging.getLogger("autocell.host")

SIM_ID = "sim"
HOST_ROLE = "host"
REPLAY_SKEW_S = 60.0      # the replay guard's skew window on every process of a cell


def host_identity(name: str) -> str:
    """The bus identity (role ``host``) of host ``name`` itself: ``host-NAME``."""
    return f"host-{name}"


@dataclass(frozen=True)
class CellClock:
    """Cell time from wall time: ``(wall - start_at) × speed``."""

    start_at: float
    speed: float
    wall: Callable[[], float] = time.time

    def now(self) -> float:
        return (self.wall() - self.start_at) * self.speed

    def delay_s(self, at: float) -> float:
        """Wall seconds from now until cell time ``at`` (never negative)."""
        return max(0.0, (self.start_at + at / self.speed) - self.wall())


def signed_bus(cfg: CellConfig, *, keys_dir: Path, state_dir: Path, name: str, bind: str,
               identities: list[str], epoch: int, clock: CellClock) -> Bus:
    """The bus of one process of a cell: its identities, a replay guard persisted in
    ``replay-NAME.sqlite`` (flushed on every message, so a restart refuses at most one
    in-flight message per sender), routes to every other agent, wall-clock stamps."""
    kd = KeyDir(keys_dir)
    guard = ReplayGuard(SqliteReplayStore(state_dir / f"replay-{name}.sqlite"),
                        skew_s=REPLAY_SKEW_S,
                        now=clock.wall(), flush_every=1)
    bus = Bus(ZmqTransport(bind=bind), Opener(kd.trust_store(), guard), clock=clock.wall,
              random_bytes=os.urandom)
    for agent in identities:
        key, _ = kd.identity(agent)
        bus.add_identity(agent, key, epoch=epoch)
    for agent, endpoint in routes_of(cfg).items():
        if agent not in identities:
            bus.set_route(agent, endpoint)
    return bus


def status_interval_s(cfg: CellConfig, speed: float) -> float:
    """How often a process rewrites its status file (its heartbeat to the supervisor)."""
    return max(0.2, min(1.0, cfg.negotiation.heartbeat_interval_s / speed))


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def routes_of(cfg: CellConfig) -> dict[str, str]:
    """Agent id (and ``sim``) -> endpoint of the process that runs it."""
    endpoints = {h.name: h.endpoint for h in cfg.hosts}
    routes = {a: endpoints[cfg.host_of(a) or ""] for a in cfg.agent_ids()}
    routes[SIM_ID] = cfg.sim.endpoint
    for h in cfg.hosts:           # the hosts' own identities (reject-burst decisions)
        routes.setdefault(host_identity(h.name), h.endpoint)
    return routes


class Host:
    """The agents of host ``name`` on the ZeroMQ bus, journalled."""

    def __init__(self, cfg: CellConfig, name: str, *, keys_dir: Path, state_dir: Path,
                 clock: CellClock, seed: int | None = None,
                 faults: FaultScenario | None = None,
                 escalation: EscalationPolicy = OFF, burst_resend_s: float = 2.0) -> None:
        if not cfg.hosts:
            raise ValueError("the cell has no hosts section: nothing to run on a host")
        self.cfg = cfg
        self.name = name
        self.clock = clock
        self.seed = cfg.sim.seed if seed is None else seed
        self.state_dir = state_dir
        self.faults = faults
        # escalation is on when the cell runs a console agent (``autocell up`` starts one,
        # agents/escalation/service.py); its endpoint is then one more route
        self.escalation = escalation
        endpoint = next(h.endpoint for h in cfg.hosts if h.name == name)
        self.agents: dict[str, Agent] = {
            a: agent for a, agent in build_agents(cfg, self.seed, escalation=escalation).items()
            if cfg.host_of(a) == name}
        self.journal = SqliteJournal(state_dir / f"journal-{name}.sqlite")
        self.boot = self.journal.next_boot(f"host/{name}")
        self.bus = signed_bus(cfg, keys_dir=keys_dir, state_dir=state_dir, name=name,
                              bind=endpoint, identities=sorted(self.agents), epoch=self.boot,
                              clock=clock)
        if escalation is not OFF:
            self.bus.set_route(escalation.console, cfg.escalation.console_endpoint)
        self.identity = host_identity(name)
        self.burst_resend_s = burst_resend_s
        self.bursts_open: dict[str, Escalate] = {}     # escalation id -> body, until decided
        self.bursts_raised = 0
        self._burst: BurstDetector | None = None
        self._started_wall = clock.wall()
        self._join_as_host(KeyDir(keys_dir))
        self.events = (state_dir / f"events-{name}.jsonl").open("a", buffering=1)
        self.down: set[str] = set()
        self._timers: dict[tuple[str, str], asyncio.TimerHandle] = {}
        self._rng = random.Random(f"{self.seed}/host/{name}/{self.boot}")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = asyncio.Event()
        self.recovered: dict[str, int] = {}
        self.observer: Observer | None = None      # metrics hooks (agents/runtime/observe.py)

    # -- reject bursts ----------------------------------------------------------------------
    def _join_as_host(self, kd: KeyDir) -> None:
        """Put ``host-NAME`` on the bus and listen to rejections, if the cell escalates
        bursts and the keys allow it; else say once why not."""
        rule = self.escalation.reject_burst
        if rule is None:
            return
        why = ""
        if not AGENT_ID_RE.match(self.identity) or len(self.identity.encode()) > 64:
            why = f"{self.identity!r} is not a valid agent id (host name too long)"
        elif self.identity in self.cfg.agent_ids():
            why = f"{self.identity!r} is an agent of the cell; rename the host or the agent"
        elif not kd.cert_path(self.identity).exists():
            why = (f"no certificate for {self.identity!r}; issue one with `autocell keys issue "
                   f"{self.identity} --role {HOST_ROLE} --dir {kd.root}`")
        else:
            try:
                key, cert = kd.identity(self.identity)
                if cert.role != HOST_ROLE:
                    why = f"the certificate of {self.identity!r} has role {cert.role!r}, not 'host'"
            except (ConfigurationError, OSError, ValueError) as exc:
                why = f"cannot load the key of {self.identity!r}: {exc}"
        if why:
            log.warning(f"reject-burst escalation is off on host {self.name}: {why}",
                        extra={"ctx": {"host": self.name, "identity": self.identity}})
            return
        self.bus.add_identity(self.identity, key, epoch=self.boot)
        self._burst = BurstDetector.of(rule)
        self.bus.rejects.listener = self._on_reject

    def _on_reject(self, exc: Rejected) -> None:
        """Every rejection the bus counted (the hot path of a flood: O(1))."""
        assert self._burst is not None
        if (exc.reason == "replayed"
                and self.clock.wall() <= self._started_wall + REPLAY_SKEW_S):
            return      # our own restart's refusals (PROTOCOL §10.2), not an attack
        now = self.clock.now()
        if self._burst.observe(now):
            self._raise_burst(now)

    def _raise_burst(self, now: float) -> None:
        rule = self.escalation.reject_burst
        assert rule is not None
        body = reject_burst_escalation(
            rule, escalation=f"{self.identity}/reject_burst/{round(now, 3)}", now=now,
            rejected_by_reason=self.bus.stats.rejected, resource=self.name)
        self.bursts_raised += 1
        self.bursts_open[body.escalation] = body
        self.record("reject_burst_escalated", escalation=body.escalation,
                    identity=self.identity, count=rule.count, window_s=rule.threshold_s,
                    rejected_by_reason=body.context["rejected_by_reason"])
        log.warning("a burst of rejected messages: escalated to the console",
                    extra={"ctx": {"escalation": body.escalation, "count": rule.count,
                                   "window_s": rule.threshold_s}})
        self.bus.send(self.identity, self.escalation.console, body, body.escalation)
        if len(self.bursts_open) == 1 and self._loop is not None:
            self._loop.call_later(self.burst_resend_s, self._resend_bursts)

    def _resend_bursts(self) -> None:
        """Re-send every unanswered burst escalation (the console may be restarting)."""
        if self._stop.is_set() or not self.bursts_open:
            return
        for esc, body in list(self.bursts_open.items()):
            try:
                self.bus.send(self.identity, self.escalation.console, body, esc)
            except Exception:   # never let a re-send take the host down
                log.exception("re-sending a reject-burst escalation failed")
        assert self._loop is not None
        self._loop.call_later(self.burst_resend_s, self._resend_bursts)

    def _on_decision(self, msg: Message) -> None:
        body = msg.body
        if not isinstance(body, Decision) or msg.sender != self.escalation.console:
            return
        raised = self.bursts_open.pop(body.escalation, None) is not None
        self.record("reject_burst_decision", escalation=body.escalation, option=body.option,
                    user=body.user, reason=body.reason, raised_here=raised)
        log.info("reject-burst decision", extra={"ctx": {
            "escalation": body.escalation, "option": body.option, "user": body.user}})

    # -- carrying out actions ---------------------------------------------------------------
    def _input(self, agent_id: str, inp: Input) -> None:
        if agent_id in self.down or self._stop.is_set():
            return
        agent = self.agents[agent_id]
        try:
            actions = feed(agent, inp, self.journal)
        except Exception:   # a bug in an agent must not take the host down
            log.exception("agent failed on input", extra={"ctx": {"agent": agent_id}})
            return
        self._execute(agent, actions)

    def _execute(self, agent: Agent, actions: list[Action]) -> None:
        if self.observer is not None:
            self.observer.on_actions(agent.id, actions)
        i, n = 0, len(actions)
        while i < n:
            act = actions[i]
            i += 1
            if isinstance(act, Send):
                # consecutive Sends of one body object in one conversation (a cfp to every
                # bidder) become one multicast envelope: one signature for all of them
                tos = [act.to]
                while i < n:
                    nxt = actions[i]
                    if not (isinstance(nxt, Send) and nxt.body is act.body
                            and nxt.conv == act.conv):
                        break
                    tos.append(nxt.to)
                    i += 1
                self._send(agent.id, tos, act.body, act.conv)
            elif isinstance(act, SetTimer):
                self._set_timer(agent.id, act.key, act.at)
            elif isinstance(act, CancelTimer):
                handle = self._timers.pop((agent.id, act.key), None)
                if handle is not None:
                    handle.cancel()
            elif isinstance(act, Command):
                self._send(agent.id, SIM_ID, PlantCommand(act.command, act.resource, act.task,
                                                          dict(act.args)), "")
            elif isinstance(act, Log):
                self.record(act.event, **act.fields)

    def _send(self, sender: str, to: str | list[str], body: Any, conv: str) -> None:
        """Send ``body`` to one agent or several (one multicast envelope for those sent now).

        Fault injection decides per addressee, with the same draws in the same order as
        one ``_send`` per addressee would: a partition or a loss drops that addressee, a
        delay or a duplicate sends it alone later; the rest go out together.
        """
        tos = [to] if isinstance(to, str) else to
        f = self.faults
        now_tos = tos
        if f is not None:
            now_tos = []
            now = self.clock.now()
            n = f.network
            for t in tos:
                if t == SIM_ID:
                    now_tos.append(t)
                    continue
                if any(p.at_s <= now < p.at_s + p.duration_s
                       and (sender in p.agents) != (t in p.agents) for p in f.partitions):
                    continue
                if n.loss and self._rng.random() < n.loss:
                    continue
                copies = 2 if n.duplication and self._rng.random() < n.duplication else 1
                delay = n.delay_s + (self._rng.uniform(0, n.jitter_s) if n.jitter_s else 0.0)
                if n.reorder and self._rng.random() < n.reorder:
                    delay += self._rng.uniform(0.0, 0.05)
                if delay > 0 or copies > 1:
                    assert self._loop is not None
                    for _ in range(copies):
                        self._loop.call_later(delay / self.clock.speed,
                                              lambda t=t: self.bus.send(sender, t, body, conv))
                    continue
                now_tos.append(t)
        if len(now_tos) == 1:
            self.bus.send(sender, now_tos[0], body, conv)
        elif now_tos:
            self.bus.send_many(sender, now_tos, body, conv)

    def _set_timer(self, agent_id: str, key: str, at: float) -> None:
        assert self._loop is not None
        k = (agent_id, key)
        old = self._timers.pop(k, None)
        if old is not None:
            old.cancel()

        def fire() -> None:
            if self._timers.get(k) is handle:
                del self._timers[k]
                self._input(agent_id, Timer(key, self.clock.now()))

        handle = self._loop.call_later(self.clock.delay_s(at), fire)
        self._timers[k] = handle

    def record(self, event: str, **fields: Any) -> None:
        line = {"t": round(self.clock.now(), 6), "ev": event, "host": self.name, **fields}
        self.events.write(json.dumps(line, sort_keys=True, separators=(",", ":")) + "\n")
        if self.observer is not None:
            self.observer.on_record(line)

    # -- inputs ---------------------------------------------------------------------------------
    def _on_message(self, msg: Message) -> None:
        if msg.to == self.identity:
            self._on_decision(msg)
            return
        if isinstance(msg.body, PlantEvent):
            if msg.sender != SIM_ID:
                return
            ev = PlantEventIn(msg.body.event, msg.body.resource, msg.body.task, msg.body.data)
            if ev.resource in self.agents:
                self._input(ev.resource, PlantIn(ev, self.clock.now()))
            return
        self._input(msg.to, Inbound(msg, self.clock.now()))

    # -- agent crashes (fault scenarios) ----------------------------------------------------------
    def crash(self, agent_id: str) -> None:
        self.down.add(agent_id)
        for k in [k for k in self._timers if k[0] == agent_id]:
            self._timers.pop(k).cancel()
        self.record("agent_crash", agent=agent_id)

    def restart(self, agent_id: str) -> None:
        if agent_id not in self.down:
            return
        self.agents[agent_id] = build_agents(self.cfg, self.seed,
                                             escalation=self.escalation)[agent_id]
        self.down.discard(agent_id)
        self._recover(agent_id)

    def _recover(self, agent_id: str) -> None:
        rec = replay(self.agents[agent_id], self.journal.records(agent_id))
        self.recovered[agent_id] = rec.inputs
        self.record("agent_restart", agent=agent_id, inputs=rec.inputs)
        for key, at in rec.pending():
            self._set_timer(agent_id, key, at)
        self._input(agent_id, rec.resume(self.clock.now()))

    # -- running ----------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        orders = [a for a in self.agents.values() if isinstance(a, OrderAgent)]
        return {"host": self.name, "pid": os.getpid(), "boot": self.boot,
                "cell_now": round(self.clock.now(), 3), "wall": self.clock.wall(),
                "agents": len(self.agents), "orders": len(orders),
                "completed": sorted(o.id for o in orders if o.completed_at is not None),
                "cancelled": sorted(o.id for o in orders if o.cancelled_by),
                "escalations_open": sum(len(o.escalations) for o in orders),
                "recovered_agents": len(self.recovered),
                "sent": sum(self.bus.stats.sent.values()),
                "received": sum(self.bus.stats.received.values()),
                "rejected": dict(self.bus.stats.rejected),
                "reject_bursts": {"identity": self.identity if self._burst else "",
                                  "raised": self.bursts_raised,
                                  "open": sorted(self.bursts_open)}}

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        if threading.current_thread() is threading.main_thread():   # not in a Ray actor's thread
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._loop.add_signal_handler(sig, self._stop.set)
        await self.bus.start(self._on_message)
        self.record("host_start", boot=self.boot, agents=len(self.agents))
        known = set(self.journal.agents())
        for a in sorted(self.agents):
            if a in known:
                self._recover(a)
            else:
                self._input(a, Start(self.clock.now()))
        if self.faults is not None:
            now = self.clock.now()
            for c in self.faults.crashes:     # a restarted host skips crashes already past
                if c.agent in self.agents and c.at_s >= now:
                    self._loop.call_later(self.clock.delay_s(c.at_s), self.crash, c.agent)
                    self._loop.call_later(self.clock.delay_s(c.at_s + c.down_s), self.restart,
                                          c.agent)
            for s in self.faults.clock_skew:
                if s.agent in self.agents:
                    self._loop.call_later(self.clock.delay_s(s.at_s), self._skew, s.agent,
                                          s.offset_s)
        interval = status_interval_s(self.cfg, self.clock.speed)
        status_path = self.state_dir / f"status-{self.name}.json"
        while not self._stop.is_set():
            write_json_atomic(status_path, self.status())
            try:
                await asyncio.wait_for(self._stop.wait(), timeout=interval)
            except TimeoutError:
                pass
        self.record("host_stop")
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        write_json_atomic(status_path, {**self.status(), "stopped": True})
        await self.bus.close()
        self.journal.close()
        self.events.close()

    def _skew(self, agent: str, offset_s: float) -> None:
        self.record("clock_skew", agent=agent, offset_s=offset_s)
        self.bus.skew_s[agent] = offset_s
