"""When the cap would make an order late: ask a supervisor (issue 17, docs/energy.md).

Theory of operation
-------------------
The energy manager sees every request the cap holds back.  For each one it
predicts when the request could be granted if nothing else changed — the
earliest instant the leases now held, and the requests queued before it
(granted as the budget grants them), leave enough power for it — and when the
operation would then end.  A lease's hold is the operation plus the machine's
longest wake-up plus a grace (agents/energy/client.py); the prediction takes
that ``slack`` off (each machine's, from the cell file), i.e. it expects a
lease to be released when its operation ends on an awake machine, and the
operation to take its hold minus the slack.  The order then still has its
later operations to run: the prediction adds their work (``remaining_s``: each
at its fastest machine's time, from the cell file — no queueing, no
transport), so the predicted completion is still a lower bound, but one that
counts the whole rest of the route, not one operation.  If that completion
is more than ``threshold_s`` after the order's due date, the case is not
routine: the cap, not the plant, makes the order late.  The manager raises one
escalation per order (cause ``cap_makes_order_late``) through the ordinary
:class:`~agents.escalation.raiser.EscalationRaiser`, with three options:

``raise_cap``
    the manager grants above the cap, as much as the order's waiting requests
    need, for ``raise_s``; the raise is logged (``cap_raised``) and so is its end
    (``cap_restored``, once the period is over and the leases in use fit under
    the cap again), and the cap invariant checks the effective cap in between;
``let_late``
    nothing changes; the order is late (the safe default, applied by the
    console at the final deadline);
``move_other_work``
    the order's requests go before every other waiting one (the other work
    waits for power instead).

If the request is granted before anyone decides, the escalation returns to
normal.  An order is asked about once: after a decision, or a return to normal,
it is not asked again (a supervisor who let it be late does not want to be
asked at every operation).  This object is pure: it reads the lease table and
returns the escalation to send; the manager applies decisions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from agents.protocol.messages import Escalate

from .budget import EPS_KW, PowerBudget

__all__ = ["CAUSE", "CapEscalationPolicy", "CapWatch", "position_of", "predicted_start"]

CAUSE = "cap_makes_order_late"
SAFE_DEFAULT = "let_late"


@dataclass(frozen=True, slots=True)
class CapEscalationPolicy:
    """From the cell's ``energy:`` section (agents/cell/energy.py) and its escalation policy."""

    threshold_s: float            # cap_lateness_escalate_s
    priority: int = 2             # cap_escalate_priority
    raise_s: float = 3600.0       # cap_raise_s
    console: str = "console"
    slack_s: dict[str, float] = field(default_factory=dict)  # machine -> wake-up + grace

    def slack(self, machine: str) -> float:
        return self.slack_s.get(machine, 0.0)


def predicted_start(budget: PowerBudget, kw: float, now: float,
                    slack_s: Mapping[str, float] | None = None, ahead_of: str = "") -> float:
    """The earliest time ``kw`` fits if each lease held now is released at its expiry less
    its holder's slack: ``now`` if it fits already; the last release if it never does.

    With ``ahead_of`` (a waiting request's lease key) the requests queued before it are
    granted first, as the budget grants them (in arrival order, each as soon as it fits),
    and each holds its power for its hold less its holder's slack; without it nothing
    else is granted."""
    slack = slack_s or {}
    ends = [(max(now, x.expires_at - slack.get(x.holder, 0.0)), x.kw)
            for x in budget.leases.values()]
    queue = []
    if ahead_of in budget.waiting:
        for key, w in budget.waiting.items():
            if key == ahead_of:
                break
            queue.append(w)
    free = budget.headroom_kw
    at = now
    while True:
        for w in list(queue):                   # the requests ahead, as the budget grants
            if w.kw <= free + EPS_KW:
                queue.remove(w)
                free -= w.kw
                ends.append((at + max(0.0, w.hold_s - slack.get(w.holder, 0.0)), w.kw))
        if kw <= free + EPS_KW or not ends:
            return at
        ends.sort()
        end, lease_kw = ends.pop(0)
        free += lease_kw
        at = max(at, end)


def position_of(task: str) -> int | None:
    """The operation's index in its order's route: task ids end in ``/K``
    (``ORDER/K``, a split lot's ``ORDER/b/K``; agents/order/lots.py); None otherwise."""
    tail = task.rpartition("/")[2]
    return int(tail) if tail.isdigit() else None


@dataclass
class CapWatch:
    """Which orders were asked about, and what to ask."""

    policy: CapEscalationPolicy
    due_at: dict[str, float]                       # order -> due date, cell time
    asked: set[str] = field(default_factory=set)   # orders asked about once already
    #: order -> for each operation K, the work of the operations after K (seconds)
    remaining_s: dict[str, list[float]] = field(default_factory=dict)

    def after(self, order: str, task: str) -> float:
        """The order's work still to run after ``task`` (0 when unknown)."""
        k, rest = position_of(task), self.remaining_s.get(order, [])
        return rest[k] if k is not None and 0 <= k < len(rest) else 0.0

    def check(self, order: str, machine: str, kw: float, hold_s: float, budget: PowerBudget,
              now: float, task: str = "", key: str = "") -> tuple[float, float] | None:
        """``(predicted completion, late by)`` when ``machine``'s waiting request for
        ``task`` (lease ``key``: the requests queued before it go first) makes its order
        late beyond the threshold and the order was not asked about; else None."""
        due = self.due_at.get(order)
        if due is None or order in self.asked:
            return None
        p = self.policy
        start = predicted_start(budget, kw, now, p.slack_s, key)
        end = start + max(0.0, hold_s - p.slack(machine)) + self.after(order, task)
        late_by = end - due
        if late_by <= self.policy.threshold_s:
            return None
        return end, late_by

    def escalation(self, esc: str, order: str, task: str, kw: float, end: float,
                   late_by: float, budget: PowerBudget, cap_kw: float, now: float) -> Escalate:
        """The body to raise for ``order`` (marks it asked)."""
        self.asked.add(order)
        p = self.policy
        extra = max(0.0, kw - budget.headroom_kw)
        due = self.due_at[order]
        return Escalate(
            escalation=esc, priority=p.priority, cause=CAUSE,
            consequence=f"The peak cap of {cap_kw:g} kW holds back {task}: order {order} would "
                        f"finish about {late_by:.0f} s after its due date ({due:.0f} s)",
            order=order,
            options=[
                {"id": "raise_cap", "label": "Raise the cap for a while",
                 "effect": f"the cell may draw up to {cap_kw + extra:.1f} kW until "
                           f"{now + p.raise_s:.0f} s; {task} starts now"},
                {"id": SAFE_DEFAULT, "label": "Let the order be late",
                 "effect": f"order {order} finishes about {late_by:.0f} s late; the cap holds"},
                {"id": "move_other_work", "label": "Move other work",
                 "effect": f"{order}'s operations get power before every other waiting one; "
                           "the other work waits"}],
            safe_default=SAFE_DEFAULT,
            context={"task": task, "kw": kw, "due_at": due, "predicted_end_at": round(end, 6),
                     "late_by_s": round(late_by, 6), "cap_kw": cap_kw,
                     "raise_kw": round(extra, 9), "raise_s": p.raise_s, "detected_at": now})
