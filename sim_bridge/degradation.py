"""Wear, failure, readings, maintenance and repair of a degrading machine in the simulator.

Theory of operation
-------------------
A machine with a ``degradation:`` block (agents/cell/maintenance.py) carries a
hidden wear state ``W`` that grows with its *exposure*: busy seconds count fully,
idle powered seconds count ``idle_wear``, down seconds not at all.  ``W`` is a
stationary **gamma process** in exposure: independent, non-negative increments,
``W(e) ~ Gamma(alpha * e, beta)``.  We chose it over a Weibull age model because
wear that can be *seen* is the point of condition monitoring: a Weibull age model
has no state a sensor could follow, a gamma process is the textbook monotone
degradation path (van Noortwijk 2009) whose level the readings track, while its
first-passage time still gives a right-skewed life like a Weibull's.  The
machine fails when ``W`` crosses a threshold ``H ~ N(1, threshold_cv)`` drawn per
life.  With ``beta = wear_cv**2`` and ``alpha = (1/beta + 1/2) / mttf_s`` the mean
first-passage time of a gamma process, ``(E[H]/beta + 1/2)/alpha``, is the
configured ``mttf_s`` (tests/test_maintenance_degradation.py measures it).

The path of one life is drawn lazily in exposure steps and interpolated
linearly, so *when* the plant looks does not change *what* it sees, and the
failure exposure is known in advance: the SimPy process sleeps until the failure
could first happen (exposure grows at most one second per second) or until the
next reading, whichever is first.

Common random numbers: every concern draws from its own numpy Generator per
machine — ``wear`` (the path), ``threshold`` (one per life), ``sensors``
(noise), ``repair`` (corrective durations) — seeded from (run seed, machine,
concern).  A life's path and threshold are drawn whole, whatever a policy does
to it, so life *k* of a machine is the same under every policy: the policies are
compared on the same failures.

Maintenance (:meth:`DegradingMachine.maintain`) takes the machine down for
``maintenance_s`` and removes ``restore`` of its wear (1: the part is replaced and
a new life begins).  A failure (``fault`` with reason ``wear``) is followed by a
corrective repair drawn with mean ``repair_s`` that replaces the part.  Planned
downtime is logged as ``fault`` with reason ``maintenance`` so every consumer of
the log that splits downtime by reason sees it; each job ends with a
``maintenance_done`` event naming the kind and the part consumed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from agents.cell.maintenance import Degradation

if TYPE_CHECKING:
    from .maintenance.workshop import Workshop

# The embedded plant builds these (sim_bridge/plant.py imports this module), so its backend
# and machine state are typed loosely here rather than imported back.
EmbeddedBackend = Any
_MachineState = Any

__all__ = ["CONCERNS", "DegradingMachine", "WearProcess", "attach", "stream"]

CONCERNS = ("wear", "threshold", "sensors", "repair")
_CHUNK = 256            # path increments drawn at a time
_MIN_SLEEP_S = 1.0      # an idle machine close to failure is checked at least this often
_REPAIR_SHAPE = 4.0     # corrective repair durations: gamma, cv 0.5


def stream(seed: int | str, machine: str, concern: str) -> np.random.Generator:
    """The Generator of one concern of one machine (stable across Python versions)."""
    digest = hashlib.sha256(f"autocell/{seed}/{machine}/{concern}".encode()).digest()
    return np.random.Generator(np.random.PCG64(int.from_bytes(digest[:16], "big")))


class WearProcess:
    """The gamma wear process of one machine, life after life; pure (no SimPy).

    Exposures are seconds at full load since the *current life* began."""

    def __init__(self, spec: Degradation, *, wear: np.random.Generator,
                 threshold: np.random.Generator) -> None:
        self.spec = spec
        self.beta = spec.wear_cv ** 2
        self.alpha = (1.0 / self.beta + 0.5) / spec.mttf_s
        self.step_e = min(spec.reading_interval_s, spec.mttf_s / 50.0)
        self._rng_wear, self._rng_threshold = wear, threshold
        self.life = 0
        self.new_life()

    def new_life(self) -> None:
        """A new part: wear 0, a new threshold, a new path."""
        self.life += 1
        self.threshold = max(0.05, float(self._rng_threshold.normal(1.0, self.spec.threshold_cv)))
        self._w = np.zeros(1)      # wear at exposures 0, step_e, 2 step_e, ...
        self.offset = 0.0          # wear removed by partial maintenance this life

    def _extend(self) -> None:
        inc = self._rng_wear.gamma(self.alpha * self.step_e, self.beta, _CHUNK)
        self._w = np.concatenate([self._w, self._w[-1] + np.cumsum(inc)])

    def wear_at(self, exposure_s: float) -> float:
        while exposure_s > (len(self._w) - 1) * self.step_e:
            self._extend()
        k = exposure_s / self.step_e
        i = min(int(k), len(self._w) - 2)
        w = self._w[i] + (k - i) * (self._w[i + 1] - self._w[i])
        return max(0.0, float(w) - self.offset)

    def failure_exposure(self) -> float:
        """The exposure of this life at which its wear crosses the threshold."""
        level = self.threshold + self.offset
        while self._w[-1] < level:
            self._extend()
        i = int(np.searchsorted(self._w, level))      # first knot at or above the level
        lo, hi = float(self._w[i - 1]), float(self._w[i])
        return (i - 1 + (level - lo) / (hi - lo)) * self.step_e

    def restore(self, exposure_s: float, share: float) -> bool:
        """Maintenance at ``exposure_s`` removes ``share`` of the wear; True when the part
        was replaced (``share`` 1: a new life begins)."""
        if share >= 1.0:
            self.new_life()
            return True
        self.offset += share * self.wear_at(exposure_s)
        return False


class DegradingMachine:
    """The SimPy side of one degrading machine in the embedded backend.

    It owns the machine's wear process and streams, emits its readings, fails it
    and repairs it; :meth:`maintain` is the hook the maintenance policies call."""

    def __init__(self, backend: EmbeddedBackend, m: _MachineState, seed: int) -> None:
        assert m.spec.degradation is not None
        self.spec: Degradation = m.spec.degradation
        self.backend, self.m, self.env = backend, m, backend.env
        mid = m.spec.id
        self.wear = WearProcess(self.spec, wear=stream(seed, mid, "wear"),
                                threshold=stream(seed, mid, "threshold"))
        self._rng_sensor = stream(seed, mid, "sensors")
        self._rng_repair = stream(seed, mid, "repair")
        self._life_start_e = 0.0       # cumulative exposure when this life began
        self._life_start_busy = 0.0    # cumulative busy seconds when this life began
        self.workshop: Workshop | None = None   # technicians and parts; None: always at hand
        self.job: dict[str, Any] = {}  # the technician and part serial of the job under way
        self.maintaining = False
        self.failures = 0
        self.maintenances = 0
        self.listeners: list[Callable[[str, dict[str, Any]], None]] = []
        self.env.process(self._run())

    # -- exposure and wear ---------------------------------------------------------------
    def busy_s(self) -> float:
        """Busy seconds since the run began, the running operation included."""
        m = self.m
        return m.busy_s + (self.env.now - m.op_at if m.op_at is not None else 0.0)

    def busy_age_s(self) -> float:
        """Operating (busy) seconds since the part was last replaced: the hour counter a
        policy may read."""
        return self.busy_s() - self._life_start_busy

    def exposure_s(self) -> float:
        """Seconds at full load since the run began: busy fully, idle up at idle_wear."""
        m, now = self.m, self.env.now
        busy = self.busy_s()
        down = m.down_s + (now - m.down_since if not m.up else 0.0)
        idle = max(0.0, now - busy - down)
        return busy + self.spec.idle_wear * idle

    def life_exposure_s(self) -> float:
        return self.exposure_s() - self._life_start_e

    def wear_now(self) -> float:
        """The hidden truth (tests and benchmarks only; agents see readings)."""
        return self.wear.wear_at(self.life_exposure_s())

    # -- the process -----------------------------------------------------------------------
    def _run(self):  # noqa: ANN202 - SimPy process
        interval = self.spec.reading_interval_s
        next_reading = interval
        while True:
            now = self.env.now
            if now >= next_reading - 1e-9:
                if self.m.up:
                    self._reading()
                while next_reading <= now + 1e-9:
                    next_reading += interval
            sleep = next_reading - now
            if self.m.up and not self.maintaining:
                left = self.wear.failure_exposure() - self.life_exposure_s()
                if left <= 1e-6:
                    yield from self._fail()
                    continue
                sleep = min(sleep, max(left, _MIN_SLEEP_S))
            yield self.env.timeout(sleep)

    def _reading(self) -> None:
        w, busy, rng = self.wear_now(), bool(self.m.task), self._rng_sensor
        values = {}
        for name, ch, digits in (("vibration_mm_s", self.spec.vibration_mm_s, 3),
                                 ("temperature_c", self.spec.temperature_c, 2)):
            level = (ch.busy if busy else ch.idle) + ch.per_wear * w
            values[name] = round(level + ch.noise * float(rng.standard_normal()), digits)
        self.backend.record("reading", machine=self.m.spec.id, **values)
        self.backend.events.reading(self.m.spec.id, values)
        self._notify("reading", values)

    def _fail(self):  # noqa: ANN202 - SimPy sub-process
        self.failures += 1
        self.backend._go_down(self.m, "wear", self.spec.repair_s)
        self._notify("failure", {})
        repair_s = float(self._rng_repair.gamma(_REPAIR_SHAPE, self.spec.repair_s / _REPAIR_SHAPE))
        if self.workshop is not None:       # wait for a technician and a part, then repair
            yield from self.workshop.corrective(self, repair_s)
        else:
            yield self.env.timeout(repair_s)
        self._renew()
        self.backend.record("maintenance_done", machine=self.m.spec.id, kind="corrective",
                            part=self.spec.part, life=self.wear.life, **self.job)
        self.job = {}
        if not self.m.up:
            self.backend._go_up(self.m)
        self._notify("repaired", {"kind": "corrective"})

    def _renew(self) -> None:
        self._life_start_e = self.exposure_s()
        self._life_start_busy = self.busy_s()
        self.wear.new_life()

    # -- the policies' hook ----------------------------------------------------------------
    def maintain(self, duration_s: float | None = None) -> bool:
        """Start planned maintenance now; False if the machine is down or already in it.

        An operation running now is aborted (a policy that cares waits for idle)."""
        if not self.m.up or self.maintaining:
            return False
        self.maintaining = True
        self.maintenances += 1
        duration = self.spec.maintenance_s if duration_s is None else duration_s
        self.backend._go_down(self.m, "maintenance", duration)
        self._notify("maintenance", {"duration_s": duration})

        def done(_: Any) -> None:
            replaced = self.wear.restore(self.life_exposure_s(), self.spec.restore)
            if replaced:
                self._life_start_e = self.exposure_s()
                self._life_start_busy = self.busy_s()
            self.maintaining = False
            self.backend.record("maintenance_done", machine=self.m.spec.id, kind="planned",
                                part=self.spec.part, life=self.wear.life, **self.job)
            self.job = {}
            if not self.m.up:
                self.backend._go_up(self.m)
            self._notify("repaired", {"kind": "planned"})
        self.env.timeout(duration).callbacks.append(done)
        return True

    def _notify(self, what: str, fields: dict[str, Any]) -> None:
        for listener in self.listeners:
            listener(what, fields)


def attach(backend: EmbeddedBackend, seed: int) -> dict[str, DegradingMachine]:
    """A :class:`DegradingMachine` for every machine of ``backend`` with a degradation block."""
    return {mid: DegradingMachine(backend, m, seed)
            for mid, m in backend.machines.items() if m.spec.degradation is not None}
