"""Console users: names, roles and scrypt password hashes in one SQLite file.

Three roles, each including the one before: a ``viewer`` sees escalations; a
``supervisor`` also acknowledges, shelves and decides them; an ``admin`` also
manages users.  Passwords are hashed with scrypt (``hashlib.scrypt``, a fresh
16-byte salt per user, N=2**14, r=8, p=1: about 16 MiB and a few tens of
milliseconds per check) and compared in constant time.  The parameters are
stored with each hash so they can be raised later without breaking old ones.
A check for an unknown user still runs scrypt once, so the response time does
not tell which names exist.

An admin may also map operating-system accounts to console users
(``autocell users map-os OSNAME USER``): the CLI twin (``autocell
escalations``) then accepts an action from that OS account as that user
without asking for a password — the OS login is the authentication.  The
users file is the admin's (mode 0600), so only they can write a mapping.

The file holds hashes, not passwords, but it is still created with mode 0600
(and its directory 0700 when we create it): a hash can be attacked offline.
Every call opens its own connection, so the store may be used from any
thread (the web server's event loop, a CLI).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from security.errors import ConfigurationError

__all__ = ["DEFAULT_USERS", "MIN_PASSWORD_LEN", "ROLES", "USERS_ENV", "User", "UserError",
           "UserStore", "role_allows", "users_path"]

DEFAULT_USERS = ".autocell/users.db"
USERS_ENV = "AUTOCELL_USERS_DB"


def users_path(given: str | None) -> Path:
    """The users database: ``--users FILE``, else ``$AUTOCELL_USERS_DB``, else
    :data:`DEFAULT_USERS` — the same lookup for the console, ``autocell users`` and the CLI
    twin, so that they all work on one file."""
    return Path(given or os.environ.get(USERS_ENV) or DEFAULT_USERS)

#: Roles in increasing power; a role may do everything the roles before it may.
ROLES: tuple[str, ...] = ("viewer", "supervisor", "admin")
MIN_PASSWORD_LEN = 8
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1


class UserError(ConfigurationError):
    """A user name, role or password the store refuses (exit 2 at the CLI)."""


def role_allows(role: str, needed: str) -> bool:
    """True when ``role`` is ``needed`` or more powerful."""
    return role in ROLES and ROLES.index(role) >= ROLES.index(needed)


@dataclass(frozen=True)
class User:
    name: str
    role: str
    created_at: float


def _hash(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p,
                          maxmem=128 * r * n * 2, dklen=32)


# One fixed dummy record, so a login for an unknown name costs one scrypt too.
_DUMMY_SALT = b"\x00" * 16


class UserStore:
    """Users in a SQLite file (created on first write)."""

    def __init__(self, path: str | Path, *, clock: Callable[[], float] = time.time,
                 make_parent: bool = False) -> None:
        self.path = Path(path)
        self._clock = clock
        #: Create a missing parent directory on first write: only for the default location
        #: (``.autocell/``); a directory the user named must exist (issue 20).
        self.make_parent = make_parent

    # -- storage ------------------------------------------------------------------------

    def check_place(self) -> None:
        """:class:`UserError` if the database could not be created where it is named: its
        directory is missing (and is not the default one) or is not a directory."""
        parent = self.path.parent
        if self.path.exists() or (self.make_parent and not parent.exists()):
            return
        if not parent.is_dir():
            what = "does not exist" if not parent.exists() else "is not a directory"
            raise UserError(f"{self.path}: directory {parent} {what}; create it first "
                            "(autocell creates no directories it was not asked for)")

    def _connect(self, *, create: bool) -> sqlite3.Connection | None:
        if not self.path.exists():
            if not create:
                return None
            self.check_place()
            if not self.path.parent.exists():
                self.path.parent.mkdir(parents=True, mode=0o700)
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600)
            except OSError as exc:
                raise UserError(f"{self.path}: cannot create the users database "
                                f"({exc.strerror or exc})") from None
            os.close(fd)
        try:
            db = sqlite3.connect(self.path, timeout=5.0)
            db.execute("CREATE TABLE IF NOT EXISTS users (name TEXT PRIMARY KEY, role TEXT NOT "
                       "NULL, salt BLOB NOT NULL, hash BLOB NOT NULL, n INTEGER NOT NULL, r "
                       "INTEGER NOT NULL, p INTEGER NOT NULL, created_at REAL NOT NULL)")
            db.execute("CREATE TABLE IF NOT EXISTS os_accounts (os_name TEXT PRIMARY KEY, "
                       "user TEXT NOT NULL)")
        except sqlite3.DatabaseError as exc:
            raise UserError(f"{self.path}: not a users database ({exc})") from None
        return db

    # -- commands -----------------------------------------------------------------------

    def add(self, name: str, role: str, password: str) -> User:
        """Create a user; refuse a bad name or role, a short password, an existing name."""
        if not _NAME.match(name):
            raise UserError(f"bad user name {name!r}: use 1-64 letters, digits, '_', '.', '@', "
                            "'-', starting with a letter or digit")
        if role not in ROLES:
            raise UserError(f"unknown role {role!r}; valid roles: {', '.join(ROLES)}")
        if len(password) < MIN_PASSWORD_LEN:
            raise UserError(f"password too short: at least {MIN_PASSWORD_LEN} characters")
        salt = secrets.token_bytes(16)
        digest = _hash(password, salt, _SCRYPT_N, _SCRYPT_R, _SCRYPT_P)
        user = User(name, role, self._clock())
        db = self._connect(create=True)
        assert db is not None
        with db:
            try:
                db.execute("INSERT INTO users VALUES (?,?,?,?,?,?,?,?)",
                           (name, role, salt, digest, _SCRYPT_N, _SCRYPT_R, _SCRYPT_P,
                            user.created_at))
            except sqlite3.IntegrityError:
                raise UserError(f"user {name!r} already exists in {self.path}") from None
        db.close()
        return user

    def remove(self, name: str) -> None:
        db = self._connect(create=False)
        if db is None:
            raise UserError(f"no user {name!r}: {self.path} does not exist")
        with db:
            gone = db.execute("DELETE FROM users WHERE name=?", (name,)).rowcount
        db.close()
        if not gone:
            raise UserError(f"no user {name!r} in {self.path}")

    def list(self) -> list[User]:
        db = self._connect(create=False)
        if db is None:
            return []
        rows = db.execute("SELECT name, role, created_at FROM users ORDER BY name").fetchall()
        db.close()
        return [User(*row) for row in rows]

    def get(self, name: str) -> User | None:
        return next((u for u in self.list() if u.name == name), None)

    def verify(self, name: str, password: str) -> User | None:
        """The user when ``password`` is theirs, else None (in about constant time)."""
        db = self._connect(create=False)
        row = None
        if db is not None:
            row = db.execute("SELECT role, salt, hash, n, r, p, created_at FROM users "
                             "WHERE name=?", (name,)).fetchone()
            db.close()
        if row is None:
            _hash(password, _DUMMY_SALT, _SCRYPT_N, _SCRYPT_R, _SCRYPT_P)
            return None
        role, salt, digest, n, r, p, created_at = row
        if hmac.compare_digest(_hash(password, salt, n, r, p), digest):
            return User(name, role, created_at)
        return None

    # -- operating-system accounts (the CLI twin) -------------------------------------------

    def map_os(self, os_name: str, name: str) -> None:
        """Let OS account ``os_name`` act as console user ``name`` at the CLI twin."""
        if self.get(name) is None:
            raise UserError(f"no user {name!r} in {self.path}: add it first")
        if not os_name.strip():
            raise UserError("an OS account name is required")
        db = self._connect(create=True)
        assert db is not None
        with db:
            db.execute("INSERT INTO os_accounts VALUES (?, ?) ON CONFLICT(os_name) DO UPDATE "
                       "SET user=excluded.user", (os_name, name))
        db.close()

    def unmap_os(self, os_name: str) -> None:
        db = self._connect(create=False)
        gone = 0
        if db is not None:
            with db:
                gone = db.execute("DELETE FROM os_accounts WHERE os_name=?",
                                  (os_name,)).rowcount
            db.close()
        if not gone:
            raise UserError(f"OS account {os_name!r} is not mapped in {self.path}")

    def os_accounts(self) -> dict[str, str]:
        """OS account -> console user."""
        db = self._connect(create=False)
        if db is None:
            return {}
        rows = db.execute("SELECT os_name, user FROM os_accounts ORDER BY os_name").fetchall()
        db.close()
        return dict(rows)

    def for_os(self, os_name: str) -> User | None:
        """The console user OS account ``os_name`` is mapped to (None: unmapped, or the
        user has been removed since)."""
        name = self.os_accounts().get(os_name)
        return None if name is None else self.get(name)
