"""The IVR's pure flows: inbound plans and the callback leg's conversation."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from callbackd.ivr import flow as f
from callbackd.ivr.flow import (
    INPUTS,
    Announce,
    Answered,
    Balance,
    CheckPin,
    Collect,
    Collected,
    Dial,
    DropDestination,
    Ended,
    Failed,
    GetBalance,
    HangUp,
    HungUp,
    IvrRules,
    Keys,
    Leave,
    LogLockout,
    Phase,
    PinChecked,
    PinFailureRecorded,
    Play,
    Quote,
    Quoted,
    RecordPinFailure,
    Refused,
    Resumed,
    SaveCallerId,
    SayDuration,
    SayMoney,
    SetLanguage,
    WaitDestination,
)

RULES = IvrRules()


def plays(effects: list[f.Effect]) -> list[str]:
    """The names of our prompts in the effects, in order."""
    names = []
    for effect in effects:
        if isinstance(effect, Announce | Collect):
            names += [s.name for s in effect.steps if isinstance(s, Play)]
    return names


def run(flow: f.Flow, *events: f.Event) -> tuple[f.Flow, list[f.Effect]]:
    effects: list[f.Effect] = []
    for event in events:
        flow, more = f.step(flow, event)
        effects = more
    return flow, effects


# -- inbound ------------------------------------------------------------------------


ACCESS = {"4930555000": "", "4930555001": "fr"}
DIDS = {"4930555099": "alice"}


def plan(**kw: object) -> f.InboundPlan:
    args: dict = dict(
        dialled="4930555000",
        caller_id="+4930123456",
        access_numbers=ACCESS,
        dids=DIDS,
    )
    args.update(kw)
    return f.plan_inbound(**args)


def test_ani_with_a_verified_caller_id_skips_the_pin() -> None:
    p = plan(caller_owner="alice", caller_verified=True, account_language="es")
    assert (p.username, p.number, p.need_pin, p.language, p.kind) == (
        "alice",
        "+4930123456",
        False,
        "es",
        "ani",
    )


def test_an_unverified_caller_id_is_asked_the_pin() -> None:
    p = plan(caller_owner="alice", caller_verified=False)
    assert p.need_pin and p.kind == "pin" and p.username == "alice"


def test_an_unknown_or_missing_caller_id_gets_no_callback() -> None:
    assert plan().username == "" and plan().why == "unknown caller ID"
    assert plan(caller_id="unknown", caller_owner="alice").username == ""
    assert plan(caller_id="", caller_owner="alice").why == "no caller ID"


def test_an_unknown_caller_id_is_called_back_on_the_operators_account() -> None:
    """With [ivr] unknown_account, an unknown caller ID is called back on that account
    and asked the PIN, which names the account; the access number's language holds."""
    p = plan(unknown_account="house", dialled="4930555001")
    assert (p.username, p.number, p.need_pin, p.language, p.kind) == (
        "house",
        "+4930123456",
        True,
        "fr",
        "unknown",
    )
    assert plan(unknown_account="house", caller_id="").username == ""
    # a registered caller ID is its account's, whatever unknown_account says
    assert plan(unknown_account="house", caller_owner="alice").username == "alice"


def test_a_did_calls_back_the_predefined_number_not_the_caller_id() -> None:
    p = plan(dialled="4930555099", caller_id="", did_owner_number="+4917000001")
    assert (p.username, p.number, p.need_pin, p.kind) == ("alice", "+4917000001", False, "did")
    assert plan(dialled="4930555099").username == ""


def test_an_unknown_dialled_number_gets_nothing() -> None:
    assert plan(dialled="999", caller_owner="alice").why == "not an access number"


def test_the_language_comes_from_the_access_number_then_the_account_then_the_menu() -> None:
    verified = dict(caller_owner="alice", caller_verified=True)
    assert plan(dialled="4930555001", account_language="es", **verified).language == "fr"
    assert plan(account_language="vi", **verified).language == "vi"
    assert plan(account_language="", **verified).language == ""
    assert plan(account_language="", language_menu=False, **verified).language == "en"


# -- the callback leg ------------------------------------------------------------------


def test_ani_path_balance_number_duration_dial_talk_end_and_again() -> None:
    flow, effects = f.start(RULES, language="en", need_pin=False)
    assert effects == [SetLanguage("en"), GetBalance()]
    flow, effects = f.step(flow, Balance(1234))
    (collect,) = effects
    assert isinstance(collect, Collect)
    assert collect.steps == (Play("your_balance_is"), SayMoney(1234), Play("enter_number"))
    flow, effects = f.step(flow, Collected("004930123456"))
    assert effects == [Quote("+4930123456")]
    flow, effects = f.step(flow, Quoted("+4930123456", 600))
    assert effects == [
        Announce((Play("max_duration_is"), SayDuration(600), Play("connecting"))),
        Dial("+4930123456"),
        WaitDestination(),
    ]
    flow, effects = f.step(flow, Answered())
    assert effects == [Leave()] and flow.phase == Phase.CONNECTED
    flow, effects = f.step(flow, Resumed())
    assert effects[0] == SetLanguage("en")
    assert plays(effects) == ["call_ended", "enter_another_number"]
    assert flow.phase == Phase.NUMBER


def test_the_balance_is_not_announced_when_turned_off() -> None:
    flow, effects = f.start(IvrRules(announce_balance=False), language="es", need_pin=False)
    assert effects[0] == SetLanguage("es")
    assert plays(effects) == ["enter_number"]


def test_111_announces_the_balance_at_the_number_prompt() -> None:
    flow, _ = f.start(RULES, language="en", need_pin=False)
    flow, _ = f.step(flow, Balance(5))
    flow, effects = f.step(flow, Collected("111"))
    assert effects == [GetBalance()]
    flow, effects = f.step(flow, Balance(7))
    assert effects[0].steps[:2] == (Play("your_balance_is"), SayMoney(7))  # type: ignore[union-attr]
    assert plays(effects)[-1] == "enter_another_number"
    codes = IvrRules(balance_code="*9")
    flow, _ = f.start(codes, language="en", need_pin=False)
    flow, _ = f.step(flow, Balance(5))
    assert f.step(flow, Collected("*9"))[1] == [GetBalance()]


def test_speed_dials_of_one_and_two_digits() -> None:
    book = {1: "+4930111111", 12: "+4930121212"}
    flow, _ = f.start(RULES, language="en", need_pin=False, phonebook=book)
    flow, _ = f.step(flow, Balance(5))
    assert f.step(flow, Collected("1"))[1] == [Quote("+4930111111")]
    assert f.step(flow, Collected("12"))[1] == [Quote("+4930121212")]
    # an empty speed dial is not a number
    assert plays(f.step(flow, Collected("7"))[1]) == ["invalid_number", "enter_another_number"]


def test_a_failed_destination_is_announced_and_the_user_dials_again() -> None:
    flow, _ = f.start(RULES, language="en", need_pin=False)
    flow, _ = run(flow, Balance(5), Collected("4930123456"), Quoted("+4930123456", None))
    for cause, prompt in [
        ("busy", "destination_busy"),
        ("no answer", "destination_no_answer"),
        ("congestion", "call_failed"),
    ]:
        after, effects = f.step(flow, Failed(cause))
        assert plays(effects) == [prompt, "enter_another_number"]
        assert after.phase == Phase.NUMBER


def test_no_credit_blocked_and_invalid_are_announced() -> None:
    flow, _ = f.start(RULES, language="en", need_pin=False)
    flow, _ = run(flow, Balance(0), Collected("4930123456"))
    assert plays(f.step(flow, Quoted("+4930123456", 0))[1])[0] == "no_credit"
    assert plays(f.step(flow, Refused("no_credit"))[1])[0] == "no_credit"
    assert plays(f.step(flow, Refused("blocked"))[1])[0] == "number_blocked"
    assert plays(f.step(flow, Refused("invalid"))[1])[0] == "invalid_number"


def test_the_end_code_while_ringing_drops_the_destination() -> None:
    flow, _ = f.start(RULES, language="en", need_pin=False)
    flow, _ = run(flow, Balance(5), Collected("4930123456"), Quoted("+4930123456", 60))
    flow, effects = f.step(flow, Keys("#1"))
    assert effects == [WaitDestination()]
    flow, effects = f.step(flow, Keys("1"))
    assert effects[0] == DropDestination() and flow.phase == Phase.NUMBER


def test_the_destination_ending_while_the_user_waits_returns_to_the_number() -> None:
    flow, _ = f.start(RULES, language="en", need_pin=False)
    flow, _ = run(flow, Balance(5), Collected("4930123456"), Quoted("+4930123456", 60))
    flow, effects = f.step(flow, Ended())
    assert plays(effects) == ["call_ended", "enter_another_number"]


def test_an_unknown_callers_right_pin_saves_the_caller_id_and_calls_back() -> None:
    """identify: the right PIN saves the caller ID, says so, and ends this leg with
    CallBack in the caller's language; a wrong one is asked again, as for a known one."""
    flow, effects = f.start(RULES, language="vi", need_pin=False, identify=True)
    assert plays(effects) == ["enter_pin"]
    flow, effects = run(flow, Collected("1111"), PinChecked(False), PinFailureRecorded(False))
    assert plays(effects) == ["wrong_pin", "enter_pin"]
    flow, effects = run(flow, Collected("4321"), PinChecked(True))
    assert effects == [
        SaveCallerId(),
        Announce((Play("pin_accepted"), Play("calling_back"))),
        f.CallBack("vi"),
        HangUp(),
    ]
    assert flow.ended


def test_pin_wrong_then_right_saves_the_caller_id() -> None:
    flow, effects = f.start(RULES, language="en", need_pin=True)
    assert plays(effects) == ["enter_pin"]
    flow, effects = f.step(flow, Collected("0000"))
    assert effects == [CheckPin("0000")]
    flow, effects = f.step(flow, PinChecked(False))
    assert effects == [RecordPinFailure()]
    flow, effects = f.step(flow, PinFailureRecorded(False))
    assert plays(effects) == ["wrong_pin", "enter_pin"]
    flow, effects = f.step(flow, Collected("1234"))
    flow, effects = f.step(flow, PinChecked(True))
    assert effects[0] == SaveCallerId()
    assert effects[-1] == GetBalance()


def test_repeated_wrong_pins_lock_out_and_hang_up() -> None:
    flow, _ = f.start(IvrRules(pin_attempts=2), language="en", need_pin=True)
    flow, _ = run(flow, Collected("1"), PinChecked(False), PinFailureRecorded(False))
    flow, effects = run(flow, Collected("2"), PinChecked(False), PinFailureRecorded(False))
    assert effects[0] == LogLockout() and effects[-1] == HangUp() and flow.ended
    # the store says locked (another call's failures): locked at once
    flow, _ = f.start(RULES, language="en", need_pin=True)
    flow, effects = run(flow, Collected("1"), PinChecked(False, locked=True))
    assert LogLockout() in effects and flow.ended


def test_the_language_menu() -> None:
    flow, effects = f.start(RULES, language="", need_pin=False)
    (collect,) = effects
    assert isinstance(collect, Collect) and collect.max_digits == 1
    assert [(s.name, s.language) for s in collect.steps] == [  # type: ignore[union-attr]
        ("language_option", lang) for lang in f.LANGUAGES
    ]
    flow, effects = f.step(flow, Collected("9"))
    assert flow.phase == Phase.LANGUAGE and isinstance(effects[-1], Collect)
    flow, effects = f.step(flow, Collected("4"))
    assert effects[0] == SetLanguage("vi") and flow.language == "vi"


def test_silence_is_given_up_on_after_the_retries() -> None:
    flow, _ = f.start(RULES, language="en", need_pin=False)
    flow, _ = f.step(flow, Balance(5))
    flow, effects = run(flow, Collected(""), Collected(""))
    assert plays(effects) == ["enter_another_number"]
    flow, effects = f.step(flow, Collected(""))
    assert effects[-1] == HangUp() and flow.ended
    assert f.step(flow, Collected("1")) == (flow, [])


def test_hanging_up_at_any_point_ends_quietly() -> None:
    flow, _ = f.start(RULES, language="en", need_pin=False)
    ended, effects = f.step(flow, HungUp())
    assert effects == [Leave()] and ended.ended
    flow, _ = run(flow, Balance(5), Collected("4930123456"), Quoted("+4930123456", 60))
    ended, effects = f.step(flow, HungUp())
    assert effects == [DropDestination(), Leave()]


def test_keyed_numbers() -> None:
    assert f.keyed_number("4930123456") == "+4930123456"
    assert f.keyed_number("004930123456") == "+4930123456"
    for bad in ("", "12345", "0301234567", "1" * 16, "49#30", "٤٩٣٠١٢٣٤٥٦"):
        assert f.keyed_number(bad) is None


# -- properties -------------------------------------------------------------------------

_events = st.one_of(
    st.builds(Collected, st.text(alphabet=f.KEYS, max_size=20)),
    st.builds(PinChecked, st.booleans(), st.booleans()),
    st.builds(PinFailureRecorded, st.booleans()),
    st.builds(Balance, st.integers(-(10**6), 10**9)),
    st.builds(Quoted, st.just("+4930123456"), st.none() | st.integers(-5, 10**5)),
    st.builds(Refused, st.sampled_from(["no_credit", "blocked", "invalid", "failed", "x"])),
    st.just(Answered()),
    st.builds(Failed, st.sampled_from(["busy", "no answer", "congestion", ""])),
    st.just(Ended()),
    st.builds(Keys, st.text(alphabet=f.KEYS, max_size=4)),
    st.just(Resumed()),
    st.just(HungUp()),
)


@settings(max_examples=300, deadline=None)
@given(
    language=st.sampled_from(["", *f.LANGUAGES]),
    need_pin=st.booleans(),
    announce=st.booleans(),
    events=st.lists(_events, max_size=40),
)
def test_arbitrary_events_never_crash_and_the_flow_always_ends_or_waits(
    language: str, need_pin: bool, announce: bool, events: list[f.Event]
) -> None:
    rules = IvrRules(announce_balance=announce, pin_attempts=2)
    flow, effects = f.start(rules, language=language, need_pin=need_pin)
    for event in events:
        before = flow
        flow, more = f.step(flow, event)
        assert set(plays(more)) <= f.PROMPTS
        if more:
            effects = more
        else:
            # an event that does not fit changes nothing
            assert flow == before
        if flow.ended:
            assert isinstance(effects[-1], HangUp | Leave)
        else:
            assert isinstance(effects[-1], (*INPUTS, Leave))
            if isinstance(effects[-1], Leave):
                assert flow.phase == Phase.CONNECTED


@settings(max_examples=200, deadline=None)
@given(keys=st.lists(st.text(alphabet=f.KEYS, max_size=20), max_size=30))
def test_arbitrary_key_sequences_never_crash(keys: list[str]) -> None:
    flow, effects = f.start(RULES, language="", need_pin=True)
    for entry in keys:
        before = flow
        flow, more = f.step(flow, Collected(entry))
        if not more:
            # waiting for the engine or the store, not for keys: nothing changes
            assert flow == before and not isinstance(effects[-1], Collect)
            continue
        effects = more
        if flow.ended:
            break
        # whatever was keyed, the flow waits for an input
        assert isinstance(effects[-1], INPUTS)


def test_every_prompt_is_in_the_catalogue_in_every_language() -> None:
    """make-sounds speaks each ``ivr.<name>`` to ``callbackd/<name>``: every prompt the
    flow plays has its text in the template and a translation in each language."""
    from callbackd.i18n import translator

    for language in f.LANGUAGES:
        t = translator(language)
        for name in f.PROMPTS:
            text = t.text(f"ivr.{name}")
            assert text and text != f"ivr.{name}"
    english = translator("en")
    assert english.text("ivr.language_option") != translator("zh").text("ivr.language_option")
