"""The order agent's record of one task, and the only writer of its contract-net state.

A :class:`Negotiation` is one task of an order (an operation ``ORDER/k`` or a
move ``ORDER/k/mN``) on the initiator side of the contract net.  Its
``state`` is read-only: it changes only through :meth:`Negotiation.fire`,
which looks the event up in :data:`agents.negotiation.contract_net.INITIATOR`
— so a transition the table lacks raises
:class:`~agents.negotiation.contract_net.IllegalTransition` naming event,
role and state, instead of happening quietly.

What exception handling needs to remember about a task (its last failure,
an open escalation, a wait a supervisor accepted) lives beside it in a
:class:`Trouble` record, so the contract-net fields stay the contract net's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agents.negotiation.contract_net import (
    IGNORED,
    Ignored,
    InitiatorEvent,
    InitiatorState,
    step,
)
from agents.protocol.messages import CallForProposals, Proposal


@dataclass(slots=True)
class Trouble:
    """What exception handling knows about one task (agents/order/exceptions.py)."""

    flagged: bool = False                     # logged as non-routine once
    wait_option: tuple[str, float] | None = None   # (faulted machine, finish if we wait)
    blocked_since: float | None = None        # no live resource since (escalation policy)
    failed_on: str = ""                       # the resource of the last failure
    failed_repair_at: float = 0.0
    late_ok: bool = False                     # a decision accepted a late re-route
    wait_accepted_until: float = 0.0          # a decision to wait: no new escalation before
    escalation: str = ""                      # the open escalation about this task
    scrapped: int = 0                         # failed quality checks of this operation


@dataclass(slots=True)
class Negotiation:
    """The initiator's record of one task: what was called, who won, under which epoch."""

    task: str
    kind: str                      # operation | transport
    op_index: int
    capability: str
    op: str
    recipients: list[str]
    origin: str = ""
    destination: str = ""
    lot: str = ""                  # the lot it belongs to ("" = the order's first)
    epoch: int = 0
    attempt: int = -1
    winner: str = ""
    promised_finish_at: float = 0.0
    cfp: CallForProposals | None = None
    proposals: list[tuple[str, Proposal]] = field(default_factory=list)
    # (sender, reason, repair_at) of each refusal this round
    refusals: list[tuple[str, str, float]] = field(default_factory=list)
    readied_epoch: int = -1
    past_awards: set[tuple[str, int]] = field(default_factory=set)   # (winner, epoch)
    duration_s: float = 0.0        # of the current award, from its proposal
    planned: bool = False          # this round calls the rehearsed plan's machine
    trouble: Trouble = field(default_factory=Trouble)
    _state: InitiatorState = field(default="idle", init=False, repr=False)

    @property
    def state(self) -> InitiatorState:
        return self._state

    def next_on(self, event: InitiatorEvent) -> InitiatorState | Ignored:
        """Where ``event`` would lead, without taking it (raises if it is illegal)."""
        return step("initiator", self._state, event, self.task)  # type: ignore[return-value]

    def fire(self, event: InitiatorEvent) -> bool:
        """Take ``event`` through the table; False when the table ignores it here."""
        nxt = self.next_on(event)
        if nxt == IGNORED:
            return False
        self._state = nxt
        return True
