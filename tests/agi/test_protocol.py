"""FastAGI's wire format, fed with the real Asterisk 22 session byte for byte."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callbackd.agi.protocol import (
    HANGUP,
    AGIArgumentError,
    AGIParser,
    AGIProtocolError,
    Bare,
    Reply,
    format_command,
    parse_reply_line,
    quote,
)
from callbackd.simulator.agi import parse_args
from tests.agi.transcript import asterisk_bytes, script_bytes

#: the environment keys of the transcript, in Asterisk 22's order
ENV_KEYS = [
    "agi_network",
    "agi_network_script",
    "agi_request",
    "agi_channel",
    "agi_language",
    "agi_type",
    "agi_uniqueid",
    "agi_version",
    "agi_callerid",
    "agi_calleridname",
    "agi_callingpres",
    "agi_callingani2",
    "agi_callington",
    "agi_callingtns",
    "agi_dnid",
    "agi_rdnis",
    "agi_context",
    "agi_extension",
    "agi_priority",
    "agi_enhanced",
    "agi_accountcode",
    "agi_threadid",
    "agi_arg_1",
]

#: (code, result, data, endpos) of each reply in the transcript
REPLIES = [
    (200, "0", None, None),  # ANSWER
    (200, "1", None, None),  # SET VARIABLE CHANNEL(language)
    (200, "0", None, 11750),  # STREAM FILE callbackd/welcome
    (200, "1234", None, None),  # GET DATA enter-pin
    (200, "-1", None, None),  # SAY NUMBER 1234 (no digit sounds installed)
    (200, "0", None, None),  # SAY DIGITS
    (200, "15551234567", None, None),  # GET DATA enter-destination
    (200, "53", None, None),  # WAIT FOR DIGIT: "5"
    (200, "1", "15551230000", None),  # GET VARIABLE CALLERID(num)
    (510, "", None, None),  # NOSUCHCOMMAND
    (200, "0", None, None),  # EXEC Wait 1
    (200, "1", None, None),  # SET VARIABLE CB_RESULT
]


def summary(events: list) -> list:
    """Events as comparable tuples (the environment as its ordered items)."""
    out: list = []
    for event in events:
        if isinstance(event, dict):
            out.append(("env", list(event.items())))
        elif isinstance(event, Reply):
            out.append((event.code, event.result, event.data, event.endpos))
        else:
            out.append(event)
    return out


def parse_chunks(chunks: list[bytes]) -> list:
    parser = AGIParser()
    events: list = []
    for chunk in chunks:
        events += parser.feed(chunk)
    return summary(events)


def test_transcript_environment_and_replies():
    """The real session parses into its environment (keys as sent, in order) and 12 replies."""
    events = parse_chunks([asterisk_bytes()])
    kind, env = events[0]
    assert kind == "env"
    assert [k for k, _ in env] == ENV_KEYS
    env = dict(env)
    assert env["agi_request"] == "agi://127.0.0.1:4573/ivr"
    assert env["agi_accountcode"] == ""
    assert env["agi_channel"] == "Local/8000@cb-access-00000001;2"
    assert events[1:] == REPLIES


def test_transcript_split_at_every_position():
    """Cut in two anywhere, the transcript gives the same events."""
    data = asterisk_bytes()
    whole = parse_chunks([data])
    for cut in range(len(data) + 1):
        assert parse_chunks([data[:cut], data[cut:]]) == whole, cut


def test_transcript_byte_by_byte_and_merged_twice():
    """One byte at a time gives the same; the replies twice in one chunk give them twice."""
    data = asterisk_bytes()
    whole = parse_chunks([data])
    assert parse_chunks([data[i : i + 1] for i in range(len(data))]) == whole
    replies = data[data.index(b"\n\n") + 2 :]
    assert parse_chunks([data + replies]) == whole + whole[1:]


@given(st.lists(st.integers(min_value=0, max_value=2200), max_size=20))
def test_transcript_any_chunking(cuts):
    """Any chunking of the real session gives the same events."""
    data = asterisk_bytes()
    points = sorted({0, len(data), *(c for c in cuts if c <= len(data))})
    chunks = [data[a:b] for a, b in zip(points, points[1:], strict=False)]
    assert parse_chunks(chunks) == parse_chunks([data])


ENV = b"agi_network: yes\nagi_request: agi://h/ivr\n\n"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("200 result=1 (timeout) endpos=1234", (200, "1", "timeout", 1234)),
        ("200 result= (timeout)", (200, "", "timeout", None)),
        ("200 result=12 (timeout)", (200, "12", "timeout", None)),
        ("200 result=-1 endpos=0", (200, "-1", None, 0)),
        ("200 result=1 (a (b) c)", (200, "1", "a (b) c", None)),
        ("200 result=1 ()", (200, "1", "", None)),
        ("200 result=0 Trying weird", (200, "0", None, None)),
        ("510 Invalid or unknown command", (510, "", None, None)),
        ("511 Command Not Permitted on a dead channel or intercept routine", (511, "", None, None)),
        ("520 Invalid command syntax.  Proper usage not available.", (520, "", None, None)),
    ],
)
def test_reply_lines(line, expected):
    """Each reply form of docs/asterisk.rst parses into code, result, data and endpos."""
    reply = parse_reply_line(line)
    assert (reply.code, reply.result, reply.data, reply.endpos) == expected
    assert reply.text == line


def test_multiline_520_and_hangup_between_replies():
    """A 520- usage reply is one Reply up to the "520 " line; HANGUP is its own event."""
    parser = AGIParser()
    parser.feed(ENV)
    events = parser.feed(
        b"520-Invalid command syntax.  Proper usage follows:\n"
        b" Usage: SAY NUMBER <number> <escape digits> [gender]\n"
        b"520 End of proper usage.\nHANGUP\n200 result=-1\n"
    )
    assert len(events) == 3
    usage, hangup, last = events
    assert isinstance(usage, Reply) and usage.code == 520
    assert usage.text.splitlines()[1].startswith(" Usage: SAY NUMBER")
    assert usage.text.endswith("520 End of proper usage.")
    assert hangup is HANGUP
    assert isinstance(last, Reply) and last.result == "-1" and not last.ok


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\n",
        b"agi_network yes\n",
        b"agi_network: yes\n\nnonsense\n",
        b"agi_network: yes\n\n20 result=0\n",
        b"x" * 9000,
        b"agi_x: " + b"y" * 9000 + b"\n",
        b"".join(b"agi_x%d: 1\n" % i for i in range(300)),
    ],
)
def test_garbage_raises_protocol_error_for_good(data):
    """Garbage raises AGIProtocolError, and so does every later feed."""
    parser = AGIParser()
    with pytest.raises(AGIProtocolError):
        parser.feed(data)
    with pytest.raises(AGIProtocolError):
        parser.feed(ENV)


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=300), max_size=10), st.booleans())
def test_arbitrary_bytes_raise_only_protocol_error(chunks, after_env):
    """Arbitrary bytes, before or after a good environment, raise nothing but AGIProtocolError."""
    parser = AGIParser()
    if after_env:
        parser.feed(ENV)
    for chunk in chunks:
        try:
            for event in parser.feed(chunk):
                assert isinstance(event, dict | Reply) or event is HANGUP
        except AGIProtocolError:
            return


ARG = st.text(
    st.characters(blacklist_characters="\r\n\x00", blacklist_categories=["Cs"]), max_size=40
)


@given(st.lists(ARG, max_size=5))
def test_quoted_arguments_reach_asterisk_unchanged(args):
    """Asterisk's argument parser (the simulator's model of it) gives back exactly the
    arguments format_command quoted."""
    line = format_command("VERBOSE", *args).decode()
    assert line.endswith("\n") and line.count("\n") == 1
    assert parse_args(line[:-1]) == ["VERBOSE", *args]


@given(ARG, st.sampled_from("\r\n\x00"), ARG)
def test_quote_refuses_line_ends(before, bad, after):
    """A CR, LF or NUL anywhere in an argument raises AGIArgumentError."""
    arg = before + bad + after
    with pytest.raises(AGIArgumentError):
        quote(arg)
    with pytest.raises(AGIArgumentError):
        format_command("SET VARIABLE", Bare("X"), arg)


def test_lone_surrogate_is_refused():
    """A string that is not UTF-8 (a lone surrogate) raises AGIArgumentError, not more."""
    with pytest.raises(AGIArgumentError):
        format_command("VERBOSE", "a\ud800")


@pytest.mark.parametrize("word", ["a b", 'a"b', "a\\b", "", "x\n"])
def test_bare_refuses_words_that_need_quoting(word):
    """A bare word with a blank, quote, backslash or line end is refused."""
    with pytest.raises(AGIArgumentError):
        Bare(word)


@pytest.mark.parametrize("command", ["", "GET DATA\n", "EXEC;", "SAY  NUMBER"])
def test_format_command_refuses_bad_commands(command):
    """The command words are letters and single blanks only."""
    with pytest.raises(AGIArgumentError):
        format_command(command)


def test_transcript_commands_are_what_format_command_writes():
    """The script lines of the real session are format_command's output."""
    ours = [
        format_command("ANSWER"),
        format_command("SET VARIABLE", Bare("CHANNEL(language)"), "en"),
        format_command("STREAM FILE", "callbackd/welcome", "0123456789*#"),
        format_command("GET DATA", "callbackd/enter-pin", 5000, 8),
        format_command("SAY NUMBER", 1234, ""),
        format_command("SAY DIGITS", Bare("15551234"), ""),
        format_command("GET DATA", "callbackd/enter-destination", 6000, 20),
        format_command("WAIT FOR DIGIT", 3000),
        format_command("GET VARIABLE", Bare("CALLERID(num)")),
        format_command("NOSUCHCOMMAND", Bare("foo")),
        format_command("EXEC", Bare("Wait"), Bare("1")),
        format_command("SET VARIABLE", Bare("CB_RESULT"), "ok"),
    ]
    assert b"".join(ours) == script_bytes()
