"""The IStore contract of several daemons (ownership, leases, fenced writes, message
boxes), against MemoryStore and RedisStore (the suite's ``store`` fixture)."""

from __future__ import annotations

import pytest_twisted
from twisted.internet import reactor, task

from callbackd.store.interface import InvalidArgument
from callbackd.store.memory import MemoryStore
from tests.store.test_contract import cdr, fails, make_account

LEASE = 0.2


async def expire(store, seconds=LEASE * 1.5):
    """Let leases of ``LEASE`` run out: the memory store's clock, or real time for Redis."""
    if isinstance(store, MemoryStore):
        store.clock.advance(seconds)
    else:
        await task.deferLater(reactor, seconds, lambda: None)


@pytest_twisted.ensureDeferred
async def test_a_node_lease_is_held_until_it_expires(store):
    assert await store.renew_node("a", LEASE) is False  # new
    assert await store.renew_node("a", LEASE) is True
    await expire(store)
    assert await store.renew_node("a", LEASE) is False


@pytest_twisted.ensureDeferred
async def test_open_session_counts_the_accounts_sessions_in_flight(store):
    """The limit holds whichever daemon opens; an ended session frees its place."""
    await make_account(store)
    await store.renew_node("a", 60)
    await store.renew_node("b", 60)
    assert await store.open_session("s1", "a", "alice", 2) == 1
    assert await store.open_session("s2", "b", "alice", 2) == 1
    assert await store.open_session("s3", "a", "alice", 2) == 0
    assert await store.session_owner("s2") == ("b", 1)
    assert await store.session_owner("s3") is None
    assert await store.end_session_as("s2", cdr("s2", "alice", 1.0), "", "b", 1) is True
    assert await store.session_owner("s2") is None
    assert await store.open_session("s3", "a", "alice", 2) == 1


@pytest_twisted.ensureDeferred
async def test_a_live_owner_keeps_its_session_and_a_dead_ones_is_claimed_once(store):
    await store.renew_node("a", LEASE)
    await store.open_session("s1", "a", "alice", 5)
    await store.save_session_as("s1", {"n": 1}, "a", 1)
    assert await store.claim_session("s1", "b") == 0
    assert await store.claim_session("s1", "a") == 1
    assert await store.orphaned_sessions("b") == []
    await expire(store)
    assert await store.orphaned_sessions("b") == ["s1"]
    assert await store.orphaned_sessions("a") == []  # its own
    await store.renew_node("b", LEASE * 10)
    assert await store.claim_session("s1", "b") == 2
    assert await store.claim_session("s1", "c") == 0  # b is alive: never two owners
    assert await store.session_owner("s1") == ("b", 2)
    assert await store.orphaned_sessions("c") == []


@pytest_twisted.ensureDeferred
async def test_a_stale_owner_cannot_write(store):
    """After a takeover the old owner's saves and end are refused and change nothing."""
    await make_account(store)
    await store.open_session("s1", "a", "alice", 5)
    assert await store.save_session_as("s1", {"n": 1}, "a", 1) is True
    assert await store.claim_session("s1", "b") == 2  # a never renewed: no lease
    assert await store.save_session_as("s1", {"n": 2}, "a", 1) is False
    assert await store.end_session_as("s1", cdr("s1", "alice", 1.0), "", "a", 1) is False
    assert await store.load_session("s1") == {"n": 1}
    assert await store.list_cdrs("alice") == []
    assert await store.save_session_as("s1", {"n": 3}, "b", 2) is True
    assert await store.end_session_as("s1", cdr("s1", "alice", 1.0), "", "b", 2) is True
    assert await store.list_sessions() == []
    assert [c.cdr_id for c in await store.list_cdrs("alice")] == ["s1"]


@pytest_twisted.ensureDeferred
async def test_a_session_without_owner_record_is_claimed_at_epoch_one(store):
    await store.save_session("old", {"n": 1})
    assert await store.claim_session("old", "a") == 1
    assert await store.session_owner("old") == ("a", 1)


@pytest_twisted.ensureDeferred
async def test_message_boxes_keep_order_and_read_after_an_id(store):
    assert await store.last_message_id("events") == "0-0"
    assert await store.read_messages("events", "0-0", 10) == []
    ids = [await store.post_message("events", f"m{i}", 100) for i in range(5)]
    assert await store.last_message_id("events") == ids[-1]
    read = await store.read_messages("events", "0-0", 3)
    assert read == [(ids[i], f"m{i}") for i in range(3)]
    assert await store.read_messages("events", ids[2], 10) == [(ids[3], "m3"), (ids[4], "m4")]
    assert await store.read_messages("other", "0-0", 10) == []


@pytest_twisted.ensureDeferred
async def test_message_boxes_are_trimmed_to_about_keep(store):
    for i in range(300):
        await store.post_message("box", str(i), 10)
    kept = await store.read_messages("box", "0-0", 1000)
    assert 10 <= len(kept) <= 200 and kept[-1][1] == "299"


@pytest_twisted.ensureDeferred
async def test_cluster_refusals(store):
    await fails(store.post_message("", "x", 10), InvalidArgument)
    await fails(store.claim_session("", "a"), InvalidArgument)
    await fails(store.save_session_as("", {}, "a", 1), InvalidArgument)


@pytest_twisted.ensureDeferred
async def test_a_session_never_saved_by_a_dead_daemon_frees_its_place(store):
    await store.renew_node("a", LEASE)
    await store.renew_node("b", LEASE * 10)
    assert await store.open_session("s1", "a", "alice", 1) == 1  # a dies before saving
    assert await store.open_session("s2", "b", "alice", 1) == 0  # a's lease still holds
    await expire(store)
    assert await store.open_session("s2", "b", "alice", 1) == 1
    assert await store.session_owner("s1") is None
    assert await store.open_session("s3", "b", "alice", 1) == 0  # s2: b is alive
