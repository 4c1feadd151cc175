"""The progress batcher over the engine (FakeSwitch, MemoryStore, task.Clock)."""

from __future__ import annotations

from callbackd.fronts.progress import ProgressBatcher
from tests.test_engine import World


class Front:
    """A front's side of a batcher: the sessions it watches, what it was told, flushes."""

    def __init__(self, world=None):
        self.world = world or World()
        self.watched: dict[str, None] = {}
        self.told: list = []
        self.flushes = 0
        self.batcher = ProgressBatcher(
            self.world.manager,
            self.world.clock,
            watched=self.watched,
            tell=self.told.append,
            flush=self.flushed,
        )
        self.batcher.start()

    def flushed(self):
        self.flushes += 1


def test_a_watched_sessions_events_are_told_as_they_come():
    """Each event of a watched session is passed on at once, in order; others are not."""
    front = Front()
    world = front.world
    sid = world.callback()
    other = world.callback(source="+4989123456")
    world.clock.advance(0)
    front.watched[sid] = None
    before = len(world.events)
    world.switch.answer(f"{sid}-a1", world.now())
    world.switch.answer(f"{other}-a1", world.now())
    mine = [event for event in world.events[before:] if event.session_id == sid]
    assert mine and front.told == mine


def test_a_session_started_in_this_turn_keeps_its_events_for_its_starter():
    """start_callback publishes before its caller has the id: the events wait a turn."""
    front = Front()
    world = front.world
    sid = world.callback()
    born = front.batcher.newborn(sid)
    assert born[0].kind == "session_started"
    assert born == [event for event in world.events if event.session_id == sid]
    assert front.batcher.newborn(sid) == []  # taken once
    assert front.told == []


def test_unclaimed_newborn_events_are_forgotten_at_the_end_of_the_turn():
    """Nobody watched the session by the turn's end: its first events are dropped."""
    front = Front()
    sid = front.world.callback()
    front.world.clock.advance(0)
    assert front.batcher.newborn(sid) == []


def test_a_flush_is_once_per_turn_at_its_end():
    """However often a turn asks, the front flushes once, after the turn."""
    front = Front()
    front.batcher.flush_soon()
    front.batcher.flush_soon()
    assert front.flushes == 0
    front.world.clock.advance(0)
    assert front.flushes == 1
    front.world.clock.advance(0)
    assert front.flushes == 1
    front.batcher.flush_soon()
    front.world.clock.advance(0)
    assert front.flushes == 2


def test_stop_flushes_now_and_hears_no_more():
    """stop: the waiting flush happens at once (not again later), events go unheard."""
    front = Front()
    world = front.world
    assert front.batcher.listening
    sid = world.callback()
    front.watched[sid] = None
    front.batcher.flush_soon()
    front.batcher.stop()
    assert not front.batcher.listening and front.flushes == 1
    assert front.batcher.newborn(sid) == []
    world.switch.answer(f"{sid}-a1", world.now())
    world.clock.advance(0)
    assert front.told == [] and front.flushes == 1
    front.batcher.start()
    world.switch.answer(f"{sid}-b1", world.now())
    assert [event.session_id for event in front.told] == [sid]
