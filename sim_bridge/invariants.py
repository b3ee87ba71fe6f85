"""The invariants of DESIGN §8, checked on a run's event log.

Each check reads only the event log (plus the run's message counters), so
the same functions can judge a log written by another driver.  A check
returns a list of violations; the run report keeps name → passed.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

EPS = 1e-9


def parse(events: list[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in events]


def no_operation_twice(evs: list[dict[str, Any]]) -> list[str]:
    """An operation task completes successfully at most once."""
    ok = defaultdict(int)
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


def routing_order(evs: list[dict[str, Any]]) -> list[str]:
    """Operation k of an order starts only after operation k-1 finished ok."""
    finished: dict[tuple[str, int], float] = {}
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
            prev = finished.get((order, idx - 1))
            if prev is None or prev > e["t"] + EPS:
                out.append(f"t={e['t']}: {task} started before {order}/{idx - 1} finished")
    return out


SAFE_DEFAULT_USER = "(safe default)"   # agents.escalation.lifecycle.SAFE_DEFAULT_USER


def open_escalations(evs: list[dict[str, Any]]) -> dict[str, str]:
    """Escalations raised and not resolved by the end of the log: id -> order ("" if none)."""
    raised = {e["escalation"]: e.get("order", "") for e in evs if e["ev"] == "escalation_raised"}
    for e in evs:
        if e["ev"] == "escalation_resolved":
            raised.pop(e["escalation"], None)
    return raised


def orders_accounted(evs: list[dict[str, Any]], orders: list[str], ended_by: str) -> list[str]:
    """Every released order ends completed, cancelled by a human decision, or waiting on an
    open escalation (DESIGN §8); an order the agents flagged non-routine without escalating
    (escalation off) counts as waiting on that case.  A run cut by ``--until`` is exempt."""
    done = {e["order"] for e in evs if e["ev"] == "order_completed"}
    flagged = {e["order"] for e in evs if e["ev"] == "non_routine"}
    waiting = set(open_escalations(evs).values())
    out = [f"order {e['order']} cancelled without a person's decision ({e.get('user')!r})"
           for e in evs if e["ev"] == "order_cancelled"
           and e.get("user", SAFE_DEFAULT_USER) in ("", SAFE_DEFAULT_USER)]
    cancelled = {e["order"] for e in evs if e["ev"] == "order_cancelled"}
    if ended_by == "until":
        return out
    return out + [f"order {o} neither completed, cancelled nor waiting on an escalation"
                  for o in orders
                  if o not in done and o not in cancelled and o not in flagged | waiting]


def check_all(events: list[str], orders: list[str], ended_by: str,
              verified: int, delivered: int) -> dict[str, list[str]]:
    evs = parse(events)
    return {
        "orders_accounted_for": orders_accounted(evs, orders, ended_by),
        "no_operation_executed_twice": no_operation_twice(evs),
        "no_machine_runs_two_operations": one_operation_per_machine(evs),
        "routing_order_respected": routing_order(evs),
        "only_verified_messages_acted_on": (
            [] if delivered <= verified else [f"{delivered} delivered > {verified} verified"]),
    }
