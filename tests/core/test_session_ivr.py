"""The session machine's IVR sessions: a source answered by the IVR, destinations added
one after another as additional legs, the source moved between the IVR and the room."""

from __future__ import annotations

from callbackd.core.session import (
    IVR,
    AddLeg,
    ChargeLeg,
    Finished,
    Hangup,
    JoinRoom,
    Originate,
    Phase,
    ReturnToIvr,
    SessionState,
    step,
)
from callbackd.switch import LegAnswered, LegFailed, LegHungUp, RoomCommand
from tests.core.test_session import DESTINATION, EXTRA, SID, SOURCE, Session, events, of


def ivr_session(**kw) -> Session:
    return Session(destination=None, **kw)


def test_the_source_is_originated_for_the_ivr_and_nothing_else_is_dialled():
    session = ivr_session()
    [originate] = of(session.last, Originate)
    assert originate.request.role == "ivr" and session.state.kind == IVR
    effects = session.feed(LegAnswered(f"{SID}-a1", 1.0), 1.0)
    assert not of(effects, Originate) and not of(effects, JoinRoom)
    assert session.state.phase is Phase.TALKING
    assert [e.kind for e in events(effects)] == ["leg_answered"]


def test_destinations_come_and_go_and_the_source_stays():
    session = ivr_session()
    session.feed(LegAnswered(f"{SID}-a1", 1.0), 1.0)
    session.feed(AddLeg(DESTINATION), 5.0)
    effects = session.feed(LegAnswered(f"{SID}-c1", 8.0), 8.0)
    assert of(effects, JoinRoom) == [JoinRoom(f"{SID}-a1", SID)]
    # the destination hangs up: the source goes back to the IVR, the leg is billed
    effects = session.feed(LegHungUp(f"{SID}-c1", 38.0, 16), 38.0)
    assert of(effects, ReturnToIvr) == [ReturnToIvr(f"{SID}-a1", SID)]
    [charge] = of(effects, ChargeLeg)
    assert charge.billed_seconds == 30
    assert session.state.phase is Phase.TALKING and not session.state.reason
    # a second destination, ended by #11 from the room
    session.feed(AddLeg(EXTRA), 40.0)
    effects = session.feed(LegAnswered(f"{SID}-d1", 42.0), 42.0)
    assert of(effects, JoinRoom)
    effects = session.feed(RoomCommand(SID, "endb", 50.0), 50.0)
    assert of(effects, Hangup) == [Hangup(f"{SID}-d1")]
    effects = session.feed(LegHungUp(f"{SID}-d1", 50.2, 16), 50.2)
    assert of(effects, ReturnToIvr) == [ReturnToIvr(f"{SID}-a1", SID)]
    # the user hangs up: the session ends, its CDR names the last destination
    session.feed(LegHungUp(f"{SID}-a1", 60.0, 16), 60.0)
    [finished] = of(session.all, Finished)
    assert finished.cdr.address == EXTRA.address
    assert finished.cdr.cause == "SourceHangup"
    billed = {c.leg: c.billed_seconds for c in session.charges()}
    assert billed == {"additional-1": 30, "additional-2": 9, "source": 59}


def test_a_failed_destination_leaves_the_source_in_the_ivr():
    session = ivr_session()
    session.feed(LegAnswered(f"{SID}-a1", 1.0), 1.0)
    session.feed(AddLeg(DESTINATION), 2.0)
    effects = session.feed(LegFailed(f"{SID}-c1", 4.0, "busy", 17), 4.0)
    assert not of(effects, ReturnToIvr) and not of(effects, JoinRoom)
    assert [e.kind for e in events(effects)] == ["leg_failed"]
    assert session.state.phase is Phase.TALKING and not session.state.reason


def test_an_ivr_state_survives_the_store():
    session = ivr_session()
    session.feed(LegAnswered(f"{SID}-a1", 1.0), 1.0)
    session.feed(AddLeg(DESTINATION), 2.0)
    session.feed(LegAnswered(f"{SID}-c1", 3.0), 3.0)
    again = SessionState.from_dict(session.state.to_dict())
    assert again == session.state and again.in_room
    state, effects = step(again, LegHungUp(f"{SID}-c1", 9.0, 16), 9.0)
    assert of(effects, ReturnToIvr)


def test_a_regular_session_is_unchanged():
    session = Session(source=SOURCE)
    assert session.state.kind == ""
    [originate] = of(session.last, Originate)
    assert originate.request.role == "wait"
