"""The whole chat conversation end to end: a user's XMPP client, Prosody, the daemon.

A real Prosody (Debian's package, private config, ports chosen at run time), the daemon
under twistd with ``[xmpp]`` on against it, the built-in simulated Asterisk and a real
redis-server, and slixmpp in its own process as the user. Every wait is for an event
(a stanza, a log line, /healthz) with a generous limit, never a fixed sleep.

The simulated callees of ``+1555001XXXX`` answer at once (1 s, times the daemon's
``time_scale``), so a callback is talking a moment after it starts.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import threads

from callbackd.i18n import Translator, translator
from tests.integration.daemon import Daemon, redis_command
from tests.xmpp.userproc import UserProcess

pytestmark = pytest.mark.integration

SECRET_ENV = "CALLBACKD_TEST_XMPP_SECRET"
PASSWORD_ENV = "CALLBACKD_TEST_ALICE_PASSWORD"
PASSWORD = "alices-chat-password"
PROVIDERS = ("PROXICOM", "PAKLINE", "MKS")
SOURCE, DESTINATION, EXTRA = "+15550011111", "+15550012222", "+15550013333"
EN, ES = translator("en"), translator("es")
#: stands for any text in :func:`like`
ANY = "\x00"
#: seconds allowed for one step on a loaded CI machine
STEP = 30.0


def like(t: Translator, msgid: str, **params: str) -> re.Pattern[str]:
    """The catalogue text ``msgid`` as a regex; a parameter given as ``ANY`` matches any text."""
    text = t.text(msgid, **params)
    return re.compile(".+?".join(re.escape(part) for part in text.split(ANY)))


class Conversation:
    """The user's side of the chat with the service: send a line, await the lines back.

    Replies and progress messages are read line by line (the service may merge the
    progress of one reactor turn into one message), in the order they arrived.
    """

    def __init__(self, user: UserProcess, service: str) -> None:
        self.user = user
        self.service = service
        self.lines: list[str] = []
        self.seen = 0

    def say(self, body: str) -> None:
        self.user.send("message", to=self.service, body=body)

    async def expect(self, *patterns: re.Pattern[str], timeout: float = STEP) -> list[str]:
        """Await lines matching ``patterns`` in that order (others may come between).

        Returns the matching lines; what they matched and what came before them is
        consumed.
        """
        found = []
        deadline = time.monotonic() + timeout
        for pattern in patterns:
            while True:
                line = await self._next_line(deadline, pattern)
                if pattern.fullmatch(line):
                    found.append(line)
                    break
        return found

    async def _next_line(self, deadline: float, pattern: re.Pattern[str]) -> str:
        while self.seen >= len(self.lines):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no line like {pattern.pattern!r}; lines: {self.lines}")
            try:
                message = await self.user.expect(
                    event="message", timeout=left, **{"from": self.service}
                )
            except AssertionError as e:
                raise AssertionError(
                    f"no line like {pattern.pattern!r}; lines: {self.lines}"
                ) from e
            self.lines.extend(message["body"].splitlines())
        self.seen += 1
        return self.lines[self.seen - 1]


async def in_thread(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a blocking helper (the daemon's, Prosody's) off the reactor."""
    return await threads.deferToThread(function, *args, **kwargs)


def start_daemon(workdir, prosody, redis_port: int) -> Daemon:
    """The daemon with [xmpp] on, and alice (a demo account) with a known password."""
    daemon = Daemon(
        workdir,
        redis_port=redis_port,
        extra=(
            f"\n[xmpp]\nenabled = yes\ndomain = {prosody.component}\n"
            f"port = {prosody.component_port}\nsecret_env = {SECRET_ENV}\n"
            "reconnect_max_delay = 1\n"
        ),
        env={SECRET_ENV: prosody.secret, PASSWORD_ENV: PASSWORD},
    ).start()
    daemon.wait_healthy(timeout=STEP)
    deadline = time.monotonic() + STEP
    while redis_command(redis_port, "GET", "cb:acct:alice:balance") in (None, b"0"):
        assert time.monotonic() < deadline, "demo account alice never appeared"
        time.sleep(0.1)
    daemon.admin("set-password", "alice", "--password-env", PASSWORD_ENV)
    return daemon


def balance(daemon: Daemon) -> int:
    """alice's balance in minor units (5 decimals), through the admin CLI."""
    amount = daemon.admin("balance", "alice").stdout.split()[0]
    units, _, fraction = amount.partition(".")
    return int(units) * 10**5 + int(fraction.ljust(5, "0"))


async def login(prosody, name: str, clients: list[UserProcess]) -> Conversation:
    """A user of Prosody logged in with slixmpp (its own process)."""
    await in_thread(prosody.register, name, f"{name} pw")
    user = UserProcess.spawn(f"{name}@{prosody.host}", f"{name} pw", "127.0.0.1", prosody.c2s_port)
    clients.append(user)
    await user.expect(event="ready", timeout=STEP)
    return Conversation(user, prosody.component)


async def talking(chat: Conversation, t: Translator, source: str, destination: str) -> None:
    """The progress of a callback up to "Now talking", in order, with costs and providers."""
    calling = {"cost": ANY, "provider": ANY, "role": ANY}
    lines = await chat.expect(
        like(t, "progress.leg_calling_cost_via", address=f"phone:{source}", **calling),
        like(t, "progress.source_answered"),
        like(t, "progress.leg_calling_cost_via", address=f"phone:{destination}", **calling),
        like(t, "progress.talking", cost=ANY),
    )
    for line in (lines[0], lines[2]):
        assert line.endswith(PROVIDERS), line


@pytest_twisted.ensureDeferred
async def test_a_user_calls_back_from_chat_and_the_service_survives_a_server_restart(
    tmp_path, prosody, clean_redis
):
    """Subscribe, LINK, CALLBACK with progress, ADD, LIST, DEL, HANGUP, LANG es; restart."""
    daemon = await in_thread(start_daemon, tmp_path / "daemon", prosody, clean_redis.port)
    clients: list[UserProcess] = []
    service = prosody.component
    try:
        chat = await login(prosody, "user1", clients)
        user = chat.user

        # subscription: accepted, returned, the service available with its status
        user.send("subscribe", to=service)
        await user.expect(event="presence", type="subscribed", timeout=STEP, **{"from": service})
        available = await user.expect(
            event="presence", type="available", timeout=STEP, **{"from": service}
        )
        assert available["status"] == EN.text("chat.presence_status")
        user.send("version", to=service)
        version = await user.expect(event="result", op="version", timeout=STEP)
        assert version["name"] == "callbackd"

        chat.say(f"LINK alice {PASSWORD}")
        await chat.expect(like(EN, "chat.linked", username="alice"))

        chat.say(f"CALLBACK {SOURCE} {DESTINATION}")
        await chat.expect(like(EN, "chat.session_started", session=ANY))
        await talking(chat, EN, SOURCE, DESTINATION)

        chat.say(f"ADD {EXTRA}")
        await chat.expect(
            like(EN, "chat.leg_added", leg=EXTRA),
            like(EN, "progress.party_answered", cost=ANY),
        )
        chat.say("LIST")
        [legs] = await chat.expect(re.compile(r".*1\. .*2\. .*3\. .*"))
        for address in (SOURCE, DESTINATION, EXTRA):
            assert re.search(rf"phone:{re.escape(address)} Via: ({'|'.join(PROVIDERS)})", legs)

        chat.say("DEL 3")
        await chat.expect(
            like(EN, "chat.leg_dropped", leg=f"phone:{EXTRA}"),
            like(EN, "progress.party_left", role=ANY, address=f"phone:{EXTRA}", cause=ANY),
        )
        chat.say("HANGUP")
        _, _, charged = await chat.expect(
            like(EN, "chat.hangup_requested"),
            like(EN, "progress.ended_hangup"),
            like(EN, "progress.charged", seconds=ANY, reason=ANY),
        )
        assert re.search(r"\d+", charged), charged

        chat.say("LANG es")
        await chat.expect(like(ES, "chat.language_set", language=ANY))
        left = await in_thread(balance, daemon)
        chat.say("BALANCE")
        await chat.expect(like(ES, "chat.balance", balance=ES.money(left, 5, "EUR")))

        # Prosody restarts: the component comes back by itself
        mark = await in_thread(daemon.log_mark)
        await in_thread(prosody.restart)
        await in_thread(daemon.wait_for_log, "lost its connection", STEP, mark)
        await in_thread(daemon.wait_for_log, "connected again", STEP, mark)
        body = await in_thread(daemon.wait_healthy, timeout=STEP)
        assert body["checks"]["xmpp"]["ok"] is True

        # a second user of the account (its language is Spanish now) calls back again
        chat = await login(prosody, "user2", clients)
        chat.say(f"LINK alice {PASSWORD}")
        await chat.expect(like(ES, "chat.linked", username="alice"))
        chat.say(f"CALLBACK {DESTINATION}")
        await chat.expect(like(ES, "chat.session_started", session=ANY))
        await talking(chat, ES, SOURCE, DESTINATION)
        chat.say("HANGUP")
        await chat.expect(
            like(ES, "chat.hangup_requested"),
            like(ES, "progress.charged", seconds=ANY, reason=ANY),
        )
    finally:
        for client in clients:
            await client.quit()
        await in_thread(daemon.stop)
    log = daemon.log()
    assert "Traceback" not in log and "Unhandled" not in log
    assert prosody.secret not in log and PASSWORD not in log
