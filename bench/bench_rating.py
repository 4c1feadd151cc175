"""Rating: load time, memory and longest-prefix lookups/s of a 200,000-prefix deck.

The deck is generated (seeded, so every run rates the same deck): prefixes grow from
random 1-3 digit country codes by 0-7 more digits, as real decks do (country, then
area or mobile ranges), with prices of up to 5 decimals and, on one line in ten,
a connect fee and increments. It is written as a CSV file in a temporary directory
and loaded with :func:`callbackd.decks.load_deck`, as the daemon loads its tariff.

Numbers to rate are 12 digits: half start with a prefix of the deck (traffic goes
to destinations that are sold), half are uniformly random. The peer is the lookup
people usually write: try every length from 15 down to 1.

Lookups/s and load seconds are medians (of 5 passes after a warm-up, of 3 loads; one
load with ``--quick``). Memory is what the loaded deck holds (``sys.getsizeof`` of its
dict, rates, prefix strings, distinct prices and lookup table; tracemalloc agrees within
a few percent but slows the load eightfold); the growth of the resident set during the
timed load, which also counts the parser's freed temporaries, is reported beside it where
``/proc/self/statm`` exists.
"""

from __future__ import annotations

import gc
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from callbackd.core.rating import Deck, Rate
from callbackd.decks import load_deck

PREFIXES = 200_000
SEED = 20070920  # the date of the GTalk2VoIP callback announcement
#: timed passes over the sample per lookup (median reported), and loads of the deck
REPEATS = 5
LOADS = 3


def write_deck(path: Path, count: int, rng: random.Random) -> None:
    """A CSV deck of ``count`` distinct prefixes."""
    countries = sorted(
        {
            str(rng.randint(1, 9)) + str(rng.randint(0, 99)).zfill(2)[: rng.randint(0, 2)]
            for _ in range(300)
        }
    )
    prefixes: set[str] = set(countries)
    while len(prefixes) < count:
        extra = "".join(rng.choices("0123456789", k=rng.randint(1, 7)))
        prefixes.add(rng.choice(countries) + extra)
    with path.open("w", encoding="utf-8") as out:
        out.write("prefix,price_per_minute,connect_fee,initial_increment,increment\n")
        for prefix in prefixes:
            price = f"{rng.randint(0, 2)}.{rng.randint(0, 99999):05d}"
            if rng.random() < 0.1:
                out.write(f"{prefix},{price},0.{rng.randint(0, 999):03d},30,6\n")
            else:
                out.write(f"{prefix},{price}\n")


def numbers(deck: Deck, count: int, rng: random.Random) -> list[str]:
    """``count`` 12-digit numbers, half inside the deck's prefixes, half random."""
    prefixes = [rate.prefix for rate in deck]
    result = []
    for i in range(count):
        head = rng.choice(prefixes) if i % 2 else str(rng.randint(1, 9))
        tail = "".join(rng.choices("0123456789", k=max(0, 12 - len(head))))
        result.append((head + tail)[:12])
    return result


def resident_bytes() -> int | None:
    """The process's resident set size, if the OS tells."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")


def naive_lookup(deck: Deck) -> Callable[[str], Rate | None]:
    """The peer: probe every length from 15 down to 1."""
    table = {rate.prefix: rate for rate in deck}
    get = table.get

    def lookup(digits: str) -> Rate | None:
        for length in range(min(15, len(digits)), 0, -1):
            rate = get(digits[:length])
            if rate is not None:
                return rate
        return None

    return lookup


def lookups_per_second(
    lookups: dict[str, Callable[[str], Rate | None]], sample: list[str]
) -> dict[str, float]:
    """Median lookups/s of REPEATS passes over the sample for each lookup, after a warm-up.

    The lookups take turns, the first alternating from pass to pass, so load that
    comes and goes on a shared machine falls on both alike.
    """
    warmup = sample[: len(sample) // 10]
    for lookup in lookups.values():
        for number in warmup:
            lookup(number)
    rates: dict[str, list[float]] = {name: [] for name in lookups}
    order = list(lookups)
    for _ in range(REPEATS):
        for name in order:
            lookup = lookups[name]
            started = time.perf_counter()
            for number in sample:
                lookup(number)
            rates[name].append(len(sample) / (time.perf_counter() - started))
        order.reverse()
    return {name: statistics.median(values) for name, values in rates.items()}


def measure_load(path: Path) -> tuple[Deck, float, int | None]:
    """Load the deck: (deck, seconds, growth of the resident set in bytes if known)."""
    gc.collect()
    before = resident_bytes()
    started = time.perf_counter()
    deck = load_deck(path, decimals=5)
    seconds = time.perf_counter() - started
    after = resident_bytes()
    return deck, seconds, None if before is None or after is None else after - before


def retained_bytes(deck: Deck) -> int:
    """Bytes the deck holds: its dict, the rates, their prefixes and distinct prices, and the
    lookup table in front of the dict with what its entries hold (read from the deck's
    private attributes: the bench is there to see what the index costs)."""
    seen: set[int] = set()

    def once(value: object) -> int:
        if id(value) in seen:
            return 0
        seen.add(id(value))
        return sys.getsizeof(value)

    total = sys.getsizeof(deck._rates) + once(deck._heads)
    for rate in deck:
        total += once(rate) + once(rate.prefix)
        total += once(rate.price_per_minute) + once(rate.connect_fee)
    for entry in deck._heads:
        if isinstance(entry, tuple):
            probes, _fallback = entry
            total += once(entry) + once(probes) + sum(once(cut) for cut in probes)
    return total


def run(quick: bool) -> Iterator[dict]:
    """Three results: lookups/s (with the naive peer), load seconds, memory MB."""
    rng = random.Random(SEED)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "deck.csv"
        write_deck(path, PREFIXES, rng)
        # the first load's RSS growth: later loads reuse what the allocator kept
        deck, first_load, rss_growth = measure_load(path)
        loads = [first_load]
        for _ in range(0 if quick else LOADS - 1):
            deck, load_seconds, _growth = measure_load(path)
            loads.append(load_seconds)
    sample = numbers(deck, 200_000 if quick else 1_000_000, rng)
    rates = lookups_per_second({"ours": deck.lookup, "naive": naive_lookup(deck)}, sample)
    ours, theirs = rates["ours"], rates["naive"]
    yield {
        "bench": "rating_lookup",
        "value": round(ours),
        "unit": "lookups/s",
        "peer": "naive LPM (every length 15..1)",
        "peer_value": round(theirs),
        "ratio": round(ours / theirs, 2),
        "prefixes": len(deck),
        "lookups": len(sample),
        "passes": REPEATS,
    }
    yield {
        "bench": "rating_load",
        "value": round(statistics.median(loads), 3),
        "unit": "s",
        "prefixes": len(deck),
        "loads": [round(seconds, 3) for seconds in loads],
    }
    memory = {
        "bench": "rating_memory",
        "value": round(retained_bytes(deck) / 2**20, 1),
        "unit": "MB",
    }
    if rss_growth is not None:
        # includes the parser's temporaries that the allocator keeps for reuse
        memory["rss_growth_mb"] = round(rss_growth / 2**20, 1)
    yield memory


if __name__ == "__main__":
    for result in run(quick=False):
        print(result)
