"""Sweep results: the run journal, the run table, the per-group summary and the plots.

Every finished run is appended to ``runs.jsonl`` (flushed and fsynced) the
moment it arrives, and ``runs.csv`` is rewritten from it (temporary file,
then rename), so a killed sweep loses nothing it completed and a reader
never sees half a table.  ``--resume`` reads ``runs.jsonl`` back.  The
summary and the plots are made once, at the end, from the rows of the
sweep's current points.

Confidence intervals use Student's t with n − 1 degrees of freedom; its
quantile is computed here (regularised incomplete beta function by
continued fraction, then bisection) so neither scipy nor a table is needed.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ops.experiment.stats import interval, mean_ci95, t_quantile

__all__ = ["LABELS", "ResultStore", "flatten_report", "mean_ci95", "summarise",
           "t_quantile", "write_csv"]

#: The identifying columns every row starts with (grid parameters follow them).
LABELS: tuple[str, ...] = ("run_id", "cell", "strategy", "scenario", "seed", "repetition")
_NOT_KPIS = {"seed", "wall_s", "sim_speedup"}


def flatten_report(report: dict[str, Any], prefix: str = "") -> dict[str, float | int]:
    """Every numeric value of a run report, nested keys joined by dots (``utilisation.mill1``).

    Read generically, so KPIs other parts add to the report (a ``kpis`` map)
    appear as columns without changes here.  Booleans are left out.
    """
    out: dict[str, float | int] = {}
    for key, value in report.items():
        name = f"{prefix}{key}"
        if isinstance(value, bool) or name in _NOT_KPIS:
            continue
        if isinstance(value, (int, float)) and math.isfinite(value):
            out[name] = value
        elif isinstance(value, dict):
            out.update(flatten_report(value, prefix=name + "."))
    return out


# --------------------------------------------------------------------------- statistics


# t_quantile and mean_ci95 live in :mod:`ops.experiment.stats` (re-exported here).


# --------------------------------------------------------------------------- tables


def _columns(rows: Iterable[dict[str, Any]], first: Sequence[str]) -> list[str]:
    cols = list(first)
    seen = set(cols)
    for row in rows:
        for key in row:
            if key not in seen:
                seen.add(key)
                cols.append(key)
    return cols


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _cell_text(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float) and math.isnan(value):
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return value


def write_csv(path: Path, rows: list[dict[str, Any]], first: Sequence[str]) -> None:
    """One row per dict, columns in first-seen order after ``first``; written atomically."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    cols = _columns(rows, first)
    writer.writerow(cols)
    for row in rows:
        writer.writerow([_cell_text(row.get(c)) for c in cols])
    _atomic_write(path, buf.getvalue())


def write_parquet(path: Path, rows: list[dict[str, Any]], first: Sequence[str]) -> bool:
    """``runs.parquet`` when pyarrow is importable; False (nothing written) otherwise."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return False
    cols = _columns(rows, first)
    table = pa.Table.from_pylist([{c: _cell_text(r.get(c)) if isinstance(r.get(c), (dict, list))
                                   else r.get(c) for c in cols} for r in rows])
    pq.write_table(table, path)
    return True


class ResultStore:
    """The rows of one sweep's output directory, journalled as they arrive."""

    def __init__(self, out: Path, params: Sequence[str]) -> None:
        self.out = out
        self.params = list(params)
        self.journal = out / "runs.jsonl"
        self.rows: dict[str, dict[str, Any]] = {}
        if self.journal.exists():
            for line in self.journal.read_text().splitlines():
                if line.strip():
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError:
                        continue   # a line cut short by a kill: that run is simply run again
                    self.rows[row["run_id"]] = row

    @property
    def first_columns(self) -> list[str]:
        return [*LABELS, *self.params, "status", "error", "event_log_sha256", "code"]

    def completed(self) -> set[str]:
        return {rid for rid, row in self.rows.items() if row.get("status") == "ok"}

    def stale(self, points: Sequence[Any]) -> dict[str, dict[str, Any]]:
        """Recorded ok rows that a current point replaces: same identity (cell, strategy,
        scenario, seed, repetition, grid values), another run id.  Per strategy label:
        how many, the old and new ``code`` (equal: the cell or the faults changed), and
        the run ids of the current points they stand for (``points``)."""
        current = {p.identity(): p for p in points}
        ids = {p.run_id for p in points}
        out: dict[str, dict[str, Any]] = {}
        for rid, row in self.rows.items():
            if rid in ids or row.get("status") != "ok":
                continue
            key = json.dumps([row.get("cell"), row.get("strategy"), row.get("scenario"),
                              row.get("seed"), row.get("repetition"),
                              {k: row.get(k) for k in self.params}], sort_keys=True, default=str)
            point = current.get(key)
            if point is None:
                continue
            entry = out.setdefault(point.strategy, {"runs": 0, "old": set(), "new": point.code,
                                                    "points": set()})
            entry["runs"] += 1
            entry["old"].add(row.get("code") or "none")
            entry["points"].add(point.run_id)      # the current points those rows were
        return out

    def add(self, row: dict[str, Any], order: Sequence[str]) -> None:
        """Journal one finished run and refresh ``runs.csv`` (rows of ``order``'s run ids)."""
        self.rows[row["run_id"]] = row
        with self.journal.open("a") as f:
            f.write(json.dumps(row, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.write_table(order)

    def current(self, order: Sequence[str]) -> list[dict[str, Any]]:
        return [self.rows[rid] for rid in order if rid in self.rows]

    def write_table(self, order: Sequence[str]) -> None:
        write_csv(self.out / "runs.csv", self.current(order), self.first_columns)


def summarise(rows: list[dict[str, Any]], params: Sequence[str],
              kpis: Sequence[str]) -> list[dict[str, Any]]:
    """One row per group (cell, strategy, faults, grid values): n, and for each KPI its mean,
    the t half-width ``_ci95``, and the interval ``_lo``/``_hi`` — a seeded bootstrap for a
    KPI with no negative value in the sweep (:mod:`.stats`), mean ± ``_ci95`` otherwise."""

    keys = ["cell", "strategy", "scenario", *params]
    non_negative = {kpi for kpi in kpis
                    if all(float(r[kpi]) >= 0 for r in rows if r.get("status") == "ok"
                           and isinstance(r.get(kpi), (int, float)))}
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        gk = json.dumps([row.get(k) for k in keys], sort_keys=True, default=str)
        groups.setdefault(gk, []).append(row)
    out = []
    for members in groups.values():
        ok = [r for r in members if r.get("status") == "ok"]
        entry: dict[str, Any] = {k: members[0].get(k) for k in keys}
        entry["runs"] = len(members)
        entry["failed"] = len(members) - len(ok)
        for kpi in kpis:
            values = [float(r[kpi]) for r in ok if isinstance(r.get(kpi), (int, float))]
            mean, ci = mean_ci95(values)
            _, lo, hi, _method = interval(values, kpi in non_negative)
            entry[f"{kpi}_mean"] = None if math.isnan(mean) else round(mean, 6)
            entry[f"{kpi}_ci95"] = None if math.isnan(ci) else round(ci, 6)
            entry[f"{kpi}_lo"] = None if math.isnan(lo) else round(lo, 6)
            entry[f"{kpi}_hi"] = None if math.isnan(hi) else round(hi, 6)
        out.append(entry)
    return out


# --------------------------------------------------------------------------- units and numbers

_COUNT_WORDS = ("orders", "operations", "scrapped", "faults", "reroutes", "messages",
                "restarts", "expiries", "escalations", "events", "repairs", "units", "waits",
                "groups", "splits")


def kpi_unit(kpi: str) -> str:
    """The unit of a report key, from the report's naming rules (durations end in ``_s``)."""
    last = kpi.rsplit(".", 1)[-1]
    if kpi in ("makespan", "mean_flow_time", "tardiness_total") or last.endswith("_s") \
            or "latency" in kpi:
        return "s"
    if last.endswith("_kwh"):
        return "kWh"
    if kpi.startswith("utilisation.") or last.endswith(("_ratio", "_share")):
        return "share"
    if last.startswith("tardy") or any(w in kpi for w in _COUNT_WORDS):
        return "count"
    return ""


def kpi_heading(kpi: str) -> str:
    """``makespan (s)``; a key without a known unit is shown bare."""
    unit = kpi_unit(kpi)
    return f"{kpi} ({unit})" if unit else kpi


def format_number(x: Any, *, signed: bool = False) -> str:
    """A KPI for people: thousands separated, decimals where they carry information."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    x = float(x)
    sign = "+" if signed and x > 0 else ""
    if x == 0:
        return "0"
    if abs(x) >= 100:
        return f"{sign}{x:,.0f}"
    if abs(x) >= 10:
        return f"{sign}{x:.1f}".rstrip("0").rstrip(".")
    if abs(x) >= 1:
        return f"{sign}{x:.2f}".rstrip("0").rstrip(".")
    return f"{sign}{x:.3g}"


# --------------------------------------------------------------------------- plots


