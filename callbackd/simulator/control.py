"""The simulator's own AMI actions (no real Asterisk has them): drive its FastAGI side.

A test or demo running ``python -m callbackd.simulator`` in a process of its own places
calls to an access number and sets up the people who answer callback legs over the AMI
session it already has (docs/simulator.rst, "FastAGI"):

``SimInboundCall``
    ``CallerID``, ``Exten`` (the access number), ``URL`` (``agi://...``), optional
    ``Context`` (``cb-access``), ``Language`` (``en``), ``Arg`` (repeated) and
    ``Caller`` (a :meth:`ScriptedCaller.parse` script); answers ``Channel`` and
    ``Uniqueid`` of the new call.
``SimCaller``
    ``Number`` and ``Caller``: the person who answers legs originated to ``Number``.
``SimAGIExtension``
    ``Context``, ``Exten``, ``URL``: channels answered into it run ``AGI(URL)``.
``SimAGICalls``
    a list of ``SimAGICall`` events, one per AGI run (``Channel``, ``Uniqueid``,
    ``URL``, ``Status`` ``running`` or ``AGISTATUS``, ``Played`` comma-separated,
    ``Keyed``), ended by ``SimAGICallsComplete``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from callbackd.ami.message import Message
from callbackd.simulator.caller import ScriptedCaller

if TYPE_CHECKING:
    from callbackd.simulator.protocol import AMIServerProtocol

__all__ = ["control_handlers"]

Handler = Callable[[Message, Any], None]


def control_handlers(session: AMIServerProtocol) -> dict[str, Handler]:
    """The Sim* actions of one AMI session, by lower-case action name."""

    def checked(msg: Message, *required: str) -> tuple[Any, ScriptedCaller | None] | None:
        """The FastAGI side and the parsed ``Caller``; None (answered Error) if refused."""
        fastagi = session.factory.agi
        missing = [h for h in required if not msg.get(h)]
        if fastagi is None or missing:
            session._error(msg, f"FastAGI not running or missing {', '.join(missing)}")
            return None
        text = msg.get("Caller")
        try:
            return fastagi, None if text is None else ScriptedCaller.parse(text)
        except ValueError as e:
            session._error(msg, str(e))
            return None

    def inbound_call(msg: Message, _: Any) -> None:
        found = checked(msg, "CallerID", "Exten", "URL")
        if found is None:
            return
        fastagi, caller = found
        call = fastagi.inbound_call(
            msg["CallerID"],
            msg["Exten"],
            msg["URL"],
            caller=caller,
            args=msg.get_all("Arg"),
            context=msg.get("Context") or "cb-access",
            language=msg.get("Language") or "en",
        )
        ch = call.channel
        session._success(msg, "Call placed", ("Channel", ch.name), ("Uniqueid", ch.uniqueid))

    def set_caller(msg: Message, _: Any) -> None:
        found = checked(msg, "Number", "Caller")
        if found is not None:
            fastagi, caller = found
            fastagi.callers[msg["Number"]] = caller
            session._success(msg, "Caller set")

    def extension(msg: Message, _: Any) -> None:
        found = checked(msg, "Context", "Exten", "URL")
        if found is not None:
            found[0].add_extension(msg["Context"], msg["Exten"], msg["URL"])
            session._success(msg, "Extension added")

    def calls(msg: Message, _: Any) -> None:
        fastagi = session.factory.agi
        items = []
        for call in [] if fastagi is None else fastagi.calls:
            keyed = "".join(d for _, d in call.caller.keyed) if call.caller else ""
            items.append(
                [
                    ("Event", "SimAGICall"),
                    ("Channel", call.channel.name),
                    ("Uniqueid", call.channel.uniqueid),
                    ("URL", call.url),
                    ("Status", call.status or "running"),
                    ("Played", ",".join(call.played)),
                    ("Keyed", keyed),
                ]
            )
        session._list(msg, "AGI calls will follow", items, "SimAGICallsComplete")

    return {
        "siminboundcall": inbound_call,
        "simcaller": set_caller,
        "simagiextension": extension,
        "simagicalls": calls,
    }
