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
  the chain; :func:`verify_chain` finds the first bad entry.  The end of the
  chain is anchored twice, so cutting entries off the end is caught: the
  head (last seq and hash) is kept in ``meta`` — a chain with entries and
  no head is broken — and every escalation row carries the seq and hash of
  the audit entry that wrote it (``audit_seq``, ``audit_hash``), so removing
  the last entries *and* the head still leaves rows pointing past the end.
  Every entry's escalation must have a row, too.  What it cannot catch: an
  attacker who rewrites the whole file consistently (every hash recomputed,
  rows rolled back) — the chain proves integrity, not authorship; the
  signed ``decision`` messages do that (docs/escalation.md, "What audit
  verify proves");
* ``refused`` — actions refused because the person could not be authenticated
  (the CLI twin: a wrong password, an unknown name, a viewer): wall time, cell
  time, the name claimed, what was tried and why it was refused.  They are
  not audit entries — the audit log names verified users only — but they are
  kept and counted (:meth:`EscalationStore.refused_count`);
* ``outbox`` — decisions people took (through the CLI twin or the web
  console) that the console agent has not yet sent as signed ``decision``
  messages; a running console agent polls it.

Every mutation and its audit entry are one transaction.  The life-cycle
rules are those of :mod:`agents.escalation.lifecycle`; this module only
stores.  Times are the cell's clock (``now`` arguments); a store used
without ``now`` (the CLI twin) takes the cell time the console agent last
wrote (``meta.cell_now``).  A person's action also carries the wall-clock
time it was taken (``details.wall_at``, inside the hash), given by the caller
— the web console or the CLI twin — since this module reads no clock; a
store opened with a ``wall_clock`` (the console agent in wall time) stamps
every entry so.

The running cell's **heartbeat** (:meth:`EscalationStore.heartbeat`) writes
the cell time together with the wall time it was written and the pacing
speed; from these the console tells a live cell from a lost one and maps
cell seconds to a date and time.  A person's action writes neither (a CLI
call must not look like a live cell).
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

from security.errors import ConfigurationError
from security.untrusted import shown, state_file

from . import lifecycle as lc
from .lifecycle import Deadlines, EscalationError, Record

GENESIS = "0" * 64

_SCHEMA = """
CREATE TABLE IF NOT EXISTS escalations (
    id TEXT PRIMARY KEY, priority INTEGER NOT NULL, state TEXT NOT NULL,
    raised_at REAL NOT NULL, data TEXT NOT NULL, audit_seq INTEGER, audit_hash TEXT);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY, at REAL NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
    escalation TEXT NOT NULL, details TEXT NOT NULL, prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, escalation TEXT NOT NULL, to_agent TEXT NOT NULL,
    option TEXT NOT NULL, user TEXT NOT NULL, reason TEXT NOT NULL, sent INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS refused (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, wall_at REAL NOT NULL, cell_at REAL NOT NULL,
    claimed TEXT NOT NULL, action TEXT NOT NULL, escalation TEXT NOT NULL, why TEXT NOT NULL);
"""


STORE_TABLES = frozenset({"escalations", "audit", "outbox", "meta"})
_ANCHOR_COLUMNS = (("audit_seq", "INTEGER"), ("audit_hash", "TEXT"))


class UnknownEscalation(EscalationError):
    """No escalation with this id in the store."""


class NotAnEscalationStore(ConfigurationError):
    """The file is not an escalation store (another database, garbage, damaged)."""


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


def verify_chain(rows: list[tuple[Any, ...]], head: tuple[int, str] | None,
                 anchors: list[tuple[str, int | None, str | None]] | None = None,
                 head_required: bool = False) -> ChainReport:
    """Check ``(seq, at, actor, action, escalation, details_json, prev_hash, hash)`` rows in
    storage order; ``head`` is the (seq, hash) the store recorded last; ``anchors`` are the
    escalation rows' ``(id, audit_seq, audit_hash)``.  With ``head_required`` a chain
    with entries but no head is broken (the head row deleted with the last entries)."""
    prev, expect_seq = GENESIS, 1
    hashes: dict[int, tuple[str, str]] = {}
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
            digest = entry_hash(seq, at, actor, action, esc, data, prev_hash)
        except (ValueError, TypeError):  # details not JSON; a field a blob
            return ChainReport(False, seq - 1, seq, f"entry {seq}: details are not JSON or a "
                               "field has the wrong type (edited)")
        if digest != h:
            return ChainReport(False, seq - 1, seq, f"entry {seq}: hash does not match its "
                               "content (edited)")
        prev, expect_seq = h, seq + 1
        hashes[seq] = (h, esc)
    n = expect_seq - 1
    if head is not None and head != (n, prev):
        return ChainReport(False, n, max(n, head[0]),
                           f"the chain ends at entry {n} but the store's head is entry "
                           f"{head[0]} (entries removed from the end, or the head edited)")
    if head is None and head_required and n > 0:
        return ChainReport(False, n, n + 1, f"the chain has {n} entries but the store has no "
                           "head (the head deleted, with entries removed from the end?)")
    for esc_id, seq, h in anchors or []:
        if seq is not None and hashes.get(seq) != (h, esc_id):
            return ChainReport(False, n, seq if seq in hashes else max(n + 1, seq),
                               f"escalation {esc_id!r} was last written by entry {seq}, which "
                               "the chain does not hold as written (entries removed from the "
                               "end, or edited)")
    if anchors is not None:
        held = {esc_id for esc_id, _, _ in anchors}
        gone = sorted({esc for _, esc in hashes.values()} - held)
        if gone:
            return ChainReport(False, n, None, f"the chain names escalation {gone[0]!r}, "
                               "which the store no longer holds (its row deleted)")
    return ChainReport(True, n, head=prev)


def verify_db(db: sqlite3.Connection) -> ChainReport:
    """:func:`verify_chain` over an open store: its entries, head and row anchors."""
    rows = list(db.execute("SELECT seq, at, actor, action, escalation, details, "
                           "prev_hash, hash FROM audit ORDER BY rowid"))
    found = db.execute("SELECT value FROM meta WHERE key='audit_head'").fetchone()
    head: tuple[int, str] | None = None
    if found is not None:
        seq, _, h = str(found[0]).partition(":")
        if not seq.isdigit():
            return ChainReport(False, 0, None, f"the store's head {str(found[0])[:40]!r} is "
                               "not SEQ:HASH (edited)")
        head = (int(seq), h)
    columns = {row[1] for row in db.execute("PRAGMA table_info(escalations)")}
    anchor_sql = ("SELECT id, audit_seq, audit_hash FROM escalations"
                  if {"audit_seq", "audit_hash"} <= columns
                  else "SELECT id, NULL, NULL FROM escalations")
    anchors = list(db.execute(anchor_sql))
    return verify_chain(rows, head, anchors, head_required=True)


def open_readonly(path: str | Path) -> sqlite3.Connection:
    """The store at ``path`` opened read-only (SQLite ``mode=ro``: nothing is created or
    written, not even its tables), after checking it is an escalation store;
    :class:`NotAnEscalationStore` otherwise."""
    from urllib.parse import quote

    shown = str(path)
    if not Path(path).is_file():
        raise NotAnEscalationStore(f"{shown}: no such file")
    try:
        db = sqlite3.connect(f"file:{quote(str(Path(path).absolute()))}?mode=ro", uri=True,
                             check_same_thread=False)
    except sqlite3.Error as exc:
        raise NotAnEscalationStore(f"{shown}: cannot open: {exc}") from None
    try:
        tables = {name for (name,) in db.execute(
            "SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.Error as exc:
        db.close()
        raise NotAnEscalationStore(
            f"{shown}: not an escalation store ({exc}); if it was one, it is damaged: "
            "restore it from a backup or move it aside") from None
    if not STORE_TABLES <= tables:
        db.close()
        lacking = ", ".join(sorted(STORE_TABLES - tables))
        raise NotAnEscalationStore(
            f"{shown}: not an escalation store (it lacks the tables {lacking}); pass the "
            "file `autocell run --escalations-db` or the console agent wrote")
    return db


def verify_file(path: str | Path) -> ChainReport:
    """``autocell audit verify``: check the store at ``path`` without writing to it."""
    db = open_readonly(path)
    try:
        return verify_db(db)
    except sqlite3.Error as exc:
        raise NotAnEscalationStore(f"{path}: the store is damaged ({exc}); restore it from a "
                                   "backup or move it aside") from None
    finally:
        db.close()


class EscalationStore:
    """Escalations, their audit chain and the decision outbox in one SQLite file.

    ``path`` may be ``":memory:"`` (virtual-time runs without a file).  The API the
    web console calls: :meth:`list`, :meth:`get`, :meth:`acknowledge`, :meth:`shelve`,
    :meth:`decide`, :meth:`audit`; each mutation appends to the audit chain.
    """

    def __init__(self, path: str | Path, deadlines: Deadlines | None = None, *,
                 wall_clock: Callable[[], float] | None = None) -> None:
        self.path = str(path)  # its directory must exist: a store creates none (issue 20)
        #: Set by a driver in wall time (the console agent under ``autocell up``): every
        #: audit entry then carries ``details.wall_at``; virtual-time runs leave it out, so
        #: their stores stay reproducible.
        self.wall_clock = wall_clock
        #: Ids of the records the last :meth:`list` could not decode (shown flagged, not 500).
        self.damaged: builtins.list[str] = []
        self.listeners: list[Callable[[Record], None]] = []
        with state_file(self.path, "escalation store"):
            self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("PRAGMA busy_timeout=5000")
            self.db.executescript(_SCHEMA)
            have = {row[1] for row in self.db.execute("PRAGMA table_info(escalations)")}
            for column, kind in _ANCHOR_COLUMNS:  # a store written before the anchors
                if column not in have:
                    self.db.execute(f"ALTER TABLE escalations ADD COLUMN {column} {kind}")
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

    def close(self) -> None:
        self.db.close()

    def refresh(self) -> Deadlines:
        """Re-read the policy's deadlines (another process — the running cell — may have
        written them after this one opened the file)."""
        with state_file(self.path, "escalation store"):
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

    def heartbeat(self, now: float, wall_at: float, speed: float = 1.0,
                  every_s: float = 0.2) -> None:
        """The running cell is alive: cell time ``now`` at wall time ``wall_at``, the cell
        clock running ``speed`` times wall time, the next heartbeat due ``every_s`` later."""
        self.set_cell_now(now)
        self._set_meta("heartbeat", json.dumps({"cell_at": float(now), "wall_at": float(wall_at),
                                                "speed": float(speed),
                                                "every_s": float(every_s)}))
        self.db.execute("DELETE FROM meta WHERE key='stopped_wall_at'")

    def stopped(self, wall_at: float) -> None:
        """The run has ended (the console agent stops, a paced run finished)."""
        self._set_meta("stopped_wall_at", repr(float(wall_at)))

    def liveness(self) -> dict[str, float]:
        """The last heartbeat (``cell_at``, ``wall_at``, ``speed``, ``every_s``) and, once the
        run has ended, ``stopped_wall_at``; empty if no cell ever reported in."""
        out: dict[str, float] = {}
        raw = self._meta("heartbeat")
        if raw is not None:
            try:
                out.update({k: float(v) for k, v in json.loads(raw).items()})
            except (ValueError, TypeError, AttributeError):
                pass
        stopped = self._meta("stopped_wall_at")
        if stopped is not None:
            try:
                out["stopped_wall_at"] = float(stopped)
            except ValueError:
                pass
        return out

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
        with state_file(self.path, f"escalation store's record {shown(escalation_id)}"):
            return Record.from_json(json.loads(row[0]))

    def has(self, escalation_id: str) -> bool:
        return self.db.execute("SELECT 1 FROM escalations WHERE id=?",
                               (escalation_id,)).fetchone() is not None

    def list(self, *, open_only: bool = False) -> list[Record]:
        """Sorted by priority (1 first), then state (unacknowledged first), then age.

        A record that no longer decodes is left out and its id kept in :attr:`damaged`:
        one broken record must not hide the others (issue 20, class 5)."""
        keyed: builtins.list[tuple[tuple[Any, ...], Record]] = []
        self.damaged = []
        for escalation_id, data in self.db.execute("SELECT id, data FROM escalations"):
            try:
                rec = Record.from_json(json.loads(data))
                key = (float(rec.priority), lc.STATE_RANK[rec.state], float(rec.raised_at),
                       str(rec.id))
            except (ValueError, TypeError, KeyError):
                self.damaged.append(str(escalation_id))
                continue
            keyed.append((key, rec))
        rows = [rec for _, rec in sorted(keyed, key=lambda kr: kr[0])]
        return [r for r in rows if r.open] if open_only else rows

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
        return verify_db(self.db)

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
            seq, h = self._append(now, actor, action, rec.id, details or {})
            self.db.execute(
                "INSERT INTO escalations(id, priority, state, raised_at, data, audit_seq, "
                "audit_hash) VALUES(?,?,?,?,?,?,?) "
                "ON CONFLICT(id) DO UPDATE SET priority=excluded.priority, state=excluded.state, "
                "data=excluded.data, audit_seq=excluded.audit_seq, audit_hash=excluded.audit_hash",
                (rec.id, rec.priority, rec.state, rec.raised_at, json.dumps(rec.to_json()),
                 seq, h))
            self.set_cell_now(now)
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        for listener in self.listeners:
            listener(rec)
        return rec

    def _append(self, at: float, actor: str, action: str, esc: str,
                details: dict[str, Any]) -> tuple[int, str]:
        last = self.db.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        seq, prev = (last[0] + 1, last[1]) if last else (1, GENESIS)
        at = float(at)
        if self.wall_clock is not None and "wall_at" not in details:
            details = {**details, "wall_at": float(self.wall_clock())}
        h = entry_hash(seq, at, actor, action, esc, details, prev)
        self.db.execute("INSERT INTO audit(seq, at, actor, action, escalation, details, "
                        "prev_hash, hash) VALUES(?,?,?,?,?,?,?,?)",
                        (seq, at, actor, action, esc, canonical(details).decode(), prev, h))
        self._set_meta("audit_head", f"{seq}:{h}")
        return seq, h

    # -- what people do (the console's API) --------------------------------------------------------
    def _now(self, now: float | None) -> float:
        return self.cell_now() if now is None else now

    def acknowledge(self, escalation_id: str, user: str, now: float | None = None, *,
                    wall_at: float | None = None) -> Record:
        t = self._now(now)
        rec = lc.acknowledge(self.get(escalation_id), user, t)
        return self.put(rec, actor=user, action="acknowledge", now=t,
                        details=_walled({"state": rec.state}, wall_at))

    def shelve(self, escalation_id: str, user: str, reason: str, duration_s: float,
               now: float | None = None, *, wall_at: float | None = None) -> Record:
        t = self._now(now)
        rec = lc.shelve(self.get(escalation_id), user, reason, duration_s, t, self.deadlines)
        return self.put(rec, actor=user, action="shelve", now=t,
                        details=_walled({"reason": reason, "duration_s": duration_s,
                                         "until_at": rec.shelved_until_at}, wall_at))

    def decide(self, escalation_id: str, user: str, option_id: str, reason: str = "",
               now: float | None = None, *, wall_at: float | None = None) -> Record:
        """Record a person's decision and queue the signed ``decision`` message."""
        t = self._now(now)
        before = self.get(escalation_id)
        rec = lc.decide(before, user, option_id, reason, t)
        label = (before.option(option_id) or lc.Option("", "", "")).label
        return self.put(rec, actor=user, action="decide", now=t, send=(option_id, user, reason),
                        details=_walled({"option": option_id, "reason": reason, "label": label},
                                        wall_at))

    # -- refused attempts ---------------------------------------------------------------------------
    def refuse(self, claimed: str, action: str, escalation_id: str, why: str,
               wall_at: float) -> int:
        """Keep an action refused for want of authentication; the count so far."""
        self.db.execute("INSERT INTO refused(wall_at, cell_at, claimed, action, escalation, why) "
                        "VALUES(?,?,?,?,?,?)", (float(wall_at), self.cell_now(), claimed, action,
                                                escalation_id, why))
        return self.refused_count()

    def refused_count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM refused").fetchone()[0])

    def refused(self) -> builtins.list[dict[str, Any]]:
        cols = ("seq", "wall_at", "cell_at", "claimed", "action", "escalation", "why")
        return [dict(zip(cols, row, strict=True)) for row in self.db.execute(
            f"SELECT {', '.join(cols)} FROM refused ORDER BY seq")]

    # -- the outbox ---------------------------------------------------------------------------------
    def pending_decisions(self) -> builtins.list[tuple[int, str, str, str, str, str]]:
        """(seq, escalation, to_agent, option, user, reason) not yet sent."""
        return list(self.db.execute("SELECT seq, escalation, to_agent, option, user, reason "
                                    "FROM outbox WHERE sent=0 ORDER BY seq"))

    def mark_sent(self, seq: int) -> None:
        self.db.execute("UPDATE outbox SET sent=1 WHERE seq=?", (seq,))


def _walled(details: dict[str, Any], wall_at: float | None) -> dict[str, Any]:
    """A person's action's details, with the wall-clock time it was taken when known."""
    return details if wall_at is None else {**details, "wall_at": float(wall_at)}
