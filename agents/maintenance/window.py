"""The machine's half of the maintenance-window protocol: when to ask, and the window as a lease.

Theory of operation
-------------------
A machine in a cell with ``maintenance.negotiate`` holds a
:class:`MaintenanceWindow`.  Each sensor reading goes to its estimator
(:mod:`agents.maintenance.estimators`, the same plug-ins as the simulator's
policies) with the operating age the machine counts itself (busy seconds since
the part was last replaced).  By default (``plan.cost``, ADR 75) it asks once
maintaining now pays at the cell file's cost rates — one more reading's failure
risk at a window ``slot_s`` ahead, times ``Cf − Cp``, reaches what the reading
earns at the age-replacement optimum's cost rate (agents/maintenance/costs.py) —
the latest safe start then being ``slot_s`` ahead.  With the risk rule: when
the ``risk`` quantile of the remaining life,
turned into clock time at the machine's recent load, comes within
``lookahead_s``, that instant is the **latest safe start** and the machine asks
the crew for a window (``maint_request``) from the start in its own queue that
costs production least (agents/maintenance/slots.py, ADR 87): its first gap at
most ``slot_s`` before it, or the end of one of its booked tasks up to the
latest safe start — no order pushed past due where a start avoids it, then the
least booked work handed back, then the latest start (the least life thrown
away).  It asks again every ``retry_s`` until offered.

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

Corrective repairs (ADR 64).  When the machine fails (``fault`` with reason
``wear``) it drops whatever window it held and asks the crew for a repair
(``maint_repair``, job ``MACHINE/rK``, the mean repair time) through the same
phases: offered, the technician comes (``maint_start``), the machine names them
to the plant (``set_state`` ``repair``), and when the plant says it is repaired
it gives the technician back (``maint_done``).  A plant that cannot start the
repair with that technician answers ``command_refused`` and the machine asks
again.  A failure well before the estimator's ``miss_quantile`` of the remaining
life (the *fail-by* instant, worked out at each reading) is a prediction badly
wrong: the machine agent escalates ``maintenance_prediction_miss``
(agents/maintenance/hook.py); ``stop_now`` holds it, once repaired, for an
inspection of ``duration_s`` before it takes work again.

A repair's part (ADR 71).  With a stores agent the failed machine asks the stores
for a unit *and* the crew for a technician at once (a repair never waits for a
round trip to the stores when a unit is on the shelf); the start names the unit
to the plant and the repair's end reports it consumed.  A unit that is not on the
shelf (a stock-out) holds the crew back: an offer before the unit's ETA is
declined, and the crew is asked again when the unit comes (a technician never
waits at a machine for a part).  A unit due more than ``repair_s`` after the
failure is ``part_late``, escalated ``maintenance_no_part`` like a window's.

Phases, as data: ``watch`` → ``asking`` → ``booked`` → ``started`` → ``watch``
(``kind`` says whether the job is planned or a corrective repair; the part:
``""`` → ``reserving`` → ``held``, back to ``""`` with the job).
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
    MaintRepair,
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

from .costs import CostRule, job_costs
from .crew import CREW_ID, REPAIR_SPAN
from .estimators import Estimator, estimator
from .rul import HealthModel, prior_model
from .slots import Queue, choose
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
    repair_s: float = 0.0           # mean corrective repair; 0: repairs not asked of the crew
    miss_quantile: float = 0.05     # a failure before this remaining-life quantile: a miss
    cost: CostRule | None = None    # decide by cost (ADR 75); None: by the ``risk`` quantile
    reading_s: float = 30.0         # the step between two decisions (the reading interval)


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
        self.kind = "planned"           # the job's kind: "planned" or "corrective"
        self.repairs = 0
        self.fail_by_at = math.inf      # the miss quantile of the remaining life, clock time
        self.miss = ""                  # the prediction-miss escalation of the last failure
        self.inspect = False            # a supervisor said stop now after a miss
        self.hold_until_at = 0.0        # no work before this (the inspection after a miss)
        #: the machine's first gap in its own queue for the job, from ``now`` (set by the
        #: machine agent, agents/maintenance/hook.py ``bind``); default: now
        self.first_gap: Callable[[float], float] = lambda now: now
        #: the machine's booked tasks and their orders' due dates, from ``now`` (set by the
        #: machine agent, hook.py ``bind``); default: nothing booked (the first gap it is)
        self.queue: Callable[[float], Queue] = lambda now: Queue()

    # -- what the machine asks ---------------------------------------------------------------
    @property
    def end_at(self) -> float:
        """When the machine may work again: the window's end (or an inspection's)."""
        if self.phase in ("booked", "started") and self.kind == "planned":
            return max(self.start_at + self.plan.duration_s, self.hold_until_at)
        return self.hold_until_at

    def blocks(self, start_at: float, duration_s: float) -> bool:
        """Whether work from ``start_at`` for ``duration_s`` would run into the window."""
        if start_at < self.hold_until_at - 1e-9:
            return True
        if self.phase not in ("booked", "started") or self.kind == "corrective":
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
        if self.plan.repair_s > 0:
            q = self.estimator.rul().quantile(self.plan.miss_quantile)
            self.fail_by_at = now + q / max(self.load, 0.05) if math.isfinite(q) else math.inf
        if self.phase != "watch" or self._down_reason:
            return []
        if self.plan.cost is not None:
            if not self._pays():
                return []
            self.latest_start_at = now + self.plan.slot_s
        else:
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
            if self.kind == "corrective":     # no window to keep: the machine is down
                if self._part_awaited(now):
                    return False, self.decline("the part is not on the shelf yet", now)
                early, self._early_start = self._early_start, None
                if early is not None and self.plan.stores and self.part_state != "held":
                    early, self._early_start = None, early   # begun when the unit is held
                out: list[Action] = [Log("maint_repair_booked", {
                    "agent": self.machine, "job": self.job, "technician": body.technician,
                    "start_at": body.start_at}),
                    SetTimer("maint_lapse", body.start_at + self.plan.grace_s)]
                return False, out + (self._begin(early, now) if early is not None else [])
            if self.part_state == "held" and body.start_at < self.part_ready_at - 1e-6:
                return False, self.decline("the part comes later", now)
            out = [Log("maint_window", {
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
            if self.kind == "corrective" and self.plan.stores and self.part_state != "held":
                self._early_start = body          # the stores' answer is on its way
                return False, []
            return False, self._begin(body, now)
        return False, []

    def _begin(self, body: MaintStart, now: float) -> list[Action]:
        """The technician is here: stop for the job (and check the plant did)."""
        self.phase = "started"
        if self.kind == "corrective":     # down already: the plant answers only a refusal
            repair: dict[str, object] = {"state": "repair", "technician": body.technician,
                                         "part": self.plan.part}
            if self.part_serial:
                repair["part_serial"] = self.part_serial    # the unit the stores hold for it
            return [Command("set_state", self.machine, self.job, repair),
                    Log("maint_begin", {"agent": self.machine, "job": self.job,
                                        "technician": body.technician, "kind": self.kind})]
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
        if key == "maint_lapse" and self.phase == "started" and self.kind == "planned" \
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
        corrective = reason == "wear" and self.plan.repair_s > 0
        if reason == "maintenance" or (self.phase == "watch" and not corrective) \
                or (self.phase == "started" and not corrective):
            return []
        out: list[Action] = []
        if self.phase != "watch":
            out += [Send(self.plan.crew, MaintDone(self.job, self.attempt, "declined"))]
            if self.part_state:
                out.append(Send(self.plan.stores, PartRelease(self.job)))
            out.append(Log("maint_cancelled", {"agent": self.machine, "job": self.job,
                                               "reason": reason}))
            self._reset()
        if corrective:
            out += self.ask_repair(now)
        return out

    def ask_repair(self, now: float) -> list[Action]:
        """The machine failed: ask the crew for a technician to repair it, now."""
        self.repairs += 1
        self.job, self.attempt, self.kind = f"{self.machine}/r{self.repairs}", 0, "corrective"
        self.phase, self.latest_start_at = "asking", now
        return [Log("maint_repair_needed", {"agent": self.machine, "job": self.job}),
                *self._ask(now)]

    def missed(self, now: float) -> bool:
        """Whether a failure now came well before the estimator expected (ADR 64)."""
        return now < self.fail_by_at - 1e-9

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
            if self.kind == "corrective" and self.phase != "watch":
                out.append(Send(self.plan.crew, MaintDone(self.job, self.attempt, "done")))
                if self.part_serial and self.phase == "started":    # named to the plant
                    out.append(Send(self.plan.stores, PartConsumed(self.job,
                                                                   self.part_serial)))
                elif self.part_state:
                    out.append(Send(self.plan.stores, PartRelease(self.job)))
                out.append(Log("maint_job_done", {"agent": self.machine, "job": self.job,
                                                  "technician": self.technician,
                                                  "kind": "corrective"}))
                self._reset()
            self._renew(1.0, now)
            self.fail_by_at = math.inf
            if self.inspect:
                out += self._hold(now)
        return out

    def _pays(self) -> bool:
        """The cost rule (ADR 75, agents/maintenance/costs.py): a window asked for now starts
        within ``slot_s``; waiting one more reading would push it a reading later.  Ask now
        once that step's failure risk, at the cost rates, outweighs what it earns."""
        assert self.plan.cost is not None
        load = max(self.load, 0.05)                     # clock -> operating seconds
        return self.plan.cost.due(self.estimator.rul(), self.plan.slot_s * load,
                                  self.plan.reading_s * load)

    # -- the part ------------------------------------------------------------------------------
    @property
    def part_late(self) -> bool:
        """The unit held for the job comes after the latest safe start (for a repair: more
        than a mean repair after the failure — the wait would double the downtime)."""
        bound = self.plan.repair_s if self.kind == "corrective" else 0.0
        return self.part_state == "held" and \
            self.part_ready_at > self.latest_start_at + bound + 1e-9

    def _part_awaited(self, now: float) -> bool:
        """A repair's unit is held but not on the shelf yet (a stock-out)."""
        return self.part_state == "held" and self.part_ready_at > now + 1e-9

    def _reserve(self, need_by_at: float, now: float) -> list[Action]:
        """Ask the stores to hold a unit (again: the same one, its hold extended) until
        ``need_by_at`` plus the job and two graces (a repair: its booking's span); resent
        while none is held."""
        if self.part_state != "held":
            self.part_state = "reserving"
        self.part_need_by_at = max(self.part_need_by_at, need_by_at)
        job_s = REPAIR_SPAN * self.plan.repair_s if self.kind == "corrective" \
            else self.plan.duration_s
        return [Send(self.plan.stores, PartReserve(
                    self.job, self.plan.part, self.part_need_by_at,
                    job_s + 2 * self.plan.grace_s)),
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
        if self.phase == "started" and self.part_serial and body.serial != self.part_serial:
            return []            # bumped after it was fitted: the plant refuses it twice
        first = self.part_state == "reserving"
        earlier = ready < self.part_ready_at - 1e-9
        later = not first and ready > self.part_ready_at + 1e-9     # bumped (ADR 71)
        self.part_state, self.part_serial, self.part_ready_at = "held", body.serial, ready
        out: list[Action] = []
        if first or earlier or later:
            out.append(Log("maint_part", {"agent": self.machine, "job": self.job,
                                          "part": body.part, "serial": body.serial,
                                          "ready_at": round(ready, 6),
                                          "latest_start_at": round(self.latest_start_at, 6),
                                          "late": self.part_late}))
        if self.kind == "corrective":
            return out + self._repair_part(first or earlier, earlier, now)
        if first and self.phase == "asking":
            return out + self._ask(now)
        if (earlier or later) and self.phase == "asking":   # asked from another ETA
            return out + self._again(now)
        if later and self.phase == "booked" and ready > self.start_at + 1e-9:
            return out + self.decline("the part comes later", now)
        if earlier and self.phase == "booked" and self.start_at > self.latest_start_at \
                and ready < self.start_at - 1e-9:
            return out + self.decline("the part comes sooner", now)
        return out

    def _repair_part(self, news: bool, earlier: bool, now: float) -> list[Action]:
        """A repair's unit is held (or comes sooner): start a repair whose technician is
        here; give back a booking the unit would keep waiting; else ask the crew when the
        unit comes (at once when a unit awaited is on the shelf after all)."""
        if not self._part_awaited(now):
            early = self._early_start
            if early is not None and self.phase == "booked":   # the technician is here
                self._early_start = None
                return self._begin(early, now)
            return self._ask(now) if earlier and self.phase == "asking" else []
        # tell the plant the repair is awaited, not forgotten (it would otherwise fit a unit
        # outside the books once nobody booked the repair: workshop.py UNBOOKED_AFTER_S)
        notice: list[Action] = [Command("set_state", self.machine, self.job, {
            "state": "repair", "technician": "", "part_serial": self.part_serial,
            "eta_at": self.part_ready_at})] if news else []
        if self.phase == "booked":
            return notice + self.decline("the part is not on the shelf yet", now)
        if self.phase == "asking" and news:
            return notice + [SetTimer("maint_retry", self.part_ready_at)]
        return notice

    def _hold(self, now: float) -> list[Action]:
        """Stop now after a miss: no work for an inspection of ``duration_s``."""
        self.inspect = False
        self.hold_until_at = now + self.plan.duration_s
        return [Log("maint_inspection", {"agent": self.machine,
                                         "until": round(self.hold_until_at, 6)}),
                SetTimer("start_check", self.hold_until_at + 1e-6)]

    # -- helpers -------------------------------------------------------------------------------
    def _current(self, job: str, attempt: int, what: str) -> bool:
        return self.phase in ACCEPTS[what] and job == self.job and attempt == self.attempt

    def _ask(self, now: float) -> list[Action]:
        """Ask (again) for a window from the start that costs production least
        (agents/maintenance/slots.py, ADR 87): among the machine's first gap at most
        ``slot_s`` before the latest safe start (earlier throws life away) — or that
        instant when the gap is past the latest safe start — and the ends of its booked
        tasks up to the latest safe start, the one that pushes no order past due where one
        avoids it, then pushes the least booked work, then starts latest (the work booked
        there is handed back when the window comes); never before ``not_before_at`` (after
        a refusal: what was missing takes time)."""
        if self.kind == "corrective":
            part: list[Action] = []
            if self.plan.stores and self.part_state != "held":     # both at once
                part = self._reserve(now, now)[:1]
            elif self._part_awaited(now):       # a stock-out: the crew when the unit comes
                return [SetTimer("maint_retry", self.part_ready_at)]
            return part + [Send(self.plan.crew, MaintRepair(self.job, self.plan.repair_s,
                                                            self.plan.part, self.attempt)),
                           SetTimer("maint_retry", now + self.plan.retry_s)]
        if self.plan.stores and self.part_state != "held":
            return self._reserve(self.latest_start_at, now)
        from_at = max(now, self.not_before_at, self.latest_start_at - self.plan.slot_s,
                      self.part_ready_at)
        gap = self.first_gap(from_at)
        first = gap if gap <= self.latest_start_at else from_at
        slot = choose(first, from_at, self.latest_start_at, self.plan.duration_s,
                      self.queue(now))
        self.earliest_at = slot.start_at
        chose: list[Action] = [] if slot.start_at == first else [Log("maint_slot", {
            "agent": self.machine, "job": self.job, "start_at": round(slot.start_at, 6),
            "first_gap_at": round(first, 6), "pushed": list(slot.pushed),
            "pushed_s": round(slot.pushed_s, 6), "late_orders": list(slot.late_orders)})]
        return chose + [Send(self.plan.crew, MaintRequest(
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
        return self.phase in ("booked", "started") and self.kind == "planned" \
            and self.start_at > self.latest_start_at + 1e-9

    def on_decision(self, option: str, now: float) -> list[Action]:
        """A supervisor's answer to the escalation about this job (agents/maintenance/
        cases.py): ``stop_now`` holds the machine until its window ends (decided while it
        still asks: from the window's booking on); ``run_to_failure`` keeps it producing
        until the window; ``expedite_part`` asks the stores to hurry the part held."""
        self.stopped = option == "stop_now" and self.phase in ("asking", "booked", "started") \
            and self.kind == "planned"
        out: list[Action] = [Log("maint_decision", {"agent": self.machine, "job": self.job,
                                                    "option": option, "stopped": self.stopped})]
        if option == "expedite_part" and self.part_state == "held":
            out.append(Send(self.plan.stores, PartExpedite(self.job)))
        return out

    def on_miss_decision(self, option: str, now: float) -> list[Action]:
        """A supervisor's answer to a prediction miss (agents/maintenance/cases.py):
        ``stop_now`` holds the machine for an inspection once repaired (at once if it is
        already); ``expedite_part`` asks the stores to hurry the unit held for the repair,
        when it is still on order; ``run_to_failure`` changes nothing here."""
        self.miss = ""
        out: list[Action] = [Log("maint_decision", {"agent": self.machine, "job": self.job,
                                                    "option": option, "cause":
                                                    "maintenance_prediction_miss"})]
        if option == "expedite_part" and self.kind == "corrective" \
                and self._part_awaited(now):
            out.append(Send(self.plan.stores, PartExpedite(self.job)))
        if option == "stop_now":
            if self._down_reason:
                self.inspect = True
            else:
                out += self._hold(now)
        return out

    def _reset(self) -> None:
        self.part_state, self.part_serial = "", ""
        self.part_ready_at = self.part_need_by_at = 0.0
        self.escalation, self.stopped, self.not_before_at = "", False, 0.0
        self._early_start = None
        self.phase, self.start_at, self.technician = "watch", math.inf, ""
        self.latest_start_at = math.inf
        self.kind = "planned"

    def _renew(self, share: float, now: float) -> None:
        self.estimator.renew(share)
        if share >= 1.0:
            self._life_busy_s = self.busy_s(now)


def windows_of(cfg: CellConfig, retry_s: float,
               models: Mapping[str, HealthModel] | None = None) -> dict[str, MaintenanceWindow]:
    """A window planner per wearing machine of a cell with ``maintenance.negotiate`` (none
    otherwise), each estimator started from its trained model in ``models``
    (``maintenance.models``) or else from the cell file's figures (:func:`prior_model`);
    the cost rule's life is the cell file's either way (ADR 77)."""
    s = cfg.maintenance
    if s is None or not s.negotiate:
        return {}
    out: dict[str, MaintenanceWindow] = {}
    for m in cfg.machines:
        d = m.degradation
        if d is None:
            continue
        model = prior_model(d)
        rule = None
        if s.decide == "cost":      # the plant's rates, the machine's own life (ADR 75)
            rule = CostRule.of(model, *job_costs(d, s.costs, s.part(d.part).cost))
        plan = WindowPlan(CREW_ID, d.maintenance_s, d.part, d.restore, s.risk, s.lookahead_s,
                          retry_s, s.window_grace_s, s.window_slot_s, STORES_ID,
                          d.repair_s, s.miss_quantile, rule, d.reading_interval_s)
        trained = (models or {}).get(m.id, model)
        out[m.id] = MaintenanceWindow(m.id, plan, estimator(s.estimator, trained))
    return out
