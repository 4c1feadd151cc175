"""The engine, the AMI switch and the simulated Asterisk wired together on one clock.

Nothing is mocked between the session manager and the simulated switch: the real
:class:`~callbackd.engine.SessionManager` drives the real
:class:`~callbackd.amiswitch.AMISwitch` over the real AMI client, whose bytes go to the
simulator's real AMI server protocol. Only the wire is in memory (an
:mod:`twisted.test.iosim` pump per connection) and time is one
:class:`~twisted.internet.task.Clock`, so a 45-second ring timeout takes no wall time
and every run is the same. What crossed the wire is kept, so a test can count the
daemon's actions as the real transcripts in ``tests/fixtures/asterisk22/callbackd/``
count them.

The emulated PSTN is the one those transcripts were recorded against
(``tests/fixtures/asterisk22/callbackd/config/``): providers PSTNA (``sim-pstn``), PSTNB
(``sim-pstn2``) and BADPROV (``sim-bad``, always congested), and the numbers
``1555001XXXX`` (rings 1 s, answers), ``1555002XXXX`` (busy), ``1555003XXXX`` (never
answers), ``1555004XXXX`` (answers, hangs up 5 s later), ``1555005XXXX`` (congested),
``1555006XXXX`` (answers like ``1555001`` on PSTNB).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.test import iosim
from zope.interface import implementer

from callbackd.ami.client import AMIClientService
from callbackd.ami.message import Message, MessageParser
from callbackd.amievents import MANAGER_EVENTS
from callbackd.amiswitch import AMISwitch
from callbackd.core.model import Account
from callbackd.core.rating import Deck, Rate
from callbackd.engine import Provider, SessionManager
from callbackd.simulator.asterisk import SimulatedAsterisk
from callbackd.simulator.protocol import AMIServerFactory
from callbackd.simulator.rules import RuleSet, parse_rules
from callbackd.store.hashing import BcryptHasher
from callbackd.store.memory import MemoryStore

__all__ = ["PSTN_RULES", "RECORDED", "SELL", "Rig", "recorded_actions", "wire_actions"]

#: the daemon's own recorded AMI sessions against a real Asterisk 22
RECORDED = Path(__file__).resolve().parent / "fixtures" / "asterisk22" / "callbackd"

#: the recordings' emulated PSTN, as simulator rules
PSTN_RULES = (
    "@sim-bad=congestion",
    "1555001=answer:1",
    "1555002=busy",
    "1555003=ring",
    "1555004=answer:0,hangup:5",
    "1555005=congestion",
    "1555006=answer:1",
)

START = 1_796_160_000.0
#: the price of every number of the emulated PSTN
SELL = Rate("1555", 1000)
USERNAME, SECRET = "callbackd", "sim-secret"

_BLOCK = re.compile(r"^(<<<|>>>) ", re.MULTILINE)
_ACTION = re.compile(r"^Action: *(\S+)", re.MULTILINE | re.IGNORECASE)
#: actions of the connection itself, not of any call
_HOUSEKEEPING = frozenset({"challenge", "login", "logoff", "ping", "coreshowchannels"})


def _count_actions(messages: Iterable[str]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for message in messages:
        for name in _ACTION.findall(message):
            if name.lower() not in _HOUSEKEEPING:
                counts[name] += 1
    return counts


def recorded_actions(name: str) -> Counter[str]:
    """The call actions (by name) the daemon sent in one recorded transcript."""
    text = (RECORDED / name).read_bytes().decode()
    parts = _BLOCK.split(text)[1:]
    sent = [body for way, body in zip(parts[::2], parts[1::2], strict=True) if way == ">>>"]
    return _count_actions(sent)


def wire_actions(data: bytes) -> Counter[str]:
    """The call actions (by name) in the bytes a client wrote."""
    return _count_actions(data.decode("utf-8", "replace").split("\r\n\r\n"))


@implementer(IStreamClientEndpoint)
class PumpedEndpoint:
    """Connects a client factory to a server factory over an in-memory pump."""

    def __init__(self, server: AMIServerFactory, clock: Clock) -> None:
        self.server = server
        self.clock = clock
        #: every write of any client, with the time it was made
        self.writes: list[tuple[float, bytes]] = []
        self.pumps: list[iosim.IOPump] = []
        #: every byte any client wrote, in order
        self.sent = bytearray()

    def connect(self, factory: Any) -> defer.Deferred[Any]:
        if not self.server.switch.accepting:
            return defer.fail(ConnectionRefusedError("the simulated Asterisk is down"))
        client = factory.buildProtocol(None)
        server = self.server.buildProtocol(None)
        received = server.dataReceived

        def record(data: bytes) -> None:
            self.sent.extend(data)
            self.writes.append((self.clock.seconds(), data))
            received(data)

        server.dataReceived = record
        pump = iosim.connect(
            server, iosim.makeFakeServer(server), client, iosim.makeFakeClient(client), greet=False
        )
        self.pumps.append(pump)
        return defer.succeed(client)

    def flush(self) -> None:
        for pump in self.pumps:
            pump.flush()


class Rig:
    """One manager on the AMI switch on the simulated Asterisk, alice's account funded."""

    def __init__(
        self, balance: int = 10_000_000, rules: Iterable[str] = PSTN_RULES, max_sessions: int = 2
    ) -> None:
        #: the switch's time, and the daemon's (apart only while the daemon is frozen)
        self.clock, self.daemon_clock = Clock(), Clock()
        self.clock.advance(START)
        self.daemon_clock.advance(START)
        self.asterisk = SimulatedAsterisk(self.clock, RuleSet(parse_rules(list(rules))))
        self.server = AMIServerFactory(self.asterisk, USERNAME, SECRET, MANAGER_EVENTS)
        self.endpoint = PumpedEndpoint(self.server, self.daemon_clock)
        clock = self.daemon_clock
        self.client = AMIClientService(self.endpoint, USERNAME, SECRET, clock=clock)
        self.switch = AMISwitch(self.client, clock=clock)
        self.store = MemoryStore(clock, BcryptHasher(rounds=4, run_in_thread=False))
        self.wait(
            self.store.create_account(Account("alice", max_sessions=max_sessions), "secret-pw")
        )
        if balance:
            self.wait(self.store.credit("alice", balance, "initial"))
        self.manager = SessionManager(
            clock,
            self.switch,
            self.store,
            sell_deck=Deck([SELL]),
            providers=[
                Provider("PSTNA", "Local/{number}@sim-pstn/n", Deck([Rate("1555", 400)])),
                Provider("PSTNB", "Local/{number}@sim-pstn2/n", Deck([Rate("1555", 500)])),
                Provider("BADPROV", "Local/{number}@sim-bad/n", Deck([Rate("1555006", 100)])),
            ],
            node_id="cb1",
            default_region="US",
        )
        self.events: list[Any] = []
        self.manager.subscribe(self.events.append)
        self.client.startService()
        self.run(1)
        self.wait(self.manager.start())
        self.actions_before = wire_actions(bytes(self.endpoint.sent))

    def run(self, seconds: float, step: float = 0.05) -> None:
        """Let ``seconds`` of simulated time pass, the wire flushed at every step."""
        self.endpoint.flush()
        until = self.clock.seconds() + seconds
        while self.clock.seconds() < until:
            advance = min(step, until - self.clock.seconds())
            self.clock.advance(advance)
            self.daemon_clock.advance(advance)
            self.endpoint.flush()

    def freeze(self, seconds: float, step: float = 0.05) -> None:
        """The daemon stops (SIGSTOP) for ``seconds``: the switch goes on, nothing is read."""
        until = self.clock.seconds() + seconds
        while self.clock.seconds() < until:
            self.clock.advance(min(step, until - self.clock.seconds()))
        # SIGCONT: the daemon's timers that fell due run, then it reads what piled up
        self.daemon_clock.advance(self.clock.seconds() - self.daemon_clock.seconds())
        self.endpoint.flush()

    def wait(self, d: defer.Deferred[Any], limit: float = 10.0) -> Any:
        out: list[Any] = []
        d.addBoth(out.append)
        waited = 0.0
        while not out and waited < limit:
            self.run(0.05)
            waited += 0.05
        assert out, "the Deferred did not fire"
        if isinstance(out[0], Failure):
            out[0].raiseException()
        return out[0]

    def run_until(self, condition: Callable[[], bool], limit: float = 120.0) -> None:
        """Let simulated time pass until ``condition()`` holds (at most ``limit`` seconds)."""
        waited = 0.0
        while not condition():
            assert waited < limit, f"still waiting after {limit} s; events: {self.events}"
            self.run(0.05)
            waited += 0.05

    def talking(self, sid: str) -> bool:
        """Whether the session's destination has answered."""
        return any(e.session_id == sid and e.kind == "talking" for e in self.events)

    def sent(self, action: str) -> list[tuple[float, Message]]:
        """The daemon's actions of one kind, in the order sent, with the time sent."""
        parser = MessageParser()
        return [
            (at, m)
            for at, data in self.endpoint.writes
            for m in parser.feed(data)
            if m.get("Action") == action
        ]

    def cuts(self) -> dict[str, list[int]]:
        """Per channel, the whole second of each AbsoluteTimeout's cut, in the order sent."""
        out: dict[str, list[int]] = {}
        for at, m in self.sent("AbsoluteTimeout"):
            out.setdefault(m["Channel"], []).append(math.floor(at + int(m["Timeout"])))
        return out

    def callback(self, source: str, destination: str) -> str:
        return str(self.wait(self.manager.start_callback("alice", source, destination)))

    def actions(self) -> Counter[str]:
        """The call actions the daemon sent since the rig was up."""
        return wire_actions(bytes(self.endpoint.sent)) - self.actions_before

    def cdrs(self) -> dict[str, Any]:
        return {c.leg or "session": c for c in self.wait(self.store.list_cdrs("alice"))}

    def balance(self) -> int:
        return int(self.wait(self.store.get_balance("alice")))

    def stop(self) -> None:
        self.manager.stop()
        self.switch.close()
        self.wait(defer.maybeDeferred(self.client.stopService))
        self.asterisk.shutdown()
