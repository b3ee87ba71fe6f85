"""``autocell replay LOG --check [--until T]``: a recorded run, re-run offline, decision by decision.

A decision log (agents/runtime/recorder.py) holds, for every input an
agent got, the input itself and the actions the agent answered with.  The
agents are deterministic sans-io objects built from the cell and the seed
the log's header names, so re-running a log needs no plant, no network and
no clock: build each agent afresh, feed it its recorded inputs in the
recorded order, and compare what it answers with what it answered then.
A crash in the log is a fresh agent; its restart rebuilds it from the
inputs it had before (as the journal did), then it goes on.  The first
answer that differs is the *divergence*: agent, input, expected, actual.

Not replayed: the console agent (its state is the escalation store, not
its inputs) and actions a driver carried out itself (a supervisor's).

This module also writes the header's ``run`` block (:func:`run_header`) and
switches recording on for ``autocell run`` (:func:`record_virtual`), so the
two ends of the format live together.
"""

from __future__ import annotations

import argparse
import base64
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from agents.base import Agent
from agents.runtime.journal import Input, apply, decode
from agents.runtime.recorder import (
    DecisionLog,
    describe_run,
    actions_json,
    canonical,
    input_from_json,
    is_decision_log,
    read_lines,
    verify_log,
)
from security.crypto import SigningKey
from security.errors import ConfigurationError

CONSOLE_ID = "console"


# -- the run a log records ------------------------------------------------------------------

def run_header(cell: Any) -> dict[str, Any]:
    """The header's ``run`` of a :class:`sim_bridge.virtual.VirtualCell`."""
    order_s, resource_s = cell._strategies
    return describe_run(cell.cfg, cell.seed, driver="virtual", order_strategy=order_s,
                        resource_strategy=resource_s, escalation=cell.console is not None,
                        clock_base_at=cell.clock_base_at)


def record_virtual(cell: Any, sink: IO[bytes], key: SigningKey | None = None) -> DecisionLog:
    """Switch recording on for a :class:`sim_bridge.virtual.VirtualCell` (before it runs);
    ``key``: the run key that signs the seals (default: a fresh one)."""
    log = DecisionLog(sink, key or SigningKey.generate(), host="virtual", run=run_header(cell))
    cell.runner.recorder = log
    return log


# -- rebuilding and checking ----------------------------------------------------------------

def build_from_header(run: dict[str, Any]) -> dict[str, Agent]:
    """The cell's agents, fresh, as the recorded run built them."""
    from agents.cell.build import build_agents, policy_of
    from agents.escalation.policy import OFF
    from ops.config import cell_from_dict

    cfg = cell_from_dict(run["cell"], source=f"{run.get('source', '<log>')} (from the log)")
    return build_agents(cfg, run["seed"], order_strategy_name=run.get("order_strategy"),
                        resource_strategy_name=run.get("resource_strategy"),
                        escalation=policy_of(cfg) if run.get("escalation") else OFF)


@dataclass
class Divergence:
    entry: int
    t: float
    agent: str
    input: dict[str, Any]
    expected: list[Any]
    actual: list[Any]

    def to_json(self) -> dict[str, Any]:
        return {"entry": self.entry, "t": self.t, "agent": self.agent, "input": self.input,
                "expected": self.expected, "actual": self.actual}


@dataclass
class ReplayReport:
    entries: int = 0                 # inputs replayed
    agents: int = 0
    skipped: dict[str, int] = field(default_factory=dict)   # agent -> entries not replayed
    restarts: int = 0
    divergence: Divergence | None = None

    @property
    def ok(self) -> bool:
        return self.divergence is None


def replay_check(path: str | Path, until: float | None = None) -> ReplayReport:
    """Feed each agent its recorded inputs; stop at the first decision that differs."""
    lines = read_lines(path)
    header = next(lines, None)
    if header is None or header.get("k") != "header":
        raise ConfigurationError(f"{path}: not a decision log (no header line)")
    run = header["run"]
    agents = build_from_header(run)
    history: dict[str, list[Input]] = {a: [] for a in agents}
    rep = ReplayReport()
    fed: set[str] = set()
    for e in lines:
        kind = e.get("k")
        if until is not None and e.get("t", 0.0) > until:
            break
        if kind == "rt":
            agent_id = e["agent"]
            if e["event"] == "restart" and agent_id in agents:
                rep.restarts += 1
                agents[agent_id] = build_from_header(run)[agent_id]
                if "journal" in e:      # what the runner rebuilt it from
                    history[agent_id] = [decode(base64.b64decode(r)) for r in e["journal"]]
                for before in history[agent_id]:
                    apply(agents[agent_id], before)
            continue
        if kind != "in":
            continue
        agent_id = e["agent"]
        inp = input_from_json(e["in"], e["t"])
        if agent_id not in agents or inp is None:
            rep.skipped[agent_id] = rep.skipped.get(agent_id, 0) + 1
            continue
        history[agent_id].append(inp)
        fed.add(agent_id)
        try:
            actual = json.loads(canonical(actions_json(apply(agents[agent_id], inp))))
        except Exception as exc:    # an agent that raises on a recorded input diverges too
            actual = [["raised", type(exc).__name__, str(exc)]]
        rep.entries += 1
        if actual != e["out"]:
            rep.divergence = Divergence(e["n"], e["t"], agent_id, e["in"], e["out"], actual)
            break
    rep.agents = len(fed)
    return rep


# -- the command ----------------------------------------------------------------------------

def _first_difference(expected: list[Any], actual: list[Any]) -> str:
    for i, (x, y) in enumerate(zip(expected, actual, strict=False)):
        if x != y:
            return f"action {i}: expected {json.dumps(x)}, got {json.dumps(y)}"
    if len(expected) != len(actual):
        return (f"expected {len(expected)} actions, got {len(actual)}; first unmatched: "
                + json.dumps((expected + actual)[min(len(expected), len(actual))]))
    return "same actions"


def _describe_input(d: dict[str, Any]) -> str:
    k = d["kind"]
    if k == "message":
        return f"{d['type']} from {d['from']} (epoch {d['epoch']}, seq {d['seq']})"
    if k == "plant":
        return f"plant event {d['event']} of {d['resource']} {d.get('task') or ''}".rstrip()
    if k == "timer":
        return f"timer {d['key']}"
    return k


def cmd_replay(args: argparse.Namespace) -> int:
    if args.what_if:
        raise ConfigurationError("--what-if is not built yet; use --check")
    rep = replay_check(args.log, args.until)
    if args.json:
        print(json.dumps({"ok": rep.ok, "entries": rep.entries, "agents": rep.agents,
                          "restarts": rep.restarts, "skipped": rep.skipped,
                          "divergence": rep.divergence.to_json() if rep.divergence else None},
                         indent=2))
    elif rep.divergence is None:
        skipped = sum(rep.skipped.values())
        print(f"replay OK: {rep.entries} inputs to {rep.agents} agents gave the recorded "
              f"decisions ({rep.restarts} restarts; {skipped} entries not replayed: "
              f"{', '.join(sorted(rep.skipped)) or 'none'})")
    else:
        d = rep.divergence
        print(f"replay DIVERGES at entry {d.entry} (t={d.t:g} s): agent {d.agent}, input "
              f"{_describe_input(d.input)}: {_first_difference(d.expected, d.actual)}")
    return 0 if rep.ok else 1


def verify_decision_log(path: str | Path, as_json: bool = False) -> int:
    """``autocell audit verify LOG`` on a decision log: exit 0 intact, 1 naming the first
    bad entry (:func:`agents.runtime.recorder.verify_log`)."""
    rep = verify_log(path)
    summary: dict[str, Any] = {"ok": rep.ok, "kind": "decision_log", "entries": rep.entries,
                               "segments": rep.segments, "host": rep.host,
                               "key_id": rep.key_id, "head": rep.head}
    if not rep.ok:
        summary.update(first_bad_entry=rep.bad_entry, problem=rep.problem)
    if as_json:
        print(json.dumps(summary, indent=2))
    elif rep.ok:
        print(f"decision log OK: {rep.entries} entries in {rep.segments} signed segments "
              f"(host {rep.host}, key {rep.key_id}), head {rep.head[:16]}…")
    else:
        at = f" at entry {rep.bad_entry}" if rep.bad_entry is not None else ""
        print(f"decision log BROKEN{at}: {rep.problem}")
    return 0 if rep.ok else 1


__all__ = ["is_decision_log", "verify_decision_log", "replay_check", "record_virtual",
           "run_header", "add_parsers"]


def add_parsers(sub: Any) -> None:
    """``replay`` (called by :mod:`ops.cli`)."""
    sp = sub.add_parser("replay", help="re-run a decision log offline and check every decision")
    sp.add_argument("log", help="a decision log (autocell run --decision-log FILE)")
    sp.add_argument("--check", action="store_true", default=True,
                    help="feed each agent its recorded inputs; report the first divergence "
                         "(the default)")
    sp.add_argument("--what-if", metavar="STRATEGY", default=None,
                    help="(not built yet) the same orders and faults under another strategy")
    sp.add_argument("--until", type=float, default=None, metavar="T",
                    help="stop at cell time T (s)")
    sp.add_argument("--json", action="store_true", help="print one JSON object")
    sp.set_defaults(func=cmd_replay)

