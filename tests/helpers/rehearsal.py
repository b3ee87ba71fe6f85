"""Run a rehearsal by hand, sans-io: order and machine rehearsals exchanging messages in
arrival order on one clock at 0 (tests of the rehearsal's passes)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agents.protocol.actions import Send


def pump(ors: Mapping[str, Any], mrs: Mapping[str, Any]) -> None:
    """Start every order rehearsal (``ors``) and deliver every message between them and the
    machine rehearsals (``mrs``) until none is left; every order must have finished."""
    queue: list[tuple[str, Send]] = []
    for o, r in ors.items():
        queue += [(o, a) for a in r.start(0.0) if isinstance(a, Send)]
    while queue:
        sender, a = queue.pop(0)
        out = (ors[a.to].on_message(sender, a.body, 0.0) if a.to in ors
               else mrs[a.to].on_message(sender, a.body, a.conv))
        queue += [(a.to, b) for b in out if isinstance(b, Send)]
    assert all(r.finished for r in ors.values())
