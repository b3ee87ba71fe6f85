"""The fence: what the plant refuses to start, whatever backend runs the resource.

Theory of operation
-------------------
The plant is the last line of defence for "no operation executed twice"
(docs/decisions.md, ADR 13; docs/PROTOCOL.md §13.5).  This module is that
defence as a pure object — no SimPy, no I/O, no clock — so the same rules,
in the same order, stand in front of the simulator and of any real equipment.
It is asked before a start (:meth:`Fence.check_start`, :meth:`Fence.check_move`)
and told what happened (:meth:`Fence.started`, :meth:`Fence.ended`,
:meth:`Fence.arrived`, :meth:`Fence.stopped`); it returns a
:class:`Refusal` or ``None`` and never acts itself.

Its memory, for the whole run:

* ``completed``: operation tasks that ended with quality ``"ok"`` -> the
  location of their parts;
* ``running``: task -> the resource it is in progress on (operations and moves);
* ``started_epoch``: task -> the highest award epoch it was started under;
* ``quality``: task -> the quality of its last run (``query_state``);
* ``delivered``: move task -> the robot that delivered it and the destination.

Every change goes through a :class:`FenceStore` as one batch, so the memory
survives a restart of the plant process: :class:`MemoryFenceStore` in virtual
time and tests, :class:`~sim_bridge.fence_store.SqliteFenceStore` under
``autocell plant``.  After a restart nothing runs that the backends do not
report running: :meth:`Fence.reconcile` forgets the rest, so a task that was
interrupted by the restart may start again, while a task completed before it
is still refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["Change", "Fence", "FenceStore", "MemoryFenceStore", "Refusal"]

KINDS: tuple[str, ...] = ("completed", "running", "epoch", "quality", "delivered")

Change = tuple[str, str, Any]
"""``(kind, task, value)``: set ``kind[task] = value``; a value of ``None`` deletes."""


@dataclass(frozen=True)
class Refusal:
    """Why a start or move is refused (docs/PROTOCOL.md §13.4, ``command_refused``)."""

    why: str                     # for people and logs, never parsed
    elsewhere: bool = False      # a stale winner holds the task (done, running, later epoch)
    done_at: str | None = None   # done successfully: where its parts are


class FenceStore(Protocol):
    """Where the fence keeps its memory: ``load`` once, then ``apply`` every change."""

    def load(self) -> dict[str, dict[str, Any]]: ...

    def apply(self, changes: list[Change]) -> None: ...


class MemoryFenceStore:
    """The in-memory twin: a plant process that forgets on exit (virtual time, tests)."""

    def __init__(self) -> None:
        self.tables: dict[str, dict[str, Any]] = {k: {} for k in KINDS}

    def load(self) -> dict[str, dict[str, Any]]:
        return {k: dict(v) for k, v in self.tables.items()}

    def apply(self, changes: list[Change]) -> None:
        for kind, task, value in changes:
            if value is None:
                self.tables[kind].pop(task, None)
            else:
                self.tables[kind][task] = value


class Fence:
    """The rules of docs/PROTOCOL.md §13.5 over the memory above."""

    def __init__(self, store: FenceStore | None = None) -> None:
        self.store: FenceStore = store if store is not None else MemoryFenceStore()
        t = self.store.load()
        self.completed: dict[str, str] = dict(t.get("completed", {}))
        self.running: dict[str, str] = dict(t.get("running", {}))
        self.started_epoch: dict[str, int] = {k: int(v) for k, v in t.get("epoch", {}).items()}
        self.quality: dict[str, str] = dict(t.get("quality", {}))
        self.delivered: dict[str, tuple[str, str]] = {
            k: (str(v[0]), str(v[1])) for k, v in t.get("delivered", {}).items()}
        self.busy: dict[str, str] = {r: task for task, r in self.running.items()}

    # -- decisions ------------------------------------------------------------------------------
    def check_start(self, machine: str, task: str, epoch: int) -> Refusal | None:
        """Rules 2–5 of §13.5 for ``start_operation``; rule 1 (not a machine) and rule 6
        (down) are the gateway's and the backend's."""
        if task in self.completed:
            return Refusal("task already completed (idempotency key)", True,
                           self.completed[task])
        elsewhere = self.running.get(task)
        if elsewhere is not None:
            return Refusal(f"task in progress on {elsewhere}", True)
        started = self.started_epoch.get(task, 0)
        if epoch < started:
            return Refusal(f"stale award epoch {epoch} (epoch {started} already started)", True)
        if machine in self.busy:
            return Refusal(f"machine busy with {self.busy[machine]}")
        return None

    def check_move(self, robot: str, task: str) -> Refusal | None:
        """Rules 2–4 for ``move``: delivered, moving on another robot, this robot busy."""
        done = self.delivered.get(task)
        if done is not None:
            return Refusal("move already done (idempotency key)", True, done[1])
        moving = self.running.get(task)
        if moving is not None and moving != robot:
            return Refusal(f"move in progress on {moving}", True)
        if robot in self.busy:
            return Refusal(f"robot busy with {self.busy[robot]}")
        return None

    # -- facts ----------------------------------------------------------------------------------
    def started(self, resource: str, task: str, epoch: int | None = None) -> None:
        """``task`` runs on ``resource`` now; an operation's ``epoch`` becomes its started one
        (moves are fenced by delivery only, §15)."""
        self.running[task] = resource
        self.busy[resource] = task
        changes: list[Change] = [("running", task, resource)]
        if epoch is not None:
            self.started_epoch[task] = epoch
            changes.append(("epoch", task, epoch))
        self.store.apply(changes)

    def ended(self, machine: str, task: str, quality: str, location: str) -> None:
        """The operation ran to its end; ``ok`` makes it complete, its parts at ``location``."""
        changes = self._not_running(machine, task)
        if quality == "ok":
            self.completed[task] = location
            changes.append(("completed", task, location))
        self.quality[task] = quality
        changes.append(("quality", task, quality))
        self.store.apply(changes)

    def arrived(self, robot: str, task: str, destination: str) -> None:
        changes = self._not_running(robot, task)
        self.delivered[task] = (robot, destination)
        changes.append(("delivered", task, [robot, destination]))
        self.store.apply(changes)

    def stopped(self, resource: str, task: str) -> None:
        """Ended without a result (aborted, interrupted): no longer in progress; it may start
        again under the rules."""
        self.store.apply(self._not_running(resource, task))

    def reconcile(self, running: Mapping[str, str]) -> list[tuple[str, str]]:
        """After a restart of the plant process: keep only what the backends say runs
        (resource -> task); the ``(resource, task)`` pairs forgotten."""
        gone = [(r, t) for t, r in sorted(self.running.items()) if running.get(r) != t]
        changes: list[Change] = []
        for r, t in gone:
            changes += self._not_running(r, t)
        if changes:
            self.store.apply(changes)
        return gone

    def _not_running(self, resource: str, task: str) -> list[Change]:
        if self.running.get(task) != resource:
            return []
        del self.running[task]
        self.busy.pop(resource, None)
        return [("running", task, None)]
