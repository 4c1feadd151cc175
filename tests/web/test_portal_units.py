"""The portal's pure parts: form fields, CSRF tokens, login throttling, leg statuses,
and its words in the catalogue."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from babel.messages.pofile import read_po
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock

from callbackd.i18n import translator
from callbackd.i18n.catalogue import LOCALE_DIR
from callbackd.store.records import MAX_AMOUNT
from callbackd.web.portal import forms
from callbackd.web.portal.forms import FormError
from callbackd.web.portal.live import (
    LEG_STATUSES,
    address_text,
    leg_status,
    leg_text,
    running_cost,
)
from callbackd.web.portal.security import (
    ADDRESS_FACTOR,
    LoginThrottle,
    csrf_matches,
    csrf_token,
    new_anon_key,
)

PORTAL = Path(forms.__file__).parent

# -- forms -------------------------------------------------------------------------------


@given(st.dictionaries(st.binary(max_size=20), st.lists(st.binary(max_size=50), max_size=3)))
def test_decode_form_takes_any_bytes(args):
    """Any body Twisted parsed is text fields or a FormError, nothing else."""
    try:
        fields = forms.decode_form(args)
    except FormError as e:
        assert e.msgid == "web.error.bad_form"
        return
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in fields.items())


@given(st.text(max_size=400), st.booleans())
def test_text_fields_are_printable_bounded_and_stripped(value, required):
    try:
        got = forms.text({"f": value}, "f", required=required, max_length=50)
    except FormError as e:
        assert e.msgid in ("web.error.required", "web.error.invalid")
        assert e.params == {"field": "f"}
        return
    assert got == value.strip()
    assert len(got) <= 50 and not re.search(r"[\x00-\x1f\x7f]", got)
    assert got or not required


@given(st.text(max_size=30))
def test_amounts_are_exact_minor_units_or_refused(value):
    try:
        minor = forms.amount({"a": value}, "a", 5)
    except FormError as e:
        assert e.msgid in ("web.error.required", "web.error.invalid")
        return
    assert isinstance(minor, int) and 0 < minor <= MAX_AMOUNT


@pytest.mark.parametrize(
    ("text", "minor"), [("2.50", 250000), ("2,5", 250000), ("0.00001", 1), (" 3 ", 300000)]
)
def test_amount_examples(text, minor):
    assert forms.amount({"a": text}, "a", 5) == minor


@pytest.mark.parametrize("text", ["0", "-1", "1.000001", "1e3", "", "1.2.3", "１"])
def test_bad_amounts(text):
    with pytest.raises(FormError):
        forms.amount({"a": text}, "a", 5)
    assert forms.amount({"a": "0"}, "a", 5, positive=False) == 0


@given(st.text(max_size=15))
def test_integers_within_bounds(value):
    try:
        n = forms.integer({"i": value}, "i", minimum=0, maximum=999)
    except FormError:
        return
    assert 0 <= n <= 999


def test_choice():
    assert forms.choice({"c": "vi"}, "c", ["en", "vi"]) == "vi"
    assert forms.choice({}, "c", ["en"], required=False) == ""
    with pytest.raises(FormError):
        forms.choice({"c": "xx"}, "c", ["en"])


# -- CSRF and throttling ------------------------------------------------------------------


def test_csrf_token_belongs_to_its_basis():
    basis = new_anon_key()
    token = csrf_token(basis)
    assert len(token) == 64 and basis not in token
    assert csrf_matches(basis, token)
    assert not csrf_matches(new_anon_key(), token)
    assert not csrf_matches(basis, "")
    assert not csrf_matches("", csrf_token(""))
    assert not csrf_matches(basis, token[:-1] + "x")
    assert not csrf_matches(basis, "é" * 64)


def test_throttle_closes_a_name_then_opens_it_when_the_window_passes():
    clock = Clock()
    throttle = LoginThrottle(clock, attempts=3, window=60)
    for _ in range(3):
        assert throttle.allowed("Alice", "10.0.0.1")
        throttle.failed("Alice", "10.0.0.1")
    assert not throttle.allowed("alice", "10.0.0.2")  # names are counted case-blind
    assert throttle.allowed("bob", "10.0.0.1")
    clock.advance(61)
    assert throttle.allowed("alice", "10.0.0.1")


def test_throttle_closes_an_address_after_many_names():
    clock = Clock()
    throttle = LoginThrottle(clock, attempts=2, window=60)
    for n in range(2 * ADDRESS_FACTOR):
        assert throttle.allowed(f"user{n}", "10.0.0.9")
        throttle.failed(f"user{n}", "10.0.0.9")
    assert not throttle.allowed("someone-else", "10.0.0.9")
    assert throttle.allowed("someone-else", "10.0.0.10")


def test_throttle_forgets_expired_counts_when_sprayed(monkeypatch):
    from callbackd.web.portal import security

    monkeypatch.setattr(security, "MAX_THROTTLED", 10)
    clock = Clock()
    throttle = LoginThrottle(clock, attempts=3, window=60)
    for n in range(20):
        throttle.failed(f"u{n}", f"a{n}")
        clock.advance(10)
    assert len(throttle._failures) < 20  # 40 without forgetting


# -- leg statuses -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("leg", "status"),
    [
        ({"state": "calling"}, "calling"),
        ({"state": "ringing"}, "ringing"),
        ({"state": "up", "answered_at": 5.0}, "connected"),
        ({"state": "ended", "answered_at": 5.0, "cause": "hung up"}, "ended"),
        ({"state": "ended", "cause": "busy"}, "busy"),
        ({"state": "ended", "cause": "no answer"}, "no_answer"),
        ({"state": "ended", "cause": "congestion"}, "failed"),
        ({"state": "ended", "cause": "failed"}, "failed"),
        ({"state": "ended", "cause": "ended by source"}, "ended"),
        ({"state": "ended", "cause": ""}, "ended"),
    ],
)
def test_leg_status(leg, status):
    assert leg_status(leg) == status


def test_running_cost_counts_live_legs_by_the_second():
    legs = [
        {"state": "up", "answered_at": 100.0, "rate": 600, "cost": 0},
        {"state": "ended", "answered_at": 90.0, "rate": 600, "cost": 123},
        {"state": "ringing", "answered_at": 0.0, "rate": 600, "cost": 0},
    ]
    assert running_cost(legs, 130.0) == 300 + 123


def test_addresses_and_leg_names_in_words():
    assert address_text("phone:+4930123") == "+4930123"
    assert address_text("sip:a@b") == "sip:a@b"
    assert leg_text(translator("en"), "additional-2") == "Additional 2"
    assert leg_text(translator("vi"), "source") == "Số nguồn"


# -- catalogue ----------------------------------------------------------------------------

WEB_ID = re.compile(r"""["'](web\.[a-z_.]*[a-z_])["']""")


def test_every_web_text_the_portal_names_is_in_the_catalogue():
    """Every web.* id in the portal's code and templates, every status and every form
    field's label is in the template catalogue (and so, by tests/i18n, in every
    language)."""
    with (LOCALE_DIR / "callbackd.pot").open("rb") as f:
        template = {m.id for m in read_po(f) if m.id}
    sources = [*PORTAL.glob("*.py"), *PORTAL.glob("templates/*.html")]
    named = {m for path in sources for m in WEB_ID.findall(path.read_text(encoding="utf-8"))}
    named |= {f"web.status.{s}" for s in LEG_STATUSES}
    fields = {
        m
        for path in PORTAL.glob("*.py")
        for m in re.findall(
            r"forms\.(?:text|integer|amount|choice)\(\s*fields,\s*\"([a-z_]+)\"",
            path.read_text(encoding="utf-8"),
        )
    }
    assert {"source", "pin", "batch", "credit_limit"} <= fields
    named |= {f"web.label.{f}" for f in fields}
    assert len(named) > 100
    assert named - template == set()
