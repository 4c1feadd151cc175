"""KannelSendSms and HttpPostGateway against a real HTTP server on loopback, with treq."""

from __future__ import annotations

import json

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.web import resource, server

from callbackd.config import Secret
from callbackd.core.model import OutboundSms
from callbackd.core.smstext import count_segments
from callbackd.sms.outbound import (
    HttpPostGateway,
    KannelSendSms,
    PermanentSmsError,
    TransientSmsError,
)


class Recorder(resource.Resource):
    """Answers every request with ``code``/``body`` and keeps what it received."""

    isLeaf = True

    def __init__(self, code: int = 202, body: bytes = b"0: Accepted for delivery") -> None:
        super().__init__()
        self.code = code
        self.body = body
        self.requests: list[dict] = []

    def render(self, request):
        self.requests.append(
            {
                "method": request.method,
                "path": request.path,
                "args": {k.decode(): [v.decode() for v in vs] for k, vs in request.args.items()},
                "headers": dict(request.requestHeaders.getAllRawHeaders()),
                "body": request.content.read(),
                "answered": self.code,
            }
        )
        request.setResponseCode(self.code)
        return self.body


@pytest.fixture
def web():
    """A twisted.web server on a loopback port: (recorder, base URL)."""
    recorder = Recorder()
    port = reactor.listenTCP(0, server.Site(recorder), interface="127.0.0.1")
    yield recorder, f"http://127.0.0.1:{port.getHost().port}"
    port.stopListening()


def sms(text: str, **kw) -> OutboundSms:
    return OutboundSms(kw.pop("id", "m1"), kw.pop("to", "+4930123456"), text, "kannel", **kw)


def kannel(base: str, **kw) -> KannelSendSms:
    return KannelSendSms(base, "cbuser", Secret("s3cret pw"), treq, **kw)


@pytest_twisted.ensureDeferred
async def test_kannel_gsm7_query(web):
    """A GSM-7 text goes as coding 0 with the sendsms user's credentials."""
    recorder, base = web
    await kannel(base, sender="12345").send(sms("Callback to +4930 placed & ok"))
    [req] = recorder.requests
    assert req["method"] == b"GET"
    assert req["path"] == b"/cgi-bin/sendsms"
    assert req["args"] == {
        "username": ["cbuser"],
        "password": ["s3cret pw"],
        "to": ["+4930123456"],
        "from": ["12345"],
        "text": ["Callback to +4930 placed & ok"],
        "coding": ["0"],
        "charset": ["UTF-8"],
    }


@pytest_twisted.ensureDeferred
async def test_kannel_ucs2_query(web):
    """A text outside the GSM alphabet goes as coding 2, charset UTF-8, unchanged."""
    recorder, base = web
    await kannel(base).send(sms("Llamada 📞 a José — 你好"))
    [req] = recorder.requests
    assert req["args"]["text"] == ["Llamada 📞 a José — 你好"]
    assert req["args"]["coding"] == ["2"]
    assert req["args"]["charset"] == ["UTF-8"]
    assert "from" not in req["args"]


@pytest_twisted.ensureDeferred
async def test_kannel_long_text_is_trimmed_to_max_parts(web):
    """A text longer than max_parts hold goes in one request, trimmed with an ellipsis."""
    recorder, base = web
    await kannel(base, max_parts=2).send(sms("word " * 200))
    [req] = recorder.requests
    text = req["args"]["text"][0]
    assert text.startswith("word word") and len(text) < 1000
    assert count_segments(text) == 2
    assert req["args"]["coding"] == ["0"]


@pytest_twisted.ensureDeferred
async def test_kannel_delivery_reports(web):
    recorder, base = web
    await kannel(base, dlr_mask=31, dlr_url="http://127.0.0.1/dlr?id=%I").send(sms("Hi"))
    [req] = recorder.requests
    assert req["args"]["dlr-mask"] == ["31"]
    assert req["args"]["dlr-url"] == ["http://127.0.0.1/dlr?id=%I"]


@pytest.mark.parametrize(
    ("code", "error"),
    [(400, PermanentSmsError), (403, TransientSmsError), (503, TransientSmsError)],
)
@pytest_twisted.ensureDeferred
async def test_kannel_refusals(web, code, error):
    """4xx is permanent (but a wrong password may be fixed); 5xx is transient; no secret shows."""
    recorder, base = web
    recorder.code = code
    with pytest.raises(error) as info:
        await kannel(base).send(sms("Hi"))
    assert str(code) in str(info.value)
    assert "s3cret" not in str(info.value)


@pytest_twisted.ensureDeferred
async def test_unreachable_gateway_is_transient():
    """Nothing listening: a transient error."""
    port = reactor.listenTCP(0, server.Site(Recorder()), interface="127.0.0.1")
    base = f"http://127.0.0.1:{port.getHost().port}"
    await port.stopListening()
    with pytest.raises(TransientSmsError):
        await kannel(base).send(sms("Hi"))


@pytest_twisted.ensureDeferred
async def test_http_post_gateway(web):
    """The generic gateway POSTs JSON with the bearer token."""
    recorder, base = web
    recorder.code = 200
    await HttpPostGateway(base + "/sms", Secret("tok-123"), treq).send(sms("Hola José"))
    [req] = recorder.requests
    assert req["method"] == b"POST"
    assert req["path"] == b"/sms"
    assert req["headers"][b"Authorization"] == [b"Bearer tok-123"]
    assert req["headers"][b"Content-Type"] == [b"application/json"]
    assert json.loads(req["body"]) == {"id": "m1", "to": "+4930123456", "text": "Hola José"}


@pytest_twisted.ensureDeferred
async def test_http_post_gateway_refused(web):
    recorder, base = web
    recorder.code = 422
    with pytest.raises(PermanentSmsError) as info:
        await HttpPostGateway(base, Secret("tok-123"), treq).send(sms("x"))
    assert "tok-123" not in str(info.value)


@pytest_twisted.ensureDeferred
async def test_the_service_client_keeps_a_connection_per_message_of_a_batch():
    """SmsService's client (its own pool): two batches of 20 concurrent POSTs use 20
    connections, not 38 (treq's shared pool keeps 2 per host), and stopping closes them."""
    from twisted.internet import defer

    from callbackd.sms.service import SEND_CONNECTIONS, _http_client

    recorder = Recorder(code=200, body=b"")
    site = server.Site(recorder)
    connections = []
    build = site.buildProtocol

    def counted(addr):
        protocol = build(addr)
        connections.append(protocol)
        return protocol

    site.buildProtocol = counted
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    http, pool = _http_client(reactor)
    url = f"http://127.0.0.1:{port.getHost().port}/sms"
    gateway = HttpPostGateway(url, Secret("t0ken"), http)
    try:
        for batch in range(2):
            sends = [gateway.send(sms("hi", id=f"m{batch}-{i}")) for i in range(SEND_CONNECTIONS)]
            await defer.gatherResults(sends)
        assert len(recorder.requests) == 2 * SEND_CONNECTIONS
        assert len(connections) == SEND_CONNECTIONS
    finally:
        await pool.closeCachedConnections()
        await port.stopListening()
