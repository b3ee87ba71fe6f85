"""Energy passes after the rehearsal's loop (order strategy ``energy_passes``, ADR 90).

By hand, sans-io (orders and machines wired by an in-memory queue, as in
tests/test_energy_dispatch.py): a move to a machine that uses less energy is kept when
the plan stays within the makespan band and costs less, and not kept when it would
break the band; the same seed gives the same plan; the rehearsal's time comes out of
the band; the order strategy turns the passes on.  With the reference (ADR 98, the
default) the loop is first rehearsed as energy-blind orders rehearse it — the same
passes, the same plan — and the band is measured from that plan and its rehearsal time.
"""

from __future__ import annotations

import random

import pytest

from agents.base import Timing
from agents.cell.energy import PowerDraw
from agents.energy.aware import MachineEnergy
from agents.energy.rehearsal import PlanPricing, plan_pricing
from agents.energy.strategies import EnergyAwareResource, EnergyCost
from agents.machine import MachineAgent
from agents.rehearsal import DISPATCH_RULES, MachineRehearsal, OrderRehearsal

from helpers.rehearsal import pump
from test_energy_aware import TOU
from test_energy_dispatch import FRUGAL, HUNGRY

#: m2: as hungry as m1 but for half a kilowatt busy — a saving too small for the loop's
#: exchange rate to buy 50 s of makespan with, and still a saving
MILD = PowerDraw.model_validate({**HUNGRY.model_dump(), "busy": HUNGRY.busy - 0.5})

#: the loop: the dispatch passes, the level-keyed pass, one backward and one forward pass
LOOP = len(DISPATCH_RULES) + 1 + 2


def pricing(energy_passes: int, *, b_s: float = 650.0, reference: bool = False
            ) -> PlanPricing:
    """m1 hungry (9 kW above idle busy), m2 mild (8.5 kW), m3 frugal (2 kW); 600 s per
    unit of "a" on m1 and m2, ``b_s`` of "b" on m2, 1200 s of "long" on m3."""
    return PlanPricing({"m1": MachineEnergy(TOU, HUNGRY), "m2": MachineEnergy(TOU, MILD),
                        "m3": MachineEnergy(TOU, FRUGAL)},
                       {"m1": 0.0, "m2": 0.0, "m3": 0.0}, 600.0,
                       durations={"m1": {"a": 600.0, "b": 600.0},
                                  "m2": {"a": 600.0, "b": b_s},
                                  "m3": {"long": 1200.0}},
                       energy_passes=energy_passes, reference=reference)


def rehearse(routes: dict[str, list[tuple[str, list[str]]]], p: PlanPricing | None, *,
             seed: int = 0, passes: int = LOOP) -> dict[str, OrderRehearsal]:
    """A rehearsal of ``LOOP`` passes and ``p.energy_passes`` energy passes among orders
    whose operations are (capability, machines)."""
    ids = sorted(routes)
    machines = ["m1", "m2", "m3"]
    durations = (p or pricing(0)).durations
    ors = {o: OrderRehearsal(
        o, alternatives=[ms for _, ms in routes[o]], capabilities=[c for c, _ in routes[o]],
        quantity=1, work_s=[min(durations[m][c] for m in ms) for c, ms in routes[o]],
        machines=machines, peers=ids, passes=passes, rng=random.Random(f"{seed}/{o}"),
        budget_share=1.0, pricing=p) for o in ids}
    mrs = {m: MachineRehearsal(m, orders=ids, duration_s=dict(durations[m]))
           for m in machines}
    pump(ors, mrs)
    return ors


#: o1's operation runs on hungry m1 or milder m2; o2's only on m2; o3's only on m3,
#: 1200 s: it sets the makespan
ROUTES = {"o1": [("a", ["m1", "m2"])], "o2": [("b", ["m2"])], "o3": [("long", ["m3"])]}


@pytest.mark.parametrize("reference", [False, True])
def test_a_move_to_a_less_hungry_machine_within_the_band_is_kept(reference: bool) -> None:
    # The loop keeps o1 on m1 (1200 s): on m2, after o2, it ends at 1250 s, and 0.5 kW
    # for 600 s is worth less than 50 s at 600 s/EUR.  With energy passes the plan kept
    # is the least energy cost within the band (1260 s): o1 on m2.
    loop = rehearse(ROUTES, pricing(0))
    moved = rehearse(ROUTES, pricing(5, reference=reference))
    before, after = loop["o1"].best, moved["o1"].best
    assert before is not None and after is not None
    assert before.machine == ("m1",) and after.machine == ("m2",)
    assert before.makespan == 1200.0 and after.makespan == 1250.0
    assert after.cost < before.cost and after.score > before.score
    # with the reference, the loop starts after it (here one pass: it meets the bound)
    first = moved["o1"].loop_from
    assert first == (1 if reference else 0)
    assert moved["o1"].energy_from == first + LOOP and loop["o1"].energy_from is None
    assert len(moved["o1"].makespans) == first + LOOP + 5
    # the first energy pass re-times the plan kept (o1 on m1, 1200 s); in the second,
    # o1 (its turn first) moves its operation to m2
    e = first + LOOP
    assert moved["o1"].makespans[e:e + 2] == [1200.0, 1250.0]
    # every order keeps the same pass: the others' parts are where they were
    for o in ("o2", "o3"):
        assert moved[o].best is not None and loop[o].best is not None
        assert moved[o].best.machine == loop[o].best.machine
        assert moved[o].best.cost == after.cost


@pytest.mark.parametrize("reference", [False, True])
def test_a_move_that_would_break_the_band_is_not_kept(reference: bool) -> None:
    # o2 now takes 900 s on m2: o1 there would end at 1500 s, 25 % past the shortest plan
    ors = rehearse(ROUTES, pricing(5, b_s=900.0, reference=reference))
    best = ors["o1"].best
    assert best is not None and best.machine == ("m1",) and best.makespan == 1200.0
    # the move was tried (o1's turn, the second energy pass), and its plan was longer
    e = ors["o1"].energy_from
    assert e is not None
    assert ors["o1"].makespans[e:e + 2] == [1200.0, 1500.0]


def test_the_same_seed_gives_the_same_plan() -> None:
    routes = {"o1": [("a", ["m1", "m2"]), ("b", ["m1", "m2"])],
              "o2": [("b", ["m2", "m1"]), ("a", ["m1", "m2"])],
              "o3": [("long", ["m3"]), ("a", ["m1", "m2"])],
              "o4": [("a", ["m2", "m1"])]}
    runs = [rehearse(routes, pricing(8, reference=True), seed=s) for s in (3, 3)]
    for o in routes:
        assert runs[0][o].best == runs[1][o].best
        assert runs[0][o].makespans == runs[1][o].makespans


def test_the_rehearsals_time_comes_out_of_the_band() -> None:
    ors = rehearse(ROUTES, pricing(5))
    r = ors["o1"]
    assert r._limit() == pytest.approx(1200.0 * 1.05)
    r.ended_at = r.started_at + 40.0
    assert r._limit() == pytest.approx(1200.0 * 1.05 - 40.0)
    r.ended_at = r.started_at + 1000.0        # never below the shortest plan
    assert r._limit() == pytest.approx(1200.0)
    plain = rehearse(ROUTES, pricing(0))["o1"]
    plain.ended_at = plain.started_at + 40.0  # without energy passes: the band as before
    assert plain._limit() == pytest.approx(1200.0 * 1.05)


#: four orders of two operations each, on m1 and m2 (the reference needs a search)
FOUR = {"o1": [("a", ["m1", "m2"]), ("b", ["m1", "m2"])],
        "o2": [("b", ["m2", "m1"]), ("a", ["m1", "m2"])],
        "o3": [("long", ["m3"]), ("a", ["m1", "m2"])],
        "o4": [("a", ["m2", "m1"])]}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_reference_is_the_energy_blind_rehearsal(seed: int) -> None:
    """ADR 98: with the reference, an energy-aware rehearsal's first passes are exactly
    those of energy-blind orders (no pricing) with the same seeds — the same makespans in
    the same order — and ``ref`` is the plan they keep; then the weighed loop follows."""
    blind = rehearse(FOUR, None, seed=seed, passes=12)
    aware = rehearse(FOUR, pricing(4, reference=True), seed=seed, passes=12)
    for o in FOUR:
        b, a = blind[o], aware[o]
        assert b.best is not None and a.ref is not None
        n = len(b.makespans)
        assert a.loop_from == n and a.makespans[:n] == b.makespans
        assert a.ref[0] == b.best.makespan == min(b.makespans)
        assert a.ref[1] == pytest.approx(b.ended_at - b.started_at)
        # the weighed loop and the energy passes followed
        assert a.energy_from is not None and len(a.makespans) == a.energy_from + 4
        assert a.energy_from - a.loop_from >= 12 - 1


def test_the_band_is_measured_from_the_reference() -> None:
    """ADR 98: the band's end is (the reference's plan + its rehearsal time) × (1 +
    tolerance), less the whole rehearsal's time and the machines' wake-up lead — the run
    this plan would make against the run energy-blind orders would have made — and never
    below the shortest plan."""
    r = rehearse(FOUR, pricing(4, reference=True), seed=2, passes=12)["o1"]
    assert r.ref is not None and r.pricing is not None
    plan_s, rehearsal_s = r.ref
    for spent in (0.0, 40.0, 120.0):
        r.ended_at = r.started_at + spent
        lead = r.pricing.wake_lead_s(r.ended_at)
        assert r._limit() == pytest.approx(max(
            r.shortest, (plan_s + rehearsal_s) * 1.05 - spent - lead))
    r.ended_at = r.started_at + 10_000.0     # never below the shortest plan
    assert r._limit() == pytest.approx(r.shortest)
    # the plan kept is within the band, and no longer than the reference's by more than it
    assert r.best is not None and r.best.makespan <= max(r.shortest, r._limit()) + 1e-6


def test_without_the_reference_the_band_is_the_weighed_loops() -> None:
    """``reference`` off (order strategy ``reference: false``): no reference passes, the
    band from the weighed loop's shortest plan less the rehearsal's time (ADR 90)."""
    r = rehearse(FOUR, pricing(4, reference=False), seed=2, passes=12)["o1"]
    assert r.ref is None and r.loop_from == 0
    r.ended_at = r.started_at + 40.0
    assert r._limit() == pytest.approx(max(r.shortest, r.shortest * 1.05 - 40.0))
    on = plan_pricing({"m1": MachineAgent(
        "m1", timing=Timing(), strategy=EnergyAwareResource(), location="x",
        capabilities={"op": 600.0}, energy=MachineEnergy(TOU, HUNGRY))},
        EnergyCost(energy_passes=3, reference=False))
    assert on is not None and not on.reference


def test_the_order_strategy_turns_the_energy_passes_on() -> None:
    machine = MachineAgent("m1", timing=Timing(), strategy=EnergyAwareResource(), location="x",
                           capabilities={"op": 600.0}, energy=MachineEnergy(TOU, HUNGRY))
    on = plan_pricing({"m1": machine}, EnergyCost(energy_passes=12))
    default = plan_pricing({"m1": machine}, EnergyCost())
    off = plan_pricing({"m1": machine}, EnergyCost(energy_passes=0))
    assert on is not None and on.energy_passes == 12
    # on by default since ADR 98 (20 passes, with the reference)
    assert default is not None and default.energy_passes == 20 and default.reference
    assert off is not None and off.energy_passes == 0


def test_retime_replaces_a_kept_backward_plan_with_its_left_justified_timing() -> None:
    """``retime`` (no energy passes; on by default): a plan kept from a backward pass, priced at its
    right-justified times, is re-timed in one more pass; the backward plans give way, and
    the kept plan is the least score among the forward plans and the re-timed one."""
    from agents.rehearsal import Plan

    def plan(score: float, *, backward: bool = False) -> Plan:
        return Plan(1000.0, ("m1",), (0.0,), (1000.0,), score, score / 600.0,
                    backward=backward)

    for retimed, kept in ((95.0, 95.0), (105.0, 100.0)):
        r = OrderRehearsal("o1", alternatives=[["m1"]], capabilities=["a"], quantity=1,
                           work_s=[600.0], machines=["m1"], peers=["o1"], passes=LOOP,
                           rng=random.Random(0),
                           pricing=PlanPricing({}, {}, 600.0, retime=True))
        for p in (plan(100.0), plan(90.0, backward=True)):
            r._learn_banded(p)
        assert r.best is not None and r.best.backward and r._after_loop() == 1
        r._learn_banded(plan(retimed), energy=True)
        assert r.best is not None and not r.best.backward and r.best.score == kept
        assert all(not q.backward for q in r.banded)
    # a forward plan kept: nothing to re-time; without ``retime``: nothing either
    r = OrderRehearsal("o1", alternatives=[["m1"]], capabilities=["a"], quantity=1,
                       work_s=[600.0], machines=["m1"], peers=["o1"], passes=LOOP,
                       rng=random.Random(0), pricing=PlanPricing({}, {}, 600.0, retime=True))
    r._learn_banded(plan(100.0))
    assert r._after_loop() == 0
    r = OrderRehearsal("o1", alternatives=[["m1"]], capabilities=["a"], quantity=1,
                       work_s=[600.0], machines=["m1"], peers=["o1"], passes=LOOP,
                       rng=random.Random(0), pricing=PlanPricing({}, {}, 600.0, retime=False))
    r._learn_banded(plan(90.0, backward=True))
    assert r._after_loop() == 0


def test_retime_in_a_rehearsal_never_ends_on_a_backward_plan() -> None:
    # the loop alone (one backward, one forward pass) keeps the backward pass's plan here
    routes = {"o1": [("b", ["m2", "m1"]), ("b", ["m1", "m2"])],
              "o2": [("a", ["m1", "m2"]), ("a", ["m2"])],
              "o3": [("a", ["m2", "m1"]), ("a", ["m2"]), ("a", ["m1"])]}
    p = pricing(0)                             # retime on: the default
    plain = rehearse(routes, PlanPricing(p.machines, p.setup_s, p.s_per_money,
                                         durations=p.durations, retime=False))
    retimed = rehearse(routes, p)
    assert p.retime
    was = plain["o1"].best
    assert was is not None and was.backward
    for o in routes:
        b, before = retimed[o].best, plain[o].best
        assert b is not None and before is not None and not b.backward
        # one more pass, which re-times the kept plan on its own machines
        assert len(retimed[o].makespans) == len(plain[o].makespans) + 1
        assert retimed[o].makespans[-1] <= before.makespan + 1e-9
        last = retimed[o].last
        assert last is not None and last.machine == before.machine and not last.backward
        # the kept plan: the least score among the forward plans in the band
        assert b.score == min(q.score for q in retimed[o].banded)
    machine = MachineAgent("m1", timing=Timing(), strategy=EnergyAwareResource(), location="x",
                           capabilities={"op": 600.0}, energy=MachineEnergy(TOU, HUNGRY))
    on, off = plan_pricing({"m1": machine}, EnergyCost()), \
        plan_pricing({"m1": machine}, EnergyCost(retime=False))
    assert on is not None and on.retime and off is not None and not off.retime


def test_a_rehearsed_aware_run_ends_within_the_band_of_the_blind_run() -> None:
    """ADR 98 end to end, in virtual time: mk06 with the bench's energy data (its cap
    reported, not enforced), the instance whose aware run ended past 5 % of the
    energy-blind run while the band was measured from the weighed loop's own shortest
    plan.  With the defaults (energy passes, the reference) the aware run ends within
    1.05 × the blind run's makespan, costs less, finishes every order and keeps every
    invariant but the cap's."""
    from pathlib import Path

    from ops.bench import energy as bench
    from sim_bridge.report import build_report
    from sim_bridge.virtual import VirtualCell

    root = Path(__file__).resolve().parents[1] / "cell_configs" / "benchmarks" / "fjsp"
    row = next(r for r in bench.load_bks(root / "bks.csv") if r.instance == "mk06")
    inst = bench.load_instance(bench.instance_path(row, root))
    cfg = bench._with_leases(bench.cell_from_dict(bench.energy_extension(
        bench.instance_to_cell_dict(inst), "mk06", 0), source="mk06+energy"), False)
    reports = {}
    for aware in (False, True):
        cell = VirtualCell(cfg, order_strategy=bench.AWARE["order_strategy"] if aware else None,
                           resource_strategy=bench.AWARE["resource_strategy"] if aware
                           else None)
        cell.run()
        reports[aware] = r = build_report(cell)
        assert r["orders_completed"] == r["orders_total"]
        assert all(ok for name, ok in r["invariants"].items()
                   if name != "peak_cap_never_exceeded"), sorted(r["invariants"].items())
    blind, aware_r = reports[False], reports[True]
    assert aware_r["makespan"] <= 1.05 * blind["makespan"]
    assert aware_r["energy"]["cost"] < blind["energy"]["cost"]
