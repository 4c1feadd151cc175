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
import hmac
import os
import secrets
from pathlib import Path
from typing import Any, Protocol

import bcrypt
from twisted.internet import defer, threads

__all__ = ["BcryptHasher", "PasswordHasher", "load_pin_pepper", "pin_index"]


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


# -- the PIN index (IVR: unknown callers identified by their PIN) --------------------------

#: the pepper's file in the state directory when [ivr] pin_pepper is not set
PIN_PEPPER_FILE = "pin-pepper"


def pin_index(pepper: bytes, pin: str) -> str:
    """The PIN's entry in the PIN index: HMAC-SHA256 keyed with the pepper, hex.

    The pepper is kept out of the database ([ivr] pin_pepper, or a file in the state
    directory), so a dump of the database alone does not reveal the PINs (4 to 12
    digits: an unkeyed hash of one would be reversed by trying them all)."""
    return hmac.new(pepper, pin.encode("ascii"), hashlib.sha256).hexdigest()


def load_pin_pepper(configured: str, state_dir: Path) -> bytes:
    """The PIN index's pepper: the configured one, else the state directory's file
    (made with 32 random bytes, mode 0600, on first use)."""
    if configured:
        return configured.encode("utf-8")
    path = Path(state_dir) / PIN_PEPPER_FILE
    try:
        return bytes.fromhex(path.read_text("ascii").strip())
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # made meanwhile by another process
        return bytes.fromhex(path.read_text("ascii").strip())
    pepper = secrets.token_bytes(32)
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(pepper.hex() + "\n")
    return pepper
