"""A simulated Asterisk on a StringTransport with a task.Clock, and fixture readers."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from callbackd.ami.message import Message, MessageParser
from callbackd.simulator.asterisk import SimulatedAsterisk
from callbackd.simulator.protocol import AMIServerFactory
from callbackd.simulator.rules import RuleSet, parse_rules
from tests.ami.fixtures import FIXTURES

__all__ = ["FIXTURES"]

USERNAME = "callbackd"
SECRET = "callbackd-secret"
#: Events the daemon relies on (the manager.conf whitelist of the test instance).
RELIED = {
    "OriginateResponse",
    "Newchannel",
    "Newstate",
    "Hangup",
    "DialBegin",
    "DialEnd",
    "BridgeEnter",
    "BridgeLeave",
    "ConfbridgeJoin",
    "ConfbridgeLeave",
    "ConfbridgeEnd",
    "FullyBooted",
    "UserEvent",
}
FIELDS = (
    "Response",
    "Reason",
    "Uniqueid",
    "ChannelState",
    "Cause",
    "DialStatus",
    "Conference",
    "ActionID",
    "DestUniqueid",
    "Channel",
    "DestChannel",
    "Context",
    "Exten",
    "UserEvent",
)


class Session:
    """One AMI client connection to a fresh simulated switch."""

    def __init__(
        self, rules: str = "", start: float = 1795316000.0, event_filter: set[str] | None = None
    ) -> None:
        self.clock = Clock()
        self.clock.advance(start)
        self.switch = SimulatedAsterisk(self.clock, RuleSet(parse_rules(rules)))
        self.factory = AMIServerFactory(self.switch, USERNAME, SECRET, event_filter=event_filter)
        self.protocol = self.factory.buildProtocol(None)
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)
        self.parser = MessageParser(banner=True)
        self.received: list[Message] = []

    def send_raw(self, data: bytes) -> None:
        """Write bytes as a client would."""
        self.protocol.dataReceived(data)

    def send(self, *pairs: tuple[str, str]) -> None:
        """Send one action given as pairs."""
        text = "".join(f"{k}: {v}\r\n" for k, v in pairs) + "\r\n"
        self.send_raw(text.encode())

    def read(self) -> list[Message]:
        """Messages written since the last read."""
        msgs = self.parser.feed(self.transport.value())
        self.transport.clear()
        self.received.extend(msgs)
        return msgs

    def login(self) -> list[Message]:
        """Plain login with events on."""
        self.send(
            ("Action", "Login"), ("ActionID", "login-1"), ("Username", USERNAME),
            ("Secret", SECRET), ("Events", "on"),
        )  # fmt: skip
        return self.read()

    def run(self, seconds: float, step: float = 0.05) -> list[Message]:
        """Advance the clock in small steps and return what was written."""
        target = self.clock.seconds() + seconds
        while self.clock.seconds() + step < target:
            self.clock.advance(step)
        self.clock.advance(max(0.0, target - self.clock.seconds()))
        return self.read()


def read_log(path: Path) -> list[tuple[str, Message]]:
    """A ``<<<``/``>>>`` fixture as (direction, message) pairs, banner left out."""
    out: list[tuple[str, Message]] = []
    direction = ""
    pairs: list[tuple[str, str]] = []

    def flush() -> None:
        nonlocal pairs
        if pairs:
            out.append((direction, Message(pairs)))
            pairs = []

    for line in path.read_text().splitlines():
        if line.startswith(("<<< ", ">>> ")):
            flush()
            direction, line = line[:3], line[4:]
            if line.startswith("Asterisk Call Manager/"):
                continue
        if not line:
            flush()
            continue
        key, _, value = line.partition(":")
        pairs.append((key, value[1:] if value.startswith(" ") else value))
    flush()
    return out


def read_json(path: Path) -> list[tuple[float, Message]]:
    """A parsed ``[t, pairs]`` fixture."""
    return [(t, Message([tuple(p) for p in pairs])) for t, pairs in json.loads(path.read_text())]


def _norm_channel(name: str) -> str:
    return re.sub(r"-[0-9a-f]{8};", ";", name)


def _norm_uid(uid: str) -> str:
    return re.sub(r"^\d+\.\d+$", "<auto>", uid)


def _key(m: Message) -> str:
    if m.name == "OriginateResponse":
        return f"originate {m.get('ActionID')}"
    if m.name == "ConfbridgeEnd":
        return f"room {m.get('Conference')}"
    if m.name == "FullyBooted":
        return "session"
    channel = _norm_channel(m.get("Channel") or m.get("DestChannel") or "")
    return f"{channel} {_norm_uid(m.get('Uniqueid') or m.get('DestUniqueid') or '')}"


def digest(messages: list[Message]) -> dict[str, list[tuple]]:
    """What the engine relies on, grouped per channel / originate / action.

    Event order is compared per channel (docs/asterisk.rst), responses per ActionID
    with list sizes, auto-numbered Uniqueids and channel sequence numbers normalised.
    """
    out: dict[str, list[tuple]] = defaultdict(list)
    items: dict[str, int] = defaultdict(int)
    for m in messages:
        aid = m.get("ActionID")
        if m.is_response:
            out[f"action {aid}"].append(
                (m.name, m.get("Message"), m.get("EventList"), m.get("Value"))
            )
        elif m.get("EventList", "").lower() == "complete":
            out[f"action {aid}"].append((m.name, m.get("ListItems"), items[aid or ""]))
        elif aid is not None and m.name != "OriginateResponse":
            items[aid] += 1
        elif m.name in RELIED:
            fields = []
            for f in FIELDS:
                value = m.get(f)
                if value is None:
                    continue
                if f in ("Channel", "DestChannel"):
                    value = _norm_channel(value)
                elif f in ("Uniqueid", "DestUniqueid"):
                    value = _norm_uid(value)
                fields.append((f, value))
            out[_key(m)].append((m.name, *fields))
    for events in out.values():
        _leave_order(events)
    return dict(out)


def _leave_order(events: list[tuple]) -> None:
    """Put a BridgeLeave directly followed by its ConfbridgeLeave back in the usual order.

    The two are published by different Asterisk threads: ami-two_legs_conf.log has
    ConfbridgeLeave first for one leg and BridgeLeave first for the next. Only that
    adjacent pair is made order-free; every other ordering is compared as recorded.
    """
    for i in range(len(events) - 1):
        if events[i][0] == "BridgeLeave" and events[i + 1][0] == "ConfbridgeLeave":
            events[i], events[i + 1] = events[i + 1], events[i]
