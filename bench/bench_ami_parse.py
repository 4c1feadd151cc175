"""AMI parsing throughput: our MessageParser against panoramisk's, on the same real bytes.

Both parsers get the server side of every Asterisk 22 transcript, cut into the
TCP segments recorded there, the same number of times in the same run.
panoramisk parses in ``AMIProtocol.data_received`` (split on blank lines, then
``Message.from_line``); its ``handle_message`` is replaced by a counter so that
only parsing is timed.
"""

from __future__ import annotations

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


def best_times(parsers: dict[str, Callable[[list[list[bytes]]], int]], streams, iterations: int,
               repeats: int) -> dict[str, tuple[float, int]]:  # fmt: skip
    """Best time of ``repeats`` rounds of ``iterations`` passes, and messages per pass.

    The parsers take turns within each round, so a burst of load on a shared
    machine hits both rather than whichever happened to run then.
    """
    best = dict.fromkeys(parsers, float("inf"))
    counts = dict.fromkeys(parsers, 0)
    for _ in range(repeats):
        for name, parse in parsers.items():
            started = time.perf_counter()
            for _ in range(iterations):
                counts[name] = parse(streams)
            best[name] = min(best[name], time.perf_counter() - started)
    return {name: (best[name], counts[name]) for name in parsers}


def run(quick: bool) -> Iterator[dict]:
    """One result line: our events/s with panoramisk's as the peer."""
    streams = workload()
    iterations, repeats = (5, 15) if quick else (20, 30)
    results = best_times(
        {"ours": parse_ours, "panoramisk": parse_panoramisk}, streams, iterations, repeats
    )
    (ours_time, ours_count), (peer_time, peer_count) = results["ours"], results["panoramisk"]
    ours = ours_count * iterations / ours_time
    theirs = peer_count * iterations / peer_time
    yield {
        "bench": "ami_parse",
        "value": round(ours),
        "unit": "events/s",
        "peer": "panoramisk",
        "peer_value": round(theirs),
        "ratio": round(ours / theirs, 2),
        "messages_per_pass": ours_count,
        "peer_messages_per_pass": peer_count,
        "iterations": iterations * repeats,
    }
