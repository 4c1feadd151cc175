"""A fake switch for unit tests of everything that drives an :class:`ISwitch`.

It records what it is asked to do and says only what the test scripts::

    switch = FakeSwitch()
    manager = SessionManager(switch, ...)
    ...
    assert switch.originated[0].room == "s1"
    switch.answer("s1-a", at=100.0)
    switch.hang_up("s1-a", at=130.0)

It refuses the same malformed requests as the real switch
(:func:`callbackd.switch.check_request`), and ``refuse_next`` makes the next
originate fail the way Asterisk refusing it would.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import implementer

from callbackd.core.causes import OUTCOMES, cause_for_outcome
from callbackd.switch import (
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

__all__ = ["OUTCOMES", "FakeSwitch"]


@implementer(ISwitch)
class FakeSwitch:
    """An ISwitch that records requests and emits only the events a test scripts.

    ``originated``, ``hung_up`` (``(channel_id, cause)``), ``joined``
    (``(channel_id, room)``) and ``timeouts`` (``(channel_id, seconds)``) list the
    requests in order; ``emitted`` every event delivered. ``channels`` is what
    ``list_channels`` answers; ``started_at`` when the switch last (re)started
    (``restart`` sets it).
    """

    def __init__(self, *, connected: bool = True) -> None:
        self.connected = connected
        self.shutting_down = False
        self.started_at: float | None = None
        self.originated: list[OriginateRequest] = []
        self.hung_up: list[tuple[str, int]] = []
        self.joined: list[tuple[str, str]] = []
        self.returned: list[tuple[str, str]] = []
        self.timeouts: list[tuple[str, int]] = []
        self.emitted: list[SwitchEvent] = []
        self.channels: list[ChannelInfo] = []
        self._listeners: list[Callable[[SwitchEvent], None]] = []
        self._refusals: list[str] = []

    # --- ISwitch ----------------------------------------------------------------------

    def add_listener(self, listener: Callable[[SwitchEvent], None]) -> None:
        """Deliver every SwitchEvent to ``listener``."""
        self._listeners.append(listener)

    def originate(self, request: OriginateRequest) -> Deferred[None]:
        """Record the request; fire at once, or errback SwitchError if refused."""
        try:
            self._check_connected()
            check_request(request)
            if self._refusals:
                raise SwitchError(self._refusals.pop(0))
        except SwitchError:
            return fail()
        self.originated.append(request)
        return succeed(None)

    def hangup(self, channel_id: str, cause: int = 16) -> Deferred[None]:
        """Record the hangup; a leg the test already ended counts as done too."""
        try:
            self._check_connected()
            check_channel_id(channel_id)
        except SwitchError:
            return fail()
        self.hung_up.append((channel_id, cause))
        return succeed(None)

    def join_room(self, channel_id: str, room: str) -> Deferred[None]:
        """Record the move of a waiting leg into ``room``."""
        return self._move(self.joined, channel_id, room)

    def return_to_ivr(self, channel_id: str, room: str) -> Deferred[None]:
        """Record the move of an IVR session's source back to the IVR."""
        return self._move(self.returned, channel_id, room)

    def _move(self, record: list[tuple[str, str]], channel_id: str, room: str) -> Deferred[None]:
        try:
            self._check_connected()
            check_channel_id(channel_id)
            check_room(room)
        except SwitchError:
            return fail()
        record.append((channel_id, room))
        return succeed(None)

    def set_absolute_timeout(self, channel_id: str, seconds: int) -> Deferred[None]:
        """Record the switch-side time limit of a leg."""
        try:
            self._check_connected()
            check_channel_id(channel_id)
            if not isinstance(seconds, int) or seconds < 0:
                raise SwitchError(f"invalid timeout {seconds!r}")
        except SwitchError:
            return fail()
        self.timeouts.append((channel_id, seconds))
        return succeed(None)

    def list_channels(self) -> Deferred[list[ChannelInfo]]:
        """Fire with ``channels`` as the test set them."""
        try:
            self._check_connected()
        except SwitchError:
            return fail()
        return succeed(list(self.channels))

    # --- scripting ----------------------------------------------------------------------

    def refuse_next(self, reason: str = "the switch refused the call") -> None:
        """Make the next originate errback SwitchError(reason) (calls queue up)."""
        self._refusals.append(reason)

    def emit(self, event: SwitchEvent) -> None:
        """Deliver ``event`` to every listener."""
        self.emitted.append(event)
        for listener in list(self._listeners):
            listener(event)

    def ring(self, channel_id: str, at: float) -> None:
        """The leg starts ringing."""
        self.emit(LegRinging(channel_id, at))

    def answer(self, channel_id: str, at: float, channel_name: str = "") -> None:
        """The leg answers."""
        name = channel_name or f"Fake/{channel_id}"
        self.emit(LegAnswered(channel_id, at, name))

    def join(self, channel_id: str, at: float, room: str = "") -> None:
        """The leg enters its room (``room`` defaults to the one it was originated for)."""
        self.emit(LegJoined(channel_id, at, room or self._room_of(channel_id)))

    def fail(self, channel_id: str, outcome: str, at: float, cause: int | None = None) -> None:
        """The leg ends without answering, with ``outcome`` (one of :data:`OUTCOMES`)."""
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}; use one of {', '.join(OUTCOMES)}")
        if cause is None:
            cause = cause_for_outcome(outcome)
        self.emit(LegFailed(channel_id, at, outcome, cause))

    def hang_up(
        self, channel_id: str, at: float, cause: int = 16, cause_text: str = "Normal Clearing"
    ) -> None:
        """The answered leg goes away."""
        self.emit(LegHungUp(channel_id, at, cause, cause_text))

    def key(self, room: str, command: str, at: float, channel_id: str = "") -> None:
        """The source keys a menu command in ``room`` (``"endb"``: ``#11``)."""
        check_room(room)
        if command not in ROOM_COMMANDS:
            raise ValueError(f"unknown room command {command!r}")
        self.emit(RoomCommand(room, command, at, channel_id))

    def shut_down(self, at: float, restart: bool = True, gone: bool = True) -> None:
        """The switch announces it is shutting down (every leg is going), then goes.

        ``gone=False``: the connection stays for now (the real switch closes it about a
        second after its ``Shutdown`` event); :meth:`disconnect` ends it.
        """
        self.shutting_down = True
        self.emit(SwitchShutdown(at, restart))
        if gone:
            self.disconnect(at, "the switch shut down")

    def restart(self, at: float) -> None:
        """The switch is back after a restart (or crash) with no channel left."""
        self.channels = []
        self.started_at = at
        self.connect(at)

    def connect(self, at: float) -> None:
        """The switch becomes reachable (fully booted)."""
        self.connected = True
        self.shutting_down = False
        self.emit(SwitchConnected(at))

    def disconnect(self, at: float, reason: str = "connection lost") -> None:
        """The switch connection is lost."""
        self.connected = False
        self.emit(SwitchDisconnected(at, reason))

    # --- helpers ------------------------------------------------------------------------

    def _check_connected(self) -> None:
        if not self.connected:
            raise SwitchError("the switch is not reachable right now")

    def _room_of(self, channel_id: str) -> str:
        for request in reversed(self.originated):
            if request.channel_id == channel_id:
                return request.room
        return ""
