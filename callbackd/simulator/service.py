"""SimulatorService: the simulated Asterisk as a Twisted service listening for AMI clients."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from callbackd.service import ListeningPort
from callbackd.simulator.agi import AGICall, SimulatedFastAGI, SoundLibrary
from callbackd.simulator.asterisk import Channel, SimulatedAsterisk
from callbackd.simulator.caller import ScriptedCaller
from callbackd.simulator.protocol import AMIServerFactory
from callbackd.simulator.rules import DEFAULT_BEHAVIOUR, Behaviour, Rule, RuleSet, parse_rules

__all__ = ["SimulatorService"]


class SimulatorService(Service):
    """A simulated Asterisk 22 AMI server on a strports endpoint.

    ``rules`` are rule texts (``"1555002=busy"``) or parsed :class:`Rule` objects, or
    one string of whitespace-separated rules. ``event_filter`` names the only events a
    session gets, like manager.conf's ``eventfilter(name(X)) =`` include filters (None =
    every event; responses and list responses are never filtered). Nothing listens until
    ``startService``;
    ``port`` is the bound TCP port afterwards. ``switch`` is the inspection and control
    API (``switch.channels()``, ``switch.rooms()``, ``switch.key_dtmf(channel,
    "#11")``, ``switch.hangup_far_end(channel)``); :meth:`restart` restarts the switch.
    """

    log = Logger()

    def __init__(
        self,
        listen: str,
        username: str,
        secret: str,
        *,
        clock: IReactorTime | None = None,
        reactor: Any = None,
        rules: str | Iterable[str | Rule] = (),
        default_behaviour: Behaviour = DEFAULT_BEHAVIOUR,
        time_scale: float = 1.0,
        timestamps: bool = True,
        event_filter: Collection[str] | None = None,
        sounds: SoundLibrary | None = None,
        agi_address: Callable[[str, int], tuple[str, int]] | None = None,
        users: dict[str, str] | None = None,
    ) -> None:
        if isinstance(rules, str):
            parsed = parse_rules(rules)
        else:
            parsed = [r if isinstance(r, Rule) else parse_rules([r])[0] for r in rules]
        self.listen = listen
        self.username = username
        self.secret = secret
        #: more AMI users (name: secret), e.g. one per daemon sharing the switch
        self.users = dict(users or {})
        self.reactor = reactor
        self.clock = clock
        self.rule_set = RuleSet(parsed, default=default_behaviour)
        self.time_scale = time_scale
        self.timestamps = timestamps
        self.event_filter = None if event_filter is None else frozenset(event_filter)
        self.switch: SimulatedAsterisk | None = None
        self.factory: AMIServerFactory | None = None
        self._port = ListeningPort(self.log, "simulated Asterisk AMI")
        #: fires with the bound port once listening
        self.ready: Deferred[int] = self._port.ready
        self.sounds = sounds
        self.agi_address = agi_address
        self.agi: SimulatedFastAGI | None = None
        #: dialled number -> the person who answers a leg originated to it (its AGI's caller)
        self.callers: dict[str, ScriptedCaller] = {}
        self._agi_extensions: list[tuple[tuple[str, str, str], dict[str, Any]]] = []

    def startService(self) -> None:
        reactor = self.reactor
        if reactor is None:
            from twisted.internet import reactor as global_reactor

            reactor = self.reactor = global_reactor
        clock = self.clock if self.clock is not None else reactor
        self.switch = SimulatedAsterisk(
            clock, self.rule_set, time_scale=self.time_scale, timestamps=self.timestamps
        )
        self.factory = AMIServerFactory(
            self.switch,
            self.username,
            self.secret,
            event_filter=self.event_filter,
            users=self.users,
        )
        self.agi = SimulatedFastAGI(
            self.switch,
            reactor,
            sounds=self.sounds,
            address=self._agi_address,
            callers=self.callers,
        )
        self.factory.agi = self.agi
        for (context, exten, url), options in self._agi_extensions:
            self.agi.add_extension(context, exten, url, **options)
        super().startService()
        self._port.listen(reactor, self.listen, self.factory)

    @property
    def port(self) -> int | None:
        """The bound port once listening."""
        return self._port.port

    def stopService(self) -> Deferred[Any]:
        super().stopService()
        stopped = self._port.stop()
        if self.factory is not None:
            for session in list(self.factory.sessions):
                session.close()
        if self.switch is not None:
            self.switch.shutdown()
        return stopped

    def _agi_address(self, host: str, port: int) -> tuple[str, int]:
        return self.agi_address(host, port) if self.agi_address is not None else (host, port)

    def add_agi_extension(
        self,
        context: str,
        exten: str,
        url: str,
        *,
        args: Collection[str] = (),
        then: Callable[[Channel], None] | None = None,
    ) -> None:
        """A channel answered into ``context,exten`` runs ``AGI(url)``, now or once started
        (:meth:`SimulatedFastAGI.add_extension`)."""
        options: dict[str, Any] = {"args": args, "then": then}
        self._agi_extensions.append(((context, exten, url), options))
        if self.agi is not None:
            self.agi.add_extension(context, exten, url, **options)

    def inbound_call(
        self,
        caller_id: str,
        dialled_number: str,
        script_url: str,
        *,
        caller: ScriptedCaller | None = None,
        **options: Any,
    ) -> AGICall:
        """A call to an access number that runs ``AGI(script_url)`` (the switch must run)."""
        if self.agi is None:
            raise RuntimeError("the simulator is not running")
        return self.agi.inbound_call(
            caller_id, dialled_number, script_url, caller=caller, **options
        )

    def restart(self, down: float = 0.0) -> None:
        """``core restart now`` (:meth:`SimulatedAsterisk.restart`): the legs' Hangups,
        ``Shutdown``, every session closed; connections accepted ``down`` s later."""
        if self.switch is not None:
            self.switch.restart(down)
