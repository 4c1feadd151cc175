"""Tests for callbackd.core.sms: the SMS command grammar."""

from __future__ import annotations

import re

import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from callbackd.core.chat import (
    COMMANDS,
    LANGUAGES,
    USAGE,
    Balance,
    Callback,
    ChatCommand,
    CommandError,
    Help,
    History,
    Language,
    RateQuery,
    Status,
)
from callbackd.core.sms import (
    ERROR_CODES,
    KINDS,
    MAX_BOOK_INDEX,
    MAX_LEG,
    MAX_MESSAGE,
    MAX_VALUE,
    SMS_COMMANDS,
    SmsError,
    SmsRequest,
    parse_sms,
)

PARSED = [
    # VoipSwitch's examples
    (
        "U.callback P.pass D.48774417880 O.12345678",
        SmsRequest("callback", "pass", destination="48774417880", source="12345678"),
    ),
    ("U.callback P.pass R.48600316058", SmsRequest("callback", "pass", register="48600316058")),
    ("B.office", SmsRequest(book_name="office")),
    ("N2", SmsRequest(book_index=2)),
    ("I", SmsRequest(info=True)),
    # any order, any case of the prefixes, values as written
    (
        "o.12345678 d.48774417880 p.PaSs u.CallBack",
        SmsRequest("CallBack", "PaSs", destination="48774417880", source="12345678"),
    ),
    ("D.+4930123456", SmsRequest(destination="+4930123456")),
    (
        "D.sip:Bob@example.org O.xmpp:alice@jabber.org",
        SmsRequest(destination="sip:Bob@example.org", source="xmpp:alice@jabber.org"),
    ),
    ("r.+48600316058 U.x", SmsRequest("x", register="+48600316058")),
    ("b.Office O.+4930123456", SmsRequest(book_name="Office", source="+4930123456")),
    ("B.B\u00fcro", SmsRequest(book_name="B\u00fcro")),
    ("n12 P.s\u00e9cr\u00e8t:/.", SmsRequest(password="s\u00e9cr\u00e8t:/.", book_index=12)),
    ("N.3", SmsRequest(book_index=3)),
    ("N007", SmsRequest(book_index=7)),
    (f"N{MAX_BOOK_INDEX}", SmsRequest(book_index=MAX_BOOK_INDEX)),
    ("i u.alice p.secret", SmsRequest("alice", "secret", info=True)),
    ("U.u.P.p D.D.1", SmsRequest("u.P.p", destination="D.1")),
    # separators: any whitespace, commas and semicolons
    ("U.callback, P.pass; D.123", SmsRequest("callback", "pass", destination="123")),
    ("U.a,P.b;D.1", SmsRequest("a", "b", destination="1")),
    ("\n\t D.1 \r\n\u3000", SmsRequest(destination="1")),
    ("U.a\uff0cP.b\uff1bD.1", SmsRequest("a", "b", destination="1")),
    (",;D.1;,", SmsRequest(destination="1")),
    ("D." + "9" * MAX_LEG, SmsRequest(destination="9" * MAX_LEG)),
    ("U." + "u" * MAX_VALUE + " I", SmsRequest("u" * MAX_VALUE, info=True)),
    # the chat grammar, with credentials before it
    (
        "CALLBACK +4930123456 +923001234567 via MKS AVANGARD",
        SmsRequest(command=Callback("+4930123456", "+923001234567", ("MKS", "AVANGARD"))),
    ),
    ("callback +923001234567", SmsRequest(command=Callback(None, "+923001234567"))),
    (
        "U.alice P.secret CALLBACK +4930123456, +923001234567",
        SmsRequest("alice", "secret", command=Callback("+4930123456", "+923001234567")),
    ),
    ("p.secret u.alice balance", SmsRequest("alice", "secret", command=Balance())),
    ("Status", SmsRequest(command=Status())),
    ("HISTORY", SmsRequest(command=History())),
    ("RATE +923001234567", SmsRequest(command=RateQuery("+923001234567"))),
    ("LANG es", SmsRequest(command=Language("es"))),
    ("help", SmsRequest(command=Help())),
    ("HELP rate", SmsRequest(command=Help("RATE"))),
]

LEG_PIECES = {"token": "D."}

REFUSED = [
    ("", "empty", {}),
    (" ,; \t\r\n\u3000 ", "empty", {}),
    ("x" * (MAX_MESSAGE + 1), "too_long", {"limit": "1000"}),
    ("I" + " " * MAX_MESSAGE, "too_long", {"limit": "1000"}),
    ("D.1\x00", "bad_characters", {}),
    ("D.+49\x1b[2J", "bad_characters", {}),
    ("U.a P.pass\ud800word I", "bad_characters", {}),
    ("D.+49\u200b30123456", "bad_characters", {}),
    ("I\x0bD.1", "bad_characters", {}),
    ("hello", "unknown_token", {"token": "hello"}),
    ("D.1 please", "unknown_token", {"token": "please"}),
    ("\u0131", "unknown_token", {"token": "\u0131"}),
    ("X" * 30, "unknown_token", {"token": "X" * 20}),
    ("Nx", "unknown_token", {"token": "Nx"}),
    ("N..2", "unknown_token", {"token": "N..2"}),
    ("+4930123456", "unknown_token", {"token": "+4930123456"}),
    ("II", "unknown_token", {"token": "II"}),
    ("D:123", "unknown_token", {"token": "D:123"}),
    ("U.a P.b D.1 O", "unknown_token", {"token": "O"}),
    ("D.", "bad_value", {"token": "D."}),
    ("D.+49\u0663\u0660123", "bad_value", {"token": "D."}),
    ("O.\uff0b4930123456 D.1", "bad_value", {"token": "O."}),
    ("R." + "9" * (MAX_LEG + 1), "bad_value", {"token": "R."}),
    ("U." + "u" * (MAX_VALUE + 1) + " I", "bad_value", {"token": "U."}),
    ("P. I", "bad_value", {"token": "P."}),
    ("B.", "bad_value", {"token": "B."}),
    ("N", "bad_value", {"token": "N"}),
    ("N.", "bad_value", {"token": "N"}),
    ("N0", "bad_value", {"token": "N"}),
    (f"N{MAX_BOOK_INDEX + 1}", "bad_value", {"token": "N"}),
    # a password with a space: the rest is not shown
    ("U.a P.my secret D.1", "bad_value", {"token": "P."}),
    ("U.a P.pa,ss D.1", "bad_value", {"token": "P."}),
    # a number with spaces: the groups after it belong to it
    ("D.+48 77 441 7880", "bad_value", LEG_PIECES),
    ("D.+48 (77) 441-7880", "bad_value", LEG_PIECES),
    ("D.1 D.2", "duplicate_token", {"token": "D."}),
    ("i I", "duplicate_token", {"token": "I"}),
    ("N1 n.2", "duplicate_token", {"token": "N"}),
    ("U.a u.a I", "duplicate_token", {"token": "U."}),
    ("P.a P.b I", "duplicate_token", {"token": "P."}),
    ("R.1 D.2", "conflicting_tokens", {"token": "R.", "other": "D."}),
    ("O.1 R.2", "conflicting_tokens", {"token": "O.", "other": "R."}),
    ("B.office N2", "conflicting_tokens", {"token": "B.", "other": "N"}),
    ("D.1 B.office", "conflicting_tokens", {"token": "D.", "other": "B."}),
    ("N2 O.1 D.1", "conflicting_tokens", {"token": "N", "other": "D."}),
    ("I D.1", "conflicting_tokens", {"token": "I", "other": "D."}),
    ("R.1 I", "conflicting_tokens", {"token": "R.", "other": "I"}),
    ("CALLBACK +1 D.2", "conflicting_tokens", {"token": "CALLBACK", "other": "D."}),
    ("BALANCE I", "conflicting_tokens", {"token": "BALANCE", "other": "I"}),
    ("CALLBACK +1 P.secret", "conflicting_tokens", {"token": "CALLBACK", "other": "P."}),
    ("O.1", "missing_destination", {}),
    ("U.a P.b O.1", "missing_destination", {}),
    ("U.callback P.pass", "nothing_to_do", {}),
    ("P.pass", "nothing_to_do", {}),
    ("LINK alice secret", "not_by_sms", {"command": "LINK"}),
    ("U.a P.b hangup", "not_by_sms", {"command": "HANGUP"}),
    ("HELP del", "not_by_sms", {"command": "DEL"}),
    # the chat grammar's own refusals
    ("HELP FOO", "unknown_command", {"command": "FOO"}),
    ("CALLBACK", "missing_argument", {"command": "CALLBACK", "usage": USAGE["CALLBACK"]}),
    ("BALANCE now", "too_many_arguments", {"command": "BALANCE", "usage": "BALANCE"}),
    ("RATE +49\u0663\u0660", "bad_leg", {"leg": "+49\u0663\u0660"}),
    ("LANG de", "unknown_language", {"code": "de", "choices": ", ".join(LANGUAGES)}),
]


@pytest.mark.parametrize(("text", "request_"), PARSED)
def test_messages_parse(text, request_):
    """Each token, in each order and case, and the chat commands, parse to their request."""
    assert parse_sms(text) == request_


@pytest.mark.parametrize(("text", "code", "params"), REFUSED)
def test_refusals_say_why(text, code, params):
    """What is no request is refused with the message id and placeholders for it."""
    with pytest.raises(SmsError) as info:
        parse_sms(text)
    assert (info.value.code, info.value.params) == (code, params)


def test_every_error_code_is_declared_and_used():
    """ERROR_CODES is exactly the codes the grammar raises (the catalogue's message ids)."""
    assert {code for _, code, _ in REFUSED} == ERROR_CODES


def test_an_sms_error_is_a_command_error():
    """Code that reports a chat refusal reports an SMS one the same way."""
    assert issubclass(SmsError, CommandError)


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("D.1", "callback"),
        ("B.office", "callback"),
        ("N1 O.2", "callback"),
        ("U.a P.b R.1", "register"),
        ("I", "info"),
        ("CALLBACK +1", "chat"),
        ("U.a P.b BALANCE", "chat"),
    ],
)
def test_kind_says_what_is_asked(text, kind):
    """Each message asks for one kind of thing."""
    assert parse_sms(text).kind == kind


def test_sms_commands_are_chat_commands():
    """The chat commands an SMS may carry are the chat grammar's, and not those that link."""
    assert set(SMS_COMMANDS) <= set(COMMANDS)
    assert {"LINK", "UNLINK", "ADD", "DEL", "HANGUP", "LIST"}.isdisjoint(SMS_COMMANDS)


def test_the_password_is_never_shown():
    """Neither a request's repr nor an error shows the password, even one with a space."""
    assert "hunter2" not in repr(parse_sms("U.alice P.hunter2 I"))
    assert "hunter2" not in repr(parse_sms("U.alice P.hunter2 BALANCE"))
    for text in ("U.alice P.hunter2 hunter2 I", "U.a P.my hunter2", "CALLBACK +1 P.hunter2"):
        with pytest.raises(SmsError) as info:
            parse_sms(text)
        assert "hunter2" not in _shown(info.value)


def _shown(error: SmsError) -> str:
    """All an error could show: its str, its repr and its params."""
    return str(error) + repr(error) + repr(error.params)


def _check_error(error: SmsError) -> None:
    assert isinstance(error, SmsError)
    assert error.code in ERROR_CODES
    assert all(
        isinstance(key, str) and isinstance(value, str) for key, value in error.params.items()
    )


# any text at all: controls, lone surrogates (invalid UTF-8), every plane
ANY_TEXT = st.text(st.characters(exclude_categories=()))
# words that look like tokens, chat words and neither, to reach every refusal
WORDS = st.sampled_from(
    ["U.a", "P.b", "D.1", "O.2", "R.3", "B.x", "N1", "n.2", "N", "N0", "I", "i", "D.", "x"]
    + ["CALLBACK", "balance", "HELP", "LINK", "via", "+4930123456", "LANG", "es"]
)
SEPARATORS = st.text(st.sampled_from(" \t\r\n,;\u00a0\u3000\uff0c\uff1b"), min_size=1, max_size=3)
TOKEN_SOUP = st.lists(st.tuples(WORDS | ANY_TEXT, SEPARATORS), max_size=12).map(
    lambda pairs: "".join(word + separator for word, separator in pairs)
)


@given(
    st.one_of(
        ANY_TEXT,
        TOKEN_SOUP,
        st.builds(lambda text, times: text * times, ANY_TEXT, st.integers(1, 100_000)),
    )
)
@example("x" * 100_000)
@example("\ud83d\ude00" * 10)
@example("N" + "9" * 999)
def test_any_text_parses_or_raises_sms_error(text):
    """On any text the parser returns a request of one kind, or an SmsError with a declared code."""
    try:
        request = parse_sms(text)
    except SmsError as error:
        _check_error(error)
    else:
        assert len(text) <= MAX_MESSAGE
        _check_request(request)


def _check_request(request: SmsRequest) -> None:
    """A parsed request asks for one thing, with only the fields that go with it."""
    destinations = (request.destination, request.book_name, request.book_index)
    fields = {
        "callback": sum(value is not None for value in destinations) == 1,
        "register": request.register is not None,
        "info": request.info,
        "chat": request.command is not None,
    }
    assert request.kind in KINDS
    assert [kind for kind, present in fields.items() if present] == [request.kind]
    assert request.source is None or request.kind == "callback"


# values as a user writes them: no whitespace, no separators
_NOT_SEPARATOR = st.characters(exclude_categories=("C", "Z"), exclude_characters=",;\uff0c\uff1b")
VALUES = st.text(_NOT_SEPARATOR, min_size=1, max_size=MAX_VALUE)
_ASCII_LEG = st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters=",;")
LEGS = st.text(_ASCII_LEG, min_size=1, max_size=40) | st.text(
    _ASCII_LEG, min_size=MAX_LEG, max_size=MAX_LEG
)
INDEXES = st.integers(1, MAX_BOOK_INDEX)
# what the chat part may hold: no word that reads as an SMS token, no "via"
_SMS_TOKEN = re.compile(r"[UPDORBupdorb]\..*|[Nn]\.?[0-9]*|[Ii]", re.DOTALL)
CHAT_LEGS = LEGS.filter(lambda leg: not _SMS_TOKEN.fullmatch(leg) and leg.lower() != "via")

CALLBACKS = st.builds(
    lambda destination, book_name, book_index, source, which: SmsRequest(
        destination=destination if which == 0 else None,
        book_name=book_name if which == 1 else None,
        book_index=book_index if which == 2 else None,
        source=source,
    ),
    LEGS,
    VALUES,
    INDEXES,
    st.none() | LEGS,
    st.integers(0, 2),
)
CHAT_COMMANDS: st.SearchStrategy[ChatCommand] = st.one_of(
    st.builds(
        Callback, st.none() | CHAT_LEGS, CHAT_LEGS, st.lists(CHAT_LEGS, max_size=2).map(tuple)
    ),
    st.builds(Balance),
    st.builds(Status),
    st.builds(History),
    st.builds(RateQuery, CHAT_LEGS),
    st.builds(Language, st.sampled_from(LANGUAGES)),
    st.builds(Help, st.none() | st.sampled_from(SMS_COMMANDS)),
)
ASKS = st.one_of(
    CALLBACKS,
    st.builds(lambda number: SmsRequest(register=number), LEGS),
    st.just(SmsRequest(info=True)),
    st.builds(lambda command: SmsRequest(command=command), CHAT_COMMANDS),
)
REQUESTS = st.builds(
    lambda asked, username, password: SmsRequest(
        username,
        password,
        asked.destination,
        asked.source,
        asked.register,
        asked.book_name,
        asked.book_index,
        asked.info,
        asked.command,
    ),
    ASKS,
    st.none() | VALUES,
    st.none() | VALUES,
)


def _chat_words(command: ChatCommand) -> list[str]:
    """The chat command as a user writes it, in words (independent of the parser)."""
    match command:
        case Callback(source, destination, via):
            legs = [destination] if source is None else [source, destination]
            return ["CALLBACK", *legs, *(["via", *via] if via else [])]
        case RateQuery(leg):
            return ["RATE", leg]
        case Language(code):
            return ["LANG", code]
        case Help(topic):
            return ["HELP", *([topic] if topic else [])]
        case Balance():
            return ["BALANCE"]
        case Status():
            return ["STATUS"]
    return ["HISTORY"]


def _tokens(request: SmsRequest, data: st.DataObject) -> list[str]:
    """The request as a user writes it, in tokens, in any order and any case of prefixes."""

    def prefix(name: str) -> str:
        return data.draw(st.sampled_from([name, name.lower()]))

    credentials = [
        prefix(name) + value
        for name, value in (("U.", request.username), ("P.", request.password))
        if value is not None
    ]
    if request.command is not None:
        words = _chat_words(request.command)
        words[0] = data.draw(st.sampled_from([words[0], words[0].lower(), words[0].title()]))
        return data.draw(st.permutations(credentials)) + words
    valued = [
        prefix(name) + value
        for name, value in (
            ("D.", request.destination),
            ("O.", request.source),
            ("R.", request.register),
            ("B.", request.book_name),
        )
        if value is not None
    ]
    if request.book_index is not None:
        valued.append(prefix("N") + data.draw(st.sampled_from(["", "."])) + str(request.book_index))
    if request.info:
        valued.append(prefix("I"))
    return data.draw(st.permutations(credentials + valued))


def _render(tokens: list[str], data: st.DataObject) -> str:
    text = data.draw(SEPARATORS | st.just(""))
    for token in tokens:
        text += token + data.draw(SEPARATORS)
    return text


@given(REQUESTS, st.data())
def test_rendered_requests_parse_back(request_, data):
    """A request written out in any order and case, with any separators, parses to itself."""
    text = _render(_tokens(request_, data), data)
    assume(len(text) <= MAX_MESSAGE)
    parsed = parse_sms(text)
    assert parsed == request_
    _check_request(parsed)


PASSWORDS = st.text(st.sampled_from("0123456789!#$%&*=?@^_~\u00e9\u00df\u0436\u4e2d"), min_size=4)
# what may go wrong around the password: a space in it, a word, a token too many
MISTAKES = st.sampled_from(["space", "word", "duplicate", "conflict", "chat"])


@given(ASKS, PASSWORDS, MISTAKES, st.data())
def test_the_password_is_never_shown_in_an_error(asked, password, mistake, data):
    """Whatever is wrong with a message, the error it raises never shows the password."""
    tokens = _tokens(asked, data)
    others = " ".join(tokens)
    assume(password not in others)
    if mistake == "space":
        cut = data.draw(st.integers(1, len(password) - 1))
        tokens.insert(0, f"P.{password[:cut]} {password[cut:]}")
    else:
        tokens.insert(data.draw(st.integers(0, len(tokens))), "P." + password)
        extra = {"word": "hello", "duplicate": "P.x", "conflict": "R.1", "chat": "P.x"}[mistake]
        tokens.insert(data.draw(st.integers(0, len(tokens))), extra)
    text = _render(tokens, data)
    assume(len(text) <= MAX_MESSAGE)
    try:
        request = parse_sms(text)
    except SmsError as error:
        _check_error(error)
        assert password not in _shown(error)
    else:
        assert password not in repr(request)
