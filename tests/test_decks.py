"""Tests for callbackd.decks: reading rate decks from files, and every bad row named."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

from callbackd.config import ConfigError, parse_config
from callbackd.core.rating import DeckError, Rate
from callbackd.decks import load_deck, load_decks

ROOT = Path(__file__).resolve().parent.parent


def config(tmp_path: Path, text: str):
    return parse_config(text, tmp_path / "callbackd.ini", {})


def test_reads_from_path(tmp_path):
    """A path is opened and the deck is named after the file."""
    path = tmp_path / "proxicom.csv"
    path.write_text("49,0.01\n")
    deck = load_deck(path, decimals=5)
    assert (deck.name, len(deck)) == ("proxicom", 1)


def test_demo_decks_load():
    """The shipped demo decks parse and cover the simulator's 1555 numbers."""
    for name in ("sell", "proxicom", "pakline", "mks"):
        deck = load_deck(ROOT / "etc" / "rates" / f"{name}.csv", decimals=5)
        assert len(deck) > 0
    sell = load_deck(ROOT / "etc" / "rates" / "sell.csv", decimals=5)
    assert sell.lookup("15551230000").price_per_minute == 1400
    assert sell.lookup("923001234567").price_per_minute == 1204


@pytest.mark.parametrize("enabled", [True, False])
def test_loading_leaves_the_collector_as_it_was(tmp_path, enabled):
    """The collector is paused while a deck loads, and left as it was, errors or not."""
    good, bad = tmp_path / "good.csv", tmp_path / "bad.csv"
    good.write_text("49,0.01\n")
    bad.write_text("49,x\n")
    was = gc.isenabled()
    try:
        (gc.enable if enabled else gc.disable)()
        load_deck(good, decimals=5)
        assert gc.isenabled() is enabled
        with pytest.raises(DeckError):
            load_deck(bad, decimals=5)
        assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()


def test_errors_name_the_file(tmp_path):
    """A deck error says which file it is about."""
    path = tmp_path / "sell.csv"
    path.write_text("49,0.01\n1x,1\n")
    with pytest.raises(DeckError) as info:
        load_deck(path, decimals=5)
    assert info.value.source == str(path)
    assert info.value.errors == ["line 2: bad prefix '1x': 1-15 digits, not starting with 0"]


def test_load_decks_gives_every_deck(tmp_path):
    """The sell tariff and each provider's rates, by provider name."""
    (tmp_path / "sell.csv").write_text("49,0.02\n")
    (tmp_path / "p.csv").write_text("49,0.01\n")
    decks = load_decks(
        config(
            tmp_path,
            "[billing]\ntariff = sell.csv\n[provider:P]\ndial = PJSIP/{number}@p\nrates = p.csv\n",
        )
    )
    assert decks.sell.name == "sell" and decks.sell.lookup("4930") == Rate("49", 2000)
    assert list(decks.providers) == ["P"]
    assert decks.providers["P"].lookup("4930") == Rate("49", 1000)


def test_no_tariff_is_an_empty_sell_deck(tmp_path):
    """Without [billing] tariff nothing is sold at a price: the sell deck is empty."""
    decks = load_decks(config(tmp_path, ""))
    assert len(decks.sell) == 0 and decks.providers == {}


def test_every_bad_row_of_every_deck_is_named(tmp_path):
    """File and line of each bad row, of every deck, not only the first one found."""
    (tmp_path / "sell.csv").write_text("49,0.02\n1x,1\n# fine\n44,abc\n")
    (tmp_path / "p.csv").write_text("49,0.01\n49,0.02\n")
    (tmp_path / "q.csv").write_text("33,0.01\n")
    text = (
        "[billing]\ntariff = sell.csv\n"
        "[provider:P]\ndial = PJSIP/{number}@p\nrates = p.csv\n"
        "[provider:Q]\ndial = PJSIP/{number}@q\nrates = q.csv\n"
    )
    with pytest.raises(ConfigError) as info:
        load_decks(config(tmp_path, text))
    sell, p = tmp_path / "sell.csv", tmp_path / "p.csv"
    assert info.value.problems == [
        f"[billing] tariff {sell}: line 2: bad prefix '1x': 1-15 digits, not starting with 0",
        f"[billing] tariff {sell}: line 4: price_per_minute: 'abc' is not an amount"
        " (digits, optionally a point and decimals)",
        f"[provider:P] rates {p}: line 2: duplicate prefix 49 (first on line 1)",
    ]


def test_a_deck_that_is_not_text_is_named(tmp_path):
    """A binary file is a problem with its name, not a UnicodeDecodeError traceback."""
    (tmp_path / "sell.csv").write_bytes(b"49,0.01\n\xff\xfe\n")
    with pytest.raises(ConfigError) as info:
        load_decks(config(tmp_path, "[billing]\ntariff = sell.csv\n"))
    [problem] = info.value.problems
    assert problem.startswith(f"[billing] tariff: cannot read {tmp_path / 'sell.csv'}: ")
