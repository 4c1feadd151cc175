"""Fixtures shared by the whole suite."""

from __future__ import annotations

import pytest

from tests.procs import RedisServer


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
