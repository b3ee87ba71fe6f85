"""SQLite persistence for the replay guard (WAL mode, one small table)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from .untrusted import state_file


class SqliteReplayStore:
    """Stores ``sender -> (epoch, hw)``; survives ``kill -9`` of the host."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with state_file(self.path, "replay store"):
            self._db = sqlite3.connect(self.path, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS replay (sender TEXT PRIMARY KEY, "
                             "epoch INTEGER NOT NULL, hw INTEGER NOT NULL)")

    def load(self) -> dict[str, tuple[int, int]]:
        with state_file(self.path, "replay store"):
            return {str(s): (int(e), int(h)) for s, e, h in self._db.execute(
                "SELECT sender, epoch, hw FROM replay")}

    def save(self, entries: dict[str, tuple[int, int]]) -> None:
        self._db.execute("BEGIN")
        try:
            self._db.executemany("INSERT OR REPLACE INTO replay VALUES (?, ?, ?)",
                                 [(s, e, h) for s, (e, h) in entries.items()])
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def close(self) -> None:
        self._db.close()
