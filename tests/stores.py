"""Stores for tests: a RedisStore on the suite's redis-server, with cheap bcrypt.

The ``store`` fixture (tests/conftest.py) gives each test that asks for it a
MemoryStore and a RedisStore in turn: the IStore contract's way of running one test
against both implementations, wherever the test lives.
"""

from __future__ import annotations

from twisted.internet.endpoints import TCP4ClientEndpoint

from callbackd.store.hashing import BcryptHasher
from callbackd.store.redis import RedisStore

__all__ = ["redis_store"]


def redis_store(port: int, **kwargs) -> RedisStore:
    """A RedisStore on the loopback redis-server at ``port``, with cheap bcrypt."""
    from twisted.internet import reactor

    kwargs.setdefault("timeout", 2.0)
    kwargs.setdefault("clock", reactor)
    return RedisStore(
        TCP4ClientEndpoint(reactor, "127.0.0.1", port),
        password_hasher=BcryptHasher(reactor, rounds=4),
        address=f"127.0.0.1:{port}",
        **kwargs,
    )
