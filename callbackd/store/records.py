"""Validation and flat encodings shared by the store implementations.

Both stores check their arguments here, so the memory fake and Redis refuse
exactly the same things (the contract suite holds them to it), and Redis
hashes are written and read with one encoding.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import secrets
from collections.abc import Mapping
from typing import Any

from callbackd.core.model import (
    CDR,
    Account,
    AccountStatus,
    CallerID,
    OutboundSms,
    PhonebookEntry,
    Voucher,
    WebhookDelivery,
)
from callbackd.store.interface import InvalidArgument

__all__ = [
    "ACCOUNT_FIELDS",
    "IDEMPOTENCY_TTL",
    "PIN",
    "MAX_AMOUNT",
    "SMS_PROGRESS",
    "check_attempts",
    "check_code",
    "check_inbound",
    "check_period",
    "code_hash",
    "account_from_fields",
    "account_to_fields",
    "attempt_record",
    "caller_id_from_json",
    "caller_id_to_json",
    "cdr_from_json",
    "cdr_to_json",
    "check_amount",
    "check_account",
    "check_batch",
    "check_count",
    "check_cdr",
    "check_entry",
    "bare_jid",
    "check_key",
    "check_number",
    "check_password",
    "check_sms",
    "sms_from_fields",
    "check_pin",
    "check_provider",
    "check_session",
    "check_username",
    "entry_from_json",
    "entry_to_json",
    "new_voucher_code",
    "updated_account",
    "voucher_from_fields",
    "voucher_to_fields",
    # the REST API
    "API_KEY_PREFIX",
    "api_key_hash",
    "check_fingerprint",
    "check_idempotency_key",
    "check_key_label",
    "check_webhook",
    "check_webhook_url",
    "new_api_key",
    "new_webhook_secret",
    "webhook_from_fields",
]

#: amounts above this are refused: Redis Lua numbers are doubles, exact to 2**53
MAX_AMOUNT = 10**15
#: seconds an applied credit/debit key is remembered (a retry after that is charged again)
IDEMPOTENCY_TTL = 30 * 24 * 3600

_USERNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}")
_E164 = re.compile(r"\+[1-9][0-9]{1,14}")
#: a PIN: 4 to 12 digits
PIN = _PIN = re.compile(r"[0-9]{4,12}")
_BATCH = re.compile(r"[A-Za-z0-9._-]{1,64}")
_PROVIDER = re.compile(r"[A-Za-z0-9_-]{1,32}")
_LANGUAGE = re.compile(r"[a-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})?")
_MAX_KEY = 200
_ORIGIN = re.compile(r"[A-Za-z0-9.:_-]{0,64}")

ACCOUNT_FIELDS = tuple(f.name for f in dataclasses.fields(Account))
#: the values of ``Account.sms_progress`` ("": the ``[sms] progress`` default)
SMS_PROGRESS = ("", "all", "outcome", "none")


def check_username(username: object) -> str:
    """The username if well formed, else InvalidArgument."""
    if not isinstance(username, str) or not _USERNAME.fullmatch(username):
        raise InvalidArgument(
            f"bad username {username!r}: 1-64 letters, digits or ._@+- starting with a letter "
            "or digit"
        )
    return username


def check_amount(amount: object, *, positive: bool) -> int:
    """An int amount of minor units (> 0 or >= 0), else InvalidArgument."""
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise InvalidArgument(f"amount must be an integer of minor units, got {amount!r}")
    if amount < 0 or (positive and amount == 0):
        raise InvalidArgument(f"amount must be {'> 0' if positive else '>= 0'}, got {amount}")
    if amount > MAX_AMOUNT:
        raise InvalidArgument(f"amount {amount} is too large")
    return amount


def check_key(key: object, what: str = "key") -> str:
    """A non-empty identifier (idempotency key, session id, CDR id) of at most 200 chars."""
    if not isinstance(key, str) or not key or len(key) > _MAX_KEY:
        raise InvalidArgument(f"{what} must be a non-empty string of at most {_MAX_KEY} chars")
    return key


def check_origin(origin: object) -> str:
    """A change's origin tag (see IStore.watch): "" or letters, digits, ``.:_-``."""
    if not isinstance(origin, str) or not _ORIGIN.fullmatch(origin):
        raise InvalidArgument(f"bad origin {origin!r}: at most 64 of letters, digits, .:_-")
    return origin


def check_number(number: object) -> str:
    """An E.164 number with its leading +, else InvalidArgument."""
    if not isinstance(number, str) or not _E164.fullmatch(number):
        raise InvalidArgument(f"bad number {number!r}: E.164 expected, like +4930123456")
    return number


#: a user's bare JID, ``local@domain``: no whitespace, control characters, ``/`` or second ``@``
_BARE_JID = re.compile(r"[^\s\x00-\x1f\x7f@/]{1,1023}@[^\s\x00-\x1f\x7f@/]{1,1023}")


def bare_jid(jid: object) -> str:
    """The bare JID of ``jid`` (resource dropped), lower-cased; else InvalidArgument.

    JIDs are compared case-insensitively in their local part and domain, so a link
    made from ``Alice@Example.org/phone`` is found again from ``alice@example.org``.
    """
    if not isinstance(jid, str):
        raise InvalidArgument(f"bad JID {jid!r}")
    bare = jid.partition("/")[0].strip().lower()
    if not _BARE_JID.fullmatch(bare):
        raise InvalidArgument(f"bad JID {jid!r}: user@domain expected")
    return bare


def check_password(password: object) -> str:
    """A non-empty password of at most 1024 chars."""
    if not isinstance(password, str) or not password or len(password) > 1024:
        raise InvalidArgument("password must be a non-empty string of at most 1024 chars")
    return password


def check_pin(pin: object) -> str:
    """A PIN of 4 to 12 digits."""
    if not isinstance(pin, str) or not _PIN.fullmatch(pin):
        raise InvalidArgument("PIN must be 4 to 12 digits")
    return pin


def check_batch(batch: object) -> str:
    """A voucher batch name."""
    if not isinstance(batch, str) or not _BATCH.fullmatch(batch):
        raise InvalidArgument(f"bad batch name {batch!r}: 1-64 letters, digits or ._-")
    return batch


def check_provider(provider: object) -> str:
    """A provider name as in ``[provider:NAME]``."""
    if not isinstance(provider, str) or not _PROVIDER.fullmatch(provider):
        raise InvalidArgument(f"bad provider name {provider!r}")
    return provider


def check_session(data: object) -> str:
    """The JSON text of a session's dict, else InvalidArgument."""
    if not isinstance(data, dict):
        raise InvalidArgument("session data must be a dict")
    try:
        return json.dumps(data, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise InvalidArgument(f"session data is not JSON-able: {e}") from None


def _check_int(name: str, value: object, minimum: int = 0) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidArgument(f"{name} must be an integer >= {minimum}, got {value!r}")


def check_account(account: object) -> Account:
    """An Account whose every field is well formed, else InvalidArgument."""
    if not isinstance(account, Account):
        raise InvalidArgument(f"expected an Account, got {type(account).__name__}")
    check_username(account.username)
    if not isinstance(account.language, str) or not _LANGUAGE.fullmatch(account.language):
        raise InvalidArgument(f"bad language {account.language!r}")
    if not isinstance(account.tariff, str) or not _BATCH.fullmatch(account.tariff):
        raise InvalidArgument(f"bad tariff name {account.tariff!r}")
    if not isinstance(account.status, AccountStatus):
        raise InvalidArgument(f"bad status {account.status!r}")
    _check_int("credit_limit", account.credit_limit)
    if account.credit_limit > MAX_AMOUNT:
        raise InvalidArgument("credit_limit is too large")
    _check_int("max_sessions", account.max_sessions)
    _check_int("daily_spend_cap", account.daily_spend_cap)
    if account.default_number:
        check_number(account.default_number)
    if isinstance(account.created_at, bool) or not isinstance(account.created_at, int | float):
        raise InvalidArgument("created_at must be a number")
    if account.sms_progress not in SMS_PROGRESS:
        raise InvalidArgument(f"bad sms_progress {account.sms_progress!r}")
    return account


def check_new_account(account: object, password: object, pin: object | None) -> Account:
    """The checks of ``create_account``: the account, its password and its PIN (if any)."""
    checked = check_account(account)
    check_password(password)
    if pin is not None:
        check_pin(pin)
    return checked


def updated_account(account: Account, fields: Mapping[str, Any]) -> Account:
    """``account`` with ``fields`` changed, checked; InvalidArgument for unknown fields."""
    unknown = sorted(set(fields) - set(ACCOUNT_FIELDS))
    if unknown:
        raise InvalidArgument(f"unknown account field(s): {', '.join(unknown)}")
    if "username" in fields:
        raise InvalidArgument("the username of an account cannot change")
    values = dict(fields)
    if "status" in values and not isinstance(values["status"], AccountStatus):
        try:
            values["status"] = AccountStatus(values["status"])
        except ValueError:
            raise InvalidArgument(f"bad status {values['status']!r}") from None
    return check_account(dataclasses.replace(account, **values))


def account_to_fields(account: Account) -> dict[str, str]:
    """A flat str -> str mapping of an Account (a Redis hash)."""
    out = {}
    for name in ACCOUNT_FIELDS:
        value = getattr(account, name)
        out[name] = value.value if isinstance(value, AccountStatus) else str(value)
    return out


def account_from_fields(fields: Mapping[str, str]) -> Account:
    """The Account a flat mapping from :func:`account_to_fields` describes."""
    return Account(
        username=fields["username"],
        language=fields["language"],
        tariff=fields["tariff"],
        status=AccountStatus(fields["status"]),
        credit_limit=int(fields["credit_limit"]),
        max_sessions=int(fields["max_sessions"]),
        default_number=fields["default_number"],
        daily_spend_cap=int(fields["daily_spend_cap"]),
        created_at=float(fields["created_at"]),
        sms_progress=fields.get("sms_progress", ""),
    )


def caller_id_to_json(caller_id: CallerID) -> str:
    """JSON text of a CallerID."""
    return json.dumps(dataclasses.asdict(caller_id), sort_keys=True)


def caller_id_from_json(text: str) -> CallerID:
    """The CallerID of :func:`caller_id_to_json` text."""
    return CallerID(**json.loads(text))


def check_entry(entry: object) -> PhonebookEntry:
    """A well formed PhonebookEntry."""
    if not isinstance(entry, PhonebookEntry):
        raise InvalidArgument(f"expected a PhonebookEntry, got {type(entry).__name__}")
    _check_int("index", entry.index)
    for name in ("name", "address"):
        value = getattr(entry, name)
        if not isinstance(value, str) or not value or len(value) > 200:
            raise InvalidArgument(f"phonebook {name} must be a non-empty string")
    return entry


def entry_to_json(entry: PhonebookEntry) -> str:
    """JSON text of a PhonebookEntry."""
    return json.dumps(dataclasses.asdict(entry), sort_keys=True)


def entry_from_json(text: str) -> PhonebookEntry:
    """The PhonebookEntry of :func:`entry_to_json` text."""
    return PhonebookEntry(**json.loads(text))


def voucher_to_fields(voucher: Voucher) -> dict[str, str]:
    """A flat str -> str mapping of a Voucher (a Redis hash)."""
    return {f.name: str(getattr(voucher, f.name)) for f in dataclasses.fields(Voucher)}


def voucher_from_fields(fields: Mapping[str, str]) -> Voucher:
    """The Voucher a flat mapping from :func:`voucher_to_fields` describes."""
    return Voucher(
        code=fields["code"],
        batch=fields["batch"],
        value=int(fields["value"]),
        created_at=float(fields["created_at"]),
        used_by=fields.get("used_by", ""),
        used_at=float(fields.get("used_at", "0") or 0),
    )


def check_cdr(cdr: object) -> CDR:
    """A CDR with an id and numeric times."""
    if not isinstance(cdr, CDR):
        raise InvalidArgument(f"expected a CDR, got {type(cdr).__name__}")
    check_key(cdr.cdr_id, "cdr_id")
    for name in ("started_at", "answered_at", "ended_at"):
        value = getattr(cdr, name)
        if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
            raise InvalidArgument(f"CDR {name} must be a number")
    for name in ("billed_seconds", "rate", "cost"):
        _check_int(f"CDR {name}", getattr(cdr, name), minimum=-MAX_AMOUNT)
    return cdr


_CDR_FIELDS = tuple(f.name for f in dataclasses.fields(CDR))


def cdr_to_json(cdr: CDR) -> str:
    """JSON text of a CDR."""
    try:
        # field by field (asdict deep-copies; every field but ``extra``, a dict of
        # strings, holds an immutable value)
        return json.dumps(
            {name: getattr(cdr, name) for name in _CDR_FIELDS}, sort_keys=True, allow_nan=False
        )
    except (TypeError, ValueError) as e:
        raise InvalidArgument(f"CDR is not JSON-able: {e}") from None


def cdr_from_json(text: str) -> CDR:
    """The CDR of :func:`cdr_to_json` text."""
    return CDR(**json.loads(text))


def attempt_record(
    at: float, answered: bool, pdd: float, duration: float, cause: str
) -> dict[str, Any]:
    """The dict stored for one provider attempt, checked."""
    for name, value in (("at", at), ("pdd", pdd), ("duration", duration)):
        if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
            raise InvalidArgument(f"attempt {name} must be a number, got {value!r}")
    if not isinstance(answered, bool):
        raise InvalidArgument("attempt answered must be a bool")
    if not isinstance(cause, str):
        raise InvalidArgument("attempt cause must be a string")
    return {"at": at, "answered": answered, "pdd": pdd, "duration": duration, "cause": cause}


def new_voucher_code() -> str:
    """A fresh random 12-digit voucher code."""
    return f"{secrets.randbelow(10**12):012d}"


def check_count(count: object) -> int:
    """A voucher count between 1 and 100000."""
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 100_000:
        raise InvalidArgument(f"count must be an integer from 1 to 100000, got {count!r}")
    return count


#: the most characters of an outbound SMS's text (ten concatenated parts and then some)
MAX_SMS_TEXT = 2000


def check_sms(message_id: object, to: object, text: object, gateway: object) -> None:
    """An outbound SMS's id, number, text and gateway name (IStore.enqueue_sms)."""
    check_key(message_id, "message id")
    check_key(to, "recipient")
    if gateway != "":  # "": the [sms] default gateway
        check_key(gateway, "gateway")
    if not isinstance(text, str) or not text or len(text) > MAX_SMS_TEXT:
        raise InvalidArgument(f"an SMS text must be 1 to {MAX_SMS_TEXT} characters")


def sms_from_fields(fields: Mapping[str, str]) -> OutboundSms:
    """An OutboundSms from the string fields both stores keep it in."""
    return OutboundSms(
        id=fields["id"],
        to=fields["to"],
        text=fields["text"],
        gateway=fields["gateway"],
        attempts=int(fields.get("attempts", 0)),
        not_before=float(fields.get("not_before", 0.0)),
        created_at=float(fields.get("created_at", 0.0)),
        last_error=fields.get("last_error", ""),
    )


# -- the REST API: keys, idempotency keys, webhooks --------------------------------------

#: every API key secret starts with it (so a leaked one is recognisable in a scan)
API_KEY_PREFIX = "cbk_"
_API_KEY = re.compile(r"cbk_([0-9a-f]{12})_[A-Za-z0-9_-]{40}")
#: an idempotency key: 1-255 visible ASCII characters
_IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")
_FINGERPRINT = re.compile(r"[0-9a-f]{64}")
_MAX_LABEL = 64
_MAX_URL = 2048
_URL = re.compile(r"https?://[^\s\x00-\x1f\x7f/?#]+(?:[/?#][^\s\x00-\x1f\x7f]*)?")
#: the most characters of a webhook delivery's body
MAX_WEBHOOK_BODY = 65536


def new_api_key() -> tuple[str, str]:
    """A fresh ``(key_id, secret)``: ``cbk_<key id>_<40 random URL-safe characters>``."""
    key_id = secrets.token_hex(6)
    return key_id, f"{API_KEY_PREFIX}{key_id}_{secrets.token_urlsafe(30)}"


def api_key_hash(secret: object) -> str | None:
    """The SHA-256 (hex) an API key is kept as; None when ``secret`` is not one.

    The secrets are 240 random bits: a fast hash is enough (no dictionary to try), and
    lets every API request be checked without a slow KDF.
    """
    if not isinstance(secret, str) or not _API_KEY.fullmatch(secret):
        return None
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def check_key_label(label: object) -> str:
    """An API key's label: at most 64 characters, no control characters."""
    if (
        not isinstance(label, str)
        or len(label) > _MAX_LABEL
        or any(ord(c) < 32 or ord(c) == 127 for c in label)
    ):
        raise InvalidArgument(f"a key label is at most {_MAX_LABEL} printable characters")
    return label


def check_idempotency_key(key: object) -> str:
    """An ``Idempotency-Key``: 1-255 visible ASCII characters."""
    if not isinstance(key, str) or not _IDEMPOTENCY_KEY.fullmatch(key):
        raise InvalidArgument("an idempotency key is 1-255 visible ASCII characters")
    return key


def check_fingerprint(fingerprint: object) -> str:
    """A request's fingerprint: a SHA-256 in hex."""
    if not isinstance(fingerprint, str) or not _FINGERPRINT.fullmatch(fingerprint):
        raise InvalidArgument("a request fingerprint is a SHA-256 in hex")
    return fingerprint


def check_webhook_url(url: object) -> str:
    """An http(s) URL of at most 2048 characters, without spaces or control characters."""
    if not isinstance(url, str) or len(url) > _MAX_URL or not _URL.fullmatch(url):
        raise InvalidArgument(f"a webhook URL is http:// or https://, at most {_MAX_URL} chars")
    return url


def new_webhook_secret() -> str:
    """A fresh signing key for an account's webhook."""
    return "whsec_" + secrets.token_urlsafe(32)


def check_webhook(delivery_id: object, username: object, body: object) -> None:
    """A webhook delivery's id, account and JSON body (IStore.enqueue_webhook)."""
    check_key(delivery_id, "delivery id")
    check_username(username)
    if not isinstance(body, str) or not body or len(body) > MAX_WEBHOOK_BODY:
        raise InvalidArgument(f"a webhook body is 1 to {MAX_WEBHOOK_BODY} characters")


def webhook_from_fields(fields: Mapping[str, str]) -> WebhookDelivery:
    """A WebhookDelivery from the string fields both stores keep it in."""
    return WebhookDelivery(
        id=fields["id"],
        username=fields["username"],
        body=fields["body"],
        attempts=int(fields.get("attempts", 0)),
        not_before=float(fields.get("not_before", 0.0)),
        created_at=float(fields.get("created_at", 0.0)),
        last_error=fields.get("last_error", ""),
    )


# -- SMS front ----------------------------------------------------------------------------

_CODE = re.compile(r"[0-9A-Za-z]{4,16}")


def check_code(code: object) -> str:
    """A caller-ID verification code: 4 to 16 letters or digits."""
    if not isinstance(code, str) or not _CODE.fullmatch(code):
        raise InvalidArgument("a code must be 4 to 16 letters or digits")
    return code


def code_hash(number: str, code: str) -> str:
    """What the store keeps of a caller-ID code: its SHA-256, bound to the number.

    The code lives minutes and takes a few guesses; the hash keeps it out of a dump of
    the database, and binding it to the number makes one hash useless for another.
    """
    data = f"callbackd caller-id code\0{number}\0{code.upper()}".encode()
    return hashlib.sha256(data).hexdigest()


def check_inbound(keys: object, record: object, ttl: object) -> str:
    """The arguments of ``record_inbound_sms``; the record's JSON text."""
    if not isinstance(keys, list | tuple) or not keys:
        raise InvalidArgument("an inbound SMS needs at least one dedupe key")
    for key in keys:
        check_key(key, "dedupe key")
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not ttl > 0:
        raise InvalidArgument(f"ttl must be a positive number, got {ttl!r}")
    if not isinstance(record, dict):
        raise InvalidArgument("an inbound SMS record must be a dict")
    try:
        return json.dumps(record, allow_nan=False, sort_keys=True)
    except (TypeError, ValueError) as e:
        raise InvalidArgument(f"inbound SMS record is not JSON-able: {e}") from None


def check_period(period: object, what: str = "period") -> float:
    """A positive number of seconds."""
    if isinstance(period, bool) or not isinstance(period, int | float) or not period > 0:
        raise InvalidArgument(f"{what} must be a positive number of seconds, got {period!r}")
    return float(period)


def check_attempts(attempts: object) -> int:
    """A positive number of attempts."""
    if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
        raise InvalidArgument(f"attempts must be a positive integer, got {attempts!r}")
    return attempts


# -- web portal sessions -----------------------------------------------------------------

_WEB_ROLE = re.compile(r"[a-z]{1,16}")
#: the longest a portal login may last (a day)
MAX_WEB_SESSION_TTL = 86400
#: the length of a portal login's token (URL-safe base64 of 32 random bytes)
_WEB_TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")


def new_web_session(username: object, role: object, ttl: object) -> tuple[str, str]:
    """Check a new portal login's fields; ``(token, digest)`` for it (create_web_session)."""
    check_username(username)
    if not isinstance(role, str) or not _WEB_ROLE.fullmatch(role):
        raise InvalidArgument(f"bad web session role {role!r}")
    if not isinstance(ttl, int) or isinstance(ttl, bool) or not 0 < ttl <= MAX_WEB_SESSION_TTL:
        raise InvalidArgument(f"a web session lasts 1 to {MAX_WEB_SESSION_TTL} seconds")
    token = secrets.token_urlsafe(32)
    return token, hashlib.sha256(token.encode("ascii")).hexdigest()


def web_token_digest(token: object) -> str | None:
    """The stored name of a portal login's token: its SHA-256; None for a malformed one."""
    if not isinstance(token, str) or not _WEB_TOKEN.fullmatch(token):
        return None
    return hashlib.sha256(token.encode("ascii")).hexdigest()
