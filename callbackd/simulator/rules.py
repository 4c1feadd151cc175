"""Callee behaviour of the simulated switch: who answers, who is busy, which trunk fails.

A rule maps a dialled number (by prefix, or exactly with a leading ``_``) or a trunk
(``@name``) to a :class:`Behaviour`. Rules are written as text so the daemon config
and the CLI can pass them::

    1555002=busy                 prefix 1555002 is busy
    1555001=answer:1             answers after 1 s and stays up
    1555004=answer:1,hangup:5    answers after 1 s, hangs up 5 s later
    _600=reject:21               exactly 600: rejected with cause 21
    @pakline=congestion          everything sent to trunk pakline: congestion
    1555@pakline=busy            prefix 1555 on trunk pakline only
    *=answer:2                   every other number
    1555007=answer:1,dtmf:#11    answers, then keys #11 once it is in a room
    @sim-pstn2=goto:sim-pstn     a second route: the number's sim-pstn behaviour
    1555006@sim-pstn2=goto:sim-pstn/1555001
                                 ... and 1555006XXXX becomes 1555001XXXX there

Behaviour terms (comma separated): ``answer[:s]``, ``hangup:s`` (after answer),
``busy[:s]``, ``congestion[:s]``, ``reject[:cause]``, ``ring`` (never answers),
``unavailable`` (the channel cannot be created), ``after:s`` (ring this long before
busy/congestion/reject), ``dtmf:digits`` (an answered callee keys these digits 2 s
after its leg joins a ConfBridge room), ``goto:context[/prefix]`` (the Local channel's
``;2`` half jumps to ``context``, its number's leading digits replaced by ``prefix``,
and behaves as that number there, like ``Goto(sim-pstn,1555001${EXTEN:7},1)``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

__all__ = [
    "DEFAULT_BEHAVIOUR",
    "DEFAULT_RULES",
    "Behaviour",
    "DialTarget",
    "Rule",
    "RuleError",
    "RuleSet",
    "parse_behaviour",
    "parse_dial_target",
    "parse_rule",
    "parse_rules",
]

KINDS = ("answer", "busy", "congestion", "reject", "ring", "unavailable", "goto")
_DIGITS = re.compile(r"^[0-9*#A-D]+$")
_CONTEXT = re.compile(r"^[A-Za-z0-9_.-]+$")


class RuleError(ValueError):
    """A simulator rule could not be parsed; the message says which and why."""


@dataclass(frozen=True)
class Behaviour:
    """What a callee does when called.

    ``delay`` is how long it rings before the outcome (answer, busy, ...);
    ``hangup_after`` is how long an answered call stays up (None: until hung up);
    ``cause`` is the hangup cause of a rejection; ``dtmf`` the digits an answered
    callee keys once in a room; ``goto`` is a ``goto`` rule's ``(context, prefix)``
    and, on a behaviour :meth:`RuleSet.behaviour_for` found by following one, the
    ``(context, exten)`` the callee ended in.
    """

    kind: str
    delay: float = 0.0
    hangup_after: float | None = None
    cause: int = 21
    dtmf: str = ""
    goto: tuple[str, str] | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise RuleError(f"unknown behaviour {self.kind!r}")

    @property
    def rings(self) -> bool:
        """True if the callee signals ringing before its outcome."""
        return self.kind == "ring" or self.delay > 0


DEFAULT_BEHAVIOUR = Behaviour("answer", delay=2.0)


@dataclass(frozen=True)
class Rule:
    """One rule: a number prefix (or exact number) and/or a trunk, and a behaviour."""

    behaviour: Behaviour
    prefix: str = ""
    exact: bool = False
    trunk: str | None = None
    text: str = ""

    def matches(self, number: str, trunk: str | None) -> bool:
        """True if this rule applies to ``number`` dialled through ``trunk``."""
        if self.trunk is not None and (trunk is None or trunk.lower() != self.trunk.lower()):
            return False
        if self.exact:
            return number == self.prefix
        return number.startswith(self.prefix)

    @property
    def rank(self) -> tuple[int, int, int]:
        """Sort key: trunk rules first, then exact numbers, then longer prefixes."""
        return (self.trunk is not None, self.exact, len(self.prefix))


def _seconds(term: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise RuleError(f"{term}: expected seconds, got {raw!r}") from None
    if not (value >= 0 and value < 10**7):
        raise RuleError(f"{term}: seconds must be between 0 and 10000000, got {raw!r}")
    return value


def parse_behaviour(text: str) -> Behaviour:
    """Parse ``answer:1,hangup:5``-style behaviour text."""
    kind: str | None = None
    delay = 0.0
    hangup_after: float | None = None
    cause = 21
    dtmf = ""
    goto: tuple[str, str] | None = None
    for term in (t.strip() for t in text.split(",")):
        name, _, arg = term.partition(":")
        name = name.strip().lower()
        arg = arg.strip()
        if name in ("noanswer", "ringing"):
            name = "ring"
        if name in KINDS:
            if kind is not None:
                raise RuleError(f"{text!r}: two outcomes ({kind} and {name})")
            kind = name
            if arg and name in ("answer", "busy", "congestion"):
                delay = _seconds(name, arg)
            elif arg and name == "reject":
                if not arg.isdigit() or not 0 < int(arg) < 128:
                    raise RuleError(f"reject: cause must be 1-127, got {arg!r}")
                cause = int(arg)
            elif name == "goto":
                goto = _goto(arg)
            elif arg:
                raise RuleError(f"{name} takes no argument, got {arg!r}")
        elif name == "hangup":
            hangup_after = _seconds("hangup", arg)
        elif name == "after":
            delay = _seconds("after", arg)
        elif name == "dtmf":
            if not _DIGITS.match(arg):
                raise RuleError(f"dtmf: expected digits (0-9, *, #, A-D), got {arg!r}")
            dtmf = arg
        else:
            raise RuleError(
                f"{text!r}: unknown term {term!r} (use answer, hangup, busy, congestion, "
                "reject, ring, unavailable, after, dtmf, goto)"
            )
    if kind is None:
        raise RuleError(f"{text!r}: no outcome (answer, busy, congestion, reject, ring, ...)")
    if hangup_after is not None and kind != "answer":
        raise RuleError(f"{text!r}: hangup only applies to answer")
    if dtmf and kind != "answer":
        raise RuleError(f"{text!r}: dtmf only applies to answer")
    return Behaviour(
        kind, delay=delay, hangup_after=hangup_after, cause=cause, dtmf=dtmf, goto=goto
    )


def _goto(arg: str) -> tuple[str, str]:
    """``context[/prefix]`` of a ``goto`` term."""
    context, _, prefix = arg.partition("/")
    if not _CONTEXT.match(context) or not _NUMBER.match(prefix):
        raise RuleError(f"goto: expected context[/number-prefix], got {arg!r}")
    return context, prefix


_NUMBER = re.compile(r"^[0-9*#+A-Za-z]*$")
_TRUNK = re.compile(r"^[A-Za-z0-9_.-]+$")


def parse_rule(text: str) -> Rule:
    """Parse one ``<match>=<behaviour>`` rule."""
    match, sep, behaviour = text.strip().partition("=")
    match = match.strip()
    if not sep or not behaviour.strip():
        raise RuleError(f"rule {text!r}: expected <number-prefix|_number|@trunk|*>=<behaviour>")
    number, at, trunk = match.partition("@")
    if at and not _TRUNK.match(trunk):
        raise RuleError(f"rule {text!r}: bad trunk name {trunk!r}")
    exact = number.startswith("_")
    if exact:
        number = number[1:]
    if number == "*":
        number = ""
    if not _NUMBER.match(number) or (exact and not number):
        raise RuleError(f"rule {text!r}: bad number {match!r}")
    if not number and not at and match != "*":
        raise RuleError(f"rule {text!r}: empty match (use * for every number)")
    try:
        parsed = parse_behaviour(behaviour)
    except RuleError as e:
        raise RuleError(f"rule {text!r}: {e}") from None
    return Rule(parsed, prefix=number, exact=exact, trunk=trunk if at else None, text=text.strip())


def parse_rules(text: str | Iterable[str]) -> list[Rule]:
    """Parse rules from a whitespace/semicolon separated string or an iterable of rules."""
    items = re.split(r"[\s;]+", text) if isinstance(text, str) else list(text)
    return [parse_rule(item) for item in items if item.strip()]


def _defaults() -> list[Rule]:
    rules = [
        # sim-pstn, sim-pstn2 and sim-bad of the recorded fixtures
        parse_rule("@sim-pstn2=goto:sim-pstn"),
        parse_rule("1555006@sim-pstn2=goto:sim-pstn/1555001"),
        parse_rule("@sim-bad=congestion"),
        parse_rule("1555001=answer:1"),
        parse_rule("1555002=busy"),
        parse_rule("1555003=ring"),
        parse_rule("1555004=answer:0,hangup:5"),
        parse_rule("1555005=congestion"),
        # sim-callee of tests/fixtures/asterisk22/config/extensions.conf
        parse_rule("_200=busy"),
        parse_rule("_300=ring"),
        parse_rule("_400=answer:1,hangup:5"),
        parse_rule("_500=congestion"),
        parse_rule("_600=reject:21"),
    ]
    rules += [parse_rule(f"_1{n:02d}=answer:{n}") for n in range(100)]
    return rules


#: Rules that mirror the recorded ``sim-pstn`` and the test instance's ``sim-callee``.
DEFAULT_RULES: tuple[Rule, ...] = tuple(_defaults())


class RuleSet:
    """User rules over the defaults; the most specific matching rule wins."""

    def __init__(
        self,
        rules: Sequence[Rule] = (),
        *,
        default: Behaviour = DEFAULT_BEHAVIOUR,
        builtin: Sequence[Rule] = DEFAULT_RULES,
    ) -> None:
        self.rules = tuple(rules)
        self.builtin = tuple(builtin)
        self.default = default

    def behaviour_for(self, number: str, trunk: str | None = None) -> Behaviour:
        """The behaviour of ``number`` dialled through ``trunk`` (``goto`` followed)."""
        behaviour = self._lookup(number, trunk)
        for _ in range(8):  # a goto loop ends here
            if behaviour.goto is None or behaviour.kind != "goto":
                return behaviour
            context, prefix = behaviour.goto
            number = prefix + number[len(prefix) :]
            found = self._lookup(number, context)
            behaviour = replace(found, goto=(context, number))
        return self.default

    def _lookup(self, number: str, trunk: str | None) -> Behaviour:
        for group in (self.rules, self.builtin):
            found = [r for r in group if r.matches(number, trunk)]
            if found:
                return max(found, key=lambda r: r.rank).behaviour
        return self.default


@dataclass(frozen=True)
class DialTarget:
    """The parts of an Originate ``Channel`` the simulator cares about."""

    tech: str
    resource: str
    number: str
    trunk: str | None
    local_context: str | None = None


def parse_dial_target(channel: str) -> DialTarget | None:
    """Split ``Tech/resource``; None if there is no ``/``.

    ``Local/<n>@<ctx>[/n]`` (trunk = context), ``PJSIP/<n>@<trunk>``,
    ``PJSIP/<trunk>/sip:<user>@<host>``, ``Motif/<account>/<user>@<host>``, ``Tech/<n>``.
    """
    tech, sep, resource = channel.partition("/")
    if not sep or not tech:
        return None
    trunk: str | None = None
    context: str | None = None
    if tech.lower() == "local":
        target = resource.split("/", 1)[0]
        number, _, context = target.partition("@")
        context = context or "default"
        trunk = context
    else:
        first, slash, rest = resource.partition("/")
        if slash:
            # PJSIP/<trunk>/sip:<user>@<host>, Motif/<account>/<user>@<host>
            trunk = first.split("@", 1)[0]
            user = rest.split(":", 1)[1] if rest.lower().startswith(("sip:", "sips:")) else rest
            number = user.split("@", 1)[0]
        else:
            number, at, host = first.partition("@")
            trunk = host if at else None
    number = number.split(";", 1)[0]
    return DialTarget(tech, resource, number, trunk, context)
