"""AMIProtocol against the real Asterisk 22 transcripts, with StringTransport and Clock."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from callbackd.ami.message import AMIInjectionError, Message, MessageParser
from callbackd.ami.protocol import (
    MAX_ACTION_ID,
    AMICommandFailure,
    AMIConnectionLost,
    AMIProtocol,
    AMITimeout,
)
from tests.ami.fixtures import server_bytes, with_action_ids

BANNER = b"Asterisk Call Manager/11.0.0\r\n"
LOGIN_OK = b"Response: Success\r\nActionID: {}\r\nMessage: Authentication accepted\r\n\r\n"
#: a challenge as a real Asterisk sends it (docs/asterisk.rst, "Logging in")
CHALLENGE = "118554538"


class CountingTransport(StringTransport):
    """A StringTransport that counts write() calls."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1
        super().write(data)


def connect(banner: bool = True, **kwargs) -> tuple[AMIProtocol, CountingTransport, Clock]:
    clock = Clock()
    protocol = AMIProtocol(clock=clock, node_id="t", **kwargs)
    transport = CountingTransport()
    protocol.makeConnection(transport)
    if banner:
        protocol.dataReceived(BANNER)
    return protocol, transport, clock


def sent(transport: StringTransport) -> list[Message]:
    """The actions written so far (and clear the transport)."""
    messages = MessageParser().feed(transport.value())
    transport.clear()
    return messages


def result_of(d: Deferred):
    """The result a fired Deferred holds (a Failure for an errback)."""
    results: list = []
    d.addBoth(results.append)
    assert results, "the Deferred has not fired"
    return results[0]


def test_banner_gives_version_across_segments():
    """The banner is recognised even when split, without waiting for a blank line."""
    protocol, _, _ = connect(banner=False)
    protocol.dataReceived(BANNER[:10])
    assert protocol.version is None
    protocol.dataReceived(BANNER[10:])
    assert protocol.version == BANNER[len(b"Asterisk Call Manager/") :].strip().decode()


def test_foreign_banner_aborts():
    """A first line that is not an AMI banner drops the connection."""
    protocol, transport, _ = connect(banner=False)
    protocol.dataReceived(b"SSH-2.0-OpenSSH_9.6\r\n")
    assert transport.disconnected
    assert protocol.version is None


def test_login_waits_for_banner():
    """Login sends nothing until the banner has arrived."""
    protocol, transport, _ = connect(banner=False)
    protocol.login("callbackd", "s3cret", md5=False)
    assert transport.value() == b""
    protocol.dataReceived(BANNER)
    [action] = sent(transport)
    assert action.name == "Login"


def test_login_times_out_without_banner():
    """No banner within the action timeout: login errbacks with AMITimeout."""
    protocol, _, clock = connect(banner=False, action_timeout=3.0)
    d = protocol.login("callbackd", "s3cret")
    clock.advance(3.0)
    assert result_of(d).check(AMITimeout)


def test_plain_login_with_fixture_reply():
    """Plain login sends Username/Secret and fires with the transcript's Success reply."""
    protocol, transport, _ = connect()
    d = protocol.login("callbackd", "callbackd-secret", md5=False)
    [action] = sent(transport)
    assert (action["Username"], action["Secret"]) == ("callbackd", "callbackd-secret")
    protocol.dataReceived(
        with_action_ids(
            server_bytes("ami-busy.log").partition(b"\r\n")[2], {"login-1": action["ActionID"]}
        )
    )
    reply = result_of(d)
    assert reply["Message"] == "Authentication accepted"
    assert protocol.logged_in


def test_md5_login_sends_key_not_secret():
    """MD5 login asks for a challenge and answers with md5(challenge + secret)."""
    protocol, transport, _ = connect()
    d = protocol.login("callbackd", "CHANGE-ME", md5=True)
    [challenge] = sent(transport)
    assert (challenge.name, challenge["AuthType"]) == ("Challenge", "MD5")
    protocol.dataReceived(
        f"Response: Success\r\nActionID: {challenge['ActionID']}\r\n"
        f"Challenge: {CHALLENGE}\r\n\r\n".encode()
    )
    [login] = sent(transport)
    assert login["Key"] == hashlib.md5((CHALLENGE + "CHANGE-ME").encode()).hexdigest()
    assert "Secret" not in login
    protocol.dataReceived(LOGIN_OK.replace(b"{}", login["ActionID"].encode()))
    assert result_of(d)["Message"] == "Authentication accepted"


def test_refused_login_errbacks():
    """``Authentication failed`` errbacks the login with AMICommandFailure."""
    protocol, transport, _ = connect()
    d = protocol.login("callbackd", "wrong", md5=False)
    [action] = sent(transport)
    protocol.dataReceived(
        f"Response: Error\r\nActionID: {action['ActionID']}\r\n"
        "Message: Authentication failed\r\n\r\n".encode()
    )
    failure = result_of(d)
    assert failure.check(AMICommandFailure)
    assert failure.value.message["Message"] == "Authentication failed"
    assert not protocol.logged_in


def test_action_ids_are_unique_prefixed_and_short():
    """Each action gets its own ``<node_id>-<n>`` ActionID of at most 60 characters."""
    protocol, transport, _ = connect()
    for _ in range(50):
        protocol.ping()
    ids = [m["ActionID"] for m in sent(transport)]
    assert len(set(ids)) == len(ids) == 50
    assert all(i.startswith("t-") and len(i) <= MAX_ACTION_ID for i in ids)


def test_one_write_per_action():
    """Each action goes out in exactly one transport.write."""
    protocol, transport, _ = connect()
    protocol.originate("Local/1@x", context="c", exten="s", variables={"A": "1", "B": "2"})
    protocol.hangup("Local/1@x", cause=16)
    assert transport.writes == 2
    assert len(sent(transport)) == 2


def test_replies_are_matched_by_action_id_not_order():
    """Replies arriving out of order, between events, reach the right Deferreds."""
    protocol, transport, _ = connect()
    ping = protocol.ping()
    hangup = protocol.hangup("s5-c")
    ping_id, hangup_id = (m["ActionID"] for m in sent(transport))
    # the transcripts' ping reply (ami-bad) and hangup reply (two_legs), events included
    bad = server_bytes("ami-bad.log")
    conf = server_bytes("ami-two_legs_conf.log")
    hangup_reply = conf[conf.index(b"Response: Success\r\nActionID: h-1") :]
    protocol.dataReceived(with_action_ids(hangup_reply, {"h-1": hangup_id}))
    assert not ping.called
    protocol.dataReceived(with_action_ids(bad.partition(b"\r\n")[2], {"p-1": ping_id}))
    assert result_of(ping)["Ping"] == "Pong"
    assert result_of(hangup)["Message"] == "Channel Hungup"


def test_error_response_errbacks_with_the_reply():
    """``Response: Error`` errbacks with AMICommandFailure holding the reply."""
    protocol, transport, _ = connect()
    d = protocol.send_action(Message.action("NoSuchAction"))
    [action] = sent(transport)
    bad = server_bytes("ami-bad.log")
    protocol.dataReceived(with_action_ids(bad.partition(b"\r\n")[2], {"bad-3": action["ActionID"]}))
    failure = result_of(d)
    assert failure.check(AMICommandFailure)
    assert "Invalid/unknown command" in failure.value.message["Message"]


def _list_items(stream: bytes, action_id: str, complete: str) -> int:
    """How many items the transcript's completion event announces."""
    [done] = [
        m
        for m in MessageParser(banner=True).feed(stream)
        if m.name == complete and m.get("ActionID") == action_id
    ]
    return int(done["ListItems"])


@pytest.mark.parametrize(
    ("call", "fixture_id", "item", "complete"),
    [
        (lambda p: p.core_show_channels(), "csc-1", "CoreShowChannel", "CoreShowChannelsComplete"),
        (lambda p: p.confbridge_list("cb-s5"), "l-1", "ConfbridgeList", "ConfbridgeListComplete"),
    ],
)
def test_list_collects_items_until_complete(call, fixture_id, item, complete):
    """A list action fires with its item events, as many as ``ListItems`` says."""
    protocol, transport, _ = connect()
    d = call(protocol)
    [action] = sent(transport)
    stream = server_bytes("ami-two_legs_conf.log")
    protocol.dataReceived(with_action_ids(stream, {fixture_id: action["ActionID"]}))
    items = result_of(d)
    assert len(items) == _list_items(stream, fixture_id, complete)
    assert {m.name for m in items} == {item}
    assert all(m["ActionID"] == action["ActionID"] for m in items)


def test_list_waits_for_completion():
    """A list action has not fired after its Response and some items."""
    protocol, transport, _ = connect()
    d = protocol.core_show_channels()
    [action] = sent(transport)
    stream = with_action_ids(server_bytes("ami-two_legs_conf.log"), {"csc-1": action["ActionID"]})
    protocol.dataReceived(stream[: stream.index(b"Event: CoreShowChannelsComplete")])
    assert not d.called


@pytest.mark.parametrize("text", ["No active conferences.", "No Conference by that name found."])
def test_nothing_to_list_is_an_empty_list(text):
    """``Response: Error`` meaning nothing to list gives []."""
    protocol, transport, _ = connect()
    d = protocol.confbridge_list_rooms()
    [action] = sent(transport)
    protocol.dataReceived(
        f"Response: Error\r\nActionID: {action['ActionID']}\r\nMessage: {text}\r\n\r\n".encode()
    )
    assert result_of(d) == []


def test_other_list_errors_errback():
    """Any other error to a list action errbacks with AMICommandFailure."""
    protocol, transport, _ = connect()
    d = protocol.core_show_channels()
    [action] = sent(transport)
    protocol.dataReceived(
        f"Response: Error\r\nActionID: {action['ActionID']}\r\n"
        "Message: Permission denied\r\n\r\n".encode()
    )
    assert result_of(d).check(AMICommandFailure)


def test_correlated_events_still_reach_subscribers():
    """List items and OriginateResponse go to subscribers as well as to their action."""
    protocol, transport, _ = connect()
    seen: list[Message] = []
    protocol.register_event(None, seen.append)
    d = protocol.confbridge_list("cb-s5")
    [action] = sent(transport)
    protocol.dataReceived(
        with_action_ids(server_bytes("ami-two_legs_conf.log"), {"l-1": action["ActionID"]})
    )
    items = result_of(d)
    assert items
    assert all(any(m is item for m in seen) for item in items)
    assert any(m.name == "OriginateResponse" for m in seen)


ORIGINATES = [
    ("ami-answer_then_hangup.log", "o-1"),
    ("ami-busy.log", "o-2"),
    ("ami-noanswer.log", "o-3"),
    ("ami-congestion.log", "o-4"),
]


@pytest.mark.parametrize(("name", "fixture_id"), ORIGINATES)
def test_originate_fires_with_originate_response(name, fixture_id):
    """An async Originate fires with the OriginateResponse carrying its ActionID."""
    protocol, transport, _ = connect()
    d = protocol.originate("Local/15550021234@sim-pstn", application="ConfBridge", data="cb-s2")
    [action] = sent(transport)
    stream = server_bytes(name)
    [expected] = [
        m
        for m in MessageParser(banner=True).feed(stream)
        if m.name == "OriginateResponse" and m.get("ActionID") == fixture_id
    ]
    protocol.dataReceived(with_action_ids(stream, {fixture_id: action["ActionID"]}))
    result = result_of(d)
    assert result.name == "OriginateResponse"
    assert (result["Response"], result["Reason"]) == (expected["Response"], expected["Reason"])


def test_originate_is_not_done_at_queued():
    """``Originate successfully queued`` alone does not fire the Originate."""
    protocol, transport, _ = connect()
    d = protocol.originate("Local/1@x", application="Wait", data="1")
    [action] = sent(transport)
    protocol.dataReceived(
        f"Response: Success\r\nActionID: {action['ActionID']}\r\n"
        "Message: Originate successfully queued\r\n\r\n".encode()
    )
    assert not d.called


def test_originate_synchronous_error_errbacks():
    """A synchronous ``Response: Error`` to Originate errbacks with AMICommandFailure."""
    protocol, transport, _ = connect()
    d = protocol.originate("Bogus/123", application="Wait", data="1")
    [action] = sent(transport)
    stream = server_bytes("ami-bad.log")
    protocol.dataReceived(with_action_ids(stream, {"bad-1": action["ActionID"]}))
    failure = result_of(d)
    assert failure.check(AMICommandFailure)
    assert failure.value.message["Message"] == "Originate failed"


def test_originate_times_out_after_its_timeout_plus_margin():
    """No OriginateResponse: AMITimeout after timeout_ms plus the action timeout, not before."""
    protocol, _, clock = connect(action_timeout=5.0)
    d = protocol.originate("Local/1@x", context="c", exten="s", timeout_ms=20000)
    clock.advance(20.0 + 5.0 - 0.01)
    assert not d.called
    clock.advance(0.02)
    assert result_of(d).check(AMITimeout)


def test_originate_headers():
    """Originate is always Async and carries its variables, ids and caller id."""
    protocol, transport, _ = connect()
    protocol.originate(
        "Local/102@sim-callee/n",
        context="cb-conf",
        exten="leg-b",
        timeout_ms=20000,
        caller_id="Callback <5551000>",
        variables=[("CB_ROOM", "sA"), ("CB_LEG", "b")],
        channel_id="sA-b",
        other_channel_id="sA-b-2",
        account="acc1",
    )
    [m] = sent(transport)
    assert m["Async"] == "true"
    assert m.get_all("Variable") == ["CB_ROOM=sA", "CB_LEG=b"]
    assert (m["Context"], m["Exten"], m["Priority"], m["Timeout"]) == (
        "cb-conf",
        "leg-b",
        "1",
        "20000",
    )
    assert (m["ChannelId"], m["OtherChannelId"], m["Account"]) == ("sA-b", "sA-b-2", "acc1")
    assert m["CallerID"] == "Callback <5551000>"


def test_originate_refuses_commas_in_variables():
    """A ``,`` in a variable value (Asterisk would split it) is refused; nothing is written."""
    protocol, transport, _ = connect()
    d = protocol.originate("Local/1@x", context="c", exten="s", variables={"A": "1,B=2"})
    assert result_of(d).check(AMIInjectionError)
    assert transport.value() == b""


@settings(max_examples=100)
@given(
    before=st.text(max_size=20),
    bad=st.sampled_from(["\r", "\n", "\x00", "\nActionID: inj-1\n\nAction: Ping\n"]),
    after=st.text(max_size=20),
)
def test_header_injection_is_refused_before_writing(before, bad, after):
    """Any CR, LF or NUL in a header value fails the action and writes nothing."""
    protocol, transport, _ = connect()
    d = protocol.setvar("CB_NAME", before + bad + after, channel="s1-leg-a")
    assert result_of(d).check(AMIInjectionError)
    assert transport.value() == b""
    assert transport.writes == 0


def test_action_times_out():
    """An unanswered action errbacks with AMITimeout after its timeout."""
    protocol, _, clock = connect(action_timeout=10.0)
    d = protocol.ping()
    clock.advance(9.9)
    assert not d.called
    clock.advance(0.2)
    assert result_of(d).check(AMITimeout)


def test_late_reply_after_timeout_is_ignored():
    """A reply arriving after its action timed out is dropped without error."""
    protocol, transport, clock = connect(action_timeout=1.0)
    d = protocol.ping()
    [action] = sent(transport)
    clock.advance(2)
    protocol.dataReceived(
        f"Response: Success\r\nActionID: {action['ActionID']}\r\nPing: Pong\r\n\r\n".encode()
    )
    assert result_of(d).check(AMITimeout)


def test_cancel_forgets_the_action():
    """Cancelling an action's Deferred stops its timer and frees its ActionID."""
    protocol, _, clock = connect()
    d = protocol.ping()
    d.cancel()
    assert result_of(d).check(CancelledError)
    assert clock.getDelayedCalls() == []


def test_connection_lost_errbacks_every_pending_action():
    """connectionLost errbacks single, list and originate actions, and calls none back."""
    protocol, _, clock = connect()
    pending = [
        protocol.ping(),
        protocol.core_show_channels(),
        protocol.originate("Local/1@x", context="c", exten="s"),
    ]
    protocol.connectionLost(Failure(ConnectionDone()))
    assert all(result_of(d).check(AMIConnectionLost) for d in pending)
    assert clock.getDelayedCalls() == []


def test_actions_after_connection_lost_fail():
    """An action sent on a closed connection errbacks with AMIConnectionLost."""
    protocol, transport, _ = connect()
    protocol.connectionLost(Failure(ConnectionDone()))
    assert result_of(protocol.ping()).check(AMIConnectionLost)
    assert transport.value() == b""


def test_connection_lost_notifies_on_lost():
    """The on_lost callback gets the reason."""
    reasons: list[Failure] = []
    protocol, _, _ = connect(on_lost=reasons.append)
    protocol.connectionLost(Failure(ConnectionDone()))
    assert len(reasons) == 1
    assert reasons[0].check(ConnectionDone)


def _logged_in(**kwargs) -> tuple[AMIProtocol, CountingTransport, Clock]:
    protocol, transport, clock = connect(**kwargs)
    protocol.login("callbackd", "s", md5=False)
    [action] = sent(transport)
    protocol.dataReceived(LOGIN_OK.replace(b"{}", action["ActionID"].encode()))
    return protocol, transport, clock


def test_keepalive_pings_every_interval():
    """Once logged in, a Ping goes out every ping_interval."""
    protocol, transport, clock = _logged_in(ping_interval=15.0, ping_timeout=5.0)
    for _ in range(3):
        clock.advance(15.0)
        [ping] = sent(transport)
        assert ping.name == "Ping"
        protocol.dataReceived(
            f"Response: Success\r\nActionID: {ping['ActionID']}\r\nPing: Pong\r\n\r\n".encode()
        )
    assert not transport.disconnected


def test_unanswered_keepalive_aborts_the_connection():
    """A Ping unanswered within ping_timeout aborts the connection."""
    protocol, transport, clock = _logged_in(ping_interval=15.0, ping_timeout=5.0)
    clock.advance(15.0)
    clock.advance(4.9)
    assert not transport.disconnected
    clock.advance(0.2)
    assert transport.disconnected


def test_keepalive_stops_on_connection_lost():
    """After the connection is gone no timers are left."""
    protocol, _, clock = _logged_in(ping_interval=15.0)
    protocol.connectionLost(Failure(ConnectionDone()))
    assert clock.getDelayedCalls() == []


def test_failing_subscriber_does_not_stop_others():
    """A subscriber that raises is logged; others still get the event and actions still work."""
    protocol, transport, _ = connect()
    seen: list[str] = []

    def broken(event: Message) -> None:
        raise RuntimeError("subscriber bug")

    protocol.register_event("hangup", broken)
    protocol.register_event("Hangup", lambda e: seen.append(e.name))
    d = protocol.ping()
    [action] = sent(transport)
    protocol.dataReceived(b"Event: Hangup\r\nChannel: x\r\n\r\n")
    protocol.dataReceived(
        f"Response: Success\r\nActionID: {action['ActionID']}\r\nPing: Pong\r\n\r\n".encode()
    )
    assert seen == ["Hangup"]
    assert result_of(d)["Ping"] == "Pong"


def test_deregistered_subscriber_gets_nothing():
    """After deregister_event a subscriber is no longer called."""
    protocol, _, _ = connect()
    seen: list[Message] = []
    protocol.register_event("Hangup", seen.append)
    protocol.deregister_event("Hangup", seen.append)
    protocol.dataReceived(b"Event: Hangup\r\n\r\n")
    assert seen == []


@settings(max_examples=50, deadline=None)
@given(garbage=st.lists(st.binary(max_size=300), max_size=30))
def test_malformed_flood_keeps_working(garbage):
    """After any amount of garbage, a well-formed reply still resolves its action."""
    protocol, transport, _ = connect()
    d = protocol.ping()
    [action] = sent(transport)
    for chunk in garbage:
        protocol.dataReceived(chunk)
    protocol.dataReceived(b"\r\n\r\n")
    protocol.dataReceived(
        f"Response: Success\r\nActionID: {action['ActionID']}\r\nPing: Pong\r\n\r\n".encode()
    )
    assert result_of(d)["Ping"] == "Pong"
    assert protocol.connected


def test_response_follows_is_tolerated():
    """An Asterisk <= 13 ``Response: Follows`` answers its action."""
    protocol, transport, _ = connect()
    d = protocol.send_action(Message.action("Command", Command="core show uptime"))
    [action] = sent(transport)
    protocol.dataReceived(
        f"Response: Follows\r\nActionID: {action['ActionID']}\r\n"
        "System uptime: 1 minute\r\n--END COMMAND--\r\n\r\n".encode()
    )
    assert result_of(d).name == "Follows"


def test_getvar_returns_the_value():
    """getvar fires with the Value header."""
    protocol, transport, _ = connect()
    d = protocol.getvar("CB_ROOM", channel="s1-leg-a")
    [action] = sent(transport)
    protocol.dataReceived(
        f"Response: Success\r\nActionID: {action['ActionID']}\r\n"
        "Variable: CB_ROOM\r\nValue: sA\r\n\r\n".encode()
    )
    assert result_of(d) == "sA"


def test_logoff_fires_with_goodbye():
    """logoff fires with the transcript's Goodbye."""
    protocol, transport, _ = connect()
    d = protocol.logoff()
    [action] = sent(transport)
    stream = server_bytes("ami-two_legs_conf.log")
    protocol.dataReceived(with_action_ids(stream, {"bye": action["ActionID"]}))
    assert result_of(d).name == "Goodbye"


def test_logoff_tolerates_the_server_closing_first():
    """If the connection closes before Goodbye, logoff still fires (with None)."""
    protocol, _, _ = connect()
    d = protocol.logoff()
    protocol.connectionLost(Failure(ConnectionDone()))
    assert result_of(d) is None


def test_caller_cannot_choose_the_action_id():
    """An action that brings its own ActionID is refused (correlation is ours)."""
    protocol, transport, _ = connect()
    d = protocol.send_action(Message.action("Ping", ActionID="mine"))
    assert result_of(d).check(ValueError)
    assert transport.value() == b""


@pytest.mark.parametrize("key", ["actionid", "ACTIONID", "ActionId"])
def test_action_id_in_any_case_is_refused(key):
    """An ActionID header spelt in any case is refused like ``ActionID``."""
    protocol, transport, _ = connect()
    d = protocol.send_action(Message([("Action", "Ping"), (key, "mine")]))
    assert result_of(d).check(ValueError)
    assert transport.value() == b""


def test_action_id_follows_the_action_line():
    """The assigned ActionID is written right after ``Action:``, the headers after it."""
    protocol, transport, _ = connect()
    protocol.send_action(Message.action("Getvar", Variable="X", Channel="c"))
    [action] = sent(transport)
    assert [k for k, _ in action.pairs] == ["Action", "ActionID", "Variable", "Channel"]


def _list_events(action_id: str, count: int) -> bytes:
    """``count`` CoreShowChannel items and the completion event, for ``action_id``."""
    items = "".join(
        f"Event: CoreShowChannel\r\nActionID: {action_id}\r\nChannel: c{i}\r\n\r\n"
        for i in range(count)
    )
    return (
        items + f"Event: CoreShowChannelsComplete\r\nActionID: {action_id}\r\n"
        f"EventList: Complete\r\nListItems: {count}\r\n\r\n"
    ).encode()


def test_list_after_a_finished_list_still_collects():
    """A second list action collects its items like the first (list bookkeeping is reset)."""
    protocol, transport, _ = connect()
    for count in (2, 3):
        d = protocol.core_show_channels()
        [action] = sent(transport)
        protocol.dataReceived(_list_events(action["ActionID"], count))
        assert len(result_of(d)) == count


def test_list_after_a_timed_out_list_still_collects():
    """A list action that timed out leaves later list actions working."""
    protocol, transport, clock = connect()
    first = protocol.core_show_channels()
    sent(transport)
    clock.advance(protocol.action_timeout + 1)
    assert result_of(first).check(AMITimeout)
    d = protocol.core_show_channels()
    [action] = sent(transport)
    protocol.dataReceived(_list_events(action["ActionID"], 2))
    assert len(result_of(d)) == 2


def test_other_events_with_an_originate_action_id_do_not_finish_it():
    """Only the OriginateResponse finishes an Originate, whatever else carries its ActionID."""
    protocol, transport, _ = connect()
    d = protocol.originate("Local/1@x", application="Wait", data="1")
    [action] = sent(transport)
    protocol.dataReceived(
        f"Event: Newchannel\r\nActionID: {action['ActionID']}\r\nUniqueid: u\r\n\r\n".encode()
    )
    assert not d.called
    protocol.dataReceived(
        f"Event: OriginateResponse\r\nActionID: {action['ActionID']}\r\n"
        "Response: Success\r\n\r\n".encode()
    )
    assert result_of(d).name == "OriginateResponse"
