"""Provider statistics: each provider's attempts over the routing window, channels in use.

Routing (:func:`callbackd.core.routing.rank_providers`) ranks the providers on two
facts kept here: the quality of their recent attempts (answer ratio, post-dial delay,
durations over ``routing_window`` seconds, read from the store and kept up to date with
this daemon's own attempts) and how many of their channels the sessions in flight hold.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from callbackd.core import session as machine
from callbackd.core.rating import Deck
from callbackd.core.routing import Attempt, AttemptWindow
from callbackd.store.interface import IStore

__all__ = ["Provider", "ProviderStats"]


@dataclass(frozen=True)
class Provider:
    """A configured VoIP provider: dial template, buy deck, channel limit."""

    name: str
    dial: str
    deck: Deck
    channels: int = 30


class ProviderStats:
    """The providers' attempt windows (cached from the store) and channels in use."""

    def __init__(
        self,
        clock: IReactorTime,
        store: IStore,
        providers: Sequence[str],
        *,
        routing_window: float = 3600.0,
        min_attempts: int = 5,
    ) -> None:
        self.clock = clock
        self.store = store
        self.names = tuple(providers)
        self.routing_window = routing_window
        self.min_attempts = min_attempts
        #: seconds before the attempt windows are read from the store again
        self.refresh = 60.0
        self._windows: dict[str, AttemptWindow] = {}
        self._read_at: float | None = None
        self._waiting: list[defer.Deferred[None]] | None = None
        #: per provider its live dialled legs; per session the providers of those
        self._channels: dict[str, int] = {}
        self._providers_of: dict[str, tuple[str, ...]] = {}

    # -- channels in use ----------------------------------------------------------------

    def in_use(self, provider: str) -> int:
        """The provider's channels in use: live, dialled legs of the sessions in flight."""
        return self._channels.get(provider, 0)

    def track(self, session_id: str, state: machine.SessionState) -> None:
        """Count the channels of the session's (new) state."""
        providers = tuple(leg.provider for leg in state.legs if leg.live and leg.attempt)
        self._count(self._providers_of.get(session_id, ()), providers)
        self._providers_of[session_id] = providers

    def untrack(self, session_id: str) -> None:
        """The session is gone: its channels are free."""
        self._count(self._providers_of.pop(session_id, ()), ())

    def _count(self, before: tuple[str, ...], after: tuple[str, ...]) -> None:
        if before == after:
            return
        channels = self._channels
        for provider in before:
            left = channels[provider] - 1
            if left:
                channels[provider] = left
            else:
                del channels[provider]
        for provider in after:
            channels[provider] = channels.get(provider, 0) + 1

    # -- attempt windows ----------------------------------------------------------------

    def add(self, attempt: Attempt) -> None:
        """One of this daemon's attempts ended: count it without waiting for a re-read."""
        window = self._windows.get(attempt.provider)
        if window is not None:
            window.add(attempt)

    async def stats(self) -> Mapping[str, Any]:
        """Provider quality over the window, from a cache read from the store.

        Reading every attempt of the window for every leg made ranking cost grow with
        the traffic of the last hour (quadratic in a busy hour); the cache is read once
        per :attr:`refresh` seconds (concurrent callers share the read) and keeps up
        with this daemon's own attempts in between (:meth:`add`).
        """
        now = self.clock.seconds()
        if self._read_at is None or now - self._read_at >= self.refresh:
            await self._read()
        return {
            name: window.stats(now, self.min_attempts) for name, window in self._windows.items()
        }

    def _read(self) -> defer.Deferred[None]:
        waiter: defer.Deferred[None] = defer.Deferred()
        if self._waiting is not None:
            self._waiting.append(waiter)
            return waiter
        self._waiting = [waiter]

        def done(result: object) -> None:
            waiting, self._waiting = self._waiting or [], None
            for d in waiting:
                if isinstance(result, Failure):
                    d.errback(result)
                else:
                    d.callback(None)

        defer.ensureDeferred(self._load()).addBoth(done)
        return waiter

    async def _load(self) -> None:
        now = self.clock.seconds()
        windows: dict[str, AttemptWindow] = {}
        for name in self.names:
            window = windows[name] = AttemptWindow(self.routing_window)
            for record in await self.store.provider_attempts(name, now - self.routing_window):
                window.add(
                    Attempt(
                        name, record["at"], record["answered"], record["duration"], record["pdd"]
                    )
                )
        self._windows, self._read_at = windows, now
