"""Value types shared by the store, the engine and the adapters."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

__all__ = [
    "CDR",
    "Account",
    "AccountStatus",
    "CallerID",
    "OutboundSms",
    "PhonebookEntry",
    "Voucher",
    # the REST API
    "ApiKey",
    "Webhook",
    "WebhookDelivery",
]


class AccountStatus(str, Enum):
    """Whether an account may place calls."""

    ACTIVE = "active"
    BLOCKED = "blocked"


@dataclass(frozen=True)
class Account:
    """A prepaid customer account (secrets are kept apart, hashed)."""

    username: str
    language: str = "en"
    tariff: str = "default"
    status: AccountStatus = AccountStatus.ACTIVE
    #: how far below zero the balance may go, in minor units (0 = strictly prepaid)
    credit_limit: int = 0
    max_sessions: int = 2
    #: the source leg used by ``CALLBACK <dst>``
    default_number: str = ""
    #: spend cap per day in minor units (0 = none)
    daily_spend_cap: int = 0
    created_at: float = 0.0
    #: the SMS progress replies: "all" (every event), "outcome" (answered, failed, ended
    #: with its charge), "none", or "" for the ``[sms] progress`` default
    sms_progress: str = ""


@dataclass(frozen=True)
class CallerID:
    """A phone number an account may trigger callbacks from."""

    number: str
    verified: bool = False
    added_at: float = 0.0


@dataclass(frozen=True)
class PhonebookEntry:
    """A speed-dial: ``B.name`` or ``N<index>`` in SMS, digits in the IVR."""

    index: int
    name: str
    address: str


@dataclass(frozen=True)
class Voucher:
    """A single-use top-up code."""

    code: str
    batch: str
    value: int
    created_at: float = 0.0
    used_by: str = ""
    used_at: float = 0.0


@dataclass(frozen=True)
class CDR:
    """A call detail record: one per leg (``kind="leg"``) and one per session."""

    cdr_id: str
    username: str
    session_id: str
    kind: str  # "leg" or "session"
    leg: str  # "source", "destination", "additional-N", or "" for the session record
    address: str = ""
    provider: str = ""
    started_at: float = 0.0
    answered_at: float = 0.0
    ended_at: float = 0.0
    billed_seconds: int = 0
    #: price per minute of the leg in minor units (0 for free legs)
    rate: int = 0
    #: what was charged, in minor units
    cost: int = 0
    cause: str = ""
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class OutboundSms:
    """An SMS waiting in the durable outbound queue (see IStore.enqueue_sms)."""

    #: the caller's idempotency key: one message id is sent at most once
    id: str
    to: str
    text: str
    #: the name of the configured outbound gateway that sends it
    gateway: str
    #: failed sending attempts so far
    attempts: int = 0
    #: epoch seconds before which it is not sent (next retry, or the end of a claim)
    not_before: float = 0.0
    created_at: float = 0.0
    last_error: str = ""


# -- the REST API: keys, webhooks ------------------------------------------------------


@dataclass(frozen=True)
class ApiKey:
    """An account's REST API key as listed: its secret is shown once, then kept hashed."""

    key_id: str
    username: str
    label: str
    created_at: float = 0.0


@dataclass(frozen=True)
class Webhook:
    """Where an account's session events are POSTed, and the key that signs them."""

    url: str
    #: the HMAC-SHA256 key of the ``X-Callbackd-Signature`` header (shared with the receiver)
    secret: str


@dataclass(frozen=True)
class WebhookDelivery:
    """One event POST waiting in the durable webhook queue (see IStore.enqueue_webhook)."""

    #: unique per event: one delivery id is queued at most once
    id: str
    username: str
    #: the JSON body to POST
    body: str
    attempts: int = 0
    not_before: float = 0.0
    created_at: float = 0.0
    last_error: str = ""
