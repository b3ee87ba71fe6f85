"""Remaining useful life as a distribution, and the trained model estimators start from.

A remaining-useful-life estimate is never a single number: a maintenance policy
asks "what is the probability that this machine fails within the next *t*
operating seconds?" (:meth:`Rul.p_fail_before`) and "by when has it failed with
probability *q*?" (:meth:`Rul.quantile`, which gives the latest safe start of a
maintenance window).  Times are **operating seconds** (busy time, the running-
hours counter a real machine keeps); a policy turns them into clock time with
the machine's expected load.

:class:`HealthModel` is what ``autocell maintenance fit`` writes (one per
machine): how each sensor channel reads on a new machine, idle and busy, how far
it rises with wear, a Weibull life distribution fitted to the lives in the
logs, and the gamma wear process fitted to the readings (:class:`GammaWear`,
``null`` when the logs hold too little).  It is plain data so that an estimator stays pure and a model file can be
read and diffed by people.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np
from scipy.optimize import brentq
from scipy.special import gammaincc

__all__ = ["Channel", "GammaRul", "GammaWear", "HealthModel", "NormalRul", "Rul", "WeibullRul", "prior_model"]


class Rul:
    """A distribution of the remaining operating seconds to failure."""

    def p_fail_before(self, t_s: float) -> float:
        raise NotImplementedError

    def quantile(self, q: float) -> float:
        """The remaining time by which the machine has failed with probability ``q``."""
        raise NotImplementedError

    @property
    def median_s(self) -> float:
        return self.quantile(0.5)


@dataclass(frozen=True)
class NormalRul(Rul):
    """Remaining life ~ N(mean, sd) truncated at 0 (a trend extrapolated to the threshold)."""

    mean_s: float
    sd_s: float

    def _dist(self) -> NormalDist:
        return NormalDist(self.mean_s, max(self.sd_s, 1e-9))

    def p_fail_before(self, t_s: float) -> float:
        if math.isinf(self.mean_s):
            return 0.0
        d = self._dist()
        below0 = d.cdf(0.0)
        return max(0.0, (d.cdf(t_s) - below0) / (1.0 - below0)) if t_s > 0 else 0.0

    def quantile(self, q: float) -> float:
        if math.isinf(self.mean_s):
            return math.inf
        d = self._dist()
        below0 = d.cdf(0.0)
        return max(0.0, d.inv_cdf(min(1 - 1e-12, below0 + q * (1.0 - below0))))


@dataclass(frozen=True)
class WeibullRul(Rul):
    """Remaining life of a Weibull(shape, scale) life that has survived ``age_s``."""

    shape: float
    scale_s: float
    age_s: float = 0.0

    def _h(self, t_s: float) -> float:           # cumulative hazard
        return (t_s / self.scale_s) ** self.shape

    def p_fail_before(self, t_s: float) -> float:
        if t_s <= 0:
            return 0.0
        return 1.0 - math.exp(self._h(self.age_s) - self._h(self.age_s + t_s))

    def quantile(self, q: float) -> float:
        h = self._h(self.age_s) - math.log(max(1e-300, 1.0 - q))
        return self.scale_s * h ** (1.0 / self.shape) - self.age_s

    @property
    def mean_life_s(self) -> float:
        return self.scale_s * math.gamma(1.0 + 1.0 / self.shape)


class GammaRul(Rul):
    """Remaining life of a gamma wear process that must still climb ``D`` to fail.

    ``D`` (threshold minus wear now) is normal, truncated to ``D > 0`` because the
    machine is up; it is represented by ``gaps``, fixed equal-probability points (the
    midpoints of ``len(gaps)`` quantile bins), so the distribution is deterministic.
    A monotone process has failed by exposure ``e`` exactly when its increment over
    ``e`` reaches the gap: ``P(T <= e) = mean_i P(Gamma(e * rate / beta, beta) >= D_i)``,
    the regularised upper incomplete gamma.  Times are operating seconds: ``per_op``
    exposure seconds accrue per operating second (idle wear at the recent load)."""

    def __init__(self, gaps: np.ndarray, rate: float, beta: float, per_op: float) -> None:
        self.x = gaps / beta
        self.a_per_s = rate / beta * per_op          # gamma shape per operating second
        self._mean_s = float(np.mean(gaps)) / (rate * per_op)

    def p_fail_before(self, t_s: float) -> float:
        if t_s <= 0:
            return 0.0
        if math.isinf(t_s):
            return 1.0
        return float(np.mean(gammaincc(self.a_per_s * t_s, self.x)))

    def quantile(self, q: float) -> float:
        if q <= 0:
            return 0.0
        q = min(q, 1.0 - 1e-9)
        hi = max(self._mean_s, 1.0)
        while self.p_fail_before(hi) < q:
            hi *= 2.0
            if hi > 1e12:                     # (no finite gap is that far)
                return math.inf
        return float(brentq(lambda t: self.p_fail_before(t) - q, 0.0, hi, xtol=1e-3))


@dataclass(frozen=True)
class Channel:
    """One sensor channel of a new machine: ``idle`` or ``busy`` + ``per_wear`` x wear."""

    idle: float
    busy: float
    per_wear: float
    noise: float

    def wear(self, value: float, busy: bool) -> float:
        """The wear this reading alone suggests (0 new, ~1 at failure)."""
        return (value - (self.busy if busy else self.idle)) / self.per_wear


@dataclass(frozen=True)
class GammaWear:
    """The wear process as the cell file states it (agents/cell/maintenance.py
    ``Degradation``): wear grows as a gamma process in *exposure* (busy seconds, idle
    powered seconds at ``idle_wear``) with mean ``rate`` per exposure second and increments
    of variance ``rate * beta`` per second (``beta`` the gamma scale, ``wear_cv**2``); the
    part fails when it crosses a threshold ~ N(1, ``threshold_sd``)."""

    rate: float
    beta: float
    threshold_sd: float
    idle_wear: float

    @classmethod
    def of(cls, d: Any) -> GammaWear:
        """From a ``degradation:`` block: the simulator's own parametrisation
        (sim_bridge/degradation.py ``WearProcess``: ``alpha = (1/beta + 1/2)/mttf_s``)."""
        beta = d.wear_cv ** 2
        return cls(rate=(1.0 / beta + 0.5) / d.mttf_s * beta, beta=beta,
                   threshold_sd=d.threshold_cv, idle_wear=d.idle_wear)


@dataclass(frozen=True)
class HealthModel:
    """A machine's trained model: its channels and its Weibull life in operating seconds."""

    channels: dict[str, Channel]
    weibull_shape: float
    weibull_scale_s: float
    failures: int = 0
    censored: int = 0
    meta: dict[str, Any] = field(default_factory=dict)
    wear: GammaWear | None = None     # the wear process: the cell file's, or fitted (ADR 81)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HealthModel:
        return cls(channels={k: Channel(**v) for k, v in data["channels"].items()},
                   weibull_shape=float(data["weibull_shape"]),
                   weibull_scale_s=float(data["weibull_scale_s"]),
                   failures=int(data.get("failures", 0)), censored=int(data.get("censored", 0)),
                   meta=dict(data.get("meta", {})),
                   wear=GammaWear(**data["wear"]) if data.get("wear") else None)


def prior_model(d: Any) -> HealthModel:
    """A machine's model from its ``degradation:`` block alone (agents/cell/maintenance.py) —
    the maker's figures a plant has before any history: the sensor channels as configured,
    and a Weibull life with the configured mean whose spread is the wear's and the
    threshold's together (shape ``cv**-1.086``, Justus' approximation)."""
    cv = math.hypot(d.wear_cv, d.threshold_cv)      # the life spreads as the wear does
    shape = max(1.5, cv ** -1.086)
    return HealthModel(
        channels={name: Channel(ch.idle, ch.busy, ch.per_wear, ch.noise)
                  for name, ch in (("vibration_mm_s", d.vibration_mm_s),
                                   ("temperature_c", d.temperature_c))},
        weibull_shape=shape, weibull_scale_s=d.mttf_s / math.gamma(1.0 + 1.0 / shape),
        meta={"source": "cell file"}, wear=GammaWear.of(d))
