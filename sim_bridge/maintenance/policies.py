"""Maintenance policies in the simulator, each run on the same seeds (common random numbers).

``run_to_failure``  never maintains; a failure is repaired (technician, part, ``repair_s``).
``preventive``      replaces the part at a fixed operating age: the age-replacement
                    optimum ``T*`` of the machine's fitted Weibull life, the ``T`` that
                    minimises the long-run cost rate
                    ``(Cp R(T) + Cf F(T)) / integral_0^T R(t) dt`` (Barlow & Proschan),
                    with ``Cp`` and ``Cf`` the cost of a planned and of a corrective job
                    (downtime, technician, part).  Stops the machine when due.
``condition_based`` stops the machine as soon as the smoothed health index crosses its
                    alarm level (the ``threshold`` estimator's alarm), without planning.
``negotiated``      decides nothing here: the machine agents plan their windows and lease
                    them from the crew agent (agents/maintenance/, negotiated.py); the
                    simulator keeps the technicians' hands, the shelf and the repairs.
``predictive``      the machine's estimator (``threshold`` by default) gives a remaining-
                    life distribution; when its ``risk`` quantile — the *latest safe
                    start*, in clock time at the machine's recent load — comes within
                    ``lookahead_s``, a window is planned: it starts at the first moment
                    the machine is idle within ``slot_s`` of the latest safe start (a
                    low-load slot: nothing is aborted, little life is thrown away), and
                    at the latest safe start if no such moment comes.

The policies see what a machine agent would see: readings, whether the machine
works, its operating-hour counter since the last replacement, and the models
trained from earlier runs (``autocell maintenance fit``); never the hidden wear.

This is the simulator-side half of issue 16: the predictive policy decides here,
alone; negotiating the window with technician and stores agents and re-routing
orders around it as a lease is the next step (docs/maintenance.md).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any


from agents.cell.maintenance import MaintenanceSettings
from agents.maintenance.costs import age_replacement_optimum, job_costs
from agents.maintenance.estimators import Estimator, ThresholdEstimator, estimator
from agents.maintenance.rul import HealthModel

from .escalations import escalation
from .negotiated import attach_negotiated
from .workshop import Workshop

if TYPE_CHECKING:
    from sim_bridge.degradation import DegradingMachine
    from sim_bridge.virtual import VirtualCell

__all__ = ["POLICIES", "Controller", "age_replacement_optimum", "attach", "job_costs"]

POLICIES = ("run_to_failure", "preventive", "condition_based", "predictive", "negotiated")


@dataclass
class _Machine:
    dm: DegradingMachine
    est: Estimator | None
    interval_s: float = math.inf      # preventive: operating age to replace at
    due_at: float | None = None       # predictive: latest safe start of the planned window
    pending: bool = False             # a planned job has been asked for
    last_busy: float = 0.0
    last_at: float = 0.0
    load: float = 0.5                 # recent busy fraction (smoothed)
    started: bool = False             # the planned job has taken the machine down
    fail_by: float | None = None      # cell time of the RUL's miss quantile, last reading


class Controller:
    """One policy over every degrading machine of a cell."""

    def __init__(self, policy: str, degrading: Mapping[str, DegradingMachine], workshop: Workshop,
                 models: Mapping[str, HealthModel], *, estimator_spec: Any = "threshold",
                 risk: float = 0.3, lookahead_s: float = 900.0, slot_s: float = 300.0,
                 alarm_wear: float = 0.7, record: Any = None, miss_quantile: float = 0.05,
                 escalation_deadline_s: float = 600.0) -> None:
        if policy not in POLICIES:
            raise ValueError(f"unknown maintenance policy {policy!r}: use one of "
                             f"{', '.join(POLICIES)}")
        self.policy, self.workshop = policy, workshop
        self.risk, self.lookahead_s, self.slot_s = risk, lookahead_s, slot_s
        self.record = record or (lambda *a, **k: None)
        self.miss_quantile, self.escalation_deadline_s = miss_quantile, escalation_deadline_s
        self.escalations: list[dict[str, Any]] = []     # maintenance_escalation fields
        self.machines: dict[str, _Machine] = {}
        costs = workshop.settings.costs
        for mid, dm in degrading.items():
            dm.workshop = workshop
            model = models.get(mid)
            est: Estimator | None = None
            if policy == "condition_based" and model is not None:
                est = ThresholdEstimator(model, alarm_wear=alarm_wear)
            elif policy == "predictive" and model is not None:
                est = estimator(estimator_spec, model)
            pm = _Machine(dm, est)
            if policy == "preventive" and model is not None:
                cp, cf = job_costs(dm.spec, costs, workshop.settings.part(dm.spec.part).cost)
                pm.interval_s = age_replacement_optimum(model, cp, cf)
                self.record("maintenance_policy", machine=mid, policy=policy,
                            interval_s=round(pm.interval_s, 3))
            self.machines[mid] = pm
            dm.listeners.append(partial(self._on, pm))

    def _on(self, pm: _Machine, what: str, fields: dict[str, Any]) -> None:
        dm = pm.dm
        if what == "maintenance":
            pm.started = True
            return
        if what == "repaired":
            pm.pending, pm.due_at, pm.started, pm.fail_by = False, None, False, None
            if pm.est is not None:
                kind = fields.get("kind")
                pm.est.renew(1.0 if kind == "corrective" else dm.spec.restore)
            return
        if what != "reading" or pm.pending or not dm.m.up:
            return
        now = dm.env.now
        busy_now = dm.busy_s()
        if now > pm.last_at:
            frac = (busy_now - pm.last_busy) / (now - pm.last_at)
            pm.load = 0.9 * pm.load + 0.1 * frac
        pm.last_busy, pm.last_at = busy_now, now
        age = dm.busy_age_s()
        if pm.est is not None:
            pm.est.observe(now, fields, busy=bool(dm.m.task), age_s=age)
            q = pm.est.rul().quantile(self.miss_quantile)
            pm.fail_by = now + q / max(pm.load, 0.05) if math.isfinite(q) else None
        if self.policy == "preventive":
            if age >= pm.interval_s:
                self._start(pm, "age")
        elif self.policy == "condition_based":
            if isinstance(pm.est, ThresholdEstimator) and pm.est.alarm():
                self._start(pm, "alarm")
        elif self.policy == "predictive" and pm.est is not None:
            self._predict(pm, now)

    def _predict(self, pm: _Machine, now: float) -> None:
        assert pm.est is not None
        if pm.due_at is None:
            safe_busy_s = pm.est.rul().quantile(self.risk)
            if math.isinf(safe_busy_s):
                return
            safe_s = safe_busy_s / max(pm.load, 0.05)       # operating seconds -> clock
            if safe_s > self.lookahead_s:
                return
            pm.due_at = now + safe_s
            self.record("maintenance_planned", machine=pm.dm.m.spec.id,
                        latest_start_at=round(pm.due_at, 6), health=round(pm.est.health(), 4))
            self._check_part(pm, now)
            due, grace = pm.due_at, pm.dm.spec.reading_interval_s
            pm.dm.env.timeout(safe_s + grace).callbacks.append(
                lambda _e: self._check_started(pm, due))
        if now >= pm.due_at:
            self._start(pm, "latest_safe_start")
        elif not pm.dm.m.task and now >= pm.due_at - self.slot_s:
            self._start(pm, "idle")

    # -- escalations (sim_bridge/maintenance/escalations.py) --------------------------------
    def _escalate(self, pm: _Machine, cause: str, **context: Any) -> None:
        mid = pm.dm.m.spec.id
        fields = escalation(f"{mid}/m{len(self.escalations) + 1}", cause, mid, pm.dm.env.now,
                            self.escalation_deadline_s, context)
        self.escalations.append(fields)
        self.record("maintenance_escalation", **fields)

    def _check_part(self, pm: _Machine, now: float) -> None:
        """No part on the shelf and none due before the latest safe start."""
        assert pm.due_at is not None
        part = pm.dm.spec.part
        shelf = self.workshop.shelves.get(part)
        level = shelf.level if shelf is not None else self.workshop.settings.part(part).stock
        due = min(shelf.deliveries, default=math.inf) if shelf is not None else math.inf
        if level == 0 and due > pm.due_at:
            self._escalate(pm, "maintenance_no_part", part=part,
                           latest_start_at=round(pm.due_at, 6),
                           delivery_at=None if math.isinf(due) else round(due, 6))

    def _check_started(self, pm: _Machine, due: float) -> None:
        """A reading interval after the latest safe start: has the window begun?"""
        dm = pm.dm
        if pm.due_at != due or pm.started or not dm.m.up:
            return                  # done, under way, or failed (counted as a failure)
        part = dm.spec.part
        shelf = self.workshop.shelves.get(part)
        if self.workshop.crew.items and shelf is not None and shelf.level == 0:
            return                  # the crew is there, the part is not: raised when planned
        self._escalate(pm, "maintenance_no_window", latest_start_at=round(due, 6),
                       technicians_free=len(self.workshop.crew.items))

    def on_fault(self, machine: str | None, reason: str | None) -> None:
        """A machine went down: a failure before the miss quantile of its last prediction
        is a prediction badly wrong."""
        pm = self.machines.get(machine or "")
        if pm is None or reason == "maintenance" or pm.fail_by is None:
            return
        now = pm.dm.env.now
        if now >= pm.fail_by:
            return
        self.record("prediction_miss", machine=machine, reason=reason,
                    fail_by=round(pm.fail_by, 6), early_by_s=round(pm.fail_by - now, 6),
                    quantile=self.miss_quantile,
                    latest_start_at=None if pm.due_at is None else round(pm.due_at, 6))
        self._escalate(pm, "maintenance_prediction_miss", reason=reason,
                       fail_by=round(pm.fail_by, 6))

    def _start(self, pm: _Machine, why: str) -> None:
        pm.pending = True
        self.record("maintenance_requested", machine=pm.dm.m.spec.id, policy=self.policy,
                    why=why)
        pm.dm.env.process(self.workshop.planned(pm.dm))


def attach(cell: VirtualCell, policy: str, models: Mapping[str, HealthModel],
           **params: Any) -> Controller:
    """Give ``cell`` (before it runs) a workshop from its ``maintenance:`` section and the
    policy over its degrading machines."""
    settings = cell.cfg.maintenance or MaintenanceSettings()
    backend = cell.plant.backend
    workshop = Workshop(cell.env, settings, backend.record)
    params.setdefault("escalation_deadline_s", cell.cfg.escalation.final_deadline_s)
    ctl = Controller(policy, backend.degrading, workshop, models, record=backend.record,
                     **params)
    backend.maintenance = ctl       # what /metrics reads at scrape time (ops/metrics.py)
    if policy == "negotiated":
        attach_negotiated(cell, workshop, models)
    inner = backend.record

    def record(ev: str, **fields: Any) -> None:     # the log unchanged; faults seen
        inner(ev, **fields)
        if ev == "fault":
            ctl.on_fault(fields.get("machine"), fields.get("reason"))
    backend.record = record
    return ctl
