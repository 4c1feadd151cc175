"""The sessions' timers (ring, credit, release, backstop) on the injected clock."""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime

__all__ = ["SessionTimers"]


class SessionTimers:
    """Named timers per session; ``fired(session_id, name)`` is called when one expires."""

    def __init__(self, clock: IReactorTime, fired: Callable[[str, str], None]) -> None:
        self.clock = clock
        self._fired = fired
        self._calls: dict[str, dict[str, IDelayedCall]] = {}

    def arm(self, session_id: str, name: str, seconds: float) -> None:
        """(Re)arm the session's timer ``name`` to fire in ``seconds``."""
        self.cancel(session_id, name)
        calls = self._calls.setdefault(session_id, {})
        calls[name] = self.clock.callLater(seconds, self._expire, session_id, name)

    def cancel(self, session_id: str, name: str) -> None:
        """Cancel the session's timer ``name``, if armed."""
        calls = self._calls.get(session_id)
        if calls is not None:
            call = calls.pop(name, None)
            if call is not None and call.active():
                call.cancel()
            if not calls:
                del self._calls[session_id]

    def cancel_session(self, session_id: str) -> None:
        """Cancel every timer of the session."""
        for call in self._calls.pop(session_id, {}).values():
            if call.active():
                call.cancel()

    def cancel_all(self) -> None:
        """Cancel every timer."""
        for session_id in list(self._calls):
            self.cancel_session(session_id)

    def _expire(self, session_id: str, name: str) -> None:
        calls = self._calls.get(session_id)
        if calls is not None:
            calls.pop(name, None)
            if not calls:
                del self._calls[session_id]
        self._fired(session_id, name)
