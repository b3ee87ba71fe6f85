"""The power budget as a lease table: pure, no clock, no messages.

Theory of operation
-------------------
The cell may draw at most ``cap_kw``.  Every machine draws at least its idle
power whatever it does (a sleeping one less, a broken one as much), so the
manager counts the sum of idle powers as always drawn and shares only the rest,
the **budget**: ``budget_kw = cap_kw − Σ idle_kw``.  A machine that wants to
start an operation asks for the operation's power *above idle* (the most it
draws in setup, busy or waking up) as a **lease**:

* a lease is keyed by ``task@epoch#attempt`` — the award epoch of the contract
  net, and the machine's count of its requests for that task — so a duplicated
  or resent request is the same lease, granted once (the answer is sent again),
  while a machine that released a lease and wants the task again asks anew;
* a lease lives ``hold_s`` (the operation's duration plus a grace) from the
  grant and then **expires**: the budget of a machine that crashed or whose
  release was lost comes back without anybody's help;
* a release frees it at once and is remembered, so a late duplicate of the
  request cannot grant the lease again;
* requests that do not fit wait in arrival order; when budget frees up, the
  first waiting requests that fit are granted (a small one may pass a large one
  that does not fit yet — the cap is what matters, not strict turns);
* two supervisor decisions of the cap escalation (agents/energy/cap_escalation.py)
  change the table: :meth:`PowerBudget.raise_by` lifts the budget above the cap
  for a while (:meth:`PowerBudget.restore` lowers it again; leases granted above
  it run out on their own), and :meth:`PowerBudget.put_first` makes an order's
  requests go before every other waiting one — while one of them does not fit,
  nobody else is granted, so the freed power accumulates for it.

Granting only when ``in_use_kw + kw <= budget_kw`` keeps the cell's power under
the cap at every instant, provided a machine never draws more than it leased:
that is the machine's half of the protocol (agents/machine.py).  A request
larger than the whole budget can never be granted; the cell file is refused
before it runs (agents/cell/model.py), so such a request is a bug and is held
forever rather than granted.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

__all__ = ["EPS_KW", "Lease", "PowerBudget", "lease_key", "order_of"]

EPS_KW = 1e-9
#: how many released keys are remembered (a duplicate older than this is long expired)
REMEMBER_RELEASED = 4096


def lease_key(task: str, epoch: int, attempt: int = 0) -> str:
    return f"{task}@{epoch}#{attempt}"


def order_of(task: str) -> str:
    """The order a task belongs to: task ids are ``ORDER/...`` (agents/order/lots.py)."""
    return task.partition("/")[0]


@dataclass(frozen=True, slots=True)
class Lease:
    """Power above idle granted to ``holder`` for one operation until ``expires_at``."""

    key: str
    holder: str
    task: str
    epoch: int
    kw: float
    expires_at: float
    attempt: int = 0


@dataclass(frozen=True, slots=True)
class _Waiting:
    key: str
    holder: str
    task: str
    epoch: int
    attempt: int
    kw: float
    hold_s: float
    since_at: float


class PowerBudget:
    """The lease table of one cell; see the module docstring."""

    def __init__(self, budget_kw: float) -> None:
        if budget_kw < 0:
            raise ValueError(f"the power budget is negative ({budget_kw} kW): the cap is below "
                             "the idle power of the machines")
        self.budget_kw = budget_kw
        self.base_kw = budget_kw                    # the budget under the contracted cap
        self.first: set[str] = set()                # orders whose requests go first
        self.leases: dict[str, Lease] = {}
        self.waiting: OrderedDict[str, _Waiting] = OrderedDict()
        self.released: OrderedDict[str, None] = OrderedDict()

    @property
    def in_use_kw(self) -> float:
        return sum(lease.kw for lease in self.leases.values())

    @property
    def headroom_kw(self) -> float:
        return self.budget_kw - self.in_use_kw

    def request(self, holder: str, task: str, epoch: int, kw: float, hold_s: float,
                now: float, attempt: int = 0) -> Lease | None:
        """The lease for ``task@epoch#attempt``: granted now, already granted (the same
        lease), or None — waiting, or released before (a late duplicate)."""
        key = lease_key(task, epoch, attempt)
        if key in self.leases:
            return self.leases[key]
        if key in self.released or key in self.waiting:
            return None
        self.waiting[key] = _Waiting(key, holder, task, epoch, attempt, max(0.0, kw), hold_s,
                                     now)
        granted = self._grant_waiting(now)
        return next((g for g in granted if g.key == key), None)

    def release(self, task: str, epoch: int, now: float, attempt: int = 0) -> list[Lease]:
        """Free ``task@epoch#attempt`` (granted or waiting); the waiting leases this grants."""
        key = lease_key(task, epoch, attempt)
        self.waiting.pop(key, None)
        if self.leases.pop(key, None) is None and key in self.released:
            return []
        self.released[key] = None
        while len(self.released) > REMEMBER_RELEASED:
            self.released.popitem(last=False)
        return self._grant_waiting(now)

    def expire(self, now: float) -> tuple[list[Lease], list[Lease]]:
        """Reclaim every lease past its expiry: ``(expired, granted in their place)``."""
        gone = [lease for lease in self.leases.values() if lease.expires_at <= now]
        for lease in gone:
            del self.leases[lease.key]
        return gone, (self._grant_waiting(now) if gone else [])

    def next_expiry_at(self) -> float | None:
        return min((lease.expires_at for lease in self.leases.values()), default=None)

    def raise_by(self, extra_kw: float, now: float, order: str = "") -> list[Lease]:
        """An approved raise: ``extra_kw`` above the cap's budget; the leases it grants,
        ``order``'s first (the raise is for it)."""
        self.budget_kw = self.base_kw + max(0.0, extra_kw)
        return self._grant_waiting(now, {order} if order else set())

    def restore(self) -> None:
        """The raise is over: no new lease above the cap (those granted run out)."""
        self.budget_kw = self.base_kw

    def put_first(self, order: str, now: float) -> list[Lease]:
        """``order``'s requests (tasks ``order/...``) go before every other waiting one."""
        self.first.add(order)
        return self._grant_waiting(now)

    def _grant_waiting(self, now: float, also_first: set[str] | None = None) -> list[Lease]:
        granted = []
        free = self.headroom_kw
        items = list(self.waiting.items())
        first = self.first | also_first if also_first else self.first
        if first:                                       # a supervisor's decision
            ahead = [kw for kw in items if order_of(kw[1].task) in first]
            items = ahead + [kw for kw in items if order_of(kw[1].task) not in first]
        for key, w in items:
            if first and order_of(w.task) in first and w.kw > free + EPS_KW:
                break                                   # keep the freed power for it
            if w.kw <= free + EPS_KW:
                del self.waiting[key]
                lease = Lease(key, w.holder, w.task, w.epoch, w.kw, now + w.hold_s, w.attempt)
                self.leases[key] = lease
                free -= w.kw
                granted.append(lease)
        return granted
