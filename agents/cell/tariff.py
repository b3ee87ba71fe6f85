"""The tariff as pure lookups over simulation time, and the standby break-even.

:class:`TimeOfUse` maps simulation seconds onto the tariff's week (time 0
is ``energy.clock_at_start``) and answers what a kilowatt costs *then*:
``price_at(t)``, ``co2_at(t)``, and over an interval ``cost(kw, t0, t1)``
and ``co2_kg(kw, t0, t1)``, split exactly at the period boundaries (and
across the Sunday→Monday wrap).  The KPIs price what the plant drew with
it; an energy-aware machine agent prices a proposed slot with the same
object, so a bid and the report cannot disagree on a price.

:func:`standby_break_even_s` and :func:`standby_saving` say whether a gap
is long enough to pay for going to standby and waking up again — in kWh,
and in money under the tariff (a gap in the cheap night saves less than
the same gap at the evening peak).  Pure functions, no clock, no I/O.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator
from dataclasses import dataclass

from agents.cell.energy import WEEK_S, EnergySettings, Tariff, period_spans, tariff_problems

__all__ = ["Band", "TimeOfUse", "standby_break_even_s", "standby_saving"]

HOUR_S = 3600.0


@dataclass(frozen=True)
class Band:
    """One stretch of the week with one price: ``[start_s, end_s)`` in week seconds."""

    start_s: float
    end_s: float
    price: float
    co2_kg_per_kwh: float | None


class TimeOfUse:
    """A weekly tariff over simulation time; see the module docstring."""

    def __init__(self, tariff: Tariff, start_offset_s: float = 0.0) -> None:
        problems = tariff_problems(tariff)
        if problems:
            raise ValueError("; ".join(msg for _, msg in problems))
        bands = [Band(s, e, p.price, p.co2_kg_per_kwh)
                 for p in tariff.periods for s, e in period_spans(p)]
        bands.sort(key=lambda b: b.start_s)
        self.bands = tuple(bands)
        self._starts = [b.start_s for b in bands]
        self.offset_s = start_offset_s % WEEK_S
        self.currency = tariff.currency
        self.has_co2 = all(b.co2_kg_per_kwh is not None for b in bands)

    @classmethod
    def from_settings(cls, energy: EnergySettings) -> TimeOfUse:
        return cls(energy.tariff, energy.start_offset_s)

    def band_at(self, t: float) -> Band:
        """The band in force at simulation time ``t`` (a boundary belongs to the later band)."""
        w = (t + self.offset_s) % WEEK_S
        return self.bands[bisect.bisect_right(self._starts, w) - 1]

    def price_at(self, t: float) -> float:
        return self.band_at(t).price

    def co2_at(self, t: float) -> float | None:
        return self.band_at(t).co2_kg_per_kwh

    def next_change_after(self, t: float) -> float:
        """The first simulation time after ``t`` where the band changes."""
        w = (t + self.offset_s) % WEEK_S
        band = self.band_at(t)
        return t + (band.end_s - w)

    def segments(self, t0: float, t1: float) -> Iterator[tuple[float, float, Band]]:
        """``[t0, t1)`` cut at every band boundary: ``(a, b, band)`` in simulation time."""
        a = t0
        while a < t1:
            b = min(t1, self.next_change_after(a))
            if b <= a:                  # a boundary lost to rounding: step past it
                b = min(t1, math.nextafter(a, math.inf))
            yield a, b, self.band_at(a)
            a = b

    def cost(self, kw: float, t0: float, t1: float) -> float:
        """What drawing ``kw`` from ``t0`` to ``t1`` costs."""
        return sum(kw * (b - a) / HOUR_S * band.price for a, b, band in self.segments(t0, t1))

    def co2_kg(self, kw: float, t0: float, t1: float) -> float:
        """CO₂ of drawing ``kw`` from ``t0`` to ``t1``; 0 without intensities."""
        return sum(kw * (b - a) / HOUR_S * (band.co2_kg_per_kwh or 0.0)
                   for a, b, band in self.segments(t0, t1))


def standby_break_even_s(idle_kw: float, standby_kw: float, wake_s: float,
                         wake_kwh: float) -> float | None:
    """The shortest idle gap for which standby (then waking up in time) uses no more energy
    than staying idle; None if standby never pays (it draws as much as idle).

    Over a gap ``g``: idle uses ``idle_kw·g``; standby uses ``standby_kw·(g − wake_s)`` plus
    ``wake_kwh``.  Equal at ``g = (wake_kwh·3600 − standby_kw·wake_s) / (idle_kw − standby_kw)``,
    and no gap shorter than the wake-up itself can be slept through."""
    if idle_kw <= standby_kw:
        return None
    g = (wake_kwh * HOUR_S - standby_kw * wake_s) / (idle_kw - standby_kw)
    return max(wake_s, g)


def standby_saving(tou: TimeOfUse, t0: float, t1: float, *, idle_kw: float, standby_kw: float,
                   wake_s: float, wake_kwh: float) -> float | None:
    """Money saved by sleeping through the gap ``[t0, t1)`` instead of idling, under the tariff:
    standby from ``t0``, waking at ``t1 − wake_s`` (the wake energy drawn evenly over the
    wake-up, at the prices then).  None if the gap is shorter than the wake-up; negative when
    sleeping costs more."""
    wake_at = t1 - wake_s
    if wake_at < t0:
        return None
    idle = tou.cost(idle_kw, t0, t1)
    asleep = tou.cost(standby_kw, t0, wake_at)
    if wake_s > 0:
        asleep += tou.cost(wake_kwh * HOUR_S / wake_s, wake_at, t1)
    else:
        asleep += wake_kwh * tou.price_at(t1)
    return idle - asleep
