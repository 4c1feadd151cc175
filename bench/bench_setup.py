"""Callback setups per second and trigger-to-Originate latency, at 1, 100 and 1,000 at once.

The daemon's real parts (``create_daemon``: engine, AMI client, AMISwitch, Redis store)
run in a child process on the real reactor, against a real ``redis-server`` and the
simulated Asterisk in a separate process over loopback TCP, every callee answering at
once (see :mod:`bench._harness`).

A *round* triggers ``concurrency`` callbacks (``SessionManager.start_callback``, one
account each, in the same reactor turn) and waits until every session is talking.

* A **setup** is one callback from its trigger to the session's ``talking`` event:
  account and credit read from Redis, routes ranked, the source leg originated and
  answered, the destination originated and answered, the source moved into the room.
  **setups/s** = sessions of all rounds / summed round times (first trigger to last
  session talking); ``cpu_setups_per_s`` divides by the daemon process's CPU seconds
  instead (what one core sustains when the daemon is the bottleneck).
* **Trigger-to-Originate latency**: from the ``start_callback`` call to the moment the
  source leg's ``Originate`` action is handed to the AMI transport (``transport.write``).

Between rounds every session is hung up, and the round ends only when each one has
ended with a charge and the store holds no session in flight; at the end the accounts'
balances must have fallen by exactly what the sessions cost.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Iterator
from typing import Any

#: (concurrency, rounds) in quick and full runs
ROUNDS = {
    True: ((1, 20), (100, 3), (1000, 1)),
    False: ((1, 200), (100, 20), (1000, 5)),
}
WARMUP = 20


def run(quick: bool) -> Iterator[dict[str, Any]]:
    """Run the child process and pass its result lines on."""
    from bench._harness import run_child

    args = ["--quick"] if quick else []
    yield from run_child("bench.bench_setup", args, timeout=120 if quick else 900)


async def measure(reactor: Any, bench: Any, quick: bool) -> None:
    """The child's work: warm up, then the rounds; one JSON line per figure on stdout."""
    import json

    from bench._harness import percentile

    plan = ROUNDS[quick]
    await bench.create_accounts(max(concurrency for concurrency, _ in plan))
    warmup = await bench.setup_round(WARMUP)
    await bench.hangup_round(warmup.session_ids)
    for concurrency, rounds in plan:
        elapsed = cpu = simulator_cpu = 0.0
        latencies: list[float] = []
        setups: list[float] = []
        for _ in range(rounds):
            result = await bench.setup_round(concurrency)
            await bench.hangup_round(result.session_ids)
            elapsed += result.elapsed
            cpu += result.cpu
            simulator_cpu += result.simulator_cpu
            latencies += result.originate_latencies
            setups += result.setup_times
        sessions = concurrency * rounds
        common = {"concurrency": concurrency, "sessions": sessions}
        lines = [
            {
                "bench": "setup_rate",
                "value": round(sessions / elapsed, 1),
                "unit": "setups/s",
                **common,
                "cpu_setups_per_s": round(sessions / cpu, 1) if cpu else None,
                "daemon_cpu_share": round(cpu / elapsed, 2),
                "simulator_cpu_share": round(simulator_cpu / elapsed, 2),
                "setup_p50_ms": round(percentile(setups, 0.5) * 1000, 2),
                "setup_p99_ms": round(percentile(setups, 0.99) * 1000, 2),
            },
            {
                "bench": "originate_latency_p50",
                "value": round(percentile(latencies, 0.5) * 1000, 3),
                "unit": "ms",
                **common,
            },
            {
                "bench": "originate_latency_p99",
                "value": round(percentile(latencies, 0.99) * 1000, 3),
                "unit": "ms",
                **common,
                "mean_ms": round(statistics.fmean(latencies) * 1000, 3),
            },
        ]
        for line in lines:
            print(json.dumps(line), flush=True)
    await bench.check_billing()


def main(argv: list[str]) -> None:
    """``--child [--quick]``: the measuring process."""
    from bench._harness import child_main

    parser = argparse.ArgumentParser()
    parser.add_argument("--child", action="store_true", required=True)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    child_main(lambda reactor, bench: measure(reactor, bench, args.quick))


if __name__ == "__main__":
    main(sys.argv[1:])
