"""A small, fast RESP2 client for Redis: encoder, incremental parser, connections.

* :func:`encode_command` turns ``("GET", "key")`` into the bytes of one RESP
  command (str, bytes, int and float arguments; str as UTF-8).
* :class:`ReplyParser` takes the server's bytes in arbitrary chunks and returns
  every complete reply in order: simple strings and bulk strings as ``str``
  (a bulk that is not UTF-8 stays ``bytes``), integers as ``int``, nil as
  ``None``, arrays as lists, error replies as :class:`RedisError` instances.
  Anything that is not RESP2 raises :class:`ProtocolError`.
* :class:`RedisConnection` pipelines: any number of commands in flight, each
  written at once (the transport buffers a reactor turn's writes), replies
  matched first-in first-out to plain Deferreds. One timer per connection,
  armed for the oldest unanswered command, bounds the wait: when that command
  has waited ``timeout`` seconds every pending command errbacks
  :class:`RedisTimeout` and the connection is aborted. A lost connection
  errbacks every pending command with :class:`RedisConnectionError`.
* :class:`RedisClient` keeps ONE connection up (reconnecting with the daemon's
  back-off, :func:`callbackd.backoff.capped_backoff`, capped at
  ``max_reconnect_delay``, on the injected endpoint and clock), sends AUTH and
  SELECT, loads the given Lua scripts (SCRIPT LOAD, pipelined) and only then
  reports the connection ready. While no connection is ready,
  :attr:`RedisClient.connection` is None: callers fail at once instead of
  queueing.
* :class:`Subscription` is a separate connection in SUBSCRIBE mode delivering
  ``(channel, message)`` in order, resubscribing after every reconnect.

**Ordering guarantee.** Commands given to one :class:`RedisConnection` are
written, hence executed by Redis, in the order :meth:`RedisConnection.execute`
was called, and their replies fire in that order. A :class:`RedisClient` has one
connection at a time, so the commands its users issue while it is up are
executed in the order they were issued (a command issued while it is down fails
at once, it never runs later out of order). Because the scripts are loaded
before the connection is announced, EVALSHA does not meet NOSCRIPT (and need
no second, later EVAL) unless someone ran SCRIPT FLUSH.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime, IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from callbackd.backoff import capped_backoff

__all__ = [
    "CommandEncodeError",
    "ProtocolError",
    "RedisClient",
    "RedisConnection",
    "RedisConnectionError",
    "RedisError",
    "RedisTimeout",
    "ReplyParser",
    "Subscription",
    "encode_command",
]

log = Logger(namespace="callbackd.store.resp")

MAX_LINE = 64 * 1024  # a header, simple string or error line longer than this is garbage
MAX_BULK = 512 * 1024 * 1024  # Redis' own limit for one string


class RedisError(Exception):
    """An error reply from Redis (``-ERR ...``); ``str()`` is the reply's text."""


class ProtocolError(Exception):
    """The server sent something that is not RESP2."""


class RedisConnectionError(Exception):
    """The connection is down, or went down before the reply came."""


class RedisTimeout(RedisConnectionError):
    """No reply within the timeout; the connection was aborted."""


class CommandEncodeError(ValueError):
    """An argument that cannot be sent (a type other than str/bytes/int/float, bad text)."""


# -- encoding ---------------------------------------------------------------------


def _arg_bytes(arg: object) -> bytes:
    kind = type(arg)
    if kind is bytes:
        return arg  # type: ignore[return-value]
    if isinstance(arg, str):
        try:
            return str.__str__(arg).encode()  # type: ignore[arg-type]
        except UnicodeEncodeError as e:
            raise CommandEncodeError(f"cannot encode {arg!r} as UTF-8: {e}") from None
    if isinstance(arg, bool) or arg is None:
        raise CommandEncodeError(f"cannot send {type(arg).__name__} {arg!r} to Redis")
    if isinstance(arg, int):
        return b"%d" % int(arg)
    if isinstance(arg, float):
        return repr(float(arg)).encode()  # shortest exact text; "inf", "-inf" as Redis reads them
    if isinstance(arg, bytes | bytearray | memoryview):
        return bytes(arg)
    raise CommandEncodeError(f"cannot send {type(arg).__name__} {arg!r} to Redis")


def _encode_slow(args: Sequence[object]) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = _arg_bytes(arg)
        parts.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(parts)


def encode_command(*args: Any) -> bytes:
    """The RESP bytes of one command; :class:`CommandEncodeError` for an unsendable argument."""
    # Fast path: plain str and int arguments build one str, encoded once.
    out = [f"*{len(args)}\r\n"]
    append = out.append
    for arg in args:
        kind = type(arg)
        if kind is str:
            if arg.isascii():
                append(f"${len(arg)}\r\n{arg}\r\n")
            else:
                try:
                    size = len(arg.encode())
                except UnicodeEncodeError:
                    return _encode_slow(args)  # raises with the argument named
                append(f"${size}\r\n{arg}\r\n")
        elif kind is int:
            text = str(arg)
            append(f"${len(text)}\r\n{text}\r\n")
        else:
            return _encode_slow(args)
    return "".join(out).encode()


# -- parsing ----------------------------------------------------------------------

_CRLF = b"\r\n"


class ReplyParser:
    """Incremental RESP2 reply parser: :meth:`feed` chunks, get every complete reply."""

    __slots__ = ("_buf", "_need", "_stack")

    def __init__(self) -> None:
        self._buf = b""
        self._need = 0  # bytes the buffer must hold before parsing can progress
        # the arrays being filled: [items, still missing]
        self._stack: list[list[Any]] = []

    def feed(self, data: bytes) -> list[Any]:
        """Parse ``data`` after what came before; every reply it completes, in order.

        Raises :class:`ProtocolError` for bytes that are not RESP2 (the parser
        is then unusable: close the connection).
        """
        buf = self._buf + data if self._buf else data
        size = len(buf)
        if size < self._need:
            self._buf = buf
            return []
        self._need = 0
        replies: list[Any] = []
        stack = self._stack
        find = buf.find
        pos = 0
        try:
            while pos < size:
                end = find(_CRLF, pos)
                if end < 0:
                    if size - pos > MAX_LINE:
                        raise ProtocolError(f"no line end in {size - pos} bytes")
                    break
                kind = buf[pos]
                if kind == 36:  # $ bulk string
                    length = int(buf[pos + 1 : end])
                    if length >= 0:
                        if length > MAX_BULK:
                            raise ProtocolError(f"bulk of {length} bytes")
                        start = end + 2
                        stop = start + length
                        if stop + 2 > size:
                            self._need = stop + 2 - pos
                            break
                        if buf[stop : stop + 2] != _CRLF:
                            raise ProtocolError("bulk string not followed by CRLF")
                        raw = buf[start:stop]
                        try:
                            value: Any = raw.decode()
                        except UnicodeDecodeError:
                            value = raw
                        pos = stop + 2
                    elif length == -1:
                        value = None
                        pos = end + 2
                    else:
                        raise ProtocolError(f"bulk length {length}")
                elif kind == 43:  # + simple string
                    value = buf[pos + 1 : end].decode(errors="replace")
                    pos = end + 2
                elif kind == 58:  # : integer
                    value = int(buf[pos + 1 : end])
                    pos = end + 2
                elif kind == 42:  # * array
                    count = int(buf[pos + 1 : end])
                    pos = end + 2
                    if count > 0:
                        if count > MAX_BULK:
                            raise ProtocolError(f"array of {count} elements")
                        stack.append([[], count])
                        continue
                    if count == 0:
                        value = []
                    elif count == -1:
                        value = None
                    else:
                        raise ProtocolError(f"array length {count}")
                elif kind == 45:  # - error
                    value = RedisError(buf[pos + 1 : end].decode(errors="replace"))
                    pos = end + 2
                else:
                    raise ProtocolError(f"unknown reply type {bytes([kind])!r}")
                # one value complete: into its array, closing the arrays it fills
                while stack:
                    top = stack[-1]
                    top[0].append(value)
                    top[1] -= 1
                    if top[1]:
                        break
                    value = stack.pop()[0]
                else:
                    replies.append(value)
        except ValueError as e:  # int() of a bad length, a bad integer reply
            raise ProtocolError(f"bad reply: {e}") from None
        self._buf = buf[pos:] if pos < size else b""
        return replies


# -- one connection -------------------------------------------------------------------


class RedisConnection(Protocol):
    """One Redis connection: pipelined commands, replies FIFO, one reply timer.

    ``on_push``, when set, receives every reply instead of the pending
    commands (SUBSCRIBE mode). ``on_lost`` is called once with the reason when
    the connection ends (after the pending commands have errbacked).
    """

    def __init__(self, clock: IReactorTime, timeout: float) -> None:
        self.clock = clock
        self.timeout = timeout
        self.on_lost: Callable[[RedisConnection, Failure], None] | None = None
        self.on_push: Callable[[Any], None] | None = None
        self._parser = ReplyParser()
        self._pending: deque[tuple[defer.Deferred[Any], float]] = deque()
        self._timer: IDelayedCall | None = None
        self._open = False
        self._why = ""

    @property
    def open(self) -> bool:
        """Whether commands can be sent (connected, not aborted)."""
        return self._open

    @property
    def why(self) -> str:
        """Why the connection closed ("" while it is open)."""
        return self._why

    @property
    def pending(self) -> int:
        """How many commands wait for their reply."""
        return len(self._pending)

    def connectionMade(self) -> None:
        self._open = True

    def execute(self, *args: object) -> defer.Deferred[Any]:
        """Send one command; a Deferred firing with its reply (RedisError errbacks).

        Raises :class:`CommandEncodeError` at once for an unsendable argument.
        """
        return self.send(encode_command(*args))

    def send(self, data: bytes) -> defer.Deferred[Any]:
        """Send one already encoded command (see :meth:`execute`)."""
        if not self._open:
            return defer.fail(RedisConnectionError(self._why or "not connected"))
        d: defer.Deferred[Any] = defer.Deferred()
        now = self.clock.seconds()
        self._pending.append((d, now))
        self.transport.write(data)  # type: ignore[union-attr]
        if self._timer is None:
            self._timer = self.clock.callLater(self.timeout, self._check_timeout)
        return d

    def _check_timeout(self) -> None:
        self._timer = None
        if not self._pending or not self._open:
            return
        waited = self.clock.seconds() - self._pending[0][1]
        if waited < self.timeout:
            self._timer = self.clock.callLater(self.timeout - waited, self._check_timeout)
            return
        self.abort(RedisTimeout(f"no reply from redis in {self.timeout:g}s"))

    def abort(self, reason: Exception) -> None:
        """Fail every pending command with ``reason`` and abort the connection."""
        if self._open:
            self._open = False
            self._why = str(reason)
            if self.transport is not None:
                self.transport.abortConnection()  # type: ignore[attr-defined]
        self._fail_pending(reason)

    def _fail_pending(self, reason: Exception) -> None:
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None
        pending = self._pending
        while pending:
            pending.popleft()[0].errback(reason)

    def dataReceived(self, data: bytes) -> None:
        try:
            replies = self._parser.feed(data)
        except ProtocolError as e:
            log.error("redis protocol error, closing the connection: {error}", error=str(e))
            self.abort(RedisConnectionError(f"redis protocol error: {e}"))
            return
        push = self.on_push
        if push is not None:
            for reply in replies:
                push(reply)
            return
        pending = self._pending
        for reply in replies:
            if not pending:
                if self._open:
                    log.error("redis sent a reply nobody asked for: {reply!r}", reply=reply)
                    self.abort(RedisConnectionError("redis sent a reply nobody asked for"))
                return
            d = pending.popleft()[0]
            if type(reply) is RedisError:
                d.errback(reply)
            else:
                d.callback(reply)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        why = reason.getErrorMessage()
        self._open = False
        self._why = self._why or f"connection to redis lost: {why}"
        self._fail_pending(RedisConnectionError(self._why))
        if self.on_lost is not None:
            on_lost, self.on_lost = self.on_lost, None
            on_lost(self, reason)


class _ConnectionFactory(Factory):
    def __init__(self, clock: IReactorTime, timeout: float) -> None:
        self.clock = clock
        self.timeout = timeout

    def buildProtocol(self, addr: Any) -> RedisConnection:
        protocol = RedisConnection(self.clock, self.timeout)
        protocol.factory = self
        return protocol


# -- keeping a connection up ------------------------------------------------------------------


class _Reconnecting:
    """Keeps one prepared connection up: connect, prepare, use; back off after failures."""

    def __init__(
        self,
        endpoint: IStreamClientEndpoint,
        clock: IReactorTime,
        *,
        timeout: float,
        password: str | None,
        initial_delay: float,
        max_reconnect_delay: float,
        jitter: Callable[[], float] | None,
    ) -> None:
        self.endpoint = endpoint
        self.clock = clock
        self.timeout = timeout
        self._password = password
        self._backoff = capped_backoff(
            initial_delay, max_reconnect_delay, jitter=jitter or random.random
        )
        self._running = False
        self._failures = 0
        self._attempt: defer.Deferred[Any] | None = None
        self._retry: IDelayedCall | None = None
        self._proto: RedisConnection | None = None  # connected (ready or preparing)
        self._ready = False
        self._stopped: list[defer.Deferred[None]] = []

    # subclasses: prepare a new connection (fire when usable), hear about ready/lost
    def _prepare(self, proto: RedisConnection) -> defer.Deferred[Any]:
        raise NotImplementedError

    def _became_ready(self, proto: RedisConnection) -> None:
        pass

    def _went_down(self, why: str) -> None:
        pass

    def _failed_attempt(self, why: str) -> None:
        pass

    @property
    def running(self) -> bool:
        """Whether it is (re)connecting or connected."""
        return self._running

    def start(self) -> None:
        """Start connecting (and reconnecting); returns at once."""
        if self._running:
            return
        self._running = True
        self._failures = 0
        self._connect()

    def stop(self) -> defer.Deferred[None]:
        """Stop reconnecting, close the connection; fires once it is closed."""
        self._running = False
        if self._retry is not None:
            if self._retry.active():
                self._retry.cancel()
            self._retry = None
        if self._attempt is not None:
            attempt, self._attempt = self._attempt, None
            attempt.cancel()
        proto = self._proto
        if proto is None or proto.transport is None or proto.on_lost is None:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        self._stopped.append(d)
        proto.transport.loseConnection()
        return d

    def _delay(self) -> float:
        return self._backoff(self._failures)

    def _connect(self) -> None:
        self._retry = None
        if not self._running:
            return
        d = self.endpoint.connect(_ConnectionFactory(self.clock, self.timeout))
        d.addTimeout(self.timeout, self.clock)
        self._attempt = d
        d.addCallbacks(self._connected, self._connect_failed, errbackArgs=(d,))

    def _connect_failed(self, failure: Failure, attempt: defer.Deferred[Any]) -> None:
        if attempt is not self._attempt:  # stopped meanwhile
            return
        self._attempt = None
        why = failure.getErrorMessage() or type(failure.value).__name__
        if failure.check(defer.TimeoutError, defer.CancelledError):
            why = f"no connection in {self.timeout:g}s"
        self._give_up_attempt(why)

    def _give_up_attempt(self, why: str) -> None:
        self._failed_attempt(why)
        if self._running:
            self._failures += 1
            self._retry = self.clock.callLater(self._delay(), self._connect)

    def _connected(self, proto: RedisConnection) -> None:
        self._attempt = None
        self._proto = proto
        proto.on_lost = self._lost
        if not self._running:
            proto.transport.loseConnection()  # type: ignore[union-attr]
            return
        try:
            preparing = self._prepare(proto)
        except Exception as e:  # a bug in preparing: treat like a failed attempt
            preparing = defer.fail(e)
        preparing.addCallbacks(
            self._prepared, self._prepare_failed, callbackArgs=(proto,), errbackArgs=(proto,)
        )

    def _prepared(self, _: object, proto: RedisConnection) -> None:
        if proto is not self._proto or not proto.open or not self._running:
            return
        self._failures = 0
        self._ready = True
        self._became_ready(proto)

    def _prepare_failed(self, failure: Failure, proto: RedisConnection) -> None:
        if proto is not self._proto:
            return
        self._proto = None
        proto.on_lost = self._lost_stopping
        why = failure.getErrorMessage() or type(failure.value).__name__
        if proto.open:
            proto.abort(RedisConnectionError(f"preparing the connection failed: {why}"))
        self._give_up_attempt(why)

    def _lost_stopping(self, proto: RedisConnection, reason: Failure) -> None:
        self._notify_stopped()

    def _notify_stopped(self) -> None:
        if not self._running:
            stopped, self._stopped = self._stopped, []
            for d in stopped:
                d.callback(None)

    def _lost(self, proto: RedisConnection, reason: Failure) -> None:
        if proto is not self._proto:
            self._notify_stopped()
            return
        self._proto = None
        why = proto.why or reason.getErrorMessage()
        was_ready, self._ready = self._ready, False
        if was_ready:
            self._went_down(why)
            if self._running:
                self._failures = 1
                self._retry = self.clock.callLater(self._delay(), self._connect)
        else:
            # lost while preparing (with no command pending, as in SUBSCRIBE): a
            # failed attempt; what preparing fires later is ignored
            self._give_up_attempt(why)
        self._notify_stopped()

    def _auth_and_select(self, proto: RedisConnection, db: int) -> list[defer.Deferred[Any]]:
        steps = []
        if self._password:
            steps.append(proto.execute("AUTH", self._password))
        if db:
            steps.append(proto.execute("SELECT", db))
        return steps


def _first_error(failure: Failure) -> Failure:
    """The underlying failure of a gatherResults that failed."""
    if isinstance(failure.value, defer.FirstError):
        return failure.value.subFailure
    return failure


class RedisClient(_Reconnecting):
    """One Redis connection kept up, ready only after AUTH, SELECT and SCRIPT LOAD.

    ``connection`` is the ready :class:`RedisConnection` or None. ``on_ready``
    is called each time a connection becomes ready, ``on_lost(why)`` when a
    ready one goes, ``on_error(why)`` after each failed attempt (the password
    never appears in these). ``scripts`` are Lua sources loaded on every new
    connection before it is ready.
    """

    def __init__(
        self,
        endpoint: IStreamClientEndpoint,
        clock: IReactorTime,
        *,
        password: str | None = None,
        db: int = 0,
        timeout: float = 5.0,
        scripts: Iterable[str] = (),
        initial_delay: float = 0.5,
        max_reconnect_delay: float = 5.0,
        on_ready: Callable[[], None] | None = None,
        on_lost: Callable[[str], None] | None = None,
        on_error: Callable[[str], None] | None = None,
        jitter: Callable[[], float] | None = None,
    ) -> None:
        super().__init__(
            endpoint,
            clock,
            timeout=timeout,
            password=password,
            initial_delay=initial_delay,
            max_reconnect_delay=max_reconnect_delay,
            jitter=jitter,
        )
        self.db = db
        self.scripts = list(scripts)
        self.connection: RedisConnection | None = None
        self._on_ready = on_ready
        self._on_lost = on_lost
        self._on_error = on_error

    def execute(self, *args: object) -> defer.Deferred[Any]:
        """Send one command on the ready connection; RedisConnectionError if there is none."""
        conn = self.connection
        if conn is None:
            return defer.fail(RedisConnectionError("not connected"))
        return conn.execute(*args)

    def _prepare(self, proto: RedisConnection) -> defer.Deferred[Any]:
        steps = self._auth_and_select(proto, self.db)
        for source in self.scripts:
            steps.append(proto.execute("SCRIPT", "LOAD", source))
        if not steps:
            return defer.succeed(None)
        return defer.gatherResults(steps, consumeErrors=True).addErrback(_first_error)

    def _became_ready(self, proto: RedisConnection) -> None:
        self.connection = proto
        if self._on_ready is not None:
            self._on_ready()

    def _went_down(self, why: str) -> None:
        self.connection = None
        if self._on_lost is not None:
            self._on_lost(why)

    def _failed_attempt(self, why: str) -> None:
        if self._on_error is not None:
            self._on_error(why)

    def stop(self) -> defer.Deferred[None]:
        """Stop reconnecting and close the connection; fires once it is closed."""
        self.connection = None
        return super().stop()


class Subscription(_Reconnecting):
    """A connection SUBSCRIBEd to ``channels``, kept up and resubscribed after reconnects.

    ``on_message(channel, message)`` gets each published message in order;
    ``on_state(True)`` is called once the subscription is confirmed on a
    connection, ``on_state(False)`` when that connection goes (messages
    published meanwhile are lost: resynchronise on ``True``). A PING every
    ``ping_interval`` seconds, answered within ``timeout``, notices a server
    that stopped answering.
    """

    def __init__(
        self,
        endpoint: IStreamClientEndpoint,
        channels: Sequence[str],
        on_message: Callable[[str, str], None],
        on_state: Callable[[bool], None],
        clock: IReactorTime,
        password: str | None = None,
        *,
        timeout: float = 5.0,
        ping_interval: float = 10.0,
        initial_delay: float = 0.5,
        max_reconnect_delay: float = 5.0,
        on_error: Callable[[str], None] | None = None,
        jitter: Callable[[], float] | None = None,
    ) -> None:
        if not channels:
            raise ValueError("a Subscription needs at least one channel")
        super().__init__(
            endpoint,
            clock,
            timeout=timeout,
            password=password,
            initial_delay=initial_delay,
            max_reconnect_delay=max_reconnect_delay,
            jitter=jitter,
        )
        self.channels = list(dict.fromkeys(channels))
        self.ping_interval = ping_interval
        self._on_message = on_message
        self._on_state = on_state
        self._on_error = on_error
        self._subscribed = False
        self._ping_timer: IDelayedCall | None = None
        self._pong_due: IDelayedCall | None = None

    @property
    def subscribed(self) -> bool:
        """Whether the subscription is confirmed on a live connection."""
        return self._subscribed

    def _prepare(self, proto: RedisConnection) -> defer.Deferred[Any]:
        steps = self._auth_and_select(proto, 0)
        ready = defer.gatherResults(steps, consumeErrors=True) if steps else defer.succeed(None)
        return ready.addErrback(_first_error).addCallback(lambda _: self._subscribe(proto))

    def _subscribe(self, proto: RedisConnection) -> defer.Deferred[None]:
        confirmed: defer.Deferred[None] = defer.Deferred()
        waiting = set(self.channels)

        def push(reply: Any) -> None:
            if not isinstance(reply, list) or not reply:
                proto.abort(RedisConnectionError(f"unexpected reply in subscribe mode: {reply!r}"))
                return
            kind = reply[0]
            if kind == "message" and len(reply) == 3:
                self._on_message(reply[1], reply[2])
            elif kind == "subscribe":
                waiting.discard(reply[1])
                if not waiting and not confirmed.called:
                    confirmed.callback(None)
            elif kind == "pong":
                if self._pong_due is not None and self._pong_due.active():
                    self._pong_due.cancel()
                self._pong_due = None
            elif isinstance(kind, RedisError):
                proto.abort(RedisConnectionError(f"redis error in subscribe mode: {kind}"))

        proto.on_push = push
        proto.transport.write(encode_command("SUBSCRIBE", *self.channels))  # type: ignore[union-attr]
        confirmed.addTimeout(self.timeout, self.clock)
        return confirmed

    def _became_ready(self, proto: RedisConnection) -> None:
        self._subscribed = True
        self._schedule_ping(proto)
        self._on_state(True)

    def _schedule_ping(self, proto: RedisConnection) -> None:
        self._ping_timer = self.clock.callLater(self.ping_interval, self._ping, proto)

    def _ping(self, proto: RedisConnection) -> None:
        self._ping_timer = None
        if proto is not self._proto or not proto.open:
            return
        proto.transport.write(encode_command("PING"))  # type: ignore[union-attr]
        if self._pong_due is None:
            self._pong_due = self.clock.callLater(self.timeout, self._no_pong, proto)
        self._schedule_ping(proto)

    def _no_pong(self, proto: RedisConnection) -> None:
        self._pong_due = None
        proto.abort(RedisTimeout(f"no PONG from redis in {self.timeout:g}s"))

    def _cancel_timers(self) -> None:
        for timer in (self._ping_timer, self._pong_due):
            if timer is not None and timer.active():
                timer.cancel()
        self._ping_timer = self._pong_due = None

    def _went_down(self, why: str) -> None:
        self._cancel_timers()
        self._subscribed = False
        self._on_state(False)

    def _failed_attempt(self, why: str) -> None:
        if self._on_error is not None:
            self._on_error(why)

    def stop(self) -> defer.Deferred[None]:
        """Stop resubscribing and close the connection (``on_state(False)`` if it was up)."""
        self._cancel_timers()
        return super().stop()
