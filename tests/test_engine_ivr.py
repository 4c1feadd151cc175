"""The engine's public API for the phone callback: start_ivr_callback and quote_leg."""

from __future__ import annotations

import pytest

from callbackd.engine import CallbackRefused
from tests.test_engine import DESTINATION, SOURCE, World, result


def test_an_ivr_callback_calls_the_source_for_the_ivr_only():
    world = World()
    sid = result(world.manager.start_ivr_callback("alice", SOURCE))
    [originate] = world.switch.originated
    assert originate.role == "ivr" and originate.channel_id == f"{sid}-a1"
    state = world.manager.state_of(sid)
    assert state.kind == "ivr" and [leg.role for leg in state.legs] == ["source"]
    # nothing to add before the user answers
    with pytest.raises(CallbackRefused):
        result(world.manager.add_leg(sid, DESTINATION))
    world.switch.answer(f"{sid}-a1", world.now())
    result(world.manager.add_leg(sid, DESTINATION))
    assert world.switch.originated[-1].channel_id == f"{sid}-c1"


def test_an_ivr_callback_needs_credit():
    world = World(balance=0)
    with pytest.raises(CallbackRefused) as e:
        result(world.manager.start_ivr_callback("alice", SOURCE))
    assert e.value.code == "refusal.no_credit"


def test_the_quote_is_the_longest_call_with_the_legs_up():
    # 0.014 + 0.01204 per minute with 0.1 EUR: 230 s
    world = World(balance=10_000)
    sid = result(world.manager.start_ivr_callback("alice", SOURCE))
    world.switch.answer(f"{sid}-a1", world.now())
    address, seconds = result(world.manager.quote_leg(sid, DESTINATION))
    assert address == f"phone:{DESTINATION}"
    assert seconds == 10_000 * 60 // (1400 + 1204)
    with pytest.raises(CallbackRefused) as e:
        result(world.manager.quote_leg(sid, "+19005550123"))
    assert e.value.code == "refusal.blocked_destination"
    with pytest.raises(CallbackRefused) as e:
        result(world.manager.quote_leg(sid, "12"))
    assert e.value.code == "refusal.bad_address"


def test_an_ivr_session_survives_a_restart_of_the_daemon():
    """After a crash the recovered IVR session knows its source is in the room: the
    destination's end sends it back to the IVR, and each leg is billed once."""
    from callbackd.switch import ChannelInfo
    from tests.test_engine import restart

    world = World()
    sid = result(world.manager.start_ivr_callback("alice", SOURCE))
    world.switch.answer(f"{sid}-a1", world.now())
    result(world.manager.add_leg(sid, DESTINATION))
    world.switch.answer(f"{sid}-c1", world.now())
    assert world.switch.joined == [(f"{sid}-a1", sid)]
    world.clock.advance(20)
    after = restart(
        world,
        [ChannelInfo(f"{sid}-a1", "PJSIP/a", "up"), ChannelInfo(f"{sid}-c1", "PJSIP/c", "up")],
    )
    assert after.manager.sessions_of("alice") == [sid]
    after.clock.advance(10)
    after.switch.hang_up(f"{sid}-c1", after.now())
    assert after.switch.returned == [(f"{sid}-a1", sid)]
    after.clock.advance(5)
    after.switch.hang_up(f"{sid}-a1", after.now())
    cdrs = after.cdrs()
    assert (cdrs["source"].billed_seconds, cdrs["additional-1"].billed_seconds) == (35, 30)
    assert after.balance() == 10_000_000 - cdrs["session"].cost
