"""Output paths named on the command line, checked when the flags are parsed.

A run can take minutes; an output path that cannot be written must not be
found out *after* it, with a traceback and the results lost.  So every flag
that names a file autocell will write (``--report``, ``--events``,
``--escalations-db``, ``schema --out`` ...) is parsed with
:func:`output_file`, which refuses — exit 2, before anything runs — a path
that is a directory, lies in a directory that does not exist or is not one,
or cannot be written.  autocell never creates a directory the user did not
ask for: a missing parent is an error that says to create it.
"""

from __future__ import annotations

import argparse
import os
import stat
from pathlib import Path

from security.errors import ConfigurationError
from security.untrusted import shown

__all__ = ["input_kind", "make_state_dir", "output_dir_problem", "output_file",
           "output_file_problem"]


def input_kind(path: Path) -> str:
    """What a path named on the command line for reading is, found without opening it:
    ``"file"``, ``"dir"`` or ``"missing"``.  Anything else — a FIFO, whose open would
    block for ever, a socket, a device — is refused here, one line and exit 2 (ADR 104)."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        raise ConfigurationError(f"{path}: cannot be read ({exc.strerror})") from None
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISREG(mode):
        return "file"
    raise ConfigurationError(f"{path}: not a regular file (a pipe, socket or device)")


def output_file_problem(path: Path) -> str | None:
    """Why autocell could not write the file ``path``, or None if it could."""
    if not str(path):
        return "an empty path; name a file"
    try:
        if path.is_dir():
            return "is a directory; name a file (inside it, for example)"
        parent = path.parent
        if not parent.exists():
            return (f"directory {shown(str(parent))} does not exist; create it first "
                    "(autocell creates no directories it was not asked for)")
        if not parent.is_dir():
            return f"{shown(str(parent))} is not a directory"
        if path.exists():
            if not os.access(path, os.W_OK):
                return "exists and is not writable; check its mode"
        elif not os.access(parent, os.W_OK | os.X_OK):
            return f"cannot create files in {shown(str(parent))} (permission denied)"
    except ValueError:  # an embedded NUL: no file system takes it
        return "holds a NUL character; name a file"
    except OSError as exc:  # a name too long, a symlink loop in the parents
        return f"cannot be used: {exc.strerror or exc}"
    return None


def output_dir_problem(path: Path) -> str | None:
    """Why autocell could not make or fill the directory ``path`` (``experiment --out``), or
    None if it could.  Unlike a file's, a results directory may be missing with its parents:
    naming it asks for it; but a file in the way is found now, not as ``FileExistsError``
    in a traceback."""
    if not str(path):
        return "an empty path; name a directory"
    try:
        if path.exists() and not path.is_dir():
            return "is a file, not a directory; name a directory"
        here = path
        while not here.exists() and here.parent != here:
            here = here.parent
        if not here.is_dir():
            return f"{shown(str(here))} is a file, not a directory"
        if not os.access(here, os.W_OK | os.X_OK):
            return f"cannot create or write files in {shown(str(here))} (permission denied)"
    except ValueError:  # an embedded NUL
        return "holds a NUL character; name a directory"
    except OSError as exc:  # a name too long, a symlink loop in the parents
        return f"cannot be used: {exc.strerror or exc}"
    return None


def output_file(text: str) -> str:
    """An ``argparse`` type: ``text`` unchanged if autocell can write a file there."""
    problem = output_file_problem(Path(text))
    if problem is not None:
        raise argparse.ArgumentTypeError(f"{shown(text)}: {problem}")
    return text


def make_state_dir(path: Path) -> Path:
    """Create the state directory (``--state-dir``, default ``.autocell/CELL``) if missing.

    It is the one directory autocell is asked to make; a path that is a file, or lies below
    one, is exit 2 with what to do, not ``FileExistsError`` in a traceback (issue 20)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (OSError, ValueError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigurationError(
            f"state directory {shown(str(path))}: cannot create it ({why}); name a directory "
            "with --state-dir (a file is in the way, or its parent is not a directory)"
        ) from None
    return path
