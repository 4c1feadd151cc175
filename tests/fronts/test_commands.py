"""The chat grammar's commands answered for an account, with no front around them
(engine over FakeSwitch, MemoryStore, task.Clock)."""

from __future__ import annotations

from twisted.internet import defer

from callbackd.core import chat
from callbackd.core.session import Watcher
from callbackd.fronts.commands import Asker, ChatCommands, Reply
from callbackd.i18n import translator
from tests.test_engine import DESTINATION, SOURCE, World, result

ADDRESS = "sms:+4930123456"
WATCHER = Watcher("test", "+4930123456", "en")
EN = translator("en")


class Listener:
    """A front's ears: what the commands told it, in order."""

    def __init__(self):
        self.heard: list[tuple[str, ...]] = []

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


def answer(commands, world, command, watcher=None):
    account = result(world.store.get_account("alice"))
    return result(commands.answer(ADDRESS, account, command, watcher))


def test_the_account_is_answered_in_its_language():
    """BALANCE of a Spanish account, in Spanish, with the money as Spanish writes it."""
    world = World(language="es")
    es = translator("es")
    money = es.money(world.balance(), 5, "EUR")
    assert answer(commands(world), world, chat.Balance()) == es.text("chat.balance", balance=money)


def test_callback_starts_a_session_of_the_fronts_origin_watched_by_the_asker():
    """CALLBACK: the session carries the front's origin and the asker's watcher record."""
    world = World()
    callback = chat.Callback(SOURCE, DESTINATION, ())
    reply = answer(commands(world), world, callback, WATCHER)
    [sid] = world.manager.sessions_of("alice")
    assert reply == EN.text("chat.session_started", session=sid)
    assert world.manager.state_of(sid).origin == "test-front"
    assert world.manager.watchers_of(sid) == (WATCHER,)
    # the record is saved with the session (a takeover or restart reads it)
    world.clock.advance(0)  # the end of the turn: the state is saved
    assert result(world.store.load_session(sid))["watchers"] == [WATCHER.to_dict()]


def test_steering_records_the_asker_and_lang_records_it_again_in_its_language():
    """LIST watches the live session for the asker (once), LANG records it in the new
    language and tells the listener; without a watcher record nothing is recorded."""
    world, listener = World(), Listener()
    front = commands(world, listener)
    sid = world.talking()
    assert answer(front, world, chat.ListLegs()) == answer(front, world, chat.ListLegs(), WATCHER)
    assert world.manager.watchers_of(sid) == (WATCHER,)
    assert answer(front, world, chat.Language("fr"), WATCHER) == translator("fr").text(
        "chat.language_set", language=translator("fr").language_name("fr")
    )
    assert world.manager.watchers_of(sid) == (Watcher("test", "+4930123456", "fr"),)
    assert listener.heard == [("language_set", ADDRESS, "fr")]
    assert result(world.store.get_account("alice")).language == "fr"
    assert answer(front, world, chat.Hangup(), WATCHER) == translator("fr").text(
        "chat.hangup_requested"
    )
    assert front.watching("alice", "test", "+4930123456") == [sid]
    assert front.watching("alice", "test", "+4930999999") == []
    assert front.watching("alice", "chat", "+4930123456") == []


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
