"""Tests for callbackd.core.address: leg address parsing and validation."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callbackd.core.address import AddressError, LegAddress
from callbackd.numbers import parse_address

STRICT_PHONE = re.compile(r"\+[1-9][0-9]{5,14}")
SAFE_NETWORK = re.compile(r"[A-Za-z0-9._~+-]+@[a-z0-9.-]+(:[0-9]+)?")

ACCEPTED = [
    ("+4930123456", "DE", "phone:+4930123456"),
    ("phone:4930123456", "DE", "phone:+4930123456"),
    ("phone:+4930123456", "DE", "phone:+4930123456"),
    ("PHONE:+4930123456", "DE", "phone:+4930123456"),
    ("030 123456", "DE", "phone:+4930123456"),
    ("030-123-456", "DE", "phone:+4930123456"),
    ("0049 (30) 123.456", "DE", "phone:+4930123456"),
    ("+92 300 1234567", "DE", "phone:+923001234567"),
    ("923001234567", "DE", "phone:+923001234567"),
    ("48774417880", "DE", "phone:+48774417880"),
    ("(202) 555-0123", "US", "phone:+12025550123"),
    ("+15551230000", "DE", "phone:+15551230000"),
    ("  +4930123456  ", "DE", "phone:+4930123456"),
    ("sip:bob@example.com", "DE", "sip:bob@example.com"),
    ("SIP:Bob@Example.COM:5061", "DE", "sip:Bob@example.com:5061"),
    ("sip:+4930123456@pbx.example.org", "DE", "sip:+4930123456@pbx.example.org"),
    ("xmpp:Alice@jabber.org", "DE", "xmpp:alice@jabber.org"),
    ("gtalk:user@gmail.com", "DE", "xmpp:user@gmail.com"),
    ("msn:user@hotmail.com", "DE", "msn:user@hotmail.com"),
    ("yahoo:user@yahoo.com", "DE", "yahoo:user@yahoo.com"),
]

REJECTED = [
    "",
    "abc",
    "+",
    "+12345",
    "+0123456789",
    "+49301234567890123",
    "123",
    "+49 30 12345a",
    "500&PJSIP/itsp/14165551212",
    "+4930123456,G(x)",
    "phone:",
    "sip:bob",
    "sip:@example.com",
    "sip:bob@",
    "sip:bob@evil.com;transport=tcp",
    "sip:b&b@example.com",
    "sip:bob@exa/mple.com",
    "sip:bob@example.com:0",
    "sip:bob@example.com:99999",
    "sip:bo b@example.com",
    "sip:bob@ex@ample.com",
    "xmpp:alice@jabber.org/resource",
    "xmpp:alice@jabber.org:5222",
    "xmpp:a${x}@jabber.org",
    "xmpp:'a'@jabber.org",
    "skype:bob",
    "sip:bøb@example.com",
    "+４９30123456",
]


@pytest.mark.parametrize(("text", "region", "canonical"), ACCEPTED)
def test_accepted_forms_normalise(text, region, canonical):
    """Each accepted spelling normalises to its canonical form."""
    assert str(parse_address(text, region)) == canonical


@pytest.mark.parametrize("text", REJECTED)
def test_rejected_forms_raise_address_error(text):
    """Text that is not a safe leg address raises AddressError."""
    with pytest.raises(AddressError):
        parse_address(text, "DE")


def test_error_message_tells_the_user_what_to_write():
    """The error message shows the input and the accepted forms."""
    with pytest.raises(AddressError) as info:
        parse_address("abc", "DE")
    assert str(info.value) == (
        "'abc' is not a phone number or address: use +<country><number>, "
        "sip:user@host or xmpp:user@domain"
    )


def test_error_message_shows_the_scheme_too():
    """A bad phone: address is quoted whole in the message."""
    with pytest.raises(AddressError, match="^'phone:12ab' is not a phone number"):
        parse_address("phone:12ab", "DE")


def test_unknown_scheme_is_named_in_the_error():
    """An unknown scheme is named in the message."""
    with pytest.raises(AddressError, match="'skype:'"):
        parse_address("skype:bob", "DE")


@pytest.mark.parametrize(
    ("text", "billable"),
    [("+4930123456", True), ("sip:a@b.c", False), ("xmpp:a@b.c", False), ("msn:a@b.c", False)],
)
def test_only_phone_legs_are_billable(text, billable):
    """Phone legs are billed; SIP and IM legs are free."""
    assert parse_address(text, "DE").is_billable is billable


def test_phone_parts():
    """A phone address gives its digits for rating and no user/host."""
    address = parse_address("+4930123456", "DE")
    assert (address.kind, address.value, address.digits, address.user, address.host) == (
        "phone",
        "+4930123456",
        "4930123456",
        "",
        "",
    )


def test_network_parts():
    """A SIP address splits into user and host (with port)."""
    address = parse_address("sip:bob@example.com:5061", "DE")
    assert (address.user, address.host, address.digits) == ("bob", "example.com:5061", "")


def test_constructor_revalidates():
    """LegAddress rebuilt from stored text is checked again."""
    with pytest.raises(AddressError):
        LegAddress("phone", "+49&30123456")


def test_constructor_rejects_unknown_kind():
    """A kind outside KINDS is refused."""
    with pytest.raises(AddressError):
        LegAddress("skype", "bob@example.com")


def test_round_trip_through_str():
    """Parsing the canonical form gives the same address."""
    for text, region, _ in ACCEPTED:
        address = parse_address(text, region)
        assert parse_address(str(address), "US") == address


@given(st.text(max_size=80), st.sampled_from(["DE", "US", "GB", "PK", "XX"]))
def test_arbitrary_text_only_raises_address_error(text, region):
    """On any text the parser returns a strict address or raises AddressError."""
    try:
        address = parse_address(text, region)
    except AddressError:
        return
    if address.kind == "phone":
        assert STRICT_PHONE.fullmatch(address.value)
    else:
        assert SAFE_NETWORK.fullmatch(address.value)


SCHEMES = st.sampled_from(["", "phone:", "sip:", "xmpp:", "gtalk:", "msn:", "yahoo:", "Sip:"])
ADDRESSY = st.text(alphabet="0123456789+ -.()@:abcXYZ_&,/^$;{}'\"\n", max_size=40)


@given(SCHEMES, ADDRESSY)
def test_address_like_text_gives_strict_values(scheme, rest):
    """Text built from address characters never yields a value with metacharacters."""
    try:
        address = parse_address(scheme + rest, "DE")
    except AddressError:
        return
    pattern = STRICT_PHONE if address.kind == "phone" else SAFE_NETWORK
    assert pattern.fullmatch(address.value)


@given(st.integers(min_value=10**7, max_value=10**12))
def test_international_numbers_keep_their_digits(number):
    """A +-prefixed number that is accepted keeps exactly its digits."""
    try:
        address = parse_address(f"+49{number}", "US")
    except AddressError:
        return
    assert address.value == f"+49{number}"
