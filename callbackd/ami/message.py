"""AMI messages: ordered key/value pairs, their wire form and an incremental parser.

A message keeps every header in order, repeated keys included (``Variable``,
``ChanVariable``, ``Output`` repeat on the wire), and looks keys up
case-insensitively, first occurrence winning, as Asterisk itself does.
Outgoing keys and values are validated before anything is written: a CR, LF or
NUL in a value would end the header and could start a new action (header
injection, ASTERISK.md §6.1).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

__all__ = [
    "MAX_LINE",
    "AMIInjectionError",
    "Message",
    "MessageParser",
    "encode_message",
    "validate_pair",
]

#: Asterisk discards lines of 1024 bytes or more; stay well below.
MAX_LINE = 1000

_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_FORBIDDEN = re.compile(r"[\r\n\x00]")


class AMIInjectionError(ValueError):
    """A key or value would change the meaning of the AMI message it is part of."""


class Message:
    """One AMI message: an ordered list of ``(key, value)`` pairs."""

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
            for k, v in self.pairs:
                index.setdefault(k.lower(), v)
            self._index = index
        return index

    def get(self, key: str, default: str | None = None) -> str | None:
        """The first value of ``key`` (case-insensitive), or ``default``."""
        return self._lookup().get(key.lower(), default)

    def __getitem__(self, key: str) -> str:
        value = self._lookup().get(key.lower())
        if value is None:
            raise KeyError(key)
        return value

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._lookup()

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


def encode_message(message: Message | Iterable[tuple[str, str]]) -> bytes:
    """The wire form of a message, every pair validated first."""
    out = []
    for key, value in message:
        validate_pair(key, value)
        out.append(f"{key}: {value}\r\n")
    out.append("\r\n")
    return "".join(out).encode("utf-8")


class MessageParser:
    """Split a byte stream into AMI messages, tolerant of bare LF line ends.

    Feed it whatever TCP delivers: partial lines are kept until the rest
    arrives. ``banner`` is True while the first line (the unframed
    ``Asterisk Call Manager/x.y.z`` banner) is still expected.
    """

    def __init__(self, banner: bool = False, max_buffer: int = 1 << 20) -> None:
        self._buffer = b""
        self._pairs: list[tuple[str, str]] = []
        self.expect_banner = banner
        self.banner: str | None = None
        self.max_buffer = max_buffer

    def feed(self, data: bytes) -> list[Message]:
        """Parse ``data`` and return the messages it completed."""
        buf = self._buffer + data if self._buffer else data
        lines = buf.split(b"\n")
        self._buffer = lines.pop()
        if len(self._buffer) > self.max_buffer:
            # A line this long is garbage; drop it rather than grow without bound.
            self._buffer = b""
        out: list[Message] = []
        pairs = self._pairs
        for raw in lines:
            line = raw.decode("utf-8", "replace")
            if line.endswith("\r"):
                line = line[:-1]
            if self.expect_banner:
                self.expect_banner = False
                self.banner = line
                continue
            if not line:
                if pairs:
                    out.append(Message(pairs))
                    pairs = []
                continue
            key, sep, value = line.partition(":")
            if not sep:
                # Not a header (e.g. an old "Response: Follows" body line): keep it as text.
                pairs.append(("", line))
                continue
            if value.startswith(" "):
                value = value[1:]
            pairs.append((key, value))
        self._pairs = pairs
        return out
