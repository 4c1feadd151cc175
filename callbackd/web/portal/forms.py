"""Reading the portal's forms: every field checked before it reaches the store or engine.

A malformed value raises :class:`FormError` with the catalogue id of the message the
page shows (``web.error.*``); the page answers 400 with it, never 500. Addresses are
only bounded here (length, printable characters): the engine parses and validates them
before anything is dialled, as it does for every front.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from callbackd.core.money import parse_amount
from callbackd.store.records import MAX_AMOUNT

__all__ = [
    "MAX_BODY",
    "MAX_FIELD",
    "FormError",
    "amount",
    "choice",
    "decode_form",
    "integer",
    "text",
]

#: the largest form body read (bytes)
MAX_BODY: Final = 64 * 1024
#: the longest field value (characters)
MAX_FIELD: Final = 256
_PRINTABLE = re.compile(r"[^\x00-\x1f\x7f]*")


class FormError(ValueError):
    """A field is missing or malformed: ``msgid`` (and ``params``) say so to the user."""

    def __init__(self, msgid: str, **params: Any) -> None:
        super().__init__(msgid)
        self.msgid = msgid
        self.params = params


def decode_form(args: Mapping[bytes, list[bytes]]) -> dict[str, str]:
    """The form's fields as text, the first value of each; FormError on bad bytes."""
    fields = {}
    for key, values in args.items():
        try:
            name = key.decode("utf-8")
            value = values[0].decode("utf-8") if values else ""
        except UnicodeDecodeError:
            raise FormError("web.error.bad_form") from None
        fields[name] = value
    return fields


def text(
    fields: Mapping[str, str],
    name: str,
    *,
    required: bool = True,
    max_length: int = MAX_FIELD,
    pattern: re.Pattern[str] | None = None,
) -> str:
    """The stripped text of field ``name``: printable, at most ``max_length`` characters,
    matching ``pattern`` when given ("" when optional and left empty)."""
    value = fields.get(name, "").strip()
    if not value:
        if required:
            raise FormError("web.error.required", field=name)
        return ""
    if len(value) > max_length or not _PRINTABLE.fullmatch(value):
        raise FormError("web.error.invalid", field=name)
    if pattern is not None and not pattern.fullmatch(value):
        raise FormError("web.error.invalid", field=name)
    return value


def integer(fields: Mapping[str, str], name: str, *, minimum: int = 0, maximum: int) -> int:
    """Field ``name`` as a whole number within ``minimum``..``maximum``."""
    value = text(fields, name, max_length=12)
    if not re.fullmatch(r"-?[0-9]+", value) or not minimum <= int(value) <= maximum:
        raise FormError("web.error.invalid", field=name)
    return int(value)


def amount(fields: Mapping[str, str], name: str, decimals: int, *, positive: bool = True) -> int:
    """Field ``name`` as money (``12.50``) in minor units; > 0 when ``positive``."""
    value = text(fields, name, max_length=20).replace(",", ".")
    try:
        minor = parse_amount(value, decimals)
    except ValueError:
        raise FormError("web.error.invalid", field=name) from None
    if minor < 0 or (positive and minor == 0) or minor > MAX_AMOUNT:
        raise FormError("web.error.invalid", field=name)
    return minor


def choice(fields: Mapping[str, str], name: str, allowed: Any, *, required: bool = True) -> str:
    """Field ``name``, one of ``allowed`` ("" when optional and left empty)."""
    value = text(fields, name, required=required, max_length=64)
    if value and value not in allowed:
        raise FormError("web.error.invalid", field=name)
    return value
