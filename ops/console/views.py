"""What the screens show, computed from escalation objects: no HTTP here.

Escalations are read leniently (attributes or mapping keys, each with a
default) so any store that has the documented fields can be shown; the
escalation core's names are understood too (``raised_at`` for
``created_at``, ``final_deadline_at`` — when the safe default applies — for
``deadline_at``, audit ``actor``/``details`` for ``user``/``reason``).  The list
screen is sorted by *open first*, then priority (1 first), then state
(unacknowledged before acknowledged before shelved), then age (oldest first);
related escalations — same ``group``, else same cause and resource — form one
card headed by their most urgent member.  A flood is more than
``FLOOD_COUNT`` escalations created within ``FLOOD_WINDOW_S`` before now.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ops.console.backend import ACTIVE_STATES, STATES, UNACKNOWLEDGED_STATES

__all__ = ["FLOOD_COUNT", "FLOOD_WINDOW_S", "EscalationView", "Group", "audit_field", "flood",
           "group_list", "view"]

FLOOD_COUNT = 10
FLOOD_WINDOW_S = 600.0
PRIORITY_LABELS = {1: "P1 critical", 2: "P2 high", 3: "P3 medium", 4: "P4 low"}
STATE_LABELS = {"rtn_unacknowledged": "back to normal, unacknowledged"}


def _field(obj: Any, name: str, default: Any) -> Any:
    if isinstance(obj, Mapping):
        value = obj.get(name, default)
    else:
        value = getattr(obj, name, default)
    return default if value is None else value


@dataclass(frozen=True)
class EscalationView:
    id: str
    priority: int
    state: str
    cause: str
    consequence: str
    order: str
    resource: str
    recent_events: tuple[str, ...]
    options: tuple[dict[str, str], ...]
    safe_default: str
    deadline_at: float
    created_at: float
    group: str
    decided_by: str
    decision: str

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    @property
    def priority_label(self) -> str:
        return PRIORITY_LABELS.get(self.priority, f"P{self.priority}")

    @property
    def state_label(self) -> str:
        return STATE_LABELS.get(self.state, self.state.replace("_", " "))

    @property
    def unacknowledged(self) -> bool:
        return self.state in UNACKNOWLEDGED_STATES

    @property
    def safe_default_label(self) -> str:
        return next((o["label"] for o in self.options if o["id"] == self.safe_default),
                    self.safe_default)

    def sort_key(self) -> tuple[int, int, int, float, str]:
        rank = STATES.index(self.state) if self.state in STATES else len(STATES)
        return (0 if self.active else 1, self.priority, rank, self.created_at, self.id)


def _event_text(e: Any) -> str:
    if isinstance(e, Mapping):
        at = e.get("at")
        text = e.get("text") or e.get("event") or e.get("kind") or ", ".join(
            f"{k}={v}" for k, v in e.items() if k != "at")
        return f"t={at:g} s: {text}" if isinstance(at, (int, float)) else str(text)
    return str(e)


def view(obj: Any) -> EscalationView:
    """One escalation as the screens need it, whatever object the store returns."""
    context = _field(obj, "context", {}) or {}
    if not isinstance(context, Mapping):
        context = {}
    options = tuple({"id": str(_field(o, "id", "")), "label": str(_field(o, "label", "")) or
                     str(_field(o, "id", "")), "effect": str(_field(o, "effect", ""))}
                    for o in (_field(obj, "options", ()) or ()))
    cause = str(_field(obj, "cause", ""))
    resource = str(_field(obj, "resource", "") or context.get("resource", "") or "")
    try:
        priority = int(_field(obj, "priority", 4))
    except (TypeError, ValueError):
        priority = 4
    return EscalationView(
        id=str(_field(obj, "id", "") or _field(obj, "escalation", "")),
        priority=priority,
        state=str(_field(obj, "state", "unacknowledged")),
        cause=cause,
        consequence=str(_field(obj, "consequence", "")),
        order=str(_field(obj, "order", "") or context.get("order", "") or ""),
        resource=resource,
        recent_events=tuple(_event_text(e) for e in (context.get("recent_events") or ())),
        options=options,
        safe_default=str(_field(obj, "safe_default", "")),
        deadline_at=float(_field(obj, "deadline_at", 0.0) or _field(obj, "final_deadline_at", 0.0)),
        created_at=float(_field(obj, "created_at", 0.0) or _field(obj, "raised_at", 0.0)),
        group=str(_field(obj, "group", "")) or f"{cause}/{resource}",
        decided_by=str(_field(obj, "decided_by", "")),
        decision=str(_field(obj, "decision", "")),
    )


@dataclass(frozen=True)
class Group:
    """Related escalations; ``head`` is the most urgent, ``others`` the rest in order."""

    key: str
    head: EscalationView
    others: tuple[EscalationView, ...]

    @property
    def size(self) -> int:
        return 1 + len(self.others)


def group_list(items: Iterable[Any]) -> list[Group]:
    """Escalations grouped and sorted for the list screen."""
    views = sorted((view(i) for i in items), key=EscalationView.sort_key)
    groups: dict[tuple[bool, str], list[EscalationView]] = {}
    for v in views:
        # open and closed members of one group are shown apart
        groups.setdefault((v.active, v.group), []).append(v)
    ordered = sorted(groups.items(), key=lambda kv: kv[1][0].sort_key())
    return [Group(key, members[0], tuple(members[1:])) for (_, key), members in ordered]


def flood(items: Iterable[Any], now: float) -> int:
    """How many escalations arrived in the flood window, when more than FLOOD_COUNT; else 0."""
    n = sum(1 for i in items if now - FLOOD_WINDOW_S <= view(i).created_at <= now)
    return n if n > FLOOD_COUNT else 0


def countdown(seconds: float) -> str:
    """``m:ss`` (or ``h:mm:ss``) until a deadline; ``overdue`` once it has passed."""
    if seconds <= 0:
        return "overdue"
    s = int(seconds)
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def audit_field(entry: Any, name: str) -> str:
    """``user``, ``action``, ``reason``, ``detail`` of an audit entry, whatever its shape."""
    details = _field(entry, "details", {})
    details = details if isinstance(details, Mapping) else {}
    if name == "user":
        return str(_field(entry, "user", "") or _field(entry, "actor", ""))
    if name == "reason":
        return str(_field(entry, "reason", "") or details.get("reason", ""))
    if name == "detail":
        return str(_field(entry, "detail", "") or details.get("option", ""))
    return str(_field(entry, name, ""))
