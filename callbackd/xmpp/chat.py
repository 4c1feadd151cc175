"""The chat front: chat messages in, replies and progress messages out, any transport.

:class:`ChatFront` reads one message body from a bare JID as a command
(:func:`callbackd.core.chat.parse_command`), carries it out through the engine's public
API and the store, and answers with one reply in the account's language (English for an
address not linked to an account) through ``send(jid, text)``. It knows nothing of
XMPP stanzas: the component hands it the bodies of ``chat``/``normal`` messages from
others and sends what it is given. The commands are answered by
:class:`~callbackd.fronts.commands.ChatCommands`, which the SMS front uses too; the
chat front adds ``LINK`` and ``UNLINK``, the links of chat addresses to accounts.

Latency: a command waits for its JID's link (``links``: the service's
:class:`~callbackd.xmpp.links.LinkCache`) and its account
(:meth:`SessionManager.account <callbackd.engine.manager.SessionManager.account>`), both
kept in memory while the store's change feed is live, so a ``CALLBACK`` of a user heard
from before reaches the engine without a store round trip.

Progress: the front hears every session event and pushes its words
(:func:`callbackd.i18n.progress.render`) to the JIDs that started or steered the
session from chat (``CALLBACK``, ``LIST``, ``ADD``, ``DEL``, ``HANGUP``): each is
recorded with the session as a ``chat`` watcher
(:class:`~callbackd.core.session.Watcher`), so the JID is told wherever the session
runs, by whichever daemon's component of the domain the JID talks to is connected
(the XMPP server admits one at a time), after a takeover too; other
JIDs linked to the account, and sessions no JID touched, are told nothing. ``UNLINK``
ends the watching. The texts of one reactor turn for one JID are merged into one
message, in order, after the reply of the command that caused them
(:class:`~callbackd.fronts.progress.ProgressBatcher` ends the turn).

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
from collections.abc import Callable, Mapping
from typing import Any, Final, Protocol

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from callbackd.core import chat
from callbackd.core.session import SessionEvent, Watcher
from callbackd.engine.errors import CallbackRefused
from callbackd.engine.manager import SessionManager
from callbackd.fronts.commands import Asker, ChatCommands, Handler, Reply
from callbackd.fronts.progress import ProgressBatcher
from callbackd.fronts.throttle import Throttle
from callbackd.i18n import DEFAULT_LANGUAGE, Translator, translator
from callbackd.i18n.progress import render
from callbackd.store.interface import InvalidArgument, IStore

__all__ = ["FRONT", "LINK_FAILURES", "LINK_WINDOW", "ChatFront", "Links"]

log = Logger(namespace="callbackd.xmpp")

#: wrong LINK passwords allowed per JID and per account within LINK_WINDOW seconds
LINK_FAILURES: Final = 5
LINK_WINDOW: Final = 15 * 60.0
#: the origin of the sessions chat starts (the CDR's ``extra["origin"]``)
ORIGIN: Final = "chat"
#: the front of the watchers chat records with a session (the JIDs it tells)
FRONT: Final = "chat"


class Links(Protocol):
    """The links between chat addresses (bare JIDs) and accounts."""

    def account_for(self, jid: str) -> defer.Deferred[str | None]:
        """Fire with the username ``jid`` is linked to, or None."""

    def link(self, jid: str, username: str) -> defer.Deferred[None]:
        """Link ``jid`` to the account ``username`` (replacing any other link)."""

    def unlink(self, jid: str) -> defer.Deferred[None]:
        """Forget the link of ``jid``."""


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
        domain: str = "",
    ) -> None:
        self.engine = engine
        self.store = store
        self.links = links
        self.clock = clock
        self.send = send
        self.decimals = decimals
        self.currency = currency
        #: the service's domain: the JIDs talking to it are this front's to tell
        self.domain = domain
        self.commands = Throttle(clock, *rate)
        self.link_failures = Throttle(clock, LINK_FAILURES, LINK_WINDOW)
        #: the commands' answers; it tells this front what a JID started or steered
        self.answers = ChatCommands(
            engine, store, origin=ORIGIN, decimals=decimals, currency=currency, listener=self
        )
        #: the JIDs told they are rate limited, until their window passes
        self._warned: set[str] = set()
        #: per JID its account's language, as last read (progress is told in it)
        self._languages: dict[str, str] = {}
        #: per JID with commands under way, the progress held until the reply is out
        self._held: dict[str, list[str]] = {}
        self._busy: collections.Counter[str] = collections.Counter()
        #: per JID the messages of this reactor turn: (is progress, texts)
        self._outbox: dict[str, list[tuple[bool, list[str]]]] = {}
        self.progress = ProgressBatcher(engine, clock, tell=self._event, flush=self._flush)
        self._linked: Mapping[type, Handler] = {
            **self.answers.handlers,
            chat.Link: self._link,
            chat.Unlink: self._unlink,
        }
        self._unlinked: Mapping[type, Handler] = {
            chat.Help: self.answers.handlers[chat.Help],
            chat.Link: self._link,
        }

    # -- life cycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Hear the engine's session events (progress messages)."""
        self.progress.start()

    def stop(self) -> None:
        """Stop hearing them; what is waiting to be sent goes now."""
        self.progress.stop()

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
        watcher = None
        if account is None:
            self._languages.pop(jid, None)
            t = translator(DEFAULT_LANGUAGE)
        else:
            self._languages[jid] = account.language
            t = translator(account.language)
            watcher = Watcher(FRONT, jid, account.language, self.domain)
        asker = Asker(jid, account, t, watcher)
        try:
            command = chat.parse_command(body)
        except chat.CommandError as e:
            self._say(jid, t.text(f"error.{e.code}", **e.params))
            return
        table = self._unlinked if account is None else self._linked
        self._say(jid, await self.answers.reply(asker, command, table))

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

    # -- the links ----------------------------------------------------------------------

    async def _link(self, asker: Asker, command: chat.Link) -> str:
        keys = (("jid", asker.address), ("account", command.username.lower()))
        if any(self.link_failures.full(key) for key in keys):
            raise Reply("chat.link_throttled")
        try:
            right = await self.store.check_password(command.username, command.password)
        except InvalidArgument:
            right = False  # not even a username: the same reply as a wrong password
        account = await self.store.get_account(command.username) if right else None
        if account is None:
            for key in keys:
                self.link_failures.record(key)
            raise Reply("chat.link_failed")
        await self.links.link(asker.address, account.username)
        self.link_failures.clear(keys[0])
        self._languages[asker.address] = account.language
        log.info("{jid} linked to {username}", jid=asker.address, username=account.username)
        return translator(account.language).text("chat.linked", username=account.username)

    async def _unlink(self, asker: Asker, command: chat.Unlink) -> str:
        await self.links.unlink(asker.address)
        self._languages.pop(asker.address, None)
        for session_id in self.answers.watching(asker.username, FRONT, asker.address):
            try:
                await self.engine.unwatch(session_id, FRONT, asker.address)
            except CallbackRefused as e:  # ended meanwhile, or its owner is away
                log.info(
                    "session {session_id}: {jid} still watching: {error}",
                    session_id=session_id,
                    jid=asker.address,
                    error=str(e),
                )
        log.info("{jid} unlinked from {username}", jid=asker.address, username=asker.username)
        return asker.t.text("chat.unlinked")

    # -- progress (what the commands tell: callbackd.fronts.commands.Listener) ----------

    def language_set(self, jid: str, language: str) -> None:
        """``jid``'s account speaks ``language`` now: its progress is told in it."""
        self._languages[jid] = language

    def _event(self, event: SessionEvent) -> None:
        """A session event from the engine: its words to the session's chat watchers."""
        for watcher in self.engine.watchers_of(event.session_id):
            if watcher.front == FRONT and watcher.gateway == self.domain:
                self._tell(watcher.address, watcher.language, event)

    def _tell(self, jid: str, language: str, event: SessionEvent) -> None:
        """``language``: the one recorded with the watcher, unless the JID spoke since."""
        t = translator(self._languages.get(jid) or language or DEFAULT_LANGUAGE)
        text = render(event, t, self.decimals, self.currency)
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
        self.progress.flush_soon()

    def _flush(self) -> None:
        outbox, self._outbox = self._outbox, {}
        for jid, messages in outbox.items():
            for _, texts in messages:
                try:
                    self.send(jid, "\n".join(texts))
                except Exception:
                    log.failure("cannot send a chat message to {jid}", jid=jid)
