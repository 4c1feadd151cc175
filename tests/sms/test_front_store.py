"""The SMS front's part of the IStore contract, against MemoryStore and RedisStore (the
suite's ``store`` fixture): inbound records, caller-ID codes, counters."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import reactor, task

from callbackd.core.model import Account
from callbackd.store.interface import InvalidArgument, NoSuchAccount
from callbackd.store.memory import MemoryStore


async def later(store, seconds: float) -> None:
    """Let ``seconds`` pass for the store: its clock (memory) or real time (Redis)."""
    if isinstance(store, MemoryStore):
        store.clock.advance(seconds)
    else:
        await task.deferLater(reactor, seconds, lambda: None)


async def account(store, username: str = "alice") -> None:
    await store.create_account(Account(username), "secret")


# -- inbound records ---------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_inbound_recorded_once_and_pending_until_handled(store):
    """A new message is recorded and pending; a retry (any of its keys) is not recorded."""
    record = {"sender": "+4930123", "text": "I", "gateway": "kannel"}
    assert await store.record_inbound_sms(["id:k:1"], record, 100.0, 60.0) is True
    assert await store.record_inbound_sms(["id:k:1"], {"other": 1}, 101.0, 60.0) is False
    assert await store.record_inbound_sms(["text:b", "id:k:1"], record, 101.0, 60.0) is False
    assert await store.record_inbound_sms(["id:k:2"], {"n": 2}, 102.0, 60.0) is True
    pending = await store.pending_inbound_sms()
    assert pending == [("id:k:1", record, 100.0), ("id:k:2", {"n": 2}, 102.0)]
    await store.inbound_sms_handled("id:k:1")
    assert [key for key, _, _ in await store.pending_inbound_sms()] == ["id:k:2"]
    # handled, the key is still seen within the window: a late retry is no new message
    assert await store.record_inbound_sms(["id:k:1"], record, 103.0, 60.0) is False


@pytest_twisted.ensureDeferred
async def test_inbound_key_forgotten_after_ttl(store):
    """After the window, the same key is a new message."""
    assert await store.record_inbound_sms(["text:x"], {}, 1.0, 0.2) is True
    await later(store, 0.3)
    assert await store.record_inbound_sms(["text:x"], {}, 2.0, 0.2) is True


@pytest_twisted.ensureDeferred
async def test_inbound_refuses_bad_arguments(store):
    for keys, record, ttl in (
        ([], {}, 1.0),
        ([""], {}, 1.0),
        (["k"], {"x": float("nan")}, 1.0),
        (["k"], ["not", "a", "dict"], 1.0),
        (["k"], {}, 0),
    ):
        with pytest.raises(InvalidArgument):
            await store.record_inbound_sms(keys, record, 1.0, ttl)
    assert await store.pending_inbound_sms() == []


# -- caller-ID codes ---------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_code_confirms_and_verifies_once(store):
    await account(store)
    await store.issue_caller_id_code("alice", "+4930111", "123456", 60.0)
    [cid] = await store.list_caller_ids("alice")
    assert (cid.number, cid.verified) == ("+4930111", False)
    assert await store.account_for_caller_id("+4930111") is None
    assert await store.confirm_caller_id_code("+4930111", "123456") == "alice"
    assert await store.account_for_caller_id("+4930111") == "alice"
    # used up
    assert await store.confirm_caller_id_code("+4930111", "123456") is None


@pytest_twisted.ensureDeferred
async def test_code_is_bound_to_its_number(store):
    await account(store)
    await store.issue_caller_id_code("alice", "+4930111", "123456", 60.0)
    await store.issue_caller_id_code("alice", "+4930222", "654321", 60.0)
    assert await store.confirm_caller_id_code("+4930222", "123456") is None
    assert await store.confirm_caller_id_code("+4930333", "123456") is None
    assert await store.confirm_caller_id_code("+4930111", "123456") == "alice"
    assert await store.account_for_caller_id("+4930222") is None


@pytest_twisted.ensureDeferred
async def test_code_attempts_are_limited(store):
    """Wrong guesses use the code's attempts up; then even the right code fails."""
    await account(store)
    await store.issue_caller_id_code("alice", "+4930111", "123456", 60.0, attempts=3)
    for guess in ("000000", "111111"):
        assert await store.confirm_caller_id_code("+4930111", guess) is None
    assert await store.confirm_caller_id_code("+4930111", "123456") == "alice"
    await store.issue_caller_id_code("alice", "+4930222", "123456", 60.0, attempts=2)
    for guess in ("000000", "111111"):
        assert await store.confirm_caller_id_code("+4930222", guess) is None
    assert await store.confirm_caller_id_code("+4930222", "123456") is None
    assert await store.account_for_caller_id("+4930222") is None


@pytest_twisted.ensureDeferred
async def test_code_expires(store):
    await account(store)
    await store.issue_caller_id_code("alice", "+4930111", "123456", 0.2)
    await later(store, 0.3)
    assert await store.confirm_caller_id_code("+4930111", "123456") is None


@pytest_twisted.ensureDeferred
async def test_new_code_replaces_old(store):
    await account(store)
    await store.issue_caller_id_code("alice", "+4930111", "123456", 60.0)
    await store.issue_caller_id_code("alice", "+4930111", "999999", 60.0)
    assert await store.confirm_caller_id_code("+4930111", "123456") is None
    assert await store.confirm_caller_id_code("+4930111", "999999") == "alice"


@pytest_twisted.ensureDeferred
async def test_code_for_another_accounts_number_refused(store):
    await account(store, "alice")
    await account(store, "bob")
    await store.add_caller_id("bob", "+4930111", verified=True)
    with pytest.raises(InvalidArgument):
        await store.issue_caller_id_code("alice", "+4930111", "123456", 60.0)
    with pytest.raises(NoSuchAccount):
        await store.issue_caller_id_code("carol", "+4930999", "123456", 60.0)
    for number, code in (("4930111", "123456"), ("+4930999", "12"), ("+4930999", "12 34")):
        with pytest.raises(InvalidArgument):
            await store.issue_caller_id_code("alice", number, code, 60.0)
    assert await store.account_for_caller_id("+4930111") == "bob"


@pytest_twisted.ensureDeferred
async def test_removed_number_is_not_verified_by_its_code(store):
    await account(store)
    await store.issue_caller_id_code("alice", "+4930111", "123456", 60.0)
    await store.remove_caller_id("alice", "+4930111")
    assert await store.confirm_caller_id_code("+4930111", "123456") is None
    assert await store.list_caller_ids("alice") == []


# -- counters ----------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_counter_counts_within_its_window(store):
    assert await store.hit_count("sms:x") == 0
    assert [await store.count_hit("sms:x", 0.3) for _ in range(3)] == [1, 2, 3]
    assert await store.hit_count("sms:x") == 3
    assert await store.count_hit("sms:y", 0.3) == 1
    await later(store, 0.4)
    assert await store.hit_count("sms:x") == 0
    assert await store.count_hit("sms:x", 0.3) == 1


@pytest_twisted.ensureDeferred
async def test_counter_cleared(store):
    await store.count_hit("sms:x", 60.0)
    await store.clear_hits("sms:x")
    assert await store.hit_count("sms:x") == 0
    with pytest.raises(InvalidArgument):
        await store.count_hit("", 60.0)
    with pytest.raises(InvalidArgument):
        await store.count_hit("sms:x", 0)
