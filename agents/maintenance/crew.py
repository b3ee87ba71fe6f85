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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agents.base import Agent, Timing
from agents.protocol.actions import Action, Log, Send, SetTimer
from agents.protocol.messages import MaintDone, MaintOffer, MaintRequest, MaintStart, Message

__all__ = ["CREW_ID", "Booking", "Roster", "TechnicianCrewAgent"]

#: The crew's agent id (and the certificate role ``maintenance``).
CREW_ID = "crew"


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


class Roster:
    """The bookings of a crew of named technicians; pure (no messages, no clock)."""

    def __init__(self, technicians: list[str], grace_s: float) -> None:
        if not technicians:
            raise ValueError("a crew needs at least one technician")
        self.technicians = list(technicians)
        self.grace_s = grace_s
        self.bookings: dict[str, Booking] = {}

    def of_machine(self, machine: str) -> list[Booking]:
        return [b for b in self.bookings.values() if b.machine == machine]

    def book(self, machine: str, job: str, attempt: int, earliest_at: float,
             duration_s: float, now: float) -> tuple[Booking, list[Booking]]:
        """The booking for ``job#attempt`` (the same one for a repeated request) and the
        machine's other bookings it replaces (one window per machine)."""
        key = f"{job}#{attempt}"
        held = self.bookings.get(key)
        if held is not None and held.machine == machine:
            return held, []
        dropped = [self.bookings.pop(b.key) for b in self.of_machine(machine)]
        length = duration_s + self.grace_s
        best: tuple[float, int] | None = None
        for k, tech in enumerate(self.technicians):
            start = self.free_at(tech, max(earliest_at, now), length)
            if best is None or start < best[0]:
                best = (start, k)
        assert best is not None
        start, k = best
        booking = Booking(key, machine, job, attempt, self.technicians[k], start,
                          start + length)
        self.bookings[key] = booking
        return booking, dropped

    def free_at(self, technician: str, earliest_at: float, length_s: float) -> float:
        """The earliest start at or after ``earliest_at`` where ``technician`` is free for
        ``length_s``."""
        start = earliest_at
        for b in sorted((b for b in self.bookings.values() if b.technician == technician),
                        key=lambda b: b.start_at):
            if start + length_s <= b.start_at:
                break
            start = max(start, b.expires_at)
        return start

    def release(self, key: str, machine: str) -> Booking | None:
        b = self.bookings.get(key)
        if b is None or b.machine != machine:
            return None
        return self.bookings.pop(key)

    def expire(self, now: float) -> list[Booking]:
        gone = [b for b in self.bookings.values() if b.expires_at <= now]
        for b in gone:
            del self.bookings[b.key]
        return gone

    def next_expiry_at(self) -> float | None:
        return min((b.expires_at for b in self.bookings.values()), default=None)


class TechnicianCrewAgent(Agent):
    """A crew of ``technicians`` named technicians; grants maintenance windows as leases."""

    role = "maintenance"

    def __init__(self, agent_id: str, *, timing: Timing, technicians: int,
                 grace_s: float = 60.0, **kw: Any) -> None:
        super().__init__(agent_id, timing=timing, **kw)
        self.roster = Roster([f"tech{k + 1}" for k in range(technicians)], grace_s)
        self.convs: dict[str, str] = {}          # booking key -> conversation
        self._expiry_at: float | None = None
        self.ignored = 0

    def on_message(self, msg: Message, now: float) -> list[Action]:
        body = msg.body
        if isinstance(body, MaintRequest):
            return self._on_request(msg, body, now)
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

    def _on_request(self, msg: Message, body: MaintRequest, now: float) -> list[Action]:
        key = f"{body.job}#{body.attempt}"
        held = self.roster.bookings.get(key)
        if held is not None and held.machine != msg.sender:   # another machine's job id
            self.ignored += 1
            return []
        if body.duration_s <= 0:
            self.ignored += 1
            return []
        b, dropped = self.roster.book(msg.sender, body.job, body.attempt, body.earliest_at,
                                      body.duration_s, now)
        out: list[Action] = []
        for d in dropped:
            self.convs.pop(d.key, None)
            out.append(Log("maint_released", {"agent": self.id, "machine": d.machine,
                                              "job": d.job, "technician": d.technician,
                                              "outcome": "replaced"}))
        if held is None:
            self.convs[key] = msg.conv
            out.append(Log("maint_booked", {
                "agent": self.id, "machine": b.machine, "job": b.job, "attempt": b.attempt,
                "technician": b.technician, "start_at": b.start_at,
                "expires_at": b.expires_at, "latest_start_at": body.latest_start_at}))
            out.append(SetTimer(f"start:{key}", b.start_at))
        out.append(Send(b.machine, MaintOffer(b.job, b.technician, b.start_at, b.expires_at,
                                              b.attempt), self.convs.get(key, msg.conv)))
        return out + self._arm_expiry()

    def on_timer(self, key: str, now: float) -> list[Action]:
        if key.startswith("start:"):
            b = self.roster.bookings.get(key[6:])
            if b is None or now >= b.expires_at:    # gone, or late after a restart
                return []
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
