"""The fence (sim_bridge/fence.py): every refusal of docs/PROTOCOL.md §13.5, table-driven,
and its memory across a restart of the plant process (a real SQLite file).

Each row is a history of facts, then one start or move, then the expected
answer: ``None`` (it may start) or the refusal's ``(why, elsewhere, done_at)``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from sim_bridge.fence import Fence, MemoryFenceStore, Refusal
from sim_bridge.fence_store import SqliteFenceStore

Step = Callable[[Fence], None]


def started(resource: str, task: str, epoch: int | None = 1) -> Step:
    return lambda f: f.started(resource, task, epoch)


def ended(machine: str, task: str, quality: str = "ok", location: str = "bay1") -> Step:
    return lambda f: f.ended(machine, task, quality, location)


def stopped(resource: str, task: str) -> Step:
    return lambda f: f.stopped(resource, task)


def arrived(robot: str, task: str, at: str = "bay2") -> Step:
    return lambda f: f.arrived(robot, task, at)


Answer = tuple[str, bool, str | None] | None
START_CASES: list[tuple[str, list[Step], tuple[str, str, int], Answer]] = [
    ("a new task starts", [], ("m1", "o/0", 1), None),
    ("a completed task is refused, with where its parts are",
     [started("m1", "o/0"), ended("m1", "o/0")], ("m2", "o/0", 2),
     ("task already completed (idempotency key)", True, "bay1")),
    ("completed: refused on the machine that did it too",
     [started("m1", "o/0"), ended("m1", "o/0")], ("m1", "o/0", 1),
     ("task already completed (idempotency key)", True, "bay1")),
    ("a task running elsewhere is refused", [started("m1", "o/0")], ("m2", "o/0", 2),
     ("task in progress on m1", True, None)),
    ("running on this very machine: the same rule", [started("m1", "o/0")], ("m1", "o/0", 1),
     ("task in progress on m1", True, None)),
    ("a stale award epoch is refused",
     [started("m1", "o/0", 3), stopped("m1", "o/0")], ("m2", "o/0", 2),
     ("stale award epoch 2 (epoch 3 already started)", True, None)),
    ("the same epoch may restart after an abort",
     [started("m1", "o/0", 3), stopped("m1", "o/0")], ("m2", "o/0", 3), None),
    ("a second operation on a busy machine is refused", [started("m1", "a/0")],
     ("m1", "b/0", 1), ("machine busy with a/0", False, None)),
    ("a scrapped task may run again",
     [started("m1", "o/0"), ended("m1", "o/0", "scrap")], ("m2", "o/0", 2), None),
    ("a machine is free again after its operation ended",
     [started("m1", "a/0"), ended("m1", "a/0")], ("m1", "b/0", 1), None),
]

MOVE_CASES: list[tuple[str, list[Step], tuple[str, str], Answer]] = [
    ("a new move starts", [], ("r1", "o/0/m1"), None),
    ("a delivered move is refused, with its destination",
     [started("r1", "o/0/m1", None), arrived("r1", "o/0/m1")], ("r2", "o/0/m1"),
     ("move already done (idempotency key)", True, "bay2")),
    ("a move in progress on another robot is refused", [started("r1", "o/0/m1", None)],
     ("r2", "o/0/m1"), ("move in progress on r1", True, None)),
    ("a busy robot refuses, its own move included", [started("r1", "o/0/m1", None)],
     ("r1", "o/0/m1"), ("robot busy with o/0/m1", False, None)),
    ("a busy robot refuses another move", [started("r1", "o/0/m1", None)],
     ("r1", "o/1/m1"), ("robot busy with o/0/m1", False, None)),
    ("an interrupted move may start again", [started("r1", "o/0/m1", None),
                                              stopped("r1", "o/0/m1")], ("r2", "o/0/m1"), None),
]


def _answer(r: Refusal | None) -> tuple[str, bool, str | None] | None:
    return None if r is None else (r.why, r.elsewhere, r.done_at)


@pytest.mark.parametrize(("history", "start", "expected"),
                         [c[1:] for c in START_CASES], ids=[c[0] for c in START_CASES])
def test_start_operation(history: list[Step], start: tuple[str, str, int],
                         expected: tuple[str, bool, str | None] | None) -> None:
    fence = Fence()
    for step in history:
        step(fence)
    assert _answer(fence.check_start(*start)) == expected


@pytest.mark.parametrize(("history", "move", "expected"),
                         [c[1:] for c in MOVE_CASES], ids=[c[0] for c in MOVE_CASES])
def test_move(history: list[Step], move: tuple[str, str],
              expected: tuple[str, bool, str | None] | None) -> None:
    fence = Fence()
    for step in history:
        step(fence)
    assert _answer(fence.check_move(*move)) == expected


def test_every_refusal_reason_is_in_a_table() -> None:
    """The tables above cover each rule of §13.5 the fence decides (first two words)."""
    whys = {" ".join(c[3][0].split()[:2]) for c in [*START_CASES, *MOVE_CASES] if c[3]}
    assert whys == {"task already", "task in", "stale award", "machine busy", "move already",
                    "move in", "robot busy"}


def test_the_memory_survives_a_restart_in_a_real_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "sim.sqlite"
    store = SqliteFenceStore(path)
    fence = Fence(store)
    fence.started("m1", "done/0", 2)
    fence.ended("m1", "done/0", "ok", "bay1")
    fence.started("m2", "stale/0", 5)
    fence.stopped("m2", "stale/0")
    fence.started("r1", "o/0/m1")
    fence.arrived("r1", "o/0/m1", "bay2")
    fence.started("m2", "running/0", 1)          # running when the process dies
    del fence          # kill -9: no close, nothing flushed by hand
    again = Fence(SqliteFenceStore(path))
    assert _answer(again.check_start("m2", "done/0", 3)) == (
        "task already completed (idempotency key)", True, "bay1")
    assert _answer(again.check_start("m1", "stale/0", 4)) == (
        "stale award epoch 4 (epoch 5 already started)", True, None)
    assert _answer(again.check_move("r2", "o/0/m1")) == (
        "move already done (idempotency key)", True, "bay2")
    assert again.running == {"running/0": "m2"} and again.busy == {"m2": "running/0"}
    assert again.quality == {"done/0": "ok"}
    # the restarted simulator runs nothing: the fence forgets the run the restart cut off
    assert again.reconcile({}) == [("m2", "running/0")]
    assert again.check_start("m1", "running/0", 1) is None
    assert Fence(SqliteFenceStore(path)).running == {}       # and the forgetting is stored


def test_reconcile_keeps_what_a_backend_still_runs() -> None:
    store = MemoryFenceStore()
    fence = Fence(store)
    fence.started("m1", "a/0", 1)
    fence.started("m2", "b/0", 1)
    assert fence.reconcile({"m1": "a/0", "m2": "other/0"}) == [("m2", "b/0")]
    assert Fence(store).running == {"a/0": "m1"}


def test_a_fact_about_another_resource_changes_nothing() -> None:
    """An end reported by a resource that does not run the task (a stale report) does not
    free the resource that does."""
    fence = Fence()
    fence.started("m1", "o/0", 1)
    fence.stopped("m2", "o/0")
    assert fence.running == {"o/0": "m1"} and fence.busy == {"m1": "o/0"}
