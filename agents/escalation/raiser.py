"""Raising an escalation until a supervisor decides it: one small sans-io object.

Theory of operation
-------------------
Whoever detects a non-routine case (an order agent, a resource agent, and
later a host or the supervisor) sends ``escalate`` to the console and waits
in a safe state.  Either message may be lost, so the raiser **sends it
again** every ``resend_s`` until a ``decision`` arrives; the console ignores
a duplicate, or repeats the decision it took.  A case that cleared by itself
is **cleared** with ``escalation_update`` (return to normal).

The raiser knows nothing of agents: it takes the :class:`Escalate` body to
send, remembers it with whatever the caller wants back when the decision
comes (``about``), and returns actions.  Its owner routes its timers to it.
The timer key is the owner's (``key.format(escalation_id)``): the order agent
keeps one timer per escalation (``"escalation:{}"``), a resource its single
``"escalation"`` timer, so the event logs stay what they were.  The raiser is
plain data (compared equal after a journal replay), so the key is a format
string, not a function.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

from agents.protocol.actions import Action, CancelTimer, Send, SetTimer
from agents.protocol.messages import Decision, Escalate, EscalationUpdate, Message

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Raised(Generic[T]):
    """An open escalation: the body sent again until decided, and the raiser's context."""

    body: Escalate
    about: T


@dataclass(slots=True)
class EscalationRaiser(Generic[T]):
    """Open escalations of one raiser (``owner``), each re-sent to ``console`` until decided."""

    owner: str
    console: str
    resend_s: float
    key: str = "escalation:{}"              # the re-send timer of an escalation id
    raised: int = 0                         # how many were ever raised (numbers the ids)
    open: dict[str, Raised[T]] = field(default_factory=dict)

    def timer(self, escalation: str) -> str:
        return self.key.format(escalation)

    def next_id(self) -> str:
        """The id of the next escalation: ``OWNER/eN``, N counting from 1."""
        self.raised += 1
        return f"{self.owner}/e{self.raised}"

    def raise_(self, body: Escalate, about: T, now: float) -> list[Action]:
        """Send ``body`` to the console and arm its re-send timer."""
        self.open[body.escalation] = Raised(body, about)
        return [Send(self.console, body, body.escalation),
                SetTimer(self.timer(body.escalation), now + self.resend_s)]

    def resend(self, escalation: str, now: float) -> list[Action]:
        """The re-send timer fired: send it again while it is open, else nothing."""
        entry = self.open.get(escalation)
        if entry is None:
            return []
        return [Send(self.console, entry.body, escalation),
                SetTimer(self.timer(escalation), now + self.resend_s)]

    def on_timer(self, key: str, now: float) -> list[Action]:
        """A timer of the owner fired: if it is one of this raiser's per-escalation re-send
        timers, send that escalation again (while open); anything else is not ours: []."""
        prefix, _, suffix = self.key.partition("{}")
        if not (key.startswith(prefix) and key.endswith(suffix)) or not prefix + suffix:
            return []
        return self.resend(key[len(prefix):len(key) - len(suffix)], now)

    def decision_in(self, msg: Message) -> Decision | None:
        """The decision ``msg`` carries if it is one from this raiser's console, else None."""
        body = msg.body
        return body if isinstance(body, Decision) and msg.sender == self.console else None

    def resend_all(self, now: float) -> list[Action]:
        """One timer for all (a fixed ``key``): send every open escalation again, in the
        order raised, and arm the timer once — nothing when none is open."""
        if not self.open:
            return []
        return [*(Send(self.console, entry.body, esc) for esc, entry in self.open.items()),
                SetTimer(self.timer(""), now + self.resend_s)]

    def decided(self, escalation: str) -> tuple[Raised[T] | None, list[Action]]:
        """A decision arrived: the escalation it closes (None if unknown, already decided
        or cleared) and the actions that stop its re-sending."""
        entry = self.open.pop(escalation, None)
        if entry is None:
            return None, []
        return entry, [CancelTimer(self.timer(escalation))]

    def clear(self, escalation: str, reason: str) -> list[Action]:
        """The case cleared by itself: stop re-sending and tell the console."""
        if self.open.pop(escalation, None) is None:
            return []
        return [CancelTimer(self.timer(escalation)),
                Send(self.console, EscalationUpdate(escalation, "return_to_normal", reason),
                     escalation)]

    def withdraw_all(self, reason: str) -> list[Action]:
        """The raiser goes away (an order cancelled): every open escalation returns to
        normal, in id order.  Its re-send timers are left to fire into nothing."""
        out: list[Action] = [
            Send(self.console, EscalationUpdate(esc, "return_to_normal", reason), esc)
            for esc in sorted(self.open)]
        self.open.clear()
        return out
