"""Asterisk's say engine as pure functions: the sound files ``SAY NUMBER`` and
``SAY DIGITS`` play, by channel language.

A model of ``main/say.c`` of Asterisk 22, read from its source, not guessed:

* ``say_number_full`` picks the grammar by the first two letters of the channel's
  language, case-insensitively (``strncasecmp(language, "es", 2)``): ``en`` (but
  ``en_GB`` has its own), ``es`` (and the deprecated ``mx``), ``fr``, ``vi``, ``zh`` (and
  the deprecated ``tw``); a language with no grammar of its own is spoken as English.
  Vietnamese and Chinese have their own functions; neither falls back to English.
* :func:`number_files` follows ``ast_say_number_full_en`` (``digits/1``..``digits/19``,
  the tens, ``digits/hundred``, ``digits/thousand``, ``digits/million``, and
  ``digits/billion`` as Asterisk 22's ``SAYFILES(2001000001,number)`` test expects; no
  "and"), ``ast_say_number_full_es`` (``digits/1`` to ``digits/30`` as single words,
  ``digits/and`` between tens and units, ``digits/100`` "cien" alone and
  ``digits/100-and`` "ciento" before more, ``digits/200``..``digits/900``, ``digits/thousand``
  without a one before it, ``digits/million`` after ``digits/1M``, else
  ``digits/millions``; gender option ``f`` -> ``digits/1F``, ``m`` -> ``digits/1M``),
  ``ast_say_number_full_fr`` (``digits/et`` in 21, 31 .. 61 and 71, ``digits/60`` +
  10..19 for 70..79, ``digits/80`` + 1..19 for 80..99, ``digits/hundred`` and
  ``digits/thousand`` without a one before them; option ``f`` -> ``digits/1F``),
  ``ast_say_number_full_vi`` (``digits/1a``/``4a``/``5a`` "mốt"/"tư"/"lăm" after a ten,
  ``digits/odd`` "lẻ" for a zero ten, ``digits/0-hundred`` and ``digits/0-hundred-odd``
  after a thousand; nothing from 10**9 up) and ``ast_say_number_full_zh``
  (``digits/wan`` 10**4, ``digits/yi`` 10**8, ``digits/0`` for each gap of two or more
  digit places, found as say.c does by comparing the lengths of the decimal numbers;
  nothing from 10**9 up).
  Zero is ``ast_say_digits_full(0)``: ``digits/0`` in every language; a negative number
  starts with ``digits/minus``.
* :func:`digit_files` follows ``say_digit_str_full`` (``ast_say_digit_str``): ``0``-``9``
  -> ``digits/0``..``digits/9``, ``*`` -> ``digits/star``, ``#`` -> ``digits/pound``,
  ``-`` -> ``digits/minus``, any other character is skipped. Over AGI, ``SAY DIGITS``
  refuses (``520``) a string that does not start with a number (``sscanf("%30d")``), so
  ``*12`` cannot be said there although ``12*`` can.

Enumerations (``ast_say_enumeration``) are not modelled: no AGI command says one.
The English lists are the ones ``${SAYFILES(n,number)}`` returns on Asterisk 22 (its
test's 747, 1042 and 2001000001 are in ours).

The gender/option argument matters only where say.c reads it (``es``: ``f``/``m``,
``fr``: ``f``, by its first letter); ``en``, ``vi`` and ``zh`` ignore it. Numbers are C
``int``s: a number say.c calls "too big for me" (its language's :data:`LIMITS`) raises
:class:`SayError`, where Asterisk plays nothing and ``SAY NUMBER`` answers
``200 result=-1``.

The grammar is Asterisk's, including its rough edges (``es`` 21000 is "veintiuno mil",
``fr`` 2000000 is "deux million", ``zh`` 2 is "二" never "两"); the IVR's own prompts
(:mod:`callbackd.ivr.speech`) work around the ones that matter for money and time.
:data:`NEEDED_FILES` is the set of ``digits/*`` files each language plays for numbers
up to :data:`NEEDED_BOUND` and for keypad digits: what ``callbackd-admin make-sounds``
generates.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from typing import Final

__all__ = [
    "FILES",
    "LANGUAGES",
    "LIMITS",
    "NEEDED_BOUND",
    "NEEDED_FILES",
    "SayError",
    "digit_files",
    "number_files",
    "syntax",
]

#: the say.c grammars modelled here (the callbackd languages)
LANGUAGES: Final = ("en", "es", "fr", "vi", "zh")

#: numbers must be below this in absolute value (a C int for en and es; say.c gives up
#: at 10**9 in fr, vi and zh, and at 2147483640 in es)
LIMITS: Final = {"en": 2**31 - 1, "es": 2147483640, "fr": 10**9, "vi": 10**9, "zh": 10**9}

#: the largest number :data:`NEEDED_FILES` covers: money and durations up to ten million
NEEDED_BOUND: Final = 10**7

# The other grammars of say_number_full's dispatch, which are not modelled.
_OTHER_SYNTAXES = "cs cz da de ge gr ja he hu it ka nl no pl pt ru se th ur".split()
_ALIASES = {"mx": "es", "tw": "zh"}
# The gender letters each grammar reads from SAY NUMBER's option.
_GENDERS = {"es": "fm", "fr": "f"}


class SayError(ValueError):
    """A number or language the modelled say engine cannot speak."""


def syntax(language: str) -> str:
    """The say.c grammar (``en``, ``es``, ``fr``, ``vi``, ``zh``) Asterisk uses for a
    channel in ``language``; SayError for a grammar of say.c not modelled here."""
    if language[:5].lower() == "en_gb":
        raise SayError("en_GB has its own say.c grammar (with 'and'), not modelled")
    prefix = language[:2].lower()
    if prefix in LANGUAGES:
        return prefix
    if prefix in _ALIASES:
        return _ALIASES[prefix]
    if prefix in _OTHER_SYNTAXES:
        raise SayError(f"language {language!r} has a say.c grammar not modelled here")
    return "en"  # say.c: "Default to english"


def number_files(n: int, language: str, gender: str = "") -> list[str]:
    """The files ``SAY NUMBER n`` plays on a channel in ``language``, in order.

    ``gender`` is SAY NUMBER's optional fifth argument (``f``, ``m``, ...).
    """
    grammar = syntax(language)
    if not -LIMITS[grammar] < n < LIMITS[grammar]:
        raise SayError(f"number {n} is too big for the {grammar} say engine")
    if n == 0:
        return ["digits/0"]  # ast_say_digits_full(chan, 0, ...)
    out: list[str] = []
    if n < 0:
        out.append("digits/minus")
        n = -n
    if grammar == "en":
        out += _en(n)
    elif grammar == "es":
        out += _es(n, _gender(gender, _GENDERS["es"]))
    elif grammar == "fr":
        out += _fr(n, _gender(gender, _GENDERS["fr"]))
    elif grammar == "vi":
        out += _vi(n)
    else:
        out += _zh(n)
    return out


def digit_files(digits: str, language: str) -> list[str]:
    """The files ``SAY DIGITS`` (``ast_say_digit_str``) plays for ``digits``: one per
    digit, ``*`` and ``#`` and ``-``; other characters are skipped. The language picks
    the directory the files come from, not the names."""
    syntax(language)
    names = {"*": "digits/star", "#": "digits/pound", "-": "digits/minus"}
    return [
        f"digits/{c}" if c in "0123456789" else names[c]
        for c in digits
        if c in names or c in "0123456789"
    ]


def _gender(option: str, known: str) -> str:
    """The gender letter say.c reads from the option (its first letter), or ''."""
    first = option[:1].lower()
    return first if first in known else ""


def _tens(n: int) -> str:
    return f"digits/{n // 10 * 10}"


def _en(n: int) -> list[str]:
    """ast_say_number_full_en, n > 0."""
    out: list[str] = []
    for big, name in ((10**9, "billion"), (10**6, "million"), (1000, "thousand")):
        if n >= big:
            out += _en(n // big) + [f"digits/{name}"]
            n %= big
    if n >= 100:
        out += [f"digits/{n // 100}", "digits/hundred"]
        n %= 100
    if n >= 20:
        out.append(_tens(n))
        n %= 10
    if n:
        out.append(f"digits/{n}")
    return out


def _es(n: int, gender: str) -> list[str]:
    """ast_say_number_full_es, n > 0; gender 'f', 'm' or ''."""
    out: list[str] = []
    if n >= 10**6:
        millions = n // 10**6
        if millions == 1:
            out += _es(1, "m") + ["digits/million"]
        else:
            out += _es(millions, gender) + ["digits/millions"]
        n %= 10**6
    if n >= 2000:
        out += _es(n // 1000, gender) + ["digits/thousand"]
        n %= 1000
    elif n >= 1000:
        out.append("digits/thousand")
        n %= 1000
    if n == 100:
        return out + ["digits/100"]
    if n > 100:
        out.append("digits/100-and" if n < 200 else f"digits/{n // 100 * 100}")
        n %= 100
    if n >= 31:
        out.append(_tens(n))
        n %= 10
        if n:
            out.append("digits/and")
    if n == 1:
        out.append({"f": "digits/1F", "m": "digits/1M"}.get(gender, "digits/1"))
    elif n:
        out.append(f"digits/{n}")
    return out


def _fr(n: int, gender: str) -> list[str]:
    """ast_say_number_full_fr, n > 0; gender 'f' or ''."""
    out: list[str] = []
    if n >= 10**6:
        out += _fr(n // 10**6, gender) + ["digits/million"]
        n %= 10**6
    if n >= 2000:
        out += _fr(n // 1000, gender) + ["digits/thousand"]
        n %= 1000
    elif n >= 1000:
        out.append("digits/thousand")
        n -= 1000
    if n >= 200:
        out += [f"digits/{n // 100}", "digits/hundred"]
        n %= 100
    elif n >= 100:
        out.append("digits/hundred")
        n -= 100
    if n >= 80:
        out.append("digits/80")
        n -= 80
    elif n >= 70:
        out.append("digits/60")
        n -= 60
        if n == 11:
            out.append("digits/et")
    elif n >= 21:
        out.append(_tens(n))
        n %= 10
        if n == 1:
            out.append("digits/et")
    if n == 1:
        out.append("digits/1F" if gender == "f" else "digits/1")
    elif n:
        out.append(f"digits/{n}")
    return out


def _vi(n: int) -> list[str]:
    """ast_say_number_full_vi, n > 0."""
    out: list[str] = []
    if n >= 10**6:
        out += _vi(n // 10**6) + ["digits/million"]
        n %= 10**6
    if n >= 1000:
        out += _vi(n // 1000) + ["digits/thousand"]
        n %= 1000
        if 0 < n < 10:
            out.append("digits/0-hundred-odd")
        elif 0 < n < 100:
            out.append("digits/0-hundred")
    if n >= 100:
        out += [f"digits/{n // 100}", "digits/hundred"]
        n %= 100
        if 0 < n < 10:
            out.append("digits/odd")
    if n >= 20:
        out.append(_tens(n))
        n %= 10
        if n in (1, 4, 5):
            return out + [f"digits/{n}a"]
    if n:
        out.append(f"digits/{n}")
    return out


def _zh(n: int) -> list[str]:
    """ast_say_number_full_zh, n > 0: its loop, step by step, for the zero rule.

    say.c remembers the length of the decimal number it last spoke a place of
    (``last_length``) and says ``digits/0`` before the next place when the number left
    is two or more digits shorter (an ``int`` minus a ``size_t``: a negative difference
    would be huge, so it counts too). Each recursive call has its own memory.
    """
    out: list[str] = []
    last = 0
    pending: list[str] = []  # the hundred/thousand word still to say (playh/playt)

    def gap(length: int) -> bool:
        return last != 0 and (last - length > 1 or last - length < 0)

    while n or pending:
        if pending:
            out.append(pending.pop())
            continue
        length = len(str(n))
        if n < 1000 and gap(length):
            out.append("digits/0")  # playz; say.c then sets last_length to 0
            last = 0
            continue
        if n < 10:
            out.append(f"digits/{n}")
            n = 0
        elif n < 100:
            last = length
            out.append(_tens(n))
            n %= 10
        elif n < 1000:
            out.append(f"digits/{n // 100}")
            pending.append("digits/hundred")
            last = length
            n %= 100
        elif n < 10000:
            out.append(f"digits/{n // 1000}")
            pending.append("digits/thousand")
            last = length
            n %= 1000
        else:
            big, word = (10**8, "digits/yi") if n >= 10**8 else (10**4, "digits/wan")
            out += _zh(n // big) + [word]
            last = length
            n %= big
    return out


def _files(numbers: range | list[int], words: str) -> frozenset[str]:
    names = [str(n) for n in numbers] + words.split() + ["minus", "star", "pound"]
    return frozenset(f"digits/{name}" for name in names)


_TENS = list(range(20, 100, 10))

#: every file each grammar can play (numbers in range and keypad digits), as say.c
#: names them: written from say.c, and the tests check the functions against it
FILES: Final[Mapping[str, frozenset[str]]] = {
    "en": _files([*range(20), *_TENS], "hundred thousand million billion"),
    "es": _files(
        [*range(31), *range(40, 100, 10), *range(100, 1000, 100)],
        "1F 1M and 100-and thousand million millions",
    ),
    "fr": _files([*range(21), 30, 40, 50, 60, 80], "1F et hundred thousand million"),
    "vi": _files(
        [*range(20), *_TENS], "1a 4a 5a hundred odd 0-hundred 0-hundred-odd thousand million"
    ),
    "zh": _files([*range(10), *range(10, 100, 10)], "hundred thousand wan yi"),
}


def _cover(bound: int) -> Iterator[int]:
    """Numbers up to ``bound`` whose files together are every file any number up to
    ``bound`` plays: every grammar builds a big number from the files of a smaller one
    and a remainder below 10**4, so all n < 2100 and each leading part times each
    power of ten with a sample of remainders reach them all."""
    yield from range(-1, 2100)
    remainders = (0, 1, 5, 9, 10, 11, 15, 21, 45, 50, 71, 81, 99, 100, 101, 105, 999)
    for power in range(3, len(str(bound))):
        for lead in range(1, 100):
            for rest in remainders:
                n = lead * 10**power + rest
                if n <= bound:
                    yield n


@functools.cache
def _needed(language: str) -> frozenset[str]:
    genders = _GENDERS.get(language, "")
    files = {
        name
        for n in _cover(NEEDED_BOUND)
        for gender in ["", *genders]
        for name in number_files(n, language, gender)
    }
    files.update(digit_files("0123456789*#-", language))
    return frozenset(files)


class _Needed(Mapping[str, frozenset[str]]):
    """language -> the ``digits/*`` files its say engine plays up to NEEDED_BOUND,
    computed from the functions on first use."""

    def __getitem__(self, language: str) -> frozenset[str]:
        if language not in LANGUAGES:
            raise KeyError(language)
        return _needed(language)

    def __iter__(self) -> Iterator[str]:
        return iter(LANGUAGES)

    def __len__(self) -> int:
        return len(LANGUAGES)


#: language -> the digits/* files to record for numbers up to NEEDED_BOUND and keypad
#: digits (computed from :func:`number_files` and :func:`digit_files`)
NEEDED_FILES: Final[Mapping[str, frozenset[str]]] = _Needed()
