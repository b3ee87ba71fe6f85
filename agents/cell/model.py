"""The cell configuration as pydantic v2 models.

A cell file describes *what exists* (locations, machines, robots), *what is
made* (products and their routings), *what is ordered* (orders) and *how the
agents behave* (negotiation, escalation, simulation).  These models check
everything a single value or a single object can check on its own: types,
ranges, identifier syntax, unknown keys.  Checks that need the whole cell —
does any machine offer this capability, does this location exist, is this id
used twice — live in :mod:`ops.config.loader`, which also knows the YAML line
of every value.  Build configs with :func:`ops.config.load_cell` or
:func:`ops.config.cell_from_dict`, not with ``CellConfig.model_validate``
alone, or the cross-references go unchecked.

Conventions: durations end in ``_s`` (seconds), absolute simulation times in
``_at`` (seconds since the start of the run), distances are metres, power is
kW, rates and probabilities are fractions in 0..1.  Every model forbids
unknown keys so a typo is an error, not a silently ignored setting, and every
model is frozen: a config is a value that the same seed must turn into the
same run, so nobody may patch it in flight (use ``model_copy(update=...)``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    StringConstraints,
    Tag,
    model_validator,
)

from agents.cell import routes
from agents.cell.energy import EnergySettings, PowerDraw
from agents.cell.equipment import OpcUaEquipment, Vda5050Vehicle
from agents.cell.limits import (
    MAX_COORDINATE_M,
    MAX_LEASE_S,
    MAX_PRIORITY,
    MAX_QUANTITY,
    MAX_REPLY_DEADLINE_S,
    MAX_SECONDS,
    MAX_SEED,
    MIN_TIMING_S,
)
from agents.cell.maintenance import Degradation, MaintenanceSettings

__all__ = [
    "AGENT_ID_MAX_BYTES",
    "PATTERN_HELP",
    "PLANT_BACKENDS",
    "CellConfig",
    "CountRule",
    "CountWindow",
    "EnergySettings",
    "Escalation",
    "EscalationRule",
    "Flood",
    "GraphEdge",
    "GraphNode",
    "HostSpec",
    "LateRule",
    "Layout",
    "LayoutGraph",
    "Location",
    "Machine",
    "NegotiationSettings",
    "Network",
    "NoResourceRule",
    "Order",
    "PowerDraw",
    "Product",
    "Robot",
    "RoutingStep",
    "Security",
    "Sim",
    "Strategy",
    "StrategyChoice",
    "StrategyWithParams",
]

#: Agent ids travel in frame 0 of every envelope, which the wire format caps.
AGENT_ID_MAX_BYTES = 64

_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
_CELL_PATTERN = r"^[a-z0-9_.-]+$"
# A built-in strategy name ("earliest_finish") or an import path ("pkg.mod:Class").
STRATEGY_PATTERN = r"^([A-Za-z_][A-Za-z0-9_]*|[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_.]*)$"
_ENDPOINT_PATTERN = r"^(tcp|ipc|inproc)://\S+$"

#: What each pattern means in words, for error messages (a regex is no help to a person).
PATTERN_HELP: dict[str, str] = {
    _NAME_PATTERN: "use letters, digits, '_', '.' and '-', starting with a letter or digit",
    _CELL_PATTERN: "use lower-case letters, digits, '_', '.' and '-'",
    STRATEGY_PATTERN: "use a built-in name like 'earliest_finish' or an import path "
    "like 'my_pkg.strategies:MyStrategy'",
    _ENDPOINT_PATTERN: "use a ZeroMQ endpoint such as 'tcp://127.0.0.1:5601' (tcp, ipc or inproc)",
}

Name = Annotated[
    str, StringConstraints(pattern=_NAME_PATTERN, min_length=1, max_length=AGENT_ID_MAX_BYTES)
]
"""Identifier of a location, machine, robot, product, operation, order, capability or host."""

CellId = Annotated[str, StringConstraints(pattern=_CELL_PATTERN, min_length=1, max_length=64)]
StrategyRef = Annotated[str, StringConstraints(pattern=STRATEGY_PATTERN)]
Seconds = Annotated[float, Field(ge=0, le=MAX_SECONDS)]
PositiveSeconds = Annotated[float, Field(gt=0, le=MAX_SECONDS)]
Fraction = Annotated[float, Field(ge=0, le=1)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# --------------------------------------------------------------------------- layout


Radians = Annotated[float, Field(ge=-math.pi, le=math.pi)]
"""A heading in radians, -pi..pi, counter-clockwise from the map's x axis (VDA 5050 theta)."""


class Location(_Model):
    """A named point on the shop floor where parts wait and robots stop.

    With a route graph (``layout.graph``) a location is also a node of it, with the
    location's id and coordinates: edges name locations directly."""

    id: Name = Field(description="Location id, unique among locations, e.g. `store` or `bay1`.")
    x: float = Field(ge=-MAX_COORDINATE_M, le=MAX_COORDINATE_M,
                     description="X coordinate in metres (robots travel the straight line, or "
                     "the route graph when the layout has one).")
    y: float = Field(ge=-MAX_COORDINATE_M, le=MAX_COORDINATE_M,
                     description="Y coordinate in metres.")
    theta: Radians | None = Field(
        default=None,
        description="Heading a robot stops in at this location, radians (-pi..pi, "
        "counter-clockwise from the x axis); absent: any heading.")
    map: Name | None = Field(
        default=None,
        description="Id of the map the coordinates refer to (VDA 5050 mapId); absent: the "
        "layout's `map`.")


class GraphNode(_Model):
    """A waypoint of the route graph that is no location: a crossing, a turn, a passing bay."""

    id: Name = Field(description="Node id, unique among graph nodes and locations.")
    x: float = Field(ge=-MAX_COORDINATE_M, le=MAX_COORDINATE_M,
                     description="X coordinate in metres.")
    y: float = Field(ge=-MAX_COORDINATE_M, le=MAX_COORDINATE_M,
                     description="Y coordinate in metres.")
    theta: Radians | None = Field(
        default=None, description="Heading at the node, radians (-pi..pi); absent: any heading.")
    map: Name | None = Field(
        default=None, description="Map id of the coordinates; absent: the layout's `map`.")


class GraphEdge(_Model):
    """A drivable segment between two nodes (locations or waypoints)."""

    start: Name = Field(alias="from", description="Node id (a location or a graph node) the "
                        "edge starts at.")
    end: Name = Field(alias="to", description="Node id the edge ends at; not `from`.")
    length_m: float | None = Field(
        default=None, gt=0,
        description="Driven length in metres (> 0); absent: the straight line between the two "
        "nodes.")
    max_speed_m_per_s: float | None = Field(
        default=None, gt=0,
        description="Speed limit on the edge, metres per second (> 0); a robot drives at the "
        "lower of this and its own speed. Absent: no limit.")
    bidirectional: bool = Field(
        default=True, description="Drivable both ways (default); false: only from -> to.")


class LayoutGraph(_Model):
    """Where robots may drive: the locations plus waypoints, joined by edges.

    Every location is a node; ``nodes`` lists only the extra waypoints.  A robot
    drives the shortest route by length, and needs length / min(its speed, the
    edge's max speed) on each edge (agents/cell/routes.py)."""

    nodes: list[GraphNode] = Field(
        default_factory=list,
        description="Waypoints besides the locations (every location is a node already).")
    edges: list[GraphEdge] = Field(
        min_length=1, description="Segments robots drive, between locations and waypoints.")


class Layout(_Model):
    """Where things are, and where parts enter and leave the cell."""

    locations: list[Location] = Field(
        min_length=1, description="Every location of the cell, in metres; at least one."
    )
    input: Name | None = Field(
        default=None,
        description="Location where the raw parts of every order start. "
        "Default: the first location.",
    )
    output: Name | None = Field(
        default=None,
        description="Location where finished parts are delivered. Default: the input location.",
    )
    map: Name | None = Field(
        default=None,
        description="Map id of every coordinate in the layout (VDA 5050 mapId) unless a "
        "location or node gives its own.",
    )
    graph: LayoutGraph | None = Field(
        default=None,
        description="Route graph robots drive on: `nodes` (waypoints; every location is a node "
        "too) and `edges` ({from, to, length_m?, max_speed_m_per_s?, bidirectional?}). Given: "
        "travel times are the shortest route's, edge by edge; absent: straight lines.",
    )

    # -- transport (issue 18, engineer): parts between locations need robots, or a word that
    # they do not.  Checked in ops/config/loader.py (_check_transport).
    transport: Literal["instantaneous"] | None = Field(
        default=None,
        description="`instantaneous`: parts move between locations in no time and no robot "
        "carries them (a model that ignores transport). Absent: a cell whose machines, input "
        "and output stand at more than one location must have robots, else `validate` "
        "refuses it (parts would teleport and the makespan would be optimistic).",
    )

    _routes: tuple[LayoutGraph, routes.RouteGraph] | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _fill_defaults(self) -> Layout:
        # Resolve the documented defaults once, here, so every consumer reads
        # a plain location id instead of re-implementing the fallback.
        input_id = self.input if self.input is not None else self.locations[0].id
        output_id = self.output if self.output is not None else input_id
        if (input_id, output_id) == (self.input, self.output):
            return self
        return self.model_copy(update={"input": input_id, "output": output_id})

    def route_graph(self) -> routes.RouteGraph | None:
        """The route graph as :mod:`agents.cell.routes` computes on it; None without one.

        Built once per graph and kept (routes found are remembered in it); a copy of the
        layout with another graph builds its own."""
        if self.graph is None:
            return None
        if self._routes is None or self._routes[0] is not self.graph:
            places: list[Location | GraphNode] = [*self.locations, *self.graph.nodes]
            nodes = [routes.Node(p.id, p.x, p.y, p.theta, p.map or self.map) for p in places]
            edges = [(e.start, e.end, e.length_m, e.max_speed_m_per_s, e.bidirectional)
                     for e in self.graph.edges]
            self._routes = (self.graph, routes.RouteGraph.build(nodes, edges))
        return self._routes[1]


# --------------------------------------------------------------------------- resources

#: Plant backends a resource may be driven by (sim_bridge/plant_api.py); the gateway
#: (``autocell plant``) runs one per resource.  ``embedded`` is the simulator.
PLANT_BACKENDS: tuple[str, ...] = ("embedded", "opcua", "vda5050")


def _check_backend(value: str) -> str:
    if value not in PLANT_BACKENDS:
        raise ValueError(
            f"unknown plant backend {value!r}: use 'embedded' (the simulator), 'opcua' "
            "(machines) or 'vda5050' (robots)")
    return value


Backend = Annotated[
    str,
    AfterValidator(_check_backend),
    Field(json_schema_extra={"enum": list(PLANT_BACKENDS)}),
]
"""The plant backend of one machine or robot (``embedded`` by default)."""


class Machine(_Model):
    """One machine: what it can do, how fast, how often it breaks."""

    id: Name = Field(description="Machine id; also its agent id, unique among all agents.")
    location: Name = Field(description="Location id where the machine stands.")
    capabilities: dict[Name, PositiveSeconds] = Field(
        description="Capability name -> processing time in seconds per unit (> 0)."
    )
    setup_s: Seconds = Field(
        default=0.0, description="Changeover time in seconds when the capability changes (>= 0)."
    )
    power_kw: PowerDraw = Field(
        default_factory=PowerDraw,
        description="Power draw in kW by state: idle and busy, and optionally setup, standby, "
        "off, busy per capability and the wake-up from standby and off (agents/cell/energy.py).",
    )
    mtbf_s: PositiveSeconds | None = Field(
        default=None,
        description="Mean time between failures in seconds; null = never breaks in the simulator.",
    )
    mttr_s: PositiveSeconds | None = Field(
        default=None,
        description="Mean time to repair in seconds; required when mtbf_s is set, "
        "also used for repair ETAs.",
    )
    scrap_rate: Fraction = Field(
        default=0.0, description="Probability that an operation fails quality (0..1)."
    )
    backend: Backend = Field(
        default="embedded",
        description="Plant backend that drives the machine under `autocell plant`: "
        "`embedded` (the simulator) or `opcua` (a real machine; see `opcua`). Virtual-time "
        "runs (`autocell run`) simulate every machine.",
    )
    opcua: OpcUaEquipment | None = Field(
        default=None,
        description="How the machine is reached when `backend` is `opcua`: endpoint, profile, "
        "security, readings (docs/equipment.md).",
    )
    # -- maintenance (issue 16): wear, readings, maintenance and repair in the simulator
    degradation: Degradation | None = Field(
        default=None,
        description="Wear that grows with operating time and load, fails the machine at a "
        "seeded threshold and shows in noisy readings; maintenance and repair durations "
        "(docs/maintenance.md). Absent: breakdowns from mtbf_s only, as before.",
    )

    @model_validator(mode="after")
    def _equipment_matches_backend(self) -> Machine:
        if self.backend == "vda5050":
            raise ValueError("backend 'vda5050' drives robots; a machine is 'embedded' or "
                             "'opcua'")
        if self.backend == "opcua" and self.opcua is None:
            raise ValueError("backend 'opcua' needs an `opcua:` block with at least `endpoint`")
        if self.backend != "opcua" and self.opcua is not None:
            raise ValueError(f"an `opcua:` block is given but backend is {self.backend!r}; "
                             "set `backend: opcua` or remove the block")
        return self


class Robot(_Model):
    """A transport robot (AGV, arm, conveyor segment) that moves parts between locations."""

    id: Name = Field(description="Robot id; also its agent id, unique among all agents.")
    home: Name = Field(description="Location id where the robot starts and parks.")
    speed_m_per_s: float = Field(
        default=1.0, gt=0, description="Travel speed in metres per second (> 0)."
    )
    load_s: Seconds = Field(
        default=0.0, description="Handling time in seconds per move (loading plus unloading)."
    )
    transport_s: dict[Name, dict[Name, Seconds]] = Field(
        default_factory=dict,
        description="Optional travel times in seconds, from -> to -> seconds, overriding "
        "distance / speed (looked up in both directions).",
    )
    backend: Backend = Field(
        default="embedded",
        description="Plant backend that drives the robot under `autocell plant`: "
        "`embedded` (the simulator) or `vda5050` (a vehicle; see `vda5050`).",
    )

    vda5050: Vda5050Vehicle | None = Field(
        default=None,
        description="How the robot is reached when `backend` is `vda5050`: broker, serial "
        "number, map (docs/equipment.md).",
    )

    @model_validator(mode="after")
    def _robot_backend(self) -> Robot:
        if self.backend == "opcua":
            raise ValueError("backend 'opcua' drives machines; a robot is 'embedded' or "
                             "'vda5050'")
        if self.backend == "vda5050" and self.vda5050 is None:
            raise ValueError("backend 'vda5050' needs a `vda5050:` block with at least `broker`")
        if self.backend != "vda5050" and self.vda5050 is not None:
            raise ValueError(f"a `vda5050:` block is given but backend is {self.backend!r}; "
                             "set `backend: vda5050` or remove the block")
        return self


# --------------------------------------------------------------------------- work


class RoutingStep(_Model):
    """One step of a routing: a named operation done by any machine with the capability."""

    op: Name = Field(description="Operation name, unique within the routing, e.g. `cut`.")
    capability: Name = Field(description="Capability a machine must offer to do this operation.")


class Product(_Model):
    """A part type and the ordered operations that make it."""

    id: Name = Field(description="Product id, unique among products.")
    routing: list[RoutingStep] = Field(
        min_length=1, description="Operations in the order they must be done; at least one."
    )


class Order(_Model):
    """A production order: a quantity of one product, released at a time, due at a time."""

    id: Name = Field(description="Order id; also its agent id, unique among all agents.")
    product: Name = Field(description="Product id to make.")
    quantity: int = Field(default=1, ge=1, le=MAX_QUANTITY,
                          description="Number of units, processed as one batch.")
    release_at: Seconds = Field(
        default=0.0, description="Simulation time in seconds when the order may start (>= 0)."
    )
    due_at: PositiveSeconds = Field(
        description="Simulation time in seconds when the order should be finished; "
        "after release_at."
    )
    priority: int = Field(
        default=1,
        ge=0, le=MAX_PRIORITY,
        description="Importance for strategies and escalations; higher is more urgent.",
    )


# --------------------------------------------------------------------------- behaviour


class StrategyWithParams(_Model):
    """A strategy and the keyword arguments of its constructor, e.g.
    ``{name: slack_bidding, params: {priority_weight_s: 600}}``."""

    name: StrategyRef = Field(
        description="A built-in name, an installed plug-in or `pkg.module:Class`.")
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="Keyword arguments of the strategy's constructor; the loader checks names, "
                    "types and ranges against its signature (see docs/strategies.md).")


def _strategy_form(value: Any) -> str:
    # A mapping is the {name, params} form, anything else the bare name; a
    # discriminator (not a plain union) so an error names one form, not both.
    # The tags are no keys a file could hold, so the loader drops them from error paths.
    return "with-params" if isinstance(value, (dict, StrategyWithParams)) else "bare-name"


StrategyChoice = Annotated[
    Annotated[StrategyRef, Tag("bare-name")] | Annotated[StrategyWithParams, Tag("with-params")],
    Discriminator(_strategy_form),
]
"""A strategy named bare (``slack_bidding``) or with parameters (``{name: ..., params: ...}``)."""


class Strategy(_Model):
    """Which decision rules the agents use; names of built-ins or import paths, with parameters."""

    order: StrategyChoice = Field(
        default="earliest_finish",
        description="How order agents score proposals: a built-in name or `pkg.module:Class`, "
                    "or `{name: ..., params: {...}}`.",
    )
    resource: StrategyChoice = Field(
        default="default",
        description="How resource agents bid: a built-in name or `pkg.module:Class`, "
                    "or `{name: ..., params: {...}}`.",
    )


class NegotiationSettings(_Model):
    """Timing of the contract net and of leases (docs/architecture.md, Negotiation)."""

    reply_deadline_s: PositiveSeconds = Field(
        default=0.2, ge=MIN_TIMING_S, le=MAX_REPLY_DEADLINE_S,
        description="How long an order waits for proposals after a call, seconds."
    )
    lease_s: PositiveSeconds = Field(
        default=30.0, ge=MIN_TIMING_S, le=MAX_LEASE_S,
        description="Lifetime of an award unless renewed by heartbeats, seconds."
    )
    heartbeat_interval_s: PositiveSeconds = Field(
        default=5.0, ge=MIN_TIMING_S, le=MAX_LEASE_S,
        description="Interval between heartbeats, seconds; shorter than lease_s."
    )
    missed_heartbeats: int = Field(
        default=3, ge=1, description="Heartbeats missed in a row before a peer counts as gone."
    )
    strategy: Strategy = Field(
        default_factory=Strategy, description="Decision rules for orders and resources."
    )
    plan_ahead_ops: int = Field(
        0, ge=0,
        description="How many operations beyond the next one an order negotiates before the "
                    "parts get there (0 = negotiate each operation when its predecessor is done; "
                    "measured best on the FJSP benchmarks).")
    rehearsal_passes: int = Field(
        0, ge=0,
        description="What-if schedules the agents build by messages before the first award "
                    "(0 = none: negotiate online). The best one is then negotiated for real; "
                    "see docs/strategies.md.")
    rehearsal_pass_timeout_s: PositiveSeconds = Field(
        default=1.0,
        description="An order that has not seen a rehearsal pass end within this many seconds "
                    "stops rehearsing and negotiates with the best plan so far.")
    rehearsal_budget_share: float = Field(
        0.01, gt=0, le=1,
        description="Rehearsal stops once it has taken this share of the best plan's makespan "
                    "in cell time (it delays the first start by as much).")
    interrupted_operation: Literal["restart_elsewhere", "wait_for_repair"] = Field(
        default="restart_elsewhere",
        description="What happens to an operation whose machine faults mid-way.",
    )


class HostSpec(_Model):
    """One OS process running a group of agents."""

    name: Name = Field(description="Host name, unique among hosts.")
    endpoint: str = Field(
        pattern=_ENDPOINT_PATTERN,
        description="ZeroMQ endpoint the host binds, e.g. `tcp://127.0.0.1:5601`.",
    )
    agents: list[Name] = Field(
        default_factory=list,
        description="Agent ids (machines, robots, orders) on this host; unlisted agents "
        "run on the first host.",
    )
    metrics_port: int | None = Field(
        default=None, ge=1, le=65535,
        description="TCP port of the host's Prometheus `/metrics` (on the endpoint's address); "
                    "absent: no metrics unless `--metrics-port` is given.",
    )


class Security(_Model):
    """Where the cell's keys and certificates live."""

    keys_dir: Path | None = Field(
        default=None,
        description="Directory with the cell authority and agent keys, relative to the config "
        "file; must exist. Absent: keys are created on the fly for the run.",
    )
    opcua_secrets: Path | None = Field(
        default=None,
        description="YAML file of OPC UA credentials (`NAME: {username: ..., password: ...}`), "
        "relative to the config file; must be 0600. Default: `opcua-secrets.yaml` in the keys "
        "directory.",
    )


class Network(_Model):
    """The simulated network between agents in virtual time; off except a small latency."""

    latency_s: Seconds = Field(default=0.001, description="One-way delivery delay, seconds.")
    jitter_s: Seconds = Field(default=0.0, description="Random extra delay up to this, seconds.")
    loss: Fraction = Field(default=0.0, description="Probability a message is dropped (0..1).")
    duplication: Fraction = Field(
        default=0.0, description="Probability a message is delivered twice (0..1)."
    )
    reorder: Fraction = Field(
        default=0.0, description="Probability a message overtakes an earlier one (0..1)."
    )


class Sim(_Model):
    """Settings of the embedded simulator; same config and seed give the same run."""

    seed: int = Field(default=0, ge=0, le=MAX_SEED,
                      description="Seed of every random choice in the run.")
    network: Network = Field(default_factory=Network, description="Simulated network faults.")
    sensor_interval_s: PositiveSeconds = Field(
        default=60.0, description="Interval between simulated sensor readings, seconds."
    )
    identity: Name = Field(
        default="sim",
        description="Agent id of the plant process (the gateway, `autocell plant`) on the bus, "
        "with certificate role `sim`: hosts send plant commands to it and accept plant events "
        "only from it.",
    )
    endpoint: str = Field(
        default="tcp://127.0.0.1:5600", pattern=_ENDPOINT_PATTERN,
        description="ZeroMQ endpoint the simulator process binds under `autocell up` (the "
                    "remote plant protocol).",
    )
    metrics_port: int | None = Field(
        default=None, ge=1, le=65535,
        description="TCP port of the simulator process's Prometheus `/metrics` (plant KPIs, "
                    "machine states); absent: no metrics unless `--metrics-port` is given.",
    )


class EscalationRule(_Model):
    """One non-routine situation: whether it goes to a supervisor, and how urgently.

    ``true`` / ``false`` alone is shorthand for ``{enabled: true|false}``.
    """

    enabled: bool = Field(default=True, description="Escalate this situation (false: agents "
                          "handle it alone, as before).")
    priority: int = Field(default=2, ge=1, le=4,
                          description="Priority of the escalation, 1 (highest) .. 4 (lowest).")

    @model_validator(mode="before")
    @classmethod
    def _bool_shorthand(cls, data: object) -> object:
        return {"enabled": data} if isinstance(data, bool) else data


class NoResourceRule(EscalationRule):
    """No live resource can perform an operation (every capable one is down)."""

    priority: int = Field(default=1, ge=1, le=4,
                          description="Priority of the escalation, 1 (highest) .. 4 (lowest).")
    max_wait_s: Seconds = Field(
        default=600.0,
        description="Routine while the expected wait (time already waited plus the earliest "
        "repair estimate) stays within this many seconds; beyond it, or with no estimate, "
        "escalate.")


class LateRule(EscalationRule):
    """Re-routing after a failure would make the order late by more than ``late_by_s``."""

    late_by_s: Seconds = Field(
        default=300.0,
        description="Escalate when the best re-route would finish the order more than this "
        "many seconds after due_at.")


class CountRule(EscalationRule):
    """A threshold of `count` events within a sliding window of `window_s` seconds."""

    count: int = Field(ge=1, description="Number of events that trips the threshold.")
    window_s: PositiveSeconds = Field(description="Sliding window length, seconds.")


CountWindow = CountRule   # the name of earlier versions


class RepeatFaultsRule(CountRule):
    """One resource faults `count` times within `window_s` — beyond what its MTBF predicts."""

    count: int = Field(default=3, ge=1, description="Number of faults that trips the threshold.")
    window_s: PositiveSeconds = Field(default=3600.0, description="Sliding window length, seconds.")

    beyond_mtbf: bool = Field(
        default=True,
        description="For a machine with an MTBF, raise the threshold by the faults its MTBF "
        "predicts within the window (window_s / mtbf_s, rounded): a machine that breaks as "
        "often as it was specified to is routine. false: `count` alone.")


class RejectBurstRule(CountRule):
    """`count` messages rejected (forged, replayed, forbidden...) within `window_s`."""

    priority: int = Field(default=1, ge=1, le=4,
                          description="Priority of the escalation, 1 (highest) .. 4 (lowest).")
    count: int = Field(default=20, ge=1, description="Rejected messages that trip the threshold.")
    window_s: PositiveSeconds = Field(default=60.0, description="Sliding window length, seconds.")


class QualityRule(EscalationRule):
    """A part fails its quality check: re-made automatically, escalated when it keeps failing."""

    priority: int = Field(default=3, ge=1, le=4,
                          description="Priority of the escalation, 1 (highest) .. 4 (lowest).")
    count: int = Field(
        default=2, ge=1,
        description="Escalate when one operation of an order has failed its quality check this "
        "many times; the failures before are routine: the operation is called for again and "
        "re-made (1: escalate every reject).")


class Flood(_Model):
    """More than `count` escalations within `window_s` seconds raise the flood flag."""

    count: int = Field(default=10, ge=1, description="Escalations that make a flood (more than).")
    window_s: PositiveSeconds = Field(default=600.0, description="Window, seconds.")


class Escalation(_Model):
    """When agents hand a decision to a human supervisor (docs/escalation.md).

    Six non-routine situations, each with on/off and a priority (1 = highest),
    and the ISA-18.2 life-cycle deadlines, all counted from when the
    escalation is raised.
    """

    no_capable_resource: NoResourceRule = Field(
        default_factory=NoResourceRule,
        description="No live resource can perform an operation for longer than max_wait_s.")
    late_reroute: LateRule = Field(
        default_factory=LateRule,
        description="Re-routing would make an order late by more than late_by_s.")
    repeat_faults: RepeatFaultsRule = Field(
        default_factory=RepeatFaultsRule,
        description="Escalate when one resource faults this often within the window (plus, "
        "with beyond_mtbf, the faults its MTBF predicts there).",
    )
    restart_intensity: EscalationRule = Field(
        default_factory=lambda: EscalationRule(priority=1),
        description="A supervisor gave up restarting a host (restart intensity exceeded).")
    equipment_refuses: EscalationRule = Field(
        default_factory=EscalationRule,
        description="Real equipment keeps refusing starts (`refusals_to_escalate` in a row, "
        "e.g. access denied or a wrong machine mode); the gateway holds it down.")
    quality_reject: QualityRule = Field(
        default_factory=QualityRule,
        description="Escalate when one operation keeps failing its quality check (`count` "
        "failures); a single reject is re-made by the agents.",
    )
    reject_burst: RejectBurstRule = Field(
        default_factory=RejectBurstRule,
        description="Escalate a security event when this many messages are rejected "
        "(forged, replayed) within the window.",
    )
    response_deadline_s: PositiveSeconds = Field(
        default=120.0,
        description="Acknowledge within this many seconds, or the escalation is re-escalated "
        "with its priority raised by one.")
    reescalate_every_s: PositiveSeconds = Field(
        default=120.0,
        description="While still unacknowledged after a re-escalation, raise it again this "
        "often.")
    final_deadline_s: PositiveSeconds = Field(
        default=600.0,
        description="With no decision after this many seconds the safe default applies "
        "(and is recorded); longer than response_deadline_s.")
    max_shelve_s: PositiveSeconds = Field(
        default=3600.0,
        description="Longest a supervisor may shelve an escalation; it unshelves itself after.")
    flood: Flood = Field(default_factory=Flood, description="The flood rule (ISA-18.2: "
                         "more than 10 escalations in 10 minutes).")
    console_endpoint: str = Field(
        default="tcp://127.0.0.1:5599", pattern=_ENDPOINT_PATTERN,
        description="ZeroMQ endpoint the console agent binds under `autocell up` (hosts send "
                    "`escalate` there; docs/escalation.md).")

    @model_validator(mode="after")
    def _deadlines_in_order(self) -> Escalation:
        if self.final_deadline_s <= self.response_deadline_s:
            raise ValueError(
                f"final_deadline_s ({self.final_deadline_s:g}) must be longer than "
                f"response_deadline_s ({self.response_deadline_s:g}): a supervisor needs "
                "time to decide after acknowledging")
        return self


# --------------------------------------------------------------------------- the cell


class CellConfig(_Model):
    """A whole cell: layout, resources, products, orders and agent behaviour."""

    cell: CellId = Field(description="Cell id: lower-case letters, digits, `_`, `.`, `-`.")
    description: str = Field(default="", description="Free text for people.")
    layout: Layout = Field(description="Locations, and where parts enter and leave.")
    machines: list[Machine] = Field(min_length=1, description="Machines; at least one.")
    robots: list[Robot] = Field(default_factory=list, description="Transport robots.")
    products: list[Product] = Field(
        default_factory=list, description="Products and their routings."
    )
    orders: list[Order] = Field(default_factory=list, description="Production orders.")
    negotiation: NegotiationSettings = Field(
        default_factory=NegotiationSettings, description="Contract-net and lease timing."
    )
    hosts: list[HostSpec] = Field(
        default_factory=list, description="Process layout; empty: all agents in one host."
    )
    security: Security = Field(default_factory=Security, description="Keys and certificates.")
    sim: Sim = Field(default_factory=Sim, description="Embedded simulator settings.")
    escalation: Escalation = Field(
        default_factory=Escalation, description="Thresholds for escalating to supervisors."
    )
    energy: EnergySettings | None = Field(
        default=None, description="Tariff, CO2 intensity and peak cap; null: energy is only "
        "metered in kWh (agents/cell/energy.py, docs/kpis.md)."
    )
    maintenance: MaintenanceSettings | None = Field(
        default=None, description="Technicians, spare-parts stock and cost rates for machines "
        "with a degradation block (agents/cell/maintenance.py, docs/maintenance.md)."
    )

    _source: str = PrivateAttr(default="<dict>")
    _base_dir: Path | None = PrivateAttr(default=None)

    # -- provenance

    @property
    def source(self) -> str:
        """Where this config came from: the file path as given, or ``<dict>``."""
        return self._source

    def keys_dir_path(self) -> Path | None:
        """``security.keys_dir`` as an absolute path, relative to the config file's directory."""
        keys_dir = self.security.keys_dir
        if keys_dir is None:
            return None
        base = self._base_dir if self._base_dir is not None else Path.cwd()
        return (base / keys_dir.expanduser()).resolve()

    def maintenance_models_path(self) -> Path | None:
        """``maintenance.models`` as an absolute path, relative to the config file's
        directory (docs/maintenance.md, "Operations")."""
        models = self.maintenance.models if self.maintenance is not None else None
        if models is None:
            return None
        base = self._base_dir if self._base_dir is not None else Path.cwd()
        return (base / models.expanduser()).resolve()

    # -- lookups (linear: cells are small, and a frozen model keeps no stale index)

    def machine(self, machine_id: str) -> Machine:
        """The machine with this id; ``KeyError`` naming the known ids otherwise."""
        return _find(self.machines, machine_id, "machine")

    def robot(self, robot_id: str) -> Robot:
        """The robot with this id."""
        return _find(self.robots, robot_id, "robot")

    def product(self, product_id: str) -> Product:
        """The product with this id."""
        return _find(self.products, product_id, "product")

    def order(self, order_id: str) -> Order:
        """The order with this id."""
        return _find(self.orders, order_id, "order")

    def location(self, location_id: str) -> Location:
        """The location with this id."""
        return _find(self.layout.locations, location_id, "location")

    def capable_machines(self, capability: str) -> list[str]:
        """Ids of the machines offering ``capability``, in file order."""
        return [m.id for m in self.machines if capability in m.capabilities]

    def capabilities(self) -> set[str]:
        """Every capability some machine offers."""
        return {c for m in self.machines for c in m.capabilities}

    def agent_ids(self) -> list[str]:
        """Every agent id: machines, then robots, then orders, in file order."""
        return [
            *(m.id for m in self.machines),
            *(r.id for r in self.robots),
            *(o.id for o in self.orders),
        ]

    def host_of(self, agent_id: str) -> str | None:
        """Name of the host running ``agent_id``; ``None`` when the cell has no hosts section."""
        if not self.hosts:
            return None
        for host in self.hosts:
            if agent_id in host.agents:
                return host.name
        return self.hosts[0].name

    # -- geometry

    def distance_m(self, from_id: str, to_id: str) -> float:
        """Straight-line distance between two locations, metres."""
        a, b = self.location(from_id), self.location(to_id)
        return math.hypot(b.x - a.x, b.y - a.y)

    def travel_s(self, robot_id: str, from_id: str, to_id: str) -> float:
        """Travel time of a robot between two locations, seconds, without ``load_s``.

        The robot's ``transport_s`` table wins (either direction), else the shortest route
        on the layout's route graph, else distance / speed.
        """
        robot = self.robot(robot_id)
        for a, b in ((from_id, to_id), (to_id, from_id)):
            table_s = robot.transport_s.get(a, {}).get(b)
            if table_s is not None:
                return table_s
        graph = self.layout.route_graph()
        if graph is not None:
            return graph.route(from_id, to_id).travel_s(robot.speed_m_per_s)
        return self.distance_m(from_id, to_id) / robot.speed_m_per_s

    def route(self, from_id: str, to_id: str) -> routes.Route:
        """The route a robot drives between two locations: its nodes and edges.

        Without a route graph, the straight line (two nodes, one edge)."""
        graph = self.layout.route_graph()
        if graph is not None:
            return graph.route(from_id, to_id)
        a, b = (routes.Node(p.id, p.x, p.y, p.theta, p.map or self.layout.map)
                for p in (self.location(from_id), self.location(to_id)))
        if a.id == b.id:
            return routes.Route((a,), ())
        return routes.Route((a, b), (routes.Edge(a.id, b.id, self.distance_m(a.id, b.id)),))


_T = TypeVar("_T", Machine, Robot, Product, Order, Location)


def _find(items: list[_T], item_id: str, kind: str) -> _T:
    for item in items:
        if item.id == item_id:
            return item
    known = ", ".join(i.id for i in items) or "none"
    raise KeyError(f"no {kind} {item_id!r} in this cell (known: {known})")
