"""The machine agent: bids for operations it is capable of, runs them in the plant."""

from __future__ import annotations

from typing import Any

from agents.base import Timing
from agents.energy.aware import MachineEnergy
from agents.energy.client import PowerClient, PowerNeeds
from agents.energy.right_shift import PlannedSlot, right_shift
from agents.maintenance import hook as maint_hook
from agents.maintenance.window import MaintenanceWindow
from agents.negotiation.strategies import ResourceStrategy, Slot
from agents.protocol.actions import Action, CancelTimer, Command, Log, SetTimer
from agents.protocol.messages import (
    Baton,
    CallForProposals,
    Explore,
    ExploreReady,
    Intention,
    Message,
    PowerGrant,
)
from agents.rehearsal import MachineRehearsal

from .base import PlantEventIn
from .resource import ResourceAgent, Task


class MachineAgent(ResourceAgent):
    """One machine: capabilities with per-unit processing times, setups, power draw."""

    role = "machine"
    kind = "operation"

    def __init__(self, agent_id: str, *, timing: Timing, strategy: ResourceStrategy,
                 location: str, capabilities: dict[str, float], setup_s: float = 0.0,
                 power_idle_kw: float = 0.0, power_busy_kw: float = 0.0,
                 orders: list[str] | None = None, power_manager: str = "",
                 power_needs: PowerNeeds | None = None, energy: MachineEnergy | None = None,
                 maintenance: MaintenanceWindow | None = None, **kw: Any) -> None:
        super().__init__(agent_id, timing=timing, strategy=strategy, location=location, **kw)
        self.capabilities = dict(capabilities)
        self.setup_s = setup_s
        self.power_busy_kw = power_busy_kw
        self.power_idle_kw = power_idle_kw
        self.last_capability = ""
        # rehearsal plans conservatively: a setup before every operation
        self.rehearsal = MachineRehearsal(
            agent_id, orders=list(orders or []),
            duration_s=dict(self.capabilities), setup_s=setup_s,
        ) if timing.rehearsal_passes > 0 and orders else None
        self.planned_order = self.rehearsal is not None
        # a cell with a peak cap: operations start only under a power lease
        self.power = (PowerClient(agent_id, power_manager, power_needs, timing.retry_s)
                      if power_manager and power_needs is not None else None)
        # an energy-aware machine: prices slots with the tariff, sleeps through long gaps
        self.energy = energy
        self.asleep = ""                          # "", or the state slept in: standby, off
        self._wake_at: float | None = None
        self._idle_since: float | None = None    # idle with nothing booked since
        self._gap_from = 0.0                     # asleep: when the gap slept through began
        self._deepen_at: float | None = None     # the ``deepen`` timer (standby -> off)
        # a wake-up this agent started: the state it wakes from, and when it is awake
        self._waking: tuple[str, float] | None = None
        self._later_slots: set[str] = set()       # tasks last quoted a later, cheaper slot
        self._retimed: set[str] = set()           # committed tasks moved later (ADR 97)
        # a cell with negotiated maintenance: windows leased from the crew (agents/maintenance/)
        self.maint = maintenance
        maint_hook.bind(self)

    def on_start(self, now: float) -> list[Action]:
        """An energy-aware machine starts its idle clock now: nothing is booked before
        the first award, however long the orders rehearse (``_sleep_or_not``)."""
        return self._after(super().on_start(now), now) if self.energy is not None else []

    def on_message(self, msg: Message, now: float) -> list[Action]:
        if isinstance(msg.body, (Explore, ExploreReady, Intention, Baton)):
            if self.rehearsal is None:
                self.ignored += 1
                return []
            return self.rehearsal.on_message(msg.sender, msg.body, msg.conv)
        if isinstance(msg.body, PowerGrant):
            if self.power is None or msg.sender != self.power.manager:
                self.ignored += 1
                return []
            news, out = self.power.on_grant(msg.body, now)
            return self._after(out + (self._try_start(now) if news else []), now)
        maint = maint_hook.on_message(self, msg, now)
        if maint is not None:
            return self._after(maint, now)
        return self._after(super().on_message(msg, now), now)

    def on_timer(self, key: str, now: float) -> list[Action]:
        maint = maint_hook.on_timer(self, key, now)
        if maint is not None:
            return self._after(maint, now)
        if key == "power_retry" and self.power is not None:
            return self.power.on_retry(now)
        if key in ("idle_check", "offer_check") and self.energy is not None:
            self._idle_since = None if self.running is not None else self._idle_since
            return self._after([], now)
        if key == "wake" and self.energy is not None:
            self._wake_at = None
            if not self.asleep or not self.up:   # down: woken in time once repaired
                return []
            self._woken(now)
            return [Command("set_state", self.id, "", {"state": "idle"})]
        if key == "deepen" and self.energy is not None:
            self._deepen_at = None
            return self._after([], now)
        return self._after(super().on_timer(key, now), now)

    def power_gate(self, task_id: str, task: Task, now: float) -> list[Action] | None:
        if self.power is None and self.maint is None:
            return None
        cap = task.cfp.capability
        setup = self.setup_s if cap != self.last_capability else 0.0
        duration = setup + self.capabilities[cap] * task.cfp.quantity
        waiting = maint_hook.gate(self, task, duration, now)
        if waiting is not None or self.power is None:
            return waiting
        return self.power.gate(task_id, task.award_epoch, cap, duration, now)

    def earliest_gap(self, earliest_at: float, duration_s: float, now: float) -> float:
        start = super().earliest_gap(earliest_at, duration_s, now)
        if self.maint is not None and self.maint.blocks(start, duration_s):
            start = super().earliest_gap(self.maint.end_at, duration_s, now)
        return start

    def _power_wanted(self) -> list[tuple[str, int]]:
        """The leases still of use: the running task's and those of ready committed tasks."""
        return [(tid, t.award_epoch) for tid, t in self.tasks.items()
                if t.state == "running" or (t.state == "committed" and t.ready)]

    def _after(self, out: list[Action], now: float) -> list[Action]:
        """``out`` plus the release of every lease no task needs any more, and, for an
        energy-aware machine, standby through a gap that pays for the wake-up."""
        if self.power is not None:
            out = out + self.power.reconcile(self._power_wanted())
        if self.maint is not None:
            # a task held for a person's decision (ADR 72) is not the machine working
            self.maint.track(now, self.running is not None
                             and self.running not in self.unknown.values())
        if self.energy is not None:
            out = out + self._sleep_or_not(now)
        return out

    def _sleep_or_not(self, now: float) -> list[Action]:
        """Go to standby when idle with a gap worth sleeping through; keep the wake-up
        timer at the next booked start (agents/energy/aware.py, "Standby").

        The gap runs to the next start the machine expects: its booked (committed) work
        *and* the slots it has offered and still holds.  An offer starting within the
        break-even keeps it awake until the offer is decided (a rehearsed plan's awards
        come in a burst: a machine that slept on the first of them woke at once for the
        next).  A gap whose end is unknown — nothing booked, or the booked start already
        passed (the part is late) — is idled for the break-even first, then slept
        through; an offer pending meanwhile does not restart that clock.

        Standby or off: a known gap at least ``off_after_s`` long is slept through off;
        asleep in standby, the machine goes off once the gap has lasted ``off_after_s``
        (the end still unknown, a ``deepen`` timer) or when what remains of a known gap
        is that long (agents/energy/aware.py, "Off")."""
        e = self.energy
        assert e is not None
        if not self.up or self.running is not None or (self.power and self.power.asked):
            self._idle_since = None
            return []
        be = e.break_even_s
        booked = [t.start_at for t in self.tasks.values() if t.state == "committed"]
        next_at = min(booked) if booked else None
        known = next_at is not None and next_at > now     # the booked gap's end is known
        out: list[Action] = []
        if not self.asleep:
            if be is None:
                return []
            offers = [t for t in self.tasks.values()
                      if t.state == "held" and t.hold_until_at > now and t.start_at < now + be]
            if offers or (known and not e.worth_sleeping(next_at - now)):   # type: ignore[operator]
                if known:
                    self._idle_since = None
                elif self._idle_since is None:
                    self._idle_since = now
                    out.append(SetTimer("idle_check", now + be))
                if offers:           # look again when the offer lapses, if nobody decides
                    out.append(SetTimer("offer_check", min(t.hold_until_at for t in offers)))
                return out
            if not known and not self._plan_done():
                # the gap's end is unknown: idle for the break-even first and sleep only if
                # still nothing came (never worse than twice the best choice)
                if self._idle_since is None:
                    self._idle_since = now
                    return [SetTimer("idle_check", now + be)]
                if now < self._idle_since + be:
                    return []
            if self._waking is not None and now < self._waking[1]:
                # still waking (a cold start is longer than the standby break-even): the
                # plant puts no waking machine to sleep, so look again once it is awake
                return out + [SetTimer("idle_check", self._waking[1])]
            self._gap_from = now if known or self._idle_since is None else self._idle_since
            self._idle_since = None
            self.asleep = "standby"
            if known and e.sleep_state(next_at - now) == "off":  # type: ignore[operator]
                self.asleep = "off"
            out.append(Command("set_state", self.id, "", {"state": self.asleep}))
        off_after = e.off_after_s
        if self.asleep == "standby" and off_after is not None:
            # off once the gap has lasted off_after_s (its end unknown), or now if what is
            # left of a known gap is that long; else standby is the cheaper for the rest
            deepen_at = (self._gap_from + off_after if not known
                         else now if next_at - now >= off_after  # type: ignore[operator]
                         else None)
            if deepen_at is not None and deepen_at <= now:
                self.asleep = "off"
                out.append(Command("set_state", self.id, "", {"state": "off"}))
            elif deepen_at is not None and deepen_at != self._deepen_at:
                self._deepen_at = deepen_at
                out.append(SetTimer("deepen", deepen_at))
        if e.wake_early and known:
            assert next_at is not None
            wake_at = max(now, next_at - e.wake_from(self.asleep))
            if wake_at != self._wake_at:
                self._wake_at = wake_at
                out.append(SetTimer("wake", wake_at))
        return out

    def _plan_done(self) -> bool:
        """A rehearsed cell's machine that has run its share of the plan: every operation is
        negotiated at once when the rehearsal ends (agents/order/agent.py ``_end_rehearsal``),
        so a machine that has finished work and holds no task — none booked, none offered —
        has no planned work left, and the gap runs to the end of the run unless a fault
        hands work back.  It sleeps at once rather than idling the break-even first."""
        return self.planned_order and bool(self.completed) and not self.tasks

    def can_do(self, cfp: CallForProposals) -> bool:
        return cfp.kind == "operation" and cfp.capability in self.capabilities

    def _capability_before(self, start_at: float, now: float) -> str:
        prev = self.last_capability
        for s, _, tid in self.busy_intervals(now):
            if s >= start_at:
                break
            prev = self.tasks[tid].cfp.capability
        return prev

    def quote(self, cfp: CallForProposals, now: float) -> Slot:
        if self.energy is None:
            return self._quote_from(cfp.earliest_start_at, cfp, now)
        e = self.energy
        # asleep, a slot starts after the wake-up — except in a rehearsed cell: its calls
        # carry the planned starts, and a later quote could put the machine's planned
        # order out of line; the award wakes it, at worst ``wake_s`` late
        earliest = max(cfp.earliest_start_at, now + e.wake_from(self.asleep)) \
            if self.asleep and not self.planned_order else cfp.earliest_start_at
        best = first = self._quote_from(earliest, cfp, now)
        best_cost = first_cost = e.slot_cost(cfp.capability, first.start_at, first.setup_s,
                                             first.processing_s)
        for t in e.shift_candidates(best.start_at)[1:]:
            later = self._quote_from(t, cfp, now)
            if later.finish_at > cfp.due_at:
                break
            c = e.slot_cost(cfp.capability, later.start_at, later.setup_s, later.processing_s)
            if c < best_cost:
                best, best_cost = later, c
        if best_cost > (1.0 - e.min_saving) * first_cost:     # not worth the wait
            best, best_cost = first, first_cost
        # a task won on a later slot is held until its start (``hold_until``)
        self._later_slots.intersection_update(self.tasks)     # quoted, then lost or gone
        if best is first:
            self._later_slots.discard(cfp.task)
        else:
            self._later_slots.add(cfp.task)
        return Slot(best.start_at, best.finish_at,
                    max(0.0, best.start_at - max(now, cfp.earliest_start_at)), best.setup_s,
                    best.processing_s, 0.0, best.energy_kwh, best_cost)

    def _quote_from(self, earliest_at: float, cfp: CallForProposals, now: float) -> Slot:
        processing = self.capabilities[cfp.capability] * cfp.quantity
        # Try with setup; if the slot found follows the same capability, drop the setup.
        start = self.earliest_gap(earliest_at, processing + self.setup_s, now)
        setup = self.setup_s if self._capability_before(start, now) != cfp.capability else 0.0
        if setup == 0.0 and self.setup_s > 0.0:
            start = self.earliest_gap(earliest_at, processing, now)
            if self._capability_before(start, now) != cfp.capability:
                setup = self.setup_s
                start = self.earliest_gap(earliest_at, processing + setup, now)
        finish = start + setup + processing
        energy = self.power_busy_kw * (setup + processing) / 3600.0
        return Slot(start, finish, max(0.0, start - max(now, cfp.earliest_start_at)), setup,
                    processing, 0.0, energy)

    def hold_until(self, task_id: str, task: Task) -> float:
        """A task won on a later, cheaper slot, or moved later within the plan's float
        (ADR 97), waits for its start (when its parts come earlier, the machine sleeps
        through the wait if that pays: ``_after``)."""
        return (task.start_at if task_id in self._later_slots or task_id in self._retimed
                else 0.0)   # (a task re-awarded leaves _retimed first: on_committed)

    def _shifts_plan(self) -> bool:
        """Re-time the plan's work within its float (ADR 97): an energy-aware machine of
        a rehearsed cell with ``plan_shift``, not under a peak cap."""
        e = self.energy
        return (e is not None and e.plan_shift and self.planned_order and self.power is None
                and e.break_even_s is not None)

    def on_committed(self, task_id: str, task: Task, now: float) -> list[Action]:
        if not self._shifts_plan():
            return []
        task.info["planned_at"] = task.start_at
        task.info["planned_s"] = task.finish_at - task.start_at
        self._retimed.discard(task_id)
        return self._retime(now)

    def _retime(self, now: float) -> list[Action]:
        """Move committed, not yet started tasks later within their calls'
        ``latest_finish_at`` and before this machine's next task, where that lowers the
        machine's energy cost (:func:`agents.energy.right_shift.right_shift` over this
        machine's own timeline: the sequence kept, only priced moves), from the starts
        they were awarded at, so every award re-times the whole timeline alike.  A task
        whose call gives no bound, or that its bound does not leave room for, stays; so do
        the slots offered and not yet decided (a plan's awards come in a burst: a task moved
        into the next offer's place would come back with its award, the machine perhaps
        asleep by then)."""
        e = self.energy
        assert e is not None
        self._retimed.intersection_update(self.tasks)     # handed back, cancelled, gone
        slots: list[PlannedSlot] = []
        due: dict[str, float] = {}
        for tid, t in sorted(self.tasks.items()):
            offered = t.state == "held" and t.hold_until_at >= now
            if t.state != "committed" and not offered:
                continue
            at = float(t.info.get("planned_at", t.start_at))
            s = PlannedSlot(tid, 0, self.id, t.cfp.capability, at,
                            float(t.info.get("setup_s", 0.0)),
                            at + float(t.info.get("planned_s", t.finish_at - t.start_at)))
            bound = 0.0 if offered else t.cfp.latest_finish_at
            due[tid] = bound if bound > 0 and s.finish <= bound else s.finish
            slots.append(s)
        if not slots:
            return []
        free_at = max(now, self.busy_until_at) if self.running is not None else now
        horizon = (min(free_at, min(s.start for s in slots)), max(due.values()))
        out: list[Action] = []
        # after its last task a rehearsed machine sleeps at once (ADR 94)
        moves = right_shift(slots, {self.id: e}, due, horizon, tail_idles=False)
        for s, moved in zip(slots, moves, strict=True):
            t = self.tasks[s.order]
            if t.state != "committed":
                continue
            if moved.start > s.start:
                self._retimed.add(s.order)
            else:
                self._retimed.discard(s.order)
            if moved.start != t.start_at:
                out.append(Log("retimed", {"agent": self.id, "task": s.order,
                                           "order": t.order, "planned_at": s.start,
                                           "start_at": moved.start,
                                           "latest_finish_at": t.cfp.latest_finish_at}))
                t.start_at, t.finish_at = moved.start, moved.finish
        return out

    def busy_intervals(self, now: float) -> list[tuple[float, float, str]]:
        """As a resource's, a task moved later within the plan's float counted at the
        start it was awarded at: a call of the plan is quoted against the plan, and the
        move is made again with it (``_retime``)."""
        out = super().busy_intervals(now)
        if not self._retimed:
            return out
        fixed = []
        for a, b, tid in out:
            t = self.tasks[tid]
            if tid in self._retimed and t.state == "committed" and "planned_at" in t.info:
                at = float(t.info["planned_at"])
                a, b = at, at + (b - a)
            fixed.append((a, b, tid))
        fixed.sort()
        return fixed

    def start_command(self, task_id: str, task: Task, now: float) -> Command:
        self._later_slots.discard(task_id)
        self._retimed.discard(task_id)
        self._woken(now)             # the plant wakes a sleeping machine before it starts
        cap = task.cfp.capability
        setup = self.setup_s if cap != self.last_capability else 0.0
        processing = self.capabilities[cap] * task.cfp.quantity
        return Command("start_operation", self.id, task_id, {
            "capability": cap, "quantity": task.cfp.quantity, "order": task.order,
            "award_epoch": task.award_epoch, "setup_s": setup, "processing_s": processing,
            "duration_s": setup + processing})

    def on_finished(self, task: Task, now: float) -> None:
        self.last_capability = task.cfp.capability

    def _woken(self, now: float) -> None:
        """The machine is being woken (by our ``wake`` timer, or by the plant for the
        operation we start): remember from what and until when, for a fault meanwhile."""
        if self.asleep and self.energy is not None:
            self._waking = (self.asleep, now + self.energy.wake_from(self.asleep))
        self.asleep = ""

    def on_plant_event(self, ev: PlantEventIn, now: float) -> list[Action]:
        was_up = self.up
        handled, first = maint_hook.on_plant_event(self, ev, now)
        out = self._after(first, now) if handled else first + self._on_plant_event(ev, now)
        if was_up and not self.up and self.energy is not None:
            out += self._asleep_through_fault(now)
        return out

    def _asleep_through_fault(self, now: float) -> list[Action]:
        """Down: a machine broken while waking is handed back from the repair in the state
        it was waking from (the plant's rule, ADR 89), so it sleeps again in our books too,
        and its wake-up is planned anew for its next booked start (ADR 91).  The wake-up
        timer of a sleeping machine is dropped: the work it was for went back at the fault."""
        waking, self._waking = self._waking, None
        if not self.asleep and waking is not None and now < waking[1]:
            self.asleep = waking[0]
            self._gap_from = now
        if not self.asleep or self._wake_at is None:
            return []
        self._wake_at = None
        return [CancelTimer("wake")]

    def _on_plant_event(self, ev: PlantEventIn, now: float) -> list[Action]:
        if ev.event == "operation_done":
            quality = str((ev.data or {}).get("quality", "ok"))
            return self._after(self.finish(ev.task, now, quality, self.location), now)
        # a machine that breaks down asleep (or waking) comes back asleep: ``asleep`` stays
        return self._after(super().on_plant_event(ev, now), now)
