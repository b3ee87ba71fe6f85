"""Route graphs: the pure module (agents/cell/routes.py), the cell's geometry built on it,
``autocell validate``'s checks of a graph, and a virtual-time run of the graph demo cell
whose event log drives the routes the graph gives, in the time the graph gives.

Travel times in the log are checked against lengths computed here from the YAML file
itself (coordinates and ``length_m``), not from the module under test.
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import pytest
import yaml

from agents.cell.build import build_agents
from agents.cell.routes import Edge, Node, NoRoute, RouteGraph
from agents.robot import RobotAgent
from ops.config import ConfigError, cell_from_dict, load_cell, validate_command
from ops.config.fault_files import load_faults
from sim_bridge.invariants import parse
from sim_bridge.report import build_report
from sim_bridge.virtual import VirtualCell

CELLS = Path(__file__).resolve().parents[1] / "cell_configs"
GRAPH_CELL = CELLS / "demo_cell_graph.yaml"


def graph(edges: list[tuple[str, str, float | None, float | None, bool]],
          points: dict[str, tuple[float, float]]) -> RouteGraph:
    return RouteGraph.build([Node(n, x, y) for n, (x, y) in points.items()], edges)


SQUARE = {"a": (0.0, 0.0), "b": (10.0, 0.0), "c": (10.0, 10.0), "d": (0.0, 10.0)}


# -- the pure module -------------------------------------------------------------------------

def test_shortest_route_by_length_with_its_nodes_and_edges() -> None:
    g = graph([("a", "b", None, None, True), ("b", "c", None, None, True),
               ("a", "c", 25.0, None, True)], SQUARE)
    r = g.route("a", "c")
    assert [n.id for n in r.nodes] == ["a", "b", "c"]
    assert [e.id for e in r.edges] == ["a->b", "b->c"]
    assert r.length_m == 20.0
    assert r.nodes[1] == Node("b", 10.0, 0.0)
    assert g.route("c", "a").length_m == 20.0                  # two-way edges
    assert g.route("a", "a").nodes == (Node("a", 0.0, 0.0),) and g.route("a", "a").edges == ()


def test_travel_time_is_length_over_the_lower_of_robot_and_edge_speed() -> None:
    g = graph([("a", "b", None, 0.5, True), ("b", "c", None, None, True)], SQUARE)
    r = g.route("a", "c")
    assert r.travel_s(2.0) == pytest.approx(10 / 0.5 + 10 / 2.0)
    assert r.travel_s(0.25) == pytest.approx(20 / 0.25)       # slower than the limit
    assert Edge("x", "y", 3.0).travel_s(1.5) == 2.0


def test_one_way_edges_and_unreachable_nodes() -> None:
    g = graph([("a", "b", None, None, False), ("b", "c", None, None, True)],
              {**SQUARE, "e": (50.0, 50.0)})
    assert [n.id for n in g.route("a", "c").nodes] == ["a", "b", "c"]
    with pytest.raises(NoRoute, match="no route from 'c' to 'a'"):
        g.route("c", "a")
    with pytest.raises(NoRoute, match="no route from 'a' to 'e'"):
        g.route("a", "e")
    with pytest.raises(NoRoute, match="'zz' is not a node"):
        g.route("a", "zz")
    assert g.reachable_from("a") == {"a", "b", "c"}
    assert g.reaching("a") == {"a"}
    assert g.reaching("c") == {"a", "b", "c"}


@pytest.mark.parametrize("order", [0, 1, 2, 3])
def test_ties_are_broken_the_same_way_whatever_the_file_order(order: int) -> None:
    # a->b->c and a->d->c are both 20 m, two edges: the node ids decide (b before d).
    edges: list[tuple[str, str, float | None, float | None, bool]] = [
        ("a", "b", None, None, True), ("b", "c", None, None, True),
        ("a", "d", None, None, True), ("d", "c", None, None, True)]
    shuffled = edges[order:] + edges[:order]
    points = dict(reversed(SQUARE.items())) if order % 2 else SQUARE
    g = graph(shuffled, points)
    assert [n.id for n in g.route("a", "c").nodes] == ["a", "b", "c"]
    assert [n.id for n in g.route("c", "a").nodes] == ["c", "b", "a"]


@pytest.mark.parametrize("seed", range(5))
def test_a_grid_of_ties_gives_the_route_whose_node_ids_sort_first(seed: int) -> None:
    # 252 equally short routes corner to corner: the first by node ids goes along row 0.
    k = 6
    edges: list[tuple[str, str, float | None, float | None, bool]] = [
        (f"{i}{j}", f"{i + di}{j + dj}", None, None, True)
        for i in range(k) for j in range(k) for di, dj in ((1, 0), (0, 1))
        if i + di < k and j + dj < k]
    random.Random(seed).shuffle(edges)
    points = {f"{i}{j}": (float(i), float(j)) for i in range(k) for j in range(k)}
    g = graph(edges, points)
    assert [n.id for n in g.route("00", "55").nodes] == [
        "00", "01", "02", "03", "04", "05", "15", "25", "35", "45", "55"]
    assert [n.id for n in g.route("55", "00").nodes] == [
        "55", "45", "35", "25", "15", "05", "04", "03", "02", "01", "00"]


def test_fewer_edges_win_a_tie_in_length() -> None:
    # a->c direct is 20 m by length_m; a->b->c is 20 m too, in two edges.
    g = graph([("a", "b", None, None, True), ("b", "c", None, None, True),
               ("a", "c", 20.0, None, True)], SQUARE)
    assert [e.id for e in g.route("a", "c").edges] == ["a->c"]


def test_parallel_edges_use_the_fastest_of_the_shortest() -> None:
    g = graph([("a", "b", None, 0.5, True), ("a", "b", None, 2.0, True)], SQUARE)
    assert g.route("a", "b").edges == (Edge("a", "b", 10.0, 2.0),)


def test_a_graph_refuses_dangling_edges_and_lengths_not_above_zero() -> None:
    with pytest.raises(NoRoute, match="node 'zz'"):
        RouteGraph({"a": Node("a", 0, 0)}, (Edge("a", "zz", 1.0),))
    with pytest.raises(ValueError, match="lengths must be > 0"):
        RouteGraph({"a": Node("a", 0, 0), "b": Node("b", 0, 0)}, (Edge("a", "b", 0.0),))


# -- the cell's geometry -----------------------------------------------------------------------

def small_cell(**layout: Any) -> dict[str, Any]:
    return {
        "cell": "g",
        "layout": {"locations": [{"id": "a", "x": 0, "y": 0}, {"id": "b", "x": 10, "y": 0},
                                 {"id": "c", "x": 10, "y": 10}], **layout},
        "machines": [{"id": "m1", "location": "c", "capabilities": {"x": 1}}],
        "robots": [{"id": "r1", "home": "a", "speed_m_per_s": 2.0, "load_s": 1.0,
                    "transport_s": {"b": {"a": 99.0}}}],
    }


def test_travel_s_table_first_then_graph_then_straight_line() -> None:
    straight = cell_from_dict(small_cell())
    assert straight.travel_s("r1", "a", "c") == math.hypot(10, 10) / 2.0
    assert straight.route("a", "c").length_m == math.hypot(10, 10)
    with_graph = cell_from_dict(small_cell(map="hall", graph={"edges": [
        {"from": "a", "to": "b"}, {"from": "b", "to": "c", "max_speed_m_per_s": 1.0}]}))
    assert with_graph.travel_s("r1", "a", "c") == 10 / 2.0 + 10 / 1.0
    assert with_graph.travel_s("r1", "a", "b") == 99.0            # the table wins, both ways
    assert straight.travel_s("r1", "a", "b") == 99.0
    route = with_graph.route("a", "c")
    assert [(n.id, n.map_id) for n in route.nodes] == [("a", "hall"), ("b", "hall"),
                                                        ("c", "hall")]
    agent = build_agents(with_graph, 0)["r1"]
    assert isinstance(agent, RobotAgent)
    assert agent.travel_s[("a", "c")] == 15.0 and agent.travel_s[("c", "a")] == 15.0
    assert agent.travel_s[("b", "a")] == 99.0


def test_a_copy_with_another_graph_routes_on_the_new_one() -> None:
    cfg = cell_from_dict(small_cell(graph={"edges": [{"from": "a", "to": "b"},
                                                     {"from": "b", "to": "c"}]}))
    assert cfg.route("a", "c").length_m == 20.0
    assert cfg.layout.graph is not None
    shortcut = cfg.layout.graph.model_copy(update={"edges": [
        *cfg.layout.graph.edges, cfg.layout.graph.edges[0].model_copy(update={"end": "c"})]})
    copy = cfg.layout.model_copy(update={"graph": shortcut})
    route_graph = copy.route_graph()
    assert route_graph is not None and route_graph.route("a", "c").length_m == math.hypot(10, 10)


def test_existing_cells_have_no_graph_and_keep_straight_lines() -> None:
    demo = load_cell(CELLS / "demo_cell.yaml")
    assert demo.layout.graph is None and demo.layout.route_graph() is None
    assert demo.travel_s("agv1", "store", "ship") == 36.0 / 1.2


# -- validate ------------------------------------------------------------------------------------

BASE = """\
cell: g
layout:
  map: hall
  locations:
    - {id: a, x: 0, y: 0, theta: 0.5}
    - {id: b, x: 10, y: 0}
    - {id: c, x: 10, y: 10, map: hall2}
  graph:
    nodes:
      - {id: w, x: 5, y: 5}
    edges:
      - {from: a, to: w}
      - {from: w, to: b}
      - {from: b, to: c}
machines:
  - {id: m1, location: c, capabilities: {x: 1}}
robots:
  - {id: r1, home: a}
"""
LINES = BASE.splitlines()


def edit(line: int, new: str, *more: tuple[int, str]) -> str:
    lines = list(LINES)
    for n, text in ((line, new), *more):
        lines[n - 1] = text
    return "\n".join(lines) + "\n"


GRAPH_CASES = [
    # (name, line to replace, new text, line reported, path reported, fragment)
    ("duplicate node id", 10, "      - {id: b, x: 5, y: 5}", 10, "layout.graph.nodes[0].id",
     "duplicate node id 'b', already used by layout.locations[1].id (line 6)"),
    ("dangling edge", 14, "      - {from: b, to: cc}", 14, "layout.graph.edges[2].to",
     "unknown node 'cc' (did you mean 'c'?)"),
    ("edge to itself", 14, "      - {from: b, to: b}", 14, "layout.graph.edges[2].to",
     "back to itself"),
    ("zero length by coordinates", 10, "      - {id: w, x: 0, y: 0}", 12,
     "layout.graph.edges[0]", "stand at the same point"),
    ("negative length", 14, "      - {from: b, to: c, length_m: -3}", 14,
     "layout.graph.edges[2].length_m", "greater than 0"),
    ("zero max speed", 14, "      - {from: b, to: c, max_speed_m_per_s: 0}", 14,
     "layout.graph.edges[2].max_speed_m_per_s", "greater than 0"),
    ("location not reachable", 14, "      - {from: c, to: b, bidirectional: false}", 7,
     "layout.locations[2].id", "location 'c' cannot be reached from 'a'"),
    ("no route back", 14, "      - {from: b, to: c, bidirectional: false}", 7,
     "layout.locations[2].id", "location 'c' has no route back to 'a'"),
    ("location on no edge", 14, "      - {from: w, to: a}", 7,
     "layout.locations[2].id", "location 'c' is on no edge"),
    ("robot home on no edge", 18, ("  - {id: r1, home: c}", (14, "      - {from: w, to: a}")),
     18, "robots[0].home",
     "home 'c' is on no edge of the route graph"),
    ("typo in an edge key", 14, "      - {from: b, to: c, bidirectionl: false}", 14,
     "layout.graph.edges[2].bidirectionl", "did you mean 'bidirectional'?"),
    ("theta out of range", 5, "    - {id: a, x: 0, y: 0, theta: 4}", 5,
     "layout.locations[0].theta", "less than or equal to 3.14"),
]


def test_the_base_graph_cell_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "g.yaml"
    path.write_text(BASE)
    assert validate_command(path)[0] == 0
    cfg = load_cell(path)
    assert [(n.id, n.map_id, n.theta) for n in cfg.route("a", "c").nodes] == [
        ("a", "hall", 0.5), ("w", "hall", None), ("b", "hall", None), ("c", "hall2", None)]


@pytest.mark.parametrize(("line", "new", "want_line", "want_path", "fragment"),
                         [c[1:] for c in GRAPH_CASES], ids=[c[0] for c in GRAPH_CASES])
def test_each_graph_error_points_at_file_line_and_path(
        tmp_path: Path, line: int, new: str | tuple[str, tuple[int, str]], want_line: int,
        want_path: str, fragment: str) -> None:
    path = tmp_path / "g.yaml"
    path.write_text(edit(line, new) if isinstance(new, str) else edit(line, *new))
    code, report = validate_command(path)
    assert code == 2
    prefix = f"{path}:{want_line}: {want_path}: "
    matching = [row for row in report.splitlines() if row.startswith(prefix)]
    assert matching, f"no issue starting {prefix!r} in:\n{report}"
    assert any(fragment in row for row in matching), report


def test_a_broken_edge_list_is_not_also_reported_as_unreachable(tmp_path: Path) -> None:
    path = tmp_path / "g.yaml"
    path.write_text(edit(14, "      - {from: b, to: cc}"))
    with pytest.raises(ConfigError) as err:
        load_cell(path)
    assert [i.path for i in err.value.issues] == ["layout.graph.edges[2].to"]


# -- a virtual-time run on the graph ---------------------------------------------------------------

def file_lengths() -> tuple[dict[tuple[str, str], tuple[float, float]], dict[str, Any]]:
    """(from, to) -> (length_m, max speed) for every drivable direction, read from the YAML."""
    raw = yaml.safe_load(GRAPH_CELL.read_text())
    layout = raw["layout"]
    at = {p["id"]: (p["x"], p["y"]) for p in [*layout["locations"], *layout["graph"]["nodes"]]}
    out: dict[tuple[str, str], tuple[float, float]] = {}
    for e in layout["graph"]["edges"]:
        a, b = e["from"], e["to"]
        length = e.get("length_m", math.dist(at[a], at[b]))
        limit = e.get("max_speed_m_per_s", math.inf)
        out[(a, b)] = (length, limit)
        if e.get("bidirectional", True):
            out[(b, a)] = (length, limit)
    return out, raw


@pytest.fixture(scope="module")
def graph_run() -> tuple[VirtualCell, dict[str, Any]]:
    cell = VirtualCell(load_cell(GRAPH_CELL))
    cell.run()
    return cell, build_report(cell)


def test_the_graph_cell_completes_every_order_with_every_invariant(
        graph_run: tuple[VirtualCell, dict[str, Any]]) -> None:
    cell, report = graph_run
    assert report["ended_by"] == "completed"
    assert report["orders_completed"] == report["orders_total"] == 24
    assert report["orders_lost"] == 0
    assert report["invariant_violations"] == {}
    assert all(report["invariants"].values()), report["invariants"]


def test_moves_in_the_event_log_drive_the_graph_in_the_graph_s_time(
        graph_run: tuple[VirtualCell, dict[str, Any]]) -> None:
    cell, _ = graph_run
    edges, raw = file_lengths()
    robots = {r["id"]: r for r in raw["robots"]}
    evs = parse(cell.events)
    starts = [e for e in evs if e["ev"] == "move_start"]
    arrived = {e["task"]: e for e in evs if e["ev"] == "arrived"}
    assert len(starts) >= 24 and all("route" in e for e in starts)
    checked = 0
    for ev in starts:
        robot = robots[ev["robot"]]
        speed = robot["speed_m_per_s"]
        route = ev["route"]
        assert ev["origin"] in route and route[-1] == ev["destination"]
        legs = list(zip(route, route[1:], strict=False))
        assert all(leg in edges for leg in legs), legs           # only edges of the file
        length = sum(edges[leg][0] for leg in legs)
        drive = sum(edges[leg][0] / min(speed, edges[leg][1]) for leg in legs) + robot["load_s"]
        assert ev["length_m"] == pytest.approx(length, abs=1e-5)
        assert ev["drive_s"] == pytest.approx(drive, abs=1e-5)
        done = arrived.get(ev["task"])
        if done is not None:                                     # not aborted by a fault
            assert done["t"] - ev["t"] == pytest.approx(drive, abs=1e-6)
            checked += 1
    assert checked >= 24


def test_routes_in_the_log_respect_one_way_edges_and_break_ties_by_name(
        graph_run: tuple[VirtualCell, dict[str, Any]]) -> None:
    cfg = load_cell(GRAPH_CELL)
    assert [n.id for n in cfg.route("store", "ship").nodes] == ["store", "west", "east", "ship"]
    # Back west the one-way aisle is closed: two routes of equal length, the names decide.
    assert [n.id for n in cfg.route("ship", "store").nodes] == [
        "ship", "east", "drill_bay", "mill_bay", "west", "store"]
    cell, _ = graph_run
    for ev in parse(cell.events):
        if ev["ev"] == "move_start":
            assert ("east", "west") not in set(zip(ev["route"], ev["route"][1:], strict=False))


def test_robots_breaking_down_mid_route_still_complete_every_order() -> None:
    cfg = load_cell(GRAPH_CELL)
    cell = VirtualCell(cfg, faults=load_faults(CELLS / "faults" / "breakdowns.yaml", cfg))
    cell.run()
    report = build_report(cell)
    assert report["ended_by"] == "completed" and report["orders_completed"] == 24
    assert report["invariant_violations"] == {}
    evs = parse(cell.events)
    assert any(e["ev"] == "move_abort" for e in evs)             # a robot stopped on its way
    started = {e["task"] for e in evs if e["ev"] == "move_start"}
    assert {e["task"] for e in evs if e["ev"] == "arrived"} <= started


def test_the_bids_use_the_graph_too() -> None:
    cfg = load_cell(GRAPH_CELL)
    agv2 = build_agents(cfg, 0)["agv2"]
    assert isinstance(agv2, RobotAgent)
    # turn_bay -> qc_bay is the narrow aisle (0.4 m/s): 12 m / 0.4 = 30 s at agv2's 1.0 m/s.
    assert agv2.travel("turn_bay", "qc_bay") == pytest.approx(30.0)
    assert agv2.travel("store", "ship") == pytest.approx(36.0)   # 6 + 24 + 6 m at 1 m/s
