"""Phone numbers by the numbering plan (``phonenumbers``), for leg addresses.

:mod:`callbackd.core.address` parses and validates leg addresses without any library
outside the standard one; reading a phone number needs the numbering plan, which is
here. :func:`parse_address` is the core's parser with this reader, what the rest of
the daemon calls.

A number must have a calling code ``phonenumbers`` knows and a length it calls
possible for that country. "Possible" rather than "valid" is deliberate: the rate
decks decide what is reachable, and ``phonenumbers`` calls test ranges such as +1 555
invalid.
"""

from __future__ import annotations

import phonenumbers

from callbackd.core import address
from callbackd.core.address import E164, LegAddress

__all__ = ["parse_address", "read_phone"]


def read_phone(digits: str, region: str) -> str | None:
    """``+<E.164 digits>`` for what a user wrote (separators removed), or None.

    ``+`` or ``0`` first: read as written (international, or national with the trunk
    prefix). Bare digits: national in ``region``, or international without "+" (the
    SMS callback form D.48774417880). A valid reading beats a merely possible one;
    between two valid ones, national wins unless the region has a trunk prefix (0 in
    DE) that the digits do not start with.
    """
    if digits[0] in "+0":
        readings = [_read_number(digits, region)]
    else:
        national = _read_number(digits, region)
        international = _read_number("+" + digits, None)
        trunk = phonenumbers.ndd_prefix_for_region(region, True)
        if trunk and not digits.startswith(trunk):
            readings = [international, national]
        else:
            readings = [national, international]
    found = [n for n in readings if n is not None]
    for number in sorted(found, key=lambda n: not phonenumbers.is_valid_number(n)):
        e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
        if E164.fullmatch(e164) is not None:
            return str(e164)
    return None


def _read_number(digits: str, region: str | None) -> phonenumbers.PhoneNumber | None:
    """The number if ``phonenumbers`` knows its country and calls its length possible."""
    try:
        number = phonenumbers.parse(digits, region)
    except phonenumbers.NumberParseException:
        return None
    code = number.country_code
    if code is None or phonenumbers.region_code_for_country_code(code) == "ZZ":
        return None
    return number if phonenumbers.is_possible_number(number) else None


def parse_address(text: str, default_region: str) -> LegAddress:
    """Parse what a user wrote for a leg; raise :class:`~callbackd.core.address.AddressError`."""
    return address.parse_address(text, default_region, read_phone)
