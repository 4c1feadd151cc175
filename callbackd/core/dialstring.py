"""Dial strings: provider and gateway templates filled with validated leg addresses.

A template is what the operator configured (``PJSIP/{number}@proxicom``,
``Motif/xmpp/{user}@{host}``); the values come from users. Asterisk gives meaning to
``& , / @ ^ ( ) $ { } ; :`` in a dial string (docs/asterisk.rst), so every value is
checked again here against a pattern that admits none of them, even though
:mod:`callbackd.core.address` already did: this is the last step before the string
reaches Asterisk, and a :class:`LegAddress` may have been rebuilt from the store.

Placeholders: ``{number}`` (E.164 digits without ``+``), ``{e164}`` (with ``+``) for
phone legs; ``{user}``, ``{host}`` (``host`` or ``host:port``) for the others.
"""

from __future__ import annotations

import re
import string
from typing import Final

from callbackd.core.address import E164, HOST, USER, LegAddress

__all__ = ["PLACEHOLDERS", "DialStringError", "build_channel", "check_template"]

#: placeholders allowed in a template, per kind of leg
PLACEHOLDERS: Final = {
    "phone": frozenset({"number", "e164"}),
    "sip": frozenset({"user", "host"}),
    "xmpp": frozenset({"user", "host"}),
    "msn": frozenset({"user", "host"}),
    "yahoo": frozenset({"user", "host"}),
}
_ALL = frozenset().union(*PLACEHOLDERS.values())

# what each substituted value must look like: nothing Asterisk would read as syntax
_VALUE: Final = {
    "number": re.compile(r"[1-9][0-9]{5,14}", re.ASCII),
    "e164": E164,
    "user": USER,
    "host": HOST,
}
# the literal text of a template: technology/resource syntax but no argument, option or
# expression syntax (those would let a template smuggle in what values may not)
_LITERAL = re.compile(r"[A-Za-z0-9_./@:+~-]*", re.ASCII)


class DialStringError(ValueError):
    """A template or a value that would not make a safe dial string."""


def check_template(template: str, kind: str | None = None) -> frozenset[str]:
    """Validate a template (for ``kind`` if given); return the placeholders it uses."""
    if "/" not in template:
        raise DialStringError(f"dial template {template!r} has no '/' (Technology/resource)")
    used: set[str] = set()
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as e:
        raise DialStringError(f"dial template {template!r}: {e}") from None
    for literal, name, spec, conversion in parsed:
        if _LITERAL.fullmatch(literal) is None:
            raise DialStringError(
                f"dial template {template!r} contains characters not allowed in a dial string"
            )
        if name is None:
            continue
        if name not in _ALL or spec or conversion:
            raise DialStringError(
                f"dial template {template!r}: unknown placeholder {{{name}}}; "
                f"use {', '.join('{' + p + '}' for p in sorted(_ALL))}"
            )
        used.add(name)
    if not used:
        raise DialStringError(f"dial template {template!r} has no placeholder")
    if kind is not None:
        allowed = PLACEHOLDERS.get(kind, frozenset())
        wrong = used - allowed
        if wrong:
            raise DialStringError(
                f"dial template {template!r} uses {', '.join(sorted(wrong))} "
                f"which a {kind} leg does not have"
            )
    return frozenset(used)


def build_channel(template: str, address: LegAddress) -> str:
    """Fill ``template`` with ``address``; raise :class:`DialStringError` if unsafe."""
    used = check_template(template, address.kind)
    if address.kind == "phone":
        values = {"number": address.digits, "e164": address.value}
    else:
        values = {"user": address.user, "host": address.host}
    for name in used:
        if _VALUE[name].fullmatch(values[name]) is None:
            raise DialStringError(f"{name} {values[name]!r} is not safe in a dial string")
    return template.format_map(values)
