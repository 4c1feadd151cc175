"""The switch: what the session manager asks of Asterisk, and what it hears back.

The session manager talks only to :class:`ISwitch`. The production switch
(:mod:`callbackd.amiswitch`) speaks AMI to a real or simulated Asterisk, following
the one-ConfBridge-room-per-session design of ASTERISK.md §3.1; a fake switch
serves unit tests. Both report what happens to legs as the normalised events
below, each keyed by the leg's pre-assigned channel id and stamped with the
switch's own timestamp (AMI ``Timestamp``), so billing never depends on when the
daemon happened to read an event.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from zope.interface import Attribute, Interface

__all__ = [
    "CHANNEL_ID",
    "END_DESTINATION",
    "OUTCOME_CAUSES",
    "ROOM",
    "ChannelInfo",
    "ISwitch",
    "LegAnswered",
    "LegFailed",
    "LegHungUp",
    "LegJoined",
    "LegRinging",
    "OriginateRequest",
    "ROOM_COMMANDS",
    "RoomCommand",
    "SwitchConnected",
    "SwitchDisconnected",
    "SwitchError",
    "SwitchEvent",
    "SwitchShutdown",
    "check_channel_id",
    "check_request",
    "check_room",
]


class SwitchError(Exception):
    """The switch refused or could not carry out a request; ``str()`` is fit for users."""


@dataclass(frozen=True)
class OriginateRequest:
    """Call one leg and, once answered, put it where the session needs it.

    ``role`` is ``"wait"`` for the source leg before the destination answers
    (it hears ringback, ``cb-conf,wait-a``) and ``"join"`` for a leg that goes
    straight into the session's room (``cb-conf,leg-b``).
    """

    channel_id: str
    channel: str  # the validated dial string, e.g. PJSIP/4930123456@proxicom
    room: str  # the session id; the ConfBridge room name
    role: str  # "wait" or "join"
    timeout: int  # seconds the leg may ring
    caller_id: str = ""
    variables: tuple[tuple[str, str], ...] = ()


#: pre-assigned channel ids (AMI ``ChannelId``): no ``;``, ``,`` or spaces; room for a ``-2``
CHANNEL_ID = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
#: ConfBridge room names = session ids (the dialplan FILTER()s everything else away)
ROOM = re.compile(r"^[A-Za-z0-9_]{1,40}$")
ROLES = ("wait", "join")
_DIAL_STRING = re.compile(r"^[A-Za-z][A-Za-z0-9_]*/[^\s,&\x00-\x1f\x7f]+$")
_VARIABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\([A-Za-z0-9_]*\))?$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_UNSAFE_VALUE = re.compile(r"[,\x00-\x1f\x7f]")


#: the Q.850 cause a LegFailed reports for its outcome when the channel gave none
OUTCOME_CAUSES = {"busy": 17, "noanswer": 19, "rejected": 21, "congestion": 34}


def check_channel_id(channel_id: str) -> None:
    """Raise SwitchError unless ``channel_id`` is a valid pre-assigned leg id."""
    if not isinstance(channel_id, str) or not CHANNEL_ID.match(channel_id):
        raise SwitchError(f"invalid leg id {channel_id!r}")


def check_room(room: str) -> None:
    """Raise SwitchError unless ``room`` is a valid room (session) name."""
    if not isinstance(room, str) or not ROOM.match(room):
        raise SwitchError(f"invalid room name {room!r}")


def check_request(request: OriginateRequest) -> None:
    """Raise SwitchError if ``request`` is not one every switch accepts.

    Shared by every ISwitch implementation so that the real and the fake one
    refuse the same requests. Variable values may not contain ``,``: Asterisk
    splits ``Variable:`` values on it (ASTERISK.md §2.2).
    """
    check_channel_id(request.channel_id)
    check_room(request.room)
    if request.role not in ROLES:
        raise SwitchError(f"invalid leg role {request.role!r} (wait or join)")
    if not _DIAL_STRING.match(request.channel):
        raise SwitchError(f"invalid dial string {request.channel!r}")
    if not 0 < request.timeout <= 3600:
        raise SwitchError(f"invalid ring timeout {request.timeout!r}")
    if _CONTROL.search(request.caller_id):
        raise SwitchError("invalid caller id")
    for name, value in request.variables:
        if not _VARIABLE_NAME.match(name) or name == "CB_ROOM":
            raise SwitchError(f"invalid channel variable name {name!r}")
        if _UNSAFE_VALUE.search(value):
            raise SwitchError(f"channel variable {name} may not contain ',' or control characters")


@dataclass(frozen=True)
class ChannelInfo:
    """A live channel the switch knows of (reconciliation after a restart)."""

    channel_id: str
    channel_name: str
    state: str  # "ringing", "up", "down"...
    room: str = ""
    seconds: int = 0  # since the channel was created


@dataclass(frozen=True)
class LegRinging:
    """The leg is alerting."""

    channel_id: str
    at: float


@dataclass(frozen=True)
class LegAnswered:
    """The leg answered (the start of its billing)."""

    channel_id: str
    at: float
    channel_name: str = ""


@dataclass(frozen=True)
class LegJoined:
    """The leg entered the session's room."""

    channel_id: str
    at: float
    room: str = ""


@dataclass(frozen=True)
class LegFailed:
    """The leg never answered.

    ``outcome`` is one of ``busy``, ``noanswer``, ``congestion``,
    ``chanunavail``, ``rejected``, ``failed``; ``cause`` the Q.850 cause when
    known (0 otherwise).
    """

    channel_id: str
    at: float
    outcome: str
    cause: int = 0


@dataclass(frozen=True)
class LegHungUp:
    """An answered (or ringing) leg went away; the end of its billing."""

    channel_id: str
    at: float
    cause: int = 16
    cause_text: str = "Normal Clearing"


#: ``#11`` in the room (``cb-dtmf,endb``): hang up every leg but the source
END_DESTINATION = "endb"
#: the commands a :class:`RoomCommand` may carry (the ``CbCmd`` values of the dialplan)
ROOM_COMMANDS = frozenset({END_DESTINATION})


@dataclass(frozen=True)
class RoomCommand:
    """The source keyed a menu command in its session's room (``UserEvent CbDtmf``).

    ``room`` is the session id; ``command`` one of :data:`ROOM_COMMANDS`;
    ``channel_id`` the leg that keyed it ("" when the switch did not say).
    """

    room: str
    command: str
    at: float
    channel_id: str = ""


@dataclass(frozen=True)
class SwitchShutdown:
    """The switch is shutting down (``restart``: and coming back): every leg is going.

    Reported on the first sign (an action refused because the switch is shutting
    down, or its ``Shutdown`` event), once per connection.
    """

    at: float
    restart: bool = False


@dataclass(frozen=True)
class SwitchConnected:
    """The switch is (again) reachable: the manager reconciles its sessions."""

    at: float


@dataclass(frozen=True)
class SwitchDisconnected:
    """The switch connection was lost: nothing is known until it comes back."""

    at: float
    reason: str = ""


SwitchEvent = (
    LegRinging
    | LegAnswered
    | LegJoined
    | LegFailed
    | LegHungUp
    | RoomCommand
    | SwitchShutdown
    | SwitchConnected
    | SwitchDisconnected
)


class ISwitch(Interface):
    """Originate, hang up, move and inspect legs; report what happens to them."""

    connected = Attribute("bool: the switch is reachable right now")
    started_at = Attribute(
        "float | None: when the switch last (re)started, as far as it said (None: unknown);"
        " a leg dialled before then went with the switch"
    )

    def add_listener(listener: Callable[[SwitchEvent], None]):
        """Deliver every SwitchEvent to ``listener``."""

    def originate(request: OriginateRequest):
        """Start calling a leg. Fire with None once the switch accepted it.

        Errback SwitchError when the switch refuses it outright. Everything
        after that (ringing, answer, failure) arrives as events.
        """

    def hangup(channel_id: str, cause: int = 16):
        """Hang up a leg; firing also when the leg was already gone."""

    def join_room(channel_id: str, room: str):
        """Move a waiting source leg into its session's room (``Redirect`` to leg-a)."""

    def set_absolute_timeout(channel_id: str, seconds: int):
        """Have the switch itself hang the leg up after ``seconds`` (credit control)."""

    def list_channels():
        """Fire with a list of ChannelInfo for every live channel (reconciliation)."""
