"""A priced right-justifying pass: move planned work later, inside the plan's float, when cheaper.

Theory of operation
-------------------
ADR 80 measured that moving work later into a cheaper tariff period saves money
on the long instances, but only inside the kept plan's *float*.  This pass
does exactly that, with no weight and no threshold:

* Operations are visited latest start first.  Each may move later only up to
  its latest start: before its route successor's start and its machine's next
  operation's start (both as already moved: they were visited first), by the
  plan's makespan, and by its order's due date if it is finished by it now.
  The sequence on every machine and along every route is kept, so the
  makespan cannot grow and no due date met is broken.
* Among the starts in ``[start, latest]`` it takes the one that lowers the
  machine's energy cost the most, and only if strictly lower: the operation's
  own cost above idle at the tariff then (:meth:`MachineEnergy.slot_cost`)
  plus the change of the two gaps around it — a gap the machine sleeps
  through (rent-or-buy: at least the standby break-even) pays standby and a
  wake-up instead of idle (:func:`agents.cell.tariff.standby_saving`).  Idle
  over the whole horizon is the same for every start and drops out.
* The cost is piecewise linear in the start between *breakpoints*: a price
  change at the start, at the finish, the points where a neighbouring gap
  crosses the break-even, and the ends of the range.  Only those are priced.

Machines without a price (not energy-aware) keep their slots.  The pass knows
nothing of a peak-power cap: the caller skips it in capped cells.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from agents.cell.tariff import standby_saving

from .aware import MachineEnergy

__all__ = ["PlannedSlot", "plan_cost", "right_shift"]

#: money below which two costs are the same (float noise, not a tuning knob)
_EPS = 1e-9


@dataclass(frozen=True, slots=True)
class PlannedSlot:
    """One planned operation: ``[start, finish)`` on ``machine``, the first ``setup_s`` a
    setup; ``order`` and ``step`` (its position on the order's route)."""

    order: str
    step: int
    machine: str
    capability: str
    start: float
    setup_s: float
    finish: float

    @property
    def length(self) -> float:
        return self.finish - self.start


def right_shift(slots: Sequence[PlannedSlot], machines: Mapping[str, MachineEnergy],
                due: Mapping[str, float], horizon: tuple[float, float], *,
                tail_idles: bool = True) -> list[PlannedSlot]:
    """``slots`` after the pass (module docstring), in the same order.  ``horizon`` is the
    plan's ``(start, makespan end)``; ``due`` each order's due date (absent: none).
    ``tail_idles`` False: a machine sleeps at once after its last operation (a rehearsed
    cell's machine, ADR 94) rather than idling its break-even first, so moving that
    operation later buys nothing at the same price (ADR 97)."""
    out = list(slots)
    by_machine: dict[str, list[int]] = {}
    for i in sorted(range(len(out)), key=lambda i: (out[i].start, i)):
        by_machine.setdefault(out[i].machine, []).append(i)
    place = {i: k for line in by_machine.values() for k, i in enumerate(line)}
    route = {(s.order, s.step): i for i, s in enumerate(out)}
    for i in sorted(range(len(out)), key=lambda i: (-out[i].start, -i)):
        s = out[i]
        energy = machines.get(s.machine)
        if energy is None:
            continue
        line = by_machine[s.machine]
        k = place[i]
        before = out[line[k - 1]].finish if k > 0 else horizon[0]
        after = out[line[k + 1]].start if k + 1 < len(line) else horizon[1]
        end = after
        nxt = route.get((s.order, s.step + 1))
        if nxt is not None:
            end = min(end, out[nxt].start)
        if s.order in due and s.finish <= due[s.order]:
            end = min(end, due[s.order])
        latest = end - s.length
        if latest <= s.start:
            continue
        last = k + 1 == len(line)
        here = _cost(energy, s, s.start, before, after, last, tail_idles)
        best, best_cost = s.start, here
        for t in _breakpoints(energy, s, latest, before, after):
            c = _cost(energy, s, t, before, after, last, tail_idles)
            if c < best_cost - _EPS:
                best, best_cost = t, c
        if best != s.start:
            out[i] = replace(s, start=best, finish=best + s.length)
    return out


def plan_cost(slots: Sequence[PlannedSlot], machines: Mapping[str, MachineEnergy],
              horizon: tuple[float, float]) -> float:
    """The priced machines' energy cost of a plan beyond idle over ``horizon``, by the
    pass's own model: each operation above idle, minus what sleeping through the gaps
    saves.  Differences between two plans on the same horizon are what the pass lowers."""
    total = 0.0
    for m, energy in sorted(machines.items()):
        line = sorted((s for s in slots if s.machine == m), key=lambda s: s.start)
        t = horizon[0]
        for s in line:
            total += (energy.slot_cost(s.capability, s.start, s.setup_s, s.length - s.setup_s)
                      - _sleep_saving(energy, t, s.start, wakes=True))
            t = s.finish
        total -= _sleep_saving(energy, t, horizon[1], wakes=False)
    return total


def _cost(energy: MachineEnergy, s: PlannedSlot, start: float, before: float,
          after: float, last: bool, tail_idles: bool = True) -> float:
    """The machine's cost that depends on ``s`` starting at ``start``: the operation above
    idle, minus what sleeping through the gaps on either side saves (after the machine's
    ``last`` operation, the gap to the plan's end, with no wake-up)."""
    finish = start + s.length
    return (energy.slot_cost(s.capability, start, s.setup_s, s.length - s.setup_s)
            - _sleep_saving(energy, before, start, wakes=True)
            - _sleep_saving(energy, finish, after, wakes=not last, tail_idles=tail_idles))


def _sleep_saving(energy: MachineEnergy, t0: float, t1: float, *, wakes: bool,
                  tail_idles: bool = True) -> float:
    """What the machine saves over the gap ``[t0, t1)`` by the rent-or-buy rule: sleeping
    if the gap is at least the break-even, else nothing.  A gap without a wake-up (no work
    after it) is idled for the break-even first, as the machines do with a gap whose end
    they do not know (agents/energy/aware.py) — or, with ``tail_idles`` False, slept
    through at once (a rehearsed machine after its plan, ADR 94)."""
    d = energy.draw
    if not wakes and not tail_idles:
        return energy.tariff.cost(d.idle - d.standby_kw, t0, t1) if t1 > t0 else 0.0
    if not energy.worth_sleeping(t1 - t0):
        return 0.0
    if not wakes:
        be = energy.break_even_s or 0.0
        return energy.tariff.cost(d.idle - d.standby_kw, t0 + be, t1)
    saved = standby_saving(energy.tariff, t0, t1, idle_kw=d.idle, standby_kw=d.standby_kw,
                           wake_s=d.wake.standby.time_s, wake_kwh=d.wake.standby.energy_kwh)
    return saved or 0.0


def _breakpoints(energy: MachineEnergy, s: PlannedSlot, latest: float, before: float,
                 after: float) -> list[float]:
    """The starts in ``(s.start, latest]`` where the cost's slope may change, ascending."""
    length, wake = s.length, energy.wake_s
    points = {latest}
    for a, _, _ in energy.tariff.segments(s.start, latest + length):
        points.update((a, a - length, a - s.setup_s, a + wake, a - length + wake))
    be = energy.break_even_s
    if be is not None:
        points.update((before + be, after - be - length))
        points.update(a - be - length for a, _, _ in energy.tariff.segments(s.start, after))
    return sorted(t for t in points if s.start < t <= latest)
