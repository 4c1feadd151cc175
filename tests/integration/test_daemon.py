"""The daemon itself under twistd: start, health, metrics, manhole, bad config, Redis outages."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import zipfile

import pytest

from callbackd.i18n import LANGUAGES
from tests.integration.daemon import ROOT, TWISTD, Daemon, http_get
from tests.procs import RedisServer, free_port

pytestmark = pytest.mark.integration


@pytest.fixture
def daemon(tmp_path, redis_server):
    """A running daemon on an external real redis-server."""
    redis_server.flush()
    d = Daemon(tmp_path / "d", redis_port=redis_server.port).start()
    yield d
    d.stop()


def test_healthz_answers_ok(daemon):
    """/healthz reports Redis and AMI up, with 200."""
    body = daemon.wait_healthy()
    assert body["status"] == "ok"
    assert body["checks"]["redis"]["ok"] is True
    assert body["checks"]["ami"]["ok"] is True


def test_metrics_are_served(daemon):
    """/metrics serves Prometheus text with the daemon's own metrics."""
    daemon.wait_healthy()
    status, body = http_get(daemon.url("/metrics"))
    assert status == 200
    assert b"callbackd_ami_connected 1.0" in body


def test_manhole_evaluates_an_expression(daemon):
    """The real ssh client logs into the manhole with the configured key and evaluates code."""
    daemon.wait_healthy()
    manhole = daemon.manhole()
    try:
        assert manhole.evaluate("6 * 7") == "42"
        assert manhole.evaluate("sorted(s.name for s in root)")[:1] == "["
        assert "'store'" in manhole.evaluate("sorted(s.name for s in root)")
    finally:
        manhole.close()


def test_manhole_refuses_an_unknown_key(daemon, tmp_path):
    """A key that is not in authorized_keys does not get in."""
    from tests.integration.daemon import ManholeClient, make_ssh_key

    daemon.wait_healthy()
    stranger = ManholeClient(daemon.manhole_port, make_ssh_key(tmp_path, "stranger"))
    try:
        stranger.process.wait(15)
        assert stranger.process.returncode == 255
    finally:
        stranger.close()


def test_sigterm_stops_cleanly(daemon):
    """SIGTERM stops every service, then twistd ends by that signal, as twistd does."""
    daemon.wait_healthy()
    assert daemon.stop() == -signal.SIGTERM
    log = daemon.log()
    assert "all services running" in log
    assert re.search(r"garbage collector: [1-9]\d* objects frozen, thresholds \(20000, ", log)
    assert "Main loop terminated." in log
    assert "Traceback" not in log


def test_a_clean_stop_logs_no_warning(daemon):
    """SIGTERM after a healthy start logs no warning or error (no "lost" change feed or switch)."""
    daemon.wait_healthy()
    mark = daemon.log_mark()
    daemon.stop()
    stopping = daemon.log()[mark:]
    assert "Main loop terminated." in stopping
    assert re.findall(r"^.*#(?:warn|error|critical)\].*$", stopping, re.MULTILINE) == []


def test_five_config_mistakes_are_named_before_forking(tmp_path):
    """twistd exits non-zero naming all five mistakes of a bad config, one line each."""
    bad = tmp_path / "bad.ini"
    bad.write_text(
        "[daemon]\nnode_id = no good\nflavour = x\n[redis]\nport = lots\n[ami]\nmode = pbx\n"
        "[bogus]\n"
    )
    result = subprocess.run(
        [*TWISTD, "--nodaemon", "--pidfile=", "callbackd", "-c", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode != 0
    text = result.stdout + result.stderr
    for expected in (
        "[daemon] node_id:",
        "[daemon] flavour: unknown key",
        "[redis] port: expected an integer",
        "[ami] mode: must be one of",
        "[bogus]: unknown section",
    ):
        assert expected in text
    assert "5 problem(s)" in text


def test_help_documents_the_options():
    """twistd callbackd --help describes -c and --check."""
    result = subprocess.run(
        [*TWISTD, "callbackd", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0
    assert "--config=" in result.stdout
    assert "--check" in result.stdout


def test_a_child_that_cannot_start_fails_the_daemon(tmp_path, redis_server):
    """A web port already in use makes twistd exit non-zero, naming the cause."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        d = Daemon(tmp_path / "d", redis_port=redis_server.port)
        d.web_port = s.getsockname()[1]
        d.write_config()
        d.start(wait=False)
        assert d.process is not None
        d.process.wait(60)
    assert d.process.returncode != 0
    assert "Address already in use" in d.output() + d.log()


def test_redis_down_at_start_then_up(tmp_path):
    """With Redis down the daemon starts unhealthy, and turns healthy when Redis appears."""
    port = free_port()
    d = Daemon(tmp_path / "d", redis_port=port).start()
    redis = None
    try:
        body = d.wait_healthy(healthy=False)
        assert body["checks"]["redis"]["ok"] is False
        redis = RedisServer.start_on(tmp_path / "redis", port)
        d.wait_healthy(timeout=60)
    finally:
        d.stop()
        if redis:
            redis.stop()


def test_redis_going_away_is_survived(tmp_path):
    """Redis vanishing makes the daemon unhealthy, not dead; it recovers when Redis returns."""
    redis = RedisServer.start(tmp_path / "redis")
    d = Daemon(tmp_path / "d", redis_port=redis.port).start()
    try:
        d.wait_healthy()
        redis.stop()
        d.wait_healthy(healthy=False)
        assert d.process is not None and d.process.poll() is None
        redis = RedisServer.start_on(tmp_path / "redis", redis.port)
        d.wait_healthy(timeout=60)
    finally:
        d.stop()
        redis.stop()


def test_embedded_defaults(tmp_path):
    """With no external Redis the daemon runs its own redis-server, and restarts it."""
    d = Daemon(tmp_path / "d").start()
    try:
        body = d.wait_healthy()
        assert body["status"] == "ok"
        assert (d.workdir / "state" / "redis").is_dir()
        # the private redis-server dies: the daemon starts it again and is healthy again
        pid_file = d.workdir / "state" / "redis" / "redis.pid"
        first = int(pid_file.read_text())
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while not pid_file.exists() or pid_file.read_text().strip() in ("", str(first)):
            assert time.monotonic() < deadline, "no new redis-server"
            time.sleep(0.1)
        d.wait_healthy()
        assert "embedded redis-server exited unexpectedly" in d.log()
    finally:
        assert d.stop() == -signal.SIGTERM


def test_runs_from_a_packaged_wheel(tmp_path, redis_server):
    """From a normal (non-editable) install, outside the checkout, twistd finds the plugin."""
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(ROOT)],
        check=True,
        timeout=300,
        capture_output=True,
    )
    (wheel,) = wheels.glob("callbackd-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "twisted/plugins/callbackd_plugin.py" in names
    # the message catalogues, compiled by the build (never committed)
    for language in LANGUAGES:
        assert f"callbackd/i18n/locale/{language}/LC_MESSAGES/callbackd.mo" in names
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        timeout=300,
        capture_output=True,
    )
    redis_server.flush()
    d = Daemon(tmp_path / "d", redis_port=redis_server.port, python_path=str(target))
    d.start()
    try:
        body = d.wait_healthy()
        assert body["status"] == "ok"
        status, _ = http_get(d.url("/metrics"))
        assert status == 200
        manhole = d.manhole()
        try:
            location = manhole.evaluate("__import__('callbackd').__file__")
        finally:
            manhole.close()
        assert str(target) in location
    finally:
        d.stop()


def test_check_flag_validates_without_running(tmp_path):
    """--check loads the configuration and exits 0 without starting anything."""
    cfg = tmp_path / "ok.ini"
    cfg.write_text("[daemon]\nnode_id = x1\n")
    result = subprocess.run(
        [*TWISTD, "--nodaemon", "--pidfile=", "callbackd", "-c", str(cfg), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok" in result.stdout


def _run_twistd(cfg, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TWISTD, "--nodaemon", "--pidfile=", "callbackd", "-c", str(cfg), *extra],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )


@pytest.mark.parametrize("extra", [["--check"], []])
def test_a_bad_rate_deck_is_refused_with_every_row_named(tmp_path, extra):
    """--check, and a start without it, name the file and line of each bad row; no traceback."""
    deck = tmp_path / "sell.csv"
    deck.write_text("49,0.02\n1x,0.01\n44,0.01\n33,abc\n")
    cfg = tmp_path / "bad.ini"
    cfg.write_text(
        f"[daemon]\nnode_id = x1\nstate_dir = {tmp_path}\n[billing]\ntariff = sell.csv\n"
    )
    result = _run_twistd(cfg, *extra)
    text = result.stdout + result.stderr
    assert result.returncode != 0, text
    assert f"{deck}: line 2: bad prefix '1x'" in text
    assert f"{deck}: line 4: price_per_minute: 'abc'" in text
    assert "2 problem(s)" in text
    assert "Traceback" not in text and ": ok" not in text


def test_check_refuses_a_malformed_endpoint(tmp_path):
    """--check parses every strports endpoint: [web] listen = notanendpoint::: is named."""
    cfg = tmp_path / "bad.ini"
    cfg.write_text("[daemon]\nnode_id = x1\n[web]\nlisten = notanendpoint:::\n")
    result = _run_twistd(cfg, "--check")
    text = result.stdout + result.stderr
    assert result.returncode != 0, text
    assert "[web] listen: 'notanendpoint:::' is not a strports endpoint" in text
    assert "Traceback" not in text
