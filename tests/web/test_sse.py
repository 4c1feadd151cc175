"""The SSE hub over a real loopback socket: a SessionManager (FakeSwitch, MemoryStore) on
the real reactor, a Site serving :func:`stream_session_events`, raw TCP clients."""

from __future__ import annotations

import json

import pytest
import pytest_twisted
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import defer, protocol, reactor
from twisted.web import resource, server

from callbackd.core.session import SessionEvent
from callbackd.web.sse import (
    SessionEventHub,
    event_frame,
    hub_of,
    install_hub,
    parse_last_event_id,
    stream_session_events,
)
from tests.sms.test_outbound_redis import wait_for
from tests.test_engine import World


class _Events(resource.Resource):
    """GET /SESSION_ID: the session's events (no authorisation: a test)."""

    isLeaf = True

    def __init__(self, engine) -> None:
        super().__init__()
        self.engine = engine

    def render_GET(self, request):
        session_id = request.postpath[0].decode()
        return stream_session_events(
            request, self.engine, session_id, request.getHeader(b"last-event-id")
        )


class Client(protocol.Protocol):
    """A raw HTTP/1.1 client that records every byte; optionally never reads."""

    def __init__(self, request: bytes, read: bool = True) -> None:
        self.request = request
        self.read = read
        self.data = b""
        self.closed: defer.Deferred[None] = defer.Deferred()

    def connectionMade(self) -> None:
        if not self.read:
            self.transport.pauseProducing()
        self.transport.write(self.request)

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason) -> None:
        self.closed.callback(None)

    def frames(self) -> list[dict]:
        """The ``data:`` lines received, decoded."""
        body = self.data.partition(b"\r\n\r\n")[2]
        return [json.loads(line[6:]) for line in body.split(b"\n") if line.startswith(b"data: {")]


@pytest.fixture
def served():
    """A World on the real reactor, its hub, and the port serving the events."""
    world = World(clock=reactor)
    hub = install_hub(world.manager, heartbeat=0.2, buffer_size=8, max_pending=4)
    port = reactor.listenTCP(0, server.Site(_Events(world.manager)), interface="127.0.0.1")
    yield world, hub, port.getHost().port
    hub.stop()
    world.manager.stop()
    port.stopListening()


async def connect(port: int, session_id: str, last: str | None = None, read: bool = True):
    headers = f"GET /{session_id} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    if last is not None:
        headers += f"Last-Event-ID: {last}\r\n"
    client = Client((headers + "\r\n").encode(), read)
    await protocol.ClientCreator(reactor, lambda: client).connectTCP("127.0.0.1", port)
    return client


async def hang_up(world, sid):
    """HANGUP, and the switch confirms every leg's end."""
    await world.manager.hangup(sid)
    for channel_id, _ in list(world.switch.hung_up):
        if channel_id.startswith(sid):
            world.switch.hang_up(channel_id, world.now())


async def closed(client):
    await wait_for(lambda: client.closed.called)


def talk(world, sid):
    world.switch.ring(f"{sid}-a1", world.now())
    world.switch.answer(f"{sid}-a1", world.now())
    world.switch.ring(f"{sid}-b1", world.now())
    world.switch.answer(f"{sid}-b1", world.now())


@pytest_twisted.ensureDeferred
async def test_stream_replays_then_goes_live_and_resumes(served):
    """A stream gets what happened so far, then live events; Last-Event-ID resumes after it."""
    world, hub, port = served
    sid = world.callback()
    first = await connect(port, sid)
    await wait_for(lambda: first.frames())
    assert first.frames()[0]["kind"] == "session_started"
    assert b"content-type: text/event-stream" in first.data.lower()
    talk(world, sid)
    await wait_for(lambda: any(f["kind"] == "talking" for f in first.frames()))
    seqs = [f["seq"] for f in first.frames()]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert f"id: {seqs[-1]}\nevent: talking\n".encode() in first.data
    first.transport.loseConnection()
    await closed(first)
    await wait_for(lambda: hub.streams_of(sid) == 0)
    again = await connect(port, sid, last=str(seqs[1]))
    await wait_for(lambda: again.frames())
    assert [f["seq"] for f in again.frames()] == seqs[2:]
    await hang_up(world, sid)
    await closed(again)  # the stream ends with session_ended
    assert again.frames()[-1]["kind"] == "session_ended"
    last = again.frames()[-1]["seq"]
    done = await connect(port, sid, last=str(last))
    await closed(done)
    assert done.data.startswith(b"HTTP/1.1 204")
    late = await connect(port, sid, last=str(last - 1))  # missed the end: replayed, then closed
    await closed(late)
    assert [f["kind"] for f in late.frames()] == ["session_ended"]


@pytest_twisted.ensureDeferred
async def test_unknown_session_is_204(served):
    """Nothing will ever come for a session the engine does not know: 204, no stream."""
    world, hub, port = served
    client = await connect(port, "nosuch")
    await closed(client)
    assert client.data.startswith(b"HTTP/1.1 204")
    assert hub.stream_count == 0 and hub.buffered_sessions == 0


@pytest_twisted.ensureDeferred
async def test_heartbeats_and_disconnects_leave_nothing(served):
    """Idle streams get comments; clients that leave are forgotten."""
    world, hub, port = served
    sid = world.callback()
    clients = [await connect(port, sid) for _ in range(20)]
    await wait_for(lambda: hub.streams_of(sid) == 20)
    await wait_for(lambda: all(b": keep-alive\n\n" in c.data for c in clients))
    for c in clients:
        c.transport.loseConnection()
    await defer.gatherResults([c.closed for c in clients])
    await wait_for(lambda: hub.stream_count == 0)
    await hang_up(world, sid)
    assert hub.stream_count == 0


@pytest_twisted.ensureDeferred
async def test_a_client_that_never_reads_is_cut_off(served):
    """Frames pile up for a client that does not read; past max_pending it is closed."""
    world, hub, port = served
    sid = world.callback()
    slow = await connect(port, sid, read=False)
    await wait_for(lambda: hub.streams_of(sid) == 1)
    big = "x" * 60_000
    for seq in range(100, 200):
        hub.publish(SessionEvent("leg_ringing", sid, seq, 0.0, address=big))
        if hub.streams_of(sid) == 0:
            break
    assert hub.streams_of(sid) == 0
    slow.transport.resumeProducing()
    await closed(slow)


@pytest_twisted.ensureDeferred
async def test_stop_ends_every_stream(served):
    world, hub, port = served
    sid = world.callback()
    client = await connect(port, sid)
    await wait_for(lambda: hub.streams_of(sid) == 1)
    hub.stop()
    await closed(client)
    assert not hub.running and hub.stream_count == 0
    assert hub_of(world.manager) is not hub  # a stopped hub is replaced on use


def test_the_buffer_is_bounded_and_an_ended_session_expires():
    world = World(balance=10_000_000)
    hub = SessionEventHub(world.manager, buffer_size=3, linger=60)
    hub.start()
    sid = world.callback()
    for seq in range(10, 20):
        hub.publish(SessionEvent("leg_ringing", sid, seq, 0.0))
    assert [entry[0] for entry in hub._buffers[sid].events] == [17, 18, 19]
    assert world.manager.hangup(sid).called
    world.clock.advance(120)  # the release timers give up waiting for the switch
    assert hub._buffers[sid].ended
    world.clock.advance(60)  # the linger
    assert hub.buffered_sessions == 0
    hub.stop()


def test_event_frame():
    frame = event_frame(SessionEvent("leg_ringing", "s1", 7, 1.5, leg="a", address="+49\n"))
    lines = frame.decode().split("\n")
    assert lines[:2] == ["id: 7", "event: leg_ringing"]
    assert json.loads(lines[2].removeprefix("data: "))["address"] == "+49\n"
    assert frame.endswith(b"\n\n") and frame.count(b"\n") == 4


@given(st.one_of(st.text(), st.binary(), st.integers(), st.none(), st.booleans()))
def test_last_event_id_parser_takes_only_a_seq(value):
    seq = parse_last_event_id(value)
    if seq is not None:
        assert isinstance(seq, int) and 0 <= seq <= 2**53
        text = value.decode() if isinstance(value, bytes) else str(value)
        assert int(text.strip()) == seq


@pytest.mark.parametrize(
    ("value", "seq"),
    [(b"12", 12), ("  3 ", 3), (0, 0), ("", None), ("-1", None), ("1e3", None), ("٣", None)],
)
def test_last_event_id_examples(value, seq):
    assert parse_last_event_id(value) == seq
