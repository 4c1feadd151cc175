"""The recorded scenarios, run by the engine against the simulated Asterisk.

Each test plays one of the scenarios recorded against a real Asterisk 22
(``tests/fixtures/asterisk22/callbackd/``) through the whole stack — engine, AMI switch,
AMI client, the simulator's AMI server — and checks what the recording implies: the
session's reason, each leg's cause, each leg's billed seconds (the recording's own
timestamps, billed by the engine's per-second rule) and how many actions of each kind
the daemon sent. Where the daemon of the recording's time did something wrong (more
AbsoluteTimeouts than changes of a leg's cut, a backstop past the paid time), the test
says what the recording implies a correct daemon does instead.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import pytest

from callbackd.ami.message import Message, MessageParser
from callbackd.core.session import BACKSTOP_MARGIN, Reason
from callbackd.engine import CallbackRefused
from tests.ami.fixtures import server_bytes
from tests.scenarios import SELL, Rig, recorded_actions

SOURCE = "+15550011111"


@dataclass(frozen=True)
class RecordedLeg:
    """One leg as the recording shows it (its ``;1`` half, whose uniqueid is the leg's id)."""

    answered_at: float | None
    ended_at: float
    cause: int

    @property
    def billed_seconds(self) -> int:
        """The engine's rule: every started second, from answer to hangup."""
        if self.answered_at is None:
            return 0
        return max(0, math.ceil(self.ended_at - self.answered_at - 1e-6))


def recorded_messages(name: str) -> list[Message]:
    return MessageParser(banner=True).feed(server_bytes(f"callbackd/{name}"))


def recorded_legs(name: str) -> dict[str, list[RecordedLeg]]:
    """Per leg (``a1``, ``b1`` ...: the suffix of the daemon's channel id), its attempts.

    An attempt's answer is the first evidence of it (the ``;1`` half's ``Newstate Up``,
    the ``DialEnd ANSWER`` towards it, its successful ``OriginateResponse``), as the AMI
    switch takes it.
    """
    messages = recorded_messages(name)
    answered: dict[str, float] = {}
    legs: dict[str, list[RecordedLeg]] = {}
    for m in messages:
        if "Timestamp" not in m:
            continue
        at = float(m["Timestamp"])
        uid = m.get("Uniqueid") or ""
        if m.name == "DialEnd" and m.get("DialStatus") == "ANSWER":
            uid = m.get("DestUniqueid") or ""
        elif not (
            (m.name == "Newstate" and m.get("ChannelState") == "6")
            or (m.name == "OriginateResponse" and m.get("Response") == "Success")
            or m.name == "Hangup"
        ):
            continue
        if uid.count("-") != 1:  # the ;2 half (``<session>-a1-2``) is the far end's
            continue
        if m.name == "Hangup":
            leg = uid.partition("-")[2]
            legs.setdefault(leg, []).append(
                RecordedLeg(answered.pop(uid, None), at, int(m.get("Cause") or 0))
            )
        else:
            answered.setdefault(uid, at)
    return legs


def billed(name: str) -> dict[str, int]:
    """Per leg, the seconds its answered attempt was up in the recording."""
    return {
        leg: sum(a.billed_seconds for a in attempts)
        for leg, attempts in recorded_legs(name).items()
    }


def talk_time(name: str) -> float:
    """From the last answer to the first hangup of an answered leg, in the recording."""
    attempts = [a for each in recorded_legs(name).values() for a in each if a.answered_at]
    return min(a.ended_at for a in attempts) - max(a.answered_at or 0 for a in attempts)


@pytest.fixture
def rig(request):
    rig = Rig(**getattr(request, "param", {}))
    yield rig
    rig.stop()


def ended(rig: Rig, sid: str):
    [end] = [e for e in rig.events if e.session_id == sid and e.kind == "session_ended"]
    return end


def legs_of(rig: Rig, sid: str) -> dict[str, tuple[str, int]]:
    """Per leg, the cause and billed seconds of its last end (``leg_ended``, ``leg_failed``)."""
    cdrs = {cdr.leg: cdr for cdr in rig.cdrs().values() if cdr.leg}
    out: dict[str, tuple[str, int]] = {}
    for e in rig.events:
        if e.session_id == sid and e.kind in ("leg_ended", "leg_failed"):
            out[e.leg] = (e.cause, cdrs[e.leg].billed_seconds if e.leg in cdrs else 0)
    return out


def call_actions(name: str, **corrected: int) -> Counter[str]:
    """The recording's call actions, with the counts a correct daemon sends instead."""
    counts = recorded_actions(name)
    for action, count in corrected.items():
        counts[action] = count
    return +counts


# -- the scenarios ----------------------------------------------------------------------


def hang_up_after_talking(rig: Rig, sid: str, seconds: float) -> None:
    """Wait for the destination's answer, talk ``seconds``, hang up from the daemon."""
    rig.run_until(lambda: rig.talking(sid))
    rig.run(seconds)
    rig.wait(rig.manager.hangup(sid))
    rig.run(2)


def run_out(rig: Rig, sid: str, limit: float = 120.0) -> None:
    """Let the session run until it ends by itself."""
    rig.run_until(lambda: any(e.kind == "session_ended" for e in rig.events), limit)


def test_two_legs_talk_and_hang_up(rig):
    name = "real-two_legs_talk_hangup.log"
    sid = rig.callback(SOURCE, "+15550012222")
    hang_up_after_talking(rig, sid, talk_time(name))
    assert ended(rig, sid).reason == Reason.HANGUP
    expected = billed(name)
    assert legs_of(rig, sid) == {
        "source": ("hung up", expected["a1"]),
        "destination": ("hung up", expected["b1"]),
    }
    # one AbsoluteTimeout per leg: nothing changed either leg's cut after its answer
    assert rig.actions() == call_actions(name, AbsoluteTimeout=2)


def test_destination_busy(rig):
    name = "real-busy.log"
    sid = rig.callback(SOURCE, "+15550021111")
    run_out(rig, sid)
    assert ended(rig, sid).reason == "DestinationBusy"
    assert recorded_legs(name)["b1"][0].answered_at is None
    assert legs_of(rig, sid) == {
        "destination": ("busy", 0),
        "source": ("hung up", billed(name)["a1"]),
    }
    assert rig.actions() == call_actions(name, AbsoluteTimeout=1)


def test_destination_never_answers(rig):
    name = "real-noanswer.log"
    sid = rig.callback(SOURCE, "+15550031111")
    run_out(rig, sid)
    assert ended(rig, sid).reason == "DestinationNoAnswer"
    [attempt] = recorded_legs(name)["b1"]
    assert (attempt.answered_at, attempt.cause) == (None, 19)
    legs = legs_of(rig, sid)
    assert legs["destination"] == ("no answer", 0)
    # the source waited through the 45 s ring timeout (the recording ends before its hangup)
    assert legs["source"][0] == "hung up" and 45 <= legs["source"][1] <= 47
    assert rig.actions() == call_actions(name, AbsoluteTimeout=1)


def test_destination_congested_on_every_route(rig):
    name = "real-congestion_failover.log"
    sid = rig.callback(SOURCE, "+15550051111")
    run_out(rig, sid)
    assert ended(rig, sid).reason == "DestinationFailed"
    failed = [(e.provider, e.cause) for e in rig.events if e.kind == "leg_failed"]
    assert failed == [("PSTNA", "congestion"), ("PSTNB", "congestion")]
    recorded = recorded_legs(name)
    assert [a.answered_at for a in recorded["b1"] + recorded["b2"]] == [None, None]
    assert legs_of(rig, sid)["source"] == ("hung up", billed(name)["a1"])
    assert rig.actions() == call_actions(name, AbsoluteTimeout=1)


def test_destination_hangs_up(rig):
    name = "real-destination_hangs_up.log"
    sid = rig.callback(SOURCE, "+15550041111")
    run_out(rig, sid)
    assert ended(rig, sid).reason == Reason.DESTINATION_HANGUP
    expected = billed(name)
    assert legs_of(rig, sid) == {
        "destination": ("hung up", expected["b1"]),
        "source": ("hung up", expected["a1"]),
    }
    assert rig.actions() == call_actions(name, AbsoluteTimeout=2)


def test_source_hangs_up(rig):
    name = "real-source_hangs_up.log"
    sid = rig.callback(SOURCE, "+15550012222")
    rig.run_until(lambda: rig.talking(sid))
    rig.run(talk_time(name))
    source = rig.asterisk.find_channel(f"{sid}-a1")
    assert source is not None
    rig.asterisk.hangup_far_end(source)
    run_out(rig, sid)
    assert ended(rig, sid).reason == Reason.SOURCE_HANGUP
    expected = billed(name)
    assert legs_of(rig, sid) == {
        "source": ("hung up", expected["a1"]),
        "destination": ("hung up", expected["b1"]),
    }
    assert rig.actions() == call_actions(name, AbsoluteTimeout=2)


def test_failover_then_talk(rig):
    name = "real-failover_then_talk.log"
    sid = rig.callback(SOURCE, "+15550061111")
    hang_up_after_talking(rig, sid, talk_time(name))
    assert ended(rig, sid).reason == Reason.HANGUP
    failed = [(e.provider, e.cause) for e in rig.events if e.kind == "leg_failed"]
    assert failed == [("BADPROV", "congestion")]
    expected = billed(name)
    assert (expected["b1"], legs_of(rig, sid)) == (
        0,
        {"destination": ("hung up", expected["b2"]), "source": ("hung up", expected["a1"])},
    )
    assert rig.actions() == call_actions(name, AbsoluteTimeout=2)


def test_third_leg_added_and_dropped(rig):
    name = "real-third_leg_add_drop.log"
    sid = rig.callback(SOURCE, "+15550012222")
    rig.run_until(lambda: rig.talking(sid))
    rig.wait(rig.manager.add_leg(sid, "+15550013333"))
    rig.run_until(lambda: any(e.kind == "party_answered" for e in rig.events))
    rig.run(5)
    rig.wait(rig.manager.drop_leg(sid, "+15550013333"))
    rig.run(3)
    rig.wait(rig.manager.hangup(sid))
    rig.run(2)
    assert ended(rig, sid).reason == Reason.HANGUP
    causes = {leg: cause for leg, (cause, _) in legs_of(rig, sid).items()}
    assert causes == {"additional-1": "kicked", "source": "hung up", "destination": "hung up"}
    assert rig.actions() == call_actions(name, AbsoluteTimeout=3)


#: the recording's account had about 18 s of credit for the two legs; this one has
#: exactly what the recording's billed seconds cost
OUT_OF_CREDIT = billed("real-out_of_credit.log")
CREDIT = SELL.cost(OUT_OF_CREDIT["a1"]) + SELL.cost(OUT_OF_CREDIT["b1"])
#: The recording's daemon cut at the paid time, with the switch's backstop set past it.
#: Today's backstop is whole seconds from its sending, never past the paid time (so up
#: to a second before it), and the daemon cuts BACKSTOP_MARGIN before the earliest one,
#: so that its own cut comes first: the recording's cut made that much earlier bills
#: each leg one started second less (a1 17.01 s -> 16.76 s, b1 16.005 s -> 15.755 s).
#: The user talks under a second less and keeps what those seconds would have cost.
CUT_EARLIER = {
    leg: RecordedLeg(a.answered_at, a.ended_at - BACKSTOP_MARGIN, a.cause).billed_seconds
    for leg, [a] in recorded_legs("real-out_of_credit.log").items()
}


@pytest.mark.parametrize("rig", [{"balance": CREDIT}], indirect=True)
def test_out_of_credit(rig):
    name = "real-out_of_credit.log"
    sid = rig.callback(SOURCE, "+15550012222")
    run_out(rig, sid)
    assert ended(rig, sid).reason == Reason.OUT_OF_CREDIT
    assert CUT_EARLIER == {"a1": OUT_OF_CREDIT["a1"] - 1, "b1": OUT_OF_CREDIT["b1"] - 1}
    assert legs_of(rig, sid) == {
        "source": ("out of credit", CUT_EARLIER["a1"]),
        "destination": ("out of credit", CUT_EARLIER["b1"]),
    }
    assert rig.balance() == CREDIT - SELL.cost(CUT_EARLIER["a1"]) - SELL.cost(CUT_EARLIER["b1"])
    # both Hangups are the daemon's, as recorded. One AbsoluteTimeout per leg, at its
    # answer: the destination's time was reserved when it was dialled, so the account's
    # deadline moved after each answer only within the whole second of the cut already
    # set (the recording's daemon sent 6, three of them within one millisecond)
    assert rig.actions() == call_actions(name, AbsoluteTimeout=2)


BACKSTOP = billed("real-backstop_cut.log")


@pytest.mark.parametrize(
    "rig", [{"balance": SELL.cost(BACKSTOP["a1"]) + SELL.cost(BACKSTOP["b1"])}], indirect=True
)
def test_backstop_cut_while_the_daemon_is_frozen(rig):
    """Asterisk's AbsoluteTimeout cuts the call: never after the paid time, never below zero."""
    name = "real-backstop_cut.log"
    recorded = recorded_legs(name)
    # the recording's cut came 1-2 s after the paid time (the daemon of that time set
    # the backstop at ceil(allowed) + grace): the account went below zero
    assert all(a.cause == 16 for a in recorded["a1"] + recorded["b1"])
    sid = rig.callback(SOURCE, "+15550012222")
    rig.run_until(lambda: rig.talking(sid))
    rig.freeze(60)
    run_out(rig, sid)
    legs = legs_of(rig, sid)
    paid = {"source": BACKSTOP["a1"], "destination": BACKSTOP["b1"]}
    assert all(legs[leg][1] <= paid[leg] for leg in paid), (legs, paid)
    assert rig.balance() >= 0
    # thawed, the daemon's credit timer runs before it reads the switch's Hangups (as the
    # recording's daemon did): its two Hangups find the channels gone. One AbsoluteTimeout
    # per leg, at its answer, as in test_out_of_credit
    assert rig.actions() == call_actions(name, AbsoluteTimeout=2)


def test_hash11_ends_the_destination_and_keeps_the_source(rig):
    name = "real-hash11_userevent.log"
    [command] = [m for m in recorded_messages(name) if m.name == "UserEvent"]
    assert (command["UserEvent"], command["CbCmd"]) == ("CbDtmf", "endb")
    sid = rig.callback(SOURCE, "+15550012222")
    rig.run_until(lambda: rig.talking(sid))
    source = rig.asterisk.find_channel(f"{sid}-a1")
    assert source is not None
    rig.asterisk.key_dtmf(source, "#11")
    rig.run_until(lambda: "destination" in legs_of(rig, sid))
    assert [e.kind for e in rig.events if e.kind == "destination_dropped"] == [
        "destination_dropped"
    ]
    rig.run(3)
    assert "source" not in legs_of(rig, sid)  # the source stays in the room
    rig.wait(rig.manager.hangup(sid))
    rig.run(2)
    assert ended(rig, sid).reason == Reason.HANGUP
    legs = legs_of(rig, sid)
    assert (legs["destination"][0], legs["source"][0]) == ("ended by source", "hung up")
    assert rig.actions() == call_actions(name, AbsoluteTimeout=2)


def test_switch_restart_while_talking(rig):
    first, second = "real-asterisk_restart-conn1.log", "real-asterisk_restart-conn2.log"
    [shutdown] = [m for m in recorded_messages(first) if m.name == "Shutdown"]
    assert (shutdown["Shutdown"], shutdown["Restart"]) == ("Cleanly", "True")
    assert [m.name for m in recorded_messages(second) if m.is_event] == ["FullyBooted"]
    sid = rig.callback(SOURCE, "+15550012222")
    rig.run_until(lambda: rig.talking(sid))
    rig.run(5)
    rig.asterisk.restart(down=3)
    # the switch hangs its channels up a millisecond apart, and the daemon answers each
    # Hangup at once (the recording: the daemon's Hangup of the destination came between
    # the source's Hangup and the destination's, refused "Asterisk is shutting down")
    rig.run(0.1, step=0.001)
    # the refusal said the switch is going: a new callback now would fail, refused at once
    with pytest.raises(CallbackRefused, match="The switch is restarting"):
        rig.callback(SOURCE, "+15550013333")
    run_out(rig, sid)
    assert ended(rig, sid).reason == Reason.SWITCH_LOST
    assert {leg: cause for leg, (cause, _) in legs_of(rig, sid).items()} == {
        "source": "lost",
        "destination": "lost",
    }
    rig.run(5)
    assert rig.switch.connected
    # The recording's one Hangup, the daemon's of the destination as the source's end
    # began the session's end: nothing had said yet that the switch was going (its ;2
    # half hanging up first is what every far-end hang-up looks like), and its refusal
    # ("Asterisk is shutting down") is what says so in time to mark the source lost too
    assert rig.actions() == call_actions(first, AbsoluteTimeout=2)


#: the real trial's account: about six hours of one two-leg call (the recordings'
#: backstop of a lone call was ``Timeout: 21428``), so about 18 minutes each for 20
#: calls at once (the daemon of that time sent 6 AbsoluteTimeouts for 1 call, 85 for 5,
#: 250 for 10, 1,000 for 20)
SIX_HOURS = 2 * SELL.cost(21428)


@pytest.mark.parametrize("calls", [1, 5, 10, 20])
def test_concurrent_calls_of_one_account_send_one_backstop_per_leg(calls):
    """Calls of one account set up one after the other, talking, hung up: each leg's
    cut is set once (the account's shrinking and growing deadline stays beyond each
    backstop's lease, so no other call moves it): linear in the calls."""
    rig = Rig(balance=SIX_HOURS, max_sessions=calls)
    try:
        sids = []
        for i in range(calls):
            sids.append(rig.callback(f"+1555001{1000 + i:04d}", f"+1555001{2000 + i:04d}"))
            rig.run_until(lambda: rig.talking(sids[-1]))
        rig.run(10)
        for sid in sids:
            rig.wait(rig.manager.hangup(sid))
        rig.run(3)
        assert [ended(rig, sid).reason for sid in sids] == [Reason.HANGUP] * calls
        actions = rig.actions()
        assert actions == Counter(
            Originate=2 * calls, Redirect=calls, Hangup=2 * calls, AbsoluteTimeout=2 * calls
        )
        assert all(len(cuts) == 1 for cuts in rig.cuts().values())
    finally:
        rig.stop()
