"""``autocell bench scale``: 10, 100, 1000 agents in one host; cost per task against bidders.

Theory of operation
-------------------
One **scale host** is what :class:`agents.runtime.host.Host` is, cut down
to the negotiation: one asyncio loop, one :class:`~agents.runtime.bus.Bus`
over one :class:`~agents.runtime.transport.ZmqTransport`, and every agent
of the host registered on that bus as its own signing identity.  Like the
real host, **the agents of a host share the host's one inbound socket**
(a bound PULL on tcp loopback): the bus seals with the sending agent's key
and routes by addressee, so a message between two agents of the same host
still goes sealed → PUSH → tcp → PULL → verify → decode → dispatch.  A
socket per agent would cost a file descriptor and a reader per agent and
buy nothing: the signature, not the socket, says who is speaking.

Keys and certificates for all agents are made in memory
(:func:`security.keystore.ephemeral_cell`, seeded), not written as files.

Two figures per host size ``n`` (agents = ``n // 10`` orders, the rest
machines):

* **start-up** — from "keys and certificates ready" to "every agent has
  received and verified one signed message": build the agents, register
  ``n`` identities on the bus, bind the socket, then one signed heartbeat
  from the host's own identity to each agent.  ``bind_s`` is the part up
  to the bound socket.  Target: 1000 agents ready ≤ 5 s.
* **cost per task against bidders ``B``** — one order calls for proposals
  from ``B`` machines; every machine answers with a signed proposal; when
  all ``B`` are in, the order awards the earliest finish (``accept``) and
  rejects the others; the winner confirms.  That is ``3B + 1`` signed
  messages per task (``B`` cfp, ``B`` propose, 1 accept, ``B - 1`` reject,
  1 confirm).  Each point runs its tasks twice: one at a time, timed from
  the first cfp to the confirmation (the **latency**, p50 and max), then
  with 8 tasks open at once over the host's orders, total wall time over
  tasks, and the host process's CPU time over tasks (the **cost per
  task**: the loop never waits for a wake-up, and CPU time does not count
  the time other processes on a shared machine hold the cores, which wall
  time does).  A least-squares line of the CPU cost per task against ``B``
  (and, beside it, of the wall time) gives the slope (µs per bidder),
  intercept and R².  "linear" means R² ≥ 0.95 and no super-linear term:
  the cost per message at the largest ``B`` is at most 1.25× that at the
  smallest (a ``B²`` term would make every message dearer as ``B`` grows).
  The share of a quadratic fit's square term at the largest ``B`` is
  reported too, but not judged: with 4–8 noisy points it bends to noise.

The bench agents speak the real protocol messages (`cfp`, `propose`,
`accept`, `reject`, `confirm`) but answer at once instead of waiting for
the reply deadline and bidding round of :class:`agents.order.OrderAgent`
and :class:`agents.resource.ResourceAgent`: those are wall-clock timers,
and a benchmark of them would measure the configured timers, not the cost.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agents.protocol.envelope import Opener
from agents.protocol.messages import (
    Award,
    Body,
    CallForProposals,
    Confirmation,
    Heartbeat,
    Message,
    Proposal,
    Rejection,
)
from agents.runtime.bus import Bus
from agents.runtime.transport import ZmqTransport
from security.keystore import EphemeralCell, ephemeral_cell
from security.replay import ReplayGuard

AGENTS = (10, 100, 1000)
BIDDERS = (1, 2, 5, 10, 20, 50, 100, 200)
HOST_ID = "scale-host"
LINEAR_R2 = 0.95
IN_FLIGHT = 8
PER_MESSAGE_GROWTH = 1.25


def agent_ids(n: int) -> dict[str, str]:
    """``n`` agents: ``n // 10`` (at least one) orders, the rest machines; id -> role."""
    if n < 2:
        raise ValueError("a scale host needs at least 2 agents (an order and a machine)")
    orders = max(1, n // 10)
    roles = {f"o-{i:04d}": "order" for i in range(orders)}
    roles.update({f"m-{i:04d}": "machine" for i in range(n - orders)})
    return roles


# -- the bench agents (sans-io: a message in, (to, body) pairs out) ---------------------

Out = list[tuple[str, Body]]


class Bidder:
    """A machine that bids at once: a slot after its own (deterministic) queue."""

    def __init__(self, agent_id: str, index: int) -> None:
        self.id = agent_id
        self.queue_s = float(index % 97)
        self.probed = False

    def on_message(self, msg: Message) -> Out:
        body = msg.body
        if isinstance(body, CallForProposals):
            start = body.earliest_start_at + self.queue_s
            return [(msg.sender, Proposal(
                task=body.task, kind="operation", start_at=start, finish_at=start + 30.0,
                hold_until_at=body.reply_by_at + 1.0,
                cost={"queue_s": self.queue_s, "setup_s": 0.0, "processing_s": 30.0,
                      "transport_s": 0.0, "energy_kwh": 0.05}))]
        if isinstance(body, Award):
            return [(msg.sender, Confirmation(body.task, body.award_epoch, True))]
        if isinstance(body, Heartbeat):
            self.probed = True
        return []


@dataclass
class _Call:
    expected: int
    done: asyncio.Future[None]
    proposals: list[tuple[str, Proposal]] = field(default_factory=list)


@dataclass
class Caller:
    """An order that calls, collects every proposal, awards the earliest, waits for confirm.

    It may have several calls open at once (the throughput phase)."""

    id: str
    probed: bool = False
    calls: dict[str, _Call] = field(default_factory=dict)
    epoch: int = 0

    def call(self, task: str, bidders: list[str], now: float,
             done: asyncio.Future[None]) -> Out:
        self.calls[task] = _Call(len(bidders), done)
        cfp = CallForProposals(task=task, order=self.id, kind="operation", capability="mill",
                               op="op", quantity=1, earliest_start_at=now, due_at=now + 3600.0,
                               reply_by_at=now + 1.0)
        return [(b, cfp) for b in bidders]

    def on_message(self, msg: Message) -> Out:
        body = msg.body
        if isinstance(body, Heartbeat):
            self.probed = True
            return []
        call = self.calls.get(getattr(body, "task", ""))
        if call is None:
            return []
        if isinstance(body, Proposal):
            call.proposals.append((msg.sender, body))
            if len(call.proposals) < call.expected:
                return []
            winner, best = min(call.proposals, key=lambda p: (p[1].finish_at, p[0]))
            self.epoch += 1
            return [(winner, Award(body.task, self.epoch, 30.0, best.start_at))] + [
                (s, Rejection(body.task)) for s, _ in call.proposals if s != winner]
        if isinstance(body, Confirmation):
            del self.calls[body.task]
            if not call.done.done():
                call.done.set_result(None)
        return []


# -- the host ------------------------------------------------------------------------------

class ScaleHost:
    """``n`` bench agents on one bus, one inbound socket, one loop."""

    def __init__(self, cell: EphemeralCell, roles: dict[str, str]) -> None:
        self.cell = cell
        self.roles = roles
        self.agents: dict[str, Bidder | Caller] = {}
        self.bus: Bus | None = None
        self.all_probed: asyncio.Future[None] | None = None
        self._unprobed = 0

    async def start(self) -> tuple[float, float]:
        """Build, register, bind, probe; (bind_s, ready_s) from the call."""
        t0 = time.perf_counter()
        machines = 0
        for agent, role in self.roles.items():
            if role == "order":
                self.agents[agent] = Caller(agent)
            else:
                self.agents[agent] = Bidder(agent, machines)
                machines += 1
        bus = Bus(ZmqTransport("tcp://127.0.0.1:*", hwm=100_000),
                  Opener(self.cell.trust, ReplayGuard(flush_every=1 << 30)),
                  clock=time.time, random_bytes=os.urandom)
        epoch = int(time.time())
        for agent in self.agents:
            bus.add_identity(agent, self.cell.keys[agent], epoch=epoch)
        bus.add_identity(HOST_ID, self.cell.keys[HOST_ID], epoch=epoch)
        self.bus = bus
        self.all_probed = asyncio.get_running_loop().create_future()
        self._unprobed = len(self.agents)
        await bus.start(self._on_message)
        bind_s = time.perf_counter() - t0
        probe = Heartbeat(state="up")
        for agent in self.agents:
            if not bus.send(HOST_ID, agent, probe):
                raise RuntimeError(f"probe to {agent} not sent (high-water mark)")
        await asyncio.wait_for(self.all_probed, timeout=60.0)
        return bind_s, time.perf_counter() - t0

    def _on_message(self, msg: Message) -> None:
        agent = self.agents[msg.to]
        was = agent.probed
        out = agent.on_message(msg)
        if agent.probed and not was:
            self._unprobed -= 1
            if self._unprobed == 0 and self.all_probed is not None:
                self.all_probed.set_result(None)
        self._send(msg.to, out)

    def _send(self, sender: str, out: Out) -> None:
        assert self.bus is not None
        for to, body in out:
            if not self.bus.send(sender, to, body, conv=getattr(body, "task", "")):
                raise RuntimeError(f"{body.TYPE} to {to} not sent (high-water mark)")

    def messages(self) -> int:
        assert self.bus is not None
        return sum(self.bus.stats.received.values())

    async def task(self, caller: Caller, task: str, bidders: list[str]) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._send(caller.id, caller.call(task, bidders, time.time(), done))
        await asyncio.wait_for(done, timeout=60.0)

    async def pipelined(self, callers: list[Caller], prefix: str, bidders: list[str],
                        tasks: int, in_flight: int) -> None:
        """``tasks`` tasks, ``in_flight`` open at any time, round-robin over ``callers``."""
        queue = iter(range(tasks))

        async def worker() -> None:
            for k in queue:
                await self.task(callers[k % len(callers)], f"{prefix}/{k}", bidders)

        await asyncio.gather(*(worker() for _ in range(in_flight)))

    async def close(self) -> None:
        if self.bus is not None:
            await self.bus.close()


# -- fits ------------------------------------------------------------------------------------

def linear_fit(xs: list[float], ys: list[float]) -> dict[str, float]:
    """Least squares ``y = a + b x``: slope, intercept, R²."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    slope = sxy / sxx if sxx else 0.0
    intercept = my - slope * mx
    ss_tot = sum((y - my) ** 2 for y in ys)
    ss_res = sum((y - intercept - slope * x) ** 2 for x, y in zip(xs, ys))
    r2 = 1.0 - ss_res / ss_tot if ss_tot else 1.0
    return {"slope": slope, "intercept": intercept, "r2": r2}


def quadratic_share(xs: list[float], ys: list[float]) -> float:
    """Least squares ``y = a + b x + c x²``: the share of ``c x²`` in the fit at the largest
    x (0 when c ≤ 0 or with fewer than 4 points)."""
    import numpy as np

    if len(xs) < 4:
        return 0.0
    c, b, a = np.polyfit(np.array(xs, dtype=float), np.array(ys, dtype=float), 2)
    xm = max(xs)
    fit = a + b * xm + c * xm * xm
    if c <= 0 or fit <= 0:
        return 0.0
    return float(c * xm * xm / fit)


def growth(points: list[dict[str, Any]], key: str = "cpu_us_per_task") -> dict[str, Any]:
    xs = [float(p["bidders"]) for p in points]
    ys = [float(p[key]) for p in points]
    if len(xs) < 2:
        return {"points": len(xs), "linear": None}
    fit = linear_fit(xs, ys)
    share = quadratic_share(xs, ys)
    msgs = linear_fit(xs, [float(p["messages_per_task"]) for p in points])
    # cost per message at the largest B over the smallest: a super-linear term makes each
    # message dearer as B grows; 1.0 or below when it does not
    ratio = ((ys[-1] / float(points[-1]["messages_per_task"]))
             / (ys[0] / float(points[0]["messages_per_task"]))) if ys[0] > 0 else float("inf")
    return {"points": len(xs), "slope_us_per_bidder": round(fit["slope"], 2),
            "intercept_us": round(fit["intercept"], 1), "r2": round(fit["r2"], 4),
            "quadratic_share_at_max": round(share, 4),
            "per_message_ratio_max_min_b": round(ratio, 3),
            "linear": fit["r2"] >= LINEAR_R2 and ratio <= PER_MESSAGE_GROWTH,
            "messages_slope_per_bidder": round(msgs["slope"], 3),
            "messages_intercept": round(msgs["intercept"], 3)}


# -- the run -----------------------------------------------------------------------------------

async def _one_size(n: int, bidders: tuple[int, ...], tasks: int, seed: bytes,
                    progress: Callable[[str], None]) -> dict[str, Any]:
    roles = agent_ids(n)
    t0 = time.perf_counter()
    cell = ephemeral_cell({**roles, HOST_ID: "host"}, seed=seed + b"/%d" % n)
    keys_s = time.perf_counter() - t0
    host = ScaleHost(cell, roles)
    try:
        bind_s, ready_s = await host.start()
        progress(f"{n} agents ready in {ready_s:.3f} s (keys {keys_s:.3f} s)")
        machines = [a for a, r in roles.items() if r == "machine"]
        callers = [host.agents[a] for a, r in roles.items() if r == "order"]
        assert all(isinstance(c, Caller) for c in callers)
        caller = callers[0]
        assert isinstance(caller, Caller)
        # warm-up: every bidder gets one cfp, so no measured task pays a first use
        await host.task(caller, f"{caller.id}/warm", machines[:max(bidders, default=1)])
        points = []
        sweep = sorted({x for x in bidders if x <= len(machines)}
                       | ({len(machines)} if max(bidders) > len(machines) else set()))
        for b in sweep:
            chosen = machines[:b]
            walls = []
            for k in range(tasks):              # latency: one task at a time
                t = time.perf_counter()
                await host.task(caller, f"{caller.id}/{b}/l{k}", chosen)
                walls.append(time.perf_counter() - t)
            m0 = host.messages()
            start = time.perf_counter()         # cost: IN_FLIGHT tasks open at once
            cpu0 = time.process_time()
            await host.pipelined(callers, f"{b}/t", chosen, tasks, IN_FLIGHT)  # type: ignore[arg-type]
            cpu = time.process_time() - cpu0
            total = time.perf_counter() - start
            msgs = host.messages() - m0
            points.append({"bidders": b, "tasks": tasks,
                           "messages_per_task": round(msgs / tasks, 3),
                           "wall_us_per_task": round(total / tasks * 1e6, 1),
                           "cpu_us_per_task": round(cpu / tasks * 1e6, 1),
                           "us_per_message": round(total / msgs * 1e6, 2),
                           "cpu_us_per_message": round(cpu / msgs * 1e6, 2),
                           "latency_p50_us": round(statistics.median(walls) * 1e6, 1),
                           "latency_max_us": round(max(walls) * 1e6, 1)})
            progress(f"  {n} agents, {b} bidders: {points[-1]['wall_us_per_task']:.0f} µs/task, "
                     f"{points[-1]['messages_per_task']:g} messages/task")
        rejected = dict(host.bus.stats.rejected) if host.bus else {}
    finally:
        await host.close()
    return {"agents": n, "orders": sum(r == "order" for r in roles.values()),
            "machines": sum(r == "machine" for r in roles.values()),
            "keys_s": round(keys_s, 4), "bind_s": round(bind_s, 4),
            "ready_s": round(ready_s, 4), "per_task": points, "growth": growth(points),
            "growth_wall": growth(points, "wall_us_per_task"),
            "rejected": rejected}


def run(agents: tuple[int, ...] = AGENTS, bidders: tuple[int, ...] = BIDDERS, tasks: int = 50,
        seed: bytes = b"autocell-bench-scale",
        progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    sizes = [asyncio.run(_one_size(n, bidders, tasks, seed, progress)) for n in agents]
    largest = max(sizes, key=lambda s: s["agents"])
    return {
        "shared_inbound_socket": True,
        "cpus": os.cpu_count(), "load_average_1m": round(os.getloadavg()[0], 2),
        "sizes": sizes,
        "targets": {
            "ready_within_5_s_at_largest": largest["ready_s"] <= 5.0,
            "largest_agents": largest["agents"],
            "per_task_cost_linear_in_bidders": all(
                s["growth"]["linear"] for s in sizes if s["growth"]["linear"] is not None),
        },
    }
