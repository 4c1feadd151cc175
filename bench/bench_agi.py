"""FastAGI: IVR sessions held at once and command round trips, over loopback TCP.

Both sides run in one process on the real reactor, so one core carries them both: the
daemon's FastAGI server (:class:`callbackd.agi.server.FastAGIService`) and the
simulated Asterisk (:class:`callbackd.simulator.agi.SimulatedFastAGI`), whose
:class:`~callbackd.simulator.caller.ScriptedCaller` callers key digits at a human pace.
``C`` inbound calls are placed at once (the server's ``max_connections`` is ``C``),
each runs one script until the bench hangs it up:

* **IVR-like** (``agi_ivr_sessions``): ``ANSWER``, then in a loop a 1 s prompt
  (``STREAM FILE`` with escape digits), ``GET DATA`` of a 0.5 s prompt that the caller
  interrupts after 0.2 s with ``1234#`` keyed 50 ms apart, ``SET VARIABLE``, ``GET
  VARIABLE`` and ``SAY NUMBER 1234`` (the English files, 0.2 s each). ``value`` is the
  number of sessions open through the window; the **round trip** of a command is
  timed in the script, from the call to the reply, for the commands that play nothing
  (``SET``/``GET VARIABLE``): p50 and p99 over the window (the target: under 5 ms
  p99 at 500 sessions), and ``command_cpu_p99_ms`` the p99 of the process's CPU time
  within each such round trip (the round trip less the time the kernel gave the core
  to other processes: the cost of our own work, both sides, queued in the reactor).
  ``cpu`` is the process's CPU share over the window,
  ``preempted`` the times the kernel took the core away meanwhile (other processes
  on a shared machine: they make the tail).
* **Flood** (``agi_round_trips``): every session sends ``SET VARIABLE`` and ``GET
  VARIABLE`` back to back; round trips per second over the window (both sides'
  work: the figure per core of the server alone is higher).

The garbage collector is tuned as the daemon tunes it once running
(:func:`callbackd.app.tune_gc` with the default ``[daemon] gc_threshold``).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from collections.abc import Iterator
from typing import Any

#: (sessions, warm-up seconds, window seconds) in quick and full runs
LOADS = {True: ((500, 3.5, 2.0),), False: ((100, 3.5, 10.0), (500, 3.5, 15.0))}
#: flood calls placed in one go (within Twisted's listen backlog of 50)
FLOOD_ARRIVALS = 25
#: the flood needs no spread-out arrivals, only connected sessions
FLOOD_WARMUP = 1.5
PROMPT_SECONDS = 1.0
SAY_FILE_SECONDS = 0.2


def run(quick: bool) -> Iterator[dict[str, Any]]:
    """Run the child process and pass its result lines on."""
    from bench._harness import run_child

    yield from run_child("bench.bench_agi", ["--quick"] if quick else [], timeout=180)


class Timings:
    """Round trips of the commands inside the measuring window."""

    def __init__(self) -> None:
        self.start = self.end = float("inf")
        self.round_trips: list[float] = []
        #: the process's CPU time within each round trip: the wall time less the time
        #: the kernel gave the core to other processes (our own work, both sides)
        self.cpu: list[float] = []
        self.commands = 0

    def record(self, started: float, cpu_started: float) -> None:
        now = time.perf_counter()
        if self.start <= started and now <= self.end:
            self.round_trips.append(now - started)
            self.cpu.append(time.process_time() - cpu_started)


async def _timed(timings: Timings, d: Any) -> Any:
    started, cpu_started = time.perf_counter(), time.process_time()
    result = await d
    timings.record(started, cpu_started)
    return result


def _script(timings: Timings) -> Any:
    """The FastAGI script of the run (``?mode=ivr`` or ``?mode=flood``)."""
    from callbackd.agi.server import AGIChannel, AGICommandFailed, AGIHangup

    async def script(channel: AGIChannel) -> None:
        try:
            await channel.answer()
            if channel.query.get("mode") == "flood":
                while True:
                    await _timed(timings, channel.set_variable("CB_STEP", "1"))
                    await _timed(timings, channel.get_variable("CB_STEP"))
            while True:
                await channel.stream_file("callbackd/prompt", "#")
                await channel.get_data("callbackd/enter-pin", 3000, 8)
                await _timed(timings, channel.set_variable("CB_PIN", "ok"))
                await _timed(timings, channel.get_variable("CB_PIN"))
                await channel.say_number(1234)
        except (AGIHangup, AGICommandFailed):
            # the bench's hangup: -1 from the command it interrupted, or HANGUP
            return

    return script


async def _load(reactor: Any, sessions: int, warmup: float, window: float, mode: str) -> dict:
    from twisted.internet.task import deferLater

    from bench._harness import ms, percentile
    from callbackd.agi.server import FastAGIService
    from callbackd.simulator.agi import SimulatedFastAGI, SoundLibrary
    from callbackd.simulator.asterisk import SimulatedAsterisk
    from callbackd.simulator.caller import CallerStep, ScriptedCaller

    timings = Timings()
    service = FastAGIService(
        "tcp:0:interface=127.0.0.1",
        {"bench": _script(timings)},
        reactor=reactor,
        max_connections=sessions,
    )
    service.startService()
    port = await service.ready
    switch = SimulatedAsterisk(reactor)
    sounds = SoundLibrary(
        {"callbackd/prompt": PROMPT_SECONDS, "callbackd/enter-pin": 0.5}, digits=SAY_FILE_SECONDS
    )
    # no transcripts: the simulator's test instrumentation, not the daemon's work (each
    # line kept would be one more object for the collector to traverse)
    agi = SimulatedFastAGI(switch, reactor, sounds=sounds, record=False)
    calls = []
    keys = CallerStep("1234#", prompt="callbackd/enter-pin", delay=0.2, interval=0.05)
    url = f"agi://127.0.0.1:{port}/bench?mode={mode}"
    # calls arrive spread over the warm-up but its last 0.5 s, as calls to a switch do:
    # one at a time (IVR: their prompts then play out of step), or in groups for the
    # flood (whose load would slow one-by-one arrivals down)
    group = 1 if mode == "ivr" else FLOOD_ARRIVALS
    started = reactor.seconds()
    spread = warmup - 0.5
    for i in range(sessions):
        caller = ScriptedCaller([keys] * 10_000)
        calls.append(agi.inbound_call(f"1555{i:07d}", "8000", url, caller=caller))
        if (i + 1) % group == 0:
            due = started + spread * (i + 1) / sessions
            await deferLater(reactor, max(0.0, due - reactor.seconds()), lambda: None)
    await deferLater(reactor, max(0.0, started + warmup - reactor.seconds()), lambda: None)
    open_at_start = len(service.factory.active)
    switches = resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw
    cpu = time.process_time()
    timings.start = time.perf_counter()
    timings.end = timings.start + window
    await deferLater(reactor, window, lambda: None)
    cpu = time.process_time() - cpu
    switches = resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw - switches
    held = min(open_at_start, len(service.factory.active))
    for call in calls:
        switch.hangup(call.channel, 16)
    for call in calls:
        await call.done
    await service.stopService()
    trips = timings.round_trips
    return {
        "sessions": sessions,
        "held": held,
        "window_s": window,
        "round_trips": len(trips),
        "per_s": round(len(trips) / window, 1),
        "p50_ms": ms(percentile(trips, 0.5)) if trips else None,
        "p99_ms": ms(percentile(trips, 0.99)) if trips else None,
        "cpu_p99_ms": ms(percentile(timings.cpu, 0.99)) if trips else None,
        "cpu": round(cpu / window, 2),
        "preempted": switches,
    }


def child(quick: bool) -> None:
    """Run every load on the real reactor and print one JSON line per figure."""
    import json

    from twisted.internet import defer, task

    from callbackd.app import tune_gc
    from callbackd.config import DaemonConfig

    async def main(reactor: Any) -> None:
        tune_gc(DaemonConfig().gc_threshold)
        for sessions, warmup, window in LOADS[quick]:
            ivr = await _load(reactor, sessions, warmup, window, "ivr")
            print(
                json.dumps(
                    {
                        "bench": "agi_ivr_sessions",
                        "value": ivr["held"],
                        "unit": "sessions",
                        "command_p50_ms": ivr["p50_ms"],
                        "command_p99_ms": ivr["p99_ms"],
                        "command_cpu_p99_ms": ivr["cpu_p99_ms"],
                        "timed_commands": ivr["round_trips"],
                        "cpu": ivr["cpu"],
                        "preempted": ivr["preempted"],
                        "concurrency": sessions,
                        "window_s": window,
                    }
                ),
                flush=True,
            )
            flood = await _load(reactor, sessions, FLOOD_WARMUP, window, "flood")
            print(
                json.dumps(
                    {
                        "bench": "agi_round_trips",
                        "value": flood["per_s"],
                        "unit": "round trips/s",
                        "p50_ms": flood["p50_ms"],
                        "p99_ms": flood["p99_ms"],
                        "cpu": flood["cpu"],
                        "preempted": flood["preempted"],
                        "concurrency": sessions,
                        "window_s": window,
                    }
                ),
                flush=True,
            )

    task.react(lambda reactor: defer.ensureDeferred(main(reactor)))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", action="store_true")
    parser.add_argument("--quick", action="store_true")
    options = parser.parse_args()
    if not options.child:
        sys.exit("run it through bench/run.py")
    child(options.quick)
