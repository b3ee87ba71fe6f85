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
from dataclasses import dataclass
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
                        "strategy": getattr(strategy, "name", type(strategy).__name__),
                        "candidates": [
                            {"resource": s, "score": strategy.score(cfp, p),
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


def verify_text_log(path: str | Path, trusted_key: bytes | None = None) -> LogReport:
    """Check a /1 or /2 decision log: the chain line by line, each seal's signature, a final
    seal (any format: agents/runtime/flight_log.py ``verify_log``).

    ``trusted_key``: the recording host's public key as known from elsewhere (its
    certificate, a report); without it the header's key is taken as given, which proves
    integrity since the header, not authorship."""
    with open(path, "rb") as f:
        raw = [line.rstrip(b"\n") for line in f if line.strip()]
    if not raw:
        return LogReport(False, 0, 0, "the file is empty")
    prev, verifier, segments, first, host, key_id = GENESIS, None, 0, 1, "", ""
    fmt = FORMAT
    for i, line in enumerate(raw):
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError):
            return LogReport(False, i, i, f"line {i} is not JSON (edited)", prev, segments,
                             host, key_id)
        n = obj.get("n") if isinstance(obj, dict) else None
        if n != i:
            return LogReport(False, i, i, f"entry {n!r} where entry {i} belongs (entries "
                             "removed or reordered)", prev, segments, host, key_id)
        if obj.get("prev") != prev and i == 0:
            return LogReport(False, 0, 0, "the header's prev is not 64 zeros (edited)")
        if obj.get("prev") != prev:
            bad = i - 1
            return LogReport(False, bad, bad, f"entry {bad} does not hash to the prev that "
                             f"entry {i} holds (entry {bad} edited)", prev, segments, host,
                             key_id)
        kind = obj.get("k")
        if i == 0:
            fmt = obj.get("format")
            if kind != "header" or fmt not in FORMATS:
                return LogReport(False, 0, 0, f"no {FORMAT} header")
            try:
                key = bytes.fromhex(obj["key"])
                verifier = Verifier(key)
            except (KeyError, ValueError, TypeError):
                return LogReport(False, 0, 0, "the header's key is not an Ed25519 public key")
            host, key_id = str(obj.get("host", "")), fingerprint(key)
            if trusted_key is not None and key != trusted_key:
                return LogReport(False, 0, 0, f"the header's key {key_id} is not the trusted "
                                 f"key {fingerprint(trusted_key)}", prev, 0, host, key_id)
        elif kind == "seal":
            assert verifier is not None
            try:
                sig = bytes.fromhex(str(obj.get("sig", "")))
            except ValueError:
                sig = b""
            signed = seal_bytes(obj.get("segment", 0), first, i - 1, bool(obj.get("final")),
                                prev, fmt)
            if (obj.get("first") != first or obj.get("last") != i - 1
                    or not verifier.verify(signed, sig)):
                return LogReport(False, i, i, f"seal {i} (segment {obj.get('segment')}, "
                                 f"entries {first}..{i - 1}): the signature does not verify "
                                 "(forged or the seal edited)", prev, segments, host, key_id)
            segments += 1
            first = i + 1
        prev = hashlib.sha256(line).hexdigest()
    last = json.loads(raw[-1])      # parsed above: an object numbered len(raw) - 1
    if last.get("k") != "seal" or not last.get("final"):
        return LogReport(False, first, first,
                         f"entries {first}..{len(raw) - 1} follow the last seal unsigned "
                         "(the recording process stopped before closing the log, or the "
                         "final seal was removed)" if first < len(raw) else
                         "the log has no final seal (the recording process stopped before "
                         "closing it, or lines were cut from the end)",
                         prev, segments, host, key_id)
    return LogReport(True, len(raw), None, "", prev, segments, host, key_id)
