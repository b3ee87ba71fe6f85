"""What an agent asks its driver to do: the outputs of the sans-io core.

An agent's ``on_*`` methods return a list of these; the driver (virtual
time or the ZeroMQ host) carries them out.  Frozen, comparable, printable —
tests assert on them directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .messages import Body


@dataclass(frozen=True, slots=True)
class Send:
    """Seal ``body`` as this agent and send it to agent ``to``."""

    to: str
    body: Body
    conv: str = ""


@dataclass(frozen=True, slots=True)
class SetTimer:
    """Call ``on_timer(key)`` at ``at`` (replaces a timer with the same key)."""

    key: str
    at: float


@dataclass(frozen=True, slots=True)
class CancelTimer:
    key: str


@dataclass(frozen=True, slots=True)
class Command:
    """A command to the plant: start_operation, abort_operation, move, set_state."""

    command: str
    resource: str
    task: str = ""
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Log:
    """One event for the run's event log (and the structured log)."""

    event: str
    fields: dict[str, Any] = field(default_factory=dict)


Action = Send | SetTimer | CancelTimer | Command | Log
