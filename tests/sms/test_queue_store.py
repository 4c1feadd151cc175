"""The outbound SMS queue of the IStore contract, against MemoryStore and RedisStore
(the suite's ``store`` fixture)."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import defer

from callbackd.core.model import OutboundSms
from callbackd.store.interface import SMS_LEASE, InvalidArgument
from tests.stores import redis_store


@pytest_twisted.ensureDeferred
async def test_enqueue_then_claim(store):
    """A queued SMS is claimed when due with its fields, its not_before moved by the lease."""
    assert await store.enqueue_sms("m1", "+4930123", "Hello", "kannel", 100.0) is True
    assert await store.due_sms(99.0, 10) == []
    [msg] = await store.due_sms(100.0, 10)
    assert isinstance(msg, OutboundSms)
    assert (msg.id, msg.to, msg.text, msg.gateway, msg.attempts) == (
        "m1",
        "+4930123",
        "Hello",
        "kannel",
        0,
    )
    assert msg.not_before == 100.0 + SMS_LEASE
    assert await store.next_sms_due() == 100.0 + SMS_LEASE


@pytest_twisted.ensureDeferred
async def test_enqueue_is_idempotent(store):
    """A second enqueue of the same id changes nothing, queued or sent."""
    assert await store.enqueue_sms("m1", "+1", "first", "kannel", 0.0) is True
    assert await store.enqueue_sms("m1", "+2", "second", "kannel", 0.0) is False
    [msg] = await store.due_sms(0.0, 10)
    assert msg.text == "first"
    await store.sms_sent("m1")
    assert await store.enqueue_sms("m1", "+1", "first", "kannel", 0.0) is False
    assert await store.next_sms_due() is None
    assert await store.due_sms(1e9, 10) == []


@pytest_twisted.ensureDeferred
async def test_two_claimers_never_share_a_message(store):
    """Concurrent claims split the due messages: none is handed out twice in a lease."""
    for i in range(10):
        await store.enqueue_sms(f"m{i}", "+1", f"text {i}", "kannel", float(i))
    batches = await defer.gatherResults([store.due_sms(50.0, 4) for _ in range(4)])
    ids = [m.id for batch in batches for m in batch]
    assert sorted(ids) == sorted(f"m{i}" for i in range(10))
    assert len(ids) == len(set(ids))
    # the lease ends: unconfirmed messages come due again
    assert len(await store.due_sms(50.0 + SMS_LEASE, 100)) == 10


@pytest_twisted.ensureDeferred
async def test_claims_oldest_due_first_up_to_limit(store):
    """due_sms hands out the earliest not_before first, at most ``limit``."""
    await store.enqueue_sms("late", "+1", "x", "kannel", 5.0)
    await store.enqueue_sms("early", "+1", "x", "kannel", 1.0)
    await store.enqueue_sms("middle", "+1", "x", "kannel", 3.0)
    assert [m.id for m in await store.due_sms(10.0, 2)] == ["early", "middle"]
    assert await store.next_sms_due() == 5.0


@pytest_twisted.ensureDeferred
async def test_retry_requeues_with_attempts_and_error(store):
    """sms_retry puts a claimed SMS back for later with its attempt count and error."""
    await store.enqueue_sms("m1", "+1", "x", "kannel", 0.0)
    await store.due_sms(0.0, 1)
    assert await store.sms_retry("m1", 30.0, 1, "gateway down") is True
    assert await store.due_sms(29.0, 1) == []
    [msg] = await store.due_sms(30.0, 1)
    assert (msg.attempts, msg.last_error) == (1, "gateway down")
    assert await store.sms_retry("nope", 30.0, 1, "x") is False


@pytest_twisted.ensureDeferred
async def test_failed_goes_to_dead_letters(store):
    """sms_failed takes the SMS out of the queue into the dead letters, for good."""
    await store.enqueue_sms("m1", "+1", "x", "kannel", 0.0)
    await store.enqueue_sms("m2", "+1", "y", "kannel", 0.0)
    assert await store.sms_failed("m1", "bad number") is True
    assert await store.sms_failed("m1", "again") is False
    [dead] = await store.dead_sms()
    assert (dead.id, dead.text, dead.last_error) == ("m1", "x", "bad number")
    assert [m.id for m in await store.due_sms(1e9, 10)] == ["m2"]
    assert await store.enqueue_sms("m1", "+1", "x", "kannel", 0.0) is False
    assert await store.sms_retry("m1", 5.0, 3, "x") is False


@pytest_twisted.ensureDeferred
async def test_bad_arguments_are_refused(store):
    """Empty ids, numbers or texts, too long gateway names are InvalidArgument."""
    for args in [
        ("", "+1", "x", "k"),
        ("m", "", "x", "k"),
        ("m", "+1", "", "k"),
        ("m", "+1", "x", "g" * 201),
    ]:
        with pytest.raises(InvalidArgument):
            await store.enqueue_sms(*args, 0.0)


@pytest_twisted.ensureDeferred
async def test_empty_gateway_is_the_default_one(store):
    """Gateway "" (the [sms] default gateway) is queued and claimed as it is."""
    assert await store.enqueue_sms("m", "+1", "code 123456", "", 0.0) is True
    [msg] = await store.due_sms(0.0, 10)
    assert msg.gateway == ""


@pytest_twisted.ensureDeferred
async def test_queue_survives_a_new_connection(clean_redis):
    """What one RedisStore queued and claimed, a new one (a restarted daemon) finds."""
    first = redis_store(clean_redis.port)
    await first.connect(timeout=5)
    await first.enqueue_sms("m1", "+1", "ünïcode €", "kannel", 10.0)
    await first.enqueue_sms("m2", "+1", "sent", "kannel", 10.0)
    await first.due_sms(10.0, 10)
    await first.sms_sent("m2")
    await first.disconnect()
    second = redis_store(clean_redis.port)
    await second.connect(timeout=5)
    try:
        [msg] = await second.due_sms(10.0 + SMS_LEASE, 10)
        assert (msg.id, msg.text) == ("m1", "ünïcode €")
        assert await second.enqueue_sms("m2", "+1", "sent", "kannel", 0.0) is False
    finally:
        await second.disconnect()
