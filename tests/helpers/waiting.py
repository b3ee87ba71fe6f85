"""Waiting on events in the few real multi-process, real-socket and browser tests.

The rule these tests follow: *no test depends on the machine's speed*.  A test
that runs real processes waits for the observable event it needs (a status
file showing a new pid, a record in a store, a counter reaching a value) and
never for a fixed time.  The bound here is not a budget: it is a safety net
against a hang, generous enough that a slow but correct machine — 2 cores
with another suite running on them — never reaches it.  It sits below
pytest-timeout's 300 s per test (pyproject.toml), so a hang fails with a
message naming what was awaited rather than with a bare timeout; a test
that waits on several events in a row raises its own pytest-timeout with
``@pytest.mark.timeout(...)``.

``wait_until`` is for plain code (it sleeps between polls), ``until`` for a
coroutine running on the same event loop as the thing awaited (it yields to
the loop between polls, so the awaited work makes progress).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

#: The safety net against a hang, in seconds of wall time.  Not a performance
#: budget: a correct run never comes near it, whatever the machine's load.
EVENT_BOUND_S = 240.0

#: A generous bound for a whole cell run (``proc.communicate(timeout=...)``),
#: or a subprocess that should simply finish; again a hang guard only.
PROCESS_BOUND_S = 240.0

#: ``autocell up --timeout``: the cell gives up after this wall time.  A cell
#: run in these tests takes 10-40 s; this only stops a hung cell, and stays
#: below :data:`PROCESS_BOUND_S` so the cell's own report says it timed out.
CELL_RUN_BOUND_S = 200.0

#: Playwright's bound in milliseconds, for ``expect(...)`` and
#: ``set_default_timeout``: the same hang guard as :data:`EVENT_BOUND_S`.
BROWSER_BOUND_MS = int(EVENT_BOUND_S * 1000)

POLL_S = 0.05


class NotYet:
    """A falsy answer from a ``check`` that carries what it saw, for the failure message
    (``return stats if done(stats) else NotYet(stats)``)."""

    def __init__(self, seen: object) -> None:
        self.seen = seen

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return repr(self.seen)


class NeverHappened(AssertionError):
    """What a test waited for did not happen within the hang guard."""


def _failure(what: str, bound_s: float, last: object) -> NeverHappened:
    shown = repr(last)
    if len(shown) > 2000:
        shown = shown[:2000] + "..."
    return NeverHappened(f"waited {bound_s:.0f} s for {what}; never happened "
                         f"(the last value seen: {shown})")


def wait_until(what: str, check: Callable[[], T], *, bound_s: float = EVENT_BOUND_S,
               poll_s: float = POLL_S) -> T:
    """Poll ``check`` until it returns a truthy value and return that value.

    ``what`` names the event for the failure message, which also shows the
    last value ``check`` returned.  ``bound_s`` is only a hang guard.
    """
    give_up_at = time.monotonic() + bound_s
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() > give_up_at:
            raise _failure(what, bound_s, last)
        time.sleep(poll_s)


async def until(what: str, check: Callable[[], T], *, bound_s: float = EVENT_BOUND_S,
                poll_s: float = POLL_S) -> T:
    """The coroutine twin of :func:`wait_until`: yields to the loop between polls."""
    give_up_at = time.monotonic() + bound_s
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() > give_up_at:
            raise _failure(what, bound_s, last)
        await asyncio.sleep(poll_s)
