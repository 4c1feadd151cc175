"""One message catalogue for every text the product shows users, in five languages.

Chat replies, progress messages and refusals (and later SMS, web and IVR) take their
words from the gettext catalogues in ``locale/`` and format money, numbers and
durations for the language with Babel; see docs/i18n.rst. Use::

    from callbackd.i18n import translator

    t = translator(account_language)
    t.text("chat.balance", balance=t.money(balance, decimals, currency))

:mod:`callbackd.i18n.progress` turns the engine's session events into sentences.
"""

from callbackd.i18n.catalogue import (
    DEFAULT_LANGUAGE,
    LANGUAGES,
    Translator,
    translator,
)

__all__ = ["DEFAULT_LANGUAGE", "LANGUAGES", "Translator", "translator"]
