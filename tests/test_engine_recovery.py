"""Recovery when Redis is not there yet: the engine waits for it instead of giving up."""

from __future__ import annotations

from callbackd.switch import ChannelInfo
from tests.test_engine import World, result


def test_recovery_retries_until_the_store_answers():
    """A restart while Redis is down recovers the session once Redis is back."""
    world = World()
    sid = world.talking()
    world.manager.stop()
    world.store.available = False
    after = World(
        store=world.store,
        clock=world.clock,
        channels=[
            ChannelInfo(f"{sid}-a1", "PJSIP/a", "up"),
            ChannelInfo(f"{sid}-b1", "PJSIP/b", "up"),
        ],
    )
    assert after.manager.sessions_of("alice") == []
    world.store.available = True
    world.clock.advance(after.manager.recovery_retry)
    assert after.manager.sessions_of("alice") == [sid]


def test_no_retry_after_stop():
    """A stopped engine does not keep retrying its recovery: the session stays in the store."""
    world = World()
    sid = world.talking()
    world.manager.stop()
    world.store.available = False
    after = World(store=world.store, clock=world.clock)
    after.manager.stop()
    assert [c for c in world.clock.getDelayedCalls() if c.active()] == []
    world.store.available = True
    world.clock.advance(after.manager.recovery_retry * 3)
    assert after.manager.sessions_of("alice") == []
    assert result(world.store.list_sessions()) == [sid]
