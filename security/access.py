"""Who may say what: the access table (docs/PROTOCOL.md §8), as data.

``ACCESS`` maps a message type to the roles allowed to send it.
``KIND_ACCESS`` refines types whose body names a ``kind``: only machines bid
for operations, only robots for transports.  The codec calls
:func:`check_access` after the signature and schema checks, so ``role`` is
the certificate's role, never a claim made in the message.
"""

from __future__ import annotations

from typing import Any

from .errors import Forbidden

RESOURCES = frozenset({"machine", "robot"})
AGENTS = frozenset({"machine", "robot", "order"})
EVERYONE = frozenset({"machine", "robot", "order", "console", "sim", "host"})

ACCESS: dict[str, frozenset[str]] = {
    "cfp": frozenset({"order"}),
    "accept": frozenset({"order"}),
    "reject": frozenset({"order"}),
    "cancel": frozenset({"order"}),
    "ready": frozenset({"order"}),
    "propose": RESOURCES,
    "refuse": RESOURCES,
    "confirm": RESOURCES,
    "inform_done": RESOURCES,
    "failure": RESOURCES,
    "heartbeat": EVERYONE,
    "explore": frozenset({"order"}),
    "explore_ready": frozenset({"order", "machine"}),
    "intend": frozenset({"order"}),
    "explore_result": frozenset({"order"}),
    "explore_quote": frozenset({"machine"}),
    "baton": frozenset({"order", "machine"}),
    "escalate": AGENTS | {"host", "energy"},        # energy: the cap escalation
    "decision": frozenset({"console"}),
    "escalation_update": AGENTS | {"host", "energy"},
    "plant_command": AGENTS | {"host"},
    "plant_event": frozenset({"sim"}),
    "power_request": frozenset({"machine"}),
    "power_grant": frozenset({"energy"}),
    "power_release": frozenset({"machine"}),
    "cap_in_force": frozenset({"energy"}),
    "explore_result_priced": frozenset({"order"}),
    "maint_request": frozenset({"machine"}),
    "maint_offer": frozenset({"maintenance"}),
    "maint_start": frozenset({"maintenance"}),
    "maint_done": frozenset({"machine"}),
    "part_reserve": frozenset({"machine"}),
    "part_reserved": frozenset({"stores"}),
    "part_unavailable": frozenset({"stores"}),
    "part_release": frozenset({"machine"}),
    "part_consumed": frozenset({"machine"}),
    "part_expedite": frozenset({"machine"}),
    "maint_repair": frozenset({"machine"}),
}

KIND_ACCESS: dict[tuple[str, str], frozenset[str]] = {
    ("propose", "operation"): frozenset({"machine"}),
    ("propose", "transport"): frozenset({"robot"}),
}

KINDED_TYPES = frozenset(t for t, _ in KIND_ACCESS)


def check_access(role: str, msg_type: str, body: Any, sender: str) -> None:
    """Raise :class:`Forbidden` unless ``role`` may send ``msg_type`` with this body."""
    allowed = ACCESS.get(msg_type)
    if allowed is None or role not in allowed:
        raise Forbidden(f"role {role!r} may not send {msg_type!r}", sender=sender, msg_type=msg_type)
    if msg_type in KINDED_TYPES:
        kind = getattr(body, "kind", None)
        refined = KIND_ACCESS.get((msg_type, kind))  # type: ignore[arg-type]
        if refined is None:
            raise Forbidden(f"{msg_type!r} with unknown kind {kind!r}", sender=sender,
                            msg_type=msg_type)
        if role not in refined:
            raise Forbidden(f"role {role!r} may not send {msg_type!r} for kind {kind!r}",
                            sender=sender, msg_type=msg_type)
