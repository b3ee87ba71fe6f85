"""The technician crew agent: books technicians for maintenance windows, as leases.

Theory of operation
-------------------
A machine whose estimator sees its failure coming asks for a window
(``maint_request``: job, earliest start, latest safe start, duration).  The
crew books the technician free soonest at or after the earliest start — a
technician serves **one machine at a time**, so two bookings of one technician
never overlap — and answers ``maint_offer``: who, from when, and when the
booking ends *whatever happens* (``expires_at`` = start + duration + grace).
That is the lease: a machine that crashes or forgets its window never holds a
technician past ``expires_at``; the crew reclaims it on its ``expiry`` timer
(logged ``maint_reclaimed``).  At the start the crew sends ``maint_start`` (the
technician is at the machine) and the machine stops for the job; it answers
``maint_done`` when the job ended (or ``declined``/``lapsed`` when it did not
happen), which frees the technician early.

Requests, offers and releases may be lost, duplicated or reordered, so a
booking is keyed ``job#attempt``: a repeated request gets the same offer again,
and a machine's new request (a new job, or the next attempt of the same job)
replaces whatever it held before — one window per machine.  The crew's state is
rebuilt from its journal after a crash like any agent's; while it is down the
machines' windows lapse by themselves (docs/maintenance.md, PROTOCOL.md §7.5).

Corrective repairs (ADR 64).  A machine that failed asks with ``maint_repair``:
the crew books the technician who can come soonest, counting planned windows
not yet begun as free — corrective before preventive — and drops those it
overlaps (logged ``maint_released`` ``bumped``; their machines, never sent the
technician, let the window lapse and ask again).  A repair's length is drawn by
the plant, so the booking holds the technician for ``REPAIR_SPAN`` times the
mean the machine names (gamma with cv 0.5: 3x the mean is its 99.8 % quantile)
and ``maint_done`` frees it as soon as the repair is over.

Shifts.  A technician named in ``maintenance.shifts`` works only inside their
shifts (intervals of a repeating period, a week by default): a planned window
is booked wholly inside one shift, a repair starts inside one (the technician
finishes it).  A window that cannot start before the latest safe start is
offered late all the same, and the machine escalates ``maintenance_no_window``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from agents.base import Agent, Timing
from agents.protocol.actions import Action, Log, Send, SetTimer
from agents.protocol.messages import (
    MaintDone,
    MaintOffer,
    MaintRepair,
    MaintRequest,
    MaintStart,
    Message,
)

__all__ = ["CREW_ID", "REPAIR_SPAN", "Booking", "Roster", "Shifts", "TechnicianCrewAgent"]

#: The crew's agent id (and the certificate role ``maintenance``).
CREW_ID = "crew"

#: A repair is booked for this many times its mean length (the plant draws it).
REPAIR_SPAN = 3.0

#: One week: the default period of a shift table.
WEEK_S = 7 * 86400.0


@dataclass(frozen=True)
class Booking:
    """One technician booked for one machine's window."""

    key: str                # job#attempt
    machine: str
    job: str
    attempt: int
    technician: str
    start_at: float
    expires_at: float
    kind: str = "planned"   # or "corrective"


class Shifts:
    """When each technician is on duty: intervals ``[from_s, to_s)`` of a repeating
    ``period_s`` (an interval with ``to_s < from_s`` runs over the period's end); a
    technician without an entry is always on duty.  Pure."""

    def __init__(self, table: Mapping[str, Iterable[tuple[float, float]]] | None = None,
                 period_s: float = WEEK_S) -> None:
        self.period_s = period_s
        self.table: dict[str, list[tuple[float, float]]] = {}
        for tech, spans in (table or {}).items():
            out: list[tuple[float, float]] = []
            for a, b in spans:
                out += [(a, b)] if a < b else [(a, period_s), (0.0, b)]
            self.table[tech] = sorted(out)

    def on_duty_from(self, technician: str, at: float, need_s: float) -> float:
        """The earliest instant at or after ``at`` from which ``technician`` is on duty for
        ``need_s`` without a break (``inf`` if no shift is that long)."""
        spans = self.table.get(technician)
        if spans is None:
            return at
        p = self.period_s
        base = math.floor(at / p) * p
        merged: list[list[float]] = []   # this period and the next two, touching shifts joined
        for lo, hi in ((base + c * p + a, base + c * p + b) for c in range(3) for a, b in spans):
            if merged and lo <= merged[-1][1] + 1e-9:
                merged[-1][1] = max(merged[-1][1], hi)
            else:
                merged.append([lo, hi])
        for lo, hi in merged:
            s = max(at, lo)
            if s < hi and s + need_s <= hi + 1e-9:
                return s
        return math.inf


class Roster:
    """The bookings of a crew of named technicians; pure (no messages, no clock)."""

    def __init__(self, technicians: list[str], grace_s: float,
                 shifts: Shifts | None = None) -> None:
        if not technicians:
            raise ValueError("a crew needs at least one technician")
        self.technicians = list(technicians)
        self.grace_s = grace_s
        self.shifts = shifts or Shifts()
        self.bookings: dict[str, Booking] = {}
        self.started: set[str] = set()     # keys whose technician has been sent

    def of_machine(self, machine: str) -> list[Booking]:
        return [b for b in self.bookings.values() if b.machine == machine]

    def book(self, machine: str, job: str, attempt: int, earliest_at: float,
             duration_s: float, now: float,
             kind: str = "planned") -> tuple[Booking, list[Booking], list[Booking]]:
        """The booking for ``job#attempt`` (the same one for a repeated request), the
        machine's other bookings it replaces (one window per machine), and — for a
        corrective repair — the planned windows not yet begun that it bumps.  ``inf``
        as the start: no technician has a shift long enough."""
        key = f"{job}#{attempt}"
        held = self.bookings.get(key)
        if held is not None and held.machine == machine:
            return held, [], []
        dropped = [self.pop(b.key) for b in self.of_machine(machine)]
        corrective = kind == "corrective"
        length = (REPAIR_SPAN * duration_s if corrective else duration_s) + self.grace_s
        best: tuple[float, int] | None = None
        for k, tech in enumerate(self.technicians):
            start = self.free_at(tech, max(earliest_at, now), length,
                                 whole=not corrective, bumpable=corrective)
            if best is None or start < best[0]:
                best = (start, k)
        assert best is not None
        start, k = best
        booking = Booking(key, machine, job, attempt, self.technicians[k], start,
                          start + length, kind)
        bumped = [self.pop(b.key) for b in self._clashes(booking.technician, start, length)
                  ] if corrective and math.isfinite(start) else []
        self.bookings[key] = booking
        return booking, dropped, bumped

    def _bumpable(self, b: Booking) -> bool:
        return b.kind == "planned" and b.key not in self.started

    def _clashes(self, technician: str, start: float, length_s: float,
                 bumpable: bool = False) -> list[Booking]:
        return [b for b in self.bookings.values() if b.technician == technician
                and start < b.expires_at and b.start_at < start + length_s
                and (not bumpable or not self._bumpable(b))]

    def free_at(self, technician: str, earliest_at: float, length_s: float,
                whole: bool = True, bumpable: bool = False) -> float:
        """The earliest start at or after ``earliest_at`` where ``technician`` is free for
        ``length_s`` and on duty (for all of it when ``whole``, else at the start);
        ``bumpable``: planned windows not yet begun do not count (a repair goes first)."""
        start = earliest_at
        for _ in range(4 * len(self.bookings) + 8):
            start = self.shifts.on_duty_from(technician, start, length_s if whole else 0.0)
            if math.isinf(start):
                return start
            clash = self._clashes(technician, start, length_s, bumpable)
            if not clash:
                return start
            start = max(b.expires_at for b in clash)
        return math.inf

    def pop(self, key: str) -> Booking:
        self.started.discard(key)
        return self.bookings.pop(key)

    def release(self, key: str, machine: str) -> Booking | None:
        b = self.bookings.get(key)
        if b is None or b.machine != machine:
            return None
        return self.pop(key)

    def expire(self, now: float) -> list[Booking]:
        gone = [b for b in self.bookings.values() if b.expires_at <= now]
        for b in gone:
            self.pop(b.key)
        return gone

    def next_expiry_at(self) -> float | None:
        return min((b.expires_at for b in self.bookings.values()), default=None)


class TechnicianCrewAgent(Agent):
    """A crew of ``technicians`` named technicians; grants maintenance windows as leases."""

    role = "maintenance"

    def __init__(self, agent_id: str, *, timing: Timing, technicians: int,
                 grace_s: float = 60.0, shifts: Shifts | None = None, **kw: Any) -> None:
        super().__init__(agent_id, timing=timing, **kw)
        self.roster = Roster([f"tech{k + 1}" for k in range(technicians)], grace_s, shifts)
        self.convs: dict[str, str] = {}          # booking key -> conversation
        self._expiry_at: float | None = None
        self.ignored = 0

    def on_message(self, msg: Message, now: float) -> list[Action]:
        body = msg.body
        if isinstance(body, MaintRequest):
            return self._on_request(msg, body.job, body.attempt, body.earliest_at,
                                    body.duration_s, now, body.latest_start_at)
        if isinstance(body, MaintRepair):
            return self._on_request(msg, body.job, body.attempt, now, body.duration_s, now,
                                    now, "corrective")
        if isinstance(body, MaintDone):
            b = self.roster.release(f"{body.job}#{body.attempt}", msg.sender)
            if b is None:                       # unknown, reclaimed, or another's
                self.ignored += 1
                return []
            self.convs.pop(b.key, None)
            return [Log("maint_released", {"agent": self.id, "machine": b.machine,
                                           "job": b.job, "technician": b.technician,
                                           "outcome": body.outcome})]
        self.ignored += 1
        return []

    def _on_request(self, msg: Message, job: str, attempt: int, earliest_at: float,
                    duration_s: float, now: float, latest_start_at: float,
                    kind: str = "planned") -> list[Action]:
        key = f"{job}#{attempt}"
        held = self.roster.bookings.get(key)
        if held is not None and held.machine != msg.sender:   # another machine's job id
            self.ignored += 1
            return []
        if duration_s <= 0:
            self.ignored += 1
            return []
        b, dropped, bumped = self.roster.book(msg.sender, job, attempt, earliest_at,
                                              duration_s, now, kind)
        if math.isinf(b.start_at):                 # no shift long enough: never bookable
            self.roster.pop(key)
            return [Log("maint_unbookable", {"agent": self.id, "machine": msg.sender,
                                             "job": job, "duration_s": duration_s})]
        out: list[Action] = []
        for d, why in [(d, "replaced") for d in dropped] + [(d, "bumped") for d in bumped]:
            self.convs.pop(d.key, None)
            out.append(Log("maint_released", {"agent": self.id, "machine": d.machine,
                                              "job": d.job, "technician": d.technician,
                                              "outcome": why}))
        if held is None:
            self.convs[key] = msg.conv
            fields = {"agent": self.id, "machine": b.machine, "job": b.job,
                      "attempt": b.attempt, "technician": b.technician,
                      "start_at": b.start_at, "expires_at": b.expires_at,
                      "latest_start_at": latest_start_at}
            if kind != "planned":               # (planned bookings log as they did)
                fields["kind"] = kind
            out.append(Log("maint_booked", fields))
            out.append(SetTimer(f"start:{key}", b.start_at))
        out.append(Send(b.machine, MaintOffer(b.job, b.technician, b.start_at, b.expires_at,
                                              b.attempt), self.convs.get(key, msg.conv)))
        return out + self._arm_expiry()

    def on_timer(self, key: str, now: float) -> list[Action]:
        if key.startswith("start:"):
            b = self.roster.bookings.get(key[6:])
            if b is None or now >= b.expires_at:    # gone, or late after a restart
                return []
            self.roster.started.add(b.key)
            return [Send(b.machine, MaintStart(b.job, b.technician, b.attempt),
                         self.convs.get(b.key, "")),
                    Log("maint_technician_sent", {"agent": self.id, "machine": b.machine,
                                                  "job": b.job, "technician": b.technician})]
        if key == "expiry":
            self._expiry_at = None
            out: list[Action] = []
            for b in self.roster.expire(now):
                self.convs.pop(b.key, None)
                out.append(Log("maint_reclaimed", {"agent": self.id, "machine": b.machine,
                                                   "job": b.job, "technician": b.technician}))
            return out + self._arm_expiry()
        return []

    def _arm_expiry(self) -> list[Action]:
        nxt = self.roster.next_expiry_at()
        if nxt is None or (self._expiry_at is not None and self._expiry_at <= nxt):
            return []
        self._expiry_at = nxt
        return [SetTimer("expiry", nxt)]
