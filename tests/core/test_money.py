"""Money text <-> minor units."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callbackd.core.money import format_amount, parse_amount


@pytest.mark.parametrize(
    ("text", "decimals", "minor"),
    [
        ("10.50", 5, 1_050_000),
        ("0.01204", 5, 1204),
        ("10", 2, 1000),
        ("-3.2", 2, -320),
        ("+7.", 1, 70),
        (" 1.10 ", 2, 110),
        ("5.000000", 2, 500),
        ("12", 0, 12),
    ],
)
def test_parse_amount_table(text, decimals, minor):
    """Decimal strings convert exactly to minor units."""
    assert parse_amount(text, decimals) == minor


@pytest.mark.parametrize(
    "text", ["", "1e3", "1,50", "abc", ".5", "1.2.3", "nan", "inf", "1_000", "١٢", "- 1"]
)
def test_parse_amount_rejects_non_amounts(text):
    """Anything but plain digits with an optional point is refused."""
    with pytest.raises(ValueError, match="not an amount"):
        parse_amount(text, 5)


def test_parse_amount_rejects_too_many_decimals():
    """More significant decimals than the currency has is an error, not a rounding."""
    with pytest.raises(ValueError, match="at most 2"):
        parse_amount("1.005", 2)


@pytest.mark.parametrize(
    ("minor", "decimals", "text"),
    [
        (1_050_000, 5, "10.50"),
        (1204, 5, "0.01204"),
        (-320, 2, "-3.20"),
        (0, 5, "0.00"),
        (12, 0, "12"),
        (5, 1, "0.5"),
        (123_456_789, 5, "1234.56789"),
    ],
)
def test_format_amount_table(minor, decimals, text):
    """Minor units are shown with at least two decimals and no trailing noise."""
    assert format_amount(minor, decimals) == text


@given(st.integers(min_value=-(10**20), max_value=10**20), st.integers(min_value=0, max_value=8))
def test_format_then_parse_round_trips(minor, decimals):
    """Parsing a formatted amount gives the same minor units back."""
    assert parse_amount(format_amount(minor, decimals), decimals) == minor


@given(st.text(max_size=20), st.integers(min_value=0, max_value=8))
def test_parse_amount_raises_only_value_error(text, decimals):
    """Arbitrary text either parses to an int or raises ValueError."""
    try:
        result = parse_amount(text, decimals)
    except ValueError:
        return
    assert isinstance(result, int)


@given(
    st.integers(min_value=0, max_value=10**12),
    st.integers(min_value=0, max_value=8),
    st.integers(min_value=0, max_value=3),
)
def test_trailing_zeros_do_not_matter(minor, decimals, zeros):
    """Extra trailing zeros in the fraction parse to the same value."""
    text = format_amount(minor, decimals)
    padded = text + "0" * zeros if "." in text else text
    assert parse_amount(padded, decimals) == minor
