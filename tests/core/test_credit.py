"""Tests for callbackd.core.credit: the time the money left allows."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callbackd.core.credit import (
    CREDIT,
    DAILY_CAP,
    AccountBudget,
    LegCharge,
    account_allowance,
    accrued_cost,
    affordable_charge,
    allowed_seconds,
    extra_cost,
)
from callbackd.core.rating import Rate

PER_SECOND = Rate("49", 1400)  # 0.014/min
PAKISTAN = Rate("92", 1204)  # 0.01204/min
FREE = Rate("1", 0)


def test_no_legs_is_unlimited():
    """Without legs nothing limits the time."""
    assert allowed_seconds(100, []) is None


def test_free_legs_are_unlimited():
    """Legs with a zero rate cost nothing, however long."""
    assert allowed_seconds(0, [LegCharge(FREE), LegCharge(FREE, 30)]) is None


def test_negative_available_means_hang_up_now():
    """Already over the limit: zero seconds."""
    assert allowed_seconds(-1, [LegCharge(PER_SECOND)]) == 0


def test_one_per_second_leg():
    """One minute's price buys exactly one minute."""
    assert allowed_seconds(1400, [LegCharge(PER_SECOND)]) == 60


def test_two_legs_share_the_money():
    """Two legs up together spend the money faster (GTalk2VoIP's 0.02604/min)."""
    legs = [LegCharge(PER_SECOND), LegCharge(PAKISTAN)]
    assert allowed_seconds(2604, legs) == 60


def test_initial_increment_must_be_affordable():
    """A 60 s initial increment needs a full minute's money before the first second."""
    rate = Rate("1", 6000, 0, 60, 6)
    assert allowed_seconds(5999, [LegCharge(rate)]) == 0


def test_whole_increment_is_usable():
    """Once an increment is paid, the leg may use all of it."""
    rate = Rate("1", 6000, 0, 60, 6)
    assert allowed_seconds(6000, [LegCharge(rate)]) == 60


def test_elapsed_leg_uses_what_it_already_paid():
    """A leg 10 s into a paid 60 s increment may run to its end for free."""
    rate = Rate("1", 6000, 0, 60, 60)
    assert allowed_seconds(0, [LegCharge(rate, 10)]) == 50


def test_connect_fee_counts_only_for_new_legs():
    """A leg not yet up pays its connect fee; one already up does not again."""
    rate = Rate("1", 600, 500)
    assert (allowed_seconds(510, [LegCharge(rate)]), allowed_seconds(10, [LegCharge(rate, 5)])) == (
        1,
        1,
    )


def test_only_connect_fees_affordable_is_unlimited():
    """Price 0 with a paid connect fee is unlimited; unaffordable fee is 0."""
    rate = Rate("1", 0, 100)
    assert (allowed_seconds(100, [LegCharge(rate)]), allowed_seconds(99, [LegCharge(rate)])) == (
        None,
        0,
    )


def test_adding_a_leg_shortens_the_time():
    """Recomputing after a leg joins gives less time."""
    one = allowed_seconds(10_000, [LegCharge(PER_SECOND, 20)])
    two = allowed_seconds(10_000, [LegCharge(PER_SECOND, 20), LegCharge(PAKISTAN)])
    assert one is not None and two is not None and two < one


def test_accrued_cost_sums_legs():
    """Accrued cost is the sum of each leg's cost so far."""
    legs = [LegCharge(PER_SECOND, 60), LegCharge(PAKISTAN, 60), LegCharge(PER_SECOND)]
    assert accrued_cost(legs) == 1400 + 1204


def test_negative_elapsed_is_refused():
    """Elapsed time cannot be negative."""
    with pytest.raises(ValueError):
        LegCharge(PER_SECOND, -1)


RATES = st.builds(
    Rate,
    prefix=st.just("1"),
    price_per_minute=st.integers(0, 20_000),
    connect_fee=st.integers(0, 2_000),
    initial_increment=st.integers(1, 90),
    increment=st.integers(1, 90),
)
LEGS = st.lists(st.builds(LegCharge, RATES, st.integers(0, 500)), min_size=1, max_size=4)


@given(LEGS, st.integers(-100, 60_000))
def test_allowed_seconds_is_the_maximum_that_fits(legs, available):
    """The answer fits, one second more does not (checked by brute force)."""
    result = allowed_seconds(available, legs)
    if available < 0 and any(not leg.rate.is_free for leg in legs):
        assert result == 0
        return
    if result is None:
        assert all(extra_cost(legs, t) <= available for t in range(0, 5000, 7))
        return
    assert extra_cost(legs, result) <= available
    assert extra_cost(legs, result + 1) > available
    if result <= 2000:  # brute force where it is cheap; above, the boundary check suffices
        brute = 0
        while extra_cost(legs, brute + 1) <= available:
            brute += 1
        assert result == brute


@given(st.builds(LegCharge, RATES, st.integers(0, 10**6)), st.integers(-100, 10**13))
def test_one_leg_closed_form_is_the_maximum_that_fits(leg, available):
    """One billed leg (the closed form): fits, one second more does not, at any balance."""
    result = allowed_seconds(available, [leg])
    if leg.rate.price_per_minute == 0 or available < 0:
        return  # the connect-fee and hang-up-now cases above
    assert result is not None
    assert extra_cost([leg], result) <= available
    assert extra_cost([leg], result + 1) > available


def test_one_leg_closed_form_examples():
    """Increments and the connect fee bound the time exactly."""
    rate = Rate("1", price_per_minute=600, connect_fee=50, initial_increment=30, increment=6)
    # 50 fee + 300 for the first 30 s, then 60 per 6 s
    assert allowed_seconds(409, [LegCharge(rate)]) == 30
    assert allowed_seconds(410, [LegCharge(rate)]) == 36
    assert allowed_seconds(349, [LegCharge(rate)]) == 0
    # up 31 s (billed 36, paid 410): 59 more buys nothing, 60 six seconds more
    assert allowed_seconds(59, [LegCharge(rate, 31)]) == 5
    assert allowed_seconds(60, [LegCharge(rate, 31)]) == 11
    assert allowed_seconds(0, [LegCharge(rate, 31)]) == 5


@given(LEGS, st.integers(0, 10**6), st.integers(0, 10**5))
def test_more_money_never_means_less_time(legs, available, more):
    """Topping up never shortens the allowed time."""
    before = allowed_seconds(available, legs)
    after = allowed_seconds(available + more, legs)
    assert after is None or (before is not None and after >= before)


# -- account level ------------------------------------------------------------------

ONE_A_SECOND = Rate("1", 60)  # 1 minor unit per second
TWO_A_SECOND = Rate("2", 120)


@pytest.mark.parametrize(
    "budget,legs,releasing,seconds,limit",
    [
        # one session alone: the same as allowed_seconds on balance + credit limit
        (AccountBudget(100), [LegCharge(ONE_A_SECOND)], [], 100, CREDIT),
        (AccountBudget(100, credit_limit=50), [LegCharge(ONE_A_SECOND)], [], 150, CREDIT),
        # two sessions' legs share the money: the common time halves
        (AccountBudget(100), [LegCharge(ONE_A_SECOND)] * 2, [], 50, CREDIT),
        # three sessions, different prices: 1 + 1 + 2 units a second
        (
            AccountBudget(120),
            [LegCharge(ONE_A_SECOND), LegCharge(ONE_A_SECOND), LegCharge(TWO_A_SECOND)],
            [],
            30,
            CREDIT,
        ),
        # what legs up have accrued is not available any more
        (AccountBudget(100), [LegCharge(ONE_A_SECOND, 40)] * 2, [], 10, CREDIT),
        # legs being released: their accrued cost counts, they get no future time
        (AccountBudget(100), [LegCharge(ONE_A_SECOND)], [LegCharge(TWO_A_SECOND, 20)], 60, CREDIT),
        # the daily cap binds when it leaves less than the balance
        (
            AccountBudget(1000, daily_cap=300, spent_today=200),
            [LegCharge(ONE_A_SECOND)],
            [],
            100,
            DAILY_CAP,
        ),
        # ...and not when the balance is the smaller
        (
            AccountBudget(50, daily_cap=300, spent_today=200),
            [LegCharge(ONE_A_SECOND)],
            [],
            50,
            CREDIT,
        ),
        # a cap already spent: nothing more
        (
            AccountBudget(1000, daily_cap=300, spent_today=300),
            [LegCharge(ONE_A_SECOND)],
            [],
            0,
            DAILY_CAP,
        ),
        # a cap of 0 is no cap
        (
            AccountBudget(100, daily_cap=0, spent_today=10**6),
            [LegCharge(ONE_A_SECOND)],
            [],
            100,
            CREDIT,
        ),
        # free legs only: unlimited whatever the money
        (AccountBudget(-5), [LegCharge(FREE)], [], None, CREDIT),
        # below the floor already: hang up now
        (AccountBudget(-10, credit_limit=5), [LegCharge(ONE_A_SECOND)], [], 0, CREDIT),
    ],
)
def test_account_allowance_table(budget, legs, releasing, seconds, limit):
    """The account's common time and binding limit for typical budgets and leg sets."""
    allowance = account_allowance(budget, legs, releasing)
    assert (allowance.seconds, allowance.limit) == (seconds, limit)


def test_one_session_is_the_special_case():
    """For one session's legs the account figure equals allowed_seconds on the balance."""
    legs = [LegCharge(PER_SECOND, 30), LegCharge(PAKISTAN, 25)]
    budget = AccountBudget(50_000, credit_limit=7_000)
    expected = allowed_seconds(57_000 - accrued_cost(legs), legs)
    assert account_allowance(budget, legs).seconds == expected


BUDGETS = st.builds(
    AccountBudget,
    balance=st.integers(-1_000, 200_000),
    credit_limit=st.integers(0, 50_000),
    daily_cap=st.integers(0, 200_000),
    spent_today=st.integers(0, 200_000),
)
SOME_LEGS = st.lists(st.builds(LegCharge, RATES, st.integers(0, 500)), max_size=6)


@given(BUDGETS, SOME_LEGS, SOME_LEGS)
def test_account_allowance_never_overspends_and_is_maximal(budget, legs, releasing):
    """Total cost after the allowed time fits both limits; one second more does not."""
    allowance = account_allowance(budget, legs, releasing)
    credit = budget.balance + budget.credit_limit
    cap = budget.daily_cap - budget.spent_today if budget.daily_cap else None
    room = min(credit, cap) if cap is not None else credit
    accrued = accrued_cost(legs) + accrued_cost(releasing)
    assert allowance.available == room - accrued
    if allowance.seconds is None:
        # nothing billed more as time passes
        assert all(extra_cost(legs, t) <= max(room - accrued, 0) for t in range(0, 3000, 11))
        return
    total = accrued + extra_cost(legs, allowance.seconds)
    if room - accrued >= 0:
        assert total <= credit
        assert cap is None or total <= cap
        assert accrued + extra_cost(legs, allowance.seconds + 1) > room
    else:
        assert allowance.seconds == 0
    assert allowance.limit == (DAILY_CAP if cap is not None and cap < credit else CREDIT)


@given(BUDGETS, SOME_LEGS, st.builds(LegCharge, RATES))
def test_another_session_never_lengthens_the_time(budget, legs, extra):
    """A further billed leg of the account never gives the others more time."""
    before = account_allowance(budget, legs).seconds
    after = account_allowance(budget, [*legs, extra]).seconds
    if before is not None:
        assert after is not None and after <= before


@pytest.mark.parametrize(
    "billed,cost,price,available,expected",
    [
        (60, 1400, 1400, 5000, (60, 1400)),  # fits: unchanged
        (60, 1400, 1400, 1400, (60, 1400)),
        (60, 1400, 1400, 700, (30, 700)),  # per second at the leg's price
        (60, 1450, 1400, 1400, (60, 1400)),  # a connect fee it cannot pay
        (60, 1400, 1400, 0, (0, 0)),
        (60, 1400, 1400, -50, (0, 0)),
        (10, 100, 7, 3, (10, 2)),
    ],
)
def test_affordable_charge(billed, cost, price, available, expected):
    """A charge that does not fit is billed per second up to what is available."""
    assert affordable_charge(billed, cost, price, available) == expected


@given(
    st.integers(0, 10_000), st.integers(1, 100_000), st.integers(1, 50_000), st.integers(-10, 10**6)
)
def test_an_affordable_charge_never_passes_the_floor(billed, cost, price, available):
    """The charge is never more than what is available (or the original), seconds never more."""
    seconds, charged = affordable_charge(billed, cost, price, available)
    assert charged <= cost and (charged <= available or charged == 0)
    assert 0 <= seconds <= billed
