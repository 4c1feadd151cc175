"""Authenticating gateway requests: shared token, HMAC-SHA256 body signature, source address."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callbackd.sms.auth import (
    AddressAllowList,
    AuthError,
    check_signature,
    check_token,
    parse_signature,
    sign,
)

SECRET = b"gateway-secret"
BODY = b'{"from": "+4915", "text": "I"}'
DIGEST = hmac.new(SECRET, BODY, hashlib.sha256).digest()


@pytest.mark.parametrize("given_token", ["s3cret", b"s3cret"])
def test_right_token(given_token):
    """The configured token, as text or bytes, passes."""
    check_token(given_token, "s3cret")


@pytest.mark.parametrize(
    "given_token", [None, "", "s3cre", "s3cret ", "S3CRET", b"\xff", "s3cr\udcffet"]
)
def test_wrong_token(given_token):
    """Anything else is bad_token."""
    with pytest.raises(AuthError) as caught:
        check_token(given_token, "s3cret")
    assert caught.value.code == "bad_token"


def test_empty_expected_token_refuses():
    """An empty configured token accepts nothing, not even an empty one."""
    with pytest.raises(AuthError):
        check_token("", "")


def test_sign_is_hmac_sha256():
    """sign is HMAC-SHA256 of the body."""
    assert sign(BODY, SECRET) == DIGEST


@pytest.mark.parametrize(
    "header",
    [
        DIGEST.hex(),
        DIGEST.hex().upper(),
        "sha256=" + DIGEST.hex(),
        "SHA256=" + DIGEST.hex(),
        base64.b64encode(DIGEST).decode(),
        base64.b64encode(DIGEST).decode().rstrip("="),
        base64.urlsafe_b64encode(DIGEST).decode(),
        "sha256=" + base64.b64encode(DIGEST).decode(),
        (" sha256=" + DIGEST.hex() + " ").encode(),
    ],
)
def test_right_signature(header):
    """The body's signature in hex or base64, with or without sha256=, passes."""
    assert parse_signature(header) == DIGEST
    check_signature(BODY, header, SECRET)


@pytest.mark.parametrize(
    ("body", "header", "code"),
    [
        (BODY + b" ", DIGEST.hex(), "bad_signature"),
        (BODY.replace(b"I", b"B.office"), "sha256=" + DIGEST.hex(), "bad_signature"),
        (BODY, hmac.new(b"other", BODY, hashlib.sha256).hexdigest(), "bad_signature"),
        (BODY, DIGEST.hex()[:-2], "bad_signature"),
        (BODY, "sha256=zz" + DIGEST.hex()[2:], "bad_signature"),
        (BODY, hashlib.sha256(BODY).hexdigest(), "bad_signature"),
        (BODY, None, "missing_signature"),
        (BODY, "sha256=", "missing_signature"),
        (BODY, "", "missing_signature"),
    ],
)
def test_wrong_signature(body, header, code):
    """A tampered body, another key, a truncated or missing signature are refused."""
    with pytest.raises(AuthError) as caught:
        check_signature(body, header, SECRET)
    assert caught.value.code == code


@given(
    st.binary(max_size=200), st.one_of(st.none(), st.text(max_size=100), st.binary(max_size=100))
)
def test_signature_only_auth_errors(body, header):
    """check_signature raises nothing but AuthError for any header."""
    try:
        check_signature(body, header, SECRET)
    except AuthError:
        pass


ALLOW = AddressAllowList.parse(
    ["127.0.0.1", "10.0.0.0/8", "192.168.1.7/24", "::1", "2001:db8::/32"]
)


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", False),
        ("10.255.3.4", True),
        ("11.0.0.1", False),
        ("192.168.1.200", True),
        ("192.168.2.1", False),
        ("::1", True),
        ("::2", False),
        ("2001:db8:1::5", True),
        ("2001:db9::1", False),
        ("::ffff:10.1.2.3", True),
        ("::ffff:11.1.2.3", False),
        ("fe80::1%eth0", False),
        ("not-an-address", False),
        ("", False),
    ],
)
def test_allow_list(address, allowed):
    """Addresses in a listed network (v4, v6, v4-mapped) are allowed, others refused."""
    assert ALLOW.allows(address) is allowed
    if allowed:
        ALLOW.check(address)
    else:
        with pytest.raises(AuthError) as caught:
            ALLOW.check(address)
        assert caught.value.code == "forbidden_address"


def test_allow_list_bad_entry():
    """A configured entry that is not a network is a ValueError naming it."""
    with pytest.raises(ValueError, match="10.0.0.0/33"):
        AddressAllowList.parse(["10.0.0.0/33"])


@given(st.text(max_size=60))
def test_allow_list_any_text(address):
    """allows never raises, whatever the address text."""
    assert ALLOW.allows(address) in (True, False)
