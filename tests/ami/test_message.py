"""AMI message parsing and encoding, fed with the real Asterisk 22 transcripts."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callbackd.ami.message import (
    MAX_LINE,
    AMIInjectionError,
    Message,
    MessageParser,
    encode_message,
    validate_pair,
)
from tests.ami.fixtures import ami_logs, segments, server_bytes

LOGS = ami_logs()
BANNER = "Asterisk Call Manager/11.0.0"  # the AMI version of Asterisk 22


def reference_messages(data: bytes) -> list[list[tuple[str, str]]]:
    """An independent oracle: cut whole messages at blank lines, then split the headers."""
    _banner, _, rest = data.partition(b"\r\n")
    out = []
    for block in rest.split(b"\r\n\r\n"):
        if not block:
            continue
        pairs = []
        for line in block.decode("utf-8").split("\r\n"):
            key, _, value = line.partition(":")
            pairs.append((key, value[1:] if value.startswith(" ") else value))
        out.append(pairs)
    return out


def line_by_line(data: bytes, banner: bool) -> list[list[tuple[str, str]]]:
    """A second oracle, for any bytes: one line at a time, as docs/asterisk.rst describes."""
    out: list[list[tuple[str, str]]] = []
    pairs: list[tuple[str, str]] = []
    lines = data.split(b"\n")[:-1]  # the last piece has no line end yet
    for number, raw in enumerate(lines):
        line = raw.decode("utf-8", "replace")
        line = line[:-1] if line.endswith("\r") else line
        if banner and number == 0:
            continue
        if not line:
            if pairs:
                out.append(pairs)
            pairs = []
        elif ":" in line:
            key, _, value = line.partition(":")
            pairs.append((key, value[1:] if value.startswith(" ") else value))
        else:
            pairs.append(("", line))
    return out


def parse_all(chunks) -> tuple[MessageParser, list[Message]]:
    parser = MessageParser(banner=True)
    messages: list[Message] = []
    for chunk in chunks:
        messages.extend(parser.feed(chunk))
    return parser, messages


def test_fixtures_are_found():
    """Every AMI transcript named in the fixtures README is present."""
    assert len(LOGS) >= 7, LOGS


@pytest.mark.parametrize("name", LOGS)
def test_fixture_wire_bytes_keep_crlf(name):
    """The reconstructed server bytes use CRLF line ends throughout, as Asterisk writes."""
    data = server_bytes(name)
    assert data.endswith(b"\r\n\r\n")
    assert data.count(b"\n") == data.count(b"\r\n")


@pytest.mark.parametrize("name", LOGS)
def test_fixture_parses_like_the_oracle(name):
    """Fed the transcript's TCP segments, the parser finds the oracle's messages."""
    data = server_bytes(name)
    chunks = [d for direction, d in segments(name) if direction == "<<<"]
    parser, messages = parse_all(chunks)
    assert parser.banner == BANNER
    assert [m.pairs for m in messages] == reference_messages(data)


@pytest.mark.parametrize("name", LOGS)
def test_fixture_messages_are_responses_or_events(name):
    """Every message Asterisk sent starts with Response or Event."""
    _, messages = parse_all([server_bytes(name)])
    kinds = {m.kind for m in messages}
    assert kinds <= {"Response", "Event"}, kinds
    assert messages


def test_busy_fixture_carries_reason_5():
    """The busy transcript's OriginateResponse is a Failure with Reason 5 (README)."""
    _, messages = parse_all([server_bytes("ami-busy.log")])
    [result] = [m for m in messages if m.name == "OriginateResponse"]
    assert result["Response"] == "Failure"
    assert result["Reason"] == "5"


def test_empty_values_are_kept():
    """A header with an empty value (``AccountCode: ``) is kept as an empty string."""
    _, messages = parse_all([server_bytes("ami-busy.log")])
    newchannel = next(m for m in messages if m.name == "Newchannel")
    assert newchannel.get("AccountCode") == ""


def test_repeated_keys_keep_order():
    """Duplicate keys stay as separate pairs in order; lookup gives the first."""
    parser = MessageParser()
    [m] = parser.feed(b"Response: Success\r\nOutput: a\r\nOutput: b\r\n\r\n")
    assert m.get_all("output") == ["a", "b"]
    assert m["OUTPUT"] == "a"


def test_bare_lf_is_tolerated():
    """Lines ended by a bare LF parse like CRLF lines."""
    parser = MessageParser()
    assert parser.feed(b"Event: X\nA: 1\n\n") == parser.feed(b"Event: X\r\nA: 1\r\n\r\n")


def test_banner_is_not_a_message():
    """The banner line alone completes no message and is remembered."""
    parser = MessageParser(banner=True)
    assert parser.feed(b"Asterisk Call Manager/9.0.0\r\n") == []
    assert parser.banner == "Asterisk Call Manager/9.0.0"


def test_response_follows_body_is_tolerated():
    """An Asterisk <= 13 ``Response: Follows`` body is kept as text pairs, not an error."""
    parser = MessageParser()
    data = b"Response: Follows\r\nPrivilege: Command\r\nsome output\r\n--END COMMAND--\r\n\r\n"
    [m] = parser.feed(data)
    assert m.name == "Follows"
    assert ("", "--END COMMAND--") in m.pairs


def test_overlong_line_is_dropped():
    """A partial line longer than max_buffer is thrown away, and parsing resumes after it."""
    parser = MessageParser(max_buffer=100)
    parser.feed(b"X" * 500)
    assert parser.feed(b"\r\nEvent: Y\r\n\r\n") == [Message([("Event", "Y")])]


@settings(max_examples=60, deadline=None)
@given(data=st.data(), name=st.sampled_from(LOGS))
def test_any_chunking_gives_the_same_messages(data, name):
    """Splitting the byte stream anywhere (TCP segments) never changes the messages."""
    stream = server_bytes(name)
    cuts = sorted(
        data.draw(st.lists(st.integers(0, len(stream)), max_size=40, unique=True), label="cuts")
    )
    bounds = [0, *cuts, len(stream)]
    chunks = [stream[a:b] for a, b in zip(bounds, bounds[1:])]
    _, whole = parse_all([stream])
    _, pieces = parse_all(chunks)
    assert pieces == whole


@settings(max_examples=30, deadline=None)
@given(names=st.lists(st.sampled_from(LOGS), min_size=2, max_size=4))
def test_merged_segments_give_the_same_messages(names):
    """Several transcripts' segments merged into one read parse like separate reads."""
    streams = [server_bytes(n).partition(b"\r\n")[2] for n in names]
    _, separate = parse_all([b"Asterisk Call Manager/11.0.0\r\n", *streams])
    _, merged = parse_all([b"Asterisk Call Manager/11.0.0\r\n" + b"".join(streams)])
    assert merged == separate
    assert len(merged) == sum(len(reference_messages(b"x\r\n" + s)) for s in streams)


wire_ish = st.lists(
    st.one_of(
        st.sampled_from(
            [b"\r\n", b"\n", b"\r", b": ", b":", b" ", b"Event: X", b"\xe2\x82", b"\xac"]
        ),
        st.binary(max_size=12),
    ),
    max_size=60,
).map(b"".join)


@settings(max_examples=300, deadline=None)
@given(stream=wire_ish, banner=st.booleans(), data=st.data())
def test_any_bytes_any_chunking_match_line_by_line(stream, banner, data):
    """For arbitrary bytes cut anywhere, the parser agrees with a line-at-a-time parse."""
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10, unique=True)))
    bounds = [0, *cuts, len(stream)]
    parser = MessageParser(banner=banner)
    messages = []
    for a, b in zip(bounds, bounds[1:]):
        messages.extend(parser.feed(stream[a:b]))
    assert [m.pairs for m in messages] == line_by_line(stream, banner)


keys = st.from_regex(r"\A[A-Za-z0-9_-]{1,30}\Z")
values = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\x00"), max_size=200
)


@settings(max_examples=200)
@given(pairs=st.lists(st.tuples(keys, values), min_size=1, max_size=20))
def test_encode_parse_round_trip(pairs):
    """Whatever encode_message writes, the parser reads back as the same pairs."""
    [message] = MessageParser().feed(encode_message(pairs))
    assert message.pairs == pairs


@given(
    key=keys,
    before=values,
    bad=st.sampled_from(["\r", "\n", "\x00", "\r\n", "\n\nAction: Ping\n"]),
    after=values,
)
def test_control_characters_in_values_are_refused(key, before, bad, after):
    """Any CR, LF or NUL in a value is refused, wherever it is."""
    with pytest.raises(AMIInjectionError):
        encode_message([("Action", "Setvar"), (key, before + bad + after)])


@given(key=st.text(min_size=1, max_size=20).filter(lambda k: not k.isascii() or not k.isalnum()))
def test_bad_keys_are_refused(key):
    """A key outside [A-Za-z0-9_-] is refused (``:`` or a space would change its meaning)."""
    if all(c.isascii() and (c.isalnum() or c in "_-") for c in key):
        return  # e.g. "a-b": a legal key
    with pytest.raises(AMIInjectionError):
        encode_message([(key, "x")])


def test_overlong_header_is_refused():
    """A header that would make a line of MAX_LINE bytes or more is refused."""
    with pytest.raises(AMIInjectionError):
        encode_message([("Data", "x" * MAX_LINE)])


def reference_encoding(pairs: list[tuple[str, str]]) -> bytes:
    """An independent oracle: every pair validated, then one line each."""
    for key, value in pairs:
        validate_pair(key, value)
    return "".join(f"{k}: {v}\r\n" for k, v in pairs).encode() + b"\r\n"


any_keys = st.one_of(keys, st.text(max_size=12))
any_values = st.one_of(
    values, st.text(max_size=12), st.text(st.sampled_from("ab\r\n\x00:"), max_size=MAX_LINE + 10)
)


@settings(max_examples=300)
@given(pairs=st.lists(st.tuples(any_keys, any_values), max_size=12))
def test_encoding_matches_pair_by_pair_validation(pairs):
    """encode_message writes, or refuses, exactly what validating each pair would."""
    try:
        expected: bytes | None = reference_encoding(pairs)
    except AMIInjectionError:
        expected = None
    if expected is None:
        with pytest.raises(AMIInjectionError):
            encode_message(pairs)
    else:
        assert encode_message(pairs) == expected


def test_long_message_of_short_lines_is_encoded():
    """A message longer than MAX_LINE whose every line is shorter is written whole."""
    pairs = [("Action", "Setvar")] + [(f"K{i}", "v" * 100) for i in range(20)]
    assert encode_message(pairs) == reference_encoding(pairs)


def test_a_key_refused_once_is_refused_again():
    """A bad key stays refused however often it comes, the key cache notwithstanding."""
    for _ in range(2):
        with pytest.raises(AMIInjectionError):
            encode_message([("Action", "Ping"), ("Bad Key", "x")])


case_pairs = st.lists(
    st.tuples(
        st.sampled_from(["ActionID", "actionid", "ACTIONID", "Event", "Uniqueid", "x"]), values
    ),
    max_size=8,
)


@given(pairs=case_pairs, key=st.sampled_from(["ActionID", "actionid", "Uniqueid", "X", "none"]))
def test_find_agrees_with_get(pairs, key):
    """find (a scan) gives what get (the index) gives: the first value, any case."""
    message = Message(pairs)
    expected = next((v for k, v in pairs if k.lower() == key.lower()), None)
    assert message.find(key) == expected
    assert message.get(key) == expected
    assert message.find(key) == expected  # with the index built


@given(pairs=case_pairs)
def test_headers_hold_the_first_value_of_each_lowered_key(pairs):
    """headers() maps every lower-case key to its first value."""
    expected: dict[str, str] = {}
    for k, v in pairs:
        expected.setdefault(k.lower(), v)
    assert Message(pairs).headers() == expected


def test_append_refreshes_the_index():
    """A header appended after a lookup is found by the next lookup."""
    message = Message([("Action", "Hangup")])
    assert message.get("Cause") is None
    message.append("Cause", "16")
    assert message.headers()["cause"] == "16"
