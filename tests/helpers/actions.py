"""What a sans-io agent was given and what it answered, for tests that drive one by hand.

``message`` builds an inbound message as the bus hands it over (conversation ``c1``,
epoch and seq 1, sent at 0); ``sends`` and ``logs`` pick the bodies sent and the fields of
the log lines of one event from an agent's actions.
"""

from __future__ import annotations

from typing import Any

from agents.protocol.actions import Action, Log, Send
from agents.protocol.messages import Message

__all__ = ["logs", "message", "sends"]


def message(sender: str, to: str, body: Any) -> Message:
    return Message(sender, to, "c1", b"id", 1, 1, 0.0, body)


def sends(out: list[Action]) -> list[Any]:
    return [a.body for a in out if isinstance(a, Send)]


def logs(out: list[Action], event: str) -> list[dict[str, Any]]:
    return [a.fields for a in out if isinstance(a, Log) and a.event == event]
