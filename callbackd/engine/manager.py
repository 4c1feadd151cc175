"""The session manager: the engine's public API and its step loop.

:mod:`callbackd.core.session` decides; the engine does. The manager validates a
callback request (account, addresses, block list, rates, ``via``, credit, concurrency),
has each leg resolved (:class:`~callbackd.engine.legs.LegResolver`), and then *steps*
the machine with switch events, user commands and timer expiries, one step at a time
(what a step causes waits its turn in a queue), carrying out the effects it returns
through a table (:attr:`SessionManager.effect_kinds`): switch calls (a refused
originate is a ``LegFailed "failed"`` for the machine), timers on the injected clock,
notifications to subscribers, and store writes through the
:class:`~callbackd.engine.writer.SessionWriter`.

After every step that changes a session's billed legs (dialled, answered, released,
ended, charged, added) and on every top-up (:meth:`SessionManager.balance_changed`),
the account is marked dirty, and before the loop rests the
:class:`~callbackd.engine.accounts.AccountBook` gives each session of the account the
account's common deadline (:class:`~callbackd.core.session.CreditDeadline`); each
re-arms its timer and the switch's AbsoluteTimeouts. When the budget runs out every
billed leg of the account is cut at the same instant with ``Reason = OutOfCredit``, or
``Reason = DailyLimit`` when the daily cap is what ran out. A new callback is refused
("Not enough credit...", "Daily spending limit reached.") when the joint time of the
account's live legs and the new ones is 0, and a new callback or ``ADD`` is refused
(:data:`RESTARTING`) while the switch says it is shutting down or restarting. The daily
cap counts a leg on the UTC day it ended; at UTC midnight the accounts with a cap and
calls up are recomputed. The backstops (``AbsoluteTimeout``) a run of the step loop
sets go to the switch when it rests, the last one of each leg only.

Recovery (:class:`~callbackd.engine.recovery.Recovery`) runs at start and on every
:class:`~callbackd.switch.SwitchConnected`; a heartbeat every ``heartbeat_interval``
seconds while the switch is connected tells every session it was seen
(:class:`~callbackd.core.session.Seen`), the bound of what a recovery bills.

With ``[cluster] enabled`` (several daemons on one Redis) the manager has a
:class:`~callbackd.engine.cluster.Cluster`: ``add_leg``, ``drop_leg`` and ``hangup`` of a
session another daemon owns are forwarded to it; ``state_of``, ``status``,
``list_legs`` and ``sessions_of`` also know the other daemons' sessions (their last
state heard); subscribers hear their events too, unless they subscribe ``owned``; a
new session counts among its account's sessions in flight on every daemon, and the
account's credit is shared with its sessions there.

Several switches (:class:`~callbackd.switches.SwitchPool`): a new session is placed on
one by the pool's rule and records its name; every effect of the session goes to that
switch, and each switch's events (connected, lost, shutting down, the heartbeat's
"seen") concern only the sessions placed on it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from callbackd.config import ClusterConfig, Config, GatewaysConfig
from callbackd.core import session as machine
from callbackd.core.credit import DAILY_CAP, LegCharge
from callbackd.core.model import Account, AccountStatus
from callbackd.core.rating import Deck
from callbackd.core.routing import Attempt
from callbackd.engine.accounts import AccountBook
from callbackd.engine.cluster import Cluster
from callbackd.engine.errors import CallbackRefused, UnknownSession
from callbackd.engine.legs import LegResolver
from callbackd.engine.providers import Provider, ProviderStats
from callbackd.engine.recovery import Recovery
from callbackd.engine.sessions import SessionTable
from callbackd.engine.timers import SessionTimers
from callbackd.engine.writer import SessionWriter
from callbackd.i18n import DEFAULT_LANGUAGE, progress, translator
from callbackd.store.interface import IStore, StoreUnavailable
from callbackd.switch import (
    ISwitch,
    LegAnswered,
    LegFailed,
    LegHungUp,
    LegJoined,
    LegRinging,
    RoomCommand,
    SwitchConnected,
    SwitchDisconnected,
    SwitchEvent,
    SwitchShutdown,
)
from callbackd.switches import SwitchPool

__all__ = ["RESTARTING", "SessionManager", "Subscriber"]

#: the refusal of a new callback or leg while the switch is shutting down or restarting
#: (in English; its catalogue id is ``refusal.restarting``)
RESTARTING = translator(DEFAULT_LANGUAGE).text("refusal.restarting")

#: seconds before a balance read that met StoreUnavailable (a failover) is tried again
BALANCE_RETRY = 1.0

log = Logger(namespace="callbackd.engine")

Subscriber = Callable[[machine.SessionEvent], object]


def _credit_signature(state: machine.SessionState) -> tuple[Any, ...]:
    """What of a session matters to its account's credit; a change means: recompute."""
    legs = tuple(
        (leg.state, leg.answered_at, bool(leg.release_cause), leg.charged, leg.attempt)
        for leg in state.legs
    )
    return (state.phase, state.reason, legs)


class SessionManager:
    """Runs every callback session of this daemon (see the module docstring).

    Nothing happens before :meth:`start` (listener, heartbeat, recovery); :meth:`stop`
    cancels the timers and leaves the sessions in the store for the next start. Its
    parts are public for reading: :attr:`sessions`, :attr:`book`, :attr:`stats`,
    :attr:`legs`, :attr:`writer`, :attr:`recovery`, :attr:`timers`, :attr:`switches`
    (``switch`` is one switch, or a :class:`~callbackd.switches.SwitchPool`) and
    :attr:`switch` (the pool's default switch).
    """

    def __init__(
        self,
        clock: IReactorTime,
        switch: ISwitch | SwitchPool,
        store: IStore,
        *,
        sell_deck: Deck,
        providers: Sequence[Provider],
        node_id: str = "cb1",
        default_region: str = "DE",
        gateways: GatewaysConfig | None = None,
        blocked_prefixes: Sequence[str] = (),
        ring_timeout: int = 45,
        caller_id: str = "",
        routing_window: float = 3600.0,
        min_attempts: int = 5,
        heartbeat_interval: float = 10.0,
        cluster: ClusterConfig | None = None,
    ) -> None:
        self.clock = clock
        self.switches = switch if isinstance(switch, SwitchPool) else SwitchPool.single(switch)
        self.switch = self.switches[self.switches.default]
        self.store = store
        self.providers = {p.name: p for p in providers}
        self.node_id = node_id
        self.ring_timeout = ring_timeout
        self.caller_id = caller_id
        self.heartbeat_interval = heartbeat_interval
        #: the origin of this manager's charges in the store's change feed
        self.origin = f"engine:{node_id}"
        self.sessions = SessionTable(node_id)
        self.stats = ProviderStats(
            clock,
            store,
            list(self.providers),
            routing_window=routing_window,
            min_attempts=min_attempts,
        )
        self.legs = LegResolver(
            self.providers,
            self.stats,
            sell_deck,
            default_region=default_region,
            gateways=gateways,
            blocked_prefixes=blocked_prefixes,
        )
        self.book = AccountBook(
            clock,
            store,
            self.sessions,
            self.origin,
            refresh=self._refresh_balance,
            settle=self._settle_credit,
            others=self._remote_sessions,
        )
        self.writer = SessionWriter(clock, store, self.book)
        #: several daemons on one store (None: this one alone)
        self.cluster = (
            Cluster(clock, store, node_id, cluster) if cluster and cluster.enabled else None
        )
        self.recovery = Recovery(
            clock,
            store,
            self.switches,
            self.sessions,
            adopt=self._put,
            deliver=self._deliver,
            claim=self.cluster.claim if self.cluster else None,
        )
        if self.cluster is not None:
            self.writer.fenced = self.cluster
        self.timers = SessionTimers(clock, self._timer_fired)
        self._subscribers: list[tuple[str | None, Subscriber, bool]] = []
        self._queue: list[tuple[str, Any]] = []
        #: the backstops set in this run of the step loop, per channel: the last one
        #: counts, sent when the loop rests (:meth:`_send_backstops`)
        self._backstops: dict[str, tuple[str, int]] = {}
        self._busy = False
        self._heartbeat: LoopingCall | None = None
        self._listening = False
        #: between start and stop: switch events are heard
        self._running = False
        self._effects: dict[type, Callable[[str, Any], None]] = {
            machine.Originate: self._originate,
            machine.Hangup: self._hangup,
            machine.JoinRoom: self._join_room,
            machine.ReturnToIvr: self._return_to_ivr,
            machine.SetAbsoluteTimeout: self._set_absolute_timeout,
            machine.ArmTimer: lambda sid, effect: self.timers.arm(sid, effect.name, effect.seconds),
            machine.CancelTimer: lambda sid, effect: self.timers.cancel(sid, effect.name),
            machine.Notify: lambda sid, effect: self._publish(effect.event),
            machine.ChargeLeg: self.writer.charge,
            machine.RecordAttempt: self._record_attempt,
            machine.Persist: self._persist,
            machine.Finished: self._finish,
        }
        #: what a switch event does, by its type: ``handler(switch name, event)``
        self._switch_events: dict[type, Callable[[str, Any], object]] = {
            SwitchConnected: lambda name, event: self.recovery.recover(name),
            SwitchDisconnected: self._switch_lost,
            SwitchShutdown: self._switch_shutdown,
            RoomCommand: self._room_command,
            LegRinging: self._leg_event,
            LegAnswered: self._leg_event,
            LegJoined: self._leg_event,
            LegFailed: self._leg_event,
            LegHungUp: self._leg_event,
        }

    @classmethod
    def from_config(
        cls,
        config: Config,
        clock: IReactorTime,
        switch: ISwitch | SwitchPool,
        store: IStore,
        *,
        sell_deck: Deck,
        providers: Sequence[Provider],
    ) -> SessionManager:
        """A manager set up from the daemon's configuration."""
        return cls(
            clock,
            switch,
            store,
            sell_deck=sell_deck,
            providers=providers,
            node_id=config.daemon.node_id,
            default_region=config.billing.default_region,
            gateways=config.gateways,
            blocked_prefixes=config.routing.blocked,
            ring_timeout=config.ami.ring_timeout,
            # with [switch:NAME] sections each switch presents its own caller_id
            caller_id="" if config.switches else config.ami.caller_id,
            routing_window=config.routing.window,
            min_attempts=config.routing.min_attempts,
            cluster=config.cluster,
        )

    # -- read-only views ----------------------------------------------------------------

    @property
    def effect_kinds(self) -> frozenset[type]:
        """The kinds of effect the manager carries out."""
        return frozenset(self._effects)

    @property
    def recovery_retry(self) -> float:
        """Seconds before a recovery the store refused is tried again."""
        return self.recovery.retry

    def state_of(self, session_id: str) -> machine.SessionState | None:
        """The session's current state (do not change it), or None if not tracked.

        With several daemons: the last state heard of another daemon's session.
        """
        state = self.sessions.get(session_id)
        if state is None and self.cluster is not None:
            return self.cluster.mirror.get(session_id)
        return state

    def is_local(self, session_id: str) -> bool:
        """Whether this daemon runs the session (owns it)."""
        return session_id in self.sessions

    # -- life cycle ---------------------------------------------------------------------

    def start(self) -> defer.Deferred[None]:
        """Listen to the switch, start the heartbeat, recover the sessions in flight."""
        if not self._listening:
            self.switches.add_listener(self._switch_event)
            self._listening = True
        self._running = True
        self._heartbeat = LoopingCall(self._beat)
        self._heartbeat.clock = self.clock
        self._heartbeat.start(self.heartbeat_interval, now=False)
        self.book.start()
        self.recovery.active = True
        recovered = self.recover()
        if self.cluster is not None:
            self.cluster.start(self)
        return recovered

    def stop(self) -> None:
        """Stop the heartbeat and every timer; the sessions stay in the store.

        The switch's events are not heard any more: the switch going away as the
        daemon stops is no news (and no warning).
        """
        self._running = False
        if self._heartbeat is not None and self._heartbeat.running:
            self._heartbeat.stop()
        self.recovery.stop()
        if self.cluster is not None:
            self.cluster.stop()
        self.timers.cancel_all()
        self.book.stop()
        self.writer.save_all()

    def recover(self) -> defer.Deferred[None]:
        """Load the sessions in flight and reconcile them with the switch's channels."""
        return self.recovery.recover()

    # -- requests -----------------------------------------------------------------------

    def start_callback(
        self,
        username: str,
        source: str,
        destination: str,
        via: Sequence[str] = (),
        origin: str | None = None,
        watcher: machine.Watcher | None = None,
    ) -> defer.Deferred[str]:
        """Start a callback; fire with the session id or errback CallbackRefused.

        ``watcher``: who a front tells the session's progress, from its first event on
        (recorded with the session: see :meth:`watch`).
        """
        watchers = () if watcher is None else (watcher,)
        return defer.ensureDeferred(
            self._start_callback(username, source, destination, tuple(via), origin or "", watchers)
        )

    def start_ivr_callback(
        self, username: str, source: str, origin: str | None = None
    ) -> defer.Deferred[str]:
        """Start a phone callback steered by the IVR: call ``source`` back and have the
        IVR answer it (docs/ivr.rst); fire with the session id or errback
        CallbackRefused. The IVR calls every destination in with :meth:`add_leg`."""
        return defer.ensureDeferred(
            self._start_callback(username, source, None, (), origin or "ivr")
        )

    def quote_leg(self, session_id: str, address: str) -> defer.Deferred[tuple[str, int | None]]:
        """The address and the longest call (whole seconds; None: unlimited) the session's
        account could make to ``address`` now, with its legs up; CallbackRefused when
        the address is malformed, blocked or has no rate."""
        return defer.ensureDeferred(self._quote_leg(session_id, address))

    async def _quote_leg(self, session_id: str, address: str) -> tuple[str, int | None]:
        state = self._state(session_id)
        leg_address = self.legs.address(address)
        spec = await self.legs.leg_spec(leg_address, None)
        if spec.rate is None or spec.rate.is_free:
            return str(leg_address), None
        account = await self.account(state.username)
        if account is None:
            raise CallbackRefused.of("refusal.unknown_account")
        book = self.book
        ledger = book.ledger(account) or await book.load_ledger(account)
        seconds = book.allowance(state.username, ledger, [LegCharge(spec.rate)]).seconds
        return str(leg_address), None if seconds is None else int(seconds)

    async def _start_callback(
        self,
        username: str,
        source: str,
        destination: str | None,
        via: tuple[str, ...],
        origin: str,
        watchers: tuple[machine.Watcher, ...] = (),
    ) -> str:
        book = self.book
        account = book.account(username)
        read = None
        if account is None:
            read = book.read_mark(username)
            account = await self.store.get_account(username)
            if account is None:
                raise CallbackRefused.of("refusal.unknown_account")
        if account.status is not AccountStatus.ACTIVE:
            raise CallbackRefused.of("refusal.account_blocked")
        if len(via) > 2:
            raise CallbackRefused.of("refusal.too_many_providers")
        addresses = [self.legs.address(source)]
        if destination is not None:
            addresses.append(self.legs.address(destination))
        if addresses[0] == addresses[-1] and destination is not None:
            what = "number" if addresses[0].kind == "phone" else "address"
            raise CallbackRefused.of(f"refusal.same_{what}")
        forced = [self.legs.provider_name(name) for name in via] + [None, None]
        if len(self.sessions.ids_of(username)) >= account.max_sessions:
            raise CallbackRefused.of("refusal.too_many_sessions", count=account.max_sessions)
        specs = [
            await self.legs.leg_spec(address, provider)
            for address, provider in zip(addresses, forced[:2])
        ]
        ledger = book.ledger(account)
        if ledger is None:
            if read is None:
                read = book.read_mark(username)
            ledger = await book.load_ledger(account)
        if read is not None:
            # nothing changed the account while it was read: keep it and its ledger for
            # the next calls, until the change feed tells of a change
            book.keep(account, ledger, read)
        billed = [LegCharge(s.rate) for s in specs if s.rate is not None and not s.rate.is_free]
        if billed:
            # what the account's other sessions are about to consume counts too
            allowance = book.allowance(username, ledger, billed)
            if allowance.seconds == 0:
                if allowance.limit == DAILY_CAP:
                    raise CallbackRefused.of("refusal.daily_limit")
                raise CallbackRefused.of("refusal.no_credit")
        switch = self._place()
        session_id = self.sessions.new_id(self.clock.seconds())
        try:
            state, effects = machine.start(
                session_id,
                username,
                specs[0],
                specs[1] if destination is not None else None,
                balance=ledger.balance,
                now=self.clock.seconds(),
                credit_limit=account.credit_limit,
                ring_timeout=self.ring_timeout,
                caller_id=self.caller_id,
                origin=origin,
                owner=self.node_id,
                switch=switch,
                watchers=watchers,
            )
        except machine.SessionError as e:
            raise CallbackRefused(str(e), e.code, **e.params) from None
        # several daemons: the account's sessions in flight on all of them, counted in
        # Redis once the session is sure to start (nothing to release on a refusal)
        cluster = self.cluster
        if cluster is not None and not await cluster.open(
            session_id, username, account.max_sessions
        ):
            raise CallbackRefused.of("refusal.too_many_sessions", count=account.max_sessions)
        self._put(session_id, state)
        book.adopt(username, ledger)
        log.info(
            "session {session_id} of {username}: {source} -> {destination}",
            session_id=session_id,
            username=username,
            source=str(addresses[0]),
            destination=str(addresses[-1]) if destination is not None else "the IVR",
        )
        if self._busy:
            self._execute(session_id, effects)
        else:
            self._exclusively(self._execute, session_id, effects)
        return session_id

    def account(self, username: str) -> defer.Deferred[Account | None]:
        """The account as the engine knows it (None: no such account).

        From the account book while it keeps the account (the store's change feed is
        live and told of no change since it was read), else read from the store and
        kept for the next calls as :meth:`start_callback` keeps it.
        """
        account = self.book.account(username)
        if account is not None:
            return defer.succeed(account)
        return defer.ensureDeferred(self._read_account(username))

    async def _read_account(self, username: str) -> Account | None:
        read = self.book.read_mark(username)
        account = await self.store.get_account(username)
        if account is not None:
            self.book.keep(account, None, read)
        return account

    def account_changed(self, username: str) -> None:
        """The caller changed the account in the store: the next call reads it again.

        The change feed tells it too, but maybe only after the caller's next request.
        """
        self.book.changed(username)

    def add_leg(
        self, session_id: str, address: str, provider: str | None = None
    ) -> defer.Deferred[None]:
        """``ADD``: call one more party into a connected session (forwarded to its owner
        when another daemon runs it)."""
        if self._remote(session_id):
            return self._forward(session_id, "add", [address, provider])
        return defer.ensureDeferred(self._add_leg(session_id, address, provider))

    async def _add_leg(self, session_id: str, address: str, provider: str | None) -> None:
        self._refuse_while_shutting_down(self._state(session_id).switch)
        leg_address = self.legs.address(address)
        name = self.legs.provider_name(provider) if provider else None
        spec = await self.legs.leg_spec(leg_address, name)
        self._command(session_id, machine.AddLeg(spec))

    def _refuse_while_shutting_down(self, switch: str) -> None:
        """A switch going away refuses every call: refuse a new leg on it at once."""
        if self._switch_named(switch).shutting_down:
            raise CallbackRefused.of("refusal.restarting")

    def _place(self) -> str:
        """The switch a new session goes to (:meth:`SwitchPool.place`); CallbackRefused
        when none is usable."""
        switches = self.switches
        switch = switches.place(self.sessions.count_on)
        if switch is None:
            if not switches.connected:
                # nothing could be dialled: say so now, not after failing every provider
                raise CallbackRefused.of("refusal.switch_unreachable")
            raise CallbackRefused.of("refusal.restarting")
        return switch

    def _switch_named(self, name: str) -> ISwitch:
        """The switch a session recorded (a name no longer configured: the default)."""
        switches = self.switches
        return switches[switches.name_of(name) or switches.default]

    def _switch_of(self, session_id: str) -> ISwitch:
        """The switch the session runs on."""
        state = self.sessions.get(session_id)
        return self._switch_named(state.switch if state is not None else "")

    def drop_leg(self, session_id: str, address_or_role: str) -> defer.Deferred[None]:
        """``DEL``: hang up an additional leg (by address, leg name or letter)."""
        if self._remote(session_id):
            return self._forward(session_id, "drop", [address_or_role])
        target = self.legs.leg_name(address_or_role)
        return defer.maybeDeferred(self._command, session_id, machine.DropLeg(target))

    def hangup(self, session_id: str) -> defer.Deferred[None]:
        """``HANGUP``: end the session and every leg."""
        if self._remote(session_id):
            return self._forward(session_id, "hangup", [])
        return defer.maybeDeferred(self._command, session_id, machine.HangupSession())

    def watch(self, session_id: str, watcher: machine.Watcher) -> defer.Deferred[None]:
        """Record ``watcher`` with the session: a front tells it the session's progress,
        on whichever daemon runs the session or serves the front (forwarded to the
        owner; the record travels with the session's state, through a takeover too).
        Replaces the record of the same front and address."""
        if self._remote(session_id):
            return self._forward(session_id, "watch", [watcher.to_dict()])
        return defer.maybeDeferred(self._command, session_id, machine.Watch(watcher))

    def unwatch(self, session_id: str, front: str, address: str) -> defer.Deferred[None]:
        """Forget the watcher ``address`` of ``front`` of the session."""
        if self._remote(session_id):
            return self._forward(session_id, "unwatch", [front, address])
        return defer.maybeDeferred(self._command, session_id, machine.Unwatch(front, address))

    def watchers_of(self, session_id: str) -> tuple[machine.Watcher, ...]:
        """Who the fronts tell the session's progress (this daemon's session or another's
        as last heard; during its ``session_ended`` event too); () if unknown."""
        state = self.state_of(session_id)
        return () if state is None else state.watchers

    def list_legs(self, session_id: str, language: str = DEFAULT_LANGUAGE) -> str:
        """The ``LIST`` reply, in ``language`` (:data:`callbackd.i18n.LANGUAGES`)."""
        legs = machine.summary(self._view(session_id))["legs"]
        return progress.list_text(legs, translator(language))

    def rate_of(self, address: str) -> int:
        """``RATE``: the sell price per minute, in minor units, of calling ``address``.

        0 for a free leg (a gateway address); CallbackRefused when the address is
        malformed, blocked or has no rate, as a callback to it would be.
        """
        return self.legs.rate_of(self.legs.address(address))

    def status(self, session_id: str) -> dict[str, Any]:
        """A JSON-able summary of the session."""
        return machine.summary(self._view(session_id))

    def sessions_of(self, username: str) -> list[str]:
        """The ids of the account's sessions in flight, oldest first (with several
        daemons: this daemon's, then the others' it heard of)."""
        ids = self.sessions.ids_of(username)
        if self.cluster is not None:
            mirror = self.cluster.mirror
            others = [sid for sid, s in mirror.items() if s.username == username and not s.finished]
            ids += sorted(others, key=lambda sid: mirror[sid].created_at)
        return ids

    def subscribe(
        self, callback: Subscriber, session_id: str | None = None, *, owned: bool = False
    ) -> Callable[[], None]:
        """Deliver SessionEvents (of one session, or all) to ``callback``; return an undo.

        With several daemons the events of the others' sessions come too, unless
        ``owned`` (what must happen once, e.g. a webhook: the owner's).
        """
        entry = (session_id, callback, owned)
        self._subscribers.append(entry)

        def unsubscribe() -> None:
            if entry in self._subscribers:
                self._subscribers.remove(entry)

        return unsubscribe

    def balance_changed(self, username: str) -> defer.Deferred[None]:
        """The account's balance changed (top-up): recompute its sessions' credit."""
        return defer.ensureDeferred(self._balance_changed(username))

    async def _balance_changed(self, username: str) -> None:
        if not self.sessions.ids_of(username):
            return
        balance = await self.book.read_balance(username)
        for session_id in self.sessions.ids_of(username):
            self._deliver(session_id, machine.BalanceChanged(balance))
        self._settle_credit()

    def _refresh_balance(self, username: str) -> None:
        def failed(failure: Failure) -> None:
            if failure.check(StoreUnavailable):
                # a failover's gap (the change feed may be back before the commands):
                # what changed meanwhile must still reach the sessions' credit
                log.warn(
                    "credit of {username}: the balance cannot be read now ({error});"
                    " read again in {delay} s",
                    username=username,
                    error=failure.getErrorMessage(),
                    delay=BALANCE_RETRY,
                )
                self.clock.callLater(BALANCE_RETRY, self._refresh_balance, username)
                return
            log.failure("credit of {username}: cannot read the balance", failure, username=username)

        self.balance_changed(username).addErrback(failed)

    def _settle_credit(self) -> None:
        """Recompute the accounts marked dirty now, unless a step is under way (it will)."""
        if self.book.dirty and not self._busy:
            self._exclusively(lambda: None)

    # -- the step loop ------------------------------------------------------------------

    def _put(self, session_id: str, state: machine.SessionState) -> None:
        """Track a session's (new) state."""
        self.sessions.put(session_id, state)
        self.stats.track(session_id, state)

    def _state(self, session_id: str) -> machine.SessionState:
        state = self.sessions.get(session_id)
        if state is None or state.finished:
            raise UnknownSession.of("refusal.unknown_session", session=session_id)
        return state

    def _view(self, session_id: str) -> machine.SessionState:
        """The session's state, this daemon's or another's (its last state heard)."""
        state = self.state_of(session_id)
        if state is None or state.finished:
            raise UnknownSession.of("refusal.unknown_session", session=session_id)
        return state

    # -- several daemons ----------------------------------------------------------------

    def _remote(self, session_id: str) -> bool:
        """Whether a command for the session goes to another daemon."""
        return self.cluster is not None and session_id not in self.sessions

    def _forward(self, session_id: str, op: str, args: list[Any]) -> defer.Deferred[None]:
        assert self.cluster is not None
        return self.cluster.forward(session_id, op, args)

    def run_command(self, op: str, session_id: str, args: list[Any]) -> defer.Deferred[None]:
        """Run a command another daemon forwarded (``add``, ``drop``, ``hangup``,
        ``watch``, ``unwatch``)."""
        commands: dict[str, Callable[..., defer.Deferred[None]]] = {
            "add": self.add_leg,
            "drop": self.drop_leg,
            "hangup": self.hangup,
            "watch": lambda sid, record: self.watch(sid, machine.Watcher.from_dict(record)),
            "unwatch": self.unwatch,
        }
        if op not in commands:
            return defer.fail(CallbackRefused(f"unknown command {op!r}"))
        if session_id not in self.sessions:
            return defer.fail(UnknownSession.of("refusal.unknown_session", session=session_id))
        return commands[op](session_id, *args)

    def deliver_remote(self, event: machine.SessionEvent, username: str) -> None:
        """Hand another daemon's session event to the subscribers (not the owned-only);
        the account's sessions here recompute their shared credit."""
        self._notify(event, remote=True)
        if self.sessions.ids_of(username):
            self.book.dirty.add(username)
            self._settle_credit()

    def _remote_sessions(self, username: str) -> list[machine.SessionState]:
        """The account's sessions on the other daemons, as last heard."""
        if self.cluster is None:
            return []
        mirror = self.cluster.mirror.values()
        return [s for s in mirror if s.username == username and not s.finished]

    def disown(self, session_id: str) -> None:
        """Another daemon owns the session now: forget it without touching its legs."""
        self.timers.cancel_session(session_id)
        self._backstops = {c: b for c, b in self._backstops.items() if b[0] != session_id}
        self.writer.forget(session_id)
        self.sessions.drop(session_id)
        self.stats.untrack(session_id)

    def _command(self, session_id: str, command: Any) -> None:
        """Apply a user command; SessionError becomes CallbackRefused."""
        self._state(session_id)
        self._apply(session_id, command, refuse=True)

    def _deliver(self, session_id: str, event: Any) -> None:
        """Step the session with a switch event, timer or internal command."""
        self._apply(session_id, event, refuse=False)

    def _apply(self, session_id: str, item: Any, refuse: bool) -> None:
        """Step the machine; what effects cause meanwhile waits its turn in the queue."""
        if self._busy:
            self._queue.append((session_id, item))
            return
        self._exclusively(self._step, session_id, item, refuse)

    def _exclusively(self, first: Callable[..., None], *args: Any) -> None:
        """Run ``first``, then everything it queued, one step at a time."""
        self._busy = True
        book, queue = self.book, self._queue
        try:
            first(*args)
            while queue or book.dirty:
                while queue:
                    sid, queued = queue.pop(0)
                    self._step(sid, queued, False)
                if book.dirty:
                    queue += book.share_credit(book.dirty.pop())
        finally:
            self._busy = False
            self._send_backstops()

    def _step(self, session_id: str, item: Any, refuse: bool) -> None:
        state = self.sessions.get(session_id)
        if state is None:
            return
        try:
            new, effects = machine.step(state, item, self.clock.seconds())
        except machine.SessionError as e:
            if refuse:
                raise CallbackRefused(str(e), e.code, **e.params) from None
            log.info("session {session_id}: {error}", session_id=session_id, error=str(e))
            return
        self._put(session_id, new)
        if _credit_signature(new) != _credit_signature(state):
            self.book.dirty.add(new.username)
        self._execute(session_id, effects)

    # -- switch events ------------------------------------------------------------------

    def _switch_event(self, name: str, event: SwitchEvent) -> None:
        handler = self._switch_events.get(type(event))
        if handler is not None and self._running:
            handler(name, event)

    def _switch_lost(self, name: str, event: SwitchDisconnected) -> None:
        if len(self.switches) > 1:
            log.warn("switch {switch} lost: {reason}", switch=name, reason=event.reason)
        else:
            log.warn("switch lost: {reason}", reason=event.reason)
        self._see_all(self.sessions.ids_on(name))

    def _switch_shutdown(self, name: str, event: SwitchShutdown) -> None:
        """The switch is going away and takes every leg on it with it."""
        for session_id in self.sessions.ids_on(name):
            self._deliver(session_id, machine.SwitchLost())

    def _room_command(self, name: str, event: RoomCommand) -> None:
        """A command keyed in a session's room (the room is the session id)."""
        if event.room in self.sessions:
            log.info(
                "session {session_id}: {command} keyed in the room",
                session_id=event.room,
                command=event.command,
            )
            self._deliver(event.room, event)

    def _leg_event(
        self, name: str, event: LegRinging | LegAnswered | LegJoined | LegFailed | LegHungUp
    ) -> None:
        session_id = event.channel_id.rpartition("-")[0]
        if session_id in self.sessions:
            self._deliver(session_id, event)

    def _beat(self) -> None:
        for name, switch in self.switches.items():
            if switch.connected:
                self._see_all(self.sessions.ids_on(name))

    def _see_all(self, session_ids: Iterable[str]) -> None:
        """Tell the sessions they were seen now (the bound of what a recovery bills)."""
        for session_id in session_ids:
            self._deliver(session_id, machine.Seen())

    # -- effects ------------------------------------------------------------------------

    def _execute(self, session_id: str, effects: Iterable[machine.Effect]) -> None:
        table = self._effects
        for effect in effects:
            try:
                table[type(effect)](session_id, effect)
            except Exception:
                log.failure("session {session_id}: {effect}", session_id=session_id, effect=effect)

    def _originate(self, sid: str, effect: machine.Originate) -> None:
        # the progress log says "Calling ... via PROVIDER"; the switch logs the channel
        request = effect.request

        def refused(failure: Failure) -> None:
            log.warn(
                "originate {channel_id} refused: {error}",
                channel_id=request.channel_id,
                error=failure.getErrorMessage(),
            )
            self._deliver(sid, LegFailed(request.channel_id, self.clock.seconds(), "failed"))

        self._switch_of(sid).originate(request).addErrback(refused)

    def _hangup(self, sid: str, effect: machine.Hangup) -> None:
        self._backstops.pop(effect.channel_id, None)  # no backstop for a leg going now
        switch = self._switch_of(sid)
        self._switch_call(sid, "hangup", switch.hangup, effect.channel_id, effect.cause)

    def _join_room(self, sid: str, effect: machine.JoinRoom) -> None:
        switch = self._switch_of(sid)
        self._switch_call(sid, "join_room", switch.join_room, effect.channel_id, effect.room)

    def _return_to_ivr(self, sid: str, effect: machine.ReturnToIvr) -> None:
        self._switch_call(
            sid, "return_to_ivr", self._switch_of(sid).return_to_ivr, effect.channel_id, effect.room
        )

    def _set_absolute_timeout(self, sid: str, effect: machine.SetAbsoluteTimeout) -> None:
        # the steps of one input (a switch event, the account's credit recompute) may
        # each move a leg's cut: only the last one goes to the switch
        self._backstops[effect.channel_id] = (sid, effect.seconds)

    def _send_backstops(self) -> None:
        """Send each leg's last backstop of this run of the step loop."""
        backstops, self._backstops = self._backstops, {}
        for channel_id, (sid, seconds) in backstops.items():
            call = self._switch_of(sid).set_absolute_timeout
            self._switch_call(sid, "set_absolute_timeout", call, channel_id, seconds)

    def _switch_call(self, sid: str, what: str, call: Callable[..., Any], *args: Any) -> None:
        def failed(failure: Failure) -> None:
            log.warn(
                "session {session_id}: {what}{args} failed: {error}",
                session_id=sid,
                what=what,
                args=args,
                error=failure.getErrorMessage(),
            )

        call(*args).addErrback(failed)

    def _timer_fired(self, sid: str, name: str) -> None:
        self._deliver(sid, machine.TimerFired(name))

    def _publish(self, event: machine.SessionEvent) -> None:
        if self.cluster is not None:
            self.cluster.publish(event, self.sessions.get(event.session_id))
        self._notify(event, remote=False)

    def _notify(self, event: machine.SessionEvent, remote: bool) -> None:
        for session_id, callback, owned in list(self._subscribers):
            if (session_id is not None and session_id != event.session_id) or (owned and remote):
                continue
            try:
                callback(event)
            except Exception:
                log.failure(
                    "subscriber {callback!r} failed on {kind}", callback=callback, kind=event.kind
                )

    def _record_attempt(self, sid: str, effect: machine.RecordAttempt) -> None:
        if not effect.provider:
            return
        self.stats.add(
            Attempt(effect.provider, effect.at, effect.answered, effect.duration, effect.pdd)
        )
        self.writer.record_attempt(sid, effect)

    def _persist(self, sid: str, effect: machine.Persist) -> None:
        state = self.sessions.get(sid)
        if state is not None and not state.finished:
            self.writer.persist(sid, state)

    def _finish(self, sid: str, effect: machine.Finished) -> None:
        self.timers.cancel_session(sid)
        self._backstops = {c: b for c, b in self._backstops.items() if b[0] != sid}
        self.sessions.drop(sid)
        self.stats.untrack(sid)
        self.writer.end(sid, effect.cdr)
        log.info("session {session_id} ended: {reason}", session_id=sid, reason=effect.cdr.cause)
