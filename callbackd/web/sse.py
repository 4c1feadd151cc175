"""Server-Sent Events of the engine's session events: one hub, any number of streams.

:class:`SessionEventHub` subscribes to the engine once (``engine.subscribe`` for every
session) and fans each :class:`~callbackd.core.session.SessionEvent` out to the streams
open on its session, found in a dict by session id: a publish costs the streams of that
session, not every stream. It encodes each event once, as the frame::

    id: <seq>
    event: <kind>
    data: <the event as JSON, one line>

(``seq`` is the event's per-session sequence number; encoded when a stream first
needs it, so the events nobody watches cost no JSON), and keeps the last
``buffer_size`` events of each session for ``Last-Event-ID``: a stream opened with
``Last-Event-ID: N`` first gets the buffered frames after ``N``, then the live ones.
The buffer of an ended session is kept ``linger`` seconds, so a page or client that
lost its connection at the end still gets ``session_ended``; a stream whose session
has ended (or is unknown) and that has seen everything is answered 204 No Content,
which tells an ``EventSource`` to stop reconnecting.

Each stream is its request's push producer: when the client does not read and the
socket's buffer fills, Twisted pauses it, and frames wait in the stream; past
``max_pending`` of them the connection is closed (the client resumes with
``Last-Event-ID``), so a client that never reads holds a bounded amount of memory. A
comment line (``:``) goes to every stream each ``heartbeat`` seconds, from one timer
for all of them, so that proxies and clients see the connection alive. A client that
goes away is forgotten at once (``notifyFinish``); nothing stays subscribed.

:func:`stream_session_events` is the entry point for any resource (the REST API, the
portal's live page): it does not care how the caller was authorised, which is the
caller's job before calling it.
"""

from __future__ import annotations

import json
import weakref
from collections import deque
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IPushProducer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.web import server
from zope.interface import implementer

from callbackd.core.session import SessionEvent

__all__ = [
    "DEFAULT_BUFFER_SIZE",
    "DEFAULT_HEARTBEAT",
    "SessionEventHub",
    "event_frame",
    "hub_of",
    "install_hub",
    "parse_last_event_id",
    "stream_session_events",
]

log = Logger(namespace="callbackd.web.sse")

#: frames kept per session for Last-Event-ID
DEFAULT_BUFFER_SIZE = 64
#: seconds between heartbeat comments
DEFAULT_HEARTBEAT = 15.0
#: seconds an ended session's frames are kept
DEFAULT_LINGER = 600.0
#: frames a paused (not reading) stream may hold before it is closed
DEFAULT_MAX_PENDING = 256
#: what a reconnecting EventSource waits, in milliseconds (sent once per stream)
RETRY_MS = 2000
_HEARTBEAT_FRAME = b": keep-alive\n\n"
_ENDED = "session_ended"
#: the largest Last-Event-ID taken (a seq is far below it)
_MAX_ID = 2**53


def event_frame(event: SessionEvent) -> bytes:
    """The SSE frame of one event: ``id``, ``event`` and ``data`` lines and a blank line."""
    data = json.dumps(event.to_dict(), separators=(",", ":"), ensure_ascii=True)
    return f"id: {event.seq}\nevent: {event.kind}\ndata: {data}\n\n".encode("ascii")


def parse_last_event_id(value: object) -> int | None:
    """A ``Last-Event-ID`` as the seq it names; None when absent or not a seq.

    Takes the header's bytes or str (or an int); anything but 0 to 2**53 in decimal
    digits is None: the stream then starts from the oldest buffered frame.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 <= value <= _MAX_ID else None
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            return None
    if not isinstance(value, str):
        return None
    text = value.strip()
    if not text or len(text) > 16 or not (text.isascii() and text.isdigit()):
        return None
    seq = int(text)
    return seq if seq <= _MAX_ID else None


class _Buffer:
    """The last events of one session (each encoded once, when first needed), and
    whether it has ended."""

    __slots__ = ("ended", "events", "expiry")

    def __init__(self, size: int) -> None:
        #: [seq, event, its frame or None until a stream needs it]
        self.events: deque[list[Any]] = deque(maxlen=size)
        self.ended = False
        self.expiry: IDelayedCall | None = None

    def after(self, seq: int | None) -> list[bytes]:
        return [_frame_of(entry) for entry in self.events if seq is None or entry[0] > seq]

    @property
    def last_seq(self) -> int:
        return int(self.events[-1][0]) if self.events else 0


def _frame_of(entry: list[Any]) -> bytes:
    frame: bytes | None = entry[2]
    if frame is None:
        frame = entry[2] = event_frame(entry[1])
    return frame


@implementer(IPushProducer)
class _Stream:
    """One client's open event stream (its request's push producer)."""

    __slots__ = ("closed", "hub", "paused", "pending", "request", "session_id", "__weakref__")

    def __init__(self, hub: SessionEventHub, request: server.Request, session_id: str) -> None:
        self.hub = hub
        self.request = request
        self.session_id = session_id
        self.paused = False
        self.pending: list[bytes] = []
        self.closed = False

    def send(self, frame: bytes) -> None:
        if self.closed:
            return
        if not self.paused:
            self.request.write(frame)
            return
        self.pending.append(frame)
        if len(self.pending) > self.hub.max_pending:
            log.info(
                "event stream of {session_id}: client not reading, closed",
                session_id=self.session_id,
            )
            self.abort()

    def finish(self) -> None:
        """The session ended: flush and end the response."""
        if self.closed:
            return
        if self.pending:
            self.request.write(b"".join(self.pending))
            self.pending = []
        self.closed = True
        self.hub._forget(self)
        self.request.unregisterProducer()
        self.request.finish()

    def abort(self) -> None:
        self.closed = True
        self.pending = []
        self.hub._forget(self)
        transport: Any = self.request.channel.transport if self.request.channel else None
        if transport is not None:
            transport.abortConnection()

    def gone(self, reason: object) -> None:
        """The response finished or the client went away."""
        self.closed = True
        self.pending = []
        self.hub._forget(self)

    # IPushProducer
    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        if self.pending and not self.closed:
            pending, self.pending = self.pending, []
            self.request.write(b"".join(pending))

    def stopProducing(self) -> None:
        self.gone(None)


class SessionEventHub:
    """Fans the engine's session events out to SSE streams (see the module docstring).

    ``engine`` needs ``subscribe(callback)``, ``clock`` and ``state_of(session_id)``
    (a :class:`~callbackd.engine.manager.SessionManager`). :meth:`start` subscribes and
    starts the heartbeat; :meth:`stop` ends every stream and unsubscribes.
    """

    def __init__(
        self,
        engine: Any,
        *,
        buffer_size: int = DEFAULT_BUFFER_SIZE,
        heartbeat: float = DEFAULT_HEARTBEAT,
        linger: float = DEFAULT_LINGER,
        max_pending: int = DEFAULT_MAX_PENDING,
    ) -> None:
        if buffer_size < 1 or heartbeat <= 0 or linger < 0 or max_pending < 1:
            raise ValueError("bad event hub settings")
        self.engine = engine
        self.clock = engine.clock
        self.buffer_size = buffer_size
        self.heartbeat = heartbeat
        self.linger = linger
        self.max_pending = max_pending
        self._buffers: dict[str, _Buffer] = {}
        self._streams: dict[str, set[_Stream]] = {}
        self._unsubscribe: Any = None
        self._beat: LoopingCall | None = None

    # -- life cycle -------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Between :meth:`start` and :meth:`stop`."""
        return self._unsubscribe is not None

    def start(self) -> None:
        """Subscribe to every session's events and start the heartbeat."""
        if self.running:
            return
        self._unsubscribe = self.engine.subscribe(self.publish)
        self._beat = LoopingCall(self._heartbeat)
        self._beat.clock = self.clock
        self._beat.start(self.heartbeat, now=False)

    def stop(self) -> None:
        """End every stream, forget every buffer, unsubscribe."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._beat is not None and self._beat.running:
            self._beat.stop()
        for streams in list(self._streams.values()):
            for stream in list(streams):
                stream.finish()
        for buffer in self._buffers.values():
            if buffer.expiry is not None and buffer.expiry.active():
                buffer.expiry.cancel()
        self._buffers.clear()

    # -- counts (metrics, tests) --------------------------------------------------------

    @property
    def stream_count(self) -> int:
        """The streams open now."""
        return sum(len(s) for s in self._streams.values())

    @property
    def buffered_sessions(self) -> int:
        """The sessions whose frames are kept."""
        return len(self._buffers)

    def streams_of(self, session_id: str) -> int:
        """The streams open on one session."""
        return len(self._streams.get(session_id, ()))

    # -- events -----------------------------------------------------------------------

    def publish(self, event: SessionEvent) -> None:
        """Buffer one event's frame and write it to its session's streams."""
        session_id = event.session_id
        buffer = self._buffers.get(session_id)
        if buffer is None:
            buffer = self._buffers[session_id] = _Buffer(self.buffer_size)
        entry = [event.seq, event, None]
        buffer.events.append(entry)
        streams = self._streams.get(session_id)
        if streams:
            frame = _frame_of(entry)
            for stream in list(streams):
                stream.send(frame)
        if event.kind == _ENDED:
            buffer.ended = True
            buffer.expiry = self.clock.callLater(self.linger, self._expire, session_id, buffer)
            for stream in list(self._streams.get(session_id, ())):
                stream.finish()

    def _expire(self, session_id: str, buffer: _Buffer) -> None:
        if self._buffers.get(session_id) is buffer:
            del self._buffers[session_id]

    def _heartbeat(self) -> None:
        for streams in list(self._streams.values()):
            for stream in list(streams):
                stream.send(_HEARTBEAT_FRAME)

    def _forget(self, stream: _Stream) -> None:
        streams = self._streams.get(stream.session_id)
        if streams is not None:
            streams.discard(stream)
            if not streams:
                del self._streams[stream.session_id]
                self._drop_if_idle(stream.session_id)

    def _drop_if_idle(self, session_id: str) -> None:
        """Forget the frames of a session the engine does not know, once nobody listens.

        (An ended session's frames stay until their expiry.)
        """
        buffer = self._buffers.get(session_id)
        if buffer is not None and not buffer.ended and self.engine.state_of(session_id) is None:
            del self._buffers[session_id]

    # -- streams ----------------------------------------------------------------------

    def is_over(self, session_id: str, last_event_id: int | None) -> bool:
        """Whether nothing more will come after ``last_event_id`` for the session."""
        buffer = self._buffers.get(session_id)
        live = self.engine.state_of(session_id)
        if buffer is None:
            return live is None or bool(getattr(live, "finished", False))
        if not buffer.ended:
            return False
        return last_event_id is not None and last_event_id >= buffer.last_seq

    def open(self, request: server.Request, session_id: str, last_event_id: object = None) -> Any:
        """Answer ``request`` with the session's event stream; NOT_DONE_YET (or 204's b"")."""
        after = parse_last_event_id(last_event_id)
        request.setHeader(b"cache-control", b"no-store")
        if self.is_over(session_id, after):
            request.setResponseCode(204)
            return b""
        request.setHeader(b"content-type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"x-accel-buffering", b"no")
        buffer = self._buffers.get(session_id)
        replay = buffer.after(after) if buffer is not None else []
        request.write(b"retry: %d\n\n" % RETRY_MS + b"".join(replay))
        if buffer is not None and buffer.ended:
            request.finish()
            return server.NOT_DONE_YET
        stream = _Stream(self, request, session_id)
        self._streams.setdefault(session_id, set()).add(stream)
        request.registerProducer(stream, True)
        request.notifyFinish().addBoth(_gone, weakref.ref(stream))
        return server.NOT_DONE_YET


def _gone(result: object, ref: weakref.ref[_Stream]) -> None:
    """notifyFinish's callback and errback (a client going away is no error)."""
    stream = ref()
    if stream is not None:
        stream.gone(result)


_HUBS: weakref.WeakKeyDictionary[Any, SessionEventHub] = weakref.WeakKeyDictionary()


def install_hub(engine: Any, **settings: Any) -> SessionEventHub:
    """Make (or remake, with ``settings``) the hub of ``engine`` and start it."""
    old = _HUBS.pop(engine, None)
    if old is not None:
        old.stop()
    hub = _HUBS[engine] = SessionEventHub(engine, **settings)
    hub.start()
    return hub


def hub_of(engine: Any) -> SessionEventHub:
    """The engine's hub, made with the default settings and started if there is none."""
    hub = _HUBS.get(engine)
    if hub is None or not hub.running:
        hub = install_hub(engine)
    return hub


def stream_session_events(
    request: server.Request, engine: Any, session_id: str, last_event_id: object = None
) -> Any:
    """Answer ``request`` with the SSE stream of ``session_id``'s events.

    The caller has checked that the requester may see the session. ``last_event_id`` is
    the ``Last-Event-ID`` header's value as received (bytes, str, int or None; see
    :func:`parse_last_event_id`). Returns ``server.NOT_DONE_YET`` while streaming, or
    ``b""`` with status 204 when nothing more will come (the session has ended and the
    client has seen all of it, or the engine does not know the session).
    """
    return hub_of(engine).open(request, session_id, last_event_id)
