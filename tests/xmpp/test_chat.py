"""The chat front over the engine (FakeSwitch, MemoryStore, task.Clock) and in-memory links."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.logger import globalLogPublisher

from callbackd.core.chat import COMMANDS, MAX_MESSAGE, USAGE
from callbackd.core.model import Account
from callbackd.i18n import translator
from callbackd.xmpp.chat import LINK_FAILURES, LINK_WINDOW, ChatFront
from tests.test_engine import DESTINATION, EXTRA, SOURCE, World, result

ALICE = "alice@example.org"
ALICE_PHONE = "alice@phone.example.org"
STRANGER = "mallory@example.net"
EN = translator("en")
ES = translator("es")


class MemoryLinks:
    """JID -> username links in a dict, as the store will keep them."""

    def __init__(self) -> None:
        self.links: dict[str, str] = {}

    def account_for(self, jid):
        return defer.succeed(self.links.get(jid))

    def link(self, jid, username):
        self.links[jid] = username
        return defer.succeed(None)

    def unlink(self, jid):
        self.links.pop(jid, None)
        return defer.succeed(None)


class Chat:
    """A chat front over a World; ``say`` sends a message and returns what came back."""

    def __init__(self, world=None, rate=(1000, 10.0), linked=(), **account):
        self.world = world or World(**account)
        self.links = MemoryLinks()
        for jid in linked:
            self.links.links[jid] = "alice"
        self.sent: list[tuple[str, str]] = []
        self.front = ChatFront(
            self.world.manager,
            self.world.store,
            self.links,
            self.world.clock,
            lambda jid, text: self.sent.append((jid, text)),
            decimals=5,
            currency="EUR",
            rate=rate,
        )
        self.front.start()

    def say(self, body, jid=ALICE):
        """Send ``body`` from ``jid``; the messages ``jid`` got by the end of the turn."""
        result(self.front.handle(jid, body))
        return self.turn(jid)

    def turn(self, jid=ALICE):
        """End the reactor turn; the messages sent to ``jid`` meanwhile."""
        self.world.clock.advance(0)
        mine = [text for to, text in self.sent if to == jid]
        self.sent = [(to, text) for to, text in self.sent if to != jid]
        return mine

    def live(self):
        [sid] = self.world.manager.sessions_of("alice")
        return sid


# -- the whole conversation -------------------------------------------------------------


def test_the_whole_conversation(failures):
    """LINK, CALLBACK with progress in order, ADD, LIST, DEL, HANGUP, BALANCE, LANG, HISTORY."""
    chat = Chat()
    world, switch = chat.world, chat.world.switch
    assert chat.say("LINK alice secret-pw") == ["Linked to account alice. Send HELP for commands."]
    assert chat.links.links == {ALICE: "alice"}

    reply, calling = chat.say(f"callback {SOURCE} {DESTINATION}")
    sid = chat.live()
    assert reply == f"Callback {sid} started. We are calling you now."
    assert calling == "Calling source: phone:+4930123456, cost = 0.014 via PROXICOM"
    switch.answer(f"{sid}-a1", world.now())
    assert chat.turn() == [
        "Source answered.\nCalling destination: phone:+923001234567, cost = 0.01204 via PAKLINE"
    ]
    switch.answer(f"{sid}-b1", world.now())
    assert chat.turn() == ["Remote answered. Now talking. Cost = 0.02604"]

    assert chat.say(f"ADD {EXTRA}") == [
        f"Calling {EXTRA} into the call.",
        "Calling additional: phone:+4989123456, cost = 0.014 via PROXICOM",
    ]
    switch.answer(f"{sid}-c1", world.now())
    assert chat.turn() == ["Party answered. Now talking. Cost = 0.014"]
    assert chat.say("LIST") == [
        "List of connected legs: 1. Source: phone:+4930123456 Via: PROXICOM, "
        "2. Destination: phone:+923001234567 Via: PAKLINE, "
        "3. Additional: phone:+4989123456 Via: PROXICOM"
    ]

    world.clock.advance(10)
    assert chat.say("DEL 3") == ["phone:+4989123456 was dropped from the call."]
    switch.hang_up(f"{sid}-c1", world.now())
    [left] = chat.turn()
    assert left.startswith("Additional phone:+4989123456 left the call (kicked).")

    world.clock.advance(18)
    assert chat.say("HANGUP") == ["Hanging up the call."]
    switch.hang_up(f"{sid}-a1", world.now())
    switch.hang_up(f"{sid}-b1", world.now())
    [ended] = chat.turn()
    assert ended.startswith(
        "Call aborted! Thank you!\nCharged time: 28 secs. Reason = EndedByHangup"
    )
    assert world.manager.sessions_of("alice") == []

    balance = world.balance()
    assert balance < 10_000_000
    assert chat.say("BALANCE") == [EN.text("chat.balance", balance=EN.money(balance, 5, "EUR"))]
    assert chat.say("LANG es") == ["Idioma cambiado a español."]
    assert result(world.store.get_account("alice")).language == "es"
    assert chat.say("BALANCE") == [f"Su saldo: {ES.money(balance, 5, 'EUR')}"]
    [history] = chat.say("HISTORY")
    session_cdr = world.cdrs()["session"]
    assert history.endswith(
        f" a phone:+923001234567: 28 s, coste {ES.money(session_cdr.cost, 5, 'EUR')}"
    )
    assert failures == []


def test_progress_is_told_in_the_language_of_the_account():
    """A Spanish account's progress messages are Spanish."""
    chat = Chat(linked=[ALICE], language="es")
    reply, calling = chat.say(f"CALLBACK {SOURCE} {DESTINATION}")
    assert reply == ES.text("chat.session_started", session=chat.live())
    assert calling == (
        translator("es").text(
            "progress.leg_calling_cost_via",
            role=translator("es").text("role.source"),
            address="phone:+4930123456",
            cost="0,014",
            provider="PROXICOM",
        )
    )


def test_callback_to_the_default_number():
    """CALLBACK <dst> calls the account's default number first; none set: a clear reply."""
    chat = Chat(linked=[ALICE], default_number=SOURCE)
    chat.say(f"CALLBACK {DESTINATION} via MKS")
    request = chat.world.switch.originated[0]
    assert request.channel == "PJSIP/4930123456@mks"

    bare = Chat(linked=[ALICE])
    assert bare.say(f"CALLBACK {DESTINATION}") == [EN.text("chat.no_default_number")]
    assert bare.world.switch.originated == []


def test_sessions_started_elsewhere_are_the_live_session():
    """A session the manhole (or web, SMS) started is LISTed, steered and then told of."""
    chat = Chat(linked=[ALICE])
    world = chat.world
    sid = world.talking()
    [listed] = chat.say("LIST")
    assert listed.startswith("List of connected legs: 1. Source: phone:+4930123456")
    assert chat.say("STATUS") == [f"Calls in progress: {sid}: {listed}"]
    assert chat.say("HANGUP") == ["Hanging up the call."]
    world.switch.hang_up(f"{sid}-a1", world.now())
    world.switch.hang_up(f"{sid}-b1", world.now())
    [ended] = chat.turn()
    # (no "Balance: ..." first: the call's CDRs, which cost nothing, are the engine's
    # own change and no longer make it re-tell the account's sessions their balance)
    assert ended.startswith("Call aborted! Thank you!\nCharged time: 0 secs.")


def test_rate_answers_the_sell_price_per_minute():
    """RATE <leg>: the price per minute of calling the leg; a leg with none is refused."""
    chat = Chat(linked=[ALICE])
    assert chat.say(f"RATE {DESTINATION}") == [f"Rate for {DESTINATION}: 0.01204 per minute"]
    assert chat.say("RATE +33123456789") == ["There is no rate for +33123456789."]


def test_help_and_unlink():
    """HELP lists the commands, HELP <command> its usage; UNLINK ends the link."""
    chat = Chat(linked=[ALICE])
    assert chat.say("HELP") == [EN.text("chat.help", commands=", ".join(COMMANDS))]
    assert chat.say("help add") == [f"Usage: {USAGE['ADD']}"]
    assert chat.say("UNLINK") == [EN.text("chat.unlinked")]
    assert chat.links.links == {}
    assert chat.say("BALANCE") == [EN.text("chat.not_linked")]


def test_progress_goes_to_every_jid_that_steered_the_session():
    """Two JIDs of one account: the one that started and the one that LISTed hear it."""
    chat = Chat(linked=[ALICE, ALICE_PHONE])
    chat.say(f"CALLBACK {SOURCE} {DESTINATION}")
    sid = chat.live()
    chat.say("LIST", jid=ALICE_PHONE)
    chat.world.switch.answer(f"{sid}-a1", chat.world.now())
    chat.world.clock.advance(0)
    told = [(jid, text.splitlines()[0]) for jid, text in chat.sent]
    assert told == [(ALICE, "Source answered."), (ALICE_PHONE, "Source answered.")]


def test_progress_of_one_turn_is_one_message_in_order():
    """Events of one reactor turn run together in order; the next turn's are a new one."""
    chat = Chat(linked=[ALICE])
    chat.say(f"CALLBACK {SOURCE} {DESTINATION}")
    sid = chat.live()
    switch, now = chat.world.switch, chat.world.now()
    switch.ring(f"{sid}-a1", now)
    switch.answer(f"{sid}-a1", now)
    switch.ring(f"{sid}-b1", now)
    [merged] = chat.turn()
    assert merged.splitlines() == [
        "Source ringing...",
        "Source answered.",
        "Calling destination: phone:+923001234567, cost = 0.01204 via PAKLINE",
        "Destination ringing...",
    ]
    switch.answer(f"{sid}-b1", now)
    assert chat.turn() == ["Remote answered. Now talking. Cost = 0.02604"]
    assert chat.turn() == []


def test_a_session_nobody_chats_about_is_told_to_nobody():
    """Progress goes only to JIDs that started or steered the session from chat."""
    chat = Chat(linked=[ALICE])
    chat.world.talking()
    chat.world.clock.advance(0)
    assert chat.sent == []


# -- bad input --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("FROBNICATE now", EN.text("error.unknown_command", command="FROBNICATE")),
        ("", EN.text("error.empty")),
        (
            "CALLBACK",
            EN.text("error.missing_argument", command="CALLBACK", usage=USAGE["CALLBACK"]),
        ),
        ("ADD", EN.text("error.missing_argument", command="ADD", usage=USAGE["ADD"])),
        ("RATE bad\u00e9leg", EN.text("error.bad_leg", leg="bad\u00e9leg")),
        (
            f"CALLBACK {SOURCE} sip:nonsense",
            EN.text("refusal.bad_address", address="sip:nonsense"),
        ),
        (f"CALLBACK {SOURCE} +33123456789", "There is no rate for +33123456789."),
        ("DEL 0", EN.text("error.bad_index")),
        ("ADD +4989123456", EN.text("chat.no_session")),
        ("DEL 3", EN.text("chat.no_session")),
        ("HANGUP", EN.text("chat.no_session")),
        ("LIST", EN.text("chat.no_session")),
        ("LANG xx", EN.text("error.unknown_language", code="xx", choices="en, es, fr, vi, zh")),
        ("x" * 100_000, EN.text("error.too_long", limit=MAX_MESSAGE)),
        ("LIST\x00\x1b[2J", EN.text("error.bad_characters")),
        ("BALANCE \ud800", EN.text("error.bad_characters")),
        ("HELP \udfff\ud800", EN.text("error.bad_characters")),
    ],
)
def test_bad_input_gets_one_clear_reply(body, expected, failures):
    """Each bad input: exactly one reply, no call placed, nothing logged as a failure."""
    chat = Chat(linked=[ALICE])
    assert chat.say(body) == [expected]
    assert chat.world.switch.originated == []
    assert failures == []


def test_del_of_the_source_is_refused_by_index_and_by_address(failures):
    """DEL 1 and DEL <the source's number> get the engine's refusal; the leg stays."""
    chat = Chat(linked=[ALICE])
    chat.world.talking()
    refusal = EN.text("refusal.drop_main_leg")
    assert chat.say("DEL 1") == [refusal]
    assert chat.say(f"DEL {SOURCE}") == [refusal]
    assert chat.say("DEL 7") == [EN.text("error.bad_index")]
    assert chat.world.switch.hung_up == []
    assert failures == []


def test_refusals_are_in_the_language_of_the_account():
    """A bad input from a French account is answered in French."""
    chat = Chat(linked=[ALICE], language="fr")
    fr = translator("fr")
    assert chat.say("HANGUP") == [fr.text("chat.no_session")]
    assert chat.say("FOO") == [fr.text("error.unknown_command", command="FOO")]


UNLINKED_TRIES = [
    f"CALLBACK {SOURCE} {DESTINATION}",
    f"CALLBACK {DESTINATION}",
    "LIST",
    f"ADD {EXTRA}",
    "DEL 3",
    "HANGUP",
    "BALANCE",
    f"RATE {SOURCE}",
    "STATUS",
    "HISTORY",
    "LANG es",
    "UNLINK",
]


def test_an_unlinked_jid_trying_every_command(failures):
    """An unlinked JID gets the short explanation once per command and nothing else."""
    chat = Chat()
    chat.world.talking()  # alice's session: none of a stranger's business
    chat.world.clock.advance(0)
    originated = list(chat.world.switch.originated)
    for body in UNLINKED_TRIES:
        assert chat.say(body, jid=STRANGER) == [EN.text("chat.not_linked")], body
    assert chat.say("HELP", jid=STRANGER) == [EN.text("chat.help", commands=", ".join(COMMANDS))]
    assert chat.world.switch.originated == originated
    assert result(chat.world.store.get_account("alice")).language == "en"
    assert failures == []


def test_wrong_link_passwords_are_throttled_per_jid_and_per_account(failures):
    """Unknown user and wrong password get the same reply; after LINK_FAILURES the JID and
    the account are throttled (even the right password) until the window passes."""
    chat = Chat()
    result(chat.world.store.create_account(Account("bob"), "bob-secret"))
    failed, throttled = EN.text("chat.link_failed"), EN.text("chat.link_throttled")
    assert chat.say("LINK nosuchuser whatever", jid=STRANGER) == [failed]
    assert chat.say("LINK <script>?? x", jid=STRANGER) == [failed]
    for _ in range(LINK_FAILURES - 2):
        assert chat.say("LINK alice guess", jid=STRANGER) == [failed]
    assert chat.say("LINK alice secret-pw", jid=STRANGER) == [throttled]
    # the JID is throttled for every account
    assert chat.say("LINK bob bob-secret", jid=STRANGER) == [throttled]
    # alice's account is not (3 failures), bob's neither: another JID links
    assert chat.say("LINK bob bob-secret", jid=ALICE) == [
        "Linked to account bob. Send HELP for commands."
    ]
    assert chat.links.links == {ALICE: "bob"}
    chat.world.clock.advance(LINK_WINDOW)
    assert chat.say("LINK alice secret-pw", jid=STRANGER) == [
        "Linked to account alice. Send HELP for commands."
    ]
    assert failures == []


def test_an_account_is_throttled_against_guesses_from_many_jids():
    """Guesses at one account from many JIDs: the account is throttled for all of them."""
    chat = Chat()
    for n in range(LINK_FAILURES):
        chat.say("LINK Alice guess", jid=f"bot{n}@example.net")
    assert chat.say("LINK alice secret-pw", jid="fresh@example.net") == [
        EN.text("chat.link_throttled")
    ]


# -- limits -----------------------------------------------------------------------------


def test_rate_limit_replies_once_then_stays_silent_until_the_window_passes(failures):
    """Over the per-JID rate: one chat.rate_limited reply, then silence; later it works."""
    chat = Chat(linked=[ALICE], rate=(3, 10.0))
    for _ in range(3):
        assert chat.say("STATUS") == ["No calls in progress."]
    assert chat.say("STATUS") == [EN.text("chat.rate_limited")]
    for _ in range(20):
        assert chat.say("STATUS") == []
    chat.world.clock.advance(10)
    assert chat.say("STATUS") == ["No calls in progress."]
    assert failures == []


def test_rate_limited_jids_are_forgotten_once_their_window_passed(monkeypatch):
    """The JIDs told they are rate limited are swept when there are many (memory stays
    bounded); one still within its window stays silent."""
    monkeypatch.setattr(ChatFront, "MAX_WARNED", 3)
    chat = Chat(rate=(1, 10.0))
    for n in range(3):
        chat.say("HELP", jid=f"bot{n}@example.net")
        assert chat.say("HELP", jid=f"bot{n}@example.net") == [EN.text("chat.rate_limited")]
    chat.world.clock.advance(10)
    chat.say("HELP", jid="late@example.net")
    chat.say("HELP", jid="late@example.net")
    assert chat.front._warned == {"late@example.net"}
    assert chat.say("HELP", jid="late@example.net") == []


def test_a_flood_from_one_jid_does_not_delay_another():
    """A JID flooding gets cut off; another JID's command is answered in the same turn."""
    chat = Chat(linked=[ALICE], rate=(10, 10.0))
    for _ in range(200):
        chat.front.handle(STRANGER, "LINK alice guess")
    assert chat.say("BALANCE") == [EN.text("chat.balance", balance="100.00 EUR")]
    flood = chat.turn(STRANGER)
    assert flood.count(EN.text("chat.rate_limited")) == 1
    assert len(flood) == 11


def test_a_store_outage_is_one_apology_and_one_logged_failure(failures):
    """Not bad input: the store is down. One reply, the failure in the log."""
    chat = Chat(linked=[ALICE])
    chat.world.store.available = False
    assert chat.say("BALANCE") == [EN.text("chat.failed")]
    assert len(failures) == 1


# -- any input --------------------------------------------------------------------------

_WORDS = st.sampled_from([*COMMANDS, "callback", "via", "del", "link", "lang", "1", "+49"])
_ANY_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=60)
_BODIES = st.one_of(
    _ANY_TEXT,
    st.lists(st.one_of(_WORDS, _ANY_TEXT), max_size=5).map(" ".join),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages=st.lists(st.tuples(st.sampled_from([ALICE, STRANGER]), _BODIES), max_size=6))
def test_any_body_from_anyone_gets_at_most_one_reply_and_never_raises(messages):
    """Whatever arrives, from a linked JID or not: the handler fires, at most one reply
    (plus one progress message) per message, and no failure is logged."""
    logged = []

    def observe(event):
        if "log_failure" in event:
            logged.append(event)

    globalLogPublisher.addObserver(observe)
    try:
        chat = Chat(linked=[ALICE], rate=(4, 10.0))
        chat.world.talking()
        chat.world.clock.advance(0)
        for jid, body in messages:
            d = chat.front.handle(jid, body)
            assert d.called
            assert result(d) is None
            assert len(chat.turn(jid)) <= 2
    finally:
        globalLogPublisher.removeObserver(observe)
    assert logged == []


def test_text_for_a_jid_is_in_the_language_last_seen_for_it():
    """The presence status and the invitation: the JID's account language, else English."""
    chat = Chat(linked=[ALICE], language="es")
    chat.say("BALANCE")
    assert chat.front.text_for(ALICE, "chat.presence_status") == ES.text("chat.presence_status")
    assert chat.front.text_for(STRANGER, "chat.invite") == EN.text("chat.invite")


# -- latency: the asker's account from the engine's cache -------------------------------


def test_commands_read_the_account_from_the_engines_cache():
    """The second command of a JID reads no account from the store (the feed is live)."""
    chat = Chat(linked=[ALICE])
    reads = []
    original = chat.world.store.get_account
    chat.world.store.get_account = lambda username: reads.append(username) or original(username)
    chat.say("STATUS")
    chat.say("STATUS")
    assert reads == ["alice"]


def test_lang_is_spoken_by_the_next_reply_even_before_the_feed_tells():
    """LANG goes through the store; the engine forgets the account at once."""
    chat = Chat(linked=[ALICE])
    chat.say("STATUS")
    chat.world.manager.book._stop_watching()  # the feed's word is still on its way
    assert chat.say("LANG es") == [ES.text("chat.language_set", language="español")]
    assert chat.say("STATUS") == [ES.text("chat.status_none")]
