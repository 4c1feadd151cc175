"""The component's reconnect back-off and handshake timeout, on a memory reactor."""

from __future__ import annotations

from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from callbackd.xmpp.component import XMPPComponent


def component(reactor, **options):
    options.setdefault("jitter", lambda: 0.0)
    chat = XMPPComponent(
        "callback.example.test", "127.0.0.1", 5347, "secret", reactor=reactor, **options
    )
    chat.startService()
    return chat


def next_delay(reactor) -> float:
    [call] = [c for c in reactor.getDelayedCalls() if c.active()]
    delay = call.getTime() - reactor.seconds()
    reactor.advance(delay)
    return round(delay, 3)


def test_refused_connections_back_off_up_to_the_cap():
    reactor = MemoryReactorClock()
    chat = component(reactor, max_retry=4.0)
    connector = reactor.connectors[0]
    delays = []
    for _ in range(6):
        chat.factory.clientConnectionFailed(connector, Failure(ConnectionRefusedError()))
        delays.append(next_delay(reactor))
    # capped_backoff(0.5, 4.0) with no jitter: the cap less the jitter's share
    assert delays == [0.5, 1.0, 2.0, 3.875, 3.875, 3.875]
    assert chat.failures == 6


def test_connections_closed_before_the_handshake_keep_backing_off():
    """Accepted then closed (a refused secret): TCP connects do not reset the back-off."""
    reactor = MemoryReactorClock()
    chat = component(reactor, max_retry=8.0)
    connector = reactor.connectors[0]
    delays = []
    for _ in range(3):
        xs = chat.factory.buildProtocol(None)  # Twisted's factory resets its own delay here
        xs.makeConnection(StringTransport())
        xs.connectionLost(Failure(ConnectionDone()))
        chat.factory.clientConnectionLost(connector, Failure(ConnectionDone()))
        delays.append(next_delay(reactor))
    assert delays == [0.5, 1.0, 2.0]
    assert chat.health() == (False, "not connected to 127.0.0.1:5347 (attempt 3)")


def test_an_authenticated_stream_resets_the_back_off():
    reactor = MemoryReactorClock()
    chat = component(reactor)
    connector = reactor.connectors[0]
    chat.factory.clientConnectionFailed(connector, Failure(ConnectionRefusedError()))
    next_delay(reactor)
    xs = chat.factory.buildProtocol(None)
    xs.makeConnection(StringTransport())
    xs.thisEntity = chat.jid
    chat._authd(xs)
    assert chat.connected and chat.failures == 0
    xs.connectionLost(Failure(ConnectionDone()))
    assert chat.health() == (False, "not connected (127.0.0.1:5347)")
    chat.factory.clientConnectionLost(connector, Failure(ConnectionDone()))
    assert next_delay(reactor) == 0.5


def test_a_stream_without_handshake_is_dropped():
    reactor = MemoryReactorClock()
    chat = component(reactor, handshake_timeout=3.0)
    xs = chat.factory.buildProtocol(None)
    transport = StringTransport()
    xs.makeConnection(transport)
    reactor.advance(2.9)
    assert not transport.disconnecting
    reactor.advance(0.2)
    assert transport.disconnecting


def test_stopping_stops_reconnecting():
    reactor = MemoryReactorClock()
    chat = component(reactor)
    chat.factory.clientConnectionFailed(reactor.connectors[0], Failure(ConnectionRefusedError()))
    d = chat.stopService()
    assert [c for c in reactor.getDelayedCalls() if c.active()] == []
    assert d.called and chat.state == "stopped"
