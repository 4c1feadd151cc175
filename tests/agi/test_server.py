"""The FastAGI server: routing, one command in flight, HANGUP, timeouts, the cap, garbage."""

from __future__ import annotations

import pytest
import pytest_twisted
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs

from callbackd.agi.protocol import AGIArgumentError
from callbackd.agi.server import (
    AGIChannel,
    AGICommandFailed,
    AGIConnectionLost,
    AGIHangup,
    AGITimeout,
    FastAGIFactory,
    FastAGIService,
    script_of,
)
from tests.agi.transcript import (
    DIALOGUE_RESULTS,
    asterisk_bytes,
    script_bytes,
    transcript_dialogue,
)

ADDR = IPv4Address("TCP", "127.0.0.1", 40000)
ENV = (
    b"agi_network: yes\nagi_network_script: ivr?leg=a1&lang=fr\n"
    b"agi_request: agi://127.0.0.1:4573/ivr?leg=a1&lang=fr\nagi_channel: Local/8000@x-1;2\n"
    b"agi_callerid: 15551230000\nagi_arg_1: 8000\nagi_arg_2: two words\n\n"
)


class Connection:
    """A FastAGI connection on a StringTransport, the test playing Asterisk."""

    def __init__(self, factory: FastAGIFactory) -> None:
        self.protocol = factory.buildProtocol(ADDR)
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)

    def sent(self) -> bytes:
        data = self.transport.value()
        self.transport.clear()
        return data

    def receive(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    @property
    def closed(self) -> bool:
        return self.transport.disconnecting or self.transport.disconnected


def setup(handler=None, **kwargs):
    """A factory routing ``ivr`` to ``handler`` (one that records its channel by default)."""
    clock = Clock()
    channels: list[AGIChannel] = []
    finish: Deferred[None] = Deferred()

    async def keep(channel: AGIChannel) -> None:
        channels.append(channel)
        await finish

    router = {"ivr": handler or keep}
    factory = FastAGIFactory(
        router, clock=clock, command_timeout=kwargs.pop("timeout", 5.0), **kwargs
    )
    return factory, clock, channels, finish


def test_environment_routes_to_the_script_with_query_and_arguments():
    """The handler gets the channel with the env as sent, the script, its query and args."""
    factory, _, channels, _ = setup()
    Connection(factory).receive(ENV)
    (channel,) = channels
    assert channel.env["agi_request"] == "agi://127.0.0.1:4573/ivr?leg=a1&lang=fr"
    assert channel.script == "ivr"
    assert channel.query == {"leg": "a1", "lang": "fr"}
    assert channel.args == ("8000", "two words")


def test_script_from_the_request_without_network_script():
    """Without agi_network_script the script is agi_request's path."""
    assert script_of({"agi_request": "agi://h:1/pin/check?x=1"}) == ("pin/check", {"x": "1"})
    assert script_of({"agi_network_script": "ivr"}) == ("ivr", {})


def test_one_command_in_flight_the_rest_queued():
    """Commands issued together go out one at a time, each after the previous reply."""
    factory, _, channels, _ = setup()
    conn = Connection(factory)
    conn.receive(ENV)
    channel = channels[0]
    answered = channel.answer()
    played = channel.stream_file("callbackd/welcome", "#")
    value = channel.get_variable("CALLERID(num)")
    assert conn.sent() == b"ANSWER\n"
    conn.receive(b"200 res")
    assert conn.sent() == b""
    conn.receive(b"ult=0\n")
    assert answered.result is None
    assert conn.sent() == b'STREAM FILE "callbackd/welcome" "#"\n'
    conn.receive(b"200 result=35 endpos=800\n")
    assert played.result == "#"
    assert conn.sent() == b"GET VARIABLE CALLERID(num)\n"
    conn.receive(b"200 result=1 (15551230000)\n")
    assert value.result == "15551230000"


def test_hangup_between_replies_fails_waiting_and_later_commands():
    """HANGUP fails the waiting and queued commands; the late reply is dropped, nothing sent."""
    factory, _, channels, _ = setup()
    conn = Connection(factory)
    conn.receive(ENV)
    channel = channels[0]
    waiting = channel.get_data("callbackd/enter-pin", 5000, 8)
    queued = channel.say_number(12)
    conn.sent()
    conn.receive(b"HANGUP\n")
    for d in (waiting, queued):
        failure = []
        d.addErrback(failure.append)
        assert failure and failure[0].check(AGIHangup)
    conn.receive(b"200 result=-1\n")
    later = channel.set_variable("CB_RESULT", "ok")
    failure = []
    later.addErrback(failure.append)
    assert failure[0].check(AGIHangup)
    assert conn.sent() == b""
    assert channel.hung_up


def test_hangup_line_after_a_reply_fails_the_next_command_in_flight():
    """-1 then HANGUP: the -1 is AGICommandFailed, the command then in flight gets AGIHangup."""
    factory, _, channels, _ = setup()
    conn = Connection(factory)
    conn.receive(ENV)
    channel = channels[0]
    first = channel.stream_file("callbackd/welcome")
    errors: list = []
    first.addErrback(errors.append)
    conn.receive(b"200 result=-1 endpos=120\n")
    assert errors[0].check(AGICommandFailed) and errors[0].value.reply.endpos == 120
    second = channel.stream_file("callbackd/sorry")
    second.addErrback(errors.append)
    conn.receive(b"HANGUP\n511 Command Not Permitted on a dead channel or intercept routine\n")
    assert errors[1].check(AGIHangup)


@pytest.mark.parametrize(
    ("call", "reply", "expected"),
    [
        (lambda c: c.stream_file("f"), b"200 result=0 endpos=8000\n", ""),
        (lambda c: c.stream_file("f", "0123456789*#"), b"200 result=50 endpos=10\n", "2"),
        (lambda c: c.get_data("f", 5000, 8), b"200 result=1234\n", "1234"),
        (lambda c: c.get_data("f", 5000, 8), b"200 result= (timeout)\n", ""),
        (lambda c: c.get_data("f", 5000, 8), b"200 result=12 (timeout)\n", "12"),
        (lambda c: c.wait_for_digit(3000), b"200 result=53\n", "5"),
        (lambda c: c.wait_for_digit(3000), b"200 result=0\n", ""),
        (lambda c: c.say_number(1234, "#"), b"200 result=35\n", "#"),
        (lambda c: c.say_digits("15551234"), b"200 result=0\n", ""),
        (lambda c: c.get_variable("X"), b"200 result=0\n", None),
        (lambda c: c.get_variable("X"), b"200 result=1 (a b)\n", "a b"),
        (lambda c: c.get_variable("X"), b"200 result=1\n", ""),
        (lambda c: c.exec_("Wait", "1"), b"200 result=0\n", 0),
        (lambda c: c.set_language("vi"), b"200 result=1\n", None),
        (lambda c: c.hangup(), b"200 result=1\n", None),
        (lambda c: c.verbose("hi there"), b"200 result=1\n", None),
    ],
)
def test_typed_results(call, reply, expected):
    """Each typed command turns its reply into a digit, digits, a value or None."""
    factory, _, channels, _ = setup()
    conn = Connection(factory)
    conn.receive(ENV)
    d = call(channels[0])
    assert conn.sent().endswith(b"\n")
    conn.receive(reply)
    assert d.result == expected


@pytest.mark.parametrize(
    "reply",
    [
        b"200 result=-1\n",
        b"200 result=-2\n",
        b"510 Invalid or unknown command\n",
        b"511 Command Not Permitted on a dead channel or intercept routine\n",
        b"520-Invalid command syntax.  Proper usage follows:\n Usage: X\n"
        b"520 End of proper usage.\n",
    ],
)
def test_failures_raise_command_failed(reply):
    """-1, -2, 510, 511 and 520 (multi-line included) raise AGICommandFailed with the reply."""
    factory, _, channels, _ = setup()
    conn = Connection(factory)
    conn.receive(ENV)
    channel = channels[0]
    d = channel.exec_("Dial", "Local/1@x/n", "30")
    after = channel.answer()
    assert conn.sent() == b'EXEC Dial "Local/1@x/n,30"\n'
    conn.receive(reply)
    errors: list = []
    d.addErrback(errors.append)
    assert errors[0].check(AGICommandFailed)
    assert errors[0].value.reply.code == int(reply[:3])
    if reply.startswith(b"511"):
        assert channel.hung_up
        after.addErrback(errors.append)
        assert errors[1].check(AGIHangup)
    else:
        assert conn.sent() == b"ANSWER\n"


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.stream_file("a\nANSWER"),
        lambda c: c.set_variable("X", "v\r\n"),
        lambda c: c.set_variable("X Y", "v"),
        lambda c: c.exec_("Dial", "a,b"),
        lambda c: c.exec_("Di al"),
        lambda c: c.say_digits("12a"),
        lambda c: c.say_number(1, "x"),
        lambda c: c.set_language("en\n"),
        lambda c: c.get_data("f", 0, 4),
        lambda c: c.wait_for_digit(-1),
    ],
)
def test_bad_arguments_send_nothing(call):
    """A line end, a comma in an EXEC argument or a bad digit string is refused unsent."""
    factory, _, channels, _ = setup()
    conn = Connection(factory)
    conn.receive(ENV)
    errors: list = []
    call(channels[0]).addErrback(errors.append)
    assert errors[0].check(AGIArgumentError)
    assert conn.sent() == b""


def test_command_timeout_closes_the_session():
    """No reply within the timeout: AGITimeout, the queued ones fail, the connection closes."""
    factory, clock, channels, _ = setup(timeout=5.0)
    conn = Connection(factory)
    conn.receive(ENV)
    channel = channels[0]
    waiting = channel.wait_for_digit(3000)
    queued = channel.answer()
    errors: list = []
    waiting.addErrback(errors.append)
    queued.addErrback(errors.append)
    clock.advance(7.9)
    assert not errors
    clock.advance(0.2)
    assert errors[0].check(AGITimeout)
    assert errors[1].check(AGIConnectionLost)
    assert conn.closed


def test_no_environment_is_closed_after_the_timeout():
    """A client that never finishes its environment block is dropped."""
    factory, clock, channels, _ = setup(timeout=5.0)
    conn = Connection(factory)
    conn.receive(b"agi_network: yes\n")
    clock.advance(5.1)
    assert conn.closed and not channels


def test_handler_end_closes_and_failure_is_logged():
    """The connection closes when the handler returns, and when it fails (logged)."""

    async def fails(channel: AGIChannel) -> None:
        raise RuntimeError("boom")

    factory, _, channels, finish = setup()
    conn = Connection(factory)
    conn.receive(ENV)
    assert not conn.closed
    finish.callback(None)
    assert conn.closed
    factory, _, _, _ = setup(fails)
    with capturedLogs() as events:
        conn = Connection(factory)
        conn.receive(ENV)
    assert conn.closed
    assert any("failed" in e.get("log_format", "") and e.get("log_failure") for e in events)


def test_hangup_ending_the_handler_is_not_a_failure():
    """A handler ended by AGIHangup is logged at info, not as a failure."""

    async def hears_hangup(channel: AGIChannel) -> None:
        await channel.answer()

    factory, _, _, _ = setup(hears_hangup)
    with capturedLogs() as events:
        conn = Connection(factory)
        conn.receive(ENV + b"HANGUP\n")
    assert conn.closed
    assert not any(e.get("log_failure") for e in events)


def test_unknown_script_ends_cleanly():
    """A script nobody handles: logged, the connection closed, no handler run."""
    factory, _, channels, _ = setup()
    conn = Connection(factory)
    with capturedLogs() as events:
        conn.receive(ENV.replace(b"ivr", b"nosuch"))
    assert conn.closed and not channels
    assert any("unknown" in e.get("log_format", "") for e in events)


@pytest.mark.parametrize(
    "data", [b"GET / HTTP/1.0\r\n\r\n", b"\n\n", b"agi_x: 1\n\nxyzzy\n", b"A" * 10000]
)
def test_garbage_environment_is_dropped(data):
    """Garbage instead of an environment block closes the connection; no handler runs."""
    factory, _, channels, _ = setup()
    conn = Connection(factory)
    conn.receive(data)
    assert conn.closed and not channels


def test_garbage_reply_fails_the_command_and_closes():
    """A garbage reply fails the waiting command with AGIConnectionLost and closes."""
    factory, _, channels, _ = setup()
    conn = Connection(factory)
    conn.receive(ENV)
    errors: list = []
    channels[0].answer().addErrback(errors.append)
    conn.receive(b"hello\n")
    assert errors[0].check(AGIConnectionLost)
    assert conn.closed


def test_connection_cap_refuses_cleanly():
    """Over max_connections a connection is closed at once; a freed slot is reused."""
    factory, _, channels, _ = setup(max_connections=2)
    first, second = Connection(factory), Connection(factory)
    third = Connection(factory)
    assert third.closed and not first.closed and not second.closed
    assert factory.refused == 1
    first.protocol.connectionLost()
    fourth = Connection(factory)
    assert not fourth.closed


def test_connection_loss_fails_waiting_commands():
    """When the socket goes the waiting and queued commands fail with AGIConnectionLost."""
    factory, _, channels, _ = setup()
    conn = Connection(factory)
    conn.receive(ENV)
    errors: list = []
    channels[0].answer().addErrback(errors.append)
    channels[0].answer().addErrback(errors.append)
    conn.protocol.connectionLost()
    assert [e.check(AGIConnectionLost) for e in errors] == [AGIConnectionLost] * 2


def test_unanswered_command_after_hangup_still_times_out():
    """A command failed by HANGUP whose reply never comes still closes the session in time."""
    factory, clock, channels, _ = setup(timeout=5.0)
    conn = Connection(factory)
    conn.receive(ENV)
    channels[0].answer().addErrback(lambda f: None)
    conn.receive(b"HANGUP\n")
    clock.advance(5.1)
    assert conn.closed


def test_cancelled_command_in_flight_still_holds_the_line():
    """A cancelled command's reply is still awaited before the next command goes out."""
    factory, _, channels, _ = setup()
    conn = Connection(factory)
    conn.receive(ENV)
    first = channels[0].wait_for_digit(1000)
    first.addErrback(lambda f: None)
    first.cancel()
    second = channels[0].answer()
    assert conn.sent() == b"WAIT FOR DIGIT 1000\n"
    conn.receive(b"200 result=0\n")
    assert conn.sent() == b"ANSWER\n"
    conn.receive(b"200 result=0\n")
    assert second.called


class FakeAsterisk(Protocol):
    """Plays the real transcript's Asterisk side over TCP, one reply per command line."""

    def __init__(self) -> None:
        self.received = b""
        env_end = asterisk_bytes().index(b"\n\n") + 2
        self.env = asterisk_bytes()[:env_end]
        self.replies = _replies(asterisk_bytes()[env_end:])
        self.done: Deferred[bytes] = Deferred()

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self.env)

    def dataReceived(self, data: bytes) -> None:
        assert self.transport is not None
        self.received += data
        # strict lock-step: answer each complete line, and fail on two lines at once
        assert data.count(b"\n") == 1, data
        self.transport.write(self.replies.pop(0))

    def connectionLost(self, reason=None) -> None:
        self.done.callback(self.received)


def _replies(data: bytes) -> list[bytes]:
    return [line + b"\n" for line in data.split(b"\n")[:-1]]


@pytest_twisted.ensureDeferred
async def test_transcript_dialogue_over_real_tcp():
    """Over loopback TCP, the handler's commands are the real session's, answered by its replies."""
    from twisted.internet import reactor
    from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

    results: list = []

    async def ivr(channel: AGIChannel) -> None:
        results.extend(await transcript_dialogue(channel))

    service = FastAGIService(
        "tcp:0:interface=127.0.0.1", {"ivr": ivr}, reactor=reactor, command_timeout=5.0
    )
    service.startService()
    port = await service.ready
    try:
        assert service.health() == (True, f"listening on port {port}, 0 open")
        asterisk = FakeAsterisk()
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), asterisk)
        sent = await asterisk.done
    finally:
        await service.stopService()
    assert results == DIALOGUE_RESULTS
    script = script_bytes()
    # ours quote the EXEC data and the unknown command's argument
    expected = script.replace(b"EXEC Wait 1\n", b'EXEC Wait "1"\n').replace(
        b"NOSUCHCOMMAND foo", b'NOSUCHCOMMAND "foo"'
    )
    assert sent == expected


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=200), max_size=8), st.booleans())
def test_arbitrary_bytes_never_break_the_protocol(chunks, env_first):
    """Any bytes from "Asterisk", before or after an environment, raise nothing out of
    dataReceived: garbage closes the connection, a waiting command gets an answer or an error."""
    factory, _, channels, _ = setup()
    conn = Connection(factory)
    outcomes: list = []
    if env_first:
        conn.receive(ENV)
        channels[0].answer().addBoth(outcomes.append)
    for chunk in chunks:
        conn.receive(chunk)
    conn.protocol.connectionLost()
    if env_first:
        assert len(outcomes) == 1
