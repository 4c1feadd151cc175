"""Tests for callbackd.core.chat: the chat command grammar."""

from __future__ import annotations

import re

import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from callbackd.core.address import AddressError
from callbackd.core.chat import (
    COMMANDS,
    ERROR_CODES,
    LANGUAGES,
    MAX_LEG,
    MAX_MESSAGE,
    USAGE,
    Add,
    Balance,
    Callback,
    ChatCommand,
    CommandError,
    Delete,
    Hangup,
    Help,
    History,
    Language,
    Link,
    ListLegs,
    RateQuery,
    Status,
    Unlink,
    parse_command,
)
from callbackd.numbers import parse_address

PARSED = [
    # GTalk2VoIP's examples
    (
        "CALLBACK +4930123456 +923001234567 via MKS AVANGARD",
        Callback("+4930123456", "+923001234567", ("MKS", "AVANGARD")),
    ),
    ("CALLBACK gtalk:user@gmail.com +4930123456", Callback("gtalk:user@gmail.com", "+4930123456")),
    ("CALLBACK +4930123456 sip:bob@example.com", Callback("+4930123456", "sip:bob@example.com")),
    ("hangup", Hangup()),
    ("LIST", ListLegs()),
    ("ADD +15551230000", Add("+15551230000")),
    ("ADD +15551230000 PROXICOM", Add("+15551230000", "PROXICOM")),
    ("DEL phone:15551230000", Delete("phone:15551230000")),
    # the rest of the grammar
    ("CALLBACK +923001234567", Callback(None, "+923001234567")),
    ("CALLBACK +923001234567 via MKS", Callback(None, "+923001234567", ("MKS",))),
    (
        "CALLBACK +4930123456 +923001234567 VIA mks",
        Callback("+4930123456", "+923001234567", ("mks",)),
    ),
    ("  callback\t+4930123456 \n\r +923001234567  ", Callback("+4930123456", "+923001234567")),
    ("CallBack\u3000+4930123456\u00a0+923001234567", Callback("+4930123456", "+923001234567")),
    ("add xmpp:alice@jabber.org via sipgate", Add("xmpp:alice@jabber.org", "sipgate")),
    ("Del 2", Delete("2")),
    ("DEL 02", Delete("2")),
    ("DEL 999", Delete("999")),
    ("DEL 030123456", Delete("030123456")),
    ("DEL +15551230000", Delete("+15551230000")),
    ("BALANCE", Balance()),
    ("rate +923001234567", RateQuery("+923001234567")),
    ("status", Status()),
    ("History", History()),
    ("LANG es", Language("es")),
    ("lang ZH", Language("zh")),
    ("HELP", Help(None)),
    ("help callback", Help("CALLBACK")),
    ("LINK alice s3cr:t/\u00e9\u00df!", Link("alice", "s3cr:t/\u00e9\u00df!")),
    ("unlink", Unlink()),
]

CALLBACK_USAGE = {"command": "CALLBACK", "usage": USAGE["CALLBACK"]}
ADD_USAGE = {"command": "ADD", "usage": USAGE["ADD"]}

REFUSED = [
    ("", "empty", {}),
    (" \t\r\n\u3000 ", "empty", {}),
    ("x" * (MAX_MESSAGE + 1), "too_long", {"limit": "1000"}),
    ("LIST" + " " * MAX_MESSAGE, "too_long", {"limit": "1000"}),
    ("STATUS\x00", "bad_characters", {}),
    ("RATE +49\x1b[2J", "bad_characters", {}),
    ("LIST\x7f", "bad_characters", {}),
    ("LIST\x85", "bad_characters", {}),
    ("LIST\x0bBALANCE", "bad_characters", {}),
    ("LINK alice pass\ud800word", "bad_characters", {}),
    ("CALLBACK +49\u200b30123456", "bad_characters", {}),
    ("\ufeffLIST", "bad_characters", {}),
    ("CALLBACK \u202esip:bob@example.com", "bad_characters", {}),
    ("FOO", "unknown_command", {"command": "FOO"}),
    ("call +4930123456", "unknown_command", {"command": "call"}),
    ("l\u0131st", "unknown_command", {"command": "l\u0131st"}),
    ("\u017ftatus", "unknown_command", {"command": "\u017ftatus"}),
    ("+4930123456 +923001234567", "unknown_command", {"command": "+4930123456"}),
    ("X" * 30, "unknown_command", {"command": "X" * 20}),
    ("HELP FOO", "unknown_command", {"command": "FOO"}),
    ("CALLBACK", "missing_argument", CALLBACK_USAGE),
    ("CALLBACK via MKS", "missing_argument", CALLBACK_USAGE),
    ("CALLBACK +4930123456 via", "missing_argument", CALLBACK_USAGE),
    ("ADD", "missing_argument", ADD_USAGE),
    ("ADD via PROXICOM", "missing_argument", ADD_USAGE),
    ("ADD +15551230000 via", "missing_argument", ADD_USAGE),
    ("DEL", "missing_argument", {"command": "DEL", "usage": USAGE["DEL"]}),
    ("RATE", "missing_argument", {"command": "RATE", "usage": USAGE["RATE"]}),
    ("LANG", "missing_argument", {"command": "LANG", "usage": USAGE["LANG"]}),
    ("LINK alice", "missing_argument", {"command": "LINK", "usage": USAGE["LINK"]}),
    ("CALLBACK +1 +2 +3", "too_many_arguments", CALLBACK_USAGE),
    ("CALLBACK +1 +2 via A B C", "too_many_arguments", CALLBACK_USAGE),
    ("ADD +1 PROXICOM MKS", "too_many_arguments", ADD_USAGE),
    ("ADD +1 via PROXICOM MKS", "too_many_arguments", ADD_USAGE),
    ("ADD +1 +2 via PROXICOM", "too_many_arguments", ADD_USAGE),
    ("DEL 2 3", "too_many_arguments", {"command": "DEL", "usage": USAGE["DEL"]}),
    ("list all", "too_many_arguments", {"command": "LIST", "usage": "LIST"}),
    ("HANGUP now", "too_many_arguments", {"command": "HANGUP", "usage": "HANGUP"}),
    ("LIST\nBALANCE", "too_many_arguments", {"command": "LIST", "usage": "LIST"}),
    ("HELP ADD DEL", "too_many_arguments", {"command": "HELP", "usage": USAGE["HELP"]}),
    ("LANG es fr", "too_many_arguments", {"command": "LANG", "usage": USAGE["LANG"]}),
    ("LINK alice my secret", "too_many_arguments", {"command": "LINK", "usage": USAGE["LINK"]}),
    ("CALLBACK +4930123456 +49\u0663\u0660123", "bad_leg", {"leg": "+49\u0663\u0660123"}),
    ("RATE \uff0b4930123456", "bad_leg", {"leg": "\uff0b4930123456"}),
    ("DEL sip:b\u00f8b@example.com", "bad_leg", {"leg": "sip:b\u00f8b@example.com"}),
    ("ADD " + "9" * (MAX_LEG + 1), "bad_leg", {"leg": "9" * 40}),
    ("RATE via", "bad_leg", {"leg": "via"}),
    ("DEL Via", "bad_leg", {"leg": "Via"}),
    ("DEL 0", "bad_index", {"index": "0"}),
    ("DEL 000", "bad_index", {"index": "000"}),
    ("DEL -1", "bad_index", {"index": "-1"}),
    ("LANG de", "unknown_language", {"code": "de", "choices": "en, es, fr, vi, zh"}),
    ("LANG es-ES", "unknown_language", {"code": "es-ES", "choices": "en, es, fr, vi, zh"}),
]


@pytest.mark.parametrize(("text", "command"), PARSED)
def test_commands_parse(text, command):
    """Each command in each of its forms parses to its command object."""
    assert parse_command(text) == command


@pytest.mark.parametrize(("text", "code", "params"), REFUSED)
def test_refusals_say_why(text, code, params):
    """What is not a command is refused with the message id and placeholders for it."""
    with pytest.raises(CommandError) as info:
        parse_command(text)
    assert (info.value.code, info.value.params) == (code, params)


def test_every_error_code_is_declared_and_used():
    """ERROR_CODES is exactly the codes the grammar raises (the catalogue's message ids)."""
    assert {code for _, code, _ in REFUSED} == ERROR_CODES


def test_every_command_has_usage_and_an_example():
    """Each command word has a usage line starting with it, and a parsed example here."""
    assert COMMANDS == tuple(USAGE)
    assert all(USAGE[word].startswith(word) for word in COMMANDS)
    assert {text.split()[0].upper() for text, _ in PARSED} == set(COMMANDS)


def test_the_password_is_never_shown():
    """Neither an error nor the command's repr shows a LINK password."""
    assert "hunter2" not in repr(parse_command("LINK alice hunter2"))
    with pytest.raises(CommandError) as info:
        parse_command("LINK alice hunter2 again")
    assert "hunter2" not in repr(info.value) + repr(info.value.params)


def test_error_code_may_be_a_placeholder_name():
    """``code`` is positional-only, so a placeholder called ``code`` can be passed."""
    error = CommandError("unknown_language", code="de", choices="en")
    assert (error.code, error.params) == ("unknown_language", {"code": "de", "choices": "en"})


# any text at all: controls, lone surrogates (invalid UTF-8), every plane
ANY_TEXT = st.text(st.characters(exclude_categories=()))
COMMAND_WORDS = st.sampled_from(COMMANDS).flatmap(
    lambda word: st.sampled_from([word, word.lower(), word.capitalize()])
)


def _check_error(error: CommandError) -> None:
    assert error.code in ERROR_CODES
    assert all(
        isinstance(key, str) and isinstance(value, str) for key, value in error.params.items()
    )
    if "usage" in error.params:
        assert error.params["usage"] == USAGE[error.params["command"]]


@given(
    st.one_of(
        ANY_TEXT,
        st.builds(lambda word, rest: f"{word} {rest}", COMMAND_WORDS, ANY_TEXT),
        st.builds(lambda text, times: text * times, ANY_TEXT, st.integers(1, 100_000)),
    )
)
@example("x" * 100_000)
@example("\ud83d\ude00" * 10)
def test_any_text_parses_or_raises_command_error(text):
    """On any text the parser returns a command or a CommandError with a declared code."""
    try:
        command = parse_command(text)
    except CommandError as error:
        _check_error(error)
    else:
        assert len(text) <= MAX_MESSAGE
        assert isinstance(command, ChatCommand)


# what a user may write for a leg: printable ASCII without spaces, never the keyword
LEGS = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=MAX_LEG)
LEGS = LEGS.filter(lambda leg: leg.lower() != "via")
# provider names (the engine knows which exist): any printable text without spaces
PROVIDERS = st.text(st.characters(exclude_categories=("C", "Z")), min_size=1, max_size=32)
INDEXES = st.integers(1, 999).map(str)


def _leg_not_index(leg: str) -> bool:
    """Not a DEL index: up to three digits, perhaps after a minus, are one."""
    return re.fullmatch(r"-?[0-9]{1,3}", leg) is None


COMMAND_OBJECTS: st.SearchStrategy[ChatCommand] = st.one_of(
    st.builds(
        Callback,
        st.none() | LEGS,
        LEGS,
        st.lists(PROVIDERS, max_size=2).map(tuple),
    ),
    st.builds(ListLegs),
    st.builds(Add, LEGS, st.none() | PROVIDERS),
    st.builds(Delete, INDEXES | LEGS.filter(_leg_not_index)),
    st.builds(Hangup),
    st.builds(Balance),
    st.builds(RateQuery, LEGS),
    st.builds(Status),
    st.builds(History),
    st.builds(Language, st.sampled_from(LANGUAGES)),
    st.builds(Help, st.none() | st.sampled_from(COMMANDS)),
    st.builds(Link, PROVIDERS, PROVIDERS),
    st.builds(Unlink),
)


def _words(command: ChatCommand) -> list[str]:
    """The command as a user writes it, in words (an independent renderer for the test)."""
    match command:
        case Callback(source, destination, via):
            legs = [destination] if source is None else [source, destination]
            return ["CALLBACK", *legs, *(["via", *via] if via else [])]
        case Add(leg, via):
            return ["ADD", leg, *(["via", via] if via else [])]
        case Delete(target):
            return ["DEL", target]
        case RateQuery(leg):
            return ["RATE", leg]
        case Language(code):
            return ["LANG", code]
        case Help(topic):
            return ["HELP", *([topic] if topic else [])]
        case Link(username, password):
            return ["LINK", username, password]
    return [BARE_WORDS[type(command)]]


BARE_WORDS = {
    ListLegs: "LIST",
    Hangup: "HANGUP",
    Balance: "BALANCE",
    Status: "STATUS",
    History: "HISTORY",
    Unlink: "UNLINK",
}


SPACE = st.text(st.sampled_from(" \t\r\n\u00a0\u2003\u3000"), min_size=1, max_size=3)


@given(COMMAND_OBJECTS, st.data())
def test_rendered_commands_parse_back(command, data):
    """A command written out in any case, with any whitespace, parses to itself."""
    words = _words(command)
    keywords = {0, *(i for i, word in enumerate(words) if word == "via")}
    if isinstance(command, Language | Help):
        keywords.add(1)
    text = data.draw(SPACE | st.just(""))
    for position, word in enumerate(words):
        if position in keywords:
            word = data.draw(st.sampled_from([word, word.lower(), word.title()]))
        text += word + data.draw(SPACE)
    assume(len(text) <= MAX_MESSAGE)
    assert parse_command(text) == command


GTALK2VOIP_SPELLINGS = st.text(alphabet="0123456789+-.()@:abcXYZ_", min_size=1, max_size=30)
SCHEMES = st.sampled_from(["", "phone:", "sip:", "xmpp:", "gtalk:", "msn:", "yahoo:", "Sip:"])


@given(SCHEMES, GTALK2VOIP_SPELLINGS)
@example("phone:", "4930123456")
@example("sip:", "bob@example.com:5061")
def test_every_address_is_a_leg(scheme, rest):
    """The grammar refuses no text that the engine reads as an address."""
    leg = scheme + rest
    try:
        parse_address(leg, "DE")
    except AddressError:
        return
    assert parse_command(f"RATE {leg}") == RateQuery(leg)
