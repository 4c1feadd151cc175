"""The switch's backstop (AbsoluteTimeout) and the charges a switch-side cut can cause."""

from __future__ import annotations

import pytest

from callbackd.core.session import BACKSTOP_HORIZON, BACKSTOP_RENEW
from tests.test_engine import (
    DESTINATION,
    SELL_92,
    World,
    confirm_hangups,
    credit_for,
    result,
)


def switch_cuts(world):
    """Record, per channel, the instant the switch's AbsoluteTimeout would cut it."""
    cuts = {}
    original = world.switch.set_absolute_timeout

    def recorded(channel_id, seconds):
        cuts[channel_id] = world.now() + seconds if seconds else None
        return original(channel_id, seconds)

    world.switch.set_absolute_timeout = recorded
    return cuts


def test_a_frozen_daemon_leaves_the_switch_a_cut_within_the_paid_time():
    """The switch's own cut (the daemon frozen) never bills the account below its floor."""
    world = World(balance=credit_for(60))
    cuts = switch_cuts(world)
    world.clock.advance(0.4)
    sid = world.callback()
    world.switch.answer(f"{sid}-a1", world.now())
    world.clock.advance(0.7)
    world.switch.answer(f"{sid}-b1", world.now())
    # the daemon is frozen from here on: only the switch acts, at its backstops
    for channel in (f"{sid}-a1", f"{sid}-b1"):
        world.switch.hang_up(channel, cuts[channel])
    cdrs = world.cdrs()
    assert world.balance() >= 0
    assert cdrs["source"].billed_seconds + cdrs["destination"].billed_seconds >= 2 * 59 - 1
    # the switch's cut is the credit cut, made by the switch
    assert cdrs["session"].cause == "OutOfCredit"
    assert {cdrs["source"].cause, cdrs["destination"].cause} == {"out of credit"}


def test_a_charge_never_takes_the_account_below_its_floor():
    """A leg costs at most what balance and credit limit pay when it ends, whole seconds."""
    world = World(balance=credit_for(60), credit_limit=0)
    sid = world.talking()
    world.clock.advance(30)
    # another process takes most of the money meanwhile (the change feed tells)
    result(world.store.debit("alice", credit_for(50), "elsewhere", True))
    confirm_hangups(world)
    world.clock.advance(0)
    assert world.manager.sessions_of("alice") == []
    cdrs = world.cdrs()
    assert 0 <= world.balance() < SELL_92.cost(1)
    legs = [cdrs["source"], cdrs["destination"]]
    assert sum(c.billed_seconds for c in legs) < 60
    assert cdrs["session"].cost == sum(c.cost for c in legs)
    assert world.balance() == credit_for(60) - credit_for(50) - cdrs["session"].cost
    assert cdrs["source"].extra["channel_id"] == f"{sid}-a1"


@pytest.mark.parametrize("calls", [1, 5, 10, 20])
def test_absolute_timeouts_grow_linearly_with_an_accounts_calls(calls):
    """Calls of one account going up, talking and hanging up: one AbsoluteTimeout per leg."""
    world = World(max_sessions=calls)
    sids = []
    for i in range(calls):
        sid = world.callback(f"+49301234{i:03d}", DESTINATION)
        world.clock.advance(0.3)
        world.switch.answer(f"{sid}-a1", world.now())
        world.clock.advance(0.2)
        world.switch.answer(f"{sid}-b1", world.now())
        world.clock.advance(0.5)
        sids.append(sid)
    world.clock.advance(60)
    for sid in sids:
        world.clock.advance(0.4)
        world.switch.hang_up(f"{sid}-a1", world.now())
        world.clock.advance(0.1)
        confirm_hangups(world)
    world.clock.advance(0)
    assert world.manager.sessions_of("alice") == []
    assert len(world.switch.timeouts) <= 2 * calls


def test_the_backstop_of_a_long_call_is_renewed_before_it_cuts():
    """With credit for hours the switch's cut is a lease ahead at most, renewed in time."""
    world = World()
    cuts = switch_cuts(world)
    sid = world.talking()
    first = dict(cuts)
    assert all(cut == world.now() + BACKSTOP_HORIZON for cut in first.values())
    for _ in range(3 * 360):
        world.clock.advance(10)
        assert all(cut > world.now() + BACKSTOP_RENEW - 10 for cut in cuts.values())
    assert world.switch.hung_up == []
    # per leg: the first, then a renewal a second into every renewal window
    renewals = 3 * 3600 // (BACKSTOP_HORIZON - BACKSTOP_RENEW + 1)
    assert len(world.switch.timeouts) == 2 * (1 + renewals)
    assert sid in world.manager.sessions_of("alice")


def test_one_backstop_per_leg_for_the_steps_of_one_input():
    """The source's answer and the account's recompute it causes move the source's cut
    twice in one run of the step loop: the switch hears the last one only."""
    world = World(balance=credit_for(60))
    world.clock.advance(1.0)
    sid = world.callback()
    world.clock.advance(1.1)  # the deadline given at the dialling is stale by now
    world.switch.answer(f"{sid}-a1", world.now())
    assert [channel for channel, _ in world.switch.timeouts] == [f"{sid}-a1"]
