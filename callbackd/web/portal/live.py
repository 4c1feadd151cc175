"""What the call page shows of a session: each leg's status in words and the running cost.

The engine's summary (:func:`callbackd.core.session.summary`) says where each leg is
(``calling``, ``ringing``, ``up``, ``ended`` with a cause); the page says *calling,
ringing, connected, busy, no answer, failed, ended* (``web.status.*``). The running
cost is what the ended legs cost plus, for each leg up, its price per minute over the
seconds since it answered; the page's script keeps counting between two updates.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from callbackd.i18n import Translator, progress

__all__ = ["LEG_STATUSES", "address_text", "leg_status", "leg_text", "running_cost", "session_view"]

#: the statuses a leg is shown in, in the order a leg goes through them
LEG_STATUSES: Final = ("calling", "ringing", "connected", "busy", "no_answer", "failed", "ended")


def address_text(address: str) -> str:
    """A leg's address as people write it: ``+4930123456`` for a phone, ``sip:u@h`` else."""
    return address[len("phone:") :] if address.startswith("phone:") else address


def leg_text(t: Translator, leg: str) -> str:
    """A leg's name in words: ``Source``, ``Destination``, ``Additional party 2``."""
    role, _, number = leg.partition("-")
    words = progress.role_text(t, role, title=True)
    return f"{words} {number}" if number else words


def leg_status(leg: Mapping[str, Any]) -> str:
    """The status shown for a leg of the engine's summary (one of :data:`LEG_STATUSES`)."""
    state = leg.get("state", "")
    if state == "up":
        return "connected"
    if state in ("calling", "ringing"):
        return str(state)
    if leg.get("answered_at"):
        return "ended"
    cause = leg.get("cause", "")
    if cause == "busy":
        return "busy"
    if cause == "no answer":
        return "no_answer"
    if cause in ("", "hung up", "ended by source", "not called", "kicked"):
        return "ended"
    return "failed"


def running_cost(legs: list[Mapping[str, Any]], now: float) -> int:
    """Minor units spent so far: the ended legs' cost, the live legs' price by the second."""
    total = 0
    for leg in legs:
        if leg.get("state") == "up" and leg.get("answered_at"):
            total += int(leg.get("rate", 0) * max(0.0, now - leg["answered_at"]) / 60)
        else:
            total += int(leg.get("cost", 0))
    return total


def session_view(
    summary: Mapping[str, Any], now: float, t: Translator, decimals: int, currency: str
) -> dict[str, Any]:
    """The JSON the call page shows (and its script updates from): legs, status, cost."""
    legs = []
    for leg in summary.get("legs", []):
        status = leg_status(leg)
        legs.append(
            {
                "leg": leg["leg"],
                "role": leg["role"],
                "role_text": progress.role_text(t, leg["role"], title=True),
                "address": address_text(leg["address"]),
                "provider": leg["provider"],
                "rate": leg["rate"],
                "rate_text": t.money(leg["rate"], decimals, currency),
                "status": status,
                "status_text": t.text("web.status." + status),
                "cause": leg["cause"],
                "answered_at": leg["answered_at"],
                "cost": leg["cost"],
                "additional": leg["role"] not in ("source", "destination"),
                "live": leg["state"] != "ended",
            }
        )
    cost = running_cost(summary.get("legs", []), now)
    return {
        "session_id": summary["session_id"],
        "seq": summary.get("seq", 0),
        "phase": summary.get("phase", ""),
        "ended": summary.get("phase") == "ended",
        "legs": legs,
        "now": now,
        "cost": cost,
        "cost_text": t.money(cost, decimals, currency),
        "decimals": decimals,
        "currency": currency,
    }
