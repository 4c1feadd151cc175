"""What the switch reports about legs, and what is asked of it: plain values.

The session machine (:mod:`callbackd.core.session`) steps on these; the switches
(:mod:`callbackd.amiswitch`, :mod:`callbackd.fakeswitch`) make them and
:mod:`callbackd.switch` re-exports them with the switch interface. Each leg event is
keyed by the leg's pre-assigned channel id and stamped with the switch's own
timestamp (AMI ``Timestamp``), so billing never depends on when the daemon happened
to read an event.
"""

from __future__ import annotations

from dataclasses import dataclass

from callbackd.core.causes import NORMAL_CLEARING, NORMAL_CLEARING_TEXT

__all__ = [
    "END_DESTINATION",
    "ROOM_COMMANDS",
    "ChannelInfo",
    "LegAnswered",
    "LegFailed",
    "LegHungUp",
    "LegJoined",
    "LegRinging",
    "OriginateRequest",
    "RoomCommand",
    "SwitchConnected",
    "SwitchDisconnected",
    "SwitchEvent",
    "SwitchShutdown",
]


@dataclass(frozen=True)
class OriginateRequest:
    """Call one leg and, once answered, put it where the session needs it.

    ``role`` is ``"wait"`` for the source leg before the destination answers
    (it hears ringback, ``cb-conf,wait-a``), ``"join"`` for a leg that goes
    straight into the session's room (``cb-conf,leg-b``) and ``"ivr"`` for the source
    of a phone callback, answered by the IVR (``cb-conf,ivr-a``; docs/ivr.rst).
    """

    channel_id: str
    channel: str  # the validated dial string, e.g. PJSIP/4930123456@proxicom
    room: str  # the session id; the ConfBridge room name
    role: str  # "wait", "join" or "ivr"
    timeout: int  # seconds the leg may ring
    caller_id: str = ""
    variables: tuple[tuple[str, str], ...] = ()


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
    cause: int = NORMAL_CLEARING
    cause_text: str = NORMAL_CLEARING_TEXT


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
