"""``autocell bench fjsp DIR``: schedule quality against best-known makespans.

For every instance in ``DIR/bks.csv`` it runs the agents (the full
negotiation, signed messages, in virtual time) and the non-delay dispatch
rules SPT, MWKR and FIFO in the same simulator, checks every schedule for
validity, and reports makespan and gap % to the best-known upper bound.
The agents' makespan is the time the last operation ends, measured from
time 0 — the contract net's own latency (a few hundredths of a time unit)
is included, not subtracted.  Beside it, each instance reports the agents'
``first_start_at`` (when the first operation started: the time the agents
spent talking before production began; the rules decide in zero simulated
time) and ``best_rule`` with ``agents_minus_best_rule``; the summary counts
the instances where the agents are worse than the best rule at all
(``worse_than_best_rule``) and by more than their ``first_start_at``
(``worse_than_best_rule_beyond_latency``).
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any, Callable

from ops.config import cell_from_dict
from security.errors import ConfigurationError
from sim_bridge.baselines import simulate_rule
from sim_bridge.instances import (
    Instance,
    InstanceError,
    instance_path,
    instance_to_cell_dict,
    load_bks,
    load_instance,
)
from sim_bridge.invariants import parse
from sim_bridge.schedule import ScheduledOp, check_schedule, makespan
from sim_bridge.virtual import VirtualCell

RULE_NAMES = ("SPT", "MWKR", "FIFO")


def agent_schedule(inst: Instance, seed: int = 0) -> tuple[list[ScheduledOp], VirtualCell]:
    """Run the agents on ``inst`` and read their schedule back from the event log."""
    cell = VirtualCell(cell_from_dict(instance_to_cell_dict(inst), source=inst.name), seed=seed)
    cell.run()
    machine_index = {m.id: k for k, m in enumerate(cell.cfg.machines)}
    job_index = {o.id: j for j, o in enumerate(cell.cfg.orders)}
    starts: dict[str, tuple[str, float]] = {}
    ops = []
    for e in parse(cell.events):
        if e["ev"] == "op_start":
            starts[e["task"]] = (e["machine"], e["t"])
        elif e["ev"] == "op_done" and e["quality"] == "ok":
            machine, start = starts.pop(e["task"])
            order, _, k = e["task"].rpartition("/")
            ops.append(ScheduledOp(job_index[order], int(k), machine_index[machine], start, e["t"]))
    return ops, cell


def run(directory: Path, *, on_instance: Callable[[dict[str, Any]], None] | None = None
        ) -> dict[str, Any]:
    bks_path = directory / "bks.csv"
    if not bks_path.exists():
        raise ConfigurationError(f"{bks_path} not found: DIR must hold bks.csv and the instances")
    try:
        rows = load_bks(bks_path)
    except (InstanceError, ValueError, KeyError) as exc:
        raise ConfigurationError(f"{bks_path}: {exc}") from exc
    results = []
    for row in rows:
        path = instance_path(row, directory)
        try:
            inst = load_instance(path)
        except InstanceError as exc:
            raise ConfigurationError(str(exc)) from exc
        entry: dict[str, Any] = {"instance": row.instance, "bks": row.best_known_upper,
                                 "jobs": inst.n_jobs, "machines": inst.n_machines}
        schedules: dict[str, list[ScheduledOp]] = {}
        agents_ops, cell = agent_schedule(inst)
        schedules["agents"] = agents_ops
        entry["agents_messages"] = cell.stats.messages_sent
        for rule in RULE_NAMES:
            schedules[rule] = simulate_rule(inst, rule)
        for method, ops in schedules.items():
            problems = check_schedule(inst, ops)
            ms = makespan(ops)
            entry[method] = {"makespan": round(ms, 4),
                             "gap_pct": round(100.0 * (ms - row.best_known_upper)
                                              / row.best_known_upper, 2),
                             "valid": not problems, "problems": problems[:5]}
        entry["agents"]["first_start_at"] = round(min((op.start for op in agents_ops),
                                                       default=0.0), 4)
        best = min(RULE_NAMES, key=lambda r: (entry[r]["makespan"], RULE_NAMES.index(r)))
        entry["best_rule"] = best
        entry["agents_minus_best_rule"] = round(entry["agents"]["makespan"]
                                                - entry[best]["makespan"], 4)
        results.append(entry)
        if on_instance is not None:
            on_instance(entry)
    methods = ("agents",) + RULE_NAMES
    mean_gap = {m: round(statistics.fmean(r[m]["gap_pct"] for r in results), 2) for m in methods}
    worse = [r["instance"] for r in results if r["agents_minus_best_rule"] > 0]
    beyond = [r["instance"] for r in results
              if r["agents_minus_best_rule"] > r["agents"]["first_start_at"]]
    return {"instances": results, "mean_gap_pct": mean_gap,
            "all_valid": all(r[m]["valid"] for r in results for m in methods),
            "worse_than_best_rule": worse, "worse_than_best_rule_beyond_latency": beyond}
