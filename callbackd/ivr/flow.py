"""The phone callback's IVR as pure state machines (docs/ivr.rst).

Two machines, in the style of :mod:`callbackd.core.session` (no sockets, no clock, no
store: effects are returned and the results come back as events):

* :func:`plan_inbound` decides what a call to an access number or a user's DID gets:
  let it ring and reject it unanswered (the caller pays nothing), then call back the
  caller ID (ANI, PIN) or the account's predefined number (DID); or nothing at all.
* :func:`start` / :func:`step` run the callback leg once the user answered it:
  language menu, PIN, balance, "enter the number", the maximum call duration,
  dialling through the engine, ``#11`` and ``111``, phonebook speed dials, and
  back to "enter the number" after every destination.

``step(flow, event) -> (flow, effects)``: the given flow is not modified. The last
effect of a step that waits for something is an *input* effect (:data:`INPUTS`):
:class:`Collect`, :class:`CheckPin`, :class:`RecordPinFailure`, :class:`GetBalance`,
:class:`Quote`, :class:`WaitDestination` or :class:`Leave`; its answer is the next
event. A step that ends the flow ends with :class:`HangUp` (or :class:`Leave` when the
caller is gone). Events that do not fit the flow's phase change nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

__all__ = [
    "INPUTS",
    "LANGUAGES",
    "PROMPTS",
    "Announce",
    "Answered",
    "Balance",
    "CallBack",
    "CheckPin",
    "Collect",
    "Collected",
    "Dial",
    "DropDestination",
    "Ended",
    "Failed",
    "Flow",
    "HangUp",
    "HungUp",
    "InboundPlan",
    "IvrRules",
    "Keys",
    "Leave",
    "LogLockout",
    "Phase",
    "PinChecked",
    "PinFailureRecorded",
    "Play",
    "Quote",
    "Quoted",
    "RecordPinFailure",
    "Refused",
    "Resumed",
    "SaveCallerId",
    "SayDuration",
    "SayMoney",
    "SetLanguage",
    "WaitDestination",
    "GetBalance",
    "keyed_number",
    "plan_inbound",
    "start",
    "step",
]

#: the IVR's languages, in the order of the language menu (key 1 to 5)
LANGUAGES: Final = ("en", "es", "fr", "vi", "zh")
#: every key a caller can press
KEYS: Final = "0123456789*#"
#: our prompts: sound ``callbackd/<name>``, text ``ivr.<name>`` in the message catalogue
PROMPTS: Final = frozenset(
    {
        "call_ended",
        "call_failed",
        "calling_back",
        "connecting",
        "destination_busy",
        "destination_no_answer",
        "enter_another_number",
        "enter_number",
        "enter_pin",
        "goodbye",
        "invalid_number",
        "language_option",
        "max_duration_is",
        "no_credit",
        "number_blocked",
        "pin_accepted",
        "pin_locked",
        "wrong_pin",
        "your_balance_is",
    }
)


# -- rules ------------------------------------------------------------------------------


@dataclass(frozen=True)
class IvrRules:
    """The operator's settings the flow follows (``[ivr]`` in callbackd.ini)."""

    #: keys that end the destination and return to "enter the number"
    end_code: str = "#11"
    #: keys that announce the balance at any prompt
    balance_code: str = "111"
    #: announce the balance when the callback is answered
    announce_balance: bool = True
    #: wrong PINs in a row before PIN entry is locked
    pin_attempts: int = 3
    #: prompts met with silence (or nonsense) before the IVR gives up and hangs up
    retries: int = 3
    #: ms to wait for the first key of an entry
    entry_timeout_ms: int = 8000
    #: the longest number a caller may key (E.164: 15 digits, plus a 00 prefix)
    max_digits: int = 17
    #: keys of a PIN at most
    max_pin_digits: int = 12


# -- inbound calls ----------------------------------------------------------------------


@dataclass(frozen=True)
class InboundPlan:
    """What a call to an access number or a DID gets.

    ``username`` empty: no callback (``why`` says why, for the log). Otherwise call
    ``number`` back for the account, asking the PIN first when ``need_pin``; the
    callback speaks ``language`` ("" when the caller chooses from a menu).
    """

    username: str = ""
    number: str = ""
    need_pin: bool = False
    language: str = ""
    why: str = ""
    kind: str = ""


def plan_inbound(
    *,
    dialled: str,
    caller_id: str,
    access_numbers: Mapping[str, str],
    dids: Mapping[str, str],
    did_owner_number: str = "",
    caller_owner: str = "",
    caller_verified: bool = False,
    account_language: str = "",
    language_menu: bool = True,
    unknown_account: str = "",
) -> InboundPlan:
    """Decide a call to ``dialled`` (an access number or a DID) from ``caller_id``.

    ``access_numbers``: access number -> its language ("" for none); ``dids``: DID ->
    the account it belongs to, whose predefined number (``did_owner_number``) is called
    back. ``caller_owner``: the account the caller ID is registered to ("" for none),
    ``caller_verified`` whether that registration is verified (a verified caller ID
    skips the PIN). The language comes from the access number, else the account, else
    the caller's choice from a menu (``language_menu``; without it, English).

    A caller ID registered to no account is called back only with ``unknown_account``
    (``[ivr] unknown_callers = pin``: the operator's account the PIN leg runs under),
    and asked for the PIN, which names the account (kind ``unknown``).
    """
    if dialled in dids:
        owner = dids[dialled]
        if not did_owner_number:
            return InboundPlan(why="the DID's account has no predefined number", kind="did")
        return InboundPlan(
            username=owner,
            number=did_owner_number,
            language=_language(account_language, "", language_menu),
            kind="did",
        )
    if dialled not in access_numbers:
        return InboundPlan(why="not an access number", kind="unknown")
    if not caller_id or not caller_id.lstrip("+").isdigit():
        return InboundPlan(why="no caller ID", kind="ani")
    if not caller_owner and not unknown_account:
        return InboundPlan(why="unknown caller ID", kind="ani")
    if not caller_owner:
        return InboundPlan(
            username=unknown_account,
            number=caller_id,
            need_pin=True,
            language=_language("", access_numbers[dialled], language_menu),
            kind="unknown",
        )
    return InboundPlan(
        username=caller_owner,
        number=caller_id,
        need_pin=not caller_verified,
        language=_language(account_language, access_numbers[dialled], language_menu),
        kind="ani" if caller_verified else "pin",
    )


def _language(account: str, access: str, menu: bool) -> str:
    """The access number's language, else the account's, else "" (the menu)."""
    for choice in (access, account):
        if choice in LANGUAGES:
            return choice
    return "" if menu else LANGUAGES[0]


# -- steps of speech --------------------------------------------------------------------


@dataclass(frozen=True)
class Play:
    """Our prompt ``callbackd/<name>`` (catalogue id ``ivr.<name>``), in ``language``
    when given, else in the channel's language."""

    name: str
    language: str = ""


@dataclass(frozen=True)
class SayMoney:
    """An amount of money in minor units, spoken in the channel's language."""

    amount: int


@dataclass(frozen=True)
class SayDuration:
    """A duration in seconds, spoken in the channel's language."""

    seconds: int


Speech = Play | SayMoney | SayDuration


# -- effects ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SetLanguage:
    """Set the channel's language (Asterisk's SAY and our prompts follow it)."""

    language: str


@dataclass(frozen=True)
class Announce:
    """Say these steps; nothing is waited for."""

    steps: tuple[Speech, ...]


@dataclass(frozen=True)
class Collect:
    """Say the steps (a key interrupts them) and collect up to ``max_digits`` keys, ``#``
    ending the entry; answer: :class:`Collected`."""

    steps: tuple[Speech, ...]
    timeout_ms: int
    max_digits: int


@dataclass(frozen=True)
class CheckPin:
    """Check the account's PIN, unless PIN entry is locked; answer: :class:`PinChecked`."""

    pin: str


@dataclass(frozen=True)
class RecordPinFailure:
    """Count a wrong PIN for the account and the caller ID; answer:
    :class:`PinFailureRecorded` (locked now or not)."""


@dataclass(frozen=True)
class LogLockout:
    """Log that PIN entry is locked for the account and the caller ID."""


@dataclass(frozen=True)
class SaveCallerId:
    """Register the caller ID to the account as verified (no PIN next time)."""


@dataclass(frozen=True)
class CallBack:
    """The PIN named the account of an unknown caller: end this leg (the operator's)
    and call the caller back at once for that account, in ``language``."""

    language: str


@dataclass(frozen=True)
class GetBalance:
    """Read the account's balance; answer: :class:`Balance`."""


@dataclass(frozen=True)
class Quote:
    """Check ``number`` can be called and for how long; answer :class:`Quoted` or
    :class:`Refused`."""

    number: str


@dataclass(frozen=True)
class Dial:
    """Call ``number`` into the session through the engine."""

    number: str


@dataclass(frozen=True)
class WaitDestination:
    """Wait (ringback) for the destination; keys pressed meanwhile come as :class:`Keys`;
    answer: :class:`Answered`, :class:`Failed`, :class:`Ended`, :class:`Refused`."""


@dataclass(frozen=True)
class DropDestination:
    """Hang up the destination (ringing or talking); the user's leg stays."""


@dataclass(frozen=True)
class Leave:
    """End this AGI conversation; the leg lives on elsewhere (the room), or is gone."""


@dataclass(frozen=True)
class HangUp:
    """Hang up the user's leg (which ends the session)."""


Effect = (
    SetLanguage
    | Announce
    | Collect
    | CheckPin
    | RecordPinFailure
    | LogLockout
    | SaveCallerId
    | CallBack
    | GetBalance
    | Quote
    | Dial
    | WaitDestination
    | DropDestination
    | Leave
    | HangUp
)
#: the effects whose answer is the flow's next event (or that end the conversation)
INPUTS: Final = (Collect, CheckPin, RecordPinFailure, GetBalance, Quote, WaitDestination)


# -- events -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Collected:
    """The keys of a :class:`Collect` (``#`` not included); empty on silence."""

    digits: str


@dataclass(frozen=True)
class PinChecked:
    """``ok``: the PIN is right; ``locked``: PIN entry is locked (not checked)."""

    ok: bool
    locked: bool = False


@dataclass(frozen=True)
class PinFailureRecorded:
    """A wrong PIN was counted; ``locked``: PIN entry is locked now."""

    locked: bool


@dataclass(frozen=True)
class Balance:
    """The account's balance in minor units."""

    amount: int


@dataclass(frozen=True)
class Quoted:
    """The number can be called for ``seconds`` at most (None: no limit)."""

    number: str
    seconds: int | None


@dataclass(frozen=True)
class Refused:
    """The engine refused the number or the call; ``reason`` is ``no_credit``,
    ``blocked``, ``invalid`` or ``failed``."""

    reason: str


@dataclass(frozen=True)
class Answered:
    """The destination answered (the engine moves the user's leg into the room)."""


@dataclass(frozen=True)
class Failed:
    """The destination could not be reached: ``cause`` ``busy``, ``no answer`` or other."""

    cause: str


@dataclass(frozen=True)
class Ended:
    """The destination's call ended (it hung up, or ``#11`` dropped it)."""


@dataclass(frozen=True)
class Keys:
    """Keys pressed while the destination is being called."""

    keys: str


@dataclass(frozen=True)
class Resumed:
    """The user's leg is back in the IVR (after the room)."""


@dataclass(frozen=True)
class HungUp:
    """The user hung up (or the leg went away)."""


Event = (
    Collected
    | PinChecked
    | PinFailureRecorded
    | Balance
    | Quoted
    | Refused
    | Answered
    | Failed
    | Ended
    | Keys
    | Resumed
    | HungUp
)


# -- the flow ---------------------------------------------------------------------------


class Phase:
    """Where the flow is (the input it waits for)."""

    LANGUAGE = "language"
    PIN = "pin"
    PIN_CHECK = "pin-check"
    PIN_FAILURE = "pin-failure"
    BALANCE = "balance"
    NUMBER = "number"
    QUOTE = "quote"
    CALLING = "calling"
    CONNECTED = "connected"
    ENDED = "ended"


@dataclass(frozen=True)
class Flow:
    """One callback leg's IVR conversation."""

    rules: IvrRules
    language: str
    need_pin: bool
    phonebook: Mapping[int, str] = field(default_factory=dict)
    #: the PIN names the account (an unknown caller ID); the right one calls back
    identify: bool = False
    phase: str = Phase.LANGUAGE
    #: wrong PINs so far
    pin_failures: int = 0
    #: prompts met with silence or nonsense in a row
    misses: int = 0
    #: the balance is announced before the first "enter the number" (not after ``111``)
    balance_first: bool = True
    #: the last keys pressed while the destination is called (for ``#11``)
    keys: str = ""
    #: the destination being called or talking
    number: str = ""

    @property
    def ended(self) -> bool:
        """The conversation is over."""
        return self.phase == Phase.ENDED


def start(
    rules: IvrRules,
    *,
    language: str,
    need_pin: bool,
    phonebook: Mapping[int, str] | None = None,
    resumed: bool = False,
    identify: bool = False,
) -> tuple[Flow, list[Effect]]:
    """The flow once the user answered the callback (``resumed``: back from the room).

    ``language`` "" asks the caller to choose from the menu. ``identify``: the caller
    ID is nobody's, the PIN names the account, and the right one ends with
    :class:`CallBack` (the leg is the operator's, docs/ivr.rst).
    """
    flow = Flow(rules, language, need_pin or identify, dict(phonebook or {}), identify)
    run = _Run(flow)
    if resumed:
        run.set_language()
        run.ask_number(first=False)
    elif language:
        run.set_language()
        run.after_language()
    else:
        run.language_menu()
    return run.flow, run.effects


def step(flow: Flow, event: Event) -> tuple[Flow, list[Effect]]:
    """Apply an event; the given flow is not modified."""
    if flow.ended:
        return flow, []
    run = _Run(flow)
    if isinstance(event, HungUp):
        run.end_quietly()
    else:
        handler = _HANDLERS.get(flow.phase)
        if handler is not None:
            handler(run, event)
    return run.flow, run.effects


def keyed_number(digits: str) -> str | None:
    """The E.164 number keyed as ``<country><number>`` or ``00<country><number>``;
    None when the keys cannot be one."""
    if not digits.isdigit() or not digits.isascii():
        return None
    if digits.startswith("00"):
        digits = digits[2:]
    if not 6 <= len(digits) <= 15 or digits[0] == "0":
        return None
    return "+" + digits


class _Run:
    """One transition in progress."""

    def __init__(self, flow: Flow) -> None:
        self.flow = flow
        self.effects: list[Effect] = []

    def to(self, phase: str, **changes: object) -> None:
        self.flow = dataclasses.replace(self.flow, phase=phase, **changes)  # type: ignore[arg-type]

    def collect(self, steps: Sequence[Speech], max_digits: int) -> None:
        rules = self.flow.rules
        self.effects.append(Collect(tuple(steps), rules.entry_timeout_ms, max_digits))

    def set_language(self) -> None:
        self.effects.append(SetLanguage(self.flow.language or LANGUAGES[0]))

    # -- language --------------------------------------------------------------------

    def language_menu(self) -> None:
        self.to(Phase.LANGUAGE)
        self.collect([Play("language_option", language) for language in LANGUAGES], 1)

    def language_chosen(self, digits: str) -> None:
        if digits.isdigit() and 1 <= int(digits) <= len(LANGUAGES):
            self.to(Phase.LANGUAGE, language=LANGUAGES[int(digits) - 1], misses=0)
            self.set_language()
            self.after_language()
        elif self.missed():
            self.language_menu()

    def after_language(self) -> None:
        if self.flow.need_pin:
            self.ask_pin()
        else:
            self.greet()

    # -- PIN --------------------------------------------------------------------------

    def ask_pin(self, *before: Speech) -> None:
        self.to(Phase.PIN)
        self.collect([*before, Play("enter_pin")], self.flow.rules.max_pin_digits)

    def pin_keyed(self, digits: str) -> None:
        if not digits:
            if self.missed():
                self.ask_pin()
            return
        self.to(Phase.PIN_CHECK, misses=0)
        self.effects.append(CheckPin(digits))

    def pin_checked(self, event: PinChecked) -> None:
        if event.locked:
            self.locked_out()
        elif event.ok and self.flow.identify:
            self.effects.append(SaveCallerId())
            self.effects.append(Announce((Play("pin_accepted"), Play("calling_back"))))
            self.effects.append(CallBack(self.flow.language or LANGUAGES[0]))
            self.hang_up()
        elif event.ok:
            self.to(Phase.PIN, need_pin=False, pin_failures=0)
            self.effects.append(SaveCallerId())
            self.effects.append(Announce((Play("pin_accepted"),)))
            self.greet()
        else:
            self.to(Phase.PIN_FAILURE, pin_failures=self.flow.pin_failures + 1)
            self.effects.append(RecordPinFailure())

    def pin_failure_recorded(self, event: PinFailureRecorded) -> None:
        if event.locked or self.flow.pin_failures >= self.flow.rules.pin_attempts:
            self.locked_out()
        else:
            self.ask_pin(Play("wrong_pin"))

    def locked_out(self) -> None:
        self.effects.append(LogLockout())
        self.effects.append(Announce((Play("pin_locked"), Play("goodbye"))))
        self.hang_up()

    # -- balance and the number ---------------------------------------------------------

    def greet(self) -> None:
        if self.flow.rules.announce_balance:
            self.ask_balance(first=True)
        else:
            self.ask_number(first=True)

    def ask_balance(self, first: bool) -> None:
        self.to(Phase.BALANCE, balance_first=first)
        self.effects.append(GetBalance())

    def balance(self, event: Balance) -> None:
        steps: list[Speech] = [Play("your_balance_is"), SayMoney(event.amount)]
        self.ask_number(first=self.flow.balance_first, before=steps)

    def ask_number(self, first: bool, before: Sequence[Speech] = ()) -> None:
        self.to(Phase.NUMBER, number="")
        name = "enter_number" if first else "enter_another_number"
        self.collect([*before, Play(name)], self.flow.rules.max_digits)

    def number_keyed(self, digits: str) -> None:
        rules = self.flow.rules
        if not digits:
            if self.missed():
                self.ask_number(first=False)
            return
        if digits == rules.balance_code:
            self.to(Phase.NUMBER, misses=0)
            self.ask_balance(first=False)
            return
        number = self.speed_dial(digits) or keyed_number(digits)
        if number is None:
            if self.missed():
                self.ask_number(first=False, before=[Play("invalid_number")])
            return
        self.to(Phase.QUOTE, number=number, misses=0)
        self.effects.append(Quote(number))

    def speed_dial(self, digits: str) -> str | None:
        if len(digits) <= 2 and digits.isdigit():
            return self.flow.phonebook.get(int(digits))
        return None

    def quoted(self, event: Quoted) -> None:
        if event.seconds is not None and event.seconds < 1:
            self.refused(Refused("no_credit"))
            return
        steps: list[Speech] = []
        if event.seconds is not None:
            steps = [Play("max_duration_is"), SayDuration(event.seconds)]
        steps.append(Play("connecting"))
        self.effects.append(Announce(tuple(steps)))
        self.to(Phase.CALLING, number=event.number, keys="")
        self.effects.append(Dial(event.number))
        self.effects.append(WaitDestination())

    def refused(self, event: Refused) -> None:
        name = {
            "no_credit": "no_credit",
            "blocked": "number_blocked",
            "invalid": "invalid_number",
        }.get(event.reason, "call_failed")
        self.ask_number(first=False, before=[Play(name)])

    # -- the destination --------------------------------------------------------------

    def calling(self, event: Event) -> None:
        if isinstance(event, Answered):
            self.to(Phase.CONNECTED)
            self.effects.append(Leave())
        elif isinstance(event, Failed):
            name = {"busy": "destination_busy", "no answer": "destination_no_answer"}.get(
                event.cause, "call_failed"
            )
            self.ask_number(first=False, before=[Play(name)])
        elif isinstance(event, Ended):
            self.ask_number(first=False, before=[Play("call_ended")])
        elif isinstance(event, Refused):
            self.refused(event)
        elif isinstance(event, Keys):
            code = self.flow.rules.end_code
            keys = (self.flow.keys + event.keys)[-max(len(code), 1) :]
            if code and keys.endswith(code):
                self.effects.append(DropDestination())
                self.ask_number(first=False, before=[Play("call_ended")])
            else:
                self.to(Phase.CALLING, keys=keys)
                self.effects.append(WaitDestination())

    def connected(self, event: Event) -> None:
        if isinstance(event, Resumed | Ended):
            self.set_language()
            self.ask_number(first=False, before=[Play("call_ended")])

    # -- misses and the end -------------------------------------------------------------

    def missed(self) -> bool:
        """Count a prompt met with silence or nonsense; False (and goodbye) at the last."""
        misses = self.flow.misses + 1
        if misses >= self.flow.rules.retries:
            self.effects.append(Announce((Play("goodbye"),)))
            self.hang_up()
            return False
        self.flow = dataclasses.replace(self.flow, misses=misses)
        return True

    def hang_up(self) -> None:
        self.to(Phase.ENDED)
        self.effects.append(HangUp())

    def end_quietly(self) -> None:
        if self.flow.phase == Phase.CALLING:
            self.effects.append(DropDestination())
        self.to(Phase.ENDED)
        self.effects.append(Leave())


_Handler = Callable[[_Run, Event], None]


def _on_collected(method: str) -> _Handler:
    def handle(run: _Run, event: Event) -> None:
        if isinstance(event, Collected):
            getattr(run, method)(event.digits)

    return handle


def _on(kind: type, method: str) -> _Handler:
    def handle(run: _Run, event: Event) -> None:
        if isinstance(event, kind):
            getattr(run, method)(event)

    return handle


def _quote(run: _Run, event: Event) -> None:
    if isinstance(event, Quoted):
        run.quoted(event)
    elif isinstance(event, Refused):
        run.refused(event)


_HANDLERS: Final[dict[str, _Handler]] = {
    Phase.LANGUAGE: _on_collected("language_chosen"),
    Phase.PIN: _on_collected("pin_keyed"),
    Phase.PIN_CHECK: _on(PinChecked, "pin_checked"),
    Phase.PIN_FAILURE: _on(PinFailureRecorded, "pin_failure_recorded"),
    Phase.BALANCE: _on(Balance, "balance"),
    Phase.NUMBER: _on_collected("number_keyed"),
    Phase.QUOTE: _quote,
    Phase.CALLING: _Run.calling,
    Phase.CONNECTED: _Run.connected,
}
