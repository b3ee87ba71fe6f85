"""Energy-aware machines and orders (agents/energy/aware.py, agents/energy/strategies.py).

By hand: the price of a slot above idle, the later cheaper slot, the order's trade of
energy cost against finish and lateness.  In a cell: an energy-aware demo cell sleeps
through gaps and keeps every invariant; without a tariff the aware resource bids as the
default one (same event log).  Standby on the gap a machine expects (ADR 73): its held
offers count; a late part is waited for the break-even.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.energy_tariffs import DRAW, day_night

from agents.cell.energy import EnergySettings
from agents.cell.tariff import TimeOfUse
from agents.energy.aware import MachineEnergy
from agents.energy.strategies import EnergyAwareResource, EnergyCost
from agents.negotiation.strategies import resource_strategy
from agents.protocol.messages import CallForProposals, Proposal
from ops.config.loader import load_cell

ROOT = Path(__file__).resolve().parents[1]
AWARE = {"resource_strategy": "agents.energy.strategies:EnergyAwareResource",
         "order_strategy": "agents.energy.strategies:EnergyCost"}

# night 0.10 until 07:00, day 0.30 from 07:00; the run starts Monday 06:00
TOU = day_night("mon 06:00")


def cfp(due_at: float = 1e6) -> CallForProposals:
    return CallForProposals(task="o1/0", order="o1", kind="operation", capability="mill",
                            op="mill", quantity=1, earliest_start_at=0.0, due_at=due_at,
                            reply_by_at=1.0)


def test_a_slot_costs_its_energy_above_idle_at_the_prices_then() -> None:
    e = MachineEnergy(TOU, DRAW)
    # setup 1 kW above idle for 360 s at night, busy 4 kW above idle: 1800 s at night
    # (until 07:00 = 3600 s), then 1800 s by day
    cost = e.slot_cost("mill", 1440.0, 360.0, 3600.0)
    assert cost == pytest.approx(1 * 0.1 * 0.1 + 4 * 0.5 * 0.1 + 4 * 0.5 * 0.3)


def test_break_even_and_the_shift_candidates() -> None:
    e = MachineEnergy(TOU, DRAW, shift_max_s=20 * 3600.0)
    # (0.05·3600 − 0.2·60) / (1.0 − 0.2) = 210 s
    assert e.break_even_s == pytest.approx(210.0)
    assert e.worth_sleeping(210.0) and not e.worth_sleeping(209.0)
    assert e.shift_candidates(0.0) == [0.0, 3600.0, 16 * 3600.0]
    assert MachineEnergy(TOU, DRAW).shift_candidates(5.0) == [5.0]
    assert MachineEnergy(TOU, DRAW, standby=False).break_even_s is None


def test_the_order_weighs_energy_cost_against_finish_and_lateness() -> None:
    early = Proposal("o1/0", "operation", 0.0, 1000.0, 5.0, {"energy_cost": 2.0})
    late_cheap = Proposal("o1/0", "operation", 0.0, 1500.0, 5.0, {"energy_cost": 1.0})
    # 1 money = 600 s: saving 1.0 is worth 600 s of later finish, more than the 500 s
    s = EnergyCost()
    assert s.choose(cfp(), [("m1", early), ("m2", late_cheap)])[0] == "m2"
    # past the due date, every second late weighs ten times as much
    assert s.choose(cfp(due_at=1000.0), [("m1", early), ("m2", late_cheap)])[0] == "m1"
    # weight 0: earliest finish
    assert EnergyCost(s_per_money=0).choose(cfp(), [("m1", early), ("m2", late_cheap)])[0] == "m1"


def test_the_aware_resource_is_named_with_its_parameters() -> None:
    r = resource_strategy({"name": "agents.energy.strategies:EnergyAwareResource",
                           "params": {"shift_max_s": 3600, "standby": False}})
    assert isinstance(r, EnergyAwareResource) and r.shift_max_s == 3600 and not r.standby


def _run(path: Path, **kw: str | None):  # noqa: ANN202
    from sim_bridge.report import build_report
    from sim_bridge.virtual import VirtualCell

    cfg = load_cell(path)
    cell = VirtualCell(cfg, **kw)  # type: ignore[arg-type]
    cell.run()
    return cell, build_report(cell)


def test_an_aware_energy_cell_sleeps_and_keeps_every_invariant() -> None:
    cell, r = _run(ROOT / "cell_configs" / "demo_cell_energy.yaml", **AWARE)
    assert all(r["invariants"].values()), r["invariant_violations"]
    assert r["orders_completed"] == r["orders_total"]
    e = r["energy"]
    assert e["by_state_kwh"]["standby"] > 0 and e["cap_violations"] == 0


def test_without_a_tariff_the_aware_resource_bids_like_the_default() -> None:
    demo = ROOT / "cell_configs" / "demo_cell.yaml"
    plain, _ = _run(demo)
    aware, _ = _run(demo, resource_strategy=AWARE["resource_strategy"])
    assert plain.event_log_sha256() == aware.event_log_sha256()


def test_a_machine_offers_a_later_cheaper_slot_only_within_the_due_date() -> None:
    from agents.base import Timing
    from agents.machine import MachineAgent

    evening = TimeOfUse.from_settings(EnergySettings.model_validate({
        "clock_at_start": "mon 21:00",
        "tariff": {"periods": [{"from": "07:00", "to": "22:00", "price": 0.30},
                               {"from": "22:00", "to": "07:00", "price": 0.10}]}}))

    def machine(shift_max_s: float) -> MachineAgent:
        strategy = EnergyAwareResource(shift_max_s=shift_max_s)
        return MachineAgent("m1", timing=Timing(), strategy=strategy, location="x",
                            capabilities={"mill": 600.0}, power_idle_kw=1.0, power_busy_kw=5.0,
                            energy=MachineEnergy(evening, DRAW, shift_max_s=shift_max_s))

    # 600 s at 4 kW above idle: 0.2 EUR at 21:00, a third of it from 22:00 (t = 3600 s)
    now_slot = machine(0.0).quote(cfp(), 0.0)
    assert now_slot.start_at == 0.0 and now_slot.energy_cost == pytest.approx(4 / 6 * 0.3)
    later = machine(7200.0).quote(cfp(), 0.0)
    assert later.start_at == 3600.0 and later.energy_cost == pytest.approx(4 / 6 * 0.1)
    assert later.queue_s == 3600.0
    # a due date before the cheap slot ends keeps the earliest slot
    assert machine(7200.0).quote(cfp(due_at=4000.0), 0.0).start_at == 0.0
    # the price is a cost term of the proposal
    cost = EnergyAwareResource().price(cfp(), later)
    assert cost is not None and cost["energy_cost"] == later.energy_cost


def test_the_aware_order_awards_the_cheaper_of_two_equally_fast_machines(tmp_path: Path
                                                                          ) -> None:
    """The award scores the candidates with the energy term: one operation, two machines
    as fast as each other, M1 drawing 9 kW above idle and M2 3 kW.  Energy-blind agents
    take the lower id (M1); energy-aware ones the cheaper machine (M2), and pay less.
    No rehearsal here: a rehearsed plan calls one machine per operation (docs/energy.md)."""
    from ops.bench.energy import energy_extension
    from ops.config import cell_from_dict
    from sim_bridge.instances import instance_to_cell_dict, load_instance
    from sim_bridge.report import build_report
    from sim_bridge.virtual import VirtualCell

    (tmp_path / "two.fjs").write_text("1 2 1\n1 2 1 6 2 6\n")
    cell = energy_extension(instance_to_cell_dict(load_instance(tmp_path / "two.fjs")), "two")
    for m, busy in zip(cell["machines"], (10.0, 4.0)):
        m["power_kw"] = {**m["power_kw"], "idle": 1.0, "busy": busy, "standby": 0.2}
    cell["negotiation"] = {**cell["negotiation"], "rehearsal_passes": 0}
    cell["energy"] = {**cell["energy"], "cap_leases": False}
    cfg = cell_from_dict(cell, source="two machines")

    def busy_machine(**kw: str) -> tuple[str, float]:
        c = VirtualCell(cfg, **kw)  # type: ignore[arg-type]
        c.run()
        e = build_report(c)["energy"]
        [busy] = [m for m, by in e["by_machine_state_kwh"].items() if by.get("busy", 0) > 0]
        return busy, e["cost"]

    blind, blind_cost = busy_machine()
    aware, aware_cost = busy_machine(**AWARE)
    assert (blind, aware) == ("M1", "M2")
    # it is the order's choice: aware machines alone (their bids priced) still go to M1
    assert busy_machine(resource_strategy=AWARE["resource_strategy"])[0] == "M1"
    assert aware_cost < blind_cost


# -- standby: the gap the machine expects (fifth round, ADR 73) ------------------------------


def _sleeper() -> "MachineAgent":  # noqa: F821
    from agents.base import Timing
    from agents.machine import MachineAgent

    return MachineAgent("m1", timing=Timing(), strategy=EnergyAwareResource(), location="x",
                        capabilities={"mill": 600.0}, power_idle_kw=1.0, power_busy_kw=5.0,
                        energy=MachineEnergy(TOU, DRAW))


def _book(m: object, task: str, start_at: float, *events: str, hold_until_at: float = 0.0
          ) -> None:
    from agents.resource import Task

    c = CallForProposals(task=task, order=task.split("/")[0], kind="operation",
                         capability="mill", op="mill", quantity=1, earliest_start_at=0.0,
                         due_at=1e6, reply_by_at=1.0)
    t = Task(c, c.order, "conv", start_at=start_at, finish_at=start_at + 600.0,
             hold_until_at=hold_until_at)
    for ev in events:
        assert t.fire(ev)  # type: ignore[arg-type]
    m.tasks[task] = t  # type: ignore[attr-defined]


def _states(out: list[object]) -> list[str]:
    return [a.args["state"] for a in out if getattr(a, "command", "") == "set_state"]  # type: ignore[attr-defined]


def test_an_offer_that_may_be_awarded_now_keeps_the_machine_awake() -> None:
    """The burst of a rehearsed plan's awards: booked far ahead (gap ≥ the 210 s break-even)
    while an offer for a start 5 s away is still held.  Deciding on the booking alone, the
    machine slept and woke at once for the offer's award (a wasted wake-up, and the start
    60 s late); it stays awake, and sleeps once the offer is rejected."""
    m = _sleeper()
    _book(m, "o1/0", 1000.0, "propose", "accept")
    _book(m, "o2/0", 105.0, "propose", hold_until_at=150.0)
    out = m._sleep_or_not(100.0)
    assert _states(out) == [] and not m.asleep
    assert any(getattr(a, "key", "") == "offer_check" and a.at == 150.0  # type: ignore[attr-defined]
               for a in out)
    m.tasks["o2/0"].fire("reject")
    out = m._sleep_or_not(101.0)
    assert _states(out) == ["standby"] and m.asleep
    # it wakes wake_s (60 s) before the booked start
    assert any(getattr(a, "key", "") == "wake" and a.at == 940.0 for a in out)  # type: ignore[attr-defined]


def test_an_offer_past_the_break_even_does_not_keep_the_machine_awake() -> None:
    m = _sleeper()
    _book(m, "o1/0", 1000.0, "propose", "accept")
    _book(m, "o2/0", 400.0, "propose", hold_until_at=150.0)   # 300 s away ≥ 210 s
    assert _states(m._sleep_or_not(100.0)) == ["standby"]


def test_a_lapsed_offer_no_longer_counts() -> None:
    m = _sleeper()
    _book(m, "o1/0", 1000.0, "propose", "accept")
    _book(m, "o2/0", 105.0, "propose", hold_until_at=150.0)
    assert _states(m._sleep_or_not(100.0)) == []
    assert _states(m._sleep_or_not(150.0)) == ["standby"]   # the offer_check timer's time


def test_a_late_part_is_waited_for_the_break_even_then_slept_through() -> None:
    """The booked start has passed and the part is not there: the gap's end is unknown.
    The machine idles the break-even (210 s), then sleeps; it sets no wake-up timer for a
    start already past (waking at once was what it did before: a wake-up for nothing) —
    the plant wakes it when the operation starts."""
    m = _sleeper()
    _book(m, "o1/0", 100.0, "propose", "accept")
    out = m._sleep_or_not(120.0)
    assert _states(out) == [] and any(getattr(a, "key", "") == "idle_check" and a.at == 330.0  # type: ignore[attr-defined]
                                      for a in out)
    assert _states(m._sleep_or_not(200.0)) == []
    out = m._sleep_or_not(330.0)
    assert _states(out) == ["standby"]
    assert not any(getattr(a, "key", "") == "wake" for a in out)


def test_a_task_won_on_a_later_cheaper_slot_waits_for_its_awarded_start() -> None:
    """``shift_max_s``: at 21:00 the machine quotes the 22:00 night slot (t = 3600 s); the
    parts arrive at once, yet it starts at 3600 s, at the quoted energy cost, and sleeps
    through the wait (the hour is past its 210 s break-even).  Before, it started at 0,
    at the day price.  A task quoted its earliest slot still starts when its parts come."""
    from agents.base import Timing
    from agents.machine import MachineAgent
    from agents.protocol.actions import Command, Send, SetTimer
    from agents.protocol.messages import Award, Message, Ready

    evening = TimeOfUse.from_settings(EnergySettings.model_validate({
        "clock_at_start": "mon 21:00",
        "tariff": {"periods": [{"from": "07:00", "to": "22:00", "price": 0.30},
                               {"from": "22:00", "to": "07:00", "price": 0.10}]}}))

    def msg(body: object) -> Message:
        return Message("o1", "m1", "c", b"id", 1, 1, 0.0, body)  # type: ignore[arg-type]

    def machine(shift_max_s: float) -> MachineAgent:
        strategy = EnergyAwareResource(shift_max_s=shift_max_s)
        return MachineAgent("m1", timing=Timing(), strategy=strategy, location="x",
                            capabilities={"mill": 600.0}, power_idle_kw=1.0, power_busy_kw=5.0,
                            energy=MachineEnergy(evening, DRAW, shift_max_s=shift_max_s))

    def won(m: MachineAgent) -> tuple[float, float, list]:  # type: ignore[type-arg]
        m.on_message(msg(cfp()), 0.0)
        proposal = next(a.body for a in m.on_timer("round", 0.05) if isinstance(a, Send))
        out = m.on_message(msg(Award("o1/0", 1, 60.0, proposal.start_at)), 0.5)
        return proposal.start_at, proposal.cost["energy_cost"], \
            out + m.on_message(msg(Ready("o1/0", 1)), 1.0)

    m = machine(7200.0)
    start_at, quoted, out = won(m)
    assert start_at == pytest.approx(3600.0)
    assert not [a for a in out if isinstance(a, Command) and a.command == "start_operation"]
    assert [a.args["state"] for a in out
            if isinstance(a, Command) and a.command == "set_state"] == ["standby"]
    assert [a.at for a in out if isinstance(a, SetTimer) and a.key == "start_check"] == [start_at]
    assert SetTimer("start_check", start_at) in m.on_timer("start_check", 1800.0)
    started = [a for a in m.on_timer("start_check", start_at)
               if isinstance(a, Command) and a.command == "start_operation"]
    assert len(started) == 1 and m.tasks["o1/0"].started_at == start_at
    assert m.energy is not None
    assert m.energy.slot_cost("mill", start_at, 0.0, 600.0) == pytest.approx(quoted)
    assert quoted == pytest.approx(4 / 6 * 0.1)                # the night price
    # the earliest slot quoted (no shift): started as soon as the parts are there
    m0 = machine(0.0)
    start_at, _, out = won(m0)
    assert start_at < 1.0
    assert [a for a in out if isinstance(a, Command) and a.command == "start_operation"]
