"""The say engine model: the files Asterisk 22's main/say.c plays, per language."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callbackd.simulator.say import (
    FILES,
    LANGUAGES,
    LIMITS,
    NEEDED_BOUND,
    NEEDED_FILES,
    SayError,
    digit_files,
    number_files,
    syntax,
)

# n -> the files say.c plays, per language, worked out by hand from the C source
# (names without the "digits/" prefix).
EXPECTED = {
    "en": {
        0: "0",
        1: "1",
        7: "7",
        10: "10",
        11: "11",
        15: "15",
        16: "16",
        20: "20",
        21: "20 1",
        31: "30 1",
        70: "70",
        71: "70 1",
        80: "80",
        81: "80 1",
        90: "90",
        99: "90 9",
        100: "1 hundred",
        101: "1 hundred 1",
        115: "1 hundred 15",
        200: "2 hundred",
        747: "7 hundred 40 7",  # Asterisk's own SAYFILES test
        999: "9 hundred 90 9",
        1000: "1 thousand",
        1001: "1 thousand 1",
        1042: "1 thousand 40 2",  # Asterisk's own SAYFILES test
        2000: "2 thousand",
        12345: "12 thousand 3 hundred 40 5",
        1000000: "1 million",
        2001000001: "2 billion 1 million 1",  # Asterisk's own SAYFILES test
        -15: "minus 15",
    },
    "es": {
        0: "0",
        1: "1",
        7: "7",
        10: "10",
        11: "11",
        15: "15",
        16: "16",
        20: "20",
        21: "21",
        29: "29",
        30: "30",
        31: "30 and 1",
        70: "70",
        71: "70 and 1",
        80: "80",
        81: "80 and 1",
        90: "90",
        99: "90 and 9",
        100: "100",
        101: "100-and 1",
        115: "100-and 15",
        200: "200",
        555: "500 50 and 5",
        999: "900 90 and 9",
        1000: "thousand",
        1001: "thousand 1",
        2000: "2 thousand",
        12345: "12 thousand 300 40 and 5",
        1000000: "1M million",
        2500000: "2 millions 500 thousand",
        -1: "minus 1",
    },
    "fr": {
        0: "0",
        1: "1",
        7: "7",
        10: "10",
        11: "11",
        15: "15",
        16: "16",
        20: "20",
        21: "20 et 1",
        22: "20 2",
        31: "30 et 1",
        61: "60 et 1",
        70: "60 10",
        71: "60 et 11",
        72: "60 12",
        80: "80",
        81: "80 1",
        90: "80 10",
        91: "80 11",
        99: "80 19",
        100: "hundred",
        101: "hundred 1",
        115: "hundred 15",
        200: "2 hundred",
        999: "9 hundred 80 19",
        1000: "thousand",
        1001: "thousand 1",
        2000: "2 thousand",
        12345: "12 thousand 3 hundred 40 5",
        1000000: "1 million",
        2000000: "2 million",
    },
    "vi": {
        0: "0",
        1: "1",
        7: "7",
        10: "10",
        11: "11",
        15: "15",
        16: "16",
        20: "20",
        21: "20 1a",
        24: "20 4a",
        25: "20 5a",
        31: "30 1a",
        70: "70",
        71: "70 1a",
        80: "80",
        81: "80 1a",
        90: "90",
        99: "90 9",
        100: "1 hundred",
        101: "1 hundred odd 1",
        115: "1 hundred 15",
        200: "2 hundred",
        999: "9 hundred 90 9",
        1000: "1 thousand",
        1001: "1 thousand 0-hundred-odd 1",
        1050: "1 thousand 0-hundred 50",
        2000: "2 thousand",
        12345: "12 thousand 3 hundred 40 5a",
        1000000: "1 million",
        1000005: "1 million 5",
    },
    "zh": {
        0: "0",
        1: "1",
        7: "7",
        10: "10",
        11: "10 1",
        15: "10 5",
        16: "10 6",
        20: "20",
        21: "20 1",
        31: "30 1",
        70: "70",
        71: "70 1",
        80: "80",
        81: "80 1",
        90: "90",
        99: "90 9",
        100: "1 hundred",
        101: "1 hundred 0 1",
        110: "1 hundred 10",
        115: "1 hundred 10 5",
        200: "2 hundred",
        999: "9 hundred 90 9",
        1000: "1 thousand",
        1001: "1 thousand 0 1",
        1010: "1 thousand 0 10",
        2000: "2 thousand",
        10005: "1 wan 0 5",
        12345: "1 wan 2 thousand 3 hundred 40 5",
        100000: "10 wan",
        1000000: "1 hundred wan",
        1005000: "1 hundred wan 5 thousand",
        123456789: "1 yi 2 thousand 3 hundred 40 5 wan 6 thousand 7 hundred 80 9",
    },
}

CASES = [(lang, n, files) for lang, table in EXPECTED.items() for n, files in table.items()]


@pytest.mark.parametrize(("language", "n", "files"), CASES)
def test_number_files_are_say_c_s(language, n, files):
    assert number_files(n, language) == [f"digits/{name}" for name in files.split()]


@pytest.mark.parametrize(
    ("language", "n", "gender", "files"),
    [
        ("es", 1, "f", "1F"),
        ("es", 1, "m", "1M"),
        ("es", 1, "M", "1M"),  # say.c compares the option case-insensitively
        ("es", 31, "f", "30 and 1F"),
        ("es", 21, "f", "21"),  # 21..29 are single words in say.c, whatever the gender
        ("es", 1000000, "f", "1M million"),  # "un millón" whatever the gender
        ("es", 2000, "feminine", "2 thousand"),
        ("fr", 1, "f", "1F"),
        ("fr", 21, "f", "20 et 1F"),
        ("fr", 71, "f", "60 et 11"),
        ("fr", 1, "m", "1"),  # fr knows only 'f'
        ("en", 1, "f", "1"),  # en, vi and zh take no option
        ("vi", 1, "f", "1"),
        ("zh", 1, "f", "1"),
    ],
)
def test_the_gender_option(language, n, gender, files):
    assert number_files(n, language, gender) == [f"digits/{name}" for name in files.split()]


@pytest.mark.parametrize(
    ("language", "grammar"),
    [
        ("en", "en"),
        ("en_US", "en"),
        ("es_MX", "es"),
        ("mx", "es"),
        ("FR", "fr"),
        ("vi", "vi"),
        ("zh_CN", "zh"),
        ("tw", "zh"),
        ("xx", "en"),  # say.c: "Default to english"
        ("", "en"),
    ],
)
def test_the_grammar_is_chosen_by_the_language_s_first_two_letters(language, grammar):
    assert syntax(language) == grammar


@pytest.mark.parametrize("language", ["de", "pt_BR", "en_GB", "ru"])
def test_a_grammar_not_modelled_is_refused(language):
    with pytest.raises(SayError):
        number_files(5, language)


def test_keypad_digits():
    assert digit_files("12*#-0", "es") == [
        "digits/1",
        "digits/2",
        "digits/star",
        "digits/pound",
        "digits/minus",
        "digits/0",
    ]
    assert digit_files("a1 b", "zh") == ["digits/1"]  # others skipped, as say.c does
    assert digit_files("", "vi") == []


@pytest.mark.parametrize("language", LANGUAGES)
def test_numbers_say_c_gives_up_on_raise(language):
    limit = LIMITS[language]
    number_files(limit - 1, language)
    number_files(-(limit - 1), language)
    for n in (limit, -limit, limit * 10):
        with pytest.raises(SayError):
            number_files(n, language)


def test_needed_files_are_the_reachable_known_files():
    """NEEDED_FILES is computed from the functions: every file say.c can play, less
    the words of numbers beyond the bound."""
    beyond = {"en": {"digits/billion"}, "zh": {"digits/yi"}}
    for language in LANGUAGES:
        assert NEEDED_FILES[language] == FILES[language] - beyond.get(language, set())
    assert set(NEEDED_FILES) == set(LANGUAGES)
    assert "digits/star" in NEEDED_FILES["zh"] and "digits/1F" in NEEDED_FILES["es"]


# The value of a file list, read back: the numbers add up, the place words multiply
# what comes before them (the biggest place first), the fillers are worth nothing.
PLACES = {
    "hundred": 100,
    "thousand": 1000,
    "wan": 10**4,
    "million": 10**6,
    "millions": 10**6,
    "yi": 10**8,
    "billion": 10**9,
}
WORDS = {"1F": 1, "1M": 1, "1a": 1, "4a": 4, "5a": 5, "100-and": 100}
FILLERS = {"and", "et", "odd", "0-hundred", "0-hundred-odd", "0"}


def value(names: list[str]) -> int:
    if not names:
        return 0
    if names[0] == "minus":
        return -value(names[1:])
    places = [(PLACES[name], i) for i, name in enumerate(names) if name in PLACES]
    if places:
        place, i = max(places, key=lambda p: (p[0], -p[1]))
        return (value(names[:i]) or 1) * place + value(names[i + 1 :])
    return sum(0 if name in FILLERS else WORDS.get(name) or int(name) for name in names)


@given(data=st.data())
@settings(max_examples=1000)
def test_every_number_reads_back_as_itself_from_known_files(data):
    """Any number in range: a non-empty list of say.c's files for the language, worth
    the number; up to the bound, only needed files; any gender option."""
    language = data.draw(st.sampled_from(LANGUAGES))
    limit = LIMITS[language]
    n = data.draw(st.integers(-(limit - 1), limit - 1) | st.integers(-99, 2100))
    gender = data.draw(st.sampled_from(["", "f", "m", "n", "F", "x"]))
    files = number_files(n, language, gender)
    assert files and set(files) <= FILES[language]
    assert value([f.removeprefix("digits/") for f in files]) == n
    if abs(n) <= NEEDED_BOUND:
        assert set(files) <= NEEDED_FILES[language]


@given(st.text())
def test_any_text_says_its_keypad_characters(text):
    for language in LANGUAGES:
        files = digit_files(text, language)
        assert len(files) == sum(c in "0123456789*#-" for c in text)
        assert set(files) <= NEEDED_FILES[language]
