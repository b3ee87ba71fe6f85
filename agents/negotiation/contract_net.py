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
"""

from __future__ import annotations

from security.errors import ProtocolBug

IGNORED = "ignored"

# -- initiator (order side), per task ---------------------------------------------
#   idle      task known, not yet called
#   calling   cfp sent, collecting proposals until the reply deadline
#   awarded   accept sent to the winner, waiting for its confirm
#   leased    winner confirmed; lease renewed by heartbeats
#   done      inform_done received (terminal)
#   waiting   no bidder / all refused: retry later or escalate
INITIATOR: dict[tuple[str, str], str] = {
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
PARTICIPANT: dict[tuple[str, str], str] = {
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


TABLES = {"initiator": INITIATOR, "participant": PARTICIPANT}


def step(role: str, state: str, event: str, task: str = "") -> str:
    """The next state, :data:`IGNORED`, or :class:`IllegalTransition`."""
    nxt = TABLES[role].get((state, event))
    if nxt is None:
        raise IllegalTransition(event, role, state, task)
    return nxt
