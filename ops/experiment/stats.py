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
reproducible byte for byte.  A group of fewer than :data:`MIN_BOOTSTRAP_RUNS`
runs gets the t interval cut at 0 instead: with so few runs the bootstrap's
bounds are barely more than the extreme runs (two runs: exactly those).
Other KPIs keep the t interval.
"""

from __future__ import annotations

import json
import math
import random
import statistics
from collections.abc import Sequence
from typing import Any


__all__ = ["mean_ci95", "t_quantile", "BOOTSTRAP_RESAMPLES", "BOOTSTRAP_SEED",
           "MIN_BOOTSTRAP_RUNS", "bootstrap_ci95", "interval", "paired_differences"]

#: Resamples of a bootstrap interval, and the seed of the generator that draws them.
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0



def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, eps = 1e-300, 3e-16
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        for num in (m * (b - m) * x / ((a + m2 - 1) * (a + m2)),
                    -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                     + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def _t_cdf(t: float, df: float) -> float:
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The p-quantile of Student's t with ``df`` degrees of freedom (0.5 < p < 1)."""
    if not 0.5 <= p < 1.0 or df <= 0:
        raise ValueError(f"t_quantile needs 0.5 <= p < 1 and df > 0 (got p={p}, df={df})")
    lo, hi = 0.0, 1.0
    while _t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(200):
        mid = (lo + hi) / 2.0
        lo, hi = (mid, hi) if _t_cdf(mid, df) < p else (lo, mid)
        if hi - lo < 1e-12:
            break
    return (lo + hi) / 2.0


def mean_ci95(xs: Sequence[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95 % confidence interval (NaN for fewer than 2 values)."""
    if not xs:
        return math.nan, math.nan
    mean = statistics.fmean(xs)
    if len(xs) < 2:
        return mean, math.nan
    sd = statistics.stdev(xs)
    return mean, t_quantile(0.975, len(xs) - 1) * sd / math.sqrt(len(xs))

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


#: Fewest runs a percentile bootstrap is used on.  Below it the bootstrap's bounds are
#: little more than the smallest and largest run (two runs: exactly those, an interval
#: that covers the mean about half the time, not 95 %), so a non-negative KPI gets the
#: Student-t interval cut at 0 instead: wide, as so few runs should be.
MIN_BOOTSTRAP_RUNS = 10


def interval(xs: Sequence[float], non_negative: bool) -> tuple[float, float, float, str]:
    """(mean, lower, upper, method) of one group's KPI: ``bootstrap``, ``t`` or ``t≥0``
    (a non-negative KPI with fewer than :data:`MIN_BOOTSTRAP_RUNS` runs)."""
    mean, half = mean_ci95(xs)
    if non_negative and len(xs) >= MIN_BOOTSTRAP_RUNS:
        lo, hi = bootstrap_ci95(xs)
        return mean, lo, hi, "bootstrap"
    if non_negative:                     # (NaN for fewer than 2 runs stays NaN)
        lo = mean - half
        return mean, lo if math.isnan(lo) else max(0.0, lo), mean + half, "t≥0"
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
