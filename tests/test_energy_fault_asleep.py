"""A machine that breaks down asleep comes back asleep, and pays its wake-up (ADR 89).

By hand, in virtual time: the embedded plant's log and the energy report of a machine
that breaks down in off, in standby and while waking, and the energy-aware machine agent
that keeps knowing it sleeps through the repair.
"""

from __future__ import annotations

from typing import Any

import pytest
import simpy
from helpers.energy_tariffs import COLD, cold_plant, day_night

from agents.base import PlantEventIn, Timing
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
POWER = PowerModel.from_draw(COLD)


def _plant() -> tuple[simpy.Environment, EmbeddedPlant, list[dict[str, Any]]]:
    return cold_plant()


def _energy(log: list[dict[str, Any]], end_at: float) -> dict[str, float]:
    spec = KpiSpec(machines={"m": MachineKpiSpec(1.0, 5.0, {"mill": 100.0}, POWER)},
                   orders={"o": OrderSpec(1, ("mill",))}, energy=EnergySpec(TOU))
    return compute(log, spec, end_at=end_at)["machines"]["m"]["energy_by_state_kwh"]


def _start_at(env: simpy.Environment, plant: EmbeddedPlant, at: float) -> None:
    env.run(until=at)
    plant.command(Command("start_operation", "m", "o/0",
                          {"award_epoch": 1, "duration_s": 100.0, "order": "o"}))


def test_a_machine_broken_off_is_repaired_off_and_its_next_operation_pays_the_cold_start() -> None:
    """Off at 0, down at 100, repaired at 400: the log says it is off again, and the
    operation asked at 1000 starts after the 600 s cold start, whose 0.5 kWh is paid.
    (Before ADR 89 it came back idle: the operation started at once, no wake-up paid.)"""
    env, plant, log = _plant()
    plant.backend.set_power("m", "off")
    env.run(until=100.0)
    plant.backend.fail("m", 300.0)
    _start_at(env, plant, 1000.0)
    env.run(until=2000.0)
    assert [(e["t"], e["ev"], e.get("state")) for e in log] == [
        (0.0, "power_state", "off"), (100.0, "fault", None), (400.0, "repaired", None),
        (400.0, "power_state", "off"), (1000.0, "power_state", "wake"),
        (1600.0, "power_state", "idle"), (1600.0, "op_start", None), (1700.0, "op_done", None)]
    by = _energy(log, 2000.0)
    assert by["wake"] == pytest.approx(0.5, abs=1e-6)
    assert by["down"] == pytest.approx(1.0 * 300 / H, abs=1e-6)        # down at idle power
    assert by["off"] == 0.0
    assert by["idle"] == pytest.approx(1.0 * 300 / H, abs=1e-6)        # 1700..2000 only


def test_a_machine_broken_in_standby_comes_back_in_standby() -> None:
    env, plant, log = _plant()
    plant.backend.set_power("m", "standby")
    plant.backend.fail("m", 50.0)
    env.run(until=500.0)
    assert plant.machines["m"].power == "standby"
    assert log[-1] == {"t": 50.0, "ev": "power_state", "machine": "m", "state": "standby"}
    by = _energy(log, 500.0)
    assert by["standby"] == pytest.approx(0.2 * 450 / H, abs=1e-6)
    assert by["idle"] == 0.0 and by["wake"] == 0.0


def test_a_machine_broken_while_waking_comes_back_in_the_state_it_woke_from() -> None:
    """Woken from off at 0, down at 100 (a sixth of the cold start drawn), repaired at
    200: off again, and the next operation waits a whole cold start and pays it again."""
    env, plant, log = _plant()
    plant.backend.set_power("m", "off")
    plant.backend.set_power("m", "idle")
    env.run(until=100.0)
    plant.backend.fail("m", 100.0)
    env.run(until=250.0)
    assert plant.machines["m"].power == "off"
    _start_at(env, plant, 300.0)
    env.run(until=1500.0)
    assert [e["t"] for e in log if e["ev"] == "op_start"] == [900.0]
    assert _energy(log, 1500.0)["wake"] == pytest.approx(0.5 / 6 + 0.5, abs=1e-6)


def test_an_awake_machine_still_comes_back_idle_with_no_power_event() -> None:
    env, plant, log = _plant()
    plant.backend.fail("m", 10.0)
    env.run(until=20.0)
    assert plant.machines["m"].power == "idle"
    assert [e["ev"] for e in log] == ["fault", "repaired"]


# -- the machine agent ---------------------------------------------------------------------------


def _machine() -> MachineAgent:
    return MachineAgent("m1", timing=Timing(), strategy=EnergyAwareResource(), location="x",
                        capabilities={"mill": 600.0}, power_idle_kw=1.0, power_busy_kw=5.0,
                        energy=MachineEnergy(TOU, COLD))


def _book(m: MachineAgent, task: str, start_at: float) -> None:
    c = CallForProposals(task=task, order=task.split("/")[0], kind="operation",
                         capability="mill", op="mill", quantity=1, earliest_start_at=0.0,
                         due_at=1e6, reply_by_at=1.0)
    t = Task(c, c.order, "conv", start_at=start_at, finish_at=start_at + 600.0)
    assert t.fire("propose") and t.fire("accept")
    m.tasks[task] = t


def test_the_agent_knows_its_machine_sleeps_through_the_repair_and_wakes_it_in_time() -> None:
    """Off with work booked at 20000 (wake timer at 19400); down at 1000, the wake timer
    firing while down does nothing, and once repaired at 30000 with work booked at 40000
    it wakes the machine the cold start early again."""
    m = _machine()
    _book(m, "o/0", 20000.0)
    out = m._after([], 0.0)
    assert m.asleep == "off"
    m.on_plant_event(PlantEventIn("fault", "m1", "", {"reason": "breakdown"}), 1000.0)
    assert m.asleep == "off"
    assert m.on_timer("wake", 19400.0) == [] and m.asleep == "off"
    m.tasks.clear()
    _book(m, "o/1", 40000.0)
    out = m.on_plant_event(PlantEventIn("repaired", "m1", "", {}), 30000.0)
    assert m.asleep == "off"
    assert [a.at for a in out if getattr(a, "key", "") == "wake"] == [39400.0]
