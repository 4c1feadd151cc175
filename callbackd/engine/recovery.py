"""Recovery: the sessions in flight, taken back from the store and checked on the switch.

Run at start and on every :class:`~callbackd.switch.SwitchConnected`: the sessions in
flight are loaded from the store and reconciled with :meth:`ISwitch.list_channels`.
Legs still live stay tracked (their credit timers are re-armed from the stored answer
times); legs that ended meanwhile are billed up to the last moment the daemon knew them
up (the session's ``seen_at``, persisted by a heartbeat while the switch is connected),
never beyond the AbsoluteTimeout the switch enforced. That never charges more than the
real call could have cost and undercharges by at most one heartbeat; charges keyed by
CDR id make a repeated settlement a no-op. A session records its owner (the daemon's
``node_id``): a daemon sharing the store with others recovers only its own sessions
(with ``[cluster]``: those it can claim, :class:`~callbackd.engine.cluster.Cluster`),
and judges a leg by the channel list only if it could be in it (a session of this
process that dialled while the list was being made is left to its ring timer).
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from callbackd.core import session as machine
from callbackd.engine.sessions import SessionTable
from callbackd.store.interface import IStore, StoreError
from callbackd.switch import ISwitch

__all__ = ["Recovery"]

log = Logger(namespace="callbackd.engine")


class Recovery:
    """Loads this node's sessions from the store and reconciles them with the switch.

    ``adopt(session_id, state)`` tracks a loaded session; ``deliver(session_id, item)``
    steps one with the :class:`~callbackd.core.session.Reconcile` found.
    """

    def __init__(
        self,
        clock: IReactorTime,
        store: IStore,
        switch: ISwitch,
        sessions: SessionTable,
        *,
        adopt: Callable[[str, machine.SessionState], None],
        deliver: Callable[[str, machine.Reconcile], None],
        claim: Callable[[str], defer.Deferred[bool]] | None = None,
    ) -> None:
        self.clock = clock
        self.store = store
        self.switch = switch
        self.sessions = sessions
        self._adopt = adopt
        self._deliver = deliver
        #: with several daemons: become the owner of a session before taking it back
        #: (False: a live daemon holds it)
        self._claim = claim
        #: seconds before a recovery the store refused is tried again
        self.retry = 2.0
        #: whether a failed recovery is retried (between start and stop)
        self.active = False
        self._running: defer.Deferred[None] | None = None
        self._retry_call: IDelayedCall | None = None
        self._succeeded = False

    @property
    def recovered(self) -> bool:
        """Whether a recovery has succeeded once."""
        return self._succeeded

    def stop(self) -> None:
        """No more retries."""
        self.active = False
        if self._retry_call is not None and self._retry_call.active():
            self._retry_call.cancel()

    def recover(self) -> defer.Deferred[None]:
        """Load the sessions in flight and reconcile them with the switch's channels."""
        if self._running is not None:
            return self._running

        def done(result: object) -> None:
            self._running = None

        def succeeded(_: object) -> None:
            self._succeeded = True

        def failed(failure: Failure) -> None:
            if failure.check(StoreError) and self.active:
                # Redis is not there yet (or went away): try again soon rather than
                # waiting for the next switch reconnect, which may never come. At start
                # (the store still connecting) that is routine, not a warning.
                emit = log.warn if self._succeeded else log.info
                emit(
                    "recovery waits for the store ({why}); retrying in {delay} s",
                    why=failure.getErrorMessage(),
                    delay=self.retry,
                )
                self._retry_call = self.clock.callLater(self.retry, self.recover)
                return
            log.failure("recovery failed; it runs again on the next switch connect", failure)

        d = defer.ensureDeferred(self._recover())
        d.addCallbacks(succeeded, failed)
        if not d.called:
            self._running = d
            d.addBoth(done)
        return d

    async def _recover(self) -> None:
        sessions = self.sessions
        loaded: set[str] = set()
        for session_id in await self.store.list_sessions():
            if session_id in sessions:
                continue
            data = await self.store.load_session(session_id)
            if data is None:
                continue
            state = machine.SessionState.from_dict(data)
            if state.owner and state.owner != sessions.node_id:
                continue  # another daemon's session: its switch, its recovery
            if self._claim is not None and not await self._claim(session_id):
                continue  # another daemon took it over
            if state.finished:
                await self.store.delete_session(session_id)
                continue
            self._adopt(session_id, state)
            loaded.add(session_id)
            log.info("recovered session {session_id}", session_id=session_id)
        if not self.switch.connected or not len(sessions):
            return
        # only the sessions known when the list was asked for: one started meanwhile
        # originated its legs after the list was made, and would be found gone from it
        known = list(sessions)
        asked_at = self.clock.seconds()
        channels = await self.switch.list_channels()
        live = {info.channel_id: info.state for info in channels}
        # read after the list: the FullyBooted of a reconnect comes before its answer
        started_at = self.switch.started_at
        for session_id in known:
            if session_id in sessions:
                # a session run by this process may have dialled while the list was made;
                # one loaded from the store (a restart) dialled nothing since
                since = None if session_id in loaded else asked_at
                self._deliver(session_id, machine.Reconcile(live, since, started_at))
