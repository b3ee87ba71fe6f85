"""The maintenance crew and the spare-parts stores, modelled inside the simulator.

A job — planned maintenance or a corrective repair — needs one technician for its
whole length and consumes one spare part.  Technicians are a SimPy store of
named people (``tech1`` .. ``techN``), so the log says who did what and the run
invariant "technician capacity never exceeded" can be checked from the log
alone.  Each part unit has a serial (``spindle_bearing#3``); a unit leaves the
shelf once, and the log names it, so "a part is never used twice" is checkable
too.  The stores reorder ``order_qty`` units from the supplier when stock plus
units on order falls to the reorder point; a job that finds the shelf empty
waits for the delivery and counts a stock-out.

These are the first half of issue 16's technician and stores *agents*: the same
capacities and rules, decided here without messages.  Corrective repairs come
first: a request for a technician from a broken machine is served before the
planned jobs waiting (a priority store of requests would be the next step; here
planned jobs simply ask only when a technician is free).
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any, Protocol

import simpy

from agents.cell.maintenance import MaintenanceSettings


class DegradingMachine(Protocol):
    """What the workshop needs of a machine that wears (:class:`sim_bridge.degradation.
    DegradingMachine`), named here so the two modules do not import each other."""

    spec: Any
    job: Any
    m: Any
    maintaining: bool

    def maintain(self, *args: Any, **kwargs: Any) -> Any: ...

__all__ = ["Workshop", "WorkshopStats"]


@dataclass
class WorkshopStats:
    jobs: int = 0
    technician_busy_s: float = 0.0
    stock_outs: int = 0
    parts_used: int = 0
    parts_cost: float = 0.0
    technician_cost: float = 0.0
    orders_placed: int = 0
    by_part: dict[str, int] = field(default_factory=dict)


class _Shelf:
    def __init__(self, env: simpy.Environment, name: str, settings: MaintenanceSettings,
                 record: Any, stats: WorkshopStats) -> None:
        self.env, self.name, self.record, self.stats = env, name, record, stats
        self.rule = settings.part(name)
        self.items: simpy.Store = simpy.Store(env)
        self.serial = 0
        self.on_order = 0
        self.deliveries: list[float] = []     # when each open supplier order arrives
        for _ in range(self.rule.stock):
            self._add()

    def _add(self) -> None:
        self.serial += 1
        self.items.put(f"{self.name}#{self.serial}")

    def take(self) -> Generator[simpy.Event, Any, str]:
        if not self.items.items:
            self.stats.stock_outs += 1
            self.record("stock_out", part=self.name)
        serial: str = yield self.items.get()
        self._maybe_reorder()
        self.stats.parts_used += 1
        self.stats.parts_cost += self.rule.cost
        self.stats.by_part[self.name] = self.stats.by_part.get(self.name, 0) + 1
        return serial

    def _maybe_reorder(self) -> None:
        if len(self.items.items) + self.on_order > self.rule.reorder_point:
            return
        qty = self.rule.order_qty
        self.on_order += qty
        self.deliveries.append(self.env.now + self.rule.lead_time_s)
        self.stats.orders_placed += 1
        self.record("part_ordered", part=self.name, qty=qty,
                    due_at=round(self.env.now + self.rule.lead_time_s, 6))

        def deliver(_: Any) -> None:
            self.on_order -= qty
            self.deliveries.pop(0)            # same lead time for all: first in, first out
            for _k in range(qty):
                self._add()
            self.record("part_delivered", part=self.name, qty=qty)
        self.env.timeout(self.rule.lead_time_s).callbacks.append(deliver)

    @property
    def level(self) -> int:
        return len(self.items.items)


class Workshop:
    """Technicians and stores of one cell; :meth:`corrective` and :meth:`planned` are jobs."""

    def __init__(self, env: simpy.Environment, settings: MaintenanceSettings, record: Any) -> None:
        self.env, self.settings, self.record = env, settings, record
        self.stats = WorkshopStats()
        self.crew: simpy.Store = simpy.Store(env)
        for k in range(settings.technicians):
            self.crew.put(f"tech{k + 1}")
        self.shelves: dict[str, _Shelf] = {}
        self.waiting_corrective = 0
        self.fitted: set[str] = set()        # serials the stores agent issued, once each
        self.books: Any = None               # negotiated: the stores agent's books, read

    def shelf(self, part: str) -> _Shelf:
        if part not in self.shelves:
            self.shelves[part] = _Shelf(self.env, part, self.settings, self.record, self.stats)
        return self.shelves[part]

    def technician_free(self) -> bool:
        return bool(self.crew.items) and self.waiting_corrective == 0

    def _job(self, dm: DegradingMachine, kind: str, duration_s: float, work: Any,
             technician: str = "", issued: str = "") -> Generator[simpy.Event, Any, None]:
        tech: str = technician or (yield self.crew.get())
        serial = issued or (yield from self.shelf(dm.spec.part).take())
        dm.job = {"technician": tech, "part_serial": serial}
        self.record("maintenance_start", machine=dm.m.spec.id, kind=kind, technician=tech,
                    part_serial=serial, duration_s=round(duration_s, 6))
        self.stats.jobs += 1
        started = self.env.now
        yield from work()
        self.stats.technician_busy_s += self.env.now - started
        self.stats.technician_cost += ((self.env.now - started) / 3600.0
                                       * self.settings.costs.technician_per_h)
        self.crew.put(tech)

    def corrective(self, dm: DegradingMachine, repair_s: float
                   ) -> Generator[simpy.Event, Any, None]:
        """The repair of a failed machine: a technician, a part, then ``repair_s``."""
        self.waiting_corrective += 1

        def work() -> Generator[simpy.Event, Any, None]:
            self.waiting_corrective -= 1
            yield self.env.timeout(repair_s)
        yield from self._job(dm, "corrective", repair_s, work)

    def planned(self, dm: DegradingMachine) -> Generator[simpy.Event, Any, None]:
        """Planned maintenance as a process: technician and part first (the machine keeps
        working meanwhile), then the machine down for ``maintenance_s``."""
        duration = dm.spec.maintenance_s

        def work() -> Generator[simpy.Event, Any, None]:
            if dm.maintain(duration):
                yield self.env.timeout(duration)
            else:                           # it failed meanwhile: the part goes back
                self._cancelled(dm)
        yield from self._job(dm, "planned", duration, work)

    def negotiated(self, dm: DegradingMachine, technician: str, issued: str = "") -> str:
        """A window the crew agent negotiated begins: ``technician`` (named by the crew) and
        a part from the shelf now, or why not ("" when it started).  Never waits: a job
        that cannot start now is refused, and the machine asks the crew again."""
        shelf = self.shelf(dm.spec.part)
        if technician not in self.crew.items:
            return f"{technician} is not free (a corrective repair, or unknown)"
        if issued:                              # the unit the stores agent holds for it
            why = self._issue(shelf, issued)
            if why:
                return why
        elif not shelf.items.items:
            self.stats.stock_outs += 1
            self.record("stock_out", part=shelf.name)
            return f"no {shelf.name} on the shelf"
        if not dm.m.up or dm.maintaining:
            return "machine down"
        if issued:
            self.fitted.add(issued)
            self.stats.parts_used += 1
            self.stats.parts_cost += shelf.rule.cost
            self.stats.by_part[shelf.name] = self.stats.by_part.get(shelf.name, 0) + 1
        self.crew.items.remove(technician)      # free, so no getter waits for it
        duration = dm.spec.maintenance_s

        def work() -> Generator[simpy.Event, Any, None]:
            if dm.maintain(duration):
                yield self.env.timeout(duration)
            else:                               # failed in between: the part goes back
                self._cancelled(dm)
        self.env.process(self._job(dm, "planned", duration, work, technician, issued))
        return ""

    def _issue(self, shelf: _Shelf, serial: str) -> str:
        """Why the stores agent's unit ``serial`` cannot be fitted ("" when it can)."""
        if serial.rsplit("#s", 1)[0] != shelf.name:
            return f"part {serial} is not a {shelf.name}"
        if serial in self.fitted:
            return f"part {serial} used already"
        return ""

    def _cancelled(self, dm: DegradingMachine) -> None:
        """A planned job the machine's failure overtook: its part goes back on the shelf."""
        shelf = self.shelf(dm.spec.part)
        if dm.job["part_serial"] in self.fitted:     # the stores agent's: back to its books
            self.fitted.discard(dm.job["part_serial"])
        else:
            shelf.items.put(dm.job["part_serial"])
        self.stats.parts_used -= 1
        self.stats.parts_cost -= shelf.rule.cost
        self.record("maintenance_cancelled", machine=dm.m.spec.id,
                    part_serial=dm.job["part_serial"])
        dm.job = {}
