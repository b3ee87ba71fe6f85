"""What an energy-aware machine knows: the price of a slot, and when sleeping pays.

Theory of operation
-------------------
A machine whose resource strategy is energy-aware
(:class:`agents.energy.strategies.EnergyAwareResource`) in a cell with a tariff
holds a :class:`MachineEnergy`.  It uses the cell's own tariff object
(:class:`agents.cell.tariff.TimeOfUse`), the one the run report prices the
plant's energy with, so a bid and the report cannot disagree on a price.

* **Pricing.** A slot costs what the operation draws above idle (setup, then
  busy for its capability) at the prices in force then — the idle part is
  drawn whether the operation runs or not, so it does not belong to the
  operation.  The proposal carries it as the cost term ``energy_cost``.
* **A later, cheaper slot.** With ``shift_max_s`` > 0 the machine also prices
  starts at the next tariff changes up to ``shift_max_s`` later, and offers the
  cheapest if it saves at least ``min_saving`` of the earliest slot's cost and
  still finishes by the call's due date.
* **Standby.** After every input, an idle, up machine with no work that can
  start now looks at the gap to the next start it expects: its booked work and
  the slots it has offered and still holds (an offer may be awarded in the
  same instant as a booking: a rehearsed plan's awards come in a burst).  If
  that gap is at least the standby break-even
  (:func:`agents.cell.tariff.standby_break_even_s`), it goes to standby; it
  wakes ``wake_s`` before the next booked start (a ``wake`` timer), or when
  an operation is started on it (the plant wakes it first).  A gap whose end
  is unknown (nothing booked, or the booked start passed: the part is late)
  is idled for the break-even first (agents/machine.py ``_sleep_or_not``;
  ADR 73).  Under a peak cap
  the early wake-up is left out: waking draws power, and only an operation's
  lease covers it.  A sleeping machine quotes its slots ``wake_s`` later.
"""

from __future__ import annotations

from dataclasses import dataclass

from agents.cell.energy import PowerDraw
from agents.cell.tariff import TimeOfUse, standby_break_even_s

__all__ = ["MachineEnergy"]


@dataclass(frozen=True)
class MachineEnergy:
    """A machine's power and the cell's tariff, for pricing slots and sleeping."""

    tariff: TimeOfUse
    draw: PowerDraw
    standby: bool = True
    wake_early: bool = True      # False under a peak cap
    shift_max_s: float = 0.0
    min_saving: float = 0.1

    @property
    def wake_s(self) -> float:
        return self.draw.wake.standby.time_s

    @property
    def break_even_s(self) -> float | None:
        """The shortest gap worth sleeping through; None if standby never pays (or is off)."""
        if not self.standby:
            return None
        d = self.draw
        return standby_break_even_s(d.idle, d.standby_kw, d.wake.standby.time_s,
                                    d.wake.standby.energy_kwh)

    def slot_cost(self, capability: str, start_at: float, setup_s: float,
                  processing_s: float) -> float:
        """The operation's energy above idle, priced at the tariff of its time."""
        d = self.draw
        busy = d.busy_by_capability.get(capability, d.busy)
        cut = start_at + setup_s
        return (self.tariff.cost(max(0.0, d.setup_kw - d.idle), start_at, cut)
                + self.tariff.cost(max(0.0, busy - d.idle), cut, cut + processing_s))

    def shift_candidates(self, earliest_at: float) -> list[float]:
        """Starts worth pricing: the earliest, then each tariff change within the shift."""
        out = [earliest_at]
        if self.shift_max_s <= 0:
            return out
        t = earliest_at
        while True:
            t = self.tariff.next_change_after(t)
            if t > earliest_at + self.shift_max_s:
                return out
            out.append(t)

    def worth_sleeping(self, gap_s: float) -> bool:
        be = self.break_even_s
        return be is not None and gap_s >= be
