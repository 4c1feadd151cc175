"""What the engine tells a caller it will not do."""

from __future__ import annotations

from typing import Any

from callbackd.i18n import DEFAULT_LANGUAGE, translator

__all__ = ["CallbackRefused", "UnknownSession"]


class CallbackRefused(Exception):
    """A request the manager will not carry out; ``str()`` is fit for the user, in English.

    ``code`` is the message catalogue's id of the refusal (``refusal.no_credit``; "" when
    there is none) and ``params`` its placeholders, so that a front speaks the user's
    language: ``translator(language).text(e.code, **e.params) if e.code else str(e)``.
    """

    def __init__(self, message: str, code: str = "", **params: Any) -> None:
        super().__init__(message)
        self.code = code
        self.params = params

    @classmethod
    def of(cls, code: str, **params: Any) -> CallbackRefused:
        """The refusal ``code`` of the catalogue, its English text as the message."""
        return cls(translator(DEFAULT_LANGUAGE).text(code, **params), code, **params)


class UnknownSession(CallbackRefused):
    """No session in flight has that id."""
