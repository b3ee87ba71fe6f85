"""``autocell experiment``: sweeps of virtual-time runs fanned out on Ray, with tables and plots.

:mod:`.sweep` loads and expands sweep files, :mod:`.runner` executes the
points (one Ray task each) and journals every finished row, :mod:`.results`
writes the run table, the per-group summary with 95 % confidence intervals
and the plots.
"""

from ops.experiment.sweep import RunPoint, StrategySpec, Sweep, expand, load_sweep

__all__ = ["RunPoint", "StrategySpec", "Sweep", "expand", "load_sweep"]
