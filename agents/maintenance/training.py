"""Training a :class:`~agents.maintenance.rul.HealthModel` from recorded readings.

The input is a stream of event dicts, as the event log of a run writes them
(``autocell run --events``) or as a CSV with the same field names as columns
(one row per event; ops/maintenance.py reads both).  Per machine it uses:

``reading``                 the sensor values (any numeric field but ``t``)
``op_start`` / ``op_done`` / ``op_abort``   busy or idle, and the operating age
``fault`` with reason ``wear`` (or ``breakdown``)   a life that ended in failure
``maintenance_done``        a new life when the part was replaced (``life``
                            changes, or no ``life`` field and kind ``corrective``)

A life that ends with a planned replacement, or is still running when the log
ends, is a *censored* observation: the part lasted at least that long.

The fit: a Weibull life on operating age by maximum likelihood with right
censoring (the profile likelihood in the shape, solved by bisection — the
same estimator ``lifelines.WeibullFitter`` computes; numpy only, so a plant
controller needs no scientific stack); and per channel a least-squares line
``value ~ idle + (busy - idle) * busy + per_wear * age / life`` on the lives that
ended in failure, age over life standing in for the wear (0 new, 1 at failure),
with the residual standard deviation as the noise.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agents.maintenance.rul import Channel, HealthModel
from security.errors import ConfigurationError

__all__ = ["Life", "fit_events", "fit_machine", "lives_of", "weibull_mle"]

_FAILURE_REASONS = ("wear", "breakdown")
_SHAPE_MIN, _SHAPE_MAX = 0.05, 20.0     # Weibull shapes the fit may return
_NOT_VALUES = ("t", "ev", "machine", "agent")


@dataclass
class Life:
    """One part's life on one machine: readings (busy, age, values), its end."""

    readings: list[tuple[bool, float, dict[str, float]]] = field(default_factory=list)
    age_s: float = 0.0
    failed: bool = False


@dataclass
class _Track:
    lives: list[Life] = field(default_factory=lambda: [Life()])
    busy_since: float | None = None
    life_no: Any = None
    down: bool = False

    def age(self, t: float) -> float:
        cur = self.lives[-1]
        return cur.age_s + (t - self.busy_since if self.busy_since is not None else 0.0)

    def stop(self, t: float) -> None:
        if self.busy_since is not None:
            self.lives[-1].age_s += t - self.busy_since
            self.busy_since = None


def lives_of(events: Iterable[Mapping[str, Any]]) -> dict[str, list[Life]]:
    """The lives of every machine that has readings, in log order."""
    tracks: dict[str, _Track] = {}
    last_t = 0.0
    for e in events:
        mid = e.get("machine")
        if not mid:
            continue
        tr = tracks.setdefault(str(mid), _Track())
        t, ev = float(e["t"]), str(e["ev"])
        last_t = max(last_t, t)
        if ev == "op_start":
            tr.stop(t)
            tr.busy_since = t
        elif ev in ("op_done", "op_abort"):
            tr.stop(t)
        elif ev == "reading":
            values = {k: float(v) for k, v in e.items()
                      if k not in _NOT_VALUES and isinstance(v, int | float)}
            tr.lives[-1].readings.append((tr.busy_since is not None, tr.age(t), values))
        elif ev == "fault":
            tr.stop(t)
            if str(e.get("reason", "")) in _FAILURE_REASONS:
                tr.lives[-1].failed = True
        elif ev == "maintenance_done":
            tr.stop(t)
            life = e.get("life")
            renewed = (life != tr.life_no) if life is not None else e.get("kind") == "corrective"
            tr.life_no = life
            if renewed or tr.lives[-1].failed:
                tr.lives.append(Life())
    out: dict[str, list[Life]] = {}
    for mid, tr in tracks.items():
        tr.stop(last_t)                # the life still running when the log ends: censored
        lives = [lf for lf in tr.lives if lf.age_s > 0 or lf.readings]
        if any(lf.readings for lf in lives):
            out[mid] = lives
    return out


def weibull_mle(ages_s: Iterable[float], failed: Iterable[bool]) -> tuple[float, float]:
    """(shape, scale) of a Weibull by maximum likelihood with right censoring."""
    t = np.asarray(list(ages_s), dtype=float)
    d = np.asarray(list(failed), dtype=bool)
    keep = t > 0
    t, d = t[keep], d[keep]
    r = int(d.sum())
    if r == 0:
        raise ConfigurationError("no failure among the lives in the logs: a life distribution "
                                 "cannot be fitted from censored lives alone; add logs of runs "
                                 "to failure (e.g. the run_to_failure policy)")
    logt = np.log(t)
    mean_log_fail = float(logt[d].mean())

    def g(k: float) -> float:          # the profile score in the shape; increasing in k
        tk = np.exp(k * (logt - logt.max()))          # scaled to avoid overflow
        return float((tk * logt).sum() / tk.sum()) - 1.0 / k - mean_log_fail

    lo, hi = _SHAPE_MIN, _SHAPE_MAX
    if g(hi) < 0:         # too few lives to bound the shape (one failure, a longer censored
        k = hi            # life): the steepest wear-out we admit
    elif g(lo) > 0:
        k = lo
    else:
        for _ in range(200):
            mid = math.sqrt(lo * hi)
            lo, hi = (mid, hi) if g(mid) < 0 else (lo, mid)
        k = math.sqrt(lo * hi)
    scale = float(np.exp(logt.max()) * ((np.exp(k * (logt - logt.max())).sum() / r) ** (1 / k)))
    return k, scale


def fit_machine(lives: list[Life]) -> HealthModel:
    """A machine's :class:`HealthModel` from its lives."""
    shape, scale = weibull_mle([lf.age_s for lf in lives], [lf.failed for lf in lives])
    rows: list[tuple[bool, float, dict[str, float]]] = []
    for lf in lives:
        if lf.failed and lf.age_s > 0:
            rows += [(busy, age / lf.age_s, v) for busy, age, v in lf.readings]
    if len(rows) < 4:
        raise ConfigurationError("too few readings on lives that ended in failure to calibrate "
                                 "the sensors (need at least 4)")
    names = sorted({k for _, _, v in rows for k in v})
    channels: dict[str, Channel] = {}
    for name in names:
        sel = [(b, w, v[name]) for b, w, v in rows if name in v]
        x = np.array([[1.0, float(b), w] for b, w, _ in sel])
        y = np.array([val for _, _, val in sel])
        coef, *_ = np.linalg.lstsq(x, y, rcond=None)
        noise = float(np.std(y - x @ coef, ddof=min(3, len(y) - 1)))
        if coef[2] != 0:
            channels[name] = Channel(idle=float(coef[0]), busy=float(coef[0] + coef[1]),
                                     per_wear=float(coef[2]), noise=noise)
    return HealthModel(channels=channels, weibull_shape=shape, weibull_scale_s=scale,
                       failures=sum(lf.failed for lf in lives),
                       censored=sum(not lf.failed for lf in lives))


def fit_events(events: Iterable[Mapping[str, Any]],
               machines: Iterable[str] | None = None) -> dict[str, HealthModel]:
    """One model per machine with readings (or per machine named) in ``events``."""
    lives = lives_of(events)
    wanted = sorted(lives) if machines is None else list(machines)
    missing = [m for m in wanted if m not in lives]
    if missing:
        raise ConfigurationError(f"no readings of machine(s) {', '.join(missing)} in the logs; "
                                 f"machines with readings: {', '.join(sorted(lives)) or 'none'}")
    return {m: fit_machine(lives[m]) for m in wanted}
