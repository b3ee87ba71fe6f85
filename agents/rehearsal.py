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
  which the order sends (``explore_ready``) once the predecessor is placed —
  or the predecessor's machine, when only it could run that one (one hop
  instead of two); the machine answers ``explore_quote``;
* an operation several machines can run is quoted by each of them when its
  turn comes; the order takes the earliest finish (ties: lower machine id)
  and tells them all (``intend``), so they can go on with the next key;
* an order whose last operation is placed tells the pass's *collector* (the
  orders take turns) its completion (``explore_result``); the collector
  tells every order the sum — the pass's makespan, the latest clock, the
  best lower bound — and each starts the next pass.

Because every machine uses the same global key order and a key never waits
for a higher one, the pass cannot deadlock, and its result is exactly the
central serial schedule-generation scheme for the same keys — computed by
the agents, each knowing only its own route or its own timeline.

**Non-delay dispatch passes.**  The first passes (one per rule in
``DISPATCH_RULES``: MWKR, SPT, FIFO) are not keyed but *dispatched*, as the
central non-delay dispatcher of ``sim_bridge/dispatch.py`` does with that
rule: every machine keeps the operations ready for it and its next dispatch
— ``t`` = max(its free time, earliest ready), the rule's favourite among
those ready by ``t`` (ties as there: shorter time, lower job).  A single
token, the ``baton``, carries every machine's next dispatch (``table``) and
free time, and goes to the least (``t``, priority, machine id); that machine
dispatches one operation, tells its order where (``explore_quote``), and
adds the consequences to the baton's ``pending`` updates: ``drop`` for the
operation's other machines, ``ready`` for the next operation's.  An update
is applied when its machine next holds the baton — before any decision it
could change: a ``ready`` that could start no later than the least entry
sends the baton to its machine first; a ``drop`` can only raise an entry,
and a machine applies its own before it dispatches.  So nothing is ever
dispatched before something that should have been, and the pass yields the
rule's schedule operation by operation (the simulator's baselines break a
few ties differently: they dispatch after each completion, not after all
completions at one time).  Machines also report the load only they can
carry, orders their work: a plan that meets that lower bound ends the
rehearsal at once.

Keys for the serial passes: a **forward-backward improvement** loop (as in
resource-constrained project scheduling: Li & Willis 1992, Valls et al.
2005), every step local to one order, starting from the best dispatch plan
(so the plan is never worse than the best of the three dispatches):

1. one pass level by level, most work remaining first (MWKR keys);
2. then, repeated: a *backward* pass — the route reversed, keys from the
   latest finish first, i.e. the last plan squeezed to the right — whose
   mirror image is itself a schedule; a *forward* pass keyed by the start
   times of that mirror, which left-justifies it again; then a *perturbed*
   forward pass keyed by the start times of the current plan plus seeded
   Gaussian noise, which gets the search out of a local optimum.

Each order keeps its part of the best plan seen (every order sees the same
makespans, so they all pick the same pass).  The real negotiation then calls
each operation at its planned machine with ``earliest_start_at`` = plan
origin + planned start, where the origin is the same for every order (the
last pass's end as the collector reported it, plus two reply deadlines for
the award round, plus for energy-aware orders the wake-up lead of the machines
asleep by then: ``PlanPricing.wake_lead_s``); the machines run their tasks
strictly in planned order, each as soon as its parts are there, so the execution is the plan shifted
left where it can be — never later than planned, up to message latency.

Energy-aware orders (``pricing`` set: agents/energy/rehearsal.py) weigh each
quote's energy cost against its finish at the order strategy's
``s_per_money``, report their part of the pass's cost (``explore_result_priced``)
and keep, among the passes within ``makespan_tolerance`` of the shortest one,
the pass of least makespan + ``s_per_money`` · the cell's cost; the
machines' side does not change.  If the pricing names ``dispatch_passes``
(order strategy ``priced_dispatch``), more dispatch passes follow the plain
ones, each order registering an operation only at its cheaper machines; they
are seeds like the others (``self.seeds``).  If it names ``energy_passes`` (order
strategy ``energy_passes``), that many *energy passes* follow the loop: the plan
kept re-timed, then re-run with one operation of one order moved to a machine that
uses less energy, each kept if within the band and cheaper; the band less the time
rehearsed (agents/energy/rehearsal.py, "Energy passes").  With them and ``reference``
(the defaults, ADR 98), the loop is first rehearsed exactly as without ``pricing`` —
the reference, its passes numbered from 0, the weighed loop's from ``loop_from`` — and
the band is measured from its plan and its rehearsal time ("The reference" there).
Without energy passes, with ``retime``, a plan kept from a backward pass is re-timed in
one such pass that moves nothing.  The collector also prices the gaps between
operations on each machine from every order's slots (``PlanPricing.gaps_cost``).
Without ``pricing`` nothing here changes.

If a pass stalls (a lost message), the order stops rehearsing after
``rehearsal_pass_timeout`` and negotiates with what it has — the best plan
so far, or the ordinary contract net.  Rehearsal ignores transport,
breakdowns and release times after the first; the execution still handles
all of them, so a plan is advice, never a safety argument.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from agents.protocol.actions import Action, Log, Send
from agents.protocol.messages import (
    Baton,
    Body,
    Explore,
    ExploreQuote,
    ExploreReady,
    ExploreResult,
    ExploreResultPriced,
    Intention,
)

if TYPE_CHECKING:
    from agents.energy.rehearsal import PlanPricing

#: Separates the route levels of the first pass's keys (``level * LEVEL + ...``).
LEVEL = 1e9
#: Standard deviation of the perturbation, as a share of (makespan / ops in the route).
NOISE = 0.3
#: The non-delay dispatch passes that open a rehearsal, in this order.
DISPATCH_RULES = ("MWKR", "SPT", "FIFO")
#: Passes before the forward-backward loop: the dispatch passes and one level-keyed pass
#: (energy-aware orders may add priced dispatch passes: ``PlanPricing.dispatch_passes``).
SEEDS = len(DISPATCH_RULES) + 1


def dispatch_priority(rule: str, *, ready_at: float, duration_s: float, static: float,
                      job: float) -> list[float]:
    """The rule's priority of one ready operation (least first), with the tie-breaks of
    ``sim_bridge/dispatch.py``: shorter processing time, then lower job index."""
    if rule == "SPT":
        head = [duration_s]
    elif rule == "FIFO":
        head = [ready_at, float(job)]
    else:                       # MWKR: static = minus the work remaining
        head = [static]
    return [*head, duration_s, float(job)]


def _number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def least(table: dict) -> str | None:
    """The machine whose next dispatch comes first (ties: machine id), or None."""
    best: tuple[list, str] | None = None
    for m, entry in table.items():
        if isinstance(entry, list) and entry and (best is None or (entry, m) < best):
            best = (entry, m)
    return None if best is None else best[1]


def next_hop(table: dict, free: dict, pending: list) -> str | None:
    """Where the baton goes next: a machine that has not filled in its entry; else one
    with a ``ready`` that could undercut the least entry (the operation could start
    there no later than it); else the least entry's machine.  A ``drop`` can only
    raise an entry, so it waits until its machine holds the baton anyway.  None:
    nothing left to dispatch."""
    inits = [u[0] for u in pending if u[1] == "init"]
    if inits:
        return min(inits)
    holder = least(table)
    readies = [(max(u[4], free.get(u[0], 0.0)), u[0]) for u in pending if u[1] == "ready"]
    if holder is None:
        return min(readies)[1] if readies else None
    urgent = [m for at, m in readies if at <= table[holder][0] + 1e-9]
    return min(urgent) if urgent else holder


@dataclass(frozen=True, slots=True)
class Plan:
    """One order's part of a rehearsed schedule, in forward time, per operation."""

    makespan: float
    machine: tuple[str, ...]
    start: tuple[float, ...]
    finish: tuple[float, ...]
    #: makespan + s_per_money · the cell's energy cost (energy-aware orders), else makespan
    score: float = 0.0
    #: the cell's energy cost of the plan as priced (energy-aware orders), else 0
    cost: float = 0.0
    #: the plan of a backward pass, mirrored: priced at its right-justified times
    backward: bool = False


def pass_keys(p: int, *, first: list[float], best: Plan | None, current: Plan | None,
              last: Plan | None, rng: random.Random, seeds: int = SEEDS
              ) -> tuple[bool, list[float]]:
    """``(backward, keys by position)`` of serial pass ``p`` (position 0 = the first placed)."""
    if p < seeds or best is None or current is None or last is None:
        return False, list(first)
    n = len(first)
    step = (p - seeds) % 3
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
    #: each operation's machines in this pass (a priced dispatch pass: the cheaper ones)
    alternatives: list[list[str]]
    placed: dict[int, tuple[str, float, float]] = field(default_factory=dict)
    quotes: dict[int, dict[str, tuple[float, float]]] = field(default_factory=dict)


class OrderRehearsal:
    """What one order does in the rehearsal passes."""

    def __init__(self, order: str, *, alternatives: list[list[str]], capabilities: list[str],
                 quantity: int, work_s: list[float], machines: list[str], peers: list[str],
                 passes: int, rng: random.Random, first_ready_at: float = 0.0,
                 budget_share: float = 0.01, pricing: PlanPricing | None = None) -> None:
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
        #: energy-aware: quotes and passes weighed with energy (agents/energy/rehearsal.py)
        self.pricing = pricing
        #: the dispatch passes, (rule, share of the cheapest slot kept, or None: every machine)
        self.dispatches: tuple[tuple[str, float | None], ...] = (
            *((r, None) for r in DISPATCH_RULES), *(pricing.dispatch_passes if pricing else ()))
        self.seeds = len(self.dispatches) + 1
        #: energy-aware orders with energy passes (and ``pricing.reference``): the loop is
        #: first rehearsed as energy-blind orders rehearse it — the reference (ADR 98);
        #: then the weighed loop, numbered from ``loop_from``, its budget counted from
        #: ``phase_at``; ``ref`` is the reference's (plan makespan, rehearsal time so far)
        self.in_reference = bool(pricing is not None and pricing.energy_passes > 0
                                 and pricing.reference)
        self.loop_from = 0
        self.phase_at = 0.0
        self.ref: tuple[float, float] | None = None
        self._loop_seeds = (self.dispatches, self.seeds)
        if self.in_reference:
            self.dispatches, self.seeds = tuple((r, None) for r in DISPATCH_RULES), SEEDS
        self.started_at = 0.0
        self.ended_at = 0.0        # the same for every order: the latest pass end reported
        total = sum(work_s)
        self.first_keys = [k * LEVEL - total for k in range(len(capabilities))]
        self.remaining_s = [sum(work_s[k:]) for k in range(len(work_s))]
        #: no plan can end before this (rehearsal time): the order's own work, then
        #: whatever the machines and the other orders report
        self.bound = first_ready_at + total
        self.work_total_s = total
        self.best: Plan | None = None
        #: energy-aware orders: every plan that may still be within the makespan band
        #: (agents/energy/rehearsal.py), and the shortest makespan of any pass
        self.banded: list[Plan] = []
        self.shortest = float("inf")
        self.current: Plan | None = None
        self.last: Plan | None = None
        self.results: dict[int, dict[str, tuple[float, ...]]] = {}
        #: the collector, energy-aware orders: every order's slots per pass (gap pricing)
        self.slots: dict[int, dict[str, list[object]]] = {}
        # makespan, at, bound, and the cell's energy cost (energy-aware orders)
        self.summaries: dict[int, tuple[float, float, float, float]] = {}
        self.now_pass: _OrderPass | None = None
        self.makespans: list[float] = []      # of every pass so far
        #: energy-aware orders with ``pricing.energy_passes``: the number of the first
        #: energy pass (None until the loop ends)
        self.energy_from: int | None = None
        #: ... and the plan they build on: the kept plan re-timed, then each cheaper move
        self.moved: Plan | None = None
        #: ... and how many passes follow the loop (``_after_loop`` when it ended)
        self.after_loop = 0
        self.finished = False
        self.conv = f"{order}/rehearsal"

    @property
    def weighing(self) -> PlanPricing | None:
        """The pricing the passes weigh energy with now: none for energy-blind orders, nor
        while the reference is rehearsed (ADR 98: as energy-blind orders rehearse)."""
        return None if self.in_reference else self.pricing

    @property
    def n(self) -> int:
        return len(self.capabilities)

    def _op(self, position: int) -> int:
        assert self.now_pass is not None
        return self.n - 1 - position if self.now_pass.backward else position

    def start(self, now: float) -> list[Action]:
        self.started_at = self.phase_at = now
        self.bound = self.first_ready_at + self.work_total_s
        return self._begin(0, now)

    def _rule(self, number: int) -> tuple[str, float | None]:
        """Pass ``number``'s dispatch rule ("" for a keyed pass) and machine share."""
        number -= self.loop_from
        return self.dispatches[number] if 0 <= number < len(self.dispatches) else ("", None)

    def _begin(self, number: int, now: float) -> list[Action]:
        rule, share = self._rule(number)
        if rule:
            backward, keys = False, [-w for w in self.remaining_s]
        elif self._energy_pass(number):
            # the kept plan again, left-justified on its own machines, but for one move
            # (agents/energy/rehearsal.py, "Energy passes")
            assert self.best is not None
            backward, keys = False, list(self.best.start)
        else:
            backward, keys = pass_keys(number - self.loop_from, first=self.first_keys,
                                       best=self.best, current=self.current, last=self.last,
                                       rng=self.rng, seeds=self.seeds)
        alternatives = self.alternatives
        if self._energy_pass(number):
            alternatives = self._move(number)
        elif share is not None and self.pricing is not None:
            alternatives = [self.pricing.cheaper(a, c, self.quantity, share)
                            for a, c in zip(self.alternatives, self.capabilities)]
        self.now_pass = _OrderPass(number, backward, alternatives)
        entries: dict[str, list[list[object]]] = {m: [] for m in self.machines}
        for pos in range(self.n):
            k = self._op(pos)
            alts = alternatives[k]
            for m in alts:
                # the machines of the next operation in this pass: the machine that
                # places this one tells them (dispatch passes, or only one machine)
                following = list(alternatives[self._op(pos + 1)]) if pos + 1 < self.n \
                    else []
                entries.setdefault(m, []).append(
                    [pos, keys[pos], self.capabilities[k], self.quantity, len(alts), list(alts),
                     following])
        out: list[Action] = [Send(m, Explore(number, e, rule, self.first_ready_at), self.conv)
                             for m, e in sorted(entries.items())]
        if rule and self.peers and self.peers[0] == self.order and self.machines:
            # the first order starts the baton: every machine fills in its entry
            out.append(Send(self.machines[0], Baton(
                number, pending=[[m, "init", "", 0, 0.0] for m in self.machines]), self.conv))
        if self.n == 0:
            return out + self._completed(0.0, now)
        if rule:
            return out
        ready = 0.0 if backward else self.first_ready_at
        return out + self._ready(0, ready)

    def _ready(self, position: int, ready_at: float) -> list[Action]:
        assert self.now_pass is not None
        number = self.now_pass.number
        return [Send(m, ExploreReady(number, position, ready_at), self.conv)
                for m in self.now_pass.alternatives[self._op(position)]]

    def on_message(self, sender: str, body: Body, now: float) -> list[Action]:
        if isinstance(body, ExploreResult):
            if sender not in self.peers or body.rehearsal < 0:
                return []
            energy = body.energy_cost if isinstance(body, ExploreResultPriced) else 0.0
            if body.orders == len(self.peers) and sender == self._collector(body.rehearsal):
                self.summaries[body.rehearsal] = (body.completion_at, body.at, body.bound,
                                                  energy)
                return self._maybe_next(now)
            if body.orders == 1 and self._collector(body.rehearsal) == self.order:
                slots = body.slots if isinstance(body, ExploreResultPriced) else []
                return self._collect(body.rehearsal, sender, (
                    body.completion_at, body.at, body.bound, body.work_s, energy), now, slots)
            return []
        p = self.now_pass
        if p is None or self.finished or not isinstance(body, ExploreQuote) \
                or body.rehearsal != p.number or body.position in p.placed \
                or not 0 <= body.position < self.n:
            return []
        alts = p.alternatives[self._op(body.position)]
        if sender not in alts:
            return []
        rule, share = self._rule(p.number)
        if rule:   # a dispatch pass: the machine has placed it
            if share is None:     # (a priced pass's machines are not all the plan could use)
                self.bound = max(self.bound, body.bound)
            p.placed[body.position] = (sender, body.start_at, body.finish_at)
            if len(p.placed) < self.n:    # quotes may arrive in any order
                return []
            return self._completed(p.placed[self.n - 1][2], now)
        quotes = p.quotes.setdefault(body.position, {})
        quotes[sender] = (body.start_at, body.finish_at)
        if len(quotes) < len(alts):
            return []
        if self.weighing is None:
            chosen = min(quotes, key=lambda m: (quotes[m][1], m))
        else:
            chosen = min(quotes, key=lambda m: (self._weighed(body.position, m, *quotes[m]), m))
        out: list[Action] = []
        if len(alts) > 1:
            out += [Send(m, Intention(p.number, body.position, m == chosen), self.conv)
                    for m in alts]
        start, finish = quotes[chosen]
        p.placed[body.position] = (chosen, start, finish)
        if body.position + 1 < self.n:
            if len(alts) == 1:            # its machine told the next ones itself
                return out
            return out + self._ready(body.position + 1, finish)
        return out + self._completed(finish, now)

    def _collector(self, number: int) -> str:
        """The order that sums up pass ``number``'s results (the orders take turns)."""
        return self.peers[number % len(self.peers)] if self.peers else self.order

    # -- energy (agents/energy/rehearsal.py) ------------------------------------------------
    def _real(self, start: float, finish: float) -> tuple[float, float]:
        """A slot of the current pass in forward rehearsal time: a backward pass's slot
        mirrored about the last plan's makespan (its own is not known yet)."""
        assert self.now_pass is not None
        if not self.now_pass.backward:
            return start, finish
        ms = self.last.makespan if self.last is not None else 0.0
        return ms - finish, ms - start

    def _price(self, position: int, machine: str, start: float, finish: float) -> float:
        """The energy cost of a slot of the current pass, on the cell clock."""
        assert self.pricing is not None
        a, b = self._real(start, finish)
        t0, t1 = self.started_at + a, self.started_at + b
        return (self.pricing.cost(machine, self.capabilities[self._op(position)], t0, t1)
                + self.pricing.awake_cost(machine, t0, t1))

    def _weighed(self, position: int, machine: str, start: float, finish: float) -> float:
        """The pass's finish (in a backward pass, its own backward time) traded against the
        slot's energy cost, as the order strategy trades them."""
        assert self.pricing is not None
        return self.pricing.weighed(finish, self._price(position, machine, start, finish))

    def _pass_cost(self) -> float:
        assert self.now_pass is not None
        return sum(self._price(pos, m, s, f) for pos, (m, s, f) in self.now_pass.placed.items())

    def _slots(self) -> list[object]:
        """The current pass's operations, ``[machine, start, finish]`` in its own time."""
        assert self.now_pass is not None
        return [[m, s, f] for _, (m, s, f) in sorted(self.now_pass.placed.items())]

    def _gaps_cost(self, number: int, makespan: float, slots: list[object]) -> float:
        """The collector: what the gaps between operations on each machine cost beyond
        the floor (agents/energy/rehearsal.py ``PlanPricing.gaps_cost``), from every
        order's ``slots`` of pass ``number``; a backward pass's slots mirrored about its
        own makespan, on the cell clock.  Malformed entries are left out."""
        assert self.pricing is not None
        p = self.now_pass
        backward = p is not None and p.number == number and p.backward
        spans: dict[str, list[tuple[float, float]]] = {}
        for e in slots:
            if not (isinstance(e, list) and len(e) == 3 and isinstance(e[0], str)
                    and _number(e[1]) and _number(e[2])):
                continue
            a, b = float(e[1]), float(e[2])
            if backward:
                a, b = makespan - b, makespan - a
            spans.setdefault(e[0], []).append((self.started_at + a, self.started_at + b))
        return self.pricing.gaps_cost(spans)

    def _completed(self, completion_at: float, now: float) -> list[Action]:
        assert self.now_pass is not None
        number = self.now_pass.number
        energy = 0.0 if self.pricing is None else self._pass_cost()
        mine = (completion_at, now, self.bound, self.work_total_s, energy)
        collector = self._collector(number)
        slots = self._slots() if self.pricing is not None else []
        if collector == self.order:
            return self._collect(number, self.order, mine, now, slots)
        if self.pricing is not None:
            return [Send(collector, ExploreResultPriced(number, *mine[:4], energy_cost=energy,
                                                        slots=slots), self.conv)]
        return [Send(collector, ExploreResult(number, *mine[:4]), self.conv)]

    def _collect(self, number: int, sender: str, result: tuple[float, ...],
                 now: float, slots: list[object] | None = None) -> list[Action]:
        """The collector: once every order reported, tell them all (and itself) the sum
        (energy-aware orders: with the gaps between operations on each machine priced)."""
        got = self.results.setdefault(number, {})
        got[sender] = result
        if self.pricing is not None:
            self.slots.setdefault(number, {})[sender] = list(slots or [])
        if len(got) < len(self.peers) or number in self.summaries:
            return []
        total = (max(r[0] for r in got.values()), max(r[1] for r in got.values()),
                 max(max(r[2] for r in got.values()),
                     sum(r[3] for r in got.values()) / max(1, len(self.machines))),
                 sum(r[3] for r in got.values()))
        energy = sum(r[4] for r in got.values())
        del self.results[number]
        if self.pricing is not None:
            every = [e for _, part in sorted(self.slots.pop(number, {}).items()) for e in part]
            energy += self._gaps_cost(number, total[0], every)
        self.summaries[number] = (*total[:3], energy)
        if self.pricing is not None:
            out: list[Action] = [
                Send(o, ExploreResultPriced(number, *total, len(self.peers), energy_cost=energy),
                     self.conv) for o in self.peers if o != self.order]
        else:
            out = [Send(o, ExploreResult(number, *total, len(self.peers)), self.conv)
                   for o in self.peers if o != self.order]
        return out + self._maybe_next(now)

    def _maybe_next(self, now: float) -> list[Action]:
        p = self.now_pass
        if p is None or self.finished:
            return []
        summary = self.summaries.get(p.number)
        if summary is None or len(p.placed) < self.n:
            return []
        makespan, self.ended_at, bound, energy = self.summaries.pop(p.number)
        self.bound = max(self.bound, bound)
        self.makespans.append(makespan)
        cost = 0.0 if self.pricing is None else energy + self.pricing.floor_cost(
            self.started_at, self.started_at + makespan)
        weigh = self.weighing
        blind = weigh is None
        self._learn(p, makespan, makespan if weigh is None else weigh.weighed(makespan, cost),
                    cost)
        # Every order decides on the same numbers (pass, makespans, reported clocks and
        # bounds), so they all stop together: once the best plan meets the bound (no plan
        # can be shorter), after ``passes``, or once the rehearsal has cost more than
        # ``budget_share`` of the best plan's makespan in cell time.
        # (Energy-aware orders go on at the bound: a plan as short may cost less.)
        assert self.best is not None
        if self.best.makespan <= self.bound + 1e-9 and blind:
            return self.stop("bound") if self.pricing is None else self._end_reference(now)
        spent = self.ended_at - self.phase_at
        if self.energy_from is None and (p.number + 1 - self.loop_from >= self.passes
                                         or spent > self.budget_share * self.best.makespan):
            if self.in_reference:
                return self._end_reference(now)
            if self.pricing is None or self._after_loop() <= 0:
                return self.stop("done")
            self.energy_from = p.number + 1      # the loop is over: the energy passes follow
            self.after_loop = self._after_loop()
        if self.energy_from is not None and self.pricing is not None \
                and p.number + 1 >= self.energy_from + self.after_loop:
            return self.stop("done")
        return self._begin(p.number + 1, now)

    def _end_reference(self, now: float) -> list[Action]:
        """The reference is over (ADR 98): its plan — the one energy-blind orders would
        have kept — and the rehearsal's time so far measure the band, and the plan stays a
        candidate; the weighed loop starts afresh with its own seeds."""
        assert self.best is not None and self.now_pass is not None
        self.ref = (self.best.makespan, self.ended_at - self.started_at)
        self.banded = [self.best]
        self.shortest = self.best.makespan
        self.best = self.current = self.last = None
        self.in_reference = False
        self.loop_from = self.now_pass.number + 1
        self.phase_at = self.ended_at
        self.dispatches, self.seeds = self._loop_seeds
        return self._begin(self.loop_from, now)

    def _after_loop(self) -> int:
        """How many passes follow the loop (energy-aware orders): the energy passes; else,
        with ``pricing.retime``, one that re-times the plan kept if a backward pass gave it
        (it was priced at its right-justified times); else none."""
        assert self.pricing is not None
        if self.pricing.energy_passes > 0:
            return self.pricing.energy_passes
        return int(self.pricing.retime and self.best is not None and self.best.backward)

    def _move(self, number: int) -> list[list[str]]:
        """An energy pass's machines: each operation at its machine in the kept plan; if
        this order moves in pass ``number`` (the orders take turns), one operation,
        drawn at random among those with a machine that uses less energy for it, at one
        such machine, drawn at random."""
        assert self.best is not None and self.pricing is not None \
            and self.energy_from is not None
        planned = [[m] for m in self.best.machine]
        turn = number - self.energy_from - 1          # the first energy pass moves nothing
        if turn < 0 or (self.peers and self.peers[turn % len(self.peers)] != self.order):
            return planned
        moves = []
        for k, (m, cap) in enumerate(zip(self.best.machine, self.capabilities)):
            here = self.pricing.mean_cost(m, cap, self.quantity)
            costs = {a: self.pricing.mean_cost(a, cap, self.quantity)
                     for a in self.alternatives[k] if a != m}
            less = sorted(a for a, c in costs.items()
                          if here is not None and c is not None and c < here - 1e-12)
            if less:
                moves.append((k, less))
        if moves:
            k, less = moves[self.rng.randrange(len(moves))]
            planned[k] = [less[self.rng.randrange(len(less))]]
        return planned

    def _energy_pass(self, number: int) -> bool:
        """Whether pass ``number`` is an energy pass (after the loop, energy-aware orders)."""
        return self.energy_from is not None and number >= self.energy_from

    def _learn(self, p: _OrderPass, makespan: float, score: float, cost: float = 0.0) -> None:
        """Keep the pass's plan as ``last``, and as ``best`` / ``current`` if its score
        (the makespan, or for energy-aware orders the makespan and energy cost weighed)
        is lower."""
        n = self.n
        if p.backward:   # mirror: backward [s, f) becomes forward [ms - f, ms - s)
            rows = [p.placed[n - 1 - k] for k in range(n)]
            plan = Plan(makespan, tuple(r[0] for r in rows),
                        tuple(makespan - r[2] for r in rows), tuple(makespan - r[1] for r in rows),
                        score, cost, backward=True)
        else:
            rows = [p.placed[k] for k in range(n)]
            plan = Plan(makespan, tuple(r[0] for r in rows), tuple(r[1] for r in rows),
                        tuple(r[2] for r in rows), score, cost)
        self.last = plan
        if self.weighing is not None:
            self._learn_banded(plan, self._energy_pass(p.number))
        elif self.best is None or score < self.best.score:
            self.best = plan
        # the loop's current plan: the best seed, then every forward-from-mirror pass
        # that is no worse (ties move on, so the search can drift along a plateau)
        number = p.number - self.loop_from
        seed = number < self.seeds
        if (seed or (number - self.seeds) % 3 == 1) and (
                self.current is None or self._rank(plan) < self._rank(self.current)
                or (not seed and self._rank(plan) == self._rank(self.current))):
            self.current = plan
        if number == self.seeds - 1:
            self.last = self.current      # the loop starts from the best seed

    def _limit(self) -> float:
        """The longest makespan inside the band (energy-aware orders)."""
        assert self.pricing is not None
        limit = self.shortest * (1.0 + self.pricing.makespan_tolerance) + 1e-9
        if self.pricing.energy_passes > 0:
            # the run is the rehearsal and then the plan: the rehearsal's time so far
            # comes out of the band (it only grows, so the band still only narrows)
            # (never below the shortest plan itself)
            spent = max(0.0, self.ended_at - self.started_at)
            if self.ref is not None:
                # measured from the reference (ADR 98): the blind cell's run would be its
                # rehearsal and its plan; this run is the whole rehearsal, the machines'
                # wake-up lead and the plan
                plan_s, rehearsal_s = self.ref
                limit = (plan_s + rehearsal_s) * (1.0 + self.pricing.makespan_tolerance) \
                    - spent - self.pricing.wake_lead_s(self.ended_at) + 1e-9
            else:
                limit -= spent
            limit = max(self.shortest + 1e-9, limit)
        return limit

    def _rank(self, plan: Plan) -> tuple[bool, float]:
        """How a plan compares: its score; for energy-aware orders a plan outside the
        makespan band ranks after every plan inside it."""
        if self.weighing is None:
            return False, plan.score
        return plan.makespan > self._limit(), plan.score

    def _learn_banded(self, plan: Plan, energy: bool = False) -> None:
        """Energy-aware orders: ``best`` is the least score among the passes whose makespan
        is within the band of the shortest pass (the first such on ties) — with energy
        passes on, the least cost (ties: the shorter).  The band only narrows, so a plan
        outside it can be forgotten.  Energy passes (``energy``): the first re-times the
        kept plan as the run will (left-justified) and is the plan they build on,
        ``moved``; a later one replaces it if it is within the band and costs less;
        ``best`` is ``moved`` while it is within the band (once it falls out, the least
        cost in the band, which every later plan is also compared with)."""
        self.shortest = min(self.shortest, plan.makespan)
        limit = self._limit()
        self.banded = [q for q in (*self.banded, plan) if q.makespan <= limit]
        # with energy passes the loop's plan kept is the least energy cost the band admits
        # (ties: the shorter), else the least score
        assert self.pricing is not None
        rank = (lambda q: (q.cost, q.makespan)) if self.pricing.energy_passes > 0 \
            else (lambda q: (q.score,))
        best = self.banded[0]
        for q in self.banded[1:]:
            if rank(q) < rank(best):
                best = q
        if energy and self.pricing.energy_passes <= 0:
            # the re-timing pass alone (``pricing.retime``): the backward passes' plans,
            # priced where the run does not put them, give way to the kept one re-timed
            self.banded = [q for q in self.banded if not q.backward]
            best = min(self.banded, key=rank) if self.banded else plan
        elif energy:
            if self.moved is None or (plan.makespan <= limit
                                      and plan.cost < self.moved.cost - 1e-12):
                self.moved = plan
            if self.moved.makespan <= limit:
                best = self.moved
        self.best = best

    def stop(self, why: str) -> list[Action]:
        """End the rehearsal (done, or a pass timed out); ``best`` is the plan, if any."""
        if self.finished:
            return []
        self.finished = True
        return [Log("rehearsal_end", {
            "order": self.order, "why": why,
            "passes": 0 if self.now_pass is None
            else self.now_pass.number + (why in ("done", "bound")),
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
    others: tuple[str, ...] = ()          # dispatch passes: the other machines that may run it
    following: tuple[str, ...] = ()       # ... and those that may run the next operation


@dataclass(slots=True)
class _MachinePass:
    registered: set[str] = field(default_factory=set)
    entries: list[_Entry] = field(default_factory=list)
    next: int = 0
    sorted: bool = False
    ready: dict[tuple[str, int], float] = field(default_factory=dict)
    chosen: dict[tuple[str, int], bool] = field(default_factory=dict)
    timeline: list[tuple[float, float]] = field(default_factory=list)
    # a non-delay dispatch pass (``rule`` set): see ``MachineRehearsal._baton``
    rule: str = ""
    free_at: float = 0.0
    load_s: float = 0.0                   # operations only this machine can run
    gone: set[tuple[str, int]] = field(default_factory=set)   # dispatched here or elsewhere
    baton: Baton | None = None            # arrived before every order registered


class MachineRehearsal:
    """What one machine does in the rehearsal passes: a what-if timeline per pass."""

    def __init__(self, machine: str, *, orders: list[str], duration_s: dict[str, float],
                 setup_s: float = 0.0) -> None:
        self.machine = machine
        self.orders = frozenset(orders)
        self.duration_s = duration_s     # capability -> seconds per unit
        self.setup_s = setup_s           # planned before every operation: conservative
        self.passes: dict[int, _MachinePass] = {}
        self.job = {o: float(j) for j, o in enumerate(sorted(orders))}

    def on_message(self, sender: str, body: Body, conv: str) -> list[Action]:
        if getattr(body, "rehearsal", -1) < 0:
            return []
        if isinstance(body, Baton):      # from an order or a machine (the codec checked which)
            p = self.passes.setdefault(body.rehearsal, _MachinePass())
            p.baton = body
            return self._baton(body.rehearsal, p, conv)
        if isinstance(body, ExploreReady) and body.order:
            if body.order not in self.orders:     # from the machine before: for an order
                return []
            p = self.passes.setdefault(body.rehearsal, _MachinePass())
            p.ready[(body.order, body.position)] = body.ready_at
            return self._advance(body.rehearsal, p)
        if sender not in self.orders:
            return []
        p = self.passes.setdefault(body.rehearsal, _MachinePass())   # type: ignore[attr-defined]
        if isinstance(body, Explore):
            if sender in p.registered or p.sorted:
                return []
            p.registered.add(sender)
            p.rule = body.rule if body.rule in DISPATCH_RULES else ""
            for e in body.entries:
                if not (isinstance(e, list) and len(e) in ((7,) if p.rule else (5, 7))):
                    continue
                pos, key, cap, qty, alts = e[:5]
                if cap not in self.duration_s or not isinstance(key, (int, float)) \
                        or not isinstance(pos, int) or not isinstance(alts, int) \
                        or not isinstance(qty, int):
                    continue
                entry = _Entry(float(key), sender, pos,
                               self.duration_s[cap] * qty + self.setup_s, alts, conv)
                if len(e) == 7:
                    if not (isinstance(e[5], list) and isinstance(e[6], list)):
                        continue
                    entry.others = tuple(str(m) for m in e[5] if m != self.machine)
                    entry.following = tuple(str(m) for m in e[6])
                p.entries.append(entry)
                if p.rule:
                    if alts == 1:
                        p.load_s += entry.duration_s
                    if pos == 0:
                        p.ready[(sender, 0)] = float(body.ready_at)
            if p.rule:
                return self._baton(body.rehearsal, p, conv) if p.baton is not None else []
        elif isinstance(body, ExploreReady):
            p.ready[(sender, body.position)] = body.ready_at
        elif isinstance(body, Intention):
            p.chosen[(sender, body.position)] = body.chosen
        else:
            return []
        return self._advance(body.rehearsal, p)

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
                for m in e.following:     # only we could run it: tell the next machines
                    if m == self.machine:
                        p.ready[(e.order, e.position + 1)] = e.quoted[1]
                    else:
                        out.append(Send(m, ExploreReady(number, e.position + 1, e.quoted[1],
                                                        e.order), e.conv))
            p.next += 1
        if p.next == len(p.entries):
            del self.passes[number]
        return out

    # -- non-delay dispatch passes ---------------------------------------------------------
    def _next(self, p: _MachinePass) -> tuple[_Entry, float, list[float]] | None:
        """The operation this machine would dispatch next, when, and its priority."""
        ready = [(p.ready[(e.order, e.position)], e) for e in p.entries
                 if (e.order, e.position) in p.ready and (e.order, e.position) not in p.gone]
        if not ready:
            return None
        at = max(p.free_at, min(r for r, _ in ready))
        best: tuple[list[float], _Entry] | None = None
        for r, e in ready:
            if r <= at + 1e-9:
                prio = dispatch_priority(p.rule, ready_at=r, duration_s=e.duration_s,
                                         static=e.key, job=self.job.get(e.order, 0.0))
                if best is None or prio < best[0]:
                    best = (prio, e)
        assert best is not None
        return best[1], at, best[0]

    def _baton(self, number: int, p: _MachinePass, conv: str) -> list[Action]:
        """Apply the baton's updates for this machine; while this machine's next dispatch
        is the least, dispatch (telling the order by ``explore_quote``); then pass it on."""
        if p.baton is None or p.registered != self.orders:
            return []                     # wait for every order's registration
        b, p.baton = p.baton, None
        # whatever came over the wire: numbers only, or the comparisons below would fail
        table = {m: e for m, e in b.table.items()
                 if isinstance(e, list) and all(_number(x) for x in e)}
        free = {m: float(f) for m, f in b.free.items() if _number(f)}
        pending: list[list] = []

        def update(u: object) -> None:
            if not (isinstance(u, list) and len(u) == 5 and isinstance(u[0], str)
                    and u[1] in ("init", "ready", "drop") and _number(u[4])):
                return
            if u[0] != self.machine:
                pending.append(u)
            elif u[1] == "ready" and isinstance(u[4], (int, float)):
                p.ready[(u[2], u[3])] = float(u[4])
            elif u[1] == "drop":
                p.gone.add((u[2], u[3]))

        for u in b.pending:
            update(u)
        out: list[Action] = []
        while True:
            nxt = self._next(p)
            table[self.machine] = [] if nxt is None else [nxt[1], *nxt[2]]
            free[self.machine] = p.free_at
            holder = next_hop(table, free, pending)
            if holder != self.machine or nxt is None:
                break
            # no operation anywhere can be ready before this start: dispatch it
            e, start, _ = nxt
            finish = start + e.duration_s
            p.free_at = finish
            p.gone.add((e.order, e.position))
            for m in e.others:
                update([m, "drop", e.order, e.position, 0.0])
            for m in e.following:
                update([m, "ready", e.order, e.position + 1, finish])
            out.append(Send(e.order, ExploreQuote(number, e.position, start, finish, p.load_s),
                            e.conv))
        if len(p.gone) >= len(p.entries):
            self.passes.pop(number, None)
        if holder is not None:
            out.append(Send(holder, Baton(number, table, free, pending), conv))
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
