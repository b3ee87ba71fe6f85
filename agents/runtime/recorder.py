"""The flight recorder: a signed, hash-chained decision log written through the runner.

Theory of operation
-------------------
Agents are deterministic sans-io objects (``agents/base.py``): what an agent
decides is a function of its inputs.  So the runner (ADR 38), which hands
every input to every agent under every driver, is the one place that can
record *every* decision: for each input it hands over, the recorder writes
one entry — the agent, the cell time, the input exactly as the agent got it
(a message names its envelope by sender, epoch and seq) and the actions the
agent answered with (messages sent, timers, plant commands, log events).
An award also carries *why*: the order strategy's score of every proposal
the order held at its reply deadline, read from the order agent itself at
the award (``OrderAgent.weighed``), so the recorder keeps no proposals.
Crashes, restarts and pauses of agents are entries too, so the log says
which inputs an agent never saw.

That is enough to explain a decision (``ops/explain.py``) and to replay a
run (``ops/replay.py``): a fresh agent fed the recorded inputs must answer
with the recorded actions.

The file is JSON lines (docs/PROTOCOL.md, "Decision log", is the format):
line 0 is a header with the run (cell, seed, strategies) and the public key
of the recording host; every line carries ``n`` (its number) and ``prev``
(the SHA-256 of the previous line's bytes), so an edited, removed or
reordered line breaks the chain at that line; every ``segment_entries``
lines and at :meth:`DecisionLog.close` a *seal* line signs the chain up to
itself with Ed25519.  :func:`verify_text_log` checks all of it and names the
first bad line.

Under a host the bus leaves the log each envelope it accepts (``Bus.wire`` =
:attr:`DecisionLog.tap`, a :class:`WireTap`; a driver without a bus calls
:meth:`DecisionLog.on_wire`), and a message input is recorded as the bytes
its sender signed (``envelope``: payload and signature) rather than encoded
again from the decoded message: the log then proves who sent each input,
not only that the host says so.  A plant event under ``up`` is a signed
``plant_event`` message from the plant process, so it is recorded the same way
(its envelope, ``env`` naming it), and read back as the ``plant`` input the agent
got.  :func:`read_text_lines` decodes it back into the
``message`` (or ``plant``) form, so readers see one form (format ``/2``; ``/1`` logs, with
no envelopes, still read and verify).

A host writes format ``/3`` instead (agents/runtime/segment_log.py, ADR 67):
the same entries as binary records, hashed per segment with a per-entry
index.  Readers and verifiers of any format go through
agents/runtime/flight_log.py (``read_lines``, ``verify_log``), which picks
the format from the header, and a host opens its log there
(``host_decision_log``): this module is the base both formats build on.

Off, the runner pays one attribute test per input.  On, it never changes
what the agents see or do: the recorder only reads the inputs and actions.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from operator import itemgetter
from pathlib import Path
from typing import IO, Any, Protocol

import msgpack
import msgspec

from agents.base import Agent, PlantEventIn
from agents.protocol.actions import Action, CancelTimer, Command, Log, Send, SetTimer
from agents.protocol.messages import (
    Award,
    Message,
    PlantEvent,
    Proposal,
    body_from_wire,
)
from agents.runtime.journal import Inbound, Input, PlantIn, Recover, Start, Timer
from security.crypto import SigningKey, Verifier, fingerprint
from security.errors import Rejected

FORMAT = "autocell-decision-log/2"
FORMAT3 = "autocell-decision-log/3"
FORMAT4 = "autocell-decision-log/4"
FORMATS = ("autocell-decision-log/1", FORMAT)
"""JSON-lines formats read and verified: /1 has no ``envelope`` inputs (docs/PROTOCOL.md
§16)."""
SEGMENTED = (FORMAT3, FORMAT4)
"""Binary segment formats (agents/runtime/segment_log.py), read and verified there and
dispatched from here: /4 is written, /3 (its segment hash over the entries' bytes too,
ADR 102) is still read and verified."""
GENESIS = "0" * 64
SEGMENT_ENTRIES = 1000


class Recorder(Protocol):
    """What the runner calls (``Runner.recorder``; None = recording off)."""

    def on_decision(self, agent_id: str, cause: Input | None, actions: Sequence[Action],
                    now: float, agent: Agent | None) -> None: ...

    def on_runtime(self, event: str, agent_id: str, now: float | None,
                   journal: Sequence[bytes] | None = None) -> None: ...


def describe_run(cfg: Any, seed: int, *, driver: str, order_strategy: str | None = None,
                 resource_strategy: str | None = None, escalation: bool = False,
                 models: Mapping[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """The header's ``run``: what a replay needs to build the agents again — the cell as
    data (``cfg``, a :class:`agents.cell.model.CellConfig`), the seed, the strategies,
    whether the agents escalate (a console agent ran), the trained health models the
    machines' estimators started from (``models``, per machine, when there are some: the
    file ``maintenance.models`` names is the recording host's, its contents are the
    run's) — and ``extra`` facts (host, boot)."""
    data = cfg.model_dump(mode="json", exclude_none=True)
    data.pop("security", None)      # keys directories are the recording host's business
    if isinstance(data.get("maintenance"), dict):       # and so is the models file: its
        data["maintenance"].pop("models", None)         # contents are kept below
    out = {"driver": driver, "cell": data, "cell_name": cfg.cell, "source": str(cfg.source),
           "seed": seed, "order_strategy": order_strategy,
           "resource_strategy": resource_strategy, "escalation": escalation, **extra}
    if models:
        out["models"] = {m: model.to_json() for m, model in sorted(models.items())}
    return out


def _name(strategy: Any) -> str:
    """A strategy's name for the *why*: its ``name``, or its dotted path when it left the
    base class's (a plug-in's ``base`` would tell a reader nothing)."""
    name = getattr(strategy, "name", None)
    if not isinstance(name, str) or name == "base":
        cls = type(strategy)
        return f"{cls.__module__}:{cls.__qualname__}"
    return name


def _score(strategy: Any, cfp: Any, proposal: Any) -> float | None:
    """The strategy's score of a candidate for an award's *why*, or None when it has none
    to give: a strategy that overrides ``choose`` need not score (``score`` raises), and a
    score that is not a number would not encode.  The award itself was checked by
    ``choose_of`` (agents/negotiation/strategies.py); the why only reports."""
    try:
        value = strategy.score(cfp, proposal)
    except Exception:
        return None
    if type(value) is float or type(value) is int:
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)                 # numpy's and other numbers: plain ones
    return None


# -- the JSON form of inputs and actions ----------------------------------------------------

_ENCODER = msgspec.json.Encoder(order="sorted")
_sha256 = hashlib.sha256


def canonical(obj: Any) -> bytes:
    """The bytes of one log line (without its newline): JSON, keys sorted, no spaces, UTF-8
    (msgspec: ten times ``json.dumps``, which matters at one line per input)."""
    return _ENCODER.encode(obj)


def seal_bytes(segment: int, first: int, last: int, final: bool, prev: str,
               fmt: str | None = None) -> bytes:
    """What a seal's signature covers: plain text another tool can rebuild
    (docs/PROTOCOL.md, "Decision log"); ``fmt`` is the header's format."""
    return f"{fmt or FORMAT} seal {segment} {first} {last} {int(final)} {prev}".encode()


def input_json(inp: Input | None) -> dict[str, Any]:
    """An input as data; a message names its envelope (``from``, ``epoch``, ``seq``)."""
    if isinstance(inp, Inbound):
        m = inp.msg
        return {"kind": "message", "type": m.type, "from": m.sender, "to": m.to,
                "conv": m.conv, "id": m.id.hex(), "epoch": m.epoch, "seq": m.seq, "ts": m.ts,
                "body": m.body}
    if isinstance(inp, Timer):
        return {"kind": "timer", "key": inp.key}
    if isinstance(inp, PlantIn):
        e = inp.ev
        return {"kind": "plant", "event": e.event, "resource": e.resource, "task": e.task,
                "data": e.data}
    if isinstance(inp, Start):
        return {"kind": "start"}
    if isinstance(inp, Recover):
        return {"kind": "recover"}
    return {"kind": "direct"}    # the driver carried out actions of its own (a supervisor's)


def input_from_json(d: Mapping[str, Any], now: float) -> Input | None:
    """Inverse of :func:`input_json` (None for ``direct``: no input to replay)."""
    kind = d["kind"]
    if kind == "message":
        body = body_from_wire(d["type"], d["body"])
        return Inbound(Message(d["from"], d["to"], d["conv"], bytes.fromhex(d["id"]),
                               d["epoch"], d["seq"], d["ts"], body), now)
    if kind == "timer":
        return Timer(d["key"], now)
    if kind == "plant":
        return PlantIn(PlantEventIn(d["event"], d["resource"], d["task"], d["data"]), now)
    if kind == "start":
        return Start(now)
    if kind == "recover":
        return Recover(now)
    return None


def actions_json(actions: Sequence[Action],
                 notable: list[Send] | None = None) -> list[list[Any]]:
    """Actions as data; consecutive sends of one body are one ``send`` to several.
    ``notable``: where to put the sends of awards (the recorder's *why*)."""
    out: list[list[Any]] = []
    last: Send | None = None
    for a in actions:
        cls = type(a)
        if cls is Send:
            assert isinstance(a, Send)
            if last is not None and a.body is last.body and a.conv == last.conv:
                out[-1][1].append(a.to)
            else:
                out.append(["send", [a.to], a.body.TYPE, a.conv, a.body])
                if notable is not None and type(a.body) is Award:
                    notable.append(a)
            last = a
            continue
        last = None
        if isinstance(a, SetTimer):
            out.append(["timer", a.key, a.at])
        elif isinstance(a, CancelTimer):
            out.append(["cancel", a.key])
        elif isinstance(a, Command):
            out.append(["command", a.command, a.resource, a.task, a.args])
        elif isinstance(a, Log):
            out.append(["log", a.event, a.fields])
    return out


class _MessageIn(msgspec.Struct, frozen=True, gc=False, rename={"from_": "from"}):
    """A message input as the log holds it (fields in sorted order: the same bytes as
    :func:`input_json`'s dict encoded with sorted keys)."""

    body: Any
    conv: str
    epoch: int
    from_: str
    id: str
    kind: str
    seq: int
    to: str
    ts: float
    type: str


class _EnvelopeIn(msgspec.Struct, frozen=True, gc=False):
    """A message input as the signed bytes it came in (``kind`` = ``envelope``): msgspec
    writes the bytes as base64; the reader decodes them (:func:`envelope_input`)."""

    kind: str
    payload: bytes
    sig: bytes


# a message input's entry answered by no action, deferred: (n, agent, t, message, wall_at,
# wire) — wire is (payload, signature) when the bus handed them over (the message is then
# not kept: only the bytes the bus holds anyway), else None and the message is encoded
_Deferred = tuple[int, str, float, "Message | tuple[str, int, int]", "float | None",
                  "tuple[bytes, bytes] | None"]


class _MessageEntry(msgspec.Struct, frozen=True, gc=False, omit_defaults=True,
                    rename={"in_": "in"}):
    """An ``in`` entry for a message input (the hot path): a Struct encodes in two thirds
    of a dict's time, to the same bytes (fields sorted; ``wall_at`` and ``why`` left out
    when absent, as the dict form leaves them out)."""

    agent: str
    env: tuple[str, int, int]
    in_: _MessageIn | _EnvelopeIn
    k: str
    n: int
    out: Any
    prev: str
    t: float
    wall_at: float | None = None
    why: Any = None


# -- writing --------------------------------------------------------------------------------

class WireTap:
    """Where a bus leaves the signed frames of the envelope whose messages it hands over
    next (``Bus.wire``): one attribute store per envelope, no call (ADR 79: in the
    process, each Python call on the message path cost about 1 µs)."""

    __slots__ = ("signed",)

    def __init__(self) -> None:
        self.signed: tuple[list[Message], bytes, bytes] | None = None


class DecisionLog:
    """Writes one decision log: a header, an entry per input, a seal per segment.

    ``sink`` is a binary file opened for writing (the caller owns it).
    Lines are buffered per segment and written when it is sealed (a process killed
    loses its unsealed segment, which could not have been verified either);
    ``key`` signs the seals; ``run`` is what a replay needs (cell, seed,
    strategies) and goes into the header.  ``wall_clock`` stamps entries
    with wall-clock time where the run has one (a host under ``up``).
    """

    def __init__(self, sink: IO[bytes], key: SigningKey, *, host: str, run: Mapping[str, Any],
                 wall_clock: Callable[[], float] | None = None,
                 segment_entries: int = SEGMENT_ENTRIES) -> None:
        self.sink = sink
        self.key = key
        self.host = host
        self.wall_clock = wall_clock
        self.segment_entries = segment_entries
        self.n = 0
        self._prev = GENESIS
        self.entries = 0
        self.segments = 0
        self._segment_first = 1
        self._now: float | None = None
        self._buf: list[bytes] = []
        # message entries numbered but not yet encoded, in order (see on_decision)
        self._pending: list[_Deferred] = []
        # the envelope the bus is handing over now: (its messages, payload, signature)
        self.tap = WireTap()
        self.closed = False
        self._begin({"k": "header", "format": self.format, "host": host,
                     "key": key.public_key.hex(), "key_id": fingerprint(key.public_key),
                     "run": dict(run)})

    @property
    def format(self) -> str:
        """The header's format (a subclass writes another: agents/runtime/segment_log.py)."""
        return FORMAT

    def _begin(self, header: dict[str, Any]) -> None:
        self._write(header)
        self.flush()        # a process killed before its first seal still leaves its header

    @property
    def prev(self) -> str:
        """The SHA-256 (hex) of the last line: the head of the chain."""
        if self._pending:
            self._encode_pending()
        return self._prev

    def _write(self, obj: dict[str, Any]) -> None:
        if self._pending:
            self._encode_pending()
        obj["n"] = self.n
        obj["prev"] = self._prev
        line = canonical(obj)
        self._buf.append(line)
        self._prev = hashlib.sha256(line).hexdigest()
        self.n += 1

    def _encode_pending(self) -> None:
        """Encode and chain the message entries numbered but deferred, in one tight loop:
        it keeps the encoder and the hash hot in the cache (interleaved with the bus's
        work, an entry cost about twice its time in a loop), from Structs (a third less
        than a dict, to the same bytes)."""
        prev, buf, encode, sha256 = self._prev, self._buf, _ENCODER.encode, _sha256
        for n, agent_id, now, m, wall_at, wire in self._pending:
            if wire is not None:
                assert type(m) is tuple
                line = encode(_MessageEntry(agent_id, m, _EnvelopeIn("envelope", *wire),
                                            "in", n, (), prev, now, wall_at))
            else:
                assert isinstance(m, Message)
                body = m.body
                line = encode(_MessageEntry(
                    agent_id, (m.sender, m.epoch, m.seq),
                    _MessageIn(body, m.conv, m.epoch, m.sender, m.id.hex(), "message", m.seq,
                               m.to, m.ts, body.TYPE),
                    "in", n, (), prev, now, wall_at))
            buf.append(line)
            prev = sha256(line).hexdigest()
        self._prev = prev
        self._pending.clear()

    def _entry(self, obj: dict[str, Any]) -> None:
        """Encode an entry now (after the deferred ones before it)."""
        self._write(obj)
        self.entries += 1
        if self.n - self._segment_first >= self.segment_entries:
            self._segment_full()

    # -- the runner's hooks -------------------------------------------------------------------
    def on_wire(self, msgs: list[Message], payload: bytes, signature: bytes) -> None:
        """The envelope whose messages a driver hands over next (a bus leaves it in
        :attr:`tap` itself, without this call).
        An input that is one of these messages is recorded as these bytes — what its
        sender signed, already encoded and immutable — instead of being encoded again;
        any other message input (held while its agent was paused, or from a driver with
        no hook) is recorded decoded, as before."""
        self.tap.signed = (msgs, payload, signature)

    def _wire_of(self, m: Message) -> tuple[bytes, bytes] | None:
        w = self.tap.signed
        if w is None:
            return None
        for x in w[0]:
            if x is m:
                return w[1], w[2]
        return None

    def on_decision(self, agent_id: str, cause: Input | None, actions: Sequence[Action],
                    now: float, agent: Agent | None) -> None:
        """One entry: the input, the actions; the hot path (one per input), kept flat.

        A message the agent answered with no action (a bid it keeps for its deadline, a
        confirmation) is numbered now and encoded later, in a batch (at the next entry
        with actions, seal or flush): the message is a frozen Struct, its body a frozen
        Struct (ADR 39), there is nothing else in the entry, and the runner calls this
        after the agent handled it, so later reads what now would — and a message whose
        envelope the bus handed over keeps only its signed bytes (:meth:`on_wire`), so
        the decoded message is not held until the batch.  An entry with actions
        is encoded at once, in one step: an agent may still change what it handed over
        (a dict in a Command, a Log), and encoding actions apart from their entry cost a
        virtual run, where most entries have actions, more than the batch saved."""
        self._now = now
        if not actions and type(cause) is Inbound:     # a message answered later, or not
            m = cause.msg
            wire = self._wire_of(m) if self.tap.signed is not None else None
            self._pending.append((self.n, agent_id, now,
                                  m if wire is None else (m.sender, m.epoch, m.seq),
                                  None if self.wall_clock is None else self.wall_clock(), wire))
            self.n += 1
            self.entries += 1
            if self.n - self._segment_first >= self.segment_entries:
                self._segment_full()
            return
        notable: list[Send] = []
        out = actions_json(actions, notable) if actions else []
        if type(cause) is Inbound:
            m = cause.msg
            body = m.body
            wire = self._wire_of(m) if self.tap.signed is not None else None
            entry: dict[str, Any] = {
                "k": "in", "t": now, "agent": agent_id, "out": out,
                "in": ({"kind": "message", "type": body.TYPE, "from": m.sender, "to": m.to,
                        "conv": m.conv, "id": m.id.hex(), "epoch": m.epoch, "seq": m.seq,
                        "ts": m.ts, "body": body} if wire is None else
                       _EnvelopeIn("envelope", *wire)),
                "env": [m.sender, m.epoch, m.seq]}
        else:
            entry = {"k": "in", "t": now, "agent": agent_id, "in": input_json(cause), "out": out}
            if type(cause) is PlantIn and self.tap.signed is not None:
                self._plant_envelope(entry, cause)
        if self.wall_clock is not None:
            entry["wall_at"] = self.wall_clock()
        if notable:
            why = self._why(agent_id, notable, agent)
            if why:
                entry["why"] = why
        self._entry(entry)

    def _plant_envelope(self, entry: dict[str, Any], cause: PlantIn) -> None:
        """A plant event that came as a signed ``plant_event`` message (a host under ``up``:
        the host hands the agent that message's body's ``data`` itself, which identifies it
        in the envelope the bus is handing over): record the envelope instead."""
        assert self.tap.signed is not None
        msgs, payload, signature = self.tap.signed
        for x in msgs:
            if type(x.body) is PlantEvent and x.body.data is cause.ev.data:
                entry["in"] = _EnvelopeIn("envelope", payload, signature)
                entry["env"] = [x.sender, x.epoch, x.seq]
                return

    def on_runtime(self, event: str, agent_id: str, now: float | None,
                   journal: Sequence[bytes] | None = None) -> None:
        """An agent crashed, restarted, paused or resumed (no input: the runner's doing).
        A restart carries the journal records the agent was rebuilt from (base64), so a
        log begun by a restarted process replays on its own."""
        entry: dict[str, Any] = {"k": "rt", "t": self._now if now is None else now,
                                 "event": event, "agent": agent_id}
        if journal is not None:
            entry["journal"] = [base64.b64encode(r).decode() for r in journal]
        if self.wall_clock is not None:
            entry["wall_at"] = self.wall_clock()
        self._entry(entry)

    def _why(self, agent_id: str, sends: list[Send],
             agent: Agent | None) -> list[dict[str, Any]]:
        """An award's *why*: the order strategy's score of every proposal the order held for
        the call, read from the order agent (``weighed``) as it awards.  The recorder keeps
        no proposals of its own: keeping them, even only until the award, cost a negotiation
        caller more than all its hashing (ADR 92, ADR 95)."""
        out: list[dict[str, Any]] = []
        strategy = getattr(agent, "strategy", None)
        weighed = getattr(agent, "weighed", None)
        if strategy is None or weighed is None:
            return out
        for a in sends:
            body = a.body
            assert isinstance(body, Award)
            held = weighed(body.task)
            if held is None:
                continue
            cfp, proposals = held
            out.append({"award": body.task, "winner": a.to, "epoch": body.award_epoch,
                        "strategy": _name(strategy),
                        "candidates": [
                            {"resource": s, "score": _score(strategy, cfp, p),
                             "start_at": p.start_at, "finish_at": p.finish_at, "cost": p.cost}
                            for s, p in sorted(proposals, key=itemgetter(0))]})
        return out

    # -- segments -----------------------------------------------------------------------------
    def _segment_full(self) -> None:
        """The open segment holds ``segment_entries`` entries: seal it."""
        self.seal()

    def seal(self, *, final: bool = False) -> None:
        """Sign the chain up to here: the seal names its segment's first and last line."""
        if self.n == self._segment_first and not final:
            return
        self.segments += 1
        first, last = self._segment_first, self.n - 1
        sig = self.key.sign(seal_bytes(self.segments, first, last, final, self.prev))
        self._write({"k": "seal", "segment": self.segments, "first": first, "last": last,
                     "final": final, "key_id": fingerprint(self.key.public_key),
                     "sig": sig.hex()})
        self._segment_first = self.n
        self.flush()

    def flush(self) -> None:
        """Write the buffered lines (each followed by a newline) to the sink."""
        if self._pending:
            self._encode_pending()
        if self._buf:
            self._buf.append(b"")
            self.sink.write(b"\n".join(self._buf))
            self._buf.clear()
        self.sink.flush()

    def close(self) -> None:
        """The final seal (a log without one was cut short: see :func:`verify_text_log`)."""
        if not self.closed:
            self.seal(final=True)
            self.closed = True


# -- reading and verifying ------------------------------------------------------------------

def is_decision_log(path: str | Path) -> bool:
    """True when the file starts like a decision log (``audit verify`` dispatches on it)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return False
    first = head.split(b"\n", 1)[0]
    return head.startswith(b"{") and any(f.encode() in first for f in (*FORMATS, *SEGMENTED))


SQLITE_MAGIC = b"SQLite format 3\x00"
"""The first bytes of every SQLite file (an escalation store): never a decision log."""
_BOM = b"\xef\xbb\xbf"
_LOG_TAG = b"autocell-decision-log/"
_SNIFF_BYTES = 1 << 22          # a segment of 1000 entries is well under this


def looks_like_decision_log(path: str | Path) -> bool:
    """True when the file holds a decision log, intact or not: a header-like first line,
    JSON lines holding ``k``, ``n`` and ``prev``, or a /3 or /4 segment record where the
    header belongs.  ``audit verify`` dispatches on this, not on :func:`is_decision_log`,
    so a log whose header is damaged or gone is reported BROKEN at entry 0
    (:func:`header_problem` says why) instead of being taken for another kind of file.
    An SQLite file (an escalation store) never is one.  ``path`` must be a regular file
    (a named pipe would block the open)."""
    with open(path, "rb") as f:
        head = f.read(_SNIFF_BYTES)
    if head.startswith(SQLITE_MAGIC):
        return False
    body = head.removeprefix(_BOM)
    first, _, rest = body.partition(b"\n")
    second = rest.partition(b"\n")[0]
    return (_LOG_TAG in first or _entry_like(first) or _entry_like(second)
            or _starts_with_segment(body) or _starts_with_segment(rest))


def _entry_like(line: bytes) -> bool:
    """A line holding a /1 or /2 entry (``k``, ``n`` and ``prev``), even an edited one."""
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError):
        return all(key in line for key in (b'"k":', b'"n":', b'"prev":'))
    return isinstance(obj, dict) and all(key in obj for key in ("k", "n", "prev"))


def _starts_with_segment(data: bytes) -> bool:
    """True when ``data`` starts with a /3 or /4 segment record, ``u32 len | entries | u32
    len | seal`` (agents/runtime/segment_log.py): a binary log whose header line is gone.
    Checked here, on the layout alone, so this module needs no import of that one."""
    spos = 4 + int.from_bytes(data[:4], "big")
    if len(data) < 8 or spos + 4 > len(data):
        return False
    slen = int.from_bytes(data[spos:spos + 4], "big")
    if slen == 0 or spos + 4 + slen > len(data):
        return False
    try:
        seal = msgpack.unpackb(data[spos + 4:spos + 4 + slen], raw=False)
    except (ValueError, TypeError, msgpack.UnpackException):
        return False
    return isinstance(seal, dict) and seal.get("k") == "seal"


def header_problem(path: str | Path) -> str | None:
    """What is wrong with a decision log's header (entry 0), of any format, or None when it
    reads as one.  Without a header there is no key to check the log against, so ``audit
    verify`` reports this at entry 0 rather than checks of ``--key`` or ``--certs``."""
    with open(path, "rb") as f:
        return _header_problem(f.read(_SNIFF_BYTES))


def _header_problem(data: bytes) -> str | None:
    """:func:`header_problem` on the file's first bytes."""
    if data.startswith(_BOM):
        return ("the header is damaged: the file starts with a UTF-8 byte-order mark (bytes "
                "EF BB BF, added by an editor); remove those 3 bytes")
    line = _first_line(data)
    if not line:
        return "the file is empty"
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError):
        obj = None
    if isinstance(obj, dict) and obj.get("k") == "header":
        fmt = obj.get("format")
        if fmt in FORMATS or fmt in SEGMENTED:
            return None
        return (f"the header is damaged: it names the format {repr(fmt)[:60]}, not one this "
                f"autocell reads ({', '.join((*FORMATS, *SEGMENTED))}): the header was "
                "edited, or a newer autocell wrote the log")
    if isinstance(obj, dict) and "n" in obj and "prev" in obj:
        return (f"the header is missing: the first line is entry {repr(obj['n'])[:20]}, not "
                "the header (the header line was removed)")
    if _starts_with_segment(data):
        return ("the header is missing: the file starts with a segment record (a binary "
                "log whose header line was removed)")
    if _LOG_TAG in line:
        return "the header is damaged: line 1 is not a JSON header object (edited)"
    return "the header is missing or damaged: line 1 is not a decision-log header"


def _first_line(data: bytes) -> bytes:
    """The first line that is not blank (the verifier skips blank lines, as readers do)."""
    rest = data
    while rest:
        line, _, rest = rest.partition(b"\n")
        if line.strip():
            return line
    return b""


def _is_segmented(path: str | Path) -> bool:
    """True when the header names format /3 or /4 (binary segments after a JSON header
    line)."""
    try:
        with open(path, "rb") as f:
            first = f.readline(1 << 20)
    except OSError:
        return False
    return first.startswith(b"{") and any(f'"format":"{f}"'.encode() in first
                                          for f in SEGMENTED)


def read_text_lines(path: str | Path) -> Iterator[dict[str, Any]]:
    """A /1 or /2 log's lines as dicts (no checking: :func:`verify_text_log` does that).  A
    last line without its newline was cut by a killed process and is left out.  An
    ``envelope`` input comes out decoded, as the ``message`` input it stands for (readers see
    one form).  Readers of any format call agents/runtime/flight_log.py ``read_lines``."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.endswith("\n"):
                return
            if line.strip():
                obj = json.loads(line)
                if obj.get("k") == "in" and obj["in"].get("kind") == "envelope":
                    obj["in"] = envelope_input(obj["in"], obj["agent"], obj["env"][0])
                yield obj


def envelope_input(d: Mapping[str, Any], agent_id: str, sender: str) -> dict[str, Any]:
    """The ``message`` form of an ``envelope`` input: its payload (the msgpack map of
    docs/PROTOCOL.md §5, base64) decoded; ``to`` is the entry's agent (a multicast's
    payload names every addressee).  The signature (``sig``, over ``autocell/1`` + the
    sender + the payload) is left to who holds the sender's certificate."""
    try:
        payload = base64.b64decode(d["payload"])
    except (ValueError, TypeError, KeyError) as exc:    # an edited log
        raise ValueError(f"an envelope of {agent_id} does not decode ({exc})") from exc
    return envelope_message(payload, agent_id, sender)


def envelope_message(payload: bytes, agent_id: str, sender: str) -> dict[str, Any]:
    """The ``message`` form of an envelope's payload bytes (:func:`envelope_input`)."""
    try:
        h = msgpack.unpackb(payload, raw=False)
        body = msgspec.to_builtins(body_from_wire(h["type"], h["body"]))
    except (Rejected, ValueError, TypeError, KeyError) as exc:    # an edited log
        raise ValueError(f"an envelope of {agent_id} does not decode ({exc})") from exc
    if h["type"] == PlantEvent.TYPE:         # the plant input the host made of it
        return {"kind": "plant", "event": body["event"], "resource": body["resource"],
                "task": body["task"], "data": body["data"]}
    return {"kind": "message", "type": h["type"], "from": sender, "to": agent_id,
            "conv": h["conv"], "id": bytes(h["id"]).hex(), "epoch": h["epoch"],
            "seq": h["seq"], "ts": h["ts"], "body": body}


@dataclass(frozen=True)
class LogReport:
    ok: bool
    entries: int                    # lines verified before the first bad one
    bad_entry: int | None = None    # the first bad line's number
    problem: str = ""
    head: str = GENESIS
    segments: int = 0
    host: str = ""
    key_id: str = ""
    cut: bool = False
    """Not ``ok`` only because the log stops early: everything before ``bad_entry`` verifies
    and the rest is missing or unsigned (no final seal, a cut last line) — what a process
    killed mid-run, or one still recording, leaves.  An edit, a removal, a reorder or a
    forged seal is never ``cut`` (ADR 104)."""


def verify_text_log(path: str | Path, trusted_key: bytes | None = None) -> LogReport:
    """Check a /1 or /2 decision log: the chain line by line, each seal's signature, a final
    seal (any format: agents/runtime/flight_log.py ``verify_log``).  A log of any format
    whose header is damaged or missing comes here too (its header no longer names a binary
    format) and is reported at entry 0 (:func:`header_problem`).

    ``trusted_key``: the recording host's public key as known from elsewhere (its
    certificate, a report); without it the header's key is taken as given, which proves
    integrity since the header, not authorship."""
    with open(path, "rb") as f:
        data = f.read()
    return _verify_text(data, trusted_key)


def _verify_text(data: bytes, trusted_key: bytes | None, crlf_checked: bool = False
                 ) -> LogReport:
    """:func:`verify_text_log` on the file's bytes."""
    problem = _header_problem(data)
    if problem is not None:
        return LogReport(False, 0, 0, problem)
    rows, cut = _rows(data)
    whole = rows[:-1] if cut else rows
    if not crlf_checked and whole and all(line.endswith(b"\r") for _, line in whole):
        return _crlf_report(data, trusted_key)
    chain = _Chain(rows, cut, trusted_key)
    for i, (ln, line) in enumerate(rows):
        report = chain.check(i, ln, line)
        if report is not None:
            return report
    return chain.end()


def _rows(data: bytes) -> tuple[list[tuple[int, bytes]], bool]:
    """The lines that are not blank, each with its number as an editor counts (from 1), and
    whether the last lacks its newline (what a process killed mid-write leaves)."""
    parts = data.split(b"\n")
    rows = [(ln, line) for ln, line in enumerate(parts, 1) if line.strip()]
    return rows, bool(parts[-1].strip())


def _crlf_report(data: bytes, trusted_key: bytes | None) -> LogReport:
    """Every line ends in CR LF: the file was converted (an editor, a Windows copy), which
    changes every line's hash.  Say so, and whether the log verifies converted back, rather
    than call the header edited."""
    back = _verify_text(data.replace(b"\r\n", b"\n"), trusted_key, crlf_checked=True)
    then = ("converted back to LF it verifies" if back.ok else
            f"converted back to LF it is still BROKEN at entry {back.bad_entry}: "
            f"{back.problem}")
    return LogReport(False, 0, 0, "the file has CRLF line endings, not the LF the log is "
                     f"written with (converted by an editor or a copy); {then}")


def _json_or_none(line: bytes) -> Any:
    try:
        return json.loads(line)
    except (ValueError, RecursionError):
        return None


class _Chain:
    """A /1 or /2 log checked line by line (:func:`verify_text_log`): the head of the chain,
    the open segment, the header's key; :meth:`check` names the first bad entry."""

    def __init__(self, rows: list[tuple[int, bytes]], cut: bool,
                 trusted_key: bytes | None) -> None:
        self.rows, self.cut, self.trusted_key = rows, cut, trusted_key
        self.prev, self.fmt = GENESIS, FORMAT
        self.segments, self.first, self.host, self.key_id = 0, 1, "", ""
        self.verifier: Verifier | None = None
        self.final_at: int | None = None

    def fail(self, at: int, problem: str) -> LogReport:
        return LogReport(False, at, at, problem, self.prev, self.segments, self.host,
                         self.key_id)

    def check(self, i: int, ln: int, line: bytes) -> LogReport | None:
        """Entry ``i`` (line ``ln``): None when it chains, else the report."""
        if self.final_at is not None:
            return self.fail(i, self._after_final(i, ln, line))
        if line.endswith(b"\r"):
            return self.fail(i, f"entry {i} (line {ln}) ends with a carriage return: its line "
                             f"ending was changed to CRLF (entry {i} edited)")
        obj = _json_or_none(line)
        if not isinstance(obj, dict):
            return self._not_an_entry(i, ln, obj)
        n = obj.get("n")
        if n != i:
            return self.fail(i, self._misnumbered(i, n, obj))
        if obj.get("prev") != self.prev:
            return self._broken_link(i, line, obj)
        report = self._header(obj) if i == 0 else (
            self._seal(i, obj) if obj.get("k") == "seal" else None)
        if report is not None:
            return report
        self.prev = hashlib.sha256(line).hexdigest()
        return None

    def _after_final(self, i: int, ln: int, line: bytes) -> str:
        """What follows the final seal was appended after the log was closed."""
        obj = _json_or_none(line)
        if isinstance(obj, dict) and obj.get("n") == i and obj.get("prev") == self.prev:
            return (f"entry {i} (line {ln}) and any after it follow the final seal (entry "
                    f"{self.final_at}): entries were appended after the log was closed")
        return (f"line {ln} follows the final seal (entry {self.final_at}) and is not an entry "
                "of this log: bytes were appended after the log was closed")

    def _not_an_entry(self, i: int, ln: int, obj: Any) -> LogReport:
        """A line that is not a JSON object: the last one, without its newline, was cut by a
        killed writer or a truncation (not edited); any other was edited."""
        if self.cut and i == len(self.rows) - 1 and obj is None:
            unsigned = (f": entries {self.first}..{i - 1} before it follow the last seal "
                        "unsigned" if self.first < i else "")
            return replace(self.fail(self.first, f"the log was cut at entry {i} (line {ln}, "
                                     "the last, is incomplete: no newline at its end; the "
                                     "recording process was killed mid-write, or the file "
                                     f"was truncated){unsigned}"), cut=True)
        what = "not JSON" if obj is None else "not a JSON object"
        return self.fail(i, f"entry {i} (line {ln}) is {what} (edited)")

    def _misnumbered(self, i: int, n: Any, obj: dict[str, Any]) -> str:
        """An entry under another number: removed or reordered entries, unless it chains
        where it is, when only its number was edited."""
        if obj.get("prev") == self.prev:
            return f"entry {i} holds the number {n!r} though it chains there (entry {i} edited)"
        return f"entry {n!r} where entry {i} belongs (entries removed or reordered)"

    def _broken_link(self, i: int, line: bytes, obj: dict[str, Any]) -> LogReport:
        """The link into entry ``i`` is broken: entry ``i - 1`` or entry ``i`` was edited.
        When the link out of ``i`` is broken too, ``i`` is (an edit of its ``prev`` leaves
        ``i - 1`` intact); when it holds, ``i - 1`` is."""
        if i == 0:
            return self.fail(0, "the header's prev is not 64 zeros (edited)")
        if self._edited_itself(i, line, obj):
            return self.fail(i, f"entry {i} does not chain either way: its prev is not entry "
                             f"{i - 1}'s hash, nor its hash the prev entry {i + 1} holds "
                             f"(entry {i} edited)")
        bad = i - 1
        return self.fail(bad, f"entry {bad} does not hash to the prev that entry {i} holds "
                         f"(entry {bad} edited)")

    def _edited_itself(self, i: int, line: bytes, obj: dict[str, Any]) -> bool:
        """Whether the link out of entry ``i`` is broken too.  The last entry has none: a
        seal there tells, as it signs the chain up to itself — when it verifies over entry
        ``i - 1`` as the file holds it, that entry is intact."""
        if i + 1 < len(self.rows):
            nxt = _json_or_none(self.rows[i + 1][1])
            return (isinstance(nxt, dict)
                    and nxt.get("prev") != hashlib.sha256(line).hexdigest())
        return obj.get("k") == "seal" and self._seal_signs(i, obj)

    def _header(self, obj: dict[str, Any]) -> LogReport | None:
        """Entry 0: the format, the sealing key (and ``trusted_key``'s match)."""
        fmt = obj.get("format")
        if obj.get("k") != "header" or fmt not in FORMATS:
            return self.fail(0, f"no {FORMAT} header")
        self.fmt = str(fmt)
        try:
            key = bytes.fromhex(obj["key"])
            self.verifier = Verifier(key)
        except (KeyError, ValueError, TypeError):
            return self.fail(0, "the header's key is not an Ed25519 public key")
        self.host, self.key_id = str(obj.get("host", "")), fingerprint(key)
        if self.trusted_key is not None and key != self.trusted_key:
            return self.fail(0, f"the header's key {self.key_id} is not the trusted key "
                             f"{fingerprint(self.trusted_key)}")
        return None

    def _seal_signs(self, i: int, obj: dict[str, Any]) -> bool:
        """Whether seal entry ``i`` signs its segment (entries ``first``..``i - 1``) and the
        chain up to it as the file holds them."""
        assert self.verifier is not None
        try:
            sig = bytes.fromhex(str(obj.get("sig", "")))
        except ValueError:
            sig = b""
        signed = seal_bytes(obj.get("segment", 0), self.first, i - 1, bool(obj.get("final")),
                            self.prev, self.fmt)
        return (obj.get("first") == self.first and obj.get("last") == i - 1
                and self.verifier.verify(signed, sig))

    def _seal(self, i: int, obj: dict[str, Any]) -> LogReport | None:
        """A seal: its signature, then the next segment opens (none after a final one)."""
        if not self._seal_signs(i, obj):
            return self.fail(i, f"seal {i} (segment {obj.get('segment')}, entries "
                             f"{self.first}..{i - 1}): the signature does not verify (forged "
                             "or the seal edited)")
        self.segments += 1
        self.first = i + 1
        if obj.get("final"):
            self.final_at = i
        return None

    def end(self) -> LogReport:
        """Every line chained: the log must end with its final seal."""
        count = len(self.rows)
        if self.final_at is not None:
            return LogReport(True, count, None, "", self.prev, self.segments, self.host,
                             self.key_id)
        return replace(self.fail(self.first,
                                 f"entries {self.first}..{count - 1} follow the last seal "
                                 "unsigned (the recording process stopped before closing the "
                                 "log, or the final seal was removed)" if self.first < count
                                 else "the log has no final seal (the recording process "
                                 "stopped before closing it, or lines were cut from the end)"),
                       cut=True)
