"""``autocell replay LOG [--check [--until T] | --what-if STRATEGY|cell:PATH [--set P=V]]``:
a recorded run, re-run offline.

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
its inputs; under ``up`` its process keeps a log of its own, which replays
with all its entries counted as not replayed) and actions a driver carried
out itself (a supervisor's).

Replay reads what it can, but a log is only as good as its chain: every
replay also verifies the log as ``autocell audit verify`` does
(:func:`agents.runtime.flight_log.verify_log`) and, when it is not intact —
cut, edited, entries removed or reordered, no final seal — says so
(``log_intact: false`` and the problem in ``--json``) and points to ``audit
verify``.  A log that is only *cut* (everything verifies up to where it
stops: no final seal, an unsigned or incomplete tail — what a process killed
with ``kill -9`` leaves, ``LogReport.cut``) is still ``replay OK`` when every
decision matched, with a line saying where the signed part ends (``log_cut``
in ``--json``): the issue's ``up`` run with kill -9 restarts must replay.
Any other damage makes ``--check`` say ``INCOMPLETE`` and exit 1 even if
every decision it could replay matched: a check cannot vouch for entries
whose chain is broken.  An intact log adds nothing to the output (ADR 104).

This module also writes the header's ``run`` block (:func:`run_header`) and
switches recording on for ``autocell run`` (:func:`record_virtual`), so the
two ends of the format live together.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from agents.base import Agent
from agents.negotiation.fingerprint import run_fingerprints
from agents.runtime.flight_log import read_lines, verify_log
from agents.runtime.journal import Input, apply, decode
from agents.runtime.recorder import (
    DecisionLog,
    LogReport,
    actions_json,
    canonical,
    describe_run,
    input_from_json,
    is_decision_log,
)
from ops.words import counted as _n
from security.crypto import SigningKey
from security.errors import ConfigurationError

if TYPE_CHECKING:
    from ops.cell_change import CellChange

CONSOLE_ID = "console"


# -- the run a log records ------------------------------------------------------------------

def run_header(cell: Any, strategy_code: dict[str, Any] | None = None) -> dict[str, Any]:
    """The header's ``run`` of a :class:`sim_bridge.virtual.VirtualCell`
    (``strategy_code``: its strategies' fingerprints, when the caller has them already)."""
    order_s, resource_s = cell._strategies
    faults = cell.faults.model_dump(mode="json") if cell.faults is not None else None
    return describe_run(cell.cfg, cell.seed, driver="virtual", order_strategy=order_s,
                        resource_strategy=resource_s, escalation=cell.console is not None,
                        clock_base_at=cell.clock_base_at, faults=faults, models=cell.models,
                        strategy_code=strategy_code or run_fingerprints(cell.cfg, order_s,
                                                                        resource_s))


def record_virtual(cell: Any, sink: IO[bytes], key: SigningKey | None = None,
                   strategy_code: dict[str, Any] | None = None) -> DecisionLog:
    """Switch recording on for a :class:`sim_bridge.virtual.VirtualCell` (before it runs);
    ``key``: the run key that signs the seals (default: a fresh one)."""
    log = DecisionLog(sink, key or SigningKey.generate(), host="virtual",
                      run=run_header(cell, strategy_code))
    cell.runner.recorder = log
    return log


# -- rebuilding and checking ----------------------------------------------------------------

def build_from_header(run: dict[str, Any]) -> dict[str, Agent]:
    """The cell's agents, fresh, as the recorded run built them (their estimators from the
    trained models the header keeps)."""
    from agents.cell.build import build_agents, policy_of
    from agents.escalation.policy import OFF
    from agents.maintenance.rul import HealthModel
    from ops.config import cell_from_dict

    cfg = cell_from_dict(run["cell"], source=f"{run.get('source', '<log>')} (from the log)")
    models = {m: HealthModel.from_json(d) for m, d in (run.get("models") or {}).items()}
    # a host's energy manager told its plant process of raised caps (ADR 91)
    return build_agents(cfg, run["seed"], order_strategy_name=run.get("order_strategy"),
                        resource_strategy_name=run.get("resource_strategy"),
                        escalation=policy_of(cfg) if run.get("escalation") else OFF,
                        models=models,
                        plant=cfg.sim.identity if run.get("driver") == "host" else "")


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
    verified: LogReport | None = None   # what ``audit verify`` finds of the log
    code_changed: list[str] = field(default_factory=list)   # strategies edited since

    @property
    def ok(self) -> bool:
        """No decision differed (whether the log is whole is :attr:`log_intact`)."""
        return self.divergence is None

    @property
    def log_intact(self) -> bool:
        return self.verified is None or self.verified.ok

    @property
    def log_whole_as_far_as_it_goes(self) -> bool:
        """Intact, or only cut short (a killed process's log): nothing in it was changed."""
        return self.verified is None or self.verified.ok or self.verified.cut

    def integrity_json(self) -> dict[str, Any]:
        return integrity_json(self.verified)


def integrity_json(verified: LogReport | None) -> dict[str, Any]:
    """``log_intact``, and for a log that is not, where and what ``audit verify`` finds."""
    if verified is None or verified.ok:
        return {"log_intact": True}
    return {"log_intact": False, "log_cut": verified.cut, "log_bad_entry": verified.bad_entry,
            "log_problem": verified.problem}


def not_intact(path: str | Path, bad_entry: int | None, problem: str) -> str:
    """One line on a log that does not verify: a replay of it shows only what it holds."""
    at = f" at entry {bad_entry}" if bad_entry is not None else ""
    return (f"{path} is not intact{at}: {problem}; a replay vouches only for what the log "
            f"now holds — check it with `autocell audit verify {path}`")


def code_changes(run: dict[str, Any]) -> list[str]:
    """The strategies whose code differs from the recording's (the header's
    ``strategy_code``): a divergence is then no sign that the run does not reproduce.
    A log without fingerprints (recorded before they were kept) says nothing."""
    recorded = run.get("strategy_code")
    if not isinstance(recorded, dict):
        return []
    from ops.config import cell_from_dict

    cfg = cell_from_dict(run["cell"], source=f"{run.get('source', '<log>')} (from the log)")
    now = run_fingerprints(cfg, run.get("order_strategy"), run.get("resource_strategy"))
    out = []
    for side, fp in now.items():
        then = recorded.get(side) or {}
        for key in ("class", "version", "source_sha256"):
            if then.get(key) != fp.get(key):
                was, now_ = (str(v)[:12] if key == "source_sha256" else v
                             for v in (then.get(key), fp.get(key)))
                out.append(f"the {side} strategy {fp['class']}: {key} {was} recorded, "
                           f"{now_} now")
                break
    return out


def replay_check(path: str | Path, until: float | None = None) -> ReplayReport:
    """Feed each agent its recorded inputs; stop at the first decision that differs.  The
    log is verified too (:attr:`ReplayReport.verified`): a cut or edited log replays as far
    as it reads, and the report says it is not intact."""
    lines = read_lines(path)
    header = next(lines, None)
    if header is None or header.get("k") != "header":
        raise ConfigurationError(f"{path}: not a decision log (no header line)")
    run = header["run"]
    agents = build_from_header(run)
    history: dict[str, list[Input]] = {a: [] for a in agents}
    rep = ReplayReport(verified=verify_log(path))
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
        if kind == "lost":      # an input the recorder could not encode (ADR 95): its
            # decisions cannot be checked, nor can anything after it in that agent
            rep.divergence = Divergence(e["n"], float(e.get("t") or 0.0),
                                        str(e.get("agent", "")), {"kind": "lost"}, [],
                                        [["lost", str(e.get("error", ""))]])
            break
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
    if rep.divergence is not None:       # only then can edited code be the reason
        rep.code_changed = code_changes(run)
    return rep


# -- what if ---------------------------------------------------------------------------------

WHAT_IF_KPIS = ("orders_completed", "orders_lost", "makespan", "mean_flow_time",
                "tardiness_total", "tardy_orders", "operations", "reroutes", "lease_expiries",
                "escalations_raised", "messages_sent")


def what_if(path: str | Path, order_strategy: str | None = None, *,
            change: CellChange | None = None) -> dict[str, Any]:
    """The recorded run again — same orders, seed, faults — as recorded and under
    ``order_strategy`` and/or a changed cell (``change``, an
    :class:`ops.cell_change.CellChange`); their KPIs side by side, and the orders whose
    lateness changed.

    A log of ``autocell run`` (a virtual run) with only another strategy is re-run with
    its fault scenario: the plant draws the same seeded durations and faults, so the
    recorded run comes out again exactly; under the other strategy the same orders and
    faults meet other decisions (an operation that moves to another machine gets that
    machine's draw).  A log of ``up``, or any log with a changed cell, is re-run on the
    run's plant as the logs recorded it (:mod:`ops.recorded_plant`): each operation's
    duration and quality verdict, each robot drive, each fault and its repair time; the
    "recorded" column is then that history under the recorded cell and strategy in
    virtual time (network and pacing aside, what the cell did).  A changed cell keeps
    the recorded plant of what it leaves alone; a new resource, or one whose times
    changed, runs for the times its entry in the changed cell gives, with no faults
    (:meth:`ops.cell_change.CellChange.fresh`)."""
    from agents.cell.faults import FaultScenario
    from ops.config import cell_from_dict
    from ops.recorded_plant import read_recorded_plant, run_logs

    if order_strategy is not None:
        check_order_strategy(order_strategy)
    lines = read_lines(path)
    header = next(lines, None)
    if header is None or header.get("k") != "header":
        raise ConfigurationError(f"{path}: not a decision log (no header line)")
    run = header["run"]
    history = None
    if run.get("driver") == "host":
        history = read_recorded_plant(run_logs(path))
        if not history.durations:
            raise ConfigurationError(
                f"{path}: --what-if on a log of `up` replays the plant the machine hosts' logs "
                "recorded, and the logs beside this one hold no finished operation (pass a "
                "log from the run's state directory, with its decisions-machines-*.jsonl)")
    elif run.get("driver") != "virtual":
        raise ConfigurationError(f"{path}: --what-if re-runs a log of `autocell run` or "
                                 f"`autocell up`, not of driver {run.get('driver')!r}")
    elif change is not None:
        history = read_recorded_plant([path])
    cfg = cell_from_dict(run["cell"], source=f"{run.get('source', '<log>')} (from the log)")
    recorded_faults = (FaultScenario.model_validate(run["faults"])     # a virtual run's
                       if run.get("faults") and run.get("driver") == "virtual" else None)
    recorded_strategy = run.get("order_strategy") or cfg.negotiation.strategy.order
    plays = [("recorded", cfg, run.get("order_strategy"), history)]
    what_cfg = change.cfg if change is not None else cfg
    what_history = history
    if change is not None and history is not None:
        resources, orders, quality = change.fresh()
        what_history = history.without(resources, orders, quality)
    plays.append(("what_if", what_cfg, order_strategy or run.get("order_strategy"),
                  what_history))
    reports, late = {}, {}
    for label, c, strategy, hist in plays:
        cell = _what_if_cell(c, run, strategy, recorded_faults, hist)
        cell.run()
        reports[label] = _report(cell)
        late[label] = order_lateness(cell)
    what_strategy = order_strategy or str(recorded_strategy)
    out = {"cell": cfg.cell, "seed": run["seed"],
           "strategies": {"recorded": str(recorded_strategy), "what_if": what_strategy},
           "kpis": {k: {label: r.get(k) for label, r in reports.items()} for k in WHAT_IF_KPIS},
           "utilisation": {label: r["utilisation"] for label, r in reports.items()},
           "invariants": {label: all(r["invariants"].values()) for label, r in reports.items()},
           "orders_changed": changed_lateness(late["recorded"], late["what_if"], cfg,
                                              what_cfg),
           **logs_integrity([Path(p) for p in history.logs] if history else [Path(path)])}
    if change is not None:
        resources, orders, quality = change.fresh()
        out["change"] = {"given": change.label, **change.diff.to_json(),
                         "lines": change.diff.lines(),
                         "nominal_times": sorted(resources & {
                             *(m.id for m in what_cfg.machines), *(r.id for r in what_cfg.robots)}),
                         "nominal_orders": sorted(orders)}
    if history is not None:
        out["history"] = {"logs": [Path(p).name for p in history.logs],
                          "operations": len(history.durations),
                          "drives": len(history.drives),
                          "verdicts": sum(len(v) for v in history.qualities.values()),
                          "faults": len(history.breakdowns) + len(history.wear_faults),
                          "wear_faults": len(history.wear_faults), "until_t": history.end_t}
    return out


def logs_integrity(paths: list[Path]) -> dict[str, Any]:
    """``log_intact`` over the logs a what-if read, and the first one that is not with its
    problem: a cut log's run, or recorded plant, is only the part it holds."""
    for path in paths:
        verified = verify_log(path)
        if not verified.ok:
            return {**integrity_json(verified), "log_file": str(path)}
    return {"log_intact": True}


def _what_if_cell(cfg: Any, run: dict[str, Any], strategy: str | None, faults: Any,
                  history: Any) -> Any:
    """One column's cell: on the recorded plant (``history``) — its faults in place of the
    scenario's breakdowns, the scenario's other faults kept — or, without one, the
    header's fault scenario and the simulator's draws."""
    from ops.recorded_plant import play
    from sim_bridge.virtual import VirtualCell

    if history is not None:     # a wear model's faults are left to it (ops/recorded_plant.py)
        played = history.scenario(cfg)
        breakdowns = played.breakdowns
        faults = (faults.model_copy(update={"breakdowns": breakdowns, "mtbf_breakdowns": False})
                  if faults is not None else played.model_copy(update={"breakdowns": breakdowns}))
    cell = VirtualCell(cfg, seed=run["seed"], order_strategy=strategy,
                       resource_strategy=run.get("resource_strategy"), faults=faults)
    if history is not None:
        play(cell, history)
    return cell


def _report(cell: Any) -> dict[str, Any]:
    from sim_bridge.report import build_report
    return build_report(cell)


def order_lateness(cell: Any) -> dict[str, float | None]:
    """Order -> seconds late (0.0 on time), None for an order the run did not complete."""
    from sim_bridge.invariants import parse

    done = {e["order"]: float(e.get("tardiness_s", 0.0))
            for e in parse(cell.events) if e["ev"] == "order_completed"}
    return {o.id: done.get(o.id) for o in cell.cfg.orders}


def changed_lateness(before: dict[str, float | None], after: dict[str, float | None],
                     recorded_cfg: Any, what_if_cfg: Any) -> list[dict[str, Any]]:
    """The orders late by another amount (or done in one column only), in order-id order:
    ``recorded_late_s`` / ``what_if_late_s`` (None: not completed), and each column's due
    date, ``recorded_due_at`` / ``what_if_due_at`` (None: no such order in that cell) — a
    change may move a due date, or run a cell without the recorded orders."""
    due_r = {o.id: o.due_at for o in recorded_cfg.orders}
    due_w = {o.id: o.due_at for o in what_if_cfg.orders}
    out = []
    for order in sorted(set(before) | set(after)):
        x, y = before.get(order), after.get(order)
        if (x is None) != (y is None) or (x is not None and y is not None
                                          and abs(x - y) > 1e-6):
            out.append({"order": order, "recorded_due_at": due_r.get(order),
                        "what_if_due_at": due_w.get(order),
                        "recorded_late_s": None if x is None else round(x, 3),
                        "what_if_late_s": None if y is None else round(y, 3)})
    return out


def print_what_if(w: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    s = w["strategies"]
    change = w.get("change")
    what = s["what_if"] if change is None else (
        change["given"] + (f" · {s['what_if']}" if s["what_if"] != s["recorded"] else ""))
    what_col = "what if"
    t = Table(title=f"what if: cell {w['cell']} · seed {w['seed']} · {s['recorded']} (recorded) "
                    f"vs {what}")
    for name in ("KPI", s["recorded"] + " (recorded)", what_col):
        t.add_column(name, justify="left" if name == "KPI" else "right")

    def fmt(x: Any) -> str:
        return f"{x:.1f}" if isinstance(x, float) else str(x)

    for k, v in w["kpis"].items():
        t.add_row(k, fmt(v["recorded"]), fmt(v["what_if"]))
    machines = sorted(set(w["utilisation"]["recorded"]) | set(w["utilisation"]["what_if"]))
    for m in machines:
        row = [w["utilisation"][x].get(m) for x in ("recorded", "what_if")]
        t.add_row(f"utilisation {m}", *("—" if u is None else f"{u:.0%}" for u in row))
    t.add_row("invariants hold", *(str(w["invariants"][x]) for x in ("recorded", "what_if")))
    h = w.get("history")
    if h is not None:       # the plant as the logs recorded it
        t.caption = (f"both on the recorded plant: {_n(h['operations'], 'operation duration')}"
                     f", {_n(h['verdicts'], 'quality verdict')}, "
                     f"{_n(h['drives'], 'robot drive')} and {_n(h['faults'], 'fault')} with "
                     f"their repair times, from {', '.join(h['logs'])} "
                     f"(cell time 0–{h['until_t']:.0f} s)")
    console = Console()
    console.print(t)
    if w.get("log_cut"):
        console.print(f"{w.get('log_file', '')} ends before its final seal (its process was "
                      f"killed or is still recording): {w.get('log_problem', '')}; what "
                      f"precedes entry {w.get('log_bad_entry')} verifies", markup=False)
    elif not w.get("log_intact", True):
        console.print(not_intact(w.get("log_file", ""), w.get("log_bad_entry"),
                                 w.get("log_problem", "")), markup=False)
    if change is not None:
        console.print("the change: " + "; ".join(change["lines"]))
        if change["nominal_times"] or change["nominal_orders"]:
            console.print("times from the changed cell, not the recording, for: "
                          + ", ".join([*change["nominal_times"], *change["nominal_orders"]]))
    rows = w["orders_changed"]
    if not rows:
        console.print("no order's lateness changed")
        return
    console.print(_orders_table(rows))


def _orders_table(rows: list[dict[str, Any]]) -> Any:
    """The orders whose lateness changed.  One "due at" column while every listed order
    is due when it was; a due date the change moved (or an order only one cell has) gets a
    column per run, so neither date is shown as the other's."""
    from rich.table import Table

    one_due = all(r["recorded_due_at"] == r["what_if_due_at"] for r in rows)
    o = Table(title="orders whose lateness changed (s late; — not completed)")
    names = ("order", "due at", "recorded", "what if") if one_due else (
        "order", "due at (recorded)", "due at (what if)", "recorded", "what if")
    for name in names:
        o.add_column(name, justify="left" if name == "order" else "right")

    def due(x: float | None) -> str:
        return "—" if x is None else f"{x:g}"

    def late(x: float | None) -> str:
        return "—" if x is None else ("on time" if x == 0 else f"{x:.0f}")

    for r in rows:
        dues = [due(r["recorded_due_at"])] if one_due else [
            due(r["recorded_due_at"]), due(r["what_if_due_at"])]
        o.add_row(r["order"], *dues, late(r["recorded_late_s"]), late(r["what_if_late_s"]))
    return o


def decision_logs(state_dir: str | Path) -> list[dict[str, Any]]:
    """The decision logs of an ``up`` run's state directory, for its report.json: file,
    host, boot, lines, and whether ``audit verify`` finds them intact (a process killed
    with ``kill -9`` leaves an unsigned tail: ``ok`` false, ``problem`` says so)."""
    out = []
    for path in sorted(Path(state_dir).glob("decisions-*.jsonl")):
        rep = verify_log(path)
        name, _, boot = path.stem.removeprefix("decisions-").rpartition("-")
        out.append({"file": path.name, "host": rep.host or name,
                    "boot": int(boot) if boot.isdigit() else None,
                    "verified_lines": rep.entries, "key_id": rep.key_id, "ok": rep.ok,
                    **({"cut": rep.cut, "problem": rep.problem} if not rep.ok else {})})
    return out


def recording_cost(cell_path: str, repeats: int = 7, seed: int = 1) -> dict[str, Any]:
    """What recording costs a virtual run: process CPU of ``repeats`` alternating runs
    without and with a decision log (to a temporary file), medians (docs/decisions.md,
    ADR 50).  ``python -c 'from ops.replay import recording_cost as c;
    print(c("cell_configs/demo_cell.yaml"))'``"""
    import statistics
    import tempfile
    import time

    from ops.config import load_cell_or_instance
    from sim_bridge.virtual import VirtualCell

    cfg = load_cell_or_instance(cell_path)
    cpu: dict[str, list[float]] = {"off": [], "on": []}
    entries = 0
    for _ in range(repeats):
        for mode in ("off", "on"):
            cell = VirtualCell(cfg, seed=seed)
            with tempfile.TemporaryFile() as sink:
                log = record_virtual(cell, sink) if mode == "on" else None
                t0 = time.process_time()
                cell.run()
                if log is not None:
                    log.close()
                    entries = log.entries
                cpu[mode].append(time.process_time() - t0)
    off, on = statistics.median(cpu["off"]), statistics.median(cpu["on"])
    return {"cell": cell_path, "entries": entries, "cpu_s_off": round(off, 3),
            "cpu_s_on": round(on, 3), "cost_pct": round(100 * (on - off) / off, 1),
            "us_per_entry": round((on - off) / entries * 1e6, 2) if entries else None}


# -- the command ----------------------------------------------------------------------------

def _first_difference(expected: list[Any], actual: list[Any]) -> str:
    for i, (x, y) in enumerate(zip(expected, actual, strict=False)):
        if x != y:
            return f"action {i}: expected {json.dumps(x)}, got {json.dumps(y)}"
    if len(expected) != len(actual):
        return (f"expected {_n(len(expected), 'action')}, got {len(actual)}; first unmatched: "
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


def damaged(path: str | Path, exc: Exception) -> ConfigurationError:
    """A log that does not read as one: say so, and how to find out what is wrong.  What
    ``audit verify`` finds (the first bad entry) tells a reader more than the class of the
    exception reading it raised (``exc``), which is an implementation detail.  A cell
    file given in its place is told as one, with how to record a log of it."""
    if Path(path).suffix.lower() in (".yaml", ".yml", ".fjs", ".jsp"):
        return ConfigurationError(
            f"{path}: a cell file, not a decision log; record one with `autocell run {path} "
            "--decision-log run.jsonl` (under `autocell up` each process writes its "
            "decisions-*.jsonl into the state directory)")
    try:
        verified: LogReport | None = verify_log(path)
    except (OSError, ValueError, KeyError, TypeError, IndexError, RecursionError):
        verified = None
    if verified is not None and not verified.ok:
        at = f" at entry {verified.bad_entry}" if verified.bad_entry is not None else ""
        found = f"it is broken{at}: {verified.problem}"
    else:
        found = "an entry lacks what a decision log entry holds"
    return ConfigurationError(f"{path}: not a decision log, or a damaged one ({found}); "
                              f"check it with `autocell audit verify {path}`")


def plugin_kinds() -> dict[str, str]:
    """Each installed strategy plug-in and what it is: ``order strategy``, ``resource
    strategy``, or neither / not loadable — so a suggestion offers only what works where it
    is offered (a resource strategy such as ``slack_bidding`` is no ``--what-if``)."""
    from importlib.metadata import entry_points

    from agents.negotiation.strategies import ENTRY_POINT_GROUP, OrderStrategy, ResourceStrategy

    kinds: dict[str, str] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            cls = ep.load()
        except Exception:       # a broken plug-in is named as such, never offered
            kinds[ep.name] = "plug-in that does not load"
            continue
        is_a = isinstance(cls, type)
        kinds[ep.name] = ("order strategy" if is_a and issubclass(cls, OrderStrategy) else
                          "resource strategy" if is_a and issubclass(cls, ResourceStrategy)
                          else "plug-in that is no strategy")
    return dict(sorted(kinds.items()))


def check_order_strategy(name: str) -> None:
    """Refuse, before anything runs, a ``--what-if`` name that is no order strategy: empty
    (it would compare the recorded strategy with itself), unknown, or another kind of
    plug-in.  The suggestions name only order strategies; other plug-ins are named with
    their kind, so nothing offered fails when tried."""
    from agents.negotiation.strategies import ORDER_STRATEGIES, strategy_class

    if not name.strip():
        raise ConfigurationError(
            f"--what-if: no strategy given; name an order strategy "
            f"({', '.join(sorted(ORDER_STRATEGIES))}, …) or a cell file as cell:PATH")
    try:
        strategy_class(name, "order")
    except ConfigurationError as exc:
        raise ConfigurationError(f"--what-if {name}: {_strategy_problem(name, exc)}") from None


def _strategy_problem(name: str, exc: ConfigurationError) -> str:
    import difflib

    from agents.negotiation.strategies import ORDER_STRATEGIES

    kinds = plugin_kinds()
    usable = [*sorted(ORDER_STRATEGIES), *(k for k, v in kinds.items() if v == "order strategy")]
    others = {k: v for k, v in kinds.items() if v != "order strategy"}
    resource_hint = (f"; to try it on the resources, keep the order strategy and pass "
                     f"--set negotiation.strategy.resource={name}")
    if name in others:
        return (f"the installed plug-in {name!r} is a {others[name]}, not an order strategy; "
                f"--what-if takes one of {', '.join(usable)}"
                + (resource_hint if others[name] == "resource strategy" else ""))
    if ":" in name:                 # package.module:Class: the loader's own words
        from agents.negotiation.strategies import strategy_class
        try:
            strategy_class(name, "resource")
        except ConfigurationError:
            return str(exc)
        return f"{name!r} is a resource strategy, not an order strategy{resource_hint}"
    close = difflib.get_close_matches(name, usable, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    aside = ("; installed plug-ins of other kinds: "
             + ", ".join(f"{k} ({v})" for k, v in others.items())) if others else ""
    return (f"unknown order strategy {name!r}{hint}: use one of {', '.join(usable)}, or a "
            f"dotted path 'package.module:Class'{aside}")


def what_if_args(log: str | Path, given: str | None,
                 sets: list[str]) -> tuple[str | None, CellChange | None]:
    """``--what-if STRATEGY | cell:PATH`` and ``--set PATH=VALUE`` as :func:`what_if`'s
    strategy and cell change (None: unchanged)."""
    from ops.cell_change import CELL_PREFIX, cell_change

    strategy, cell_path = given, None
    if given is not None and given.startswith(CELL_PREFIX):
        strategy, cell_path = None, given[len(CELL_PREFIX):]
        if not cell_path:
            raise ConfigurationError("--what-if cell:PATH: name the changed cell file")
    if cell_path is None and not sets:
        return strategy, None
    header = next(read_lines(log), None)
    if header is None or header.get("k") != "header":
        raise ConfigurationError(f"{log}: not a decision log (no header line)")
    return strategy, cell_change(header["run"]["cell"], cell_path=cell_path, sets=sets)


def cmd_replay(args: argparse.Namespace) -> int:
    try:
        return _replay(args)
    except OSError as exc:
        raise ConfigurationError(f"{args.log}: cannot read it ({exc.strerror or exc})") from None
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, RecursionError) as exc:
        raise damaged(args.log, exc) from None


def _regular_file(path: str | Path) -> None:
    """A decision log is a regular file: a FIFO would block the read forever, a device or
    a directory is no log (ADR 104)."""
    from ops.paths import input_kind

    p = Path(path)
    if input_kind(p) == "dir":
        raise ConfigurationError(f"{p}: a directory; replay takes one decision log (an `up` "
                                 "run's are its decisions-*.jsonl)")


def check_until(until: float | None) -> None:
    """``--until T`` is a cell time: NaN compared false with every entry's time (so it
    replayed everything), a negative one stopped before the first (so 0 inputs "OK")."""
    if until is not None and not (math.isfinite(until) and until >= 0):
        raise ConfigurationError(f"--until {until:g}: give a cell time in seconds, finite "
                                 "and not negative (e.g. --until 600)")


def _replay(args: argparse.Namespace) -> int:
    check_until(args.until)
    _regular_file(args.log)
    what_if_given = args.what_if is not None or bool(args.set)
    if args.check and what_if_given:
        raise ConfigurationError(
            "--check and --what-if/--set exclude each other: --check replays the recorded "
            "decisions and compares them, --what-if re-runs the cell under a change and "
            "compares the KPIs; run them one at a time")
    if args.until is not None and what_if_given:
        raise ConfigurationError(
            f"--until {args.until:g} applies to --check only: --what-if compares the KPIs "
            "of whole runs (a run cut at T would count its unfinished orders as lost)")
    if what_if_given:
        strategy, change = what_if_args(args.log, args.what_if, args.set or [])
        w = what_if(args.log, strategy, change=change)
        if args.json:
            print(json.dumps(w, indent=2))
        else:
            print_what_if(w)
        return 0
    rep = replay_check(args.log, args.until)
    if args.json:
        print(json.dumps({"ok": rep.ok, "entries": rep.entries, "agents": rep.agents,
                          "restarts": rep.restarts, "skipped": rep.skipped,
                          "divergence": rep.divergence.to_json() if rep.divergence else None,
                          "code_changed": rep.code_changed,
                          **rep.integrity_json()}, indent=2))
    else:
        for line in check_lines(args.log, rep):
            print(line)
    return 0 if rep.ok and rep.log_whole_as_far_as_it_goes else 1


def check_lines(log: str | Path, rep: ReplayReport) -> list[str]:
    """What ``replay --check`` prints: OK, INCOMPLETE (every decision read matched, but the
    log is not intact, so "OK" would vouch for what it does not hold) or DIVERGES, and for
    a log that is not intact, what ``audit verify`` finds."""
    d = rep.divergence
    if d is not None:
        lines = [f"replay DIVERGES at entry {d.entry} (t={d.t:g} s): agent {d.agent}, input "
                 f"{_describe_input(d.input)}: {_first_difference(d.expected, d.actual)}"]
        lines += [f"note: {c} — the code changed since the recording, which may be why"
                  for c in rep.code_changed]
    else:
        skipped = sum(rep.skipped.values())
        verdict = "OK" if rep.log_whole_as_far_as_it_goes else "INCOMPLETE"
        lines = [f"replay {verdict}: {_n(rep.entries, 'input')} to {_n(rep.agents, 'agent')} "
                 f"gave the recorded decisions ({_n(rep.restarts, 'restart')}; "
                 f"{_n(skipped, 'entry', 'entries')} not replayed: "
                 f"{', '.join(sorted(rep.skipped)) or 'none'})"]
    v = rep.verified
    if v is not None and v.cut:
        lines.append(f"the log ends before its final seal: {v.problem}; what precedes entry "
                     f"{v.bad_entry} verifies, and the replay checked every entry it holds")
    elif v is not None and not v.ok:
        lines.append(not_intact(log, v.bad_entry, v.problem))
    return lines


def trusted_host_key(given: str) -> bytes:
    """``--key HEX|FILE``: the recording host's Ed25519 public key, as 64 hex digits, or a
    file holding them or the key in PEM (``autocell keys``' ``.pub`` form)."""
    from security.keystore import load_public_key

    text = given.strip()
    if len(text) != 64 or not all(c in "0123456789abcdefABCDEF" for c in text):
        path = Path(given)
        if not path.is_file():
            fp = len(text) == 16 and all(c in "0123456789abcdefABCDEF" for c in text)
            raise ConfigurationError(
                f"--key {given}: " + ("16 hex digits are a key_id, the key's fingerprint "
                                      "(report.json names a log's key by it); --key takes "
                                      "the whole key, 64 hex digits (report.json's "
                                      "decision_log.key for `run`), or use --certs DIR"
                                      if fp else "neither 64 hex digits (an Ed25519 public "
                                      "key) nor a file"))
        raw = path.read_bytes()
        if raw.lstrip().startswith(b"-----BEGIN"):
            return load_public_key(path)
        text = raw.decode("ascii", "replace").strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != 32:
        raise ConfigurationError(f"--key {given}: not an Ed25519 public key (64 hex digits, "
                                 "or a PEM public key file)")
    return key


def sealing_identity(host: str) -> str:
    """The identity whose key seals the logs of the process ``host`` under ``up``:
    ``host-NAME`` for a host, ``console`` for the console agent's process."""
    from agents.runtime.host import host_identity

    return CONSOLE_ID if host == CONSOLE_ID else host_identity(host)


def certified_host_key(certs: str | Path, host: str) -> bytes:
    """The public key of the certificate in the keys directory ``certs`` of the identity
    that seals ``host``'s logs (:func:`sealing_identity`), checked against the cell
    authority (a log sealed by that process must carry it)."""
    from security.keystore import KeyDir

    kd = KeyDir(Path(certs))
    who = sealing_identity(host) if host else ""
    if not host or not kd.cert_path(who).exists():
        raise ConfigurationError(
            f"--certs {certs}: no certificate {who or 'host-NAME'} for the log's host "
            f"{host or '(none named)'}, so its key cannot be tied to the host (a log of "
            "`autocell run` is sealed with the run's own key, and a host with no key in the "
            "keys directory seals with a key made for that boot: check those with --key)")
    cert = kd.certificate(who)
    if not cert.verify(kd.authority()):
        raise ConfigurationError(f"--certs {certs}: {who}'s certificate is not signed by the "
                                 "cell authority of that directory")
    return cert.public_key


def verify_decision_log(path: str | Path, as_json: bool = False,
                        certs: str | Path | None = None, key: str | None = None) -> int:
    """``autocell audit verify LOG`` on a decision log: exit 0 intact, 1 naming the first
    bad entry (:func:`agents.runtime.flight_log.verify_log`).

    The chain and the seals are checked against the key the log's own header names, which
    proves the log was not changed after it was sealed — not who sealed it: a log rebuilt
    and re-sealed with a new key verifies.  ``key`` (``--key``: the recording host's public
    key, known from elsewhere) and ``certs`` (a keys directory: the certificate of
    the header's host, ``host-NAME`` or ``console``: :func:`sealing_identity`) tie the log to its host: a header key that is not
    that key fails at entry 0, naming both.  With ``certs``, every input recorded as its
    envelope is also checked against its sender's certificate (the first forged input)."""
    from security.crypto import fingerprint

    try:
        header = next(read_lines(path), None) if key or certs else None
    except (ValueError, KeyError, TypeError, IndexError, RecursionError):
        header = None                   # verify_log names what is wrong with it
    header = header if isinstance(header, dict) else {}
    host, header_key = str(header.get("host", "")), str(header.get("key", ""))
    expected: list[tuple[bytes, str]] = []      # (key, where it comes from)
    if header and key is not None:    # (no header to tie: verify_log says what is wrong)
        expected.append((trusted_host_key(key), "the key given with --key"))
    if header and certs is not None:
        expected.append((certified_host_key(certs, host),
                         f"{sealing_identity(host)}'s certificate key in {certs}"))
    mismatch = next(((k, what) for k, what in expected if k.hex() != header_key.lower()), None)
    if mismatch is not None:
        k, what = mismatch
        try:
            shown = fingerprint(bytes.fromhex(header_key))
        except ValueError:
            shown = repr(header_key[:16])
        problem = (f"the log is not sealed by the key it should be: its header's key {shown} "
                   f"is not {what} ({fingerprint(k)}); the log was re-sealed with another key "
                   "or comes from another host")
        rep = replace(verify_log(path), ok=False, bad_entry=0, problem=problem)
    else:
        rep = verify_log(path, expected[0][0] if expected else None)
    entries = max(0, rep.entries - 1)           # the numbered entries (the header is 0)
    summary: dict[str, Any] = {"ok": rep.ok, "kind": "decision_log", "entries": entries,
                               "segments": rep.segments, "host": rep.host,
                               "key_id": rep.key_id, "head": rep.head,
                               "key_checked": [what for _, what in expected]}
    if not rep.ok:
        summary.update(first_bad_entry=rep.bad_entry, problem=rep.problem, cut=rep.cut)
    if certs is not None and (rep.ok or rep.cut) and not mismatch:
        # a killed host's log (cut) is checked too: what it sealed must be what was sent
        from agents.runtime.segment_log import verify_senders
        from security.keystore import KeyDir

        checked, bad, problem = verify_senders(path, KeyDir(Path(certs)).trust_store())
        summary["inputs_signed_by_senders"] = checked
        if problem:
            rep = replace(rep, ok=False, bad_entry=bad, problem=problem, cut=False)
            summary.update(ok=False, first_bad_entry=bad, problem=problem, cut=False)
    if as_json:
        print(json.dumps(summary, indent=2))
    elif rep.ok:
        signed = summary.get("inputs_signed_by_senders")
        tied = ("; sealed by " + " and ".join(what for _, what in expected)
                if expected else "; sealed by the header's own key (--key or --certs ties "
                "it to the host)")
        print(f"decision log OK: {_n(entries, 'entry', 'entries')} in "
              f"{_n(rep.segments, 'signed segment')} "
              f"(host {rep.host}, key {rep.key_id}), head {rep.head[:16]}…{tied}"
              + ("" if signed is None else f"; {_n(signed, 'input')} signed by their senders"))
    elif rep.cut:
        signed = summary.get("inputs_signed_by_senders")
        print(f"decision log CUT at entry {rep.bad_entry}: {rep.problem}; what precedes "
              f"entry {rep.bad_entry} verifies"
              + ("" if signed is None else f" ({_n(signed, 'input')} signed by their "
                 "senders)"))
    else:
        at = f" at entry {rep.bad_entry}" if rep.bad_entry is not None else ""
        print(f"decision log BROKEN{at}: {rep.problem}")
    return 0 if rep.ok else 1


__all__ = ["is_decision_log", "verify_decision_log", "replay_check", "record_virtual",
           "run_header", "add_parsers"]


def add_parsers(sub: Any) -> None:
    """``replay`` (called by :mod:`ops.cli`)."""
    sp = sub.add_parser("replay", help="re-run a decision log offline and check every decision",
                        epilog="exit codes: 0 every decision replayed as recorded (--check) or "
                               "the what-if compared; 1 a decision diverged, or the log is not "
                               "intact; 2 bad input (not a decision log, a strategy that cannot "
                               "be loaded, a bad --set)")
    sp.add_argument("log", help="a decision log: autocell run --decision-log FILE, or one "
                                "process's decisions-*.jsonl of an `up` run's state directory")
    sp.add_argument("--check", action="store_true",
                    help="feed each agent its recorded inputs; report the first divergence "
                         "(the default without --what-if or --set, which it excludes)")
    sp.add_argument("--what-if", metavar="STRATEGY|cell:PATH", default=None,
                    help="re-run the recorded run (same orders, seed, faults; for a log of "
                         "up or a changed cell, the plant's recorded durations, verdicts, "
                         "drives and faults) under another order strategy, or with the cell "
                         "file PATH; KPIs side by side and the orders whose lateness changed")
    sp.add_argument("--set", metavar="PATH=VALUE", action="append", default=None,
                    help="what if the cell had this change (repeatable; with or without "
                         "--what-if): machines.lathe2=copy:lathe1, orders.o-011.due_at=3600, "
                         "machines.lathe1.capabilities.turning=30, machines.mill2=remove "
                         "(docs/flight-recorder.md, \"What if\")")
    sp.add_argument("--until", type=float, default=None, metavar="T",
                    help="--check: stop at cell time T (s, finite, not negative); not with "
                         "--what-if or --set")
    sp.add_argument("--json", action="store_true", help="print one JSON object")
    sp.set_defaults(func=cmd_replay)

