"""The envelope codec: seal (encode + sign) and open (verify + decode), sans I/O.

Wire format v1 (docs/PROTOCOL.md has the normative text)::

    frame 0  sender id, utf-8, 1..64 bytes
    frame 1  msgpack map {v, id, to, type, conv, epoch, seq, ts, body}
    frame 2  Ed25519 signature (64 bytes) over b"autocell/1" + frame0 + frame1

``to`` is one agent id (a str: unicast) or an array of 1..``MAX_ADDRESSEES``
distinct agent ids (multicast: one signature for a call for proposals sent
to many).  The same three frames go once to each host running an addressee;
each host hands one :class:`Message` per local addressee to its agents
(:meth:`Opened.for_local`), so agent code only ever sees a single ``to``.

:meth:`Opener.open` works cheapest-first and never unpacks a byte an
unverified sender wrote.  Stage 1, :meth:`Opener.authenticate`: frame
count and sizes → certificate lookup (unknown, revoked, expired) →
signature.  Stage 2, :meth:`Opener.decode`: bounded msgpack unpack (size,
depth, container lengths, no ext types, string keys) → header schema →
typed body → role permissions → replay window and clock skew.

Stage 2 decodes in one of two ways that accept exactly the same envelopes
and build equal messages.  The fast path (:meth:`Opener._decode_fast`)
lets msgspec decode the header and body straight into typed objects, and
takes the result only when it can prove the reference path would have
built the same one: the payload is small enough that no string or
container can break a limit, the header is a 9-entry map of its 9 required
keys (so none is repeated), and the body is the canonical encoding of the
decoded body (see :func:`agents.protocol.messages._compile_wire_decoder`).
Everything else — every rejection included — goes through the reference
path (:meth:`Opener._decode_reference`: msgpack with hard limits and the
generated ``from_wire`` validators), which alone names the reasons.
:meth:`Opener.open_envelope` returns every addressee (:class:`Opened`);
:meth:`Opener.open` is the unicast view, for receivers that take no
multicast (the virtual-time driver never sends any).  Every
failure is one of the typed :class:`~security.errors.Rejected` errors; any
other exception escaping ``open`` is a bug (a Hypothesis test holds us to it).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, NamedTuple

import msgpack
import msgspec

from agents.protocol.messages import WIRE_DECODERS, Body, Message, body_from_wire
from security.access import check_access
from security.certs import TrustStore
from security.crypto import SigningKey
from security.errors import BadSignature, Malformed, Misdirected, ProtocolBug, Rejected
from security.replay import ReplayGuard

SIGNING_TAG = b"autocell/1"
VERSION = 1
HEADER_KEYS = frozenset({"v", "id", "to", "type", "conv", "epoch", "seq", "ts", "body"})
MSG_ID_BYTES = 16
MAX_ADDRESSEES = 256
"""Most agent ids one envelope's ``to`` may name; a sender with more seals several."""
_SCALARS = frozenset({str, int, float, bool, bytes, type(None)})
_FIXMAP_9 = 0x89   # the first byte of a 9-entry map in its shortest encoding
_FINITE = msgspec.Meta(ge=-sys.float_info.max, le=sys.float_info.max)   # NaN fails both
_NON_NEGATIVE = msgspec.Meta(ge=0)


class _Header(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """The header checks of :meth:`Opener._header_reference`, for msgspec to run in C.

    ``ts`` may arrive as an int; msgspec makes it the float the reference path
    makes of it.  ``body`` stays bytes until ``type`` names its decoder.
    """

    v: Literal[1]                   # VERSION; an int, so True and 1.0 fail
    id: Annotated[bytes, msgspec.Meta(min_length=MSG_ID_BYTES, max_length=MSG_ID_BYTES)]
    to: str | list[str]
    type: str
    conv: str
    epoch: Annotated[int, _NON_NEGATIVE]
    seq: Annotated[int, _NON_NEGATIVE]
    ts: Annotated[float, _FINITE]
    body: msgspec.Raw


def _no_ext(code: int, data: memoryview) -> Any:
    raise ValueError("ext types are not allowed")   # the reference path names the reason


_decode_header = msgspec.msgpack.Decoder(_Header, ext_hook=_no_ext).decode
_tuple_new = tuple.__new__   # a NamedTuple without its Python-level __new__


@dataclass(frozen=True, slots=True)
class Limits:
    """Hard bounds on what a peer can make us unpack."""

    max_body_bytes: int = 64 * 1024
    max_depth: int = 8              # the header map is depth 1, ``body`` depth 2
    max_container_len: int = 1024   # entries in any one map or array
    max_str_bytes: int = 16 * 1024


def _reject_ext(code: int, data: bytes) -> Any:
    raise Malformed(f"msgpack ext type {code} is not allowed")


def _unique_pairs(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    """Build a map, refusing duplicate keys: two verifiers must never read one
    signed byte string as two different messages (first-wins vs last-wins)."""
    d = dict(pairs)
    if len(d) != len(pairs):
        raise Malformed("duplicate key in a msgpack map")
    return d


def check_tree(value: Any, limits: Limits, depth: int) -> None:
    """Walk a container iteratively: depth, string keys, msgpack primitives only.

    Bodies are checked field by field, so only ``map``/``array`` fields get here
    (at depth 3: header map 1, body map 2).  Exact classes, not ``isinstance``:
    the unpacker makes nothing else, and this runs for every generic field of
    every message (a proposal's ``cost``).
    """
    stack = [(value, depth)]
    while stack:
        node, d = stack.pop()
        if d > limits.max_depth:
            raise Malformed(f"nesting deeper than {limits.max_depth}")
        if node.__class__ is dict:
            for k in node:
                if k.__class__ is not str:
                    raise Malformed(f"map key {k!r} is not a string")
            values = node.values()
        else:
            values = node
        for v in values:
            c = v.__class__
            if c is float:
                if not math.isfinite(v):
                    raise Malformed("non-finite float")
            elif c is dict or c is list:
                stack.append((v, d + 1))
            elif c not in _SCALARS:
                raise Malformed(f"unsupported value type {c.__name__}")


class Authenticated(NamedTuple):
    """An envelope whose signature checked out but whose body is still bytes."""

    sender: str
    role: str
    payload: bytes


class Opened(NamedTuple):
    """A verified envelope and all its addressees (one for unicast), in wire order.

    ``message.to`` is the first addressee; :meth:`for_local` gives one
    :class:`Message` per addressee a host runs.
    """

    message: Message
    to: tuple[str, ...]

    def for_local(self, local: Container[str]) -> list[Message]:
        """One message per addressee in ``local``, each with ``to`` = that agent."""
        msg = self.message
        if len(self.to) == 1:
            return [msg] if msg.to in local else []
        return [msg if a == msg.to else Message(msg.sender, a, msg.conv, msg.id, msg.epoch,
                                                 msg.seq, msg.ts, msg.body)
                for a in self.to if a in local]


def check_addressees(to: Sequence[str]) -> list[str]:
    """The ``to`` array of a multicast envelope, or :class:`ProtocolBug` (a local bug)."""
    tos = list(to)
    if not 0 < len(tos) <= MAX_ADDRESSEES:
        raise ProtocolBug(f"a multicast envelope names 1..{MAX_ADDRESSEES} addressees, "
                          f"not {len(tos)}; split the list")
    if any(type(a) is not str for a in tos):
        raise ProtocolBug("every addressee must be an agent id (str)")
    if len(set(tos)) != len(tos):
        raise ProtocolBug("duplicate addressee in a multicast envelope")
    return tos


class Sealer:
    """Stamps, encodes and signs outgoing bodies for one local agent identity."""

    def __init__(self, agent: str, key: SigningKey, *, epoch: int,
                 random_bytes: Callable[[int], bytes]) -> None:
        self.agent = agent
        self._agent_b = agent.encode()
        if not 0 < len(self._agent_b) <= 64:
            raise ValueError("agent id must be 1..64 utf-8 bytes")
        self._key = key
        self._prefix = SIGNING_TAG + self._agent_b
        self.epoch = epoch
        self.seq = 0
        self._random_bytes = random_bytes

    def seal(self, to: str | Sequence[str], body: Body, now: float,
             conv: str = "") -> list[bytes]:
        """The three frames of one envelope carrying ``body``.

        ``to`` is an agent id (unicast), or a sequence of 1..``MAX_ADDRESSEES``
        distinct ids (multicast: one signature, the same frames to every
        addressee's host).
        """
        addressees: str | list[str] = to if type(to) is str else check_addressees(to)
        self.seq += 1
        payload = msgpack.packb({
            "v": VERSION, "id": self._random_bytes(MSG_ID_BYTES), "to": addressees,
            "type": body.TYPE,
            "conv": conv, "epoch": self.epoch, "seq": self.seq, "ts": float(now),
            "body": body.to_wire()}, use_bin_type=True)
        return [self._agent_b, payload, self._key.sign(self._prefix + payload)]


class Opener:
    """Verifies and decodes inbound envelopes against a trust store."""

    def __init__(self, trust: TrustStore, guard: ReplayGuard | None, *,
                 limits: Limits = Limits()) -> None:
        self.trust = trust
        self.guard = guard
        self.limits = limits

    @property
    def limits(self) -> Limits:
        return self._limits

    @limits.setter
    def limits(self, limits: Limits) -> None:
        self._limits = limits
        # No string, bin or container over its limit fits in fewer bytes than this.
        self._fast_max_bytes = min(limits.max_container_len, limits.max_str_bytes)

    def open(self, frames: list[bytes], now: float) -> Message:
        """A verified unicast :class:`Message`, or a :class:`Rejected` subclass saying why not.

        A multicast envelope naming more than one agent is :class:`Misdirected`
        here; receivers that take multicast use :meth:`open_envelope`.
        """
        return self.decode(self.authenticate(frames, now), now)

    def open_envelope(self, frames: list[bytes], now: float) -> Opened:
        """A verified envelope with all its addressees, or a :class:`Rejected` subclass."""
        return self.decode_envelope(self.authenticate(frames, now), now)

    def authenticate(self, frames: list[bytes], now: float) -> Authenticated:
        """Stage 1: framing, certificate and signature — touches no mutable state.

        Kept separate (and thread-safe) so a transport may run it off the event
        loop; the ZeroMQ transport currently runs both stages on the loop
        (see docs/decisions.md).
        """
        if len(frames) != 3:
            raise Malformed(f"expected 3 frames, got {len(frames)}")
        sender_b, payload, signature = frames
        if not 0 < len(sender_b) <= 64:
            raise Malformed(f"sender frame must be 1..64 bytes, got {len(sender_b)}")
        try:
            sender = bytes(sender_b).decode("utf-8")
        except UnicodeDecodeError:
            raise Malformed("sender id is not utf-8") from None
        if len(payload) > self._limits.max_body_bytes:
            raise Malformed(f"body of {len(payload)} bytes exceeds {self._limits.max_body_bytes}",
                            sender=sender)
        peer = self.trust.peer(sender, now)
        if not peer.verifier.verify(SIGNING_TAG + sender_b + payload, signature):
            raise BadSignature("signature does not verify with the sender's certificate key",
                               sender=sender)
        return _tuple_new(Authenticated, (sender, peer.cert.role, bytes(payload)))

    def decode(self, auth: Authenticated, now: float) -> Message:
        """Stage 2 for a unicast receiver (see :meth:`open`)."""
        msg, to = self._stage2(auth, now)
        if len(to) != 1:
            raise Misdirected(f"a multicast envelope to {len(to)} agents reached a "
                              "receiver that takes unicast only", sender=auth.sender,
                              msg_type=msg.type)
        return msg

    def decode_envelope(self, auth: Authenticated, now: float) -> Opened:
        """Stage 2: bounded unpack, schema, access rules, replay window (event loop only)."""
        return _tuple_new(Opened, self._stage2(auth, now))

    def _stage2(self, auth: Authenticated, now: float) -> tuple[Message, tuple[str, ...]]:
        """Decode (fast path, else reference path), then access rules and replay window."""
        sender = auth.sender
        opened = self._decode_fast(sender, auth.payload)
        if opened is None:
            opened = self._decode_reference(sender, auth.payload)
        msg = opened[0]
        body = msg.body
        check_access(auth.role, body.TYPE, body, sender)
        if self.guard is not None:
            self.guard.check(sender, msg.epoch, msg.seq, msg.ts, now)
        return opened

    def _decode_fast(self, sender: str,
                     payload: bytes) -> tuple[Message, tuple[str, ...]] | None:
        """The envelope if msgspec can decode it and it is one the reference path accepts
        unchanged; ``None`` otherwise (the reference path then decides).

        Each test stands for one check of the reference path: a payload no longer
        than the smallest length limit cannot hold a string or container over its
        limit; a 9-entry map holding 9 distinct required keys repeats none; the
        header checks of :meth:`_header_reference` are ``_Header``'s types; then
        the body's canonical encoding (``WIRE_DECODERS``), the same addressee
        rules and the same :func:`check_tree`.
        """
        if not 0 < len(payload) <= self._fast_max_bytes or payload[0] != _FIXMAP_9:
            return None
        try:
            h = _decode_header(payload)
        except Exception:   # noqa: BLE001 - any doubt goes to the reference path
            return None
        decoder = WIRE_DECODERS.get(h.type)
        if decoder is None:
            return None
        body = decoder(bytes(h.body))   # bytes compare faster than a memoryview
        if body is None:
            return None
        try:
            to = h.to
            tos = (to,) if to.__class__ is str else _addressees(to, sender)
            for name in body._generic:
                check_tree(getattr(body, name), self._limits, depth=3)
        except Rejected:
            return None
        return Message(sender, tos[0], h.conv, h.id, h.epoch, h.seq, h.ts, body), tos

    def _decode_reference(self, sender: str, payload: bytes) -> tuple[Message, tuple[str, ...]]:
        """Bounded msgpack unpack, then the header and ``from_wire`` checks; names every reason."""
        lim = self._limits
        try:
            doc = msgpack.unpackb(
                payload, raw=False, strict_map_key=True, use_list=True,
                ext_hook=_reject_ext, object_pairs_hook=_unique_pairs, max_str_len=lim.max_str_bytes, max_bin_len=lim.max_str_bytes,
                max_array_len=lim.max_container_len, max_map_len=lim.max_container_len,
                max_ext_len=0)
        except Rejected as exc:
            exc.sender = sender
            raise
        except Exception as exc:   # msgpack raises many types for bad input
            raise Malformed(f"body is not valid bounded msgpack: {type(exc).__name__}: {exc}",
                            sender=sender) from None
        return self._header_reference(sender, doc)

    def _header_reference(self, sender: str, doc: Any) -> Opened:
        if type(doc) is not dict or doc.keys() != HEADER_KEYS:
            got = sorted(map(repr, doc)) if isinstance(doc, dict) else type(doc).__name__
            raise Malformed(f"header must have exactly the keys {sorted(HEADER_KEYS)}, got {got}",
                            sender=sender)
        v, mid, to, typ, conv = doc["v"], doc["id"], doc["to"], doc["type"], doc["conv"]
        epoch, seq, ts, body = doc["epoch"], doc["seq"], doc["ts"], doc["body"]
        if v != VERSION or type(v) is not int:
            raise Malformed(f"unsupported version {v!r}", sender=sender)
        if type(mid) is not bytes or len(mid) != MSG_ID_BYTES:
            raise Malformed("id must be 16 bytes of bin", sender=sender)
        if type(typ) is not str or type(conv) is not str:
            raise Malformed("type and conv must be strings", sender=sender)
        tos = (to,) if type(to) is str else _addressees(to, sender)
        if type(epoch) is not int or type(seq) is not int or epoch < 0 or seq < 0:
            raise Malformed("epoch and seq must be non-negative integers", sender=sender)
        if (type(ts) is not float and type(ts) is not int) or not math.isfinite(ts):
            raise Malformed("ts must be a finite number", sender=sender)
        if type(body) is not dict:
            raise Malformed("body must be a map", sender=sender, msg_type=typ)
        try:
            for key in body:
                if key.__class__ is not str:
                    raise Malformed(f"body map key {key!r} is not a string")
            typed = body_from_wire(typ, body)
            for value in body.values():
                if value.__class__ is dict or value.__class__ is list:
                    check_tree(value, self._limits, depth=3)
        except Rejected as exc:
            exc.sender, exc.msg_type = sender, typ
            raise
        return Opened(Message(sender, tos[0], conv, mid, epoch, seq, float(ts), typed), tos)


def _addressees(to: Any, sender: str) -> tuple[str, ...]:
    """The ``to`` array of a multicast envelope: 1..MAX_ADDRESSEES distinct strings."""
    if type(to) is not list:
        raise Malformed("to must be a string or an array of strings", sender=sender)
    if not 0 < len(to) <= MAX_ADDRESSEES:
        raise Malformed(f"to must name 1..{MAX_ADDRESSEES} agents, got {len(to)}", sender=sender)
    for a in to:
        if type(a) is not str:
            raise Malformed(f"to holds a {type(a).__name__}, not an agent id (str)",
                            sender=sender)
    tos = tuple(to)
    if len(set(tos)) != len(tos):
        raise Malformed("duplicate agent id in to", sender=sender)
    return tos
