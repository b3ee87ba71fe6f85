"""Dispatch-rule baselines: non-delay list scheduling with pluggable rules.

Theory of operation
-------------------
``dispatch_schedule`` builds a *non-delay* schedule in the style of Giffler
and Thompson.  Each job offers only its next unscheduled operation; each
(operation, eligible machine) pair is a ``Candidate`` whose earliest start is
``max(job ready, machine free)``.  At every step:

1. ``t*`` = the smallest earliest start over all candidates;
2. the conflict set = candidates that can start at ``t*``;
3. the rule picks one, which is fixed on its machine at ``t*``.

So no machine is ever left idle while an operation it could run is waiting,
and a flexible operation chooses its machine and its turn in one decision.

A rule is a *priority function* ``Candidate -> tuple`` where the smallest
tuple wins.  It looks at the candidate alone, never at the scheduler's
state, so the same functions can drive a discrete-event simulator: build
``Candidate`` objects for whatever is waiting when a machine frees up and
call ``select``.  ``select`` appends one deterministic tie-break to every
rule -- shorter processing time, then lower job index, then lower machine
index -- which makes each candidate's key unique (a job offers one operation
at a time), so results never depend on iteration order.

Rules:

* ``SPT``  shortest processing time on the candidate's machine.
* ``MWKR`` most work remaining in the job, counting the candidate's own
  operation and all later ones, each at its *minimum* processing time over
  eligible machines.  The minimum (rather than the mean) is the work the job
  cannot avoid whatever routing it gets, is independent of how many slow
  alternative machines a file happens to list, and equals the plain sum for
  a classic job shop.
* ``FIFO`` earliest time the operation became ready (its predecessor ended,
  or 0 for a first operation); ties by lower job index.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sim_bridge.instances import Instance, Operation
from sim_bridge.schedule import ScheduledOp

__all__ = [
    "RULES",
    "Candidate",
    "PriorityFn",
    "dispatch_schedule",
    "fifo_priority",
    "mwkr_priority",
    "remaining_work",
    "select",
    "spt_priority",
]


@dataclass(frozen=True)
class Candidate:
    """Operation ``op`` could start on ``machine`` (taking ``processing_time``).

    ``ready_at`` is when the job's previous operation ended (0 for the
    first); ``work_remaining`` is this op plus the job's later ops, each at
    its minimum processing time (see ``remaining_work``).
    """

    op: Operation
    machine: int
    processing_time: float
    ready_at: float
    work_remaining: float


#: Smaller tuple = dispatched first.
PriorityFn = Callable[[Candidate], tuple[float, ...]]


def spt_priority(c: Candidate) -> tuple[float, ...]:
    """Shortest processing time on this machine first."""
    return (c.processing_time,)


def mwkr_priority(c: Candidate) -> tuple[float, ...]:
    """Most work remaining in the job first (min-time measure)."""
    return (-c.work_remaining,)


def fifo_priority(c: Candidate) -> tuple[float, ...]:
    """Earliest-ready operation first; ties by lower job index."""
    return (c.ready_at, c.op.job)


RULES: dict[str, PriorityFn] = {
    "SPT": spt_priority,
    "MWKR": mwkr_priority,
    "FIFO": fifo_priority,
}


def _key(c: Candidate, priority: PriorityFn) -> tuple[float, ...]:
    return (*priority(c), c.processing_time, c.op.job, c.machine)


def select(candidates: Sequence[Candidate], priority: PriorityFn) -> Candidate:
    """The candidate ``priority`` ranks first, with the module's tie-break."""
    if not candidates:
        raise ValueError("select() needs at least one candidate to choose from")
    return min(candidates, key=lambda c: _key(c, priority))


def remaining_work(inst: Instance) -> tuple[tuple[int, ...], ...]:
    """``[job][index]`` -> min-time work of that op and every later op of the job."""
    table: list[tuple[int, ...]] = []
    for ops in inst.jobs:
        tail: list[int] = []
        total = 0
        for op in reversed(ops):
            total += op.min_time
            tail.append(total)
        table.append(tuple(reversed(tail)))
    return tuple(table)


def dispatch_schedule(inst: Instance, rule: str) -> list[ScheduledOp]:
    """Non-delay schedule of ``inst`` built with dispatch ``rule`` (see RULES).

    Returned in dispatch order; ``check_schedule`` accepts it by construction.
    """
    priority = RULES.get(rule)
    if priority is None:
        raise ValueError(
            f"unknown dispatch rule {rule!r}; valid rules are {', '.join(RULES)}"
        )
    work = remaining_work(inst)
    next_index = [0] * inst.n_jobs
    job_ready_at = [0.0] * inst.n_jobs
    machine_free_at = [0.0] * inst.n_machines
    schedule: list[ScheduledOp] = []
    for _ in range(inst.n_operations):
        start_at, conflict = _conflict_set(
            inst, next_index, job_ready_at, machine_free_at, work
        )
        chosen = select(conflict, priority)
        end_at = start_at + chosen.processing_time
        op = chosen.op
        schedule.append(ScheduledOp(op.job, op.index, chosen.machine, start_at, end_at))
        machine_free_at[chosen.machine] = end_at
        job_ready_at[op.job] = end_at
        next_index[op.job] += 1
    return schedule


def _conflict_set(
    inst: Instance,
    next_index: list[int],
    job_ready_at: list[float],
    machine_free_at: list[float],
    work: tuple[tuple[int, ...], ...],
) -> tuple[float, list[Candidate]]:
    """Earliest possible start ``t*`` and every candidate that can start then."""
    best: float | None = None
    conflict: list[Candidate] = []
    for job, ops in enumerate(inst.jobs):
        if next_index[job] >= len(ops):
            continue
        op = ops[next_index[job]]
        for machine, time in op.options:
            start_at = max(job_ready_at[job], machine_free_at[machine])
            if best is not None and start_at > best:
                continue
            if best is None or start_at < best:
                best, conflict = start_at, []
            conflict.append(
                Candidate(op, machine, time, job_ready_at[job], work[job][op.index])
            )
    assert best is not None, "called with every job finished"
    return best, conflict
