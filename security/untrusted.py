"""Reading files and echoing text that a person or a peer may have made hostile.

Two small tools every boundary shares, so no loader has its own idea of them:

* :func:`read_regular_file` — the one way a configuration, key or
  certificate file is opened.  It accepts **regular files only** and reads
  **at most a documented number of bytes**: a FIFO would block ``open()``
  or ``read()`` forever and ``/dev/zero`` never ends, so the file is opened
  non-blocking, checked with ``fstat`` on the descriptor actually opened
  (no race with a renamed path), and read up to the limit plus one byte.
  Every ``OSError`` (symlink loop, permission, a path below a regular
  file) becomes a :class:`UnreadableFile` naming the file — exit 2 at the
  command line, never a traceback, never a hang.
* :func:`state_file` — around the code that opens or reads a state file
  autocell wrote itself (an SQLite store, a journal): garbage, a truncated
  file or a record that no longer decodes becomes one :class:`DamagedState`
  naming the file and what to do, never ``sqlite3.DatabaseError`` or
  ``JSONDecodeError`` in a traceback.
* :func:`shown` and :func:`escape_controls` — text taken from input and
  echoed in an error message (an id, a key, a list of known ids) is quoted,
  its control characters escaped (ESC, BEL, NUL and newlines would drive
  the terminal or forge extra log lines) and its length capped, so one
  hostile id cannot print a 10 000-character line.
"""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import ConfigurationError, DamagedState

__all__ = ["MAX_LINE", "MAX_SHOWN", "UnreadableFile", "escape_controls", "read_regular_file",
           "safe_lines", "shown", "shown_list", "state_file"]

MAX_SHOWN = 60
"""Characters of one echoed value kept before it is cut (``…(+N)`` marks the cut)."""
MAX_LINE = 1000
"""Characters of one line of an error message kept by :func:`safe_lines`."""


class UnreadableFile(ConfigurationError):
    """A file named by the operator is missing, not a regular file, too large or unreadable."""

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{escape_controls(self.path)}: {problem}")


def read_regular_file(path: str | os.PathLike[str], *, limit: int, what: str = "file",
                      check: Callable[[os.stat_result], None] | None = None) -> bytes:
    """The bytes of the regular file at ``path``, at most ``limit`` of them, or
    :class:`UnreadableFile` saying why not (``what`` names the file's kind).

    ``check`` sees the opened file's status before a byte is read (a private
    key's mode, for one) and may raise."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        raise UnreadableFile(path, _os_problem(exc, path, what)) from None
    try:
        status = os.fstat(fd)
        kind = _kind(status.st_mode)
        if kind == "regular file" and check is not None:
            check(status)
        if kind != "regular file":
            raise UnreadableFile(path, f"is a {kind}, not a regular file; name the {what} "
                                       "itself")
        size = os.fstat(fd).st_size
        if size > limit:
            raise UnreadableFile(path, f"is {size:,} bytes, above the {limit:,}-byte limit "
                                       f"for a {what}")
        chunks: list[bytes] = []
        total = 0
        while total <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > limit:  # grew while we read it
            raise UnreadableFile(path, f"is above the {limit:,}-byte limit for a {what}")
        return b"".join(chunks)
    except OSError as exc:
        raise UnreadableFile(path, _os_problem(exc, path, what)) from None
    finally:
        os.close(fd)


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISREG, "regular file"), (stat.S_ISDIR, "directory"),
                       (stat.S_ISFIFO, "FIFO (named pipe)"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket")):
        if test(mode):
            return name
    return "special file"


def _os_problem(exc: OSError | ValueError, path: str | os.PathLike[str], what: str) -> str:
    import errno

    if not isinstance(exc, OSError):
        return "the path holds a NUL character"
    if exc.errno == errno.ENOENT:
        return f"no such {what} (looked in {Path(path).absolute().parent}); check the path"
    if exc.errno == errno.ELOOP:
        return "a symbolic link loop; point the link at a regular file"
    if exc.errno == errno.ENOTDIR:
        return "a part of the path is a file, not a directory; check the path"
    if exc.errno == errno.EISDIR:
        return f"is a directory, not a {what}"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied; check the file's owner and mode"
    return f"cannot read: {exc.strerror or exc}"


def escape_controls(text: str) -> str:
    """``text`` with every control or format character escaped (``\\x1b``, ``\\n``,
    ``\\u202e``), so it prints as one line and cannot drive a terminal."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() or ch == " " else repr(ch)[1:-1] for ch in text)


def shown(value: object, limit: int = MAX_SHOWN) -> str:
    """``value`` as it may appear in a message: ``repr``-quoted when it is a string,
    control characters escaped, cut to about ``limit`` characters."""
    text = repr(value) if isinstance(value, str) else escape_controls(str(value))
    if len(text) > limit:
        cut = len(text) - limit
        text = text[:limit] + f"…(+{cut})"
    return text


def shown_list(values: list[str] | tuple[str, ...], limit: int = 12,
               each: int = 40) -> str:
    """Up to ``limit`` values joined with commas, each escaped and cut to ``each``
    characters; ``...`` when there are more; ``none`` when empty."""
    if not values:
        return "none"
    parts = [escape_controls(v) if len(v) <= each else escape_controls(v[:each]) + "…"
             for v in values[:limit]]
    return ", ".join(parts) + (", ..." if len(values) > limit else "")


def safe_lines(text: str, width: int = MAX_LINE) -> str:
    """A message for a terminal or a log: each of its lines escaped and cut to ``width``
    characters — the net at the command line's edge for text no one escaped earlier."""
    out = []
    for line in text.split("\n"):
        line = escape_controls(line)
        out.append(line if len(line) <= width else line[:width] + f"…(+{len(line) - width})")
    return "\n".join(out)


@contextmanager
def state_file(path: object, what: str) -> Iterator[None]:
    """Run the block; what a damaged state file makes it raise becomes :class:`DamagedState`.

    SQLite says ``file is not a database`` or ``database disk image is malformed``; a stored
    JSON or number that no longer parses raises ``ValueError`` (``JSONDecodeError`` is one),
    ``TypeError`` or ``KeyError`` where a record has the wrong shape.  Only the reading of
    the file belongs in the block, so no bug of ours is reported as a damaged file.
    """
    try:
        yield
    except sqlite3.DatabaseError as exc:
        raise DamagedState(path, what, escape_controls(str(exc))) from None
    except (ValueError, TypeError, KeyError) as exc:
        raise DamagedState(path, what, "a stored record does not decode: "
                           + shown(str(exc), 120)) from None
