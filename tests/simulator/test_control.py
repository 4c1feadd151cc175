"""The simulator's own controls of its FastAGI side: caller scripts, Sim* actions, the CLI."""

from __future__ import annotations

import pytest
from twisted.internet.testing import MemoryReactorClock

from callbackd.simulator.__main__ import build_parser, build_service
from callbackd.simulator.agi import SimulatedFastAGI
from callbackd.simulator.caller import INPUT, CallerStep, ScriptedCaller
from tests.simulator.harness import Session


def test_caller_script_parses_steps():
    """``prompt=keys[!][@delay[/interval]]`` steps, ``;``-separated; empty prompt = INPUT."""
    caller = ScriptedCaller.parse("callbackd/enter-pin=1234#; =5 ;callbackd/bye=!@0.1;x=9!@1/0.5")
    assert caller.steps == [
        CallerStep("1234#", False, "callbackd/enter-pin"),
        CallerStep("5", False, INPUT),
        CallerStep("", True, "callbackd/bye", 0.1),
        CallerStep("9", True, "x", 1.0, 0.5),
    ]


@pytest.mark.parametrize("text", ["1234", "p=12x", "p=", "p=1@x", "p=1@-1", "p=!!"])
def test_caller_script_refuses_garbage(text):
    """A step without '=', with other keys, no action or bad timing is a ValueError."""
    with pytest.raises(ValueError):
        ScriptedCaller.parse(text)


def control_session() -> tuple[Session, SimulatedFastAGI, MemoryReactorClock]:
    session = Session()
    reactor = MemoryReactorClock()
    agi = SimulatedFastAGI(session.switch, reactor)
    session.factory.agi = agi
    session.login()
    return session, agi, reactor


def test_sim_inbound_call_places_a_call_that_connects_to_the_url():
    """SimInboundCall: a ringing trunk channel, a FastAGI connection to the URL's address."""
    session, agi, reactor = control_session()
    session.send(
        ("Action", "SimInboundCall"), ("ActionID", "c1"), ("CallerID", '"Al" <15551230000>'),
        ("Exten", "8000"), ("URL", "agi://127.0.0.1:4599/ivr?x=1"), ("Arg", "8000"),
        ("Language", "fr"), ("Caller", "callbackd/enter-pin=1234#"),
    )  # fmt: skip
    newchannel, reply = session.read()
    assert reply["Response"] == "Success" and reply["Channel"].startswith("PJSIP/inbound-")
    assert newchannel.name == "Newchannel" and newchannel["ChannelState"] == "4"
    (call,) = agi.calls
    assert call.channel.uniqueid == reply["Uniqueid"]
    assert call.channel.language == "fr" and call.args == ["8000"]
    assert call.caller is not None and call.caller.steps[0].keys == "1234#"
    assert reactor.tcpClients[0][:2] == ("127.0.0.1", 4599)
    session.send(("Action", "SimAGICalls"), ("ActionID", "l1"))
    listed = session.read()
    assert [m.name for m in listed] == ["Success", "SimAGICall", "SimAGICallsComplete"]
    assert listed[1]["Status"] == "running" and listed[1]["URL"].endswith("/ivr?x=1")


def test_sim_caller_and_extension():
    """SimCaller sets who answers a number; SimAGIExtension makes a context run AGI."""
    session, agi, _ = control_session()
    session.send(("Action", "SimCaller"), ("Number", "15550011234"), ("Caller", "=5"))
    session.send(
        ("Action", "SimAGIExtension"), ("Context", "cb-ivr"), ("Exten", "s"),
        ("URL", "agi://127.0.0.1/ivr"),
    )  # fmt: skip
    assert [m["Response"] for m in session.read()] == ["Success", "Success"]
    assert agi.callers["15550011234"].steps == [CallerStep("5")]
    assert ("cb-ivr", "s") in session.switch.dialplan_hooks


@pytest.mark.parametrize(
    "pairs",
    [
        (("Action", "SimInboundCall"), ("Exten", "8000"), ("URL", "agi://h/ivr")),
        (("Action", "SimInboundCall"), ("CallerID", "1"), ("Exten", "8"), ("URL", "agi://h/i"),
         ("Caller", "nonsense")),
        (("Action", "SimCaller"), ("Number", "1555")),
        (("Action", "SimAGIExtension"), ("Context", "c")),
    ],
)  # fmt: skip
def test_sim_actions_refuse_missing_headers(pairs):
    """A Sim* action missing a header (or with a bad caller script) gets Response: Error."""
    session, agi, _ = control_session()
    session.send(*pairs)
    assert session.read()[0]["Response"] == "Error"
    assert not agi.calls


def test_sim_actions_without_fastagi_or_login():
    """Without a FastAGI side the actions fail; before login they are denied."""
    session = Session()
    session.send(("Action", "SimAGICalls"))
    assert session.read()[0]["Message"] == "Permission denied"
    session.login()
    session.send(("Action", "SimInboundCall"), ("CallerID", "1"), ("Exten", "8"), ("URL", "u"))
    assert session.read()[0]["Response"] == "Error"


def test_cli_agi_options():
    """--agi-address, --agi-extension, --sound and --missing-sounds reach the service."""
    args = build_parser().parse_args(
        ["--username", "u", "--secret", "s", "--agi-address", "127.0.0.1:4599",
         "--agi-extension", "cb-ivr,s,agi://127.0.0.1/ivr?s=${CB_SESSION}",
         "--sound", "callbackd/welcome=1.5", "--missing-sounds", "digits/"]
    )  # fmt: skip
    service = build_service(args, MemoryReactorClock())
    assert service.agi_address is not None
    assert service.agi_address("127.0.0.1", 4573) == ("127.0.0.1", 4599)
    assert service.sounds is not None
    assert service.sounds.duration("callbackd/welcome") == 1.5
    assert service.sounds.duration("digits/1") is None
    service.startService()
    try:
        assert service.switch is not None and ("cb-ivr", "s") in service.switch.dialplan_hooks
    finally:
        service.stopService()


def test_cli_refuses_a_bad_agi_extension(capsys):
    """An --agi-extension that is not CONTEXT,EXTEN,agi://... is a usage error."""
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--username", "u", "--secret", "s", "--agi-extension", "x,y"])
    assert "x,y" in capsys.readouterr().err
