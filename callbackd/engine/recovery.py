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

With several switches (:class:`~callbackd.switches.SwitchPool`) each session is
reconciled with the channel list of the switch it runs on (its recorded
``switch``), and a :class:`~callbackd.switch.SwitchConnected` reconciles only the
sessions of the switch that came back. A session on a switch no longer configured
is reconciled with an empty list (its legs billed up to when they were last seen).
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
from callbackd.switch import SwitchError
from callbackd.switches import SwitchPool

__all__ = ["Recovery"]

log = Logger(namespace="callbackd.engine")


class Recovery:
    """Loads this node's sessions from the store and reconciles them with their switches.

    ``adopt(session_id, state)`` tracks a loaded session; ``deliver(session_id, item)``
    steps one with the :class:`~callbackd.core.session.Reconcile` found.
    """

    def __init__(
        self,
        clock: IReactorTime,
        store: IStore,
        switches: SwitchPool,
        sessions: SessionTable,
        *,
        adopt: Callable[[str, machine.SessionState], None],
        deliver: Callable[[str, machine.Reconcile], None],
        claim: Callable[[str], defer.Deferred[bool]] | None = None,
    ) -> None:
        self.clock = clock
        self.store = store
        self.switches = switches
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
        #: the recoveries running or waiting their turn: (switch or None for all, result)
        self._pending: list[tuple[str | None, defer.Deferred[None]]] = []
        #: one recovery at a time (the sessions' loading and adoption)
        self._lock = defer.DeferredLock()
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

    def recover(self, switch: str | None = None) -> defer.Deferred[None]:
        """Load the sessions in flight and reconcile them with the switches' channels.

        ``switch``: reconcile only the sessions on the switch of that name (it just
        came back); None: on every switch. A recovery running or waiting that covers
        the request (of every switch, or of the same one) answers it.
        """
        for key, running in self._pending:
            if key is None or key == switch or len(self.switches) == 1:
                return running

        def done(result: object) -> None:
            if entry in self._pending:
                self._pending.remove(entry)

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
                if self._retry_call is None or not self._retry_call.active():
                    self._retry_call = self.clock.callLater(self.retry, self.recover)
                return
            log.failure("recovery failed; it runs again on the next switch connect", failure)

        d = self._lock.run(lambda: defer.ensureDeferred(self._recover(switch)))
        d.addCallbacks(succeeded, failed)
        # pending until it has fired (at once, when nothing waits: done removes it then)
        entry = (switch, d)
        self._pending.append(entry)
        d.addBoth(done)
        return d

    async def _recover(self, switch: str | None) -> None:
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
            # a session saved before sessions recorded their switch ran on the only one
            state.switch = state.switch or self.switches.default
            self._adopt(session_id, state)
            loaded.add(session_id)
            log.info("recovered session {session_id}", session_id=session_id)
        if switch is None:
            self._reconcile_unplaced(loaded)
        for name in self.switches if switch is None else (switch,):
            if not len(sessions):
                return
            try:
                await self._reconcile(name, loaded)
            except SwitchError as e:
                # the switch refused (it is shutting down, say): no fault of the daemon's
                log.warn(
                    "recovery of switch {switch} stopped ({error}); it runs again when the"
                    " switch reconnects",
                    switch=name,
                    error=e,
                )
            except Exception:
                # that switch went away again (or its list failed): its sessions are
                # reconciled when it reconnects; the other switches' are not held up
                log.failure(
                    "recovery of switch {switch} failed; it runs again when the switch reconnects",
                    switch=name,
                )

    async def _reconcile(self, name: str, loaded: set[str]) -> None:
        """Reconcile the sessions on the switch ``name`` with its channel list."""
        switch = self.switches[name]
        if not switch.connected:
            return  # reconciled when it comes back (SwitchConnected)
        sessions = self.sessions
        # only the sessions known when the list was asked for: one started meanwhile
        # originated its legs after the list was made, and would be found gone from it
        known = sessions.ids_on(name)
        if not known:
            return
        asked_at = self.clock.seconds()
        channels = await switch.list_channels()
        live = {info.channel_id: info.state for info in channels}
        # read after the list: the FullyBooted of a reconnect comes before its answer
        started_at = switch.started_at
        for session_id in known:
            if session_id in sessions:
                # a session run by this process may have dialled while the list was made;
                # one loaded from the store (a restart) dialled nothing since
                since = None if session_id in loaded else asked_at
                self._deliver(session_id, machine.Reconcile(live, since, started_at))
        log.info(
            "switch {switch}: {count} sessions reconciled with its {channels} channels",
            switch=name,
            count=len(known),
            channels=len(live),
        )

    def _reconcile_unplaced(self, loaded: set[str]) -> None:
        """Sessions loaded on a switch no longer configured: none of their legs is seen."""
        for session_id in loaded:
            state = self.sessions.get(session_id)
            if state is not None and state.switch not in self.switches:
                log.warn(
                    "session {session_id} ran on switch {switch}, which is no longer"
                    " configured: its legs count as gone",
                    session_id=session_id,
                    switch=state.switch,
                )
                self._deliver(session_id, machine.Reconcile({}))
