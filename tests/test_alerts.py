"""Alerting for an automation engineer (issue 18): shipped Prometheus alert rules checked by
promtool (syntax and behaviour on made-up series), the console as a scrape target, and the
Grafana dashboard's "Processes up" red for 0 and units on every panel."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from ops.cli import main

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "cell_configs" / "demo_cell.yaml"
ALERTS = ROOT / "ops" / "prometheus" / "demo_cell_alerts.yml"
DASHBOARD = ROOT / "ops" / "grafana" / "autocell.json"


def promtool() -> str:
    found = shutil.which("promtool")
    assert found, "install the Debian package prometheus (tests/setup.sh does)"
    return found


def test_sample_alert_rules_are_current(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ops", "prometheus-rules", str(DEMO)]) == 0
    assert capsys.readouterr().out == ALERTS.read_text(), (
        "regenerate: autocell ops prometheus-rules cell_configs/demo_cell.yaml "
        "--out ops/prometheus/demo_cell_alerts.yml")
    names = [r["alert"] for r in yaml.safe_load(ALERTS.read_text())["groups"][0]["rules"]]
    assert names == ["AutocellProcessDown", "AutocellCellStalled",
                     "AutocellP1EscalationOverdue", "AutocellRejectBurst"]


def test_promtool_checks_the_rules() -> None:
    r = subprocess.run([promtool(), "check", "rules", str(ALERTS)], capture_output=True,
                       text=True, check=False)
    assert r.returncode == 0 and "SUCCESS: 4 rules found" in r.stdout, r.stdout + r.stderr


def test_the_speed_turns_cell_times_into_wall_times(capsys: pytest.CaptureFixture[str]
                                                    ) -> None:
    assert main(["ops", "prometheus-rules", str(DEMO), "--speed", "10"]) == 0
    rules = {r["alert"]: r for r in yaml.safe_load(capsys.readouterr().out)["groups"][0]["rules"]}
    assert "> 120" in rules["AutocellP1EscalationOverdue"]["expr"]   # cell seconds, any speed
    assert "12s at this speed" in rules["AutocellP1EscalationOverdue"]["annotations"]["summary"]
    assert "[60s]" in rules["AutocellRejectBurst"]["expr"]            # never below 1 min
    assert main(["ops", "prometheus-rules", str(DEMO), "--speed", "0"]) == 2


UNIT_TESTS = """\
rule_files: [RULES]
evaluation_interval: 15s
tests:
  - interval: 15s
    input_series:
      - series: 'up{cell="demo-cell", process="machines", instance="127.0.0.1:9602"}'
        values: '1 1 0x10'
      - series: 'up{cell="demo-cell", process="orders", instance="127.0.0.1:9601"}'
        values: '1x12'
      - series: 'autocell_messages_rejected_total{cell="demo-cell", process="orders", reason="bad_signature"}'
        values: '0 0 10 30 30 30 30 30'
      - series: 'autocell_escalation_oldest_unacknowledged_seconds{cell="demo-cell", process="console", priority="1"}'
        values: '0+15x20'
      - series: 'autocell_escalation_oldest_unacknowledged_seconds{cell="demo-cell", process="console", priority="2"}'
        values: '0+15x20'
    alert_rule_test:
      - eval_time: 2m
        alertname: AutocellProcessDown
        exp_alerts:
          - exp_labels: {severity: critical, cell: demo-cell, process: machines, instance: '127.0.0.1:9602'}
            exp_annotations:
              summary: autocell process machines of cell demo-cell is down
              description: "127.0.0.1:9602 has not answered a scrape for 1 minute. `autocell up` restarts a dead process at once: it gave up (restart intensity) or the PC is gone. See STATE_DIR/NAME.log."
      - eval_time: 1m
        alertname: AutocellRejectBurst
        exp_alerts:
          - exp_labels: {severity: critical, cell: demo-cell, process: orders}
            exp_annotations:
              summary: process orders of cell demo-cell rejected 20 or more messages within 60s
              description: "Forged, replayed or forbidden messages (30): see autocell_messages_rejected_total by reason, and the process's log."
      - eval_time: 1m
        alertname: AutocellP1EscalationOverdue
        exp_alerts: []
      - eval_time: 2m
        alertname: AutocellP1EscalationOverdue
        exp_alerts: []
      - eval_time: 3m
        alertname: AutocellP1EscalationOverdue
        exp_alerts:
          - exp_labels: {severity: critical, cell: demo-cell}
            exp_annotations:
              summary: a priority-1 escalation of cell demo-cell has waited longer than its response deadline (120 cell s, 120s at this speed)
              description: "The oldest unacknowledged priority-1 escalation was raised 180 cell seconds ago (escalation.response_deadline_s = 120): acknowledge or decide in the console or with `autocell escalations decide`."
  - interval: 1m
    input_series:
      - series: 'autocell_orders{cell="demo-cell", process="orders", state="open"}'
        values: '3x30'
      - series: 'autocell_cell_units_finished{cell="demo-cell", process="sim"}'
        values: '0 1 2 2x27'
      - series: 'autocell_negotiation_rounds_total{cell="demo-cell", process="orders", outcome="award"}'
        values: '0 4 8 8x27'
    alert_rule_test:
      - eval_time: 8m
        alertname: AutocellCellStalled
        exp_alerts: []
      - eval_time: 15m
        alertname: AutocellCellStalled
        exp_alerts:
          - exp_labels: {severity: warning, cell: demo-cell}
            exp_annotations:
              summary: cell demo-cell has open orders and made no progress for 600s
              description: "No unit finished and no negotiation round ran for 600s (twice the longest operation, at least 10 min) while 3 order(s) are open: look at the console and the hosts' logs."
"""


def test_the_alerts_fire_when_they_should(tmp_path: Path) -> None:
    tests = tmp_path / "alerts_test.yml"
    tests.write_text(UNIT_TESTS.replace("RULES", str(ALERTS)))
    r = subprocess.run([promtool(), "test", "rules", str(tests)], capture_output=True,
                       text=True, check=False)
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_console_is_a_scrape_target(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ops", "prometheus-config", str(DEMO), "--rules", str(ALERTS)]) == 0
    doc = yaml.safe_load(capsys.readouterr().out)
    console = doc["scrape_configs"][-1]
    assert console["job_name"] == "autocell-demo-cell-console"
    assert console["static_configs"] == [{"targets": ["127.0.0.1:8601"],
                                          "labels": {"cell": "demo-cell", "process": "console"}}]
    assert doc["rule_files"] == [str(ALERTS)]
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump(doc))
    r = subprocess.run([promtool(), "check", "config", str(config)], capture_output=True,
                       text=True, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert main(["ops", "prometheus-config", str(DEMO), "--console", "none"]) == 0
    assert "console" not in capsys.readouterr().out
    assert main(["ops", "prometheus-config", str(DEMO), "--console", "not a target"]) == 2


def test_processes_up_is_red_for_0_and_every_panel_has_a_unit() -> None:
    panels = [p for p in json.loads(DASHBOARD.read_text())["panels"] if p["type"] != "row"]
    up = next(p for p in panels if p["title"] == "Processes up")
    steps = up["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert steps == [{"color": "red", "value": None}, {"color": "green", "value": 1}]
    assert up["fieldConfig"]["defaults"]["mappings"][0]["options"]["0"]["color"] == "red"
    for p in panels:
        unit = p["fieldConfig"]["defaults"].get("unit")
        if p["type"] == "state-timeline":
            continue                               # states, not quantities
        assert unit and unit != "short", f"{p['title']}: no unit"
