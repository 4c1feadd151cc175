"""The SMS front: one accepted inbound SMS in, its reply and progress SMS out.

:class:`SmsFront` handles an :class:`~callbackd.sms.inbound.InboundSms` the gateway's
webhook accepted and recorded (:mod:`callbackd.sms.resources`): it reads the text with
:func:`callbackd.core.sms.parse_sms`, authorises the sender, carries the request out
through the engine's public API and the store, and queues the reply in the store's
durable outbound queue (``queue(message_id, to, text, gateway)``: the
:class:`~callbackd.sms.outbound.SmsSender`'s ``send``), in the account's language
(English for a sender of no account), fitted to ``[sms] max_segments`` parts.

Authorisation: ``U.``/``P.`` when given (both, else ``sms.missing_username`` or
``sms.auth_failed``); otherwise the sender's number (read as E.164 with the billing
region) when it is a *verified* caller ID of an account.

Commands: a callback (``D.``, ``B.name``, ``N<k>``, the chat grammar's ``CALLBACK``)
calls ``O.`` (or the chat ``CALLBACK``'s source), by default the sender's own number as
VoipSwitch does; ``I`` answers the balance and the last calls; ``R.<number>`` issues a
one-time code (:meth:`IStore.issue_caller_id_code`) and sends it by SMS to
``<number>``. The number is trusted once an SMS *from* it carries the code: the whole
text is the code, or ``R`` and the code (``R 123456``); see
:data:`CODE_REPLY`. ``BALANCE``, ``STATUS``, ``HISTORY``, ``RATE`` and ``LANG`` are
answered as the chat front answers them
(:class:`~callbackd.fronts.commands.ChatCommands`); ``HELP`` gets the SMS help.

Limits (counters in the store, :meth:`IStore.count_hit`, so every daemon on one Redis
shares them): ``sender_limit`` messages per sender per ``sender_period`` are handled,
the next gets one ``sms.rate_limited`` reply and the ones after it none; wrong
passwords are counted per account and per sender, and after ``lockout_failures``
within ``lockout_period`` the password is not even checked (``sms.locked``); a sender
that is not authorised gets at most one reply per ``unknown_reply_period`` (unknown
sender, missing username, a wrong code, a lockout, an unreadable message): our replies
cannot be used to pump SMS to numbers that never asked.

Progress, per the account's ``sms_progress`` (``""``: ``[sms] progress``): ``all``
sends the words of every session event (:func:`callbackd.i18n.progress.render`), the
events of one reactor turn in one SMS; ``outcome`` only the answer
(``talking``), the failure that ends the call and the end with its charge; ``none``
nothing. It goes to the sender that started the session, recorded with the session as
an ``sms`` watcher (:class:`~callbackd.core.session.Watcher`: number, gateway, language,
mode; ``LANG`` records it again in the new language), and the daemon that runs the
session queues it, once, after a takeover too.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from callbackd.config import SmsConfig
from callbackd.core import chat
from callbackd.core.model import Account
from callbackd.core.session import DESTINATION, SOURCE, SessionEvent, Watcher
from callbackd.core.sms import SmsError, SmsRequest, parse_sms
from callbackd.core.smstext import fit
from callbackd.engine.errors import CallbackRefused
from callbackd.engine.manager import SessionManager
from callbackd.fronts.codes import CODE_DIGITS, new_caller_id_code
from callbackd.fronts.commands import ChatCommands
from callbackd.fronts.progress import ProgressBatcher
from callbackd.i18n import DEFAULT_LANGUAGE, Translator, translator
from callbackd.i18n.progress import render
from callbackd.numbers import read_phone
from callbackd.sms.inbound import InboundSms
from callbackd.store.interface import InvalidArgument, IStore, NoSuchAccount

__all__ = ["CODE_REPLY", "FRONT", "ORIGIN", "OUTCOME_EVENTS", "SmsFront", "reply_id"]

log = Logger(namespace="callbackd.sms")

#: the origin of the sessions SMS starts (the CDR's ``extra["origin"]``)
ORIGIN: Final = "sms"
#: the front of the watchers SMS records with a session (the numbers it tells)
FRONT: Final = "sms"
#: an SMS bringing a caller-ID code back: the digits alone, or after ``R``
CODE_REPLY: Final = re.compile(rf"\s*(?:[Rr][\s.:]\s*)?([0-9]{{{CODE_DIGITS}}})\s*")
#: the progress events ``outcome`` tells
OUTCOME_EVENTS: Final = frozenset({"talking", "leg_failed", "session_ended"})

#: queues an SMS: (message id, to, text, gateway name; "" for the default gateway)
Queue = Callable[[str, str, str, str], defer.Deferred[Any]]


def reply_id(key: str, n: int) -> str:
    """The outbound message id of the ``n``-th SMS an inbound message (``key``) causes:
    the same when a restart handles the message again, so it is sent once."""
    return f"sms-reply:{hashlib.sha256(key.encode()).hexdigest()[:32]}:{n}"


class _Reply(Exception):
    """Ends the handling with catalogue text ``msgid``; ``limited``: when the sender is
    not authorised (no account known for it), at most one such reply per period."""

    def __init__(self, msgid: str, *, limited: bool = False, **params: Any) -> None:
        super().__init__(msgid)
        self.msgid = msgid
        self.limited = limited
        self.params = params


@dataclass
class _Sender:
    """Who sent the message being handled, and where its replies go."""

    sms: InboundSms
    key: str
    gateway: str
    #: the sender as E.164, if it reads as a phone number
    number: str | None
    account: Account | None = None
    replies: int = 0

    @property
    def t(self) -> Translator:
        return translator(self.account.language if self.account else DEFAULT_LANGUAGE)


@dataclass
class _Lookups:
    """The store reads :meth:`SmsFront.prepare` started for a message."""

    #: the sender as E.164, if it reads as a phone number
    number: str | None
    #: its hits on the per-sender limit, this one included
    hits: defer.Deferred[int]
    #: the account whose verified caller ID it is
    owner: defer.Deferred[str | None]

    def discard(self) -> None:
        """Not handled after all (a retry, or not recorded): drop the answers."""
        for d in (self.hits, self.owner):
            d.addErrback(lambda failure: None)


@dataclass
class _Batch:
    """A watcher's texts of one session in this reactor turn: its next SMS."""

    watcher: Watcher
    first_seq: int
    texts: list[str] = field(default_factory=list)


class SmsFront:
    """SMS commands, replies and progress for one daemon (see the module's doc)."""

    def __init__(
        self,
        engine: SessionManager,
        store: IStore,
        clock: IReactorTime,
        queue: Queue,
        config: SmsConfig,
        *,
        decimals: int,
        currency: str = "",
        region: str = "DE",
        sends: Callable[[str], bool] = lambda gateway: False,
    ) -> None:
        self.engine = engine
        self.store: Any = store
        self.clock = clock
        self.queue = queue
        self.config = config
        self.decimals = decimals
        self.currency = currency
        self.region = region
        #: whether a gateway sends replies itself (else the default gateway does)
        self.sends = sends
        #: the chat grammar's answers to the chat commands SMS takes (BALANCE ...)
        self.chat = ChatCommands(engine, store, origin=ORIGIN, decimals=decimals, currency=currency)
        #: per (session, number) the progress texts of this turn
        self._batches: dict[tuple[str, str], _Batch] = {}
        self.progress = ProgressBatcher(
            engine, clock, tell=self._event, flush=self._flush, owned=True
        )
        #: dedupe keys being handled in this process
        self.handling: set[str] = set()

    # -- life cycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Hear the engine's session events (progress)."""
        self.progress.start()

    def stop(self) -> None:
        """Stop hearing them; the progress gathered goes to the queue now."""
        self.progress.stop()

    # -- handling -----------------------------------------------------------------------

    def prepare(self, sms: InboundSms) -> _Lookups:
        """Start the store reads every message needs: its sender's hit on the rate limit
        and the account whose verified caller ID the sender is.

        The webhook calls it as it records the message, so the reads travel with the
        record on the store's one connection and the handling waits for no further
        round trip (a gateway's retry, not handled again, is counted all the same).
        """
        number = read_phone(sms.sender, self.region)
        hits = self.store.count_hit(f"sms:sender:{sms.sender}", self.config.sender_period)
        owner = self.store.account_for_caller_id(number) if number else defer.succeed(None)
        return _Lookups(number, hits, owner)

    def handle(
        self, sms: InboundSms, key: str, lookups: _Lookups | None = None
    ) -> defer.Deferred[None]:
        """Handle the message recorded under ``key``; forget its record once handled.

        ``lookups``: what :meth:`prepare` started for it (started now if not given).
        Never errbacks: a failure is logged, told to the sender (``sms.failed``) and
        leaves the record pending, for the next start to handle again.
        """
        self.handling.add(key)
        lookups = lookups or self.prepare(sms)
        gateway = sms.gateway if self.sends(sms.gateway) else ""
        sender = _Sender(sms, key, gateway, lookups.number)
        d = defer.ensureDeferred(self._handle(sender, lookups))
        d.addCallbacks(self._handled, self._failed, (key,), errbackArgs=(sender,))
        d.addBoth(self._done, key)
        return d

    def _handled(self, result: object, key: str) -> defer.Deferred[None]:
        """Forget the handled message's record (its replies are queued by now)."""

        def not_forgotten(failure: Failure) -> None:
            log.warn("SMS {key} handled, still pending: {error}", key=key, error=str(failure.value))

        return self.store.inbound_sms_handled(key).addErrback(not_forgotten)

    def _done(self, result: object, key: str) -> None:
        self.handling.discard(key)

    def _failed(self, failure: Failure, sender: _Sender) -> defer.Deferred[Any] | None:
        log.failure(
            "SMS {key} from {sender} failed", failure, key=sender.key, sender=sender.sms.sender
        )
        if sender.account is None:
            return None
        return self._say(sender, sender.t.text("sms.failed")).addErrback(lambda _: None)

    async def _handle(self, sender: _Sender, lookups: _Lookups) -> None:
        sms = sender.sms
        hits = await lookups.hits
        owner = await lookups.owner
        if owner is not None:
            # the account of a registered phone; its language for errors too
            sender.account = await self.engine.account(owner)
        if hits > self.config.sender_limit:
            if hits == self.config.sender_limit + 1:
                # said once per window (not every message: a flood would flood the log)
                log.info("SMS from {sender}: rate limited", sender=sms.sender)
                await self._say(sender, sender.t.text("sms.rate_limited"))
            return
        try:
            text = await self._answer(sender)
        except SmsError as e:
            text = _error_text(sender.t, e)
            if sender.account is None:
                await self._limited(sender, text)
                return
        except _Reply as e:
            text = sender.t.text(e.msgid, **e.params)
            if e.limited and sender.account is None:
                await self._limited(sender, text)
                return
        except CallbackRefused as e:
            text = sender.t.text(e.code, **e.params) if e.code else str(e)
        await self._say(sender, text)

    async def _answer(self, sender: _Sender) -> str:
        """The reply to the message; raises SmsError and _Reply for the refusals."""
        code = CODE_REPLY.fullmatch(sender.sms.text)
        if code is not None and sender.number is not None:
            sender.account = None  # the code speaks for the account, not the phone
            return await self._confirm(sender, code.group(1))
        request = parse_sms(sender.sms.text)
        sender.account = await self._authorise(sender, request)
        if request.command is not None:
            return await self._command(sender, request.command)
        if request.register is not None:
            return await self._register(sender, request.register)
        if request.info:
            return await self._info(sender)
        destination = request.destination or await self._book(sender, request)
        return await self._callback(sender, request.source, destination, ())

    async def _authorise(self, sender: _Sender, request: SmsRequest) -> Account:
        """The account the message acts for: by U./P., else by the sender's caller ID."""
        if request.username is None:
            if request.password is not None:
                raise _Reply("sms.missing_username", limited=True)
            if sender.account is None:
                raise _Reply("sms.unknown_sender", limited=True)
            return sender.account
        sender.account = None  # credentials given: no caller ID speaks for them
        if request.password is None:
            raise _Reply("sms.auth_failed", limited=True)
        keys = (
            f"sms:pwfail:acct:{request.username.lower()}",
            f"sms:pwfail:from:{sender.sms.sender}",
        )
        for key in keys:
            if await self.store.hit_count(key) >= self.config.lockout_failures:
                raise _Reply("sms.locked", limited=True)
        try:
            right = await self.store.check_password(request.username, request.password)
        except InvalidArgument:
            right = False
        account = await self.engine.account(request.username) if right else None
        if account is None:
            for key in keys:
                await self.store.count_hit(key, self.config.lockout_period)
            log.info("SMS from {sender}: wrong password for an account", sender=sender.sms.sender)
            raise _Reply("sms.auth_failed")
        await self.store.clear_hits(keys[1])
        return account

    async def _confirm(self, sender: _Sender, code: str) -> str:
        assert sender.number is not None
        username = await self.store.confirm_caller_id_code(sender.number, code)
        account = await self.engine.account(username) if username else None
        if account is None:
            raise _Reply("sms.code_wrong", limited=True)
        sender.account = account
        log.info(
            "caller ID {number} verified for {username}", number=sender.number, username=username
        )
        return sender.t.text("sms.code_confirmed", number=sender.number)

    async def _book(self, sender: _Sender, request: SmsRequest) -> str:
        """The address of the phonebook entry ``B.name`` or ``N<k>`` names."""
        assert sender.account is not None
        entries = await self.store.get_phonebook(sender.account.username)
        if request.book_name is not None:
            wanted = request.book_name.casefold()
            found = [e for e in entries if e.name.casefold() == wanted]
            shown = request.book_name
        else:
            found = [e for e in entries if e.index == request.book_index]
            shown = f"N{request.book_index}"
        if not found:
            raise _Reply("sms.no_phonebook_entry", entry=shown)
        return found[0].address

    async def _callback(
        self, sender: _Sender, source: str | None, destination: str, via: tuple[str, ...]
    ) -> str:
        assert sender.account is not None
        source = source or sender.number
        if not source:
            raise _Reply("sms.no_source")
        # at most one callback per message: its record goes before the call is placed
        # (sent down the store's connection ahead of the engine's writes, not awaited),
        # so a daemon dying from here on leaves nothing that a restart would call again
        self.store.inbound_sms_handled(sender.key).addErrback(
            lambda failure: log.warn("SMS {key} still pending", key=sender.key)
        )
        session_id = await self.engine.start_callback(
            sender.account.username,
            source,
            destination,
            via,
            origin=ORIGIN,
            watcher=self._watcher(sender),
        )
        # (the engine's progress log tells of the session: no line of our own per call)
        return sender.t.text(
            "sms.callback_started", session=session_id, source=source, destination=destination
        )

    async def _register(self, sender: _Sender, written: str) -> str:
        assert sender.account is not None
        number = _phone(written, self.region)
        if number is None:
            raise _Reply("sms.bad_number", number=written)
        code = new_caller_id_code()
        try:
            await self.store.issue_caller_id_code(
                sender.account.username,
                number,
                code,
                self.config.code_ttl,
                self.config.code_attempts,
            )
        except (InvalidArgument, NoSuchAccount):
            raise _Reply("sms.number_taken", number=number) from None
        t = sender.t
        text = t.text("sms.code_text", code=code, valid=t.duration(int(self.config.code_ttl)))
        sender.replies += 1
        await self.queue(reply_id(sender.key, sender.replies), number, text, sender.gateway)
        log.info(
            "caller-ID code for {username} sent to {number}",
            username=sender.account.username,
            number=number,
        )
        return t.text("sms.code_sent", number=number)

    def _watcher(self, sender: _Sender) -> Watcher | None:
        """The sender as its sessions' watcher (None: its account wants no progress)."""
        assert sender.account is not None
        mode = sender.account.sms_progress or self.config.progress
        if mode == "none":
            return None
        return Watcher(FRONT, sender.sms.sender, sender.account.language, sender.gateway, mode)

    async def _info(self, sender: _Sender) -> str:
        assert sender.account is not None
        address = f"sms:{sender.sms.sender}"
        balance = await self.chat.answer(address, sender.account, chat.Balance())
        history = await self.chat.answer(address, sender.account, chat.History())
        return f"{balance}\n{history}"

    async def _command(self, sender: _Sender, command: chat.ChatCommand) -> str:
        assert sender.account is not None
        if isinstance(command, chat.Callback):
            return await self._callback(sender, command.source, command.destination, command.via)
        if isinstance(command, chat.Help):
            return sender.t.text("sms.help")
        address = f"sms:{sender.sms.sender}"
        return await self.chat.answer(address, sender.account, command, self._watcher(sender))

    # -- replies ------------------------------------------------------------------------

    def _fit(self, text: str) -> str:
        return "".join(fit(text, self.config.max_segments))

    def _say(self, sender: _Sender, text: str) -> defer.Deferred[Any]:
        """Queue ``text`` to the sender, the message's next reply."""
        sender.replies += 1
        message_id = reply_id(sender.key, sender.replies)
        return self.queue(message_id, sender.sms.sender, self._fit(text), sender.gateway)

    async def _limited(self, sender: _Sender, text: str) -> None:
        """A reply to a sender not authorised: the first of its period only."""
        key = f"sms:replied:{sender.sms.sender}"
        if await self.store.count_hit(key, self.config.unknown_reply_period) == 1:
            await self._say(sender, text)

    # -- progress -----------------------------------------------------------------------

    def _event(self, event: SessionEvent) -> None:
        """A session event of this daemon's: its words for its SMS watchers' turn's SMS."""
        session_id = event.session_id
        for watcher in self.engine.watchers_of(session_id):
            if watcher.front != FRONT:
                continue
            text = self._words(event, watcher)
            if not text:
                continue
            key = (session_id, watcher.address)
            batch = self._batches.get(key)
            if batch is None:
                batch = self._batches[key] = _Batch(watcher, event.seq)
            batch.texts.append(text)
            self.progress.flush_soon()

    def _words(self, event: SessionEvent, watcher: Watcher) -> str:
        t = translator(watcher.language or DEFAULT_LANGUAGE)
        if watcher.mode == "outcome" and not _is_outcome(event):
            return ""
        text = render(event, t, self.decimals, self.currency)
        if event.kind == "session_ended" and event.cost:
            cost = t.money(event.cost, self.decimals, self.currency)
            text = f"{text}\n{t.text('sms.charged', cost=cost)}"
        return text

    def _flush(self) -> None:
        batches, self._batches = self._batches, {}
        for (session_id, to), batch in batches.items():
            # one id per session, number and first event: the same SMS if queued again
            digest = hashlib.sha256(to.encode()).hexdigest()[:12]
            message_id = f"sms-progress:{session_id}:{digest}:{batch.first_seq}"
            text = self._fit("\n".join(batch.texts))
            d = self.queue(message_id, to, text, batch.watcher.gateway)
            d.addErrback(lambda f: log.failure("cannot queue SMS progress", f))


def _is_outcome(event: SessionEvent) -> bool:
    """Whether ``outcome`` tells the event: the answer, the failure that ends, the end."""
    if event.kind not in OUTCOME_EVENTS:
        return False
    if event.kind == "leg_failed":
        return not event.next_provider and event.role in (SOURCE, DESTINATION)
    return True


def _error_text(t: Translator, error: SmsError) -> str:
    """An SmsError's text: the SMS grammar's own, else the chat grammar's it shares."""
    msgid = f"sms.error.{error.code}"
    return t.text(msgid if t.has(msgid) else f"error.{error.code}", **error.params)


def _phone(written: str, region: str) -> str | None:
    digits = re.sub(r"[\s\-.()/]", "", written)
    if not re.fullmatch(r"\+?[0-9]{3,20}", digits):
        return None
    return read_phone(digits, region)
