"""SimulatorService over the real TCP stack, and the CLI options."""

from __future__ import annotations

import hashlib
import signal
import socket

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol

from callbackd.ami.message import MessageParser
from callbackd.simulator.__main__ import build_parser
from callbackd.simulator.service import SimulatorService
from tests.integration.daemon import Simulator


class _Client(Protocol):
    def __init__(self) -> None:
        self.parser = MessageParser(banner=True)
        self.messages = []
        self.waiting: list[tuple[object, Deferred]] = []

    def dataReceived(self, data):
        self.messages.extend(self.parser.feed(data))
        for cond, d in list(self.waiting):
            if any(cond(m) for m in self.messages):
                self.waiting.remove((cond, d))
                d.callback(None)

    def wait_for(self, cond, timeout=5.0):
        d = Deferred()
        self.waiting.append((cond, d))
        self.dataReceived(b"")
        d.addTimeout(timeout, reactor)
        return d

    def send(self, *pairs):
        self.transport.write(("".join(f"{k}: {v}\r\n" for k, v in pairs) + "\r\n").encode())


@pytest_twisted.inlineCallbacks
def test_service_over_loopback_tcp():
    """On port 0 with the real reactor: MD5 login and an originate answered end to end."""
    service = SimulatorService(
        "tcp:0:interface=127.0.0.1", "u", "s", reactor=reactor, time_scale=0.01
    )
    service.startService()
    try:
        port = yield service.ready
        assert port == service.port and port > 0
        client = _Client()
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client)
        client.send(("Action", "Challenge"), ("ActionID", "c"), ("AuthType", "MD5"))
        yield client.wait_for(lambda m: m.get("Challenge") is not None)
        challenge = next(m["Challenge"] for m in client.messages if "Challenge" in m)
        key = hashlib.md5((challenge + "s").encode()).hexdigest()
        client.send(("Action", "Login"), ("AuthType", "MD5"), ("Username", "u"), ("Key", key))
        yield client.wait_for(lambda m: m.name == "FullyBooted")
        client.send(("Action", "Originate"), ("ActionID", "o"),
                    ("Channel", "Local/101@sim-callee/n"), ("Context", "cb-conf"),
                    ("Exten", "leg-b"), ("Priority", "1"), ("Variable", "CB_ROOM=t"),
                    ("ChannelId", "t-b"), ("Async", "true"))  # fmt: skip
        yield client.wait_for(lambda m: m.name == "ConfbridgeJoin")
        assert service.switch.rooms() == {"t": [service.switch.find_channel("t-b").name]}
        client.transport.loseConnection()
    finally:
        yield service.stopService()


def test_constructor_does_no_io():
    """Before startService nothing listens and no port is known."""
    service = SimulatorService("tcp:0", "u", "s", rules="1555=busy")
    assert service.port is None and service.switch is None


def test_cli_collects_rules_and_time_scale():
    """The CLI takes repeated --rule and --time-scale."""
    args = build_parser().parse_args(
        ["--port", "0", "--username", "u", "--secret", "s", "--rule", "1555=busy",
         "--rule", "@pakline=congestion", "--time-scale", "0.1"]
    )  # fmt: skip
    assert (args.rule, args.time_scale, args.port) == (["1555=busy", "@pakline=congestion"], 0.1, 0)


def test_cli_rejects_a_bad_rule(capsys):
    """A malformed --rule is a usage error naming the rule."""
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--username", "u", "--secret", "s", "--rule", "1555=fly"])
    assert "1555=fly" in capsys.readouterr().err


def _read_until_closed(sock: socket.socket, parser: MessageParser) -> list:
    """Every message until the server closes the connection."""
    messages = []
    while chunk := sock.recv(65536):
        messages.extend(parser.feed(chunk))
    return messages


def test_sigusr1_restarts_the_simulator_process(tmp_path):
    """``kill -USR1``: Shutdown (Cleanly, Restart True), the connection closed, a new
    connection logs in again (python -m callbackd.simulator, as the integration tests)."""
    simulator = Simulator(tmp_path, time_scale=1.0).start()
    try:
        login = (
            f"Action: Login\r\nUsername: {simulator.username}\r\nSecret: {simulator.secret}\r\n\r\n"
        )
        with socket.create_connection(("127.0.0.1", simulator.port), timeout=10) as sock:
            parser = MessageParser(banner=True)
            sock.sendall(login.encode())
            seen = []
            while not any(m.name == "FullyBooted" for m in seen):
                seen.extend(parser.feed(sock.recv(65536)))
            assert simulator.process is not None
            simulator.process.send_signal(signal.SIGUSR1)
            shutdown = [m for m in _read_until_closed(sock, parser) if m.name == "Shutdown"]
        assert [(m["Shutdown"], m["Restart"]) for m in shutdown] == [("Cleanly", "True")]
        with socket.create_connection(("127.0.0.1", simulator.port), timeout=10) as sock:
            parser = MessageParser(banner=True)
            sock.sendall(login.encode())
            seen = []
            while len(seen) < 2:
                seen.extend(parser.feed(sock.recv(65536)))
        assert [m.get("Message") for m in seen][:1] == ["Authentication accepted"]
    finally:
        simulator.stop()
