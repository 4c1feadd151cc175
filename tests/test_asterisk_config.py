"""etc/asterisk/manager.conf: its event whitelist is exactly what callbackd uses."""

from __future__ import annotations

import re
from pathlib import Path

from twisted.internet.task import Clock

from callbackd.amievents import EXTRA_EVENTS, MANAGER_EVENTS
from callbackd.amiswitch import EVENTS, AMISwitch

MANAGER_CONF = Path(__file__).resolve().parent.parent / "etc" / "asterisk" / "manager.conf"


def _filter_lines() -> list[str]:
    return [
        line.split(";", 1)[0].strip()
        for line in MANAGER_CONF.read_text().splitlines()
        if line.split(";", 1)[0].strip().startswith("eventfilter")
    ]


def _whitelist() -> list[str]:
    """The names of the ``eventfilter(name(X)) =`` include filters, in file order."""
    names = []
    for line in _filter_lines():
        m = re.fullmatch(r"eventfilter\(name\(([A-Za-z0-9_-]+)\)\)\s*=", line)
        assert m is not None, f"not a plain name() include filter: {line!r}"
        names.append(m.group(1))
    return names


class _RecordingClient:
    """Just enough of AMIClientService to see what AMISwitch subscribes to."""

    def __init__(self) -> None:
        self.registered: list[str] = []
        self.connected = False

    def register_event(self, name: str, callback: object) -> None:
        self.registered.append(name)

    def add_connection_listener(self, on_connected: object, on_lost: object) -> None:
        pass


def test_every_event_filter_is_a_plain_name_include():
    """Every eventfilter line of manager.conf is an include filter on one event name."""
    lines = _filter_lines()
    assert lines
    assert len(_whitelist()) == len(lines)


def test_whitelist_has_no_duplicates():
    """No event name is listed twice."""
    names = _whitelist()
    assert len(names) == len(set(names))


def test_whitelist_includes_every_event_amiswitch_subscribes_to():
    """Every event AMISwitch registers for is let through by manager.conf."""
    client = _RecordingClient()
    AMISwitch(client, clock=Clock())  # type: ignore[arg-type]
    assert client.registered
    assert set(client.registered) - set(_whitelist()) == set()


def test_whitelist_names_nothing_callbackd_does_not_use():
    """manager.conf lists only AMISwitch's events plus FullyBooted, Shutdown and UserEvent."""
    assert set(_whitelist()) - (set(EVENTS) | {"FullyBooted", "Shutdown", "UserEvent"}) == set()


def test_whitelist_is_the_manager_events_constant():
    """manager.conf and callbackd.amievents.MANAGER_EVENTS list the same events."""
    assert set(_whitelist()) == set(MANAGER_EVENTS)


def test_manager_events_are_the_switch_events_and_the_extras():
    """MANAGER_EVENTS is exactly amiswitch.EVENTS plus EXTRA_EVENTS, each once."""
    assert sorted(MANAGER_EVENTS) == sorted([*EVENTS, *EXTRA_EVENTS])


def test_timestamps_are_on():
    """Billing needs event Timestamps: timestampevents = yes in [general]."""
    text = MANAGER_CONF.read_text()
    assert re.search(r"^timestampevents\s*=\s*yes\b", text, re.MULTILINE)


# -- extensions.conf: the phone callback (IVR) --------------------------------------------

EXTENSIONS_CONF = MANAGER_CONF.with_name("extensions.conf")


def _context(name: str) -> list[str]:
    """The dialplan lines of ``[name]`` (comments and blank lines left out)."""
    lines, inside = [], False
    for raw in EXTENSIONS_CONF.read_text().splitlines():
        line = raw.split(";", 1)[0].strip()
        if line.startswith("["):
            inside = line == f"[{name}]"
        elif inside and line:
            lines.append(line)
    return lines


def test_access_numbers_and_dids_are_never_answered():
    """A call to an access number or a DID goes to the IVR's script unanswered (the
    caller pays nothing), with the dialled number filtered to digits."""
    for context in ("cb-access", "cb-did"):
        lines = _context(context)
        assert lines, context
        assert not any("Answer(" in line for line in lines), context
        agi = [line for line in lines if "AGI(" in line]
        assert agi == ["same => n,AGI(agi://127.0.0.1:4573/ivr,${FILTER(0-9,${EXTEN})})"]


def test_the_callback_leg_runs_the_ivr_for_its_filtered_room():
    """ivr-a, where the engine originates an IVR session's source (AMISwitch role ivr)
    and Redirects it back to, runs the ivr-callback script for the FILTER()ed room."""
    from callbackd.amiswitch import EXTENSIONS
    from callbackd.ivr.service import CALLBACK_SCRIPT

    assert EXTENSIONS["ivr"] == "ivr-a"
    lines = [line for line in _context("cb-conf") if "ivr-a" in line or "same" in line]
    start = lines.index("exten => ivr-a,1,Set(ROOM=${FILTER(A-Za-z0-9_,${CB_ROOM})})")
    block = lines[start : start + 6]
    assert block[1] == 'same => n,GotoIf($["${ROOM}" = ""]?bad,1)'
    assert f"same => n,AGI(agi://127.0.0.1:4573/{CALLBACK_SCRIPT}?session=${{ROOM}})" in block
