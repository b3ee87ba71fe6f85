"""Ed25519 primitives: one fast backend for signing and verifying.

We measured both libraries on the target machine (``autocell bench bus``
prints the figures every run): PyNaCl (libsodium) verifies about twice as
fast as ``cryptography`` (OpenSSL), so the hot path — sign and verify —
uses PyNaCl.  ``cryptography`` does what it does best: key serialisation
(PKCS#8 / SubjectPublicKeyInfo PEM, see :mod:`security.keystore`).

Keys here are raw 32-byte values; nothing in this module touches files.
"""

from __future__ import annotations

import nacl.bindings
import nacl.exceptions
import nacl.signing

LIBRARY = f"pynacl-{__import__('nacl').__version__} (libsodium)"
SIGNATURE_BYTES = 64
PUBLIC_KEY_BYTES = 32
SEED_BYTES = 32


class SigningKey:
    """An Ed25519 private key (seed) able to sign."""

    __slots__ = ("_sk", "public_key")

    def __init__(self, seed: bytes) -> None:
        if len(seed) != SEED_BYTES:
            raise ValueError(f"Ed25519 seed must be {SEED_BYTES} bytes, got {len(seed)}")
        self._sk = nacl.signing.SigningKey(seed)
        self.public_key: bytes = bytes(self._sk.verify_key)

    @classmethod
    def generate(cls) -> SigningKey:
        """A fresh key from the OS CSPRNG (key material is never seeded)."""
        return cls(bytes(nacl.signing.SigningKey.generate()))

    @classmethod
    def from_deterministic_seed(cls, seed: bytes) -> SigningKey:
        """A key derived from a seed — for reproducible virtual-time runs only."""
        return cls(nacl.bindings.crypto_hash_sha256(seed))

    @property
    def seed(self) -> bytes:
        return bytes(self._sk)

    def sign(self, data: bytes) -> bytes:
        """The detached 64-byte signature over ``data``."""
        return self._sk.sign(data).signature

    def verifier(self) -> Verifier:
        return Verifier(self.public_key)


class Verifier:
    """An Ed25519 public key able to verify; built once per certificate."""

    __slots__ = ("_vk", "public_key")

    def __init__(self, public_key: bytes) -> None:
        if len(public_key) != PUBLIC_KEY_BYTES:
            raise ValueError(f"Ed25519 public key must be {PUBLIC_KEY_BYTES} bytes")
        self.public_key = public_key
        self._vk = nacl.signing.VerifyKey(public_key)

    def verify(self, data: bytes, signature: bytes) -> bool:
        """True when ``signature`` is a valid signature of ``data``."""
        if len(signature) != SIGNATURE_BYTES:
            return False
        try:
            self._vk.verify(data, signature)
        except nacl.exceptions.BadSignatureError:
            return False
        return True


def fingerprint(public_key: bytes) -> str:
    """Short, stable, printable id of a public key (first 16 hex of SHA-256)."""
    return nacl.bindings.crypto_hash_sha256(public_key).hex()[:16]
