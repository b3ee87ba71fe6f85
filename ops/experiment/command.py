"""``autocell experiment SWEEP.yaml``: the command around :mod:`.sweep`, :mod:`.runner`, :mod:`.results`.

Exit codes: 0 — every run of the sweep succeeded; 1 — some runs failed (their
rows carry ``status=failed`` and the ``error``); 2 — bad input (sweep file,
flags, an output directory holding another sweep's results).
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from ops.experiment.results import (
    ResultStore,
    format_number,
    kpi_heading,
    summarise,
    write_csv,
    write_parquet,
)
from ops.experiment.provenance import utc_now, write_manifest
from ops.experiment.runner import SweepOutcome, run_points
from ops.experiment.stats import paired_differences
from ops.experiment.sweep import RunPoint, Sweep, expand, load_sweep, point_cell_yaml
from ops.lean_ray import ray_session
from ops.paths import output_dir_problem
from security.errors import ConfigurationError
from security.untrusted import shown

__all__ = ["execute", "reproduce_command", "run_sweep"]


def reproduce_command(point: RunPoint, cell_file: Path) -> str:
    """The ``autocell run`` command that gives the point's ``event_log_sha256``."""
    cmd = ["autocell", "run", str(cell_file), "--seed", str(point.seed)]
    if point.fault_file:
        cmd += ["--faults", point.fault_file]
    if point.until_s is not None:
        cmd += ["--until", repr(point.until_s)]
    return shlex.join(cmd)


def write_point_cell(point: RunPoint, out: Path) -> Path:
    path = out / "cells" / f"{point.run_id}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(point_cell_yaml(point))
    return path


def _dims(sweep: Sweep, points: list[RunPoint]) -> dict[str, list[Any]]:
    """Swept dimensions for plots: grid paths, plus faults and cells when more than one."""
    dims: dict[str, list[Any]] = {p: list(v) for p, v in sweep.grid.items() if len(v) > 1}
    for key in ("scenario", "cell"):
        values = list(dict.fromkeys(getattr(p, key) for p in points))
        if len(values) > 1:
            dims[key] = values
    if not dims:
        dims["strategy"] = list(dict.fromkeys(p.strategy for p in points))
    return dims


def stale_note(label: str, entry: dict[str, Any], *, rerun: int, reused: int) -> str:
    """Why rows ``runs.jsonl`` holds for one strategy label are stale on ``--resume``, and
    what happens to their points: ``rerun`` run again, ``reused`` found done already under
    the current code (recorded before: a strategy edited and then put back)."""
    old = ", ".join(sorted(entry["old"]))
    if entry["new"] in entry["old"] and len(entry["old"]) == 1:
        why = "its cell, fault scenario or settings changed"
    else:
        why = f"its strategy code changed (code {old} -> {entry['new']})"
    then = [f"{rerun} point(s) run again"] if rerun else []
    if reused:
        then.append(f"{reused} point(s) reuse rows recorded earlier with code {entry['new']}")
    return (f"resume: strategy {label!r}: {why} since {entry['runs']} run(s) were recorded; "
            f"those rows are stale (they stay in runs.jsonl, not in runs.csv or the summary): "
            f"{' and '.join(then) or 'nothing to run'}")


def run_sweep(sweep: Sweep, out: Path, *, workers: int, address: str | None = None,
              resume: bool = False, quiet: bool = True,
              console: Console | None = None) -> dict[str, Any]:
    """Run (or finish) a sweep into ``out``; the outcome with the paths written."""
    started_at = utc_now()
    points = expand(sweep)
    order = [p.run_id for p in points]
    out.mkdir(parents=True, exist_ok=True)
    store = ResultStore(out, list(sweep.grid))
    if store.rows and not resume:
        raise ConfigurationError(
            f"{out} already holds results ({len(store.rows)} runs in {store.journal.name}); "
            "pass --resume to skip the completed runs, or --out DIR to write elsewhere")
    done = store.completed() if resume else set()
    todo = [p for p in points if p.run_id not in done]
    stale = store.stale(points) if resume else {}
    todo_ids = {p.run_id for p in todo}
    notes = [stale_note(label, entry, rerun=len(entry["points"] & todo_ids),
                        reused=len(entry["points"] & done))
             for label, entry in stale.items()]
    console = console or Console(stderr=True)
    for note in notes:
        console.print(note, markup=False, highlight=False, soft_wrap=True)
    for p in todo:
        write_point_cell(p, out)
    write_manifest(out, sweep, points, started_at=started_at, ended_at=None,
                   outcome={"points": len(points), "skipped": len(points) - len(todo)})
    outcome = SweepOutcome(ran=0, failed=0, wall_s=0.0)
    if todo:
        with Progress(TextColumn(f"[bold]{sweep.name}"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("runs · {task.fields[failed]} failed"), TimeElapsedColumn(),
                      TextColumn("ETA"), TimeRemainingColumn(), console=console,
                      disable=quiet) as bar:
            task = bar.add_task(sweep.name, total=len(todo), failed=0)
            failed = 0

            def on_row(row: dict[str, Any]) -> None:
                nonlocal failed
                store.add(row, order)
                failed += row.get("status") != "ok"
                bar.update(task, advance=1, failed=failed)

            with ray_session(address, workers) as ray_info:
                limit = workers if address is None else min(workers, max(ray_info["cpus"], 1))
                outcome = run_points(todo, max(1, limit), on_row)
            outcome["ray"] = ray_info
    store.write_table(order)
    rows = store.current(order)
    summary = summarise(rows, list(sweep.grid), sweep.kpis)
    write_csv(out / "summary.csv", summary, ["cell", "strategy", "scenario", *sweep.grid])
    baseline = sweep.baseline_label
    paired = (paired_differences(rows, list(sweep.grid), sweep.kpis, baseline)
              if baseline else [])
    if baseline:
        write_csv(out / "paired.csv", paired,
                  ["cell", "scenario", *sweep.grid, "strategy", "baseline", "kpi", "pairs"])
    parquet = write_parquet(out / "runs.parquet", rows, store.first_columns)
    from ops.experiment.plots import plot_kpis   # matplotlib only when plotting

    plots = plot_kpis(rows, _dims(sweep, points), sweep.kpis, out / "plots",
                      line_keys=("strategy",) if len({p.scenario for p in points}) == 1
                      else ("strategy", "scenario"))
    outcome.update(points=len(points), skipped=len(points) - len(todo), out=str(out),
                   stale=sum(e["runs"] for e in stale.values()), stale_notes=notes,
                   failed_total=sum(r.get("status") != "ok" for r in rows),
                   parquet=parquet, plots=[str(p) for p in plots], summary=summary,
                   paired=paired, baseline=baseline)
    outcome["manifest"] = str(write_manifest(out, sweep, points, started_at=started_at,
                                             ended_at=utc_now(), outcome=outcome))
    return outcome


def _varying(keys: list[str], rows: list[dict[str, Any]]) -> tuple[list[str], str]:
    """The label columns whose value differs between rows, and the constant ones as text
    (for the title), so a table stays readable in 80 columns."""
    shown = [k for k in keys if len({json.dumps(r.get(k), default=str) for r in rows}) > 1]
    fixed = ", ".join(f"{k} {rows[0].get(k)}" for k in keys if k not in shown) if rows else ""
    return shown, fixed


def _print_summary(sweep: Sweep, summary: list[dict[str, Any]], console: Console) -> None:
    """Every KPI the sweep names, one line per group and KPI: mean and 95 % interval
    (bootstrap for KPIs that cannot be negative, see ops/experiment/stats.py)."""
    keys, fixed = _varying(["cell", "strategy", "scenario", *sweep.grid], summary)
    t = Table(title=f"sweep {sweep.name}{' — ' + fixed if fixed else ''}: "
                    "mean and 95 % interval per group")
    for k in [*keys, "KPI", "runs", "mean", "95 % interval"]:
        t.add_column(k.rsplit(".", 1)[-1], justify="right" if k in ("mean", "95 % interval")
                     else "left")
    for kpi in sweep.kpis:
        for g in summary:
            lo, hi = g.get(f"{kpi}_lo"), g.get(f"{kpi}_hi")
            t.add_row(*[str(g.get(k)) for k in keys], kpi_heading(kpi),
                      f"{g['runs'] - g['failed']}/{g['runs']}",
                      format_number(g.get(f"{kpi}_mean")),
                      "—" if lo is None or hi is None
                      else f"[{format_number(lo)}, {format_number(hi)}]")
        t.add_section()
    console.print(t)


def _print_paired(sweep: Sweep, paired: list[dict[str, Any]], baseline: str,
                  console: Console) -> None:
    """Strategy − baseline per seed, averaged: the comparison common seeds make sharp."""
    keys, fixed = _varying(["cell", "scenario", *sweep.grid, "strategy"], paired)
    t = Table(title=f"paired: strategy − {baseline} on common seeds"
                    f"{' — ' + fixed if fixed else ''} (mean ± 95 % CI, Student t)")
    for k in [*keys, "KPI", "pairs", baseline, "strategy", "difference"]:
        t.add_column(k.rsplit(".", 1)[-1], justify="right" if k in (
            baseline, "strategy", "difference") else "left")
    for kpi in sweep.kpis:
        for e in (e for e in paired if e["kpi"] == kpi):
            half = e.get("diff_ci95")
            diff = format_number(e.get("diff_mean"), signed=True) + (
                "" if half is None else f" ± {format_number(half)}")
            t.add_row(*[str(e.get(k)) for k in keys], kpi_heading(kpi), str(e["pairs"]),
                      format_number(e.get("baseline_mean")),
                      format_number(e.get("strategy_mean")), diff)
        t.add_section()
    console.print(t)


def execute(args: Any) -> int:
    from ops.config import ConfigError

    try:
        sweep = load_sweep(args.sweep)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    if args.workers is not None and args.workers < 1:
        raise ConfigurationError("--workers must be at least 1")
    out = Path(args.out) if args.out else Path("experiments") / sweep.name
    problem = output_dir_problem(out)
    if problem is not None:      # found now, not as a traceback when the results are written
        raise ConfigurationError(f"--out {shown(str(out))}: {problem}")
    points = expand(sweep)
    if args.show:
        match = [p for p in points if p.run_id == args.show]
        if not match:
            raise ConfigurationError(f"no run {args.show!r} in sweep {sweep.name!r} "
                                     f"({len(points)} runs; ids are in {out / 'runs.csv'})")
        path = write_point_cell(match[0], out)
        print(reproduce_command(match[0], path))
        return 0
    if args.dry_run:
        for p in points:
            print(f"{p.run_id}  {p.cell}  {p.strategy}  {p.scenario}  seed {p.seed}  "
                  f"{json.dumps(p.params)}")
        print(f"{sweep.source}: OK — {len(points)} runs", file=sys.stderr)
        return 0
    workers = args.workers or (os.cpu_count() or 1)
    outcome = run_sweep(sweep, out, workers=workers, address=args.address,
                        resume=args.resume, quiet=args.quiet)
    if not args.quiet:
        _print_summary(sweep, outcome["summary"], Console())
        if outcome["baseline"]:
            _print_paired(sweep, outcome["paired"], outcome["baseline"], Console())
    tables = "runs.csv" + (", runs.parquet" if outcome["parquet"] else "")
    print(f"{sweep.name}: {outcome['ran']} run(s) done, {outcome['skipped']} skipped "
          f"(already complete), {outcome['failed_total']} failed; {out}/: {tables}, "
          f"summary.csv, {'paired.csv, ' if outcome['baseline'] else ''}manifest.json, "
          f"{sum(p.endswith('.png') for p in outcome['plots'])} plots (PNG and SVG)",
          file=sys.stderr)
    return 1 if outcome["failed_total"] else 0
