"""The machine's half of the power-lease protocol: ask before starting, release after.

A machine in a cell with a peak cap holds a :class:`PowerClient`.  Before an
operation starts, :meth:`gate` says whether the lease for ``task@epoch`` is
granted; if not, it asks the manager (once now, again every ``retry_s`` until
granted — requests and grants may be lost) and the machine waits.  That wait
is deliberate: the machine is up and the task stays committed (the log says
``power_wait``, not a fault).  After every input the machine calls
:meth:`reconcile` with the tasks it still means to run: a lease for any other
task (finished, aborted, cancelled, handed back, or granted after the machine
gave up on it) is released, so the budget flows back as soon as possible; a
release that is lost costs only the lease's remaining time.

What a machine leases is its operation's power above idle: the most it draws
in setup, busy (for that capability) or while waking from standby or off.
The lease lasts the operation's duration plus the wake-up plus ``grace_s``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from agents.protocol.actions import Action, Log, Send, SetTimer
from agents.protocol.messages import PowerGrant, PowerRelease, PowerRequest

__all__ = ["PowerClient", "PowerNeeds"]


@dataclass(frozen=True)
class PowerNeeds:
    """What a machine leases: kW above idle per capability (``""``: any other)."""

    above_idle_kw: dict[str, float]
    default_kw: float
    wake_s: float = 0.0          # the longest wake-up (standby or off)
    grace_s: float = 15.0

    def kw(self, capability: str) -> float:
        return self.above_idle_kw.get(capability, self.default_kw)


Key = tuple[str, int]            # (task, award epoch)


@dataclass
class PowerClient:
    """The lease state of one machine: what it asked for and what it holds.

    Each new request for a task (after a release or an expiry) has the next
    ``attempt``, so it is a new lease for the manager, and a grant that answers an
    older attempt is recognised as stale and released rather than used."""

    machine: str
    manager: str
    needs: PowerNeeds
    retry_s: float
    granted: dict[Key, tuple[int, float]] = field(default_factory=dict)  # -> attempt, expires_at
    asked: dict[Key, tuple[int, float, float]] = field(default_factory=dict)  # -> attempt, kw, hold
    attempts: dict[Key, int] = field(default_factory=dict)   # the last attempt asked per key
    retry_armed: bool = False

    def holds(self, task: str, epoch: int, now: float) -> bool:
        g = self.granted.get((task, epoch))
        return g is not None and g[1] > now

    def gate(self, task: str, epoch: int, capability: str, duration_s: float,
             now: float) -> list[Action] | None:
        """None: the lease is held, start.  Otherwise: what to do while waiting for it."""
        if self.holds(task, epoch, now):
            return None
        k = (task, epoch)
        out: list[Action] = []
        for other in [o for o in self.asked if o != k]:   # one request at a time: the next task
            out.append(self._release(other, self.asked.pop(other)[0]))
        if k not in self.asked:
            stale = self.granted.pop(k, None)              # expired before the start
            if stale is not None:
                out.append(self._release(k, stale[0]))
            attempt = self.attempts.get(k, -1) + 1
            self.attempts[k] = attempt
            kw = self.needs.kw(capability)
            hold = duration_s + self.needs.wake_s + self.needs.grace_s
            self.asked[k] = (attempt, kw, hold)
            out.append(Log("power_wait", {"agent": self.machine, "task": task, "kw": kw}))
            out.append(Send(self.manager, PowerRequest(task, epoch, kw, hold, attempt)))
        if not self.retry_armed:
            self.retry_armed = True
            out.append(SetTimer("power_retry", now + self.retry_s))
        return out

    def on_grant(self, body: PowerGrant, now: float) -> tuple[bool, list[Action]]:
        """Record a grant: (news — the machine should try to start —, actions).  A grant
        for an attempt not asked for (stale, or duplicated after a release) is released."""
        k = (body.task, body.award_epoch)
        asked = self.asked.get(k)
        if asked is not None and asked[0] == body.attempt:
            del self.asked[k]
            self.granted[k] = (body.attempt, body.expires_at)
            return True, []
        held = self.granted.get(k)
        if held is not None and held[0] == body.attempt:
            return False, []                               # a duplicate of the one we hold
        return False, [self._release(k, body.attempt)]

    def on_retry(self, now: float) -> list[Action]:
        """Ask again for everything still not granted (a request or a grant may be lost)."""
        self.retry_armed = False
        if not self.asked:
            return []
        out: list[Action] = [Send(self.manager, PowerRequest(t, e, kw, hold, attempt))
                             for (t, e), (attempt, kw, hold) in sorted(self.asked.items())]
        self.retry_armed = True
        out.append(SetTimer("power_retry", now + self.retry_s))
        return out

    def reconcile(self, wanted: Iterable[Key]) -> list[Action]:
        """Release every lease and request that is not for a task in ``wanted``."""
        keep = set(wanted)
        out: list[Action] = []
        for k in [k for k in self.granted if k not in keep]:
            out.append(self._release(k, self.granted.pop(k)[0]))
        for k in [k for k in self.asked if k not in keep]:
            out.append(self._release(k, self.asked.pop(k)[0]))
        return out

    def _release(self, k: Key, attempt: int) -> Send:
        return Send(self.manager, PowerRelease(k[0], k[1], attempt))
