"""The priced right-justifying pass (agents/energy/right_shift.py) on hand-built plans."""

from __future__ import annotations

from helpers.energy_tariffs import DRAW, day_night

from agents.cell.energy import PowerDraw
from agents.energy.aware import MachineEnergy
from agents.energy.right_shift import PlannedSlot, plan_cost, right_shift

# day 0.30 until 22:00, night 0.10 from 22:00; the run starts Monday 21:00: the price
# falls at t = 3600 s
TOU = day_night("mon 21:00")
# busy barely above idle, a dear wake-up: break-even 4350 s
LAZY = PowerDraw.model_validate({"idle": 1.0, "busy": 1.05, "standby": 0.2,
                                 "wake": {"standby": {"time_s": 600, "energy_kwh": 1.0}}})
M = {"m1": MachineEnergy(TOU, DRAW), "m2": MachineEnergy(TOU, DRAW)}


def op(order: str, step: int, machine: str, start: float, length: float) -> PlannedSlot:
    return PlannedSlot(order, step, machine, "mill", start, 0.0, start + length)


def test_an_operation_with_float_before_a_price_drop_moves_past_it() -> None:
    plan = [op("o1", 0, "m1", 0.0, 1800.0), op("o2", 0, "m2", 0.0, 7200.0)]
    out = right_shift(plan, M, {}, (0.0, 7200.0))
    assert out[0].start >= 3600.0 and out[0].finish <= 7200.0     # all of it at night
    assert out[0].length == 1800.0 and out[1] == plan[1]
    # busy 4 kW above idle for 1800 s at 0.10 instead of 0.30: 0.4 less; and the machine
    # now sleeps (0.8 kW below idle) through the dear hour instead of a cheap one: up to
    # 0.16 more, less its wake-ups
    saved = plan_cost(plan, M, (0.0, 7200.0)) - plan_cost(out, M, (0.0, 7200.0))
    assert 0.4 < saved <= 0.56


def test_without_float_nothing_moves() -> None:
    plan = [op("o1", 0, "m1", 0.0, 1800.0), op("o1", 1, "m2", 1800.0, 1800.0)]
    assert right_shift(plan, M, {}, (0.0, 3600.0)) == plan


def test_a_move_is_bounded_by_its_successors_and_keeps_every_sequence() -> None:
    plan = [op("o1", 0, "m1", 0.0, 1800.0), op("o1", 1, "m2", 4000.0, 1000.0),
            op("o2", 0, "m2", 0.0, 1000.0), op("o3", 0, "m1", 4500.0, 500.0)]
    out = right_shift(plan, M, {}, (0.0, 5000.0))
    assert out[0].finish <= out[1].start             # the route successor
    assert out[0].finish <= out[3].start             # the machine's next operation
    assert out[0].start > 0.0                        # but it did move towards the night
    assert max(s.finish for s in out) <= 5000.0      # the makespan is kept
    for m in ("m1", "m2"):                           # the sequence on every machine
        seq = [s.order for s in sorted(plan, key=lambda s: s.start) if s.machine == m]
        assert seq == [s.order for s in sorted(out, key=lambda s: s.start) if s.machine == m]


def test_an_on_time_order_stays_on_time() -> None:
    plan = [op("o1", 0, "m1", 0.0, 1800.0)]
    out = right_shift(plan, M, {"o1": 4000.0}, (0.0, 7200.0))
    assert 0.0 < out[0].start and out[0].finish <= 4000.0


def test_a_move_that_costs_more_idle_than_it_saves_stays() -> None:
    # moving 400 s into the night saves 0.05 kW of busy, but leaves the machine a gap
    # before it too short to sleep and one after it shorter than the break-even
    plan = [op("o1", 0, "m1", 0.0, 1800.0), op("o1", 1, "m2", 4000.0, 3200.0)]
    lazy = {"m1": MachineEnergy(TOU, LAZY)}
    assert right_shift(plan, lazy, {}, (0.0, 7200.0)) == plan
    # the same machine that never sleeps has no sleep to lose: it moves
    awake = {"m1": MachineEnergy(TOU, LAZY, standby=False)}
    assert right_shift(plan, awake, {}, (0.0, 7200.0))[0].start == 2200.0


def test_machines_without_a_price_keep_their_slots() -> None:
    plan = [op("o1", 0, "m9", 0.0, 1800.0)]
    assert right_shift(plan, M, {}, (0.0, 7200.0)) == plan
