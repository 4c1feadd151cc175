"""The IVR's FastAGI handlers over the engine (FakeSwitch, MemoryStore, task.Clock) and a
scripted AGI channel: every path of the phone callback, billing included.

The end-to-end tests (tests/integration/test_ivr.py) walk the same paths with the daemon
under twistd, the simulated Asterisk and a real redis-server.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from typing import Any

from twisted.internet import defer
from twisted.internet.task import deferLater

from callbackd.agi.protocol import Reply
from callbackd.agi.server import AGIHangup
from callbackd.config import IvrConfig
from callbackd.core.model import Account, PhonebookEntry
from callbackd.ivr.service import KEY_POLL_MS, PhoneCallback, caller_number
from tests.test_engine import DESTINATION, EXTRA, SOURCE, World, result

ACCESS = "4930555000"
#: one poll for keys under the ringback: the news of the destination waits for its end
POLL = KEY_POLL_MS / 1000
CONFIG = IvrConfig(
    enabled=True,
    access_numbers=f"{ACCESS}, 4930555001:fr",
    dids="4930555099:alice",
    ring_delay=4.0,
    callback_delay=3.0,
)


class Caller:
    """A scripted AGI channel: answers each entry from ``entries`` and records what it
    heard (``played``: files, ``number:N``, ``digits:D``), the applications run and
    the languages set."""

    def __init__(self, clock: Any, env: dict[str, str], entries=(), keys=()) -> None:
        self.clock = clock
        self.env = env
        self.args = tuple(v for k, v in sorted(env.items()) if k.startswith("agi_arg_"))
        script = env.get("agi_network_script", "ivr")
        self.script, _, query = script.partition("?")
        self.query = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
        self.entries = deque(entries)
        self.keys = deque(keys)
        self.played: list[str] = []
        self.apps: list[tuple[str, ...]] = []
        self.languages: list[str] = []
        self.hung_up = False
        self.hang_up_at_entry: int | None = None

    def _check(self) -> None:
        if self.hung_up:
            raise AGIHangup("the caller hung up")

    async def stream_file(self, name: str, escape: str = "") -> str:
        self._check()
        self.played.append(name)
        return ""

    async def say_number(self, n: int, escape: str = "") -> str:
        self._check()
        self.played.append(f"number:{n}")
        return ""

    async def say_digits(self, digits: str, escape: str = "") -> str:
        self._check()
        self.played.append(f"digits:{digits}")
        return ""

    async def command(self, command: str, *args: Any) -> Reply:
        self._check()
        self.played.append(f"number:{args[0]}:{args[2]}")
        return Reply(200, "0", None, None, "200 result=0")

    async def get_data(self, name: str, timeout_ms: int, max_digits: int) -> str:
        self._check()
        if not self.entries:
            self.hung_up = True
            raise AGIHangup("the script is over")
        entry = self.entries.popleft()
        if entry is None:
            self.hung_up = True
            raise AGIHangup("hung up at the prompt")
        return entry[:max_digits]

    async def wait_for_digit(self, timeout_ms: int) -> str:
        self._check()
        if self.keys:
            return self.keys.popleft()
        return await deferLater(self.clock, timeout_ms / 1000, lambda: "")

    async def exec_(self, app: str, *args: str) -> int:
        self._check()
        self.apps.append((app, *args))
        return 0

    async def set_language(self, language: str) -> None:
        self._check()
        self.languages.append(language)

    async def hangup(self) -> None:
        self.apps.append(("HANGUP",))
        self.hung_up = True

    def prompts(self) -> list[str]:
        return [p.removeprefix("callbackd/") for p in self.played if p.startswith("callbackd/")]


class Phone:
    """The IVR over an engine world."""

    def __init__(self, config: IvrConfig = CONFIG, **world: Any) -> None:
        self.world = World(**world)
        self.clock = self.world.clock
        self.store = self.world.store
        self.switch = self.world.switch
        self.ivr = PhoneCallback(
            config, self.world.manager, self.store, self.clock, decimals=5, currency="EUR"
        )

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    def call(self, dialled=ACCESS, caller_id=SOURCE) -> Caller:
        """Call the access number; after the ring and the callback delay, the callback."""
        env = {"agi_callerid": caller_id, "agi_arg_1": dialled, "agi_network_script": "ivr"}
        caller = Caller(self.clock, env)
        d = defer.ensureDeferred(self.ivr.inbound(caller))  # type: ignore[arg-type]
        self.advance(CONFIG.ring_delay)
        result(d)
        self.advance(CONFIG.callback_delay)
        return caller

    def sid(self) -> str:
        (sid,) = self.world.manager.sessions_of("alice")
        return sid

    def answer(self, channel_id: str) -> None:
        self.switch.answer(channel_id, self.clock.seconds())

    def leg(self, sid: str, entries=(), keys=()) -> tuple[Caller, defer.Deferred[None]]:
        """The callback leg's AGI conversation (answered, or back from the room)."""
        env = {"agi_network_script": f"ivr-callback?session={sid}"}
        caller = Caller(self.clock, env, entries, keys)
        return caller, defer.ensureDeferred(self.ivr.callback(caller))  # type: ignore[arg-type]


def verified(phone: Phone, number: str = SOURCE) -> None:
    result(phone.store.add_caller_id("alice", number, verified=True))


# -- the call to the access number -------------------------------------------------------


def test_the_access_call_rings_is_rejected_unanswered_and_called_back():
    phone = Phone()
    verified(phone)
    env = {"agi_callerid": SOURCE, "agi_arg_1": ACCESS}
    caller = Caller(phone.clock, env)
    d = defer.ensureDeferred(phone.ivr.inbound(caller))  # type: ignore[arg-type]
    assert caller.apps == [("Ringing",)] and not d.called
    phone.advance(CONFIG.ring_delay)
    assert caller.apps == [("Ringing",), ("Busy", "1")] and d.called
    assert ("ANSWER",) not in caller.apps  # the caller pays nothing
    assert not phone.switch.originated
    phone.advance(CONFIG.callback_delay)
    [originate] = phone.switch.originated
    assert originate.role == "ivr" and "4930123456@" in originate.channel


def test_one_callback_per_number_at_a_time():
    phone = Phone()
    verified(phone)
    phone.call()
    phone.call()
    assert len(phone.switch.originated) == 1
    sid = phone.sid()
    phone.switch.fail(f"{sid}-a1", "noanswer", phone.clock.seconds())
    phone.call()
    assert len(phone.switch.originated) == 2


def test_an_unknown_caller_id_gets_no_callback():
    phone = Phone()
    caller = phone.call()
    assert ("Busy", "1") in caller.apps
    assert not phone.switch.originated
    phone.call(caller_id="unknown")
    assert not phone.switch.originated


# -- unknown callers: the PIN names the account ----------------------------------------

UNKNOWN = dataclasses.replace(CONFIG, unknown_account="house", unknown_pin_timeout=60.0)


def house_phone(config: IvrConfig = UNKNOWN) -> Phone:
    """alice with PIN 4321, and the operator's account that pays the PIN legs."""
    phone = Phone(config)
    result(phone.store.create_account(Account("house"), "house-pw"))
    result(phone.store.credit("house", 1_000_000, "initial"))
    result(phone.store.set_pin("alice", "4321"))
    return phone


def house_sid(phone: Phone) -> str:
    (sid,) = phone.world.manager.sessions_of("house")
    return sid


def test_an_unknown_caller_is_called_back_on_the_operators_account_and_asked_the_pin():
    """Wrong then right PIN: the PIN names alice, the caller ID is saved verified on her
    account, the operator's leg ends, and alice's callback follows with no PIN."""
    phone = house_phone()
    phone.call()
    sid = house_sid(phone)
    assert not phone.world.manager.sessions_of("alice")
    phone.answer(f"{sid}-a1")
    caller, d = phone.leg(sid, entries=["3", "1111", "4321"])  # French from the menu
    assert caller.prompts()[5:] == [
        "enter_pin",
        "wrong_pin",
        "enter_pin",
        "pin_accepted",
        "calling_back",
    ]
    assert ("HANGUP",) in caller.apps
    assert result(phone.store.account_for_caller_id(SOURCE)) == "alice"
    phone.switch.hang_up(f"{sid}-a1", phone.clock.seconds())
    assert not phone.world.manager.sessions_of("alice")
    phone.advance(CONFIG.callback_delay)
    sid = phone.sid()  # alice's own callback now, to the same number
    assert SOURCE[1:] in phone.switch.originated[-1].channel
    phone.answer(f"{sid}-a1")
    caller, d = phone.leg(sid, entries=[None])  # in the language chosen before
    assert caller.prompts()[0] == "your_balance_is" and "enter_pin" not in caller.prompts()
    assert caller.languages[0] == "fr"
    # the operator paid the PIN leg; alice pays from her callback on
    cdrs = result(phone.store.list_cdrs("house"))
    assert [c.session_id for c in cdrs if c.kind == "leg"]


def test_an_unknown_callers_wrong_pins_lock_the_caller_id():
    phone = house_phone()
    phone.call()
    sid = house_sid(phone)
    phone.answer(f"{sid}-a1")
    caller, d = phone.leg(sid, entries=["1", "1111", "2222", "3333"])
    assert caller.prompts()[-2:] == ["pin_locked", "goodbye"]
    now = phone.clock.seconds()
    assert result(phone.store.pin_locked_until("", SOURCE, now)) > now
    assert not result(phone.store.pin_locked_until("alice", "+4930999999", now))
    phone.switch.hang_up(f"{sid}-a1", now)
    phone.call()
    sid = house_sid(phone)
    phone.answer(f"{sid}-a1")
    caller, d = phone.leg(sid, entries=["1", "4321"])  # right, but locked: not even checked
    assert caller.prompts()[-2:] == ["pin_locked", "goodbye"]
    assert result(phone.store.account_for_caller_id(SOURCE)) is None


def test_the_operators_own_pin_names_no_account():
    """A PIN of the operator's account (which should have none) is a wrong PIN: its
    legs are never an unknown caller's callback."""
    phone = house_phone()
    result(phone.store.set_pin("house", "97531"))
    phone.call()
    sid = house_sid(phone)
    phone.answer(f"{sid}-a1")
    caller, d = phone.leg(sid, entries=["1", "97531", None])
    assert caller.prompts()[5:] == ["enter_pin", "wrong_pin", "enter_pin"]
    assert result(phone.store.account_for_caller_id(SOURCE)) is None


def test_unknown_callers_are_limited_per_caller_id_and_in_all():
    config = dataclasses.replace(UNKNOWN, unknown_per_caller=2, unknown_total=3)
    phone = house_phone(config)
    for caller_id, called in [
        (SOURCE, True),
        (SOURCE, True),
        (SOURCE, False),  # the third to this caller ID in the period
        ("+4930111111", True),
        ("+4930222222", False),  # the fourth in all
    ]:
        before = len(phone.switch.originated)
        phone.call(caller_id=caller_id)
        assert len(phone.switch.originated) == before + called, caller_id
        for sid in phone.world.manager.sessions_of("house"):
            phone.switch.fail(f"{sid}-a1", "noanswer", phone.clock.seconds())


def test_the_operators_pin_leg_is_hung_up_after_its_timeout():
    phone = house_phone()
    phone.call()
    sid = house_sid(phone)
    phone.answer(f"{sid}-a1")
    phone.advance(UNKNOWN.unknown_pin_timeout - 1)
    assert phone.world.manager.sessions_of("house")
    phone.advance(1)
    assert (f"{sid}-a1", 16) in phone.switch.hung_up


def test_unknown_callers_refused_get_no_callback():
    phone = house_phone(dataclasses.replace(UNKNOWN, unknown_callers="refuse"))
    phone.call()
    assert not phone.switch.originated


def test_caller_numbers():
    assert caller_number("+4930123456") == "+4930123456"
    assert caller_number("004930123456") == "+4930123456"
    for bad in ("unknown", "", "030123456", "+49 30", "+١٢٣٤٥٦٧", "1" * 16):
        assert caller_number(bad) == ""


# -- the callback leg ---------------------------------------------------------------------


def test_ani_callback_balance_destination_end_and_a_second_destination():
    phone = Phone()
    verified(phone)
    phone.call()
    sid = phone.sid()
    phone.answer(f"{sid}-a1")
    caller, d = phone.leg(sid, entries=[DESTINATION[1:]])
    # the balance (100.00000 EUR), "enter the number", the maximum duration, ringback
    assert caller.languages == ["en"]
    assert caller.prompts()[:3] == ["your_balance_is", "euros", "enter_number"]
    assert "max_duration_is" in caller.prompts() and ("Playtones", "ring") in caller.apps
    [_, dest] = phone.switch.originated
    assert dest.role == "join" and dest.channel_id == f"{sid}-c1"
    phone.advance(2)
    phone.answer(f"{sid}-c1")
    assert phone.switch.joined == [(f"{sid}-a1", sid)]
    phone.advance(POLL)
    assert d.called and not caller.hung_up  # it left the IVR for the room
    phone.advance(30)
    # the destination hangs up: the user goes back to the IVR, and dials again
    phone.switch.hang_up(f"{sid}-c1", phone.clock.seconds())
    assert phone.switch.returned == [(f"{sid}-a1", sid)]
    caller, d = phone.leg(sid, entries=["00" + EXTRA[1:]])
    assert caller.prompts()[:2] == ["call_ended", "enter_another_number"]
    assert phone.switch.originated[-1].channel_id == f"{sid}-d1"
    phone.advance(1)
    phone.answer(f"{sid}-d1")
    phone.advance(POLL)
    phone.advance(20)
    # the user hangs up: the session ends, every leg is billed per second
    phone.switch.hang_up(f"{sid}-a1", phone.clock.seconds())
    phone.switch.hang_up(f"{sid}-d1", phone.clock.seconds())
    cdrs = phone.world.cdrs()
    assert cdrs["additional-1"].billed_seconds == 31
    assert cdrs["additional-2"].billed_seconds == 21
    assert cdrs["source"].billed_seconds == 55
    cost = sum(c.cost for name, c in cdrs.items() if name != "session")
    assert cdrs["session"].cost == cost
    assert phone.world.balance() == 10_000_000 - cost
    assert sid not in phone.ivr.calls


def test_the_end_code_while_ringing_drops_the_destination():
    phone = Phone()
    verified(phone)
    phone.call()
    sid = phone.sid()
    phone.answer(f"{sid}-a1")
    caller, d = phone.leg(sid, entries=[DESTINATION[1:], None], keys=["#", "1", "1"])
    phone.advance(1)
    assert (f"{sid}-c1", 16) in phone.switch.hung_up
    assert caller.prompts()[-2:] == ["call_ended", "enter_another_number"]


def test_111_says_the_balance_and_a_failed_destination_is_announced():
    phone = Phone()
    verified(phone)
    phone.call()
    sid = phone.sid()
    phone.answer(f"{sid}-a1")
    caller, d = phone.leg(sid, entries=["111", DESTINATION[1:], None])
    assert caller.prompts().count("your_balance_is") == 2
    phone.switch.fail(f"{sid}-c1", "busy", phone.clock.seconds())
    phone.advance(POLL)
    assert "destination_busy" in caller.prompts()
    assert caller.prompts()[-1] == "enter_another_number"
    assert result(d) is None  # the caller hung up at the prompt
    assert sid in phone.world.manager.sessions_of("alice")  # its end comes from the switch


def test_speed_dials():
    phone = Phone()
    verified(phone)
    result(phone.store.set_phonebook_entry("alice", PhonebookEntry(7, "office", EXTRA)))
    phone.call()
    sid = phone.sid()
    phone.answer(f"{sid}-a1")
    phone.leg(sid, entries=["7"])
    assert EXTRA[1:] in phone.switch.originated[-1].channel


def test_pin_wrong_then_right_registers_the_caller_id():
    phone = Phone()
    result(phone.store.set_pin("alice", "4321"))
    result(phone.store.add_caller_id("alice", SOURCE))  # registered, not verified
    phone.call()
    sid = phone.sid()
    phone.answer(f"{sid}-a1")
    caller, d = phone.leg(sid, entries=["1111", "4321", None])
    assert caller.prompts()[:4] == ["enter_pin", "wrong_pin", "enter_pin", "pin_accepted"]
    assert result(phone.store.account_for_caller_id(SOURCE)) == "alice"
    # the next call skips the PIN
    phone.switch.hang_up(f"{sid}-a1", phone.clock.seconds())
    phone.call()
    sid = phone.sid()
    phone.answer(f"{sid}-a1")
    caller, d = phone.leg(sid, entries=[None])
    assert "enter_pin" not in caller.prompts()


def test_repeated_wrong_pins_lock_out_and_end_the_call():
    phone = Phone()
    result(phone.store.set_pin("alice", "4321"))
    result(phone.store.add_caller_id("alice", SOURCE))
    phone.call()
    sid = phone.sid()
    phone.answer(f"{sid}-a1")
    caller, d = phone.leg(sid, entries=["1", "2", "3"])
    assert caller.prompts()[-2:] == ["pin_locked", "goodbye"]
    assert ("HANGUP",) in caller.apps
    assert (f"{sid}-a1", 16) in phone.switch.hung_up
    until = result(phone.store.pin_locked_until("alice", SOURCE, phone.clock.seconds()))
    assert until > phone.clock.seconds()
    # the right PIN in the next call is not even checked
    phone.switch.hang_up(f"{sid}-a1", phone.clock.seconds())
    phone.call()
    sid = phone.sid()
    phone.answer(f"{sid}-a1")
    caller, d = phone.leg(sid, entries=["4321"])
    assert caller.prompts()[-2:] == ["pin_locked", "goodbye"]


def test_did_callback_calls_the_predefined_number():
    phone = Phone(default_number="+4989111111", language="es")
    phone.call(dialled="4930555099", caller_id="unknown")
    [originate] = phone.switch.originated
    assert "4989111111@" in originate.channel
    sid = phone.sid()
    phone.answer(f"{sid}-a1")
    caller, d = phone.leg(sid, entries=[None])
    assert caller.languages[0] == "es"


def test_the_language_by_each_rule():
    # the access number's language
    phone = Phone(language="es")
    verified(phone)
    phone.call(dialled="4930555001")
    sid = phone.sid()
    phone.answer(f"{sid}-a1")
    caller, _ = phone.leg(sid, entries=[None])
    assert caller.languages[0] == "fr"
    # else the account's
    phone = Phone(language="vi")
    verified(phone)
    phone.call()
    sid = phone.sid()
    phone.answer(f"{sid}-a1")
    caller, _ = phone.leg(sid, entries=[None])
    assert caller.languages[0] == "vi"
    assert caller.played[:2] == ["callbackd/your_balance_is", "number:100"]


def test_hanging_up_at_every_prompt_closes_the_session_and_its_billing():
    for at in range(4):
        phone = Phone()
        verified(phone)
        phone.call()
        sid = phone.sid()
        phone.answer(f"{sid}-a1")
        entries = ["111", "9", DESTINATION[1:]][:at] + [None]
        caller, d = phone.leg(sid, entries=entries)
        if at == 3:  # hangs up while the destination rings: it is dropped
            caller.hung_up = True
            phone.advance(POLL)
            assert (f"{sid}-c1", 16) in phone.switch.hung_up
        assert result(d) is None
        phone.advance(5)
        phone.switch.hang_up(f"{sid}-a1", phone.clock.seconds())
        for request in phone.switch.originated[1:]:
            phone.switch.hang_up(request.channel_id, phone.clock.seconds())
        assert not phone.world.manager.sessions_of("alice")
        assert sid not in phone.ivr.calls
        cdrs = phone.world.cdrs()
        assert cdrs["source"].billed_seconds == (6 if at == 3 else 5)  # started seconds
        assert phone.world.balance() == 10_000_000 - cdrs["session"].cost


def test_an_unknown_session_is_hung_up():
    phone = Phone()
    caller, d = phone.leg("nosuch")
    assert result(d) is None and ("HANGUP",) in caller.apps
