"""The FastAGI server: one :class:`AGIChannel` per call Asterisk hands over, routed by script.

Shaped like starpy's ``fastagi`` without its bugs (docs/asterisk.rst, "FastAGI"):
exactly one command is in flight at a time and the others wait in a queue (a
command written before the previous reply would sit unread in Asterisk's buffer
and deadlock the call); a ``HANGUP`` line answers no command, it marks the channel
dead: the waiting command and every later one fail with :class:`AGIHangup`, the
waiting command's own reply is then read and dropped; every command has a timeout,
after which the connection is closed, since a late reply would answer the wrong
command; multi-line ``520-`` replies are read whole.

:class:`FastAGIFactory` reads the environment block, finds the handler of the
script named in ``agi_network_script`` (else the path of ``agi_request``) in its
router, runs ``handler(channel)`` and closes the connection when the handler
returns or fails. An unknown script, a garbage environment, a silent client or a
connection over the cap is closed cleanly: ``AGI()`` then returns and the dialplan
goes on at its next priority.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from twisted.application.service import Service
from twisted.internet.defer import Deferred, ensureDeferred, fail
from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol, ServerFactory, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from callbackd.agi.protocol import (
    HANGUP,
    AGIArgumentError,
    AGIParser,
    AGIProtocolError,
    Bare,
    Reply,
    format_command,
)
from callbackd.service import ListeningPort

__all__ = [
    "AGIChannel",
    "AGICommandFailed",
    "AGIConnectionLost",
    "AGIError",
    "AGIHangup",
    "AGITimeout",
    "FastAGIFactory",
    "FastAGIProtocol",
    "FastAGIService",
    "Handler",
    "script_of",
]

#: ``handler(channel)``: runs one call's FastAGI session
Handler = Callable[["AGIChannel"], Awaitable[None]]

_LANGUAGE = re.compile(r"[a-z]{2,3}(?:_[A-Za-z]{2,4})?")
_DIGITS = re.compile(r"[0-9][0-9*#]*")
_ESCAPE = re.compile(r"[0-9*#A-D]*")


class AGIError(Exception):
    """Base class of the FastAGI server's errors."""


class AGICommandFailed(AGIError):
    """Asterisk answered ``result=-1`` (or ``-2``), 510, 511 or 520; ``.reply`` is the reply."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        super().__init__(reply.text)


class AGIHangup(AGIError):
    """The channel hung up: no more commands will run on it."""


class AGIConnectionLost(AGIHangup):
    """The FastAGI connection closed (or was closed after a timeout or garbage)."""


class AGITimeout(AGIError):
    """No reply within the command's timeout (the connection is then closed)."""


@dataclass(eq=False)
class _Command:
    """One command, queued or in flight."""

    line: bytes
    timeout: float
    deferred: Deferred[Reply]
    timer: IDelayedCall | None = None


def script_of(env: Mapping[str, str]) -> tuple[str, dict[str, str]]:
    """The script name and query of an environment block.

    ``agi_network_script`` is the text after ``host:port/`` of the ``AGI()`` URL,
    query included; without it the path of ``agi_request`` is used.
    """
    script = env.get("agi_network_script")
    if script is None:
        parts = urlsplit(env.get("agi_request", ""))
        path, query = parts.path, parts.query
    else:
        path, _, query = script.partition("?")
    return path.strip("/"), dict(parse_qsl(query, keep_blank_values=True))


class AGIChannel:
    """One call's FastAGI session: the environment and the commands, as Deferreds.

    :param env: the environment block (keys as sent, ``"agi_request"``).
    :param write: writes one command line to Asterisk.
    :param close: closes the connection (ending ``AGI()`` in the dialplan).
    :param clock: times every command out.
    :param command_timeout: seconds any command may take beyond its own waiting time.
    """

    log = Logger()

    def __init__(
        self,
        env: Mapping[str, str],
        write: Callable[[bytes], object],
        close: Callable[[], object],
        *,
        clock: IReactorTime,
        command_timeout: float = 30.0,
    ) -> None:
        self.env = dict(env)
        self.script, self.query = script_of(self.env)
        #: the ``AGI()`` arguments after the URL (``agi_arg_1`` ...)
        self.args = tuple(self.env[f"agi_arg_{i}"] for i in range(1, _count_args(self.env) + 1))
        self.clock = clock
        self.command_timeout = command_timeout
        self._write = write
        self._close = close
        self._queue: deque[_Command] = deque()
        self._in_flight: _Command | None = None
        #: True once Asterisk said ``HANGUP`` (or a command found the channel dead)
        self.hung_up = False
        #: True once the connection is gone
        self.closed = False

    def __repr__(self) -> str:
        return f"<AGIChannel {self.env.get('agi_channel', '?')} script={self.script!r}>"

    # --- the connection's side ----------------------------------------------------

    def reply_received(self, reply: Reply) -> None:
        """Asterisk's reply to the command in flight."""
        if reply.code == 100:
            return  # "100 result=0 Trying...": provisional, the real reply follows
        command, self._in_flight = self._in_flight, None
        if command is None:
            self.log.warn("FastAGI reply with no command in flight: {text}", text=reply.text)
            return
        _cancel(command.timer)
        if reply.code == 511:
            self.hung_up = True
        if not command.deferred.called:
            if reply.code == 200:
                command.deferred.callback(reply)
            else:
                command.deferred.errback(AGICommandFailed(reply))
        self._send_next()

    def hangup_received(self) -> None:
        """Asterisk's ``HANGUP`` line: the channel is dead."""
        if self.hung_up:
            return
        self.hung_up = True
        command = self._in_flight
        if command is not None and not command.deferred.called:
            # its reply still comes and is dropped then; its timer still guards it
            command.deferred.errback(AGIHangup("the channel hung up"))
        self._fail_queue(AGIHangup("the channel hung up"))

    def connection_lost(self, reason: str = "closed") -> None:
        """The connection is gone: every waiting command fails with AGIConnectionLost."""
        self.closed = True
        self.hung_up = True
        error = AGIConnectionLost(f"the FastAGI connection closed: {reason}")
        command, self._in_flight = self._in_flight, None
        if command is not None:
            _cancel(command.timer)
            if not command.deferred.called:
                command.deferred.errback(error)
        self._fail_queue(error)

    def close(self) -> None:
        """Close the connection: ``AGI()`` returns and the dialplan continues."""
        if not self.closed:
            self.closed = True
            self._close()

    # --- sending --------------------------------------------------------------------

    def command(self, command: str, *args: str | int, timeout: float = 0.0) -> Deferred[Reply]:
        """Send one command once those before it are answered; fires with its 200 reply.

        ``timeout`` is added to ``command_timeout`` (a command's own waiting time).
        Errbacks with :class:`AGICommandFailed` (5xx), :class:`AGIHangup`,
        :class:`AGITimeout` or :class:`AGIArgumentError` (nothing sent).
        """
        try:
            line = format_command(command, *args)
        except AGIArgumentError:
            return fail()
        if self.closed:
            return fail(AGIConnectionLost("the FastAGI connection is closed"))
        if self.hung_up:
            return fail(AGIHangup("the channel hung up"))
        entry = _Command(line, self.command_timeout + timeout, Deferred(self._cancelled))
        self._queue.append(entry)
        if self._in_flight is None:
            self._send_next()
        return entry.deferred

    def _cancelled(self, deferred: Deferred[Reply]) -> None:
        for entry in self._queue:
            if entry.deferred is deferred:
                self._queue.remove(entry)
                return
        # a command in flight stays so: its reply still comes and is dropped then, and
        # its timer still closes the session if it never does

    def _send_next(self) -> None:
        if self._in_flight is not None or self.closed:
            return
        if self.hung_up and self._queue:
            self._fail_queue(AGIHangup("the channel hung up"))
            return
        if not self._queue:
            return
        command = self._queue.popleft()
        self._in_flight = command
        command.timer = self.clock.callLater(command.timeout, self._timed_out, command)
        self._write(command.line)

    def _timed_out(self, command: _Command) -> None:
        if self._in_flight is not command:
            return
        self._in_flight = None
        text = command.line.decode("utf-8", "replace").split(" ", 2)[:2]
        self.log.warn(
            "FastAGI {command} unanswered after {timeout}s; closing",
            command=" ".join(text),
            timeout=command.timeout,
        )
        error = AGITimeout(f"no FastAGI reply within {command.timeout}s")
        if not command.deferred.called:
            command.deferred.errback(error)
        # a late reply would answer the next command: this session cannot go on
        self._fail_queue(AGIConnectionLost("closed after a command timed out"))
        self.hung_up = True
        self.close()

    def _fail_queue(self, error: Exception) -> None:
        queue, self._queue = self._queue, deque()
        for entry in queue:
            if not entry.deferred.called:
                entry.deferred.errback(error)

    # --- commands -------------------------------------------------------------------

    def _run(self, command: str, *args: str | int, timeout: float = 0.0) -> Deferred[Reply]:
        """:meth:`command`, failing with AGICommandFailed on a negative result."""

        def checked(reply: Reply) -> Reply:
            if not reply.ok:
                raise AGICommandFailed(reply)
            return reply

        return self.command(command, *args, timeout=timeout).addCallback(checked)

    def _digit(self, command: str, *args: str | int, timeout: float = 0.0) -> Deferred[str]:
        """A command whose result is 0 or the ASCII code of the digit that ended it."""
        return self._run(command, *args, timeout=timeout).addCallback(_digit_of)

    def answer(self) -> Deferred[None]:
        """``ANSWER`` the channel."""
        return self._run("ANSWER").addCallback(lambda _: None)

    def hangup(self) -> Deferred[None]:
        """``HANGUP`` the channel (Asterisk then says ``HANGUP`` and the channel is dead)."""
        return self._run("HANGUP").addCallback(lambda _: None)

    def stream_file(self, name: str, escape_digits: str = "") -> Deferred[str]:
        """Play ``name`` (no extension); the escape digit that stopped it, or ``""``."""
        if not _ESCAPE.fullmatch(escape_digits):
            return fail(AGIArgumentError(f"escape digits {escape_digits!r}"))
        return self._digit("STREAM FILE", name, escape_digits)

    def get_data(self, name: str, timeout_ms: int, max_digits: int) -> Deferred[str]:
        """Play ``name`` and read up to ``max_digits`` digits (``#`` ends); ``""`` on timeout.

        Asterisk waits ``timeout_ms`` for the first digit and as long between digits.
        """
        if timeout_ms <= 0 or max_digits <= 0:
            return fail(AGIArgumentError("GET DATA needs a positive timeout and digit count"))
        own = timeout_ms / 1000 * (max_digits + 1)
        d = self._run("GET DATA", name, int(timeout_ms), int(max_digits), timeout=own)
        return d.addCallback(lambda reply: reply.result)

    def wait_for_digit(self, timeout_ms: int) -> Deferred[str]:
        """The next digit keyed within ``timeout_ms``, or ``""``."""
        if timeout_ms < 0:
            return fail(AGIArgumentError("WAIT FOR DIGIT needs a timeout (no -1 here)"))
        return self._digit("WAIT FOR DIGIT", int(timeout_ms), timeout=timeout_ms / 1000)

    def say_number(self, n: int, escape_digits: str = "") -> Deferred[str]:
        """Speak ``n`` in the channel's language; the escape digit keyed, or ``""``."""
        if not _ESCAPE.fullmatch(escape_digits) or isinstance(n, bool) or not isinstance(n, int):
            return fail(AGIArgumentError(f"SAY NUMBER {n!r} {escape_digits!r}"))
        return self._digit("SAY NUMBER", n, escape_digits)

    def say_digits(self, digits: str, escape_digits: str = "") -> Deferred[str]:
        """Speak ``digits`` one by one (the first a 0-9, as Asterisk wants); the escape
        digit keyed, or ``""``."""
        if not _DIGITS.fullmatch(digits) or not _ESCAPE.fullmatch(escape_digits):
            return fail(AGIArgumentError(f"SAY DIGITS {digits!r} {escape_digits!r}"))
        return self._digit("SAY DIGITS", Bare(digits), escape_digits)

    def set_variable(self, name: str, value: str) -> Deferred[None]:
        """Set a channel variable (or a writable function such as ``CHANNEL(language)``)."""
        try:
            word = Bare(name)
        except AGIArgumentError:
            return fail()
        return self._run("SET VARIABLE", word, value).addCallback(lambda _: None)

    def get_variable(self, name: str) -> Deferred[str | None]:
        """A channel variable's (or function's) value; None when it is not set."""
        try:
            word = Bare(name)
        except AGIArgumentError:
            return fail()
        return self._run("GET VARIABLE", word).addCallback(
            lambda reply: (reply.data or "") if reply.result == "1" else None
        )

    def exec_(self, application: str, *args: str, timeout: float = 0.0) -> Deferred[int]:
        """``EXEC`` a dialplan application with ``args`` (joined by commas); its result.

        An argument may not hold a comma (it would split); ``timeout`` adds to the
        command timeout (a ``Dial`` lasts as long as its call).
        """
        try:
            app = Bare(application)
        except AGIArgumentError:
            return fail()
        if any("," in arg for arg in args):
            return fail(AGIArgumentError("an EXEC argument may not hold a comma"))
        data = (",".join(args),) if args else ()
        d = self._run("EXEC", app, *data, timeout=timeout)
        return d.addCallback(lambda reply: int(reply.result or 0))

    def set_language(self, language: str) -> Deferred[None]:
        """Set ``CHANNEL(language)``: the language of prompts and of ``SAY``."""
        if not _LANGUAGE.fullmatch(language):
            return fail(AGIArgumentError(f"not a language code: {language!r}"))
        return self.set_variable("CHANNEL(language)", language)

    def verbose(self, text: str, level: int = 1) -> Deferred[None]:
        """Write ``text`` to Asterisk's console and log."""
        return self._run("VERBOSE", text, int(level)).addCallback(lambda _: None)


def _digit_of(reply: Reply) -> str:
    code = reply.result_int() or 0
    return chr(code) if 0 < code < 128 else ""


def _count_args(env: Mapping[str, str]) -> int:
    n = 0
    while f"agi_arg_{n + 1}" in env:
        n += 1
    return n


def _cancel(timer: IDelayedCall | None) -> None:
    if timer is not None and timer.active():
        timer.cancel()


class FastAGIProtocol(Protocol):
    """One FastAGI connection: the environment, then the handler's commands."""

    log = Logger()

    def __init__(self, factory: FastAGIFactory) -> None:
        self.factory = factory
        self.parser = AGIParser()
        self.channel: AGIChannel | None = None
        self._env_timer: IDelayedCall | None = None

    def connectionMade(self) -> None:
        self.factory.active.add(self)
        self._env_timer = self.factory.clock.callLater(
            self.factory.command_timeout, self._no_environment
        )

    def _no_environment(self) -> None:
        self.log.warn("FastAGI client sent no environment block; closing")
        self._abort()

    def _abort(self) -> None:
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:
        try:
            events = self.parser.feed(data)
        except AGIProtocolError as error:
            self.log.warn(
                "FastAGI garbage from {peer}: {error}; closing", peer=self._peer(), error=error
            )
            if self.channel is not None:
                self.channel.connection_lost("garbage from Asterisk")
            self._abort()
            return
        for event in events:
            if isinstance(event, dict):
                self._environment(event)
            elif self.channel is None:
                return
            elif event is HANGUP:
                self.channel.hangup_received()
            elif isinstance(event, Reply):
                self.channel.reply_received(event)

    def _peer(self) -> str:
        if self.transport is None:
            return "?"
        peer = self.transport.getPeer()
        return f"{getattr(peer, 'host', '?')}:{getattr(peer, 'port', '?')}"

    def _environment(self, env: dict[str, str]) -> None:
        _cancel(self._env_timer)
        assert self.transport is not None
        transport = self.transport
        channel = AGIChannel(
            env,
            transport.write,
            transport.loseConnection,
            clock=self.factory.clock,
            command_timeout=self.factory.command_timeout,
        )
        self.channel = channel
        handler = self.factory.router.get(channel.script)
        if handler is None:
            self.log.warn(
                "FastAGI script {script!r} unknown (channel {channel}); closing",
                script=channel.script,
                channel=env.get("agi_channel", "?"),
            )
            channel.close()
            return
        self.factory.sessions += 1
        d = ensureDeferred(handler(channel))
        d.addErrback(self._handler_failed, channel)
        d.addBoth(lambda _: channel.close())

    def _handler_failed(self, failure: Failure, channel: AGIChannel) -> None:
        if failure.check(AGIHangup):
            self.log.info("FastAGI {channel!r} ended: {why}", channel=channel, why=failure.value)
        else:
            self.log.failure("FastAGI handler of {channel!r} failed", failure, channel=channel)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.factory.active.discard(self)
        _cancel(self._env_timer)
        if self.channel is not None:
            self.channel.connection_lost(reason.getErrorMessage())
            self.channel.closed = True


class _RefusedProtocol(Protocol):
    """Over the connection cap: close at once (Asterisk's ``AGI()`` then fails and goes on)."""

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.loseConnection()


class FastAGIFactory(ServerFactory):
    """Builds a :class:`FastAGIProtocol` per connection, at most ``max_connections`` at once.

    ``router`` maps a script name (``"ivr"`` for ``agi://host:4573/ivr?x=1``) to a
    handler; it is read at each connection, so handlers may be added after start.
    """

    log = Logger()

    def __init__(
        self,
        router: Mapping[str, Handler],
        *,
        clock: IReactorTime,
        command_timeout: float = 30.0,
        max_connections: int = 1000,
    ) -> None:
        self.router = router
        self.clock = clock
        self.command_timeout = command_timeout
        self.max_connections = max_connections
        self.active: set[FastAGIProtocol] = set()
        #: sessions handed to a handler, and connections refused over the cap
        self.sessions = 0
        self.refused = 0

    def buildProtocol(self, addr: IAddress | None) -> Protocol:
        if len(self.active) >= self.max_connections:
            self.refused += 1
            self.log.warn(
                "FastAGI connection from {addr} refused: {n} open (max_connections)",
                addr=addr,
                n=len(self.active),
            )
            return _RefusedProtocol()
        return FastAGIProtocol(self)


class FastAGIService(Service):
    """The FastAGI server listening on a strports endpoint (``tcp:4573:interface=127.0.0.1``).

    ``port`` is the bound port once listening (``ready`` fires with it); stopping
    closes the listener and every open session.
    """

    log = Logger()

    def __init__(
        self,
        listen: str,
        router: Mapping[str, Handler],
        *,
        reactor: Any,
        clock: IReactorTime | None = None,
        command_timeout: float = 30.0,
        max_connections: int = 1000,
    ) -> None:
        self.listen = listen
        self.reactor = reactor
        self.factory = FastAGIFactory(
            router,
            clock=clock if clock is not None else reactor,
            command_timeout=command_timeout,
            max_connections=max_connections,
        )
        self._port = ListeningPort(self.log, "FastAGI server")
        #: fires with the bound port once listening
        self.ready: Deferred[int] = self._port.ready

    @property
    def port(self) -> int | None:
        """The bound port once listening."""
        return self._port.port

    def startService(self) -> None:
        super().startService()
        self._port.listen(self.reactor, self.listen, self.factory)

    def stopService(self) -> Deferred[Any]:
        super().stopService()
        stopped = self._port.stop()
        for protocol in list(self.factory.active):
            if protocol.transport is not None:
                protocol.transport.loseConnection()
        return stopped

    def health(self) -> tuple[bool, str]:
        """Listening, and how many sessions are open (for /healthz)."""
        if self.port is None:
            return False, "not listening"
        return True, f"listening on port {self.port}, {len(self.factory.active)} open"
