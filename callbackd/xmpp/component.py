"""The daemon's connection to the XMPP server as an external component (XEP-0114).

:class:`XMPPComponent` is wokkel's :class:`~wokkel.component.Component` (a stream
manager and a Twisted service) with three changes:

- **Back-off.** wokkel's factory is Twisted's ``ReconnectingClientFactory``,
  which resets its delay on every TCP connect, so a server that accepts the
  connection and then refuses the secret would be hammered at the first delay.
  Here the delay comes from :func:`callbackd.backoff.capped_backoff` over the
  attempts since the last *authenticated* stream: from 0.5 s doubling up to
  ``[xmpp] reconnect_max_delay``, jitter included.
- **A refused secret is not fatal.** The server answers a wrong secret with a
  ``<not-authorized/>`` stream error and closes the stream; wokkel's component
  would stop its service and raise. Here it is logged once per change (never the
  secret), shown by the health check as "secret refused", and retried with the
  back-off, so fixing the server's configuration is enough.
- **A stream that never opens is dropped** after ``handshake_timeout`` seconds.

- **Standby** (``standby=True``: several daemons, ``[cluster] enabled``). The
  XMPP server admits one connection per component domain and refuses the next with
  a ``<conflict/>`` stream error (Prosody's default ``component_conflict_resolve =
  "kick_new"``): one daemon's component serves the chat users, the others' retry
  with the back-off and are *standing by*, a healthy state; when the connected
  daemon dies, the next retry of another takes the domain over.

:meth:`XMPPComponent.health` is the ``/healthz`` check ("connected ...", "not
connected ...", "secret refused ...", "refused by the server: conflict" when
another process holds the domain, "standing by ..." when that is expected);
:class:`XMPPMetrics` are its Prometheus metrics.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from twisted.application import service
from twisted.internet import defer
from twisted.internet.interfaces import IConnector, IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.words.protocols.jabber import xmlstream
from twisted.words.protocols.jabber.component import ConnectComponentAuthenticator
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish

import callbackd.xmpp  # noqa: F401  (filters wokkel's DeprecationWarnings first)
from callbackd.backoff import capped_backoff

from wokkel.component import Component  # isort: skip
from wokkel.subprotocols import StreamManager  # isort: skip

__all__ = ["XMPPComponent", "XMPPMetrics"]

log = Logger(namespace="callbackd.xmpp")

#: the states the health check reports
CONNECTED = "connected"
NOT_CONNECTED = "not connected"
CONNECTING = "connecting"
SECRET_REFUSED = "secret refused"
STOPPED = "stopped"
#: the stream error of a domain another connection holds
CONFLICT = "conflict"


class XMPPMetrics:
    """The component's Prometheus metrics, on the daemon's registry.

    - ``xmpp_connected``: 1 while the component's stream is authenticated, else 0
    - ``xmpp_connects`` (outcome): connection attempts: connected, refused, lost
    - ``xmpp_stanzas`` (kind): stanzas received: message, presence, iq
    """

    def __init__(self, registry: CollectorRegistry, namespace: str = "callbackd") -> None:
        common: dict[str, Any] = {"namespace": namespace, "registry": registry}
        self.connected = Gauge(
            "xmpp_connected", "1 while connected to the XMPP server as its component", **common
        )
        self.connects = Counter(
            "xmpp_connects",
            "XMPP component connection outcomes: connected, refused (secret, conflict), lost",
            ["outcome"],
            **common,
        )
        self.stanzas = Counter(
            "xmpp_stanzas", "Stanzas received by the XMPP component, by kind", ["kind"], **common
        )


class _ComponentStreamFactory(xmlstream.XmlStreamFactory):
    """wokkel's reconnecting factory with the delay of the component's back-off."""

    clock: Any

    def __init__(self, authenticator: Any, next_delay: Callable[[], float], clock: Any) -> None:
        super().__init__(authenticator)
        self.noisy = False
        self._next_delay = next_delay
        self.clock = clock

    def retry(self, connector: IConnector | None = None) -> None:
        """Connect again after the back-off's next delay (unless stopped)."""
        if not self.continueTrying:
            return
        if connector is None:
            connector = self.connector
        self.connector = connector
        self._callID = self.clock.callLater(self._next_delay(), self._reconnect, connector)

    def _reconnect(self, connector: IConnector) -> None:
        self._callID = None
        connector.connect()


class XMPPComponent(Component):  # type: ignore[misc]
    """The component of ``domain`` on the XMPP server at ``host:port``, reconnecting for ever."""

    def __init__(
        self,
        domain: str,
        host: str,
        port: int,
        secret: str,
        *,
        reactor: Any,
        min_retry: float = 0.5,
        max_retry: float = 10.0,
        handshake_timeout: float = 10.0,
        jitter: Callable[[], float] = random.random,
        metrics: XMPPMetrics | None = None,
        standby: bool = False,
    ) -> None:
        # Component.__init__ builds wokkel's own factory; build ours instead.
        self.host = host
        self.port = port
        self.domain = domain
        self.jid = JID(domain)
        self.handshake_timeout = handshake_timeout
        self.metrics = metrics
        #: another daemon's component holding the domain is expected (see the module)
        self.standby = standby
        self._backoff = capped_backoff(min_retry, max_retry, jitter=jitter)
        factory = _ComponentStreamFactory(
            ConnectComponentAuthenticator(domain, secret), self._retry_delay, reactor
        )
        StreamManager.__init__(self, factory, reactor)
        #: one of connected, connecting, not connected, secret refused, stopped
        self.state = STOPPED
        #: the server's last refusal (a stream error condition), or ""
        self.refusal = ""
        #: failed attempts since the last authenticated stream
        self.failures = 0
        self._connection: IConnector | None = None
        self._handshake_timer: IDelayedCall | None = None
        self._lost: list[defer.Deferred[None]] = []

    def __repr__(self) -> str:
        return f"<XMPPComponent {self.domain} at {self.host}:{self.port} ({self.state})>"

    @property
    def connected(self) -> bool:
        """True while the stream is authenticated (stanzas sent now are delivered)."""
        return self.state == CONNECTED

    @property
    def standing_by(self) -> bool:
        """True while another daemon's component holds the domain, as expected."""
        return self.standby and self.refusal == CONFLICT and self.state != CONNECTED

    def health(self) -> tuple[bool, str]:
        """The ``/healthz`` check: ok only while connected."""
        where = f"{self.host}:{self.port}"
        if self.state == CONNECTED:
            return True, f"connected to {where} as {self.domain}"
        if self.state == SECRET_REFUSED:
            return False, f"secret refused by {where} for {self.domain}"
        if self.standing_by:
            return True, (
                f"standing by: another daemon's component holds {self.domain} at {where}"
                f" (attempt {self.failures})"
            )
        if self.refusal:
            return False, f"refused by {where}: {self.refusal} (attempt {self.failures})"
        if self.failures:
            return False, f"not connected to {where} (attempt {self.failures})"
        return False, f"{self.state} ({where})"

    # --- service ----------------------------------------------------------------------

    def startService(self) -> None:
        service.Service.startService(self)
        self.factory.continueTrying = True
        self._set_state(CONNECTING)
        log.info(
            "connecting to the XMPP server at {host}:{port} as component {domain}",
            host=self.host,
            port=self.port,
            domain=self.domain,
        )
        self._connection = self._getConnection()

    def _getConnection(self) -> IConnector:
        connector: IConnector = self._reactor.connectTCP(
            self.host, self.port, self.factory, timeout=5
        )
        return connector

    def stopService(self) -> defer.Deferred[None]:
        """Stop reconnecting and close the stream; fires once it is closed."""
        service.Service.stopService(self)
        self.factory.stopTrying()
        lost: defer.Deferred[None] = defer.Deferred()
        if self.xmlstream is not None:
            self._lost.append(lost)
        else:
            lost.callback(None)
        if self._connection is not None:
            self._connection.disconnect()
        self._set_state(STOPPED)
        return lost

    # --- stream events ----------------------------------------------------------------

    def _retry_delay(self) -> float:
        self.failures += 1
        delay = self._backoff(self.failures)
        log.info(
            "XMPP reconnect attempt {failures} in {delay:.2f}s", failures=self.failures, delay=delay
        )
        return delay

    def _connected(self, xs: Any) -> None:
        StreamManager._connected(self, xs)
        xs.addObserver(xmlstream.STREAM_ERROR_EVENT, self._stream_error)
        xs.addObserver("/*", self._count_stanza, priority=100)
        self._handshake_timer = self._reactor.callLater(
            self.handshake_timeout, self._handshake_expired, xs
        )

    def _authd(self, xs: Any) -> None:
        self._cancel_handshake_timer()
        Component._authd(self, xs)
        if self.failures or self.refusal:
            log.info("XMPP component {domain} connected again", domain=self.domain)
        else:
            log.info("XMPP component {domain} connected", domain=self.domain)
        self.failures = 0
        self.refusal = ""
        self._set_state(CONNECTED)
        if self.metrics is not None:
            self.metrics.connects.labels("connected").inc()

    def initializationFailed(self, reason: Failure) -> None:
        """The handshake failed: drop the stream and let the back-off retry."""
        log.warn(
            "XMPP component {domain}: handshake failed: {error}",
            domain=self.domain,
            error=reason.getErrorMessage(),
        )
        if self.xmlstream is not None and self.xmlstream.transport is not None:
            self.xmlstream.transport.loseConnection()

    def _stream_error(self, reason: Failure) -> None:
        condition = getattr(reason.value, "condition", "") or "unknown"
        new = condition != self.refusal
        self.refusal = condition
        if condition == "not-authorized":
            self._set_state(SECRET_REFUSED)
        if self.metrics is not None:
            self.metrics.connects.labels("refused").inc()
        if new and self.standing_by:
            log.info(
                "XMPP component {domain}: another daemon's component holds it; standing by",
                domain=self.domain,
            )
        elif new:  # logged once per change, however often it is retried
            log.warn(
                "XMPP server refused component {domain}: {condition}",
                domain=self.domain,
                condition=condition,
            )

    def _handshake_expired(self, xs: Any) -> None:
        self._handshake_timer = None
        log.warn(
            "XMPP component {domain}: no handshake within {timeout}s",
            domain=self.domain,
            timeout=self.handshake_timeout,
        )
        if xs.transport is not None:
            xs.transport.loseConnection()

    def _cancel_handshake_timer(self) -> None:
        if self._handshake_timer is not None and self._handshake_timer.active():
            self._handshake_timer.cancel()
        self._handshake_timer = None

    def _disconnected(self, reason: Failure) -> None:
        was_connected = self.state == CONNECTED
        self._cancel_handshake_timer()
        StreamManager._disconnected(self, reason)
        if self.state not in (SECRET_REFUSED, STOPPED):
            self._set_state(NOT_CONNECTED)
        if was_connected:
            log.warn(
                "XMPP component {domain} lost its connection: {reason}",
                domain=self.domain,
                reason=reason.getErrorMessage(),
            )
            if self.metrics is not None:
                self.metrics.connects.labels("lost").inc()
        lost, self._lost = self._lost, []
        for d in lost:
            d.callback(None)

    def _count_stanza(self, element: domish.Element) -> None:
        if self.metrics is not None and element.name in ("message", "presence", "iq"):
            self.metrics.stanzas.labels(element.name).inc()

    def _set_state(self, state: str) -> None:
        self.state = state
        if self.metrics is not None:
            self.metrics.connected.set(1 if state == CONNECTED else 0)
