"""The session manager: runs callback sessions by executing the core machine's effects.

:mod:`callbackd.core.session` decides; this module does. It validates a callback
request (account, addresses, block list, rates, ``via``, credit, concurrency), resolves
each leg's routes (providers ranked by :func:`callbackd.core.routing.rank_providers` on
the statistics in the store), and then feeds the machine with switch events, user
commands and timer expiries, carrying out what it asks: switch calls (a refused
originate is a ``LegFailed "failed"`` for the machine), timers on the injected clock,
charges (a leg's CDR and its debit in one store step, once per CDR id, whatever the
balance: settling a call that happened), session persistence and provider statistics.
Store writes are issued at once: the store applies them in the order they were issued
(IStore), so those of one session land in the order of its steps.

Account-level credit: the sessions of one account share one budget. While an account
has sessions in flight the manager keeps its ledger: the balance net of every charge
issued (a debit still on its way to the store counts as done), the credit limit, and
for the daily spend cap what the legs that ended this UTC day were charged (read from
the day's CDRs, plus the charges issued since). After every step that changes a
session's billed legs (dialled, answered, released, ended, charged, added) and on every
top-up (:meth:`SessionManager.balance_changed`), the account's common remaining time is
computed over every billed leg of all its sessions
(:func:`callbackd.core.credit.account_allowance`) and fed to each of them as
:class:`~callbackd.core.session.CreditDeadline`; each re-arms its timer and the
switch's AbsoluteTimeouts. When the budget runs out every billed leg of the account is
cut at the same instant with ``Reason = OutOfCredit``, or ``Reason = DailyLimit`` when
the daily cap is what ran out. A new callback is refused ("Not enough credit...",
"Daily spending limit reached.") when the joint time of the account's live legs and the
new ones is 0. The daily cap counts a leg on the UTC day it ended; at UTC midnight the
accounts with a cap and calls up are recomputed (their caps start again).

Recovery (:meth:`SessionManager.recover`, run at start and on every
:class:`~callbackd.switch.SwitchConnected`): the sessions in flight are loaded from the
store and reconciled with :meth:`ISwitch.list_channels`. Legs still live stay tracked
(their credit timers are re-armed from the stored answer times); legs that ended
meanwhile are billed up to the last moment the daemon knew them up (the session's
``seen_at``, persisted by a heartbeat every ``heartbeat_interval`` seconds while the
switch is connected), never beyond the AbsoluteTimeout the switch enforced. That never
charges more than the real call could have cost and undercharges by at most one
heartbeat; charges keyed by CDR id make a repeated settlement a no-op. A session
records its owner (the daemon's ``node_id``): a daemon sharing the store with others
recovers only its own sessions, and judges a leg by the channel list only if it could
be in it (a session of this process that dialled while the list was being made is
left to its ring timer).
"""

from __future__ import annotations

import string
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.application import service
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from callbackd.config import Config, GatewaysConfig
from callbackd.core import session as machine
from callbackd.core.address import AddressError, LegAddress, parse_address
from callbackd.core.credit import DAILY_CAP, AccountBudget, LegCharge, account_allowance
from callbackd.core.dialstring import DialStringError, build_channel
from callbackd.core.model import Account, AccountStatus
from callbackd.core.rating import Deck
from callbackd.core.routing import (
    Attempt,
    AttemptWindow,
    Candidate,
    UnknownProvider,
    rank_providers,
    resolve_provider,
)
from callbackd.decks import Decks, load_decks
from callbackd.store.interface import StoreError
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

__all__ = [
    "CallbackRefused",
    "EngineService",
    "Provider",
    "SessionManager",
    "UnknownSession",
]

log = Logger(namespace="callbackd.engine")

_BASE36 = string.digits + string.ascii_lowercase
#: counter values per millisecond (4 base-36 digits)
_COUNTER_SPAN = 36**4
#: seconds in a UTC day (the daily spend cap's period)
_DAY = 86400
#: accounts whose record and ledger are kept between calls (the least recent go first)
_CACHED_ACCOUNTS = 100_000
#: leg addresses kept parsed (the oldest go first)
_CACHED_ADDRESSES = 10_000

Subscriber = Callable[[machine.SessionEvent], object]


class CallbackRefused(Exception):
    """A request the manager will not carry out; ``str()`` is fit for the user."""


class UnknownSession(CallbackRefused):
    """No session in flight has that id."""


@dataclass(frozen=True)
class Provider:
    """A configured VoIP provider: dial template, buy deck, channel limit."""

    name: str
    dial: str
    deck: Deck
    channels: int = 30


@dataclass
class _Ledger:
    """An account's money as the manager knows it while the account has sessions."""

    #: the store's balance net of every charge issued since (pending charges included)
    balance: int
    credit_limit: int
    daily_cap: int
    #: charged today (legs that ended on UTC day ``day``)
    spent_today: int
    day: int

    def _roll(self, now: float) -> None:
        day = int(now // _DAY)
        if day != self.day:
            self.day, self.spent_today = day, 0

    def spend(self, cost: int, now: float) -> None:
        """A leg's charge was issued."""
        self._roll(now)
        self.balance -= cost
        self.spent_today += cost

    def budget(self, now: float) -> AccountBudget:
        """The budget for the pure account-level computation."""
        self._roll(now)
        return AccountBudget(self.balance, self.credit_limit, self.daily_cap, self.spent_today)


def _credit_signature(state: machine.SessionState) -> tuple[Any, ...]:
    """What of a session matters to its account's credit; a change means: recompute."""
    legs = tuple(
        (leg.state, leg.answered_at, bool(leg.release_cause), leg.charged, leg.attempt)
        for leg in state.legs
    )
    return (state.phase, state.reason, legs)


def _base36(number: int) -> str:
    digits = []
    while True:
        number, digit = divmod(number, 36)
        digits.append(_BASE36[digit])
        if not number:
            return "".join(reversed(digits))


class SessionManager:
    """Runs every callback session of this daemon (see the module docstring).

    Nothing happens before :meth:`start` (listener, heartbeat, recovery); :meth:`stop`
    cancels the timers and leaves the sessions in the store for the next start.
    """

    def __init__(
        self,
        clock: IReactorTime,
        switch: ISwitch,
        store: Any,
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
    ) -> None:
        self.clock = clock
        self.switch = switch
        self.store = store
        self.sell_deck = sell_deck
        self.providers = {p.name: p for p in providers}
        self.node_id = node_id
        self.default_region = default_region
        self.gateways = gateways if gateways is not None else GatewaysConfig()
        self.blocked_prefixes = tuple(blocked_prefixes)
        self.ring_timeout = ring_timeout
        self.caller_id = caller_id
        self.routing_window = routing_window
        self.min_attempts = min_attempts
        self.heartbeat_interval = heartbeat_interval
        #: seconds before the provider statistics are read from the store again
        self.stats_refresh = 60.0
        self._windows: dict[str, AttemptWindow] = {}
        self._windows_read_at: float | None = None
        self._windows_waiting: list[defer.Deferred[None]] | None = None
        self._sessions: dict[str, machine.SessionState] = {}
        # indexes of _sessions, kept by _put and _drop: per account its session ids
        # (oldest first), per provider its live dialled legs, per session its providers
        self._by_account: dict[str, dict[str, None]] = {}
        self._channels: dict[str, int] = {}
        self._providers_of: dict[str, tuple[str, ...]] = {}
        self._timers: dict[tuple[str, str], IDelayedCall] = {}
        #: sessions whose state changed this reactor turn and is not written yet
        self._unsaved: dict[str, machine.SessionState] = {}
        self._saving: IDelayedCall | None = None
        self._subscribers: list[tuple[str | None, Subscriber]] = []
        self._queue: list[tuple[str, Any]] = []
        self._busy = False
        self._counter = 0
        self._heartbeat: LoopingCall | None = None
        self._listening = False
        self._recovering: defer.Deferred[None] | None = None
        self._recovery_call: IDelayedCall | None = None
        self.recovery_retry = 2.0
        self._ledgers: dict[str, _Ledger] = {}
        #: per account, the cost of the charges issued that the store has not confirmed
        #: yet (each is a CDR and its debit: counted in the balance and the day's spend)
        self._pending: dict[str, int] = {}
        #: accounts whose sessions' credit must be recomputed
        self._dirty: set[str] = set()
        self._loading: set[str] = set()
        #: the origin of this manager's charges in the store's change feed
        self.origin = f"engine:{node_id}"
        #: accounts read from the store, kept while the change feed is live (LRU order)
        self._accounts: dict[str, Account] = {}
        self._feed_live = False
        self._stop_watching: Callable[[], None] | None = None
        #: bumped on every change told by the feed (per account) and on every feed
        #: state change (epoch): a read that saw either move under it is not kept
        self._generation: dict[str, int] = {}
        self._epoch = 0
        self._addresses: dict[str, LegAddress] = {}
        self._midnight: IDelayedCall | None = None
        #: a recovery has succeeded once (a store that fails after that is worth a warning)
        self._recovered = False
        self._effects: dict[type, Callable[[str, Any], None]] = {
            machine.Originate: self._originate,
            machine.Hangup: self._hangup,
            machine.JoinRoom: self._join_room,
            machine.SetAbsoluteTimeout: self._set_absolute_timeout,
            machine.ArmTimer: self._arm_timer,
            machine.CancelTimer: lambda sid, effect: self._cancel_timer(sid, effect.name),
            machine.Notify: self._notify,
            machine.ChargeLeg: self._charge,
            machine.RecordAttempt: self._record_attempt,
            machine.Persist: self._persist,
            machine.Finished: self._finish,
        }

    @classmethod
    def from_config(
        cls,
        config: Config,
        clock: IReactorTime,
        switch: ISwitch,
        store: Any,
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
            caller_id=config.ami.caller_id,
            routing_window=config.routing.window,
            min_attempts=config.routing.min_attempts,
        )

    # -- life cycle ---------------------------------------------------------------------

    def start(self) -> defer.Deferred[None]:
        """Listen to the switch, start the heartbeat, recover the sessions in flight."""
        if not self._listening:
            self.switch.add_listener(self._switch_event)
            self._listening = True
        self._heartbeat = LoopingCall(self._beat)
        self._heartbeat.clock = self.clock
        self._heartbeat.start(self.heartbeat_interval, now=False)
        if self._stop_watching is None:
            self._stop_watching = self.store.watch(self._account_changed, self._feed_state)
        self._arm_midnight()
        return self.recover()

    def stop(self) -> None:
        """Stop the heartbeat and every timer; the sessions stay in the store."""
        if self._heartbeat is not None and self._heartbeat.running:
            self._heartbeat.stop()
        if self._recovery_call is not None and self._recovery_call.active():
            self._recovery_call.cancel()
        if self._midnight is not None and self._midnight.active():
            self._midnight.cancel()
        self._midnight = None
        for call in self._timers.values():
            if call.active():
                call.cancel()
        self._timers.clear()
        if self._stop_watching is not None:
            self._stop_watching()
            self._stop_watching = None
        self._feed_state(False)
        self._save_all()

    # -- requests -----------------------------------------------------------------------

    def start_callback(
        self,
        username: str,
        source: str,
        destination: str,
        via: Sequence[str] = (),
        origin: str | None = None,
    ) -> defer.Deferred[str]:
        """Start a callback; fire with the session id or errback CallbackRefused."""
        return defer.ensureDeferred(
            self._start_callback(username, source, destination, tuple(via), origin or "")
        )

    async def _start_callback(
        self, username: str, source: str, destination: str, via: tuple[str, ...], origin: str
    ) -> str:
        account = self._accounts.get(username)
        read: tuple[int, int] | None = None
        if account is None:
            read = self._generation.get(username, 0), self._epoch
            account = await self.store.get_account(username)
            if account is None:
                raise CallbackRefused("Unknown account.")
        else:
            self._accounts[username] = self._accounts.pop(username)  # most recent last
        if account.status is not AccountStatus.ACTIVE:
            raise CallbackRefused("Your account is blocked.")
        if len(via) > 2:
            raise CallbackRefused("Give at most two providers after via: one per leg.")
        addresses = [self._address(source), self._address(destination)]
        forced = [self._provider_name(name) for name in via] + [None, None]
        if len(self.sessions_of(username)) >= account.max_sessions:
            raise CallbackRefused(
                f"You have {account.max_sessions} call(s) in progress already; hang one up first."
            )
        specs = [
            await self._leg_spec(address, provider)
            for address, provider in zip(addresses, forced[:2])
        ]
        ledger = self._ledgers.get(username)
        if ledger is None:
            if read is None:
                read = self._generation.get(username, 0), self._epoch
            ledger = await self._load_ledger(account)
        else:
            ledger.credit_limit = account.credit_limit
            ledger.daily_cap = account.daily_spend_cap
        if read is not None and self._unchanged(username, read):
            # nothing changed the account while it was read: keep it and its ledger
            # for the next calls, until the change feed tells of a change
            self._remember(username, account)
            self._ledgers.setdefault(username, ledger)
        billed = [LegCharge(s.rate) for s in specs if s.rate is not None and not s.rate.is_free]
        if billed:
            # what the account's other sessions are about to consume counts too
            now = self.clock.seconds()
            legs, releasing = self._account_legs(username, now)
            allowance = account_allowance(ledger.budget(now), legs + billed, releasing)
            if allowance.seconds == 0:
                if allowance.limit == DAILY_CAP:
                    raise CallbackRefused("Daily spending limit reached.")
                raise CallbackRefused("Not enough credit for this call. Please top up.")
        if not self.switch.connected:
            # nothing could be dialled: say so now, not after failing every provider in turn
            raise CallbackRefused("The phone switch is not reachable right now; try again soon.")
        session_id = self._new_session_id()
        try:
            state, effects = machine.start(
                session_id,
                username,
                specs[0],
                specs[1],
                balance=ledger.balance,
                now=self.clock.seconds(),
                credit_limit=account.credit_limit,
                ring_timeout=self.ring_timeout,
                caller_id=self.caller_id,
                origin=origin,
                owner=self.node_id,
            )
        except machine.SessionError as e:
            raise CallbackRefused(str(e)) from None
        self._put(session_id, state)
        self._ledgers.setdefault(username, ledger)
        self._dirty.add(username)
        log.info(
            "session {session_id} of {username}: {source} -> {destination}",
            session_id=session_id,
            username=username,
            source=str(addresses[0]),
            destination=str(addresses[1]),
        )
        if self._busy:
            self._execute(session_id, effects)
        else:
            self._exclusively(self._execute, session_id, effects)
        return session_id

    def add_leg(
        self, session_id: str, address: str, provider: str | None = None
    ) -> defer.Deferred[None]:
        """``ADD``: call one more party into a connected session."""
        return defer.ensureDeferred(self._add_leg(session_id, address, provider))

    async def _add_leg(self, session_id: str, address: str, provider: str | None) -> None:
        self._state(session_id)
        leg_address = self._address(address)
        name = self._provider_name(provider) if provider else None
        spec = await self._leg_spec(leg_address, name)
        self._command(session_id, machine.AddLeg(spec))

    def drop_leg(self, session_id: str, address_or_role: str) -> defer.Deferred[None]:
        """``DEL``: hang up an additional leg (by address, leg name or letter)."""
        target = address_or_role.strip()
        try:
            target = str(parse_address(target, self.default_region))
        except AddressError:
            pass  # a leg name or letter
        return defer.maybeDeferred(self._command, session_id, machine.DropLeg(target))

    def hangup(self, session_id: str) -> defer.Deferred[None]:
        """``HANGUP``: end the session and every leg."""
        return defer.maybeDeferred(self._command, session_id, machine.HangupSession())

    def list_legs(self, session_id: str) -> str:
        """The ``LIST`` reply."""
        return machine.list_text(self._state(session_id))

    def status(self, session_id: str) -> dict[str, Any]:
        """A JSON-able summary of the session."""
        return machine.summary(self._state(session_id))

    def sessions_of(self, username: str) -> list[str]:
        """The ids of the account's sessions in flight, oldest first."""
        sessions = self._sessions
        return [sid for sid in self._by_account.get(username, ()) if not sessions[sid].finished]

    def subscribe(self, callback: Subscriber, session_id: str | None = None) -> Callable[[], None]:
        """Deliver SessionEvents (of one session, or all) to ``callback``; return an undo."""
        entry = (session_id, callback)
        self._subscribers.append(entry)

        def unsubscribe() -> None:
            if entry in self._subscribers:
                self._subscribers.remove(entry)

        return unsubscribe

    def balance_changed(self, username: str) -> defer.Deferred[None]:
        """The account's balance changed (top-up): recompute its sessions' credit."""
        return defer.ensureDeferred(self._balance_changed(username))

    async def _balance_changed(self, username: str) -> None:
        if not self.sessions_of(username):
            return
        balance = await self.store.get_balance(username)
        balance -= self._pending.get(username, 0)
        ledger = self._ledgers.get(username)
        if ledger is not None:
            ledger.balance = balance
        self._dirty.add(username)
        for session_id in self.sessions_of(username):
            self._feed(session_id, machine.BalanceChanged(balance))
        self._settle_credit()

    # -- the account cache ---------------------------------------------------------------

    def _unchanged(self, username: str, read: tuple[int, int]) -> bool:
        """Whether the feed is live and told nothing of the account since ``read``."""
        return self._feed_live and read == (self._generation.get(username, 0), self._epoch)

    def _remember(self, username: str, account: Account) -> None:
        self._accounts[username] = account
        if len(self._accounts) > _CACHED_ACCOUNTS:
            self._forget(next(iter(self._accounts)))

    def _forget(self, username: str) -> None:
        """Drop the cached account, and its ledger unless sessions still use it."""
        self._accounts.pop(username, None)
        if not self.sessions_of(username):
            self._ledgers.pop(username, None)

    def _account_changed(self, username: str, origin: str) -> None:
        """The store's change feed: someone changed the account (record, balance, CDRs).

        This manager's own charges (its :attr:`origin`) are in its ledger already;
        anything else makes the account be read again, and its sessions' credit be
        recomputed from the new balance.
        """
        if origin == self.origin:
            return
        self._generation[username] = self._generation.get(username, 0) + 1
        self._forget(username)
        if self.sessions_of(username):
            self._recompute_balance(username)

    def _feed_state(self, live: bool) -> None:
        """The change feed came up or went down: what was cached may be stale."""
        self._epoch += 1
        self._feed_live = live
        for username in list(self._accounts):
            self._forget(username)
        self._generation.clear()
        if live:
            # changes told while the feed was down were missed: read the balances again
            for username in list(self._by_account):
                if self.sessions_of(username):
                    self._recompute_balance(username)

    def _recompute_balance(self, username: str) -> None:
        def failed(failure: Failure) -> None:
            log.failure("credit of {username}: cannot read the balance", failure, username=username)

        self.balance_changed(username).addErrback(failed)

    def _arm_midnight(self) -> None:
        now = self.clock.seconds()
        self._midnight = self.clock.callLater(_DAY - now % _DAY, self._new_day)

    def _new_day(self) -> None:
        """UTC midnight: the daily caps start again; recompute the accounts that have one."""
        for username, ledger in self._ledgers.items():
            if ledger.daily_cap > 0 and self.sessions_of(username):
                self._dirty.add(username)
        self._settle_credit()
        self._arm_midnight()

    # -- account-level credit ---------------------------------------------------------

    async def _load_ledger(self, account: Account) -> _Ledger:
        """The account's ledger from the store, net of the charges still on their way."""
        username = account.username
        balance = await self.store.get_balance(username)
        balance -= self._pending.get(username, 0)
        day = int(self.clock.seconds() // _DAY)
        spent = 0
        if account.daily_spend_cap > 0:
            cdrs = await self.store.list_cdrs(username, since=float(day * _DAY))
            spent = sum(c.cost for c in cdrs if c.kind == "leg")
            spent += self._pending.get(username, 0)
        return _Ledger(balance, account.credit_limit, account.daily_spend_cap, spent, day)

    async def _fetch_ledger(self, username: str) -> None:
        """Load the ledger of an account whose sessions were recovered, then recompute."""
        try:
            account = await self.store.get_account(username)
            ledger = None if account is None else await self._load_ledger(account)
        except Exception:
            # the sessions keep their own limits; the next change tries again
            log.failure("credit of {username}: cannot load the account", username=username)
            return
        finally:
            self._loading.discard(username)
        if ledger is not None and self.sessions_of(username):
            self._ledgers.setdefault(username, ledger)
            self._dirty.add(username)
            self._settle_credit()

    def _account_legs(self, username: str, now: float) -> tuple[list[LegCharge], list[LegCharge]]:
        """Every billed leg of the account's sessions: (going on, being released)."""
        legs: list[LegCharge] = []
        releasing: list[LegCharge] = []
        for sid in self._by_account.get(username, ()):
            state = self._sessions[sid]
            if not state.finished:
                going, ending = machine.credit_legs(state, now)
                legs += going
                releasing += ending
        return legs, releasing

    def _share_credit(self, username: str) -> None:
        """Feed every session of the account the account's common deadline."""
        sessions = [(sid, self._sessions[sid]) for sid in self._by_account.get(username, ())]
        sessions = [(sid, state) for sid, state in sessions if not state.finished]
        if not sessions:
            if username not in self._accounts:
                self._ledgers.pop(username, None)  # else kept for the next call
            return
        ledger = self._ledgers.get(username)
        if ledger is None:
            if username not in self._loading:
                self._loading.add(username)
                defer.ensureDeferred(self._fetch_ledger(username))
            return
        now = self.clock.seconds()
        legs, releasing = self._account_legs(username, now)
        allowance = account_allowance(ledger.budget(now), legs, releasing)
        at = None if allowance.seconds is None else now + allowance.seconds
        reason = (
            machine.Reason.DAILY_LIMIT
            if allowance.limit == DAILY_CAP
            else machine.Reason.OUT_OF_CREDIT
        )
        for sid, state in sessions:
            if not state.reason and (state.shared_deadline, state.shared_reason) != (at, reason):
                self._queue.append((sid, machine.CreditDeadline(at, reason)))

    def _settle_credit(self) -> None:
        """Recompute the accounts marked dirty now, unless a step is under way (it will)."""
        if self._dirty and not self._busy:
            self._exclusively(lambda: None)

    # -- validation and routes ---------------------------------------------------------

    def _address(self, text: str) -> LegAddress:
        address = self._addresses.get(text)
        if address is None:
            # parsing a number (phonenumbers) is a tenth of a callback's set-up: the
            # numbers people call are few, keep the recent ones
            try:
                address = parse_address(text, self.default_region)
            except AddressError as e:
                raise CallbackRefused(str(e)) from None
            if len(self._addresses) >= _CACHED_ADDRESSES:
                del self._addresses[next(iter(self._addresses))]
            self._addresses[text] = address
        if address.kind == "phone":
            for prefix in self.blocked_prefixes:
                if address.digits.startswith(prefix):
                    raise CallbackRefused(f"Calls to {address.value} are not allowed.")
        return address

    def _provider_name(self, name: str) -> str:
        try:
            return resolve_provider(name, self.providers)
        except UnknownProvider as e:
            raise CallbackRefused(str(e)) from None

    async def _leg_spec(self, address: LegAddress, forced: str | None) -> machine.LegSpec:
        """The routes and sell rate of a leg; CallbackRefused when it cannot be called."""
        if address.kind != "phone":
            template = getattr(self.gateways, address.kind, "")
            if not template:
                raise CallbackRefused(f"The {address.kind} network is not available here.")
            route = machine.Route("", self._channel(template, address))
            return machine.LegSpec(str(address), (route,), None)
        rate = self.sell_deck.lookup(address.digits)
        routes: tuple[machine.Route, ...]
        if rate is None:
            raise CallbackRefused(f"There is no rate for {address.value}.")
        if forced is not None:
            provider = self.providers[forced]
            if provider.deck.lookup(address.digits) is None:
                raise CallbackRefused(f"{forced} does not reach {address.value}.")
            routes = (machine.Route(forced, self._channel(provider.dial, address)),)
        else:
            ranked = rank_providers(
                [
                    Candidate(p.name, p.deck, p.channels, self._in_use(p.name))
                    for p in self.providers.values()
                ],
                await self._stats(),
                address.digits,
            )
            routes = tuple(
                machine.Route(r.name, self._channel(self.providers[r.name].dial, address))
                for r in ranked
            )
            if not routes:
                raise CallbackRefused(f"No provider reaches {address.value} right now.")
        return machine.LegSpec(str(address), routes, rate)

    @staticmethod
    def _channel(template: str, address: LegAddress) -> str:
        try:
            return build_channel(template, address)
        except DialStringError as e:
            log.error("dial template {template!r}: {error}", template=template, error=str(e))
            raise CallbackRefused(f"{address} cannot be dialled here.") from None

    async def _stats(self) -> Mapping[str, Any]:
        """Provider quality over the window, from a cache read from the store.

        Reading every attempt of the window for every leg made ranking cost grow with
        the traffic of the last hour (quadratic in a busy hour); the cache is read once
        per :attr:`stats_refresh` seconds (concurrent callers share the read) and keeps
        up with this daemon's own attempts in between (see ``RecordAttempt``).
        """
        now = self.clock.seconds()
        if self._windows_read_at is None or now - self._windows_read_at >= self.stats_refresh:
            await self._read_windows()
        return {
            name: window.stats(now, self.min_attempts) for name, window in self._windows.items()
        }

    def _read_windows(self) -> defer.Deferred[None]:
        waiter: defer.Deferred[None] = defer.Deferred()
        if self._windows_waiting is not None:
            self._windows_waiting.append(waiter)
            return waiter
        self._windows_waiting = [waiter]

        def done(result: object) -> None:
            waiting, self._windows_waiting = self._windows_waiting or [], None
            for d in waiting:
                if isinstance(result, Failure):
                    d.errback(result)
                else:
                    d.callback(None)

        defer.ensureDeferred(self._load_windows()).addBoth(done)
        return waiter

    async def _load_windows(self) -> None:
        now = self.clock.seconds()
        windows: dict[str, AttemptWindow] = {}
        for name in self.providers:
            window = windows[name] = AttemptWindow(self.routing_window)
            for record in await self.store.provider_attempts(name, now - self.routing_window):
                window.add(
                    Attempt(
                        name, record["at"], record["answered"], record["duration"], record["pdd"]
                    )
                )
        self._windows, self._windows_read_at = windows, now

    def _in_use(self, provider: str) -> int:
        """The provider's channels in use: live, dialled legs of the sessions in flight."""
        return self._channels.get(provider, 0)

    def _put(self, session_id: str, state: machine.SessionState) -> None:
        """Track a session's (new) state, and keep the indexes up to date."""
        if session_id not in self._sessions:
            self._by_account.setdefault(state.username, {})[session_id] = None
        self._sessions[session_id] = state
        providers = tuple(leg.provider for leg in state.legs if leg.live and leg.attempt)
        self._count_channels(self._providers_of.get(session_id, ()), providers)
        self._providers_of[session_id] = providers

    def _drop(self, session_id: str) -> None:
        """Stop tracking a session."""
        state = self._sessions.pop(session_id, None)
        if state is None:
            return
        mine = self._by_account.get(state.username)
        if mine is not None:
            mine.pop(session_id, None)
            if not mine:
                del self._by_account[state.username]
        self._count_channels(self._providers_of.pop(session_id, ()), ())

    def _count_channels(self, before: tuple[str, ...], after: tuple[str, ...]) -> None:
        if before == after:
            return
        channels = self._channels
        for provider in before:
            left = channels[provider] - 1
            if left:
                channels[provider] = left
            else:
                del channels[provider]
        for provider in after:
            channels[provider] = channels.get(provider, 0) + 1

    def _new_session_id(self) -> str:
        self._counter = (self._counter + 1) % _COUNTER_SPAN
        millis = int(self.clock.seconds() * 1000)
        return f"{self.node_id}{_base36(millis)}{_base36(self._counter)}"

    # -- feeding the machine -----------------------------------------------------------

    def _state(self, session_id: str) -> machine.SessionState:
        state = self._sessions.get(session_id)
        if state is None or state.finished:
            raise UnknownSession(f"No call {session_id} is in progress.")
        return state

    def _command(self, session_id: str, command: Any) -> None:
        """Apply a user command; SessionError becomes CallbackRefused."""
        self._state(session_id)
        self._apply(session_id, command, refuse=True)

    def _feed(self, session_id: str, event: Any) -> None:
        """Apply a switch event, timer or internal command."""
        self._apply(session_id, event, refuse=False)

    def _apply(self, session_id: str, item: Any, refuse: bool) -> None:
        """Step the machine; what effects feed back meanwhile waits its turn in the queue."""
        if self._busy:
            self._queue.append((session_id, item))
            return
        self._exclusively(self._step, session_id, item, refuse)

    def _exclusively(self, first: Callable[..., None], *args: Any) -> None:
        """Run ``first``, then everything it queued, one step at a time."""
        self._busy = True
        try:
            first(*args)
            while self._queue or self._dirty:
                while self._queue:
                    sid, queued = self._queue.pop(0)
                    self._step(sid, queued, False)
                if self._dirty:
                    self._share_credit(self._dirty.pop())
        finally:
            self._busy = False

    def _step(self, session_id: str, item: Any, refuse: bool) -> None:
        state = self._sessions.get(session_id)
        if state is None:
            return
        try:
            new, effects = machine.step(state, item, self.clock.seconds())
        except machine.SessionError as e:
            if refuse:
                raise CallbackRefused(str(e)) from None
            log.info("session {session_id}: {error}", session_id=session_id, error=str(e))
            return
        self._put(session_id, new)
        if _credit_signature(new) != _credit_signature(state):
            self._dirty.add(new.username)
        self._execute(session_id, effects)

    def _switch_event(self, event: SwitchEvent) -> None:
        if isinstance(event, SwitchConnected):
            self.recover()
        elif isinstance(event, SwitchDisconnected):
            log.warn("switch lost: {reason}", reason=event.reason)
            for session_id in list(self._sessions):
                self._feed(session_id, machine.Seen())
        elif isinstance(event, SwitchShutdown):
            for session_id in list(self._sessions):
                self._feed(session_id, machine.SwitchLost())
        elif isinstance(event, RoomCommand):
            # the room is the session id
            if event.room in self._sessions:
                log.info(
                    "session {session_id}: {command} keyed in the room",
                    session_id=event.room,
                    command=event.command,
                )
                self._feed(event.room, event)
        elif isinstance(event, LegRinging | LegAnswered | LegJoined | LegFailed | LegHungUp):
            session_id = event.channel_id.rpartition("-")[0]
            if session_id in self._sessions:
                self._feed(session_id, event)

    def _beat(self) -> None:
        if not self.switch.connected:
            return
        for session_id in list(self._sessions):
            self._feed(session_id, machine.Seen())

    # -- effects --------------------------------------------------------------------------

    def _execute(self, session_id: str, effects: Iterable[machine.Effect]) -> None:
        for effect in effects:
            try:
                self._do(session_id, effect)
            except Exception:
                log.failure("session {session_id}: {effect}", session_id=session_id, effect=effect)

    def _do(self, sid: str, effect: machine.Effect) -> None:
        self._effects[type(effect)](sid, effect)

    def _hangup(self, sid: str, effect: machine.Hangup) -> None:
        self._switch_call(sid, "hangup", self.switch.hangup, effect.channel_id, effect.cause)

    def _join_room(self, sid: str, effect: machine.JoinRoom) -> None:
        self._switch_call(sid, "join_room", self.switch.join_room, effect.channel_id, effect.room)

    def _set_absolute_timeout(self, sid: str, effect: machine.SetAbsoluteTimeout) -> None:
        self._switch_call(
            sid,
            "set_absolute_timeout",
            self.switch.set_absolute_timeout,
            effect.channel_id,
            effect.seconds,
        )

    def _arm_timer(self, sid: str, effect: machine.ArmTimer) -> None:
        self._cancel_timer(sid, effect.name)
        self._timers[(sid, effect.name)] = self.clock.callLater(
            effect.seconds, self._timer_fired, sid, effect.name
        )

    def _notify(self, sid: str, effect: machine.Notify) -> None:
        self._publish(effect.event)

    def _record_attempt(self, sid: str, effect: machine.RecordAttempt) -> None:
        if not effect.provider:
            return
        window = self._windows.get(effect.provider)
        if window is not None:
            window.add(
                Attempt(effect.provider, effect.at, effect.answered, effect.duration, effect.pdd)
            )
        self._issue(
            sid,
            "provider attempt",
            self.store.record_provider_attempt,
            effect.provider,
            effect.at,
            effect.answered,
            effect.pdd,
            effect.duration,
            effect.cause,
        )

    def _persist(self, sid: str, effect: machine.Persist) -> None:
        state = self._sessions.get(sid)
        if state is not None and not state.finished:
            # written at the end of the reactor turn: the steps one input causes
            # (a switch event, its credit recompute, the AMI events read together)
            # save a session once, with its last state
            self._unsaved[sid] = state
            if self._saving is None:
                self._saving = self.clock.callLater(0, self._save_all)

    def _originate(self, sid: str, effect: machine.Originate) -> None:
        # the progress log says "Calling ... via PROVIDER"; the switch logs the channel
        request = effect.request

        def refused(failure: Failure) -> None:
            log.warn(
                "originate {channel_id} refused: {error}",
                channel_id=request.channel_id,
                error=failure.getErrorMessage(),
            )
            self._feed(sid, LegFailed(request.channel_id, self.clock.seconds(), "failed"))

        self.switch.originate(request).addErrback(refused)

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
        self._timers.pop((sid, name), None)
        self._feed(sid, machine.TimerFired(name))

    def _cancel_timer(self, sid: str, name: str) -> None:
        call = self._timers.pop((sid, name), None)
        if call is not None and call.active():
            call.cancel()

    def _publish(self, event: machine.SessionEvent) -> None:
        for session_id, callback in list(self._subscribers):
            if session_id is not None and session_id != event.session_id:
                continue
            try:
                callback(event)
            except Exception:
                log.failure(
                    "subscriber {callback!r} failed on {kind}", callback=callback, kind=event.kind
                )

    def _save(self, sid: str) -> None:
        """Write the session's unsaved state now, after its earlier writes."""
        state = self._unsaved.pop(sid, None)
        if state is not None:
            self._issue(sid, "save session", self.store.save_session, sid, state.to_dict())

    def _save_all(self) -> None:
        """Write every unsaved session state (end of the reactor turn, or stop)."""
        if self._saving is not None and self._saving.active():
            self._saving.cancel()
        self._saving = None
        for sid in list(self._unsaved):
            self._save(sid)

    def _issue(self, sid: str, what: str, call: Callable[..., Any], *args: Any) -> None:
        """One store write of the session, issued at once.

        The store applies writes in the order they were issued (IStore): a session's
        writes land in the order of its steps without waiting for each other's
        replies. Charges and CDRs need no state saved before them (a charge is
        applied once per CDR id, so settling again after a crash charges nothing);
        the end of a session deletes its state, so a state still unsaved then is
        dropped, not written.
        """

        def failed(failure: Failure) -> None:
            log.failure(
                "session {session_id}: store {what} failed", failure, session_id=sid, what=what
            )

        defer.maybeDeferred(call, *args).addErrback(failed)

    def _charge(self, sid: str, effect: machine.ChargeLeg) -> None:
        # the progress log's "leg ended" line gives the billed seconds and the cost
        cdr = effect.cdr
        username, cost = cdr.username, effect.cost
        if cost <= 0:
            self._issue(sid, "append CDR", self.store.append_cdr, cdr)
            return
        ledger = self._ledgers.get(username)
        if ledger is not None:
            ledger.spend(cost, self.clock.seconds())
        self._pending[username] = self._pending.get(username, 0) + cost
        self._issue(sid, "charge", self._store_charge, cdr, cost)

    def _store_charge(self, cdr: Any, cost: int) -> defer.Deferred[Any]:
        # the CDR and the debit in one step, once per CDR id, whatever the balance is
        # now (settling a call that happened)
        d = defer.maybeDeferred(self.store.charge, cdr, self.origin)
        return d.addBoth(self._unpend, cdr.username, cost)

    def _unpend(self, result: Any, username: str, cost: int) -> Any:
        """A charge reached the store (or failed to): it is no longer pending."""
        left = self._pending.get(username, 0) - cost
        if left > 0:
            self._pending[username] = left
        else:
            self._pending.pop(username, None)
        return result

    def _finish(self, sid: str, effect: machine.Finished) -> None:
        for key in [k for k in self._timers if k[0] == sid]:
            self._cancel_timer(*key)
        self._drop(sid)
        self._unsaved.pop(sid, None)  # end_session deletes the state: no use writing it
        self._issue(sid, "end session", self.store.end_session, sid, effect.cdr, self.origin)
        log.info("session {session_id} ended: {reason}", session_id=sid, reason=effect.cdr.cause)

    # -- recovery ---------------------------------------------------------------------------

    def recover(self) -> defer.Deferred[None]:
        """Load the sessions in flight and reconcile them with the switch's channels."""
        if self._recovering is not None:
            return self._recovering

        def done(result: object) -> None:
            self._recovering = None

        def succeeded(_: object) -> None:
            self._recovered = True

        def failed(failure: Failure) -> None:
            running = self._heartbeat is not None and self._heartbeat.running
            if failure.check(StoreError) and running:
                # Redis is not there yet (or went away): try again soon rather than
                # waiting for the next switch reconnect, which may never come. At start
                # (the store still connecting) that is routine, not a warning.
                emit = log.warn if self._recovered else log.info
                emit(
                    "recovery waits for the store ({why}); retrying in {delay} s",
                    why=failure.getErrorMessage(),
                    delay=self.recovery_retry,
                )
                self._recovery_call = self.clock.callLater(self.recovery_retry, self.recover)
                return
            log.failure("recovery failed; it runs again on the next switch connect", failure)

        d = defer.ensureDeferred(self._recover())
        d.addCallbacks(succeeded, failed)
        if not d.called:
            self._recovering = d
            d.addBoth(done)
        return d

    async def _recover(self) -> None:
        loaded: set[str] = set()
        for session_id in await self.store.list_sessions():
            if session_id in self._sessions:
                continue
            data = await self.store.load_session(session_id)
            if data is None:
                continue
            state = machine.SessionState.from_dict(data)
            if state.owner and state.owner != self.node_id:
                continue  # another daemon's session: its switch, its recovery
            if state.finished:
                await self.store.delete_session(session_id)
                continue
            self._put(session_id, state)
            loaded.add(session_id)
            log.info("recovered session {session_id}", session_id=session_id)
        if not self.switch.connected or not self._sessions:
            return
        # only the sessions known when the list was asked for: one started meanwhile
        # originated its legs after the list was made, and would be found gone from it
        known = list(self._sessions)
        asked_at = self.clock.seconds()
        channels = await self.switch.list_channels()
        live = {info.channel_id: info.state for info in channels}
        # read after the list: the FullyBooted of a reconnect comes before its answer
        started_at = self.switch.started_at
        for session_id in known:
            if session_id in self._sessions:
                # a session run by this process may have dialled while the list was made;
                # one loaded from the store (a restart) dialled nothing since
                since = None if session_id in loaded else asked_at
                self._feed(session_id, machine.Reconcile(live, since, started_at))


class EngineService(service.Service):
    """The session manager as a service of the daemon: loads the decks, starts, stops."""

    def __init__(
        self,
        config: Config,
        reactor: IReactorTime,
        switch: ISwitch,
        store: Any,
        metrics: Any,
        decks: Decks | None = None,
    ) -> None:
        self.config = config
        self.metrics = metrics
        decks = load_decks(config) if decks is None else decks
        providers = [
            Provider(p.name, p.dial, decks.providers[p.name], p.channels) for p in config.providers
        ]
        self.manager = SessionManager.from_config(
            config, reactor, switch, store, sell_deck=decks.sell, providers=providers
        )

    def startService(self) -> None:
        super().startService()
        self.manager.start()

    def stopService(self) -> defer.Deferred[None] | None:
        self.manager.stop()
        return super().stopService()
