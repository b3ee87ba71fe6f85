"""A rehearsed cell's machine sleeps at once after its share of the plan (ADR 94).

In a rehearsed cell every operation is negotiated at once when the rehearsal ends, so a
machine that has finished work and holds no task has no planned work left: it sleeps at
once instead of idling its standby break-even first (agents/machine.py ``_plan_done``).
Sans-io, one machine, the plant's answers by hand; DRAW's break-even is 210 s."""

from __future__ import annotations

from helpers.energy_tariffs import DRAW

from agents.base import PlantEventIn, Timing
from agents.energy.aware import MachineEnergy
from agents.energy.strategies import EnergyAwareResource
from agents.machine import MachineAgent
from agents.protocol.actions import Action, Command, Send, SetTimer
from agents.protocol.messages import Award, CallForProposals, Message, Ready

from test_energy_aware import TOU


def machine(*, rehearsed: bool) -> MachineAgent:
    return MachineAgent("m1", timing=Timing(rehearsal_passes=5) if rehearsed else Timing(),
                        strategy=EnergyAwareResource(), location="x",
                        capabilities={"mill": 600.0}, orders=["o1"],
                        power_idle_kw=1.0, power_busy_kw=5.0,
                        energy=MachineEnergy(TOU, DRAW))


def call(task: str, start_at: float) -> CallForProposals:
    return CallForProposals(task=task, order="o1", kind="operation", capability="mill",
                            op="mill", quantity=1, earliest_start_at=start_at, due_at=1e6,
                            reply_by_at=start_at + 1.0)


def msg(body: object) -> Message:
    return Message("o1", "m1", "c", b"id", 1, 1, 0.0, body)  # type: ignore[arg-type]


def states(out: list[Action]) -> list[str]:
    return [a.args["state"] for a in out if isinstance(a, Command) and a.command == "set_state"]


def awarded(m: MachineAgent, task: str, start_at: float, now: float) -> list[Action]:
    """Call, bid, award ``task`` at ``now``, its slot starting at ``start_at`` (or at once)."""
    m.on_message(msg(call(task, start_at)), now)
    proposal = next(a.body for a in m.on_timer("round", now + 0.05) if isinstance(a, Send))
    assert proposal.start_at == max(start_at, now + 0.05)
    return m.on_message(msg(Award(task, 1, 60.0, proposal.start_at)), now + 0.5)


def run_one(m: MachineAgent) -> list[Action]:
    """``o1/0`` awarded and started at 0, done at 600 s: what the machine does then."""
    awarded(m, "o1/0", 0.0, 0.0)
    out = m.on_message(msg(Ready("o1/0", 1)), 0.5)
    assert [a for a in out if isinstance(a, Command) and a.command == "start_operation"]
    return m.on_plant_event(PlantEventIn("operation_done", "m1", "o1/0", {"quality": "ok"}),
                            600.0)


def test_after_its_last_planned_task_a_rehearsed_machine_sleeps_at_once() -> None:
    m = machine(rehearsed=True)
    out = run_one(m)
    assert states(out) == ["standby"] and m.asleep == "standby"
    assert not [a for a in out if isinstance(a, SetTimer) and a.key in ("idle_check", "wake")]


def test_an_unrehearsed_machine_still_idles_the_break_even_first() -> None:
    """Outside a rehearsed cell the next call may come at any time: rent or buy, as before."""
    m = machine(rehearsed=False)
    out = run_one(m)
    assert states(out) == [] and not m.asleep
    assert SetTimer("idle_check", 600.0 + 210.0) in out
    assert states(m.on_timer("idle_check", 810.0)) == ["standby"]


def test_before_any_work_or_with_work_booked_the_rules_are_as_before() -> None:
    """Before the first award (the rehearsal) the break-even clock runs from the start; a
    machine with planned work still booked sleeps only through a gap past the break-even,
    and wakes wake_s (60 s) before its next start."""
    m = machine(rehearsed=True)
    out = m.on_start(0.0)
    assert states(out) == [] and SetTimer("idle_check", 210.0) in out
    m = machine(rehearsed=True)
    awarded(m, "o1/1", 700.0, 0.0)            # 100 s after o1/0's end: shorter than 210 s
    out = run_one(m)
    assert states(out) == [] and not m.asleep
    m = machine(rehearsed=True)
    awarded(m, "o1/1", 1600.0, 0.0)           # 1000 s after o1/0's end
    out = run_one(m)
    assert states(out) == ["standby"] and m._wake_at == 1540.0   # its wake timer


def test_an_offer_held_keeps_the_break_even_rule() -> None:
    """A call after the plan (work handed back by a fault) is offered: the machine holds a
    task, so it is not done with the plan and decides on the offer as before."""
    m = machine(rehearsed=True)
    run_one(m)
    assert m.asleep == "standby"
    m = machine(rehearsed=True)
    awarded(m, "o1/0", 0.0, 0.0)
    m.on_message(msg(Ready("o1/0", 1)), 0.5)
    m.on_message(msg(call("o1/1", 650.0)), 590.0)
    m.on_timer("round", 590.05)                # bid: a slot 50 s after the end, held
    out = m.on_plant_event(PlantEventIn("operation_done", "m1", "o1/0", {"quality": "ok"}),
                           600.0)
    assert states(out) == [] and not m.asleep


# -- the plan leaves the sleeping machines time to wake up (ADR 94) --------------------------


def test_the_wake_lead_is_the_longest_wake_up_of_the_machines_asleep_by_then() -> None:
    """DRAW: break-even 210 s, wake-up 60 s; ``slow``: wake-up 100 s, break-even
    (0.1 kWh · 3600 − 0.2 kW · 100 s) / (1 − 0.2) kW = 425 s."""
    from agents.cell.energy import PowerDraw
    from agents.energy.rehearsal import PlanPricing

    slow = PowerDraw.model_validate({"idle": 1.0, "busy": 5.0, "standby": 0.2,
                                     "wake": {"standby": {"time_s": 100, "energy_kwh": 0.1}}})
    fast, hungry = MachineEnergy(TOU, DRAW), MachineEnergy(TOU, slow)
    assert hungry.break_even_s == 425.0 and fast.break_even_s == 210.0
    pricing = PlanPricing({"a": fast, "b": hungry}, {}, 600.0)
    assert pricing.wake_lead_s(209.0) == 0.0            # nobody asleep yet
    assert pricing.wake_lead_s(210.0) == 60.0           # a asleep
    assert pricing.wake_lead_s(500.0) == 100.0          # both
    capped = MachineEnergy(TOU, slow, wake_early=False)  # under a cap: the lease wakes it
    no_standby = MachineEnergy(TOU, slow, standby=False)
    assert PlanPricing({"a": fast, "b": capped, "c": no_standby}, {}, 600.0
                       ).wake_lead_s(1e6) == 60.0
