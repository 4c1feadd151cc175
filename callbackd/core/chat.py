"""The chat command grammar: one text message -> one command, or a :class:`CommandError`.

Users steer callbacks by chatting with the service, as GTalk2VoIP's users did from
Google Talk: one command per message, command words and the ``via`` keyword in any
case, tokens separated by any amount of whitespace::

    CALLBACK <source> <destination> [via <provider> [<provider>]]
    CALLBACK <destination>               the source is the account's default number
    LIST                                 the connected legs and their providers
    ADD <leg> [via <provider>]           call one more party into the running call
    ADD <leg> <provider>                 the same, in GTalk2VoIP's own form
    DEL <leg>                            drop an additional leg, by address or by the
    DEL <index>                            number LIST shows it with
    HANGUP                               end the whole session, every leg
    BALANCE  STATUS  HISTORY             the account's balance, the session, past calls
    RATE <leg>                           the price per minute of calling a leg
    LANG <code>                          replies in en, es, fr, vi or zh
    HELP [<command>]                     usage
    LINK <username> <password>           link this chat address to an account
    UNLINK                               undo it

The providers after ``via`` go one per leg, in GTalk2VoIP's words: "provider1 is a
provider name which will be used to deliver call to SourceLeg, provider2 is a provider
name that is to be used to call to DestinationLeg"; a leg without one is called
through the best rated provider first, then the next. ``CALLBACK <destination> via A``
calls the default number through ``A``. For example::

    CALLBACK +4930123456 +923001234567 via MKS AVANGARD
    callback   sip:alice@example.org    gtalk:bob@gmail.com
    ADD +15551230000 PROXICOM
    del 3

Legs (``+4930123456``, ``phone:4930123456``, ``sip:user@host``, ``xmpp:`` or
``gtalk:user@domain``, ``msn:``, ``yahoo:``) are kept as the text the user wrote: the
engine reads them with :func:`callbackd.numbers.parse_address` and refuses bad ones
with its own reply. The grammar only refuses what can never be a leg: more than
:data:`callbackd.core.address.MAX_LENGTH` characters, or anything but printable ASCII
(whitespace cannot be inside a leg, since it separates tokens). ``via`` is always the
keyword, never a leg. A ``DEL`` target of one to three digits, perhaps after a minus,
is an index (from 1; ``0`` and negatives are refused), anything longer a leg, so that
``DEL 030123456`` names a national number.

Every refusal is a :class:`CommandError` whose ``code`` is a message id of the
catalogue (one of :data:`ERROR_CODES`) and whose ``params`` fill its placeholders; no
error carries the rest of the message, so a password is never echoed. Message text
that arrived as invalid UTF-8 (lone surrogates), control characters other than tab
and line breaks, and other unprintable characters are refused whole.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, TypeAlias

from callbackd.core.address import MAX_LENGTH as MAX_LEG

__all__ = [
    "COMMANDS",
    "ERROR_CODES",
    "LANGUAGES",
    "MAX_LEG",
    "MAX_MESSAGE",
    "USAGE",
    "Add",
    "Balance",
    "Callback",
    "ChatCommand",
    "CommandError",
    "Delete",
    "Help",
    "History",
    "Hangup",
    "Language",
    "Link",
    "ListLegs",
    "RateQuery",
    "Status",
    "Unlink",
    "parse_command",
]

#: the longest message body read as a command, in characters
MAX_MESSAGE: Final = 1000
#: the languages ``LANG`` offers (the catalogue's)
LANGUAGES: Final = ("en", "es", "fr", "vi", "zh")

#: the usage line of each command word, in the order HELP lists them
USAGE: Final[dict[str, str]] = {
    "CALLBACK": "CALLBACK [<source>] <destination> [via <provider> [<provider>]]",
    "LIST": "LIST",
    "ADD": "ADD <leg> [via <provider>]",
    "DEL": "DEL <leg or index>",
    "HANGUP": "HANGUP",
    "BALANCE": "BALANCE",
    "RATE": "RATE <leg>",
    "STATUS": "STATUS",
    "HISTORY": "HISTORY",
    "LANG": "LANG <" + "|".join(LANGUAGES) + ">",
    "HELP": "HELP [<command>]",
    "LINK": "LINK <username> <password>",
    "UNLINK": "UNLINK",
}
#: the command words
COMMANDS: Final = tuple(USAGE)

#: every ``CommandError.code``, with the params each one carries
ERROR_CODES: Final = frozenset(
    {
        "empty",  # no params: nothing but whitespace
        "too_long",  # limit: MAX_MESSAGE
        "bad_characters",  # no params: control characters, invalid UTF-8
        "unknown_command",  # command: the word as written, at most 20 characters
        "missing_argument",  # command, usage
        "too_many_arguments",  # command, usage
        "bad_leg",  # leg: the text, at most 40 characters
        "bad_index",  # index: the DEL target as written
        "unknown_language",  # code: as written, at most 20 characters; choices
    }
)

# how much of the user's text an error shows
_SHOWN_WORD = 20
_SHOWN_LEG = 40
# a leg is printable ASCII without spaces; whether it is an address is the engine's call
_LEG = re.compile(r"[!-~]+", re.ASCII)
# a DEL target that is an index (as LIST numbers legs) rather than an address
_INDEX = re.compile(r"-?[0-9]{1,3}", re.ASCII)
# the control characters a message may hold: they separate tokens like spaces
_ALLOWED_CONTROLS = "\t\n\r"
_LAST_CONTROL = "\x9f"


class CommandError(ValueError):
    """Not a command; ``code`` is a message id of the catalogue, ``params`` its placeholders."""

    def __init__(self, code: str, /, **params: str) -> None:
        # positional-only: ``unknown_language`` has a placeholder named ``code`` too
        super().__init__(code, params)
        self.code = code
        self.params = params


@dataclass(frozen=True, slots=True)
class Callback:
    """Call ``source`` (None: the account's default number), then ``destination``.

    ``via`` names providers per leg in that order (source, then destination).
    """

    source: str | None
    destination: str
    via: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ListLegs:
    """List the session's connected legs with their providers."""


@dataclass(frozen=True, slots=True)
class Add:
    """Call one more party into the running session, through ``via`` if given."""

    leg: str
    via: str | None = None


@dataclass(frozen=True, slots=True)
class Delete:
    """Drop an additional leg: ``target`` is an address as written or an index ("2")."""

    target: str


@dataclass(frozen=True, slots=True)
class Hangup:
    """End the whole session."""


@dataclass(frozen=True, slots=True)
class Balance:
    """Show the account's balance."""


@dataclass(frozen=True, slots=True)
class RateQuery:
    """Show the price per minute of calling ``leg``."""

    leg: str


@dataclass(frozen=True, slots=True)
class Status:
    """Show the state of the live session."""


@dataclass(frozen=True, slots=True)
class History:
    """Show the account's last calls."""


@dataclass(frozen=True, slots=True)
class Language:
    """Reply in language ``code`` (one of :data:`LANGUAGES`) from now on."""

    code: str


@dataclass(frozen=True, slots=True)
class Help:
    """Show usage: of every command, or of ``topic`` (a command word, upper case)."""

    topic: str | None = None


@dataclass(frozen=True, slots=True)
class Link:
    """Link the chat address to an account; the password stays out of ``repr``."""

    username: str
    password: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class Unlink:
    """Unlink the chat address from its account."""


ChatCommand: TypeAlias = (
    Callback
    | ListLegs
    | Add
    | Delete
    | Hangup
    | Balance
    | RateQuery
    | Status
    | History
    | Language
    | Help
    | Link
    | Unlink
)


def parse_command(text: str) -> ChatCommand:
    """Read one chat message as a command; raise :class:`CommandError` if it is not one."""
    if len(text) > MAX_MESSAGE:
        raise CommandError("too_long", limit=str(MAX_MESSAGE))
    if not _readable(text):
        raise CommandError("bad_characters")
    tokens = text.split()
    if not tokens:
        raise CommandError("empty")
    word, args = tokens[0], tokens[1:]
    command = _command_word(word)
    if command is None:
        raise CommandError("unknown_command", command=word[:_SHOWN_WORD])
    return _PARSERS[command](command, args)


def _readable(text: str) -> bool:
    """Printable characters and whitespace only: no controls, surrogates, format marks."""
    return text.isprintable() or all(
        char.isprintable() or char in _ALLOWED_CONTROLS or (char.isspace() and char > _LAST_CONTROL)
        for char in text
    )


def _command_word(word: str) -> str | None:
    """The command a word names, in any case; ASCII only, so ``lıst`` is no ``LIST``."""
    name = word.upper()
    return name if word.isascii() and name in USAGE else None


def _is_via(token: str) -> bool:
    return token.isascii() and token.lower() == "via"


def _usage_error(code: str, command: str) -> CommandError:
    return CommandError(code, command=command, usage=USAGE[command])


def _arguments(command: str, args: list[str], least: int, most: int) -> None:
    """Check the number of arguments against the command's usage."""
    if len(args) < least:
        raise _usage_error("missing_argument", command)
    if len(args) > most:
        raise _usage_error("too_many_arguments", command)


def _split_via(command: str, args: list[str]) -> tuple[list[str], list[str]]:
    """(legs, providers) around the first ``via``; a ``via`` must name a provider."""
    for position, token in enumerate(args):
        if _is_via(token):
            if position == len(args) - 1:
                raise _usage_error("missing_argument", command)
            return args[:position], args[position + 1 :]
    return args, []


def _leg(text: str) -> str:
    """The leg as written, if it could be an address at all."""
    if len(text) > MAX_LEG or _LEG.fullmatch(text) is None or _is_via(text):
        raise CommandError("bad_leg", leg=text[:_SHOWN_LEG])
    return text


def _callback(command: str, args: list[str]) -> Callback:
    legs, providers = _split_via(command, args)
    _arguments(command, legs, 1, 2)
    _arguments(command, providers, 0, 2)
    source = _leg(legs[0]) if len(legs) == 2 else None
    return Callback(source, _leg(legs[-1]), tuple(providers))


def _add(command: str, args: list[str]) -> Add:
    legs, providers = _split_via(command, args)
    if not providers and len(legs) == 2:
        # GTalk2VoIP's "ADD AddLeg [Provider]"
        legs, providers = legs[:1], legs[1:]
    _arguments(command, legs, 1, 1)
    _arguments(command, providers, 0, 1)
    return Add(_leg(legs[0]), providers[0] if providers else None)


def _delete(command: str, args: list[str]) -> Delete:
    _arguments(command, args, 1, 1)
    target = args[0]
    if _INDEX.fullmatch(target) is None:
        return Delete(_leg(target))
    index = int(target)
    if index < 1:
        raise CommandError("bad_index", index=target)
    return Delete(str(index))


def _rate(command: str, args: list[str]) -> RateQuery:
    _arguments(command, args, 1, 1)
    return RateQuery(_leg(args[0]))


def _language(command: str, args: list[str]) -> Language:
    _arguments(command, args, 1, 1)
    code = args[0].lower()
    if code not in LANGUAGES:
        raise CommandError(
            "unknown_language", code=args[0][:_SHOWN_WORD], choices=", ".join(LANGUAGES)
        )
    return Language(code)


def _help(command: str, args: list[str]) -> Help:
    _arguments(command, args, 0, 1)
    if not args:
        return Help(None)
    topic = _command_word(args[0])
    if topic is None:
        raise CommandError("unknown_command", command=args[0][:_SHOWN_WORD])
    return Help(topic)


def _link(command: str, args: list[str]) -> Link:
    _arguments(command, args, 2, 2)
    return Link(args[0], args[1])


def _bare(make: Callable[[], ChatCommand]) -> Callable[[str, list[str]], ChatCommand]:
    """The parser of a command that takes no arguments."""

    def parse(command: str, args: list[str]) -> ChatCommand:
        _arguments(command, args, 0, 0)
        return make()

    return parse


_PARSERS: Final[dict[str, Callable[[str, list[str]], ChatCommand]]] = {
    "CALLBACK": _callback,
    "LIST": _bare(ListLegs),
    "ADD": _add,
    "DEL": _delete,
    "HANGUP": _bare(Hangup),
    "BALANCE": _bare(Balance),
    "RATE": _rate,
    "STATUS": _bare(Status),
    "HISTORY": _bare(History),
    "LANG": _language,
    "HELP": _help,
    "LINK": _link,
    "UNLINK": _bare(Unlink),
}
