"""The one Q.850 cause table, checked against what the real Asterisk 22 sent."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from callbackd.core import causes
from callbackd.core.routing import classify_failure

TRANSCRIPTS = Path(__file__).resolve().parents[1] / "fixtures" / "asterisk22"
_HANGUP = re.compile(
    r"^Event: Hangup\r?$.*?^Cause: (\d+)\r?\nCause-txt: ([^\r\n]*)", re.MULTILINE | re.DOTALL
)


def real_hangups() -> set[tuple[int, str]]:
    """Every (Cause, Cause-txt) pair of a Hangup event in the real transcripts."""
    found = set()
    for path in TRANSCRIPTS.rglob("*.log"):
        for match in _HANGUP.finditer(path.read_text(encoding="utf-8", errors="replace")):
            found.add((int(match.group(1)), match.group(2)))
    return found


def test_the_transcripts_have_hangups():
    """The real transcripts carry the causes the table is checked against."""
    assert {cause for cause, _ in real_hangups()} >= {0, 16, 17, 19, 34}


@pytest.mark.parametrize(("cause", "text"), sorted(real_hangups()))
def test_texts_are_the_ones_asterisk_sends(cause, text):
    """Every Cause-txt the real Asterisk sent is the table's text for its cause."""
    assert causes.cause_text(cause) == text


def test_a_cause_asterisk_has_no_text_for_reads_unknown():
    """ast_cause2str gives "Unknown" for a cause missing from its table."""
    assert causes.cause_text(99) == "Unknown"
    assert causes.cause_text(47) == "Unknown"


@pytest.mark.parametrize(
    ("cause", "outcome"),
    [
        # the real transcripts: the ;1 half of a busy or congested Local leg says 0
        (0, None),
        # a leg that rang out: 19 on both halves (real-noanswer.log)
        (19, causes.NOANSWER),
        # the ;2 halves (and real PJSIP channels): 17 busy, 34 congestion
        (17, causes.BUSY),
        (34, causes.CONGESTION),
        (21, causes.REJECTED),
        # normal clearing ends answered calls only: it says nothing about a failure
        (16, None),
        (31, None),
        (999, None),
    ],
)
def test_outcome_of_cause(cause, outcome):
    """What a cause says about why a leg did not answer."""
    assert causes.outcome_of_cause(cause) == outcome


@pytest.mark.parametrize(
    "outcome", [causes.BUSY, causes.NOANSWER, causes.REJECTED, causes.CONGESTION]
)
def test_the_cause_of_an_outcome_gives_the_outcome_back(outcome):
    """A failure reported with the outcome's own cause reads as that outcome again."""
    assert causes.outcome_of_cause(causes.cause_for_outcome(outcome)) == outcome


@pytest.mark.parametrize("outcome", [causes.CHANUNAVAIL, causes.FAILED, "nonsense"])
def test_outcomes_without_a_cause(outcome):
    """Outcomes no single cause stands for report none (0)."""
    assert causes.cause_for_outcome(outcome) == causes.UNKNOWN


@pytest.mark.parametrize("cause", sorted(causes.CAUSES))
def test_outcome_and_side_agree(cause):
    """A user-side outcome is a user-side cause, congestion a provider-side one."""
    row = causes.CAUSES[cause]
    assert row.number == cause
    if row.outcome in (causes.BUSY, causes.NOANSWER, causes.REJECTED):
        assert row.side == "user"
    if row.outcome == causes.CONGESTION:
        assert row.side == "provider"
    if row.side is not None:
        assert classify_failure(cause=cause) == row.side
    if cause in causes.UNINFORMATIVE:
        assert row.outcome is None and row.side is None


def test_dial_statuses_name_outcomes():
    """Every DialStatus the table knows maps to one of the outcomes."""
    assert set(causes.DIAL_STATUS_OUTCOMES.values()) <= set(causes.OUTCOMES)
