"""Credit control: how long the legs of a session may stay up on the money left.

The rule the session engine follows:

* Each billed leg is charged from its own answer to its own end with its own rate
  (:meth:`Rate.cost` on its duration), so the cost of a set of legs that all stay up
  ``t`` more seconds is the sum, over the legs, of
  ``rate.cost(elapsed + t) - rate.cost(elapsed)``; increments and connect fees are
  respected because the whole-leg cost is used, not a price per second.
* ``available`` is what may still be spent: balance, minus the floor (``-credit_limit``),
  minus what the legs already up have cost so far (:func:`accrued_cost`). Money already
  debited for legs that ended is already out of the balance.
* :func:`allowed_seconds` gives the largest ``t`` whose extra cost fits.
* The engine recomputes — with fresh ``elapsed`` values and a fresh balance — whenever
  the set of legs changes (a leg is dialled, answers, is added or dropped, ends) or the
  balance changes (top-up, another session's debit), and re-arms its timer with the new
  answer. Before dialling, legs about to be called are included with ``elapsed=0`` so
  the first limit already accounts for all legs that will be up together.
* When the timer fires (the answer reaches 0) every billed leg is hung up with
  "Reason = OutOfCredit". A negative ``available`` gives 0: hang up now.

Account level (:func:`account_allowance`): the sessions of one account share one budget.
Every billed leg of every live session of the account (up, or being dialled with
``elapsed=0``) goes into one joint :func:`allowed_seconds`; legs being released (the
daemon asked the switch to hang them up) no longer get future time but what they have
accrued still counts. What may be spent is the smaller of

* credit: ``balance + credit_limit`` (the balance net of every debit already issued), and
* the daily cap, when set: ``daily_cap - spent_today`` (what the legs that ended this UTC
  day were charged),

minus the cost accrued by the legs still up (not yet debited). The answer is one common
number of seconds for every billed leg of the account, and which limit binds (a cut by
the daily cap ends sessions with "Reason = DailyLimit" instead of "OutOfCredit").
One session alone is the special case: the same figure as :func:`allowed_seconds` gives.

The floor is a hard limit for charges too (:func:`affordable_charge`): a leg's charge is
at most what the account can pay when it ends, billed per second at the leg's price, so
that a leg the daemon did not cut in time (the switch's backstop, a debit elsewhere)
never takes the account below ``-credit_limit``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from callbackd.core.rating import Rate

__all__ = [
    "CREDIT",
    "DAILY_CAP",
    "AccountBudget",
    "Allowance",
    "LegCharge",
    "account_allowance",
    "accrued_cost",
    "affordable_charge",
    "allowed_seconds",
    "extra_cost",
]

#: :attr:`Allowance.limit` when the balance (and credit limit) binds
CREDIT: Final = "credit"
#: :attr:`Allowance.limit` when the daily spend cap binds
DAILY_CAP: Final = "daily"


@dataclass(frozen=True, slots=True)
class LegCharge:
    """One billed leg for credit control: its rate and the seconds it has been up."""

    rate: Rate
    #: seconds since the leg answered (0 for a leg not up yet or about to be dialled)
    elapsed: int = 0

    def __post_init__(self) -> None:
        if self.elapsed < 0:
            raise ValueError(f"elapsed must not be negative, got {self.elapsed}")


def accrued_cost(legs: Sequence[LegCharge]) -> int:
    """What the legs have cost so far, in minor units."""
    return sum(leg.rate.cost(leg.elapsed) for leg in legs)


def extra_cost(legs: Sequence[LegCharge], seconds: int) -> int:
    """What the legs cost on top of :func:`accrued_cost` if all stay up ``seconds`` more."""
    return sum(leg.rate.cost(leg.elapsed + seconds) - leg.rate.cost(leg.elapsed) for leg in legs)


def allowed_seconds(available: int, legs: Sequence[LegCharge]) -> int | None:
    """The largest ``t`` with ``extra_cost(legs, t) <= available``; None if unbounded.

    None means the legs cost nothing more however long they stay up (no billed leg,
    or only connect fees that are already covered). The search gallops from the linear
    estimate and then bisects: O(log e) evaluations of the legs' costs, e being how far
    increments and connect fees move the answer from ``available`` / price.
    """
    billed = [leg for leg in legs if not leg.rate.is_free]
    if not billed:
        return None
    if available < 0:
        return 0
    if all(leg.rate.price_per_minute == 0 for leg in billed):
        # only connect fees: the cost is a step at the first second, then flat
        return None if extra_cost(billed, 1) <= available else 0
    if len(billed) == 1:
        return _one_leg_seconds(available, billed[0])
    # Start from the linear estimate (increments and connect fees move the answer only a
    # little) and gallop away from it: O(log error) cost evaluations rather than O(log t),
    # which with a large balance was most of the engine's CPU per session step.
    # Invariant once found: extra_cost(low) <= available < extra_cost(high).
    guess = max(1, available * 60 // sum(leg.rate.price_per_minute for leg in billed))
    step = 1
    if extra_cost(billed, guess) <= available:
        low, high = guess, guess + step
        while extra_cost(billed, high) <= available:
            step *= 2
            low, high = high, high + step
    else:
        low, high = max(0, guess - step), guess
        while low > 0 and extra_cost(billed, low) > available:
            step *= 2
            low, high = max(0, low - step), low
    while high - low > 1:
        middle = (low + high) // 2
        if extra_cost(billed, middle) <= available:
            low = middle
        else:
            high = middle
    return low


def _one_leg_seconds(available: int, leg: LegCharge) -> int:
    """:func:`allowed_seconds` of one leg with a price per minute, in closed form.

    The leg may be up ``d = elapsed + t`` seconds in all with ``cost(d) <= cost(elapsed)
    + available``. A leg up ``d > 0`` seconds is billed ``b`` seconds (the initial
    increment, then whole increments) and costs ``fee + ceil(price * b / 60)``, which
    fits while ``price * b <= 60 * (budget - fee)``: the longest duration is the
    largest billable ``b`` at most ``60 * (budget - fee) // price`` (a leg up exactly
    ``b`` seconds is billed ``b``), or 0 when not even the initial increment fits. The
    call costs one division instead of the search's evaluations (most sessions have
    one billed leg while they are set up: the source's).
    """
    rate, elapsed = leg.rate, leg.elapsed
    budget = rate.cost(elapsed) + available
    most = (budget - rate.connect_fee) * 60 // rate.price_per_minute
    if most < rate.initial_increment:
        return 0
    longest = most - (most - rate.initial_increment) % rate.increment
    return max(0, longest - elapsed)


@dataclass(frozen=True, slots=True)
class AccountBudget:
    """What an account may spend before counting its legs up now (all in minor units)."""

    #: the balance net of every charge already issued (debited or about to be)
    balance: int
    credit_limit: int = 0
    #: the most the account may spend in one UTC day (0 = no cap)
    daily_cap: int = 0
    #: what the legs that ended today were charged
    spent_today: int = 0

    def limit(self) -> tuple[int, str]:
        """What may still be spent before the legs up now, and which limit that is."""
        credit = self.balance + self.credit_limit
        if self.daily_cap > 0 and self.daily_cap - self.spent_today < credit:
            return self.daily_cap - self.spent_today, DAILY_CAP
        return credit, CREDIT


@dataclass(frozen=True, slots=True)
class Allowance:
    """How long every billed leg of an account may stay up, and the limit that binds."""

    #: seconds from now (None: no limit, nothing billed more as time passes)
    seconds: int | None
    #: :data:`CREDIT` or :data:`DAILY_CAP`
    limit: str
    #: what was left to spend on future time (after the accrued cost; may be negative)
    available: int


def account_allowance(
    budget: AccountBudget,
    legs: Sequence[LegCharge],
    releasing: Sequence[LegCharge] = (),
) -> Allowance:
    """The common remaining time of every billed leg of an account's live sessions.

    ``legs`` are the billed legs that may go on (up, or being dialled with ``elapsed=0``)
    across all the account's sessions; ``releasing`` are legs up whose hangup was
    requested: their accrued cost counts, they get no future time. The seconds are the
    largest ``t`` with ``extra_cost(legs, t) <= available`` (see :func:`allowed_seconds`).
    """
    limit, which = budget.limit()
    available = limit - accrued_cost(legs) - accrued_cost(releasing)
    return Allowance(allowed_seconds(available, legs), which, available)


def affordable_charge(
    billed_seconds: int, cost: int, price_per_minute: int, available: int
) -> tuple[int, int]:
    """``(billed_seconds, cost)`` of a leg's charge, cut down to what ``available`` pays.

    A charge that fits is unchanged; one that does not is billed per second at the
    leg's price for the whole seconds ``available`` pays (0 when nothing is left).
    """
    if cost <= available:
        return billed_seconds, cost
    if available <= 0 or price_per_minute <= 0:
        return 0, 0
    seconds = min(billed_seconds, available * 60 // price_per_minute)
    return seconds, -(-price_per_minute * seconds // 60)
