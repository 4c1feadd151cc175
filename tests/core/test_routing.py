"""Tests for callbackd.core.routing: provider quality, ranking, failover, via."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callbackd.core.rating import Deck, Rate
from callbackd.core.routing import (
    Attempt,
    AttemptWindow,
    Candidate,
    ProviderStats,
    UnknownProvider,
    classify_failure,
    rank_providers,
    resolve_provider,
    stats_by_provider,
)

EVERYWHERE = Deck([Rate("1", 600), Rate("4", 700), Rate("9", 800)])


def attempts(provider, answered, failed, duration=60.0, pdd=2.0, at=100.0):
    """``answered`` answered and ``failed`` unanswered attempts at time ``at``."""
    return [Attempt(provider, at, True, duration, pdd) for _ in range(answered)] + [
        Attempt(provider, at, False, 0.0, pdd) for _ in range(failed)
    ]


def measured(answered, failed, duration=60.0, pdd=2.0):
    """Stats of a provider with enough attempts."""
    return ProviderStats.from_attempts(attempts("x", answered, failed, duration, pdd), 100, 60, 1)


def test_stats_compute_asr_acd_pdd():
    """ASR, ACD and PDD are computed from the attempts in the window."""
    history = [
        Attempt("P", 50, True, 30.0, 1.0),
        Attempt("P", 60, True, 90.0, 3.0),
        Attempt("P", 70, False, 0.0, None),
        Attempt("P", 80, False, 0.0, 5.0),
    ]
    stats = ProviderStats.from_attempts(history, now=100, window=60, min_attempts=4)
    assert (stats.attempts, stats.asr, stats.acd, stats.pdd, stats.measured) == (
        4,
        0.5,
        60.0,
        3.0,
        True,
    )


def test_stats_ignore_attempts_outside_window():
    """Attempts older than the window (or in the future) do not count."""
    history = [Attempt("P", 40, True, 5.0), Attempt("P", 41, True, 10.0), Attempt("P", 101, True)]
    stats = ProviderStats.from_attempts(history, now=100, window=60, min_attempts=1)
    assert stats.attempts == 1 and stats.answered == 1 and stats.acd == 10.0
    # 40 is exactly at the window's start: excluded (half-open window)
    assert ProviderStats.from_attempts([history[0]], 100, 60, 1).attempts == 0


def test_stats_without_attempts():
    """No attempts: no ASR/ACD/PDD and not measured."""
    stats = ProviderStats.from_attempts([], now=100, window=60, min_attempts=0)
    assert (stats.asr, stats.acd, stats.pdd, stats.measured) == (None, None, None, False)


def test_too_few_attempts_are_not_measured():
    """Fewer attempts than min_attempts give an unmeasured provider."""
    stats = ProviderStats.from_attempts(attempts("P", 2, 0), 100, 60, min_attempts=3)
    assert stats.measured is False


def test_stats_by_provider_groups():
    """Attempts are grouped per provider."""
    stats = stats_by_provider(attempts("A", 1, 1) + attempts("B", 3, 0), 100, 60, 1)
    assert {name: s.asr for name, s in stats.items()} == {"A": 0.5, "B": 1.0}


def names(ranked):
    return [r.name for r in ranked]


def test_higher_asr_ranks_first():
    """A clearly better ASR wins."""
    cands = [Candidate("LOW", EVERYWHERE, 10), Candidate("HIGH", EVERYWHERE, 10)]
    stats = {"LOW": measured(3, 7), "HIGH": measured(8, 2)}
    assert names(rank_providers(cands, stats, "4930123456")) == ["HIGH", "LOW"]


def test_acd_breaks_close_asr():
    """With ASR in the same bucket the longer ACD wins."""
    cands = [Candidate("SHORT", EVERYWHERE, 10), Candidate("LONG", EVERYWHERE, 10)]
    stats = {"SHORT": measured(81, 19, 20.0), "LONG": measured(80, 20, 200.0)}
    assert names(rank_providers(cands, stats, "4930123456")) == ["LONG", "SHORT"]


def test_lower_pdd_breaks_ties():
    """Equal ASR and ACD: the shorter post-dial delay wins."""
    cands = [Candidate("SLOW", EVERYWHERE, 10), Candidate("FAST", EVERYWHERE, 10)]
    stats = {"SLOW": measured(5, 5, pdd=6.0), "FAST": measured(5, 5, pdd=1.0)}
    assert names(rank_providers(cands, stats, "4930123456")) == ["FAST", "SLOW"]


def test_unmeasured_provider_gets_neutral_prior():
    """A new provider ranks between a good and a bad measured provider."""
    cands = [
        Candidate("BAD", EVERYWHERE, 10),
        Candidate("NEW", EVERYWHERE, 10),
        Candidate("GOOD", EVERYWHERE, 10),
    ]
    stats = {"BAD": measured(1, 9), "GOOD": measured(9, 1)}
    assert names(rank_providers(cands, stats, "4930123456")) == ["GOOD", "NEW", "BAD"]


def test_unmeasured_order_is_by_price_then_name():
    """Without any stats the order is cheapest buy rate, then name."""
    cheap = Deck([Rate("49", 100)])
    cands = [
        Candidate("ZED", EVERYWHERE, 10),
        Candidate("ALPHA", EVERYWHERE, 10),
        Candidate("CHEAP", cheap, 10),
    ]
    assert names(rank_providers(cands, {}, "4930123456")) == ["CHEAP", "ALPHA", "ZED"]


def test_providers_that_cannot_reach_are_dropped():
    """A provider whose buy deck has no prefix for the number is not offered."""
    cands = [Candidate("UK", Deck([Rate("44", 1)]), 10), Candidate("ALL", EVERYWHERE, 10)]
    ranked = rank_providers(cands, {}, "4930123456")
    assert names(ranked) == ["ALL"] and ranked[0].rate == Rate("4", 700)


def test_providers_at_channel_limit_are_dropped():
    """A provider using all its channels is not offered."""
    cands = [Candidate("FULL", EVERYWHERE, 2, in_use=2), Candidate("FREE", EVERYWHERE, 2, 1)]
    assert names(rank_providers(cands, {}, "4930123456")) == ["FREE"]


@given(
    st.lists(
        st.tuples(st.integers(0, 20), st.integers(0, 20), st.integers(0, 300)),
        min_size=1,
        max_size=6,
    )
)
def test_ranking_is_deterministic_and_complete(rows):
    """Ranking any stats is independent of input order and keeps every candidate."""
    cands = [Candidate(f"P{i}", EVERYWHERE, 10) for i in range(len(rows))]
    stats = {
        f"P{i}": measured(a, f, float(d)) if a + f else ProviderStats()
        for i, (a, f, d) in enumerate(rows)
    }
    forward = names(rank_providers(cands, stats, "4930123456"))
    backward = names(rank_providers(cands[::-1], stats, "4930123456"))
    assert forward == backward and sorted(forward) == sorted(c.name for c in cands)


@pytest.mark.parametrize(
    ("reason", "dialstatus", "cause", "side"),
    [
        (0, None, None, "provider"),  # request failed (Nope/123)
        (8, "CONGESTION", 0, "provider"),  # Congestion() via Local: ;1 cause 0
        (None, "CHANUNAVAIL", None, "provider"),
        (None, None, 27, "provider"),
        (None, None, 34, "provider"),
        (None, None, 38, "provider"),
        (None, None, 41, "provider"),
        (None, None, 42, "provider"),
        (5, "BUSY", 0, "user"),  # Busy() via Local
        (None, None, 17, "user"),
        (3, None, 19, "user"),  # rang out
        (0, "NOANSWER", 21, "user"),  # Hangup(21): Reason 0 but rejected
        (8, None, 21, "user"),
        (None, None, 1, "user"),  # unallocated number
        (4, "ANSWER", 16, "none"),
        (None, None, None, "none"),
        (None, None, 16, "none"),
        (None, None, 31, "provider"),  # unknown failure cause
        ("8", " congestion ", "0", "provider"),  # raw AMI header strings
        ("5", None, None, "user"),
    ],
)
def test_classify_failure(reason, dialstatus, cause, side):
    """Each failure is attributed to the provider (fail over) or the user (stop)."""
    assert classify_failure(reason=reason, dialstatus=dialstatus, cause=cause) == side


def test_resolve_provider_is_case_insensitive():
    """A via name in any case gives the configured spelling."""
    assert resolve_provider("proxicom", ["MKS", "PROXICOM"]) == "PROXICOM"


def test_unknown_provider_lists_valid_names():
    """An unknown via name raises UnknownProvider naming the valid ones."""
    with pytest.raises(UnknownProvider) as info:
        resolve_provider("avangard", ["PROXICOM", "MKS"])
    assert info.value.valid == ["MKS", "PROXICOM"]
    assert str(info.value) == "unknown provider 'avangard': choose one of MKS, PROXICOM"


_attempt = st.builds(
    Attempt,
    provider=st.just("A"),
    at=st.floats(0, 1000, allow_nan=False),
    answered=st.booleans(),
    duration=st.floats(0, 7200, allow_nan=False),
    pdd=st.none() | st.floats(0, 60, allow_nan=False),
)


def _same_stats(got: ProviderStats, want: ProviderStats) -> bool:
    def close(a: float | None, b: float | None) -> bool:
        return a is b is None or (
            a is not None and b is not None and math.isclose(a, b, abs_tol=1e-6)
        )

    return (
        (got.attempts, got.answered, got.measured) == (want.attempts, want.answered, want.measured)
        and close(got.acd, want.acd)
        and close(got.pdd, want.pdd)
    )


@given(
    st.lists(_attempt, max_size=40),
    st.lists(st.floats(0, 3000, allow_nan=False), min_size=1, max_size=5),
)
def test_attempt_window_agrees_with_from_attempts(attempts: list[Attempt], nows: list[float]):
    """Running sums give from_attempts' stats as the window slides forward."""
    window = AttemptWindow(600)
    for attempt in attempts:
        window.add(attempt)
    horizon = max((a.at for a in attempts), default=0.0)
    for now in sorted(horizon + n for n in nows):
        want = ProviderStats.from_attempts(attempts, now, 600, 3)
        assert _same_stats(window.stats(now, 3), want)


def test_attempt_window_expires_old_attempts():
    """An attempt that started a whole window ago no longer counts."""
    window = AttemptWindow(60)
    window.add(Attempt("A", 10.0, True, 30.0, 2.0))
    window.add(Attempt("A", 50.0, False))
    stats = window.stats(75.0, 1)
    assert (stats.attempts, stats.answered, stats.acd) == (1, 0, None)
    assert len(window) == 1
