"""Money as text: exact conversion between decimal strings and integer minor units.

Money is an ``int`` of minor units of ``10**-decimals`` (with ``decimals=5``,
``"0.01204"`` is ``1204``). No float is involved anywhere: the digits of the
text are the digits of the integer.
"""

from __future__ import annotations

import re

__all__ = ["format_amount", "parse_amount"]

# ASCII digits only: ``\d`` would accept other scripts' digits.
_AMOUNT = re.compile(r"([+-]?)([0-9]+)(?:\.([0-9]*))?")


def parse_amount(text: str, decimals: int) -> int:
    """``"10.50"`` -> minor units (``1050000`` for 5 decimals); ValueError says what is wrong."""
    if decimals < 0:
        raise ValueError(f"decimals must be >= 0, got {decimals}")
    match = _AMOUNT.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not an amount (digits, optionally a point and decimals)")
    sign, whole, fraction = match.groups()
    fraction = (fraction or "").rstrip("0")
    if len(fraction) > decimals:
        raise ValueError(
            f"{text.strip()!r} has {len(fraction)} decimals; at most {decimals} are allowed"
        )
    minor = int(whole + fraction.ljust(decimals, "0"))
    return -minor if sign == "-" else minor


def format_amount(minor: int, decimals: int) -> str:
    """Minor units -> ``"10.50"``: exact, with at least two decimals (when there are two)."""
    if decimals < 0:
        raise ValueError(f"decimals must be >= 0, got {decimals}")
    sign = "-" if minor < 0 else ""
    digits = str(abs(minor)).rjust(decimals + 1, "0")
    whole, fraction = digits[: len(digits) - decimals], digits[len(digits) - decimals :]
    keep = min(2, decimals)
    fraction = fraction[:keep] + fraction[keep:].rstrip("0")
    return f"{sign}{whole}.{fraction}" if fraction else f"{sign}{whole}"
