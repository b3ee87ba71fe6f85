"""Sweep plots: dodged points on categories, identical series visible, legend outside, units."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ops.experiment.plots import dodge_offsets, kpi_figure, param_unit, plot_kpis


def rows(dim: str, values: list[Any], strategies: dict[str, float]) -> list[dict[str, Any]]:
    out = []
    for v in values:
        for strategy, offset in strategies.items():
            for seed in range(3):
                out.append({"status": "ok", "strategy": strategy, "seed": seed, dim: v,
                            "makespan": 100.0 + offset + seed + (v if isinstance(v, int) else 0)})
    return out


def series(fig: Any) -> list[Any]:
    return [c.lines[0] for c in fig.axes[0].containers]


def test_categories_get_dodged_points_without_lines() -> None:
    fig = kpi_figure(rows("scenario", ["none", "breakdowns"], {"a": 0.0, "b": 5.0}),
                     "scenario", ["none", "breakdowns"], "makespan")
    a, b = series(fig)
    assert a.get_linestyle() == "None" and b.get_linestyle() == "None"
    assert list(a.get_xdata()) == pytest.approx([-0.1, 0.9])
    assert list(b.get_xdata()) == pytest.approx([0.1, 1.1])
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["none", "breakdowns"]


def test_identical_series_on_a_numeric_axis_stay_visible() -> None:
    dim = "machines[mill1].mttr_s"
    fig = kpi_figure(rows(dim, [300, 600], {"a": 0.0, "same_as_a": 0.0}), dim, [300, 600],
                     "makespan")
    a, b = series(fig)
    assert list(a.get_ydata()) == list(b.get_ydata())            # the same values …
    assert all(xa < xb for xa, xb in zip(a.get_xdata(), b.get_xdata()))   # … side by side
    assert a.get_marker() != b.get_marker() and a.get_linestyle() != b.get_linestyle()
    assert a.get_linestyle() != "None"                            # a scale: lines


def test_legend_outside_the_data_and_axes_with_units() -> None:
    dim = "machines[mill1].mttr_s"
    fig = kpi_figure(rows(dim, [300, 600], {"a": 0.0, "b": 5.0}), dim, [300, 600], "makespan")
    fig.canvas.draw()
    ax = fig.axes[0]
    legend = ax.get_legend()
    assert legend.get_window_extent().x0 >= ax.get_window_extent().x1
    assert ax.get_xlabel() == "machines[mill1].mttr_s (s)"
    assert ax.get_ylabel().startswith("makespan (s)")


def test_error_bars_of_a_non_negative_kpi_stay_above_zero() -> None:
    data = [{"status": "ok", "strategy": "a", "scenario": "x", "seed": s,
             "makespan": v} for s, v in enumerate([0.0, 0.0, 0.0, 0.0, 10.0])]
    fig = kpi_figure(data, "scenario", ["x"], "makespan")
    bars = fig.axes[0].containers[0].lines[2][0]   # the vertical error segments
    assert min(seg[:, 1].min() for seg in bars.get_segments()) >= 0.0


@pytest.mark.parametrize("path, unit", [("machines[mill1].mttr_s", "s"),
                                        ("machines[saw1].capabilities.sawing", "s per unit"),
                                        ("orders[o-1].due_at", "s"),
                                        ("due_date_factor", "× slack"),
                                        ("orders[0].quantity", "")])
def test_parameter_units(path: str, unit: str) -> None:
    assert param_unit(path) == unit


def test_dodge_offsets_are_centred() -> None:
    assert dodge_offsets(1, 0.4) == [0.0]
    assert dodge_offsets(4, 0.4) == pytest.approx([-0.15, -0.05, 0.05, 0.15])


def test_png_at_150_dpi_and_svg(tmp_path: Path) -> None:
    from PIL import Image

    dim = "machines[mill1].mttr_s"
    written = plot_kpis(rows(dim, [300, 600], {"a": 0.0}), {dim: [300, 600]}, ["makespan"],
                        tmp_path)
    assert sorted(p.name for p in written) == ["makespan_vs_machines_mill1_.mttr_s.png",
                                               "makespan_vs_machines_mill1_.mttr_s.svg"]
    png, svg = sorted(written)
    assert Image.open(png).info["dpi"] == pytest.approx((150, 150), abs=0.1)
    assert svg.read_text().lstrip().startswith("<?xml") and "<svg" in svg.read_text()
