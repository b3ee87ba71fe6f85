"""The maintenance invariants, checked on a run's event log (like sim_bridge/invariants.py).

* no operation starts on a machine inside its maintenance window (between its
  ``fault`` with reason ``maintenance`` and the ``repaired`` that follows);
* technician capacity is never exceeded: a technician is on one job at a time
  (``maintenance_start`` .. the machine's ``maintenance_done`` or
  ``maintenance_cancelled``);
* a part is never used twice: each part serial ends at most one job, and the
  stores agent (negotiated maintenance) consumes it once and never holds it again;
* no operation starts inside a window a machine leased from the crew (negotiated
  maintenance: from the machine's ``maint_window`` until its end, or until the
  window lapsed, was refused or was cancelled) — and nothing *runs into* it: an
  operation started before the window ends before it begins;
* a leased window starts before its latest safe start, or a person was asked: every
  ``maint_window`` booked past it (``late``) has a matching escalation — the machine
  raised ``maintenance_no_window`` or ``maintenance_no_part`` for that job (from its
  ``maint_needed`` to the booking), or another case of the machine was still open
  then (one raiser, one case at a time: agents/maintenance/hook.py).  Checked only
  when the run's agents escalate (a cell with a console): nobody is asked otherwise.
  The simulator's central policy is not checked here: it starts up to a reading
  interval late by design and escalates after that (policies.py ``_check_started``).

They join the run's invariants only when the log has maintenance in it, so the
report of a cell without degrading machines keeps its keys.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["check", "late_windows_escalated", "no_operation_in_leased_window",
           "no_operation_in_window", "parts_used_once", "technicians_within_capacity"]


def no_operation_in_window(evs: list[dict[str, Any]]) -> list[str]:
    inside: dict[str, float] = {}
    out = []
    for e in evs:
        m = e.get("machine")
        if e["ev"] == "fault" and e.get("reason") == "maintenance" and m:
            inside[m] = e["t"]
        elif e["ev"] == "repaired" and m:
            inside.pop(m, None)
        elif e["ev"] == "op_start" and m in inside:
            out.append(f"t={e['t']}: {m} started {e['task']} inside its maintenance window "
                       f"(since t={inside[m]})")
    return out


def technicians_within_capacity(evs: list[dict[str, Any]]) -> list[str]:
    on_job: dict[str, str] = {}          # technician -> machine
    out = []
    for e in evs:
        if e["ev"] == "maintenance_start":
            tech = e["technician"]
            if tech in on_job:
                out.append(f"t={e['t']}: {tech} started on {e['machine']} while on "
                           f"{on_job[tech]}")
            on_job[tech] = e["machine"]
        elif e["ev"] in ("maintenance_done", "maintenance_cancelled") and "technician" in e:
            on_job.pop(e["technician"], None)
        elif e["ev"] == "maintenance_cancelled":
            for tech, m in list(on_job.items()):
                if m == e["machine"]:
                    del on_job[tech]
    return out


def parts_used_once(evs: list[dict[str, Any]]) -> list[str]:
    """Each serial ends at most one job in the plant's log, is taken off the books at most
    once in the stores agent's (``part_consumed``), and is never held for a job after it
    was consumed (``part_held``)."""
    used: dict[str, float] = {}
    consumed: dict[str, float] = {}
    out = []
    for e in evs:
        if e["ev"] == "maintenance_done" and "part_serial" in e:
            serial = e["part_serial"]
            if serial in used:
                out.append(f"t={e['t']}: part {serial} used again (first at t={used[serial]})")
            used[serial] = e["t"]
        elif e["ev"] in ("part_consumed", "part_held") and "serial" in e:
            serial = e["serial"]
            if serial in consumed:
                what = "consumed" if e["ev"] == "part_consumed" else "held"
                out.append(f"t={e['t']}: the stores {what} part {serial} again (consumed at "
                           f"t={consumed[serial]})")
            if e["ev"] == "part_consumed":
                consumed[serial] = e["t"]
    return out


_WINDOW_ENDS = ("maint_window_lapsed", "maint_refused", "maint_cancelled", "maint_job_done")


def no_operation_in_leased_window(evs: list[dict[str, Any]]) -> list[str]:
    """Operations against the machines' leased windows, from the agents' own log lines."""
    window: dict[str, tuple[float, float]] = {}      # machine -> (start_at, end_at)
    running: dict[str, tuple[str, float]] = {}       # machine -> (task, started at)
    out = []
    for e in evs:
        ev = e["ev"]
        if ev == "maint_window":
            window[e["agent"]] = (e["start_at"], e["end_at"])
            m = e["agent"]
            if m in running and e["start_at"] < running[m][1] - 1e-6:
                out.append(f"t={e['t']}: {m} leased a window from t={e['start_at']} while "
                           f"{running[m][0]} runs (planned to t={running[m][1]})")
        elif ev in _WINDOW_ENDS:
            window.pop(e["agent"], None)
        elif ev == "started" and e.get("agent") in window:
            m = e["agent"]
            start_at, end_at = window[m]
            t, dur = e["t"], float(e.get("duration_s", 0.0))
            if t < end_at - 1e-6 and t + dur > start_at + 1e-6:
                out.append(f"t={t}: {m} started {e['task']} ({dur:g} s) into its leased "
                           f"window [{start_at}, {end_at})")
        elif ev == "started":
            running[e["agent"]] = (e["task"], e["t"] + float(e.get("duration_s", 0.0)))
        elif ev in ("finished", "fault") and e.get("agent") in running:
            running.pop(e["agent"], None)
    return out


_LATE_CAUSES = ("maintenance_no_window", "maintenance_no_part")


def late_windows_escalated(evs: list[dict[str, Any]]) -> list[str]:
    """Leased windows booked past their latest safe start that nobody was asked about."""
    needed: dict[tuple[str, str], float] = {}               # (machine, job) -> asked at
    raised: dict[str, list[tuple[float, str, str]]] = {}    # machine -> (t, case, cause)
    closed: dict[str, float] = {}                           # case -> decided or resolved at
    late: list[dict[str, Any]] = []
    for e in evs:
        ev = e["ev"]
        if ev == "maint_needed":
            needed.setdefault((e["agent"], e["job"]), e["t"])
        elif ev == "escalate" and "agent" in e:
            raised.setdefault(e["agent"], []).append((e["t"], e["escalation"], e["cause"]))
        elif ev in ("decision_applied", "escalation_resolved"):
            closed.setdefault(e["escalation"], e["t"])
        elif ev == "maint_window" and e.get("late"):
            late.append(e)
    out = []
    for w in late:
        m, t = w["agent"], w["t"]
        since = needed.get((m, w["job"]), t)
        if not any((cause in _LATE_CAUSES and since <= at <= t)          # for this job
                   or (at <= t and closed.get(case, math.inf) > t)         # a case open
                   for at, case, cause in raised.get(m, [])):
            out.append(f"t={t}: {m} booked {w['job']} from t={w['start_at']}, past its "
                       f"latest safe start t={w['latest_start_at']}, and asked nobody")
    return out


def check(evs: list[dict[str, Any]], *, escalating: bool = True) -> dict[str, list[str]]:
    """The maintenance invariants by name; empty when the log has no maintenance.
    ``escalating``: the run's agents raise cases to a console (a late window must then
    have been escalated)."""
    if not any(e["ev"] in ("maintenance_start", "maintenance_done") for e in evs):
        return {}
    found = {"no_operation_inside_maintenance_window": no_operation_in_window(evs),
             "technician_capacity_respected": technicians_within_capacity(evs),
             "no_part_used_twice": parts_used_once(evs)}
    if any(e["ev"] == "maint_window" for e in evs):     # negotiated windows only
        found["no_operation_inside_leased_window"] = no_operation_in_leased_window(evs)
        if escalating:
            found["window_before_latest_safe_start_or_escalated"] = \
                late_windows_escalated(evs)
    return found
