"""Console users for tests of the CLI twin (``autocell escalations``), which acts only for an
authenticated console user (ops/escalations.py): a users database, and this OS account mapped
to one of its users through ``$AUTOCELL_USERS_DB`` — which subprocesses inherit too."""

from __future__ import annotations

import getpass
from pathlib import Path

import pytest

from ops.console.users import UserStore


def password(name: str) -> str:
    return f"{name}-password"


def users_db(path: Path, roles: dict[str, str]) -> UserStore:
    """A users database at ``path`` with ``name -> role``; passwords from :func:`password`."""
    store = UserStore(path)
    for name, role in roles.items():
        if store.get(name) is None:
            store.add(name, role, password(name))
    return store


def act_as(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str,
           role: str = "supervisor") -> Path:
    """This OS account acts as console user ``name`` (mapped by an admin); the users file."""
    path = tmp_path / "users.db"
    store = users_db(path, {name: role})
    store.map_os(getpass.getuser(), name)
    monkeypatch.setenv("AUTOCELL_USERS_DB", str(path))
    return path
