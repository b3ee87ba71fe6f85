"""The console's maintenance view: upcoming and running windows per machine, and parts.

Where the figures come from (docs/maintenance.md, "The console's maintenance view"):
the cell already says everything in its event logs — the machine agents log the
window they plan and lease (``maint_needed``, ``maint_window`` with the technician,
the start, the latest safe start and whether it is late, ``maint_begin``,
``maint_job_done``…), and the plant logs the shelf (``maintenance_start`` with the
part's serial, ``part_ordered``, ``part_delivered``, ``stock_out``) or, in a cell
that negotiates, the stores agent keeps the books (``part_held``, ``part_consumed``,
``part_order_placed``, ``part_delivered``… each with the shelf level ``on_shelf``).  Under
``autocell up`` those logs (``events-*.jsonl``) sit beside the escalation store the
console reads, so the console folds them, read-only, as they grow: no process of the
cell writes anything more, no message is added, and a console started late or
restarted sees the whole run.  The liveness of the figures is the store's heartbeat
(the same banner as every page).

:class:`Board` is the fold (no I/O: fed event lines, asked for rows);
:class:`LiveBoard` tails the logs of a directory into it, from where it left off.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Board", "LiveBoard", "PartRow", "WindowRow"]

#: The machine agents' window events, and the phase each leaves the job in.
_PHASE = {"maint_needed": "asking", "maint_window": "booked", "maint_begin": "running",
          "maint_window_lapsed": "asking", "maint_window_declined": "asking",
          "maint_refused": "asking"}
_ENDS = ("maint_job_done", "maint_cancelled")


@dataclass
class WindowRow:
    """One machine's maintenance job that is not done: asking for a window, booked, running."""

    machine: str
    job: str
    phase: str                       # asking | booked | running
    latest_start_at: float
    start_at: float | None = None    # the leased window's start (booked, running)
    end_at: float | None = None
    technician: str = ""
    late_booked: bool = False        # the crew could only offer a start past the latest

    def late(self, now: float) -> bool:
        """Past the latest safe start: booked after it, or not started and it has passed."""
        return self.late_booked or (self.phase != "running" and now > self.latest_start_at)


@dataclass
class PartRow:
    """A spare part's shelf as the plant reported it."""

    part: str
    stock: int
    on_order: int = 0
    due_at: list[float] = field(default_factory=list)     # open supplier deliveries
    stock_outs: int = 0


class Board:
    """The maintenance windows and parts of a run, folded from its event lines."""

    def __init__(self, stock: Mapping[str, int] | None = None, *, stores: bool = False) -> None:
        """``stores``: the cell runs a stores agent (``negotiate: true``), whose books are the
        parts' truth (its lines carry ``on_shelf``); else the plant's shelf is."""
        self._initial = dict(stock or {})
        self.stores = stores
        self.reset()

    def reset(self) -> None:
        self.jobs: dict[str, WindowRow] = {}             # machine -> its open job
        self.parts = {p: PartRow(p, n) for p, n in self._initial.items()}

    def _part(self, name: str) -> PartRow:
        if name not in self.parts:
            self.parts[name] = PartRow(name, 0)
        return self.parts[name]

    def feed(self, e: Mapping[str, Any]) -> None:
        ev = e.get("ev")
        if not isinstance(ev, str):
            return
        if ev in _PHASE or ev in _ENDS:
            self._window(ev, e)
        elif self.stores:
            if e.get("agent") == "stores" and isinstance(e.get("part"), str):
                self._books(ev, e)
        elif ev == "maintenance_start" and isinstance(e.get("part_serial"), str):
            self._part(e["part_serial"].partition("#")[0]).stock -= 1
        elif ev == "part_ordered" and isinstance(e.get("part"), str):
            row = self._part(e["part"])
            row.on_order += int(e.get("qty", 0))
            row.due_at.append(float(e.get("due_at", 0.0)))
        elif ev == "part_delivered" and isinstance(e.get("part"), str):
            row = self._part(e["part"])
            qty = int(e.get("qty", 0))
            row.stock += qty
            row.on_order = max(0, row.on_order - qty)
            if row.due_at:
                row.due_at.pop(0)
        elif ev == "stock_out" and isinstance(e.get("part"), str):
            self._part(e["part"]).stock_outs += 1

    def _books(self, ev: str, e: Mapping[str, Any]) -> None:
        """A stores agent's line (agents/maintenance/stores.py): the shelf level it gives."""
        row = self._part(e["part"])
        if isinstance(e.get("on_shelf"), int):
            row.stock = e["on_shelf"]
        if ev == "part_order_placed":
            row.on_order += int(e.get("qty", 0))
            row.due_at.append(float(e.get("due_at", 0.0)))
        elif ev == "part_delivered":
            row.on_order = max(0, row.on_order - int(e.get("qty", 0)))
            if row.due_at:
                row.due_at.pop(0)
        elif ev == "part_stock_out":
            row.stock_outs += 1

    def _window(self, ev: str, e: Mapping[str, Any]) -> None:
        machine, job = e.get("agent"), e.get("job")
        if not isinstance(machine, str) or not isinstance(job, str):
            return
        row = self.jobs.get(machine)
        if ev in _ENDS:
            if row is not None and row.job == job:
                del self.jobs[machine]
            return
        if ev == "maint_needed" or row is None or row.job != job:
            row = self.jobs[machine] = WindowRow(
                machine, job, "asking", float(e.get("latest_start_at", float("inf"))))
        row.phase = _PHASE[ev]
        if ev == "maint_window":
            row.start_at, row.end_at = float(e["start_at"]), float(e.get("end_at", 0.0))
            row.technician = str(e.get("technician", ""))
            row.latest_start_at = float(e.get("latest_start_at", row.latest_start_at))
            row.late_booked = bool(e.get("late", False))
        elif ev == "maint_begin":
            row.technician = str(e.get("technician", row.technician))
        elif row.phase == "asking":         # the window went back: asked for again
            row.start_at = row.end_at = None
            row.technician, row.late_booked = "", False

    def windows(self) -> list[WindowRow]:
        """Running first, then by start (booked), then by latest safe start (asking)."""
        order = {"running": 0, "booked": 1, "asking": 2}
        return sorted(self.jobs.values(), key=lambda r: (
            order[r.phase], r.start_at if r.start_at is not None else r.latest_start_at,
            r.machine))

    def part_rows(self) -> list[PartRow]:
        return [self.parts[p] for p in sorted(self.parts)]


class LiveBoard:
    """A :class:`Board` over the ``events-*.jsonl`` of a directory, read on from where it
    left off at each :meth:`get` (a log that shrank — a new run in the same directory —
    starts the fold again).  Only whole lines are read: a line being written is taken next
    time."""

    def __init__(self, directory: Callable[[], Path | None], stock: Mapping[str, int], *,
                 stores: bool = False) -> None:
        self._dir = directory
        self.board = Board(stock, stores=stores)
        self._offsets: dict[Path, int] = {}
        self._lock = threading.Lock()

    def get(self) -> Board:
        with self._lock:
            where = self._dir()
            logs = sorted(where.glob("events-*.jsonl")) if where is not None else []
            if any(p.stat().st_size < self._offsets.get(p, 0) for p in logs if p.exists()):
                self.board.reset()
                self._offsets.clear()
            lines: list[dict[str, Any]] = []
            for p in logs:
                lines += self._read(p)
            # the processes' logs interleave in cell time; each is in order by itself
            for e in sorted(lines, key=lambda x: float(x.get("t", 0.0))):
                self.board.feed(e)
            return self.board

    def _read(self, path: Path) -> Iterable[dict[str, Any]]:
        start = self._offsets.get(path, 0)
        try:
            with path.open("rb") as f:
                f.seek(start)
                data = f.read()
        except OSError:
            return []
        end = data.rfind(b"\n") + 1
        self._offsets[path] = start + end
        out = []
        for raw in data[:end].splitlines():
            if b'"maint' not in raw and b'"part_' not in raw and b'"stock_out"' not in raw:
                continue          # most of a log is operations: not parsed
            try:
                e = json.loads(raw)
            except ValueError:
                continue
            if isinstance(e, dict):
                out.append(e)
        return out
