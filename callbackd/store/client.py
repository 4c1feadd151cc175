"""The store's Redis connections, on txredisapi (hiredis parsing the replies).

* :class:`Commands` keeps ONE command connection up with txredisapi's pool machinery
  (a pool of one: ``RedisFactory`` + its ``ClientService`` slot), reconnecting with the
  daemon's back-off (:func:`callbackd.backoff.capped_backoff`). txredisapi sends AUTH
  and SELECT; :class:`Commands` then loads the store's Lua scripts (SCRIPT LOAD,
  pipelined) and only then hands the connection out as :attr:`Commands.connection`.
  While no connection is ready it is None: callers fail at once instead of queueing.
* :class:`Feed` is txredisapi's ``SubscriberProtocol`` on a connection of its own,
  SUBSCRIBEd to some channels, resubscribing after every reconnect, with a PING every
  ``ping_interval`` seconds that notices a server that stopped answering.
* :class:`Sentinels` names a primary through Redis Sentinel (txredisapi's ``Sentinel``):
  before every connection attempt the sentinels are asked for the primary's address,
  and a connection to a server that is not a primary (``ROLE``) is dropped, so after a
  failover both connections come back on the new primary by themselves.

Every command has the reply timeout (txredisapi's ``replyTimeout``, watched by one
timer per connection, see :class:`_Protocol`): when it expires every pending command
errbacks ``txredisapi.TimeoutError`` and the connection is aborted, then
re-established. Commands are encoded by :func:`encode_command` (floats as their
shortest exact text, which txredisapi's ``format(x, "f")`` is not).

**Ordering.** ``execute_command`` writes the command before it returns and Redis
answers in order, so the commands given to :attr:`Commands.connection` run in the
order they were issued; a command issued while it is down fails at once, it never
runs later out of order.

**The reactor.** The clock and endpoints given are used for: the reply timers
(``LineReceiver.callLater``, a class attribute bound to the global reactor, replaced
on each protocol), the reconnect timers (the pool slot's ``ClientService``, built here
with our clock), handing a ready connection over (``RedisFactory._connectionReady``,
overridden) and the connection to a primary named by Sentinel
(``_SentinelEndpoint._connect``, overridden). txredisapi still reaches for the global
``twisted.internet.reactor`` (imported at module level) in: the connections to the
sentinels themselves (``Sentinel.__init__`` → ``lazyConnection`` → ``_makeEndpoint``
and a ``ClientService`` without a clock, and ``LineReceiver.callLater`` for their
reply timers), the deadline of ``Sentinel.discover_master`` (``reactor.callLater``;
its length is set to our timeout), and ``_PoolSlot.stopTrying`` (``task.deferLater``,
run when AUTH or SELECT is refused) and ``_PoolSlot._connectionFailed`` (only
without reconnecting, which the store never asks for). Under ``twistd`` the service
tree's reactor is that global reactor, so this matters only to tests with a fake clock
(which then cannot use Sentinel).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import txredisapi
from twisted.application.internet import ClientService
from twisted.internet import defer
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.interfaces import IDelayedCall, IReactorTime, IStreamClientEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from callbackd.backoff import capped_backoff

__all__ = [
    "CommandEncodeError",
    "Commands",
    "Feed",
    "RedisConnectionError",
    "RedisError",
    "Sentinels",
    "encode_command",
]

log = Logger(namespace="callbackd.store.client")

#: an error reply from Redis; ``str()`` is its text
RedisError = txredisapi.ResponseError
#: the connection is down, went down before the reply came, or the reply timed out
RedisConnectionError = txredisapi.ConnectionError


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


# -- protocols --------------------------------------------------------------------


class _Protocol(txredisapi.HiredisProtocol):
    """txredisapi's hiredis protocol with our encoder and ONE reply timer per connection.

    txredisapi's ``execute_command`` arms a timer (and a second Deferred) for every
    command; at the daemon's rates that was the client's largest cost. Here the replies
    still come through txredisapi's reply queue, in order, but a single timer watches
    the oldest unanswered command: when it has waited ``replyTimeout`` seconds, every
    pending command errbacks ``txredisapi.TimeoutError`` and the connection is aborted,
    as txredisapi does. ``seconds`` and ``callLater`` are the factory's clock.
    """

    why = ""
    seconds: Callable[[], float]
    #: replies fire their command's Deferred here (errors as errbacks), not through a
    #: callback of the reply queue's: one callback less per command
    direct_replies = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # when each command still in the reply queue was sent (None: no timeout applies)
        self._sent: deque[float | None] = deque()
        self._timer: IDelayedCall | None = None

    def execute_command(self, *args: Any, **kwargs: Any) -> defer.Deferred[Any]:
        if self.connected == 0:
            raise RedisConnectionError("Not connected")
        self.transport.write(encode_command(*args))
        waiting = self.replyQueue.waiting
        sent = self._sent
        while len(sent) > len(waiting):  # answered since: the oldest entries
            sent.popleft()
        d = self.replyQueue.get()
        if not self.direct_replies:
            d.addCallback(self.handle_reply)
        if self.replyTimeout and kwargs.get("apply_timeout", True):
            sent.append(self.seconds())
            if self._timer is None:
                self._timer = self.callLater(self.replyTimeout, self._check_timeout)
        else:
            sent.append(None)
        post_proc = kwargs.get("post_proc")
        if callable(post_proc):
            d.addCallback(post_proc)
        return d

    def replyReceived(self, reply: Any) -> None:
        waiting = self.replyQueue.waiting
        if not waiting:  # nobody asked (txredisapi keeps it, as it does)
            self.replyQueue.put(reply)
        elif isinstance(reply, Exception):
            waiting.pop(0).errback(reply)
        else:
            waiting.pop(0).callback(reply)

    def _check_timeout(self) -> None:
        self._timer = None
        waiting = self.replyQueue.waiting
        sent = self._sent
        while len(sent) > len(waiting):
            sent.popleft()
        oldest = next((at for at in sent if at is not None), None)
        if oldest is None or not self.connected:
            return
        waited = self.seconds() - oldest
        if waited < self.replyTimeout:
            self._timer = self.callLater(self.replyTimeout - waited, self._check_timeout)
            return
        error = txredisapi.TimeoutError(f"no reply from redis in {self.replyTimeout:g}s")
        self.why = str(error)
        while waiting:
            self.replyReceived(error)
        self.transport.abortConnection()

    def connectionLost(self, why: Failure) -> None:  # type: ignore[override]
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self.why = self.why or f"connection to redis lost: {why.getErrorMessage()}"
        super().connectionLost(why)


class _SentinelProtocol(txredisapi.SentinelRedisProtocol, _Protocol):
    """Checks ``ROLE`` first: a server that is not the primary is dropped."""


class _FeedProtocol(txredisapi.SubscriberProtocol, _Protocol):
    """A subscriber connection: every published message to the factory's ``on_message``."""

    direct_replies = False  # SubscriberProtocol.replyReceived puts replies in the queue

    def messageReceived(self, pattern: Any, channel: Any, message: Any) -> None:
        self.factory.on_message(channel, message)


class _SentinelFeedProtocol(txredisapi.SentinelRedisProtocol, _FeedProtocol):
    """A subscriber connection on the primary named by Sentinel."""


# -- Sentinel -----------------------------------------------------------------------


class Sentinels:
    """A primary named by Redis Sentinel: the sentinels' addresses and the master's name.

    ``password`` is the sentinels' own (``requirepass`` in their config), if any.
    One txredisapi ``Sentinel`` (one lazy connection to each sentinel) is shared by
    every connection that follows the primary; :meth:`disconnect` closes it.
    """

    def __init__(
        self,
        reactor: Any,
        addresses: Sequence[tuple[str, int]],
        master_name: str,
        *,
        timeout: float = 5.0,
        password: str | None = None,
    ) -> None:
        if not addresses:
            raise ValueError("Sentinel needs at least one sentinel address")
        self.reactor = reactor
        self.addresses = list(addresses)
        self.master_name = master_name
        self.timeout = timeout
        self._password = password
        self._manager: txredisapi.Sentinel | None = None

    def __str__(self) -> str:
        where = ", ".join(f"{host}:{port}" for host, port in self.addresses)
        return f"sentinel {self.master_name} via {where}"

    def manager(self) -> txredisapi.Sentinel:
        """The txredisapi ``Sentinel`` asking the sentinels (made on first use)."""
        if self._manager is None:
            kwargs: dict[str, Any] = {"replyTimeout": self.timeout}
            if self._password:
                kwargs["password"] = self._password
            manager = txredisapi.Sentinel(self.addresses, **kwargs)
            # no answer naming a healthy primary in this time: this attempt failed
            manager.discovery_timeout = self.timeout
            self._manager = manager
        return self._manager

    def endpoint_for(self, factory: _Factory) -> IStreamClientEndpoint:
        """An endpoint connecting ``factory`` to the primary of the moment."""
        factory.sentinel_manager = self.manager()
        factory.service_name = self.master_name
        factory.is_master = True
        return _SentinelEndpoint(factory, self.reactor, self.timeout)

    def disconnect(self) -> defer.Deferred[Any]:
        """Close the connections to the sentinels."""
        manager, self._manager = self._manager, None
        return defer.succeed(None) if manager is None else manager.disconnect()


@implementer(IStreamClientEndpoint)
class _SentinelEndpoint(txredisapi._SentinelEndpoint):
    """txredisapi's endpoint asking Sentinel for the primary, connecting on our reactor."""

    def __init__(self, factory: _Factory, reactor: Any, timeout: float) -> None:
        super().__init__(factory)
        self.reactor = reactor
        self.timeout = timeout

    def _connect(self, addr: tuple[str, int], protocolFactory: Any) -> defer.Deferred[Any]:
        host, port = addr
        endpoint = HostnameEndpoint(self.reactor, host, port, timeout=max(1, int(self.timeout)))
        return endpoint.connect(protocolFactory)


# -- connection keepers ---------------------------------------------------------------


@implementer(IStreamClientEndpoint)
class _Reporting:
    """Wraps an endpoint: each failed attempt is reported, each attempt bounded in time."""

    def __init__(
        self, endpoint: IStreamClientEndpoint, clock: IReactorTime, timeout: float, report: Any
    ) -> None:
        self.endpoint = endpoint
        self.clock = clock
        self.timeout = timeout
        self.report = report

    def __repr__(self) -> str:  # ClientService's "Scheduling retry ... to connect" lines
        return f"redis ({self.endpoint!r})"

    def connect(self, protocolFactory: Any) -> defer.Deferred[Any]:
        d = self.endpoint.connect(protocolFactory)
        d.addTimeout(self.timeout, self.clock)
        return d.addErrback(self._failed)

    def _failed(self, failure: Failure) -> Failure:
        why = failure.getErrorMessage() or type(failure.value).__name__
        if failure.check(defer.TimeoutError):
            why = f"no connection in {self.timeout:g}s"
        if not failure.check(defer.CancelledError):
            self.report(why)
        return failure


class _Factory(txredisapi.RedisFactory):
    """A pool of one connection on our clock and back-off, ready once ``prepare`` is done."""

    def __init__(
        self,
        clock: IReactorTime,
        *,
        protocol: type,
        password: str | None,
        db: int,
        timeout: float,
        initial_delay: float,
        max_reconnect_delay: float,
        prepare: Callable[[Any], defer.Deferred[Any]],
        on_ready: Callable[[Any], None],
        on_lost: Callable[[str], None],
        on_error: Callable[[str], None],
        sentinel_retry: bool = False,
    ) -> None:
        super().__init__(
            None,
            db or None,
            1,
            isLazy=True,
            password=password or None,
            replyTimeout=timeout,
            convertNumbers=False,
        )
        self.deferred.addErrback(lambda _: None)  # failures are reported through on_error
        self.protocol = protocol
        self.clock = clock
        self.timeout = timeout
        self._backoff = capped_backoff(initial_delay, max_reconnect_delay)
        self._sentinel_retry = sentinel_retry
        self._prepare = prepare
        self._on_ready = on_ready
        self._on_lost = on_lost
        self._on_error = on_error
        self.connection: Any = None

    def startConnecting(self, endpoint: IStreamClientEndpoint) -> None:
        """txredisapi's one pool slot, its ClientService on our clock."""
        slot = txredisapi._PoolSlot(self, endpoint, True)
        slot.service = ClientService(
            _Reporting(endpoint, self.clock, self.timeout, self._on_error),
            txredisapi._SlotFactory(self, slot),
            retryPolicy=slot._retryDelay,
            prepareConnection=slot._prepareConnection,
            clock=self.clock,
        )
        self.slots.append(slot)
        slot.start()

    def retryDelay(self, attempt: int) -> float:
        if self._sentinel_retry and attempt <= 1:
            return 0.0  # the primary's address is asked again: it may have moved
        return self._backoff(max(1, attempt))

    def buildProtocol(self, addr: Any) -> Any:
        proto = super().buildProtocol(addr)
        proto.callLater = self.clock.callLater
        proto.seconds = self.clock.seconds
        return proto

    def _connectionReady(self, conn: Any) -> None:
        try:
            preparing = self._prepare(conn)
        except Exception as e:  # a bug in preparing: as a failed attempt
            preparing = defer.fail(e)
        preparing.addCallbacks(
            lambda _: self.clock.callLater(0, self.addConnection, conn),
            self._prepare_failed,
            errbackArgs=(conn,),
        )

    def _prepare_failed(self, failure: Failure, conn: Any) -> None:
        if isinstance(failure.value, defer.FirstError):
            failure = failure.value.subFailure
        why = failure.getErrorMessage() or type(failure.value).__name__
        self._on_error(f"preparing the connection failed: {why}")
        if conn.transport is not None:
            conn.transport.abortConnection()

    def addConnection(self, conn: Any) -> None:
        super().addConnection(conn)
        if conn in self.pool:
            self.connection = conn
            self._on_ready(conn)

    def delConnection(self, conn: Any) -> None:
        super().delConnection(conn)
        if conn is self.connection:
            self.connection = None
            self._on_lost(conn.why or "connection to redis lost")

    def connectionError(self, why: str) -> None:
        # AUTH or SELECT refused: txredisapi stops reconnecting (a wrong password stays wrong)
        super().connectionError(why)
        self._on_error(why)


class _Keeper:
    """Starts and stops one :class:`_Factory` on an endpoint or a :class:`Sentinels`."""

    def __init__(
        self, target: IStreamClientEndpoint | Sentinels, clock: IReactorTime, **kwargs: Any
    ) -> None:
        self.target = target
        self.clock = clock
        self.timeout: float = kwargs["timeout"]
        self._kwargs = kwargs
        self._factory: _Factory | None = None

    def _protocols(self) -> tuple[type, type]:
        raise NotImplementedError

    def _make(self, **callbacks: Any) -> None:
        plain, sentinel = self._protocols()
        is_sentinel = isinstance(self.target, Sentinels)
        factory = _Factory(
            self.clock,
            protocol=sentinel if is_sentinel else plain,
            sentinel_retry=is_sentinel,
            **self._kwargs,
            **callbacks,
        )
        self._factory = factory
        if isinstance(self.target, Sentinels):
            factory.startConnecting(self.target.endpoint_for(factory))
        else:
            factory.startConnecting(self.target)

    @property
    def connection(self) -> Any:
        """The ready connection, or None."""
        return None if self._factory is None else self._factory.connection

    def stop(self) -> defer.Deferred[None]:
        """Stop reconnecting and close the connection; fires once it is closed."""
        factory, self._factory = self._factory, None
        if factory is None:
            return defer.succeed(None)
        factory.connection = None
        return factory.disconnect().addCallback(lambda _: None)


class Commands(_Keeper):
    """The one command connection: ready after AUTH, SELECT and SCRIPT LOAD of ``scripts``.

    ``on_ready()`` each time a connection becomes ready, ``on_lost(why)`` when a ready
    one goes, ``on_error(why)`` after each failed attempt (the password never appears
    in these).
    """

    def __init__(
        self,
        target: IStreamClientEndpoint | Sentinels,
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
    ) -> None:
        super().__init__(
            target,
            clock,
            password=password,
            db=db,
            timeout=timeout,
            initial_delay=initial_delay,
            max_reconnect_delay=max_reconnect_delay,
        )
        self.scripts = list(scripts)
        self._on_ready = on_ready or (lambda: None)
        self._on_lost = on_lost or (lambda why: None)
        self._on_error = on_error or (lambda why: None)

    def _protocols(self) -> tuple[type, type]:
        return _Protocol, _SentinelProtocol

    def start(self) -> None:
        """Start connecting (and reconnecting); returns at once."""
        if self._factory is None:
            self._make(
                prepare=self._load_scripts,
                on_ready=lambda _: self._on_ready(),
                on_lost=self._on_lost,
                on_error=self._on_error,
            )

    def execute(self, *args: Any) -> defer.Deferred[Any]:
        """Send one command on the ready connection; RedisConnectionError if there is none."""
        conn = self.connection
        if conn is None:
            return defer.fail(RedisConnectionError("not connected"))
        return conn.execute_command(*args)

    def _load_scripts(self, conn: Any) -> defer.Deferred[Any]:
        steps = [conn.execute_command("SCRIPT", "LOAD", source) for source in self.scripts]
        return defer.gatherResults(steps, consumeErrors=True) if steps else defer.succeed(None)


class Feed(_Keeper):
    """A connection SUBSCRIBEd to ``channels``, kept up and resubscribed after reconnects.

    ``on_message(channel, message)`` gets each published message in order;
    ``on_state(True)`` once the subscription is confirmed on a connection,
    ``on_state(False)`` when that connection goes (messages published meanwhile are
    lost: resynchronise on ``True``).
    """

    def __init__(
        self,
        target: IStreamClientEndpoint | Sentinels,
        channels: Sequence[str],
        on_message: Callable[[str, str], None],
        on_state: Callable[[bool], None],
        clock: IReactorTime,
        *,
        password: str | None = None,
        timeout: float = 5.0,
        ping_interval: float = 10.0,
        initial_delay: float = 0.5,
        max_reconnect_delay: float = 5.0,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        if not channels:
            raise ValueError("a Feed needs at least one channel")
        super().__init__(
            target,
            clock,
            password=password,
            db=0,
            timeout=timeout,
            initial_delay=initial_delay,
            max_reconnect_delay=max_reconnect_delay,
        )
        self.channels = list(dict.fromkeys(channels))
        self.ping_interval = ping_interval
        self._on_message = on_message
        self._on_state = on_state
        self._on_error = on_error or (lambda why: None)
        self._ping: IDelayedCall | None = None

    def _protocols(self) -> tuple[type, type]:
        return _FeedProtocol, _SentinelFeedProtocol

    @property
    def subscribed(self) -> bool:
        """Whether the subscription is confirmed on a live connection."""
        return self.connection is not None

    def start(self) -> None:
        """Start connecting (and resubscribing); returns at once."""
        if self._factory is None:
            self._make(
                prepare=self._subscribe,
                on_ready=self._ready,
                on_lost=self._lost,
                on_error=self._on_error,
            )
            assert self._factory is not None
            self._factory.on_message = self._on_message

    def _subscribe(self, conn: Any) -> defer.Deferred[Any]:
        return conn.subscribe(self.channels).addTimeout(self.timeout, self.clock)

    def _ready(self, conn: Any) -> None:
        self._schedule_ping(conn)
        self._on_state(True)

    def _schedule_ping(self, conn: Any) -> None:
        self._ping = self.clock.callLater(self.ping_interval, self._send_ping, conn)

    def _send_ping(self, conn: Any) -> None:
        self._ping = None
        if conn is not self.connection:
            return
        # a PING unanswered in the reply timeout aborts the connection (then reconnects)
        conn.execute_command("PING").addErrback(lambda _: None)
        self._schedule_ping(conn)

    def _cancel_ping(self) -> None:
        if self._ping is not None and self._ping.active():
            self._ping.cancel()
        self._ping = None

    def _lost(self, why: str) -> None:
        self._cancel_ping()
        self._on_state(False)

    def stop(self) -> defer.Deferred[None]:
        """Stop resubscribing and close the connection (``on_state(False)`` if it was up)."""
        self._cancel_ping()
        was_up = self.connection is not None
        stopped = super().stop()
        if was_up:
            self._on_state(False)
        return stopped
