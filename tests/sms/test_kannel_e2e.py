"""SMS callbacks end to end through a real Kannel: the issue's "done when".

A real Kannel (Debian's bearerbox, smsbox and fakesmsc, running the sample configuration
of ``etc/kannel/`` on loopback ports chosen at run time; :mod:`tests.sms.kannel`) in
front of the daemon under twistd (the simulated Asterisk, a real redis-server), whose
``[sms]`` and ``[sms-gateway:kannel]`` are the sample's ``callbackd-sms.ini``. Phones
are fakesmsc: a test injects a message from a phone number, Kannel's ``get-url``
delivers it to ``/sms/kannel``, the daemon places the callback, and its replies travel
back through smsbox's ``sendsms`` to fakesmsc, where the test reads them.

Between Kannel and the daemon sits a transparent HTTP relay (:class:`Relay`), so that a
test can lose the daemon's answer to one request, which makes Kannel retry it (the same
``%I``) as it does after a network error.

One Kannel and one daemon serve the whole module; the tests run in order and each
hangs up its calls (through the manhole) when it ends.
"""

from __future__ import annotations

import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from callbackd.i18n import translator
from tests.integration.daemon import Daemon, ManholeClient, redis_command
from tests.sms import kannel as kannel_module
from tests.sms.kannel import Kannel, query_of
from tests.xmpp.test_conversation import ANY, like

pytestmark = pytest.mark.integration

#: the access number people write to (the sample's sendsms_from)
SERVICE = "15550000000"
SOURCE, DESTINATION, OTHER = "+15550011111", "+15550012222", "+15550013333"
PASSWORD_ENV = "CALLBACKD_TEST_SMS_PASSWORD"
PASSWORD = "alices-sms-password"
EN, ES = translator("en"), translator("es")
#: seconds allowed for one step on a loaded machine
STEP = 30.0
#: the engine's log line of a callback placed for alice
PLACED = re.compile(r"session \S+ of alice: phone:")


class Relay:
    """An HTTP relay between smsbox's get-url and the daemon, counting each message id.

    ``lose_first`` holds sender numbers whose messages' first answer is lost: the request
    reaches the daemon, but smsbox gets a 503 instead of the daemon's answer and tries
    again later, with the same ``id``.
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.lose_first: set[str] = set()
        self.seen: dict[str, list[int]] = {}  # message id -> the daemon's statuses
        self.lock = threading.Lock()
        relay = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                status, body = relay.forward(self.path)
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/sms/kannel"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def forward(self, target: str) -> tuple[int, bytes]:
        query = query_of(target)
        message_id = query.get("id", [b""])[0].decode()
        sender = query.get("from", [b""])[0].decode()
        try:
            with urllib.request.urlopen(self.upstream + target, timeout=10) as response:
                status, body = response.status, response.read()
        except urllib.error.HTTPError as e:
            status, body = e.code, e.read()
        except OSError:
            status, body = 502, b""
        with self.lock:
            statuses = self.seen.setdefault(message_id, [])
            statuses.append(status)
            if sender in self.lose_first and len(statuses) == 1:
                return 503, b""
        return status, body

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Stack:
    """The module's Kannel, relay and daemon, and a manhole into the daemon."""

    kannel: Kannel
    relay: Relay
    daemon: Daemon
    redis_port: int
    manhole: ManholeClient
    phones: dict[str, Phone] = field(default_factory=dict)

    def phone(self, number: str) -> Phone:
        """The fakesmsc side of ``number`` (one per number per module)."""
        return self.phones.setdefault(number, Phone(self.kannel, number))

    def hang_up_all(self) -> None:
        """End every call of the demo accounts (each ends with its outcome reply)."""
        self.manhole.value(
            "__import__('twisted.internet.defer').internet.defer.gatherResults("
            "[hangup(s) for u in ('alice', 'bob') for s in sessions(u)])"
        )


class Phone:
    """A phone number on fakesmsc: send a message, await the replies to it."""

    def __init__(self, kannel: Kannel, number: str) -> None:
        self.kannel = kannel
        self.number = number
        self.taken: set[int] = set()

    def send(self, text: str, coding: str = "text") -> None:
        self.kannel.inject(self.number, SERVICE, text, coding)

    def expect(self, pattern: re.Pattern[str], timeout: float = STEP) -> list[str]:
        """The lines of the first reply not taken yet with a line ``pattern`` matches whole.

        The reply is taken: a later call does not see it again.
        """
        deadline = time.monotonic() + timeout
        while True:
            for index, message in enumerate(self.kannel.messages()):
                if index in self.taken or message.receiver != self.number:
                    continue
                for line in message.text.splitlines():
                    if pattern.fullmatch(line):
                        self.taken.add(index)
                        assert message.sender == SERVICE, message
                        return message.text.splitlines()
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no reply to {self.number} like {pattern.pattern!r}; "
                    f"replies: {self.replies()}\n{self.kannel.logs()}"
                )
            time.sleep(0.1)

    def replies(self) -> list[str]:
        return [m.text for m in self.kannel.messages() if m.receiver == self.number]


def _accounts_ready(redis_port: int) -> None:
    deadline = time.monotonic() + STEP
    for name in ("alice", "bob"):
        while redis_command(redis_port, "GET", f"cb:acct:{name}:balance") in (None, b"0"):
            assert time.monotonic() < deadline, f"demo account {name} never appeared"
            time.sleep(0.1)


@pytest.fixture(scope="module")
def stack(tmp_path_factory, redis_server) -> Iterator[Stack]:
    kannel_module.require()
    redis_server.flush()
    work = tmp_path_factory.mktemp("kannel-e2e")
    daemon = Daemon(work / "daemon", redis_port=redis_server.port, env={PASSWORD_ENV: PASSWORD})
    relay = Relay(f"http://127.0.0.1:{daemon.web_port}")
    kannel = Kannel(work / "kannel", relay.url)
    daemon.extra = "\n" + kannel.callbackd_config()
    daemon.write_config()
    manhole = None
    try:
        kannel.start()
        daemon.start()
        daemon.wait_healthy(timeout=STEP)
        _accounts_ready(redis_server.port)
        for name in ("alice", "bob"):
            daemon.admin("set-password", name, "--password-env", PASSWORD_ENV)
        manhole = daemon.manhole()
        yield Stack(kannel, relay, daemon, redis_server.port, manhole)
    finally:
        if manhole is not None:
            manhole.close()
        daemon.stop()
        kannel.stop()
        relay.close()


@pytest.fixture(autouse=True)
def each_test(stack) -> Iterator[None]:
    """Calls hung up after each test; on failure, the logs of what this test did."""
    mark = stack.daemon.log_mark()
    yield
    print(stack.kannel.logs())
    print("--- daemon ---\n" + stack.daemon.log()[mark:][-8000:])
    stack.hang_up_all()


# -- the tests, in the order they run -----------------------------------------------------


def test_a_callback_by_username_and_password_with_its_progress(stack):
    phone = stack.phone("+4915100000001")
    phone.send(f"U.alice P.{PASSWORD} D.{DESTINATION} O.{SOURCE}")
    phone.expect(
        like(EN, "sms.callback_started", session=ANY, source=SOURCE, destination=DESTINATION)
    )
    phone.expect(like(EN, "progress.talking", cost=ANY))
    stack.hang_up_all()
    phone.expect(like(EN, "sms.charged", cost=ANY))


def test_a_wrong_password_gets_a_reply_and_no_callback(stack):
    phone = stack.phone("+4915100000003")
    mark = stack.daemon.log_mark()
    phone.send(f"u.alice p.wrong-{PASSWORD} d.{DESTINATION}")
    phone.expect(like(EN, "sms.auth_failed"))
    assert not PLACED.search(stack.daemon.log()[mark:])


def test_registration_with_its_code_then_a_callback_by_caller_id_alone(stack):
    owner, new = stack.phone("+4915100000001"), stack.phone("+4915100000002")
    owner.send(f"U.alice P.{PASSWORD} R.{new.number}")
    owner.expect(like(EN, "sms.code_sent", number=new.number))
    [code_text] = new.expect(like(EN, "sms.code_text", code=ANY, valid=ANY))
    code = re.search(r"\b(\d{6})\b", code_text)
    assert code, code_text
    # not trusted before the code comes back: no password, no callback
    new.send(f"D.{DESTINATION} O.{SOURCE}")
    new.expect(like(EN, "sms.unknown_sender"))
    new.send(code.group(1))
    new.expect(like(EN, "sms.code_confirmed", number=new.number))
    new.send(f"D.{DESTINATION} O.{SOURCE}")
    new.expect(
        like(EN, "sms.callback_started", session=ANY, source=SOURCE, destination=DESTINATION)
    )
    new.expect(like(EN, "progress.talking", cost=ANY))


def test_phonebook_calls_by_name_and_by_index(stack):
    stack.manhole.value(
        "__import__('twisted.internet.defer').internet.defer.gatherResults(["
        "store.set_phonebook_entry('alice', __import__('callbackd.core.model', "
        f"fromlist=['x']).PhonebookEntry(1, 'office', {DESTINATION!r})),"
        "store.set_phonebook_entry('alice', __import__('callbackd.core.model', "
        f"fromlist=['x']).PhonebookEntry(2, 'home', {OTHER!r}))])"
    )
    phone = stack.phone("+4915100000002")  # alice's verified caller ID (the test before)
    phone.send(f"b.office O.{SOURCE}")
    phone.expect(
        like(EN, "sms.callback_started", session=ANY, source=SOURCE, destination=DESTINATION)
    )
    phone.send(f"N2 O.{SOURCE}")
    phone.expect(like(EN, "sms.callback_started", session=ANY, source=SOURCE, destination=OTHER))
    phone.send("B.nowhere")
    phone.expect(like(EN, "sms.no_phonebook_entry", entry="nowhere"))


def test_balance_and_last_calls_asked_in_ucs2(stack):
    """A phone may send UCS-2 for any text: Kannel recodes it, the daemon reads it."""
    phone = stack.phone("+4915100000001")
    phone.send(f"U.alice P.{PASSWORD} I", coding="ucs2")
    lines = phone.expect(like(EN, "chat.balance", balance=ANY))
    history = like(EN, "chat.history_line", when=ANY, destination=ANY, seconds=ANY, cost=ANY)
    assert any(history.fullmatch(line) for line in lines), lines


def test_a_spanish_account_is_answered_in_spanish(stack):
    phone = stack.phone("+4915100000004")
    phone.send(f"U.bob P.{PASSWORD} LANG es")
    phone.expect(like(ES, "chat.language_set", language=ANY))
    phone.send(f"U.bob P.{PASSWORD} I")
    phone.expect(like(ES, "chat.balance", balance=ANY))
    phone.send(f"U.bob P.{PASSWORD} D.{DESTINATION} O.{SOURCE}")
    phone.expect(
        like(ES, "sms.callback_started", session=ANY, source=SOURCE, destination=DESTINATION)
    )
    # a wrong password is not bob: the reply does not tell his language
    phone.send(f"U.bob P.wrong-{PASSWORD} I")
    phone.expect(like(EN, "sms.auth_failed"))


def test_a_message_kannel_retries_places_one_callback(stack):
    phone = stack.phone("+4915100000005")
    stack.relay.lose_first.add(phone.number)
    mark = stack.daemon.log_mark()
    phone.send(f"U.alice P.{PASSWORD} D.{DESTINATION} O.{SOURCE}")
    phone.expect(
        like(EN, "sms.callback_started", session=ANY, source=SOURCE, destination=DESTINATION)
    )
    # Kannel got a 503 for the first try and sent the same message again
    deadline = time.monotonic() + STEP
    while not any(len(s) >= 2 for s in stack.relay.seen.values()):
        assert time.monotonic() < deadline, f"Kannel did not retry: {stack.relay.seen}"
        time.sleep(0.1)
    [statuses] = [s for s in stack.relay.seen.values() if len(s) >= 2]
    assert statuses[:2] == [200, 200]
    time.sleep(2.0)  # a second callback, had there been one, would have replied by now
    assert len(PLACED.findall(stack.daemon.log()[mark:])) == 1
    started = like(EN, "sms.callback_started", session=ANY, source=SOURCE, destination=DESTINATION)
    replies = [r for r in phone.replies() if any(started.fullmatch(x) for x in r.splitlines())]
    assert len(replies) == 1, phone.replies()


def test_a_reply_queued_while_kannel_is_down_arrives_when_it_is_back(stack):
    phone = stack.phone("+4915100000001")
    stack.kannel.stop()
    mark, sent = stack.daemon.log_mark(), len(stack.kannel.messages())
    try:
        # what smsbox delivered just before it went down (through the relay, the network)
        url = kannel_module.fill_get_url(
            stack.kannel.rendered_get_url(),
            sender=phone.number,
            receiver=SERVICE,
            text=f"U.alice P.{PASSWORD} I",
            message_id="0b9c3f4e-5d6a-4b7c-8d9e-0f1a2b3c4d5e",
        )
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.status == 200
        stack.daemon.wait_for_log(r"sms \S+ to \S+ via kannel not delivered", STEP, mark)
    finally:
        stack.kannel.start()
    balance = like(EN, "chat.balance", balance=ANY)
    phone.expect(balance, timeout=STEP + 20)
    time.sleep(1.5)  # fakesmsc's poll: a second copy would be printed by now
    copies = [
        m
        for m in stack.kannel.messages()[sent:]
        if m.receiver == phone.number and balance.fullmatch(m.text.splitlines()[0])
    ]
    assert len(copies) == 1, copies
