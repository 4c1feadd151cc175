"""The ISwitch contract: the fake switch and the AMI switch tell the same story.

Every scenario runs twice: against :class:`FakeSwitch`, scripted the way the
scenario says the switch behaves, and against :class:`AMISwitch` driving the
simulated Asterisk over real loopback TCP (``SimulatorService`` on port 0, the
real AMI client, the real reactor, delays scaled down). The normalised event
sequences of both must equal the scenario's expected sequence, so a session
manager tested against the fake meets the same events in production.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.task import deferLater
from zope.interface.verify import verifyObject

from callbackd.ami.client import AMIClientService
from callbackd.amiswitch import AMISwitch
from callbackd.fakeswitch import OUTCOMES, FakeSwitch
from callbackd.simulator.service import SimulatorService
from callbackd.switch import (
    ChannelInfo,
    ISwitch,
    LegAnswered,
    LegFailed,
    LegHungUp,
    LegJoined,
    LegRinging,
    OriginateRequest,
    RoomCommand,
    SwitchConnected,
    SwitchDisconnected,
    SwitchError,
    SwitchShutdown,
)

TIME_SCALE = 0.01  # one simulated second lasts 10 ms
WAIT_LIMIT = 5.0  # real seconds any expected event may take

Script = Callable[[FakeSwitch, Callable[[], float]], object]
Until = Callable[[list], bool]


def request(channel_id: str, number: str, role: str = "join", room: str = "c1", timeout=30):
    """A leg to a callee of the test dialplan (``sim-callee``, fixtures/asterisk22/config)."""
    channel = number if "/" in number else f"Local/{number}@sim-callee/n"
    return OriginateRequest(channel_id, channel, room, role, timeout, "Callback <+15551000>")


def has(kind: type, channel_id: str) -> Until:
    return lambda events: any(isinstance(e, kind) and e.channel_id == channel_id for e in events)


def ended(channel_id: str) -> Until:
    return lambda events: has(LegFailed, channel_id)(events) or has(LegHungUp, channel_id)(events)


def every(*conditions: Until) -> Until:
    return lambda events: all(c(events) for c in conditions)


class FakeDriver:
    """Runs a scenario on FakeSwitch: each step plays its script."""

    name = "fake"

    def __init__(self) -> None:
        self.switch = FakeSwitch()
        self.events: list = []
        self.switch.add_listener(self.events.append)
        self.now = 1_000.0

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    def tick(self) -> float:
        self.now += 0.5
        return self.now

    async def expect(self, script: Script, until: Until) -> None:
        script(self.switch, self.tick)
        assert until(self.events), self.events

    def refuse_next(self) -> None:
        self.switch.refuse_next("the switch refused the call: Extension does not exist.")

    def set_channels(self, channels: list[ChannelInfo]) -> None:
        self.switch.channels = channels

    def key_hash11(self, channel_id: str) -> None:
        pass  # the scenario's script says what the switch reports

    async def quiet(self) -> None:
        pass


class AMIDriver:
    """Runs a scenario on AMISwitch against the simulated Asterisk: each step waits."""

    name = "ami"

    def __init__(self) -> None:
        self.simulator = SimulatorService(
            "tcp:0:interface=127.0.0.1",
            "callbackd",
            "sim-secret",
            reactor=reactor,
            clock=reactor,
            time_scale=TIME_SCALE,
        )
        self.client: AMIClientService | None = None
        self.switch: AMISwitch | None = None
        self.events: list = []

    async def start(self) -> None:
        self.simulator.startService()
        port = await self.simulator.ready
        self.client = AMIClientService(
            TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=5),
            "callbackd",
            "sim-secret",
            clock=reactor,
            action_timeout=5.0,
        )
        self.switch = AMISwitch(self.client, clock=reactor, settle_timeout=0.5)
        self.switch.add_listener(self.events.append)
        self.client.startService()
        await self.client.when_connected(timeout=WAIT_LIMIT)
        # the connection listeners run right after the when_connected waiters
        await self.expect(None, lambda events: bool(events))
        assert self.switch.connected
        assert [type(e) for e in self.events] == [SwitchConnected]
        self.events.clear()

    async def stop(self) -> None:
        if self.switch is not None:
            self.switch.close()
        if self.client is not None:
            await self.client.stopService()
        await self.simulator.stopService()

    async def expect(self, script: Script | None, until: Until) -> None:
        waited = 0.0
        while not until(self.events):
            if waited > WAIT_LIMIT:
                raise AssertionError(f"still waiting after {WAIT_LIMIT}s; events: {self.events}")
            await deferLater(reactor, 0.01, lambda: None)
            waited += 0.01

    def refuse_next(self) -> None:
        # the one synchronous refusal a correct request can meet: a dialplan that lacks the leg
        assert self.switch is not None
        self.switch.context = "cb-missing"

    def set_channels(self, channels: list[ChannelInfo]) -> None:
        pass

    def key_hash11(self, channel_id: str) -> None:
        """The far end of the leg keys ``#11`` (as ``PlayDTMF Receive: true`` does)."""
        channel = self.simulator.switch.find_channel(channel_id)
        assert channel is not None
        for digit in "#11":
            self.simulator.switch.dtmf_received(channel, digit)

    async def quiet(self) -> None:
        """Give late (duplicate) events time to show up."""
        await deferLater(reactor, 0.2, lambda: None)


# --- scenarios: what the session manager does, what the switch says back ----------------


async def answer_then_hangup(d) -> None:
    await d.switch.originate(request("c1-a", "400"))  # answers after 1 s, hangs up 5 s later

    def up(f: FakeSwitch, t) -> None:
        f.ring("c1-a", t())
        f.answer("c1-a", t())
        f.join("c1-a", t())

    await d.expect(up, has(LegJoined, "c1-a"))
    await d.expect(lambda f, t: f.hang_up("c1-a", t()), ended("c1-a"))


async def busy(d) -> None:
    await d.switch.originate(request("c1-a", "200"))
    await d.expect(lambda f, t: f.fail("c1-a", "busy", t()), ended("c1-a"))


async def no_answer(d) -> None:
    await d.switch.originate(request("c1-a", "300", timeout=1))  # rings for ever

    def rings_out(f: FakeSwitch, t) -> None:
        f.ring("c1-a", t())
        f.fail("c1-a", "noanswer", t())

    await d.expect(rings_out, ended("c1-a"))


async def congestion(d) -> None:
    await d.switch.originate(request("c1-a", "500"))
    await d.expect(lambda f, t: f.fail("c1-a", "congestion", t()), ended("c1-a"))


async def unknown_technology(d) -> None:
    await d.switch.originate(request("c1-a", "Nope/123"))
    await d.expect(lambda f, t: f.fail("c1-a", "chanunavail", t()), ended("c1-a"))


async def refused(d) -> None:
    with pytest.raises(SwitchError):
        await d.switch.originate(request("c1-a", "101", room="not a room"))
    d.refuse_next()
    with pytest.raises(SwitchError) as refusal:
        await d.switch.originate(request("c1-a", "101"))
    assert "Extension does not exist" in str(refusal.value)


async def source_waits(d, room: str = "c1") -> None:
    """A source leg answers and waits (ringback) for its room."""
    await d.switch.originate(request(f"{room}-a", "101", role="wait", room=room))

    def up(f: FakeSwitch, t) -> None:
        f.ring(f"{room}-a", t())
        f.answer(f"{room}-a", t())

    await d.expect(up, has(LegAnswered, f"{room}-a"))


async def destination_joins(d, room: str = "c1") -> None:
    """A destination leg answers and goes straight into the room."""
    await d.switch.originate(request(f"{room}-b", "102", room=room))

    def up(f: FakeSwitch, t) -> None:
        f.ring(f"{room}-b", t())
        f.answer(f"{room}-b", t())
        f.join(f"{room}-b", t())

    await d.expect(up, has(LegJoined, f"{room}-b"))


async def two_legs_in_one_room(d) -> None:
    await source_waits(d)
    await destination_joins(d)
    await d.switch.join_room("c1-a", "c1")
    await d.expect(lambda f, t: f.join("c1-a", t()), has(LegJoined, "c1-a"))
    await d.switch.hangup("c1-a")

    def both_end(f: FakeSwitch, t) -> None:
        # the destination is end_marked: it leaves when the source does
        f.hang_up("c1-a", t())
        f.hang_up("c1-b", t())

    await d.expect(both_end, every(ended("c1-a"), ended("c1-b")))


async def hangup_by_us(d) -> None:
    await destination_joins(d)
    await d.switch.hangup("c1-b")
    await d.expect(lambda f, t: f.hang_up("c1-b", t()), ended("c1-b"))
    await d.switch.hangup("c1-b")  # already gone: still fine


async def absolute_timeout(d) -> None:
    await destination_joins(d)
    await d.switch.set_absolute_timeout("c1-b", 2)
    await d.expect(lambda f, t: f.hang_up("c1-b", t()), ended("c1-b"))


async def list_channels_while_up(d) -> None:
    await source_waits(d)
    await destination_joins(d)
    d.set_channels(
        [
            ChannelInfo("c1-a", "Fake/c1-a", "up", "c1", 1),
            ChannelInfo("c1-b", "Fake/c1-b", "up", "c1", 0),
        ]
    )
    channels = await d.switch.list_channels()
    assert sorted((c.channel_id, c.state, c.room) for c in channels) == [
        ("c1-a", "up", "c1"),
        ("c1-b", "up", "c1"),
    ]
    assert all(c.channel_name for c in channels)
    for leg in ("c1-b", "c1-a"):
        await d.switch.hangup(leg)
        await d.expect(lambda f, t, leg=leg: f.hang_up(leg, t()), ended(leg))


async def hash11_in_the_room(d) -> None:
    """The source keys #11 in the room: the switch reports the command, nothing else."""
    await source_waits(d)
    await destination_joins(d)
    await d.switch.join_room("c1-a", "c1")
    await d.expect(lambda f, t: f.join("c1-a", t()), has(LegJoined, "c1-a"))
    d.key_hash11("c1-a")
    await d.expect(lambda f, t: f.key("c1", "endb", t(), "c1-a"), has(RoomCommand, "c1-a"))
    for leg in ("c1-b", "c1-a"):
        await d.switch.hangup(leg)
        await d.expect(lambda f, t, leg=leg: f.hang_up(leg, t()), ended(leg))


UP = [("ringing",), ("answered",), ("joined", "c1")]
WAITING = [("ringing",), ("answered",)]

#: scenario -> the normalised story of each leg
SCENARIOS: dict[str, tuple[Callable[..., Awaitable[None]], dict[str, list[tuple]]]] = {
    "answer then hangup": (answer_then_hangup, {"c1-a": [*UP, ("hungup", 16)]}),
    "busy": (busy, {"c1-a": [("failed", "busy", 17)]}),
    "no answer": (no_answer, {"c1-a": [("ringing",), ("failed", "noanswer", 19)]}),
    "congestion": (congestion, {"c1-a": [("failed", "congestion", 34)]}),
    "unknown technology": (unknown_technology, {"c1-a": [("failed", "chanunavail", 0)]}),
    "refused": (refused, {}),
    "two legs in one room": (
        two_legs_in_one_room,
        {"c1-a": [*WAITING, ("joined", "c1"), ("hungup", 16)], "c1-b": [*UP, ("hungup", 16)]},
    ),
    "hangup by us": (hangup_by_us, {"c1-b": [*UP, ("hungup", 16)]}),
    "absolute timeout": (absolute_timeout, {"c1-b": [*UP, ("hungup", 16)]}),
    "list channels": (
        list_channels_while_up,
        {"c1-a": [*WAITING, ("hungup", 16)], "c1-b": [*UP, ("hungup", 16)]},
    ),
    "#11 in the room": (
        hash11_in_the_room,
        {
            "c1-a": [*WAITING, ("joined", "c1"), ("keyed", "c1", "endb"), ("hungup", 16)],
            "c1-b": [*UP, ("hungup", 16)],
        },
    ),
}


def story(events: list) -> dict[str, list[tuple]]:
    """The normalised events per leg, without timestamps and channel names."""
    out: dict[str, list[tuple]] = {}
    for e in events:
        if isinstance(e, LegRinging):
            item: tuple = ("ringing",)
        elif isinstance(e, LegAnswered):
            item = ("answered",)
        elif isinstance(e, LegJoined):
            item = ("joined", e.room)
        elif isinstance(e, LegFailed):
            item = ("failed", e.outcome, e.cause)
        elif isinstance(e, LegHungUp):
            item = ("hungup", e.cause)
        elif isinstance(e, RoomCommand):
            item = ("keyed", e.room, e.command)
        else:
            raise AssertionError(f"unexpected event {e!r}")
        out.setdefault(e.channel_id, []).append(item)
    return out


def check_invariants(events: list) -> None:
    """Per leg: time never runs backwards and an answered leg has a channel name."""
    last: dict[str, float] = {}
    for e in events:
        assert e.at >= last.get(e.channel_id, 0.0), events
        last[e.channel_id] = e.at
        if isinstance(e, LegAnswered):
            assert e.channel_name


@pytest.mark.parametrize("scenario", list(SCENARIOS))
@pytest.mark.parametrize("driver_class", [FakeDriver, AMIDriver], ids=["fake", "ami"])
@pytest_twisted.ensureDeferred
async def test_contract(driver_class, scenario):
    """Both switches report the scenario's story, event for event."""
    run, expected = SCENARIOS[scenario]
    driver = driver_class()
    await driver.start()
    try:
        await run(driver)
        await driver.quiet()
        assert story(driver.events) == expected
        check_invariants(driver.events)
    finally:
        await driver.stop()


# --- the fake's own promises ---------------------------------------------------------------


def test_fake_provides_iswitch():
    """FakeSwitch provides ISwitch, its attributes included."""
    assert verifyObject(ISwitch, FakeSwitch())


def test_fake_records_requests():
    """Every request lands in its list, in order."""
    fake = FakeSwitch()
    fake.originate(request("c1-a", "101"))
    fake.hangup("c1-a", 17)
    fake.join_room("c1-a", "c1")
    fake.set_absolute_timeout("c1-a", 60)
    assert (fake.originated, fake.hung_up, fake.joined, fake.timeouts) == (
        [request("c1-a", "101")],
        [("c1-a", 17)],
        [("c1-a", "c1")],
        [("c1-a", 60)],
    )


def test_fake_refuse_next_refuses_once():
    """refuse_next makes exactly the next originate errback SwitchError(reason)."""
    fake = FakeSwitch()
    fake.refuse_next("no trunk")
    results: list = []
    fake.originate(request("c1-a", "101")).addErrback(results.append)
    fake.originate(request("c1-b", "101")).addBoth(results.append)
    assert [str(r.value) if hasattr(r, "value") else r for r in results] == ["no trunk", None]
    assert [r.channel_id for r in fake.originated] == ["c1-b"]


def test_fake_fail_rejects_unknown_outcomes():
    """fail() takes only the outcomes LegFailed documents."""
    fake = FakeSwitch()
    with pytest.raises(ValueError):
        fake.fail("c1-a", "exploded", 1.0)
    assert "busy" in OUTCOMES


def test_fake_disconnected_refuses_requests():
    """While disconnected every request errbacks SwitchError and listeners hear of it."""
    fake = FakeSwitch()
    heard: list = []
    fake.add_listener(heard.append)
    fake.disconnect(5.0, "cable")
    results: list = []
    fake.originate(request("c1-a", "101")).addErrback(results.append)
    fake.hangup("c1-a").addErrback(results.append)
    fake.list_channels().addErrback(results.append)
    assert [r.check(SwitchError) for r in results] == [SwitchError] * 3
    fake.connect(6.0)
    assert heard == [SwitchDisconnected(5.0, "cable"), SwitchConnected(6.0)]
    assert fake.connected


def test_fake_key_emits_only_known_room_commands():
    """key() reports a room command the dialplan can send, and refuses any other."""
    fake = FakeSwitch()
    heard: list = []
    fake.add_listener(heard.append)
    fake.key("c1", "endb", 5.0, "c1-a")
    with pytest.raises(ValueError):
        fake.key("c1", "reboot", 6.0)
    assert heard == [RoomCommand("c1", "endb", 5.0, "c1-a")]


def test_fake_shut_down_and_restart():
    """shut_down reports the shutdown and the loss; restart comes back with no channel."""
    fake = FakeSwitch()
    fake.channels = [ChannelInfo("c1-a", "Fake/c1-a", "up")]
    heard: list = []
    fake.add_listener(heard.append)
    fake.shut_down(5.0)
    assert fake.shutting_down
    fake.restart(9.0)
    assert not fake.shutting_down
    assert heard == [
        SwitchShutdown(5.0, True),
        SwitchDisconnected(5.0, "the switch shut down"),
        SwitchConnected(9.0),
    ]
    assert (fake.channels, fake.started_at, fake.connected) == ([], 9.0, True)
