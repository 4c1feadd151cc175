"""What an SMS gateway sends to callbackd, parsed into one :class:`InboundSms`.

Four formats, each a pure function from the request's parts to an :class:`InboundSms`
or an :class:`InboundError` (never any other exception, whatever the input):

``parse_kannel``
    Kannel smsbox's ``get-url``: a ``GET`` whose query string holds the fields an
    ``sms-service`` fills in, by default (:data:`KANNEL_FIELDS`)::

        get-url = "http://HOST:PORT/sms/kannel?from=%p&to=%P&text=%a&id=%I&coding=%c&charset=%C&smsc=%i&ts=%T"

    ``%I`` is a UUID per message that Kannel keeps across its retries (the message id),
    ``%T`` the time in epoch seconds. The text comes as bytes in ``charset``: with
    ``mo-recode = true`` Kannel recodes UCS-2 messages to UTF-8 (``coding=0``,
    ``charset=UTF-8``); without it a UCS-2 message arrives as ``coding=2``,
    ``charset=UTF-16BE`` and raw UTF-16BE bytes, which are decoded as such.
``parse_kannel_post``
    Kannel's ``post-url``: the body is the raw text (charset in ``Content-Type``),
    the metadata in ``X-Kannel-*`` headers (``X-Kannel-From`` only with
    ``send-sender = true``), and no message id header: put ``id=%I`` (and ``from=%p``)
    in the URL's query, whose fields take precedence over the headers.
``parse_form`` and ``parse_json``
    A generic form POST or JSON object, UTF-8, field names from :class:`FieldNames`.
``parse_forwarder``
    The "SMS to URL forwarder" Android app's default JSON payload (assumed shape, as
    its documentation shows it)::

        {"from": "+4915...", "text": "...", "sentStamp": 1700000000000,
         "receivedStamp": 1700000000123, "sim": "sim1"}

    the stamps in milliseconds (numbers or numeric strings), no recipient and no
    message id. The app authenticates with a header the operator configures in it
    (see :mod:`callbackd.sms.auth`).

Numbers are normalised lightly: surrounding white space and the separators
``space - . ( ) /`` go, a leading ``+`` stays, what is left must be 1 to 20 digits
(``bad_number`` otherwise, e.g. for an alphanumeric sender); the engine reads them with
the numbering plan later.

Error codes (:attr:`InboundError.code`, parameters in :attr:`InboundError.params`):
``missing_field`` {field}, ``bad_json``, ``bad_encoding`` {field}, ``bad_number``
{field}, ``bad_time`` {field}, ``too_long`` {field}.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

__all__ = [
    "FORWARDER_FIELDS",
    "KANNEL_FIELDS",
    "MAX_BODY",
    "MAX_ID",
    "MAX_TEXT",
    "dedupe_key",
    "FieldNames",
    "InboundError",
    "InboundSms",
    "KannelFields",
    "normalise_number",
    "parse_form",
    "parse_forwarder",
    "parse_json",
    "parse_kannel",
    "parse_kannel_post",
    "text_keys",
]

#: the longest text accepted, in characters: ten concatenated 160-character parts
MAX_TEXT: Final = 1600
#: the largest request body (JSON or post-url text) accepted, in bytes
MAX_BODY: Final = 8192
#: the longest gateway message id accepted, in characters
MAX_ID: Final = 200

_SEPARATORS: Final = re.compile(r"[\s\-.()/]")
_NUMBER: Final = re.compile(r"\+?[0-9]{1,20}")
_CHARSET: Final = re.compile(r"[A-Za-z0-9_.:\-]{1,40}")
#: charset names Kannel may use that Python does not know. Kannel's user guide gives
#: ``%C`` as ``GSM`` for a 7-bit message and ``binary`` for an 8-bit one; smsbox holds
#: the text of a 7-bit message in UTF-8 by then, and 8-bit data is read as UTF-8 too
#: (anything else in it is ``bad_encoding``: it is no command)
_CHARSET_ALIASES: Final = {
    "ucs-2": "utf-16-be",
    "ucs2": "utf-16-be",
    "ucs-2be": "utf-16-be",
    "gsm": "utf-8",
    "binary": "utf-8",
}
#: the Kannel coding of UCS-2 messages
_UCS2: Final = 2


class InboundError(Exception):
    """A request an SMS gateway sent that is not a message: ``code`` and ``params``."""

    def __init__(self, code: str, **params: str) -> None:
        super().__init__(code, params)
        self.code = code
        self.params = params

    def __str__(self) -> str:
        details = ", ".join(f"{key}={value!r}" for key, value in sorted(self.params.items()))
        return f"{self.code} ({details})" if details else self.code


@dataclass(frozen=True)
class InboundSms:
    """One incoming SMS, as a gateway reported it.

    ``gateway`` is the configured gateway's name; ``recipient`` is ``""`` when the
    gateway does not say which number was written to (the forwarder app);
    ``received_at`` is epoch seconds when the gateway says, else ``None``.
    """

    gateway: str
    sender: str
    recipient: str
    text: str
    message_id: str | None
    received_at: float | None


@dataclass(frozen=True)
class FieldNames:
    """The names of the fields of a generic form or JSON POST (``None``: not sent)."""

    sender: str = "from"
    recipient: str | None = "to"
    text: str = "text"
    message_id: str | None = "id"
    received_at: str | None = "timestamp"


@dataclass(frozen=True)
class KannelFields:
    """The query fields a Kannel ``get-url`` fills in, each with its escape."""

    sender: str = "from"  # %p
    recipient: str = "to"  # %P
    text: str = "text"  # %a
    message_id: str = "id"  # %I
    coding: str = "coding"  # %c
    charset: str = "charset"  # %C
    received_at: str = "ts"  # %T


#: the default field names: ``from=%p&to=%P&text=%a&id=%I&coding=%c&charset=%C&ts=%T``
KANNEL_FIELDS: Final = KannelFields()
#: the forwarder app's JSON fields (its ``receivedStamp`` is in milliseconds)
FORWARDER_FIELDS: Final = FieldNames(
    sender="from", recipient=None, text="text", message_id=None, received_at="receivedStamp"
)


def normalise_number(value: str, field: str) -> str:
    """``value`` stripped of separators, a leading ``+`` kept; ``bad_number`` otherwise."""
    number = _SEPARATORS.sub("", value)
    if not _NUMBER.fullmatch(number):
        raise InboundError("bad_number", field=field)
    return number


def _unicode(value: str, field: str) -> str:
    """``value`` if it is valid Unicode (JSON and UTF-7 can carry lone surrogates)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InboundError("bad_encoding", field=field) from None
    return value


def _text(value: str, field: str) -> str:
    if len(value) > MAX_TEXT:
        raise InboundError("too_long", field=field)
    return _unicode(value, field)


def _message_id(value: str | None, field: str) -> str | None:
    if value is None or not value.strip():
        return None
    if len(value) > MAX_ID:
        raise InboundError("too_long", field=field)
    return _unicode(value.strip(), field)


def _time(value: str | float | None, field: str, scale: float = 1.0) -> float | None:
    """Epoch seconds from a number or numeric string (``scale`` 1000 for milliseconds)."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise InboundError("bad_time", field=field)
    try:
        seconds = float(value) / scale
    except (TypeError, ValueError, OverflowError):
        raise InboundError("bad_time", field=field) from None
    if not math.isfinite(seconds) or seconds < 0:
        raise InboundError("bad_time", field=field)
    return seconds


def _decode(raw: bytes, charset: str, field: str) -> str:
    """``raw`` decoded from ``charset`` (a text encoding Python knows)."""
    if not _CHARSET.fullmatch(charset):
        raise InboundError("bad_encoding", field=field)
    name = _CHARSET_ALIASES.get(charset.lower(), charset)
    try:
        if not codecs.lookup(name)._is_text_encoding:
            raise InboundError("bad_encoding", field=field)
        return raw.decode(name)
    except (LookupError, UnicodeError, ValueError):
        raise InboundError("bad_encoding", field=field) from None


def text_keys(args: Mapping[bytes, list[bytes]]) -> dict[str, list[bytes]]:
    """Twisted's ``request.args`` with the field names decoded (Latin-1: any bytes do)."""
    return {name.decode("latin-1"): values for name, values in args.items()}


# -- Kannel ------------------------------------------------------------------------------


def _first(query: Mapping[str, list[bytes]], name: str) -> bytes | None:
    values = query.get(name)
    return values[0] if values else None


def _required(query: Mapping[str, list[bytes]], name: str) -> bytes:
    value = _first(query, name)
    if value is None:
        raise InboundError("missing_field", field=name)
    return value


def _utf8(raw: bytes | None, field: str) -> str | None:
    return None if raw is None else _decode(raw, "utf-8", field)


def _kannel_charset(query: Mapping[str, list[bytes]], fields: KannelFields) -> str:
    """The text's charset: the one Kannel names, else what its coding implies."""
    charset = _utf8(_first(query, fields.charset), fields.charset)
    if charset:
        return charset
    coding = (_utf8(_first(query, fields.coding), fields.coding) or "0").strip()
    if coding not in {"0", "1", "2"}:
        raise InboundError("bad_encoding", field=fields.coding)
    return "utf-16-be" if coding == str(_UCS2) else "utf-8"


def parse_kannel(
    query: Mapping[str, list[bytes]],
    fields: KannelFields = KANNEL_FIELDS,
    *,
    gateway: str = "kannel",
) -> InboundSms:
    """The message of a Kannel ``get-url`` request, from its (decoded) query fields.

    ``query`` maps field names to their values as Twisted's ``request.args`` holds them
    (the caller decodes the names, which are ASCII); the first value of a field counts.
    """
    raw_text = _required(query, fields.text)
    if len(raw_text) > MAX_BODY:
        raise InboundError("too_long", field=fields.text)
    text = _decode(raw_text, _kannel_charset(query, fields), fields.text)
    return InboundSms(
        gateway=gateway,
        sender=normalise_number(
            _utf8(_required(query, fields.sender), fields.sender) or "", fields.sender
        ),
        recipient=normalise_number(
            _utf8(_required(query, fields.recipient), fields.recipient) or "", fields.recipient
        ),
        text=_text(text, fields.text),
        message_id=_message_id(
            _utf8(_first(query, fields.message_id), fields.message_id), fields.message_id
        ),
        received_at=_time(
            _utf8(_first(query, fields.received_at), fields.received_at), fields.received_at
        ),
    )


#: the ``X-Kannel-*`` headers of a ``post-url`` request and the field each stands for
_KANNEL_HEADERS: Final = {
    "x-kannel-from": "sender",
    "x-kannel-to": "recipient",
    "x-kannel-coding": "coding",
    "x-kannel-time": "received_at",
}
_CONTENT_CHARSET: Final = re.compile(r";\s*charset\s*=\s*\"?([^\";\s]*)\"?", re.IGNORECASE)


def parse_kannel_post(
    query: Mapping[str, list[bytes]],
    body: bytes,
    headers: Mapping[str, bytes],
    fields: KannelFields = KANNEL_FIELDS,
    *,
    gateway: str = "kannel",
) -> InboundSms:
    """The message of a Kannel ``post-url`` request: the body is the text.

    ``headers`` maps header names (any case) to their values; the query's fields take
    precedence over the ``X-Kannel-*`` headers. ``X-Kannel-Time`` is not epoch seconds
    in every Kannel version, so it is used only when it reads as a number.
    """
    merged: dict[str, list[bytes]] = {}
    lowered = {name.lower(): value for name, value in headers.items()}
    for header, attribute in _KANNEL_HEADERS.items():
        if header in lowered:
            merged[getattr(fields, attribute)] = [lowered[header]]
    if fields.received_at in merged and not re.fullmatch(
        rb"\s*[0-9]+(\.[0-9]+)?\s*", merged[fields.received_at][0]
    ):
        del merged[fields.received_at]
    match = _CONTENT_CHARSET.search(lowered.get("content-type", b"").decode("latin-1"))
    if match and match.group(1):
        merged[fields.charset] = [match.group(1).encode("latin-1")]
    merged.update({name: values for name, values in query.items() if values})
    merged[fields.text] = [body]
    return parse_kannel(merged, fields, gateway=gateway)


# -- generic form and JSON ---------------------------------------------------------------


def parse_form(
    form: Mapping[str, list[bytes]], fields: FieldNames = FieldNames(), *, gateway: str = "form"
) -> InboundSms:
    """The message of a generic form POST (UTF-8 values, names from ``fields``)."""
    values: dict[str, str] = {}
    for name in _names(fields):
        raw = _first(form, name)
        if raw is not None:
            if len(raw) > MAX_BODY:
                raise InboundError("too_long", field=name)
            values[name] = _decode(raw, "utf-8", name)
    return _from_values(values, fields, gateway)


def _names(fields: FieldNames) -> list[str]:
    names = [fields.sender, fields.recipient, fields.text, fields.message_id, fields.received_at]
    return [name for name in names if name is not None]


def _from_values(
    values: Mapping[str, str | float], fields: FieldNames, gateway: str, time_scale: float = 1.0
) -> InboundSms:
    def get(name: str | None) -> str | None:
        if name is None or name not in values:
            return None
        value = values[name]
        return value if isinstance(value, str) else None

    def required(name: str) -> str:
        value = get(name)
        if value is None:
            raise InboundError("missing_field", field=name)
        return value

    recipient = (
        ""
        if fields.recipient is None
        else normalise_number(required(fields.recipient), fields.recipient)
    )
    stamp = None if fields.received_at is None else values.get(fields.received_at)
    return InboundSms(
        gateway=gateway,
        sender=normalise_number(required(fields.sender), fields.sender),
        recipient=recipient,
        text=_text(required(fields.text), fields.text),
        message_id=_message_id(get(fields.message_id), fields.message_id or ""),
        received_at=_time(stamp, fields.received_at or "", time_scale),
    )


def _json_object(body: bytes) -> dict[str, str | float]:
    """The body's JSON object, numbers (and, for numbers' fields, strings) kept as sent."""
    if len(body) > MAX_BODY:
        raise InboundError("too_long", field="body")
    try:
        document = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise InboundError("bad_encoding", field="body") from None
    except (ValueError, RecursionError):
        raise InboundError("bad_json") from None
    if not isinstance(document, dict):
        raise InboundError("bad_json")
    values: dict[str, str | float] = {}
    for name, value in document.items():
        if isinstance(value, str):
            values[name] = value
        elif isinstance(value, int | float) and not isinstance(value, bool):
            values[name] = value
    return values


def _numbers_as_text(values: dict[str, str | float], fields: FieldNames) -> dict[str, str | float]:
    """Phone numbers sent as JSON numbers read as their digits."""
    for name in (fields.sender, fields.recipient):
        if name is not None and isinstance(values.get(name), int):
            values[name] = str(values[name])
    return values


def parse_json(
    body: bytes, fields: FieldNames = FieldNames(), *, gateway: str = "json"
) -> InboundSms:
    """The message of a generic JSON POST: one object, names from ``fields``."""
    return _from_values(_numbers_as_text(_json_object(body), fields), fields, gateway)


def parse_forwarder(body: bytes, *, recipient: str = "", gateway: str = "forwarder") -> InboundSms:
    """The message the "SMS to URL forwarder" app posts (``recipient``: our number, if known)."""
    sms = _from_values(
        _numbers_as_text(_json_object(body), FORWARDER_FIELDS),
        FORWARDER_FIELDS,
        gateway,
        time_scale=1000.0,
    )
    if not recipient:
        return sms
    return InboundSms(
        sms.gateway,
        sms.sender,
        normalise_number(recipient, "recipient"),
        sms.text,
        sms.message_id,
        sms.received_at,
    )


# -- retries -----------------------------------------------------------------------------


def dedupe_key(sms: InboundSms, window_s: float) -> str:
    """A key that is the same for a gateway's retries of one message.

    With a gateway message id (Kannel's ``%I``), the key is ``id:<gateway>:<id>``: every
    retry of it matches, however late. Without one, the key is ``text:`` and the SHA-256
    of the gateway, sender and text and of the *bucket* ``floor(received_at /
    window_s)``: time is cut into fixed windows of ``window_s`` seconds starting at the
    epoch, so two copies match only when they fall into the same window. Two copies
    less than ``window_s`` apart may straddle a boundary and get different keys (a
    caller that must catch those also checks the previous bucket's key,
    ``dedupe_key`` of the message with ``received_at - window_s``); copies further apart
    than ``window_s`` never match. Without ``received_at`` the bucket is ``-`` (all
    copies of the text match). ``window_s`` must be positive (``ValueError`` otherwise).
    """
    if not window_s > 0:
        raise ValueError(f"the dedupe window must be positive, not {window_s!r}")
    if sms.message_id is not None:
        return f"id:{sms.gateway}:{sms.message_id}"
    if sms.received_at is None:
        bucket = "-"
    else:
        bucket = str(math.floor(sms.received_at / window_s))
    digest = hashlib.sha256()
    for part in (sms.gateway, sms.sender, sms.text, bucket):
        encoded = part.encode("utf-8", "surrogatepass")
        digest.update(len(encoded).to_bytes(8, "big") + encoded)
    return f"text:{digest.hexdigest()}"
