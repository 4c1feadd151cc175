"""Money and durations as the IVR speaks them: the exact files played, per language."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callbackd.i18n.catalogue import load_messages
from callbackd.ivr.speech import (
    CURRENCIES,
    LANGUAGES,
    PROMPT_FILES,
    SPOKEN_LIMIT,
    Digits,
    Number,
    Play,
    duration_prompts,
    files_played,
    money_prompts,
)
from callbackd.simulator.say import NEEDED_FILES

D = 5  # [billing] decimals: the daemon's default

# (currency, amount in currency units as an exact text, language) -> the files played,
# "digits/" and "callbackd/" shortened to "d/" and "c/"
MONEY = [
    ("EUR", "10.50", "en", "d/10 c/euros c/and d/50 c/euro_cents"),
    ("EUR", "10.50", "es", "d/10 c/euros c/and d/50 c/euro_cents"),
    ("EUR", "10.50", "fr", "d/10 c/euros c/and d/50 c/euro_cents"),
    ("EUR", "10.50", "vi", "d/10 c/euro c/and d/50 c/euro_cent"),
    ("EUR", "10.50", "zh", "d/10 c/euro d/50 c/euro_cent"),
    ("EUR", "1", "en", "d/1 c/euro"),
    ("EUR", "1", "es", "d/1M c/euro"),  # "un euro"
    ("EUR", "1", "fr", "d/1 c/euro"),
    ("EUR", "1", "vi", "d/1 c/euro"),
    ("EUR", "1", "zh", "d/1 c/euro"),
    ("EUR", "0", "en", "d/0 c/euros"),
    ("EUR", "0", "fr", "d/0 c/euro"),  # "zéro euro": singular in French
    ("EUR", "0.01", "es", "d/1M c/euro_cent"),  # "un céntimo"
    ("EUR", "0.02", "zh", "c/liang c/euro_cent"),  # 两欧分
    ("EUR", "10.02604", "en", "d/10 c/euros c/and d/2 c/euro_cents"),  # truncated
    ("EUR", "0.00999", "en", "d/0 c/euros"),
    ("EUR", "-0.00999", "en", "d/0 c/euros"),  # no "minus zero"
    ("EUR", "-2.50", "fr", "d/minus d/2 c/euros c/and d/50 c/euro_cents"),
    ("EUR", "21", "es", "c/twenty_one c/euros"),  # "veintiún euros"
    ("EUR", "21", "fr", "d/20 d/et d/1 c/euros"),
    ("EUR", "31", "es", "d/30 d/and d/1M c/euros"),  # "treinta y un euros"
    (
        "EUR",
        "1234.56",
        "vi",
        "d/1 d/thousand d/2 d/hundred d/30 d/4a c/euro c/and d/50 d/6 c/euro_cent",
    ),
    ("EUR", "1234.56", "zh", "d/1 d/thousand d/2 d/hundred d/30 d/4 c/euro d/50 d/6 c/euro_cent"),
    ("USD", "1", "en", "d/1 c/dollar"),
    ("USD", "2.42", "en", "d/2 c/dollars c/and d/40 d/2 c/cents"),
    ("USD", "0.01", "en", "d/1 c/cent"),
    ("USD", "1.01", "es", "d/1M c/dollar c/and d/1M c/cent"),  # "un dólar y un centavo"
    ("USD", "2", "zh", "c/liang c/dollar"),  # 两美元
    ("GBP", "1", "es", "d/1F c/pound"),  # "una libra"
    ("GBP", "21", "fr", "d/20 d/et d/1F c/pounds"),  # "vingt et une livres"
    ("GBP", "3.01", "en", "d/3 c/pounds c/and d/1 c/penny"),
    ("CNY", "10.05", "zh", "d/10 c/yuan d/0 d/5 c/fen"),  # 十元零五分
    ("CNY", "2.52", "zh", "c/liang c/yuan d/5 c/jiao c/liang c/fen"),  # 两元五角两分
    ("CNY", "0.50", "zh", "d/5 c/jiao"),
    ("CNY", "0", "zh", "d/0 c/yuan"),
    ("CNY", "100.30", "zh", "d/1 d/hundred c/yuan d/3 c/jiao"),
    ("CNY", "2.52", "en", "d/2 c/yuans c/and d/50 d/2 c/fen"),
    ("VND", "50000", "vi", "d/50 d/thousand c/dong"),
    ("VND", "50000", "zh", "d/5 d/wan c/dong"),
    ("XAU", "12.05", "en", "d/12 c/point d/0 d/5"),  # a currency without words
]


def expand(short: str) -> list[str]:
    return [
        name.replace("d/", "digits/", 1).replace("c/", "callbackd/", 1) for name in short.split()
    ]


def minor(text: str) -> int:
    from callbackd.core.money import parse_amount

    return parse_amount(text, D)


@pytest.mark.parametrize(("currency", "amount", "language", "files"), MONEY)
def test_money_is_spoken_with_these_files(currency, amount, language, files):
    steps = money_prompts(minor(amount), D, currency, language)
    assert files_played(steps, language) == expand(files)


def test_the_steps_are_asterisk_commands():
    assert money_prompts(minor("1.05"), D, "USD", "es") == [
        Number(1, "m"),
        Play("callbackd/dollar"),
        Play("callbackd/and"),
        Number(5, "m"),
        Play("callbackd/cents"),
    ]
    assert money_prompts(minor("12.05"), D, "XAU", "en") == [
        Number(12),
        Play("callbackd/point"),
        Digits("05"),
    ]


def test_decimals_below_the_subunit():
    assert files_played(money_prompts(1050, 2, "USD", "en"), "en") == expand(
        "d/10 c/dollars c/and d/50 c/cents"
    )
    assert files_played(money_prompts(7, 0, "EUR", "en"), "en") == expand("d/7 c/euros")


DURATIONS = [
    (0, "en", "d/0 c/seconds"),
    (0, "fr", "d/0 c/second"),
    (1, "en", "d/1 c/second"),
    (1, "es", "d/1M c/second"),  # "un segundo"
    (1, "fr", "d/1F c/second"),  # "une seconde"
    (2, "zh", "c/liang c/second"),  # 两秒
    (61, "en", "d/1 c/minute c/and d/1 c/second"),
    (61, "vi", "d/1 c/minute c/and d/1 c/second"),
    (61, "zh", "d/1 c/minute d/1 c/second"),
    (21 * 60, "en", "d/20 d/1 c/minutes"),
    (21 * 60, "es", "c/twenty_one c/minutes"),  # "veintiún minutos"
    (21 * 60, "fr", "d/20 d/et d/1F c/minutes"),  # "vingt et une minutes"
    (21 * 60, "vi", "d/20 d/1a c/minute"),  # "hai mươi mốt phút"
    (31 * 60, "es", "d/30 d/and d/1M c/minutes"),
    (3600, "es", "d/1F c/hour"),  # "una hora"
    (3725, "en", "d/1 c/hour d/2 c/minutes c/and d/5 c/seconds"),
    (3725, "es", "d/1F c/hour d/2 c/minutes c/and d/5 c/seconds"),
    (3725, "fr", "d/1F c/hour d/2 c/minutes c/and d/5 c/seconds"),
    (3725, "vi", "d/1 c/hour d/2 c/minute c/and d/5 c/second"),
    (3725, "zh", "d/1 c/hour c/liang c/minute d/5 c/second"),
    (7200, "fr", "d/2 c/hours"),
    (100 * 3600 + 59, "zh", "d/1 d/hundred c/hour d/50 d/9 c/second"),
]


@pytest.mark.parametrize(("seconds", "language", "files"), DURATIONS)
def test_durations_are_spoken_with_these_files(seconds, language, files):
    assert files_played(duration_prompts(seconds, language), language) == expand(files)


def test_bad_input_is_refused():
    with pytest.raises(ValueError):
        money_prompts(100, 2, "EUR", "de")
    with pytest.raises(ValueError):
        money_prompts(100, -1, "EUR", "en")
    with pytest.raises(ValueError):
        duration_prompts(-1, "en")
    with pytest.raises(ValueError):
        money_prompts(10**9 * 100, 2, "EUR", "fr")  # more than the say engine says


@given(
    amount=st.integers(-(10**12), 10**12),
    decimals=st.integers(0, 8),
    currency=st.sampled_from([*CURRENCIES, "XAU"]),
    language=st.sampled_from(LANGUAGES),
)
def test_any_amount_plays_only_files_that_are_made(amount, decimals, currency, language):
    """Every amount up to the say engine's limit is spoken with prompt files and the
    say engine's needed files; a bigger one is refused."""
    try:
        steps = money_prompts(amount, decimals, currency, language)
    except ValueError:
        assert abs(amount) // 10**decimals >= SPOKEN_LIMIT
        return
    files = files_played(steps, language)
    assert files
    assert set(files) <= PROMPT_FILES | NEEDED_FILES[language] | {"digits/minus"}


@given(seconds=st.integers(0, 10**7), language=st.sampled_from(LANGUAGES))
def test_any_duration_plays_only_files_that_are_made(seconds, language):
    files = files_played(duration_prompts(seconds, language), language)
    assert files and set(files) <= PROMPT_FILES | NEEDED_FILES[language]


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_prompt_has_a_text_in_the_catalogue(language):
    """make-sounds speaks callbackd/X from the catalogue's ivr.X."""
    messages = load_messages(language)
    missing = [f for f in PROMPT_FILES if "ivr." + f.removeprefix("callbackd/") not in messages]
    assert missing == []


def test_what_is_spoken_is_what_make_sounds_records():
    """The IVR speaks counts below the bound the sound files are made for, no further."""
    from callbackd.simulator.say import NEEDED_BOUND

    assert SPOKEN_LIMIT <= NEEDED_BOUND + 1
    money_prompts((SPOKEN_LIMIT - 1) * 100, 2, "CNY", "zh")
    with pytest.raises(ValueError):
        money_prompts(SPOKEN_LIMIT * 100, 2, "CNY", "zh")
