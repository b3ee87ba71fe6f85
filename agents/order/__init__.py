"""The order agent: the initiator side of the contract net for one production order.

Theory of operation
-------------------
An order owns its routing.  From its release time it negotiates its
operations in routing order: operation k+1 when k is done, or — with
``plan_ahead_ops`` > 0 — as soon as k is awarded, with
``earliest_start_at`` = k's promised finish, so part of the schedule is
built by negotiation before the parts get there.  (Negotiating each
operation when it becomes ready measured better on the FJSP benchmarks:
16.2 % mean gap against 26.9 % for full look-ahead.)  Execution follows the
material: when operation k-1 is done and k has a winner, the parts are moved
there (a transport negotiated with the robots, if the cell has any and the
locations differ) and the winner is told ``ready``.

Every negotiation is one task with an idempotency key (``ORDER/k`` for
operations, ``ORDER/k/mN`` for moves) and a growing **award epoch**; see
:mod:`agents.negotiation.contract_net` for the state table.  The reply
deadline is a timer: whoever has not answered by then is ignored.  A lease
that is not renewed by heartbeats within ``lease_s`` expires, the winner
gets ``cancel`` and the task is called again.  A ``failure`` (fault, abort)
or a scrap result calls the operation again; with no proposal at all the
order waits ``retry_s`` in a safe state and calls again, and records the
case as non-routine.

With a rehearsed plan (:mod:`agents.rehearsal`) every operation is called at
once, at its planned machine and start; such a call has one recipient, so
the award follows its proposal without waiting for the reply deadline.

The parts travel as one :class:`Lot` until a supervisor chooses "split the
order" on an escalation: then a second lot ``b`` (tasks ``ORDER/b/k``) takes
some of the units through the rest of the routing on its own, under the
same agent; the order completes when both lots are done (docs/escalation.md).

The package, module by module:

* :mod:`agents.order.agent` — :class:`OrderAgent`: inputs, rehearsal glue,
  the material flow of its lots;
* :mod:`agents.order.initiator` — the contract net as initiator: call,
  collect, award, watch the lease;
* :mod:`agents.order.negotiation` — :class:`Negotiation`, one task, the only
  writer of its state (through the contract-net table), and its
  :class:`Trouble` record;
* :mod:`agents.order.lots` — :class:`Lot`, and predicting and making a split;
* :mod:`agents.order.exceptions` — escalations, decisions, cancelling.
"""

from agents.order.agent import OrderAgent
from agents.order.lots import Lot, SplitPlan, plan_split
from agents.order.negotiation import Negotiation, Trouble

__all__ = ["Lot", "Negotiation", "OrderAgent", "SplitPlan", "Trouble", "plan_split"]
