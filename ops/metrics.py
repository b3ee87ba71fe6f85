"""Prometheus metrics of one autocell process, in its own (non-global) registry.

Theory of operation
-------------------
Nothing on a hot path is added for metrics.  Three kinds of source feed
one :class:`ProcessMetrics`:

* **counters the runtime keeps anyway** — the bus's
  :class:`~agents.runtime.bus.BusStats` (sent, received, rejected by
  reason, dropped), the agents' queues and orders, the plant's machine
  states and the KPI tracker — are read by custom collectors *at scrape
  time*; between scrapes they cost nothing;
* **negotiation events** come through the driver's observer hook
  (:mod:`agents.runtime.observe`): the calls for proposals an order
  sends, and the event-log lines (``award``, ``no_proposals``,
  ``lease_expired``, ``reroute``, ``agent_restart``, ``host_start``), which
  update a few counters and two histograms;
* **escalations** are set from outside through
  :meth:`ProcessMetrics.set_open_escalations` (the console's engine).

With metrics off, no :class:`ProcessMetrics` exists and the drivers'
observer is ``None``.  Names follow the Prometheus conventions: prefix
``autocell_``, base units in the name, ``_total`` on counters; the list is
in docs/operations.md.  Collectors run on the HTTP server's thread: they
only copy plain containers (atomic under the GIL) or take the tracker's
lock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agents.cell.specs import KpiSpec
from agents.protocol.actions import Action, Send
from security.errors import ConfigurationError
from sim_bridge.kpis import KpiTracker

#: KPI key -> (metric name suffix, help); exported as autocell_cell_* and autocell_machine_*.
KPI_GAUGES: dict[str, tuple[str, str]] = {
    "oee": ("oee_ratio", "Overall equipment effectiveness = availability x performance x quality"),
    "availability": ("availability_ratio", "Processing time / planned busy time (the window)"),
    "performance": ("performance_ratio", "Ideal time of completed operations / processing time"),
    "quality": ("quality_ratio", "Good units / units produced"),
    "first_pass_yield": ("first_pass_yield_ratio", "Share passing quality at the first attempt"),
    "mtbf_s": ("mtbf_seconds", "Mean time between failures: uptime / failures"),
    "mttr_s": ("mttr_seconds", "Mean time to repair: repair time / repairs"),
    "throughput_units_per_h": ("throughput_units_per_hour", "Good units per hour"),
    "energy_kwh": ("energy_kwh", "Energy drawn in the window, from the power model"),
    "energy_per_unit_kwh": ("energy_per_unit_kwh", "Energy drawn per good unit"),
    "down_s": ("down_seconds", "Time down (fault to repair) in the window"),
}
MACHINE_STATES = ("up", "busy", "down")
ROUND_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0)
BID_BUCKETS = (0, 1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 50)


def _items(counter: Mapping[str, int]) -> list[tuple[str, int]]:
    """A copy of a counter, safe against the event loop's thread (one C-level call)."""
    for _ in range(5):
        try:
            return list(counter.items())
        except RuntimeError:     # changed size during iteration: try again
            continue
    return []


class _Collect(Collector):
    def __init__(self, fn: Callable[[], Iterable[Metric]]) -> None:
        self.fn = fn

    def collect(self) -> Iterator[Metric]:
        yield from self.fn()


class ProcessMetrics:
    """The metrics of one process; also the driver's observer (see the module docstring)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.round_s = Histogram(
            "autocell_negotiation_round_seconds",
            "Time from an order's call for proposals to its decision (award or none)",
            buckets=ROUND_BUCKETS_S, registry=r)
        self.bids = Histogram("autocell_negotiation_bids", "Proposals received per call",
                              buckets=BID_BUCKETS, registry=r)
        self.rounds = Counter("autocell_negotiation_rounds", "Negotiation rounds by outcome",
                              ["outcome"], registry=r)
        self.lease_expiries = Counter("autocell_lease_expiries",
                                      "Awards whose lease ran out (missed heartbeats)",
                                      registry=r)
        self.reroutes = Counter("autocell_reroutes", "Tasks handed back and re-negotiated",
                                registry=r)
        self.restarts = Counter("autocell_restarts",
                                "Restarts: agents rebuilt from the journal, process reboots",
                                ["kind"], registry=r)
        self.escalations = Gauge("autocell_escalations_open", "Open escalations",
                                 ["priority", "state"], registry=r)
        for outcome in ("award", "no_proposals", "wait_for_repair"):
            self.rounds.labels(outcome)
        for kind in ("agent", "process"):
            self.restarts.labels(kind)
        self._calls: dict[str, float] = {}      # task -> time of its open call
        self._escalation_keys: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        self._tracker: KpiTracker | None = None

    # -- the observer hook -------------------------------------------------------------------
    def on_actions(self, agent: str, actions: Sequence[Action]) -> None:
        for act in actions:
            if isinstance(act, Send) and act.body.TYPE == "cfp":
                self._calls[act.body.task] = self.clock()   # type: ignore[attr-defined]

    def on_record(self, line: Mapping[str, Any]) -> None:
        ev = line.get("ev")
        if ev in ("award", "no_proposals", "wait_for_repair"):
            self.rounds.labels(ev).inc()
            called = self._calls.pop(str(line.get("task")), None)
            if called is not None:
                self.round_s.observe(max(0.0, self.clock() - called))
            if ev != "wait_for_repair":
                self.bids.observe(int(line.get("bids", 0)))
        elif ev == "lease_expired":
            self.lease_expiries.inc()
        elif ev == "reroute":
            self.reroutes.inc()
        elif ev == "agent_restart":
            self.restarts.labels("agent").inc()
        elif ev in ("host_start", "sim_start") and int(line.get("boot", 1)) > 1:
            self.restarts.labels("process").inc(int(line["boot"]) - 1)
        if self._tracker is not None:
            with self._lock:
                self._tracker.on_event(line)

    # -- set from outside ------------------------------------------------------------------------
    def set_open_escalations(self, counts: Mapping[tuple[str, str], int]) -> None:
        """Open escalations by (priority, state); pairs not given drop to 0."""
        for key in self._escalation_keys - set(counts):
            self.escalations.labels(*key).set(0)
        for (priority, state), n in counts.items():
            self.escalations.labels(str(priority), str(state)).set(n)
        self._escalation_keys |= {(str(p), str(s)) for p, s in counts}

    # -- sources read at scrape time --------------------------------------------------------------
    def add_bus(self, stats: Callable[[], Any]) -> None:
        """Messages from a :class:`~agents.runtime.bus.BusStats`-like object: ``sent``,
        ``received`` and ``rejected`` counters, ``dropped`` and ``handler_errors`` ints."""
        def collect() -> Iterator[Metric]:
            s = stats()
            msgs = CounterMetricFamily("autocell_messages", "Signed messages by type and outcome",
                                       labels=["type", "outcome"])
            for outcome, counter in (("sent", s.sent), ("received", s.received)):
                for msg_type, n in sorted(_items(counter)):
                    msgs.add_metric([msg_type, outcome], n)
            yield msgs
            rej = CounterMetricFamily("autocell_messages_rejected",
                                      "Messages rejected before any agent saw them, by reason",
                                      labels=["reason"])
            for reason, n in sorted(_items(s.rejected)):
                rej.add_metric([reason], n)
            yield rej
            yield CounterMetricFamily("autocell_messages_dropped",
                                      "Messages not sent (no route, send queue full)",
                                      value=getattr(s, "dropped", 0))
            yield CounterMetricFamily("autocell_message_handler_errors",
                                      "Verified messages whose handler failed",
                                      value=getattr(s, "handler_errors", 0))
        self.registry.register(_Collect(collect))

    def add_agents(self, agents: Callable[[], Mapping[str, Any]]) -> None:
        """Queues of the resource agents and the orders of this process."""
        from agents.order import OrderAgent
        from agents.resource import ResourceAgent

        def collect() -> Iterator[Metric]:
            queue = GaugeMetricFamily("autocell_queue_length",
                                      "Tasks awarded to a resource and not started yet",
                                      labels=["resource"])
            orders = GaugeMetricFamily("autocell_orders", "Orders of this process by state",
                                       labels=["state"])
            late = GaugeMetricFamily("autocell_orders_tardiness_seconds",
                                     "Total tardiness of the completed orders of this process")
            tardy = GaugeMetricFamily("autocell_orders_tardy",
                                      "Completed orders of this process that finished late")
            done = open_ = 0
            tardiness = 0.0
            n_tardy = 0
            for a in list(dict(agents()).values()):
                if isinstance(a, ResourceAgent):
                    tasks = list(a.tasks.values())
                    queue.add_metric([a.id], sum(1 for t in tasks if t.state == "committed"))
                elif isinstance(a, OrderAgent):
                    if a.completed_at is None:
                        open_ += 1
                        continue
                    done += 1
                    late_s = max(0.0, a.completed_at - a.due_at)
                    tardiness += late_s
                    n_tardy += late_s > 0
            orders.add_metric(["completed"], done)
            orders.add_metric(["open"], open_)
            late.add_metric([], tardiness)
            tardy.add_metric([], n_tardy)
            yield from (queue, orders, late, tardy)
        self.registry.register(_Collect(collect))

    def add_plant(self, plant: Any, spec: KpiSpec, now: Callable[[], float], *,
                  agents_elsewhere: bool = False) -> None:
        """Machine states of a :class:`~sim_bridge.gateway.PlantGateway`, and the plant KPIs
        (fed by :meth:`on_record` from the plant's event log).  ``agents_elsewhere``: the
        plant process of ``autocell up``, whose hosts export the machine agents' health
        (:meth:`add_maintenance_agents`)."""
        self._tracker = KpiTracker(spec, start_at=now())   # a restarted simulator starts anew

        def collect() -> Iterator[Metric]:
            state = GaugeMetricFamily("autocell_machine_state",
                                      "1 for the machine's current state (up = idle, busy, down)",
                                      labels=["machine", "state"])
            for mid in sorted(plant.locations):
                current = plant.machine_state(mid)
                for s in MACHINE_STATES:
                    state.add_metric([mid, s], 1.0 if s == current else 0.0)
            yield state
            assert self._tracker is not None
            with self._lock:
                t = now()
                k = self._tracker.snapshot(t)
                power = self._tracker.meter.power_now(t)
                cap_kw = self._tracker.cap_now_kw
            yield from kpi_families(k)
            yield from energy_families(power, k, spec, cap_kw)
            yield from maintenance_families(getattr(getattr(plant, "backend", None),
                                                    "maintenance", None), t,
                                            agents_elsewhere=agents_elsewhere)
        self.registry.register(_Collect(collect))

    def add_maintenance_agents(self, agents: Callable[[], Mapping[str, Any]], settings: Any,
                               now: Callable[[], float]) -> None:
        """A host's share of the health row (docs/maintenance.md): its machine agents'
        health, remaining life and latest safe start, and the stores agent's books if it
        runs here (``settings``: the cell's ``maintenance:`` section), read at scrape time."""
        from sim_bridge.maintenance.metrics import agent_families

        def collect() -> Iterator[Metric]:
            yield from agent_families(agents(), settings, now())
        self.registry.register(_Collect(collect))

    def serve(self, port: int, addr: str = "127.0.0.1") -> Any:
        """Serve ``/metrics`` on ``addr:port`` from a daemon thread; the server object."""
        return serve(self.registry, port, addr)


def kpi_families(k: Mapping[str, Any]) -> Iterator[Metric]:
    """Gauges of a KPI snapshot (:meth:`sim_bridge.kpis.KpiTracker.snapshot`); undefined =
    absent."""
    for key, (suffix, text) in KPI_GAUGES.items():
        cell = GaugeMetricFamily(f"autocell_cell_{suffix}", f"Cell: {text}")
        if k["cell"].get(key) is not None:
            cell.add_metric([], k["cell"][key])
        yield cell
        machine = GaugeMetricFamily(f"autocell_machine_{suffix}", f"Per machine: {text}",
                                    labels=["machine"])
        for mid, row in k["machines"].items():
            if row.get(key) is not None:
                machine.add_metric([mid], row[key])
        yield machine
    yield GaugeMetricFamily("autocell_cell_units_finished",
                            "Units whose last operation passed quality", value=k["cell"]
                            ["units_finished"])
    yield GaugeMetricFamily("autocell_kpi_window_seconds", "Length of the KPI window",
                            value=k["window_s"])


def energy_families(power: Mapping[str, float], k: Mapping[str, Any],
                    spec: KpiSpec, cap_kw: float | None = None) -> Iterator[Metric]:
    """Power now per machine and for the cell, the energy cost so far and, with a peak cap,
    the headroom under the cap in force (``cap_kw``: a raise a supervisor approved, else
    the cell's cap; docs/energy.md)."""
    machine = GaugeMetricFamily("autocell_machine_power_kw", "Per machine: power drawn now, kW",
                                labels=["machine"])
    for mid in sorted(power):
        machine.add_metric([mid], power[mid])
    yield machine
    cell_kw = sum(power.values())
    yield GaugeMetricFamily("autocell_cell_power_kw", "Cell: power drawn now, kW", value=cell_kw)
    cost = GaugeMetricFamily("autocell_cell_energy_cost", "Cell: energy cost so far, in the "
                             "tariff's currency")
    if spec.energy is not None and k["cell"].get("energy_cost") is not None:
        cost.add_metric([], k["cell"]["energy_cost"])
    yield cost
    head = GaugeMetricFamily("autocell_cell_power_headroom_kw",
                             "Cell: peak cap in force (an approved raise included) minus power "
                             "drawn now, kW (absent without a cap)")
    if spec.energy is not None and spec.energy.peak_cap_kw is not None:
        head.add_metric([], (spec.energy.peak_cap_kw if cap_kw is None else cap_kw) - cell_kw)
    yield head


def maintenance_families(controller: Any, now: float, *,
                         agents_elsewhere: bool = False) -> Iterator[Metric]:
    """Health, remaining life, planned windows and part stock of a cell with wearing
    machines, read from its maintenance policy at scrape time (docs/maintenance.md);
    families without samples (absent series) for a cell without one."""
    from sim_bridge.maintenance.metrics import families
    yield from families(controller, now, agents_elsewhere=agents_elsewhere)


def serve(registry: CollectorRegistry, port: int, addr: str = "127.0.0.1") -> Any:
    """``/metrics`` of ``registry`` on ``addr:port`` (a daemon thread); the console uses this
    too.  A port that cannot be bound is a :class:`ConfigurationError` naming it."""
    if not 0 < port < 65536:
        raise ConfigurationError(f"--metrics-port {port}: use a TCP port in 1..65535")
    try:
        server, _thread = start_http_server(port, addr=addr, registry=registry)
    except OSError as exc:
        raise ConfigurationError(f"cannot serve metrics on {addr}:{port}: {exc.strerror}; "
                                 "pick a free port (metrics_port in the cell file, or "
                                 "--metrics-port)") from None
    return server


def metrics_addr(endpoint: str) -> str:
    """The address a process's metrics bind to: the host of its ZeroMQ tcp endpoint."""
    if endpoint.startswith("tcp://"):
        host = endpoint[len("tcp://"):].rpartition(":")[0]
        if host in ("*", ""):
            return "0.0.0.0"
        return host.strip("[]")
    return "127.0.0.1"
