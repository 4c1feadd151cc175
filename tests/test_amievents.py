"""callbackd.amievents.parse_event_filter: the comma list of [simulator] event_filter / the CLI."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callbackd.amievents import MANAGER_EVENTS, parse_event_filter

NAME = st.from_regex(r"\A[A-Za-z0-9_-]{1,20}\Z")
SEPARATOR = st.sampled_from([",", ", ", " ", " ,\n", "\t,,"])


def test_comma_list_gives_the_names():
    """'Hangup, Newstate' is the set of those two names."""
    assert parse_event_filter("Hangup, Newstate") == frozenset({"Hangup", "Newstate"})


def test_empty_text_is_no_filter():
    """Empty or blank text (and no texts at all) means no filter: None."""
    assert parse_event_filter("") is None
    assert parse_event_filter(" , ") is None
    assert parse_event_filter([]) is None


def test_several_texts_add_up():
    """Repeated options: the names of every text together."""
    assert parse_event_filter(["Hangup", "Newstate,Hangup"]) == {"Hangup", "Newstate"}


def test_names_keep_their_case():
    """Names are compared exactly, as Asterisk's name() filter: case is kept."""
    assert parse_event_filter("hangup") == frozenset({"hangup"})


def test_bad_name_is_a_value_error_naming_it():
    """A name with a character no event name has raises ValueError naming it."""
    with pytest.raises(ValueError, match="Event:Hangup"):
        parse_event_filter("Newstate,Event:Hangup")


def test_manager_events_round_trip():
    """The joined MANAGER_EVENTS parses back to the same set."""
    assert parse_event_filter(",".join(MANAGER_EVENTS)) == frozenset(MANAGER_EVENTS)


@given(st.lists(st.tuples(NAME, SEPARATOR), max_size=12))
def test_any_separated_names_round_trip(parts):
    """Names joined by any mix of commas and whitespace parse back to their set."""
    text = "".join(name + sep for name, sep in parts)
    expected = frozenset(name for name, _ in parts) or None
    assert parse_event_filter(text) == expected


@given(st.text(max_size=80))
def test_arbitrary_text_is_names_or_value_error(text):
    """Any text gives None, a set of clean names, or a ValueError: nothing else."""
    try:
        result = parse_event_filter(text)
    except ValueError:
        return
    if result is not None:
        assert result
        assert all(re.fullmatch(r"[A-Za-z0-9_-]+", name) for name in result)
