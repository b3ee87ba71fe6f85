"""``autocell experiment``: sweep files, run points, statistics, and sweeps on a real local Ray.

The Ray tests share one local Ray for the whole session (``ray_local`` in
conftest.py); the sweeps run the minimal cell, so each run takes a fraction
of a second and the module stays fast.
"""

from __future__ import annotations

import csv
import json
import math
import shlex
from pathlib import Path

import pytest

from ops.cli import main
from ops.config import ConfigError
from ops.experiment.command import run_sweep
from ops.experiment.results import mean_ci95, t_quantile
from ops.experiment.sweep import (
    PathError,
    apply_override,
    expand,
    load_sweep,
    parse_path,
)

ROOT = Path(__file__).resolve().parents[1]
MINIMAL = ROOT / "cell_configs" / "minimal_cell.yaml"

SWEEP_2x2x3 = f"""\
name: tiny
cells: [{MINIMAL}]
grid:
  machines[saw1].capabilities.sawing: [10.0, 12.0]
strategies:
  - {{name: ef, order: earliest_finish}}
  - {{name: lc, order: lowest_cost, resource: first_come}}
seeds: [1, 2, 3]
"""


def write(tmp: Path, name: str, text: str) -> Path:
    path = tmp / name
    path.write_text(text)
    return path


def rows_of(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


# --------------------------------------------------------------------------- paths and points


@pytest.mark.parametrize("path, parts", [
    ("negotiation.reply_deadline_s", ["negotiation", "reply_deadline_s"]),
    ("machines[mill1].mttr_s", ["machines", "mill1", "mttr_s"]),
    ("orders[0].due_at", ["orders", 0, "due_at"]),
    ("machines[saw1].capabilities.sawing", ["machines", "saw1", "capabilities", "sawing"]),
])
def test_paths_parse(path: str, parts: list) -> None:
    assert parse_path(path) == parts


@pytest.mark.parametrize("path", ["", "negotiation.", ".lease_s", "a..b", "machines[x", "a b", "a[0]b"])
def test_bad_paths_are_errors(path: str) -> None:
    with pytest.raises(PathError):
        parse_path(path)


def test_override_sets_nested_and_missing_sections() -> None:
    data = {"cell": "c", "machines": [{"id": "m1", "capabilities": {"x": 1.0}}]}
    apply_override(data, "machines[m1].mttr_s", 60)
    apply_override(data, "sim.network.loss", 0.1)
    apply_override(data, "machines[0].capabilities.y", 2.0)
    assert data["machines"][0] == {"id": "m1", "capabilities": {"x": 1.0, "y": 2.0}, "mttr_s": 60}
    assert data["sim"] == {"network": {"loss": 0.1}}
    with pytest.raises(PathError, match="no item with id 'm9'"):
        apply_override(data, "machines[m9].mttr_s", 1)
    with pytest.raises(PathError, match="did you mean 'mttr_s'"):
        apply_override(data, "machines[m1].mtr_s", 1)


def test_points_are_the_cartesian_product_with_stable_ids(tmp_path: Path) -> None:
    sweep_file = write(tmp_path, "s.yaml", SWEEP_2x2x3)
    points = expand(load_sweep(sweep_file))
    assert len(points) == 12
    assert len({p.run_id for p in points}) == 12
    assert [p.run_id for p in expand(load_sweep(sweep_file))] == [p.run_id for p in points]
    lc = next(p for p in points if p.strategy == "lc")
    assert lc.cell_data["negotiation"]["strategy"] == {"order": "lowest_cost",
                                                       "resource": "first_come"}
    # an edited base cell gives new ids, so --resume reruns what changed
    cell = write(tmp_path, "cell.yaml", MINIMAL.read_text().replace("due_at: 120", "due_at: 130"))
    moved = expand(load_sweep(write(tmp_path, "s2.yaml", SWEEP_2x2x3.replace(str(MINIMAL),
                                                                             str(cell)))))
    assert not {p.run_id for p in moved} & {p.run_id for p in points}


def test_repetitions_derive_their_own_seeds(tmp_path: Path) -> None:
    text = SWEEP_2x2x3.replace("seeds: [1, 2, 3]", "seeds: [7]\nrepetitions: 3")
    points = expand(load_sweep(write(tmp_path, "s.yaml", text)))
    seeds = {p.seed for p in points}
    assert len(points) == 12 and 7 in seeds and len(seeds) == 3


# --------------------------------------------------------------------------- validation


def test_sweep_errors_point_at_file_and_line(tmp_path: Path) -> None:
    bad = write(tmp_path, "bad.yaml", f"""\
name: bad
cells: [{MINIMAL}]
grid:
  negotiation.reply_deadlin_s: [0.1]
  machines[saw9].mttr_s: [60]
  negotiation.lease_s: [30, -1]
strategies:
  - {{name: a, order: no_such_strategy}}
  - {{name: a, resource: "no_such_module:X"}}
faults: [missing_faults.yaml]
seeds: [1, -2]
colour: red
""")
    with pytest.raises(ConfigError) as info:
        load_sweep(bad)
    text = str(info.value)
    for line, fragment in [
        (4, ("grid['negotiation.reply_deadlin_s']: in cell 'minimal': negotiation has no "
            "field 'reply_deadlin_s' (did you mean 'reply_deadline_s'?)")),
        (5, ("grid['machines[saw9].mttr_s']: in cell 'minimal': machines has no item with id "
            "'saw9' (known: saw1)")),
        (6, ("grid['negotiation.lease_s'][1]: value -1 makes cell 'minimal' invalid: "
            "negotiation.lease_s: Input should be greater than or equal to 0.01")),
        (8, "strategies[0].order: unknown strategy 'no_such_strategy'"),
        (9, "strategies[1].name: strategy name 'a' is already used"),
        (9, "strategies[1].resource: cannot load strategy 'no_such_module:X'"),
        (10, "faults[0]: fault scenario 'missing_faults.yaml' does not load"),
        (11, "seeds[1]: Input should be greater than or equal to 0"),
        (12, "colour: unknown key 'colour'"),
    ]:
        assert f"{bad}:{line}: {fragment}" in text, (line, text)
    assert "missing_faults.yaml: no such file" in text


def test_cli_bad_sweep_exits_2_without_traceback(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    bad = write(tmp_path, "bad.yaml", "name: x\ncells: []\n")
    assert main(["experiment", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:2: cells:" in err and "Traceback" not in err
    assert main(["experiment", str(tmp_path / "nope.yaml")]) == 2
    good = write(tmp_path, "s.yaml", SWEEP_2x2x3)
    assert main(["experiment", str(good), "--workers", "0"]) == 2
    # nothing listens on port 1: a clear error at once, not Ray's minutes of retries
    assert main(["experiment", str(good), "--address", "127.0.0.1:1",
                 "--out", str(tmp_path / "a")]) == 2
    assert "cannot reach a Ray cluster at 127.0.0.1:1" in capsys.readouterr().err
    assert main(["experiment", str(good), "--address", "nonsense",
                 "--out", str(tmp_path / "b")]) == 2
    assert main(["experiment", str(good), "--show", "000000000000", "--out",
                 str(tmp_path / "o")]) == 2
    assert "no run '000000000000'" in capsys.readouterr().err


def test_dry_run_lists_points(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write(tmp_path, "s.yaml", SWEEP_2x2x3)
    assert main(["experiment", str(good), "--dry-run"]) == 0
    out = capsys.readouterr()
    assert len(out.out.splitlines()) == 12 and "12 runs" in out.err


SWEEP_PARAMS = f"""\
name: tuned
cells: [{MINIMAL}]
strategies:
  - {{name: slack, resource: slack_bidding}}
  - {{name: slack, resource: {{name: slack_bidding, params: {{priority_weight_s: 600}}}}}}
  - resource: {{name: slack_bidding, params: {{work_weight: 2}}}}
  - {{order: {{name: lowest_cost, params: {{energy_s_per_kwh: 60}}}}, resource: first_come}}
seeds: [1]
"""


def test_sweep_entries_with_params_get_their_own_labels_rows_and_ids(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ops.experiment.runner import execute_point
    path = write(tmp_path, "s.yaml", SWEEP_PARAMS)
    points = expand(load_sweep(path))
    assert [p.strategy for p in points] == [
        "slack", "slack{priority_weight_s=600}", "slack_bidding{work_weight=2}",
        "lowest_cost+first_come{energy_s_per_kwh=60}"]
    assert len({p.run_id for p in points}) == 4
    assert points[0].cell_data["negotiation"]["strategy"] == {"resource": "slack_bidding"}
    assert points[1].cell_data["negotiation"]["strategy"] == {
        "resource": {"name": "slack_bidding", "params": {"priority_weight_s": 600}}}
    rows = [execute_point(p) for p in points]
    assert [r["status"] for r in rows] == ["ok"] * 4, [r["error"] for r in rows]
    assert [r["strategy"] for r in rows] == [p.strategy for p in points]
    assert main(["experiment", str(path), "--dry-run"]) == 0
    listed = capsys.readouterr().out
    assert "slack{priority_weight_s=600}" in listed and "slack_bidding{work_weight=2}" in listed
    # the entry without params keeps the label and the run id it had before params existed
    plain = expand(load_sweep(write(tmp_path, "p.yaml", SWEEP_PARAMS.replace(
        "  - {name: slack, resource: {name: slack_bidding, params: {priority_weight_s: 600}}}\n",
        ""))))
    assert plain[0].run_id == points[0].run_id


def test_sweep_strategy_params_are_checked_with_lines(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    bad = write(tmp_path, "bad.yaml", f"""\
name: bad
cells: [{MINIMAL}]
grid:
  negotiation.strategy.resource.params.work_weight: [1, 2]
strategies:
  - {{name: a, resource: {{name: slack_bidding, params: {{work_wieght: 2}}}}}}
  - {{name: b, order: {{name: earliest_finish, params: {{x: 1}}}}}}
  - {{resource: {{name: slack_bidding, params: {{work_weight: fast}}}}}}
  - {{resource: {{name: slack_bidding, params: {{work_weight: fast}}}}}}
""")
    assert main(["experiment", str(bad), "--dry-run"]) == 2
    err = capsys.readouterr().err
    for line, fragment in [
        (4, ("grid['negotiation.strategy.resource.params.work_weight']: in cell 'minimal': "
             "negotiation.strategy.resource is a strategy; sweep its parameters with one "
             "`strategies` entry per value")),
        (6, ("strategies[0].resource.params.work_wieght: unknown parameter 'work_wieght' of "
             "strategy 'slack_bidding' (did you mean 'work_weight'?)")),
        (7, "strategies[1].order.params: strategy 'earliest_finish' takes no parameters"),
        (8, "strategies[2].resource.params.work_weight: Input should be a valid number"),
        (9, ("strategies[3]: strategy label 'slack_bidding{work_weight=fast}' is already used "
             "by strategies[2]")),
    ]:
        assert f"{bad}:{line}: {fragment}" in err, (line, err)


# --------------------------------------------------------------------------- statistics


@pytest.mark.parametrize("df, expected", [(1, 12.7062), (2, 4.3027), (4, 2.7764), (10, 2.2281),
                                          (30, 2.0423), (1000, 1.9623)])
def test_t_quantile_matches_the_table(df: int, expected: float) -> None:
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=1e-4)


def test_mean_ci95() -> None:
    mean, half = mean_ci95([1.0, 2.0, 3.0])
    assert mean == 2.0 and half == pytest.approx(4.3027 / math.sqrt(3), rel=1e-4)
    assert math.isnan(mean_ci95([5.0])[1])


# --------------------------------------------------------------------------- sweeps on Ray


def test_sweep_gives_12_rows_then_resume_runs_none(tmp_path: Path, ray_local) -> None:
    sweep = load_sweep(write(tmp_path, "s.yaml", SWEEP_2x2x3))
    out = tmp_path / "out"
    first = run_sweep(sweep, out, workers=2)
    assert (first["ran"], first["failed"], first["skipped"]) == (12, 0, 0)
    rows = rows_of(out / "runs.csv")
    assert len(rows) == 12 and {r["status"] for r in rows} == {"ok"}
    assert {r["strategy"] for r in rows} == {"ef", "lc"}
    assert {r["machines[saw1].capabilities.sawing"] for r in rows} == {"10.0", "12.0"}
    assert all(len(r["event_log_sha256"]) == 64 and float(r["makespan"]) > 0 for r in rows)
    # sawing 12 s per unit x 3 units is slower than 10 s per unit
    by_speed = {r["machines[saw1].capabilities.sawing"]: float(r["makespan"]) for r in rows}
    assert by_speed["12.0"] > by_speed["10.0"]
    summary = rows_of(out / "summary.csv")
    assert len(summary) == 4 and all(s["runs"] == "3" for s in summary)
    assert all(s["makespan_ci95"] == "0.0" for s in summary)   # the minimal cell has no chance
    plots = sorted(p.name for p in (out / "plots").iterdir())
    assert "makespan_vs_machines_saw1_.capabilities.sawing.png" in plots
    assert (out / "plots" / plots[0]).read_bytes()[:4] == b"\x89PNG"
    assert len((out / "runs.jsonl").read_text().splitlines()) == 12

    again = run_sweep(sweep, out, workers=2, resume=True)
    assert (again["ran"], again["skipped"]) == (0, 12)
    assert rows_of(out / "runs.csv") == rows
    # without --resume an output directory with results is refused, not overwritten
    assert main(["experiment", str(tmp_path / "s.yaml"), "--out", str(out), "--quiet"]) == 2


def test_resume_after_an_interrupted_sweep_runs_only_the_rest(tmp_path: Path,
                                                              ray_local) -> None:
    sweep = load_sweep(write(tmp_path, "s.yaml", SWEEP_2x2x3))
    out = tmp_path / "out"
    run_sweep(sweep, out, workers=2)
    full = {r["run_id"]: r["event_log_sha256"] for r in rows_of(out / "runs.csv")}
    journal = out / "runs.jsonl"
    lines = journal.read_text().splitlines()
    journal.write_text("\n".join(lines[:5]) + "\n" + lines[5][:40])   # killed mid-write
    resumed = run_sweep(sweep, out, workers=2, resume=True)
    assert (resumed["ran"], resumed["skipped"]) == (7, 5)
    assert {r["run_id"]: r["event_log_sha256"] for r in rows_of(out / "runs.csv")} == full


def test_sweep_hashes_match_autocell_run(tmp_path: Path, ray_local,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    faults = write(tmp_path, "saw_breaks.yaml", """\
name: saw-breaks
breakdowns:
  - {resource: saw1, at_s: 5, repair_s: 10}
""")
    sweep_file = write(tmp_path, "s.yaml", f"""\
name: hashes
cells: [{MINIMAL}]
grid:
  orders[o-1].quantity: [2, 4]
strategies:
  - {{name: ef}}
  - {{name: fc, resource: first_come}}
faults: [null, {faults.name}]
seeds: [3]
until_s: 200
""")
    out = tmp_path / "out"
    assert main(["experiment", str(sweep_file), "--out", str(out), "--quiet"]) == 0
    rows = rows_of(out / "runs.csv")
    assert len(rows) == 8 and {r["scenario"] for r in rows} == {"none", "saw-breaks"}
    assert len({r["event_log_sha256"] for r in rows}) >= 4
    capsys.readouterr()
    for row in rows:
        assert main(["experiment", str(sweep_file), "--out", str(out), "--show",
                     row["run_id"]]) == 0
        command = shlex.split(capsys.readouterr().out.strip())
        assert command[:2] == ["autocell", "run"] and "--seed" in command
        assert ("--faults" in command) == (row["scenario"] != "none")
        report = tmp_path / f"{row['run_id']}.json"
        main([*command[1:], "--quiet", "--report", str(report)])
        direct = json.loads(report.read_text())
        assert direct["event_log_sha256"] == row["event_log_sha256"], row["run_id"]
        assert direct["makespan"] == float(row["makespan"])


def test_a_failing_point_is_recorded_and_the_others_finish(tmp_path: Path, ray_local,
                                                           capsys: pytest.CaptureFixture[str]
                                                           ) -> None:
    # each value is valid alone; lease 8 s with heartbeats every 20 s is not
    sweep_file = write(tmp_path, "s.yaml", f"""\
name: clash
cells: [{MINIMAL}]
grid:
  negotiation.lease_s: [30, 8]
  negotiation.heartbeat_interval_s: [2, 20]
seeds: [1, 2]
""")
    out = tmp_path / "out"
    assert main(["experiment", str(sweep_file), "--out", str(out), "--quiet"]) == 1
    assert "2 failed" in capsys.readouterr().err
    rows = rows_of(out / "runs.csv")
    assert len(rows) == 8
    failed = [r for r in rows if r["status"] == "failed"]
    assert len(failed) == 2
    assert all(r["negotiation.lease_s"] == "8" and r["negotiation.heartbeat_interval_s"] == "20"
               for r in failed)
    assert all("ConfigError" in r["error"] and "must be longer than heartbeat_interval_s"
               in r["error"] for r in failed)
    assert all(r["event_log_sha256"] and r["orders_completed"] == "1"
               for r in rows if r["status"] == "ok")
    summary = rows_of(out / "summary.csv")
    clash = next(s for s in summary if s["negotiation.lease_s"] == "8"
                 and s["negotiation.heartbeat_interval_s"] == "20")
    assert (clash["failed"], clash["makespan_mean"]) == ("2", "")
