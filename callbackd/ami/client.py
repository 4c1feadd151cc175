"""The daemon's AMI connection: connect, log in, keep alive, reconnect with back-off.

Built on :class:`twisted.application.internet.ClientService`. Logging in is done
by the service itself rather than through ClientService's ``prepareConnection``,
because ClientService cannot take a connection that closes while (or after) its
preparation fails (``NoTransition`` in its state machine), and Asterisk closes
the socket after every refused login. Instead a refused or timed-out login aborts
the connection and the retry policy counts every attempt that did not end
logged in, so the back-off grows for refused logins as it does for refused
connections (docs/asterisk.rst, "Keepalive, shutdown and reconnect"). The back-off
is :func:`callbackd.backoff.capped_backoff`: from ``min_retry`` doubling up to
``max_retry`` (``[ami] reconnect_max_delay``, 2 s by default), jitter included, so a
daemon is logged in again at most that long after Asterisk is back.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from twisted.application.internet import ClientService
from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IAddress, IReactorTime, IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure

from callbackd.ami.message import Message
from callbackd.ami.protocol import (
    AMICommandFailure,
    AMIConnectionLost,
    AMIProtocol,
    AMITimeout,
    EventCallback,
    EventRegistry,
)
from callbackd.backoff import capped_backoff

__all__ = ["AMIClientService"]


class _AMIProtocolFactory(Factory):
    """Builds one :class:`AMIProtocol` per connection with the service's settings."""

    def __init__(self, build: Callable[[], AMIProtocol]) -> None:
        self._build = build

    def buildProtocol(self, addr: IAddress | None) -> AMIProtocol:
        return self._build()


class AMIClientService(Service):
    """Keeps one logged-in AMI session to Asterisk, reconnecting for ever.

    Event subscriptions and connection listeners belong to the service and
    survive reconnects. Nothing is replayed after a reconnect: connection
    listeners rebuild their state (``CoreShowChannels`` ...) in ``on_connected``.
    """

    log = Logger()

    def __init__(
        self,
        endpoint: IStreamClientEndpoint,
        username: str,
        secret: str,
        *,
        md5: bool = True,
        clock: IReactorTime,
        node_id: str = "cb1",
        action_timeout: float = 10.0,
        ping_interval: float = 15.0,
        ping_timeout: float = 5.0,
        min_retry: float = 0.5,
        max_retry: float = 2.0,
        jitter: Callable[[], float] = random.random,
        section: str = "[ami]",
    ) -> None:
        self.endpoint = endpoint
        self.username = username
        self._secret = secret
        self.md5 = md5
        self.clock = clock
        self.node_id = node_id
        self.action_timeout = action_timeout
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.min_retry = min_retry
        self.max_retry = max_retry
        self._backoff = capped_backoff(min_retry, max_retry, jitter=jitter)
        self.events = EventRegistry()
        #: the logged-in session, or None
        self.protocol: AMIProtocol | None = None
        #: failed attempts since the last successful login
        self.failures = 0
        #: the config section of this connection, named in its logs ("[switch:b]")
        self.section = section
        #: why the last login failed ("" once logged in): for the health check
        self.last_error = ""
        self._listeners: list[tuple[Callable[[AMIProtocol], object], Callable[[Failure], object]]]
        self._listeners = []
        self._waiters: list[Deferred[AMIProtocol]] = []
        self._client = ClientService(
            endpoint,
            _AMIProtocolFactory(self._build_protocol),
            retryPolicy=self._retry_delay,
            clock=clock,
        )

    def __repr__(self) -> str:
        return f"<AMIClientService {self.username}@{self.endpoint!r}>"

    @property
    def connected(self) -> bool:
        """True while a logged-in session is up (for the health check)."""
        return self.protocol is not None

    # --- subscriptions ----------------------------------------------------------------

    def register_event(self, name: str | None, callback: EventCallback) -> None:
        """Call ``callback(message)`` for every event ``name`` (``None``: all), on every session."""
        self.events.register(name, callback)

    def deregister_event(self, name: str | None, callback: EventCallback) -> None:
        """Undo :meth:`register_event`."""
        self.events.deregister(name, callback)

    def add_connection_listener(
        self,
        on_connected: Callable[[AMIProtocol], object],
        on_lost: Callable[[Failure], object],
    ) -> None:
        """Call ``on_connected(protocol)`` after each login, ``on_lost(reason)`` on each loss."""
        self._listeners.append((on_connected, on_lost))

    def when_connected(self, timeout: float | None = None) -> Deferred[AMIProtocol]:
        """The logged-in protocol, now or once logged in (AMITimeout after ``timeout`` s)."""
        if self.protocol is not None:
            return succeed(self.protocol)
        if not self.running:
            return fail(AMIConnectionLost("the AMI client is not running"))
        waiter: Deferred[AMIProtocol] = Deferred()
        self._waiters.append(waiter)
        if timeout is not None:

            def expire() -> None:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
                    waiter.errback(AMITimeout(f"no AMI session within {timeout}s"))

            timer = self.clock.callLater(timeout, expire)

            def cancel_timer(result: object) -> object:
                if timer.active():
                    timer.cancel()
                return result

            waiter.addBoth(cancel_timer)
        return waiter

    # --- service ----------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self.log.info("connecting to AMI at {endpoint!r}", endpoint=self.endpoint)
        self._client.startService()

    def stopService(self) -> Deferred[None]:
        """Log off if logged in, stop reconnecting; fires when the connection is closed."""
        super().stopService()
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.errback(AMIConnectionLost("the AMI client stopped"))
        protocol = self.protocol
        if protocol is not None and protocol.connected:
            said_goodbye: Deferred[Message | None]
            said_goodbye = protocol.logoff(timeout=min(self.action_timeout, 2.0))
            said_goodbye.addErrback(
                lambda f: self.log.info("AMI Logoff: {error}", error=f.getErrorMessage())
            )
        else:
            said_goodbye = succeed(None)
        return said_goodbye.addCallback(lambda _: self._client.stopService())

    # --- connections ------------------------------------------------------------------

    def _retry_delay(self, attempt: int) -> float:
        # ClientService counts failed TCP connects only and resets on every connect;
        # count refused logins too.
        self.failures += 1
        delay = self._backoff(self.failures)
        self.log.info(
            "AMI reconnect attempt {failures} in {delay:.2f}s", failures=self.failures, delay=delay
        )
        return delay

    def _build_protocol(self) -> AMIProtocol:
        protocol = AMIProtocol(
            clock=self.clock,
            node_id=self.node_id,
            action_timeout=self.action_timeout,
            ping_interval=self.ping_interval,
            ping_timeout=self.ping_timeout,
            events=self.events,
        )
        protocol.on_lost = lambda reason: self._connection_lost(protocol, reason)
        protocol.on_connected = self._handshake
        return protocol

    def _handshake(self, protocol: AMIProtocol) -> None:
        d = protocol.login(self.username, self._secret, self.md5)
        d.addCallbacks(
            lambda reply: self._logged_in(protocol, reply),
            lambda failure: self._login_failed(protocol, failure),
        )

    def _logged_in(self, protocol: AMIProtocol, reply: Message) -> None:
        if not protocol.connected:
            return
        self.failures = 0
        self.last_error = ""
        self.protocol = protocol
        self.log.info(
            "AMI session up (AMI {version}, user {username}, {section})",
            version=protocol.version,
            username=self.username,
            section=self.section,
        )
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(protocol)
        for on_connected, _ in list(self._listeners):
            try:
                on_connected(protocol)
            except Exception:
                self.log.failure(
                    "AMI connection listener {listener!r} failed", listener=on_connected
                )

    def _login_failed(self, protocol: AMIProtocol, failure: Failure) -> None:
        if not self.running:
            return
        self.last_error = f"login failed: {failure.getErrorMessage()}"
        if failure.check(AMICommandFailure):
            text = failure.getErrorMessage()
            if "already in use" in text.lower():
                self.log.warn(
                    "AMI user {username}: Login Already In Use (an old session is still "
                    "open on Asterisk); retrying",
                    username=self.username,
                )
            else:
                self.last_error = f"login refused: {text}"
                self.log.error(
                    "AMI login as {username} refused: {reason}; check {section} username and "
                    "secret and manager.conf; retrying",
                    username=self.username,
                    reason=text,
                    section=self.section,
                )
        elif failure.check(AMIConnectionLost):
            self.log.warn("AMI connection closed during login")
        elif failure.check(AMITimeout):
            self.log.warn("AMI login timed out: {reason}", reason=failure.getErrorMessage())
        else:
            self.log.failure("AMI login failed", failure)
        protocol.abort()

    def _connection_lost(self, protocol: AMIProtocol, reason: Failure) -> None:
        if self.protocol is not protocol:
            return
        self.protocol = None
        if self.running:
            self.log.warn("AMI connection lost: {reason}", reason=reason.getErrorMessage())
        for _, on_lost in list(self._listeners):
            try:
                on_lost(reason)
            except Exception:
                self.log.failure("AMI connection listener {listener!r} failed", listener=on_lost)
