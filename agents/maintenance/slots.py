"""Where in its own queue a machine asks for its maintenance window: the slot that costs
production least (issue 16, "Maintenance negotiated into the schedule"; ADR 87).

Theory of operation
-------------------
A machine that needs a window asks the crew for one starting no earlier than
``from_at`` (now, the part's ETA, ``window_slot_s`` before the latest safe
start) and no later than the latest safe start.  Between the two, what it knows
is its own queue: the tasks it has booked (committed, or offered and still
held), each with its order's due date and the order's processing still to come
after it (both from the task's call for proposals: ``due_at``,
``work_remaining_s``).  The candidate starts are

* the **first gap** where the job fits (the rule before ADR 87 — or ``from_at``
  when that gap is past the latest safe start), and
* the instant **just after each booked task** in ``(from_at, latest]``: its
  end plus a margin (``retry_s``: the plant ends an operation a message hop
  later than the machine reckons, and a window from the very end would stop
  it).  The running operation counts when a start from ``from_at`` would cut
  into it; the task whose end *is* the first gap does not (that slot is the
  first gap's, not to be moved by the margin).  No candidate starts before
  the running operation's end: such an offer is declined and asked for again
  (before ADR 87 a machine whose first gap was past the latest safe start
  asked from *now* while it ran, and declined, and asked again, at every
  message hop until the operation ended).

Each candidate ``t`` is scored by what the window ``[t, t + duration)`` would
do to the queue.  The booked tasks it overlaps are handed back
(agents/maintenance/hook.py); each is assumed to come back to this machine at
the first gap after the window among the tasks that stay (its order may find
an earlier machine: the estimate is the pessimistic one the machine can make
alone), so its order would finish at that gap's end plus its processing still
to come.  The score, compared **lexicographically** (least first):

1. whether ``t`` cuts into the running operation — starts at or before its
   reckoned end (such an offer is declined; it is only ever taken when it is
   the sole candidate);
2. the number of orders that would then finish past their due date — no order
   is pushed past due where a slot avoids that;
3. the seconds of booked work handed back — least work pushed;
4. ``−t`` — the latest start: the least life thrown away.

Every candidate is a number from the queue, every comparison a total order on
tuples: the choice is deterministic.  With a single candidate (an empty queue,
or no task ending before the latest safe start) it is the rule before ADR 87
unchanged.  Pure: the machine's side is :func:`queue_of`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agents.resource import ResourceAgent

__all__ = ["Booked", "Queue", "Slot", "choose", "queue_of", "score"]

EPS = 1e-9


@dataclass(frozen=True)
class Booked:
    """One task in the machine's queue, as the window planner sees it."""

    task: str
    order: str
    start_at: float
    finish_at: float
    due_at: float = math.inf
    after_s: float = 0.0        # the order's processing still to come after this task


@dataclass(frozen=True)
class Queue:
    """The machine's queue: its booked tasks and when it is free of the running one."""

    booked: tuple[Booked, ...] = ()
    running_until_at: float = -math.inf     # when the running operation ends, as reckoned
    margin_s: float = 0.0                   # a start "just after" a task: its end plus this


@dataclass(frozen=True)
class Slot:
    """One candidate start and what it costs production."""

    start_at: float
    cuts_running: bool
    late_orders: tuple[str, ...]        # orders that would finish past due
    pushed: tuple[str, ...]             # tasks handed back
    pushed_s: float                     # their booked seconds

    def key(self) -> tuple[bool, int, float, float]:
        """The lexicographic rule of the module docstring (least is best)."""
        return (self.cuts_running, len(self.late_orders), round(self.pushed_s, 6),
                -self.start_at)


def _fit(busy: list[tuple[float, float]], from_at: float, duration_s: float) -> float:
    """The earliest start at or after ``from_at`` where ``duration_s`` fits among ``busy``."""
    start = from_at
    for s, e in sorted(busy):
        if start + duration_s <= s + EPS:
            break
        start = max(start, e)
    return start


def score(start_at: float, duration_s: float, queue: Queue) -> Slot:
    """What a window from ``start_at`` for ``duration_s`` would cost the queue."""
    end_at = start_at + duration_s
    hit = sorted((b for b in queue.booked
                  if b.start_at < end_at - EPS and b.finish_at > start_at + EPS),
                 key=lambda b: (b.start_at, b.task))
    busy = [(b.start_at, b.finish_at) for b in queue.booked if b not in hit]
    busy.append((start_at, end_at))
    late: set[str] = set()
    for b in hit:                       # back to this machine, after the window
        length = b.finish_at - b.start_at
        again = _fit(busy, end_at, length)
        busy.append((again, again + length))
        if again + length + b.after_s > b.due_at + EPS:
            late.add(b.order)
    return Slot(start_at, start_at <= queue.running_until_at + EPS, tuple(sorted(late)),
                tuple(b.task for b in hit), sum(b.finish_at - b.start_at for b in hit))


def choose(first_at: float, from_at: float, latest_at: float, duration_s: float,
           queue: Queue) -> Slot:
    """The least costly start among ``first_at`` (the first gap, or ``from_at``) and the
    ends of the booked tasks and of the running operation, each plus the margin, in
    ``(from_at, latest_at]``, none before the running operation's end."""
    ends = [b.finish_at for b in queue.booked]
    if queue.running_until_at >= from_at - EPS:     # a start from ``from_at`` would cut in
        ends.append(queue.running_until_at)
    # the first gap just after a task is that task's slot already (the rule before)
    after = (e + queue.margin_s for e in ends if abs(e - first_at) > EPS)
    starts = {first_at} | {t for t in after if from_at + EPS < t <= latest_at + EPS
                           and t > queue.running_until_at + EPS}
    return min((score(t, duration_s, queue) for t in sorted(starts)), key=Slot.key)


def queue_of(agent: ResourceAgent, margin_s: float, now: float) -> Queue:
    """The machine's queue now: committed tasks and offers still held (the same intervals
    :meth:`ResourceAgent.busy_intervals` counts), the running operation's reckoned end,
    and ``margin_s`` after a task's end for a start just after it (agents/maintenance/
    hook.py ``_gap``: the plant ends an operation a little later than the machine
    reckons)."""
    booked = tuple(
        Booked(tid, t.order, t.start_at, t.finish_at, t.cfp.due_at,
               max(0.0, t.cfp.work_remaining_s - float(t.info.get("processing_s", 0.0))))
        for tid, t in sorted(agent.tasks.items())
        if t.state == "committed" or (t.state == "held" and t.hold_until_at >= now))
    until = agent.busy_until_at if agent.running is not None else -math.inf
    return Queue(booked, until, margin_s)
