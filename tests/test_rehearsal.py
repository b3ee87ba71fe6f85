"""Rehearsal (agents/rehearsal.py): what-if passes by messages, and their execution.

Whole-cell tests run a benchmark instance through :class:`VirtualCell` (real
envelope codec, embedded plant, seeded network) and compare what the
machines did with the plan every order kept from its rehearsal.
"""

from __future__ import annotations

import functools
from pathlib import Path

from ops.bench.fjsp import agent_schedule
from ops.config import cell_from_dict
from sim_bridge.instances import Instance, instance_to_cell_dict, load_instance
from sim_bridge.schedule import ScheduledOp, check_schedule, makespan
from sim_bridge.virtual import VirtualCell

BENCH = Path(__file__).resolve().parents[2] / "shared" / "benchmarks" / "fjsp"


@functools.cache
def bench_run(name: str) -> tuple[Instance, list[ScheduledOp], VirtualCell]:
    inst = load_instance(BENCH / name)
    ops, cell = agent_schedule(inst)
    return inst, ops, cell


def planned(cell: VirtualCell) -> dict[str, tuple[float, object]]:
    """order -> (plan origin, plan) as each order agent kept it."""
    return {o.id: (cell.agents[o.id].plan_origin_at, cell.agents[o.id].plan)  # type: ignore[attr-defined]
            for o in cell.cfg.orders}


def test_every_order_agrees_on_the_plan_origin_and_makespan() -> None:
    _, _, cell = bench_run("ft06.jsp")
    plans = planned(cell)
    assert len({origin for origin, _ in plans.values()}) == 1
    assert len({plan.makespan for _, plan in plans.values()}) == 1   # type: ignore[attr-defined]


def test_the_plan_is_a_valid_schedule() -> None:
    inst, _, cell = bench_run("mk01.fjs")
    machines = [m.id for m in cell.cfg.machines]
    ops = []
    for j, (_, plan) in enumerate(planned(cell).values()):
        for k, (m, s, f) in enumerate(zip(plan.machine, plan.start, plan.finish)):  # type: ignore[attr-defined]
            ops.append(ScheduledOp(j, k, machines.index(m), s, f))
    assert check_schedule(inst, ops) == []
    assert makespan(ops) == next(iter(planned(cell).values()))[1].makespan  # type: ignore[attr-defined]


def test_execution_realises_the_plan() -> None:
    """Every operation runs on its planned machine, no later than planned (plus message
    latency), so the executed makespan is the plan's, counted from the plan origin."""
    for name in ("ft06.jsp", "mk01.fjs"):
        inst, ops, cell = bench_run(name)
        assert check_schedule(inst, ops) == []
        machines = [m.id for m in cell.cfg.machines]
        orders = [o.id for o in cell.cfg.orders]
        plans = planned(cell)
        for op in ops:
            origin, plan = plans[orders[op.job]]
            assert machines[op.machine] == plan.machine[op.index], (name, op)  # type: ignore[attr-defined]
            assert op.start <= origin + plan.start[op.index] + 0.01, (name, op)  # type: ignore[attr-defined]
        origin, plan = next(iter(plans.values()))
        assert makespan(ops) <= origin + plan.makespan + 0.01  # type: ignore[attr-defined]


def test_a_cell_without_rehearsal_has_no_plan() -> None:
    d = instance_to_cell_dict(load_instance(BENCH / "ft06.jsp"))
    d["negotiation"]["rehearsal_passes"] = 0
    cell = VirtualCell(cell_from_dict(d, source="ft06"), seed=0)
    cell.run()
    assert all(cell.agents[o.id].plan is None for o in cell.cfg.orders)  # type: ignore[attr-defined]
    assert not any('"rehearsal_end"' in line for line in cell.events)


def test_plan_origin_does_not_depend_on_when_an_order_heard_the_last_result() -> None:
    """Orders hear the last pass result one message latency apart; their planned slots
    must still line up exactly (a shift of 1e-4 made neighbouring slots overlap)."""
    from agents.factory import build_agents

    cfg = cell_from_dict(instance_to_cell_dict(load_instance(BENCH / "ft06.jsp")), source="ft06")
    origins = set()
    for heard_at in (1.2345, 1.2346, 1.2349):
        order = build_agents(cfg, 0)["J1"]
        assert order.rehearsal is not None   # type: ignore[attr-defined]
        order.rehearsal.started_at, order.rehearsal.ended_at = 0.0, 1.2345  # type: ignore[attr-defined]
        order.rehearsal.finished = True   # type: ignore[attr-defined]
        order._end_rehearsal(heard_at)   # type: ignore[attr-defined]
        origins.add(order.plan_origin_at)   # type: ignore[attr-defined]
    assert len(origins) == 1
