"""The IVR on FastAGI: carries out the flows of :mod:`callbackd.ivr.flow` (docs/ivr.rst).

Two FastAGI scripts, registered on the FastAGI server's router by ``callbackd.app``:

``ivr`` (:meth:`PhoneCallback.inbound`)
    A call to an access number or a DID (``[cb-access]``): it rings, is rejected
    unanswered (``Ringing``, then ``Busy``: the caller pays nothing), and the caller ID
    (ANI, PIN) or the account's predefined number (DID) is called back through the
    engine (:meth:`SessionManager.start_ivr_callback`).
``ivr-callback`` (:meth:`PhoneCallback.callback`)
    The callback leg once answered (``cb-conf,ivr-a``, ``?session=<id>``): the flow
    runs; a destination that answers moves the leg into the room (the engine's
    ``JoinRoom``), and a destination that ends brings it back here (``ReturnToIvr``),
    where the flow goes on at "enter the number".

The flow of each session lives here, between its AGI conversations, until the session
ends. Digits and numbers come from the keypad and the caller ID from the caller: both
are checked (``flow.keyed_number``, :func:`caller_number`) before anything reaches the
engine, the store or Asterisk.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger

from callbackd.agi.server import AGIChannel, AGICommandFailed, AGIError, AGIHangup
from callbackd.config import IvrConfig
from callbackd.core.session import ADDITIONAL, SessionEvent
from callbackd.engine.errors import CallbackRefused
from callbackd.ivr import flow as f
from callbackd.ivr import speech
from callbackd.store.interface import StoreError

__all__ = [
    "CALLBACK_SCRIPT",
    "CALLBACK_URL",
    "INBOUND_SCRIPT",
    "PhoneCallback",
    "caller_number",
    "rules_of",
]

#: the FastAGI script of calls to the access numbers and DIDs
INBOUND_SCRIPT = "ivr"
#: the FastAGI script of the callback leg once answered
CALLBACK_SCRIPT = "ivr-callback"
#: the ``AGI()`` URL of ``cb-conf,ivr-a`` (etc/asterisk/extensions.conf), for the
#: simulated Asterisk
CALLBACK_URL = f"agi://127.0.0.1:4573/{CALLBACK_SCRIPT}?session=${{CB_ROOM}}"
#: every key: each interrupts a prompt of a Collect
ESCAPE = "0123456789*#"
#: the ringback while a destination is called: polls for keys this often (ms). A key
#: keyed between two polls is lost (Asterisk reads and drops DTMF between AGI
#: commands): long polls leave fewer gaps; the engine's news waits for the poll's end
#: (but an answer, whose Redirect ends the poll at once)
KEY_POLL_MS = 1000
_SESSION_ID = re.compile(r"^[A-Za-z0-9_]{1,40}$")
_DIALLED = re.compile(r"^[0-9]{3,15}$")

#: engine refusal codes -> the flow's reasons
_REFUSALS = {
    "refusal.no_credit": "no_credit",
    "refusal.daily_limit": "no_credit",
    "refusal.blocked_destination": "blocked",
    "refusal.cannot_dial": "blocked",
    "refusal.network_unavailable": "blocked",
    "refusal.bad_address": "invalid",
    "refusal.no_rate": "invalid",
    "refusal.no_route": "invalid",
}


def caller_number(caller_id: str) -> str:
    """The caller ID as an E.164 number (``+`` and digits), or "" when it cannot be one."""
    digits = caller_id.strip()
    if digits.startswith("+"):
        digits = digits[1:]
    elif digits.startswith("00"):
        digits = digits[2:]
    if not digits.isascii() or not digits.isdigit() or not 6 <= len(digits) <= 15:
        return ""
    if digits[0] == "0":
        return ""
    return "+" + digits


def rules_of(config: IvrConfig) -> f.IvrRules:
    """The flow's rules from ``[ivr]``."""
    return f.IvrRules(
        end_code=config.end_code,
        balance_code=config.balance_code,
        announce_balance=config.announce_balance,
        pin_attempts=config.pin_attempts,
    )


@dataclass
class _Call:
    """One phone callback: what the inbound call decided, and its flow."""

    username: str
    number: str
    language: str
    need_pin: bool
    #: an unknown caller ID: the PIN names the account (the leg is ``username``'s, the
    #: operator's); ``account`` is the one named, ``recall`` the callback for it
    identify: bool = False
    account: str = ""
    recall: f.InboundPlan | None = None
    timeout: Any = None
    flow: f.Flow | None = None
    #: the engine's news of the destination, for WaitDestination
    news: defer.DeferredQueue[f.Event] = field(default_factory=defer.DeferredQueue)
    unsubscribe: Callable[[], None] = lambda: None
    ringing: bool = False


class PhoneCallback:
    """The IVR's FastAGI handlers over the engine and the store."""

    log = Logger(namespace="callbackd.ivr")

    def __init__(
        self,
        config: IvrConfig,
        engine: Any,
        store: Any,
        clock: IReactorTime,
        *,
        decimals: int = 2,
        currency: str = "EUR",
    ) -> None:
        self.config = config
        self.rules = rules_of(config)
        self.engine = engine
        self.store = store
        self.clock = clock
        self.decimals = decimals
        self.currency = currency
        #: session id -> its call
        self.calls: dict[str, _Call] = {}
        self._effects: dict[type, Callable[[AGIChannel, str, _Call, Any], Awaitable[Any]]] = {
            f.SetLanguage: self._set_language,
            f.Announce: self._announce,
            f.Collect: self._collect,
            f.CheckPin: self._check_pin,
            f.RecordPinFailure: self._record_pin_failure,
            f.LogLockout: self._log_lockout,
            f.SaveCallerId: self._save_caller_id,
            f.CallBack: self._call_back_for_account,
            f.GetBalance: self._get_balance,
            f.Quote: self._quote,
            f.Dial: self._dial,
            f.WaitDestination: self._wait_destination,
            f.DropDestination: self._drop_destination,
            f.Leave: self._leave,
            f.HangUp: self._hang_up,
        }

    @property
    def router(self) -> dict[str, Callable[[AGIChannel], Awaitable[None]]]:
        """The FastAGI scripts this serves."""
        return {INBOUND_SCRIPT: self.inbound, CALLBACK_SCRIPT: self.callback}

    # -- the call to the access number -------------------------------------------------

    async def inbound(self, channel: AGIChannel) -> None:
        """Let the call ring, reject it unanswered, and call back as planned."""
        env = channel.env
        dialled = channel.args[0] if channel.args else env.get("agi_extension", "")
        caller = caller_number(env.get("agi_callerid", ""))
        if not _DIALLED.match(dialled):
            dialled = ""
        plan = await self._plan(dialled, caller)
        if plan.kind == "unknown":
            plan = await self._limit_unknown(plan)
        self.log.info(
            "IVR call to {dialled} from {caller}: {decision}",
            dialled=dialled or "?",
            caller=caller or "unknown",
            decision=f"{plan.kind} callback of {plan.username}" if plan.username else plan.why,
        )
        try:
            await channel.exec_("Ringing")
            await deferLater(self.clock, self.config.ring_delay, lambda: None)
            await channel.exec_("Busy", "1")  # -1: Busy hangs the channel up
        except AGIError:
            pass  # the caller hung up while it rang: call back all the same
        if plan.username:
            self.clock.callLater(self.config.callback_delay, self._call_back, plan)

    async def _plan(self, dialled: str, caller: str) -> f.InboundPlan:
        dids = self.config.did_accounts
        owner, verified, language, did_number = "", False, "", ""
        unknown_account = ""
        try:
            if dialled in dids:
                account = await self.engine.account(dids[dialled])
                if account is not None:
                    did_number, language = account.default_number, account.language
            elif caller:
                owner = await self.store.account_for_caller_id(caller, verified_only=False) or ""
                if not owner and self.config.unknown_callers == "pin":
                    unknown_account = self.config.unknown_account
                if owner:
                    verified = await self.store.account_for_caller_id(caller) == owner
                    account = await self.engine.account(owner)
                    language = account.language if account is not None else ""
        except StoreError as e:
            return f.InboundPlan(why=f"store: {e}")
        return f.plan_inbound(
            dialled=dialled,
            caller_id=caller,
            access_numbers=self.config.access,
            dids=dids,
            did_owner_number=did_number,
            caller_owner=owner,
            caller_verified=verified,
            account_language=language,
            language_menu=self.config.language_menu,
            unknown_account=unknown_account,
        )

    async def _limit_unknown(self, plan: f.InboundPlan) -> f.InboundPlan:
        """The unknown callers' callbacks are counted per caller ID and in all, each
        within ``[ivr] unknown_period``: beyond ``unknown_per_caller`` or
        ``unknown_total`` a call gets no callback (the operator pays for those legs)."""
        config = self.config
        try:
            mine = await self.store.count_hit(f"ivr:unknown:{plan.number}", config.unknown_period)
            if mine > config.unknown_per_caller:
                return f.InboundPlan(why="too many callbacks to this unknown caller ID")
            every = await self.store.count_hit("ivr:unknown", config.unknown_period)
        except StoreError as e:
            return f.InboundPlan(why=f"store: {e}")
        if every > config.unknown_total:
            return f.InboundPlan(why="too many callbacks to unknown caller IDs")
        return plan

    def _call_back(self, plan: f.InboundPlan) -> defer.Deferred[None]:
        if any(call.number == plan.number for call in self.calls.values()):
            # one phone callback per number at a time: a second call to the access
            # number (or a caller ID spoofed to bomb a user) calls no one again
            self.log.info(
                "IVR callback to {number} already in progress: not again", number=plan.number
            )
            return defer.succeed(None)
        d = self.engine.start_ivr_callback(plan.username, plan.number, origin=f"ivr-{plan.kind}")

        def started(session_id: str) -> None:
            call = _Call(
                plan.username,
                plan.number,
                plan.language,
                plan.need_pin,
                identify=plan.kind == "unknown",
            )
            if call.identify:  # the operator's leg: short
                call.timeout = self.clock.callLater(
                    self.config.unknown_pin_timeout, self._pin_leg_over, session_id
                )
            call.unsubscribe = self.engine.subscribe(
                lambda event: self._news(session_id, event), session_id
            )
            self.calls[session_id] = call

        def refused(failure: Any) -> None:
            failure.trap(CallbackRefused)
            self.log.warn(
                "IVR callback of {username} to {number} refused: {why}",
                username=plan.username,
                number=plan.number,
                why=failure.getErrorMessage(),
            )

        return d.addCallbacks(started, refused)

    def _news(self, session_id: str, event: SessionEvent) -> None:
        """The engine's events of a session, as the flow's events."""
        call = self.calls.get(session_id)
        if call is None:
            return
        if event.kind == "session_ended":
            call.unsubscribe()
            del self.calls[session_id]
            call.news.put(f.HungUp())
            if call.timeout is not None and call.timeout.active():
                call.timeout.cancel()
            if call.recall is not None:
                self.clock.callLater(self.config.callback_delay, self._call_back, call.recall)
        elif event.role != ADDITIONAL:
            return
        elif event.kind == "party_answered":
            call.news.put(f.Answered())
        elif event.kind == "leg_failed" and event.state == "ended":
            call.news.put(f.Failed(event.cause))
        elif event.kind == "leg_ended":
            call.news.put(f.Ended())

    # -- the callback leg -------------------------------------------------------------------

    async def callback(self, channel: AGIChannel) -> None:
        """Run the flow of the session named in the script's query."""
        session_id = channel.query.get("session", "")
        call = self.calls.get(session_id) if _SESSION_ID.match(session_id) else None
        if call is None or self.engine.state_of(session_id) is None:
            # a session this daemon did not start (or started before a restart, its
            # flow lost): end it rather than let anyone dial without the flow's checks
            self.log.warn("IVR callback leg of unknown session {sid!r}: hung up", sid=session_id)
            if call is None and _SESSION_ID.match(session_id):
                if self.engine.state_of(session_id) is not None:
                    await self.engine.hangup(session_id)
            await channel.hangup()
            return
        if call.flow is None:
            phonebook = {} if call.identify else await self._phonebook(call.username)
            flow, effects = f.start(
                self.rules,
                language=call.language,
                need_pin=call.need_pin,
                phonebook=phonebook,
                identify=call.identify,
            )
        else:
            flow, effects = f.step(call.flow, f.Resumed())
        await self._converse(channel, session_id, call, flow, effects)

    async def _phonebook(self, username: str) -> dict[int, str]:
        try:
            entries = await self.store.get_phonebook(username)
        except StoreError:
            return {}
        return {entry.index: entry.address for entry in entries}

    async def _converse(
        self, channel: AGIChannel, sid: str, call: _Call, flow: f.Flow, effects: list[f.Effect]
    ) -> None:
        while True:
            call.flow = flow
            event: f.Event | None = None
            try:
                for effect in effects:
                    event = await self._effects[type(effect)](channel, sid, call, effect)
            except AGIError as e:
                # a hangup, or the Redirect into the room (the command under way
                # answers -1 before the HANGUP line); any other refusal ends the
                # conversation too: the dialplan then hangs the leg up
                if not isinstance(e, AGIHangup | AGICommandFailed):
                    self.log.warn("IVR session {sid}: AGI ended: {e}", sid=sid, e=e)
                event = _gone(call)
            if event is None or flow.ended:
                return
            flow, effects = f.step(flow, event)
            if isinstance(event, f.HungUp) or (flow.phase == f.Phase.CONNECTED and channel.hung_up):
                call.flow = flow
                for effect in effects:
                    if isinstance(effect, f.DropDestination):
                        await self._drop_destination(channel, sid, call, effect)
                return

    # -- effects --------------------------------------------------------------------------

    async def _set_language(self, channel: AGIChannel, sid: str, call: _Call, effect: Any) -> None:
        call.language = effect.language
        await channel.set_language(effect.language)

    async def _say(self, channel: AGIChannel, call: _Call, step: f.Speech, escape: str) -> str:
        """Say one step; the key that interrupted it ("" when none).

        A sound file Asterisk cannot play (``result=-1`` on a live channel: not
        installed) is logged and skipped: the caller still hears the rest."""
        try:
            return await self._say_step(channel, call, step, escape)
        except AGICommandFailed as e:
            if channel.hung_up:
                raise AGIHangup(str(e)) from None
            self.log.warn("IVR: {step} not said: {e}", step=step, e=e)
            return ""

    async def _say_step(self, channel: AGIChannel, call: _Call, step: f.Speech, escape: str) -> str:
        if isinstance(step, f.Play):
            if step.language and step.language != call.language:
                await channel.set_language(step.language)
                try:
                    return await channel.stream_file(f"callbackd/{step.name}", escape)
                finally:
                    await channel.set_language(call.language or f.LANGUAGES[0])
            return await channel.stream_file(f"callbackd/{step.name}", escape)
        for part in self.spoken(step, call.language or f.LANGUAGES[0]):
            key = await _say_part(channel, part, escape)
            if key:
                return key
        return ""

    def spoken(self, step: f.SayMoney | f.SayDuration, language: str) -> list[speech.Say]:
        """An amount or a duration as the steps :mod:`callbackd.ivr.speech` says it in."""
        try:
            if isinstance(step, f.SayMoney):
                return speech.money_prompts(step.amount, self.decimals, self.currency, language)
            return speech.duration_prompts(step.seconds, language)
        except ValueError as e:  # beyond what the say engine can say
            self.log.warn("IVR: cannot say {step}: {e}", step=step, e=e)
            return []

    async def _announce(self, channel: AGIChannel, sid: str, call: _Call, effect: Any) -> None:
        for step in effect.steps:
            await self._say(channel, call, step, "")

    async def _collect(self, channel: AGIChannel, sid: str, call: _Call, effect: Any) -> f.Event:
        first = ""
        for step in effect.steps:
            first = await self._say(channel, call, step, ESCAPE)
            if first:
                break
        if first == "#":
            return f.Collected("")
        if first and effect.max_digits == 1:
            return f.Collected(first)
        rest = await channel.get_data("", effect.timeout_ms, effect.max_digits - len(first))
        return f.Collected(first + rest)

    async def _check_pin(self, channel: AGIChannel, sid: str, call: _Call, effect: Any) -> f.Event:
        if call.identify:
            return await self._identify(call, effect.pin)
        now = self.clock.seconds()
        if await self.store.pin_locked_until(call.username, call.number, now):
            return f.PinChecked(False, locked=True)
        if await self.store.check_pin(call.username, effect.pin):
            await self.store.pin_succeeded(call.username, call.number)
            return f.PinChecked(True)
        return f.PinChecked(False)

    async def _identify(self, call: _Call, pin: str) -> f.Event:
        """An unknown caller's PIN: the account it names, unless PIN entry is locked for
        the caller ID or for that account."""
        now = self.clock.seconds()
        if await self.store.pin_locked_until("", call.number, now):
            return f.PinChecked(False, locked=True)
        account = await self.store.account_for_pin(pin)
        if account is None or account == call.username:  # never the operator's own
            return f.PinChecked(False)
        if not await self.store.check_pin(account, pin):
            return f.PinChecked(False)
        if await self.store.pin_locked_until(account, call.number, now):
            return f.PinChecked(False, locked=True)
        await self.store.pin_succeeded(account, call.number)
        call.account = account
        self.log.info(
            "IVR: the PIN of unknown caller ID {number} names account {username}",
            number=call.number,
            username=account,
        )
        return f.PinChecked(True)

    async def _record_pin_failure(
        self, channel: AGIChannel, sid: str, call: _Call, effect: Any
    ) -> f.Event:
        until = await self.store.pin_failed(
            "" if call.identify else call.username,
            call.number,
            self.clock.seconds(),
            self.config.pin_attempts,
            self.config.pin_lockout,
        )
        self.log.info(
            "IVR: wrong PIN for {username} from {number}",
            username="an unknown caller" if call.identify else call.username,
            number=call.number,
        )
        return f.PinFailureRecorded(bool(until))

    async def _log_lockout(self, channel: AGIChannel, sid: str, call: _Call, effect: Any) -> None:
        if call.identify:
            self.log.warn(
                "IVR: PIN entry locked for unknown caller ID {number} ({seconds:.0f} s after"
                " the last of {attempts} wrong PINs); session {sid}",
                number=call.number,
                seconds=self.config.pin_lockout,
                attempts=self.config.pin_attempts,
                sid=sid,
            )
            return
        self.log.warn(
            "IVR: PIN entry locked for account {username} and caller ID {number}"
            " ({seconds:.0f} s after the last of {attempts} wrong PINs); session {sid}",
            username=call.username,
            number=call.number,
            seconds=self.config.pin_lockout,
            attempts=self.config.pin_attempts,
            sid=sid,
        )

    async def _save_caller_id(
        self, channel: AGIChannel, sid: str, call: _Call, effect: Any
    ) -> None:
        try:
            await self.store.add_caller_id(
                call.account or call.username, call.number, verified=True
            )
        except StoreError as e:
            self.log.warn("IVR: caller ID {number} not saved: {e}", number=call.number, e=e)

    async def _call_back_for_account(
        self, channel: AGIChannel, sid: str, call: _Call, effect: Any
    ) -> None:
        """Once this (the operator's) leg has ended, call back for the account the PIN
        named: its caller ID is verified now, so that callback skips the PIN."""
        call.recall = f.InboundPlan(
            username=call.account,
            number=call.number,
            language=effect.language,
            kind="pin",
        )

    def _pin_leg_over(self, session_id: str) -> None:
        """An unknown caller's PIN leg outlived ``[ivr] unknown_pin_timeout``."""
        if session_id in self.calls and self.engine.state_of(session_id) is not None:
            self.log.info("IVR: PIN leg {sid} timed out: hung up", sid=session_id)
            self.engine.hangup(session_id).addErrback(lambda failure: failure.trap(CallbackRefused))

    async def _get_balance(
        self, channel: AGIChannel, sid: str, call: _Call, effect: Any
    ) -> f.Event:
        return f.Balance(await self.store.get_balance(call.username))

    async def _quote(self, channel: AGIChannel, sid: str, call: _Call, effect: Any) -> f.Event:
        try:
            address, seconds = await self.engine.quote_leg(sid, effect.number)
        except CallbackRefused as e:
            return f.Refused(_REFUSALS.get(e.code, "failed"))
        return f.Quoted(address, seconds)

    async def _dial(self, channel: AGIChannel, sid: str, call: _Call, effect: Any) -> None:
        while call.news.pending:
            call.news.pending.pop()  # news of an earlier destination
        try:
            await self.engine.add_leg(sid, effect.number)
        except CallbackRefused as e:
            call.news.put(f.Refused(_REFUSALS.get(e.code, "failed")))

    async def _wait_destination(
        self, channel: AGIChannel, sid: str, call: _Call, effect: Any
    ) -> f.Event:
        if not call.ringing:
            call.ringing = True
            await channel.exec_("Playtones", "ring")
        while not call.news.pending:
            key = await channel.wait_for_digit(KEY_POLL_MS)
            if key:
                return f.Keys(key)
        call.ringing = False
        event: f.Event = await call.news.get()
        if not isinstance(event, f.Answered):  # the room stops them otherwise
            await channel.exec_("StopPlaytones")
        return event

    async def _drop_destination(
        self, channel: AGIChannel, sid: str, call: _Call, effect: Any
    ) -> None:
        if call.ringing and not channel.hung_up:
            call.ringing = False
            await channel.exec_("StopPlaytones")
        try:
            await self.engine.drop_leg(sid, ADDITIONAL)
        except CallbackRefused:
            pass  # it ended meanwhile

    async def _leave(self, channel: AGIChannel, sid: str, call: _Call, effect: Any) -> None:
        return None

    async def _hang_up(self, channel: AGIChannel, sid: str, call: _Call, effect: Any) -> None:
        try:
            await self.engine.hangup(sid)
        except CallbackRefused:
            pass
        try:
            await channel.hangup()
        except AGIError:
            pass


def _gone(call: _Call) -> f.Event:
    """The AGI conversation ended under the flow: the leg was moved to the room (the
    destination answered: the engine publishes that before its ``JoinRoom`` Redirect can
    end the AGI), or the user hung up."""
    if any(isinstance(event, f.Answered) for event in call.news.pending):
        return f.Answered()
    return f.HungUp()


async def _say_part(channel: AGIChannel, part: speech.Say, escape: str) -> str:
    """One step of :mod:`callbackd.ivr.speech`: a file, a number (with the say engine's
    gender) or digits; the key that interrupted it ("" when none)."""
    if isinstance(part, speech.Play):
        return await channel.stream_file(part.file, escape)
    if isinstance(part, speech.Digits):
        return await channel.say_digits(part.digits, escape)
    if not part.gender:
        return await channel.say_number(part.n, escape)
    reply = await channel.command("SAY NUMBER", part.n, escape, part.gender)
    code = reply.result_int() or 0
    if reply.code != 200 or code < 0:
        raise AGIHangup(f"SAY NUMBER {part.n}: {reply.text}")
    return chr(code) if 0 < code < 128 else ""
