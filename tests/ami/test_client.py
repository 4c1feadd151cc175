"""AMIClientService: login, back-off, reconnects and shutdown, with a fake endpoint and Clock."""

from __future__ import annotations

import random

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransportWithDisconnection
from twisted.logger import Logger
from twisted.python.failure import Failure

from callbackd.ami.client import AMIClientService
from callbackd.ami.message import Message, MessageParser
from callbackd.ami.protocol import AMIProtocol, AMITimeout
from callbackd.simulator.service import SimulatorService
from tests.ami.fixtures import server_bytes

BANNER = b"Asterisk Call Manager/11.0.0\r\n"
#: the default back-off with no jitter: 0.5 s doubling up to the 2 s cap less the room
#: kept for the jitter (a quarter of the first delay), so jitter never passes the cap
EXPECTED_DELAYS = [0.5, 1.0, 1.875, 1.875, 1.875, 1.875]


class Connection:
    """One accepted fake TCP connection."""

    def __init__(self, proxy, transport: StringTransportWithDisconnection) -> None:
        self.proxy = proxy
        self.transport = transport

    @property
    def protocol(self) -> AMIProtocol:
        return self.proxy._protocol

    def sent(self) -> list[Message]:
        messages = MessageParser().feed(self.transport.value())
        self.transport.clear()
        return messages

    def reply(self, action: Message, *lines: str) -> None:
        head = f"Response: {lines[0]}\r\nActionID: {action['ActionID']}\r\n"
        body = "".join(f"{line}\r\n" for line in lines[1:])
        self.protocol.dataReceived((head + body + "\r\n").encode())

    def drop(self) -> None:
        self.transport.loseConnection()


class FakeEndpoint:
    """A client endpoint whose connection attempts the test accepts or refuses."""

    def __init__(self) -> None:
        self.attempts: list[tuple[object, Deferred]] = []

    def connect(self, factory) -> Deferred:
        d: Deferred = Deferred()
        self.attempts.append((factory, d))
        return d

    def accept(self) -> Connection:
        factory, d = self.attempts[-1]
        proxy = factory.buildProtocol(None)
        transport = StringTransportWithDisconnection()
        transport.protocol = proxy
        proxy.makeConnection(transport)
        d.callback(proxy)
        return Connection(proxy, transport)

    def refuse(self) -> None:
        _, d = self.attempts[-1]
        d.errback(ConnectionRefusedError())


def make_service(**kwargs) -> tuple[AMIClientService, FakeEndpoint, Clock, list[dict]]:
    clock = Clock()
    endpoint = FakeEndpoint()
    options = {"md5": False, "ping_interval": 15.0, "ping_timeout": 5.0, "jitter": lambda: 0.0}
    options.update(kwargs)
    service = AMIClientService(endpoint, "callbackd", "s3cret", clock=clock, **options)
    logged: list[dict] = []
    service.log = Logger(observer=logged.append)
    return service, endpoint, clock, logged


def log_in(connection: Connection) -> None:
    connection.protocol.dataReceived(BANNER)
    [login] = connection.sent()
    assert login.name == "Login"
    connection.reply(login, "Success", "Message: Authentication accepted")


def refuse_login(connection: Connection, text: str) -> None:
    connection.protocol.dataReceived(BANNER)
    [login] = connection.sent()
    connection.reply(login, "Error", f"Message: {text}")


def next_attempt_after(clock: Clock, endpoint: FakeEndpoint, delay: float) -> None:
    """Assert the next connection attempt comes ``delay`` s from now, not earlier."""
    before = len(endpoint.attempts)
    clock.advance(delay - 0.001)
    assert len(endpoint.attempts) == before, f"retried before {delay}s"
    clock.advance(0.002)
    assert len(endpoint.attempts) == before + 1, f"no retry after {delay}s"


def attempt_times(clock: Clock, endpoint: FakeEndpoint, until: float) -> list[float]:
    """Refuse every connection attempt until ``until`` s; when each attempt came."""
    times = []
    while clock.seconds() < until:
        if endpoint.attempts and endpoint.attempts[-1][1].called is False:
            times.append(clock.seconds())
            endpoint.refuse()
        clock.advance(0.001)
    return times


def test_refused_connections_never_wait_longer_than_the_cap():
    """With a real jitter, no wait between attempts is longer than the 2 s default."""
    service, endpoint, clock, _ = make_service(jitter=random.Random(7).random)
    service.startService()
    times = attempt_times(clock, endpoint, 60.0)
    waits = [later - earlier for earlier, later in zip(times, times[1:], strict=False)]
    assert len(waits) > 25
    assert max(waits) <= 2.0 + 0.001
    assert max(waits) > 1.875  # the jitter is used up to the cap


def test_the_cap_is_configurable():
    """max_retry ([ami] reconnect_max_delay) is the longest wait, jitter at its top."""
    service, endpoint, clock, _ = make_service(max_retry=10.0, jitter=lambda: 0.999999)
    service.startService()
    times = attempt_times(clock, endpoint, 200.0)
    waits = [later - earlier for earlier, later in zip(times, times[1:], strict=False)]
    assert waits[:3] == pytest.approx([0.625, 1.125, 2.125], abs=0.002)
    assert max(waits) <= 10.0 + 0.001 and waits[-1] > 9.99


def test_logged_in_soon_after_asterisk_is_back():
    """Asterisk down for 8 s: the daemon is logged in again within 2 s of its return."""
    service, endpoint, clock, _ = make_service(jitter=random.Random(3).random)
    service.startService()
    log_in(endpoint.accept())
    service.protocol.transport.loseConnection()  # Asterisk goes away
    down_at = clock.seconds()
    attempt_times(clock, endpoint, down_at + 8.0)
    while not endpoint.attempts or endpoint.attempts[-1][1].called:
        clock.advance(0.001)
    back_after = clock.seconds() - (down_at + 8.0)
    log_in(endpoint.accept())
    assert service.connected
    assert back_after <= 2.0


def test_constructor_does_no_io():
    """Nothing connects before startService."""
    service, endpoint, _, _ = make_service()
    assert endpoint.attempts == []
    assert not service.connected


def test_login_then_listeners_and_when_connected():
    """After banner and login, when_connected fires and listeners get the protocol."""
    service, endpoint, _, _ = make_service()
    connected: list[AMIProtocol] = []
    service.add_connection_listener(connected.append, lambda reason: None)
    service.startService()
    waiting = service.when_connected()
    connection = endpoint.accept()
    assert not service.connected
    log_in(connection)
    assert service.connected
    assert connected == [connection.protocol]
    assert waiting.result is connection.protocol


def test_md5_login_by_default():
    """The service logs in with the MD5 challenge unless told otherwise."""
    service, endpoint, _, _ = make_service(md5=True)
    service.startService()
    connection = endpoint.accept()
    connection.protocol.dataReceived(BANNER)
    [challenge] = connection.sent()
    assert challenge.name == "Challenge"


def test_refused_connections_back_off():
    """Refused connections are retried after 0.5, 1, then at most 2 s."""
    service, endpoint, clock, _ = make_service()
    service.startService()
    for delay in EXPECTED_DELAYS:
        endpoint.refuse()
        next_attempt_after(clock, endpoint, delay)


def test_refused_logins_back_off_too():
    """Repeated ``Authentication failed`` grows the back-off; each is logged as an error."""
    service, endpoint, clock, logged = make_service()
    service.startService()
    for delay in EXPECTED_DELAYS[:5]:
        connection = endpoint.accept()
        refuse_login(connection, "Authentication failed")
        assert connection.transport.disconnected
        next_attempt_after(clock, endpoint, delay)
    errors = [e for e in logged if e["log_level"].name == "error"]
    assert len(errors) == 5
    assert all("Authentication failed" in e["reason"] for e in errors)
    assert not service.connected


def test_login_already_in_use_is_retried():
    """``Login Already In Use`` closes the connection and the next attempt can log in."""
    service, endpoint, clock, logged = make_service()
    service.startService()
    refuse_login(endpoint.accept(), "Login Already In Use")
    assert any("Already In Use" in e["log_format"] for e in logged)
    next_attempt_after(clock, endpoint, EXPECTED_DELAYS[0])
    log_in(endpoint.accept())
    assert service.connected


def test_success_resets_the_backoff():
    """After a successful login the next loss retries after the minimum delay again."""
    service, endpoint, clock, _ = make_service()
    service.startService()
    for delay in EXPECTED_DELAYS[:4]:
        endpoint.refuse()
        next_attempt_after(clock, endpoint, delay)
    connection = endpoint.accept()
    log_in(connection)
    connection.drop()
    next_attempt_after(clock, endpoint, EXPECTED_DELAYS[0])


def test_loss_notifies_and_reconnects():
    """A lost session calls on_lost, clears connected, and a new session is logged in."""
    service, endpoint, clock, _ = make_service()
    lost: list[Failure] = []
    connected: list[AMIProtocol] = []
    service.add_connection_listener(connected.append, lost.append)
    service.startService()
    first = endpoint.accept()
    log_in(first)
    first.drop()
    assert not service.connected
    assert len(lost) == 1
    next_attempt_after(clock, endpoint, EXPECTED_DELAYS[0])
    second = endpoint.accept()
    log_in(second)
    assert connected == [first.protocol, second.protocol]
    assert service.protocol is second.protocol


def test_subscriptions_survive_reconnects():
    """An event subscription made once receives events from every later session."""
    service, endpoint, clock, _ = make_service()
    seen: list[str] = []
    service.register_event("OriginateResponse", lambda e: seen.append(e["Response"]))
    service.startService()
    first = endpoint.accept()
    log_in(first)
    first.protocol.dataReceived(server_bytes("ami-busy.log").partition(b"\r\n")[2])
    first.drop()
    clock.advance(EXPECTED_DELAYS[0])
    second = endpoint.accept()
    log_in(second)
    second.protocol.dataReceived(server_bytes("ami-answer_then_hangup.log").partition(b"\r\n")[2])
    assert seen == ["Failure", "Success"]


def test_unanswered_keepalive_leads_to_reconnect():
    """A Ping unanswered within ping_timeout drops the session and a new one is attempted."""
    service, endpoint, clock, _ = make_service()
    service.startService()
    connection = endpoint.accept()
    log_in(connection)
    clock.advance(15.0)
    [ping] = connection.sent()
    assert ping.name == "Ping"
    clock.advance(5.0)
    assert not service.connected
    next_attempt_after(clock, endpoint, EXPECTED_DELAYS[0])


def test_silent_server_times_out_the_login():
    """A server that never sends its banner is dropped after the action timeout."""
    service, endpoint, clock, _ = make_service(action_timeout=3.0)
    service.startService()
    connection = endpoint.accept()
    clock.advance(3.0)
    assert connection.transport.disconnected
    assert len(endpoint.attempts) == 1


def test_when_connected_times_out():
    """when_connected(timeout) errbacks with AMITimeout when no session comes up."""
    service, _, clock, _ = make_service()
    service.startService()
    d = service.when_connected(timeout=2.0)
    clock.advance(2.0)
    failures: list[Failure] = []
    d.addErrback(failures.append)
    assert failures and failures[0].check(AMITimeout)


def test_failing_listener_does_not_stop_the_others():
    """A connection listener that raises is logged; the next still runs."""
    service, endpoint, _, logged = make_service()
    called: list[AMIProtocol] = []

    def broken(protocol: AMIProtocol) -> None:
        raise RuntimeError("listener bug")

    service.add_connection_listener(broken, lambda reason: None)
    service.add_connection_listener(called.append, lambda reason: None)
    service.startService()
    log_in(endpoint.accept())
    assert len(called) == 1
    assert any(e.get("log_failure") is not None for e in logged)


def test_stop_logs_off_and_stops_reconnecting():
    """stopService sends Logoff, fires once the connection closed, and never reconnects."""
    service, endpoint, clock, _ = make_service()
    service.startService()
    connection = endpoint.accept()
    log_in(connection)
    stopped = service.stopService()
    [logoff] = connection.sent()
    assert logoff.name == "Logoff"
    assert not stopped.called
    connection.reply(logoff, "Goodbye", "Message: Thanks for all the fish.")
    assert not connection.transport.connected
    assert stopped.called
    clock.advance(60)
    assert len(endpoint.attempts) == 1
    assert not service.connected


def test_stop_while_waiting_to_retry():
    """stopService between attempts fires at once and cancels the retry."""
    service, endpoint, clock, _ = make_service()
    service.startService()
    endpoint.refuse()
    stopped = service.stopService()
    assert stopped.called
    clock.advance(60)
    assert len(endpoint.attempts) == 1


def test_stop_when_logoff_is_unanswered():
    """A Logoff without answer still lets stopService finish after its timeout."""
    service, endpoint, clock, _ = make_service(action_timeout=10.0)
    service.startService()
    connection = endpoint.accept()
    log_in(connection)
    stopped = service.stopService()
    clock.advance(2.0)
    assert stopped.called
    assert not connection.transport.connected


@pytest_twisted.ensureDeferred
async def test_real_loopback_session_with_the_simulator():
    """Over real TCP to the simulated Asterisk: MD5 login, a list, an Originate, a clean stop."""
    from twisted.internet import reactor

    simulator = SimulatorService(
        "tcp:0:interface=127.0.0.1", "callbackd", "sim-secret", reactor=reactor, clock=reactor
    )
    simulator.startService()
    port = await simulator.ready
    service = AMIClientService(
        TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=5),
        "callbackd",
        "sim-secret",
        clock=reactor,
        action_timeout=5.0,
    )
    service.startService()
    try:
        protocol = await service.when_connected(timeout=5.0)
        assert protocol.version
        assert isinstance(await protocol.core_show_channels(), list)
        result = await protocol.originate(
            "Local/15550011234@sim-pstn", application="Wait", data="1", timeout_ms=3000
        )
        assert result.name == "OriginateResponse"
    finally:
        await service.stopService()
        await simulator.stopService()
    assert not service.connected
