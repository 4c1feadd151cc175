"""The chat dispatcher on a MemoryStore: LINK, UNLINK, HELP and what unlinked JIDs get."""

from __future__ import annotations

import pytest_twisted
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.internet.task import Clock

from callbackd.core.model import Account
from callbackd.store.memory import MemoryStore
from callbackd.xmpp.commands import ChatDispatcher

JID = "user@example.test/phone"


async def setup():
    clock = Clock()
    store = MemoryStore(clock)
    await store.create_account(Account("alice"), "alice pw", None)
    await store.create_account(Account("bob"), "bob pw", None)
    return clock, store, ChatDispatcher(store, None, clock=clock)


@pytest_twisted.ensureDeferred
async def test_link_with_the_right_password_links_the_bare_jid():
    _, store, chat = await setup()
    assert await chat(JID, "LINK alice alice pw") == "Linked to account alice."
    assert await store.account_for_jid("user@example.test") == "alice"


@pytest_twisted.ensureDeferred
async def test_a_wrong_password_and_a_missing_account_get_the_same_answer():
    _, store, chat = await setup()
    wrong = await chat(JID, "LINK alice nope")
    missing = await chat(JID, "LINK nobody nope")
    malformed = await chat(JID, "LINK bad:name nope")
    assert wrong == missing == malformed == "Wrong username or password."
    assert await store.account_for_jid(JID) is None


@pytest_twisted.ensureDeferred
async def test_wrong_passwords_are_throttled_per_jid_then_released():
    clock, store, chat = await setup()
    for _ in range(5):
        await chat(JID, "LINK alice nope")
    # even the right password is refused while throttled
    assert await chat(JID, "LINK alice alice pw") == (
        "Too many wrong attempts. Try again in a few minutes."
    )
    assert await store.account_for_jid(JID) is None
    # another JID is not held up
    assert await chat("other@example.test", "LINK bob bob pw") == "Linked to account bob."
    clock.advance(601)
    assert await chat(JID, "LINK alice alice pw") == "Linked to account alice."


@pytest_twisted.ensureDeferred
async def test_wrong_passwords_are_throttled_per_account():
    _, store, chat = await setup()
    for i in range(10):
        await chat(f"u{i}@example.test", "LINK alice nope")
    assert await chat("fresh@example.test", "LINK alice alice pw") == (
        "Too many wrong attempts. Try again in a few minutes."
    )


@pytest_twisted.ensureDeferred
async def test_an_unlinked_jid_gets_an_explanation_for_anything_but_link_and_help():
    _, store, chat = await setup()
    for text in ("STATUS", "callback +4930123 +4930456", "UNLINK", "hello there", "DEL 1"):
        assert (await chat(JID, text)).startswith("This address is not linked")
    assert (await chat(JID, "help")).startswith("Commands:")
    assert await chat(JID, "LINK alice") == "Wrong use of LINK. Send HELP for the commands."


@pytest_twisted.ensureDeferred
async def test_unlink():
    _, store, chat = await setup()
    await store.link_jid(JID, "alice")
    assert (await chat(JID, "unlink")).startswith("Unlinked.")
    assert await store.account_for_jid(JID) is None


@pytest_twisted.ensureDeferred
async def test_linked_engine_commands_are_not_available_yet():
    _, store, chat = await setup()
    await store.link_jid(JID, "alice")
    assert await chat(JID, "status") == "STATUS is not available yet."
    assert await chat(JID, "frobnicate") == (
        "Unknown command frobnicate. Send HELP for the commands."
    )


@pytest_twisted.ensureDeferred
async def test_a_store_outage_gets_a_busy_answer():
    _, store, chat = await setup()
    store.available = False
    assert await chat(JID, "HELP") == "The service is busy; try again in a minute."


@settings(max_examples=100, deadline=None)
@given(text=st.text(min_size=1, max_size=200))
def test_any_text_gets_one_answer_and_links_nothing(text):
    clock = Clock()
    store = MemoryStore(clock)
    store.create_account(Account("alice"), "alice pw", None)
    chat = ChatDispatcher(store, None, clock=clock)
    answers = []
    d: defer.Deferred = chat(JID, text)
    d.addCallback(answers.append)
    assert isinstance(answers[0], str) and answers[0]
    linked = []
    store.account_for_jid(JID).addCallback(linked.append)
    assert linked == [None]
