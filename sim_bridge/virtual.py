"""The virtual-time driver: a whole cell in one process, time owned by SimPy.

Theory of operation
-------------------
SimPy's environment is the clock.  Every agent action is carried out here:
``Send`` seals the body with the sender's key (the real envelope codec),
the seeded network model decides when — or whether, or how often — the
frames arrive, and on arrival the frames are opened by the real
:class:`~security.envelope.Opener` (signature, schema, role, replay
window) before the addressee sees a typed message.  ``SetTimer`` becomes a
SimPy timeout, ``Command`` goes to the :class:`~sim_bridge.plant.EmbeddedPlant`,
``Log`` goes to the event log.

Determinism: SimPy runs simultaneous events in scheduling order; every
random draw comes from a :class:`random.Random` seeded from the run seed
and a purpose label; message ids come from a seeded stream; nothing
iterates a set of strings.  The event log therefore is byte-identical for
the same config and seed (tests hold us to it).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import simpy

from agents.base import Agent, PlantEventIn
from agents.escalation.burst import BurstDetector, reject_burst_escalation
from agents.escalation.console import CONSOLE_ID, ConsoleAgent
from agents.escalation.policy import OFF
from agents.escalation.store import EscalationStore
from agents.cell.build import build_agents, policy_of, roles_of, timing_of
from agents.cell.specs import plant_machines
from agents.order import OrderAgent
from agents.protocol.actions import Action, CancelTimer, Command, Log, Send, SetTimer
from agents.runtime.journal import (
    Inbound,
    Input,
    Journal,
    MemoryJournal,
    PlantIn,
    Start,
    Timer,
    feed,
    replay,
)
from agents.runtime.observe import Observer
from agents.protocol.envelope import Opener, Sealer
from security.errors import ConfigurationError, Rejected
from security.keystore import EphemeralCell, ephemeral_cell
from security.replay import ReplayGuard

from .plant import EmbeddedPlant

if TYPE_CHECKING:
    from agents.cell.faults import FaultScenario
    from agents.cell.model import CellConfig


@dataclass(frozen=True)
class NetworkModel:
    """Seeded message delivery: latency, jitter, loss, duplication, reordering."""

    latency_s: float = 0.001
    jitter_s: float = 0.0
    loss: float = 0.0
    duplication: float = 0.0
    reorder: float = 0.0

    def deliveries(self, rng: random.Random) -> list[float]:
        """Delays after which copies of one message arrive (empty = lost)."""
        if self.loss and rng.random() < self.loss:
            return []
        copies = 2 if self.duplication and rng.random() < self.duplication else 1
        out = []
        for _ in range(copies):
            d = self.latency_s + (rng.uniform(0.0, self.jitter_s) if self.jitter_s else 0.0)
            if self.reorder and rng.random() < self.reorder:
                d += rng.uniform(0.0, 5.0 * max(self.latency_s, 1e-4))
            out.append(d)
        return out


@dataclass
class RunStats:
    messages_sent: int = 0
    messages_delivered: int = 0
    messages_lost: int = 0
    verified: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    sent_by_type: Counter[str] = field(default_factory=Counter)
    received_by_type: Counter[str] = field(default_factory=Counter)
    dropped_agent_down: int = 0
    dropped_partition: int = 0
    restarts: int = 0


class VirtualCell:
    """All agents of a cell, the plant and the network in virtual time."""

    def __init__(self, cfg: CellConfig, *, seed: int | None = None,
                 order_strategy: str | None = None, resource_strategy: str | None = None,
                 network: NetworkModel | None = None, breakdowns: bool = True,
                 keys: EphemeralCell | None = None, clock_base_at: float = 0.0,
                 faults: FaultScenario | None = None, journal: Journal | None = None,
                 escalations_db: str = ":memory:",
                 wall_clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.cfg = cfg
        # wall time only paces a run (``run(speed=K)``); it never enters the simulation
        self._wall_clock, self._sleep = wall_clock, sleep
        self.faults = faults
        if faults is not None:
            breakdowns = breakdowns and faults.mtbf_breakdowns
            if journal is None and faults.needs_journal():
                journal = MemoryJournal()
        self.journal = journal
        self._strategies = (order_strategy, resource_strategy)
        self.seed = cfg.sim.seed if seed is None else seed
        self.env = simpy.Environment()
        self.stats = RunStats()
        self.events: list[str] = []
        n = cfg.sim.network
        self.network = network or NetworkModel(n.latency_s, n.jitter_s, n.loss, n.duplication,
                                               n.reorder)
        if faults is not None:
            f = faults.network
            nm = self.network
            self.network = NetworkModel(nm.latency_s + f.delay_s, nm.jitter_s + f.jitter_s,
                                        1 - (1 - nm.loss) * (1 - f.loss),
                                        max(nm.duplication, f.duplication),
                                        max(nm.reorder, f.reorder))
        self._rng_net = random.Random(f"{self.seed}/network")
        self._rng_ids = random.Random(f"{self.seed}/msgid")
        if keys is None:
            keys = ephemeral_cell({**roles_of(cfg), CONSOLE_ID: "console"},
                                  seed=f"autocell/{cfg.cell}/{self.seed}".encode())
        # Escalations need the console agent, which needs a console key: a keys
        # directory without one runs the cell with escalation off, as before.
        self.policy = policy_of(cfg) if CONSOLE_ID in keys.keys else OFF
        self.agents: dict[str, Agent] = build_agents(cfg, self.seed,
                                                     order_strategy_name=order_strategy,
                                                     resource_strategy_name=resource_strategy,
                                                     escalation=self.policy)
        self.console: ConsoleAgent | None = None
        if CONSOLE_ID in keys.keys:
            self.console = ConsoleAgent(
                CONSOLE_ID, timing=timing_of(cfg),
                store=EscalationStore(escalations_db, self.policy.deadlines),
                flood_count=self.policy.flood_count, flood_window_s=self.policy.flood_window_s)
        self._burst: BurstDetector | None = None    # for the reject-burst rule
        # the console is no agent of the cell's own: its state lives in its store, not in
        # a journal, and no fault scenario crashes it
        missing = sorted(set(self.agents) - set(keys.keys))
        if missing:
            raise ConfigurationError(
                f"no key for agent(s) {', '.join(missing[:10])}; issue them with "
                "`autocell keys issue AGENT --role ROLE`")
        # Certificates from a keys directory carry wall-clock validity windows:
        # envelopes are stamped base + simulated time.  The event log uses
        # simulated time only, so it stays byte-identical across runs.
        self.clock_base_at = clock_base_at
        self.opener = Opener(keys.trust, ReplayGuard(skew_s=60.0))
        self.keys = keys
        self.sealers = {a: Sealer(a, keys.keys[a], epoch=self._boot(a),
                                  random_bytes=self._random_bytes)
                        for a in [*self.agents, *([CONSOLE_ID] if self.console else [])]}
        self.down: set[str] = set()                 # crashed agents, not yet restarted
        self.paused: dict[str, list[Callable[[], None]]] = {}   # agent -> inputs held back
        self.cut: list[set[str]] = []               # active partitions (agents cut off)
        self.skew: dict[str, float] = {}            # agent -> clock offset, seconds
        self._timers: dict[tuple[str, str], int] = {}
        self._timer_gen = itertools.count(1)
        self.orders = [a for a in self.agents.values() if isinstance(a, OrderAgent)]
        self.completed = 0
        self._all_done = self.env.event()
        self.plant = EmbeddedPlant(
            self.env,
            plant_machines(cfg),
            [r.id for r in cfg.robots], seed=self.seed, emit=self._plant_event,
            record=self.record, sensor_interval_s=cfg.sim.sensor_interval_s,
            breakdowns=breakdowns)
        self.wall_s = 0.0
        self.ended_by = ""
        self.observer: Observer | None = None      # metrics hooks (agents/runtime/observe.py)

    # -- event log ------------------------------------------------------------------------------
    def record(self, event: str, **fields: Any) -> None:
        line = {"t": round(self.env.now, 9), "ev": event, **fields}
        self.events.append(json.dumps(line, sort_keys=True, separators=(",", ":")))
        if self.observer is not None:
            self.observer.on_record(line)

    def event_log_sha256(self) -> str:
        h = hashlib.sha256()
        for line in self.events:
            h.update(line.encode())
            h.update(b"\n")
        return h.hexdigest()

    # -- carrying out actions ---------------------------------------------------------------------
    def _random_bytes(self, n: int) -> bytes:
        return self._rng_ids.getrandbits(8 * n).to_bytes(n, "big")

    def _boot(self, agent_id: str) -> int:
        return self.journal.next_boot(agent_id) if self.journal is not None else 1

    def _input(self, agent_id: str, make: Callable[[float], Input]) -> None:
        """Hand an input to an agent: dropped while it is down, held while it is paused."""
        if agent_id in self.down:
            self.stats.dropped_agent_down += 1
            return
        held = self.paused.get(agent_id)
        if held is not None:
            held.append(lambda: self._input(agent_id, make))
            return
        if agent_id == CONSOLE_ID and self.console is not None:
            self._execute(self.console, feed(self.console, make(self.env.now), None))
            return
        agent = self.agents[agent_id]
        self._execute(agent, feed(agent, make(self.env.now), self.journal))

    def _execute(self, agent: Agent, actions: list[Action]) -> None:
        now = self.env.now
        if self.observer is not None:
            self.observer.on_actions(agent.id, actions)
        for act in actions:
            if isinstance(act, Send):
                self._send(agent.id, act, now)
            elif isinstance(act, SetTimer):
                self._set_timer(agent, act.key, act.at)
            elif isinstance(act, CancelTimer):
                self._timers.pop((agent.id, act.key), None)
            elif isinstance(act, Command):
                self.plant.command(act)
            elif isinstance(act, Log):
                self.record(act.event, **act.fields)
                if act.event in ("order_completed", "order_cancelled"):
                    self.completed += 1
                    if self.completed == len(self.orders) and not self._all_done.triggered:
                        self._all_done.succeed()

    def _send(self, sender: str, act: Send, now: float) -> None:
        stamp = now + self.clock_base_at + self.skew.get(sender, 0.0)
        frames = self.sealers[sender].seal(act.to, act.body, stamp, act.conv)
        self.stats.messages_sent += 1
        self.stats.sent_by_type[act.body.TYPE] += 1
        if self.cut and any((sender in c) != (act.to in c) for c in self.cut):
            self.stats.dropped_partition += 1
            return
        delays = self.network.deliveries(self._rng_net)
        if not delays:
            self.stats.messages_lost += 1
            return
        for d in delays:
            self.env.timeout(d).callbacks.append(lambda _e, f=frames: self._deliver(f))

    def _deliver(self, frames: list[bytes]) -> None:
        now = self.env.now
        try:
            msg = self.opener.open(frames, now + self.clock_base_at)
        except Rejected as exc:
            self.stats.rejected[exc.reason] += 1
            self.record("rejected", reason=exc.reason, sender=exc.sender or "")
            self._reject_burst(now)
            return
        self.stats.verified += 1
        if msg.to not in self.agents and not (msg.to == CONSOLE_ID and self.console):
            self.stats.rejected["misdirected"] += 1
            return
        self.stats.messages_delivered += 1
        self.stats.received_by_type[msg.type] += 1
        self._input(msg.to, lambda t: Inbound(msg, t))

    def _reject_burst(self, now: float) -> None:
        """A burst of rejected messages is a security event for a supervisor (the driver,
        not an agent, sees rejections: it raises the escalation as ``host:virtual``)."""
        rule = self.policy.reject_burst
        if rule is None or self.console is None:
            return
        if self._burst is None:
            self._burst = BurstDetector.of(rule)
        if not self._burst.observe(now):
            return
        body = reject_burst_escalation(rule, escalation=f"host:virtual/reject_burst/{round(now, 6)}",
                                       now=now, rejected_by_reason=self.stats.rejected)
        self._execute(self.console, self.console.raise_local("host:virtual", body, now))

    def _set_timer(self, agent: Agent, key: str, at: float) -> None:
        k = (agent.id, key)
        gen = next(self._timer_gen)   # never reused: a cancelled timeout can't match a new timer
        self._timers[k] = gen

        def fire(_e: Any) -> None:
            if self._timers.get(k) == gen:
                del self._timers[k]
                self._input(agent.id, lambda t: Timer(key, t))

        self.env.timeout(max(0.0, at - self.env.now)).callbacks.append(fire)

    def _plant_event(self, ev: PlantEventIn) -> None:
        if ev.resource in self.agents:
            self._input(ev.resource, lambda t: PlantIn(ev, t))

    # -- faults -------------------------------------------------------------------------------------
    def crash(self, agent_id: str) -> None:
        """The agent's process state is gone: inputs are dropped until :meth:`restart`."""
        if self.journal is None:
            raise ConfigurationError("crashing an agent needs a journal to restart it from")
        if agent_id in self.down:
            return
        self.paused.pop(agent_id, None)      # a paused process that is killed loses its inputs
        self.down.add(agent_id)
        for k in [k for k in self._timers if k[0] == agent_id]:
            del self._timers[k]
        self.record("agent_crash", agent=agent_id)

    def restart(self, agent_id: str) -> None:
        """Rebuild the agent from its journal (fresh object, same seed), re-arm its timers."""
        if agent_id not in self.down:
            return
        assert self.journal is not None
        order_s, resource_s = self._strategies
        fresh = build_agents(self.cfg, self.seed, order_strategy_name=order_s,
                             resource_strategy_name=resource_s,
                             escalation=self.policy)[agent_id]
        rec = replay(fresh, self.journal.records(agent_id))
        self.agents[agent_id] = fresh
        for o_idx, o in enumerate(self.orders):
            if o.id == agent_id:
                self.orders[o_idx] = fresh  # type: ignore[assignment]
        self.sealers[agent_id] = Sealer(agent_id, self.keys.keys[agent_id],
                                        epoch=self._boot(agent_id),
                                        random_bytes=self._random_bytes)
        self.down.discard(agent_id)
        self.stats.restarts += 1
        self.record("agent_restart", agent=agent_id, inputs=rec.inputs)
        for key, at in rec.pending():
            self._set_timer(fresh, key, at)
        self._input(agent_id, rec.resume)

    def pause(self, agent_id: str) -> None:
        """``SIGSTOP``: inputs are held (sockets and timers queue up) until :meth:`resume`."""
        if agent_id not in self.down and agent_id not in self.paused:
            self.paused[agent_id] = []
            self.record("agent_pause", agent=agent_id)

    def resume(self, agent_id: str) -> None:
        held = self.paused.pop(agent_id, None)
        if held is None:
            return
        self.record("agent_resume", agent=agent_id, held=len(held))
        for deliver in held:
            deliver()

    def _at(self, at_s: float, what: Callable[[], None]) -> None:
        self.env.timeout(max(0.0, at_s - self.env.now)).callbacks.append(lambda _e: what())

    def _schedule_faults(self, f: FaultScenario) -> None:
        """Turn the scenario into timed events; each is logged as ``fault_injected``."""
        def inject(kind: str, agents: list[str], then: Callable[[], None], **fields: Any) -> None:
            self.record("fault_injected", kind=kind, agents=agents, **fields)
            then()

        for b in f.breakdowns:
            self._at(b.at_s, lambda b=b: inject("breakdown", [b.resource],
                                                lambda: self.plant.fail(b.resource, b.repair_s)))
        for c in f.crashes:
            self._at(c.at_s, lambda c=c: inject("crash", [c.agent], lambda: self.crash(c.agent)))
            self._at(c.at_s + c.down_s, lambda c=c: self.restart(c.agent))
        for h in f.hosts:
            members = [a for a in self.agents if self.cfg.host_of(a) == h.host]
            if h.action == "kill":
                self._at(h.at_s, lambda m=members, h=h: inject(
                    "host_kill", m, lambda: [self.crash(a) for a in m], host=h.host))
                self._at(h.at_s + h.duration_s, lambda m=members: [self.restart(a) for a in m])
            else:
                self._at(h.at_s, lambda m=members, h=h: inject(
                    "host_pause", m, lambda: [self.pause(a) for a in m], host=h.host))
                self._at(h.at_s + h.duration_s, lambda m=members: [self.resume(a) for a in m])
        for p in f.partitions:
            side = set(p.agents)
            self._at(p.at_s, lambda p=p, side=side: inject(
                "partition", sorted(side), lambda: self.cut.append(side),
                duration_s=p.duration_s))
            self._at(p.at_s + p.duration_s, lambda side=side: self._heal(side))
        for s in f.clock_skew:
            self._at(s.at_s, lambda s=s: inject("clock_skew", [s.agent],
                                                lambda: self.skew.__setitem__(s.agent, s.offset_s),
                                                offset_s=s.offset_s))

    def _heal(self, side: set[str]) -> None:
        if side in self.cut:
            self.cut.remove(side)
            self.record("partition_healed", agents=sorted(side))

    # -- supervisors (the console agent's API; in virtual time nobody calls these unless a
    #    test or an embedding program plays the supervisor) ---------------------------------------
    def acknowledge(self, escalation: str, user: str) -> None:
        assert self.console is not None
        self._execute(self.console, self.console.acknowledge(escalation, user, self.env.now))

    def shelve(self, escalation: str, user: str, reason: str, duration_s: float) -> None:
        assert self.console is not None
        self._execute(self.console, self.console.shelve(escalation, user, reason, duration_s,
                                                        self.env.now))

    def decide(self, escalation: str, user: str, option: str, reason: str = "") -> None:
        assert self.console is not None
        self._execute(self.console, self.console.decide(escalation, user, option, reason,
                                                        self.env.now))

    # -- running ------------------------------------------------------------------------------------
    def start(self) -> None:
        if self.faults is not None:
            self._schedule_faults(self.faults)
        for agent_id in [*self.agents, *([CONSOLE_ID] if self.console else [])]:
            self._input(agent_id, Start)

    def run(self, until: float | None = None,
            progress: Callable[[float, int, int], None] | None = None, *,
            speed: float | None = None, look_every_s: float = 0.2) -> None:
        """Run until every order is completed, or until simulated time ``until``.

        Without ``until`` the run stops at a safety horizon — 20× the larger of
        the latest due date and the cell's total processing work — so a cell
        that cannot finish still ends; orders unfinished then count as lost.

        ``speed`` paces the run to the wall clock (simulated seconds per wall
        second; ``None``: as fast as possible).  Pacing only waits between
        events, so the event log is the same as unpaced — unless a person acts
        meanwhile: every ``look_every_s`` wall seconds the run writes its cell
        time to the escalation store and, if another process changed the store
        (a decision queued by the web console or the CLI twin), has the console
        agent pick it up at the current paced time (:meth:`ConsoleAgent.sync`).
        """
        t0 = time.perf_counter()  # wall time is reported, never used by the simulation
        self.start()
        horizon = max((o.due_at for o in self.cfg.orders), default=1.0)
        fastest = {cap: min(self.cfg.machine(m).capabilities[cap]
                            for m in self.cfg.capable_machines(cap))
                   for cap in self.cfg.capabilities() if self.cfg.capable_machines(cap)}
        work = sum(fastest.get(op.capability, 0.0) * o.quantity
                   for o in self.cfg.orders for op in self.cfg.product(o.product).routing)
        limit = until if until is not None else 20.0 * max(horizon, work)
        if progress is not None:
            self.env.process(self._ticker(horizon / 200.0, progress))
        stop = simpy.AnyOf(self.env, [self._all_done, self.env.timeout(limit)])
        if speed is None:
            self.env.run(until=stop)
        else:
            self._run_paced(stop, speed, look_every_s)
        self.ended_by = ("completed" if self._all_done.triggered
                         else "until" if until is not None else "horizon")
        if progress is not None:
            progress(self.env.now, self.completed, len(self.orders))
        self.wall_s = time.perf_counter() - t0

    def _run_paced(self, stop: simpy.Event, speed: float, look_every_s: float) -> None:
        """``env.run(until=stop)``, one event at a time, each no earlier than its wall time."""
        if speed <= 0:
            raise ConfigurationError(f"speed must be positive, not {speed!r}")
        store = self.console.store if self.console is not None else None
        own: Callable[[Any], None] | None = None
        if store is not None:
            self._store_head = store.audit_head()

            def own(_rec: Any) -> None:        # the run's own writes are no news
                self._store_head = store.audit_head()
            store.listeners.append(own)
        now, sleep = self._wall_clock, self._sleep
        wall0, sim0 = now(), self.env.now
        next_look = wall0
        try:
            while not stop.processed:
                wall = now()
                if store is not None and wall >= next_look:
                    next_look = wall + look_every_s
                    paced = sim0 + (wall - wall0) * speed
                    self._look_outside(store, min(max(self.env.now, paced), self.env.peek()))
                due = wall0 + (self.env.peek() - sim0) / speed
                if due > wall:
                    sleep(min(due, next_look if store is not None else due) - wall)
                    continue
                self.env.step()
        finally:
            if store is not None and own in store.listeners:
                store.listeners.remove(own)

    def _look_outside(self, store: EscalationStore, at: float) -> None:
        """Publish the cell time; if someone else wrote the store (a queued decision, an
        acknowledgement, a shelve), have the console agent sync at the paced time ``at``."""
        assert self.console is not None
        store.set_cell_now(at)
        head = store.audit_head()
        if head == self._store_head and not store.pending_decisions():
            return
        self._store_head = head
        console = self.console
        self._at(at, lambda: self._execute(console, console.sync(self.env.now)))

    def _ticker(self, step_s: float, progress: Callable[[float, int, int], None]):
        # Progress ticks schedule events but touch no state: the event log is unchanged.
        while True:
            yield self.env.timeout(step_s)
            progress(self.env.now, self.completed, len(self.orders))
