"""The session manager over AMISwitch, fed callbackd's own AMI sessions with a real Asterisk 22.

The manager runs its session as usual; what it sends goes to a ``StringTransport``, and
the recorded messages of the real Asterisk are fed back in their recorded order, the
clock following their ``Timestamp``s: the recording's ids renamed to the session the
manager made, each recorded response (and ``OriginateResponse``) given to the manager's
own action of the same kind on the same leg (responses to actions the manager did not
send are skipped).
"""

from __future__ import annotations

from twisted.internet.task import Clock

from callbackd.ami.message import Message, MessageParser, encode_message
from callbackd.amiswitch import AMISwitch
from tests.ami.fixtures import client_bytes, server_bytes
from tests.test_amiswitch import StubClient
from tests.test_engine import World, result

RESTART = "callbackd/real-asterisk_restart-conn1.log"
RESTARTED = "callbackd/real-asterisk_restart-conn2.log"
HASH11 = "callbackd/real-hash11_userevent.log"


def _target(action: Message) -> tuple[str, str]:
    """What an action is about: its name and its leg (ChannelId or Channel)."""
    return action.name.lower(), action.get("ChannelId") or action.get("Channel") or ""


class Replay:
    """A manager on an AMISwitch whose AMI session is a recording played back."""

    def __init__(self, name: str, session: str) -> None:
        self.name, self.session = name, session
        self.clock = Clock()
        first = next(
            m for m in MessageParser(banner=True).feed(server_bytes(name)) if "Timestamp" in m
        )
        self.clock.advance(float(first["Timestamp"]) - 0.1)  # the callback a moment before
        self.client = StubClient(self.clock)
        self.switch = AMISwitch(self.client, clock=self.clock)
        self.client.connect()
        self.world = World(clock=self.clock, switch=self.switch)
        self.sid = self.world.callback()
        self.recorded = self.messages(client_bytes(name))
        self.mine: dict[str, str] = {}  # recorded ActionID -> the manager's

    def messages(self, data: bytes, banner: bool = False) -> list[Message]:
        data = data.replace(self.session.encode(), self.sid.encode())
        return MessageParser(banner=banner).feed(data)

    def recording(self, name: str | None = None) -> list[Message]:
        """What Asterisk sent in the recording (this one's by default), renamed."""
        return self.messages(server_bytes(name or self.name), banner=True)

    def actions(self) -> list[Message]:
        """Every action the manager sent so far, on this connection."""
        assert self.client.protocol is not None
        return MessageParser().feed(self.client.protocol.transport.value())

    def play(self, messages: list[Message]) -> None:
        for message in messages:
            stamp = message.get("Timestamp")
            if stamp is not None and float(stamp) > self.clock.seconds():
                self.clock.advance(float(stamp) - self.clock.seconds())
            action_id = message.get("ActionID")
            if action_id is not None:
                action_id = self.match(action_id)
                if action_id is None:
                    continue
                message = Message([(k, action_id if k == "ActionID" else v) for k, v in message])
            self.feed(message)

    def match(self, recorded: str) -> str | None:
        """The manager's action like the recorded one (the first not matched yet)."""
        if recorded not in self.mine:
            want = next((_target(a) for a in self.recorded if a["ActionID"] == recorded), None)
            taken = set(self.mine.values())
            for action in self.actions():
                if _target(action) == want and action["ActionID"] not in taken:
                    self.mine[recorded] = action["ActionID"]
                    break
        return self.mine.get(recorded)

    def feed(self, message: Message) -> None:
        assert self.client.protocol is not None
        self.client.protocol.dataReceived(encode_message(message))


def _until(messages: list[Message], name: str) -> tuple[list[Message], list[Message]]:
    """The messages before the first event ``name``, and the rest."""
    at = next(i for i, m in enumerate(messages) if m.name == name)
    return messages[:at], messages[at:]


def test_real_hash11_ends_the_destination_at_once_and_keeps_the_source():
    """The real #11: the manager hangs up b1 right away; the source stays until it hangs up."""
    replay = Replay(HASH11, "cb1mx580yirp")
    sid = replay.sid
    before, after = _until(replay.recording(), "UserEvent")
    replay.play(before)
    hangups = lambda: [_target(a) for a in replay.actions() if a.name == "Hangup"]  # noqa: E731
    assert hangups() == []
    replay.play(after[:1])
    assert hangups() == [("hangup", f"{sid}-b1")]
    assert "Destination disconnected by #11." in replay.world.texts()
    replay.play(after[1:])
    cdrs = replay.world.cdrs()
    assert (cdrs["destination"].cause, cdrs["session"].cause) == ("ended by source", "SourceHangup")
    assert hangups() == [("hangup", f"{sid}-b1")]


def test_real_restart_ends_the_session_as_switch_lost():
    """The real ``core restart now``: SwitchLost, every leg lost, nothing hung up after.

    The source's Hangup came first and began the session's end; the refusal of the
    daemon's Hangup of the destination ("Asterisk is shutting down") said why a moment
    later: the source's CDR and its leg_ended wait for the session's finish, and say lost.
    """
    replay = Replay(RESTART, "cb1mx57wnhb1")
    replay.play(replay.recording())
    cdrs = replay.world.cdrs()
    assert (cdrs["session"].cause, cdrs["source"].cause, cdrs["destination"].cause) == (
        "SwitchLost",
        "lost",
        "lost",
    )
    ended = [(e.kind, e.leg, e.cause) for e in replay.world.events if e.kind.endswith("_ended")]
    assert ended == [
        ("leg_ended", "destination", "lost"),
        ("leg_ended", "source", "lost"),
        ("session_ended", "", ""),
    ]
    # the one Hangup went out with the source's end, before anything said why
    assert [a.name for a in replay.actions()].count("Hangup") == 1
    replay.client.lose("closed")
    replay.client.connect()
    replay.play(replay.recording(RESTARTED))
    assert replay.switch.health() == (True, "logged in")
    assert result(replay.world.store.list_sessions()) == []


def test_real_crash_is_found_gone_after_the_reconnect():
    """Connection lost mid-call with no Shutdown, the switch back fresh: SwitchLost, all lost."""
    replay = Replay(RESTART, "cb1mx57wnhb1")
    before, _ = _until(replay.recording(), "Hangup")
    replay.play(before)
    replay.client.lose("reset by peer")
    replay.clock.advance(5)
    replay.client.connect()
    replay.play(replay.recording(RESTARTED))  # login, FullyBooted Uptime 0
    [listing] = [a for a in replay.actions() if a.name == "CoreShowChannels"]
    replay.feed(Message([("Response", "Success"), ("ActionID", listing["ActionID"])]))
    replay.feed(
        Message(
            [
                ("Event", "CoreShowChannelsComplete"),
                ("ActionID", listing["ActionID"]),
                ("EventList", "Complete"),
                ("ListItems", "0"),
            ]
        )
    )
    cdrs = replay.world.cdrs()
    assert cdrs["session"].cause == "SwitchLost"
    assert (cdrs["source"].cause, cdrs["destination"].cause) == ("lost", "lost")
    assert not [a for a in replay.actions() if a.name == "Hangup"]
