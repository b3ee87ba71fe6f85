"""The bus: signed envelopes over a transport, for the agents of one host.

The bus seals outgoing bodies with the sending agent's key, routes them to
the endpoint of the host running the addressee, and opens inbound frames
with the :class:`~agents.protocol.envelope.Opener`.  Whatever a peer sends, the
bus never raises into the event loop: a rejected envelope is counted under
its reason and logged (see :class:`RejectLog`), and only verified messages
addressed to a local agent reach the handler.

:meth:`Bus.send_many` is the multicast path (docs/PROTOCOL.md §6.1): one
call for proposals to many bidders is sealed once, with every addressee in
``to``, and the same frames go once to each distinct endpoint.  A receiving
bus hands the handler one :class:`Message` per local addressee (each with
``to`` = that agent), so agents never see the difference; an envelope
naming no local agent is ``misdirected``.  Counters stay per addressee:
``sent``, ``received`` and ``dropped`` mean the same for both paths.

:attr:`Bus.wire`, when set (the flight recorder's tap,
agents/runtime/recorder.py ``WireTap``), is left the signed bytes of each
accepted envelope — payload and signature, already received and immutable —
with the messages made from it, just before they reach the handler: a
decision log then records what the sender signed instead of encoding the
decoded message again.  It is an attribute store, not a call (ADR 79).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from agents.protocol.envelope import MAX_ADDRESSEES, Authenticated, Opener, Sealer
from agents.protocol.messages import Body, Message
from security.crypto import SigningKey
from security.errors import Misdirected, Rejected

from .transport import Transport

if TYPE_CHECKING:
    from .recorder import WireTap

log = logging.getLogger("autocell.bus")

MessageHandler = Callable[[Message], None]


@dataclass
class BusStats:
    """Counters a metrics exporter reads; plain ints, cheap on the hot path."""

    sent: Counter[str] = field(default_factory=Counter)          # by message type
    received: Counter[str] = field(default_factory=Counter)      # verified, by type
    rejected: Counter[str] = field(default_factory=Counter)      # by reason
    dropped: int = 0                                              # send-side HWM / no route
    handler_errors: int = 0
    multicast_sent: int = 0          # envelopes sealed with more than one addressee
    multicast_received: int = 0      # such envelopes accepted (one per host, not per agent)


@dataclass(frozen=True)
class Sealed:
    """Envelopes sealed for sending: each with the addressee count per endpoint."""

    type: str
    envelopes: list[tuple[list[bytes], dict[str, int]]]


class RejectLog:
    """Counts every rejection; logs each (reason, sender) pair once, then sparingly.

    A forger can send thousands of envelopes a second; a line for each would
    bury the log.  The first rejection of a (reason, claimed sender) pair is
    logged with its full context, later ones when their count reaches a power
    of two, with the running count.

    :attr:`listener`, if set, is called with every rejection (after it is
    counted), on the event loop: the host's reject-burst detector
    (agents/escalation/burst.py).  It must be cheap; if it raises, the error
    is logged and counted in ``handler_errors``, never passed to the bus.
    """

    def __init__(self, stats: BusStats, logger: logging.Logger = log) -> None:
        self.stats = stats
        self.log = logger
        self._seen: Counter[tuple[str, str | None]] = Counter()
        self.listener: Callable[[Rejected], None] | None = None

    def record(self, exc: Rejected) -> None:
        self.stats.rejected[exc.reason] += 1
        key = (exc.reason, exc.sender)
        self._seen[key] += 1
        n = self._seen[key]
        if n & (n - 1) == 0:
            self.log.warning("rejected message", extra={"ctx": {**exc.context(), "count": n}})
        listener = self.listener
        if listener is not None:
            try:
                listener(exc)
            except Exception:
                self.stats.handler_errors += 1
                self.log.exception("reject listener failed")


def _misdirected(to: tuple[str, ...]) -> str:
    """Why an envelope is not for this host, naming (a bounded part of) its addressees."""
    names = ", ".join(repr(a[:64]) for a in to[:3]) + (", …" if len(to) > 3 else "")
    if len(to) == 1:
        return f"addressed to {names}, not an agent of this host"
    return f"addressed to {len(to)} agents ({names}), none of them an agent of this host"


class Bus:
    """Seal, route, send; receive, open, dispatch."""

    def __init__(self, transport: Transport, opener: Opener, *, clock: Callable[[], float],
                 random_bytes: Callable[[int], bytes]) -> None:
        self.transport = transport
        self.opener = opener
        self.clock = clock
        self.random_bytes = random_bytes
        self.stats = BusStats()
        self.rejects = RejectLog(self.stats)
        self.routes: dict[str, str] = {}       # agent id -> endpoint
        self._sealers: dict[str, Sealer] = {}
        self._handler: MessageHandler | None = None
        self.skew_s: dict[str, float] = {}     # sender -> clock offset (fault injection)
        # the process's own rule on top of the access table (a host admits plant events
        # from the plant only): a refusal is counted and logged like any rejection
        self.admit: Callable[[Message], Rejected | None] | None = None
        self.wire: WireTap | None = None       # the flight recorder's (module docstring)

    @property
    def local_agents(self) -> set[str]:
        return set(self._sealers)

    def sealed(self, agent: str) -> int:
        """Envelopes ``agent`` has sealed on this bus (its ``seq``; a multicast is one)."""
        return self._sealers[agent].seq

    def add_identity(self, agent: str, key: SigningKey, *, epoch: int) -> None:
        """Let ``agent`` send from this host (and receive here)."""
        self._sealers[agent] = Sealer(agent, key, epoch=epoch, random_bytes=self.random_bytes)

    def set_route(self, agent: str, endpoint: str) -> None:
        self.routes[agent] = endpoint

    async def start(self, handler: MessageHandler) -> str:
        self._handler = handler
        endpoint = await self.transport.start(self._on_item, self._authenticate)
        for agent in self._sealers:
            self.routes.setdefault(agent, endpoint)
        return endpoint

    def send(self, sender: str, to: str, body: Body, conv: str = "") -> bool:
        """Seal ``body`` as ``sender`` and send it to ``to``'s host; False if not sent."""
        endpoint = self.routes.get(to)
        if endpoint is None:
            self.stats.dropped += 1
            log.warning("no route to agent", extra={"ctx": {"to": to, "type": body.TYPE}})
            return False
        frames = self._sealers[sender].seal(to, body, self.clock() + self.skew_s.get(sender, 0.0),
                                            conv)
        if not self.transport.send(endpoint, frames):
            self.stats.dropped += 1
            return False
        self.stats.sent[body.TYPE] += 1
        return True

    def send_many(self, sender: str, tos: Iterable[str], body: Body, conv: str = "") -> int:
        """Seal ``body`` once for all of ``tos`` and send it to each of their hosts.

        Duplicates in ``tos`` are sent once; an addressee without a route is
        dropped (and counted) like :meth:`send`'s.  One addressee left is an
        ordinary unicast envelope; more than ``MAX_ADDRESSEES`` are split into
        several envelopes.  The frames go once to each distinct endpoint; a
        refused send (peer saturated) counts every addressee behind that
        endpoint as dropped.  Returns how many addressees it was queued for.
        """
        return self.ship(self.seal(sender, tos, body, conv))

    def seal(self, sender: str, tos: Iterable[str], body: Body, conv: str = "") -> Sealed:
        """The envelopes of :meth:`send_many`, sealed and routed but not sent: :meth:`ship`
        sends them (again, for a duplicate the network injects: the very same frames)."""
        routed: list[str] = []
        endpoint_of: dict[str, str] = {}
        routes = self.routes
        for to in tos:
            if to in endpoint_of:
                continue
            endpoint = routes.get(to)
            if endpoint is None:
                self.stats.dropped += 1
                log.warning("no route to agent", extra={"ctx": {"to": to, "type": body.TYPE}})
                continue
            endpoint_of[to] = endpoint
            routed.append(to)
        sealer = self._sealers[sender]
        stamp = self.clock() + self.skew_s.get(sender, 0.0)
        out: list[tuple[list[bytes], dict[str, int]]] = []
        if len(routed) == 1:
            out.append((sealer.seal(routed[0], body, stamp, conv), {endpoint_of[routed[0]]: 1}))
        for i in range(0, len(routed) if len(routed) > 1 else 0, MAX_ADDRESSEES):
            chunk = routed[i:i + MAX_ADDRESSEES]
            per_endpoint: dict[str, int] = {}
            for to in chunk:
                endpoint = endpoint_of[to]
                per_endpoint[endpoint] = per_endpoint.get(endpoint, 0) + 1
            out.append((sealer.seal(chunk, body, stamp, conv), per_endpoint))
        return Sealed(body.TYPE, out)

    def ship(self, sealed: Sealed) -> int:
        """Send sealed envelopes to their endpoints; how many addressees they were queued for."""
        queued = 0
        for frames, per_endpoint in sealed.envelopes:
            if sum(per_endpoint.values()) > 1:
                self.stats.multicast_sent += 1
            for endpoint, n in per_endpoint.items():
                if self.transport.send(endpoint, frames):
                    queued += n
                else:
                    self.stats.dropped += n
        if queued:
            self.stats.sent[sealed.type] += queued
        return queued

    def _authenticate(self, frames: list[bytes]
                      ) -> Authenticated | tuple[Authenticated, bytes] | Exception:
        """Stage 1 (the transport's ``prepare`` hook): never raises.  While :attr:`wire` is
        set, the envelope comes with its signature frame (a plain pair: no Python call)."""
        try:
            auth = self.opener.authenticate(frames, self.clock())
        except Exception as exc:   # Rejected, or a bug: both handled on the loop
            return exc
        return auth if self.wire is None else (auth, bytes(frames[2]))

    def _on_item(self, item: Authenticated | tuple[Authenticated, bytes] | Exception) -> None:
        """Stage 2, on the event loop: decode, check, dispatch; never raises."""
        signature = None
        try:
            if isinstance(item, Exception):
                raise item
            if isinstance(item, Authenticated):
                auth = item
            else:
                auth, signature = item
            opened = self.opener.decode_envelope(auth, self.clock())
            msgs = opened.for_local(self._sealers)
            if not msgs:
                raise Misdirected(_misdirected(opened.to), sender=opened.message.sender,
                                  msg_type=opened.message.type)
        except Rejected as exc:
            self.rejects.record(exc)
            return
        except Exception:   # a bug in our decoder; the host must survive it
            self.stats.rejected["internal_error"] += 1
            log.exception("envelope decoding failed unexpectedly")
            return
        admit = self.admit
        if admit is not None:
            kept = []
            for msg in msgs:
                refused = admit(msg)
                if refused is None:
                    kept.append(msg)
                else:
                    self.rejects.record(refused)
            if not kept:
                return
            msgs = kept
        if len(opened.to) > 1:
            self.stats.multicast_received += 1
        self.stats.received[opened.message.type] += len(msgs)
        wire = self.wire
        if wire is not None and signature is not None:
            wire.signed = (msgs, auth.payload, signature)
        handler = self._handler
        assert handler is not None
        for msg in msgs:
            try:
                handler(msg)
            except Exception:
                self.stats.handler_errors += 1
                log.exception("message handler failed", extra={"ctx": {
                    "sender": msg.sender, "to": msg.to, "type": msg.type, "conv": msg.conv}})

    async def close(self) -> None:
        if self.opener.guard is not None:
            self.opener.guard.flush()
        await self.transport.close()
