"""The portal's security: CSRF tokens, login throttling, response headers, cookies.

* CSRF: every form carries :func:`csrf_token` of the request's *basis*, the login's token
  (the session cookie) or, before login, a random pre-login cookie. The token is a
  SHA-256 of the basis, so it cannot be forged without the basis (an HttpOnly cookie no
  other site can read) and tells nothing of it. A POST whose token does not match is
  refused before anything happens.
* Login throttling (:class:`LoginThrottle`): failed logins are counted per username and
  per client address over a window; past the limit every login of that name or address
  is refused, right password or not, unknown name or not, with the same answer.
* :data:`SECURITY_HEADERS`: a Content-Security-Policy allowing only the portal's own
  scripts and styles (no inline script), no framing, no sniffing, no referrer leaks.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import deque
from typing import Final

from twisted.internet.interfaces import IReactorTime

__all__ = [
    "ANON_COOKIE",
    "SECURITY_HEADERS",
    "SESSION_COOKIE",
    "LoginThrottle",
    "csrf_matches",
    "csrf_token",
    "new_anon_key",
]

#: the login's cookie: the token of a web session in the store
SESSION_COOKIE: Final = b"callbackd_session"
#: the pre-login cookie: the basis of the login form's CSRF token
ANON_COOKIE: Final = b"callbackd_anon"

SECURITY_HEADERS: Final = {
    b"content-security-policy": (
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self';"
        b" connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    b"x-content-type-options": b"nosniff",
    b"x-frame-options": b"DENY",
    b"referrer-policy": b"same-origin",
    b"cross-origin-opener-policy": b"same-origin",
    b"permissions-policy": b"camera=(), microphone=(), geolocation=()",
    b"cache-control": b"no-store",
}
#: sent over TLS only: browsers keep to HTTPS for a year
HSTS: Final = (b"strict-transport-security", b"max-age=31536000")


def new_anon_key() -> str:
    """A fresh random pre-login basis (the value of :data:`ANON_COOKIE`)."""
    return secrets.token_urlsafe(32)


def csrf_token(basis: str) -> str:
    """The CSRF token of the forms of a request whose basis is ``basis``."""
    return hashlib.sha256(b"callbackd-csrf:" + basis.encode("utf-8")).hexdigest()


def csrf_matches(basis: str | None, token: str | None) -> bool:
    """Whether ``token`` is the CSRF token of ``basis`` (compared in constant time)."""
    if not basis or not token:
        return False
    return hmac.compare_digest(csrf_token(basis).encode(), token.encode("utf-8", "replace"))


#: an address may fail this many times the failures allowed to a name
ADDRESS_FACTOR: Final = 10
#: names and addresses counted at most (beyond, the expired ones are dropped first)
MAX_THROTTLED: Final = 100_000


class LoginThrottle:
    """Failed logins per username and per client address, each over a sliding window.

    ``attempts`` failures of one name within ``window`` seconds close the logins of that
    name, and ``attempts * ADDRESS_FACTOR`` failures from one address close the logins
    from that address (many people may share one address behind a NAT), until the
    oldest failure is older than the window. A success does not clear the count: it
    would let a guesser who knows one password reset the count of an address.
    """

    def __init__(self, clock: IReactorTime, attempts: int = 5, window: float = 300.0) -> None:
        self.clock = clock
        self.attempts = attempts
        self.window = window
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, key: str) -> int:
        """How many failures of ``key`` the window holds (forgetting the older ones)."""
        found = self._failures.get(key)
        if found is None:
            return 0
        cutoff = self.clock.seconds() - self.window
        while found and found[0] <= cutoff:
            found.popleft()
        if not found:
            del self._failures[key]
        return len(found)

    def allowed(self, username: str, address: str) -> bool:
        """Whether a login of ``username`` from ``address`` may be tried now."""
        name, peer = _keys(username, address)
        return (
            self._recent(name) < self.attempts
            and self._recent(peer) < self.attempts * ADDRESS_FACTOR
        )

    def failed(self, username: str, address: str) -> None:
        """Count a failed login of ``username`` from ``address``."""
        now = self.clock.seconds()
        if len(self._failures) >= MAX_THROTTLED:
            # a spray of made-up names: forget what the window has left behind
            for key in list(self._failures):
                self._recent(key)
        for key in _keys(username, address):
            self._recent(key)
            self._failures.setdefault(key, deque()).append(now)


def _keys(username: str, address: str) -> tuple[str, str]:
    return "u:" + username.strip().lower()[:64], "a:" + address
