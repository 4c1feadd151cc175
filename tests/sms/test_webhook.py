"""The SMS webhooks over real sockets: each gateway format and auth kind posted with treq
to the SMS service's resource on a loopback port, a real redis-server store, the engine
over a FakeSwitch, and the replies sent by the http-post gateway to a local HTTP server."""

from __future__ import annotations

import hashlib
import hmac
import json
import urllib.parse
from pathlib import Path

import pytest_twisted
import treq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import defer, reactor, task
from twisted.web import resource, server

from callbackd.config import parse_config
from callbackd.core.model import Account, PhonebookEntry
from callbackd.core.rating import Deck, Rate
from callbackd.engine import Provider, SessionManager
from callbackd.fakeswitch import FakeSwitch
from callbackd.sms.service import SmsService
from callbackd.web.root import WebRootResource
from tests.stores import redis_store
from tests.test_engine import DESTINATION, SELL_49, SELL_92

ALICE_PHONE = "+4930123456"
STRANGER = "+4915100000009"
TOKEN = "t0ken-for-tests"
HMAC_KEY = "hmac-key-for-tests"
FORWARDER_TOKEN = "forwarder-token"

CONFIG = """
[billing]
currency = EUR
decimals = 5
[sms]
enabled = yes
default_gateway = out
unknown_reply_period = 3600
[sms-gateway:kannel]
format = kannel
token_file = token
[sms-gateway:kpost]
format = kannel-post
allow = 127.0.0.1
[sms-gateway:form]
format = form
token_file = token
field_from = sender
field_text = message
field_to =
[sms-gateway:json]
format = json
signature_secret_file = hmac
[sms-gateway:forwarder]
format = forwarder
token_file = forwarder_token
token_header = Authorization
recipient = +4930999
[sms-gateway:faraway]
format = form
allow = 10.0.0.0/8
[sms-gateway:out]
format = form
token_file = token
send = http-post
post_url = {post_url}
post_token_file = token
"""


FORM_HEADERS = {"Content-Type": "application/x-www-form-urlencoded", "X-Callbackd-Token": TOKEN}


class Outbox(resource.Resource):
    """The http-post outbound gateway's far end: keeps each posted message."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[dict] = []
        self.arrived = defer.DeferredQueue()

    def render_POST(self, request):
        assert request.getHeader(b"authorization") == f"Bearer {TOKEN}".encode()
        message = json.loads(request.content.read())
        self.messages.append(message)
        self.arrived.put(message)
        return b"ok"


class Setup:
    """The SMS service on a port, its store, its engine's switch, and the outbox."""

    def __init__(self, store, switch, service, outbox, port):
        self.store = store
        self.switch = switch
        self.service = service
        self.outbox = outbox
        self.base = f"http://127.0.0.1:{port}/sms/"

    def post(self, gateway, data=b"", headers=None, query=""):
        url = self.base + gateway + (f"?{query}" if query else "")
        return treq.post(url, data=data, headers=headers or {})

    def form(self, text, sender=ALICE_PHONE, gateway="form", **extra):
        fields = {"sender": sender, "message": text, **extra}
        return self.post(gateway, urllib.parse.urlencode(fields).encode(), FORM_HEADERS)

    def kannel(self, fields: dict[str, bytes | str], token=TOKEN):
        query = urllib.parse.urlencode({**fields, "token": token} if token else fields)
        return treq.get(self.base + "kannel?" + query)

    async def reply(self, to=ALICE_PHONE, timeout=5.0):
        """The next SMS sent to ``to`` (others are skipped)."""
        while True:
            d = self.outbox.arrived.get()
            d.addTimeout(timeout, reactor)
            message = await d
            if message["to"] == to:
                return message["text"]

    async def settle(self, seconds=0.3):
        await task.deferLater(reactor, seconds, lambda: None)


async def answer(response):
    return response.code, (await response.content()).decode()


@pytest_twisted.async_yield_fixture
async def sms(clean_redis, tmp_path: Path):
    store = redis_store(clean_redis.port)
    await store.connect(timeout=5)
    await store.create_account(Account("alice"), "secret-pw")
    await store.credit("alice", 10_000_000, "initial")
    await store.add_caller_id("alice", ALICE_PHONE, verified=True)
    await store.set_phonebook_entry("alice", PhonebookEntry(1, "office", DESTINATION))
    switch = FakeSwitch()
    engine = SessionManager(
        reactor,
        switch,
        store,
        sell_deck=Deck([SELL_49, SELL_92]),
        providers=[
            Provider("PROXICOM", "PJSIP/{number}@proxicom", Deck([Rate("49", 500)])),
            Provider("PAKLINE", "PJSIP/{number}@pakline", Deck([Rate("92", 800)])),
        ],
        node_id="t1",
    )
    await engine.start()
    outbox = Outbox()
    out_port = reactor.listenTCP(0, server.Site(outbox), interface="127.0.0.1")
    (tmp_path / "token").write_text(TOKEN)
    (tmp_path / "hmac").write_text(HMAC_KEY)
    (tmp_path / "forwarder_token").write_text(FORWARDER_TOKEN)
    post_url = f"http://127.0.0.1:{out_port.getHost().port}/out"
    config = parse_config(CONFIG.format(post_url=post_url), tmp_path / "callbackd.ini", {})
    service = SmsService(config, store, engine, reactor)
    service.startService()
    root = WebRootResource()
    root.add_child("sms", service.resource)
    port = reactor.listenTCP(0, server.Site(root), interface="127.0.0.1")
    yield Setup(store, switch, service, outbox, port.getHost().port)
    await port.stopListening()
    await service.stopService()
    engine.stop()
    await out_port.stopListening()
    await store.disconnect()


def originated(setup) -> list[str]:
    """The sources originated so far (one per callback placed)."""
    return [r.channel_id for r in setup.switch.originated]


# -- each format and auth kind ------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_form_with_token_header(sms):
    assert await answer(await sms.form("I")) == (200, "accepted\n")
    assert (await sms.reply()).startswith("Your balance: 100.00 EUR")
    assert await sms.store.pending_inbound_sms() == []


@pytest_twisted.ensureDeferred
async def test_kannel_get_url_with_token_in_query_places_callback(sms):
    fields = {"from": "4930123456", "to": "4930999", "text": f"D.{DESTINATION}", "id": "u-1"}
    assert await answer(await sms.kannel(fields)) == (200, "")
    reply = await sms.reply(to="4930123456")
    assert reply.startswith("Callback ") and f"then {DESTINATION}" in reply
    assert len(originated(sms)) == 1


@pytest_twisted.ensureDeferred
async def test_kannel_ucs2_as_kannel_delivers_it(sms):
    """coding=2, charset=UTF-16BE, the text as raw UTF-16BE bytes: read, answered."""
    text = "B.office"
    fields = {
        "from": ALICE_PHONE,
        "to": "4930999",
        "text": text.encode("utf-16-be"),
        "coding": "2",
        "charset": "UTF-16BE",
        "id": "u-2",
    }
    assert await answer(await sms.kannel(fields)) == (200, "")
    assert f"then {DESTINATION}" in await sms.reply()
    assert len(originated(sms)) == 1


@pytest_twisted.ensureDeferred
async def test_kannel_post_url_from_allowed_address(sms):
    headers = {
        "Content-Type": 'text/plain; charset="UTF-8"',
        "X-Kannel-From": ALICE_PHONE,
        "X-Kannel-To": "4930999",
    }
    response = await sms.post("kpost", b"I", headers, query="id=p-1")
    assert await answer(response) == (200, "")
    assert (await sms.reply()).startswith("Your balance")


@pytest_twisted.ensureDeferred
async def test_json_with_signature(sms):
    body = json.dumps({"from": ALICE_PHONE, "to": "4930999", "text": "I", "id": "j-1"}).encode()
    signature = hmac.new(HMAC_KEY.encode(), body, hashlib.sha256).hexdigest()
    response = await sms.post(
        "json", body, {"Content-Type": "application/json", "X-Signature": f"sha256={signature}"}
    )
    assert await answer(response) == (200, '{"accepted": true}\n')
    assert (await sms.reply()).startswith("Your balance")


@pytest_twisted.ensureDeferred
async def test_forwarder_with_bearer_token(sms):
    body = json.dumps({"from": ALICE_PHONE, "text": "I", "receivedStamp": 1700000000123}).encode()
    response = await sms.post("forwarder", body, {"Authorization": f"Bearer {FORWARDER_TOKEN}"})
    assert await answer(response) == (200, '{"accepted": true}\n')
    assert (await sms.reply()).startswith("Your balance")


# -- refused requests: 4xx, nothing recorded, nothing sent ------------------------------


@pytest_twisted.ensureDeferred
async def test_refused_requests(sms):
    fields = {"from": ALICE_PHONE, "to": "4930999", "text": f"D.{DESTINATION}", "id": "x"}
    body = json.dumps({"from": ALICE_PHONE, "to": "1", "text": "I"}).encode()
    cases = [
        (sms.kannel(fields, token="wrong"), 401, "Missing or wrong token."),
        (sms.kannel(fields, token=None), 401, "Missing or wrong token."),
        (sms.post("json", body, {"X-Signature": "0" * 64}), 401, "Wrong signature."),
        (sms.post("json", body), 401, "Missing signature."),
        (sms.post("faraway", b"sender=1&message=I"), 403, "not allowed"),
        (sms.post("forwarder", body, {"Authorization": "Bearer nope"}), 401, "token"),
        (treq.get(sms.base + "form"), 405, "use POST"),
        (treq.get(sms.base + "nothere"), 404, ""),
    ]
    for request, code, words in cases:
        status, text = await answer(await request)
        assert status == code, (status, text)
        assert words in text
    await sms.settle()
    assert await sms.store.pending_inbound_sms() == []
    assert sms.outbox.messages == [] and originated(sms) == []


@pytest_twisted.ensureDeferred
async def test_malformed_requests_are_400_with_a_clear_text(sms):
    signed = {}

    def signature(body):
        digest = hmac.new(HMAC_KEY.encode(), body, hashlib.sha256).hexdigest()
        signed["X-Signature"] = digest
        return dict(signed)

    def json_post(body):
        return sms.post("json", body, signature(body))

    cases = [
        (json_post(b""), "The body is not a JSON object."),
        (json_post(b"garbage{"), "The body is not a JSON object."),
        (json_post(b'{"from": "+49", "to": "1"}'), "Missing field text."),
        (json_post(b'{"from": "alice", "to": "1", "text": "I"}'), "Field from is not a phone"),
        (json_post(b'{"from": "1", "to": "1", "text": "\\ud800"}'), "Field text is not in"),
        (json_post(b"\xff\xfe{}"), "Field body is not in the declared"),
        (json_post(b'{"x": "' + b"a" * 10_000 + b'"}'), "too long"),
        (sms.form("I", sender=""), "Field sender is not a phone number."),
        (
            sms.post("form", b"sender=1&message=%ff%fe", FORM_HEADERS),
            "Field message is not in",
        ),
        (sms.kannel({"from": ALICE_PHONE, "text": "I"}), "Missing field to."),
    ]
    for request, words in cases:
        status, text = await answer(await request)
        assert 400 <= status < 500 and words in text, (status, text)
    await sms.settle()
    assert await sms.store.pending_inbound_sms() == []
    assert sms.outbox.messages == [] and originated(sms) == []


# -- bad messages: a clear reply SMS, no callback -------------------------------------------


@pytest_twisted.ensureDeferred
async def test_bad_messages_get_clear_replies_and_no_callback(sms):
    cases = [
        ("hello world", "Unknown word hello. Send HELP for the commands."),
        ("   ", "Send a command, or HELP for the list."),
        ("D.123 X.9", "Unknown word X.9. Send HELP for the commands."),
        ("B.nobody", "No phonebook entry nobody."),
        ("U.alice P.secret pw D.123", "The value of P. is not valid (no spaces inside a value)."),
    ]
    for n, (text, expected) in enumerate(cases):
        assert (await answer(await sms.form(text, id=f"bad-{n}")))[0] == 200
        assert await sms.reply() == expected
    assert (await answer(await sms.form(f"U.alice P.wrong D.{DESTINATION}", sender=STRANGER)))[
        0
    ] == 200
    assert await sms.reply(to=STRANGER) == "Wrong username or password."
    assert originated(sms) == []


@pytest_twisted.ensureDeferred
async def test_replayed_request_gets_the_same_answer_and_one_callback(sms):
    """The same message id twice, and the same sender and text without an id."""
    fields = {"from": ALICE_PHONE, "to": "4930999", "text": f"D.{DESTINATION}", "id": "r-1"}
    first = await answer(await sms.kannel(fields))
    second = await answer(await sms.kannel(fields))
    assert first == second == (200, "")
    await sms.reply()
    assert len(originated(sms)) == 1
    assert await answer(await sms.form("I")) == await answer(await sms.form("I"))
    await sms.reply()
    await sms.settle()
    assert [m["text"] for m in sms.outbox.messages if m["text"].startswith("Your balance")] != []
    assert len([m for m in sms.outbox.messages if m["text"].startswith("Your balance")]) == 1


@pytest_twisted.ensureDeferred
async def test_accepted_not_handled_is_handled_at_start(sms):
    """A message recorded by a run that died before handling it is handled by the next."""
    record = {
        "gateway": "form",
        "sender": ALICE_PHONE,
        "recipient": "",
        "text": "I",
        "message_id": "lost-1",
        "received_at": None,
    }
    now = reactor.seconds()
    assert await sms.store.record_inbound_sms(["id:form:lost-1"], record, now, 600.0)
    assert await sms.service._handle_pending() == 1
    assert (await sms.reply()).startswith("Your balance")
    assert await sms.store.pending_inbound_sms() == []


# -- arbitrary input ----------------------------------------------------------------------

_FIELDS = st.dictionaries(
    st.sampled_from(["sender", "message", "to", "id", "timestamp", "token"]) | st.text(max_size=8),
    st.binary(max_size=64) | st.text(max_size=64).map(str.encode),
    max_size=6,
)


def examples(strategy, count=60) -> list:
    """``count`` values hypothesis draws from ``strategy`` (the endpoint runs on the
    reactor, which a hypothesis test cannot wait on; the failing value is in the
    assertion's message instead of shrunk)."""
    drawn: list = []

    @settings(
        max_examples=count, database=None, deadline=None, suppress_health_check=list(HealthCheck)
    )
    @given(strategy)
    def draw(value):
        drawn.append(value)

    draw()
    return drawn


@pytest_twisted.ensureDeferred
async def test_any_text_is_accepted_or_refused_never_fails(sms):
    """Arbitrary text from a known phone: 200 or 400, never a 5xx; every accepted one is
    handled (answered, nothing left pending)."""
    for text in examples(st.text(max_size=200)):
        status, body = await _form(sms, {"sender": ALICE_PHONE, "message": text})
        assert status in (200, 400), (text, status, body)
    await sms.settle(1.0)
    assert await sms.store.pending_inbound_sms() == []


@pytest_twisted.ensureDeferred
async def test_any_form_fields_are_accepted_or_refused_never_fail(sms):
    for fields in examples(_FIELDS):
        status, body = await _form(sms, fields)
        assert status in (200, 400), (fields, status, body)


async def _form(sms, fields):
    pairs = {k.encode("utf-8", "surrogatepass"): v for k, v in fields.items()}
    body = urllib.parse.urlencode(pairs).encode()
    return await answer(await sms.post("form", body, FORM_HEADERS))


@pytest_twisted.ensureDeferred
async def test_old_pending_message_is_dropped_at_start(sms):
    """A record older than [sms] recover_max_age is logged and forgotten, not handled."""
    record = {
        "gateway": "form",
        "sender": ALICE_PHONE,
        "recipient": "",
        "text": f"D.{DESTINATION}",
        "message_id": "old-1",
        "received_at": None,
    }
    then = reactor.seconds() - 3600
    assert await sms.store.record_inbound_sms(["id:form:old-1"], record, then, 600.0)
    assert await sms.service._handle_pending() == 0
    assert await sms.store.pending_inbound_sms() == []
    await sms.settle()
    assert originated(sms) == [] and sms.outbox.messages == []


@pytest_twisted.ensureDeferred
async def test_gateway_over_its_limit_gets_503_and_retry_after(sms):
    sms.service.gateways["form"].throttle.limit = 1
    assert (await answer(await sms.form("I", id="g-1")))[0] == 200
    response = await sms.form("I", id="g-2")
    assert response.code == 503
    assert response.headers.getRawHeaders(b"retry-after") == [b"1"]
    assert "Too many messages" in (await response.content()).decode()
    await sms.reply()
    await sms.settle()
    assert [key for key, _, _ in await sms.store.pending_inbound_sms()] == []


@pytest_twisted.ensureDeferred
async def test_store_down_is_503_and_nothing_handled(sms):
    """The message cannot be recorded: 503 (the gateway retries), not acknowledged."""
    await sms.store.disconnect()
    try:
        status, text = await answer(await sms.form(f"D.{DESTINATION}", id="down-1"))
    finally:
        await sms.store.connect(timeout=5)
    assert (status, text) == (503, "Cannot record the message now; try again later.\n")
    await sms.settle()
    assert originated(sms) == []
    # the gateway's retry, once the store is back, is the message's first acceptance
    assert (await answer(await sms.form(f"D.{DESTINATION}", id="down-1")))[0] == 200
    assert "Callback" in await sms.reply()
