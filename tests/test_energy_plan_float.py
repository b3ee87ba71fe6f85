"""A rehearsed machine runs planned work later within the plan's float when cheaper (ADR 97).

An energy-aware order's planned call says the latest its operation may finish and keep
the plan (``latest_finish_at``); the machine re-times its committed tasks at every award
(agents/machine.py ``_retime``: the right-justifying pass of agents/energy/right_shift.py
over its own timeline) and holds a moved task until its new start.  Sans-io, one machine,
the plant's answers by hand.  The tariff is day 0.30 until 22:00 and night 0.10 after, the
run starting Monday 21:00: night begins at 3600 s.  DRAW: busy 4 kW above idle, standby
break-even 210 s, wake-up 60 s (a task moved into the night starts at 3660: the wake-up
before it is then drawn at the night price too)."""

from __future__ import annotations

from helpers.energy_tariffs import DRAW, day_night

from agents.base import PlantEventIn, Timing
from agents.energy.aware import MachineEnergy
from agents.energy.strategies import EnergyAwareResource
from agents.machine import MachineAgent
from agents.protocol.actions import Action, Command, Log, Send, SetTimer
from agents.protocol.messages import Award, CallForProposals, Message, Ready
from agents.rehearsal import Plan

TOU = day_night("mon 21:00")
NIGHT = 3600.0
WAKE = 60.0


def machine(*, plan_shift: bool = True, rehearsed: bool = True) -> MachineAgent:
    return MachineAgent("m1", timing=Timing(rehearsal_passes=5) if rehearsed else Timing(),
                        strategy=EnergyAwareResource(plan_shift=plan_shift), location="x",
                        capabilities={"mill": 600.0}, orders=["o1"],
                        power_idle_kw=1.0, power_busy_kw=5.0,
                        energy=MachineEnergy(TOU, DRAW, plan_shift=plan_shift))


def call(task: str, start_at: float, latest: float = 0.0,
         reply_by_at: float = 1.0) -> CallForProposals:
    return CallForProposals(task=task, order="o1", kind="operation", capability="mill",
                            op="mill", quantity=1, earliest_start_at=start_at, due_at=1e6,
                            reply_by_at=reply_by_at, latest_finish_at=latest)


def msg(body: object) -> Message:
    return Message("o1", "m1", "c", b"id", 1, 1, 0.0, body)  # type: ignore[arg-type]


def offer(m: MachineAgent, *calls: CallForProposals, now: float = 0.1) -> None:
    """The plan's calls, bid for in one round (as a rehearsed plan's come: at once)."""
    for c in calls:
        m.on_message(msg(c), now)
    bids = [a.body for a in m.on_timer("round", now + 0.05) if isinstance(a, Send)]
    assert [b.start_at for b in bids] == [c.earliest_start_at for c in calls]


def award(m: MachineAgent, task: str, now: float = 0.5) -> list[Action]:
    return m.on_message(msg(Award(task, 1, 60.0, m.tasks[task].start_at)), now)


def started(out: list[Action]) -> list[str]:
    return [a.task for a in out if isinstance(a, Command) and a.command == "start_operation"]


def test_a_task_with_float_moves_into_the_cheaper_night_and_waits_for_it() -> None:
    m = machine()
    offer(m, call("o1/0", 100.0, latest=6000.0))
    out = award(m, "o1/0")
    t = m.tasks["o1/0"]
    at = NIGHT + WAKE
    assert (t.start_at, t.finish_at) == (at, at + 600.0)
    logs = [a for a in out if isinstance(a, Log) and a.event == "retimed"]
    assert [(x.fields["planned_at"], x.fields["start_at"]) for x in logs] == [(100.0, at)]
    # the parts come at once: the machine waits for the night (asleep: the gap pays)
    out = m.on_message(msg(Ready("o1/0", 1)), 1.0)
    assert started(out) == []
    assert SetTimer("start_check", at) in out
    assert m.asleep == "standby"
    assert m._wake_at == NIGHT              # woken wake_s before the new start
    assert started(m.on_timer("start_check", at - 1.0)) == []
    m.on_timer("wake", NIGHT)
    assert started(m.on_timer("start_check", at)) == ["o1/0"]


def test_without_a_bound_or_with_plan_shift_off_the_task_keeps_its_slot() -> None:
    for m, latest in ((machine(), 0.0), (machine(plan_shift=False), 6000.0)):
        offer(m, call("o1/0", 100.0, latest=latest))
        out = award(m, "o1/0")
        assert m.tasks["o1/0"].start_at == 100.0
        assert not [a for a in out if isinstance(a, Log) and a.event == "retimed"]
        assert started(m.on_message(msg(Ready("o1/0", 1)), 1.0)) == ["o1/0"]


def test_an_unrehearsed_machine_never_moves_a_task() -> None:
    m = machine(rehearsed=False)
    offer(m, call("o1/0", 100.0, latest=6000.0))
    award(m, "o1/0")
    assert m.tasks["o1/0"].start_at == 100.0


def test_the_move_stops_at_the_bound_and_at_the_machine_s_next_task() -> None:
    """A's bound lets it reach the night, but B (no bound) is booked at 2000: A may not pass
    it, so it stays (no cheaper start before 2000 − 600 in the day saves anything but the
    gap's standby, which sleeping through it already has).  C is bounded at 3700: it can
    start no later than 3100, still day."""
    m = machine()
    offer(m, call("o1/0", 100.0, latest=9000.0), call("o1/1", 2000.0),
          call("o1/2", 2700.0, latest=3700.0))
    for task in ("o1/0", "o1/1", "o1/2"):
        award(m, task)
    a, b, c = (m.tasks[f"o1/{k}"] for k in range(3))
    assert a.finish_at <= b.start_at == 2000.0
    assert b.finish_at <= c.start_at and c.finish_at <= 3700.0


def test_an_offer_not_yet_awarded_blocks_the_move() -> None:
    """The plan's awards come in a burst: a task moved into the next offer's place would
    come back at that offer's award — the machine perhaps asleep by then."""
    m = machine()
    offer(m, call("o1/0", 100.0, latest=9000.0), call("o1/1", 1000.0))
    out = award(m, "o1/0")
    assert m.tasks["o1/0"].finish_at <= 1000.0
    assert not [a for a in out if isinstance(a, Log) and a.event == "retimed"
                and a.fields["start_at"] >= NIGHT]


def test_a_task_after_a_held_one_waits_for_it_in_planned_order() -> None:
    """A moves into the night, up to its bound (3700–4300: no idle left before B); B,
    planned after it at 4300, is ready at once but must not run first: the machine keeps
    the plan's order."""
    m = machine()
    offer(m, call("o1/0", 100.0, latest=4300.0), call("o1/1", 4300.0))
    award(m, "o1/0")
    award(m, "o1/1")
    assert m.tasks["o1/0"].start_at == 3700.0
    assert started(m.on_message(msg(Ready("o1/1", 1)), 1.0)) == []
    assert started(m.on_message(msg(Ready("o1/0", 1)), 1.1)) == []
    assert started(m.on_timer("start_check", 3700.0)) == ["o1/0"]
    out = m.on_plant_event(PlantEventIn("operation_done", "m1", "o1/0", {"quality": "ok"}),
                           4300.0)
    assert started(out) == ["o1/1"]


def test_a_task_handed_back_by_a_fault_and_called_again_is_quoted_afresh() -> None:
    """A moved task handed back by a breakdown, then called again after the repair (no
    bound: a re-call is not the plan's) is quoted, awarded and started like any other."""
    m = machine()
    offer(m, call("o1/0", 100.0, latest=6000.0))
    award(m, "o1/0")
    assert m.tasks["o1/0"].start_at > 100.0
    out = m.on_plant_event(PlantEventIn("fault", "m1", "", {"reason": "breakdown"}), 2.0)
    assert [a.fields["task"] for a in out if isinstance(a, Log) and a.event == "handed_back"] \
        == ["o1/0"] and not m.tasks
    m.on_plant_event(PlantEventIn("repaired", "m1", "", {}), 50.0)
    offer(m, call("o1/0", 60.0, reply_by_at=51.0), now=50.0)
    award(m, "o1/0", now=50.5)
    assert m.tasks["o1/0"].start_at == 60.0 and m.hold_until("o1/0", m.tasks["o1/0"]) == 0.0
    assert started(m.on_message(msg(Ready("o1/0", 1)), 51.0)) == ["o1/0"]


def test_the_order_s_bound_is_the_next_planned_start_the_plan_end_or_its_due_date() -> None:
    from agents.order.initiator import OrderInitiator

    class Order(OrderInitiator):
        def __init__(self, due_at: float, plan_float: bool = True) -> None:
            self.due_at, self.plan_origin_at, self.plan_float = due_at, 1000.0, plan_float

    plan = Plan(makespan=5000.0, machine=("m1", "m2"), start=(0.0, 2000.0),
                finish=(600.0, 2600.0))
    o = Order(due_at=1e6)
    assert o._latest_finish(plan, 0) == 3000.0          # the next operation's start
    assert o._latest_finish(plan, 1) == 6000.0          # the plan's end
    assert Order(due_at=4000.0)._latest_finish(plan, 1) == 4000.0   # met: kept met
    assert Order(due_at=3000.0)._latest_finish(plan, 1) == 3600.0   # late: not later
    assert Order(due_at=1e6, plan_float=False)._latest_finish(plan, 0) == 0.0


# -- a rehearsed energy cell, end to end: Brandimarte mk02 with the bench's energy data --

def _mk02() -> object:
    from pathlib import Path

    from ops.bench import energy as bench

    root = Path(__file__).resolve().parents[1] / "cell_configs" / "benchmarks" / "fjsp"
    row = next(r for r in bench.load_bks(root / "bks.csv") if r.instance == "mk02")
    inst = bench.load_instance(bench.instance_path(row, root))
    cfg = bench.cell_from_dict(bench.energy_extension(bench.instance_to_cell_dict(inst),
                                                      "mk02", 0), source="mk02+energy")
    return bench._with_leases(cfg, False)   # its cap reported, not enforced: no leases


def test_a_rehearsed_energy_run_moves_work_inside_the_plan_and_explain_says_why(
        tmp_path: object) -> None:
    """mk02 under the energy-aware strategies, recorded: machines re-time planned tasks
    (``retimed``), the run ends when it ends with ``plan_shift`` off (the moves stay inside
    the plan) at no higher energy cost, every order is done, the invariants hold, and
    ``autocell explain`` tells an idle stretch spent waiting for a later, cheaper start."""
    import json
    from pathlib import Path

    from ops.explain import Recorded, explain
    from ops.replay import record_virtual
    from sim_bridge.report import build_report
    from sim_bridge.virtual import VirtualCell

    cfg = _mk02()
    order = "agents.energy.strategies:EnergyCost"
    runs = {}
    for shift in (True, False):
        resource = {"name": "agents.energy.strategies:EnergyAwareResource",
                    "params": {"plan_shift": shift}}
        cell = VirtualCell(cfg, order_strategy=order,
                           resource_strategy=resource)  # type: ignore[arg-type]
        path = Path(str(tmp_path)) / f"mk02-{shift}.jsonl"
        with path.open("wb") as sink:
            log = record_virtual(cell, sink)
            cell.run()
            log.close()
        report = build_report(cell)
        assert report["orders_completed"] == report["orders_total"]
        # every invariant but the cap's: the bench's uncapped method reports its cap only
        assert all(ok for name, ok in report["invariants"].items()
                   if name != "peak_cap_never_exceeded"), sorted(report["invariants"].items())
        moved = [e for e in map(json.loads, cell.events) if e.get("ev") == "retimed"
                 and e["start_at"] > e["planned_at"]]
        runs[shift] = (report["makespan"], report["energy"]["cost"], moved, path)
    (span, cost, moved, path), (span_off, cost_off, none, _) = runs[True], runs[False]
    assert moved and not none
    assert span <= span_off + 1e-6 and cost < cost_off
    for e in moved:                          # within the bound the order gave
        assert e["start_at"] > e["planned_at"]
    machine = moved[-1]["agent"]
    story = explain(Recorded.load(path), machine)
    assert any(x["text"].startswith("re-timed ") for x in story["lines"])
    held = [x for x in story["lines"] if x.get("data", {}).get("reason") == "cheaper_later"]
    assert held and "a later, cheaper start" in held[0]["text"]
