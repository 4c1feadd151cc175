"""SMS text: the GSM 03.38 alphabet, segment counting, splitting and trimming.

A text goes out in one of two encodings, whichever holds it: the GSM 7-bit default
alphabet when every character is in it (counted in septets; the characters of the
extension table cost two, an escape and the character), otherwise UCS-2 (counted in
UTF-16 code units; a character outside the Basic Multilingual Plane, such as an emoji,
takes two). One SMS holds 160 septets or 70 units; a longer text goes out in parts that
each lose six bytes to the concatenation header and hold 153 septets or 67 units. The
whole text keeps one encoding across its parts, as a concatenated message does.

:func:`segments` cuts a text into parts that each fit, never inside a character (so
never between an escape and its extension character, nor inside a surrogate pair), and
at whitespace when some is near the limit. The parts are sized for a concatenated
message, so a gateway may join them with the header or send each as an SMS of its own.
:func:`fit` trims a text that would need more parts than allowed, ending it with an
ellipsis. :func:`kannel_coding` gives the ``coding`` and ``charset`` Kannel's
``sendsms`` needs to send a text unchanged.
"""

from __future__ import annotations

from typing import Literal

__all__ = [
    "GSM7_BASIC",
    "GSM7_EXTENSION",
    "GSM7_SINGLE",
    "GSM7_PART",
    "UCS2_SINGLE",
    "UCS2_PART",
    "Encoding",
    "count_segments",
    "encoding",
    "fit",
    "is_gsm7",
    "kannel_coding",
    "segments",
    "septets",
    "units",
]

Encoding = Literal["gsm7", "ucs2"]

#: The GSM 03.38 basic table, indexed by septet. Position 0x1B is the escape to the
#: extension table, not a character of its own; the section sign at 0x5F is escaped.
GSM7_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNO"
    "PQRSTUVWXYZÄÖÑÜ\u00a7"
    "¿abcdefghijklmno"
    "pqrstuvwxyzäöñüà"
)
#: The extension table: septet after the escape -> character (each costs two septets).
GSM7_EXTENSION = {
    0x0A: "\f",
    0x14: "^",
    0x28: "{",
    0x29: "}",
    0x2F: "\\",
    0x3C: "[",
    0x3D: "~",
    0x3E: "]",
    0x40: "|",
    0x65: "€",
}

#: septets in one SMS, and in each part of a concatenated one (6-byte header)
GSM7_SINGLE = 160
GSM7_PART = 153
#: UTF-16 code units in one SMS, and in each part of a concatenated one
UCS2_SINGLE = 70
UCS2_PART = 67

#: how far back from a full part a cut looks for whitespace, in characters
_WORD_WINDOW = 20
#: the ellipsis a GSM-7 text ends with when the one asked for is not in the alphabet
_GSM7_ELLIPSIS = "..."

_BASIC = frozenset(GSM7_BASIC) - {"\x1b"}
_EXTENSION = frozenset(GSM7_EXTENSION.values())
_LIMITS: dict[Encoding, tuple[int, int]] = {
    "gsm7": (GSM7_SINGLE, GSM7_PART),
    "ucs2": (UCS2_SINGLE, UCS2_PART),
}


def is_gsm7(text: str) -> bool:
    """Whether every character of ``text`` is in the GSM 7-bit alphabet (either table)."""
    return all(char in _BASIC or char in _EXTENSION for char in text)


def encoding(text: str) -> Encoding:
    """``"gsm7"`` when the text fits the GSM alphabet, otherwise ``"ucs2"``."""
    return "gsm7" if is_gsm7(text) else "ucs2"


def _cost(char: str, coding: Encoding) -> int:
    """What one character takes: septets in GSM-7, UTF-16 code units in UCS-2."""
    if coding == "gsm7":
        return 2 if char in _EXTENSION else 1
    return 2 if ord(char) > 0xFFFF else 1


def septets(text: str) -> int:
    """Septets of a GSM-7 text (extension characters count two); ValueError if not GSM-7."""
    if not is_gsm7(text):
        raise ValueError(f"{text!r} is not in the GSM 7-bit alphabet")
    return _length(text, "gsm7")


def units(text: str) -> int:
    """UTF-16 code units of a text sent as UCS-2 (a character beyond the BMP counts two)."""
    return _length(text, "ucs2")


def _length(text: str, coding: Encoding) -> int:
    """The size of ``text`` in ``coding``'s unit."""
    return sum(_cost(char, coding) for char in text)


def _full_part_end(text: str, start: int, coding: Encoding, limit: int) -> int:
    """The end of the longest run of whole characters from ``start`` within ``limit``."""
    used = 0
    for end in range(start, len(text)):
        used += _cost(text[end], coding)
        if used > limit:
            return end
    return len(text)


def _cut(text: str, start: int, end: int) -> int:
    """Where to end a full part that would end at ``end``: at whitespace when it is near."""
    for cut in range(end, max(start + 1, end - _WORD_WINDOW) - 1, -1):
        if text[cut - 1].isspace() or text[cut].isspace():
            return cut
    return end


def segments(text: str) -> list[str]:
    """``text`` cut into SMS parts that each fit; ``[]`` for an empty text.

    The parts join back to ``text`` exactly; whitespace at a cut stays at the end of
    the part before it.
    """
    coding = encoding(text)
    single, part = _LIMITS[coding]
    if _length(text, coding) <= single:
        return [text] if text else []
    parts = []
    start = 0
    while start < len(text):
        end = _full_part_end(text, start, coding, part)
        if end < len(text):
            end = _cut(text, start, end)
        parts.append(text[start:end])
        start = end
    return parts


def count_segments(text: str) -> int:
    """How many SMS ``text`` takes (``0`` for an empty text)."""
    return len(segments(text))


def _head(text: str, length: int) -> str:
    """The first ``length`` characters, without a cut-off word when whitespace is near,
    and without trailing whitespace."""
    if 0 < length < len(text):
        length = _cut(text, 0, length)
    return text[:length].rstrip()


def _ended(head: str, ellipsis: str) -> str:
    """``head`` and the ellipsis (``"..."`` instead when the one asked for would make a
    GSM-7 head UCS-2)."""
    if is_gsm7(head) and not is_gsm7(ellipsis):
        ellipsis = _GSM7_ELLIPSIS
    return head + ellipsis


def _capacity(coding: Encoding, max_segments: int) -> int:
    """What ``max_segments`` SMS hold in ``coding``'s unit."""
    single, part = _LIMITS[coding]
    return single if max_segments == 1 else part * max_segments


def _longest_prefix(text: str, max_segments: int, ellipsis: str) -> int:
    """The most characters of ``text`` that, with the ellipsis, fill ``max_segments``
    SMS by size alone (whitespace cuts may then cost a few characters more)."""

    def fits(length: int) -> bool:
        candidate = _ended(_head(text, length), ellipsis)
        coding = encoding(candidate)
        return _length(candidate, coding) <= _capacity(coding, max_segments)

    low, high = 0, min(len(text), GSM7_SINGLE * max_segments)
    while low < high:
        middle = (low + high + 1) // 2
        if fits(middle):
            low = middle
        else:
            high = middle - 1
    return low


def fit(text: str, max_segments: int, ellipsis: str = "…") -> list[str]:
    """:func:`segments` of ``text``, trimmed with ``ellipsis`` to at most ``max_segments``.

    A text that fits comes back whole. A trimmed one ends at a word when one ends near
    the cut; a GSM-7 text gets ``"..."`` rather than an ellipsis outside the alphabet,
    so that trimming does not turn it into UCS-2 and halve what each part holds.
    """
    if max_segments < 1:
        raise ValueError(f"max_segments must be >= 1, got {max_segments}")
    parts = segments(text)
    if len(parts) <= max_segments:
        return parts
    length = _longest_prefix(text, max_segments, ellipsis)
    while True:
        head = _head(text, length)
        parts = segments(_ended(head, ellipsis))
        if len(parts) <= max_segments:
            return parts
        if not head:
            raise ValueError(f"the ellipsis {ellipsis!r} alone needs more than {max_segments} SMS")
        # every length from len(head) to this one gives the same head: skip them
        length = len(head) - 1


def kannel_coding(text: str) -> tuple[int, str]:
    """Kannel ``sendsms``'s ``coding`` (0 for 7-bit, 2 for UCS-2) and ``charset`` for ``text``.

    The text is always sent as UTF-8 and says so: without ``coding=2`` Kannel turns
    whatever is outside the GSM alphabet into ``?``, and without a charset it would
    read a UCS-2 text as UTF-16BE bytes.
    """
    return (0 if is_gsm7(text) else 2), "UTF-8"
