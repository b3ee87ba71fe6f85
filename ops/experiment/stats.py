"""Intervals a sweep's summary can stand behind: bootstrap for non-negative KPIs, paired differences.

Theory of operation
-------------------
Every strategy of a sweep runs on the same seeds, and a seed fixes the
breakdowns, the network's losses and every other random draw of a run
(common random numbers).  So two strategies' runs on one seed differ only by
the strategy, and the right comparison is **paired**: per seed (and
repetition), the strategy's KPI minus the baseline's, then the mean of those
differences with a Student-t 95 % interval (n − 1 degrees of freedom).
Seed-to-seed variation — one seed with a long breakdown — cancels in each
difference; per-group intervals keep it, which is how a paired difference of
−273 ± 255 s hid behind per-group intervals of ±1,200 s.  Only seeds on which
*both* ran ok are paired; ``pairs`` says how many.

Per-group intervals of a KPI that cannot be negative (makespan, tardiness,
counts: every observed value ≥ 0) use a **percentile bootstrap** of the mean
instead of mean ± t·s/√n: resampled means of non-negative values are
non-negative, so the interval never claims a negative tardiness is
plausible, and it is lopsided where the data are (mostly zeros and one late
seed).  The resampling is seeded (:data:`BOOTSTRAP_SEED`) so a summary is
reproducible byte for byte.  Other KPIs keep the t interval.
"""

from __future__ import annotations

import json
import math
import random
import statistics
from collections.abc import Sequence
from typing import Any

from ops.experiment.results import mean_ci95

__all__ = ["BOOTSTRAP_RESAMPLES", "BOOTSTRAP_SEED", "bootstrap_ci95", "interval",
           "paired_differences"]

#: Resamples of a bootstrap interval, and the seed of the generator that draws them.
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0


def bootstrap_ci95(xs: Sequence[float], *, resamples: int = BOOTSTRAP_RESAMPLES,
                   seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """Percentile-bootstrap 95 % interval of the mean (NaNs for fewer than 2 values).

    The bounds are resampled means, so they lie within [min(xs), max(xs)].
    """
    if len(xs) < 2:
        return math.nan, math.nan
    rng = random.Random(seed)
    values = list(xs)
    n = len(values)
    means = sorted(math.fsum(rng.choices(values, k=n)) / n for _ in range(resamples))
    lo = means[math.floor(0.025 * (resamples - 1))]
    hi = means[math.ceil(0.975 * (resamples - 1))]
    return lo, hi


def interval(xs: Sequence[float], non_negative: bool) -> tuple[float, float, float, str]:
    """(mean, lower, upper, method) of one group's KPI: ``bootstrap`` or ``t``."""
    mean, half = mean_ci95(xs)
    if non_negative:
        lo, hi = bootstrap_ci95(xs)
        return mean, lo, hi, "bootstrap"
    return mean, mean - half, mean + half, "t"


def _group_key(row: dict[str, Any], keys: Sequence[str]) -> str:
    return json.dumps([row.get(k) for k in keys], sort_keys=True, default=str)


def _value(row: dict[str, Any], kpi: str) -> float | None:
    v = row.get(kpi)
    if row.get("status") != "ok" or isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v)


def paired_differences(rows: list[dict[str, Any]], params: Sequence[str], kpis: Sequence[str],
                       baseline: str) -> list[dict[str, Any]]:
    """Per group (cell, scenario, grid values), strategy and KPI: strategy − baseline over
    the seeds (and repetitions) both ran ok, with its mean and Student-t 95 % interval."""
    keys = ["cell", "scenario", *params]
    groups: dict[str, dict[str, dict[tuple[Any, Any], dict[str, Any]]]] = {}
    for row in rows:
        by_strategy = groups.setdefault(_group_key(row, keys), {})
        by_strategy.setdefault(str(row.get("strategy")), {})[
            (row.get("seed"), row.get("repetition"))] = row
    out: list[dict[str, Any]] = []
    for by_strategy in groups.values():
        base = by_strategy.get(baseline)
        if base is None:
            continue
        for strategy, runs in by_strategy.items():
            if strategy == baseline:
                continue
            first = next(iter(runs.values()))
            for kpi in kpis:
                pairs = [(b, s) for seed, row in runs.items() if seed in base
                         for b, s in [(_value(base[seed], kpi), _value(row, kpi))]
                         if b is not None and s is not None]
                diffs = [s - b for b, s in pairs]
                mean, half = mean_ci95(diffs)
                entry: dict[str, Any] = {k: first.get(k) for k in keys}
                entry.update(strategy=strategy, baseline=baseline, kpi=kpi, pairs=len(pairs),
                             baseline_mean=_round(statistics.fmean(b for b, _ in pairs)
                                                  if pairs else math.nan),
                             strategy_mean=_round(statistics.fmean(s for _, s in pairs)
                                                  if pairs else math.nan),
                             diff_mean=_round(mean), diff_ci95=_round(half),
                             diff_lo=_round(mean - half), diff_hi=_round(mean + half))
                out.append(entry)
    return out


def _round(x: float) -> float | None:
    return None if math.isnan(x) else round(x, 6)
