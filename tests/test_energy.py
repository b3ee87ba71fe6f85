"""Energy (issue 17, items 1-2): the tariff's lookups, the standby break-even, power integrated
per state on hand-computed cases and on Hypothesis-drawn event streams, the plant's power
hook, the cell file, the demo's report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import simpy
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.cell.energy import DAY_S, WEEK_S, EnergySettings, PowerDraw, Tariff
from agents.cell.specs import (
    EnergySpec,
    KpiSpec,
    MachineKpiSpec,
    MachineSpec,
    OrderSpec,
    PowerModel,
)
from agents.cell.tariff import TimeOfUse, standby_break_even_s, standby_saving
from ops.config import load_cell, validate_command
from sim_bridge.kpis import compute
from sim_bridge.plant import EmbeddedPlant

ROOT = Path(__file__).resolve().parents[1]
H = 3600.0


def approx(x: float) -> object:
    return pytest.approx(x, abs=1e-6)


# Three periods on weekdays, the night every day (Sunday night wraps to Monday), a weekend day.
TOU = Tariff.model_validate({"periods": [
    {"days": "mon-fri", "from": "07:00", "to": "17:00", "price": 0.20, "co2_kg_per_kwh": 0.3},
    {"days": "mon-fri", "from": "17:00", "to": "21:00", "price": 0.40, "co2_kg_per_kwh": 0.5},
    {"days": "mon-sun", "from": "21:00", "to": "07:00", "price": 0.10, "co2_kg_per_kwh": 0.2},
    {"days": "sat-sun", "from": "07:00", "to": "21:00", "price": 0.15, "co2_kg_per_kwh": 0.25},
]})


def at(day: int, hh: float) -> float:
    """Week seconds of day ``day`` (Monday = 0) at ``hh`` hours."""
    return day * DAY_S + hh * H


# --------------------------------------------------------------------------- tariff lookups


@pytest.mark.parametrize(("t", "price"), [
    (at(0, 0), 0.10),            # Monday 00:00: Sunday's night, wrapped
    (at(0, 6.99), 0.10),
    (at(0, 7), 0.20),            # a boundary belongs to the period it starts
    (at(0, 16.99), 0.20),
    (at(0, 17), 0.40),
    (at(0, 21), 0.10),
    (at(4, 22), 0.10),           # Friday night
    (at(5, 7), 0.15),            # Saturday day
    (at(6, 21), 0.10),           # Sunday 21:00
    (at(6, 23.99), 0.10),
    (WEEK_S, 0.10),              # the next Monday 00:00
    (WEEK_S + at(0, 7), 0.20),   # the next Monday 07:00
])
def test_price_at_across_boundaries_and_the_week_wrap(t: float, price: float) -> None:
    assert TimeOfUse(TOU).price_at(t) == price


def test_clock_at_start_shifts_simulation_time_onto_the_week() -> None:
    tou = TimeOfUse.from_settings(EnergySettings(tariff=TOU, clock_at_start="sun 20:00"))
    assert tou.price_at(0) == 0.15                 # Sunday 20:00
    assert tou.price_at(H) == 0.10                 # Sunday 21:00
    assert tou.price_at(11 * H) == 0.20            # Monday 07:00, across the wrap
    assert tou.next_change_after(0) == H


def test_cost_splits_at_every_boundary() -> None:
    tou = TimeOfUse(TOU)
    # 2 kW from Monday 16:00 to 18:00: one hour at 0.20, one at 0.40.
    assert tou.cost(2.0, at(0, 16), at(0, 18)) == approx(2 * 0.20 + 2 * 0.40)
    assert tou.co2_kg(2.0, at(0, 16), at(0, 18)) == approx(2 * 0.3 + 2 * 0.5)
    # 1 kW from Sunday 20:00 to Monday 08:00: 1 h weekend day, 10 h night, 1 h shoulder.
    tou_sun = TimeOfUse(TOU, start_offset_s=at(6, 20))
    assert tou_sun.cost(1.0, 0, 12 * H) == approx(0.15 + 10 * 0.10 + 0.20)
    # The night is cut once more where the week wraps (Sunday 24:00), at the same price.
    cuts = [(round((b - a) / H, 6), band.price) for a, b, band in tou_sun.segments(0, 12 * H)]
    assert cuts == [(1, 0.15), (3, 0.10), (7, 0.10), (1, 0.20)]


def test_a_flat_tariff_is_one_period() -> None:
    flat = TimeOfUse(Tariff.model_validate({"periods": [{"from": "00:00", "to": "24:00",
                                                         "price": 0.3}]}))
    assert flat.cost(10.0, 0.0, 2 * WEEK_S) == approx(10 * 2 * 168 * 0.3)
    assert not flat.has_co2 and flat.co2_kg(10.0, 0.0, H) == 0.0


@pytest.mark.parametrize(("periods", "fragment"), [
    ([{"from": "00:00", "to": "12:00", "price": 1}], "no price from mon 12:00 to mon 24:00"),
    ([{"from": "00:00", "to": "24:00", "price": 1},
      {"days": "wed", "from": "10:00", "to": "11:00", "price": 2}],
     "period 1 overlaps period 0 from wed 10:00 to wed 11:00"),
    ([{"from": "00:00", "to": "12:00", "price": 1, "co2_kg_per_kwh": 0.1},
      {"from": "12:00", "to": "24:00", "price": 2}], "give it on every period or on none"),
    ([{"from": "00:00", "to": "24:00", "price": 1, "co2_kg_per_kwh": 0.1}], None),
])
def test_tariff_problems(periods: list[dict[str, Any]], fragment: str | None) -> None:
    from agents.cell.energy import tariff_problems

    problems = tariff_problems(Tariff.model_validate({"periods": periods}))
    if fragment is None:
        assert problems == []
    else:
        assert any(fragment in msg for _, msg in problems), problems
        with pytest.raises(ValueError, match="every instant|whole week|on none"):
            TimeOfUse(Tariff.model_validate({"periods": periods}))


# --------------------------------------------------------------------------- break-even


def test_standby_break_even_by_hand() -> None:
    # idle 2 kW, standby 0.5 kW, waking takes 60 s and 0.1 kWh:
    # 2 g = 0.5 (g - 60) + 360  ->  g = (360 - 30) / 1.5 = 220 s.
    assert standby_break_even_s(2.0, 0.5, 60.0, 0.1) == approx(220.0)
    # A free, instant wake-up pays at once; a costly short one never below its own duration.
    assert standby_break_even_s(2.0, 0.5, 0.0, 0.0) == 0.0
    assert standby_break_even_s(2.0, 1.9, 300.0, 0.0) == 300.0
    assert standby_break_even_s(1.0, 1.0, 10.0, 0.0) is None
    # The machine's power model answers the same, per low-power state.
    model = PowerModel(idle_kw=2.0, busy_kw=5.0, standby_kw=0.5, off_kw=0.0,
                       wake_s={"standby": 60.0, "off": 600.0},
                       wake_kwh={"standby": 0.1, "off": 1.0})
    assert model.break_even_s("standby") == approx(220.0)
    assert model.break_even_s("off") == approx(1800.0)          # 1 kWh / 2 kW


def test_standby_saving_prices_the_gap_with_the_tariff() -> None:
    tou = TimeOfUse(TOU)
    kw = {"idle_kw": 2.0, "standby_kw": 0.5, "wake_s": 360.0, "wake_kwh": 0.2}
    # A gap of one hour inside the Monday shoulder (0.20): idle 2 kWh; asleep 0.5 kW for
    # 54 min = 0.45 kWh plus the 0.2 kWh wake-up: saves 1.35 kWh x 0.20.
    assert standby_saving(tou, at(0, 9), at(0, 10), **kw) == approx(1.35 * 0.20)
    # The same gap at the evening peak saves twice as much money.
    assert standby_saving(tou, at(0, 18), at(0, 19), **kw) == approx(1.35 * 0.40)
    # Shorter than the wake-up: cannot sleep through it.
    assert standby_saving(tou, at(0, 9), at(0, 9) + 100, **kw) is None


# --------------------------------------------------------------------------- integration

POWER = PowerModel(idle_kw=1.0, busy_kw=5.0, setup_kw=2.0, standby_kw=0.2, off_kw=0.0,
                   busy_by_capability={"drill": 3.0},
                   wake_s={"standby": 100.0, "off": 0.0}, wake_kwh={"standby": 0.05, "off": 0.1})


def spec(energy: EnergySpec | None = None) -> KpiSpec:
    return KpiSpec(machines={"m": MachineKpiSpec(1.0, 5.0, {"mill": 100.0, "drill": 50.0},
                                                 POWER)},
                   orders={"o": OrderSpec(1, ("mill", "drill"))}, energy=energy)


EVENTS: list[dict[str, Any]] = [
    {"t": 100.0, "ev": "op_start", "machine": "m", "task": "o/0", "order": "o", "setup_s": 50.0},
    {"t": 400.0, "ev": "op_done", "machine": "m", "task": "o/0", "order": "o", "quality": "ok"},
    {"t": 500.0, "ev": "op_start", "machine": "m", "task": "o/1", "order": "o", "setup_s": 0.0},
    {"t": 600.0, "ev": "fault", "machine": "m", "reason": "breakdown"},
    {"t": 600.0, "ev": "op_abort", "machine": "m", "task": "o/1", "why": "fault"},
    {"t": 700.0, "ev": "repaired", "machine": "m"},
    {"t": 800.0, "ev": "power_state", "machine": "m", "state": "standby"},
    {"t": 1000.0, "ev": "power_state", "machine": "m", "state": "wake", "from": "standby"},
    {"t": 1100.0, "ev": "power_state", "machine": "m", "state": "idle"},
    {"t": 1200.0, "ev": "power_state", "machine": "m", "state": "off"},
    {"t": 1300.0, "ev": "power_state", "machine": "m", "state": "wake", "from": "off"},
    {"t": 1300.0, "ev": "power_state", "machine": "m", "state": "idle"},
]
# By hand, kW x s over [0, 1500):
#   idle   0-100, 400-500, 1100-1200, 1300-1500 at 1 kW     = 100+100+100+200 = 500
#   setup  100-150 at 2 kW                                  = 100
#   busy   150-400 milling at 5 kW, 500-600 drilling at 3 kW = 1250 + 300 = 1550
#   down   600-700 at idle 1 kW                              = 100
#   standby 800-1000 at 0.2 kW                               = 40;  idle 700-800 = 100 more
#   wake   0.05 kWh over 1000-1100 (1.8 kW) + 0.1 kWh at once = 180 + 360 = 540
#   off    1200-1300 at 0 kW                                 = 0
BY_STATE_KWS = {"off": 0.0, "standby": 40.0, "wake": 540.0, "idle": 600.0, "setup": 100.0,
                "busy": 1550.0, "down": 100.0}


def test_power_is_integrated_per_state_by_hand() -> None:
    flat = Tariff.model_validate({"periods": [{"from": "00:00", "to": "24:00", "price": 0.5,
                                               "co2_kg_per_kwh": 0.4}]})
    k = compute(EVENTS, spec(EnergySpec(TimeOfUse(flat), peak_cap_kw=3.0, peak_window_s=300.0)),
                end_at=1500.0)
    m, c = k["machines"]["m"], k["cell"]
    assert m["energy_by_state_kwh"] == {s: approx(v / H) for s, v in BY_STATE_KWS.items()}
    total = sum(BY_STATE_KWS.values()) / H
    assert m["energy_kwh"] == approx(total) and c["energy_kwh"] == approx(total)
    assert m["energy_cost"] == approx(total * 0.5) and c["co2_kg"] == approx(total * 0.4)
    assert c["energy_cost_per_unit"] is None       # the order's second operation was aborted
    # Windows of 300 s: [0,300) = 100 + 100 + 150*5 = 950 -> 3.1667 kW, the peak, over the cap;
    # [300,600) = 500 + 100 + 300 = 900 -> 3.0 kW, at the cap (not over it).
    assert c["peak_kw"] == approx(950 / 300) and c["peak_at"] == 0.0
    assert c["cap_violations"] == 1 and c["peak_cap_kw"] == 3.0


def test_peak_windows_align_to_the_tariff_clock_and_cost_follows_the_periods() -> None:
    # The run starts Monday 16:55: a 10 kW machine busy for 10 min straddles the 17:00
    # boundary (5 min at 0.20, 5 min at 0.40) and the quarter hours 16:45 and 17:00.
    tou = TimeOfUse(TOU, start_offset_s=at(0, 16) + 55 * 60)
    spec10 = KpiSpec(machines={"m": MachineKpiSpec(0.0, 10.0, {"mill": 600.0})},
                     orders={"o": OrderSpec(1, ("mill",))},
                     energy=EnergySpec(tou, peak_cap_kw=None, peak_window_s=900.0))
    evs = [{"t": 0.0, "ev": "op_start", "machine": "m", "task": "o/0", "order": "o"},
           {"t": 600.0, "ev": "op_done", "machine": "m", "task": "o/0", "order": "o",
            "quality": "ok"}]
    c = compute(evs, spec10, end_at=1200.0)["cell"]
    assert c["energy_cost"] == approx(10 / 12 * 0.20 + 10 / 12 * 0.40)
    # 16:55-17:00 is the part of the 16:45 window inside the run: 10 kW; 17:00-17:15 holds
    # 5 min at 10 kW: 3.333 kW.  The peak is the partial first window's mean.
    assert c["peak_kw"] == approx(10.0) and c["peak_at"] == 0.0
    assert c["cap_violations"] == 0 and c["peak_cap_kw"] is None


def test_legacy_power_keeps_its_formula() -> None:
    # idle/busy only: setup and down at idle, exactly the formula the KPIs always had.
    legacy = KpiSpec(machines={"m": MachineKpiSpec(1.0, 5.0, {"mill": 100.0, "drill": 50.0})},
                     orders={"o": OrderSpec(1, ("mill", "drill"))})
    m = compute(EVENTS[:6], legacy, end_at=1000.0)["machines"]["m"]
    processing = 250.0 + 100.0
    assert m["energy_kwh"] == approx((5 * processing + 1 * (1000 - processing)) / H)
    assert "energy_cost" not in m and "energy_by_state_kwh" not in m


def test_a_snapshot_does_not_close_the_open_segments() -> None:
    from sim_bridge.kpis import KpiTracker

    tr = KpiTracker(spec())
    tr.on_events(EVENTS[:1])
    first = tr.snapshot(300.0)["machines"]["m"]["energy_kwh"]
    assert tr.snapshot(300.0)["machines"]["m"]["energy_kwh"] == first
    assert first == approx((100 * 1 + 50 * 2 + 150 * 5) / H)


# --------------------------------------------------------------------------- the plant hook


class _Plant:
    def __init__(self) -> None:
        self.env = simpy.Environment()
        self.log: list[dict[str, Any]] = []
        self.plant = EmbeddedPlant(
            self.env, [MachineSpec("m", location="bay", power=POWER)], [], seed=0,
            emit=lambda e: None,
            record=lambda ev, **f: self.log.append({"t": self.env.now, "ev": ev, **f}),
            sensor_interval_s=0.0, breakdowns=False)
        self.backend = self.plant.backend


def test_the_plant_sleeps_and_wakes_machines_and_logs_it() -> None:
    p = _Plant()
    assert p.backend.set_power("m", "standby")
    assert not p.backend.set_power("m", "standby")       # already there
    p.env.run(until=500.0)
    assert p.backend.set_power("m", "idle")               # wake: 100 s from standby
    p.env.run(until=1000.0)
    states = [(e["t"], e["state"]) for e in p.log if e["ev"] == "power_state"]
    assert states == [(0.0, "standby"), (500.0, "wake"), (600.0, "idle")]
    k = compute(p.log, spec(), end_at=1000.0)["machines"]["m"]
    assert k["energy_kwh"] == approx((500 * 0.2 + 0.05 * H + 400 * 1.0) / H)


def test_an_operation_for_a_sleeping_machine_starts_when_it_is_awake() -> None:
    from sim_bridge.plant_api import PlantEvents  # noqa: F401 - the interface it reports to
    from agents.protocol.actions import Command

    p = _Plant()
    p.backend.set_power("m", "standby")
    p.plant.command(Command("start_operation", "m", "o/0",
                            {"award_epoch": 1, "duration_s": 50.0, "order": "o"}))
    p.env.run(until=400.0)
    assert [(e["t"], e["ev"]) for e in p.log] == [
        (0.0, "power_state"), (0.0, "power_state"), (100.0, "power_state"),
        (100.0, "op_start"), (150.0, "op_done")]
    assert p.backend.set_power("m", "off") and not p.backend.set_power("m", "standby")


def test_a_run_without_the_hook_logs_no_power_state() -> None:
    from sim_bridge.virtual import VirtualCell

    cell = VirtualCell(load_cell(ROOT / "cell_configs" / "minimal_cell.yaml"))
    cell.run()
    assert not any('"power_state"' in str(e) for e in cell.events)


# --------------------------------------------------------------------------- the cell file


def test_legacy_power_draw_and_the_bare_off_key() -> None:
    assert PowerDraw.model_validate({"idle": 1, "busy": 2}).setup_kw == 1.0
    # YAML 1.1 reads `off:` as false; the model takes it back.
    p = PowerDraw.model_validate({"idle": 1, "busy": 2, "standby": 0.5, False: 0.1,
                                  "wake": {False: {"time_s": 30}}})
    assert p.off == 0.1 and p.wake.off.time_s == 30
    with pytest.raises(ValueError, match="standby"):
        PowerDraw.model_validate({"idle": 1, "busy": 2, "standby": 1.5})


ENERGY = """
energy:
  peak_cap_kw: 5
  tariff:
    periods:
      - {days: mon-fri, from: "07:00", to: "19:00", price: 0.3}
      - {days: mon-sun, from: "19:00", to: "07:00", price: 0.1}
      - {days: sat-sun, from: "07:00", to: "19:00", price: 0.2}
"""


@pytest.mark.parametrize(("old", "new", "period", "fragment"), [
    ('to: "19:00", price: 0.3', 'to: "20:00", price: 0.3', 1,
     "period 1 overlaps period 0 from mon 19:00 to mon 20:00"),
    ('price: 0.1}', 'price: -0.1}', 1, "greater than or equal to 0"),
    ('days: sat-sun, from: "07:00"', 'days: sat, from: "07:00"', 1,
     "no price from sun 07:00 to sun 19:00"),
    ('{days: mon-fri, from: "07:00"', '{days: mon-thu, from: "07:00"', 1, "no price from fri"),
    ('to: "07:00", price: 0.1', 'to: "7am", price: 0.1', 1, "not a clock time"),
    ('days: sat-sun', 'days: sat-sunday', 2, "not a set of days"),
])
def test_validate_points_at_the_bad_period(tmp_path: Path, old: str, new: str, period: int,
                                           fragment: str) -> None:
    text = (ROOT / "cell_configs" / "minimal_cell.yaml").read_text() + ENERGY
    base_line = text.splitlines().index("      - {days: mon-fri, from: \"07:00\", to: \"19:00\", "
                                        "price: 0.3}") + 1
    assert text.count(old) == 1
    path = tmp_path / "cell.yaml"
    path.write_text(text.replace(old, new))
    code, report = validate_command(path)
    assert code == 2, report
    want = base_line + period
    assert any(row.startswith(f"{path}:{want}: ") and fragment in row
               for row in report.splitlines()), (want, report)


def test_power_per_capability_names_a_capability(tmp_path: Path) -> None:
    text = (ROOT / "cell_configs" / "minimal_cell.yaml").read_text().replace(
        "capabilities: {sawing: 12.0}",
        "capabilities: {sawing: 12.0}\n    power_kw: {idle: 1, busy: 2, "
        "busy_by_capability: {milling: 3}}")
    path = tmp_path / "cell.yaml"
    path.write_text(text)
    code, report = validate_command(path)
    assert code == 2 and "machine has no capability 'milling'" in report, report


# --------------------------------------------------------------------------- the demo


def test_the_energy_demo_reports_cost_co2_peak_and_the_cap() -> None:
    from sim_bridge.report import build_report
    from sim_bridge.virtual import VirtualCell

    cfg = load_cell(ROOT / "cell_configs" / "demo_cell_energy.yaml")
    cell = VirtualCell(cfg)
    cell.run()
    r = build_report(cell)
    e = r["energy"]
    assert r["orders_completed"] == 24 and all(r["invariants"].values())
    assert e["kwh"] > 0 and e["kwh_per_unit"] == approx(e["kwh"] / 64)
    assert e["cost"] > 0 and e["co2_kg"] > 0 and e["currency"] == "EUR"
    assert e["peak_cap_kw"] == 12.0 and e["peak_window_s"] == 900.0
    # the machines start operations under power leases: the cap holds, at every instant
    assert 0 < e["peak_kw"] <= 12.0 and e["cap_violations"] == 0
    assert r["invariants"]["peak_cap_never_exceeded"]
    assert sum(e["by_state_kwh"].values()) == pytest.approx(e["kwh"], abs=1e-5)
    assert set(e["by_machine_state_kwh"]) == {m.id for m in cfg.machines}
    # The machines never sleep yet (agents are energy-blind): no standby, no off, no wake.
    assert e["by_state_kwh"]["standby"] == e["by_state_kwh"]["wake"] == 0.0
    # The demo cell without its energy section reports what it always did, and so does
    # the energy cell whose cap is only reported (no leases): energy-blind agents.
    plain = VirtualCell(cfg.model_copy(update={"energy": None}))
    plain.run()
    assert cfg.energy is not None
    blind = VirtualCell(cfg.model_copy(update={
        "energy": cfg.energy.model_copy(update={"cap_leases": False})}))
    blind.run()
    assert plain.event_log_sha256() == blind.event_log_sha256() != cell.event_log_sha256()
    assert "energy" not in build_report(plain)


# --------------------------------------------------------------------------- properties

@st.composite
def _plant_log(draw: st.DrawFn) -> tuple[list[dict[str, Any]], float]:
    """A plausible event stream of one machine: operations, faults, repairs, sleeps."""
    t, evs, k = 0.0, [], 0
    for _ in range(draw(st.integers(0, 12))):
        t += draw(st.floats(0, 500))
        kind = draw(st.sampled_from(["op", "fault", "sleep"]))
        if kind == "op":
            setup = draw(st.floats(0, 60))
            evs.append({"t": t, "ev": "op_start", "machine": "m", "task": f"o/{k % 2}",
                        "order": "o", "setup_s": setup})
            t += draw(st.floats(0, 400))
            evs.append({"t": t, "ev": "op_done", "machine": "m", "task": f"o/{k % 2}",
                        "order": "o", "quality": "ok"})
            k += 1
        elif kind == "fault":
            evs.append({"t": t, "ev": "fault", "machine": "m", "reason": "breakdown"})
            t += draw(st.floats(0, 300))
            evs.append({"t": t, "ev": "repaired", "machine": "m"})
        else:
            evs.append({"t": t, "ev": "power_state", "machine": "m", "state": "standby"})
            t += draw(st.floats(0, 300))
            evs.append({"t": t, "ev": "power_state", "machine": "m", "state": "wake",
                        "from": "standby"})
            t += 100.0
            evs.append({"t": t, "ev": "power_state", "machine": "m", "state": "idle"})
    return evs, t + draw(st.floats(0, 500))


@settings(max_examples=60, deadline=None)
@given(_plant_log())
def test_the_states_partition_the_window_and_the_peak_is_bounded(
        case: tuple[list[dict[str, Any]], float]) -> None:
    evs, end = case
    flat = Tariff.model_validate({"periods": [{"from": "00:00", "to": "24:00", "price": 0.5}]})
    k = compute(evs, spec(EnergySpec(TimeOfUse(flat), peak_cap_kw=None, peak_window_s=300.0)),
                end_at=end)
    m, c = k["machines"]["m"], k["cell"]
    assert sum(m["energy_by_state_kwh"].values()) == pytest.approx(m["energy_kwh"], abs=1e-5)
    assert m["energy_cost"] == pytest.approx(0.5 * m["energy_kwh"], abs=1e-5)
    wake_kw = 0.05 * H / 100.0                               # the highest draw of POWER
    assert c["peak_kw"] <= max(5.0, wake_kw) + 1e-6
    if end > 0:
        rounding = 1e-6 * H / end                            # the report's 6 decimals of kWh
        assert c["peak_kw"] >= m["energy_kwh"] * H / end - rounding - 1e-4   # max >= mean
    # Without sleeps the meter is the old formula exactly.
    if not any(e["ev"] == "power_state" for e in evs):
        legacy = KpiSpec(machines={"m": MachineKpiSpec(1.0, 5.0, {"mill": 100.0})},
                         orders={"o": OrderSpec(1, ("mill", "drill"))})
        row = compute(evs, legacy, end_at=end)["machines"]["m"]
        want = (5.0 * row["processing_s"] + 1.0 * (end - row["processing_s"])) / H
        assert row["energy_kwh"] == pytest.approx(want, abs=1e-5)
