"""Run the real daemon under twistd for integration tests, and talk to it.

``Daemon`` writes a private config (free loopback ports, its own state
directory, the simulated Asterisk), starts ``twistd --nodaemon callbackd`` as a
child process, and waits until ``/healthz`` answers. ``ManholeClient`` logs into
its manhole with the real OpenSSH client and evaluates Python expressions.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.procs import free_port

ROOT = Path(__file__).resolve().parent.parent.parent
TWISTD = [str(Path(sys.executable).parent / "twistd")]


def make_ssh_key(directory: Path, name: str = "manhole_key") -> Path:
    """A fresh ed25519 key pair made by ssh-keygen; returns the private key path."""
    key = directory / name
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "test", "-f", str(key)],
        check=True,
    )
    return key


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """GET ``url``; the status and body, also for error statuses."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@dataclass
class Daemon:
    """The daemon under twistd, with its own config and state directory."""

    workdir: Path
    redis_port: int | None = None  # external redis on this port; None = embedded
    extra: str = ""  # more INI text appended to the config
    time_scale: float = 0.05
    env: dict[str, str] = field(default_factory=dict)
    python_path: str = str(ROOT)

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.web_port = free_port()
        self.manhole_port = free_port()
        self.key = make_ssh_key(self.workdir)
        shutil.copy(self.key.with_suffix(".pub"), self.workdir / "authorized_keys")
        self.config_path = self.workdir / "callbackd.ini"
        self.log_path = self.workdir / "twistd.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.write_config()

    def write_config(self) -> None:
        rates = ROOT / "etc" / "rates"
        redis = (
            f"[redis]\nmode = external\nhost = 127.0.0.1\nport = {self.redis_port}\ntimeout = 2\n"
            if self.redis_port
            else "[redis]\nmode = embedded\n"
        )
        self.config_path.write_text(
            f"""
[daemon]
node_id = t1
state_dir = state
demo_data = yes

{redis}
[ami]
mode = simulated
ping_interval = 2
ping_timeout = 2

[simulator]
time_scale = {self.time_scale}

[web]
listen = tcp:{self.web_port}:interface=127.0.0.1

[manhole]
listen = tcp:{self.manhole_port}:interface=127.0.0.1
authorized_keys = authorized_keys

[billing]
tariff = {rates / "sell.csv"}

[provider:PROXICOM]
dial = PJSIP/{{number}}@proxicom
rates = {rates / "proxicom.csv"}

[provider:PAKLINE]
dial = PJSIP/{{number}}@pakline
rates = {rates / "pakline.csv"}

[provider:MKS]
dial = PJSIP/{{number}}@mks
rates = {rates / "mks.csv"}
{self.extra}
"""
        )

    def command(self) -> list[str]:
        return [
            *TWISTD,
            "--nodaemon",
            "--pidfile=",
            f"--logfile={self.log_path}",
            "callbackd",
            "-c",
            str(self.config_path),
        ]

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = self.python_path
        env.update(self.env)
        return env

    def start(self, wait: bool = True, timeout: float = 30.0) -> Daemon:
        self.process = subprocess.Popen(
            self.command(),
            cwd=self.workdir,
            env=self.environment(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        if wait:
            self.wait_until_serving(timeout)
        return self

    def wait_until_serving(self, timeout: float = 30.0) -> None:
        """Block until /healthz answers (whatever it says)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(
                    f"daemon exited with {self.process.returncode}:\n{self.output()}"
                )
            try:
                http_get(self.url("/healthz"), timeout=1)
                return
            except OSError:
                time.sleep(0.1)
        raise TimeoutError(f"daemon did not serve /healthz in {timeout}s:\n{self.log()}")

    def wait_healthy(self, healthy: bool = True, timeout: float = 30.0) -> dict:
        """Block until /healthz says ok (or, with healthy=False, says unhealthy)."""
        deadline = time.monotonic() + timeout
        last: dict = {}
        while time.monotonic() < deadline:
            try:
                status, body = http_get(self.url("/healthz"), timeout=2)
                last = json.loads(body)
                if (status == 200) == healthy:
                    return last
            except OSError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"healthz never became {'ok' if healthy else 'unhealthy'}: {last}")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.web_port}{path}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def output(self) -> str:
        if self.process is None or self.process.stdout is None:
            return ""
        if self.process.poll() is None:
            return ""
        return self.process.stdout.read().decode(errors="replace")

    def kill(self) -> None:
        """kill -9: no clean shutdown at all."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait; the exit status."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def manhole(self) -> ManholeClient:
        return ManholeClient(self.manhole_port, self.key)


_ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\r")


class ManholeClient:
    """The real OpenSSH client logged into the manhole, evaluating expressions."""

    def __init__(self, port: int, key: Path, user: str = "admin") -> None:
        self.process = subprocess.Popen(
            [
                "ssh",
                "-tt",
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "LogLevel=ERROR",
                "-i",
                str(key),
                "-p",
                str(port),
                f"{user}@127.0.0.1",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self._buffer = b""
        self._counter = 0

    def _read_until(self, pattern: re.Pattern[bytes], timeout: float) -> re.Match[bytes]:
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        deadline = time.monotonic() + timeout
        while True:
            clean = _ANSI.sub(b"", self._buffer)
            match = pattern.search(clean)
            if match:
                return match
            left = deadline - time.monotonic()
            if left <= 0 or self.process.poll() is not None:
                raise TimeoutError(f"manhole output so far: {clean[-2000:]!r}")
            ready, _, _ = select.select([fd], [], [], min(left, 0.5))
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    continue
                self._buffer += chunk

    def evaluate(self, expression: str, timeout: float = 15.0) -> str:
        """Evaluate ``expression`` in the manhole and return ``repr`` of the result."""
        self._counter += 1
        tag = f"R{self._counter}X"
        # The echo of this line shows '@@' + 'R1X', the output @@R1X: the marker
        # is found only in what the manhole printed, never in the echo.
        line = f"print('@@' + '{tag}', repr({expression}), '{tag}' + '@@')\n"
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode())
        self.process.stdin.flush()
        match = self._read_until(
            re.compile(rb"@@" + tag.encode() + rb" (.*?) " + tag.encode() + rb"@@"), timeout
        )
        return match.group(1).decode(errors="replace")

    def execute(self, statement: str) -> None:
        """Run a statement (an assignment, say) and wait until the manhole ran it."""
        assert self.process.stdin is not None
        self.process.stdin.write(statement.encode() + b"\n")
        self.process.stdin.flush()
        self.evaluate("None")

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)
