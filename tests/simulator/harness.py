"""A simulated Asterisk on a StringTransport with a task.Clock, fixture readers, digests.

What is compared (:func:`digest`) is derived from :mod:`callbackd.amievents`: the events
callbackd's manager.conf lets through (:data:`COMPARED`), with the headers the engine
reads (:data:`FIELDS`).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import defaultdict
from collections.abc import Callable, Collection
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from callbackd.ami.message import Message, MessageParser
from callbackd.amievents import MANAGER_EVENTS
from callbackd.simulator.asterisk import SimulatedAsterisk
from callbackd.simulator.protocol import AMIServerFactory
from callbackd.simulator.rules import RuleSet, parse_rules
from tests.ami.fixtures import FIXTURES

__all__ = ["FIXTURES"]

USERNAME = "callbackd"
SECRET = "callbackd-secret"
#: The events compared: those callbackd's manager.conf filter lets through, i.e. the
#: events the daemon uses (``callbackd.amievents.MANAGER_EVENTS``).
COMPARED = frozenset(MANAGER_EVENTS)
#: The headers compared: those the engine and the switch read (state, cause, dial
#: status, the originate's result, the room, the CbDtmf command), the channel's place
#: in the dialplan, and the ids that tie events to legs.
FIELDS = (
    "Response",
    "Reason",
    "Uniqueid",
    "ChannelState",
    "DestChannelState",
    "Cause",
    "DialStatus",
    "Conference",
    "ActionID",
    "DestUniqueid",
    "Channel",
    "DestChannel",
    "Context",
    "DestContext",
    "Exten",
    "DestExten",
    "UserEvent",
    "CbRoom",
    "CbCmd",
    "Shutdown",
    "Restart",
)
#: compared too where the dialplan was callbackd's own (the ``callbackd/`` transcripts)
PRIORITY_FIELDS = ("Priority", "DestPriority")


class Session:
    """One AMI client connection to a fresh simulated switch."""

    def __init__(
        self,
        rules: str = "",
        start: float = 1795316000.0,
        event_filter: Collection[str] | None = None,
        *,
        of: Session | None = None,
    ) -> None:
        if of is None:
            self.clock = Clock()
            self.clock.advance(start)
            self.switch = SimulatedAsterisk(self.clock, RuleSet(parse_rules(rules)))
            self.factory = AMIServerFactory(
                self.switch, USERNAME, SECRET, event_filter=event_filter
            )
        else:
            self.clock, self.switch, self.factory = of.clock, of.switch, of.factory
        self.protocol = self.factory.buildProtocol(None)
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)
        self.parser = MessageParser(banner=True)
        self.received: list[Message] = []
        self.closed = False

    def send_raw(self, data: bytes) -> None:
        """Write bytes as a client would."""
        self.protocol.dataReceived(data)

    def send(self, *pairs: tuple[str, str]) -> None:
        """Send one action given as pairs."""
        text = "".join(f"{k}: {v}\r\n" for k, v in pairs) + "\r\n"
        self.send_raw(text.encode())

    def read(self) -> list[Message]:
        """Messages written since the last read (a connection the server closed ends)."""
        msgs = self.parser.feed(self.transport.value())
        self.transport.clear()
        self.received.extend(msgs)
        if self.transport.disconnecting and not self.closed:
            self.closed = True
            self.protocol.connectionLost(None)
        return msgs

    def login(self) -> list[Message]:
        """Plain login with events on."""
        self.send(
            ("Action", "Login"), ("ActionID", "login-1"), ("Username", USERNAME),
            ("Secret", SECRET), ("Events", "on"),
        )  # fmt: skip
        return self.read()

    def another(self) -> Session:
        """A second connection to the same switch."""
        return Session(of=self)

    def run_to(self, when: float) -> list[Message]:
        """Advance the clock to ``when``, each timer firing at its own time."""
        while True:
            due = [c.getTime() for c in self.clock.getDelayedCalls() if c.active()]
            step_to = min([t for t in due if t <= when], default=when)
            self.clock.advance(max(0.0, step_to - self.clock.seconds()))
            if step_to >= when:
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
            # A new read or write; it continues a message the last one left unended.
            if line[:3] != direction:
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


def norm_channel(name: str) -> str:
    """``name`` without the Local channel's sequence number (it differs per run)."""
    return re.sub(r"-[0-9a-f]{8};", ";", name)


def timestamps(messages: list[Message]) -> dict[str, list[float]]:
    """The compared events' Timestamps, keyed and ordered as :func:`digest` keys them."""
    out: dict[str, list[float]] = defaultdict(list)
    for m in messages:
        if m.name in COMPARED and not m.is_response and m.get("Timestamp") is not None:
            out[_key(m)].append(float(m["Timestamp"]))
    return dict(out)


def _norm_uid(uid: str) -> str:
    return re.sub(r"^\d+\.\d+$", "<auto>", uid)


def _key(m: Message) -> str:
    if m.name == "OriginateResponse":
        return f"originate {m.get('ActionID')}"
    if m.name == "ConfbridgeEnd":
        return f"room {m.get('Conference')}"
    if m.name in ("FullyBooted", "Shutdown"):
        return "session"
    channel = norm_channel(m.get("Channel") or m.get("DestChannel") or "")
    return f"{channel} {_norm_uid(m.get('Uniqueid') or m.get('DestUniqueid') or '')}"


def digest(
    messages: list[Message], *, priorities: bool = False, names: Collection[str] = COMPARED
) -> dict[str, list[tuple]]:
    """What the engine relies on, grouped per channel / originate / action.

    Event order is compared per channel (Asterisk orders a channel's events, not
    different channels'), responses per ActionID with list sizes, auto-numbered
    Uniqueids and channel sequence numbers normalised; ``priorities`` adds the
    dialplan priorities. ``names``: the events compared (a recording that kept only
    some events is compared on those).
    """
    fields = FIELDS + PRIORITY_FIELDS if priorities else FIELDS
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
        elif m.name in names:
            out[_key(m)].append((m.name, *_fields(m, fields)))
    return dict(out)


def _fields(m: Message, fields: tuple[str, ...]) -> list[tuple[str, str]]:
    """The compared headers of ``m``, channel names and auto Uniqueids normalised."""
    out = []
    for f in fields:
        value = m.get(f)
        if value is None:
            continue
        if f in ("Channel", "DestChannel"):
            value = norm_channel(value)
        elif f in ("Uniqueid", "DestUniqueid"):
            value = _norm_uid(value)
        out.append((f, value))
    return out


# -- replays of callbackd's own sessions (fixtures/asterisk22/callbackd) ------------

#: callbackd's own AMI sessions against the real Asterisk 22
CALLBACKD = FIXTURES / "callbackd"
#: how long after the last message it had read the daemon is taken to have acted
ACTION_DELAY = 0.001
#: a scenario's set-up acts this long before the first event it caused was stamped
SETUP_LEAD = 0.0005


def callbackd_transcripts() -> list[str]:
    """Every ``real-*.log`` (a restart's second connection replays with its first)."""
    return sorted(p.name for p in CALLBACKD.glob("real-*.log") if not p.name.endswith("-conn2.log"))


def first_event(transcript: list[tuple[str, Message]], name: str) -> Message:
    """The first event ``name`` Asterisk sent in ``transcript``."""
    return next(m for d, m in transcript if d == "<<<" and m.name == name and not m.is_response)


def _at(session: Session, when: float, operation: Callable[[], object]) -> None:
    session.clock.callLater(max(0.0, when - session.clock.seconds()), operation)


def _far_end_hangs_up(session: Session, transcript: list[tuple[str, Message]]) -> None:
    """The source's far end hangs up (the recording: ``channel request hangup`` on ;2)."""
    first = first_event(transcript, "Hangup")
    switch = session.switch

    def hang_up() -> None:
        channel = switch.find_channel(first["Uniqueid"])
        assert channel is not None
        switch.hangup_far_end(channel)

    _at(session, float(first["Timestamp"]) - SETUP_LEAD, hang_up)


def _source_keys_hash11(session: Session, transcript: list[tuple[str, Message]]) -> None:
    """The source keys ``#11`` in the room (its last digit lands when CbDtmf was sent)."""
    event = first_event(transcript, "UserEvent")
    switch = session.switch
    interval = 0.25

    def keys() -> None:
        channel = switch.find_channel(event["Uniqueid"])
        assert channel is not None
        switch.key_dtmf(channel, "#11", interval)

    _at(session, float(event["Timestamp"]) - 2 * interval - SETUP_LEAD, keys)


def _core_restart_now(session: Session, transcript: list[tuple[str, Message]]) -> None:
    """``core restart now`` just before the first Hangup it caused; the new switch is
    up 1.5 s after its Shutdown (the second connection logs in with Uptime 0)."""
    first = first_event(transcript, "Hangup")
    _at(session, float(first["Timestamp"]) - SETUP_LEAD, partial(session.switch.restart, 1.5))


Setup = Callable[[Session, list[tuple[str, Message]]], None]
#: what happened on the Asterisk side in a scenario besides the daemon's actions (the
#: callees' behaviour is the simulator's built-in ``sim-pstn`` rules)
SETUPS: dict[str, Setup] = {
    "real-source_hangs_up.log": _far_end_hangs_up,
    "real-hash11_userevent.log": _source_keys_hash11,
    "real-asterisk_restart-conn1.log": _core_restart_now,
}


@dataclass
class Replay:
    """A transcript's actions replayed: what the simulator and the real one sent."""

    session: Session
    sim: list[Message]
    real: list[Message]


def replay_callbackd(name: str, *, rules: str = "", setup: Setup | None = None) -> Replay:
    """Send the daemon's actions of transcript ``name`` at their recorded times.

    The simulator runs with callbackd's event filter and its clock starts where the
    recording's did; each action goes out when :func:`_action_times` says; the
    scenario's set-up (``setup``, else :data:`SETUPS`) acts at the time of the first
    event it caused; ``rules`` are callee rules over the built-in ones. A restart's
    second connection follows its first.
    """
    names = [name] + ([name.replace("-conn1", "-conn2")] if name.endswith("-conn1.log") else [])
    transcripts = [read_log(CALLBACKD / n) for n in names]
    stamps = [float(m["Timestamp"]) for d, m in transcripts[0] if m.get("Timestamp")]
    session = Session(rules, start=min(stamps) - ACTION_DELAY, event_filter=COMPARED)
    setup = setup or SETUPS.get(name)
    if setup is not None:
        setup(session, transcripts[0])
    sim: list[Message] = []
    real: list[Message] = []
    connection = session
    for i, transcript in enumerate(transcripts):
        if i:
            connection = session.another()
        _send_actions(connection, transcript)
        sim += connection.received
        real += [m for d, m in transcript if d == "<<<"]
    return Replay(session, sim, real)


#: actions whose events follow at once: sent just before the next event was stamped
PROMPT_ACTIONS = frozenset({"originate", "hangup", "redirect", "confbridgekick"})


def _action_times(transcript: list[tuple[str, Message]], start: float) -> list[float]:
    """When the daemon sent each action of ``transcript`` (in order).

    Just after the last message it had read (by its Timestamp; a Ping's response has
    one); an action whose events follow at once (:data:`PROMPT_ACTIONS`) just before the
    first event after it, as the daemon may have sent it long after its last read.
    """
    times: list[float] = []
    last = start
    for i, (direction, message) in enumerate(transcript):
        if direction == "<<<":
            if message.get("Timestamp") is not None:
                last = max(last, float(message["Timestamp"]))
            continue
        when = last + ACTION_DELAY
        if (message.get("Action") or "").lower() in PROMPT_ACTIONS:
            later = (
                float(m["Timestamp"])
                for d, m in transcript[i + 1 :]
                if d == "<<<" and not m.is_response and m.get("Timestamp") is not None
            )
            when = max(when, next(later, when) - SETUP_LEAD)
        times.append(when)
    return times


def _send_actions(session: Session, transcript: list[tuple[str, Message]]) -> None:
    times = iter(_action_times(transcript, session.clock.seconds()))
    challenge = ""
    for direction, message in transcript:
        if direction == "<<<":
            continue
        session.run_to(max(session.clock.seconds(), next(times)))
        pairs = list(message.pairs)
        if (message.get("Action") or "").lower() == "login" and message.get("Key"):
            # The recorded key answers the real challenge with the real secret.
            key = hashlib.md5((challenge + SECRET).encode()).hexdigest()
            pairs = [("Key", key) if k == "Key" else (k, v) for k, v in pairs]
        session.send(*pairs)
        answers = session.read()
        challenge = next((m["Challenge"] for m in answers if m.get("Challenge")), challenge)
    stamps = [float(m["Timestamp"]) for _, m in transcript if m.get("Timestamp") is not None]
    session.run_to(max([session.clock.seconds(), *stamps]) + 2.0)


def leg_order(messages: list[Message], leg: str) -> list[tuple[str, ...]]:
    """One leg's events in the order sent: both Local halves and its OriginateResponse.

    ``leg`` is the leg's ChannelId (its ``;2`` half is ``<leg>-2``).
    """
    out: list[tuple[str, ...]] = []
    for m in messages:
        if m.is_response or m.name not in COMPARED:
            continue
        uid = m.get("Uniqueid") or m.get("DestUniqueid") or ""
        if uid not in (leg, f"{leg}-2"):
            continue
        half = ";2" if uid.endswith("-2") else ";1"
        detail = m.get("ChannelState") or m.get("DestChannelState") or ""
        if m.name == "Hangup":
            detail = m["Cause"]
        elif m.name == "OriginateResponse":
            half, detail = "", m["Reason"]
        out.append((m.name, half, detail))
    return out


def legs(messages: list[Message]) -> list[str]:
    """The ChannelIds of the legs in ``messages``, in order of appearance."""
    seen: dict[str, None] = {}
    for m in messages:
        if m.name == "Newchannel" and not m["Uniqueid"].endswith("-2"):
            seen[m["Uniqueid"]] = None
    return list(seen)


def hangup_order(messages: list[Message]) -> list[tuple[str, str]]:
    """Every Hangup event's (Uniqueid, Cause), in the order sent."""
    return [(m["Uniqueid"], m["Cause"]) for m in messages if m.name == "Hangup"]
