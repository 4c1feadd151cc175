"""The progress batcher over the engine (FakeSwitch, MemoryStore, task.Clock)."""

from __future__ import annotations

import dataclasses

from callbackd.fronts.progress import ProgressBatcher
from tests.test_engine import World


class Front:
    """A front's side of a batcher: what it was told, its flushes."""

    def __init__(self, world=None, owned=False):
        self.world = world or World()
        self.told: list = []
        self.flushes = 0
        self.batcher = ProgressBatcher(
            self.world.manager,
            self.world.clock,
            tell=self.told.append,
            flush=self.flushed,
            owned=owned,
        )
        self.batcher.start()

    def flushed(self):
        self.flushes += 1


def test_every_event_is_told_as_it_comes_from_the_first():
    """Each session event is passed on at once, in order, session_started included (the
    front picks the sessions it tells by their watchers)."""
    front = Front()
    world = front.world
    sid = world.callback()
    other = world.callback(source="+4989123456")
    world.switch.answer(f"{sid}-a1", world.now())
    world.switch.answer(f"{other}-a1", world.now())
    assert front.told[0].kind == "session_started" and front.told[0].session_id == sid
    assert front.told == world.events


def test_owned_hears_this_daemons_sessions_only():
    """``owned``: another daemon's session's events (handed on by the cluster) are not
    told; without it they are."""
    mine = Front(owned=True)
    world = mine.world
    every = Front(world)
    sid = world.callback()
    remote = dataclasses.replace(world.events[-1], session_id="elsewhere1", seq=7)
    world.manager.deliver_remote(remote, "alice")
    assert [e.session_id for e in mine.told] == [sid] * len(mine.told)
    assert every.told == [*mine.told, remote]


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
    told = len(front.told)
    front.batcher.flush_soon()
    front.batcher.stop()
    assert not front.batcher.listening and front.flushes == 1
    world.switch.answer(f"{sid}-a1", world.now())
    world.clock.advance(0)
    assert len(front.told) == told and front.flushes == 1
    front.batcher.start()
    world.switch.answer(f"{sid}-b1", world.now())
    assert [event.session_id for event in front.told[told:]] == [sid]
