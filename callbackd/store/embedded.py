"""A private redis-server for the daemon: a child process on a unix socket in the state dir.

Layout under ``<state_dir>/redis/`` (mode 0700): ``redis.sock`` (the only way in:
TCP is off, ``--port 0``), the append-only files (``appendonlydir/``, fsync'ed
as configured, ``always`` by default: balances are money), ``redis.log`` and
``redis.pid``. Data therefore survives restarts of the daemon and of the host.

A redis-server left over from a previous run (the daemon was killed with
SIGKILL, the child lives on) still answers on the socket. The service
*replaces* it: it asks it to SHUTDOWN (which writes the append-only file out),
waits until the socket is silent, and starts its own child, so the running
server always has the arguments of this version and is stopped with the daemon.
The admin CLI, in contrast, never replaces anything: it uses a server that
answers and starts one for itself only when none does (see :mod:`callbackd.admin`).

The embedded server has no password (the socket's permissions keep other users
out, and a password on the command line would show in ``ps``).
"""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.application import service
from twisted.internet import defer, protocol, task
from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure

from callbackd.backoff import capped_backoff
from callbackd.config import RedisConfig

__all__ = [
    "EmbeddedRedisError",
    "EmbeddedRedisService",
    "data_dir",
    "redis_command",
    "socket_path",
]

log = Logger(namespace="callbackd.store.embedded")

#: sun_path holds 108 bytes with the terminating NUL; stay clear of it
_MAX_SOCKET_PATH = 100


def data_dir(state_dir: Path) -> Path:
    """Where the embedded redis-server keeps its files."""
    return Path(state_dir) / "redis"


def socket_path(state_dir: Path) -> Path:
    """The unix socket the embedded redis-server listens on."""
    return data_dir(state_dir) / "redis.sock"


class EmbeddedRedisError(Exception):
    """The embedded redis-server cannot be started or stopped; the message says why."""


class _OneCommand(protocol.Protocol):
    """Send one inline command, fire with the first reply line (None if closed without)."""

    def __init__(self, command: bytes) -> None:
        self.command = command
        self.reply: defer.Deferred[str | None] = defer.Deferred()
        self._buffer = b""

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self.command + b"\r\n")

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        if b"\r\n" in self._buffer and not self.reply.called:
            line = self._buffer.split(b"\r\n", 1)[0]
            self.reply.callback(line.decode("utf-8", "replace"))
            if self.transport is not None:
                self.transport.loseConnection()

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        if not self.reply.called:
            self.reply.callback(None)


async def redis_command(reactor: Any, path: Path, command: str, timeout: float = 2.0) -> str | None:
    """Send ``command`` to the redis-server on ``path``; its reply line, or None if none answers.

    ``"+PONG"`` for ``PING`` from a ready server, ``"-LOADING ..."`` from one
    still reading its files; None when nothing listens (or for SHUTDOWN, which
    closes the connection without a reply).
    """
    if not Path(path).exists():
        return None
    proto = _OneCommand(command.encode())
    endpoint = UNIXClientEndpoint(reactor, str(path), timeout=max(1, int(timeout)))
    try:
        await endpoint.connect(protocol.Factory.forProtocol(lambda: proto))
    except Exception:
        return None
    reply = proto.reply
    reply.addTimeout(timeout, reactor)
    try:
        return await reply
    except defer.TimeoutError:
        if proto.transport is not None:
            proto.transport.abortConnection()  # type: ignore[attr-defined]
        return None


class _RedisProcess(protocol.ProcessProtocol):
    """The child's output goes to the log; ``ended`` fires with its exit status."""

    def __init__(self) -> None:
        self.ended: defer.Deferred[int | None] = defer.Deferred()
        self.running = True
        self.status: int | None = None

    def outReceived(self, data: bytes) -> None:
        for line in data.decode("utf-8", "replace").splitlines():
            if line.strip():
                log.info("redis-server: {line}", line=line)

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:
        self.running = False
        self.status = getattr(reason.value, "exitCode", None)
        self.ended.callback(self.status)


class EmbeddedRedisService(service.Service):
    """Runs a private redis-server as a child process while the service runs.

    ``startService`` fires when the server answers PING on its socket (or fails
    with :class:`EmbeddedRedisError` after ``start_timeout``); ``stopService``
    fires once the child has exited.
    """

    def __init__(
        self,
        redis_config: RedisConfig,
        state_dir: Path,
        reactor: Any,
        *,
        start_timeout: float = 20.0,
        stop_timeout: float = 15.0,
        appendfsync: str = "always",
        restart_delay: float = 0.5,
        max_restart_delay: float = 30.0,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.binary = redis_config.redis_server
        self.data_dir = data_dir(state_dir)
        self.socket_path = socket_path(state_dir)
        self.reactor = reactor
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.appendfsync = appendfsync
        self.process: _RedisProcess | None = None
        self._transport: Any = None
        #: seconds before starting redis-server again after it died: from
        #: ``restart_delay``, doubling at each death in a row up to ``max_restart_delay``
        self.max_restart_delay = max_restart_delay
        self._backoff = capped_backoff(restart_delay, max_restart_delay, jitter=jitter)
        #: deaths (and failed restarts) in a row
        self._failures = 0
        self._restart_call: Any = None
        self._started_at = 0.0

    @property
    def log_path(self) -> Path:
        """The redis-server's own log file."""
        return self.data_dir / "redis.log"

    def startService(self) -> defer.Deferred[None]:  # type: ignore[override]
        super().startService()
        return defer.ensureDeferred(self._start())

    def _find_binary(self) -> str:
        name = self.binary
        found = name if os.sep in name else shutil.which(name)
        if found is None or not os.access(found, os.X_OK) or not Path(found).is_file():
            raise EmbeddedRedisError(
                f"redis-server not found: {name!r} is not an executable"
                f"{'' if os.sep in name else ' on PATH'}; install redis-server "
                "or set [redis] redis_server (or use [redis] mode = external)"
            )
        return found

    async def _start(self) -> None:
        binary = self._find_binary()
        if len(os.fsencode(self.socket_path)) > _MAX_SOCKET_PATH:
            raise EmbeddedRedisError(
                f"unix socket path {self.socket_path} is too long for the system "
                f"(over {_MAX_SOCKET_PATH} bytes); use a shorter [daemon] state_dir"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        await self._replace_leftover()
        self.process = _RedisProcess()
        self.process.ended.addCallback(self._ended)
        args = [
            binary,
            "--port", "0",
            "--unixsocket", str(self.socket_path),
            "--unixsocketperm", "700",
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--appendfsync", self.appendfsync,
            "--save", "",
            "--daemonize", "no",
            "--pidfile", str(self.data_dir / "redis.pid"),
            "--logfile", str(self.log_path),
            "--loglevel", "notice",
        ]  # fmt: skip
        log.info("starting {binary} on {socket}", binary=binary, socket=str(self.socket_path))
        self._transport = self.reactor.spawnProcess(
            self.process, binary, args, env=dict(os.environ), path=str(self.data_dir)
        )
        await self._wait_ready()

    async def _replace_leftover(self) -> None:
        if await redis_command(self.reactor, self.socket_path, "PING") is None:
            return
        log.warn(
            "a redis-server from a previous run still serves {socket}; shutting it down",
            socket=str(self.socket_path),
        )
        await redis_command(self.reactor, self.socket_path, "SHUTDOWN")
        deadline = self.reactor.seconds() + self.stop_timeout
        while await redis_command(self.reactor, self.socket_path, "PING") is not None:
            if self.reactor.seconds() > deadline:
                raise EmbeddedRedisError(
                    f"a redis-server from a previous run serves {self.socket_path} and did not "
                    f"shut down; stop it (its pid is in {self.data_dir / 'redis.pid'})"
                )
            await task.deferLater(self.reactor, 0.1, lambda: None)

    async def _wait_ready(self) -> None:
        assert self.process is not None
        deadline = self.reactor.seconds() + self.start_timeout
        while True:
            if not self.process.running:
                raise EmbeddedRedisError(
                    f"redis-server exited at start (status {self.process.status}); "
                    f"{self._log_tail()}"
                )
            reply = await redis_command(self.reactor, self.socket_path, "PING", timeout=1.0)
            if reply == "+PONG":
                log.info("embedded redis-server ready on {socket}", socket=str(self.socket_path))
                self._started_at = self.reactor.seconds()
                return
            if self.reactor.seconds() > deadline:
                await self._terminate()
                raise EmbeddedRedisError(
                    f"redis-server did not answer on {self.socket_path} within "
                    f"{self.start_timeout:g}s; {self._log_tail()}"
                )
            await task.deferLater(self.reactor, 0.05, lambda: None)

    def _log_tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()[-3:]
        except OSError:
            return f"no log at {self.log_path}"
        return f"{self.log_path} ends: " + " | ".join(line.strip() for line in lines)

    def _ended(self, status: int | None) -> int | None:
        # a server that never became ready is startService's failure to report
        if self.running and self._started_at:
            if self.reactor.seconds() - self._started_at > self.max_restart_delay:
                self._failures = 0  # it ran a good while: not a crash loop
            delay = self._schedule_restart()
            log.critical(
                "embedded redis-server exited unexpectedly (status {status}); {tail}; "
                "starting it again in {delay:.2f}s",
                status=status,
                tail=self._log_tail(),
                delay=delay,
            )
        return status

    def _schedule_restart(self) -> float:
        """Start redis-server again after the back-off's delay; return the delay."""
        self._failures += 1
        delay = self._backoff(self._failures)
        self._restart_call = self.reactor.callLater(delay, self._restart)
        return delay

    def _restart(self) -> None:
        self._restart_call = None
        if not self.running:
            return

        def failed(failure: Failure) -> None:
            log.error("embedded redis-server did not start again: {why}", why=failure.value)
            if self.running and self._restart_call is None:
                self._schedule_restart()

        # the data survives: append-only file, fsync'ed at every write
        defer.ensureDeferred(self._start()).addErrback(failed)

    def stopService(self) -> defer.Deferred[None]:  # type: ignore[override]
        super().stopService()
        if self._restart_call is not None and self._restart_call.active():
            self._restart_call.cancel()
        self._restart_call = None
        return defer.ensureDeferred(self._terminate())

    async def _terminate(self) -> None:
        process = self.process
        if process is None or not process.running:
            return
        # SIGTERM makes redis write its append-only file out and exit cleanly.
        self._transport.signalProcess("TERM")
        waiter = _when_ended(process)
        waiter.addTimeout(self.stop_timeout, self.reactor)
        try:
            await waiter
        except defer.TimeoutError:
            log.error("redis-server ignored SIGTERM for {t}s; killing it", t=self.stop_timeout)
            if process.running:
                self._transport.signalProcess("KILL")
            await _when_ended(process)
        log.info("embedded redis-server stopped")


def _when_ended(process: _RedisProcess) -> defer.Deferred[None]:
    d: defer.Deferred[None] = defer.Deferred()

    def fire(result: Any) -> Any:
        d.callback(None)
        return result

    if not process.running:
        d.callback(None)
    else:
        process.ended.addBoth(fire)
    return d
