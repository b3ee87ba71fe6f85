"""Energy in the rehearsal's dispatch passes, and standby through the rehearsal (ADR 78).

By hand, sans-io: the cheaper machines of an operation (``PlanPricing.cheaper``); a
priced dispatch pass places an operation at the low-power machine where the plain
dispatch passes take the first machine free, so the plan's cost drops; a priced pass
longer than the makespan band is not kept.  The machine's side: an aware machine's idle
clock runs from its start (it sleeps through a long rehearsal), and asleep in a
rehearsed cell it quotes the planned start (a later quote would reorder the plan).
"""

from __future__ import annotations

import dataclasses

import random

import pytest

from agents.base import Timing
from agents.cell.energy import PowerDraw
from agents.energy.aware import MachineEnergy
from agents.energy.rehearsal import PRICED_DISPATCH, PlanPricing
from agents.energy.strategies import EnergyAwareResource, EnergyCost
from agents.machine import MachineAgent
from agents.protocol.actions import Command, SetTimer
from agents.rehearsal import DISPATCH_RULES, MachineRehearsal, OrderRehearsal

from helpers.rehearsal import pump
from test_energy_aware import TOU, cfp

#: m1 draws 9 kW above idle busy, m2 only 2 kW; both 600 s per unit of "op"
HUNGRY = PowerDraw.model_validate({"idle": 1.0, "busy": 10.0, "standby": 0.2,
                                   "wake": {"standby": {"time_s": 60, "energy_kwh": 0.05}}})
FRUGAL = PowerDraw.model_validate({"idle": 1.0, "busy": 3.0, "standby": 0.2,
                                   "wake": {"standby": {"time_s": 60, "energy_kwh": 0.05}}})


def pricing(*, m2_s: float = 600.0, passes: tuple[tuple[str, float], ...] = PRICED_DISPATCH
            ) -> PlanPricing:
    return PlanPricing({"m1": MachineEnergy(TOU, HUNGRY), "m2": MachineEnergy(TOU, FRUGAL)},
                       {"m1": 0.0, "m2": 0.0}, 600.0,
                       durations={"m1": {"op": 600.0}, "m2": {"op": m2_s}},
                       dispatch_passes=passes)


def test_the_cheaper_machines_of_an_operation() -> None:
    p = pricing()
    assert p.cheaper(["m1", "m2"], "op", 1, 0.0) == ["m2"]
    assert p.cheaper(["m1", "m2"], "op", 1, 10.0) == ["m1", "m2"]
    # the mean price of the week weighs the energy; m1's extra 7 kW over 600 s
    mean = TOU.cost(1.0, 0.0, 7 * 86400.0) / (7 * 24.0)
    assert p.mean_cost("m1", "op", 1) - p.mean_cost("m2", "op", 1) == pytest.approx(  # type: ignore[operator]
        7.0 * 600.0 / 3600.0 * mean)
    # m2 ten times slower: its energy saving does not pay for 5400 s more
    assert pricing(m2_s=6000.0).cheaper(["m1", "m2"], "op", 1, 0.0) == ["m1"]
    # a machine without a price: every machine stays
    assert p.cheaper(["m1", "m3"], "op", 1, 0.0) == ["m1", "m3"]


def test_mean_cost_prices_nothing_out_of_work_with_price_idle_off() -> None:
    """With ``price_idle`` off the operation pays setup and busy above idle only; before
    the fix it paid the whole idle draw over the slot (the floor was 0 kW, not idle)."""
    on = pricing()
    off = dataclasses.replace(on, price_idle=False)
    mean = TOU.cost(1.0, 0.0, 7 * 86400.0) / (7 * 24.0)     # money per kWh over the week
    above_idle = (HUNGRY.busy - HUNGRY.idle) * 600.0 / 3600.0 * mean
    assert off.mean_cost("m1", "op", 1) == pytest.approx(above_idle)
    step = (HUNGRY.idle - HUNGRY.standby_kw) * 600.0 / 3600.0 * mean
    assert on.mean_cost("m1", "op", 1) == pytest.approx(above_idle + step)


def rehearse(orders: int, p: PlanPricing) -> dict[str, OrderRehearsal]:
    """Only the dispatch passes, among ``orders`` one-operation orders on m1 or m2."""
    ids = [f"o{j}" for j in range(1, orders + 1)]
    ors = {o: OrderRehearsal(o, alternatives=[["m1", "m2"]], capabilities=["op"], quantity=1,
                             work_s=[600.0], machines=["m1", "m2"], peers=ids,
                             passes=len(DISPATCH_RULES) + len(p.dispatch_passes),
                             rng=random.Random(0), budget_share=1.0, pricing=p) for o in ids}
    mrs = {m: MachineRehearsal(m, orders=ids, duration_s={"op": 600.0}) for m in ("m1", "m2")}
    pump(ors, mrs)
    return ors


def test_a_priced_dispatch_pass_takes_the_low_power_machine_and_the_plan_costs_less() -> None:
    # the plain dispatch passes give the operation to the first machine free: m1 (ties:
    # machine id); the priced ones only register it at m2, as short and cheaper
    plain = rehearse(1, pricing(passes=()))["o1"]
    priced = rehearse(1, pricing())["o1"]
    assert plain.best is not None and priced.best is not None
    assert plain.best.machine == ("m1",) and priced.best.machine == ("m2",)
    assert priced.best.makespan == plain.best.makespan == 600.0
    assert priced.best.score < plain.best.score
    assert priced.makespans == [600.0] * 5


def test_a_priced_pass_outside_the_makespan_band_is_not_kept() -> None:
    # two orders: the priced passes put both on m2, one after the other (1200 s, cheaper);
    # the plain ones run them side by side (600 s).  The band (5 %) keeps the short plan.
    ors = rehearse(2, pricing())
    assert ors["o1"].makespans == [600.0, 600.0, 600.0, 1200.0, 1200.0]
    for r in ors.values():
        assert r.best is not None and r.best.makespan == 600.0
    assert {r.best.machine for r in ors.values()} == {("m1",), ("m2",)}  # type: ignore[union-attr]


def test_the_order_strategy_turns_the_priced_dispatch_passes_on() -> None:
    from agents.energy.rehearsal import plan_pricing

    machine = MachineAgent("m1", timing=Timing(), strategy=EnergyAwareResource(), location="x",
                           capabilities={"op": 600.0}, energy=MachineEnergy(TOU, HUNGRY))
    on = plan_pricing({"m1": machine}, EnergyCost(priced_dispatch=True))
    off = plan_pricing({"m1": machine}, EnergyCost())
    assert on is not None and on.dispatch_passes == PRICED_DISPATCH
    assert off is not None and off.dispatch_passes == ()
    assert on.durations == {"m1": {"op": 600.0}}


def aware_machine(*, rehearsed: bool) -> MachineAgent:
    timing = Timing(rehearsal_passes=5) if rehearsed else Timing()
    return MachineAgent("m1", timing=timing, strategy=EnergyAwareResource(), location="x",
                        capabilities={"mill": 600.0}, orders=["o1"],
                        energy=MachineEnergy(TOU, HUNGRY))


def test_an_aware_machine_sleeps_through_a_long_rehearsal() -> None:
    """Nothing is booked before the first award: the idle clock runs from the start, and
    after the break-even with nothing come the machine sleeps (before, it idled until the
    first call of the real negotiation)."""
    m = aware_machine(rehearsed=True)
    be = m.energy.break_even_s   # type: ignore[union-attr]
    assert be is not None
    out = m.on_start(0.0)
    assert any(isinstance(a, SetTimer) and a.key == "idle_check" and a.at == be for a in out)
    out = m.on_timer("idle_check", be)
    assert [a for a in out if isinstance(a, Command)] == [
        Command("set_state", "m1", "", {"state": "standby"})]
    assert m.asleep


def test_asleep_a_rehearsed_cells_machine_quotes_the_planned_start() -> None:
    planned, plain = aware_machine(rehearsed=True), aware_machine(rehearsed=False)
    assert planned.planned_order and not plain.planned_order
    for m in (planned, plain):
        m.asleep = True
    assert planned.quote(cfp(), 0.0).start_at == 0.0
    assert plain.quote(cfp(), 0.0).start_at == HUNGRY.wake.standby.time_s
