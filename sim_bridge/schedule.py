"""Schedules as plain data, and an independent validity checker.

Theory of operation
-------------------
A schedule is just a collection of ``ScheduledOp`` records (job, operation
index, 0-based machine, start, end).  Whoever produced it -- a dispatch
rule, the agent negotiation, a replayed simulation log -- the same
``check_schedule`` decides whether it is feasible for the ``Instance``.  The
checker deliberately shares no code with any scheduler, so a bug in a
scheduler cannot hide itself.

It collects *every* violation instead of stopping at the first: when a
scheduler goes wrong, the full list (which op, which machine, which times)
usually points at the cause in one read.  Ops are named ``job J op I`` with
the same 0-based indices as ``Instance``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from sim_bridge.instances import Instance

__all__ = ["ScheduledOp", "check_schedule", "makespan"]


@dataclass(frozen=True)
class ScheduledOp:
    """Operation ``index`` of ``job`` runs on ``machine`` over ``[start, end)``."""

    job: int
    index: int
    machine: int
    start: float
    end: float

    def __str__(self) -> str:
        return (
            f"job {self.job} op {self.index} on machine {self.machine} "
            f"[{self.start:g}, {self.end:g})"
        )


def makespan(ops: Iterable[ScheduledOp]) -> float:
    """Completion time of the last operation (0 for an empty schedule)."""
    return float(max((op.end for op in ops), default=0))


def check_schedule(inst: Instance, ops: Iterable[ScheduledOp], tol: float = 1e-6) -> list[str]:
    """Every way ``ops`` is infeasible for ``inst``; an empty list means valid.

    Checks: each operation scheduled exactly once and nothing unknown; the
    machine is eligible; ``end - start`` equals the processing time on that
    machine (within ``tol``, for float times from a simulation); ``start >= 0``; job precedence; no overlap on a machine.
    """
    ops = list(ops)
    problems: list[str] = []
    placed: dict[tuple[int, int], ScheduledOp] = {}
    for op in ops:
        key = (op.job, op.index)
        if not (0 <= op.job < inst.n_jobs and 0 <= op.index < len(inst.jobs[op.job])):
            problems.append(f"{op}: no such operation in instance {inst.name}")
            continue
        if key in placed:
            problems.append(
                f"{op}: scheduled more than once (first as {placed[key]})"
            )
            continue
        placed[key] = op
        problems.extend(_op_problems(inst, op, tol))
    for job, job_ops in enumerate(inst.jobs):
        for index in range(len(job_ops)):
            if (job, index) not in placed:
                problems.append(f"job {job} op {index}: not scheduled")
    problems.extend(_precedence_problems(inst, placed, tol))
    problems.extend(_overlap_problems(placed.values(), tol))
    return problems


def _op_problems(inst: Instance, op: ScheduledOp, tol: float) -> list[str]:
    problems: list[str] = []
    if op.start < 0:
        problems.append(f"{op}: starts before time 0")
    operation = inst.jobs[op.job][op.index]
    time = operation.time_on(op.machine)
    if time is None:
        problems.append(
            f"{op}: machine {op.machine} is not eligible "
            f"(eligible: {', '.join(map(str, operation.machines))})"
        )
    elif abs(op.end - op.start - time) > tol:
        problems.append(
            f"{op}: lasts {op.end - op.start:g} but takes {time} on machine "
            f"{op.machine}"
        )
    return problems


def _precedence_problems(
    inst: Instance, placed: dict[tuple[int, int], ScheduledOp], tol: float
) -> list[str]:
    problems: list[str] = []
    for job, job_ops in enumerate(inst.jobs):
        for index in range(1, len(job_ops)):
            before = placed.get((job, index - 1))
            after = placed.get((job, index))
            if before is not None and after is not None and after.start < before.end - tol:
                problems.append(
                    f"{after}: starts before its predecessor ends ({before})"
                )
    return problems


def _overlap_problems(ops: Iterable[ScheduledOp], tol: float) -> list[str]:
    by_machine: dict[int, list[ScheduledOp]] = defaultdict(list)
    for op in ops:
        by_machine[op.machine].append(op)
    problems: list[str] = []
    for machine in sorted(by_machine):
        timeline = sorted(by_machine[machine], key=lambda o: (o.start, o.end))
        # Sweep by start time keeping the ops still running, so every
        # overlapping pair is reported, not just neighbours.
        running: list[ScheduledOp] = []
        for op in timeline:
            running = [r for r in running if r.end > op.start + tol]
            for earlier in running:
                if op.start < earlier.end - tol and earlier.start < op.end - tol:
                    problems.append(f"{op}: overlaps {earlier} on machine {machine}")
            running.append(op)
    return problems
