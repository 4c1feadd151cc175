"""The sender of a durable outbound queue in the store: outbound SMS, webhook POSTs.

:class:`QueueSender` never polls in a tight loop: it wakes when this process queues
something (:meth:`QueueSender.kick`) and on one timer set for the earliest
``not_before`` in the queue. Each wake claims the due items in small batches (a lease
in the store, so two daemons never send the same one at once), delivers them, and
confirms each or puts it back for a retry after ``backoff(attempts)`` seconds; after
``max_attempts`` transient failures, or at the first permanent one, it goes to the dead
letters. On start it claims whatever is due, so a restarted daemon resends what the
last one never confirmed: an item is delivered once unless the daemon dies between
the receiver's acceptance and the confirmation.

A subclass names the store's queue methods (:attr:`QueueSender.methods`) and delivers
one item (:meth:`QueueSender.deliver`), raising :class:`PermanentError` when retrying
cannot help and anything else when it may.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.application import service
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from callbackd.backoff import capped_backoff

__all__ = ["PermanentError", "QueueMethods", "QueueSender"]

log = Logger()


class PermanentError(Exception):
    """Retrying will not help: the item goes to the dead letters at once."""


@dataclass(frozen=True)
class QueueMethods:
    """The names of one queue's store methods (see IStore's SMS and webhook queues)."""

    claim: str  # (now, limit, lease) -> items
    next_due: str  # () -> float | None
    sent: str  # (id) -> None
    retry: str  # (id, not_before, attempts, error) -> bool
    failed: str  # (id, error) -> bool


class QueueSender(service.Service):
    """Delivers a store queue's items, retrying with back-off (see the module docstring).

    ``batch`` items are claimed at a time for ``lease`` seconds (longer than a
    delivery's timeout); after a failure the next try is ``backoff(attempts)`` seconds
    later; ``max_attempts`` failures make a dead letter. When the store is down it tries
    again ``store_retry`` seconds later. Items have ``id`` and ``attempts``.
    """

    #: the store's methods of the queue
    methods: QueueMethods
    #: what an item is, in the log ("sms", "webhook")
    what = "item"

    def __init__(
        self,
        store: Any,
        clock: IReactorTime,
        *,
        batch: int = 20,
        lease: float = 60.0,
        backoff: Callable[[int], float] | None = None,
        max_attempts: int = 20,
        store_retry: float = 5.0,
    ) -> None:
        self.store = store
        self.clock = clock
        self.batch = batch
        self.lease = lease
        self.backoff = backoff or capped_backoff(5.0, 600.0)
        self.max_attempts = max_attempts
        self.store_retry = store_retry
        self._timer: IDelayedCall | None = None
        self._draining: defer.Deferred[None] | None = None
        self._again = False
        #: the store answered once: a failure from then on is an outage (a warning)
        self._reached = False

    async def deliver(self, item: Any) -> None:
        """Deliver one item; PermanentError (never) or another exception (try again)."""
        raise NotImplementedError

    def describe(self, item: Any) -> str:
        """The item in a log line (no secrets)."""
        return f"{self.what} {item.id}"

    def startService(self) -> None:
        """Claim and send whatever is due (what a previous run left unconfirmed)."""
        super().startService()
        self.kick()

    def stopService(self) -> defer.Deferred[None]:  # type: ignore[override]
        """Stop the timer; fire once the batch in flight is sent and recorded."""
        super().stopService()
        self._cancel_timer()
        return defer.Deferred.fromCoroutine(self._await_drain())

    async def _await_drain(self) -> None:
        while self._draining is not None:
            await self._draining

    def _kicked(self, queued: bool) -> bool:
        self.kick()
        return queued

    def kick(self) -> None:
        """Look at the queue now (something was queued); a drain in progress looks again."""
        if not self.running:
            return
        if self._draining is not None:
            self._again = True
            return
        self._cancel_timer()
        self._draining = defer.Deferred.fromCoroutine(self._drain())
        self._draining.addBoth(self._drained)

    def _drained(self, result: object) -> None:
        self._draining = None
        if self._again:
            self._again = False
            self.kick()

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _arm(self, delay: float) -> None:
        self._cancel_timer()
        if self.running:
            self._timer = self.clock.callLater(max(0.0, delay), self.kick)

    def _store(self, name: str) -> Callable[..., defer.Deferred[Any]]:
        method: Callable[..., defer.Deferred[Any]] = getattr(self.store, name)
        return method

    async def _drain(self) -> None:
        methods = self.methods
        try:
            while self.running:
                due = await self._store(methods.claim)(self.clock.seconds(), self.batch, self.lease)
                sends = [defer.ensureDeferred(self._send(item)) for item in due]
                await defer.gatherResults(sends, consumeErrors=True)
                if len(due) < self.batch:
                    break
            next_due = await self._store(methods.next_due)()
        except Exception as e:
            # before the store first answers (it connects while the daemon starts) this is
            # the normal start, not an outage
            emit = log.warn if self._reached else log.info
            emit("outbound {what} queue unavailable: {error}", what=self.what, error=str(e))
            self._arm(self.store_retry)
            return
        self._reached = True
        if next_due is not None and not self._again:
            self._arm(next_due - self.clock.seconds())

    async def _send(self, item: Any) -> None:
        try:
            await self.deliver(item)
        except PermanentError as e:
            await self._give_up(item, str(e))
            return
        except Exception as e:
            await self._retry(item, str(e) or type(e).__name__)
            return
        await self._store(self.methods.sent)(item.id)
        log.debug("{item} delivered", item=self.describe(item))

    async def _retry(self, item: Any, error: str) -> None:
        attempts = item.attempts + 1
        if attempts >= self.max_attempts:
            await self._give_up(item, f"{attempts} attempts, the last: {error}")
            return
        not_before = self.clock.seconds() + self.backoff(attempts)
        log.info(
            "{item} not delivered ({error}); attempt {n} at {at:.0f}",
            item=self.describe(item),
            error=error,
            n=attempts + 1,
            at=not_before,
        )
        await self._store(self.methods.retry)(item.id, not_before, attempts, error)

    async def _give_up(self, item: Any, error: str) -> None:
        log.warn("{item} given up: {error}", item=self.describe(item), error=error)
        await self._store(self.methods.failed)(item.id, error)
