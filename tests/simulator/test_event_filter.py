"""The simulator's event filter: manager.conf ``eventfilter(name(X)) =`` include filters."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock

from callbackd.ami.message import Message
from callbackd.amievents import MANAGER_EVENTS
from callbackd.app import create_daemon
from callbackd.config import ConfigError, load_config
from callbackd.simulator.__main__ import build_parser, build_service
from callbackd.simulator.asterisk import SimulatedAsterisk
from callbackd.simulator.service import SimulatorService
from tests.simulator.harness import Session
from tests.simulator.test_conformance import replay_option_a

FILTER = set(MANAGER_EVENTS)
#: headers whose values are random per run (the bridge's uuid4) or depend on what was
#: built (Timestamps are spread over the events actually built)
RANDOM = {"BridgeUniqueid", "BridgeId", "BridgeID", "Timestamp"}


def _is_response_part(m: Message) -> bool:
    """An action response, a list item or a list's Complete event (never filtered)."""
    if m.is_response or m.get("EventList") is not None:
        return True
    return m.get("ActionID") is not None and m.name != "OriginateResponse"


def _plain(messages: list[Message]) -> list[list[tuple[str, str]]]:
    return [[(k, v) for k, v in m if k not in RANDOM] for m in messages]


def _originate(session: Session, n: int = 1) -> None:
    session.send(("Action", "Originate"), ("ActionID", f"o-{n}"),
                 ("Channel", f"Local/1555001{n:04d}@sim-pstn/n"), ("Context", "cb-conf"),
                 ("Exten", "leg-b"), ("Priority", "1"), ("Variable", "CB_ROOM=r1"),
                 ("ChannelId", f"id-{n}"), ("Async", "true"))  # fmt: skip


def test_whole_callback_sends_only_listed_events():
    """Over a whole callback the filtered session gets no event outside the filter."""
    session, _, _ = replay_option_a(FILTER)
    events = [m for m in session.received if not _is_response_part(m)]
    assert events
    assert {m.name for m in events} <= FILTER


def test_whole_callback_sends_every_listed_event():
    """The listed events of a callback all arrive: each kind the flow produces is there."""
    session, _, _ = replay_option_a(FILTER)
    names = {m.name for m in session.received if not _is_response_part(m)}
    expected = {
        "FullyBooted",
        "Newchannel",
        "Newstate",
        "DialState",
        "DialEnd",
        "OriginateResponse",
    }
    assert expected | {"ConfbridgeJoin", "Hangup", "UserEvent"} <= names


def test_filtered_stream_is_the_full_stream_without_unlisted_events():
    """Filtered = unfiltered minus unlisted events: responses and lists all still arrive."""
    full, _, _ = replay_option_a(None)
    filtered, _, _ = replay_option_a(FILTER)
    kept = [m for m in full.received if _is_response_part(m) or m.name in FILTER]
    assert len(kept) < len(full.received)
    assert _plain(filtered.received) == _plain(kept)


def test_list_responses_are_complete_under_a_filter():
    """ConfbridgeList and CoreShowChannels items and Complete events pass a filter."""
    session, _, _ = replay_option_a(FILTER)
    by_action = [m for m in session.received if m.get("ActionID") in ("c-5", "c-6")]
    names = [m.name for m in by_action]
    assert "ConfbridgeList" in names and "CoreShowChannel" in names
    complete = {m.name: int(m["ListItems"]) for m in by_action if m.get("EventList") == "Complete"}
    assert complete == {
        "ConfbridgeListComplete": names.count("ConfbridgeList"),
        "CoreShowChannelsComplete": names.count("CoreShowChannel"),
    }


def test_without_a_filter_every_event_is_sent():
    """No filter: the events callbackd does not use (DialBegin, Bridge*, ...) still arrive."""
    session, _, _ = replay_option_a(None)
    names = {m.name for m in session.received}
    assert {"DialBegin", "BridgeEnter", "ConfbridgeLeave", "HangupRequest"} <= names


def test_fully_booted_is_not_filtered():
    """FullyBooted at login arrives even if the filter does not name it (as Asterisk)."""
    session = Session(event_filter={"Hangup"})
    assert [m.name for m in session.login()] == ["Success", "FullyBooted"]


def test_filter_names_are_exact():
    """A lower-case name in the filter does not let 'Hangup' through."""
    session = Session(event_filter={"hangup"})
    session.login()
    _originate(session)
    session.run(2.0)
    session.send(("Action", "Hangup"), ("ActionID", "h"), ("Channel", "id-1"))
    assert [m.name for m in session.run(1.0)] == ["Success"]


def test_user_event_action_is_filtered_by_its_name():
    """UserEvent: the Response arrives, the event only if 'UserEvent' is listed."""
    session = Session(event_filter={"Hangup"})
    session.login()
    session.send(("Action", "UserEvent"), ("ActionID", "u"), ("UserEvent", "CbDtmf"))
    assert [m.name for m in session.read()] == ["Success"]


def test_event_mask_still_applies_under_a_filter():
    """Events off stops listed events too: the class mask and the filter both apply."""
    session = Session(event_filter={"Newchannel", "Hangup"})
    session.login()
    session.send(("Action", "Events"), ("EventMask", "off"))
    session.read()
    _originate(session)
    assert [m.name for m in session.run(3.0)] == ["Success"]


def test_listeners_get_their_own_events():
    """Two listeners with different filters each get only their names; None gets all."""
    switch = SimulatedAsterisk(Clock())
    hangups, news, every = [], [], []
    switch.add_listener(lambda c, p: hangups.append(p[0][1]), {"Hangup"})
    switch.add_listener(lambda c, p: news.append(p[0][1]), ["Newstate"])
    switch.add_listener(lambda c, p: every.append(p[0][1]))
    for name in ("Newstate", "Hangup", "DialBegin"):
        switch.emit(name, [])
    assert (hangups, news, every) == (["Hangup"], ["Newstate"], ["Newstate", "Hangup", "DialBegin"])


def test_unwanted_events_are_not_built():
    """An event no listener wants is dropped before its pairs (or Timestamp) are built."""
    switch = SimulatedAsterisk(Clock())
    got = []
    switch.add_listener(lambda c, p: got.append(p[0][1]), {"Hangup"})
    stamps = []
    switch.timestamp = lambda: stamps.append(1) or "1.000000"  # type: ignore[method-assign]
    switch.emit("DialBegin", [])
    switch.emit("Hangup", [])
    assert (got, len(stamps)) == (["Hangup"], 1)
    assert not switch.wants("DialBegin") and switch.wants("Hangup")


def test_removing_the_unfiltered_listener_narrows_what_is_built():
    """After the listener without a filter goes, only the remaining filter is wanted."""
    switch = SimulatedAsterisk(Clock())

    def every(category, pairs):
        pass

    switch.add_listener(lambda c, p: None, {"Hangup"})
    switch.add_listener(every)
    assert switch.wants("DialBegin")
    switch.remove_listener(every)
    assert not switch.wants("DialBegin") and switch.wants("Hangup")


def test_service_hands_the_filter_to_its_sessions():
    """SimulatorService(event_filter=...) gives its factory that filter when started."""
    reactor = MemoryReactorClock()
    service = SimulatorService("tcp:0", "u", "s", reactor=reactor, event_filter=["Hangup"])
    service.startService()
    assert service.factory is not None
    assert service.factory.event_filter == {"Hangup"}


def test_service_without_a_filter_sends_everything():
    """SimulatorService's default is no filter (every event, as before)."""
    reactor = MemoryReactorClock()
    service = SimulatorService("tcp:0", "u", "s", reactor=reactor)
    service.startService()
    assert service.factory is not None and service.factory.event_filter is None


def test_cli_event_filter_reaches_the_service():
    """--event-filter takes comma lists, may be repeated, and the names reach the service."""
    args = build_parser().parse_args(
        ["--username", "u", "--secret", "s", "--event-filter", "Hangup,Newstate",
         "--event-filter", "DialEnd"]
    )  # fmt: skip
    service = build_service(args, MemoryReactorClock())
    assert service.event_filter == {"Hangup", "Newstate", "DialEnd"}


def test_cli_without_event_filter_filters_nothing():
    """Without --event-filter the standalone simulator sends every event."""
    args = build_parser().parse_args(["--username", "u", "--secret", "s"])
    assert build_service(args, MemoryReactorClock()).event_filter is None


def test_cli_rejects_a_bad_event_name(capsys):
    """A name that is no event name is a usage error naming it."""
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--username", "u", "--secret", "s", "--event-filter", "a:b"])
    assert "a:b" in capsys.readouterr().err


def _daemon_simulator(tmp_path, simulator_section: str) -> SimulatorService:
    ini = tmp_path / "c.ini"
    ini.write_text(f"[manhole]\nenabled = no\n[simulator]\n{simulator_section}")
    root = create_daemon(load_config(ini, environ={}), MemoryReactorClock())
    return root.daemon.simulator


def test_config_default_is_the_manager_conf_filter(tmp_path):
    """[simulator] without event_filter: the embedded simulator filters like manager.conf."""
    assert _daemon_simulator(tmp_path, "").event_filter == set(MANAGER_EVENTS)


def test_config_event_filter_reaches_the_simulator(tmp_path):
    """[simulator] event_filter = a comma list: the embedded simulator sends just those."""
    simulator = _daemon_simulator(tmp_path, "event_filter = Hangup, Newstate\n")
    assert simulator.event_filter == {"Hangup", "Newstate"}


def test_config_empty_event_filter_is_no_filter(tmp_path):
    """[simulator] event_filter = (empty): every event, like an unfiltered Asterisk."""
    assert _daemon_simulator(tmp_path, "event_filter =\n").event_filter is None


def test_config_bad_event_filter_is_a_config_error(tmp_path):
    """A name with a character no event name has is reported as [simulator] event_filter."""
    ini = tmp_path / "c.ini"
    ini.write_text("[simulator]\nevent_filter = Hangup, Event: Newstate\n")
    with pytest.raises(ConfigError, match=r"\[simulator\] event_filter"):
        load_config(ini, environ={})
