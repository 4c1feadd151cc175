"""FastAGI's wire format, sans I/O: the environment block, replies, command lines.

Asterisk opens the connection and writes ``agi_name: value`` lines ending in a bare
LF, then one empty line (the environment block); then the script writes one command
line and Asterisk answers it with one reply: ``200 result=<r>[ (<data>)][ endpos=<n>]``,
``510 ...``, ``511 ...``, ``520 ...`` or the multi-line usage reply that starts
``520-`` and ends at a line starting ``520 ``. A bare ``HANGUP`` line may arrive
between replies: it tells that the channel hung up and answers no command
(docs/asterisk.rst, "FastAGI").

:class:`AGIParser` turns whatever bytes TCP delivers into those events; it raises
nothing but :class:`AGIProtocolError`. :func:`quote` and :func:`format_command`
build command lines and refuse a CR, LF or NUL, which would end the line early and
start another command.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

__all__ = [
    "HANGUP",
    "MAX_ENVIRONMENT_LINES",
    "MAX_LINE",
    "AGIArgumentError",
    "AGIEnvironmentParser",
    "AGIParser",
    "AGIProtocolError",
    "Bare",
    "Hangup",
    "ParsedEvent",
    "Reply",
    "format_command",
    "parse_reply_line",
    "quote",
]

#: a line longer than this (without its LF) is not FastAGI (Asterisk's own buffers
#: hold 2048 bytes for a command and a few hundred for an environment line)
MAX_LINE: Final = 8192
#: an environment block has some 25 lines, plus one per ``AGI()`` argument
MAX_ENVIRONMENT_LINES: Final = 200

_ENV_KEY = re.compile(r"agi_[A-Za-z0-9_]+")
_CODE = re.compile(r"^([0-9]{3})([ -])(.*)$", re.DOTALL)
# result=<r>[ (<data>)][ endpos=<n>]; the data runs to the last ")" (it may hold both)
_RESULT = re.compile(r"^result=(\S*)(?: \((.*)\))?(?: endpos=(-?[0-9]+))?\s*$", re.DOTALL)
_FORBIDDEN = re.compile(r"[\r\n\x00]")
_BARE = re.compile(r"[A-Za-z0-9_()./:@+*#,-]+")
_COMMAND = re.compile(r"[A-Za-z]+(?: [A-Za-z]+)*")


class AGIProtocolError(ValueError):
    """The bytes from Asterisk are not FastAGI: a garbage environment or reply line."""


class AGIArgumentError(ValueError):
    """A command argument holds a CR, LF or NUL (or a bare word holds a blank or quote)."""


@dataclass(frozen=True, slots=True)
class Reply:
    """One reply to a command.

    ``result`` is the text after ``result=`` (``"-1"``, ``"0"``, ``"1234"``, ``""``),
    ``data`` the text in parentheses (``"timeout"``, a variable's value), ``endpos``
    the sample offset ``STREAM FILE`` reached, ``text`` the whole reply without line
    ends (the lines of a multi-line reply joined by ``"\\n"``). For a 5xx reply
    ``result`` is ``""`` and ``data`` None.
    """

    code: int
    result: str
    data: str | None
    endpos: int | None
    text: str

    @property
    def ok(self) -> bool:
        """True for a ``200`` reply whose result is not negative (-1 failure, -2 no app)."""
        return self.code == 200 and not self.result.startswith("-")

    def result_int(self) -> int | None:
        """The result as an integer, or None when it is not one (``"12#"``, ``""``)."""
        try:
            return int(self.result)
        except ValueError:
            return None


class Hangup:
    """The bare ``HANGUP`` line: the channel hung up (no command is answered by it)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "HANGUP"


#: the one :class:`Hangup` the parser yields
HANGUP: Final = Hangup()

#: what :meth:`AGIParser.feed` yields: the environment first, then replies and hangups
ParsedEvent = dict[str, str] | Reply | Hangup


def parse_reply_line(line: str) -> Reply:
    """One single-line reply (``200 result=...``, ``510 ...``); AGIProtocolError if not one."""
    match = _CODE.match(line)
    if match is None or match.group(2) != " ":
        raise AGIProtocolError(f"not a FastAGI reply: {line[:80]!r}")
    code = int(match.group(1))
    if code != 200:
        return Reply(code, "", None, None, line)
    rest = match.group(3)
    found = _RESULT.match(rest)
    if found is not None:
        result, data, endpos = found.groups()
        return Reply(200, result, data, int(endpos) if endpos is not None else None, line)
    # "200 result=0 something unforeseen": keep the result word, drop the rest
    if rest.startswith("result="):
        return Reply(200, rest[7:].split(" ", 1)[0], None, None, line)
    return Reply(200, "", None, None, line)


class AGIParser:
    """Turns the bytes Asterisk writes into the environment, replies and hangups.

    :meth:`feed` takes any chunk (a byte at a time, several replies at once) and
    returns the events its complete lines make: first the environment as a dict
    (keys as sent, ``"agi_request"``), then :class:`Reply` objects and :data:`HANGUP`.
    Bytes that cannot be FastAGI raise :class:`AGIProtocolError`, and every later
    feed raises it again: the connection must be closed.
    """

    def __init__(
        self, *, max_line: int = MAX_LINE, max_environment: int = MAX_ENVIRONMENT_LINES
    ) -> None:
        self.max_line = max_line
        self.max_environment = max_environment
        self._buffer = b""
        self._env: dict[str, str] | None = {}
        #: lines of a multi-line reply so far, and its code
        self._multi: list[str] = []
        self._multi_code = ""
        self._error: AGIProtocolError | None = None

    @property
    def in_environment(self) -> bool:
        """True until the environment block's empty line has been read."""
        return self._env is not None

    def feed(self, data: bytes) -> list[ParsedEvent]:
        """The events completed by ``data``; AGIProtocolError on bytes that are not FastAGI."""
        if self._error is not None:
            raise self._error
        try:
            return self._feed(data)
        except AGIProtocolError as error:
            self._error = error
            self._buffer = b""
            raise

    def _feed(self, data: bytes) -> list[ParsedEvent]:
        buf = self._buffer + data if self._buffer else data
        events: list[ParsedEvent] = []
        start = 0
        while True:
            end = buf.find(b"\n", start)
            if end < 0:
                break
            if end - start > self.max_line:
                raise AGIProtocolError(f"a line of more than {self.max_line} bytes")
            # Asterisk writes bare LF; a CR before it (a hand-typed test) is tolerated
            raw = buf[start:end]
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            self._line(raw.decode("utf-8", "replace"), events)
            start = end + 1
        rest = buf[start:]
        if len(rest) > self.max_line:
            raise AGIProtocolError(f"a line of more than {self.max_line} bytes")
        self._buffer = rest
        return events

    def _line(self, line: str, events: list[ParsedEvent]) -> None:
        env = self._env
        if env is not None:
            self._environment_line(env, line, events)
        elif self._multi:
            if len(self._multi) >= self.max_environment:
                raise AGIProtocolError(f"a {self._multi_code}- reply of too many lines")
            self._multi.append(line)
            if line.startswith(self._multi_code + " "):
                lines, self._multi = self._multi, []
                events.append(Reply(int(self._multi_code), "", None, None, "\n".join(lines)))
        elif line == "HANGUP":
            events.append(HANGUP)
        else:
            match = _CODE.match(line)
            if match is not None and match.group(2) == "-":
                self._multi, self._multi_code = [line], match.group(1)
                return
            events.append(parse_reply_line(line))

    def _environment_line(self, env: dict[str, str], line: str, events: list[ParsedEvent]) -> None:
        if not line:
            if not env:
                raise AGIProtocolError("an empty line before any agi_* variable")
            self._env = None
            events.append(env)
            return
        # split on the first ": " only: values hold colons (agi_request: agi://...)
        key, sep, value = line.partition(": ")
        if not sep and line.endswith(":"):
            key, sep, value = line[:-1], ":", ""
        if not sep or not _ENV_KEY.fullmatch(key):
            raise AGIProtocolError(f"not an agi_* environment line: {line[:80]!r}")
        if len(env) >= self.max_environment:
            raise AGIProtocolError(f"more than {self.max_environment} environment lines")
        env[key] = value


#: the name the FastAGI server's API is known by
AGIEnvironmentParser = AGIParser


class Bare(str):
    """A command word sent as it is: a variable or application name, a channel.

    Only letters, digits and ``_()./:@+*#,-`` are allowed, so nothing in it needs
    quoting; anything else raises :class:`AGIArgumentError`.
    """

    __slots__ = ()

    def __new__(cls, word: str) -> Bare:
        if not _BARE.fullmatch(word):
            raise AGIArgumentError(f"not a bare AGI word: {word!r}")
        return super().__new__(cls, word)


def quote(arg: str) -> str:
    """``arg`` as one AGI argument: in double quotes, ``"`` and ``\\`` escaped.

    Asterisk's ``parse_args`` takes ``"..."`` as one argument and ``\\`` as an escape
    of the next character; ``""`` is the empty argument. A CR, LF or NUL raises
    :class:`AGIArgumentError`: it would end the command line.
    """
    if _FORBIDDEN.search(arg):
        raise AGIArgumentError("an AGI argument may not hold a CR, LF or NUL")
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_command(command: str, *args: str | int) -> bytes:
    """One command line: ``command`` (words of letters), then each argument, LF-ended.

    Integers and :class:`Bare` words go as they are, every other string through
    :func:`quote`: ``format_command("STREAM FILE", "welcome", "#")`` is
    ``b'STREAM FILE "welcome" "#"\\n'``.
    """
    if not _COMMAND.fullmatch(command):
        raise AGIArgumentError(f"not an AGI command: {command!r}")
    words = [command]
    for arg in args:
        if isinstance(arg, bool):
            raise AGIArgumentError("a bool is not an AGI argument")
        if isinstance(arg, int):
            words.append(str(arg))
        elif isinstance(arg, Bare):
            words.append(str.__str__(arg))
        else:
            words.append(quote(arg))
    try:
        return (" ".join(words) + "\n").encode("utf-8")
    except UnicodeEncodeError as error:  # a lone surrogate
        raise AGIArgumentError(f"an AGI argument is not UTF-8: {error.reason}") from None
