"""The account book: accounts, their ledgers, and the credit their sessions share.

Account-level credit: the sessions of one account share one budget. While an account
has sessions in flight the book keeps its :class:`Ledger`: the balance net of every
charge issued (a charge still on its way to the store counts as done: it is *pending*),
the credit limit, and for the daily spend cap what the legs that ended this UTC day were
charged (read from the day's CDRs, plus the charges issued since). An account marked
*dirty* (its sessions' billed legs changed, a top-up, UTC midnight) has its common
remaining time recomputed over every billed leg of all its sessions
(:func:`callbackd.core.credit.account_allowance`); :meth:`AccountBook.share_credit`
gives each session the resulting :class:`~callbackd.core.session.CreditDeadline`.

The cache: accounts read from the store (and their ledgers) are kept between calls
while the store's *change feed* (:meth:`IStore.watch`) is live. The feed tells of every
change of an account by anyone else (this engine's own charges carry its ``origin`` and
are in the ledger already): the account is forgotten, and the balance of an account
with sessions is read again. Each change bumps the account's *generation*, each state
change of the feed the *epoch*: a read that either moved under is used once, not kept.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from callbackd.core import session as machine
from callbackd.core.credit import (
    DAILY_CAP,
    AccountBudget,
    Allowance,
    LegCharge,
    account_allowance,
)
from callbackd.core.model import Account
from callbackd.engine.sessions import SessionTable
from callbackd.store.interface import NOT_ACCOUNT_CHANGES, IStore

__all__ = ["DAY", "AccountBook", "Ledger"]

log = Logger(namespace="callbackd.engine")

#: seconds in a UTC day (the daily spend cap's period)
DAY = 86400
#: accounts whose record and ledger are kept between calls (the least recent go first)
_CACHED_ACCOUNTS = 100_000

#: what a read of the account saw: (its generation, the change feed's epoch)
ReadMark = tuple[int, int]


@dataclass
class Ledger:
    """An account's money as the engine knows it while the account has sessions."""

    #: the store's balance net of every charge issued since (pending charges included)
    balance: int
    credit_limit: int
    daily_cap: int
    #: charged today (legs that ended on UTC day ``day``)
    spent_today: int
    day: int

    def _roll(self, now: float) -> None:
        day = int(now // DAY)
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


class AccountBook:
    """Cached accounts, ledgers, pending charges, the midnight roll, shared credit.

    ``refresh(username)`` is called when an account with sessions must have its
    balance read again (the change feed told of a change); ``settle()`` when accounts
    were marked dirty outside a step (a ledger loaded, UTC midnight).
    """

    def __init__(
        self,
        clock: IReactorTime,
        store: IStore,
        sessions: SessionTable,
        origin: str,
        *,
        refresh: Callable[[str], object],
        settle: Callable[[], None],
        others: Callable[[str], list[machine.SessionState]] | None = None,
    ) -> None:
        self.clock = clock
        self.store = store
        self.sessions = sessions
        #: the origin of this engine's charges in the store's change feed
        self.origin = origin
        self._refresh = refresh
        self._settle = settle
        #: the account's sessions on the other daemons (several daemons: their legs
        #: spend the same budget)
        self._others = others
        self._ledgers: dict[str, Ledger] = {}
        #: per account, the cost of the charges issued that the store has not confirmed
        #: yet (each is a CDR and its debit: counted in the balance and the day's spend)
        self._pending: dict[str, int] = {}
        #: accounts whose sessions' credit must be recomputed
        self.dirty: set[str] = set()
        self._loading: set[str] = set()
        #: accounts read from the store, kept while the change feed is live (LRU order)
        self._accounts: dict[str, Account] = {}
        self._change_feed_live = False
        self._stop_watching: Callable[[], None] | None = None
        #: bumped on every change told by the change feed (per account) and on every
        #: state change of the feed (epoch)
        self._generation: dict[str, int] = {}
        self._epoch = 0
        self._midnight: IDelayedCall | None = None

    # -- read-only views ------------------------------------------------------------------

    def cached(self, username: str) -> bool:
        """Whether the account's record is kept (no store read on its next call)."""
        return username in self._accounts

    def balance(self, username: str) -> int | None:
        """The ledger's balance (net of the charges issued), None without a ledger."""
        ledger = self._ledgers.get(username)
        return None if ledger is None else ledger.balance

    def available(self, username: str) -> int | None:
        """What the account may still be charged (balance + credit limit), None unknown."""
        ledger = self._ledgers.get(username)
        return None if ledger is None else ledger.balance + ledger.credit_limit

    # -- life cycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Watch the store's change feed; arm the midnight roll."""
        if self._stop_watching is None:
            self._stop_watching = self.store.watch(self._account_changed, self.change_feed_state)
        self._arm_midnight()

    def stop(self) -> None:
        """Stop watching and forget what the change feed kept valid."""
        if self._midnight is not None and self._midnight.active():
            self._midnight.cancel()
        self._midnight = None
        if self._stop_watching is not None:
            self._stop_watching()
            self._stop_watching = None
        self.change_feed_state(False)

    # -- the account cache ----------------------------------------------------------------

    def account(self, username: str) -> Account | None:
        """The cached account (now the most recent), or None."""
        account = self._accounts.pop(username, None)
        if account is not None:
            self._accounts[username] = account
        return account

    def read_mark(self, username: str) -> ReadMark:
        """Take before reading the account: :meth:`keep` checks nothing moved since."""
        return self._generation.get(username, 0), self._epoch

    def keep(self, account: Account, ledger: Ledger | None, read: ReadMark) -> None:
        """Keep an account (and its ledger, if given) read at ``read``, if nothing changed since."""
        username = account.username
        if self._change_feed_live and read == self.read_mark(username):
            self._accounts[username] = account
            if len(self._accounts) > _CACHED_ACCOUNTS:
                self._forget(next(iter(self._accounts)))
            if ledger is not None:
                self._ledgers.setdefault(username, ledger)

    def _forget(self, username: str) -> None:
        """Drop the cached account, and its ledger unless sessions still use it."""
        self._accounts.pop(username, None)
        if not self.sessions.ids_of(username):
            self._ledgers.pop(username, None)

    def _account_changed(self, username: str, origin: str) -> None:
        """The change feed: someone changed the account (record, balance, CDRs).

        Not the engine's own charges, nor chat links and invitations (the word of an
        invitation is a JID, not a username): none changes what is kept here.
        """
        if origin != self.origin and origin not in NOT_ACCOUNT_CHANGES:
            self.changed(username)

    def changed(self, username: str) -> None:
        """The account changed in the store: read it again, whatever the feed says."""
        self._generation[username] = self._generation.get(username, 0) + 1
        self._forget(username)
        if self.sessions.ids_of(username):
            self._refresh(username)

    def change_feed_state(self, live: bool) -> None:
        """The change feed came up or went down: what was cached may be stale."""
        self._epoch += 1
        self._change_feed_live = live
        for username in list(self._accounts):
            self._forget(username)
        self._generation.clear()
        if live:
            # changes told while the feed was down were missed: read the balances again
            for username in self.sessions.accounts():
                if self.sessions.ids_of(username):
                    self._refresh(username)

    # -- ledgers ------------------------------------------------------------------------

    def ledger(self, account: Account) -> Ledger | None:
        """The account's ledger, with the account's current limits; None if not loaded."""
        ledger = self._ledgers.get(account.username)
        if ledger is not None:
            ledger.credit_limit = account.credit_limit
            ledger.daily_cap = account.daily_spend_cap
        return ledger

    def adopt(self, username: str, ledger: Ledger) -> None:
        """Use ``ledger`` for the account's sessions (unless it has one already)."""
        self._ledgers.setdefault(username, ledger)
        self.dirty.add(username)

    async def load_ledger(self, account: Account) -> Ledger:
        """The account's ledger from the store, net of the charges still on their way."""
        username = account.username
        balance = await self.store.get_balance(username) - self._pending.get(username, 0)
        day = int(self.clock.seconds() // DAY)
        spent = 0
        if account.daily_spend_cap > 0:
            cdrs = await self.store.list_cdrs(username, since=float(day * DAY))
            spent = sum(c.cost for c in cdrs if c.kind == "leg") + self._pending.get(username, 0)
        return Ledger(balance, account.credit_limit, account.daily_spend_cap, spent, day)

    async def _fetch_ledger(self, username: str) -> None:
        """Load the ledger of an account whose sessions were recovered, then recompute."""
        try:
            account = await self.store.get_account(username)
            ledger = None if account is None else await self.load_ledger(account)
        except Exception:
            # the sessions keep their own limits; the next change tries again
            log.failure("credit of {username}: cannot load the account", username=username)
            return
        finally:
            self._loading.discard(username)
        if ledger is not None and self.sessions.ids_of(username):
            self.adopt(username, ledger)
            self._settle()

    async def read_balance(self, username: str) -> int:
        """The store's balance net of the pending charges; the ledger takes it."""
        balance = await self.store.get_balance(username) - self._pending.get(username, 0)
        ledger = self._ledgers.get(username)
        if ledger is not None:
            ledger.balance = balance
        self.dirty.add(username)
        return balance

    # -- charges ------------------------------------------------------------------------

    def charge_issued(self, username: str, cost: int) -> None:
        """A charge went to the store: spent in the ledger, pending until confirmed."""
        ledger = self._ledgers.get(username)
        if ledger is not None:
            ledger.spend(cost, self.clock.seconds())
        self._pending[username] = self._pending.get(username, 0) + cost

    def charge_done(self, username: str, cost: int) -> None:
        """A charge reached the store (or failed to): it is no longer pending."""
        left = self._pending.get(username, 0) - cost
        if left > 0:
            self._pending[username] = left
        else:
            self._pending.pop(username, None)

    # -- the daily cap's midnight ---------------------------------------------------------

    def _arm_midnight(self) -> None:
        now = self.clock.seconds()
        self._midnight = self.clock.callLater(DAY - now % DAY, self._new_day)

    def _new_day(self) -> None:
        """UTC midnight: the daily caps start again; recompute the accounts that have one."""
        for username, ledger in self._ledgers.items():
            if ledger.daily_cap > 0 and self.sessions.ids_of(username):
                self.dirty.add(username)
        self._settle()
        self._arm_midnight()

    # -- shared credit ------------------------------------------------------------------

    def _account_legs(self, username: str, now: float) -> tuple[list[LegCharge], list[LegCharge]]:
        """Every billed leg of the account's sessions: (going on, being released)."""
        legs: list[LegCharge] = []
        releasing: list[LegCharge] = []
        states = [state for _, state in self.sessions.live(username)]
        if self._others is not None:
            states += self._others(username)
        for state in states:
            going, ending = machine.credit_legs(state, now)
            legs += going
            releasing += ending
        return legs, releasing

    def allowance(self, username: str, ledger: Ledger, extra: list[LegCharge]) -> Allowance:
        """The account's common remaining time with ``extra`` legs about to be dialled."""
        now = self.clock.seconds()
        legs, releasing = self._account_legs(username, now)
        return account_allowance(ledger.budget(now), legs + extra, releasing)

    def share_credit(self, username: str) -> list[tuple[str, machine.CreditDeadline]]:
        """The account's common deadline for each of its sessions that must hear it."""
        sessions = self.sessions.live(username)
        if not sessions:
            if username not in self._accounts:
                self._ledgers.pop(username, None)  # else kept for the next call
            return []
        ledger = self._ledgers.get(username)
        if ledger is None:
            if username not in self._loading:
                self._loading.add(username)
                defer.ensureDeferred(self._fetch_ledger(username))
            return []
        now = self.clock.seconds()
        allowance = self.allowance(username, ledger, [])
        at = None if allowance.seconds is None else now + allowance.seconds
        reason = (
            machine.Reason.DAILY_LIMIT
            if allowance.limit == DAILY_CAP
            else machine.Reason.OUT_OF_CREDIT
        )
        return [
            (sid, machine.CreditDeadline(at, reason))
            for sid, state in sessions
            if not state.reason and (state.shared_deadline, state.shared_reason) != (at, reason)
        ]
