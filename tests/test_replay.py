"""The replay guard (security.replay) on its own, through the Opener, and across restarts.

A receiver restart is simulated by building a *new* ``ReplayGuard`` (and
``Opener``) on the same SQLite file; a crash is a restart without
``flush()``.  Times are plain floats passed in: nothing here sleeps.
"""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from agents.protocol.messages import Heartbeat
from security.errors import ClockSkew, Replayed
from security.replay import MemoryReplayStore, ReplayGuard
from security.replay_store import SqliteReplayStore

T0 = 1_700_000_000.0


def accept(guard: ReplayGuard, seq: int, *, epoch: int = 1, sender: str = "m1",
           ts: float = T0, now: float = T0) -> None:
    guard.check(sender, epoch, seq, ts, now)


def refused(guard: ReplayGuard, seq: int, *, epoch: int = 1, sender: str = "m1",
            ts: float = T0, now: float = T0) -> Replayed:
    with pytest.raises(Replayed) as info:
        guard.check(sender, epoch, seq, ts, now)
    return info.value


# -- the window ----------------------------------------------------------------------------

def test_duplicate_is_rejected_with_context() -> None:
    guard = ReplayGuard(window=8)
    accept(guard, 1)
    exc = refused(guard, 1)
    assert exc.sender == "m1" and exc.reason == "replayed"
    assert exc.context() == {"reason": "replayed", "detail": exc.detail, "sender": "m1",
                             "epoch": 1, "seq": 1}


@pytest.mark.parametrize("order", [
    [1, 5, 3, 4, 2],
    [8, 1, 7, 2, 6, 3, 5, 4],
    [3, 1, 2],
    [2, 9, 4, 8, 3, 7, 5, 6, 1],
])
def test_reordering_within_the_window_is_accepted_exactly_once(order: list[int]) -> None:
    guard = ReplayGuard(window=16)
    for seq in order:
        accept(guard, seq)
    for seq in order:
        refused(guard, seq)


def test_seq_older_than_the_window_is_rejected() -> None:
    guard = ReplayGuard(window=8)
    accept(guard, 1)
    accept(guard, 20)
    assert "behind" in refused(guard, 12).detail     # 8 behind the high water mark
    accept(guard, 13)                                # 7 behind: inside, never seen
    refused(guard, 13)
    refused(guard, 1)


def test_a_jump_larger_than_the_window_forgets_nothing_that_matters() -> None:
    guard = ReplayGuard(window=8)
    for seq in (1, 2, 3):
        accept(guard, seq)
    accept(guard, 100)
    for seq in (1, 2, 3, 92, 100):
        refused(guard, seq)
    accept(guard, 99)
    accept(guard, 93)


def test_senders_are_independent() -> None:
    guard = ReplayGuard()
    for sender in ("m1", "m2", "o1"):
        accept(guard, 1, sender=sender)
    refused(guard, 1, sender="m2")


def test_new_epoch_resets_the_window() -> None:
    guard = ReplayGuard(window=8)
    for seq in range(1, 50):
        accept(guard, seq)
    accept(guard, 1, epoch=2)         # the sender rebooted: counting starts again
    refused(guard, 1, epoch=2)
    accept(guard, 3, epoch=2)
    accept(guard, 2, epoch=2)


def test_stale_epoch_is_rejected() -> None:
    guard = ReplayGuard()
    accept(guard, 7, epoch=5)
    exc = refused(guard, 1000, epoch=4)
    assert "epoch" in exc.detail
    accept(guard, 8, epoch=5)


SKEWS = [
    ("future", T0 + 30.001, ClockSkew),
    ("past", T0 - 30.001, ClockSkew),
    ("far future", T0 + 1e9, ClockSkew),
    ("zero", 0.0, ClockSkew),
    ("+inf", math.inf, ClockSkew),
    ("-inf", -math.inf, ClockSkew),
    ("nan", math.nan, ClockSkew),      # not "within the window" of anything
    ("edge future", T0 + 30.0, None),
    ("edge past", T0 - 30.0, None),
    ("exact", T0, None),
]


@pytest.mark.parametrize("ts, error", [s[1:] for s in SKEWS], ids=[s[0] for s in SKEWS])
def test_clock_skew_both_directions(ts: float, error: type[Exception] | None) -> None:
    guard = ReplayGuard(skew_s=30.0)
    if error is None:
        guard.check("m1", 1, 1, ts, T0)
        refused(guard, 1, ts=ts)
        return
    with pytest.raises(error) as info:
        guard.check("m1", 1, 1, ts, T0)
    assert info.value.sender == "m1" and info.value.reason == "clock_skew"
    accept(guard, 1)                  # a skewed message leaves no trace in the window


# -- persistence -----------------------------------------------------------------------------

def test_sqlite_store_round_trip_in_wal_mode(tmp_path: Path) -> None:
    store = SqliteReplayStore(tmp_path / "sub" / "r.sqlite")
    assert store.load() == {}
    store.save({"a": (1, 2), "b": (3, 4)})
    store.save({"a": (2, 1)})
    store.close()
    again = SqliteReplayStore(tmp_path / "sub" / "r.sqlite")
    assert again.load() == {"a": (2, 1), "b": (3, 4)}
    mode = sqlite3.connect(tmp_path / "sub" / "r.sqlite").execute("PRAGMA journal_mode").fetchone()
    assert mode[0].lower() == "wal"
    again.close()


def test_guard_writes_every_flush_every_and_on_flush() -> None:
    store = MemoryReplayStore()
    guard = ReplayGuard(store, flush_every=4, now=T0)
    for seq in range(1, 11):
        accept(guard, seq)
    assert store.data == {"m1": (1, 9)}     # first contact (1), then 5 and 9
    guard.flush()
    assert store.data == {"m1": (1, 10)}
    accept(guard, 1, epoch=2)               # a new epoch is written at once
    assert store.data == {"m1": (2, 1)}


class Receiver:
    """One incarnation of a receiving host: guard + opener on a SQLite file."""

    def __init__(self, cell: Any, path: Path, *, started_at: float, flush_every: int = 4,
                 skew_s: float = 30.0) -> None:
        self.store = SqliteReplayStore(path)
        self.guard = ReplayGuard(self.store, flush_every=flush_every, skew_s=skew_s,
                                 now=started_at)
        self.opener = cell.opener(self.guard)

    def open(self, frames: list[bytes], now: float) -> Any:
        return self.opener.open(frames, now)


def _stamp(sealer: Any, seq: int, ts: float) -> list[bytes]:
    sealer.seq = seq - 1              # Sealer numbers from its counter; pin it
    frames = sealer.seal("o1", Heartbeat(), ts)
    assert sealer.seq == seq
    return frames


def test_restart_after_a_crash_still_refuses_delivered_messages(cell: Any, tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite"
    sealer = cell.sealer("m1", epoch=1)
    first = Receiver(cell, path, started_at=T0 - 100)
    sent = {seq: _stamp(sealer, seq, T0 + seq * 0.1) for seq in range(1, 11)}
    for seq, frames in sent.items():
        assert first.open(frames, T0 + seq * 0.1).seq == seq
    assert first.store.load() == {"m1": (1, 9)}   # seq 10 came after the last periodic write
    # crash: no flush(); a new incarnation starts 5 s later on the same file
    restart_at = T0 + 5
    second = Receiver(cell, path, started_at=restart_at)
    for seq, frames in sent.items():            # seq 1..9 stored; 10 only inferred
        with pytest.raises(Replayed):
            second.open(frames, restart_at + 1)
    # an in-flight message stamped before restart + skew can't be told from a replay
    with pytest.raises(Replayed):
        second.open(_stamp(sealer, 11, restart_at + 29), restart_at + 29)
    # a fresh one stamped after restart + skew is accepted, and only once
    late = restart_at + 31
    fresh = _stamp(sealer, 12, late)
    assert second.open(fresh, late).seq == 12
    with pytest.raises(Replayed):
        second.open(fresh, late)
    assert second.open(_stamp(sealer, 13, late), late).seq == 13


def test_restart_after_clean_flush_refuses_every_old_seq(cell: Any, tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite"
    sealer = cell.sealer("m1", epoch=3)
    first = Receiver(cell, path, started_at=T0, flush_every=1000)
    sent = [_stamp(sealer, seq, T0 + seq) for seq in range(1, 21)]
    order = list(range(20))
    order[5], order[6] = order[6], order[5]      # one reordered pair
    for i in order:
        first.open(sent[i], T0 + i + 1)
    assert first.store.load() == {"m1": (3, 1)}   # only the first contact was written
    first.guard.flush()
    first.store.close()
    assert SqliteReplayStore(path).load() == {"m1": (3, 20)}
    restart_at = T0 + 3600
    second = Receiver(cell, path, started_at=restart_at, flush_every=1000)
    for frames in sent:   # even with a clock that would accept their timestamps
        with pytest.raises(Replayed):
            second.open(frames, T0 + 20)
    late = restart_at + 31
    assert second.open(_stamp(sealer, 21, late), late).seq == 21


def test_restart_refuses_stale_epoch_and_accepts_a_new_one(cell: Any, tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite"
    first = Receiver(cell, path, started_at=T0)
    old = cell.sealer("m1", epoch=1)
    new = cell.sealer("m1", epoch=2)
    first.open(_stamp(old, 1, T0), T0)
    first.open(_stamp(new, 1, T0), T0)
    second = Receiver(cell, path, started_at=T0 + 1)
    with pytest.raises(Replayed):
        second.open(_stamp(old, 50, T0 + 2), T0 + 2)
    newest = cell.sealer("m1", epoch=3)
    assert second.open(_stamp(newest, 1, T0 + 2), T0 + 2).epoch == 3


def test_open_same_frames_twice_second_is_replayed(cell: Any) -> None:
    opener = cell.opener(ReplayGuard())
    frames = cell.sealer("m1").seal("o1", Heartbeat(), T0)
    assert opener.open(frames, T0).seq == 1
    with pytest.raises(Replayed) as info:
        opener.open(frames, T0 + 1)
    assert info.value.sender == "m1" and info.value.context()["seq"] == 1
