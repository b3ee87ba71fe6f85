"""The escalation record and its ISA-18.2 / IEC 62682 life cycle, as a transition table.

Theory of operation
-------------------
An escalation is an alarm that needs a decision.  Its **state** says where
the people are with it; its **condition** (still active, or returned to
normal because the agents solved it meanwhile) is folded into the states
the way ISA-18.2 folds "active/cleared" into its alarm states::

    unacknowledged --acknowledge--> acknowledged --decide--> resolved
          |   \\--return_to_normal--> rtn_unacknowledged --acknowledge--> resolved
          |--shelve(reason, for)--> shelved --unshelve (manual or at the end of the
          |                                  shelve time)--> unacknowledged
          |--re_escalate (response deadline passed, not acknowledged)--> itself,
          |                                  priority raised by one
          \\--final_deadline (no decision)--> resolved, with the safe default applied

:data:`TRANSITIONS` maps ``(state, event) -> next state``; a pair missing
from it is illegal and :func:`step` raises :class:`IllegalAlarmTransition`
naming the event, the state and the escalation.  Timers are explicit
inputs: :func:`due` says which timer event is due for a record at ``now``
and :func:`next_due_at` when the next one falls — this module never reads a
clock.  Every mutation returns the (frozen) record's successor; the caller
stores it and writes the audit entry.

Flood grouping: related escalations (same cause, same resource) share a
``group`` key; :class:`FloodWindow` counts arrivals in a sliding window and
says when there are more than the flood rule allows.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any

from security.errors import AutocellError

OPEN_STATES = ("unacknowledged", "acknowledged", "shelved", "rtn_unacknowledged")
STATES = (*OPEN_STATES, "resolved")

TRANSITIONS: dict[tuple[str, str], str] = {
    ("unacknowledged", "acknowledge"): "acknowledged",
    ("unacknowledged", "return_to_normal"): "rtn_unacknowledged",
    ("unacknowledged", "shelve"): "shelved",
    ("unacknowledged", "re_escalate"): "unacknowledged",
    ("unacknowledged", "decide"): "resolved",
    ("unacknowledged", "final_deadline"): "resolved",
    ("acknowledged", "return_to_normal"): "resolved",
    ("acknowledged", "shelve"): "shelved",
    ("acknowledged", "decide"): "resolved",
    ("acknowledged", "final_deadline"): "resolved",
    ("rtn_unacknowledged", "acknowledge"): "resolved",
    ("rtn_unacknowledged", "final_deadline"): "resolved",
    ("shelved", "unshelve"): "unacknowledged",
    ("shelved", "return_to_normal"): "resolved",
    ("shelved", "decide"): "resolved",
    ("shelved", "final_deadline"): "resolved",
}

#: the order in which :meth:`EscalationStore.list` shows states (most pressing first)
STATE_RANK = {"unacknowledged": 0, "rtn_unacknowledged": 1, "acknowledged": 2, "shelved": 3,
              "resolved": 4}

SAFE_DEFAULT_USER = "(safe default)"
"""The ``user`` of a decision the console took because nobody decided in time."""


class EscalationError(AutocellError):
    """A request the life cycle refuses: bad input from a person or a peer, never a crash
    (exit code 2 at the CLI)."""


class IllegalAlarmTransition(EscalationError):
    """An event the life-cycle table does not allow in the escalation's current state."""

    def __init__(self, event: str, state: str, escalation: str = "") -> None:
        self.event, self.state, self.escalation = event, state, escalation
        where = f" of escalation {escalation!r}" if escalation else ""
        super().__init__(f"illegal transition: {event!r} in state {state!r}{where}")


class ShelveRefused(EscalationError):
    """Shelving needs a reason and a duration within the policy's maximum."""


class UnknownOption(EscalationError):
    """A decision names an option the escalation does not offer."""


def step(state: str, event: str, escalation: str = "") -> str:
    nxt = TRANSITIONS.get((state, event))
    if nxt is None:
        raise IllegalAlarmTransition(event, state, escalation)
    return nxt


@dataclass(frozen=True, slots=True)
class Deadlines:
    """The life-cycle timing of the policy (``escalation:`` in the cell config), seconds."""

    response_s: float = 120.0
    reescalate_every_s: float = 120.0
    final_s: float = 600.0
    max_shelve_s: float = 3600.0


@dataclass(frozen=True, slots=True)
class Option:
    """One response the agents computed, with its predicted effect."""

    id: str            # wait_for_repair | reroute | split | cancel | retry | keep_in_service | ...
    label: str
    effect: str        # predicted effect in words ("finishes at 1830 s, 230 s late")

    def to_wire(self) -> dict[str, str]:
        return {"id": self.id, "label": self.label, "effect": self.effect}


@dataclass(frozen=True, slots=True)
class Record:
    """An escalation as the console keeps it."""

    id: str
    priority: int                 # 1 = highest
    cause: str
    consequence: str
    raised_by: str                # the agent that raised it (the decision goes back there)
    raised_at: float
    options: tuple[Option, ...]
    safe_default: str             # the id of one option
    order: str = ""
    resource: str = ""
    context: dict[str, Any] = field(default_factory=dict)
    state: str = "unacknowledged"
    initial_priority: int = 0
    response_deadline_at: float = 0.0   # acknowledge by then, or re-escalation
    final_deadline_at: float = 0.0      # decide by then, or the safe default
    escalations: int = 0                # re-escalations so far
    shelved_until_at: float = 0.0
    shelve_reason: str = ""
    acknowledged_by: str = ""
    outcome: str = ""             # decision | safe_default | return_to_normal
    decision: str = ""            # the chosen option id
    decided_by: str = ""
    decision_reason: str = ""
    resolved_at: float = 0.0
    group: str = ""               # cause/resource: related escalations share it

    @property
    def open(self) -> bool:
        return self.state != "resolved"

    def option(self, option_id: str) -> Option | None:
        return next((o for o in self.options if o.id == option_id), None)

    def to_json(self) -> dict[str, Any]:
        out = {f: getattr(self, f) for f in self.__dataclass_fields__}
        out["options"] = [o.to_wire() for o in self.options]
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Record:
        data = dict(data)
        data["options"] = tuple(Option(**o) for o in data["options"])
        return cls(**data)


def group_key(cause: str, resource: str) -> str:
    return f"{cause}/{resource}" if resource else cause


def new_record(*, id: str, priority: int, cause: str, consequence: str, raised_by: str,
               now: float, options: list[Option], safe_default: str, deadlines: Deadlines,
               order: str = "", resource: str = "", context: dict[str, Any] | None = None,
               deadline_at: float = 0.0) -> Record:
    """A fresh, unacknowledged escalation; ``deadline_at`` (if the raiser gave one) can only
    bring the final deadline forward."""
    if safe_default and safe_default not in {o.id for o in options}:
        raise EscalationError(f"escalation {id!r}: safe default {safe_default!r} is not one of "
                          f"its options {[o.id for o in options]}")
    final_at = now + deadlines.final_s
    if deadline_at > now:
        final_at = min(final_at, deadline_at)
    return Record(id=id, priority=priority, initial_priority=priority, cause=cause,
                  consequence=consequence, raised_by=raised_by, raised_at=now,
                  options=tuple(options), safe_default=safe_default, order=order,
                  resource=resource, context=dict(context or {}),
                  response_deadline_at=min(now + deadlines.response_s, final_at),
                  final_deadline_at=final_at, group=group_key(cause, resource))


# -- human events ---------------------------------------------------------------------------

def acknowledge(rec: Record, user: str, now: float) -> Record:
    nxt = step(rec.state, "acknowledge", rec.id)
    if nxt == "resolved":
        return replace(rec, state=nxt, acknowledged_by=user, resolved_at=now,
                       outcome=rec.outcome or "return_to_normal")
    return replace(rec, state=nxt, acknowledged_by=user)


def shelve(rec: Record, user: str, reason: str, duration_s: float, now: float,
           deadlines: Deadlines) -> Record:
    if not reason.strip():
        raise ShelveRefused(f"shelving escalation {rec.id!r} needs a reason")
    if not 0 < duration_s <= deadlines.max_shelve_s:
        raise ShelveRefused(f"shelve time {duration_s:g} s for escalation {rec.id!r} must be "
                            f"above 0 and at most max_shelve_s ({deadlines.max_shelve_s:g} s)")
    nxt = step(rec.state, "shelve", rec.id)
    return replace(rec, state=nxt, shelved_until_at=now + duration_s, shelve_reason=reason)


def unshelve(rec: Record, now: float, deadlines: Deadlines) -> Record:
    """Back to unacknowledged, announced again with a fresh response deadline."""
    nxt = step(rec.state, "unshelve", rec.id)
    return replace(rec, state=nxt, shelved_until_at=0.0, shelve_reason="",
                   acknowledged_by="",
                   response_deadline_at=min(now + deadlines.response_s, rec.final_deadline_at))


def decide(rec: Record, user: str, option_id: str, reason: str, now: float) -> Record:
    if rec.option(option_id) is None:
        raise UnknownOption(f"escalation {rec.id!r} has no option {option_id!r}; its options: "
                          f"{', '.join(o.id for o in rec.options)}")
    nxt = step(rec.state, "decide", rec.id)
    return replace(rec, state=nxt, outcome="decision", decision=option_id, decided_by=user,
                   decision_reason=reason, resolved_at=now,
                   acknowledged_by=rec.acknowledged_by or user)


# -- condition and timers ------------------------------------------------------------------------

def return_to_normal(rec: Record, now: float) -> Record:
    nxt = step(rec.state, "return_to_normal", rec.id)
    if nxt == "resolved":
        return replace(rec, state=nxt, outcome="return_to_normal", resolved_at=now)
    return replace(rec, state=nxt, outcome="return_to_normal")


def re_escalate(rec: Record, now: float, deadlines: Deadlines) -> Record:
    nxt = step(rec.state, "re_escalate", rec.id)
    return replace(rec, state=nxt, priority=max(1, rec.priority - 1),
                   escalations=rec.escalations + 1,
                   response_deadline_at=min(now + deadlines.reescalate_every_s,
                                            rec.final_deadline_at))


def apply_safe_default(rec: Record, now: float) -> Record:
    """The final deadline passed with no decision: the safe default applies (recorded)."""
    nxt = step(rec.state, "final_deadline", rec.id)
    if rec.state == "rtn_unacknowledged":     # nothing to decide any more
        return replace(rec, state=nxt, resolved_at=now)
    return replace(rec, state=nxt, outcome="safe_default", decision=rec.safe_default,
                   decided_by=SAFE_DEFAULT_USER,
                   decision_reason="final deadline passed with no decision", resolved_at=now)


TIMER_EVENTS = ("final_deadline", "unshelve", "re_escalate")


def due(rec: Record, now: float) -> str | None:
    """The timer event due for ``rec`` at ``now`` (the most decisive first), or None."""
    if not rec.open:
        return None
    if now >= rec.final_deadline_at:
        return "final_deadline"
    if rec.state == "shelved" and now >= rec.shelved_until_at:
        return "unshelve"
    if rec.state == "unacknowledged" and now >= rec.response_deadline_at:
        return "re_escalate"
    return None


def next_due_at(rec: Record) -> float | None:
    """When :func:`due` next returns an event for ``rec`` (None once resolved)."""
    if not rec.open:
        return None
    at = rec.final_deadline_at
    if rec.state == "shelved":
        at = min(at, rec.shelved_until_at)
    if rec.state == "unacknowledged":
        at = min(at, rec.response_deadline_at)
    return at


def on_timer(rec: Record, now: float, deadlines: Deadlines) -> tuple[Record, str | None]:
    """Apply the timer event due at ``now``, if any: (new record, event or None)."""
    event = due(rec, now)
    if event == "final_deadline":
        return apply_safe_default(rec, now), event
    if event == "unshelve":
        return unshelve(rec, now, deadlines), event
    if event == "re_escalate":
        return re_escalate(rec, now, deadlines), event
    return rec, None


class FloodWindow:
    """Arrival times of escalations in a sliding window: a flood is more than ``count``."""

    def __init__(self, count: int = 10, window_s: float = 600.0) -> None:
        self.count, self.window_s = count, window_s
        self._at: deque[float] = deque()

    def arrive(self, now: float) -> bool:
        """Count one arrival; True while the window holds a flood."""
        self._at.append(now)
        return self.flooded(now)

    def flooded(self, now: float) -> bool:
        while self._at and self._at[0] <= now - self.window_s:
            self._at.popleft()
        return len(self._at) > self.count
