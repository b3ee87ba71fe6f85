"""Training a :class:`~agents.maintenance.rul.HealthModel` from recorded readings.

The input is a stream of event dicts, as the event log of a run writes them
(``autocell run --events``) or as a CSV with the same field names as columns
(one row per event; ops/maintenance.py reads both).  Per machine it uses:

``reading``                 the sensor values (any numeric field but ``t``)
``op_start`` / ``op_done`` / ``op_abort``   busy or idle, and the operating age
``fault`` with reason ``wear`` (or ``breakdown``)   a life that ended in failure
``fault`` ... ``repaired``  down time (neither busy nor idle: no wear)
``maintenance_done``        a new life when the part was replaced (``life``
                            changes, or no ``life`` field and kind ``corrective``)

A life that ends with a planned replacement, or is still running when the log
ends, is a *censored* observation: the part lasted at least that long.

The fit: a Weibull life on operating age by maximum likelihood with right
censoring (the profile likelihood in the shape, solved by bisection — the
same estimator ``lifelines.WeibullFitter`` computes); and per channel a least-squares line
``value ~ idle + (busy - idle) * busy + per_wear * age / life`` on the lives that
ended in failure, age over life standing in for the wear (0 new, 1 at failure),
with the residual standard deviation as the noise; then the gamma wear process
the ``wear`` estimator assumes, by maximum likelihood over a Kalman filter of the
readings (:func:`fit_wear`), which also fits each channel's noise and rescales
its rise per wear so that failures come at wear 1 on average.  Logs may follow
one another: where the clock goes back, a new log begins.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from scipy.optimize import minimize

from agents.maintenance.rul import Channel, GammaWear, HealthModel
from security.errors import ConfigurationError

__all__ = ["MIN_WEAR_READINGS", "Life", "WearFitError", "fit_each", "fit_events", "fit_machine",
           "fit_wear",
           "lives_of", "weibull_mle"]

_FAILURE_REASONS = ("wear", "breakdown")
_SHAPE_MIN, _SHAPE_MAX = 0.05, 20.0     # Weibull shapes the fit may return
_NOT_VALUES = ("t", "ev", "machine", "agent")
MIN_WEAR_READINGS = 100     # readings a wear process is fitted from, at the least


class WearFitError(ConfigurationError):
    """Too little in the logs to fit a wear process (the model keeps ``wear: null``)."""


@dataclass
class Life:
    """One part's life on one machine: readings (busy, age, values), its end.

    ``exposure`` holds, per reading, the operating age, the idle powered seconds and
    the segment (a partial maintenance begins a new one); ``end`` the same two ages when
    the life ended; ``fresh`` whether it began with a replacement seen in the log (the
    first life of a log began at an unknown wear)."""

    readings: list[tuple[bool, float, dict[str, float]]] = field(default_factory=list)
    age_s: float = 0.0
    failed: bool = False
    exposure: list[tuple[float, float, int]] = field(default_factory=list)
    end: tuple[float, float] = (0.0, 0.0)
    fresh: bool = True


@dataclass
class _Track:
    lives: list[Life] = field(default_factory=lambda: [Life(fresh=False)])
    busy_since: float | None = None
    life_no: Any = None
    life_t0: float = 0.0           # clock when the current life (or log) began
    down_s: float = 0.0            # down seconds in the current life, ended spells
    down_since: float | None = None
    segment: int = 0

    def age(self, t: float) -> float:
        cur = self.lives[-1]
        return cur.age_s + (t - self.busy_since if self.busy_since is not None else 0.0)

    def idle(self, t: float) -> float:
        """Idle powered seconds of the current life at ``t``."""
        down = self.down_s + (t - self.down_since if self.down_since is not None else 0.0)
        return max(0.0, t - self.life_t0 - self.age(t) - down)

    def stop(self, t: float) -> None:
        if self.busy_since is not None:
            self.lives[-1].age_s += t - self.busy_since
            self.busy_since = None

    def close(self, t: float) -> None:
        """The current life ends at ``t`` (failure, replacement or end of the log)."""
        self.stop(t)
        self.lives[-1].end = (self.lives[-1].age_s, self.idle(t))

    def new_life(self, t: float, *, fresh: bool) -> None:
        self.lives.append(Life(fresh=fresh))
        self.life_t0, self.down_s, self.segment = t, 0.0, 0
        if self.down_since is not None:
            self.down_since = t


def lives_of(events: Iterable[Mapping[str, Any]]) -> dict[str, list[Life]]:
    """The lives of every machine that has readings, in log order.

    Several logs may follow one another: where the clock goes back, a new log
    begins — every machine's running life is censored at the old log's end and its
    next life begins at an unknown wear."""
    tracks: dict[str, _Track] = {}
    last_t = 0.0
    for e in events:
        t = float(e["t"])
        if t < last_t:                  # the next log: censor the lives still running
            for tr in tracks.values():
                tr.close(last_t)
                tr.busy_since = tr.down_since = None
                tr.life_no = None
                tr.new_life(t, fresh=False)
        last_t = t
        mid = e.get("machine")
        if not mid:
            continue
        if str(mid) not in tracks:
            tracks[str(mid)] = _Track(life_t0=t)
        tr = tracks[str(mid)]
        ev = str(e["ev"])
        if ev == "op_start":
            tr.stop(t)
            tr.busy_since = t
        elif ev in ("op_done", "op_abort"):
            tr.stop(t)
        elif ev == "reading":
            values = {k: float(v) for k, v in e.items()
                      if k not in _NOT_VALUES and isinstance(v, int | float)}
            tr.lives[-1].readings.append((tr.busy_since is not None, tr.age(t), values))
            tr.lives[-1].exposure.append((tr.age(t), tr.idle(t), tr.segment))
        elif ev == "fault":
            tr.stop(t)
            if tr.down_since is None:
                tr.down_since = t
            if str(e.get("reason", "")) in _FAILURE_REASONS and not tr.lives[-1].failed:
                tr.lives[-1].failed = True
                tr.close(t)
        elif ev == "repaired":
            if tr.down_since is not None:
                tr.down_s += t - tr.down_since
                tr.down_since = None
        elif ev == "maintenance_done":
            tr.stop(t)
            life = e.get("life")
            if life is None:
                renewed = e.get("kind") == "corrective"
            else:       # lives are numbered from 1: a job on life 1 that says 1 replaced nothing
                renewed = life != tr.life_no if tr.life_no is not None else float(life) > 1
            tr.life_no = life
            if renewed or tr.lives[-1].failed:
                if not tr.lives[-1].failed:
                    tr.close(t)
                tr.new_life(t, fresh=True)
            else:                       # a partial maintenance: the wear left is unknown
                tr.segment += 1
    out: dict[str, list[Life]] = {}
    for mid, tr in tracks.items():
        if not tr.lives[-1].failed:
            tr.close(last_t)            # the life still running when the log ends: censored
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


class _Stretch(NamedTuple):
    fresh: bool                        # began with a replacement: wear 0
    steps: np.ndarray                  # (busy, idle) seconds before each reading
    z: np.ndarray                      # readings as wear, a column per channel (NaN: absent)
    tail: tuple[float, float] | None   # (busy, idle) from the last reading to a failure


def _segments(lives: list[Life], channels: Mapping[str, Channel]) -> list[_Stretch]:
    """Per stretch of one life between maintenances: whether it began new (wear 0),
    the busy and idle seconds before each reading, each reading as a wear measurement
    per channel (``(value - level) / per_wear``, NaN where absent), and for the stretch
    that ended in failure the busy and idle seconds from its last reading to it."""
    names = list(channels)
    out = []
    for lf in lives:
        segs = sorted({seg for _, _, seg in lf.exposure})
        for seg in segs:
            idx = [k for k, (_, _, sg) in enumerate(lf.exposure) if sg == seg]
            ages = np.array([lf.exposure[k][:2] for k in idx])
            z = np.full((len(idx), len(names)), np.nan)
            for row, k in enumerate(idx):
                busy, _, values = lf.readings[k]
                for col, name in enumerate(names):
                    if name in values:
                        z[row, col] = channels[name].wear(values[name], busy)
            fresh = lf.fresh and seg == 0
            steps = np.diff(np.vstack([np.zeros((1, 2)), ages]), axis=0)
            tail = None
            if lf.failed and seg == segs[-1]:
                tail = (max(0.0, lf.end[0] - ages[-1, 0]), max(0.0, lf.end[1] - ages[-1, 1]))
            out.append(_Stretch(fresh, np.maximum(steps, 0.0), z, tail))
    return out


_DIFFUSE = (0.5, 4.0)          # the belief at the first reading of a stretch of unknown wear


def _filter(seg: _Stretch, rate: float, beta: float, idle: float, r: np.ndarray
            ) -> tuple[float, float, float]:
    """Kalman-filter one stretch: (log-likelihood of its readings, mean and variance of
    the wear at its end — at the failure when it ended in one)."""
    fresh, steps, z, tail = seg
    m, v = (0.0, 0.0) if fresh else _DIFFUSE
    ll = 0.0
    for k in range(len(z)):
        if fresh or k > 0:
            de = steps[k, 0] + idle * steps[k, 1]
            m += rate * de
            v += rate * beta * de
        for c in range(z.shape[1]):
            zc = z[k, c]
            if zc != zc:               # NaN: the channel was not read
                continue
            s_ = v + r[c]
            e = zc - m
            ll -= 0.5 * (math.log(s_) + e * e / s_)
            gain = v / s_
            m += gain * e
            v *= 1.0 - gain
    if tail is not None:
        de = tail[0] + idle * tail[1]
        m, v = m + rate * de, v + rate * beta * de
    return ll, m, v


def fit_wear(lives: list[Life], channels: dict[str, Channel]
             ) -> tuple[GammaWear, dict[str, Channel]]:
    """The gamma wear process of a machine from the wear its readings imply.

    Theory of operation
    -------------------
    The wear ``W`` is the process the ``wear`` estimator assumes (rul.py
    :class:`GammaWear`): increments with mean ``rate·de`` and variance ``rate·beta·de``
    over exposure ``de`` = busy seconds + ``idle_wear`` x idle powered seconds, a
    failure where ``W`` crosses ``H ~ N(1, threshold_sd)``.  Each reading, less its
    channel's idle or busy level and divided by its rise per wear, measures ``W`` with
    the channel's noise.  ``rate``, ``beta``, ``idle_wear`` and each channel's noise are
    fitted together by maximum likelihood with scipy's L-BFGS-B, the likelihood that of
    a Kalman filter over every stretch between maintenances (the gamma increments
    matched in mean and variance by normals: a quasi-likelihood, consistent in the first
    two moments).  A stretch that begins with a replacement starts at wear 0; the first
    of a log, or one after a partial maintenance, at a diffuse belief.  The threshold
    is the filtered wear at each failure: its mean fixes the unit of wear (the channels'
    rise per wear is rescaled so that failures come at 1 on average, the unit the
    estimator and the cell file use), its spread less the filter's own uncertainty is
    ``threshold_sd``.  Needs :data:`MIN_WEAR_READINGS` readings and two failures."""
    names = list(channels)
    n_read = sum(len(lf.readings) for lf in lives)
    n_fail = sum(lf.failed for lf in lives)
    if n_read < MIN_WEAR_READINGS or n_fail < 2:
        raise WearFitError(f"{n_read} readings and {n_fail} failure(s) in the logs; fitting a "
                           f"wear process needs at least {MIN_WEAR_READINGS} readings and 2 "
                           "failures")
    segs = _segments(lives, channels)
    per_wear = np.array([channels[n].per_wear for n in names])
    failed = [lf for lf in lives if lf.failed and lf.age_s > 0]
    rate0 = 1.0 / float(np.mean([lf.age_s for lf in failed]))

    def unpack(x: np.ndarray) -> tuple[float, float, float, np.ndarray]:
        return (math.exp(x[0]), math.exp(x[1]), float(x[2]),
                (np.exp(x[3:]) / per_wear) ** 2)

    def nll(x: np.ndarray) -> float:
        rate, beta, idle, r = unpack(x)
        return -sum(_filter(sg, rate, beta, idle, r)[0] for sg in segs)

    x0 = np.array([math.log(rate0), math.log(0.1), 0.1,
                   *[math.log(max(channels[n].noise, 1e-6)) for n in names]])
    bounds = [(math.log(rate0) - 4, math.log(rate0) + 4), (math.log(1e-4), math.log(10.0)),
              (0.0, 1.0), *[(math.log(1e-6), math.log(max(channels[n].noise, 1e-6) * 10))
                            for n in names]]
    res = minimize(nll, x0, method="L-BFGS-B", bounds=bounds)
    rate, beta, idle, r = unpack(res.x)
    ends = [_filter(sg, rate, beta, idle, r)[1:] for sg in segs if sg.tail is not None]
    if len(ends) < 2:
        raise WearFitError(f"{len(ends)} failure(s) with readings before them; fitting the "
                           "threshold needs at least 2")
    h = np.array([m for m, _ in ends])
    unit = float(h.mean())
    if not unit > 0:
        raise WearFitError("the filtered wear at the failures is not positive: the sensor "
                           "channels do not follow the wear")
    spread = float(np.var(h, ddof=1)) - float(np.mean([v for _, v in ends]))
    noise = np.exp(res.x[3:])
    scaled = {n: Channel(idle=channels[n].idle, busy=channels[n].busy,
                         per_wear=channels[n].per_wear * unit, noise=float(noise[k]))
              for k, n in enumerate(names)}
    wear = GammaWear(rate=rate / unit, beta=beta / unit,
                     threshold_sd=math.sqrt(max(spread, 0.0)) / unit, idle_wear=idle)
    return wear, scaled


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
    meta: dict[str, Any] = {}
    wear: GammaWear | None = None
    try:
        wear, channels = fit_wear(lives, channels)
    except WearFitError as exc:    # documented fallback: the estimator takes it from the Weibull
        meta["wear"] = f"not fitted: {exc}"
    return HealthModel(channels=channels, weibull_shape=shape, weibull_scale_s=scale,
                       failures=sum(lf.failed for lf in lives),
                       censored=sum(not lf.failed for lf in lives), meta=meta, wear=wear)


def fit_each(events: Iterable[Mapping[str, Any]]
             ) -> tuple[dict[str, HealthModel], dict[str, str]]:
    """Every machine with readings in ``events``: the models of those that could be fitted,
    and why each other could not (e.g. it never failed in the logs), by machine."""
    models: dict[str, HealthModel] = {}
    skipped: dict[str, str] = {}
    for m, lives in sorted(lives_of(events).items()):
        try:
            models[m] = fit_machine(lives)
        except ConfigurationError as exc:
            skipped[m] = str(exc)
    return models, skipped


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
