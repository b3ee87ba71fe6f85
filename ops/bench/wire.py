"""The wire decoder, both ways: msgspec (the fast path) against the reference validators.

Decodes the same signed-and-verified envelope payloads with
:meth:`Opener._decode_fast` (msgspec into the body classes, canonical-form
check, limits) and :meth:`Opener._decode_reference` (bounded msgpack, the
header checks and the generated ``from_wire`` validators of ADR 7): stage 2
of the receive path without the access table and the replay window, which
both ways share.  ``autocell bench bus --json`` reports it as
``wire_decode_us``; ``python -m ops.bench.bus --receive-path`` prints it
with the in-process ``receive_path_us`` of the bus benchmark, timed by the
wall clock and (``receive_path_cpu_us``, best of 9) by CPU time.

Two body mixes: ``proposal``, the bus benchmark's own envelopes, and
``all_types``, one envelope of every registered message type, round robin.
Every payload must take the fast path (it is what our sealer writes), else
the figure would time the fallback.
"""

from __future__ import annotations

import itertools
import os
import time
from typing import Any

from agents.protocol.envelope import Opener, Sealer
from agents.protocol.messages import (
    REGISTRY,
    Body,
    CallForProposals,
    Escalate,
    Heartbeat,
    PlantEvent,
    Proposal,
)
from security.keystore import ephemeral_cell

SENDER = "bench-machine"
_FILL: dict[type, Any] = {str: "x", int: 7, float: 2.5, bool: True, list: [["o-1/0", 3, True]],
                          dict: {"queue_s": 12.0, "note": "ok"}}


def _sample(cls: type[Body], i: int) -> Body:
    if cls is Proposal:
        return Proposal(task=f"o-{i % 1000:04d}/1", kind="operation", start_at=1000.0 + i,
                        finish_at=1030.0 + i, hold_until_at=1001.0 + i,
                        cost={"queue_s": 12.0, "setup_s": 4.0, "processing_s": 30.0,
                              "transport_s": 0.0, "energy_kwh": 0.05})
    if cls is CallForProposals:
        return CallForProposals(task=f"o-{i}/0", order=f"o-{i}", kind="operation",
                                capability="milling", op="mill", quantity=3,
                                earliest_start_at=10.0 * i, due_at=3600.0, reply_by_at=2.0)
    if cls is Heartbeat:
        return Heartbeat(state="busy", leases=[[f"o-{i}/0", 2, True]])
    if cls is Escalate:
        return Escalate(escalation=f"e-{i}", priority=1, cause="fault", consequence="late",
                        options=[{"id": "wait", "label": "Wait", "effect": "late"}],
                        context={"eta_s": 3600.0})
    if cls is PlantEvent:
        return PlantEvent(event="operation_done", resource="m1", task=f"o-{i}/0", at=float(i),
                          data={"quality": "ok"})
    return cls(**{name: _FILL[types[0]] for name, types, _ in cls._spec})


def _payloads(mix: str, count: int) -> list[bytes]:
    classes: list[type[Body]] = [Proposal] if mix == "proposal" else list(REGISTRY.values())
    cell = ephemeral_cell({SENDER: "machine", "bench-order": "order"}, seed=b"w" * 32)
    sealer = Sealer(SENDER, cell.keys[SENDER], epoch=1, random_bytes=os.urandom)
    now = time.time()
    return [sealer.seal("bench-order", _sample(cls, i), now)[1]
            for i, cls in zip(range(count), itertools.cycle(classes))]


def wire_decode(count: int = 1500, repeats: int = 5) -> dict[str, Any]:
    """Microseconds per envelope, best of ``repeats`` (interleaved), per mix and way."""
    cell = ephemeral_cell({SENDER: "machine"}, seed=b"w" * 32)
    opener = Opener(cell.trust, None)
    out: dict[str, Any] = {}
    for mix in ("proposal", "all_types"):
        payloads = _payloads(mix, count)
        missed = [p for p in payloads if opener._decode_fast(SENDER, p) is None]
        if missed:
            raise AssertionError(f"{len(missed)} {mix} envelope(s) left the fast path")
        best = {"msgspec": float("inf"), "reference": float("inf")}
        for _ in range(repeats):
            for way, fn in (("msgspec", opener._decode_fast), ("reference", opener._decode_reference)):
                t0 = time.perf_counter()
                for p in payloads:
                    fn(SENDER, p)
                best[way] = min(best[way], (time.perf_counter() - t0) / count * 1e6)
        out[mix] = {"msgspec_us": round(best["msgspec"], 2),
                    "reference_us": round(best["reference"], 2),
                    "speedup": round(best["reference"] / best["msgspec"], 2)}
    return out
