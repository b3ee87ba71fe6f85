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

**The link to the cell** (:func:`link_status`): the page must never reassure
when nobody is watching the cell.  The running cell writes a heartbeat into
the store (cell time, the wall time it was written, the speed, the interval;
``EscalationStore.heartbeat``); the link is *live* while the last one is at
most ``STALE_INTERVALS`` intervals old (and never less than
``MIN_STALE_S``), and otherwise *lost* since that heartbeat.  Before any
store exists, before any heartbeat, or once the run has said it ended, the
link is not live either, each with its own words and "since when".  Only a
live link lets the list say "Nothing needs you".  The heartbeat also maps
the cell clock to a date and time: ``wall = wall_at + (t - cell_at) / speed``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from markupsafe import Markup, escape

from ops.console.backend import ACTIVE_STATES, STATES, UNACKNOWLEDGED_STATES, fact
from ops.console.wording import cell_times, describe, equipment

__all__ = ["FLOOD_COUNT", "FLOOD_WINDOW_S", "MIN_STALE_S", "STALE_INTERVALS", "EscalationView",
           "Group", "Link", "TimelineEntry", "audit_field", "clock_time", "flood", "group_list",
           "link_status", "timeline", "view", "when"]

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
    title: str = ""                      # words for a supervisor (ops/console/wording.py)
    sentence: str = ""
    facts: tuple[str, ...] = ()          # the raiser's context facts, readable
    escalations: int = 0                 # re-escalations so far (nobody acknowledged in time)
    initial_priority: int = 0
    shelved_until_at: float = 0.0
    acknowledged_by: str = ""
    outcome: str = ""

    @property
    def reescalated(self) -> bool:
        return self.escalations > 0

    @property
    def decision_label(self) -> str:
        return next((o["label"] for o in self.options if o["id"] == self.decision),
                    self.decision)

    @property
    def resource_name(self) -> str:
        return equipment(self.resource)

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


def wall_text(link: Link, text: str) -> str:
    """``text`` with the cell times the agents wrote in it as wall-clock times, by the
    heartbeat (unchanged while no heartbeat maps them)."""
    return cell_times(text, lambda t: clock_time(link.wall_of(t)) if link.known else None)


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
    order = str(_field(obj, "order", "") or context.get("order", "") or "")
    consequence = str(_field(obj, "consequence", ""))
    title, sentence = describe(cause, consequence, order, resource, context)
    facts = tuple(str(f) for f in (context.get("facts") or ())) or tuple(
        fact(k, v) for k, v in sorted(context.items())
        if k not in ("recent_events", "order", "resource", "facts"))
    try:
        initial = int(_field(obj, "initial_priority", 0) or priority)
        escalations = int(_field(obj, "escalations", 0) or 0)
    except (TypeError, ValueError):
        initial, escalations = priority, 0
    return EscalationView(
        title=title, sentence=sentence, facts=facts, escalations=escalations,
        initial_priority=initial,
        shelved_until_at=float(_field(obj, "shelved_until_at", 0.0) or 0.0),
        acknowledged_by=str(_field(obj, "acknowledged_by", "")),
        outcome=str(_field(obj, "outcome", "")),
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


STALE_INTERVALS = 5
MIN_STALE_S = 3.0


@dataclass(frozen=True)
class Link:
    """What the console knows of the running cell (see the module docstring)."""

    state: str              # live | no_store | never | lost | ended | damaged | unknown
    since_at: float = 0.0   # wall time since when the link is not live (0: not known)
    cell_at: float = 0.0    # the last heartbeat: cell time ...
    wall_at: float = 0.0    # ... written at this wall time
    speed: float = 1.0
    where: str = ""         # the store's file, for the words

    @property
    def live(self) -> bool:
        return self.state == "live"

    @property
    def known(self) -> bool:
        """A heartbeat to map cell time by."""
        return self.wall_at > 0

    def wall_of(self, cell_t: float) -> float:
        """The wall time of cell time ``cell_t`` (by the last heartbeat)."""
        return self.wall_at + (cell_t - self.cell_at) / (self.speed or 1.0)

    @property
    def headline(self) -> str:
        since = f" since {clock_time(self.since_at)}" if self.since_at else ""
        return {"no_store": f"No cell connected{since}",
                "never": f"No cell has reported in{since}",
                "lost": f"Communication with the cell lost{since}",
                "ended": "The run has ended" + (f" (at {clock_time(self.since_at)})"
                                                if self.since_at else ""),
                "damaged": f"The escalation store {self.where} is damaged",
                }.get(self.state, "")

    @property
    def advice(self) -> str:
        return {
            "no_store": f"There is no escalation store at {self.where} yet: start the cell "
                        "(autocell up, or autocell run --escalations-db). Escalations will "
                        "appear here when it runs.",
            "never": "The escalation store exists but no running cell writes to it. Start the "
                     "cell; until then nothing here is current.",
            "lost": "The cell has not reported in since then. What you see may be out of "
                    "date, and new escalations cannot reach you. Check that the cell is "
                    "running.",
            "ended": "Nothing here changes any more. Decisions taken now reach no agent.",
            "damaged": "It cannot be read: what you see is not current. Stop the cell, move "
                       "the file aside and restore it from a backup.",
        }.get(self.state, "")


def link_status(liveness: Mapping[str, float] | None, wall_now: float, started_at: float,
                where: str = "") -> Link:
    """The link from the store's heartbeat (``None``: no store; ``{}``: no heartbeat yet)."""
    if liveness is None:
        return Link("no_store", started_at, where=where)
    wall_at = float(liveness.get("wall_at", 0.0))
    cell_at = float(liveness.get("cell_at", 0.0))
    speed = float(liveness.get("speed", 1.0)) or 1.0
    if "stopped_wall_at" in liveness:
        return Link("ended", float(liveness["stopped_wall_at"]), cell_at, wall_at, speed, where)
    if not wall_at:
        return Link("never", started_at, where=where)
    stale_s = max(MIN_STALE_S, STALE_INTERVALS * float(liveness.get("every_s", 1.0)))
    if wall_now - wall_at > stale_s:
        return Link("lost", wall_at, cell_at, wall_at, speed, where)
    return Link("live", 0.0, cell_at, wall_at, speed, where)


def clock_time(wall_at: float, *, date: bool = False) -> str:
    """A wall time as the control room reads it: ``14:03:07`` (local time), with the date
    when asked or when it is not today."""
    t = datetime.fromtimestamp(wall_at)
    if date or t.date() != datetime.now().date():
        return t.strftime("%Y-%m-%d %H:%M:%S")
    return t.strftime("%H:%M:%S")


def when(link: Link, cell_t: float, wall_at: float | None = None) -> Markup:
    """A time as the page shows it: the wall-clock time (``wall_at`` when recorded, else the
    cell time mapped by the heartbeat), with the cell seconds on hover."""
    cell = f"cell time {cell_t:.1f} s"
    if wall_at is None and link.known:
        wall_at = link.wall_of(cell_t)
    if wall_at is None or wall_at <= 0:
        return Markup(f'<time title="{escape(cell)}">{cell_t:.0f} s (cell)</time>')
    iso = datetime.fromtimestamp(wall_at).isoformat(timespec="seconds")
    return Markup(f'<time datetime="{iso}" title="{escape(cell)}">'
                  f"{escape(clock_time(wall_at))}</time>")


_ACTION_WORDS = {
    "raise": "raised",
    "acknowledge": "acknowledged",
    "shelve": "shelved",
    "unshelve": "shelve time over: back in the list",
    "re_escalate": "nobody acknowledged in time: re-escalated",
    "final_deadline": "deadline passed",
    "safe_default": "deadline passed: safe default applied",
    "return_to_normal": "the agents solved it themselves",
    "decide": "decided",
}


@dataclass(frozen=True)
class TimelineEntry:
    cell_at: float
    wall_at: float | None
    who: str
    text: str


def timeline(entries: Iterable[Any], e: EscalationView) -> list[TimelineEntry]:
    """The escalation's audit entries as a short timeline of sentences."""
    out: list[TimelineEntry] = []
    for a in entries:
        details = _field(a, "details", {})
        details = details if isinstance(details, Mapping) else {}
        action = audit_field(a, "action")
        who = audit_field(a, "user")
        who = ("the console" if who in ("console", "system") else
               equipment(who.removeprefix("agent:")) if who.startswith("agent:") else who)
        text = _ACTION_WORDS.get(action, action.replace("_", " "))
        if action == "raise" and details.get("priority"):
            text += f" as P{details['priority']}"
        elif action == "re_escalate" and details.get("priority"):
            text += f" to P{details['priority']}"
        elif action == "decide":
            option = audit_field(a, "detail")
            label = next((o["label"] for o in e.options if o["id"] == option), option)
            text += f": {label}"
        elif action == "final_deadline" and details.get("safe_default"):
            label = next((o["label"] for o in e.options if o["id"] == details["safe_default"]),
                         str(details["safe_default"]))
            text = f"deadline passed: safe default applied ({label})"
        elif action == "shelve" and details.get("duration_s"):
            text += f" for {float(details['duration_s']) / 60:g} min"
        reason = audit_field(a, "reason")
        if reason and action not in ("return_to_normal",):
            text += f" — “{reason}”"
        wall = details.get("wall_at", _field(a, "wall_at", None))
        at = _field(a, "at", 0.0)
        out.append(TimelineEntry(float(at) if isinstance(at, (int, float)) else 0.0,
                                 float(wall) if isinstance(wall, (int, float)) else None,
                                 who, text))
    return out
