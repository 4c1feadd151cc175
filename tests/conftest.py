"""Fixtures shared by the whole suite."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher

from callbackd.store.memory import MemoryStore
from tests.procs import RedisServer
from tests.stores import redis_store


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A real redis-server for the session, on a free loopback port."""
    server = RedisServer.start(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def clean_redis(redis_server):
    """The session's redis-server, emptied before the test."""
    redis_server.flush()
    return redis_server


@pytest_twisted.async_yield_fixture(params=["memory", "redis"])
async def store(request):
    """Each test asking for it runs once per IStore implementation (the contract's way)."""
    if request.param == "memory":
        yield MemoryStore(Clock())
        return
    server = request.getfixturevalue("clean_redis")
    s = redis_store(server.port)
    await s.connect(timeout=5)
    yield s
    await s.disconnect()


@pytest.fixture
def failures():
    """The failures logged meanwhile (a front must log none for bad input)."""
    logged = []

    def observe(event):
        if "log_failure" in event:
            logged.append(event)

    globalLogPublisher.addObserver(observe)
    yield logged
    globalLogPublisher.removeObserver(observe)
