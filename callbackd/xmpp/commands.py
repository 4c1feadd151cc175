"""What a chat message asks for, and the one answer it gets.

:class:`ChatDispatcher` is the :class:`~callbackd.xmpp.handlers.MessageHandler`'s
dispatcher: ``dispatcher(jid, text)`` fires with the reply text (or None). It finds
the account linked to the sender's bare JID (:meth:`IStore.account_for_jid`),
parses the text with the chat grammar and answers in the account's language:

- ``LINK <username> <password>`` links the JID to the account when the password
  is right. Wrong attempts are throttled per JID and per account, and the reply
  never says whether the account exists.
- ``UNLINK`` forgets the link; ``HELP`` lists the commands.
- An unlinked JID gets a short explanation for anything else, and nothing is done.
- The engine's commands (``CALLBACK``, ``LIST``, ``ADD``, ``DEL``, ``HANGUP``,
  ``STATUS``, ...) are not wired yet: they answer "not available yet".

The grammar is :func:`callbackd.core.chat.parse_command` (raising
``CommandError(code, **params)``) and the texts come from the message catalogue,
``callbackd.i18n.translator(language).text(msgid, **params)``. Until both are
part of the package, a small local fallback stands in for each (marked
FALLBACK below); it knows LINK, UNLINK and HELP only, in English.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from callbackd.store.interface import InvalidArgument, StoreUnavailable

__all__ = ["ChatDispatcher", "Throttle"]

log = Logger(namespace="callbackd.xmpp.commands")


# --- FALLBACK: stands in for callbackd.core.chat until it is merged ------------------------


@dataclass(frozen=True)
class _FallbackCommand:
    """FALLBACK for ``callbackd.core.chat.ChatCommand``: the verb and its words."""

    name: str
    args: tuple[str, ...] = ()


class _FallbackCommandError(Exception):
    """FALLBACK for ``callbackd.core.chat.CommandError(code, **params)``."""

    def __init__(self, code: str, **params: Any) -> None:
        super().__init__(code)
        self.code = code
        self.params = params


_FALLBACK_ARITY = {"LINK": 2, "UNLINK": 0, "HELP": 0}
#: the engine's commands, recognised but not parsed by the fallback
_FALLBACK_LATER = {"CALLBACK", "LIST", "ADD", "DEL", "HANGUP", "BALANCE", "RATE", "STATUS"}
_FALLBACK_LATER |= {"HISTORY", "LANG"}


def _verb(text: str) -> str:
    """The first word of ``text``, upper-cased ("" if there is none)."""
    words = text.split(None, 1)
    return words[0].upper() if words else ""


def _fallback_parse(text: str) -> _FallbackCommand:
    """FALLBACK for ``callbackd.core.chat.parse_command``: LINK, UNLINK and HELP only.

    A LINK password is the rest of the line (it may contain spaces).
    """
    words = text.split(None, 2) if _verb(text) == "LINK" else text.split()
    if not words:
        raise _FallbackCommandError("empty")
    name, args = words[0].upper(), tuple(words[1:])
    if name in _FALLBACK_LATER:
        return _FallbackCommand(name, args)
    if name not in _FALLBACK_ARITY:
        raise _FallbackCommandError("unknown_command", command=words[0][:20])
    if len(args) != _FALLBACK_ARITY[name]:
        raise _FallbackCommandError("usage", command=name)
    return _FallbackCommand(name, args)


#: FALLBACK for the catalogue's English texts (msgid -> text with {placeholders})
_FALLBACK_TEXTS = {
    "empty": "Send HELP for the commands.",
    "unknown_command": "Unknown command {command}. Send HELP for the commands.",
    "usage": "Wrong use of {command}. Send HELP for the commands.",
    "help": (
        "Commands: LINK <username> <password>, UNLINK, HELP;"
        " CALLBACK <from> <to>, LIST, ADD, DEL, HANGUP, STATUS, BALANCE (coming)."
    ),
    "not_linked": (
        "This address is not linked to an account. Send LINK <username> <password> first."
    ),
    "linked": "Linked to account {username}.",
    "link_refused": "Wrong username or password.",
    "link_throttled": "Too many wrong attempts. Try again in a few minutes.",
    "unlinked": "Unlinked. Send LINK <username> <password> to link again.",
    "not_available": "{command} is not available yet.",
    "too_long": "That message is too long.",
    "unavailable": "The service is busy; try again in a minute.",
}


class _FallbackTranslator:
    """FALLBACK for ``callbackd.i18n.translator(language)``: English only."""

    def text(self, msgid: str, **params: Any) -> str:
        return _FALLBACK_TEXTS[msgid].format(**params)


def _load(module: str, name: str, fallback: Any) -> Any:
    """``module.name`` once that module exists, else the local fallback."""
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return fallback


# --- the dispatcher -------------------------------------------------------------------------


class Throttle:
    """At most ``limit`` failures per key within ``window`` seconds."""

    def __init__(self, clock: IReactorTime, limit: int, window: float) -> None:
        self.clock = clock
        self.limit = limit
        self.window = window
        self._failures: dict[str, list[float]] = {}

    def blocked(self, key: str) -> bool:
        """Whether ``key`` has used up its failures."""
        return len(self._recent(key)) >= self.limit

    def failed(self, key: str) -> None:
        """Count one failure of ``key``."""
        self._recent(key).append(self.clock.seconds())

    def _recent(self, key: str) -> list[float]:
        since = self.clock.seconds() - self.window
        recent = [t for t in self._failures.get(key, ()) if t > since]
        if recent:
            self._failures[key] = recent
        else:
            self._failures.pop(key, None)
            recent = self._failures.setdefault(key, [])
        return recent


#: what a JID not linked to any account may send
_UNLINKED_COMMANDS = frozenset({"LINK", "HELP"})


class ChatDispatcher:
    """``dispatcher(jid, text)``: the reply to one chat message from ``jid``."""

    def __init__(
        self,
        store: Any,
        engine: Any,
        *,
        clock: IReactorTime,
        default_language: str = "en",
        parse: Callable[[str], Any] | None = None,
        translator: Callable[[str], Any] | None = None,
        command_error: type[Exception] | None = None,
    ) -> None:
        self.store = store
        self.engine = engine
        self.default_language = default_language
        self.parse = parse or _load("callbackd.core.chat", "parse_command", _fallback_parse)
        self.command_error = command_error or _load(
            "callbackd.core.chat", "CommandError", _FallbackCommandError
        )
        self.translator = translator or _load(
            "callbackd.i18n", "translator", lambda language: _FallbackTranslator()
        )
        #: wrong LINK passwords: 5 per JID and 10 per account in 10 minutes
        self.jid_throttle = Throttle(clock, 5, 600.0)
        self.account_throttle = Throttle(clock, 10, 600.0)

    def __call__(self, jid: str, text: str) -> defer.Deferred[str | None]:
        return defer.ensureDeferred(self.handle(jid, text))

    def too_long(self, jid: str) -> str:
        """The reply to a message longer than the handler takes."""
        return self._text(self.default_language, "too_long")

    async def handle(self, jid: str, text: str) -> str | None:
        """The reply to ``text`` from ``jid`` (a full or bare JID)."""
        try:
            username = await self.store.account_for_jid(jid)
            language = await self._language(username)
        except StoreUnavailable:
            return self._text(self.default_language, "unavailable")
        except InvalidArgument:
            return None  # not a user's JID: nothing to answer
        if username is None and _verb(text) not in _UNLINKED_COMMANDS:
            return self._text(language, "not_linked")
        try:
            command = self.parse(text)
        except self.command_error as e:
            return self._text(language, getattr(e, "code", ""), **getattr(e, "params", {}))
        name = command.name
        if name == "HELP":
            return self._text(language, "help")
        if name == "LINK":
            return await self._link(jid, language, *command.args)
        if username is None:
            return self._text(language, "not_linked")
        if name == "UNLINK":
            await self.store.unlink_jid(jid)
            return self._text(language, "unlinked")
        # AFTER THE MERGE: the engine's commands (CALLBACK, LIST, ADD, DEL, HANGUP, ...)
        return self._text(language, "not_available", command=name)

    async def _link(self, jid: str, language: str, username: str, password: str) -> str:
        bare = jid.partition("/")[0].lower()
        if self.jid_throttle.blocked(bare) or self.account_throttle.blocked(username):
            return self._text(language, "link_throttled")
        try:
            ok = await self.store.check_password(username, password)
        except InvalidArgument:
            ok = False  # a malformed username: the same answer as a wrong password
        if not ok:
            self.jid_throttle.failed(bare)
            self.account_throttle.failed(username)
            log.info("wrong LINK password from {jid}", jid=bare)
            return self._text(language, "link_refused")
        await self.store.link_jid(jid, username)
        log.info("{jid} linked to account {username}", jid=bare, username=username)
        account = await self.store.get_account(username)
        return self._text(account.language if account else language, "linked", username=username)

    async def _language(self, username: str | None) -> str:
        if username is None:
            return self.default_language
        account = await self.store.get_account(username)
        return account.language if account is not None else self.default_language

    def _text(self, language: str, msgid: str, **params: Any) -> str:
        text: str = self.translator(language).text(msgid, **params)
        return text
