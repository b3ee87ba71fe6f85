"""Degradation of a machine in the cell file: the ``degradation:`` block of a machine.

A machine without the block behaves exactly as before (breakdowns from
``mtbf_s`` only).  With it, the simulator (sim_bridge/degradation.py) grows a
hidden *wear* state with the machine's operating time and load, fails the
machine when wear crosses a threshold drawn for each life, and reports noisy
sensor readings (vibration RMS, temperature) whose level follows the wear.
Maintenance and corrective repair are timed here; the policies that decide
*when* to maintain are not part of the machine's description.

Units: ``mttf_s`` is *operating* time at full load (busy seconds; an idle,
powered machine wears at ``idle_wear`` of that rate, a machine that is down
does not wear), so a machine busy half the time fails after about twice its
``mttf_s`` of wall-clock time.  The model and why it is a gamma process:
docs/maintenance.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agents.cell.limits import MAX_SECONDS

__all__ = ["Degradation", "MaintenanceCosts", "MaintenanceSettings", "PartStock", "SensorModel",
           "Shift"]

_Seconds = Annotated[float, Field(gt=0, le=MAX_SECONDS)]
_Fraction = Annotated[float, Field(ge=0, le=1)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class SensorModel(_Model):
    """One sensor channel: ``base (idle or busy) + per_wear * wear + N(0, noise)``.

    Wear is 0 when new and about 1 at failure, so ``per_wear`` is how far the
    reading rises over a life."""

    idle: float = Field(description="Level of a new machine standing idle.")
    busy: float = Field(description="Level of a new machine working.")
    per_wear: float = Field(description="Rise of the level per unit of wear (wear ~1 at failure).")
    noise: Annotated[float, Field(ge=0)] = Field(description="Standard deviation of the noise.")


def _vibration() -> SensorModel:
    return SensorModel(idle=0.3, busy=2.0, per_wear=4.0, noise=0.4)


def _temperature() -> SensorModel:
    return SensorModel(idle=30.0, busy=55.0, per_wear=15.0, noise=1.5)


class Degradation(_Model):
    """A machine's wear, its sensors, and how long maintenance and repair take."""

    mttf_s: _Seconds = Field(
        description="Mean operating time to failure from new, seconds at full load.")
    wear_cv: Annotated[float, Field(gt=0, le=2)] = Field(
        default=0.3, description="Coefficient of variation of the wear at the mean life "
        "(the gamma process's randomness; small: every life wears alike).")
    threshold_cv: Annotated[float, Field(ge=0, le=0.5)] = Field(
        default=0.1, description="Spread of the failure threshold around 1 (drawn per life).")
    idle_wear: _Fraction = Field(
        default=0.1, description="Wear rate of an idle, powered machine relative to a busy one.")
    reading_interval_s: _Seconds = Field(
        default=300.0, description="Seconds between two sensor readings (`reading` events).")
    vibration_mm_s: SensorModel = Field(default_factory=_vibration,
                                        description="Vibration RMS channel, mm/s.")
    temperature_c: SensorModel = Field(default_factory=_temperature,
                                       description="Temperature channel, °C.")
    maintenance_s: _Seconds = Field(
        default=1800.0, description="Duration of planned maintenance, seconds.")
    restore: _Fraction = Field(
        default=1.0, description="Share of the wear planned maintenance removes; 1: as new "
        "(the worn part is replaced, and the next life draws a new threshold).")
    repair_s: _Seconds = Field(
        default=7200.0, description="Mean duration of a corrective repair after a failure, "
        "seconds; longer than maintenance_s.")
    part: Annotated[str, Field(min_length=1, max_length=64)] = Field(
        default="spare", description="Spare part that maintenance and repair consume.")

    @model_validator(mode="after")
    def _repair_longer(self) -> Degradation:
        if self.repair_s <= self.maintenance_s:
            raise ValueError(f"repair_s ({self.repair_s:g}) must be longer than maintenance_s "
                             f"({self.maintenance_s:g}): a corrective repair also finds, "
                             "diagnoses and clears the failure")
        return self


class PartStock(_Model):
    """A spare part in the stores: what is on the shelf, when and how much is reordered."""

    stock: Annotated[int, Field(ge=0, le=10_000)] = Field(
        default=2, description="Units on the shelf when the run starts.")
    reorder_point: Annotated[int, Field(ge=0, le=10_000)] = Field(
        default=1, description="An order goes out when stock plus units on order falls to this.")
    order_qty: Annotated[int, Field(ge=1, le=10_000)] = Field(
        default=2, description="Units per supplier order.")
    lead_time_s: Annotated[float, Field(ge=0, le=MAX_SECONDS)] = Field(
        default=3600.0, description="Supplier lead time, seconds.")
    cost: Annotated[float, Field(ge=0)] = Field(default=200.0, description="Cost of one unit.")
    expedite_lead_s: Annotated[float, Field(ge=0, le=MAX_SECONDS)] = Field(
        default=600.0, description="Negotiated maintenance: the stores agent's expedited "
        "delivery, seconds from the request (a pending order is never made later).")
    expedite_cost: Annotated[float, Field(ge=0)] = Field(
        default=300.0, description="Surcharge of one expedited supplier order.")


class MaintenanceCosts(_Model):
    """The cost rates of ``autocell bench maintenance`` (currency units)."""

    downtime_per_h: Annotated[float, Field(ge=0)] = Field(
        default=600.0, description="Lost production per hour a machine is down.")
    technician_per_h: Annotated[float, Field(ge=0)] = Field(
        default=80.0, description="Cost of a technician per hour on a job.")
    tardiness_per_h: Annotated[float, Field(ge=0)] = Field(
        default=200.0, description="Penalty per hour an order finishes after its due date.")


class Shift(_Model):
    """One technician on duty from ``from_s`` to ``to_s``, seconds into the shift period
    (``maintenance.shift_period_s``, a week by default); ``to_s`` before ``from_s``: the
    shift runs over the period's end (a night shift of a daily period)."""

    technician: Annotated[str, Field(pattern=r"^tech[1-9][0-9]*$")] = Field(
        description="The technician, tech1 .. techN.")
    from_s: Annotated[float, Field(ge=0, le=MAX_SECONDS)] = Field(
        description="Start of the shift, seconds into the period.")
    to_s: Annotated[float, Field(ge=0, le=MAX_SECONDS)] = Field(
        description="End of the shift, seconds into the period.")


class MaintenanceSettings(_Model):
    """The cell's maintenance crew, its spare-parts stores and the cost rates."""

    technicians: Annotated[int, Field(ge=1, le=1000)] = Field(
        default=1, description="Technicians in the crew; a job needs one for its whole length.")
    parts: dict[str, PartStock] = Field(
        default_factory=dict, description="Stock per part name; a part a machine names but "
        "this table does not gets the defaults.")
    costs: MaintenanceCosts = Field(default_factory=MaintenanceCosts,
                                    description="Cost rates for the benchmark's total cost.")
    # -- negotiated maintenance (issue 16, third round): a crew agent, windows as leases
    negotiate: bool = Field(
        default=False, description="Run a technician crew agent (`crew`, role maintenance) "
        "and a spare-parts stores agent (`stores`, role stores); "
        "each wearing machine's agent plans its maintenance window from its estimator and "
        "leases it from the crew (docs/maintenance.md). Off: no crew agent, as before.")
    estimator: Annotated[str, Field(min_length=1, max_length=200)] = Field(
        default="wear", description="The machines' estimator (a built-in name — wear, the "
        "calibrated model-based one; threshold; weibull — an entry point of "
        "autocell.estimators or package.module:Class), started from the cell file's "
        "degradation figures.")
    risk: Annotated[float, Field(gt=0, lt=1)] = Field(
        default=0.3, description="Remaining-life quantile taken as the latest safe start.")
    lookahead_s: _Seconds = Field(
        default=900.0, description="A machine asks for a window once its latest safe start "
        "is this close, seconds.")
    window_slot_s: _Seconds = Field(
        default=300.0, description="A machine's window starts at the first gap in its queue "
        "at most this long before its latest safe start (earlier throws life away).")
    window_grace_s: _Seconds = Field(
        default=60.0, description="A technician this late makes the window lapse (the crew is "
        "gone); the crew's booking ends this long after the window, whatever happens.")

    # -- the crew's shifts and the prediction miss (issue 16, ADR 64) ---------------------
    shifts: list[Shift] = Field(
        default_factory=list, description="When technicians are on duty (negotiated "
        "maintenance): a technician with entries is booked only inside them; one without "
        "is always on duty. Empty: everyone always on duty.")
    shift_period_s: _Seconds = Field(
        default=604800.0, description="The period the shifts repeat over, seconds (a week).")
    miss_quantile: Annotated[float, Field(gt=0, lt=1)] = Field(
        default=0.05, description="A failure before this quantile of the remaining life the "
        "machine's estimator gave at its last reading is a prediction badly wrong "
        "(`maintenance_prediction_miss`).")
    models: Path | None = Field(
        default=None, description="A model file from `autocell maintenance fit` (relative to "
        "the cell file): the machines it names start their estimators from it, under "
        "`autocell run` and on every host of `autocell up`; the others from the cell file's "
        "degradation figures.")
    decide: Literal["cost", "risk"] = Field(
        default="cost", description="When a machine agent asks for its window (negotiated "
        "maintenance, ADR 75): `cost` once going on one more reading risks more, at the "
        "cost rates above, than it earns at the age-replacement optimum's cost rate; "
        "`risk` once the `risk` quantile of the remaining life is within `lookahead_s`.")

    @model_validator(mode="after")
    def _shifts_fit(self) -> MaintenanceSettings:
        for sh in self.shifts:
            if int(sh.technician[4:]) > self.technicians:
                raise ValueError(f"shift for {sh.technician}: the crew has "
                                 f"{self.technicians} technician(s)")
            if max(sh.from_s, sh.to_s) > self.shift_period_s or sh.from_s == sh.to_s:
                raise ValueError(f"shift {sh.from_s:g}-{sh.to_s:g} of {sh.technician}: "
                                 f"must lie within the period ({self.shift_period_s:g} s) "
                                 "and not be empty")
        return self

    def shift_table(self) -> dict[str, list[tuple[float, float]]]:
        table: dict[str, list[tuple[float, float]]] = {}
        for sh in self.shifts:
            table.setdefault(sh.technician, []).append((sh.from_s, sh.to_s))
        return table

    def part(self, name: str) -> PartStock:
        return self.parts.get(name) or PartStock()
