"""The machine's half of the maintenance-window protocol: when to ask, and the window as a lease.

Theory of operation
-------------------
A machine in a cell with ``maintenance.negotiate`` holds a
:class:`MaintenanceWindow`.  Each sensor reading goes to its estimator
(:mod:`agents.maintenance.estimators`, the same plug-ins as the simulator's
policies) with the operating age the machine counts itself (busy seconds since
the part was last replaced).  When the ``risk`` quantile of the remaining life,
turned into clock time at the machine's recent load, comes within
``lookahead_s``, that instant is the **latest safe start** and the machine asks
the crew for a window (``maint_request``) at the first gap in its own queue at
most ``slot_s`` before it — a low-load slot that throws little life away — or
at that instant if the gap is past the latest safe start.  It asks again every
``retry_s`` until offered.

The offer is a lease: the crew booked a technician from ``start_at``.  The
machine keeps the window ``[start_at, start_at + duration_s)`` free: it quotes
no work into it, hands back (``failure``) committed work that overlaps it so the
orders re-negotiate around it, and starts nothing that would run into it.  At
``maint_start`` it stops for the job (the plant command ``set_state
maintenance``); when the plant says it is repaired it gives the technician back
(``maint_done``).  If the technician has not come by ``start_at + grace_s`` (the
crew crashed, or its message was lost) the window **lapses**: the machine is
free again, tells the crew (``lapsed``) and asks anew.  A failure before the
window cancels it (``declined``); the corrective repair renews the estimator.

With a stores agent (``plan.stores``) the machine holds its part first
(``part_reserve``, resent every ``retry_s``) and asks the crew only once a unit
is held, for a window from the unit's ETA on; the start names the unit to the
plant, the job's end reports it consumed, a cancelled window releases it
(agents/maintenance/stores.py).  A unit due after the latest safe start is
``part_late``: agents/maintenance/hook.py escalates it, and a sooner ETA (an
expedite) gives back a window the part had pushed late, to ask anew.

Phases, as data: ``watch`` → ``asking`` → ``booked`` → ``started`` → ``watch``
(the part: ``""`` → ``reserving`` → ``held``, back to ``""`` with the job).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from agents.protocol.actions import Action, Command, Log, Send, SetTimer
from agents.protocol.messages import (
    MaintDone,
    MaintOffer,
    MaintRequest,
    MaintStart,
    Message,
    PartConsumed,
    PartExpedite,
    PartRelease,
    PartReserve,
    PartReserved,
    PartUnavailable,
)

from .crew import CREW_ID
from .estimators import Estimator, estimator
from .rul import prior_model
from .stores import STORES_ID

if TYPE_CHECKING:
    from agents.cell.model import CellConfig

__all__ = ["MaintenanceWindow", "WindowPlan", "windows_of"]

Phase = Literal["watch", "asking", "booked", "started"]

#: Which phase each crew message may arrive in; anything else is stale or duplicated.
#: (Timers: ``maint_retry`` acts while asking, ``maint_lapse`` while booked — the
#: technician never came — or started — the plant never stopped the machine.)
ACCEPTS: dict[str, tuple[Phase, ...]] = {
    "offer": ("asking",),
    "start": ("booked",),
}


@dataclass(frozen=True)
class WindowPlan:
    """What a machine needs to plan its maintenance: the crew, the job, the policy."""

    crew: str
    duration_s: float
    part: str
    restore: float = 1.0            # share of the wear the job removes (1: part replaced)
    risk: float = 0.3               # the remaining-life quantile taken as the latest safe start
    lookahead_s: float = 900.0      # ask once the latest safe start is this close
    retry_s: float = 5.0
    grace_s: float = 60.0           # the technician may be this late before the window lapses
    slot_s: float = 300.0           # the window starts no earlier than this before the latest
    stores: str = ""                # the stores agent to hold the part from ("": none)


class MaintenanceWindow:
    """One machine's maintenance planning and its window lease (sans-io)."""

    def __init__(self, machine: str, plan: WindowPlan, estimator: Estimator) -> None:
        self.machine, self.plan, self.estimator = machine, plan, estimator
        self.phase: Phase = "watch"
        self.jobs = 0
        self.job = ""
        self.attempt = 0
        self.latest_start_at = math.inf
        self.earliest_at = 0.0
        self.start_at = math.inf        # the window, while booked or started
        self.technician = ""
        self.load = 0.5                 # recent busy fraction, smoothed per reading
        self._busy_s = 0.0              # busy seconds since the run began
        self._busy_since: float | None = None
        self._life_busy_s = 0.0         # busy seconds when the part was last replaced
        self._last_at = 0.0
        self._last_busy_s = 0.0
        self._down_reason = ""
        self.escalation = ""            # the escalation raised about the current job, if any
        self.not_before_at = 0.0        # after a refusal: ask for no window before this
        self._early_start: MaintStart | None = None   # a start that overtook its offer
        self.stopped = False            # a supervisor said stop now: no work until the window
        # the part held for the job by the stores (agents/maintenance/stores.py), if any
        self.part_state: Literal["", "reserving", "held"] = ""
        self.part_serial = ""
        self.part_ready_at = 0.0        # when the held unit is on the shelf (its ETA)
        self.part_need_by_at = 0.0      # what the hold was last asked to cover
        #: the machine's first gap in its own queue for the job, from ``now`` (set by the
        #: machine agent, agents/maintenance/hook.py ``bind``); default: now
        self.first_gap: Callable[[float], float] = lambda now: now

    # -- what the machine asks ---------------------------------------------------------------
    @property
    def end_at(self) -> float:
        return self.start_at + self.plan.duration_s

    def blocks(self, start_at: float, duration_s: float) -> bool:
        """Whether work from ``start_at`` for ``duration_s`` would run into the window."""
        if self.phase not in ("booked", "started"):
            return False
        if self.stopped:
            return start_at < self.end_at - 1e-9
        return start_at < self.end_at - 1e-9 and start_at + duration_s > self.start_at + 1e-9

    def track(self, now: float, busy: bool) -> None:
        """The machine's busy state after each input: the operating-hour counter."""
        if busy and self._busy_since is None:
            self._busy_since = now
        elif not busy and self._busy_since is not None:
            self._busy_s += now - self._busy_since
            self._busy_since = None

    def busy_s(self, now: float) -> float:
        return self._busy_s + (now - self._busy_since if self._busy_since is not None else 0.0)

    # -- inputs --------------------------------------------------------------------------------
    def on_reading(self, values: Mapping[str, float], busy: bool, now: float) -> list[Action]:
        """A reading: update the estimate; ask for a window once the latest safe start is
        within ``lookahead_s``."""
        b = self.busy_s(now)
        if now > self._last_at:
            self.load = 0.9 * self.load + 0.1 * (b - self._last_busy_s) / (now - self._last_at)
        self._last_at, self._last_busy_s = now, b
        nums = {k: float(v) for k, v in values.items() if isinstance(v, (int, float))}
        self.estimator.observe(now, nums, busy=busy, age_s=b - self._life_busy_s)
        if self.phase != "watch" or self._down_reason:
            return []
        safe_busy_s = self.estimator.rul().quantile(self.plan.risk)
        if not math.isfinite(safe_busy_s):
            return []
        safe_s = safe_busy_s / max(self.load, 0.05)      # operating seconds -> clock
        if safe_s > self.plan.lookahead_s:
            return []
        self.latest_start_at = now + safe_s
        self.jobs += 1
        self.job, self.attempt = f"{self.machine}/m{self.jobs}", 0
        self.phase = "asking"
        return [Log("maint_needed", {"agent": self.machine, "job": self.job,
                                     "latest_start_at": round(self.latest_start_at, 6),
                                     "health": round(self.estimator.health(), 4)}),
                *self._ask(now)]

    def on_message(self, msg: Message, now: float,
                   busy_until_at: float = 0.0) -> tuple[bool, list[Action]]:
        """(whether the window now blocks new time — the machine re-checks its queue,
        actions) for a crew message; (False, []) for one that is stale or not the crew's.
        ``busy_until_at``: when the operation running now ends (an offer before that is
        declined and asked for again: the window never cuts into running work)."""
        body = msg.body
        if msg.sender != self.plan.crew:
            return False, []
        if isinstance(body, MaintOffer):
            if not self._current(body.job, body.attempt, "offer"):
                if self.phase in ("booked", "started") and body.job == self.job \
                        and body.attempt == self.attempt:
                    return False, []                    # a duplicate of the one we hold
                return False, [Send(self.plan.crew, MaintDone(body.job, body.attempt,
                                                              "declined"))]
            if busy_until_at > body.start_at + 1e-6:
                return False, self.decline(f"busy until {busy_until_at:.6f}", now)
            self.phase, self.start_at, self.technician = "booked", body.start_at, \
                body.technician
            out: list[Action] = [Log("maint_window", {
                "agent": self.machine, "job": self.job, "technician": body.technician,
                "start_at": body.start_at, "end_at": self.end_at,
                "latest_start_at": round(self.latest_start_at, 6),
                "late": body.start_at > self.latest_start_at + 1e-9}),
                SetTimer("maint_lapse", body.start_at + self.plan.grace_s)]
            if self.part_state == "held" and body.start_at > self.part_need_by_at:
                out += self._reserve(body.start_at, now)[:1]    # hold the part for it
            early, self._early_start = self._early_start, None
            return True, out + (self._begin(early, now) if early is not None else [])
        if isinstance(body, MaintStart):
            if self.phase == "asking" and body.job == self.job and body.attempt == self.attempt:
                self._early_start = body          # it overtook its offer: keep it for then
                return False, []
            if not self._current(body.job, body.attempt, "start"):
                return False, []
            return False, self._begin(body, now)
        return False, []

    def _begin(self, body: MaintStart, now: float) -> list[Action]:
        """The technician is here: stop for the job (and check the plant did)."""
        self.phase = "started"
        args: dict[str, object] = {"state": "maintenance", "technician": body.technician,
                                   "duration_s": self.plan.duration_s, "part": self.plan.part}
        if self.part_serial:
            args["part_serial"] = self.part_serial          # the unit the stores hold for it
        return [Command("set_state", self.machine, self.job, args),
                Log("maint_begin", {"agent": self.machine, "job": self.job,
                                    "technician": body.technician}),
                SetTimer("maint_lapse", now + self.plan.grace_s)]

    def on_timer(self, key: str, now: float) -> list[Action]:
        if key == "maint_retry" and self.phase == "asking":
            return self._ask(now)
        if key == "maint_retry" and self.part_state == "reserving":
            return self._reserve(self.part_need_by_at, now)
        if key == "maint_lapse" and self.phase == "started" \
                and self._down_reason != "maintenance":       # the plant did not stop us
            return self.on_refused(self.job, "the plant did not start the job", now)
        if key == "maint_lapse" and self.phase == "booked" and now >= self.start_at:
            return [Log("maint_window_lapsed", {"agent": self.machine, "job": self.job,
                                                "technician": self.technician}),
                    Send(self.plan.crew, MaintDone(self.job, self.attempt, "lapsed")),
                    *self._again(now)]
        return []

    def decline(self, why: str, now: float) -> list[Action]:
        """Give back the window just offered (it would cut into work already running) and
        ask again from the machine's first gap."""
        return [Log("maint_window_declined", {"agent": self.machine, "job": self.job,
                                              "why": why}),
                Send(self.plan.crew, MaintDone(self.job, self.attempt, "declined")),
                *self._again(now)]

    def on_refused(self, job: str, why: str, now: float) -> list[Action]:
        """The plant would not start the job (no technician or part there): ask anew."""
        if job != self.job or self.phase != "started":
            return []
        gone: list[Action] = []
        if self.part_serial and "used" in why:          # the stores' books were wrong: the
            gone = [Send(self.plan.stores, PartConsumed(self.job, self.part_serial))]
            self.part_state, self.part_serial = "", ""   # unit is gone; hold another
        return gone + [Log("maint_refused", {"agent": self.machine, "job": job, "why": why}),
                Send(self.plan.crew, MaintDone(self.job, self.attempt, "refused")),
                *self._again(now, not_before_at=now + self.plan.grace_s)]

    def on_fault(self, reason: str, now: float) -> list[Action]:
        self._down_reason = reason
        if reason == "maintenance" or self.phase in ("watch", "started"):
            return []
        out: list[Action] = [Send(self.plan.crew, MaintDone(self.job, self.attempt,
                                                            "declined"))]
        if self.part_state:
            out.append(Send(self.plan.stores, PartRelease(self.job)))
        self._reset()
        return out + [Log("maint_cancelled", {"agent": self.machine, "job": self.job,
                                              "reason": reason})]

    def on_repaired(self, now: float) -> list[Action]:
        reason, self._down_reason = self._down_reason, ""
        out: list[Action] = []
        if reason == "maintenance" and self.phase == "started":
            out.append(Send(self.plan.crew, MaintDone(self.job, self.attempt, "done")))
            if self.part_serial:
                out.append(Send(self.plan.stores, PartConsumed(self.job, self.part_serial)))
            out.append(Log("maint_job_done", {"agent": self.machine, "job": self.job,
                                              "technician": self.technician}))
            self._renew(self.plan.restore, now)
            self._reset()
        elif reason in ("wear", "breakdown"):       # a corrective repair replaced the part
            self._renew(1.0, now)
        return out

    # -- the part ------------------------------------------------------------------------------
    @property
    def part_late(self) -> bool:
        """The unit held for the job comes after the latest safe start."""
        return self.part_state == "held" and self.part_ready_at > self.latest_start_at + 1e-9

    def _reserve(self, need_by_at: float, now: float) -> list[Action]:
        """Ask the stores to hold a unit (again: the same one, its hold extended) until
        ``need_by_at`` plus the job and two graces; resent while none is held."""
        if self.part_state != "held":
            self.part_state = "reserving"
        self.part_need_by_at = max(self.part_need_by_at, need_by_at)
        return [Send(self.plan.stores, PartReserve(
                    self.job, self.plan.part, self.part_need_by_at,
                    self.plan.duration_s + 2 * self.plan.grace_s)),
                SetTimer("maint_retry", now + self.plan.retry_s)]

    def on_part(self, msg: Message, now: float) -> list[Action]:
        """The stores' answer: the unit held and its ETA.  The first answer lets the machine
        ask the crew, for a window from the ETA on; a later one (a repeat, an expedite)
        updates the ETA, and a held window the part made late is given back to be asked
        for again from the new ETA."""
        body = msg.body
        if msg.sender != self.plan.stores or not isinstance(body, (PartReserved,
                                                                   PartUnavailable)):
            return []
        if body.job != self.job or not self.part_state or self.phase == "watch":
            return [] if body.job == self.job else [Send(self.plan.stores,
                                                         PartRelease(body.job))]
        ready = body.ready_at if isinstance(body, PartReserved) else body.eta_at
        first = self.part_state == "reserving"
        earlier = ready < self.part_ready_at - 1e-9
        self.part_state, self.part_serial, self.part_ready_at = "held", body.serial, ready
        out: list[Action] = []
        if first or earlier:
            out.append(Log("maint_part", {"agent": self.machine, "job": self.job,
                                          "part": body.part, "serial": body.serial,
                                          "ready_at": round(ready, 6),
                                          "latest_start_at": round(self.latest_start_at, 6),
                                          "late": self.part_late}))
        if first and self.phase == "asking":
            return out + self._ask(now)
        if earlier and self.phase == "asking":          # the pending request asked too late
            return out + self._again(now)
        if earlier and self.phase == "booked" and self.start_at > self.latest_start_at \
                and ready < self.start_at - 1e-9:
            return out + self.decline("the part comes sooner", now)
        return out

    # -- helpers -------------------------------------------------------------------------------
    def _current(self, job: str, attempt: int, what: str) -> bool:
        return self.phase in ACCEPTS[what] and job == self.job and attempt == self.attempt

    def _ask(self, now: float) -> list[Action]:
        """Ask (again) for a window from the machine's first gap at most ``slot_s`` before
        the latest safe start (earlier throws life away), or from that instant when the gap
        is past the latest safe start (the work booked there is handed back when the window
        comes); never before ``not_before_at`` (after a refusal: what was missing takes
        time)."""
        if self.plan.stores and self.part_state != "held":
            return self._reserve(self.latest_start_at, now)
        from_at = max(now, self.not_before_at, self.latest_start_at - self.plan.slot_s,
                      self.part_ready_at)
        gap = self.first_gap(from_at)
        self.earliest_at = gap if gap <= self.latest_start_at else from_at
        return [Send(self.plan.crew, MaintRequest(
                    self.job, self.earliest_at, self.latest_start_at,
                    self.plan.duration_s, self.plan.part, self.attempt)),
                SetTimer("maint_retry", now + self.plan.retry_s)]

    def _again(self, now: float, not_before_at: float = 0.0) -> list[Action]:
        self.attempt += 1
        self.not_before_at = not_before_at
        self._early_start = None     # (a stop_now decision holds until the job is done)
        self.phase, self.start_at, self.technician = "asking", math.inf, ""
        return self._ask(now)

    @property
    def late(self) -> bool:
        """The window held starts after the latest safe start (no technician before it)."""
        return self.phase in ("booked", "started") and self.start_at > self.latest_start_at + 1e-9

    def on_decision(self, option: str, now: float) -> list[Action]:
        """A supervisor's answer to the escalation about this job (agents/maintenance/
        cases.py): ``stop_now`` holds the machine until its window ends (decided while it
        still asks: from the window's booking on); ``run_to_failure`` keeps it producing
        until the window; ``expedite_part`` asks the stores to hurry the part held."""
        self.stopped = option == "stop_now" and self.phase in ("asking", "booked", "started")
        out: list[Action] = [Log("maint_decision", {"agent": self.machine, "job": self.job,
                                                    "option": option, "stopped": self.stopped})]
        if option == "expedite_part" and self.part_state == "held":
            out.append(Send(self.plan.stores, PartExpedite(self.job)))
        return out

    def _reset(self) -> None:
        self.part_state, self.part_serial = "", ""
        self.part_ready_at = self.part_need_by_at = 0.0
        self.escalation, self.stopped, self.not_before_at = "", False, 0.0
        self._early_start = None
        self.phase, self.start_at, self.technician = "watch", math.inf, ""
        self.latest_start_at = math.inf

    def _renew(self, share: float, now: float) -> None:
        self.estimator.renew(share)
        if share >= 1.0:
            self._life_busy_s = self.busy_s(now)


def windows_of(cfg: CellConfig, retry_s: float) -> dict[str, MaintenanceWindow]:
    """A window planner per wearing machine of a cell with ``maintenance.negotiate`` (none
    otherwise), each estimator started from the cell file's figures (:func:`prior_model`)."""
    s = cfg.maintenance
    if s is None or not s.negotiate:
        return {}
    out: dict[str, MaintenanceWindow] = {}
    for m in cfg.machines:
        d = m.degradation
        if d is None:
            continue
        plan = WindowPlan(CREW_ID, d.maintenance_s, d.part, d.restore, s.risk, s.lookahead_s,
                          retry_s, s.window_grace_s, s.window_slot_s, STORES_ID)
        out[m.id] = MaintenanceWindow(m.id, plan, estimator(s.estimator, prior_model(d)))
    return out
