"""RedisStore on real redis-servers: concurrency over separate connections, outages, recovery."""

from __future__ import annotations

import time

import pytest_twisted
from twisted.internet import defer, reactor, task

from callbackd.core.model import Account
from callbackd.store.interface import InsufficientFunds, StoreUnavailable, VoucherUsed
from tests.procs import RedisServer
from tests.stores import redis_store


async def connected_stores(port: int, n: int):
    """``n`` RedisStores, each with its own connection, all connected."""
    stores = [redis_store(port) for _ in range(n)]
    await defer.gatherResults([s.connect(timeout=5) for s in stores])
    return stores


async def close(stores):
    """Disconnect every store."""
    await defer.gatherResults([s.disconnect() for s in stores])


@pytest_twisted.ensureDeferred
async def test_parallel_debits_never_pass_the_floor(clean_redis):
    """50 parallel debits over 5 connections: the floor holds and the sums agree."""
    stores = await connected_stores(clean_redis.port, 5)
    try:
        await stores[0].create_account(Account("alice", credit_limit=100), "pw")
        await stores[0].credit("alice", 1000, "topup")
        amounts = [37 + (i % 7) * 11 for i in range(50)]
        results = await defer.DeferredList(
            [stores[i % 5].debit("alice", a, f"d{i}") for i, a in enumerate(amounts)],
            consumeErrors=True,
        )
        charged = sum(a for a, (ok, _) in zip(amounts, results) if ok)
        refused = [r for ok, r in results if not ok]
        assert all(r.check(InsufficientFunds) for r in refused)
        assert refused, "the balance was meant to cover only some debits"
        balance = await stores[1].get_balance("alice")
        assert balance >= -100
        assert 1000 - balance == charged
    finally:
        await close(stores)


@pytest_twisted.ensureDeferred
async def test_parallel_redemptions_succeed_once(clean_redis):
    """One voucher redeemed in parallel over 5 connections credits exactly once."""
    stores = await connected_stores(clean_redis.port, 5)
    try:
        for name in ("alice", "bob"):
            await stores[0].create_account(Account(name), "pw")
        (voucher,) = await stores[0].create_vouchers("b", 700, 1)
        results = await defer.DeferredList(
            [
                stores[i % 5].redeem_voucher(voucher.code, ("alice", "bob")[i % 2])
                for i in range(20)
            ],
            consumeErrors=True,
        )
        assert sum(ok for ok, _ in results) == 1
        assert all(r.check(VoucherUsed) for ok, r in results if not ok)
        total = await stores[0].get_balance("alice") + await stores[0].get_balance("bob")
        assert total == 700
    finally:
        await close(stores)


@pytest_twisted.ensureDeferred
async def test_same_debit_key_in_parallel_charges_once(clean_redis):
    """The same debit key sent over several connections at once is charged once."""
    stores = await connected_stores(clean_redis.port, 4)
    try:
        await stores[0].create_account(Account("alice"), "pw")
        await stores[0].credit("alice", 1000, "topup")
        await defer.gatherResults([s.debit("alice", 300, "call-1") for s in stores * 3])
        assert await stores[0].get_balance("alice") == 700
    finally:
        await close(stores)


@pytest_twisted.ensureDeferred
async def test_applied_keys_expire(clean_redis):
    """An applied debit key is remembered with a TTL, not forever."""
    (store,) = await connected_stores(clean_redis.port, 1)
    try:
        await store.create_account(Account("alice"), "pw")
        await store.debit("alice", 0, "k", force=True)
        ttl = await store._call("TTL", "cb:acct:alice:applied:k")
        assert 0 < ttl <= 30 * 24 * 3600
    finally:
        await close([store])


@pytest_twisted.ensureDeferred
async def test_scripts_reload_after_script_flush(clean_redis):
    """A Redis that forgot the scripts (restart, SCRIPT FLUSH) is served by EVAL again."""
    (store,) = await connected_stores(clean_redis.port, 1)
    try:
        await store.create_account(Account("alice"), "pw")
        await store.credit("alice", 5, "a")
        await store._call("SCRIPT", "FLUSH")
        assert await store.credit("alice", 5, "b") == 10
    finally:
        await close([store])


@pytest_twisted.ensureDeferred
async def test_unavailable_fast_when_never_connected(tmp_path):
    """With nothing listening, calls errback StoreUnavailable at once, not after a hang."""
    from tests.procs import free_port

    store = redis_store(free_port(), timeout=1.0)
    store.start()
    try:
        started = time.monotonic()
        try:
            await store.get_balance("alice")
        except StoreUnavailable as e:
            assert "redis unavailable" in str(e)
        else:
            raise AssertionError("no StoreUnavailable")
        assert time.monotonic() - started < 0.5
        assert store.connected is False
    finally:
        await store.disconnect()


@pytest_twisted.ensureDeferred
async def test_connect_times_out_with_store_unavailable():
    """connect() to nothing errbacks StoreUnavailable after its timeout."""
    from tests.procs import free_port

    store = redis_store(free_port())
    try:
        await store.connect(timeout=0.3)
    except StoreUnavailable as e:
        assert "cannot connect" in str(e)
    else:
        raise AssertionError("connected to nothing")
    finally:
        await store.disconnect()


async def eventually(check, timeout: float = 15.0):
    """Poll ``check`` (an async callable) until it returns true or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        if await check():
            return
        assert time.monotonic() < deadline, "condition not met in time"
        await task.deferLater(reactor, 0.1, lambda: None)


@pytest_twisted.ensureDeferred
async def test_outage_is_reported_then_survived(tmp_path):
    """Redis stopping gives StoreUnavailable (no hang, no crash); it reconnects when back."""
    server = RedisServer.start(tmp_path / "redis")
    (store,) = await connected_stores(server.port, 1)
    try:
        await store.create_account(Account("alice"), "pw")
        await store.credit("alice", 10, "k")
        await defer.maybeDeferred(server.stop)

        async def down():
            try:
                await store.ping()
            except StoreUnavailable:
                return True
            return False

        await eventually(down, 5)
        started = time.monotonic()
        for call in (store.ping(), store.get_balance("alice"), store.debit("alice", 1, "x")):
            try:
                await call
            except StoreUnavailable:
                pass
            else:
                raise AssertionError("a call succeeded with Redis down")
        assert time.monotonic() - started < 1.0
        server = RedisServer.start_on(tmp_path / "redis", server.port)

        async def up():
            try:
                return await store.ping()
            except StoreUnavailable:
                return False

        await eventually(up)
        # a fresh server without persistence: the store works again on it
        await store.create_account(Account("bob"), "pw")
        assert await store.credit("bob", 3, "k") == 3
        assert store.connected
    finally:
        await close([store])
        server.stop()


@pytest_twisted.ensureDeferred
async def test_hung_redis_times_out(tmp_path):
    """A Redis that stops answering (SIGSTOP) makes calls errback StoreUnavailable in time."""
    import signal

    server = RedisServer.start(tmp_path / "redis")
    store = redis_store(server.port, timeout=0.5)
    await store.connect(timeout=5)
    try:
        server.process.send_signal(signal.SIGSTOP)
        started = time.monotonic()
        try:
            await store.ping()
        except StoreUnavailable:
            pass
        else:
            raise AssertionError("a stopped Redis answered")
        assert time.monotonic() - started < 2.0
    finally:
        server.process.send_signal(signal.SIGCONT)
        await close([store])
        server.stop()
