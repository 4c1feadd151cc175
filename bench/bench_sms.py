"""SMS webhooks: inbound messages accepted per second, and SMS-to-Originate latency.

The daemon's real parts run as in ``bench_setup`` (:mod:`bench._harness`:
``create_daemon`` from a temporary INI, a private ``redis-server``, the simulated
Asterisk in its own process), with ``[sms] enabled = yes`` and one form gateway,
``/sms/bench``, authenticated by a shared token header, its replies sent with
``send = http-post`` to a sink in the bench's process (a ``twisted.web`` resource that
answers 200). The senders are 100 HTTP/1.1 keep-alive connections on loopback, each a
small Twisted protocol in the daemon's process writing the form POST and reading the
answer's status line and ``Content-Length`` (the driver's own cost is kept small
because it shares the daemon's process and CPU; it is included in the CPU figures).

``C`` = 100 senders, in two closed loops (the next request as soon as the previous
answer came):

* **accepted** (``sms_inbound_per_s``): each sender posts ``I`` (balance) from a number
  that is no account's caller ID, each with a message id of its own. A request is
  authenticated (token), parsed, rate-limited per gateway, recorded in Redis under its
  dedupe key and acknowledged with 200 before its handling starts; the answers inside a
  fixed window are counted: messages/s = answers / window; ``cpu_inbound_per_s`` =
  answers / the daemon process's CPU seconds in the window (the handling of the
  accepted messages, which goes on in the same process, included: the per-sender
  limit's counter, the caller-ID lookup, the one reply an unknown sender gets per
  period and its delivery to the sink).
* **callbacks** (``sms_callback_originate_p50/p99``): each sender's number is a
  verified caller ID of an account of its own; it posts ``D.<destination>``, the
  bench hangs the session up once it is talking, and the sender posts again once it
  ended. The latency runs from the request handed to the sender connection's transport
  to the session's source-leg ``Originate`` handed to the AMI transport (both wrapped
  writes in the same process, one clock), over every callback posted inside the window:
  the HTTP request read, authenticated, parsed, recorded in Redis, answered, then
  handled (the per-sender counter, the caller-ID lookup, the account, the engine).

The per-sender limit (``[sms] sender_limit``, 10 per 10 minutes by default) would stop
a closed loop at once; the bench's configuration raises it (and the gateway's).

``python -m bench.bench_sms --child [--quick] [--senders N] [--profile FILE]`` runs the
measuring process alone; ``--profile`` writes a cProfile of the closed callback loop.
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import sys
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

from twisted.internet.protocol import Protocol

#: concurrent senders
SENDERS = 100
#: (warm-up seconds, window seconds) of each closed loop, quick and full
TIMES = {True: (1.0, 3.0), False: (2.0, 10.0)}
#: the senders' numbers (unknown ones, then each the caller ID of an account)
UNKNOWN = "+4915100{:06d}"
KNOWN = "+4915200{:06d}"
DESTINATION = "+13105550{:03d}"
#: seconds between one sender's messages in the paced loop (100 senders: 100 per second)
PACE = 1.0


def run(quick: bool) -> Any:
    """Run the child process and pass its result lines on."""
    from bench._harness import run_child

    args = ["--quick"] if quick else []
    yield from run_child("bench.bench_sms", args, timeout=120 if quick else 300)


class Sink:
    """The http-post outbound gateway's far end: ``python -m bench.bench_sms --sink PORT``,
    a process of its own (as a real gateway is), answering every POST with 200."""

    def __init__(self) -> None:
        self.process: Any = None
        self.token = secrets.token_hex(16)

    def listen(self, reactor: Any, processes: Any) -> str:
        import subprocess

        from bench._harness import ROOT
        from tests.procs import free_port, wait_for_port

        port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.bench_sms", "--sink", str(port)], cwd=ROOT
        )
        wait_for_port(port, timeout=20)
        (processes.workdir / "sms_token").write_text(self.token)
        return f"""
[sms]
enabled = yes
sender_limit = 1000000000
gateway_limit = 1000000000

[sms-gateway:bench]
format = form
token_file = sms_token
send = http-post
post_url = http://127.0.0.1:{port}/sms
post_token_file = sms_token
"""

    def stop(self) -> None:
        from tests.procs import stop_process

        if self.process is not None:
            stop_process(self.process)


def sink_main(port: int) -> None:
    """The sink process: 200 to every POST on ``port``, until killed."""
    from twisted.internet import reactor
    from twisted.web import resource, server

    class Ok(resource.Resource):
        isLeaf = True

        def render_POST(self, request: Any) -> bytes:  # noqa: N802
            return b""

    reactor.listenTCP(port, server.Site(Ok()), interface="127.0.0.1")  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]


class _Sender(Protocol):
    """One keep-alive HTTP connection: writes a POST, reads its answer, calls back."""

    def __init__(self, on_answer: Callable[[int], None]) -> None:
        self.on_answer = on_answer
        self.buffer = b""
        self.sent_at = 0.0

    def connectionMade(self) -> None:  # noqa: N802
        self.transport.setTcpNoDelay(True)

    def post(self, request: bytes) -> None:
        self.sent_at = time.perf_counter()
        self.transport.write(request)

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        self.buffer += data
        while True:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self.buffer[:head_end]
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            end = head_end + 4 + length
            if len(self.buffer) < end:
                return
            status = int(head[9:12])
            self.buffer = self.buffer[end:]
            self.on_answer(status)


def form_request(port: int, token: str, sender: str, text: str, message_id: str) -> bytes:
    body = urllib.parse.urlencode({"from": sender, "to": "4930999", "text": text, "id": message_id})
    return (
        f"POST /sms/bench HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"X-Callbackd-Token: {token}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(body)}\r\n\r\n{body}"
    ).encode()


async def connect(
    reactor: Any, port: int, count: int, on_answer: Callable[[int, int], None]
) -> list[_Sender]:
    from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

    senders = []
    for i in range(count):
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        protocol = _Sender(lambda status, i=i: on_answer(i, status))
        senders.append(await connectProtocol(endpoint, protocol))
    return senders


async def accepted_loop(
    bench: Any, sink: Sink, port: int, count: int, times: tuple[float, float]
) -> dict[str, Any]:
    """``I`` from unknown numbers, each after the previous answer; the figures."""
    from twisted.internet import defer

    from bench._harness import ms, percentile
    from bench.bench_chat import Window

    reactor = bench.reactor
    warmup, length = times
    window = Window()
    sent = [0] * count
    round_trips: list[float] = []
    refused: list[int] = []
    done: set[int] = set()
    all_done: defer.Deferred[None] = defer.Deferred()
    senders: list[_Sender] = []

    def begin(i: int) -> None:
        sent[i] += 1
        senders[i].post(form_request(port, sink.token, UNKNOWN.format(i), "I", f"a{i}-{sent[i]}"))

    def answered(i: int, status: int) -> None:
        now = time.perf_counter()
        if status != 200:
            refused.append(status)
        if window.inside(now):
            round_trips.append(now - senders[i].sent_at)
        if window.stopping or len(refused) > 10:
            done.add(i)
            if len(done) == count and not all_done.called:
                all_done.callback(None)
            return
        begin(i)

    senders.extend(await connect(reactor, port, count, answered))
    simulator = bench.processes.simulator.pid
    for i in range(count):
        reactor.callLater(i * warmup / 2 / count, begin, i)
    reactor.callLater(warmup, window.open, simulator)
    reactor.callLater(warmup + length, window.close, simulator)
    all_done.addTimeout(warmup + length + 60, reactor)
    await all_done
    for sender in senders:
        sender.transport.loseConnection()
    if refused:
        raise RuntimeError(f"{len(refused)} requests refused, first with {refused[0]}")
    answers = len(round_trips)
    return {
        "bench": "sms_inbound_per_s",
        "value": round(answers / window.length, 1),
        "unit": "messages/s",
        "senders": count,
        "window_s": round(window.length, 2),
        "messages": answers,
        "cpu_inbound_per_s": round(answers / window.cpu, 1) if window.cpu else None,
        "daemon_cpu_share": round(window.cpu / window.length, 2),
        "round_trip_p50_ms": ms(percentile(round_trips, 0.5)),
        "round_trip_p99_ms": ms(percentile(round_trips, 0.99)),
    }


async def callbacks_loop(
    bench: Any,
    sink: Sink,
    port: int,
    count: int,
    times: tuple[float, float],
    pace: float = 0.0,
    name: str = "sms_callback_originate",
    profile: str | None = None,
) -> list[dict[str, Any]]:
    """``D.<destination>`` from each account's caller ID, hung up once talking, again:
    at once (closed loop), or ``pace`` seconds after the sender's previous message;
    ``profile``: a file for a cProfile of the window."""
    from twisted.internet import defer

    from bench._harness import ms, percentile
    from bench.bench_chat import Window

    reactor = bench.reactor
    engine = bench.daemon.engine
    warmup, length = times
    window = Window()
    accounts = bench.accounts[:count]
    index = {name: i for i, name in enumerate(accounts)}
    sent = [0] * count
    sent_at = [0.0] * count
    session_of: dict[str, int] = {}
    inside: list[tuple[int, float, str]] = []
    done: set[int] = set()
    all_done: defer.Deferred[None] = defer.Deferred()
    senders: list[_Sender] = []
    refused: list[int] = []

    start_callback = engine.start_callback

    def tracked(username: str, *args: Any, **kwargs: Any) -> Any:
        d = start_callback(username, *args, **kwargs)
        i = index.get(username)
        if i is not None:

            def known(session_id: str) -> str:
                session_of[session_id] = i
                if window.inside(sent_at[i]):
                    inside.append((i, sent_at[i], session_id))
                return session_id

            d.addCallback(known)
        return d

    engine.start_callback = tracked

    def begin(i: int) -> None:
        sent[i] += 1
        request = form_request(
            port,
            sink.token,
            KNOWN.format(i),
            f"D.{DESTINATION.format(i % 1000)}",
            f"{name}-{i}-{sent[i]}",
        )
        senders[i].post(request)
        sent_at[i] = senders[i].sent_at

    def answered(i: int, status: int) -> None:
        if status != 200:
            refused.append(status)

    def event(e: Any) -> None:
        i = session_of.get(e.session_id)
        if i is None:
            return
        if e.kind == "talking":
            engine.hangup(e.session_id)
        elif e.kind == "session_ended":
            if window.stopping:
                done.add(i)
                if len(done) == count and not all_done.called:
                    all_done.callback(None)
            elif pace:
                reactor.callLater(max(0.0, sent_at[i] + pace - time.perf_counter()), begin, i)
            else:
                begin(i)

    unsubscribe = engine.subscribe(event)
    senders.extend(await connect(reactor, port, count, answered))
    simulator = bench.processes.simulator.pid
    try:
        for i in range(count):
            reactor.callLater(i * (pace or warmup / 2) / count, begin, i)
        reactor.callLater(warmup, window.open, simulator)
        reactor.callLater(warmup + length, window.close, simulator)
        if profile is not None:
            import cProfile

            profiler = cProfile.Profile()
            reactor.callLater(warmup, profiler.enable)
            reactor.callLater(
                warmup + length, lambda: (profiler.disable(), profiler.dump_stats(profile))
            )
        all_done.addTimeout(warmup + length + 60, reactor)
        await all_done
    finally:
        unsubscribe()
        del engine.start_callback
        for sender in senders:
            sender.transport.loseConnection()
    await bench.drained(30.0)
    if refused:
        raise RuntimeError(f"{len(refused)} requests refused, first with {refused[0]}")
    missing = [sid for *_, sid in inside if sid not in bench.originate_at]
    if not inside or missing:
        raise RuntimeError(f"{len(inside)} callbacks in the window, {len(missing)} not dialled")
    latencies = [bench.originate_at[sid] - at for _, at, sid in inside]
    common = {
        "senders": count,
        "window_s": round(window.length, 2),
        "callbacks": len(inside),
        "pace_s": pace or None,
    }
    return [
        {
            "bench": f"{name}_p50",
            "value": ms(percentile(latencies, 0.5)),
            "unit": "ms",
            **common,
            "callbacks_per_s": round(len(inside) / window.length, 1),
            "daemon_cpu_share": round(window.cpu / window.length, 2),
        },
        {
            "bench": f"{name}_p99",
            "value": ms(percentile(latencies, 0.99)),
            "unit": "ms",
            **common,
            "mean_ms": ms(statistics.fmean(latencies)),
        },
    ]


async def measure(
    reactor: Any,
    bench: Any,
    sink: Sink,
    quick: bool,
    count: int = SENDERS,
    profile: str | None = None,
) -> None:
    """The child's work: accounts with caller IDs, the two closed loops; one JSON line each."""
    await bench.create_accounts(count)
    for i, name in enumerate(bench.accounts):
        await bench.daemon.store.add_caller_id(name, KNOWN.format(i), verified=True)
    port = int(bench.daemon.config.web.listen.split(":")[1])
    times = TIMES[quick]
    print(json.dumps(await accepted_loop(bench, sink, port, count, times)), flush=True)
    await outbound_sent(bench)
    for line in await callbacks_loop(bench, sink, port, count, times, profile=profile):
        print(json.dumps(line), flush=True)
    await outbound_sent(bench)
    paced = await callbacks_loop(bench, sink, port, count, times, PACE, "sms_paced_originate")
    for line in paced:
        print(json.dumps(line), flush=True)
    await outbound_sent(bench)
    await bench.check_billing()


async def outbound_sent(bench: Any, timeout: float = 120.0) -> None:
    """Wait until the outbound queue is empty: a loop's replies and progress, still being
    sent to the sink, would take the next loop's CPU."""
    from twisted.internet import task

    deadline = time.monotonic() + timeout
    while await bench.daemon.store.next_sms_due() is not None:
        if time.monotonic() > deadline:
            raise RuntimeError("outbound SMS still queued")
        await task.deferLater(bench.reactor, 0.2, lambda: None)
    if await bench.daemon.store.dead_sms():
        raise RuntimeError("outbound SMS dead-lettered")


def main(argv: list[str]) -> None:
    """``--child [--quick]``: the measuring process."""
    from bench._harness import child_main

    parser = argparse.ArgumentParser()
    parser.add_argument("--child", action="store_true")
    parser.add_argument("--sink", type=int, metavar="PORT", help="run the outbound sink")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--senders", type=int, default=SENDERS, help="concurrent senders")
    parser.add_argument("--profile", metavar="FILE", help="cProfile the closed callback loop")
    args = parser.parse_args(argv)
    if args.sink:
        sink_main(args.sink)
        return
    sink = Sink()
    try:
        child_main(
            lambda reactor, bench: measure(
                reactor, bench, sink, args.quick, args.senders, args.profile
            ),
            sink.listen,
        )
    finally:
        sink.stop()


if __name__ == "__main__":
    main(sys.argv[1:])
