"""Callback setups per second and trigger-to-Originate latency, at 1, 100 and 1,000 callers.

The daemon's real parts (``create_daemon``: engine, AMI client, AMISwitch, Redis store)
run in a child process on the real reactor, against a real ``redis-server`` and the
simulated Asterisk in a separate process over loopback TCP, every callee answering at
once (see :mod:`bench._harness`).

A **setup** is one callback from its trigger (``SessionManager.start_callback``) to the
session's ``talking`` event: account and credit checked (read from Redis on an
account's first call, then kept in memory while the store's change feed is live),
routes ranked, the source leg originated and answered, the destination originated and
answered, the source moved into the room. **Trigger-to-Originate latency** runs from the
``start_callback`` call to the moment the source leg's ``Originate`` action is handed to
the AMI transport (``transport.write``). Two ways of loading the daemon:

* **Closed loop** (``setup_rate``, ``originate_latency_p50/p99``; the standard one, as
  wrk's connections): ``C`` callers, each with its own account, started spread over
  the first half of the warm-up, each repeatedly
  triggers a callback, waits until it is talking, hangs it up, waits until it has
  ended, and triggers again (each trigger and hang-up in a reactor turn of its own).
  After a warm-up the figures are taken over a fixed window: **setups/s** = setups
  completed (``talking``) inside the window / its length; the latencies (p50, p99) are
  over every callback *triggered* inside the window. ``cpu_setups_per_s`` divides the
  setups by the daemon process's CPU seconds over the window (what one core sustains
  when the daemon is the bottleneck).
* **Burst** (``setup_burst_rate``, ``setup_burst_originate_p50/p99``): a round
  triggers ``C`` callbacks in the *same reactor turn* and waits until every one is
  talking; setups/s = sessions of all rounds / summed round times (first trigger to
  last session talking), the CPU counting the set-ups only (no hang-up, no billing).

Every session is hung up; a run ends only when each session has ended with a charge
and the store holds no session in flight; at the end the accounts' balances must have
fallen by exactly what the sessions cost.

``--profile FILE`` (child only) writes a cProfile of the closed loop at 100 callers.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Iterator
from typing import Any

#: closed loop: (callers, warm-up seconds, window seconds) in quick and full runs
LOADS = {
    True: ((1, 0.5, 1.5), (100, 1.0, 2.0), (1000, 5.0, 4.0)),
    False: ((1, 1.0, 10.0), (100, 2.0, 15.0), (1000, 8.0, 15.0)),
}
#: burst: (concurrency, rounds) in quick and full runs
ROUNDS = {
    True: ((100, 2), (1000, 1)),
    False: ((1, 100), (100, 10), (1000, 3)),
}
WARMUP = 20


def run(quick: bool) -> Iterator[dict[str, Any]]:
    """Run the child process and pass its result lines on."""
    from bench._harness import run_child

    args = ["--quick"] if quick else []
    yield from run_child("bench.bench_setup", args, timeout=120 if quick else 900)


def _load_lines(load: Any) -> list[dict[str, Any]]:
    """The closed loop's figures."""
    from bench._harness import ms, percentile

    latencies, setups = load.originate_latencies, load.setup_times
    common = {"concurrency": load.concurrency, "window_s": round(load.window, 2)}
    return [
        {
            "bench": "setup_rate",
            "value": round(load.setups / load.window, 1),
            "unit": "setups/s",
            **common,
            "setups": load.setups,
            "cpu_setups_per_s": round(load.setups / load.cpu, 1) if load.cpu else None,
            "daemon_cpu_share": round(load.cpu / load.window, 2),
            "simulator_cpu_share": round(load.simulator_cpu / load.window, 2),
            "setup_p50_ms": ms(percentile(setups, 0.5)),
            "setup_p99_ms": ms(percentile(setups, 0.99)),
        },
        {
            "bench": "originate_latency_p50",
            "value": ms(percentile(latencies, 0.5)),
            "unit": "ms",
            **common,
            "triggers": len(latencies),
        },
        {
            "bench": "originate_latency_p99",
            "value": ms(percentile(latencies, 0.99)),
            "unit": "ms",
            **common,
            "triggers": len(latencies),
            "mean_ms": ms(statistics.fmean(latencies)),
        },
    ]


async def _burst_lines(bench: Any, concurrency: int, rounds: int) -> list[dict[str, Any]]:
    """Burst rounds of ``concurrency`` triggers in one reactor turn; their figures."""
    from bench._harness import ms, percentile

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
    return [
        {
            "bench": "setup_burst_rate",
            "value": round(sessions / elapsed, 1),
            "unit": "setups/s",
            **common,
            "cpu_setups_per_s": round(sessions / cpu, 1) if cpu else None,
            "daemon_cpu_share": round(cpu / elapsed, 2),
            "simulator_cpu_share": round(simulator_cpu / elapsed, 2),
            "setup_p50_ms": ms(percentile(setups, 0.5)),
            "setup_p99_ms": ms(percentile(setups, 0.99)),
        },
        {
            "bench": "setup_burst_originate_p50",
            "value": ms(percentile(latencies, 0.5)),
            "unit": "ms",
            **common,
        },
        {
            "bench": "setup_burst_originate_p99",
            "value": ms(percentile(latencies, 0.99)),
            "unit": "ms",
            **common,
            "mean_ms": ms(statistics.fmean(latencies)),
        },
    ]


async def measure(reactor: Any, bench: Any, quick: bool, profile: str | None = None) -> None:
    """The child's work: warm up, the closed loops, the bursts; one JSON line per figure."""
    import json

    loads, bursts = LOADS[quick], ROUNDS[quick]
    await bench.create_accounts(max(c for c, *_ in loads) if profile is None else 100 + WARMUP)
    warmup = await bench.setup_round(WARMUP)
    await bench.hangup_round(warmup.session_ids)
    if profile is not None:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
        await bench.closed_loop(100, 1.0, 5.0)
        profiler.disable()
        profiler.dump_stats(profile)
        return
    for concurrency, warm, window in loads:
        for line in _load_lines(await bench.closed_loop(concurrency, warm, window)):
            print(json.dumps(line), flush=True)
    for concurrency, rounds in bursts:
        for line in await _burst_lines(bench, concurrency, rounds):
            print(json.dumps(line), flush=True)
    await bench.check_billing()


def main(argv: list[str]) -> None:
    """``--child [--quick]``: the measuring process."""
    from bench._harness import child_main

    parser = argparse.ArgumentParser()
    parser.add_argument("--child", action="store_true", required=True)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--profile", metavar="FILE")
    args = parser.parse_args(argv)
    child_main(lambda reactor, bench: measure(reactor, bench, args.quick, args.profile))


if __name__ == "__main__":
    main(sys.argv[1:])
