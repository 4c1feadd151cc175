"""AMI parsing throughput: our MessageParser against panoramisk's, on the same real bytes.

Both parsers get the server side of every Asterisk 22 transcript, cut into the
TCP segments recorded there, the same number of times in the same run.
panoramisk parses in ``AMIProtocol.data_received`` (split on blank lines, then
``Message.from_line``); its ``handle_message`` is replaced by a counter so that
only parsing is timed.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator

from callbackd.ami.message import MessageParser
from tests.ami.fixtures import SERVER, ami_logs, segments


def workload() -> list[list[bytes]]:
    """Per transcript, the server's segments in order."""
    return [
        [data for direction, data in segments(name) if direction == SERVER] for name in ami_logs()
    ]


def parse_ours(streams: list[list[bytes]]) -> int:
    count = 0
    for chunks in streams:
        parser = MessageParser(banner=True)
        for chunk in chunks:
            count += len(parser.feed(chunk))
    return count


class _Transport:
    def write(self, data: bytes) -> None:
        pass


def parse_panoramisk(streams: list[list[bytes]]) -> int:
    from panoramisk.ami_protocol import AMIProtocol

    count = 0

    def handle_message(message: object) -> None:
        nonlocal count
        count += 1

    for chunks in streams:
        protocol = AMIProtocol()
        protocol.connection_made(_Transport())
        protocol.handle_message = handle_message  # type: ignore[method-assign]
        for chunk in chunks:
            protocol.data_received(chunk)
    return count


def paired_times(
    parsers: dict[str, Callable[[list[list[bytes]]], int]],
    streams: list[list[bytes]],
    iterations: int,
    repeats: int,
    warmup: int,
) -> tuple[dict[str, list[float]], dict[str, int]]:
    """Seconds of each of ``repeats`` rounds of ``iterations`` passes, and messages per pass.

    ``warmup`` untimed passes of each parser come first (imports, caches, the
    allocator's pools). Within a round the parsers take turns, and the one going
    first alternates from round to round, so a burst of load on a shared machine,
    or whatever the first runner leaves in the CPU caches, falls on both alike.
    """
    counts = dict.fromkeys(parsers, 0)
    for name, parse in parsers.items():
        for _ in range(warmup):
            counts[name] = parse(streams)
    times: dict[str, list[float]] = {name: [] for name in parsers}
    order = list(parsers)
    for _ in range(repeats):
        for name in order:
            parse = parsers[name]
            started = time.perf_counter()
            for _ in range(iterations):
                counts[name] = parse(streams)
            times[name].append(time.perf_counter() - started)
        order.reverse()
    return times, counts


def run(quick: bool) -> Iterator[dict]:
    """One result line: our events/s with panoramisk's as the peer (medians of the rounds).

    ``ratio`` is the median of the rounds' own ratios (both parsers timed in the
    same round), the least disturbed by load that comes and goes; ``best_ratio``
    compares the fastest rounds.
    """
    streams = workload()
    iterations, repeats = (5, 15) if quick else (20, 30)
    times, counts = paired_times(
        {"ours": parse_ours, "panoramisk": parse_panoramisk},
        streams,
        iterations,
        repeats,
        warmup=iterations,
    )
    ours_count, peer_count = counts["ours"], counts["panoramisk"]
    if ours_count != peer_count:
        raise AssertionError(f"not the same work: {ours_count} vs {peer_count} messages a pass")
    events = ours_count * iterations
    ours = [events / seconds for seconds in times["ours"]]
    theirs = [events / seconds for seconds in times["panoramisk"]]
    yield {
        "bench": "ami_parse",
        "value": round(statistics.median(ours)),
        "unit": "events/s",
        "peer": "panoramisk",
        "peer_value": round(statistics.median(theirs)),
        "ratio": round(statistics.median(a / b for a, b in zip(ours, theirs)), 2),
        "best_ratio": round(max(ours) / max(theirs), 2),
        "messages_per_pass": ours_count,
        "rounds": repeats,
        "passes_per_round": iterations,
    }
