"""The runner: one sans-io executor of agent actions, under every driver.

Theory of operation
-------------------
Agents are sans-io (``agents/base.py``): inputs in, actions out.  Something
has to carry the actions out, and before this module four drivers each did
it their own way.  The runner is that something, written once; a driver
supplies only four things (:class:`Driver`):

* ``send(sender, tos, body, conv, delays_s)`` — seal ``body`` once for the
  addressees ``tos`` and deliver that envelope after each delay in
  ``delays_s`` (two delays: the network duplicated it);
* ``wake_at(at, token)`` — call :meth:`Runner.fire` with ``token`` at cell
  time ``at`` (one call per timer set: the driver needs no timer table,
  a stale token is simply ignored);
* ``command(sender, cmd)`` — a plant command;
* ``record(event, fields)`` — one line of the event log.

The driver, in turn, hands the runner what arrives: :meth:`Runner.deliver`
(a verified message), :meth:`Runner.plant_event`, :meth:`Runner.fire`.
Every entry point takes ``now``: the runner never reads a clock.

What the runner owns, so that no driver differs in it:

* **journal feeding** — each input is written ahead, then applied
  (:func:`agents.runtime.journal.feed`);
* **timers** — a table keyed by ``(agent, key)`` with a generation per
  arming, so a cancelled or replaced timer can never fire;
* **down and paused agents** — a crashed agent's inputs are dropped, a
  paused agent's are held and handed over, at the time of resumption,
  when it resumes; **crash, restart and replay** from the journal;
* **order completion** — ``order_completed``/``order_cancelled`` logs;
* **the decision log** — an optional :class:`~agents.runtime.recorder.Recorder`
  is handed every input with the actions it produced, and crashes and
  restarts (docs/flight-recorder.md); it reads, it never changes the run;
* **multicast grouping** — consecutive ``Send`` actions of one body object
  in one conversation (a call for proposals to every bidder) become one
  envelope for every addressee whose delivery is plain (one copy, no
  extra delay); an addressee the network delays, duplicates or loses is
  sent alone.  Only *consecutive* addressees are merged, so deliveries
  keep their order;
* **the network model** — one seeded :class:`NetworkModel` (latency,
  jitter, loss, duplication, reordering) plus partitions, drawn per
  addressee in a fixed order, with one reordering rule.  The virtual-time
  driver gives it the simulated network (base latency included); a real
  host gives it only the injected faults (its wire has its own latency).

Determinism: the runner iterates lists and insertion-ordered dicts only,
and draws from the RNG it is given, so a virtual-time run is byte for byte
the same for the same config and seed.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from agents.base import Agent, PlantEventIn
from agents.protocol.actions import Action, CancelTimer, Command, Log, Send, SetTimer
from agents.protocol.messages import Body, Message
from agents.runtime.journal import (
    Inbound,
    Input,
    Journal,
    PlantIn,
    Recovered,
    Start,
    Timer,
    feed,
    replay,
)
from agents.runtime.observe import Observer
from agents.runtime.recorder import Recorder

COMPLETION_EVENTS = ("order_completed", "order_cancelled")


class Driver(Protocol):
    """What a driver supplies to the runner (see the module docstring)."""

    def send(self, sender: str, tos: Sequence[str], body: Body, conv: str,
             delays_s: Sequence[float]) -> None: ...

    def wake_at(self, at: float, token: int) -> None: ...

    def command(self, sender: str, cmd: Command) -> None: ...

    def record(self, event: str, fields: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class NetworkModel:
    """Seeded message delivery: latency, jitter, loss, duplication, reordering.

    One rule for every driver: per addressee, a loss draw, a duplication
    draw, then per copy a jitter draw and a reordering draw; a reordered
    copy waits up to five latencies more (at least 0.1 ms: reordering must
    reorder something even at zero latency).
    """

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

    def combined(self, other: NetworkModel) -> NetworkModel:
        """This network with ``other``'s faults on top (a fault scenario on a cell's network)."""
        return NetworkModel(self.latency_s + other.latency_s, self.jitter_s + other.jitter_s,
                            1 - (1 - self.loss) * (1 - other.loss),
                            max(self.duplication, other.duplication),
                            max(self.reorder, other.reorder))


PERFECT = NetworkModel(latency_s=0.0)
"""No faults: every message goes once, at once (a real host's wire adds its own latency)."""


@dataclass
class RunnerStats:
    """What the runner counts (per addressee, like the bus)."""

    messages_sent: int = 0
    messages_lost: int = 0
    sent_by_type: Counter[str] = field(default_factory=Counter)
    multicast_groups: int = 0
    dropped_agent_down: int = 0
    dropped_partition: int = 0
    restarts: int = 0


Make = Callable[[float], Input]


class Runner:
    """The agents of one driver, and everything that carries out their actions."""

    def __init__(self, agents: dict[str, Agent], driver: Driver, *,
                 journal: Journal | None = None, unjournalled: Iterable[str] = (),
                 network: NetworkModel = PERFECT, rng: random.Random | None = None,
                 orders: Iterable[str] = (),
                 rebuild: Callable[[str], Agent] | None = None,
                 on_agent_error: Callable[[str, Exception], None] | None = None,
                 stats: RunnerStats | None = None) -> None:
        """``orders``: the order agents whose completion is counted.  ``rebuild``: a
        fresh agent (same config, same seed) for :meth:`restart`.  ``on_agent_error``:
        contain an agent's exception (a host must survive a bug in one agent); without
        it, the exception propagates."""
        self.agents = agents
        self.driver = driver
        self.journal = journal
        self.unjournalled = frozenset(unjournalled)
        self.network = network
        self.rng = rng or random.Random(0)
        self.orders = list(orders)
        self.rebuild = rebuild
        self.on_agent_error = on_agent_error
        self.stats = stats if stats is not None else RunnerStats()
        self.timers: dict[tuple[str, str], int] = {}     # (agent, key) -> armed token
        self._due: dict[int, tuple[str, str]] = {}       # token -> (agent, key)
        self._tokens = itertools.count(1)                # never reused
        self.down: set[str] = set()
        self.paused: dict[str, list[Make]] = {}          # agent -> inputs held back
        self.cut: list[set[str]] = []                    # active partitions (agents cut off)
        self.completed: list[str] = []                   # orders, in completion order
        self.observer: Observer | None = None            # metrics hooks
        self.recorder: Recorder | None = None            # the flight recorder (decision log)
        self.listeners: list[Callable[[str], None]] = [] # called with each completed order

    @property
    def all_done(self) -> bool:
        return len(self.completed) >= len(self.orders)

    # -- inputs -----------------------------------------------------------------------------
    def start(self, agent_id: str, now: float) -> None:
        self.input(agent_id, Start, now)

    def deliver(self, msg: Message, now: float) -> None:
        """A verified message for a local agent."""
        self.input(msg.to, lambda t: Inbound(msg, t), now)

    def plant_event(self, ev: PlantEventIn, now: float) -> None:
        if ev.resource in self.agents:
            self.input(ev.resource, lambda t: PlantIn(ev, t), now)

    def fire(self, token: int, now: float) -> None:
        """The driver's wake-up for ``token``: the timer fires unless it was replaced,
        cancelled or its agent crashed since."""
        k = self._due.pop(token, None)
        if k is None or self.timers.get(k) != token:
            return
        del self.timers[k]
        self.input(k[0], lambda t: Timer(k[1], t), now)

    def input(self, agent_id: str, make: Make, now: float) -> None:
        """Hand an input to an agent: dropped while it is down, held while it is paused."""
        if agent_id in self.down:
            self.stats.dropped_agent_down += 1
            return
        held = self.paused.get(agent_id)
        if held is not None:
            held.append(make)
            return
        agent = self.agents[agent_id]
        journal = None if agent_id in self.unjournalled else self.journal
        inp = make(now)
        try:
            actions = feed(agent, inp, journal)
        except Exception as exc:
            if self.on_agent_error is None:
                raise
            self.on_agent_error(agent_id, exc)
            return
        self.execute(agent_id, actions, now, inp)

    # -- carrying out actions ---------------------------------------------------------------
    def execute(self, agent_id: str, actions: list[Action], now: float,
                cause: Input | None = None) -> None:
        """Carry out ``actions`` of ``agent_id``; ``cause``: the input they answer (None
        when a driver hands over actions of its own, a supervisor's)."""
        if self.observer is not None:
            self.observer.on_actions(agent_id, actions)
        if self.recorder is not None:
            self.recorder.on_decision(agent_id, cause, actions, now, self.agents.get(agent_id))
        i, n = 0, len(actions)
        while i < n:
            act = actions[i]
            i += 1
            if isinstance(act, Send):
                tos = [act.to]
                while i < n:      # consecutive Sends of one body: one multicast candidate
                    nxt = actions[i]
                    if not (isinstance(nxt, Send) and nxt.body is act.body
                            and nxt.conv == act.conv):
                        break
                    tos.append(nxt.to)
                    i += 1
                self._send(agent_id, tos, act.body, act.conv)
            elif isinstance(act, SetTimer):
                self.set_timer(agent_id, act.key, act.at)
            elif isinstance(act, CancelTimer):
                self.timers.pop((agent_id, act.key), None)
            elif isinstance(act, Command):
                self.driver.command(agent_id, act)
            elif isinstance(act, Log):
                self.driver.record(act.event, act.fields)
                if act.event in COMPLETION_EVENTS:
                    order = str(act.fields.get("order", agent_id))
                    self.completed.append(order)
                    for listener in self.listeners:
                        listener(order)

    def _send(self, sender: str, tos: list[str], body: Body, conv: str) -> None:
        """The network's fate per addressee, in order; plain deliveries merged in runs."""
        stats = self.stats
        run: list[str] = []         # consecutive addressees with the plain delay
        plain = self.network.latency_s
        for to in tos:
            stats.messages_sent += 1
            stats.sent_by_type[body.TYPE] += 1
            if self.cut and any((sender in c) != (to in c) for c in self.cut):
                stats.dropped_partition += 1
                continue
            delays = self.network.deliveries(self.rng)
            if not delays:
                stats.messages_lost += 1
                continue
            if len(delays) == 1 and delays[0] == plain:
                run.append(to)
                continue
            if run:
                self._transmit(sender, run, body, conv, (plain,))
                run = []
            self._transmit(sender, [to], body, conv, tuple(delays))
        if run:
            self._transmit(sender, run, body, conv, (plain,))

    def _transmit(self, sender: str, tos: list[str], body: Body, conv: str,
                  delays: tuple[float, ...]) -> None:
        if len(tos) > 1:
            self.stats.multicast_groups += 1
        self.driver.send(sender, tos, body, conv, delays)

    def set_timer(self, agent_id: str, key: str, at: float) -> None:
        token = next(self._tokens)
        k = (agent_id, key)
        self.timers[k] = token
        self._due[token] = k
        self.driver.wake_at(at, token)

    # -- faults -----------------------------------------------------------------------------
    def crash(self, agent_id: str) -> bool:
        """The agent's process state is gone: inputs are dropped until :meth:`restart`.
        False if it was down already."""
        if agent_id in self.down:
            return False
        self.paused.pop(agent_id, None)      # a paused process that is killed loses its inputs
        self.down.add(agent_id)
        for k in [k for k in self.timers if k[0] == agent_id]:
            del self.timers[k]
        self.driver.record("agent_crash", {"agent": agent_id})
        if self.recorder is not None:
            self.recorder.on_runtime("crash", agent_id, None)
        return True

    def recover(self, agent_id: str, now: float, *, fresh: Agent | None = None) -> Recovered:
        """Rebuild the agent from its journal, re-arm its timers and wake it
        (``Recover``, or ``Start`` if it never started)."""
        assert self.journal is not None, "recovering an agent needs a journal"
        if fresh is None:
            assert self.rebuild is not None, "restarting an agent needs a rebuild function"
            fresh = self.rebuild(agent_id)
        records = list(self.journal.records(agent_id))
        rec = replay(fresh, records)
        self.agents[agent_id] = fresh
        self.driver.record("agent_restart", {"agent": agent_id, "inputs": rec.inputs})
        if self.recorder is not None:
            self.recorder.on_runtime("restart", agent_id, now, records)
        for key, at in rec.pending():
            self.set_timer(agent_id, key, at)
        self.input(agent_id, rec.resume, now)
        return rec

    def restart(self, agent_id: str, now: float) -> Recovered | None:
        """A crashed agent comes back (None if it was not down)."""
        if agent_id not in self.down:
            return None
        self.down.discard(agent_id)
        self.stats.restarts += 1
        return self.recover(agent_id, now)

    def pause(self, agent_id: str) -> None:
        """``SIGSTOP``: inputs are held (sockets and timers queue up) until :meth:`resume`."""
        if agent_id not in self.down and agent_id not in self.paused:
            self.paused[agent_id] = []
            self.driver.record("agent_pause", {"agent": agent_id})
            if self.recorder is not None:
                self.recorder.on_runtime("pause", agent_id, None)

    def resume(self, agent_id: str, now: float) -> None:
        held = self.paused.pop(agent_id, None)
        if held is None:
            return
        self.driver.record("agent_resume", {"agent": agent_id, "held": len(held)})
        if self.recorder is not None:
            self.recorder.on_runtime("resume", agent_id, now)
        for make in held:
            self.input(agent_id, make, now)

    def partition(self, side: set[str]) -> None:
        self.cut.append(side)

    def heal(self, side: set[str]) -> None:
        if side in self.cut:
            self.cut.remove(side)
            self.driver.record("partition_healed", {"agents": sorted(side)})


class OnRunner:
    """For a driver that keeps its runner in ``self.runner``: the runner's state a caller
    of the driver reads (metrics set :attr:`observer`; tests and reports read the rest)."""

    runner: Runner

    @property
    def observer(self) -> Observer | None:
        """Metrics hooks (agents/runtime/observe.py), called by the runner and the driver."""
        return self.runner.observer

    @observer.setter
    def observer(self, value: Observer | None) -> None:
        self.runner.observer = value

    @property
    def down(self) -> set[str]:
        """Crashed agents, not yet restarted."""
        return self.runner.down
