"""Talking to the daemon's REST API over a real socket: JSON requests and an SSE reader."""

from __future__ import annotations

import http.client
import json
import socket
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Answer:
    """One HTTP answer."""

    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def error(self) -> str:
        """The error code of a JSON error body."""
        return str(self.json["error"]["code"])


class Api:
    """A keep-alive HTTP/1.1 connection to the daemon, with an API key."""

    def __init__(self, port: int, key: str | None = None) -> None:
        self.port = port
        self.key = key
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        sent = dict(headers or {})
        if self.key is not None:
            sent.setdefault("Authorization", f"Bearer {self.key}")
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            sent.setdefault("Content-Type", "application/json")
        try:
            self.conn.request(method, path, body=data, headers=sent)
            response = self.conn.getresponse()
        except (http.client.HTTPException, OSError):
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            raise
        payload = response.read()
        answer = Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, payload)
        if response.will_close:
            self.conn.close()
        return answer

    def get(self, path: str, **kw: Any) -> Answer:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> Answer:
        return self.request("POST", path, body, **kw)

    def delete(self, path: str, **kw: Any) -> Answer:
        return self.request("DELETE", path, **kw)

    def close(self) -> None:
        self.conn.close()


@dataclass
class EventStream:
    """An SSE stream read from a raw HTTP/1.0 socket (no chunking; closed at its end)."""

    port: int
    path: str
    key: str
    last_event_id: str | None = None
    status: int = 0
    events: list[dict] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    comments: int = 0
    closed: bool = False

    def __post_init__(self) -> None:
        self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        lines = [f"GET {self.path} HTTP/1.0", f"Authorization: Bearer {self.key}"]
        if self.last_event_id is not None:
            lines.append(f"Last-Event-ID: {self.last_event_id}")
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self._buffer = b""
        self._headers_done = False

    def _parse(self) -> None:
        if not self._headers_done:
            head, sep, rest = self._buffer.partition(b"\r\n\r\n")
            if not sep:
                return
            self.status = int(head.split(b" ", 2)[1])
            self._headers_done = True
            self._buffer = rest
        while b"\n\n" in self._buffer:
            frame, _, self._buffer = self._buffer.partition(b"\n\n")
            fields: dict[str, str] = {}
            for line in frame.decode().split("\n"):
                if line.startswith(":"):
                    self.comments += 1
                    continue
                name, _, value = line.partition(": ")
                fields[name] = value
            if "data" in fields:
                self.events.append(json.loads(fields["data"]))
                self.ids.append(fields.get("id", ""))

    def read_until(self, predicate: Any, timeout: float = 20.0) -> None:
        """Read until ``predicate(self)`` holds; AssertionError on timeout."""
        deadline = time.monotonic() + timeout
        while not predicate(self):
            if self.closed:
                raise AssertionError(f"stream closed; got {[e['kind'] for e in self.events]}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out; got {[e['kind'] for e in self.events]}")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            if not data:
                self.closed = True
            self._buffer += data
            self._parse()

    def kinds(self) -> list[str]:
        return [e["kind"] for e in self.events]

    def has(self, kind: str, **match: Any) -> bool:
        return any(
            e["kind"] == kind and all(e.get(k) == v for k, v in match.items()) for e in self.events
        )

    def read_to_end(self, timeout: float = 20.0) -> None:
        self.read_until(lambda s: s.closed, timeout)

    def close(self) -> None:
        self.sock.close()
