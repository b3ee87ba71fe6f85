"""The instrumentation hook of the drivers: one observer, called from two places.

The virtual-time driver, the ZeroMQ host and the simulator process call an
optional observer — ``None`` unless metrics are switched on, so off costs one
attribute test — with

* ``on_actions(agent, actions)``: the actions an agent just returned, before
  they are carried out (the host sees which calls for proposals go out);
* ``on_record(line)``: every line of the process's event log, as the dict
  that is written (``t``, ``ev`` and the event's fields).

It must not raise and must not touch what it is given.  The metrics of
``ops/metrics.py`` implement it; agents never see it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from agents.protocol.actions import Action


class Observer(Protocol):
    def on_actions(self, agent: str, actions: Sequence[Action]) -> None: ...

    def on_record(self, line: Mapping[str, Any]) -> None: ...
