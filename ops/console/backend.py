"""The console's port to the escalation store, and an in-memory twin of it.

The web console never touches escalation tables or the bus itself: it calls
an :class:`EscalationBackend` — ``list``, ``get``, ``acknowledge``,
``shelve``, ``decide``, ``audit`` — and learns of changes through
``subscribe``.  The real backend is the escalation store of
``agents.escalation`` (SQLite, hash-chained audit, the console agent on the
bus); :class:`InMemoryBackend` is its twin for unit tests and for
``autocell console --demo``.

Escalation objects are read leniently (``getattr`` with defaults, see
:mod:`ops.console.views`) so that any object with the documented attributes
works: ``id, priority (1 = highest .. 4), state, cause, consequence, context
{order, resource, recent_events}, options [{id, label, effect}],
safe_default, deadline_at, created_at, group, decided_by``.

Errors: a backend raises :class:`EscalationNotFound` for an id it does not
know and :class:`IllegalAction` for an action the life cycle forbids in the
current state.  The console maps those — and any ``KeyError``/``ValueError``
or :class:`~security.errors.AutocellError` of a foreign backend — to a
message on the page (404/409), never to a traceback.
"""

from __future__ import annotations

import builtins
import itertools
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, runtime_checkable

from security.errors import AutocellError

__all__ = [
    "ACTIVE_STATES",
    "STATES",
    "UNACKNOWLEDGED_STATES",
    "EscalationBackend",
    "FakeEscalation",
    "fact",
    "IllegalAction",
    "InMemoryBackend",
    "EscalationNotFound",
    "demo_backend",
]

#: Life-cycle states in the order the list shows them.  ``rtn_unacknowledged``: the
#: condition returned to normal before anyone acknowledged (it still wants a look).
STATES: tuple[str, ...] = ("unacknowledged", "rtn_unacknowledged", "acknowledged", "shelved",
                           "returned", "resolved")
ACTIVE_STATES: frozenset[str] = frozenset({"unacknowledged", "rtn_unacknowledged",
                                           "acknowledged", "shelved"})
UNACKNOWLEDGED_STATES: frozenset[str] = frozenset({"unacknowledged", "rtn_unacknowledged"})

Listener = Callable[[str | None], None]


class EscalationNotFound(AutocellError, KeyError):
    """No escalation with this id."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown escalation"


class IllegalAction(AutocellError):
    """The life cycle forbids this action in the escalation's current state."""


@runtime_checkable
class EscalationBackend(Protocol):
    """What the console needs from the escalation store.

    ``now`` is the time base of ``deadline_at``/``created_at`` (cell time for
    a running cell).  ``subscribe(listener)`` calls ``listener(escalation_id)``
    after every change, from any thread, and returns a function that removes
    the listener.
    """

    def list(self) -> list[Any]: ...
    def get(self, escalation_id: str) -> Any: ...
    def acknowledge(self, escalation_id: str, user: str, now: float) -> Any: ...
    def shelve(self, escalation_id: str, user: str, reason: str, duration_s: float,
               now: float) -> Any: ...
    def decide(self, escalation_id: str, user: str, option_id: str, reason: str,
               now: float) -> Any: ...
    def audit(self) -> builtins.list[Any]: ...
    def subscribe(self, listener: Listener) -> Callable[[], None]: ...


@dataclass(frozen=True)
class FakeEscalation:
    id: str
    priority: int
    cause: str
    consequence: str
    options: tuple[dict[str, str], ...]
    safe_default: str
    deadline_at: float
    created_at: float
    context: dict[str, Any] = field(default_factory=dict)
    group: str = ""
    state: str = "unacknowledged"
    decided_by: str = ""
    decision: str = ""
    shelved_until_at: float = 0.0


class InMemoryBackend:
    """A small, thread-safe twin of the escalation store.

    It follows the life cycle just enough for the console: acknowledge from
    ``unacknowledged``; shelve (reason required, at most ``max_shelve_s``)
    from ``unacknowledged``/``acknowledged``; decide from any active state,
    naming an offered option; :meth:`tick` unshelves when the shelve time is
    over and applies the safe default at the deadline (recorded as decided by
    ``"system"``).  Every change goes to the audit list and the listeners.
    """

    def __init__(self, *, max_shelve_s: float = 3600.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.max_shelve_s = max_shelve_s
        self.now = clock
        self._items: dict[str, FakeEscalation] = {}
        self._audit: list[dict[str, Any]] = []
        self._listeners: list[Listener] = []
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        #: The cell's heartbeat as tests and the demo set it: None = beating now (the
        #: in-memory cell is as alive as this process); a wall time = the last beat then.
        self.heartbeat_at: float | None = None
        self.stopped_at: float | None = None   # the run ended then

    # -- feeding (what the console agent does when an `escalate` arrives) --------------

    def raise_escalation(self, *, priority: int, cause: str, consequence: str,
                         options: Iterable[dict[str, str]], safe_default: str,
                         deadline_at: float, context: dict[str, Any] | None = None,
                         group: str = "", escalation_id: str | None = None,
                         created_at: float | None = None) -> FakeEscalation:
        with self._lock:
            eid = escalation_id or f"esc-{next(self._ids):04d}"
            ctx = context or {}
            e = FakeEscalation(
                id=eid, priority=priority, cause=cause, consequence=consequence,
                options=tuple(dict(o) for o in options), safe_default=safe_default,
                deadline_at=deadline_at,
                created_at=self.now() if created_at is None else created_at, context=ctx,
                group=group or f"{cause}/{ctx.get('resource', '')}")
            self._items[eid] = e
            self._record(eid, "system", "raised", f"priority {priority}: {cause}")
        self._notify(eid)
        return e

    # -- the port -----------------------------------------------------------------------

    def list(self) -> list[FakeEscalation]:
        with self._lock:
            return list(self._items.values())

    def get(self, escalation_id: str) -> FakeEscalation:
        with self._lock:
            return self._get(escalation_id)

    def acknowledge(self, escalation_id: str, user: str, now: float) -> FakeEscalation:
        return self._change(escalation_id, user, "acknowledge", "", {"unacknowledged"},
                            lambda e: replace(e, state="acknowledged"))

    def shelve(self, escalation_id: str, user: str, reason: str, duration_s: float,
               now: float) -> FakeEscalation:
        if not reason.strip():
            raise IllegalAction("a reason is required to shelve an escalation")
        if not 0 < duration_s <= self.max_shelve_s:
            raise IllegalAction(f"shelve time must be between 0 and {self.max_shelve_s:g} s, "
                                f"not {duration_s:g} s")
        return self._change(escalation_id, user, "shelve", reason,
                            {"unacknowledged", "acknowledged"},
                            lambda e: replace(e, state="shelved",
                                              shelved_until_at=now + duration_s))

    def decide(self, escalation_id: str, user: str, option_id: str, reason: str,
               now: float) -> FakeEscalation:
        with self._lock:
            e = self._get(escalation_id)
            if option_id not in {o.get("id") for o in e.options}:
                raise IllegalAction(f"escalation {escalation_id} offers no option {option_id!r}")
        return self._change(escalation_id, user, "decide", reason, ACTIVE_STATES,
                            lambda e: replace(e, state="resolved", decided_by=user,
                                              decision=option_id), detail=option_id)

    def liveness(self) -> dict[str, float]:
        """Like the store's heartbeat: here the cell clock is the wall clock."""
        at = self.now() if self.heartbeat_at is None else self.heartbeat_at
        out = {"cell_at": at, "wall_at": at, "speed": 1.0, "every_s": 1.0}
        if self.stopped_at is not None:
            out["stopped_wall_at"] = self.stopped_at
        return out

    def audit(self) -> builtins.list[dict[str, Any]]:
        with self._lock:
            return [dict(a) for a in self._audit]

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)
        return unsubscribe

    # -- timers -------------------------------------------------------------------------

    def tick(self, now: float) -> builtins.list[str]:
        """Unshelve what is due and apply safe defaults past the deadline; changed ids."""
        changed: list[str] = []
        with self._lock:
            for e in list(self._items.values()):
                if e.state == "shelved" and now >= e.shelved_until_at:
                    self._items[e.id] = replace(e, state="unacknowledged", shelved_until_at=0.0)
                    self._record(e.id, "system", "unshelve", "shelve time over")
                    changed.append(e.id)
                elif e.state in ACTIVE_STATES and e.deadline_at and now >= e.deadline_at:
                    self._items[e.id] = replace(e, state="resolved", decided_by="system",
                                                decision=e.safe_default)
                    self._record(e.id, "system", "safe_default",
                                 f"deadline passed; applied {e.safe_default}")
                    changed.append(e.id)
        for eid in changed:
            self._notify(eid)
        return changed

    # -- inside -------------------------------------------------------------------------

    def _get(self, escalation_id: str) -> FakeEscalation:
        try:
            return self._items[escalation_id]
        except KeyError:
            raise EscalationNotFound(f"no escalation {escalation_id!r}") from None

    def _change(self, escalation_id: str, user: str, action: str, reason: str,
                allowed: Iterable[str], update: Callable[[FakeEscalation], FakeEscalation],
                detail: str = "") -> FakeEscalation:
        with self._lock:
            e = self._get(escalation_id)
            if e.state not in allowed:
                raise IllegalAction(f"cannot {action} escalation {escalation_id}: it is {e.state}")
            new = update(e)
            self._items[escalation_id] = new
            self._record(escalation_id, user, action, reason, detail)
        self._notify(escalation_id)
        return new

    def _record(self, eid: str, user: str, action: str, reason: str, detail: str = "") -> None:
        self._audit.append({"at": self.now(), "escalation": eid, "user": user,
                            "action": action, "reason": reason, "detail": detail})

    def _notify(self, eid: str | None) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            listener(eid)


def demo_backend(clock: Callable[[], float] = time.time) -> InMemoryBackend:
    """A backend seeded with a few realistic cases, for ``autocell console --demo``."""
    b = InMemoryBackend(clock=clock)
    now = clock()
    wait, reroute = "wait_for_repair", "reroute"
    b.raise_escalation(
        priority=1, cause="no live resource can perform an operation",
        consequence="order o-117 (bracket, 40 pcs) stops at op 3 'mill'; due in 52 min",
        options=[{"id": wait, "label": "Wait for repair", "effect": "ETA 18 min; order 9 min late"},
                 {"id": "split", "label": "Split the order", "effect": "20 pcs on time, 20 pcs +35 min"},
                 {"id": "cancel", "label": "Cancel the order", "effect": "frees 2 h of capacity"}],
        safe_default=wait, deadline_at=now + 600,
        context={"order": "o-117", "resource": "mill-1",
                 "recent_events": ["mill-1 fault: spindle overload", "mill-2 offline (maintenance)",
                                   "o-117 cfp op 3: no proposals"]})
    b.raise_escalation(
        priority=2, cause="re-routing would make an order late",
        consequence="order o-121 finishes 14 min after its due date on the best alternative",
        options=[{"id": reroute, "label": "Re-route to lathe-2", "effect": "+14 min late, +€38"},
                 {"id": wait, "label": "Wait for repair", "effect": "ETA 25 min; +21 min late"},
                 {"id": "retry", "label": "Retry on lathe-1", "effect": "after reset, risk of repeat"}],
        safe_default=reroute, deadline_at=now + 900,
        context={"order": "o-121", "resource": "lathe-1",
                 "recent_events": ["lathe-1 fault: tool breakage", "o-121 re-route: 1 proposal"]})
    for k in range(3):
        b.raise_escalation(
            priority=2, cause="the same resource faults repeatedly",
            consequence=f"agv-2 faulted {3 + k} times within the hour; transports slow down",
            options=[{"id": "take_offline", "label": "Take agv-2 offline", "effect": "agv-1 carries all moves, +6% makespan"},
                     {"id": "retry", "label": "Keep agv-2 in service", "effect": "next fault likely within 20 min"}],
            safe_default="take_offline", deadline_at=now + 1200 + 60 * k,
            context={"order": "", "resource": "agv-2",
                     "recent_events": [f"agv-2 fault #{3 + k}: bumper triggered"]},
            group="repeat_faults/agv-2")
    b.raise_escalation(
        priority=3, cause="a quality reject",
        consequence="part 4 of order o-109 failed inspection at cmm-1",
        options=[{"id": "retry", "label": "Rework the part", "effect": "+12 min on grind-1"},
                 {"id": "scrap", "label": "Scrap and reorder", "effect": "+1 part, +31 min"}],
        safe_default="scrap", deadline_at=now + 1800,
        context={"order": "o-109", "resource": "cmm-1",
                 "recent_events": ["cmm-1 quality_result: scrap (bore 0.04 mm oversize)"]})
    b.raise_escalation(
        priority=1, cause="a burst of rejected messages",
        consequence="27 forged or replayed envelopes in 60 s claiming to be mill-3",
        options=[{"id": "revoke", "label": "Revoke mill-3's certificate", "effect": "mill-3 stops until re-keyed"},
                 {"id": "ignore", "label": "Keep watching", "effect": "rejections continue to be dropped"}],
        safe_default="ignore", deadline_at=now + 300,
        context={"order": "", "resource": "mill-3",
                 "recent_events": ["rejected bad_signature from 'mill-3' x19",
                                   "rejected replay from 'mill-3' x8"]})
    return b


def fact(key: str, value: Any) -> str:
    """One context fact for people: ``key words: value`` (floats short, lists joined); an
    instant (a key ending ``_at``) reads ``detected at 1860.2 s``, which the page shows as a
    wall-clock time (ops/console/wording.py ``cell_times``)."""
    if key.endswith("_at") and isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{key[:-3].replace('_', ' ')} at {value:g} s"
    if isinstance(value, float):
        value = f"{value:g}"
    elif isinstance(value, (list, tuple)):
        value = ", ".join(map(str, value)) or "—"
    return f"{key.replace('_', ' ')}: {value}"
