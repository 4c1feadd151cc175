"""Property tests of every parser of the API's outside input: bodies, query parameters,
cursors, webhook signatures. Whatever arrives, the answer is a model or a 4xx ApiError."""

from __future__ import annotations

import io
import json

from hypothesis import given
from hypothesis import strategies as st
from twisted.web.test.requesthelper import DummyRequest

from callbackd.core.model import CDR
from callbackd.web.api.app import ApiApp, ApiError, ApiSettings, _CdrQuery, _cursor, _parse_cursor
from callbackd.web.api.models import AddLeg, CreateSession, SetWebhook
from callbackd.web.webhooks import parse_signature, sign, verify_signature

APP = ApiApp(None, None, None, ApiSettings(max_body=4096))
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
ADDRESS = st.text(min_size=1, max_size=128)


def request(body: bytes, content_type: bytes | None = b"application/json") -> DummyRequest:
    req = DummyRequest([b""])
    req.content = io.BytesIO(body)
    if content_type is not None:
        req.requestHeaders.setRawHeaders(b"content-type", [content_type])
    return req


def parse(model, body: bytes, content_type: bytes | None = b"application/json"):
    try:
        return APP._body(request(body, content_type), model)
    except ApiError as e:
        assert 400 <= e.status < 500
        assert json.loads(e.body())["error"]["code"]
        return e


@given(st.binary(max_size=5000), st.sampled_from([CreateSession, AddLeg, SetWebhook]))
def test_any_bytes_are_a_model_or_a_4xx(data, model):
    parse(model, data)


@given(JSON, st.sampled_from([CreateSession, AddLeg, SetWebhook]))
def test_any_json_is_a_model_or_422(value, model):
    out = parse(model, json.dumps(value).encode())
    if isinstance(out, ApiError):
        assert out.status in (413, 422)
    else:
        assert isinstance(value, dict) and set(value) <= set(model.model_fields)


@given(
    ADDRESS, ADDRESS, st.lists(st.from_regex(r"[A-Za-z0-9_-]{1,32}", fullmatch=True), max_size=2)
)
def test_a_valid_create_body_reads_back_exactly(source, destination, via):
    body = {"source": source, "destination": destination, "via": via}
    out = parse(CreateSession, json.dumps(body).encode())
    assert isinstance(out, CreateSession)
    assert (out.source, out.destination, out.via) == (source, destination, via)


@given(st.dictionaries(st.text(min_size=1, max_size=10), JSON, min_size=1, max_size=3))
def test_unknown_fields_are_refused(extra):
    body = {"source": "+4930123456", "destination": "+4989123456", **extra}
    out = parse(CreateSession, json.dumps(body).encode())
    unknown = set(extra) - {"source", "destination", "via"}
    if unknown:
        assert isinstance(out, ApiError) and out.status == 422


def test_limits_and_media_types():
    assert parse(CreateSession, b" " * 4097).status == 413
    assert parse(CreateSession, b"{}", b"text/plain").status == 415
    ok = b'{"source": "1", "destination": "2"}'
    assert isinstance(parse(CreateSession, ok, None), CreateSession)
    assert isinstance(parse(CreateSession, ok, b"application/json; charset=utf-8"), CreateSession)
    assert parse(CreateSession, b'{"source": 1, "destination": "2"}').status == 422  # strict


@given(
    st.dictionaries(
        st.sampled_from(["since", "until", "limit", "cursor", "format", "x"]), st.text(max_size=30)
    )
)
def test_cdr_query_parameters(args):
    req = DummyRequest([b""])
    req.args = {k.encode(): [v.encode("utf-8", "surrogatepass")] for k, v in args.items()}
    try:
        query = _CdrQuery.parse(req)
    except ApiError as e:
        assert e.status == 422
        return
    assert 1 <= query.limit <= 1000 and query.since >= 0


@given(st.text(max_size=200))
def test_cursor_parser(text):
    try:
        ended_at, cdr_id = _parse_cursor(text)
    except ValueError:
        return
    assert isinstance(ended_at, float) and isinstance(cdr_id, str)


@given(st.floats(min_value=0, max_value=1e10), st.text(min_size=1, max_size=40))
def test_cursor_round_trip(ended_at, cdr_id):
    cdr = CDR(cdr_id, "alice", "s1", "leg", "source", ended_at=ended_at)
    assert _parse_cursor(_cursor(cdr)) == (ended_at, cdr_id)


@given(st.text(max_size=200))
def test_signature_header_parser(header):
    parsed = parse_signature(header)
    if parsed is not None:
        timestamp, signatures = parsed
        assert timestamp >= 0 and signatures


@given(st.binary(max_size=200), st.integers(min_value=0, max_value=2**40), st.text(min_size=1))
def test_signatures_verify_and_tampering_fails(body, timestamp, secret):
    header = sign(secret, timestamp, body)
    assert verify_signature(secret, header, body, now=timestamp)
    assert not verify_signature(secret, header, body + b"x", now=timestamp)
    assert not verify_signature(secret + "x", header, body, now=timestamp)
    assert not verify_signature(secret, header, body, now=timestamp + 301)  # a replay, later
