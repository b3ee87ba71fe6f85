"""The power headroom gauge follows a supervisor's raise of the peak cap under ``autocell up``
(ADR 91).

Under ``up`` the gauge is served by the plant process, whose tracker reads the plant's own
event log; the energy manager runs in a host process and logs its ``cap_raised`` …
``cap_restored`` there.  So the manager tells the plant (a signed ``cap_in_force``, role
``energy`` only) and the plant logs the cap in force in ``events-sim.jsonl``.  By hand:
the manager's messages (none in virtual time, where the log is one), the plant process as
``autocell plant`` builds it with its metrics as ``up`` starts them, fed those messages;
and one real ``up`` (slow) in which a supervisor raises the cap through the CLI, the
plant's ``/metrics`` scraped while the raise lasts and its last metrics read at the end —
waiting on the store, the plant's log and the gauge, never on sleeps.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers.console_users import act_as
from helpers.escalation_cells import cli
from helpers.waiting import CELL_RUN_BOUND_S, NotYet, wait_until

from agents.base import Timing
from agents.energy.cap_escalation import CapEscalationPolicy
from agents.energy.manager import EnergyManagerAgent
from agents.protocol.actions import Send
from agents.protocol.messages import CapInForce, Decision, Message, PowerRelease, PowerRequest
from ops.bench.healing import free_ports, loopback_cell
from ops.config import load_cell
from security.access import check_access
from security.errors import Forbidden

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "cell_configs" / "demo_cell_energy.yaml"
HEADROOM = "autocell_cell_power_headroom_kw"
POWER = "autocell_cell_power_kw"


def _msg(sender: str, to: str, body: Any) -> Message:
    return Message(sender, to, "c", b"id", 1, 1, 0.0, body)


def _raised(plant: str) -> tuple[EnergyManagerAgent, list[Any]]:
    """A manager (cap 15 kW, 10 kW to lease) that holds o1's 6 kW back behind m2's 8 kW,
    asks, and is told ``raise_cap`` by alice at 10 s: its actions then."""
    m = EnergyManagerAgent("energy", timing=Timing(), budget_kw=10.0, cap_kw=15.0,
                           cap_escalation=CapEscalationPolicy(60.0, 2, 500.0),
                           due_at={"o1": 100.0, "o2": 5000.0}, plant=plant)
    m.on_message(_msg("m2", "energy", PowerRequest("o2/0", 1, 8.0, 400.0)), 0.0)
    m.on_message(_msg("m1", "energy", PowerRequest("o1/0", 1, 6.0, 50.0)), 2.0)
    [esc] = list(m.raiser.open)
    return m, m.on_message(_msg("console", "energy", Decision(esc, "raise_cap", "alice")), 10.0)


def _told(actions: list[Any]) -> list[tuple[str, CapInForce]]:
    return [(a.to, a.body) for a in actions if isinstance(a, Send)
            and isinstance(a.body, CapInForce)]


def test_the_manager_tells_its_plant_of_a_raise_and_of_its_end() -> None:
    m, out = _raised("sim")
    [(to, raised)] = _told(out)
    [logged] = [a.fields for a in out if getattr(a, "event", "") == "cap_raised"]
    assert to == "sim" and raised.raised and raised.escalation == logged["escalation"]
    assert (raised.cap_kw, raised.until_at) == (logged["cap_kw"], logged["until"]) == (
        pytest.approx(19.0), 510.0)                     # 15 kW + the 4 kW o1 lacked
    m.on_message(_msg("m2", "energy", PowerRelease("o2/0", 1)), 20.0)
    m.on_message(_msg("m1", "energy", PowerRelease("o1/0", 1)), 30.0)
    assert _told(m.on_timer("cap_raise_end", 510.0)) == [("sim", CapInForce(15.0, False))]
    # in virtual time (no plant identity) the manager's own log line is all there is
    assert _told(_raised("")[1]) == []


def test_only_the_energy_manager_may_tell_the_cap() -> None:
    check_access("energy", "cap_in_force", CapInForce(19.0, True), "energy")
    for role in ("machine", "order", "host", "console"):
        with pytest.raises(Forbidden):
            check_access(role, "cap_in_force", CapInForce(19.0, True), "m1")


def test_the_host_builds_its_manager_to_tell_the_plant_and_replay_builds_it_so() -> None:
    from agents.cell.build import build_agents
    from agents.runtime.recorder import describe_run
    from ops.replay import build_from_header

    cfg = load_cell(DEMO)
    assert build_agents(cfg, 1, plant="sim")["energy"].plant == "sim"   # type: ignore[attr-defined]
    assert build_agents(cfg, 1)["energy"].plant == ""                   # type: ignore[attr-defined]
    for driver, plant in (("host", "sim"), ("virtual", "")):
        run = describe_run(cfg, 1, driver=driver)
        assert build_from_header(run)["energy"].plant == plant          # type: ignore[attr-defined]


def test_the_plant_process_logs_the_cap_in_force_and_its_headroom_gauge_follows(
        tmp_path: Path) -> None:
    """``autocell plant``'s server with the metrics ``up`` starts for it: told of a raise to
    19 kW, its log says ``cap_raised`` and the gauge is 19 kW less the power drawn; told
    the cap is back, 12 kW less the power.  A raise that comes after its own end is not
    logged (reordered behind the return)."""
    from agents.runtime.host import CellClock
    from ops.logs import EventLog, Fanout
    from ops.supervisor import ensure_keys
    from ops.up import start_metrics
    from sim_bridge.remote import PlantServer

    cfg = load_cell(loopback_cell(DEMO, tmp_path, orders=1))
    state = tmp_path / "state"
    state.mkdir()
    keys = ensure_keys(cfg, state)
    server = PlantServer(cfg, keys_dir=keys, state_dir=state,
                         clock=CellClock(time.time(), 1.0))
    [port] = free_ports(1)
    metrics = start_metrics(server, cfg, "sim", port, "127.0.0.1")
    assert metrics is not None
    server.observer = Fanout(metrics, EventLog())

    def gauge() -> tuple[float, float]:
        headroom = metrics.registry.get_sample_value(HEADROOM)
        power = metrics.registry.get_sample_value(POWER)
        assert headroom is not None and power is not None
        return headroom, power

    try:
        headroom, power = gauge()
        assert headroom + power == pytest.approx(12.0)
        server._on_message(_msg("energy", "sim", CapInForce(19.0, True, 1e6, "energy/e1")))
        headroom, power = gauge()
        assert headroom + power == pytest.approx(19.0)
        server._on_message(_msg("energy", "sim", CapInForce(12.0, False)))
        headroom, power = gauge()
        assert headroom + power == pytest.approx(12.0)
        server._on_message(_msg("energy", "sim", CapInForce(19.0, True, 0.0, "energy/e1")))
        headroom, power = gauge()
        assert headroom + power == pytest.approx(12.0)
    finally:
        server.events.close()
    lines = [json.loads(x) for x in (state / "events-sim.jsonl").read_text().splitlines()]
    caps = [(e["ev"], e["agent"], e["cap_kw"]) for e in lines if e["ev"].startswith("cap_")]
    assert caps == [("cap_raised", "energy", 19.0), ("cap_restored", "energy", 12.0)]
    assert server.refused == {}                           # not counted as not_a_command


# -- a real `autocell up` ------------------------------------------------------------------------


def _escalating_cell(tmp_path: Path) -> tuple[Path, int]:
    """The energy demo cell's first four orders, due 900 s sooner, no breakdowns or scrap,
    o-001 eight parts long: its first operation holds the power o-002's first one needs for
    about 220 s, so the manager asks (threshold 30 s) at about 44 s — time enough for a
    person to decide; an approved raise lasts 300 s.  On free loopback ports, the plant's
    metrics on one more; the cell file and that port."""
    data = yaml.safe_load(DEMO.read_text())
    data["orders"] = data["orders"][:4]
    data["orders"][0]["quantity"] = 8
    for o in data["orders"]:
        o["due_at"] -= 900
    for m in data["machines"]:
        m["scrap_rate"] = 0.0
        m.pop("mtbf_s", None)
        m.pop("mttr_s", None)
    data["energy"].update(cap_lateness_escalate_s=30, cap_raise_s=300)
    data["escalation"].update(response_deadline_s=1200, final_deadline_s=2400)
    src = tmp_path / "src.yaml"
    src.write_text(yaml.safe_dump(data, sort_keys=False))
    cell = loopback_cell(src, tmp_path)
    data = yaml.safe_load(cell.read_text())
    [port] = free_ports(1)
    data["sim"]["metrics_port"] = port
    cell.write_text(yaml.safe_dump(data, sort_keys=False))
    return cell, port


def _cap_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [e for e in (json.loads(x) for x in path.read_text().splitlines() if x.strip())
            if e["ev"] in ("cap_raised", "cap_restored")]


def _in_force(text: str) -> float:
    """The cap in force a scrape shows: headroom plus the power drawn, read together."""
    from prometheus_client.parser import text_string_to_metric_families

    values = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
    return values[HEADROOM] + values[POWER]


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_the_plant_headroom_gauge_follows_a_raise_under_up(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from test_escalation_up import finish, while_running

    from agents.cell.specs import KpiSpec
    from sim_bridge.invariants import cap_never_exceeded

    act_as(monkeypatch, tmp_path, "alice")
    cell, port = _escalating_cell(tmp_path)
    cfg = load_cell(cell)
    state = tmp_path / "state"
    db = state / "escalations.db"
    sim_log = state / "events-sim.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "ops.cli", "up", str(cell), "--speed", "10", "--state-dir",
         str(state), "--quiet", "--timeout", f"{CELL_RUN_BOUND_S:g}"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def plant_says(ev: str) -> Any:
        got = [e for e in _cap_lines(sim_log) if e["ev"] == ev]
        if not got and proc.poll() is not None:
            raise AssertionError(f"the cell ended (exit {proc.returncode}) and the plant "
                                 f"never logged {ev}: {_cap_lines(sim_log)}")
        return got[0] if got else NotYet(_cap_lines(sim_log))

    def scraped() -> Any:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
                text = r.read().decode()
        except OSError as exc:
            return NotYet(str(exc))
        cap = _in_force(text)
        return cap if cap == pytest.approx(raised["cap_kw"]) else NotYet(cap)

    try:
        wait_until("the energy manager's escalation in the console agent's store",
                   while_running(proc, db, "energy/e1"))
        res = cli("escalations", "decide", "energy/e1", "--option", "raise_cap",
                  "--reason", "the customer is waiting", "--user", "alice", "--db", str(db))
        assert res.returncode == 0, res.stderr
        raised = wait_until("cap_raised in the plant's own log", lambda: plant_says("cap_raised"))
        assert raised["cap_kw"] > 12.0 and raised["escalation"] == "energy/e1"
        # the plant process's gauge, scraped while the raise lasts: under the raised cap
        wait_until("the plant's headroom gauge under the raised cap", scraped)
    finally:
        code, _, err = finish(proc)
    assert code == 0, err[-3000:]
    report = json.loads((state / "report.json").read_text())
    assert report["orders_completed"] == report["orders_total"] == 4
    # the plant's log has the manager's raise and its end, as the manager logged them
    hosts = [e for p in sorted(state.glob("events-*.jsonl")) if p != sim_log
             for e in _cap_lines(p)]
    plant = _cap_lines(sim_log)
    assert [(e["ev"], e["cap_kw"]) for e in plant] == [(e["ev"], e["cap_kw"]) for e in hosts] \
        == [("cap_raised", raised["cap_kw"]), ("cap_restored", 12.0)]
    # the plant's last metrics, written as it stopped after the raise ended: the contract
    assert _in_force((state / "metrics-sim.prom").read_text()) == pytest.approx(12.0)
    # the cap at every instant on the effective cap, as test_energy_up checks it: the
    # manager's lines (the plant may log a raise a moment after a start it allowed)
    sim = [json.loads(x) for x in sim_log.read_text().splitlines() if x.strip()]
    merged = sorted([e for e in sim if e["ev"] not in ("cap_raised", "cap_restored")] + hosts,
                    key=lambda e: e["t"])
    assert cap_never_exceeded(merged, KpiSpec.from_config(cfg)) == []
