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

Under negotiated maintenance the crew agent books the repairs too (ADR 64):
:meth:`expect_repairs` makes a corrective repair wait, machine down, until the
machine names the technician the crew sent (:meth:`repair_with`, from its
``set_state repair``), so the crew's bookings and the hands used here agree.
A repair nobody books within ``UNBOOKED_AFTER_S`` (the machine's agent was down
when it failed, and never heard of the failure) takes the first free
technician, as without negotiation, and says so (``repair_unbooked``).

With the stores agent (ADR 71) the repair's part is the agents' too: the machine
names the unit the stores hold for the repair (``part_serial``), the workshop
fits that one and no other, and the simulator's own shelf is not used at all
under this policy — one set of books.  A repair nobody booked fits a unit
outside the books (``PART#unbookedK``, counted and priced, logged with
``repair_unbooked``): the stores agent never heard of the failure.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

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

__all__ = ["UNBOOKED_AFTER_S", "Workshop", "WorkshopStats"]

#: A repair the crew has not sent anyone to within this long takes the first free hands.
UNBOOKED_AFTER_S = 900.0


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
        self.windows: Any = None             # negotiated: the machine agents' window planners
        self.unbooked = 0                    # repairs that fitted a unit outside the books
        #: negotiated: until when each waiting repair waits for the crew before it counts as
        #: unbooked (put back while the machine says it awaits its part)
        self.awaited: dict[str, float] = {}
        #: negotiated: the repairs waiting for the technician the crew books, per machine
        self.booked_repairs: dict[str, simpy.Event] | None = None

    def expect_repairs(self) -> None:
        """Corrective repairs wait for the technician the crew agent sends."""
        self.booked_repairs = {}

    def repair_with(self, dm: DegradingMachine, technician: str, issued: str = "") -> str:
        """The crew's technician has come to repair ``dm`` with the unit ``issued`` by the
        stores agent: start the repair with them, or why not ("" when it started).  Never
        waits: the machine asks the crew (and the stores) again.  Without a unit named the
        simulator's shelf supplies it (a cell without a stores agent)."""
        waiting = (self.booked_repairs or {}).get(dm.m.spec.id)
        if waiting is None or waiting.triggered:
            return "no repair waiting"
        if technician not in self.crew.items:
            return f"{technician} is not free"
        if issued:
            why = self._issue(dm.spec.part, issued)
            if why:
                return why
            self._fit(dm.spec.part, issued)
        self.crew.items.remove(technician)      # free, so no getter waits for it
        waiting.succeed((technician, issued))
        return ""

    def await_part(self, dm: DegradingMachine, eta_at: float) -> str:
        """The machine's agent awaits the unit the stores hold for the repair, due at
        ``eta_at``: the repair waits for the crew until then and ``UNBOOKED_AFTER_S`` more
        before it counts as unbooked.  Why not ("" when noted)."""
        mid = dm.m.spec.id
        if mid not in self.awaited:
            return "no repair waiting"
        self.awaited[mid] = max(self.awaited[mid], eta_at + UNBOOKED_AFTER_S)
        self.record("repair_awaits_part", machine=mid, eta_at=round(eta_at, 6))
        return ""

    def _fit(self, part: str, serial: str) -> None:
        """A unit from the stores agent's books goes into a machine: counted and priced."""
        self.fitted.add(serial)
        self.stats.parts_used += 1
        self.stats.parts_cost += self.settings.part(part).cost
        self.stats.by_part[part] = self.stats.by_part.get(part, 0) + 1

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
        tech = serial = ""
        if self.booked_repairs is not None:     # negotiated: the crew's technician
            mid = dm.m.spec.id
            self.booked_repairs[mid] = ev = self.env.event()
            self.awaited[mid] = self.env.now + UNBOOKED_AFTER_S
            while not ev.triggered and self.env.now < self.awaited[mid] - 1e-9:
                yield ev | self.env.timeout(self.awaited[mid] - self.env.now)
            del self.booked_repairs[mid], self.awaited[mid]
            if ev.triggered:
                tech, serial = cast("tuple[str, str]", ev.value)
            elif self.books is not None:        # a unit the stores agent never issued
                self.unbooked += 1
                serial = f"{dm.spec.part}#unbooked{self.unbooked}"
                self._fit(dm.spec.part, serial)
                self.record("repair_unbooked", machine=dm.m.spec.id,
                            after_s=UNBOOKED_AFTER_S, part_serial=serial)
            else:
                self.record("repair_unbooked", machine=dm.m.spec.id,
                            after_s=UNBOOKED_AFTER_S)

        def work() -> Generator[simpy.Event, Any, None]:
            self.waiting_corrective -= 1
            yield self.env.timeout(repair_s)
        yield from self._job(dm, "corrective", repair_s, work, tech, serial)

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
            why = self._issue(shelf.name, issued)
            if why:
                return why
        elif not shelf.items.items:
            self.stats.stock_outs += 1
            self.record("stock_out", part=shelf.name)
            return f"no {shelf.name} on the shelf"
        if not dm.m.up or dm.maintaining:
            return "machine down"
        if issued:
            self._fit(shelf.name, issued)
        self.crew.items.remove(technician)      # free, so no getter waits for it
        duration = dm.spec.maintenance_s

        def work() -> Generator[simpy.Event, Any, None]:
            if dm.maintain(duration):
                yield self.env.timeout(duration)
            else:                               # failed in between: the part goes back
                self._cancelled(dm)
        self.env.process(self._job(dm, "planned", duration, work, technician, issued))
        return ""

    def _issue(self, part: str, serial: str) -> str:
        """Why the stores agent's unit ``serial`` cannot be fitted ("" when it can)."""
        if serial.rsplit("#s", 1)[0] != part:
            return f"part {serial} is not a {part}"
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
