"""A plain HTTP client of the portal for tests: a cookie jar, the forms' CSRF token.

Talks to the daemon under twistd over a loopback socket (tests/integration/daemon.py).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import requests

__all__ = ["PortalClient", "csrf_of", "portal_daemon", "running_portal"]

_CSRF = re.compile(r'name="csrf" value="([0-9a-f]{64})"')


def csrf_of(html: str) -> str:
    """The CSRF token of the first form of a page."""
    match = _CSRF.search(html)
    assert match, f"no CSRF token in the page:\n{html[:2000]}"
    return match.group(1)


@dataclass
class PortalClient:
    """One browser's worth of cookies against the portal at ``base`` (``http://host:port``)."""

    base: str
    session: requests.Session = field(default_factory=requests.Session)
    csrf: str = ""

    def url(self, path: str) -> str:
        return self.base + "/portal" + path

    def get(self, path: str, **kwargs) -> requests.Response:
        response = self.session.get(self.url(path), timeout=10, allow_redirects=True, **kwargs)
        match = _CSRF.search(response.text)
        if match:
            self.csrf = match.group(1)
        return response

    def post(self, path: str, data: dict | None = None, csrf: bool = True, **kwargs):
        body = dict(data or {})
        if csrf:
            body.setdefault("csrf", self.csrf)
        kwargs.setdefault("allow_redirects", False)
        return self.session.post(self.url(path), data=body, timeout=10, **kwargs)

    def login(self, username: str, password: str) -> requests.Response:
        self.get("/login")
        return self.post("/login", {"username": username, "password": password})

    def logged_in(self, username: str, password: str) -> PortalClient:
        response = self.login(username, password)
        assert response.status_code == 303, response.text
        self.get("/")
        return self


def wait_for(predicate, timeout: float = 15.0, interval: float = 0.1, what: str = "condition"):
    """Poll ``predicate`` until it returns something true; return that."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached in {timeout}s")
        time.sleep(interval)


def portal_daemon(workdir, **kwargs):
    """A Daemon (not started) with the portal's operators and a tight login throttle."""
    from tests.integration.daemon import Daemon

    extra = kwargs.pop("extra", "")
    return Daemon(
        workdir,
        extra="\n[portal]\noperators = operator\nlogin_attempts = 3\nlogin_window = 60\n" + extra,
        **kwargs,
    )


@contextmanager
def running_portal(workdir, **kwargs) -> Iterator:
    """A started portal_daemon, healthy and with its demo accounts; stopped on leaving."""
    d = portal_daemon(workdir, **kwargs)
    d.start()
    try:
        d.wait_healthy(timeout=30)
        d.wait_for_log("demo accounts created")
        yield d
    finally:
        d.stop()
