"""Chat commands per second through the XMPP component, and CALLBACK-to-Originate latency.

The daemon's real parts run as in ``bench_setup`` (:mod:`bench._harness`:
``create_daemon`` from a temporary INI, a private ``redis-server``, the simulated
Asterisk in its own process), with ``[xmpp] enabled = yes``. The bench itself plays
the XMPP server's side of XEP-0114 (:class:`ComponentServer`, a small Twisted protocol
on a free loopback port in the daemon's process): it answers the component's stream
header with one carrying an ``id``, checks the component's ``<handshake>`` against
``sha1(id + secret)``, answers ``<handshake/>``, and from then on writes
``<message type="chat" from="userN@example.test/r" to="<domain>"><body>...</body>
</message>`` stanzas and reads the component's messages back (cut at ``</message>``,
the recipient and the body taken out with a regular expression: the driver's own cost
is kept small because it shares the daemon's process and CPU).

``C`` = 100 users, each linked to an account of its own (``IStore.link_jid``, outside
the timing), in two closed loops:

* **commands** (``chat_commands_per_s``): each user sends ``STATUS`` and ``BALANCE``
  in turn, the next as soon as the reply to the previous one came; every reply must be
  the expected one ("No calls in progress." or "Your balance: ..."). After a warm-up,
  the replies inside a fixed window are counted: commands/s = replies / window;
  ``cpu_commands_per_s`` = replies / the daemon process's CPU seconds in the window
  (the XML parsing of both sides, the store's round trips to Redis, the reply's
  rendering; the driver's share included).
* **callbacks** (``chat_callback_originate_p50/p99``): each user sends
  ``CALLBACK <source> <destination>``, waits for the "Now talking" progress message,
  sends ``HANGUP``, waits for the "Charged time" message, and starts again. The latency
  runs from the ``CALLBACK`` stanza handed to the server side's transport to the
  session's source-leg ``Originate`` handed to the AMI transport (both wrapped writes
  in the same process, one clock), over every callback sent inside the window.
  ``chat_arrival_originate_p50/p99``: the same callbacks from the stanza's *arrival in
  the component* (an observer of the component's stream, ahead of its
  ``MessageHandler``, stamps each parsed ``CALLBACK`` message) to the Originate: the
  issue's "from a CALLBACK stanza arriving to the Originate leaving", without the wait
  for the daemon's busy reactor to read the socket.

The ChatFront's per-JID command limit (10 commands per 10 s by default) would stop a
closed loop at 1 command/s per user; the bench raises it on the running daemon's
front (no production code or configuration is changed for it).

``python -m bench.bench_chat --child [--quick] [--users N]`` runs the measuring process
alone (``--users`` for another number of users than 100).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import secrets
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any
from xml.sax.saxutils import escape, unescape

from twisted.internet.protocol import Protocol

#: the component's domain and the users' server
DOMAIN = "callback.example.test"
USER = "user{:05d}@example.test"
#: concurrent chatting users
USERS = 100
#: (warm-up seconds, window seconds) of each closed loop, quick and full
TIMES = {True: (1.0, 3.0), False: (2.0, 10.0)}
#: the closed loop's commands, in turn
COMMANDS = ("STATUS", "BALANCE")

_STREAM_HEADER = re.compile(rb"<stream:stream[^>]*>")
_HANDSHAKE = re.compile(rb"<handshake>([0-9a-fA-F]*)</handshake>")
_MESSAGE_TO = re.compile(r"""\sto=["']([^"'/]+)""")
_BODY = re.compile(r"<body>(.*?)</body>", re.DOTALL)
_XML_ENTITIES = {"&quot;": '"', "&apos;": "'"}


def run(quick: bool) -> Iterator[dict[str, Any]]:
    """Run the child process and pass its result lines on."""
    from bench._harness import run_child

    args = ["--quick"] if quick else []
    yield from run_child("bench.bench_chat", args, timeout=120 if quick else 300)


# -- the XMPP server's side -----------------------------------------------------------


class ComponentServer:
    """The server end of one component connection (XEP-0114) on a loopback port.

    ``on_message(bare_jid, body)`` hears every message the component sends; ``send``
    writes a chat message from a user to the component.
    """

    def __init__(self, domain: str) -> None:
        self.domain = domain
        self.secret = secrets.token_hex(16)
        self.on_message: Callable[[str, str], None] = lambda jid, body: None
        self.stream: _ServerStream | None = None
        self.authenticated: Any = None
        self.port: Any = None

    def listen(self, reactor: Any, processes: Any) -> str:
        """Listen on a free loopback port; the daemon's ``[xmpp]`` section for it."""
        from twisted.internet import defer, protocol

        self.authenticated = defer.Deferred()
        factory = protocol.Factory.forProtocol(lambda: _ServerStream(self))
        self.port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        (processes.workdir / "xmpp_secret").write_text(self.secret)
        return f"""
[xmpp]
enabled = yes
domain = {self.domain}
host = 127.0.0.1
port = {self.port.getHost().port}
secret_file = xmpp_secret
"""

    def send(self, jid: str, body: str) -> None:
        """A chat message from ``jid`` (bare) to the component."""
        if self.stream is None:
            raise RuntimeError("the component is not connected")
        self.stream.transport.write(
            (
                f"<message type='chat' from='{jid}/r' to='{self.domain}'>"
                f"<body>{escape(body)}</body></message>"
            ).encode()
        )

    def stop(self) -> Any:
        """Stop listening (the daemon closes its own end)."""
        return self.port.stopListening() if self.port is not None else None


class _ServerStream(Protocol):
    """One component stream, server side: header, handshake, then messages."""

    def __init__(self, server: ComponentServer) -> None:
        self.server = server
        self.stream_id = secrets.token_hex(8)
        self.state = "header"
        self.buffer = b""

    def connectionMade(self) -> None:  # noqa: N802
        # as an XMPP server does (Prosody's and ejabberd's sockets): no Nagle delays
        self.transport.setTcpNoDelay(True)

    def connectionLost(self, reason: Any) -> None:  # noqa: N802
        if self.server.stream is self:
            self.server.stream = None

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        self.buffer += data
        if self.state == "header":
            self._header()
        if self.state == "handshake":
            self._handshake()
        if self.state == "open":
            self._messages()

    def _header(self) -> None:
        match = _STREAM_HEADER.search(self.buffer)
        if match is None:
            return
        self.buffer = self.buffer[match.end() :]
        self.transport.write(
            (
                "<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept'"
                " xmlns:stream='http://etherx.jabber.org/streams'"
                f" from='{self.server.domain}' id='{self.stream_id}'>"
            ).encode()
        )
        self.state = "handshake"

    def _handshake(self) -> None:
        match = _HANDSHAKE.search(self.buffer)
        if match is None:
            return
        self.buffer = self.buffer[match.end() :]
        expected = hashlib.sha1((self.stream_id + self.server.secret).encode()).hexdigest()
        if match.group(1).decode().lower() != expected:
            self.transport.write(
                b"<stream:error><not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
                b"</stream:error></stream:stream>"
            )
            self.transport.loseConnection()
            self.state = "closed"
            return
        self.transport.write(b"<handshake/>")
        self.state = "open"
        self.server.stream = self
        if not self.server.authenticated.called:
            self.server.authenticated.callback(None)

    def _messages(self) -> None:
        buffer = self.buffer
        end = buffer.rfind(b"</message>")
        if end < 0:
            return
        self.buffer = buffer[end + 10 :]
        for stanza in buffer[:end].decode().split("</message>"):
            start = stanza.rfind("<message")
            to, body = _MESSAGE_TO.search(stanza, start), _BODY.search(stanza, start)
            if to is not None and body is not None:
                self.server.on_message(to.group(1), unescape(body.group(1), _XML_ENTITIES))


# -- the closed loops -----------------------------------------------------------------


class Window:
    """The measuring window of a closed loop: its bounds and the CPU used inside it.

    (A plain class: ``bench/run.py`` loads this file without registering the module,
    which ``dataclasses`` needs.)
    """

    def __init__(self) -> None:
        self.start = self.end = float("inf")
        #: the daemon process's and the simulator's CPU seconds inside the window
        self.cpu = self.simulator_cpu = 0.0
        #: the window has closed: users stop after their current command or call
        self.stopping = False
        self._opened = (0.0, 0.0)

    def open(self, simulator: int) -> None:
        from bench._harness import process_cpu

        self.start = time.perf_counter()
        self._opened = (time.process_time(), process_cpu(simulator))

    def close(self, simulator: int) -> None:
        from bench._harness import process_cpu

        self.end = time.perf_counter()
        self.stopping = True
        self.cpu = time.process_time() - self._opened[0]
        self.simulator_cpu = process_cpu(simulator) - self._opened[1]

    def inside(self, at: float) -> bool:
        return self.start <= at < self.end

    @property
    def length(self) -> float:
        return self.end - self.start


def _prefix(msgid: str, **params: str) -> str:
    """The English text of ``msgid`` up to its first placeholder (named in ``params``)."""
    from callbackd.i18n import translator

    marked = {name: "\0" for name in params}
    return translator("en").text(msgid, **marked).partition("\0")[0]


async def _closed_loop(
    bench: Any,
    server: ComponentServer,
    users: list[str],
    times: tuple[float, float],
    begin: Callable[[int], None],
    heard: Callable[[int, str, Window], bool],
    timeout: float = 60.0,
) -> Window:
    """Run ``begin(i)`` for each user, spread over half the warm-up; ``heard`` the rest.

    ``heard(i, body, window)`` handles one message to user ``i`` and returns True once
    that user is done (after the window closed). Returns the window once every user is.
    """
    from twisted.internet import defer

    reactor = bench.reactor
    warmup, length = times
    index = {jid: i for i, jid in enumerate(users)}
    window = Window()
    done: set[int] = set()
    all_done: defer.Deferred[None] = defer.Deferred()

    def on_message(jid: str, body: str) -> None:
        i = index.get(jid)
        if i is not None and heard(i, body, window):
            done.add(i)
            if len(done) == len(users) and not all_done.called:
                all_done.callback(None)

    simulator = bench.processes.simulator.pid
    server.on_message = on_message
    for i in range(len(users)):
        reactor.callLater(i * warmup / 2 / len(users), begin, i)
    reactor.callLater(warmup, window.open, simulator)
    reactor.callLater(warmup + length, window.close, simulator)
    all_done.addTimeout(warmup + length + timeout, reactor)
    try:
        await all_done
    except defer.TimeoutError:
        raise RuntimeError(f"{len(users) - len(done)} chat users never finished") from None
    finally:
        server.on_message = lambda jid, body: None
    return window


async def commands_loop(
    bench: Any, server: ComponentServer, users: list[str], times: tuple[float, float]
) -> dict[str, Any]:
    """STATUS and BALANCE in turn per user, each after the previous reply; the figures."""
    from bench._harness import ms, percentile

    expected = {
        "STATUS": _prefix("chat.status_none"),
        "BALANCE": _prefix("chat.balance", balance=""),
    }
    sent = [0] * len(users)
    sent_at = [0.0] * len(users)
    #: per reply inside the window: command sent to reply read
    round_trips: list[float] = []
    wrong: list[str] = []

    def begin(i: int) -> None:
        sent_at[i] = time.perf_counter()
        server.send(users[i], COMMANDS[sent[i] % len(COMMANDS)])

    def heard(i: int, body: str, window: Window) -> bool:
        now = time.perf_counter()
        command = COMMANDS[sent[i] % len(COMMANDS)]
        if not body.startswith(expected[command]):
            wrong.append(f"{command} got {body!r}")
        if window.inside(now):
            round_trips.append(now - sent_at[i])
        sent[i] += 1
        if window.stopping or len(wrong) > 10:
            return True
        begin(i)
        return False

    window = await _closed_loop(bench, server, users, times, begin, heard)
    if wrong:
        raise RuntimeError(f"{len(wrong)} unexpected replies, first: {wrong[0]}")
    count = len(round_trips)
    return {
        "bench": "chat_commands_per_s",
        "value": round(count / window.length, 1),
        "unit": "commands/s",
        "users": len(users),
        "window_s": round(window.length, 2),
        "commands": count,
        "cpu_commands_per_s": round(count / window.cpu, 1) if window.cpu else None,
        "daemon_cpu_share": round(window.cpu / window.length, 2),
        "round_trip_p50_ms": ms(percentile(round_trips, 0.5)),
        "round_trip_p99_ms": ms(percentile(round_trips, 0.99)),
    }


async def callbacks_loop(
    bench: Any, server: ComponentServer, users: list[str], times: tuple[float, float]
) -> list[dict[str, Any]]:
    """CALLBACK, talking, HANGUP, charged, again, per user; CALLBACK-to-Originate figures."""
    from bench._harness import DESTINATION, SOURCE, ms, percentile

    started = _prefix("chat.session_started", session="")
    talking = _prefix("progress.talking", cost="")
    charged = _prefix("progress.charged", seconds="", reason="")
    sent_at: list[float] = [0.0] * len(users)
    session_of: list[str] = [""] * len(users)
    #: per callback sent inside the window: sent, the engine called, the session
    inside: list[tuple[float, float, str]] = []
    engine_at = _stamp_start_callback(bench.daemon.engine)
    arrived_at = _stamp_arrivals(bench.daemon.xmpp)

    def begin(i: int) -> None:
        body = f"CALLBACK {SOURCE.format(i % 1000)} {DESTINATION.format(i % 1000)}"
        sent_at[i] = time.perf_counter()
        session_of[i] = ""
        server.send(users[i], body)

    def heard(i: int, body: str, window: Window) -> bool:
        for line in body.splitlines():
            if line.startswith(started):
                session_of[i] = line[len(started) :].split()[0]
                if window.inside(sent_at[i]):
                    arrived = arrived_at.pop(users[i])
                    called = engine_at[bench.accounts[i]]
                    inside.append((sent_at[i], arrived, called, session_of[i]))
            elif line.startswith(talking):
                server.send(users[i], "HANGUP")
            elif line.startswith(charged):
                if window.stopping:
                    return True
                begin(i)
        return False

    try:
        window = await _closed_loop(bench, server, users, times, begin, heard)
    finally:
        del bench.daemon.engine.start_callback  # the class's method again
        arrived_at.clear()
        arrived_at.stop()
    await bench.drained(30.0)
    missing = [sid for *_, sid in inside if sid not in bench.originate_at]
    if not inside or missing:
        raise RuntimeError(f"{len(inside)} callbacks in the window, {len(missing)} not dialled")
    originate_at = bench.originate_at
    latencies = [originate_at[sid] - at for at, _, _, sid in inside]
    from_arrival = [originate_at[sid] - arrived for _, arrived, _, sid in inside]
    to_engine = [called - at for at, _, called, _ in inside]
    in_engine = [originate_at[sid] - called for _, _, called, sid in inside]
    common = {"users": len(users), "window_s": round(window.length, 2), "callbacks": len(inside)}
    return [
        {
            "bench": "chat_callback_originate_p50",
            "value": ms(percentile(latencies, 0.5)),
            "unit": "ms",
            **common,
            "callbacks_per_s": round(len(inside) / window.length, 1),
            "daemon_cpu_share": round(window.cpu / window.length, 2),
        },
        {
            "bench": "chat_callback_originate_p99",
            "value": ms(percentile(latencies, 0.99)),
            "unit": "ms",
            **common,
            "mean_ms": ms(statistics.fmean(latencies)),
            # where the time goes: stanza written -> the engine's start_callback called
            # (stream, parse, the front's reads), and from there -> the Originate written
            "to_engine_p50_ms": ms(percentile(to_engine, 0.5)),
            "to_engine_p99_ms": ms(percentile(to_engine, 0.99)),
            "engine_p50_ms": ms(percentile(in_engine, 0.5)),
            "engine_p99_ms": ms(percentile(in_engine, 0.99)),
        },
        {
            "bench": "chat_arrival_originate_p50",
            "value": ms(percentile(from_arrival, 0.5)),
            "unit": "ms",
            **common,
        },
        {
            "bench": "chat_arrival_originate_p99",
            "value": ms(percentile(from_arrival, 0.99)),
            "unit": "ms",
            **common,
            "mean_ms": ms(statistics.fmean(from_arrival)),
        },
    ]


class _Arrivals(dict[str, float]):
    """Per bare JID, when the component's MessageHandler was handed its last CALLBACK."""

    stop: Callable[[], None]


def _stamp_arrivals(component: Any) -> _Arrivals:
    """Stamp each CALLBACK stanza as the component's MessageHandler receives it.

    An observer of ``/message`` on the component's stream, above the handler's own
    priority: it runs first, on the element the stream has just parsed (the XML read
    and parsed is the component's part of the arrival). ``stop()`` removes it.
    """
    from callbackd.xmpp.handlers import MessageHandler

    [handler] = [h for h in component if isinstance(h, MessageHandler)]
    xmlstream = handler.xmlstream
    if xmlstream is None:
        raise RuntimeError("the component's stream is not initialized")
    arrived = _Arrivals()

    def stamp(message: Any) -> None:
        if message.body is not None and str(message.body).startswith("CALLBACK"):
            arrived[message["from"].partition("/")[0]] = time.perf_counter()

    xmlstream.addObserver("/message", stamp, priority=1)
    arrived.stop = lambda: xmlstream.removeObserver("/message", stamp)
    return arrived


def _stamp_start_callback(engine: Any) -> dict[str, float]:
    """Stamp each ``start_callback`` call per account (an instance attribute wraps it)."""
    called_at: dict[str, float] = {}
    start_callback = engine.start_callback

    def timed(username: str, *args: Any, **kwargs: Any) -> Any:
        called_at[username] = time.perf_counter()
        return start_callback(username, *args, **kwargs)

    engine.start_callback = timed
    return called_at


def lift_rate_limit(daemon: Any) -> None:
    """Let every JID send as many commands as it likes (the closed loop's pace)."""
    from callbackd.xmpp.chat import ChatFront

    fronts = [value for value in vars(daemon.xmpp).values() if isinstance(value, ChatFront)]
    if not fronts:
        raise RuntimeError("the XMPP component has no ChatFront (the chat front is not wired)")
    for front in fronts:
        front.commands.limit = 10**9


async def measure(
    reactor: Any, bench: Any, server: ComponentServer, quick: bool, count: int = USERS
) -> None:
    """The child's work: accounts and links, the two closed loops; one JSON line each."""
    await server.authenticated.addTimeout(20, reactor)
    lift_rate_limit(bench.daemon)
    await bench.create_accounts(count)
    users = [USER.format(i) for i in range(count)]
    for jid, username in zip(users, bench.accounts, strict=True):
        await bench.daemon.store.link_jid(jid, username)
    times = TIMES[quick]
    print(json.dumps(await commands_loop(bench, server, users, times)), flush=True)
    for line in await callbacks_loop(bench, server, users, times):
        print(json.dumps(line), flush=True)
    await bench.check_billing()
    await server.stop()


def main(argv: list[str]) -> None:
    """``--child [--quick]``: the measuring process."""
    from bench._harness import child_main

    parser = argparse.ArgumentParser()
    parser.add_argument("--child", action="store_true", required=True)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--users", type=int, default=USERS, help="concurrent users")
    args = parser.parse_args(argv)
    server = ComponentServer(DOMAIN)
    child_main(
        lambda reactor, bench: measure(reactor, bench, server, args.quick, args.users),
        server.listen,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
