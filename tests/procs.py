"""Real processes for tests: free loopback ports, a private redis-server, Redis Sentinels."""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

#: Ports handed out are drawn below Linux's ephemeral range (32768-60999), so an outgoing
#: connection's local port never takes one between the choice and the server's bind.
PORT_RANGE = range(20000, 32768)
_handed_out: set[int] = set()
_pick = random.Random()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now and this run has not handed out.

    Asking the kernel for port 0 twice can give the same port twice once the first socket
    is closed (a CI run had Kannel's admin and smsbox ports equal), so each port is given
    once per run, and drawn outside the ephemeral range.
    """
    while True:
        port = _pick.choice(PORT_RANGE)
        if port in _handed_out:
            continue
        _handed_out.add(port)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port


def require_installed(available: bool, what: str, install: str) -> None:
    """Skip a test when ``what`` (Debian packages) is not installed, except in CI
    (``CI=true``), where scripts/bootstrap.sh installs it and it must run."""
    if available:
        return
    if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
        pytest.fail(f"{what} is not installed (scripts/bootstrap.sh installs it)")
    pytest.skip(f"{what} is not installed (apt-get install {install})")


def stop_process(process: subprocess.Popen, timeout: float = 10.0) -> int:
    """SIGTERM ``process``, wait up to ``timeout`` s, kill it if it lingers; its exit status."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def wait_for_port(port: int, timeout: float = 10.0, host: str = "127.0.0.1") -> None:
    """Block until something accepts connections on ``port``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s") from None
            time.sleep(0.05)


@dataclass
class RedisServer:
    """A private redis-server on a loopback port with its own data directory."""

    port: int
    data_dir: Path
    process: subprocess.Popen

    @classmethod
    def start(
        cls, data_dir: Path, password: str | None = None, extra: Sequence[str] = ()
    ) -> RedisServer:
        """Start one on a free port; ``extra``: more redis-server options."""
        return cls.start_on(data_dir, free_port(), password, extra)

    @classmethod
    def start_on(
        cls, data_dir: Path, port: int, password: str | None = None, extra: Sequence[str] = ()
    ) -> RedisServer:
        """Start one on the given port (to bring a "crashed" redis back where it was)."""
        binary = _redis_server()
        data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(data_dir),
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
            "--logfile",
            str(data_dir / "redis.log"),
        ]
        if password:
            args += ["--requirepass", password]
        args += list(extra)
        return cls(port, data_dir, _start_listening(args, port))

    def stop(self) -> None:
        stop_process(self.process)

    def flush(self) -> None:
        """Empty every database (between tests)."""
        with socket.create_connection(("127.0.0.1", self.port)) as s:
            s.sendall(b"FLUSHALL\r\n")
            s.recv(100)

    def kill(self) -> None:
        """SIGKILL it (a crash: no shutdown, no goodbye to replicas or sentinels)."""
        self.process.kill()
        self.process.wait()

    def command(self, *args: Any) -> Any:
        """One command over a fresh connection; its reply (see :func:`redis_command`)."""
        return redis_command(self.port, *args)


def _redis_server() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (the test command installs it)")
    return binary


def _start_listening(args: list[str], port: int) -> subprocess.Popen:
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port)
    except TimeoutError:
        proc.kill()
        raise
    return proc


def redis_command(port: int, *args: Any, timeout: float = 5.0) -> Any:
    """Send one command to the Redis (or Sentinel) on loopback ``port``; its decoded reply.

    Blocking, for fixtures and checks outside the reactor. An error reply is returned
    as a ``hiredis.ReplyError`` instance, not raised.
    """
    import hiredis

    from callbackd.store.client import encode_command

    reader = hiredis.Reader(encoding="utf-8")
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(encode_command(*args))
        while True:
            data = s.recv(65536)
            if not data:
                raise ConnectionError(f"127.0.0.1:{port} closed the connection")
            reader.feed(data)
            reply = reader.gets()
            if reply is not False:
                return reply


@dataclass
class SentinelServer:
    """A private Redis Sentinel (``redis-server --sentinel``) on a loopback port.

    It monitors the primary at ``master_port`` as ``name`` with ``quorum``, judging
    it down after ``down_after_ms`` without an answer; its config file (which
    Sentinel rewrites) lives in its own data directory.
    """

    port: int
    data_dir: Path
    process: subprocess.Popen

    @classmethod
    def start(
        cls,
        data_dir: Path,
        master_port: int,
        name: str,
        *,
        quorum: int = 2,
        down_after_ms: int = 500,
        failover_timeout_ms: int = 3000,
    ) -> SentinelServer:
        """Start one on a free port."""
        data_dir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        conf = data_dir / "sentinel.conf"
        conf.write_text(
            f"port {port}\n"
            "bind 127.0.0.1\n"
            f"dir {data_dir}\n"
            f"logfile {data_dir / 'sentinel.log'}\n"
            "daemonize no\n"
            f"sentinel monitor {name} 127.0.0.1 {master_port} {quorum}\n"
            f"sentinel down-after-milliseconds {name} {down_after_ms}\n"
            f"sentinel failover-timeout {name} {failover_timeout_ms}\n"
            f"sentinel parallel-syncs {name} 1\n",
            encoding="utf-8",
        )
        return cls(
            port, data_dir, _start_listening([_redis_server(), str(conf), "--sentinel"], port)
        )

    def stop(self) -> None:
        stop_process(self.process)

    def command(self, *args: Any) -> Any:
        """One command to this sentinel; its reply."""
        return redis_command(self.port, *args)
