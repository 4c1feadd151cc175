"""The production switch: :class:`~callbackd.switch.ISwitch` over the AMI client.

Follows docs/asterisk.rst, "One ConfBridge room per session": every leg
is an async ``Originate`` with a pre-assigned ``ChannelId`` into ``cb-conf``
(``wait-a`` for a source leg that hears ringback, ``leg-b`` for a leg that goes
straight into the room); ``join_room`` Redirects a waiting leg to ``leg-a``.

The AMI events of a leg are translated into the normalised events of
:mod:`callbackd.switch`, at most one of each kind per leg, stamped with the
event's own ``Timestamp``. Asterisk does not order events across sources
("Event orders"), so the translation is order-tolerant:

* answer instant = the first of ``Newstate`` 6, ``DialEnd ANSWER`` and
  ``OriginateResponse Success``;
* a leg that never answered fails once both its ``OriginateResponse`` and the
  ``Hangup`` of its channel are in (or a short settle time after either one):
  the outcome comes from ``Reason``, then the Hangup ``Cause``, then
  ``DialStatus`` (the Local-channel quirk hangs up busy legs with cause 0,
  see "Event orders"), and an unanswered leg's Hangup never becomes a :class:`LegHungUp`;
* events of the ``;2`` half of a Local channel, and of channels that are not
  ours, are ignored.

Besides the legs' events: ``UserEvent CbDtmf`` (``#11`` keyed in a room, from the
``cb-dtmf`` dialplan) becomes a :class:`RoomCommand`; the first sign that the switch
is going away (its ``Shutdown`` event, or an action refused with "Asterisk is shutting
down", which in the real transcript comes a second earlier) a :class:`SwitchShutdown`;
``FullyBooted`` tells when the switch (re)started (:attr:`AMISwitch.started_at`). The
health check says "restarting" or "shutting down" from a shutdown until the switch is
fully booted again (or carries out an action again: a graceful stop called off).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from callbackd.ami.client import AMIClientService
from callbackd.ami.message import AMIInjectionError, Message
from callbackd.ami.protocol import AMICommandFailure, AMIConnectionLost, AMIProtocol, AMITimeout
from callbackd.amievents import EXTRA_EVENTS, SWITCH_EVENTS
from callbackd.core.causes import (
    BUSY,
    CHANUNAVAIL,
    CONGESTION,
    DIAL_STATUS_OUTCOMES,
    FAILED,
    NOANSWER,
    cause_for_outcome,
    outcome_of_cause,
)
from callbackd.switch import (
    CHANNEL_ID,
    ROOM,
    ROOM_COMMANDS,
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
    SwitchEvent,
    SwitchShutdown,
    check_channel_id,
    check_request,
    check_room,
)

__all__ = ["AMISwitch", "failure_outcome"]

#: where each role's leg starts in the ``cb-conf`` context
EXTENSIONS = {"wait": "wait-a", "join": "leg-b", "ivr": "ivr-a"}
#: where ``join_room`` sends a waiting leg
JOIN_EXTEN = "leg-a"

#: the AMI events the translation needs (one list with the manager.conf filter's)
EVENTS = SWITCH_EVENTS
#: the events that name the leg in ``DestUniqueid`` / ``DestChannel`` (lower case)
DIAL_EVENTS = frozenset({"dialstate", "dialend"})

#: ``OriginateResponse`` Reason -> outcome (docs/asterisk.rst); 0 and 1 say nothing precise
REASON_OUTCOMES = {3: NOANSWER, 5: BUSY, 8: CONGESTION}
#: ``ChannelState`` -> ChannelInfo.state ("The channel block")
CHANNEL_STATES = {
    "0": "down",
    "1": "reserved",
    "2": "offhook",
    "3": "dialing",
    "4": "ring",
    "5": "ringing",
    "6": "up",
    "7": "busy",
    "8": "dialing",
    "9": "prering",
}

NOT_CONNECTED = "the switch is not reachable right now"
#: how Asterisk refuses every action once it is shutting down (lower case)
SHUTTING_DOWN = "asterisk is shutting down"
#: the ``UserEvent`` name of the ``cb-dtmf`` dialplan
DTMF_USER_EVENT = "cbdtmf"


def failure_outcome(
    reason: int | None, cause: int, dial_status: str | None, channel_seen: bool
) -> str:
    """The outcome of a leg that never answered, from whatever Asterisk told us.

    A precise ``Reason`` wins; then the channel's own Hangup cause (cause 0 of
    the Local quirk says nothing); then ``DialStatus``; a leg whose channel was
    never created is ``chanunavail``, anything else ``failed``.
    """
    if reason in REASON_OUTCOMES:
        return REASON_OUTCOMES[reason]
    outcome = outcome_of_cause(cause)
    if outcome is not None:
        return outcome
    if dial_status is not None and dial_status.upper() in DIAL_STATUS_OUTCOMES:
        return DIAL_STATUS_OUTCOMES[dial_status.upper()]
    return FAILED if channel_seen else CHANUNAVAIL


@dataclass(eq=False)
class _Leg:
    """What the switch knows of one leg while it lives."""

    channel_id: str
    room: str = ""
    channel_name: str = ""
    #: fired once Asterisk shows it accepted the Originate (None once fired)
    accepted: Deferred[None] | None = None
    channel_seen: bool = False
    ringing: bool = False
    answered: bool = False
    joined: bool = False
    response: str | None = None  # OriginateResponse Response: success / failure
    response_at: float | None = None
    reason: int | None = None
    dial_status: str | None = None
    hangup: tuple[float, int, str] | None = None  # at, cause, cause text
    settle: IDelayedCall | None = None


def _int(value: str | None, default: int = 0) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


def _duration(value: str | None) -> int:
    """Seconds of a ``CoreShowChannel`` ``Duration: HH:MM:SS`` (0 if unreadable)."""
    parts = (value or "").split(":")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        return 0
    hours, minutes, seconds = (int(p) for p in parts)
    return hours * 3600 + minutes * 60 + seconds


def _room_of(item: Message) -> str:
    """The ConfBridge room a ``CoreShowChannel`` item is in, or ``""``."""
    if (item.get("Application") or "").lower() != "confbridge":
        return ""
    room = (item.get("ApplicationData") or "").split(",", 1)[0]
    return room if ROOM.match(room) else ""


@implementer(ISwitch)
class AMISwitch:
    """ISwitch over an :class:`~callbackd.ami.client.AMIClientService`.

    :param client: the AMI connection; events are subscribed to at once (no I/O).
    :param clock: stamps events that carry no ``Timestamp`` and times the settling.
    :param context: the dialplan context of the legs (``[ami] context``).
    :param caller_id: CallerID for requests that bring none (``[ami] caller_id``).
    :param settle_timeout: seconds to wait for the missing half (OriginateResponse
        or Hangup) of an unanswered leg's end before reporting it with what is known.
    :param id_prefix: ``list_channels`` reports only channel ids starting with it.
    :param log_actions: log every Originate (at debug level); off, no log event is
        even built, which matters at hundreds of calls a second.
    """

    log = Logger()

    def __init__(
        self,
        client: AMIClientService,
        *,
        clock: IReactorTime,
        context: str = "cb-conf",
        caller_id: str = "",
        settle_timeout: float = 2.0,
        id_prefix: str = "",
        log_actions: bool = False,
    ) -> None:
        self.client = client
        self.clock = clock
        self.context = context
        self.caller_id = caller_id
        self.settle_timeout = settle_timeout
        self.id_prefix = id_prefix
        self.log_actions = log_actions
        self._legs: dict[str, _Leg] = {}
        #: lower-case event name -> what it means for a leg of ours
        self._handlers: dict[str, Callable[[_Leg, float, dict[str, str]], None]] = {
            "newstate": self._on_newstate,
            "dialstate": self._on_dial_state,
            "dialend": self._on_dial_end,
            "originateresponse": self._response,
            "confbridgejoin": self._on_confbridge_join,
            "hangup": self._hungup,
        }
        #: lower-case event name -> what it means for the switch as a whole
        self._system_handlers: dict[str, Callable[[float, dict[str, str]], None]] = {
            "userevent": self._on_user_event,
            "shutdown": self._on_shutdown,
            "fullybooted": self._on_fully_booted,
        }
        #: when the switch last (re)started (``FullyBooted`` ``Uptime``), None until known
        self.started_at: float | None = None
        #: "restarting" or "shutting down" from the first sign of a shutdown until the
        #: switch is fully booted again; "" otherwise
        self._going = ""
        self._listeners: list[Callable[[SwitchEvent], None]] = []
        for name in EVENTS:
            client.register_event(name, self.handle_event)
        for name in EXTRA_EVENTS:
            client.register_event(name, self.handle_system_event)
        client.add_connection_listener(self._connected, self._lost)

    def close(self) -> None:
        """Stop listening to the AMI client's events."""
        for name in EVENTS:
            self.client.deregister_event(name, self.handle_event)
        for name in EXTRA_EVENTS:
            self.client.deregister_event(name, self.handle_system_event)
        for leg in self._legs.values():
            self._cancel_settle(leg)

    @property
    def connected(self) -> bool:
        """True while the AMI session is logged in."""
        return bool(self.client.connected)

    @property
    def shutting_down(self) -> bool:
        """True from the first sign of a shutdown until the switch is fully booted again."""
        return bool(self._going)

    def health(self) -> tuple[bool, str]:
        """The health check's ``(ok, detail)``: logged in, and not shutting down."""
        if self._going:
            return False, f"switch {self._going}"
        if not self.connected:
            why = self.client.last_error
            return False, f"not connected ({why})" if why else "not connected"
        return True, "logged in"

    @property
    def legs(self) -> tuple[str, ...]:
        """The channel ids of the legs being followed (for the manhole and tests)."""
        return tuple(self._legs)

    def add_listener(self, listener: Callable[[SwitchEvent], None]) -> None:
        """Deliver every SwitchEvent to ``listener``."""
        self._listeners.append(listener)

    # --- requests -------------------------------------------------------------------

    def _protocol(self) -> AMIProtocol:
        protocol = self.client.protocol
        if protocol is None:
            raise SwitchError(NOT_CONNECTED)
        return protocol

    def originate(self, request: OriginateRequest) -> Deferred[None]:
        """Originate one leg into the session's room; fires once Asterisk took it."""
        try:
            check_request(request)
            if request.channel_id in self._legs:
                raise SwitchError(f"leg {request.channel_id} is already in use")
            protocol = self._protocol()
        except SwitchError:
            return fail()
        accepted: Deferred[None] = Deferred()
        leg = _Leg(request.channel_id, request.room, accepted=accepted)
        self._legs[leg.channel_id] = leg
        if self.log_actions:
            self.log.debug(
                "originate {channel_id} ({role}) to {channel} for room {room}",
                channel_id=request.channel_id,
                role=request.role,
                channel=request.channel,
                room=request.room,
            )
        result = protocol.originate(
            request.channel,
            context=self.context,
            exten=EXTENSIONS[request.role],
            priority="1",
            timeout_ms=request.timeout * 1000,
            caller_id=request.caller_id or self.caller_id or None,
            variables=[("CB_ROOM", request.room), *request.variables],
            channel_id=request.channel_id,
            other_channel_id=f"{request.channel_id}-2",
        )
        result.addCallbacks(
            lambda response: self._originate_answered(leg, response),
            lambda failure: self._originate_failed(leg, failure),
        )
        return accepted

    def hangup(self, channel_id: str, cause: int = 16) -> Deferred[None]:
        """Hang a leg up by its id; a leg that is already gone counts as done."""
        try:
            check_channel_id(channel_id)
            protocol = self._protocol()
        except SwitchError:
            return fail()

        def already_gone(failure: Failure) -> Failure | None:
            if failure.check(AMICommandFailure) and "no such channel" in (
                failure.getErrorMessage().lower()
            ):
                return None
            refused = self._refused(f"hang up leg {channel_id}", failure)
            # a switch shutting down hangs every channel up itself
            return None if self._going else refused

        d = protocol.hangup(channel_id, cause)
        return d.addCallbacks(self._carried_out, already_gone)

    def join_room(self, channel_id: str, room: str) -> Deferred[None]:
        """Move a waiting leg into ``room`` (Redirect to ``leg-a``)."""
        return self._redirect(channel_id, room, JOIN_EXTEN, "move leg {} to its room")

    def return_to_ivr(self, channel_id: str, room: str) -> Deferred[None]:
        """Move an IVR session's source back from ``room`` to the IVR (Redirect to
        ``ivr-a``)."""
        return self._redirect(channel_id, room, EXTENSIONS["ivr"], "return leg {} to the IVR")

    def _redirect(self, channel_id: str, room: str, exten: str, what: str) -> Deferred[None]:
        try:
            check_channel_id(channel_id)
            check_room(room)
            protocol = self._protocol()
        except SwitchError:
            return fail()
        leg = self._legs.get(channel_id)

        def redirect(_: object) -> Deferred[Message]:
            if leg is not None:
                leg.room = room
            return protocol.redirect(channel_id, self.context, exten, "1")

        if leg is not None and leg.room == room:
            d = redirect(None)
        else:
            # the leg was originated for another room, or before a restart: say where to go
            d = protocol.setvar("CB_ROOM", room, channel=channel_id).addCallback(redirect)
        return d.addCallbacks(
            self._carried_out, lambda f: self._refused(what.format(channel_id), f)
        )

    def set_absolute_timeout(self, channel_id: str, seconds: int) -> Deferred[None]:
        """Have Asterisk hang the leg up ``seconds`` from now (0 cancels)."""
        try:
            check_channel_id(channel_id)
            if not isinstance(seconds, int) or seconds < 0:
                raise SwitchError(f"invalid timeout {seconds!r}")
            protocol = self._protocol()
        except SwitchError:
            return fail()
        d = protocol.absolute_timeout(channel_id, seconds)
        return d.addCallbacks(
            self._carried_out, lambda f: self._refused(f"limit leg {channel_id}", f)
        )

    def list_channels(self) -> Deferred[list[ChannelInfo]]:
        """Every live leg of ours Asterisk reports (``;2`` halves and foreign channels skipped).

        The legs reported are followed from then on (so a leg that outlived a
        daemon restart still reports its Hangup), and legs followed but no longer
        reported are forgotten.
        """
        try:
            protocol = self._protocol()
        except SwitchError:
            return fail()
        d = protocol.core_show_channels()
        return d.addCallbacks(self._channels, lambda f: self._refused("list the channels", f))

    def _channels(self, items: list[Message]) -> list[ChannelInfo]:
        found: list[ChannelInfo] = []
        for item in items:
            channel_id = item.get("Uniqueid") or ""
            name = item.get("Channel") or ""
            if (
                not CHANNEL_ID.match(channel_id)
                or not channel_id.startswith(self.id_prefix)
                or name.endswith(";2")
            ):
                continue
            state = CHANNEL_STATES.get(item.get("ChannelState") or "", "unknown")
            leg = self._legs.get(channel_id)
            if leg is None:
                leg = _Leg(
                    channel_id,
                    _room_of(item),
                    channel_name=name,
                    channel_seen=True,
                    ringing=state in ("ring", "ringing"),
                    answered=state == "up",
                )
                self._legs[channel_id] = leg
            found.append(
                ChannelInfo(
                    channel_id=channel_id,
                    channel_name=name,
                    state=state,
                    room=leg.room or _room_of(item),
                    seconds=_duration(item.get("Duration")),
                )
            )
        listed = {info.channel_id for info in found}
        for channel_id, leg in list(self._legs.items()):
            if channel_id not in listed and leg.channel_seen and leg.accepted is None:
                self.log.info("leg {channel_id} is gone from the switch", channel_id=channel_id)
                self._forget(leg)
        return found

    def _carried_out(self, _: object) -> None:
        """An action succeeded: the switch is not shutting down (any more).

        A switch shutting down refuses every action until it is gone, unless its
        operator called a graceful stop off again; then nothing else would say so.
        """
        self._going = ""

    def _refused(self, what: str, failure: Failure) -> Failure:
        """A SwitchError fit for users for a failed AMI action (the details are logged)."""
        if failure.check(AMICommandFailure):
            text = failure.getErrorMessage()
            if SHUTTING_DOWN in text.lower():
                # the first sign of a shutdown: a second before its Shutdown event
                if not self._going:
                    self.log.warn("switch shutting down (it refused to {what})", what=what)
                self._shutting_down(self.clock.seconds(), restart=False)
                return Failure(SwitchError(f"the switch refused to {what}: {text}"))
            self.log.warn("switch refused to {what}: {text}", what=what, text=text)
            return Failure(SwitchError(f"the switch refused to {what}: {text}"))
        if failure.check(AMITimeout):
            self.log.warn("switch did not answer in time: {what}", what=what)
            return Failure(SwitchError(f"the switch did not answer in time ({what})"))
        if failure.check(AMIConnectionLost):
            return Failure(SwitchError(f"{NOT_CONNECTED} ({what})"))
        if failure.check(AMIInjectionError, ValueError):
            return Failure(SwitchError(f"invalid request ({what}): {failure.getErrorMessage()}"))
        if failure.check(SwitchError):
            return failure
        self.log.failure("switch could not {what}", failure, what=what)
        return Failure(SwitchError(f"the switch could not {what}"))

    # --- the Originate's own result --------------------------------------------------

    def _originate_answered(self, leg: _Leg, response: Message) -> None:
        if self._legs.get(leg.channel_id) is leg:
            self._accept(leg)
            headers = response.headers()
            self._response(leg, self._timestamp(headers), headers)

    def _originate_failed(self, leg: _Leg, failure: Failure) -> None:
        if self._legs.get(leg.channel_id) is not leg:
            return  # the leg ended already; nothing left to tell
        if leg.accepted is not None:
            # refused outright: the session never hears of this leg again
            accepted, leg.accepted = leg.accepted, None
            self._forget(leg)
            accepted.errback(self._refused(f"call leg {leg.channel_id}", failure))
        elif failure.check(AMITimeout):
            self.log.warn("no OriginateResponse for leg {channel_id}", channel_id=leg.channel_id)
            if not leg.answered:
                self._fail(leg)
        elif failure.check(AMIConnectionLost):
            self.log.info(
                "AMI connection lost while leg {channel_id} was being called; "
                "its outcome comes from the reconciliation",
                channel_id=leg.channel_id,
            )
        else:
            self.log.failure("originate of leg {channel_id}", failure, channel_id=leg.channel_id)

    # --- event translation -----------------------------------------------------------

    def handle_event(self, event: Message) -> None:
        """Translate one AMI event; events of channels that are not ours are ignored."""
        name = event.name.lower()
        headers = event.headers()
        if name in DIAL_EVENTS:
            channel_id, channel_key = headers.get("destuniqueid"), "destchannel"
        else:
            channel_id, channel_key = headers.get("uniqueid"), "channel"
        leg = self._legs.get(channel_id) if channel_id else None
        if leg is None:
            return
        at = self._timestamp(headers)
        self._accept(leg)
        if name != "originateresponse":
            leg.channel_seen = True
            leg.channel_name = headers.get(channel_key) or leg.channel_name
        handler = self._handlers.get(name)
        if handler is not None:
            handler(leg, at, headers)

    def handle_system_event(self, event: Message) -> None:
        """Translate one event of the switch as a whole (not of one leg)."""
        headers = event.headers()
        handler = self._system_handlers.get(event.name.lower())
        if handler is not None:
            handler(self._timestamp(headers), headers)

    def _on_user_event(self, at: float, headers: dict[str, str]) -> None:
        if (headers.get("userevent") or "").lower() != DTMF_USER_EVENT:
            return
        room = headers.get("cbroom") or ""
        command = headers.get("cbcmd") or ""
        channel_id = headers.get("uniqueid") or ""
        leg = self._legs.get(channel_id)
        if leg is None or not ROOM.match(room) or leg.room != room:
            self.log.warn(
                "ignored CbDtmf for room {room!r} from a channel not in it: {channel_id!r}",
                room=room,
                channel_id=channel_id,
            )
        elif command not in ROOM_COMMANDS:
            self.log.warn(
                "ignored unknown room command {command!r} in room {room}",
                command=command,
                room=room,
            )
        else:
            self._emit(RoomCommand(room, command, at, channel_id))

    def _on_shutdown(self, at: float, headers: dict[str, str]) -> None:
        restart = (headers.get("restart") or "").lower() in ("true", "yes", "1")
        self.log.warn(
            "switch shutting down ({how}{restart})",
            how=headers.get("shutdown") or "?",
            restart=", restarting" if restart else "",
        )
        self._shutting_down(at, restart)

    def _on_fully_booted(self, at: float, headers: dict[str, str]) -> None:
        uptime = _int(headers.get("uptime"), -1)
        if uptime >= 0:
            self.started_at = self.clock.seconds() - uptime
        self.log.info("switch fully booted (up {uptime} s)", uptime=uptime)
        self._going = ""

    def _shutting_down(self, at: float, restart: bool) -> None:
        """Report the shutdown once; a later sign only says whether it restarts."""
        first = not self._going
        if restart or first:
            self._going = "restarting" if restart else "shutting down"
        if first:
            self._emit(SwitchShutdown(at, restart))

    def _on_newstate(self, leg: _Leg, at: float, headers: dict[str, str]) -> None:
        state = headers.get("channelstate")
        if state == "5":
            self._ringing(leg, at)
        elif state == "6":
            self._answered(leg, at)

    def _on_dial_state(self, leg: _Leg, at: float, headers: dict[str, str]) -> None:
        if headers.get("dialstatus", "").upper() == "RINGING":
            self._ringing(leg, at)

    def _on_dial_end(self, leg: _Leg, at: float, headers: dict[str, str]) -> None:
        status = headers.get("dialstatus", "").upper()
        if status == "ANSWER":
            self._answered(leg, at)
        else:
            leg.dial_status = status

    def _on_confbridge_join(self, leg: _Leg, at: float, headers: dict[str, str]) -> None:
        self._answered(leg, at)
        self._joined(leg, at, headers.get("conference") or leg.room)

    def _timestamp(self, headers: dict[str, str]) -> float:
        """The event's own ``Timestamp``, or now when it has none (or an unreadable one)."""
        value = headers.get("timestamp")
        if value is not None:
            try:
                return float(value)
            except ValueError:
                pass
        return self.clock.seconds()

    def _accept(self, leg: _Leg) -> None:
        if leg.accepted is not None:
            accepted, leg.accepted = leg.accepted, None
            accepted.callback(None)

    def _ringing(self, leg: _Leg, at: float) -> None:
        if not (leg.ringing or leg.answered):
            leg.ringing = True
            self._emit(LegRinging(leg.channel_id, at))

    def _answered(self, leg: _Leg, at: float) -> None:
        if leg.answered:
            return
        leg.answered = True
        self._cancel_settle(leg)
        self._emit(LegAnswered(leg.channel_id, at, leg.channel_name))
        if leg.hangup is not None:
            # the Hangup overtook the answer
            self._end(leg)

    def _joined(self, leg: _Leg, at: float, room: str) -> None:
        if not leg.joined:
            leg.joined = True
            self._emit(LegJoined(leg.channel_id, at, room))

    def _response(self, leg: _Leg, at: float, headers: dict[str, str]) -> None:
        if leg.response is not None:
            return
        leg.response = (headers.get("response") or "").lower()
        if leg.response == "success":
            leg.channel_name = headers.get("channel") or leg.channel_name
            self._answered(leg, at)
        else:
            leg.response = "failure"
            leg.reason = _int(headers.get("reason"))
            leg.response_at = at
            self._check_failed(leg)

    def _hungup(self, leg: _Leg, at: float, headers: dict[str, str]) -> None:
        if leg.hangup is not None:
            return
        leg.hangup = (at, _int(headers.get("cause")), headers.get("cause-txt") or "")
        if leg.answered:
            self._end(leg)
        else:
            self._check_failed(leg)

    def _check_failed(self, leg: _Leg) -> None:
        """Report an unanswered leg's failure once enough is known, or settle for less."""
        if leg.answered:
            return
        if leg.response == "failure" and (leg.hangup is not None or not leg.channel_seen):
            self._fail(leg)
        elif leg.settle is None:
            leg.settle = self.clock.callLater(self.settle_timeout, self._settled, leg)

    def _settled(self, leg: _Leg) -> None:
        leg.settle = None
        if self._legs.get(leg.channel_id) is leg and not leg.answered:
            self._fail(leg)

    def _fail(self, leg: _Leg) -> None:
        cause = leg.hangup[1] if leg.hangup is not None else 0
        outcome = failure_outcome(leg.reason, cause, leg.dial_status, leg.channel_seen)
        at = leg.response_at
        if at is None:
            at = leg.hangup[0] if leg.hangup is not None else self.clock.seconds()
        self._forget(leg)
        self._emit(LegFailed(leg.channel_id, at, outcome, cause or cause_for_outcome(outcome)))

    def _end(self, leg: _Leg) -> None:
        assert leg.hangup is not None
        at, cause, text = leg.hangup
        self._forget(leg)
        self._emit(LegHungUp(leg.channel_id, at, cause, text))

    def _forget(self, leg: _Leg) -> None:
        self._cancel_settle(leg)
        if self._legs.get(leg.channel_id) is leg:
            del self._legs[leg.channel_id]

    @staticmethod
    def _cancel_settle(leg: _Leg) -> None:
        if leg.settle is not None:
            if leg.settle.active():
                leg.settle.cancel()
            leg.settle = None

    # --- connection ------------------------------------------------------------------

    def _connected(self, protocol: AMIProtocol) -> None:
        self._emit(SwitchConnected(self.clock.seconds()))

    def _lost(self, reason: Failure) -> None:
        self._emit(SwitchDisconnected(self.clock.seconds(), reason.getErrorMessage()))

    def _emit(self, event: SwitchEvent) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                self.log.failure("switch listener {listener!r} failed", listener=listener)

    def __repr__(self) -> str:
        return f"<AMISwitch {self.client!r} legs={len(self._legs)}>"
