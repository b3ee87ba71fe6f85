"""The Grafana dashboard: the panels the issue names, and every PromQL expression valid and
naming only metrics that the processes really export."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import yaml
from prometheus_client import Metric

from ops.config import load_cell
from ops.run import virtual_metrics
from sim_bridge.virtual import VirtualCell

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "ops" / "grafana" / "autocell.json"
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count",
                                                              "_created"),
            "gauge": ("",)}


def exported_series() -> set[str]:
    """Every series name a process can export: families of a run's registry, with suffixes."""
    cell = VirtualCell(load_cell(ROOT / "cell_configs" / "demo_cell.yaml"))
    metrics = virtual_metrics(cell)
    cell.run(until=300)
    metrics.set_open_escalations({("1", "unacknowledged"): 1})
    fams: list[Metric] = list(metrics.registry.collect())
    return {f.name + s for f in fams for s in SUFFIXES.get(f.type, ("",))}


def panels() -> list[dict]:
    return [p for p in json.loads(DASHBOARD.read_text())["panels"] if p["type"] != "row"]


def exprs() -> list[str]:
    return [t["expr"] for p in panels() for t in p["targets"]]


def test_dashboard_has_the_panels_the_issue_names() -> None:
    doc = json.loads(DASHBOARD.read_text())
    assert doc["uid"] and doc["title"] and doc["schemaVersion"] >= 30
    titles = " | ".join(p["title"].lower() for p in panels())
    for word in ("oee", "throughput", "negotiation round latency", "rejected", "escalations"):
        assert word in titles, word
    assert all(p["targets"] and all(t["expr"] for t in p["targets"]) for p in panels())
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))


def test_every_metric_in_the_dashboard_is_exported() -> None:
    exported = exported_series()
    named = {name for e in exprs() for name in re.findall(r"\bautocell_[a-z0-9_]+", e)}
    assert named and named <= exported, sorted(named - exported)


def test_every_expression_is_valid_promql(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "install the Debian package prometheus (.ci/run does)"
    grafana_vars = {"$cell": ".*", "$__rate_interval": "1m", "$__range": "1h"}
    rules = []
    for i, e in enumerate(exprs()):
        for var, value in grafana_vars.items():
            e = e.replace(var, value)
        rules.append({"record": f"autocell:dashboard_{i}", "expr": e})
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    r = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True,
                       check=False)
    assert r.returncode == 0, r.stdout + r.stderr
