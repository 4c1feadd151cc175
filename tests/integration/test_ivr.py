"""The phone callback end to end: the daemon under twistd (FastAGI server and IVR on), a
real redis-server, and the simulated Asterisk in this test's process over real TCP (its
AMI server, which the daemon logs into as an Asterisk, and its FastAGI client, which
runs ``AGI()`` against the daemon's FastAGI port as Asterisk does), with scripted
callers keying DTMF on the calls.

Every time is real: the simulator stamps its events with the wall clock and the daemon
bills from them, so a leg's billed seconds are its own up-time rounded up.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread

from callbackd.core.model import Account
from callbackd.ivr import speech
from callbackd.ivr.service import CALLBACK_URL
from callbackd.simulator.caller import ROOM, ScriptedCaller
from callbackd.simulator.service import SimulatorService
from tests.integration.daemon import Daemon
from tests.procs import free_port
from tests.stores import redis_store

pytestmark = pytest.mark.integration

ALICE = "+15550011111"  # the demo account's predefined number, a verified caller ID
FRIEND = "15550012222"  # answers after 1 s
OTHER = "15550013333"  # answers after 1 s
BUSY = "15550015555"
RINGS = "15550016666"  # never answers
ACCESS = "4930555000"
ACCESS_FR = "4930555001"
#: an access number per language
ACCESS_IN = {lang: f"49305550{10 + i}" for i, lang in enumerate(speech.LANGUAGES)}
DID = "4930555099"
RULES = [
    f"{FRIEND}=answer:1",
    f"{OTHER}=answer:1",
    f"{BUSY}=busy",
    f"{RINGS}=ring",
    "*=answer:1",
]
#: the demo tariff's price of 1555... per minute (0.014 EUR), in minor units (5 decimals)
PRICE_1555 = 1400
TIME_SCALE = 0.2
PIN_PEPPER = "test pepper of the PIN index"


async def until(condition: Callable[[], Any], timeout: float = 20.0, what: str = "") -> Any:
    """Poll ``condition`` with the reactor running until it is true; its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        await deferLater(reactor, 0.05, lambda: None)


class Rig:
    """The simulator in this process, the daemon under twistd, redis, and helpers."""

    def __init__(self, workdir: Path, redis_port: int) -> None:
        self.workdir = workdir
        self.redis_port = redis_port
        self.agi_port = free_port()
        self.simulator = SimulatorService(
            "tcp:0:interface=127.0.0.1",
            "callbackd",
            "s3cret",
            reactor=reactor,
            clock=reactor,
            rules=RULES,
            time_scale=TIME_SCALE,
            agi_address=lambda host, port: ("127.0.0.1", self.agi_port),
        )
        # the callback leg's ivr-a runs the IVR (etc/asterisk/extensions.conf)
        self.simulator.add_agi_extension("cb-conf", "ivr-a", CALLBACK_URL)
        self.store = redis_store(redis_port)
        # the daemon's PIN index key ([ivr] pin_pepper), so PINs set here name accounts
        self.store.pin_pepper = PIN_PEPPER.encode()
        self.pepper_file = workdir / "pin-pepper.secret"
        self.pepper_file.write_text(PIN_PEPPER)

    async def start(self, **ivr: str) -> Rig:
        self.simulator.startService()
        port = await self.simulator.ready
        self.switch = self.simulator.switch
        assert self.simulator.agi is not None
        self.agi = self.simulator.agi
        settings = {
            "enabled": "yes",
            "access_numbers": ", ".join(
                [ACCESS, f"{ACCESS_FR}:fr", *(f"{n}:{lang}" for lang, n in ACCESS_IN.items())]
            ),
            "dids": f"{DID}:bob",
            "ring_delay": "0.3",
            "callback_delay": "0.3",
            "pin_pepper_file": str(self.pepper_file),
            **ivr,
        }
        extra = (
            f"\n[agi]\nenabled = yes\nlisten = tcp:{self.agi_port}:interface=127.0.0.1\n"
            + "\n[ivr]\n"
            + "".join(f"{k} = {v}\n" for k, v in settings.items())
        )
        self.daemon = Daemon(
            self.workdir / "daemon",
            redis_port=self.redis_port,
            ami_port=port,
            ami_username="callbackd",
            ami_secret="s3cret",
            extra=extra,
        )
        await deferToThread(self.daemon.start)
        await deferToThread(self.daemon.wait_healthy)
        await self.store.connect()
        deadline = time.monotonic() + 20
        while await self.store.get_account("bob") is None or not await self.balance("alice"):
            assert time.monotonic() < deadline, "the demo accounts never appeared"
            await deferLater(reactor, 0.1, lambda: None)
        return self

    async def balance(self, username: str) -> int:
        return int(await self.store.get_balance(username))

    async def stop(self) -> None:
        await deferToThread(self.daemon.stop)
        await self.store.disconnect()
        await self.simulator.stopService()

    def call(self, caller_id: str, dialled: str = ACCESS) -> Any:
        """A call to the access number (or a DID), run by the daemon's IVR script."""
        return self.agi.inbound_call(
            f'"Caller" <{caller_id}>', dialled, "agi://127.0.0.1:4573/ivr", args=[dialled]
        )

    def answers(self, number: str, caller: ScriptedCaller) -> ScriptedCaller:
        """``caller`` is the person on the next IVR conversation of calls to ``number``."""
        self.agi.callers[number] = caller
        return caller

    def leg(self, suffix: str) -> Any:
        """The live simulated channel of the daemon's leg ``<sid>-<suffix>``."""
        for ch in self.switch.channels():
            if ch.uniqueid.endswith(f"-{suffix}") and not ch.is_local_two:
                return ch
        return None

    def ivr_calls(self) -> list:
        return [c for c in self.agi.calls if "ivr-callback" in c.url]

    async def session_cdrs(self, sid: str) -> dict[str, Any]:
        async def ended() -> bool:
            return await self.store.load_session(sid) is None

        deadline = time.monotonic() + 15
        while not await ended():
            assert time.monotonic() < deadline, f"session {sid} never ended"
            await deferLater(reactor, 0.1, lambda: None)
        cdrs = await self.store.list_cdrs("alice")
        return {c.leg or "session": c for c in cdrs if c.session_id == sid}


@pytest.fixture
def rig(tmp_path, redis_server):
    redis_server.flush()
    made = Rig(tmp_path, redis_server.port)
    yield made
    pytest_twisted.blockon(defer.ensureDeferred(made.stop()))


def check_billed(cdr: Any) -> None:
    """A leg is billed its own up-time, rounded up to seconds, at the 1555 price."""
    seconds = math.ceil(cdr.ended_at - cdr.answered_at - 1e-6)
    assert cdr.billed_seconds == seconds, cdr
    assert cdr.cost == -(-PRICE_1555 * seconds // 60), cdr


@pytest_twisted.ensureDeferred
async def test_ani_callback_balance_destination_end_code_second_destination_hang_up(rig):
    await rig.start()
    await rig.store.add_caller_id("alice", ALICE, verified=True)
    before = await rig.balance("alice")
    number = ALICE[1:]
    caller = (
        ScriptedCaller()
        .press(FRIEND + "#", prompt="callbackd/enter_number")
        # keyed in the room a second after the destination answered: ConfBridge's menu
        # (cb_menu_a) turns it into the UserEvent the daemon hears, as on Asterisk
        .press("#11", prompt=ROOM, delay=1.0)
    )
    rig.answers(number, caller)
    inbound = rig.call(ALICE)
    # it rang, was rejected unanswered (Busy), and was never answered
    assert await inbound.done == "HANGUP"
    assert not any("ANSWER" in line.decode() for _, d, line in inbound.transcript if d == "a>")
    source = await until(lambda: rig.leg("a1"), what="the callback")
    sid = source.uniqueid.rsplit("-", 1)[0]
    # the destination answers: the user's leg leaves the IVR for the room
    await until(lambda: rig.leg("c1") and source.room, what="talking")
    first = rig.ivr_calls()[0]
    money = speech.files_played(speech.money_prompts(before, 5, "EUR", "en"), "en")
    assert first.played[: 1 + len(money) + 1] == [
        "callbackd/your_balance_is",
        *money,
        "callbackd/enter_number",
    ]
    assert "callbackd/max_duration_is" in first.played
    # #11 keyed in the room ends the destination; back in the IVR, a second destination
    rig.answers(
        number, ScriptedCaller().press(OTHER + "#", prompt="callbackd/enter_another_number")
    )
    await until(lambda: len(caller.keyed) == len(FRIEND) + 4, what="#11 keyed in the room")
    await until(lambda: rig.leg("d1") and source.room, what="the second destination")
    assert "callbackd/call_ended" in rig.ivr_calls()[1].played
    await deferLater(reactor, 1.0, lambda: None)
    rig.switch.hangup(source, 16)
    cdrs = await rig.session_cdrs(sid)
    for leg in ("source", "additional-1", "additional-2"):
        check_billed(cdrs[leg])
    assert cdrs["additional-1"].address == f"phone:+{FRIEND}"
    assert cdrs["additional-2"].address == f"phone:+{OTHER}"
    total = sum(c.cost for name, c in cdrs.items() if name != "session")
    assert cdrs["session"].cost == total
    assert await rig.balance("alice") == before - total


@pytest_twisted.ensureDeferred
async def test_pin_wrong_then_right_registers_the_caller_id(rig):
    await rig.start()
    await rig.store.set_pin("alice", "2468")
    await rig.store.add_caller_id("alice", ALICE)  # not verified yet
    caller = (
        ScriptedCaller()
        .press("1111#", prompt="callbackd/enter_pin")
        .press("2468#", prompt="callbackd/enter_pin")
        .hang_up(prompt="callbackd/enter_number")
    )
    rig.answers(ALICE[1:], caller)
    rig.call(ALICE)
    await until(lambda: caller.hung_up, what="the caller's script")
    played = rig.ivr_calls()[0].played
    assert "callbackd/wrong_pin" in played and "callbackd/pin_accepted" in played
    assert await until(lambda: rig.leg("a1") is None, what="the end") is True
    assert await rig.store.account_for_caller_id(ALICE) == "alice"


@pytest_twisted.ensureDeferred
async def test_repeated_wrong_pins_lock_out(rig):
    await rig.start(pin_attempts="2")
    await rig.store.set_pin("alice", "2468")
    await rig.store.add_caller_id("alice", ALICE)
    caller = (
        ScriptedCaller()
        .press("1111#", prompt="callbackd/enter_pin")
        .press("3333#", prompt="callbackd/enter_pin")
    )
    rig.answers(ALICE[1:], caller)
    rig.call(ALICE)
    await until(lambda: rig.ivr_calls() and rig.ivr_calls()[0].status, what="the IVR's end")
    assert rig.ivr_calls()[0].played[-2:] == ["callbackd/pin_locked", "callbackd/goodbye"]
    assert await rig.store.pin_locked_until("alice", ALICE, time.time()) > time.time()
    assert await rig.store.account_for_caller_id(ALICE) is None
    assert "PIN entry locked for account alice" in rig.daemon.log()


@pytest_twisted.ensureDeferred
async def test_did_callback_calls_the_predefined_number_in_the_accounts_language(rig):
    await rig.start()
    bob = "15550014444"  # the demo account bob's predefined number (busy here)
    caller = ScriptedCaller().hang_up(prompt="callbackd/enter_number")
    rig.answers(bob, caller)
    rig.call("+4930999999", dialled=DID)  # any caller ID: the DID names the account
    source = await until(lambda: rig.leg("a1"), what="the callback")
    assert source.dialled == bob


@pytest_twisted.ensureDeferred
async def test_each_language_by_each_rule_says_the_balance_in_its_words(rig):
    """The access number's language, else the account's, else the caller's choice from
    the menu: for each of the five, the files played for the balance are the say
    engine's for that language."""
    await rig.start()
    await rig.store.add_caller_id("alice", ALICE, verified=True)
    for rule in ("access number", "account", "menu"):
        for index, language in enumerate(speech.LANGUAGES, 1):
            dialled, account_language = ACCESS_IN[language], "de"
            caller = ScriptedCaller()
            if rule == "account":
                dialled, account_language = ACCESS, language
            elif rule == "menu":
                dialled = ACCESS
                caller.press(str(index), prompt="callbackd/language_option")
            await rig.store.update_account("alice", language=account_language)
            await deferLater(reactor, 0.3, lambda: None)  # the change feed reaches the daemon
            caller.hang_up(prompt="callbackd/enter_number")
            rig.answers(ALICE[1:], caller)
            before = await rig.balance("alice")
            calls = len(rig.ivr_calls())
            rig.call(ALICE, dialled=dialled)
            await until(lambda c=caller: c.hung_up, what=f"{rule} {language}")
            call = rig.ivr_calls()[calls]
            money = speech.files_played(speech.money_prompts(before, 5, "EUR", language), language)
            start = call.played.index("callbackd/your_balance_is") + 1
            assert call.played[start : start + len(money)] == money, (rule, language)
            assert call.channel.language == language
            if rule == "menu":
                assert call.played[0] == "callbackd/language_option"
            await until(lambda: rig.leg("a1") is None, what="the end of the call")
            while await rig.store.list_sessions():
                await deferLater(reactor, 0.1, lambda: None)


@pytest_twisted.ensureDeferred
async def test_the_caller_hanging_up_at_every_prompt(rig):
    """Wherever the caller hangs up, the session ends, nothing stays up, and the
    balance went down by exactly what the CDRs say."""
    await rig.start()
    await rig.store.set_pin("alice", "2468")
    await rig.store.add_caller_id("alice", ALICE)  # not verified: the PIN is asked
    await rig.store.update_account("alice", language="de")  # the menu is offered
    scripts = {
        "the language menu": ScriptedCaller().hang_up(prompt="callbackd/language_option"),
        "the PIN": ScriptedCaller().press("1").hang_up(prompt="callbackd/enter_pin"),
        "the number": ScriptedCaller()
        .press("1")
        .press("2468#", prompt="callbackd/enter_pin")
        .hang_up(prompt="callbackd/enter_number"),
        # the right PIN above registered the caller ID: no PIN now
        "the balance": ScriptedCaller()
        .press("1")
        .hang_up(prompt="callbackd/your_balance_is", delay=0.1),
        "the maximum duration": ScriptedCaller()
        .press("1")
        .press(BUSY[:-1] + "9#", prompt="callbackd/enter_number")
        .hang_up(prompt="callbackd/max_duration_is"),
        # WAIT FOR DIGIT under the ringback: the destination still rings
        "the ringback": ScriptedCaller()
        .press("1")
        .press(RINGS + "#", prompt="callbackd/enter_number")
        .press("", prompt="callbackd/connecting", delay=0.0)
        .hang_up(delay=1.0),
        # talking in the room, out of AGI()
        "the room": ScriptedCaller()
        .press("1")
        .press(FRIEND + "#", prompt="callbackd/enter_number")
        .hang_up(prompt=ROOM, delay=1.0),
    }
    for where, caller in scripts.items():
        rig.answers(ALICE[1:], caller)
        before = await rig.balance("alice")
        rig.call(ALICE)
        await until(lambda c=caller: c.hung_up, what=where)
        await until(lambda: not rig.switch.channels(), what=f"no channel after {where}")
        sessions = await rig.store.list_sessions()
        while sessions:
            await deferLater(reactor, 0.1, lambda: None)
            sessions = await rig.store.list_sessions()
        cdrs = await rig.store.list_cdrs("alice")
        spent = sum(c.cost for c in cdrs if c.kind == "leg" and c.ended_at >= 0 and c.cost)
        assert await rig.balance("alice") == 1_000_000 - spent, where
        legs = [c for c in cdrs if c.kind == "leg"]
        for cdr in legs:
            if cdr.answered_at:
                check_billed(cdr)
        assert before >= await rig.balance("alice")
        if where == "the room":
            (talked,) = [c for c in legs if c.address == f"phone:+{FRIEND}"]
            assert talked.answered_at and talked.cost > 0
        if where == "the ringback":
            (ringing,) = [c for c in legs if c.address == f"phone:+{RINGS}"]
            assert not ringing.answered_at and ringing.cost == 0


@pytest_twisted.ensureDeferred
async def test_a_busy_destination_and_the_end_code_while_ringing_lead_back_to_the_number(rig):
    """Busy: said, and the user dials again; #11 under the ringback drops the call that
    rings; the user's leg stays up throughout and only the answered legs cost money."""
    await rig.start()
    await rig.store.add_caller_id("alice", ALICE, verified=True)
    before = await rig.balance("alice")
    caller = (
        ScriptedCaller()
        .press(BUSY + "#", prompt="callbackd/enter_number")
        .press(RINGS + "#", prompt="callbackd/enter_another_number")
        .press("", prompt="callbackd/connecting", delay=0.0)
        # under the ringback, within one WAIT FOR DIGIT (a key between two is lost,
        # as on Asterisk)
        .press("#11", delay=0.5)
        .hang_up(prompt="callbackd/enter_another_number")
    )
    rig.answers(ALICE[1:], caller)
    rig.call(ALICE)
    source = await until(lambda: rig.leg("a1"), what="the callback")
    sid = source.uniqueid.rsplit("-", 1)[0]
    await until(lambda: caller.hung_up, what="the caller's script")
    played = rig.ivr_calls()[0].played
    assert "callbackd/destination_busy" in played
    assert played.count("callbackd/call_ended") == 1
    await until(lambda: not rig.switch.channels(), what="every channel gone")
    cdrs = await rig.session_cdrs(sid)
    assert cdrs["additional-1"].cause == "busy" and cdrs["additional-1"].cost == 0
    assert cdrs["additional-2"].answered_at == 0 and cdrs["additional-2"].cost == 0
    check_billed(cdrs["source"])
    assert await rig.balance("alice") == before - cdrs["source"].cost


@pytest_twisted.ensureDeferred
async def test_an_unknown_caller_keys_a_wrong_then_the_right_pin_and_is_called_back(rig):
    """A caller ID registered to no account: called back on the operator's account
    ([ivr] unknown_account), asked the PIN, which names alice; the caller ID is saved
    on her account, the operator's leg ends, and alice's own callback follows in the
    language of the access number, with no PIN. The operator paid the PIN leg, alice
    her own; both per second."""
    stranger = "+15550017777"
    await rig.start(unknown_account="house")
    await rig.store.create_account(Account("house"), "house-pw")
    await rig.store.credit("house", 1_000_000, "initial")
    await rig.store.set_pin("alice", "24680")
    alice_before = await rig.balance("alice")
    first = (
        ScriptedCaller()
        .press("1111#", prompt="callbackd/enter_pin")
        .press("24680#", prompt="callbackd/enter_pin")
    )
    rig.answers(stranger[1:], first)
    rig.call(stranger, dialled=ACCESS_IN["es"])
    await until(lambda: rig.ivr_calls(), what="the PIN leg")
    pin_leg = rig.ivr_calls()[0]
    await until(lambda: "callbackd/calling_back" in pin_leg.played, what="the right PIN")
    second = ScriptedCaller().hang_up(prompt="callbackd/enter_number")
    rig.answers(stranger[1:], second)
    assert pin_leg.played[:4] == [
        "callbackd/enter_pin",
        "callbackd/wrong_pin",
        "callbackd/enter_pin",
        "callbackd/pin_accepted",
    ]
    assert pin_leg.channel.language == "es"
    await until(lambda: second.hung_up, what="alice's callback")
    own = rig.ivr_calls()[1]
    assert "callbackd/enter_pin" not in own.played
    assert own.played[0] == "callbackd/your_balance_is" and own.channel.language == "es"
    assert await rig.store.account_for_caller_id(stranger) == "alice"
    await until(lambda: not rig.switch.channels(), what="every channel gone")
    while await rig.store.list_sessions():
        await deferLater(reactor, 0.1, lambda: None)
    (house_leg,) = [c for c in await rig.store.list_cdrs("house") if c.kind == "leg"]
    check_billed(house_leg)
    assert await rig.balance("house") == 1_000_000 - house_leg.cost
    (alice_leg,) = [c for c in await rig.store.list_cdrs("alice") if c.kind == "leg"]
    check_billed(alice_leg)
    assert alice_leg.address == f"phone:{stranger}"
    assert await rig.balance("alice") == alice_before - alice_leg.cost
    assert "the PIN of unknown caller ID +15550017777 names account alice" in rig.daemon.log()
    # the next call to the access number: alice's callback straight away, no PIN
    third = rig.answers(stranger[1:], ScriptedCaller().hang_up(prompt="callbackd/enter_number"))
    rig.call(stranger)
    await until(lambda: third.hung_up, what="the next call")
    assert "callbackd/enter_pin" not in rig.ivr_calls()[2].played
    assert "ani callback of alice" in rig.daemon.log()
