"""Rehearsal: the cell tries several schedules in what-if time before committing one.

Theory of operation
-------------------
Negotiating each operation when it becomes ready is myopic: an award can
never be taken back, so the schedule is one greedy dispatch.  With
``negotiation.rehearsal_passes`` = N > 0 the orders and machines first run N
*rehearsal passes* — what-if schedules built by messages, on a rehearsal
clock that starts at 0 — and only then negotiate the real awards, each
order with the machine and start time of the best pass.

One pass is a **serial schedule generation with insertion**, distributed:

* every order gives each of its operations a *list key* (lower = placed
  first; keys rise along the order's route, so a predecessor is always
  placed before its successor) and sends ``explore`` to every machine with
  the operations that machine could run;
* a machine places the operations registered with it strictly in key order
  (ties: order id, then position), each in the earliest gap of its
  rehearsal timeline that starts at or after the operation's ready time,
  which the order sends (``explore_ready``) once the predecessor is placed;
  the machine answers ``explore_quote``;
* an operation several machines can run is quoted by each of them when its
  turn comes; the order takes the earliest finish (ties: lower machine id)
  and tells them all (``intend``), so they can go on with the next key;
* an order whose last operation is placed tells every order its completion
  (``explore_result``); when an order has every completion it knows the
  pass's makespan and starts the next pass.

Because every machine uses the same global key order and a key never waits
for a higher one, the pass cannot deadlock, and its result is exactly the
central serial schedule-generation scheme for the same keys — computed by
the agents, each knowing only its own route or its own timeline.

Which keys?  This is a **forward-backward improvement** loop (as in
resource-constrained project scheduling: Li & Willis 1992, Valls et al.
2005), every step local to one order:

1. pass 0: level by level, most work remaining first (the MWKR rule);
2. then, repeated: a *backward* pass — the route reversed, keys from the
   latest finish first, i.e. the last plan squeezed to the right — whose
   mirror image is itself a schedule; a *forward* pass keyed by the start
   times of that mirror, which left-justifies it again and never needs more
   time than the plan it came from; then a *perturbed* forward pass keyed by
   the start times of the current plan plus seeded Gaussian noise, which
   gets the search out of a local optimum.

Each order keeps its part of the best plan seen (every order sees the same
makespans, so they all pick the same pass).  The real negotiation then calls
each operation at its planned machine with ``earliest_start_at`` = start of
execution + planned start; the machines run their tasks in planned order.
If a pass stalls (a lost message), the order stops rehearsing after
``rehearsal_pass_timeout`` and negotiates with what it has — the best plan
so far, or the ordinary contract net.  Rehearsal ignores transport,
breakdowns and release times after the first; the execution still handles
all of them, so a plan is advice, never a safety argument.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from agents.protocol.actions import Action, Log, Send
from agents.protocol.messages import (
    Body,
    Explore,
    ExploreQuote,
    ExploreReady,
    ExploreResult,
    Intention,
)

#: Separates the route levels of the first pass's keys (``level * LEVEL + ...``).
LEVEL = 1e9
#: Standard deviation of the perturbation, as a share of (makespan / ops in the route).
NOISE = 0.3


@dataclass(frozen=True, slots=True)
class Plan:
    """One order's part of a rehearsed schedule, in forward time, per operation."""

    makespan: float
    machine: tuple[str, ...]
    start: tuple[float, ...]
    finish: tuple[float, ...]


def pass_keys(p: int, *, first: list[float], best: Plan | None, current: Plan | None,
              last: Plan | None, rng: random.Random) -> tuple[bool, list[float]]:
    """``(backward, keys by position)`` of pass ``p`` (position 0 = the first placed)."""
    if p == 0 or best is None or current is None or last is None:
        return False, list(first)
    n = len(first)
    step = (p - 1) % 3
    if step == 0:      # backward from the last plan: latest finish placed first
        return True, [-last.finish[n - 1 - i] for i in range(n)]
    if step == 1:      # forward from the mirror of the backward pass
        return False, list(last.start)
    sigma = NOISE * current.makespan / n
    keys, floor = [], float("-inf")
    for k in range(n):
        floor = max(floor, current.start[k] + rng.gauss(0.0, 1.0) * sigma)
        keys.append(floor)
    return False, keys


# -- the order's side -----------------------------------------------------------------

@dataclass(slots=True)
class _OrderPass:
    number: int
    backward: bool
    placed: dict[int, tuple[str, float, float]] = field(default_factory=dict)
    quotes: dict[int, dict[str, tuple[float, float]]] = field(default_factory=dict)


class OrderRehearsal:
    """What one order does in the rehearsal passes."""

    def __init__(self, order: str, *, alternatives: list[list[str]], capabilities: list[str],
                 quantity: int, work_s: list[float], machines: list[str], peers: list[str],
                 passes: int, rng: random.Random, first_ready_at: float = 0.0,
                 budget_share: float = 0.01) -> None:
        self.order = order
        self.alternatives = alternatives
        self.capabilities = capabilities
        self.quantity = quantity
        self.machines = sorted(machines)
        self.peers = sorted(peers)
        self.passes = passes
        self.rng = rng
        self.first_ready_at = first_ready_at
        self.budget_share = budget_share
        self.started_at = 0.0
        self.ended_at = 0.0        # the same for every order: the latest pass end reported
        total = sum(work_s)
        self.first_keys = [k * LEVEL - total for k in range(len(capabilities))]
        self.best: Plan | None = None
        self.current: Plan | None = None
        self.last: Plan | None = None
        self.results: dict[int, dict[str, tuple[float, float]]] = {}
        self.now_pass: _OrderPass | None = None
        self.finished = False
        self.conv = f"{order}/rehearsal"

    @property
    def n(self) -> int:
        return len(self.capabilities)

    def _op(self, position: int) -> int:
        assert self.now_pass is not None
        return self.n - 1 - position if self.now_pass.backward else position

    def start(self, now: float) -> list[Action]:
        self.started_at = now
        return self._begin(0, now)

    def _begin(self, number: int, now: float) -> list[Action]:
        backward, keys = pass_keys(number, first=self.first_keys, best=self.best,
                                   current=self.current, last=self.last, rng=self.rng)
        self.now_pass = _OrderPass(number, backward)
        entries: dict[str, list[list[object]]] = {m: [] for m in self.machines}
        for pos in range(self.n):
            k = self._op(pos)
            alts = self.alternatives[k]
            for m in alts:
                entries.setdefault(m, []).append(
                    [pos, keys[pos], self.capabilities[k], self.quantity, len(alts)])
        out: list[Action] = [Send(m, Explore(number, e), self.conv)
                             for m, e in sorted(entries.items())]
        if self.n == 0:
            return out + self._completed(0.0, now)
        ready = 0.0 if backward else self.first_ready_at
        return out + self._ready(0, ready)

    def _ready(self, position: int, ready_at: float) -> list[Action]:
        assert self.now_pass is not None
        number = self.now_pass.number
        return [Send(m, ExploreReady(number, position, ready_at), self.conv)
                for m in self.alternatives[self._op(position)]]

    def on_message(self, sender: str, body: Body, now: float) -> list[Action]:
        if isinstance(body, ExploreResult):
            if sender in self.peers:
                self.results.setdefault(body.rehearsal, {})[sender] = (body.completion_at,
                                                                       body.at)
            return self._maybe_next(now)
        p = self.now_pass
        if p is None or self.finished or not isinstance(body, ExploreQuote) \
                or body.rehearsal != p.number or body.position in p.placed \
                or not 0 <= body.position < self.n:
            return []
        alts = self.alternatives[self._op(body.position)]
        if sender not in alts:
            return []
        quotes = p.quotes.setdefault(body.position, {})
        quotes[sender] = (body.start_at, body.finish_at)
        if len(quotes) < len(alts):
            return []
        chosen = min(quotes, key=lambda m: (quotes[m][1], m))
        out: list[Action] = []
        if len(alts) > 1:
            out += [Send(m, Intention(p.number, body.position, m == chosen), self.conv)
                    for m in alts]
        start, finish = quotes[chosen]
        p.placed[body.position] = (chosen, start, finish)
        if body.position + 1 < self.n:
            return out + self._ready(body.position + 1, finish)
        return out + self._completed(finish, now)

    def _completed(self, completion_at: float, now: float) -> list[Action]:
        assert self.now_pass is not None
        number = self.now_pass.number
        out: list[Action] = [Send(o, ExploreResult(number, completion_at, now), self.conv)
                             for o in self.peers if o != self.order]
        self.results.setdefault(number, {})[self.order] = (completion_at, now)
        return out + self._maybe_next(now)

    def _maybe_next(self, now: float) -> list[Action]:
        p = self.now_pass
        if p is None or self.finished:
            return []
        got = self.results.get(p.number, {})
        if len(got) < len(self.peers) or len(p.placed) < self.n:
            return []
        makespan = max(c for c, _ in got.values())
        self.ended_at = max(at for _, at in got.values())
        self._learn(p, makespan)
        del self.results[p.number]
        # Every order decides on the same numbers (pass, makespans, reported clocks), so
        # they all stop together: after ``passes``, or once the rehearsal has cost
        # more than ``budget_share`` of the best plan's makespan in cell time.
        assert self.best is not None
        spent = self.ended_at - self.started_at
        if p.number + 1 >= self.passes or spent > self.budget_share * self.best.makespan:
            return self.stop("done")
        return self._begin(p.number + 1, now)

    def _learn(self, p: _OrderPass, makespan: float) -> None:
        n = self.n
        if p.backward:   # mirror: backward [s, f) becomes forward [ms - f, ms - s)
            rows = [p.placed[n - 1 - k] for k in range(n)]
            plan = Plan(makespan, tuple(r[0] for r in rows),
                        tuple(makespan - r[2] for r in rows), tuple(makespan - r[1] for r in rows))
        else:
            rows = [p.placed[k] for k in range(n)]
            plan = Plan(makespan, tuple(r[0] for r in rows), tuple(r[1] for r in rows),
                        tuple(r[2] for r in rows))
        self.last = plan
        if self.best is None or makespan <= self.best.makespan:
            self.best = plan
        if p.number == 0 or (p.number - 1) % 3 == 1:
            if self.current is None or makespan <= self.current.makespan:
                self.current = plan

    def stop(self, why: str) -> list[Action]:
        """End the rehearsal (done, or a pass timed out); ``best`` is the plan, if any."""
        if self.finished:
            return []
        self.finished = True
        return [Log("rehearsal_end", {
            "order": self.order, "why": why,
            "passes": 0 if self.now_pass is None else self.now_pass.number + (why == "done"),
            "makespan": None if self.best is None else self.best.makespan})]


# -- the machine's side ---------------------------------------------------------------

@dataclass(slots=True)
class _Entry:
    key: float
    order: str
    position: int
    duration_s: float
    alternatives: int
    conv: str
    quoted: tuple[float, float] | None = None


@dataclass(slots=True)
class _MachinePass:
    registered: set[str] = field(default_factory=set)
    entries: list[_Entry] = field(default_factory=list)
    next: int = 0
    sorted: bool = False
    ready: dict[tuple[str, int], float] = field(default_factory=dict)
    chosen: dict[tuple[str, int], bool] = field(default_factory=dict)
    timeline: list[tuple[float, float]] = field(default_factory=list)


class MachineRehearsal:
    """What one machine does in the rehearsal passes: a what-if timeline per pass."""

    def __init__(self, machine: str, *, orders: list[str], duration_s: dict[str, float],
                 setup_s: float = 0.0) -> None:
        self.machine = machine
        self.orders = frozenset(orders)
        self.duration_s = duration_s     # capability -> seconds per unit
        self.setup_s = setup_s           # planned before every operation: conservative
        self.passes: dict[int, _MachinePass] = {}

    def on_message(self, sender: str, body: Body, conv: str) -> list[Action]:
        if sender not in self.orders or getattr(body, "rehearsal", -1) < 0:
            return []
        p = self.passes.setdefault(body.rehearsal, _MachinePass())   # type: ignore[attr-defined]
        if isinstance(body, Explore):
            if sender in p.registered or p.sorted:
                return []
            p.registered.add(sender)
            for e in body.entries:
                if not (isinstance(e, list) and len(e) == 5):
                    continue
                pos, key, cap, qty, alts = e
                if cap not in self.duration_s or not isinstance(key, (int, float)):
                    continue
                p.entries.append(_Entry(float(key), sender, int(pos),
                                        self.duration_s[cap] * int(qty) + self.setup_s,
                                        int(alts), conv))
        elif isinstance(body, ExploreReady):
            p.ready[(sender, body.position)] = body.ready_at
        elif isinstance(body, Intention):
            p.chosen[(sender, body.position)] = body.chosen
        else:
            return []
        return self._advance(body.rehearsal, p)   # type: ignore[attr-defined]

    def _advance(self, number: int, p: _MachinePass) -> list[Action]:
        if not p.sorted:
            if p.registered != self.orders:
                return []
            p.entries.sort(key=lambda e: (e.key, e.order, e.position))
            p.sorted = True
        out: list[Action] = []
        while p.next < len(p.entries):
            e = p.entries[p.next]
            ident = (e.order, e.position)
            if e.quoted is None:
                ready = p.ready.get(ident)
                if ready is None:
                    break
                start = self._gap(p.timeline, ready, e.duration_s)
                e.quoted = (start, start + e.duration_s)
                out.append(Send(e.order, ExploreQuote(number, e.position, *e.quoted), e.conv))
            if e.alternatives > 1:
                chosen = p.chosen.get(ident)
                if chosen is None:
                    break
                if chosen:
                    self._insert(p.timeline, e.quoted)
            else:
                self._insert(p.timeline, e.quoted)
            p.next += 1
        if p.next == len(p.entries):
            del self.passes[number]
        return out

    @staticmethod
    def _gap(timeline: list[tuple[float, float]], ready_at: float, duration_s: float) -> float:
        start = ready_at
        for s, e in timeline:
            if start + duration_s <= s + 1e-9:
                break
            start = max(start, e)
        return start

    @staticmethod
    def _insert(timeline: list[tuple[float, float]], slot: tuple[float, float]) -> None:
        timeline.append(slot)
        timeline.sort()
