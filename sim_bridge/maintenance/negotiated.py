"""The simulator's side of negotiated maintenance: the technician arrives, the plant stops.

Under the ``negotiated`` policy nothing in the simulator decides when to
maintain: the machine agents do, leasing windows from the crew agent
(agents/maintenance/).  The simulator keeps what is physical — the named
technicians' hands and the shelf of parts (the workshop), and the corrective
repairs after a failure, which wait for the technician the crew booked (the
machine names them with ``set_state`` ``state: repair``; ADR 64).  A machine
whose technician has come sends the plant ``set_state`` with ``state:
maintenance`` (job id as the task, the technician named); this module catches
that command in front of the gateway (which ignores states it does not know)
and starts the job at once, or answers ``command_refused`` when the named
technician is on a repair or the part is missing, so the machine asks again.

The part: the stores agent (agents/maintenance/stores.py) is the shelf's
authority for planned windows.  The command names the serial it holds for the
job (``part_serial``); the workshop fits that unit and no other, never one it
fitted before (refused: "used already"), and does not take from its own shelf;
a corrective repair's ``set_state repair`` names its unit the same way (ADR 71),
so under this policy the shelf is not used at all: the stores agent's books are
the cell's only ones.  A command without a serial (no stores agent) takes from
the shelf as before.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from agents.base import PlantEventIn
from agents.maintenance.estimators import estimator
from agents.maintenance.rul import HealthModel
from agents.maintenance.stores import STORES_ID
from agents.protocol.actions import Command

from .workshop import Workshop

if TYPE_CHECKING:
    from sim_bridge.virtual import VirtualCell

__all__ = ["attach_negotiated"]


def attach_negotiated(cell: VirtualCell, workshop: Workshop,
                      models: Mapping[str, HealthModel]) -> None:
    """Route the machines' ``set_state maintenance`` to the workshop; give the machine
    agents' estimators the trained ``models`` where there are some (a restarted agent
    starts from them again, and a decision log's header keeps them for the replay)."""
    settings = cell.cfg.maintenance
    if settings is None or not settings.negotiate:
        raise ValueError("the negotiated maintenance policy needs `maintenance: {negotiate: "
                         "true}` in the cell file: the machine agents plan the windows and a "
                         "crew agent books the technicians (docs/maintenance.md)")
    cell.models = dict(models)
    for mid, model in models.items():
        agent = cell.runner.agents.get(mid)
        window = getattr(agent, "maint", None)
        if window is not None:
            window.estimator = estimator(settings.estimator, model)
    # the part gauges read the stores agent's books at scrape time (metrics.py): the agent
    # of the moment, so a stores agent rebuilt after a crash is the one read
    workshop.books = lambda: getattr(cell.runner.agents.get(STORES_ID), "stores", None)
    # and the health gauges the machine agents' own estimators and windows (ADR 75): the
    # agents decide under this policy, so their estimate is the one to show
    workshop.windows = lambda: {mid: w for mid, a in cell.runner.agents.items()
                                if (w := getattr(a, "maint", None)) is not None}
    plant, backend = cell.plant, cell.plant.backend
    inner = plant.command
    workshop.expect_repairs()

    def command(cmd: Command) -> None:
        state = cmd.args.get("state") if cmd.command == "set_state" else None
        if state not in ("maintenance", "repair"):
            inner(cmd)
            return
        dm = backend.degrading.get(cmd.resource)
        tech = str(cmd.args.get("technician", ""))
        serial = str(cmd.args.get("part_serial", ""))   # held by the stores agent
        why = "the machine does not wear" if dm is None else \
            workshop.negotiated(dm, tech, serial) if state == "maintenance" else \
            workshop.await_part(dm, float(cmd.args.get("eta_at", 0.0))) if not tech else \
            workshop.repair_with(dm, tech, serial)
        if why:
            backend.record("maintenance_refused", machine=cmd.resource, job=cmd.task,
                           technician=tech, why=why)
            plant.emit(PlantEventIn("command_refused", cmd.resource, cmd.task, {"why": why}))
    plant.command = command  # type: ignore[method-assign]
