"""What standby saved in a run, and what it could have saved on the same schedule.

Why a module of its own (fifth round, ADR 73): the bench's ``idle_waste_saved_share``
compares the aware run's out-of-work energy (idle, standby, wake-ups) with the *blind*
run's idle energy.  That mixes two things: whether aware machines sleep when it pays,
and how much time their schedule leaves them out of work.  An aware plan that moves
work onto fewer or less hungry machines leaves the others out of work longer (mk03's
aware run: three times the blind run's out-of-work time at idle power), and the figure
falls even when every long gap is slept through.  These two figures separate them, both
from the aware run's own event log:

* ``standby_saved_kwh`` — the run's out-of-work energy had no machine ever slept (its
  log without ``power_state`` events, through the same meter) minus what it drew out of
  work (idle, standby, wake-up).  Its share of the blind run's idle energy is the
  issue's "standby saving … of the idle energy that energy-blind agents waste" read
  literally (``standby_saved_share``).
* ``standby_clairvoyant_kwh`` — what standby could have saved on that same schedule
  knowing every gap in advance: each out-of-work gap slept through if that pays
  (standby from its start, waking ``wake_s`` before the next operation; the last gap
  of a machine without waking), in energy (``standby_vs_clairvoyant``: the machines'
  decisions against that best).

Pure functions over a parsed event log; no run of its own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from agents.cell.energy import PowerDraw

__all__ = ["clairvoyant_standby_kwh", "never_asleep"]

HOUR_S = 3600.0


def never_asleep(evs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The log as if no machine had ever slept: the same operations at the same times."""
    return [e for e in evs if e.get("ev") != "power_state"]


def _gap_saving_kwh(d: PowerDraw, gap_s: float, wakes: bool) -> float:
    """Energy saved by sleeping through one gap instead of idling (0 if it does not pay)."""
    w = d.wake.standby.time_s if wakes else 0.0
    if gap_s < w:
        return 0.0
    asleep = d.standby_kw * (gap_s - w) / HOUR_S + (d.wake.standby.energy_kwh if wakes else 0.0)
    return max(0.0, d.idle * gap_s / HOUR_S - asleep)


def clairvoyant_standby_kwh(evs: Sequence[Mapping[str, Any]], draws: Mapping[str, PowerDraw],
                            end_at: float) -> float:
    """The most standby could save on the schedule of ``evs`` (time order), knowing every
    gap: a machine is out of work from the run's start or an operation's end (not down)
    to the next operation's start or ``end_at``."""
    free_at: dict[str, float | None] = {m: 0.0 for m in draws}
    down: set[str] = set()
    total = 0.0
    for e in evs:
        m = str(e.get("machine", ""))
        if m not in draws:
            continue
        ev, t = e.get("ev"), float(e["t"])
        if ev in ("op_start", "fault"):
            f = free_at[m]
            if f is not None:
                total += _gap_saving_kwh(draws[m], t - f, wakes=True)
            free_at[m] = None
            if ev == "fault":
                down.add(m)
        elif ev in ("op_done", "op_abort") and m not in down:
            free_at[m] = t
        elif ev == "repaired" and m in down:
            down.discard(m)
            free_at[m] = t
    for m, f in free_at.items():
        if f is not None and end_at > f:
            total += _gap_saving_kwh(draws[m], end_at - f, wakes=False)
    return total
