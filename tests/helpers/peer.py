"""A bus peer in its own OS process, for tests/test_two_process.py.

``peer.py receive --keys DIR --agent ID[,ID...]``
    Runs a Bus on a ZmqTransport (tcp://127.0.0.1:*) hosting each ``ID``, with the
    trust store of the keys directory.  Prints ``{"endpoint": ...}`` once
    bound, then answers each ``stats`` line on stdin with one JSON line;
    exits on ``quit`` or end of stdin.

``peer.py send --keys DIR --key-of AGENT --claim ID --to RX --endpoint EP --count N --body KIND --tag TAG``
    Signs with AGENT's private key while claiming to be ID (a forger when
    they differ) and sends N bodies of KIND (``proposal`` or ``cfp``, task ``TAG/i``) to RX,
    then flushes and exits 0.  ``--to A,B --endpoints EP_A,EP_B`` with ``--multicast``
    sends each body as one multicast envelope (``Bus.send_many``) to all of them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

import zmq

from agents.protocol.envelope import Opener
from agents.protocol.messages import CallForProposals, Message, Proposal
from agents.runtime.bus import Bus
from agents.runtime.transport import ZmqTransport
from security.keystore import KeyDir
from security.replay import ReplayGuard


async def receive(args: argparse.Namespace) -> None:
    kd = KeyDir(Path(args.keys))
    bus = Bus(ZmqTransport("tcp://127.0.0.1:*"), Opener(kd.trust_store(), ReplayGuard()),
              clock=time.time, random_bytes=os.urandom)
    for agent in args.agent.split(","):
        key, _ = kd.identity(agent)
        bus.add_identity(agent, key, epoch=int(time.time()))
    got: list[list[str]] = []
    to: list[str] = []

    def handler(msg: Message) -> None:
        got.append([msg.sender, msg.type, getattr(msg.body, "task", ""), str(msg.seq)])
        to.append(msg.to)

    endpoint = await bus.start(handler)
    print(json.dumps({"endpoint": endpoint}), flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while (line := (await reader.readline()).decode().strip()) and line != "quit":
        if line == "stats":
            print(json.dumps({"received": got, "to": to, "rejected": dict(bus.stats.rejected),
                              "handler_errors": bus.stats.handler_errors,
                              "multicast_received": bus.stats.multicast_received}), flush=True)
    await bus.close()


def body(kind: str, i: int, tag: str) -> object:
    if kind == "proposal":
        return Proposal(task=f"{tag}/{i}", kind="operation", start_at=float(i),
                        finish_at=i + 1.0, hold_until_at=i + 0.5)
    return CallForProposals(task=f"{tag}/{i}", order="o", kind="operation", capability="c", op="op",
                            quantity=1, earliest_start_at=0.0, due_at=1.0, reply_by_at=1.0)


async def send(args: argparse.Namespace) -> None:
    kd = KeyDir(Path(args.keys))
    key, _ = kd.identity(args.key_of)
    bus = Bus(ZmqTransport("tcp://127.0.0.1:*", linger_ms=10_000),
              Opener(kd.trust_store(), ReplayGuard()), clock=time.time, random_bytes=os.urandom)
    bus.add_identity(args.claim, key, epoch=int(time.time()))
    tos, endpoints = args.to.split(","), args.endpoint.split(",")
    for to, endpoint in zip(tos, endpoints, strict=True):
        bus.set_route(to, endpoint)
    for i in range(args.count):
        if args.multicast:
            if bus.send_many(args.claim, tos, body(args.body, i, args.tag), conv=args.tag) != len(tos):
                raise SystemExit(f"multicast {i} was dropped")
        elif not bus.send(args.claim, tos[0], body(args.body, i, args.tag), conv=args.tag):
            raise SystemExit(f"send {i} was dropped")
    await bus.close()


def main() -> None:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="mode", required=True)
    r = sub.add_parser("receive")
    r.add_argument("--keys", required=True)
    r.add_argument("--agent", required=True)
    s = sub.add_parser("send")
    for name in ("--keys", "--key-of", "--claim", "--to", "--endpoint", "--tag"):
        s.add_argument(name, required=True)
    s.add_argument("--count", type=int, required=True)
    s.add_argument("--body", choices=["proposal", "cfp"], required=True)
    s.add_argument("--multicast", action="store_true")
    args = p.parse_args()
    asyncio.run(receive(args) if args.mode == "receive" else send(args))
    zmq.Context.instance().term()    # waits (up to linger) until queued envelopes are out


if __name__ == "__main__":
    main()
