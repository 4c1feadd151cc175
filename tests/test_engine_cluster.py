"""Two session managers on one store: owners, forwarded commands, events, takeover.

Most on MemoryStore (its leases follow the shared clock), one on a real redis-server
(a connection per manager, real time); one FakeSwitch both managers listen to, as two
daemons on one Asterisk do. The store's part is the IStore contract
(tests/store/test_cluster_contract.py), the daemons' the integration test
(tests/integration/test_cluster.py).
"""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import task

from callbackd.config import ClusterConfig
from callbackd.core.model import Account
from callbackd.core.rating import Deck, Rate
from callbackd.engine import CallbackRefused, Provider, SessionManager
from callbackd.fakeswitch import FakeSwitch
from callbackd.switch import ChannelInfo
from callbackd.web.api.app import refusal_status
from tests.stores import redis_store
from tests.test_engine import EXTRA, SELL_49, SELL_92, World, credit_for, result

CLUSTER = ClusterConfig(
    enabled=True, renew_interval=1.0, lease=3.0, poll_interval=0.1, reply_timeout=2.0
)


def pair(**account):
    """Daemons a and b on one store, one clock, one switch."""
    a = World(manager={"node_id": "a", "cluster": CLUSTER}, **account)
    b = World(
        store=a.store, clock=a.clock, switch=a.switch, manager={"node_id": "b", "cluster": CLUSTER}
    )
    settle(a)
    return a, b


def settle(world, seconds=0.5):
    """Let the daemons poll and renew for ``seconds``."""
    for _ in range(round(seconds / 0.05)):
        world.clock.advance(0.05)


def wait(world, d, seconds=1.0):
    """The result of ``d`` once the daemons had time to pass the messages."""
    settle(world, seconds)
    return result(d)


def freeze(manager):
    """The daemon stops dead (SIGSTOP or SIGKILL): no renewal, no polling, no timers."""
    manager.cluster.stop()
    manager._heartbeat.stop()
    manager.timers.cancel_all()
    manager._running = False


def test_a_command_on_b_for_as_session_is_run_by_a():
    """ADD, DEL and HANGUP sent to b for a's session reach a, which runs them."""
    a, b = pair()
    sid = a.talking()
    settle(a)
    assert not b.manager.is_local(sid) and b.manager.status(sid)["phase"] == "talking"
    assert b.manager.sessions_of("alice") == [sid]
    wait(a, b.manager.add_leg(sid, EXTRA))
    assert a.switch.originated[-1].channel_id == f"{sid}-c1"
    a.switch.answer(f"{sid}-c1", a.now())
    settle(a, 12)
    assert [leg["state"] for leg in b.manager.status(sid)["legs"]] == ["up", "up", "up"]
    wait(a, b.manager.drop_leg(sid, EXTRA))
    assert (f"{sid}-c1", 16) in a.switch.hung_up
    wait(a, b.manager.hangup(sid))
    assert (f"{sid}-a1", 16) in a.switch.hung_up


def test_a_refusal_of_the_owner_reaches_the_requester():
    """The owner's refusal comes back with its words and catalogue id."""
    a, b = pair()
    sid = a.talking()
    settle(a)
    with pytest.raises(CallbackRefused) as mine:
        result(a.manager.drop_leg(sid, "source"))
    with pytest.raises(CallbackRefused) as info:
        wait(a, b.manager.drop_leg(sid, "source"))
    assert (info.value.code, str(info.value)) == (mine.value.code, str(mine.value))
    assert info.value.params == mine.value.params
    with pytest.raises(CallbackRefused) as unknown:
        wait(a, b.manager.hangup("nosuchsession"))
    assert unknown.value.code == "refusal.unknown_session"


def test_events_of_as_session_reach_bs_subscribers_in_order_once():
    """b hears every event of a's session, in order, once (and not a's own again)."""
    a, b = pair()
    one = []
    sid = a.callback()
    b.manager.subscribe(one.append, sid)
    a.switch.answer(f"{sid}-a1", a.now())
    settle(a, 0.2)
    a.switch.answer(f"{sid}-b1", a.now())
    settle(a, 3)  # renewals, polls: nothing twice
    result(a.manager.hangup(sid))
    a.switch.hang_up(f"{sid}-a1", a.now())
    a.switch.hang_up(f"{sid}-b1", a.now())
    settle(a)
    assert [e.seq for e in b.events] == [e.seq for e in a.events]
    assert b.events == a.events
    assert one == a.events and a.events[-1].kind == "session_ended"
    assert b.manager.state_of(sid) is None


def test_webhooks_hear_only_the_owners_sessions():
    a, b = pair()
    owned = []
    b.manager.subscribe(owned.append, owned=True)
    a.talking()
    settle(a)
    assert b.events and owned == []


def test_a_forward_to_a_dead_owner_is_a_clear_refusal():
    a, b = pair()
    sid = a.talking()
    settle(a)
    freeze(a.manager)
    d = b.manager.hangup(sid)
    settle(a, 2.5)
    with pytest.raises(CallbackRefused) as info:
        result(d)
    assert info.value.code == "refusal.owner_unreachable"
    assert "did not answer" in str(info.value)
    assert refusal_status(info.value.code) == 503  # the REST API: try again later


def up(sid):
    return [ChannelInfo(f"{sid}-a1", "PJSIP/a", "up"), ChannelInfo(f"{sid}-b1", "PJSIP/b", "up")]


def take_over(a, sid):
    """a dies mid-call (its legs still up at the switch) and the lease runs out: b owns
    the session now."""
    freeze(a.manager)
    a.switch.channels = up(sid)
    settle(a, 5)


def test_b_takes_over_after_the_lease_and_bills_each_leg_once():
    """a dies mid-call: b claims the session after the lease, keeps the live legs and
    bills each exactly once when they end; the store records b as the owner."""
    a, b = pair()
    sid = a.talking()
    talked = a.now()
    settle(a, 10)
    freeze(a.manager)
    a.switch.channels = up(sid)
    settle(a, 2)
    assert not b.manager.is_local(sid)  # the lease still holds
    settle(a, 3)
    assert b.manager.is_local(sid)
    assert result(a.store.session_owner(sid)) == ("b", 2)
    a.switch.hang_up(f"{sid}-a1", a.now())
    a.switch.hang_up(f"{sid}-b1", a.now())
    cdrs = b.cdrs()
    seconds = round(a.now() - talked)
    assert cdrs["source"].billed_seconds == cdrs["destination"].billed_seconds == seconds
    assert b.balance() == 10_000_000 - SELL_49.cost(seconds) - SELL_92.cost(seconds)
    assert result(a.store.list_sessions()) == []


def test_events_numbers_go_on_after_a_takeover():
    a, b = pair()
    sid = a.talking()
    settle(a, 1)
    take_over(a, sid)
    a.switch.hang_up(f"{sid}-a1", a.now())
    seqs = [e.seq for e in b.events if e.session_id == sid]
    assert seqs == sorted(set(seqs)) and seqs == list(range(1, len(seqs) + 1))


def test_a_stale_owner_cannot_write_and_lets_the_session_go():
    """a wakes after b took over: its writes are refused, it forgets the session, and a
    leg both hear end is billed once."""
    a, b = pair()
    sid = a.talking()
    settle(a, 1)
    take_over(a, sid)
    assert b.manager.is_local(sid) and a.manager.is_local(sid)
    a.manager._running = True  # a wakes: it still believes it owns the session
    a.switch.hang_up(f"{sid}-a1", a.now())  # both hear it, both settle it
    settle(a, 0.1)
    assert not a.manager.is_local(sid)
    assert result(a.store.load_session(sid))["owner"] == "b"
    a.switch.hang_up(f"{sid}-b1", a.now())
    cdrs = [c for c in result(a.store.list_cdrs("alice")) if c.leg == "source"]
    assert len(cdrs) == 1
    assert a.balance() == 10_000_000 - sum(
        c.cost for c in result(a.store.list_cdrs("alice")) if c.leg
    )


def test_the_concurrent_session_limit_holds_across_daemons():
    a, b = pair(max_sessions=1)
    sid = a.callback()
    with pytest.raises(CallbackRefused) as info:
        b.callback()
    assert info.value.code == "refusal.too_many_sessions"
    result(a.manager.hangup(sid))
    a.switch.fail(f"{sid}-a1", "noanswer", a.now())
    settle(a)
    assert b.callback()


def test_an_accounts_credit_is_shared_by_its_sessions_on_both_daemons():
    """Credit for 60 s of one call: a call on each daemon, both cut at about 30 s (whole
    seconds billed per leg, rounded up), nothing spent beyond the balance."""
    a, b = pair(balance=credit_for(60))
    one = a.talking()
    settle(a, 0.2)
    two = b.talking()
    start = a.now()
    settle(a, 28)
    assert a.switch.hung_up == []
    ended: set[str] = set()
    for _ in range(40):  # the switch ends each leg as it is cut
        a.clock.advance(0.05)
        for channel, _ in list(a.switch.hung_up):
            if channel not in ended:
                ended.add(channel)
                a.switch.hang_up(channel, a.now())
    cut = {c for c, _ in a.switch.hung_up}
    assert cut == {f"{one}-a1", f"{one}-b1", f"{two}-a1", f"{two}-b1"}
    settle(a)
    assert 0 <= a.balance() < SELL_49.cost(2) + SELL_92.cost(2)
    legs = [c for c in result(a.store.list_cdrs("alice")) if c.leg]
    assert all(28 <= c.billed_seconds <= 30 for c in legs), (start, legs)
    assert not any("uncapped_cost" in c.extra for c in legs)


# -- two managers, two connections to one real redis-server ---------------------------

FAST = ClusterConfig(
    enabled=True, renew_interval=0.1, lease=0.4, poll_interval=0.02, reply_timeout=1.0
)


async def sleep(seconds):
    from twisted.internet import reactor

    await task.deferLater(reactor, seconds, lambda: None)


async def until(predicate, what, timeout=5.0):
    for _ in range(int(timeout / 0.02)):
        if predicate():
            return
        await sleep(0.02)
    raise AssertionError(f"{what}: timed out")


@pytest_twisted.async_yield_fixture
async def on_redis(clean_redis):
    """Managers a and b on the real redis-server (a connection each), one FakeSwitch."""
    from twisted.internet import reactor

    stores = [redis_store(clean_redis.port) for _ in "ab"]
    for store in stores:
        await store.connect(timeout=5)
    await stores[0].create_account(Account("alice"), "secret-pw")
    await stores[0].credit("alice", 10_000_000, "initial")
    switch = FakeSwitch()
    managers = []
    for node, store in zip("ab", stores):
        manager = SessionManager(
            reactor,
            switch,
            store,
            sell_deck=Deck([SELL_49, SELL_92]),
            providers=[
                Provider("PROXICOM", "PJSIP/{number}@proxicom", Deck([Rate("49", 500)])),
                Provider("PAKLINE", "PJSIP/{number}@pakline", Deck([Rate("92", 800)])),
            ],
            node_id=node,
            cluster=FAST,
        )
        await manager.start()
        managers.append(manager)
    yield managers[0], managers[1], switch, stores[0]
    for manager in managers:
        manager.stop()
    for store in stores:
        await store.disconnect()


@pytest_twisted.ensureDeferred
async def test_on_redis_a_command_events_and_a_takeover(on_redis):
    """The same story on Redis: ADD sent to b runs on a, b hears a's events in order
    once, and after a stops dead b takes the session over and bills each leg once."""
    from twisted.internet import reactor

    a, b, switch, store = on_redis
    heard_a, heard_b = [], []
    a.subscribe(heard_a.append)
    b.subscribe(heard_b.append)
    sid = await a.start_callback("alice", "+4930123456", "+923001234567")
    switch.answer(f"{sid}-a1", reactor.seconds())
    switch.answer(f"{sid}-b1", reactor.seconds())
    await until(lambda: b.state_of(sid) is not None, "b hears of the session")
    await b.add_leg(sid, EXTRA)
    assert switch.originated[-1].channel_id == f"{sid}-c1"
    switch.fail(f"{sid}-c1", "busy", reactor.seconds())
    await until(lambda: len(heard_b) == len(heard_a), "b hears every event")
    assert heard_b == heard_a

    freeze(a)
    switch.channels = up(sid)
    await until(lambda: b.is_local(sid), "b takes the session over")
    assert await store.session_owner(sid) == ("b", 2)
    await sleep(0.5)
    switch.hang_up(f"{sid}-a1", reactor.seconds())
    switch.hang_up(f"{sid}-b1", reactor.seconds())
    await until(lambda: not b.is_local(sid), "the session ends")
    await sleep(0.2)
    assert await store.list_sessions() == []
    cdrs = await store.list_cdrs("alice")
    legs = sorted(c.cdr_id for c in cdrs if c.kind == "leg")
    assert legs == [f"{sid}-a", f"{sid}-b", f"{sid}-c"]
    charged = sum(c.cost for c in cdrs if c.kind == "leg")
    assert charged > 0 and await store.get_balance("alice") == 10_000_000 - charged


def test_a_daemon_whose_lease_lapsed_lets_go_of_what_was_taken_over():
    """a wakes and renews: its lease had run out, so it checks its sessions' owners and
    forgets the one b took, without a write and without touching the legs."""
    a, b = pair()
    sid = a.talking()
    settle(a, 1)
    take_over(a, sid)
    assert b.manager.is_local(sid) and a.manager.is_local(sid)
    hung_up = list(a.switch.hung_up)
    a.manager._running = True
    a.manager.cluster.start(a.manager)
    settle(a, 0.1)
    assert not a.manager.is_local(sid) and b.manager.is_local(sid)
    assert a.switch.hung_up == hung_up
