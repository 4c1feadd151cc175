"""Replays of the real Asterisk 22 transcripts against the simulator.

The actions the daemon sent (``>>>`` blocks, or the one-room-per-session flow for the JSON event
sequence) go to the simulator on a task.Clock; what it answers is compared with what
the real one answered: the events callbackd subscribes to (``harness.COMPARED``, from
``callbackd.amievents``) per channel in order, with the fields the engine uses, and
every Response and list size per ActionID. callbackd's own sessions
(``fixtures/asterisk22/callbackd``) are replayed at their recorded times and compared
on priorities, Timestamps, each leg's order and the order of the Hangups too.
"""

from __future__ import annotations

from functools import cache

import pytest

from tests.simulator.harness import (
    CALLBACKD,
    COMPARED,
    FIXTURES,
    Replay,
    Session,
    callbackd_transcripts,
    digest,
    first_event,
    hangup_order,
    leg_order,
    legs,
    norm_channel,
    read_json,
    read_log,
    replay_callbackd,
    timestamps,
)

LOGS = [
    "ami-busy.log",
    "ami-noanswer.log",
    "ami-congestion.log",
    "ami-answer_then_hangup.log",
    "ami-two_legs_conf.log",
    "ami-bad.log",
]


def replay_log(name: str) -> tuple[dict, dict]:
    """Send the fixture's actions, 8 simulated seconds apart; digest both sides."""
    transcript = read_log(FIXTURES / name)
    session = Session()
    for direction, message in transcript:
        if direction == ">>>":
            session.send(*message.pairs)
            session.run(8.0)
    expected = [m for d, m in transcript if d == "<<<"]
    return digest(session.received), digest(expected)


@pytest.mark.parametrize("name", LOGS)
def test_log_fixture_replays_identically(name):
    """The simulator answers each recorded scenario as the real Asterisk 22 did."""
    got, expected = replay_log(name)
    assert got == expected


@pytest.mark.parametrize("name", LOGS)
def test_log_fixture_comparison_is_not_vacuous(name):
    """Each replayed fixture has originates or channel events to compare."""
    _, expected = replay_log(name)
    assert any(k.startswith(("originate", "Local/")) for k in expected)


# The one-room-per-session run recorded in ami-option-a-conf-events.json: (time, action).
OPTION_A = [
    (-0.05, [("Action", "Login"), ("ActionID", "c-1"), ("Username", "callbackd"),
             ("Secret", "callbackd-secret"), ("Events", "on")]),
    (0.0, [("Action", "Originate"), ("ActionID", "c-2"), ("Channel", "Local/101@sim-callee/n"),
           ("Context", "cb-conf"), ("Exten", "wait-a"), ("Priority", "1"), ("Timeout", "45000"),
           ("CallerID", "Callback <5551000>"), ("Variable", "CB_ROOM=sA"),
           ("ChannelId", "sA-a"), ("OtherChannelId", "sA-a-2"), ("Async", "true")]),
    (1.004, [("Action", "Originate"), ("ActionID", "c-3"), ("Channel", "Local/102@sim-callee/n"),
             ("Context", "cb-conf"), ("Exten", "leg-b"), ("Priority", "1"), ("Timeout", "20000"),
             ("CallerID", "Callback <5551000>"), ("Variable", "CB_ROOM=sA"),
             ("Variable", "CB_LEG=b"), ("ChannelId", "sA-b"), ("OtherChannelId", "sA-b-2"),
             ("Async", "true")]),
    (3.009, [("Action", "Redirect"), ("ActionID", "c-4"), ("Channel", "sA-a"),
             ("Context", "cb-conf"), ("Exten", "leg-a"), ("Priority", "1")]),
    (3.56, [("Action", "ConfbridgeList"), ("ActionID", "c-5"), ("Conference", "sA")]),
    (3.61, [("Action", "CoreShowChannels"), ("ActionID", "c-6")]),
    (3.66, [("Action", "Status"), ("ActionID", "c-7"), ("Channel", "sA-a")]),
    (3.711, [("Action", "Getvar"), ("ActionID", "c-8"), ("Channel", "sA-a"),
             ("Variable", "ROOM")]),
    (3.761, [("Action", "Getvar"), ("ActionID", "c-9"),
             ("Variable", "CONFBRIDGE_INFO(parties,sA)")]),
    (3.811, [("Action", "Setvar"), ("ActionID", "c-10"), ("Channel", "sA-b"),
             ("Variable", "CB_NOTE"), ("Value", "x")]),
    (3.862, [("Action", "Originate"), ("ActionID", "c-11"), ("Channel", "Local/101@sim-callee/n"),
             ("Context", "cb-conf"), ("Exten", "leg-b"), ("Priority", "1"), ("Timeout", "20000"),
             ("CallerID", "Callback <5551000>"), ("Variable", "CB_ROOM=sA"),
             ("ChannelId", "sA-c"), ("OtherChannelId", "sA-c-2"), ("Async", "true")]),
    (4.866, [("Action", "PlayDTMF"), ("ActionID", "c-12"), ("Channel", "sA-a"),
             ("Digit", "#"), ("Receive", "true")]),
    (5.216, [("Action", "PlayDTMF"), ("ActionID", "c-13"), ("Channel", "sA-a"),
             ("Digit", "1"), ("Receive", "true")]),
    (5.567, [("Action", "PlayDTMF"), ("ActionID", "c-14"), ("Channel", "sA-a"),
             ("Digit", "1"), ("Receive", "true")]),
    (5.918, [("Action", "ConfbridgeKick"), ("ActionID", "c-15"), ("Conference", "sA"),
             ("Channel", "sA-b")]),
    (5.968, [("Action", "ConfbridgeKick"), ("ActionID", "c-16"), ("Conference", "sA"),
             ("Channel", "<name of sA-b>")]),
    (7.019, [("Action", "Hangup"), ("ActionID", "c-17"), ("Channel", "sA-a")]),
]  # fmt: skip


def replay_option_a(event_filter: set[str] | None = None) -> tuple[Session, dict, dict]:
    """Run the Option A flow at the recorded times; digest both sides."""
    session = Session(event_filter=event_filter)
    start = session.clock.seconds() + 1
    session.run(1.0)
    for at, pairs in OPTION_A:
        session.run(max(0.0, start + at - session.clock.seconds()), step=0.001)
        if ("Channel", "<name of sA-b>") in pairs:
            # The daemon kicks by the name it learnt from Newchannel (Uniqueid fails).
            name = next(
                m["Channel"]
                for m in session.received
                if m.name == "Newchannel" and m.get("Uniqueid") == "sA-b"
            )
            pairs = [("Channel", name) if k == "Channel" else (k, v) for k, v in pairs]
        session.send(*pairs)
    session.run(1.0)
    expected = [m for _, m in read_json(FIXTURES / "ami-option-a-conf-events.json")]
    # That recording kept a selection of the events (no DialState, for one).
    names = COMPARED & {m.name for m in expected}
    return session, digest(session.received, names=names), digest(expected, names=names)


def test_option_a_flow_matches_per_channel():
    """wait-a, Redirect to leg-a, add C, #11 UserEvent, kick B, hang up A: as recorded."""
    _, got, expected = replay_option_a()
    assert got == expected


def test_option_a_answer_times_follow_the_callee_rules():
    """B (102) answers 2 s after its originate, as in the recording (3.007 s)."""
    session, _, _ = replay_option_a()
    answered = [
        float(m["Timestamp"])
        for m in session.received
        if m.name == "OriginateResponse" and m.get("ActionID") in ("c-2", "c-3")
    ]
    assert len(answered) == 2
    assert answered[1] - answered[0] == pytest.approx(2.004, abs=0.01)


def test_option_a_leaves_nothing_behind():
    """After A's hangup the end_marked legs are gone and the room is closed."""
    session, _, _ = replay_option_a()
    assert session.switch.rooms() == {}
    assert session.switch.channels() == []


def test_log_comparison_catches_a_wrong_callee():
    """A simulator that gives congestion where the recording was busy fails the comparison."""
    transcript = read_log(FIXTURES / "ami-busy.log")
    session = Session(rules="1555002=congestion")
    for direction, message in transcript:
        if direction == ">>>":
            session.send(*message.pairs)
            session.run(8.0)
    assert digest(session.received) != digest([m for d, m in transcript if d == "<<<"])


# -- callbackd's own sessions against the real Asterisk 22 ------------------------

TRANSCRIPTS = callbackd_transcripts()
#: the real switch stamps an event within this of the simulator (the Originate Timeout
#: of the real one fires up to 47 ms late)
TIME_TOLERANCE = 0.06
#: scenarios where one thing on the switch's side ends the call: the order of every
#: Hangup across the legs is the engine's evidence of who hung up
ONE_CAUSE = (
    "real-source_hangs_up.log",
    "real-destination_hangs_up.log",
    "real-asterisk_restart-conn1.log",
)


@cache
def replayed(name: str) -> Replay:
    """The replay of transcript ``name`` (deterministic: made once per run)."""
    return replay_callbackd(name)


def test_every_callbackd_transcript_is_replayed():
    """The twelve scenarios: every real-*.log (the restart's two connections as one)."""
    names = {p.name for p in CALLBACKD.glob("real-*.log")}
    assert len(TRANSCRIPTS) == 12
    assert names == set(TRANSCRIPTS) | {"real-asterisk_restart-conn2.log"}


@pytest.mark.parametrize("name", TRANSCRIPTS)
def test_callbackd_transcript_replays_identically(name):
    """Each channel's events (name, state, cause, dial status, context, exten, priority,
    ids) and every response per ActionID are the real ones, in the real order."""
    replay = replayed(name)
    got = digest(replay.sim, priorities=True)
    assert got == digest(replay.real, priorities=True)


@pytest.mark.parametrize("name", TRANSCRIPTS)
def test_callbackd_transcript_comparison_is_not_vacuous(name):
    """Every replay has legs, responses to the daemon's actions and ringing or failing."""
    replay = replayed(name)
    expected = digest(replay.real, priorities=True)
    assert legs(replay.real)
    assert sum(k.startswith("action ") for k in expected) >= 3
    assert any(m.name in ("DialState", "DialEnd") for m in replay.real)


@pytest.mark.parametrize("name", TRANSCRIPTS)
def test_callbackd_transcript_timestamps_match(name):
    """Every compared event is stamped within TIME_TOLERANCE of the real one."""
    replay = replayed(name)
    got, expected = timestamps(replay.sim), timestamps(replay.real)
    assert got.keys() == expected.keys()
    for key, stamps in expected.items():
        assert got[key] == pytest.approx(stamps, abs=TIME_TOLERANCE), key


@pytest.mark.parametrize("name", TRANSCRIPTS)
def test_callbackd_transcript_timestamps_are_spread(name):
    """No two events share a Timestamp; they never go back."""
    stamps = [float(m["Timestamp"]) for m in replayed(name).sim if m.get("Timestamp")]
    assert stamps == sorted(stamps)
    assert len(set(stamps)) == len(stamps)


def _unraced(order: list[tuple[str, ...]]) -> list[tuple[str, ...]]:
    """A leg's order without what the real switch orders differently from run to run.

    The recordings show both orders of: an answered leg's OriginateResponse (Reason 4)
    and its ``;1`` Newstate Up/DialEnd (compared on its own, below); a congested leg's
    OriginateResponse (Reason 8) and its Hangups (real-congestion_failover.log); the
    two halves' Hangups when both end with the same cause (the daemon's Hangup) or at a
    failed dial (``;1`` cause 0, real-failover_then_talk.log). Every other order, the
    far end's hangup (``;2`` 0 before ``;1`` 16) included, is compared as is.
    """
    out = [e for e in order if not (e[0] == "OriginateResponse" and e[2] in ("4", "8"))]
    for i in range(len(out) - 1):
        a, b = out[i], out[i + 1]
        if a[0] == b[0] == "Hangup" and a[1] > b[1] and (a[2] == b[2] or b[2] == "0"):
            out[i], out[i + 1] = b, a
    return out


@pytest.mark.parametrize("name", TRANSCRIPTS)
def test_callbackd_leg_orders_match(name):
    """Each leg's events over both halves and its OriginateResponse, in the real order
    (the no-answer OriginateResponse before the Hangups; busy's ;2 Busy, DialEnd, ;1
    Hangup 0, OriginateResponse 5, ;2 Hangup 17), races aside."""
    replay = replayed(name)
    for leg in legs(replay.real):
        got = _unraced(leg_order(replay.sim, leg))
        assert got == _unraced(leg_order(replay.real, leg)), leg


def test_answered_source_order_is_the_recorded_one():
    """The source: ;2 Up, OriginateResponse, ;1 Up, DialEnd (real-two_legs_talk_hangup)."""
    replay = replayed("real-two_legs_talk_hangup.log")
    source = legs(replay.real)[0]
    answered = _answer_order(leg_order(replay.sim, source))
    expected = _answer_order(leg_order(replay.real, source))
    assert (
        answered
        == expected
        == [
            ("Newstate", ";2", "6"),
            ("OriginateResponse", "", "4"),
            ("Newstate", ";1", "6"),
            ("DialEnd", ";1", "6"),
        ]
    )


def test_answered_destination_gets_its_originate_response_after_dial_end():
    """Other legs: ;2 Up, ;1 Up, DialEnd, OriginateResponse (every recorded leg-b)."""
    for name in TRANSCRIPTS:
        replay = replayed(name)
        for leg in legs(replay.real)[1:]:
            real = _answer_order(leg_order(replay.real, leg))
            if real:
                assert _answer_order(leg_order(replay.sim, leg)) == real, (name, leg)


def _answer_order(order: list[tuple[str, ...]]) -> list[tuple[str, ...]]:
    """The answer's four events of a leg's order (none if it was not answered)."""
    names = ("Newstate", "OriginateResponse", "DialEnd")
    return [e for e in order if e[0] in names and e[2] in ("4", "6")][:4]


@pytest.mark.parametrize("name", ONE_CAUSE)
def test_hangup_order_across_legs_matches(name):
    """Far end, switch restart, destination: every Hangup (leg, cause) in the real order
    (source ;2 0, source ;1 16, destination ;1, ;2 when the source hangs up)."""
    replay = replayed(name)
    assert hangup_order(replay.sim) == hangup_order(replay.real)


def test_far_end_hangup_of_the_source_ends_the_source_first():
    """real-source_hangs_up.log: the source's halves end before the destination's."""
    replay = replayed("real-source_hangs_up.log")
    source, destination = legs(replay.real)
    assert [
        (uid.removesuffix("-2").rsplit("-", 1)[1], cause) for uid, cause in hangup_order(replay.sim)
    ] == [
        ("a1", "0"),
        ("a1", "16"),
        ("b1", "16"),
        ("b1", "16"),
    ]


def test_restart_sends_shutdown_after_the_hangups_and_refuses_actions():
    """core restart now: Hangups, 'Asterisk is shutting down', Shutdown, a new session."""
    replay = replayed("real-asterisk_restart-conn1.log")
    names = [m.name for m in replay.sim if m.name in ("Hangup", "Shutdown", "FullyBooted")]
    assert names == [
        "FullyBooted",
        "Hangup",
        "Hangup",
        "Hangup",
        "Hangup",
        "Shutdown",
        "FullyBooted",
    ]
    refused = [m for m in replay.sim if m.is_response and m.get("Response") == "Error"]
    assert [m["Message"] for m in refused] == ["Asterisk is shutting down"]
    shutdown = next(m for m in replay.sim if m.name == "Shutdown")
    assert (shutdown["Shutdown"], shutdown["Restart"], shutdown["Privilege"]) == (
        "Cleanly",
        "True",
        "system,all",
    )
    booted = [m for m in replay.sim if m.name == "FullyBooted"]
    assert booted[-1]["Uptime"] == "0"


def test_hash11_user_event_has_the_real_header_set():
    """UserEvent CbDtmf: the real headers, in the real order, with the same values."""
    replay = replayed("real-hash11_userevent.log")
    got = next(m for m in replay.sim if m.name == "UserEvent")
    real = next(m for m in replay.real if m.name == "UserEvent")
    assert [k for k, _ in got] == [k for k, _ in real]
    differ = {k for (k, v), (_, w) in zip(got, real, strict=True) if v != w}
    assert differ == {"Timestamp", "Channel"}  # the Local channel's sequence number
    assert norm_channel(got["Channel"]) == norm_channel(real["Channel"])


def test_callbackd_comparison_catches_a_wrong_callee():
    """A simulator that answers where the real destination never did fails the replay."""
    replay = replay_callbackd("real-noanswer.log", rules="1555003=answer:1")
    assert digest(replay.sim, priorities=True) != digest(replay.real, priorities=True)


def test_callbackd_comparison_catches_the_old_hangup_order():
    """Hanging the source's ;1 up first (the old simulator's order) fails the comparison."""
    replay = replay_callbackd("real-source_hangs_up.log", setup=_source_one_hangs_up)
    assert hangup_order(replay.sim) != hangup_order(replay.real)


def _source_one_hangs_up(session: Session, transcript) -> None:
    first = first_event(transcript, "Hangup")
    switch = session.switch

    def hang_up() -> None:
        channel = switch.find_channel(first["Uniqueid"])
        assert channel is not None and channel.peer is not None
        switch.hangup(channel.peer, 16)

    session.clock.callLater(float(first["Timestamp"]) - session.clock.seconds(), hang_up)
