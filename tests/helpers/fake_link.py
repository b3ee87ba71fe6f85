"""A fake link and a manual clock for driving sans-io agents in tests.

Theory of operation
-------------------
:class:`FakeLink` is the thinnest driver of the production
:class:`~agents.runtime.runner.Runner` (agents/runtime/runner.py): every
input goes through the runner, which carries out the agents' actions exactly
as under the virtual-time driver and the ZeroMQ host (multicast grouping,
timers with generations, completion).  The link supplies the runner's four
driver services, minus the envelope codec and SimPy:

* send: each addressee gets a
  :class:`~agents.protocol.messages.Message` (header filled in: sender,
  conv, epoch 1, a per-sender ``seq``, ``ts`` = now) that joins the
  in-flight list.  *The test* decides what happens to it next:
  :meth:`deliver` (any index, so reordering is free), :meth:`drop`, or leave
  it.  Agents in :attr:`silent` neither send nor receive: their messages are
  dropped (a partitioned agent: cut off the network, still running and
  still hearing its plant), and so is every message the ``lose`` predicate
  picks at send time.
* wake-at: an agenda entry; the clock never moves by itself —
  :meth:`advance` moves it and fires whatever falls due, in time order (ties
  in the order they were set); a timer the runner no longer holds armed
  (cancelled, replaced) is skipped.
* plant command: a tiny fake plant that answers ``start_operation`` with
  ``operation_done`` after ``duration_s`` and ``move`` with ``arrived``
  (both on the same agenda); ``abort_operation`` removes the pending answer.
  :attr:`quality` decides ok/scrap per finished operation.
* record: kept in :attr:`logs`.

Everything observable is recorded: :attr:`log` is the readable sequence
(``"o1>m1 cfp"`` per sent message, ``" (lost)"`` when it was dropped at
send time, and the names of selected ``Log`` events), :attr:`trace` keeps
every input with the actions it produced (the runner's observer hook), so
tests can assert on causes ("this ``accept`` was produced by the deadline
timer"); :attr:`observers` see each such step right after its actions were
carried out.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agents.base import Agent, PlantEventIn
from agents.protocol.actions import Action, Command, Log
from agents.protocol.messages import Body, Message
from agents.runtime.journal import Inbound, Input, PlantIn, Start, Timer
from agents.runtime.runner import Runner

LOGGED_EVENTS = frozenset({"order_completed", "no_proposals", "non_routine", "lease_expired",
                           "reroute", "scrap"})


@dataclass
class Sent:
    """One ``Send`` as carried out: when, by whom, in reaction to what, and its fate."""

    at: float
    msg: Message
    cause: tuple[str, str]   # ("timer", key) | ("message", type) | ("plant", event) | ("start", "")
    fate: str = "in_flight"         # in_flight | delivered | dropped
    delivered_at: float | None = None


@dataclass
class Step:
    """One input to one agent and the actions it returned."""

    at: float
    agent: str
    cause: tuple[str, str]
    actions: list[Action]
    input: Any = None


@dataclass(order=True)
class _Due:
    at: float
    seq: int
    kind: str = field(compare=False)          # "timer" | "plant"
    agent: str = field(compare=False)
    key: str = field(compare=False)           # timer: the runner's token; plant: the task
    event: PlantEventIn | None = field(compare=False, default=None)


class FakeLink:
    """Routes the actions of a few sans-io agents; the test holds the clock and the wire."""

    def __init__(self, agents: Iterable[Agent], *, now: float = 0.0,
                 quality: Callable[[str, str], str] | None = None,
                 logged_events: Iterable[str] = LOGGED_EVENTS,
                 log_heartbeats: bool = False,
                 lose: Callable[[Message], bool] | None = None) -> None:
        self.agents: dict[str, Agent] = {a.id: a for a in agents}
        self.now = now
        self.quality = quality or (lambda resource, task: "ok")
        self.logged_events = frozenset(logged_events)
        self.log_heartbeats = log_heartbeats
        self.lose = lose or (lambda msg: False)
        self.in_flight: list[Sent] = []
        self.sent: list[Sent] = []
        self.trace: list[Step] = []
        self.log: list[str] = []
        self.logs: list[tuple[float, str, Log]] = []
        self.commands: list[tuple[float, Command]] = []
        self.silent: set[str] = set()
        self.observers: list[Callable[[Step], None]] = []   # called after each input's actions
        self._agenda: dict[tuple[str, str, str], _Due] = {}
        self._seq = itertools.count()
        self._msg_seq: dict[str, itertools.count[int]] = {}
        self.runner = Runner(self.agents, self)     # the production executor
        self.runner.observer = self
        self._cause: tuple[str, str] = ("start", "")
        self._input: Any = None
        self._step: Step | None = None

    # -- running agents -------------------------------------------------------------------
    def start(self) -> FakeLink:
        for agent_id in list(self.agents):
            self._run(agent_id, ("start", ""), Start)
        return self

    def _run(self, agent_id: str, cause: tuple[str, str], make: Callable[[float], Input],
             input: Any = None, *, token: int | None = None) -> list[Action]:
        """One input through the runner; the step it made (or none: a stale timer)."""
        self._cause, self._input, self._step = cause, input, None
        if token is None:
            self.runner.input(agent_id, make, self.now)
        else:
            self.runner.fire(token, self.now)
        step = self._step
        if step is None:
            return []
        for observe in self.observers:
            observe(step)
        return step.actions

    # the runner's observer hook: the actions of the input being run, before they are
    # carried out
    def on_actions(self, agent: str, actions: Sequence[Action]) -> None:
        self._step = Step(self.now, agent, self._cause, list(actions), self._input)
        self.trace.append(self._step)

    def on_record(self, line: Mapping[str, Any]) -> None:
        return None

    # -- the runner's driver services ---------------------------------------------------------
    def send(self, sender: str, tos: Sequence[str], body: Body, conv: str,
             delays_s: Sequence[float]) -> None:
        for to in tos:
            self._send(sender, to, body, conv)

    def wake_at(self, at: float, token: int) -> None:
        agent, _key = self.runner._due[token]
        self._schedule("timer", agent, str(token), at)

    def command(self, sender: str, cmd: Command) -> None:
        self._command(cmd)

    def record(self, event: str, fields: dict[str, Any]) -> None:
        step = self._step
        agent = step.agent if step is not None else ""
        act = Log(event, fields)
        self.logs.append((self.now, agent, act))
        if event in self.logged_events:
            self.log.append(event)

    def _send(self, sender: str, to: str, body: Body, conv: str) -> None:
        seq = next(self._msg_seq.setdefault(sender, itertools.count(1)))
        n = next(self._seq)
        msg = Message(sender=sender, to=to, conv=conv, id=n.to_bytes(16, "big"),
                      epoch=1, seq=seq, ts=self.now, body=body)
        sent = Sent(self.now, msg, self._cause)
        self.sent.append(sent)
        lost = sender in self.silent or to in self.silent or self.lose(msg)
        if msg.type != "heartbeat" or self.log_heartbeats:
            self.log.append(f"{sender}>{to} {msg.type}" + (" (lost)" if lost else ""))
        if lost:
            sent.fate = "dropped"
        else:
            self.in_flight.append(sent)

    def _schedule(self, kind: str, agent: str, key: str, at: float,
                  event: PlantEventIn | None = None) -> None:
        self._agenda[(kind, agent, key)] = _Due(max(at, self.now), next(self._seq), kind, agent,
                                                key, event)

    def _armed(self, due: _Due) -> bool:
        """A plant answer, or a timer the runner still holds (not cancelled or replaced)."""
        if due.kind != "timer":
            return True
        token = int(due.key)
        k = self.runner._due.get(token)
        return k is not None and self.runner.timers.get(k) == token

    def _prune(self) -> None:
        for k in [k for k, due in self._agenda.items() if not self._armed(due)]:
            del self._agenda[k]

    # -- the fake plant -----------------------------------------------------------------------
    def _command(self, cmd: Command) -> None:
        self.commands.append((self.now, cmd))
        duration = float(cmd.args.get("duration_s", 0.0))
        if cmd.command == "start_operation":
            ev = PlantEventIn("operation_done", cmd.resource, cmd.task,
                              {"quality": self.quality(cmd.resource, cmd.task)})
            self._schedule("plant", cmd.resource, cmd.task, self.now + duration, ev)
        elif cmd.command == "move":
            ev = PlantEventIn("arrived", cmd.resource, cmd.task,
                              {"at": cmd.args.get("destination", "")})
            self._schedule("plant", cmd.resource, cmd.task, self.now + duration, ev)
        elif cmd.command == "abort_operation":
            self._agenda.pop(("plant", cmd.resource, cmd.task), None)

    def plant_event(self, resource: str, event: str, task: str = "",
                    data: dict[str, Any] | None = None) -> list[Action]:
        """Inject a plant event (``fault``, ``repaired`` …) now."""
        ev = PlantEventIn(event, resource, task, data)
        return self._run(resource, ("plant", event), lambda t: PlantIn(ev, t), ev)

    # -- the wire -------------------------------------------------------------------------------
    def deliver(self, i: int = 0) -> list[Action]:
        """Deliver in-flight message ``i`` (0 = the oldest) now."""
        sent = self.in_flight.pop(i)
        sent.fate, sent.delivered_at = "delivered", self.now
        msg = sent.msg
        if msg.to in self.silent:           # went silent while this was in flight
            sent.fate = "dropped"
            return []
        return self._run(msg.to, ("message", msg.type), lambda t: Inbound(msg, t), msg)

    def drop(self, i: int = 0) -> Sent:
        sent = self.in_flight.pop(i)
        sent.fate = "dropped"
        return sent

    def deliver_all(self, *, limit: int = 10_000) -> None:
        """Deliver until nothing is in flight (FIFO), without moving the clock."""
        for _ in range(limit):
            if not self.in_flight:
                return
            self.deliver(0)
        raise AssertionError(f"still {len(self.in_flight)} messages in flight after {limit}")

    def silence(self, agent: str) -> None:
        """From now on ``agent`` neither sends nor receives (a network partition)."""
        self.silent.add(agent)

    def heal(self, agent: str) -> None:
        self.silent.discard(agent)

    def crash(self, agent: str) -> None:
        """``agent`` dies: silent for good, its timers gone, its plant work stopped."""
        self.silence(agent)
        self.runner.crash(agent)
        for key in [k for k in self._agenda if k[1] == agent]:
            del self._agenda[key]

    # -- the clock ------------------------------------------------------------------------------
    def next_due_at(self) -> float | None:
        self._prune()
        return min(self._agenda.values()).at if self._agenda else None

    def timer_at(self, agent: str, key: str) -> float | None:
        token = self.runner.timers.get((agent, key))
        due = None if token is None else self._agenda.get(("timer", agent, str(token)))
        return None if due is None else due.at

    def fire_next(self) -> list[Action]:
        """Move the clock to the earliest agenda entry and fire it."""
        self._prune()
        due = min(self._agenda.values())
        del self._agenda[(due.kind, due.agent, due.key)]
        self.now = max(self.now, due.at)
        if due.kind == "timer":
            token = int(due.key)
            _, key = self.runner._due[token]
            return self._run(due.agent, ("timer", key), lambda t: Timer(key, t), token=token)
        ev = due.event
        assert ev is not None       # a silent agent still hears its own plant
        return self._run(due.agent, ("plant", ev.event), lambda t: PlantIn(ev, t), ev)

    def advance(self, dt: float) -> None:
        """Move the clock ``dt`` seconds, firing what falls due (messages stay in flight)."""
        target = self.now + dt
        while (nxt := self.next_due_at()) is not None and nxt <= target:
            self.fire_next()
        self.now = target

    def run(self, until: float, *, max_steps: int = 100_000) -> None:
        """Zero-latency FIFO delivery, timers in time order, until the clock reaches ``until``."""
        for _ in range(max_steps):
            if self.in_flight:
                self.deliver(0)
                continue
            nxt = self.next_due_at()
            if nxt is None or nxt > until:
                self.now = max(self.now, until)
                return
            self.fire_next()
        raise AssertionError(f"no quiescence after {max_steps} steps (t={self.now})")

    def run_until(self, predicate: Callable[[], bool], *, limit_at: float,
                  max_steps: int = 100_000) -> None:
        """Like :meth:`run`, but stop as soon as ``predicate()`` holds."""
        for _ in range(max_steps):
            if predicate():
                return
            if self.in_flight:
                self.deliver(0)
                continue
            nxt = self.next_due_at()
            if nxt is None or nxt > limit_at:
                raise AssertionError(f"condition not reached by t={limit_at}")
            self.fire_next()
        raise AssertionError(f"condition not reached after {max_steps} steps")

    # -- queries ---------------------------------------------------------------------------------
    def sent_of(self, type_: str, *, sender: str | None = None,
                to: str | None = None) -> list[Sent]:
        return [s for s in self.sent if s.msg.type == type_
                and (sender is None or s.msg.sender == sender) and (to is None or s.msg.to == to)]

    def log_events(self, event: str) -> list[tuple[float, Log]]:
        return [(t, lg) for t, _, lg in self.logs if lg.event == event]
