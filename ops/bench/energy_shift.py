"""How much moving work *later*, into a cheaper tariff period, could save on a run.

Theory of operation
-------------------
Issue 17 asks that machines "may also offer a later, cheaper slot when the call's
due date leaves slack".  Before building that (seventh round, ADR 80) the bench
measures how much it could ever buy, on the energy-aware run's own schedule:

* ``peak_work_share`` — the share of the run's energy cost that is work (setup and
  busy, above the machine's standby power) drawn at the tariff's highest price; the
  money a time shift could act on at all.
* ``later_shift_bound_pct`` — a loose bound: every operation moved on its own to its
  cheapest start in ``[its start, limit − its length]`` (``limit`` = 1.05 · the blind
  makespan, the makespan target), paying standby instead of its work in the slot it
  leaves — no precedence, no other operation on the machine, no due date, no wake-up.
  As a share of the run's cost (negative: a saving).  No real plan saves more.
* ``later_shift_float_pct`` — the same, but each operation only within its *float*:
  the latest start that keeps the run's own sequence on every machine and along every
  route, with every later operation as late as it can be and all done by ``limit``.
  Each operation is still moved alone (two may spend the same float), so this too is
  an upper bound — of what right-shifting the run's plan, unchanged, could save.
* ``later_shift_weighed_pct`` — as the first, but each operation moved only as far as the
  order's exchange rate pays: to the start of least delay + ``s_per_money`` · cost (the
  rule a priced quote would be chosen by, agents/energy/rehearsal.py), the default
  strategy's 600 s per unit of money unless told.
* ``price_first_falls_s`` — the first time after the run's start (within a week) at
  which the price falls.  Work can only move later into a cheaper period if the band reaches past
  it; before it the tariff never falls, so every later slot costs at least as much.

Earlier slots are not counted: the rehearsal's keyed passes already place each
operation at the earliest gap after its predecessor (agents/rehearsal.py), so
moving work earlier means a shorter plan, which the passes search anyway.

Pure functions over a run's event log and its cell; no run of its own.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypedDict

from agents.cell.energy import WEEK_S, PowerDraw
from agents.cell.tariff import TimeOfUse

__all__ = ["ShiftFigures", "Slot", "later_shift", "latest_starts", "op_slots", "slot_cost"]

HOUR_S = 3600.0


class ShiftFigures(TypedDict):
    """:func:`later_shift`'s figures (module docstring)."""

    peak_work_share: float
    later_shift_bound_pct: float
    later_shift_float_pct: float
    later_shift_weighed_pct: float
    price_first_falls_s: float | None     # None: the price never falls within a week


@dataclass(frozen=True, slots=True)
class Slot:
    """One operation as the plant ran it: ``[start, finish)``, the first ``setup_s`` a setup."""

    machine: str
    capability: str
    start: float
    setup_s: float
    finish: float
    task: str = ""


def op_slots(cfg: Any, lines: Iterable[str]) -> list[Slot]:
    """The operations of a run (``op_start`` to ``op_done`` / ``op_abort``), in log order."""
    caps = {o.id: [s.capability for s in cfg.product(o.product).routing] for o in cfg.orders}
    started: dict[str, dict[str, Any]] = {}
    out: list[Slot] = []
    for line in lines:
        ev = json.loads(line)
        if ev["ev"] == "op_start":
            started[ev["task"]] = ev
        elif ev["ev"] in ("op_done", "op_abort") and ev["task"] in started:
            s = started.pop(ev["task"])
            k = int(s["task"].rpartition("/")[2])
            setup = min(float(s.get("setup_s", 0.0)), ev["t"] - s["t"])
            out.append(Slot(s["machine"], caps[s["order"]][k], s["t"], setup, ev["t"],
                            s["task"]))
    return out


def slot_cost(tou: TimeOfUse, draw: PowerDraw, slot: Slot, start: float) -> float:
    """What ``slot``'s work costs above standby if it started at ``start`` instead."""
    busy = draw.busy_by_capability.get(slot.capability, draw.busy)
    floor = draw.standby_kw
    cut = start + slot.setup_s
    return (tou.cost(max(0.0, draw.setup_kw - floor), start, cut)
            + tou.cost(max(0.0, busy - floor), cut, start + slot.finish - slot.start))


def _starts(tou: TimeOfUse, slot: Slot, latest: float) -> list[float]:
    """The candidate starts in ``[slot.start, latest]``: the cheapest placement of a
    window over a piecewise-constant price starts or ends at a price change."""
    length = slot.finish - slot.start
    out = [slot.start, latest]
    for a, _, _ in tou.segments(slot.start, latest + length):
        for t in (a, a - length):
            if slot.start < t < latest:
                out.append(t)
    return out


def later_shift(tou: TimeOfUse, draws: Mapping[str, PowerDraw], slots: Iterable[Slot],
                limit_s: float, run_cost: float, s_per_money: float = 600.0
                ) -> ShiftFigures:
    """The module docstring's figures for a run's ``slots`` and its ``run_cost``."""
    slots = list(slots)
    top = max(band.price for band in tou.bands)
    peak = saved = floated = weighed = 0.0
    for s, late in zip(slots, latest_starts(slots, limit_s)):
        draw = draws[s.machine]
        here = slot_cost(tou, draw, s, s.start)
        peak += _peak_part(tou, draw, s, top)
        latest = limit_s - (s.finish - s.start)
        if latest > s.start:
            costs = [(t, slot_cost(tou, draw, s, t)) for t in _starts(tou, s, latest)]
            saved += here - min(c for _, c in costs)
            weighed += here - min(costs, key=lambda tc: tc[0] - s.start
                                  + s_per_money * tc[1])[1]
        if late > s.start:
            floated += here - min(slot_cost(tou, draw, s, t) for t in _starts(tou, s, late))
    segments = list(tou.segments(0.0, WEEK_S))
    fall = next((a for (_, _, p), (a, _, q) in zip(segments, segments[1:])
                 if q.price < p.price), None)

    def pct(x: float) -> float:
        return round(-100.0 * x / run_cost, 1) + 0.0 if run_cost else 0.0

    return {"peak_work_share": round(peak / run_cost, 3) if run_cost else 0.0,
            "later_shift_bound_pct": pct(saved), "later_shift_float_pct": pct(floated),
            "later_shift_weighed_pct": pct(weighed),
            "price_first_falls_s": fall}


def latest_starts(slots: list[Slot], limit_s: float) -> list[float]:
    """Each slot's latest start (``later_shift_float_pct``): its successors on its machine
    and on its route (task ``order/k`` → ``order/k+1``) as late as they can be, the last
    done by ``limit_s``; never earlier than the slot's own start."""
    order = sorted(range(len(slots)), key=lambda i: (slots[i].start, i))
    nxt_on_machine: dict[int, int] = {}
    last: dict[str, int] = {}
    for i in order:
        if slots[i].machine in last:
            nxt_on_machine[last[slots[i].machine]] = i
        last[slots[i].machine] = i
    by_task = {s.task: i for i, s in enumerate(slots)}
    late = [0.0] * len(slots)
    for i in reversed(order):
        s = slots[i]
        finish = limit_s
        order_id, _, k = s.task.rpartition("/")
        follow = [nxt_on_machine.get(i), by_task.get(f"{order_id}/{int(k) + 1}")
                  if k.isdigit() else None]
        for j in follow:
            if j is not None and slots[j].start >= s.start:
                finish = min(finish, late[j])
        late[i] = max(s.start, finish - (s.finish - s.start))
    return late


def _peak_part(tou: TimeOfUse, draw: PowerDraw, s: Slot, top: float) -> float:
    """The part of ``s``'s work cost drawn at price ``top`` (setup and busy)."""
    busy = draw.busy_by_capability.get(s.capability, draw.busy)
    cut = s.start + s.setup_s
    total = 0.0
    for kw, t0, t1 in ((draw.setup_kw, s.start, cut), (busy, cut, s.finish)):
        extra = max(0.0, kw - draw.standby_kw)
        total += sum(extra * (b - a) / HOUR_S * band.price
                     for a, b, band in tou.segments(t0, t1) if band.price == top)
    return total
