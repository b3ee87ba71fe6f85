"""The VDA 5050 2.0.0 messages autocell sends as master control, and the ids in them.

Theory of operation
-------------------
A ``move`` (carry the parts of task T, awarded under epoch E, from the
vehicle's place through the origin to the destination) becomes one
``order`` whose ``orderId`` is ``"T@E"`` and whose ``orderUpdateId`` is 0
(:func:`order_id`): a resent command is the same order, which a vehicle
discards, and a command of an older epoch never gets here (the gateway's
fence refuses it).  Nodes are the cell's locations (and the route graph's
waypoints), in metres on the cell's map; node and edge ``sequenceId`` count
0, 1, 2, … along the route, nodes even and edges odd; everything is
released (no horizon).  The ``pick`` action sits on the origin node, the
``drop`` action on the last node; their ``actionId`` is ``"T@E/pick"`` and
``"T@E/drop"`` so a state message says which is done.

An abort is the instant action ``cancelOrder``; a factsheet is asked for with
``factsheetRequest``.  Every message is checked against its schema before
it is sent (:func:`sealed`).
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from security.errors import ProtocolBug

from .schema import VERSION, problems

__all__ = ["Header", "RouteNode", "cancel_order", "factsheet_request", "order", "order_id"]


def order_id(task: str, epoch: int) -> str:
    return f"{task}@{epoch}"


@dataclass(frozen=True)
class RouteNode:
    """A node of an order: a location or a waypoint, with its position on the map."""

    id: str
    x: float
    y: float
    theta: float | None = None


class Header:
    """The header fields of one vehicle's messages: a headerId counter per topic."""

    def __init__(self, manufacturer: str, serial: str) -> None:
        self.manufacturer = manufacturer
        self.serial = serial
        self._ids: dict[str, int] = {}

    def __call__(self, topic: str) -> dict[str, Any]:
        n = self._ids.get(topic, 0)
        self._ids[topic] = n + 1
        now = datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")
        return {"headerId": n, "timestamp": now.replace("+00:00", "Z"), "version": VERSION,
                "manufacturer": self.manufacturer, "serialNumber": self.serial}


def sealed(topic: str, message: dict[str, Any]) -> dict[str, Any]:
    """``message``, or :class:`ProtocolBug` if autocell built an invalid one."""
    wrong = problems(topic, message)
    if wrong:
        raise ProtocolBug(f"autocell built an invalid VDA 5050 {topic}: {'; '.join(wrong)}")
    return message


def _action(oid: str, kind: str, action_type: str, params: dict[str, Any]) -> dict[str, Any]:
    return {"actionType": action_type, "actionId": f"{oid}/{kind}", "blockingType": "HARD",
            "actionParameters": [{"key": k, "value": v} for k, v in params.items()]}


def order(header: Header, oid: str, nodes: Sequence[RouteNode], *, map_id: str,
          pick_index: int, pick: tuple[str, dict[str, Any]], drop: tuple[str, dict[str, Any]],
          max_speed: float | None = None) -> dict[str, Any]:
    """One order along ``nodes``: pick at ``nodes[pick_index]``, drop at the last node."""
    if len(nodes) < 1 or not 0 <= pick_index < len(nodes):
        raise ProtocolBug(f"an order needs its pick node on the route ({pick_index}, "
                          f"{len(nodes)} nodes)")
    out_nodes = []
    for i, n in enumerate(nodes):
        actions = []
        if i == pick_index:
            actions.append(_action(oid, "pick", pick[0], pick[1]))
        if i == len(nodes) - 1:
            actions.append(_action(oid, "drop", drop[0], drop[1]))
        position: dict[str, Any] = {"x": n.x, "y": n.y, "mapId": map_id}
        if n.theta is not None:
            position["theta"] = n.theta
        out_nodes.append({"nodeId": n.id, "sequenceId": 2 * i, "released": True,
                          "nodePosition": position, "actions": actions})
    edges = []
    for i in range(len(nodes) - 1):
        edge: dict[str, Any] = {"edgeId": f"{nodes[i].id}->{nodes[i + 1].id}",
                                "sequenceId": 2 * i + 1, "released": True,
                                "startNodeId": nodes[i].id, "endNodeId": nodes[i + 1].id,
                                "actions": []}
        if max_speed is not None:
            edge["maxSpeed"] = max_speed
        edges.append(edge)
    return sealed("order", {**header("order"), "orderId": oid, "orderUpdateId": 0,
                            "nodes": out_nodes, "edges": edges})


def _instant(header: Header, action_type: str, action_id: str,
             params: dict[str, Any] | None = None) -> dict[str, Any]:
    action = {"actionType": action_type, "actionId": action_id, "blockingType": "NONE",
              "actionParameters": [{"key": k, "value": v} for k, v in (params or {}).items()]}
    return sealed("instantActions", {**header("instantActions"), "actions": [action]})


def cancel_order(header: Header, oid: str) -> dict[str, Any]:
    return _instant(header, "cancelOrder", f"{oid}/cancel")


def factsheet_request(header: Header) -> dict[str, Any]:
    return _instant(header, "factsheetRequest", f"factsheet/{header.serial}")
