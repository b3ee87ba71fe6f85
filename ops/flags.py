"""Numbers named on the command line, checked when the flags are parsed.

``argparse``'s ``type=float`` takes ``nan`` and ``inf``, and ``type=int``
takes ``-1``: ``--until nan`` ran a cell for ever, ``chaos --seeds -3``
played nothing and reported "0/0 passed" with exit 0.  Each type here gives
a number in the same range a cell file allows (:mod:`agents.cell.limits`), or
exit 2 with what is wrong (issue 20, class 2).
"""

from __future__ import annotations

import argparse
import math

from agents.cell.limits import MAX_SECONDS, MAX_SEED
from security.untrusted import shown

__all__ = ["cell_time", "count", "limit", "seed", "speed", "wall_seconds"]


def cell_time(text: str) -> float:
    """A time of the cell, seconds: finite, at most :data:`MAX_SECONDS` (each command says
    what it makes of zero or a negative time: ``run --until -3`` is "must be positive")."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{shown(text)} is not a number of seconds") from None
    if not math.isfinite(value) or value > MAX_SECONDS:
        raise argparse.ArgumentTypeError(
            f"{shown(text)}: a cell time is a finite number of seconds up to {MAX_SECONDS:g}")
    return value


def _integer(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{shown(text)} is not a whole number ({what})") from None


def seed(text: str) -> int:
    """A run seed: 0 to 2^63 - 1, as in ``sim.seed``."""
    value = _integer(text, "a seed")
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"{shown(text)}: a seed is from 0 to {MAX_SEED}")
    return value


def count(text: str) -> int:
    """How many of something to do: at least 1."""
    value = _integer(text, "a count")
    if value < 1:
        raise argparse.ArgumentTypeError(f"{shown(text)}: must be at least 1")
    return value


def limit(text: str) -> int:
    """A limit that may be zero (``up --max-restarts 0``: none tolerated)."""
    value = _integer(text, "a limit")
    if value < 0:
        raise argparse.ArgumentTypeError(f"{shown(text)}: must be 0 or more")
    return value


def _positive(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{shown(text)} is not a number ({what})") from None
    if not (math.isfinite(value) and 0 < value <= MAX_SECONDS):
        raise argparse.ArgumentTypeError(
            f"{shown(text)}: {what} is a finite number above 0, up to {MAX_SECONDS:g}")
    return value


def speed(text: str) -> float:
    """A cell's pace, cell seconds per wall second: finite and above 0 (``nan`` or ``inf``
    would make the cell clock NaN or infinite on every host)."""
    return _positive(text, "a speed in cell seconds per wall second")


def wall_seconds(text: str) -> float:
    """A span of wall-clock time, seconds: finite and above 0."""
    return _positive(text, "a wall time in seconds")
