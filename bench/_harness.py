"""The daemon's real parts against a simulated Asterisk and a real redis-server, for benches.

Shared by ``bench_setup`` and ``bench_memory``. Each bench runs its measurement in a
child process (``python -m bench.bench_<name> --child``), because Twisted's reactor
runs once per process and because the memory bench must see a process that holds
only the daemon (the benches before it in ``bench/run.py`` leave their own garbage).

The child starts, before its reactor runs:

* a private ``redis-server`` on a free loopback port with its own temporary data
  directory (:class:`tests.procs.RedisServer`);
* the simulated Asterisk as a *separate process*, ``python -m callbackd.simulator``,
  on another free loopback port, with the rule ``*=answer`` (every callee answers at
  once), so its CPU is not the daemon's, and with the event filter of the recommended
  ``etc/asterisk/manager.conf`` (``--event-filter``, :data:`callbackd.amievents.MANAGER_EVENTS`):
  the daemon gets only the events it uses, as from a production Asterisk;

and then builds the daemon exactly as ``twistd callbackd`` does,
:func:`callbackd.app.create_daemon` on a temporary INI file (``[redis] mode =
external``, ``[ami] mode = asterisk`` to the simulator, the web on a free port, the
manhole off, the demo tariff and providers of ``etc/rates``), with Twisted logging
going to a file as under twistd. Accounts are created with a cheap bcrypt cost through
a second store on the same Redis (the daemon's default cost would spend minutes hashing
passwords nobody uses here).

Instrumentation changes no production code: the engine's subscriber API reports
``talking`` and ``session_ended``; the AMI transport's ``write`` is wrapped to stamp
the moment each session's first ``Originate`` (the source leg) is handed to the
transport.
"""

from __future__ import annotations

import gc
import json
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RATES = ROOT / "etc" / "rates"
#: every callee answers at once: what is measured is the daemon
SIMULATOR_RULES = ("*=answer",)
#: credit per account, minor units (10**-5): 1,000,000 currency units, never the limit
BALANCE = 100_000_000_000
SOURCE = "+12125550{:03d}"
DESTINATION = "+13105550{:03d}"

_CHANNEL_ID = re.compile(rb"\r\nChannelId: ([^\r\n]+)\r\n")


def resident_bytes() -> int:
    """This process's resident set size (Linux ``/proc/self/statm``)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) another process has used so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ms(seconds: float) -> float:
    """Seconds as milliseconds, to the microsecond (how the benches report times)."""
    return round(seconds * 1000, 3)


def percentile(values: list[float], fraction: float) -> float:
    """The ``fraction`` quantile of ``values`` (nearest rank)."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * fraction // 1))
    return ordered[int(rank) - 1]


def run_child(module: str, args: list[str], timeout: float) -> Iterator[dict[str, Any]]:
    """Run ``python -m module --child args`` from the repo root; its JSON lines, parsed."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-m", module, "--child", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"{module} child exited {proc.returncode}:\n{tail}")
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            yield json.loads(line)


@dataclass
class Processes:
    """The redis-server and simulator processes of one bench run, and its directory."""

    workdir: Path
    redis: Any
    simulator: subprocess.Popen[bytes]
    simulator_port: int
    username: str
    secret: str
    _tmp: Any = None

    @classmethod
    def start(cls) -> Processes:
        """Start both on free loopback ports (blocking; call before the reactor runs)."""
        from callbackd.amievents import MANAGER_EVENTS
        from tests.procs import RedisServer, free_port, wait_for_port

        tmp = tempfile.TemporaryDirectory(prefix="callbackd-bench-")
        workdir = Path(tmp.name)
        redis = RedisServer.start(workdir / "redis")
        port = free_port()
        username, secret = "bench", secrets.token_hex(8)
        rules = [arg for rule in SIMULATOR_RULES for arg in ("--rule", rule)]
        rules += ["--event-filter", ",".join(MANAGER_EVENTS)]
        simulator = subprocess.Popen(
            [sys.executable, "-m", "callbackd.simulator", "--port", str(port)]
            + ["--username", username, "--secret", secret, *rules],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=(workdir / "simulator.log").open("wb"),
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        try:
            wait_for_port(port, timeout=20)
        except TimeoutError:
            simulator.kill()
            redis.stop()
            raise
        return cls(workdir, redis, simulator, port, username, secret, tmp)

    def stop(self) -> None:
        """Stop both and remove the directory."""
        from tests.procs import stop_process

        stop_process(self.simulator)
        self.redis.stop()
        if self._tmp is not None:
            self._tmp.cleanup()

    def config_text(self) -> str:
        """The daemon's INI: external redis, the simulator as the Asterisk, no manhole."""
        from tests.procs import free_port

        (self.workdir / "ami_secret").write_text(self.secret)
        providers = "".join(
            f"\n[provider:{name.upper()}]\ndial = PJSIP/{{number}}@{name}\n"
            f"rates = {RATES / (name + '.csv')}\nchannels = 100000\n"
            for name in ("proxicom", "pakline", "mks")
        )
        return f"""
[daemon]
node_id = bench
state_dir = state

[redis]
mode = external
host = 127.0.0.1
port = {self.redis.port}
# a burst of 1,000 callbacks keeps the reactor busy for seconds; the tail of the burst
# would see the default 5 s reply timeout expire on replies Redis sent long before
timeout = 20

[ami]
mode = asterisk
host = 127.0.0.1
port = {self.simulator_port}
username = {self.username}
secret_file = ami_secret

[web]
listen = tcp:{free_port()}:interface=127.0.0.1

[manhole]
enabled = no

[billing]
tariff = {RATES / "sell.csv"}
{providers}"""


@dataclass
class Round:
    """One round: ``concurrency`` callbacks triggered in the same reactor turn."""

    concurrency: int
    #: seconds from the first trigger to the last session talking
    elapsed: float
    #: daemon-process CPU seconds (user + system) over the round
    cpu: float
    #: the simulator process's CPU seconds over the round
    simulator_cpu: float
    #: per session: seconds from its trigger to its source leg's Originate on the transport
    originate_latencies: list[float]
    #: per session: seconds from its trigger to ``talking``
    setup_times: list[float]
    session_ids: list[str] = field(default_factory=list)


@dataclass
class Load:
    """A closed-loop run: ``concurrency`` callers, each one callback after another."""

    concurrency: int
    #: seconds of the steady-state window the figures are taken over
    window: float
    #: setups (``talking`` events) inside the window
    setups: int
    #: daemon-process CPU seconds (user + system) over the window
    cpu: float
    #: the simulator process's CPU seconds over the window
    simulator_cpu: float
    #: per callback triggered inside the window: trigger to its source leg's Originate
    originate_latencies: list[float]
    #: per callback triggered inside the window: trigger to ``talking``
    setup_times: list[float]
    #: every session of the run (warm-up, window and drain)
    session_ids: list[str] = field(default_factory=list)


class BenchDaemon:
    """The daemon built by ``create_daemon``, driven and timed from inside its process."""

    def __init__(self, reactor: Any, processes: Processes) -> None:
        self.reactor = reactor
        self.processes = processes
        self.daemon: Any = None
        self.accounts: list[str] = []
        self.talking_at: dict[str, float] = {}
        self.ended: dict[str, Any] = {}
        self.originate_at: dict[str, float] = {}
        self._waiting: tuple[Callable[[], bool], Any] | None = None

    async def start(self, log_path: Path, extra_config: str = "") -> None:
        """Build and start the daemon; return once AMI is logged in and Redis answers.

        ``extra_config`` is INI text appended to :meth:`Processes.config_text` (sections
        of the daemon's parts a bench adds, e.g. ``[xmpp]``).
        """
        from twisted.logger import globalLogBeginner, textFileLogObserver

        from callbackd.app import create_daemon
        from callbackd.config import parse_config

        workdir = self.processes.workdir
        text = self.processes.config_text() + extra_config
        config = parse_config(text, workdir / "callbackd.ini", environ={})
        # as under twistd: the daemon's log events are formatted and written to a file
        globalLogBeginner.beginLoggingTo(
            [textFileLogObserver(log_path.open("a", encoding="utf-8"))],
            redirectStandardIO=False,
        )
        root = create_daemon(config, self.reactor)
        self.daemon = root.daemon
        root.startService()
        protocol = await self.daemon.ami.when_connected(timeout=20)
        await self.daemon.store.connect(timeout=20)
        self._instrument(protocol)
        self.daemon.engine.subscribe(self._session_event)

    def _instrument(self, protocol: Any) -> None:
        """Stamp each session's first Originate as it is handed to the AMI transport."""
        transport = protocol.transport
        write = transport.write
        originate_at = self.originate_at

        def timed_write(data: bytes) -> None:
            if data.startswith(b"Action: Originate\r\n"):
                now = time.perf_counter()
                match = _CHANNEL_ID.search(data)
                if match is not None:
                    session_id = match.group(1).decode("ascii").rpartition("-")[0]
                    originate_at.setdefault(session_id, now)
            write(data)

        transport.write = timed_write

    def _session_event(self, event: Any) -> None:
        if event.kind == "talking":
            self.talking_at.setdefault(event.session_id, time.perf_counter())
        elif event.kind == "session_ended":
            self.ended[event.session_id] = event
        else:
            return
        if self._waiting is not None and self._waiting[0]():
            d = self._waiting[1]
            self._waiting = None
            d.callback(None)

    async def _until(self, done: Callable[[], bool], timeout: float, what: str) -> None:
        """Wait (event-driven, no polling) until ``done()``; raise after ``timeout``."""
        from twisted.internet import defer

        if done():
            return
        d: defer.Deferred[None] = defer.Deferred()
        self._waiting = (done, d)
        d.addTimeout(timeout, self.reactor)
        try:
            await d
        except defer.TimeoutError:
            raise RuntimeError(f"timed out after {timeout} s waiting for {what}") from None
        finally:
            self._waiting = None

    async def create_accounts(self, count: int, max_sessions: int = 2) -> None:
        """``count`` active accounts with :data:`BALANCE` each (bcrypt cost 4, outside timing)."""
        from twisted.internet import defer

        from callbackd.store.hashing import BcryptHasher
        from callbackd.store.redis import make_store

        admin = make_store(
            self.daemon.config, self.reactor, BcryptHasher(rounds=4, run_in_thread=False)
        )
        await admin.connect(timeout=10)
        try:
            names = [f"bench{i:05d}" for i in range(len(self.accounts), count)]
            for start in range(0, len(names), 200):
                batch = names[start : start + 200]
                await defer.gatherResults(
                    [
                        defer.ensureDeferred(self._create_account(admin, name, max_sessions))
                        for name in batch
                    ],
                    consumeErrors=True,
                )
                self.accounts.extend(batch)
        finally:
            await admin.disconnect()

    @staticmethod
    async def _create_account(store: Any, name: str, max_sessions: int) -> None:
        from callbackd.core.model import Account

        await store.create_account(
            Account(username=name, max_sessions=max_sessions), secrets.token_hex(8)
        )
        await store.credit(name, BALANCE, f"bench-{name}")

    async def setup_round(self, concurrency: int, timeout: float = 60.0, first: int = 0) -> Round:
        """Trigger ``concurrency`` callbacks at once and wait until every one is talking.

        The callbacks are for accounts ``first`` to ``first + concurrency - 1``, one each.
        """
        from twisted.internet import defer

        if first + concurrency > len(self.accounts):
            raise ValueError("more concurrent sessions than accounts")
        engine = self.daemon.engine
        triggered: list[tuple[float, defer.Deferred[str]]] = []
        gc.collect()
        simulator = self.processes.simulator.pid
        simulator_cpu = process_cpu(simulator)
        cpu = time.process_time()
        began = time.perf_counter()
        for i in range(concurrency):
            started = time.perf_counter()
            d = engine.start_callback(
                self.accounts[first + i], SOURCE.format(i % 1000), DESTINATION.format(i % 1000)
            )
            triggered.append((started, d))
        session_ids = await defer.gatherResults([d for _, d in triggered], consumeErrors=True)
        expected = set(session_ids)

        def settled() -> bool:
            return all(sid in self.talking_at or sid in self.ended for sid in expected)

        await self._until(settled, timeout, f"{concurrency} sessions to talk")
        cpu = time.process_time() - cpu
        simulator_cpu = process_cpu(simulator) - simulator_cpu
        failed = [sid for sid in session_ids if sid not in self.talking_at]
        if failed:
            raise RuntimeError(f"{len(failed)} of {concurrency} sessions ended before talking")
        last = max(self.talking_at[sid] for sid in session_ids)
        return Round(
            concurrency,
            elapsed=last - began,
            cpu=cpu,
            simulator_cpu=simulator_cpu,
            originate_latencies=[
                self.originate_at[sid] - started
                for (started, _), sid in zip(triggered, session_ids, strict=True)
            ],
            setup_times=[
                self.talking_at[sid] - started
                for (started, _), sid in zip(triggered, session_ids, strict=True)
            ],
            session_ids=session_ids,
        )

    async def closed_loop(
        self, concurrency: int, warmup: float, window: float, timeout: float = 120.0
    ) -> Load:
        """``concurrency`` callers, each: trigger, wait for talking, hang up, wait for the end.

        Caller ``i`` uses account ``i`` (one session at a time each). The callers start
        spread over the first half of the warm-up; the figures are taken over the
        ``window`` seconds after ``warmup`` seconds of the same load. Triggers and
        hang-ups run in a reactor turn of their own (as a request from outside would),
        never inside the engine's event delivery.
        After the window no caller triggers again; the run returns once every session
        ended with a charge and the store holds none in flight.
        """
        from twisted.internet import defer

        if concurrency > len(self.accounts):
            raise ValueError("more concurrent callers than accounts")
        engine = self.daemon.engine
        reactor = self.reactor
        triggered_at: dict[str, float] = {}
        talked_at: dict[str, float] = {}
        caller_of: dict[str, int] = {}
        errors: list[str] = []
        phase = {"window_start": float("inf"), "window_end": float("inf"), "stopping": False}
        in_flight: set[int] = set()
        all_done: defer.Deferred[None] = defer.Deferred()

        def trigger(i: int) -> None:
            in_flight.add(i)
            started = time.perf_counter()
            d = engine.start_callback(
                self.accounts[i], SOURCE.format(i % 1000), DESTINATION.format(i % 1000)
            )

            def began(session_id: str) -> None:
                triggered_at[session_id] = started
                caller_of[session_id] = i

            def refused(failure: Any) -> None:
                errors.append(failure.getErrorMessage())
                caller_done(i)

            d.addCallbacks(began, refused)

        def caller_done(i: int) -> None:
            in_flight.discard(i)
            if phase["stopping"] and not in_flight and not all_done.called:
                all_done.callback(None)

        def on_event(event: Any) -> None:
            i = caller_of.get(event.session_id)
            if i is None:
                return
            if event.kind == "talking":
                talked_at[event.session_id] = time.perf_counter()
                reactor.callLater(0, engine.hangup, event.session_id)
            elif event.kind == "session_ended":
                if event.session_id not in talked_at:
                    errors.append(f"{event.session_id} ended before talking: {event.to_dict()}")
                if event.cost <= 0:
                    errors.append(f"{event.session_id} ended without a charge")
                if phase["stopping"] or errors:
                    caller_done(i)
                else:
                    reactor.callLater(0, trigger, i)

        unsubscribe = engine.subscribe(on_event)
        gc.collect()
        simulator = self.processes.simulator.pid
        marks: dict[str, tuple[float, float]] = {}

        def mark(name: str) -> None:
            marks[name] = (time.process_time(), process_cpu(simulator))

        def open_window() -> None:
            phase["window_start"] = time.perf_counter()
            mark("start")

        def close_window() -> None:
            phase["window_end"] = time.perf_counter()
            phase["stopping"] = True
            mark("end")
            if not in_flight and not all_done.called:
                all_done.callback(None)

        try:
            # the callers start spread over the first half of the warm-up, not in one
            # turn: a burst of 1,000 would take longer than the warm-up to clear
            for i in range(concurrency):
                reactor.callLater(i * warmup / 2 / concurrency, trigger, i)
            reactor.callLater(warmup, open_window)
            reactor.callLater(warmup + window, close_window)
            all_done.addTimeout(warmup + window + timeout, reactor)
            try:
                await all_done
            except defer.TimeoutError:
                raise RuntimeError(f"closed loop of {concurrency} did not drain") from None
        finally:
            unsubscribe()
        if errors:
            raise RuntimeError(f"{len(errors)} callbacks failed, first: {errors[0]}")
        await self.drained(timeout)
        start, end = phase["window_start"], phase["window_end"]
        inside = [sid for sid, at in triggered_at.items() if start <= at < end]
        if not inside:
            raise RuntimeError(f"no callback of {concurrency} callers triggered in the window")
        return Load(
            concurrency,
            window=end - start,
            setups=sum(1 for at in talked_at.values() if start <= at < end),
            cpu=marks["end"][0] - marks["start"][0],
            simulator_cpu=marks["end"][1] - marks["start"][1],
            originate_latencies=[self.originate_at[sid] - triggered_at[sid] for sid in inside],
            setup_times=[talked_at[sid] - triggered_at[sid] for sid in inside],
            session_ids=list(triggered_at),
        )

    async def drained(self, timeout: float) -> None:
        """Wait until the store holds no session in flight."""
        deadline = time.monotonic() + timeout
        while await self.daemon.store.list_sessions():
            if time.monotonic() > deadline:
                raise RuntimeError("sessions still in the store after hang-up")
            await self.sleep(0.05)

    async def hangup_round(self, session_ids: list[str], timeout: float = 60.0) -> None:
        """Hang every session up; return once each ended and the store holds none in flight."""
        from twisted.internet import defer

        engine = self.daemon.engine
        await defer.gatherResults([engine.hangup(sid) for sid in session_ids], consumeErrors=True)
        await self._until(
            lambda: all(sid in self.ended for sid in session_ids),
            timeout,
            f"{len(session_ids)} sessions to end",
        )
        unbilled = [sid for sid in session_ids if self.ended[sid].cost <= 0]
        if unbilled:
            raise RuntimeError(f"{len(unbilled)} sessions ended without a charge")
        await self.drained(timeout)

    async def check_billing(self) -> int:
        """Raise unless the accounts' balances fell by what the ended sessions cost in total."""
        total = sum(event.cost for event in self.ended.values())
        balances = [await self.daemon.store.get_balance(name) for name in self.accounts]
        debited = BALANCE * len(self.accounts) - sum(balances)
        if debited != total:
            raise RuntimeError(f"debited {debited}, but the sessions cost {total}")
        return total

    async def sleep(self, seconds: float) -> None:
        """Let the reactor run for ``seconds``."""
        from twisted.internet import task

        await task.deferLater(self.reactor, seconds, lambda: None)

    async def stop(self) -> None:
        """Stop the daemon's services."""
        if self.daemon is not None:
            await self.daemon.root.stopService()


def child_main(
    body: Callable[[Any, BenchDaemon], Any],
    extra_config: Callable[[Any, Processes], str] | None = None,
) -> None:
    """Run ``body(reactor, bench)`` (a coroutine function) in a fresh daemon; exit 1 on error.

    ``extra_config(reactor, processes)``, if given, runs on the reactor before the daemon
    is built (to listen on a port the daemon connects to, say) and returns INI text
    appended to the daemon's configuration.
    """
    from twisted.internet import defer, task

    processes = Processes.start()

    async def main(reactor: Any) -> None:
        bench = BenchDaemon(reactor, processes)
        try:
            extra = "" if extra_config is None else extra_config(reactor, processes)
            await bench.start(processes.workdir / "callbackd.log", extra)
            await body(reactor, bench)
        except BaseException:
            traceback.print_exc()  # the log goes to a file that is removed: say it here
            raise
        finally:
            await bench.stop()

    try:
        task.react(lambda reactor: defer.ensureDeferred(main(reactor)))
    finally:
        processes.stop()
