"""The plant gateway as its own process: backends behind the remote plant protocol.

Theory of operation
-------------------
``autocell plant CELL`` (started by ``autocell up``; ``autocell sim`` is the
same command under its old name) runs the :class:`~sim_bridge.gateway.PlantGateway`
in scaled real time and speaks the **remote plant protocol**
(docs/PROTOCOL.md §13): signed ``plant_command`` envelopes in from machine
and robot agents, signed ``plant_event`` envelopes out to them, as the
plant identity — ``sim.identity`` of the cell file, ``sim`` by default
(role ``sim``).  Any external simulator or equipment gateway that speaks the
same two message types over the same envelope can take its place.

Backends: each machine and robot names its ``backend`` in the cell file;
the resources of one kind share one backend object (:data:`BACKENDS`
builds it), and the gateway routes each command to the backend of its
resource.  ``embedded`` — the simulator, :class:`~sim_bridge.plant.EmbeddedBackend`
on one SimPy environment — is the only kind so far.  The fence in front of
them is journalled in ``STATE/sim.sqlite`` (sim_bridge/fence_store.py), so
a restarted gateway still refuses a task completed before the restart.

Time: SimPy's environment is advanced to the cell clock
(``(wall - start_at) × speed``) before each command is applied and
whenever its next event falls due; between events the process sleeps on
the asyncio loop, so commands are served at once.

A machine or robot agent may command only its own resource; anything else
is refused and counted (``forbidden_resource``).  So is every command the
plant refuses without an event to answer it: ``set_state`` for a robot or
an unknown id (``set_state``) and an unknown command (``unknown_command``);
a refused start or move is answered (``command_refused`` or ``fault``).
The counts are the ``refused`` map of ``status-sim.json``.  Plant records
(op starts and ends, faults, moves) go to ``events-sim.jsonl``, which the
supervisor checks against the invariants (docs/architecture.md, Invariants);
so do the energy manager's raises of the peak cap, which it tells the plant
(``cap_in_force``, PROTOCOL.md §7.4), for the power headroom gauge.
The process keeps the file names (``sim``) whatever its identity.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import simpy

from agents.base import PlantEventIn
from agents.cell.specs import MachineSpec, plant_machines, plant_routes
from agents.protocol.actions import Command
from agents.protocol.messages import CapInForce, Message, PlantCommand, PlantEvent
from agents.runtime.host import (
    SIM_ID,
    CellClock,
    signed_bus,
    status_interval_s,
    write_json_atomic,
)
from agents.runtime.journal import SqliteJournal
from agents.runtime.observe import Observer
from security.errors import ConfigurationError

from .fence import Fence
from .fence_store import SqliteFenceStore
from .gateway import PlantGateway
from .plant import EmbeddedBackend
from .plant_api import Plant

if TYPE_CHECKING:
    from agents.cell.faults import FaultScenario
    from agents.cell.model import CellConfig

log = logging.getLogger("autocell.sim")


def _embedded(server: PlantServer, machines: list[MachineSpec], robots: list[str]) -> Plant:
    return EmbeddedBackend(server.env, machines, robots, seed=server.seed, events=server.plant,
                           record=server.record,
                           sensor_interval_s=server.cfg.sim.sensor_interval_s,
                           breakdowns=server.breakdowns, routes=plant_routes(server.cfg))


def _opcua(server: PlantServer, machines: list[MachineSpec], robots: list[str]) -> Plant:
    from .opcua.backend import OpcUaBackend, OpcUaMachine
    from .opcua.pki import OpcUaPki, load_secrets

    cfg, fence = server.cfg, server.plant.fence
    specs = [OpcUaMachine(m.id, settings) for m in machines
             if (settings := cfg.machine(m.id).opcua) is not None]
    secrets_path = server.opcua_secrets_path()
    secrets = load_secrets(secrets_path) if any(s.settings.user for s in specs) else {}

    def assumed(resource: str) -> tuple[str, int] | None:
        """What the journalled fence says ``resource`` runs (a restarted gateway)."""
        task = fence.busy.get(resource)
        return None if task is None else (task, int(fence.started_epoch.get(task, 0)))

    return OpcUaBackend(specs, events=_Advancing(server), record=server.live_record,
                        pki=OpcUaPki(server.keys_dir / "opcua"), secrets=secrets,
                        assumed=assumed)


def _vda5050(server: PlantServer, machines: list[MachineSpec], robots: list[str]) -> Plant:
    from .opcua.pki import load_secrets
    from .vda5050.backend import Vda5050Backend, VehicleSpec

    cfg, fence = server.cfg, server.plant.fence
    specs = [VehicleSpec(r, settings, cfg.robot(r).speed_m_per_s) for r in robots
             if (settings := cfg.robot(r).vda5050) is not None]
    secrets = (load_secrets(server.opcua_secrets_path())
               if any(s.settings.user for s in specs) else {})

    def assumed(resource: str) -> tuple[str, int] | None:
        task = fence.busy.get(resource)
        return None if task is None else (task, 0)

    base = Path(cfg.source).parent if cfg.source != "<dict>" else Path.cwd()
    return Vda5050Backend(specs, events=_Advancing(server), record=server.live_record,
                          locations={loc.id: (loc.x, loc.y) for loc in cfg.layout.locations},
                          route=cfg.route, default_map=cfg.layout.map or "cell",
                          secrets=secrets, base_dir=base, assumed=assumed)


class _Advancing:
    """The gateway's :class:`~sim_bridge.plant_api.PlantEvents`, for a backend that reports
    from the asyncio loop (real equipment): the cell clock is advanced first, so events and
    records carry the cell time at which they happened."""

    def __init__(self, server: PlantServer) -> None:
        self._server = server

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._server.plant, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            self._server.advance()
            result = method(*args, **kwargs)
            self._server.wake()
            return result
        return call


#: Backend kind (``backend:`` of a machine or robot) -> how the gateway builds it, for the
#: resources of that kind.  agents/cell/model.py lists the kinds a cell file may name.
BACKENDS: dict[str, Callable[[PlantServer, list[MachineSpec], list[str]], Plant]] = {
    "embedded": _embedded,
    "opcua": _opcua,
    "vda5050": _vda5050,
}


class PlantServer:
    """The plant gateway on the ZeroMQ bus, in scaled real time."""

    def __init__(self, cfg: CellConfig, *, keys_dir: Path, state_dir: Path, clock: CellClock,
                 seed: int | None = None, faults: FaultScenario | None = None) -> None:
        self.cfg = cfg
        self.clock = clock
        self.state_dir = state_dir
        self.keys_dir = keys_dir
        self.seed = cfg.sim.seed if seed is None else seed
        self.env = simpy.Environment(initial_time=max(0.0, clock.now()))
        self.events = (state_dir / "events-sim.jsonl").open("a", buffering=1)
        self.refused: Counter[str] = Counter()
        self.breakdowns = faults.mtbf_breakdowns if faults is not None else True
        self.identity = cfg.sim.identity
        boots = SqliteJournal(state_dir / "sim.sqlite")
        self.boot = boots.next_boot(SIM_ID)
        boots.close()
        self.fence_store = SqliteFenceStore(state_dir / "sim.sqlite")
        machines = plant_machines(cfg)
        self.plant = PlantGateway(machines, [r.id for r in cfg.robots], emit=self._emit,
                                  record=self.record, fence=Fence(self.fence_store))
        kind_of = {**{m.id: m.backend for m in cfg.machines},
                   **{r.id: r.backend for r in cfg.robots}}
        missing = sorted(r for r, kind in kind_of.items() if kind not in BACKENDS)
        if missing:
            raise ConfigurationError(f"no plant backend is built for {', '.join(missing)} "
                                     f"({', '.join(sorted({kind_of[r] for r in missing}))})")
        for kind, build in BACKENDS.items():
            ms = [m for m in machines if kind_of[m.id] == kind]
            rs = [r.id for r in cfg.robots if kind_of[r.id] == kind]
            if ms or rs:
                self.plant.attach(build(self, ms, rs))
        self.bus = signed_bus(cfg, keys_dir=keys_dir, state_dir=state_dir, name=SIM_ID,
                              bind=cfg.sim.endpoint, identities=[self.identity],
                              epoch=self.boot, clock=clock)
        self.resources = {m.id for m in cfg.machines} | {r.id for r in cfg.robots}
        if faults is not None:
            for b in faults.breakdowns:
                if b.at_s >= self.env.now:
                    def fire(_e: simpy.Event, resource: str = b.resource,
                             repair_s: float = b.repair_s) -> None:
                        self._inject(resource, repair_s)
                    self.env.timeout(b.at_s - self.env.now).callbacks.append(fire)
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self.observer: Observer | None = None      # metrics hooks (agents/runtime/observe.py)
        self.plant.open()                # the fence forgets what ran before a restart

    def opcua_secrets_path(self) -> Path:
        """``security.opcua_secrets`` (relative to the cell file), else in the keys directory."""
        given = self.cfg.security.opcua_secrets
        if given is None:
            return self.keys_dir / "opcua-secrets.yaml"
        base = Path(self.cfg.source).parent if self.cfg.source != "<dict>" else Path.cwd()
        return (base / given.expanduser()).resolve()

    def live_record(self, event: str, **fields: Any) -> None:
        """:meth:`record` for a backend that reports from the asyncio loop: at the cell time
        of now, not of the last command."""
        self.advance()
        self.record(event, **fields)

    def wake(self) -> None:
        self._wake.set()

    def _backends(self) -> list[Plant]:
        return list({id(b): b for b in self.plant.backends.values()}.values())

    def _inject(self, resource: str, repair_s: float) -> None:
        self.record("fault_injected", kind="breakdown", agents=[resource])
        self.plant.fail(resource, repair_s)

    def record(self, event: str, **fields: Any) -> None:
        line = {"t": round(self.env.now, 6), "ev": event, **fields}
        self.events.write(json.dumps(line, sort_keys=True, separators=(",", ":")) + "\n")
        if self.observer is not None:
            self.observer.on_record(line)

    def _cap_in_force(self, sender: str, body: CapInForce) -> None:
        """Log the peak cap in force as the energy manager logs it (``cap_raised`` …
        ``cap_restored``), so this process's headroom gauge (ops/metrics.py) and the
        plant's log follow a supervisor's raise (ADR 91).  A raise that arrives after its
        own end (reordered behind the return to the contracted cap) is not logged."""
        if not body.raised:
            self.record("cap_restored", agent=sender, cap_kw=body.cap_kw)
        elif body.until_at > self.env.now:
            self.record("cap_raised", agent=sender, cap_kw=body.cap_kw, until=body.until_at,
                        escalation=body.escalation)

    def _emit(self, ev: PlantEventIn) -> None:
        self.bus.send(self.identity, ev.resource, PlantEvent(ev.event, ev.resource, ev.task,
                                                      float(self.env.now), dict(ev.data or {})))

    def advance(self) -> None:
        now = self.clock.now()
        if now > self.env.now:
            self.env.run(until=now)

    def _on_message(self, msg: Message) -> None:
        body = msg.body
        if isinstance(body, CapInForce):          # from the energy manager (its role only)
            self.advance()
            self._cap_in_force(msg.sender, body)
            return
        if not isinstance(body, PlantCommand):
            self.refused["not_a_command"] += 1
            return
        if body.resource != msg.sender or body.resource not in self.resources:
            self.refused["forbidden_resource"] += 1
            self.record("command_forbidden", sender=msg.sender, resource=body.resource)
            return
        self.advance()
        refused_before = len(self.plant.stats.refused)
        self.plant.command(Command(body.command, body.resource, body.task, dict(body.args)))
        if (len(self.plant.stats.refused) > refused_before
                and body.command not in ("start_operation", "move")):
            # refused without an answering event (PROTOCOL §13.3): count it with the others
            self.refused["set_state" if body.command == "set_state" else "unknown_command"] += 1
        self._wake.set()

    def status(self) -> dict[str, Any]:
        return {"host": SIM_ID, "identity": self.identity, "pid": os.getpid(), "boot": self.boot,
                "cell_now": round(self.env.now, 3), "wall": self.clock.wall(),
                "refused": dict(self.refused), "rejected": dict(self.bus.stats.rejected),
                "received": sum(self.bus.stats.received.values()),
                "sent": sum(self.bus.stats.sent.values()),
                **({"equipment": equipment} if (equipment := {
                    e: s for b in self._backends() if (st := getattr(b, "status", None))
                    for e, s in st().items()}) else {})}

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        if threading.current_thread() is threading.main_thread():   # not in a Ray actor's thread
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self._stop.set)
        for backend in self._backends():      # real equipment: connect before serving
            start = getattr(backend, "start", None)
            if start is not None:
                await start()
        await self.bus.start(self._on_message)
        self.record("sim_start", boot=self.boot)
        status_path = self.state_dir / "status-sim.json"
        last_status = 0.0
        while not self._stop.is_set():
            self.advance()
            nxt = self.env.peek()
            wait_s = 0.2 if nxt == float("inf") else min(0.2, self.clock.delay_s(nxt))
            if self.clock.wall() - last_status >= status_interval_s(self.cfg, self.clock.speed):
                write_json_atomic(status_path, self.status())
                last_status = self.clock.wall()
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=max(wait_s, 0.0005))
            except TimeoutError:
                pass
        self.record("sim_stop")
        for backend in self._backends():
            close = getattr(backend, "close", None)
            if close is not None:
                await close()
        write_json_atomic(status_path, {**self.status(), "stopped": True})
        await self.bus.close()
        self.fence_store.close()
        self.events.close()
