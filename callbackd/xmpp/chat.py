"""The chat front: chat messages in, replies and progress messages out, any transport.

:class:`ChatFront` reads one message body from a bare JID as a command
(:func:`callbackd.core.chat.parse_command`), carries it out through the engine's public
API and the store, and answers with one reply in the account's language (English for an
address not linked to an account) through ``send(jid, text)``. It knows nothing of
XMPP stanzas: the component hands it the bodies of ``chat``/``normal`` messages from
others and sends what it is given; the SMS front could drive it as well.

Latency: a command waits for its JID's link (``links``: the service's
:class:`~callbackd.xmpp.links.LinkCache`) and its account
(:meth:`SessionManager.account <callbackd.engine.manager.SessionManager.account>`), both
kept in memory while the store's change feed is live, so a ``CALLBACK`` of a user heard
from before reaches the engine without a store round trip.

Commands act on the JID's *live session*: the account's newest session in flight,
wherever it was started (chat, web, SMS, the manhole). ``DEL <index>`` drops the
index-th leg ``LIST`` lists (the connected legs, in their order).

Progress: the front hears every session event and pushes its words
(:func:`callbackd.i18n.progress.render`) to the JIDs that started or steered the
session from chat *through this process* (``CALLBACK``, ``LIST``, ``ADD``, ``DEL``,
``HANGUP``); other JIDs linked to the account, and sessions nobody here touched, are
told nothing. The texts of one reactor turn for one JID are merged into one message,
in order, after the reply of the command that caused them.

Limits: each JID may send ``rate[0]`` commands per ``rate[1]`` seconds; the next gets
one ``chat.rate_limited`` reply and the ones after it silence until the window
passes. Nothing is queued across JIDs, so a flood from one delays no one else. Wrong
``LINK`` passwords are counted per JID and per account: after
:data:`LINK_FAILURES` of them within :data:`LINK_WINDOW` seconds either one gets
``chat.link_throttled`` without a password check, and an unknown account and a wrong
password get the same reply.
"""

from __future__ import annotations

import collections
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Protocol

from babel.dates import format_datetime
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from callbackd.core import chat
from callbackd.core.model import Account
from callbackd.core.session import SessionEvent
from callbackd.engine.errors import CallbackRefused
from callbackd.engine.manager import SessionManager
from callbackd.i18n import DEFAULT_LANGUAGE, Translator, translator
from callbackd.i18n.progress import render
from callbackd.store.interface import InvalidArgument, IStore

__all__ = ["HISTORY_LENGTH", "LINK_FAILURES", "LINK_WINDOW", "ChatFront", "Links", "Throttle"]

log = Logger(namespace="callbackd.xmpp")

#: wrong LINK passwords allowed per JID and per account within LINK_WINDOW seconds
LINK_FAILURES: Final = 5
LINK_WINDOW: Final = 15 * 60.0
#: the calls HISTORY shows
HISTORY_LENGTH: Final = 5
#: the origin of the sessions chat starts (the CDR's ``extra["origin"]``)
ORIGIN: Final = "chat"


class Links(Protocol):
    """The links between chat addresses (bare JIDs) and accounts."""

    def account_for(self, jid: str) -> defer.Deferred[str | None]:
        """Fire with the username ``jid`` is linked to, or None."""

    def link(self, jid: str, username: str) -> defer.Deferred[None]:
        """Link ``jid`` to the account ``username`` (replacing any other link)."""

    def unlink(self, jid: str) -> defer.Deferred[None]:
        """Forget the link of ``jid``."""


class Throttle:
    """At most ``limit`` hits per key within ``period`` seconds (a sliding window)."""

    #: hits between sweeps of the keys whose window has passed
    SWEEP_EVERY: Final = 1000

    def __init__(self, clock: IReactorTime, limit: int, period: float) -> None:
        self.clock = clock
        self.limit = limit
        self.period = period
        self._hits: dict[Hashable, collections.deque[float]] = {}
        self._until_sweep = self.SWEEP_EVERY

    def full(self, key: Hashable) -> bool:
        """Whether ``key`` has had ``limit`` hits within the window."""
        hits = self._hits.get(key)
        if hits is None:
            return False
        start = self.clock.seconds() - self.period
        while hits and hits[0] <= start:
            hits.popleft()
        if not hits:
            del self._hits[key]
        return len(hits) >= self.limit

    def record(self, key: Hashable) -> None:
        """Count a hit of ``key`` now."""
        self._until_sweep -= 1
        if self._until_sweep <= 0:
            self._sweep()
        self._hits.setdefault(key, collections.deque()).append(self.clock.seconds())

    def hit(self, key: Hashable) -> bool:
        """Count a hit of ``key`` if the window has room; whether it had."""
        if self.full(key):
            return False
        self.record(key)
        return True

    def clear(self, key: Hashable) -> None:
        """Forget the hits of ``key``."""
        self._hits.pop(key, None)

    def __len__(self) -> int:
        return len(self._hits)

    def _sweep(self) -> None:
        """Drop the keys with no hit left in the window (memory stays bounded)."""
        self._until_sweep = self.SWEEP_EVERY
        for key in list(self._hits):
            self.full(key)


class _Reply(Exception):
    """A command's reply that ends it early: catalogue id ``msgid`` with ``params``."""

    def __init__(self, msgid: str, **params: Any) -> None:
        super().__init__(msgid)
        self.msgid = msgid
        self.params = params


@dataclass(frozen=True, slots=True)
class _Asker:
    """Who sent a command: the JID, its account (None: not linked), its language."""

    jid: str
    account: Account | None
    t: Translator

    @property
    def username(self) -> str:
        assert self.account is not None
        return self.account.username


_Handler = Callable[[_Asker, Any], Awaitable[str]]


class ChatFront:
    """Chat commands and progress messages for the JIDs that chat with the service."""

    #: rate-limited JIDs remembered before the ones whose window passed are swept
    MAX_WARNED: Final = 10_000

    def __init__(
        self,
        engine: SessionManager,
        store: IStore,
        links: Links,
        clock: IReactorTime,
        send: Callable[[str, str], None],
        *,
        decimals: int,
        currency: str = "",
        rate: tuple[int, float] = (10, 10.0),
    ) -> None:
        self.engine = engine
        self.store = store
        self.links = links
        self.clock = clock
        self.send = send
        self.decimals = decimals
        self.currency = currency
        self.commands = Throttle(clock, *rate)
        self.link_failures = Throttle(clock, LINK_FAILURES, LINK_WINDOW)
        #: the JIDs told they are rate limited, until their window passes
        self._warned: set[str] = set()
        #: per JID its account's language, as last read (progress is told in it)
        self._languages: dict[str, str] = {}
        #: per session the JIDs that started or steered it from chat
        self._watchers: dict[str, dict[str, None]] = {}
        #: the events of the sessions started in this reactor turn that no JID watches
        #: yet: CALLBACK learns its session id after the first ones were published
        self._newborn: dict[str, list[SessionEvent]] = {}
        #: per JID with commands under way, the progress held until the reply is out
        self._held: dict[str, list[str]] = {}
        self._busy: collections.Counter[str] = collections.Counter()
        #: per JID the messages of this reactor turn: (is progress, texts)
        self._outbox: dict[str, list[tuple[bool, list[str]]]] = {}
        self._flush_call: IDelayedCall | None = None
        self._newborn_call: IDelayedCall | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._linked: dict[type, _Handler] = {
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
            chat.Link: self._link,
            chat.Unlink: self._unlink,
        }
        self._unlinked: dict[type, _Handler] = {chat.Help: self._help, chat.Link: self._link}

    # -- life cycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Hear the engine's session events (progress messages)."""
        if self._unsubscribe is None:
            self._unsubscribe = self.engine.subscribe(self._event)

    def stop(self) -> None:
        """Stop hearing them; what is waiting to be sent goes now."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        for call in (self._flush_call, self._newborn_call):
            if call is not None and call.active():
                call.cancel()
        self._newborn_call = None
        self._newborn.clear()
        self._flush()

    # -- commands -----------------------------------------------------------------------

    def handle(self, jid: str, body: str) -> defer.Deferred[None]:
        """One chat message from bare JID ``jid``: one reply (or none while rate limited).

        Fires when the reply is queued (it is sent at the end of the reactor turn); never
        errbacks.
        """
        if not self.commands.hit(jid):
            if jid not in self._warned:
                if len(self._warned) >= self.MAX_WARNED:
                    # forget the JIDs whose window passed and who never came back
                    self._warned = {w for w in self._warned if self.commands.full(w)}
                self._warned.add(jid)
                self._say(jid, self._translator(jid).text("chat.rate_limited"))
            return defer.succeed(None)
        self._warned.discard(jid)
        self._busy[jid] += 1
        d = defer.ensureDeferred(self._handle(jid, body))
        d.addErrback(self._failed, jid)
        d.addBoth(self._done, jid)
        return d

    async def _handle(self, jid: str, body: str) -> None:
        username = await self.links.account_for(jid)
        account = None if username is None else await self.engine.account(username)
        if account is None:
            self._languages.pop(jid, None)
            t = translator(DEFAULT_LANGUAGE)
        else:
            self._languages[jid] = account.language
            t = translator(account.language)
        asker = _Asker(jid, account, t)
        try:
            command = chat.parse_command(body)
        except chat.CommandError as e:
            self._say(jid, t.text(f"error.{e.code}", **e.params))
            return
        self._say(jid, await self._answer(asker, command))

    async def _answer(self, asker: _Asker, command: chat.ChatCommand) -> str:
        """The reply to ``command`` of ``asker``, refusals included."""
        t = asker.t
        try:
            table = self._unlinked if asker.account is None else self._linked
            handler = table.get(type(command))
            if handler is None:
                raise _Reply("chat.not_linked")
            return await handler(asker, command)
        except chat.CommandError as e:
            return t.text(f"error.{e.code}", **e.params)
        except CallbackRefused as e:
            return t.text(e.code, **e.params) if e.code else str(e)
        except _Reply as e:
            return t.text(e.msgid, **e.params)

    def answer(
        self, address: str, account: Account, command: chat.ChatCommand
    ) -> defer.Deferred[str]:
        """The reply to a parsed ``command`` of ``account``, asked from ``address``.

        For another front (SMS) that authorised the account itself: the reply in the
        account's language, no progress watched unless the command steers a session.
        """
        asker = _Asker(address, account, translator(account.language))
        return defer.ensureDeferred(self._answer(asker, command))

    def _failed(self, failure: Failure, jid: str) -> None:
        """Something no input should cause (the store is down...): log it, say sorry."""
        log.failure("chat command from {jid} failed", failure, jid=jid)
        self._say(jid, self._translator(jid).text("chat.failed"))

    def _done(self, result: object, jid: str) -> None:
        """The command's reply is out: the progress it held follows."""
        self._busy[jid] -= 1
        if self._busy[jid] <= 0:
            del self._busy[jid]
            for text in self._held.pop(jid, ()):
                self._queue(jid, text, progress=True)

    def _translator(self, jid: str) -> Translator:
        return translator(self._languages.get(jid, DEFAULT_LANGUAGE))

    def text_for(self, jid: str, msgid: str, **params: Any) -> str:
        """Catalogue text ``msgid`` in the language of the account ``jid`` last spoke for.

        English for a JID not heard from (or not linked): the presence status and the
        invitation, which cannot wait for the store, are told in it.
        """
        return self._translator(jid).text(msgid, **params)

    def _money(self, t: Translator, minor_units: int, currency: str = "") -> str:
        return t.money(minor_units, self.decimals, currency)

    # -- the commands -------------------------------------------------------------------

    async def _help(self, asker: _Asker, command: chat.Help) -> str:
        if command.topic is None:
            return asker.t.text("chat.help", commands=", ".join(chat.COMMANDS))
        return asker.t.text("chat.help_command", usage=chat.USAGE[command.topic])

    async def _link(self, asker: _Asker, command: chat.Link) -> str:
        keys = (("jid", asker.jid), ("account", command.username.lower()))
        if any(self.link_failures.full(key) for key in keys):
            raise _Reply("chat.link_throttled")
        try:
            right = await self.store.check_password(command.username, command.password)
        except InvalidArgument:
            right = False  # not even a username: the same reply as a wrong password
        account = await self.store.get_account(command.username) if right else None
        if account is None:
            for key in keys:
                self.link_failures.record(key)
            raise _Reply("chat.link_failed")
        await self.links.link(asker.jid, account.username)
        self.link_failures.clear(keys[0])
        self._languages[asker.jid] = account.language
        log.info("{jid} linked to {username}", jid=asker.jid, username=account.username)
        return translator(account.language).text("chat.linked", username=account.username)

    async def _unlink(self, asker: _Asker, command: chat.Unlink) -> str:
        await self.links.unlink(asker.jid)
        self._languages.pop(asker.jid, None)
        for watchers in self._watchers.values():
            watchers.pop(asker.jid, None)
        log.info("{jid} unlinked from {username}", jid=asker.jid, username=asker.username)
        return asker.t.text("chat.unlinked")

    async def _callback(self, asker: _Asker, command: chat.Callback) -> str:
        assert asker.account is not None
        source = command.source or asker.account.default_number
        if not source:
            raise _Reply("chat.no_default_number")
        session_id = await self.engine.start_callback(
            asker.username, source, command.destination, command.via, origin=ORIGIN
        )
        self._watch(session_id, asker.jid)
        # what the session said before its id was known: held, after this reply
        for event in self._newborn.pop(session_id, ()):
            self._tell(asker.jid, event)
        return asker.t.text("chat.session_started", session=session_id)

    def _live(self, asker: _Asker) -> str:
        """The JID's live session (the account's newest in flight), watched from now on."""
        sessions = self.engine.sessions_of(asker.username)
        if not sessions:
            raise _Reply("chat.no_session")
        session_id = sessions[-1]
        self._watch(session_id, asker.jid)
        return session_id

    async def _list(self, asker: _Asker, command: chat.ListLegs) -> str:
        return self.engine.list_legs(self._live(asker), asker.t.language)

    async def _add(self, asker: _Asker, command: chat.Add) -> str:
        await self.engine.add_leg(self._live(asker), command.leg, command.via)
        return asker.t.text("chat.leg_added", leg=command.leg)

    async def _delete(self, asker: _Asker, command: chat.Delete) -> str:
        session_id = self._live(asker)
        target, shown = command.target, command.target
        if target.isdigit() and len(target) <= 3:  # the grammar's index, not a number
            legs = [leg for leg in self.engine.status(session_id)["legs"] if leg["state"] == "up"]
            index = int(target)
            if index > len(legs):
                raise _Reply("error.bad_index")
            target, shown = legs[index - 1]["leg"], legs[index - 1]["address"]
        await self.engine.drop_leg(session_id, target)
        return asker.t.text("chat.leg_dropped", leg=shown)

    async def _hangup(self, asker: _Asker, command: chat.Hangup) -> str:
        await self.engine.hangup(self._live(asker))
        return asker.t.text("chat.hangup_requested")

    async def _balance(self, asker: _Asker, command: chat.Balance) -> str:
        balance = await self.store.get_balance(asker.username)
        return asker.t.text("chat.balance", balance=self._money(asker.t, balance, self.currency))

    async def _rate(self, asker: _Asker, command: chat.RateQuery) -> str:
        rate = self.engine.rate_of(command.leg)
        return asker.t.text("chat.rate", leg=command.leg, rate=self._money(asker.t, rate))

    async def _status(self, asker: _Asker, command: chat.Status) -> str:
        sessions = self.engine.sessions_of(asker.username)
        if not sessions:
            return asker.t.text("chat.status_none")
        language = asker.t.language
        shown = "; ".join(f"{sid}: {self.engine.list_legs(sid, language)}" for sid in sessions)
        return asker.t.text("chat.status", sessions=shown)

    async def _history(self, asker: _Asker, command: chat.History) -> str:
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

    async def _language(self, asker: _Asker, command: chat.Language) -> str:
        await self.store.update_account(asker.username, language=command.code)
        self.engine.account_changed(asker.username)  # the next reply speaks it
        self._languages[asker.jid] = command.code
        t = translator(command.code)
        return t.text("chat.language_set", language=t.language_name(command.code))

    # -- progress -----------------------------------------------------------------------

    def _watch(self, session_id: str, jid: str) -> None:
        """Tell ``jid`` the session's progress from now on."""
        self._watchers.setdefault(session_id, {})[jid] = None

    def _event(self, event: SessionEvent) -> None:
        """A session event from the engine: its words to the session's JIDs."""
        session_id = event.session_id
        watchers = self._watchers.get(session_id)
        if watchers is not None:
            for jid in list(watchers):
                self._tell(jid, event)
        elif event.kind == "session_started" or session_id in self._newborn:
            self._newborn.setdefault(session_id, []).append(event)
            if self._newborn_call is None:
                self._newborn_call = self.clock.callLater(0, self._forget_newborn)
        if event.kind == "session_ended":
            self._watchers.pop(session_id, None)

    def _forget_newborn(self) -> None:
        self._newborn_call = None
        self._newborn.clear()

    def _tell(self, jid: str, event: SessionEvent) -> None:
        text = render(event, self._translator(jid), self.decimals, self.currency)
        if not text:
            return
        if jid in self._busy:
            self._held.setdefault(jid, []).append(text)
        else:
            self._queue(jid, text, progress=True)

    # -- sending ------------------------------------------------------------------------

    def _say(self, jid: str, text: str) -> None:
        """A reply: a message of its own."""
        self._queue(jid, text, progress=False)

    def _queue(self, jid: str, text: str, *, progress: bool) -> None:
        """Send ``text`` at the end of this reactor turn; progress texts run together."""
        messages = self._outbox.setdefault(jid, [])
        if progress and messages and messages[-1][0]:
            messages[-1][1].append(text)
        else:
            messages.append((progress, [text]))
        if self._flush_call is None:
            self._flush_call = self.clock.callLater(0, self._flush)

    def _flush(self) -> None:
        self._flush_call = None
        outbox, self._outbox = self._outbox, {}
        for jid, messages in outbox.items():
            for _, texts in messages:
                try:
                    self.send(jid, "\n".join(texts))
                except Exception:
                    log.failure("cannot send a chat message to {jid}", jid=jid)


def _when(t: Translator, timestamp: float) -> str:
    """A call's start, in UTC, as the language writes a short date and time."""
    moment = datetime.fromtimestamp(timestamp, UTC)
    return format_datetime(moment, "short", tzinfo=UTC, locale=t.locale) + " UTC"
