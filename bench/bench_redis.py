"""Redis client throughput: the store's connection against stock txredisapi, on a real redis-server.

A child process (``python -m bench.bench_redis --child``) starts a private
redis-server and, with one connection per client, issues N commands in one
reactor turn (pipelined) and waits for every reply: the store's common mix, an
EVALSHA of the session-save script then a GET, each N/2 times. Rounds alternate
which client goes first; the figure is the median of the rounds' commands per
second (wall clock; the child's CPU is in ``cpu_cmds_per_s``). "Ours" is the store's
:class:`callbackd.store.client.Commands` (txredisapi's hiredis protocol with the
store's encoder, its reply timer on our clock); the peer is a stock
``txredisapi.Connection`` as a program would open it (its own encoder).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def run(quick: bool) -> Iterator[dict[str, Any]]:
    """Run the child process and pass its result lines on."""
    from bench._harness import run_child

    args = ["--quick"] if quick else []
    yield from run_child("bench.bench_redis", args, timeout=120 if quick else 600)


SESSION = '{"id": "s%06d", "state": "talking", "legs": [{"address": "+4930123456", "up": true}]}'


def workload(n: int) -> list[tuple[Any, ...]]:
    """``n`` commands: EVALSHA of the session-save script and GET, alternating."""
    from callbackd.store.redis import _SAVE_SESSION

    commands: list[tuple[Any, ...]] = []
    for i in range(n // 2):
        sid = f"s{i % 500:06d}"
        commands.append(
            (
                "EVALSHA",
                _SAVE_SESSION.sha,
                2,
                f"cb:session:{sid}",
                "cb:sessions",
                SESSION % i,
                sid,
            )
        )
        commands.append(("GET", f"cb:session:{sid}"))
    return commands


async def ours(reactor: Any, port: int) -> tuple[Any, Any]:
    """The store's ready connection with its scripts loaded; (execute, stop)."""
    from twisted.internet import defer
    from twisted.internet.endpoints import TCP4ClientEndpoint

    from callbackd.store.client import Commands
    from callbackd.store.redis import _SCRIPTS

    ready: defer.Deferred[None] = defer.Deferred()
    client = Commands(
        TCP4ClientEndpoint(reactor, "127.0.0.1", port),
        reactor,
        scripts=[s.source for s in _SCRIPTS],
        timeout=30.0,
        on_ready=lambda: ready.called or ready.callback(None),
        on_lost=lambda why: None,
        on_error=lambda why: None,
    )
    client.start()
    await ready

    def execute(*args: Any) -> Any:
        return client.connection.execute_command(*args)

    return execute, client.stop


async def peer(reactor: Any, port: int) -> tuple[Any, Any]:
    """A stock txredisapi connection (convertNumbers off, as the store's)."""
    import txredisapi

    conn = await txredisapi.Connection(
        "127.0.0.1", port, reconnect=False, convertNumbers=False, replyTimeout=30
    )
    return conn.execute_command, conn.disconnect


async def one_round(execute: Any, commands: list[tuple[Any, ...]]) -> tuple[float, float]:
    """Wall and CPU seconds to issue every command in one turn and receive every reply."""
    from twisted.internet import defer

    wall, cpu = time.perf_counter(), time.process_time()
    await defer.gatherResults([execute(*c) for c in commands])
    return time.perf_counter() - wall, time.process_time() - cpu


async def measure(reactor: Any, port: int, quick: bool) -> None:
    n = 4_000 if quick else 20_000
    rounds = 5 if quick else 9
    commands = workload(n)
    clients = {"ours": await ours(reactor, port), "txredisapi": await peer(reactor, port)}
    try:
        for execute, _ in clients.values():  # warm-up: imports, allocator, script cache
            await one_round(execute, commands[:2000])
        walls: dict[str, list[float]] = {name: [] for name in clients}
        cpus: dict[str, list[float]] = {name: [] for name in clients}
        order = list(clients)
        for _ in range(rounds):
            for name in order:
                wall, cpu = await one_round(clients[name][0], commands)
                walls[name].append(wall)
                cpus[name].append(cpu)
            order.reverse()
    finally:
        for _, stop in clients.values():
            await stop()
    result: dict[str, Any] = {
        "bench": "redis_pipelined",
        "value": round(n / statistics.median(walls["ours"])),
        "unit": "commands/s",
        "commands": n,
        "rounds": rounds,
        "cpu_cmds_per_s": round(n / statistics.median(cpus["ours"])),
        "peer": "txredisapi",
        "peer_value": round(n / statistics.median(walls["txredisapi"])),
        "peer_cpu_cmds_per_s": round(n / statistics.median(cpus["txredisapi"])),
    }
    print(json.dumps(result), flush=True)


def main(argv: list[str]) -> None:
    """``--child [--quick]``: the measuring process."""
    from twisted.internet import defer, task

    from tests.procs import RedisServer

    parser = argparse.ArgumentParser()
    parser.add_argument("--child", action="store_true", required=True)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="cbrb") as tmp:
        server = RedisServer.start(Path(tmp) / "redis")
        try:
            task.react(
                lambda reactor: defer.ensureDeferred(measure(reactor, server.port, args.quick))
            )
        finally:
            server.stop()


if __name__ == "__main__":
    main(sys.argv[1:])
