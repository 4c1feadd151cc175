"""Password and PIN hashing: bcrypt, off the reactor thread.

Secrets are first reduced to base64(SHA-256(secret)) so that bcrypt's 72-byte
limit neither truncates nor rejects long passwords (as passlib's
``bcrypt_sha256`` does), then hashed with bcrypt. Hashing and checking take
tens to hundreds of milliseconds on purpose, so :class:`BcryptHasher` runs them
in the reactor's thread pool; tests pass ``run_in_thread=False`` and few rounds.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any, Protocol

import bcrypt
from twisted.internet import defer, threads

__all__ = ["BcryptHasher", "PasswordHasher"]


class PasswordHasher(Protocol):
    """Hashes secrets and checks them against a hash; both return Deferreds."""

    def hash(self, secret: str) -> defer.Deferred[str]:
        """Fire with the hash of ``secret`` (a str)."""

    def check(self, secret: str, hashed: str | None) -> defer.Deferred[bool]:
        """Fire with whether ``secret`` matches ``hashed`` (False when ``hashed`` is None)."""


def _prehash(secret: str) -> bytes:
    return base64.b64encode(hashlib.sha256(secret.encode("utf-8")).digest())


class BcryptHasher:
    """bcrypt with ``rounds`` (log2 cost); in the reactor's thread pool unless told otherwise."""

    def __init__(self, reactor: Any = None, rounds: int = 12, run_in_thread: bool = True) -> None:
        if run_in_thread and reactor is None:
            raise ValueError("a reactor is needed to hash in its thread pool")
        self._reactor = reactor
        self._rounds = rounds
        self._threaded = run_in_thread
        # checked against when there is no hash, so "no such user" takes as long as a
        # wrong password and does not tell that the user does not exist (made lazily)
        self._dummy: bytes | None = None

    def _run(self, f: Any, *args: Any) -> defer.Deferred[Any]:
        if self._threaded:
            return threads.deferToThreadPool(self._reactor, self._reactor.getThreadPool(), f, *args)
        return defer.maybeDeferred(f, *args)

    def hash(self, secret: str) -> defer.Deferred[str]:
        """Fire with the bcrypt hash of ``secret``."""
        return self._run(self._hash, secret)

    def _hash(self, secret: str) -> str:
        return bcrypt.hashpw(_prehash(secret), bcrypt.gensalt(self._rounds)).decode("ascii")

    def check(self, secret: str, hashed: str | None) -> defer.Deferred[bool]:
        """Fire with whether ``secret`` matches ``hashed`` (constant time, via bcrypt)."""
        return self._run(self._check, secret, hashed)

    def _check(self, secret: str, hashed: str | None) -> bool:
        if not hashed:
            if self._dummy is None:
                self._dummy = bcrypt.hashpw(b"x", bcrypt.gensalt(self._rounds))
            bcrypt.checkpw(_prehash(secret), self._dummy)
            return False
        try:
            return bcrypt.checkpw(_prehash(secret), hashed.encode("ascii"))
        except ValueError:  # a corrupt hash is a mismatch, not a crash
            return False
