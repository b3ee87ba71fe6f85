"""Metrics of one process: a virtual-time run through the same hooks the hosts use, the
escalation setter, serving over HTTP, and the cell file's metrics ports."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from ops.bench.healing import free_ports
from ops.config import ConfigError, cell_from_dict, load_cell
from ops.metrics import ProcessMetrics, metrics_addr, serve
from ops.run import virtual_metrics
from security.errors import ConfigurationError
from sim_bridge.report import build_report
from sim_bridge.virtual import VirtualCell

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "cell_configs" / "demo_cell.yaml"


def samples(registry: object) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()   # type: ignore[arg-type]
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def value(s: dict, name: str, **labels: str) -> float:
    return s[(name, tuple(sorted(labels.items())))]


@pytest.fixture(scope="module")
def demo_run() -> tuple[VirtualCell, dict, dict]:
    cell = VirtualCell(load_cell(DEMO))
    metrics = virtual_metrics(cell)
    cell.run()
    return cell, build_report(cell), samples(metrics.registry)


def test_metrics_leave_the_event_log_unchanged(demo_run: tuple) -> None:
    plain = VirtualCell(load_cell(DEMO))
    plain.run()
    assert demo_run[1]["event_log_sha256"] == build_report(plain)["event_log_sha256"]


def test_message_counters_match_the_run(demo_run: tuple) -> None:
    cell, report, s = demo_run
    for msg_type, n in report["messages_by_type"].items():
        assert value(s, "autocell_messages_total", type=msg_type, outcome="sent") == n
    received = sum(v for (name, labels), v in s.items()
                   if name == "autocell_messages_total" and ("outcome", "received") in labels)
    assert received == cell.stats.messages_delivered > 0
    assert value(s, "autocell_messages_dropped_total") == 0


def test_negotiation_metrics_match_the_event_log(demo_run: tuple) -> None:
    cell, report, s = demo_run
    evs = [json.loads(line) for line in cell.events]
    awards = [e for e in evs if e["ev"] == "award"]
    assert value(s, "autocell_negotiation_rounds_total", outcome="award") == len(awards)
    assert value(s, "autocell_negotiation_bids_count") == len(awards) + sum(
        e["ev"] == "no_proposals" for e in evs)
    assert value(s, "autocell_negotiation_bids_sum") == sum(e["bids"] for e in awards)
    # every round lasts the reply deadline (0.2 s) plus at most a few ms of simulated latency
    assert value(s, "autocell_negotiation_round_seconds_count") == len(awards)
    assert value(s, "autocell_negotiation_round_seconds_bucket", le="0.15") == 0
    assert value(s, "autocell_negotiation_round_seconds_bucket", le="0.25") == len(awards)
    assert value(s, "autocell_reroutes_total") == report["reroutes"]
    assert value(s, "autocell_lease_expiries_total") == report["lease_expiries"]


def test_plant_kpis_and_states_match_the_report(demo_run: tuple) -> None:
    _, report, s = demo_run
    k = report["kpis"]
    assert value(s, "autocell_cell_oee_ratio") == pytest.approx(k["cell"]["oee"], abs=1e-6)
    assert value(s, "autocell_cell_energy_per_unit_kwh") == pytest.approx(
        k["cell"]["energy_per_unit_kwh"], abs=1e-6)
    for mid, row in k["machines"].items():
        for key, name in (("availability", "availability_ratio"), ("quality", "quality_ratio"),
                          ("throughput_units_per_h", "throughput_units_per_hour")):
            assert value(s, f"autocell_machine_{name}", machine=mid) == pytest.approx(
                row[key], abs=1e-6)
        states = [value(s, "autocell_machine_state", machine=mid, state=st)
                  for st in ("up", "busy", "down")]
        assert sorted(states) == [0, 0, 1]
    # MTBF is undefined for a machine that never failed: no sample, rather than a made-up one
    never = [m for m, row in k["machines"].items() if row["mtbf_s"] is None]
    assert never and all(("autocell_machine_mtbf_seconds", (("machine", m),)) not in s
                         for m in never)
    assert value(s, "autocell_orders", state="completed") == 24
    assert value(s, "autocell_orders_tardiness_seconds") == pytest.approx(
        report["tardiness_total"], abs=1e-6)
    assert value(s, "autocell_queue_length", resource="mill1") == 0


def test_open_escalations_setter() -> None:
    m = ProcessMetrics(lambda: 0.0)
    m.set_open_escalations({("1", "unacknowledged"): 2, ("3", "acknowledged"): 1})
    s = samples(m.registry)
    assert value(s, "autocell_escalations_open", priority="1", state="unacknowledged") == 2
    m.set_open_escalations({("3", "acknowledged"): 4})
    s = samples(m.registry)
    assert value(s, "autocell_escalations_open", priority="1", state="unacknowledged") == 0
    assert value(s, "autocell_escalations_open", priority="3", state="acknowledged") == 4


def test_serving_over_http_and_a_busy_port() -> None:
    m = ProcessMetrics(lambda: 0.0)
    m.restarts.labels("agent").inc()
    port = free_ports(1)[0]
    server = m.serve(port)
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        assert b'autocell_restarts_total{kind="agent"} 1.0' in body
        with pytest.raises(ConfigurationError, match=f"127.0.0.1:{port}"):
            serve(m.registry, port)
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(ConfigurationError, match="1..65535"):
        serve(m.registry, 0)


def test_metrics_addr_follows_the_endpoint() -> None:
    assert metrics_addr("tcp://127.0.0.1:5601") == "127.0.0.1"
    assert metrics_addr("tcp://*:5601") == "0.0.0.0"
    assert metrics_addr("tcp://10.0.0.7:5601") == "10.0.0.7"
    assert metrics_addr("ipc:///tmp/x") == "127.0.0.1"


def _cell(**sim: object) -> dict:
    return {"cell": "x", "layout": {"locations": [{"id": "a", "x": 0, "y": 0}]},
            "machines": [{"id": "m1", "location": "a", "capabilities": {"c": 1}}],
            "hosts": [{"name": "h1", "endpoint": "tcp://127.0.0.1:5601", "metrics_port": 9101},
                      {"name": "h2", "endpoint": "tcp://127.0.0.1:5602", "metrics_port": 9102}],
            "sim": {"endpoint": "tcp://127.0.0.1:5600", **sim}}


def test_metrics_ports_in_the_cell_file() -> None:
    cfg = cell_from_dict(_cell(metrics_port=9100))
    assert [h.metrics_port for h in cfg.hosts] == [9101, 9102] and cfg.sim.metrics_port == 9100
    with pytest.raises(ConfigError, match=r"metrics port 9101 is already used by sim"):
        cell_from_dict(_cell(metrics_port=9101))
    with pytest.raises(ConfigError, match=r"metrics port 5602 is the ZeroMQ port of hosts\[1\]"):
        cell_from_dict(_cell(metrics_port=5602))
    with pytest.raises(ConfigError, match="sim.metrics_port"):
        cell_from_dict(_cell(metrics_port=0))


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_run_serves_metrics_while_it_runs_and_only_when_asked(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The run is held at its end, its endpoint still up, until the test has scraped it:
    events, not a race between the poller and a run that may end first on a loaded host."""
    import ops.run as run_module
    from ops.cli import main

    port = free_ports(1)[0]
    assert main(["run", str(DEMO), "--quiet", "--until", "60"]) == 0
    assert not _listening(port)
    simulated, scraped = threading.Event(), threading.Event()
    run_cell = run_module._run_cell

    def held(cell: Any, args: Any, console: Any) -> None:
        run_cell(cell, args, console)
        simulated.set()
        scraped.wait(120)           # a guard against a hung test, not a time budget

    monkeypatch.setattr(run_module, "_run_cell", held)
    result: list[int] = []
    runner = threading.Thread(target=lambda: result.append(main(
        ["run", str(DEMO), "--quiet", "--metrics-port", str(port)])))
    runner.start()
    try:
        assert simulated.wait(600)
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",
                                      timeout=30).read().decode()
    finally:
        scraped.set()
        runner.join()
    assert result == [0]
    assert "autocell_cell_oee_ratio" in body
    assert 'autocell_messages_total{outcome="sent",type="cfp"}' in body
    assert not _listening(port)       # the server ends with the run
