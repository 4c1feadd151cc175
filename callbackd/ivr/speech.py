"""Money and durations as the IVR speaks them, in each language: pure steps.

The IVR speaks with Asterisk's say engine (``SAY NUMBER``, ``SAY DIGITS``) and its own
prompt files (``STREAM FILE callbackd/<name>``), on a channel whose language is set, so
every file is looked up in that language's sound directory. A spoken phrase is a list
of steps::

    money_prompts(1050000, 5, "EUR", "es")
    # [Number(10, "m"), Play("callbackd/euros"), Play("callbackd/and"),
    #  Number(50, "m"), Play("callbackd/euro_cents")]   "diez euros y cincuenta céntimos"
    duration_prompts(3725, "fr")
    # [Number(1, "f"), Play("callbackd/hour"), Number(2, "f"), Play("callbackd/minutes"),
    #  Play("callbackd/and"), Number(5, "f"), Play("callbackd/seconds")]

:class:`Play` is ``STREAM FILE``, :class:`Number` is ``SAY NUMBER n "" gender`` and
:class:`Digits` is ``SAY DIGITS``; :func:`files_played` expands the steps into the
files Asterisk plays (with :mod:`callbackd.simulator.say`, the model of Asterisk's say
engine), which is what the tests and the simulated Asterisk check.

The grammar, per language:

* the count before a unit takes the unit's gender where the say engine reads one:
  Spanish masculine units ``m`` ("un dólar", "treinta y un minutos"), feminine ``f``
  ("una libra", "una hora"); French feminine ``f`` ("une minute", "vingt et une
  secondes", "une livre"); English, Vietnamese and Chinese have none;
* singular and plural: English and Spanish say the singular for 1 only ("0 dollars"),
  French for 0 and 1 ("zéro euro"); Vietnamese and Chinese have no plural (one file
  for every count);
* units and subunits are joined by ``callbackd/and`` ("and", "y", "et", "và"), and so is
  the last part of a duration; Chinese joins nothing ("十美元五十美分", "1小时2分钟5秒");
* Spanish says "veintiún" (``callbackd/twenty_one``) for a count of exactly 21 before a
  unit, where the say engine says "veintiuno";
* Chinese says 两, not the say engine's 二, for a count of exactly two before a unit
  (``callbackd/liang``), and speaks yuan as 元, 角 and 分 with 零 before 分 when there
  are yuan and no 角 ("十元零五分");
* an amount is truncated to whole subunits (a balance of 10.02604 EUR is "10 euros and
  2 cents": never more than there is); a negative one starts with ``digits/minus``.

Currencies: USD, EUR, GBP, CNY (two subunit digits) and VND (none). Another currency
is spoken as a number and its subunits after ``callbackd/point`` as digits, with no
unit word. Not covered: Spanish and French round millions ("un millón de euros", "un
million d'euros" want a "de"), and the say engine's own limits beyond those worked
around (Spanish "ciento veintiuno" before a noun, French "deux million").

Every ``callbackd/<name>`` file is spoken from the catalogue text ``ivr.<name>`` of
the channel's language (``callbackd-admin make-sounds``); :data:`PROMPT_FILES` lists the
ones this module plays.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

__all__ = [
    "CURRENCIES",
    "LANGUAGES",
    "PROMPT_FILES",
    "SPOKEN_LIMIT",
    "Digits",
    "Number",
    "Play",
    "Say",
    "duration_prompts",
    "files_played",
    "money_prompts",
]

#: the languages the IVR speaks
LANGUAGES: Final = ("en", "es", "fr", "vi", "zh")
#: counts must be below this: the numbers make-sounds records files for
#: (callbackd.simulator.say.NEEDED_BOUND; the say engine itself gives up at 10**9 in fr,
#: vi and zh, and zh needs digits/yi from 10**8)
SPOKEN_LIMIT: Final = 10**7


@dataclass(frozen=True)
class Play:
    """``STREAM FILE file``: one sound file (no extension), e.g. ``callbackd/dollars``."""

    file: str


@dataclass(frozen=True)
class Number:
    """``SAY NUMBER n`` with the say engine's gender option (``""``, ``"f"``, ``"m"``)."""

    n: int
    gender: str = ""


@dataclass(frozen=True)
class Digits:
    """``SAY DIGITS digits``: each digit on its own."""

    digits: str


#: one step of a spoken phrase
Say = Play | Number | Digits


@dataclass(frozen=True)
class _Unit:
    """A unit word: its singular and plural prompt names and its gender per language."""

    one: str
    many: str
    feminine_in: frozenset[str] = frozenset()


def _unit(one: str, many: str | None = None, feminine_in: str = "") -> _Unit:
    return _Unit(one, many or one, frozenset(feminine_in.split()))


@dataclass(frozen=True)
class _Currency:
    major: _Unit
    minor: _Unit | None
    digits: int  # subunit digits: 2 for cents, 0 for none


_CENT = _unit("cent", "cents")
#: ISO code -> the words spoken for it
CURRENCIES: Final = {
    "USD": _Currency(_unit("dollar", "dollars"), _CENT, 2),
    "EUR": _Currency(_unit("euro", "euros"), _unit("euro_cent", "euro_cents"), 2),
    "GBP": _Currency(_unit("pound", "pounds", "es fr"), _unit("penny", "pence"), 2),
    "CNY": _Currency(_unit("yuan", "yuans"), _unit("fen"), 2),
    "VND": _Currency(_unit("dong"), None, 0),
}
_HOUR = _unit("hour", "hours", "es fr")
_MINUTE = _unit("minute", "minutes", "fr")
_SECOND = _unit("second", "seconds", "fr")
_JIAO = _unit("jiao")  # Chinese only: 角, a tenth of a yuan

#: every prompt (``callbackd/<name>``) this module can play
PROMPT_FILES: Final = frozenset(
    f"callbackd/{name}"
    for unit in [
        *(c.major for c in CURRENCIES.values()),
        *(c.minor for c in CURRENCIES.values() if c.minor),
        _HOUR,
        _MINUTE,
        _SECOND,
        _JIAO,
    ]
    for name in (unit.one, unit.many)
) | {"callbackd/and", "callbackd/point", "callbackd/liang", "callbackd/twenty_one"}


def _check(language: str) -> None:
    if language not in LANGUAGES:
        raise ValueError(f"no IVR speech for language {language!r}; one of {LANGUAGES}")


def _count(n: int, unit: _Unit, language: str) -> list[Say]:
    """``n`` of ``unit``: the number, with the unit's gender, and the unit's word."""
    if n >= SPOKEN_LIMIT:
        raise ValueError(f"{n} {unit.many} is too many for the say engine")
    if language == "zh" and n == 2:
        number: Say = Play("callbackd/liang")
    elif language == "es" and n == 21:
        number = Play("callbackd/twenty_one")  # "veintiún": say.c's 21 is "veintiuno"
    elif language == "es":
        number = Number(n, "f" if "es" in unit.feminine_in else "m")
    elif language == "fr":
        number = Number(n, "f" if "fr" in unit.feminine_in else "")
    else:
        number = Number(n)
    singular = n == 1 or (n == 0 and language == "fr")
    plural = language in ("en", "es", "fr") and not singular
    return [number, Play(f"callbackd/{unit.many if plural else unit.one}")]


def _join(parts: list[list[Say]], language: str) -> list[Say]:
    """The parts in order, "and" before the last of two or more (none in Chinese)."""
    out: list[Say] = []
    for i, part in enumerate(parts):
        if i and i == len(parts) - 1 and language != "zh":
            out.append(Play("callbackd/and"))
        out += part
    return out


def money_prompts(amount_minor: int, decimals: int, currency: str, language: str) -> list[Say]:
    """How the IVR says ``amount_minor`` (integer units of ``10**-decimals`` of
    ``currency``) in ``language``: whole units and subunits, truncated to the subunit."""
    _check(language)
    if decimals < 0:
        raise ValueError(f"decimals must be >= 0, got {decimals}")
    spec = CURRENCIES.get(currency.upper())
    sub_digits = spec.digits if spec else 2
    major, rest = divmod(abs(amount_minor), 10**decimals)
    minor = rest * 10**sub_digits // 10**decimals
    sign: list[Say] = [Play("digits/minus")] if amount_minor < 0 and (major or minor) else []
    if spec is None:
        point: list[Say] = [Play("callbackd/point"), Digits(f"{minor:02d}")] if minor else []
        if major >= SPOKEN_LIMIT:
            raise ValueError(f"{major} is too big for the say engine")
        return sign + [Number(major)] + point
    if language == "zh" and currency.upper() == "CNY":
        return sign + _yuan(major, minor)
    parts = []
    if major or not minor:
        parts.append(_count(major, spec.major, language))
    if minor and spec.minor:
        parts.append(_count(minor, spec.minor, language))
    return sign + _join(parts, language)


def _yuan(yuan: int, fen: int) -> list[Say]:
    """Chinese yuan: 元, 角 and 分, with 零 for a missing 角 between the two others."""
    jiao, fen = divmod(fen, 10)
    out: list[Say] = []
    if yuan or not (jiao or fen):
        out += _count(yuan, CURRENCIES["CNY"].major, "zh")
    if jiao:
        out += _count(jiao, _JIAO, "zh")
    if fen:
        if yuan and not jiao:
            out.append(Play("digits/0"))
        out += _count(fen, CURRENCIES["CNY"].minor or _JIAO, "zh")
    return out


def duration_prompts(seconds: int, language: str) -> list[Say]:
    """How the IVR says a duration of ``seconds`` in ``language``: hours, minutes and
    seconds, the parts that are not zero ("0 seconds" for none)."""
    _check(language)
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative: {seconds}")
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [
        _count(n, unit, language)
        for n, unit in ((hours, _HOUR), (minutes, _MINUTE), (secs, _SECOND))
        if n
    ]
    return _join(parts or [_count(0, _SECOND, language)], language)


def files_played(steps: Iterable[Say], language: str) -> list[str]:
    """The sound files Asterisk plays for ``steps`` on a channel in ``language``."""
    from callbackd.simulator.say import digit_files, number_files

    files: list[str] = []
    for step in steps:
        if isinstance(step, Play):
            files.append(step.file)
        elif isinstance(step, Number):
            files += number_files(step.n, language, step.gender)
        else:
            files += digit_files(step.digits, language)
    return files
