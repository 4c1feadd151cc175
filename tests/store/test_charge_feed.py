"""The store's one-step charge, session end and change feed, on both implementations."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.internet.task import Clock

from callbackd.core.model import CDR, Account
from callbackd.store.interface import INVITE_ORIGIN, LINK_ORIGIN, InvalidArgument, NoSuchAccount
from callbackd.store.memory import MemoryStore

IMPLEMENTATIONS = ["memory", "redis"]


class Feed:
    """What a watcher heard: changes in order, and the feed's states."""

    def __init__(self) -> None:
        self.changes: list[tuple[str, str]] = []
        self.states: list[bool] = []
        self._waiting: list[tuple[int, defer.Deferred[None]]] = []

    def on_change(self, username: str, origin: str) -> None:
        self.changes.append((username, origin))
        self._wake()

    def on_state(self, live: bool) -> None:
        self.states.append(live)
        self._wake()

    def _wake(self) -> None:
        count = len(self.changes) + len(self.states)
        for entry in [e for e in self._waiting if e[0] <= count]:
            self._waiting.remove(entry)
            entry[1].callback(None)

    async def until(self, changes: int = 0, states: int = 0, timeout: float = 5.0) -> None:
        """Wait (event-driven) until at least this many changes and states were heard."""
        from twisted.internet import reactor

        while len(self.changes) < changes or len(self.states) < states:
            d: defer.Deferred[None] = defer.Deferred()
            self._waiting.append((len(self.changes) + len(self.states) + 1, d))
            d.addTimeout(timeout, reactor)
            await d


async def _redis_pair(request):
    from tests.stores import redis_store

    server = request.getfixturevalue("clean_redis")
    writer, watcher = redis_store(server.port), redis_store(server.port)
    await writer.connect(timeout=5)
    await watcher.connect(timeout=5)
    return writer, watcher


@pytest_twisted.async_yield_fixture(params=IMPLEMENTATIONS)
async def stores(request):
    """(writer, watcher): two stores on the same data (one store for memory)."""
    if request.param == "memory":
        store = MemoryStore(Clock())
        yield store, store
        return
    writer, watcher = await _redis_pair(request)
    yield writer, watcher
    await writer.disconnect()
    await watcher.disconnect()


def leg_cdr(cdr_id: str, cost: int, username: str = "alice") -> CDR:
    """A leg CDR of ``cost``."""
    return CDR(cdr_id, username, "s1", "leg", "source", ended_at=100.0, cost=cost)


async def _account(store, balance: int = 1000, **fields) -> None:
    await store.create_account(Account("alice", **fields), "secret pw")
    if balance:
        await store.credit("alice", balance, "topup")


@pytest_twisted.ensureDeferred
async def test_charge_appends_the_cdr_and_debits_its_cost(stores):
    """charge stores the CDR and takes its cost from the balance, firing the new balance."""
    store, _ = stores
    await _account(store)
    assert await store.charge(leg_cdr("s1-a", 240)) == 760
    assert await store.get_balance("alice") == 760
    assert [c.cdr_id for c in await store.list_cdrs("alice")] == ["s1-a"]


@pytest_twisted.ensureDeferred
async def test_charge_twice_charges_once(stores):
    """A second charge of the same CDR id changes nothing."""
    store, _ = stores
    await _account(store)
    await store.charge(leg_cdr("s1-a", 240))
    assert await store.charge(leg_cdr("s1-a", 240)) == 760
    assert len(await store.list_cdrs("alice")) == 1


@pytest_twisted.ensureDeferred
async def test_charge_may_pass_the_floor(stores):
    """The call happened: its charge is taken even below the credit floor."""
    store, _ = stores
    await _account(store, balance=100, credit_limit=50)
    assert await store.charge(leg_cdr("s1-a", 400)) == -300


@pytest_twisted.ensureDeferred
async def test_charge_of_an_unknown_account_writes_nothing(stores):
    """NoSuchAccount, and no CDR is left behind."""
    store, _ = stores
    with pytest.raises(NoSuchAccount):
        await store.charge(leg_cdr("s1-a", 10, username="nobody"))
    assert await store.list_cdrs() == []


@pytest_twisted.ensureDeferred
async def test_end_session_appends_the_cdr_and_forgets_the_state(stores):
    """end_session: the session CDR is stored and the session is no longer in flight."""
    store, _ = stores
    await _account(store)
    await store.save_session("s1", {"phase": "talking"})
    cdr = CDR("s1", "alice", "s1", "session", "", ended_at=100.0, cost=480)
    await store.end_session("s1", cdr)
    assert await store.list_sessions() == []
    assert await store.load_session("s1") is None
    assert [c.cdr_id for c in await store.list_cdrs("alice")] == ["s1"]
    assert await store.get_balance("alice") == 1000  # a session CDR debits nothing


@pytest_twisted.ensureDeferred
async def test_bad_origin_is_refused(stores):
    """An origin with a space (the feed's separator) is refused before anything is written."""
    store, _ = stores
    await _account(store)
    with pytest.raises(InvalidArgument):
        await store.charge(leg_cdr("s1-a", 240), origin="engine one")
    assert await store.get_balance("alice") == 1000


@pytest_twisted.ensureDeferred
async def test_watchers_hear_every_change_with_its_origin(stores):
    """Creation, credit, debit, charge and session end are told, in order, with the origin."""
    store, watcher = stores
    feed = Feed()
    stop = watcher.watch(feed.on_change, feed.on_state)
    await feed.until(states=1)
    assert feed.states == [True]
    await _account(store)
    await store.debit("alice", 10, "d1")
    await store.charge(leg_cdr("s1-a", 240), origin="engine:cb1")
    await store.end_session(
        "s1", CDR("s1", "alice", "s1", "session", "", ended_at=1.0), origin="engine:cb1"
    )
    await store.update_account("alice", max_sessions=3)
    await feed.until(changes=6)
    assert feed.changes == [
        ("alice", ""),  # created
        ("alice", ""),  # credited
        ("alice", ""),  # debited
        ("alice", "engine:cb1"),
        ("alice", "engine:cb1"),
        ("alice", ""),  # updated
    ]
    stop()


@pytest_twisted.ensureDeferred
async def test_links_are_told_under_the_accounts_they_move_between(stores):
    """link_jid tells the new account and the one the JID left; unlink_jid the one it left.

    Their origin is LINK_ORIGIN, which nothing else uses: a front caching links hears them
    among the engine's charges. A chat front caching JID -> username forgets a JID when
    its account is told: an unlink (or a move) by any process must reach every front
    whose feed is live.
    """
    store, watcher = stores
    await store.create_account(Account("alice"), "pw")
    await store.create_account(Account("bob"), "pw")
    feed = Feed()
    stop = watcher.watch(feed.on_change, feed.on_state)
    await feed.until(states=1)
    await store.link_jid("me@example.test/phone", "alice")
    await store.link_jid("me@example.test", "alice")  # again: alice only
    await store.link_jid("Me@example.test", "bob")  # moved: both
    assert await store.unlink_jid("me@example.test") is True
    assert await store.unlink_jid("me@example.test") is False  # nothing to tell
    await store.update_account("alice", max_sessions=3)  # a marker: nothing came between
    await feed.until(changes=6)
    link = LINK_ORIGIN
    assert sorted(feed.changes[2:4]) == [("alice", link), ("bob", link)]
    assert feed.changes[:2] + feed.changes[4:] == [
        ("alice", link),
        ("alice", link),
        ("bob", link),  # unlinked
        ("alice", ""),  # the marker
    ]
    stop()


@pytest_twisted.ensureDeferred
async def test_a_repeated_charge_is_not_told(stores):
    """Nothing changed, nothing to tell: a charge applied already is silent."""
    store, watcher = stores
    await _account(store)
    await store.charge(leg_cdr("s1-a", 240))
    feed = Feed()
    watcher.watch(feed.on_change, feed.on_state)
    await feed.until(states=1)
    await store.charge(leg_cdr("s1-a", 240))
    await store.credit("alice", 5, "marker")  # a change after it, to know the feed caught up
    await feed.until(changes=1)
    assert feed.changes == [("alice", "")]


@pytest_twisted.ensureDeferred
async def test_the_feed_is_told_lost_and_back_across_a_redis_restart(tmp_path):
    """on_state(False) when Redis goes, on_state(True) once resubscribed; changes flow again."""
    from tests.procs import RedisServer
    from tests.stores import redis_store

    server = RedisServer.start(tmp_path / "redis")
    store = redis_store(server.port, max_reconnect_delay=0.2)
    try:
        await store.connect(timeout=5)
        feed = Feed()
        store.watch(feed.on_change, feed.on_state)
        await feed.until(states=1)
        server.stop()
        await feed.until(states=2)
        assert feed.states == [True, False]
        server = RedisServer.start_on(tmp_path / "redis", server.port)
        await feed.until(states=3, timeout=10)
        assert feed.states == [True, False, True]
        await store.connect(timeout=10)
        await _account(store)
        await feed.until(changes=2)
        assert feed.changes == [("alice", ""), ("alice", "")]
        late = Feed()
        store.watch(late.on_change, late.on_state)
        assert late.states == [True]  # a watcher joining a live feed is told at once
    finally:
        await store.disconnect()
        server.stop()


@pytest_twisted.ensureDeferred
async def test_writes_apply_in_the_order_they_were_issued(stores):
    """Writes issued without waiting for replies land in issue order (the engine relies on it)."""
    store, _ = stores
    await _account(store)
    ended = CDR("s1", "alice", "s1", "session", "", ended_at=1.0)
    issued = []
    for n in range(50):
        issued.append(store.save_session("s1", {"step": n}))
    issued.append(store.charge(leg_cdr("s1-a", 240)))
    issued.append(store.end_session("s1", ended))
    issued.append(store.save_session("s2", {"step": 0}))
    await defer.gatherResults(issued)
    assert await store.list_sessions() == ["s2"]
    assert await store.get_balance("alice") == 760


@pytest_twisted.ensureDeferred
async def test_an_invitation_request_is_told_to_every_watcher(stores):
    """request_invite tells the watchers (bare JID, INVITE_ORIGIN) and counts them; a bad
    JID is refused and tells nothing."""
    store, watcher = stores
    feed = Feed()
    stop = watcher.watch(feed.on_change, feed.on_state)
    await feed.until(states=1)
    assert await store.request_invite("Carol@Example.test/laptop") >= 1
    with pytest.raises(InvalidArgument):
        await store.request_invite("not a jid")
    await store.create_account(Account("alice"), "pw")  # a marker: nothing came between
    await feed.until(changes=2)
    assert feed.changes == [("carol@example.test", INVITE_ORIGIN), ("alice", "")]
    stop()
