"""The progress logger: every session event in the log, in GTalk2VoIP's words."""

from __future__ import annotations

import typing

from twisted.logger import Logger, formatEvent

from callbackd.core import session as machine
from callbackd.engine import SessionManager
from callbackd.operator import progress_logger


def _logged(*events: machine.SessionEvent) -> list[dict]:
    seen: list[dict] = []
    log_event = progress_logger(Logger(observer=seen.append), decimals=5, currency="EUR")
    for event in events:
        log_event(event)
    return seen


def _event(kind: str, **fields) -> machine.SessionEvent:
    return machine.SessionEvent(kind, "cb1abc", 1, 100.0, **fields)


def test_leg_ended_line_gives_billed_seconds_and_cost():
    """A billed leg's end is logged with its seconds and its cost."""
    event = _event(
        "leg_ended", role="destination", address="phone:+4930123", billed_seconds=61, cost=2408
    )
    (logged,) = _logged(event)
    text = formatEvent(logged)
    assert "61 s, 0.02408" in text
    assert "phone:+4930123" in text


def test_seed_words_are_logged_with_the_event():
    """An event with GTalk2VoIP words logs those words and the event's fields."""
    event = _event("leg_answered", role="source", address="phone:+4930123")
    (logged,) = _logged(event)
    assert formatEvent(logged) == "session cb1abc: Source answered."
    assert logged["event"] == event.to_dict()


def test_session_started_is_left_to_the_engine_line():
    """session_started adds no line of its own (the engine names account and legs)."""
    assert _logged(_event("session_started")) == []


def test_event_dict_is_json_able_and_complete():
    """SessionEvent.to_dict holds every field, equal to the dataclass's own values."""
    import dataclasses

    event = _event("leg_ended", role="source", billed_seconds=3, cost=7)
    assert event.to_dict() == dataclasses.asdict(event)


def test_every_effect_has_a_handler():
    """The engine knows how to carry out every kind of effect the machine emits."""
    manager = SessionManager(None, None, None, sell_deck=None, providers=())
    assert manager.effect_kinds == set(typing.get_args(machine.Effect))


def test_unchanged_balance_is_logged_once_per_session():
    """credit_updated logs a session's balance when first told and when it changed only."""
    events = [
        _event("credit_updated", balance=1500000),
        _event("credit_updated", balance=1500000),
        _event("credit_updated", balance=1497396),
        _event("credit_updated", balance=1497396),
        machine.SessionEvent("credit_updated", "cb2def", 1, 100.0, balance=1497396),
        _event("session_ended", reason="EndedByHangup"),
        _event("credit_updated", balance=1497396),
    ]
    texts = [(logged["session_id"], formatEvent(logged)) for logged in _logged(*events)]
    assert [sid for sid, _ in texts] == ["cb1abc", "cb1abc", "cb2def", "cb1abc", "cb1abc"]
    assert texts[0][1] == "session cb1abc: Balance: 15.00 EUR"
    assert texts[1][1] == "session cb1abc: Balance: 14.97396 EUR"
    assert texts[2][1] == "session cb2def: Balance: 14.97396 EUR"


def test_braces_in_a_logged_text_are_kept():
    """The line is the log format (braces doubled): an address with braces is logged as is."""
    event = _event("leg_ended", role="destination", address="sip:{x}@example.test")
    (logged,) = _logged(event)
    assert formatEvent(logged) == "session cb1abc: (leg ended: destination, sip:{x}@example.test)"
    assert logged["session_id"] == "cb1abc"
    assert logged["text"] == "(leg ended: destination, sip:{x}@example.test)"


def test_a_destinations_answer_is_left_to_the_talking_line():
    """The destination's and an added party's answers are told by the next event's line."""
    texts = [
        formatEvent(logged)
        for logged in _logged(
            _event("leg_answered", role="destination", address="phone:+4930123"),
            _event("talking", total_rate=2604),
            _event("leg_answered", role="additional", address="phone:+4930124"),
            _event("party_answered", rate=1400),
        )
    ]
    assert texts == [
        "session cb1abc: Remote answered. Now talking. Cost = 0.02604",
        "session cb1abc: Party answered. Now talking. Cost = 0.014",
    ]


def test_one_turns_lines_are_one_log_event_at_its_end():
    """With a clock the turn's lines go out together at its end, in order, one per event."""
    from twisted.internet import task

    clock = task.Clock()
    seen: list[dict] = []
    log_event = progress_logger(Logger(observer=seen.append), 5, "EUR", clock=clock)
    log_event(_event("leg_calling", role="source", address="phone:+4930123", rate=1400))
    log_event(machine.SessionEvent("leg_failed", "cb2def", 3, 100.0, role="source", cause="busy"))
    log_event(machine.SessionEvent("session_ended", "cb2def", 4, 100.0, reason="SourceBusy"))
    assert seen == []
    clock.advance(0)
    (batch,) = seen
    assert formatEvent(batch) == (
        "session cb1abc: Calling source: phone:+4930123, cost = 0.014\n"
        "session cb2def: Source busy. Call aborted!\n"
        "session cb2def: Thank you!\n"
        "Charged time: 0 secs. Reason = SourceBusy"
    )
    assert batch["session_ids"] == ["cb1abc", "cb2def", "cb2def"]
    assert [e["kind"] for e in batch["events"]] == ["leg_calling", "leg_failed", "session_ended"]
    # the next turn: a line of its own, with the single line's fields
    log_event(_event("leg_answered", role="source", address="phone:+4930123"))
    clock.advance(0)
    assert formatEvent(seen[1]) == "session cb1abc: Source answered."
    assert seen[1]["session_id"] == "cb1abc"
    assert len(clock.getDelayedCalls()) == 0
