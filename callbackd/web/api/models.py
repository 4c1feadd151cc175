"""The REST API's request and response bodies, as pydantic models.

The same models validate requests (strict: no coercion, unknown fields refused) and
give the OpenAPI document its schemas (:mod:`callbackd.web.api.openapi`). Addresses
are checked here only for size; what makes a number callable (its format, blocked
prefixes, rates) is the engine's to say, with its own refusals.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from callbackd.core.model import CDR

__all__ = [
    "AddLeg",
    "Balance",
    "Cdr",
    "CdrPage",
    "CreateSession",
    "Error",
    "ErrorBody",
    "Leg",
    "Session",
    "SetWebhook",
    "WebhookOut",
]

#: a leg's address: an E.164 or national number, a SIP URI, a chat address
Address = Annotated[
    str,
    Field(
        min_length=1,
        max_length=128,
        description="a phone number (E.164, or national in the default region) or SIP address",
        examples=["+4930123456"],
    ),
]
#: a configured provider's name (or a prefix of it, as the engine accepts)
ProviderName = Annotated[
    str,
    Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_-]+$", examples=["PROXICOM"]),
]
Seconds = Annotated[float, Field(description="epoch seconds")]


class _Request(BaseModel):
    """A request body: strict types, unknown fields refused."""

    model_config = ConfigDict(extra="forbid", strict=True)


class CreateSession(_Request):
    """``POST /api/v1/sessions``: call ``source``, then connect ``destination``."""

    source: Address
    destination: Address
    via: list[ProviderName] = Field(
        default_factory=list,
        max_length=2,
        description="providers to use: for the source leg, then the destination leg",
    )


class AddLeg(_Request):
    """``POST /api/v1/sessions/{id}/legs``: call one more party into a connected session."""

    address: Address
    via: ProviderName | None = None


class SetWebhook(_Request):
    """``PUT /api/v1/webhook``: where the account's session events are POSTed."""

    url: str = Field(min_length=1, max_length=2048, examples=["https://example.com/hook"])


class ErrorBody(BaseModel):
    """What went wrong: a stable ``code`` and an English ``message``."""

    code: str
    message: str
    details: list[dict[str, Any]] | None = None


class Error(BaseModel):
    """Every 4xx and 5xx answer."""

    error: ErrorBody


class Leg(BaseModel):
    """One leg of a session."""

    id: str = Field(description="source, destination or additional-N")
    role: str = Field(description="source, destination or additional")
    address: str
    provider: str
    state: str = Field(description="calling, ringing, up or ended")
    cause: str
    rate: int = Field(description="price per minute in minor units")
    answered_at: Seconds | None
    ended_at: Seconds | None
    billed_seconds: int
    cost: int = Field(description="minor units")


class Session(BaseModel):
    """A callback session and its legs (live, or from its CDRs once ended)."""

    id: str
    phase: str = Field(
        description="calling-source, calling-destination, talking, releasing or ended"
    )
    reason: str
    created_at: Seconds
    talking_at: Seconds | None
    cost: int = Field(description="what the legs cost so far, minor units")
    legs: list[Leg]


class Balance(BaseModel):
    """The account's balance."""

    balance: int = Field(description="minor units")
    credit_limit: int = Field(description="how far below zero the balance may go, minor units")
    currency: str
    decimals: int = Field(description="minor units per currency unit: 10**decimals")


class Cdr(BaseModel):
    """A call detail record: one per leg, one per session (``leg`` "")."""

    cdr_id: str
    session_id: str
    kind: str
    leg: str
    address: str
    provider: str
    started_at: Seconds
    answered_at: Seconds
    ended_at: Seconds
    billed_seconds: int
    rate: int
    cost: int
    cause: str

    @classmethod
    def of(cls, cdr: CDR) -> Cdr:
        """The API's view of a stored CDR."""
        return cls(**{name: getattr(cdr, name) for name in cls.model_fields})


class CdrPage(BaseModel):
    """One page of CDRs, oldest first; ``next_cursor`` fetches the next (null: no more)."""

    cdrs: list[Cdr]
    next_cursor: str | None


class WebhookOut(BaseModel):
    """The account's webhook: the URL and the key of its ``X-Callbackd-Signature``."""

    url: str
    secret: str
