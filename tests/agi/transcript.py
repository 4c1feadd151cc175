"""The real Asterisk 22 FastAGI session (``fastagi-ivr.log``), back into wire bytes.

Every line of the file is ``<epoch> a< b'<bytes from Asterisk>'`` or ``<epoch> a>
b'<bytes to Asterisk>'``, the bytes a Python literal with FastAGI's LF line end.
"""

from __future__ import annotations

import ast
import re
from functools import cache

from tests.ami.fixtures import fixture_path

__all__ = ["ASTERISK", "SCRIPT", "asterisk_bytes", "lines", "script_bytes"]

ASTERISK = "a<"
SCRIPT = "a>"
NAME = "fastagi-ivr.log"

_LINE = re.compile(r"^(\d+\.\d+) (a[<>]) (b'.*')$")


@cache
def lines() -> tuple[tuple[float, str, bytes], ...]:
    """``(epoch, direction, bytes)`` per logged line, in order."""
    out = []
    for number, line in enumerate(fixture_path(NAME).read_text().splitlines(), 1):
        match = _LINE.match(line)
        if match is None:
            raise ValueError(f"{NAME} line {number} is not a wire-log line: {line[:60]!r}")
        out.append((float(match.group(1)), match.group(2), ast.literal_eval(match.group(3))))
    return tuple(out)


def asterisk_bytes() -> bytes:
    """Every byte Asterisk sent, in order."""
    return b"".join(data for _, direction, data in lines() if direction == ASTERISK)


def script_bytes() -> bytes:
    """Every byte the script sent, in order."""
    return b"".join(data for _, direction, data in lines() if direction == SCRIPT)
