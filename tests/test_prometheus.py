"""A real Prometheus server scrapes a running ``autocell up`` cell; the scrape config command.

The slow test starts the demo cell's first orders as processes (simulator and
three hosts, metrics on free loopback ports), writes the scrape config with
``autocell ops prometheus-config`` (1 s interval), starts the Debian
``prometheus`` binary on a free loopback port with a temporary storage
directory, waits for at least two scrapes of every target, then asks the
HTTP API: every target up, messages counters increasing, OEE within 0..1.
``promtool check metrics`` must pass on every endpoint's output.  Everything
it starts is stopped and waited for, and no process of the cell outlives it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers.waiting import (
    CELL_RUN_BOUND_S,
    PROCESS_BOUND_S,
    NotYet,
    wait_until,
)

from ops.bench.healing import free_ports, loopback_cell
from ops.cli import main
from ops.config import load_cell

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "cell_configs" / "demo_cell.yaml"
SAMPLE = ROOT / "ops" / "prometheus" / "demo_cell.yml"
#: One HTTP request's bound: a hang guard, not a budget (a loaded machine answers slowly).
HTTP_BOUND_S = 60.0


def test_sample_scrape_config_is_current(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ops", "prometheus-config", str(DEMO)]) == 0
    assert capsys.readouterr().out == SAMPLE.read_text(), (
        "regenerate: autocell ops prometheus-config cell_configs/demo_cell.yaml "
        "--out ops/prometheus/demo_cell.yml")
    doc = yaml.safe_load(SAMPLE.read_text())
    cfg = load_cell(DEMO)
    targets = {sc["labels"]["process"]: sc["targets"][0]
               for sc in doc["scrape_configs"][0]["static_configs"]}
    assert targets == {"sim": f"127.0.0.1:{cfg.sim.metrics_port}",
                       **{h.name: f"127.0.0.1:{h.metrics_port}" for h in cfg.hosts}}


def test_prometheus_config_bad_input_exits_2(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ops", "prometheus-config", str(ROOT / "cell_configs" / "minimal_cell.yaml")]) == 2
    assert "no process has a metrics_port" in capsys.readouterr().err
    assert main(["ops", "prometheus-config", str(DEMO), "--scrape-interval", "soon"]) == 2
    assert main(["ops", "prometheus-config", str(tmp_path / "nope.yaml")]) == 2


# -- the real server -----------------------------------------------------------------------

def metrics_cell(tmp_path: Path, orders: int) -> Path:
    path = loopback_cell(DEMO, tmp_path, orders)
    data = yaml.safe_load(path.read_text())
    ports = free_ports(len(data["hosts"]) + 1)
    data["sim"]["metrics_port"] = ports[0]
    for h, port in zip(data["hosts"], ports[1:], strict=True):
        h["metrics_port"] = port
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def query(prom: str, promql: str) -> list[dict]:
    url = f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    body = json.loads(urllib.request.urlopen(url, timeout=HTTP_BOUND_S).read())
    assert body["status"] == "success", body
    return body["data"]["result"]


def wait_for(what: str, check: Callable[[], Any]) -> Any:
    """:func:`wait_until`, with a server that is not up yet (OSError) as "not yet"."""
    def answered() -> Any:
        try:
            return check()
        except OSError as exc:
            return NotYet(exc)

    return wait_until(what, answered, poll_s=0.5)


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=PROCESS_BOUND_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.slow
@pytest.mark.timeout(600)     # several events in a row, each under the shared hang guard
def test_prometheus_scrapes_a_running_cell(tmp_path: Path) -> None:
    prometheus, promtool = shutil.which("prometheus"), shutil.which("promtool")
    assert prometheus and promtool, "install the Debian package prometheus (.ci/run does)"
    cell = metrics_cell(tmp_path, orders=8)
    cfg = load_cell(cell)
    config = tmp_path / "prometheus.yml"
    # no web console runs here: its target (on by default) is left out
    assert main(["ops", "prometheus-config", str(cell), "--scrape-interval", "1s",
                 "--console", "none", "--out", str(config)]) == 0
    check = subprocess.run([promtool, "check", "config", str(config)], capture_output=True,
                           check=False, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    state = tmp_path / "state"
    up = subprocess.Popen(
        [sys.executable, "-m", "ops.cli", "up", str(cell), "--speed", "10", "--state-dir",
         str(state), "--timeout", f"{CELL_RUN_BOUND_S:g}", "--quiet"], cwd=ROOT, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    prom_port = free_ports(1)[0]
    prom = f"http://127.0.0.1:{prom_port}"
    server = subprocess.Popen(
        [prometheus, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"],
        start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    endpoints = [f"http://127.0.0.1:{cfg.sim.metrics_port}/metrics"] + [
        f"http://127.0.0.1:{h.metrics_port}/metrics" for h in cfg.hosts]
    try:
        # every process answers, and its output passes promtool's lint
        for url in endpoints:
            text = wait_for(url, lambda url=url: urllib.request.urlopen(url, timeout=HTTP_BOUND_S).read())
            lint = subprocess.run([promtool, "check", "metrics"], input=text,
                                  capture_output=True, check=False)
            assert lint.returncode == 0, (url, lint.stdout, lint.stderr)
        # at least two successful scrapes of every target (up = 1).  Counted over a window,
        # not read at one instant: with a 1 s scrape interval the scrape timeout is 1 s too,
        # and a machine loaded by another suite may miss one scrape now and then
        scraped = wait_for("two successful scrapes of every target", lambda: (
            len(r := query(prom, "sum_over_time(up[1m]) >= 2")) == 1 + len(cfg.hosts) and r))
        assert {s["metric"]["process"] for s in scraped} == {"sim", *(h.name for h in cfg.hosts)}
        assert len(query(prom, "up")) == 1 + len(cfg.hosts)
        # messages (sent and received) increase between scrapes, in every host
        hosts = {h.name for h in cfg.hosts}
        wait_for("messages increasing in every host", lambda: hosts <= {
            s["metric"]["process"] for s in query(
                prom, "sum by (process) (increase(autocell_messages_total[1m])) > 0")})
        oee = wait_for("OEE", lambda: query(prom, "autocell_cell_oee_ratio"))
        assert len(oee) == 1 and oee[0]["metric"]["process"] == "sim"
        assert 0.0 <= float(oee[0]["value"][1]) <= 1.0
        machines = query(prom, "autocell_machine_availability_ratio")
        assert {s["metric"]["machine"] for s in machines} == {m.id for m in cfg.machines}
        assert all(0.0 <= float(s["value"][1]) <= 1.0 for s in machines)
        states = query(prom, "sum by (machine) (autocell_machine_state)")
        assert all(s["value"][1] == "1" for s in states) and len(states) == len(cfg.machines)
        rounds = query(prom, "sum(autocell_negotiation_round_seconds_count)")
        assert rounds and float(rounds[0]["value"][1]) > 0
    finally:
        stop(server)
        stop(up, signal.SIGINT)
        pids = [json.loads(p.read_text()).get("pid") for p in state.glob("status-*.json")]
    assert up.returncode is not None and server.returncode is not None
    for pid in pids:     # no orphans: every process of the cell is gone
        assert pid and _zombie_or_gone(pid), pid


def _zombie_or_gone(pid: int) -> bool:
    try:
        return "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return True
