"""Decision log format ``autocell-decision-log/4``: binary segments, indexed, hashed by index.

Theory of operation
-------------------
Formats /1 and /2 (agents/runtime/recorder.py) encode every input as a JSON
line and hash it into a chain at once: one encoding and one SHA-256 per
input, on the message path.  ADR 58 measured that at 2.5–3 % of a caller's
round in a loop and two to three times that in the process (the bus's work
in between evicts the encoder and the hash from the cache), and concluded
that less work per input needs another format.  This is it:

* an input the agent answered with no action, whose envelope the bus handed
  over (``Bus.wire``, the log's tap), is held as a tuple of what is already there — the
  agent, the times, the envelope's name (sender, epoch, seq) and its payload
  and signature frames as they came in — and appended to the open segment's
  buffer as one msgpack array with the next entry or seal, in one loop: no
  encoding of the message, no hash on the message path; one answered only by
  timers and sends is held too, with its actions (or, when a body has a dict or a
  list, its ``out`` encoded then), and becomes the map below when appended (ADR 95,
  ADR 100);
* every other entry is the /2 entry (without ``n`` and ``prev``) as a
  msgpack map, appended the same way;
* an entry that does not encode (an agent put an object that is not data in a
  body or a log) is a ``lost`` entry under its number, saying why, and
  counted (``unencodable``): the log stays whole, ``replay --check`` stops
  there;
* a host seals a full segment when its transport has drained
  (``Transport.on_idle``), not on the input that filled it (ADR 95);
* the hashing happens off the message path, in tight loops: each entry's
  SHA-256 for the index (so a bad entry is still *named*, not only its
  segment) — at the seal, or, in a host, a quarter of a segment at a time
  when its transport idles (the held entries encoded, the new ones digested;
  ADR 96) — and at the seal the segment's SHA-256 over the previous segment's
  hash and its index, signed with Ed25519.  The index holds whole digests, so
  the segment's hash binds every entry's bytes through them and need not hash
  the bytes a second time (ADR 102); format ``/3``, which hashed them again
  beside 16-byte digests, is still read and verified.

The file is a JSON header line (as /2's, so ``is_decision_log`` and a human
still recognise it) and then one record per segment: ``u32 len(E) | E |
u32 len(S) | S``, E the entries back to back, S the seal (a msgpack map
holding the index).  docs/PROTOCOL.md §16 is the format, precisely enough to
verify a log without this code.  A process killed mid-segment loses that
segment, as it lost its unsealed lines before: an unsealed entry could not
have been verified either.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
import sys
from array import array
from dataclasses import replace
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import msgpack
import msgspec

from agents.base import Agent
from agents.protocol.actions import Action, CancelTimer, Send, SetTimer
from agents.protocol.messages import Award
from agents.runtime.journal import Inbound, Input, Timer
from agents.runtime.recorder import (
    FORMAT3,
    FORMAT4,
    GENESIS,
    SEGMENTED,
    DecisionLog,
    LogReport,
    _EnvelopeIn,
    actions_json,
    canonical,
    envelope_message,
    input_json,
)
from security.crypto import Verifier, fingerprint

log = logging.getLogger(__name__)

DIGEST_BYTES = 32
"""An index digest: the entry's SHA-256.  It locates a bad entry, and the segment's hash,
signed, is taken over the digests, so through them it proves the entries (ADR 102)."""

DIGEST_BYTES_3 = 16
"""Format /3's index digest: the first 16 bytes of the entry's SHA-256 (its segment hash
covers the entries' bytes themselves)."""

IDLE_SEAL_SLACK = 4
"""A segment sealed at idle moments (:attr:`SegmentLog.idle_seals`) is sealed on the input
that makes it this many times ``segment_entries`` long, idle or not."""

IDLE_WORK_PARTS = 4
"""At idle moments a host's log encodes, indexes and hashes its new entries once a
segment's ``1/IDLE_WORK_PARTS`` of them have come (:meth:`SegmentLog.idle`, ADR 96): the
seal's work in four parts, none on the message path."""

_SCALARS = (str, int, float, bool, bytes)
_NEVER, _SNAPSHOT, _BY_REFERENCE = 0, 1, 2
_HOLD: dict[type, int] = {Award: _NEVER}
"""How a held entry keeps a sent body until it is encoded (ADR 95), per body type: by
reference when its fields are all scalars, which nobody can change once the body is built
(a frozen Struct); encoded at once (a snapshot) when it has a dict or a list
(``Proposal.cost``, ``Heartbeat.leases``), which its agent could still change; an award is
never held (its *why* reads the order as it awards)."""

_RAW = msgspec.Raw

_yield_cpu = getattr(os, "sched_yield", lambda: None)
"""Offered before the idle work (:meth:`SegmentLog.idle`, ADR 101): a process of the cell
that is ready to run on this core — a bidder with its bids still to send, the caller with
its proposals to read — runs first, and the log's work fills the time after it."""


def _hold_kind(cls: type) -> int:
    kind = _HOLD.get(cls)
    if kind is None:
        kind = _HOLD[cls] = (_BY_REFERENCE if all(f.type in _SCALARS
                                                  for f in msgspec.structs.fields(cls))
                             else _SNAPSHOT)
    return kind


def _holdable(actions: Sequence[Action]) -> Sequence[Action] | msgspec.Raw | None:
    """What a held entry keeps of ``actions`` (ADR 95): the actions themselves when they are
    timers and sends of all-scalar bodies; when a sent body has a dict or a list, the
    entry's whole ``out`` encoded now (a snapshot, ``msgspec.Raw``: the same bytes later,
    and one object the collector need not follow, ADR 100); None when the entry must be
    encoded at once (an award, a command, a log, a body that does not encode).  One send
    (a bid) takes a short path to the same result (ADR 99): it is on the message path,
    before the bid goes out.  So does a call, one body sent to several (ADR 101): its
    ``out``, one ``send`` to all of them as :func:`actions_json` merges it, is encoded now,
    whatever the body (but an award's, never held) — one pass over the actions, and nothing
    left for the idle work but to copy its bytes."""
    hold = _HOLD
    one = actions[0]
    if type(one) is Send:
        body = one.body
        conv = one.conv
        if len(actions) == 1:
            to = [one.to]
        else:
            to = [a.to for a in actions
                  if type(a) is Send and a.body is body and a.conv == conv]
            if len(to) != len(actions):
                to = []         # not one body to all: the general path below
        if to:
            how = hold.get(type(body))
            if how is None:
                how = _hold_kind(type(body))
            if how == _BY_REFERENCE and len(to) == 1:
                return actions
            if how == _NEVER:
                return None
            try:
                return _RAW(_ENCODER.encode([["send", to, body.TYPE, conv, body]]))
            except (TypeError, ValueError, OverflowError):
                return None
    snapshot = False
    for a in actions:
        kind = type(a)
        if kind is Send:
            bt = type(a.body)                   # type: ignore[union-attr]
            how = hold.get(bt)
            if how is None:
                how = _hold_kind(bt)
            if how == _SNAPSHOT:
                snapshot = True
            elif how == _NEVER:
                return None
        elif kind is not SetTimer and kind is not CancelTimer:
            return None
    if not snapshot:
        return actions
    try:
        return _RAW(_ENCODER.encode(actions_json(actions)))
    except (TypeError, ValueError, OverflowError):
        return None


_LEN = struct.Struct(">I")
_ENCODER = msgspec.msgpack.Encoder()
_encode_into = _ENCODER.encode_into
_sha256 = hashlib.sha256
_BIG_ENDIAN = sys.byteorder == "big"
assert array("I").itemsize == 4


def seal_text(segment: int, first: int, last: int, final: bool, hash_hex: str,
              fmt: str = FORMAT4) -> bytes:
    """What a seal's signature covers: plain text (docs/PROTOCOL.md §16)."""
    return f"{fmt} seal {segment} {first} {last} {int(final)} {hash_hex}".encode()


def segment_hash(prev_hex: str, entries: bytes | bytearray, offsets: bytes,
                 digests: bytes, fmt: str = FORMAT4) -> str:
    """SHA-256 over the previous segment's hash (32 bytes) and the index (offsets, then
    digests); in format /3, over the entries' bytes too, between the two."""
    h = _sha256(bytes.fromhex(prev_hex))
    if fmt == FORMAT3:
        h.update(entries)
    h.update(offsets)
    h.update(digests)
    return h.hexdigest()


def index_digests(entries: bytes | bytearray, bounds: Sequence[int],
                  size: int = DIGEST_BYTES) -> bytes:
    """The index digests of the entries between consecutive ``bounds``: each one's SHA-256,
    or its first ``size`` bytes (format /3's 16)."""
    mv = memoryview(entries)
    try:
        if size == DIGEST_BYTES:    # the writer's idle work: no slice of each digest
            return b"".join([_sha256(mv[a:b]).digest() for a, b in zip(bounds, bounds[1:])])
        return b"".join([_sha256(mv[a:b]).digest()[:size]
                         for a, b in zip(bounds, bounds[1:])])
    finally:
        mv.release()


def _offsets_bytes(offsets: array[int]) -> bytes:
    if _BIG_ENDIAN:
        return offsets.tobytes()
    out = array("I", offsets)
    out.byteswap()
    return out.tobytes()


class _InEntry(msgspec.Struct, gc=False, omit_defaults=True, rename={"in_": "in"}):
    """A message input's entry with actions: the fields in the order of the /2 dict
    (agents/runtime/recorder.py ``on_decision``), which this format keeps (msgpack maps are
    written in insertion order), ``wall_at`` and ``why`` left out when absent as the dict
    leaves them out — so the same bytes, without building the dict (ADR 74)."""

    k: str
    t: float
    agent: str
    out: Any
    in_: Any
    env: tuple[str, int, int]
    wall_at: float | None = None
    why: Any = None


def _offsets_of(raw: bytes) -> list[int]:
    out = array("I", raw)
    if not _BIG_ENDIAN:
        out.byteswap()
    return out.tolist()


class SegmentLog(DecisionLog):
    """A :class:`DecisionLog` written as format /4 (module docstring): the same entries,
    the same hooks and the same *why*; binary records buffered per segment."""

    hold_bids = True
    """Hold a message on the wire answered only by timers and sends of all-scalar bodies
    until the next entry encoded at once or the seal, as one answered by nothing (ADR 95):
    the answer no longer waits for its encoding; the seal pays it, in one loop."""

    idle_seals = False
    """Seal a full segment at the next idle moment of the process's transport (``idle``,
    which a host hands its transport as ``on_idle``) rather than on the input that filled
    it, up to :data:`IDLE_SEAL_SLACK` times its size (ADR 95): a seal of 1000 entries
    costs 1–3 ms, which a bidder's proposals no longer wait for.  Idle moments also do
    the seal's encoding and hashing a quarter of a segment at a time
    (:data:`IDLE_WORK_PARTS`, ADR 96), so that no 1–3 ms burst lands in one round."""

    # the open segment (_open_segment)
    _seg: bytearray
    _offsets: array[int]
    _digests: bytearray
    _indexed_n: int

    @property
    def format(self) -> str:
        return FORMAT4

    def _segment_full(self) -> None:
        if self.idle_seals and self.n - self._segment_first < \
                IDLE_SEAL_SLACK * self.segment_entries:
            self._seal_due = True           # sealed by idle(), or when it grows too long
            return
        self.seal()

    def idle(self) -> None:
        """The process has nothing to do (its transport drained): encode what is held, index
        and hash what is new (:meth:`_index`), and seal a full segment — the seal's work
        done a little at a time, off the message path (ADR 96), after offering the core to
        any other process ready to run on it (``sched_yield``, ADR 101)."""
        if self._seal_due:
            _yield_cpu()
            self.seal()
        elif self.n - self._indexed_n >= max(1, self.segment_entries // IDLE_WORK_PARTS):
            _yield_cpu()
            if self._held:
                self._append_held()
            self._index()

    def _index(self) -> None:
        """Digest the entries appended since the last call for the index: the same digests
        as one pass over the whole segment at its seal, computed while the entries are
        new."""
        seg = self._seg
        bounds = self._offsets[len(self._digests) // DIGEST_BYTES:].tolist()
        bounds.append(len(seg))
        self._digests += index_digests(seg, bounds)
        self._indexed_n = self.n

    def _begin(self, header: dict[str, Any]) -> None:
        line = canonical(header)
        self.sink.write(line + b"\n")
        self.sink.flush()       # a process killed before its first seal leaves its header
        self._prev = _sha256(line).hexdigest()  # segment 1 chains to the header
        self.n = 1
        self._open_segment()
        # envelope entries numbered but not yet appended, in order (see on_decision)
        self._held: list[tuple[Any, ...]] = []
        self._seal_due = False
        self.unencodable = 0                # entries recorded as ``lost`` (see _append)

    def _open_segment(self) -> None:
        """An empty segment after ``_prev``: its buffer and its index."""
        self._seg = bytearray()
        self._offsets = array("I")
        self._digests = bytearray()     # the index digests of the entries indexed so far
        self._indexed_n = self.n        # the first entry not yet digested

    def _write(self, obj: dict[str, Any]) -> None:
        if self._held:
            self._append_held()
        self._append(obj, obj.get("agent"), obj.get("t"))
        self.n += 1

    def _append(self, entry: Any, agent_id: Any, t: Any) -> None:
        """Encode one entry at the end of the open segment.  One that does not encode (an
        agent put something in a body or a log that is not data) becomes a ``lost`` entry
        under its number, saying why, and is counted (``unencodable``): the log stays whole
        and verifiable, and the process records on (ADR 95)."""
        seg = self._seg
        at = len(seg)
        self._offsets.append(at)
        try:
            _encode_into(entry, seg, -1)
        except (TypeError, ValueError, OverflowError) as exc:
            del seg[at:]
            self.unencodable += 1
            log.error("a decision log entry does not encode; recorded as lost",
                      extra={"ctx": {"agent": agent_id, "t": t, "error": str(exc)}})
            _encode_into({"k": "lost", "t": t if isinstance(t, (int, float)) else None,
                          "agent": str(agent_id), "error": f"does not encode: {exc}"},
                         seg, -1)

    def _append_held(self) -> None:
        """Append the envelope entries held back, in order, in one tight loop (the encoder
        stays hot in the cache: ADR 50's second round).  A held entry with actions (9
        fields: sends and timers, ADR 95) becomes the map an entry with actions is."""
        seg, offsets = self._seg, self._offsets
        held, self._held = self._held, []
        for record in held:
            if len(record) == 8:
                offsets.append(len(seg))
                _encode_into(record, seg, -1)       # names, numbers and bytes: it encodes
                continue
            if len(record) == 5:                    # a timer's (or no input's) answer
                agent_id, now, key, actions, wall_at = record
                entry = {"k": "in", "t": now, "agent": agent_id,
                         "in": input_json(None if key is None else Timer(key, now)),
                         "out": actions if type(actions) is _RAW else actions_json(actions)}
                if wall_at is not None:
                    entry["wall_at"] = wall_at
                self._append(entry, agent_id, now)
                continue
            agent_id, now, sender, epoch, seq, payload, sig, wall_at, actions = record
            out: Any
            if type(actions) is _RAW:
                out = actions
            else:
                a = actions[0]
                out = ([["send", [a.to], a.body.TYPE, a.conv, a.body]]
                       if len(actions) == 1 and type(a) is Send else actions_json(actions))
            self._append(_InEntry("in", now, agent_id, out,
                                  _EnvelopeIn("envelope", payload, sig),
                                  (sender, epoch, seq), wall_at, None), agent_id, now)

    def on_decision(self, agent_id: str, cause: Input | None, actions: Sequence[Action],
                    now: float, agent: Agent | None) -> None:
        """The hot path, one call per message input, kept flat (ADR 74: under a host most
        of the recorder's cost was Python calls, not encoding).  A message answered by no
        action whose envelope the bus handed over is held as a tuple of what is already
        there (names, times, the two frames) and appended with the next entry encoded at
        once, or the seal; so is one answered only by timers and sends (a machine's call
        answered by its round timer, a refusal, a ``ready``, a bid: ADR 95,
        :attr:`hold_bids`) — a body whose fields are all scalars by reference (nothing can
        change it once built); when one has a dict or a list (a proposal's ``cost``) the
        entry's ``out`` is encoded now, as it is now (``_HOLD``, :func:`_holdable`).
        One answered with an award (its *why* reads the order now), a command or a log
        (whose dicts the agent may still change) is encoded at once, from a Struct — the
        same bytes as the /2 dict, whose key order it keeps; any other input is the /2
        entry."""
        if type(cause) is not Inbound:
            if actions and self.hold_bids and (cause is None or type(cause) is Timer):
                # a timer answered by sends and timers (a machine's bids on its round
                # timer, an order's call): held as the rest (ADR 96), the timer by its key
                # (a str the collector need not follow, ADR 100)
                kept = _holdable(actions)
                if kept is not None:
                    self._now = now
                    self._hold((agent_id, now, None if cause is None else cause.key, kept,
                                None if self.wall_clock is None else self.wall_clock()))
                    return
            super().on_decision(agent_id, cause, actions, now, agent)
            return
        m = cause.msg
        self._now = now
        w = self.tap.signed
        if not actions and w is not None and w[0] and w[0][0] is m:
            # the commonest input (a bid to an order): its envelope's one message, answered
            # by nothing — the shortest path there is (ADR 95)
            self._held.append((agent_id, now, m.sender, m.epoch, m.seq, w[1], w[2],
                               None if self.wall_clock is None else self.wall_clock()))
            self.n += 1
            self.entries += 1
            if self.n - self._segment_first >= self.segment_entries:
                self._segment_full()
            return
        wall_at = None if self.wall_clock is None else self.wall_clock()
        if w is not None:
            for x in w[0]:
                if x is m:
                    break
            else:
                w = None
        if actions:
            if w is not None and self.hold_bids:
                if len(actions) == 1:
                    # one message answered by one send (a bid): what _holdable keeps of
                    # it, without the two calls (ADR 103: 1.16 → 0.99 µs a bid in a loop)
                    a = actions[0]
                    if type(a) is Send:
                        body = a.body
                        how = _HOLD.get(type(body))
                        if how is None:
                            how = _hold_kind(type(body))
                        if how == _BY_REFERENCE:
                            kept = actions
                        elif how == _SNAPSHOT:
                            try:
                                kept = _RAW(_ENCODER.encode(
                                    [["send", [a.to], body.TYPE, a.conv, body]]))
                            except (TypeError, ValueError, OverflowError):
                                kept = None
                        else:
                            kept = None
                        if kept is not None:
                            self._held.append((agent_id, now, m.sender, m.epoch, m.seq, w[1],
                                               w[2], wall_at, kept))
                            self.n += 1
                            self.entries += 1
                            if self.n - self._segment_first >= self.segment_entries:
                                self._segment_full()
                            return
                kept = _holdable(actions)
                if kept is not None:
                    self._hold((agent_id, now, m.sender, m.epoch, m.seq, w[1], w[2], wall_at,
                                kept))
                    return
            a = actions[0]
            if len(actions) == 1 and type(a) is Send and type(a.body) is not Award:
                # one message answered by one message (a bid): actions_json's line
                assert isinstance(a, Send)
                out: list[list[Any]] = [["send", [a.to], a.body.TYPE, a.conv, a.body]]
                why = None
            else:
                notable: list[Send] = []
                out = actions_json(actions, notable)
                why = self._why(agent_id, notable, agent) if notable else None
            entry: Any = _InEntry("in", now, agent_id, out,
                                  input_json(cause) if w is None else
                                  _EnvelopeIn("envelope", w[1], w[2]),
                                  (m.sender, m.epoch, m.seq), wall_at, why or None)
        elif w is not None:
            self._hold((agent_id, now, m.sender, m.epoch, m.seq, w[1], w[2], wall_at))
            return
        else:
            entry = {"k": "in", "t": now, "agent": agent_id, "in": input_json(cause),
                     "out": (), "env": (m.sender, m.epoch, m.seq)}
            if wall_at is not None:
                entry["wall_at"] = wall_at
        if self._held:
            self._append_held()
        self._append(entry, agent_id, now)
        self.n += 1
        self.entries += 1
        if self.n - self._segment_first >= self.segment_entries:
            self._segment_full()

    def _hold(self, record: tuple[Any, ...]) -> None:
        """Number an entry and hold it as ``record`` until the next entry encoded at once,
        idle moment or seal (:meth:`_append_held`; the shortest path in
        :meth:`on_decision` does this inline)."""
        self._held.append(record)
        self.n += 1
        self.entries += 1
        if self.n - self._segment_first >= self.segment_entries:
            self._segment_full()

    def seal(self, *, final: bool = False) -> None:
        """Index, hash, sign and write the open segment (one record)."""
        self._seal_due = False
        if self.n == self._segment_first and not final:
            return
        if self._held:
            self._append_held()
        self.segments += 1
        first, last = self._segment_first, self.n - 1
        if len(self._digests) != DIGEST_BYTES * len(self._offsets):
            self._index()
        seg = self._seg
        digests = bytes(self._digests)
        offs = _offsets_bytes(self._offsets)
        prev = self._prev
        hash_hex = segment_hash(prev, seg, offs, digests)
        sig = self.key.sign(seal_text(self.segments, first, last, final, hash_hex))
        record = _ENCODER.encode({"k": "seal", "segment": self.segments, "first": first,
                                  "last": last, "final": final, "prev": prev,
                                  "hash": hash_hex, "key_id": fingerprint(self.key.public_key),
                                  "sig": sig, "offsets": offs, "digests": digests})
        write = self.sink.write
        write(_LEN.pack(len(seg)))
        write(seg)
        write(_LEN.pack(len(record)))
        write(record)
        self.sink.flush()
        self._prev = hash_hex
        self._segment_first = self.n
        self._open_segment()

    def flush(self) -> None:
        """Entries reach the file at seals (:meth:`seal`); this only flushes the sink."""
        self.sink.flush()


def attach(bus: Any, log: SegmentLog | None) -> None:
    """Record what ``bus`` (an agents/runtime/bus.py ``Bus``) hands over into ``log`` as a
    host does — each input as the signed bytes it came in (``Bus.wire``), a full segment
    sealed when the bus's transport has drained (``on_idle``) — or stop (``log`` None)."""
    if log is None:
        bus.wire = None
        bus.transport.on_idle = None
        return
    log.idle_seals = True
    bus.wire = log.tap
    bus.transport.on_idle = log.idle


# -- reading ---------------------------------------------------------------------------------

class _Segment(msgspec.Struct, frozen=True):
    """One segment record as read: its entries' bytes, its seal's bytes, where it starts."""

    entries: bytes
    seal: bytes
    at: int


def _header(data: bytes) -> tuple[dict[str, Any], bytes, int]:
    line, nl, _ = data.partition(b"\n")
    if not nl:
        raise ValueError("the header line is not complete")
    header = json.loads(line)
    if not isinstance(header, dict) or header.get("format") not in SEGMENTED:
        raise ValueError(f"no {' or '.join(SEGMENTED)} header")
    return header, line, len(line) + 1


def _segments(data: bytes, pos: int) -> Iterator[_Segment]:
    """The complete segment records from ``pos`` on (a cut one at the end is left out)."""
    end = len(data)
    while pos + 4 <= end:
        (elen,) = _LEN.unpack_from(data, pos)
        spos = pos + 4 + elen
        if spos + 4 > end:
            return
        (slen,) = _LEN.unpack_from(data, spos)
        if spos + 4 + slen > end:
            return
        yield _Segment(data[pos + 4:spos], data[spos + 4:spos + 4 + slen], pos)
        pos = spos + 4 + slen


def _seal_of(raw: bytes) -> dict[str, Any]:
    seal = msgspec.msgpack.decode(raw)
    if not isinstance(seal, dict) or seal.get("k") != "seal":
        raise ValueError("not a seal")
    for name, kind in (("segment", int), ("first", int), ("last", int), ("final", bool),
                       ("prev", str), ("hash", str), ("sig", bytes), ("offsets", bytes),
                       ("digests", bytes)):
        if type(seal.get(name)) is not kind:
            raise ValueError(f"its {name!r} is missing or not a {kind.__name__}")
    return seal


def entry_dict(obj: Any, n: int) -> dict[str, Any]:
    """An entry record as the dict /2's reader gives (``n`` added; an envelope input
    decoded into the ``message`` form)."""
    if isinstance(obj, list):
        agent, t, sender, epoch, seq, payload, _sig, wall_at = obj
        entry: dict[str, Any] = {"k": "in", "n": n, "t": t, "agent": agent,
                                 "in": envelope_message(payload, agent, sender), "out": [],
                                 "env": [sender, epoch, seq]}
        if wall_at is not None:
            entry["wall_at"] = wall_at
        return entry
    if not isinstance(obj, dict):
        raise ValueError(f"entry {n} is neither an array nor a map")
    obj["n"] = n
    inp = obj.get("in")
    if obj.get("k") == "in" and isinstance(inp, dict) and inp.get("kind") == "envelope":
        obj["in"] = envelope_message(inp["payload"], obj["agent"], obj["env"][0])
    return obj


def read_entries(path: str | Path) -> Iterator[dict[str, Any]]:
    """A /4 or /3 log as /2's :func:`~agents.runtime.recorder.read_text_lines` gives it: the
    header (``n`` 0), the entries and a ``seal`` dict per segment.  No checking (that is
    :func:`verify_segments`); an entry that does not decode raises ValueError."""
    data = Path(path).read_bytes()
    header, _, pos = _header(data)
    yield {**header, "n": 0}
    for seg in _segments(data, pos):
        try:
            seal = _seal_of(seg.seal)
        except (msgspec.DecodeError, ValueError) as exc:
            raise ValueError(f"the seal of the segment at byte {seg.at} does not decode "
                             f"({exc})") from exc
        bounds = _offsets_of(seal["offsets"]) + [len(seg.entries)]
        for i, (a, b) in enumerate(zip(bounds, bounds[1:])):
            n = seal["first"] + i
            try:
                obj = msgspec.msgpack.decode(seg.entries[a:b])
            except msgspec.DecodeError as exc:
                raise ValueError(f"entry {n} does not decode ({exc})") from exc
            yield entry_dict(obj, n)
        yield {"k": "seal", "segment": seal["segment"], "first": seal["first"],
               "last": seal["last"], "final": seal["final"], "hash": seal["hash"]}


def _derive(entries: bytes) -> list[int]:
    """The entries' boundaries as the bytes themselves give them (one msgpack object after
    another), independent of the index; stops at the first that does not decode."""
    bounds, end = [0], len(entries)
    up = msgpack.Unpacker(raw=True, max_buffer_size=end + 1)
    up.feed(entries)
    while bounds[-1] < end:
        try:
            up.skip()
        except Exception:       # OutOfData, FormatError, StackError...: an edited entry
            break
        bounds.append(up.tell())
    return bounds


def _locate(entries: bytes, index: list[bytes], first: int,
            size: int = DIGEST_BYTES) -> tuple[int, str] | None:
    """The first entry whose bytes are not what the index (of ``size``-byte digests) says,
    and how (edited, removed, reordered); None when every entry matches."""
    bounds = _derive(entries)
    derived = index_digests(entries, bounds, size)
    got = [derived[i:i + size] for i in range(0, len(derived), size)]
    for i, want in enumerate(index):
        if i >= len(got):
            return first + i, (f"entry {first + i} is missing from its segment (entries "
                               "removed, or an edit left the rest undecodable)")
        if got[i] != want:
            if got[i:] == index[i + 1:i + 1 + len(got) - i] and len(got) < len(index):
                return first + i, f"entry {first + i} was removed"
            if got[i] in index:
                return first + i, (f"entry {first + i} is not where the index puts it "
                                   "(entries reordered)")
            return first + i, (f"entry {first + i} does not hash to its index digest "
                               f"(entry {first + i} edited)")
    if len(got) > len(index) or bounds[-1] != len(entries):
        return first + len(index), (f"bytes after entry {first + len(index) - 1} that the "
                                    "index does not hold (an entry inserted)")
    return None


def verify_segments(path: str | Path, trusted_key: bytes | None = None) -> LogReport:
    """Check a /4 (or /3) log: the header, every segment's entries against its index, the
    hash chain of segments, every seal's signature, a final seal (docs/PROTOCOL.md §16)."""
    data = Path(path).read_bytes()
    try:
        header, line, pos = _header(data)
        key = bytes.fromhex(header["key"])
        verifier = Verifier(key)
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        return LogReport(False, 0, 0, f"the header does not read ({exc})")
    host, key_id = str(header.get("host", "")), fingerprint(key)
    if line.endswith(b"\r"):
        return LogReport(False, 0, 0, "the header line ends with CR LF: the file's line "
                         "endings were converted (an editor or a text-mode copy), which "
                         "damages its binary segments too: verify an unconverted copy",
                         GENESIS, 0, host, key_id)
    fmt = header["format"]
    size = DIGEST_BYTES_3 if fmt == FORMAT3 else DIGEST_BYTES
    if trusted_key is not None and key != trusted_key:
        return LogReport(False, 0, 0, f"the header's key {key_id} is not the trusted key "
                         f"{fingerprint(trusted_key)}", GENESIS, 0, host, key_id)
    prev, n, segments, final, end = _sha256(line).hexdigest(), 1, 0, False, pos

    def bad(at: int, problem: str) -> LogReport:
        return LogReport(False, at, at, problem, prev, segments, host, key_id)

    for seg in _segments(data, pos):
        end = seg.at + 8 + len(seg.entries) + len(seg.seal)
        k = segments + 1
        if final:
            return bad(n, f"segment {k} follows the final seal (appended after closing)")
        try:
            seal = _seal_of(seg.seal)
        except (msgspec.DecodeError, ValueError) as exc:
            return bad(n, f"the seal of segment {k} does not decode ({exc}; edited)")
        offs, digests = seal["offsets"], seal["digests"]
        count = seal["last"] - seal["first"] + 1
        if seal["segment"] != k or seal["first"] != n or seal["prev"] != prev:
            what = ("the header was edited (segment 1 does not chain to it)" if k == 1
                    and seal["prev"] != prev else
                    f"segment {seal['segment']} (entries {seal['first']}..{seal['last']}) "
                    f"where segment {k}, from entry {n}, belongs (segments removed or "
                    "reordered)")
            return bad(0 if "header" in what else n, what)
        if (count < 0 or len(offs) != 4 * count or len(digests) != size * count):
            return bad(n, f"the index of segment {k} does not hold its {count} entries "
                       "(the seal edited)")
        index = [digests[i:i + size] for i in range(0, len(digests), size)]
        located = _locate(seg.entries, index, n, size)
        if located is not None:
            return bad(*located)
        if _offsets_of(offs) != _derive(seg.entries)[:-1]:
            return bad(n, f"the offsets of segment {k}'s index are not its entries' "
                       "(the seal edited)")
        hash_hex = segment_hash(prev, seg.entries, offs, digests, fmt)
        if hash_hex != seal["hash"] or not verifier.verify(
                seal_text(k, n, seal["last"], seal["final"], hash_hex, fmt), seal["sig"]):
            return bad(n, f"segment {k} (entries {n}..{seal['last']}): the signature does "
                       "not verify (forged or the seal edited)")
        prev, n, segments, final = hash_hex, seal["last"] + 1, k, seal["final"]
    if end < len(data) and final:
        return bad(n, f"{len(data) - end} bytes follow the final seal (segment {segments}, "
                   f"after entry {n - 1}): they were appended after the log was closed")
    if end < len(data):
        return replace(bad(n, f"bytes after segment {segments} do not form a whole segment: "
                           f"entries from {n} follow the last seal unsigned (the recording "
                           "process stopped before closing the log, or the file was cut)"),
                       cut=True)
    if not final:
        return replace(bad(n, "the log has no final seal (the recording process stopped "
                           "before closing it, or segments were cut from the end)"), cut=True)
    return LogReport(True, n, None, "", prev, segments, host, key_id)


# -- the senders' signatures -----------------------------------------------------------------

def signed_inputs(path: str | Path) -> Iterator[tuple[int, str, bytes, bytes, float]]:
    """Every input recorded as its envelope (format /2's ``envelope``, or /3's and /4's), in
    order: (entry number, sender, payload, signature, when it was received: ``wall_at``, else
    the sender's stamp).  No checking of the log itself (that is ``verify_log``)."""
    import base64

    from agents.runtime.recorder import _is_segmented

    def when(payload: bytes, wall_at: Any) -> float:
        if isinstance(wall_at, (int, float)):
            return float(wall_at)
        ts = msgpack.unpackb(payload, raw=False).get("ts")
        return float(ts) if isinstance(ts, (int, float)) else 0.0

    if not _is_segmented(path):
        with open(path, "rb") as f:
            for line in f:
                if b'"kind":"envelope"' not in line:
                    continue
                e = json.loads(line)
                payload = base64.b64decode(e["in"]["payload"])
                yield (e["n"], e["env"][0], payload, base64.b64decode(e["in"]["sig"]),
                       when(payload, e.get("wall_at")))
        return
    for e in read_entries_raw(path):
        n, obj = e
        if isinstance(obj, list):
            _agent, _t, sender, _epoch, _seq, payload, sig, wall_at = obj
            yield n, sender, payload, sig, when(payload, wall_at)
        elif isinstance(obj, dict) and isinstance(obj.get("in"), dict) \
                and obj["in"].get("kind") == "envelope":
            payload = obj["in"]["payload"]
            yield n, obj["env"][0], payload, obj["in"]["sig"], when(payload, obj.get("wall_at"))


def read_entries_raw(path: str | Path) -> Iterator[tuple[int, Any]]:
    """A /4 or /3 log's entries as decoded msgpack objects, numbered (no conversion)."""
    data = Path(path).read_bytes()
    _, _, pos = _header(data)
    for seg in _segments(data, pos):
        seal = _seal_of(seg.seal)
        bounds = _offsets_of(seal["offsets"]) + [len(seg.entries)]
        for i, (a, b) in enumerate(zip(bounds, bounds[1:])):
            yield seal["first"] + i, msgspec.msgpack.decode(seg.entries[a:b])


def verify_senders(path: str | Path, trust: Any) -> tuple[int, int | None, str]:
    """Check each envelope input's signature against the cell's certificates (``trust``, a
    :class:`security.certs.TrustStore`): (inputs checked, the first forged entry or None,
    why).  A log that verifies proves what the host recorded; this proves who sent it."""
    from agents.protocol.envelope import SIGNING_TAG
    from security.errors import Rejected

    checked = 0
    try:
        for n, sender, payload, sig, at in signed_inputs(path):
            try:
                verifier = trust.peer(sender, at).verifier
            except Rejected as exc:
                return checked, n, f"entry {n}: the sender {sender!r} has no valid " \
                                   f"certificate at {at:.0f} ({exc})"
            if not verifier.verify(SIGNING_TAG + sender.encode() + bytes(payload), bytes(sig)):
                return checked, n, (f"entry {n}: the envelope's signature does not verify "
                                    f"with {sender!r}'s certificate (the input was forged or "
                                    "edited)")
            checked += 1
    except (ValueError, KeyError, TypeError, IndexError, msgspec.DecodeError) as exc:
        return checked, None, f"the log does not read ({exc}); verify it first"
    return checked, None, ""
