"""Certificates, revocation lists and the trust store (pure: no files, no clock).

Theory of operation
-------------------
A cell has one **authority**: an Ed25519 key whose public half every host
knows.  The authority signs an **agent certificate** binding an agent id to
a role and a public key for a validity window, and a **revocation list**
naming agents whose certificates must no longer be honoured.

What gets signed is never JSON (whose byte form is not canonical) but a
msgpack array in a fixed field order, prefixed with a domain-separation tag
so a certificate signature can never be confused with a message signature::

    b"autocell-cert/1\\0" + msgpack([agent, role, public_key, not_before_at,
                                     not_after_at, serial])
    b"autocell-crl/1\\0"  + msgpack([serial, issued_at, [[agent, cert_serial_or_0], ...]])

The :class:`TrustStore` is what the envelope codec consults: given a sender
id it returns the verifier, role and validity — or says why not.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import msgpack

from .crypto import SigningKey, Verifier
from .errors import CertificateExpired, ConfigurationError, Revoked, UnknownSender
from .untrusted import shown

ROLES: tuple[str, ...] = ("machine", "robot", "order", "console", "sim", "host", "energy",
                         "maintenance", "stores")
AGENT_ID_RE = re.compile(r"^[A-Za-z0-9_@:-][A-Za-z0-9_.@:-]{0,63}$")
CERT_TAG = b"autocell-cert/1\0"
CRL_TAG = b"autocell-crl/1\0"
MAX_SERIAL = 2**63 - 1
"""Largest certificate or revocation-list serial (msgpack packs it as a signed 64-bit int)."""
MAX_TIME_AT = 1e12
"""Latest validity time a certificate may carry, Unix seconds (about the year 33 658)."""


def check_agent_id(agent: str) -> str:
    """Return ``agent`` or raise: ids are 1–64 of ``[A-Za-z0-9_.@:-]``, not starting with ``.``."""
    if not AGENT_ID_RE.match(agent) or len(agent.encode()) > 64:
        raise ConfigurationError(
            f"invalid agent id {shown(agent)}: use 1-64 characters from A-Z a-z 0-9 _ . : @ - (not starting with '.')")
    return agent


def check_role(role: str) -> str:
    if role not in ROLES:
        raise ConfigurationError(f"unknown role {shown(role)}; valid roles: {', '.join(ROLES)}")
    return role


@dataclass(frozen=True, slots=True)
class Certificate:
    """An agent's identity as vouched for by the cell authority."""

    agent: str
    role: str
    public_key: bytes
    not_before_at: float
    not_after_at: float
    serial: int
    signature: bytes = b""

    def tbs(self) -> bytes:
        """The canonical bytes the authority signs ("to be signed")."""
        return CERT_TAG + msgpack.packb(
            [self.agent, self.role, self.public_key, float(self.not_before_at),
             float(self.not_after_at), int(self.serial)], use_bin_type=True)

    @classmethod
    def issue(cls, authority: SigningKey, agent: str, role: str, public_key: bytes,
              not_before_at: float, not_after_at: float, serial: int) -> Certificate:
        check_agent_id(agent)
        check_role(role)
        for name, at in (("not_before_at", not_before_at), ("not_after_at", not_after_at)):
            if not (math.isfinite(at) and 0 <= at <= MAX_TIME_AT):
                raise ConfigurationError(f"certificate {name} {at!r} is outside 0..{MAX_TIME_AT:g} "
                                         "(Unix seconds); choose a shorter validity")
        if not_after_at <= not_before_at:
            raise ConfigurationError("certificate validity window is empty")
        if not 0 <= serial <= MAX_SERIAL:
            raise ConfigurationError(f"certificate serial {serial} is outside 0..{MAX_SERIAL}")
        unsigned = cls(agent, role, public_key, float(not_before_at), float(not_after_at), serial)
        return cls(agent, role, public_key, float(not_before_at), float(not_after_at), serial,
                   authority.sign(unsigned.tbs()))

    def verify(self, authority: Verifier) -> bool:
        return authority.verify(self.tbs(), self.signature)

    def valid_at(self, now: float) -> bool:
        return self.not_before_at <= now <= self.not_after_at


@dataclass(frozen=True, slots=True)
class RevocationList:
    """The authority's signed list of revoked agent ids (optionally per serial)."""

    serial: int
    issued_at: float
    revoked: tuple[tuple[str, int], ...] = ()   # (agent, cert serial; 0 = every serial)
    signature: bytes = b""

    def tbs(self) -> bytes:
        return CRL_TAG + msgpack.packb(
            [int(self.serial), float(self.issued_at), [list(r) for r in self.revoked]],
            use_bin_type=True)

    def signed(self, authority: SigningKey) -> RevocationList:
        unsigned = RevocationList(self.serial, self.issued_at, self.revoked)
        return RevocationList(self.serial, self.issued_at, self.revoked,
                              authority.sign(unsigned.tbs()))

    def verify(self, authority: Verifier) -> bool:
        return authority.verify(self.tbs(), self.signature)

    def is_revoked(self, agent: str, serial: int) -> bool:
        return any(a == agent and s in (0, serial) for a, s in self.revoked)


@dataclass(slots=True)
class Peer:
    """What the codec needs about one verified sender, precomputed once."""

    cert: Certificate
    verifier: Verifier
    revoked: bool = False


@dataclass
class TrustStore:
    """Certificates accepted by this host, checked against the authority.

    Certificates that fail the authority's signature are refused when added,
    never at message time, so the hot path does one dict lookup.
    """

    authority: Verifier
    _peers: dict[str, Peer] = field(default_factory=dict)
    _crl: RevocationList | None = None

    def add(self, cert: Certificate) -> None:
        if not cert.verify(self.authority):
            raise ConfigurationError(
                f"certificate for {cert.agent!r} is not signed by this cell's authority; "
                "re-issue it with `autocell keys issue`")
        peer = Peer(cert, Verifier(cert.public_key))
        if self._crl is not None:
            peer.revoked = self._crl.is_revoked(cert.agent, cert.serial)
        self._peers[cert.agent] = peer

    def set_revocations(self, crl: RevocationList) -> None:
        if not crl.verify(self.authority):
            raise ConfigurationError("revocation list is not signed by this cell's authority")
        if self._crl is not None and crl.serial < self._crl.serial:
            raise ConfigurationError(
                f"revocation list serial {crl.serial} is older than the loaded {self._crl.serial}")
        self._crl = crl
        for agent, peer in self._peers.items():
            peer.revoked = crl.is_revoked(agent, peer.cert.serial)

    def peer(self, sender: str, now: float) -> Peer:
        """The sender's verified identity, or the typed reason it has none."""
        peer = self._peers.get(sender)
        if peer is None:
            raise UnknownSender("no certificate for this sender id", sender=sender)
        if peer.revoked:
            raise Revoked("certificate revoked by the cell authority", sender=sender)
        cert = peer.cert
        if not (cert.not_before_at <= now <= cert.not_after_at):
            raise CertificateExpired(
                f"certificate valid {cert.not_before_at:.0f}..{cert.not_after_at:.0f}, "
                f"receiver clock {now:.0f}", sender=sender)
        return peer

    def role_of(self, agent: str) -> str | None:
        peer = self._peers.get(agent)
        return peer.cert.role if peer else None

    def agents(self) -> list[str]:
        return sorted(self._peers)

    def __contains__(self, agent: object) -> bool:
        return agent in self._peers
