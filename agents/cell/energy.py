"""Energy in the cell file: power by machine state, the tariff, the peak-power cap.

A machine's ``power_kw`` names what it draws in each state — ``off``,
``standby``, ``idle``, ``setup``, ``busy`` (``busy`` optionally per
capability) — and what waking from standby or off costs in time and energy.
The two keys every cell has always had, ``{idle, busy}``, keep their meaning
and defaults: ``setup`` defaults to ``idle`` and ``standby`` to ``idle`` (a
machine that names no standby saves nothing by entering it), ``off`` to 0.

The top-level ``energy:`` section prices what the machines draw: a weekly
time-of-use tariff (a list of periods, each on some days between two clock
times, which is also how a weekly table is written), optional CO₂ intensity
per period, the cell's peak cap in kW and the averaging window the peak is
measured over (15 min, as utilities bill it).  The tariff must cover the
whole week exactly once: an instant with no price, or with two, would make
the cost of a run depend on a tie-break nobody wrote down, so gaps and
overlaps are configuration errors, reported by the loader on the line of the
period (:func:`tariff_problems`).

These models know no simulation; :mod:`agents.cell.tariff` turns a
:class:`Tariff` into the pure lookups (``price_at``, ``cost``) the KPIs and,
later, the agents use.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from agents.cell.limits import MAX_SECONDS

__all__ = [
    "DAYS",
    "DAY_S",
    "MAX_KW",
    "MAX_PRICE",
    "POWER_STATES",
    "WEEK_S",
    "EnergySettings",
    "PowerDraw",
    "Tariff",
    "TariffPeriod",
    "WakeUp",
    "WakeUps",
    "clock_s",
    "day_set",
    "period_spans",
    "tariff_problems",
    "week_clock",
    "week_offset_s",
]

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DAY_S = 86_400.0
WEEK_S = 7 * DAY_S
#: The states a machine draws power in.  ``down`` (broken) draws idle power.
POWER_STATES = ("off", "standby", "idle", "setup", "busy")
MAX_KW = 1e6          # a megawatt per machine is already a steel mill
MAX_PRICE = 1e4       # per kWh, any currency

Kw = Annotated[float, Field(ge=0, le=MAX_KW)]
_CLOCK = re.compile(r"^([01]\d|2[0-4]):([0-5]\d)$")
_DAYS_RE = re.compile(r"^[a-z]{3}(-[a-z]{3})?(,[a-z]{3}(-[a-z]{3})?)*$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# --------------------------------------------------------------------------- machines


class WakeUp(_Model):
    """What leaving a low-power state costs before the machine can work again."""

    time_s: float = Field(default=0.0, ge=0, le=MAX_SECONDS,
                          description="Seconds from the wake-up order until the machine is idle.")
    energy_kwh: float = Field(default=0.0, ge=0, le=MAX_KW,
                              description="Energy drawn while waking up, kWh.")


def _off_key(data: object) -> object:
    """YAML 1.1 reads a bare ``off:`` key as ``false``; take it back as the state's name."""
    if isinstance(data, dict) and False in data and "off" not in data:
        data = {("off" if k is False else k): v for k, v in data.items()}
    return data


class WakeUps(_Model):
    _off = model_validator(mode="before")(_off_key)

    standby: WakeUp = Field(default_factory=WakeUp, description="Waking from standby.")
    off: WakeUp = Field(default_factory=WakeUp, description="Waking from off (a cold start).")


class PowerDraw(_Model):
    """Electrical power of a machine by state, kW, for the energy KPIs and the tariff."""

    _off = model_validator(mode="before")(_off_key)

    idle: Kw = Field(default=0.0, description="Power drawn while idle (and while down), kW.")
    busy: Kw = Field(default=0.0, description="Power drawn while processing, kW; >= idle.")
    setup: Kw | None = Field(default=None,
                             description="Power drawn during changeover, kW; default: idle.")
    standby: Kw | None = Field(default=None,
                               description="Power drawn in standby, kW (<= idle); default: idle.")
    off: Kw = Field(default=0.0, description="Power drawn when switched off, kW (<= standby).")
    busy_by_capability: dict[str, Kw] = Field(
        default_factory=dict,
        description="Capability -> power while processing it, kW (>= idle); others use `busy`.")
    wake: WakeUps = Field(default_factory=WakeUps,
                          description="Time and energy to wake from standby and from off.")

    @model_validator(mode="after")
    def _ordered(self) -> PowerDraw:
        if self.busy < self.idle:
            raise ValueError(
                f"busy ({self.busy} kW) is below idle ({self.idle} kW); "
                "a machine draws at least its idle power while processing"
            )
        for cap, kw in self.busy_by_capability.items():
            if kw < self.idle:
                raise ValueError(f"busy_by_capability.{cap} ({kw} kW) is below idle "
                                 f"({self.idle} kW)")
        if self.standby_kw > self.idle:
            raise ValueError(f"standby ({self.standby_kw} kW) is above idle ({self.idle} kW); "
                             "standby is the state that saves power")
        if self.off > self.standby_kw:
            raise ValueError(f"off ({self.off} kW) is above standby ({self.standby_kw} kW)")
        return self

    @property
    def setup_kw(self) -> float:
        return self.idle if self.setup is None else self.setup

    @property
    def standby_kw(self) -> float:
        return self.idle if self.standby is None else self.standby


# --------------------------------------------------------------------------- tariff


def clock_s(text: str) -> float:
    """``"HH:MM"`` (00:00 .. 24:00) as seconds after midnight."""
    m = _CLOCK.match(text)
    if m is None or (m[1] == "24" and m[2] != "00"):
        raise ValueError(f"{text!r} is not a clock time; write HH:MM, 00:00 to 24:00")
    return int(m[1]) * 3600.0 + int(m[2]) * 60.0


def day_set(text: str) -> tuple[int, ...]:
    """``"mon-fri"``, ``"sat,sun"``, ``"tue"``, ``"fri-mon"`` as day indices (Monday = 0)."""
    spec = text.strip().lower()
    if not _DAYS_RE.match(spec):
        raise ValueError(f"{text!r} is not a set of days; write e.g. 'mon-fri', 'sat,sun', "
                         "'mon-sun'")
    days: list[int] = []
    for part in spec.split(","):
        a, _, b = part.partition("-")
        for name in (a, b or a):
            if name not in DAYS:
                raise ValueError(f"unknown day {name!r}: use {', '.join(DAYS)}")
        i, j = DAYS.index(a), DAYS.index(b or a)
        days += [(i + k) % 7 for k in range((j - i) % 7 + 1)]
    return tuple(sorted(set(days)))


class TariffPeriod(_Model):
    """One price on some days between two clock times (``to`` <= ``from`` runs past midnight)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False,
                              populate_by_name=True)

    days: str = Field(default="mon-sun", description="Days it starts on: 'mon-fri', 'sat,sun', "
                      "'mon-sun' (default).")
    start: str = Field(alias="from", description="Start time of day, HH:MM.")
    end: str = Field(alias="to", description="End time of day, HH:MM (24:00 = midnight); at or "
                     "before `from`: the next day.")
    price: float = Field(ge=0, le=MAX_PRICE, description="Energy price per kWh (>= 0).")
    co2_kg_per_kwh: float | None = Field(default=None, ge=0, le=100,
                                         description="Grid CO2 intensity, kg per kWh.")

    @field_validator("start", "end")
    @classmethod
    def _clock(cls, v: str) -> str:
        clock_s(v)
        return v

    @field_validator("days")
    @classmethod
    def _days(cls, v: str) -> str:
        day_set(v)
        return v


class Tariff(_Model):
    """A weekly time-of-use tariff: periods covering every instant of the week exactly once."""

    periods: list[TariffPeriod] = Field(min_length=1, max_length=1000,
                                        description="Price periods; together they cover the week "
                                        "exactly once.")
    currency: str = Field(default="EUR", max_length=8, description="Label of the price unit.")


def period_spans(p: TariffPeriod) -> list[tuple[float, float]]:
    """The period as ``[start, end)`` spans in week seconds (Monday 00:00 = 0); a span past
    Sunday midnight wraps to Monday."""
    a, b = clock_s(p.start), clock_s(p.end)
    length = b - a if b > a else b - a + DAY_S
    out = []
    for d in day_set(p.days):
        s = d * DAY_S + a
        e = s + length
        if e <= WEEK_S:
            out.append((s, e))
        else:
            out += [(s, WEEK_S), (0.0, e - WEEK_S)]
    return [(s, e) for s, e in out if e > s]


def week_clock(s: float, *, end: bool = False) -> str:
    """Week seconds as ``"wed 10:00"``; the end of a span at midnight as ``"tue 24:00"``."""
    if end and s > 0 and int(s) % int(DAY_S) == 0:
        return f"{DAYS[int(s // DAY_S) - 1]} 24:00"
    d, rest = divmod(int(s) % int(WEEK_S), int(DAY_S))
    return f"{DAYS[d]} {rest // 3600:02d}:{rest % 3600 // 60:02d}"


def tariff_problems(tariff: Tariff) -> list[tuple[int | None, str]]:
    """``(period index or None, message)`` for every overlap, gap and mixed CO₂ of a tariff."""
    spans = sorted((s, e, i) for i, p in enumerate(tariff.periods) for s, e in period_spans(p))
    problems: list[tuple[int | None, str]] = []
    covered = 0.0
    last = -1
    for s, e, i in spans:
        if s < covered:
            problems.append((i, f"period {i} overlaps period {last} from {week_clock(s)} to "
                                f"{week_clock(min(e, covered), end=True)}; every instant has "
                                "one price"))
        elif s > covered:
            problems.append((i, f"no price from {week_clock(covered)} to "
                                f"{week_clock(s, end=True)}; the periods must cover the whole "
                                "week"))
        if e > covered:
            covered, last = e, i
    if covered < WEEK_S:
        problems.append((None, f"no price from {week_clock(covered)} to sun 24:00; the periods "
                               "must cover the whole week"))
    if len(problems) > 3:           # a daily gap is seven; the first few say enough
        problems = [*problems[:3], (None, f"... and {len(problems) - 3} more gaps or overlaps")]
    with_co2 = [p.co2_kg_per_kwh is not None for p in tariff.periods]
    if any(with_co2) and not all(with_co2):
        i = with_co2.index(False)
        problems.append((i, "co2_kg_per_kwh is given on some periods but not on this one; "
                            "give it on every period or on none"))
    return problems


# --------------------------------------------------------------------------- the section


class EnergySettings(_Model):
    """The cell's ``energy:`` section: how energy is priced and how much power it may draw."""

    tariff: Tariff = Field(description="Time-of-use tariff over the week.")
    clock_at_start: str = Field(
        default="mon 00:00",
        description="Tariff clock when the run starts (simulation time 0), 'DDD HH:MM'.")
    peak_cap_kw: float | None = Field(default=None, gt=0, le=MAX_KW,
                                      description="Contracted peak power of the cell, kW.")
    peak_window_s: float = Field(default=900.0, ge=1, le=DAY_S,
                                 description="Averaging window of the peak, s (15 min default); "
                                 "windows are aligned to the tariff clock.")
    cap_leases: bool = Field(
        default=True,
        description="With a peak cap: machines start operations only under power leases from "
        "the energy manager, so the cell never draws more than the cap (docs/energy.md); "
        "false: the cap is only reported.")
    # -- the cap escalation (issue 17, docs/energy.md "When the cap makes an order late") --
    cap_lateness_escalate_s: float | None = Field(
        default=None, ge=0, le=MAX_SECONDS,
        description="With leases and a console: when the cap would make an order finish more "
        "than this many seconds after its due date, the energy manager asks a supervisor "
        "(raise the cap for a while, let it be late, or move other work); null: never asks.")
    cap_escalate_priority: int = Field(default=2, ge=1, le=4,
                                       description="Priority of that escalation (1 = highest).")
    cap_raise_s: float = Field(
        default=3600.0, gt=0, le=MAX_SECONDS,
        description="How long an approved raise of the cap lasts, s: the manager grants "
        "above the cap, as much as the late order needs, until then.")
    @field_validator("clock_at_start")
    @classmethod
    def _start(cls, v: str) -> str:
        week_offset_s(v)
        return v

    @property
    def start_offset_s(self) -> float:
        return week_offset_s(self.clock_at_start)


def week_offset_s(text: str) -> float:
    """``"wed 06:00"`` as seconds after Monday 00:00."""
    day, _, clock = text.strip().lower().partition(" ")
    if day not in DAYS:
        raise ValueError(f"{text!r}: write a day and a time, e.g. 'mon 00:00'")
    return DAYS.index(day) * DAY_S + clock_s(clock.strip()) % DAY_S
