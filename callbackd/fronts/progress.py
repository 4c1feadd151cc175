"""A front's session events, and the end of its reactor turn where its texts go out.

:class:`ProgressBatcher` subscribes a front to the engine's session events while it
runs. An event of a session the front watches is passed on at once (``tell``); the
front gathers the texts it makes of them and asks for a flush at the end of the turn
(:meth:`~ProgressBatcher.flush_soon`), so the texts of one turn leave together: one
chat message per JID, one SMS per session. How the texts are merged is the front's
own (a chat reply goes before the progress it caused; an SMS is fitted to its parts).

A session started in this turn is not watched yet when it speaks:
``start_callback`` publishes ``session_started`` before its caller learns the session
id. Its events are kept until the end of the turn, for the front that started it to
take (:meth:`~ProgressBatcher.newborn`) once it watches it; then they are forgotten.
"""

from __future__ import annotations

from collections.abc import Callable, Container

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from callbackd.core.session import SessionEvent
from callbackd.engine.manager import SessionManager

__all__ = ["ProgressBatcher"]


class ProgressBatcher:
    """The session events of the sessions in ``watched`` to ``tell``; ``flush`` at the
    end of each turn that asked for it (see the module's doc)."""

    def __init__(
        self,
        engine: SessionManager,
        clock: IReactorTime,
        *,
        watched: Container[str],
        tell: Callable[[SessionEvent], None],
        flush: Callable[[], None],
    ) -> None:
        self.engine = engine
        self.clock = clock
        #: the ids of the sessions the front watches (its own map, read at each event)
        self.watched = watched
        self.tell = tell
        self.flush = flush
        #: the events of the sessions started in this reactor turn that no one watches
        self._newborn: dict[str, list[SessionEvent]] = {}
        self._newborn_call: IDelayedCall | None = None
        self._flush_call: IDelayedCall | None = None
        self._unsubscribe: Callable[[], None] | None = None

    @property
    def listening(self) -> bool:
        """Whether the engine's session events are heard (between start and stop)."""
        return self._unsubscribe is not None

    def start(self) -> None:
        """Hear the engine's session events."""
        if self._unsubscribe is None:
            self._unsubscribe = self.engine.subscribe(self._event)

    def stop(self) -> None:
        """Stop hearing them; what is waiting to be sent is flushed now."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        for call in (self._flush_call, self._newborn_call):
            if call is not None and call.active():
                call.cancel()
        self._newborn_call = None
        self._newborn.clear()
        self._flush()

    def newborn(self, session_id: str) -> list[SessionEvent]:
        """The events a session started in this turn published before it was watched."""
        return self._newborn.pop(session_id, [])

    def flush_soon(self) -> None:
        """Flush at the end of this reactor turn (once, however often asked)."""
        if self._flush_call is None:
            self._flush_call = self.clock.callLater(0, self._flush)

    def _event(self, event: SessionEvent) -> None:
        session_id = event.session_id
        if session_id in self.watched:
            self.tell(event)
        elif event.kind == "session_started" or session_id in self._newborn:
            self._newborn.setdefault(session_id, []).append(event)
            if self._newborn_call is None:
                self._newborn_call = self.clock.callLater(0, self._forget_newborn)

    def _forget_newborn(self) -> None:
        self._newborn_call = None
        self._newborn.clear()

    def _flush(self) -> None:
        self._flush_call = None
        self.flush()
