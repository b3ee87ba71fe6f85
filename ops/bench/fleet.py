"""``autocell bench plant --backend vda5050``: moves through real VDA 5050 vehicles and broker.

What is measured: the gateway (:class:`~sim_bridge.gateway.PlantGateway`
with the :class:`~sim_bridge.vda5050.backend.Vda5050Backend`, in this
process) commands ``--robots`` vda-5050-lib virtual vehicles
(``tests/vda5050``, installed by ``tests/setup.sh``) on a private Mosquitto
on loopback, every vehicle one move per round between two stations 10 m
apart (time lapse 100, so a move takes a fraction of a second).  Per move:

* **accept**: from the ``move`` command to the state in which the vehicle
  names the order (the gateway's ``vda_order_accepted``), wall clock;
* **arrive**: from the timestamp of the vehicle's final state (drop
  FINISHED, no nodes left) to the ``arrived`` event the gateway emits —
  two clocks of one machine, millisecond resolution.

Messages per second through the broker are the gateway's MQTT messages
received plus sent over the measured rounds.
"""

from __future__ import annotations

import asyncio
import datetime
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agents.base import PlantEventIn
from agents.cell.equipment import Vda5050Vehicle
from agents.cell.routes import Edge, Node, Route
from agents.protocol.actions import Command
from sim_bridge.gateway import PlantGateway
from sim_bridge.vda5050.backend import Vda5050Backend, VehicleSpec

from .plant import READY_BOUND_S, ROOT, _percentile

VEHICLES = ROOT / "tests" / "vda5050" / "vehicles.mjs"
PLACES = {"A": (0.0, 0.0), "B": (10.0, 0.0)}
LAPSE = 100.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_file(path: Path, proc: subprocess.Popen[bytes], what: str, log: Path) -> None:
    deadline = time.monotonic() + READY_BOUND_S
    while not path.exists():
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}: "
                               f"{log.read_text(errors='replace')[-2000:]}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not get ready")
        time.sleep(0.05)


def _route(a: str, b: str) -> Route:
    na, nb = (Node(p, *PLACES[p], None, "bench") for p in (a, b))
    if a == b:
        return Route((na,), ())
    return Route((na, nb), (Edge(a, b, 10.0),))


def _ms_since(stamp: str) -> float:
    when = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return (datetime.datetime.now(datetime.UTC) - when).total_seconds() * 1000


async def _measure(url: str, serials: list[str], rounds: int,
                   progress: Callable[[str], None]) -> dict[str, Any]:
    sent_at: dict[str, float] = {}
    accept: list[float] = []
    arrive: list[float] = []
    pending: set[str] = set()
    done = asyncio.Event()
    problems: list[str] = []

    def record(ev: str, **f: Any) -> None:
        if ev == "vda_order_accepted" and f["task"] in sent_at:
            accept.append((time.perf_counter() - sent_at[f["task"]]) * 1000)
        elif ev == "arrived" and f.get("vehicle_at"):
            arrive.append(_ms_since(f["vehicle_at"]))

    def emit(e: PlantEventIn) -> None:
        if e.event == "arrived":
            pending.discard(e.task)
        elif e.event in ("command_refused", "fault"):
            problems.append(f"{e.event} {e.resource} {e.data}")
            pending.discard(e.task)
        if not pending:
            done.set()

    settings = Vda5050Vehicle(broker=url, insecure=True, map="bench", grace_s=60.0)
    gateway = PlantGateway([], serials, emit=emit, record=record)
    backend = Vda5050Backend([VehicleSpec(s, settings, 2.0) for s in serials], events=gateway,
                             record=record, locations=PLACES, route=_route,
                             default_map="bench", secrets={}, base_dir=ROOT)
    gateway.attach(backend)
    await backend.start(first_connect_s=READY_BOUND_S)
    if not all(backend.query_state(s) for s in serials):
        raise RuntimeError(f"the vehicles are not usable: {backend.status()}")
    t0 = time.perf_counter()
    broker = next(iter(backend.brokers.values()))
    msgs0 = broker.received + broker.sent
    for r in range(rounds + 1):               # round 0 warms up
        done.clear()
        here, there = ("A", "B") if r % 2 == 0 else ("B", "A")
        for s in serials:
            task = f"{s}-r{r}"
            pending.add(task)
            sent_at[task] = time.perf_counter()
            gateway.command(Command("move", s, task, {"from": here, "origin": here,
                                                      "destination": there,
                                                      "award_epoch": 1}))
        await asyncio.wait_for(done.wait(), READY_BOUND_S)
        if r == 0:
            accept.clear()
            arrive.clear()
            t0, msgs0 = time.perf_counter(), broker.received + broker.sent
        if (r + 1) % max(1, rounds // 5) == 0:
            progress(f"round {r}/{rounds}")
    wall = time.perf_counter() - t0
    msgs = broker.received + broker.sent - msgs0
    await backend.close()
    if problems:
        raise RuntimeError(f"the vehicles refused: {problems[:3]}")
    return {"accept": accept, "arrive": arrive, "wall_s": wall, "messages": msgs}


def run(robots: int = 2, rounds: int = 20,
        progress: Callable[[str], None] = lambda _s: None) -> dict[str, Any]:
    mosquitto = shutil.which("mosquitto") or ("/usr/sbin/mosquitto"
                                              if Path("/usr/sbin/mosquitto").exists() else None)
    node = shutil.which("node")
    if mosquitto is None or node is None or not (VEHICLES.parent / "node_modules").is_dir():
        raise FileNotFoundError("mosquitto, node or tests/vda5050/node_modules is missing: run "
                                "`bash tests/setup.sh`")
    serials = [f"r{i + 1:02d}" for i in range(robots)]
    with tempfile.TemporaryDirectory(prefix="autocell-bench-fleet-") as tmp:
        work = Path(tmp)
        port = _free_port()
        (work / "mosquitto.conf").write_text(
            f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        logs = [(work / "mosquitto.log").open("wb"), (work / "vehicles.log").open("wb")]
        broker = subprocess.Popen([mosquitto, "-c", str(work / "mosquitto.conf")],
                                  stdout=logs[0], stderr=subprocess.STDOUT)
        vehicles = None
        try:
            url = f"mqtt://127.0.0.1:{port}"
            ready = work / "vehicles.ready.json"
            for _ in range(200):                  # the broker listens within milliseconds
                with socket.socket() as s:
                    if s.connect_ex(("127.0.0.1", port)) == 0:
                        break
                time.sleep(0.02)
            vehicles = subprocess.Popen(
                [node, str(VEHICLES), "--broker", url, "--serials", ",".join(serials),
                 "--map-id", "bench", "--speed", f"{LAPSE:g}", "--vehicle-speed", "10",
                 "--ready-file", str(ready), *[f"--start={s}=0,0,0,A" for s in serials]],
                stdout=logs[1], stderr=subprocess.STDOUT, cwd=VEHICLES.parent)
            _wait_file(ready, vehicles, "the virtual vehicles", work / "vehicles.log")
            progress(f"{robots} vehicles ready on {url}")
            m = asyncio.run(_measure(url, serials, rounds, progress))
        finally:
            for proc in (vehicles, broker):
                if proc is not None and proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    try:
                        proc.wait(10)
                    except subprocess.TimeoutExpired:
                        proc.kill()
            for f in logs:
                f.close()
    return {"backend": "vda5050", "robots": robots, "rounds": rounds, "moves": len(m["accept"]),
            "vda5050": "2.0.0", "vehicles": "vda-5050-lib virtual AGV",
            "p50_ms": round(_percentile(m["accept"], 0.5), 3),
            "p99_ms": round(_percentile(m["accept"], 0.99), 3),
            "arrive_p50_ms": round(_percentile(m["arrive"], 0.5), 3),
            "arrive_p99_ms": round(_percentile(m["arrive"], 0.99), 3),
            "messages_per_s": round(m["messages"] / m["wall_s"], 1) if m["wall_s"] else 0.0}


def summary(r: dict[str, Any]) -> str:
    return (f"vda5050 plant ({r['robots']} vehicles, {r['moves']} moves): command to order "
            f"accepted p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms; vehicle's final state "
            f"to arrived p50 {r['arrive_p50_ms']:.1f} ms, p99 {r['arrive_p99_ms']:.1f} ms; "
            f"{r['messages_per_s']:,.0f} MQTT messages/s")


__all__ = ["run", "summary"]
