"""The AMI events callbackd uses: the include filter of the recommended manager.conf.

A real Asterisk 22 sends an AMI user only the events its ``manager.conf``
``eventfilter(name(X)) =`` include filters name (``docs/asterisk.rst``). The sample
``etc/asterisk/manager.conf`` whitelists exactly :data:`MANAGER_EVENTS`, and the
embedded simulated Asterisk applies the same filter by default (``[simulator]
event_filter``), so the daemon parses no event it would throw away. A test ties the
list to the manager.conf file.

No Twisted here: :mod:`callbackd.config` imports this module.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["EXTRA_EVENTS", "MANAGER_EVENTS", "SWITCH_EVENTS", "parse_event_filter"]

#: the events AMISwitch translates into leg events (:data:`callbackd.amiswitch.EVENTS`)
SWITCH_EVENTS = (
    "Newchannel",
    "Newstate",
    "DialState",
    "DialEnd",
    "OriginateResponse",
    "ConfbridgeJoin",
    "Hangup",
)

#: events of the switch as a whole, which AMISwitch reads too: FullyBooted and Shutdown
#: (a restart: the sessions' SwitchLost, the health check, the log), UserEvent (``#11``
#: keyed in a room: the ``CbDtmf`` of the ``cb-dtmf`` dialplan)
EXTRA_EVENTS = ("FullyBooted", "Shutdown", "UserEvent")

#: every event callbackd uses
MANAGER_EVENTS = SWITCH_EVENTS + EXTRA_EVENTS

#: an AMI event name as ``name()`` matches it (Asterisk's own are CamelCase words)
_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


def parse_event_filter(texts: str | Iterable[str]) -> frozenset[str] | None:
    """Event names from comma (or whitespace) separated text(s); None if there are none.

    None means "no filter": every event. Names are kept exactly as written (Asterisk's
    ``name()`` filter compares the ``Event`` value as is). Raise ValueError naming the
    first name that is not an event name.
    """
    if isinstance(texts, str):
        texts = [texts]
    names: set[str] = set()
    for text in texts:
        for part in text.replace(",", " ").split():
            if not _NAME.match(part):
                raise ValueError(f"not an AMI event name: {part!r}")
            names.add(part)
    return frozenset(names) if names else None
