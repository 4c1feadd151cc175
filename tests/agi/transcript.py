"""The real Asterisk 22 FastAGI session (``fastagi-ivr.log``), back into wire bytes.

Every line of the file is ``<epoch> a< b'<bytes from Asterisk>'`` or ``<epoch> a>
b'<bytes to Asterisk>'``, the bytes a Python literal with FastAGI's LF line end.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from typing import Any

from tests.ami.fixtures import fixture_path

__all__ = [
    "ASTERISK",
    "DIALOGUE_RESULTS",
    "SCRIPT",
    "asterisk_bytes",
    "lines",
    "script_bytes",
    "transcript_dialogue",
]

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


async def transcript_dialogue(channel: Any) -> list[Any]:
    """The script side of the recorded session, through the AGIChannel API.

    Returns what each command gave (the failed ``SAY NUMBER`` and the unknown command
    as the code of their AGICommandFailed).
    """
    from callbackd.agi.server import AGICommandFailed

    results: list[Any] = []
    await channel.answer()
    await channel.set_language("en")
    results.append(await channel.stream_file("callbackd/welcome", "0123456789*#"))
    results.append(await channel.get_data("callbackd/enter-pin", 5000, 8))
    try:
        await channel.say_number(1234)
    except AGICommandFailed as failure:
        results.append(failure.reply.text)
    results.append(await channel.say_digits("15551234"))
    results.append(await channel.get_data("callbackd/enter-destination", 6000, 20))
    results.append(await channel.wait_for_digit(3000))
    results.append(await channel.get_variable("CALLERID(num)"))
    try:
        await channel.command("NOSUCHCOMMAND", "foo")
    except AGICommandFailed as failure:
        results.append(failure.reply.text)
    results.append(await channel.exec_("Wait", "1"))
    await channel.set_variable("CB_RESULT", "ok")
    return results


#: what :func:`transcript_dialogue` returns against the recorded replies
DIALOGUE_RESULTS = [
    "",
    "1234",
    "200 result=-1",
    "",
    "15551234567",
    "5",
    "15551230000",
    "510 Invalid or unknown command",
    0,
]
