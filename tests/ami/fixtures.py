"""The real Asterisk 22 AMI transcripts, turned back into the bytes that crossed the wire.

Two formats live in ``fixtures/asterisk22/``:

* ``ami-*.log`` (all but option-b): blocks that start with ``<<< `` (from Asterisk) or
  ``>>> `` (to Asterisk) at the beginning of a line; a block runs until the next
  prefix and may hold several messages. The files keep the ``\\r\\n`` line ends, so
  a block minus its prefix is exactly what one side wrote.
* ``ami-option-b-dial.log``: one AMI line per log line, ``<ts> m< b'<line>'`` with the
  line as a Python bytes literal without its ``\\r\\n``; ``m>`` lines hold a whole
  action, line ends included.
"""

from __future__ import annotations

import ast
import os
import re
from functools import cache
from pathlib import Path

__all__ = [
    "FIXTURES",
    "SERVER",
    "CLIENT",
    "ami_logs",
    "client_bytes",
    "fixture_path",
    "segments",
    "server_bytes",
    "with_action_ids",
]

#: where the transcripts live (override with ``CALLBACKD_FIXTURES``)
FIXTURES = Path(
    os.environ.get(
        "CALLBACKD_FIXTURES",
        Path(__file__).resolve().parents[1] / "fixtures" / "asterisk22",
    )
)

SERVER = "<<<"
CLIENT = ">>>"

_BLOCK = re.compile(rb"^(<<<|>>>) ", re.MULTILINE)
_WIRE_LINE = re.compile(r"^\S+ m([<>]) (b(['\"]).*\3)$")


def fixture_path(name: str) -> Path:
    """The path of one transcript."""
    return FIXTURES / name


def ami_logs() -> list[str]:
    """Names of every AMI ``.log`` transcript, sorted (there must be some)."""
    names = sorted(p.name for p in FIXTURES.glob("ami-*.log"))
    if not names:
        raise FileNotFoundError(f"no AMI transcripts in {FIXTURES} (set CALLBACKD_FIXTURES)")
    return names


@cache
def segments(name: str) -> tuple[tuple[str, bytes], ...]:
    """The transcript as ``(direction, bytes)`` segments, ``SERVER`` or ``CLIENT``.

    For the block format one segment is one block (roughly one TCP write); for the
    wire-log format one segment is the run of consecutive lines logged in the same
    direction with the same timestamp (what one read returned, as far as the log
    tells), with ``\\r\\n`` restored on ``m<`` lines.
    """
    raw = fixture_path(name).read_bytes()
    if _BLOCK.match(raw):
        return _block_segments(raw)
    return _wire_log_segments(raw.decode("utf-8"))


def _block_segments(raw: bytes) -> tuple[tuple[str, bytes], ...]:
    parts = _BLOCK.split(raw)
    # split() with one group gives ["", dir, body, dir, body, ...]
    if parts[0]:
        raise ValueError("transcript does not start with a direction prefix")
    out = []
    for i in range(1, len(parts), 2):
        out.append((parts[i].decode(), parts[i + 1]))
    return tuple(out)


def _wire_log_segments(text: str) -> tuple[tuple[str, bytes], ...]:
    out: list[tuple[str, bytes]] = []
    previous: tuple[str, str] | None = None
    for number, line in enumerate(text.splitlines(), 1):
        match = _WIRE_LINE.match(line)
        if match is None:
            raise ValueError(f"line {number} is not a wire-log line: {line[:60]!r}")
        stamp = line.split(" ", 1)[0]
        data = ast.literal_eval(match.group(2))
        direction = SERVER if match.group(1) == "<" else CLIENT
        if direction == SERVER:
            data += b"\r\n"
        if previous == (direction, stamp):
            out[-1] = (direction, out[-1][1] + data)
        else:
            out.append((direction, data))
        previous = (direction, stamp)
    return tuple(out)


def server_bytes(name: str) -> bytes:
    """Every byte Asterisk sent in that transcript, in order."""
    return b"".join(data for direction, data in segments(name) if direction == SERVER)


def client_bytes(name: str) -> bytes:
    """Every byte the client sent in that transcript, in order."""
    return b"".join(data for direction, data in segments(name) if direction == CLIENT)


def with_action_ids(data: bytes, mapping: dict[str, str]) -> bytes:
    """``data`` with the transcript's ActionIDs replaced (e.g. by the ones a test client chose)."""
    for old, new in mapping.items():
        data = data.replace(f"ActionID: {old}\r\n".encode(), f"ActionID: {new}\r\n".encode())
    return data
