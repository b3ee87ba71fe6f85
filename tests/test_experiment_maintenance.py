"""A sweep over a negotiating maintenance cell runs as ``autocell run`` runs it (ADR 82).

Each point attaches the negotiated maintenance policy as ``autocell run`` does (the
simulator's workshop does the jobs the agents plan), so a row's event-log hash is the one
its reproduce command gives — run from another directory, because the point's cell file
names the model file by its absolute path; and a retrained model file gives new run ids,
so ``--resume`` does not keep rows of the old model.
"""

from __future__ import annotations

import csv
import json
import os
import shlex
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from agents.maintenance.rul import Channel, prior_model
from ops.cli import main
from ops.config import load_cell
from ops.experiment.sweep import expand, load_sweep

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "cell_configs" / "demo_cell_maintenance.yaml"


def _models(offset: float) -> dict[str, Any]:
    """mill1's prior with its new-machine levels ``offset`` wear lower."""
    model = prior_model(load_cell(DEMO).machine("mill1").degradation)
    model = replace(model, channels={
        k: Channel(c.idle - offset * c.per_wear, c.busy - offset * c.per_wear, c.per_wear,
                   c.noise) for k, c in model.channels.items()})
    return {"machines": {"mill1": model.to_json()}}


def _sweep(tmp_path: Path) -> Path:
    (tmp_path / "plant").mkdir()
    data = yaml.safe_load(DEMO.read_text())
    data["maintenance"].update(negotiate=True, models="models/trained.json")
    (tmp_path / "plant" / "cell.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    (tmp_path / "plant" / "models").mkdir()
    (tmp_path / "plant" / "models" / "trained.json").write_text(json.dumps(_models(0.3)))
    sweep = tmp_path / "plant" / "sweep.yaml"
    sweep.write_text("name: maint\ncells: [cell.yaml]\ngrid: {}\nseeds: [2]\n"
                     "until_s: 1800\n")
    return sweep


def test_a_retrained_model_file_gives_new_run_ids(tmp_path: Path) -> None:
    sweep = _sweep(tmp_path)
    before = [p.run_id for p in expand(load_sweep(sweep))]
    point = expand(load_sweep(sweep))[0]
    assert Path(point.cell_data["maintenance"]["models"]).is_absolute()
    (tmp_path / "plant" / "models" / "trained.json").write_text(json.dumps(_models(0.5)))
    assert not set(before) & {p.run_id for p in expand(load_sweep(sweep))}


def test_a_sweep_row_of_a_negotiating_cell_is_its_autocell_run(
        tmp_path: Path, ray_local: Any, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    sweep, out = _sweep(tmp_path), tmp_path / "out"
    assert main(["experiment", str(sweep), "--out", str(out), "--quiet"]) == 0
    with (out / "runs.csv").open() as f:
        (row,) = list(csv.DictReader(f))
    assert row["status"] == "ok", row["error"]
    capsys.readouterr()
    assert main(["experiment", str(sweep), "--out", str(out), "--show", row["run_id"]]) == 0
    command = shlex.split(capsys.readouterr().out.strip())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)        # the point's cell file names the models absolutely
    report, events = elsewhere / "r.json", elsewhere / "e.jsonl"
    assert main([*command[1:], "--quiet", "--report", str(report),
                 "--events", str(events)]) == 0
    direct = json.loads(report.read_text())
    assert direct["event_log_sha256"] == row["event_log_sha256"]
    # the simulator's workshop did the jobs the agents planned (none are refused)
    kinds = [json.loads(line).get("ev") for line in events.read_text().splitlines()]
    assert "maintenance_done" in kinds and "maint_refused" not in kinds
    assert os.path.isabs(yaml.safe_load(Path(command[2]).read_text())["maintenance"]["models"])
