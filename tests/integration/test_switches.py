"""Several Asterisk servers: the daemon under twistd with [switch:a] and [switch:b], each a
simulated Asterisk as its own process over TCP (``python -m callbackd.simulator``),
driven through the manhole by the real ssh client.

Calls are placed on both switches; switch b restarts (``core restart now``, SIGUSR1):
its session ends as after an AMI reconnect today (SwitchLost, billed up to the
restart), a's goes on, and b serves again once back. A switch whose AMI login is
refused is named in /healthz and the log while the other serves every call.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.daemon import Daemon, ManholeClient, Simulator, http_get

pytestmark = pytest.mark.integration

SECRET_ENV = "CALLBACKD_TEST_SWITCH_SECRET"
SOURCE, DESTINATION = "+4930123456", "+923001234567"


def switches_config(a: Simulator, b: Simulator) -> str:
    return (
        f"\n[switch:a]\nmode = asterisk\nport = {a.port}\nsecret_env = {SECRET_ENV}\n"
        f"\n[switch:b]\nmode = asterisk\nport = {b.port}\nsecret_env = {SECRET_ENV}\n"
    )


@pytest.fixture
def simulator(tmp_path: Path) -> Iterator[Callable[..., Simulator]]:
    """Start a simulator process by name (and secret); all are stopped at the end."""
    started: list[Simulator] = []

    def start(name: str, secret: str = "s3cret") -> Simulator:
        started.append(Simulator(tmp_path / f"sim-{name}", secret=secret).start())
        return started[-1]

    yield start
    for one in started:
        one.stop()


def start_daemon(tmp_path: Path, a: Simulator, b: Simulator, secret: str) -> Daemon:
    daemon = Daemon(tmp_path / "daemon", extra=switches_config(a, b), env={SECRET_ENV: secret})
    return daemon.start()


def wait_for(predicate, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.1)


def callback(manhole: ManholeClient, source: str = SOURCE) -> str:
    """A callback of the demo account alice (once the demo data is there)."""
    deadline = time.monotonic() + 20
    while True:
        ok, value = manhole.call(f"engine.start_callback('alice', {source!r}, {DESTINATION!r})")
        if ok:
            assert isinstance(value, str)
            return value
        assert time.monotonic() < deadline, value
        time.sleep(0.2)


def switch_of(manhole: ManholeClient, sid: str) -> object:
    return manhole.value(f"engine.state_of({sid!r}).switch")


def phase(manhole: ManholeClient, sid: str) -> object:
    return manhole.value(
        f"getattr(getattr(engine.state_of({sid!r}), 'phase', None), 'value', 'gone')"
    )


def test_calls_on_two_switches_and_one_restarting(tmp_path, simulator):
    """Sessions go to a and b; b's AMI connection drops: only b's session is reconciled
    (with b's channels) and goes on; b restarts: its session ends, billed, a's goes on;
    b back serves new sessions again."""
    a, b = simulator("a"), simulator("b")
    daemon = start_daemon(tmp_path, a, b, a.secret)
    manhole = daemon.manhole()
    try:
        wait_for(
            lambda: all(daemon.wait_healthy()["checks"][f"ami:{n}"]["ok"] for n in "ab"),
            "both switches logged in",
        )
        on_a = callback(manhole)
        on_b = callback(manhole, "+4930555555")
        assert (switch_of(manhole, on_a), switch_of(manhole, on_b)) == ("a", "b")
        for sid in (on_a, on_b):
            wait_for(lambda sid=sid: phase(manhole, sid) == "talking", f"{sid} talking")
        # b's channels are on b's simulator only
        live_b = manhole.value(
            "switches['b'].list_channels().addCallback(lambda cs: [c.channel_id for c in cs])"
        )
        assert sorted(live_b) == [f"{on_b}-a1", f"{on_b}-b1"]

        # b's AMI connection drops while the server runs on: on the reconnect b's session
        # (only it) is reconciled with b's channels, and goes on
        mark = daemon.log_mark()
        manhole.execute("root.getServiceNamed('ami:b').protocol.transport.loseConnection()")
        daemon.wait_for_log("switch b lost", since=mark)
        daemon.wait_for_log(r"switch b: 1 sessions reconciled with its 2 channels", since=mark)
        assert "switch a: " not in daemon.log()[mark:]
        assert (phase(manhole, on_a), phase(manhole, on_b)) == ("talking", "talking")

        assert b.process is not None
        os.kill(b.process.pid, signal.SIGUSR1)  # core restart now
        wait_for(lambda: phase(manhole, on_b) == "gone", "b's session ended")
        assert phase(manhole, on_a) == "talking"
        cdrs = manhole.value(
            "store.list_cdrs('alice').addCallback(lambda cs: "
            f"[(c.leg, c.cause, c.cost) for c in cs if c.session_id == {on_b!r}])"
        )
        assert isinstance(cdrs, list)
        [session] = [c for c in cdrs if not c[0]]
        legs = [c for c in cdrs if c[0]]
        # the restart hangs the legs up before its Shutdown: the session ends by the first
        # Hangup, or as SwitchLost when the Shutdown comes first (timing)
        assert session[1] in ("SourceHangup", "DestinationHangup", "SwitchLost"), cdrs
        assert sorted(c[0] for c in legs) == ["destination", "source"]
        assert session[2] == sum(c[2] for c in legs)

        # b is back: reconciled, and takes new sessions again
        wait_for(lambda: manhole.value("switches.usable('b')") is True, "b usable again")
        newer = callback(manhole, "+4930666666")
        assert switch_of(manhole, newer) == "b"
        ok, _ = manhole.call(f"engine.hangup({on_a!r})")
        assert ok
        wait_for(lambda: phase(manhole, on_a) == "gone", "a's session ended")
    finally:
        manhole.close()
        daemon.stop()


def test_a_switch_whose_login_fails_is_reported_and_the_other_serves(tmp_path, simulator):
    """b refuses the login: /healthz stays 200 with ami:b naming the refusal, the log
    names [switch:b], and every new session goes to a."""
    a, b = simulator("a"), simulator("b", secret="other-secret")  # not the daemon's
    daemon = start_daemon(tmp_path, a, b, a.secret)
    manhole = daemon.manhole()
    try:
        health = daemon.wait_healthy()
        wait_for(
            lambda: "login refused" in daemon.wait_healthy()["checks"]["ami:b"]["detail"],
            "ami:b names the refused login",
        )
        status, _ = http_get(daemon.url("/healthz"))
        assert status == 200
        health = daemon.wait_healthy()
        assert health["checks"]["ami:b"]["ok"] is False
        assert health["checks"]["ami:b"]["counted"] is False
        assert health["checks"]["ami"]["detail"].startswith("1 of 2 switches usable")
        assert "refused" in daemon.log() and "[switch:b]" in daemon.log()
        assert b.secret not in daemon.log() and a.secret not in daemon.log()
        sessions = [callback(manhole), callback(manhole, "+4930555555")]
        assert [switch_of(manhole, sid) for sid in sessions] == ["a", "a"]
    finally:
        manhole.close()
        daemon.stop()


def test_two_simulated_switches_inside_the_daemon(tmp_path):
    """[switch:a] and [switch:b] in mode = simulated: each its own simulated Asterisk in
    the daemon; calls on both; b's restart ends only b's session."""
    daemon = Daemon(tmp_path / "daemon", extra="\n[switch:a]\n\n[switch:b]\n").start()
    manhole = daemon.manhole()
    try:
        wait_for(
            lambda: all(daemon.wait_healthy()["checks"][f"ami:{n}"]["ok"] for n in "ab"),
            "both simulated switches logged in",
        )
        ports = manhole.value("[s.port for s in daemon.simulators.values()]")
        assert isinstance(ports, list) and len(set(ports)) == 2
        on_a = callback(manhole)
        on_b = callback(manhole, "+4930555555")
        assert (switch_of(manhole, on_a), switch_of(manhole, on_b)) == ("a", "b")
        for sid in (on_a, on_b):
            wait_for(lambda sid=sid: phase(manhole, sid) == "talking", f"{sid} talking")
        manhole.execute("daemon.simulators['b'].restart()")
        wait_for(lambda: phase(manhole, on_b) == "gone", "b's session ended")
        assert phase(manhole, on_a) == "talking"
        ok, _ = manhole.call(f"engine.hangup({on_a!r})")
        assert ok
        wait_for(lambda: phase(manhole, on_a) == "gone", "a's session ended")
    finally:
        manhole.close()
        daemon.stop()
