"""The contract net with leases, as two transition tables (docs/architecture.md, Negotiation).

Theory of operation
-------------------
Per task there are two roles.  The **initiator** (an order agent) calls for
proposals, waits until the reply deadline — never longer, so a silent bidder
cannot stall it — awards one proposal as a lease and watches the lease until
the task is done.  A **participant** (a machine or robot agent) answers with
a proposal that holds a tentative reservation, turns an award into a
commitment, executes it, and reports.

Each table maps ``(state, event) -> next state``.  A pair missing from the
table is illegal: :func:`step` raises :class:`IllegalTransition` naming the
event, role and state.  Events that a well-behaved but *late* or
*reordered* peer can cause (a proposal after the deadline, a heartbeat for
a finished task) are in the table as explicit self-transitions marked
``IGNORED`` so callers count them instead of crashing.

Award epochs fence stale winners: every (re-)award of a task increments the
epoch, and a participant acts only on messages carrying its current epoch.

These tables are the only place a negotiation state changes: the order
agent's :class:`agents.order.negotiation.Negotiation` and the resource
agent's :class:`agents.resource.Task` each call :func:`step` and are the only
writers of their ``state``.  States and events are ``Literal`` types, so a
misspelt one is a type error, not a silent new state.
"""

from __future__ import annotations

from typing import Literal

from security.errors import ProtocolBug

IGNORED: Literal["ignored"] = "ignored"
Ignored = Literal["ignored"]

InitiatorState = Literal["idle", "calling", "awarded", "leased", "done", "waiting"]
InitiatorEvent = Literal[
    "call", "propose", "refuse", "deadline_award", "deadline_none", "confirm", "decline",
    "lease_expired", "failure", "done", "scrap", "renew", "cancel", "late_report", "split",
    "passed"]
ParticipantState = Literal["new", "held", "committed", "running", "done", "released"]
ParticipantEvent = Literal[
    "propose", "accept", "reject", "hold_lapsed", "ready", "start", "cancel", "fault", "finish"]

# -- initiator (order side), per task ---------------------------------------------
#   idle      task known, not yet called
#   calling   cfp sent, collecting proposals until the reply deadline
#   awarded   accept sent to the winner, waiting for its confirm
#   leased    winner confirmed; lease renewed by heartbeats
#   done      inform_done received (terminal)
#   waiting   no bidder / all refused: retry later or escalate
INITIATOR: dict[tuple[InitiatorState, InitiatorEvent], InitiatorState | Ignored] = {
    ("idle", "call"): "calling",
    ("waiting", "call"): "calling",
    ("calling", "propose"): "calling",
    ("calling", "refuse"): "calling",
    ("calling", "deadline_award"): "awarded",
    ("calling", "deadline_none"): "waiting",
    ("awarded", "confirm"): "leased",
    ("awarded", "decline"): "waiting",
    ("awarded", "lease_expired"): "waiting",
    ("awarded", "failure"): "waiting",
    ("awarded", "done"): "done",          # confirm lost or reordered after done
    ("leased", "renew"): "leased",
    ("leased", "lease_expired"): "waiting",
    ("leased", "failure"): "waiting",
    ("leased", "done"): "done",
    ("leased", "cancel"): "waiting",
    ("awarded", "cancel"): "waiting",
    ("awarded", "scrap"): "waiting",     # done, but the part failed its quality check:
    ("leased", "scrap"): "waiting",      # the operation is called again
    # a done report from a past award (its inform_done was lost, the lease expired):
    # back onto the route to done, whatever round the task is in now
    ("calling", "late_report"): "leased", ("awarded", "late_report"): "leased",
    ("leased", "late_report"): "leased", ("waiting", "late_report"): "leased",
    # a split-off lot (agents/order/lots.py): the operations its parts went through are
    # done, the one they wait at is called by its retry timer
    ("idle", "passed"): "done",
    ("idle", "split"): "waiting",
    # late or duplicated peer messages: counted, never acted on
    ("awarded", "propose"): IGNORED, ("awarded", "refuse"): IGNORED,
    ("leased", "propose"): IGNORED, ("leased", "refuse"): IGNORED,
    ("leased", "confirm"): IGNORED, ("awarded", "renew"): "awarded",
    ("done", "propose"): IGNORED, ("done", "refuse"): IGNORED, ("done", "confirm"): IGNORED,
    ("done", "renew"): IGNORED, ("done", "done"): IGNORED, ("done", "failure"): IGNORED,
    ("waiting", "propose"): IGNORED, ("waiting", "refuse"): IGNORED,
    ("waiting", "confirm"): IGNORED, ("waiting", "renew"): IGNORED,
    ("waiting", "done"): IGNORED, ("waiting", "failure"): IGNORED,
    ("calling", "confirm"): IGNORED, ("calling", "renew"): IGNORED,
    ("calling", "done"): IGNORED, ("calling", "failure"): IGNORED,
}

# -- participant (resource side), per task ------------------------------------------
#   held      proposal sent; a tentative reservation until hold_until_at
#   committed award confirmed; waiting for parts / its turn
#   running   executing in the plant
#   done      finished and reported (terminal)
#   released  rejected, hold lapsed, cancelled or failed (terminal for this epoch)
PARTICIPANT: dict[tuple[ParticipantState, ParticipantEvent], ParticipantState | Ignored] = {
    ("new", "propose"): "held",
    ("held", "accept"): "committed",
    ("held", "reject"): "released",
    ("held", "hold_lapsed"): "released",
    ("released", "accept"): "committed",  # award after our hold lapsed: re-check capacity
    ("committed", "ready"): "committed",
    ("committed", "start"): "running",
    ("committed", "cancel"): "released",
    ("committed", "fault"): "released",
    ("running", "finish"): "done",
    ("running", "cancel"): "released",
    ("running", "fault"): "released",
    ("held", "cancel"): "released",
    ("held", "fault"): "released",        # a fault drops our holds with the commitments
    ("released", "fault"): IGNORED,
    ("released", "cancel"): IGNORED,
    ("released", "reject"): IGNORED,
    ("released", "hold_lapsed"): IGNORED,
    ("done", "cancel"): IGNORED,
    ("done", "reject"): IGNORED,
    ("committed", "accept"): IGNORED,     # duplicate award
    ("committed", "reject"): IGNORED,     # a reject from an earlier round, after we won a later one
    ("running", "reject"): IGNORED,
    ("running", "ready"): IGNORED,
    ("done", "ready"): IGNORED,
    ("done", "accept"): IGNORED,
    ("held", "ready"): IGNORED,
    ("released", "ready"): IGNORED,
}


class IllegalTransition(ProtocolBug):
    """An event the table does not allow in the current state."""

    def __init__(self, event: str, role: str, state: str, task: str = "") -> None:
        self.event, self.role, self.state, self.task = event, role, state, task
        where = f" for task {task!r}" if task else ""
        super().__init__(f"illegal transition: event {event!r} for role {role} in state "
                         f"{state!r}{where}")


Role = Literal["initiator", "participant"]
TABLES: dict[Role, dict] = {"initiator": INITIATOR, "participant": PARTICIPANT}


def step(role: Role, state: str, event: str, task: str = "") -> str:
    """The next state, :data:`IGNORED`, or :class:`IllegalTransition`."""
    nxt = TABLES[role].get((state, event))
    if nxt is None:
        raise IllegalTransition(event, role, state, task)
    return nxt
