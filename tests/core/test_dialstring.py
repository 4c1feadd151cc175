"""Tests for callbackd.core.dialstring: provider and gateway templates."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callbackd.core.address import AddressError, LegAddress
from callbackd.core.dialstring import DialStringError, build_channel, check_template
from callbackd.numbers import parse_address

BUILT = [
    ("PJSIP/{number}@proxicom", "+4930123456", "PJSIP/4930123456@proxicom"),
    ("PJSIP/{e164}@proxicom", "+4930123456", "PJSIP/+4930123456@proxicom"),
    ("Local/{number}@sim-pstn/n", "+15551230000", "Local/15551230000@sim-pstn/n"),
    ("PJSIP/sipuri/sip:{user}@{host}", "sip:bob@example.com", "PJSIP/sipuri/sip:bob@example.com"),
    (
        "PJSIP/sipuri/sip:{user}@{host}",
        "sip:bob@example.com:5061",
        "PJSIP/sipuri/sip:bob@example.com:5061",
    ),
    ("Motif/xmpp/{user}@{host}", "gtalk:Alice@gmail.com", "Motif/xmpp/alice@gmail.com"),
]

BAD_TEMPLATES = [
    "PJSIP",  # no "/"
    "PJSIP/proxicom",  # no placeholder
    "PJSIP/{num}@proxicom",  # unknown placeholder
    "PJSIP/{number!r}@x",  # conversion
    "PJSIP/{number:>20}@x",  # format spec
    "PJSIP/{number}@x&PJSIP/evil/1",
    "PJSIP/{number}@x,30,G(evil)",
    "PJSIP/{number}@x;2",
    "PJSIP/{number}@x\r\nAction: Ping",
    "PJSIP/{number}@x ${EVAL(x)}",
    "PJSIP/{{number}}@x",
    "PJSIP/{number",
]


@pytest.mark.parametrize(("template", "text", "expected"), BUILT)
def test_templates_are_filled(template, text, expected):
    """Each placeholder is replaced by the leg's validated value."""
    assert build_channel(template, parse_address(text, "DE")) == expected


@pytest.mark.parametrize("template", BAD_TEMPLATES)
def test_bad_templates_are_refused(template):
    """A template with unknown placeholders or dial-string syntax is refused."""
    with pytest.raises(DialStringError):
        check_template(template)


def test_check_template_returns_placeholders():
    """check_template reports the placeholders a template uses."""
    assert check_template("PJSIP/sipuri/sip:{user}@{host}") == {"user", "host"}


def test_phone_template_for_sip_leg_is_refused():
    """A {number} template cannot dial a SIP leg."""
    with pytest.raises(DialStringError, match="sip leg"):
        build_channel("PJSIP/{number}@proxicom", parse_address("sip:bob@example.com", "DE"))


def test_sip_template_for_phone_leg_is_refused():
    """A {user}@{host} template cannot dial a phone leg."""
    with pytest.raises(DialStringError, match="phone leg"):
        build_channel("Motif/xmpp/{user}@{host}", parse_address("+4930123456", "DE"))


def test_unsafe_value_is_refused_even_if_address_was_forged():
    """A value that bypassed LegAddress validation is still refused."""
    forged = object.__new__(LegAddress)
    object.__setattr__(forged, "kind", "phone")
    object.__setattr__(forged, "value", "+500&PJSIP/itsp/14165551212")
    with pytest.raises(DialStringError):
        build_channel("PJSIP/{number}@proxicom", forged)


def test_port_only_allowed_in_host():
    """A forged number containing ':' is refused."""
    forged = object.__new__(LegAddress)
    object.__setattr__(forged, "kind", "phone")
    object.__setattr__(forged, "value", "+49301:23456")
    with pytest.raises(DialStringError):
        build_channel("PJSIP/{number}@proxicom", forged)


METACHARACTERS = set("&,^()${};|'\"\r\n\t ")
TEMPLATES = {
    "phone": ["PJSIP/{number}@proxicom", "Local/{e164}@sim-pstn/n"],
    "sip": ["PJSIP/sipuri/sip:{user}@{host}"],
    "xmpp": ["Motif/xmpp/{user}@{host}"],
    "msn": ["Local/{user}@{host}/n"],
    "yahoo": ["Local/{user}@{host}/n"],
}


@given(
    st.sampled_from(["", "phone:", "sip:", "xmpp:", "gtalk:", "msn:", "yahoo:"]),
    st.text(alphabet="0123456789+ -.()@:abcXY_&,/^$;{}|'\"\r\n", max_size=40),
)
def test_built_dial_strings_have_no_metacharacters(scheme, rest):
    """A dial string built from any accepted address has no metacharacters."""
    try:
        address = parse_address(scheme + rest, "DE")
    except AddressError:
        return
    for template in TEMPLATES[address.kind]:
        channel = build_channel(template, address)
        assert not METACHARACTERS & set(channel)
        # the value adds no "/" and at most the template's own "@"
        assert channel.count("/") == template.count("/")
        assert channel.count("@") == template.count("@")
