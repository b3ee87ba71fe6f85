"""Plots of a sweep: each KPI against each swept dimension, one series per strategy.

Theory of operation
-------------------
A point is the mean of a KPI over every ok run with that x value and that
series (the other dimensions and the seeds pooled), its error bar the 95 %
interval of :func:`ops.experiment.stats.interval` (bootstrap for a KPI that
cannot be negative, so a bar never dips below zero).

What a reader must not be misled by:

* **Categorical x** (fault scenario, cell, strategy, or a grid value that is
  not a number): points only, *dodged* — each series shifted sideways by its
  own offset within the category — and no line, since nothing lies between
  two categories.
* **Numeric x**: lines, since the grid is a scale; series are dodged by a
  small share of the narrowest gap between x values, so two identical series
  (a strategy that changes nothing) are still two visible series, and each
  series has its own marker and line style as well as its colour.
* The legend sits outside the axes, to the right, never over the data.
* Both axes carry units (``makespan (s)``, ``machines[mill1].mttr_s (s)``).
* Each figure is written as PNG at 150 dpi and as SVG.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ops.experiment.results import kpi_unit

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["DPI", "FORMATS", "dodge_offsets", "kpi_figure", "param_unit", "plot_kpis"]

#: Resolution of the PNG files, and the formats every figure is written in.
DPI = 150
FORMATS = ("png", "svg")

_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
_LINESTYLES = ("-", "--", "-.", ":")


def param_unit(path: str) -> str:
    """The unit of a swept dimension, from the cell file's naming rules."""
    last = re.split(r"[.\[\]]", path.rstrip("]"))[-1]
    if ".capabilities." in path:
        return "s per unit"
    if last.endswith("_s") or last.endswith("_at"):
        return "s"
    if last.endswith("_kw"):
        return "kW"
    if last == "due_date_factor":
        return "× slack"
    return ""


def _label(text: str, unit: str) -> str:
    return f"{text} ({unit})" if unit else text


def dodge_offsets(series: int, step: float) -> list[float]:
    """Sideways offsets of ``series`` series, centred on the x value, within ``step``."""
    if series <= 1:
        return [0.0]
    width = step / series
    return [(j - (series - 1) / 2) * width for j in range(series)]


def _key(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def kpi_figure(rows: list[dict[str, Any]], dim: str, values: Sequence[Any], kpi: str,
               line_keys: Sequence[str] = ("strategy",)) -> Figure:
    """The figure of ``kpi`` against ``dim``: one series per ``line_keys`` value."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ops.experiment.stats import interval

    ok = [r for r in rows if r.get("status") == "ok" and isinstance(r.get(kpi), (int, float))
          and not isinstance(r.get(kpi), bool)]
    non_negative = all(float(r[kpi]) >= 0 for r in ok)
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    xs = [float(v) for v in values] if numeric else [float(i) for i in range(len(values))]
    gaps = sorted(b - a for a, b in zip(sorted(set(xs)), sorted(set(xs))[1:]))
    step = (gaps[0] if gaps else 1.0) * (0.06 if numeric else 0.4)
    keys = [k for k in line_keys if k != dim] or ["strategy"]   # the x axis is no series

    def series_of(r: dict[str, Any]) -> str:
        return " / ".join(str(r.get(k)) for k in keys)

    labels = sorted({series_of(r) for r in ok})
    offsets = dodge_offsets(len(labels), step)
    fig, ax = plt.subplots(figsize=(7.2, 4.2))
    for j, label in enumerate(labels):
        pts = []
        for x, v in zip(xs, values):
            ys = [float(r[kpi]) for r in ok if series_of(r) == label
                  and _key(r.get(dim)) == _key(v)]
            if ys:
                mean, lo, hi, _ = interval(ys, non_negative)
                low = 0.0 if math.isnan(lo) else mean - lo
                high = 0.0 if math.isnan(hi) else hi - mean
                pts.append((x + offsets[j], mean, max(low, 0.0), max(high, 0.0)))
        if not pts:
            continue
        ax.errorbar([p[0] for p in pts], [p[1] for p in pts],
                    yerr=[[p[2] for p in pts], [p[3] for p in pts]],
                    marker=_MARKERS[j % len(_MARKERS)], markersize=6, capsize=3,
                    linestyle=_LINESTYLES[j % len(_LINESTYLES)] if numeric else "none",
                    label=label)
    if not numeric:
        ax.set_xticks(xs, [str(v) for v in values])
        ax.set_xlim(-0.5, len(values) - 0.5)
    ax.set_xlabel(_label(dim, param_unit(dim)))
    ax.set_ylabel(_label(kpi, kpi_unit(kpi)) + " — mean, 95 % interval")
    ax.set_title(f"{kpi} vs {dim}")
    ax.grid(alpha=0.3)
    if labels:
        ax.legend(title=" / ".join(keys), loc="upper left", bbox_to_anchor=(1.02, 1.0),
                  borderaxespad=0.0, frameon=False)
    return fig


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")


def plot_kpis(rows: list[dict[str, Any]], dims: dict[str, list[Any]], kpis: Sequence[str],
              directory: Path, line_keys: Sequence[str] = ("strategy",)) -> list[Path]:
    """``<kpi>_vs_<dim>.png`` and ``.svg`` for each KPI and each swept dimension."""
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for kpi in kpis:
        if not any(r.get("status") == "ok" and isinstance(r.get(kpi), (int, float))
                   for r in rows):
            continue
        for dim, values in dims.items():
            fig = kpi_figure(rows, dim, values, kpi, line_keys)
            for fmt in FORMATS:
                path = directory / f"{_slug(kpi)}_vs_{_slug(dim)}.{fmt}"
                # metadata without a date, so an SVG is the same bytes for the same rows
                fig.savefig(path, dpi=DPI, bbox_inches="tight",
                            metadata={"Date": None} if fmt == "svg" else None)
                written.append(path)
            plt.close(fig)
    return written
