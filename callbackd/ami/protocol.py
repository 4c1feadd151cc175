"""One AMI connection: banner, login, actions as Deferreds, list responses, events.

Replies are matched to actions by ``ActionID`` (``<node_id>-<counter>``), never by
order. Every action has a timer; when it fires the action's Deferred errbacks with
:class:`AMITimeout`. When the connection goes, every pending Deferred errbacks with
:class:`AMIConnectionLost`. Every ``Event:`` is offered to the event subscribers,
including the ones that also answer a pending list action or async Originate
(docs/asterisk.rst, "ActionIDs").
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from callbackd.ami.message import AMIInjectionError, Message, MessageParser, encode_text

__all__ = [
    "BANNER_PREFIX",
    "AMICommandFailure",
    "AMIConnectionLost",
    "AMIError",
    "AMIProtocol",
    "AMITimeout",
    "EventCallback",
    "EventRegistry",
]

#: the unframed first line every Asterisk AMI server sends
BANNER_PREFIX = "Asterisk Call Manager/"

#: ``Response: Error`` texts of list actions that mean "nothing to list"
EMPTY_LIST_ERRORS = frozenset({"No active conferences.", "No Conference by that name found."})

#: Asterisk formats ActionIDs into fixed buffers; longer ones get cut (docs/asterisk.rst)
MAX_ACTION_ID = 60

ASSIGNED_ACTION_ID = "the ActionID is assigned by the protocol"

EventCallback = Callable[[Message], object]


class AMIError(Exception):
    """Base class of the AMI client's errors."""


class AMICommandFailure(AMIError):
    """Asterisk answered an action with ``Response: Error``; ``.message`` is that reply."""

    def __init__(self, message: Message) -> None:
        self.message = message
        super().__init__(message.get("Message") or message.name or "Response: Error")


class AMIConnectionLost(AMIError):
    """The connection closed (or was never there) before the action was answered."""


class AMITimeout(AMIError):
    """No answer within the action's timeout."""


class EventRegistry:
    """Subscribers to AMI events by name (case-insensitive), ``None`` meaning every event.

    A subscriber that raises is logged and the others still get the event.
    """

    log = Logger()

    def __init__(self) -> None:
        self._by_name: dict[str | None, list[EventCallback]] = {}

    def register(self, name: str | None, callback: EventCallback) -> None:
        """Call ``callback(message)`` for every event called ``name`` (``None``: all)."""
        self._by_name.setdefault(_event_key(name), []).append(callback)

    def deregister(self, name: str | None, callback: EventCallback) -> None:
        """Undo one :meth:`register`; unknown pairs are ignored."""
        key = _event_key(name)
        callbacks = self._by_name.get(key)
        if callbacks and callback in callbacks:
            callbacks.remove(callback)
            if not callbacks:
                del self._by_name[key]

    def dispatch(self, event: Message) -> None:
        """Offer ``event`` to the subscribers of its name, then to the catch-all ones."""
        by_name = self._by_name
        if not by_name:
            return
        named = by_name.get(event.name.lower(), ())
        catch_all = by_name.get(None, ())
        # copies: a subscriber may (de)register while we iterate
        for callback in (*named, *catch_all):
            try:
                callback(event)
            except Exception:
                self.log.failure(
                    "AMI event subscriber {callback!r} failed on {event_name}",
                    callback=callback,
                    event_name=event.name,
                )


def _event_key(name: str | None) -> str | None:
    return None if name is None else name.lower()


@dataclass
class _Pending:
    """One action waiting for its answer."""

    action_id: str
    action: str
    kind: Literal["single", "list", "originate"]
    deferred: Deferred[Any]
    timeout: float
    timer: IDelayedCall | None = None
    items: list[Message] = field(default_factory=list)


class AMIProtocol(Protocol):
    """One AMI session (client side).

    :param clock: schedules action timeouts and keepalive Pings.
    :param node_id: prefix of every ActionID this session sends.
    :param action_timeout: default seconds to wait for a reply.
    :param ping_interval: seconds between keepalive Pings once logged in (None: off).
    :param ping_timeout: seconds a keepalive Ping may take before the connection is aborted.
    :param events: the subscribers events are offered to (shared across reconnects).
    :param on_connected: called with the protocol once the TCP connection is up.
    :param on_lost: called with the reason once the connection is gone.
    """

    log = Logger()

    def __init__(
        self,
        *,
        clock: IReactorTime,
        node_id: str = "cb1",
        action_timeout: float = 10.0,
        ping_interval: float | None = None,
        ping_timeout: float = 5.0,
        events: EventRegistry | None = None,
        on_connected: Callable[[AMIProtocol], object] | None = None,
        on_lost: Callable[[Failure], object] | None = None,
    ) -> None:
        if not node_id or len(node_id) > MAX_ACTION_ID - 20 or not node_id.isprintable():
            raise ValueError(f"node_id must be 1..{MAX_ACTION_ID - 20} printable characters")
        self.clock = clock
        self.node_id = node_id
        self.action_timeout = action_timeout
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.events = events if events is not None else EventRegistry()
        self.on_connected = on_connected
        self.on_lost = on_lost
        #: the AMI version from the banner, e.g. ``"11.0.0"``
        self.version: str | None = None
        self.connected = False
        self.logged_in = False
        #: messages that were neither a Response nor an Event (dropped)
        self.malformed = 0
        self._parser = MessageParser(banner=True)
        self._counter = itertools.count(1)
        self._pending: dict[str, _Pending] = {}
        #: pending list actions: while there are none, only an OriginateResponse
        #: event can answer an action, and other events skip the ActionID lookup
        self._lists = 0
        self._banner_waiters: list[Deferred[str]] = []
        self._keepalive: LoopingCall | None = None
        self._ping_outstanding = False

    # --- Twisted protocol -------------------------------------------------------------

    def connectionMade(self) -> None:
        self.connected = True
        if self.on_connected is not None:
            self.on_connected(self)

    def dataReceived(self, data: bytes) -> None:
        messages = self._parser.feed(data)
        if self.version is None and self._parser.banner is not None:
            self._banner_received(self._parser.banner)
        for message in messages:
            try:
                self._dispatch(message)
            except Exception:
                self.log.failure("AMI message {message!r} could not be handled", message=message)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.connected = False
        self.logged_in = False
        self.stop_keepalive()
        error = AMIConnectionLost(f"AMI connection lost: {reason.getErrorMessage()}")
        pending, self._pending = self._pending, {}
        self._lists = 0
        for entry in pending.values():
            if entry.timer is not None and entry.timer.active():
                entry.timer.cancel()
            entry.deferred.errback(error)
        waiters, self._banner_waiters = self._banner_waiters, []
        for waiter in waiters:
            waiter.errback(error)
        if self.on_lost is not None:
            self.on_lost(reason)

    def abort(self) -> None:
        """Drop the connection at once, without waiting for buffered writes."""
        if self.transport is not None:
            abort = getattr(self.transport, "abortConnection", self.transport.loseConnection)
            abort()

    # --- banner and login -------------------------------------------------------------

    def _banner_received(self, line: str) -> None:
        if not line.startswith(BANNER_PREFIX):
            self.log.error("not an AMI server: first line {line!r}; closing", line=line[:80])
            self._parser.banner = None
            self.abort()
            return
        self.version = line[len(BANNER_PREFIX) :].strip()
        self.log.info("AMI server speaks version {version}", version=self.version)
        waiters, self._banner_waiters = self._banner_waiters, []
        for waiter in waiters:
            waiter.callback(self.version)

    def wait_for_banner(self, timeout: float | None = None) -> Deferred[str]:
        """The AMI version once the banner line has arrived (AMITimeout after ``timeout``)."""
        if self.version is not None:
            return succeed(self.version)
        if not self.connected:
            return fail(AMIConnectionLost("not connected"))
        waiter: Deferred[str] = Deferred()
        self._banner_waiters.append(waiter)
        seconds = self.action_timeout if timeout is None else timeout

        def expire() -> None:
            if waiter in self._banner_waiters:
                self._banner_waiters.remove(waiter)
                waiter.errback(AMITimeout(f"no AMI banner within {seconds}s"))

        timer = self.clock.callLater(seconds, expire)
        waiter.addBoth(_cancelling(timer))
        return waiter

    def login(self, username: str, secret: str, md5: bool = True) -> Deferred[Message]:
        """Log in (MD5 challenge by default); fires with the Login reply.

        Waits for the banner first. Errbacks with :class:`AMICommandFailure` on
        ``Authentication failed`` / ``Login Already In Use``. Starts the keepalive.
        """
        return Deferred.fromCoroutine(self._login(username, secret, md5))

    async def _login(self, username: str, secret: str, md5: bool) -> Message:
        await self.wait_for_banner()
        if md5:
            reply = await self.send_action(Message.action("Challenge", AuthType="MD5"))
            challenge = reply.get("Challenge")
            if not challenge:
                raise AMICommandFailure(reply)
            key = hashlib.md5((challenge + secret).encode()).hexdigest()
            action = Message.action("Login", AuthType="MD5", Username=username, Key=key)
        else:
            action = Message.action("Login", Username=username, Secret=secret)
        reply = await self.send_action(action)
        self.logged_in = True
        self.log.info("logged in to AMI as {username}", username=username)
        self.start_keepalive()
        return reply

    # --- keepalive --------------------------------------------------------------------

    def start_keepalive(self) -> None:
        """Ping every ``ping_interval`` s; abort the connection when a Ping goes unanswered."""
        if self.ping_interval is None or self._keepalive is not None:
            return
        self._keepalive = LoopingCall(self._send_keepalive)
        self._keepalive.clock = self.clock
        self._keepalive.start(self.ping_interval, now=False)

    def stop_keepalive(self) -> None:
        """Stop the keepalive Pings."""
        if self._keepalive is not None:
            if self._keepalive.running:
                self._keepalive.stop()
            self._keepalive = None

    def _send_keepalive(self) -> None:
        if self._ping_outstanding or not self.connected:
            return
        self._ping_outstanding = True
        d = self.send_action(Message.action("Ping"), timeout=self.ping_timeout)

        def done(result: Message | Failure) -> None:
            self._ping_outstanding = False
            if isinstance(result, Failure):
                if result.check(AMITimeout):
                    self.log.warn(
                        "AMI Ping unanswered for {timeout}s; aborting the connection",
                        timeout=self.ping_timeout,
                    )
                    self.abort()
                elif not result.check(AMIConnectionLost):
                    self.log.warn("AMI Ping failed: {error}", error=result.getErrorMessage())

        d.addBoth(done)

    # --- sending ----------------------------------------------------------------------

    def send_action(self, action: Message, timeout: float | None = None) -> Deferred[Message]:
        """Send one action; fires with its ``Response``.

        Errbacks with :class:`AMICommandFailure` on ``Response: Error``,
        :class:`AMITimeout`, :class:`AMIConnectionLost`, or
        :class:`~callbackd.ami.message.AMIInjectionError` (nothing written).
        """
        return self._send(action, "single", timeout)

    def collect(self, action: Message, timeout: float | None = None) -> Deferred[list[Message]]:
        """Send a list action; fires with its item events (completion event excluded).

        ``Response: Error`` meaning "nothing to list" (``No active conferences.``)
        gives ``[]``; other errors errback with :class:`AMICommandFailure`.
        """
        return self._send(action, "list", timeout)

    def _send(
        self, action: Message, kind: Literal["single", "list", "originate"], timeout: float | None
    ) -> Deferred[Any]:
        if not isinstance(action, Message):
            action = Message(action)
        if action.kind.lower() != "action" or not action.name:
            return fail(ValueError(f"not an AMI action: {action!r}"))
        try:
            text = encode_text(action.pairs)
        except AMIInjectionError:
            if "ActionID" in action:
                return fail(ValueError(ASSIGNED_ACTION_ID))
            return fail()
        # Validated: every line of text is "key: value" with a key of [A-Za-z0-9_-]
        # and no line end in a value, so this finds exactly an ActionID key.
        if "\nactionid: " in text.lower():
            return fail(ValueError(ASSIGNED_ACTION_ID))
        action_id = f"{self.node_id}-{next(self._counter)}"
        first_line, _, rest = text.partition("\r\n")
        # node_id is printable and short, so this line needs no validation
        data = f"{first_line}\r\nActionID: {action_id}\r\n{rest}".encode()
        if not self.connected or self.transport is None:
            return fail(AMIConnectionLost(f"{action.name}: not connected"))
        seconds = self.action_timeout if timeout is None else timeout
        deferred: Deferred[Any] = Deferred(lambda d: self._forget(action_id))
        entry = _Pending(action_id, action.name, kind, deferred, seconds)
        entry.timer = self.clock.callLater(seconds, self._timed_out, action_id)
        self._pending[action_id] = entry
        if kind == "list":
            self._lists += 1
        self.transport.write(data)
        return deferred

    def _remove(self, action_id: str) -> _Pending | None:
        entry = self._pending.pop(action_id, None)
        if entry is not None and entry.kind == "list":
            self._lists -= 1
        return entry

    def _forget(self, action_id: str) -> None:
        entry = self._remove(action_id)
        if entry is not None and entry.timer is not None and entry.timer.active():
            entry.timer.cancel()

    def _timed_out(self, action_id: str) -> None:
        entry = self._remove(action_id)
        if entry is None:
            return
        self.log.warn(
            "AMI {action} {action_id} unanswered after {timeout}s",
            action=entry.action,
            action_id=action_id,
            timeout=entry.timeout,
        )
        entry.deferred.errback(
            AMITimeout(f"{entry.action} ({action_id}): no answer within {entry.timeout}s")
        )

    def _finish(self, entry: _Pending, result: object) -> None:
        self._remove(entry.action_id)
        timer = entry.timer
        if timer is not None and timer.active():
            timer.cancel()
        if isinstance(result, Exception):
            entry.deferred.errback(result)
        else:
            entry.deferred.callback(result)

    # --- receiving --------------------------------------------------------------------

    def _dispatch(self, message: Message) -> None:
        kind = message.kind.lower()
        if kind == "event":
            if self._lists or message.name.lower() == "originateresponse":
                action_id = message.get("ActionID")
                if action_id is not None:
                    entry = self._pending.get(action_id)
                    if entry is not None:
                        self._correlated_event(entry, message)
            self.events.dispatch(message)
        elif kind == "response":
            # a Response carries its ActionID up front: a scan beats building the index
            action_id = message.find("ActionID")
            entry = self._pending.get(action_id) if action_id is not None else None
            if entry is None:
                self.log.debug("AMI response to no pending action: {message!r}", message=message)
                return
            self._response(entry, message)
        else:
            self.malformed += 1
            self.log.debug(
                "AMI message neither Response nor Event dropped: {message!r}", message=message
            )

    def _response(self, entry: _Pending, message: Message) -> None:
        kind = entry.kind
        if message.name.lower() == "error":
            if kind == "list" and message.get("Message") in EMPTY_LIST_ERRORS:
                self._finish(entry, [])
            else:
                self._finish(entry, AMICommandFailure(message))
        elif kind == "single":
            self._finish(entry, message)
        elif kind == "list" and (message.get("EventList") or "").lower() == "complete":
            self._finish(entry, entry.items)
        # else: a list or an async Originate was accepted; the rest comes as events

    def _correlated_event(self, entry: _Pending, event: Message) -> None:
        kind = entry.kind
        if kind == "list":
            name = event.name.lower()
            if (event.get("EventList") or "").lower() == "complete" or name.endswith("complete"):
                self._finish(entry, entry.items)
            else:
                entry.items.append(event)
        elif kind == "originate" and event.name.lower() == "originateresponse":
            self._finish(entry, event)

    # --- actions ----------------------------------------------------------------------

    def register_event(self, name: str | None, callback: EventCallback) -> None:
        """Subscribe ``callback`` to events called ``name`` (``None``: every event)."""
        self.events.register(name, callback)

    def deregister_event(self, name: str | None, callback: EventCallback) -> None:
        """Undo :meth:`register_event`."""
        self.events.deregister(name, callback)

    def originate(
        self,
        channel: str,
        *,
        context: str | None = None,
        exten: str | None = None,
        priority: str = "1",
        application: str | None = None,
        data: str | None = None,
        timeout_ms: int = 30000,
        caller_id: str | None = None,
        variables: Mapping[str, str] | Sequence[tuple[str, str]] = (),
        channel_id: str | None = None,
        other_channel_id: str | None = None,
        account: str | None = None,
    ) -> Deferred[Message]:
        """Async Originate; fires with the ``OriginateResponse`` event (Success or Failure).

        Errbacks with :class:`AMICommandFailure` when Asterisk refuses it at once,
        :class:`AMITimeout` after ``timeout_ms`` plus ``action_timeout`` without a
        result. Variable values may not contain ``,`` (Asterisk splits on it).
        """
        if (application is None) == (exten is None):
            return fail(ValueError("originate needs either exten (and context) or application"))
        pairs: list[tuple[str, str]] = [("Action", "Originate"), ("Channel", channel)]
        if exten is not None:
            if context is not None:
                pairs.append(("Context", context))
            pairs += [("Exten", exten), ("Priority", str(priority))]
        else:
            assert application is not None
            pairs.append(("Application", application))
            if data is not None:
                pairs.append(("Data", data))
        pairs.append(("Timeout", str(int(timeout_ms))))
        if caller_id is not None:
            pairs.append(("CallerID", caller_id))
        items = variables.items() if isinstance(variables, Mapping) else variables
        for name, value in items:
            if not name or "=" in name or "," in value or "," in name:
                return fail(
                    AMIInjectionError(f"Originate variable {name!r}: no '=' in names, no ','")
                )
            pairs.append(("Variable", f"{name}={value}"))
        for key, optional in (
            ("ChannelId", channel_id),
            ("OtherChannelId", other_channel_id),
            ("Account", account),
        ):
            if optional is not None:
                pairs.append((key, optional))
        pairs.append(("Async", "true"))
        return self._send(Message(pairs), "originate", timeout_ms / 1000 + self.action_timeout)

    def hangup(self, channel: str, cause: int | None = None) -> Deferred[Message]:
        """Hang up a channel (name, uniqueid or ``/regex/``)."""
        action = Message.action("Hangup", Channel=channel)
        if cause is not None:
            action.append("Cause", str(int(cause)))
        return self.send_action(action)

    def redirect(
        self, channel: str, context: str, exten: str, priority: str = "1"
    ) -> Deferred[Message]:
        """Send a channel to another dialplan location."""
        return self.send_action(
            Message.action(
                "Redirect", Channel=channel, Context=context, Exten=exten, Priority=str(priority)
            )
        )

    def absolute_timeout(self, channel: str, seconds: int) -> Deferred[Message]:
        """Hang the channel up ``seconds`` from now (Asterisk side; 0 cancels)."""
        return self.send_action(
            Message.action("AbsoluteTimeout", Channel=channel, Timeout=str(int(seconds)))
        )

    def getvar(self, variable: str, channel: str | None = None) -> Deferred[str | None]:
        """A channel (or global) variable's value; None when the reply carries none."""
        action = Message.action("Getvar", Variable=variable)
        if channel is not None:
            action.append("Channel", channel)
        return self.send_action(action).addCallback(lambda reply: reply.get("Value"))

    def setvar(self, variable: str, value: str, channel: str | None = None) -> Deferred[Message]:
        """Set a channel (or global) variable."""
        action = Message.action("Setvar", Variable=variable, Value=value)
        if channel is not None:
            action.append("Channel", channel)
        return self.send_action(action)

    def confbridge_kick(self, conference: str, channel: str) -> Deferred[Message]:
        """Kick one channel (or ``all``/``participants``) out of a ConfBridge room."""
        return self.send_action(
            Message.action("ConfbridgeKick", Conference=conference, Channel=channel)
        )

    def confbridge_list(self, conference: str) -> Deferred[list[Message]]:
        """The ``ConfbridgeList`` events of a room ([] when it does not exist)."""
        return self.collect(Message.action("ConfbridgeList", Conference=conference))

    def confbridge_list_rooms(self) -> Deferred[list[Message]]:
        """The ``ConfbridgeListRooms`` events ([] when there are no rooms)."""
        return self.collect(Message.action("ConfbridgeListRooms"))

    def core_show_channels(self) -> Deferred[list[Message]]:
        """The ``CoreShowChannel`` events, one per channel."""
        return self.collect(Message.action("CoreShowChannels"))

    def ping(self) -> Deferred[Message]:
        """``Ping``; fires with the ``Pong`` reply."""
        return self.send_action(Message.action("Ping"))

    def logoff(self, timeout: float | None = None) -> Deferred[Message | None]:
        """``Logoff``; fires with ``Goodbye`` (or None if the server closed first)."""

        def closed_first(failure: Failure) -> None:
            failure.trap(AMIConnectionLost)
            return None

        return self.send_action(Message.action("Logoff"), timeout).addErrback(closed_first)


def _cancelling(timer: IDelayedCall) -> Callable[[Any], Any]:
    def cancel(result: Any) -> Any:
        if timer.active():
            timer.cancel()
        return result

    return cancel
