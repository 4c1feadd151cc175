"""The store interface: everything that must survive a restart.

Every method returns a Deferred. Writes are applied in the order their methods were
called, whether or not the earlier ones have answered (callers rely on it to avoid
waiting for each reply). Money is an ``int`` of minor units. Two
implementations satisfy it: :mod:`callbackd.store.memory` (unit tests) and
:mod:`callbackd.store.redis` (production), both checked by one contract suite.
"""

from __future__ import annotations

from typing import Final

from zope.interface import Interface

__all__ = [
    "INVITE_ORIGIN",
    "LINK_ORIGIN",
    "NOT_ACCOUNT_CHANGES",
    "SMS_CODE_ATTEMPTS",
    "SMS_LEASE",
    "SMS_SENT_TTL",
    "AccountExists",
    "IStore",
    "InsufficientFunds",
    "InvalidArgument",
    "NoSuchAccount",
    "NoSuchVoucher",
    "StoreError",
    "StoreUnavailable",
    "VoucherUsed",
    # the REST API
    "WEBHOOK_LEASE",
    "WEBHOOK_SENT_TTL",
]


#: the origin of the change feed's word of a chat link made or undone (see IStore.watch)
LINK_ORIGIN: Final = "store:link"
#: the origin of an operator's request that the chat fronts invite a JID: the feed's
#: word is then the bare JID, not a username (see IStore.request_invite)
INVITE_ORIGIN: Final = "store:invite"
#: the origins of the feed's words that change no account's record, balance or CDRs:
#: what caches accounts has nothing to forget for them
NOT_ACCOUNT_CHANGES: Final = frozenset({LINK_ORIGIN, INVITE_ORIGIN})
#: seconds a claimed outbound SMS stays out of other claimers' reach (IStore.due_sms)
SMS_LEASE: Final = 60.0
#: seconds the id of a sent SMS is remembered, so a second enqueue is a no-op
SMS_SENT_TTL: Final = 7 * 86400
#: seconds a claimed webhook delivery stays out of other claimers' reach (IStore.due_webhooks)
WEBHOOK_LEASE: Final = 60.0
#: seconds the id of a delivered webhook is remembered, so a second enqueue is a no-op
WEBHOOK_SENT_TTL: Final = 86400
#: wrong guesses a caller-ID code takes before it is forgotten (IStore.issue_caller_id_code)
SMS_CODE_ATTEMPTS: Final = 5


class StoreError(Exception):
    """A store operation failed; the message is fit to show to the requester."""


class StoreUnavailable(StoreError):
    """The backing database cannot be reached right now."""


class InvalidArgument(StoreError):
    """An argument is malformed (bad username, negative amount...)."""


class AccountExists(StoreError):
    """An account with that username already exists."""


class NoSuchAccount(StoreError):
    """No account has that username."""


class InsufficientFunds(StoreError):
    """The debit would take the balance below the account's floor."""


class NoSuchVoucher(StoreError):
    """No voucher has that code."""


class VoucherUsed(StoreError):
    """The voucher was already redeemed."""


class IStore(Interface):
    """Accounts, balances, caller IDs, chat addresses (JIDs), phonebooks, vouchers, CDRs,
    sessions, provider stats."""

    def ping():
        """Fire with True when the database answers; errback StoreUnavailable otherwise."""

    # -- accounts -----------------------------------------------------------
    def create_account(account, password, pin=None):
        """Create ``account`` (an Account) with a password (and PIN), hashed with a slow KDF.

        Atomic: either the whole account exists afterwards or nothing does.
        Errback AccountExists if the username is taken, InvalidArgument when another
        account has the PIN.
        """

    def get_account(username):
        """Fire with the Account, or None."""

    def update_account(username, **fields):
        """Change Account fields (not username); fire with the new Account."""

    def list_accounts():
        """Fire with every username, sorted."""

    def set_password(username, password):
        """Replace the password hash."""

    def set_pin(username, pin):
        """Replace the PIN hash. InvalidArgument when another account has that PIN (a
        PIN identifies its account to the IVR: ``account_for_pin``)."""

    def check_password(username, password):
        """Fire with True if ``password`` is the account's password (False if no account)."""

    def check_pin(username, pin):
        """Fire with True if ``pin`` is the account's PIN."""

    # -- money ----------------------------------------------------------------
    def get_balance(username):
        """Fire with the balance in minor units; errback NoSuchAccount."""

    def credit(username, amount, key):
        """Add ``amount`` > 0; fire with the new balance. Applied once per ``key``."""

    def debit(username, amount, key, force=False):
        """Take ``amount`` >= 0 atomically; fire with the new balance.

        Errback InsufficientFunds if the balance would go below
        ``-credit_limit`` (unless ``force``: settling a call that already
        happened). A debit whose ``key`` was already applied changes nothing
        and fires with the current balance: nothing is billed twice.
        """

    # -- caller IDs -----------------------------------------------------------
    def add_caller_id(username, number, verified=False):
        """Register ``number`` (E.164) for the account; one account per number."""

    def verify_caller_id(username, number):
        """Mark the number verified."""

    def remove_caller_id(username, number):
        """Forget the number."""

    def list_caller_ids(username):
        """Fire with the account's CallerIDs."""

    def account_for_caller_id(number, verified_only=True):
        """Fire with the username owning ``number``, or None."""

    # -- chat addresses (XMPP JIDs) ----------------------------------------------
    def link_jid(jid, username):
        """Link the bare JID of ``jid`` (lower-cased) to the account, replacing any link.

        NoSuchAccount if there is no such account; InvalidArgument for a bad JID.
        """

    def unlink_jid(jid):
        """Forget the JID's link; fire with True if there was one.

        Like :meth:`link_jid`, told on the change feed (:meth:`watch`) under the
        username the JID was linked to: every chat front caching links forgets it.
        """

    def account_for_jid(jid):
        """Fire with the username the bare JID of ``jid`` is linked to, or None."""

    def linked_jids():
        """Fire with every linked bare JID, sorted (the chat service greets them)."""

    def request_invite(jid):
        """Ask every daemon's chat front to send the bare JID a subscription request.

        Told on the change feed (:meth:`watch`) as ``(bare JID, INVITE_ORIGIN)``, so an
        operator's tool reaches the daemons through the store; fire with how many
        watchers heard it (every daemon watches; those with the chat front send the
        request). InvalidArgument for a bad JID.
        """

    # -- phonebook -------------------------------------------------------------
    def set_phonebook_entry(username, entry):
        """Store a PhonebookEntry (replacing the one with the same index or name)."""

    def delete_phonebook_entry(username, index):
        """Remove the entry with that index."""

    def get_phonebook(username):
        """Fire with the entries sorted by index."""

    # -- vouchers --------------------------------------------------------------
    def create_vouchers(batch, value, count):
        """Create ``count`` fresh random codes of ``value``; fire with the Vouchers."""

    def redeem_voucher(code, username):
        """Mark the voucher used by ``username`` and credit its value, atomically.

        Fire with the value. Errback NoSuchVoucher or VoucherUsed; single use
        even when redeemed concurrently.
        """

    def get_voucher(code):
        """Fire with the Voucher, or None."""

    def list_vouchers(batch):
        """Fire with the batch's Vouchers."""

    # -- CDRs --------------------------------------------------------------------
    def append_cdr(cdr):
        """Append a CDR; a second CDR with the same ``cdr_id`` is ignored."""

    def charge(cdr, origin=""):
        """Append a leg's CDR and debit its ``cost``, both or neither, once per ``cdr_id``.

        Fire with the balance after. The debit is not held to the credit floor (the
        call happened); when a CDR with that ``cdr_id`` is stored already nothing
        changes. NoSuchAccount if the CDR's account does not exist.
        """

    def list_cdrs(username=None, since=0.0, until=None):
        """Fire with CDRs (of one account or all) ended within the range, oldest first."""

    # -- sessions in flight ------------------------------------------------------
    def save_session(session_id, data):
        """Store the JSON-able dict ``data`` of a session in flight."""

    def load_session(session_id):
        """Fire with the stored dict, or None."""

    def delete_session(session_id):
        """Forget a finished session."""

    def end_session(session_id, cdr, origin=""):
        """Append the session's CDR and forget its state, both or neither."""

    # -- change feed -------------------------------------------------------------------
    def watch(on_change, on_state):
        """Hear of every change to an account, by any writer in any process.

        ``on_change(username, origin)`` is called after the account's record, balance,
        CDRs or chat links changed. ``origin``: what the writer passed to :meth:`charge`
        or :meth:`end_session`; :data:`LINK_ORIGIN` for a JID linked or unlinked (told
        under the account it was linked to and the one it is linked to now, so a chat
        front caching links hears only those); "" for every other write.
        ``on_state(True)`` once the feed is live, ``on_state(False)`` when it is lost:
        changes meanwhile are not told, so a watcher caching account data drops it then.
        Return a function that stops.
        """

    def list_sessions():
        """Fire with every session id in flight."""

    # -- provider statistics -------------------------------------------------------
    def record_provider_attempt(provider, at, answered, pdd, duration, cause):
        """Record one leg attempt over ``provider`` (for ASR/ACD/PDD)."""

    def provider_attempts(provider, since):
        """Fire with the attempts since ``since`` as dicts (at, answered, pdd, duration, cause)."""

    # -- outbound SMS queue ------------------------------------------------------------
    def enqueue_sms(message_id, to, text, gateway, not_before):
        """Queue an SMS to send at or after ``not_before``; fire with True.

        ``gateway`` names an ``[sms-gateway:NAME]`` that sends; ``""`` is the ``[sms]``
        default gateway (for parts of the daemon that do not know the gateways).

        Idempotent by ``message_id``: when that id is queued, dead-lettered or was sent
        within :data:`SMS_SENT_TTL` seconds, nothing changes and it fires with False.
        """

    def due_sms(now, limit, lease=SMS_LEASE):
        """Claim at most ``limit`` SMS due at ``now``; fire with OutboundSms, oldest due first.

        Atomic: each claimed message's ``not_before`` moves to ``now + lease`` (as
        returned), so no other claimer gets it before then; a claimer that dies without
        calling :meth:`sms_sent`, :meth:`sms_retry` or :meth:`sms_failed` lets it come
        due again when the lease ends.
        """

    def next_sms_due():
        """Fire with the earliest ``not_before`` in the queue, or None when it is empty."""

    def sms_sent(message_id):
        """Forget the queued SMS, remembering its id (for :meth:`enqueue_sms`) a while."""

    def sms_retry(message_id, not_before, attempts, last_error):
        """Put a claimed SMS back with its failed ``attempts`` count, due at ``not_before``.

        Fire with False (changing nothing) when the id is not queued.
        """

    def sms_failed(message_id, error):
        """Give up on the SMS: out of the queue into the dead letters, with ``error``.

        Fire with False (changing nothing) when the id is not queued.
        """

    def dead_sms():
        """Fire with the dead-lettered OutboundSms, oldest first (for operators)."""

    # -- IVR PIN lockout (phone callback) ------------------------------------------------
    def pin_failed(username, number, now, attempts, period):
        """Count a wrong PIN keyed for the account from the caller ID ``number``.

        Failures are counted per account and per caller ID, each in a window of
        ``period`` seconds from its first failure; the ``attempts``-th failure of either
        locks PIN entry for both until ``now + period``. Fire with the end of the
        lockout in force after this failure (0.0: not locked). ``username`` "": the
        caller ID's counter alone (an unknown caller's PIN, which names no account);
        likewise for ``pin_locked_until`` and ``pin_succeeded``.
        """

    def pin_locked_until(username, number, now):
        """Fire with the end of a PIN lockout of the account or the caller ID in force at
        ``now`` (0.0: none)."""

    def pin_succeeded(username, number):
        """A right PIN: forget the failures of the account and of the caller ID."""

    # -- the REST API: keys -------------------------------------------------------------
    def create_api_key(username, label):
        """Make a new API key for the account; fire with ``(key_id, secret)``.

        The secret is returned this once: only its hash is kept. NoSuchAccount if there
        is no such account; InvalidArgument for a bad label (records.check_key_label).
        """

    def list_api_keys(username):
        """Fire with the account's ApiKeys (no secrets), oldest first."""

    def revoke_api_key(username, key_id):
        """Forget the account's key ``key_id``; fire with True if it had one.

        The key opens nothing from then on, in every process.
        """

    def account_for_api_key(secret):
        """Fire with the username the API key ``secret`` belongs to, or None."""

    # -- the REST API: idempotency keys ----------------------------------------------------
    def claim_idempotency_key(username, key, fingerprint, ttl):
        """Claim the account's ``Idempotency-Key`` for a request with ``fingerprint``.

        Atomic: fire with None when the key was free (it is now the caller's for ``ttl``
        seconds), else with what is stored: ``{"fingerprint": ..., "response": str or
        None}`` (None: the first request is still being answered).
        """

    def settle_idempotency_key(username, key, fingerprint, response, ttl):
        """Store the response (a string) given to the key's request, for ``ttl`` seconds."""

    def release_idempotency_key(username, key):
        """Forget the key (the request failed in a way a retry may fix)."""

    # -- the REST API: webhooks ------------------------------------------------------------
    def set_webhook(username, url):
        """Set the account's webhook URL ("" removes it); fire with the Webhook or None.

        The signing secret is made with the first URL and kept when the URL changes.
        NoSuchAccount if there is no such account; InvalidArgument for a bad URL.
        """

    def get_webhook(username):
        """Fire with the account's Webhook, or None."""

    def enqueue_webhook(delivery_id, username, body, not_before):
        """Queue a webhook POST of ``body`` (JSON text) for the account; fire with True.

        Idempotent by ``delivery_id``, as :meth:`enqueue_sms` is by message id.
        """

    def due_webhooks(now, limit, lease=WEBHOOK_LEASE):
        """Claim at most ``limit`` due WebhookDeliveries, as :meth:`due_sms` claims SMS."""

    def next_webhook_due():
        """Fire with the earliest ``not_before`` in the webhook queue, or None."""

    def webhook_sent(delivery_id):
        """Forget the delivery, remembering its id :data:`WEBHOOK_SENT_TTL` seconds."""

    def webhook_retry(delivery_id, not_before, attempts, last_error):
        """Put a claimed delivery back, due at ``not_before``; False when not queued."""

    def webhook_failed(delivery_id, error):
        """Give up on the delivery: into the dead letters; False when not queued."""

    def dead_webhooks():
        """Fire with the dead-lettered WebhookDeliveries, oldest first."""

    # -- SMS front: inbound messages, caller-ID codes, counters -----------------------
    def record_inbound_sms(keys, record, now, ttl):
        """Record an accepted inbound SMS unless one of its dedupe ``keys`` was seen.

        ``keys``: the message's dedupe keys (:func:`callbackd.sms.inbound.dedupe_key`;
        the first is its own, the others those a retry of it may carry). When none was
        recorded within ``ttl`` seconds, marks the first seen until ``now + ttl``, keeps
        ``record`` (a JSON-able dict) pending under it and fires with True; otherwise
        changes nothing and fires with False (a gateway's retry). Atomic.
        """

    def inbound_sms_handled(key):
        """The pending inbound SMS recorded under ``key`` was handled: forget its record."""

    def pending_inbound_sms():
        """Fire with ``(key, record, recorded_at)`` of every pending inbound SMS, oldest first."""

    def issue_caller_id_code(username, number, code, ttl, attempts=SMS_CODE_ATTEMPTS):
        """Add ``number`` as an unverified caller ID of the account and keep ``code``'s hash.

        The code (replacing any earlier one for the number) is good for ``ttl`` seconds
        and ``attempts`` wrong guesses. NoSuchAccount, or InvalidArgument when the number
        belongs to another account or is no E.164 number.
        """

    def confirm_caller_id_code(number, code):
        """Fire with the username when ``code`` is the number's live code, else None.

        A match marks the caller ID verified and forgets the code; a wrong code counts
        an attempt, and the code is forgotten when its attempts are used up.
        """

    def count_hit(key, period):
        """Count a hit of ``key``; fire with the hits in its window (the first hit opens
        a window of ``period`` seconds; the count starts over after it)."""

    def hit_count(key):
        """Fire with the hits of ``key`` in its open window (0 when none is open)."""

    def clear_hits(key):
        """Close ``key``'s window (forget its hits)."""

    # -- web portal sessions ------------------------------------------------------------
    def create_web_session(username, role, ttl):
        """Open a portal login of ``username`` in ``role`` for ``ttl`` seconds.

        Fire with a fresh random token (the cookie's value). Only a digest of the token
        is stored, so a copy of the database opens no login. InvalidArgument for a bad
        username, role or ttl.
        """

    def get_web_session(token):
        """Fire with ``{"username", "role", "created_at"}`` of a live login, or None
        (unknown, expired, deleted or malformed token)."""

    def delete_web_session(token):
        """End the login (log out); fire with True if there was one."""

    # -- several daemons (cluster): ownership, leases, messages ----------------------------
    def renew_node(node_id, ttl):
        """Renew the daemon's lease for ``ttl`` seconds; fire with whether it was still held
        (False: it had expired, or is new, and another daemon may have taken its sessions)."""

    def open_session(session_id, node_id, username, limit):
        """Record a new session as owned by ``node_id`` (epoch 1) and count it among the
        account's sessions in flight, unless the account has ``limit`` in flight already
        (on every daemon). Fire with the epoch (1), or 0 when over the limit. A session
        of the account never saved whose owner's lease has expired (the daemon died
        before its first save) counts no more and loses its owner record."""

    def claim_session(session_id, node_id):
        """Become the session's owner if it has none, is ``node_id``'s already, or its
        owner's lease has expired (a new epoch, one more than the last). Fire with the
        epoch now held, or 0 when another daemon holds it. Atomic: never two owners."""

    def session_owner(session_id):
        """Fire with ``(node_id, epoch)`` of the session's owner, or None."""

    def orphaned_sessions(node_id):
        """Fire with the ids of sessions in flight, sorted, whose owner is not ``node_id``
        and whose owner's lease has expired (what :meth:`claim_session` would give)."""

    def save_session_as(session_id, data, node_id, epoch):
        """:meth:`save_session`, fenced: only while ``node_id`` holds the session at
        ``epoch``. Fire with True if saved, False if refused (a stale owner)."""

    def end_session_as(session_id, cdr, origin, node_id, epoch):
        """:meth:`end_session`, fenced as :meth:`save_session_as`; the session's owner
        record goes and it stops counting among its account's sessions in flight.
        Fire with True if done, False if refused (nothing written)."""

    def post_message(box, text, keep):
        """Append ``text`` to the message box ``box`` (keeping about its last ``keep``
        messages); fire with the message's id. Ids grow in the order of posting."""

    def read_messages(box, after, count):
        """Fire with up to ``count`` ``(id, text)`` of ``box`` posted after the id
        ``after`` ("0-0": from the first), oldest first."""

    def last_message_id(box):
        """Fire with the id of the last message of ``box`` ("0-0" when it has none)."""

    # -- IVR: the PIN index (unknown callers) -------------------------------------------
    def account_for_pin(pin):
        """Fire with the username whose PIN is ``pin``, or None (also for a malformed PIN).

        The index holds ``hashing.pin_index(pepper, pin)`` of every PIN set since it
        exists (``create_account``, ``set_pin``, and a right ``check_pin``), never the
        PIN: the pepper lives outside the database.
        """
