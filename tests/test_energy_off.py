"""Off as well as standby (agents/energy/aware.py, "Off"; ADR 84), in virtual time.

By hand: the gap from which off beats standby (the longer, dearer cold start counted);
an energy-aware machine sleeps a known gap past it off and wakes the cold start early, a
shorter gap past the break-even in standby; an unknown gap is idled, then standby, then
off; a machine whose cell says nothing of off is never switched off.  In the plant: off
is entered from standby too, and an operation for a machine that is off waits the cold
start, whose energy the report counts.
"""

from __future__ import annotations

from typing import Any

import pytest
import simpy
from helpers.energy_tariffs import COLD, DRAW, cold_plant, day_night

from agents.base import Timing
from agents.cell.energy import PowerDraw
from agents.cell.specs import EnergySpec, KpiSpec, MachineKpiSpec, MachineSpec, OrderSpec, PowerModel
from agents.energy.aware import MachineEnergy
from agents.energy.strategies import EnergyAwareResource
from agents.machine import MachineAgent
from agents.protocol.actions import Command
from agents.protocol.messages import CallForProposals
from agents.resource import Task
from sim_bridge.kpis import compute
from sim_bridge.plant import EmbeddedPlant

H = 3600.0
TOU = day_night("mon 06:00")
#: DRAW (idle 1, standby 0.2 kW, 60 s and 0.05 kWh from standby) plus off: 0 kW, and a
#: cold start of 600 s and 0.5 kWh
# standby over g: 0.2·(g − 60) + 180 kW·s; off: 0.5·3600 = 1800 kW·s; equal at g = 8160 s
OFF_AFTER = 8160.0


def test_off_pays_past_its_own_break_even_and_past_standby() -> None:
    e = MachineEnergy(TOU, COLD)
    assert e.break_even_s == pytest.approx(210.0)            # standby, unchanged
    assert e.off_after_s == pytest.approx(OFF_AFTER)
    assert e.sleep_state(209.0) is None
    assert e.sleep_state(210.0) == "standby"
    assert e.sleep_state(OFF_AFTER - 1.0) == "standby"
    assert e.sleep_state(OFF_AFTER) == "off"
    assert e.wake_from("off") == 600.0 and e.wake_from("standby") == 60.0
    # standby and off at the gap: off really uses less from there on, and not before
    def kws(state: str, g: float) -> float:
        return {"standby": 0.2 * (g - 60) + 0.05 * H, "off": 0.5 * H}[state]
    assert kws("off", OFF_AFTER + 1) < kws("standby", OFF_AFTER + 1)
    assert kws("off", OFF_AFTER - 1) > kws("standby", OFF_AFTER - 1)


def test_no_off_without_a_described_cold_start_or_without_standby() -> None:
    assert MachineEnergy(TOU, DRAW).off_after_s is None        # wake.off not given
    assert MachineEnergy(TOU, DRAW).sleep_state(1e9) == "standby"
    assert MachineEnergy(TOU, COLD, standby=False).off_after_s is None
    # off drawing as much as standby never pays
    same = COLD.model_copy(update={"off": 0.2})
    assert MachineEnergy(TOU, same).off_after_s is None


def _machine(draw: PowerDraw = COLD, *, wake_early: bool = True) -> MachineAgent:
    return MachineAgent("m1", timing=Timing(), strategy=EnergyAwareResource(), location="x",
                        capabilities={"mill": 600.0}, power_idle_kw=1.0, power_busy_kw=5.0,
                        energy=MachineEnergy(TOU, draw, wake_early=wake_early))


def _book(m: MachineAgent, task: str, start_at: float) -> None:
    c = CallForProposals(task=task, order=task.split("/")[0], kind="operation",
                         capability="mill", op="mill", quantity=1, earliest_start_at=0.0,
                         due_at=1e6, reply_by_at=1.0)
    t = Task(c, c.order, "conv", start_at=start_at, finish_at=start_at + 600.0)
    assert t.fire("propose") and t.fire("accept")
    m.tasks[task] = t


def _states(out: list[Any]) -> list[str]:
    return [a.args["state"] for a in out if isinstance(a, Command) and a.command == "set_state"]


def _timer(out: list[Any], key: str) -> float | None:
    ats = [a.at for a in out if getattr(a, "key", "") == key]
    return ats[-1] if ats else None


def test_a_known_gap_past_off_after_is_slept_off_and_the_cold_start_woken_early() -> None:
    m = _machine()
    _book(m, "o1/0", 100.0 + 9000.0)
    out = m._sleep_or_not(100.0)
    assert _states(out) == ["off"] and m.asleep == "off"
    assert _timer(out, "wake") == 100.0 + 9000.0 - 600.0      # the cold start, not 60 s
    # asleep off, the machine quotes its slots after the cold start
    c = CallForProposals(task="o2/0", order="o2", kind="operation", capability="mill",
                         op="mill", quantity=1, earliest_start_at=0.0, due_at=1e6,
                         reply_by_at=1.0)
    assert m.quote(c, 200.0).start_at == 800.0


def test_a_known_gap_between_the_break_evens_is_slept_in_standby() -> None:
    m = _machine()
    _book(m, "o1/0", 100.0 + 5000.0)
    out = m._sleep_or_not(100.0)
    assert _states(out) == ["standby"] and m.asleep == "standby"
    assert _timer(out, "wake") == 5100.0 - 60.0
    assert _timer(out, "deepen") is None                      # what is left never pays off
    assert _states(m._sleep_or_not(3000.0)) == []


def test_without_a_cold_start_the_same_gap_is_slept_in_standby() -> None:
    m = _machine(DRAW)
    _book(m, "o1/0", 100.0 + 9000.0)
    out = m._sleep_or_not(100.0)
    assert _states(out) == ["standby"] and _timer(out, "deepen") is None


def test_an_unknown_gap_is_idled_then_slept_in_standby_then_off() -> None:
    """The machine's last operation done, nothing queued: the rule for a gap whose end is
    unknown (idle the break-even, then standby), deepened to off once the gap has lasted
    off_after_s — counted from the gap's start, not from the standby."""
    m = _machine()
    out = m._sleep_or_not(0.0)
    assert _states(out) == [] and _timer(out, "idle_check") == 210.0
    out = m.on_timer("idle_check", 210.0)
    assert _states(out) == ["standby"] and _timer(out, "deepen") == OFF_AFTER
    assert _states(m.on_timer("deepen", OFF_AFTER)) == ["off"] and m.asleep == "off"
    assert _states(m.on_timer("deepen", OFF_AFTER + 1)) == []  # a stale timer: nothing


def test_asleep_in_standby_a_booking_far_enough_ahead_switches_it_off() -> None:
    m = _machine()
    m._sleep_or_not(0.0)
    m.on_timer("idle_check", 210.0)
    _book(m, "o1/0", 300.0 + OFF_AFTER)                       # what is left: off pays
    out = m._sleep_or_not(300.0)
    assert _states(out) == ["off"] and _timer(out, "wake") == 300.0 + OFF_AFTER - 600.0


# -- the plant ---------------------------------------------------------------------------------

POWER = PowerModel.from_draw(COLD)


def _plant() -> tuple[simpy.Environment, EmbeddedPlant, list[dict[str, Any]]]:
    return cold_plant()


def test_the_plant_switches_a_machine_in_standby_off() -> None:
    env, plant, log = _plant()
    assert plant.backend.set_power("m", "standby") and plant.backend.set_power("m", "off")
    assert not plant.backend.set_power("m", "standby")        # standby only from idle
    assert [e["state"] for e in log] == ["standby", "off"]


def test_the_cold_start_is_waited_for_and_paid() -> None:
    """An operation for a machine that is off starts after the 600 s cold start (the log's
    op_start), and the report counts the cold start's 0.5 kWh and nothing while off."""
    env, plant, log = _plant()
    plant.backend.set_power("m", "off")
    env.run(until=1000.0)
    plant.command(Command("start_operation", "m", "o/0",
                          {"award_epoch": 1, "duration_s": 100.0, "order": "o"}))
    env.run(until=2000.0)
    assert [(e["t"], e["ev"], e.get("state")) for e in log] == [
        (0.0, "power_state", "off"), (1000.0, "power_state", "wake"),
        (1600.0, "power_state", "idle"), (1600.0, "op_start", None), (1700.0, "op_done", None)]
    spec = KpiSpec(machines={"m": MachineKpiSpec(1.0, 5.0, {"mill": 100.0}, POWER)},
                   orders={"o": OrderSpec(1, ("mill",))}, energy=EnergySpec(TOU))
    k = compute(log, spec, end_at=2000.0)["machines"]["m"]
    by = k["energy_by_state_kwh"]
    assert by["off"] == 0.0 and by["wake"] == pytest.approx(0.5, abs=1e-6)
    assert by["busy"] == pytest.approx(5.0 * 100 / H, abs=1e-6)
    assert by["idle"] == pytest.approx(1.0 * 300 / H, abs=1e-6)


# -- in a cell -----------------------------------------------------------------------------------


def _night_gap_cell(off: bool):  # noqa: ANN202 - a CellConfig
    """The energy demo cell, its second dozen orders released 6 h later (a long gap with
    nothing booked); ``off=False``: the same without any machine's cold start."""
    import copy
    from pathlib import Path

    import yaml

    from ops.config.loader import cell_from_dict

    root = Path(__file__).resolve().parents[1] / "cell_configs"
    d = copy.deepcopy(yaml.safe_load((root / "demo_cell_energy.yaml").read_text()))
    for o in d["orders"][12:]:
        o["release_at"] += 21600
        o["due_at"] += 21600
    if not off:
        for m in d["machines"]:
            wake = m["power_kw"].get("wake", {})
            wake.pop("off", None)
            wake.pop(False, None)          # YAML 1.1 reads the bare key ``off`` as false
    return cell_from_dict(d, source="demo+night", base_dir=root)


def test_a_cell_with_a_long_gap_switches_machines_off_under_its_cap_and_saves() -> None:
    from sim_bridge.invariants import parse
    from sim_bridge.report import build_report
    from sim_bridge.virtual import VirtualCell

    aware = {"resource_strategy": "agents.energy.strategies:EnergyAwareResource",
             "order_strategy": "agents.energy.strategies:EnergyCost"}
    runs = {}
    for off in (True, False):
        # no breakdowns: a machine that breaks down asleep comes back idle with no wake-up
        cell = VirtualCell(_night_gap_cell(off), seed=1, breakdowns=False, **aware)
        cell.run()
        runs[off] = (parse(cell.events), build_report(cell))
    evs, r = runs[True]
    assert all(r["invariants"].values()), r["invariant_violations"]     # the cap included
    assert r["orders_completed"] == r["orders_total"]
    went_off = {e["machine"] for e in evs if e["ev"] == "power_state" and e["state"] == "off"}
    assert went_off and went_off <= {"mill1", "mill2"}                # lathe1: no cold start
    woke = [e for e in evs if e["ev"] == "power_state" and e.get("from") == "off"]
    assert woke and all(e["machine"] in went_off for e in woke)
    # the cold start is paid: wake-up energy at least each cold start's kWh
    assert r["energy"]["by_state_kwh"]["wake"] >= 0.5 * len(woke)
    _, without = runs[False]
    assert not [e for e in runs[False][0] if e["ev"] == "power_state" and e["state"] == "off"]
    assert r["energy"]["kwh"] < without["energy"]["kwh"]
    assert r["energy"]["cost"] < without["energy"]["cost"]
