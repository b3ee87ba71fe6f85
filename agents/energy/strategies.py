"""Energy-aware strategies: a resource that prices energy, an order that weighs it.

Named in a cell file by dotted path (agents/negotiation/strategies.py resolves
``package.module:Class``)::

    negotiation:
      strategy:
        resource: {name: "agents.energy.strategies:EnergyAwareResource",
                   params: {standby: true, shift_max_s: 0}}
        order: {name: "agents.energy.strategies:EnergyCost",
                params: {s_per_money: 600, lateness_weight: 10, makespan_tolerance: 0.05}}

Neither changes the default strategies; a cell without an ``energy:`` section
has no tariff, and there the resource bids like the default one.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from agents.negotiation.strategies import DefaultResource, OrderStrategy, Slot
from agents.protocol.messages import CallForProposals, Proposal

__all__ = ["EnergyAwareResource", "EnergyCost"]


class EnergyAwareResource(DefaultResource):
    """The default resource, plus: the proposal's ``energy_cost`` (the tariff's price of
    the operation's energy above idle), standby through gaps that pay for the wake-up,
    and optionally a later, cheaper slot (agents/energy/aware.py).

    ``standby``: sleep through gaps longer than the break-even.  ``shift_max_s``: how much
    later than the earliest a cheaper slot may start (0: never shift).  ``min_saving``:
    the share of the energy cost a later slot must save.  ``plan_shift``: in a rehearsed
    cell, run planned work later within the plan's float when cheaper (ADR 97)."""

    name = "energy_aware"
    energy_aware = True

    def __init__(self, *, standby: bool = True,
                 shift_max_s: Annotated[float, Field(ge=0)] = 0.0,
                 min_saving: Annotated[float, Field(ge=0, le=1)] = 0.1,
                 plan_shift: bool = True) -> None:
        self.standby = standby
        self.shift_max_s = shift_max_s
        self.min_saving = min_saving
        self.plan_shift = plan_shift

    def price(self, cfp: CallForProposals, slot: Slot) -> dict[str, float] | None:
        cost: dict[str, Any] | None = super().price(cfp, slot)
        if cost is not None:
            cost["energy_cost"] = slot.energy_cost
        return cost


class EnergyCost(OrderStrategy):
    """Earliest finish, traded against energy cost and lateness.

    score = finish + ``lateness_weight`` · (seconds past the due date)
    + ``s_per_money`` · energy cost: one unit of money is worth ``s_per_money`` seconds
    of later finish (0: earliest finish).  Proposals without ``energy_cost`` cost 0.

    ``makespan_tolerance``: in a rehearsed cell, the rehearsal keeps the least-cost plan
    among those within this share of the shortest plan found (a rule, not a weight: the
    weight trades only inside that band; agents/energy/rehearsal.py).  ``price_idle``:
    the rehearsal's price also counts the machines' time out of work (at standby where
    sleeping pays, else idle), so a plan that leaves machines waiting pays for it.
    ``priced_dispatch``: the rehearsal also runs dispatch passes among each operation's
    cheaper machines (agents/energy/rehearsal.py ``PRICED_DISPATCH``; off by default:
    measured, they were never the plan kept, docs/energy.md).  ``energy_passes``: after the
    rehearsal's loop, that many passes each try one operation on a machine that uses
    less energy, kept if the plan stays within the band and costs less; the plan kept
    is then the least energy cost within the band, the band less the time rehearsed
    (agents/energy/rehearsal.py, "Energy passes"; 20 by default since ADR 98, 0: off).
    ``reference``: with energy passes, rehearse first as energy-blind orders do and
    measure the band from that plan and its rehearsal time (ADR 98; on by default).
    ``retime``:
    without energy passes, a plan kept from a backward pass is re-timed in one more pass,
    left-justified as the run executes it, and priced there (``PlanPricing.retime``; on by
    default, ADR 93: measured, it lowers the cost and breaks no target)."""

    name = "energy_cost"

    def __init__(self, *, s_per_money: Annotated[float, Field(ge=0)] = 600.0,
                 lateness_weight: Annotated[float, Field(ge=0)] = 10.0,
                 makespan_tolerance: Annotated[float, Field(ge=0)] = 0.05,
                 price_idle: bool = True, priced_dispatch: bool = False,
                 energy_passes: Annotated[int, Field(ge=0)] = 20,
                 retime: bool = True, reference: bool = True) -> None:
        self.s_per_money = s_per_money
        self.lateness_weight = lateness_weight
        self.makespan_tolerance = makespan_tolerance
        self.price_idle = price_idle
        self.priced_dispatch = priced_dispatch
        self.energy_passes = energy_passes
        self.retime = retime
        self.reference = reference

    def score(self, cfp: CallForProposals, proposal: Proposal) -> float:
        late = max(0.0, proposal.finish_at - cfp.due_at)
        energy = float(proposal.cost.get("energy_cost", 0.0))
        return proposal.finish_at + self.lateness_weight * late + self.s_per_money * energy
