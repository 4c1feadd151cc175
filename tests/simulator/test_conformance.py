"""Replays of the real Asterisk 22 transcripts against the simulator.

The actions the daemon sent (``>>>`` blocks, or the Option A flow of ASTERISK.md §3.1
for the JSON event sequence) go to the simulator on a task.Clock; what it answers is
compared with what the real one answered: relied-on events per channel in order, with
the fields the engine uses, and every Response and list size per ActionID.
"""

from __future__ import annotations

import pytest

from tests.simulator.harness import COMPARED, FIXTURES, Session, digest, read_json, read_log

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


# The Option A run of ASTERISK.md §3.1 (ami-option-a-conf-events.json): (time, action).
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
