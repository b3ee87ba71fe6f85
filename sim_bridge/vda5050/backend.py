"""The ``vda5050`` plant backend: transport robots as VDA 5050 vehicles, autocell their
master control over MQTT.

Theory of operation
-------------------
:class:`Vda5050Backend` implements :class:`~sim_bridge.plant_api.Plant` for
the robots whose ``backend`` is ``vda5050``, on the gateway's asyncio loop.
Vehicles on one broker share one MQTT connection (:class:`_Broker`), which
subscribes to each vehicle's ``state``, ``connection``, ``factsheet`` and
``visualization`` topics (``{interface}/v2/{manufacturer}/{serial}/{topic}``) and reconnects
forever.  Every message received is checked against the VDA 5050 2.0.0
schema first; an invalid one is dropped, counted per vehicle and topic, and
recorded once (``vda_invalid``).

* **A move** becomes one ``order`` (:mod:`.messages`): from the node the
  vehicle stands on (its ``lastNodeId`` if that is a location of the cell,
  else the location nearest to its position) through the origin (``pick``)
  to the destination (``drop``).  ``orderId`` = ``task@epoch``.  The order is
  *accepted* when a state names it, *refused* when an error references it
  (``command_refused``), *done* when its last node is reached and the drop
  action is FINISHED (``arrived``).  ``abort_operation`` is ``cancelOrder``.
* **Up and down.** A vehicle is usable when it is ONLINE, has sent a state
  since (the re-sync), is on the cell's map, has no FATAL error and (if it
  sent a factsheet) offers the pick and drop actions.  OFFLINE and
  CONNECTIONBROKEN (the broker's last will) are not a fault until
  ``grace_s`` has passed; then the vehicle is reported ``fault`` and its move
  handed back (``stopped``), kept as an *orphan*: cancelled if the vehicle
  comes back still driving it, recorded (``vda_late_end``) and never reported
  if it finished it.  Within the grace, a move that ended meanwhile is
  reported from the first state after ONLINE, never sent again.
* **Faults of the vehicle.** An ``errors`` entry of level FATAL, or an
  emergency stop, is ``fault`` (the move is cancelled and handed back); once
  none is left, ``repaired``.  A vehicle on another map is held down
  (``fault`` "wrong map") until it reports the right one.
* **Readings**: position (``x``, ``y``, ``theta``, from ``state`` and the more
  frequent ``visualization``) and ``battery_pct``, at most one ``reading`` per
  vehicle per second.

Records are the simulator's (``move_start``, ``arrived``, ``move_abort``,
``fault``, ``repaired``), so the supervisor checks the same invariants.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import ssl
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt

from agents.cell.equipment import Vda5050Vehicle
from agents.cell.routes import Route
from sim_bridge.opcua.pki import Credentials
from sim_bridge.plant_api import PlantEvents

from . import messages
from .schema import problems

__all__ = ["Vda5050Backend", "VehicleSpec"]

log = logging.getLogger("autocell.vda5050")

Record = Callable[..., None]
Assumed = Callable[[str], tuple[str, int] | None]
TOPICS = ("state", "connection", "factsheet", "visualization")
READING_EVERY_S = 1.0
REFUSING_ERRORS = frozenset({"orderError", "orderUpdateError", "validationError",
                             "noRouteError"})
BACKOFF_S = (0.2, 0.5, 1.0, 2.0)
ON_NODE_M = 0.25            # a vehicle this close to a location stands on it


def _slowest(*limits: float | None) -> float | None:
    """The lowest of the speed limits given (an edge's, the robot's), or None if none is."""
    given = [x for x in limits if x is not None]
    return min(given) if given else None


@dataclass(frozen=True)
class VehicleSpec:
    """One robot of the cell as a VDA 5050 vehicle."""

    id: str
    settings: Vda5050Vehicle
    speed_m_per_s: float | None = None

    @property
    def serial(self) -> str:
        return self.settings.serial or self.id


@dataclass
class _Move:
    task: str
    oid: str
    destination: str
    accepted: bool = False


@dataclass
class _Vehicle:
    spec: VehicleSpec
    broker: _Broker
    header: messages.Header
    online: bool = False
    synced: bool = False
    fatal: str = ""
    wrong_map: str = ""
    no_actions: str = ""
    down_reported: bool = False
    move: _Move | None = None
    orphans: set[str] = field(default_factory=set)
    position: tuple[float, float, float, str] | None = None
    last_node: str = ""
    offline_since: float | None = None
    last_reading: float = -math.inf
    battery: float | None = None
    cancelling: str = ""                      # actionId of a cancelOrder not yet done
    held: dict[str, Any] | None = None        # an order waiting for that cancel
    invalid: Counter[str] = field(default_factory=Counter)
    factsheet_asked: bool = False

    @property
    def id(self) -> str:
        return self.spec.id

    def topic(self, name: str) -> str:
        s = self.spec.settings
        return f"{s.interface_name}/v2/{s.manufacturer}/{self.spec.serial}/{name}"

    def usable(self) -> bool:
        return (self.broker.up and self.online and self.synced and not self.fatal
                and not self.wrong_map and not self.no_actions)


class Vda5050Backend:
    """Robots as VDA 5050 vehicles (``backend: vda5050``), one MQTT connection per broker."""

    def __init__(self, vehicles: list[VehicleSpec], *, events: PlantEvents, record: Record,
                 locations: Mapping[str, tuple[float, float]],
                 route: Callable[[str, str], Route], default_map: str,
                 secrets: Mapping[str, Credentials], base_dir: Path,
                 assumed: Assumed = lambda _r: None) -> None:
        self.events = events
        self.record = record
        self.locations = dict(locations)
        self.route = route
        self.default_map = default_map
        self.assumed = assumed
        self.resources = frozenset(v.id for v in vehicles)
        self.brokers: dict[str, _Broker] = {}
        self.vehicles: dict[str, _Vehicle] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        for spec in vehicles:
            s = spec.settings
            creds = None
            if s.user is not None:
                creds = secrets.get(s.user)
                if creds is None:
                    from security.errors import ConfigurationError
                    raise ConfigurationError(f"{spec.id}: user {s.user!r} is not in the "
                                             "equipment secrets file")
            ca = (base_dir / s.ca) if s.ca else None
            broker = self.brokers.get(s.broker)
            if broker is None:
                broker = self.brokers[s.broker] = _Broker(self, s.broker, creds, ca)
            v = _Vehicle(spec, broker, messages.Header(s.manufacturer, spec.serial))
            broker.vehicles[v.topic("")[:-1]] = v
            self.vehicles[spec.id] = v

    # -- lifecycle --------------------------------------------------------------------------------
    async def start(self, first_connect_s: float = 10.0) -> None:
        """Connect to every broker; wait (at most ``first_connect_s``) until each vehicle has
        said ONLINE and sent a state, so the robots are up when first commanded."""
        for b in self.brokers.values():
            b.task = asyncio.get_running_loop().create_task(b.run())
        deadline = time.monotonic() + first_connect_s
        while time.monotonic() < deadline and not all(
                v.usable() or v.wrong_map or v.no_actions for v in self.vehicles.values()):
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        for b in self.brokers.values():
            await b.close()
        for t in list(self._tasks):
            t.cancel()

    def status(self) -> dict[str, Any]:
        return {url: {"up": b.up, "connections": b.connections, "error": b.error,
                      "vehicles": {v.id: {"online": v.online, "usable": v.usable(),
                                          "invalid": dict(v.invalid)}
                                   for v in b.vehicles.values()}}
                for url, b in sorted(self.brokers.items())}

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- commands (sim_bridge.plant_api.Plant) ------------------------------------------------------
    def running(self) -> dict[str, str]:
        return {r: a[0] for r in sorted(self.resources) if (a := self.assumed(r)) is not None}

    def query_state(self, resource: str) -> bool:
        return self.vehicles[resource].usable()

    def start_operation(self, resource: str, task: str, args: Mapping[str, Any]) -> bool:
        return False         # robots only (the model refuses `backend: vda5050` on a machine)

    def set_state(self, resource: str, state: str) -> None:
        return None          # set_state is for machines (PROTOCOL.md §13.3)

    def move(self, resource: str, task: str, args: Mapping[str, Any]) -> bool:
        v = self.vehicles[resource]
        if not v.usable() or v.move is not None:
            v.down_reported = v.down_reported or not v.usable()
            return False
        origin, destination = str(args.get("origin", "")), str(args.get("destination", ""))
        if origin not in self.locations or destination not in self.locations:
            self.events.stopped(resource, task, "unknown location")
            self.events.command_refused(resource, task, "unknown location")
            return True
        oid = messages.order_id(task, int(args.get("award_epoch", 0)))
        start, on_node = self._standing_at(v, str(args.get("from", origin)))
        empty, loaded = self.route(start, origin), self.route(origin, destination)
        legs = [*empty.nodes, *loaded.nodes[1:]]
        edges = [*empty.edges, *loaded.edges]
        nodes = [messages.RouteNode(n.id, n.x, n.y, n.theta, n.map_id, on_node or i > 0)
                 for i, n in enumerate(legs)]
        speeds = [_slowest(e.max_speed_m_per_s, v.spec.speed_m_per_s) for e in edges]
        s = v.spec.settings
        params = dict(s.action_parameters)
        msg = messages.order(v.header, oid, nodes, map_id=self.map_of(v),
                             pick_index=len(empty.nodes) - 1, pick=(s.pick_action, params),
                             drop=(s.drop_action, params), max_speeds=speeds)
        v.move = _Move(task, oid, destination)
        self.record("move_start", robot=resource, task=task, origin=origin,
                    destination=destination, order=oid)
        if v.cancelling:
            v.held = msg                 # sent once the vehicle has done the cancel
        else:
            v.broker.publish(v.topic("order"), msg)
        return True

    def _cancel(self, v: _Vehicle, oid: str) -> None:
        """``cancelOrder``; a new order waits until the vehicle reports the cancel done (a
        vehicle cancels asynchronously, and would cancel an order sent right after)."""
        msg = messages.cancel_order(v.header, oid)
        v.cancelling = msg["actions"][0]["actionId"]
        v.broker.publish(v.topic("instantActions"), msg)

    def abort_operation(self, resource: str, task: str) -> None:
        v = self.vehicles.get(resource)
        if v is None or v.move is None or v.move.task != task:
            return
        oid = v.move.oid
        self._hand_back(v, "aborted")
        self._cancel(v, oid)

    def map_of(self, v: _Vehicle) -> str:
        return v.spec.settings.map or self.default_map

    def _standing_at(self, v: _Vehicle, believed: str) -> tuple[str, bool]:
        """The location the vehicle stands on or nearest to it, and whether it stands on it
        (a vehicle stopped between nodes, by a cancelled order, starts "from where it is")."""
        if v.position is None:
            return believed, True
        x, y = v.position[0], v.position[1]
        nearest = min(self.locations, key=lambda n: (math.dist((x, y), self.locations[n]), n))
        if v.last_node in self.locations and math.dist(
                (x, y), self.locations[v.last_node]) <= ON_NODE_M:
            return v.last_node, True
        return nearest, math.dist((x, y), self.locations[nearest]) <= ON_NODE_M

    # -- what the vehicles say ----------------------------------------------------------------------
    def on_message(self, v: _Vehicle, topic: str, payload: bytes) -> None:
        v.broker.received += 1
        try:
            msg = json.loads(payload)
        except (ValueError, UnicodeDecodeError):
            return self._invalid(v, topic, ["not JSON"])
        wrong = problems(topic, msg)
        if wrong:
            return self._invalid(v, topic, wrong)
        if topic == "connection":
            self._on_connection(v, msg["connectionState"])
        elif topic == "factsheet":
            self._on_factsheet(v, msg)
        elif topic == "state":
            self._on_state(v, msg)
        elif topic == "visualization":
            self._on_position(v, msg)
        return None

    def _on_position(self, v: _Vehicle, msg: dict[str, Any]) -> None:
        """Where the vehicle is (``state`` and the more frequent ``visualization``)."""
        pos = msg.get("agvPosition")
        if not isinstance(pos, dict):
            return
        v.position = (float(pos["x"]), float(pos["y"]), float(pos["theta"]), str(pos["mapId"]))
        self._reading(v, msg)

    def _invalid(self, v: _Vehicle, topic: str, wrong: list[str]) -> None:
        v.invalid[topic] += 1
        if v.invalid[topic] == 1:
            log.warning("vda5050: %s: invalid %s dropped: %s", v.id, topic, "; ".join(wrong))
            self.record("vda_invalid", robot=v.id, topic=topic, problems=wrong[:3])

    def _on_connection(self, v: _Vehicle, state: str) -> None:
        if state == "ONLINE":
            if not v.online:
                self.record("vda_online", robot=v.id)
            v.online, v.synced, v.offline_since = True, False, None
            if v.cancelling and v.move is None:   # back from a restart: nothing to wait for
                v.cancelling, v.held = "", None
            if not v.factsheet_asked:
                v.factsheet_asked = True
                v.broker.publish(v.topic("instantActions"), messages.factsheet_request(v.header))
            return
        if v.online or v.offline_since is None:
            v.online, v.synced = False, False
            v.offline_since = time.monotonic()
            self.record("vda_offline", robot=v.id, state=state)
            self.spawn(self._grace(v, f"vehicle {state}"))

    async def _grace(self, v: _Vehicle, why: str) -> None:
        since = v.offline_since
        await asyncio.sleep(v.spec.settings.grace_s)
        if v.offline_since is not None and v.offline_since == since and not v.online:
            self._lost(v, why)

    def _lost(self, v: _Vehicle, why: str) -> None:
        if v.move is not None:
            self._hand_back(v, why)
        self._fault(v, why)

    def _on_factsheet(self, v: _Vehicle, msg: dict[str, Any]) -> None:
        offered = {a.get("actionType") for a in
                   msg.get("protocolFeatures", {}).get("agvActions", [])}
        s = v.spec.settings
        lacking = sorted({s.pick_action, s.drop_action} - offered)
        was = v.usable()
        v.no_actions = (f"its factsheet lacks the action(s) {', '.join(lacking)} the cell needs"
                        if lacking else "")
        self.record("vda_factsheet", robot=v.id, lacking=lacking)
        if v.no_actions and was:
            self._fault(v, v.no_actions)
        self._maybe_repaired(v)

    def _on_state(self, v: _Vehicle, msg: dict[str, Any]) -> None:
        v.synced = v.online
        v.last_node = str(msg.get("lastNodeId", ""))
        pos = msg.get("agvPosition")
        if isinstance(pos, dict):
            self._on_position(v, msg)
            expected = self.map_of(v)
            v.wrong_map = "" if pos["mapId"] == expected else (
                f"on map {pos['mapId']!r}, not the cell's {expected!r}")
        fatal = [e for e in msg.get("errors", []) if e.get("errorLevel") == "FATAL"]
        stop = msg.get("safetyState", {}).get("eStop", "NONE")
        v.fatal = (f"FATAL {fatal[0].get('errorType', '')}: {fatal[0].get('errorDescription', '')}"
                   if fatal else (f"emergency stop ({stop})" if stop != "NONE" else ""))
        self._track(v, msg)
        if (v.fatal or v.wrong_map) and not v.down_reported:
            if v.move is not None:
                oid = v.move.oid
                self._hand_back(v, v.fatal or v.wrong_map)
                self._cancel(v, oid)
            self._fault(v, v.fatal or v.wrong_map)
        self._maybe_repaired(v)

    def _track(self, v: _Vehicle, msg: dict[str, Any]) -> None:
        oid_now = msg.get("orderId", "")
        actions = {a["actionId"]: a["actionStatus"] for a in msg.get("actionStates", [])}
        if v.cancelling and actions.get(v.cancelling) in ("FINISHED", "FAILED"):
            v.cancelling = ""
            if v.held is not None:
                held, v.held = v.held, None
                v.broker.publish(v.topic("order"), held)
        remaining = msg.get("nodeStates", [])
        for oid in sorted(v.orphans):
            if oid != oid_now:
                continue
            if actions.get(f"{oid}/drop") == "FINISHED" and not remaining:
                self.record("vda_late_end", robot=v.id, order=oid)
                v.orphans.discard(oid)
            elif remaining:
                self._cancel(v, oid)
                v.orphans.discard(oid)
        m = v.move
        if m is None:
            return
        refusals = [e for e in msg.get("errors", [])
                    if e.get("errorType") in REFUSING_ERRORS
                    and any(r.get("referenceValue") == m.oid
                            for r in e.get("errorReferences", []))]
        if refusals:
            v.move = None
            why = f"{refusals[0]['errorType']}: {refusals[0].get('errorDescription', '')}"
            self.record("move_abort", robot=v.id, task=m.task, why=why)
            self.events.stopped(v.id, m.task, why)
            self.events.command_refused(v.id, m.task, f"vehicle refused the order: {why}")
            return
        if oid_now != m.oid:
            return
        if not m.accepted:
            m.accepted = True
            self.record("vda_order_accepted", robot=v.id, task=m.task, order=m.oid,
                        vehicle_at=msg.get("timestamp", ""))
        failed = [k for k in ("pick", "drop") if actions.get(f"{m.oid}/{k}") == "FAILED"]
        if failed:
            v.move = None
            self.record("move_abort", robot=v.id, task=m.task, why=f"{failed[0]} failed")
            self.events.stopped(v.id, m.task, f"{failed[0]} failed")
            self.events.command_refused(v.id, m.task, f"the vehicle's {failed[0]} failed")
        elif actions.get(f"{m.oid}/drop") == "FINISHED" and not remaining:
            v.move = None
            self.record("arrived", robot=v.id, task=m.task, at=m.destination,
                        vehicle_at=msg.get("timestamp", ""))
            self.events.arrived(v.id, m.task, m.destination)

    def _reading(self, v: _Vehicle, msg: dict[str, Any]) -> None:
        now = time.monotonic()
        if now - v.last_reading < READING_EVERY_S or v.position is None:
            return
        v.last_reading = now
        values = {"x": v.position[0], "y": v.position[1], "theta": v.position[2]}
        battery = msg.get("batteryState", {}).get("batteryCharge")
        if isinstance(battery, (int, float)):
            v.battery = float(battery)
        if v.battery is not None:
            values["battery_pct"] = v.battery
        self.events.reading(v.id, values)

    # -- down and up ------------------------------------------------------------------------------
    def _hand_back(self, v: _Vehicle, why: str) -> None:
        m = v.move
        if m is None:
            return
        v.move = None
        v.orphans.add(m.oid)
        self.record("move_abort", robot=v.id, task=m.task, why=why)
        self.events.stopped(v.id, m.task, why)

    def _fault(self, v: _Vehicle, reason: str) -> None:
        if v.down_reported:
            return
        v.down_reported = True
        self.record("fault", robot=v.id, reason=reason)
        self.events.fault(v.id, reason)

    def _maybe_repaired(self, v: _Vehicle) -> None:
        if v.down_reported and v.usable():
            v.down_reported = False
            self.record("repaired", robot=v.id)
            self.events.repaired(v.id)

    def broker_lost(self, broker: _Broker, why: str) -> None:
        for v in broker.vehicles.values():
            if v.online:
                v.online, v.synced = False, False
                v.offline_since = time.monotonic()
                self.spawn(self._grace(v, f"broker link lost: {why}"))


class _Broker:
    """One MQTT connection: subscriptions for its vehicles, publishing, reconnects."""

    def __init__(self, backend: Vda5050Backend, url: str, creds: Credentials | None,
                 ca: Path | None) -> None:
        self.backend = backend
        self.url = url
        scheme, rest = url.split("://", 1)
        host, _, port = rest.partition(":")
        self.host, self.port = host, int(port or (8883 if scheme == "mqtts" else 1883))
        self.tls = scheme == "mqtts"
        self.creds = creds
        self.ca = ca
        self.vehicles: dict[str, _Vehicle] = {}        # topic prefix -> vehicle
        self.client: aiomqtt.Client | None = None
        self.up = False
        self.connections = 0
        self.received = 0
        self.sent = 0
        self.error = ""
        self.task: asyncio.Task[None] | None = None
        self.outbox: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self._closed = False

    def publish(self, topic: str, msg: dict[str, Any]) -> None:
        """Queue a message; one writer sends them in order (a ``cancelOrder`` reaches the
        vehicle before the order that follows it)."""
        if self.client is None or not self.up:
            return
        self.outbox.put_nowait((topic, json.dumps(msg, separators=(",", ":"))))

    async def _writer(self, client: aiomqtt.Client) -> None:
        while True:
            topic, payload = await self.outbox.get()
            try:
                await client.publish(topic, payload, qos=0)
                self.sent += 1
            except aiomqtt.MqttError as exc:
                log.warning("vda5050: publish to %s failed: %s", topic, exc)

    def _tls_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        ctx = ssl.create_default_context(cafile=str(self.ca) if self.ca else None)
        return ctx

    async def close(self) -> None:
        self._closed = True
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - shutting down
                pass

    async def run(self) -> None:
        attempt = 0
        while not self._closed:
            try:
                async with aiomqtt.Client(
                        self.host, self.port, identifier=f"autocell-gateway-{id(self):x}",
                        username=self.creds.username if self.creds else None,
                        password=self.creds.password if self.creds else None,
                        tls_context=self._tls_context(), keepalive=5, timeout=5) as client:
                    self.client = client
                    self.outbox = asyncio.Queue()        # nothing stale from a lost link
                    writer = asyncio.get_running_loop().create_task(self._writer(client))
                    for prefix in self.vehicles:
                        for t in TOPICS:
                            await client.subscribe(f"{prefix}/{t}", qos=1)
                    self.up, self.error, attempt = True, "", 0
                    self.connections += 1
                    for each in self.vehicles.values():  # a full state now, not in 30 s
                        self.publish(each.topic("instantActions"),
                                     messages.state_request(each.header))
                    self.backend.record("vda_broker_up", broker=self.url,
                                        connection=self.connections)
                    try:
                        async for message in client.messages:
                            prefix, _, topic = str(message.topic).rpartition("/")
                            v = self.vehicles.get(prefix)
                            if v is not None and isinstance(message.payload, (bytes, bytearray)):
                                self.backend.on_message(v, topic, bytes(message.payload))
                    finally:
                        writer.cancel()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure of the link: retry
                why = f"{type(exc).__name__}: {exc}"
                if self.up:
                    self.backend.record("vda_broker_lost", broker=self.url, why=why)
                    self.backend.broker_lost(self, why)
                elif why != self.error:
                    self.backend.record("vda_broker_error", broker=self.url, error=why)
                    log.error("vda5050: %s: %s", self.url, why)
                self.up, self.client, self.error = False, None, why
            await asyncio.sleep(BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)])
            attempt += 1
