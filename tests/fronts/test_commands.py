"""The chat grammar's commands answered for an account, with no front around them
(engine over FakeSwitch, MemoryStore, task.Clock)."""

from __future__ import annotations

from twisted.internet import defer

from callbackd.core import chat
from callbackd.fronts.commands import Asker, ChatCommands, Reply
from callbackd.i18n import translator
from tests.test_engine import DESTINATION, SOURCE, World, result

ADDRESS = "sms:+4930123456"
EN = translator("en")


class Listener:
    """A front's ears: what the commands told it, in order."""

    def __init__(self):
        self.heard: list[tuple[str, ...]] = []

    def watch(self, session_id, address):
        self.heard.append(("watch", session_id, address))

    def started(self, session_id, address):
        self.heard.append(("started", session_id, address))

    def language_set(self, address, language):
        self.heard.append(("language_set", address, language))


def commands(world, listener=None):
    return ChatCommands(
        world.manager,
        world.store,
        origin="test-front",
        decimals=5,
        currency="EUR",
        listener=listener,
    )


def answer(commands, world, command):
    account = result(world.store.get_account("alice"))
    return result(commands.answer(ADDRESS, account, command))


def test_the_account_is_answered_in_its_language():
    """BALANCE of a Spanish account, in Spanish, with the money as Spanish writes it."""
    world = World(language="es")
    es = translator("es")
    money = es.money(world.balance(), 5, "EUR")
    assert answer(commands(world), world, chat.Balance()) == es.text("chat.balance", balance=money)


def test_callback_starts_a_session_of_the_fronts_origin_and_tells_the_front():
    """CALLBACK: the session carries the front's origin; the listener hears who started it."""
    world, listener = World(), Listener()
    reply = answer(commands(world, listener), world, chat.Callback(SOURCE, DESTINATION, ()))
    [sid] = world.manager.sessions_of("alice")
    assert reply == EN.text("chat.session_started", session=sid)
    assert world.manager.state_of(sid).origin == "test-front"
    assert listener.heard == [("started", sid, ADDRESS)]


def test_steering_and_lang_are_told_to_the_listener():
    """LIST and HANGUP watch the live session for the asker; LANG tells the new language."""
    world, listener = World(), Listener()
    front = commands(world, listener)
    sid = world.talking()
    assert answer(front, world, chat.ListLegs()).startswith("List of connected legs: 1.")
    assert answer(front, world, chat.Hangup()) == EN.text("chat.hangup_requested")
    assert answer(front, world, chat.Language("fr")) == translator("fr").text(
        "chat.language_set", language=translator("fr").language_name("fr")
    )
    assert listener.heard == [
        ("watch", sid, ADDRESS),
        ("watch", sid, ADDRESS),
        ("language_set", ADDRESS, "fr"),
    ]
    assert result(world.store.get_account("alice")).language == "fr"


def test_without_a_listener_commands_still_steer():
    """A front that tells no progress (SMS) needs no listener."""
    world = World()
    sid = world.talking()
    assert answer(commands(world), world, chat.Hangup()) == EN.text("chat.hangup_requested")
    assert {channel for channel, _ in world.switch.hung_up} == {f"{sid}-a1", f"{sid}-b1"}


def test_refusals_are_replies():
    """No live session, an engine refusal and a handler's Reply are each one clear reply."""
    world = World()
    front = commands(world)
    assert answer(front, world, chat.ListLegs()) == EN.text("chat.no_session")
    refused = answer(front, world, chat.Callback(SOURCE, SOURCE, ()))
    assert refused == EN.text("refusal.same_number")


def test_a_command_outside_the_table_is_not_linked():
    """LINK is a chat front's own: the shared table does not answer it; a front's does."""
    world = World()
    front = commands(world)
    link = chat.Link("alice", "secret-pw")
    assert answer(front, world, link) == EN.text("chat.not_linked")

    async def linked(asker, command):
        raise Reply("chat.linked", username=command.username)

    asker = Asker(ADDRESS, None, EN)
    reply = defer.ensureDeferred(front.reply(asker, link, {chat.Link: linked}))
    assert result(reply) == EN.text("chat.linked", username="alice")
