"""Small pieces of the words the commands print."""

from __future__ import annotations

__all__ = ["counted"]


def counted(count: int, noun: str, plural: str = "") -> str:
    """``1 entry``, ``2 entries``: a count with its noun in the right number (``plural``
    when adding ``s`` is wrong)."""
    return f"{count} {noun if count == 1 else plural or noun + 's'}"
