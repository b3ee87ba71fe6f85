"""The virtual-time driver: a whole cell in one process, time owned by SimPy.

Theory of operation
-------------------
SimPy's environment is the clock.  Every agent action is carried out here:
``Send`` seals the body with the sender's key (the real envelope codec),
the seeded network model decides when — or whether, or how often — the
frames arrive, and on arrival the frames are opened by the real
:class:`~agents.protocol.envelope.Opener` (signature, schema, role, replay
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
import json
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import simpy

from agents.base import Agent
from agents.cell.build import build_agents, policy_of, roles_of, timing_of
from agents.cell.specs import plant_machines, plant_routes
from agents.escalation.burst import BurstDetector, reject_burst_escalation
from agents.escalation.console import CONSOLE_ID, ConsoleAgent
from agents.escalation.policy import OFF
from agents.escalation.store import EscalationStore
from agents.order import OrderAgent
from agents.protocol.actions import Command
from agents.protocol.envelope import Opener, Sealer
from agents.protocol.messages import Body
from agents.runtime.journal import Journal, MemoryJournal, Start
from agents.runtime.runner import NetworkModel, OnRunner, Runner, RunnerStats
from security.errors import ConfigurationError, Rejected
from security.keystore import EphemeralCell, ephemeral_cell
from security.replay import ReplayGuard

from .plant import EmbeddedPlant

if TYPE_CHECKING:
    from agents.cell.faults import FaultScenario
    from agents.cell.model import CellConfig
    from agents.maintenance.rul import HealthModel


@dataclass
class RunStats(RunnerStats):
    """The runner's counters plus what the virtual wire counts (envelopes opened)."""

    messages_delivered: int = 0
    verified: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    received_by_type: Counter[str] = field(default_factory=Counter)


class VirtualCell(OnRunner):
    """All agents of a cell, the plant and the network in virtual time."""

    def __init__(self, cfg: CellConfig, *, seed: int | None = None,
                 order_strategy: str | None = None, resource_strategy: str | None = None,
                 network: NetworkModel | None = None, breakdowns: bool = True,
                 keys: EphemeralCell | None = None, clock_base_at: float = 0.0,
                 faults: FaultScenario | None = None, journal: Journal | None = None,
                 escalations_db: str = ":memory:",
                 wall_clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep,
                 epoch_clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        # wall time only paces a run (``run(speed=K)``); it never enters the simulation
        self._wall_clock, self._sleep = wall_clock, sleep
        # the date and time people read: the heartbeat and the end of a paced run in the
        # escalation store (the console's "since when"), never the event log
        self._epoch_clock = epoch_clock
        self.faults = faults
        if faults is not None:
            breakdowns = breakdowns and faults.mtbf_breakdowns
            if journal is None and faults.needs_journal():
                journal = MemoryJournal()
        self.journal = journal
        self._strategies = (order_strategy, resource_strategy)
        # trained health models of negotiating machines (set by the negotiated maintenance
        # policy, sim_bridge/maintenance/negotiated.py): a rebuilt agent starts from them too
        self.models: dict[str, HealthModel] = {}
        self.seed = cfg.sim.seed if seed is None else seed
        self.env = simpy.Environment()
        self.stats = RunStats()
        self.events: list[str] = []
        n = cfg.sim.network
        self.network = network or NetworkModel(n.latency_s, n.jitter_s, n.loss, n.duplication,
                                               n.reorder)
        if faults is not None:
            f = faults.network
            self.network = self.network.combined(
                NetworkModel(f.delay_s, f.jitter_s, f.loss, f.duplication, f.reorder))
        self._rng_ids = random.Random(f"{self.seed}/msgid")
        if keys is None:
            keys = ephemeral_cell({**roles_of(cfg), CONSOLE_ID: "console"},
                                  seed=f"autocell/{cfg.cell}/{self.seed}".encode())
        # Escalations need the console agent, which needs a console key: a keys
        # directory without one runs the cell with escalation off, as before.
        self.policy = policy_of(cfg) if CONSOLE_ID in keys.keys else OFF
        built = build_agents(cfg, self.seed, order_strategy_name=order_strategy,
                             resource_strategy_name=resource_strategy, escalation=self.policy)
        self.console: ConsoleAgent | None = None
        if CONSOLE_ID in keys.keys:
            self.console = ConsoleAgent(
                CONSOLE_ID, timing=timing_of(cfg),
                store=EscalationStore(escalations_db, self.policy.deadlines),
                flood_count=self.policy.flood_count, flood_window_s=self.policy.flood_window_s)
        self._burst: BurstDetector | None = None    # for the reject-burst rule
        # the console is no agent of the cell's own: its state lives in its store, not in
        # a journal, and no fault scenario crashes it
        missing = sorted(set(built) - set(keys.keys))
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
                        for a in [*built, *([CONSOLE_ID] if self.console else [])]}
        self.skew: dict[str, float] = {}            # agent -> clock offset, seconds
        self._all_done = self.env.event()
        agents: dict[str, Agent] = dict(built)
        if self.console is not None:
            agents[CONSOLE_ID] = self.console
        self.runner = Runner(
            agents, _VirtualLink(self), journal=journal, unjournalled=[CONSOLE_ID],
            network=self.network, rng=random.Random(f"{self.seed}/network"),
            orders=[a for a, agent in built.items() if isinstance(agent, OrderAgent)],
            rebuild=self._rebuild, stats=self.stats)
        self.runner.listeners.append(self._order_done)
        self.plant = EmbeddedPlant(
            self.env,
            plant_machines(cfg),
            [r.id for r in cfg.robots], seed=self.seed,
            emit=lambda ev: self.runner.plant_event(ev, self.env.now),
            record=self.record, sensor_interval_s=cfg.sim.sensor_interval_s,
            breakdowns=breakdowns, routes=plant_routes(cfg))
        self.wall_s = 0.0
        self.ended_by = ""

    # -- views of the runner's state ----------------------------------------------------------
    @property
    def agents(self) -> dict[str, Agent]:
        """The cell's agents (the console agent is not one of them)."""
        return {a: agent for a, agent in self.runner.agents.items() if a != CONSOLE_ID}

    @property
    def orders(self) -> list[OrderAgent]:
        return [self.runner.agents[o] for o in self.runner.orders]  # type: ignore[misc]

    @property
    def completed(self) -> int:
        return len(self.runner.completed)

    # -- event log ------------------------------------------------------------------------------
    def record(self, event: str, **fields: Any) -> None:
        line = {"t": round(self.env.now, 9), "ev": event, **fields}
        self.events.append(json.dumps(line, sort_keys=True, separators=(",", ":")))
        observer = self.runner.observer
        if observer is not None:
            observer.on_record(line)

    def event_log_sha256(self) -> str:
        h = hashlib.sha256()
        for line in self.events:
            h.update(line.encode())
            h.update(b"\n")
        return h.hexdigest()

    # -- the wire: what the runner's sends become ---------------------------------------------
    def _random_bytes(self, n: int) -> bytes:
        return self._rng_ids.getrandbits(8 * n).to_bytes(n, "big")

    def _boot(self, agent_id: str) -> int:
        return self.journal.next_boot(agent_id) if self.journal is not None else 1

    def _transmit(self, sender: str, tos: Sequence[str], body: Body, conv: str,
                  delays_s: Sequence[float]) -> None:
        """Seal once for ``tos``; each copy arrives after its delay."""
        stamp = self.env.now + self.clock_base_at + self.skew.get(sender, 0.0)
        frames = self.sealers[sender].seal(tos[0] if len(tos) == 1 else list(tos), body,
                                           stamp, conv)
        for d in delays_s:
            self.env.timeout(d).callbacks.append(lambda _e: self._deliver(frames))

    def _deliver(self, frames: list[bytes]) -> None:
        now = self.env.now
        try:
            opened = self.opener.open_envelope(frames, now + self.clock_base_at)
        except Rejected as exc:
            self.stats.rejected[exc.reason] += 1
            self.record("rejected", reason=exc.reason, sender=exc.sender or "")
            self._reject_burst(now)
            return
        self.stats.verified += len(opened.to)     # per addressee, like the bus's counters
        agents = self.runner.agents
        for to in opened.to:
            if to not in agents:
                self.stats.rejected["misdirected"] += 1
        for msg in opened.for_local(agents):
            self.stats.messages_delivered += 1
            self.stats.received_by_type[msg.type] += 1
            self.runner.deliver(msg, now)

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
        self.runner.execute(CONSOLE_ID, self.console.raise_local("host:virtual", body, now), now)

    def _order_done(self, _order: str) -> None:
        if self.runner.all_done and not self._all_done.triggered:
            self._all_done.succeed()

    # -- faults -------------------------------------------------------------------------------------
    def _rebuild(self, agent_id: str) -> Agent:
        order_s, resource_s = self._strategies
        return build_agents(self.cfg, self.seed, order_strategy_name=order_s,
                            resource_strategy_name=resource_s, escalation=self.policy,
                            models=self.models)[agent_id]

    def crash(self, agent_id: str) -> None:
        """The agent's process state is gone: inputs are dropped until :meth:`restart`."""
        if self.journal is None:
            raise ConfigurationError("crashing an agent needs a journal to restart it from")
        self.runner.crash(agent_id)

    def restart(self, agent_id: str) -> None:
        """Rebuild the agent from its journal (fresh object, same seed), re-arm its timers;
        its envelopes carry a new boot epoch."""
        if agent_id not in self.runner.down:
            return
        self.sealers[agent_id] = Sealer(agent_id, self.keys.keys[agent_id],
                                        epoch=self._boot(agent_id),
                                        random_bytes=self._random_bytes)
        self.runner.restart(agent_id, self.env.now)

    def pause(self, agent_id: str) -> None:
        """``SIGSTOP``: inputs are held (sockets and timers queue up) until :meth:`resume`."""
        self.runner.pause(agent_id)

    def resume(self, agent_id: str) -> None:
        self.runner.resume(agent_id, self.env.now)

    def _at(self, at_s: float, what: Callable[[], None]) -> None:
        self.env.timeout(max(0.0, at_s - self.env.now)).callbacks.append(lambda _e: what())

    def _schedule_faults(self, f: FaultScenario) -> None:
        """Turn the scenario into timed events; each is logged as ``fault_injected``."""
        def inject(kind: str, agents: list[str], then: Callable[[], None], **fields: Any) -> None:
            self.record("fault_injected", kind=kind, agents=agents, **fields)
            then()

        def each(act: Callable[[str], None], agents: list[str]) -> None:
            for a in agents:
                act(a)

        # partial binds each entry's values now (a lambda would see the loop's last entry)
        for b in f.breakdowns:
            self._at(b.at_s, partial(inject, "breakdown", [b.resource],
                                     partial(self.plant.fail, b.resource, b.repair_s)))
        for c in f.crashes:
            self._at(c.at_s, partial(inject, "crash", [c.agent], partial(self.crash, c.agent)))
            self._at(c.at_s + c.down_s, partial(self.restart, c.agent))
        for h in f.hosts:
            members = [a for a in self.agents if self.cfg.host_of(a) == h.host]
            if h.action == "kill":
                self._at(h.at_s, partial(inject, "host_kill", members,
                                         partial(each, self.crash, members), host=h.host))
                self._at(h.at_s + h.duration_s, partial(each, self.restart, members))
            else:
                self._at(h.at_s, partial(inject, "host_pause", members,
                                         partial(each, self.pause, members), host=h.host))
                self._at(h.at_s + h.duration_s, partial(each, self.resume, members))
        for p in f.partitions:
            side = set(p.agents)
            self._at(p.at_s, partial(inject, "partition", sorted(side),
                                     partial(self.runner.partition, side),
                                     duration_s=p.duration_s))
            self._at(p.at_s + p.duration_s, partial(self.runner.heal, side))
        for s in f.clock_skew:
            self._at(s.at_s, partial(inject, "clock_skew", [s.agent],
                                     partial(self.skew.__setitem__, s.agent, s.offset_s),
                                     offset_s=s.offset_s))

    # -- supervisors (the console agent's API; in virtual time nobody calls these unless a
    #    test or an embedding program plays the supervisor) ---------------------------------------
    def acknowledge(self, escalation: str, user: str) -> None:
        assert self.console is not None
        self.runner.execute(CONSOLE_ID, self.console.acknowledge(escalation, user, self.env.now),
                            self.env.now)

    def shelve(self, escalation: str, user: str, reason: str, duration_s: float) -> None:
        assert self.console is not None
        self.runner.execute(CONSOLE_ID, self.console.shelve(escalation, user, reason,
                                                            duration_s, self.env.now),
                            self.env.now)

    def decide(self, escalation: str, user: str, option: str, reason: str = "") -> None:
        assert self.console is not None
        self.runner.execute(CONSOLE_ID, self.console.decide(escalation, user, option, reason,
                                                            self.env.now),
                            self.env.now)

    # -- running ------------------------------------------------------------------------------------
    def start(self) -> None:
        if self.faults is not None:
            self._schedule_faults(self.faults)
        for agent_id in self.runner.agents:
            self.runner.input(agent_id, Start, self.env.now)

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
        self._pace = (speed, look_every_s)      # the heartbeat's (escalation store)
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
            if store is not None:
                store.stopped(self._epoch_clock())   # the web console shows the run has ended

    def _look_outside(self, store: EscalationStore, at: float) -> None:
        """Publish the cell time; if someone else wrote the store (a queued decision, an
        acknowledgement, a shelve), have the console agent sync at the paced time ``at``."""
        assert self.console is not None
        store.heartbeat(at, self._epoch_clock(), *self._pace)   # for people, not the run
        head = store.audit_head()
        if head == self._store_head and not store.pending_decisions():
            return
        self._store_head = head
        console = self.console
        self._at(at, lambda: self.runner.execute(CONSOLE_ID, console.sync(self.env.now),
                                                  self.env.now))

    def _ticker(self, step_s: float, progress: Callable[[float, int, int], None]):
        # Progress ticks schedule events but touch no state: the event log is unchanged.
        while True:
            yield self.env.timeout(step_s)
            progress(self.env.now, self.completed, len(self.orders))


class _VirtualLink:
    """The virtual-time driver's four services to the runner (agents/runtime/runner.py)."""

    def __init__(self, cell: VirtualCell) -> None:
        self.cell = cell

    def send(self, sender: str, tos: Sequence[str], body: Body, conv: str,
             delays_s: Sequence[float]) -> None:
        self.cell._transmit(sender, tos, body, conv, delays_s)

    def wake_at(self, at: float, token: int) -> None:
        env, runner = self.cell.env, self.cell.runner
        env.timeout(max(0.0, at - env.now)).callbacks.append(
            lambda _e: runner.fire(token, env.now))

    def command(self, sender: str, cmd: Command) -> None:
        self.cell.plant.command(cmd)

    def record(self, event: str, fields: dict[str, Any]) -> None:
        self.cell.record(event, **fields)
