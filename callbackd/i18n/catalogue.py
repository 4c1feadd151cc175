"""The catalogue's texts and Babel's formats for one language.

Message ids are stable ``lower_snake_case`` keys grouped by a dotted prefix
(``progress.leg_calling``, ``chat.balance``, ``refusal.no_credit``), not English
sentences: the English wording can change (it is the ``en`` catalogue's ``msgstr``)
without touching the code or losing the other languages, and an id says where a text is
used. Placeholders are ``str.format`` names (``{address}``); every translation of a text
has the same ones (tests/i18n/test_catalogue.py).

The catalogues are gettext's: ``locale/<language>/LC_MESSAGES/callbackd.po`` in the
source tree, compiled to ``callbackd.mo`` beside it by the package build (setup.py).
A compiled catalogue is read when present and not older than its source; a checkout
has none, and its ``.po`` is read with Babel instead.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

from babel import Locale
from babel.messages.catalog import Catalog
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po
from babel.numbers import format_decimal
from babel.units import format_unit

from callbackd.core import chat

__all__ = [
    "DEFAULT_LANGUAGE",
    "DOMAIN",
    "LANGUAGES",
    "LOCALE_DIR",
    "Translator",
    "catalogue_path",
    "load_messages",
    "translator",
]

#: the languages with a complete catalogue: the ones ``LANG`` accepts
#: (:data:`callbackd.core.chat.LANGUAGES`, one list for the grammar and the catalogue)
LANGUAGES: Final = chat.LANGUAGES
#: the language of anyone who chose none, and of every text a catalogue lacks
DEFAULT_LANGUAGE: Final = "en"
#: the gettext domain: the catalogues' file name
DOMAIN: Final = "callbackd"
#: where the catalogues are
LOCALE_DIR: Final = Path(__file__).parent / "locale"


def catalogue_path(language: str, suffix: str = ".po") -> Path:
    """The catalogue file of ``language`` (``.po`` source or ``.mo`` compiled)."""
    return LOCALE_DIR / language / "LC_MESSAGES" / f"{DOMAIN}{suffix}"


def load_messages(language: str) -> dict[str, str]:
    """msgid -> translated text of ``language``: the ``.mo`` if up to date, else the ``.po``.

    Untranslated and fuzzy entries are left out (the English one is used instead).
    """
    source, compiled = catalogue_path(language), catalogue_path(language, ".mo")
    catalog: Catalog
    if compiled.exists() and compiled.stat().st_mtime >= source.stat().st_mtime:
        with compiled.open("rb") as f:
            catalog = read_mo(f)
    else:
        with source.open("rb") as f:
            catalog = read_po(f, locale=language, domain=DOMAIN)
    return {
        str(message.id): str(message.string)
        for message in catalog
        if message.id and message.string and not message.fuzzy
    }


def _decimal_pattern(decimals: int) -> str:
    """The Babel pattern showing money as :func:`callbackd.core.money.format_amount` does:
    at least two decimals (when there are two), at most ``decimals``, no grouping."""
    if decimals <= 0:
        return "0"
    shown = min(2, decimals)
    return "0." + "0" * shown + "#" * (decimals - shown)


class Translator:
    """The texts and number formats of one language; get one with :func:`translator`."""

    def __init__(
        self, language: str, messages: Mapping[str, str], fallback: Mapping[str, str]
    ) -> None:
        self.language = language
        self.locale = Locale.parse(language)
        self._messages = messages
        self._fallback = fallback

    def __repr__(self) -> str:
        return f"<Translator {self.language}>"

    def has(self, msgid: str) -> bool:
        """Whether ``msgid`` is in the catalogue (this language's or the English one)."""
        return msgid in self._messages or msgid in self._fallback

    def text(self, msgid: str, **params: Any) -> str:
        """The text of ``msgid`` with its ``{name}`` placeholders filled from ``params``.

        A text this language lacks is the English one; an id no catalogue has is
        returned as it is (a bug, but the user still gets something).
        """
        template = self._messages.get(msgid) or self._fallback.get(msgid) or msgid
        return template.format(**params)

    def number(self, n: int | float | Decimal) -> str:
        """A number as this language writes it (``12,345`` in English, ``12 345`` in French)."""
        return format_decimal(n, locale=self.locale)

    def money(self, minor_units: int, decimals: int, currency: str = "") -> str:
        """An amount of minor units of ``10**-decimals``, with the currency's code if given.

        Exact (no float, no rounding): at least two decimals, at most ``decimals``, and no
        digit grouping, so that English reads as the rest of the product writes money
        (``0.02604``, ``15.00 EUR``); other languages use their decimal sign (``0,028``).
        """
        amount = Decimal(minor_units).scaleb(-decimals)
        shown = format_decimal(amount, format=_decimal_pattern(decimals), locale=self.locale)
        if not currency:
            return shown
        return self.text("money.with_currency", amount=shown, currency=currency)

    def duration(self, seconds: int) -> str:
        """A duration, exact to the second, in the language's short units (Babel's CLDR data):
        ``1 hr 2 min 5 sec`` in English, ``1 h 2 min 5 s`` in French, ``1小时2分钟5秒`` in
        Chinese. Units worth zero are left out; zero is ``0 sec``."""
        seconds = max(0, int(seconds))
        hours, rest = divmod(seconds, 3600)
        minutes, secs = divmod(rest, 60)
        parts = [
            format_unit(value, unit, length="short", locale=self.locale)
            for value, unit in (
                (hours, "duration-hour"),
                (minutes, "duration-minute"),
                (secs, "duration-second"),
            )
            if value
        ]
        if not parts:
            parts = [format_unit(0, "duration-second", length="short", locale=self.locale)]
        separator = "" if self.language == "zh" else " "
        return separator.join(parts)

    def language_name(self, code: str) -> str:
        """The name of language ``code`` in this language (``espagnol`` in French)."""
        return Locale.parse(code).get_display_name(self.locale) or code


@functools.cache
def _messages(language: str) -> Mapping[str, str]:
    return load_messages(language)


def translator(language: str) -> Translator:
    """The (shared) translator of ``language``; an unknown or empty one gets English.

    ``es``, ``ES``, ``es_MX`` and ``es-MX`` are all Spanish.
    """
    code = (language or "").strip().lower().replace("_", "-").split("-")[0]
    return _translator(code if code in LANGUAGES else DEFAULT_LANGUAGE)


@functools.cache
def _translator(language: str) -> Translator:
    return Translator(language, _messages(language), _messages(DEFAULT_LANGUAGE))
