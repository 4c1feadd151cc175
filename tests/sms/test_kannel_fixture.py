"""The Kannel fixture itself, with no callbackd: a real bearerbox, smsbox and fakesmsc.

A small HTTP server on loopback stands where callbackd's ``/sms/kannel`` would be (the
sample's ``get-url`` points at it): what fakesmsc injects must reach it in the shape
:func:`callbackd.sms.inbound.parse_kannel` reads, GSM-7 and UCS-2 alike; what is sent
through smsbox's ``sendsms`` must reach fakesmsc and be read back by the fixture.

With ``CALLBACKD_RECORD_KANNEL=1`` the requests Kannel makes are written to
``tests/fixtures/kannel/`` (see its README), which ``test_kannel_recorded.py`` parses.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from callbackd.sms.inbound import InboundSms, parse_kannel
from tests.sms import kannel as kannel_module

pytestmark = pytest.mark.integration

RECORDED = Path(__file__).resolve().parent.parent / "fixtures" / "kannel"
PHONE, SERVICE = "+15550011111", "15550000000"
STEP = 20.0


class Inbox:
    """An HTTP server taking smsbox's get-url requests: their request line and headers.

    It answers 200 with an empty body, or 503 to the first request whose text holds
    ``FAIL-ONCE`` (to see Kannel's retry).
    """

    def __init__(self) -> None:
        self.requests: queue.Queue[tuple[str, str]] = queue.Queue()
        self.failed: set[str] = set()
        inbox = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                inbox.requests.put((self.requestline, str(self.headers)))
                fail = "FAIL-ONCE" in self.path and self.path not in inbox.failed
                inbox.failed.add(self.path)
                self.send_response(503 if fail else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/sms/kannel"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def expect(self, needle: str, timeout: float = STEP) -> tuple[str, str]:
        """The next request whose request line holds ``needle`` (others are dropped)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line, headers = self.requests.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no get-url request with {needle!r}") from None
            if needle in line:
                return line, headers

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def inbox():
    box = Inbox()
    yield box
    box.close()


@pytest.fixture(scope="module")
def kannel(inbox, tmp_path_factory):
    with kannel_module.running(tmp_path_factory.mktemp("kannel"), inbox.url) as running:
        yield running


@pytest.fixture(autouse=True)
def kannel_logs(kannel):
    """Kannel's logs in the output of a failing test."""
    yield
    print(kannel.logs())


def record(name: str, request: tuple[str, str]) -> None:
    """Keep a request Kannel made as a fixture, when asked to (CALLBACKD_RECORD_KANNEL=1)."""
    if os.environ.get("CALLBACKD_RECORD_KANNEL") == "1":
        RECORDED.mkdir(parents=True, exist_ok=True)
        line, headers = request
        (RECORDED / name).write_text(f"{line}\n{headers.rstrip()}\n")


def parsed(request: tuple[str, str]) -> tuple[dict[str, list[bytes]], InboundSms]:
    """The request's query fields and the message parse_kannel reads in them."""
    query = kannel_module.query_of(request[0].split(" ")[1])
    return query, parse_kannel(query)


def test_a_gsm_message_reaches_the_get_url_as_callbackd_reads_it(kannel, inbox):
    text = "U.alice P.pa+ss%&x D.+15550012222 señor"
    kannel.inject(PHONE, SERVICE, text)
    request = inbox.expect("D.%2B15550012222")
    record("get-url-gsm.http", request)
    query, sms = parsed(request)
    assert (sms.sender, sms.recipient, sms.text) == (PHONE, SERVICE, text)
    assert sms.message_id and len(sms.message_id) == 36  # Kannel's %I, a UUID
    assert sms.received_at is not None and abs(sms.received_at - time.time()) < 60
    assert query["token"] == [kannel.token.encode()]
    assert (query["coding"], query["charset"]) == ([b"0"], [b"UTF-8"])
    assert "User-Agent: Kannel/" in request[1]
    # the recorded fixtures still show what Kannel sends
    target, headers = kannel_module.read_request(RECORDED / "get-url-gsm.http")
    assert list(kannel_module.query_of(target)) == list(query)
    assert sorted(headers) == sorted(h.split(":")[0] for h in request[1].splitlines() if h)


def test_a_ucs2_message_arrives_recoded_to_utf8(kannel, inbox):
    text = "Привет, señor € 你好"
    kannel.inject(PHONE, SERVICE, text, coding="ucs2")
    request = inbox.expect("%E4%BD%A0")  # 你
    record("get-url-ucs2.http", request)
    query, sms = parsed(request)
    # mo-recode = true: UCS-2 comes as UTF-8 with coding 0
    assert (query["coding"], query["charset"]) == ([b"0"], [b"UTF-8"])
    assert (sms.sender, sms.text) == (PHONE, text)


def test_a_failed_delivery_is_retried_with_the_same_message_id(kannel, inbox):
    kannel.inject(PHONE, SERVICE, "I FAIL-ONCE")
    first = inbox.expect("FAIL-ONCE")
    retry = inbox.expect("FAIL-ONCE")  # http-queue-delay later
    record("get-url-retry-1.http", first)
    record("get-url-retry-2.http", retry)
    assert parsed(first)[1] == parsed(retry)[1]


def test_sendsms_reaches_the_phone(kannel):
    mark = len(kannel.messages())
    assert kannel.sendsms(PHONE, "Your balance is 10.00 USD.", sender=SERVICE) == (
        202,
        "0: Accepted for delivery",
    )
    unicode = "Su saldo: 10,00 €. Привет"
    assert kannel.sendsms(PHONE, unicode, sender=SERVICE, coding="2", charset="UTF-8")[0] == 202
    long = "Callback 42: " + "we call you, then the destination. " * 8
    assert kannel.sendsms(PHONE, long, sender=SERVICE)[0] == 202
    for text, kind in [("Your balance is 10.00 USD.", "text"), (unicode, "ucs-2"), (long, "udh")]:
        message = kannel.wait_for_outgoing(lambda m, t=text: m.text == t, STEP, after=mark)
        assert (message.sender, message.receiver, message.kind) == (SERVICE, PHONE, kind)


def test_sendsms_refuses_a_wrong_password(kannel):
    status, body = kannel.sendsms(PHONE, "x", password="not-the-password")
    assert status == 403, body


def test_stopped_and_started_again_it_carries_messages_both_ways(kannel, inbox):
    kannel.stop()
    with pytest.raises(OSError):
        kannel.sendsms(PHONE, "while stopped")
    with pytest.raises(RuntimeError):
        kannel.inject(PHONE, SERVICE, "while stopped")
    kannel.start()
    kannel.inject(PHONE, SERVICE, "back again")
    parsed(inbox.expect("back+again"))
    mark = len(kannel.messages())
    assert kannel.sendsms(PHONE, "welcome back", sender=SERVICE)[0] == 202
    kannel.wait_for_outgoing(lambda m: m.text == "welcome back", STEP, after=mark)
