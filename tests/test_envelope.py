"""The envelope codec (agents.protocol.envelope): seal/open round trips and every typed rejection.

Table-driven: each row builds the three frames of one envelope (often a
*validly signed* garbage payload, so the unpacker and schema are reached)
and names the :class:`~security.errors.Rejected` subclass ``Opener.open``
must raise.  A Hypothesis property then holds the codec to its contract:
whatever the frames, ``open`` returns a ``Message`` or raises ``Rejected``.
"""

from __future__ import annotations

import tracemalloc
from typing import Any, Callable

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.protocol.envelope import (
    HEADER_KEYS,
    MAX_ADDRESSEES,
    MSG_ID_BYTES,
    Limits,
    Opened,
    Opener,
)
from agents.protocol.messages import (
    REGISTRY,
    Award,
    CallForProposals,
    Cancel,
    Confirmation,
    Decision,
    Done,
    Escalate,
    Failure,
    Heartbeat,
    Message,
    PlantCommand,
    PlantEvent,
    Proposal,
    Refusal,
    Rejection,
)
from security.access import ACCESS
from security.errors import (
    BadSignature,
    CertificateExpired,
    ClockSkew,
    Forbidden,
    Malformed,
    Misdirected,
    ProtocolBug,
    Rejected,
    Replayed,
    Revoked,
    UnknownSender,
)
from security.replay import ReplayGuard

NOW = 1_700_000_000.0

# -- sample bodies: one per registered type, with a sender allowed to send it -------------

CFP = CallForProposals(task="o1/0", order="o1", kind="operation", capability="milling",
                       op="mill", quantity=3, earliest_start_at=NOW, due_at=NOW + 3600,
                       reply_by_at=NOW + 2, origin="in", destination="", attempt=1)
SAMPLES: dict[str, tuple[str, Any]] = {
    "cfp": ("o1", CFP),
    "propose": ("m1", Proposal(task="o1/0", kind="operation", start_at=NOW + 5, finish_at=NOW + 65,
                               hold_until_at=NOW + 3,
                               cost={"queue_s": 5.0, "setup_s": 1, "nested": {"a": [1, b"x", None]}})),
    "refuse": ("r1", Refusal(task="o1/0", reason="busy")),
    "accept": ("o1", Award(task="o1/0", award_epoch=2, lease_s=10.0, start_at=NOW + 5)),
    "reject": ("o1", Rejection(task="o1/0")),
    "confirm": ("m1", Confirmation(task="o1/0", award_epoch=2, ok=False, reason="faulted")),
    "inform_done": ("m1", Done(task="o1/0", award_epoch=2, started_at=NOW, finished_at=NOW + 60,
                               quality="scrap", location="out")),
    "failure": ("r1", Failure(task="o1/0/move", award_epoch=1, reason="blocked")),
    "cancel": ("o1", Cancel(task="o1/0", award_epoch=2, reason="lease expired")),
    "heartbeat": ("h1", Heartbeat(state="busy", leases=[["o1/0", 2], ["o2/1", 1]])),
    "escalate": ("o1", Escalate(escalation="e-1", priority=1, cause="no capable resource",
                                consequence="order late", order="o1", resource="m1",
                                options=[{"id": "wait", "label": "Wait", "effect": "late 1h"}],
                                safe_default="wait", deadline_at=NOW + 600,
                                context={"recent": ["fault", "fault"], "eta_s": 3600.0})),
    "decision": ("c1", Decision(escalation="e-1", option="wait", user="alice", reason="ok")),
    "plant_command": ("m1", PlantCommand(command="start_operation", resource="m1", task="o1/0",
                                         args={"program": "P7", "speed": 1.0})),
    "plant_event": ("s1", PlantEvent(event="fault", resource="m1", task="o1/0", at=NOW,
                                     data={"code": 17, "text": "spindle"})),
}


AGENT_OF_ROLE = {"machine": "m1", "robot": "r1", "order": "o1", "console": "c1", "sim": "s1",
                 "host": "h1", "energy": "e1", "maintenance": "k1", "stores": "t1"}
_FILLERS: dict[type, Any] = {str: "x", int: 1, float: 1.5, bool: True, bytes: b"b", list: [1, "a"],
                             dict: {"k": [1, 2.5]}}


def _auto_sample(type_name: str) -> tuple[str, Any]:
    """A body for a type added after this table was written, and a sender allowed to send it."""
    cls = REGISTRY[type_name]
    body = cls(**{name: _FILLERS[types[0]] for name, types, _ in cls._spec})
    roles = sorted(ACCESS.get(type_name, ()))
    assert roles, f"no role may send {type_name!r}: add it to security.access.ACCESS"
    return AGENT_OF_ROLE[roles[0]], body


for _type_name in REGISTRY:
    if _type_name not in SAMPLES:
        SAMPLES[_type_name] = _auto_sample(_type_name)


def header(**overrides: Any) -> dict[str, Any]:
    """A valid header for a heartbeat from anyone, with ``overrides`` applied."""
    doc: dict[str, Any] = {"v": 1, "id": b"\x01" * MSG_ID_BYTES, "to": "o1", "type": "heartbeat",
                           "conv": "c", "epoch": 1, "seq": 1, "ts": NOW, "body": {}}
    doc.update(overrides)
    return doc


def drop(doc: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != key}


def cfp_wire(**overrides: Any) -> dict[str, Any]:
    body = CFP.to_wire()
    body.update(overrides)
    return body


def pack(doc: Any) -> bytes:
    return msgpack.packb(doc, use_bin_type=True)


def nested(levels: int, leaf: Any = 0) -> Any:
    """``{"a": {"a": ... leaf}}`` ``levels`` maps deep."""
    value = leaf
    for _ in range(levels):
        value = {"a": value}
    return value


def nested_bytes(levels: int) -> bytes:
    """The msgpack bytes of :func:`nested` built without recursion (any depth)."""
    return b"\x81\xa1a" * levels + b"\x00"


def pack_pairs(pairs: list[tuple[str, Any]]) -> bytes:
    """A msgpack map written pair by pair (so a key may appear twice)."""
    assert len(pairs) < 16
    return bytes([0x80 | len(pairs)]) + b"".join(pack(k) + pack(v) for k, v in pairs)


def with_raw_field(body_key: str, raw: bytes, **hdr: Any) -> bytes:
    """A header whose body field ``body_key`` is the raw msgpack ``raw`` (spliced in)."""
    marker = "\x00MARK\x00"
    doc = header(**hdr)
    doc["body"] = {**doc["body"], body_key: marker}
    packed = pack(doc)
    packed_marker = pack(marker)
    i = packed.index(packed_marker)
    return packed[:i] + raw + packed[i + len(packed_marker):]


ESCALATE_BODY = {"escalation": "e", "priority": 1, "cause": "c", "consequence": "q"}


def opener(cell: Any, **guard: Any) -> Opener:
    return cell.opener(ReplayGuard(**guard))


# -- round trips ----------------------------------------------------------------------------

def test_samples_cover_every_registered_type() -> None:
    assert set(SAMPLES) == set(REGISTRY)
    for type_name, (sender, body) in SAMPLES.items():
        assert body.TYPE == type_name
        assert AGENT_OF_ROLE[sorted(ACCESS[type_name])[0]] and sender in AGENT_OF_ROLE.values()


@pytest.mark.parametrize("type_name", sorted(SAMPLES))
def test_round_trip_every_message_type(cell: Any, type_name: str) -> None:
    sender, body = SAMPLES[type_name]
    sealer = cell.sealer(sender, epoch=7)
    frames = sealer.seal("o1", body, NOW, conv="conv-9")
    assert frames[0] == sender.encode() and len(frames[2]) == 64
    msg = opener(cell).open(frames, NOW + 0.5)
    assert isinstance(msg, Message)
    assert msg.body == body and type(msg.body) is type(body) and msg.type == type_name
    assert (msg.sender, msg.to, msg.conv, msg.epoch, msg.seq, msg.ts) == (
        sender, "o1", "conv-9", 7, 1, NOW)
    assert len(msg.id) == MSG_ID_BYTES


def test_transport_proposal_from_robot_round_trips(cell: Any) -> None:
    body = Proposal(task="o1/0/move", kind="transport", start_at=NOW, finish_at=NOW + 9,
                    hold_until_at=NOW + 1)
    msg = opener(cell).open(cell.sealer("r1").seal("o1", body, NOW), NOW)
    assert msg.body == body


def test_optional_fields_take_their_defaults(cell: Any) -> None:
    frames = cell.sign("o1", pack(header(type="accept", body={"task": "t", "award_epoch": 1,
                                                              "lease_s": 5})))
    msg = opener(cell).open(frames, NOW)
    assert msg.body == Award(task="t", award_epoch=1, lease_s=5, start_at=0.0)


def test_sequence_numbers_increase_per_sealer(cell: Any) -> None:
    sealer = cell.sealer("m1")
    op = opener(cell)
    seqs = [op.open(sealer.seal("o1", Heartbeat(), NOW), NOW).seq for _ in range(3)]
    assert seqs == [1, 2, 3]


# -- the rejection table --------------------------------------------------------------------

Build = Callable[[Any], list[bytes]]


def signed(doc: Any, sender: str = "m1") -> Build:
    return lambda cell: cell.sign(sender, pack(doc))


def signed_raw(payload: bytes, sender: str = "m1") -> Build:
    return lambda cell: cell.sign(sender, payload)


def sealed(sender: str, body: Any, *, key_of: str | None = None, ts: float = NOW) -> Build:
    return lambda cell: cell.sealer(sender, key_of=key_of).seal("o1", body, ts)


def revoked_m2(cell: Any) -> list[bytes]:
    cell.revoke("m2")
    return cell.sealer("m2").seal("o1", Heartbeat(), NOW)


def expired(not_before_at: float, not_after_at: float) -> Build:
    def build(cell: Any) -> list[bytes]:
        cell.add("t1", "machine", not_before_at=not_before_at, not_after_at=not_after_at)
        return cell.sealer("t1").seal("o1", Heartbeat(), NOW)
    return build


def short_signature(cell: Any) -> list[bytes]:
    f = cell.sealer("m1").seal("o1", Heartbeat(), NOW)
    return [f[0], f[1], f[2][:63]]


# (id, build, expected error, expected sender)
REJECTIONS: list[tuple[str, Build, type[Rejected], str | None]] = [
    # identity and signature
    ("unknown sender", lambda cell: [b"ghost", pack(header()), b"\0" * 64], UnknownSender, "ghost"),
    ("bad signature: another agent's key", sealed("m1", Heartbeat(), key_of="m2"), BadSignature, "m1"),
    ("bad signature: 63 bytes", short_signature, BadSignature, "m1"),
    ("revoked", revoked_m2, Revoked, "m2"),
    ("certificate not yet valid", expired(NOW + 10, NOW + 1000), CertificateExpired, "t1"),
    ("certificate expired", expired(NOW - 1000, NOW - 10), CertificateExpired, "t1"),
    ("clock skew: future", sealed("m1", Heartbeat(), ts=NOW + 31), ClockSkew, "m1"),
    ("clock skew: past", sealed("m1", Heartbeat(), ts=NOW - 31), ClockSkew, "m1"),
    # framing
    ("no frames", lambda cell: [], Malformed, None),
    ("one frame", lambda cell: [b"m1"], Malformed, None),
    ("two frames", lambda cell: cell.sealer("m1").seal("o1", Heartbeat(), NOW)[:2], Malformed, None),
    ("four frames", lambda cell: cell.sealer("m1").seal("o1", Heartbeat(), NOW) + [b""], Malformed, None),
    ("empty sender", lambda cell: [b"", pack(header()), b"\0" * 64], Malformed, None),
    ("sender 65 bytes", lambda cell: [b"m" * 65, pack(header()), b"\0" * 64], Malformed, None),
    ("sender not utf-8", lambda cell: [b"\xff\xfe", pack(header()), b"\0" * 64], Malformed, None),
    ("body over max_body_bytes", sealed("h1", Heartbeat(leases=["x" * 70_000])), Malformed, "h1"),
    # msgpack
    ("not msgpack", signed_raw(b"\xc1\xc1\xc1"), Malformed, "m1"),
    ("truncated msgpack", signed_raw(pack(header())[:-3]), Malformed, "m1"),
    ("trailing bytes", signed_raw(pack(header()) + b"\x00"), Malformed, "m1"),
    ("empty payload", signed_raw(b""), Malformed, "m1"),
    ("ext type in a dict field", signed(header(type="plant_command", body={
        "command": "c", "resource": "m1", "args": {"x": msgpack.ExtType(5, b"abc")}})), Malformed, "m1"),
    ("timestamp ext as ts", signed_raw(msgpack.packb({**header(), "ts": msgpack.Timestamp(1, 0)})),
     Malformed, "m1"),
    ("int map key in a dict field", signed(header(type="plant_command", body={
        "command": "c", "resource": "m1", "args": {1: 2}})), Malformed, "m1"),
    ("bytes map key in a dict field", signed(header(type="plant_command", body={
        "command": "c", "resource": "m1", "args": {b"k": 2}})), Malformed, "m1"),
    ("bytes map key nested in a list", signed(header(type="heartbeat", body={
        "leases": [[{b"k": 1}]]})), Malformed, "m1"),
    ("nesting deeper than max_depth", signed(header(type="escalate", body={
        **ESCALATE_BODY, "context": nested(7)}), "o1"), Malformed, "o1"),
    ("list nesting deeper than max_depth", signed(header(body={"leases": [[[[[[[1]]]]]]]})), Malformed, "m1"),
    ("string longer than max_str_bytes", signed(header(conv="c" * 20_000)), Malformed, "m1"),
    ("array longer than max_container_len", signed(header(body={"leases": [0] * 1025})), Malformed, "m1"),
    # header
    ("header not a map", signed([1, 2, 3]), Malformed, "m1"),
    ("header is a string", signed("hello"), Malformed, "m1"),
    ("header missing conv", signed(drop(header(), "conv")), Malformed, "m1"),
    ("header missing body", signed(drop(header(), "body")), Malformed, "m1"),
    ("header extra key", signed(header(extra=1)), Malformed, "m1"),
    ("header bytes key among str keys", signed({**header(), b"zz": 1}), Malformed, "m1"),
    ("version 2", signed(header(v=2)), Malformed, "m1"),
    ("version as str", signed(header(v="1")), Malformed, "m1"),
    ("version as bool", signed(header(v=True)), Malformed, "m1"),
    ("version as float", signed(header(v=1.0)), Malformed, "m1"),
    ("id too short", signed(header(id=b"\x01" * 15)), Malformed, "m1"),
    ("id as str", signed(header(id="a" * 16)), Malformed, "m1"),
    ("to as int", signed(header(to=1)), Malformed, "m1"),
    ("to as map", signed(header(to={"o1": 1})), Malformed, "m1"),
    ("to as bin", signed(header(to=b"o1")), Malformed, "m1"),
    ("to as empty list", signed(header(to=[])), Malformed, "m1"),
    ("to list over MAX_ADDRESSEES", signed(header(to=[f"a{i}" for i in range(MAX_ADDRESSEES + 1)])),
     Malformed, "m1"),
    ("to list over max_container_len", signed(header(to=[f"a{i}" for i in range(1025)])),
     Malformed, "m1"),
    ("to list with an int entry", signed(header(to=["o1", 7])), Malformed, "m1"),
    ("to list with a bin entry", signed(header(to=["o1", b"m2"])), Malformed, "m1"),
    ("to list with a nested list", signed(header(to=["o1", ["m2"]])), Malformed, "m1"),
    ("to list with nil", signed(header(to=[None])), Malformed, "m1"),
    ("to list with a duplicate", signed(header(to=["o1", "m2", "o1"])), Malformed, "m1"),
    ("type as bin", signed(header(type=b"heartbeat")), Malformed, "m1"),
    ("conv as nil", signed(header(conv=None)), Malformed, "m1"),
    ("epoch negative", signed(header(epoch=-1)), Malformed, "m1"),
    ("epoch as float", signed(header(epoch=1.0)), Malformed, "m1"),
    ("seq as bool", signed(header(seq=True)), Malformed, "m1"),
    ("seq as str", signed(header(seq="1")), Malformed, "m1"),
    ("ts as str", signed(header(ts="now")), Malformed, "m1"),
    ("ts as bool", signed(header(ts=True)), Malformed, "m1"),
    ("ts NaN", signed(header(ts=float("nan"))), Malformed, "m1"),
    ("ts +inf", signed(header(ts=float("inf"))), Malformed, "m1"),
    ("duplicate header key", signed_raw(pack_pairs(list(header().items()) + [("seq", 2)])),
     Malformed, "m1"),
    ("duplicate key in a dict field", signed_raw(with_raw_field(
        "args", pack_pairs([("a", 1), ("a", 2)]), type="plant_command",
        body={"command": "c", "resource": "m1"})), Malformed, "m1"),
    ("NaN in a dict field", signed(header(type="plant_command", body={
        "command": "c", "resource": "m1", "args": {"x": float("nan")}})), Malformed, "m1"),
    ("body as array", signed(header(body=[])), Malformed, "m1"),
    ("unknown type", signed(header(type="gossip")), Malformed, "m1"),
    # body schema
    ("body field missing", signed(header(type="cfp", body=drop(cfp_wire(), "due_at")), "o1"), Malformed, "o1"),
    ("body field wrong type", signed(header(type="cfp", body=cfp_wire(quantity="3")), "o1"), Malformed, "o1"),
    ("body unknown field", signed(header(type="cfp", body=cfp_wire(colour="red")), "o1"), Malformed, "o1"),
    ("body bytes key and unknown str key", signed(header(type="heartbeat", body={
        b"k": 1, "zz": 2})), Malformed, "m1"),
    ("bool where int expected", signed(header(type="cfp", body=cfp_wire(quantity=True)), "o1"), Malformed, "o1"),
    ("bool where float expected", signed(header(type="cfp", body=cfp_wire(due_at=False)), "o1"), Malformed, "o1"),
    ("int where bool expected", signed(header(type="confirm", body={
        "task": "t", "award_epoch": 1, "ok": 1})), Malformed, "m1"),
    ("float where int expected", signed(header(type="accept", body={
        "task": "t", "award_epoch": 1.0, "lease_s": 1.0}), "o1"), Malformed, "o1"),
    ("dict where list expected", signed(header(type="heartbeat", body={"leases": {}})), Malformed, "m1"),
    # access rules
    ("order sending propose", sealed("o1", SAMPLES["propose"][1]), Forbidden, "o1"),
    ("machine sending cfp", sealed("m1", CFP), Forbidden, "m1"),
    ("robot proposing an operation", sealed("r1", SAMPLES["propose"][1]), Forbidden, "r1"),
    ("machine proposing a transport", sealed("m1", Proposal(
        task="t", kind="transport", start_at=1, finish_at=2, hold_until_at=1)), Forbidden, "m1"),
    ("order sending decision", sealed("o1", SAMPLES["decision"][1]), Forbidden, "o1"),
    ("machine sending decision", sealed("m1", SAMPLES["decision"][1]), Forbidden, "m1"),
    ("host sending decision", sealed("h1", SAMPLES["decision"][1]), Forbidden, "h1"),
    ("machine sending plant_event", sealed("m1", SAMPLES["plant_event"][1]), Forbidden, "m1"),
    ("console sending accept", sealed("c1", SAMPLES["accept"][1]), Forbidden, "c1"),
]


@pytest.mark.parametrize("build, error, sender", [r[1:] for r in REJECTIONS],
                         ids=[r[0] for r in REJECTIONS])
def test_rejections_are_typed(cell: Any, build: Build, error: type[Rejected],
                              sender: str | None) -> None:
    frames = build(cell)
    with pytest.raises(Rejected) as info:
        opener(cell, skew_s=30.0).open(frames, NOW)
    exc = info.value
    assert type(exc) is error, f"{type(exc).__name__}: {exc}"
    assert exc.reason == error.reason
    assert exc.sender == sender
    assert exc.detail and isinstance(exc.detail, str)
    ctx = exc.context()
    assert ctx["reason"] == error.reason and ctx["detail"] == exc.detail
    assert ctx.get("sender") == sender
    assert str(exc).startswith(error.reason + ":")


def test_replayed_envelope_is_rejected_on_second_open(cell: Any) -> None:
    frames = cell.sealer("m1").seal("o1", Heartbeat(), NOW)
    op = opener(cell)
    assert op.open(frames, NOW).seq == 1
    with pytest.raises(Replayed) as info:
        op.open(frames, NOW)
    assert info.value.sender == "m1"
    assert info.value.context()["reason"] == "replayed"


def test_forbidden_names_the_type(cell: Any) -> None:
    with pytest.raises(Forbidden) as info:
        opener(cell).open(cell.sealer("m1").seal("o1", CFP, NOW), NOW)
    assert info.value.msg_type == "cfp" and info.value.context()["type"] == "cfp"
    assert "machine" in str(info.value)


def test_nesting_up_to_max_depth_is_accepted(cell: Any) -> None:
    # header map = depth 1, body map = 2, a dict field = 3: six maps fit in max_depth 8
    doc = header(type="escalate", body={**ESCALATE_BODY, "context": nested(6)})
    msg = opener(cell).open(cell.sign("o1", pack(doc)), NOW)
    assert msg.body.context == nested(6)   # type: ignore[attr-defined]


def test_without_a_guard_access_is_still_checked(cell: Any) -> None:
    op = cell.opener(None)
    frames = cell.sealer("m1").seal("o1", Heartbeat(), NOW)
    assert op.open(frames, NOW) == op.open(frames, NOW)   # no replay guard: accepted twice
    with pytest.raises(Forbidden):
        op.open(cell.sealer("m1").seal("o1", CFP, NOW), NOW)


# Rejections raised deep in the decoder get their sender/type attached by the codec
# afterwards; the exception text must name them too (it is what a traceback shows).
LATE_TAGGED = [
    ("body field missing", header(type="cfp", body=drop(cfp_wire(), "due_at")), "o1"),
    ("nesting too deep", header(type="escalate", body={**ESCALATE_BODY, "context": nested(7)}), "o1"),
    ("unknown type", header(type="gossip"), "o1"),
]


@pytest.mark.parametrize("doc, sender", [r[1:] for r in LATE_TAGGED], ids=[r[0] for r in LATE_TAGGED])
def test_error_text_names_sender_and_type(cell: Any, doc: dict[str, Any], sender: str) -> None:
    with pytest.raises(Malformed) as info:
        opener(cell).open(cell.sign(sender, pack(doc)), NOW)
    exc = info.value
    assert exc.sender == sender and exc.msg_type == doc["type"]
    assert repr(sender) in str(exc), str(exc)
    assert doc["type"] in str(exc), str(exc)


# -- a flipped byte anywhere ----------------------------------------------------------------

@pytest.mark.parametrize("flip", [0xFF, 0x01, 0x03])
def test_flipped_byte_in_any_frame_is_rejected(cell: Any, flip: int) -> None:
    body = SAMPLES["propose"][1]
    frames = cell.sealer("m1").seal("o1", body, NOW)
    op = opener(cell)
    checked = 0
    for index, frame in enumerate(frames):
        for pos in range(len(frame)):
            mutated = bytearray(frame)
            mutated[pos] ^= flip
            bad = list(frames)
            bad[index] = bytes(mutated)
            with pytest.raises(Rejected) as info:
                op.open(bad, NOW)
            if index > 0:   # payload or signature changed: the signature can't match
                assert type(info.value) is BadSignature, (index, pos, info.value)
            else:           # another (unknown, non-utf-8 or other agent's) sender id
                assert type(info.value) in (UnknownSender, Malformed, BadSignature), info.value
            checked += 1
    assert checked == sum(len(f) for f in frames) > 150
    assert op.open(frames, NOW).body == body   # the pristine envelope still opens


# -- multicast: one signature, several addressees ------------------------------------------

def test_multicast_round_trip_gives_every_addressee(cell: Any) -> None:
    frames = cell.sealer("o1", epoch=3).seal(["m1", "r1", "m2"], CFP, NOW, conv="k")
    opened = opener(cell).open_envelope(frames, NOW)
    assert isinstance(opened, Opened)
    assert opened.to == ("m1", "r1", "m2")
    assert opened.message.to == "m1" and opened.message.body == CFP
    msgs = opened.for_local({"m2", "m1", "x"})
    assert [m.to for m in msgs] == ["m1", "m2"]           # wire order, only the local ones
    assert {(m.sender, m.conv, m.epoch, m.seq, m.ts, m.id) for m in msgs} == {
        ("o1", "k", 3, 1, NOW, opened.message.id)}
    assert all(m.body is CFP or m.body == CFP for m in msgs)
    assert opened.for_local({"x"}) == []
    # the wire: "to" is a msgpack array of str in the order given
    doc = msgpack.unpackb(frames[1], raw=False)
    assert doc["to"] == ["m1", "r1", "m2"] and doc.keys() == HEADER_KEYS


def test_unicast_still_encodes_to_as_a_string(cell: Any) -> None:
    frames = cell.sealer("o1").seal("m1", CFP, NOW)
    assert msgpack.unpackb(frames[1], raw=False)["to"] == "m1"
    opened = opener(cell).open_envelope(frames, NOW)
    assert opened.to == ("m1",) and opened.for_local({"m1"}) == [opened.message]
    assert opened.for_local({"m2"}) == []


def test_a_list_of_one_is_a_valid_envelope_for_open(cell: Any) -> None:
    msg = opener(cell).open(cell.sealer("o1").seal(["m1"], CFP, NOW), NOW)
    assert msg.to == "m1" and msg.body == CFP


def test_open_is_the_unicast_view_and_calls_a_multicast_misdirected(cell: Any) -> None:
    op = opener(cell)
    frames = cell.sealer("o1").seal(["m1", "m2"], CFP, NOW)
    with pytest.raises(Misdirected) as info:
        op.open(frames, NOW)
    assert info.value.sender == "o1" and info.value.msg_type == "cfp"
    assert "multicast" in str(info.value)
    with pytest.raises(Replayed):                # the sequence number was consumed (§9 step 11)
        op.open_envelope(frames, NOW)


def test_each_host_accepts_a_multicast_once(cell: Any) -> None:
    """The replay guard is per host: host A and host B each accept the same frames once."""
    frames = cell.sealer("o1").seal(["m1", "m2"], CFP, NOW)
    host_a, host_b = opener(cell), opener(cell)
    assert host_a.open_envelope(frames, NOW).for_local({"m1"})[0].to == "m1"
    assert host_b.open_envelope(frames, NOW).for_local({"m2"})[0].to == "m2"
    for host in (host_a, host_b):
        with pytest.raises(Replayed):
            host.open_envelope(frames, NOW)


def test_one_signature_covers_the_whole_list(cell: Any) -> None:
    """Changing the list (dropping, adding or reordering an addressee) breaks the signature."""
    frames = cell.sealer("o1").seal(["m1", "m2"], CFP, NOW)
    doc = msgpack.unpackb(frames[1], raw=False)
    for to in (["m1"], ["m2", "m1"], ["m1", "m2", "r1"], "m1"):
        forged = [frames[0], pack({**doc, "to": to}), frames[2]]
        with pytest.raises(BadSignature):
            opener(cell).open_envelope(forged, NOW)


def test_max_addressees_fit(cell: Any) -> None:
    tos = [f"agent-{i:04d}" for i in range(MAX_ADDRESSEES)]
    opened = opener(cell).open_envelope(cell.sealer("o1").seal(tos, CFP, NOW), NOW)
    assert opened.to == tuple(tos)


@pytest.mark.parametrize("tos, match", [
    ([], "1..256"), ([f"a{i}" for i in range(MAX_ADDRESSEES + 1)], "split"),
    (["m1", "m1"], "duplicate"), (["m1", 3], "agent id"), (["m1", b"m2"], "agent id")])
def test_sealing_a_bad_list_is_a_local_bug(cell: Any, tos: list[Any], match: str) -> None:
    sealer = cell.sealer("o1")
    with pytest.raises(ProtocolBug, match=match):
        sealer.seal(tos, CFP, NOW)
    assert sealer.seq == 0          # nothing was sealed: no sequence number spent


# -- memory: a rejected decode allocates little ---------------------------------------------

LIMIT = Limits().max_body_bytes


def _peak_during(fn: Callable[[], Any]) -> tuple[int, BaseException | None]:
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        try:
            fn()
            err = None
        except BaseException as exc:   # noqa: BLE001 - returned to the test
            err = exc
        return tracemalloc.get_traced_memory()[1], err
    finally:
        tracemalloc.stop()


def _near_limit_strings() -> bytes:
    """~60 KiB of strings in a dict field, then a field nested too deep: rejected."""
    context = {f"k{i}": "s" * 200 for i in range(305)}
    context["deep"] = nested(7)
    payload = pack(header(type="escalate", body={**ESCALATE_BODY, "context": context}))
    assert LIMIT - 4096 < len(payload) <= LIMIT
    return payload


MEMORY_CASES: list[tuple[str, Callable[[], bytes], int]] = [
    ("oversized body", lambda: pack(header(body={"leases": ["x" * 1000] * 200})), 2 << 20),
    ("10_000 levels in a dict field", lambda: with_raw_field("context", nested_bytes(10_000),
                                                            type="escalate", body=ESCALATE_BODY),
     2 << 20),
    ("1_000 levels in a dict field", lambda: with_raw_field("context", nested_bytes(1_000),
                                                           type="escalate", body=ESCALATE_BODY),
     2 << 20),
    ("near-limit body of strings", _near_limit_strings, 2 << 20),
    ("array32 claiming 4G entries", lambda: with_raw_field("leases", b"\xdd\xff\xff\xff\xff"),
     2 << 20),
    ("map32 claiming 4G entries", lambda: with_raw_field("leases", b"\xdf\xff\xff\xff\xff"),
     2 << 20),
    ("str32 claiming 4 GB", lambda: with_raw_field("state", b"\xdb\xff\xff\xff\xff"), 2 << 20),
    ("bin32 claiming 4 GB", lambda: with_raw_field("state", b"\xc6\xff\xff\xff\xff"), 2 << 20),
    # Worst case: ~60 KiB of empty maps, each a Python dict.  The unpacker builds the
    # whole tree before the depth/shape checks run, so this one is bounded only by
    # max_body_bytes x (size of an empty dict); the bound documents that amplification.
    ("near-limit body of empty maps", lambda: with_raw_field(
        "context", b"\xdc\x00\x3c" + (b"\xdc\x03\xe8" + b"\x80" * 1000) * 60,
        type="escalate", body={**ESCALATE_BODY, "extra": 1}), 8 << 20),
]


@pytest.mark.parametrize("make, bound", [c[1:] for c in MEMORY_CASES], ids=[c[0] for c in MEMORY_CASES])
def test_rejected_decode_has_bounded_peak_memory(cell: Any, make: Callable[[], bytes],
                                                 bound: int) -> None:
    frames = cell.sign("o1", make())
    op = opener(cell)
    peak, err = _peak_during(lambda: op.open(frames, NOW))
    assert isinstance(err, Malformed), repr(err)
    assert peak < bound, f"peak {peak:,} bytes during a rejected decode (bound {bound:,})"


# -- the property: Message or Rejected, nothing else -----------------------------------------

KNOWN = ["m1", "m2", "r1", "o1", "c1", "s1", "h1"]
PRIMITIVES = (st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1)
              | st.floats() | st.text(max_size=12) | st.binary(max_size=12))
KEYS = st.text(max_size=6) | st.binary(max_size=4) | st.integers(-3, 3) | st.sampled_from(sorted(HEADER_KEYS))
VALUES = st.recursive(
    PRIMITIVES,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(KEYS, children, max_size=5),
    max_leaves=40)
FIELD_NAMES = sorted({name for cls in REGISTRY.values() for name, _, _ in cls._spec})


@st.composite
def deep_values(draw: st.DrawFn) -> Any:
    value = draw(PRIMITIVES)
    for _ in range(draw(st.integers(1, 40))):
        value = {"a": value} if draw(st.booleans()) else [value]
    return value


ANY_VALUE = VALUES | deep_values()


@st.composite
def header_like(draw: st.DrawFn) -> Any:
    """A header close to valid: sample body, then fields dropped, replaced and added."""
    type_name = draw(st.sampled_from(sorted(SAMPLES)))
    doc: dict[Any, Any] = header(type=type_name, body=SAMPLES[type_name][1].to_wire(),
                                 seq=draw(st.integers(0, 2**64 - 1)),
                                 ts=draw(st.floats() | st.just(NOW)))
    if draw(st.booleans()):      # multicast: a list of addressees, sometimes a bad one
        doc["to"] = draw(st.lists(st.sampled_from(KNOWN) | st.text(max_size=4) | PRIMITIVES,
                                  max_size=6))
    for key in draw(st.lists(st.sampled_from(sorted(HEADER_KEYS)), max_size=3)):
        if draw(st.booleans()):
            doc.pop(key, None)
        else:
            doc[key] = draw(ANY_VALUE)
    doc.update(draw(st.dictionaries(KEYS, ANY_VALUE, max_size=2)))
    if isinstance(doc.get("body"), dict) and draw(st.booleans()):
        body = dict(doc["body"])
        body.update(draw(st.dictionaries(st.sampled_from(FIELD_NAMES) | KEYS, ANY_VALUE, max_size=4)))
        doc["body"] = body
    return doc


def _packable(value: Any) -> bytes | None:
    try:
        return msgpack.packb(value, use_bin_type=True)
    except (TypeError, ValueError, OverflowError):
        return None


@pytest.fixture(scope="module")
def prop_cell(module_cell: Any) -> Any:
    return module_cell


def _holds(op: Opener, frames: list[bytes]) -> None:
    """``open_envelope`` gives an :class:`Opened` or a typed error; ``open`` (on a fresh
    guard: a second open would be a replay) agrees and gives a :class:`Message`."""
    try:
        opened = op.open_envelope(frames, NOW)
    except Rejected as exc:
        assert exc.reason and isinstance(exc.context(), dict)
        opened = None
    if opened is not None:
        assert isinstance(opened, Opened) and isinstance(opened.message, Message)
        assert 1 <= len(opened.to) <= MAX_ADDRESSEES and len(set(opened.to)) == len(opened.to)
        assert all(type(a) is str for a in opened.to) and opened.message.to == opened.to[0]
        assert isinstance(opened.message.ts, float)
        assert [m.to for m in opened.for_local(set(opened.to))] == list(opened.to)
    fresh = Opener(op.trust, ReplayGuard(skew_s=op.guard.skew_s) if op.guard else None,
                   limits=op.limits)
    try:
        result = fresh.open(frames, NOW)
    except Rejected as exc:
        assert exc.reason and isinstance(exc.context(), dict)
        assert opened is None or (type(exc) is Misdirected and len(opened.to) > 1)
        return
    assert opened is not None and len(opened.to) == 1
    assert isinstance(result, Message) and result == opened.message


@st.composite
def mutated_frame1(draw: st.DrawFn, frames: list[bytes]) -> list[bytes]:
    payload = bytearray(frames[1])
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        pos = draw(st.integers(0, max(0, len(payload) - 1)))
        if action == "flip" and payload:
            payload[pos] ^= draw(st.integers(1, 255))
        elif action == "insert":
            payload[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif action == "delete" and payload:
            del payload[pos:pos + draw(st.integers(1, 8))]
        else:
            del payload[pos:]
    return [frames[0], bytes(payload), frames[2]]


PROPERTY = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@PROPERTY
@given(frames=st.lists(st.binary(max_size=80), max_size=5))
def test_property_arbitrary_frames(prop_cell: Any, frames: list[bytes]) -> None:
    _holds(prop_cell.opener(ReplayGuard()), frames)


@PROPERTY
@given(sender=st.sampled_from(KNOWN).map(str.encode), payload=st.binary(max_size=200),
       signature=st.binary(min_size=0, max_size=70))
def test_property_known_sender_random_payload(prop_cell: Any, sender: bytes, payload: bytes,
                                              signature: bytes) -> None:
    _holds(prop_cell.opener(ReplayGuard()), [sender, payload, signature])


@PROPERTY
@given(data=st.data(), type_name=st.sampled_from(sorted(SAMPLES)))
def test_property_mutated_valid_envelope(prop_cell: Any, data: st.DataObject, type_name: str) -> None:
    sender, body = SAMPLES[type_name]
    to = data.draw(st.sampled_from(["o1", ["o1", "m1", "m2"]]))
    frames = prop_cell.sealer(sender).seal(to, body, NOW)
    bad = data.draw(mutated_frame1(frames))
    _holds(prop_cell.opener(ReplayGuard()), bad)


@PROPERTY
@given(doc=header_like(), sender=st.sampled_from(KNOWN))
def test_property_resigned_header_like(prop_cell: Any, doc: Any, sender: str) -> None:
    payload = _packable(doc)
    if payload is not None:
        _holds(prop_cell.opener(ReplayGuard(skew_s=1e12)), prop_cell.sign(sender, payload))


@PROPERTY
@given(value=ANY_VALUE)
def test_property_resigned_any_value(prop_cell: Any, value: Any) -> None:
    payload = _packable(value)
    if payload is not None:
        _holds(prop_cell.opener(ReplayGuard()), prop_cell.sign("m1", payload))


@PROPERTY
@given(payload=st.binary(max_size=300))
def test_property_resigned_arbitrary_bytes(prop_cell: Any, payload: bytes) -> None:
    _holds(prop_cell.opener(ReplayGuard()), prop_cell.sign("m1", payload))
