"""The session writer's money writes through a store outage (a Redis failover): a charge,
a CDR and a session's end that meet StoreUnavailable are issued again until applied,
each once; other failures are not retried."""

from __future__ import annotations

import pytest_twisted
from twisted.internet import defer
from twisted.internet.task import Clock

from callbackd.core import session as machine
from callbackd.core.model import CDR, Account
from callbackd.engine.writer import MONEY_RETRY_FIRST, SessionWriter
from callbackd.store.interface import StoreUnavailable
from callbackd.store.memory import MemoryStore


class Book:
    """The writer's view of the account book (the ledger is not what is tested here)."""

    origin = "engine:test"

    def __init__(self) -> None:
        self.pending = 0

    def available(self, username: str) -> None:
        return None

    def charge_issued(self, username: str, cost: int) -> None:
        self.pending += cost

    def charge_done(self, username: str, cost: int) -> None:
        self.pending -= cost


class Outage(MemoryStore):
    """A MemoryStore whose money writes fail with StoreUnavailable ``fail`` times first."""

    def __init__(self, clock: Clock, fail: int) -> None:
        super().__init__(clock)
        self.fail = fail
        self.calls = 0

    def _gap(self) -> defer.Deferred | None:
        self.calls += 1
        if self.calls <= self.fail:
            return defer.fail(StoreUnavailable("redis unavailable: failover"))
        return None

    def charge(self, cdr, origin=""):
        return self._gap() or super().charge(cdr, origin)

    def end_session(self, session_id, cdr, origin=""):
        return self._gap() or super().end_session(session_id, cdr, origin)


def leg(cdr_id: str, cost: int) -> machine.ChargeLeg:
    cdr = CDR(cdr_id, "alice", "s1", "leg", "source", ended_at=1.0, cost=cost)
    return machine.ChargeLeg("leg", 60, cost, cdr)


@pytest_twisted.ensureDeferred
async def test_charge_in_a_gap_is_applied_once_when_the_store_is_back():
    """Three StoreUnavailable in a row: the charge is issued again with back-off and lands
    once; the book's pending charge is settled once."""
    clock = Clock()
    store = Outage(clock, fail=3)
    await store.create_account(Account("alice"), "pw")
    book = Book()
    writer = SessionWriter(clock, store, book)  # type: ignore[arg-type]
    writer.charge("s1", leg("c1", 40))
    assert store.calls == 1 and book.pending == 40
    clock.advance(MONEY_RETRY_FIRST * 0.9)
    assert store.calls == 1  # not before the back-off
    for _ in range(20):
        clock.advance(10.0)
    assert store.calls == 4
    assert await store.get_balance("alice") == -40
    assert [c.cdr_id for c in await store.list_cdrs()] == ["c1"]
    assert book.pending == 0


@pytest_twisted.ensureDeferred
async def test_session_end_in_a_gap_is_retried():
    """The end of a session that meets StoreUnavailable is written once the store is back."""
    clock = Clock()
    store = Outage(clock, fail=1)
    await store.create_account(Account("alice"), "pw")
    await store.save_session("s1", {"x": 1})
    writer = SessionWriter(clock, store, Book())  # type: ignore[arg-type]
    cdr = CDR("s1", "alice", "s1", "session", "", ended_at=2.0)
    writer.end("s1", cdr)
    assert await store.list_sessions() == ["s1"]
    clock.advance(10.0)
    assert await store.list_sessions() == []
    assert [c.cdr_id for c in await store.list_cdrs()] == ["s1"]


@pytest_twisted.ensureDeferred
async def test_other_failures_are_not_retried():
    """A charge the store refuses for another reason (NoSuchAccount: no account "alice"
    here) is not issued again."""
    clock = Clock()
    store = Outage(clock, fail=0)
    book = Book()
    writer = SessionWriter(clock, store, book)  # type: ignore[arg-type]
    writer.charge("s1", leg("c1", 40))
    clock.advance(60.0)
    assert store.calls == 1
    assert book.pending == 0


def test_a_session_save_in_a_gap_is_a_warning():
    """A session state save that meets StoreUnavailable is a warning (the next save, the
    heartbeat's at the latest, writes the whole state again), not a logged failure."""
    from twisted.logger import globalLogPublisher

    clock = Clock()
    store = MemoryStore(clock)
    store.available = False
    writer = SessionWriter(clock, store, Book())  # type: ignore[arg-type]
    logged: list[dict] = []
    globalLogPublisher.addObserver(logged.append)
    try:
        writer.issue("s1", "save session", store.save_session, "s1", {"x": 1})
    finally:
        globalLogPublisher.removeObserver(logged.append)
    assert not [e for e in logged if "log_failure" in e], logged
    assert [e["what"] for e in logged if e.get("session_id") == "s1"] == ["save session"]
