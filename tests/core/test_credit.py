"""Tests for callbackd.core.credit: the time the money left allows."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callbackd.core.credit import LegCharge, accrued_cost, allowed_seconds, extra_cost
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
    """Two legs up together spend the money faster (seed's 0.02604/min)."""
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


@given(LEGS, st.integers(0, 10**6), st.integers(0, 10**5))
def test_more_money_never_means_less_time(legs, available, more):
    """Topping up never shortens the allowed time."""
    before = allowed_seconds(available, legs)
    after = allowed_seconds(available + more, legs)
    assert after is None or (before is not None and after >= before)
