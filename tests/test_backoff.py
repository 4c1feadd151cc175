"""The daemon's one back-off: Twisted's backoffPolicy with a cap that holds, jitter included."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callbackd.backoff import JITTER_SHARE, capped_backoff


def test_doubles_from_the_first_delay_to_the_cap():
    """Without jitter: the first delay, doubled after each failure, then the cap less its room."""
    delay = capped_backoff(0.5, 30.0, jitter=lambda: 0.0)
    room = JITTER_SHARE * 0.5
    assert [delay(n) for n in range(1, 9)] == [0.5, 1, 2, 4, 8, 16, 30 - room, 30 - room]


def test_jitter_adds_at_most_a_quarter_of_the_first_delay():
    """The jitter spreads clients apart by up to a quarter of the first delay."""
    low = capped_backoff(2.0, 60.0, jitter=lambda: 0.0)
    high = capped_backoff(2.0, 60.0, jitter=lambda: 0.999)
    assert high(1) - low(1) == pytest.approx(0.999 * 0.5)
    assert high(3) - low(3) == pytest.approx(0.999 * 0.5)


def test_a_first_delay_above_the_cap_is_the_cap():
    """The cap wins over the first delay."""
    delay = capped_backoff(5.0, 2.0, jitter=lambda: 1.0)
    assert delay(1) == delay(5) == 2.0


@pytest.mark.parametrize(("initial", "cap"), [(0, 1), (1, 0), (-1, 5)])
def test_delays_must_be_positive(initial, cap):
    """A zero or negative delay is a configuration bug, refused at once."""
    with pytest.raises(ValueError, match="positive"):
        capped_backoff(initial, cap)


@given(
    initial=st.floats(0.01, 100),
    cap=st.floats(0.01, 1000),
    failures=st.integers(0, 10_000),
    jitter=st.floats(0, 1),
)
def test_no_delay_passes_the_cap(initial, cap, failures, jitter):
    """Whatever the settings, the failure count and the jitter drawn: 0 < delay <= cap."""
    delay = capped_backoff(initial, cap, jitter=lambda: jitter)(failures)
    assert 0 < delay <= cap * (1 + 1e-12)
