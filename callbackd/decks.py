"""Rate decks from their files: the daemon's sell tariff and each provider's buy rates.

The core parses a deck's lines (:meth:`callbackd.core.rating.Deck.from_csv`); this
module reads the files. :func:`load_decks` is what ``twistd callbackd --check`` and the
check before the daemon forks run, so a deck with a bad row stops the daemon with the
file and line of every bad row, never with a traceback at start.
"""

from __future__ import annotations

import gc
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from callbackd.config import Config, ConfigError
from callbackd.core.rating import Deck, DeckError

__all__ = ["Decks", "load_deck", "load_decks"]


def load_deck(path: Path, decimals: int, name: str = "") -> Deck:
    """Read the deck at ``path`` (named ``name`` or after the file); raise DeckError or OSError."""
    # A large deck makes hundreds of thousands of objects that all live on; the
    # cyclic collector would walk them again and again while they are made (a
    # fifth of the load time of 200,000 prefixes). They hold no cycles: pause it.
    collecting = gc.isenabled()
    gc.disable()
    try:
        with path.open(encoding="utf-8") as lines:
            return Deck.from_csv(lines, decimals, name or path.stem, source=str(path))
    finally:
        if collecting:
            gc.enable()


@dataclass(frozen=True)
class Decks:
    """Every deck a configuration names: the sell tariff and the providers' buy rates."""

    sell: Deck
    #: provider name -> its buy-rate deck
    providers: Mapping[str, Deck] = field(default_factory=dict)


def load_decks(config: Config) -> Decks:
    """Read every deck ``config`` names; raise ConfigError naming every bad row of every deck.

    Each problem is ``<file>: line N: <what is wrong>`` (or why the file cannot be read).
    """
    problems: list[str] = []
    decimals = config.billing.decimals

    def load(where: str, file_name: str, name: str) -> Deck:
        path = config.resolve(file_name)
        try:
            return load_deck(path, decimals, name)
        except DeckError as e:
            problems.extend(f"{where} {e.source}: {error}" for error in e.errors)
        except (OSError, UnicodeDecodeError) as e:
            reason = e.strerror if isinstance(e, OSError) and e.strerror else e
            problems.append(f"{where}: cannot read {path}: {reason}")
        return Deck(name=name)

    tariff = config.billing.tariff
    sell = load("[billing] tariff", tariff, "sell") if tariff else Deck(name="sell")
    providers = {
        p.name: load(f"[provider:{p.name}] rates", p.rates, p.name) for p in config.providers
    }
    if problems:
        raise ConfigError(problems)
    return Decks(sell, providers)
