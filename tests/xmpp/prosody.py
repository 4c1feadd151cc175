"""A real Prosody (Debian's ``prosody`` package) for tests, private to one test run.

What it takes, learnt on Debian 12's Prosody 0.12:

- Prosody refuses to run as root, so it runs as the ``prosody`` user (the
  package creates it): ``subprocess.Popen(..., user="prosody", group="prosody")``,
  the same as ``runuser -u prosody -- prosody --config FILE -F`` but with the
  pid of Prosody itself, so that stopping it stops exactly it.
- ``prosody --config FILE -F`` runs it in the foreground with a private config;
  ``prosodyctl --config FILE register USER HOST PASSWORD`` creates a user in the
  config's ``data_path`` (run as ``prosody`` as well, so the files are its own).
- Its directory (config, data, logs) must be reachable by the ``prosody`` user:
  pytest's ``tmp_path`` lives under a 0700 directory of root's, so the directory
  is made with :func:`tempfile.mkdtemp` in the system temp directory and chowned.
- Without TLS: ``modules_disabled = { "tls" }``, ``c2s_require_encryption = false``
  and ``allow_unencrypted_plain_auth = true`` (loopback only); an empty
  ``certificates`` directory keeps the certificate manager quiet. ``s2s`` and
  ``posix`` (daemonizing, pidfile) are disabled; HTTP is not loaded at all.
- Ports: c2s and component ports on 127.0.0.1, free ports chosen at run time
  (``c2s_ports``, ``component_ports``, ``component_interfaces``).
- A wrong ``component_secret`` is answered with a ``<not-authorized/>`` stream
  error; a second component connection for the same domain with ``<conflict/>``.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from tests.procs import free_port, require_installed, stop_process, wait_for_port

USER = "prosody"

CONFIG = """\
-- private test instance of callbackd's tests
daemonize = false
data_path = "{dir}/data"
certificates = "{dir}/certs"
interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {c2s_port} }}
c2s_direct_tls_ports = {{ }}
component_ports = {{ {component_port} }}
component_interfaces = {{ "127.0.0.1" }}
s2s_ports = {{ }}
modules_enabled = {{ "roster", "saslauth", "disco", "ping" }}
modules_disabled = {{ "s2s", "tls", "posix" }}
authentication = "internal_plain"
storage = "internal"
allow_registration = false
c2s_require_encryption = false
s2s_require_encryption = false
allow_unencrypted_plain_auth = true
log = {{ {{ levels = {{ min = "info" }}, to = "file", filename = "{dir}/prosody.log" }} }}

VirtualHost "{host}"

"""

COMPONENT = """\
Component "{component}"
    component_secret = "{secret}"
"""


def available() -> bool:
    """Whether Debian's prosody is installed (the binary and its user)."""
    try:
        pwd.getpwnam(USER)
    except KeyError:
        return False
    return shutil.which("prosody") is not None and shutil.which("prosodyctl") is not None


def require() -> None:
    """Skip when Debian's prosody is missing, except in CI (CI=true), where it must run."""
    require_installed(available(), "prosody", "prosody")


@dataclass
class Prosody:
    """A running Prosody: its host, component domain and secret, and loopback ports."""

    dir: Path
    host: str = "example.test"
    component: str = "callback.example.test"
    secret: str = "component-secret"
    c2s_port: int = 0
    component_port: int = 0
    process: subprocess.Popen | None = field(default=None, repr=False)

    @classmethod
    def start_new(cls, component_config: str = COMPONENT, **kwargs) -> Prosody:
        """Write a private config in a fresh directory and start Prosody on free ports.

        ``component_config`` is the config's Component part, with ``{component}``
        and ``{secret}`` to fill in.
        """
        directory = Path(tempfile.mkdtemp(prefix="callbackd-prosody-"))
        server = cls(directory, c2s_port=free_port(), component_port=free_port(), **kwargs)
        (directory / "data").mkdir()
        (directory / "certs").mkdir()
        server.config.write_text(
            CONFIG.format(
                dir=directory,
                host=server.host,
                c2s_port=server.c2s_port,
                component_port=server.component_port,
            )
            + component_config.format(component=server.component, secret=server.secret)
        )
        uid, gid = pwd.getpwnam(USER).pw_uid, grp.getgrnam(USER).gr_gid
        for path in (directory, directory / "data", directory / "certs", server.config):
            os.chown(path, uid, gid)
        server.start()
        return server

    @property
    def config(self) -> Path:
        return self.dir / "prosody.cfg.lua"

    @property
    def log(self) -> str:
        """Prosody's log so far (for failing tests' messages)."""
        try:
            return (self.dir / "prosody.log").read_text(errors="replace")
        except OSError:
            return ""

    def _run_as_prosody(self, *argv: str, **kwargs) -> subprocess.Popen:
        return subprocess.Popen(
            argv, user=USER, group=USER, extra_groups=[], cwd=self.dir, env=_env(), **kwargs
        )

    def start(self) -> None:
        """Start Prosody and wait until both of its ports accept connections."""
        self.process = self._run_as_prosody(
            "prosody",
            "--config",
            str(self.config),
            "-F",
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for_port(self.c2s_port, timeout=15)
            wait_for_port(self.component_port, timeout=15)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"prosody did not start:\n{self.log}") from None

    def stop(self) -> None:
        """Stop Prosody (SIGTERM, then SIGKILL if it lingers)."""
        if self.process is not None:
            stop_process(self.process)
            self.process = None

    def restart(self) -> None:
        """Stop and start again on the same ports (the data directory is kept)."""
        self.stop()
        self.start()

    def register(self, user: str, password: str) -> str:
        """Create the user ``user@host``; its JID."""
        done = self._run_as_prosody(
            "prosodyctl",
            "--config",
            str(self.config),
            "register",
            user,
            self.host,
            password,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        output, _ = done.communicate(timeout=30)
        if done.returncode != 0:
            raise RuntimeError(f"prosodyctl register failed: {output.decode(errors='replace')}")
        return f"{user}@{self.host}"

    def remove(self) -> None:
        """Stop Prosody and delete its directory."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def _env() -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "HOME": "/tmp"}
