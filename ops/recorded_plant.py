"""The plant of a recorded ``autocell up`` run, played again in virtual time (``--what-if``).

Theory of operation
-------------------
Under ``up`` the plant is another process — the simulator, or real machines —
so a log of ``up`` cannot be re-run by drawing the simulator's durations
again: they would be the simulator's, not the run's.  But the machine agents'
decision logs hold everything the plant did to them, in cell time: every
``start_operation`` command they sent (an ``out`` action) and every plant
event they got (an ``in`` input) — ``operation_done``, ``fault``,
``repaired``.  From those, :func:`read_recorded_plant` takes

* the **duration** of each operation, per (machine, task): from the command
  that started it to the ``operation_done`` that ended it;
* the **faults**: each ``fault`` of a resource with the time until its
  ``repaired`` (a fault never repaired lasts to the end of the logs).

:func:`play` puts them on a :class:`sim_bridge.virtual.VirtualCell`: the
faults as a fault scenario of breakdowns only (no MTBF draws), and each
``start_operation`` of a recorded (machine, task) gets the recorded duration
instead of the agent's nominal one.  An operation the other strategy puts on
another machine, or a task the run never started, keeps the nominal
duration: history says nothing about it.  Quality draws and robot drives
are the simulator's, and the orders, seed and cell are the log header's.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agents.cell.faults import Breakdown, FaultScenario
from agents.protocol.actions import Command
from agents.runtime.recorder import read_lines

MIN_REPAIR_S = 1e-3
"""A fault and its repair recorded at one cell time still last this long (the scenario
model wants a positive repair time)."""


@dataclass
class RecordedPlant:
    """What the plant did in a recorded run (see the module docstring)."""

    durations: dict[tuple[str, str], float] = field(default_factory=dict)
    breakdowns: list[Breakdown] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)
    end_t: float = 0.0

    def scenario(self) -> FaultScenario:
        return FaultScenario(name="recorded", mtbf_breakdowns=False,
                             description=f"the faults of {len(self.logs)} decision log(s)",
                             breakdowns=self.breakdowns)


def run_logs(path: str | Path) -> list[Path]:
    """The decision logs of the ``up`` run ``path`` belongs to: every
    ``decisions-NAME-BOOT.jsonl`` beside it (a new run clears the last run's), in host
    and boot order, so a restarted host's boots follow each other."""
    p = Path(path)

    def key(q: Path) -> tuple[str, int]:
        name, _, boot = q.stem.removeprefix("decisions-").rpartition("-")
        return (name, int(boot) if boot.isdigit() else 0)

    logs = sorted(p.parent.glob("decisions-*.jsonl"), key=key)
    return logs if p in logs or p.resolve() in [q.resolve() for q in logs] else [p]


def read_recorded_plant(paths: Iterable[str | Path]) -> RecordedPlant:
    """Durations and faults from the logs' machine and robot entries (module docstring)."""
    rec = RecordedPlant()
    down: dict[str, float] = {}                     # resource -> when its fault began
    for path in paths:
        rec.logs.append(str(path))
        starts: dict[tuple[str, str], float] = {}
        for e in read_lines(path):
            if e.get("k") != "in":
                continue
            t = float(e["t"])
            rec.end_t = max(rec.end_t, t)
            for a in e["out"]:
                if a[0] == "command" and a[1] == "start_operation":
                    starts[(a[2], a[3])] = t
            i = e["in"]
            if i["kind"] != "plant":
                continue
            event, resource, task = i["event"], i["resource"], i.get("task") or ""
            if event == "operation_done" and (resource, task) in starts:
                rec.durations[(resource, task)] = t - starts.pop((resource, task))
            elif event == "fault" and resource not in down:
                down[resource] = t
            elif event == "repaired" and resource in down:
                at = down.pop(resource)
                rec.breakdowns.append(Breakdown(resource=resource, at_s=at,
                                                repair_s=max(t - at, MIN_REPAIR_S)))
    for resource, at in down.items():               # still down when the logs end
        rec.breakdowns.append(Breakdown(resource=resource, at_s=at,
                                        repair_s=max(rec.end_t - at, MIN_REPAIR_S)))
    rec.breakdowns.sort(key=lambda b: (b.at_s, b.resource))
    return rec


def play(cell: Any, rec: RecordedPlant) -> None:
    """Give a :class:`~sim_bridge.virtual.VirtualCell` (built with :meth:`RecordedPlant.
    scenario`, before it runs) the recorded durations: a ``start_operation`` of a
    recorded (machine, task) runs for the recorded time."""
    plant = cell.plant
    command = plant.command

    def recorded(cmd: Command) -> Any:
        d = rec.durations.get((cmd.resource, cmd.task))
        if cmd.command == "start_operation" and d is not None:
            cmd = Command(cmd.command, cmd.resource, cmd.task, {**cmd.args, "duration_s": d})
        return command(cmd)

    plant.command = recorded
