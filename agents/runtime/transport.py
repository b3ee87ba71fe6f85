"""Transports: how frames get from one host to another.

A transport moves opaque multipart frames between *endpoints* and knows
nothing of signatures or agents; the :class:`~agents.runtime.bus.Bus` does
the rest.  Two implementations pass the same conformance suite
(``tests/test_transport_conformance.py``):

* :class:`ZmqTransport` — one bound PULL socket per host for everything
  inbound, and one PUSH socket per peer endpoint outbound.  Envelopes are
  one-way signed datagrams (a reply is a new envelope to the sender's own
  endpoint), so we need neither ROUTER routing-id frames nor REQ/REP
  lock-step.  PUSH gives a per-peer high-water mark and a non-blocking send
  that *fails* when the peer is saturated — we count that as a drop instead
  of letting ZeroMQ discard silently.  Optional CurveZMQ encryption with a
  ZAP authenticator fails closed (see :class:`CurveConfig`).
* :class:`MemoryTransport` — the in-memory twin on a shared
  :class:`MemoryNetwork`, same semantics, no sockets.

The inbound socket is driven by the asyncio loop through ZeroMQ's edge-
triggered file descriptor: on readiness we drain up to ``batch`` messages,
then yield to the loop and continue, so a flood can't starve timers.  (A
receive thread verifying signatures off the loop was measured and lost:
the GIL hand-off per message cost more than the overlap gained on 2 cores;
see docs/decisions.md.)
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from agents.protocol.envelope import Limits
from security.errors import ConfigurationError

log = logging.getLogger("autocell.transport")

#: The largest frame a ZeroMQ socket accepts (``ZMQ_MAXMSGSIZE``): the envelope's payload
#: limit (PROTOCOL.md §3, §5), the largest of its three frames.  libzmq reads a frame's
#: length before its bytes and drops the connection of a peer announcing more, so a 1 GiB
#: frame costs the receiver nothing (it once took a host to 2.1 GiB of RSS).
MAX_FRAME_BYTES = Limits().max_body_bytes

Prepare = Callable[[list[bytes]], Any]
"""Runs on the receive side, possibly on a transport thread: pure, thread-safe, never raises."""
ItemHandler = Callable[[Any], None]
"""Runs on the event loop with whatever ``prepare`` returned (the frames if none)."""


def _identity(frames: list[bytes]) -> Any:
    return frames


class Transport(ABC):
    """Moves multipart frames between endpoints.  Start, send, close."""

    endpoint: str
    dropped: int
    on_idle: Callable[[], None] | None = None
    """Called on the loop when the transport has drained what arrived and is about to wait:
    the moment for work that should not delay a message (the flight recorder's seal,
    ADR 95).  ZeroMQ's transport calls it when its inbound socket is empty."""

    @abstractmethod
    async def start(self, on_item: ItemHandler, prepare: Prepare = _identity) -> str:
        """Begin receiving; returns the bound endpoint (wildcards resolved).

        Each inbound message is passed through ``prepare`` (off the loop where
        the transport has a receive thread) and the result to ``on_item`` on
        the loop, in arrival order.
        """

    @abstractmethod
    def send(self, endpoint: str, frames: list[bytes]) -> bool:
        """Queue ``frames`` to ``endpoint`` without blocking; False (and counted) if full."""

    @abstractmethod
    async def close(self) -> None:
        """Stop receiving, release sockets; idempotent."""


# -- ZeroMQ ---------------------------------------------------------------------------

@dataclass(frozen=True)
class CurveConfig:
    """CurveZMQ settings: this host's key pair and the client keys it admits.

    ``authorized_clients`` are Z85 public keys; a connecting peer whose key is
    not listed is refused by the ZAP authenticator.  Fail closed: the server
    socket refuses to bind unless the authenticator is running.
    """

    public_key: bytes
    secret_key: bytes
    authorized_clients: tuple[bytes, ...] = ()
    server_keys: dict[str, bytes] = field(default_factory=dict)   # endpoint -> server public key

    @staticmethod
    def generate() -> tuple[bytes, bytes]:
        return zmq.curve_keypair()


class ZmqTransport(Transport):
    """PULL inbound, PUSH per peer, driven by the asyncio loop."""

    def __init__(self, bind: str = "tcp://127.0.0.1:*", *, hwm: int = 10_000,
                 batch: int = 256, linger_ms: int = 200, curve: CurveConfig | None = None,
                 context: zmq.Context | None = None, prepare_thread: bool = False,
                 chunk: int = 32, in_flight: int = 4,
                 max_frame_bytes: int = MAX_FRAME_BYTES) -> None:
        self.bind = bind
        self.max_frame_bytes = max_frame_bytes
        self.prepare_thread = prepare_thread
        self.chunk = chunk
        self.in_flight = in_flight
        self.endpoint = ""
        self.hwm = hwm
        self.batch = batch
        self.linger_ms = linger_ms
        self.curve = curve
        self.dropped = 0
        # CurveZMQ needs a ZAP authenticator, and ZeroMQ allows one per context:
        # an encrypted transport gets a context of its own.
        self._own_ctx = curve is not None and context is None
        self._ctx = zmq.Context() if self._own_ctx else (context or zmq.Context.instance())
        self._pull: zmq.Socket | None = None
        self._push: dict[str, zmq.Socket] = {}
        self._auth: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_item: ItemHandler | None = None
        self._prepare: Prepare = _identity
        self._fd: Any = None
        self._scheduled = False
        self._closed = False
        self._work: queue.SimpleQueue[list[list[bytes]] | None] = queue.SimpleQueue()
        self._worker: threading.Thread | None = None
        self._outstanding = 0

    async def start(self, on_item: ItemHandler, prepare: Prepare = _identity) -> str:
        self._loop = asyncio.get_running_loop()
        self._on_item = on_item
        self._prepare = prepare
        pull = self._ctx.socket(zmq.PULL)
        pull.setsockopt(zmq.RCVHWM, self.hwm)
        pull.setsockopt(zmq.LINGER, 0)
        pull.setsockopt(zmq.MAXMSGSIZE, self.max_frame_bytes)
        if self.curve is not None:
            try:
                self._start_authenticator()
            except BaseException:
                pull.close(0)
                raise
            pull.curve_secretkey = self.curve.secret_key
            pull.curve_publickey = self.curve.public_key
            pull.curve_server = True
            pull.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)
            pull.zap_domain = b"autocell"
        try:
            pull.bind(self.bind)
        except zmq.ZMQError as exc:
            pull.close(0)
            raise OSError(f"cannot bind {self.bind}: {exc}") from exc
        self.endpoint = pull.getsockopt_string(zmq.LAST_ENDPOINT)
        self._pull = pull
        self._fd = pull.getsockopt(zmq.FD)
        if self.prepare_thread:
            self._worker = threading.Thread(target=self._prepare_loop, daemon=True,
                                            name=f"autocell-prepare {self.endpoint}")
            self._worker.start()
        self._loop.add_reader(self._fd, self._on_readable)
        self._on_readable()   # edge-triggered: anything already queued must be drained
        return self.endpoint

    def _start_authenticator(self) -> None:
        from zmq.auth.thread import ThreadAuthenticator

        assert self.curve is not None
        if not self.curve.authorized_clients:
            raise ConfigurationError(
                "CurveZMQ is on but no client keys are authorised; refusing to bind an "
                "endpoint nobody could (or everybody would) connect to")
        auth = ThreadAuthenticator(self._ctx)
        auth.start()
        if not auth.is_alive():
            raise ConfigurationError("the ZAP authenticator did not start; refusing to bind")
        auth.configure_curve_callback(domain="autocell", credentials_provider=_KeyList(
            set(self.curve.authorized_clients)))
        self._auth = auth

    def _on_readable(self) -> None:
        """Drain up to ``batch`` messages, then let other callbacks run and continue."""
        self._scheduled = False
        pull = self._pull
        if pull is None or self._closed:
            return
        if self._worker is not None:
            self._drain_to_worker(pull)
            return
        handler, prepare = self._on_item, self._prepare
        assert handler is not None
        recv = pull.recv_multipart
        for _ in range(self.batch):
            try:
                frames = recv(zmq.NOBLOCK)
            except zmq.Again:
                idle = self.on_idle
                if idle is not None:
                    idle()
                return
            except zmq.ZMQError as exc:
                if not self._closed:
                    log.error("receive failed on %s: %s", self.endpoint, exc)
                return
            handler(prepare(frames))
        if not self._scheduled and self._loop is not None:
            self._scheduled = True
            self._loop.call_soon(self._on_readable)

    # -- prepare thread: chunks of frames out, chunks of prepared items back ----------

    def _drain_to_worker(self, pull: zmq.Socket) -> None:
        """Hand chunks of raw frames to the prepare thread, at most ``in_flight`` at once.

        When the limit is reached we stop reading; :meth:`_deliver` resumes.
        Messages left in the socket keep ZeroMQ's high-water mark honest, so
        back-pressure still reaches the sender.
        """
        recv, chunk_size = pull.recv_multipart, self.chunk
        while self._outstanding < self.in_flight:
            chunk: list[list[bytes]] = []
            try:
                while len(chunk) < chunk_size:
                    chunk.append(recv(zmq.NOBLOCK))
            except zmq.Again:
                pass
            except zmq.ZMQError as exc:
                if not self._closed:
                    log.error("receive failed on %s: %s", self.endpoint, exc)
            if not chunk:
                return
            self._outstanding += 1
            self._work.put(chunk)
            if len(chunk) < chunk_size:
                return

    def _prepare_loop(self) -> None:
        """The prepare thread: ``prepare`` each frame set (it releases the GIL to verify)."""
        prepare, work, loop = self._prepare, self._work, self._loop
        assert loop is not None
        while (chunk := work.get()) is not None:
            items = [prepare(frames) for frames in chunk]
            try:
                loop.call_soon_threadsafe(self._deliver, items)
            except RuntimeError:   # the loop is closed: we are shutting down
                return

    def _deliver(self, items: list[Any]) -> None:
        self._outstanding -= 1
        handler = self._on_item
        if handler is None or self._closed:
            return
        for item in items:
            handler(item)
        if not self._scheduled:
            self._scheduled = True
            assert self._loop is not None
            self._loop.call_soon(self._on_readable)

    def _socket_for(self, endpoint: str) -> zmq.Socket:
        sock = self._push.get(endpoint)
        if sock is None:
            sock = self._ctx.socket(zmq.PUSH)
            sock.setsockopt(zmq.SNDHWM, self.hwm)
            sock.setsockopt(zmq.LINGER, self.linger_ms)
            # A PUSH receives nothing, but no socket of autocell goes without the limit.
            sock.setsockopt(zmq.MAXMSGSIZE, self.max_frame_bytes)
            if self.curve is not None:
                server_key = self.curve.server_keys.get(endpoint)
                if server_key is None:
                    sock.close(0)
                    raise ConfigurationError(
                        f"CurveZMQ is on but no server key is known for {endpoint}")
                sock.curve_secretkey = self.curve.secret_key
                sock.curve_publickey = self.curve.public_key
                sock.curve_serverkey = server_key
            sock.connect(endpoint)
            self._push[endpoint] = sock
        return sock

    def send(self, endpoint: str, frames: list[bytes]) -> bool:
        if self._closed:
            return False
        try:
            self._socket_for(endpoint).send_multipart(frames, zmq.NOBLOCK)
        except zmq.Again:
            self.dropped += 1
            return False
        return True

    def disconnect(self, endpoint: str) -> None:
        """Forget the outbound socket to ``endpoint`` (peer moved or died)."""
        sock = self._push.pop(endpoint, None)
        if sock is not None:
            sock.close(0)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._pull is not None:
            if self._loop is not None and self._fd is not None:
                try:
                    self._loop.remove_reader(self._fd)
                except (ValueError, OSError):
                    pass
            self._pull.close(0)
            self._pull = None
        if self._worker is not None:
            self._work.put(None)
            await asyncio.to_thread(self._worker.join, 5.0)
            self._worker = None
        for sock in self._push.values():
            sock.close(self.linger_ms)
        self._push.clear()
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
        if self._own_ctx:
            self._ctx.term()


class _KeyList:
    """ZAP credentials provider: admit exactly the listed client public keys."""

    def __init__(self, keys: set[bytes]) -> None:
        self.keys = keys

    def callback(self, domain: str, key: bytes) -> bool:
        return key in self.keys


def load_curve_keys(path: Path) -> tuple[bytes, bytes]:
    """Read a pyzmq-format CurveZMQ key pair file (``zmq.auth.load_certificate``)."""
    import zmq.auth

    public, secret = zmq.auth.load_certificate(str(path))
    if secret is None:
        raise ConfigurationError(f"{path} holds no CurveZMQ secret key")
    return public, secret


# -- in-memory twin ---------------------------------------------------------------------

class MemoryNetwork:
    """A registry of in-memory endpoints, shared by the transports of one test."""

    def __init__(self) -> None:
        self.endpoints: dict[str, MemoryTransport] = {}
        self._next = 0

    def allocate(self, bind: str) -> str:
        if bind.endswith("*"):
            self._next += 1
            return bind[:-1] + str(self._next)
        return bind


class MemoryTransport(Transport):
    """Same contract as :class:`ZmqTransport`, delivering via the event loop."""

    def __init__(self, network: MemoryNetwork, bind: str = "mem://host-*", *,
                 hwm: int = 10_000) -> None:
        self.network = network
        self.bind = bind
        self.hwm = hwm
        self.endpoint = ""
        self.dropped = 0
        self._queue: deque[list[bytes]] = deque()
        self._on_item: ItemHandler | None = None
        self._prepare: Prepare = _identity
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scheduled = False
        self._closed = False
        self._work: queue.SimpleQueue[list[list[bytes]] | None] = queue.SimpleQueue()
        self._worker: threading.Thread | None = None
        self._outstanding = 0

    async def start(self, on_item: ItemHandler, prepare: Prepare = _identity) -> str:
        self._loop = asyncio.get_running_loop()
        self._on_item = on_item
        self._prepare = prepare
        self.endpoint = self.network.allocate(self.bind)
        if self.endpoint in self.network.endpoints:
            raise OSError(f"address already in use: {self.endpoint}")
        self.network.endpoints[self.endpoint] = self
        return self.endpoint

    def send(self, endpoint: str, frames: list[bytes]) -> bool:
        if self._closed:
            return False
        dest = self.network.endpoints.get(endpoint)
        if dest is None:   # like ZeroMQ: connecting to nobody queues nowhere visible
            return True
        if len(dest._queue) >= dest.hwm:
            self.dropped += 1
            return False
        dest._queue.append([bytes(f) for f in frames])
        dest._wake()
        return True

    def _wake(self) -> None:
        if not self._scheduled and self._loop is not None and not self._closed:
            self._scheduled = True
            self._loop.call_soon(self._drain)

    def _drain(self) -> None:
        self._scheduled = False
        handler, prepare = self._on_item, self._prepare
        while self._queue and not self._closed and handler is not None:
            handler(prepare(self._queue.popleft()))

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.network.endpoints.pop(self.endpoint, None)
        self._queue.clear()
