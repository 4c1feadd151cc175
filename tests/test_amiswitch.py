"""AMISwitch: requests become the right AMI actions; real Asterisk 22 events become leg events.

The switch runs over the real :class:`AMIProtocol` on a ``StringTransport``; the
recorded transcripts of ``fixtures/asterisk22/`` are fed back to it byte for byte
(only ActionIDs are mapped to the ones this client sent, and auto-assigned
uniqueids to pre-assigned ones where the recording used none).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from callbackd.ami.message import Message, MessageParser, encode_message
from callbackd.ami.protocol import AMIProtocol, EventRegistry
from callbackd.amiswitch import AMISwitch, failure_outcome
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
from tests.ami.fixtures import fixture_path, server_bytes

NOW = 1_800_000_000.0


class StubClient:
    """The part of AMIClientService the switch uses, around one real AMIProtocol."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.events = EventRegistry()
        self.protocol: AMIProtocol | None = None
        self.listeners: list[tuple[Callable, Callable]] = []
        self.last_error = ""

    @property
    def connected(self) -> bool:
        return self.protocol is not None

    def register_event(self, name, callback) -> None:
        self.events.register(name, callback)

    def deregister_event(self, name, callback) -> None:
        self.events.deregister(name, callback)

    def add_connection_listener(self, on_connected, on_lost) -> None:
        self.listeners.append((on_connected, on_lost))

    def connect(self) -> AMIProtocol:
        protocol = AMIProtocol(clock=self.clock, events=self.events, action_timeout=5.0)
        protocol.makeConnection(StringTransport())
        protocol.dataReceived(b"Asterisk Call Manager/11.0.0\r\n")
        self.protocol = protocol
        for on_connected, _ in self.listeners:
            on_connected(protocol)
        return protocol

    def lose(self, why: str = "gone") -> None:
        self.protocol = None
        for _, on_lost in self.listeners:
            on_lost(Failure(ConnectionError(why)))


class Wire:
    """An AMISwitch on a connected stub client, with the bytes it wrote readable."""

    def __init__(self, connect: bool = True, settle_timeout: float = 2.0) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.client = StubClient(self.clock)
        self.switch = AMISwitch(
            self.client,
            clock=self.clock,
            caller_id="Callback <+15551000>",
            settle_timeout=settle_timeout,
        )
        self.events: list = []
        self.switch.add_listener(self.events.append)
        if connect:
            self.client.connect()
            self.events.clear()  # the SwitchConnected

    @property
    def protocol(self) -> AMIProtocol:
        assert self.client.protocol is not None
        return self.client.protocol

    def actions(self) -> list[Message]:
        """Every action written so far."""
        transport = self.protocol.transport
        assert isinstance(transport, StringTransport)
        return MessageParser().feed(transport.value())

    def last_action_id(self) -> str:
        return self.actions()[-1]["ActionID"]

    def feed(self, message: Message) -> None:
        self.protocol.dataReceived(encode_message(message))

    def reply(self, *pairs: tuple[str, str]) -> None:
        """Answer the last action written."""
        self.feed(Message([pairs[0], ("ActionID", self.last_action_id()), *pairs[1:]]))

    def originate(self, channel_id: str, role: str = "join", room: str = "sA", **kw):
        request = OriginateRequest(
            channel_id=channel_id,
            channel=kw.pop("channel", "Local/101@sim-callee/n"),
            room=room,
            role=role,
            timeout=kw.pop("timeout", 45),
            **kw,
        )
        return self.switch.originate(request)


def event(name: str, **headers: str) -> Message:
    return Message([("Event", name), *((k.replace("_", "-"), v) for k, v in headers.items())])


def with_action_id(message: Message, action_id: str) -> Message:
    return Message([(k, action_id if k.lower() == "actionid" else v) for k, v in message])


def renamed(messages: Iterable[Message], ids: dict[str, str]) -> list[Message]:
    """The messages with uniqueids renamed (recordings made without ChannelId)."""
    keys = {"uniqueid", "destuniqueid", "linkedid", "destlinkedid"}
    return [
        Message([(k, ids.get(v, v) if k.lower() in keys else v) for k, v in m]) for m in messages
    ]


def log_messages(name: str) -> list[Message]:
    """Every message Asterisk sent in a ``.log`` transcript."""
    return MessageParser(banner=True).feed(server_bytes(name))


def json_messages(name: str) -> list[Message]:
    with fixture_path(name).open() as f:
        return [Message([tuple(pair) for pair in pairs]) for _, pairs in json.load(f)]


def replay(wire: Wire, messages: Iterable[Message], script: dict[str, Callable[[], object]]):
    """Feed a recording; at the reply to recorded action X run ``script[X]`` first.

    The scripted call writes this client's own action, whose ActionID then stands
    for X in the recording's replies, list items and OriginateResponse.
    Responses and list items of recorded actions nobody scripted are skipped.
    """
    ours: dict[str, str] = {}
    for message in messages:
        action_id = message.get("ActionID")
        if message.is_response:
            if action_id in script and action_id not in ours:
                script[action_id]()
                ours[action_id] = wire.last_action_id()
            if action_id in ours:
                wire.feed(with_action_id(message, ours[action_id]))
            continue
        if action_id is None:
            wire.feed(message)
        elif action_id in ours:
            wire.feed(with_action_id(message, ours[action_id]))


def single_leg_log(name: str, channel_id: str) -> list[Message]:
    """A one-Originate recording, its uniqueids renamed to ``channel_id`` and ``-2``."""
    messages = log_messages(name)
    halves = [m for m in messages if m.name == "Newchannel"]
    one = next(m["Uniqueid"] for m in halves if m["Channel"].endswith(";1"))
    two = next(m["Uniqueid"] for m in halves if m["Channel"].endswith(";2"))
    return renamed(messages, {one: channel_id, two: f"{channel_id}-2"})


def originate_action_id(messages: list[Message]) -> str:
    return next(m["ActionID"] for m in messages if m.get("Message", "").startswith("Originate"))


def of_leg(events: list, channel_id: str) -> list:
    """The leg events of one leg (a RoomCommand names the leg that keyed it, too)."""
    return [
        e
        for e in events
        if getattr(e, "channel_id", None) == channel_id and not isinstance(e, RoomCommand)
    ]


def first_timestamp(messages: list[Message], match: Callable[[Message], bool]) -> float:
    return next(float(m["Timestamp"]) for m in messages if "Timestamp" in m and match(m))


def answer_evidence(channel_id: str) -> Callable[[Message], bool]:
    def match(m: Message) -> bool:
        return (
            (m.name == "Newstate" and m.get("Uniqueid") == channel_id and m["ChannelState"] == "6")
            or (m.name == "DialEnd" and m.get("DestUniqueid") == channel_id)
            and m.get("DialStatus") == "ANSWER"
            or (
                m.name == "OriginateResponse"
                and m.get("Uniqueid") == channel_id
                and m.get("Response") == "Success"
            )
        )

    return match


# --- the Option A recording --------------------------------------------------------------

OPTION_A = "ami-option-a-conf-events.json"


def run_option_a() -> tuple[Wire, list[Message], dict[str, object]]:
    """Replay the Option A session: A waits, B joins, A is moved in, C joins, B and A end."""
    wire = Wire()
    messages = json_messages(OPTION_A)
    results: dict[str, object] = {}

    def keep(name: str, d) -> None:
        d.addBoth(lambda r: results.__setitem__(name, r))

    script = {
        "c-2": lambda: keep("A", wire.originate("sA-a", role="wait")),
        "c-3": lambda: keep("B", wire.originate("sA-b", channel="Local/102@sim-callee/n")),
        "c-4": lambda: keep("join", wire.switch.join_room("sA-a", "sA")),
        "c-6": lambda: keep("channels", wire.switch.list_channels()),
        "c-11": lambda: keep("C", wire.originate("sA-c")),
        "c-17": lambda: keep("hangup", wire.switch.hangup("sA-a")),
    }
    replay(wire, messages, script)
    return wire, messages, results


def test_option_a_answer_instants_are_the_first_answer_timestamps():
    """Each leg's LegAnswered carries the Timestamp of its first answer event."""
    wire, messages, _ = run_option_a()
    answered = {e.channel_id: e.at for e in wire.events if isinstance(e, LegAnswered)}
    assert answered == {
        leg: first_timestamp(messages, answer_evidence(leg)) for leg in ("sA-a", "sA-b", "sA-c")
    }


def test_option_a_leg_sequences():
    """Every leg rings, answers, joins and hangs up, in that order, once each."""
    wire, _, _ = run_option_a()
    for leg in ("sA-a", "sA-b", "sA-c"):
        kinds = [type(e) for e in of_leg(wire.events, leg)]
        assert kinds == [LegRinging, LegAnswered, LegJoined, LegHungUp], leg


def test_option_a_hangups_carry_the_hangup_timestamps_and_causes():
    """LegHungUp is stamped with the leg's own Hangup event, not the ;2 half's."""
    wire, messages, _ = run_option_a()
    for e in (e for e in wire.events if isinstance(e, LegHungUp)):
        hangup = next(m for m in messages if m.name == "Hangup" and m["Uniqueid"] == e.channel_id)
        assert (e.at, e.cause, e.cause_text) == (
            float(hangup["Timestamp"]),
            int(hangup["Cause"]),
            hangup["Cause-txt"],
        )


def test_option_a_ignores_the_local_halves():
    """No event is reported for the ``-2`` halves of the Local channels."""
    wire, _, _ = run_option_a()
    ids = {e.channel_id for e in wire.events}
    assert ids == {"sA-a", "sA-b", "sA-c"}


def test_option_a_join_room_redirects_to_leg_a():
    """join_room sends Redirect of the leg's uniqueid to cb-conf,leg-a,1 and succeeds."""
    wire, _, results = run_option_a()
    redirect = next(a for a in wire.actions() if a.name == "Redirect")
    assert (redirect["Channel"], redirect["Context"], redirect["Exten"], redirect["Priority"]) == (
        "sA-a",
        "cb-conf",
        "leg-a",
        "1",
    )
    assert results["join"] is None


def test_option_a_list_channels_reports_our_legs_only():
    """CoreShowChannels items become ChannelInfo for the ;1 halves only."""
    _, _, results = run_option_a()
    channels = results["channels"]
    assert isinstance(channels, list)
    assert sorted(c.channel_id for c in channels) == ["sA-a", "sA-b"]
    assert all(isinstance(c, ChannelInfo) and c.state == "up" for c in channels)
    assert all(c.channel_name.endswith(";1") for c in channels)


def test_option_a_originates_are_accepted():
    """Each originate Deferred fired with None (Asterisk took the call)."""
    _, _, results = run_option_a()
    assert [results[k] for k in ("A", "B", "C", "hangup")] == [None, None, None, None]


def test_option_a_keyed_command_is_a_room_command():
    """The recorded ``#11`` (UserEvent CbDtmf on the source) is one RoomCommand endb for sA."""
    wire, messages, _ = run_option_a()
    user_event = next(m for m in messages if m.name == "UserEvent")
    commands = [e for e in wire.events if isinstance(e, RoomCommand)]
    assert commands == [RoomCommand("sA", "endb", float(user_event["Timestamp"]), "sA-a")]


def test_option_a_forgets_ended_legs():
    """After every leg hung up the switch follows no leg any more."""
    wire, _, _ = run_option_a()
    assert wire.switch.legs == ()


LEG_EVENTS = {"Newchannel", "Newstate", "DialEnd", "OriginateResponse", "ConfbridgeJoin", "Hangup"}


def shuffled_within_bursts(messages: list[Message], rnd, gap: float = 0.005) -> list[Message]:
    """The messages with every burst (events less than ``gap`` s apart) shuffled.

    Asterisk orders nothing across sources (docs/asterisk.rst): events of the same
    instant arrive in any order; events seconds apart do not swap.
    """
    bursts: list[list[Message]] = []
    last = None
    for m in sorted(messages, key=lambda m: float(m["Timestamp"])):
        t = float(m["Timestamp"])
        if last is None or t - last > gap:
            bursts.append([])
        bursts[-1].append(m)
        last = t
    out: list[Message] = []
    for burst in bursts:
        rnd.shuffle(burst)
        out += burst
    return out


@settings(max_examples=60, deadline=None)
@given(st.randoms(use_true_random=False))
def test_option_a_events_in_any_order(rnd):
    """Reordered bursts still give one answer (within 10 ms), one join, one hangup per leg."""
    all_messages = json_messages(OPTION_A)
    messages = [m for m in all_messages if m.name in LEG_EVENTS]
    wire = Wire()
    ours = {}
    for leg in ("sA-a", "sA-b", "sA-c"):
        wire.originate(leg)
        ours[leg] = wire.last_action_id()
    for m in shuffled_within_bursts(messages, rnd):
        if m.name == "OriginateResponse":
            m = with_action_id(m, ours[m["Uniqueid"]])
        wire.feed(m)
    for leg in ours:
        events = of_leg(wire.events, leg)
        kinds = [type(e) for e in events]
        assert kinds.count(LegAnswered) == kinds.count(LegJoined) == kinds.count(LegHungUp) == 1
        assert LegFailed not in kinds
        assert kinds.index(LegAnswered) < kinds.index(LegJoined) < kinds.index(LegHungUp)
        answered = next(e for e in events if isinstance(e, LegAnswered))
        assert abs(answered.at - first_timestamp(all_messages, answer_evidence(leg))) < 0.01
    assert {e.channel_id for e in wire.events} == set(ours)


# --- the single-leg recordings -------------------------------------------------------------

FAILURES = [
    # recording, the dialled party, what the daemon must conclude
    ("ami-busy.log", "busy", 17),
    ("ami-congestion.log", "congestion", 34),
    ("ami-noanswer.log", "noanswer", 19),
]


@pytest.mark.parametrize(("name", "outcome", "cause"), FAILURES)
def test_failed_recordings(name, outcome, cause):
    """The recorded failures end in exactly one LegFailed with the right outcome and cause."""
    wire = Wire()
    messages = single_leg_log(name, "t1")
    replay(wire, messages, {originate_action_id(messages): lambda: wire.originate("t1")})
    failed = [e for e in wire.events if isinstance(e, LegFailed)]
    assert [(e.channel_id, e.outcome, e.cause) for e in failed] == [("t1", outcome, cause)]
    assert not [e for e in wire.events if isinstance(e, (LegAnswered, LegHungUp))]


@pytest.mark.parametrize(("name", "outcome", "cause"), FAILURES)
def test_failed_recordings_without_timestamps_use_the_clock(name, outcome, cause):
    """Recordings made without timestampevents are stamped with the injected clock."""
    wire = Wire()
    messages = single_leg_log(name, "t1")
    replay(wire, messages, {originate_action_id(messages): lambda: wire.originate("t1")})
    assert {e.at for e in wire.events} == {wire.clock.seconds()}


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(FAILURES), st.randoms(use_true_random=False))
def test_failed_recordings_in_any_order(failure, rnd):
    """The outcome and cause of a failed leg do not depend on the order of its events."""
    name, outcome, cause = failure
    messages = single_leg_log(name, "t1")
    wire = Wire()
    wire.originate("t1")
    ours = wire.last_action_id()
    events = [m for m in messages if m.is_event and m.name != "FullyBooted"]
    rnd.shuffle(events)
    for m in events:
        wire.feed(with_action_id(m, ours) if "ActionID" in m else m)
    wire.clock.advance(wire.switch.settle_timeout)
    failed = [e for e in wire.events if isinstance(e, LegFailed)]
    assert [(e.outcome, e.cause) for e in failed] == [(outcome, cause)]


def test_answer_then_hangup_recording():
    """The recorded call is answered, joins, hangs up with 16; nothing for the ;2 half."""
    wire = Wire()
    messages = log_messages("ami-answer_then_hangup.log")
    replay(
        wire,
        messages,
        {originate_action_id(messages): lambda: wire.originate("s1-leg-a", role="join")},
    )
    kinds = [type(e) for e in wire.events if not isinstance(e, LegRinging)]
    assert kinds == [LegAnswered, LegJoined, LegHungUp]
    assert wire.events[-1].cause == 16
    assert {e.channel_id for e in wire.events} == {"s1-leg-a"}
    answered = next(e for e in wire.events if isinstance(e, LegAnswered))
    assert answered.channel_name.startswith("Local/15550041234@sim-pstn-")


def test_synchronous_error_recording_refuses_the_originate():
    """``Response: Error`` to the Originate errbacks SwitchError carrying Asterisk's text."""
    wire = Wire()
    messages = log_messages("ami-bad.log")
    results = []
    replay(
        wire,
        messages[:3],  # login, FullyBooted, the refused Originate
        {"bad-1": lambda: wire.originate("t1", channel="Bogus/123").addErrback(results.append)},
    )
    assert len(results) == 1 and results[0].check(SwitchError)
    assert "Originate failed" in results[0].getErrorMessage()
    assert wire.switch.legs == ()


# --- the Originate action -------------------------------------------------------------------


@pytest.mark.parametrize(("role", "exten"), [("wait", "wait-a"), ("join", "leg-b")])
def test_originate_action(role, exten):
    """originate sends an async Originate into cb-conf with the pre-assigned ids."""
    wire = Wire()
    wire.originate("s9-b", role=role, room="s9", timeout=20, variables=(("CB_LEG", "b"),))
    action = wire.actions()[-1]
    assert action.name == "Originate"
    assert action.to_dict() | {"ActionID": ""} == {
        "Action": "Originate",
        "ActionID": "",
        "Channel": "Local/101@sim-callee/n",
        "Context": "cb-conf",
        "Exten": exten,
        "Priority": "1",
        "Timeout": "20000",
        "CallerID": "Callback <+15551000>",
        "Variable": "CB_ROOM=s9",
        "ChannelId": "s9-b",
        "OtherChannelId": "s9-b-2",
        "Async": "true",
    }
    assert action.get_all("Variable") == ["CB_ROOM=s9", "CB_LEG=b"]


def test_originate_uses_the_requests_caller_id():
    """A request's own caller id replaces the configured one."""
    wire = Wire()
    wire.originate("s9-b", caller_id='"Alice" <+4930123>')
    assert wire.actions()[-1]["CallerID"] == '"Alice" <+4930123>'


@pytest.mark.parametrize(
    "change",
    [
        {"room": "s 1"},
        {"room": "s-1"},
        {"room": "x" * 41},
        {"channel_id": "a;2"},
        {"role": "bridge"},
        {"channel": "no-slash"},
        {"channel": "PJSIP/1&PJSIP/2"},
        {"variables": (("CB_X", "a,b"),)},
        {"variables": (("CB_ROOM", "other"),)},
        {"caller_id": "x\r\nAction: Ping"},
        {"timeout": 0},
    ],
)
def test_originate_refuses_bad_requests_without_writing(change):
    """Malformed requests errback SwitchError and nothing reaches Asterisk."""
    wire = Wire()
    args = {"channel_id": "s1-a", "room": "s1", "role": "join", "channel": "Local/1@x/n"}
    args["timeout"] = 30
    args.update(change)
    results = []
    wire.switch.originate(OriginateRequest(**args)).addErrback(results.append)
    assert len(results) == 1 and results[0].check(SwitchError)
    assert wire.actions() == []


def test_originate_refuses_a_leg_id_in_use():
    """A second originate with a live leg's id is refused."""
    wire = Wire()
    wire.originate("s1-a")
    results = []
    wire.originate("s1-a").addErrback(results.append)
    assert len(results) == 1 and "in use" in results[0].getErrorMessage()


def test_originate_when_disconnected():
    """Without an AMI session originate errbacks SwitchError at once."""
    wire = Wire(connect=False)
    results = []
    wire.originate("s1-a").addErrback(results.append)
    assert len(results) == 1 and results[0].check(SwitchError)
    assert not wire.switch.connected


def test_originate_accepted_only_on_a_sign_of_life():
    """The originate Deferred waits for Asterisk's first event of the leg."""
    wire = Wire()
    results = []
    wire.originate("s1-a").addBoth(results.append)
    wire.reply(("Response", "Success"), ("Message", "Originate successfully queued"))
    assert results == []
    wire.feed(event("Newchannel", Channel="Local/1@x-01;1", ChannelState="0", Uniqueid="s1-a"))
    assert results == [None]


def test_originate_lost_connection_before_acceptance():
    """A connection lost before Asterisk took the call errbacks SwitchError."""
    wire = Wire()
    results = []
    wire.originate("s1-a").addErrback(results.append)
    wire.protocol.connectionLost(Failure(ConnectionError("reset")))
    assert len(results) == 1 and results[0].check(SwitchError)
    assert wire.switch.legs == ()


# --- translation details --------------------------------------------------------------------


def accepted_leg(wire: Wire, channel_id: str = "s1-a") -> None:
    wire.originate(channel_id)
    wire.feed(event("Newchannel", Channel="Local/1@x-01;1", ChannelState="0", Uniqueid=channel_id))


def test_unavailable_technology_fails_at_once():
    """OriginateResponse Failure with no channel ever created is chanunavail, no waiting."""
    wire = Wire()
    wire.originate("s1-a", channel="Nope/123")
    wire.feed(
        with_action_id(
            event(
                "OriginateResponse",
                Response="Failure",
                Channel="Nope/123",
                Reason="0",
                Uniqueid="s1-a",
                Timestamp="1795316160.5",
            ),
            wire.last_action_id(),
        )
    )
    assert wire.events[-1] == LegFailed("s1-a", 1795316160.5, "chanunavail", 0)


def test_rejected_leg_uses_the_hangup_cause():
    """Reason 0 with the leg's own Hangup cause 21 is 'rejected', whatever DialStatus says."""
    wire = Wire()
    accepted_leg(wire)
    wire.feed(event("DialEnd", DestUniqueid="s1-a", DialStatus="NOANSWER"))
    wire.feed(event("Hangup", Uniqueid="s1-a", Cause="21", Cause_txt="Call Rejected"))
    wire.feed(event("OriginateResponse", Response="Failure", Reason="0", Uniqueid="s1-a"))
    assert [(e.outcome, e.cause) for e in wire.events] == [("rejected", 21)]


def test_failure_waits_for_the_hangup_then_settles():
    """A Failure with a live channel waits settle_timeout for the Hangup, then reports."""
    wire = Wire(settle_timeout=2.0)
    accepted_leg(wire)
    wire.feed(event("OriginateResponse", Response="Failure", Reason="5", Uniqueid="s1-a"))
    assert wire.events == []
    wire.clock.advance(2.0)
    assert [(e.outcome, e.cause) for e in wire.events] == [("busy", 17)]


def test_hangup_before_answer_waits_for_the_response():
    """An unanswered leg's Hangup is held until the OriginateResponse decides."""
    wire = Wire()
    accepted_leg(wire)
    wire.feed(event("Hangup", Uniqueid="s1-a", Cause="16", Timestamp="10.0"))
    assert wire.events == []
    wire.feed(
        event(
            "OriginateResponse",
            Response="Success",
            Uniqueid="s1-a",
            Timestamp="9.0",
            Channel="Local/1@x-01;1",
        )
    )
    assert wire.events == [
        LegAnswered("s1-a", 9.0, "Local/1@x-01;1"),
        LegHungUp("s1-a", 10.0, 16, ""),
    ]


def test_hangup_without_response_settles_to_a_failure():
    """A Hangup whose OriginateResponse never comes still ends the leg after settling."""
    wire = Wire(settle_timeout=1.5)
    accepted_leg(wire)
    wire.feed(event("Hangup", Uniqueid="s1-a", Cause="19", Timestamp="10.0"))
    wire.clock.advance(1.5)
    assert wire.events == [LegFailed("s1-a", 10.0, "noanswer", 19)]
    assert wire.switch.legs == ()


def test_ringing_from_dialstate():
    """DialState RINGING of the leg reports LegRinging once."""
    wire = Wire()
    accepted_leg(wire)
    wire.feed(event("DialState", DestUniqueid="s1-a", DialStatus="RINGING", Timestamp="5.0"))
    wire.feed(event("Newstate", Uniqueid="s1-a", ChannelState="5", Timestamp="5.1"))
    assert wire.events == [LegRinging("s1-a", 5.0)]


def test_foreign_channels_are_ignored():
    """Events of channels the switch did not originate produce nothing."""
    wire = Wire()
    accepted_leg(wire)
    for uid in ("s1-a-2", "s1-a;2", "1795316809.24", "other"):
        wire.feed(event("Newstate", Uniqueid=uid, ChannelState="6"))
        wire.feed(event("Hangup", Uniqueid=uid, Cause="16"))
    assert wire.events == []


def test_originate_timeout_fails_the_leg():
    """No OriginateResponse within the ring timeout plus margin ends the leg as failed."""
    wire = Wire()
    wire.originate("s1-a", timeout=10)
    wire.feed(event("Newchannel", Uniqueid="s1-a", ChannelState="0"))
    wire.feed(event("Newstate", Uniqueid="s1-a", ChannelState="5"))
    wire.clock.advance(10 + wire.protocol.action_timeout)
    assert [type(e) for e in wire.events] == [LegRinging, LegFailed]
    assert wire.events[-1].outcome == "failed"


@pytest.mark.parametrize(
    ("reason", "cause", "dial_status", "seen", "outcome"),
    [
        (3, 0, None, True, "noanswer"),
        (5, 0, "BUSY", True, "busy"),
        (8, 0, "CONGESTION", True, "congestion"),
        (0, 21, "NOANSWER", True, "rejected"),
        (0, 0, "BUSY", True, "busy"),
        (0, 0, "CHANUNAVAIL", True, "chanunavail"),
        (0, 0, None, False, "chanunavail"),
        (0, 16, None, True, "failed"),
        (None, 34, None, True, "congestion"),
        (1, 0, "CANCEL", True, "failed"),
    ],
)
def test_failure_outcome(reason, cause, dial_status, seen, outcome):
    """Reason first, then the Hangup cause, then DialStatus, then whether a channel existed."""
    assert failure_outcome(reason, cause, dial_status, seen) == outcome


_TEXT = st.text(st.characters(blacklist_characters="\r\n\x00"), max_size=12)
_KEYS = st.sampled_from(
    [
        "Uniqueid",
        "DestUniqueid",
        "ChannelState",
        "Cause",
        "Cause-txt",
        "Timestamp",
        "Reason",
        "Response",
        "DialStatus",
        "Channel",
        "Conference",
    ]
)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(sorted(LEG_EVENTS | {"DialState", "Foo"})),
            st.lists(st.tuples(_KEYS, st.one_of(_TEXT, st.sampled_from(["s1-a", "5", "6"])))),
        ),
        max_size=12,
    )
)
def test_any_event_stream_is_translated_safely(stream):
    """Arbitrary events never raise and give at most one event of each kind for the leg only."""
    wire = Wire()
    wire.originate("s1-a")
    for name, pairs in stream:
        wire.switch.handle_event(Message([("Event", name), *pairs]))
    wire.clock.advance(wire.switch.settle_timeout)
    kinds = [type(e) for e in wire.events]
    assert all(kinds.count(k) <= 1 for k in kinds)
    assert {e.channel_id for e in wire.events} <= {"s1-a"}
    assert not (LegFailed in kinds and (LegAnswered in kinds or LegHungUp in kinds))


# --- other requests --------------------------------------------------------------------------


def test_hangup_sends_hangup_by_uniqueid_with_cause():
    """hangup sends Hangup with the leg id and the cause."""
    wire = Wire()
    results = []
    wire.switch.hangup("s1-a", 17).addBoth(results.append)
    action = wire.actions()[-1]
    assert (action.name, action["Channel"], action["Cause"]) == ("Hangup", "s1-a", "17")
    wire.reply(("Response", "Success"), ("Message", "Channel Hungup"))
    assert results == [None]


def test_hangup_of_a_gone_leg_succeeds():
    """'No such channel' counts as hung up."""
    wire = Wire()
    results = []
    wire.switch.hangup("s1-a").addBoth(results.append)
    wire.reply(("Response", "Error"), ("Message", "No such channel"))
    assert results == [None]


def test_hangup_refused_is_a_switch_error():
    """Any other Error errbacks SwitchError."""
    wire = Wire()
    results = []
    wire.switch.hangup("s1-a").addErrback(results.append)
    wire.reply(("Response", "Error"), ("Message", "Permission denied"))
    assert len(results) == 1 and "Permission denied" in results[0].getErrorMessage()


def test_hangup_times_out():
    """A Hangup Asterisk never answers errbacks SwitchError after the action timeout."""
    wire = Wire()
    results = []
    wire.switch.hangup("s1-a").addErrback(results.append)
    wire.clock.advance(wire.protocol.action_timeout)
    assert len(results) == 1 and "in time" in results[0].getErrorMessage()


def test_join_room_of_another_room_sets_the_room_first():
    """Moving a leg to a room it was not originated for sets CB_ROOM, then redirects."""
    wire = Wire()
    results = []
    wire.switch.join_room("s1-a", "s2").addBoth(results.append)
    setvar = wire.actions()[-1]
    assert (setvar.name, setvar["Channel"], setvar["Variable"], setvar["Value"]) == (
        "Setvar",
        "s1-a",
        "CB_ROOM",
        "s2",
    )
    wire.reply(("Response", "Success"), ("Message", "Variable Set"))
    assert wire.actions()[-1].name == "Redirect"
    wire.reply(("Response", "Success"), ("Message", "Redirect successful"))
    assert results == [None]


def test_join_room_refused():
    """A refused Redirect errbacks SwitchError."""
    wire = Wire()
    accepted_leg(wire)
    results = []
    wire.switch.join_room("s1-a", "sA").addErrback(results.append)
    wire.reply(("Response", "Error"), ("Message", "Channel not specified"))
    assert len(results) == 1 and results[0].check(SwitchError)


def test_set_absolute_timeout():
    """set_absolute_timeout sends AbsoluteTimeout for the leg."""
    wire = Wire()
    results = []
    wire.switch.set_absolute_timeout("s1-a", 95).addBoth(results.append)
    action = wire.actions()[-1]
    assert (action.name, action["Channel"], action["Timeout"]) == ("AbsoluteTimeout", "s1-a", "95")
    wire.reply(("Response", "Success"), ("Message", "Timeout Set"))
    assert results == [None]


def test_list_channels_adopts_unknown_legs():
    """A leg reported after a restart is followed: its Hangup becomes LegHungUp."""
    wire = Wire()
    results = []
    wire.switch.list_channels().addBoth(results.append)
    action_id = wire.last_action_id()
    wire.reply(("Response", "Success"), ("EventList", "start"))
    wire.feed(
        Message(
            [
                ("Event", "CoreShowChannel"),
                ("ActionID", action_id),
                ("Channel", "PJSIP/trunk-0001"),
                ("ChannelState", "6"),
                ("Uniqueid", "s7-b"),
                ("Application", "ConfBridge"),
                ("ApplicationData", "s7,cb_bridge,cb_user_b"),
                ("Duration", "00:01:05"),
            ]
        )
    )
    wire.feed(
        Message(
            [
                ("Event", "CoreShowChannelsComplete"),
                ("ActionID", action_id),
                ("EventList", "Complete"),
            ]
        )
    )
    assert results == [[ChannelInfo("s7-b", "PJSIP/trunk-0001", "up", "s7", 65)]]
    wire.feed(event("Hangup", Uniqueid="s7-b", Cause="16", Timestamp="77.0"))
    assert wire.events == [LegHungUp("s7-b", 77.0, 16, "")]


def test_connection_events():
    """Login and loss of the AMI session become SwitchConnected and SwitchDisconnected."""
    wire = Wire(connect=False)
    wire.client.connect()
    wire.client.lose("reset by peer")
    assert wire.events == [
        SwitchConnected(wire.clock.seconds()),
        SwitchDisconnected(wire.clock.seconds(), "reset by peer"),
    ]


def test_provides_iswitch():
    """AMISwitch provides ISwitch."""
    assert ISwitch.providedBy(Wire().switch)


def _originate_log_events(log_actions: bool) -> list[dict]:
    """The log events AMISwitch itself emits while originating one leg."""
    wire = Wire()
    wire.switch.log_actions = log_actions
    seen: list[dict] = []
    wire.switch.log = Logger(namespace="test", observer=seen.append)
    wire.originate("sA-b")
    return seen


def test_originate_is_not_logged_by_default():
    """Without log_actions an Originate emits no log event at all."""
    assert _originate_log_events(False) == []


def test_originate_is_logged_at_debug_with_log_actions():
    """With log_actions every Originate is logged once, at debug level."""
    [logged] = _originate_log_events(True)
    assert logged["log_level"] == LogLevel.debug
    assert logged["channel_id"] == "sA-b"


def test_mixed_case_headers_are_read():
    """Event headers are found whatever their case (lookups are case-insensitive)."""
    wire = Wire()
    wire.originate("sA-b")
    wire.feed(
        Message(
            [
                ("Event", "Newstate"),
                ("UNIQUEID", "sA-b"),
                ("channelstate", "6"),
                ("timestamp", "1700000000.5"),
            ]
        )
    )
    [answered] = [e for e in wire.events if isinstance(e, LegAnswered)]
    assert answered.at == 1700000000.5


# --- callbackd's own sessions against the real Asterisk 22 ---------------------------------


def run_callbackd_log(name: str, session: str, script: dict[str, str]) -> Wire:
    """Replay one of callbackd's own transcripts: ``script`` maps the recorded ActionIDs
    of the session's actions to what this switch is asked at that point."""
    wire = Wire()
    a, b = f"{session}-a1", f"{session}-b1"
    calls = {
        "originate a": lambda: wire.originate(a, role="wait", room=session),
        "originate b": lambda: wire.originate(b, role="join", room=session),
        "join a": lambda: wire.switch.join_room(a, session),
        "hangup b": lambda: wire.switch.hangup(b),
    }
    results: dict[str, list] = {}

    def run(what: str) -> None:
        results[what] = []
        calls[what]().addBoth(results[what].append)

    replay(
        wire,
        log_messages(name),
        {action_id: (lambda what=what: run(what)) for action_id, what in script.items()},
    )
    wire.results = results  # type: ignore[attr-defined]
    return wire


HASH11 = "callbackd/real-hash11_userevent.log"
RESTART = "callbackd/real-asterisk_restart-conn1.log"
RESTARTED = "callbackd/real-asterisk_restart-conn2.log"


def test_real_hash11_is_a_room_command_of_the_source():
    """The real ``#11`` (UserEvent CbDtmf, CbCmd endb) is one RoomCommand of the session's room."""
    wire = run_callbackd_log(
        HASH11,
        "cb1mx580yirp",
        {"cb1-1156": "originate a", "cb1-1157": "originate b", "cb1-1161": "join a"},
    )
    commands = [e for e in wire.events if isinstance(e, RoomCommand)]
    assert commands == [RoomCommand("cb1mx580yirp", "endb", 1796161245.418860, "cb1mx580yirp-a1")]


def _keyed(wire: Wire, **headers: str) -> list:
    wire.originate("sK-a1", role="wait", room="sK")
    base = {
        "Uniqueid": "sK-a1",
        "UserEvent": "CbDtmf",
        "CbRoom": "sK",
        "CbCmd": "endb",
        "Timestamp": "12.5",
    }
    base.update(headers)
    wire.feed(event("UserEvent", **base))
    return [e for e in wire.events if isinstance(e, RoomCommand)]


def test_keyed_command_of_our_leg():
    """CbDtmf from a leg of that room is reported."""
    assert _keyed(Wire()) == [RoomCommand("sK", "endb", 12.5, "sK-a1")]


@pytest.mark.parametrize(
    "headers",
    [
        {"CbCmd": "reboot"},  # not a command of the dialplan
        {"CbCmd": ""},
        {"CbRoom": "sX"},  # another room than the leg's
        {"CbRoom": "s K;x"},
        {"Uniqueid": "other-a1"},  # not our channel
        {"UserEvent": "SomethingElse"},
    ],
)
def test_keyed_command_is_validated(headers):
    """An unknown command, another room, a foreign channel or another UserEvent is ignored."""
    wire = Wire()
    seen: list[dict] = []
    wire.switch.log = Logger(namespace="test", observer=seen.append)
    assert _keyed(wire, **headers) == []
    if headers.keys() != {"UserEvent"}:
        assert [e["log_level"] for e in seen] == [LogLevel.warn]


def run_restart() -> Wire:
    """The real ``core restart now`` during a talking call, the daemon hanging up b1 after a1."""
    return run_callbackd_log(
        RESTART,
        "cb1mx57wnhb1",
        {
            "cb1-8": "originate a",
            "cb1-9": "originate b",
            "cb1-13": "join a",
            "cb1-18": "hangup b",
        },
    )


def test_real_restart_reports_the_shutdown_once_at_the_first_sign():
    """The refused Hangup ("Asterisk is shutting down") is the first sign; Shutdown adds none."""
    wire = run_restart()
    ends = [e for e in wire.events if isinstance(e, LegHungUp | SwitchShutdown)]
    assert [type(e) for e in ends] == [LegHungUp, SwitchShutdown, LegHungUp]
    assert [e.channel_id for e in ends if isinstance(e, LegHungUp)] == [
        "cb1mx57wnhb1-a1",
        "cb1mx57wnhb1-b1",
    ]
    # the switch hangs every channel up itself: the refused hangup is not an error
    assert wire.results["hangup b"] == [None]  # type: ignore[attr-defined]


def test_real_restart_health_until_fully_booted():
    """Health says "restarting" from the Shutdown until the reconnect's FullyBooted."""
    wire = run_restart()
    assert wire.switch.health() == (False, "switch restarting")
    assert wire.switch.shutting_down
    wire.client.lose("closed")
    assert wire.switch.health() == (False, "switch restarting")
    protocol = wire.client.connect()
    assert wire.switch.health() == (False, "switch restarting")
    assert (wire.switch.connected, wire.switch.shutting_down) == (True, True)
    messages = log_messages(RESTARTED)
    booted = next(m for m in messages if m.name == "FullyBooted")
    wire.feed(booted)
    assert wire.switch.health() == (True, "logged in")
    assert not wire.switch.shutting_down
    assert wire.switch.started_at == wire.clock.seconds() - int(booted["Uptime"])
    assert protocol is wire.protocol


def test_real_restart_logs_shutdown_and_fully_booted():
    """The shutdown is a warning, the switch being back an info."""
    seen: list[dict] = []
    wire = Wire()
    wire.switch.log = Logger(namespace="test", observer=seen.append)
    wire.feed(next(m for m in log_messages(RESTART) if m.name == "Shutdown"))
    wire.feed(next(m for m in log_messages(RESTARTED) if m.name == "FullyBooted"))
    assert [e["log_level"] for e in seen] == [LogLevel.warn, LogLevel.info]
    assert wire.events == [SwitchShutdown(1796161048.733463, restart=True)]


def test_a_hangup_refused_while_shutting_down_counts_as_done():
    """Refused because the switch is shutting down: reported once, and the hangup is done."""
    wire = Wire()
    results = []
    for leg in ("s1-a", "s1-b"):
        wire.switch.hangup(leg).addBoth(results.append)
        wire.reply(("Response", "Error"), ("Message", "Asterisk is shutting down"))
    assert results == [None, None]
    assert wire.events == [SwitchShutdown(wire.clock.seconds(), restart=False)]
    assert wire.switch.health() == (False, "switch shutting down")
    assert wire.switch.shutting_down


def test_an_action_carried_out_again_ends_the_shutdown():
    """A graceful stop called off: the next action that succeeds makes the switch healthy."""
    wire = Wire()
    wire.switch.hangup("s1-a")
    wire.reply(("Response", "Error"), ("Message", "Asterisk is shutting down"))
    wire.switch.set_absolute_timeout("s1-b", 30)
    wire.reply(("Response", "Success"), ("Message", "Timeout Set"))
    assert wire.switch.health() == (True, "logged in")


def test_health_when_not_connected():
    """Without a session the switch is unhealthy; logged in it is healthy."""
    wire = Wire(connect=False)
    assert wire.switch.health() == (False, "not connected")
    wire.client.connect()
    assert wire.switch.health() == (True, "logged in")


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["UserEvent", "Shutdown", "FullyBooted", "Foo"]),
    st.lists(
        st.tuples(
            st.sampled_from(
                ["Uniqueid", "UserEvent", "CbRoom", "CbCmd", "Timestamp", "Restart", "Uptime"]
            ),
            st.one_of(_TEXT, st.sampled_from(["sK-a1", "sK", "CbDtmf", "endb", "True", "3"])),
        ),
        max_size=8,
    ),
)
def test_any_switch_event_is_translated_safely(name, pairs):
    """Arbitrary UserEvent/Shutdown/FullyBooted headers never raise; commands are checked."""
    wire = Wire()
    wire.originate("sK-a1", role="wait", room="sK")
    wire.switch.handle_system_event(Message([("Event", name), *pairs]))
    for e in wire.events:
        assert isinstance(e, RoomCommand | SwitchShutdown)
        if isinstance(e, RoomCommand):
            assert (e.room, e.command, e.channel_id) == ("sK", "endb", "sK-a1")


# -- phone callback (IVR) ----------------------------------------------------------------


def test_an_ivr_source_is_originated_into_ivr_a_and_returned_there_by_redirect():
    """role ivr starts the leg at cb-conf,ivr-a; return_to_ivr Redirects it back there."""
    wire = Wire()
    wire.originate("s1-a", role="ivr", room="s1")
    originate = next(a for a in wire.actions() if a.name == "Originate")
    assert (originate["Context"], originate["Exten"]) == ("cb-conf", "ivr-a")
    results = []
    wire.switch.return_to_ivr("s1-a", "s1").addBoth(results.append)
    redirect = wire.actions()[-1]
    assert (redirect.name, redirect["Channel"], redirect["Exten"]) == ("Redirect", "s1-a", "ivr-a")
    wire.reply(("Response", "Success"), ("Message", "Redirect successful"))
    assert results == [None]
