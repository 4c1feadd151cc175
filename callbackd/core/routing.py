"""Provider routing: quality statistics, ranking, failure classification, ``via``.

Quality over a sliding window (:class:`ProviderStats`):

* ASR = answered attempts / attempts (busy and no-answer count as attempts: that is
  the industry's definition, and a provider that turns good numbers into "busy" should
  look bad);
* ACD = mean talk seconds of the answered attempts;
* PDD = mean post-dial delay (dial to first ringing/progress/answer) of the attempts
  that reported one.

Ranking score (:func:`rank_providers`), best first, compared in this order:

1. ASR in buckets of :data:`ASR_BUCKET` (5 percentage points), higher first — so a
   point or two of noise does not override a clearly longer ACD;
2. ACD in buckets of :data:`ACD_BUCKET` seconds, longer first;
3. PDD, shorter first;
4. buy price per minute for the number, cheaper first;
5. provider name, so the order is deterministic.

A provider with fewer than ``min_attempts`` attempts in the window has no meaningful
quality yet; it is scored with a neutral prior: the mean ASR/ACD/PDD of the measured
providers (or all-equal when none is measured). It therefore ranks above the
below-average providers and is tried on failover from the better ones, so it gets
traffic and earns its own numbers.
"""

from __future__ import annotations

import heapq
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from callbackd.core.causes import UNINFORMATIVE, FailureSide, side_of_cause
from callbackd.core.rating import Deck, Rate

__all__ = [
    "ACD_BUCKET",
    "ASR_BUCKET",
    "Attempt",
    "AttemptWindow",
    "Candidate",
    "FailureSide",
    "ProviderStats",
    "RankedProvider",
    "UnknownProvider",
    "classify_failure",
    "rank_providers",
    "resolve_provider",
    "stats_by_provider",
]

ASR_BUCKET: Final = 0.05
ACD_BUCKET: Final = 15.0


@dataclass(frozen=True, slots=True)
class Attempt:
    """One call attempt through a provider, as the engine records it."""

    provider: str
    #: when the attempt started (seconds, the engine's clock)
    at: float
    answered: bool
    #: talk seconds when answered
    duration: float = 0.0
    #: seconds from dialling to the first ringing/progress/answer, if any came
    pdd: float | None = None


@dataclass(frozen=True, slots=True)
class ProviderStats:
    """A provider's quality over the window; ``measured`` once it has enough attempts."""

    attempts: int = 0
    answered: int = 0
    #: mean talk seconds of answered attempts (None: nothing answered)
    acd: float | None = None
    #: mean post-dial delay (None: none reported)
    pdd: float | None = None
    measured: bool = False

    @property
    def asr(self) -> float | None:
        """Answered / attempts (None without attempts)."""
        return self.answered / self.attempts if self.attempts else None

    @classmethod
    def from_attempts(
        cls, attempts: Iterable[Attempt], now: float, window: float, min_attempts: int
    ) -> ProviderStats:
        """Stats over the attempts with ``now - window < at <= now`` (one provider's)."""
        count = answered = 0
        talk = 0.0
        delays: list[float] = []
        start = now - window
        for attempt in attempts:
            if not start < attempt.at <= now:
                continue
            count += 1
            if attempt.answered:
                answered += 1
                talk += attempt.duration
            if attempt.pdd is not None:
                delays.append(attempt.pdd)
        return cls(
            attempts=count,
            answered=answered,
            acd=talk / answered if answered else None,
            pdd=sum(delays) / len(delays) if delays else None,
            measured=count >= min_attempts and count > 0,
        )


class AttemptWindow:
    """One provider's attempts over a sliding window, kept as running sums.

    :meth:`stats` gives what :meth:`ProviderStats.from_attempts` gives for the same
    attempts (up to float rounding) without going over them again: each attempt is
    added once and expired once, so ranking a leg costs O(1) however busy the window.
    Attempts are expired by their start time ``at``, in any order they are added.
    """

    def __init__(self, window: float) -> None:
        self.window = window
        self._heap: list[tuple[float, int, Attempt]] = []
        self._seq = 0
        self._answered = 0
        self._talk = 0.0
        self._delays = 0
        self._delay_sum = 0.0

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, attempt: Attempt) -> None:
        """Count one attempt (it is expired once ``now - window`` reaches its ``at``)."""
        self._seq += 1
        heapq.heappush(self._heap, (attempt.at, self._seq, attempt))
        self._count(attempt, 1)

    def _count(self, attempt: Attempt, sign: int) -> None:
        if attempt.answered:
            self._answered += sign
            self._talk = self._talk + sign * attempt.duration if self._answered else 0.0
        if attempt.pdd is not None:
            self._delays += sign
            self._delay_sum = self._delay_sum + sign * attempt.pdd if self._delays else 0.0

    def stats(self, now: float, min_attempts: int) -> ProviderStats:
        """The stats over ``now - window < at`` (attempts after ``now`` count too)."""
        start = now - self.window
        heap = self._heap
        while heap and heap[0][0] <= start:
            self._count(heapq.heappop(heap)[2], -1)
        count = len(heap)
        return ProviderStats(
            attempts=count,
            answered=self._answered,
            acd=self._talk / self._answered if self._answered else None,
            pdd=self._delay_sum / self._delays if self._delays else None,
            measured=count >= min_attempts and count > 0,
        )


def stats_by_provider(
    attempts: Iterable[Attempt], now: float, window: float, min_attempts: int
) -> dict[str, ProviderStats]:
    """:meth:`ProviderStats.from_attempts` for every provider in ``attempts``."""
    grouped: dict[str, list[Attempt]] = defaultdict(list)
    for attempt in attempts:
        grouped[attempt.provider].append(attempt)
    return {
        name: ProviderStats.from_attempts(group, now, window, min_attempts)
        for name, group in grouped.items()
    }


@dataclass(frozen=True)
class Candidate:
    """A provider that might carry a leg: its buy deck and channel use right now."""

    name: str
    deck: Deck
    #: concurrent legs the provider takes
    channels: int
    #: legs it carries now
    in_use: int = 0


@dataclass(frozen=True)
class RankedProvider:
    """A candidate that can take the number, with its buy rate and ranking key."""

    candidate: Candidate
    rate: Rate
    #: the sort key (lower sorts first); see the module docstring
    score: tuple[float, float, float, int, str]

    @property
    def name(self) -> str:
        """The provider's name."""
        return self.candidate.name


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def rank_providers(
    candidates: Sequence[Candidate], stats: Mapping[str, ProviderStats], number: str
) -> list[RankedProvider]:
    """The candidates that reach ``number`` (E.164 digits) and have a free channel, best first."""
    measured = [s for s in stats.values() if s.measured]
    prior_asr = _mean([s.asr for s in measured if s.asr is not None]) or 0.0
    prior_acd = _mean([s.acd for s in measured if s.acd is not None]) or 0.0
    prior_pdd = _mean([s.pdd for s in measured if s.pdd is not None]) or 0.0
    ranked = []
    for candidate in candidates:
        if candidate.in_use >= candidate.channels:
            continue
        rate = candidate.deck.lookup(number)
        if rate is None:
            continue
        own = stats.get(candidate.name)
        if own is not None and own.measured:
            asr = own.asr or 0.0
            acd = own.acd or 0.0
            pdd = own.pdd if own.pdd is not None else prior_pdd
        else:
            asr, acd, pdd = prior_asr, prior_acd, prior_pdd
        score = (
            -math.floor(asr / ASR_BUCKET + 1e-9),
            -math.floor(acd / ACD_BUCKET + 1e-9),
            pdd,
            rate.price_per_minute,
            candidate.name,
        )
        ranked.append(RankedProvider(candidate, rate, score))
    ranked.sort(key=lambda r: r.score)
    return ranked


# What a failed attempt says about where the fault is (docs/asterisk.rst, "Hangup
# causes"): "provider": the route failed, try the next provider; "user": the called
# party (busy, no answer, rejected, wrong number), another provider will not help. The
# causes' sides are in :data:`callbackd.core.causes.CAUSES`.
_DIALSTATUS: Final[Mapping[str, FailureSide]] = {
    "CONGESTION": "provider",
    "CHANUNAVAIL": "provider",
    "BUSY": "user",
    "NOANSWER": "user",
    "ANSWER": "none",
    "CANCEL": "none",
}
_REASONS: Final[Mapping[int, FailureSide]] = {
    0: "provider",
    8: "provider",
    3: "user",
    5: "user",
    1: "none",
    4: "none",
}


def classify_failure(
    reason: int | str | None = None,
    dialstatus: str | None = None,
    cause: int | str | None = None,
) -> FailureSide:
    """Where an attempt failed: "provider" (fail over), "user" (stop) or "none".

    ``reason`` is OriginateResponse's ``Reason``, ``dialstatus`` DialEnd's
    ``DialStatus``, ``cause`` the Hangup ``Cause`` of the real outbound channel; pass
    what is known. The most precise wins: a known cause, then the dial status, then the
    reason (Reason 0 comes with cause 21 for a rejected call, for instance). An unknown
    failure cause with nothing else known counts as the provider's.
    """
    cause_number = _as_int(cause)
    cause_side = None if cause_number is None else side_of_cause(cause_number)
    if cause_side is not None:
        return cause_side
    if dialstatus is not None and dialstatus.strip().upper() in _DIALSTATUS:
        return _DIALSTATUS[dialstatus.strip().upper()]
    reason_number = _as_int(reason)
    if reason_number is not None and reason_number in _REASONS:
        return _REASONS[reason_number]
    if cause_number is not None and cause_number not in UNINFORMATIVE:
        return "provider"
    return "none"


def _as_int(value: int | str | None) -> int | None:
    if value is None or isinstance(value, int):
        return value
    text = value.strip()
    return int(text) if text.isascii() and text.isdigit() else None


class UnknownProvider(LookupError):
    """A ``via`` name that is not a configured provider; ``valid`` lists the names."""

    def __init__(self, name: str, valid: Sequence[str]) -> None:
        self.name = name
        self.valid = sorted(valid)
        choices = ", ".join(self.valid) if self.valid else "none are configured"
        super().__init__(f"unknown provider {name!r}: choose one of {choices}")

    def __str__(self) -> str:
        return str(self.args[0])


def resolve_provider(name: str, providers: Iterable[str]) -> str:
    """The configured spelling of provider ``name`` (case-insensitive) or UnknownProvider."""
    names = list(providers)
    wanted = name.strip().casefold()
    for provider in names:
        if provider.casefold() == wanted:
            return provider
    raise UnknownProvider(name, names)
