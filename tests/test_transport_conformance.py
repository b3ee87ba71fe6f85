"""One conformance suite, run against every transport (and the Bus on top of each).

Each test is a plain sync test running one ``asyncio.run`` scenario; the
``kit`` fixture is parametrized over the transports, so a new transport only
needs a new ``Kit`` to be held to the same contract:

* ``start`` returns the concrete endpoint (wildcards resolved);
* frames arrive intact and, per sender, in order; several senders all arrive;
* ``send`` never blocks: to a saturated peer it returns False and counts
  ``dropped``, and everything it *accepted* is delivered;
* ``prepare`` runs on every message before the handler sees it;
* ``close`` is idempotent and stops delivery.

How "saturated" is produced: a receiver that is started but not draining,
because the test keeps the event loop busy with a synchronous send loop.
Both transports agree on that state.  (A ZeroMQ peer endpoint where nothing
is bound is *not* a full queue: with ZMQ_IMMEDIATE off, PUSH queues up to
its HWM for a peer that may still come and only then refuses, while the
in-memory twin treats an unbound endpoint as a silent sink — so the suite
does not use absent peers to mean "full".)  Over TCP the kernel's socket
buffers sit between the two HWMs, so the ZeroMQ case uses large frames to
fill them within a bounded number of sends.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections import Counter
from typing import Any, Awaitable, Callable

import pytest
import zmq

from agents.protocol.messages import CallForProposals, Heartbeat, Message, Proposal, Refusal
from agents.runtime.bus import Bus
from agents.runtime.transport import (
    CurveConfig,
    MemoryNetwork,
    MemoryTransport,
    Transport,
    ZmqTransport,
)
from security.errors import ConfigurationError
from security.replay import MemoryReplayStore, ReplayGuard

pytestmark = pytest.mark.timeout(60)


class Kit:
    """Makes transports of one kind for one test."""

    name = ""
    big_frame = 1024            # bytes per frame when saturating a peer
    max_attempts = 100

    def transport(self, *, hwm: int = 10_000) -> Transport:
        raise NotImplementedError

    def check_endpoint(self, endpoint: str) -> None:
        raise NotImplementedError


class ZmqKit(Kit):
    name = "zmq"
    big_frame = 256 * 1024      # fills loopback TCP buffers in a few dozen sends
    max_attempts = 2_000

    def transport(self, *, hwm: int = 10_000) -> Transport:
        return ZmqTransport("tcp://127.0.0.1:*", hwm=hwm)

    def check_endpoint(self, endpoint: str) -> None:
        m = re.fullmatch(r"tcp://127\.0\.0\.1:(\d+)", endpoint)
        assert m and 0 < int(m.group(1)) < 65536, endpoint


class ZmqThreadKit(ZmqKit):
    """ZeroMQ with ``prepare`` on a thread of its own (small chunks to exercise the hand-off)."""

    name = "zmq-thread"

    def transport(self, *, hwm: int = 10_000) -> Transport:
        return ZmqTransport("tcp://127.0.0.1:*", hwm=hwm, prepare_thread=True, chunk=3,
                            in_flight=2)


class MemoryKit(Kit):
    name = "memory"

    def __init__(self) -> None:
        self.network = MemoryNetwork()

    def transport(self, *, hwm: int = 10_000) -> Transport:
        return MemoryTransport(self.network, hwm=hwm)

    def check_endpoint(self, endpoint: str) -> None:
        assert endpoint.startswith("mem://") and "*" not in endpoint
        assert self.network.endpoints[endpoint] is not None


KITS: dict[str, Callable[[], Kit]] = {"zmq": ZmqKit, "zmq-thread": ZmqThreadKit,
                                      "memory": MemoryKit}


@pytest.fixture(params=sorted(KITS))
def kit(request: pytest.FixtureRequest) -> Kit:
    return KITS[request.param]()


def run(scenario: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(asyncio.wait_for(scenario(), timeout=45))


async def until(pred: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    """Let the loop run until ``pred()`` holds (or the bounded wait ends)."""
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.005)
    return True


async def settle(seconds: float = 0.2) -> None:
    """Give stray deliveries a chance to show up before asserting they did not."""
    await asyncio.sleep(seconds)


class Sink:
    def __init__(self) -> None:
        self.items: list[Any] = []

    def __call__(self, item: Any) -> None:
        self.items.append(item)


def payload(sender: int, i: int) -> list[bytes]:
    """Distinctive frames: ids, an empty frame, every byte value, varying sizes."""
    return [b"s%d" % sender, i.to_bytes(4, "big"), b"", bytes(range(256)) * (i % 5),
            os.urandom(i % 97)]


# -- the transport contract -----------------------------------------------------------------

def test_start_returns_a_concrete_endpoint(kit: Kit) -> None:
    async def scenario() -> None:
        a, b = kit.transport(), kit.transport()
        ep_a = await a.start(Sink())
        ep_b = await b.start(Sink())
        kit.check_endpoint(ep_a)
        kit.check_endpoint(ep_b)
        assert ep_a == a.endpoint and ep_b == b.endpoint and ep_a != ep_b
        await a.close()
        await b.close()
    run(scenario)


def test_frames_arrive_intact_and_in_order(kit: Kit) -> None:
    async def scenario() -> None:
        rx, tx = kit.transport(), kit.transport()
        sink = Sink()
        ep = await rx.start(sink)
        await tx.start(Sink())
        sent = [payload(1, i) for i in range(2_000)]
        for frames in sent:
            assert tx.send(ep, frames)
        assert await until(lambda: len(sink.items) >= len(sent))
        await settle(0.05)
        assert [[bytes(f) for f in item] for item in sink.items] == sent
        assert tx.dropped == 0
        await tx.close()
        await rx.close()
    run(scenario)


def test_two_senders_all_arrive_in_order_per_sender(kit: Kit) -> None:
    async def scenario() -> None:
        rx, tx1, tx2 = kit.transport(), kit.transport(), kit.transport()
        sink = Sink()
        ep = await rx.start(sink)
        for i in range(1_000):          # interleaved sends from two transports
            assert tx1.send(ep, payload(1, i))
            assert tx2.send(ep, payload(2, i))
            if i % 100 == 0:
                await asyncio.sleep(0)
        assert await until(lambda: len(sink.items) >= 2_000)
        await settle(0.05)
        assert len(sink.items) == 2_000
        for who in (b"s1", b"s2"):
            got = [int.from_bytes(item[1], "big") for item in sink.items if item[0] == who]
            assert got == list(range(1_000))
        for t in (tx1, tx2, rx):
            await t.close()
    run(scenario)


def test_send_to_a_saturated_peer_returns_false_and_counts_dropped(kit: Kit) -> None:
    async def scenario() -> None:
        rx, tx = kit.transport(hwm=2), kit.transport(hwm=2)
        sink = Sink()
        ep = await rx.start(sink)
        big = os.urandom(kit.big_frame)
        accepted = refused = 0
        for i in range(kit.max_attempts):   # synchronous: rx gets no chance to drain
            if tx.send(ep, [i.to_bytes(4, "big"), big]):
                accepted += 1
            else:
                refused += 1
                break
        assert refused == 1, f"{kit.name}: {accepted} sends never filled the peer"
        assert tx.dropped == 1
        assert accepted >= 1
        # everything that was accepted is delivered once the receiver drains
        assert await until(lambda: len(sink.items) >= accepted)
        await settle()
        assert [int.from_bytes(item[0], "big") for item in sink.items] == list(range(accepted))
        assert all(bytes(item[1]) == big for item in sink.items)
        assert tx.send(ep, [b"after", b"drain"])      # room again
        assert await until(lambda: len(sink.items) == accepted + 1)
        assert tx.dropped == 1
        await tx.close()
        await rx.close()
    run(scenario)


def test_prepare_runs_before_the_handler(kit: Kit) -> None:
    async def scenario() -> None:
        calls: list[int] = []

        def prepare(frames: list[bytes]) -> Any:
            calls.append(len(frames))
            return ("prepared", [bytes(f) for f in frames])

        rx, tx = kit.transport(), kit.transport()
        sink = Sink()
        ep = await rx.start(sink, prepare)
        for i in range(50):
            tx.send(ep, [b"a", i.to_bytes(2, "big")])
        assert await until(lambda: len(sink.items) >= 50)
        assert sink.items == [("prepared", [b"a", i.to_bytes(2, "big")]) for i in range(50)]
        assert calls == [2] * 50
        await tx.close()
        await rx.close()
    run(scenario)


def test_close_is_idempotent_and_stops_delivery(kit: Kit) -> None:
    async def scenario() -> None:
        rx, tx = kit.transport(), kit.transport()
        sink = Sink()
        ep = await rx.start(sink)
        for i in range(10):
            tx.send(ep, [b"before", bytes([i])])
        assert await until(lambda: len(sink.items) == 10)
        await rx.close()
        await rx.close()                       # idempotent
        for i in range(10):
            tx.send(ep, [b"after", bytes([i])])
        await settle(0.3)
        assert len(sink.items) == 10 and all(item[0] == b"before" for item in sink.items)
        assert rx.send(ep, [b"x"]) is False    # a closed transport sends nothing
        await tx.close()
        await tx.close()
        assert tx.send(ep, [b"x"]) is False
        never_started = kit.transport()
        await never_started.close()
        await never_started.close()
    run(scenario)


def test_close_drops_what_was_queued_but_not_yet_handled(kit: Kit) -> None:
    async def scenario() -> None:
        rx, tx = kit.transport(), kit.transport()
        sink = Sink()
        ep = await rx.start(sink)
        await tx.start(Sink())
        for i in range(20):
            tx.send(ep, [bytes([i])])
        await rx.close()                     # no await in between: nothing handled yet
        await settle(0.3)
        assert sink.items == []
        await tx.close()
    run(scenario)


# -- the bus on each transport ----------------------------------------------------------------

CFP = CallForProposals(task="o1/0", order="o1", kind="operation", capability="mill", op="mill",
                       quantity=1, earliest_start_at=0.0, due_at=1.0, reply_by_at=1.0)


def proposal(i: int) -> Proposal:
    return Proposal(task=f"o1/{i}", kind="operation", start_at=float(i), finish_at=i + 1.0,
                    hold_until_at=i + 0.5, cost={"queue_s": float(i)})


class Pair:
    """Bus ``a`` hosting machine ``m1``, bus ``b`` hosting order ``o1``, routed to each other."""

    def __init__(self, kit: Kit, cell: Any, handler: Callable[[Message], None] | None = None,
                 store: MemoryReplayStore | None = None) -> None:
        self.cell = cell
        self.got: list[Message] = []
        self.handler = handler or self.got.append
        self.a = Bus(kit.transport(), cell.opener(ReplayGuard()), clock=time.time,
                     random_bytes=os.urandom)
        self.b = Bus(kit.transport(), cell.opener(ReplayGuard(store, flush_every=1 << 20, now=time.time())),
                     clock=time.time, random_bytes=os.urandom)
        self.a.add_identity("m1", cell.keys["m1"], epoch=1)
        self.b.add_identity("o1", cell.keys["o1"], epoch=1)

    async def start(self) -> None:
        ep_a = await self.a.start(lambda msg: None)
        self.ep_b = await self.b.start(self.handler)
        self.a.set_route("o1", self.ep_b)
        self.b.set_route("m1", ep_a)

    def raw(self, frames: list[bytes]) -> None:
        assert self.a.transport.send(self.ep_b, frames)

    async def close(self) -> None:
        await self.a.close()
        await self.b.close()


def test_bus_delivers_verified_messages(kit: Kit, cell: Any) -> None:
    async def scenario() -> None:
        pair = Pair(kit, cell)
        await pair.start()
        for i in range(200):
            assert pair.a.send("m1", "o1", proposal(i), conv=f"c{i}")
        assert await until(lambda: len(pair.got) >= 200)
        await settle(0.05)
        assert [m.body for m in pair.got] == [proposal(i) for i in range(200)]
        assert [m.seq for m in pair.got] == list(range(1, 201))
        assert {(m.sender, m.to, m.epoch) for m in pair.got} == {("m1", "o1", 1)}
        assert pair.got[7].conv == "c7"
        assert pair.a.stats.sent == Counter({"propose": 200})
        assert pair.b.stats.received == Counter({"propose": 200})
        assert not pair.b.stats.rejected and pair.b.stats.handler_errors == 0
        # and back: the order answers on the same pair
        got_a: list[Message] = []
        pair.a._handler = got_a.append
        assert pair.b.send("o1", "m1", CFP)
        assert await until(lambda: len(got_a) == 1)
        assert got_a[0].body == CFP and got_a[0].sender == "o1"
        await pair.close()
    run(scenario)


def test_bus_counts_rejects_by_reason_and_keeps_delivering(kit: Kit, cell: Any) -> None:
    async def scenario() -> None:
        pair = Pair(kit, cell)
        await pair.start()
        assert pair.a.send("m1", "o1", Heartbeat())
        assert await until(lambda: len(pair.got) == 1)
        honest = cell.sealer("m1", epoch=1)
        honest.seq = 1000
        replayable = honest.seal("o1", Heartbeat(), time.time())
        pair.raw(replayable)
        assert await until(lambda: len(pair.got) == 2)

        forger = cell.sealer("m1", key_of="m2", epoch=1)          # m2's valid key, claims m1
        for _ in range(3):
            pair.raw(forger.seal("o1", Heartbeat(), time.time()))
        pair.a.set_route("nobody", pair.ep_b)
        assert pair.a.send("m1", "nobody", Heartbeat())             # misdirected
        pair.raw([b"junk"])                                         # malformed: 1 frame
        pair.raw([b"m1", b"\xc1", b"\0" * 64])                      # bad signature
        pair.raw([b"\xff", b"x", b"y"])                             # malformed: sender
        pair.raw([b"ghost", b"\x80", b"\0" * 64])                   # unknown sender
        pair.raw(replayable)                                        # replayed
        assert pair.a.send("m1", "o1", CFP)                         # forbidden: machine cfp
        pair.raw(cell.sign("m1", b"\x93\x01\x02\x03"))              # malformed: validly signed
        for i in range(20):                                         # honest traffic goes on
            assert pair.a.send("m1", "o1", proposal(i))
        want = Counter({"bad_signature": 4, "malformed": 3, "misdirected": 1,
                        "unknown_sender": 1, "replayed": 1, "forbidden": 1})
        assert await until(lambda: len(pair.got) >= 22 and pair.b.stats.rejected == want), (
            pair.b.stats.rejected)
        await settle(0.05)
        assert pair.b.stats.rejected == want
        assert [m.body for m in pair.got[2:]] == [proposal(i) for i in range(20)]
        assert pair.b.stats.received == Counter({"heartbeat": 2, "propose": 20})
        assert "internal_error" not in pair.b.stats.rejected
        await pair.close()
    run(scenario)


def test_a_raising_handler_does_not_kill_the_bus(kit: Kit, cell: Any) -> None:
    async def scenario() -> None:
        got: list[Message] = []

        def handler(msg: Message) -> None:
            if isinstance(msg.body, Refusal) and msg.body.reason == "boom":
                raise RuntimeError("handler bug")
            got.append(msg)

        pair = Pair(kit, cell, handler)
        await pair.start()
        pair.a.send("m1", "o1", Refusal(task="t", reason="boom"))
        pair.a.send("m1", "o1", Refusal(task="t", reason="ok"))
        pair.a.send("m1", "o1", Refusal(task="t", reason="boom"))
        pair.a.send("m1", "o1", Heartbeat())
        assert await until(lambda: len(got) == 2 and pair.b.stats.handler_errors == 2)
        assert [m.type for m in got] == ["refuse", "heartbeat"]
        assert pair.b.stats.received == Counter({"refuse": 3, "heartbeat": 1})
        await pair.close()
    run(scenario)


def test_bus_send_without_route_is_counted_not_raised(kit: Kit, cell: Any) -> None:
    async def scenario() -> None:
        pair = Pair(kit, cell)
        await pair.start()
        assert pair.a.send("m1", "unknown-agent", Heartbeat()) is False
        assert pair.a.stats.dropped == 1 and not pair.a.stats.sent
        await pair.close()
    run(scenario)


def test_bus_close_flushes_the_replay_guard(kit: Kit, cell: Any) -> None:
    async def scenario() -> None:
        store = MemoryReplayStore()
        pair = Pair(kit, cell, store=store)
        await pair.start()
        for i in range(5):
            pair.a.send("m1", "o1", proposal(i))
        assert await until(lambda: len(pair.got) == 5)
        assert store.data == {"m1": (1, 1)}      # only first contact written so far
        await pair.close()
        assert store.data == {"m1": (1, 5)}
    run(scenario)


# -- CurveZMQ ---------------------------------------------------------------------------------

def test_curve_without_authorized_clients_refuses_to_start() -> None:
    public, secret = CurveConfig.generate()
    transport = ZmqTransport(curve=CurveConfig(public, secret))

    async def scenario() -> None:
        with pytest.raises(ConfigurationError, match="no client keys"):
            await transport.start(Sink())
        assert transport.endpoint == ""        # nothing bound
        await transport.close()
    run(scenario)


@pytest.mark.timeout(60)
def test_curve_admits_only_authorized_clients() -> None:
    server_pub, server_sec = CurveConfig.generate()
    good_pub, good_sec = CurveConfig.generate()
    bad_pub, bad_sec = CurveConfig.generate()

    async def scenario() -> None:
        sink = Sink()
        server = ZmqTransport(curve=CurveConfig(server_pub, server_sec, authorized_clients=(good_pub,)))
        ep = await server.start(sink)
        ctx = zmq.Context()
        try:
            good = ZmqTransport(curve=CurveConfig(good_pub, good_sec, server_keys={ep: server_pub}),
                                context=ctx, linger_ms=0)
            bad = ZmqTransport(curve=CurveConfig(bad_pub, bad_sec, server_keys={ep: server_pub}),
                               context=ctx, linger_ms=0)
            plain = ZmqTransport(context=ctx, linger_ms=0)        # no CurveZMQ at all
            for i in range(5):
                bad.send(ep, [b"bad", bytes([i])])
                plain.send(ep, [b"plain", bytes([i])])
            for i in range(5):
                assert good.send(ep, [b"good", bytes([i])])
            assert await until(lambda: sum(item[0] == b"good" for item in sink.items) == 5)
            await settle(0.5)
            assert [bytes(item[0]) for item in sink.items] == [b"good"] * 5
            with pytest.raises(ConfigurationError, match="no server key"):
                good.send("tcp://127.0.0.1:1", [b"x"])
            for t in (good, bad, plain):
                await t.close()
        finally:
            await server.close()
            ctx.destroy(linger=0)
    run(scenario)
