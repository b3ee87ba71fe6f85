"""The console bound to the real escalation store (``agents.escalation.store``).

:class:`StoreBackend` is the :class:`~ops.console.backend.EscalationBackend`
of ``autocell console CELL --db FILE``.  Every action goes through
:class:`~agents.escalation.store.EscalationStore` — so through the
life-cycle table and the hash-chained audit log, with the signed-in user as
the actor — and a decision is queued in the store's outbox, from which the
console agent of the running cell sends the signed ``decision`` naming the
user.

What it adds to the store:

* **errors in the console's terms** — the store's ``UnknownEscalation``
  becomes the console's ``EscalationNotFound`` (404), every other refusal of the life cycle
  (illegal transition, unknown option, shelve rules) :class:`IllegalAction`
  (409), so no store error reaches the page as a traceback;
* **the file may come later** — the console can be started before the run
  that writes the store: until the file exists the list is empty and no
  file is created (``autocell run --escalations-db`` wants a new file); a
  file replaced under it (``autocell up`` moves an earlier run's store
  aside) is reopened;
* **the cell's clock** — ``now()`` is the cell time the running cell wrote
  last (``meta.cell_now``), the time base of the deadlines; the store's own
  ``now`` is used for every action, so audit times are cell times (and each
  person's action carries its wall time, ``details.wall_at``); the running
  cell's heartbeat (:meth:`StoreBackend.liveness`) tells the pages whether
  anyone is still at the other end;
* **what the screens read** — records as mappings with ``created_at``,
  ``deadline_at`` (when the safe default applies) and the context facts
  (task, due date, repair estimate …) as readable lines (``context.facts``).

One SQLite connection, used under a lock: the app calls it from the event
loop and the thread pool alike.
"""

from __future__ import annotations

import builtins
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from agents.escalation.lifecycle import EscalationError, Record
from agents.escalation.store import EscalationStore, UnknownEscalation
from ops.console.backend import EscalationNotFound, IllegalAction, fact
from security.errors import DamagedState

__all__ = ["StoreBackend", "shown"]

Listener = Callable[[str | None], None]


def shown(rec: Record) -> dict[str, Any]:
    """A store record as the console's screens read it (see :mod:`ops.console.views`)."""
    data = rec.to_json()
    context = dict(rec.context)
    context["facts"] = [fact(k, v) for k, v in sorted(context.items())
                        if k != "recent_events"]
    context.setdefault("order", rec.order)
    context.setdefault("resource", rec.resource)
    data.update(context=context, created_at=rec.raised_at, deadline_at=rec.final_deadline_at)
    return data


class StoreBackend:
    """The escalation store of a cell, as the console's backend."""

    def __init__(self, path: str | Path, *, wall_clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self._wall = wall_clock   # a person's action is audited with its wall time too
        self._store: EscalationStore | None = None
        self._ino: int | None = None
        self._lock = threading.RLock()
        self._listeners: list[Listener] = []

    def _open(self) -> EscalationStore | None:
        try:
            ino: int | None = self.path.stat().st_ino
        except OSError:
            ino = None
        if self._store is not None and ino != self._ino:
            # replaced under us (`autocell up` moves an earlier run's store aside): follow
            self._store.close()
            self._store = None
        if self._store is None and ino is not None:
            self._store = EscalationStore(self.path)
            self._ino = ino
        return self._store

    def _need(self) -> EscalationStore:
        store = self._open()
        if store is None:
            raise EscalationNotFound(f"no escalation store at {self.path} yet")
        return store

    def close(self) -> None:
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None

    # -- reading ----------------------------------------------------------------------------
    def now(self) -> float:
        with self._lock:
            store = self._open()
            return store.cell_now() if store is not None else 0.0

    @property
    def max_shelve_s(self) -> float:
        with self._lock:
            store = self._open()
            if store is None:
                return 3600.0
            return store.refresh().max_shelve_s

    def liveness(self) -> Mapping[str, float] | None:
        """The running cell's last heartbeat (``{}``: none yet); None while there is no
        store file (see :func:`ops.console.views.link_status`)."""
        with self._lock:
            store = self._open()
            return None if store is None else store.liveness()

    def refused_count(self) -> int:
        """Actions the CLI twin refused for want of authentication (the store's count)."""
        with self._lock:
            store = self._open()
            return 0 if store is None else store.refused_count()

    def flood(self) -> bool:
        with self._lock:
            store = self._open()
            return bool(store and store.flood())

    def list(self) -> list[dict[str, Any]]:
        with self._lock:
            store = self._open()
            return [] if store is None else [shown(r) for r in store.list()]

    def damaged(self) -> builtins.list[str]:
        """Ids of the records the last :meth:`list` left out: they no longer decode."""
        with self._lock:
            store = self._open()
            return [] if store is None else list(store.damaged)

    def get(self, escalation_id: str) -> dict[str, Any]:
        with self._lock:
            store = self._need()     # a damaged file propagates: the page says so (503)
            try:
                return shown(store.get(escalation_id))
            except (UnknownEscalation, DamagedState) as exc:   # one record: not found
                raise EscalationNotFound(str(exc)) from None

    def audit(self) -> builtins.list[Any]:
        with self._lock:
            store = self._open()
            return [] if store is None else store.audit()

    # -- acting (the signed-in user is the actor; times are the cell's) ----------------------
    def _act(self, escalation_id: str, do: Callable[[EscalationStore], Record]) -> dict[str, Any]:
        with self._lock:
            store = self._need()     # a damaged file propagates: the page says so (503)
            store.refresh()
            try:
                rec = do(store)
            except (UnknownEscalation, DamagedState) as exc:
                raise EscalationNotFound(str(exc)) from None
            except EscalationError as exc:
                raise IllegalAction(str(exc)) from None
        self._notify(escalation_id)
        return shown(rec)

    def acknowledge(self, escalation_id: str, user: str, now: float | None = None
                    ) -> dict[str, Any]:
        return self._act(escalation_id, lambda s: s.acknowledge(escalation_id, user,
                                                                wall_at=self._wall()))

    def shelve(self, escalation_id: str, user: str, reason: str, duration_s: float,
               now: float | None = None) -> dict[str, Any]:
        return self._act(escalation_id,
                         lambda s: s.shelve(escalation_id, user, reason, duration_s,
                                            wall_at=self._wall()))

    def decide(self, escalation_id: str, user: str, option_id: str, reason: str = "",
               now: float | None = None) -> dict[str, Any]:
        """Recorded with the user's name and queued in the outbox: the console agent of the
        running cell sends the signed ``decision`` on its next poll."""
        return self._act(escalation_id,
                         lambda s: s.decide(escalation_id, user, option_id, reason,
                                            wall_at=self._wall()))

    # -- live updates ------------------------------------------------------------------------
    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Changes made through this backend; the app also polls a digest of :meth:`list`
        for changes the running cell writes to the file."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)
        return unsubscribe

    def _notify(self, escalation_id: str) -> None:
        for listener in list(self._listeners):
            listener(escalation_id)
