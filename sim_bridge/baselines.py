"""Non-delay dispatch-rule baselines run in the embedded simulator.

A central dispatcher — the home-grown MES the agents must beat — watches
the same :class:`~sim_bridge.plant.EmbeddedPlant`: whenever a machine is
idle and operations are ready, it starts the candidate the rule prefers
(SPT, MWKR, FIFO from :mod:`sim_bridge.dispatch`), never leaving a machine
idle while something it can do is waiting (non-delay).  Operations take
exactly their processing time; no messages, no negotiation.
"""

from __future__ import annotations

from typing import Any

import simpy

from agents.base import PlantEventIn
from agents.cell.specs import MachineSpec
from agents.protocol.actions import Command

from .dispatch import RULES, Candidate, remaining_work, select
from .instances import Instance
from .plant import EmbeddedPlant
from .schedule import ScheduledOp


def simulate_rule(inst: Instance, rule: str) -> list[ScheduledOp]:
    """The schedule the rule produces when dispatching in the simulator."""
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; valid: {', '.join(RULES)}")
    priority = RULES[rule]
    env = simpy.Environment()
    work = remaining_work(inst)
    next_op = [0] * inst.n_jobs
    ready_at = [0.0] * inst.n_jobs
    job_busy = [False] * inst.n_jobs
    idle = set(range(inst.n_machines))
    running: dict[str, tuple[int, int, int, float]] = {}
    done: list[ScheduledOp] = []

    def emit(ev: PlantEventIn) -> None:
        if ev.event != "operation_done":
            return
        job, index, machine, start = running.pop(ev.task)
        done.append(ScheduledOp(job, index, machine, start, env.now))
        next_op[job] += 1
        ready_at[job] = env.now
        job_busy[job] = False
        idle.add(machine)
        dispatch()

    def record(*_: Any, **__: Any) -> None:
        pass

    plant = EmbeddedPlant(env, [MachineSpec(f"m{k}") for k in range(inst.n_machines)], [],
                          seed=0, emit=emit, record=record, sensor_interval_s=0.0,
                          breakdowns=False)

    def dispatch() -> None:
        while True:
            cands = []
            for job in range(inst.n_jobs):
                if job_busy[job] or next_op[job] >= len(inst.jobs[job]):
                    continue
                op = inst.jobs[job][next_op[job]]
                for machine, p in op.options:
                    if machine in idle:
                        cands.append(Candidate(op, machine, float(p), ready_at[job],
                                               float(work[job][op.index])))
            if not cands:
                return
            c = select(cands, priority)
            task = f"{c.op.job}/{c.op.index}"
            idle.discard(c.machine)
            job_busy[c.op.job] = True
            running[task] = (c.op.job, c.op.index, c.machine, env.now)
            plant.command(Command("start_operation", f"m{c.machine}", task,
                                  {"duration_s": c.processing_time}))

    dispatch()
    env.run()
    return sorted(done, key=lambda o: (o.start, o.machine))
