"""Rating: tariff decks of prefix -> price, longest-prefix match, and the cost of a leg.

A deck is CSV text, one rate a line (:mod:`callbackd.decks` reads the files)::

    # comments and one header line are allowed
    prefix,price_per_minute,connect_fee,initial_increment,increment
    49,0.014
    4915,0.09,0.02
    92,0.01204,0,60,6

Prices are decimal currency amounts converted exactly to integer minor units of
``10**-decimals`` (:func:`callbackd.core.money.parse_amount`); more decimals than that
is an error, never rounding. Increments are whole seconds (default 1 and 1: per-second
billing, as GTalk2VoIP billed).

Billing rule (:meth:`Rate.cost`): a leg that was never answered (duration 0) costs
nothing, not even the connect fee. An answered leg costs the connect fee plus the
per-minute price times the billable seconds (the initial increment, then whole
increments, rounded up), divided by 60 and rounded *up* to the next minor unit.
Rounding happens once per leg, on its total, so long calls do not accumulate rounding.

Lookup (:meth:`Deck.lookup`) keeps every prefix in one dict. In front of it is a table
indexed by the number's first ``H`` digits read as an integer (``10**H`` entries, ``H``
the digit count of the deck's size, at most 6). An entry is either the answer, when no
prefix longer than ``H`` starts with those digits (the longest prefix then lies within
them), or the prefix lengths from the longest under them down to ``H + 1``, to probe
in the dict in that order, with the answer to fall back on. On a large deck most numbers are
rated with one list index, and the dict, whose probes are cache misses, is touched
only under heads that have longer prefixes. Numbers shorter than ``H`` digits (or with
a ``+`` or other non-digits) probe every length the deck has.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import groupby
from operator import itemgetter
from typing import Final, cast

from callbackd.core.money import parse_amount

__all__ = ["Deck", "DeckError", "Rate"]

_PREFIX = re.compile(r"\+?([1-9][0-9]{0,14})", re.ASCII)
_SPACE = re.compile(r"\s").search
_SECONDS = re.compile(r"[0-9]{1,6}", re.ASCII)
#: the longest head indexing the lookup table (10**6 entries, 8 MB of pointers)
_MAX_HEAD: Final = 6
#: errors shown in a DeckError's message (all are kept in ``.errors``)
_SHOWN_ERRORS: Final = 20


class DeckError(ValueError):
    """A deck file with mistakes; ``errors`` lists every one as ``line N: ...``."""

    def __init__(self, source: str, errors: list[str]) -> None:
        shown = errors[:_SHOWN_ERRORS]
        more = len(errors) - len(shown)
        text = "\n".join(shown) + (f"\n... and {more} more" if more else "")
        super().__init__(f"{source}: {len(errors)} error(s) in rate deck\n{text}")
        self.source = source
        self.errors = errors


@dataclass(frozen=True, slots=True)
class Rate:
    """The price of calls to one prefix, in integer minor units."""

    prefix: str
    price_per_minute: int
    connect_fee: int = 0
    #: seconds charged at least once answered
    initial_increment: int = 1
    #: seconds charged per step after the initial increment
    increment: int = 1

    def __post_init__(self) -> None:
        if self.price_per_minute < 0 or self.connect_fee < 0:
            raise ValueError(f"rate for {self.prefix}: prices must not be negative")
        if self.initial_increment < 1 or self.increment < 1:
            raise ValueError(f"rate for {self.prefix}: increments must be at least 1 s")

    @property
    def is_free(self) -> bool:
        """True when an answered leg on this rate costs nothing, however long."""
        return self.price_per_minute == 0 and self.connect_fee == 0

    def billable_seconds(self, duration: int) -> int:
        """Seconds charged for ``duration`` seconds up: 0 stays 0, else rounded up."""
        if duration <= 0:
            return 0
        if duration <= self.initial_increment:
            return self.initial_increment
        steps = -(-(duration - self.initial_increment) // self.increment)
        return self.initial_increment + steps * self.increment

    def cost(self, duration_seconds: int) -> int:
        """Minor units charged for a leg up ``duration_seconds`` (0 s: unanswered, free)."""
        billable = self.billable_seconds(duration_seconds)
        if billable == 0:
            return 0
        return self.connect_fee + -(-self.price_per_minute * billable // 60)


class Deck:
    """A tariff deck: rates by prefix, looked up by longest prefix."""

    __slots__ = ("_head_len", "_heads", "_lengths", "_rates", "name")

    def __init__(self, rates: Iterable[Rate] = (), name: str = "") -> None:
        self.name = name
        self._rates: dict[str, Rate] = {}
        for rate in rates:
            if _PREFIX.fullmatch(rate.prefix) is None or rate.prefix.startswith("+"):
                raise ValueError(f"bad prefix {rate.prefix!r}: digits, not starting with 0")
            if rate.prefix in self._rates:
                raise ValueError(f"duplicate prefix {rate.prefix}")
            self._rates[rate.prefix] = rate
        self._index()

    @classmethod
    def from_csv(
        cls, lines: Iterable[str], decimals: int, name: str = "", source: str = ""
    ) -> Deck:
        """Parse a deck from its lines; raise :class:`DeckError` listing every error.

        ``source`` names where the lines came from in the errors (default: ``name``).
        Reading a file is not done here: :func:`callbackd.decks.load_deck` does it.
        """
        if isinstance(lines, str):
            raise TypeError("Deck.from_csv takes the deck's lines; callbackd.decks reads files")
        return cls._parse(lines, decimals, name, source or name or "<rates>")

    @classmethod
    def _parse(cls, lines: Iterable[str], decimals: int, name: str, source: str) -> Deck:
        errors: list[str] = []
        rates: dict[str, Rate] = {}
        first_line: dict[str, int] = {}
        # decks repeat a few prices many times: convert each distinct text once
        amounts: dict[str, int] = {}
        seen_data = False

        def amount(text: str, what: str, lineno: int) -> int | None:
            value = amounts.get(text)
            if value is not None:
                return value
            try:
                value = parse_amount(text, decimals)
            except ValueError as e:
                errors.append(f"line {lineno}: {what}: {e}")
                return None
            if value < 0 or text.lstrip().startswith(("+", "-")):
                errors.append(f"line {lineno}: {what}: {text!r} must be a plain amount >= 0")
                return None
            amounts[text] = value
            return value

        for lineno, raw in enumerate(lines, 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            fields = line.split(",")
            if _SPACE(line):
                fields = [f.strip() for f in fields]
            if not seen_data and not fields[0][:1].isdigit() and fields[0][:1] != "+":
                seen_data = True  # one header line, before any rate
                continue
            seen_data = True
            if len(fields) not in (2, 3, 5):
                errors.append(
                    f"line {lineno}: expected prefix,price_per_minute"
                    f"[,connect_fee[,initial_increment,increment]], got {len(fields)} fields"
                )
                continue
            match = _PREFIX.fullmatch(fields[0])
            if match is None:
                errors.append(
                    f"line {lineno}: bad prefix {fields[0]!r}: 1-15 digits, not starting with 0"
                )
                continue
            prefix = match.group(1)
            price = amount(fields[1], "price_per_minute", lineno)
            fee = amount(fields[2], "connect_fee", lineno) if len(fields) > 2 else 0
            initial = increment = 1
            if len(fields) == 5:
                if _SECONDS.fullmatch(fields[3]) is None or _SECONDS.fullmatch(fields[4]) is None:
                    errors.append(f"line {lineno}: increments must be whole seconds >= 1")
                    continue
                initial, increment = int(fields[3]), int(fields[4])
                if initial < 1 or increment < 1:
                    errors.append(f"line {lineno}: increments must be whole seconds >= 1")
                    continue
            if price is None or fee is None:
                continue
            if prefix in first_line:
                errors.append(
                    f"line {lineno}: duplicate prefix {prefix} (first on line {first_line[prefix]})"
                )
                continue
            first_line[prefix] = lineno
            rates[prefix] = Rate(prefix, price, fee, initial, increment)
        if errors:
            raise DeckError(source, errors)
        deck = cls(name=name)
        # every prefix was validated above: adopt the dict instead of checking it again
        deck._rates = rates
        deck._index()
        return deck

    def _index(self) -> None:
        """Build the lookup structures from ``_rates`` (see the module docstring)."""
        rates = self._rates
        self._lengths = tuple(sorted({len(p) for p in rates}, reverse=True))
        head_len = self._head_len = min(_MAX_HEAD, len(str(len(rates))))
        heads: list[Rate | tuple[tuple[slice, ...], Rate | None] | None]
        heads = [None] * 10**head_len
        # short prefixes cover ranges of heads; longer ones are written later and win
        short = sorted((p for p in rates if len(p) <= head_len), key=len)
        for prefix in short:
            width = 10 ** (head_len - len(prefix))
            start = int(prefix) * width
            heads[start : start + width] = [rates[prefix]] * width
        # the longest prefix length under every head that has longer prefixes: cut the
        # prefixes of each length in turn, longer lengths overwriting shorter ones
        longest: dict[str, int] = {}
        cut = itemgetter(slice(0, head_len))
        for length, group in groupby(sorted(rates, key=len), key=len):
            if length > head_len:
                longest.update(dict.fromkeys(map(cut, group), length))
        probes = {
            top: tuple(slice(0, n) for n in range(top, head_len, -1))
            for top in set(longest.values())
        }
        for head, top in longest.items():
            at = int(head)
            # every head is visited once, so this is still a rate (or None)
            heads[at] = (probes[top], cast(Rate | None, heads[at]))
        self._heads = heads

    def lookup(self, e164_digits: str) -> Rate | None:
        """The rate of the longest prefix of ``e164_digits`` (a leading ``+`` is ignored)."""
        head = e164_digits[: self._head_len]
        # int() also reads "+1", " 1", "1_0" and non-ASCII digits: only ASCII digits index
        if len(head) == self._head_len and head.isdigit() and head.isascii():
            entry = self._heads[int(head)]
            if entry.__class__ is not tuple:
                return entry  # type: ignore[return-value]
            slices, fallback = entry  # type: ignore[misc]
            get = self._rates.get
            for cut in slices:
                rate = get(e164_digits[cut])
                if rate is not None:
                    return rate
            return fallback
        if e164_digits[:1] == "+":
            e164_digits = e164_digits[1:]
        get = self._rates.get
        # a length beyond the number slices the whole number: still a true prefix, and
        # the longest possible, so no length check is needed
        for length in self._lengths:
            rate = get(e164_digits[:length])
            if rate is not None:
                return rate
        return None

    def __len__(self) -> int:
        return len(self._rates)

    def __iter__(self) -> Iterator[Rate]:
        return iter(self._rates.values())

    def __contains__(self, prefix: object) -> bool:
        return prefix in self._rates

    def __repr__(self) -> str:
        return f"<Deck {self.name or '?'} {len(self._rates)} prefixes>"
