"""The SMS command grammar: one text message -> one :class:`SmsRequest`, or an :class:`SmsError`.

People start callbacks by SMS as they did with VoipSwitch's SMS callback: a message of
tokens, each a one-letter prefix and its value, in any order, prefixes in any case::

    U.<username>    P.<password>     the account, when the sender's number is not one
                                       of its verified caller IDs
    D.<destination> O.<source>       call the source (by default the sender), then the
                                       destination
    B.<name>        N<k>             the destination is the phonebook entry called
                                       <name>, or the entry numbered <k> (from 1; N.<k>
                                       is read the same)
    R.<number>      register <number> as a caller ID (a one-time code is sent to it)
    I               the account's balance and last calls

For example (VoipSwitch's own)::

    U.callback P.pass D.48774417880 O.12345678
    U.callback P.pass R.48600316058
    B.office
    N2
    I

A message asks for one thing (:attr:`SmsRequest.kind`): a callback (``D.``, ``B.`` or
``N``, with ``O.`` if wanted), a registration (``R.``) or the information (``I``);
tokens of two of them together are refused (``conflicting_tokens``), and so are two
destinations (``D.`` with ``B.`` or ``N``, ``B.`` with ``N``). ``U.`` and ``P.`` go with
any of them. Each token may appear once.

Tokens are separated by whitespace; commas and semicolons (ASCII or full-width) count as
whitespace too, since phones insert them (``U.callback, P.pass; D.123``). So no value
can hold a space, a comma or a semicolon: ``D.+48 77 441 7880`` is not read as one
number (write ``D.+48774417880``; the groups of digits after it make the ``D.`` value
bad), and a password that holds one cannot be sent by SMS
(the account can still be reached by its verified caller ID). A word right after ``P.``
that is no token is taken for the rest of a password with a space in it and refused as
a bad ``P.`` value, never echoed.

Values keep their case and are kept as written: a leg (``D.``, ``O.``, ``R.``) must be
printable ASCII of at most :data:`callbackd.core.address.MAX_LENGTH` characters, like
a leg of the chat grammar, and the engine reads it with
:func:`callbackd.numbers.parse_address` later.

The chat grammar (:mod:`callbackd.core.chat`) works by SMS too: a message whose first
word, after any ``U.``/``P.`` tokens, is one of :data:`SMS_COMMANDS` is read by
:func:`callbackd.core.chat.parse_command`, and :attr:`SmsRequest.command` holds the
result::

    CALLBACK +4930123456 +923001234567 via MKS
    U.alice P.secret BALANCE

Those are the commands that make sense in a message that asks once and is answered:
a callback, and questions about the account. Steering a running session (``LIST``,
``ADD``, ``DEL``, ``HANGUP``) needs the conversation a chat has, the progress of an
SMS callback comes in replies of its own, and linking a chat address (``LINK``,
``UNLINK``) has ``R.`` as its SMS counterpart: they are refused (``not_by_sms``).

Every refusal is an :class:`SmsError` whose ``code`` is a message id of the catalogue
(one of :data:`ERROR_CODES`, sharing the chat grammar's ids where the same thing is
wrong) and whose ``params`` fill its placeholders; no error carries a password.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final

from callbackd.core.address import MAX_LENGTH as MAX_LEG
from callbackd.core.chat import (
    COMMANDS,
    MAX_MESSAGE,
    ChatCommand,
    CommandError,
    Help,
    _readable,  # the same characters are refused in both
    parse_command,
)

__all__ = [
    "ERROR_CODES",
    "KINDS",
    "MAX_BOOK_INDEX",
    "MAX_LEG",
    "MAX_MESSAGE",
    "MAX_VALUE",
    "SMS_COMMANDS",
    "SmsError",
    "SmsRequest",
    "parse_sms",
]

#: what a request can ask for (:attr:`SmsRequest.kind`)
KINDS: Final = ("callback", "register", "info", "chat")
#: the chat commands an SMS may carry; the others are refused with ``not_by_sms``
SMS_COMMANDS: Final = ("CALLBACK", "BALANCE", "STATUS", "HISTORY", "RATE", "LANG", "HELP")
#: the longest username, password or phonebook name, in characters
MAX_VALUE: Final = 128
#: the highest phonebook index ``N`` takes
MAX_BOOK_INDEX: Final = 999

#: every ``SmsError.code``, with the params each one carries
ERROR_CODES: Final = frozenset(
    {
        "empty",  # no params: nothing but whitespace and separators
        "too_long",  # limit: MAX_MESSAGE
        "bad_characters",  # no params: control characters, invalid UTF-8
        "unknown_token",  # token: the word as written, at most 20 characters
        "bad_value",  # token: the token's name ("D.", "N", "I")
        "duplicate_token",  # token: the token's name
        "conflicting_tokens",  # token, other: the names (or command word) of the two
        "missing_destination",  # no params: O. without D., B. or N
        "nothing_to_do",  # no params: nothing but U. and P.
        "not_by_sms",  # command: a chat command word SMS does not take
        # the chat grammar's, as CALLBACK ... and the other SMS_COMMANDS raise them
        "unknown_command",  # command: a HELP topic as written, at most 20 characters
        "missing_argument",  # command, usage
        "too_many_arguments",  # command, usage
        "bad_leg",  # leg: the text, at most 40 characters
        "unknown_language",  # code, choices
    }
)

# how much of the user's text an error shows
_SHOWN_WORD = 20
# phones put these between tokens; they separate like whitespace
_SEPARATORS = {ord(char): " " for char in ",;\uff0c\uff1b"}
# token names: those with a value after a dot, and the two of their own form
_VALUED = ("U.", "P.", "D.", "O.", "R.", "B.")
_INDEX = "N"
_INFO = "I"
_CREDENTIALS = ("U.", "P.")
_LEGS = ("D.", "O.", "R.")
# what a request asks for, by the token that asks it; tokens of two are refused
_ASKS = {
    "D.": "callback",
    "O.": "callback",
    "B.": "callback",
    _INDEX: "callback",
    "R.": "register",
    _INFO: "info",
}
_DESTINATIONS = ("D.", "B.", _INDEX)
# what a number written with spaces is split into: "D.+48 (77) 441-7880"
_NUMBER_PART = re.compile(r"[0-9()+\-./]+", re.ASCII)


class SmsError(CommandError):
    """Not a request; ``code`` is a message id of the catalogue, ``params`` its placeholders."""


@dataclass(frozen=True, slots=True)
class SmsRequest:
    """What one SMS asks for, with the values as written; the password stays out of ``repr``.

    A callback calls ``source`` first (None: no ``O.`` came, and the SMS front calls the
    sender), then ``destination``, the phonebook entry ``book_name`` or the one numbered
    ``book_index`` (from 1). ``register`` is the number of
    ``R.``, ``info`` is ``I``, ``command`` the chat command when the chat grammar was
    used (only ``username`` and ``password`` go with it).
    """

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    destination: str | None = None
    source: str | None = None
    register: str | None = None
    book_name: str | None = None
    book_index: int | None = None
    info: bool = False
    command: ChatCommand | None = None

    @property
    def kind(self) -> str:
        """One of :data:`KINDS`: "chat" with a command, else "register" with ``R.``,
        else "info" with ``I``, else "callback"."""
        if self.command is not None:
            return "chat"
        if self.register is not None:
            return "register"
        return "info" if self.info else "callback"


def parse_sms(text: str) -> SmsRequest:
    """Read one SMS text as a request; raise :class:`SmsError` if it is not one."""
    if len(text) > MAX_MESSAGE:
        raise SmsError("too_long", limit=str(MAX_MESSAGE))
    if not _readable(text):
        raise SmsError("bad_characters")
    tokens = text.translate(_SEPARATORS).split()
    if not tokens:
        raise SmsError("empty")
    leading = 0
    while leading < len(tokens) and _name(tokens[leading]) in _CREDENTIALS:
        leading += 1
    word = _chat_word(tokens[leading]) if leading < len(tokens) else None
    if word is not None:
        return _chat(tokens[:leading], word, tokens[leading + 1 :])
    return _request(_values(tokens))


def _name(token: str) -> str | None:
    """The name of the token ``token`` is written as ("D.", "N", "I"), if any.

    Names are ASCII in any case (so a dotless i is no ``I``); values may be any text.
    """
    prefix = token[:2]
    if prefix.isascii() and prefix.upper() in _VALUED:
        return prefix.upper()
    if not token.isascii():
        return None
    upper = token.upper()
    rest = upper[1:].removeprefix(".")
    if upper[0] == _INDEX and (rest.isdigit() or not rest):
        return _INDEX
    return _INFO if upper == _INFO else None


def _chat_word(token: str) -> str | None:
    """The chat command word ``token`` is, in any case; ASCII only, as the chat reads it."""
    word = token.upper()
    return word if token.isascii() and word in COMMANDS else None


def _values(tokens: list[str]) -> dict[str, str]:
    """Token name -> value as written, checked; raises on the first wrong token."""
    values: dict[str, str] = {}
    previous: str | None = None
    for token in tokens:
        name = _name(token)
        if name is None:
            raise _unknown(token, previous)
        if name in values:
            raise SmsError("duplicate_token", token=name)
        value = token[len(name) :]
        if not _valid(name, value):
            raise SmsError("bad_value", token=name)
        values[name] = value
        previous = name
    return values


def _unknown(token: str, previous: str | None) -> SmsError:
    """The error for a word that is no token, or the rest of a value written with spaces.

    After ``P.`` any word is taken for the rest of the password (and not shown), after a
    leg a group of digits for the rest of the number.
    """
    if previous == "P." or (previous in _LEGS and _NUMBER_PART.fullmatch(token)):
        return SmsError("bad_value", token=previous)
    return SmsError("unknown_token", token=token[:_SHOWN_WORD])


def _valid(name: str, value: str) -> bool:
    if name in _LEGS:
        return 0 < len(value) <= MAX_LEG and value.isascii() and value.isprintable()
    if name == _INDEX:
        digits = value.removeprefix(".")
        return digits.isdigit() and 1 <= int(digits) <= MAX_BOOK_INDEX
    if name == _INFO:
        return True
    return 0 < len(value) <= MAX_VALUE


def _request(values: dict[str, str]) -> SmsRequest:
    """The request the checked tokens make, if they ask for exactly one thing."""
    asked = [name for name in values if name in _ASKS]
    for position, later in enumerate(asked):
        for earlier in asked[:position]:
            both_destinations = earlier in _DESTINATIONS and later in _DESTINATIONS
            if _ASKS[earlier] != _ASKS[later] or both_destinations:
                raise SmsError("conflicting_tokens", token=earlier, other=later)
    if not asked:
        raise SmsError("nothing_to_do")
    if asked == ["O."]:
        raise SmsError("missing_destination")
    index = values.get(_INDEX)
    return SmsRequest(
        username=values.get("U."),
        password=values.get("P."),
        destination=values.get("D."),
        source=values.get("O."),
        register=values.get("R."),
        book_name=values.get("B."),
        book_index=None if index is None else int(index.removeprefix(".")),
        info=_INFO in values,
    )


def _chat(credentials: list[str], word: str, args: list[str]) -> SmsRequest:
    """The chat command ``word args`` after the credentials; no SMS token may follow it."""
    if word not in SMS_COMMANDS:
        raise SmsError("not_by_sms", command=word)
    for token in args:
        name = _name(token)
        if name is not None:
            raise SmsError("conflicting_tokens", token=word, other=name)
    values = _values(credentials)
    try:
        command = parse_command(" ".join([word, *args]))
    except CommandError as error:
        raise SmsError(error.code, **error.params) from None
    if isinstance(command, Help) and command.topic not in (None, *SMS_COMMANDS):
        raise SmsError("not_by_sms", command=command.topic)
    return SmsRequest(username=values.get("U."), password=values.get("P."), command=command)
