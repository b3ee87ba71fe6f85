"""Alarm-system KPIs of the escalations (ISA-18.2 / EEMUA 191 benchmarks), for the console's
``/kpis`` page and its Prometheus ``/metrics``.

* **rate**: escalations raised per 10 minutes per supervisor on shift (EEMUA 191 finds
  about one per 10 minutes manageable, more than 10 in 10 minutes a flood);
* **% time in flood**: the share of the observed time during which more than
  ``FLOOD_COUNT`` escalations were raised within the trailing ``FLOOD_WINDOW_S``;
* **stale**: escalations open for more than 24 hours;
* **chattering**: sources (resource, else the raising agent) raised at least 3 times
  within 60 s;
* **priority distribution** against the guideline of about 80 % low (P3/P4), 15 % high
  (P2) and 5 % critical (P1), counting the priority each was raised with.

Times are the cell's clock (``created_at``), like the deadlines; a few hundred escalations
at most, so everything is recomputed per request.  No HTTP and no clock here.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field

from ops.console.views import FLOOD_COUNT, FLOOD_WINDOW_S, view

__all__ = ["GUIDELINE", "AlarmKpis", "compute"]

STALE_S = 24 * 3600.0
CHATTER_COUNT, CHATTER_WINDOW_S = 3, 60.0
RATE_PER_S = 600.0
#: priority band -> the guideline's share of all escalations
GUIDELINE: dict[str, float] = {"P1": 0.05, "P2": 0.15, "P3/P4": 0.80}


@dataclass(frozen=True)
class AlarmKpis:
    raised: int
    observed_s: float
    supervisors: int
    rate_per_10min_per_supervisor: float
    flood_ratio: float
    stale: tuple[str, ...]
    chattering: tuple[str, ...]
    by_band: dict[str, int] = field(default_factory=dict)

    def share(self, band: str) -> float:
        return self.by_band.get(band, 0) / self.raised if self.raised else 0.0


def _band(priority: int) -> str:
    return "P1" if priority <= 1 else "P2" if priority == 2 else "P3/P4"


def compute(items: Iterable[object], now: float, supervisors: int,
            step_s: float = 10.0) -> AlarmKpis:
    views = [view(i) for i in items]
    times = sorted(v.created_at for v in views)
    start = times[0] if times else now
    observed = max(now - start, RATE_PER_S)
    rate = len(times) / (observed / RATE_PER_S) / max(1, supervisors)
    # % time in flood, sampled every step_s over the observed time
    samples = flooded = 0
    t = start
    while t <= now:
        n = bisect.bisect_right(times, t) - bisect.bisect_right(times, t - FLOOD_WINDOW_S)
        flooded += n > FLOOD_COUNT
        samples += 1
        t += step_s
    sources: dict[str, list[float]] = {}
    for v in views:
        sources.setdefault(v.resource or v.group, []).append(v.created_at)
    chattering = tuple(sorted(
        src for src, ts in sources.items()
        if any(bisect.bisect_right(sorted(ts), t0 + CHATTER_WINDOW_S) - i >= CHATTER_COUNT
               for i, t0 in enumerate(sorted(ts)))))
    bands: dict[str, int] = dict.fromkeys(GUIDELINE, 0)
    for v in views:
        bands[_band(v.initial_priority or v.priority)] += 1
    return AlarmKpis(
        raised=len(views), observed_s=observed, supervisors=max(1, supervisors),
        rate_per_10min_per_supervisor=rate, flood_ratio=flooded / samples if samples else 0.0,
        stale=tuple(v.id for v in views if v.active and now - v.created_at > STALE_S),
        chattering=chattering, by_band=bands)
