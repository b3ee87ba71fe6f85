"""Lots and splitting them: the parts of an order that travel together.

An order is one :class:`Lot` (``name`` "", tasks ``ORDER/k``) until a
supervisor chooses "split the order" on an escalation (docs/escalation.md).
Then a second lot ``b`` (tasks ``ORDER/b/k``, moves ``ORDER/b/k/mN``) takes
some units through the rest of the routing on its own, under the same agent;
the order completes when both lots are at the output.

The functions here are pure: they predict a split (:func:`plan_split` and
the two situations that offer one) and build the split-off lot.  Applying a
decision — logs, timers, calls — is the agent's (agents/order/exceptions.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from agents.order.negotiation import Negotiation
from agents.protocol.messages import Proposal


@dataclass(slots=True)
class Lot:
    """The parts of an order that travel together: their operations, where they are, what
    they wait for.  An order is one lot (``name`` "", tasks ``ORDER/k``) until a supervisor
    splits it; the split-off lot is ``b`` (tasks ``ORDER/b/k``, moves ``ORDER/b/k/mN``)
    and proceeds through the rest of the routing on its own, under the same agent."""

    name: str
    prefix: str                     # task ids are PREFIX/k
    quantity: int
    ops: list[Negotiation]
    work_s: list[float]             # least processing time of each operation for this lot
    location: str
    parts_busy: bool = False        # being moved or processed
    next_exec: int = 0              # the next operation to execute
    move: Negotiation | None = None
    moves: int = 0
    done_at: float | None = None    # at the output (the order completes with its last lot)


@dataclass(frozen=True, slots=True)
class SplitPlan:
    """A predicted split of one operation's lot into two branches (docs/escalation.md).

    ``first`` goes to ``first_resource`` from ``first_start_at``; ``second`` waits for
    ``second_resource`` (back at ``second_start_at``).  Finishes include the lot's least
    processing time of the operations after ``op_index``."""

    op_index: int
    first: int
    first_resource: str
    first_start_at: float
    first_finish_at: float
    second: int
    second_resource: str
    second_start_at: float
    second_finish_at: float
    unsplit_finish_at: float        # the order's finish without the split (best other option)

    @property
    def finish_at(self) -> float:
        return max(self.first_finish_at, self.second_finish_at)

    def to_context(self, due_at: float) -> dict:
        return {"op_index": self.op_index, "finish_at": round(self.finish_at, 6),
                "late_by_s": round(self.finish_at - due_at, 6),
                "saves_s": round(self.unsplit_finish_at - self.finish_at, 6),
                "branches": [
                    {"units": self.first, "resource": self.first_resource,
                     "start_at": round(self.first_start_at, 6),
                     "finish_at": round(self.first_finish_at, 6)},
                    {"units": self.second, "resource": self.second_resource,
                     "start_at": round(self.second_start_at, 6),
                     "finish_at": round(self.second_finish_at, 6)}]}

    def option(self, due_at: float) -> tuple[str, str, str]:
        """The escalation option offering this split: (id, label, effect)."""
        late = self.finish_at - due_at
        on_time = f"{late:.0f} s late" if late > 0 else f"on time ({-late:.0f} s early)"
        effect = (f"{self.first} units on {self.first_resource} from "
                  f"{self.first_start_at:.0f} s, {self.second} on {self.second_resource} from "
                  f"{self.second_start_at:.0f} s; order finishes about {self.finish_at:.0f} s, "
                  f"{on_time}, {self.unsplit_finish_at - self.finish_at:.0f} s sooner than "
                  "without")
        return ("split", f"Split the order: {self.first} + {self.second} units", effect)


def plan_split(op_index: int, quantity: int, rest_per_unit_s: float, *,
               first: str, first_start_at: float, first_unit_s: float,
               second: str, second_start_at: float, second_unit_s: float,
               unsplit_finish_at: float) -> SplitPlan | None:
    """The best split of ``quantity`` units into two branches, or None when no split finishes
    the order earlier than ``unsplit_finish_at`` (or there is nothing to split).

    Branch one processes n units at ``first_unit_s`` each from ``first_start_at``, branch
    two the other ``quantity - n`` at ``second_unit_s`` from ``second_start_at``; each lot
    then needs ``rest_per_unit_s`` per unit for the operations after this one.  n runs
    over 1 … quantity-1; the earliest order finish wins, ties to the smaller n."""
    best: SplitPlan | None = None
    for n in range(1, quantity):
        plan = SplitPlan(
            op_index, n, first, first_start_at,
            first_start_at + n * first_unit_s + n * rest_per_unit_s,
            quantity - n, second, second_start_at,
            second_start_at + (quantity - n) * (second_unit_s + rest_per_unit_s),
            unsplit_finish_at)
        if best is None or plan.finish_at < best.finish_at - 1e-9:
            best = plan
    if best is None or best.finish_at >= unsplit_finish_at - 1e-6:
        return None
    return best


def splittable(lots: dict[str, Lot], neg: Negotiation) -> bool:
    """One split per order, of an operation whose parts wait for it (not moving, not
    processed) and with nothing after it negotiated yet (no plan-ahead, no rehearsed
    plan): the two lots then start from the same place with nothing to withdraw."""
    lot = lots[neg.lot]
    return (len(lots) == 1 and neg.kind == "operation" and lot.quantity >= 2
            and lot.next_exec == neg.op_index and not lot.parts_busy and lot.move is None
            and neg.state in ("waiting", "calling")
            and all(n.state == "idle" for n in lot.ops[neg.op_index + 1:]))


def split_when_back(lots: dict[str, Lot], neg: Negotiation, unit_work_s: list[float],
                    now: float) -> SplitPlan | None:
    """Every capable machine is down: with two of them giving repair estimates, some
    units on the first one back and the rest on the second, in parallel, against the
    whole lot on the first one back."""
    if not splittable(lots, neg):
        return None
    back: dict[str, float] = {}
    for sender, reason, repair_at in neg.refusals:
        if reason == "down" and repair_at > now:
            back[sender] = min(back.get(sender, repair_at), repair_at)
    if len(back) < 2:
        return None
    (m1, r1), (m2, r2) = sorted(back.items(), key=lambda kv: (kv[1], kv[0]))[:2]
    k, q = neg.op_index, lots[neg.lot].quantity
    unit, rest = unit_work_s[k], sum(unit_work_s[k + 1:])
    return plan_split(k, q, rest, first=m1, first_start_at=r1, first_unit_s=unit,
                      second=m2, second_start_at=r2, second_unit_s=unit,
                      unsplit_finish_at=r1 + q * (unit + rest))


def split_now_and_after_repair(lots: dict[str, Lot], neg: Negotiation,
                               unit_work_s: list[float], winner: str, proposal: Proposal,
                               reroute_finish_at: float, now: float) -> SplitPlan | None:
    """A late re-route: some units now on ``winner`` (at its proposal's rate), the rest
    on the failed resource once repaired (at the rate of its last award), against the
    better of re-routing or waiting for it with the whole lot."""
    trouble = neg.trouble
    if not splittable(lots, neg) or trouble.failed_repair_at <= now:
        return None
    k, lot = neg.op_index, lots[neg.lot]
    q = lot.quantity
    rest = sum(unit_work_s[k + 1:])
    again_s = neg.duration_s if neg.duration_s > 0 else lot.work_s[k]
    wait_finish_at = trouble.failed_repair_at + again_s + sum(lot.work_s[k + 1:])
    return plan_split(k, q, rest, first=winner, first_start_at=proposal.start_at,
                      first_unit_s=(proposal.finish_at - proposal.start_at) / q,
                      second=trouble.failed_on, second_start_at=trouble.failed_repair_at,
                      second_unit_s=again_s / q,
                      unsplit_finish_at=min(reroute_finish_at, wait_finish_at))


def split_off(main: Lot, neg: Negotiation, plan: SplitPlan, order: str,
              unit_work_s: list[float]) -> Lot:
    """Split ``main`` at ``neg``: it keeps ``plan.first`` units and its task ids; the new
    lot ``b`` with ``plan.second`` units has passed the operations before ``neg`` and
    waits at ``neg``'s (called by its retry timer, like a wait for repair)."""
    k = neg.op_index
    ops = [Negotiation(f"{order}/b/{i}", "operation", i, n.capability, n.op,
                       list(n.recipients), lot="b") for i, n in enumerate(main.ops)]
    for n in ops[:k]:
        n.fire("passed")
    ops[k].fire("split")
    b = Lot("b", f"{order}/b", plan.second, ops,
            [u * plan.second for u in unit_work_s], main.location, next_exec=k)
    main.quantity = plan.first
    main.work_s = [u * plan.first for u in unit_work_s]
    return b
