"""Our RESP2 client: encoder, incremental parser, pipelined connection, reconnecting client."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from callbackd.store.resp import (
    CommandEncodeError,
    ProtocolError,
    RedisClient,
    RedisConnection,
    RedisConnectionError,
    RedisError,
    RedisTimeout,
    ReplyParser,
    Subscription,
    encode_command,
)

# -- encoding -------------------------------------------------------------------------


def reference_encode(*args) -> bytes:
    """The RESP of a command, built the plain way, to check the fast encoder against."""
    parts = []
    for arg in args:
        if isinstance(arg, str):
            data = arg.encode()
        elif isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, int):
            data = str(arg).encode()
        else:
            data = repr(arg).encode()
        parts.append(b"$" + str(len(data)).encode() + b"\r\n" + data + b"\r\n")
    return b"*" + str(len(args)).encode() + b"\r\n" + b"".join(parts)


ARGS = st.lists(
    st.one_of(
        st.text(st.characters(codec="utf-8")),
        st.binary(),
        st.integers(),
        st.floats(allow_nan=False),
    ),
    max_size=8,
)


@given(args=ARGS)
def test_encode_matches_the_reference(args):
    """Any mix of str, bytes, int and float encodes as the plain RESP construction does."""
    assert encode_command(*args) == reference_encode(*args)


def test_encode_counts_utf8_bytes_not_characters():
    """A non-ASCII argument's length is its UTF-8 byte count."""
    assert (
        encode_command("SET", "k", "é€")
        == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\n\xc3\xa9\xe2\x82\xac\r\n"
    )


@pytest.mark.parametrize("bad", [None, True, [1], {"a": 1}, object()])
def test_encode_refuses_other_types(bad):
    """None, bools, containers and other objects raise CommandEncodeError naming the type."""
    with pytest.raises(CommandEncodeError, match=type(bad).__name__):
        encode_command("SET", "k", bad)


def test_encode_refuses_lone_surrogates():
    """Text that is not encodable as UTF-8 raises CommandEncodeError."""
    with pytest.raises(CommandEncodeError, match="UTF-8"):
        encode_command("SET", "k", "a\ud800b")


# -- parsing ----------------------------------------------------------------------------

LINE = st.text(st.characters(codec="utf-8", exclude_characters="\r\n"))
LEAF = st.one_of(
    st.none(),
    st.integers(-(2**63), 2**63 - 1),
    st.text(st.characters(codec="utf-8")),
    st.builds(
        RedisError,
        st.text(st.characters(codec="utf-8", exclude_characters="\r\n"), min_size=1),
    ),
    st.builds(
        lambda s: ("status", s), st.text(st.characters(codec="utf-8", exclude_characters="\r\n"))
    ),
)
REPLY = st.recursive(LEAF, lambda inner: st.lists(inner, max_size=5), max_leaves=20)


def encode_reply(value) -> bytes:
    """A reply tree as RESP2: ("status", s) a simple string, lists arrays, None a nil bulk."""
    if value is None:
        return b"$-1\r\n"
    if isinstance(value, tuple):
        return b"+" + value[1].encode() + b"\r\n"
    if isinstance(value, RedisError):
        return b"-" + str(value).encode() + b"\r\n"
    if isinstance(value, bool):
        raise TypeError(value)
    if isinstance(value, int):
        return b":%d\r\n" % value
    if isinstance(value, list):
        return b"*%d\r\n" % len(value) + b"".join(encode_reply(v) for v in value)
    data = value.encode()
    return b"$%d\r\n%s\r\n" % (len(data), data)


def expected(value):
    """What the parser should give for a reply tree (errors compared by type and text)."""
    if isinstance(value, tuple):
        return value[1]
    if isinstance(value, RedisError):
        return ("error", str(value))
    if isinstance(value, list):
        return [expected(v) for v in value]
    return value


def comparable(value):
    """Parser output with errors made comparable."""
    if isinstance(value, RedisError):
        return ("error", str(value))
    if isinstance(value, list):
        return [comparable(v) for v in value]
    return value


@given(replies=st.lists(REPLY, max_size=10))
def test_round_trip_of_reply_trees(replies):
    """Encoded reply trees, fed at once, parse back to the same values in order."""
    data = b"".join(encode_reply(r) for r in replies)
    assert comparable(ReplyParser().feed(data)) == [expected(r) for r in replies]


@given(replies=st.lists(REPLY, max_size=10), cuts=st.lists(st.integers(0, 10_000), max_size=12))
def test_chunking_does_not_change_the_replies(replies, cuts):
    """The same bytes cut anywhere into chunks give the same replies as one chunk."""
    data = b"".join(encode_reply(r) for r in replies)
    bounds = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    parser = ReplyParser()
    got = []
    for start, end in zip(bounds, bounds[1:]):
        got.extend(parser.feed(data[start:end]))
    assert comparable(got) == comparable(ReplyParser().feed(data))


def test_byte_by_byte_nested_arrays():
    """A nested array fed one byte at a time completes once, on its last byte."""
    data = b"*2\r\n*2\r\n:1\r\n$3\r\nabc\r\n*-1\r\n"
    parser = ReplyParser()
    got = [parser.feed(data[i : i + 1]) for i in range(len(data))]
    assert got[-1] == [[[1, "abc"], None]]
    assert not any(got[:-1])


def test_nil_array_empty_array_and_empty_bulk():
    """*-1 is None, *0 an empty list, $0 an empty string."""
    assert ReplyParser().feed(b"*-1\r\n*0\r\n$0\r\n\r\n") == [None, [], ""]


def test_bulk_that_is_not_utf8_stays_bytes():
    """A bulk string that does not decode as UTF-8 is returned as bytes."""
    assert ReplyParser().feed(b"$2\r\n\xff\xfe\r\n") == [b"\xff\xfe"]


def test_error_reply_keeps_its_text():
    """An error reply is a RedisError with the whole text after '-'."""
    (reply,) = ReplyParser().feed(b"-NOSCRIPT No matching script\r\n")
    assert isinstance(reply, RedisError)
    assert str(reply) == "NOSCRIPT No matching script"


@pytest.mark.parametrize(
    "garbage",
    [b"?what\r\n", b"$abc\r\n", b":12x\r\n", b"*-2\r\n", b"$3\r\nabcXY", b"$-5\r\n", b"x" * 70_000],
)
def test_garbage_raises_protocol_error(garbage):
    """Bytes that are not RESP2 raise ProtocolError."""
    with pytest.raises(ProtocolError):
        ReplyParser().feed(garbage)


@given(data=st.binary(max_size=200))
def test_arbitrary_bytes_parse_or_raise_protocol_error(data):
    """Arbitrary bytes either parse (possibly waiting for more) or raise ProtocolError only."""
    try:
        ReplyParser().feed(data)
    except ProtocolError:
        pass


# -- one connection ---------------------------------------------------------------------------


def connection(timeout: float = 5.0):
    """A RedisConnection on a StringTransport with a fake clock."""
    clock = Clock()
    conn = RedisConnection(clock, timeout)
    conn.makeConnection(StringTransport())
    return conn, clock


def outcomes(ds):
    """Collect each Deferred's result or Failure, in order."""
    out = []
    for d in ds:
        d.addBoth(out.append)
    return out


def test_commands_are_written_at_once_in_order():
    """Each execute writes its command to the transport before returning."""
    conn, _ = connection()
    conn.execute("GET", "a")
    conn.execute("SET", "b", 1)
    assert conn.transport.value() == encode_command("GET", "a") + encode_command("SET", "b", 1)


def test_replies_answer_commands_fifo():
    """Pipelined replies in one read fire the commands' Deferreds in order."""
    conn, _ = connection()
    got = outcomes([conn.execute("GET", str(i)) for i in range(3)])
    conn.dataReceived(b"$1\r\na\r\n:7\r\n*1\r\n$-1\r\n")
    assert got == ["a", 7, [None]]


def test_error_reply_errbacks_only_its_command():
    """An error reply errbacks its command with RedisError; the next still succeeds."""
    conn, _ = connection()
    got = outcomes([conn.execute("X"), conn.execute("PING")])
    conn.dataReceived(b"-ERR unknown command\r\n+PONG\r\n")
    assert isinstance(got[0], Failure) and got[0].check(RedisError)
    assert got[1] == "PONG"


def test_one_timer_for_many_commands():
    """Many commands in flight arm one delayed call, not one each."""
    conn, clock = connection()
    for i in range(100):
        conn.execute("GET", str(i))
    assert len(clock.getDelayedCalls()) == 1


def test_oldest_command_unanswered_in_time_aborts_everything():
    """When the oldest command waits ``timeout``, all pending errback RedisTimeout and it aborts."""
    conn, clock = connection(timeout=2.0)
    first = outcomes([conn.execute("GET", "a")])
    clock.advance(1.5)
    second = outcomes([conn.execute("GET", "b")])
    clock.advance(0.5)
    assert first[0].check(RedisTimeout) and second[0].check(RedisTimeout)
    assert conn.transport.disconnecting or conn.transport.disconnected
    assert not conn.open


def test_timer_follows_the_new_oldest_command():
    """After the oldest is answered, the next times out ``timeout`` after it was sent."""
    conn, clock = connection(timeout=2.0)
    outcomes([conn.execute("GET", "a")])
    clock.advance(1.5)
    second = outcomes([conn.execute("GET", "b")])
    conn.dataReceived(b"$1\r\na\r\n")
    clock.advance(0.5)  # the first's deadline: the second has waited only 0.5 s
    assert second == [] and conn.open
    clock.advance(1.5)
    assert second[0].check(RedisTimeout)


def test_answered_commands_leave_no_timeout():
    """Commands all answered before the timer fires cause no abort."""
    conn, clock = connection(timeout=2.0)
    got = outcomes([conn.execute("PING")])
    conn.dataReceived(b"+PONG\r\n")
    clock.advance(10)
    assert got == ["PONG"] and conn.open and clock.getDelayedCalls() == []


def test_connection_lost_errbacks_every_pending_command():
    """A lost connection errbacks each pending command with RedisConnectionError."""
    conn, _ = connection()
    got = outcomes([conn.execute("GET", "a"), conn.execute("GET", "b")])
    conn.connectionLost(Failure(ConnectionDone()))
    assert [f.check(RedisConnectionError) for f in got] == [RedisConnectionError] * 2


def test_execute_after_loss_fails_at_once():
    """A command on a closed connection errbacks at once and writes nothing."""
    conn, _ = connection()
    conn.connectionLost(Failure(ConnectionDone()))
    conn.transport.clear()
    got = outcomes([conn.execute("PING")])
    assert got[0].check(RedisConnectionError)
    assert conn.transport.value() == b""


def test_garbage_aborts_the_connection():
    """A protocol error errbacks the pending commands and aborts the connection."""
    conn, _ = connection()
    got = outcomes([conn.execute("GET", "a")])
    conn.dataReceived(b"?garbage\r\n")
    assert got[0].check(RedisConnectionError)
    assert not conn.open


def test_unasked_reply_aborts_the_connection():
    """A reply with no command waiting is a protocol error: the connection is aborted."""
    conn, _ = connection()
    conn.dataReceived(b"+OK\r\n")
    assert not conn.open


def test_unencodable_argument_raises_and_sends_nothing():
    """execute raises CommandEncodeError before writing anything."""
    conn, _ = connection()
    with pytest.raises(CommandEncodeError):
        conn.execute("SET", "k", None)
    assert conn.transport.value() == b"" and conn.pending == 0


# -- the reconnecting client, on fake endpoints --------------------------------------------------


class FakeEndpoint:
    """An endpoint whose connects the test answers: refuse, or connect to a StringTransport."""

    def __init__(self):
        self.attempts: list[defer.Deferred] = []
        self.factories = []

    def connect(self, factory):
        d = defer.Deferred()
        self.attempts.append(d)
        self.factories.append(factory)
        return d

    def accept(self):
        """Complete the latest attempt; the connected protocol."""
        proto = self.factories[-1].buildProtocol(None)
        proto.makeConnection(StringTransport())
        self.attempts[-1].callback(proto)
        return proto

    def refuse(self):
        """Fail the latest attempt."""
        self.attempts[-1].errback(ConnectionRefusedError())


SCRIPT = "return 1"


def client(endpoint, clock, **kwargs):
    """A RedisClient recording its ready/lost/error reports."""
    events = []
    kwargs.setdefault("jitter", lambda: 0.0)
    c = RedisClient(
        endpoint,
        clock,
        on_ready=lambda: events.append("ready"),
        on_lost=lambda why: events.append(("lost", why)),
        on_error=lambda why: events.append(("error", why)),
        **kwargs,
    )
    return c, events


def test_handshake_auth_select_and_script_load_before_ready():
    """AUTH, SELECT and SCRIPT LOAD are sent pipelined; ready only after all replied."""
    endpoint, clock = FakeEndpoint(), Clock()
    c, events = client(endpoint, clock, password="s3cret", db=3, scripts=[SCRIPT])
    c.start()
    proto = endpoint.accept()
    assert proto.transport.value() == (
        encode_command("AUTH", "s3cret")
        + encode_command("SELECT", 3)
        + encode_command("SCRIPT", "LOAD", SCRIPT)
    )
    assert c.connection is None and events == []
    proto.dataReceived(b"+OK\r\n+OK\r\n")
    assert c.connection is None
    proto.dataReceived(b"$40\r\n" + b"e" * 40 + b"\r\n")
    assert c.connection is proto and events == ["ready"]


def test_command_while_down_fails_at_once():
    """With no ready connection, execute errbacks RedisConnectionError without queueing."""
    endpoint, clock = FakeEndpoint(), Clock()
    c, _ = client(endpoint, clock)
    c.start()
    got = outcomes([c.execute("PING")])
    assert got[0].check(RedisConnectionError)


def test_failed_auth_is_reported_without_the_password_and_retried():
    """A refused AUTH closes the connection, reports the error (no password), retries later."""
    endpoint, clock = FakeEndpoint(), Clock()
    c, events = client(endpoint, clock, password="s3cret")
    c.start()
    proto = endpoint.accept()
    proto.dataReceived(b"-WRONGPASS invalid username-password pair\r\n")
    assert not proto.open and c.connection is None
    assert events and events[0][0] == "error" and "WRONGPASS" in events[0][1]
    assert "s3cret" not in repr(events)
    clock.advance(0.5)
    assert len(endpoint.attempts) == 2


def refused_delays(jitter, count=6):
    """The waits before each retry of a client whose every attempt is refused."""
    endpoint, clock = FakeEndpoint(), Clock()
    c, _ = client(endpoint, clock, initial_delay=0.5, max_reconnect_delay=4.0, jitter=jitter)
    c.start()
    delays = []
    for _ in range(count):
        endpoint.refuse()
        (call,) = clock.getDelayedCalls()
        delays.append(call.getTime() - clock.seconds())
        clock.advance(delays[-1])
    assert len(endpoint.attempts) == count + 1
    return delays


def test_back_off_doubles_up_to_the_cap():
    """Refused attempts are retried after 0.5, 1, 2 s, then the 4 s cap less the jitter's room."""
    assert refused_delays(lambda: 0.0) == [0.5, 1.0, 2.0, 3.875, 3.875, 3.875]


def test_back_off_never_passes_the_cap():
    """Jitter at its top reaches the cap and does not pass it; a random one stays below."""
    assert refused_delays(lambda: 1.0) == [0.625, 1.125, 2.125, 4.0, 4.0, 4.0]
    assert max(refused_delays(random.Random(5).random, 40)) <= 4.0


def test_lost_connection_is_reported_and_replaced():
    """A ready connection that drops reports lost, then a new connection becomes ready."""
    endpoint, clock = FakeEndpoint(), Clock()
    c, events = client(endpoint, clock)
    c.start()
    first = endpoint.accept()
    assert events == ["ready"]
    first.transport.loseConnection()
    first.connectionLost(Failure(ConnectionDone()))
    assert c.connection is None and events[1][0] == "lost"
    clock.advance(5)
    second = endpoint.accept()
    assert c.connection is second and events[2] == "ready"


def test_stop_closes_and_does_not_reconnect():
    """stop() closes the connection, fires when it is closed, and no attempt follows."""
    endpoint, clock = FakeEndpoint(), Clock()
    c, _ = client(endpoint, clock)
    c.start()
    proto = endpoint.accept()
    stopped = outcomes([c.stop()])
    assert proto.transport.disconnecting and stopped == []
    proto.connectionLost(Failure(ConnectionDone()))
    assert stopped == [None]
    clock.advance(60)
    assert len(endpoint.attempts) == 1


def test_connect_attempt_times_out():
    """An endpoint that never answers is given up after ``timeout`` and retried."""
    endpoint, clock = FakeEndpoint(), Clock()
    c, events = client(endpoint, clock, timeout=2.0)
    c.start()
    clock.advance(2.0)
    assert events[0][0] == "error" and "2s" in events[0][1]
    clock.advance(0.5)
    assert len(endpoint.attempts) == 2


# -- subscriptions, on a fake endpoint --------------------------------------------------


def subscription(endpoint, clock, **kwargs):
    """A Subscription to "a" and "b" recording messages and states."""
    messages, states = [], []
    sub = Subscription(
        endpoint,
        ["a", "b"],
        lambda channel, message: messages.append((channel, message)),
        states.append,
        clock,
        jitter=lambda: 0.0,
        **kwargs,
    )
    return sub, messages, states


def confirm(proto):
    """The server's confirmations of SUBSCRIBE a b."""
    proto.dataReceived(
        b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n"
    )


def test_subscription_is_up_once_every_channel_is_confirmed():
    """on_state(True) comes after both confirmations, not before."""
    endpoint, clock = FakeEndpoint(), Clock()
    sub, _, states = subscription(endpoint, clock)
    sub.start()
    proto = endpoint.accept()
    assert proto.transport.value() == encode_command("SUBSCRIBE", "a", "b")
    proto.dataReceived(b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n")
    assert states == []
    proto.dataReceived(b"*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n")
    assert states == [True] and sub.subscribed


def test_messages_are_delivered_in_order():
    """Published messages reach on_message as (channel, message), in order."""
    endpoint, clock = FakeEndpoint(), Clock()
    sub, messages, _ = subscription(endpoint, clock)
    sub.start()
    proto = endpoint.accept()
    confirm(proto)
    proto.dataReceived(
        b"*3\r\n$7\r\nmessage\r\n$1\r\nb\r\n$2\r\nx1\r\n*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$2\r\nx2\r\n"
    )
    assert messages == [("b", "x1"), ("a", "x2")]


def test_subscription_resubscribes_after_loss():
    """A lost connection reports False, and the next one subscribes again and reports True."""
    endpoint, clock = FakeEndpoint(), Clock()
    sub, _, states = subscription(endpoint, clock)
    sub.start()
    first = endpoint.accept()
    confirm(first)
    first.connectionLost(Failure(ConnectionDone()))
    assert states == [True, False]
    clock.advance(5)
    second = endpoint.accept()
    assert second.transport.value() == encode_command("SUBSCRIBE", "a", "b")
    confirm(second)
    assert states == [True, False, True]


def test_unanswered_ping_drops_the_subscription():
    """A server that does not answer the keep-alive PING in time is dropped and reconnected."""
    endpoint, clock = FakeEndpoint(), Clock()
    sub, _, states = subscription(endpoint, clock, ping_interval=10.0, timeout=2.0)
    sub.start()
    proto = endpoint.accept()
    confirm(proto)
    proto.transport.clear()
    clock.advance(10)
    assert proto.transport.value() == encode_command("PING")
    clock.advance(2)
    assert not proto.open
    proto.connectionLost(Failure(ConnectionDone()))
    assert states == [True, False]


def test_answered_ping_keeps_the_subscription():
    """A PONG in time keeps the connection."""
    endpoint, clock = FakeEndpoint(), Clock()
    sub, _, states = subscription(endpoint, clock, ping_interval=10.0, timeout=2.0)
    sub.start()
    proto = endpoint.accept()
    confirm(proto)
    clock.advance(10)
    proto.dataReceived(b"*2\r\n$4\r\npong\r\n$0\r\n\r\n")
    clock.advance(2)
    assert proto.open and states == [True]
