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
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import simpy

from agents.base import Agent, PlantEventIn
from agents.factory import build_agents, roles_of
from agents.order import OrderAgent
from agents.protocol.actions import Action, CancelTimer, Command, Log, Send, SetTimer
from security.envelope import Opener, Sealer
from security.errors import ConfigurationError, Rejected
from security.keystore import EphemeralCell, ephemeral_cell
from security.replay import ReplayGuard

from .plant import EmbeddedPlant, MachineSpec

if TYPE_CHECKING:
    from ops.config.model import CellConfig


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


class VirtualCell:
    """All agents of a cell, the plant and the network in virtual time."""

    def __init__(self, cfg: CellConfig, *, seed: int | None = None,
                 order_strategy: str | None = None, resource_strategy: str | None = None,
                 network: NetworkModel | None = None, breakdowns: bool = True,
                 keys: EphemeralCell | None = None, clock_base_at: float = 0.0) -> None:
        self.cfg = cfg
        self.seed = cfg.sim.seed if seed is None else seed
        self.env = simpy.Environment()
        self.stats = RunStats()
        self.events: list[str] = []
        n = cfg.sim.network
        self.network = network or NetworkModel(n.latency_s, n.jitter_s, n.loss, n.duplication,
                                               n.reorder)
        self._rng_net = random.Random(f"{self.seed}/network")
        self._rng_ids = random.Random(f"{self.seed}/msgid")
        self.agents: dict[str, Agent] = build_agents(cfg, self.seed,
                                                     order_strategy_name=order_strategy,
                                                     resource_strategy_name=resource_strategy)
        if keys is None:
            keys = ephemeral_cell(roles_of(cfg), seed=f"autocell/{cfg.cell}/{self.seed}".encode())
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
        self.sealers = {a: Sealer(a, keys.keys[a], epoch=1, random_bytes=self._random_bytes)
                        for a in self.agents}
        self._timers: dict[tuple[str, str], int] = {}
        self._timer_gen = itertools.count(1)
        self.orders = [a for a in self.agents.values() if isinstance(a, OrderAgent)]
        self.completed = 0
        self._all_done = self.env.event()
        self.plant = EmbeddedPlant(
            self.env,
            [MachineSpec(m.id, m.mtbf_s, m.mttr_s, m.scrap_rate, m.power_kw.idle, m.power_kw.busy)
             for m in cfg.machines],
            [r.id for r in cfg.robots], seed=self.seed, emit=self._plant_event,
            record=self.record, sensor_interval_s=cfg.sim.sensor_interval_s,
            breakdowns=breakdowns)
        self.wall_s = 0.0
        self.ended_by = ""

    # -- event log ------------------------------------------------------------------------------
    def record(self, event: str, **fields: Any) -> None:
        line = {"t": round(self.env.now, 9), "ev": event, **fields}
        self.events.append(json.dumps(line, sort_keys=True, separators=(",", ":")))

    def event_log_sha256(self) -> str:
        h = hashlib.sha256()
        for line in self.events:
            h.update(line.encode())
            h.update(b"\n")
        return h.hexdigest()

    # -- carrying out actions ---------------------------------------------------------------------
    def _random_bytes(self, n: int) -> bytes:
        return self._rng_ids.getrandbits(8 * n).to_bytes(n, "big")

    def _execute(self, agent: Agent, actions: list[Action]) -> None:
        now = self.env.now
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
                if act.event == "order_completed":
                    self.completed += 1
                    if self.completed == len(self.orders) and not self._all_done.triggered:
                        self._all_done.succeed()

    def _send(self, sender: str, act: Send, now: float) -> None:
        frames = self.sealers[sender].seal(act.to, act.body, now + self.clock_base_at, act.conv)
        self.stats.messages_sent += 1
        self.stats.sent_by_type[act.body.TYPE] += 1
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
            return
        self.stats.verified += 1
        agent = self.agents.get(msg.to)
        if agent is None:
            self.stats.rejected["misdirected"] += 1
            return
        self.stats.messages_delivered += 1
        self._execute(agent, agent.on_message(msg, now))

    def _set_timer(self, agent: Agent, key: str, at: float) -> None:
        k = (agent.id, key)
        gen = next(self._timer_gen)   # never reused: a cancelled timeout can't match a new timer
        self._timers[k] = gen

        def fire(_e: Any) -> None:
            if self._timers.get(k) == gen:
                del self._timers[k]
                self._execute(agent, agent.on_timer(key, self.env.now))

        self.env.timeout(max(0.0, at - self.env.now)).callbacks.append(fire)

    def _plant_event(self, ev: PlantEventIn) -> None:
        agent = self.agents.get(ev.resource)
        if agent is not None:
            self._execute(agent, agent.on_plant_event(ev, self.env.now))

    # -- running ------------------------------------------------------------------------------------
    def start(self) -> None:
        for agent in self.agents.values():
            self._execute(agent, agent.on_start(self.env.now))

    def run(self, until: float | None = None,
            progress: Callable[[float, int, int], None] | None = None) -> None:
        """Run until every order is completed, or until simulated time ``until``.

        Without ``until`` the run stops at a safety horizon — 20× the larger of
        the latest due date and the cell's total processing work — so a cell
        that cannot finish still ends; orders unfinished then count as lost.
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
        self.env.run(until=simpy.AnyOf(self.env, [self._all_done, self.env.timeout(limit)]))
        self.ended_by = ("completed" if self._all_done.triggered
                         else "until" if until is not None else "horizon")
        if progress is not None:
            progress(self.env.now, self.completed, len(self.orders))
        self.wall_s = time.perf_counter() - t0

    def _ticker(self, step_s: float, progress: Callable[[float, int, int], None]):  # noqa: ANN202
        # Progress ticks schedule events but touch no state: the event log is unchanged.
        while True:
            yield self.env.timeout(step_s)
            progress(self.env.now, self.completed, len(self.orders))
