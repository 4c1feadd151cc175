"""Several switches: the pool's placement rule, and the engine over two FakeSwitches."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callbackd.engine import CallbackRefused
from callbackd.fakeswitch import FakeSwitch
from callbackd.switch import ChannelInfo, SwitchConnected
from callbackd.switches import SwitchPool
from tests.test_engine import DESTINATION, EXTRA, SELL_49, SELL_92, SOURCE, World, result

# -- the pool -------------------------------------------------------------------------


def pool_of(*names: str, weights=None, **down: bool) -> tuple[SwitchPool, dict[str, FakeSwitch]]:
    switches = {name: FakeSwitch(connected=not down.get(name, False)) for name in names}
    return SwitchPool(switches, weights), switches


def place_many(pool: SwitchPool, count: int) -> dict[str, int]:
    """Place ``count`` sessions one after the other; how many went where."""
    load = dict.fromkeys(pool, 0)
    for _ in range(count):
        name = pool.place(load.__getitem__)
        assert name is not None
        load[name] += 1
    return load


def test_the_least_loaded_switch_gets_the_new_session():
    """Fewest sessions in flight wins; a tie goes to the switch configured first."""
    pool, _ = pool_of("a", "b", "c")
    assert pool.place({"a": 2, "b": 1, "c": 1}.__getitem__) == "b"
    assert pool.place({"a": 0, "b": 0, "c": 0}.__getitem__) == "a"
    assert place_many(pool, 7) == {"a": 3, "b": 2, "c": 2}


def test_weights_share_the_sessions():
    """A switch of weight 2 gets twice the sessions of one of weight 1; weight 0 none."""
    pool, _ = pool_of("a", "b", "c", weights={"a": 2, "b": 1, "c": 0})
    assert place_many(pool, 9) == {"a": 6, "b": 3, "c": 0}


@given(st.lists(st.integers(1, 5), min_size=1, max_size=4), st.integers(0, 60))
def test_placement_follows_the_weights(weights, count):
    """Whatever the weights, no switch has more sessions per unit of weight than another
    would have with one more: sessions / weight stay within one session of each other."""
    names = [f"s{i}" for i in range(len(weights))]
    pool, _ = pool_of(*names, weights=dict(zip(names, weights)))
    placed = place_many(pool, count)
    assert sum(placed.values()) == count
    for i, wi in zip(names, weights):
        for j, wj in zip(names, weights):
            assert placed[i] * wj <= (placed[j] + 1) * wi


def test_a_switch_down_or_going_gets_no_new_session():
    """Not connected or shutting down: skipped; none usable: None."""
    pool, switches = pool_of("a", "b", a=True)
    assert pool.place(lambda name: 0) == "b"
    switches["b"].shutting_down = True
    assert pool.place(lambda name: 0) is None
    assert pool.connected
    switches["b"].connected = False
    assert not pool.connected
    switches["a"].connected = True
    assert pool.place(lambda name: 100) == "a"


def test_the_recorded_name_of_a_session():
    """ "" (a session saved before switches were recorded) is the default; unknown: None."""
    pool, _ = pool_of("a", "b")
    assert (pool.default, pool.name_of(""), pool.name_of("b"), pool.name_of("x")) == (
        "a",
        "a",
        "b",
        None,
    )


def test_events_come_with_the_switch_name():
    """The pool's listener hears each switch's events with its name."""
    pool, switches = pool_of("a", "b")
    heard: list[tuple[str, object]] = []
    pool.add_listener(lambda name, event: heard.append((name, event)))
    switches["b"].connect(5.0)
    assert heard == [("b", SwitchConnected(5.0))]


def test_a_pool_needs_a_switch_and_weights_of_zero_or_more():
    with pytest.raises(ValueError, match="at least one switch"):
        SwitchPool({})
    with pytest.raises(ValueError, match="weight must be at least 0"):
        SwitchPool({"a": FakeSwitch()}, {"a": -1})


# -- the engine over two switches -------------------------------------------------------


class TwoSwitches(World):
    """A manager over switches ``a`` and ``b`` (``switch`` is ``a``)."""

    def __init__(self, a=None, b=None, **kw):
        self.a, self.b = a or FakeSwitch(), b or FakeSwitch()
        self.pool = SwitchPool({"a": self.a, "b": self.b})
        kw.setdefault("max_sessions", 10)
        super().__init__(switch=self.a, **kw)

    def switch_of(self, sid: str) -> FakeSwitch:
        state = self.manager.state_of(sid)
        assert state is not None
        return self.a if state.switch == "a" else self.b

    def talking_on(self, source=SOURCE) -> tuple[str, FakeSwitch]:
        sid = self.callback(source, DESTINATION)
        switch = self.switch_of(sid)
        switch.answer(f"{sid}-a1", self.now())
        switch.answer(f"{sid}-b1", self.now())
        return sid, switch


def channel_ids(switch: FakeSwitch) -> set[str]:
    return {request.channel_id for request in switch.originated}


def test_sessions_spread_over_the_switches_with_all_legs_on_one():
    """Sessions alternate between a and b; every leg and the room of one are on its switch,
    and the saved state names it."""
    world = TwoSwitches()
    first, on_first = world.talking_on()
    second, on_second = world.talking_on(EXTRA)
    assert (on_first, on_second) == (world.a, world.b)
    result(world.manager.add_leg(first, "+4930999999"))
    assert channel_ids(world.a) == {f"{first}-a1", f"{first}-b1", f"{first}-c1"}
    assert channel_ids(world.b) == {f"{second}-a1", f"{second}-b1"}
    assert world.a.joined == [(f"{first}-a1", first)]
    assert world.b.joined == [(f"{second}-a1", second)]
    world.clock.advance(0)  # the turn's writes
    saved = result(world.store.load_session(second))
    assert saved["switch"] == "b"
    result(world.manager.hangup(second))
    assert {c for c, _ in world.b.hung_up} == {f"{second}-a1", f"{second}-b1"}
    assert not any(c.startswith(second) for c, _ in world.a.hung_up)


def test_a_switch_that_goes_away_gets_no_new_sessions_and_is_reconciled_on_its_return():
    """b lost: new sessions go to a; a's sessions are not judged by b's channel list; b back
    with its legs up: its session goes on; b back with its legs gone: billed to when it
    was last seen, and ended."""
    world = TwoSwitches()
    on_a, _ = world.talking_on()
    on_b, _ = world.talking_on(EXTRA)
    world.clock.advance(10)
    world.b.disconnect(world.now())
    newer, switch = world.talking_on("+4930555555")
    assert switch is world.a
    world.clock.advance(30)  # the heartbeat sees a's sessions, not b's
    assert world.manager.state_of(on_a).seen_at == world.now()
    assert world.manager.state_of(on_b).seen_at == world.now() - 30
    # b comes back with its legs still up: reconciled with b's list only
    world.b.channels = [
        ChannelInfo(f"{on_b}-a1", "PJSIP/a", "up"),
        ChannelInfo(f"{on_b}-b1", "PJSIP/b", "up"),
    ]
    world.b.connect(world.now())
    assert set(world.manager.sessions_of("alice")) == {on_a, on_b, newer}
    # b loses it again and its legs go meanwhile
    world.clock.advance(5)
    world.b.disconnect(world.now())
    world.clock.advance(20)
    world.b.channels = []
    world.b.connect(world.now())
    assert set(world.manager.sessions_of("alice")) == {on_a, newer}
    cdrs = {(c.session_id, c.leg): c for c in result(world.store.list_cdrs("alice"))}
    assert cdrs[(on_b, "source")].billed_seconds == 10 + 30 + 5
    # seen up to the second loss (b's reconnect and the heartbeat while it was back)
    assert [cdrs[(on_b, leg)].billed_seconds for leg in ("source", "destination")] == [45, 45]
    assert cdrs[(on_b, "")].cost == SELL_49.cost(45) + SELL_92.cost(45)


def test_a_switch_shutting_down_ends_only_its_sessions():
    """b shutting down: its session ends (SwitchLost); a's goes on, and new ones go to a."""
    world = TwoSwitches()
    on_a, _ = world.talking_on()
    on_b, _ = world.talking_on(EXTRA)
    world.b.shut_down(world.now(), gone=False)
    assert (world.manager.state_of(on_a).reason, world.manager.state_of(on_b).reason) == (
        "",
        "SwitchLost",
    )
    assert world.switch_of(world.callback("+4930555555", DESTINATION)) is world.a
    world.b.hang_up(f"{on_b}-a1", world.now())
    world.b.hang_up(f"{on_b}-b1", world.now())
    assert on_b not in world.manager.sessions_of("alice")
    assert world.cdrs()["session"].cause == "SwitchLost"
    assert world.a.hung_up == []


def test_a_leg_is_refused_only_while_the_sessions_own_switch_shuts_down():
    """ADD on a session of a is refused while a shuts down, not while b does."""
    world = TwoSwitches()
    on_a, _ = world.talking_on()
    world.b.shutting_down = True
    result(world.manager.add_leg(on_a, "+4930999999"))
    world.a.shutting_down = True
    with pytest.raises(CallbackRefused, match="restarting"):
        result(world.manager.add_leg(on_a, "+4930888888"))


def test_no_usable_switch_refuses_a_callback():
    """Every switch down: unreachable; those connected going away: restarting."""
    world = TwoSwitches()
    world.a.disconnect(world.now())
    world.b.disconnect(world.now())
    with pytest.raises(CallbackRefused, match="not reachable"):
        world.callback()
    world.b.connected = True
    world.b.shutting_down = True
    with pytest.raises(CallbackRefused, match="restarting"):
        world.callback()


def test_a_restarted_daemon_reconciles_each_session_with_its_own_switch():
    """After a daemon restart each session is judged by its switch's channel list."""
    world = TwoSwitches()
    on_a, _ = world.talking_on()
    on_b, _ = world.talking_on(EXTRA)
    world.manager.stop()
    b = FakeSwitch()
    b.channels = [ChannelInfo(f"{on_b}-a1", "PJSIP/a", "up"), ChannelInfo(f"{on_b}-b1", "", "up")]
    on_a_live = [ChannelInfo(f"{on_a}-a1", "PJSIP/a", "up"), ChannelInfo(f"{on_a}-b1", "", "up")]
    after = TwoSwitches(b=b, store=world.store, clock=world.clock, channels=on_a_live)
    assert set(after.manager.sessions_of("alice")) == {on_a, on_b}
    assert (after.manager.state_of(on_a).switch, after.manager.state_of(on_b).switch) == ("a", "b")
    # the legs of a's session are not on b: had it been judged by b's list, it would end
    after.a.hang_up(f"{on_a}-a1", after.now())
    assert after.a.hung_up == [(f"{on_a}-b1", 16)]
    assert after.b.hung_up == []


def test_a_session_saved_before_switches_were_recorded_runs_on_the_default_switch():
    """A saved state with no switch (an older daemon's) is recovered onto the first switch."""
    world = World()
    sid = world.talking()
    world.manager.stop()
    saved = result(world.store.load_session(sid))
    del saved["switch"]
    result(world.store.save_session(sid, saved))
    live = [ChannelInfo(f"{sid}-a1", "PJSIP/a", "up"), ChannelInfo(f"{sid}-b1", "", "up")]
    after = TwoSwitches(store=world.store, clock=world.clock, channels=live)
    assert after.manager.state_of(sid).switch == "a"
    result(after.manager.hangup(sid))
    assert {c for c, _ in after.a.hung_up} == {f"{sid}-a1", f"{sid}-b1"}


def test_a_session_on_a_switch_no_longer_configured_ends():
    """Recovered by a daemon without its switch: its legs count as gone, billed up to when
    they were last seen."""
    world = TwoSwitches()
    on_a, _ = world.talking_on()
    on_b, _ = world.talking_on(EXTRA)
    world.clock.advance(12)
    world.manager.stop()  # the last moment that daemon saw the legs up
    world.clock.advance(100)
    only_default = World(store=world.store, clock=world.clock)
    assert only_default.manager.sessions_of("alice") == []
    cdrs = {(c.session_id, c.leg): c for c in result(world.store.list_cdrs("alice"))}
    assert cdrs[(on_a, "source")].billed_seconds == 12
    assert cdrs[(on_b, "destination")].billed_seconds == 12
    assert cdrs[(on_b, "destination")].cause == "lost"


class SlowList(FakeSwitch):
    """A switch whose channel list answers only when the test says so."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list = []

    def list_channels(self):
        from twisted.internet.defer import Deferred

        self.asked.append(Deferred())
        return self.asked[-1]


def test_a_switch_back_while_another_is_reconciled_is_reconciled_after_it():
    """b reconnects while a's recovery waits for a's channel list: b's recovery runs once
    a's is done (one at a time), and a's second reconnect meanwhile is answered by the
    one running."""
    a = SlowList()
    world = TwoSwitches(a=a)
    assert a.asked == []  # the start's recovery: nothing in flight, nothing asked
    on_a, _ = world.talking_on()
    on_b, _ = world.talking_on(EXTRA)
    world.clock.advance(5)
    world.a.disconnect(world.now())
    world.b.disconnect(world.now())
    a.connect(world.now())
    assert len(a.asked) == 1
    world.b.channels = [ChannelInfo(f"{on_b}-a1", "", "up")]  # its destination went
    world.b.connect(world.now())
    a.connect(world.now())
    assert len(a.asked) == 1
    assert world.manager.state_of(on_b).legs[1].state.value == "up"
    a.asked.pop().callback(
        [ChannelInfo(f"{on_a}-a1", "", "up"), ChannelInfo(f"{on_a}-b1", "", "up")]
    )
    # a's done: b's ran, and found its destination gone
    assert world.manager.state_of(on_a).reason == ""
    assert world.manager.state_of(on_b).legs[1].state.value != "up"
    assert a.asked == []


def test_a_switch_refusing_its_channel_list_is_reconciled_when_it_is_back():
    """a refuses the channel list of its recovery (it is shutting down): a warning, not a
    logged failure; a's next reconnect reconciles its session."""
    from twisted.logger import globalLogPublisher

    from callbackd.switch import SwitchError

    a = SlowList()
    world = TwoSwitches(a=a)
    on_a, _ = world.talking_on()
    world.clock.advance(5)
    world.a.disconnect(world.now())
    a.connect(world.now())
    logged: list[dict] = []
    globalLogPublisher.addObserver(logged.append)
    try:
        a.asked.pop().errback(SwitchError("the switch refused: Asterisk is shutting down"))
    finally:
        globalLogPublisher.removeObserver(logged.append)
    assert not [e for e in logged if "log_failure" in e], logged
    assert any("recovery of switch {switch} stopped" in e.get("log_format", "") for e in logged)
    a.connect(world.now())
    a.asked.pop().callback([ChannelInfo(f"{on_a}-a1", "", "up")])  # its destination went
    assert world.manager.state_of(on_a).legs[1].state.value != "up"
