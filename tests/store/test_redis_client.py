"""The store's txredisapi connections against real redis-servers: pipelining, order, AUTH,
subscriptions, restarts, the encoder."""

from __future__ import annotations

import time

import pytest_twisted
from twisted.internet import defer, reactor, task
from twisted.internet.endpoints import TCP4ClientEndpoint

from callbackd.store.client import Commands, RedisConnectionError, RedisError, encode_command
from callbackd.store.client import Feed as Subscription
from tests.procs import RedisServer


def endpoint(port: int) -> TCP4ClientEndpoint:
    """The loopback redis-server at ``port``."""
    return TCP4ClientEndpoint(reactor, "127.0.0.1", port)


async def ready_client(port: int, **kwargs) -> Commands:
    """A started Commands, once its connection is ready."""
    ready: defer.Deferred[None] = defer.Deferred()
    c = Commands(
        endpoint(port),
        reactor,
        on_ready=lambda: None if ready.called else ready.callback(None),
        initial_delay=0.05,
        max_reconnect_delay=0.2,
        **kwargs,
    )
    c.start()
    await ready.addTimeout(5, reactor)
    return c


async def eventually(check, timeout: float = 10.0):
    """Poll ``check()`` until it is true or time runs out."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await task.deferLater(reactor, 0.02, lambda: None)


@pytest_twisted.ensureDeferred
async def test_thousands_of_pipelined_commands_answer_in_order(clean_redis):
    """5,000 INCRs issued in one turn get 1..5000, each its own reply."""
    c = await ready_client(clean_redis.port)
    try:
        replies = await defer.gatherResults([c.execute("INCR", "n") for _ in range(5000)])
        assert replies == list(range(1, 5001))
    finally:
        await c.stop()


@pytest_twisted.ensureDeferred
async def test_commands_run_in_the_order_issued(clean_redis):
    """A write then a read issued without waiting: the read sees the write."""
    c = await ready_client(clean_redis.port)
    try:
        writes = [c.execute("RPUSH", "l", str(i)) for i in range(100)]
        read = c.execute("LRANGE", "l", 0, -1)
        await defer.gatherResults(writes)
        assert await read == [str(i) for i in range(100)]
    finally:
        await c.stop()


@pytest_twisted.ensureDeferred
async def test_scripts_are_loaded_before_ready(clean_redis):
    """The given scripts are in the script cache as soon as the client is ready."""
    source = "return 42"
    c = await ready_client(clean_redis.port, scripts=[source])
    try:
        import hashlib

        sha = hashlib.sha1(source.encode()).hexdigest()
        assert await c.execute("EVALSHA", sha, 0) == 42
    finally:
        await c.stop()


@pytest_twisted.ensureDeferred
async def test_error_reply_and_types(clean_redis):
    """Error replies errback RedisError; nil is None; integers are ints; text is str."""
    c = await ready_client(clean_redis.port)
    try:
        await c.execute("SET", "k", "välue")
        assert await c.execute("GET", "k") == "välue"
        assert await c.execute("GET", "missing") is None
        assert await c.execute("EXISTS", "k") == 1
        try:
            await c.execute("INCR", "k")
        except RedisError as e:
            assert "not an integer" in str(e)
        else:
            raise AssertionError("INCR of text succeeded")
    finally:
        await c.stop()


@pytest_twisted.ensureDeferred
async def test_auth_and_db_on_a_password_server(tmp_path):
    """With the right password and db 2, commands work and land in db 2."""
    server = RedisServer.start(tmp_path / "r", password="pw here")
    try:
        c = await ready_client(server.port, password="pw here", db=2)
        try:
            await c.execute("SET", "k", "v")
            assert " db=2 " in await c.execute("CLIENT", "INFO")
        finally:
            await c.stop()
    finally:
        server.stop()


@pytest_twisted.ensureDeferred
async def test_wrong_password_never_gets_ready(tmp_path):
    """A wrong password is reported as an error and the client stays not ready."""
    server = RedisServer.start(tmp_path / "r", password="right")
    wrong = "hunter2-not-it"
    errors: list[str] = []
    c = Commands(
        endpoint(server.port),
        reactor,
        password=wrong,
        on_error=errors.append,
        initial_delay=0.05,
        max_reconnect_delay=0.1,
    )
    try:
        c.start()
        await eventually(lambda: errors)
        assert c.connection is None
        assert not any(wrong in e for e in errors)
    finally:
        await c.stop()
        server.stop()


@pytest_twisted.ensureDeferred
async def test_restart_fails_pending_then_reconnects(tmp_path):
    """Redis going away fails what was pending; once back the client is ready again."""
    server = RedisServer.start(tmp_path / "r")
    c = await ready_client(server.port)
    try:
        server.stop()
        await eventually(lambda: c.connection is None)
        try:
            await c.execute("PING")
        except RedisConnectionError:
            pass
        else:
            raise AssertionError("PING succeeded with Redis down")
        server = RedisServer.start_on(tmp_path / "r", server.port)
        await eventually(lambda: c.connection is not None)
        assert await c.execute("PING") == "PONG"
    finally:
        await c.stop()
        server.stop()


class Recorder:
    """Records a Subscription's messages and states."""

    def __init__(self):
        self.messages: list[tuple[str, str]] = []
        self.states: list[bool] = []


def subscribe(port: int, feed: Recorder, channels=("ch1", "ch2"), **kwargs) -> Subscription:
    """A started Subscription recording into ``feed``."""
    sub = Subscription(
        endpoint(port),
        list(channels),
        lambda channel, message: feed.messages.append((channel, message)),
        feed.states.append,
        reactor,
        initial_delay=0.05,
        max_reconnect_delay=0.2,
        **kwargs,
    )
    sub.start()
    return sub


@pytest_twisted.ensureDeferred
async def test_subscription_delivers_published_messages_in_order(clean_redis):
    """Messages PUBLISHed from another connection arrive in order, per channel name."""
    feed = Recorder()
    sub = subscribe(clean_redis.port, feed)
    c = await ready_client(clean_redis.port)
    try:
        await eventually(lambda: feed.states == [True])
        sent = [("ch1" if i % 3 else "ch2", f"m{i} é") for i in range(300)]
        counts = await defer.gatherResults([c.execute("PUBLISH", ch, m) for ch, m in sent])
        assert counts == [1] * 300
        await eventually(lambda: len(feed.messages) == 300)
        assert feed.messages == sent
    finally:
        await c.stop()
        await sub.stop()


@pytest_twisted.ensureDeferred
async def test_subscription_survives_a_server_restart(tmp_path):
    """After a restart the subscription reports False, then True, and receives again."""
    server = RedisServer.start(tmp_path / "r")
    feed = Recorder()
    sub = subscribe(server.port, feed, password=None)
    try:
        await eventually(lambda: feed.states == [True])
        server.stop()
        await eventually(lambda: feed.states == [True, False])
        server = RedisServer.start_on(tmp_path / "r", server.port)
        await eventually(lambda: feed.states == [True, False, True])
        c = await ready_client(server.port)
        try:
            await c.execute("PUBLISH", "ch2", "after")
            await eventually(lambda: feed.messages == [("ch2", "after")])
        finally:
            await c.stop()
    finally:
        await sub.stop()
        server.stop()


@pytest_twisted.ensureDeferred
async def test_subscription_with_password(tmp_path):
    """A Subscription authenticates before subscribing."""
    server = RedisServer.start(tmp_path / "r", password="pw")
    feed = Recorder()
    sub = subscribe(server.port, feed, password="pw")
    try:
        await eventually(lambda: feed.states == [True])
        c = await ready_client(server.port, password="pw")
        try:
            await c.execute("PUBLISH", "ch1", "x")
            await eventually(lambda: feed.messages == [("ch1", "x")])
        finally:
            await c.stop()
    finally:
        await sub.stop()
        server.stop()


@pytest_twisted.ensureDeferred
async def test_floats_reach_redis_exactly(clean_redis):
    """A float argument is sent as its shortest exact text (txredisapi's own encoder rounds
    to six decimals)."""
    c = await ready_client(clean_redis.port)
    try:
        await c.execute("ZADD", "z", 1.25e-7, "a", 1722500000.123456, "b")
        assert float(await c.execute("ZSCORE", "z", "a")) == 1.25e-7
        assert float(await c.execute("ZSCORE", "z", "b")) == 1722500000.123456
        assert await c.execute("ECHO", encode_command("PING")) == "*1\r\n$4\r\nPING\r\n"
    finally:
        await c.stop()


@pytest_twisted.ensureDeferred
async def test_reply_timeout_fails_every_pending_command_then_reconnects(clean_redis):
    """A server that stops answering (CLIENT PAUSE): every pending command errbacks once the
    reply timeout passes, the connection is replaced, commands work again."""
    c = await ready_client(clean_redis.port, timeout=0.5)
    other = await ready_client(clean_redis.port)
    try:
        first = c.connection
        await other.execute("CLIENT", "PAUSE", 1500, "ALL")
        pending = [c.execute("GET", "k") for _ in range(3)]
        results = await defer.DeferredList(pending, consumeErrors=True)
        assert all(not ok and f.check(RedisConnectionError) for ok, f in results)
        await eventually(lambda: c.connection is not None and c.connection is not first)
        await task.deferLater(reactor, 1.2, lambda: None)  # the pause is over
        assert await c.execute("PING") == "PONG"
    finally:
        await c.stop()
        await other.stop()
