"""Journals: every input of an agent, written ahead, replayed to recover it.

Nothing is lost across ``kill -9`` (docs/architecture.md, Invariants).

Theory of operation
-------------------
An agent is a deterministic sans-io object: its state is a function of its
inputs (``on_start``, ``on_message``, ``on_timer``, ``on_plant_event``,
``on_recover``) and of its seeded RNG.  So the journal stores *inputs*,
not state: a driver appends each input **before** handing it to the agent
(write-ahead), and recovering an agent after ``kill -9`` means building it
afresh — same config, same seed — and feeding it the journalled inputs in
order.  The actions the replay produces were carried out the first time
and are dropped, except the timer bookkeeping: timers set and neither
cancelled nor fired are armed again.

What a crash can lose is the actions of the last input (the input is in
the journal, its ``Send`` was never made): to peers that is a lost
message, which the protocol already survives (deadlines, leases,
heartbeats, ``ready`` resent).  Nothing is done twice: the plant fences
repeated starts by idempotency key and award epoch.

The storage sits behind :class:`Journal`: :class:`MemoryJournal` for tests
and virtual-time crash scenarios, :class:`SqliteJournal` (WAL mode, one
row per input) for hosts.  A journal also keeps a **boot counter** per
name, which hosts use as the envelope epoch so a restarted sender's fresh
sequence numbers are not taken for replays.

Replay time grows with the journal; snapshots are future work (a cell's
run is thousands of inputs per agent, replayed in milliseconds).
"""

from __future__ import annotations

import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import msgpack

from agents.base import Agent, PlantEventIn
from agents.protocol.actions import Action, CancelTimer, SetTimer
from agents.protocol.messages import Message, body_from_wire
from security.untrusted import state_file

#: What a damaged journal is called in its error (:class:`security.errors.DamagedState`).
JOURNAL = "journal"

# -- inputs ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Start:
    now: float


@dataclass(frozen=True, slots=True)
class Inbound:
    msg: Message
    now: float


@dataclass(frozen=True, slots=True)
class Timer:
    key: str
    now: float


@dataclass(frozen=True, slots=True)
class PlantIn:
    ev: PlantEventIn
    now: float


@dataclass(frozen=True, slots=True)
class Recover:
    now: float


Input = Start | Inbound | Timer | PlantIn | Recover


def apply(agent: Agent, inp: Input) -> list[Action]:
    """Hand one input to the agent; return its actions."""
    if isinstance(inp, Inbound):
        return agent.on_message(inp.msg, inp.now)
    if isinstance(inp, Timer):
        return agent.on_timer(inp.key, inp.now)
    if isinstance(inp, PlantIn):
        return agent.on_plant_event(inp.ev, inp.now)
    if isinstance(inp, Start):
        return agent.on_start(inp.now)
    return agent.on_recover(inp.now)


def encode(inp: Input) -> bytes:
    """One journal record: a msgpack array tagged by input kind."""
    if isinstance(inp, Inbound):
        m = inp.msg
        rec: list[object] = [1, inp.now, m.sender, m.to, m.conv, m.id, m.epoch, m.seq, m.ts,
                             m.type, m.body.to_wire()]
    elif isinstance(inp, Timer):
        rec = [2, inp.now, inp.key]
    elif isinstance(inp, PlantIn):
        e = inp.ev
        rec = [3, inp.now, e.event, e.resource, e.task, e.data]
    elif isinstance(inp, Start):
        rec = [0, inp.now]
    else:
        rec = [4, inp.now]
    return msgpack.packb(rec, use_bin_type=True)


def decode(record: bytes) -> Input:
    """Inverse of :func:`encode` (the journal is our own file: no untrusted input here)."""
    rec = msgpack.unpackb(record, raw=False, strict_map_key=True)
    kind, now = rec[0], float(rec[1])
    if kind == 1:
        _, _, sender, to, conv, mid, epoch, seq, ts, type_name, body = rec
        return Inbound(Message(sender, to, conv, mid, epoch, seq, ts,
                               body_from_wire(type_name, body)), now)
    if kind == 2:
        return Timer(rec[2], now)
    if kind == 3:
        return PlantIn(PlantEventIn(rec[2], rec[3], rec[4], rec[5]), now)
    if kind == 0:
        return Start(now)
    return Recover(now)


# -- storage --------------------------------------------------------------------------------


class Journal(ABC):
    """Append-only input records per agent, plus boot counters."""

    @abstractmethod
    def append(self, agent_id: str, record: bytes) -> None: ...

    @abstractmethod
    def records(self, agent_id: str) -> Iterator[bytes]: ...

    @abstractmethod
    def agents(self) -> list[str]: ...

    @abstractmethod
    def next_boot(self, name: str) -> int:
        """Increment and return the persisted boot counter of ``name`` (1 on first boot)."""

    def close(self) -> None:
        return None


class MemoryJournal(Journal):
    """The in-memory twin: lives as long as the driver (virtual-time crashes, tests)."""

    def __init__(self) -> None:
        self._records: dict[str, list[bytes]] = {}
        self._boots: dict[str, int] = {}

    def append(self, agent_id: str, record: bytes) -> None:
        self._records.setdefault(agent_id, []).append(record)

    def records(self, agent_id: str) -> Iterator[bytes]:
        return iter(list(self._records.get(agent_id, [])))

    def agents(self) -> list[str]:
        return sorted(self._records)

    def next_boot(self, name: str) -> int:
        self._boots[name] = self._boots.get(name, 0) + 1
        return self._boots[name]


class SqliteJournal(Journal):
    """SQLite in WAL mode: each append is its own transaction, durable across ``kill -9``.

    ``synchronous=NORMAL`` in WAL mode survives a process crash (the OS has
    the pages); only a power cut can lose the last transactions.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with state_file(self.path, JOURNAL):
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS inputs (n INTEGER PRIMARY KEY, "
                             "agent TEXT NOT NULL, record BLOB NOT NULL)")
            self._db.execute("CREATE INDEX IF NOT EXISTS inputs_agent ON inputs (agent, n)")
            self._db.execute("CREATE TABLE IF NOT EXISTS boots (name TEXT PRIMARY KEY, "
                             "count INTEGER NOT NULL)")

    def append(self, agent_id: str, record: bytes) -> None:
        self._db.execute("INSERT INTO inputs (agent, record) VALUES (?, ?)", (agent_id, record))

    def records(self, agent_id: str) -> Iterator[bytes]:
        with state_file(self.path, JOURNAL):
            rows = self._db.execute("SELECT record FROM inputs WHERE agent = ? ORDER BY n",
                                    (agent_id,)).fetchall()
            return iter([bytes(r[0]) for r in rows])

    def agents(self) -> list[str]:
        with state_file(self.path, JOURNAL):
            return [r[0] for r in self._db.execute(
                "SELECT DISTINCT agent FROM inputs ORDER BY agent")]

    def next_boot(self, name: str) -> int:
        with state_file(self.path, JOURNAL), self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("INSERT INTO boots (name, count) VALUES (?, 1) ON CONFLICT(name) "
                             "DO UPDATE SET count = count + 1", (name,))
            row = self._db.execute("SELECT count FROM boots WHERE name = ?", (name,)).fetchone()
            return int(row[0])

    def close(self) -> None:
        self._db.close()


# -- recording and recovering ---------------------------------------------------------------


def feed(agent: Agent, inp: Input, journal: Journal | None) -> list[Action]:
    """Write the input ahead (when journalling), then hand it to the agent."""
    if journal is not None:
        journal.append(agent.id, encode(inp))
    return apply(agent, inp)


@dataclass
class Recovered:
    inputs: int
    timers: dict[str, float]      # key -> at: timers to arm again
    started: bool                 # the journal held the agent's start

    def pending(self) -> list[tuple[str, float]]:
        """The timers to arm again, earliest first (ties by key: deterministic)."""
        return sorted(self.timers.items(), key=lambda kv: (kv[1], kv[0]))

    def resume(self, now: float) -> Input:
        """The input that wakes the rebuilt agent: ``Recover``, or ``Start`` if it never
        started before the crash."""
        return Recover(now) if self.started else Start(now)


class DamagedRecord(ValueError):
    """A journal record that does not decode (the file was damaged, not written by us)."""


def replay(agent: Agent, records: Iterable[bytes]) -> Recovered:
    """Rebuild ``agent`` (fresh, same seed) from its records; actions are dropped.
    :class:`DamagedRecord` if one does not decode."""
    timers: dict[str, float] = {}
    n = 0
    started = False
    for record in records:
        try:
            inp = decode(record)
        except (ValueError, TypeError, IndexError, KeyError) as exc:
            raise DamagedRecord(f"record {n + 1} of agent {agent.id!r} does not decode: "
                                f"{type(exc).__name__}") from None
        n += 1
        started = started or isinstance(inp, Start)
        if isinstance(inp, Timer):
            timers.pop(inp.key, None)
        for act in apply(agent, inp):
            if isinstance(act, SetTimer):
                timers[act.key] = act.at
            elif isinstance(act, CancelTimer):
                timers.pop(act.key, None)
    return Recovered(n, timers, started)
