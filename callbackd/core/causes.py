"""Q.850 hangup causes as Asterisk reports them: the one table of them callbackd keeps.

Each :class:`Cause` has its number, Asterisk's name for it (``AST_CAUSE_<name>``), the
text a ``Hangup`` event carries in ``Cause-txt`` (Asterisk's ``ast_cause2str``: a cause
missing from Asterisk's own table reads ``Unknown``), the *outcome* it means for a leg
that never answered, and the *side* it puts the fault on (``provider``: try the next
route; ``user``: the called party, another provider will not help).

Outcomes are the words of :class:`callbackd.core.events.LegFailed`: ``busy``,
``noanswer``, ``rejected``, ``congestion``, ``chanunavail``, ``failed``.

What the real Asterisk 22 sends (``tests/fixtures/asterisk22/``, docs/asterisk.rst):
a Local channel's ``;1`` half, which is the leg the daemon originates, hangs up with
cause 0 when the far end is busy or congested (its ``;2`` half has 17 or 34), so the
outcome then comes from ``OriginateResponse``'s ``Reason`` or ``DialEnd``'s
``DialStatus``; a leg that rings out hangs up with 19 on both halves; cause 16 (normal
clearing) ends answered calls and never an unanswered one, so it says nothing about
why a leg did not answer, and neither does 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

__all__ = [
    "BUSY",
    "CAUSES",
    "CHANUNAVAIL",
    "CONGESTION",
    "DIAL_STATUS_OUTCOMES",
    "FAILED",
    "NOANSWER",
    "NORMAL_CLEARING",
    "NORMAL_CLEARING_TEXT",
    "OUTCOMES",
    "REJECTED",
    "UNINFORMATIVE",
    "UNKNOWN",
    "Cause",
    "FailureSide",
    "cause_for_outcome",
    "cause_text",
    "outcome_of_cause",
    "side_of_cause",
]

FailureSide = Literal["provider", "user", "none"]

# the outcomes of a leg that never answered (LegFailed.outcome)
BUSY: Final = "busy"
NOANSWER: Final = "noanswer"
REJECTED: Final = "rejected"
CONGESTION: Final = "congestion"
CHANUNAVAIL: Final = "chanunavail"
FAILED: Final = "failed"
OUTCOMES: Final = (BUSY, NOANSWER, REJECTED, CONGESTION, CHANUNAVAIL, FAILED)


@dataclass(frozen=True, slots=True)
class Cause:
    """One Q.850 cause as Asterisk names and reports it, and what it means to callbackd."""

    number: int
    #: Asterisk's name (``AST_CAUSE_`` + this)
    name: str
    #: the ``Cause-txt`` of a Hangup event with this cause
    text: str
    #: the outcome of a leg that hung up with it before answering; None: it does not say
    outcome: str | None = None
    #: whose fault a failure with it is; None: it does not say on its own
    side: FailureSide | None = None


UNKNOWN: Final = 0
NORMAL_CLEARING: Final = 16
NORMAL_CLEARING_TEXT: Final = "Normal Clearing"

#: every cause callbackd knows, by number (texts: Asterisk 22 ``main/channel.c``)
CAUSES: Final[Mapping[int, Cause]] = {
    cause.number: cause
    for cause in (
        Cause(UNKNOWN, "NOTDEFINED", "Unknown"),
        Cause(1, "UNALLOCATED", "Unallocated (unassigned) number", side="user"),
        Cause(3, "NO_ROUTE_DESTINATION", "No route to destination", side="provider"),
        Cause(NORMAL_CLEARING, "NORMAL_CLEARING", NORMAL_CLEARING_TEXT),
        Cause(17, "USER_BUSY", "User busy", BUSY, "user"),
        Cause(18, "NO_USER_RESPONSE", "No user responding", NOANSWER, "user"),
        Cause(19, "NO_ANSWER", "User alerting, no answer", NOANSWER, "user"),
        Cause(20, "SUBSCRIBER_ABSENT", "Subscriber absent", side="user"),
        Cause(21, "CALL_REJECTED", "Call Rejected", REJECTED, "user"),
        Cause(22, "NUMBER_CHANGED", "Number changed", side="user"),
        Cause(26, "ANSWERED_ELSEWHERE", "Answered elsewhere"),
        Cause(27, "DESTINATION_OUT_OF_ORDER", "Destination out of order", CONGESTION, "provider"),
        Cause(28, "INVALID_NUMBER_FORMAT", "Invalid number format", side="user"),
        Cause(31, "NORMAL_UNSPECIFIED", "Normal, unspecified"),
        Cause(
            34, "NORMAL_CIRCUIT_CONGESTION", "Circuit/channel congestion", CONGESTION, "provider"
        ),
        Cause(38, "NETWORK_OUT_OF_ORDER", "Network out of order", CONGESTION, "provider"),
        Cause(41, "NORMAL_TEMPORARY_FAILURE", "Temporary failure", CONGESTION, "provider"),
        Cause(42, "SWITCH_CONGESTION", "Switching equipment congestion", CONGESTION, "provider"),
        Cause(44, "REQUESTED_CHAN_UNAVAIL", "Requested channel not available", side="provider"),
        # Asterisk's text table has no entry for 47: ast_cause2str gives "Unknown"
        Cause(47, "RESOURCE_UNAVAIL", "Unknown", side="provider"),
        Cause(58, "BEARERCAPABILITY_NOTAVAIL", "Bearer capability not available", side="provider"),
    )
}

#: causes that say nothing about a failure: unset, or the normal end of any call
UNINFORMATIVE: Final = frozenset({UNKNOWN, NORMAL_CLEARING})

#: the cause a failure with this outcome reports when the channel gave none
_OUTCOME_CAUSES: Final[Mapping[str, int]] = {BUSY: 17, NOANSWER: 19, REJECTED: 21, CONGESTION: 34}

#: ``DialEnd`` DialStatus -> outcome (docs/asterisk.rst)
DIAL_STATUS_OUTCOMES: Final[Mapping[str, str]] = {
    "BUSY": BUSY,
    "NOANSWER": NOANSWER,
    "CONGESTION": CONGESTION,
    "CHANUNAVAIL": CHANUNAVAIL,
}


def cause_text(number: int) -> str:
    """The ``Cause-txt`` Asterisk gives cause ``number`` (``Unknown`` for one it lacks)."""
    cause = CAUSES.get(number)
    return cause.text if cause is not None else "Unknown"


def outcome_of_cause(number: int) -> str | None:
    """The outcome of a leg that hung up with ``number`` before answering, if it says."""
    cause = CAUSES.get(number)
    return cause.outcome if cause is not None else None


def side_of_cause(number: int) -> FailureSide | None:
    """Whose fault a failure with cause ``number`` is, if the cause says."""
    cause = CAUSES.get(number)
    return cause.side if cause is not None else None


def cause_for_outcome(outcome: str) -> int:
    """The cause a failure with ``outcome`` reports when the channel gave none (0: none)."""
    return _OUTCOME_CAUSES.get(outcome, UNKNOWN)
