"""Rehearsal (agents/rehearsal.py): what-if passes by messages, and their execution.

Whole-cell tests run a benchmark instance through :class:`VirtualCell` (real
envelope codec, embedded plant, seeded network) and compare what the
machines did with the plan every order kept from its rehearsal.
"""

from __future__ import annotations

import functools
import random
from pathlib import Path

import pytest

from agents.protocol.actions import Send
from agents.rehearsal import DISPATCH_RULES, SEEDS, MachineRehearsal, OrderRehearsal
from ops.bench.fjsp import agent_schedule
from ops.config import cell_from_dict
from sim_bridge.dispatch import dispatch_schedule
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
        # a planned call has one recipient: its award does not wait for the reply deadline,
        # and the first operations start before the origin (it leaves room for two)
        assert min(op.start for op in ops) < origin - cell.cfg.negotiation.reply_deadline_s


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
    from agents.cell.build import build_agents

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


# -- the passes themselves, sans-io: orders and machines wired by an in-memory queue --------

def _wire(inst: Instance, passes: int, *, seed: int = 0, shuffle: bool = False
          ) -> dict[str, OrderRehearsal]:
    """Run a rehearsal of ``passes`` passes among rehearsal objects; messages are
    delivered in FIFO order, or (``shuffle``) in a seeded random order."""
    orders = [f"J{j:02d}" for j in range(inst.n_jobs)]
    machines = [f"M{m:02d}" for m in range(inst.n_machines)]
    ors = {}
    for j, ops in enumerate(inst.jobs):
        ors[orders[j]] = OrderRehearsal(
            orders[j], alternatives=[[machines[m] for m in op.machines] for op in ops],
            capabilities=[f"{j}.{op.index}" for op in ops], quantity=1,
            work_s=[float(op.min_time) for op in ops], machines=machines, peers=orders,
            passes=passes, rng=random.Random(f"{seed}/{j}"), budget_share=1.0)
    mrs = {machines[m]: MachineRehearsal(machines[m], orders=orders, duration_s={
        f"{op.job}.{op.index}": float(p) for op in inst.operations()
        for mm, p in op.options if mm == m}) for m in range(inst.n_machines)}
    queue: list[tuple[str, str, object, str]] = []

    def post(sender: str, actions: list) -> None:
        queue.extend((sender, a.to, a.body, a.conv) for a in actions if isinstance(a, Send))

    for o, r in ors.items():
        post(o, r.start(0.0))
    rng = random.Random(seed)
    delivered = 0
    while queue:
        sender, to, body, conv = queue.pop(rng.randrange(len(queue)) if shuffle else 0)
        delivered += 1
        assert delivered < 2_000_000
        if to in ors:
            post(to, ors[to].on_message(sender, body, 0.0))   # type: ignore[arg-type]
        else:
            post(to, mrs[to].on_message(sender, body, conv))  # type: ignore[arg-type]
    assert all(r.finished for r in ors.values())
    return ors


def _plan_schedule(inst: Instance, ors: dict[str, OrderRehearsal], plan: str) -> list[ScheduledOp]:
    out = []
    for j, r in enumerate(ors.values()):
        p = getattr(r, plan)
        for k, (m, s, f) in enumerate(zip(p.machine, p.start, p.finish)):
            out.append(ScheduledOp(j, k, int(m[1:]), s, f))
    return out


def _central_sgs(inst: Instance, keys: list[list[float]]) -> float:
    """The serial schedule-generation scheme with insertion, central, for reference."""
    timeline: list[list[tuple[float, float]]] = [[] for _ in range(inst.n_machines)]
    ready = [0.0] * inst.n_jobs
    for _, j, k in sorted((keys[j][k], j, k) for j, ops in enumerate(inst.jobs)
                          for k in range(len(ops))):
        best = None
        for m, p in inst.jobs[j][k].options:
            start = ready[j]
            for s, e in sorted(timeline[m]):
                if start + p <= s + 1e-9:
                    break
                start = max(start, e)
            if best is None or (start + p, m) < best[:2]:
                best = (start + p, m, start)
        finish, m, start = best  # type: ignore[misc]
        timeline[m].append((start, finish))
        ready[j] = finish
    return max(ready)


@pytest.mark.parametrize("name", ["ft06.jsp", "mk01.fjs", "mk02.fjs", "la01.jsp"])
@pytest.mark.parametrize("shuffle", [False, True], ids=["fifo", "shuffled"])
def test_dispatch_passes_are_the_central_non_delay_dispatch(name: str, shuffle: bool) -> None:
    """Pass k (k < 3) is the non-delay dispatch with rule DISPATCH_RULES[k], operation by
    operation — whatever order the messages arrive in."""
    inst = load_instance(BENCH / name)
    for k, rule in enumerate(DISPATCH_RULES):
        ors = _wire(inst, k + 1, shuffle=shuffle)
        r0 = next(iter(ors.values()))
        if r0.best is not None and r0.best.makespan <= r0.bound + 1e-9:
            assert k > 0 or r0.last is not None   # ended at the bound before this rule
            break
        got = sorted((o.job, o.index, o.machine, o.start, o.end)
                     for o in _plan_schedule(inst, ors, "last"))
        want = sorted((o.job, o.index, o.machine, o.start, o.end)
                      for o in dispatch_schedule(inst, rule))
        assert got == want, (name, rule)


@pytest.mark.parametrize("name", ["ft06.jsp", "mk01.fjs"])
def test_a_serial_pass_is_the_central_serial_sgs_for_its_keys(name: str) -> None:
    inst = load_instance(BENCH / name)
    ors = _wire(inst, SEEDS, shuffle=True)
    keys = [list(r.first_keys) for r in ors.values()]
    assert next(iter(ors.values())).makespans[SEEDS - 1] == _central_sgs(inst, keys)


def test_rehearsal_plans_are_valid_and_no_worse_than_any_dispatch_rule() -> None:
    for name in ("ft06.jsp", "mk01.fjs", "la02.jsp"):
        inst = load_instance(BENCH / name)
        ors = _wire(inst, 40)
        plan = _plan_schedule(inst, ors, "best")
        assert check_schedule(inst, plan) == []
        assert all(r.best is not None and r.best.makespan == makespan(plan) for r in ors.values())
        assert makespan(plan) <= min(makespan(dispatch_schedule(inst, rule))
                                     for rule in DISPATCH_RULES)


def test_a_plan_that_meets_the_lower_bound_ends_the_rehearsal() -> None:
    """la05: the longest machine load is 593 and MWKR dispatch reaches it."""
    inst = load_instance(BENCH / "la05.jsp")
    ors = _wire(inst, 200)
    r = next(iter(ors.values()))
    assert r.bound == 593 and r.best is not None and r.best.makespan == 593
    assert r.now_pass is not None and r.now_pass.number == 0


def test_a_plan_that_meets_the_total_work_bound_ends_the_rehearsal() -> None:
    """Two one-operation jobs that either of two machines runs in 5: total work 10 over
    2 machines bounds the makespan by 5, which the first dispatch reaches."""
    from sim_bridge.instances import Operation

    inst = Instance("two", 2, 2, tuple((Operation(j, 0, ((0, 5), (1, 5))),) for j in range(2)))
    ors = _wire(inst, 50)
    r = next(iter(ors.values()))
    assert r.bound == 5 and r.best is not None and r.best.makespan == 5
    assert r.makespans == [5.0]


def test_a_malformed_baton_is_ignored_not_a_crash() -> None:
    from agents.protocol.messages import Baton, Explore

    m = MachineRehearsal("M1", orders=["J1"], duration_s={"c": 1.0})
    assert m.on_message("J1", Explore(0, [[0, 0.0, "c", 1, 1, ["M1"], []]], "MWKR"), "x") == []
    out = m.on_message("M2", Baton(0, {"M2": ["late"], "M3": [1.0, None]}, {"M2": "soon"},
                                   [["M1", "ready", "J1", 0, "now"], 5, "x",
                                    ["M9", "explode", "J1", 0, 1.0]]), "x")
    # the garbage is dropped; M1 dispatches its one operation, which was ready at 0
    quotes = [a.body for a in out if isinstance(a, Send) and a.to == "J1"]
    assert [(q.position, q.start_at, q.finish_at) for q in quotes] == [(0, 0.0, 1.0)]


def test_rehearsal_under_message_loss_still_completes_every_order() -> None:
    """Lost rehearsal messages stall a pass; the pass timeout ends the rehearsal with the
    best plan so far and the contract net does the rest."""
    from sim_bridge.report import build_report

    d = instance_to_cell_dict(load_instance(BENCH / "ft06.jsp"))
    d["sim"]["network"]["loss"] = 0.01
    cell = VirtualCell(cell_from_dict(d, source="ft06"), seed=3)
    cell.run()
    report = build_report(cell)
    assert report["orders_completed"] == report["orders_total"] == 6
    assert all(report["invariants"].values())
    assert any('"rehearsal_end"' in line and '"timeout"' in line for line in cell.events)
