"""Callee rules: the text syntax, precedence, defaults and dial-string parsing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callbackd.simulator.rules import (
    Behaviour,
    RuleError,
    RuleSet,
    parse_behaviour,
    parse_dial_target,
    parse_rule,
    parse_rules,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("busy", Behaviour("busy")),
        ("answer:1", Behaviour("answer", delay=1.0)),
        ("answer:1,hangup:5", Behaviour("answer", delay=1.0, hangup_after=5.0)),
        ("reject:21", Behaviour("reject", cause=21)),
        ("congestion,after:2", Behaviour("congestion", delay=2.0)),
        ("ring", Behaviour("ring")),
        ("noanswer", Behaviour("ring")),
        ("unavailable", Behaviour("unavailable")),
        ("answer:1,dtmf:#11", Behaviour("answer", delay=1.0, dtmf="#11")),
        ("goto:sim-pstn", Behaviour("goto", goto=("sim-pstn", ""))),
        ("goto:sim-pstn/1555001", Behaviour("goto", goto=("sim-pstn", "1555001"))),
    ],
)
def test_behaviour_text(text, expected):
    """Behaviour texts parse to the documented behaviours."""
    assert parse_behaviour(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "", "fly", "busy,answer", "answer:x", "hangup:5", "busy,hangup:1", "reject:999", "ring:3",
        "answer,dtmf:", "answer,dtmf:#1x", "busy,dtmf:#11", "goto", "goto:", "goto:a b",
        "goto:sim-pstn/x!", "goto:sim-pstn,busy",
    ],
)  # fmt: skip
def test_bad_behaviour_is_a_rule_error(text):
    """Malformed behaviour text raises RuleError."""
    with pytest.raises(RuleError):
        parse_behaviour(text)


def test_rule_error_names_the_rule():
    """A parse error message quotes the whole rule."""
    with pytest.raises(RuleError, match="1555=fly"):
        parse_rule("1555=fly")


def test_rules_from_one_string():
    """Whitespace or semicolons separate rules in one string."""
    rules = parse_rules("1555002=busy; @pakline=congestion  _600=reject")
    assert [(r.prefix, r.trunk, r.exact) for r in rules] == [
        ("1555002", None, False),
        ("", "pakline", False),
        ("600", None, True),
    ]


def test_longest_prefix_wins():
    """The longest matching prefix decides."""
    rules = RuleSet(parse_rules("1555=busy 15550=congestion"))
    assert rules.behaviour_for("155501").kind == "congestion"


def test_trunk_rule_beats_number_rule():
    """A trunk rule overrides a number rule for calls on that trunk only."""
    rules = RuleSet(parse_rules("1555=answer @pakline=congestion"))
    assert rules.behaviour_for("15551", "pakline").kind == "congestion"
    assert rules.behaviour_for("15551", "other").kind == "answer"


def test_exact_rule_does_not_match_longer_numbers():
    """An _exact rule matches only that number."""
    rules = RuleSet(parse_rules("_600=busy"), builtin=())
    assert rules.behaviour_for("6001").kind == "answer"


def test_defaults_mirror_the_fixtures():
    """Default rules: sim-pstn numbers and sim-callee extensions behave as recorded."""
    rules = RuleSet()
    assert rules.behaviour_for("15550021234").kind == "busy"
    assert rules.behaviour_for("15550041234") == Behaviour("answer", hangup_after=5.0)
    assert rules.behaviour_for("102") == Behaviour("answer", delay=2.0)
    assert rules.behaviour_for("600") == Behaviour("reject", cause=21)
    assert rules.behaviour_for("+4930123456") == Behaviour("answer", delay=2.0)


def test_goto_rules_follow_the_second_route():
    """sim-pstn2 reaches sim-pstn's numbers, and 1555006XXXX as 1555001XXXX (the recording)."""
    rules = RuleSet()
    assert rules.behaviour_for("15550061111", "sim-pstn2") == Behaviour(
        "answer", delay=1.0, goto=("sim-pstn", "15550011111")
    )
    assert rules.behaviour_for("15550051111", "sim-pstn2") == Behaviour(
        "congestion", goto=("sim-pstn", "15550051111")
    )
    assert rules.behaviour_for("15550061111", "sim-bad").kind == "congestion"


def test_goto_loop_ends_in_the_default():
    """Rules that go to each other forever end in the default behaviour."""
    rules = RuleSet(parse_rules("@x=goto:y @y=goto:x"), builtin=())
    assert rules.behaviour_for("1", "x") == rules.default


def test_user_rules_override_defaults():
    """A configured rule wins over the built-in default for the same number."""
    assert RuleSet(parse_rules("1555002=answer")).behaviour_for("15550021234").kind == "answer"


@pytest.mark.parametrize(
    ("channel", "number", "trunk"),
    [
        ("Local/101@sim-callee/n", "101", "sim-callee"),
        ("PJSIP/+4930123@pakline", "+4930123", "pakline"),
        ("PJSIP/pakline/sip:+4930123@gw.example", "+4930123", "pakline"),
        ("Motif/google/12025550123@voice.google.com", "12025550123", "google"),
        ("DAHDI/g1/5551234", "5551234", "g1"),
        ("Nope/123", "123", None),
    ],
)
def test_dial_target_number_and_trunk(channel, number, trunk):
    """The dialled number and trunk are taken from every channel shape."""
    target = parse_dial_target(channel)
    assert target is not None
    assert (target.number, target.trunk) == (number, trunk)


def test_dial_target_needs_a_slash():
    """A channel without '/' is not a dial target."""
    assert parse_dial_target("nonsense") is None


@given(st.text(max_size=60))
def test_rule_parser_only_raises_rule_error(text):
    """Any text either parses or raises RuleError."""
    try:
        rule = parse_rule(text)
    except RuleError:
        return
    assert rule.behaviour.kind


@given(st.text(max_size=80))
def test_dial_target_parser_never_crashes(text):
    """Any channel string parses to a target or None."""
    target = parse_dial_target(text)
    assert target is None or target.tech
