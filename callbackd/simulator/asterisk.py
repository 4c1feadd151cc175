"""The simulated switch: channels, Local channel halves, ConfBridge rooms and the dialplan.

It behaves as the real Asterisk 22 of ``tests/fixtures/asterisk22`` did under callbackd's
own ``etc/asterisk/extensions.conf`` (:data:`DIALPLAN`, its priorities included):
callees behave by :mod:`callbackd.simulator.rules` (like the recordings' ``sim-pstn``
context); answered channels run ``cb-conf`` (``wait-a``, ``leg-a``, ``leg-b``, ``bad``),
``cb-dtmf`` or one application (``ConfBridge``, ``Wait``, anything else stays up).
Events come in the orders of the recordings (``docs/simulator.rst``) and go to
listeners as ordered pairs with ``Privilege`` and a ``Timestamp`` from the injected
clock, spread so that no two events share one; a listener may name the events it wants
(an include filter, as manager.conf's ``eventfilter(name(X))``), and an event no
listener wants is not built at all. No I/O happens here.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from callbackd.core.causes import cause_text
from callbackd.simulator.rules import Behaviour, DialTarget, RuleSet, parse_dial_target

__all__ = [
    "Channel",
    "OriginateError",
    "OriginateRequest",
    "Room",
    "SimulatedAsterisk",
    "parse_caller_id",
    "split_variables",
]

Pairs = list[tuple[str, str]]
EventListener = Callable[[str, Pairs], None]

STATE_DESC = {
    0: "Down",
    1: "Rsrvd",
    2: "OffHook",
    3: "Dialing",
    4: "Ring",
    5: "Ringing",
    6: "Up",
    7: "Busy",
    8: "Dialing Offhook",
    9: "Pre-ring",
}
KNOWN_TECHS = {"local", "pjsip", "sip", "iax2", "dahdi", "motif"}
# Asterisk's originate_app_permissions: what an Originate may not run
_BLACKLISTED_APPS = (
    "agi",
    "exec",
    "system",
    "originate",
    "mixmonitor",
    "externalivr",
    "dbdeltree",
    "reload",
)
_BLACKLISTED_DATA = ("CURL", "DB", "EVAL", "FILE", "ODBC", "REALTIME", "SHELL")
#: The applications at each priority (1, 2, ...) of callbackd's
#: ``etc/asterisk/extensions.conf``, the dialplan the daemon originates into (a test
#: reads that file and compares).
DIALPLAN: dict[str, dict[str, tuple[str, ...]]] = {
    "cb-conf": {
        "wait-a": ("Set", "GotoIf", "Playtones", "Wait", "Hangup"),
        "leg-a": ("Set", "GotoIf", "StopPlaytones", "ConfBridge", "Hangup"),
        "leg-b": ("Set", "GotoIf", "ConfBridge", "Hangup"),
        "ivr-a": ("Set", "GotoIf", "StopPlaytones", "AGI", "Wait", "Hangup"),
        "bad": ("Hangup",),
    },
    "cb-dtmf": {"endb": ("UserEvent",)},
}
_ROOM_FILTER = re.compile(r"[^A-Za-z0-9_]")
#: ``wait-a``'s ``Wait(180)``
WAIT_A_SECONDS = 180.0
#: how long a callee's ``Answer()`` takes to return (it waits for media; the recordings
#: show the next priority 20 ms after the answer)
ANSWER_SECONDS = 0.02
#: how long a channel's own thread takes to act on an AMI Hangup, a kick of the
#: end_marked users or a shutdown
SOFT_HANGUP_SECONDS = 0.001
#: from ``core restart now`` to ``Event: Shutdown`` (real-asterisk_restart-conn1.log)
SHUTDOWN_SECONDS = 1.1
#: a callee with a ``dtmf`` rule keys its digits this long after joining a room, one
#: digit every :data:`DTMF_INTERVAL_SECONDS` (``SendDTMF(...,250)`` after ``Wait(2)``)
DTMF_DELAY_SECONDS = 2.0
DTMF_INTERVAL_SECONDS = 0.25
#: each event's ``Timestamp`` is at least this much after the previous one's (the real
#: ones are spread by tens of microseconds within a burst; a microsecond, the least the
#: format shows, keeps a burst of thousands of events from running ahead of the clock)
EVENT_SPACING = 0.000001


def _reason_for_cause(cause: int) -> int:
    """``pbx_dial_reason``: the OriginateResponse Reason of a failed dial."""
    if cause == 17:
        return 5
    if cause in (19, 26):
        return 3
    if cause in (21, 27, 34, 38, 41, 42):
        return 8
    return 0


def parse_caller_id(text: str | None) -> tuple[str, str]:
    """``"Name" <number>`` -> (number, name), the number shrunk like Asterisk does."""
    if not text:
        return "<unknown>", "<unknown>"
    m = re.match(r'^\s*(?:"([^"]*)"|([^<]*?))\s*<([^>]*)>\s*$', text)
    if m:
        name = m.group(1) if m.group(1) is not None else m.group(2)
        number = m.group(3)
    elif re.match(r"^[\d\s()+.-]+$", text):
        name, number = "", text
    else:
        name, number = text.strip(), ""
    number = re.sub(r"[\s().-]", "", number)
    return number or "<unknown>", name or "<unknown>"


def split_variables(values: list[str]) -> list[tuple[str, str]]:
    """Every ``Variable:`` value split on commas like Asterisk's app-arg parser."""
    out: list[tuple[str, str]] = []
    for value in values:
        parts: list[str] = []
        cur: list[str] = []
        quoted = False
        escaped = False
        for ch in value:
            if escaped:
                cur.append(ch)
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                quoted = not quoted
            elif ch == "," and not quoted:
                parts.append("".join(cur))
                cur = []
            else:
                cur.append(ch)
        parts.append("".join(cur))
        for part in parts:
            name, sep, val = part.partition("=")
            if sep and name.strip():
                out.append((name.strip(), val))
    return out


@dataclass(eq=False)
class Channel:
    """One simulated channel (a Local half or a trunk channel)."""

    name: str
    uniqueid: str
    linkedid: str
    created: float
    context: str
    exten: str
    priority: int = 1
    state: int = 0
    caller_num: str = "<unknown>"
    caller_name: str = "<unknown>"
    account: str = ""
    application: str = ""
    app_data: str = ""
    variables: dict[str, str] = field(default_factory=dict)
    peer: Channel | None = None
    room: Room | None = None
    alive: bool = True
    timers: dict[str, IDelayedCall] = field(default_factory=dict)
    dtmf: str = ""
    #: digits the callee keys once this channel joins a room (a ``dtmf`` rule)
    keys: str = ""
    #: ``CHANNEL(language)``
    language: str = "en"
    #: the number dialled to reach this channel (an Originate's target, an inbound DID)
    dialled: str = ""
    #: ``agi_dnid``: the number the caller dialled, on an inbound channel
    dnid: str = "unknown"
    #: called once when the channel hangs up (a running ``AGI()`` learns it so)
    hangup_hooks: list[Callable[[], None]] = field(default_factory=list)
    #: called once when an AMI Redirect moves the channel (a running ``AGI()`` ends)
    redirect_hooks: list[Callable[[], None]] = field(default_factory=list)
    #: called each time the channel joins a ConfBridge room (the person on it hears
    #: the room: a scripted caller's ``ROOM`` cue)
    join_hooks: list[Callable[[], None]] = field(default_factory=list)

    @property
    def is_local_two(self) -> bool:
        """True for the ``;2`` half of a Local channel."""
        return self.name.endswith(";2")

    def block(self, prefix: str = "") -> Pairs:
        """The channel snapshot in Asterisk's field order."""
        return [
            (prefix + "Channel", self.name),
            (prefix + "ChannelState", str(self.state)),
            (prefix + "ChannelStateDesc", STATE_DESC.get(self.state, "Unknown")),
            (prefix + "CallerIDNum", self.caller_num),
            (prefix + "CallerIDName", self.caller_name),
            (prefix + "ConnectedLineNum", self.caller_num),
            (prefix + "ConnectedLineName", self.caller_name),
            (prefix + "Language", self.language),
            (prefix + "AccountCode", self.account),
            (prefix + "Context", self.context),
            (prefix + "Exten", self.exten),
            (prefix + "Priority", str(self.priority)),
            (prefix + "Uniqueid", self.uniqueid),
            (prefix + "Linkedid", self.linkedid),
        ]


@dataclass(eq=False)
class Member:
    """A channel in a ConfBridge room with its user profile flags."""

    channel: Channel
    marked: bool
    end_marked: bool
    menu: bool
    joined: float


@dataclass(eq=False)
class Room:
    """A ConfBridge conference (softmix bridge with its hidden announcer)."""

    name: str
    bridge_id: str
    members: list[Member] = field(default_factory=list)

    def block(self, count: int) -> Pairs:
        """The bridge block; ``count`` includes the announcer channel, as Asterisk does."""
        return [
            ("BridgeUniqueid", self.bridge_id),
            ("BridgeType", "base"),
            ("BridgeTechnology", "softmix"),
            ("BridgeCreator", "ConfBridge"),
            ("BridgeName", self.name),
            ("BridgeNumChannels", str(count)),
            ("BridgeVideoSourceMode", "none"),
        ]

    def member(self, channel: Channel) -> Member | None:
        """The membership of ``channel``, if any."""
        for m in self.members:
            if m.channel is channel:
                return m
        return None


class OriginateError(Exception):
    """An Originate refused synchronously; ``message`` is Asterisk's error text."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass
class OriginateRequest:
    """The parsed headers of one Originate action."""

    channel: str
    context: str = ""
    exten: str = ""
    priority: str = "1"
    application: str = ""
    data: str = ""
    timeout_ms: int = 30000
    caller_id: str | None = None
    variables: list[tuple[str, str]] = field(default_factory=list)
    channel_id: str = ""
    other_channel_id: str = ""
    account: str = ""
    action_id: str | None = None


@dataclass(eq=False)
class _Dial:
    """An Originate in progress."""

    request: OriginateRequest
    target: DialTarget
    behaviour: Behaviour
    outbound: Channel | None = None
    callee: Channel | None = None
    done: bool = False
    on_result: Callable[[bool], None] | None = None


class SimulatedAsterisk:
    """The switch: originate, hang up, redirect, ConfBridge, variables; emits AMI events."""

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        rules: RuleSet | None = None,
        *,
        time_scale: float = 1.0,
        timestamps: bool = True,
    ) -> None:
        self.clock = clock
        self.rules = rules or RuleSet()
        self.time_scale = time_scale
        self.timestamps = timestamps
        self.started = clock.seconds()
        self.globals: dict[str, str] = {}
        self._channels: dict[str, Channel] = {}  # by uniqueid, creation order
        self._rooms: dict[str, Room] = {}
        self._listeners: list[tuple[EventListener, frozenset[str] | None]] = []
        #: the event names some listener wants; None = every event
        self._wanted: frozenset[str] | None = frozenset()
        self._seq = 0
        self._uid_seq = 0
        self._last_stamp = 0.0
        #: True from :meth:`restart` until its ``Shutdown`` event
        self.shutting_down = False
        #: called after the ``Shutdown`` event of a restart (the AMI server closes)
        self.on_shutdown: list[Callable[[], None]] = []
        #: (context, exten) -> what an answered channel sent there runs (``AGI()``,
        #: callbackd.simulator.agi), beyond the built-in :data:`DIALPLAN`
        self.dialplan_hooks: dict[tuple[str, str], Callable[[Channel], None]] = {}
        self._inbound_seq = 0

    # -- listeners and inspection -------------------------------------------------

    def add_listener(self, listener: EventListener, names: Collection[str] | None = None) -> None:
        """Call ``listener(category, pairs)`` for every event, or only those in ``names``.

        ``names`` is an include filter on the ``Event`` value, compared exactly (None =
        every event).
        """
        self._listeners.append((listener, None if names is None else frozenset(names)))
        self._update_wanted()

    def remove_listener(self, listener: EventListener) -> None:
        """Stop calling ``listener``."""
        self._listeners = [entry for entry in self._listeners if entry[0] != listener]
        self._update_wanted()

    def _update_wanted(self) -> None:
        wanted: set[str] = set()
        for _, names in self._listeners:
            if names is None:
                self._wanted = None
                return
            wanted |= names
        self._wanted = frozenset(wanted)

    def wants(self, name: str) -> bool:
        """True if some listener takes event ``name`` (else emitting it is skipped)."""
        wanted = self._wanted
        return wanted is None or name in wanted

    def channels(self) -> list[Channel]:
        """Live channels, oldest first."""
        return list(self._channels.values())

    def rooms(self) -> dict[str, list[str]]:
        """Live ConfBridge rooms: name -> channel names of the members, in join order."""
        return {name: [m.channel.name for m in r.members] for name, r in self._rooms.items()}

    def room(self, name: str) -> Room | None:
        """The live room ``name``."""
        return self._rooms.get(name)

    def find_channel(self, name_or_uid: str) -> Channel | None:
        """``ast_channel_get_by_name``: a live channel by exact name (any case) or Uniqueid."""
        low = name_or_uid.lower()
        for ch in self._channels.values():
            if ch.name.lower() == low:
                return ch
        return self._channels.get(name_or_uid)

    def uptime(self) -> int:
        """Seconds since the switch started."""
        return max(0, int(self.clock.seconds() - self.started))

    def timestamp(self) -> str:
        """The clock as ``epoch.usec``, after every timestamp given before."""
        now = self.clock.seconds()
        stamp = now if now > self._last_stamp else self._last_stamp + EVENT_SPACING
        self._last_stamp = stamp
        return f"{stamp:.6f}"

    def shutdown(self) -> None:
        """Cancel every timer (the process is going away)."""
        for ch in list(self._channels.values()):
            self._cancel_timers(ch)
        self._channels.clear()
        self._rooms.clear()

    # -- events ---------------------------------------------------------------

    def emit(self, name: str, body: Pairs, category: str = "call") -> None:
        """Send one event to every listener that wants it."""
        wanted = self._wanted
        if wanted is not None and name not in wanted:
            return
        pairs: Pairs = [("Event", name), ("Privilege", f"{category},all")]
        if self.timestamps:
            pairs.append(("Timestamp", self.timestamp()))
        pairs.extend(body)
        for listener, names in list(self._listeners):
            if names is None or name in names:
                listener(category, pairs)

    def _state(self, ch: Channel, state: int) -> None:
        if ch.alive and ch.state != state:
            ch.state = state
            self.emit("Newstate", ch.block())

    # -- timers ---------------------------------------------------------------

    def _later(self, ch: Channel, key: str, seconds: float, fn: Callable[[], Any]) -> None:
        old = ch.timers.pop(key, None)
        if old is not None and old.active():
            old.cancel()

        def fire() -> None:
            ch.timers.pop(key, None)
            fn()

        ch.timers[key] = self.clock.callLater(seconds * self.time_scale, fire)

    def _cancel(self, ch: Channel, key: str) -> None:
        call = ch.timers.pop(key, None)
        if call is not None and call.active():
            call.cancel()

    def _cancel_timers(self, ch: Channel) -> None:
        for key in list(ch.timers):
            self._cancel(ch, key)

    # -- originate --------------------------------------------------------------

    def _new_uniqueid(self) -> str:
        self._uid_seq += 1
        return f"{int(self.started)}.{self._uid_seq}"

    def _in_use(self, uid: str) -> bool:
        return bool(uid) and uid in self._channels

    def check_originate(self, req: OriginateRequest) -> DialTarget:
        """The synchronous checks of ``action_originate``; raise OriginateError."""
        target = parse_dial_target(req.channel)
        if target is None:
            raise OriginateError("Invalid channel")
        if req.application:
            app = req.application.lower()
            blacklisted = any(word in app for word in _BLACKLISTED_APPS) or (
                app == "queue" and "agi" in req.data.lower()
            )
            if blacklisted or any(word in req.data for word in _BLACKLISTED_DATA):
                raise OriginateError("Originate Access Forbidden: app or data blacklisted")
        elif req.exten and req.context:
            known = req.exten in DIALPLAN.get(req.context, ())
            if not known and (req.context, req.exten) not in self.dialplan_hooks:
                raise OriginateError("Extension does not exist.")
        if len(req.channel_id) > 149 or len(req.other_channel_id) > 149:
            raise OriginateError("Uniqueid length exceeds maximum of 149")
        return target

    def originate(
        self, req: OriginateRequest, on_result: Callable[[bool], None] | None = None
    ) -> None:
        """Start an Originate checked by :meth:`check_originate`; events follow later.

        ``on_result(success)`` is called when the OriginateResponse is emitted.
        """
        target = self.check_originate(req)
        behaviour = self.rules.behaviour_for(target.number, target.trunk)
        dial = _Dial(req, target, behaviour, on_result=on_result)
        # The action's Response goes out before any event of the call.
        self.clock.callLater(0, self._start, dial)

    def _respond(self, dial: _Dial, success: bool, reason: int) -> None:
        if dial.done:
            return
        dial.done = True
        req = dial.request
        body: Pairs = []
        if req.action_id is not None:
            body.append(("ActionID", req.action_id))
        body.append(("Response", "Success" if success else "Failure"))
        channel = dial.outbound.name if success and dial.outbound else req.channel
        body.append(("Channel", channel))
        if req.application:
            body += [("Application", req.application), ("Data", req.data)]
        else:
            body += [("Context", req.context), ("Exten", req.exten)]
        body.append(("Reason", str(reason)))
        # A failed originate reports the pre-assigned id, or <unknown> (ami-busy.log).
        uid = dial.outbound.uniqueid if success and dial.outbound else req.channel_id
        uid = uid or "<unknown>"
        body.append(("Uniqueid", uid))
        num, name = parse_caller_id(req.caller_id)
        body += [("CallerIDNum", num), ("CallerIDName", name)]
        if dial.on_result is not None:
            # A synchronous Originate gets only its Response, no OriginateResponse event.
            dial.on_result(success)
        else:
            self.emit("OriginateResponse", body)

    def _channel(self, name: str, uid: str, linkedid: str, context: str, exten: str) -> Channel:
        ch = Channel(name, uid, linkedid, self.clock.seconds(), context, exten)
        self._channels[uid] = ch
        return ch

    def _start(self, dial: _Dial) -> None:
        req, target = dial.request, dial.target
        if (
            self.shutting_down
            or target.tech.lower() not in KNOWN_TECHS
            or dial.behaviour.kind == "unavailable"
            or self._in_use(req.channel_id)
            or self._in_use(req.other_channel_id)
        ):
            self._respond(dial, False, 0)
            return
        self._seq += 1
        uid = req.channel_id or self._new_uniqueid()
        num, name = parse_caller_id(req.caller_id)
        behaviour = dial.behaviour
        if target.tech.lower() == "local":
            ctx = target.local_context or "default"
            base = f"Local/{target.number}@{ctx}-{self._seq:08x}"
            if req.other_channel_id:
                uid2 = req.other_channel_id
            elif req.channel_id:
                uid2 = f"{req.channel_id};2"
            else:
                uid2 = self._new_uniqueid()
            one = self._channel(base + ";1", uid, uid, ctx, target.number)
            two = self._channel(base + ";2", uid2, uid, ctx, target.number)
            two.state = 4
            one.peer, two.peer = two, one
            self.emit("Newchannel", one.block())
            self.emit("Newchannel", two.block())
            if behaviour.goto is not None:
                # Goto() at the ;2 half's first priority: it runs there from now on.
                two.context, two.exten = behaviour.goto
            chans = [one, two]
        else:
            endpoint = target.trunk or target.resource.split("/", 1)[0]
            one = two = self._channel(
                f"{target.tech}/{endpoint}-{self._seq:08x}", uid, uid, "default", "s"
            )
            self.emit("Newchannel", one.block())
            chans = [one]
        for ch in chans:
            ch.caller_num, ch.caller_name, ch.account = num, name, req.account
            ch.dialled = target.number
            ch.variables.update(req.variables)
        one.keys = behaviour.dtmf
        dial.outbound, dial.callee = one, two
        if self.wants("DialBegin"):
            self.emit("DialBegin", one.block("Dest") + [("DialString", target.resource)])
        if behaviour.rings:
            # Ringing() at priority 1, then Wait() at 2 (the sim-pstn dialplan).
            two.application = "Ringing"
            self._state(one, 5)
            self._dial_event(dial, "DialState", "RINGING")
            two.priority = 2
        if behaviour.kind != "ring":
            self._later(one, "callee", behaviour.delay, lambda: self._outcome(dial))
        self._later(one, "originate-timeout", req.timeout_ms / 1000.0, lambda: self._noanswer(dial))

    def _outcome(self, dial: _Dial) -> None:
        kind = dial.behaviour.kind
        if kind == "answer":
            self._answer(dial)
        elif kind == "busy":
            self._fail(dial, "BUSY", 7, 17, 5)
        elif kind == "congestion":
            self._fail(dial, "CONGESTION", 7, 34, 8)
        elif kind == "reject":
            self._reject(dial)

    def _dial_event(self, dial: _Dial, name: str, status: str) -> None:
        """DialState or DialEnd of the outbound channel (an Originate has no caller)."""
        assert dial.outbound is not None
        self.emit(name, dial.outbound.block("Dest") + [("DialStatus", status)])

    def _answer(self, dial: _Dial) -> None:
        """The callee answers: the real orders of real-two_legs_talk_hangup.log.

        The source (originated into ``wait-a``): ``;2`` Up, OriginateResponse, ``;1``
        Up, DialEnd; any other leg: ``;2`` Up, ``;1`` Up, DialEnd, OriginateResponse.
        (OriginateResponse does not pass through Asterisk's event queue as the others
        do; the recordings show both orders, the daemon must take either.)
        """
        one, two = dial.outbound, dial.callee
        assert one is not None and two is not None
        self._cancel(one, "originate-timeout")
        req = dial.request
        if two is not one:
            # Answer() at priority 3 after Ringing/Wait, else at 1; Wait() once it returns.
            two.priority = 3 if dial.behaviour.rings else 1
            two.application, two.app_data = "Answer", ""
            self._state(two, 6)
            self._later(two, "answer", ANSWER_SECONDS, lambda: self._callee_step(two, "Wait"))
        early = not req.application and (req.context, req.exten) == ("cb-conf", "wait-a")
        if early:
            self._respond(dial, True, 4)
        self._state(one, 6)
        self._dial_event(dial, "DialEnd", "ANSWER")
        if not early:
            self._respond(dial, True, 4)
        hangup_after = dial.behaviour.hangup_after
        if hangup_after is not None:

            def far_end_hangup() -> None:
                self._callee_step(two, "Hangup")
                self.hangup(two, 16)

            self._later(two, "callee-hangup", ANSWER_SECONDS + hangup_after, far_end_hangup)
        if req.application:
            self._run_app(one, req.application, req.data)
        else:
            self._goto(one, req.context, req.exten)

    def _callee_step(self, ch: Channel, app: str) -> None:
        """The callee's dialplan moves on to its next priority (running ``app``)."""
        if ch.alive and ch.is_local_two:
            ch.priority += 1
            ch.application = app

    def _fail(self, dial: _Dial, status: str, state: int, cause: int, reason: int) -> None:
        one, two = dial.outbound, dial.callee
        assert one is not None and two is not None
        self._cancel(one, "originate-timeout")
        if two is one:
            self._dial_event(dial, "DialEnd", status)
            self.hangup(one, cause)
            self._respond(dial, False, _reason_for_cause(cause))
            return
        # Busy()/Congestion() at the callee's next priority.
        if dial.behaviour.rings:
            two.priority = 3
        # Local quirk (real-busy.log): the ;1 half ends with cause 0 on busy/congestion.
        self._state(two, state)
        self._dial_event(dial, "DialEnd", status)
        if self.wants("HangupRequest"):
            self.emit("HangupRequest", two.block() + [("Cause", "0")])
        self._hangup_one(one, 0)
        self._respond(dial, False, reason)
        self._hangup_one(two, cause)

    def _reject(self, dial: _Dial) -> None:
        one, two = dial.outbound, dial.callee
        assert one is not None and two is not None
        self._cancel(one, "originate-timeout")
        cause = dial.behaviour.cause
        if two is one:
            # A real trunk channel carries the cause into the dial result.
            status = "CONGESTION" if _reason_for_cause(cause) == 8 else "NOANSWER"
            self._dial_event(dial, "DialEnd", status)
            self.hangup(one, cause)
            self._respond(dial, False, _reason_for_cause(cause))
            return
        # The far end hangs up without indication: DialStatus NOANSWER, Reason 0.
        self._dial_event(dial, "DialEnd", "NOANSWER")
        self._hangup_one(two, cause)
        self._hangup_one(one, cause)
        self._respond(dial, False, 0)

    def _noanswer(self, dial: _Dial) -> None:
        """The Originate Timeout: OriginateResponse Reason 3, then the Hangups (cause 19)."""
        one, two = dial.outbound, dial.callee
        if dial.done or one is None or two is None or not one.alive:
            return
        if two is not one and self.wants("HangupRequest"):
            self.emit("HangupRequest", two.block() + [("Cause", "19")])
        self._respond(dial, False, 3)
        self._hangup_one(two, 19)
        self._hangup_one(one, 19)

    # -- dialplan ---------------------------------------------------------------

    def _at(self, ch: Channel, context: str, exten: str, app: str, data: str = "") -> None:
        """Put ``ch`` at the priority of ``app`` in ``context,exten`` (:data:`DIALPLAN`)."""
        ch.context, ch.exten = context, exten
        ch.priority = DIALPLAN[context][exten].index(app) + 1
        ch.application, ch.app_data = app, data

    def _goto(self, ch: Channel, context: str, exten: str) -> None:
        """Run callbackd's dialplan at ``context,exten,1`` on an answered channel."""
        self._cancel(ch, "dialplan")
        ch.context, ch.exten = context, exten
        room = _ROOM_FILTER.sub("", ch.variables.get("CB_ROOM", ""))
        if context == "cb-conf" and exten in ("wait-a", "leg-a", "leg-b"):
            ch.variables["ROOM"] = room
            if not room:
                self._at(ch, "cb-conf", "bad", "Hangup", "21")
                self.hangup(ch, 21)
            elif exten == "wait-a":
                self._at(ch, context, exten, "Wait", "180")

                def waited() -> None:
                    self._at(ch, context, exten, "Hangup")
                    self.hangup(ch, 16)

                self._later(ch, "dialplan", WAIT_A_SECONDS, waited)
            else:
                a = exten == "leg-a"
                profile = "cb_bridge,cb_user_a,cb_menu_a" if a else "cb_bridge,cb_user_b"
                self._at(ch, context, exten, "ConfBridge", f"{room},{profile}")
                self._join(ch, room, f"{room},{profile}", marked=a, end_marked=not a, menu=a)
            return
        if context == "cb-conf" and exten == "bad":
            self._at(ch, context, exten, "Hangup", "21")
            self.hangup(ch, 21)
            return
        if context == "cb-dtmf" and exten == "endb":
            self._at(ch, context, exten, "UserEvent")
            self._cb_dtmf(ch, ch.variables.get("ROOM", room))
            self.hangup(ch, 16)
            return
        hook = self.dialplan_hooks.get((context, exten))
        if hook is not None:
            hook(ch)
            return
        # Anything else: no such extension, autofallthrough hangs up.
        self.hangup(ch, 16)

    def _run_app(self, ch: Channel, app: str, data: str) -> None:
        ch.application, ch.app_data = app, data
        low = app.lower()
        if low == "confbridge":
            room = data.split(",", 1)[0]
            if room:
                self._join(ch, room, data, marked=False, end_marked=False, menu=False)
                return
            self.hangup(ch, 16)
        elif low == "wait":
            try:
                seconds = float(data or "0")
            except ValueError:
                seconds = 0.0
            self._later(ch, "dialplan", seconds, lambda: self.hangup(ch, 0))
        elif low == "hangup":
            self.hangup(ch, int(data) if data.isdigit() else 16)
        # Any other application keeps the channel up until it is hung up.

    def _cb_dtmf(self, ch: Channel, room: str) -> None:
        """``UserEvent(CbDtmf,CbRoom: ${ROOM},CbCmd: endb)`` as real-hash11_userevent.log."""
        body = ch.block() + [("UserEvent", "CbDtmf"), ("CbRoom", room), ("CbCmd", "endb")]
        self.emit("UserEvent", body, category="user")

    def dtmf_received(self, ch: Channel, digit: str) -> None:
        """A digit from the far end: ``#11`` in a room with cb_menu_a runs cb-dtmf,endb.

        ``dialplan_exec`` runs ``cb-dtmf,endb,1`` on the channel, which then returns to
        the room (no new ConfbridgeJoin).
        """
        member = ch.room.member(ch) if ch.room else None
        if member is None or not member.menu:
            return
        ch.dtmf = (ch.dtmf + digit)[-3:]
        if ch.dtmf == "#11":
            ch.dtmf = ""
            saved = ch.context, ch.exten, ch.priority, ch.application, ch.app_data
            self._at(ch, "cb-dtmf", "endb", "UserEvent")
            self._cb_dtmf(ch, ch.variables.get("ROOM", ""))
            ch.context, ch.exten, ch.priority, ch.application, ch.app_data = saved

    def key_dtmf(self, ch: Channel, digits: str, interval: float = DTMF_INTERVAL_SECONDS) -> None:
        """The far end of ``ch``'s leg keys ``digits``, one every ``interval`` seconds.

        ``ch`` is either half of a Local channel (the digits reach the ``;1`` half, the
        one in the room); keying ``#11`` in a room with the ``cb_menu_a`` menu (the
        source) sends ``UserEvent CbDtmf``.
        """
        target = ch.peer if ch.is_local_two and ch.peer is not None else ch
        for i, digit in enumerate(digits):
            self._later(
                target,
                f"dtmf-{i}",
                i * interval,
                partial(self.dtmf_received, target, digit),
            )

    # -- ConfBridge -------------------------------------------------------------

    def _join(
        self, ch: Channel, name: str, data: str, *, marked: bool, end_marked: bool, menu: bool
    ) -> None:
        ch.application, ch.app_data = "ConfBridge", data
        room = self._rooms.get(name)
        if room is None:
            room = Room(name, str(uuid.uuid4()))
            self._rooms[name] = room
            if self.wants("BridgeCreate"):
                self.emit("BridgeCreate", room.block(0))
            if self.wants("ConfbridgeStart"):
                self.emit("ConfbridgeStart", [("Conference", name), *room.block(1)])
        room.members.append(Member(ch, marked, end_marked, menu, self.clock.seconds()))
        ch.room = room
        count = len(room.members) + 1
        if self.wants("BridgeEnter"):
            self.emit("BridgeEnter", room.block(count) + ch.block())
        self.emit(
            "ConfbridgeJoin",
            [("Conference", name), *room.block(count), *ch.block(), ("Admin", "No")]
            + [("Muted", "No")],
        )
        keys, ch.keys = ch.keys, ""
        if keys:
            self._later(ch, "keys", DTMF_DELAY_SECONDS, lambda: self.key_dtmf(ch, keys))
        for hook in list(ch.join_hooks):
            hook()

    def _leave(self, ch: Channel, result: str) -> None:
        """``ch`` leaves its room; end_marked users are kicked when no marked one is left.

        The kick happens a moment later (the bridge thread), so the leaving channel's
        own Hangups come first, and a Hangup already asked for a kicked channel wins.
        """
        room = ch.room
        if room is None:
            return
        member = room.member(ch)
        ch.room = None
        if member is None:
            return
        before = len(room.members) + 1
        if self.wants("ConfbridgeLeave"):
            self.emit(
                "ConfbridgeLeave",
                [("Conference", room.name), *room.block(before), *ch.block(), ("Admin", "No")],
            )
        room.members.remove(member)
        if self.wants("BridgeLeave"):
            self.emit("BridgeLeave", room.block(before - 1) + ch.block())
        ch.variables["CONFBRIDGE_RESULT"] = result
        if member.marked and not any(m.marked for m in room.members) and not self.shutting_down:
            for other in [m.channel for m in room.members if m.end_marked]:
                self._later(
                    other,
                    "kick",
                    SOFT_HANGUP_SECONDS,
                    partial(self.kick, other, "ENDMARKED"),
                )
        if not room.members and self._rooms.get(room.name) is room:
            del self._rooms[room.name]
            if self.wants("ConfbridgeEnd"):
                self.emit("ConfbridgeEnd", [("Conference", room.name), *room.block(1)])
            if self.wants("BridgeDestroy"):
                self.emit("BridgeDestroy", room.block(0))

    def kick(self, ch: Channel, result: str = "KICKED") -> None:
        """Take ``ch`` out of its room; the dialplan then hangs it up (``Hangup()``)."""
        self._leave(ch, result)
        if ch.alive:
            if ch.context == "cb-conf" and ch.exten in DIALPLAN["cb-conf"]:
                self._at(ch, ch.context, ch.exten, "Hangup")
            self.hangup(ch, 16)

    # -- hangup and other actions ----------------------------------------------------

    def _hangup_one(self, ch: Channel, cause: int) -> None:
        if not ch.alive:
            return
        if ch.room is not None:
            self._leave(ch, "HANGUP")
        ch.alive = False
        self._cancel_timers(ch)
        hooks, ch.hangup_hooks = ch.hangup_hooks, []
        for hook in hooks:
            hook()
        self.emit(
            "Hangup",
            ch.block() + [("Cause", str(cause)), ("Cause-txt", cause_text(cause))],
        )
        self._channels.pop(ch.uniqueid, None)

    def hangup(self, ch: Channel, cause: int = 16, peer_cause: int | None = None) -> None:
        """Hang ``ch`` up, then the other half of a Local channel, with ``cause``.

        As real-source_hangs_up.log: the far end's ``;2`` (cause 0), the ``;1`` (16),
        and only then the legs its leaving the room ends (end_marked ones).
        """
        if not ch.alive:
            return
        peer = ch.peer
        self._hangup_one(ch, cause)
        if peer is not None and peer.alive:
            self._hangup_one(peer, cause if peer_cause is None else peer_cause)

    def hangup_far_end(self, ch: Channel, cause: int = 0) -> None:
        """The far end of ``ch``'s leg hangs up (``channel request hangup`` on its ``;2``).

        A Local leg's ``;2`` half ends with ``cause`` (0, as the real one), its ``;1``
        with 16; a one-channel leg ends with ``cause`` (16 if 0).
        """
        two = ch.peer if ch.peer is not None and not ch.is_local_two else ch
        if two.peer is None:
            self.hangup(two, cause or 16)
        else:
            self.hangup(two, cause, peer_cause=16)

    def request_hangup(self, ch: Channel, cause: int | None = None) -> None:
        """An AMI Hangup: ``HangupRequest`` now, the hangup a moment later.

        The channel's own thread hangs it up (so two Hangup actions in a row both find
        their channels, as in real-two_legs_talk_hangup.log). Without a cause the
        channel ends with 16, except a Local ``;2`` half, which ends with 0 while its
        ``;1`` gets 16 (ami-two_legs_conf.log, regex hangup).
        """
        if not ch.alive:
            return
        own = cause if cause is not None else (0 if ch.is_local_two else 16)
        if self.wants("HangupRequest"):
            self.emit("HangupRequest", ch.block() + [("Cause", str(own))])
        peer_cause = 16 if cause is None else cause
        self._later(
            ch, "hangup-request", SOFT_HANGUP_SECONDS, lambda: self.hangup(ch, own, peer_cause)
        )

    def redirect(self, ch: Channel, context: str, exten: str, priority: str = "1") -> None:
        """Move ``ch`` to ``context,exten``: it leaves its room and runs the dialplan there."""
        self._cancel(ch, "dialplan")
        hooks, ch.redirect_hooks = ch.redirect_hooks, []
        for hook in hooks:
            hook()
        if ch.room is not None:
            self._leave(ch, "")
        self._goto(ch, context, exten)

    def absolute_timeout(self, ch: Channel, seconds: int) -> None:
        """Hang ``ch`` up with cause 16 after ``seconds`` (0 cancels)."""
        if seconds <= 0:
            self._cancel(ch, "absolute-timeout")
            return
        self._later(ch, "absolute-timeout", seconds, lambda: self.hangup(ch, 16))

    # -- restart ------------------------------------------------------------------

    def restart(self, down: float = 0.0) -> None:
        """``core restart now``, as real-asterisk_restart-conn1.log and -conn2.log.

        Every Local ``;2`` half hangs up (cause 0, newest first), then every other
        channel (cause 16, oldest first, 1 ms apart); actions are answered ``Asterisk is
        shutting down`` meanwhile; :data:`SHUTDOWN_SECONDS` later ``Event: Shutdown``
        (``Cleanly``, ``Restart: True``) goes out and the ``on_shutdown`` callbacks run
        (the AMI server closes its sessions). The new switch starts with no channels
        and accepts connections ``down`` seconds later (``FullyBooted`` with
        ``Uptime`` from then).
        """
        if self.shutting_down:
            return
        self.shutting_down = True
        chans = self.channels()
        for ch in reversed(chans):
            if ch.is_local_two:
                self._hangup_one(ch, 0)
        for i, ch in enumerate(c for c in chans if c.alive):
            self._later(
                ch, "shutdown", (i + 1) * SOFT_HANGUP_SECONDS, partial(self._hangup_one, ch, 16)
            )
        self.clock.callLater(SHUTDOWN_SECONDS * self.time_scale, self._shut_down, down)

    def _shut_down(self, down: float) -> None:
        self.emit("Shutdown", [("Shutdown", "Cleanly"), ("Restart", "True")], category="system")
        self.shutdown()
        for callback in list(self.on_shutdown):
            callback()
        self.started = self.clock.seconds() + down * self.time_scale
        self._seq = 0
        self.shutting_down = False

    @property
    def accepting(self) -> bool:
        """False while the switch is shutting down or not yet started again."""
        return not self.shutting_down and self.clock.seconds() >= self.started

    def getvar(self, variable: str, ch: Channel | None) -> str:
        """A variable or a supported function (``CONFBRIDGE_INFO``) of ``ch`` or the globals."""
        m = re.match(r"^CONFBRIDGE_INFO\(\s*(\w+)\s*,\s*([^)]*)\)$", variable, re.I)
        if m:
            kind, room = m.group(1).lower(), self._rooms.get(m.group(2).strip())
            if room is None:
                return "0"
            counts = {
                "parties": len(room.members),
                "marked": sum(1 for mm in room.members if mm.marked),
                "admins": 0,
                "locked": 0,
                "muted": 0,
            }
            return str(counts.get(kind, 0))
        if ch is None:
            return self.globals.get(variable, "")
        if variable.upper() == "CHANNEL":
            return ch.name
        if variable.upper() == "UNIQUEID":
            return ch.uniqueid
        return ch.variables.get(variable, "")

    def inbound_channel(self, caller_id: str, dialled: str, context: str) -> Channel:
        """A call from a trunk (``PJSIP/inbound-...``, ringing) to ``dialled``."""
        self._inbound_seq += 1
        uid = self._new_uniqueid()
        ch = self._channel(f"PJSIP/inbound-{self._inbound_seq:08x}", uid, uid, context, dialled)
        ch.caller_num, ch.caller_name = parse_caller_id(caller_id)
        ch.dialled = ch.dnid = dialled
        ch.state = 4
        self.emit("Newchannel", ch.block())
        return ch

    def setvar(self, variable: str, value: str, ch: Channel | None) -> None:
        """Set a channel variable (or a global without a channel)."""
        (self.globals if ch is None else ch.variables)[variable] = value
