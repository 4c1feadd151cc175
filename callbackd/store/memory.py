"""An in-memory IStore for unit tests of the other modules.

Every method returns an already-fired Deferred (unless the injected password
hasher is asynchronous). It refuses exactly what the Redis store refuses: both
check their arguments with :mod:`callbackd.store.records` and are run through
one contract suite. Nothing survives the process.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import secrets
from collections.abc import Callable
from typing import Any, Generic, Literal, TypeVar

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import Clock
from zope.interface import implementer

from callbackd.core.model import (
    CDR,
    Account,
    ApiKey,
    CallerID,
    OutboundSms,
    PhonebookEntry,
    Voucher,
    Webhook,
    WebhookDelivery,
)
from callbackd.store import records
from callbackd.store.hashing import BcryptHasher, PasswordHasher, pin_index
from callbackd.store.interface import (
    INVITE_ORIGIN,
    LINK_ORIGIN,
    SMS_CODE_ATTEMPTS,
    SMS_LEASE,
    SMS_SENT_TTL,
    WEBHOOK_LEASE,
    WEBHOOK_SENT_TTL,
    AccountExists,
    InsufficientFunds,
    InvalidArgument,
    IStore,
    NoSuchAccount,
    NoSuchVoucher,
    StoreUnavailable,
    VoucherUsed,
)

__all__ = ["MemoryStore"]

T = TypeVar("T")


def _fired(f: Callable[..., T], *args: Any, **kwargs: Any) -> defer.Deferred[T]:
    return defer.maybeDeferred(f, *args, **kwargs)


@implementer(IStore)
class MemoryStore:
    """IStore in dicts. ``clock`` stamps created/used times; ``password_hasher`` hashes."""

    def __init__(
        self,
        clock: IReactorTime | None = None,
        password_hasher: PasswordHasher | None = None,
        provider_window: float = 86400.0,
        pin_pepper: bytes | None = None,
    ) -> None:
        self.clock = clock if clock is not None else Clock()
        self.hasher = password_hasher or BcryptHasher(rounds=4, run_in_thread=False)
        #: the PIN index's key (callbackd.store.hashing.pin_index)
        self.pin_pepper = pin_pepper or secrets.token_bytes(32)
        self.provider_window = provider_window
        self._available = True
        self._watchers: list[tuple[Callable[[str, str], None], Callable[[bool], None]]] = []
        self._accounts: dict[str, Account] = {}
        self._secrets: dict[str, dict[str, str]] = {}
        self._balances: dict[str, int] = {}
        self._applied: dict[tuple[str, str], float] = {}
        self._caller_ids: dict[str, dict[str, CallerID]] = {}
        self._cid_owner: dict[str, str] = {}
        self._jids: dict[str, str] = {}
        self._phonebooks: dict[str, dict[int, PhonebookEntry]] = {}
        self._vouchers: dict[str, Voucher] = {}
        self._cdrs: dict[str, CDR] = {}
        self._sessions: dict[str, str] = {}
        self._attempts: dict[str, list[tuple[float, int, str]]] = {}
        self._seq = 0
        #: the outbound SMS queue
        self._sms: _Queue[OutboundSms] = _Queue(self.clock, SMS_SENT_TTL)
        # the REST API
        #: key hash -> ApiKey; username -> {key_id: hash}
        self._api_keys: dict[str, ApiKey] = {}
        self._api_key_ids: dict[str, dict[str, str]] = {}
        #: (username, idempotency key) -> (expiry, record)
        self._idempotency: dict[tuple[str, str], tuple[float, dict[str, Any]]] = {}
        self._webhooks: dict[str, Webhook] = {}
        self._hooks: _Queue[WebhookDelivery] = _Queue(self.clock, WEBHOOK_SENT_TTL)
        #: IVR PIN failures: counter key -> (failures, first failure, locked until)
        self._pin_failures: dict[str, tuple[int, float, float]] = {}
        #: the SMS front's: dedupe keys -> until when seen; pending inbound records;
        #: caller-ID codes (username, hash, until, attempts left); counters (hits, until)
        self._sms_seen: dict[str, float] = {}
        self._sms_inbound: dict[str, tuple[str, float]] = {}
        self._cid_codes: dict[str, tuple[str, str, float, int]] = {}
        self._hits: dict[str, list[Any]] = {}
        #: portal logins: token digest -> (expires at, record)
        self._web_sessions: dict[str, tuple[float, dict[str, Any]]] = {}
        #: the IVR's PIN index: pin_index(pepper, PIN) -> username
        self._pin_index: dict[str, str] = {}

    @property
    def connected(self) -> bool:
        """Whether the store answers (always, unless ``available`` was cleared)."""
        return self._available

    @property
    def available(self) -> bool:
        """Clear to make every call errback StoreUnavailable (for outage tests).

        Watchers hear the change feed go down and come back with it.
        """
        return self._available

    @available.setter
    def available(self, value: bool) -> None:
        changed, self._available = self._available != value, value
        if changed:
            for _, on_state in list(self._watchers):
                on_state(value)

    def watch(
        self, on_change: Callable[[str, str], None], on_state: Callable[[bool], None]
    ) -> Callable[[], None]:
        """Call ``on_change(username, origin)`` after each change (see IStore.watch)."""
        entry = (on_change, on_state)
        self._watchers.append(entry)
        if self._available:
            on_state(True)

        def stop() -> None:
            if entry in self._watchers:
                self._watchers.remove(entry)

        return stop

    def _changed(self, username: str, origin: str = "") -> None:
        for on_change, _ in list(self._watchers):
            on_change(username, origin)

    def _up(self) -> Literal[True]:
        if not self.available:
            raise StoreUnavailable("memory store switched off")
        return True

    def _account(self, username: str) -> Account:
        records.check_username(username)
        self._up()
        try:
            return self._accounts[username]
        except KeyError:
            raise NoSuchAccount(f"no account {username!r}") from None

    def ping(self) -> defer.Deferred[bool]:
        """Fire with True."""
        return _fired(lambda: self._up())

    # -- accounts ----------------------------------------------------------
    def create_account(
        self, account: Account, password: str, pin: str | None = None
    ) -> defer.Deferred[Account]:
        """Create the account with hashed password (and PIN); AccountExists if taken."""
        return defer.ensureDeferred(self._create_account(account, password, pin))

    async def _create_account(self, account: Account, password: str, pin: str | None) -> Account:
        records.check_new_account(account, password, pin)
        self._up()
        if account.username in self._accounts:
            raise AccountExists(f"account {account.username!r} exists")
        if pin is not None:
            self._pin_free(account.username, pin)
        password_hash = await self.hasher.hash(password)
        pin_hash = await self.hasher.hash(pin) if pin is not None else ""
        if account.username in self._accounts:  # created while hashing
            raise AccountExists(f"account {account.username!r} exists")
        if not account.created_at:
            account = dataclasses.replace(account, created_at=self.clock.seconds())
        self._accounts[account.username] = account
        self._secrets[account.username] = {"password": password_hash, "pin": pin_hash}
        self._balances[account.username] = 0
        if pin is not None:
            self._index_pin(account.username, pin)
        self._changed(account.username)
        return account

    def get_account(self, username: str) -> defer.Deferred[Account | None]:
        """Fire with the Account or None."""

        def get() -> Account | None:
            records.check_username(username)
            self._up()
            return self._accounts.get(username)

        return _fired(get)

    def update_account(self, username: str, **fields: Any) -> defer.Deferred[Account]:
        """Change fields; fire with the new Account."""

        def update() -> Account:
            new = records.updated_account(self._account(username), fields)
            self._accounts[username] = new
            self._changed(username)
            return new

        return _fired(update)

    def list_accounts(self) -> defer.Deferred[list[str]]:
        """Fire with every username, sorted."""
        return _fired(lambda: self._up() and sorted(self._accounts))

    def set_password(self, username: str, password: str) -> defer.Deferred[None]:
        """Replace the password hash."""
        return defer.ensureDeferred(self._set_secret(username, "password", password))

    def set_pin(self, username: str, pin: str) -> defer.Deferred[None]:
        """Replace the PIN hash; InvalidArgument when another account has the PIN."""
        return defer.ensureDeferred(self._set_pin(username, pin))

    async def _set_pin(self, username: str, pin: str) -> None:
        records.check_pin(pin)
        self._account(username)
        self._pin_free(username, pin)
        await self._set_secret(username, "pin", pin)
        self._index_pin(username, pin)

    async def _set_secret(self, username: str, which: str, secret: str) -> None:
        (records.check_password if which == "password" else records.check_pin)(secret)
        self._account(username)
        hashed = await self.hasher.hash(secret)
        self._account(username)
        self._secrets[username][which] = hashed

    def check_password(self, username: str, password: str) -> defer.Deferred[bool]:
        """Fire with whether the password is right (False for no account)."""
        return defer.ensureDeferred(self._check_secret(username, "password", password))

    def check_pin(self, username: str, pin: str) -> defer.Deferred[bool]:
        """Fire with whether the PIN is right (False for no account or no PIN)."""
        return defer.ensureDeferred(self._check_secret(username, "pin", pin))

    async def _check_secret(self, username: str, which: str, secret: str) -> bool:
        records.check_username(username)
        self._up()
        if not isinstance(secret, str):
            raise InvalidArgument(f"{which} must be a string")
        hashed = self._secrets.get(username, {}).get(which)
        right = bool(await self.hasher.check(secret, hashed or None))
        if right and which == "pin":
            self._index_pin(username, secret, unless_taken=True)  # set before the index
        return right

    # -- money -------------------------------------------------------------
    def get_balance(self, username: str) -> defer.Deferred[int]:
        """Fire with the balance."""

        def get() -> int:
            self._account(username)
            return self._balances[username]

        return _fired(get)

    def _seen(self, username: str, key: str) -> bool:
        at = self._applied.get((username, key))
        return at is not None and self.clock.seconds() - at < records.IDEMPOTENCY_TTL

    def credit(self, username: str, amount: int, key: str) -> defer.Deferred[int]:
        """Add ``amount`` once per ``key``; fire with the balance."""

        def credit() -> int:
            records.check_amount(amount, positive=True)
            records.check_key(key)
            self._account(username)
            if not self._seen(username, key):
                self._balances[username] += amount
                self._applied[(username, key)] = self.clock.seconds()
                self._changed(username)
            return self._balances[username]

        return _fired(credit)

    def debit(
        self, username: str, amount: int, key: str, force: bool = False
    ) -> defer.Deferred[int]:
        """Take ``amount`` once per ``key`` unless below the floor; fire with the balance."""

        def debit() -> int:
            records.check_amount(amount, positive=False)
            records.check_key(key)
            account = self._account(username)
            balance = self._balances[username]
            if self._seen(username, key):
                return balance
            if balance - amount < -account.credit_limit and not force:
                raise InsufficientFunds(
                    f"balance {balance} does not cover {amount} for {username!r}"
                )
            self._balances[username] = balance - amount
            self._applied[(username, key)] = self.clock.seconds()
            self._changed(username)
            return self._balances[username]

        return _fired(debit)

    # -- caller IDs ----------------------------------------------------------
    def add_caller_id(
        self, username: str, number: str, verified: bool = False
    ) -> defer.Deferred[CallerID]:
        """Register ``number`` for the account; InvalidArgument if another owns it."""

        def add() -> CallerID:
            records.check_number(number)
            self._account(username)
            owner = self._cid_owner.get(number)
            if owner is not None and owner != username:
                raise InvalidArgument(f"{number} belongs to another account")
            mine = self._caller_ids.setdefault(username, {})
            old = mine.get(number)
            cid = (
                dataclasses.replace(old, verified=old.verified or bool(verified))
                if old
                else CallerID(number, bool(verified), self.clock.seconds())
            )
            mine[number] = cid
            self._cid_owner[number] = username
            return cid

        return _fired(add)

    def verify_caller_id(self, username: str, number: str) -> defer.Deferred[None]:
        """Mark the number verified; InvalidArgument if it is not the account's."""

        def verify() -> None:
            records.check_number(number)
            self._account(username)
            mine = self._caller_ids.get(username, {})
            if number not in mine:
                raise InvalidArgument(f"{number} is not registered to {username!r}")
            mine[number] = dataclasses.replace(mine[number], verified=True)

        return _fired(verify)

    def remove_caller_id(self, username: str, number: str) -> defer.Deferred[None]:
        """Forget the number (nothing happens if it was not registered)."""

        def remove() -> None:
            records.check_number(number)
            self._account(username)
            if self._caller_ids.get(username, {}).pop(number, None) is not None:
                del self._cid_owner[number]

        return _fired(remove)

    def list_caller_ids(self, username: str) -> defer.Deferred[list[CallerID]]:
        """Fire with the account's CallerIDs sorted by number."""

        def list_() -> list[CallerID]:
            self._account(username)
            mine = self._caller_ids.get(username, {})
            return [mine[n] for n in sorted(mine)]

        return _fired(list_)

    def account_for_caller_id(
        self, number: str, verified_only: bool = True
    ) -> defer.Deferred[str | None]:
        """Fire with the owner of ``number`` or None."""

        def find() -> str | None:
            records.check_number(number)
            self._up()
            owner = self._cid_owner.get(number)
            if owner is None:
                return None
            if verified_only and not self._caller_ids[owner][number].verified:
                return None
            return owner

        return _fired(find)

    # -- chat addresses -------------------------------------------------------------
    def link_jid(self, jid: str, username: str) -> defer.Deferred[None]:
        """Link the bare JID to the account (replacing any link); NoSuchAccount if none."""

        def link() -> None:
            bare = records.bare_jid(jid)
            self._account(username)
            was, self._jids[bare] = self._jids.get(bare), username
            self._changed(username, LINK_ORIGIN)
            if was is not None and was != username:
                self._changed(was, LINK_ORIGIN)

        return _fired(link)

    def request_invite(self, jid: str) -> defer.Deferred[int]:
        """Tell the watchers to invite the bare JID; fire with how many there are."""

        def invite() -> int:
            bare = records.bare_jid(jid)
            self._up()
            self._changed(bare, INVITE_ORIGIN)
            return len(self._watchers)

        return _fired(invite)

    def unlink_jid(self, jid: str) -> defer.Deferred[bool]:
        """Forget the JID's link; fire with True if there was one."""

        def unlink() -> bool:
            bare = records.bare_jid(jid)
            self._up()
            was = self._jids.pop(bare, None)
            if was is not None:
                self._changed(was, LINK_ORIGIN)
            return was is not None

        return _fired(unlink)

    def linked_jids(self) -> defer.Deferred[list[str]]:
        """Fire with every linked bare JID, sorted."""
        return _fired(lambda: self._up() and sorted(self._jids))

    def account_for_jid(self, jid: str) -> defer.Deferred[str | None]:
        """Fire with the username the bare JID is linked to, or None."""

        def find() -> str | None:
            bare = records.bare_jid(jid)
            self._up()
            return self._jids.get(bare)

        return _fired(find)

    # -- phonebook -------------------------------------------------------------
    def set_phonebook_entry(self, username: str, entry: PhonebookEntry) -> defer.Deferred[None]:
        """Store ``entry``, replacing the entries with its index or its name."""

        def set_() -> None:
            records.check_entry(entry)
            self._account(username)
            book = self._phonebooks.setdefault(username, {})
            for index in [i for i, e in book.items() if e.name == entry.name]:
                del book[index]
            book[entry.index] = entry

        return _fired(set_)

    def delete_phonebook_entry(self, username: str, index: int) -> defer.Deferred[None]:
        """Remove the entry with ``index`` (nothing happens if there is none)."""

        def delete() -> None:
            self._account(username)
            self._phonebooks.get(username, {}).pop(index, None)

        return _fired(delete)

    def get_phonebook(self, username: str) -> defer.Deferred[list[PhonebookEntry]]:
        """Fire with the entries sorted by index."""

        def get() -> list[PhonebookEntry]:
            self._account(username)
            book = self._phonebooks.get(username, {})
            return [book[i] for i in sorted(book)]

        return _fired(get)

    # -- vouchers --------------------------------------------------------------
    def create_vouchers(self, batch: str, value: int, count: int) -> defer.Deferred[list[Voucher]]:
        """Create ``count`` vouchers of ``value`` with fresh random 12-digit codes."""

        def create() -> list[Voucher]:
            records.check_batch(batch)
            records.check_amount(value, positive=True)
            records.check_count(count)
            self._up()
            made: list[Voucher] = []
            while len(made) < count:
                code = records.new_voucher_code()
                if code in self._vouchers:
                    continue
                voucher = Voucher(code, batch, value, created_at=self.clock.seconds())
                self._vouchers[code] = voucher
                made.append(voucher)
            return made

        return _fired(create)

    def redeem_voucher(self, code: str, username: str) -> defer.Deferred[int]:
        """Mark the voucher used and credit its value; fire with the value."""

        def redeem() -> int:
            records.check_key(code, "voucher code")
            self._account(username)
            voucher = self._vouchers.get(code)
            if voucher is None:
                raise NoSuchVoucher(f"no voucher {code!r}")
            if voucher.used_by:
                raise VoucherUsed(f"voucher {code!r} was already used")
            self._vouchers[code] = dataclasses.replace(
                voucher, used_by=username, used_at=self.clock.seconds()
            )
            self._balances[username] += voucher.value
            self._changed(username)
            return voucher.value

        return _fired(redeem)

    def get_voucher(self, code: str) -> defer.Deferred[Voucher | None]:
        """Fire with the Voucher or None."""

        def get() -> Voucher | None:
            records.check_key(code, "voucher code")
            self._up()
            return self._vouchers.get(code)

        return _fired(get)

    def list_vouchers(self, batch: str) -> defer.Deferred[list[Voucher]]:
        """Fire with the batch's vouchers sorted by code."""

        def list_() -> list[Voucher]:
            records.check_batch(batch)
            self._up()
            return sorted((v for v in self._vouchers.values() if v.batch == batch), key=_code)

        return _fired(list_)

    # -- CDRs --------------------------------------------------------------------
    def append_cdr(self, cdr: CDR) -> defer.Deferred[None]:
        """Append ``cdr`` unless one with its id exists."""

        return _fired(self._append, cdr, "")

    def _append(self, cdr: CDR, origin: str, debit: int = 0) -> None:
        """Append ``cdr`` (and take ``debit`` from its account) unless its id is taken."""
        records.check_cdr(cdr)
        text = records.cdr_to_json(cdr)
        self._up()
        if cdr.cdr_id in self._cdrs:
            return
        self._cdrs[cdr.cdr_id] = records.cdr_from_json(text)
        if debit:
            self._balances[cdr.username] -= debit
        self._changed(cdr.username, origin)

    def charge(self, cdr: CDR, origin: str = "") -> defer.Deferred[int]:
        """Append a leg's CDR and debit its cost, together and once; fire with the balance."""

        def charge() -> int:
            records.check_cdr(cdr)
            records.check_origin(origin)
            self._account(cdr.username)
            self._append(cdr, origin, debit=cdr.cost)
            return self._balances[cdr.username]

        return _fired(charge)

    def list_cdrs(
        self, username: str | None = None, since: float = 0.0, until: float | None = None
    ) -> defer.Deferred[list[CDR]]:
        """Fire with the CDRs ended in [since, until], oldest first (ties by id)."""

        def list_() -> list[CDR]:
            if username is not None:
                records.check_username(username)
            self._up()
            top = float("inf") if until is None else until
            found = [
                c
                for c in self._cdrs.values()
                if (username is None or c.username == username) and since <= c.ended_at <= top
            ]
            return [copy.deepcopy(c) for c in sorted(found, key=lambda c: (c.ended_at, c.cdr_id))]

        return _fired(list_)

    # -- sessions ------------------------------------------------------------------
    def save_session(self, session_id: str, data: dict[str, Any]) -> defer.Deferred[None]:
        """Store the session's JSON-able dict."""

        def save() -> None:
            records.check_key(session_id, "session id")
            text = records.check_session(data)
            self._up()
            self._sessions[session_id] = text

        return _fired(save)

    def load_session(self, session_id: str) -> defer.Deferred[dict[str, Any] | None]:
        """Fire with the stored dict (a fresh copy) or None."""

        def load() -> dict[str, Any] | None:
            records.check_key(session_id, "session id")
            self._up()
            text = self._sessions.get(session_id)
            return None if text is None else json.loads(text)

        return _fired(load)

    def delete_session(self, session_id: str) -> defer.Deferred[None]:
        """Forget the session."""

        def delete() -> None:
            records.check_key(session_id, "session id")
            self._up()
            self._sessions.pop(session_id, None)

        return _fired(delete)

    def end_session(self, session_id: str, cdr: CDR, origin: str = "") -> defer.Deferred[None]:
        """Append the session's CDR and forget its state, together."""

        def end() -> None:
            records.check_key(session_id, "session id")
            records.check_cdr(cdr)
            records.check_origin(origin)
            self._up()
            self._sessions.pop(session_id, None)
            self._append(cdr, origin)

        return _fired(end)

    def list_sessions(self) -> defer.Deferred[list[str]]:
        """Fire with every session id, sorted."""
        return _fired(lambda: self._up() and sorted(self._sessions))

    # -- provider statistics -----------------------------------------------------------
    def record_provider_attempt(
        self, provider: str, at: float, answered: bool, pdd: float, duration: float, cause: str
    ) -> defer.Deferred[None]:
        """Record one attempt; attempts older than the window before ``at`` are dropped."""

        def record() -> None:
            records.check_provider(provider)
            text = json.dumps(records.attempt_record(at, answered, pdd, duration, cause))
            self._up()
            self._seq += 1
            cutoff = at - self.provider_window
            kept = [a for a in self._attempts.get(provider, []) if a[0] >= cutoff]
            kept.append((at, self._seq, text))
            self._attempts[provider] = kept

        return _fired(record)

    def provider_attempts(self, provider: str, since: float) -> defer.Deferred[list[dict]]:
        """Fire with the attempts at or after ``since``, oldest first."""

        def list_() -> list[dict]:
            records.check_provider(provider)
            self._up()
            found = sorted(a for a in self._attempts.get(provider, []) if a[0] >= since)
            return [json.loads(text) for _, _, text in found]

        return _fired(list_)

    # -- outbound SMS queue ------------------------------------------------------------
    def enqueue_sms(
        self, message_id: str, to: str, text: str, gateway: str, not_before: float
    ) -> defer.Deferred[bool]:
        """Queue the SMS unless its id is known (see IStore.enqueue_sms)."""

        def enqueue() -> bool:
            records.check_sms(message_id, to, text, gateway)
            self._up()
            item = OutboundSms(
                message_id, to, text, gateway, 0, float(not_before), self.clock.seconds()
            )
            return self._sms.add(item)

        return _fired(enqueue)

    def due_sms(
        self, now: float, limit: int, lease: float = SMS_LEASE
    ) -> defer.Deferred[list[OutboundSms]]:
        """Claim the due SMS for ``lease`` seconds (see IStore.due_sms)."""
        return _fired(lambda: self._up() and self._sms.claim(now, limit, lease))

    def next_sms_due(self) -> defer.Deferred[float | None]:
        """Fire with the earliest ``not_before`` queued, or None."""
        return _fired(lambda: self._up() and self._sms.next_due())

    def sms_sent(self, message_id: str) -> defer.Deferred[None]:
        """Forget the SMS and remember its id for SMS_SENT_TTL seconds."""
        return _fired(self._queue_call, self._sms.done, message_id, "message id")

    def sms_retry(
        self, message_id: str, not_before: float, attempts: int, last_error: str
    ) -> defer.Deferred[bool]:
        """Requeue the SMS for ``not_before`` with its attempts and error."""
        return _fired(
            self._queue_call,
            self._sms.retry,
            message_id,
            "message id",
            not_before,
            attempts,
            last_error,
        )

    def sms_failed(self, message_id: str, error: str) -> defer.Deferred[bool]:
        """Move the SMS from the queue to the dead letters."""
        return _fired(self._queue_call, self._sms.fail, message_id, "message id", error)

    def dead_sms(self) -> defer.Deferred[list[OutboundSms]]:
        """Fire with the dead letters, oldest first."""
        return _fired(lambda: self._up() and self._sms.dead())

    def _queue_call(self, method: Callable[..., T], item_id: str, what: str, *args: Any) -> T:
        """A queue's method on one item, the id checked and the store up."""
        records.check_key(item_id, what)
        self._up()
        return method(item_id, *args)

    # -- the REST API: keys ----------------------------------------------------------------
    def create_api_key(self, username: str, label: str) -> defer.Deferred[tuple[str, str]]:
        """Make a key; fire with ``(key_id, secret)`` (see IStore.create_api_key)."""

        def create() -> tuple[str, str]:
            records.check_key_label(label)
            self._account(username)
            key_id, secret = records.new_api_key()
            digest = records.api_key_hash(secret)
            assert digest is not None
            self._api_keys[digest] = ApiKey(key_id, username, label, self.clock.seconds())
            self._api_key_ids.setdefault(username, {})[key_id] = digest
            return key_id, secret

        return _fired(create)

    def list_api_keys(self, username: str) -> defer.Deferred[list[ApiKey]]:
        """Fire with the account's keys, oldest first."""

        def list_() -> list[ApiKey]:
            records.check_username(username)
            self._up()
            keys = [self._api_keys[h] for h in self._api_key_ids.get(username, {}).values()]
            return sorted(keys, key=lambda k: (k.created_at, k.key_id))

        return _fired(list_)

    def revoke_api_key(self, username: str, key_id: str) -> defer.Deferred[bool]:
        """Forget the key; fire with True if the account had it."""

        def revoke() -> bool:
            records.check_username(username)
            records.check_key(key_id, "key id")
            self._up()
            digest = self._api_key_ids.get(username, {}).pop(key_id, None)
            if digest is None:
                return False
            del self._api_keys[digest]
            return True

        return _fired(revoke)

    def account_for_api_key(self, secret: str) -> defer.Deferred[str | None]:
        """Fire with the key's username, or None."""

        def find() -> str | None:
            self._up()
            key = self._api_keys.get(records.api_key_hash(secret) or "")
            return key.username if key is not None else None

        return _fired(find)

    # -- the REST API: idempotency keys ----------------------------------------------------
    def claim_idempotency_key(
        self, username: str, key: str, fingerprint: str, ttl: float
    ) -> defer.Deferred[dict[str, Any] | None]:
        """Claim the key, or fire with what is stored (see IStore.claim_idempotency_key)."""

        def claim() -> dict[str, Any] | None:
            records.check_username(username)
            records.check_idempotency_key(key)
            records.check_fingerprint(fingerprint)
            self._up()
            now = self.clock.seconds()
            held = self._idempotency.get((username, key))
            if held is not None and held[0] > now:
                return dict(held[1])
            self._idempotency[(username, key)] = (
                now + ttl,
                {"fingerprint": fingerprint, "response": None},
            )
            return None

        return _fired(claim)

    def settle_idempotency_key(
        self, username: str, key: str, fingerprint: str, response: str, ttl: float
    ) -> defer.Deferred[None]:
        """Store the key's response for ``ttl`` seconds."""

        def settle() -> None:
            records.check_username(username)
            records.check_idempotency_key(key)
            records.check_fingerprint(fingerprint)
            self._up()
            record = {"fingerprint": fingerprint, "response": str(response)}
            self._idempotency[(username, key)] = (self.clock.seconds() + ttl, record)

        return _fired(settle)

    def release_idempotency_key(self, username: str, key: str) -> defer.Deferred[None]:
        """Forget the key."""

        def release() -> None:
            records.check_username(username)
            records.check_idempotency_key(key)
            self._up()
            self._idempotency.pop((username, key), None)

        return _fired(release)

    # -- the REST API: webhooks ------------------------------------------------------------
    def set_webhook(self, username: str, url: str) -> defer.Deferred[Webhook | None]:
        """Set (or with "" remove) the account's webhook; keep its secret."""

        def set_() -> Webhook | None:
            if url:
                records.check_webhook_url(url)
            self._account(username)
            if not url:
                self._webhooks.pop(username, None)
                return None
            old = self._webhooks.get(username)
            secret = old.secret if old is not None else records.new_webhook_secret()
            hook = self._webhooks[username] = Webhook(url, secret)
            return hook

        return _fired(set_)

    def get_webhook(self, username: str) -> defer.Deferred[Webhook | None]:
        """Fire with the account's Webhook, or None."""

        def get() -> Webhook | None:
            records.check_username(username)
            self._up()
            return self._webhooks.get(username)

        return _fired(get)

    def enqueue_webhook(
        self, delivery_id: str, username: str, body: str, not_before: float
    ) -> defer.Deferred[bool]:
        """Queue the delivery unless its id is known."""

        def enqueue() -> bool:
            records.check_webhook(delivery_id, username, body)
            self._up()
            item = WebhookDelivery(
                delivery_id, username, body, 0, float(not_before), self.clock.seconds()
            )
            return self._hooks.add(item)

        return _fired(enqueue)

    def due_webhooks(
        self, now: float, limit: int, lease: float = WEBHOOK_LEASE
    ) -> defer.Deferred[list[WebhookDelivery]]:
        """Claim the due deliveries for ``lease`` seconds."""
        return _fired(lambda: self._up() and self._hooks.claim(now, limit, lease))

    def next_webhook_due(self) -> defer.Deferred[float | None]:
        """Fire with the earliest ``not_before`` queued, or None."""
        return _fired(lambda: self._up() and self._hooks.next_due())

    def webhook_sent(self, delivery_id: str) -> defer.Deferred[None]:
        """Forget the delivery and remember its id a while."""
        return _fired(self._queue_call, self._hooks.done, delivery_id, "delivery id")

    def webhook_retry(
        self, delivery_id: str, not_before: float, attempts: int, last_error: str
    ) -> defer.Deferred[bool]:
        """Requeue the delivery for ``not_before``."""
        return _fired(
            self._queue_call,
            self._hooks.retry,
            delivery_id,
            "delivery id",
            not_before,
            attempts,
            last_error,
        )

    def webhook_failed(self, delivery_id: str, error: str) -> defer.Deferred[bool]:
        """Move the delivery to the dead letters."""
        return _fired(self._queue_call, self._hooks.fail, delivery_id, "delivery id", error)

    def dead_webhooks(self) -> defer.Deferred[list[WebhookDelivery]]:
        """Fire with the dead letters, oldest first."""
        return _fired(lambda: self._up() and self._hooks.dead())

    # -- IVR PIN lockout (phone callback) ------------------------------------------------
    def pin_failed(
        self, username: str, number: str, now: float, attempts: int, period: float
    ) -> defer.Deferred[float]:
        """Count a wrong PIN for the account and the caller ID (see IStore)."""

        def fail() -> float:
            self._up()
            until = 0.0
            for key in _pin_keys(username, number):
                count, first, locked = self._pin_failures.get(key, (0, 0.0, 0.0))
                if not count or now - first > period:
                    count, first = 0, now
                count += 1
                if count >= attempts:
                    count, locked = 0, now + period
                self._pin_failures[key] = (count, first, locked)
                until = max(until, locked if locked > now else 0.0)
            return until

        return _fired(fail)

    def pin_locked_until(self, username: str, number: str, now: float) -> defer.Deferred[float]:
        """The end of a PIN lockout in force (see IStore)."""

        def locked() -> float:
            self._up()
            ends = [
                self._pin_failures.get(key, (0, 0.0, 0.0))[2] for key in _pin_keys(username, number)
            ]
            return max([end for end in ends if end > now], default=0.0)

        return _fired(locked)

    def pin_succeeded(self, username: str, number: str) -> defer.Deferred[None]:
        """Forget the PIN failures of the account and the caller ID (see IStore)."""

        def forget() -> None:
            self._up()
            for key in _pin_keys(username, number):
                count, first, locked = self._pin_failures.pop(key, (0, 0.0, 0.0))
                if locked:
                    self._pin_failures[key] = (0, 0.0, locked)

        return _fired(forget)

    # -- SMS front: inbound messages, caller-ID codes, counters ------------------------
    def record_inbound_sms(
        self, keys: list[str], record: dict[str, Any], now: float, ttl: float
    ) -> defer.Deferred[bool]:
        """Record the SMS unless one of its keys was seen (see IStore.record_inbound_sms)."""

        def record_() -> bool:
            text = records.check_inbound(keys, record, ttl)
            self._up()
            if any(self._sms_seen.get(key, 0.0) > self.clock.seconds() for key in keys):
                return False
            self._sms_seen[keys[0]] = self.clock.seconds() + ttl
            self._sms_inbound[keys[0]] = (text, float(now))
            return True

        return _fired(record_)

    def inbound_sms_handled(self, key: str) -> defer.Deferred[None]:
        """Forget the pending record of ``key``."""

        def handled() -> None:
            records.check_key(key, "dedupe key")
            self._up()
            self._sms_inbound.pop(key, None)

        return _fired(handled)

    def pending_inbound_sms(self) -> defer.Deferred[list[tuple[str, dict[str, Any], float]]]:
        """Fire with the pending records, oldest first."""

        def pending() -> list[tuple[str, dict[str, Any], float]]:
            self._up()
            found = [(key, json.loads(text), at) for key, (text, at) in self._sms_inbound.items()]
            return sorted(found, key=lambda item: (item[2], item[0]))

        return _fired(pending)

    def issue_caller_id_code(
        self, username: str, number: str, code: str, ttl: float, attempts: int = SMS_CODE_ATTEMPTS
    ) -> defer.Deferred[None]:
        """Add the number unverified and keep the code's hash (see the interface)."""

        def keep(cid: CallerID) -> None:
            until = self.clock.seconds() + ttl
            self._cid_codes[number] = (username, records.code_hash(number, code), until, attempts)

        def check() -> None:
            records.check_code(code)
            records.check_period(ttl, "ttl")
            records.check_attempts(attempts)

        def add(_: None) -> defer.Deferred[CallerID]:
            return self.add_caller_id(username, number)

        return _fired(check).addCallback(add).addCallback(keep)

    def confirm_caller_id_code(self, number: str, code: str) -> defer.Deferred[str | None]:
        """Fire with the username when ``code`` is the number's live code, else None."""

        def confirm() -> str | None:
            records.check_number(number)
            self._up()
            entry = self._cid_codes.get(number)
            if entry is None or entry[2] <= self.clock.seconds():
                self._cid_codes.pop(number, None)
                return None
            username, hashed, until, left = entry
            if not isinstance(code, str) or records.code_hash(number, code) != hashed:
                if left <= 1:
                    del self._cid_codes[number]
                else:
                    self._cid_codes[number] = (username, hashed, until, left - 1)
                return None
            del self._cid_codes[number]
            if self._cid_owner.get(number) != username:
                return None  # the number was removed meanwhile
            mine = self._caller_ids[username]
            mine[number] = dataclasses.replace(mine[number], verified=True)
            return username

        return _fired(confirm)

    def _window(self, key: str) -> list[float]:
        records.check_key(key, "counter")
        self._up()
        window = self._hits.get(key)
        if window is not None and window[1] <= self.clock.seconds():
            del self._hits[key]
            window = None
        return window or [0, 0.0]

    def count_hit(self, key: str, period: float) -> defer.Deferred[int]:
        """Count a hit of ``key`` in its window of ``period`` seconds; fire with the count."""

        def hit() -> int:
            records.check_period(period)
            window = self._window(key)
            if not window[0]:
                window = [0, self.clock.seconds() + period]
            window[0] += 1
            self._hits[key] = window
            return int(window[0])

        return _fired(hit)

    def hit_count(self, key: str) -> defer.Deferred[int]:
        """Fire with the hits of ``key`` in its open window."""
        return _fired(lambda: int(self._window(key)[0]))

    def clear_hits(self, key: str) -> defer.Deferred[None]:
        """Forget the hits of ``key``."""

        def clear() -> None:
            self._window(key)
            self._hits.pop(key, None)

        return _fired(clear)

    # -- web portal sessions ------------------------------------------------------------
    def create_web_session(self, username: str, role: str, ttl: int) -> defer.Deferred[str]:
        """Open a portal login for ``ttl`` seconds; fire with its token."""

        def create() -> str:
            token, digest = records.new_web_session(username, role, ttl)
            self._up()
            now = self.clock.seconds()
            record = {"username": username, "role": role, "created_at": now}
            self._web_sessions[digest] = (now + ttl, record)
            return token

        return _fired(create)

    def get_web_session(self, token: str) -> defer.Deferred[dict[str, Any] | None]:
        """Fire with the login's record, or None."""

        def get() -> dict[str, Any] | None:
            self._up()
            digest = records.web_token_digest(token)
            found = self._web_sessions.get(digest or "")
            if found is None:
                return None
            if found[0] <= self.clock.seconds():
                del self._web_sessions[digest or ""]
                return None
            return dict(found[1])

        return _fired(get)

    def delete_web_session(self, token: str) -> defer.Deferred[bool]:
        """End the login; fire with True if there was one."""

        def delete() -> bool:
            self._up()
            found = self._web_sessions.pop(records.web_token_digest(token) or "", None)
            return found is not None and found[0] > self.clock.seconds()

        return _fired(delete)

    # -- several daemons (cluster): ownership, leases, messages ----------------------------
    @property
    def _cluster(self) -> _Cluster:
        found = self.__dict__.get("_cluster_state")
        if found is None:
            found = self.__dict__["_cluster_state"] = _Cluster()
        return found

    def _node_alive(self, node_id: str) -> bool:
        return self._cluster.nodes.get(node_id, 0.0) > self.clock.seconds()

    def renew_node(self, node_id: str, ttl: float) -> defer.Deferred[bool]:
        """Renew the daemon's lease; fire with whether it was still held."""

        def renew() -> bool:
            records.check_key(node_id, "node id")
            self._up()
            held = self._node_alive(node_id)
            self._cluster.nodes[node_id] = self.clock.seconds() + float(ttl)
            return held

        return _fired(renew)

    def open_session(
        self, session_id: str, node_id: str, username: str, limit: int
    ) -> defer.Deferred[int]:
        """Own a new session (epoch 1) unless the account has ``limit`` in flight."""

        def open_() -> int:
            records.check_key(session_id, "session id")
            records.check_username(username)
            self._up()
            live = self._cluster.live.setdefault(username, set())
            owners = self._cluster.owners
            for sid in list(live):  # never saved, and its owner is gone: it died at once
                if sid not in self._sessions and not self._node_alive(owners[sid][0]):
                    live.discard(sid)
                    del owners[sid]
            if session_id not in live and len(live) >= limit:
                return 0
            live.add(session_id)
            self._cluster.owners[session_id] = (node_id, 1, username)
            return 1

        return _fired(open_)

    def claim_session(self, session_id: str, node_id: str) -> defer.Deferred[int]:
        """Become the session's owner unless a live daemon holds it; fire with the epoch."""

        def claim() -> int:
            records.check_key(session_id, "session id")
            self._up()
            owners = self._cluster.owners
            owner, epoch, username = owners.get(session_id, ("", 0, ""))
            if owner == node_id:
                return epoch
            if owner and self._node_alive(owner):
                return 0
            owners[session_id] = (node_id, epoch + 1, username)
            return epoch + 1

        return _fired(claim)

    def session_owner(self, session_id: str) -> defer.Deferred[tuple[str, int] | None]:
        """Fire with the session's (owner, epoch), or None."""

        def owner() -> tuple[str, int] | None:
            records.check_key(session_id, "session id")
            self._up()
            found = self._cluster.owners.get(session_id)
            return None if found is None else (found[0], found[1])

        return _fired(owner)

    def orphaned_sessions(self, node_id: str) -> defer.Deferred[list[str]]:
        """Fire with the sessions in flight whose owner (not ``node_id``) is gone."""

        def orphans() -> list[str]:
            self._up()
            owners = self._cluster.owners
            found = []
            for sid in sorted(self._sessions):
                owner = owners.get(sid, ("", 0, ""))[0]
                if owner and owner != node_id and not self._node_alive(owner):
                    found.append(sid)
            return found

        return _fired(orphans)

    def _holds(self, session_id: str, node_id: str, epoch: int) -> bool:
        found = self._cluster.owners.get(session_id)
        return found is not None and found[:2] == (node_id, epoch)

    def save_session_as(
        self, session_id: str, data: dict[str, Any], node_id: str, epoch: int
    ) -> defer.Deferred[bool]:
        """save_session while ``node_id`` holds the session at ``epoch``."""

        def save() -> bool:
            records.check_key(session_id, "session id")
            text = records.check_session(data)
            self._up()
            if not self._holds(session_id, node_id, epoch):
                return False
            self._sessions[session_id] = text
            return True

        return _fired(save)

    def end_session_as(
        self, session_id: str, cdr: CDR, origin: str, node_id: str, epoch: int
    ) -> defer.Deferred[bool]:
        """end_session while ``node_id`` holds the session at ``epoch``."""

        def end() -> bool:
            records.check_key(session_id, "session id")
            records.check_cdr(cdr)
            records.check_origin(origin)
            self._up()
            if not self._holds(session_id, node_id, epoch):
                return False
            username = self._cluster.owners.pop(session_id)[2]
            self._cluster.live.get(username, set()).discard(session_id)
            self._sessions.pop(session_id, None)
            self._append(cdr, origin)
            return True

        return _fired(end)

    def post_message(self, box: str, text: str, keep: int) -> defer.Deferred[str]:
        """Append ``text`` to ``box``; fire with its id."""

        def post() -> str:
            records.check_key(box, "message box")
            self._up()
            cluster = self._cluster
            cluster.counter += 1
            messages = cluster.boxes.setdefault(box, [])
            messages.append((cluster.counter, text))
            del messages[: max(0, len(messages) - max(1, int(keep)))]
            return f"{cluster.counter}-0"

        return _fired(post)

    def read_messages(
        self, box: str, after: str, count: int
    ) -> defer.Deferred[list[tuple[str, str]]]:
        """Fire with up to ``count`` (id, text) of ``box`` after ``after``."""

        def read() -> list[tuple[str, str]]:
            records.check_key(box, "message box")
            self._up()
            mark = int(after.partition("-")[0])
            messages = self._cluster.boxes.get(box, [])
            return [(f"{n}-0", text) for n, text in messages if n > mark][: int(count)]

        return _fired(read)

    def last_message_id(self, box: str) -> defer.Deferred[str]:
        """Fire with the id of the last message of ``box`` ("0-0": none)."""

        def last() -> str:
            records.check_key(box, "message box")
            self._up()
            messages = self._cluster.boxes.get(box)
            return f"{messages[-1][0]}-0" if messages else "0-0"

        return _fired(last)

    # -- IVR: the PIN index (unknown callers) -------------------------------------------
    def account_for_pin(self, pin: str) -> defer.Deferred[str | None]:
        """Fire with the account whose PIN this is, or None (see IStore)."""

        def find() -> str | None:
            self._up()
            if not isinstance(pin, str) or not records.PIN.fullmatch(pin):
                return None
            return self._pin_index.get(pin_index(self.pin_pepper, pin))

        return _fired(find)

    def _pin_free(self, username: str, pin: str) -> None:
        """InvalidArgument when another account has ``pin``."""
        owner = self._pin_index.get(pin_index(self.pin_pepper, pin))
        if owner is not None and owner != username:
            raise InvalidArgument("that PIN cannot be used: choose another")

    def _index_pin(self, username: str, pin: str, unless_taken: bool = False) -> None:
        """Make ``pin`` the account's entry of the PIN index (its old one gone)."""
        entry = pin_index(self.pin_pepper, pin)
        owner = self._pin_index.get(entry)
        if owner is not None and owner != username:
            if unless_taken:
                return
            raise InvalidArgument("that PIN cannot be used: choose another")
        secrets_ = self._secrets[username]
        old = secrets_.get("pin_index", "")
        if old and old != entry and self._pin_index.get(old) == username:
            del self._pin_index[old]
        self._pin_index[entry] = username
        secrets_["pin_index"] = entry


@dataclasses.dataclass
class _Cluster:
    """MemoryStore's part of several daemons: leases, owners, in-flight counts, boxes."""

    #: node id -> until when its lease holds
    nodes: dict[str, float] = dataclasses.field(default_factory=dict)
    #: session id -> (owner node, epoch, username)
    owners: dict[str, tuple[str, int, str]] = dataclasses.field(default_factory=dict)
    #: username -> the ids of its sessions in flight
    live: dict[str, set[str]] = dataclasses.field(default_factory=dict)
    #: message box -> [(number, text)]
    boxes: dict[str, list[tuple[int, str]]] = dataclasses.field(default_factory=dict)
    counter: int = 0


Q = TypeVar("Q", WebhookDelivery, OutboundSms)


class _Queue(Generic[Q]):
    """A durable queue's state in memory (outbound SMS, webhooks): items by id, the due
    ones, the dead letters, the ids sent lately."""

    def __init__(self, clock: IReactorTime, sent_ttl: float) -> None:
        self.clock = clock
        self.sent_ttl = sent_ttl
        self.items: dict[str, Q] = {}
        self.due: set[str] = set()
        self.dead_ids: list[str] = []
        #: ids of sent items -> when they are forgotten
        self.sent: dict[str, float] = {}

    def add(self, item: Q) -> bool:
        sent_until = self.sent.get(item.id)
        if item.id in self.items or (sent_until and sent_until > self.clock.seconds()):
            return False
        self.items[item.id] = item
        self.due.add(item.id)
        return True

    def queued(self) -> list[Q]:
        return sorted((self.items[i] for i in self.due), key=lambda m: (m.not_before, m.id))

    def claim(self, now: float, limit: int, lease: float) -> list[Q]:
        due = [m for m in self.queued() if m.not_before <= now][: max(0, limit)]
        claimed = [dataclasses.replace(m, not_before=now + lease) for m in due]
        self.items.update((m.id, m) for m in claimed)
        return claimed

    def next_due(self) -> float | None:
        queued = self.queued()
        return queued[0].not_before if queued else None

    def done(self, item_id: str) -> None:
        self.due.discard(item_id)
        self.items.pop(item_id, None)
        self.sent[item_id] = self.clock.seconds() + self.sent_ttl

    def retry(self, item_id: str, not_before: float, attempts: int, last_error: str) -> bool:
        if item_id not in self.due:
            return False
        self.items[item_id] = dataclasses.replace(
            self.items[item_id],
            not_before=float(not_before),
            attempts=int(attempts),
            last_error=last_error,
        )
        return True

    def fail(self, item_id: str, error: str) -> bool:
        if item_id not in self.due:
            return False
        self.due.discard(item_id)
        self.items[item_id] = dataclasses.replace(self.items[item_id], last_error=error)
        self.dead_ids.append(item_id)
        return True

    def dead(self) -> list[Q]:
        return [self.items[i] for i in self.dead_ids]


def _pin_keys(username: str, number: str) -> tuple[str, ...]:
    """The PIN failure counters of an account and of a caller ID (username "": the
    caller ID's alone, an unknown caller's)."""
    if not username:
        return (f"number:{number}",)
    records.check_username(username)
    return f"account:{username}", f"number:{number}"


def _code(voucher: Voucher) -> str:
    return voucher.code
