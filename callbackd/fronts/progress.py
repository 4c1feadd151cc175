"""A front's session events, and the end of its reactor turn where its texts go out.

:class:`ProgressBatcher` subscribes a front to the engine's session events while it
runs: every event is passed on at once (``tell``); the front tells it to the session's
watchers of its own (:meth:`SessionManager.watchers_of
<callbackd.engine.manager.SessionManager.watchers_of>`: recorded with the session, so
a session started before its id was known to the front, or taken over from another
daemon, is told from its first event on), gathers the texts and asks for a flush at the
end of the turn (:meth:`~ProgressBatcher.flush_soon`), so the texts of one turn leave
together: one chat message per JID, one SMS per session. How the texts are merged is
the front's own (a chat reply goes before the progress it caused; an SMS is fitted to
its parts).

``owned``: only the events of the sessions this daemon runs (a front whose every
daemon would send the same message, SMS: the owner's tells it, once); otherwise the
other daemons' sessions' events too (the chat front: only the daemon whose component
is connected reaches the JIDs).
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from callbackd.core.session import SessionEvent
from callbackd.engine.manager import SessionManager

__all__ = ["ProgressBatcher"]


class ProgressBatcher:
    """The engine's session events to ``tell``; ``flush`` at the end of each turn that
    asked for it (see the module's doc)."""

    def __init__(
        self,
        engine: SessionManager,
        clock: IReactorTime,
        *,
        tell: Callable[[SessionEvent], None],
        flush: Callable[[], None],
        owned: bool = False,
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.tell = tell
        self.flush = flush
        self.owned = owned
        self._flush_call: IDelayedCall | None = None
        self._unsubscribe: Callable[[], None] | None = None

    @property
    def listening(self) -> bool:
        """Whether the engine's session events are heard (between start and stop)."""
        return self._unsubscribe is not None

    def start(self) -> None:
        """Hear the engine's session events."""
        if self._unsubscribe is None:
            self._unsubscribe = self.engine.subscribe(self.tell, owned=self.owned)

    def stop(self) -> None:
        """Stop hearing them; what is waiting to be sent is flushed now."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush()

    def flush_soon(self) -> None:
        """Flush at the end of this reactor turn (once, however often asked)."""
        if self._flush_call is None:
            self._flush_call = self.clock.callLater(0, self._flush)

    def _flush(self) -> None:
        self._flush_call = None
        self.flush()
