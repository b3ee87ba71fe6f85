"""What the backend asks of a machine, whatever it speaks: the profile interface.

Theory of operation
-------------------
:class:`~sim_bridge.opcua.backend.OpcUaBackend` owns the link, the grace,
the orphans, the refusals and the records; a *profile* owns the nodes of one
machine and what they mean.  The backend never branches on the profile: it
asks the machine's :class:`Profile` to

* **resolve** its nodes on each new session (``MissingNode`` naming the first
  one missing) and say which to subscribe to: ``"jobs"`` nodes (a change may
  end a job), ``"state"`` nodes (a change may take the machine down) and
  ``"both"``;
* **start** a job under an id (``None``, or why the machine refused), **abort**
  it, read its **quality** and **clear** it once its end is reported;
* give the **job states** ``{job id: ISA-95 state number}`` (3 Running, 5 Ended,
  6 Aborted; an id left out is unknown to the machine), from a notification
  or read afresh after a reconnect, which the backend's settle logic turns
  into ``operation_done``, ``stopped`` and ``command_refused``;
* say whether the machine is **down** and why.

Three facts differ between profiles and are attributes, not branches:
``refuses_duplicates`` (the machine itself refuses a job id it ran, so a start
whose answer was lost may be sent again), ``can_abort`` and ``answers_by_id``
(the machine tells a job's state by its id even once it ended and was cleared,
so a refused re-send can be told from a job never run: :meth:`Profile.job_state`).

:class:`JobsProfile` is ``machinery-jobs`` (OPC 40001-3, :mod:`.jobs`);
:class:`~sim_bridge.opcua.packml.PackMLProfile` is ``packml`` (OPC 30050,
:mod:`.packml`); :class:`~sim_bridge.opcua.legacy.NodesProfile` is ``nodes``
(:mod:`.legacy`).
:func:`make_profile` picks one from the cell file's ``opcua:`` block.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, Protocol

from asyncua import Client, Node, ua

from agents.cell.equipment import OpcUaEquipment

from . import jobs
from .legacy import NodesProfile
from .packml import PackMLProfile

__all__ = ["JobsProfile", "Profile", "Watch", "make_profile"]

#: What a subscribed node is for: a change of a ``jobs`` node may end a job, one of a
#: ``state`` node may take the machine down or bring it back.
Watch = jobs.Watch


class Profile(Protocol):
    """One machine's nodes and what they mean (see the module doc)."""

    #: the machine refuses a job id it has run: a start whose answer was lost is resent
    refuses_duplicates: bool
    #: the machine can stop a running job when asked
    can_abort: bool
    #: :meth:`job_state` answers for any job the machine ever had (ended and cleared too)
    answers_by_id: bool
    #: ``read_states`` is a plain read with no effect on the profile's picture, so the
    #: gateway may re-read a long-silent running job's state at any time: a safety net
    #: against a job end whose notification never arrived
    reconcilable: bool

    @property
    def readings(self) -> Mapping[str, Node]: ...

    async def resolve(self, client: Client, namespaces: list[str]) -> list[Watch]:
        """Find the nodes on a new session; the nodes to subscribe to."""
        ...

    async def start(self, jid: str, args: Mapping[str, Any]) -> str | None:
        """Start job ``jid``: None once started, else why the machine refused.  A Bad
        status raises ``ua.UaStatusCodeError``; a lost link, its own error."""
        ...

    async def abort(self, jid: str) -> dict[str, int] | None:
        """Ask the machine to stop ``jid``; the job states to settle at once, or None when
        the machine publishes them itself."""
        ...

    async def clear(self, jid: str) -> int:
        """Forget a job whose end was reported (the machine's list stays short)."""
        ...

    async def quality(self, jid: str, ok_values: list[str]) -> str:
        """``ok`` or ``scrap`` of an ended job."""
        ...

    async def read_states(self) -> dict[str, int]:
        """The job states, read afresh (after a reconnect)."""
        ...

    def job_states(self, node: ua.NodeId, value: Any) -> dict[str, int]:
        """The job states after a ``jobs`` node changed to ``value``."""
        ...

    async def job_state(self, jid: str) -> int | None:
        """The state of one job asked by its id (None: unknown to the machine, or the
        profile cannot ask: ``answers_by_id`` false)."""
        ...

    def on_state(self, node: ua.NodeId, value: Any) -> None:
        """A ``state`` node changed to ``value``."""
        ...

    def down_reason(self) -> str | None:
        """Why the machine is down, or None (up, or not known yet)."""
        ...

    def adopt(self, jid: str) -> None:
        """A restarted gateway's journal says ``jid`` runs here: take it on if the machine
        can tell."""
        ...


class JobsProfile:
    """``machinery-jobs``: OPC 40001-3 job orders (:mod:`.jobs`), behaviour as before the
    profile interface."""

    refuses_duplicates = True
    can_abort = True
    answers_by_id = True          # RequestJobResponseByJobOrderID, cleared jobs included
    reconcilable = True           # the job list is read as it is, nothing kept from it

    def __init__(self, name: str, settings: OpcUaEquipment) -> None:
        self.name = name
        self.settings = settings
        self.ns: jobs.Namespaces | None = None
        self.types: dict[str, Any] = {}
        self.nodes: jobs.MachineNodes | None = None
        self.item_state_text = ""

    @property
    def readings(self) -> Mapping[str, Node]:
        return self.nodes.readings if self.nodes is not None else {}

    def _ready(self) -> tuple[jobs.Namespaces, jobs.MachineNodes]:
        assert self.ns is not None and self.nodes is not None, "resolve() first"
        return self.ns, self.nodes

    async def resolve(self, client: Client, namespaces: list[str]) -> list[Watch]:
        self.ns = jobs.Namespaces.of_table(namespaces)
        self.types = jobs.types_of(self.ns)
        self.nodes = await jobs.resolve(client, self.ns, self.name, self.settings.readings)
        watch: list[Watch] = [(self.nodes.job_list, "jobs")]
        if self.nodes.item_state is not None:
            watch.append((self.nodes.item_state, "state"))
        return watch

    async def start(self, jid: str, args: Mapping[str, Any]) -> str | None:
        ns, nodes = self._ready()
        rs = await jobs.store_and_start(ns, nodes, jid, args, self.types)
        if rs != 0:
            return f"ReturnStatus {rs} ({jobs.RETURN_STATUS.get(rs, '?')})"
        return None

    async def abort(self, jid: str) -> dict[str, int] | None:
        ns, nodes = self._ready()
        await jobs.abort(ns, nodes, jid)
        return None               # the job list says Aborted

    async def clear(self, jid: str) -> int:
        ns, nodes = self._ready()
        return await jobs.clear(ns, nodes, jid)

    async def quality(self, jid: str, ok_values: list[str]) -> str:
        ns, nodes = self._ready()
        return await jobs.quality(ns, nodes, jid, self.settings.quality_parameter, ok_values)

    async def read_states(self) -> dict[str, int]:
        return await jobs.jobs(self._ready()[1])

    def job_states(self, node: ua.NodeId, value: Any) -> dict[str, int]:
        return jobs.parse_job_list(value)

    async def job_state(self, jid: str) -> int | None:
        ns, nodes = self._ready()
        return await jobs.job_state(ns, nodes, jid)

    def on_state(self, node: ua.NodeId, value: Any) -> None:
        self.item_state_text = str(getattr(value, "Text", value))

    def down_reason(self) -> str | None:
        if self.item_state_text in jobs.DOWN_STATES:
            return f"machine state {self.item_state_text}"
        return None

    def adopt(self, jid: str) -> None:
        pass                      # the job list names it, or the machine no longer knows it


def make_profile(name: str, settings: OpcUaEquipment) -> Profile:
    """The profile of machine ``name`` (its object's browse name or path on the server)."""
    if settings.profile == "nodes":
        return NodesProfile(name, settings)
    if settings.profile == "packml":
        return PackMLProfile(name, settings)
    return JobsProfile(name, settings)
