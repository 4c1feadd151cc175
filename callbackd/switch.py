"""The switch: what the session manager asks of Asterisk, and what it hears back.

The session manager talks only to :class:`ISwitch`. The production switch
(:mod:`callbackd.amiswitch`) speaks AMI to a real or simulated Asterisk, following
the one-ConfBridge-room-per-session design of docs/asterisk.rst; a fake switch
serves unit tests. Both report what happens to legs as the normalised events of
:mod:`callbackd.core.events` (re-exported here), each keyed by the leg's
pre-assigned channel id and stamped with the switch's own timestamp (AMI
``Timestamp``), so billing never depends on when the daemon happened to read an
event.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from zope.interface import Attribute, Interface

from callbackd.core.events import (
    END_DESTINATION,
    ROOM_COMMANDS,
    ChannelInfo,
    LegAnswered,
    LegFailed,
    LegHungUp,
    LegJoined,
    LegRinging,
    OriginateRequest,
    RoomCommand,
    SwitchConnected,
    SwitchDisconnected,
    SwitchEvent,
    SwitchShutdown,
)

__all__ = [
    "CHANNEL_ID",
    "END_DESTINATION",
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


#: pre-assigned channel ids (AMI ``ChannelId``): no ``;``, ``,`` or spaces; room for a ``-2``
CHANNEL_ID = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
#: ConfBridge room names = session ids (the dialplan FILTER()s everything else away)
ROOM = re.compile(r"^[A-Za-z0-9_]{1,40}$")
ROLES = ("wait", "join", "ivr")
_DIAL_STRING = re.compile(r"^[A-Za-z][A-Za-z0-9_]*/[^\s,&\x00-\x1f\x7f]+$")
_VARIABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\([A-Za-z0-9_]*\))?$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_UNSAFE_VALUE = re.compile(r"[,\x00-\x1f\x7f]")


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
    splits ``Variable:`` values on it (docs/asterisk.rst, "Originate").
    """
    check_channel_id(request.channel_id)
    check_room(request.room)
    if request.role not in ROLES:
        raise SwitchError(f"invalid leg role {request.role!r} (wait, join or ivr)")
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


class ISwitch(Interface):
    """Originate, hang up, move and inspect legs; report what happens to them."""

    connected = Attribute("bool: the switch is reachable right now")
    shutting_down = Attribute(
        "bool: the switch said it is shutting down or restarting (and is not fully booted"
        " again yet): a new call would fail"
    )
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

    def return_to_ivr(channel_id: str, room: str):
        """Move an IVR session's source leg from its room back to the IVR (``Redirect`` to
        ivr-a)."""

    def set_absolute_timeout(channel_id: str, seconds: int):
        """Have the switch itself hang the leg up after ``seconds`` (credit control)."""

    def list_channels():
        """Fire with a list of ChannelInfo for every live channel (reconciliation)."""
