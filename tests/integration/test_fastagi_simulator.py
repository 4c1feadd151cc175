"""The simulator as its own process driving a FastAGI server over TCP, steered over AMI."""

from __future__ import annotations

import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

from callbackd.agi.server import AGIChannel, FastAGIService
from callbackd.ami.message import Message
from callbackd.ami.protocol import AMIProtocol
from tests.integration.daemon import Simulator


@pytest_twisted.ensureDeferred
async def test_inbound_call_through_the_simulator_process(tmp_path):
    """SimInboundCall over AMI: the simulator process runs the script with the scripted caller."""
    from twisted.internet import reactor

    finished: Deferred[list] = Deferred()

    async def ivr(channel: AGIChannel) -> None:
        await channel.answer()
        pin = await channel.get_data("callbackd/enter-pin", 3000, 8)
        finished.callback([channel.env["agi_callerid"], channel.query, pin])

    service = FastAGIService("tcp:0:interface=127.0.0.1", {"ivr": ivr}, reactor=reactor)
    service.startService()
    port = await service.ready
    simulator = Simulator(
        tmp_path / "sim",
        time_scale=0.1,
        extra_args=("--agi-address", f"127.0.0.1:{port}", "--sound", "callbackd/enter-pin=2"),
    ).start()
    ami = AMIProtocol(clock=reactor, action_timeout=5.0)
    try:
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", simulator.port), ami)
        await ami.login(simulator.username, simulator.secret)
        reply = await ami.send_action(
            Message.action(
                "SimInboundCall",
                CallerID="15551230000",
                Exten="8000",
                URL="agi://127.0.0.1:4573/ivr?lang=vi",
                Caller="callbackd/enter-pin=4321#@0.5/0.1",
            )
        )
        assert reply["Channel"].startswith("PJSIP/inbound-")
        assert await finished == ["15551230000", {"lang": "vi"}, "4321"]
        calls = await ami.collect(Message.action("SimAGICalls"))
        assert calls[0]["Played"] == "callbackd/enter-pin"
        assert calls[0]["Keyed"] == "4321#"
    finally:
        ami.abort()
        simulator.stop()
        await service.stopService()
