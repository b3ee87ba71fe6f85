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
from agents.protocol.actions import CancelTimer, Command, Send, SetTimer
from agents.protocol.messages import Award, CallForProposals, Message, Proposal, Ready
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


# -- broken while waking: the agent and its plant together (ADR 91) --------------------------


class _Cell:
    """The energy-aware machine agent ``m`` and its machine on the embedded plant, on one
    SimPy clock: the runner's part done by hand — commands to the plant at once, plant
    events and timers back to the agent (a timer replaced or cancelled never fires)."""

    def __init__(self) -> None:
        self.env, self.plant, self.log = cold_plant(emit=self._event)
        self.m = MachineAgent("m", timing=Timing(), strategy=EnergyAwareResource(),
                              location="bay", capabilities={"mill": 100.0}, power_idle_kw=1.0,
                              power_busy_kw=5.0, energy=MachineEnergy(TOU, COLD))
        self.armed: dict[str, int] = {}
        self.tokens = 0
        self.starts: dict[str, float] = {}      # task -> the start the machine proposed

    def act(self, out: list[Any]) -> None:
        for a in out:
            if isinstance(a, Command):
                self.plant.command(a)
            elif isinstance(a, SetTimer):
                self.tokens += 1
                self.armed[a.key] = token = self.tokens
                self.env.timeout(max(0.0, a.at - self.env.now)).callbacks.append(
                    lambda _e, key=a.key, token=token: self._fire(key, token))
            elif isinstance(a, CancelTimer):
                self.armed.pop(a.key, None)
            elif isinstance(a, Send) and isinstance(a.body, Proposal):
                self.starts[a.body.task] = a.body.start_at

    def _fire(self, key: str, token: int) -> None:
        if self.armed.get(key) == token:
            del self.armed[key]
            self.act(self.m.on_timer(key, self.env.now))

    def _event(self, ev: PlantEventIn) -> None:
        self.env.timeout(0).callbacks.append(
            lambda _e: self.act(self.m.on_plant_event(ev, self.env.now)))

    def message(self, body: Any) -> None:
        self.act(self.m.on_message(Message("o", "m", "c", b"id", 1, 1, 0.0, body),
                                   self.env.now))

    def book(self, task: str, earliest_at: float) -> float:
        """Call for ``task`` now, earliest at ``earliest_at``, and award the machine's
        proposal; its proposed start."""
        now = self.env.now
        self.message(CallForProposals(task=task, order="o", kind="operation",
                                      capability="mill", op="mill", quantity=1,
                                      earliest_start_at=earliest_at, due_at=1e6,
                                      reply_by_at=now + 1.0))
        self.env.run(until=now + 0.1)                       # the bidding round
        self.message(Award(task, 1, 60.0, self.starts[task]))
        return self.starts[task]

    def run_until(self, at: float) -> None:
        self.env.run(until=at)


@pytest.mark.parametrize(("first_at", "fault_at", "slept", "wake_s", "wake_kwh", "next_s"), [
    (1000.0, 970.0, "standby", 60.0, 0.05, 150.0),    # woken at 940, down half-way
    (20000.0, 19700.0, "off", 600.0, 0.5, 900.0),     # woken at 19400, down half-way
])
def test_a_machine_broken_while_waking_is_woken_in_time_for_its_next_operation(
        first_at: float, fault_at: float, slept: str, wake_s: float, wake_kwh: float,
        next_s: float) -> None:
    """Asleep until its booked start, the agent wakes the machine ``wake_s`` early; the
    machine breaks down half-way through the wake-up and the plant hands it back from the
    repair in the state it woke from.  The agent knows it: the next operation it books
    (earliest ``next_s`` after the repair) starts at the start it proposed, because the
    wake-up was planned before it, and one whole wake-up is paid after the repair.
    (Before ADR 91 the agent believed the machine awake, and the operation waited the
    whole wake-up at its start.)"""
    c = _Cell()
    c.book("o/0", first_at)
    c.run_until(fault_at - 1.0)
    assert [(e["t"], e["state"]) for e in c.log if e["ev"] == "power_state"] == [
        (0.1, slept), (first_at - wake_s, "wake")]
    c.run_until(fault_at)
    c.plant.backend.fail("m", 100.0)
    repaired_at = fault_at + 100.0
    c.run_until(repaired_at + 1.0)
    assert c.m.up and c.m.asleep == slept and c.plant.machines["m"].power == slept
    start_at = c.book("o/1", repaired_at + next_s)
    assert start_at == repaired_at + next_s
    c.run_until(start_at)
    c.message(Ready("o/1", 1))                          # the parts come at the start
    c.run_until(start_at + 200.0)             # within the break-even after the operation
    after = [(e["t"], e["ev"], e.get("state")) for e in c.log if e["t"] >= repaired_at]
    assert after == [
        (repaired_at, "repaired", None), (repaired_at, "power_state", slept),
        (start_at - wake_s, "power_state", "wake"), (start_at, "power_state", "idle"),
        (start_at, "op_start", None), (start_at + 100.0, "op_done", None)]
    # a half wake-up before the fault, one whole one after the repair
    assert _energy(c.log, start_at + 200.0)["wake"] == pytest.approx(1.5 * wake_kwh, abs=1e-6)


def test_a_machine_down_asleep_drops_its_wake_up_and_sleeps_through_an_empty_repair() -> None:
    """Asleep in standby with work booked at 1000 (wake-up at 940), down at 500, repaired
    at 600 with nothing booked again: the wake-up was for the work handed back at the
    fault, so the machine is not woken at 940 — it stays in standby."""
    c = _Cell()
    c.book("o/0", 1000.0)
    c.run_until(500.0)
    c.plant.backend.fail("m", 100.0)
    c.run_until(1500.0)
    assert c.plant.machines["m"].power == "standby" and c.m.asleep == "standby"
    assert [(e["t"], e["state"]) for e in c.log if e["ev"] == "power_state"] == [
        (0.1, "standby"), (600.0, "standby")]
