"""The spare-parts stores agent: holds parts for maintenance windows, orders from a supplier.

Theory of operation
-------------------
Every unit of a part has a serial from the moment it exists on paper: the
configured ``stock`` is on the shelf at the start, and a supplier order of
``order_qty`` units names its serials when it is placed, each due at the
order's delivery (``lead_time_s`` later; fixed, so nothing is drawn).  A
machine that plans a window asks for a unit (``part_reserve``: job, part, the
latest safe start it needs it by, how long to hold it past that).  The stores
hold the free unit that arrives soonest — one on the shelf, else one on order,
else a unit of a new order placed at once (a *stock-out*) — and answer with
its serial and when it is ready: ``part_reserved`` when that is by the need,
``part_unavailable`` with the ETA when it is not (the unit is held all the
same; the machine escalates and plans its window from the ETA).  Whenever the
free units, on the shelf and on order, fall to the ``reorder_point``, another
order goes out.

A need that is due now (a corrective repair: need = the failure's instant)
goes before later ones (ADR 71).  It takes the unit its own machine held for
the window the failure cancelled (that release may still be on its way), else
a free unit, soonest first; when no free unit is on the shelf, it takes
the shelf unit held for the latest later need, and that reservation moves to
the next unit (on order, or of a new order) and is told so (``part_bumped``,
an answer with its new serial and ETA).  A planned window that has begun with
the unit keeps it — its machine ignores the new serial — and the plant refuses
the serial when the repair names it ("used already"): the repair reports it
gone and holds another.  The other way round (ADR 75): a unit freed on the shelf
(a release, an expiry, a delivery nobody holds) goes to the need due now that
waits for a unit on order, the earliest-waiting first (``part_reassigned``, an
answer with the new serial, ready now); the unit on order goes back to the free
stock.

A reservation is a lease, like the crew's booking (agents/maintenance/crew.py):
keyed by machine and job, so a repeated request is the same unit (its hold
extended to the new need, never shortened), and it ends by itself at
``expires_at`` = max(need, arrival) + hold — the unit of a machine that
crashed or forgot its window goes back to the free stock
(``part_reservation_expired``).  ``part_consumed`` takes the unit off the books
(a consumed serial is remembered: never held or consumed twice),
``part_release`` frees it.  ``part_expedite`` (a supervisor's decision on a
``maintenance_no_part`` escalation) brings the order the held unit is on
forward to ``expedite_lead_s`` from now, at ``expedite_cost``, and answers with
the new ETA.  The state is rebuilt from the agent's journal after a crash like
any agent's; while it is down the machines keep asking (docs/maintenance.md,
PROTOCOL.md §7.6).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from agents.base import Agent, Timing
from agents.cell.maintenance import PartStock
from agents.protocol.actions import Action, Log, Send, SetTimer
from agents.protocol.messages import (
    Message,
    PartConsumed,
    PartExpedite,
    PartRelease,
    PartReserve,
    PartReserved,
    PartUnavailable,
)

__all__ = ["STORES_ID", "Bin", "Reservation", "Stores", "StoresAgent", "SupplierOrder"]

#: The stores' agent id (and the certificate role ``stores``).
STORES_ID = "stores"


@dataclass(frozen=True)
class Reservation:
    """One unit held for one machine's maintenance job."""

    key: str                # machine|job
    machine: str
    job: str
    part: str
    serial: str
    need_by_at: float
    hold_s: float
    expires_at: float


@dataclass
class SupplierOrder:
    """Units ordered from the supplier, named when ordered, due together."""

    id: str                 # PART/oK
    part: str
    serials: list[str]
    due_at: float
    expedited: bool = False


@dataclass
class Bin:
    """The units of one part, on the shelf and on order (pure: no messages, no clock)."""

    part: str
    rule: PartStock
    arrives_at: dict[str, float] = field(default_factory=dict)   # serial -> ready from
    held: dict[str, str] = field(default_factory=dict)           # serial -> reservation key
    orders: dict[str, SupplierOrder] = field(default_factory=dict)
    consumed: set[str] = field(default_factory=set)
    units: int = 0
    placed: int = 0

    def __post_init__(self) -> None:
        for _ in range(self.rule.stock):
            self._unit(0.0)

    def _unit(self, at: float) -> str:
        self.units += 1
        serial = f"{self.part}#s{self.units}"
        self.arrives_at[serial] = at
        return serial

    def free(self) -> list[str]:
        """Units nobody holds, soonest first (the shelf before the supplier)."""
        return sorted((s for s in self.arrives_at if s not in self.held),
                      key=lambda s: (self.arrives_at[s], int(s.rsplit("#s", 1)[1])))

    def on_shelf(self, now: float) -> int:
        return sum(1 for at in self.arrives_at.values() if at <= now + 1e-9)

    def order(self, now: float) -> SupplierOrder:
        self.placed += 1
        due = now + self.rule.lead_time_s
        o = SupplierOrder(f"{self.part}/o{self.placed}", self.part,
                          [self._unit(due) for _ in range(self.rule.order_qty)], due)
        self.orders[o.id] = o
        return o

    def order_of(self, serial: str) -> SupplierOrder | None:
        return next((o for o in self.orders.values() if serial in o.serials), None)


class Stores:
    """Every part's bin and the reservations on them; pure (the agent adds messages)."""

    def __init__(self, rule: Callable[[str], PartStock]) -> None:
        self.rule = rule
        self.bins: dict[str, Bin] = {}
        self.reservations: dict[str, Reservation] = {}

    def bin(self, part: str) -> Bin:
        if part not in self.bins:
            self.bins[part] = Bin(part, self.rule(part))
        return self.bins[part]

    def reserve(self, machine: str, body: PartReserve, now: float
                ) -> tuple[Reservation, bool, list[SupplierOrder], Reservation | None]:
        """(the reservation, whether it is new, the supplier orders placed for it, the
        reservation for a later need it took its shelf unit from, moved to another unit)."""
        key = f"{machine}|{body.job}"
        b = self.bin(body.part)
        held = self.reservations.get(key)
        if held is not None:                         # a repeat: extend, never shorten
            exp = max(held.expires_at, self._expiry(b, held.serial, body))
            r = Reservation(key, machine, body.job, held.part, held.serial,
                            max(held.need_by_at, body.need_by_at), body.hold_s, exp)
            self.reservations[key] = r
            return r, False, [], None
        placed: list[SupplierOrder] = []
        free = b.free()
        urgent = body.need_by_at <= now + 1e-9
        own = next((o for o in self.reservations.values() if urgent and o.machine == machine
                    and o.part == body.part), None)
        if own is not None:                          # its window's unit (cancelled by the
            self.drop(own.key)                       # failure: the release is on its way)
            free = [own.serial] + [u for u in b.free() if u != own.serial]
        bumped = self._bumpable(b, machine, now) if urgent and not (
            free and b.arrives_at[free[0]] <= now + 1e-9) else None
        if bumped is not None:                       # due now: the later need's shelf unit
            free = [bumped.serial]
        elif not free:                               # a stock-out: order now
            placed.append(b.order(now))
            free = b.free()
        serial = free[0]
        b.held[serial] = key
        r = Reservation(key, machine, body.job, body.part, serial, body.need_by_at,
                        body.hold_s, self._expiry(b, serial, body))
        self.reservations[key] = r
        moved = None
        if bumped is not None:                       # the later need: the next unit
            if not b.free():
                placed.append(b.order(now))
            unit = b.free()[0]
            b.held[unit] = bumped.key
            moved = replace(bumped, serial=unit, expires_at=max(
                bumped.expires_at, max(bumped.need_by_at, b.arrives_at[unit]) + bumped.hold_s))
            self.reservations[bumped.key] = moved
        if len(b.free()) <= b.rule.reorder_point:
            placed.append(b.order(now))
        return r, True, placed, moved

    def feed(self, part: str, now: float) -> list[tuple[Reservation, str]]:
        """Units on the shelf nobody holds go to the needs due now that wait for a unit on
        order — the earliest-waiting first (ADR 75): a release or an expiry frees a unit
        that a repair would otherwise wait out its order's lead time for.  The unit on
        order goes back to the free stock (same books: one unit held per reservation).
        Returns each (reservation as moved, the serial it held before)."""
        b = self.bins.get(part)
        if b is None:
            return []
        moved: list[tuple[Reservation, str]] = []
        while True:
            shelf = [u for u in b.free() if b.arrives_at[u] <= now + 1e-9]
            waiting = sorted((r for r in self.reservations.values() if r.part == part
                              and r.need_by_at <= now + 1e-9
                              and b.arrives_at[r.serial] > now + 1e-9),
                             key=lambda r: (r.need_by_at, r.key))
            if not shelf or not waiting:
                return moved
            r, unit = waiting[0], shelf[0]
            b.held.pop(r.serial, None)
            b.held[unit] = r.key
            new = replace(r, serial=unit, expires_at=max(r.need_by_at, now) + r.hold_s)
            self.reservations[r.key] = new
            moved.append((new, r.serial))

    def _bumpable(self, b: Bin, machine: str, now: float) -> Reservation | None:
        """Another machine's reservation for the latest need still ahead that holds a unit
        on the shelf."""
        later = [r for s, k in b.held.items() if b.arrives_at[s] <= now + 1e-9
                 and (r := self.reservations[k]).need_by_at > now + 1e-9
                 and r.machine != machine]
        return max(later, key=lambda r: (r.need_by_at, r.key), default=None)

    @staticmethod
    def _expiry(b: Bin, serial: str, body: PartReserve) -> float:
        return max(body.need_by_at, b.arrives_at[serial]) + body.hold_s

    def ready_at(self, r: Reservation) -> float:
        return self.bin(r.part).arrives_at[r.serial]

    def drop(self, key: str) -> Reservation | None:
        r = self.reservations.pop(key, None)
        if r is not None:
            self.bin(r.part).held.pop(r.serial, None)
        return r

    def consume(self, machine: str, job: str, serial: str) -> Reservation | None:
        """Take ``serial`` off the books (the machine's reservation for ``job`` with it, or
        an unheld unit the plant says is gone); None when unknown or consumed already."""
        r = self.reservations.get(f"{machine}|{job}")
        part = r.part if r is not None and r.serial == serial else serial.rsplit("#s", 1)[0]
        b = self.bins.get(part)
        if b is None or serial not in b.arrives_at or serial in b.consumed:
            return None
        holder = b.held.get(serial)
        if holder is not None and holder != f"{machine}|{job}":
            return None                              # another machine's unit
        if holder is not None:
            r = self.drop(holder)
        del b.arrives_at[serial]
        b.consumed.add(serial)
        return r or Reservation(f"{machine}|{job}", machine, job, part, serial, 0.0, 0.0, 0.0)

    def expedite(self, r: Reservation, now: float) -> SupplierOrder | None:
        """Bring the order ``r``'s unit is on forward; None when it is on the shelf, or the
        order is due sooner already."""
        b = self.bin(r.part)
        o = b.order_of(r.serial)
        due = now + b.rule.expedite_lead_s
        if o is None or b.arrives_at[r.serial] <= now or o.due_at <= due:
            return None
        o.due_at, o.expedited = due, True
        for s in o.serials:
            if s in b.arrives_at:
                b.arrives_at[s] = due
        return o

    def expire(self, now: float) -> list[Reservation]:
        gone = [r for r in self.reservations.values() if r.expires_at <= now]
        for r in gone:
            self.drop(r.key)
        return gone

    def next_expiry_at(self) -> float | None:
        return min((r.expires_at for r in self.reservations.values()), default=None)


class StoresAgent(Agent):
    """The cell's spare-parts stores: reservations as leases, supplier orders, expedites."""

    role = "stores"

    def __init__(self, agent_id: str, *, timing: Timing, rule: Callable[[str], PartStock],
                 **kw: Any) -> None:
        super().__init__(agent_id, timing=timing, **kw)
        self.stores = Stores(rule)
        self._expiry_at: float | None = None
        self.ignored = 0

    def on_message(self, msg: Message, now: float) -> list[Action]:
        body = msg.body
        if isinstance(body, PartReserve):
            return self._on_reserve(msg, body, now)
        if isinstance(body, PartRelease):
            r = self.stores.reservations.get(f"{msg.sender}|{body.job}")
            if r is None:
                self.ignored += 1
                return []
            self.stores.drop(r.key)
            return [self._log("part_released", r, now)] + self._feed(r.part, now)
        if isinstance(body, PartConsumed):
            part = body.serial.rsplit("#s", 1)[0]
            ready = self.stores.bins[part].arrives_at.get(body.serial, now) \
                if part in self.stores.bins else now
            r = self.stores.consume(msg.sender, body.job, body.serial)
            if r is None:                            # a repeat, or not this machine's
                self.ignored += 1
                return []
            return [self._log("part_consumed", r, now, ready)]
        if isinstance(body, PartExpedite):
            return self._on_expedite(msg, body, now)
        self.ignored += 1
        return []

    def _on_reserve(self, msg: Message, body: PartReserve, now: float) -> list[Action]:
        if not body.part or body.hold_s < 0 or not math.isfinite(body.need_by_at):
            self.ignored += 1
            return []
        held = self.stores.reservations.get(f"{msg.sender}|{body.job}")
        if held is not None and held.part != body.part:     # one job, one part
            self.ignored += 1
            return []
        r, new, placed, moved = self.stores.reserve(msg.sender, body, now)
        out: list[Action] = [self._placed(o) for o in placed]
        out += [SetTimer(f"deliver:{o.id}", o.due_at) for o in placed]
        if new:
            out += self._held(r, now)
        if moved is not None:                        # its shelf unit went to a need due now
            out.append(Log("part_bumped", {"agent": self.id, "machine": moved.machine,
                                           "job": moved.job, "part": moved.part,
                                           "serial": moved.serial, "for": r.key}))
            out += self._held(moved, now) + [self._answer(msg, moved, "")]
        return out + [self._answer(msg, r)] + self._arm_expiry()

    def _held(self, r: Reservation, now: float) -> list[Action]:
        out: list[Action] = []
        if self.stores.ready_at(r) > now + 1e-9:
            out.append(Log("part_stock_out", {"agent": self.id, "part": r.part,
                                              "machine": r.machine, "job": r.job}))
        return out + [self._log("part_held", r, now)]

    def _on_expedite(self, msg: Message, body: PartExpedite, now: float) -> list[Action]:
        r = self.stores.reservations.get(f"{msg.sender}|{body.job}")
        if r is None:
            self.ignored += 1
            return []
        out: list[Action] = []
        o = self.stores.expedite(r, now)
        if o is not None:
            cost = self.stores.bin(r.part).rule.expedite_cost
            out += [Log("part_expedited", {"agent": self.id, "part": r.part, "order": o.id,
                                           "machine": r.machine, "job": r.job,
                                           "due_at": round(o.due_at, 6), "cost": cost}),
                    SetTimer(f"deliver:{o.id}", o.due_at)]
        return out + [self._answer(msg, r)]

    def _answer(self, msg: Message, r: Reservation, conv: str | None = None) -> Send:
        ready = self.stores.ready_at(r)
        body: PartReserved | PartUnavailable = (
            PartReserved(r.job, r.part, r.serial, ready, r.expires_at)
            if ready <= r.need_by_at + 1e-9 else
            PartUnavailable(r.job, r.part, r.serial, ready, r.expires_at))
        return Send(r.machine, body, msg.conv if conv is None else conv)

    def on_timer(self, key: str, now: float) -> list[Action]:
        if key.startswith("deliver:"):
            oid = key[8:]
            part = oid.rsplit("/o", 1)[0]
            b = self.stores.bins.get(part)
            o = b.orders.get(oid) if b is not None else None
            if b is None or o is None or now < o.due_at - 1e-9:
                return []                            # delivered, or brought forward
            del b.orders[oid]
            return [Log("part_delivered", {"agent": self.id, "part": part, "order": oid,
                                           "qty": len(o.serials),
                                           "on_shelf": b.on_shelf(now)})] \
                + self._feed(part, now)
        if key == "expiry":
            self._expiry_at = None
            out: list[Action] = []
            gone = self.stores.expire(now)
            for r in gone:
                out.append(self._log("part_reservation_expired", r, now))
            for part in sorted({r.part for r in gone}):
                out += self._feed(part, now)
            return out + self._arm_expiry()
        return []

    def _feed(self, part: str, now: float) -> list[Action]:
        """A unit freed on the shelf goes to the earliest repair waiting for one on order
        (:meth:`Stores.feed`); its machine is told, as for a bump: an answer with the new
        serial, ready now (agents/maintenance/window.py asks the crew at once)."""
        out: list[Action] = []
        for r, was in self.stores.feed(part, now):
            out.append(Log("part_reassigned", {"agent": self.id, "machine": r.machine,
                                               "job": r.job, "part": r.part,
                                               "serial": r.serial, "was": was}))
            out += [self._log("part_held", r, now),
                    Send(r.machine, PartReserved(r.job, r.part, r.serial,
                                                 self.stores.ready_at(r), r.expires_at), "")]
        return out + (self._arm_expiry() if out else [])

    def _placed(self, o: SupplierOrder) -> Log:
        return Log("part_order_placed", {"agent": self.id, "part": o.part, "order": o.id,
                                         "qty": len(o.serials), "due_at": round(o.due_at, 6)})

    def _log(self, event: str, r: Reservation, now: float, ready_at: float | None = None
             ) -> Log:
        b = self.stores.bin(r.part)
        ready = b.arrives_at.get(r.serial, now) if ready_at is None else ready_at
        return Log(event, {"agent": self.id, "machine": r.machine, "job": r.job,
                           "part": r.part, "serial": r.serial, "ready_at": round(ready, 6),
                           "expires_at": round(r.expires_at, 6),
                           "on_shelf": b.on_shelf(now)})

    def _arm_expiry(self) -> list[Action]:
        nxt = self.stores.next_expiry_at()
        if nxt is None or (self._expiry_at is not None and self._expiry_at <= nxt):
            return []
        self._expiry_at = nxt
        return [SetTimer("expiry", nxt)]
