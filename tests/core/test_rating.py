"""Tests for callbackd.core.rating: deck parsing, longest-prefix match, leg cost."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callbackd.core.rating import Deck, DeckError, Rate


def test_prices_convert_exactly_to_minor_units():
    """0.01204 with 5 decimals is exactly 1204 minor units."""
    deck = Deck.from_csv(["92,0.01204", "49,0.014,0.001"], decimals=5)
    assert (deck.lookup("923001234567"), deck.lookup("4930123456")) == (
        Rate("92", 1204),
        Rate("49", 1400, 100),
    )


def test_increments_are_read():
    """The fourth and fifth fields are the initial increment and the increment."""
    deck = Deck.from_csv(["44,0.02,0,60,6"], decimals=5)
    assert deck.lookup("442071234567") == Rate("44", 2000, 0, 60, 6)


def test_comments_blank_lines_and_header_are_skipped():
    """A header line, comments and blank lines are not rates."""
    deck = Deck.from_csv(
        ["# sell tariff", "prefix,price_per_minute", "", "1,0.01  ", "  # end"], decimals=5
    )
    assert list(deck) == [Rate("1", 1000)]


def test_plus_in_prefix_is_allowed():
    """A prefix written with + is the same prefix."""
    assert Deck.from_csv(["+49,0.014"], decimals=5).lookup("49301") == Rate("49", 1400)


def test_a_path_is_not_lines():
    """The core parses lines; a path (a str) is refused, not read as characters."""
    with pytest.raises(TypeError, match="callbackd.decks"):
        Deck.from_csv("etc/rates/sell.csv", decimals=5)


def test_errors_name_the_source():
    """Each error names where the lines came from and the line number."""
    with pytest.raises(DeckError) as info:
        Deck.from_csv(["49,0.01", "x,1"], decimals=5, source="rates/a.csv")
    assert info.value.source == "rates/a.csv"
    assert info.value.errors[0].startswith("line 2: ")


BAD_LINES = [
    ("0049,0.01", "bad prefix"),
    ("49a,0.01", "bad prefix"),
    ("1234567890123456,0.01", "bad prefix"),
    ("49,0.000001", "decimals"),
    ("49,-0.01", "plain amount"),
    ("49,abc", "not an amount"),
    ("49,1e-3", "not an amount"),
    ("49", "fields"),
    ("49,0.01,0,60", "fields"),
    ("49,0.01,0,0,1", "increments"),
    ("49,0.01,0,1,x", "increments"),
    ("49,0.01,nope", "connect_fee"),
]


@pytest.mark.parametrize(("line", "why"), BAD_LINES)
def test_bad_lines_are_reported_with_line_number(line, why):
    """Each kind of bad line is reported with its line number and reason."""
    with pytest.raises(DeckError) as info:
        Deck.from_csv(["1,0.01", line], decimals=5)
    assert len(info.value.errors) == 1
    assert info.value.errors[0].startswith("line 2: ")
    assert why in info.value.errors[0]


def test_duplicates_are_reported_with_first_line():
    """A duplicate prefix names the line it first appeared on."""
    with pytest.raises(DeckError) as info:
        Deck.from_csv(["49,0.01", "1,0.02", "+49,0.03"], decimals=5)
    assert info.value.errors == ["line 3: duplicate prefix 49 (first on line 1)"]


def test_every_error_is_collected():
    """All bad lines are reported at once, not just the first."""
    with pytest.raises(DeckError) as info:
        Deck.from_csv(["1x,1", "49,0.01", "2,", "3,1,1,1"], decimals=5)
    assert [e.split(":")[0] for e in info.value.errors] == ["line 1", "line 3", "line 4"]


def test_header_only_allowed_first():
    """A non-numeric line after the first rate is an error, not a header."""
    with pytest.raises(DeckError):
        Deck.from_csv(["49,0.01", "prefix,price"], decimals=5)


def test_zero_decimals_rejects_fractions():
    """With decimals=0 a fractional price is refused."""
    with pytest.raises(DeckError):
        Deck.from_csv(["49,0.5"], decimals=0)


def test_longest_prefix_wins():
    """The longest matching prefix is chosen."""
    deck = Deck.from_csv(["4,0.1", "49,0.2", "4915,0.3"], decimals=5)
    found = [deck.lookup(n).prefix for n in ("4915112345", "4930123", "4412345", "+4915")]
    assert found == ["4915", "49", "4", "4915"]


def test_no_match_is_none():
    """A number no prefix covers has no rate."""
    assert Deck.from_csv(["49,0.1"], decimals=5).lookup("33123456") is None


def reference_lookup(rates: dict[str, Rate], number: str) -> Rate | None:
    """Brute force: scan every prefix."""
    matches = [r for p, r in rates.items() if number.startswith(p)]
    return max(matches, key=lambda r: len(r.prefix), default=None)


PREFIXES = st.text(alphabet="123", min_size=1, max_size=6)


@given(
    st.dictionaries(PREFIXES, st.integers(0, 10**6), max_size=40),
    st.lists(st.text(alphabet="0123", min_size=0, max_size=9), max_size=30),
)
def test_lookup_agrees_with_brute_force(table, numbers):
    """Longest-prefix match agrees with scanning every prefix."""
    rates = {p: Rate(p, price) for p, price in table.items()}
    deck = Deck(rates.values())
    for number in numbers:
        assert deck.lookup(number) == reference_lookup(rates, number)


RATES = st.builds(
    Rate,
    prefix=st.just("1"),
    price_per_minute=st.integers(0, 10**7),
    connect_fee=st.integers(0, 10**5),
    initial_increment=st.integers(1, 120),
    increment=st.integers(1, 120),
)


@given(RATES, st.integers(0, 10**5), st.integers(0, 10**4))
def test_cost_is_monotone_in_duration(rate, duration, more):
    """A longer call never costs less."""
    assert rate.cost(duration + more) >= rate.cost(duration)


@given(RATES, st.integers(1, 10**5))
def test_billable_seconds_follow_increments(rate, duration):
    """Billable time covers the duration with the initial increment then whole increments."""
    billable = rate.billable_seconds(duration)
    assert billable >= max(duration, rate.initial_increment)
    assert billable == rate.initial_increment or (
        (billable - rate.initial_increment) % rate.increment == 0
        and billable - rate.increment < duration
    )


@given(RATES, st.integers(1, 10**5))
def test_cost_is_exact_ceiling(rate, duration):
    """Cost is the connect fee plus the exact per-minute charge rounded up."""
    charge = rate.price_per_minute * rate.billable_seconds(duration)
    assert rate.cost(duration) - rate.connect_fee == (charge + 59) // 60


@pytest.mark.parametrize(
    ("rate", "duration", "billable", "cost"),
    [
        (Rate("1", 1400), 0, 0, 0),
        (Rate("1", 1400, 500), 0, 0, 0),
        (Rate("1", 1400), 28, 28, 654),
        (Rate("1", 1400), 60, 60, 1400),
        (Rate("1", 1400, 500), 1, 1, 524),
        (Rate("1", 6000, 0, 60, 6), 1, 60, 6000),
        (Rate("1", 6000, 0, 60, 6), 61, 66, 6600),
        (Rate("1", 6000, 0, 30, 30), 31, 60, 6000),
    ],
)
def test_cost_table(rate, duration, billable, cost):
    """Billable seconds and cost for known cases (unanswered legs cost nothing)."""
    assert (rate.billable_seconds(duration), rate.cost(duration)) == (billable, cost)


def test_rate_refuses_negative_price():
    """A Rate cannot have a negative price."""
    with pytest.raises(ValueError):
        Rate("1", -1)


def test_deck_refuses_duplicate_rates():
    """Building a Deck from rates with the same prefix fails."""
    with pytest.raises(ValueError):
        Deck([Rate("1", 1), Rate("1", 2)])


def test_large_deck_lookup_agrees_with_brute_force():
    """On a deck large enough for a 4-digit head table, lookups agree with a full scan."""
    rng = random.Random(1555)
    prefixes = {str(rng.randint(1, 9)) + str(rng.randint(0, 10**6)) for _ in range(3000)}
    prefixes = {p[: rng.randint(1, len(p))] for p in prefixes}
    rates = {p: Rate(p, rng.randint(0, 10**5)) for p in prefixes}
    deck = Deck(rates.values())
    numbers = [rng.choice(list(prefixes)) + str(rng.randint(0, 10**8)) for _ in range(500)]
    numbers += [str(rng.randint(0, 10**12)) for _ in range(500)]
    numbers += ["1", "12", "123", "1234", "12345", ""]
    assert [deck.lookup(n) for n in numbers] == [reference_lookup(rates, n) for n in numbers]


ODD_NUMBERS = [
    ("+4915", "4915"),
    ("++4915", None),
    (" 4915", None),
    ("+ 4915", None),
    ("49_15", "49"),
    ("4\u096915", "4"),
    ("\u0664\u0669\u0661\u0665", None),
]


@pytest.mark.parametrize(("number", "prefix"), ODD_NUMBERS)
def test_heads_int_would_read_are_not_digits(number, prefix):
    """One + is skipped; spaces, _ and non-ASCII digits (which int() reads) match as text."""
    others = [Rate(str(n), 1) for n in range(1000, 3000)]  # a 4-digit head table
    deck = Deck([Rate("4", 1), Rate("49", 1), Rate("4915", 1), *others])
    found = deck.lookup(number)
    assert (found.prefix if found else None) == prefix
