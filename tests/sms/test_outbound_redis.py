"""The sender end to end: RedisStore on a real redis-server, KannelSendSms over treq."""

from __future__ import annotations

import pytest_twisted
import treq
from twisted.internet import reactor, task
from twisted.web import server

from callbackd.config import Secret
from callbackd.sms.outbound import KannelSendSms, SmsSender
from tests.sms.test_outbound_gateways import Recorder
from tests.stores import redis_store


async def wait_for(predicate, timeout=5.0):
    """Poll ``predicate`` on the real reactor until it holds."""
    for _ in range(int(timeout / 0.02)):
        if predicate():
            return
        await task.deferLater(reactor, 0.02, lambda: None)
    raise AssertionError("timed out")


def accepted(recorder: Recorder) -> list[dict]:
    return [r for r in recorder.requests if r["answered"] == 202]


@pytest_twisted.ensureDeferred
async def test_reply_survives_gateway_outage_and_restart(clean_redis):
    """Queued while Kannel answers 503 and the daemon restarts: sent once when it is back."""
    recorder = Recorder(code=503, body=b"down")
    port = reactor.listenTCP(0, server.Site(recorder), interface="127.0.0.1")
    base = f"http://127.0.0.1:{port.getHost().port}"
    gateways = {"kannel": KannelSendSms(base, "u", Secret("p"), treq, timeout=2.0)}

    async def daemon():
        store = redis_store(clean_redis.port)
        await store.connect(timeout=5)
        sender = SmsSender(store, gateways, reactor, backoff=lambda n: 0.1)
        sender.startService()
        return store, sender

    store, sender = await daemon()
    try:
        assert await sender.send("reply-1", "+4930123", "Callback placed", "kannel") is True
        await wait_for(lambda: len(recorder.requests) >= 2)
        await sender.stopService()
        await store.disconnect()
        recorder.code = 202
        store, sender = await daemon()
        await wait_for(lambda: accepted(recorder))
        assert await sender.send("reply-1", "+4930123", "Callback placed", "kannel") is False
        await task.deferLater(reactor, 0.5, lambda: None)
        [ok] = accepted(recorder)
        assert ok["args"]["text"] == ["Callback placed"]
        assert await store.next_sms_due() is None
        assert await store.dead_sms() == []
    finally:
        await sender.stopService()
        await store.disconnect()
        await port.stopListening()
