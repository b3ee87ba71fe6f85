"""The ZeroMQ host: the agents of one host on one asyncio loop, in scaled real time.

Theory of operation
-------------------
A host is the unit of deployment and restart (docs/architecture.md, The
runner and its drivers).  It runs the agents the cell config assigns to
it — the very objects the virtual-time driver runs — on the
:class:`~agents.runtime.runner.Runner`, which carries out their actions
(timers, multicast grouping, injected network faults, crash and restart,
journal).  The host is the runner's driver and supplies four things:

* send → :class:`~agents.runtime.bus.Bus` (sealed with the agent's key,
  routed to the addressee's host endpoint; one multicast envelope for a
  group), after the injected delay when the fault scenario adds one;
* wake-at → ``loop.call_later`` on the cell clock;
* plant command → a signed ``plant_command`` to the plant process (the
  remote plant protocol, docs/PROTOCOL.md); ``plant_event`` messages from
  it come back as plant inputs;
* record → one JSON line in ``events-HOST.jsonl``.

**Cell time** is ``(wall - start_at) × speed``; every process of a cell is
given the same ``start_at`` and ``speed``, so their clocks agree.
Envelopes are stamped with wall time (certificates and the replay window
are wall-clock).

**Journal**: every input is written ahead to ``journal-HOST.sqlite``.  A
host started on an existing journal rebuilds each agent from it
(:func:`agents.runtime.journal.replay`), re-arms its timers and gives it
``on_recover``; the host's boot counter is the envelope epoch, so the
restarted host's messages are not mistaken for replays.

**Faults** (``--faults``): agent crashes of this host's agents, partitions
and clock skew are scheduled here; message loss, duplication, delay and
reordering are the runner's network model (the same rule as in virtual
time, seeded per host boot); host kills and pauses are the supervisor's.

A status file (``status-HOST.json``, rewritten each heartbeat) tells the
supervisor the host is alive and which orders are complete.

**Reject bursts** (docs/escalation.md): the host itself is on the bus as
``host-NAME`` (role ``host``) when its keys directory holds that
certificate and the cell escalates: a sans-io
:class:`~agents.escalation.burst.BurstWatch` agent on the runner.  Every
rejected envelope is reported to it (the bus's reject listener); when a
burst starts it sends a signed ``escalate`` from ``host-NAME`` to the
console, re-sends it every ``burst_resend_s`` wall seconds (through the
escalation raiser, on a runner timer) until a ``decision`` for it arrives,
and logs both in the host's events.
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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agents.base import Agent, PlantEventIn
from agents.cell.build import build_agents, roles_of, timing_of
from agents.escalation.burst import BurstWatch
from agents.escalation.policy import OFF, EscalationPolicy
from agents.maintenance.rul import HealthModel
from agents.order import OrderAgent
from agents.protocol.actions import Command
from agents.protocol.envelope import Opener
from agents.protocol.messages import (
    Body,
    Message,
    PlantCommand,
    PlantEvent,
)
from agents.runtime.bus import Bus, Sealed
from agents.runtime.flight_log import host_decision_log
from agents.runtime.journal import JOURNAL, DamagedRecord, SqliteJournal
from agents.runtime.runner import PERFECT, NetworkModel, OnRunner, Runner
from agents.runtime.transport import ZmqTransport
from security.certs import AGENT_ID_RE
from security.errors import (
    ConfigurationError,
    DamagedState,
    Forbidden,
    Misdirected,
    Rejected,
)
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
#: The shortest reply deadline of a paced cell, in wall seconds (docs/operations.md).  The
#: cell file's ``reply_deadline_s`` is cell time: at ``--speed 10`` its 0.2 s were 20 ms of
#: wall time, less than a round of signed messages between processes takes on a loaded
#: machine, and rounds came back empty (``no_proposals``) with every machine up.
REPLY_FLOOR_WALL_S = 0.2


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


def paced(cfg: CellConfig, speed: float) -> CellConfig:
    """The cell as a host runs it at ``speed``: its reply deadline at least
    :data:`REPLY_FLOOR_WALL_S` of wall time (``REPLY_FLOOR_WALL_S × speed`` cell seconds).
    A wall-clock floor, not a plain scaling: at ``--speed 1`` and below the cell file's value
    holds as written; virtual-time runs never come here."""
    floor = REPLY_FLOOR_WALL_S * speed
    n = cfg.negotiation
    if n.reply_deadline_s >= floor:
        return cfg
    return cfg.model_copy(update={"negotiation": n.model_copy(update={"reply_deadline_s": floor})})


def signed_bus(cfg: CellConfig, *, keys_dir: Path, state_dir: Path, name: str, bind: str,
               identities: list[str], epoch: int, clock: CellClock) -> Bus:
    """The bus of one process of a cell: its identities, a replay guard persisted in
    ``replay-NAME.sqlite`` (written before each message is accepted, so a restart refuses
    only what it had accepted: a sender's next message gets through), routes to every
    other agent, wall-clock stamps."""
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
    """Agent id (and the plant's, ``sim.identity``) -> endpoint of the process that runs it.
    Every agent :func:`build_agents` makes — the energy manager of a capped cell too (it runs
    on the first host), or the machines' power requests have nowhere to go."""
    endpoints = {h.name: h.endpoint for h in cfg.hosts}
    routes = {a: endpoints[cfg.host_of(a) or ""] for a in roles_of(cfg)}
    routes[cfg.sim.identity] = cfg.sim.endpoint
    for h in cfg.hosts:           # the hosts' own identities (reject-burst decisions)
        routes.setdefault(host_identity(h.name), h.endpoint)
    return routes


class Host(OnRunner):
    """The agents of host ``name`` on the ZeroMQ bus, journalled."""

    def __init__(self, cfg: CellConfig, name: str, *, keys_dir: Path, state_dir: Path,
                 clock: CellClock, seed: int | None = None,
                 faults: FaultScenario | None = None,
                 escalation: EscalationPolicy = OFF, burst_resend_s: float = 2.0,
                 record_decisions: bool = True,
                 models: Mapping[str, HealthModel] | None = None) -> None:
        if not cfg.hosts:
            raise ValueError("the cell has no hosts section: nothing to run on a host")
        cfg = paced(cfg, clock.speed)          # the reply deadline in wall time, at least
        self.cfg = cfg
        self.name = name
        self.clock = clock
        self.seed = cfg.sim.seed if seed is None else seed
        self.state_dir = state_dir
        self.faults = faults
        # escalation is on when the cell runs a console agent (``autocell up`` starts one,
        # agents/runtime/console_service.py); its endpoint is then one more route
        self.escalation = escalation
        # trained health models (``maintenance.models``, read by the caller from the cell
        # file): the machine agents' estimators start from them, a rebuilt agent's too
        self.models = dict(models or {})
        endpoint = next(h.endpoint for h in cfg.hosts if h.name == name)
        agents: dict[str, Agent] = {
            a: agent for a, agent in self._build().items() if cfg.host_of(a) == name}
        self.journal = SqliteJournal(state_dir / f"journal-{name}.sqlite")
        self.boot = self.journal.next_boot(f"host/{name}")
        self.bus = signed_bus(cfg, keys_dir=keys_dir, state_dir=state_dir, name=name,
                              bind=endpoint, identities=sorted(agents), epoch=self.boot,
                              clock=clock)
        if escalation is not OFF:
            self.bus.set_route(escalation.console, cfg.escalation.console_endpoint)
        self.identity = host_identity(name)
        self.burst_resend_s = burst_resend_s
        self.burst_watch: BurstWatch | None = None     # host-NAME on the bus, when it can be
        self.events = (state_dir / f"events-{name}.jsonl").open("a", buffering=1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = asyncio.Event()
        self.recovered: dict[str, int] = {}
        network = PERFECT
        if faults is not None:   # injected on the send path; the real wire adds its latency
            n = faults.network
            network = NetworkModel(n.delay_s, n.jitter_s, n.loss, n.duplication, n.reorder)
        self.bus.admit = self._admit
        self.runner = Runner(
            agents, _HostLink(self), journal=self.journal, network=network,
            rng=random.Random(f"{self.seed}/host/{name}/{self.boot}"),
            orders=[a for a, agent in agents.items() if isinstance(agent, OrderAgent)],
            rebuild=lambda agent_id: self._build()[agent_id],
            on_agent_error=self._agent_failed)
        self._join_as_host(KeyDir(keys_dir))
        # the flight recorder: decisions-NAME-BOOT.jsonl, one per process boot
        self.decisions = (host_decision_log(self, KeyDir(keys_dir)) if record_decisions
                          else None)

    @property
    def agents(self) -> dict[str, Agent]:
        return self.runner.agents

    def _build(self) -> dict[str, Agent]:
        """The cell's agents as :func:`build_agents` makes them, each wearing machine's
        estimator started from its trained model where :attr:`models` has one."""
        return build_agents(self.cfg, self.seed, escalation=self.escalation, models=self.models,
                            plant=self.cfg.sim.identity)

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
        now = self.clock.now()
        self.burst_watch = BurstWatch(
            self.identity, rule=rule, console=self.escalation.console,
            resend_s=self.burst_resend_s * self.clock.speed, process=self.name,
            # our own restart's refusals (PROTOCOL §10.2) are no attack: the skew window
            grace_until_at=now + REPLAY_SKEW_S * self.clock.speed,
            timing=timing_of(self.cfg))
        self.runner.agents[self.identity] = self.burst_watch
        self.runner.unjournalled |= {self.identity}
        self.bus.rejects.listener = self._on_reject

    def _on_reject(self, exc: Rejected) -> None:
        """Every rejection the bus counted (the hot path of a flood: O(1))."""
        watch = self.burst_watch
        if watch is None or self._stop.is_set():
            return
        now = self.clock.now()
        self.runner.execute(self.identity, watch.on_reject(exc.reason, now,
                                                           self.bus.stats.rejected), now)

    # -- what the runner's actions become (the runner does the rest) ------------------------
    def _agent_failed(self, agent_id: str, exc: Exception) -> None:
        """A bug in an agent must not take the host down."""
        log.error("agent failed on input", exc_info=exc, extra={"ctx": {"agent": agent_id}})

    def _transmit(self, tos: Sequence[str], sender: str, body: Body, conv: str) -> None:
        if self._stop.is_set():
            return
        if len(tos) == 1:
            self.bus.send(sender, tos[0], body, conv)
        else:
            self.bus.send_many(sender, tos, body, conv)

    def _ship(self, sealed: Sealed) -> None:
        if not self._stop.is_set():
            self.bus.ship(sealed)

    def record(self, event: str, **fields: Any) -> None:
        line = {"t": round(self.clock.now(), 6), "ev": event, "host": self.name, **fields}
        self.events.write(json.dumps(line, sort_keys=True, separators=(",", ":")) + "\n")
        observer = self.runner.observer
        if observer is not None:
            observer.on_record(line)

    # -- inputs ---------------------------------------------------------------------------------
    def _on_message(self, msg: Message) -> None:
        if self._stop.is_set():
            return
        if isinstance(msg.body, PlantEvent):
            ev = PlantEventIn(msg.body.event, msg.body.resource, msg.body.task, msg.body.data)
            self.runner.plant_event(ev, self.clock.now())
            return
        self.runner.deliver(msg, self.clock.now())

    def _admit(self, msg: Message) -> Rejected | None:
        """Plant events come from the plant, about a resource of this host; anything else
        is refused and counted (docs/PROTOCOL.md §13.1)."""
        if not isinstance(msg.body, PlantEvent):
            return None
        plant = self.cfg.sim.identity     # ``sim`` unless the cell file names another
        if msg.sender != plant:
            return Forbidden(f"a plant_event from {msg.sender!r}: only the plant "
                             f"({plant!r}) reports plant events", sender=msg.sender,
                             msg_type=msg.type)
        if msg.body.resource not in self.agents:
            return Misdirected(f"a plant_event about {msg.body.resource[:64]!r}, not a "
                               f"resource of host {self.name}", sender=msg.sender,
                               msg_type=msg.type)
        return None

    # -- agent crashes (fault scenarios) ----------------------------------------------------------
    def crash(self, agent_id: str) -> None:
        self.runner.crash(agent_id)

    def restart(self, agent_id: str) -> None:
        rec = self.runner.restart(agent_id, self.clock.now())
        if rec is not None:
            self.recovered[agent_id] = rec.inputs

    def _at(self, at: float, fn: Callable[..., Any], *args: Any) -> None:
        """Call ``fn(*args)`` at cell time ``at`` (unless the host is stopping)."""
        assert self._loop is not None

        def call() -> None:
            if not self._stop.is_set():
                fn(*args)
        self._loop.call_later(self.clock.delay_s(at), call)

    def _play_faults(self, faults: FaultScenario) -> None:
        """This host's share of a fault scenario; a restarted host skips what is past."""
        now = self.clock.now()
        for c in faults.crashes:
            if c.agent in self.agents and c.at_s >= now:
                self._at(c.at_s, self.crash, c.agent)
                self._at(c.at_s + c.down_s, self.restart, c.agent)
        for s in faults.clock_skew:
            if s.agent in self.agents:
                self._at(s.at_s, self._skew, s.agent, s.offset_s)
        for p in faults.partitions:
            if now < p.at_s + p.duration_s:
                side = set(p.agents)
                self._at(p.at_s, self.runner.partition, side)
                self._at(p.at_s + p.duration_s, self.runner.heal, side)

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
                "reject_bursts": self._bursts_status()}

    @property
    def bursts_open(self) -> list[str]:
        """The reject-burst escalations raised here and not yet decided."""
        return sorted(self.burst_watch.raiser.open) if self.burst_watch is not None else []

    def _bursts_status(self) -> dict[str, Any]:
        watch = self.burst_watch
        if watch is None:
            return {"identity": "", "raised": 0, "open": []}
        return {"identity": self.identity, "raised": watch.raised,
                "open": sorted(watch.raiser.open)}

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
                try:
                    rec = self.runner.recover(a, self.clock.now(), fresh=self.agents[a])
                except DamagedRecord as exc:
                    raise DamagedState(self.journal.path, JOURNAL, str(exc)) from None
                self.recovered[a] = rec.inputs
            else:
                self.runner.start(a, self.clock.now())
        if self.faults is not None:
            self._play_faults(self.faults)
        interval = status_interval_s(self.cfg, self.clock.speed)
        status_path = self.state_dir / f"status-{self.name}.json"
        while not self._stop.is_set():
            write_json_atomic(status_path, self.status())
            if self.decisions is not None:
                self.decisions.seal()       # on disk and signed, at most one interval behind
            try:
                await asyncio.wait_for(self._stop.wait(), timeout=interval)
            except TimeoutError:
                pass
        self.record("host_stop")
        if self.decisions is not None:
            self.decisions.close()
            self.decisions.sink.close()
        write_json_atomic(status_path, {**self.status(), "stopped": True})
        await self.bus.close()
        self.journal.close()
        self.events.close()

    def _skew(self, agent: str, offset_s: float) -> None:
        self.record("clock_skew", agent=agent, offset_s=offset_s)
        self.bus.skew_s[agent] = offset_s


class _HostLink:
    """The ZeroMQ host's four services to the runner (agents/runtime/runner.py)."""

    def __init__(self, host: Host) -> None:
        self.host = host

    def send(self, sender: str, tos: Sequence[str], body: Body, conv: str,
             delays_s: Sequence[float]) -> None:
        host = self.host
        if len(delays_s) == 1 and delays_s[0] <= 0:     # the plain path: no fault injected
            host._transmit(tos, sender, body, conv)
            return
        # delays are injected faults (the wire adds its own latency); a duplicate is the
        # very same frames again, as in virtual time (the receiver refuses it as replayed)
        sealed = host.bus.seal(sender, tos, body, conv)
        for d in delays_s:
            if d <= 0:
                host._ship(sealed)
            else:
                assert host._loop is not None
                host._loop.call_later(d / host.clock.speed, host._ship, sealed)

    def wake_at(self, at: float, token: int) -> None:
        host = self.host
        host._at(at, lambda: host.runner.fire(token, host.clock.now()))

    def command(self, sender: str, cmd: Command) -> None:
        plant = self.host.cfg.sim.identity
        self.host.bus.send(sender, plant, PlantCommand(cmd.command, cmd.resource, cmd.task,
                                                       dict(cmd.args)), "")

    def record(self, event: str, fields: dict[str, Any]) -> None:
        self.host.record(event, **fields)
