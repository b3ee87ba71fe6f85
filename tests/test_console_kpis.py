"""Alarm-system KPIs (issue 18): escalations per 10 min per supervisor, % time in flood,
stale, chattering, the priority distribution against 80/15/5 — on a page and as Prometheus
metrics (scraped over HTTP)."""

from __future__ import annotations

import re
import socket
import urllib.request

import pytest
from starlette.testclient import TestClient

from ops.console.alarm_kpis import compute
from ops.console.app import ConsoleSettings, create_app
from ops.console.backend import InMemoryBackend
from ops.console.server import serve_escalation_metrics
from ops.console.users import UserStore


def esc(eid: str, at: float, priority: int = 3, resource: str = "r", state: str = "resolved"):
    return {"id": eid, "created_at": at, "priority": priority, "resource": resource,
            "state": state, "cause": "c"}


def test_rate_per_ten_minutes_per_supervisor():
    items = [esc(f"e{k}", 60.0 * k) for k in range(12)]           # 12 in 1 hour
    k = compute(items, now=3600.0, supervisors=2)
    assert k.raised == 12 and k.rate_per_10min_per_supervisor == pytest.approx(1.0)


def test_flood_time_chattering_and_stale():
    burst = [esc(f"b{k}", 1000.0 + k, resource=f"m{k}") for k in range(11)]   # 11 in 11 s
    chatter = [esc(f"c{k}", 5000.0 + 20 * k, resource="agv-2") for k in range(3)]
    old = [esc("old", 0.0, state="unacknowledged", resource="x")]
    k = compute(burst + chatter + old, now=0.0 + 24 * 3600 + 100, supervisors=1, step_s=10)
    # in flood from the 11th arrival (1010 s) until the first leaves the window (1600 s)
    assert k.flood_ratio == pytest.approx(590 / k.observed_s, abs=20 / k.observed_s)
    assert k.chattering == ("agv-2",)
    assert k.stale == ("old",)


def test_priority_distribution_against_the_guideline():
    items = ([esc(f"a{k}", k, 1) for k in range(2)] + [esc(f"b{k}", k, 2) for k in range(3)]
             + [esc(f"c{k}", k, 3 + k % 2) for k in range(15)])
    k = compute(items, now=100.0, supervisors=1)
    assert (k.share("P1"), k.share("P2"), k.share("P3/P4")) == (0.10, 0.15, 0.75)


def test_the_kpi_page(tmp_path):
    users = UserStore(tmp_path / "u.db")
    users.add("ann", "supervisor", "ann-password")
    b = InMemoryBackend()
    for k in range(3):
        b.raise_escalation(priority=1, cause="c", consequence="x", options=[{"id": "w"}],
                           safe_default="w", deadline_at=b.now() + 600,
                           context={"resource": "agv-2"})
    c = TestClient(create_app(b, users, ConsoleSettings()), follow_redirects=False)
    token = re.search(r'name="csrf" value="([^"]+)"', c.get("/login").text).group(1)
    c.post("/login", data={"username": "ann", "password": "ann-password", "csrf": token,
                           "next": "/"})
    page = c.get("/kpis").text
    assert re.search(r'id="kpi-rate" class="bad">3.00<', page)      # 3 in 10 min, 1 person
    assert re.search(r'id="kpi-chatter" class="bad">1<', page) and "agv-2" in page
    assert re.search(r'id="kpi-share-1">100 %<', page) and "guideline about 5 %" in page


def test_the_kpis_are_prometheus_metrics():
    b = InMemoryBackend()
    for k in range(3):
        b.raise_escalation(priority=2, cause="c", consequence="x", options=[{"id": "w"}],
                           safe_default="w", deadline_at=b.now() + 600,
                           context={"resource": "agv-2"})
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = serve_escalation_metrics(b, port, every_s=60, supervisors=lambda: 3)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            text = r.read().decode()
    finally:
        server.shutdown()
    assert "autocell_alarm_rate_per_10min_per_supervisor 1.0" in text
    assert "autocell_alarm_chattering_sources 1.0" in text
    assert 'autocell_alarm_priority_share{band="P2",of="observed"} 1.0' in text
    assert 'autocell_alarm_priority_share{band="P3/P4",of="guideline"} 0.8' in text
    assert "autocell_alarm_flood_ratio 0.0" in text and "autocell_alarm_stale 0.0" in text


def test_the_oldest_unacknowledged_escalation_has_an_age_gauge():
    """What the P1-overdue alert compares with the response deadline (ops/prometheus/)."""
    clock = [1000.0]
    b = InMemoryBackend(clock=lambda: clock[0])
    for at, prio in ((100.0, 1), (700.0, 1), (400.0, 2)):
        b.raise_escalation(priority=prio, cause="c", consequence="x", options=[{"id": "w"}],
                           safe_default="w", deadline_at=at + 600, created_at=at)
    acked = b.raise_escalation(priority=3, cause="c", consequence="x", options=[{"id": "w"}],
                               safe_default="w", deadline_at=1600, created_at=10.0)
    b.acknowledge(acked.id, "ann", 20.0)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = serve_escalation_metrics(b, port, every_s=60)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            text = r.read().decode()
    finally:
        server.shutdown()
    assert 'autocell_escalation_oldest_unacknowledged_seconds{priority="1"} 900.0' in text
    assert 'autocell_escalation_oldest_unacknowledged_seconds{priority="2"} 600.0' in text
    assert not re.search(r'oldest_unacknowledged_seconds\{priority="3"\}', text)  # acknowledged
