"""``autocell equipment check`` for VDA 5050 vehicles: broker, ONLINE, factsheet, map.

One MQTT connection per broker, as the gateway's: the vehicle's retained
``connection`` message says whether it is ONLINE; a ``factsheetRequest``
asks for its factsheet; its next ``state`` gives its map.  Each vehicle gets
one :class:`~sim_bridge.opcua.commission.CheckLine`.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from pathlib import Path
from typing import Any

import aiomqtt

from agents.cell.equipment import Vda5050Vehicle
from sim_bridge.opcua.commission import CheckLine
from sim_bridge.opcua.pki import Credentials

from . import messages
from .schema import problems

__all__ = ["check_vehicle"]


async def check_vehicle(robot: str, s: Vda5050Vehicle, credentials: Credentials | None,
                        base_dir: Path, wait_s: float = 5.0) -> CheckLine:
    """Reachability of the broker, then ONLINE, factsheet actions and map of one vehicle."""
    security = "plain MQTT (insecure)" if s.insecure else "MQTT over TLS"
    scheme, rest = s.broker.split("://", 1)
    host, _, port = rest.partition(":")
    ctx = None
    if scheme == "mqtts":
        ctx = ssl.create_default_context(cafile=str(base_dir / s.ca) if s.ca else None)
    serial = s.serial or robot
    prefix = f"{s.interface_name}/v2/{s.manufacturer}/{serial}"
    seen: dict[str, Any] = {}
    try:
        async with aiomqtt.Client(host, int(port or (8883 if ctx else 1883)),
                                  username=credentials.username if credentials else None,
                                  password=credentials.password if credentials else None,
                                  tls_context=ctx, timeout=wait_s) as client:
            for topic in ("connection", "state", "factsheet"):
                await client.subscribe(f"{prefix}/{topic}", qos=1)
            header = messages.Header(s.manufacturer, serial)
            await client.publish(f"{prefix}/instantActions",
                                 json.dumps(messages.factsheet_request(header)))

            async def listen() -> None:
                async for message in client.messages:
                    topic = str(message.topic).rsplit("/", 1)[1]
                    try:
                        body = json.loads(bytes(message.payload))
                    except (ValueError, TypeError):
                        continue
                    if not problems(topic, body):
                        seen[topic] = body
                    if {"connection", "state", "factsheet"} <= set(seen):
                        return

            try:
                await asyncio.wait_for(listen(), wait_s)
            except TimeoutError:
                pass
    except aiomqtt.MqttError as exc:
        return CheckLine(robot, s.broker, security, False, (f"broker: {exc}",))
    found: list[str] = []
    state = seen.get("connection", {}).get("connectionState")
    if state != "ONLINE":
        found.append(f"vehicle {serial} is {state or 'silent'} (no ONLINE connection message)")
    if "state" not in seen:
        found.append(f"vehicle {serial} sent no valid state")
    else:
        map_id = seen["state"].get("agvPosition", {}).get("mapId")
        if map_id != s.map:
            found.append(f"vehicle {serial} is on map {map_id!r}, the cell's is {s.map!r}")
    if "factsheet" in seen:
        offered = {a.get("actionType") for a in
                   seen["factsheet"].get("protocolFeatures", {}).get("agvActions", [])}
        lacking = sorted({s.pick_action, s.drop_action} - offered)
        if lacking:
            found.append(f"its factsheet lacks {', '.join(lacking)}")
    return CheckLine(robot, s.broker, security, not found, tuple(found))
