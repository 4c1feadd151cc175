"""The callback session state machine: transitions, billing, credit, failover, recovery."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from callbackd.core.credit import LegCharge
from callbackd.core.rating import Rate
from callbackd.core.session import (
    BACKSTOP_MARGIN,
    CREDIT_TIMER,
    MAX_WATCHERS,
    RELEASE_TIMEOUT,
    SWITCH_LOST_WINDOW,
    AddLeg,
    ArmTimer,
    BalanceChanged,
    ChargeLeg,
    CreditDeadline,
    DropLeg,
    Finished,
    Hangup,
    HangupSession,
    JoinRoom,
    LegSpec,
    LegState,
    Notify,
    Originate,
    Persist,
    Phase,
    Reason,
    Reconcile,
    RecordAttempt,
    Route,
    Seen,
    SessionError,
    SessionEvent,
    SessionState,
    SetAbsoluteTimeout,
    SwitchLost,
    TimerFired,
    Unwatch,
    Watch,
    Watcher,
    credit_legs,
    start,
    step,
    summary,
)
from callbackd.i18n import progress, translator
from callbackd.switch import (
    LegAnswered,
    LegFailed,
    LegHungUp,
    LegJoined,
    LegRinging,
    RoomCommand,
)

ENGLISH = translator("en")


def render(event, decimals, currency=""):
    """The English progress text of an event (the words moved to callbackd.i18n)."""
    return progress.render(event, ENGLISH, decimals, currency)


def list_text(state):
    """The English LIST reply of a session."""
    return progress.list_text(summary(state)["legs"], ENGLISH)


SID = "cb1k2x9a"
DECIMALS = 5
PROXICOM = Rate("49", 1400)  # 0.014 / min
PAKLINE = Rate("92", 1204)  # 0.01204 / min
BIG = 10**9


def route(*providers: str) -> tuple[Route, ...]:
    return tuple(Route(p, f"PJSIP/123456789@{p.lower()}") for p in providers)


SOURCE = LegSpec("phone:+4930123456", route("PROXICOM", "MKS"), PROXICOM)
DESTINATION = LegSpec("phone:+923001234567", route("PAKLINE", "AVANGARD"), PAKLINE)
EXTRA = LegSpec("phone:+15551230000", route("PROXICOM", "MKS"), PROXICOM)
FREE = LegSpec("sip:bob@example.org", (Route("", "PJSIP/callbackd-sip/sip:bob@example.org"),))


class Session:
    """A session driven by hand: feeds events, keeps every effect."""

    def __init__(self, source=SOURCE, destination=DESTINATION, balance=BIG, now=0.0, **kw):
        self.now = now
        self.state, self.last = start(
            SID, "alice", source, destination, balance=balance, now=now, **kw
        )
        self.all = list(self.last)

    def feed(self, event, now=None):
        if now is not None:
            self.now = now
        self.state, self.last = step(self.state, event, self.now)
        self.all.extend(self.last)
        return self.last

    def talking(self, source_at=1.0, destination_at=3.0):
        self.feed(LegAnswered(f"{SID}-a1", source_at), source_at)
        self.feed(LegAnswered(f"{SID}-b1", destination_at), destination_at)
        return self

    def charges(self):
        return [e for e in self.all if isinstance(e, ChargeLeg)]


def of(effects, kind):
    return [e for e in effects if isinstance(e, kind)]


def events(effects, kind=None):
    found = [e.event for e in effects if isinstance(e, Notify)]
    return [e for e in found if kind is None or e.kind == kind]


# -- starting and connecting --------------------------------------------------------


def test_start_originates_the_source_into_the_waiting_role():
    """A new session dials the source first, with ringback (role wait) and channel id -a1."""
    session = Session()
    [originate] = of(session.last, Originate)
    assert originate.request.role == "wait"
    assert originate.request.channel_id == f"{SID}-a1"
    assert originate.request.room == SID
    assert originate.provider == "PROXICOM"


def test_start_announces_the_source_call_in_the_seed_words():
    """The leg_calling event renders as GTalk2VoIP's "Calling source" line."""
    session = Session()
    [calling] = events(session.last, "leg_calling")
    assert render(calling, DECIMALS) == (
        "Calling source: phone:+4930123456, cost = 0.014 via PROXICOM"
    )


def test_start_persists():
    """The new session is saved."""
    assert of(Session().last, Persist)


def test_source_answer_dials_the_destination_into_the_room():
    """When the source answers, the destination is originated in the join role."""
    session = Session()
    effects = session.feed(LegAnswered(f"{SID}-a1", 1.0), 1.0)
    [originate] = of(effects, Originate)
    assert (originate.request.channel_id, originate.request.role) == (f"{SID}-b1", "join")
    assert session.state.phase is Phase.DESTINATION


def test_destination_answer_moves_the_source_into_the_room():
    """When the destination answers, the source is redirected into the room and they talk."""
    session = Session()
    session.feed(LegAnswered(f"{SID}-a1", 1.0), 1.0)
    effects = session.feed(LegAnswered(f"{SID}-b1", 3.0), 3.0)
    assert of(effects, JoinRoom) == [JoinRoom(f"{SID}-a1", SID)]
    assert session.state.phase is Phase.TALKING


def test_destination_joined_counts_as_its_answer():
    """A LegJoined without a LegAnswered before it connects the call too."""
    session = Session()
    session.feed(LegAnswered(f"{SID}-a1", 1.0), 1.0)
    effects = session.feed(LegJoined(f"{SID}-b1", 3.0, SID), 3.0)
    assert of(effects, JoinRoom)
    assert session.state.leg("destination").answered_at == 3.0


def test_talking_renders_the_sum_of_the_rates_up():
    """ "Remote answered. Now talking. Cost = 0.02604" sums the per-minute rates of both legs."""
    session = Session()
    session.feed(LegAnswered(f"{SID}-a1", 1.0), 1.0)
    [talking] = events(session.feed(LegAnswered(f"{SID}-b1", 3.0), 3.0), "talking")
    assert render(talking, DECIMALS) == "Remote answered. Now talking. Cost = 0.02604"


def test_ringing_is_reported():
    """LegRinging moves the leg to ringing and tells subscribers."""
    session = Session()
    effects = session.feed(LegRinging(f"{SID}-a1", 0.5), 0.5)
    assert session.state.leg("source").state is LegState.RINGING
    assert [e.kind for e in events(effects)] == ["leg_ringing"]


@pytest.mark.parametrize(
    "event",
    [
        LegRinging(f"{SID}-a1", 2.0),
        LegAnswered(f"{SID}-a1", 2.0),
        LegJoined(f"{SID}-a1", 2.0, SID),
        LegAnswered("someoneelse-a1", 2.0),
        LegHungUp("someoneelse-a1", 2.0),
    ],
)
def test_events_that_change_nothing_have_no_effect(event):
    """Duplicates of a connected call's events and foreign channels are ignored.

    No effect at all, the legs as they were; a duplicate only tells the session its
    legs were still there (``seen_at``), a foreign channel's event not even that.
    """
    session = Session().talking()
    before = session.state.to_dict()
    assert session.feed(event, 5.0) == []
    after = session.state.to_dict()
    assert after["legs"] == before["legs"]
    ours = event.channel_id.startswith(SID)
    assert {key for key in before if before[key] != after[key]} == ({"seen_at"} if ours else set())


# -- failures and failover ----------------------------------------------------------


@pytest.mark.parametrize("outcome", ["congestion", "chanunavail", "failed"])
@pytest.mark.parametrize("letter,role", [("a", "source"), ("b", "destination")])
def test_provider_failure_tries_the_next_provider(outcome, letter, role):
    """A provider-side failure originates the same leg over the next route, as attempt 2."""
    session = Session()
    if letter == "b":
        session.feed(LegAnswered(f"{SID}-a1", 1.0), 1.0)
    effects = session.feed(LegFailed(f"{SID}-{letter}1", 2.0, outcome), 2.0)
    [originate] = of(effects, Originate)
    assert originate.request.channel_id == f"{SID}-{letter}2"
    assert originate.provider == session.state.leg(role).routes[1].provider
    assert session.state.reason == ""


def test_step_leaves_the_given_state_untouched():
    """step works on a copy: the state it was given, legs and failures included, is as before."""
    session = Session()
    session.feed(LegFailed(f"{SID}-a1", 2.0, "congestion"), 2.0)
    given_state = session.state
    before = json.dumps(given_state.to_dict())
    session.feed(LegFailed(f"{SID}-a2", 3.0, "congestion"), 3.0)
    assert session.state is not given_state
    assert session.state.to_dict() != json.loads(before)
    assert json.dumps(given_state.to_dict()) == before


@pytest.mark.parametrize(
    "outcome,reason",
    [("busy", "Busy"), ("noanswer", "NoAnswer"), ("rejected", "Rejected")],
)
@pytest.mark.parametrize("letter,role", [("a", "Source"), ("b", "Destination")])
def test_user_failure_ends_the_session(outcome, reason, letter, role):
    """A busy, unanswered or rejected source or destination ends the session without failover."""
    session = Session()
    if letter == "b":
        session.feed(LegAnswered(f"{SID}-a1", 1.0), 1.0)
    effects = session.feed(LegFailed(f"{SID}-{letter}1", 2.0, outcome), 2.0)
    assert not of(effects, Originate)
    assert session.state.reason == role + reason


@pytest.mark.parametrize(
    ("cause", "message"),
    [
        (34, "Source congestion, trying MKS..."),
        (38, "Source congestion, trying MKS..."),
        (17, "Source busy. Call aborted!"),
        (19, "Source no answer. Call aborted!"),
    ],
)
def test_a_hangup_before_answer_reads_its_cause(cause, message):
    """A leg hung up before answering fails as its Q.850 cause says (the one cause table)."""
    session = Session()
    [failed] = events(session.feed(LegHungUp(f"{SID}-a1", 2.0, cause), 2.0), "leg_failed")
    assert render(failed, DECIMALS) == message


def test_failover_message_names_the_next_provider():
    """ "Source congestion, trying MKS..." tells the user what comes next."""
    session = Session()
    [failed] = events(session.feed(LegFailed(f"{SID}-a1", 2.0, "congestion"), 2.0), "leg_failed")
    assert render(failed, DECIMALS) == "Source congestion, trying MKS..."


def test_destination_busy_message_aborts_the_call():
    """ "Destination busy. Call aborted!" when the destination is busy."""
    session = Session()
    session.feed(LegAnswered(f"{SID}-a1", 1.0), 1.0)
    [failed] = events(session.feed(LegFailed(f"{SID}-b1", 2.0, "busy", 17), 2.0), "leg_failed")
    assert render(failed, DECIMALS) == "Destination busy. Call aborted!"


def test_destination_failure_releases_the_waiting_source():
    """A failed destination hangs up the source, which is then billed and the session ends."""
    session = Session()
    session.feed(LegAnswered(f"{SID}-a1", 1.0), 1.0)
    effects = session.feed(LegFailed(f"{SID}-b1", 4.0, "busy"), 4.0)
    assert of(effects, Hangup) == [Hangup(f"{SID}-a1")]
    effects = session.feed(LegHungUp(f"{SID}-a1", 4.5), 4.5)
    [finished] = of(effects, Finished)
    assert finished.cdr.cause == "DestinationBusy"
    source_charge = next(c for c in session.charges() if c.leg == "source")
    assert source_charge.cost == PROXICOM.cost(4)


def test_exhausted_routes_end_the_session():
    """When the last provider fails too, the session ends with SourceFailed."""
    session = Session()
    session.feed(LegFailed(f"{SID}-a1", 1.0, "congestion"), 1.0)
    effects = session.feed(LegFailed(f"{SID}-a2", 2.0, "congestion"), 2.0)
    assert not of(effects, Originate)
    assert session.state.reason == "SourceFailed"
    assert session.state.finished


def test_failed_attempts_are_recorded_per_provider():
    """Each attempt ends with a RecordAttempt for its provider."""
    session = Session()
    session.feed(LegRinging(f"{SID}-a1", 0.4), 0.4)
    effects = session.feed(LegFailed(f"{SID}-a1", 1.0, "congestion"), 1.0)
    [attempt] = of(effects, RecordAttempt)
    assert (attempt.provider, attempt.answered, attempt.pdd) == ("PROXICOM", False, 0.4)


def test_late_answer_of_a_superseded_attempt_is_hung_up():
    """An attempt given up for the next provider that answers anyway is hung up, not used."""
    session = Session()
    session.feed(LegFailed(f"{SID}-a1", 1.0, "congestion"), 1.0)
    effects = session.feed(LegAnswered(f"{SID}-a1", 1.5), 1.5)
    assert of(effects, Hangup) == [Hangup(f"{SID}-a1")]
    assert session.state.leg("source").state is LegState.CALLING


def test_ring_guard_gives_up_on_a_silent_leg():
    """When the switch never reports on a leg, its ring guard hangs it up as no answer."""
    session = Session()
    effects = session.feed(TimerFired("ring-a"), 100.0)
    assert Hangup(f"{SID}-a1") in effects
    assert session.state.reason == "SourceNoAnswer"


# -- conference legs ----------------------------------------------------------------


def test_add_is_refused_before_the_call_is_connected():
    """ADD while the destination still rings raises SessionError."""
    session = Session()
    session.feed(LegAnswered(f"{SID}-a1", 1.0), 1.0)
    with pytest.raises(SessionError):
        session.feed(AddLeg(EXTRA), 2.0)


def test_add_originates_an_additional_leg_into_the_room():
    """ADD while talking dials leg c into the room."""
    session = Session().talking()
    effects = session.feed(AddLeg(EXTRA), 5.0)
    [originate] = of(effects, Originate)
    assert (originate.request.channel_id, originate.request.role) == (f"{SID}-c1", "join")
    [calling] = events(effects, "leg_calling")
    assert render(calling, DECIMALS).startswith("Calling additional: phone:+15551230000")


def test_add_refuses_an_address_already_in_the_call():
    """A party already in the call cannot be added twice."""
    session = Session().talking()
    with pytest.raises(SessionError):
        session.feed(AddLeg(SOURCE), 5.0)


def test_additional_answer_renders_party_answered_with_its_rate():
    """ "Party answered. Now talking. Cost = 0.014" uses the added leg's rate."""
    session = Session().talking()
    session.feed(AddLeg(EXTRA), 5.0)
    [answered] = events(session.feed(LegAnswered(f"{SID}-c1", 7.0), 7.0), "party_answered")
    assert render(answered, DECIMALS) == "Party answered. Now talking. Cost = 0.014"


def test_additional_busy_does_not_end_the_session():
    """A busy additional party leaves the session talking."""
    session = Session().talking()
    session.feed(AddLeg(EXTRA), 5.0)
    session.feed(LegFailed(f"{SID}-c1", 6.0, "busy"), 6.0)
    assert session.state.phase is Phase.TALKING


@pytest.mark.parametrize("target", ["source", "destination", "phone:+4930123456"])
def test_del_refuses_source_and_destination(target):
    """DEL of the source or the destination raises SessionError."""
    session = Session().talking()
    with pytest.raises(SessionError):
        session.feed(DropLeg(target), 5.0)


def test_del_of_an_unknown_leg_is_refused():
    """DEL of an address that is not in the call raises SessionError."""
    session = Session().talking()
    with pytest.raises(SessionError):
        session.feed(DropLeg("phone:+15550000000"), 5.0)


@pytest.mark.parametrize("target", ["phone:+15551230000", "additional-1", "c"])
def test_del_hangs_up_the_additional_leg_only(target):
    """DEL hangs up the additional leg; its end is "kicked" and the session goes on."""
    session = Session().talking()
    session.feed(AddLeg(EXTRA), 5.0)
    session.feed(LegAnswered(f"{SID}-c1", 6.0), 6.0)
    effects = session.feed(DropLeg(target), 10.0)
    assert of(effects, Hangup) == [Hangup(f"{SID}-c1")]
    session.feed(LegHungUp(f"{SID}-c1", 10.2), 10.2)
    leg = session.state.leg("additional-1")
    assert (leg.state, leg.cause) == (LegState.ENDED, "kicked")
    assert session.state.phase is Phase.TALKING


def test_list_shows_connected_legs_with_providers():
    """LIST names each connected leg and its provider."""
    session = Session().talking()
    session.feed(AddLeg(EXTRA), 5.0)
    session.feed(LegAnswered(f"{SID}-c1", 6.0), 6.0)
    assert list_text(session.state) == (
        "List of connected legs: 1. Source: phone:+4930123456 Via: PROXICOM, "
        "2. Destination: phone:+923001234567 Via: PAKLINE, "
        "3. Additional: phone:+15551230000 Via: PROXICOM"
    )


# -- ending and billing -------------------------------------------------------------


def test_hangup_releases_every_leg():
    """HANGUP hangs up every live leg."""
    session = Session().talking()
    session.feed(AddLeg(EXTRA), 5.0)
    effects = session.feed(HangupSession(), 8.0)
    assert {h.channel_id for h in of(effects, Hangup)} == {f"{SID}-a1", f"{SID}-b1", f"{SID}-c1"}


def test_hangup_finishes_once_every_leg_has_ended():
    """The session finishes with EndedByHangup when the switch confirms the last hangup."""
    session = Session().talking()
    session.feed(HangupSession(), 31.0)
    assert not of(session.feed(LegHungUp(f"{SID}-a1", 31.0), 31.0), Finished)
    effects = session.feed(LegHungUp(f"{SID}-b1", 31.0), 31.0)
    [ended] = events(effects, "session_ended")
    assert render(ended, DECIMALS) == (
        "Call aborted! Thank you!\nCharged time: 30 secs. Reason = EndedByHangup"
    )


def test_each_leg_is_billed_from_its_own_answer_to_its_own_end():
    """Source and destination are billed separately with their switch timestamps."""
    session = Session().talking(source_at=100.0, destination_at=110.0)
    session.feed(LegHungUp(f"{SID}-b1", 138.2), 138.5)
    session.feed(LegHungUp(f"{SID}-a1", 138.3), 138.5)
    costs = {c.leg: (c.billed_seconds, c.cost) for c in session.charges()}
    assert costs == {
        "source": (39, PROXICOM.cost(39)),
        "destination": (29, PAKLINE.cost(29)),
    }


def test_leg_cdrs_carry_the_provider_and_times():
    """A leg's CDR holds its provider, answer and end times, rate and cost."""
    session = Session().talking(source_at=100.0, destination_at=110.0)
    session.feed(LegHungUp(f"{SID}-b1", 140.0), 140.0)
    session.feed(LegHungUp(f"{SID}-a1", 140.0), 140.0)
    cdr = next(c.cdr for c in session.charges() if c.leg == "destination")
    assert (cdr.cdr_id, cdr.provider, cdr.answered_at, cdr.ended_at, cdr.rate, cdr.cost) == (
        f"{SID}-b",
        "PAKLINE",
        110.0,
        140.0,
        1204,
        PAKLINE.cost(30),
    )


def test_source_hangup_ends_the_session_and_releases_the_rest():
    """When the source hangs up, the destination and additional legs are released."""
    session = Session().talking()
    session.feed(AddLeg(EXTRA), 5.0)
    effects = session.feed(LegHungUp(f"{SID}-a1", 9.0), 9.0)
    assert {h.channel_id for h in of(effects, Hangup)} == {f"{SID}-b1", f"{SID}-c1"}
    assert session.state.reason == Reason.SOURCE_HANGUP


def test_destination_hangup_ends_the_session():
    """When the destination hangs up, the reason is DestinationHangup."""
    session = Session().talking()
    session.feed(LegHungUp(f"{SID}-b1", 9.0), 9.0)
    assert session.state.reason == Reason.DESTINATION_HANGUP


def test_a_leg_ended_twice_is_billed_once():
    """A duplicate LegHungUp does not charge the leg again."""
    session = Session().talking()
    session.feed(LegHungUp(f"{SID}-b1", 20.0), 20.0)
    session.feed(LegHungUp(f"{SID}-b1", 21.0), 21.0)
    session.feed(LegHungUp(f"{SID}-a1", 21.0), 21.0)
    assert sorted(c.leg for c in session.charges()) == ["destination", "source"]


def test_unanswered_legs_get_a_zero_cost_cdr_at_the_end():
    """A leg that never answered is charged 0 with its cause when the session finishes."""
    session = Session()
    session.feed(LegFailed(f"{SID}-a1", 1.0, "busy"), 1.0)
    charges = {c.leg: c for c in session.charges()}
    assert charges["source"].cost == 0 and charges["source"].cdr.cause == "busy"
    assert charges["destination"].cost == 0


def test_an_answer_reported_after_the_hangup_is_billed():
    """An answer that arrives after the leg's hangup (OriginateResponse last) is still billed."""
    session = Session().talking()
    session.feed(AddLeg(EXTRA), 5.0)
    session.feed(LegHungUp(f"{SID}-c1", 20.0), 20.0)
    assert not [c for c in session.charges() if c.leg == "additional-1"]
    session.feed(LegAnswered(f"{SID}-c1", 8.0), 20.1)
    [charge] = [c for c in session.charges() if c.leg == "additional-1"]
    assert charge.cost == PROXICOM.cost(12)


def test_free_legs_cost_nothing():
    """A SIP source costs nothing, however long it is up."""
    session = Session(source=FREE).talking(source_at=0.0, destination_at=0.0)
    session.feed(LegHungUp(f"{SID}-a1", 600.0), 600.0)
    session.feed(LegHungUp(f"{SID}-b1", 600.0), 600.0)
    charge = next(c for c in session.charges() if c.leg == "source")
    assert (charge.cost, charge.billed_seconds) == (0, 600)


def test_session_cdr_sums_the_leg_costs():
    """The session CDR's cost is the sum of its legs' costs."""
    session = Session().talking()
    session.feed(HangupSession(), 30.0)
    session.feed(LegHungUp(f"{SID}-a1", 30.0), 30.0)
    session.feed(LegHungUp(f"{SID}-b1", 30.0), 30.0)
    [finished] = of(session.all, Finished)
    assert finished.cdr.cost == sum(c.cost for c in session.charges()) > 0


def test_release_timer_bills_up_to_the_hangup_request():
    """A hangup the switch never confirms ends the leg at the time it was requested."""
    session = Session().talking(source_at=0.0, destination_at=0.0)
    session.feed(HangupSession(), 30.0)
    session.feed(TimerFired("release-a"), 30.0 + RELEASE_TIMEOUT)
    session.feed(TimerFired("release-b"), 30.0 + RELEASE_TIMEOUT)
    assert session.state.finished
    assert {c.billed_seconds for c in session.charges()} == {30}


def test_a_finished_session_ignores_everything():
    """After Finished, events change nothing and commands are refused."""
    session = Session()
    session.feed(LegFailed(f"{SID}-a1", 1.0, "busy"), 1.0)
    assert session.feed(LegAnswered(f"{SID}-a1", 2.0), 2.0) == []
    with pytest.raises(SessionError):
        session.feed(AddLeg(EXTRA), 2.0)


# -- credit control -----------------------------------------------------------------


def test_credit_timer_matches_the_balance():
    """With credit for 60 s of both legs, the timer is armed for 60 s after the talk starts."""
    balance = PROXICOM.cost(60) + PAKLINE.cost(60)
    session = Session(balance=balance)
    session.feed(LegAnswered(f"{SID}-a1", 10.0), 10.0)
    effects = session.feed(LegAnswered(f"{SID}-b1", 10.0), 10.0)
    # a margin before the backstops (whole seconds: here the paid time itself)
    assert ArmTimer(CREDIT_TIMER, 60 - BACKSTOP_MARGIN) in effects


def test_credit_sets_absolute_timeouts_on_billed_legs():
    """Every billed leg up gets an AbsoluteTimeout a little after the daemon's timer."""
    balance = PROXICOM.cost(60) + PAKLINE.cost(60)
    session = Session(balance=balance)
    effects = session.feed(LegAnswered(f"{SID}-a1", 10.0), 10.0)
    effects += session.feed(LegAnswered(f"{SID}-b1", 10.0), 10.0)
    assert set(of(effects, SetAbsoluteTimeout)) == {
        SetAbsoluteTimeout(f"{SID}-a1", 60),
        SetAbsoluteTimeout(f"{SID}-b1", 60),
    }


def test_an_unchanged_cut_is_not_sent_again():
    """A recompute that leaves a leg's cut where it was sends the switch nothing."""
    balance = PROXICOM.cost(60) + PAKLINE.cost(60)
    session = Session(balance=balance)
    session.talking(source_at=10.0, destination_at=10.0)
    effects = session.feed(BalanceChanged(balance), 10.4)
    assert of(effects, SetAbsoluteTimeout) == []


def test_a_cut_moved_earlier_is_sent_again():
    """Less credit (a later leg, a smaller balance) moves the switch's cut: it is resent."""
    balance = PROXICOM.cost(60) + PAKLINE.cost(60)
    session = Session(balance=balance)
    session.talking(source_at=10.0, destination_at=10.0)
    effects = session.feed(BalanceChanged(balance // 2), 10.0)
    assert set(of(effects, SetAbsoluteTimeout)) == {
        SetAbsoluteTimeout(f"{SID}-a1", 30),
        SetAbsoluteTimeout(f"{SID}-b1", 30),
    }


def test_a_cut_in_the_same_whole_second_is_not_sent_again():
    """A later cut in the whole second of the one the switch holds is not worth an action."""
    session = Session().talking(source_at=0.0, destination_at=0.0)
    session.feed(CreditDeadline(20.0), 0.0)
    # 50 ms later the account's deadline crept forward by 50 ms, into the legs' 21st
    # billed second: the best cut from now (0.05 + 20) falls in second 20 like the one
    # the switch holds (0.0 + 20)
    effects = session.feed(CreditDeadline(20.05), 0.05)
    assert of(effects, SetAbsoluteTimeout) == []
    # a second more is a real change
    effects = session.feed(CreditDeadline(21.05), 0.05)
    assert set(of(effects, SetAbsoluteTimeout)) == {
        SetAbsoluteTimeout(f"{SID}-a1", 21),
        SetAbsoluteTimeout(f"{SID}-b1", 21),
    }


def test_the_daemon_cuts_a_margin_before_a_backstop_short_of_the_paid_time():
    """The switch's cut (whole seconds from the send) may fall up to a second before the
    paid time: the daemon's own cut comes a margin before it, for the credit and billed
    by the seconds talked."""
    session = Session().talking(source_at=10.0, destination_at=10.0)
    # the account's deadline, heard 0.6 s later: paid until 70.0, a cut from now 69.6
    effects = session.feed(CreditDeadline(70.0), 10.6)
    assert set(of(effects, SetAbsoluteTimeout)) == {
        SetAbsoluteTimeout(f"{SID}-a1", 59),
        SetAbsoluteTimeout(f"{SID}-b1", 59),
    }
    [arm] = credit_arms(effects)
    assert arm == pytest.approx(59 - BACKSTOP_MARGIN)
    effects = session.feed(TimerFired(CREDIT_TIMER), 10.6 + arm)
    assert {h.channel_id for h in of(effects, Hangup)} == {f"{SID}-a1", f"{SID}-b1"}
    assert session.state.reason == Reason.OUT_OF_CREDIT
    for channel in ("a1", "b1"):
        session.feed(LegHungUp(f"{SID}-{channel}", 69.36, 16), 69.36)
    # 59.36 s talked: 60 started seconds billed, no more than paid
    assert [c.billed_seconds for c in session.charges()] == [60, 60]


def test_credit_timer_cuts_every_leg_with_out_of_credit():
    """When the credit timer fires, every leg is hung up and the reason is OutOfCredit."""
    balance = PROXICOM.cost(60) + PAKLINE.cost(60)
    session = Session(balance=balance)
    session.talking(source_at=10.0, destination_at=10.0)
    effects = session.feed(TimerFired(CREDIT_TIMER), 70.0)
    assert {h.channel_id for h in of(effects, Hangup)} == {f"{SID}-a1", f"{SID}-b1"}
    session.feed(LegHungUp(f"{SID}-a1", 70.0), 70.0)
    session.feed(LegHungUp(f"{SID}-b1", 70.0), 70.0)
    assert session.state.reason == Reason.OUT_OF_CREDIT
    assert sum(c.cost for c in session.charges()) <= balance


def test_top_up_extends_the_credit_timer():
    """A BalanceChanged re-arms the timer further away."""
    balance = PROXICOM.cost(60) + PAKLINE.cost(60)
    session = Session(balance=balance).talking(source_at=10.0, destination_at=10.0)
    effects = session.feed(BalanceChanged(balance * 2), 40.0)
    [arm] = [a for a in of(effects, ArmTimer) if a.name == CREDIT_TIMER]
    assert arm.seconds == 90 - BACKSTOP_MARGIN


def test_a_credit_timer_after_a_top_up_re_arms_instead_of_cutting():
    """A credit timer that fires when more credit is known re-arms and hangs nothing up."""
    balance = PROXICOM.cost(60) + PAKLINE.cost(60)
    session = Session(balance=balance).talking(source_at=10.0, destination_at=10.0)
    session.state.balance *= 2  # as if a top-up had been applied without a recompute
    effects = session.feed(TimerFired(CREDIT_TIMER), 70.0)
    assert not of(effects, Hangup)
    assert ArmTimer(CREDIT_TIMER, 60 - BACKSTOP_MARGIN) in effects


def test_dropping_a_billed_leg_lengthens_the_allowed_time():
    """When an additional leg ends, the remaining legs may stay up longer."""
    session = Session(balance=PROXICOM.cost(600)).talking(0.0, 0.0)
    session.feed(AddLeg(EXTRA), 0.0)
    session.feed(LegAnswered(f"{SID}-c1", 0.0), 0.0)
    before = session.state.credit_deadline
    effects = session.feed(DropLeg("c"), 5.0)
    # the daemon's cut stays a margin before the backstops the switch holds (no action
    # for a later paid time while they are distant); the credit timer renews them a
    # minute before, and the cut moves past the old one
    [renewal] = [e for e in effects if isinstance(e, ArmTimer) and e.name == CREDIT_TIMER]
    assert renewal.seconds < before - 5.0
    effects = session.feed(TimerFired(CREDIT_TIMER), 5.0 + renewal.seconds)
    assert not of(effects, Hangup)
    assert of(effects, SetAbsoluteTimeout)
    assert session.state.credit_deadline > before


def test_free_legs_arm_no_credit_timer():
    """A session of free legs only never arms the credit timer."""
    free_destination = LegSpec("xmpp:bob@example.org", (Route("", "Motif/x/bob@example.org"),))
    session = Session(source=FREE, destination=free_destination, balance=0).talking()
    assert not [a for a in of(session.all, ArmTimer) if a.name == CREDIT_TIMER]


def test_no_credit_at_all_ends_the_session_at_once():
    """Without credit for a single second the session ends before any leg answers."""
    session = Session(balance=0)
    assert session.state.reason == Reason.OUT_OF_CREDIT
    assert Hangup(f"{SID}-a1") in session.all


def test_credit_update_is_reported():
    """BalanceChanged tells subscribers the new balance."""
    session = Session().talking()
    [event] = events(session.feed(BalanceChanged(1_500_000), 5.0), "credit_updated")
    assert render(event, DECIMALS, "EUR") == "Balance: 15.00 EUR"


# -- the account's shared deadline --------------------------------------------------


def credit_arms(effects):
    return [a.seconds for a in of(effects, ArmTimer) if a.name == CREDIT_TIMER]


def test_account_deadline_earlier_than_the_own_limit_arms_the_timer():
    """A CreditDeadline before what the balance alone allows moves the timer and timeouts."""
    session = Session().talking(0.0, 0.0)
    effects = session.feed(CreditDeadline(40.0), 10.0)
    assert credit_arms(effects) == [30 - BACKSTOP_MARGIN]
    assert set(of(effects, SetAbsoluteTimeout)) == {
        SetAbsoluteTimeout(f"{SID}-a1", 30),
        SetAbsoluteTimeout(f"{SID}-b1", 30),
    }


def test_account_deadline_never_lengthens_the_own_limit():
    """A CreditDeadline later than the session's own limit leaves the own limit in force."""
    balance = PROXICOM.cost(60) + PAKLINE.cost(60)
    session = Session(balance=balance).talking(0.0, 0.0)
    effects = session.feed(CreditDeadline(500.0), 10.0)
    assert credit_arms(effects) == [50 - BACKSTOP_MARGIN]


def test_account_deadline_cuts_every_leg_with_out_of_credit():
    """When the timer armed for the account's deadline fires, the session ends OutOfCredit."""
    session = Session().talking(0.0, 0.0)
    session.feed(CreditDeadline(40.0), 10.0)
    effects = session.feed(TimerFired(CREDIT_TIMER), 40.0)
    assert {h.channel_id for h in of(effects, Hangup)} == {f"{SID}-a1", f"{SID}-b1"}
    assert session.state.reason == Reason.OUT_OF_CREDIT


def test_daily_limit_deadline_ends_with_its_own_reason():
    """A deadline from the daily cap ends the session as DailyLimit, legs cut 'daily limit'."""
    session = Session().talking(0.0, 0.0)
    session.feed(CreditDeadline(20.0, Reason.DAILY_LIMIT), 5.0)
    session.feed(TimerFired(CREDIT_TIMER), 20.0)
    session.feed(LegHungUp(f"{SID}-a1", 20.0), 20.0)
    session.feed(LegHungUp(f"{SID}-b1", 20.0), 20.0)
    assert {leg.cause for leg in session.state.legs} == {"daily limit"}
    [ended] = events(session.all, "session_ended")
    assert render(ended, DECIMALS).endswith("Reason = DailyLimit")


def test_a_deadline_already_past_ends_the_session_at_once():
    """A CreditDeadline at or before now releases every leg straight away."""
    session = Session().talking(0.0, 0.0)
    effects = session.feed(CreditDeadline(8.0), 10.0)
    assert {h.channel_id for h in of(effects, Hangup)} == {f"{SID}-a1", f"{SID}-b1"}


def test_the_same_deadline_again_changes_nothing():
    """Feeding an unchanged CreditDeadline has no effect at all (no re-arming, no persist)."""
    session = Session().talking(0.0, 0.0)
    session.feed(CreditDeadline(40.0), 10.0)
    assert session.feed(CreditDeadline(40.0), 12.0) == []


def test_lifting_the_account_deadline_restores_the_own_limit():
    """CreditDeadline(None) re-arms for what the session's own balance allows."""
    balance = PROXICOM.cost(100) + PAKLINE.cost(100)
    session = Session(balance=balance).talking(0.0, 0.0)
    session.feed(CreditDeadline(30.0), 10.0)
    effects = session.feed(CreditDeadline(None), 20.0)
    assert credit_arms(effects) == [80 - BACKSTOP_MARGIN]


def test_free_sessions_ignore_the_account_deadline():
    """A session of free legs is not cut by the account's deadline."""
    free_destination = LegSpec("xmpp:bob@example.org", (Route("", "Motif/x/bob@example.org"),))
    session = Session(source=FREE, destination=free_destination, balance=0).talking()
    session.feed(CreditDeadline(5.0), 10.0)
    assert not session.state.reason and not of(session.all, Hangup)


def test_a_leg_being_dialled_is_held_to_the_account_deadline():
    """Before the destination answers, the dialled leg already counts: the timer is armed."""
    session = Session()
    session.feed(LegAnswered(f"{SID}-a1", 2.0), 2.0)
    effects = session.feed(CreditDeadline(32.0), 2.0)
    assert credit_arms(effects) == [30 - BACKSTOP_MARGIN]


def test_credit_legs_split_going_and_released_legs():
    """credit_legs: legs up with their elapsed seconds, dialled legs at 0, released apart."""
    session = Session().talking(0.0, 0.0)
    session.feed(AddLeg(EXTRA), 10.0)
    assert credit_legs(session.state, 10.5) == (
        [LegCharge(PROXICOM, 11), LegCharge(PAKLINE, 11), LegCharge(PROXICOM, 0)],
        [],
    )
    session.feed(HangupSession(), 20.0)
    going, releasing = credit_legs(session.state, 20.0)
    assert going == [] and releasing == [LegCharge(PROXICOM, 20), LegCharge(PAKLINE, 20)]


def test_the_account_deadline_survives_persistence():
    """The shared deadline and its reason round-trip through to_dict/from_dict."""
    session = Session().talking(0.0, 0.0)
    session.feed(CreditDeadline(40.0, Reason.DAILY_LIMIT), 10.0)
    data = json.loads(json.dumps(session.state.to_dict()))
    restored = SessionState.from_dict(data)
    assert (restored.shared_deadline, restored.shared_reason) == (40.0, Reason.DAILY_LIMIT)


# -- #11: the source ends the destination --------------------------------------------

KEYED = RoomCommand(SID, "endb", 10.0, f"{SID}-a1")


def test_hash11_hangs_up_the_destination_only():
    """#11 while talking hangs up the destination; the source stays, the session goes on."""
    session = Session().talking()
    effects = session.feed(KEYED, 10.0)
    assert of(effects, Hangup) == [Hangup(f"{SID}-b1")]
    [dropped] = events(effects, "destination_dropped")
    assert render(dropped, DECIMALS) == "Destination disconnected by #11."
    session.feed(LegHungUp(f"{SID}-b1", 10.2), 10.2)
    assert session.state.phase is Phase.TALKING and not session.state.reason
    assert session.state.leg("destination").cause == "ended by source"
    assert session.state.leg("source").state is LegState.UP
    assert not of(session.all, Finished)


def test_after_hash11_another_party_can_be_added_and_the_source_ends_it():
    """The source alone in the room can ADD; its own hangup then ends the session."""
    session = Session().talking()
    session.feed(KEYED, 10.0)
    session.feed(LegHungUp(f"{SID}-b1", 10.2), 10.2)
    [originate] = of(session.feed(AddLeg(EXTRA), 12.0), Originate)
    assert originate.request.role == "join"
    session.feed(LegAnswered(f"{SID}-c1", 15.0), 15.0)
    session.feed(LegHungUp(f"{SID}-a1", 20.0), 20.0)
    assert session.state.reason == Reason.SOURCE_HANGUP


def test_hash11_in_a_conference_ends_every_leg_but_the_source():
    """With a third leg up (or ringing), #11 hangs up the destination and the third leg."""
    session = Session().talking()
    session.feed(AddLeg(EXTRA), 5.0)
    effects = session.feed(KEYED, 10.0)
    assert {h.channel_id for h in of(effects, Hangup)} == {f"{SID}-b1", f"{SID}-c1"}
    session.feed(LegHungUp(f"{SID}-b1", 10.1), 10.1)
    session.feed(LegFailed(f"{SID}-c1", 10.1, "noanswer"), 10.1)
    assert not session.state.reason
    assert {leg.cause for leg in session.state.legs if not leg.live} == {"ended by source"}


def test_hash11_with_only_a_third_leg_left_says_so():
    """After the destination went, #11 ends the additional legs with their own words."""
    session = Session().talking()
    session.feed(KEYED, 6.0)
    session.feed(LegHungUp(f"{SID}-b1", 6.1), 6.1)
    session.feed(AddLeg(EXTRA), 7.0)
    effects = session.feed(KEYED, 10.0)
    assert of(effects, Hangup) == [Hangup(f"{SID}-c1")]
    [dropped] = events(effects, "destination_dropped")
    assert render(dropped, DECIMALS) == "Additional parties disconnected by #11."


def test_hash11_cancels_a_ringing_destination_and_seats_the_source():
    """With the destination still ringing, #11 cancels it and moves the source into the room."""
    session = Session()
    session.feed(LegAnswered(f"{SID}-a1", 1.0), 1.0)
    session.feed(LegRinging(f"{SID}-b1", 2.0), 2.0)
    effects = session.feed(KEYED, 4.0)
    assert of(effects, Hangup) == [Hangup(f"{SID}-b1")]
    assert of(effects, JoinRoom) == [JoinRoom(f"{SID}-a1", SID)]
    session.feed(LegFailed(f"{SID}-b1", 4.1, "noanswer"), 4.1)
    assert session.state.phase is Phase.TALKING and not session.state.reason
    assert of(session.feed(AddLeg(EXTRA), 5.0), Originate)


@pytest.mark.parametrize(
    "setup",
    [
        lambda s: None,  # the source still rings: no destination yet
        lambda s: (s.talking(), s.feed(KEYED, 5.0), s.feed(LegHungUp(f"{SID}-b1", 5.1), 5.1)),
        lambda s: (s.talking(), s.feed(KEYED, 5.0)),  # the destination is already going
        lambda s: (s.talking(), s.feed(HangupSession(), 5.0)),
    ],
)
def test_hash11_with_no_destination_does_nothing(setup):
    """With no destination to end (or the session ending), #11 changes nothing."""
    session = Session()
    setup(session)
    before = session.state
    assert session.feed(KEYED, 9.0) == []
    assert session.state == before


def test_unknown_room_command_does_nothing():
    """A room command the machine does not know changes nothing."""
    session = Session().talking()
    assert session.feed(RoomCommand(SID, "reboot", 9.0), 9.0) == []


# -- the switch going away ------------------------------------------------------------


def test_switch_lost_ends_the_session_with_its_own_reason_and_no_hangup():
    """SwitchLost: Reason SwitchLost, every leg lost, no hangup asked of the switch."""
    session = Session().talking(1.0, 3.0)
    effects = session.feed(SwitchLost(), 20.0)
    assert session.state.reason == Reason.SWITCH_LOST
    assert not of(effects, Hangup)
    assert not [e for e in effects if isinstance(e, ArmTimer) and e.name.startswith("release")]
    session.feed(LegHungUp(f"{SID}-a1", 19.9), 20.1)
    effects = session.feed(LegHungUp(f"{SID}-b1", 19.9), 20.1)
    [ended] = events(effects, "session_ended")
    assert ended.reason == Reason.SWITCH_LOST
    assert [c.cdr.cause for c in session.charges()] == ["lost", "lost"]
    assert not of(session.all, Hangup)


def test_switch_lost_legs_whose_end_never_came_are_closed_by_the_reconciliation():
    """Lost legs with no Hangup event end when the switch is back, billed to the last seen."""
    session = Session().talking(1.0, 3.0)
    session.feed(SwitchLost(), 20.0)
    session.feed(Seen(), 21.0)  # the connection went (a graceful stop: the calls went on)
    assert not session.state.finished
    effects = session.feed(Reconcile({}, 60.0, switch_started_at=50.0), 60.0)
    assert {c.leg: (c.billed_seconds, c.cdr.cause) for c in session.charges()} == {
        "source": (20, "lost"),
        "destination": (18, "lost"),
    }
    assert not of(effects, Hangup)
    assert session.state.finished


def test_switch_lost_relabels_a_leg_end_of_the_same_instant():
    """The real restart: the source's Hangup, the refused hangup of b, then the shutdown."""
    session = Session().talking(1.0, 3.0)
    effects = session.feed(LegHungUp(f"{SID}-a1", 47.6), 47.6)
    assert of(effects, Hangup) == [Hangup(f"{SID}-b1")]  # sent before anyone knew
    assert session.state.reason == Reason.SOURCE_HANGUP
    session.feed(SwitchLost(), 47.6 + SWITCH_LOST_WINDOW / 2)
    effects = session.feed(LegHungUp(f"{SID}-b1", 47.6), 48.0)
    [ended] = events(effects, "session_ended")
    assert ended.reason == Reason.SWITCH_LOST
    assert [leg.cause for leg in session.state.legs] == ["lost", "lost"]
    # every lost leg lost: the source's CDR and leg_ended too, though its end came first
    assert {c.leg: c.cdr.cause for c in session.charges()} == {
        "source": "lost",
        "destination": "lost",
    }
    assert [(e.leg, e.cause) for e in events(session.all, "leg_ended")] == [
        ("destination", "lost"),
        ("source", "lost"),
    ]
    assert [e.kind for e in events(effects)][-1] == "session_ended"


def test_a_leg_that_ends_the_session_is_charged_once_when_it_finishes():
    """The source's own hang-up: its charge waits for the session's finish, and counts
    for the account meanwhile as a leg being released."""
    session = Session().talking(1.0, 3.0)
    effects = session.feed(LegHungUp(f"{SID}-a1", 20.5), 20.5)
    assert of(effects, ChargeLeg) == []
    assert credit_legs(session.state, 20.6) == (
        [],
        [LegCharge(PROXICOM, 20), LegCharge(PAKLINE, 18)],
    )
    session.feed(LegHungUp(f"{SID}-b1", 20.6), 20.6)
    assert [(c.leg, c.billed_seconds) for c in session.charges()] == [
        ("destination", 18),
        ("source", 20),
    ]
    assert [e.cause for e in events(session.all, "leg_ended")] == ["hung up", "hung up"]


@pytest.mark.parametrize(
    ("first", "reason"),
    [
        (HangupSession(), Reason.HANGUP),  # the daemon's own decision
        (LegHungUp(f"{SID}-a1", 10.0), Reason.SOURCE_HANGUP),  # long before
    ],
)
def test_switch_lost_keeps_an_earlier_or_the_daemons_own_reason(first, reason):
    """A session that ended by the daemon's decision, or well before, keeps its reason."""
    session = Session().talking(1.0, 3.0)
    session.feed(first, 10.0)
    later = 10.0 + (SWITCH_LOST_WINDOW * 2 if isinstance(first, LegHungUp) else 0.5)
    session.feed(SwitchLost(), later)
    assert session.state.reason == reason


def test_reconcile_after_a_switch_restart_loses_every_leg_with_the_switch():
    """Legs dialled before the switch (re)started are gone with it: SwitchLost, all lost."""
    session = Session().talking(1.0, 3.0)
    session.feed(Seen(), 40.0)
    effects = session.feed(Reconcile({}, 60.0, switch_started_at=50.0), 60.0)
    assert session.state.reason == Reason.SWITCH_LOST
    assert [leg.cause for leg in session.state.legs] == ["lost", "lost"]
    assert not of(effects, Hangup)
    assert session.state.finished


def test_reconcile_loses_every_gone_leg_and_hangs_up_none():
    """Legs found gone are all ``lost`` (not only the first), and none is hung up."""
    session = Session().talking(1.0, 3.0)
    session.feed(AddLeg(EXTRA), 5.0)
    session.feed(LegAnswered(f"{SID}-c1", 6.0), 6.0)
    session.feed(Seen(), 40.0)
    effects = session.feed(Reconcile({}, 60.0, switch_started_at=None), 60.0)
    assert [leg.cause for leg in session.state.legs] == ["lost", "lost", "lost"]
    assert not of(effects, Hangup)


def test_reconcile_hangs_up_a_live_leg_of_a_session_whose_source_is_gone():
    """The source gone (no restart): the destination still up is hung up as before."""
    session = Session().talking(1.0, 3.0)
    effects = session.feed(Reconcile({f"{SID}-b1": "up"}, 60.0, switch_started_at=0.0), 60.0)
    assert of(effects, Hangup) == [Hangup(f"{SID}-b1")]
    assert session.state.reason == Reason.SOURCE_HANGUP


# -- recovery -----------------------------------------------------------------------


def test_reconcile_keeps_live_legs_and_re_arms_credit():
    """Live legs stay tracked after a restart and the credit timer is armed again."""
    session = Session(balance=PROXICOM.cost(600) + PAKLINE.cost(600)).talking(0.0, 0.0)
    restored = SessionState.from_dict(json.loads(json.dumps(session.state.to_dict())))
    session.state = restored
    effects = session.feed(Reconcile({f"{SID}-a1": "up", f"{SID}-b1": "up"}), 100.0)
    assert ArmTimer(CREDIT_TIMER, 500 - BACKSTOP_MARGIN) in effects
    assert not of(effects, ChargeLeg)


def test_reconcile_bills_vanished_legs_up_to_the_last_time_seen():
    """A leg gone while the daemon was away is billed up to its last heartbeat, once."""
    session = Session().talking(0.0, 0.0)
    session.feed(Seen(), 40.0)
    session.feed(Reconcile({}), 100.0)
    costs = {c.leg: c.billed_seconds for c in session.charges()}
    assert costs == {"source": 40, "destination": 40}
    assert session.state.finished


def test_reconcile_never_bills_past_the_absolute_timeout():
    """A vanished leg is billed no further than the AbsoluteTimeout the switch enforced."""
    balance = PROXICOM.cost(30) + PAKLINE.cost(30)
    session = Session(balance=balance).talking(0.0, 0.0)
    session.feed(Seen(), 200.0)
    session.feed(Reconcile({}), 300.0)
    assert max(c.billed_seconds for c in session.charges()) <= 30


def test_reconcile_of_a_ringing_leg_that_vanished_loses_it():
    """A calling source gone after a restart ends the session as SourceLost, unbilled."""
    session = Session()
    session.feed(Reconcile({}), 50.0)
    assert session.state.reason == "SourceLost"
    assert sum(c.cost for c in session.charges()) == 0


def test_state_round_trips_through_json():
    """to_dict/from_dict keep everything, through JSON."""
    session = Session().talking()
    session.feed(AddLeg(EXTRA), 5.0)
    data = json.loads(json.dumps(session.state.to_dict()))
    assert SessionState.from_dict(data) == session.state


CHAT_ALICE = Watcher("chat", "alice@example.org", "en", "callback.example.org")
SMS_ALICE = Watcher("sms", "+4930123456", "de", "kannel", "outcome")


def test_watchers_start_with_the_session_and_round_trip_through_json():
    """The starter's record is kept from the start; the state round-trips with it, and a
    state saved before watchers were recorded loads with none."""
    session = Session(watchers=(CHAT_ALICE,)).talking()
    assert session.state.watchers == (CHAT_ALICE,)
    data = json.loads(json.dumps(session.state.to_dict()))
    assert data["watchers"][0]["address"] == "alice@example.org"
    assert SessionState.from_dict(data) == session.state
    del data["watchers"]
    assert SessionState.from_dict(data).watchers == ()
    assert "watchers" not in summary(session.state)  # not shown to the API


def test_watch_replaces_the_same_address_unwatch_forgets_it_both_are_saved():
    session = Session(watchers=(CHAT_ALICE,))
    effects = session.feed(Watch(SMS_ALICE), 1.0)
    assert session.state.watchers == (CHAT_ALICE, SMS_ALICE)
    assert effects == [Persist()] and events(effects) == []  # saved, nobody told
    spanish = Watcher("chat", "alice@example.org", "es", "callback.example.org")
    session.feed(Watch(spanish), 2.0)
    assert session.state.watchers == (SMS_ALICE, spanish)
    assert session.feed(Unwatch("chat", "alice@example.org"), 3.0) == [Persist()]
    assert session.state.watchers == (SMS_ALICE,)
    session.feed(Unwatch("sms", "+4999"), 4.0)
    assert session.state.watchers == (SMS_ALICE,)


def test_watchers_are_bounded_the_oldest_go_first():
    session = Session()
    for n in range(MAX_WATCHERS + 3):
        session.feed(Watch(Watcher("chat", f"user{n}@example.org")), float(n))
    kept = [w.address for w in session.state.watchers]
    assert kept == [f"user{n}@example.org" for n in range(3, MAX_WATCHERS + 3)]


def test_watch_of_an_ended_session_changes_nothing():
    session = Session().talking()
    session.feed(HangupSession(), 5.0)
    session.feed(LegHungUp(f"{SID}-a1", 5.5, 16), 5.5)
    session.feed(LegHungUp(f"{SID}-b1", 5.5, 16), 5.5)
    assert session.state.finished
    assert session.feed(Watch(CHAT_ALICE), 6.0) == []
    assert session.state.watchers == ()


def test_summary_lists_every_leg():
    """The status summary has one entry per leg with its state."""
    session = Session().talking()
    assert [(leg["leg"], leg["state"]) for leg in summary(session.state)["legs"]] == [
        ("source", "up"),
        ("destination", "up"),
    ]


def test_events_are_json_able_and_numbered():
    """SessionEvent.to_dict is JSON-able and seq numbers increase by one."""
    session = Session().talking()
    found = events(session.all)
    assert [e.seq for e in found] == list(range(1, len(found) + 1))
    assert json.loads(json.dumps(found[-1].to_dict()))["session_id"] == SID


def test_render_of_the_seed_session_end():
    """ "Charged time: 28 secs. Reason = EndedByHangup" as GTalk2VoIP said it."""
    event = SessionEvent(
        "session_ended", SID, 9, 0.0, reason=Reason.HANGUP, billed_seconds=28, state="ended"
    )
    assert render(event, DECIMALS).endswith("Charged time: 28 secs. Reason = EndedByHangup")


# -- random sequences ---------------------------------------------------------------

LETTERS = "abcd"
OUTCOMES = ["busy", "noanswer", "congestion", "chanunavail", "rejected", "failed"]


@st.composite
def session_inputs(draw):
    letter = draw(st.sampled_from(LETTERS))
    channel = f"{SID}-{letter}{draw(st.integers(1, 3))}"
    back = draw(st.floats(0, 5))
    return draw(
        st.sampled_from(
            [
                LegRinging(channel, -back),
                LegAnswered(channel, -back),
                LegJoined(channel, -back, SID),
                LegFailed(channel, -back, draw(st.sampled_from(OUTCOMES))),
                LegHungUp(channel, -back, draw(st.sampled_from([16, 17, 19, 34]))),
                AddLeg(draw(st.sampled_from([EXTRA, FREE]))),
                DropLeg(draw(st.sampled_from(["c", "d", "source", "phone:+15551230000"]))),
                HangupSession(),
                TimerFired(
                    draw(st.sampled_from([CREDIT_TIMER, "ring-a", "ring-b", "release-a", "ring-c"]))
                ),
                BalanceChanged(draw(st.integers(0, 200_000))),
                CreditDeadline(
                    draw(st.one_of(st.none(), st.floats(0, 400))),
                    draw(st.sampled_from([Reason.OUT_OF_CREDIT, Reason.DAILY_LIMIT])),
                ),
                Seen(),
                Reconcile({c: "up" for c in draw(st.sets(st.sampled_from(_channels())))}),
                RoomCommand(SID, draw(st.sampled_from(["endb", "other"])), 0.0),
                SwitchLost(),
            ]
        )
    )


def _channels():
    return [f"{SID}-{letter}{n}" for letter in LETTERS for n in (1, 2, 3)]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    balance=st.integers(0, 100_000),
    inputs=st.lists(st.tuples(session_inputs(), st.floats(0, 30)), max_size=40),
)
def test_random_sequences_keep_the_billing_invariants(balance, inputs):
    """Any order of events: each leg charged once, costs add up, nothing after Finished."""
    session = Session(balance=balance)
    ended_channels: set[str] = set()
    finished_seen = False
    for item, delay in inputs:
        now = session.now + delay
        if isinstance(item, LegRinging | LegAnswered | LegJoined | LegFailed | LegHungUp):
            item = type(item)(**{**item.__dict__, "at": max(0.0, now + item.at)})
            if isinstance(item, LegFailed | LegHungUp):
                ended_channels.add(item.channel_id)
        if isinstance(item, Reconcile):
            live = set(item.channels)
            ended_channels.update(c for c in _channels() if c not in live)
        if isinstance(item, SwitchLost):
            ended_channels.update(_channels())  # the switch takes them all
        try:
            effects = session.feed(item, now)
        except SessionError:
            continue
        if finished_seen:
            assert effects == []
        finished_seen = finished_seen or bool(of(effects, Finished))
    charges = session.charges()
    names = [c.leg for c in charges]
    assert len(names) == len(set(names))
    state = session.state
    assert sum(c.cost for c in charges) == sum(leg.cost for leg in state.legs if leg.charged)
    for charge in charges:
        leg = state.leg(charge.leg)
        assert charge.cost == 0 or leg.answered_at is not None
        assert charge.cdr.cost == charge.cost
        if leg.rate is not None and leg.answered_at is not None:
            assert charge.cost == leg.rate.cost(charge.billed_seconds)
    if state.finished:
        assert len(of(session.all, Finished)) == 1
        assert all(leg.charged for leg in state.legs)
        hung_up = {h.channel_id for h in of(session.all, Hangup)}
        originated = {o.request.channel_id for o in of(session.all, Originate)}
        assert originated <= hung_up | ended_channels
        finished_at = next(i for i, e in enumerate(session.all) if isinstance(e, Finished))
        assert not of(session.all[finished_at:], Originate)
    else:
        assert not of(session.all, Finished)
