"""The AMI server side of the simulated Asterisk: one session per TCP connection.

Framing and answers follow Asterisk 22's manager.c: the banner line, lines ended
by CRLF or a bare LF, a message ended by an empty line, a line of 1024 bytes or more
discarded and the action answered ``Failed to parse message: line too long``, header
names matched case-insensitively with the first occurrence winning. Before login only
``Login``, ``Logoff`` and ``Challenge`` run; with ``allowmultiplelogin = no`` (the
default, as callbackd's manager.conf) a ``Login`` or ``Challenge`` naming a user who is
logged in on another session is answered ``Login Already In Use`` after 1 s and the
connection closed. While the switch restarts every action is answered ``Asterisk is
shutting down``; after its ``Shutdown`` event every session is closed, and connections
are refused until the switch is up again.

The factory's ``event_filter`` is manager.conf's include filter for the user
(``eventfilter(name(X)) =`` lines): a session gets a queued event only if its
``Event`` name is listed. Action responses, list responses (their items and
``...Complete`` events) and the ``FullyBooted`` at login are never filtered, as in
Asterisk.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Callable, Collection
from typing import Any

from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger

from callbackd.ami.message import Message
from callbackd.simulator.asterisk import (
    OriginateError,
    OriginateRequest,
    SimulatedAsterisk,
    split_variables,
)
from callbackd.simulator.control import control_handlers

__all__ = ["BANNER", "AMIServerFactory", "AMIServerProtocol", "parse_event_mask"]

BANNER = b"Asterisk Call Manager/11.0.0\r\n"
#: Asterisk's ``inbuf[1025]``: a line this long (without its line end) is discarded.
MAX_LINE = 1024
MAX_HEADERS = 128
Pairs = list[tuple[str, str]]

_CLASSES = {
    "system": 1,
    "call": 2,
    "log": 4,
    "verbose": 8,
    "command": 16,
    "agent": 32,
    "user": 64,
    "config": 128,
    "dtmf": 256,
    "reporting": 512,
    "cdr": 1024,
    "dialplan": 2048,
    "originate": 4096,
    "agi": 8192,
}
#: What callbackd's AMI user may read (manager.conf ``read = system,call,user``).
READ_CLASSES = frozenset({"system", "call", "user"})


def parse_event_mask(text: str) -> frozenset[str] | None:
    """An ``Events``/``EventMask`` value as a set of classes; None if invalid."""
    value = text.strip().lower()
    if value in ("on", "yes", "true", "all"):
        return READ_CLASSES
    if value in ("off", "no", "false", ""):
        return frozenset()
    if value.isdigit():
        bits = int(value)
        return frozenset(n for n, b in _CLASSES.items() if bits & b) & READ_CLASSES
    names = {p.strip() for p in value.split(",") if p.strip()}
    if not names <= set(_CLASSES):
        return None
    return frozenset(names) & READ_CLASSES


def _wire(pairs: Pairs) -> bytes:
    # Not encode_message: a server echoes whatever a client sent (up to 1023 bytes a
    # line, as Asterisk does); parsed values cannot hold CR or LF.
    return ("".join(f"{k}: {v}\r\n" for k, v in pairs) + "\r\n").encode("utf-8", "replace")


class AMIServerProtocol(Protocol):
    """One AMI session of the simulated Asterisk."""

    log = Logger()

    def __init__(self, factory: AMIServerFactory) -> None:
        self.factory = factory
        self.switch = factory.switch
        self.authenticated = False
        self.username = ""
        self.events: frozenset[str] = frozenset()
        self._challenge: str | None = None
        self._closing = False
        self._buffer = b""
        self._discarding = False
        self._pairs: Pairs = []
        self._too_long = False
        self._handlers: dict[str, Callable[[Message, Pairs], None]] = {
            "login": self._login,
            "challenge": self._challenge_action,
            "logoff": self._logoff,
            "ping": self._ping,
            "events": self._events,
            "originate": self._originate,
            "hangup": self._hangup,
            "redirect": self._redirect,
            "absolutetimeout": self._absolute_timeout,
            "getvar": self._getvar,
            "setvar": self._setvar,
            "confbridgekick": self._confbridge_kick,
            "confbridgelist": self._confbridge_list,
            "confbridgelistrooms": self._confbridge_list_rooms,
            "coreshowchannels": self._core_show_channels,
            "status": self._status,
            "playdtmf": self._play_dtmf,
            "userevent": self._user_event_action,
            # the simulator's own actions, driving its FastAGI side
            **control_handlers(self),
        }

    # -- connection -------------------------------------------------------------

    def connectionMade(self) -> None:
        assert self.transport is not None
        if not self.switch.accepting:
            # Not listening (restarting): the connection goes as soon as it came.
            self._closing = True
            self.transport.loseConnection()
            return
        self.factory.sessions.add(self)
        self.transport.write(BANNER)

    def connectionLost(self, reason: Any = None) -> None:
        self.factory.sessions.discard(self)
        self._closing = True

    def send(self, pairs: Pairs) -> None:
        """Write one message."""
        if not self._closing and self.transport is not None:
            self.transport.write(_wire(pairs))

    def deliver_event(self, category: str, pairs: Pairs) -> None:
        """Write an event if this session is logged in and wants its class."""
        if self.authenticated and category in self.events:
            self.send(pairs)

    def close(self) -> None:
        """Stop processing input and close the connection after pending writes."""
        self._closing = True
        if self.transport is not None:
            self.transport.loseConnection()

    # -- framing -----------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        buf = self._buffer + data
        while not self._closing:
            end = buf.find(b"\n")
            if end < 0:
                break
            raw, buf = buf[:end], buf[end + 1 :]
            if self._discarding:
                self._discarding = False
                continue
            self._line(raw)
        if len(buf) >= MAX_LINE:
            # No line end within the buffer: discard up to the next LF (get_input).
            self._too_long = True
            self._discarding = True
            buf = b""
        self._buffer = buf

    def _line(self, raw: bytes) -> None:
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if len(raw) >= MAX_LINE:
            self._too_long = True
            return
        if not raw:
            if self._pairs or self._too_long:
                pairs, self._pairs = self._pairs, []
                too_long, self._too_long = self._too_long, False
                self._message(Message(pairs), too_long)
            return
        line = raw.decode("utf-8", "replace")
        key, sep, value = line.partition(":")
        # A line without a colon can never match a header; keep it only for counting.
        self._pairs.append((key if sep else "", value.lstrip(" ") if sep else line))

    # -- dispatch ----------------------------------------------------------------

    def _reply(self, msg: Message, response: str, *extra: tuple[str, str]) -> Pairs:
        pairs: Pairs = [("Response", response)]
        action_id = msg.get("ActionID")
        if action_id is not None:
            pairs.append(("ActionID", action_id))
        pairs.extend(extra)
        return pairs

    def _error(self, msg: Message, text: str) -> None:
        self.send(self._reply(msg, "Error", ("Message", text)))

    def _success(self, msg: Message, text: str | None = None, *extra: tuple[str, str]) -> None:
        pairs = self._reply(msg, "Success")
        if text is not None:
            pairs.append(("Message", text))
        self.send(pairs + list(extra))

    def _message(self, msg: Message, too_long: bool) -> None:
        if too_long:
            self._error(msg, "Failed to parse message: line too long")
            return
        if len(msg) > MAX_HEADERS:
            self._error(msg, "Too many lines in message or allocation failure")
            return
        action = (msg.get("Action") or "").strip()
        if not action:
            self._error(msg, "Missing action in request")
            return
        name = action.lower()
        if self.switch.shutting_down:
            self._error(msg, "Asterisk is shutting down")
            return
        if not self.authenticated and name not in ("login", "logoff", "challenge"):
            self._error(msg, "Permission denied")
            return
        if not self.authenticated and name in ("login", "challenge"):
            username = msg.get("Username") or ""
            if username and self.factory.in_use(username):
                self._refuse(msg, "Login Already In Use")
                return
        handler = self._handlers.get(name)
        if handler is None:
            self._error(
                msg,
                f"Invalid/unknown command: {action}. "
                "Use Action: ListCommands to show available commands.",
            )
            return
        handler(msg, [])

    def _list(self, msg: Message, start_text: str, items: list[Pairs], complete: str) -> None:
        self._success(msg, None, ("EventList", "start"), ("Message", start_text))
        action_id = msg.get("ActionID")
        aid: Pairs = [] if action_id is None else [("ActionID", action_id)]
        for item in items:
            self.send(item[:1] + aid + item[1:])
        self.send(
            [("Event", complete), *aid, ("EventList", "Complete"), ("ListItems", str(len(items)))]
        )

    # -- login -------------------------------------------------------------------

    def _login(self, msg: Message, _: Pairs) -> None:
        if self.authenticated:
            self._success(msg, "Already authenticated")
            return
        factory = self.factory
        username = msg.get("Username") or ""
        secret = factory.users.get(username)
        user_ok = secret is not None
        if (msg.get("AuthType") or "").lower() == "md5":
            expected = hashlib.md5(((self._challenge or "") + (secret or "")).encode()).hexdigest()
            ok = user_ok and self._challenge is not None and msg.get("Key") == expected
        else:
            ok = user_ok and msg.get("Secret") == secret
        if not ok:
            self.log.info("simulated AMI login failed for {username}", username=msg.get("Username"))
            self._refuse(msg, "Authentication failed")
            return
        mask = parse_event_mask(msg.get("Events") or "on")
        self.events = READ_CLASSES if mask is None else mask
        self.authenticated = True
        self.username = username
        self._success(msg, "Authentication accepted")
        if "system" in self.events:
            up = str(self.switch.uptime())
            self.send(
                [
                    ("Event", "FullyBooted"),
                    ("Privilege", "system,all"),
                    ("Uptime", up),
                    ("LastReload", up),
                    ("Status", "Fully Booted"),
                ]
            )

    def _refuse(self, msg: Message, text: str) -> None:
        """Stop reading, answer ``Error``/``text`` after 1 s (as Asterisk), then close."""
        self._closing = True

        def refuse() -> None:
            self._closing = False
            self._error(msg, text)
            self.close()

        self.factory.clock.callLater(1.0, refuse)

    def _challenge_action(self, msg: Message, _: Pairs) -> None:
        if (msg.get("AuthType") or "").lower() != "md5":
            self._error(msg, "Must specify AuthType")
            return
        if self._challenge is None:
            self._challenge = str(random.SystemRandom().randrange(10**8, 10**9))
        self._success(msg, None, ("Challenge", self._challenge))

    def _logoff(self, msg: Message, _: Pairs) -> None:
        self.send(self._reply(msg, "Goodbye", ("Message", "Thanks for all the fish.")))
        self.close()

    def _ping(self, msg: Message, _: Pairs) -> None:
        self._success(msg, None, ("Ping", "Pong"), ("Timestamp", self.switch.timestamp()))

    def _events(self, msg: Message, _: Pairs) -> None:
        mask = parse_event_mask(msg.get("EventMask") or "")
        if mask is None:
            self._error(msg, "Invalid event mask")
            return
        self.events = mask
        self._success(msg, None, ("Events", "On" if mask else "Off"))

    # -- calls -------------------------------------------------------------------

    def _originate(self, msg: Message, _: Pairs) -> None:
        channel = msg.get("Channel") or ""
        if not channel:
            self._error(msg, "Channel not specified")
            return
        timeout_text = (msg.get("Timeout") or "30000").strip()
        if not re.fullmatch(r"\d+", timeout_text):
            self._error(msg, "Invalid timeout")
            return
        req = OriginateRequest(
            channel=channel,
            context=msg.get("Context") or "",
            exten=msg.get("Exten") or "",
            priority=msg.get("Priority") or "1",
            application=msg.get("Application") or "",
            data=msg.get("Data") or "",
            timeout_ms=int(timeout_text),
            caller_id=msg.get("CallerID"),
            variables=split_variables(msg.get_all("Variable")),
            channel_id=msg.get("ChannelId") or "",
            other_channel_id=msg.get("OtherChannelId") or "",
            account=msg.get("Account") or "",
            action_id=msg.get("ActionID"),
        )
        if not req.application and not re.fullmatch(r"\d+", req.priority.strip()):
            self._error(msg, "Invalid priority")
            return
        is_async = (msg.get("Async") or "").lower() in ("true", "yes", "1", "on")
        try:
            if is_async:
                self.switch.originate(req)
                self._success(msg, "Originate successfully queued")
            else:

                def result(success: bool) -> None:
                    if success:
                        self._success(msg, "Originate successfully queued")
                    else:
                        self._error(msg, "Originate failed")

                # A synchronous Originate answers only when the call is decided.
                self.switch.originate(req, on_result=result)
        except OriginateError as e:
            self._error(msg, e.message)

    def _find(self, msg: Message, header: str = "Channel") -> Any:
        name = msg.get(header) or ""
        return self.switch.find_channel(name) if name else None

    def _hangup(self, msg: Message, _: Pairs) -> None:
        name = (msg.get("Channel") or "").strip()
        if not name:
            self._error(msg, "No channel specified")
            return
        cause_text = (msg.get("Cause") or "").strip()
        cause = int(cause_text) if cause_text.isdigit() and int(cause_text) < 128 else None
        if len(name) > 2 and name.startswith("/") and name.endswith("/"):
            try:
                regex = re.compile(name[1:-1])
            except re.error:
                self._error(msg, "Invalid regex")
                return
            # Newest first, as Asterisk walks its channel container.
            matched = [ch for ch in reversed(self.switch.channels()) if regex.search(ch.name)]
            items = [[("Event", "ChannelHungup"), ("Channel", ch.name)] for ch in matched]
            started = ("Message", "Channels hung up will follow")
            self._success(msg, None, ("EventList", "start"), started)
            aid = msg.get("ActionID")
            for item in items:
                self.send(item + ([] if aid is None else [("ActionID", aid)]))
            done: Pairs = [("Event", "ChannelsHungupListComplete")]
            done += [] if aid is None else [("ActionID", aid)]
            self.send(done + [("EventList", "Complete"), ("ListItems", str(len(items)))])
            for ch in matched:
                self.switch.request_hangup(ch, cause)
            return
        target = self.switch.find_channel(name)
        if target is None:
            self._error(msg, "No such channel")
            return
        self._success(msg, "Channel Hungup")
        self.switch.request_hangup(target, cause)

    def _redirect(self, msg: Message, _: Pairs) -> None:
        name = msg.get("Channel") or ""
        if not name:
            self._error(msg, "Channel not specified")
            return
        priority = (msg.get("Priority") or "").strip()
        if not priority.isdigit():
            self._error(msg, "Invalid priority")
            return
        ch = self.switch.find_channel(name)
        if ch is None:
            self._error(msg, f"Channel does not exist: {name}")
            return
        self._success(msg, "Redirect successful")
        self.switch.redirect(ch, msg.get("Context") or "", msg.get("Exten") or "", priority)

    def _absolute_timeout(self, msg: Message, _: Pairs) -> None:
        ch = self._find(msg)
        if ch is None:
            self._error(msg, "No such channel")
            return
        timeout = (msg.get("Timeout") or "0").strip()
        seconds = int(timeout) if timeout.isdigit() else 0
        self.switch.absolute_timeout(ch, seconds)
        self._success(msg, "Timeout Set")

    def _variable_target(self, msg: Message) -> tuple[str, Any] | None:
        """Getvar/Setvar's variable and channel (None = global); None after an Error."""
        variable = msg.get("Variable") or ""
        if not variable:
            self._error(msg, "No variable specified")
            return None
        ch = None
        if msg.get("Channel"):
            ch = self._find(msg)
            if ch is None:
                self._error(msg, "No such channel")
                return None
        return variable, ch

    def _getvar(self, msg: Message, _: Pairs) -> None:
        target = self._variable_target(msg)
        if target is not None:
            variable, ch = target
            value = self.switch.getvar(variable, ch)
            self._success(msg, None, ("Variable", variable), ("Value", value))

    def _setvar(self, msg: Message, _: Pairs) -> None:
        target = self._variable_target(msg)
        if target is not None:
            variable, ch = target
            self.switch.setvar(variable, msg.get("Value") or "", ch)
            self._success(msg, "Variable Set")

    def _play_dtmf(self, msg: Message, _: Pairs) -> None:
        ch = self._find(msg)
        if ch is None:
            self._error(msg, "Channel not found")
            return
        digit = msg.get("Digit") or ""
        if not digit:
            self._error(msg, "No digit specified")
            return
        self._success(msg, "DTMF successfully queued")
        if (msg.get("Receive") or "").lower() in ("true", "yes", "1", "on"):
            self.switch.dtmf_received(ch, digit[0])

    def _user_event_action(self, msg: Message, _: Pairs) -> None:
        name = msg.get("UserEvent") or ""
        if not name:
            self._error(msg, "No UserEvent specified")
            return
        body = [(k, v) for k, v in msg if k and k.lower() not in ("action", "userevent")]
        self._success(msg, "Event Sent")
        self.switch.emit("UserEvent", [("UserEvent", name), *body], category="user")

    # -- ConfBridge and lists ------------------------------------------------------

    def _confbridge_kick(self, msg: Message, _: Pairs) -> None:
        conference = msg.get("Conference") or ""
        channel = msg.get("Channel") or ""
        if not conference:
            self._error(msg, "No Conference name provided.")
            return
        if not channel:
            self._error(msg, "No channel name provided.")
            return
        room = self.switch.room(conference)
        if room is None:
            self._error(msg, "No Conference by that name found.")
            return
        low = channel.lower()
        if low in ("all", "participants"):
            targets = list(room.members)
            text = "All participants kicked"
        else:
            # strcasecmp on the channel name only: a Uniqueid does not work.
            targets = [m for m in room.members if m.channel.name.lower() == low]
            text = "User kicked"
        if not targets:
            self._error(msg, "No Channel by that name found in Conference.")
            return
        self._success(msg, text)
        for member in targets:
            self.switch.kick(member.channel)

    def _confbridge_list(self, msg: Message, _: Pairs) -> None:
        conference = msg.get("Conference") or ""
        if not conference:
            self._error(msg, "No Conference name provided.")
            return
        if not self.switch.rooms():
            self._error(msg, "No active conferences.")
            return
        room = self.switch.room(conference)
        if room is None:
            self._error(msg, "No Conference by that name found.")
            return
        now = self.switch.clock.seconds()
        yes_no = {True: "Yes", False: "No"}
        items = [
            [
                ("Event", "ConfbridgeList"),
                ("Conference", room.name),
                ("Admin", "No"),
                ("MarkedUser", yes_no[m.marked]),
                ("WaitMarked", "No"),
                ("EndMarked", yes_no[m.end_marked]),
                ("EndMarkedAny", "No"),
                ("Waiting", "No"),
                ("Muted", "No"),
                ("Talking", "No"),
                ("AnsweredTime", str(int(now - m.channel.created))),
                *m.channel.block(),
            ]
            for m in room.members
        ]
        self._list(msg, "Confbridge user list will follow", items, "ConfbridgeListComplete")

    def _confbridge_list_rooms(self, msg: Message, _: Pairs) -> None:
        rooms = self.switch.rooms()
        if not rooms:
            self._error(msg, "No active conferences.")
            return
        items = []
        for name in rooms:
            room = self.switch.room(name)
            assert room is not None
            items.append(
                [
                    ("Event", "ConfbridgeListRooms"),
                    ("Conference", name),
                    ("Parties", str(len(room.members))),
                    ("Marked", str(sum(1 for m in room.members if m.marked))),
                    ("Locked", "No"),
                    ("Muted", "No"),
                ]
            )
        self._list(msg, "Confbridge conferences will follow", items, "ConfbridgeListRoomsComplete")

    def _core_show_channels(self, msg: Message, _: Pairs) -> None:
        now = self.switch.clock.seconds()
        items = []
        for ch in reversed(self.switch.channels()):
            secs = int(now - ch.created)
            duration = f"{secs // 3600:02d}:{secs // 60 % 60:02d}:{secs % 60:02d}"
            items.append(
                [
                    ("Event", "CoreShowChannel"),
                    *ch.block(),
                    ("Application", ch.application),
                    ("ApplicationData", ch.app_data),
                    ("Duration", duration),
                    ("BridgeId", ch.room.bridge_id if ch.room else ""),
                ]
            )
        self._list(msg, "Channels will follow", items, "CoreShowChannelsComplete")

    def _status(self, msg: Message, _: Pairs) -> None:
        if msg.get("Channel"):
            ch = self._find(msg)
            if ch is None:
                self._error(msg, "No such channel")
                return
            chans = [ch]
        else:
            chans = self.switch.channels()
        self._success(msg, None, ("EventList", "start"), ("Message", "Channel status will follow"))
        aid = msg.get("ActionID")
        now = self.switch.clock.seconds()
        for ch in chans:
            pairs: Pairs = [("Event", "Status"), ("Privilege", "Call"), *ch.block()]
            pairs += [
                ("Type", ch.name.split("/", 1)[0]),
                ("DNID", ""),
                ("EffectiveConnectedLineNum", ch.caller_num),
                ("EffectiveConnectedLineName", ch.caller_name),
                ("TimeToHangup", "0"),
                ("BridgeID", ch.room.bridge_id if ch.room else ""),
                ("Application", ch.application),
                ("Data", ch.app_data),
                ("Nativeformats", "(slin)"),
                ("Readformat", "slin"),
                ("Readtrans", ""),
                ("Writeformat", "slin"),
                ("Writetrans", ""),
                ("Callgroup", "0"),
                ("Pickupgroup", "0"),
                ("Seconds", str(int(now - ch.created))),
            ]
            self.send(pairs + ([] if aid is None else [("ActionID", aid)]))
        done: Pairs = [("Event", "StatusComplete")] + ([] if aid is None else [("ActionID", aid)])
        n = str(len(chans))
        self.send(done + [("EventList", "Complete"), ("ListItems", n), ("Items", n)])


class AMIServerFactory(Factory):
    """Builds AMI sessions for one simulated switch and fans its events out to them.

    ``event_filter``: the event names the user's sessions get (None = every event);
    ``allow_multiple_login``: manager.conf's ``allowmultiplelogin`` (callbackd's says no);
    ``users``: more manager.conf users (name: secret) beside ``username``, e.g. one per
    daemon when several share the switch.
    """

    def __init__(
        self,
        switch: SimulatedAsterisk,
        username: str,
        secret: str,
        event_filter: Collection[str] | None = None,
        *,
        allow_multiple_login: bool = False,
        users: dict[str, str] | None = None,
    ) -> None:
        self.switch = switch
        self.clock = switch.clock
        self.username = username
        self.secret = secret
        #: every user who may log in, with their secret
        self.users = {**(users or {}), username: secret}
        self.event_filter = None if event_filter is None else frozenset(event_filter)
        self.allow_multiple_login = allow_multiple_login
        self.sessions: set[AMIServerProtocol] = set()
        #: the switch's FastAGI side (callbackd.simulator.agi), for the Sim* actions
        self.agi: Any = None
        switch.add_listener(self._event, self.event_filter)
        switch.on_shutdown.append(self._shutdown)

    def in_use(self, username: str) -> bool:
        """True if ``username`` may not log in again: logged in on a session already."""
        return not self.allow_multiple_login and any(
            s.authenticated and s.username == username for s in self.sessions
        )

    def _shutdown(self) -> None:
        """The switch went down: close every session."""
        for session in list(self.sessions):
            session.close()

    def buildProtocol(self, addr: Any) -> AMIServerProtocol:
        return AMIServerProtocol(self)

    def _event(self, category: str, pairs: Pairs) -> None:
        for session in list(self.sessions):
            session.deliver_event(category, pairs)
