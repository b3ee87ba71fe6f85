"""The alarm journal: every escalation and every action on it, filtered, and as CSV.

ISA-18.2 / EEMUA 191 ask for a journal a supervisor can search after the
fact ("who shelved the lathe alarms last night, and why?").  The audit log
already holds every action; a journal row is one audit entry with the facts
of its escalation (priority, state, cause, resource) beside it, so filtering
on those facts selects the escalation's whole history.  Times are wall-clock
times (the action's own ``wall_at`` where recorded, else the cell time mapped
by the cell's heartbeat), with the cell seconds kept in their own column.

No HTTP here: :func:`rows` filters, :func:`to_csv` exports; the app serves
``/journal`` and ``/journal.csv`` with the same query parameters.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from ops.console.views import EscalationView, Link, audit_field, timeline, view

__all__ = ["Filters", "JournalRow", "rows", "to_csv"]


@dataclass(frozen=True)
class Filters:
    """What the journal form asks for; empty means "any"."""

    text: str = ""
    priority: str = ""        # "1".."4"
    state: str = ""
    cause: str = ""
    resource: str = ""        # resource, order or area: any of them matches
    since: str = ""           # datetime-local ("2026-12-03T10:30"), local time
    until: str = ""

    @classmethod
    def of(cls, query: Mapping[str, str]) -> Filters:
        return cls(**{k: str(query.get(k, "")).strip() for k in cls.__dataclass_fields__})

    def bounds(self) -> tuple[float | None, float | None]:
        return _parse(self.since), _parse(self.until)


def _parse(text: str) -> float | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


@dataclass(frozen=True)
class JournalRow:
    wall_at: float | None
    cell_at: float
    escalation: str
    priority: int
    state: str
    cause: str
    title: str
    resource: str
    order: str
    action: str
    who: str
    text: str


def rows(items: Iterable[object], audit: Iterable[object], link: Link,
         filters: Filters) -> list[JournalRow]:
    """Journal rows, newest first, that pass ``filters``."""
    views: dict[str, EscalationView] = {v.id: v for v in map(view, items)}
    since, until = filters.bounds()
    needle = filters.text.lower()
    out: list[JournalRow] = []
    for entry in audit:
        e = views.get(audit_field(entry, "escalation"))
        if e is None or not _matches(e, filters):
            continue
        [t] = timeline([entry], e)
        wall = t.wall_at if t.wall_at is not None else (
            link.wall_of(t.cell_at) if link.known else None)
        if since is not None and (wall is None or wall < since):
            continue
        if until is not None and (wall is None or wall > until):
            continue
        row = JournalRow(wall, t.cell_at, e.id, e.priority, e.state, e.cause, e.title,
                         e.resource, e.order, audit_field(entry, "action"), t.who, t.text)
        if needle and needle not in " ".join(
                map(str, (e.id, e.title, e.sentence, e.cause, e.resource, e.order, t.who,
                          t.text))).lower():
            continue
        out.append(row)
    out.reverse()
    return out


def _matches(e: EscalationView, f: Filters) -> bool:
    if f.priority and str(e.priority) != f.priority:
        return False
    if f.state and e.state != f.state:
        return False
    if f.cause and f.cause not in (e.cause, e.title):
        return False
    return not f.resource or f.resource.lower() in (
        e.resource.lower(), e.order.lower(), e.resource_name.lower(), e.group.lower())


COLUMNS = ("time", "cell_time_s", "escalation", "priority", "state", "cause", "title",
           "resource", "order", "action", "who", "what")


def to_csv(journal: Iterable[JournalRow]) -> str:
    """The rows as CSV (ISO local times, cell seconds, identifiers and words)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(COLUMNS)
    for r in journal:
        when = datetime.fromtimestamp(r.wall_at).isoformat(timespec="seconds") \
            if r.wall_at else ""
        w.writerow([when, f"{r.cell_at:.3f}", *map(_no_formula, (
            r.escalation, str(r.priority), r.state, r.cause, r.title, r.resource, r.order,
            r.action, r.who, r.text))])
    return buf.getvalue()


def _no_formula(text: str) -> str:
    """A cell starting with = + - @ is a formula to a spreadsheet: quote it (CSV injection —
    reasons are typed by people, causes come from peers)."""
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text
