"""The fence's memory on disk: SQLite in WAL mode, one transaction per fact.

The plant process (``autocell plant``) keeps it in ``STATE/sim.sqlite``, beside
its boot counter, so a restarted gateway still refuses a task completed before
the restart (docs/PROTOCOL.md §13.5).  Like the input journal
(agents/runtime/journal.py) it survives ``kill -9`` of the process: WAL with
``synchronous=NORMAL`` loses nothing a committed transaction wrote unless the
machine itself loses power.  ``autocell up`` clears it with the rest of a
run's state (``sim.sqlite*``).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from security.untrusted import state_file

from .fence import KINDS, Change

__all__ = ["SqliteFenceStore"]


class SqliteFenceStore:
    """A :class:`~sim_bridge.fence.FenceStore` in table ``fence`` of an SQLite file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        with state_file(self.path, "plant's fence store"):
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS fence (kind TEXT NOT NULL, task TEXT "
                             "NOT NULL, value TEXT NOT NULL, PRIMARY KEY (kind, task))")

    def load(self) -> dict[str, dict[str, Any]]:
        tables: dict[str, dict[str, Any]] = {k: {} for k in KINDS}
        with state_file(self.path, "plant's fence store"):
            for kind, task, value in self._db.execute("SELECT kind, task, value FROM fence"):
                if kind in tables:
                    tables[kind][task] = json.loads(value)
        return tables

    def apply(self, changes: list[Change]) -> None:
        if not changes:
            return
        with self._db:                     # one transaction: a fact is stored whole or not
            self._db.execute("BEGIN")
            for kind, task, value in changes:
                if value is None:
                    self._db.execute("DELETE FROM fence WHERE kind = ? AND task = ?",
                                     (kind, task))
                else:
                    self._db.execute("INSERT OR REPLACE INTO fence VALUES (?, ?, ?)",
                                     (kind, task, json.dumps(value)))

    def close(self) -> None:
        self._db.close()
