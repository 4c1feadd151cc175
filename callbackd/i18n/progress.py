"""Progress messages: the engine's session events and its ``LIST`` in a user's language.

The engine publishes :class:`~callbackd.core.session.SessionEvent` values, not
sentences; every front (chat, SMS, the operator's progress log) turns them into words
here. In English the words are GTalk2VoIP's, the 2007 IM callback service's, to the
byte: ``Calling source: +15551230000, cost = 0.014 via MKS``, ``Remote answered. Now
talking. Cost = 0.02604``, ``Charged time: 28 secs. Reason = EndedByHangup``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from callbackd.core.session import ADDITIONAL, DESTINATION, SOURCE, Reason, SessionEvent
from callbackd.i18n.catalogue import Translator

__all__ = ["cause_text", "list_text", "reason_text", "render", "role_text"]

_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


def role_text(translator: Translator, role: str, *, title: bool = False) -> str:
    """A leg's role (``source``, ``destination``, ``additional``) in words."""
    msgid = f"role.{role}.title" if title else f"role.{role}"
    if translator.has(msgid):
        return translator.text(msgid)
    return role.capitalize() if title else role


def cause_text(translator: Translator, cause: str) -> str:
    """Why a leg ended or failed (``busy``, ``no answer``...) in words."""
    msgid = "cause." + cause.replace(" ", "_")
    return translator.text(msgid) if translator.has(msgid) else cause


def reason_text(translator: Translator, reason: str) -> str:
    """Why a session ended: GTalk2VoIP's code (``EndedByHangup``) in English, words in
    the others."""
    msgid = "reason." + _CAMEL.sub("_", reason).lower()
    return translator.text(msgid) if translator.has(msgid) else reason


def render(event: SessionEvent, translator: Translator, decimals: int, currency: str = "") -> str:
    """The words for ``event`` ("" for events that need no text of their own)."""
    handler = _HANDLERS.get(event.kind)
    return handler(event, translator, decimals, currency) if handler else ""


def _leg_calling(event: SessionEvent, t: Translator, decimals: int, currency: str) -> str:
    params: dict[str, Any] = {"role": role_text(t, event.role), "address": event.address}
    msgid = "progress.leg_calling"
    if event.rate:
        msgid += "_cost"
        params["cost"] = t.money(event.rate, decimals)
    if event.provider:
        msgid += "_via"
        params["provider"] = event.provider
    return t.text(msgid, **params)


def _leg_ringing(event: SessionEvent, t: Translator, decimals: int, currency: str) -> str:
    return t.text("progress.leg_ringing", role=role_text(t, event.role, title=True))


def _leg_answered(event: SessionEvent, t: Translator, decimals: int, currency: str) -> str:
    # the destination's answer is told by ``talking``, an additional leg's by
    # ``party_answered``
    return t.text("progress.source_answered") if event.role == SOURCE else ""


def _leg_failed(event: SessionEvent, t: Translator, decimals: int, currency: str) -> str:
    role, cause = role_text(t, event.role, title=True), cause_text(t, event.cause)
    if event.next_provider:
        return t.text(
            "progress.leg_failed_retry", role=role, cause=cause, provider=event.next_provider
        )
    if event.role in (SOURCE, DESTINATION):
        return t.text("progress.leg_failed_abort", role=role, cause=cause)
    return t.text("progress.party_failed", role=role, address=event.address, cause=cause)


def _talking(event: SessionEvent, t: Translator, decimals: int, currency: str) -> str:
    return t.text("progress.talking", cost=t.money(event.total_rate, decimals))


def _party_answered(event: SessionEvent, t: Translator, decimals: int, currency: str) -> str:
    return t.text("progress.party_answered", cost=t.money(event.rate, decimals))


def _destination_dropped(event: SessionEvent, t: Translator, decimals: int, currency: str) -> str:
    if event.role == DESTINATION:
        return t.text("progress.destination_dropped")
    return t.text("progress.additional_dropped")


def _leg_ended(event: SessionEvent, t: Translator, decimals: int, currency: str) -> str:
    if event.role != ADDITIONAL:
        # the session's end tells of the source's and destination's
        return ""
    return t.text(
        "progress.party_left",
        role=role_text(t, event.role, title=True),
        address=event.address,
        cause=cause_text(t, event.cause),
    )


def _session_ended(event: SessionEvent, t: Translator, decimals: int, currency: str) -> str:
    head = t.text("progress.ended_hangup" if event.reason == Reason.HANGUP else "progress.ended")
    charged = t.text(
        "progress.charged", seconds=event.billed_seconds, reason=reason_text(t, event.reason)
    )
    return f"{head}\n{charged}"


def _credit_updated(event: SessionEvent, t: Translator, decimals: int, currency: str) -> str:
    return t.text("progress.balance", balance=t.money(event.balance, decimals, currency))


_HANDLERS = {
    "leg_calling": _leg_calling,
    "leg_ringing": _leg_ringing,
    "leg_answered": _leg_answered,
    "leg_failed": _leg_failed,
    "talking": _talking,
    "party_answered": _party_answered,
    "destination_dropped": _destination_dropped,
    "leg_ended": _leg_ended,
    "session_ended": _session_ended,
    "credit_updated": _credit_updated,
}


def list_text(legs: Iterable[Mapping[str, Any]], translator: Translator) -> str:
    """The ``LIST`` reply: the legs that are up, numbered (``DEL <n>``), with their providers.

    ``legs``: the ``legs`` of a session's status (``SessionManager.status()``, from
    :func:`callbackd.core.session.summary`): each with ``role``, ``address``,
    ``provider`` and ``state``.
    """
    t = translator
    parts: list[str] = []
    for leg in legs:
        if leg["state"] != "up":
            continue
        params = {
            "index": str(len(parts) + 1),
            "role": role_text(t, leg["role"], title=True),
            "address": leg["address"],
        }
        if leg["provider"]:
            parts.append(t.text("list.leg_via", provider=leg["provider"], **params))
        else:
            parts.append(t.text("list.leg", **params))
    if not parts:
        return t.text("list.none")
    return t.text("list.legs", legs=t.text("list.separator").join(parts))
