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
  ``repaired`` (a fault never repaired lasts to the end of the logs) — those
  of a machine's wear model (reason ``wear`` or ``maintenance``) apart from
  the others (ADR 74, below);
* the **quality** verdict of each operation, per (machine, task), one per
  attempt in order (a scrapped part is made again under the same task);
* the **drive** of each robot move, per (robot, task): from the ``move``
  command to the ``arrived`` event, with the place the robot set off from.

:func:`play` puts them on a :class:`sim_bridge.virtual.VirtualCell`: the
faults as a fault scenario of breakdowns only (no MTBF draws), and each
``start_operation`` of a recorded (machine, task) gets the recorded duration
instead of the agent's nominal one; the embedded plant asks the recording
(its ``recorded`` hook, sim_bridge/plant.py) for the verdict of a recorded
(machine, task) attempt and for the drive of a recorded (robot, task) that
sets off from the recorded place.  An operation the other strategy puts on
another machine, a move from elsewhere, or a task the run never started
keeps the nominal time and the simulator's quality draw: history says
nothing about it.  The orders, seed and cell are the log header's, or a
changed cell's (ops/cell_change.py), for which :meth:`RecordedPlant.without`
drops what the change made untrue.

A machine with a ``degradation:`` block in the cell played wears and fails by
its own model (sim_bridge/degradation.py), which the replay runs: its wear
path and failure threshold are seeded by the run's seed and the machine, and
its exposure is its busy time, so a recorded wear failure comes again where
the machine has worked as much — and where another strategy gives it more or
less work, earlier or later, which is the point of asking.  Played as a
recorded breakdown as well, it would fail twice (ADR 74).  So the faults the
logs give the reason ``wear`` (a failure) or ``maintenance`` (planned
downtime, which a maintenance policy decides again in the replay) are kept
apart (:attr:`RecordedPlant.wear_faults`) and played only on a machine that
has no wear model in the cell played (its block removed by a change): there
they are history like any other fault.  Every other fault — a breakdown, an
injected one — is played as recorded.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agents.cell.faults import Breakdown, FaultScenario
from agents.protocol.actions import Command
from agents.runtime.flight_log import read_lines

WEAR_REASONS = frozenset({"wear", "maintenance"})
"""Fault reasons a machine's wear model produces (sim_bridge/degradation.py): left to the
model on a machine that has one (module docstring)."""

MIN_REPAIR_S = 1e-3
"""A fault and its repair recorded at one cell time still last this long (the scenario
model wants a positive repair time)."""


@dataclass
class RecordedPlant:
    """What the plant did in a recorded run (see the module docstring)."""

    durations: dict[tuple[str, str], float] = field(default_factory=dict)
    breakdowns: list[Breakdown] = field(default_factory=list)
    qualities: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    drives: dict[tuple[str, str], tuple[str, float]] = field(default_factory=dict)
    logs: list[str] = field(default_factory=list)
    end_t: float = 0.0
    wear_faults: list[Breakdown] = field(default_factory=list)   # reason in WEAR_REASONS

    def scenario(self, cfg: Any = None) -> FaultScenario:
        """The recorded faults as a scenario of breakdowns for the cell ``cfg`` (a
        :class:`agents.cell.model.CellConfig`): those of its resources, but the wear faults
        of a machine whose wear model runs (module docstring); without ``cfg``, every
        fault but the wear faults."""
        if cfg is None:
            faults = list(self.breakdowns)
        else:
            known = {m.id for m in cfg.machines} | {r.id for r in cfg.robots}
            modelled = {m.id for m in cfg.machines if m.degradation is not None}
            faults = sorted([b for b in self.breakdowns if b.resource in known]
                            + [b for b in self.wear_faults
                               if b.resource in known and b.resource not in modelled],
                            key=lambda b: (b.at_s, b.resource))
        return FaultScenario(name="recorded", mtbf_breakdowns=False,
                             description=f"the faults of {len(self.logs)} decision log(s)",
                             breakdowns=faults)

    def without(self, resources: Iterable[str] = (), orders: Iterable[str] = (),
                quality: Iterable[str] = ()) -> RecordedPlant:
        """The recording less what a changed cell made untrue: the durations, verdicts,
        drives and faults of ``resources`` (new, removed or retimed), the operations of
        ``orders`` (another product or quantity), the verdicts of ``quality`` (another
        scrap rate)."""
        res, ords, q = set(resources), set(orders), set(quality)

        def kept(key: tuple[str, str]) -> bool:
            return key[0] not in res and key[1].partition("/")[0] not in ords

        return RecordedPlant(
            durations={k: v for k, v in self.durations.items() if kept(k)},
            breakdowns=[b for b in self.breakdowns if b.resource not in res],
            wear_faults=[b for b in self.wear_faults if b.resource not in res],
            qualities={k: v for k, v in self.qualities.items() if kept(k) and k[0] not in q},
            drives={k: v for k, v in self.drives.items() if kept(k)},
            logs=self.logs, end_t=self.end_t)


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
    down: dict[str, tuple[float, str]] = {}         # resource -> when its fault began, why
    for path in paths:
        rec.logs.append(str(path))
        starts: dict[tuple[str, str], tuple[float, str]] = {}
        for e in read_lines(path):
            if e.get("k") != "in":
                continue
            t = float(e["t"])
            rec.end_t = max(rec.end_t, t)
            for a in e["out"]:
                if a[0] == "command" and a[1] in ("start_operation", "move"):
                    starts[(a[2], a[3])] = (t, str((a[4] or {}).get("from", "")))
            i = e["in"]
            if i["kind"] != "plant":
                continue
            event, resource, task = i["event"], i["resource"], i.get("task") or ""
            if event == "operation_done" and (resource, task) in starts:
                rec.durations[(resource, task)] = t - starts.pop((resource, task))[0]
                quality = str((i.get("data") or {}).get("quality", "ok"))
                rec.qualities.setdefault((resource, task), []).append(quality)
            elif event == "arrived" and (resource, task) in starts:
                at, origin = starts.pop((resource, task))
                rec.drives[(resource, task)] = (origin, t - at)
            elif event == "fault" and resource not in down:
                down[resource] = (t, str((i.get("data") or {}).get("reason", "")))
            elif event == "repaired" and resource in down:
                at, reason = down.pop(resource)
                _fault(rec, resource, at, t, reason)
    for resource, (at, reason) in down.items():     # still down when the logs end
        _fault(rec, resource, at, rec.end_t, reason)
    rec.breakdowns.sort(key=lambda b: (b.at_s, b.resource))
    rec.wear_faults.sort(key=lambda b: (b.at_s, b.resource))
    return rec


def _fault(rec: RecordedPlant, resource: str, at: float, until: float, reason: str) -> None:
    b = Breakdown(resource=resource, at_s=at, repair_s=max(until - at, MIN_REPAIR_S))
    (rec.wear_faults if reason in WEAR_REASONS else rec.breakdowns).append(b)


def play(cell: Any, rec: RecordedPlant) -> None:
    """Give a :class:`~sim_bridge.virtual.VirtualCell` (built with :meth:`RecordedPlant.
    scenario`, before it runs) the recorded plant: a ``start_operation`` of a recorded
    (machine, task) runs for the recorded time and ends with the recorded verdict, a
    recorded move from the recorded place drives for the recorded time."""
    plant = cell.plant
    command = plant.command
    plant.backend.recorded = _Outcomes(rec)

    def recorded(cmd: Command) -> Any:
        d = rec.durations.get((cmd.resource, cmd.task))
        if cmd.command == "start_operation" and d is not None:
            cmd = Command(cmd.command, cmd.resource, cmd.task, {**cmd.args, "duration_s": d})
        return command(cmd)

    plant.command = recorded


class _Outcomes:
    """The embedded plant's ``recorded`` hook (sim_bridge/plant.py): the recorded verdict
    of each attempt, the recorded drive of a move that sets off where it did then."""

    def __init__(self, rec: RecordedPlant) -> None:
        self.rec = rec
        self.attempts: dict[tuple[str, str], int] = {}

    def quality(self, machine: str, task: str, drawn: str) -> str:
        verdicts = self.rec.qualities.get((machine, task), [])
        n = self.attempts.get((machine, task), 0)
        self.attempts[(machine, task)] = n + 1
        return verdicts[n] if n < len(verdicts) else drawn

    def drive_s(self, robot: str, task: str, origin: str, planned_s: float) -> float:
        drive = self.rec.drives.get((robot, task))
        return drive[1] if drive is not None and drive[0] == origin else planned_s
