"""The component against a real Prosody, with a real slixmpp user in its own process.

The component runs in the test's process on the real reactor and connects over TCP
to Prosody's component port; the store is a RedisStore on a real redis-server.
"""

from __future__ import annotations

import pytest_twisted
from prometheus_client import CollectorRegistry
from twisted.internet import reactor, task, threads
from twisted.logger import formatEvent, globalLogPublisher

from callbackd.config import BillingConfig, Secret, XMPPConfig
from callbackd.core.model import Account
from callbackd.i18n import translator
from callbackd.store.memory import MemoryStore
from callbackd.xmpp.handlers import NS_DISCO_INFO, NS_DISCO_ITEMS, NS_PING, NS_VERSION
from callbackd.xmpp.service import make_chat_service
from tests.stores import redis_store
from tests.xmpp.userproc import ROOT, UserProcess


async def until(condition, timeout: float = 15.0, what: str = "condition") -> None:
    """Poll ``condition()`` on the reactor until it is true."""
    waited = 0.0
    while not condition():
        if waited > timeout:
            raise AssertionError(f"{what}: not within {timeout}s")
        await task.deferLater(reactor, 0.05, lambda: None)
        waited += 0.05


EN = translator("en")


class NoEngine:
    """The engine as far as linking needs it: session events and sessions (none),
    accounts (the store's)."""

    def __init__(self, store):
        self.store = store

    def subscribe(self, callback, session_id=None, *, owned=False):
        return lambda: None

    def account(self, username):
        return self.store.get_account(username)

    def sessions_of(self, username):
        return []


def chat_service(prosody, store, secret=None, registry=None, **options):
    config = XMPPConfig(
        enabled=True,
        domain=prosody.component,
        host="127.0.0.1",
        port=prosody.component_port,
        secret=Secret(secret or prosody.secret),
        reconnect_max_delay=1.0,
    )
    return make_chat_service(
        config,
        BillingConfig(),
        store,
        NoEngine(store),
        reactor,
        registry or CollectorRegistry(),
        **options,
    )


async def login(prosody, user: str, password: str) -> UserProcess:
    prosody.register(user, password)
    client = UserProcess.spawn(f"{user}@{prosody.host}", password, "127.0.0.1", prosody.c2s_port)
    await client.expect(event="ready", timeout=20)
    return client


@pytest_twisted.ensureDeferred
async def test_a_user_subscribes_queries_links_and_the_component_survives_a_restart(
    prosody, clean_redis
):
    """Subscribe, disco/version/ping, LINK; Prosody restarts and the component comes back."""
    store = redis_store(clean_redis.port)
    await store.connect(timeout=5)
    await store.create_account(Account("alice"), "alices-password", None)
    registry = CollectorRegistry()
    chat = chat_service(prosody, store, registry=registry)
    chat.startService()
    clients: list[UserProcess] = []
    try:
        await until(lambda: chat.connected, what="component connected")
        assert chat.health() == (
            True,
            f"connected to 127.0.0.1:{prosody.component_port} as {prosody.component}",
        )
        assert registry.get_sample_value("callbackd_xmpp_connected") == 1
        service = prosody.component
        user = await login(prosody, "user1", "user1 pw")
        clients.append(user)

        # subscription: accepted, returned, and the service shows available with its status
        user.send("subscribe", to=service)
        await user.expect(event="presence", type="subscribed", **{"from": service})
        await user.expect(event="presence", type="subscribe", **{"from": service})
        available = await user.expect(event="presence", type="available", **{"from": service})
        assert available["status"] == EN.text("chat.presence_status")

        # service discovery, version, ping; anything else: service-unavailable
        user.send("disco_info", to=service)
        info = await user.expect(event="result", op="disco_info")
        assert info.get("error") is None
        assert ["gateway", "pstn", "Callback"] in info["identities"]
        assert set(info["features"]) >= {NS_DISCO_INFO, NS_DISCO_ITEMS, NS_VERSION, NS_PING}
        user.send("disco_items", to=service)
        assert (await user.expect(event="result", op="disco_items"))["items"] == []
        user.send("version", to=service)
        version = await user.expect(event="result", op="version")
        assert version["name"] == "callbackd" and version["version"]
        user.send("ping", to=service)
        assert (await user.expect(event="result", op="ping")).get("error") is None
        user.send("iq", to=service, namespace="urn:example:nothing")
        assert (await user.expect(event="result", op="iq"))["error"] == "service-unavailable"

        # chat: an unlinked JID is told to LINK; a wrong password links nothing
        user.send("message", to=service, body="status")
        reply = await user.expect(event="message", **{"from": service})
        assert reply["body"] == EN.text("chat.not_linked")
        user.send("message", to=service, body="LINK alice wrong")
        reply = await user.expect(event="message", **{"from": service})
        assert reply["body"] == EN.text("chat.link_failed")
        assert await store.account_for_jid(f"user1@{prosody.host}") is None
        user.send("message", to=service, body="link alice alices-password")
        reply = await user.expect(event="message", **{"from": service})
        assert reply["body"] == EN.text("chat.linked", username="alice")
        assert await store.account_for_jid(f"user1@{prosody.host}") == "alice"
        assert registry.get_sample_value("callbackd_xmpp_stanzas_total", {"kind": "message"}) == 3

        # Prosody restarts: the component reconnects by itself
        await threads.deferToThread(prosody.restart)
        await until(lambda: not chat.connected, what="component saw the restart", timeout=5)
        await until(lambda: chat.connected, what="component connected again")
        assert registry.get_sample_value("callbackd_xmpp_connects_total", {"outcome": "lost"}) == 1
        await user.expect(event="disconnected")
        await user.quit()
        user = UserProcess.spawn(f"user1@{prosody.host}", "user1 pw", "127.0.0.1", prosody.c2s_port)
        clients.append(user)
        await user.expect(event="ready", timeout=20)
        user.send("message", to=service, body="UNLINK")
        reply = await user.expect(event="message", **{"from": service})
        assert reply["body"] == EN.text("chat.unlinked")
        assert await store.account_for_jid(f"user1@{prosody.host}") is None
    finally:
        for client in clients:
            await client.quit()
        await chat.stopService()
        await store.disconnect()


@pytest_twisted.ensureDeferred
async def test_a_refused_secret_is_reported_and_retried(prosody):
    """A wrong secret: health says so, the back-off keeps trying, nothing is fatal or logged."""
    logged: list[str] = []

    def observe(event):
        logged.append(formatEvent(event) + repr(event))

    globalLogPublisher.addObserver(observe)
    chat = chat_service(prosody, MemoryStore(task.Clock()), secret="not-the-secret")
    chat.startService()
    try:
        await until(lambda: chat.failures >= 2, what="two refused attempts")
        ok, detail = chat.health()
        assert not ok and detail.startswith("secret refused by 127.0.0.1:")
        assert chat.running
    finally:
        await chat.stopService()
        globalLogPublisher.removeObserver(observe)
    assert chat.state == "stopped"
    refusals = [line for line in logged if "refused component" in line]
    assert len(refusals) == 1 and "not-authorized" in refusals[0]  # once, not per attempt
    assert not [line for line in logged if "not-the-secret" in line]


@pytest_twisted.ensureDeferred
async def test_a_second_daemons_component_stands_by_and_takes_the_domain_over(prosody):
    """Prosody admits one component per domain (conflict for the next): with several
    daemons the refused one is healthy, standing by, and connects once the first is gone;
    alone, the same refusal is a fault."""
    first = chat_service(prosody, MemoryStore(task.Clock()))
    standby = chat_service(prosody, MemoryStore(task.Clock()), standby=True)
    alone = chat_service(prosody, MemoryStore(task.Clock()))
    first.startService()
    try:
        await until(lambda: first.connected, what="the first component connected")
        standby.startService()
        alone.startService()
        await until(lambda: standby.failures >= 1 and alone.failures >= 1, what="refusals")
        ok, detail = standby.health()
        assert ok and detail.startswith("standing by: another daemon's component holds")
        ok, detail = alone.health()
        assert not ok and "conflict" in detail
        await alone.stopService()
        await first.stopService()
        await until(lambda: standby.connected, what="the standby taking the domain over")
        assert standby.health()[1].startswith("connected to 127.0.0.1:")
    finally:
        for chat in (first, standby, alone):
            if chat.running:
                await chat.stopService()


@pytest_twisted.ensureDeferred
async def test_no_server_is_not_connected_and_stops_cleanly(prosody):
    """Nothing listening: 'not connected' with the attempt count, and a clean stop."""
    await threads.deferToThread(prosody.stop)
    chat = chat_service(prosody, MemoryStore(task.Clock()))
    chat.startService()
    try:
        await until(lambda: chat.failures >= 2, what="two failed attempts")
        ok, detail = chat.health()
        assert not ok and detail.startswith("not connected to 127.0.0.1:")
    finally:
        await chat.stopService()


@pytest_twisted.ensureDeferred
async def test_the_shipped_prosody_snippet_takes_the_component(start_prosody):
    """etc/prosody/callbackd.cfg.lua, with a domain and a secret put in, works as it is."""
    snippet = (ROOT / "etc" / "prosody" / "callbackd.cfg.lua").read_text()
    assert '"callback.example.org"' in snippet and '"CHANGE-ME"' in snippet
    prosody = await threads.deferToThread(
        start_prosody,
        component_config=snippet.replace("{", "{{")
        .replace("}", "}}")
        .replace("callback.example.org", "{component}")
        .replace("CHANGE-ME", "{secret}"),
    )
    chat = chat_service(prosody, MemoryStore(task.Clock()))
    chat.startService()
    try:
        await until(lambda: chat.connected, what="component connected")
    finally:
        await chat.stopService()
