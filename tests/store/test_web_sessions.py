"""The IStore contract of the portal's logins (create/get/delete_web_session), run
against MemoryStore and RedisStore on a real redis-server."""

from __future__ import annotations

import hashlib

import pytest
import pytest_twisted
from twisted.internet import reactor, task

from callbackd.store.interface import InvalidArgument
from callbackd.store.memory import MemoryStore


async def pass_time(store, seconds: float) -> None:
    """Let ``seconds`` go by for the store: its clock (memory) or the real one (Redis)."""
    if isinstance(store, MemoryStore):
        store.clock.advance(seconds)
    else:
        await task.deferLater(reactor, seconds, lambda: None)


@pytest_twisted.ensureDeferred
async def test_a_login_reads_back_until_deleted(store):
    """A token gives the login's username and role until it is deleted."""
    token = await store.create_web_session("alice", "user", 600)
    other = await store.create_web_session("alice", "operator", 600)
    assert token != other and len(token) == 43
    found = await store.get_web_session(token)
    assert (found["username"], found["role"]) == ("alice", "user")
    assert isinstance(found["created_at"], float)
    assert (await store.get_web_session(other))["role"] == "operator"
    assert await store.delete_web_session(token) is True
    assert await store.get_web_session(token) is None
    assert await store.delete_web_session(token) is False
    assert (await store.get_web_session(other))["username"] == "alice"


@pytest_twisted.ensureDeferred
async def test_a_login_expires(store):
    """A login is gone ``ttl`` seconds after it was made."""
    token = await store.create_web_session("bob", "user", 1)
    assert await store.get_web_session(token) is not None
    await pass_time(store, 1.3)
    assert await store.get_web_session(token) is None
    assert await store.delete_web_session(token) is False


@pytest_twisted.ensureDeferred
async def test_unknown_and_malformed_tokens_open_nothing(store):
    """A made-up, empty, too long or non-string token is no login (no error either)."""
    await store.create_web_session("alice", "user", 600)
    for token in ["A" * 43, "", "x" * 5000, "../../etc", None, 42]:
        assert await store.get_web_session(token) is None
        assert await store.delete_web_session(token) is False


@pytest_twisted.ensureDeferred
async def test_bad_login_fields_are_refused(store):
    """A bad username, role or ttl errbacks InvalidArgument."""
    for args in [
        ("no spaces", "user", 60),
        ("alice", "Bad Role", 60),
        ("alice", "", 60),
        ("alice", "user", 0),
        ("alice", "user", 86401),
        ("alice", "user", 1.5),
    ]:
        with pytest.raises(InvalidArgument):
            await store.create_web_session(*args)


@pytest_twisted.ensureDeferred
async def test_only_a_digest_of_the_token_is_stored(clean_redis):
    """Redis holds the SHA-256 of the token, never the token itself."""
    from tests.integration.daemon import redis_command
    from tests.stores import redis_store

    store = redis_store(clean_redis.port)
    await store.connect(timeout=5)
    try:
        token = await store.create_web_session("alice", "user", 600)
    finally:
        await store.disconnect()
    keys = redis_command(clean_redis.port, "KEYS", "cb:web:*")
    assert keys == [b"cb:web:" + hashlib.sha256(token.encode()).hexdigest().encode()]
    ttl = redis_command(clean_redis.port, "TTL", keys[0].decode())
    assert 590 <= ttl <= 600
