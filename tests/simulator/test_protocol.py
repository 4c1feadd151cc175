"""The AMI session: login, permissions, framing limits, actions and lists."""

from __future__ import annotations

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.simulator.harness import SECRET, USERNAME, Session


def test_banner_is_the_asterisk_22_line():
    """The first bytes are the Asterisk 22 banner line."""
    session = Session()
    assert session.transport.value() == b"Asterisk Call Manager/11.0.0\r\n"


def test_plain_login_then_fully_booted():
    """A correct plain login is accepted and followed by FullyBooted."""
    msgs = Session().login()
    assert [m.name for m in msgs] == ["Success", "FullyBooted"]
    assert msgs[0]["Message"] == "Authentication accepted"
    assert msgs[1]["Privilege"] == "system,all"


def test_md5_login_with_challenge():
    """Login with the MD5 of the issued challenge plus the secret is accepted."""
    session = Session()
    session.send(("Action", "Challenge"), ("ActionID", "ch"), ("AuthType", "MD5"))
    challenge = session.read()[0]["Challenge"]
    key = hashlib.md5((challenge + SECRET).encode()).hexdigest()
    session.send(
        ("Action", "Login"), ("ActionID", "l"), ("AuthType", "MD5"),
        ("Username", USERNAME), ("Key", key),
    )  # fmt: skip
    assert session.read()[0]["Message"] == "Authentication accepted"


def test_md5_login_with_wrong_key_fails():
    """An MD5 key computed with another secret is refused."""
    session = Session()
    session.send(("Action", "Challenge"), ("AuthType", "MD5"))
    challenge = session.read()[0]["Challenge"]
    key = hashlib.md5((challenge + "nope").encode()).hexdigest()
    session.send(("Action", "Login"), ("AuthType", "MD5"), ("Username", USERNAME), ("Key", key))
    session.run(1.0)
    assert session.received[-1]["Message"] == "Authentication failed"


def test_wrong_secret_answers_after_one_second_and_closes():
    """A wrong secret gets 'Authentication failed' only after 1 s, then the socket closes."""
    session = Session()
    session.send(("Action", "Login"), ("ActionID", "x"), ("Username", USERNAME), ("Secret", "no"))
    assert session.run(0.9) == []
    msgs = session.run(0.2)
    assert [(m.name, m.get("Message")) for m in msgs] == [("Error", "Authentication failed")]
    assert session.transport.disconnecting


def test_actions_before_login_are_denied():
    """Before login anything but Login/Logoff/Challenge gets 'Permission denied'."""
    session = Session()
    session.send(("Action", "Ping"), ("ActionID", "p"))
    msg = session.read()[0]
    assert (msg.name, msg["Message"], msg["ActionID"]) == ("Error", "Permission denied", "p")


def test_ping_has_pong_and_clock_timestamp():
    """Ping answers Pong with the injected clock's epoch.usec."""
    session = Session()
    session.login()
    session.send(("Action", "Ping"), ("ActionID", "p1"))
    msg = session.read()[0]
    assert msg["Ping"] == "Pong"
    assert float(msg["Timestamp"]) == session.clock.seconds()


def test_unknown_action_is_answered_like_asterisk():
    """An unknown action gets Asterisk's 'Invalid/unknown command' text."""
    session = Session()
    session.login()
    session.send(("Action", "NoSuchAction"), ("ActionID", "b3"))
    assert session.read()[0]["Message"] == (
        "Invalid/unknown command: NoSuchAction. "
        "Use Action: ListCommands to show available commands."
    )


def test_line_too_long_is_rejected_with_actionid():
    """A header line of 1024 bytes discards the action: 'line too long'."""
    session = Session()
    session.login()
    session.send(("Action", "Ping"), ("ActionID", "long"), ("X", "y" * 1100))
    msg = session.read()[0]
    assert (msg.name, msg["Message"]) == ("Error", "Failed to parse message: line too long")
    assert msg["ActionID"] == "long"


def test_line_without_colon_is_ignored():
    """A line with no colon does not break the action it is in."""
    session = Session()
    session.login()
    session.send_raw(b"Action: Ping\r\nnot a header\r\nActionID: nc\r\n\r\n")
    msg = session.read()[0]
    assert (msg["Ping"], msg["ActionID"]) == ("Pong", "nc")


def test_bare_lf_ends_an_action_like_the_real_one():
    """A bare LF ends lines, so an LF inside a value starts a new action (docs/asterisk.rst)."""
    session = Session()
    session.login()
    session.send_raw(b"Action: Ping\nActionID: inj-1\n\nAction: Ping\nActionID: injected\n\n")
    assert [m["ActionID"] for m in session.read()] == ["inj-1", "injected"]


def test_logoff_says_goodbye_and_closes():
    """Logoff answers Goodbye and closes the connection."""
    session = Session()
    session.login()
    session.send(("Action", "Logoff"), ("ActionID", "bye"))
    msg = session.read()[0]
    assert (msg.name, msg["Message"]) == ("Goodbye", "Thanks for all the fish.")
    assert session.transport.disconnecting


def test_events_off_stops_call_events():
    """After Events off no call events arrive, only responses."""
    session = Session()
    session.login()
    session.send(("Action", "Events"), ("EventMask", "off"))
    assert session.read()[0]["Events"] == "Off"
    session.send(("Action", "Originate"), ("Channel", "Local/101@sim-callee/n"),
                 ("Application", "Wait"), ("Data", "1"), ("Async", "true"))  # fmt: skip
    msgs = session.run(3.0)
    assert [m.name for m in msgs] == ["Success"]


def test_confbridge_list_rooms_without_rooms_is_an_error():
    """ConfbridgeListRooms with no conference answers 'No active conferences.'."""
    session = Session()
    session.login()
    session.send(("Action", "ConfbridgeListRooms"), ("ActionID", "r"))
    assert session.read()[0]["Message"] == "No active conferences."


def _originate(session, n, room="r1", **extra):
    pairs = [("Action", "Originate"), ("ActionID", f"o-{n}"),
             ("Channel", f"Local/1555001{n:04d}@sim-pstn/n"), ("Context", "cb-conf"),
             ("Exten", "leg-b"), ("Priority", "1"), ("Variable", f"CB_ROOM={room}"),
             ("ChannelId", f"id-{n}"), ("Async", "true")]  # fmt: skip
    session.send(*pairs, *extra.items())


def test_confbridge_list_rooms_counts_parties():
    """ConfbridgeListRooms lists a live room with its party count."""
    session = Session()
    session.login()
    for n in range(2):
        _originate(session, n)
    session.run(2.0)
    session.send(("Action", "ConfbridgeListRooms"), ("ActionID", "lr"))
    msgs = session.read()
    item = next(m for m in msgs if m.name == "ConfbridgeListRooms")
    assert (item["Conference"], item["Parties"], item["ActionID"]) == ("r1", "2", "lr")
    assert msgs[-1]["ListItems"] == "1"


def test_core_show_channels_duration_since_creation():
    """CoreShowChannel Duration is HH:MM:SS since the channel was created."""
    session = Session()
    session.login()
    _originate(session, 1)
    session.run(0.0)
    session.run(65.0, step=0.5)
    session.send(("Action", "CoreShowChannels"), ("ActionID", "c"))
    items = [m for m in session.read() if m.name == "CoreShowChannel"]
    assert {m["Duration"] for m in items} == {"00:01:05"}
    assert len(items) == 2


def test_hangup_with_cause_sets_hangup_cause():
    """Hangup with Cause 17 gives the Hangup event Cause 17."""
    session = Session()
    session.login()
    _originate(session, 1)
    session.run(2.0)
    session.send(("Action", "Hangup"), ("ActionID", "h"), ("Channel", "id-1"), ("Cause", "17"))
    msgs = session.run(0.01)  # the channel's thread hangs it up a moment later
    hangup = next(m for m in msgs if m.name == "Hangup" and m["Uniqueid"] == "id-1")
    assert (hangup["Cause"], hangup["Cause-txt"]) == ("17", "User busy")


def test_hangup_of_gone_channel_is_no_such_channel():
    """Hangup of an unknown channel answers 'No such channel'."""
    session = Session()
    session.login()
    session.send(("Action", "Hangup"), ("Channel", "nope"))
    assert session.read()[0]["Message"] == "No such channel"


def test_absolute_timeout_hangs_up_with_cause_16():
    """AbsoluteTimeout hangs the channel up with cause 16 when it expires."""
    session = Session()
    session.login()
    _originate(session, 1)
    session.run(2.0)
    session.send(("Action", "AbsoluteTimeout"), ("Channel", "id-1"), ("Timeout", "3"))
    assert session.read()[0]["Message"] == "Timeout Set"
    assert not any(m.name == "Hangup" for m in session.run(2.9))
    hangups = [m for m in session.run(0.2) if m.name == "Hangup" and m["Uniqueid"] == "id-1"]
    assert [m["Cause"] for m in hangups] == ["16"]


def test_confbridge_kick_by_uniqueid_fails_like_real():
    """ConfbridgeKick needs the exact channel name: a Uniqueid is not found."""
    session = Session()
    session.login()
    _originate(session, 1)
    session.run(2.0)
    session.send(("Action", "ConfbridgeKick"), ("Conference", "r1"), ("Channel", "id-1"))
    assert session.read()[0]["Message"] == "No Channel by that name found in Conference."


def test_setvar_then_getvar_round_trip():
    """A variable set with Setvar is read back with Getvar."""
    session = Session()
    session.login()
    _originate(session, 1)
    session.run(2.0)
    session.send(("Action", "Setvar"), ("Channel", "id-1"), ("Variable", "X"), ("Value", "a b"))
    session.send(("Action", "Getvar"), ("Channel", "id-1"), ("Variable", "X"))
    assert session.read()[1]["Value"] == "a b"


def test_variable_values_split_on_commas():
    """Variable: A=1,B=2 sets two variables, as Asterisk's app-arg parser does."""
    session = Session()
    session.login()
    _originate(session, 1, Variable="A=1,B=2")
    session.run(2.0)
    session.send(("Action", "Getvar"), ("Channel", "id-1"), ("Variable", "B"))
    assert session.read()[0]["Value"] == "2"


def test_unknown_exten_is_a_synchronous_error():
    """An Originate into a missing extension of cb-conf fails at once."""
    session = Session()
    session.login()
    session.send(("Action", "Originate"), ("Channel", "Local/101@sim-callee/n"),
                 ("Context", "cb-conf"), ("Exten", "nosuch"), ("Priority", "1"),
                 ("Async", "true"))  # fmt: skip
    assert session.read()[0]["Message"] == "Extension does not exist."


def test_blacklisted_application_is_forbidden():
    """Originate to the AGI application is refused as blacklisted."""
    session = Session()
    session.login()
    session.send(("Action", "Originate"), ("Channel", "Local/101@sim-callee/n"),
                 ("Application", "AGI"), ("Data", "agi://x"), ("Async", "true"))  # fmt: skip
    assert session.read()[0]["Message"] == "Originate Access Forbidden: app or data blacklisted"


def test_unknown_technology_fails_with_reason_0():
    """Nope/123 gives OriginateResponse Failure, Reason 0, the requested Channel, ChannelId."""
    session = Session()
    session.login()
    session.send(("Action", "Originate"), ("ActionID", "n"), ("Channel", "Nope/123"),
                 ("Application", "Wait"), ("Data", "1"), ("ChannelId", "t-x"),
                 ("Async", "true"))  # fmt: skip
    resp = [m for m in session.run(0.1) if m.name == "OriginateResponse"]
    assert [(m["Response"], m["Reason"], m["Channel"], m["Uniqueid"]) for m in resp] == [
        ("Failure", "0", "Nope/123", "t-x")
    ]


def test_duplicate_channel_id_fails_with_reason_0():
    """A ChannelId already in use gives Failure Reason 0 and no new channel."""
    session = Session()
    session.login()
    _originate(session, 1)
    session.run(2.0)
    _originate(session, 1)
    msgs = session.run(0.1)
    resp = [m for m in msgs if m.name == "OriginateResponse"]
    assert [(m["Response"], m["Reason"]) for m in resp] == [("Failure", "0")]
    assert not any(m.name == "Newchannel" for m in msgs)


def test_reject_600_is_reason_0_cause_21():
    """Callee 600 (Hangup(21)) gives Reason 0, DialStatus NOANSWER and cause 21."""
    session = Session()
    session.login()
    session.send(("Action", "Originate"), ("ActionID", "r"), ("Channel", "Local/600@sim-callee/n"),
                 ("Context", "cb-conf"), ("Exten", "leg-b"), ("Priority", "1"),
                 ("Async", "true"))  # fmt: skip
    msgs = session.run(0.1)
    assert next(m for m in msgs if m.name == "OriginateResponse")["Reason"] == "0"
    assert next(m for m in msgs if m.name == "DialEnd")["DialStatus"] == "NOANSWER"
    assert {m["Cause"] for m in msgs if m.name == "Hangup"} == {"21"}


def test_trunk_rule_makes_provider_fail():
    """A @pakline=congestion rule makes every PJSIP call on that trunk congested."""
    session = Session(rules="@pakline=congestion")
    session.login()
    session.send(("Action", "Originate"), ("ActionID", "p"),
                 ("Channel", "PJSIP/+15550011234@pakline"), ("Context", "cb-conf"),
                 ("Exten", "leg-b"), ("Priority", "1"), ("Async", "true"))  # fmt: skip
    msgs = session.run(0.1)
    resp = next(m for m in msgs if m.name == "OriginateResponse")
    assert (resp["Response"], resp["Reason"]) == ("Failure", "8")
    assert next(m for m in msgs if m.name == "Hangup")["Cause"] == "34"


def test_thousand_concurrent_originates_complete():
    """1,000 async originates on one connection all get an OriginateResponse."""
    session = Session()
    session.login()
    for n in range(1000):
        _originate(session, n, room=f"r{n}")
    msgs = session.run(2.0, step=0.5)
    done = {m["ActionID"] for m in msgs if m.name == "OriginateResponse"}
    assert done == {f"o-{n}" for n in range(1000)}
    assert len(session.switch.rooms()) == 1000


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=3000))
def test_arbitrary_input_never_breaks_the_session(data):
    """Any bytes from a client leave the session answering Ping afterwards."""
    session = Session()
    session.login()
    session.send_raw(data)
    if session.transport.disconnecting:
        return
    session.send_raw(b"\r\n\r\nAction: Ping\r\nActionID: after\r\n\r\n")
    assert any(m.get("ActionID") == "after" for m in session.read())


@settings(max_examples=100, deadline=None)
@given(st.lists(st.from_regex(r"[A-Za-z]{1,10}: [ -~]{0,40}", fullmatch=True), max_size=10))
def test_any_headers_get_exactly_one_response(lines):
    """Every action-like header block is answered by exactly one Response."""
    session = Session()
    session.login()
    session.send_raw(("\r\n".join(["Action: Ping", *lines]) + "\r\n\r\n").encode())
    assert len([m for m in session.read() if m.is_response]) == 1
