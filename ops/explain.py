"""``autocell explain LOG... SUBJECT [--at TIME] [--json]``: why the cell did what it did, in words.

A decision log (agents/runtime/recorder.py) holds every input of every
agent and every action it answered with; an award also holds the order
strategy's score of every candidate.  This module reads it back as a story
about one *subject*:

* an **order** (``o-011``): each task's calls, who proposed what (finish,
  queue, setup), who refused and why, whom the strategy awarded and by what
  score — and whether that was the earliest finish — leases lost, failures,
  re-routes, escalations, completion;
* a **task** (``o-011/0``): the same for one task, with the resource side
  (started, finished, faults) of every agent that touched it;
* a **resource** (``lathe1``): what it was called for, bid, won, lost and
  did, its faults and repairs, and for every idle stretch *why* it was idle
  (no call reached it, it was down, or it bid and lost — to whom, by what);
* an **escalation** (its id): who raised it, why, what was decided.

Times are cell times (seconds) and, where the run had a wall clock, wall
times.  ``--at TIME`` tells the story up to that cell time and says what
the subject was doing then.  ``--json`` gives the same lines as data.

One log is the whole run of ``autocell run``.  Under ``autocell up`` each
process records only its own agents, and a story crosses them: a machine's
awards are scored in the orders' log.  So ``LOG`` may be several logs, or a
state directory (the logs its report.json names, :func:`state_dir_logs`),
merged into one :class:`Recorded` — entries in cell-time order, every host
sharing the cell clock — as the console's and the Gantt chart's stories are
(ops/stories.py).  A host's header lists the agents it ran; a subject whose
agent none of the given logs records is an error, not a story of silence
("no call reached it" only means something in the log that would hold the
call).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agents.runtime.flight_log import read_lines
from agents.runtime.recorder import is_decision_log
from security.errors import ConfigurationError

IDLE_MIN_S = 1.0      # shorter gaps between jobs are hand-overs, not idleness

PER_PROCESS = frozenset({"host", "boot", "agents", "escalation", "models",
                         "strategy_code"})
"""The header's ``run`` facts that belong to the process that wrote a log, not to the run:
the logs of one ``up`` run differ in these only (agents/runtime/flight_log.py)."""


def _run_identity(run: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in run.items() if k not in PER_PROCESS}


@dataclass
class Recorded:
    """Decision logs read into memory: the run (a header's), the entries, the recording
    host(s), the files, and the agents they record (None: every agent, a virtual run)."""

    run: dict[str, Any]
    entries: list[dict[str, Any]]
    host: str = ""
    logs: list[str] = field(default_factory=list)
    agents: frozenset[str] | None = None

    @classmethod
    def load(cls, path: str | Path) -> Recorded:
        lines = read_lines(path)
        header = next(lines, None)
        if header is None or header.get("k") != "header":
            raise ConfigurationError(f"{path}: not a decision log (no header line); write one "
                                     "with `autocell run CELL --decision-log FILE`")
        run = header.get("run", {})
        agents = run.get("agents")          # a host's log: the agents that process ran
        return cls(run, [e for e in lines if e.get("k") in ("in", "rt")],
                   str(header.get("host", "")), [str(path)],
                   None if agents is None else frozenset(map(str, agents)))

    @classmethod
    def merged(cls, recs: Sequence[Recorded]) -> Recorded:
        """The logs of one run's processes as one (entries in cell-time order).  Refused:
        two logs that each hold a whole run (``autocell run``'s), the same process's log
        twice (one host and boot), and logs whose runs differ in anything but the facts of
        the process that wrote them (:data:`PER_PROCESS`) — another cell, seed, fault
        scenario or strategy would tell one story from two runs."""
        if len(recs) == 1:
            return recs[0]
        first = recs[0]
        whole = [r for r in recs if r.agents is None]
        if len(whole) > 1:
            raise ConfigurationError(
                f"{whole[0].logs[0]} and {whole[1].logs[0]} each hold a whole run (autocell "
                "run --decision-log): explain them one at a time")
        mine = _run_identity(first.run)
        for r in recs[1:]:
            theirs = _run_identity(r.run)
            if theirs != mine:
                differ = sorted(k for k in set(mine) | set(theirs)
                                if mine.get(k) != theirs.get(k))
                raise ConfigurationError(f"{r.logs[0]} and {first.logs[0]} are not logs of "
                                         f"one run (their {', '.join(differ)} differ)")
        seen: dict[tuple[str, Any], str] = {}
        for r in recs:
            process = (r.host, r.run.get("boot"))
            if process in seen:
                raise ConfigurationError(
                    f"{r.logs[0]} and {seen[process]} are the log of one process (host "
                    f"{r.host or '?'}, boot {r.run.get('boot')}): give each log once")
            seen[process] = r.logs[0]
        entries = sorted((e for r in recs for e in r.entries), key=lambda e: e["t"])
        agents = (None if any(r.agents is None for r in recs)
                  else frozenset().union(*(r.agents or frozenset() for r in recs)))
        return cls(first.run, entries, ", ".join(sorted({r.host for r in recs if r.host})),
                   [p for r in recs for p in r.logs], agents)

    def ids(self, section: str) -> list[str]:
        return [x["id"] for x in self.run.get("cell", {}).get(section, [])]

    def records(self, agent: str) -> bool:
        """Whether these logs hold ``agent``'s decisions."""
        return self.agents is None or agent in self.agents

    @property
    def end_t(self) -> float:
        return self.entries[-1]["t"] if self.entries else 0.0


def state_dir_logs(state_dir: str | Path) -> list[Path]:
    """The decision logs of an ``up`` state directory: those its report.json names under
    ``decision_logs`` (docs/flight-recorder.md), else every ``decisions-*.jsonl`` in it,
    else any decision log in it (``run --decision-log`` names its own, e.g. beside the
    ``--escalations-db`` store)."""
    state = Path(state_dir)
    try:
        report = json.loads((state / "report.json").read_text(encoding="utf-8"))
        named = [state / Path(str(d["file"])).name for d in report.get("decision_logs", [])]
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        named = []
    found = [p for p in named if p.is_file()]
    return (found or sorted(state.glob("decisions-*.jsonl"))
            or [p for p in sorted(state.glob("*.jsonl")) if is_decision_log(p)])


def resolve(paths: Iterable[str | Path]) -> list[Path]:
    """Logs given as files or directories: a directory stands for the logs it holds (an
    ``up`` state directory: :func:`state_dir_logs`), a file for itself."""
    out: list[Path] = []
    from ops.paths import input_kind

    for p in map(Path, paths):
        kind = input_kind(p)
        if kind == "dir":
            out += state_dir_logs(p)
        elif kind == "file":
            out.append(p)
        else:
            raise ConfigurationError(f"{p}: no such file or directory")
    seen: dict[Path, Path] = {}
    for p in out:
        real = p.resolve()
        if real in seen:
            raise ConfigurationError(f"{p}: given twice (as {seen[real]} too)")
        seen[real] = p
    return out


def intact(paths: Iterable[str | Path]) -> list[str]:
    """A warning for each log that does not verify (cut by a kill, edited, not sealed
    yet): its story is still told as far as it goes, but the reader should know, and
    ``autocell audit verify`` names the first bad entry."""
    from agents.runtime.flight_log import verify_log

    out = []
    for p in paths:
        try:
            report = verify_log(p)
        except (OSError, ValueError) as exc:
            report = None
            problem = str(exc)
        if report is None or not report.ok:
            if report is not None:
                problem = report.problem
            if report is not None and report.cut:
                out.append(f"{p} ends before its final seal ({problem}): its process was "
                           "killed or is still recording, so its last decisions may be "
                           f"missing; `autocell audit verify {p}` says where it ends")
            else:
                out.append(f"{p} is not intact ({problem}): this story stops or skips "
                           f"there; check it with `autocell audit verify {p}`")
    return out


def logs_argument(logs: Sequence[str | Path]) -> str:
    """How to name ``logs`` on ``autocell explain``'s command line: the one log, the state
    directory that holds exactly them, or every one."""
    import shlex

    paths = [Path(p) for p in logs]
    if len(paths) == 1:
        return shlex.quote(str(paths[0]))
    parent = paths[0].parent
    if (all(p.parent == parent for p in paths)
            and {q.name for q in state_dir_logs(parent)} == {p.name for p in paths}):
        return shlex.quote(str(parent))
    return " ".join(shlex.quote(str(p)) for p in paths)


@dataclass
class Line:
    t: float
    text: str
    agent: str = ""
    wall_at: float | None = None
    data: dict[str, Any] = field(default_factory=dict)
    repeats: int = 0                  # the same again this many times (retries), ...
    last_t: float | None = None       # ... the last at this time
    last_text: str = ""               # ... saying this (its numbers may differ)

    def to_json(self) -> dict[str, Any]:
        return {"t": self.t, "wall_at": self.wall_at, "agent": self.agent, "text": self.text,
                **({"data": self.data} if self.data else {}),
                **({"repeats": self.repeats, "last_t": self.last_t,
                    "last_text": self.last_text} if self.repeats else {})}


_NUMBER = re.compile(r"(?<![\w/.-])\d+(?:\.\d+)?(?![\w/])")   # not inside ids: agv1, o-011/0


def _shape(text: str) -> str:
    return _NUMBER.sub("#", text)


FOLD_WINDOW = 8
"""How many kept lines back a retry is looked for: a task's call, the refusals and the
order's "nobody bid" are five lines a round (ADR 104)."""


FOLD_SHOW_LAST = 2
"""A fold of this many lines or fewer shows the last one's text too: a re-bid is a retry
by its shape, but its numbers (a new start) may be what explains the story."""


def folded(lines: list[Line], window: int = 4) -> list[Line]:
    """Retries told once: a line shaped like one of the last ``window`` kept (numbers
    aside) is counted on that one instead of repeated."""
    out: list[Line] = []
    for x in lines:
        shape = _shape(x.text)
        same = next((y for y in reversed(out[-window:]) if _shape(y.text) == shape), None)
        if same is not None and not x.data:
            same.repeats += 1
            same.last_t = x.t
            same.last_text = x.text
            continue
        out.append(x)
    return out


def _s(x: float) -> str:
    return f"{x:.1f} s"


def _wall(run: dict[str, Any], e: dict[str, Any]) -> float | None:
    if "wall_at" in e:
        return float(e["wall_at"])
    base = run.get("clock_base_at") or 0.0
    return base + e["t"] if base else None


def _terms(cost: dict[str, Any]) -> str:
    names = {"queue_s": "queue", "setup_s": "setup", "processing_s": "processing",
             "transport_s": "transport"}
    out = [f"{label} {cost[k]:.0f} s" for k, label in names.items() if cost.get(k)]
    if cost.get("energy_kwh"):
        out.append(f"energy {cost['energy_kwh']:.3f} kWh")
    return ", ".join(out)


# -- what one entry says ------------------------------------------------------------------

def _scores(values: list[Any]) -> list[str]:
    """Scores as text, with as many significant digits (4 at least, 12 at most) as it takes
    for scores that differ to read differently: 1559.5 and 1559.6 are not a tie."""
    for digits in range(4, 13):
        shown = [f"{v:.{digits}g}" if isinstance(v, (int, float)) else
                 "—" if v is None else str(v) for v in values]
        if len(set(shown)) == len(set(values)):
            return shown
    return shown


def _award_text(w: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    cands = w["candidates"]
    win = next((c for c in cands if c["resource"] == w["winner"]), None)
    shown = dict(zip((c["resource"] for c in cands), _scores([c["score"] for c in cands])))
    others = ", ".join(f"{c['resource']} {shown[c['resource']]}" for c in cands
                       if c["resource"] != w["winner"]) or "no other bid"
    text = f"awarded {w['award']} to {w['winner']} ({w['strategy']}: score "
    text += shown[win["resource"]] if win else "?"
    text += f" vs {others})"
    earliest = min(cands, key=lambda c: c["finish_at"]) if cands else None
    data: dict[str, Any] = {"award": w}
    if win and earliest and earliest["finish_at"] < win["finish_at"]:
        text += (f"; not the earliest finish: {earliest['resource']} would have finished at "
                 f"{_s(earliest['finish_at'])}, {w['winner']} at {_s(win['finish_at'])}, "
                 f"but {w['strategy']} scores {w['winner']} lower")
        data["earliest_finish"] = False
    elif win:
        text += f"; finish at {_s(win['finish_at'])}"
        data["earliest_finish"] = True
    return text, data


def _in_text(e: dict[str, Any]) -> str | None:
    """What the input says, for the stories (heartbeats, readings and timers say nothing)."""
    i = e["in"]
    k = i["kind"]
    if k == "start":
        return "started"
    if k == "recover":
        return "recovered from its journal after a restart"
    if k == "plant":
        ev, data = i["event"], i.get("data") or {}
        if ev in ("reading", "quality_result"):
            return None
        if ev == "fault":
            eta = data.get("repair_eta_s")
            return (f"plant: fault ({data.get('reason', '?')}"
                    + (f", repair expected in {_s(eta)}" if eta else "") + ")")
        if ev == "operation_done":
            return f"plant: {i['task']} done ({data.get('quality', 'ok')})"
        if ev == "arrived":
            return f"plant: arrived at {data.get('at', '?')} with {i['task']}"
        return f"plant: {ev} {i.get('task') or ''}".rstrip()
    if k != "message":
        return None
    t, b, who = i["type"], i["body"], i["from"]
    if t == "propose":
        return (f"{who} proposed {b['task']}: start {_s(b['start_at'])}, finish "
                f"{_s(b['finish_at'])}" + (f" ({_terms(b['cost'])})" if b.get("cost") else ""))
    if t == "refuse":
        back = f", back at {_s(b['repair_at'])}" if b.get("repair_at") else ""
        return f"{who} refused {b['task']} ({b.get('reason') or 'no reason given'}{back})"
    if t == "failure":
        return f"{who} failed {b['task']}: {b['reason']}"
    if t == "inform_done":
        return f"{who} reported {b['task']} done ({b.get('quality', 'ok')})"
    if t == "cfp":
        units = "unit" if b["quantity"] == 1 else "units"
        return f"called by {who} for {b['task']} ({b['op']}, {b['quantity']} {units})"
    if t == "accept":
        return f"awarded {b['task']} by {who} (epoch {b['award_epoch']}, lease {_s(b['lease_s'])})"
    if t == "reject":
        return f"not chosen by {who} for {b['task']}"
    if t == "cancel":
        return f"{who} cancelled {b['task']} ({b.get('reason', '')})"
    if t == "escalate":
        return f"escalation {b['escalation']} from {who}: {b['cause']} ({b['consequence']})"
    if t == "decision":
        return f"decision on {b['escalation']} by {b['user']}: {b['option']}"
    return None


_QUIET_LOGS = {"award", "awarded", "order_released"}


def _about(a: list[Any], task: str | None) -> bool:
    """Whether action ``a`` concerns ``task`` (every action does when ``task`` is None)."""
    if task is None:
        return True
    if a[0] == "send":
        return isinstance(a[4], dict) and a[4].get("task") == task
    if a[0] == "command":
        return bool(a[3] == task)
    return a[0] == "log" and a[2].get("task") == task


def _out_texts(e: dict[str, Any], task: str | None = None) -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    for w in e.get("why", []):
        if task is None or w["award"] == task:
            out.append(_award_text(w))
    for a in e["out"]:
        if not _about(a, task):
            continue
        if a[0] == "send":
            tos, t, b = a[1], a[2], a[4]
            if t == "cfp":
                out.append((f"{b['task']} ({b['op']}): called {' and '.join(tos)}"
                            + (f" (attempt {b['attempt']})" if b.get("attempt") else ""), {}))
            elif t == "propose":
                out.append((f"proposed {b['task']} to {tos[0]}: finish {_s(b['finish_at'])}"
                            + (f" ({_terms(b['cost'])})" if b.get("cost") else ""), {}))
            elif t == "refuse":
                out.append((f"refused {b['task']} to {tos[0]} ({b.get('reason') or '?'})", {}))
            elif t == "escalate":
                out.append((f"escalated {b['escalation']}: {b['cause']} ({b['consequence']})",
                            {}))
            elif t == "decision":
                out.append((f"sent decision {b['option']} on {b['escalation']} "
                            f"(by {b['user']})", {}))
        elif a[0] == "command":
            args = a[4] or {}
            what = {"start_operation": "start", "move": "move", "abort_operation": "abort"}
            out.append((f"plant command: {what.get(a[1], a[1])} {a[3]}"
                        + (f" ({_s(args['duration_s'])})" if "duration_s" in args else ""), {}))
        elif a[0] == "log" and a[1] not in _QUIET_LOGS:
            out.append((_log_text(a[1], a[2]), {}))
    return out


def _log_text(event: str, f: dict[str, Any]) -> str:
    if event == "reroute":
        return f"re-routed {f['task']} away from {f['from']} ({f.get('reason', '')})"
    if event == "lease_expired":
        return f"lease of {f['winner']} on {f['task']} expired; calling again"
    if event == "order_completed":
        late = f.get("tardiness_s", 0.0)
        return "order completed" + (f", {_s(late)} late" if late else " on time")
    if event == "no_proposals":
        return f"nobody bid for {f['task']} (attempt {f.get('attempt', 0)}); retrying"
    if event == "started":
        return f"started {f['task']} for {f.get('order', '?')}"
    if event == "retimed":
        return (f"re-timed {f['task']} from {_s(f['planned_at'])} to {_s(f['start_at'])}"
                f" (cheaper; the plan allows a finish by {_s(f['latest_finish_at'])})")
    if event == "finished":
        return f"finished {f['task']} ({f.get('quality', 'ok')})"
    if event == "fault":
        return f"down: {f.get('reason', '?')}" + (f", {f['running']} interrupted"
                                                  if f.get("running") else "")
    if event == "non_routine" and f.get("cause") == "no_capable_resource":
        return (f"flagged {f.get('task', '?')} as non-routine: no machine offering "
                f"{f.get('capability', '?')} bid; it keeps calling (an escalation to a "
                "supervisor, if one follows, is told on its own line)")
    rest = ", ".join(f"{k} {v}" for k, v in f.items() if k not in ("order", "agent"))
    return f"{event.replace('_', ' ')}" + (f": {rest}" if rest else "")


# -- the subjects -------------------------------------------------------------------------

def _mentions_task(e: dict[str, Any], task: str) -> bool:
    i = e["in"]
    if i["kind"] == "message" and isinstance(i.get("body"), dict) and i["body"].get("task") == task:
        return True
    if i["kind"] == "plant" and i.get("task") == task:
        return True
    for a in e["out"]:
        if (a[0] == "send" and isinstance(a[4], dict) and a[4].get("task") == task) or \
           (a[0] == "command" and a[3] == task) or \
           (a[0] == "log" and a[2].get("task") == task):
            return True
    return False


def _mentions_escalation(e: dict[str, Any], esc: str) -> bool:
    i = e["in"]
    if i["kind"] == "message" and isinstance(i.get("body"), dict) and \
            i["body"].get("escalation") == esc:
        return True
    return any((a[0] == "send" and isinstance(a[4], dict) and a[4].get("escalation") == esc)
               or (a[0] == "log" and a[2].get("escalation") == esc) for a in e["out"])


def _story(rec: Recorded, entries: Iterable[dict[str, Any]], prefix: bool,
           task: str | None = None) -> list[Line]:
    lines: list[Line] = []
    for e in entries:
        wall = _wall(rec.run, e)
        if e["k"] == "rt":
            lines.append(Line(e["t"], f"{e['agent']}: process {e['event']}", e["agent"], wall))
            continue
        texts: list[tuple[str, dict[str, Any]]] = []
        said = _in_text(e)
        i = e["in"]
        if said and (task is None or i.get("task") == task
                     or (isinstance(i.get("body"), dict) and i["body"].get("task") == task)):
            texts.append((said, {}))
        texts += _out_texts(e, task)
        for text, data in texts:
            lines.append(Line(e["t"], f"{e['agent']}: {text}" if prefix else text, e["agent"],
                              wall, data))
    return lines


def _busy_and_down(entries: list[dict[str, Any]], end_t: float) -> tuple[
        list[tuple[float, float, str]], list[tuple[float, float, str]]]:
    """A resource's working stretches (started → finished or interrupted) and down ones."""
    busy: list[tuple[float, float, str]] = []
    down: list[tuple[float, float, str]] = []
    job: tuple[float, str] | None = None
    fault: tuple[float, str] | None = None
    for e in entries:
        if e["k"] != "in":
            continue
        for a in e["out"]:
            if a[0] != "log":
                continue
            if a[1] == "started":
                job = (e["t"], a[2]["task"])
            elif a[1] in ("finished", "handed_back") and job is not None:
                busy.append((job[0], e["t"], job[1]))
                job = None
            elif a[1] == "fault":
                if job is not None:
                    busy.append((job[0], e["t"], job[1]))
                    job = None
                fault = (e["t"], a[2].get("reason", "?"))
            elif a[1] == "repaired" and fault is not None:
                down.append((fault[0], e["t"], fault[1]))
                fault = None
    if job is not None:
        busy.append((job[0], end_t, job[1]))
    if fault is not None:
        down.append((fault[0], end_t, fault[1]))
    return busy, down


def _awards_held(mine: list[dict[str, Any]], until: float) -> list[tuple[float, float, str]]:
    """Every award a resource held: (awarded at, until when, task).  It holds one from its
    ``accept`` until it starts the task, is told to cancel it or is awarded it again — each
    award on its own, so that a stretch before a later re-award still names the earlier
    one, whatever ``--at`` cuts (ADR 104)."""
    held: list[tuple[float, float, str]] = []
    open_: dict[str, float] = {}
    for e in mine:
        if e["k"] != "in":          # a process's crash or restart ("rt")
            continue
        i = e["in"]
        if i["kind"] == "message" and i["type"] in ("accept", "cancel"):
            task = i["body"]["task"]
            if task in open_:
                held.append((open_.pop(task), e["t"], task))
            if i["type"] == "accept":
                open_[task] = e["t"]
        for a in e["out"]:
            if a[0] == "log" and a[1] in ("started", "handed_back") and a[2]["task"] in open_:
                task = a[2]["task"]
                held.append((open_.pop(task), e["t"], task))
    held += [(t, until, task) for task, t in open_.items()]
    return sorted(held)


def _split_at(gaps: list[tuple[float, float]],
              cuts: list[float]) -> list[tuple[float, float]]:
    """Idle stretches cut where the resource took an award, so the time before it is not
    told as waiting for it; a piece shorter than :data:`IDLE_MIN_S` stays with the next."""
    out = []
    for a, b in gaps:
        start = a
        for c in cuts:
            if start + IDLE_MIN_S <= c <= b - IDLE_MIN_S:
                out.append((start, c))
                start = c
        out.append((start, b))
    return out


def _late_start(rec: Recorded, task: str, upto: list[dict[str, Any]]) -> list[Line]:
    """Why a task started later than its winner proposed: the winner's other work and
    faults in between, and when the task's parts were there.  Told from the award's
    *why* (the order's log) and the winner's own log; nothing when either is missing or
    the start kept its promise (within :data:`IDLE_MIN_S`)."""
    award = None
    for e in upto:
        for w in e.get("why", []):
            if w["award"] == task:
                award = w
    if award is None:
        return []
    winner = award["winner"]
    promised = next((c["start_at"] for c in award["candidates"]
                     if c["resource"] == winner and "start_at" in c), None)
    mine = [e for e in upto if e.get("agent") == winner and e["k"] == "in"]
    started = next((e for e in mine for a in e["out"] if a[0] == "log"
                    and a[1] == "started" and a[2].get("task") == task), None)
    if promised is None or started is None or started["t"] - promised < IDLE_MIN_S:
        return []
    t_s = started["t"]
    busy, down = _busy_and_down(mine, t_s)
    reasons = [f"{winner} ran {other} first ({_s(max(a, promised))} – {_s(b)})"
               for a, b, other in busy if other != task and b > promised and a < t_s]
    reasons += [f"{winner} was down ({why}) {_s(a)} – {_s(b)}"
                for a, b, why in down if b > promised and a < t_s]
    ready = [e["t"] for e in mine if e["in"]["kind"] == "message"
             and e["in"]["type"] == "ready" and e["in"]["body"].get("task") == task]
    if ready and ready[-1] > promised + IDLE_MIN_S:
        reasons.append(f"its parts were there at {_s(ready[-1])}")
    text = (f"{winner}: started {task} {_s(t_s - promised)} after the start it proposed "
            f"({_s(promised)})" + (": " + "; ".join(reasons[:4]) if reasons else ""))
    return [Line(t_s, text, winner, _wall(rec.run, started),
                 {"late_start_s": t_s - promised, "promised_start_at": promised,
                  "started_at": t_s, "reasons": reasons})]


def _first_five(items: list[str]) -> str:
    return "; ".join(items[:5]) + (f" and {len(items) - 5} more" if len(items) > 5 else "")


def _idle(rec: Recorded, resource: str, mine: list[dict[str, Any]],
          until: float) -> list[Line]:
    """Every idle stretch of ``resource`` up to ``until``, with its reason."""
    busy, down = _busy_and_down(mine, until)
    mine = [e for e in mine if e["k"] == "in"]      # not its process's crashes ("rt")
    taken = sorted([(a, b) for a, b, _ in busy] + [(a, b) for a, b, _ in down])
    gaps, at = [], 0.0
    for a, b in taken:
        if a - at >= IDLE_MIN_S:
            gaps.append((at, a))
        at = max(at, b)
    if until - at >= IDLE_MIN_S:
        gaps.append((at, until))
    awards: dict[str, dict[str, Any]] = {}
    awarded_at: dict[str, float] = {}
    for e in rec.entries:
        for w in e.get("why", []):
            awards[w["award"]], awarded_at[w["award"]] = w, e["t"]
    held = _awards_held(mine, until)
    gaps = _split_at(gaps, sorted({t for t, _, _ in held}))
    won = sorted((t, task) for t, _, task in held)
    # the start each task was last re-timed to within the plan's float (ADR 97)
    retimed = {a[2]["task"]: (a[2]["planned_at"], a[2]["start_at"]) for e in mine
               for a in e["out"] if a[0] == "log" and a[1] == "retimed"}
    lines = []
    for a, b in gaps:
        calls = [e for e in mine if a <= e["t"] <= b and e["in"]["kind"] == "message"
                 and e["in"]["type"] == "cfp"]
        waiting = [f"{task} (from its award at {_s(t)})" for t, end, task in held
                   if t < b and end > a]
        later = [f"{task} (re-timed from {_s(p)} to {_s(q)})"
                 for task, (p, q) in retimed.items() if q > p and q >= b - IDLE_MIN_S
                 and p < b and any(w == task and at < b for at, w in won)]
        lost, refused, bid_won = [], [], []
        for e in calls:
            task = e["in"]["body"]["task"]
            for o in e["out"]:
                if o[0] == "send" and o[2] == "refuse":
                    refused.append(f"{task} ({o[4].get('reason') or '?'})")
            w = awards.get(task)
            if w and w["winner"] == resource and awarded_at[task] >= e["t"]:
                bid_won.append(f"{task} (awarded at {_s(awarded_at[task])})")
            elif w and w["winner"] != resource:
                mine_c = next((c for c in w["candidates"] if c["resource"] == resource), None)
                win_c = next((c for c in w["candidates"] if c["resource"] == w["winner"]), None)
                pair = _scores([win_c["score"], mine_c["score"]]) if mine_c and win_c else []
                lost.append(f"{task} to {w['winner']}" + (
                    f" (score {pair[0]} vs its {pair[1]})" if pair else ""))
        parts = []
        if lost:
            parts.append("it bid and lost " + _first_five(lost))
        if refused:
            parts.append("it refused " + "; ".join(refused[:5]))
        if later:
            parts.append("it held work for a later, cheaper start: " + "; ".join(later[:3]))
        if bid_won:
            parts.append("it bid and won " + _first_five(bid_won))
        if waiting:
            parts.append("it held an award and waited for the parts (or the start) of "
                         + "; ".join(waiting[:3]))
        if not calls and not waiting:
            parts.insert(0, "no call for proposals reached it (no order needed it then)")
        why = "; ".join(parts) or f"{len(calls)} call(s) reached it, none became work here"
        data: dict[str, Any] = {"reason": "cheaper_later" if later else
                                "waiting_for_parts" if waiting else
                                "won_bids" if bid_won else
                                "lost_bids" if lost else "refused" if refused else
                                "no_calls" if not calls else "calls",
                                "lost": lost, "refused": refused, "waiting": waiting,
                                "later": later, "won": bid_won}
        lines.append(Line(a, f"idle {_s(a)} – {_s(b)} ({_s(b - a)}): {why}", resource,
                          None, {"idle_from": a, "idle_to": b, **data}))
    for a, b, reason in down:
        if a <= until:
            lines.append(Line(a, f"down {_s(a)} – {_s(min(b, until))}: {reason}", resource, None,
                              {"down_from": a, "down_to": b, "reason": reason}))
    return lines


def _kind(rec: Recorded, subject: str, orders: list[str], resources: list[str]) -> str:
    """What ``subject`` is, from the whole log (not only up to ``--at``: an escalation
    raised later is an escalation before it too); a name the log never mentions is an
    error that lists what it holds."""
    if subject in orders:
        return "order"
    if subject in resources:
        return "resource"
    these = "these logs hold" if len(rec.logs) > 1 else "this log holds"
    entries = [e for e in rec.entries if e["k"] == "in"]
    if any(_mentions_escalation(e, subject) for e in entries):
        return "escalation"
    owner = subject.split("/")[0]
    if "/" in subject and owner in orders:
        if any(_mentions_task(e, subject) for e in entries):
            return "task"
        known = sorted({t for e in entries for t in _tasks_of(e) if t.startswith(owner + "/")})
        raise ConfigurationError(
            f"{subject!r}: {these} no task or escalation of that name (the tasks and "
            f"escalations of {owner} {these.split()[0]} hold: {', '.join(known) or 'none'})")
    raise ConfigurationError(
        f"{subject!r} is no order, task, resource or escalation of {these.split()[0]} "
        f"log{'s' if len(rec.logs) > 1 else ''} (orders "
        f"{', '.join(orders[:3])}{'…' if len(orders) > 3 else ''}; resources "
        f"{', '.join(resources)})")


def _tasks_of(e: dict[str, Any]) -> Iterable[str]:
    """The tasks and escalations an entry's input and actions name."""
    i = e["in"]
    if i["kind"] == "message" and isinstance(i.get("body"), dict):
        for key in ("task", "escalation"):
            if key in i["body"]:
                yield str(i["body"][key])
    if i["kind"] == "plant" and i.get("task"):
        yield str(i["task"])
    for a in e["out"]:
        if a[0] == "send" and isinstance(a[4], dict):
            for key in ("task", "escalation"):
                if key in a[4]:
                    yield str(a[4][key])


def explain(rec: Recorded, subject: str, at: float | None = None) -> dict[str, Any]:
    """The story of ``subject`` as data: its kind, the lines in time order, a summary."""
    if at is not None and not math.isfinite(at):
        raise ConfigurationError(f"--at {at}: a cell time is a finite number of seconds "
                                 "(negative before the cell clock's start, when an `up` "
                                 "run's processes start)")
    until = rec.end_t if at is None else at
    upto = [e for e in rec.entries if e["t"] <= until]
    orders, resources = rec.ids("orders"), rec.ids("machines") + rec.ids("robots")
    owner = subject.split("/")[0] if "/" in subject else subject
    try:
        kind = _kind(rec, subject, orders, resources)
    except ConfigurationError:
        if owner in orders or owner in resources:
            _must_record(rec, owner, subject)    # the log that would hold it is missing
        raise
    if kind != "escalation" and (owner in orders or owner in resources):
        _must_record(rec, owner, subject)       # an escalation is told from any side
    mine: list[dict[str, Any]] = []
    if kind == "order":
        lines = _release(rec, subject, until) + _story(
            rec, (e for e in upto if e.get("agent") == subject), prefix=False)
    elif kind == "resource":
        mine = [e for e in upto if e.get("agent") == subject]
        lines = _story(rec, mine, prefix=False) + _idle(rec, subject, mine, until)
    elif kind == "task":
        lines = _story(rec, (e for e in upto if e["k"] == "in" and _mentions_task(e, subject)),
                       prefix=True, task=subject) + _late_start(rec, subject, upto)
    else:
        lines = _story(rec, (e for e in upto if e["k"] == "in"
                             and _mentions_escalation(e, subject)), prefix=True)
    told = sorted(lines, key=lambda x: x.t)
    lines = folded(list(told), window=FOLD_WINDOW)
    out: dict[str, Any] = {"subject": subject, "kind": kind, "until": until,
                           "lines": [x.to_json() for x in lines]}
    if kind == "escalation" and not rec.records("console"):
        out["note"] = ("the console's log is not among these, so the supervisor's side (the "
                       "escalation as raised, its decision) is told only as other agents "
                       "saw it; give the run's state directory")
    if kind == "resource" and not any(rec.records(o) for o in orders):
        out["note"] = ("no order's log is among these, so the awards' scores and the bids "
                       "it lost are not told; give the run's state directory")
    if at is not None:
        out["at"] = at
        out["then"] = _then(kind, told, mine, until, _order_of(rec, subject))
    return out


def _order_of(rec: Recorded, subject: str) -> dict[str, Any] | None:
    """The cell file's order ``subject`` (its release and due times), if it is one."""
    return next((o for o in rec.run.get("cell", {}).get("orders", [])
                 if o.get("id") == subject), None)


def _release(rec: Recorded, subject: str, until: float) -> list[Line]:
    """An order's release, with its due time, as a line of its story (the agent starts at
    0 s and waits for it)."""
    order = _order_of(rec, subject)
    if order is None or float(order.get("release_at", 0.0)) > until:
        return []
    at = float(order.get("release_at", 0.0))
    due = f" (due at {_s(float(order['due_at']))})" if "due_at" in order else ""
    wall = _wall(rec.run, {"t": at})
    return [Line(at, f"released{due}", subject, wall,
                 {"release_at": at, "due_at": order.get("due_at")})]


def _must_record(rec: Recorded, agent: str, subject: str) -> None:
    """An order's or a resource's story is told from its own decisions: refuse to tell it
    from logs that do not hold them (a host's log holds its own agents only)."""
    if rec.records(agent):
        return
    hosts = rec.run.get("cell", {}).get("hosts") or []
    host = next((h["name"] for h in hosts if agent in (h.get("agents") or [])),
                hosts[0]["name"] if hosts else "")
    raise ConfigurationError(
        f"{subject}: {agent} is in none of these logs ({', '.join(Path(p).name for p in rec.logs)}"
        f", which record {rec.host or 'other hosts'}); its story needs the log of the "
        + (f"host {host} (decisions-{host}-BOOT.jsonl)" if host else "host that ran it")
        + ": give the run's state directory, or that log as well")


def _then(kind: str, lines: list[Line], mine: list[dict[str, Any]], until: float,
          order: dict[str, Any] | None = None) -> str:
    """What the subject was doing at ``--at``: the last line told before it (``lines`` not
    folded, so a retry is the latest one, not the first of its kind)."""
    if kind == "order" and order is not None and until < float(order.get("release_at", 0.0)):
        return (f"not released yet (release at {_s(float(order['release_at']))}"
                + (f", due at {_s(float(order['due_at']))})" if "due_at" in order else ")"))
    if kind == "resource":
        busy, down = _busy_and_down(mine, until)
        if down and down[-1][1] >= until:
            return f"down since {_s(down[-1][0])} ({down[-1][2]})"
        if busy and busy[-1][1] >= until:
            return f"busy with {busy[-1][2]} since {_s(busy[-1][0])}"
        since = max([b for _, b, _ in busy] + [b for _, b, _ in down], default=0.0)
        return f"idle since {_s(since)}"
    return lines[-1].text if lines else "nothing yet"


# -- the command ----------------------------------------------------------------------------

def _clock(t: float, wall: float | None) -> str:
    cell = f"t={t:9.2f} s"
    if wall is None:
        return cell
    return f"{cell}  {time.strftime('%H:%M:%S', time.gmtime(wall))}"


def render(story: dict[str, Any]) -> str:
    head = f"{story['kind']} {story['subject']}"
    if "at" in story:
        head += f", up to t={story['at']:g} s"
    out = [head] + ([f"  note: {story['note']}"] if "note" in story else [])
    out += [f"  warning: {w}" for w in story.get("warnings", [])]
    for x in story["lines"]:
        again = (f" (and {x['repeats']} more like it until t={x['last_t']:.1f} s)"
                 if x.get("repeats") else "")
        last = x.get("last_text", "")
        if x.get("repeats", 0) <= FOLD_SHOW_LAST and last and last != x["text"]:
            again = (f" (and {x['repeats']} more like it; the last at t={x['last_t']:.1f} s: "
                     f"{last})")
        out.append(f"  {_clock(x['t'], x['wall_at'])}  {x['text']}{again}")
    if "then" in story:
        out.append(f"at t={story['at']:g} s: {story['then']}")
    return "\n".join(out)


def cmd_explain(args: argparse.Namespace) -> int:
    from ops.replay import damaged

    recs = []
    for path in resolve(args.logs):
        try:
            recs.append(Recorded.load(path))
        except OSError as exc:
            raise ConfigurationError(f"{path}: cannot read it ({exc.strerror or exc})") from None
        except (KeyError, TypeError, ValueError, IndexError, AttributeError,
                RecursionError) as exc:
            raise damaged(path, exc) from None
    if not recs:
        raise ConfigurationError(f"{' '.join(args.logs)}: no decision log there")
    rec = Recorded.merged(recs)
    try:
        story = explain(rec, args.subject, args.at)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, RecursionError) as exc:
        if len(rec.logs) == 1:
            raise damaged(rec.logs[0], exc) from None
        raise ConfigurationError(f"{logs_argument(rec.logs)}: a damaged decision log among "
                                 "them; check each with `autocell audit verify LOG`") from None
    if len(rec.logs) > 1:
        story["logs"] = rec.logs
    warnings = intact(rec.logs)
    if warnings:
        story["warnings"] = warnings
    print(json.dumps(story, indent=2) if args.json else render(story))
    return 0


def add_parsers(sub: Any) -> None:
    """``explain`` (called by :mod:`ops.cli`)."""
    sp = sub.add_parser("explain", help="why: the story of an order, task, resource or "
                                        "escalation from a decision log",
                        epilog="exit codes: 0 the story told; 2 bad input (not a decision "
                               "log, a subject the log never mentions, logs of two runs)")
    sp.add_argument("logs", nargs="+", metavar="LOG",
                    help="a decision log (autocell run --decision-log FILE); for an `up` "
                         "run its state directory, or several of its decisions-*.jsonl, "
                         "merged")
    sp.add_argument("subject", metavar="ORDER|TASK|RESOURCE|ESCALATION")
    sp.add_argument("--at", type=float, default=None, metavar="TIME",
                    help="the story up to this cell time (s), and what the subject did then")
    sp.add_argument("--json", action="store_true", help="the same as data")
    sp.set_defaults(func=cmd_explain)
