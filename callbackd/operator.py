"""Operator helpers for the manhole: place and steer callbacks, look at money.

Until the chat, SMS and web front ends exist, the manhole is where an operator
(or a newcomer trying the demo) drives the engine::

    >>> sid = callback("alice", "+15550011111", "+15550012222")
    >>> legs(sid)
    >>> add(sid, "+15550013333")
    >>> hangup(sid)

Each helper returns what the engine returns (often a Deferred, which the manhole
shows when it fires). A helper given a session id accepts the fired Deferred
that ``callback`` returned, so ``sid`` can be passed on as it is.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer

from callbackd.core import session as machine
from callbackd.core.money import format_amount
from callbackd.i18n import DEFAULT_LANGUAGE, progress, translator

__all__ = ["operator_helpers", "progress_logger"]


def _session_id(value: Any) -> str:
    """A session id from a string or from the (fired) Deferred ``callback`` returned."""
    if isinstance(value, defer.Deferred):
        if not value.called:
            raise ValueError("that callback has not started yet; try again in a moment")
        value = value.result
    if not isinstance(value, str):
        raise ValueError(f"not a session id: {value!r}")
    return value


def operator_helpers(daemon: Any) -> dict[str, Any]:
    """The helper functions put into the manhole's namespace."""
    engine = daemon.engine
    store = daemon.store
    decimals = daemon.config.billing.decimals

    def callback(username: str, source: str, destination: str, *via: str) -> defer.Deferred[str]:
        """CALLBACK: call ``source``, then ``destination``, and join them."""
        return engine.start_callback(username, source, destination, via, origin="manhole")

    def legs(session: Any) -> str:
        """LIST: the legs of a session."""
        text: str = engine.list_legs(_session_id(session))
        return text

    def add(session: Any, address: str, provider: str | None = None) -> defer.Deferred[None]:
        """ADD: call one more party into the session."""
        d: defer.Deferred[None] = engine.add_leg(_session_id(session), address, provider)
        return d

    def drop(session: Any, leg: str) -> defer.Deferred[None]:
        """DEL: drop an additional leg."""
        d: defer.Deferred[None] = engine.drop_leg(_session_id(session), leg)
        return d

    def hangup(session: Any) -> defer.Deferred[None]:
        """HANGUP: end the session and every leg."""
        d: defer.Deferred[None] = engine.hangup(_session_id(session))
        return d

    def status(session: Any) -> dict[str, Any]:
        """STATUS: the session's state."""
        result: dict[str, Any] = engine.status(_session_id(session))
        return result

    def sessions(username: str) -> list[str]:
        """The session ids of an account that are in progress."""
        result: list[str] = engine.sessions_of(username)
        return result

    def balance(username: str) -> defer.Deferred[str]:
        """BALANCE: the account's balance, formatted."""
        d = store.get_balance(username)
        return d.addCallback(lambda minor: format_amount(minor, decimals))

    def cdrs(username: str | None = None) -> defer.Deferred[list[str]]:
        """The account's CDRs, one line each: leg, address, provider, seconds, cost, cause."""

        def lines(records: list[Any]) -> list[str]:
            return [
                f"{c.session_id} {c.kind}:{c.leg or '-'} {c.address or '-'} "
                f"via {c.provider or '-'} {c.billed_seconds}s "
                f"{format_amount(c.cost, decimals)} {c.cause}"
                for c in records
            ]

        return store.list_cdrs(username).addCallback(lines)

    return {
        "callback": callback,
        "legs": legs,
        "add": add,
        "drop": drop,
        "hangup": hangup,
        "status": status,
        "sessions": sessions,
        "balance": balance,
        "cdrs": cdrs,
    }


def _describe(event: machine.SessionEvent, decimals: int) -> str:
    """A short log text for an event GTalk2VoIP had no words for."""
    parts = [event.role, event.address, event.cause]
    if event.kind == "leg_ended" and event.billed_seconds:
        parts.append(f"{event.billed_seconds} s, {format_amount(event.cost, decimals)}")
    details = ", ".join(filter(None, parts))
    what = event.kind.replace("_", " ")
    return f"({what}: {details})" if details else f"({what})"


def _format(lines: list[str]) -> str:
    """Lines as a log format: braces doubled, so the observers format a literal."""
    return "\n".join(lines).replace("{", "{{").replace("}", "}}")


def progress_logger(log: Any, decimals: int, currency: str, clock: Any = None) -> Any:
    """A session subscriber that logs every event in GTalk2VoIP's words.

    One line per event, ``session <id>: <words>``. ``session_started`` is not logged:
    the engine's own line for a new session names the account and both addresses, nor
    the answer of a destination or an added party: ``talking`` and ``party_answered``,
    published with it, tell it (GTalk2VoIP's words have none for it either).
    ``credit_updated`` is logged when it tells the session's balance for the first time
    or a changed one: the engine recomputes a session's credit on every word of its
    account's change feed, and a repeated "Balance: ..." line per recompute (more than
    one a call under load) said nothing new.

    With ``clock`` (the reactor) the lines of one reactor turn go out as *one* log
    event at the end of the turn, one line each, in the order of the events (the
    log file shows the first after the time stamp and the others on the lines below,
    indented): a log event costs the observers tens of microseconds (time stamp,
    formatting, a write), which a line per event made the largest single cost of a
    call. Without ``clock`` each line is its own event at once. A single line's event
    carries ``session_id``, ``text`` and ``event`` (the event's dict); a batch's
    carries ``session_ids``, ``texts`` and ``events``, lists in the order of its lines.
    """

    english = translator(DEFAULT_LANGUAGE)
    #: the balance last logged per session in progress
    balances: dict[str, int] = {}
    #: the turn's lines not written yet: (session id, words, event)
    pending: list[tuple[str, str, machine.SessionEvent]] = []

    def emit(batch: list[tuple[str, str, machine.SessionEvent]]) -> None:
        lines = [f"session {sid}: {text}" for sid, text, _ in batch]
        if len(batch) == 1:
            sid, text, event = batch[0]
            log.info(_format(lines), session_id=sid, text=text, event=event.to_dict())
            return
        log.info(
            _format(lines),
            session_ids=[sid for sid, _, _ in batch],
            texts=[text for _, text, _ in batch],
            events=[event.to_dict() for _, _, event in batch],
        )

    def flush() -> None:
        batch = pending[:]
        pending.clear()
        if batch:
            emit(batch)

    def log_event(event: machine.SessionEvent) -> None:
        kind = event.kind
        if kind == "session_started":
            return
        if kind == "credit_updated":
            if balances.get(event.session_id) == event.balance:
                return
            balances[event.session_id] = event.balance
        elif kind == "session_ended":
            balances.pop(event.session_id, None)
        text = progress.render(event, english, decimals, currency)
        if not text:
            if kind == "leg_answered":
                return  # a destination's or an added party's: the next event tells it
            text = _describe(event, decimals)
        if clock is None:
            emit([(event.session_id, text, event)])
            return
        if not pending:
            clock.callLater(0, flush)
        pending.append((event.session_id, text, event))

    return log_event
