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
    plot_kpis,
    summarise,
    write_csv,
    write_parquet,
)
from ops.experiment.provenance import utc_now, write_manifest
from ops.experiment.runner import SweepOutcome, run_points
from ops.experiment.sweep import RunPoint, Sweep, expand, load_sweep, point_cell_yaml
from ops.lean_ray import ray_session
from security.errors import ConfigurationError

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


def stale_note(label: str, entry: dict[str, Any]) -> str:
    """Why ``--resume`` runs again what ``runs.jsonl`` already holds for one strategy label."""
    old = ", ".join(sorted(entry["old"]))
    if entry["new"] in entry["old"] and len(entry["old"]) == 1:
        why = "its cell, fault scenario or settings changed"
    else:
        why = f"its strategy code changed (code {old} -> {entry['new']})"
    return (f"resume: strategy {label!r}: {why} since {entry['runs']} run(s) were recorded; "
            "those rows are stale and are run again (the old rows stay in runs.jsonl, "
            "not in runs.csv or the summary)")


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
    notes = [stale_note(label, entry) for label, entry in stale.items()]
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
    parquet = write_parquet(out / "runs.parquet", rows, store.first_columns)
    plots = plot_kpis(rows, _dims(sweep, points), sweep.kpis, out / "plots",
                      line_keys=("strategy",) if len({p.scenario for p in points}) == 1
                      else ("strategy", "scenario"))
    outcome.update(points=len(points), skipped=len(points) - len(todo), out=str(out),
                   stale=sum(e["runs"] for e in stale.values()), stale_notes=notes,
                   failed_total=sum(r.get("status") != "ok" for r in rows),
                   parquet=parquet, plots=[str(p) for p in plots], summary=summary)
    outcome["manifest"] = str(write_manifest(out, sweep, points, started_at=started_at,
                                             ended_at=utc_now(), outcome=outcome))
    return outcome


def _print_summary(sweep: Sweep, summary: list[dict[str, Any]], console: Console) -> None:
    t = Table(title=f"sweep {sweep.name} — mean ± 95 % CI per group")
    keys = ["cell", "strategy", "scenario", *sweep.grid]
    for k in keys + ["runs"]:
        t.add_column(k.rsplit(".", 1)[-1])
    shown = sweep.kpis[:3]
    for kpi in shown:
        t.add_column(kpi, justify="right")
    for g in summary:
        cells = [str(g.get(k)) for k in keys] + [f"{g['runs'] - g['failed']}/{g['runs']}"]
        for kpi in shown:
            mean, ci = g.get(f"{kpi}_mean"), g.get(f"{kpi}_ci95")
            cells.append("—" if mean is None else f"{mean:.4g}" + ("" if ci is None
                                                                  else f" ± {ci:.2g}"))
        t.add_row(*cells)
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
    tables = "runs.csv" + (", runs.parquet" if outcome["parquet"] else "")
    print(f"{sweep.name}: {outcome['ran']} run(s) done, {outcome['skipped']} skipped "
          f"(already complete), {outcome['failed_total']} failed; {out}/: {tables}, "
          f"summary.csv, manifest.json, {len(outcome['plots'])} plots", file=sys.stderr)
    return 1 if outcome["failed_total"] else 0
