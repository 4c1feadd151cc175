"""What the engine tells a caller it will not do."""

from __future__ import annotations

__all__ = ["CallbackRefused", "UnknownSession"]


class CallbackRefused(Exception):
    """A request the manager will not carry out; ``str()`` is fit for the user."""


class UnknownSession(CallbackRefused):
    """No session in flight has that id."""
