"""Progress messages and LIST in every language, from the engine's session events."""

from __future__ import annotations

import pytest

from callbackd.core import session as machine
from callbackd.core.session import Reason, SessionEvent
from callbackd.i18n import LANGUAGES, translator
from callbackd.i18n.progress import cause_text, list_text, reason_text, render

DECIMALS = 5
LEG_CAUSES = [
    machine.BUSY,
    machine.NO_ANSWER,
    machine.REJECTED,
    machine.CONGESTION,
    machine.UNAVAILABLE,
    machine.FAILED,
    machine.HUNG_UP,
    machine.KICKED,
    machine.OUT_OF_CREDIT,
    machine.LOST,
    machine.DAILY_LIMIT,
    machine.ENDED_BY_SOURCE,
    machine.NOT_CALLED,
]
REASONS = [
    Reason.HANGUP,
    Reason.SOURCE_HANGUP,
    Reason.DESTINATION_HANGUP,
    Reason.OUT_OF_CREDIT,
    Reason.DAILY_LIMIT,
    Reason.SWITCH_LOST,
] + [
    prefix + suffix
    for prefix in ("Source", "Destination")
    for suffix in ("Busy", "NoAnswer", "Rejected", "Failed", "Lost")
]


def event(kind: str, **fields) -> SessionEvent:
    return SessionEvent(kind=kind, session_id="s1", seq=1, at=0.0, **fields)


ADDRESS = "+15551230000"
#: one event of every kind and variant the machine publishes, with what its text shows
EVENTS = [
    (event("leg_calling", role="source", address=ADDRESS), [ADDRESS]),
    (event("leg_calling", role="source", address=ADDRESS, rate=1400), [ADDRESS, "014"]),
    (event("leg_calling", role="destination", address=ADDRESS, provider="MKS"), ["MKS"]),
    (
        event("leg_calling", role="additional", address=ADDRESS, rate=2604, provider="MKS"),
        [ADDRESS, "02604", "MKS"],
    ),
    (event("leg_ringing", role="destination"), []),
    (event("leg_answered", role="source"), []),
    (event("leg_failed", role="source", cause="congestion", next_provider="MKS"), ["MKS"]),
    (event("leg_failed", role="destination", cause="busy"), []),
    (event("leg_failed", role="additional", address=ADDRESS, cause="no answer"), [ADDRESS]),
    (event("talking", total_rate=2604), ["02604"]),
    (event("party_answered", rate=1400), ["014"]),
    (event("destination_dropped", role="destination"), ["#11"]),
    (event("destination_dropped", role="additional"), ["#11"]),
    (event("leg_ended", role="additional", address=ADDRESS, cause="kicked"), [ADDRESS]),
    (event("session_ended", reason=Reason.HANGUP, billed_seconds=28), ["28"]),
    (event("session_ended", reason=Reason.OUT_OF_CREDIT, billed_seconds=7), ["7"]),
    (event("credit_updated", balance=1500000), ["15", "EUR"]),
]
#: the events that have no text of their own
SILENT = [
    event("session_started"),
    event("leg_answered", role="destination"),
    event("leg_ended", role="source", cause="hung up"),
]


def test_every_event_kind_is_covered():
    """EVENTS has every kind the machine documents, but the silent ones."""
    documented = {
        "session_started",
        "leg_calling",
        "leg_ringing",
        "leg_answered",
        "leg_failed",
        "talking",
        "party_answered",
        "leg_ended",
        "destination_dropped",
        "session_ended",
        "credit_updated",
    }
    assert {e.kind for e, _ in EVENTS} | {e.kind for e in SILENT} == documented


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize(("item", "shown"), EVENTS, ids=lambda v: getattr(v, "kind", ""))
def test_every_event_renders_in_every_language(language, item, shown):
    """Each event is a sentence of the language, its values filled in, no brace left."""
    text = render(item, translator(language), DECIMALS, "EUR")
    assert text and "{" not in text and "}" not in text
    for value in shown:
        assert value in text
    if item.role and item.kind in ("leg_calling", "leg_ringing", "leg_failed", "leg_ended"):
        english_role = item.role
        # the role is in the language's words (the same word in French for two of them)
        assert translator(language).text(f"role.{english_role}") in text or (
            translator(language).text(f"role.{english_role}.title") in text
        )


@pytest.mark.parametrize("language", LANGUAGES)
def test_silent_events_have_no_text(language):
    for item in SILENT:
        assert render(item, translator(language), DECIMALS) == ""


def test_english_is_gtalk2voips_words():
    """The English texts are GTalk2VoIP's, byte for byte."""
    en = translator("en")
    texts = [render(e, en, DECIMALS, "EUR") for e, _ in EVENTS]
    assert texts == [
        "Calling source: +15551230000",
        "Calling source: +15551230000, cost = 0.014",
        "Calling destination: +15551230000 via MKS",
        "Calling additional: +15551230000, cost = 0.02604 via MKS",
        "Destination ringing...",
        "Source answered.",
        "Source congestion, trying MKS...",
        "Destination busy. Call aborted!",
        "Additional +15551230000: no answer.",
        "Remote answered. Now talking. Cost = 0.02604",
        "Party answered. Now talking. Cost = 0.014",
        "Destination disconnected by #11.",
        "Additional parties disconnected by #11.",
        "Additional +15551230000 left the call (kicked).",
        "Call aborted! Thank you!\nCharged time: 28 secs. Reason = EndedByHangup",
        "Thank you!\nCharged time: 7 secs. Reason = OutOfCredit",
        "Balance: 15.00 EUR",
    ]


def test_spanish_and_chinese_read_as_their_language():
    es, zh = translator("es"), translator("zh")
    assert render(EVENTS[1][0], es, DECIMALS) == (
        "Llamando (origen): +15551230000, tarifa = 0,014/min"
    )
    assert render(EVENTS[14][0], es, DECIMALS) == (
        "Llamada finalizada. ¡Gracias!\nTiempo facturado: 28 s. Motivo: colgada a petición suya"
    )
    assert render(EVENTS[9][0], zh, DECIMALS) == "对方已接听，现在可以通话。资费 = 0.02604/分钟"


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_cause_and_reason_has_words(language):
    """Every leg cause and session reason the machine gives is in the catalogue."""
    t = translator(language)
    for cause in LEG_CAUSES:
        assert t.has("cause." + cause.replace(" ", "_")), cause
    for reason in REASONS:
        text = reason_text(t, reason)
        assert text and (language == "en") == (text == reason), reason


def test_unknown_cause_and_reason_show_as_they_are():
    es = translator("es")
    assert cause_text(es, "exploded") == "exploded"
    assert reason_text(es, "SomethingNew") == "SomethingNew"
    assert cause_text(es, "no answer") == "no contesta"


LEGS = [
    {"role": "source", "address": "+15550011111", "provider": "MKS", "state": "up"},
    {"role": "destination", "address": "+15550012222", "provider": "", "state": "up"},
    {"role": "additional", "address": "+15550013333", "provider": "VTL", "state": "ringing"},
]


def test_list_in_english_is_gtalk2voips():
    en = translator("en")
    assert list_text(LEGS, en) == (
        "List of connected legs: 1. Source: +15550011111 Via: MKS, 2. Destination: +15550012222"
    )
    assert list_text(LEGS[2:], en) == "No connected legs."


@pytest.mark.parametrize("language", LANGUAGES)
def test_list_in_every_language(language):
    t = translator(language)
    text = list_text(LEGS, t)
    assert "+15550011111" in text and "MKS" in text and "+15550012222" in text
    assert "+15550013333" not in text and "{" not in text
    assert list_text([], t) == t.text("list.none")
