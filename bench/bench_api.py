"""The REST API: ``POST /api/v1/sessions`` per second, and SSE delivery to 1,000 streams.

The daemon runs as in ``bench_setup`` (:mod:`bench._harness`: ``create_daemon`` from a
temporary INI, a private ``redis-server``, the simulated Asterisk in its own process),
here with the callee rule ``*=busy``: every source leg is busy, so each session ends
at once after its ``Originate`` and the daemon's load is the API's and the engine's
set-up, not thousands of calls in flight. The HTTP clients run in a *separate process*
(``python -m bench.bench_api --client ...``: raw sockets multiplexed with
``selectors``), so their CPU is not the daemon's.

* **creates** (``api_creates_per_s``): ``CONNECTIONS`` keep-alive HTTP/1.1
  connections, each for an account of its own with its own API key, each in a closed
  loop: ``POST /api/v1/sessions`` with a JSON body, read the 201, send the next. After
  a warm-up the answers inside a fixed window are counted: creates/s = answers /
  window; ``api_creates_per_cpu_s`` = answers / the daemon process's CPU seconds in the
  window (the API, the engine's validation and set-up, the Originates, the session's
  end and its CDRs: everything the daemon does for a create). ``api_create_p50/p99``:
  each request's round trip as the client sees it.
* **SSE** (``sse_delivery_p50/p99``): ``STREAMS`` (1,000) concurrent event streams, ten
  on each of 100 sessions, opened over HTTP/1.0 on a bare resource that serves
  :func:`callbackd.web.sse.stream_session_events` (the API's ownership check needs
  real sessions of real accounts, which is not what is measured). The engine then
  publishes (``SessionManager._publish``, the path of every session event) one event
  per session per round, ``ROUNDS`` rounds, the sessions' events spread over the round
  (one per reactor turn at most; the rate reached is reported as ``events_per_s`` and
  ``frames_per_s``); each event carries the
  wall-clock time of its publication, and the client process takes the time each frame
  is received: the latency from the engine publishing to the bytes arriving, over every
  (event, stream) pair. Both processes read the same clock.

``python -m bench.bench_api --child [--quick] [--profile FILE]`` runs the measuring
process alone; ``--profile`` writes a cProfile of the daemon over the create window.
"""

from __future__ import annotations

import argparse
import json
import selectors
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

#: keep-alive connections (one account each) of the create loop
CONNECTIONS = 16
#: concurrent SSE streams, and the sessions they are spread over
STREAMS = 1000
SESSIONS = 100
#: (warm-up seconds, window seconds) of the create loop, quick and full
TIMES = {True: (1.0, 3.0), False: (2.0, 10.0)}
#: publication rounds of the SSE bench (one event per session each), quick and full
ROUNDS = {True: 20, False: 100}
ROUND_GAP = 0.02


def run(quick: bool) -> Iterator[dict[str, Any]]:
    """Run the child process and pass its result lines on."""
    from bench._harness import run_child

    args = ["--quick"] if quick else []
    yield from run_child("bench.bench_api", args, timeout=300)


# -- the client process ------------------------------------------------------------------


def _post(key: str, index: int) -> bytes:
    body = json.dumps(
        {"source": f"+1212555{index % 10000:04d}", "destination": "+13105550100"}
    ).encode()
    return (
        b"POST /api/v1/sessions HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + key.encode() + b"\r\nContent-Length: %d\r\n\r\n" % len(body)
    ) + body


def _complete(buffer: bytes) -> int:
    """The length of the first complete HTTP response in ``buffer`` (0: not yet)."""
    head, sep, _ = buffer.partition(b"\r\n\r\n")
    if not sep:
        return 0
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    total = len(head) + 4 + length
    return total if len(buffer) >= total else 0


def client_creates(port: int, keys: list[str], warmup: float, window: float) -> dict[str, Any]:
    """The closed create loops; what was answered inside the window."""
    selector = selectors.DefaultSelector()
    conns = []
    for i, key in enumerate(keys):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        state = {"sock": sock, "key": key, "buffer": b"", "sent": 0.0, "n": i * 1000}
        selector.register(sock, selectors.EVENT_READ, state)
        conns.append(state)
    for state in conns:
        state["sent"] = time.perf_counter()
        state["sock"].sendall(_post(state["key"], state["n"]))
    began = time.perf_counter()
    start, end = began + warmup, began + warmup + window
    answered, latencies, statuses = 0, [], {}
    while time.perf_counter() < end:
        for selected, _ in selector.select(timeout=1):
            state = selected.data
            data = state["sock"].recv(65536)
            if not data:
                raise RuntimeError("the daemon closed a connection")
            state["buffer"] += data
            size = _complete(state["buffer"])
            if not size:
                continue
            now = time.perf_counter()
            status = int(state["buffer"][9:12])
            statuses[status] = statuses.get(status, 0) + 1
            state["buffer"] = state["buffer"][size:]
            if start <= now < end:
                answered += 1
                latencies.append(now - state["sent"])
            state["n"] += 1
            state["sent"] = now
            state["sock"].sendall(_post(state["key"], state["n"]))
    for state in conns:
        state["sock"].close()
    return {"answered": answered, "window": window, "latencies": latencies, "statuses": statuses}


def client_streams(port: int, sessions: list[str], per_session: int, expected: int) -> dict:
    """Open the streams, say so on stdout, then time every frame until ``expected`` came."""
    selector = selectors.DefaultSelector()
    for session_id in sessions:
        for _ in range(per_session):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(f"GET /{session_id} HTTP/1.0\r\n\r\n".encode())
            selector.register(sock, selectors.EVENT_READ, [b""])
    print(json.dumps({"ready": True}), flush=True)
    latencies: list[float] = []
    deadline = time.monotonic() + 120
    while len(latencies) < expected and time.monotonic() < deadline:
        for selected, _ in selector.select(timeout=1):
            data = selected.fileobj.recv(65536)  # type: ignore[union-attr]
            now = time.time()
            if not data:
                selector.unregister(selected.fileobj)
                continue
            buffer = selected.data[0] + data
            *frames, selected.data[0] = buffer.split(b"\n\n")
            for frame in frames:
                for line in frame.split(b"\n"):
                    if line.startswith(b"data: "):
                        at = json.loads(line[6:])["at"]
                        if at > 0:
                            latencies.append(now - at)
    for key in list(selector.get_map().values()):
        key.fileobj.close()  # type: ignore[union-attr]
    return {"latencies": latencies}


# -- the daemon process ------------------------------------------------------------------


async def _creates(
    reactor: Any, bench: Any, quick: bool, profile: str | None = None
) -> list[dict[str, Any]]:
    from bench._harness import ms, percentile

    await bench.create_accounts(CONNECTIONS, max_sessions=100)
    keys = [(await bench.daemon.store.create_api_key(name, "bench"))[1] for name in bench.accounts]
    warmup, window = TIMES[quick]
    client = subprocess.Popen(
        [sys.executable, "-m", "bench.bench_api", "--client-creates", str(_web_port(bench))]
        + ["--warmup", str(warmup), "--window", str(window), *keys],
        stdout=subprocess.PIPE,
        text=True,
    )
    from twisted.internet import task

    await task.deferLater(reactor, warmup, lambda: None)
    profiler = None
    if profile is not None:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    cpu = time.process_time()
    await task.deferLater(reactor, window, lambda: None)
    cpu = time.process_time() - cpu
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(profile)
    out, _ = await _communicate(reactor, client)
    result = json.loads(out.strip().splitlines()[-1])
    if set(result["statuses"]) != {"201"}:
        raise RuntimeError(f"not every create was answered 201: {result['statuses']}")
    rate = result["answered"] / result["window"]
    lat = result["latencies"]
    base = {"connections": CONNECTIONS, "window_s": window}
    return [
        {"bench": "api_creates_per_s", "value": round(rate, 1), "unit": "creates/s", **base},
        {
            "bench": "api_creates_per_cpu_s",
            "value": round(result["answered"] / cpu, 1) if cpu else 0.0,
            "unit": "creates/CPU-s",
            **base,
        },
        {"bench": "api_create_p50", "value": ms(percentile(lat, 0.5)), "unit": "ms", **base},
        {"bench": "api_create_p99", "value": ms(percentile(lat, 0.99)), "unit": "ms", **base},
    ]


async def _streams(reactor: Any, bench: Any, quick: bool) -> list[dict[str, Any]]:
    from twisted.internet import task
    from twisted.web import resource, server

    from bench._harness import ms, percentile
    from callbackd.core.session import SessionEvent
    from callbackd.web.sse import hub_of, stream_session_events

    engine = bench.daemon.engine
    hub = hub_of(engine)

    class Streams(resource.Resource):
        isLeaf = True

        def render_GET(self, request: Any) -> Any:
            return stream_session_events(request, engine, request.postpath[0].decode(), None)

    sessions = [f"bench{i:04d}" for i in range(SESSIONS)]
    for sid in sessions:  # the streams' sessions exist for the hub (a first event each)
        hub.publish(SessionEvent("session_started", sid, 1, 0.0))
    port = reactor.listenTCP(0, server.Site(Streams()), interface="127.0.0.1", backlog=1024)
    rounds = ROUNDS[quick]
    per_session = STREAMS // SESSIONS
    expected = rounds * SESSIONS * per_session
    client = subprocess.Popen(
        [sys.executable, "-m", "bench.bench_api", "--client-streams", str(port.getHost().port)]
        + ["--per-session", str(per_session), "--expected", str(expected), *sessions],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = await _readline(reactor, client)
        assert json.loads(line)["ready"]
        while hub.stream_count < STREAMS:
            await task.deferLater(reactor, 0.05, lambda: None)
        began = time.perf_counter()
        for n in range(rounds):
            for sid in sessions:
                engine._publish(SessionEvent("leg_ringing", sid, n + 2, time.time(), leg="source"))
                await task.deferLater(reactor, ROUND_GAP / SESSIONS, lambda: None)
        published = time.perf_counter() - began
        out, _ = await _communicate(reactor, client)
    finally:
        await port.stopListening()
    lat = json.loads(out.strip().splitlines()[-1])["latencies"]
    if len(lat) != expected:
        raise RuntimeError(f"{len(lat)} of {expected} frames arrived")
    base = {
        "streams": STREAMS,
        "sessions": SESSIONS,
        "events_per_s": round(rounds * SESSIONS / published),
        "frames_per_s": round(expected / published),
    }
    return [
        {"bench": "sse_delivery_p50", "value": ms(percentile(lat, 0.5)), "unit": "ms", **base},
        {"bench": "sse_delivery_p99", "value": ms(percentile(lat, 0.99)), "unit": "ms", **base},
    ]


def _web_port(bench: Any) -> int:
    listen = bench.daemon.config.web.listen
    return int(listen.split(":")[1])


async def _readline(reactor: Any, process: subprocess.Popen[str]) -> str:
    """A line of the client's stdout, without blocking the reactor (a thread reads it)."""
    from twisted.internet import threads

    assert process.stdout is not None
    return str(await threads.deferToThread(process.stdout.readline))


async def _communicate(reactor: Any, process: subprocess.Popen[str]) -> tuple[str, str]:
    from twisted.internet import threads

    out, err = await threads.deferToThread(process.communicate, None, 180)
    if process.returncode != 0:
        raise RuntimeError(f"the client exited {process.returncode}")
    return out, err or ""


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", action="store_true")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--client-creates", type=int, metavar="PORT")
    parser.add_argument("--client-streams", type=int, metavar="PORT")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--window", type=float, default=3.0)
    parser.add_argument("--per-session", type=int, default=10)
    parser.add_argument("--expected", type=int, default=0)
    parser.add_argument("--profile", metavar="FILE", help="cProfile the create window")
    parser.add_argument("rest", nargs="*")
    args = parser.parse_args(argv)
    if args.client_creates:
        result = client_creates(args.client_creates, args.rest, args.warmup, args.window)
        print(json.dumps(result))
        return
    if args.client_streams:
        result = client_streams(args.client_streams, args.rest, args.per_session, args.expected)
        print(json.dumps(result))
        return

    import bench._harness as harness

    # every source is busy: each session ends right after its Originate
    harness.SIMULATOR_RULES = ("*=busy",)

    async def body(reactor: Any, bench: Any) -> None:
        for result in await _creates(reactor, bench, args.quick, args.profile):
            print(json.dumps(result), flush=True)
        for result in await _streams(reactor, bench, args.quick):
            print(json.dumps(result), flush=True)

    harness.child_main(body)


if __name__ == "__main__":
    main(sys.argv[1:])
