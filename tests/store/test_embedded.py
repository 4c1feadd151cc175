"""EmbeddedRedisService with a real redis-server child process."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.endpoints import UNIXClientEndpoint

from callbackd.config import RedisConfig
from callbackd.core.model import Account
from callbackd.store.embedded import (
    EmbeddedRedisError,
    EmbeddedRedisService,
    redis_command,
    socket_path,
)
from callbackd.store.hashing import BcryptHasher
from callbackd.store.redis import RedisStore


@pytest.fixture
def state_dir():
    """A short state directory (unix socket paths are limited to ~100 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="cbst"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def service(state_dir: Path, binary: str = "redis-server") -> EmbeddedRedisService:
    """An embedded redis service on ``state_dir`` with everyday settings."""
    return EmbeddedRedisService(RedisConfig(redis_server=binary), state_dir, reactor)


def unix_store(state_dir: Path) -> RedisStore:
    """A RedisStore on the embedded server's socket."""
    path = str(socket_path(state_dir))
    return RedisStore(
        UNIXClientEndpoint(reactor, path),
        clock=reactor,
        password_hasher=BcryptHasher(reactor, rounds=4),
        address=path,
    )


@pytest_twisted.ensureDeferred
async def test_start_answers_then_stop_ends_the_child(state_dir):
    """After start the socket answers PING; after stop the child has exited."""
    svc = service(state_dir)
    await svc.startService()
    try:
        assert await redis_command(reactor, svc.socket_path, "PING") == "+PONG"
        assert svc.process.running
    finally:
        await svc.stopService()
    assert not svc.process.running
    assert await redis_command(reactor, svc.socket_path, "PING") is None


@pytest_twisted.ensureDeferred
async def test_listens_on_the_socket_only(state_dir):
    """The embedded server has TCP switched off and its directory private."""
    svc = service(state_dir)
    await svc.startService()
    try:
        store = await unix_store(state_dir).connect(timeout=5)
        assert await store._call("CONFIG", "GET", "port") == ["port", "0"]
        await store.disconnect()
        assert (state_dir / "redis").stat().st_mode & 0o077 == 0
    finally:
        await svc.stopService()


@pytest_twisted.ensureDeferred
async def test_data_survives_a_restart(state_dir):
    """An account written before a stop is there after the next start (append-only file)."""
    svc = service(state_dir)
    await svc.startService()
    store = await unix_store(state_dir).connect(timeout=5)
    await store.create_account(Account("alice"), "pw")
    await store.credit("alice", 1234, "k")
    await store.disconnect()
    await svc.stopService()

    svc = service(state_dir)
    await svc.startService()
    try:
        store = await unix_store(state_dir).connect(timeout=5)
        assert await store.get_balance("alice") == 1234
        assert await store.check_password("alice", "pw") is True
        await store.disconnect()
    finally:
        await svc.stopService()


@pytest_twisted.ensureDeferred
async def test_missing_binary_is_a_clear_error(state_dir):
    """A redis-server that is not installed fails the start with a message saying so."""
    svc = service(state_dir, binary="no-such-redis-server-binary")
    with pytest.raises(EmbeddedRedisError, match="redis-server not found"):
        await svc.startService()


@pytest_twisted.ensureDeferred
async def test_too_long_socket_path_is_a_clear_error(tmp_path):
    """A state_dir too deep for a unix socket path fails the start with a message."""
    svc = service(tmp_path / ("x" * 120))
    with pytest.raises(EmbeddedRedisError, match="too long"):
        await svc.startService()


@pytest_twisted.ensureDeferred
async def test_leftover_server_is_replaced(state_dir):
    """A redis-server left over from a killed daemon is shut down and replaced; data kept."""
    first = service(state_dir)
    await first.startService()
    store = await unix_store(state_dir).connect(timeout=5)
    await store.create_account(Account("alice"), "pw")
    await store.disconnect()
    pid = int((state_dir / "redis" / "redis.pid").read_text())
    # the daemon "dies": its child lives on, orphaned (and nothing restarts it)
    first.process = None
    first.running = False

    second = service(state_dir)
    await second.startService()
    try:
        deadline = time.monotonic() + 5
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(pid)
        store = await unix_store(state_dir).connect(timeout=5)
        assert await store.list_accounts() == ["alice"]
        await store.disconnect()
    finally:
        await second.stopService()
        if _alive(pid):
            subprocess.run(["kill", str(pid)], check=False)


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs (and is not a zombie)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


@pytest_twisted.ensureDeferred
async def test_a_server_that_dies_is_started_again_with_its_data(state_dir):
    """kill -9 of the child: the service starts a new redis-server; the data is still there."""
    import os
    import signal

    from twisted.internet import task

    svc = EmbeddedRedisService(RedisConfig(), state_dir, reactor, restart_delay=0.1)
    await svc.startService()
    try:
        assert await redis_command(reactor, svc.socket_path, "SET k hello") == "+OK"
        first = svc._transport.pid
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while svc._transport.pid == first or not svc.process.running:
            assert time.monotonic() < deadline, "no new redis-server"
            await task.deferLater(reactor, 0.05, lambda: None)
        while await redis_command(reactor, svc.socket_path, "PING") != "+PONG":
            assert time.monotonic() < deadline, "the new redis-server does not answer"
            await task.deferLater(reactor, 0.05, lambda: None)
        # the first reply line: a 5-byte value ("$-1" if the key were gone)
        assert await redis_command(reactor, svc.socket_path, "GET k") == "$5"
    finally:
        await svc.stopService()
    assert not svc.process.running


def test_restarts_back_off_up_to_the_cap(tmp_path):
    """A redis-server that keeps dying is started again after 0.5, 1, 2 s ... never over the cap."""
    from twisted.internet.task import Clock

    clock = Clock()
    clock.advance(100)
    svc = EmbeddedRedisService(
        RedisConfig(), tmp_path, clock, restart_delay=0.5, max_restart_delay=4.0, jitter=lambda: 1.0
    )
    starts: list[float] = []

    async def start_fails() -> None:
        starts.append(clock.seconds())
        raise EmbeddedRedisError("it died again")

    svc._start = start_fails  # type: ignore[method-assign]
    svc.running = True
    svc._started_at = clock.seconds()
    svc._ended(9)
    died_at = clock.seconds()
    while len(starts) < 6:
        clock.advance(0.125)
    waits = [b - a for a, b in zip([died_at, *starts], starts, strict=False)]
    assert waits == pytest.approx([0.625, 1.125, 2.125, 4.0, 4.0, 4.0], abs=0.13)
    assert max(waits) <= 4.0
    svc.running = False
