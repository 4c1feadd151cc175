"""SmsSender over a Clock, a MemoryStore and a fake gateway."""

from __future__ import annotations

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent
from zope.interface import implementer
from zope.interface.verify import verifyObject

from callbackd.config import Secret
from callbackd.core.model import OutboundSms
from callbackd.sms.outbound import (
    IOutboundGateway,
    KannelSendSms,
    PermanentSmsError,
    SmsSender,
    TransientSmsError,
)
from callbackd.store.memory import MemoryStore


@implementer(IOutboundGateway)
class FakeGateway:
    """Fails with the queued errors first, then takes every message."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.tries: list[tuple[float, str]] = []
        self.sent: list[OutboundSms] = []
        self.clock: Clock | None = None

    def send(self, msg: OutboundSms) -> defer.Deferred[None]:
        self.tries.append((self.clock.seconds() if self.clock else 0.0, msg.id))
        if self.errors:
            return defer.fail(self.errors.pop(0))
        self.sent.append(msg)
        return defer.succeed(None)


def make(gateway: FakeGateway, clock: Clock | None = None, store: MemoryStore | None = None, **kw):
    clock = clock or Clock()
    store = store or MemoryStore(clock)
    gateway.clock = clock
    kw.setdefault("backoff", lambda n: 5.0 * 2 ** (n - 1))
    sender = SmsSender(store, {"gw": gateway}, clock, **kw)
    return sender, store, clock


def test_fake_gateway_provides_the_interface():
    assert verifyObject(IOutboundGateway, FakeGateway())


def test_send_goes_out_at_once_and_once():
    """A queued message is sent on the kick, confirmed, and a resend of its id is a no-op."""
    gw = FakeGateway()
    sender, store, clock = make(gw)
    sender.startService()
    assert sender.send("m1", "+4930", "Hi", "gw").result is True
    assert [m.id for m in gw.sent] == ["m1"]
    assert sender.send("m1", "+4930", "Hi", "gw").result is False
    clock.advance(3600)
    assert [m.id for m in gw.sent] == ["m1"]
    assert store.next_sms_due().result is None
    assert not clock.getDelayedCalls()


def test_transient_failures_then_success_with_backoff():
    """Transient errors retry at the back-off's delays; the success is sent once."""
    gw = FakeGateway(TransientSmsError("down"), TransientSmsError("down"), OSError("refused"))
    sender, store, clock = make(gw)
    sender.startService()
    sender.send("m1", "+1", "Hi", "gw")
    for _ in range(100):
        clock.advance(1)
    assert gw.tries == [(0.0, "m1"), (5.0, "m1"), (15.0, "m1"), (35.0, "m1")]
    assert [m.id for m in gw.sent] == ["m1"]
    assert gw.sent[0].attempts == 3
    assert store.dead_sms().result == []
    assert not clock.getDelayedCalls()


def test_permanent_failure_is_a_dead_letter():
    """A permanent error dead-letters the message at once, with the error."""
    gw = FakeGateway(PermanentSmsError("kannel: HTTP 400"))
    sender, store, clock = make(gw)
    sender.startService()
    sender.send("m1", "+1", "Hi", "gw")
    clock.advance(3600)
    assert len(gw.tries) == 1
    [dead] = store.dead_sms().result
    assert (dead.id, dead.last_error) == ("m1", "kannel: HTTP 400")


def test_max_attempts_then_dead_letter():
    """After max_attempts transient failures the message is given up."""
    gw = FakeGateway(*[TransientSmsError("down")] * 10)
    sender, store, clock = make(gw, max_attempts=4, backoff=lambda n: 1.0)
    sender.startService()
    sender.send("m1", "+1", "Hi", "gw")
    clock.pump([1.0] * 20)
    assert len(gw.tries) == 4
    [dead] = store.dead_sms().result
    assert "4 attempts" in dead.last_error


def test_unknown_gateway_is_a_dead_letter():
    gw = FakeGateway()
    sender, store, clock = make(gw)
    sender.startService()
    sender.send("m1", "+1", "Hi", "elsewhere")
    assert [m.id for m in store.dead_sms().result] == ["m1"]


def test_restart_picks_up_unsent_messages():
    """A new sender on the same store sends what was queued, retried or left claimed."""
    clock = Clock()
    store = MemoryStore(clock)
    store.enqueue_sms("queued", "+1", "a", "gw", 0.0)
    store.enqueue_sms("later", "+1", "b", "gw", 50.0)
    store.enqueue_sms("claimed", "+1", "c", "gw", 0.0)
    # a sender that died mid-send: its claim runs out after the lease
    store.due_sms(0.0, 1, lease=30.0)
    gw = FakeGateway()
    sender, _, _ = make(gw, clock=clock, store=store)
    clock.advance(1)
    sender.startService()
    assert [m.id for m in gw.sent] == ["queued"]
    clock.advance(29)
    assert [m.id for m in gw.sent] == ["queued", "claimed"]
    clock.advance(20)
    assert [m.id for m in gw.sent] == ["queued", "claimed", "later"]


def test_store_outage_is_retried():
    """With the store down the sender tries again later and sends once it is back."""
    gw = FakeGateway()
    sender, store, clock = make(gw, store_retry=5.0)
    store.enqueue_sms("m1", "+1", "Hi", "gw", 0.0)
    store.available = False
    sender.startService()
    assert gw.sent == []
    store.available = True
    clock.advance(5)
    assert [m.id for m in gw.sent] == ["m1"]


def test_batches_drain_everything():
    """More due messages than a batch are all sent in one wake."""
    gw = FakeGateway()
    sender, store, clock = make(gw, batch=3)
    for i in range(10):
        store.enqueue_sms(f"m{i}", "+1", "x", "gw", 0.0)
    sender.startService()
    assert len(gw.sent) == 10


def test_stop_cancels_the_timer():
    gw = FakeGateway(TransientSmsError("down"))
    sender, store, clock = make(gw)
    sender.startService()
    sender.send("m1", "+1", "Hi", "gw")
    assert clock.getDelayedCalls()
    sender.stopService()
    assert not clock.getDelayedCalls()
    sender.send("m2", "+1", "Hi", "gw")
    assert len(gw.tries) == 1


class StatusHttp:
    """A treq stand-in answering every request with one status."""

    def __init__(self, code: int) -> None:
        self.code = code
        self.urls: list[str] = []

    def get(self, url: str, **kwargs) -> defer.Deferred:
        self.urls.append(url)
        return defer.succeed(self)

    def content(self) -> defer.Deferred[bytes]:
        return defer.succeed(b"")


def test_secrets_never_logged():
    """Retries and dead letters log the gateway's status, never the sendsms password."""
    http = StatusHttp(503)
    clock = Clock()
    store = MemoryStore(clock)
    gateway = KannelSendSms("http://kannel:13013", "user", Secret("hunter2pw"), http)
    sender = SmsSender(store, {"kannel": gateway}, clock, max_attempts=3, backoff=lambda n: 1.0)
    with capturedLogs() as events:
        sender.startService()
        sender.send("m1", "+1", "Hi", "kannel")
        clock.pump([1.0] * 5)
    assert "password=hunter2pw" in http.urls[0]
    assert len(http.urls) == 3
    logged = " ".join(formatEvent(e) + repr(e) for e in events)
    assert "HTTP 503" in logged
    assert "hunter2pw" not in logged
    assert "hunter2pw" not in store.dead_sms().result[0].last_error


def test_a_store_not_yet_up_at_start_is_no_warning_but_an_outage_is():
    """Before the store first answers (the daemon is starting) the retry is logged as
    information; once it has answered, the store going away is a warning."""
    gw = FakeGateway()
    sender, store, clock = make(gw, store_retry=5.0)
    store.available = False
    with capturedLogs() as events:
        sender.startService()
    assert [e["log_level"].name for e in events if "unavailable" in formatEvent(e)] == ["info"]
    store.available = True
    clock.advance(5)
    store.available = False
    with capturedLogs() as events:
        sender.kick()
    assert [e["log_level"].name for e in events if "unavailable" in formatEvent(e)] == ["warn"]
