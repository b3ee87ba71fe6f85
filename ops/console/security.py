"""Sessions, CSRF tokens and login throttling for the console — no HTTP here.

Theory of operation.  A session lives on the server (:class:`SessionStore`);
the browser holds only its random 256-bit id, HMAC-signed with a key made at
start-up, in an ``HttpOnly; SameSite=Strict`` cookie (``Secure`` under TLS).
Every visitor gets an anonymous session on the login page, so the login form
has a CSRF token too; a successful login *replaces* that session with a new
id (no session fixation).  A session ends after ``idle_timeout_s`` without a
request from the person (automatic requests — live updates — do not count)
or ``absolute_timeout_s`` after login, whichever comes first, and at logout.
Sessions do not survive a restart of the console: people log in again.

Every state change is a POST carrying the session's CSRF token, compared in
constant time; SameSite=Strict is a second wall, not the only one.

Failed logins are counted per user name and per client address within
``window_s``; at ``max_failures`` for a name (``max_client_failures`` for a
client, which may be a shared tablet) it is locked for ``lockout_s`` and told so, even if the next password is right.  A success
clears the user's count.  The clock is injected so tests can jump over time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["SECURITY_HEADERS", "LoginThrottle", "Session", "SessionStore"]

#: Sent with every response.  No inline script or style anywhere, so the CSP is strict.
SECURITY_HEADERS: dict[str, str] = {
    "Content-Security-Policy": ("default-src 'none'; script-src 'self'; style-src 'self'; "
                                "img-src 'self'; connect-src 'self'; form-action 'self'; "
                                "frame-ancestors 'none'; base-uri 'none'"),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
}


@dataclass
class Session:
    id: str
    csrf: str
    created_at: float
    last_seen_at: float
    user: str = ""          # "" while anonymous
    role: str = ""

    @property
    def authenticated(self) -> bool:
        return bool(self.user)


@dataclass
class SessionStore:
    """Server-side sessions with idle and absolute time-outs."""

    idle_timeout_s: float = 900.0
    absolute_timeout_s: float = 8 * 3600.0
    clock: Callable[[], float] = time.time
    _key: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    _sessions: dict[str, Session] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        if self.idle_timeout_s <= 0 or self.absolute_timeout_s <= 0:
            raise ValueError("session time-outs must be positive")

    # -- cookie value -------------------------------------------------------------------

    def cookie_value(self, session: Session) -> str:
        mac = hmac.new(self._key, session.id.encode(), hashlib.sha256).hexdigest()
        return f"{session.id}.{mac}"

    def _id_from_cookie(self, value: str) -> str | None:
        sid, _, mac = value.partition(".")
        good = hmac.new(self._key, sid.encode(), hashlib.sha256).hexdigest()
        return sid if sid and hmac.compare_digest(mac, good) else None

    # -- life cycle ---------------------------------------------------------------------

    def new(self, user: str = "", role: str = "") -> Session:
        now = self.clock()
        s = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), now, now, user, role)
        with self._lock:
            self._purge(now)
            self._sessions[s.id] = s
        return s

    def lookup(self, cookie: str | None, *, touch: bool) -> tuple[Session | None, bool]:
        """The live session for a cookie, and whether one existed but expired.

        ``touch`` marks the session as used by the person now (idle timer).
        """
        sid = self._id_from_cookie(cookie) if cookie else None
        if sid is None:
            return None, False
        now = self.clock()
        with self._lock:
            s = self._sessions.get(sid)
            if s is None:
                return None, False
            if self._expired(s, now):
                del self._sessions[sid]
                return None, s.authenticated
            if touch:
                s.last_seen_at = now
            return s, False

    def alive(self, session: Session) -> bool:
        with self._lock:
            return (session.id in self._sessions
                    and not self._expired(session, self.clock()))

    def login(self, old: Session | None, user: str, role: str) -> Session:
        """A fresh authenticated session replacing ``old`` (fixation defence)."""
        if old is not None:
            self.end(old)
        return self.new(user, role)

    def end(self, session: Session) -> None:
        with self._lock:
            self._sessions.pop(session.id, None)

    def _expired(self, s: Session, now: float) -> bool:
        return (now - s.last_seen_at >= self.idle_timeout_s
                or now - s.created_at >= self.absolute_timeout_s)

    def _purge(self, now: float) -> None:
        for sid in [sid for sid, s in self._sessions.items() if self._expired(s, now)]:
            del self._sessions[sid]


def csrf_ok(session: Session | None, token: str | None) -> bool:
    if session is None or not token:
        return False
    return hmac.compare_digest(session.csrf, token)


@dataclass
class LoginThrottle:
    """Failed logins per user name and per client within a window; lockout after too many."""

    max_failures: int = 5
    max_client_failures: int = 20
    window_s: float = 900.0
    lockout_s: float = 900.0
    clock: Callable[[], float] = time.time
    _failures: dict[str, deque[float]] = field(default_factory=dict)
    _locked_until: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def locked_for(self, user: str, client: str) -> float:
        """Seconds until the user or the client may try again (0 when not locked)."""
        now = self.clock()
        with self._lock:
            return max(0.0, *(self._locked_until.get(k, 0.0) - now
                              for k in self._keys(user, client)))

    def failed(self, user: str, client: str) -> None:
        now = self.clock()
        with self._lock:
            for k in self._keys(user, client):
                q = self._failures.setdefault(k, deque())
                q.append(now)
                while q and now - q[0] > self.window_s:
                    q.popleft()
                limit = self.max_failures if k.startswith("user:") else self.max_client_failures
                if len(q) >= limit:
                    self._locked_until[k] = now + self.lockout_s
                    q.clear()

    def succeeded(self, user: str) -> None:
        with self._lock:
            self._failures.pop(f"user:{user}", None)

    @staticmethod
    def _keys(user: str, client: str) -> tuple[str, str]:
        return (f"user:{user}", f"client:{client}")
