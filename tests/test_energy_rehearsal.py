"""The rehearsal sees energy (agents/energy/rehearsal.py): quotes and passes weighed.

The choice among quotes is a table-driven unit test on the order's side of the
rehearsal; the whole-run tests use the bench's energy extension of a small
flexible job shop (tests/test_energy_bench.py's ``mk99``), in virtual time.
"""

from __future__ import annotations

import functools
import random
from pathlib import Path
from typing import Any

import pytest

from agents.energy.rehearsal import PlanPricing, plan_pricing
from agents.protocol.actions import Send
from agents.protocol.messages import ExploreQuote, ExploreResult, ExploreResultPriced, Intention
from agents.rehearsal import SEEDS, OrderRehearsal
from ops.bench.energy import AWARE, energy_extension
from ops.config import cell_from_dict
from sim_bridge.instances import instance_to_cell_dict, load_instance
from sim_bridge.virtual import VirtualCell

from test_energy_bench import SMALL


@functools.cache
def small_cell(tmp: str) -> Any:
    path = Path(tmp) / "mk99.fjs"
    path.write_text(SMALL)
    return cell_from_dict(energy_extension(instance_to_cell_dict(load_instance(path)), "mk99"),
                          source="mk99+energy")


@pytest.fixture
def cfg(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return small_cell(str(tmp_path_factory.mktemp("energy-rehearsal")))


def _aware(cfg: Any, leases: bool = False) -> VirtualCell:
    return VirtualCell(cfg.model_copy(update={"energy": cfg.energy.model_copy(
        update={"cap_leases": leases})}), resource_strategy=AWARE["resource_strategy"],
        order_strategy=AWARE["order_strategy"])


def _pricing(cfg: Any) -> PlanPricing:
    cell = _aware(cfg)
    pricing = plan_pricing(cell.agents, cell.agents[cfg.orders[0].id].strategy)
    assert pricing is not None
    return pricing


def _choice(pricing: PlanPricing | None, quotes: dict[str, tuple[float, float]]) -> str:
    """The machine a keyed pass's order picks for its one flexible operation."""
    r = OrderRehearsal("o1", alternatives=[sorted(quotes)], capabilities=["op"], quantity=1,
                       work_s=[100.0], machines=sorted(quotes), peers=["o1"], passes=SEEDS + 1,
                       rng=random.Random(0), pricing=pricing)
    r._begin(SEEDS, 0.0)          # the first keyed pass
    out = []
    for m, (s, f) in sorted(quotes.items()):
        out += r.on_message(m, ExploreQuote(SEEDS, 0, s, f), 0.0)
    [chosen] = [a.to for a in out if isinstance(a, Send) and isinstance(a.body, Intention)
                and a.body.chosen]
    return chosen


def test_a_slot_costs_what_the_machine_would_bid(cfg: Any) -> None:
    pricing = _pricing(cfg)
    m = cfg.machines[0]                                      
    cap = next(iter(m.capabilities))
    energy = pricing.machines[m.id]
    assert pricing.cost(m.id, cap, 0.0, 600.0) == pytest.approx(
        energy.slot_cost(cap, 0.0, m.setup_s, 600.0 - m.setup_s))
    assert pricing.cost("no-such-machine", cap, 0.0, 600.0) == 0.0
    assert pricing.weighed(100.0, 0.5) == 100.0 + pricing.s_per_money * 0.5


class _Fixed:
    """A machine whose every slot costs ``eur``."""

    def __init__(self, eur: float) -> None:
        self.eur = eur

    def slot_cost(self, capability: str, start_at: float, setup_s: float,
                  processing_s: float) -> float:
        return self.eur


@pytest.mark.parametrize(("rate", "quotes", "blind", "aware"), [
    # m1 ends 10 s sooner but costs 0.1 EUR more, worth 60 s at 600 s/EUR
    (600.0, {"m1": (0.0, 100.0), "m2": (0.0, 110.0)}, "m1", "m2"),
    # ... but not 200 s sooner
    (600.0, {"m1": (0.0, 100.0), "m2": (0.0, 300.0)}, "m1", "m1"),
    # at a weight of 1 s/EUR the finish decides
    (1.0, {"m1": (0.0, 100.0), "m2": (0.0, 110.0)}, "m1", "m1"),
])
def test_the_order_trades_finish_against_energy_at_its_rate(
        rate: float, quotes: dict[str, tuple[float, float]], blind: str, aware: str) -> None:
    machines = {"m1": _Fixed(0.2), "m2": _Fixed(0.1)}
    pricing = PlanPricing(machines, {"m1": 0.0, "m2": 0.0}, rate)  # type: ignore[arg-type]
    assert _choice(None, quotes) == blind
    assert _choice(pricing, quotes) == aware


def test_without_energy_aware_strategies_there_is_no_pricing(cfg: Any) -> None:
    blind = VirtualCell(cfg)                                   
    assert plan_pricing(blind.agents, blind.agents[cfg.orders[0].id].strategy) is None
    assert all(getattr(a, "rehearsal", None) is None or getattr(a.rehearsal, "pricing", None)
               is None for a in blind.agents.values())


def test_the_collector_sums_the_orders_energy() -> None:
    pricing = PlanPricing({}, {}, 600.0)
    r = OrderRehearsal("o1", alternatives=[["m1"]], capabilities=["op"], quantity=1,
                       work_s=[100.0], machines=["m1"], peers=["o1", "o2"], passes=SEEDS + 1,
                       rng=random.Random(0), pricing=pricing)
    r._begin(SEEDS, 0.0)
    out = r.on_message("m1", ExploreQuote(SEEDS, 0, 0.0, 100.0), 0.0)
    assert not [a for a in out if isinstance(a, Send)]      # o1 collects pass SEEDS (even)
    out = r.on_message("o2", ExploreResultPriced(SEEDS, 300.0, 0.0, 0.0, 50.0,
                                                 energy_cost=0.25), 0.0)
    [summary] = [a.body for a in out if isinstance(a, Send) and a.to == "o2"]
    assert isinstance(summary, ExploreResultPriced)
    assert summary.energy_cost == pytest.approx(0.25) and summary.completion_at == 300.0
    assert r.best is not None and r.best.score == pytest.approx(300.0 + 600.0 * 0.25)
    # an energy-blind peer's result counts 0
    assert not isinstance(ExploreResult(0, 1.0), ExploreResultPriced)


def test_an_aware_rehearsed_run_keeps_one_plan_and_finishes(cfg: Any) -> None:
    """Every order keeps the same pass; under the cap's leases every invariant holds."""
    cell = _aware(cfg, leases=True)
    cell.run()
    plans = {cell.agents[o.id].plan for o in cfg.orders}      
    assert None not in plans
    assert len({p.score for p in plans}) == 1 and len({p.makespan for p in plans}) == 1
    from sim_bridge.report import build_report
    r = build_report(cell)
    assert r["orders_completed"] == r["orders_total"] and all(r["invariants"].values())


def test_the_kept_plan_is_the_cheapest_within_the_makespan_band() -> None:
    """A rule, not a weight: a cheaper plan longer than 5 % over the shortest is never
    kept, whatever the rate; the band narrows as shorter plans are found."""
    from agents.rehearsal import Plan

    r = OrderRehearsal("o1", alternatives=[["m1"]], capabilities=["op"], quantity=1,
                       work_s=[100.0], machines=["m1"], peers=["o1"], passes=SEEDS + 1,
                       rng=random.Random(0), pricing=PlanPricing({}, {}, 600.0, 0.05))

    def plan(makespan: float, score: float) -> Plan:
        return Plan(makespan, ("m1",), (0.0,), (makespan,), score)

    kept = []
    for p in (plan(100, 200), plan(110, 150), plan(104, 180), plan(105, 170), plan(90, 300),
              plan(94, 250)):
        r._learn_banded(p)
        assert r.best is not None
        kept.append((r.best.makespan, r.best.score))
    assert kept == [(100, 200), (100, 200), (104, 180), (105, 170), (90, 300), (94, 250)]
    # a rate of 0 tolerance keeps the shortest plan only (the first on ties)
    r0 = OrderRehearsal("o1", alternatives=[["m1"]], capabilities=["op"], quantity=1,
                        work_s=[100.0], machines=["m1"], peers=["o1"], passes=SEEDS + 1,
                        rng=random.Random(0), pricing=PlanPricing({}, {}, 600.0, 0.0))
    for p in (plan(100, 200), plan(100, 150), plan(101, 10)):
        r0._learn_banded(p)
    assert r0.best is not None and (r0.best.makespan, r0.best.score) == (100, 150)


def test_the_order_strategy_gives_the_band(cfg: Any) -> None:
    assert _pricing(cfg).makespan_tolerance == pytest.approx(0.05)


def test_a_plan_pays_for_machines_out_of_work_at_their_floor(cfg: Any) -> None:
    """Floor over the horizon + each slot's step to idle + its bid = the cell's energy
    cost if every machine slept whenever out of work (here: one machine, one slot)."""
    pricing = _pricing(cfg)
    m = cfg.machines[0]
    cap = next(iter(m.capabilities))
    energy = pricing.machines[m.id]
    draw = energy.draw
    assert m.setup_s == 0 and energy.break_even_s is not None
    assert pricing.floor_kw(m.id) == draw.standby_kw < draw.idle
    alone = PlanPricing({m.id: energy}, {m.id: 0.0}, 600.0)
    busy = draw.busy_by_capability.get(cap, draw.busy)
    total = (alone.floor_cost(0.0, 3600.0) + alone.cost(m.id, cap, 600.0, 1200.0)
             + alone.awake_cost(m.id, 600.0, 1200.0))
    assert total == pytest.approx(energy.tariff.cost(draw.standby_kw, 0.0, 3600.0)
                                  + energy.tariff.cost(busy - draw.standby_kw, 600.0, 1200.0))
    off = PlanPricing({m.id: energy}, {m.id: 0.0}, 600.0, price_idle=False)
    assert off.floor_cost(0.0, 3600.0) == 0.0 and off.awake_cost(m.id, 0.0, 600.0) == 0.0
