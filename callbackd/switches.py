"""The switch pool: several Asterisk servers, each session placed on one of them.

The engine runs every session on exactly one switch: all of a session's legs are
dialled on the switch the session was placed on, into one ConfBridge room there (the
room is the session id). The session records the switch's name
(:attr:`~callbackd.core.session.SessionState.switch`), so a restart, a recovery or a
command reaches the same switch again.

The placement rule (:meth:`SwitchPool.place`): of the switches that are usable now
(logged in, not shutting down or restarting, weight above 0), the one with the fewest
sessions in flight per unit of weight, counting the new one (``(in flight + 1) /
weight``); a tie goes to the switch configured first. A switch of weight 2 thus gets
twice the sessions of one of weight 1; a switch of weight 0 gets no new sessions and
keeps running the ones it has (drain it before maintenance).

Each switch reports its own events (:class:`~callbackd.switch.SwitchConnected` and
the others); the pool hands them on with the switch's name, so the engine reconciles
the sessions of the switch that came back, and only those.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from fractions import Fraction

from callbackd.switch import ISwitch, SwitchEvent

__all__ = ["DEFAULT_SWITCH", "SwitchPool"]

#: the name of the one switch ``[ami]`` configures (when no ``[switch:NAME]`` is given)
DEFAULT_SWITCH = "default"

#: ``listener(name, event)``: an event of the switch called ``name``
PoolListener = Callable[[str, SwitchEvent], object]


class SwitchPool:
    """The switches by name, in the configured order, with their placement weights.

    :param switches: name -> switch, in the configured order (the first is the
        default: a session saved before sessions recorded their switch runs there).
    :param weights: name -> weight (missing: 1); 0 places no new session there.
    """

    def __init__(
        self, switches: Mapping[str, ISwitch], weights: Mapping[str, int] | None = None
    ) -> None:
        if not switches:
            raise ValueError("a switch pool needs at least one switch")
        self._switches = dict(switches)
        weights = weights or {}
        self.weights = {name: weights.get(name, 1) for name in self._switches}
        for name, weight in self.weights.items():
            if weight < 0:
                raise ValueError(f"switch {name}: weight must be at least 0, got {weight}")
        #: the first switch configured
        self.default = next(iter(self._switches))

    @classmethod
    def single(cls, switch: ISwitch, name: str = DEFAULT_SWITCH) -> SwitchPool:
        """A pool of one switch (``[ami]`` alone, or a test's fake switch)."""
        return cls({name: switch})

    def __len__(self) -> int:
        return len(self._switches)

    def __iter__(self) -> Iterator[str]:
        return iter(self._switches)

    def __contains__(self, name: object) -> bool:
        return name in self._switches

    def __getitem__(self, name: str) -> ISwitch:
        return self._switches[name]

    def items(self) -> list[tuple[str, ISwitch]]:
        """(name, switch) in the configured order."""
        return list(self._switches.items())

    def name_of(self, recorded: str) -> str | None:
        """The switch a session recorded: "" (saved before switches were recorded) is
        the default one; None for a name no longer configured."""
        name = recorded or self.default
        return name if name in self._switches else None

    def usable(self, name: str) -> bool:
        """Whether a new session or leg can be placed on the switch called ``name`` now."""
        switch = self._switches[name]
        return bool(switch.connected) and not switch.shutting_down

    @property
    def connected(self) -> bool:
        """Whether any switch is logged in."""
        return any(switch.connected for switch in self._switches.values())

    def place(self, in_flight: Callable[[str], int]) -> str | None:
        """The switch a new session goes to, by the module's rule; None when no switch
        is usable. ``in_flight(name)`` is the number of sessions running there."""
        best: tuple[Fraction, int] | None = None
        chosen = None
        for index, (name, weight) in enumerate(self.weights.items()):
            if weight <= 0 or not self.usable(name):
                continue
            key = (Fraction(in_flight(name) + 1, weight), index)
            if best is None or key < best:
                best, chosen = key, name
        return chosen

    def add_listener(self, listener: PoolListener) -> None:
        """Deliver every switch's events to ``listener(name, event)``."""
        for name, switch in self._switches.items():
            switch.add_listener(_named(listener, name))


def _named(listener: PoolListener, name: str) -> Callable[[SwitchEvent], None]:
    def deliver(event: SwitchEvent) -> None:
        listener(name, event)

    return deliver
