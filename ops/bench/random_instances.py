"""Seeded random job shops, to check that a scheduling method generalises.

``python -m ops.bench.random_instances [N] [SEED]`` draws N classic job shops
(every job visits every machine once, in random order, times 1..99) and N
flexible ones (1..3 eligible machines per operation, times 1..20, machine
times of one operation within ±50 %), runs the agents and the dispatch
rules on each, checks every schedule, and prints the makespans and the
agents' gap to the best rule (negative = better than every rule) and to a
simple lower bound (the longest job or the most loaded machine, minimum
times).  The instances are never written to disk and never tuned for.
"""

from __future__ import annotations

import random
import statistics
import sys

from ops.bench.fjsp import RULE_NAMES, agent_schedule
from sim_bridge.baselines import simulate_rule
from sim_bridge.instances import Instance, Operation
from sim_bridge.schedule import check_schedule, makespan


def random_jsp(rng: random.Random, jobs: int, machines: int, name: str) -> Instance:
    out = []
    for j in range(jobs):
        order = list(range(machines))
        rng.shuffle(order)
        out.append(tuple(Operation(j, k, ((m, rng.randint(1, 99)),)) for k, m in enumerate(order)))
    return Instance(name, jobs, machines, tuple(out))


def random_fjsp(rng: random.Random, jobs: int, machines: int, name: str) -> Instance:
    out = []
    for j in range(jobs):
        ops = []
        for k in range(rng.randint(machines // 2 + 1, machines + 2)):
            base = rng.randint(1, 20)
            eligible = sorted(rng.sample(range(machines), rng.randint(1, 3)))
            ops.append(Operation(j, k, tuple(
                (m, max(1, round(base * rng.uniform(0.5, 1.5)))) for m in eligible)))
        out.append(tuple(ops))
    return Instance(name, jobs, machines, tuple(out))


def lower_bound(inst: Instance) -> float:
    job = max(sum(op.min_time for op in ops) for ops in inst.jobs)
    load = [0.0] * inst.n_machines
    for op in inst.operations():
        if len(op.options) == 1:
            load[op.options[0][0]] += op.options[0][1]
    return max(job, max(load), sum(op.min_time for op in inst.operations()) / inst.n_machines)


def main(n: int = 4, seed: int = 1) -> None:
    rng = random.Random(seed)
    instances = [random_jsp(rng, rng.choice((10, 15)), rng.choice((5, 10)), f"rjsp{i}")
                 for i in range(n)]
    instances += [random_fjsp(rng, rng.choice((10, 15)), rng.choice((5, 8)), f"rfjs{i}")
                  for i in range(n)]
    vs_rule, vs_lb = [], []
    for inst in instances:
        ops, _ = agent_schedule(inst)
        assert not check_schedule(inst, ops), check_schedule(inst, ops)[:3]
        rules = {r: makespan(simulate_rule(inst, r)) for r in RULE_NAMES}
        best = min(rules.values())
        ms, lb = makespan(ops), lower_bound(inst)
        vs_rule.append(100 * (ms - best) / best)
        vs_lb.append(100 * (ms - lb) / lb)
        print(f"{inst.name} {inst.n_jobs}x{inst.n_machines} agents {ms:.2f} "
              + " ".join(f"{r} {v:g}" for r, v in rules.items())
              + f"  vs best rule {vs_rule[-1]:+.2f} %  vs LB {lb:g} {vs_lb[-1]:.2f} %")
    print(f"mean vs best rule {statistics.fmean(vs_rule):+.2f} %, "
          f"worse than best rule on {sum(v > 0 for v in vs_rule)}/{len(vs_rule)}")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
