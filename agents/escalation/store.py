"""The escalation store: SQLite (WAL), everything survives a restart, with a hash-chained audit log.

Theory of operation
-------------------
One SQLite file holds three tables:

* ``escalations`` — the current :class:`~agents.escalation.lifecycle.Record` of
  each escalation (JSON), with its priority and state as columns to sort by;
* ``audit`` — an append-only log: ``seq, at, actor, action, escalation,
  details, prev_hash, hash``, where ``hash`` is SHA-256 over the canonical
  JSON of every other field (sorted keys, no spaces, UTF-8) and
  ``prev_hash`` is the previous entry's hash (64 zeros for the first).
  Editing an entry breaks its hash, removing or reordering entries breaks
  the chain; :func:`verify_chain` finds the first bad entry.  The chain's
  head (last seq and hash) is also kept in ``meta``, so cutting entries off
  the end is caught too (an attacker who can rewrite the whole file can
  rewrite the head as well: the chain proves integrity, not authorship —
  the signed ``decision`` messages do that);
* ``outbox`` — decisions people took (through the CLI twin or the web
  console) that the console agent has not yet sent as signed ``decision``
  messages; a running console agent polls it.

Every mutation and its audit entry are one transaction.  The life-cycle
rules are those of :mod:`agents.escalation.lifecycle`; this module only
stores.  Times are the cell's clock (``now`` arguments); a store used
without ``now`` (the CLI twin) takes the cell time the console agent last
wrote (``meta.cell_now``).
"""

from __future__ import annotations

import builtins
import hashlib
import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import lifecycle as lc
from .lifecycle import Deadlines, EscalationError, Record

GENESIS = "0" * 64

_SCHEMA = """
CREATE TABLE IF NOT EXISTS escalations (
    id TEXT PRIMARY KEY, priority INTEGER NOT NULL, state TEXT NOT NULL,
    raised_at REAL NOT NULL, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY, at REAL NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
    escalation TEXT NOT NULL, details TEXT NOT NULL, prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, escalation TEXT NOT NULL, to_agent TEXT NOT NULL,
    option TEXT NOT NULL, user TEXT NOT NULL, reason TEXT NOT NULL, sent INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class UnknownEscalation(EscalationError):
    """No escalation with this id in the store."""


@dataclass(frozen=True, slots=True)
class AuditEntry:
    seq: int
    at: float
    actor: str
    action: str
    escalation: str
    details: dict[str, Any]
    prev_hash: str
    hash: str

    def to_json(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self.__dataclass_fields__}


def canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def entry_hash(seq: int, at: float, actor: str, action: str, escalation: str,
               details: dict[str, Any], prev_hash: str) -> str:
    return hashlib.sha256(canonical({
        "seq": seq, "at": at, "actor": actor, "action": action, "escalation": escalation,
        "details": details, "prev_hash": prev_hash})).hexdigest()


@dataclass(frozen=True, slots=True)
class ChainReport:
    ok: bool
    entries: int
    bad_seq: int | None = None
    problem: str = ""
    head: str = GENESIS


def verify_chain(rows: list[tuple[Any, ...]], head: tuple[int, str] | None) -> ChainReport:
    """Check ``(seq, at, actor, action, escalation, details_json, prev_hash, hash)`` rows in
    storage order; ``head`` is the (seq, hash) the store recorded last."""
    prev, expect_seq = GENESIS, 1
    for seq, at, actor, action, esc, details, prev_hash, h in rows:
        if seq != expect_seq:
            return ChainReport(False, expect_seq - 1, seq,
                               f"entry {seq} where entry {expect_seq} belongs (removed or "
                               "reordered entries)")
        if prev_hash != prev:
            return ChainReport(False, seq - 1, seq, f"entry {seq} does not follow entry "
                               f"{seq - 1}: prev_hash differs (removed or reordered entries)")
        try:
            data = json.loads(details)
        except ValueError:
            return ChainReport(False, seq - 1, seq, f"entry {seq}: details are not JSON (edited)")
        if entry_hash(seq, at, actor, action, esc, data, prev_hash) != h:
            return ChainReport(False, seq - 1, seq, f"entry {seq}: hash does not match its "
                               "content (edited)")
        prev, expect_seq = h, seq + 1
    n = expect_seq - 1
    if head is not None and head != (n, prev):
        return ChainReport(False, n, max(n, head[0]),
                           f"the chain ends at entry {n} but the store's head is entry "
                           f"{head[0]} (entries removed from the end, or the head edited)")
    return ChainReport(True, n, head=prev)


class EscalationStore:
    """Escalations, their audit chain and the decision outbox in one SQLite file.

    ``path`` may be ``":memory:"`` (virtual-time runs without a file).  The API the
    web console calls: :meth:`list`, :meth:`get`, :meth:`acknowledge`, :meth:`shelve`,
    :meth:`decide`, :meth:`audit`; each mutation appends to the audit chain.
    """

    def __init__(self, path: str | Path, deadlines: Deadlines | None = None) -> None:
        self.path = str(path)  # its directory must exist: a store creates none (issue 20)
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA busy_timeout=5000")
        self.db.executescript(_SCHEMA)
        stored = self._meta("deadlines")
        if deadlines is not None:
            self._set_meta("deadlines", json.dumps(
                [deadlines.response_s, deadlines.reescalate_every_s, deadlines.final_s,
                 deadlines.max_shelve_s]))
            self.deadlines = deadlines
        elif stored is not None:
            self.deadlines = Deadlines(*json.loads(stored))
        else:
            self.deadlines = Deadlines()
        self.listeners: list[Callable[[Record], None]] = []

    def close(self) -> None:
        self.db.close()

    def refresh(self) -> Deadlines:
        """Re-read the policy's deadlines (another process — the running cell — may have
        written them after this one opened the file)."""
        stored = self._meta("deadlines")
        if stored is not None:
            self.deadlines = Deadlines(*json.loads(stored))
        return self.deadlines

    # -- meta ---------------------------------------------------------------------------------
    def _meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else row[0]

    def _set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE "
                        "SET value=excluded.value", (key, value))

    def cell_now(self) -> float:
        """The cell time the console agent wrote last (0 if none)."""
        v = self._meta("cell_now")
        return float(v) if v is not None else 0.0

    def set_cell_now(self, now: float) -> None:
        self._set_meta("cell_now", repr(float(now)))

    def audit_head(self) -> str:
        """``SEQ:HASH`` of the last audit entry ("" for none): changes with every mutation."""
        return self._meta("audit_head") or ""

    def flood(self) -> bool:
        return self._meta("flood") == "1"

    def set_flood(self, on: bool) -> None:
        self._set_meta("flood", "1" if on else "0")

    # -- reading ----------------------------------------------------------------------------------
    def get(self, escalation_id: str) -> Record:
        row = self.db.execute("SELECT data FROM escalations WHERE id=?",
                              (escalation_id,)).fetchone()
        if row is None:
            raise UnknownEscalation(f"no escalation {escalation_id!r} in {self.path}")
        return Record.from_json(json.loads(row[0]))

    def has(self, escalation_id: str) -> bool:
        return self.db.execute("SELECT 1 FROM escalations WHERE id=?",
                               (escalation_id,)).fetchone() is not None

    def list(self, *, open_only: bool = False) -> list[Record]:
        """Sorted by priority (1 first), then state (unacknowledged first), then age."""
        rows = [Record.from_json(json.loads(d))
                for (d,) in self.db.execute("SELECT data FROM escalations")]
        if open_only:
            rows = [r for r in rows if r.open]
        return sorted(rows, key=lambda r: (r.priority, lc.STATE_RANK[r.state], r.raised_at, r.id))

    def groups(self) -> dict[str, builtins.list[str]]:
        """Open escalations grouped by cause and resource: group key -> ids."""
        out: dict[str, list[str]] = {}
        for r in self.list(open_only=True):
            out.setdefault(r.group, []).append(r.id)
        return out

    def audit(self) -> builtins.list[AuditEntry]:
        return [AuditEntry(s, a, ac, act, e, json.loads(d), p, h)
                for s, a, ac, act, e, d, p, h in self.db.execute(
                    "SELECT seq, at, actor, action, escalation, details, prev_hash, hash "
                    "FROM audit ORDER BY rowid")]

    def verify(self) -> ChainReport:
        rows = list(self.db.execute("SELECT seq, at, actor, action, escalation, details, "
                                    "prev_hash, hash FROM audit ORDER BY rowid"))
        head = self._meta("audit_head")
        parsed = None
        if head is not None:
            seq, _, h = head.partition(":")
            parsed = (int(seq), h)
        return verify_chain(rows, parsed)

    # -- writing --------------------------------------------------------------------------------
    def put(self, rec: Record, *, actor: str, action: str, now: float,
            details: dict[str, Any] | None = None, send: tuple[str, str, str] | None = None
            ) -> Record:
        """Store ``rec`` and append one audit entry, in one transaction; ``send`` =
        (option, user, reason) also queues a decision for the console agent to send."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            if send is not None:
                self.db.execute("INSERT INTO outbox(escalation, to_agent, option, user, reason, "
                                "sent) VALUES(?,?,?,?,?,0)", (rec.id, rec.raised_by, *send))
            self.db.execute(
                "INSERT INTO escalations(id, priority, state, raised_at, data) VALUES(?,?,?,?,?) "
                "ON CONFLICT(id) DO UPDATE SET priority=excluded.priority, state=excluded.state, "
                "data=excluded.data",
                (rec.id, rec.priority, rec.state, rec.raised_at, json.dumps(rec.to_json())))
            self._append(now, actor, action, rec.id, details or {})
            self.set_cell_now(now)
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        for listener in self.listeners:
            listener(rec)
        return rec

    def _append(self, at: float, actor: str, action: str, esc: str,
                details: dict[str, Any]) -> None:
        last = self.db.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        seq, prev = (last[0] + 1, last[1]) if last else (1, GENESIS)
        at = float(at)
        h = entry_hash(seq, at, actor, action, esc, details, prev)
        self.db.execute("INSERT INTO audit(seq, at, actor, action, escalation, details, "
                        "prev_hash, hash) VALUES(?,?,?,?,?,?,?,?)",
                        (seq, at, actor, action, esc, canonical(details).decode(), prev, h))
        self._set_meta("audit_head", f"{seq}:{h}")

    # -- what people do (the console's API) --------------------------------------------------------
    def _now(self, now: float | None) -> float:
        return self.cell_now() if now is None else now

    def acknowledge(self, escalation_id: str, user: str, now: float | None = None) -> Record:
        t = self._now(now)
        rec = lc.acknowledge(self.get(escalation_id), user, t)
        return self.put(rec, actor=user, action="acknowledge", now=t,
                        details={"state": rec.state})

    def shelve(self, escalation_id: str, user: str, reason: str, duration_s: float,
               now: float | None = None) -> Record:
        t = self._now(now)
        rec = lc.shelve(self.get(escalation_id), user, reason, duration_s, t, self.deadlines)
        return self.put(rec, actor=user, action="shelve", now=t,
                        details={"reason": reason, "duration_s": duration_s,
                                 "until_at": rec.shelved_until_at})

    def decide(self, escalation_id: str, user: str, option_id: str, reason: str = "",
               now: float | None = None) -> Record:
        """Record a person's decision and queue the signed ``decision`` message."""
        t = self._now(now)
        before = self.get(escalation_id)
        rec = lc.decide(before, user, option_id, reason, t)
        return self.put(rec, actor=user, action="decide", now=t, send=(option_id, user, reason),
                        details={"option": option_id, "reason": reason,
                                 "label": (before.option(option_id) or lc.Option("", "", "")).label})

    # -- the outbox ---------------------------------------------------------------------------------
    def pending_decisions(self) -> builtins.list[tuple[int, str, str, str, str, str]]:
        """(seq, escalation, to_agent, option, user, reason) not yet sent."""
        return list(self.db.execute("SELECT seq, escalation, to_agent, option, user, reason "
                                    "FROM outbox WHERE sent=0 ORDER BY seq"))

    def mark_sent(self, seq: int) -> None:
        self.db.execute("UPDATE outbox SET sent=1 WHERE seq=?", (seq,))
