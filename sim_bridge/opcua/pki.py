"""The gateway's OPC UA identity, its trust list of servers, and its credentials file.

Theory of operation
-------------------
OPC UA secures a link with X.509 application certificates on both ends
(docs/equipment.md, Security).  The gateway keeps its own in the cell's keys
directory, beside the agent keys, and never sends anything to a server it
has not been told to trust::

    KEYS/opcua/own/cert.der     the gateway's application certificate (created once)
    KEYS/opcua/own/key.pem      its RSA key, mode 0600 (refused when group/others can read)
    KEYS/opcua/trusted/*.der    server certificates the operator trusts
    KEYS/opcua/rejected/*.der   certificates of servers that were refused, to inspect

Trust is by the exact certificate (its SHA-256 thumbprint), as an OPC UA
client's trust list is: an operator puts a server's certificate into
``trusted/`` (``autocell equipment trust URL`` fetches it and shows its
thumbprint first).  An untrusted server is refused before a session is
opened, with a message saying how to trust it; its certificate is kept in
``rejected/`` so the operator can compare thumbprints with the machine's HMI.

Credentials never stand in the cell file.  A machine's ``user`` names an entry
of the secrets file (``security.opcua_secrets``, default
``KEYS/opcua-secrets.yaml``)::

    line-a:
      username: gateway
      password: "..."

which is read like a private key: a regular file, mode 0600, bounded size.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import socket
import stat
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from security.errors import ConfigurationError, InsecureKeyFile
from security.untrusted import UnreadableFile, read_regular_file, shown

__all__ = ["APPLICATION_URI", "Credentials", "OpcUaPki", "UntrustedServer", "load_secrets",
           "thumbprint"]

APPLICATION_URI = "urn:autocell:gateway"
MAX_CERT_BYTES = 64 * 1024
MAX_SECRETS_BYTES = 256 * 1024


class UntrustedServer(ConfigurationError):
    """A server presented a certificate that is not on the gateway's trust list."""

    def __init__(self, endpoint: str, thumb: str, kept: Path, trusted_dir: Path) -> None:
        self.endpoint = endpoint
        self.thumbprint = thumb
        super().__init__(
            f"{endpoint}: the server's certificate (SHA-256 {thumb}) is not trusted; "
            f"compare the thumbprint with the machine's, then trust it with "
            f"`autocell equipment trust {endpoint} --keys-dir ...` or copy {kept} into "
            f"{trusted_dir}/")


def thumbprint(der: bytes) -> str:
    """SHA-256 of a DER certificate, upper-case hex in pairs (as HMIs show it)."""
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def _private_file(path: Path, limit: int, what: str) -> bytes:
    def mode_ok(status: os.stat_result) -> None:
        mode = stat.S_IMODE(status.st_mode)
        if mode & 0o077:
            raise InsecureKeyFile(str(path), mode)

    try:
        return read_regular_file(path, limit=limit, what=what, check=mode_ok)
    except UnreadableFile as exc:
        if "no such" in exc.problem:
            raise ConfigurationError(f"{what} {path} does not exist") from None
        raise


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str


def load_secrets(path: Path) -> dict[str, Credentials]:
    """The credentials file: ``NAME: {username, password}``; 0600, or refused."""
    text = _private_file(path, MAX_SECRETS_BYTES, "OPC UA secrets file")
    try:
        data = yaml.safe_load(text.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigurationError(f"{path}: not a YAML file of credentials: "
                                 f"{shown(str(exc).splitlines()[0] if str(exc) else exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigurationError(f"{path}: expected `NAME: {{username: ..., password: ...}}` "
                                 f"entries, found {type(data).__name__}")
    out: dict[str, Credentials] = {}
    for name, entry in data.items():
        if (not isinstance(entry, dict) or set(entry) != {"username", "password"}
                or not all(isinstance(v, str) for v in entry.values())):
            raise ConfigurationError(f"{path}: entry {shown(name)} must be exactly "
                                     "`{username: TEXT, password: TEXT}`")
        out[str(name)] = Credentials(entry["username"], entry["password"])
    return out


class OpcUaPki:
    """The gateway's certificate, key and trust list under ``root`` (``KEYS/opcua``)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.cert_path = root / "own" / "cert.der"
        self.key_path = root / "own" / "key.pem"
        self.trusted_dir = root / "trusted"
        self.rejected_dir = root / "rejected"

    # -- the gateway's own identity --------------------------------------------------------------
    def ensure_own(self, *, valid_days: int = 3650) -> tuple[bytes, bytes]:
        """The gateway's certificate (DER) and key (PEM), created once (key 0600)."""
        if self.cert_path.exists() and self.key_path.exists():
            key = _private_file(self.key_path, MAX_CERT_BYTES, "OPC UA private key")
            cert = read_regular_file(self.cert_path, limit=MAX_CERT_BYTES,
                                     what="OPC UA certificate")
            return cert, key
        key_obj = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "autocell gateway"),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, "autocell")])
        now = datetime.datetime.now(datetime.UTC)
        cert_obj = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key_obj.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=valid_days))
            .add_extension(x509.SubjectAlternativeName([
                x509.UniformResourceIdentifier(APPLICATION_URI),
                x509.DNSName(socket.gethostname()), x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=True, key_encipherment=True,
                data_encipherment=True, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH,
                                                  ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(key_obj, hashes.SHA256()))
        cert = cert_obj.public_bytes(serialization.Encoding.DER)
        key = key_obj.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.TraditionalOpenSSL,
                                    serialization.NoEncryption())
        self.cert_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, key)
        finally:
            os.close(fd)
        self.cert_path.write_bytes(cert)
        return cert, key

    # -- the trust list --------------------------------------------------------------------------
    def trusted(self) -> dict[str, Path]:
        """Thumbprint -> file of every trusted server certificate (DER or PEM)."""
        out: dict[str, Path] = {}
        if not self.trusted_dir.is_dir():
            return out
        for path in sorted(self.trusted_dir.iterdir()):
            if not path.is_file() or path.suffix.lower() not in (".der", ".pem", ".crt"):
                continue
            der = _as_der(read_regular_file(path, limit=MAX_CERT_BYTES,
                                            what="trusted certificate"), path)
            out[thumbprint(der)] = path
        return out

    def check(self, endpoint: str, der: bytes) -> None:
        """Pass a trusted server certificate; refuse any other with :class:`UntrustedServer`."""
        thumb = thumbprint(der)
        if thumb in self.trusted():
            return
        self.rejected_dir.mkdir(parents=True, exist_ok=True)
        kept = self.rejected_dir / f"{thumb.replace(':', '')[:16].lower()}.der"
        kept.write_bytes(der)
        raise UntrustedServer(endpoint, thumb, kept, self.trusted_dir)

    def trust(self, der: bytes) -> Path:
        """Put a server certificate on the trust list; returns its file."""
        self.trusted_dir.mkdir(parents=True, exist_ok=True)
        path = self.trusted_dir / f"{thumbprint(der).replace(':', '')[:16].lower()}.der"
        path.write_bytes(der)
        return path


def _as_der(data: bytes, path: Path) -> bytes:
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(data).public_bytes(serialization.Encoding.DER)
        return x509.load_der_x509_certificate(data).public_bytes(serialization.Encoding.DER)
    except ValueError as exc:
        raise ConfigurationError(f"{path}: not an X.509 certificate: {exc}") from None
