"""The SMS front's handling over the engine (FakeSwitch, MemoryStore, task.Clock): commands,
authorisation, caller-ID codes, limits, replies and progress."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.logger import globalLogPublisher

from callbackd.config import SmsConfig
from callbackd.core.model import CDR, Account, PhonebookEntry
from callbackd.core.sms import ERROR_CODES
from callbackd.core.smstext import count_segments
from callbackd.i18n import LANGUAGES, translator
from callbackd.sms.front import SmsFront, reply_id
from callbackd.sms.inbound import InboundSms
from callbackd.store.interface import StoreUnavailable
from tests.test_engine import DESTINATION, SOURCE, World, result

ALICE_PHONE = "+4930123456"  # alice's verified caller ID (and the engine tests' SOURCE)
STRANGER = "+4915100000009"
OTHER = "+4917612345678"


class Sms:
    """An SMS front over a World; ``send`` hands it a message and returns the SMS queued."""

    def __init__(self, world=None, config=None, verified=True, **account):
        self.world = world or World(**account)
        self.store = self.world.store
        if verified:
            result(self.store.add_caller_id("alice", ALICE_PHONE, verified=True))
        self.queued: list[tuple[str, str, str, str]] = []
        self.ids: set[str] = set()
        self.front = SmsFront(
            self.world.manager,
            self.store,
            self.world.clock,
            self.queue,
            config or SmsConfig(enabled=True),
            decimals=5,
            currency="EUR",
            region="DE",
            sends=lambda name: name == "kannel",
        )
        self.front.start()
        self.n = 0

    def queue(self, message_id, to, text, gateway):
        if message_id in self.ids:  # as the store's queue: once per id
            return defer.succeed(False)
        self.ids.add(message_id)
        self.queued.append((message_id, to, text, gateway))
        return defer.succeed(True)

    def send(self, text, sender=ALICE_PHONE, gateway="kannel", key=None, message_id=None):
        """Handle ``text`` from ``sender``; the texts queued to ``sender`` by the turn's end."""
        self.n += 1
        key = key or f"id:{gateway}:{self.n}"
        sms = InboundSms(gateway, sender, "+4930999", text, message_id or str(self.n), None)
        result(self.front.handle(sms, key))
        return self.turn(sender)

    def turn(self, to=ALICE_PHONE):
        self.world.clock.advance(0)
        mine = [text for _, t, text, _ in self.queued if t == to]
        self.queued = [q for q in self.queued if q[1] != to]
        return mine

    def live(self):
        [sid] = self.world.manager.sessions_of("alice")
        return sid

    def end(self, sid):
        """The call is hung up: both legs go away."""
        result(self.world.manager.hangup(sid))
        for leg in ("a1", "b1"):
            self.world.switch.hang_up(f"{sid}-{leg}", self.world.now())


# -- callbacks ----------------------------------------------------------------------------


def test_callback_by_caller_id_calls_the_sender_with_outcome_progress(failures):
    """D. from a verified caller ID: the sender is the source; outcome: answered, ended."""
    sms = Sms()
    [reply] = sms.send(f"D.{DESTINATION}")
    sid = sms.live()
    assert reply == f"Callback {sid}: we call {ALICE_PHONE}, then {DESTINATION}."
    switch, world = sms.world.switch, sms.world
    switch.answer(f"{sid}-a1", world.now())
    assert sms.turn() == []  # outcome: the source's answer is no outcome
    switch.answer(f"{sid}-b1", world.now())
    assert sms.turn() == ["Remote answered. Now talking. Cost = 0.02604"]
    world.clock.advance(60)
    sms.end(sid)
    [ended] = sms.turn()
    assert ended.startswith("Call aborted! Thank you!")
    assert "Charged time: 60 secs" in ended and "Cost: " in ended and "EUR" in ended
    assert failures == []


def test_callback_by_credentials_from_another_phone_with_source_and_all_progress():
    sms = Sms(sms_progress="all")
    [reply, calling] = sms.send(f"u.alice P.secret-pw D.{DESTINATION} O.{SOURCE}", sender=STRANGER)
    sid = sms.live()
    assert reply == f"Callback {sid}: we call {SOURCE}, then {DESTINATION}."
    assert calling.startswith("Calling source: phone:+4930123456")
    sms.world.switch.answer(f"{sid}-a1", sms.world.now())
    assert sms.turn(STRANGER)[0].startswith("Source answered.")


def test_progress_none():
    sms = Sms(sms_progress="none")
    sms.send(f"D.{DESTINATION}")
    sid = sms.live()
    sms.world.switch.answer(f"{sid}-a1", sms.world.now())
    sms.world.switch.answer(f"{sid}-b1", sms.world.now())
    sms.end(sid)
    assert sms.turn() == []


def test_failed_callback_outcome():
    sms = Sms()
    sms.send(f"D.{DESTINATION}")
    sid = sms.live()
    sms.world.switch.fail(f"{sid}-a1", "busy", sms.world.now())
    texts = sms.turn()
    assert any("busy" in text for text in texts), texts


def test_phonebook_by_name_and_index():
    sms = Sms()
    result(sms.store.set_phonebook_entry("alice", PhonebookEntry(2, "Office", DESTINATION)))
    [reply] = sms.send("b.office")
    assert reply.endswith(f"then {DESTINATION}.")
    sms.end(sms.live())
    sms.turn()
    [reply] = sms.send("N2")
    assert reply.endswith(f"then {DESTINATION}.")
    sms.end(sms.live())
    sms.turn()
    assert sms.send("B.home") == ["No phonebook entry home."]
    assert sms.send("N3") == ["No phonebook entry N3."]


def test_chat_grammar_callback_and_balance():
    sms = Sms()
    [reply] = sms.send(f"CALLBACK {SOURCE} {DESTINATION}")
    assert reply.startswith("Callback ") and sms.live()
    assert sms.send("balance") == ["Your balance: 100.00 EUR"]
    assert sms.send("HELP")[0].startswith("D.<number> calls you back")
    assert sms.send("LIST") == ["LIST cannot be used by SMS."]


def test_info_balance_and_last_calls():
    sms = Sms()
    [info] = sms.send("I")
    assert info == "Your balance: 100.00 EUR\nNo calls yet."


def test_refused_callback_is_told():
    sms = Sms(balance=0)
    [reply] = sms.send(f"D.{DESTINATION}")
    assert "credit" in reply.lower()
    assert sms.world.manager.sessions_of("alice") == []


def test_spanish_account_replies_in_spanish():
    sms = Sms(language="es")
    [reply] = sms.send(f"D.{DESTINATION}")
    assert reply.startswith("Rellamada ")
    assert sms.send("B.nada") == ["No hay ninguna entrada nada en la agenda."]


# -- authorisation and limits -------------------------------------------------------------


def test_unknown_sender_gets_one_reply_per_period_and_no_callback():
    sms = Sms()
    expected = ["This phone is not registered. Add U.<username> P.<password> to your message."]
    assert sms.send(f"D.{DESTINATION}", sender=STRANGER) == expected
    assert sms.send(f"D.{DESTINATION}", sender=STRANGER) == []
    assert sms.send("garbage !!", sender=STRANGER) == []
    sms.world.clock.advance(86400)
    assert sms.send("garbage", sender=STRANGER) == [
        "Unknown word garbage. Send HELP for the commands."
    ]
    assert sms.world.manager.sessions_of("alice") == []


def test_wrong_password_then_lockout_per_account():
    sms = Sms()
    for n in range(5):
        sender = f"+49151000000{n:02d}"
        assert sms.send(f"U.alice P.wrong D.{DESTINATION}", sender=sender) == [
            "Wrong username or password."
        ]
    # locked for everyone, the right password included; one reply per sender and period
    assert sms.send(f"U.alice P.secret-pw D.{DESTINATION}", sender=OTHER) == [
        "Too many wrong passwords. Try again later."
    ]
    assert sms.send(f"U.alice P.secret-pw D.{DESTINATION}", sender=OTHER) == []
    assert sms.world.manager.sessions_of("alice") == []
    sms.world.clock.advance(901)
    sms.world.clock.advance(86400)
    [reply] = sms.send(f"U.alice P.secret-pw D.{DESTINATION}", sender=OTHER)
    assert reply.startswith("Callback ")


def test_password_with_spaces_and_missing_parts():
    sms = Sms()
    [reply] = sms.send("U.alice P.secret pw D.123", sender=STRANGER)
    assert reply == "The value of P. is not valid (no spaces inside a value)."
    assert "secret" not in reply
    sms.world.clock.advance(86401)
    assert sms.send("P.secret-pw D.123", sender=STRANGER) == ["P. needs U.<username> with it."]


def test_unknown_account_is_a_wrong_password():
    sms = Sms()
    assert sms.send("U.nobody P.x D.123", sender=STRANGER) == ["Wrong username or password."]


def test_sender_rate_limit_one_reply_then_silence():
    sms = Sms(config=SmsConfig(enabled=True, sender_limit=2, sender_period=60.0))
    assert sms.send("I")[0].startswith("Your balance")
    assert sms.send("I")[0].startswith("Your balance")
    assert sms.send("I") == ["Too many messages. Please wait a few minutes."]
    assert sms.send("I") == []
    sms.world.clock.advance(61)
    assert sms.send("I")[0].startswith("Your balance")


# -- caller-ID registration ---------------------------------------------------------------


def test_registration_code_comes_back_from_the_number():
    sms = Sms()
    [reply] = sms.send(f"R.{OTHER}")
    assert reply == f"A code was sent to {OTHER}. Send it back from that phone to register it."
    [code_sms] = sms.turn(OTHER)
    code = code_sms.split("code: ")[1][:6]
    assert code.isdigit()
    assert result(sms.store.account_for_caller_id(OTHER)) is None
    # the code from another phone does nothing
    assert sms.send(code, sender=STRANGER) == ["That code is wrong or has expired."]
    assert sms.send(f"R {code}", sender=OTHER) == [
        f"{OTHER} is registered: messages from it need no password."
    ]
    assert result(sms.store.account_for_caller_id(OTHER)) == "alice"
    [reply] = sms.send(f"D.{DESTINATION}", sender=OTHER)
    assert reply.startswith("Callback ") and f"we call {OTHER}" in reply


def test_registration_of_a_bad_or_taken_number():
    sms = Sms()
    assert sms.send("R.12") == ["12 is not a phone number: write it with its country code."]
    result(sms.store.create_account(Account("bob"), "pw-bob"))
    result(sms.store.add_caller_id("bob", OTHER, verified=True))
    assert sms.send(f"R.{OTHER}") == [f"{OTHER} is registered to another account."]


# -- replies ------------------------------------------------------------------------------


def test_reply_ids_are_stable_per_message_and_gateway_is_kept():
    """A message handled twice (a restart) queues its reply once; the reply goes out
    through the gateway it came in by, or the default one ("")."""
    sms = Sms()
    sms.send("I", key="id:kannel:x")
    assert sms.send("I", key="id:kannel:x") == []
    assert reply_id("id:kannel:x", 1) in sms.ids
    result(sms.front.handle(InboundSms("form", ALICE_PHONE, "", "I", None, None), "k2"))
    result(sms.front.handle(InboundSms("kannel", ALICE_PHONE, "", "I", None, None), "k3"))
    assert [gateway for *_, gateway in sms.queued] == ["", "kannel"]


def test_long_reply_fitted_to_max_segments():
    sms = Sms(config=SmsConfig(enabled=True, max_segments=1))
    for i in range(30):
        cdr = CDR(f"c{i}", "alice", f"s{i}", "session", "", address=DESTINATION, ended_at=i)
        result(sms.store.append_cdr(cdr))
    [info] = sms.send("I")
    assert count_segments(info) == 1
    assert info.endswith("…")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=300))
def test_any_text_gets_at_most_one_reply_and_no_failure(text):
    """Whatever the text, from a known phone: one reply at most, nothing logged as failed."""
    sms = Sms()
    logged = []

    def observe(event):
        if "log_failure" in event:
            logged.append(event)

    globalLogPublisher.addObserver(observe)
    try:
        replies = sms.send(text)
    finally:
        globalLogPublisher.removeObserver(observe)
    assert len(replies) <= 1
    assert logged == []


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_refusal_has_a_text_in_every_language(language):
    """Each SmsError code, InboundError code and auth code has its own catalogue text."""
    t = translator(language)
    for code in ERROR_CODES:
        assert t.has(f"sms.error.{code}") or t.has(f"error.{code}"), code
    for code in ("missing_field", "bad_json", "bad_encoding", "bad_number", "bad_time", "too_long"):
        assert t.has(f"sms.inbound.{code}"), code
    for code in ("bad_token", "missing_signature", "bad_signature", "forbidden_address"):
        assert t.has(f"sms.auth.{code}"), code


def test_a_callbacks_record_is_forgotten_before_the_call_is_placed():
    """A restart after the call was placed must not place it again."""
    sms = Sms()
    key = "id:kannel:once"
    result(sms.store.record_inbound_sms([key], {"x": 1}, 0.0, 600.0))
    pending_at_call = []
    start_callback = sms.world.manager.start_callback

    def spy(*args, **kwargs):
        pending_at_call.append([k for k, _, _ in result(sms.store.pending_inbound_sms())])
        return start_callback(*args, **kwargs)

    sms.world.manager.start_callback = spy
    sms.send(f"D.{DESTINATION}", key=key)
    assert pending_at_call == [[]]


def test_a_failed_handling_says_sorry_and_stays_pending(failures):
    """The store fails mid-way: the sender hears "sorry", the record waits for a restart."""
    sms = Sms()
    key = "id:kannel:fails"
    result(sms.store.record_inbound_sms([key], {"x": 1}, 0.0, 600.0))
    sms.store.get_phonebook = lambda username: defer.fail(StoreUnavailable("redis down"))
    assert sms.send("B.office", key=key) == ["Sorry, something went wrong. Please try again later."]
    assert [k for k, _, _ in result(sms.store.pending_inbound_sms())] == [key]
    assert len(failures) == 1
