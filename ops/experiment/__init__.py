"""``autocell experiment``: sweeps of virtual-time runs fanned out on Ray, with tables and plots.

:mod:`.sweep` loads and expands sweep files (KPI names checked by
:mod:`.kpi_names`), :mod:`.runner` executes the points (one Ray task each)
and journals every finished row, :mod:`.results` writes the run table and
the per-group summary, :mod:`.stats` the bootstrap intervals and the paired
differences against a baseline, :mod:`.plots` the figures, and
:mod:`.provenance` the strategy fingerprints in run ids and the manifest.
"""

from ops.experiment.sweep import RunPoint, StrategySpec, Sweep, expand, load_sweep

__all__ = ["RunPoint", "StrategySpec", "Sweep", "expand", "load_sweep"]
