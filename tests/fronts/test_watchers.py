"""Who is told a session's progress, with two daemons on one store: the watchers travel
with the session, so the chat user and the SMS sender that started a call on daemon a
hear its end from daemon b after b took it over (engine over FakeSwitch, MemoryStore,
task.Clock; the two-daemon rig of tests/test_engine_cluster.py)."""

from __future__ import annotations

from callbackd.core.session import Watcher
from callbackd.i18n import translator
from callbackd.i18n.progress import render
from callbackd.xmpp.chat import FRONT as CHAT
from tests.sms.test_front import ALICE_PHONE, Sms
from tests.test_engine import DESTINATION, SOURCE, result
from tests.test_engine_cluster import pair, settle, take_over, wait
from tests.xmpp.test_chat import ALICE, Chat

ES = translator("es")


def connected(chat: Chat, up: bool) -> None:
    """Whether the chat front's component is connected: sends while not are dropped,
    as ChatService.say drops them (the XMPP server admits one component at a time)."""
    chat.front.send = (
        (lambda jid, text: chat.sent.append((jid, text))) if up else (lambda jid, text: None)
    )


def hang_up(world, sid):
    for leg in ("a1", "b1"):
        world.switch.hang_up(f"{sid}-{leg}", world.now())


def test_a_chat_user_hears_the_end_from_the_daemon_that_took_the_session_over():
    a, b = pair(language="es")
    on_a, on_b = Chat(a, linked=[ALICE]), Chat(b, linked=[ALICE])
    connected(on_b, False)
    started, *_ = on_a.say(f"CALLBACK {SOURCE} {DESTINATION}")
    sid = on_a.live()
    assert started == ES.text("chat.session_started", session=sid)
    assert b.manager.watchers_of(sid) == ()  # not heard of yet
    settle(a)
    assert b.manager.watchers_of(sid) == (Watcher(CHAT, ALICE, "es"),)
    a.switch.answer(f"{sid}-a1", a.now())
    a.switch.answer(f"{sid}-b1", a.now())
    assert "El destino ha contestado." in "\n".join(on_a.turn())
    settle(a)
    assert on_b.turn() == []  # b heard it all, but its component is not the connected one

    # a dies with its component; b's gets in and b takes the session over
    on_a.front.stop()
    connected(on_b, True)
    take_over(a, sid)
    assert b.manager.is_local(sid)
    a.clock.advance(30)
    hang_up(a, sid)
    ended = b.events[-1]
    assert (ended.session_id, ended.kind) == (sid, "session_ended")
    # in the language recorded with the watcher: b never heard ALICE speak
    assert render(ended, ES, 5, "EUR") in "\n".join(on_b.turn())
    assert on_a.turn() == []


def test_unlink_ends_the_watching_of_the_sessions_in_flight():
    a, b = pair()
    on_a = Chat(a, linked=[ALICE])
    on_a.say(f"CALLBACK {SOURCE} {DESTINATION}")
    sid = on_a.live()
    on_a.say("UNLINK")
    assert a.manager.watchers_of(sid) == ()
    a.switch.answer(f"{sid}-a1", a.now())
    assert on_a.turn() == []


def test_a_watcher_recorded_through_b_is_kept_by_the_owner_a():
    """watch on b for a's session is forwarded: a records it, b's view has it at once."""
    a, b = pair()
    sid = a.talking()
    settle(a)
    watcher = Watcher(CHAT, ALICE, "fr", "chat.example.org")
    wait(a, b.manager.watch(sid, watcher))
    assert a.manager.watchers_of(sid) == b.manager.watchers_of(sid) == (watcher,)
    wait(a, b.manager.unwatch(sid, CHAT, ALICE))
    assert a.manager.watchers_of(sid) == ()


def test_an_sms_sender_hears_the_end_once_from_the_daemon_that_took_over():
    a, b = pair(sms_progress="all")
    on_a, on_b = Sms(a), Sms(b, verified=False)
    [reply, calling] = on_a.send(f"D.{DESTINATION}", gateway="kannel")
    sid = on_a.live()
    assert sid in reply and calling.startswith("Calling source")
    a.switch.answer(f"{sid}-a1", a.now())
    a.switch.answer(f"{sid}-b1", a.now())
    settle(a)
    assert any(t.startswith("Source answered.") for t in on_a.turn())
    assert on_b.turn() == []  # the owner tells, once

    on_a.front.stop()
    take_over(a, sid)
    assert b.manager.is_local(sid)
    a.clock.advance(30)
    hang_up(a, sid)
    settle(a)
    ended = [q for q in on_b.queued if q[1] == ALICE_PHONE]
    assert [(gateway, "Charged time" in text) for _, _, text, gateway in ended] == [
        ("kannel", True)
    ]
    assert on_a.turn() == []
    assert result(a.store.list_sessions()) == []
