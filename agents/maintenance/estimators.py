"""Estimators: sensor readings in, a health index and a remaining-useful-life distribution out.

An estimator is a plug-in, named like a negotiation strategy
(agents/negotiation/strategies.py): a short name from :data:`ESTIMATORS`, the
name of an installed entry point in the group ``autocell.estimators``, or a
dotted path ``package.module:Class``; parameters are keyword arguments of the
constructor, checked against its type hints (``{name: threshold, params:
{smoothing: 0.1}}``).  It is sans-io and pure: the machine agent (or a policy in
the simulator) feeds it each reading with the machine's state and its operating
age, and asks for :meth:`Estimator.health` and :meth:`Estimator.rul`.  It starts
from a trained :class:`~agents.maintenance.rul.HealthModel` (``autocell
maintenance fit``), which says how the sensors read on a new machine and how
long lives last.

Three ship:

``threshold``
    The readings, each turned into the wear it suggests, smoothed
    exponentially; health is one minus that.  :meth:`ThresholdEstimator.alarm`
    is the condition-based trigger (smoothed wear above ``alarm_wear``); the
    remaining life extrapolates a line through the recent wear estimates over
    operating age to 1, with a normal spread from the line's standard errors and
    from where between ``1 - threshold_sd`` and ``1 + threshold_sd`` failures come.
``weibull``
    The fitted Weibull life, conditioned on the age survived so far: the
    classical survival model of reliability engineering.  It ignores the
    readings (health is the survival probability at this age), which makes it
    the yardstick a condition-aware estimator has to beat.
``wear``
    Model-based and calibrated: a Kalman filter over the wear level, fed by both
    channels, with the gamma process's drift and diffusion between readings; the
    remaining life is the process's first passage from the filtered wear to the
    failure threshold, given the machine is still up (:class:`WearEstimator`).

Writing your own: subclass :class:`Estimator`, set ``name``, implement
``observe``, ``health`` and ``rul`` (and ``renew`` if it keeps state), and
name it in a policy as ``mylab.health:MyEstimator`` (docs/maintenance.md).
"""

from __future__ import annotations

import importlib
import math
from collections import deque
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import Field

import numpy as np
from scipy.stats import truncnorm

from agents.maintenance.rul import GammaRul, GammaWear, HealthModel, NormalRul, Rul, WeibullRul
from agents.negotiation.params import check_params
from security.errors import ConfigurationError

__all__ = ["ENTRY_POINT_GROUP", "ESTIMATORS", "Estimator", "ThresholdEstimator",
           "WearEstimator", "WeibullEstimator", "estimator"]

ENTRY_POINT_GROUP = "autocell.estimators"


class Estimator:
    """Turns one machine's readings into health (1 new .. 0 failed) and a :class:`Rul`."""

    name = "base"

    def __init__(self, model: HealthModel, /) -> None:
        self.model = model
        self.age_s = 0.0

    def observe(self, at: float, values: Mapping[str, float], *, busy: bool,
                age_s: float) -> None:
        """A reading at clock time ``at``; ``age_s`` is operating seconds since the last
        renewal, ``busy`` whether the machine was working (readings differ)."""
        self.age_s = age_s

    def health(self) -> float:
        raise NotImplementedError

    def rul(self) -> Rul:
        raise NotImplementedError

    def renew(self, share: float = 1.0) -> None:
        """Maintenance removed ``share`` of the wear (1: as new)."""
        if share >= 1.0:
            self.age_s = 0.0


class ThresholdEstimator(Estimator):
    """Exponentially smoothed wear from the readings; an alarm level; a trend to failure."""

    name = "threshold"

    def __init__(self, model: HealthModel, /, *,
                 smoothing: Annotated[float, Field(gt=0, le=1)] = 0.15,
                 alarm_wear: Annotated[float, Field(gt=0, le=2)] = 0.7,
                 trend_points: Annotated[int, Field(ge=3, le=10_000)] = 60,
                 threshold_sd: Annotated[float, Field(ge=0, le=1)] = 0.1,
                 min_points: Annotated[int, Field(ge=3, le=10_000)] = 20) -> None:
        super().__init__(model)
        self.smoothing, self.alarm_wear = smoothing, alarm_wear
        self.threshold_sd = threshold_sd      # failures come at wear 1 +- this, not at 1
        self.min_points = min(min_points, trend_points)   # readings before a slope is trusted
        self.wear: float | None = None
        self._trend: deque[tuple[float, float]] = deque(maxlen=trend_points)
        usable = [c for c in model.channels.values() if c.per_wear != 0]
        # the noise of one reading's wear estimate, averaged over the channels
        self._sd1 = (math.sqrt(sum((c.noise / c.per_wear) ** 2 for c in usable)) / len(usable)
                     if usable else 1.0)

    def observe(self, at: float, values: Mapping[str, float], *, busy: bool,
                age_s: float) -> None:
        self.age_s = age_s
        ests = [ch.wear(values[k], busy) for k, ch in self.model.channels.items()
                if k in values and ch.per_wear != 0]
        if not ests:
            return
        w = sum(ests) / len(ests)
        a = self.smoothing
        self.wear = w if self.wear is None else a * w + (1 - a) * self.wear
        self._trend.append((age_s, w))

    def health(self) -> float:
        return 1.0 if self.wear is None else min(1.0, max(0.0, 1.0 - self.wear))

    def alarm(self) -> bool:
        """The condition-based trigger: smoothed wear at or above ``alarm_wear``."""
        return self.wear is not None and self.wear >= self.alarm_wear

    def rul(self) -> Rul:
        """A straight line through the recent raw wear estimates over age, extrapolated to
        wear 1 (the smoothed index lags; the line's level now does not); its spread from
        the line's standard errors by the delta method.  With fewer than ``min_points``
        readings since the last maintenance a slope is mostly noise: the smoothed wear
        left, at the fitted life's mean rate; before any reading, the fitted Weibull at
        this age."""
        n = len(self._trend)
        if self.wear is None:
            return WeibullRul(self.model.weibull_shape, self.model.weibull_scale_s, self.age_s)
        if n < self.min_points:    # too few points for a slope: the fitted life's mean rate
            life_s = WeibullRul(self.model.weibull_shape, self.model.weibull_scale_s).mean_life_s
            a = self.smoothing
            sd_w = math.hypot(self._sd1 * math.sqrt(a / (2 - a)), self.threshold_sd)
            return NormalRul(max(0.0, 1.0 - self.wear) * life_s, sd_w * life_s)
        xs = [x for x, _ in self._trend]
        ys = [y for _, y in self._trend]
        mx, my = sum(xs) / n, sum(ys) / n
        sxx = sum((x - mx) ** 2 for x in xs)
        if sxx <= 0:
            return NormalRul(math.inf, math.inf)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
        level = my + slope * (xs[-1] - mx)
        resid = sum((y - my - slope * (x - mx)) ** 2 for x, y in zip(xs, ys, strict=True))
        s = math.sqrt(resid / (n - 2)) if n > 2 else self._sd1
        if slope <= 0:
            return NormalRul(math.inf, math.inf)
        sd_level = math.hypot(s * math.sqrt(1 / n + (xs[-1] - mx) ** 2 / sxx),
                              self.threshold_sd)
        sd_slope = s / math.sqrt(sxx)
        left = max(0.0, 1.0 - level)
        sd = math.hypot(sd_level / slope, left * sd_slope / slope ** 2)
        return NormalRul(left / slope, sd)

    def renew(self, share: float = 1.0) -> None:
        super().renew(share)
        if self.wear is not None:
            self.wear = None if share >= 1.0 else self.wear * (1 - share)
        self._trend.clear()


class WeibullEstimator(Estimator):
    """The fitted Weibull life conditioned on the operating age survived so far."""

    name = "weibull"

    def health(self) -> float:
        return math.exp(-(self.age_s / self.model.weibull_scale_s) ** self.model.weibull_shape)

    def rul(self) -> Rul:
        return WeibullRul(self.model.weibull_shape, self.model.weibull_scale_s, self.age_s)


#: How far past its threshold, in spreads of the wear left, the wear estimator's remaining
#: life still follows the filtered wear (beyond it the machine is overdue all the same).
OVERDUE_SD = 40.0


class WearEstimator(Estimator):
    """The wear level filtered from the readings; its first passage to the threshold.

    Theory of operation
    -------------------
    It knows the structure of the simulator's degradation model
    (docs/maintenance.md "The degradation model") and its figures as the cell file
    states them (:class:`~agents.maintenance.rul.GammaWear`: the wear's mean rate and
    gamma scale per exposure second, the threshold's spread, the idle wear share), and
    the sensor channels of the model (levels idle and busy, rise per wear, noise) —
    never a life's hidden path or threshold.

    *Filter.*  The wear ``W`` is tracked as a normal belief (mean ``m``, variance ``v``),
    0 and certain after a replacement.  Between two readings the machine was exposed
    ``de`` = its busy seconds plus ``idle_wear`` x its other seconds (from the operating
    age and the clock), so the gamma process adds ``rate·de`` to the mean and
    ``rate·beta·de`` to the variance; each channel's reading is then a linear
    measurement ``(value - level(busy)) / per_wear = W + noise/per_wear`` (a scalar
    Kalman update per channel).

    *Remaining life.*  Wear left to fail ``D = H - W``, ``H ~ N(1, threshold_sd)``, is
    normal with mean ``1 - m`` and variance ``v + threshold_sd²``; the machine is up, so
    ``D > 0`` (the truncation is the conditioning on survival: a monotone path that is
    below the threshold now was below it before).  ``D`` is taken at ``points`` fixed
    equal-probability points and the first passage of the gamma process over each is
    exact (:class:`~agents.maintenance.rul.GammaRul`): deterministic, and ``quantile``
    inverts the same ``p_fail_before``.  Operating seconds become exposure at the
    machine's recent load (idle time wears too).

    A model without :attr:`HealthModel.wear` (fitted from too little data, or written
    before ``maintenance fit`` fitted the process) takes it from its Weibull life: mean
    rate ``1 / mean life``, the life's spread shared equally between the wear and the
    threshold, no idle wear (its ages count busy seconds only).

    A reading that is not a finite number is skipped; a wear filtered more than
    :data:`OVERDUE_SD` spreads past the threshold counts as that far (an outlying reading
    moves the wear, never the remaining life's order)."""

    name = "wear"

    def __init__(self, model: HealthModel, /, *,
                 points: Annotated[int, Field(ge=4, le=1000)] = 48) -> None:
        super().__init__(model)
        self.process = model.wear or self._from_weibull(model)
        self._u = (np.arange(points) + 0.5) / points     # equal-probability bins of D
        self._channels = {k: c for k, c in model.channels.items() if c.per_wear != 0}
        self.mean, self.var = 0.0, 0.0
        self.load = 0.5                       # recent busy share, smoothed per reading
        self._last: tuple[float, float] | None = None     # (clock, operating age)

    @staticmethod
    def _from_weibull(model: HealthModel) -> GammaWear:
        life = WeibullRul(model.weibull_shape, model.weibull_scale_s)
        mean = life.mean_life_s
        cv2 = (model.weibull_scale_s ** 2 * math.gamma(1 + 2 / model.weibull_shape)
               / mean ** 2 - 1.0)
        return GammaWear(rate=1.0 / mean, beta=max(cv2 / 2, 1e-6),
                         threshold_sd=math.sqrt(cv2 / 2), idle_wear=0.0)

    def observe(self, at: float, values: Mapping[str, float], *, busy: bool,
                age_s: float) -> None:
        p = self.process
        if self._last is None:
            de = age_s                      # first reading of a life: busy time only known
        else:
            dt, db = at - self._last[0], max(0.0, age_s - self._last[1])
            de = db + p.idle_wear * max(0.0, dt - db)
            if dt > 0:
                self.load = 0.9 * self.load + 0.1 * min(1.0, db / dt)
        self._last = (at, age_s)
        self.age_s = age_s
        self.mean += p.rate * de
        self.var += p.rate * p.beta * de
        for k, ch in self._channels.items():
            value = values.get(k)
            if value is not None and math.isfinite(value):   # a NaN or inf reads nothing
                r = (ch.noise / ch.per_wear) ** 2
                gain = self.var / (self.var + r) if self.var + r > 0 else 1.0
                self.mean += gain * (ch.wear(value, busy) - self.mean)
                self.var *= 1.0 - gain

    def health(self) -> float:
        return min(1.0, max(0.0, 1.0 - self.mean))

    def rul(self) -> Rul:
        p = self.process
        sd = math.sqrt(self.var + p.threshold_sd ** 2)
        # past OVERDUE_SD spreads beyond its threshold the wear says nothing more (the
        # machine is overdue), and the points of a normal that far in its tail would cancel
        mu = max(1.0 - self.mean, -OVERDUE_SD * sd)
        if sd <= 0:
            gaps = np.full(self._u.shape, max(mu, 1e-9))
        else:   # equal-probability points of N(mu, sd) above 0 (robust far in the tail,
            # where the filter puts the wear past its mean threshold)
            gaps = np.maximum(mu + sd * truncnorm.ppf(self._u, -mu / sd, np.inf), 1e-9)
        load = max(self.load, 0.05)
        return GammaRul(gaps, p.rate, p.beta, (load + p.idle_wear * (1 - load)) / load)

    def renew(self, share: float = 1.0) -> None:
        super().renew(share)
        keep = max(0.0, 1.0 - share)
        self.mean, self.var = self.mean * keep, self.var * keep ** 2
        if share >= 1.0:
            self._last = None


ESTIMATORS: dict[str, type[Estimator]] = {c.name: c for c in (ThresholdEstimator,
                                                             WearEstimator, WeibullEstimator)}


def _resolve(name: str) -> type[Estimator]:
    if name in ESTIMATORS:
        return ESTIMATORS[name]
    if ":" in name:
        module, _, attr = name.partition(":")
        try:
            cls = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigurationError(f"cannot load estimator {name!r}: {exc}") from exc
    else:
        from importlib.metadata import entry_points

        found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
        if not found:
            raise ConfigurationError(
                f"unknown estimator {name!r}: use one of {', '.join(sorted(ESTIMATORS))}, an "
                f"entry point of {ENTRY_POINT_GROUP!r}, or a dotted path 'package.module:Class'")
        cls = found[0].load()
    if not (isinstance(cls, type) and issubclass(cls, Estimator)):
        raise ConfigurationError(f"estimator {name!r} is not a subclass of Estimator")
    return cls


def estimator(spec: str | Mapping[str, Any], model: HealthModel) -> Estimator:
    """The estimator named by ``spec`` (a name or ``{name, params}``), started from ``model``."""
    name, params = (spec, {}) if isinstance(spec, str) else (spec["name"], spec.get("params") or {})
    cls = _resolve(name)
    kwargs, problems = check_params(cls, name, params)
    if problems:
        raise ConfigurationError("; ".join(
            f"params.{'.'.join(map(str, loc))}: {msg}" if loc else msg for loc, msg in problems))
    return cls(model, **kwargs)
