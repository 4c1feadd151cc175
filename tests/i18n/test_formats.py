"""Translators: fallbacks, and money, numbers and durations formatted with Babel."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callbackd.core.money import format_amount
from callbackd.i18n import DEFAULT_LANGUAGE, LANGUAGES, Translator, translator


def test_languages():
    assert LANGUAGES == ("en", "es", "fr", "vi", "zh")
    assert DEFAULT_LANGUAGE == "en"


@pytest.mark.parametrize("code", ["", "xx", "klingon", "de", None])
def test_an_unknown_language_is_english(code):
    assert translator(code).language == "en"


@pytest.mark.parametrize("code", ["ES", "es_MX", "es-419", " es "])
def test_variants_of_a_language_are_the_language(code):
    assert translator(code) is translator("es")


def test_translators_are_shared():
    assert translator("fr") is translator("fr")


def test_a_missing_translation_falls_back_to_english():
    partial = Translator(
        "fr",
        {"chat.unlinked": "Délié."},
        {"chat.unlinked": "Unlinked.", "chat.no_session": "None."},
    )
    assert partial.text("chat.unlinked") == "Délié."
    assert partial.text("chat.no_session") == "None."
    assert partial.text("chat.nothing_like_it") == "chat.nothing_like_it"


def test_text_fills_named_placeholders():
    assert translator("fr").text("chat.linked", username="alice") == (
        "Liée au compte alice. Envoyez HELP pour la liste des commandes."
    )


@pytest.mark.parametrize(
    ("language", "expected"),
    [("en", "0.028"), ("es", "0,028"), ("fr", "0,028"), ("vi", "0,028"), ("zh", "0.028")],
)
def test_money_uses_the_languages_decimal_sign(language, expected):
    """[billing] decimals digits at most, two at least, exact."""
    assert translator(language).money(2800, 5) == expected


@pytest.mark.parametrize(
    ("language", "expected"),
    [
        ("en", "15.00 EUR"),
        ("es", "15,00 EUR"),
        ("fr", "15,00\u00a0EUR"),
        ("vi", "15,00 EUR"),
        ("zh", "15.00 EUR"),
    ],
)
def test_money_with_a_currency(language, expected):
    assert translator(language).money(1500000, 5, "EUR") == expected


@given(st.integers(min_value=-(10**12), max_value=10**12), st.integers(min_value=0, max_value=8))
def test_english_money_is_the_products_money_text(minor, decimals):
    """English shows any amount exactly as the rest of the product does (no grouping, no
    rounding), and the other languages differ only in the decimal sign."""
    expected = format_amount(minor, decimals)
    assert translator("en").money(minor, decimals) == expected
    assert translator("fr").money(minor, decimals) == expected.replace(".", ",")


@pytest.mark.parametrize(
    ("language", "expected"),
    [
        ("en", "1 hr 2 min 5 sec"),
        ("es", "1 h 2 min 5 s"),
        ("fr", "1\u202fh 2\u00a0min 5\u202fs"),
        ("vi", "1 tiếng 2 phút 5 giây"),
        ("zh", "1小时2分钟5秒"),
    ],
)
def test_duration_is_exact_in_the_languages_units(language, expected):
    assert translator(language).duration(3725) == expected


def test_duration_leaves_out_zero_units():
    en = translator("en")
    assert en.duration(28) == "28 sec"
    assert en.duration(120) == "2 min"
    assert en.duration(0) == "0 sec"


@pytest.mark.parametrize(
    ("language", "expected"),
    [("en", "12,345"), ("es", "12.345"), ("fr", "12\u202f345"), ("vi", "12.345"), ("zh", "12,345")],
)
def test_number(language, expected):
    assert translator(language).number(12345) == expected


def test_language_names():
    assert translator("fr").language_name("es") == "espagnol"
    assert translator("es").language_name("es") == "español"
