"""Parsing what SMS gateways send: Kannel get-url and post-url, form, JSON, the forwarder app."""

from __future__ import annotations

import dataclasses
import json
from urllib.parse import parse_qs, urlencode

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callbackd.sms.inbound import (
    KANNEL_FIELDS,
    MAX_TEXT,
    FieldNames,
    InboundError,
    InboundSms,
    KannelFields,
    dedupe_key,
    parse_form,
    parse_forwarder,
    parse_json,
    parse_kannel,
    parse_kannel_post,
    text_keys,
)

UUID = "5a6b3c1e-0f2d-4e5a-9b8c-7d6e5f4a3b2c"


def kannel(**fields: bytes | str) -> dict[str, list[bytes]]:
    """A query as Twisted's ``request.args`` holds it, names decoded."""
    return {
        name: [value.encode() if isinstance(value, str) else value]
        for name, value in fields.items()
    }


def test_kannel_get_url():
    """The default get-url fields give sender, recipient, text, id and time."""
    query = kannel(
        **{"from": "+4915112345678", "to": "1234", "text": "U.bob P.pw D.+493012345", "id": UUID},
        ts="1700000000",
    )
    assert parse_kannel(query) == InboundSms(
        "kannel", "+4915112345678", "1234", "U.bob P.pw D.+493012345", UUID, 1.7e9
    )


@pytest.mark.parametrize(
    ("coding", "charset", "raw", "text"),
    [
        ("2", "UTF-16BE", "Привет €".encode("utf-16-be"), "Привет €"),
        ("2", "", "日本 B.office".encode("utf-16-be"), "日本 B.office"),
        ("2", "UCS-2", "ñandú".encode("utf-16-be"), "ñandú"),
        ("0", "UTF-8", "ñandú €".encode(), "ñandú €"),
        ("0", "ISO-8859-1", "señor".encode("latin-1"), "señor"),
        ("0", "WINDOWS-1252", "€5".encode("cp1252"), "€5"),
        ("", "", b"I", "I"),
        ("0", "GSM", "Dürst I".encode(), "Dürst I"),
        ("1", "binary", b"I", "I"),
    ],
)
def test_kannel_charsets(coding, charset, raw, text):
    """The text is decoded as Kannel's charset and coding say (UCS-2 as UTF-16BE)."""
    query = kannel(
        **{"from": "491511", "to": "1234", "text": raw, "coding": coding, "charset": charset}
    )
    assert parse_kannel(query).text == text


@pytest.mark.parametrize(
    ("fields", "code", "params"),
    [
        ({"to": "1234", "text": "I"}, "missing_field", {"field": "from"}),
        ({"from": "4915", "text": "I"}, "missing_field", {"field": "to"}),
        ({"from": "4915", "to": "1234"}, "missing_field", {"field": "text"}),
        ({"from": "Vodafone", "to": "1234", "text": "I"}, "bad_number", {"field": "from"}),
        ({"from": "", "to": "1234", "text": "I"}, "bad_number", {"field": "from"}),
        ({"from": "4915", "to": "+", "text": "I"}, "bad_number", {"field": "to"}),
        ({"from": "4915", "to": "1", "text": b"\xff\xfe"}, "bad_encoding", {"field": "text"}),
        (
            {"from": "4915", "to": "1", "text": b"abc", "coding": "2", "charset": "UTF-16BE"},
            "bad_encoding",
            {"field": "text"},
        ),
        (
            {"from": "4915", "to": "1", "text": b"a", "charset": "rot13"},
            "bad_encoding",
            {"field": "text"},
        ),
        (
            {"from": "4915", "to": "1", "text": b"a", "charset": "no-such"},
            "bad_encoding",
            {"field": "text"},
        ),
        (
            {"from": "4915", "to": "1", "text": b"a", "coding": "7"},
            "bad_encoding",
            {"field": "coding"},
        ),
        (
            {"from": "4915", "to": "1", "text": b"+2AA-", "charset": "UTF-7"},
            "bad_encoding",
            {"field": "text"},
        ),
        ({"from": "4915", "to": "1", "text": "a" * (MAX_TEXT + 1)}, "too_long", {"field": "text"}),
        ({"from": "4915", "to": "1", "text": "a" * 10_000}, "too_long", {"field": "text"}),
        ({"from": "4915", "to": "1", "text": "a", "ts": "yesterday"}, "bad_time", {"field": "ts"}),
        ({"from": "4915", "to": "1", "text": "a", "ts": "nan"}, "bad_time", {"field": "ts"}),
        ({"from": "4915", "to": "1", "text": "a", "id": "x" * 201}, "too_long", {"field": "id"}),
    ],
)
def test_kannel_errors(fields, code, params):
    """Malformed get-url requests raise InboundError with a code and the field."""
    with pytest.raises(InboundError) as caught:
        parse_kannel(kannel(**fields))
    assert (caught.value.code, caught.value.params) == (code, params)


def test_text_keys():
    """Twisted's request.args (bytes names) becomes the mapping the parsers take."""
    args = {b"from": [b"4915"], b"to": [b"1"], b"text": [b"I"], b"\xff": [b"x"]}
    assert text_keys(args) == {"from": [b"4915"], "to": [b"1"], "text": [b"I"], "\xff": [b"x"]}
    assert parse_kannel(text_keys(args)).text == "I"


def test_kannel_numbers_normalised():
    """Separators go, a leading + stays."""
    sms = parse_kannel(kannel(**{"from": " +49 (151) 123-45.67 ", "to": "12/34", "text": "I"}))
    assert (sms.sender, sms.recipient) == ("+491511234567", "1234")


def test_kannel_configurable_fields():
    """Field names come from a KannelFields value."""
    fields = KannelFields(sender="sender", recipient="receiver", text="msg", message_id="uuid")
    sms = parse_kannel(
        kannel(sender="4915", receiver="1234", msg="I", uuid=UUID), fields, gateway="k2"
    )
    assert sms == InboundSms("k2", "4915", "1234", "I", UUID, None)


def test_kannel_post_url():
    """post-url: the body is the text in the Content-Type's charset, the rest in headers."""
    headers = {
        "Content-Type": b'text/plain; charset="UTF-16BE"',
        "X-Kannel-To": b"1234",
        "X-Kannel-Coding": b"2",
        "X-Kannel-Time": b"2026-12-02 01:00:00",
    }
    sms = parse_kannel_post(
        kannel(id=UUID, **{"from": "+4915"}), "€ I".encode("utf-16-be"), headers
    )
    assert sms == InboundSms("kannel", "+4915", "1234", "€ I", UUID, None)


def test_kannel_post_url_sender_header():
    """post-url with send-sender: X-Kannel-From is the sender."""
    headers = {
        "content-type": b'text/plain; charset="UTF-8"',
        "x-kannel-from": b"4915",
        "x-kannel-to": b"1",
    }
    assert parse_kannel_post({}, b"I", headers).sender == "4915"


FORM = FieldNames(
    sender="msisdn", recipient="shortcode", text="body", message_id="mid", received_at="time"
)


@pytest.mark.parametrize(
    ("form", "expected"),
    [
        (
            {
                "msisdn": [b"+4915"],
                "shortcode": [b"1234"],
                "body": ["ñ I".encode()],
                "mid": [b"7"],
                "time": [b"5"],
            },
            InboundSms("form", "+4915", "1234", "ñ I", "7", 5.0),
        ),
        (
            {"msisdn": [b"4915"], "shortcode": [b"1234"], "body": [b""]},
            InboundSms("form", "4915", "1234", "", None, None),
        ),
    ],
)
def test_form(form, expected):
    """A form POST with configured field names."""
    assert parse_form(form, FORM) == expected


@pytest.mark.parametrize(
    ("form", "code"),
    [
        ({"shortcode": [b"1"], "body": [b"I"]}, "missing_field"),
        ({"msisdn": [b"1"], "shortcode": [b"1"], "body": [b"\xc3"]}, "bad_encoding"),
        ({"msisdn": [b"1"], "shortcode": [b"1"], "body": [b"x" * 10_000]}, "too_long"),
    ],
)
def test_form_errors(form, code):
    """Malformed form posts raise InboundError."""
    with pytest.raises(InboundError) as caught:
        parse_form(form, FORM)
    assert caught.value.code == code


def test_json():
    """A JSON POST with default names; numbers may be JSON numbers."""
    body = json.dumps(
        {"from": 4915112, "to": "1234", "text": "I", "id": "abc", "timestamp": 12.5}
    ).encode()
    assert parse_json(body) == InboundSms("json", "4915112", "1234", "I", "abc", 12.5)


def test_json_no_recipient_field():
    """A JSON format without a recipient field gives recipient ''."""
    fields = FieldNames(recipient=None, message_id=None, received_at=None)
    assert parse_json(b'{"from": "1", "text": "I"}', fields).recipient == ""


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"", "bad_json"),
        (b"{", "bad_json"),
        (b"[1]", "bad_json"),
        (b'"text"', "bad_json"),
        (b"\xff{}", "bad_encoding"),
        (b"[" * 5000 + b"]" * 5000, "too_long"),
        (b"[" * 4000 + b"]" * 4000, "bad_json"),
        (b'{"from": "1", "to": "2"}', "missing_field"),
        (b'{"from": "1", "to": "2", "text": 5}', "missing_field"),
        (b'{"from": true, "to": "2", "text": "I"}', "missing_field"),
        (b'{"from": "1", "to": "2", "text": "I", "timestamp": -1}', "bad_time"),
        (b'{"from": "1", "to": "2", "text": "I", "timestamp": 1e400}', "bad_time"),
        (json.dumps({"from": "1", "to": "2", "text": "a" * 5000}).encode(), "too_long"),
        (b'{"from": "1", "to": "2", "text": "\\ud800 I"}', "bad_encoding"),
        (b'{"from": "1", "to": "2", "text": "I", "id": "\\udfff"}', "bad_encoding"),
    ],
)
def test_json_errors(body, code):
    """Malformed JSON posts raise InboundError."""
    with pytest.raises(InboundError) as caught:
        parse_json(body)
    assert caught.value.code == code


def test_forwarder():
    """The forwarder app's default payload: stamps in milliseconds, as strings or numbers."""
    body = (
        b'{"from": "+4915", "text": "B.office", "sentStamp": "1700000000000",'
        b' "receivedStamp": 1700000001500, "sim": "sim1"}'
    )
    assert parse_forwarder(body) == InboundSms(
        "forwarder", "+4915", "", "B.office", None, 1700000001.5
    )
    assert parse_forwarder(body, recipient="+49 30 1234").recipient == "+49301234"


def test_forwarder_minimal():
    """The app's curl example (no stamps) parses."""
    assert parse_forwarder(b'{"from":"1234567890","text":"Test"}').text == "Test"


def test_dedupe_by_message_id():
    """With a message id the key ignores text and time."""
    one = InboundSms("kannel", "1", "2", "I", UUID, 10.0)
    retry = InboundSms("kannel", "1", "2", "I", UUID, 9999.0)
    assert (
        dedupe_key(one, 60)
        == dedupe_key(retry, 60)
        != dedupe_key(InboundSms("k2", "1", "2", "I", UUID, 10.0), 60)
    )


@pytest.mark.parametrize(
    ("first", "second", "same"),
    [
        (0.0, 59.9, True),
        (59.9, 60.0, False),  # straddles a bucket boundary
        (120.0, 179.0, True),
        (10.0, 100.0, False),
        (None, None, True),
    ],
)
def test_dedupe_by_text_window(first, second, same):
    """Without an id, copies in the same fixed window share the key."""
    a = InboundSms("json", "1", "2", "I", None, first)
    b = InboundSms("json", "1", "2", "I", None, second)
    assert (dedupe_key(a, 60) == dedupe_key(b, 60)) is same


@pytest.mark.parametrize("window", [0, -1.0, float("nan")])
def test_dedupe_window_must_be_positive(window):
    """A window that is not positive is a ValueError, not a division by zero."""
    with pytest.raises(ValueError, match="positive"):
        dedupe_key(InboundSms("json", "1", "2", "I", None, 1.0), window)


def test_dedupe_text_and_sender_matter():
    """A different text or sender is a different message."""
    base = InboundSms("json", "1", "2", "I", None, 1.0)
    assert dedupe_key(base, 60) != dedupe_key(InboundSms("json", "1", "2", "I ", None, 1.0), 60)
    assert dedupe_key(base, 60) != dedupe_key(InboundSms("json", "11", "2", "I", None, 1.0), 60)


# -- properties --------------------------------------------------------------------------

names = st.sampled_from(["from", "to", "text", "id", "coding", "charset", "ts", "x"])
queries = st.dictionaries(
    st.one_of(names, st.text(max_size=5)), st.lists(st.binary(max_size=40), max_size=3)
)
charset_values = st.sampled_from(
    [b"UTF-8", b"UTF-16BE", b"ISO-8859-1", b"rot13", b"hex", b"idna", b"", b"\x00"]
)


@given(
    queries,
    st.dictionaries(
        st.sampled_from(["coding", "charset", "ts"]), st.lists(charset_values, max_size=2)
    ),
)
def test_kannel_only_inbound_errors(query, extra):
    """parse_kannel raises nothing but InboundError for any mapping of bytes."""
    try:
        parse_kannel({**query, **extra})
    except InboundError:
        pass


@given(
    queries, st.binary(max_size=100), st.dictionaries(st.text(max_size=20), st.binary(max_size=40))
)
def test_kannel_post_only_inbound_errors(query, body, headers):
    """parse_kannel_post raises nothing but InboundError for any input."""
    try:
        parse_kannel_post(query, body, headers)
    except InboundError:
        pass


@given(queries)
def test_form_only_inbound_errors(form):
    """parse_form raises nothing but InboundError for any mapping of bytes."""
    try:
        parse_form(form)
    except InboundError:
        pass


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)
json_bodies = st.one_of(
    st.binary(max_size=200),
    st.dictionaries(
        st.sampled_from(["from", "to", "text", "id", "timestamp", "receivedStamp"]), json_values
    ).map(lambda document: json.dumps(document).encode()),
)


@given(json_bodies)
def test_json_parsers_only_inbound_errors(body):
    """parse_json and parse_forwarder raise nothing but InboundError for any bytes."""
    for parse in (parse_json, parse_forwarder):
        try:
            parse(body)
        except InboundError:
            pass


numbers = st.from_regex(r"\+?[0-9]{1,20}", fullmatch=True)
texts = st.text(max_size=300)
ids = st.none() | st.from_regex(r"[0-9a-f\-]{1,40}", fullmatch=True)
stamps = st.none() | st.integers(min_value=0, max_value=2**40)


@given(numbers, numbers, texts, ids, stamps, st.sampled_from(["UTF-8", "UTF-16BE", ""]))
def test_kannel_round_trip(sender, recipient, text, message_id, stamp, charset):
    """A message sent the way Kannel's get-url sends it parses back equal."""
    try:
        raw = text.encode(charset or "utf-16-be")
    except UnicodeEncodeError:
        return
    coding = "2" if charset != "UTF-8" else "0"
    pairs = [("from", sender), ("to", recipient), ("coding", coding), ("charset", charset)]
    pairs += [("id", message_id)] if message_id else []
    pairs += [("ts", str(stamp))] if stamp is not None else []
    query_string = urlencode(pairs) + "&text=" + "".join(f"%{byte:02X}" for byte in raw)
    parsed = parse_qs(query_string, keep_blank_values=True, encoding="latin-1")
    query = {name: [value.encode("latin-1") for value in values] for name, values in parsed.items()}
    expected = InboundSms(
        "kannel", sender, recipient, text, message_id, None if stamp is None else float(stamp)
    )
    assert parse_kannel(query, KANNEL_FIELDS) == expected


@given(numbers, numbers, texts, ids, stamps)
def test_form_and_json_round_trip(sender, recipient, text, message_id, stamp):
    """A message posted as a form or as JSON parses back equal."""
    expected = InboundSms(
        "json", sender, recipient, text, message_id, None if stamp is None else float(stamp)
    )
    document: dict[str, object] = {"from": sender, "to": recipient, "text": text}
    document |= {"id": message_id} if message_id else {}
    document |= {"timestamp": stamp} if stamp is not None else {}
    assert parse_json(json.dumps(document).encode()) == expected
    form = {name: [str(value).encode("utf-8")] for name, value in document.items()}
    assert parse_form(form) == dataclasses.replace(expected, gateway="form")


@given(numbers, texts, stamps)
def test_forwarder_round_trip(sender, text, stamp):
    """The forwarder app's payload parses back equal (stamps in milliseconds)."""
    document: dict[str, object] = {"from": sender, "text": text, "sim": "sim1"}
    document |= {"receivedStamp": stamp, "sentStamp": stamp} if stamp is not None else {}
    expected = InboundSms(
        "forwarder", sender, "", text, None, None if stamp is None else stamp / 1000
    )
    assert parse_forwarder(json.dumps(document).encode()) == expected
