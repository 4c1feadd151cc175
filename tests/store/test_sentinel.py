"""RedisStore in sentinel mode against a real primary, a replica and three real Sentinels.

The primary is SIGKILLed in the middle of a run of charges; the Sentinels promote the
replica; the store follows by itself. Charges are acknowledged only once a replica has
them (``wait_replicas = 1``), so every acknowledged charge is on the new primary; the
ones in the gap fail with StoreUnavailable, nothing else.
"""

from __future__ import annotations

import contextlib
import signal
import time

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task

from callbackd.core.model import CDR, Account
from callbackd.store.client import Sentinels
from callbackd.store.hashing import BcryptHasher
from callbackd.store.interface import StoreUnavailable
from callbackd.store.redis import RedisStore
from tests.procs import RedisServer, SentinelServer

NAME = "cbprimary"


def role(server: RedisServer) -> str:
    """ "master" or "slave" (what ROLE says), "" when it does not answer."""
    try:
        return server.command("ROLE")[0]
    except OSError:
        return ""


def wait_until(check, timeout: float, what: str) -> None:
    """Poll ``check()`` (blocking: fixtures) until it is true."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not seen in {timeout}s")
        time.sleep(0.05)


@pytest.fixture
def topology(tmp_path):
    """A primary, one replica of it and three Sentinels watching them (quorum 2)."""
    with sentinel_topology(tmp_path) as servers:
        yield servers


@contextlib.contextmanager
def sentinel_topology(tmp_path, down_after_ms: int = 500):
    """:func:`topology`'s servers, the Sentinels judging a server down after ``down_after_ms``
    (longer on a busy machine, where a short one can fail a healthy primary over)."""
    primary = RedisServer.start(tmp_path / "primary")
    replica = RedisServer.start(
        tmp_path / "replica", extra=["--replicaof", "127.0.0.1", str(primary.port)]
    )
    sentinels = []
    try:
        wait_until(
            lambda: replica.command("INFO", "replication").find("master_link_status:up") >= 0,
            10,
            "the replica in sync",
        )
        sentinels = [
            SentinelServer.start(
                tmp_path / f"sentinel{i}", primary.port, NAME, down_after_ms=down_after_ms
            )
            for i in range(3)
        ]

        def sentinels_see_everything() -> bool:
            for s in sentinels:
                state = dict(zip(*[iter(s.command("SENTINEL", "MASTER", NAME))] * 2))
                if int(state["num-slaves"]) < 1 or int(state["num-other-sentinels"]) < 2:
                    return False
            return True

        wait_until(sentinels_see_everything, 20, "the sentinels knowing the replica and each other")
        yield primary, replica, sentinels
    finally:
        for s in sentinels:
            s.stop()
        replica.stop()
        primary.stop()


def sentinel_store(sentinels: list[SentinelServer]) -> RedisStore:
    """A RedisStore following NAME through the sentinels, charges acknowledged by a replica."""
    target = Sentinels(reactor, [("127.0.0.1", s.port) for s in sentinels], NAME, timeout=1.0)
    return RedisStore(
        target,
        clock=reactor,
        password_hasher=BcryptHasher(reactor, rounds=4),
        address=str(target),
        timeout=1.0,
        max_reconnect_delay=0.5,
        wait_replicas=1,
        wait_timeout=0.5,
    )


async def sleep(seconds: float) -> None:
    await task.deferLater(reactor, seconds, lambda: None)


async def in_thread(f, *args):
    """A blocking check off the reactor thread."""
    from twisted.internet import threads

    return await threads.deferToThread(f, *args)


@pytest_twisted.ensureDeferred
async def test_failover_keeps_every_acknowledged_charge(topology, tmp_path):
    """SIGKILL the primary mid-run: the gap fails with StoreUnavailable, the store follows
    the promoted replica, and every acknowledged charge (CDR and debit) is there."""
    primary, replica, sentinels = topology
    store = sentinel_store(sentinels)
    await store.connect(timeout=10)
    acknowledged: list[str] = []
    refused: list[str] = []
    state = {"n": 0, "stop": False}
    try:
        await store.create_account(Account("alice"), "pw")

        async def charger() -> None:
            while not state["stop"]:
                state["n"] += 1
                cdr_id = f"c{state['n']:05d}"
                cdr = CDR(cdr_id, "alice", "s1", "leg", "source", ended_at=1.0, cost=7)
                try:
                    await store.charge(cdr, origin="engine:test")
                except StoreUnavailable:
                    refused.append(cdr_id)
                    await sleep(0.05)
                else:
                    acknowledged.append(cdr_id)

        chargers = [defer.ensureDeferred(charger()) for _ in range(3)]
        await sleep(0.5)
        before = len(acknowledged)
        assert before > 0, "no charge acknowledged before the failover"
        primary.kill()  # SIGKILL: no goodbye to the replica or the sentinels
        await in_thread(wait_until, lambda: role(replica) == "master", 20, "the replica promoted")
        # the old primary comes back; the sentinels turn it into a replica of the new one,
        # so WAIT 1 can be satisfied again
        old = RedisServer.start_on(tmp_path / "primary", primary.port)
        try:
            await in_thread(wait_until, lambda: role(old) == "slave", 20, "the old primary demoted")
            after_failover = len(acknowledged)
            deadline = time.monotonic() + 20
            while len(acknowledged) < after_failover + 30:
                assert time.monotonic() < deadline, "the store did not follow the new primary"
                await sleep(0.1)
            state["stop"] = True
            await defer.gatherResults(chargers)
            assert refused, "the gap refused nothing: was the primary really killed mid-run?"
            # every acknowledged charge is on the new primary (the promoted replica) ...
            on_new = await in_thread(replica.command, "ZRANGE", "cb:cdrs", 0, -1)
            missing = set(acknowledged) - set(on_new)
            assert not missing, f"acknowledged charges lost in the failover: {sorted(missing)}"
            # ... each debited exactly once, the refused ones at most once
            balance = int(await in_thread(replica.command, "GET", "cb:acct:alice:balance"))
            assert balance == -7 * len(on_new)
            assert set(on_new) <= set(acknowledged) | set(refused)
            assert await store.get_balance("alice") == balance
        finally:
            old.stop()
    finally:
        state["stop"] = True
        await store.disconnect()


@pytest_twisted.ensureDeferred
async def test_unacknowledged_charge_fails_and_retries_once(topology):
    """No replica to acknowledge: the charge fails with StoreUnavailable (the primary has
    it); once a replica is back, the retry of the same CDR is acknowledged, not re-debited."""
    primary, replica, sentinels = topology
    store = sentinel_store(sentinels)
    await store.connect(timeout=10)
    try:
        await store.create_account(Account("bob"), "pw")
        cdr = CDR("x1", "bob", "s1", "leg", "source", ended_at=1.0, cost=11)
        replica.process.send_signal(signal.SIGSTOP)  # the replica hangs: no acknowledgement
        try:
            with pytest.raises(StoreUnavailable, match="0 of 1 replica"):
                await store.charge(cdr)
            assert await in_thread(primary.command, "GET", "cb:acct:bob:balance") == "-11"
        finally:
            replica.process.send_signal(signal.SIGCONT)
        assert await store.charge(cdr) == -11
        assert await store.get_balance("bob") == -11
    finally:
        await store.disconnect()


def test_sentinel_mode_config_makes_a_store_following_the_sentinels(tmp_path):
    """[redis] mode = sentinel: make_store's store asks those sentinels for that primary
    and waits for the configured replicas."""
    from callbackd.config import parse_config
    from callbackd.store.redis import make_store

    config = parse_config(
        "[redis]\nmode = sentinel\nsentinels = 127.0.0.1:26379, 127.0.0.2:26380\n"
        "master_name = cb\ntimeout = 2\nwait_replicas = 1\nwait_timeout = 0.25\n",
        tmp_path / "callbackd.ini",
        {},
    )
    store = make_store(config, reactor)
    assert isinstance(store.endpoint, Sentinels)
    assert store.endpoint.addresses == [("127.0.0.1", 26379), ("127.0.0.2", 26380)]
    assert store.endpoint.master_name == "cb"
    assert (store.wait_replicas, store.wait_timeout, store.timeout) == (1, 0.25, 2.0)
    assert store.address == "sentinel cb via 127.0.0.1:26379, 127.0.0.2:26380"


class Lying(Sentinels):
    """Sentinels that always name the server at ``port`` as the primary (a stale or lying
    sentinel: the store must check for itself)."""

    def __init__(self, port: int) -> None:
        super().__init__(reactor, [("127.0.0.1", 1)], NAME, timeout=1.0)
        self.port = port

    def endpoint_for(self, factory):
        from twisted.internet.endpoints import TCP4ClientEndpoint

        factory.is_master = True
        return TCP4ClientEndpoint(reactor, "127.0.0.1", self.port)


@pytest_twisted.ensureDeferred
async def test_a_replica_named_as_primary_is_never_used(tmp_path):
    """A server that is not a primary (ROLE: slave) is dropped before any command: the
    store stays unavailable; the real primary named instead is used."""
    primary = RedisServer.start(tmp_path / "p")
    replica = RedisServer.start(
        tmp_path / "r", extra=["--replicaof", "127.0.0.1", str(primary.port)]
    )
    try:
        lied_to = RedisStore(
            Lying(replica.port),
            clock=reactor,
            password_hasher=BcryptHasher(reactor, rounds=4),
            timeout=1.0,
            max_reconnect_delay=0.2,
        )
        with pytest.raises(StoreUnavailable, match="cannot connect"):
            await lied_to.connect(timeout=1.5)
        with pytest.raises(StoreUnavailable):
            await lied_to.create_account(Account("carol"), "pw")
        await lied_to.disconnect()
        told_right = RedisStore(
            Lying(primary.port),
            clock=reactor,
            password_hasher=BcryptHasher(reactor, rounds=4),
            timeout=1.0,
        )
        await told_right.connect(timeout=5)
        try:
            await told_right.create_account(Account("carol"), "pw")
        finally:
            await told_right.disconnect()
    finally:
        replica.stop()
        primary.stop()
