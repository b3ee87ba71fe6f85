"""The error hierarchy of autocell.

Three families, translated at the boundaries (docs/architecture.md, Style 6):

* :class:`ConfigurationError` — the operator's input is wrong (a key file, a
  role name, a cell file).  Raised at start-up, shown to a person, exit 2.
* :class:`ProtocolBug` — our own code broke a rule it controls (an illegal
  transition requested by local logic).  A bug: fail loudly.
* :class:`Rejected` — a peer sent something we will not act on.  Never
  crashes a host: the message is dropped, counted under :attr:`reason`, and
  logged once with :meth:`context`.

Every error says what happened, where, and — where a person can act — how
to fix it.
"""

from __future__ import annotations

from typing import Any


class AutocellError(Exception):
    """Base of every error autocell raises on purpose."""


class ConfigurationError(AutocellError):
    """Bad operator input: files, flags, permissions.  Exit code 2 at the CLI."""


class InsecureKeyFile(ConfigurationError):
    """A private key file is readable by group or others."""

    def __init__(self, path: str, mode: int) -> None:
        self.path = path
        self.mode = mode
        super().__init__(
            f"refusing to load private key {path}: mode {mode:04o} lets group/others read it; "
            f"fix with: chmod 600 {path}"
        )


class DamagedState(ConfigurationError):
    """A file autocell keeps its state in — an SQLite store, a journal — is damaged or is not
    that file.  Names the file and what to do; exit 2 at the command line (issue 20, class 5).
    """

    def __init__(self, path: object, what: str, detail: str) -> None:
        self.path = str(path)
        self.what = what
        self.detail = detail
        article = "an" if what[:1].lower() in "aeiou" else "a"
        super().__init__(
            f"{self.path}: the {what} cannot be read ({detail}); it is damaged or not "
            f"{article} {what}: "
            f"move it aside (mv {self.path} {self.path}.damaged) to start without it, or "
            "restore it from a backup")


class ProtocolBug(AutocellError):
    """Local code asked for something the protocol forbids (a bug, not a peer)."""


class Rejected(AutocellError):
    """A message from a peer was refused.  Subclasses name the reason.

    ``reason`` is a stable snake_case label used for metrics; ``sender`` is
    the claimed sender id (unverified unless the reason says otherwise);
    ``detail`` is a short human explanation.
    """

    reason = "rejected"

    def __init__(self, detail: str, *, sender: str | None = None, msg_type: str | None = None,
                 **extra: Any) -> None:
        self.detail = detail
        self.sender = sender
        self.msg_type = msg_type
        self.extra = extra
        super().__init__(detail)

    def __str__(self) -> str:
        # Built on demand: the codec fills in sender and type as it learns them.
        who = f" from {self.sender!r}" if self.sender is not None else ""
        what = f" ({self.msg_type})" if self.msg_type else ""
        return f"{self.reason}: message{who}{what}: {self.detail}"

    def context(self) -> dict[str, Any]:
        """A flat dict for one structured log line."""
        ctx: dict[str, Any] = {"reason": self.reason, "detail": self.detail}
        if self.sender is not None:
            ctx["sender"] = self.sender
        if self.msg_type is not None:
            ctx["type"] = self.msg_type
        ctx.update(self.extra)
        return ctx


class Malformed(Rejected):
    """Framing, size, depth, encoding or schema is wrong."""

    reason = "malformed"


class UnknownSender(Rejected):
    """No certificate for the claimed sender id."""

    reason = "unknown_sender"


class BadSignature(Rejected):
    """The Ed25519 signature does not verify against the sender's certificate."""

    reason = "bad_signature"


class Revoked(Rejected):
    """The sender's certificate is on the authority's revocation list."""

    reason = "revoked"


class CertificateExpired(Rejected):
    """The sender's certificate is outside its validity window."""

    reason = "certificate_expired"


class Replayed(Rejected):
    """The (epoch, seq) pair was seen before or is too old to judge."""

    reason = "replayed"


class ClockSkew(Rejected):
    """The sender's timestamp is too far from the receiver's clock."""

    reason = "clock_skew"


class Forbidden(Rejected):
    """The sender's role may not send this message type."""

    reason = "forbidden"


class Misdirected(Rejected):
    """The message is addressed to an agent this host does not run."""

    reason = "misdirected"


REJECT_REASONS: tuple[str, ...] = tuple(
    cls.reason
    for cls in (Malformed, UnknownSender, BadSignature, Revoked, CertificateExpired,
                Replayed, ClockSkew, Forbidden, Misdirected)
)
