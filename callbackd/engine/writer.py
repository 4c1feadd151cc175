"""The session writer: what the engine writes to the store for its sessions.

Writes are issued at once: the store applies them in the order they were issued
(:class:`~callbackd.store.interface.IStore`), so those of one session land in the order
of its steps without waiting for each other's replies. A session's state is saved once
per reactor turn, with its last state (the steps one input causes: a switch event, its
credit recompute, the AMI events read together). A charge is a leg's CDR and its debit
in one store step, once per CDR id, which the store never refuses (settling a call
that happened); it needs no state saved before it, so settling again after a crash charges
nothing. A charge is never more than the account can pay (balance and credit limit, as
its ledger knows them): a leg the daemon did not cut in time is billed per second up to
the account's floor (:func:`callbackd.core.credit.affordable_charge`), and the session's
CDR counts what was charged. The end of a session deletes its state: a state still
unsaved then is dropped, not written. The money writes (a charge, a CDR, the end of a
session) that fail with StoreUnavailable — Redis down, a Sentinel failover in progress,
a replica not acknowledging in time — are issued again with back-off until the store
applies them: each is applied once per CDR id, so a retry never bills twice.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from callbackd.backoff import capped_backoff
from callbackd.core import session as machine
from callbackd.core.credit import affordable_charge
from callbackd.core.model import CDR
from callbackd.engine.accounts import AccountBook
from callbackd.store.interface import IStore, StoreUnavailable

__all__ = ["SessionWriter"]

log = Logger(namespace="callbackd.engine")


class SessionWriter:
    """Per-turn saves, charges, CDRs, provider attempts and the end of sessions."""

    def __init__(self, clock: IReactorTime, store: IStore, book: AccountBook) -> None:
        self.clock = clock
        self.store = store
        self.book = book
        #: sessions whose state changed this reactor turn and is not written yet
        self._unsaved: dict[str, machine.SessionState] = {}
        self._saving: IDelayedCall | None = None
        #: per session, what its legs' charges were cut down by (the account's floor)
        self._waived: dict[str, int] = {}
        #: several daemons: what saves a session's state and writes its end, fenced by
        #: the session's epoch (:class:`~callbackd.engine.cluster.Cluster`); None: the store
        self.fenced: Any = None

    def persist(self, sid: str, state: machine.SessionState) -> None:
        """Save the session's state at the end of the reactor turn."""
        self._unsaved[sid] = state
        if self._saving is None:
            self._saving = self.clock.callLater(0, self.save_all)

    def save_all(self) -> None:
        """Write every unsaved session state (end of the reactor turn, or stop)."""
        if self._saving is not None and self._saving.active():
            self._saving.cancel()
        self._saving = None
        save = self.store.save_session if self.fenced is None else self.fenced.save_session
        for sid in list(self._unsaved):
            state = self._unsaved.pop(sid)
            self.issue(sid, "save session", save, sid, state.to_dict())

    def issue(self, sid: str, what: str, call: Callable[..., Any], *args: Any) -> None:
        """One store write of the session, issued at once; a failure is logged."""

        def failed(failure: Failure) -> None:
            if failure.check(StoreUnavailable):
                # a failover's gap: the session's next save (the heartbeat's, at the
                # latest) writes its whole state again; money writes are retried
                log.warn(
                    "session {session_id}: store {what} failed ({why})",
                    session_id=sid,
                    what=what,
                    why=failure.getErrorMessage(),
                )
                return
            log.failure(
                "session {session_id}: store {what} failed", failure, session_id=sid, what=what
            )

        defer.maybeDeferred(call, *args).addErrback(failed)

    def charge(self, sid: str, effect: machine.ChargeLeg) -> None:
        """A leg's CDR, with its debit when it cost something."""
        # the progress log's "leg ended" line gives the billed seconds and the cost
        cdr, cost = effect.cdr, effect.cost
        if cost > 0:
            cdr = self._affordable(sid, cdr)
            cost = cdr.cost
        if cost <= 0:
            # a charge of nothing: the CDR alone, told on the change feed as this engine's
            # own (append_cdr tells no origin: the book took every unanswered leg for
            # someone else's change, forgot the account and re-read it, and re-told its
            # sessions their balance)
            self.issue(
                sid, "append CDR", self._until_stored, self.store.charge, cdr, self.book.origin
            )
            return
        self.book.charge_issued(cdr.username, cost)
        self.issue(sid, "charge", self._charge, cdr, cost)

    def _affordable(self, sid: str, cdr: CDR) -> CDR:
        """The leg's CDR, its charge cut down to what the account can pay now."""
        available = self.book.available(cdr.username)
        if available is None or cdr.cost <= available:
            return cdr
        seconds, cost = affordable_charge(cdr.billed_seconds, cdr.cost, cdr.rate, available)
        log.warn(
            "charge {cdr_id}: {cost} of {wanted} (the account's floor)",
            cdr_id=cdr.cdr_id,
            cost=cost,
            wanted=cdr.cost,
        )
        self._waived[sid] = self._waived.get(sid, 0) + cdr.cost - cost
        extra = {**cdr.extra, "uncapped_cost": str(cdr.cost)}
        return dataclasses.replace(cdr, billed_seconds=seconds, cost=cost, extra=extra)

    def _charge(self, cdr: CDR, cost: int) -> defer.Deferred[Any]:
        d = self._until_stored(self.store.charge, cdr, self.book.origin)

        def done(result: Any) -> Any:
            self.book.charge_done(cdr.username, cost)
            return result

        return d.addBoth(done)

    def record_attempt(self, sid: str, effect: machine.RecordAttempt) -> None:
        """A provider attempt, for the routing statistics."""
        self.issue(
            sid,
            "provider attempt",
            self.store.record_provider_attempt,
            effect.provider,
            effect.at,
            effect.answered,
            effect.pdd,
            effect.duration,
            effect.cause,
        )

    def end(self, sid: str, cdr: CDR) -> None:
        """The session's end: its CDR written and its state deleted, in one step."""
        self._unsaved.pop(sid, None)  # end_session deletes the state: no use writing it
        waived = self._waived.pop(sid, 0)
        if waived:
            cdr = dataclasses.replace(cdr, cost=cdr.cost - waived)
        end = self.store.end_session if self.fenced is None else self.fenced.end_session
        self.issue(sid, "end session", self._until_stored, end, sid, cdr, self.book.origin)

    def forget(self, sid: str) -> None:
        """Drop what is unsaved of a session another daemon owns now."""
        self._unsaved.pop(sid, None)
        self._waived.pop(sid, None)

    # -- money writes through a store outage (a Redis failover) ---------------------------
    def _until_stored(self, call: Callable[..., Any], *args: Any) -> defer.Deferred[Any]:
        """``call(*args)``, issued again after StoreUnavailable (with back-off) until applied.

        Only for the idempotent money writes: a charge, a CDR, the end of a session (each
        once per CDR id). Any other failure ends the retries and is the result.
        """
        done: defer.Deferred[Any] = defer.Deferred()
        delay = capped_backoff(MONEY_RETRY_FIRST, MONEY_RETRY_CAP)

        def attempt(failures: int) -> None:
            d = defer.maybeDeferred(call, *args)
            d.addCallbacks(done.callback, failed, errbackArgs=(failures,))

        def failed(failure: Failure, failures: int) -> None:
            if not failure.check(StoreUnavailable):
                done.errback(failure)
                return
            wait = delay(failures + 1)
            log.warn(
                "store {what} failed ({why}); issued again in {wait:.1f} s",
                what=getattr(call, "__name__", "write"),
                why=failure.getErrorMessage(),
                wait=wait,
            )
            self.clock.callLater(wait, attempt, failures + 1)

        attempt(0)
        return done


#: the first and the longest wait before a money write that met StoreUnavailable is retried
MONEY_RETRY_FIRST = 0.5
MONEY_RETRY_CAP = 10.0
