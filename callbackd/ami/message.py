"""AMI messages: ordered key/value pairs, their wire form and an incremental parser.

A message keeps every header in order, repeated keys included (``Variable``,
``ChanVariable``, ``Output`` repeat on the wire), and looks keys up
case-insensitively, first occurrence winning, as Asterisk itself does.
Outgoing keys and values are validated before anything is written: a CR, LF or
NUL in a value would end the header and could start a new action (header
injection, docs/asterisk.rst, "AMI header injection").
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator

__all__ = [
    "MAX_LINE",
    "AMIInjectionError",
    "Message",
    "MessageParser",
    "encode_message",
    "encode_text",
    "validate_pair",
]

#: Asterisk discards lines of 1024 bytes or more; stay well below.
MAX_LINE = 1000

_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_FORBIDDEN = re.compile(r"[\r\n\x00]")


class AMIInjectionError(ValueError):
    """A key or value would change the meaning of the AMI message it is part of."""


class Message:
    """One AMI message: an ordered list of ``(key, value)`` pairs.

    Lookups go through an index (lower-case key -> first value) built once, on
    the first lookup; hot paths read :meth:`headers` directly.
    """

    __slots__ = ("_index", "pairs")

    def __init__(self, pairs: Iterable[tuple[str, str]] = ()) -> None:
        self.pairs: list[tuple[str, str]] = list(pairs)
        self._index: dict[str, str] | None = None

    @classmethod
    def action(cls, name: str, *pairs: tuple[str, str], **headers: str) -> Message:
        """An action message: ``Action: name`` followed by the given headers."""
        return cls([("Action", name), *pairs, *headers.items()])

    def _lookup(self) -> dict[str, str]:
        index = self._index
        if index is None:
            index = {}
            # back to front, so that the first occurrence of a key wins
            for key, value in reversed(self.pairs):
                index[key.lower()] = value
            self._index = index
        return index

    def headers(self) -> dict[str, str]:
        """Lower-case key -> first value, built once; shared with the message: read only."""
        return self._index or self._lookup()

    def find(self, key: str, default: str | None = None) -> str | None:
        """:meth:`get` by a scan from the start that builds no index.

        Cheaper when one header is wanted of a message and it comes early.
        """
        if self._index is not None:
            return self._index.get(key.lower(), default)
        low = key.lower()
        for k, v in self.pairs:
            if k.lower() == low:
                return v
        return default

    def get(self, key: str, default: str | None = None) -> str | None:
        """The first value of ``key`` (case-insensitive), or ``default``."""
        return (self._index or self._lookup()).get(key.lower(), default)

    def __getitem__(self, key: str) -> str:
        value = (self._index or self._lookup()).get(key.lower())
        if value is None:
            raise KeyError(key)
        return value

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in (self._index or self._lookup())

    def get_all(self, key: str) -> list[str]:
        """Every value of ``key``, in order."""
        low = key.lower()
        return [v for k, v in self.pairs if k.lower() == low]

    def append(self, key: str, value: str) -> None:
        """Add one header at the end."""
        self.pairs.append((key, value))
        self._index = None

    @property
    def kind(self) -> str:
        """``"Response"``, ``"Event"`` or ``"Action"``: the first header's key."""
        return self.pairs[0][0] if self.pairs else ""

    @property
    def name(self) -> str:
        """The first header's value: the event name, response status or action name."""
        return self.pairs[0][1] if self.pairs else ""

    @property
    def is_event(self) -> bool:
        return self.kind.lower() == "event"

    @property
    def is_response(self) -> bool:
        return self.kind.lower() == "response"

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self.pairs)

    def __len__(self) -> int:
        return len(self.pairs)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Message) and other.pairs == self.pairs

    def __hash__(self) -> int:
        return hash(tuple(self.pairs))

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{k}: {'********' if k.lower() in ('secret', 'key') else v}" for k, v in self.pairs
        )
        return f"Message({shown})"

    def to_dict(self) -> dict[str, str]:
        """A plain dict of first values (for logging and tests; loses repeats)."""
        return dict(reversed(self.pairs)) if self.pairs else {}


def validate_pair(key: str, value: str) -> None:
    """Refuse a header that could split or end the message it is written into."""
    if not _KEY.match(key):
        raise AMIInjectionError(f"AMI header name {key!r} is not [A-Za-z0-9_-]+")
    if _FORBIDDEN.search(value):
        raise AMIInjectionError(f"AMI header {key} has a CR, LF or NUL in its value")
    if len(key) + len(value) + 4 > MAX_LINE:
        raise AMIInjectionError(f"AMI header {key} is longer than {MAX_LINE} bytes")


#: header names that passed :func:`validate_pair` (our actions use a few dozen)
_VALID_KEYS: set[str] = set()
_MAX_VALID_KEYS = 1024


def encode_text(pairs: list[tuple[str, str]]) -> str:
    """The wire text of ``pairs``, validated as :func:`validate_pair` does.

    The whole text is checked at once: it has one CR, one LF per line and no
    NUL exactly when no key or value holds any, and no line can be longer than
    the text. Keys are checked against the ones that passed before. Only a
    message that fails a check is validated pair by pair, for the error (or
    because a long text may still have only short lines).
    """
    if not pairs:
        return "\r\n"
    text = "\r\n".join(map(": ".join, pairs)) + "\r\n\r\n"
    lines = len(pairs) + 1
    if (
        len(text) > MAX_LINE
        or text.count("\n") != lines
        or text.count("\r") != lines
        or "\0" in text
        or not _VALID_KEYS.issuperset(dict(pairs))
    ):
        for key, value in pairs:
            validate_pair(key, value)
        if len(_VALID_KEYS) < _MAX_VALID_KEYS:
            _VALID_KEYS.update(key for key, _ in pairs)
    return text


def encode_message(message: Message | Iterable[tuple[str, str]]) -> bytes:
    """The wire form of a message, every pair validated first."""
    pairs = message.pairs if isinstance(message, Message) else list(message)
    return encode_text(pairs).encode("utf-8")


#: longer lines are rarely repeated: split them, don't keep them
_CACHED_LINE = 200


class _BareLineFeed(Exception):
    """A line cut at CR LF still holds a LF: the text has bare-LF line ends."""


class _HeaderCache(dict[str, tuple[str, str]]):
    """Received line -> ``(key, value)``, filled on lookup.

    Most AMI lines repeat within a session (``Privilege: call,all``,
    ``Language: en``, ``CallerIDNum: <unknown>`` ...): looking them up is much
    cheaper than splitting them again. Bounded: the parser empties it when full.
    A line holding a LF is refused (:class:`_BareLineFeed`): it was cut at CR LF
    from text that also has bare LF line ends, which must be cut again at LF.
    """

    __slots__ = ()
    max_entries = 4096

    def __missing__(self, line: str) -> tuple[str, str]:
        if "\n" in line:
            raise _BareLineFeed()
        key, sep, value = line.partition(":")
        # a line without a colon (an old "Response: Follows" body line) is kept as text
        pair = (key, value.removeprefix(" ")) if sep else ("", line)
        if len(line) <= _CACHED_LINE:
            self[line] = pair
        return pair


class MessageParser:
    """Split a byte stream into AMI messages, tolerant of bare LF line ends.

    Feed it whatever TCP delivers: bytes are kept until a blank line ends a
    message, then every complete message is parsed in one go. ``banner`` is
    True while the first line (the unframed ``Asterisk Call Manager/x.y.z``
    banner) is still expected. An unfinished message longer than
    ``max_buffer`` bytes is garbage and is dropped rather than kept growing.
    """

    def __init__(self, banner: bool = False, max_buffer: int = 1 << 20) -> None:
        self._buffer = b""
        self.expect_banner = banner
        self.banner: str | None = None
        self.max_buffer = max_buffer
        self._cache = _HeaderCache()

    def feed(self, data: bytes) -> list[Message]:
        """Parse ``data`` and return the messages it completed."""
        kept = self._buffer
        if kept:
            buf = kept + data
            # a blank line can only end in the new bytes: search those and 2 before
            start = len(kept) - 2 if len(kept) > 2 else 0
        else:
            buf = data
            start = 0
        if self.expect_banner:
            newline = buf.find(b"\n")
            if newline < 0:
                self._buffer = buf if len(buf) <= self.max_buffer else b""
                return []
            line = buf[:newline].decode("utf-8", "replace")
            self.banner = line[:-1] if line.endswith("\r") else line
            self.expect_banner = False
            buf = buf[newline + 1 :]
            start = 0
        # A message ends at a blank line: "\n\n" or "\n\r\n".
        crlf = buf.rfind(b"\n\r\n", start)
        lf = buf.rfind(b"\n\n", start)
        if crlf < 0 and lf < 0:
            self._buffer = buf if len(buf) <= self.max_buffer else b""
            return []
        end = crlf + 3 if crlf + 3 > lf + 2 else lf + 2
        rest = buf[end:]
        self._buffer = rest if len(rest) <= self.max_buffer else b""
        # Decoding many lines at once is safe: b"\n" is never part of a multi-byte
        # sequence, so no decoding error spans two lines.
        text = buf[:end].decode("utf-8", "replace")
        cache = self._cache
        if len(cache) >= cache.max_entries:
            cache.clear()
        header = cache.__getitem__
        try:
            return self._split_crlf(text, header)
        except _BareLineFeed:
            return self._split_lf(text, header)

    @staticmethod
    def _split_crlf(text: str, header: Callable[[str], tuple[str, str]]) -> list[Message]:
        """Messages of text whose lines all end in CR LF (what Asterisk writes).

        A blank line is then always "\r\n\r\n". Cut left to right, an odd run of
        blank lines leaves one "\r\n" in front of the next piece, never more, and
        text ends with a blank line, so every piece is a whole message or empty. A
        bare LF anywhere leaves a "\n" inside some line, which the cache refuses.
        """
        return [
            Message(map(header, piece.split("\r\n")))
            for raw in text.split("\r\n\r\n")
            if (piece := raw.removeprefix("\r\n"))
        ]

    @staticmethod
    def _split_lf(text: str, header: Callable[[str], tuple[str, str]]) -> list[Message]:
        """Messages of text with bare LF line ends (some or all)."""
        text = text.replace("\r\n", "\n")
        # With a "\n" in front every blank line shows as "\n\n", and text ends with
        # one, so every piece is a whole message (or empty, between blank lines).
        return [
            Message(map(header, piece.split("\n")))
            for raw in ("\n" + text).split("\n\n")
            if (piece := raw.strip("\n"))
        ]
