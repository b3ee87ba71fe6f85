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
* **The plan's float** (ADR 97). In a rehearsed cell an energy-aware order's planned
  call says the latest its operation may finish and keep the plan
  (``latest_finish_at``: its next operation's planned start, or the plan's end, or its
  due date if sooner and met).  With ``plan_shift`` (the default) the machine re-times
  its committed tasks whenever one is awarded: each moved later, within that bound and
  before its own next task, only to a start that lowers its energy cost — the priced
  right-justifying pass of agents/energy/right_shift.py over its own timeline, sequence
  kept — and holds a moved task until its new start, sleeping meanwhile if that pays.
  Not under a peak cap (the pass knows nothing of power leases).
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
  ADR 73) — except by a rehearsed cell's machine that has run its share of
  the plan (it has finished work and holds no task: every operation was
  negotiated at once when the rehearsal ended), which sleeps at once (ADR 94).  Under a peak cap
  the early wake-up is left out: waking draws power, and only an operation's
  lease covers it.  A sleeping machine quotes its slots its wake-up later.
* **Off.** A machine whose cell describes its cold start (``wake.off`` with a
  time or an energy) may also be switched off.  Over a gap ``g`` standby uses
  ``standby_kw·(g − wake_s) + wake_kwh`` and off the same with off's figures;
  :attr:`MachineEnergy.off_after_s` is the shortest gap from which off uses
  less than standby (the longer, dearer cold start counted) and than idle.
  A known gap at least that long is slept through off, a shorter one past the
  break-even in standby.  A gap whose end is unknown keeps the rule above and
  deepens it: idle for the break-even, then standby, then off once the gap has
  lasted ``off_after_s`` — the lower envelope of the three states' energy
  lines, so never worse than twice the best choice in hindsight.  A machine
  whose cell says nothing of off (its defaults, 0 kW and a free instant
  wake-up, describe no real machine) is never switched off.
"""

from __future__ import annotations

from dataclasses import dataclass

from agents.cell.energy import PowerDraw
from agents.cell.tariff import HOUR_S, TimeOfUse, standby_break_even_s

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
    #: in a rehearsed cell, run planned work later within the plan's float when cheaper
    #: (agents/machine.py ``_retime``, ADR 97)
    plan_shift: bool = True

    @property
    def wake_s(self) -> float:
        """The wake-up from standby."""
        return self.draw.wake.standby.time_s

    def wake_from(self, asleep: str) -> float:
        """Seconds to wake from ``asleep`` (standby or off)."""
        return self.draw.wake.off.time_s if asleep == "off" else self.wake_s

    @property
    def off_after_s(self) -> float | None:
        """The shortest gap worth sleeping through off rather than standby or idle; None
        if off is not described (no ``wake.off``), standby is not used, or off never pays."""
        d = self.draw
        cold = d.wake.off
        if self.break_even_s is None or (cold.time_s <= 0 and cold.energy_kwh <= 0):
            return None
        be_off = standby_break_even_s(d.idle, d.off, cold.time_s, cold.energy_kwh)
        if be_off is None or d.off >= d.standby_kw:
            return None
        # standby and off over a gap g: kw·(g − wake_s) + wake_kwh; equal at g_so
        warm = d.wake.standby
        g_so = ((cold.energy_kwh - warm.energy_kwh) * HOUR_S
                - d.off * cold.time_s + d.standby_kw * warm.time_s) / (d.standby_kw - d.off)
        return max(be_off, g_so, cold.time_s)

    def sleep_state(self, gap_s: float) -> str | None:
        """What to sleep through a known gap in: ``off``, ``standby``, or None (idle)."""
        if not self.worth_sleeping(gap_s):
            return None
        off = self.off_after_s
        return "off" if off is not None and gap_s >= off else "standby"

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
