"""The simulated Asterisk's FastAGI side, and its conformance with the real session."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet.task import Clock

from callbackd.agi.protocol import AGIParser, Reply
from callbackd.agi.server import AGIChannel, FastAGIService
from callbackd.simulator.agi import AGICall, SimulatedFastAGI, SoundLibrary, parse_args
from callbackd.simulator.asterisk import OriginateRequest, SimulatedAsterisk
from callbackd.simulator.caller import ROOM, ScriptedCaller
from callbackd.simulator.rules import RuleSet
from tests.agi.transcript import (
    ASTERISK,
    DIALOGUE_RESULTS,
    asterisk_bytes,
    lines,
    transcript_dialogue,
)

#: the recorded instance: callbackd/welcome installed (11750 samples), no digits/ files
RECORDED_SOUNDS = SoundLibrary({"callbackd/welcome": 11750 / 8000}, missing=("digits/",))
#: the recorded caller: the PIN, the destination, then a 5
RECORDED_CALLER = (
    ScriptedCaller()
    .press("1234#", prompt="callbackd/enter-pin")
    .press("15551234567#", prompt="callbackd/enter-destination")
    .press("5")
)


class Wire:
    """An AGICall on a Clock, the test playing the FastAGI server."""

    def __init__(self, caller=None, sounds=None, language="en") -> None:
        self.clock = Clock()
        self.switch = SimulatedAsterisk(self.clock, RuleSet())
        self.channel = self.switch.inbound_channel('"Alice" <15551230000>', "8000", "cb-access")
        self.channel.language = language
        self.call = AGICall(
            self.switch,
            self.channel,
            "agi://127.0.0.1:4573/ivr",
            ["8000"],
            caller=caller,
            sounds=sounds or SoundLibrary(),
        )
        self.written = b""
        self.closed = False
        self.call.connected(self._write, self._close)
        self.parser = AGIParser()
        self.env = self.parser.feed(self.take())[0]

    def _write(self, data: bytes) -> None:
        self.written += data

    def _close(self) -> None:
        self.closed = True

    def take(self) -> bytes:
        data, self.written = self.written, b""
        return data

    def send(self, line: str) -> None:
        self.call.data_received(line.encode() + b"\n")

    def replies(self) -> list:
        return self.parser.feed(self.take())

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass in steps of 1/32 s, exact in binary (timers set by timers
        fire too)."""
        self.clock.pump([0.03125] * round(seconds / 0.03125))

    def ask(self, line: str, advance: float = 0.0) -> list:
        self.send(line)
        self.advance(advance)
        return self.replies()


def texts(events) -> list[str]:
    return [e.text if isinstance(e, Reply) else "HANGUP" for e in events]


def test_environment_as_asterisk_22_writes_it():
    """The env block has the recorded fields in the recorded order, caller and args filled."""
    wire = Wire()
    recorded = AGIParser().feed(asterisk_bytes())[0]
    assert list(wire.env) == list(recorded)
    assert wire.env["agi_callerid"] == "15551230000"
    assert wire.env["agi_calleridname"] == "Alice"
    assert wire.env["agi_network_script"] == "ivr"
    assert wire.env["agi_arg_1"] == "8000"
    assert wire.env["agi_extension"] == "8000" and wire.env["agi_context"] == "cb-access"


def test_stream_file_plays_whole_or_stops_on_an_escape_digit():
    """A prompt plays to its end (endpos = its samples); an escape digit stops it early."""
    wire = Wire(sounds=SoundLibrary({"p": 2.0}))
    assert texts(wire.ask('STREAM FILE "p" ""', 2.0)) == ["200 result=0 endpos=16000"]
    wire.send('STREAM FILE "p" "#"')
    wire.advance(0.5)
    wire.call.dtmf("1")  # not an escape digit: lost
    wire.advance(0.25)
    wire.call.dtmf("#")
    assert texts(wire.replies()) == ["200 result=35 endpos=6000"]
    assert wire.call.played == ["p", "p"]
    assert texts(wire.ask('STREAM FILE "nosuch" ""')) == []  # default library has all files


def test_missing_file_answers_minus_one():
    """STREAM FILE of a file that is not installed: result=-1 endpos=0 at once."""
    wire = Wire(sounds=SoundLibrary(default=None))
    assert texts(wire.ask('STREAM FILE "nosuch" ""')) == ["200 result=-1 endpos=0"]
    assert texts(wire.ask('GET DATA "nosuch" 1000 4')) == ["200 result=-1"]


@pytest.mark.parametrize(
    ("keys", "advance", "expected"),
    [
        ("1234#", 0.0, "200 result=1234"),
        ("12", 5.0, "200 result=12 (timeout)"),
        ("", 5.0, "200 result= (timeout)"),
        ("#", 0.0, "200 result="),
        ("123456789", 0.0, "200 result=1234"),
        ("*9#", 0.0, "200 result=*9"),
    ],
)
def test_get_data_results(keys, advance, expected):
    """GET DATA ends on #, at max digits or after the timeout, as Asterisk's replies say."""
    wire = Wire(sounds=SoundLibrary({"p": 1.0}))
    wire.send('GET DATA "p" 3000 4')
    wire.advance(0.2)
    for key in keys:  # the first key interrupts the prompt
        wire.call.dtmf(key)
        wire.advance(0.1)
    wire.advance(advance)
    assert texts(wire.replies()) == [expected]


def test_wait_for_digit_and_a_line_that_interrupts_it():
    """WAIT FOR DIGIT: the digit's code, 0 on timeout, 1 when a new line interrupts it."""
    wire = Wire()
    wire.send("WAIT FOR DIGIT 3000")
    wire.call.dtmf("5")
    assert texts(wire.replies()) == ["200 result=53"]
    assert texts(wire.ask("WAIT FOR DIGIT 3000", 3.0)) == ["200 result=0"]
    wire.send("WAIT FOR DIGIT 3000")
    assert texts(wire.ask("NOOP")) == ["200 result=1", "200 result=0"]


def test_caller_hangs_up_mid_prompt_then_dead_channel_rules():
    """Hangup mid-prompt: the -1 reply, HANGUP, then 511 for media, answers for variables."""
    caller = ScriptedCaller().hang_up(prompt="callbackd/welcome", delay=0.5)
    wire = Wire(caller=caller, sounds=SoundLibrary({"callbackd/welcome": 2.0}))
    assert texts(wire.ask('STREAM FILE "callbackd/welcome" ""', 1.0)) == [
        "200 result=-1 endpos=4000",
        "HANGUP",
    ]
    assert not wire.channel.alive
    assert texts(wire.ask("ANSWER"))[0].startswith("511 ")
    assert texts(wire.ask('SET VARIABLE CB_X "a b"')) == ["200 result=1"]
    assert texts(wire.ask("GET VARIABLE CB_X")) == ["200 result=1 (a b)"]
    assert texts(wire.ask("HANGUP"))[0].startswith("511 ")


def test_hangup_command_then_hangup_line():
    """HANGUP answers 1, then Asterisk writes the HANGUP line; AGISTATUS once closed."""
    wire = Wire()
    assert texts(wire.ask("HANGUP")) == ["200 result=1", "HANGUP"]
    wire.call.connection_closed()
    assert wire.call.status == "HANGUP" and wire.channel.variables["AGISTATUS"] == "HANGUP"


def test_bad_commands():
    """Unknown command 510; wrong arity or a non-number 520 with the usage; empty line 510."""
    wire = Wire()
    assert texts(wire.ask("NOSUCHCOMMAND foo")) == ["510 Invalid or unknown command"]
    (usage,) = texts(wire.ask('SAY NUMBER abc ""'))
    assert usage.startswith("520-Invalid command syntax.  Proper usage follows:\n")
    assert " Usage: SAY NUMBER <number> <escape digits> [gender]" in usage
    assert usage.endswith("\n520 End of proper usage.")
    assert texts(wire.ask("STREAM FILE"))[0].startswith("520-")
    assert texts(wire.ask("")) == ["510 Invalid or unknown command"]


@pytest.mark.parametrize(
    ("language", "files"),
    [
        (
            "en",
            ["digits/1", "digits/thousand", "digits/2", "digits/hundred", "digits/30", "digits/4"],
        ),
        (
            "fr",
            ["digits/thousand", "digits/2", "digits/hundred", "digits/30", "digits/et", "digits/1"],
        ),
    ],
)
def test_say_number_plays_the_say_engines_files(language, files):
    """SAY NUMBER plays callbackd.simulator.say's files for the channel's language."""
    wire = Wire(language=language)
    number = 1234 if language == "en" else 1231
    assert texts(wire.ask(f'SAY NUMBER {number} ""', 10.0)) == ["200 result=0"]
    assert wire.call.played == files


def test_say_language_follows_set_variable_and_escape_interrupts():
    """SET VARIABLE CHANNEL(language) switches the say engine; an escape digit stops SAY."""
    wire = Wire()
    wire.ask('SET VARIABLE CHANNEL(language) "zh"')
    assert texts(wire.ask("GET VARIABLE CHANNEL(language)")) == ["200 result=1 (zh)"]
    wire.send('SAY DIGITS 15 "#"')
    wire.advance(0.6)
    wire.call.dtmf("#")
    assert texts(wire.replies()) == ["200 result=35"]
    assert wire.call.played == ["digits/1", "digits/5"]


def test_exec_applications():
    """EXEC Wait waits; an unknown application is -2; Busy hangs up (-1, then HANGUP)."""
    wire = Wire()
    wire.send('EXEC Wait "2"')
    wire.advance(1.9)
    assert texts(wire.replies()) == []
    wire.advance(0.2)
    assert texts(wire.replies()) == ["200 result=0"]
    assert texts(wire.ask("EXEC NoSuchApp")) == ["200 result=-2"]
    assert texts(wire.ask("EXEC Busy")) == ["200 result=-1", "HANGUP"]


def test_answer_puts_the_inbound_channel_up():
    """The inbound channel rings until ANSWER (result=0) puts it Up."""
    wire = Wire()
    assert wire.channel.state == 4
    assert texts(wire.ask("ANSWER")) == ["200 result=0"]
    assert wire.channel.state == 6


def test_parse_args_is_asterisks():
    """Quotes group, backslash escapes, "" is an empty argument."""
    assert parse_args('SET VARIABLE X "a \\"b\\" c"') == ["SET", "VARIABLE", "X", 'a "b" c']
    assert parse_args('SAY DIGITS 1 ""') == ["SAY", "DIGITS", "1", ""]


@pytest_twisted.ensureDeferred
async def test_conformance_with_the_recorded_session():
    """The recorded dialogue against the simulator gives the recorded env block and replies."""
    from twisted.internet import reactor

    results: list = []

    async def ivr(channel: AGIChannel) -> None:
        results.extend(await transcript_dialogue(channel))

    service = FastAGIService("tcp:0:interface=127.0.0.1", {"ivr": ivr}, reactor=reactor)
    service.startService()
    port = await service.ready
    switch = SimulatedAsterisk(reactor, RuleSet(), time_scale=0.01)
    agi = SimulatedFastAGI(switch, reactor, sounds=RECORDED_SOUNDS)
    try:
        call = agi.inbound_call(
            '"Alice" <15551230000>',
            "8000",
            f"agi://127.0.0.1:{port}/ivr",
            args=["8000"],
            caller=RECORDED_CALLER,
        )
        status = await call.done
    finally:
        await service.stopService()
    assert status == "SUCCESS"
    assert results == DIALOGUE_RESULTS
    ours = [data for _, d, data in call.transcript if d == ASTERISK]
    recorded = [data for _, d, data in lines() if d == ASTERISK]
    env_size = recorded.index(b"\n") + 1
    # per call: the channel, its type and ids, the port, the dialled number (SIP: the DID)
    differ = (b"agi_request", b"agi_channel", b"agi_type", b"agi_uniqueid", b"agi_threadid")
    differ += (b"agi_dnid", b"agi_priority")
    assert [line.split(b":")[0] for line in ours[:env_size]] == [
        line.split(b":")[0] for line in recorded[:env_size]
    ]
    assert [line for line in ours[:env_size] if not line.startswith(differ)] == [
        line for line in recorded[:env_size] if not line.startswith(differ)
    ]
    assert ours[env_size:] == recorded[env_size:]
    assert call.played[:3] == [
        "callbackd/welcome",
        "callbackd/enter-pin",
        "callbackd/enter-destination",
    ]


@pytest_twisted.ensureDeferred
async def test_an_originated_leg_runs_agi_with_the_person_who_answers():
    """A leg originated into a context registered as AGI runs the script with its caller."""
    from twisted.internet import reactor

    seen: list = []

    async def ivr(channel: AGIChannel) -> None:
        seen.append((channel.script, channel.query, channel.env["agi_channel"]))
        await channel.answer()
        seen.append(await channel.get_data("callbackd/enter-destination", 3000, 20))

    service = FastAGIService("tcp:0:interface=127.0.0.1", {"ivr": ivr}, reactor=reactor)
    service.startService()
    port = await service.ready
    switch = SimulatedAsterisk(reactor, RuleSet(), time_scale=0.01)
    agi = SimulatedFastAGI(switch, reactor, address=lambda host, _port: (host, port))
    agi.add_extension("cb-ivr", "s", "agi://127.0.0.1/ivr?session=${CB_SESSION}")
    agi.callers["15550011234"] = ScriptedCaller().press("4930123#")
    try:
        switch.originate(
            OriginateRequest(
                "Local/15550011234@sim-pstn",
                context="cb-ivr",
                exten="s",
                variables=[("CB_SESSION", "s42")],
            )
        )
        call = await _first_call(agi, reactor)
        assert await call.done == "SUCCESS"
    finally:
        await service.stopService()
    assert seen[0][0:2] == ("ivr", {"session": "s42"})
    assert seen[0][2].startswith("Local/15550011234@sim-pstn-") and seen[0][2].endswith(";1")
    assert seen[1] == "4930123"
    assert not call.channel.alive  # Hangup() after AGI()


@pytest_twisted.ensureDeferred
async def test_unreachable_server_is_agistatus_failure():
    """No FastAGI server: AGISTATUS=FAILURE and the dialplan goes on (hangs up)."""
    from twisted.internet import reactor

    switch = SimulatedAsterisk(reactor, RuleSet())
    agi = SimulatedFastAGI(switch, reactor)
    service = FastAGIService("tcp:0:interface=127.0.0.1", {}, reactor=reactor)
    service.startService()
    port = await service.ready
    await service.stopService()
    call = agi.inbound_call("15551230000", "8000", f"agi://127.0.0.1:{port}/ivr")
    assert await call.done == "FAILURE"
    assert not call.channel.alive


async def _first_call(agi: SimulatedFastAGI, reactor) -> AGICall:
    from twisted.internet.task import deferLater

    for _ in range(200):
        if agi.calls:
            return agi.calls[0]
        await deferLater(reactor, 0.01, lambda: None)
    raise AssertionError("no AGI call started")


@pytest_twisted.ensureDeferred
async def test_simulator_service_redirects_agi_urls_and_keeps_extensions():
    """SimulatorService: extensions added before start apply; agi_address redirects URLs."""
    from twisted.internet import reactor

    from callbackd.simulator import SimulatorService

    scripts: list = []

    async def ivr(channel: AGIChannel) -> None:
        scripts.append(channel.script)
        await channel.hangup()

    service = FastAGIService("tcp:0:interface=127.0.0.1", {"ivr": ivr}, reactor=reactor)
    service.startService()
    port = await service.ready
    simulator = SimulatorService(
        "tcp:0:interface=127.0.0.1",
        "callbackd",
        "secret",
        reactor=reactor,
        agi_address=lambda host, _port: ("127.0.0.1", port),
    )
    simulator.add_agi_extension("cb-ivr", "s", "agi://127.0.0.1:4573/ivr")
    caller = ScriptedCaller()
    simulator.callers["15550011234"] = caller
    with pytest.raises(RuntimeError):
        simulator.inbound_call("15551230000", "8000", "agi://127.0.0.1:4573/ivr")
    simulator.startService()
    await simulator.ready
    try:
        assert simulator.switch is not None and ("cb-ivr", "s") in simulator.switch.dialplan_hooks
        assert simulator.agi is not None and simulator.agi.callers["15550011234"] is caller
        call = simulator.inbound_call("15551230000", "8000", "agi://127.0.0.1:4573/ivr")
        assert await call.done == "HANGUP"
    finally:
        await simulator.stopService()
        await service.stopService()
    assert scripts == ["ivr"]
    assert [data for _, d, data in call.transcript if d == ASTERISK][-2:] == [
        b"200 result=1\n",
        b"HANGUP\n",
    ]


def test_keys_in_the_room_reach_the_confbridge_menu_as_on_asterisk():
    """The caller's leg Redirected from AGI() into the room (cb-conf,leg-a): the caller,
    cued by the join (ROOM), keys #11, which the room's cb_menu_a turns into
    ``UserEvent CbDtmf`` (cb-dtmf,endb); before the join, keys only reach AGI()."""
    caller = ScriptedCaller().press("#11", prompt=ROOM, delay=0.5, interval=0.25)
    wire = Wire(caller=caller)
    events: list = []
    wire.switch.add_listener(lambda category, body: events.append(dict(body)))
    wire.channel.variables["CB_ROOM"] = "s42"
    wire.switch.redirect(wire.channel, "cb-conf", "leg-a")
    assert wire.channel.room is not None and wire.call.status is None
    wire.advance(0.4)
    assert not caller.keyed
    wire.advance(1.0)
    assert [d for _, d in caller.keyed] == ["#", "1", "1"]
    (event,) = [body for body in events if body.get("Event") == "UserEvent"]
    assert (event["UserEvent"], event["CbRoom"], event["CbCmd"]) == ("CbDtmf", "s42", "endb")
    assert wire.channel.alive and wire.channel.room is not None  # back in the room


def test_keys_in_the_room_without_the_menu_do_nothing():
    """A leg in the room without cb_menu_a (a destination): #11 sends no UserEvent."""
    caller = ScriptedCaller().press("#11", prompt=ROOM)
    wire = Wire(caller=caller)
    events: list = []
    wire.switch.add_listener(lambda category, body: events.append(dict(body)["Event"]))
    wire.channel.variables["CB_ROOM"] = "s42"
    wire.switch.redirect(wire.channel, "cb-conf", "leg-b")
    wire.advance(2.0)
    assert len(caller.keyed) == 3 and "UserEvent" not in events
