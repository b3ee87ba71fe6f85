"""What an energy-aware order weighs in the rehearsal: each machine's slot priced.

Theory of operation
-------------------
A rehearsed cell (agents/rehearsal.py) calls every operation at the machine
its best rehearsal pass chose, so the real negotiation's energy weight
decides nothing: the choice is made in the rehearsal.  With the energy-aware
strategies (an :class:`~agents.energy.strategies.EnergyAwareResource` in a
cell with a tariff, and an order strategy with ``s_per_money`` > 0, such as
:class:`~agents.energy.strategies.EnergyCost`) the order's rehearsal holds a
:class:`PlanPricing`:

* choosing among the quotes of a keyed pass, it takes the least
  ``finish + s_per_money · energy cost`` instead of the earliest finish;
* the pass's result carries the order's energy cost, the collector sums it
  (``explore_result_priced``), and every order keeps, among the passes whose
  makespan is within ``makespan_tolerance`` (default 5 %) of the shortest pass
  found so far, the one with the least ``makespan + s_per_money · cell energy
  cost`` — the same exchange rate.  The band is a rule, not a weight: no
  exchange rate buys a plan longer than the band (ADR 66); the weight only
  trades inside it.  While the shortest pass improves the band narrows, and a
  kept plan that falls out of it gives way to the best one still inside.

The price of a slot is the machine's own (:meth:`MachineEnergy.slot_cost`,
the one its bids carry): setup, then busy for the capability, above idle, at
the tariff in force then.  With ``price_idle`` (the default, fourth round)
the plan also pays for the time machines are out of work: every machine at
its *floor* — standby if sleeping can pay (an aware machine sleeps through
gaps past its break-even), else idle — over the plan's horizon, and each slot
the step from the floor to idle.  That part splits by slot, so each order
prices its own slots; the floor over the horizon depends on the makespan only,
so every order adds the same.  The gaps between two operations on a machine
are priced by the pass's collector, which alone sees every order's slots
(``explore_result_priced`` carries them; ADR 93): a gap shorter than the
machine's standby break-even is idled (idle less the floor over it), a longer
one slept through in standby and woken ``wake_s`` before its end (one
wake-up's energy less the standby it replaces) — the rule the machine itself
follows (:meth:`PlanPricing.gap_cost`).  Before the first operation and after
the last, the machine stays at its floor.  A plan
that packs work onto fewer machines, or ends sooner, pays less floor.  Rehearsal time 0 is priced as the cell clock at which
the rehearsal started; the plan runs a rehearsal's length later (at most
``rehearsal_budget_share`` of the makespan), which moves no slot across a
tariff change by more than that.

**Priced dispatch passes** (order strategy ``priced_dispatch``, off by
default): after the plain dispatch passes, each of ``PRICED_DISPATCH`` is a
dispatch pass in which an order registers each operation only at the
machines whose slot, weighed as duration + ``s_per_money`` · energy cost at
the tariff's mean price (the dispatch decides the slot's time),
is within the pass's share of the least (:meth:`PlanPricing.cheaper`).  The
low-power machine then gets the operation where a plain dispatch gives it to
the first machine free.  Measured on mk01–mk09 their plans were never kept:
the keyed passes find shorter plans and these fall outside the makespan band
(docs/energy.md, ADR 78).

**Re-timing the plan kept** (order strategy ``retime``, on by default; ADR 93): without
energy passes, if the loop's plan kept came from a backward pass — priced at its mirrored,
right-justified times, which the run does not keep — one more pass re-times it
left-justified on its machines (the energy passes' first pass, below) and prices it there;
the backward passes' plans then leave the band, and the plan kept is the least score
among the forward plans and the re-timed one.

**Energy passes** (order strategy ``energy_passes`` = N > 0, 20 by default since ADR 98;
ADR 90): once the forward-backward loop ends, N more keyed passes, each order sending its
operations only to its machine in the plan they build on, keyed by that plan's starts
— the same serial schedule generation the loop uses.  The first moves nothing: it
re-times the plan kept, left-justified on its machines as the run will execute it,
and prices it at those times (a plan kept from a backward pass was priced at its
right-justified times, which the run does not keep).  In each later pass the order
whose turn it is (the orders take turns by pass number) moves one operation, drawn
with its seeded RNG among those with a machine whose :meth:`mean_cost` is lower, to
one such machine, drawn likewise; the pass's plan replaces the one built on if it is
within the band and costs less.  With energy passes on, the band counts the
rehearsal's own time — a plan must end within ``(1 + makespan_tolerance)`` · the
shortest pass *less the time rehearsed so far* (never below the shortest pass), as
the run is the rehearsal and then the plan — and the loop's plan kept is the least
energy cost the band admits (ties: the shorter), not the least weighed score: the
band, not the exchange rate, bounds the makespan.  Work: N passes of the loop's size.

**The reference** (``PlanPricing.reference``, order strategy ``reference``, on by
default; ADR 98): with energy passes, the orders first rehearse exactly as energy-blind
orders do — the same dispatch and keyed passes, quotes chosen by earliest finish, the
shortest plan kept, stopping at the bound, the passes or the budget as they do — and
only then run the weighed loop and the energy passes.  A weighed loop's shortest plan
can be a time unit longer than the one a makespan search finds (mk06: 20700 s against
20400 s), and a band measured from it let a plan past the target through.  The band is
measured from the reference instead: a plan must end within ``(1 + makespan_tolerance)``
· (the reference's plan + the time its rehearsal took) — the run energy-blind orders
would have made — less the whole rehearsal's time so far and the machines' wake-up lead
(:meth:`wake_lead_s`), never below the shortest plan; the reference's plan stays a
candidate, so the plan kept is never outside the band.  Work: the blind rehearsal's
passes more (few where it meets the bound).

**The wake-up lead** (ADR 94): an aware machine sleeps through a rehearsal longer
than its break-even, and is woken by its first award.  The plan's origin is put
:meth:`PlanPricing.wake_lead_s` later — the longest wake-up among the machines
asleep by then (and waking early: not under a peak cap) — so the booked starts
are the times the execution reaches; without it the plan's first operations ran
a wake-up late, so did everything after them, and a machine woken ``wake_s``
before a booked start idled until its late part came.

The order prices the quotes itself, from the cell file's power table (as it
knows the machines' capabilities and times), rather than the machines
pricing them on the wire: one new message for the sum, none for the quotes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from agents.cell.energy import WEEK_S
from agents.cell.tariff import standby_saving

from .aware import MachineEnergy

__all__ = ["PRICED_DISPATCH", "PlanPricing", "plan_pricing"]

#: The priced dispatch passes (order strategy ``priced_dispatch``), after the plain ones:
#: (rule, share) — each operation registered only at the machines whose weighed slot is
#: within that share of the least (:meth:`PlanPricing.cheaper`).
PRICED_DISPATCH: tuple[tuple[str, float], ...] = (("MWKR", 0.0), ("MWKR", 0.2))


@dataclass(frozen=True)
class PlanPricing:
    """The machines' slot prices and the order's exchange rate, for the rehearsal."""

    machines: Mapping[str, MachineEnergy]
    setup_s: Mapping[str, float]
    s_per_money: float
    #: a pass is kept only within this share of the shortest pass's makespan
    makespan_tolerance: float = 0.05
    #: price the machines' time out of work too (asleep at standby, or idle)
    price_idle: bool = True
    #: per machine, seconds per unit of each capability (the priced dispatch passes)
    durations: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    #: dispatch passes among each operation's cheaper machines, (rule, share) each
    dispatch_passes: tuple[tuple[str, float], ...] = ()
    #: energy passes after the forward-backward loop; with any, the plan kept is the
    #: least energy cost within the makespan band
    energy_passes: int = 0
    #: without energy passes: re-time a plan kept from a backward pass, left-justified as
    #: the run executes it, in one more pass, and keep the least score among it and the
    #: forward passes' plans (the energy passes' first pass does this already; ADR 93)
    retime: bool = True
    #: with energy passes: rehearse first exactly as energy-blind orders do (earliest
    #: finish, the shortest plan kept), and measure the band from that reference — the plan
    #: and rehearsal time of the cell the target compares with (ADR 98)
    reference: bool = True

    def wake_lead_s(self, idle_s: float) -> float:
        """How much later than the award round the plan starts (ADR 94), when the machines
        have been out of work ``idle_s`` since their start (the rehearsal): the longest
        wake-up from standby among the machines asleep by then — an aware machine sleeps
        once its idle clock, run from its start, reaches its break-even — and that wake
        early (none under a peak cap, where the operation's lease covers the wake-up).
        A machine asleep through the rehearsal is woken by its first award; without the
        lead a plan start within its wake-up ran late by it, and so did the plan after it.
        The same for every order: it depends on the cell file and the rehearsal's length."""
        return max((e.wake_s for e in self.machines.values()
                    if e.wake_early and e.break_even_s is not None
                    and e.break_even_s <= idle_s), default=0.0)

    def cost(self, machine: str, capability: str, start_at: float, finish_at: float) -> float:
        """The energy cost of the slot [start_at, finish_at) (cell time) at ``machine``,
        whose rehearsal slots hold a setup before the processing; 0 for a machine
        without a price (not energy-aware)."""
        energy = self.machines.get(machine)
        if energy is None:
            return 0.0
        setup = min(self.setup_s.get(machine, 0.0), max(0.0, finish_at - start_at))
        return energy.slot_cost(capability, start_at, setup, finish_at - start_at - setup)

    def floor_kw(self, machine: str) -> float:
        """What ``machine`` draws out of work in a plan: standby if sleeping can pay
        (a break-even exists), else idle; 0 without a price or with ``price_idle`` off."""
        energy = self.machines.get(machine)
        draw = getattr(energy, "draw", None)
        if not self.price_idle or energy is None or draw is None:
            return 0.0
        return draw.standby_kw if energy.break_even_s is not None else draw.idle

    def awake_cost(self, machine: str, start_at: float, finish_at: float) -> float:
        """The part of a slot's cost between the machine's floor and idle: what using the
        machine then costs beyond its bid (it would otherwise sleep)."""
        energy = self.machines.get(machine)
        draw = getattr(energy, "draw", None)
        if not self.price_idle or energy is None or draw is None:
            return 0.0
        extra = draw.idle - self.floor_kw(machine)
        return energy.tariff.cost(extra, start_at, finish_at) if extra > 0 else 0.0

    def floor_cost(self, start_at: float, finish_at: float) -> float:
        """Every priced machine at its floor over a plan's horizon (cell time)."""
        total = 0.0
        for machine, energy in sorted(self.machines.items()):
            kw = self.floor_kw(machine)
            if kw > 0:
                total += energy.tariff.cost(kw, start_at, finish_at)
        return total

    def gap_cost(self, machine: str, start_at: float, finish_at: float) -> float:
        """What a gap ``[start_at, finish_at)`` (cell time) between two operations on
        ``machine`` costs beyond its floor, which :meth:`floor_cost` already counts over
        it: the machine's own rule (:meth:`MachineEnergy.worth_sleeping`) — a gap shorter
        than its standby break-even is idled (idle less standby over the gap), a longer
        one slept through in standby and woken ``wake_s`` before its end (one wake-up's
        energy less the standby it replaces: :func:`standby_saving`).  0 where the floor
        is idle (no break-even), without a price or with ``price_idle`` off."""
        energy = self.machines.get(machine)
        draw = getattr(energy, "draw", None)
        if not self.price_idle or energy is None or draw is None or finish_at <= start_at \
                or energy.break_even_s is None:
            return 0.0
        tou = energy.tariff
        idle = tou.cost(draw.idle, start_at, finish_at)
        if energy.worth_sleeping(finish_at - start_at):
            saving = standby_saving(tou, start_at, finish_at, idle_kw=draw.idle,
                                    standby_kw=draw.standby_kw, wake_s=energy.wake_s,
                                    wake_kwh=draw.wake.standby.energy_kwh)
            idle -= saving or 0.0
        return idle - tou.cost(draw.standby_kw, start_at, finish_at)

    def gaps_cost(self, slots: Mapping[str, list[tuple[float, float]]]) -> float:
        """:meth:`gap_cost` of every gap between two operations of a plan, per machine
        (``slots``: machine -> its operations' ``(start, finish)`` in cell time; the time
        before the first and after the last stays at the floor)."""
        total = 0.0
        for machine, spans in sorted(slots.items()):
            end = None
            for a, b in sorted(spans):
                if end is not None and a > end:
                    total += self.gap_cost(machine, end, a)
                end = b if end is None else max(end, b)
        return total

    def mean_cost(self, machine: str, capability: str, quantity: int) -> float | None:
        """The operation's energy cost at ``machine`` at the tariff's mean price over the
        week (the slot's time is not known yet): setup and busy above idle, and the
        step from the floor to idle over the whole slot; None if the machine has no
        price or cannot run it.  With ``price_idle`` off nothing out of work is priced:
        the floor is idle itself, so the step term is 0 (not the whole idle draw)."""
        energy = self.machines.get(machine)
        unit = self.durations.get(machine, {}).get(capability)
        if energy is None or unit is None:
            return None
        d = energy.draw
        setup, processing = self.setup_s.get(machine, 0.0), unit * quantity
        busy = d.busy_by_capability.get(capability, d.busy)
        kw_s = (max(0.0, d.setup_kw - d.idle) * setup + max(0.0, busy - d.idle) * processing
                + (max(0.0, d.idle - self.floor_kw(machine)) * (setup + processing)
                   if self.price_idle else 0.0))
        return energy.tariff.cost(kw_s / WEEK_S, 0.0, WEEK_S)

    def cheaper(self, machines: list[str], capability: str, quantity: int,
                share: float) -> list[str]:
        """The machines among ``machines`` whose slot for the operation, weighed —
        its duration + ``s_per_money`` · :meth:`mean_cost` — is within ``share`` of the
        least (in their order); all of them if one has no price."""
        weights = []
        for m in machines:
            money = self.mean_cost(m, capability, quantity)
            if money is None:
                return list(machines)
            seconds = self.durations[m][capability] * quantity + self.setup_s.get(m, 0.0)
            weights.append(self.weighed(seconds, money))
        least = min(weights, default=0.0)
        return [m for m, w in zip(machines, weights) if w <= least * (1.0 + share) + 1e-9]

    def weighed(self, seconds: float, money: float) -> float:
        """Seconds and money on one scale (seconds)."""
        return seconds + self.s_per_money * money


def plan_pricing(agents: Mapping[str, object], order_strategy: object) -> PlanPricing | None:
    """The pricing the orders' rehearsal weighs with, or None (energy-blind): the machines
    among ``agents`` that price their slots (an energy-aware resource in a cell with a
    tariff), at the order strategy's ``s_per_money`` — None without either, so the
    default strategies rehearse exactly as before."""
    rate = float(getattr(order_strategy, "s_per_money", 0.0) or 0.0)
    priced = {aid: a.energy for aid, a in agents.items()     # type: ignore[attr-defined]
              if isinstance(getattr(a, "energy", None), MachineEnergy)}
    if rate <= 0 or not priced:
        return None
    tolerance = float(getattr(order_strategy, "makespan_tolerance", 0.05))
    price_idle = bool(getattr(order_strategy, "price_idle", True))
    return PlanPricing(priced, {aid: float(getattr(agents[aid], "setup_s", 0.0))
                                for aid in priced}, rate, tolerance, price_idle,
                       {aid: dict(getattr(agents[aid], "capabilities", {})) for aid in priced},
                       PRICED_DISPATCH if getattr(order_strategy, "priced_dispatch", False)
                       else (), int(getattr(order_strategy, "energy_passes", 0) or 0),
                       bool(getattr(order_strategy, "retime", True)),
                       bool(getattr(order_strategy, "reference", True)))
