"""The plant interface: what a plant backend does, and what it reports.

Theory of operation
-------------------
The plant is the only way agents touch the physical world (docs/architecture.md,
The plant interface).  The :class:`~sim_bridge.gateway.PlantGateway` stands
between the agents and the plant: it routes each command, by resource, to the
**backend** that drives that resource (``backend:`` of the machine or robot in
the cell file; ``embedded``, the simulator, is the only one so far), puts the
fence (:mod:`sim_bridge.fence`) in front of every start, and forwards what the
backends report to the agents.  A backend is a class implementing
:class:`Plant`; it reports through the :class:`PlantEvents` it is given.

The words are those of the remote plant protocol (docs/PROTOCOL.md §13), which
stays what it is on the wire: the gateway turns :class:`PlantEvents` calls into
the ``plant_event`` bodies of §13.4 and ``plant_command`` bodies into
:class:`Plant` calls.

Commands in (:class:`Plant`), each about one resource the backend drives:

================== ==================================================================
``start_operation`` run task ``task`` on machine ``resource``; ``args`` as §13.3
                    (``duration_s``, ``award_epoch``, ``order``, ``capability``,
                    ``quantity``, ``setup_s``, ``processing_s``).  The fence has
                    passed it.  Returns ``True`` when it started (or, for a backend
                    that answers later, was accepted), ``False`` when the resource
                    is down: the gateway then answers ``fault`` "down at start".
``abort_operation`` stop ``task`` if ``resource`` runs it; otherwise nothing.  The end
                    is reported as :meth:`PlantEvents.stopped` when it happens.
``move``            carry the parts of ``task`` (robots); ``args`` as §13.3
                    (``duration_s``, ``origin``, ``destination``, ``from``,
                    ``order``, ``award_epoch``).  Returns like ``start_operation``.
``set_state``       ``"up"`` or ``"down"`` for a machine (maintenance tools).
``query_state``     whether ``resource`` is up; the gateway answers the task part
                    of §13.3's ``query_state`` from the fence's memory.
================== ==================================================================

Events out (:class:`PlantEvents`), with their §13.4 ``data`` fields:

================== ==================================================================
``operation_done``  ``quality`` ("ok" or "scrap"); on the wire ``quality_result``
                    then ``operation_done``.  The fence learns the task ended.
``fault``           ``reason``; ``repair_eta_s`` (optional, cell seconds).  A running
                    operation or move is interrupted: report it with ``stopped``.
``repaired``        no fields.
``arrived``         ``at``: the destination of the move.
``reading``         sensor values, e.g. ``temperature_c``, ``vibration_mm_s``.
``quality_result``  ``quality``; sent by ``operation_done`` above, on its own only
                    by a backend whose quality check is separate from the machine.
``command_refused`` ``why`` (for people), ``elsewhere`` (bool), ``done_at`` (optional),
                    ``escalate`` (optional, true: the equipment keeps refusing, a
                    case for a supervisor); the gateway sends those of the fence
                    and of ``query_state``.
``state``           ``up`` (bool), ``reason``; the answer to ``query_state``.
``stopped``         not on the wire: an operation or move ended without a result
                    (aborted, interrupted by a fault); the fence forgets it runs.
================== ==================================================================
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

__all__ = ["COMMANDS", "Plant", "PlantEvents"]

#: The commands of the remote plant protocol (§13.3), in the order the issue lists them.
COMMANDS: tuple[str, ...] = ("start_operation", "abort_operation", "move", "set_state",
                             "query_state")


class PlantEvents(Protocol):
    """Where a backend reports what happened, at the cell time it happened."""

    def operation_done(self, resource: str, task: str, quality: str) -> None: ...

    def fault(self, resource: str, reason: str, repair_eta_s: float | None = None) -> None: ...

    def repaired(self, resource: str) -> None: ...

    def arrived(self, resource: str, task: str, at: str) -> None: ...

    def reading(self, resource: str, values: Mapping[str, float]) -> None: ...

    def quality_result(self, resource: str, task: str, quality: str) -> None: ...

    def command_refused(self, resource: str, task: str, why: str, *, elsewhere: bool = False,
                        done_at: str | None = None, escalate: bool = False,
                        outcome_unknown: bool = False) -> None: ...

    def stopped(self, resource: str, task: str, why: str) -> None: ...


class Plant(Protocol):
    """A plant backend: the equipment (or the simulator) behind some resources.

    ``resources`` are the machine and robot ids it drives; ``running()`` what
    each runs now, which the gateway asks once at start-up so that the
    fence, journalled across a restart of the plant process, forgets the
    operations that are no longer running (``{}`` for a simulator that has
    just started)."""

    resources: frozenset[str]

    def start_operation(self, resource: str, task: str, args: Mapping[str, Any]) -> bool: ...

    def abort_operation(self, resource: str, task: str) -> None: ...

    def move(self, resource: str, task: str, args: Mapping[str, Any]) -> bool: ...

    def set_state(self, resource: str, state: str) -> None: ...

    def query_state(self, resource: str) -> bool: ...

    def running(self) -> dict[str, str]: ...
