"""Sweeps know what their results were made with: strategy code in run ids, the manifest.

The sweeps here run in this process (Ray replaced by a serial loop, see
``inline_ray``), so a plug-in written to ``tmp_path`` is importable by the
runs and can be edited between two sweeps, as a researcher edits theirs.
"""

from __future__ import annotations

import csv
import importlib
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from ops.experiment import command, runner
from ops.experiment.command import run_sweep
from ops.experiment.sweep import expand, load_sweep

ROOT = Path(__file__).resolve().parents[1]
MINIMAL = ROOT / "cell_configs" / "minimal_cell.yaml"

PLUGIN_V1 = '''\
from agents.negotiation.strategies import ResourceStrategy


class Lifo(ResourceStrategy):
    name = "lifo"

    def rank(self, cfp):
        return (-cfp.earliest_start_at, cfp.task)
'''
PLUGIN_V2 = PLUGIN_V1.replace("(-cfp.earliest_start_at, cfp.task)",
                              "(-cfp.earliest_start_at, -cfp.priority, cfp.task)")

SWEEP = f"""\
name: stale
cells: [{MINIMAL}]
strategies:
  - {{name: base, resource: default}}
  - {{name: lifo, resource: "stalelab_mod:Lifo"}}
seeds: [1, 2]
"""
#: One KPI, so a sweep draws one plot (PNG + SVG) instead of seven: the tests stay fast.
ONE_KPI = "kpis: [makespan]\n"


@pytest.fixture
def inline_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    """run_sweep without Ray: the points run one after the other in this process."""
    @contextmanager
    def session(address: Any, workers: int) -> Iterator[dict[str, Any]]:
        yield {"cpus": 1, "started": False}

    def serial(points: list[Any], workers: int, on_row: Any) -> runner.SweepOutcome:
        for point in points:
            on_row(runner.execute_point(point))
        return runner.SweepOutcome(ran=len(points), failed=0, wall_s=0.0)

    monkeypatch.setattr(command, "ray_session", session)
    monkeypatch.setattr(command, "run_points", serial)


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Write (and rewrite) the plug-in module ``stalelab_mod``; a rewrite is seen as a new
    process would see it (the module is imported again, no bytecode cache)."""
    lab = tmp_path / "lab"
    lab.mkdir()
    monkeypatch.syspath_prepend(str(lab))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)

    def write(text: str) -> None:
        (lab / "stalelab_mod.py").write_text(text)
        sys.modules.pop("stalelab_mod", None)
        importlib.invalidate_caches()

    write(PLUGIN_V1)
    yield write
    sys.modules.pop("stalelab_mod", None)


def rows_of(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_run_ids_follow_the_strategy_source(tmp_path: Path, plugin: Any) -> None:
    sweep_file = tmp_path / "s.yaml"
    sweep_file.write_text(SWEEP)
    before = {(p.strategy, p.seed): p for p in expand(load_sweep(sweep_file))}
    assert before[("lifo", 1)].fingerprints["resource"]["class"] == "stalelab_mod:Lifo"
    assert before[("lifo", 1)].fingerprints["resource"]["source_sha256"]
    plugin(PLUGIN_V1 + "\n\n# outside the class: not the strategy's code\n")
    assert [p.run_id for p in expand(load_sweep(sweep_file))] == \
        [p.run_id for p in before.values()]
    plugin(PLUGIN_V2)
    after = {(p.strategy, p.seed): p for p in expand(load_sweep(sweep_file))}
    for seed in (1, 2):
        assert after[("base", seed)].run_id == before[("base", seed)].run_id
        assert after[("lifo", seed)].run_id != before[("lifo", seed)].run_id
        assert after[("lifo", seed)].code != before[("lifo", seed)].code


def test_shipped_strategies_are_fingerprinted_with_their_package_version(
        tmp_path: Path) -> None:
    from importlib.metadata import version

    sweep_file = tmp_path / "s.yaml"
    sweep_file.write_text(f"name: v\ncells: [{MINIMAL}]\n"
                          "strategies: [{resource: slack_bidding}]\n")
    point = expand(load_sweep(sweep_file))[0]
    fp = point.fingerprints["resource"]
    assert fp["class"] == "agents.negotiation.slack:SlackBidding"
    assert (fp["package"], fp["version"]) == ("autocell", version("autocell"))
    assert point.fingerprints["order"]["class"] == "agents.negotiation.strategies:EarliestFinish"


def test_resume_after_a_plugin_changed_runs_its_points_again(
        tmp_path: Path, plugin: Any, inline_ray: None,
        capsys: pytest.CaptureFixture[str]) -> None:
    sweep_file = tmp_path / "s.yaml"
    sweep_file.write_text(SWEEP + ONE_KPI)
    out = tmp_path / "out"
    first = run_sweep(load_sweep(sweep_file), out, workers=1)
    assert (first["ran"], first["skipped"], first["stale"]) == (4, 0, 0)
    unchanged = run_sweep(load_sweep(sweep_file), out, workers=1, resume=True)
    assert (unchanged["ran"], unchanged["skipped"], unchanged["stale"]) == (0, 4, 0)
    capsys.readouterr()

    plugin(PLUGIN_V2)
    again = run_sweep(load_sweep(sweep_file), out, workers=1, resume=True)
    assert (again["ran"], again["skipped"], again["stale"]) == (2, 2, 2)
    err = capsys.readouterr().err
    assert "strategy 'lifo': its strategy code changed" in err
    assert "2 point(s) run again" in err and "reuse" not in err
    assert "'base'" not in err
    rows = rows_of(out / "runs.csv")
    assert len(rows) == 4   # the stale rows are replaced, not added
    codes = {r["strategy"]: r["code"] for r in rows}
    new = {p.strategy: p.code for p in expand(load_sweep(sweep_file))}
    assert codes == new
    assert len((out / "runs.jsonl").read_text().splitlines()) == 6   # the journal keeps all

    plugin(PLUGIN_V1)                    # put back: the first rows are current again
    back = run_sweep(load_sweep(sweep_file), out, workers=1, resume=True)
    assert (back["ran"], back["skipped"]) == (0, 4)
    err = capsys.readouterr().err
    assert "2 point(s) reuse rows recorded earlier with code" in err and "run again" not in err


def test_validate_catches_a_strategy_typo_in_a_cell_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ops.cli import main

    cell = tmp_path / "cell.yaml"
    cell.write_text(MINIMAL.read_text()
                    + "negotiation:\n  strategy: {resource: slack_biding}\n")
    assert main(["validate", str(cell)]) == 2
    err = capsys.readouterr().err
    assert "cell.yaml:" in err and "negotiation.strategy.resource" in err
    assert "unknown strategy 'slack_biding' (did you mean 'slack_bidding'?)" in err


def test_every_output_directory_gets_a_manifest(tmp_path: Path, plugin: Any,
                                                inline_ray: None) -> None:
    import hashlib
    import platform

    (tmp_path / "saw.yaml").write_text(
        "name: saw-breaks\nbreakdowns:\n  - {resource: saw1, at_s: 5, repair_s: 10}\n")
    sweep_file = tmp_path / "s.yaml"
    sweep_file.write_text(SWEEP + ONE_KPI + "faults: [null, saw.yaml]\n")
    out = tmp_path / "out"
    run_sweep(load_sweep(sweep_file), out, workers=1)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["sweep"] == "stale"
    assert manifest["autocell"]["version"]
    assert len(manifest["autocell"]["commit"] or "x" * 40) == 40   # None outside a git tree
    assert manifest["python"]["version"] == platform.python_version()
    assert manifest["platform"]["system"] == platform.platform()
    assert manifest["started_at"] <= manifest["ended_at"]
    lifo = manifest["strategies"]["lifo"]["minimal"]
    assert lifo["resource"]["class"] == "stalelab_mod:Lifo"
    assert lifo["resource"]["source_sha256"] and lifo["code"]
    files = manifest["files"]
    copies = [files["sweep"], *files["cells"], *files["faults"]]
    assert [Path(c["file"]).name for c in copies] == ["s.yaml", MINIMAL.name, "saw.yaml"]
    for c in copies:
        copy = out / c["copy"]
        assert copy.read_bytes() == Path(c["file"]).read_bytes()
        assert hashlib.sha256(copy.read_bytes()).hexdigest() == c["sha256"]
    assert [i["ran"] for i in manifest["invocations"]] == [8]

    run_sweep(load_sweep(sweep_file), out, workers=1, resume=True)
    manifest = json.loads((out / "manifest.json").read_text())
    assert [(i["ran"], i["skipped"]) for i in manifest["invocations"]] == [(8, 0), (0, 8)]
    assert all(i["ended_at"] for i in manifest["invocations"])


def test_the_printed_tables_show_every_kpi_and_the_paired_differences(
        tmp_path: Path, plugin: Any, inline_ray: None,
        capsys: pytest.CaptureFixture[str]) -> None:
    from ops.cli import main

    sweep_file = tmp_path / "s.yaml"
    sweep_file.write_text(SWEEP + "kpis: [makespan, tardy_orders, messages_sent, reroutes]\n")
    assert main(["experiment", str(sweep_file), "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    for heading in ("makespan (s)", "tardy_orders (count)", "messages_sent (count)",
                    "reroutes (count)"):
        assert printed.count(heading) == 2 + 1   # a row per group, a row per pairing
    assert "paired: strategy − base on common seeds" in printed
    paired = rows_of(tmp_path / "out" / "paired.csv")
    assert {(r["strategy"], r["baseline"], r["pairs"]) for r in paired} == {("lifo", "base", "2")}


@pytest.mark.parametrize("x, text", [(None, "—"), (0, "0"), (0.0123456, "0.0123"),
                                     (2.5, "2.5"), (98.8234, "98.8"), (2851.6, "2,852"),
                                     (-1234567.0, "-1,234,567")])
def test_numbers_are_formatted_for_people(x: Any, text: str) -> None:
    from ops.experiment.results import format_number

    assert format_number(x) == text


def test_a_worker_with_other_strategy_code_refuses_the_point(tmp_path: Path,
                                                            plugin: Any) -> None:
    import dataclasses

    sweep_file = tmp_path / "s.yaml"
    sweep_file.write_text(SWEEP)
    point = next(p for p in expand(load_sweep(sweep_file)) if p.strategy == "lifo")
    assert runner.execute_point(point)["status"] == "ok"
    plugin(PLUGIN_V2)   # the worker has another version than the driver expanded with
    row = runner.execute_point(point)
    assert row["status"] == "failed"
    assert "the resource strategy on this worker is not the one the sweep was expanded with" \
        in row["error"] and "source_sha256" in row["error"]
    fresh = dataclasses.replace(point, fingerprints={})   # nothing to compare: runs
    assert runner.execute_point(fresh)["status"] == "ok"
