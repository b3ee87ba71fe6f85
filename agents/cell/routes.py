"""Routes on the cell's route graph: where a robot drives between two locations, and how long.

Theory of operation
-------------------
A cell file may give its layout a route graph (``layout.graph``, see
:mod:`agents.cell.model`).  Every location is a node of it, at the location's
coordinates; ``graph.nodes`` adds waypoints (aisle crossings, turns) and
``graph.edges`` joins nodes, one way or both.  This module is the graph math
and nothing else: plain frozen values in, plain values out, no pydantic, no
simulator, no I/O, so the simulator, the robot agents, the loader and the
VDA 5050 backend all read one answer.

* The route between two nodes is the **shortest by length** (Dijkstra).  It
  is a property of the floor, not of a robot, so every robot takes the same
  path and an order sent to a vehicle names the same nodes the simulator
  drove.  Among routes of equal length the one with the fewest edges wins,
  then the one whose node ids come first in sorting order: the same graph
  always gives the same route, whatever order the file lists its edges in.
* A robot's **travel time** along a route is the sum over its edges of
  ``length_m / min(robot speed, edge max speed)``; handling time (``load_s``)
  is the caller's to add.
* Edge lengths are positive (the loader refuses anything else), which is what
  makes Dijkstra with a (length, edges) key and a tie-break on settled routes
  correct.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = ["Edge", "Node", "NoRoute", "Route", "RouteGraph"]


@dataclass(frozen=True)
class Node:
    """A point a robot can stop at or pass: a location or a waypoint, in metres on ``map_id``."""

    id: str
    x: float
    y: float
    theta: float | None = None   # heading at the node, radians; None: any
    map_id: str | None = None    # the map the coordinates refer to; None: the cell has none


@dataclass(frozen=True)
class Edge:
    """One drivable direction between two nodes (a two-way edge of the file is two of these)."""

    start: str
    end: str
    length_m: float
    max_speed_m_per_s: float | None = None   # None: as fast as the robot goes

    @property
    def id(self) -> str:
        """A stable id for the direction driven, e.g. ``store->mill_bay`` (VDA 5050 edgeId)."""
        return f"{self.start}->{self.end}"

    def travel_s(self, speed_m_per_s: float) -> float:
        """Seconds to drive the edge at ``speed_m_per_s``, or slower where the edge says so."""
        limit = self.max_speed_m_per_s
        return self.length_m / (speed_m_per_s if limit is None else min(speed_m_per_s, limit))


@dataclass(frozen=True)
class Route:
    """The nodes a robot passes from start to end, both included, and the edges between them.

    A route from a node to itself has that one node and no edges."""

    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]

    @property
    def length_m(self) -> float:
        return sum(e.length_m for e in self.edges)

    def travel_s(self, speed_m_per_s: float) -> float:
        """Seconds a robot of ``speed_m_per_s`` needs along the route (no handling time)."""
        return sum(e.travel_s(speed_m_per_s) for e in self.edges)


class NoRoute(LookupError):
    """No path joins the two nodes, or one of them is not on the graph."""


@dataclass
class RouteGraph:
    """Nodes and directed edges, with shortest routes computed on demand and remembered."""

    nodes: dict[str, Node]
    edges: tuple[Edge, ...]
    _out: dict[str, list[Edge]] = field(init=False, repr=False)
    _trees: dict[str, dict[str, tuple[float, int, str | None]]] = field(
        init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        self._out = {n: [] for n in self.nodes}
        for e in self.edges:
            if e.start not in self.nodes or e.end not in self.nodes:
                missing = e.start if e.start not in self.nodes else e.end
                raise NoRoute(f"edge {e.id} names node {missing!r}, which is not on the graph")
            if not e.length_m > 0:
                raise ValueError(f"edge {e.id} has length {e.length_m} m; lengths must be > 0")
            self._out[e.start].append(e)

    @classmethod
    def build(cls, nodes: Iterable[Node], edges: Iterable[tuple[str, str, float | None,
                                                                 float | None, bool]]) -> RouteGraph:
        """A graph from nodes and the file's edges ``(from, to, length_m, max_speed, both_ways)``.

        A missing length is the straight line between the two nodes."""
        by_id = {n.id: n for n in nodes}
        directed: list[Edge] = []
        for start, end, length_m, max_speed, both_ways in edges:
            if length_m is None:
                a, b = by_id[start], by_id[end]
                length_m = math.hypot(b.x - a.x, b.y - a.y)
            directed.append(Edge(start, end, length_m, max_speed))
            if both_ways:
                directed.append(Edge(end, start, length_m, max_speed))
        return cls(by_id, tuple(directed))

    # -- queries --------------------------------------------------------------------------------
    def route(self, start: str, end: str) -> Route:
        """The shortest route from ``start`` to ``end``; :class:`NoRoute` when there is none."""
        for n in (start, end):
            if n not in self.nodes:
                raise NoRoute(f"{n!r} is not a node of the route graph")
        tree = self._tree(start)
        if end not in tree:
            raise NoRoute(f"no route from {start!r} to {end!r} on the route graph")
        path = _path(tree, end)
        edges = tuple(self._edge(a, b) for a, b in zip(path, path[1:], strict=False))
        return Route(tuple(self.nodes[n] for n in path), edges)

    def reachable_from(self, start: str) -> set[str]:
        """Every node a robot at ``start`` can drive to, ``start`` included."""
        return _closure(start, {n: [e.end for e in out] for n, out in self._out.items()})

    def reaching(self, end: str) -> set[str]:
        """Every node from which a robot can drive to ``end``, ``end`` included."""
        back: dict[str, list[str]] = {n: [] for n in self.nodes}
        for e in self.edges:
            back[e.end].append(e.start)
        return _closure(end, back)

    # -- Dijkstra ---------------------------------------------------------------------------------
    def _tree(self, start: str) -> dict[str, tuple[float, int, str | None]]:
        """(length, edge count, predecessor) of the best route from ``start`` to every node
        it reaches, built once per start.

        A tie in (length, edge count) goes to the predecessor whose own route sorts first
        by node ids; both are settled when the tie is seen (lengths are > 0), so their
        routes are final, and the comparison costs a walk only on an exact tie."""
        tree = self._trees.get(start)
        if tree is not None:
            return tree
        best: dict[str, tuple[float, int, str | None]] = {start: (0.0, 0, None)}
        tree = {}
        heap: list[tuple[float, int, str]] = [(0.0, 0, start)]
        while heap:
            length, hops, node = heapq.heappop(heap)
            if node in tree:
                continue
            tree[node] = best[node]
            for e in self._out[node]:
                if e.end in tree:
                    continue
                key = (length + e.length_m, hops + 1)
                known = best.get(e.end)
                if known is None or key < known[:2]:
                    best[e.end] = (*key, node)
                    heapq.heappush(heap, (*key, e.end))
                elif key == known[:2] and _path(tree, node) < _path(tree, known[2]):
                    best[e.end] = (*key, node)
        self._trees[start] = tree
        return tree

    def _edge(self, start: str, end: str) -> Edge:
        # Parallel edges: the shortest, then the fastest, is the one the route used.
        return min((e for e in self._out[start] if e.end == end),
                   key=lambda e: (e.length_m, -(e.max_speed_m_per_s or math.inf)))


def _path(tree: dict[str, tuple[float, int, str | None]], end: str | None) -> list[str]:
    """Node ids from the tree's root to ``end``, by following the predecessors back."""
    path: list[str] = []
    while end is not None:
        path.append(end)
        end = tree[end][2]
    return path[::-1]


def _closure(start: str, step: dict[str, list[str]]) -> set[str]:
    seen, todo = {start}, [start]
    while todo:
        for n in step[todo.pop()]:
            if n not in seen:
                seen.add(n)
                todo.append(n)
    return seen
