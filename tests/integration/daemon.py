"""Run the real daemon under twistd for integration tests, and talk to it.

``Daemon`` writes a private config (free loopback ports, its own state
directory, the simulated Asterisk), starts ``twistd --nodaemon callbackd`` as a
child process, and waits until ``/healthz`` answers. With ``ami_port`` set it runs
in ``[ami] mode = asterisk`` against an AMI server there (the secret passed in its
environment), typically a :class:`Simulator`: ``python -m callbackd.simulator`` as a
separate process, so that killing the daemon leaves the calls up as a real Asterisk
would. ``ManholeClient`` logs into its manhole with the real OpenSSH client and
evaluates Python expressions; :func:`admin` runs the admin CLI on the daemon's config;
:func:`redis_command` talks to Redis directly.
"""

from __future__ import annotations

import ast
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

from tests.procs import free_port, stop_process

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
    ami_port: int | None = None  # an AMI server (asterisk mode) on this port; None = built in
    ami_username: str = "callbackd"
    ami_secret: str = "s3cret"
    node_id: str = "t1"

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
        if self.ami_port:
            ami = (
                f"[ami]\nmode = asterisk\nhost = 127.0.0.1\nport = {self.ami_port}\n"
                f"username = {self.ami_username}\nsecret_env = {AMI_SECRET_ENV}\n"
            )
        else:
            ami = "[ami]\nmode = simulated\n"
        self.config_path.write_text(
            f"""
[daemon]
node_id = {self.node_id}
state_dir = state
demo_data = yes

{redis}
{ami}ping_interval = 5
ping_timeout = 5

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
        if self.ami_port:
            env[AMI_SECRET_ENV] = self.ami_secret
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

    def log_mark(self) -> int:
        """The log's length now: pass it to :meth:`wait_for_log` to see only newer lines."""
        return len(self.log())

    def wait_for_log(
        self, pattern: str | re.Pattern[str], timeout: float = 20.0, since: int = 0
    ) -> re.Match[str]:
        """Block until ``pattern`` (a regex) matches the log after offset ``since``."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        while True:
            match = regex.search(self.log(), since)
            if match:
                return match
            if time.monotonic() > deadline:
                raise TimeoutError(f"{regex.pattern!r} not in the log:\n{self.log()[since:]}")
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"daemon exited waiting for {regex.pattern!r}:\n{self.log()}")
            time.sleep(0.05)

    def admin(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``python -m callbackd.admin -c <this config> ARGS`` as a subprocess."""
        return admin(self.config_path, *args, env=self.environment(), check=check)

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
        return stop_process(self.process, timeout)

    def manhole(self) -> ManholeClient:
        return ManholeClient(self.manhole_port, self.key)


AMI_SECRET_ENV = "CALLBACKD_TEST_AMI_SECRET"


def admin(
    config: Path, *args: str, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run the admin CLI on ``config``; raises with its output if it fails and ``check``."""
    result = subprocess.run(
        [sys.executable, "-m", "callbackd.admin", "-c", str(config), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=config.parent,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"callbackd-admin {' '.join(args)} exited {result.returncode}:\n"
            f"{result.stdout}{result.stderr}"
        )
    return result


def redis_command(port: int, *args: str, timeout: float = 5.0) -> object:
    """One Redis command over RESP; the reply (bytes, int, list or None)."""
    import socket

    request = f"*{len(args)}\r\n".encode()
    for arg in args:
        data = arg.encode()
        request += b"$%d\r\n%s\r\n" % (len(data), data)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request)
        reader = s.makefile("rb")
        return _resp(reader)


def _resp(reader: object) -> object:
    line = reader.readline()  # type: ignore[attr-defined]
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest
    if kind == b"-":
        raise RuntimeError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        if int(rest) < 0:
            return None
        data = reader.read(int(rest) + 2)  # type: ignore[attr-defined]
        return data[:-2]
    if kind == b"*":
        return None if int(rest) < 0 else [_resp(reader) for _ in range(int(rest))]
    raise RuntimeError(f"unexpected RESP line {line!r}")


@dataclass
class Simulator:
    """``python -m callbackd.simulator`` as its own process, like a real Asterisk."""

    workdir: Path
    port: int = 0
    username: str = "callbackd"
    secret: str = "s3cret"
    rules: tuple[str, ...] = ()
    time_scale: float = 0.2
    python_path: str = str(ROOT)
    #: more command line options (``--agi-address``, ``--sound`` ...)
    extra_args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port()
        self.log_path = self.workdir / "simulator.log"
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        args = [
            sys.executable,
            "-m",
            "callbackd.simulator",
            "--port",
            str(self.port),
            "--username",
            self.username,
            "--secret",
            self.secret,
            "--time-scale",
            str(self.time_scale),
        ]
        for rule in self.rules:
            args += ["--rule", rule]
        return args + list(self.extra_args)

    def start(self, timeout: float = 20.0) -> Simulator:
        """Start it and wait until it listens (it logs ``listening on``)."""
        env = dict(os.environ)
        env["PYTHONPATH"] = self.python_path
        mark = len(self.log())
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.workdir,
            )
        deadline = time.monotonic() + timeout
        while f"listening on 127.0.0.1:{self.port}" not in self.log()[mark:]:
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.stop()
                raise RuntimeError(f"simulator did not start:\n{self.log()[mark:]}")
            time.sleep(0.05)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (hanging up its channels) and wait."""
        if self.process is not None:
            stop_process(self.process, timeout)


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

    def call(self, expression: str, timeout: float = 20.0) -> tuple[bool, object]:
        """Evaluate an expression (a Deferred, or a plain value) and wait until it fires.

        ``(True, value)`` when it succeeded (the value as a Python literal when it is
        one, else its repr), ``(False, message)`` with the failure's message when it
        failed (also by raising at once). The failure is consumed in the daemon (no
        "Unhandled error").
        """
        self._counter += 1
        name = f"_call{self._counter}"
        self.execute(
            f"{name} = __import__('twisted.internet.defer').internet.defer.maybeDeferred("
            f"lambda: ({expression}))"
        )
        deadline = time.monotonic() + timeout
        while self.evaluate(f"{name}.called") != "True":
            if time.monotonic() > deadline:
                raise TimeoutError(f"{expression} did not fire in {timeout}s")
            time.sleep(0.05)
        text = self.evaluate(
            f"(lambda r: (False, type(r.value).__name__, r.getErrorMessage()) "
            f"if isinstance(r, __import__('twisted.python.failure').python.failure.Failure) "
            f"else (True, '', repr(r)))({name}.result)"
        )
        ok, kind, value = ast.literal_eval(text)
        self.execute(f"{name}.addErrback(lambda f: None)")
        if not ok:
            return False, f"{kind}: {value}"
        try:
            return True, ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return True, value

    def value(self, expression: str, timeout: float = 20.0) -> object:
        """The result of a Deferred-returning expression; AssertionError if it failed."""
        ok, value = self.call(expression, timeout)
        if not ok:
            raise AssertionError(f"{expression} failed: {value}")
        return value

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
