"""The cap invariant under a Hypothesis-driven stream of starts, through the real protocol.

The lease table alone is driven by Hypothesis in tests/test_energy_leases.py; here the
stream goes through the real halves of the protocol: a :class:`PowerClient` per machine
(agents/energy/client.py) and the :class:`EnergyManagerAgent` (agents/energy/manager.py),
over a network that loses, duplicates and delays messages.  A small event loop in
virtual time plays the machines: each runs its tasks one after the other, starting one
only when its client's ``gate`` says the lease is held (at once on the grant, as
agents/machine.py does), and releasing it through ``reconcile`` when done.  The plant's
events it writes (``op_start``/``op_done``) are checked with the run's own invariant,
:func:`sim_bridge.invariants.cap_never_exceeded`.

Deterministic for CI: ``derandomize=True`` and every network fate from a seeded
:class:`random.Random` drawn by Hypothesis.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from agents.base import Timing
from agents.cell.energy import PowerDraw
from agents.cell.specs import EnergySpec, KpiSpec, MachineKpiSpec, OrderSpec, PowerModel
from agents.cell.tariff import TimeOfUse
from agents.energy.client import PowerClient
from agents.energy.manager import ENERGY_MANAGER_ID, EnergyManagerAgent
from agents.energy.plan import needs_of
from agents.protocol.actions import Action, Log, Send, SetTimer
from agents.protocol.messages import Message, PowerGrant
from sim_bridge.invariants import cap_never_exceeded

from helpers.energy_tariffs import day_night

CAPS = ("mill", "drill")
DRAWS = [PowerDraw.model_validate(d) for d in (
    {"idle": 1.0, "busy": 6.0, "setup": 2.0, "busy_by_capability": {"drill": 3.5}},
    {"idle": 0.5, "busy": 4.0},
    {"idle": 1.5, "busy": 8.0, "setup": 3.0},
)]
GRACE_S = 15.0
RETRY_S = 2.0


@dataclass
class _Machine:
    id: str
    client: PowerClient
    queue: list[tuple[str, str, float]] = field(default_factory=list)  # task, cap, duration
    running: str = ""


class _Loop:
    """Machines, the manager and a lossy network, in virtual time."""

    def __init__(self, cap_kw: float, loss: float, dup: float, seed: int) -> None:
        self.rng = random.Random(seed)
        self.loss, self.dup = loss, dup
        self.now = 0.0
        self.heap: list[tuple[float, int, str, Any]] = []
        self.seq = 0
        self.timers: dict[tuple[str, str], float] = {}
        self.log: list[dict[str, Any]] = []
        budget = cap_kw - sum(d.idle for d in DRAWS)
        self.manager = EnergyManagerAgent(ENERGY_MANAGER_ID, timing=Timing(),
                                          budget_kw=budget, cap_kw=cap_kw)
        self.machines = {f"m{i}": _Machine(f"m{i}", PowerClient(
            f"m{i}", ENERGY_MANAGER_ID, needs_of(d, CAPS, GRACE_S), RETRY_S))
            for i, d in enumerate(DRAWS)}

    def at(self, t: float, kind: str, what: Any) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (t, self.seq, kind, what))

    def act(self, who: str, actions: list[Action]) -> None:
        for a in actions:
            if isinstance(a, Send):
                copies = 0 if self.rng.random() < self.loss else 1
                copies += 1 if copies and self.rng.random() < self.dup else 0
                for _ in range(copies):      # delays of 1 to 200 ms, so copies may reorder
                    self.at(self.now + self.rng.uniform(0.001, 0.2), "deliver", (who, a))
            elif isinstance(a, SetTimer):
                self.timers[(who, a.key)] = a.at
                self.at(a.at, "timer", (who, a.key))
            elif isinstance(a, Log):
                self.log.append({"t": self.now, "ev": a.event, **a.fields})

    def try_start(self, m: _Machine) -> None:
        if m.running or not m.queue:
            return
        task, cap, duration = m.queue[0]
        wait = m.client.gate(task, 1, cap, duration, self.now)
        if wait is not None:
            self.act(m.id, wait)
            return
        m.queue.pop(0)
        m.running = task
        self.log.append({"t": self.now, "ev": "op_start", "machine": m.id, "task": task,
                         "order": task.split("/")[0]})
        self.at(self.now + duration, "done", m.id)

    def run(self) -> None:
        for m in self.machines.values():
            self.act(m.id, m.client.reconcile([]))
        while self.heap:
            self.now, _, kind, what = heapq.heappop(self.heap)
            if kind == "want":
                mid, task, cap, duration = what
                self.machines[mid].queue.append((task, cap, duration))
                self.try_start(self.machines[mid])
            elif kind == "done":
                m = self.machines[what]
                self.log.append({"t": self.now, "ev": "op_done", "machine": m.id,
                                 "task": m.running, "quality": "ok"})
                m.running = ""
                self.act(m.id, m.client.reconcile(
                    [(m.queue[0][0], 1)] if m.queue else []))
                self.try_start(m)
            elif kind == "timer":
                who, key = what
                if self.timers.get((who, key)) != self.now:
                    continue                                  # replaced by a later one
                del self.timers[(who, key)]
                if who == ENERGY_MANAGER_ID:
                    self.act(who, self.manager.on_timer(key, self.now))
                else:
                    self.act(who, self.machines[who].client.on_retry(self.now))
            else:                                             # a message arrives
                sender, send = what
                msg = Message(sender, send.to, send.conv, b"id", 1, 1, self.now, send.body)
                if send.to == ENERGY_MANAGER_ID:
                    self.act(send.to, self.manager.on_message(msg, self.now))
                elif isinstance(send.body, PowerGrant):
                    m = self.machines[send.to]
                    news, out = m.client.on_grant(send.body, self.now)
                    keep = [(m.queue[0][0], 1)] if m.queue and not m.running else []
                    self.act(m.id, out + m.client.reconcile(
                        keep + ([(m.running, 1)] if m.running else [])))
                    if news:
                        self.try_start(m)


def _spec(cap_kw: float, tasks: list[str], caps: list[str]) -> KpiSpec:
    return KpiSpec(
        machines={f"m{i}": MachineKpiSpec(d.idle, d.busy, power=PowerModel.from_draw(d))
                  for i, d in enumerate(DRAWS)},
        orders={t.split("/")[0]: OrderSpec(1, (c,)) for t, c in zip(tasks, caps)},
        energy=EnergySpec(TOU, peak_cap_kw=cap_kw))


TOU: TimeOfUse = day_night("mon 06:00")

_starts = st.lists(st.tuples(
    st.integers(0, len(DRAWS) - 1),              # machine
    st.sampled_from(CAPS),                       # capability
    st.floats(0.0, 300.0, allow_nan=False),      # when the task becomes ready
    st.floats(1.0, 120.0, allow_nan=False),      # duration
), min_size=1, max_size=25)


@given(_starts, st.floats(0.0, 1.0), st.floats(0.0, 0.3), st.floats(0.0, 0.3),
       st.integers(0, 2**16))
@settings(max_examples=60, deadline=None, derandomize=True)
def test_a_stream_of_starts_through_clients_and_manager_keeps_the_cap(
        starts: list[tuple[int, str, float, float]], room: float, loss: float, dup: float,
        seed: int) -> None:
    idle = sum(d.idle for d in DRAWS)
    biggest = max(max(needs_of(d, CAPS, 0.0).above_idle_kw.values()) for d in DRAWS)
    # from a cap only the hungriest operation fits under, to one nearly all fit under
    cap_kw = idle + biggest + room * 12.0
    loop = _Loop(cap_kw, loss, dup, seed)
    tasks, caps = [], []
    for k, (mi, cap, ready_at, duration) in enumerate(starts):
        task = f"o{k}/0"
        tasks.append(task)
        caps.append(cap)
        loop.at(ready_at, "want", (f"m{mi}", task, cap, duration))
    loop.run()
    starts_logged = [e for e in loop.log if e["ev"] == "op_start"]
    # every task ran, once, despite lost and duplicated messages
    assert sorted(e["task"] for e in starts_logged) == sorted(tasks)
    assert cap_never_exceeded(loop.log, _spec(cap_kw, tasks, caps)) == []
    assert loop.manager.budget.in_use_kw <= cap_kw - idle + 1e-9


def test_the_harness_sees_a_broken_gate() -> None:
    """The check bites: machines that start without waiting for their lease blow the cap
    of the same stream (three hungry operations at once)."""
    cap_kw = sum(d.idle for d in DRAWS) + 7.0
    tasks = ["o0/0", "o1/0", "o2/0"]
    log = [{"t": 0.0, "ev": "op_start", "machine": f"m{i}", "task": t, "order": t[:2]}
           for i, t in enumerate(tasks)]
    assert cap_never_exceeded(log, _spec(cap_kw, tasks, ["mill"] * 3))
    loop = _Loop(cap_kw, 0.0, 0.0, 1)
    for i, t in enumerate(tasks):
        loop.at(0.0, "want", (f"m{i}", t, "mill", 60.0))
    loop.run()
    assert cap_never_exceeded(loop.log, _spec(cap_kw, tasks, ["mill"] * 3)) == []
    assert len([e for e in loop.log if e["ev"] == "op_start"]) == 3
    assert len({e["t"] for e in loop.log if e["ev"] == "op_start"}) == 3   # one at a time
