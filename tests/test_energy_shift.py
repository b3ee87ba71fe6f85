"""The time-shift diagnosis (ops/bench/energy_shift.py) on hand-computed cases.

Tariff: day 0.30 from 07:00 to 22:00, night 0.10 from 22:00; the run starts Monday
21:00, so the price falls at 3600 s.  Machine: standby 0.2 kW, setup 2 kW, busy 5 kW
(4.8 and 1.8 kW above standby).
"""

from __future__ import annotations

import json

import pytest
from helpers.energy_tariffs import DRAW, day_night

from agents.cell.energy import EnergySettings
from agents.cell.tariff import TimeOfUse
from ops.bench.energy_shift import Slot, later_shift, latest_starts, op_slots, slot_cost

TOU = day_night("mon 21:00")
# 600 s of setup then 1800 s busy, starting 1200 s before the price falls
SLOT = Slot("m", "mill", 2400.0, 600.0, 4800.0)
HERE = 1.8 * 600 / 3600 * 0.30 + 4.8 * (600 / 3600 * 0.30 + 1200 / 3600 * 0.10)
NIGHT = (1.8 * 600 + 4.8 * 1800) / 3600 * 0.10


def test_a_slot_is_priced_above_standby_across_the_price_change() -> None:
    assert slot_cost(TOU, DRAW, SLOT, SLOT.start) == pytest.approx(HERE)
    assert slot_cost(TOU, DRAW, SLOT, 3600.0) == pytest.approx(NIGHT)


def test_the_later_cheaper_start_counts_when_the_band_reaches_past_the_fall() -> None:
    """Band to 6000 s: the slot can start at 3600 s (the fall) and end at 6000 s."""
    r = later_shift(TOU, {"m": DRAW}, [SLOT], limit_s=6000.0, run_cost=10.0)
    assert r["later_shift_bound_pct"] == pytest.approx(round(-100 * (HERE - NIGHT) / 10.0, 1))
    assert r["price_first_falls_s"] == 3600.0
    assert r["later_shift_float_pct"] == r["later_shift_bound_pct"]   # nothing after it
    # 1200 s later for 0.22 EUR: the default 600 s per EUR (132 s) does not pay for it,
    # 10000 s per EUR (2200 s) does
    assert HERE - NIGHT == pytest.approx(0.22)
    assert r["later_shift_weighed_pct"] == 0.0
    paid = later_shift(TOU, {"m": DRAW}, [SLOT], 6000.0, 10.0, s_per_money=10000.0)
    assert paid["later_shift_weighed_pct"] == r["later_shift_bound_pct"] < 0.0


def test_no_later_start_counts_when_the_band_ends_too_soon() -> None:
    """Band to 5400 s: the slot (2400 s long) can start at most 600 s later, still
    partly at day price; the cheapest such start is the latest, 3000 s."""
    r = later_shift(TOU, {"m": DRAW}, [SLOT], limit_s=5400.0, run_cost=10.0)
    partial = HERE - slot_cost(TOU, DRAW, SLOT, 3000.0)
    assert 0 < partial < HERE - NIGHT
    assert r["later_shift_bound_pct"] == pytest.approx(round(-100 * partial / 10.0, 1))
    # no room at all: the slot already ends at the band's limit
    assert later_shift(TOU, {"m": DRAW}, [SLOT], 4800.0, 10.0)["later_shift_bound_pct"] == 0.0


def test_before_the_fall_no_later_slot_is_cheaper_and_peak_work_is_counted() -> None:
    """A run that starts at 07:00 sees the price only rise until 22:00 (15 h): moving work
    later inside a 5 % band of a 2-hour run saves nothing, however slack the band."""
    morning = TimeOfUse.from_settings(EnergySettings.model_validate({
        "clock_at_start": "mon 07:00",
        "tariff": {"periods": [{"from": "07:00", "to": "22:00", "price": 0.30},
                               {"from": "22:00", "to": "07:00", "price": 0.10}]}}))
    r = later_shift(morning, {"m": DRAW}, [SLOT], limit_s=7560.0, run_cost=5.0)
    assert r["later_shift_bound_pct"] == r["later_shift_weighed_pct"] == 0.0
    assert r["price_first_falls_s"] == 15 * 3600.0
    assert r["peak_work_share"] == pytest.approx(
        round((1.8 * 600 + 4.8 * 1800) / 3600 * 0.30 / 5.0, 3))


def test_the_slots_come_from_the_plant_log() -> None:
    class Cfg:
        orders = [type("O", (), {"id": "o1", "product": "p"})()]

        @staticmethod
        def product(_: str) -> object:
            step = type("S", (), {"capability": "mill"})()
            return type("P", (), {"routing": [step, step]})()

    lines = [json.dumps(e) for e in (
        {"t": 10.0, "ev": "op_start", "task": "o1/1", "order": "o1", "machine": "m",
         "setup_s": 5.0},
        {"t": 40.0, "ev": "op_done", "task": "o1/1"},
        {"t": 50.0, "ev": "op_start", "task": "o1/0", "order": "o1", "machine": "m"},
        {"t": 60.0, "ev": "op_abort", "task": "o1/0"})]
    assert op_slots(Cfg, lines) == [Slot("m", "mill", 10.0, 5.0, 40.0, "o1/1"),
                                    Slot("m", "mill", 50.0, 0.0, 60.0, "o1/0")]


def test_the_float_keeps_the_runs_sequences() -> None:
    """SLOT's route successor o/1 runs on machine n from 4800 s, another order's p/0
    follows SLOT on m from 4800 s, both 1800 s long.  With the limit at 9000 s both may
    start at 7200 s, so SLOT may end at 7200 s: start at 4800 s, in the night.  With the
    limit at the run's end (6600 s) nothing may move, though SLOT alone (the loose
    bound) could start up to 4200 s and so cross the fall in part."""
    slots = [SLOT, Slot("n", "mill", 4800.0, 0.0, 6600.0, "o/1"),
             Slot("m", "mill", 4800.0, 0.0, 6600.0, "p/0")]
    slots[0] = Slot("m", "mill", 2400.0, 600.0, 4800.0, "o/0")
    assert latest_starts(slots, 9000.0) == [4800.0, 7200.0, 7200.0]
    assert latest_starts(slots, 6600.0) == [2400.0, 4800.0, 4800.0]
    tight = later_shift(TOU, {"m": DRAW, "n": DRAW}, slots, 6600.0, 10.0)
    assert tight["later_shift_float_pct"] == 0.0 > tight["later_shift_bound_pct"]
    roomy = later_shift(TOU, {"m": DRAW, "n": DRAW}, slots, 9000.0, 10.0)
    # SLOT all in the night; o/1 and p/0 are already there
    assert roomy["later_shift_float_pct"] == pytest.approx(round(-100 * (HERE - NIGHT) / 10, 1))
