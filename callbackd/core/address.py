"""Leg addresses: what a user writes for a party to call, parsed and made safe.

A leg is a phone number (``+4930123456``, ``phone:4930123456``, a national number
read with the configured default region) or a network address (``sip:user@host``,
``xmpp:user@domain``, with ``gtalk:`` an alias of ``xmpp:``, ``msn:``, ``yahoo:``).

Validation is strict on purpose: whatever this module accepts is later put into an
Asterisk dial string, so every accepted value is made of a small safe character set
(ASCII letters, digits and ``. _ ~ + -``; ``@`` only as the separator; ``:`` only
before a SIP port). See docs/asterisk.rst, "Dial-string injection", for the dial-string
metacharacters this keeps out.

Phone numbers: explicit international forms (``+``, ``00``, ``phone:`` followed by
digits) are taken as given; everything else is read as a national number of the
default region. The numbering plan is not here (the core imports nothing but itself
and the standard library): :func:`parse_address` is given a :data:`PhoneReader`,
:func:`callbackd.numbers.read_phone` on ``phonenumbers``, and whatever it returns must
still match ``^\\+[1-9][0-9]{5,14}$``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

__all__ = [
    "KINDS",
    "AddressError",
    "MAX_LENGTH",
    "LegAddress",
    "PhoneReader",
    "parse_address",
    "E164",
    "HOST",
    "USER",
]

#: the kinds of leg, as they appear in canonical addresses
KINDS: Final = ("phone", "sip", "xmpp", "msn", "yahoo")

#: scheme written by the user -> kind (lower case; ``gtalk`` is Jingle via chan_motif)
_SCHEMES: Final = {
    "phone": "phone",
    "tel": "phone",
    "sip": "sip",
    "xmpp": "xmpp",
    "gtalk": "xmpp",
    "msn": "msn",
    "yahoo": "yahoo",
}

#: an E.164 number with its plus: the only phone form that leaves this module
E164: Final = re.compile(r"\+[1-9][0-9]{5,14}", re.ASCII)
#: the user part of a network address (no dial-string metacharacters)
USER: Final = re.compile(r"[A-Za-z0-9._~+-]{1,64}", re.ASCII)
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
#: a host name (lower case) with an optional port, as kept in :attr:`LegAddress.value`
HOST: Final = re.compile(rf"{_LABEL}(?:\.{_LABEL})*(?::[0-9]{{1,5}})?", re.ASCII)

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9]*):(.*)", re.ASCII | re.DOTALL)
# separators people write inside numbers: spaces, dashes, dots, parentheses
_SEPARATORS = re.compile(r"[ \t\-.()]+")
_DIGITS = re.compile(r"\+?[0-9]+", re.ASCII)
#: the longest text read as an address: long enough for any real one, it stops
#: pathological input early
MAX_LENGTH: Final = 256


class AddressError(ValueError):
    """Text that is not a leg address; ``str()`` is a message fit to show the user."""


def _not_an_address(text: str) -> AddressError:
    shown = text if len(text) <= 40 else text[:37] + "..."
    return AddressError(
        f"{shown!r} is not a phone number or address: use +<country><number>, "
        "sip:user@host or xmpp:user@domain"
    )


@dataclass(frozen=True)
class LegAddress:
    """A validated leg address: ``kind`` is one of :data:`KINDS`.

    ``value`` is ``+<E.164 digits>`` for phones and ``user@host`` for the others
    (``user@host:port`` for SIP with a port). ``str()`` gives the canonical form
    used in messages, CDRs and the store: ``phone:+4930123456``, ``sip:user@host``.
    """

    kind: str
    value: str

    def __post_init__(self) -> None:
        # the constructor is public (the store rebuilds addresses), so it re-checks
        if self.kind == "phone":
            ok = E164.fullmatch(self.value) is not None
        elif self.kind in KINDS:
            ok = _split_network(self.kind, self.value) is not None
        else:
            ok = False
        if not ok:
            raise AddressError(f"not a valid {self.kind} address: {self.value!r}")

    @property
    def is_billable(self) -> bool:
        """Phone legs cost money; SIP and IM legs are free."""
        return self.kind == "phone"

    @property
    def digits(self) -> str:
        """The E.164 digits without ``+`` (for rating); empty for network addresses."""
        return self.value[1:] if self.kind == "phone" else ""

    @property
    def user(self) -> str:
        """The part before ``@``; empty for phone numbers."""
        return self.value.partition("@")[0] if self.kind != "phone" else ""

    @property
    def host(self) -> str:
        """The part after ``@`` (with ``:port`` if given); empty for phone numbers."""
        return self.value.partition("@")[2] if self.kind != "phone" else ""

    def __str__(self) -> str:
        return f"{self.kind}:{self.value}"


def _split_network(kind: str, text: str) -> tuple[str, str] | None:
    """``user@host`` -> (user, host) if both parts are safe; host lower-cased."""
    user, at, host = text.partition("@")
    if not at:
        return None
    host = host.lower()
    if kind == "xmpp":
        # JID local parts compare case-insensitively
        user = user.lower()
    if USER.fullmatch(user) is None or HOST.fullmatch(host) is None:
        return None
    name, colon, port = host.partition(":")
    if colon and (kind != "sip" or not 1 <= int(port) <= 65535):
        return None
    if len(name) > 253:
        return None
    return user, host


#: reads a phone number (separators removed, ``00`` made ``+``): ``(digits, region)``
#: -> ``+<E.164 digits>``, or None when the numbering plan knows no such number
PhoneReader = Callable[[str, str], "str | None"]


def _parse_phone(text: str, default_region: str, international: bool, read: PhoneReader) -> str:
    """Normalise a phone number to ``+<digits>``; raise AddressError."""
    cleaned = _SEPARATORS.sub("", text)
    if _DIGITS.fullmatch(cleaned) is None:
        raise _not_an_address(text)
    if cleaned.startswith("00"):
        cleaned = "+" + cleaned[2:]
    elif international and not cleaned.startswith(("+", "0")):
        cleaned = "+" + cleaned
    e164 = read(cleaned, default_region)
    if e164 is None or E164.fullmatch(e164) is None:
        raise _not_an_address(text)
    return e164


def parse_address(text: str, default_region: str, read_phone: PhoneReader) -> LegAddress:
    """Parse what a user wrote for a leg; raise :class:`AddressError` with a user message.

    ``read_phone`` reads phone numbers by a numbering plan
    (:func:`callbackd.numbers.read_phone`, which also offers this function with it).
    """
    stripped = text.strip()
    if not stripped or len(stripped) > MAX_LENGTH:
        raise _not_an_address(stripped)
    match = _SCHEME.fullmatch(stripped)
    if match is None:
        return LegAddress("phone", _parse_phone(stripped, default_region, False, read_phone))
    scheme, rest = match.group(1).lower(), match.group(2).strip()
    kind = _SCHEMES.get(scheme)
    if kind is None:
        raise AddressError(
            f"unknown kind of address {scheme + ':'!r} in {stripped[:40]!r}: use "
            "+<country><number>, sip:user@host or xmpp:user@domain"
        )
    if kind == "phone":
        try:
            return LegAddress("phone", _parse_phone(rest, default_region, True, read_phone))
        except AddressError:
            raise _not_an_address(stripped) from None
    parts = _split_network(kind, rest)
    if parts is None:
        raise _not_an_address(stripped)
    user, host = parts
    return LegAddress(kind, f"{user}@{host}")
