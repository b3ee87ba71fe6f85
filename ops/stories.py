"""The stories behind the views: explain's lines for a Gantt bar, a fault, an escalation.

The Gantt chart (ops/gantt.py) and the supervisor console (ops/console/) show *what*
happened; ``autocell explain`` (ops/explain.py) tells *why*, from a decision log.  This
module joins them (issue 19, item 2): given the decision logs of a run — one from
``autocell run --decision-log``, or the ``decisions-NAME-BOOT.jsonl`` of every process of an
``autocell up`` run — it answers the story of a task, a resource's down time or an
escalation as the text lines ``autocell explain`` prints.

It only *reads* explain: the logs of several processes are merged into one
:class:`~ops.explain.Recorded` (:meth:`~ops.explain.Recorded.merged`, as ``autocell
explain`` merges the logs it is given), and each subject is told from the entries that mention it (an index built once,
so a chart of thousands of bars does not rescan the log per bar; explain filters the
entries again, so the index may be generous).  A subject the log does not know has no
story (``[]``), never an error: a view without stories is still a view.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from ops.explain import Recorded, explain, logs_argument, render, state_dir_logs
from ops.explain import resolve as resolve_logs
from security.errors import ConfigurationError

MAX_LINES = 40          # a story longer than this is cut, with the command that tells it all


def _mentions(e: dict[str, Any]) -> set[str]:
    """Every task and escalation id an entry names (its input and its actions)."""
    out: set[str] = set()
    if e.get("k") != "in":
        return out
    i = e.get("in") or {}
    if i.get("task"):
        out.add(str(i["task"]))
    for body in [i.get("body")] + [a[4] for a in e.get("out", [])
                                   if a and a[0] == "send" and len(a) > 4]:
        if isinstance(body, dict):
            out.update(str(body[k]) for k in ("task", "escalation") if body.get(k))
    for a in e.get("out", []):
        if a and a[0] == "command" and len(a) > 3 and a[3]:
            out.add(str(a[3]))
        elif a and a[0] == "log" and len(a) > 2 and isinstance(a[2], dict):
            out.update(str(a[2][k]) for k in ("task", "escalation") if a[2].get(k))
    for w in e.get("why", []):
        out.add(str(w.get("award", "")))
    return out


class Stories:
    """Stories of one run's subjects, from its decision logs (cached per subject)."""

    def __init__(self, rec: Recorded, logs: Sequence[str] = ()) -> None:
        self.rec = rec
        self.logs = list(logs)
        self._index: dict[str, list[dict[str, Any]]] = {}
        for e in rec.entries:
            for subject in _mentions(e):
                self._index.setdefault(subject, []).append(e)
        self._cache: dict[str, tuple[str, list[dict[str, Any]]]] = {}

    @classmethod
    def load(cls, paths: Iterable[str | Path]) -> Stories | None:
        """The stories of the logs at ``paths`` merged; None when there is no log."""
        recs = [Recorded.load(p) for p in paths]
        if not recs:
            return None
        rec = Recorded.merged(recs)
        return cls(rec, rec.logs)

    def _story(self, subject: str) -> tuple[str, list[dict[str, Any]]]:
        """explain's kind and lines of ``subject`` (``("", [])``: the log does not know it)."""
        if subject not in self._cache:
            if subject in self._index:
                rec = Recorded(self.rec.run, self._index[subject], self.rec.host,
                               self.rec.logs, self.rec.agents)
            else:                              # an order or a resource: the whole log
                rec = self.rec
            try:
                story = explain(rec, subject)
                self._cache[subject] = (str(story["kind"]), list(story["lines"]))
            except ConfigurationError:
                self._cache[subject] = ("", [])
            except (KeyError, TypeError, ValueError, IndexError, AttributeError):
                self._cache[subject] = ("", [])   # a damaged entry: no story, not a broken view
        return self._cache[subject]

    def _text(self, subject: str, kind: str, lines: list[dict[str, Any]]) -> list[str]:
        if not lines:
            return []
        text = render({"subject": subject, "kind": kind, "lines": lines[:MAX_LINES]})
        out = [x.strip() for x in text.splitlines()]
        if len(lines) > MAX_LINES:
            out.append(f"… {len(lines) - MAX_LINES} more lines: {self.command(subject)}")
        return out

    def command(self, subject: str) -> str:
        """The ``autocell explain`` command that tells ``subject``'s whole story from these
        logs (their state directory when they are all of one)."""
        import shlex

        return f"autocell explain {logs_argument(self.logs)} {shlex.quote(subject)}"

    def mentions(self, subject: str) -> bool:
        """Whether some entry names ``subject`` (a task or an escalation): cheap, no telling."""
        return subject in self._index

    def of(self, subject: str) -> list[str]:
        """The story of a task, order, resource or escalation as explain prints it."""
        kind, lines = self._story(subject)
        return self._text(subject, kind, lines)

    def near(self, subject: str, t: float, after: int = 10) -> list[str]:
        """The story of ``subject`` around cell time ``t`` (an escalation's raise): the lines
        up to ``t`` that fit, latest first kept, then ``after`` lines past it, with a line
        saying how many earlier ones were left out and the command that tells them all."""
        kind, lines = self._story(subject)
        before = [x for x in lines if x["t"] <= t + 1e-9]
        past = [x for x in lines if x["t"] > t + 1e-9]
        keep = before[-(MAX_LINES - after):] if len(before) > MAX_LINES - after else before
        text = self._text(subject, kind, keep + past[:max(0, MAX_LINES - len(keep))])
        cut = len(before) - len(keep)
        if cut and text:
            text.insert(1, f"… {cut} earlier lines: {self.command(subject)}")
        return text

    def between(self, resource: str, start: float, end: float | None) -> list[str]:
        """A resource's story from ``start`` to ``end`` (a fault to its repair)."""
        kind, lines = self._story(resource)
        stop = float("inf") if end is None else end + 1e-9
        return self._text(resource, kind, [x for x in lines if start - 1e-9 <= x["t"] <= stop])


def resolve(paths: Iterable[str | Path]) -> list[Path]:
    """``--decision-logs DIR_OR_FILE ...``: a directory stands for the logs it holds (an
    ``up`` state directory: :func:`~ops.explain.state_dir_logs`), a file for itself."""
    try:
        return resolve_logs(paths)
    except ConfigurationError as exc:
        raise ConfigurationError(f"--decision-logs {exc}") from None



class LiveStories:
    """The stories of logs that may still grow (a console beside a running cell): read again
    when a log changed, at most every ``every_s`` of wall time (beside a running cell the
    logs change all the time, and reading one costs about 0.3 s per 10 MB), else answered
    from memory.  :meth:`get` may read (call it off the event loop); :meth:`peek` never does."""

    def __init__(self, paths: Callable[[], list[Path]], every_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.paths = paths
        self.every_s = every_s
        self.clock = clock
        self._checked: float | None = None
        self._seen: tuple[tuple[str, int, int], ...] | None = None
        self._stories: Stories | None = None

    def get(self) -> Stories | None:
        """The stories as the logs stand now (None: no log, or none readable)."""
        now = self.clock()
        if self._checked is not None and now - self._checked < self.every_s:
            return self._stories
        self._checked = now
        seen = []
        for p in self.paths():
            try:
                st = p.stat()
            except OSError:
                continue
            seen.append((str(p), st.st_mtime_ns, st.st_size))
        if tuple(seen) != self._seen:
            self._seen = tuple(seen)
            try:
                self._stories = Stories.load([p for p, _, _ in seen])
            except (OSError, ValueError, ConfigurationError):
                self._stories = None        # a log not (yet) readable: no stories, no 500
        return self._stories

    def peek(self) -> Stories | None:
        """The stories as last read (None before the first :meth:`get`)."""
        return self._stories


__all__ = ["LiveStories", "Stories", "resolve", "state_dir_logs"]
