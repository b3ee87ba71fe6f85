"""Key files on disk: the cell authority, agent keys and certificates, revocations.

Layout of a keys directory (documented in docs/SECURITY.md)::

    KEYS/authority.key          PKCS#8 PEM Ed25519 private key, mode 0600
    KEYS/authority.pub          SubjectPublicKeyInfo PEM
    KEYS/agents/ID.key          PKCS#8 PEM, mode 0600
    KEYS/agents/ID.cert         JSON certificate (format "autocell-cert/1")
    KEYS/revocations.json       JSON revocation list (format "autocell-crl/1")

PEM encoding is done by ``cryptography`` (interoperable with OpenSSL);
signing and verifying by :mod:`security.crypto`.  Private key files are
created 0600 atomically (``O_EXCL``) and refused at load time when group or
others can read them.
"""

from __future__ import annotations

import base64
import json
import math
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from .certs import (
    MAX_SERIAL,
    MAX_TIME_AT,
    Certificate,
    RevocationList,
    TrustStore,
    check_agent_id,
    check_role,
)
from .crypto import SigningKey, Verifier
from .errors import ConfigurationError, InsecureKeyFile
from .untrusted import UnreadableFile, read_regular_file, shown

CERT_FORMAT = "autocell-cert/1"
CRL_FORMAT = "autocell-crl/1"
DEFAULT_VALIDITY_S = 365 * 24 * 3600.0
MAX_KEY_FILE_BYTES = 64 * 1024
"""Largest PEM key file read; an Ed25519 key is a few hundred bytes."""
MAX_JSON_FILE_BYTES = 4 * 1024 * 1024
"""Largest certificate or revocation list read."""
MAX_JSON_DEPTH = 32
"""Deepest nesting accepted in a certificate or revocation list (they use 3)."""

# Every key, certificate and revocation file is read through :func:`_read_file` —
# regular files only, size-capped, never blocking (security/untrusted.py) — and every
# field of a certificate or revocation list is type- and range-checked by
# :func:`_field`, so damaged or hostile files are a ConfigurationError naming the file.


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def _unb64(s: object, what: str, path: Path, size: int | None = None) -> bytes:
    if not isinstance(s, str):
        raise ConfigurationError(f"{path}: field {what!r} must be a base64 string, "
                                 f"got {type(s).__name__}")
    try:
        raw = base64.b64decode(s, validate=True)
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(f"{path}: field {what!r} is not valid base64") from exc
    if size is not None and len(raw) != size:
        raise ConfigurationError(f"{path}: field {what!r} holds {len(raw)} bytes, "
                                 f"not {size}")
    return raw


def _field(data: dict[str, Any], name: str, kind: str, path: Path) -> Any:
    """``data[name]`` checked: ``kind`` is ``"text"``, ``"serial"`` (an int in
    0..MAX_SERIAL) or ``"time"`` (a finite number of seconds in 0..MAX_TIME_AT)."""
    if name not in data:
        raise ConfigurationError(f"{path}: lacks field {name!r}")
    value = data[name]
    if kind == "text":
        if not isinstance(value, str):
            raise ConfigurationError(f"{path}: field {name!r} must be a string, got "
                                     f"{type(value).__name__}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            kind == "serial" and not isinstance(value, int)):
        want = "a whole number" if kind == "serial" else "a number of seconds"
        raise ConfigurationError(f"{path}: field {name!r} must be {want}, got "
                                 f"{shown(value) if isinstance(value, str) else type(value).__name__}")
    top = MAX_SERIAL if kind == "serial" else MAX_TIME_AT
    if not (math.isfinite(value) and 0 <= value <= top):
        bound = str(top) if kind == "serial" else f"{top:g} (Unix seconds)"
        raise ConfigurationError(f"{path}: field {name!r} is {shown(value)}, outside "
                                 f"0..{bound}")
    return value if kind == "serial" else float(value)


def _read_file(path: Path, limit: int, what: str,
               private: bool = False) -> bytes:
    """The one opener of key files: a regular file, at most ``limit`` bytes; a private
    key also refused when group or others can read it."""
    def mode_ok(status: os.stat_result) -> None:
        mode = stat.S_IMODE(status.st_mode)
        if private and mode & 0o077:
            raise InsecureKeyFile(str(path), mode)

    try:
        return read_regular_file(path, limit=limit, what=what, check=mode_ok)
    except UnreadableFile as exc:
        if "no such" in exc.problem:
            raise ConfigurationError(f"{what} {path} does not exist") from None
        raise


def write_private_key(path: Path, key: SigningKey) -> None:
    """Write ``key`` as PKCS#8 PEM, created with mode 0600; never overwrite."""
    pem = Ed25519PrivateKey.from_private_bytes(key.seed).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigurationError(f"{path} already exists; refusing to overwrite a key") from None
    except OSError as exc:
        raise ConfigurationError(f"{path}: cannot create the key file: "
                                 f"{exc.strerror or exc}") from None
    try:
        os.fchmod(fd, 0o600)   # the umask may have narrowed it; never widened
        os.write(fd, pem)
    finally:
        os.close(fd)


def load_private_key(path: Path) -> SigningKey:
    """Load a PEM private key, refusing files that group or others can read."""
    pem = _read_file(path, MAX_KEY_FILE_BYTES, "private key", private=True)
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(f"{path} is not a PEM private key: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigurationError(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
    raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                            serialization.NoEncryption())
    return SigningKey(raw)


def write_public_key(path: Path, public_key: bytes) -> None:
    pem = Ed25519PublicKey.from_public_bytes(public_key).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    try:
        path.write_bytes(pem)
    except OSError as exc:
        raise ConfigurationError(f"{path}: cannot write: {exc.strerror or exc}") from None


def load_public_key(path: Path) -> bytes:
    pem = _read_file(path, MAX_KEY_FILE_BYTES, "public key")
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(f"{path} is not a PEM public key: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigurationError(f"{path} is not an Ed25519 public key")
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def cert_to_json(cert: Certificate) -> dict[str, object]:
    return {"format": CERT_FORMAT, "agent": cert.agent, "role": cert.role,
            "public_key": _b64(cert.public_key), "not_before_at": cert.not_before_at,
            "not_after_at": cert.not_after_at, "serial": cert.serial,
            "signature": _b64(cert.signature)}


def cert_from_json(data: dict[str, Any], path: Path) -> Certificate:
    if not isinstance(data, dict) or data.get("format") != CERT_FORMAT:
        raise ConfigurationError(f"{path}: not an {CERT_FORMAT} certificate")
    try:
        agent = check_agent_id(_field(data, "agent", "text", path))
        role = check_role(_field(data, "role", "text", path))
    except ConfigurationError as exc:
        raise ConfigurationError(f"{path}: {exc}") from None
    return Certificate(
        agent=agent, role=role,
        public_key=_unb64(data.get("public_key"), "public_key", path, 32),
        not_before_at=_field(data, "not_before_at", "time", path),
        not_after_at=_field(data, "not_after_at", "time", path),
        serial=_field(data, "serial", "serial", path),
        signature=_unb64(data.get("signature"), "signature", path, 64))


def crl_to_json(crl: RevocationList) -> dict[str, object]:
    return {"format": CRL_FORMAT, "serial": crl.serial, "issued_at": crl.issued_at,
            "revoked": [{"agent": a, "serial": s} for a, s in crl.revoked],
            "signature": _b64(crl.signature)}


def crl_from_json(data: dict[str, Any], path: Path) -> RevocationList:
    if not isinstance(data, dict) or data.get("format") != CRL_FORMAT:
        raise ConfigurationError(f"{path}: not an {CRL_FORMAT} revocation list")
    entries = data.get("revoked", [])
    if not isinstance(entries, list):
        raise ConfigurationError(f"{path}: field 'revoked' must be a list")
    revoked: list[tuple[str, int]] = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ConfigurationError(f"{path}: revoked[{i}] must be an object")
        where = Path(f"{path}: revoked[{i}]")
        revoked.append((_field(entry, "agent", "text", where),
                        _field(entry, "serial", "serial", where)))
    return RevocationList(
        serial=_field(data, "serial", "serial", path),
        issued_at=_field(data, "issued_at", "time", path),
        revoked=tuple(revoked),
        signature=_unb64(data.get("signature"), "signature", path, 64))


def _read_json(path: Path) -> dict[str, Any]:
    raw = _read_file(path, MAX_JSON_FILE_BYTES, "file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigurationError(f"{path}: not UTF-8 text ({exc.reason} at byte "
                                 f"{exc.start})") from None
    depth = max_json_depth(text)
    if depth > MAX_JSON_DEPTH:
        raise ConfigurationError(f"{path}: JSON nested {depth} levels deep, more than the "
                                 f"{MAX_JSON_DEPTH} a key file may use")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from None
    except (ValueError, RecursionError) as exc:  # a 5000-digit number; nesting: a safety net
        raise ConfigurationError(f"{path}: invalid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigurationError(f"{path}: expected a JSON object")
    return data


def max_json_depth(text: str) -> int:
    """How deep ``[``/``{`` nest in JSON text (brackets inside strings skipped), found
    without parsing — ``json.loads`` would recurse once per level."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def _write_json(path: Path, data: dict[str, object]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        os.replace(tmp, path)
    except OSError as exc:
        raise ConfigurationError(f"{path}: cannot write: {exc.strerror or exc}") from None


@dataclass
class KeyDir:
    """A cell's keys directory.  Every method says what it did via its return value."""

    root: Path

    @property
    def authority_key_path(self) -> Path:
        return self.root / "authority.key"

    @property
    def authority_pub_path(self) -> Path:
        return self.root / "authority.pub"

    @property
    def crl_path(self) -> Path:
        return self.root / "revocations.json"

    def key_path(self, agent: str) -> Path:
        return self.root / "agents" / f"{check_agent_id(agent)}.key"

    def cert_path(self, agent: str) -> Path:
        return self.root / "agents" / f"{check_agent_id(agent)}.cert"

    def has_authority(self) -> bool:
        return self.authority_key_path.exists() or self.authority_pub_path.exists()

    def _require_authority(self) -> None:
        if not self.authority_pub_path.exists():
            raise ConfigurationError(
                f"no cell authority in {self.root}; create one with `autocell keys init --dir {self.root}`")

    # -- commands ---------------------------------------------------------
    def init(self, now: float) -> Path:
        """Create the authority key pair and an empty signed revocation list."""
        if self.has_authority():
            raise ConfigurationError(
                f"{self.root} already holds a cell authority; refusing to replace it "
                "(every certificate it issued would stop working)")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            os.chmod(self.root, 0o700)
        except OSError as exc:
            raise ConfigurationError(
                f"{self.root}: cannot make it the keys directory: {exc.strerror or exc} "
                "(name a new or empty directory, not a file)") from None
        key = SigningKey.generate()
        write_private_key(self.authority_key_path, key)
        write_public_key(self.authority_pub_path, key.public_key)
        _write_json(self.crl_path, crl_to_json(RevocationList(1, now).signed(key)))
        return self.authority_key_path

    def issue(self, agent: str, role: str, now: float,
              valid_s: float = DEFAULT_VALIDITY_S) -> tuple[Path, Path]:
        """Create ``agent``'s key pair and a certificate signed by the authority."""
        check_agent_id(agent)
        check_role(role)
        self._require_authority()
        if self.key_path(agent).exists() or self.cert_path(agent).exists():
            raise ConfigurationError(
                f"agent {agent!r} already has a key in {self.root / 'agents'}; "
                f"choose another id, or delete {self.key_path(agent)} and its .cert to re-issue "
                f"(revoke the old one first if it was ever deployed: `autocell keys revoke {agent}`)")
        authority = load_private_key(self.authority_key_path)
        # Serials never repeat, even after a revoked agent's files were deleted.
        serial = 1 + max([c.serial for c in self.certificates()]
                         + [s for _, s in self.revocations().revoked], default=0)
        key = SigningKey.generate()
        cert = Certificate.issue(authority, agent, role, key.public_key, now, now + valid_s, serial)
        write_private_key(self.key_path(agent), key)
        _write_json(self.cert_path(agent), cert_to_json(cert))
        return self.key_path(agent), self.cert_path(agent)

    def revoke(self, agent: str, now: float) -> RevocationList:
        """Add ``agent``'s current certificate (by serial) to the signed revocation list.

        Revoking by serial lets the agent id be re-issued a new certificate later.
        """
        self._require_authority()
        if not self.cert_path(agent).exists():
            raise ConfigurationError(f"no certificate for agent {agent!r} in {self.root}")
        cert = self.certificate(agent)
        authority = load_private_key(self.authority_key_path)
        old = self.revocations()
        if old.is_revoked(agent, cert.serial):
            raise ConfigurationError(f"agent {agent!r} (certificate #{cert.serial}) is already revoked")
        crl = RevocationList(old.serial + 1, now,
                             old.revoked + ((agent, cert.serial),)).signed(authority)
        _write_json(self.crl_path, crl_to_json(crl))
        return crl

    # -- reading ----------------------------------------------------------
    def authority(self) -> Verifier:
        self._require_authority()
        return Verifier(load_public_key(self.authority_pub_path))

    def certificates(self) -> list[Certificate]:
        folder = self.root / "agents"
        if not folder.is_dir():
            return []
        return [self.certificate_at(p) for p in sorted(folder.glob("*.cert"))]

    def certificate_at(self, path: Path) -> Certificate:
        return cert_from_json(_read_json(path), path)

    def certificate(self, agent: str) -> Certificate:
        path = self.cert_path(agent)
        if not path.exists():
            raise ConfigurationError(f"no certificate for agent {agent!r} in {self.root}")
        return self.certificate_at(path)

    def revocations(self) -> RevocationList:
        if not self.crl_path.exists():
            return RevocationList(0, 0.0)
        return crl_from_json(_read_json(self.crl_path), self.crl_path)

    def identity(self, agent: str) -> tuple[SigningKey, Certificate]:
        """The private key and certificate an agent signs with."""
        key = load_private_key(self.key_path(agent))
        cert = self.certificate(agent)
        if cert.public_key != key.public_key:
            raise ConfigurationError(f"{self.key_path(agent)} does not match {self.cert_path(agent)}")
        return key, cert

    def trust_store(self) -> TrustStore:
        """Every certificate in the directory, checked against the authority, plus the CRL."""
        store = TrustStore(self.authority())
        for cert in self.certificates():
            store.add(cert)
        if self.crl_path.exists():
            store.set_revocations(self.revocations())
        return store


@dataclass(frozen=True)
class EphemeralCell:
    """Keys and certificates made in memory for one run (no files)."""

    trust: TrustStore
    keys: dict[str, SigningKey]


def ephemeral_cell(agents: dict[str, str], *, seed: bytes | None = None,
                   not_before_at: float = 0.0, not_after_at: float = 1e12) -> EphemeralCell:
    """An authority and one certificate per ``agents`` entry (id → role).

    With ``seed`` the keys are derived deterministically — for reproducible
    virtual-time runs, where keys protect nothing outside the process.
    """
    def make(label: str) -> SigningKey:
        if seed is None:
            return SigningKey.generate()
        return SigningKey.from_deterministic_seed(seed + b"/" + label.encode())

    authority = make("authority")
    trust = TrustStore(authority.verifier())
    keys: dict[str, SigningKey] = {}
    for serial, (agent, role) in enumerate(sorted(agents.items()), start=1):
        key = make(agent)
        trust.add(Certificate.issue(authority, agent, role, key.public_key,
                                    not_before_at, not_after_at, serial))
        keys[agent] = key
    return EphemeralCell(trust, keys)
