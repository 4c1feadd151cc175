"""An SMS callback end to end: the daemon under twistd (simulated Asterisk, a real
redis-server) with a form gateway, a test SMS posted to /sms/NAME over HTTP, the callback
placed and answered, and the replies delivered to a local HTTP server acting as the
http-post outbound gateway."""

from __future__ import annotations

import json
import queue
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.integration.daemon import Daemon, http_get, redis_command

pytestmark = pytest.mark.integration

TOKEN = "sms-e2e-token"
PASSWORD_ENV = "CALLBACKD_TEST_ALICE_PASSWORD"
PASSWORD = "alices-sms-password"
SOURCE, DESTINATION = "+15550011111", "+15550012222"
STEP = 30.0


class Outbox:
    """A local HTTP server taking the daemon's outbound SMS (JSON POSTs with the token)."""

    def __init__(self) -> None:
        self.messages: queue.Queue[dict] = queue.Queue()
        outbox = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                ok = self.headers["Authorization"] == f"Bearer {TOKEN}"
                if ok:
                    outbox.messages.put(json.loads(body))
                self.send_response(200 if ok else 401)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def expect(self, to: str, starts: str, timeout: float = STEP) -> list[str]:
        """Await an SMS to ``to`` with a line starting with ``starts``; its lines."""
        deadline = time.monotonic() + timeout
        seen = []
        while time.monotonic() < deadline:
            try:
                message = self.messages.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            seen.append(message)
            lines = message["text"].splitlines()
            if message["to"] == to and any(line.startswith(starts) for line in lines):
                return lines
        raise AssertionError(f"no SMS to {to} starting {starts!r}; got {seen}")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def outbox():
    box = Outbox()
    yield box
    box.close()


def sms_config(directory: Path, outbox: Outbox) -> str:
    """SMS on, with the gateway ``test``: form posts in, http-post out to ``outbox``, both
    with :data:`TOKEN` (written to ``directory``)."""
    token_file = directory / "sms.token"
    token_file.write_text(TOKEN)
    return f"""
[sms]
enabled = yes

[sms-gateway:test]
format = form
token_file = {token_file}
send = http-post
post_url = http://127.0.0.1:{outbox.port}/sms
post_token_file = {token_file}
"""


@pytest.fixture
def daemon(tmp_path, clean_redis, outbox):
    daemon = Daemon(
        tmp_path,
        redis_port=clean_redis.port,
        extra=sms_config(tmp_path, outbox),
        env={PASSWORD_ENV: PASSWORD},
    ).start()
    try:
        daemon.wait_healthy(timeout=STEP)
        deadline = time.monotonic() + STEP
        while redis_command(clean_redis.port, "GET", "cb:acct:alice:balance") in (None, b"0"):
            assert time.monotonic() < deadline, "demo account alice never appeared"
            time.sleep(0.1)
        daemon.admin("set-password", "alice", "--password-env", PASSWORD_ENV)
        yield daemon
    finally:
        daemon.stop()


def post_sms(daemon: Daemon, sender: str, text: str, message_id: str) -> tuple[int, str]:
    body = urllib.parse.urlencode(
        {"from": sender, "to": "+15550000000", "text": text, "id": message_id}
    )
    request = urllib.request.Request(
        daemon.url("/sms/test"),
        data=body.encode(),
        headers={"X-Callbackd-Token": TOKEN, "Content-Type": "application/x-www-form-urlencoded"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, response.read().decode()


def test_sms_callback_placed_and_replies_delivered(daemon, outbox, clean_redis):
    health = json.loads(http_get(daemon.url("/healthz"))[1])["checks"]["sms"]
    assert health == {"ok": True, "detail": "/sms/test"}
    phone = "+4915100000001"
    text = f"U.alice P.{PASSWORD} D.{DESTINATION} O.{SOURCE}"
    assert post_sms(daemon, phone, text, "e2e-1") == (200, "accepted\n")
    # a retry of the same message: the same answer, no second callback
    assert post_sms(daemon, phone, text, "e2e-1") == (200, "accepted\n")
    [started] = outbox.expect(phone, "Callback ")
    assert started.endswith(f"we call {SOURCE}, then {DESTINATION}.")
    outbox.expect(phone, "Remote answered. Now talking.")
    session_ids = redis_command(clean_redis.port, "SMEMBERS", "cb:sessions")
    assert len(session_ids) == 1
    assert redis_command(clean_redis.port, "ZCARD", "cb:sms:in:pending") == 0
