"""A scripted caller: the person on a simulated call who listens, keys DTMF and hangs up.

The caller follows a list of :class:`CallerStep` in order. A step waits for its cue
(a prompt file starting to play, or the IVR's next wait for digits), then, after a
human pause, keys its digits one by one at a human pace and may hang up. Digits keyed
while a prompt plays reach the call as they would on Asterisk: an escape digit stops
the prompt, any other is lost. No I/O: the call (``callbackd.simulator.agi``) tells the
caller what it plays and takes its digits and its hangup.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, Protocol

from twisted.internet.interfaces import IDelayedCall, IReactorTime

__all__ = ["INPUT", "ROOM", "CallerStep", "CallerSink", "ScriptedCaller"]

#: the cue of a step that waits for the IVR's next command that reads digits
INPUT: Final = None
#: the cue of a step that waits for the caller's leg to join the ConfBridge room (the
#: destination answered): keys then go to the room's DTMF menu (``#11``), as on Asterisk
ROOM: Final = "ConfBridge"
#: a person's pause after a prompt starts before the first key, and between keys
HUMAN_DELAY: Final = 0.4
HUMAN_INTERVAL: Final = 0.25
_KEYS = re.compile(r"[0-9*#A-D]*")


class CallerSink(Protocol):
    """What a caller acts on: the call it is on."""

    def dtmf(self, digit: str) -> None:
        """The caller keyed ``digit``."""

    def caller_hangs_up(self) -> None:
        """The caller hung up."""


@dataclass(frozen=True)
class CallerStep:
    """One thing the caller does once its cue comes.

    ``prompt``: the sound file whose start is the cue (``"callbackd/enter-pin"``, or a
    ``digits/...`` file of a ``SAY``), or :data:`ROOM` (``"ConfBridge"``: the leg joined
    the conference room); None (:data:`INPUT`): the IVR's next command that
    reads digits (``GET DATA``, ``WAIT FOR DIGIT``, a ``STREAM FILE`` or ``SAY`` with
    escape digits). ``delay`` seconds after the cue the caller keys ``keys``, one every
    ``interval`` seconds, then hangs up if ``hang_up``.
    """

    keys: str = ""
    hang_up: bool = False
    prompt: str | None = INPUT
    delay: float = HUMAN_DELAY
    interval: float = HUMAN_INTERVAL


@dataclass(eq=False)
class ScriptedCaller:
    """A caller following ``steps``; build one with :meth:`press` and :meth:`hang_up`.

    ``ScriptedCaller().press("1234#", prompt="callbackd/enter-pin").hang_up(prompt=
    "callbackd/goodbye", delay=0.1)`` keys the PIN 0.4 s into the PIN prompt and hangs
    up 0.1 s into the goodbye. ``keyed`` records every digit with its time.
    """

    steps: list[CallerStep] = field(default_factory=list)
    #: (time, digit) of every key pressed
    keyed: list[tuple[float, str]] = field(default_factory=list)
    hung_up: bool = False
    _sink: CallerSink | None = None
    _clock: IReactorTime | None = None
    _scale: float = 1.0
    _armed: CallerStep | None = None
    _timers: list[IDelayedCall] = field(default_factory=list)

    def press(
        self,
        keys: str,
        *,
        prompt: str | None = INPUT,
        delay: float = HUMAN_DELAY,
        interval: float = HUMAN_INTERVAL,
    ) -> ScriptedCaller:
        """Add a step: key ``keys`` ``delay`` s after the cue."""
        self.steps.append(CallerStep(keys, False, prompt, delay, interval))
        return self

    def hang_up(self, *, prompt: str | None = INPUT, delay: float = HUMAN_DELAY) -> ScriptedCaller:
        """Add a step: hang up ``delay`` s after the cue."""
        self.steps.append(CallerStep("", True, prompt, delay))
        return self

    @classmethod
    def parse(cls, text: str) -> ScriptedCaller:
        """A caller from its one-line script (for the simulator's command line and AMI).

        Steps separated by ``;``, each ``[prompt]=keys[!][@delay[/interval]]``: the cue
        (empty: the next command that reads digits), the digits to key, ``!`` to hang up
        after them, the pause and the pace in seconds. ``callbackd/enter-pin=1234#;
        =5;callbackd/goodbye=!@0.1``. ValueError on anything else.
        """
        caller = cls()
        for raw in filter(None, (part.strip() for part in text.split(";"))):
            prompt, sep, action = raw.rpartition("=")
            if not sep:
                raise ValueError(f"caller step {raw!r}: no '='")
            action, _, timing = action.partition("@")
            delay_text, _, interval_text = timing.partition("/")
            hang_up = action.endswith("!")
            keys = action.removesuffix("!")
            if not _KEYS.fullmatch(keys) or (not keys and not hang_up):
                raise ValueError(f"caller step {raw!r}: keys are 0-9, *, #, A-D, then '!'")
            try:
                delay = float(delay_text) if delay_text else HUMAN_DELAY
                interval = float(interval_text) if interval_text else HUMAN_INTERVAL
            except ValueError:
                raise ValueError(f"caller step {raw!r}: bad timing {timing!r}") from None
            if delay < 0 or interval < 0:
                raise ValueError(f"caller step {raw!r}: negative timing")
            caller.steps.append(CallerStep(keys, hang_up, prompt or INPUT, delay, interval))
        return caller

    # --- on the call ----------------------------------------------------------------

    def attach(self, sink: CallerSink, clock: IReactorTime, time_scale: float = 1.0) -> None:
        """Start following the script on the call ``sink``."""
        self._sink, self._clock, self._scale = sink, clock, time_scale
        self._arm()

    def detach(self) -> None:
        """The call is over: forget pending keys."""
        for timer in self._timers:
            if timer.active():
                timer.cancel()
        self._timers = []
        self._sink = None
        self._armed = None

    def prompt_started(self, name: str) -> None:
        """The call started playing sound file ``name``."""
        step = self._armed
        if step is not None and step.prompt == name:
            self._act(step)

    def attached_to(self, sink: CallerSink) -> bool:
        """The caller is on the call ``sink`` (its latest)."""
        return self._sink is sink

    def input_started(self) -> None:
        """The call started a command that reads digits."""
        step = self._armed
        if step is not None and step.prompt is INPUT:
            self._act(step)

    def _arm(self) -> None:
        self._armed = self.steps.pop(0) if self.steps and self._sink is not None else None

    def _act(self, step: CallerStep) -> None:
        self._armed = None
        at = step.delay
        for digit in step.keys:
            self._later(at, self._key, digit)
            at += step.interval
        if step.hang_up:
            self._later(at, self._hang_up)
        else:
            self._later(max(at - step.interval, 0.0), self._arm)

    def _later(self, seconds: float, fn: Callable[..., None], *args: str) -> None:
        assert self._clock is not None
        self._timers = [t for t in self._timers if t.active()]
        self._timers.append(self._clock.callLater(seconds * self._scale, fn, *args))

    def _key(self, digit: str) -> None:
        if self._sink is not None and self._clock is not None:
            self.keyed.append((self._clock.seconds(), digit))
            self._sink.dtmf(digit)

    def _hang_up(self) -> None:
        sink = self._sink
        if sink is not None:
            self.hung_up = True
            self.detach()
            sink.caller_hangs_up()
