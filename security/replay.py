"""Replay guard: refuse any message seen before, also across a receiver restart.

Theory of operation
-------------------
Every sender stamps each envelope with its boot ``epoch`` and a per-epoch
counter ``seq``, and its clock ``ts``.  Per sender the guard keeps the
highest epoch, the highest seq in it (``hw``) and a bitmap of the last
``window`` seqs below ``hw``, so reordered messages are still accepted once.

* ``|ts - now| > skew_s``                → :class:`ClockSkew`
* epoch below the sender's highest       → Replayed (stale epoch)
* epoch above                            → new boot: the window restarts
* seq more than ``window`` below ``hw``  → Replayed (too old to judge)
* seq already in the bitmap              → Replayed (duplicate)

Persistence: the guard writes ``(epoch, hw)`` per sender to a
:class:`ReplayStore` whenever ``hw`` has advanced ``flush_every`` past what
was last written (and on :meth:`flush`), *before* :meth:`check` accepts the
message that advanced it, so after a crash the true ``hw`` is at most
``flush_every - 1`` above the stored one.  A restarted guard therefore
refuses, for each restored sender's stored epoch:

* ``seq <= stored hw`` — certainly seen or too old;
* ``stored hw < seq < stored hw + flush_every`` *unless* ``ts`` is later
  than the restart plus ``skew_s`` — it may have been accepted before the
  crash, and only a message stamped after the restart can be told apart.

With ``flush_every=1`` (every autocell process) the second range is empty: a
sender's next message after a receiver restart is accepted, so recovery
costs no negotiation round (issue 18; it used to refuse ``stored hw + 1``,
which the guard cannot have accepted without writing it first).

Legitimate messages lost this way are those in flight across a crash; the
contract net's deadlines and leases absorb them.  Nothing here reads a
clock: ``now`` is passed in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from .errors import ClockSkew, Replayed


class ReplayStore(Protocol):
    """Where the guard keeps ``(epoch, hw)`` per sender across restarts."""

    def load(self) -> dict[str, tuple[int, int]]: ...

    def save(self, entries: dict[str, tuple[int, int]]) -> None: ...


class MemoryReplayStore:
    """In-memory twin of the SQLite store (tests, virtual time)."""

    def __init__(self) -> None:
        self.data: dict[str, tuple[int, int]] = {}

    def load(self) -> dict[str, tuple[int, int]]:
        return dict(self.data)

    def save(self, entries: dict[str, tuple[int, int]]) -> None:
        self.data.update(entries)


@dataclass(slots=True)
class _Sender:
    epoch: int
    hw: int
    bits: int          # bit i set  <=>  seq hw - i was accepted
    saved_hw: int      # last hw written to the store (-1 = never)
    restored_hw: int = -1      # stored hw at restart (-1 = not restored)
    restored_epoch: int = -1


class ReplayGuard:
    """Per-sender sliding-window replay protection with a clock-skew check."""

    def __init__(self, store: ReplayStore | None = None, *, window: int = 1024,
                 skew_s: float = 30.0, flush_every: int = 256, now: float | None = None) -> None:
        if store is not None and now is None:
            raise ValueError("a ReplayGuard with a persistent store needs `now` (the restart "
                             "time) to judge messages that may predate the restart")
        self.window = window
        self.skew_s = skew_s
        self.flush_every = flush_every
        self.store = store if store is not None else MemoryReplayStore()
        self.restarted_at = 0.0 if now is None else now
        self._senders: dict[str, _Sender] = {}
        for sender, (epoch, hw) in self.store.load().items():
            self._senders[sender] = _Sender(epoch, hw, 0, hw, hw, epoch)
        self._mask = (1 << window) - 1

    def check(self, sender: str, epoch: int, seq: int, ts: float, now: float) -> None:
        """Accept (and remember) the triple, or raise :class:`Replayed`/:class:`ClockSkew`."""
        if not abs(ts - now) <= self.skew_s:   # also refuses NaN
            raise ClockSkew(f"timestamp {ts:.3f} is {ts - now:+.3f} s from receiver clock "
                            f"{now:.3f} (allowed ±{self.skew_s} s)", sender=sender)
        st = self._senders.get(sender)
        if st is None:
            self._senders[sender] = _Sender(epoch, seq, 1, -1)
            self._mark(sender, epoch, seq, force=True)
            return
        if epoch < st.epoch:
            raise Replayed(f"epoch {epoch} is older than the sender's current epoch {st.epoch}",
                           sender=sender, epoch=epoch, seq=seq)
        if epoch > st.epoch:
            st.epoch, st.hw, st.bits, st.restored_hw = epoch, seq, 1, -1
            self._mark(sender, epoch, seq, force=True)
            return
        if st.restored_hw >= 0 and epoch == st.restored_epoch:
            if seq <= st.restored_hw:
                raise Replayed(f"seq {seq} was accepted before this receiver restarted",
                               sender=sender, epoch=epoch, seq=seq)
            if seq < st.restored_hw + self.flush_every and ts <= self.restarted_at + self.skew_s:
                raise Replayed(f"seq {seq} may have been accepted before this receiver restarted",
                               sender=sender, epoch=epoch, seq=seq)
        if seq > st.hw:
            shift = seq - st.hw
            st.bits = ((st.bits << shift) | 1) & self._mask if shift < self.window else 1
            st.hw = seq
            if seq - st.saved_hw >= self.flush_every:   # _mark's test, without the call
                self._mark(sender, epoch, seq, force=True)
            return
        offset = st.hw - seq
        if offset >= self.window:
            raise Replayed(f"seq {seq} is more than {self.window} behind {st.hw}",
                           sender=sender, epoch=epoch, seq=seq)
        if st.bits >> offset & 1:
            raise Replayed(f"duplicate seq {seq}", sender=sender, epoch=epoch, seq=seq)
        st.bits |= 1 << offset

    def _mark(self, sender: str, epoch: int, hw: int, *, force: bool) -> None:
        st = self._senders[sender]
        if force or hw - st.saved_hw >= self.flush_every:
            st.saved_hw = hw
            self.store.save({sender: (epoch, hw)})

    def flush(self) -> None:
        """Write every sender's current (epoch, hw) — call on clean shutdown."""
        entries = {s: (st.epoch, st.hw) for s, st in self._senders.items()}
        for st in self._senders.values():
            st.saved_hw = st.hw
        if entries:
            self.store.save(entries)
