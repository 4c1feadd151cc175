"""The simulated Asterisk's FastAGI side: a channel's ``AGI(agi://...)`` over real TCP.

When a simulated channel reaches a dialplan extension that runs ``AGI()`` (an inbound
call to an access number, :meth:`SimulatedFastAGI.inbound_call`; an originated leg
entering a context registered with :meth:`SimulatedFastAGI.add_extension`), the switch
connects to the FastAGI server, writes the environment block as Asterisk 22 does
(the fields and order of ``tests/fixtures/asterisk22/fastagi-ivr.log``), then answers
one command at a time with the replies a real Asterisk gives, playing sound files in
simulated time, taking the :class:`~callbackd.simulator.caller.ScriptedCaller`'s digits
and writing ``HANGUP`` when the channel hangs up (docs/simulator.rst, "FastAGI").
``SAY NUMBER`` and ``SAY DIGITS`` play the files of :mod:`callbackd.simulator.say`.
Every call keeps its wire transcript and the files it played, in order.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from callbackd.simulator.asterisk import Channel, SimulatedAsterisk
from callbackd.simulator.caller import ROOM, ScriptedCaller
from callbackd.simulator.say import SayError, digit_files, number_files

__all__ = [
    "AGI_VERSION",
    "AGICall",
    "SimulatedFastAGI",
    "SoundLibrary",
    "parse_args",
]

#: ``agi_version`` of the Asterisk the transcript was recorded on
AGI_VERSION: Final = "GIT-22-22.0.0-pre1-541-g69535d4837"
#: Asterisk's ``MAX_AGI_CONNECT``: how long it tries to reach the FastAGI server
CONNECT_TIMEOUT: Final = 2.0
#: sound files play at 8000 samples a second (``endpos`` counts samples)
SAMPLE_RATE: Final = 8000
#: ``agi_threadid`` of the first call (the recorded one's); later calls count up
_THREAD_ID = 140078258366144
_ANY: Final = "0123456789*#ABCD"
_DEAD_OK = frozenset(
    {("GET", "VARIABLE"), ("GET", "FULL", "VARIABLE"), ("SET", "VARIABLE"), ("EXEC",)}
    | {("VERBOSE",), ("NOOP",)}
)
#: the usage text of the ``520-`` reply of each modelled command (res_agi.c's)
USAGE: Final = {
    ("ANSWER",): "Usage: ANSWER",
    ("HANGUP",): "Usage: HANGUP [<channelname>]",
    ("STREAM", "FILE"): "Usage: STREAM FILE <filename> <escape digits> [sample offset]",
    ("GET", "DATA"): "Usage: GET DATA <file to be streamed> [timeout] [max digits]",
    ("WAIT", "FOR", "DIGIT"): "Usage: WAIT FOR DIGIT <timeout>",
    ("SAY", "NUMBER"): "Usage: SAY NUMBER <number> <escape digits> [gender]",
    ("SAY", "DIGITS"): "Usage: SAY DIGITS <number> <escape digits>",
    ("SET", "VARIABLE"): "Usage: SET VARIABLE <variablename> <value>",
    ("GET", "VARIABLE"): "Usage: GET VARIABLE <variablename>",
    ("GET", "FULL", "VARIABLE"): "Usage: GET FULL VARIABLE <variablename> [<channel name>]",
    ("EXEC",): "Usage: EXEC <application> <options>",
    ("VERBOSE",): "Usage: VERBOSE <message> <level>",
    ("NOOP",): "Usage: NOOP",
    ("CHANNEL", "STATUS"): "Usage: CHANNEL STATUS [<channelname>]",
}
#: the fewest and most arguments after the command words
_ARITY: Final = {
    ("ANSWER",): (0, 0),
    ("HANGUP",): (0, 1),
    ("STREAM", "FILE"): (2, 3),
    ("GET", "DATA"): (1, 3),
    ("WAIT", "FOR", "DIGIT"): (1, 1),
    ("SAY", "NUMBER"): (2, 3),
    ("SAY", "DIGITS"): (2, 2),
    ("SET", "VARIABLE"): (2, 2),
    ("GET", "VARIABLE"): (1, 1),
    ("GET", "FULL", "VARIABLE"): (1, 2),
    ("EXEC",): (1, 99),
    ("VERBOSE",): (1, 2),
    ("NOOP",): (0, 99),
    ("CHANNEL", "STATUS"): (0, 1),
}


def parse_args(line: str) -> list[str]:
    """Asterisk's ``parse_args``: words split on blanks, ``"..."`` grouped, ``\\`` escapes."""
    args: list[str] = []
    cur: list[str] = []
    quoted = escaped = started = False
    for ch in line:
        if escaped:
            cur.append(ch)
            escaped, started = False, True
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
            started = True
        elif ch in " \t" and not quoted:
            if started:
                args.append("".join(cur))
                cur, started = [], False
        else:
            cur.append(ch)
            started = True
    if started:
        args.append("".join(cur))
    return args


def _leading_int(text: str) -> int | None:
    """C's ``sscanf("%30d")``: the number a string starts with, or None."""
    digits = text.lstrip()
    end = 1 if digits[:1] in ("-", "+") else 0
    while end < len(digits) and digits[end].isdigit():
        end += 1
    try:
        return int(digits[:end])
    except ValueError:
        return None


@dataclass(frozen=True)
class SoundLibrary:
    """The sound files the simulated Asterisk has, and how long each plays.

    ``durations`` gives seconds per file name; a file not listed plays ``default``
    seconds (``digits/...`` ones ``digits`` seconds), unless ``default`` is None or its
    name starts with one of ``missing`` (then it is not installed).
    """

    durations: Mapping[str, float] = field(default_factory=dict)
    default: float | None = 1.0
    digits: float = 0.5
    missing: tuple[str, ...] = ()

    def duration(self, name: str) -> float | None:
        """Seconds ``name`` plays, or None when it is not installed."""
        if name in self.durations:
            return self.durations[name]
        if self.default is None or any(name.startswith(prefix) for prefix in self.missing):
            return None
        return self.digits if name.startswith("digits/") else self.default


@dataclass(eq=False)
class _Running:
    """The command Asterisk is executing: what a digit, a hangup or a new line does to it."""

    on_digit: Callable[[str], None] | None = None
    on_hangup: Callable[[], None] | None = None
    #: a new command line arrived while this one ran (None: no reply, as for playback)
    on_abort: Callable[[], None] | None = None
    timers: list[IDelayedCall] = field(default_factory=list)

    def clear(self) -> None:
        """The command is over: let go of its callbacks and timers (no reference cycle
        is left for the garbage collector, which would stall the reactor at 500 calls)."""
        self.on_digit = self.on_hangup = self.on_abort = None
        self.timers = []


class _Playback:
    """Sound files playing in order for a command (``STREAM FILE``, ``SAY``,
    ``GET DATA``'s prompt, ``Playback``): a stop digit or a hangup ends it early.
    Methods, not closures, so that nothing refers to itself once the command is over."""

    def __init__(
        self, call: AGICall, files: list[str], stop: str, done: Callable[[int, int], None]
    ) -> None:
        self.call = call
        self.files = files
        self.stop = stop
        self.done = done
        self.index = -1
        self.start = call.clock.seconds()
        self.length = 0.0

    def samples(self) -> int:
        """Samples played of the current file."""
        call = self.call
        elapsed = (call.clock.seconds() - self.start) / (call.switch.time_scale or 1.0)
        return round(min(elapsed, self.length) * SAMPLE_RATE)

    def next_file(self) -> None:
        """Start the next file, or end: ``done(0, samples of the last)``."""
        call = self.call
        self.index += 1
        if self.index >= len(self.files):
            self.done(0, round(self.length * SAMPLE_RATE))
            return
        name = self.files[self.index]
        self.length = call.sounds.duration(name) or 0.0
        self.start = call.clock.seconds()
        call.played.append(name)
        if call.caller is not None:
            call.caller.prompt_started(name)
        call._later(self.length, self.next_file)

    def digit(self, d: str) -> None:
        if d in self.stop:
            self.done(ord(d), self.samples())

    def hung_up(self) -> None:
        self.done(-1, self.samples())


class _Entry:
    """``GET DATA``'s digits: the first within ``first`` ms, each next within
    ``between``, up to ``limit`` or ``#``."""

    def __init__(self, call: AGICall, first: int, between: int, limit: int) -> None:
        self.call = call
        self.first = first
        self.between = between
        self.limit = limit
        self.digits: list[str] = []
        self.timer: IDelayedCall | None = None

    def finish(self, timed_out: bool = False) -> None:
        text = "".join(self.digits)
        self.call._reply(f"200 result={text}" + (" (timeout)" if timed_out else ""))

    def timed_out(self) -> None:
        self.finish(True)

    def hung_up(self) -> None:
        self.call._reply("200 result=-1")

    def wait(self, wait_ms: int) -> None:
        running = self.call._running
        assert running is not None
        running.on_digit = self.got
        running.on_hangup = self.hung_up
        self.timer = self.call._later(wait_ms / 1000, self.timed_out)

    def got(self, d: str) -> None:
        timer = self.timer
        if timer is not None and timer.active():
            timer.cancel()
        if d == "#":
            self.finish()
            return
        self.digits.append(d)
        if len(self.digits) >= self.limit:
            self.finish()
        else:
            self.wait(self.between)

    def prompt_done(self, result: int, _samples: int) -> None:
        if result < 0:
            self.hung_up()
        elif result > 0:
            self.got(chr(result))
        else:
            self.wait(self.first)


class AGICall:
    """One ``AGI()`` run on a channel: the Asterisk side of a FastAGI session.

    ``transcript`` holds ``(time, "a<" | "a>", line)`` as the recorded fixture does
    (``a<`` from Asterisk); ``played`` the sound files in the order they started;
    ``done`` fires with ``AGISTATUS`` (``SUCCESS``, ``FAILURE``, ``HANGUP``) when AGI()
    returns.
    """

    log = Logger()

    def __init__(
        self,
        switch: SimulatedAsterisk,
        channel: Channel,
        url: str,
        args: Collection[str] = (),
        *,
        caller: ScriptedCaller | None = None,
        sounds: SoundLibrary | None = None,
        then: Callable[[Channel], None] | None = None,
        thread_id: int = _THREAD_ID,
        record: bool = True,
    ) -> None:
        self.switch = switch
        #: keep ``transcript`` (tests); a benchmark does without: each line kept is an
        #: object the garbage collector must traverse until it is old
        self.record = record
        self.clock: IReactorTime = switch.clock
        self.channel = channel
        self.url = url
        self.args = list(args)
        self.caller = caller
        self.sounds = sounds or SoundLibrary()
        self.then = then
        self.thread_id = thread_id
        self.transcript: list[tuple[float, str, bytes]] = []
        self.played: list[str] = []
        self.done: Deferred[str] = Deferred()
        self.status: str | None = None
        self._write: Callable[[bytes], object] | None = None
        self._close: Callable[[], object] | None = None
        self._buffer = b""
        self._running: _Running | None = None
        self._dead = not channel.alive
        self._hangup_sent = False
        #: the channel was Redirected away (AMI): AGI() ends, the dialplan goes on there
        self._moved = False
        channel.hangup_hooks.append(self._channel_hung_up)
        channel.redirect_hooks.append(self._redirected)
        channel.join_hooks.append(self._joined_room)

    def __repr__(self) -> str:
        return f"<AGICall {self.channel.name} {self.url}>"

    # --- the environment ------------------------------------------------------------

    def environment(self) -> list[tuple[str, str]]:
        """The ``agi_*`` block, in Asterisk 22's order (``setup_env``)."""
        ch = self.channel
        parts = urlsplit(self.url)
        script = self.url.split("/", 3)[3] if parts.path not in ("", "/") else None
        env = [("agi_network", "yes")]
        if script is not None:
            env.append(("agi_network_script", script))
        env += [
            ("agi_request", self.url),
            ("agi_channel", ch.name),
            ("agi_language", ch.language),
            ("agi_type", ch.name.split("/", 1)[0]),
            ("agi_uniqueid", ch.uniqueid),
            ("agi_version", AGI_VERSION),
            ("agi_callerid", _unknown(ch.caller_num)),
            ("agi_calleridname", _unknown(ch.caller_name)),
            ("agi_callingpres", "0"),
            ("agi_callingani2", "0"),
            ("agi_callington", "0"),
            ("agi_callingtns", "0"),
            ("agi_dnid", ch.dnid),
            ("agi_rdnis", "unknown"),
            ("agi_context", ch.context),
            ("agi_extension", ch.exten),
            ("agi_priority", str(ch.priority)),
            ("agi_enhanced", "0.0"),
            ("agi_accountcode", ch.account),
            ("agi_threadid", str(self.thread_id)),
        ]
        env += [(f"agi_arg_{i}", arg) for i, arg in enumerate(self.args, 1)]
        return env

    # --- the connection -------------------------------------------------------------

    def connected(self, write: Callable[[bytes], object], close: Callable[[], object]) -> None:
        """The FastAGI server accepted: write the environment block."""
        self._write, self._close = write, close
        for key, value in self.environment():
            self._send(f"{key}: {value}")
        self._send("")
        if self.caller is not None and self.channel.alive:
            self.caller.attach(self, self.clock, self.switch.time_scale)
        if self._dead:
            self._send_hangup()

    def data_received(self, data: bytes) -> None:
        """Bytes from the FastAGI server: execute each complete command line."""
        self._buffer += data
        while b"\n" in self._buffer:
            raw, self._buffer = self._buffer.split(b"\n", 1)
            self._record("a>", raw + b"\n")
            self._line(raw.decode("utf-8", "replace").rstrip("\r"))

    def connection_closed(self) -> None:
        """The server closed (or could not be reached): ``AGI()`` returns."""
        self._write = None
        running, self._running = self._running, None
        if running is not None:
            _cancel_all(running.timers)
        if self.status is None:
            self._end("HANGUP" if self._dead else "SUCCESS")

    def connect_failed(self, reason: Failure) -> None:
        """The server could not be reached: ``AGISTATUS=FAILURE``."""
        self.log.warn(
            "FastAGI {url} unreachable: {reason}", url=self.url, reason=reason.getErrorMessage()
        )
        self._end("FAILURE")

    def _end(self, status: str) -> None:
        self.status = status
        ch = self.channel
        if self._redirected in ch.redirect_hooks:
            ch.redirect_hooks.remove(self._redirected)
        ch.variables["AGISTATUS"] = status
        if ch.alive and not self._moved:
            if self.then is not None:
                self.then(ch)
            else:
                self.switch.hangup(ch, 16)
        if self.caller is not None and not ch.alive:
            self.caller.detach()
        self.done.callback(status)

    def close(self) -> None:
        """Drop the connection from Asterisk's side."""
        if self._close is not None:
            self._close()

    def _record(self, direction: str, data: bytes) -> None:
        if self.record:
            self.transcript.append((self.clock.seconds(), direction, data))

    def _send(self, line: str) -> None:
        data = line.encode("utf-8") + b"\n"
        self._record("a<", data)
        if self._write is not None:
            self._write(data)

    def _send_hangup(self) -> None:
        # AGISIGHUP=yes, the default: one HANGUP line when the channel goes
        if not self._hangup_sent and self._write is not None:
            self._hangup_sent = True
            self._send("HANGUP")

    # --- the caller -----------------------------------------------------------------

    def dtmf(self, digit: str) -> None:
        """A digit from the caller: it reaches the running command, or is lost; once
        the channel left ``AGI()`` for a ConfBridge room, the room's DTMF menu gets it
        (``#11``: ``cb_menu_a`` runs ``cb-dtmf,endb``, whose ``UserEvent`` the daemon
        hears)."""
        ch = self.channel
        if self._moved and ch.room is not None and ch.alive:
            self.switch.dtmf_received(ch, digit)
            return
        running = self._running
        if running is not None and running.on_digit is not None and not self._dead:
            running.on_digit(digit)

    def caller_hangs_up(self) -> None:
        """The caller hung up: the channel goes (cause 16)."""
        ch = self.channel
        if ch.alive:
            self.switch.hangup_far_end(ch, 16) if ch.peer is not None else self.switch.hangup(ch)

    def _joined_room(self) -> None:
        """The channel joined a room: the caller on this call hears it (:data:`ROOM`)."""
        if self.caller is not None and self.caller.attached_to(self):
            self.caller.prompt_started(ROOM)

    def _redirected(self) -> None:
        """An AMI Redirect of the channel (an async goto): res_agi sees a soft hangup,
        writes ``HANGUP`` and goes dead; the channel runs the new place once AGI()
        returns (here at once)."""
        self._moved = True
        if self._channel_hung_up in self.channel.hangup_hooks:
            self.channel.hangup_hooks.remove(self._channel_hung_up)
        # the person is still on the line (keys now go where the channel goes: the
        # room's menu); the caller is let go when the channel hangs up
        self.channel.hangup_hooks.append(self._let_caller_go)
        self._channel_hung_up(keep_caller=True)

    def _let_caller_go(self) -> None:
        if self.caller is not None and self.caller.attached_to(self):
            self.caller.detach()

    def _channel_hung_up(self, keep_caller: bool = False) -> None:
        self._dead = True
        if self.caller is not None and not keep_caller:
            self.caller.detach()
        running = self._running
        if running is not None and running.on_hangup is not None:
            running.on_hangup()  # its -1 reply first, then HANGUP
        elif running is None:
            self._send_hangup()

    # --- commands -------------------------------------------------------------------

    def _line(self, line: str) -> None:
        running, self._running = self._running, None
        if running is not None:
            # res_agi: a line while a command runs interrupts it
            _cancel_all(running.timers)
            if running.on_abort is not None:
                running.on_abort()
        words = parse_args(line)
        upper = [w.upper() for w in words]
        for size in (3, 2, 1):
            key = tuple(upper[:size])
            if len(words) >= size and key in USAGE:
                break
        else:
            self._reply("510 Invalid or unknown command")
            return
        args = words[len(key) :]
        low, high = _ARITY[key]
        if not low <= len(args) <= high:
            self._usage(key)
            return
        if self._dead and key not in _DEAD_OK:
            self._reply("511 Command Not Permitted on a dead channel or intercept routine")
            return
        self._running = _Running()
        getattr(self, "_cmd_" + "_".join(key).lower())(*args)

    def _reply(self, text: str) -> None:
        running, self._running = self._running, None
        if running is not None:
            _cancel_all(running.timers)
            running.clear()
        if self._write is None:
            return
        self._send(text)
        if self._dead:
            self._send_hangup()

    def _usage(self, key: tuple[str, ...]) -> None:
        self._reply(
            "520-Invalid command syntax.  Proper usage follows:\n"
            f" {USAGE[key]}\n520 End of proper usage."
        )

    def _later(self, seconds: float, fn: Callable[[], None]) -> IDelayedCall:
        running = self._running
        assert running is not None
        timer = self.clock.callLater(seconds * self.switch.time_scale, fn)
        running.timers.append(timer)
        return timer

    def _play(self, files: list[str], stop: str, done: Callable[[int, int], None]) -> None:
        """Play ``files`` in order; ``done(result, samples)``: 0, a stop digit's code, -1."""
        running = self._running
        assert running is not None
        playback = _Playback(self, files, stop, done)
        running.on_digit = playback.digit
        running.on_hangup = playback.hung_up
        playback.next_file()

    def _input_started(self) -> None:
        if self.caller is not None:
            self.caller.input_started()

    def _cmd_answer(self) -> None:
        ch = self.channel
        if ch.state != 6:
            ch.state = 6
            self.switch.emit("Newstate", ch.block())
        self._reply("200 result=0")

    def _cmd_hangup(self, name: str = "") -> None:
        target = self.switch.find_channel(name) if name else self.channel
        if target is None:
            self._reply("200 result=-1")
            return
        self._reply("200 result=1")
        self.switch.hangup(target, 16)

    def _cmd_stream_file(self, name: str, escape: str, offset: str = "0") -> None:
        if self.sounds.duration(name) is None:
            self.channel.variables["PLAYBACKSTATUS"] = "FAILED"
            self._reply("200 result=-1 endpos=0")
            return
        self.channel.variables["PLAYBACKSTATUS"] = "SUCCESS"
        if escape:
            self._input_started()
        self._play([name], escape, lambda r, s: self._reply(f"200 result={r} endpos={s}"))

    def _cmd_get_data(self, name: str, timeout: str = "0", most: str = "1024") -> None:
        ms = _leading_int(timeout) or 0
        first, between = (6000, 2000) if ms == 0 else (ms, ms) if ms > 0 else (10**9, 10**9)
        entry = _Entry(self, first, between, max(_leading_int(most) or 1024, 1))
        self._input_started()
        if not name:
            entry.wait(first)
        elif self.sounds.duration(name) is None:
            self._reply("200 result=-1")
        else:
            self._play([name], _ANY, entry.prompt_done)

    def _cmd_wait_for_digit(self, timeout: str) -> None:
        ms = _leading_int(timeout)
        if ms is None:
            self._usage(("WAIT", "FOR", "DIGIT"))
            return
        running = self._running
        assert running is not None
        running.on_digit = lambda d: self._reply(f"200 result={ord(d)}")
        running.on_hangup = lambda: self._reply("200 result=-1")
        running.on_abort = lambda: self._send("200 result=1")
        if ms >= 0:
            self._later(ms / 1000, lambda: self._reply("200 result=0"))
        self._input_started()

    def _say(self, files: list[str], escape: str) -> None:
        if escape:
            self._input_started()
        self._play(files, escape, lambda r, _s: self._reply(f"200 result={r}"))

    def _cmd_say_number(self, number: str, escape: str, gender: str = "") -> None:
        n = _leading_int(number)
        if n is None:
            self._usage(("SAY", "NUMBER"))
            return
        try:
            files = number_files(n, self.channel.language, gender)
        except SayError:
            files = []
        if not files or any(self.sounds.duration(f) is None for f in files):
            # observed: a SAY NUMBER whose files are not installed answers -1
            self._reply("200 result=-1")
            return
        self._say(files, escape)

    def _cmd_say_digits(self, digits: str, escape: str) -> None:
        if _leading_int(digits) is None:
            self._usage(("SAY", "DIGITS"))
            return
        try:
            files = digit_files(digits, self.channel.language)
        except SayError:
            files = []
        # observed: SAY DIGITS skips files that are not installed and answers 0
        self._say([f for f in files if self.sounds.duration(f) is not None], escape)

    def _cmd_set_variable(self, name: str, value: str) -> None:
        if name.upper() == "CHANNEL(LANGUAGE)":
            self.channel.language = value
        else:
            self.switch.setvar(name, value, self.channel)
        self._reply("200 result=1")

    def _variable(self, name: str) -> str | None:
        ch = self.channel
        special = {
            "CALLERID(NUM)": ch.caller_num,
            "CALLERID(NAME)": ch.caller_name,
            "CHANNEL(LANGUAGE)": ch.language,
            "CHANNEL": ch.name,
            "UNIQUEID": ch.uniqueid,
            "EXTEN": ch.exten,
            "CONTEXT": ch.context,
        }
        if name.upper() in special:
            return special[name.upper()]
        return ch.variables.get(name)

    def _cmd_get_variable(self, name: str) -> None:
        value = self._variable(name)
        self._reply("200 result=0" if value is None else f"200 result=1 ({value})")

    def _cmd_get_full_variable(self, expression: str, _channel: str = "") -> None:
        text = expression
        while "${" in text:
            start = text.index("${")
            end = text.find("}", start)
            if end < 0:
                break
            text = text[:start] + (self._variable(text[start + 2 : end]) or "") + text[end + 1 :]
        self._reply(f"200 result=1 ({text})")

    def _cmd_exec(self, application: str, *data: str) -> None:
        app = application.lower()
        arg = ",".join(data)
        ch = self.channel
        if app == "wait":
            running = self._running
            assert running is not None
            running.on_hangup = lambda: self._reply("200 result=-1")
            self._later(float(_leading_int(arg) or 0), lambda: self._reply("200 result=0"))
        elif app == "playback":
            files = [f for f in arg.split(",", 1)[0].split("&") if f]
            self._play(
                [f for f in files if self.sounds.duration(f) is not None],
                "",
                lambda r, _s: self._reply(f"200 result={min(r, 0)}"),
            )
        elif app in ("answer", "ringing", "progress", "noop", "set", "playtones", "stopplaytones"):
            if app == "answer":
                self._cmd_answer()
                return
            if app == "set" and "=" in arg:
                name, _, value = arg.partition("=")
                self.switch.setvar(name, value, ch)
            self._reply("200 result=0")
        elif app in ("hangup", "busy", "congestion"):
            cause = {"hangup": _leading_int(arg) or 16, "busy": 17, "congestion": 34}[app]
            self._reply("200 result=-1")
            self.switch.hangup(ch, cause)
        else:
            self.log.warn("simulated FastAGI: no application {app}", app=application)
            self._reply("200 result=-2")

    def _cmd_verbose(self, message: str, level: str = "1") -> None:
        self._reply("200 result=1")

    def _cmd_noop(self, *_words: str) -> None:
        self._reply("200 result=0")

    def _cmd_channel_status(self, name: str = "") -> None:
        target = self.switch.find_channel(name) if name else self.channel
        self._reply("200 result=-1" if target is None else f"200 result={target.state}")


def _unknown(value: str) -> str:
    return "unknown" if value in ("", "<unknown>") else value


def _cancel_all(timers: list[IDelayedCall]) -> None:
    for timer in timers:
        if timer.active():
            timer.cancel()


class _FastAGIClientProtocol(Protocol):
    """Carries one :class:`AGICall`'s bytes."""

    def __init__(self, call: AGICall) -> None:
        self.call = call

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.call.connected(self.transport.write, self.transport.loseConnection)

    def dataReceived(self, data: bytes) -> None:
        self.call.data_received(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.call.connection_closed()


class SimulatedFastAGI:
    """The switch's ``AGI()``: runs FastAGI sessions of simulated channels over TCP.

    ``address(host, port)`` may redirect a URL's address (the daemon's FastAGI server
    listens on a port known only once it runs). ``callers`` maps a dialled number to
    the person who answers there: a leg originated to it runs its AGI with that
    :class:`ScriptedCaller`. ``calls`` lists every AGI run, oldest first; ``record``
    False keeps no transcripts (a benchmark's many calls).
    """

    log = Logger()

    def __init__(
        self,
        switch: SimulatedAsterisk,
        reactor: Any,
        *,
        sounds: SoundLibrary | None = None,
        address: Callable[[str, int], tuple[str, int]] | None = None,
        callers: dict[str, ScriptedCaller] | None = None,
        record: bool = True,
    ) -> None:
        self.switch = switch
        self.reactor = reactor
        self.record = record
        self.sounds = sounds or SoundLibrary()
        self.address = address
        self.callers: dict[str, ScriptedCaller] = {} if callers is None else callers
        self.calls: list[AGICall] = []
        self._threads = itertools.count(_THREAD_ID)

    def add_extension(
        self,
        context: str,
        exten: str,
        url: str,
        *,
        args: Collection[str] = (),
        then: Callable[[Channel], None] | None = None,
    ) -> None:
        """An answered channel sent to ``context,exten`` runs ``AGI(url,args...)``.

        ``${NAME}`` in ``url`` and ``args`` is the channel's variable (or ``CHANNEL``,
        ``UNIQUEID``, ``EXTEN``), as the dialplan expands it. ``then(channel)`` is the
        dialplan after ``AGI()`` (default: ``Hangup()``).
        """

        def enter(ch: Channel) -> None:
            self.run(
                ch,
                _expand(url, ch),
                [_expand(a, ch) for a in args],
                caller=self.callers.get(ch.dialled),
                then=then,
            )

        self.switch.dialplan_hooks[(context, exten)] = enter

    def inbound_call(
        self,
        caller_id: str,
        dialled_number: str,
        script_url: str,
        *,
        caller: ScriptedCaller | None = None,
        args: Collection[str] = (),
        context: str = "cb-access",
        language: str = "en",
        then: Callable[[Channel], None] | None = None,
    ) -> AGICall:
        """A call from ``caller_id`` to the access number ``dialled_number`` runs
        ``AGI(script_url)`` before it is answered (it rings until the script answers)."""
        ch = self.switch.inbound_channel(caller_id, dialled_number, context)
        ch.language = language
        return self.run(ch, script_url, args, caller=caller, then=then)

    def run(
        self,
        ch: Channel,
        url: str,
        args: Collection[str] = (),
        *,
        caller: ScriptedCaller | None = None,
        then: Callable[[Channel], None] | None = None,
    ) -> AGICall:
        """Run ``AGI(url,args...)`` on ``ch`` now."""
        ch.application, ch.app_data = "AGI", ",".join([url, *args])
        call = AGICall(
            self.switch,
            ch,
            url,
            args,
            caller=caller,
            sounds=self.sounds,
            then=then,
            thread_id=next(self._threads),
            record=self.record,
        )
        self.calls.append(call)
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 4573
        if self.address is not None:
            host, port = self.address(host, port)
        endpoint = TCP4ClientEndpoint(self.reactor, host, port, timeout=CONNECT_TIMEOUT)
        d = connectProtocol(endpoint, _FastAGIClientProtocol(call))
        d.addErrback(call.connect_failed)
        return call


def _expand(text: str, ch: Channel) -> str:
    """``${NAME}`` replaced as the dialplan does (an unset variable is empty)."""
    special = {"CHANNEL": ch.name, "UNIQUEID": ch.uniqueid, "EXTEN": ch.exten}
    out = text
    while "${" in out:
        start = out.index("${")
        end = out.find("}", start)
        if end < 0:
            break
        name = out[start + 2 : end]
        out = out[:start] + special.get(name, ch.variables.get(name, "")) + out[end + 1 :]
    return out
