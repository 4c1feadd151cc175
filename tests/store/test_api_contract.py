"""The REST API's part of the IStore contract (API keys, idempotency keys, webhooks and
their queue), against MemoryStore and RedisStore (the suite's ``store`` fixture)."""

from __future__ import annotations

import hashlib

import pytest
import pytest_twisted
from hypothesis import given
from hypothesis import strategies as st

from callbackd.core.model import Account, ApiKey, Webhook, WebhookDelivery
from callbackd.store import records
from callbackd.store.interface import WEBHOOK_LEASE, InvalidArgument, NoSuchAccount
from tests.store.test_contract import fails, make_account

FP1 = hashlib.sha256(b"one").hexdigest()
FP2 = hashlib.sha256(b"two").hexdigest()


# -- API keys -----------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_api_key_opens_its_account_until_revoked(store):
    """A new key's secret names its account; the listing shows no secret; revoked, it is dead."""
    await make_account(store)
    await store.create_account(Account("bob"), "pw")
    key_id, secret = await store.create_api_key("alice", "laptop")
    other_id, other = await store.create_api_key("bob", "")
    assert secret.startswith("cbk_" + key_id + "_") and key_id != other_id
    assert await store.account_for_api_key(secret) == "alice"
    assert await store.account_for_api_key(other) == "bob"
    [listed] = await store.list_api_keys("alice")
    assert isinstance(listed, ApiKey)
    assert (listed.key_id, listed.username, listed.label) == (key_id, "alice", "laptop")
    assert secret not in repr(listed)
    assert await store.revoke_api_key("bob", key_id) is False  # not bob's
    assert await store.revoke_api_key("alice", key_id) is True
    assert await store.revoke_api_key("alice", key_id) is False
    assert await store.account_for_api_key(secret) is None
    assert await store.list_api_keys("alice") == []
    assert await store.account_for_api_key(other) == "bob"


@pytest_twisted.ensureDeferred
async def test_api_keys_are_listed_oldest_first_and_kept_hashed(store):
    await make_account(store)
    made = [await store.create_api_key("alice", f"k{i}") for i in range(3)]
    listed = await store.list_api_keys("alice")
    assert sorted(k.key_id for k in listed) == sorted(key_id for key_id, _ in made)
    assert [k.created_at for k in listed] == sorted(k.created_at for k in listed)


@pytest_twisted.ensureDeferred
async def test_api_key_refusals(store):
    await make_account(store)
    await fails(store.create_api_key("nobody", "x"), NoSuchAccount)
    await fails(store.create_api_key("alice", "x" * 65), InvalidArgument)
    await fails(store.create_api_key("alice", "tab\there"), InvalidArgument)
    for guess in ["", "cbk_", "nonsense", "cbk_000000000000_" + "a" * 40, "x" * 10_000]:
        assert await store.account_for_api_key(guess) is None


@given(st.text(max_size=80))
def test_only_well_formed_secrets_are_hashed(text):
    digest = records.api_key_hash(text)
    assert digest is None or (len(digest) == 64 and text.startswith("cbk_"))


def test_a_new_secret_is_well_formed():
    key_id, secret = records.new_api_key()
    assert records.api_key_hash(secret) == hashlib.sha256(secret.encode()).hexdigest()
    assert len(key_id) == 12


# -- idempotency keys ---------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_idempotency_key_claim_settle_replay(store):
    """The first claim wins; later ones read the record, with its response once settled."""
    assert await store.claim_idempotency_key("alice", "k-1", FP1, 60) is None
    assert await store.claim_idempotency_key("alice", "k-1", FP2, 60) == {
        "fingerprint": FP1,
        "response": None,
    }
    assert await store.claim_idempotency_key("bob", "k-1", FP2, 60) is None  # per account
    await store.settle_idempotency_key("alice", "k-1", FP1, '{"status": 201}', 60)
    assert await store.claim_idempotency_key("alice", "k-1", FP1, 60) == {
        "fingerprint": FP1,
        "response": '{"status": 201}',
    }
    await store.release_idempotency_key("alice", "k-1")
    assert await store.claim_idempotency_key("alice", "k-1", FP2, 60) is None


@pytest_twisted.ensureDeferred
async def test_idempotency_key_expires(store):
    assert await store.claim_idempotency_key("alice", "k", FP1, 0.05) is None
    if hasattr(store.clock, "advance"):
        store.clock.advance(1)
    else:
        from twisted.internet import reactor, task

        await task.deferLater(reactor, 0.2, lambda: None)
    assert await store.claim_idempotency_key("alice", "k", FP2, 60) is None


@pytest.mark.parametrize("key", ["", "x" * 256, "with space", "é"])
@pytest_twisted.ensureDeferred
async def test_bad_idempotency_keys(store, key):
    await fails(store.claim_idempotency_key("alice", key, FP1, 60), InvalidArgument)


# -- webhooks -----------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_webhook_url_set_changed_removed(store):
    """The signing secret is made once and kept when the URL changes."""
    await make_account(store)
    assert await store.get_webhook("alice") is None
    hook = await store.set_webhook("alice", "https://example.test/hook")
    assert isinstance(hook, Webhook) and hook.secret.startswith("whsec_")
    assert await store.get_webhook("alice") == hook
    moved = await store.set_webhook("alice", "http://127.0.0.1:9/other?x=1")
    assert moved == Webhook("http://127.0.0.1:9/other?x=1", hook.secret)
    assert await store.set_webhook("alice", "") is None
    assert await store.get_webhook("alice") is None
    await fails(store.set_webhook("nobody", "https://example.test/"), NoSuchAccount)
    for bad in ["ftp://x/", "https://", "https://a b/", "javascript:alert(1)", "https://x/\n"]:
        await fails(store.set_webhook("alice", bad), InvalidArgument)


@pytest_twisted.ensureDeferred
async def test_webhook_queue(store):
    """Enqueue (idempotent), claim with a lease, retry, deliver, dead-letter."""
    assert await store.enqueue_webhook("d1", "alice", '{"a":1}', 100.0) is True
    assert await store.enqueue_webhook("d1", "alice", '{"a":2}', 100.0) is False
    assert await store.enqueue_webhook("d2", "alice", '{"b":1}', 200.0) is True
    assert await store.due_webhooks(99.0, 10) == []
    [first] = await store.due_webhooks(100.0, 10)
    assert isinstance(first, WebhookDelivery)
    assert (first.id, first.username, first.body) == ("d1", "alice", '{"a":1}')
    assert first.not_before == 100.0 + WEBHOOK_LEASE
    assert await store.next_webhook_due() == 100.0 + WEBHOOK_LEASE
    assert await store.webhook_retry("d1", 150.0, 1, "HTTP 503") is True
    [again] = await store.due_webhooks(150.0, 10)
    assert (again.attempts, again.last_error) == (1, "HTTP 503")
    await store.webhook_sent("d1")
    assert await store.enqueue_webhook("d1", "alice", '{"a":1}', 0.0) is False  # delivered
    assert await store.webhook_retry("d1", 1.0, 2, "x") is False
    assert await store.next_webhook_due() == 200.0
    assert await store.webhook_failed("d2", "HTTP 410") is True
    assert await store.webhook_failed("d2", "again") is False
    [dead] = await store.dead_webhooks()
    assert (dead.id, dead.last_error) == ("d2", "HTTP 410")
    assert await store.next_webhook_due() is None
    await fails(store.enqueue_webhook("d3", "alice", "", 0.0), InvalidArgument)
    await fails(store.enqueue_webhook("d3", "bad user!", "{}", 0.0), InvalidArgument)
