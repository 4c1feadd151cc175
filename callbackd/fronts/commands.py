"""The chat grammar's commands answered for an account, in the account's language.

:class:`ChatCommands` carries out a command parsed by
:func:`callbackd.core.chat.parse_command` for an account, through the engine's public
API and the store, and answers with one text from the catalogue in the account's
language; a refusal (:class:`~callbackd.core.chat.CommandError`,
:class:`~callbackd.engine.errors.CallbackRefused`, :class:`Reply`) is an answer too.
The chat front (:mod:`callbackd.xmpp.chat`) answers every command with it and adds
``LINK`` and ``UNLINK``, which link chat addresses; the SMS front answers ``BALANCE``,
``STATUS``, ``HISTORY``, ``RATE`` and ``LANG`` with it.

Commands act on the asker's *live session*: the account's newest session in flight,
wherever it was started (chat, web, SMS, the manhole). ``DEL <index>`` drops the
index-th leg ``LIST`` lists (the connected legs, in their order).

Progress: an asker with a :attr:`Asker.watcher` (the front's record of it) is recorded
with every session it starts or steers (:meth:`SessionManager.watch
<callbackd.engine.manager.SessionManager.watch>`), so the front tells it the session's
progress wherever the session runs; ``LANG`` records it again in the new language. The
front hears of ``LANG`` through its :class:`Listener`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Final, Protocol

from babel.dates import format_datetime
from twisted.internet import defer
from twisted.logger import Logger

from callbackd.core import chat
from callbackd.core.model import Account
from callbackd.core.session import Watcher
from callbackd.engine.errors import CallbackRefused
from callbackd.engine.manager import SessionManager
from callbackd.i18n import Translator, translator
from callbackd.store.interface import IStore

__all__ = ["HISTORY_LENGTH", "Asker", "ChatCommands", "Handler", "Listener", "Reply"]

log = Logger(namespace="callbackd.fronts")

#: the calls HISTORY shows
HISTORY_LENGTH: Final = 5


class Reply(Exception):
    """A command's reply that ends it early: catalogue id ``msgid`` with ``params``."""

    def __init__(self, msgid: str, **params: Any) -> None:
        super().__init__(msgid)
        self.msgid = msgid
        self.params = params


@dataclass(frozen=True, slots=True)
class Asker:
    """Who sent a command: its address (a bare JID, ``sms:<number>``), its account (None:
    not linked), its language, and the front's record of it for the sessions it starts
    or steers (None: told no progress)."""

    address: str
    account: Account | None
    t: Translator
    watcher: Watcher | None = None

    @property
    def username(self) -> str:
        assert self.account is not None
        return self.account.username


Handler = Callable[[Asker, Any], Awaitable[str]]


class Listener(Protocol):
    """What a front hears of the commands answered for it."""

    def language_set(self, address: str, language: str) -> None:
        """``address`` asked for ``language`` (LANG): the account speaks it now."""


class _Unheard:
    """The listener of a front that keeps no language of its own."""

    def language_set(self, address: str, language: str) -> None:
        pass


class ChatCommands:
    """The chat grammar's commands of an account, answered (see the module's doc)."""

    def __init__(
        self,
        engine: SessionManager,
        store: IStore,
        *,
        origin: str,
        decimals: int,
        currency: str = "",
        listener: Listener | None = None,
    ) -> None:
        self.engine = engine
        self.store = store
        #: the origin of the sessions CALLBACK starts (the CDR's ``extra["origin"]``)
        self.origin = origin
        self.decimals = decimals
        self.currency = currency
        self.listener: Listener = listener or _Unheard()
        #: the handler of each command an account may send
        self.handlers: Mapping[type, Handler] = {
            chat.Callback: self._callback,
            chat.ListLegs: self._list,
            chat.Add: self._add,
            chat.Delete: self._delete,
            chat.Hangup: self._hangup,
            chat.Balance: self._balance,
            chat.RateQuery: self._rate,
            chat.Status: self._status,
            chat.History: self._history,
            chat.Language: self._language,
            chat.Help: self._help,
        }

    def answer(
        self,
        address: str,
        account: Account,
        command: chat.ChatCommand,
        watcher: Watcher | None = None,
    ) -> defer.Deferred[str]:
        """The reply to a parsed ``command`` of ``account``, asked from ``address``
        (``watcher``: see :attr:`Asker.watcher`)."""
        asker = Asker(address, account, translator(account.language), watcher)
        return defer.ensureDeferred(self.reply(asker, command))

    async def reply(
        self,
        asker: Asker,
        command: chat.ChatCommand,
        handlers: Mapping[type, Handler] | None = None,
    ) -> str:
        """The reply to ``command`` of ``asker``, refusals included.

        ``handlers``: the commands ``asker`` may send (default :attr:`handlers`); any
        other is answered ``chat.not_linked``.
        """
        t = asker.t
        try:
            handler = (self.handlers if handlers is None else handlers).get(type(command))
            if handler is None:
                raise Reply("chat.not_linked")
            return await handler(asker, command)
        except chat.CommandError as e:
            return t.text(f"error.{e.code}", **e.params)
        except CallbackRefused as e:
            return t.text(e.code, **e.params) if e.code else str(e)
        except Reply as e:
            return t.text(e.msgid, **e.params)

    def _money(self, t: Translator, minor_units: int, currency: str = "") -> str:
        return t.money(minor_units, self.decimals, currency)

    # -- the commands -------------------------------------------------------------------

    async def _help(self, asker: Asker, command: chat.Help) -> str:
        if command.topic is None:
            return asker.t.text("chat.help", commands=", ".join(chat.COMMANDS))
        return asker.t.text("chat.help_command", usage=chat.USAGE[command.topic])

    async def _callback(self, asker: Asker, command: chat.Callback) -> str:
        assert asker.account is not None
        source = command.source or asker.account.default_number
        if not source:
            raise Reply("chat.no_default_number")
        session_id = await self.engine.start_callback(
            asker.username,
            source,
            command.destination,
            command.via,
            origin=self.origin,
            watcher=asker.watcher,
        )
        return asker.t.text("chat.session_started", session=session_id)

    async def _live(self, asker: Asker) -> str:
        """The asker's live session (the account's newest in flight), watched from now on."""
        sessions = self.engine.sessions_of(asker.username)
        if not sessions:
            raise Reply("chat.no_session")
        session_id = sessions[-1]
        watcher = asker.watcher
        if watcher is not None and watcher not in self.engine.watchers_of(session_id):
            await self._watch(session_id, watcher)
        return session_id

    def watching(self, username: str, front: str, address: str) -> list[str]:
        """The account's sessions in flight that record ``address`` of ``front``."""
        engine = self.engine
        return [
            session_id
            for session_id in engine.sessions_of(username)
            if any(w.same(front, address) for w in engine.watchers_of(session_id))
        ]

    async def _watch(self, session_id: str, watcher: Watcher) -> None:
        """Record ``watcher`` with the session; a refusal (the session just ended, its
        owner does not answer) leaves the command to say what it says of it."""
        try:
            await self.engine.watch(session_id, watcher)
        except CallbackRefused as e:
            log.info(
                "session {session_id}: {address} not watching: {error}",
                session_id=session_id,
                address=watcher.address,
                error=str(e),
            )

    async def _list(self, asker: Asker, command: chat.ListLegs) -> str:
        return self.engine.list_legs(await self._live(asker), asker.t.language)

    async def _add(self, asker: Asker, command: chat.Add) -> str:
        await self.engine.add_leg(await self._live(asker), command.leg, command.via)
        return asker.t.text("chat.leg_added", leg=command.leg)

    async def _delete(self, asker: Asker, command: chat.Delete) -> str:
        session_id = await self._live(asker)
        target, shown = command.target, command.target
        if target.isdigit() and len(target) <= 3:  # the grammar's index, not a number
            legs = [leg for leg in self.engine.status(session_id)["legs"] if leg["state"] == "up"]
            index = int(target)
            if index > len(legs):
                raise Reply("error.bad_index")
            target, shown = legs[index - 1]["leg"], legs[index - 1]["address"]
        await self.engine.drop_leg(session_id, target)
        return asker.t.text("chat.leg_dropped", leg=shown)

    async def _hangup(self, asker: Asker, command: chat.Hangup) -> str:
        await self.engine.hangup(await self._live(asker))
        return asker.t.text("chat.hangup_requested")

    async def _balance(self, asker: Asker, command: chat.Balance) -> str:
        balance = await self.store.get_balance(asker.username)
        return asker.t.text("chat.balance", balance=self._money(asker.t, balance, self.currency))

    async def _rate(self, asker: Asker, command: chat.RateQuery) -> str:
        rate = self.engine.rate_of(command.leg)
        return asker.t.text("chat.rate", leg=command.leg, rate=self._money(asker.t, rate))

    async def _status(self, asker: Asker, command: chat.Status) -> str:
        sessions = self.engine.sessions_of(asker.username)
        if not sessions:
            return asker.t.text("chat.status_none")
        language = asker.t.language
        shown = "; ".join(f"{sid}: {self.engine.list_legs(sid, language)}" for sid in sessions)
        return asker.t.text("chat.status", sessions=shown)

    async def _history(self, asker: Asker, command: chat.History) -> str:
        cdrs = await self.store.list_cdrs(asker.username)
        calls = [cdr for cdr in cdrs if cdr.kind == "session"][-HISTORY_LENGTH:]
        if not calls:
            return asker.t.text("chat.history_none")
        t = asker.t
        return "\n".join(
            t.text(
                "chat.history_line",
                when=_when(t, cdr.started_at),
                destination=cdr.address,
                seconds=t.duration(cdr.billed_seconds),
                cost=self._money(t, cdr.cost, self.currency),
            )
            for cdr in calls
        )

    async def _language(self, asker: Asker, command: chat.Language) -> str:
        await self.store.update_account(asker.username, language=command.code)
        self.engine.account_changed(asker.username)  # the next reply speaks it
        self.listener.language_set(asker.address, command.code)
        watcher = asker.watcher
        if watcher is not None:
            # the sessions it watches tell it their progress in the new language
            for session_id in self.watching(asker.username, watcher.front, watcher.address):
                await self._watch(session_id, replace(watcher, language=command.code))
        t = translator(command.code)
        return t.text("chat.language_set", language=t.language_name(command.code))


def _when(t: Translator, timestamp: float) -> str:
    """A call's start, in UTC, as the language writes a short date and time."""
    moment = datetime.fromtimestamp(timestamp, UTC)
    return format_datetime(moment, "short", tzinfo=UTC, locale=t.locale) + " UTC"
