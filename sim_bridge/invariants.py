"""The invariants of docs/architecture.md ("Invariants"), checked on a run's event log.

Each check reads only the event log (plus the run's message counters), so
the same functions can judge a log written by another driver.  A check
returns a list of violations; the run report keeps name → passed.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from sim_bridge.maintenance import invariants as maintenance

if TYPE_CHECKING:
    from agents.cell.specs import KpiSpec

EPS = 1e-9


def parse(events: list[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in events]


def no_operation_twice(evs: list[dict[str, Any]]) -> list[str]:
    """An operation task completes successfully at most once."""
    ok: defaultdict[str, int] = defaultdict(int)
    for e in evs:
        if e["ev"] == "op_done" and e["quality"] == "ok":
            ok[e["task"]] += 1
    return [f"task {t} completed {n} times" for t, n in sorted(ok.items()) if n > 1]


def one_operation_per_machine(evs: list[dict[str, Any]]) -> list[str]:
    """A machine never runs two operations at once."""
    running: dict[str, str] = {}
    out = []
    for e in evs:
        if e["ev"] == "op_start":
            m = e["machine"]
            if m in running:
                out.append(f"t={e['t']}: {m} started {e['task']} while running {running[m]}")
            running[m] = e["task"]
        elif e["ev"] in ("op_done", "op_abort"):
            running.pop(e["machine"], None)
    return out


def lot_splits(evs: list[dict[str, Any]]) -> dict[str, tuple[str, int]]:
    """Lots split off an order (``lot_split``): lot task prefix -> (order, op index of the
    split).  The order's own tasks keep the prefix ``ORDER``; a split-off lot's are
    ``ORDER/b/k`` (docs/escalation.md, "Split the order")."""
    return {lot: (e["order"], int(e["op_index"])) for e in evs if e["ev"] == "lot_split"
            for lot in e["lots"] if lot != e["order"]}


def routing_order(evs: list[dict[str, Any]]) -> list[str]:
    """Operation k of an order starts only after operation k-1 finished ok.  For a lot split
    off at operation s, operations before s were done by the order's lot before the split."""
    finished: dict[tuple[str, int], float] = {}
    splits = lot_splits(evs)
    out = []
    for e in evs:
        task = e.get("task", "")
        if e["ev"] not in ("op_start", "op_done") or "/" not in task:
            continue
        order, _, k = task.rpartition("/")
        if not k.isdigit():
            continue
        idx = int(k)
        if e["ev"] == "op_done" and e["quality"] == "ok":
            finished[(order, idx)] = e["t"]
        elif e["ev"] == "op_start" and idx > 0:
            before = order
            if order in splits and idx - 1 < splits[order][1]:
                before = splits[order][0]     # done by the order's lot before the split
            prev = finished.get((before, idx - 1))
            if prev is None or prev > e["t"] + EPS:
                out.append(f"t={e['t']}: {task} started before {before}/{idx - 1} finished")
    return out


SAFE_DEFAULT_USER = "(safe default)"   # agents.escalation.lifecycle.SAFE_DEFAULT_USER


def open_escalations(evs: list[dict[str, Any]]) -> dict[str, str]:
    """Escalations raised and not resolved by the end of the log: id -> order ("" if none)."""
    raised = {e["escalation"]: e.get("order", "") for e in evs if e["ev"] == "escalation_raised"}
    for e in evs:
        if e["ev"] == "escalation_resolved":
            raised.pop(e["escalation"], None)
    return raised


def split_lots_complete(evs: list[dict[str, Any]]) -> list[str]:
    """A split order is completed only when each of its lots did every operation from the
    split on (the last one any of its lots did)."""
    done = {e["order"] for e in evs if e["ev"] == "order_completed"}
    ok: dict[str, set[int]] = defaultdict(set)
    for e in evs:
        if e["ev"] == "op_done" and e["quality"] == "ok":
            prefix, _, k = e["task"].rpartition("/")
            if k.isdigit():
                ok[prefix].add(int(k))
    out = []
    for e in evs:
        if e["ev"] != "lot_split" or e["order"] not in done:
            continue
        lots, first = sorted(e["lots"]), int(e["op_index"])
        last = max((k for lot in lots for k in ok[lot]), default=first)
        for lot in lots:
            missing = sorted(set(range(first, last + 1)) - ok[lot])
            if missing:
                out.append(f"order {e['order']} completed, but its lot {lot} never did "
                           f"operations {missing}")
    return out


def orders_accounted(evs: list[dict[str, Any]], orders: list[str], ended_by: str) -> list[str]:
    """Every released order ends completed, cancelled by a human decision, or waiting on an
    open escalation ("nothing lost"); an order the agents flagged non-routine without escalating
    (escalation off) counts as waiting on that case.  A run cut by ``--until`` is exempt.
    A split order is completed only with every lot done (:func:`split_lots_complete`)."""
    done = {e["order"] for e in evs if e["ev"] == "order_completed"}
    flagged = {e["order"] for e in evs if e["ev"] == "non_routine"}
    waiting = set(open_escalations(evs).values())
    out = [f"order {e['order']} cancelled without a person's decision ({e.get('user')!r})"
           for e in evs if e["ev"] == "order_cancelled"
           and e.get("user", SAFE_DEFAULT_USER) in ("", SAFE_DEFAULT_USER)]
    cancelled = {e["order"] for e in evs if e["ev"] == "order_cancelled"}
    out += split_lots_complete(evs)
    if ended_by == "until":
        return out
    return out + [f"order {o} neither completed, cancelled nor waiting on an escalation"
                  for o in orders
                  if o not in done and o not in cancelled and o not in flagged | waiting]


def cap_never_exceeded(evs: list[dict[str, Any]], spec: KpiSpec) -> list[str]:
    """The cell never draws more than its peak cap (energy.peak_cap_kw), at any instant.

    Each machine's power follows its events as the power leases count it
    (agents/energy/plan.py): idle, down, standby, off and wake at their power, an
    operation at the most it draws (setup or busy for its capability) from its
    ``op_start`` to its end.  Instantaneous power under the cap keeps every billing
    window's mean under it too.  Events of one instant are applied together.

    The cap is the effective one: a raise a supervisor approved (issue 17,
    docs/energy.md) lifts it from the manager's ``cap_raised`` (to its ``cap_kw``)
    until its ``cap_restored``."""
    assert spec.energy is not None and spec.energy.peak_cap_kw is not None
    cap = base_cap = spec.energy.peak_cap_kw
    models = {m: s.power_model for m, s in spec.machines.items()}
    kw = {m: p.idle_kw for m, p in models.items()}
    out: list[str] = []
    i, n = 0, len(evs)
    while i < n:
        t = evs[i]["t"]
        while i < n and evs[i]["t"] == t:
            e = evs[i]
            i += 1
            if e["ev"] in ("cap_raised", "cap_restored"):     # the effective cap
                cap = float(e["cap_kw"]) if e["ev"] == "cap_raised" else base_cap
                continue
            m = e.get("machine")
            if m not in models:
                continue
            p = models[m]
            ev = e["ev"]
            if ev == "op_start":
                cap_name = spec.capability(str(e.get("order", "")), str(e["task"]))
                kw[m] = max(p.kw("setup"), p.kw("busy", cap_name))
            elif ev in ("op_done", "op_abort", "fault", "repaired"):
                kw[m] = p.idle_kw
            elif ev == "power_state":
                state = str(e["state"])
                if state == "wake":
                    src = str(e.get("from", ""))
                    wake_s = p.wake_s.get(src, 0.0)
                    kw[m] = p.wake_kwh.get(src, 0.0) * 3600.0 / wake_s if wake_s > 0 else 0.0
                else:
                    kw[m] = p.kw(state)
        total = sum(kw.values())
        if total > cap + EPS:
            out.append(f"t={t}: the cell draws {total:.3f} kW, over the cap of {cap:g} kW")
    return out


def check_all(events: list[str], orders: list[str], ended_by: str,
              verified: int, delivered: int, *, cap: KpiSpec | None = None,
              escalating: bool = True) -> dict[str, list[str]]:
    """Every invariant; ``cap``: the cell's KPI spec when it has a peak cap, which adds
    ``peak_cap_never_exceeded``; ``escalating``: the agents raise cases to a console."""
    evs = parse(events)
    return {
        "orders_accounted_for": orders_accounted(evs, orders, ended_by),
        "no_operation_executed_twice": no_operation_twice(evs),
        "no_machine_runs_two_operations": one_operation_per_machine(evs),
        "routing_order_respected": routing_order(evs),
        "only_verified_messages_acted_on": (
            [] if delivered <= verified else [f"{delivered} delivered > {verified} verified"]),
        **({"peak_cap_never_exceeded": cap_never_exceeded(evs, cap)} if cap is not None else {}),
        # only when the log has maintenance (issue 16)
        **maintenance.check(evs, escalating=escalating),
    }
