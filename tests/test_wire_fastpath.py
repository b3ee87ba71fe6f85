"""The msgspec fast path of the envelope codec never disagrees with the reference path.

``Opener._decode_fast`` may only ever *accept* (it returns ``None`` when in
doubt, and the reference path, :meth:`Opener._decode_reference`, decides).
So the contract is one-sided and checked two ways: every envelope our own
sealer makes takes the fast path, and for any payload — hand-made edge
cases and Hypothesis-built ones — a fast-path result is exactly what the
reference path gives (equal messages, and the same types: an ``int`` in a
float field stays an ``int``).
"""

from __future__ import annotations

import math
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_envelope import (
    ANY_VALUE,
    CFP,
    NOW,
    SAMPLES,
    header,
    header_like,
    pack,
    pack_pairs,
    with_raw_field,
)

from agents.protocol.envelope import Limits, Opened, Opener
from agents.protocol.messages import Message, Proposal
from security.errors import Malformed, Rejected


def _wire(opened: tuple[Message, tuple[str, ...]]) -> bytes:
    """Everything an opened envelope says, type-exact (msgpack tells 1 from 1.0)."""
    m, to = opened
    return pack([m.sender, m.to, m.conv, m.id, m.epoch, m.seq, m.ts, m.type,
                 m.body.to_wire(), list(to)])


def _agree(op: Opener, sender: str, payload: bytes) -> Opened | None:
    """The fast result, after checking the reference path accepts it identically."""
    fast = op._decode_fast(sender, payload)
    if fast is None:
        return None
    ref = op._decode_reference(sender, payload)
    assert fast == tuple(ref) and _wire(fast) == _wire(ref)
    assert type(fast[0].ts) is float and type(fast[1]) is tuple
    return Opened(*fast)


@pytest.mark.parametrize("type_name", sorted(SAMPLES))
def test_every_sealed_sample_takes_the_fast_path(cell: Any, type_name: str) -> None:
    sender, body = SAMPLES[type_name]
    frames = cell.sealer(sender).seal("o1", body, NOW, conv="c")
    assert _agree(cell.opener(), sender, frames[1]) is not None


def test_a_multicast_takes_the_fast_path(cell: Any) -> None:
    frames = cell.sealer("o1").seal(["m1", "m2", "r1"], CFP, NOW)
    opened = _agree(cell.opener(), "o1", frames[1])
    assert opened is not None and opened.to == ("m1", "m2", "r1")


PROPOSAL = SAMPLES["propose"][1].to_wire()
HANDED_OVER: list[tuple[str, bytes]] = [
    ("duplicate body key", pack(header(body=None)).replace(
        pack("body") + pack(None), pack("body") + pack_pairs([("state", "up"), ("state", "down")]))),
    ("duplicate key in a nested map", with_raw_field(
        "cost", pack_pairs([("queue_s", 1.0), ("queue_s", 2.0)]), type="propose",
        body={k: v for k, v in PROPOSAL.items() if k != "cost"})),
    ("duplicate header key", pack_pairs([("v", 1), ("v", 1)])),
    ("int in a float field", pack(header(type="propose", body={**PROPOSAL, "start_at": 7}))),
    ("NaN in a float field", pack(header(type="propose", body={**PROPOSAL, "start_at": math.nan}))),
    ("inf in a generic map", pack(header(type="propose", body={**PROPOSAL, "cost": {"a": math.inf}}))),
    ("optional field omitted", pack(header(type="propose",
                                           body={k: v for k, v in PROPOSAL.items() if k != "cost"}))),
    ("unknown body field", pack(header(body={"state": "up", "leases": [], "extra": 1}))),
    ("bool for an int", pack(header(epoch=True))),
    ("header as map16", b"\xde\x00\x09" + pack(header())[1:]),
    ("ext type in a generic field", pack(header(body={"leases": [msgpack.ExtType(1, b"x")]}))),
    ("int map key in a generic field", pack(header(body={"leases": [{1: 2}]}))),
    ("nested too deep", with_raw_field("leases", b"\x91" * 12 + b"\x00")),
    ("trailing bytes", pack(header()) + b"\x00"),
    ("over the fast-path size", pack(header(body={"leases": ["x" * 1100]}))),
    ("unknown type", pack(header(type="gossip"))),
    ("version 2", pack(header(v=2))),
    ("negative seq", pack(header(seq=-1))),
    ("non-finite ts", pack(header(ts=math.inf))),
    ("duplicate addressee", pack(header(to=["o1", "o1"]))),
]


@pytest.mark.parametrize("payload", [c[1] for c in HANDED_OVER], ids=[c[0] for c in HANDED_OVER])
def test_doubtful_payloads_go_to_the_reference_path(cell: Any, payload: bytes) -> None:
    op = cell.opener()
    assert op._decode_fast("h1", payload) is None


def test_the_reference_path_keeps_its_reasons(cell: Any) -> None:
    """What the fast path hands over is decided as before, with the same words."""
    op = cell.opener()
    with pytest.raises(Malformed, match="duplicate key"):
        op.open(cell.sign("m1", HANDED_OVER[1][1]), NOW)
    opened = op.open(cell.sign("m1", HANDED_OVER[3][1]), NOW)
    assert type(opened.body.start_at) is int and isinstance(opened.body, Proposal)


def test_a_small_limit_shrinks_the_fast_path(cell: Any) -> None:
    """Limits below the payload size send it to the reference path, which enforces them."""
    payload = pack(header(body={"state": "up", "leases": ["x" * 40]}))
    assert cell.opener()._decode_fast("h1", payload) is not None
    small = cell.opener(limits=Limits(max_str_bytes=32))
    assert small._decode_fast("h1", payload) is None
    with pytest.raises(Malformed):
        small.open(cell.sign("h1", payload), NOW)


PROPERTY = settings(max_examples=400, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@PROPERTY
@given(doc=header_like())
def test_property_fast_path_agrees_on_header_like_docs(module_cell: Any, doc: Any) -> None:
    try:
        payload = msgpack.packb(doc, use_bin_type=True)
    except (TypeError, ValueError, OverflowError):
        return
    _agree(module_cell.opener(), "o1", payload)


@PROPERTY
@given(type_name=st.sampled_from(sorted(SAMPLES)), data=st.data())
def test_property_fast_path_agrees_on_mutated_bodies(module_cell: Any, type_name: str,
                                                     data: st.DataObject) -> None:
    sender, body = SAMPLES[type_name]
    payload = bytearray(module_cell.sealer(sender).seal("o1", body, NOW)[1])
    for _ in range(data.draw(st.integers(1, 3))):
        pos = data.draw(st.integers(0, len(payload) - 1))
        if data.draw(st.booleans()):
            payload[pos] ^= data.draw(st.integers(1, 255))
        else:
            payload[pos:pos] = data.draw(st.binary(min_size=1, max_size=6))
    _agree(module_cell.opener(), sender, bytes(payload))


@PROPERTY
@given(type_name=st.sampled_from(sorted(SAMPLES)), field=st.data(), value=ANY_VALUE)
def test_property_fast_path_agrees_on_any_field_value(module_cell: Any, type_name: str,
                                                      field: st.DataObject, value: Any) -> None:
    sender, body = SAMPLES[type_name]
    wire = body.to_wire()
    wire[field.draw(st.sampled_from(sorted(wire)))] = value
    try:
        payload = pack(header(type=type_name, body=wire))
    except (TypeError, ValueError, OverflowError):
        return
    try:
        _agree(module_cell.opener(), sender, payload)
    except Rejected:   # the reference path refused what the fast path accepted: a bug
        raise AssertionError("fast path accepted what the reference path refuses") from None


def _near(types: tuple[type, ...]) -> st.SearchStrategy[Any]:
    """Values of a field's own wire type, and the neighbours a peer might confuse with it."""
    base = types[0]
    if base is float:
        return st.floats() | st.integers(-(2**63), 2**64 - 1) | st.booleans()
    if base is int:
        return st.integers(-(2**63), 2**64 - 1) | st.booleans() | st.floats(-5, 5)
    if base is bool:
        return st.booleans() | st.integers(0, 1)
    if base is str:
        return st.text(max_size=40) | st.binary(max_size=4)
    return ANY_VALUE


@PROPERTY
@given(type_name=st.sampled_from(sorted(SAMPLES)), data=st.data())
def test_property_fast_path_agrees_on_typed_field_values(module_cell: Any, type_name: str,
                                                        data: st.DataObject) -> None:
    sender, body = SAMPLES[type_name]
    wire = body.to_wire()
    for name, types, _ in data.draw(st.lists(st.sampled_from(body._spec), max_size=3)):
        wire[name] = data.draw(_near(types))
    try:
        payload = pack(header(type=type_name, body=wire))
    except (TypeError, ValueError, OverflowError):
        return
    _agree(module_cell.opener(), sender, payload)
