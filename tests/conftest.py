"""Shared fixtures: an in-memory cell authority with a few agents of every role.

Unlike :func:`security.keystore.ephemeral_cell`, :class:`TestCell` keeps the
authority key, so tests can issue certificates with any validity window,
revoke agents, and sign arbitrary payloads with a *valid* key (to push
garbage past the signature check into the unpacker and schema).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
from hypothesis import settings

from agents.protocol.envelope import SIGNING_TAG, Limits, Opener, Sealer
from security.certs import Certificate, RevocationList, TrustStore
from security.crypto import SigningKey
from security.replay import ReplayGuard

# A Hypothesis example is judged by what it does, never by how long it took: a loaded
# machine must not fail one on its wall time (tests that bound time say so themselves).
settings.register_profile("autocell", deadline=None)
settings.load_profile("autocell")

AGENTS: dict[str, str] = {
    "m1": "machine", "m2": "machine", "r1": "robot", "o1": "order",
    "c1": "console", "s1": "sim", "h1": "host", "e1": "energy", "k1": "maintenance",
    "t1": "stores",
}


class TestCell:
    """An authority, a trust store and one key per agent — all in memory."""

    __test__ = False   # not a test class, despite the name

    def __init__(self) -> None:
        self.authority = SigningKey.generate()
        self.trust = TrustStore(self.authority.verifier())
        self.keys: dict[str, SigningKey] = {}
        self.certs: dict[str, Certificate] = {}
        self._crl = RevocationList(1, 0.0)

    def __repr__(self) -> str:   # short: Hypothesis prints fixtures in falsifying examples
        return f"TestCell({sorted(self.keys)})"

    def add(self, agent: str, role: str, *, not_before_at: float = 0.0,
            not_after_at: float = 1e12) -> SigningKey:
        key = SigningKey.generate()
        cert = Certificate.issue(self.authority, agent, role, key.public_key, not_before_at,
                                 not_after_at, serial=len(self.certs) + 1)
        self.trust.add(cert)
        self.keys[agent], self.certs[agent] = key, cert
        return key

    def revoke(self, agent: str) -> None:
        self._crl = RevocationList(self._crl.serial + 1, 0.0,
                                   self._crl.revoked + ((agent, 0),)).signed(self.authority)
        self.trust.set_revocations(self._crl)

    def sealer(self, agent: str, *, epoch: int = 1, key_of: str | None = None) -> Sealer:
        """A sealer stamping ``agent`` as sender; ``key_of`` signs with another agent's key."""
        return Sealer(agent, self.keys[key_of or agent], epoch=epoch, random_bytes=os.urandom)

    def sign(self, sender: str | bytes, payload: bytes, *, key_of: str | None = None) -> list[bytes]:
        """Frames carrying an arbitrary ``payload`` with a valid signature."""
        sender_b = sender.encode() if isinstance(sender, str) else sender
        key = self.keys[key_of or sender_b.decode()]
        return [sender_b, payload, key.sign(SIGNING_TAG + sender_b + payload)]

    def opener(self, guard: ReplayGuard | None = None, limits: Limits = Limits()) -> Opener:
        return Opener(self.trust, guard, limits=limits)


def make_cell(agents: dict[str, str] = AGENTS) -> TestCell:
    cell = TestCell()
    for agent, role in agents.items():
        cell.add(agent, role)
    return cell


@pytest.fixture
def cell() -> TestCell:
    """A fresh cell with one agent per role (plus a second machine, ``m2``)."""
    return make_cell()


@pytest.fixture(scope="module")
def module_cell() -> TestCell:
    """Like :func:`cell`, shared by a module (for Hypothesis tests, which reuse fixtures)."""
    return make_cell()


@pytest.fixture(scope="session")
def ray_local() -> Iterator[ModuleType]:
    """A lean local Ray with 2 CPUs, started once per test session and shut down at its end.

    No dashboard, no worker prestart, no usage stats, no auth-token file, and
    Ray's session files in a private temporary directory (see
    :func:`ops.lean_ray.ray_session`).  Code under test that calls
    ``ray_session`` while it is up reuses it instead of starting its own.
    """
    import ray

    from ops.lean_ray import ray_session

    with ray_session(None, 2):
        yield ray


# -- a real browser (Playwright driving Debian's Chromium), once per test module ----------------
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Module scope, not session: Playwright's sync API keeps an event loop running on the
    main thread while it is open, and every later test calling ``asyncio.run()`` would
    fail with "cannot be called from a running event loop"."""
    from pathlib import Path

    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run does this)")
    # launch() gives Chromium a fresh temporary user-data-dir of its own (and refuses
    # --user-data-dir); every test's context is a fresh cookie jar on top of it.
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    """A fresh browser context (its own cookies) per test."""
    ctx = browser.new_context(viewport={"width": 1024, "height": 768})
    ctx.set_default_timeout(10_000)
    yield ctx
    ctx.close()
