"""Schedule checker and dispatch-rule baselines."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from sim_bridge.dispatch import (
    RULES,
    Candidate,
    dispatch_schedule,
    fifo_priority,
    mwkr_priority,
    remaining_work,
    select,
    spt_priority,
)
from sim_bridge.instances import (
    BksRow,
    Instance,
    Operation,
    instance_path,
    load_bks,
    load_instance,
)
from sim_bridge.schedule import ScheduledOp, check_schedule, makespan

BENCH_DIR = Path(__file__).resolve().parents[2] / "shared" / "benchmarks" / "fjsp"
BKS = load_bks(BENCH_DIR / "bks.csv")


def _instance(*jobs: list[list[tuple[int, int]]], n_machines: int = 2) -> Instance:
    """Tiny instance from per-job lists of per-op (machine, time) options."""
    return Instance(
        name="tiny",
        n_jobs=len(jobs),
        n_machines=n_machines,
        jobs=tuple(
            tuple(Operation(j, i, tuple(opts)) for i, opts in enumerate(ops))
            for j, ops in enumerate(jobs)
        ),
    )


# job 0: op0 on M0 (3) or M1 (5), then op1 on M1 (2); job 1: op0 on M0 (4)
TINY = _instance([[(0, 3), (1, 5)], [(1, 2)]], [[(0, 4)]])
VALID = [
    ScheduledOp(0, 0, 0, 0, 3),
    ScheduledOp(0, 1, 1, 3, 5),
    ScheduledOp(1, 0, 0, 3, 7),
]


# --------------------------------------------------------------------------
# check_schedule


def test_valid_schedule_has_no_violations() -> None:
    assert check_schedule(TINY, VALID) == []
    assert makespan(VALID) == 7
    assert makespan([]) == 0


def _swap(i: int, op: ScheduledOp) -> list[ScheduledOp]:
    return [op if k == i else o for k, o in enumerate(VALID)]


VIOLATIONS = [
    ("missing", VALID[:2], ["job 1 op 0: not scheduled"]),
    ("duplicate", [*VALID, VALID[2]], ["scheduled more than once"]),
    ("unknown op", [*VALID, ScheduledOp(5, 0, 0, 9, 10)], ["no such operation"]),
    ("unknown index", [*VALID, ScheduledOp(1, 1, 0, 9, 10)], ["no such operation"]),
    (
        "ineligible machine",
        _swap(2, ScheduledOp(1, 0, 1, 5, 9)),
        ["machine 1 is not eligible (eligible: 0)"],
    ),
    (
        "wrong duration",
        _swap(2, ScheduledOp(1, 0, 0, 3, 6)),
        ["lasts 3 but takes 4 on machine 0"],
    ),
    (
        "duration of chosen alternative",
        _swap(0, ScheduledOp(0, 0, 1, 0, 3)),  # M1 takes 5, not 3
        ["lasts 3 but takes 5 on machine 1"],
    ),
    (
        "precedence",
        _swap(1, ScheduledOp(0, 1, 1, 2, 4)),
        ["job 0 op 1 on machine 1 [2, 4): starts before its predecessor ends"],
    ),
    (
        "overlap",
        _swap(2, ScheduledOp(1, 0, 0, 2, 6)),
        ["job 1 op 0 on machine 0 [2, 6): overlaps job 0 op 0 on machine 0 [0, 3)"],
    ),
    (
        "negative start",
        [
            ScheduledOp(0, 0, 0, -1, 2),
            ScheduledOp(0, 1, 1, 2, 4),
            ScheduledOp(1, 0, 0, 2, 6),
        ],
        ["job 0 op 0 on machine 0 [-1, 2): starts before time 0"],
    ),
]


@pytest.mark.parametrize(
    ("case", "ops", "expected"), VIOLATIONS, ids=[v[0] for v in VIOLATIONS]
)
def test_checker_reports_each_violation(
    case: str, ops: list[ScheduledOp], expected: list[str]
) -> None:
    problems = check_schedule(TINY, ops)
    assert len(problems) == len(expected), problems
    for problem, words in zip(problems, expected):
        assert words in problem


def test_checker_reports_every_overlapping_pair() -> None:
    inst = _instance([[(0, 10)]], [[(0, 2)]], [[(0, 2)]], n_machines=1)
    ops = [
        ScheduledOp(0, 0, 0, 0, 10),
        ScheduledOp(1, 0, 0, 2, 4),
        ScheduledOp(2, 0, 0, 3, 5),
    ]
    problems = check_schedule(inst, ops)
    assert len(problems) == 3 and all("overlaps" in p for p in problems)


def test_back_to_back_and_zero_length_ops_do_not_overlap() -> None:
    inst = _instance([[(0, 2)]], [[(0, 0)]], [[(0, 3)]], n_machines=1)
    ops = [
        ScheduledOp(0, 0, 0, 0, 2),
        ScheduledOp(1, 0, 0, 2, 2),
        ScheduledOp(2, 0, 0, 2, 5),
    ]
    assert check_schedule(inst, ops) == []


# --------------------------------------------------------------------------
# priority functions


def _cand(
    job: int, machine: int, time: int, ready_at: float, work: float
) -> Candidate:
    op = Operation(job, 0, ((machine, time),))
    return Candidate(op, machine, time, ready_at, work)


@pytest.mark.parametrize(
    ("rule", "winner"),
    [("SPT", (1, 1)), ("MWKR", (2, 0)), ("FIFO", (0, 1))],
)
def test_each_rule_picks_its_candidate(rule: str, winner: tuple[int, int]) -> None:
    candidates = [
        _cand(job=0, machine=1, time=5, ready_at=0, work=10),
        _cand(job=1, machine=1, time=2, ready_at=4, work=12),
        _cand(job=2, machine=0, time=7, ready_at=3, work=30),
    ]
    chosen = select(candidates, RULES[rule])
    assert (chosen.op.job, chosen.machine) == winner


def test_public_priority_functions_are_the_rules() -> None:
    assert RULES == {"SPT": spt_priority, "MWKR": mwkr_priority, "FIFO": fifo_priority}


def test_ties_go_to_shorter_time_then_lower_job_then_lower_machine() -> None:
    a = _cand(job=1, machine=0, time=4, ready_at=0, work=9)
    b = _cand(job=0, machine=1, time=4, ready_at=0, work=9)
    c = _cand(job=0, machine=0, time=4, ready_at=0, work=9)
    for rule in RULES.values():
        assert select([a, b, c], rule) is c
        assert select([a, b], rule) is b
    faster = replace(a, processing_time=3)
    assert select([faster, b, c], spt_priority) is faster
    assert select([faster, b, c], mwkr_priority) is faster
    # FIFO's own tie-break (lower job) comes before the shared one
    assert select([faster, b, c], fifo_priority) is c


def test_select_needs_candidates() -> None:
    with pytest.raises(ValueError, match="at least one"):
        select([], spt_priority)


def test_remaining_work_uses_min_time_per_op() -> None:
    assert remaining_work(TINY) == ((5, 2), (4,))


# --------------------------------------------------------------------------
# dispatch_schedule


def test_tiny_schedules_by_rule() -> None:
    # t=0: candidates J0.O0@M0 (3), J0.O0@M1 (5), J1.O0@M0 (4); all start at 0.
    assert dispatch_schedule(TINY, "SPT") == [
        ScheduledOp(0, 0, 0, 0, 3),
        ScheduledOp(0, 1, 1, 3, 5),  # t=3: J0.O1@M1 (2) beats J1.O0@M0 (4)
        ScheduledOp(1, 0, 0, 3, 7),
    ]
    # MWKR: job 0 has 5 left, job 1 has 4 -> job 0 first, on its faster M0.
    assert dispatch_schedule(TINY, "MWKR")[0] == ScheduledOp(0, 0, 0, 0, 3)
    # FIFO: both ready at 0 -> lower job index wins.
    assert dispatch_schedule(TINY, "FIFO")[0] == ScheduledOp(0, 0, 0, 0, 3)


def test_non_delay_uses_a_slower_free_machine_rather_than_wait() -> None:
    # job 1's op could take 1 on busy M0, but M1 is free now (time 9).
    inst = _instance([[(0, 5)]], [[(0, 1), (1, 9)]])
    schedule = dispatch_schedule(inst, "SPT")
    assert schedule == [ScheduledOp(1, 0, 0, 0, 1), ScheduledOp(0, 0, 0, 1, 6)]
    schedule = dispatch_schedule(inst, "MWKR")  # job 0 (5) outranks job 1 (1)
    assert schedule == [ScheduledOp(0, 0, 0, 0, 5), ScheduledOp(1, 0, 1, 0, 9)]


def test_unknown_rule_names_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="valid rules are SPT, MWKR, FIFO"):
        dispatch_schedule(TINY, "LPT")


@pytest.mark.parametrize("rule", sorted(RULES))
@pytest.mark.parametrize("row", BKS, ids=lambda r: r.instance)
def test_rule_gives_valid_schedule_on_benchmark(row: BksRow, rule: str) -> None:
    inst = load_instance(instance_path(row, BENCH_DIR))
    schedule = dispatch_schedule(inst, rule)
    assert check_schedule(inst, schedule) == []
    assert len(schedule) == inst.n_operations
    assert makespan(schedule) >= row.lower_bound
    assert dispatch_schedule(inst, rule) == schedule, "deterministic"
