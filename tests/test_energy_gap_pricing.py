"""The rehearsal's price of machines out of work between operations (ADR 93).

By hand, sans-io: a gap between two operations on a machine shorter than its standby
break-even costs idle power, a longer one standby power and one wake-up's energy (the
rule the machine itself follows, agents/energy/aware.py), priced at the tariff across
a boundary; the collector adds the gaps of every order's slots on each machine to the
pass's energy cost, a backward pass's slots mirrored about its own makespan.

The draw (tests/helpers/energy_tariffs.py ``DRAW``): idle 1, standby 0.2 kW, waking
from standby 60 s and 0.05 kWh, so the break-even is (0.05·3600 − 0.2·60) / 0.8 =
210 s.  The tariff: day 0.30 until 22:00, night 0.10; the clock starts Monday 21:00, so
the price falls at cell time 3600 s.
"""

from __future__ import annotations

import random

import pytest
from helpers.energy_tariffs import DRAW, day_night

from agents.cell.energy import PowerDraw
from agents.energy.aware import MachineEnergy
from agents.energy.rehearsal import PlanPricing
from agents.protocol.actions import Send
from agents.protocol.messages import ExploreQuote, ExploreResultPriced
from agents.rehearsal import SEEDS, OrderRehearsal

TOU = day_night("mon 21:00")
H = 3600.0


def pricing(**kw: object) -> PlanPricing:
    return PlanPricing({"m1": MachineEnergy(TOU, DRAW)}, {"m1": 0.0}, 600.0,
                       **kw)  # type: ignore[arg-type]


def test_the_break_even_is_what_the_docstring_says() -> None:
    assert MachineEnergy(TOU, DRAW).break_even_s == pytest.approx(210.0)


def test_a_short_gap_costs_idle_power() -> None:
    # 150 s < 210 s: the machine idles; the floor (standby) is already counted
    assert pricing().gap_cost("m1", 1000.0, 1150.0) == pytest.approx((1.0 - 0.2) * 150 / H * 0.30)


def test_a_long_gap_costs_standby_and_one_wake_up() -> None:
    # 1000 s: standby, woken 60 s before the end; beyond the floor, the wake-up's 0.05 kWh
    # less the standby it replaces over its 60 s
    assert pricing().gap_cost("m1", 1000.0, 2000.0) == pytest.approx(
        (0.05 - 0.2 * 60 / H) * 0.30)
    # the break-even itself is slept through (the machine's rule: gap >= break-even)
    assert pricing().gap_cost("m1", 1000.0, 1210.0) == pytest.approx(
        (0.05 - 0.2 * 60 / H) * 0.30)


def test_gaps_across_the_tariff_boundary_are_priced_per_period() -> None:
    p = pricing()
    # idle: 100 s at day, 100 s at night
    assert p.gap_cost("m1", 3500.0, 3700.0) == pytest.approx(
        0.8 * 100 / H * 0.30 + 0.8 * 100 / H * 0.10)
    # standby to 3570 s, then the wake-up (3 kW for 60 s) half at day, half at night
    assert p.gap_cost("m1", 3000.0, 3630.0) == pytest.approx(
        (3.0 - 0.2) * 30 / H * 0.30 + (3.0 - 0.2) * 30 / H * 0.10)
    # a long gap woken wholly at night costs a third of the same at day
    assert p.gap_cost("m1", 4000.0, 5000.0) == pytest.approx(
        p.gap_cost("m1", 1000.0, 2000.0) / 3)


def test_no_gap_price_without_a_break_even_or_with_price_idle_off() -> None:
    flat = PowerDraw.model_validate({"idle": 1.0, "busy": 5.0})   # standby = idle
    p = PlanPricing({"m1": MachineEnergy(TOU, flat)}, {"m1": 0.0}, 600.0)
    assert p.gap_cost("m1", 1000.0, 1150.0) == 0.0               # its floor is idle already
    assert pricing(price_idle=False).gap_cost("m1", 1000.0, 1150.0) == 0.0
    assert pricing().gap_cost("m9", 1000.0, 1150.0) == 0.0        # a machine without a price
    assert pricing().gap_cost("m1", 1000.0, 1000.0) == 0.0


def test_only_the_gaps_between_operations_count() -> None:
    p = pricing()
    spans = {"m1": [(2000.0, 3000.0), (0.0, 1000.0), (1150.0, 1900.0), (1800.0, 1950.0)]}
    # gaps 1000-1150 (idle) and 1950-2000 (idle); nothing before 0 or after 3000; the
    # overlapping spans 1150-1900 and 1800-1950 leave no gap between them
    assert p.gaps_cost(spans) == pytest.approx(p.gap_cost("m1", 1000.0, 1150.0)
                                               + p.gap_cost("m1", 1950.0, 2000.0))
    assert p.gaps_cost({"m1": [(0.0, 1000.0)]}) == 0.0


def _collector(p: PlanPricing) -> OrderRehearsal:
    return OrderRehearsal("o1", alternatives=[["m1"]], capabilities=["op"], quantity=1,
                          work_s=[100.0], machines=["m1"], peers=["o1", "o2"],
                          passes=SEEDS + 1, rng=random.Random(0), pricing=p)


def test_the_collector_adds_the_gaps_between_the_orders_operations() -> None:
    p = pricing(durations={"m1": {"op": 100.0}})
    r = _collector(p)
    r._begin(SEEDS, 0.0)                          # a forward pass; o1 collects it
    r.on_message("m1", ExploreQuote(SEEDS, 0, 0.0, 100.0), 0.0)
    own = r._pass_cost()
    out = r.on_message("o2", ExploreResultPriced(SEEDS, 250.0, 0.0, 0.0, 100.0,
                                                 energy_cost=0.25,
                                                 slots=[["m1", 250.0, 350.0]]), 0.0)
    [summary] = [a.body for a in out if isinstance(a, Send) and a.to == "o2"]
    assert isinstance(summary, ExploreResultPriced) and summary.slots == []
    # m1 out of work 100-250 s: 150 s, idled
    gap = (1.0 - 0.2) * 150 / H * 0.30
    assert summary.energy_cost == pytest.approx(0.25 + own + gap)
    # without the other order's slots there is no gap to price
    r2 = _collector(p)
    r2._begin(SEEDS, 0.0)
    r2.on_message("m1", ExploreQuote(SEEDS, 0, 0.0, 100.0), 0.0)
    out = r2.on_message("o2", ExploreResultPriced(SEEDS, 250.0, 0.0, 0.0, 100.0,
                                                  energy_cost=0.25), 0.0)
    [summary] = [a.body for a in out if isinstance(a, Send) and a.to == "o2"]
    assert summary.energy_cost == pytest.approx(0.25 + own)


def test_a_backward_pass_gaps_are_mirrored_and_malformed_slots_left_out() -> None:
    p = pricing(durations={"m1": {"op": 100.0}})
    r = _collector(p)
    r._begin(SEEDS, 0.0)
    assert r.now_pass is not None
    r.now_pass.backward = True                   # as a backward pass of the loop is
    r.on_message("m1", ExploreQuote(SEEDS, 0, 500.0, 600.0), 0.0)
    own = r._pass_cost()
    out = r.on_message("o2", ExploreResultPriced(
        SEEDS, 3730.0, 0.0, 0.0, 100.0, energy_cost=0.0,
        slots=[["m1", 0.0, 100.0], ["m1", "x", 1.0], "junk"]), 0.0)
    [summary] = [a.body for a in out if isinstance(a, Send) and a.to == "o2"]
    # about the makespan 3730 s: o2's slot is 3630-3730 s, o1's 3130-3230 s; the gap
    # 3230-3630 s (400 s) is slept through, woken 3570-3630 s, half at the day price and
    # half at night (unmirrored, 100-500 s, it would be woken wholly at day)
    assert summary.energy_cost == pytest.approx(
        own + (3.0 - 0.2) * 30 / H * 0.30 + (3.0 - 0.2) * 30 / H * 0.10)
