"""The slixmpp user (tests/xmpp/client.py) as a child process of the Twisted test (or
of a test that blocks: :class:`BlockingUser`)."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
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


class BlockingUser:
    """The same client process for a test that blocks (no reactor): its events are read
    by a thread into a queue; :meth:`lines` awaits the message lines from a JID."""

    def __init__(self, jid: str, password: str, host: str, port: int) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
        argv = [sys.executable, "-m", "tests.xmpp.client", jid, password, host, str(port)]
        self.process = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        self.events: queue.Queue[Event] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        #: the message lines received and not yet consumed by :meth:`expect_line`
        self.pending: list[str] = []
        self.expect(lambda e: e.get("event") == "ready", "logged in")

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.strip():
                self.events.put(json.loads(line))

    def send(self, op: str, **request: Any) -> None:
        """Ask the client to do ``op`` (see tests/xmpp/client.py)."""
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"op": op, **request}).encode() + b"\n")
        self.process.stdin.flush()

    def expect(self, matches: Callable[[Event], bool], what: str, timeout: float = 30.0) -> Event:
        """The next event ``matches`` accepts (the message lines before it are kept for
        :meth:`expect_line`)."""
        deadline = time.monotonic() + timeout
        while True:
            event = self._next(deadline, what)
            if matches(event):
                return event
            self._keep(event)

    def expect_line(self, starts: str, timeout: float = 30.0) -> str:
        """The first message line starting with ``starts``; the lines before it are
        consumed, the ones after it kept."""
        deadline = time.monotonic() + timeout
        seen: list[str] = []
        while True:
            while self.pending:
                line = self.pending.pop(0)
                if line.startswith(starts):
                    return line
                seen.append(line)
            self._keep(self._next(deadline, f"a line starting {starts!r} (seen: {seen})"))

    def _next(self, deadline: float, what: str) -> Event:
        try:
            return self.events.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            raise AssertionError(f"no {what} in time") from None

    def _keep(self, event: Event) -> None:
        if event.get("event") == "message" and event.get("body"):
            self.pending.extend(event["body"].splitlines())

    def quit(self) -> None:
        """Log out and wait for the process to end."""
        if self.process.poll() is None:
            try:
                self.send("quit")
                assert self.process.stdin is not None
                self.process.stdin.close()
                self.process.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()
