"""The slixmpp user (tests/xmpp/client.py) as a child process of the Twisted test."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet import defer, protocol, reactor

ROOT = Path(__file__).resolve().parents[2]

Event = dict[str, Any]


class UserProcess(protocol.ProcessProtocol):
    """Sends requests to the client process; :meth:`expect` awaits its events in order."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._buffer = b""
        self._waiters: list[tuple[Callable[[Event], bool], defer.Deferred[Event]]] = []
        self.ended: defer.Deferred[None] = defer.Deferred()
        self.stderr = b""

    @classmethod
    def spawn(cls, jid: str, password: str, host: str, port: int) -> UserProcess:
        """Start ``python -m tests.xmpp.client`` logged in as ``jid``."""
        user = cls()
        env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
        argv = [sys.executable, "-m", "tests.xmpp.client", jid, password, host, str(port)]
        reactor.spawnProcess(user, sys.executable, argv, env=env, path=str(ROOT))
        return user

    def send(self, op: str, **request: Any) -> None:
        """Ask the client to do ``op`` (see tests/xmpp/client.py)."""
        self.transport.write(json.dumps({"op": op, **request}).encode() + b"\n")

    def expect(self, timeout: float = 10.0, **fields: Any) -> defer.Deferred[Event]:
        """The first unconsumed event whose items include ``fields`` (now or once it comes)."""

        def matches(event: Event) -> bool:
            return all(event.get(k) == v for k, v in fields.items())

        for event in self.events:
            if matches(event):
                self.events.remove(event)
                return defer.succeed(event)
        waiter: defer.Deferred[Event] = defer.Deferred()
        self._waiters.append((matches, waiter))

        def timed_out(failure: Any) -> Any:
            self._waiters[:] = [w for w in self._waiters if w[1] is not waiter]
            raise AssertionError(
                f"no event {fields} within {timeout}s; unconsumed: {self.events};"
                f" stderr: {self.stderr.decode(errors='replace')[-2000:]}"
            )

        waiter.addTimeout(timeout, reactor)
        waiter.addErrback(timed_out)
        return waiter

    def quit(self) -> defer.Deferred[None]:
        """Log out and wait for the process to end."""
        if not self.ended.called:
            self.send("quit")
            self.transport.closeStdin()
        return self.ended

    # --- ProcessProtocol --------------------------------------------------------------

    def outReceived(self, data: bytes) -> None:
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            if line.strip():
                self._arrived(json.loads(line))

    def errReceived(self, data: bytes) -> None:
        self.stderr += data

    def _arrived(self, event: Event) -> None:
        for matches, waiter in self._waiters:
            if matches(event):
                self._waiters.remove((matches, waiter))
                waiter.callback(event)
                return
        self.events.append(event)

    def processEnded(self, reason: Any) -> None:
        if not self.ended.called:
            self.ended.callback(None)
